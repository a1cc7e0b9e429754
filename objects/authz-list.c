/* SPDX-License-Identifier: MIT */
/* The 'authz-list' object (QEMU's authz/list.c): a default policy and
 * an ordered list of rules, given at creation; the first rule that
 * matches the identity decides (objects/authz.c matches).
 *
 * Thread model: created on the main thread; its rule set is immutable,
 * so the check runs on any thread without a lock.
 */
#include "graph/main-thread.h"
#include "objects/authz-int.h"

typedef struct {
    BdAuthz parent;
    GMutex lock;             /* protects the 'rules' pointer (a leaf) */
    BdAuthzRules *rules;     /* immutable; replaced by qom-set */
} AuthzList;

/* AuthZListProperties (qapi/authz.json). */
typedef struct {
    int policy;                  /* BdAuthzPolicy */
    GVariant *rules;
} ListProps;

static const BdSchemaField list_fields[] = {
    { "policy", &bd_authz_policy_type, TRUE, BD_AT(ListProps, policy),
      .def.i = BD_AUTHZ_POLICY_DENY },
    { "rules", &bd_authz_rules_type, TRUE, BD_AT(ListProps, rules) },
    { NULL } };
static const BdSchemaType list_props_type = {
    .name = "AuthZListProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = list_fields };
BD_SCHEMA_DEFINE_AUTO(ListProps, list_fields)

static gboolean list_is_allowed(BdAuthz *authz, const char *identity,
                                GError **errp)
{
    AuthzList *l = (AuthzList *)authz;
    g_autoptr(BdAuthzRules) rules = NULL;

    g_mutex_lock(&l->lock);
    rules = bd_authz_rules_ref(l->rules);
    g_mutex_unlock(&l->lock);
    return bd_authz_rules_allow(rules, identity);
}

void bd_authz_list_set(BdObject *obj, int policy, GVariant *rules)
{
    BD_GLOBAL_STATE_CODE();

    AuthzList *l = (AuthzList *)obj;
    BdAuthzRules *old;
    BdAuthzRules *fresh = bd_authz_rules_from_variant(policy, rules);

    g_assert(obj->type == &bd_authz_list_type);
    g_mutex_lock(&l->lock);
    old = l->rules;
    l->rules = fresh;
    g_mutex_unlock(&l->lock);
    bd_authz_rules_unref(old);
}

static BdObject *list_create(const char *id, GVariant *props, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(ListProps) p = { 0 };
    AuthzList *l = g_new0(AuthzList, 1);

    bd_schema_decode(list_fields, props, &p);
    bd_object_init(&l->parent.parent, &bd_authz_list_type, id);
    l->parent.is_allowed = list_is_allowed;
    g_mutex_init(&l->lock);
    l->rules = bd_authz_rules_from_variant(p.policy, p.rules);
    return &l->parent.parent;
}

static void list_free(BdObject *obj)
{
    AuthzList *l = (AuthzList *)obj;

    bd_authz_rules_unref(l->rules);
    g_mutex_clear(&l->lock);
    bd_object_finalize(obj);
    g_free(l);
}

static const char *const authz_kinds[] = { BD_AUTHZ_KIND, NULL };

const BdObjectType bd_authz_list_type = {
    .name = "authz-list",
    .props = &list_props_type,
    .kinds = authz_kinds,
    .create = list_create,
    .free = list_free,
};
