/* SPDX-License-Identifier: MIT */
/* The 'authz-simple' object (QEMU's authz/simple.c): allows exactly one
 * identity, given at creation.
 *
 * Thread model: created on the main thread; its check runs on any
 * thread while qom-set (main thread) may replace the identity: 'lock'
 * protects it (a leaf lock).
 */
#include <string.h>
#include "graph/main-thread.h"
#include "objects/authz-int.h"

typedef struct {
    BdAuthz parent;
    GMutex lock;
    char *identity;          /* under 'lock' */
} AuthzSimple;

/* AuthZSimpleProperties (qapi/authz.json). */
typedef struct {
    const char *identity;
} SimpleProps;

static const BdSchemaField simple_fields[] = {
    { "identity", &bd_schema_str, FALSE, BD_AT(SimpleProps, identity) },
    { NULL } };
static const BdSchemaType simple_props_type = {
    .name = "AuthZSimpleProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = simple_fields };

static gboolean simple_is_allowed(BdAuthz *authz, const char *identity,
                                  GError **errp)
{
    AuthzSimple *s = (AuthzSimple *)authz;
    gboolean allowed;

    g_mutex_lock(&s->lock);
    allowed = strcmp(s->identity, identity) == 0;
    g_mutex_unlock(&s->lock);
    return allowed;
}

void bd_authz_simple_set_identity(BdObject *obj, const char *identity)
{
    BD_GLOBAL_STATE_CODE();

    AuthzSimple *s = (AuthzSimple *)obj;
    char *old;

    g_assert(obj->type == &bd_authz_simple_type);
    g_mutex_lock(&s->lock);
    old = s->identity;
    s->identity = g_strdup(identity);
    g_mutex_unlock(&s->lock);
    g_free(old);
}

static BdObject *simple_create(const char *id, GVariant *props,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    SimpleProps p = { 0 };
    AuthzSimple *s = g_new0(AuthzSimple, 1);

    bd_schema_decode(simple_fields, props, &p);
    bd_object_init(&s->parent.parent, &bd_authz_simple_type, id);
    s->parent.is_allowed = simple_is_allowed;
    g_mutex_init(&s->lock);
    s->identity = g_strdup(p.identity);
    return &s->parent.parent;
}

static void simple_free(BdObject *obj)
{
    AuthzSimple *s = (AuthzSimple *)obj;

    g_free(s->identity);
    g_mutex_clear(&s->lock);
    bd_object_finalize(obj);
    g_free(s);
}

static const char *const authz_kinds[] = { BD_AUTHZ_KIND, NULL };

const BdObjectType bd_authz_simple_type = {
    .name = "authz-simple",
    .props = &simple_props_type,
    .kinds = authz_kinds,
    .create = simple_create,
    .free = simple_free,
};
