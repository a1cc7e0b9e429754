/* SPDX-License-Identifier: MIT */
/* The 'authz-simple' object (QEMU's authz/simple.c): allows exactly one
 * identity, given at creation.
 *
 * Thread model: created on the main thread, immutable afterwards; its
 * check runs on any thread.
 */
#include <string.h>
#include "graph/main-thread.h"
#include "objects/authz-int.h"

typedef struct {
    BdAuthz parent;
    char *identity;
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

    return strcmp(s->identity, identity) == 0;
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
    s->identity = g_strdup(p.identity);
    return &s->parent.parent;
}

static void simple_free(BdObject *obj)
{
    AuthzSimple *s = (AuthzSimple *)obj;

    g_free(s->identity);
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
