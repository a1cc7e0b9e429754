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
    BdAuthzRules *rules;
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

    return bd_authz_rules_allow(l->rules, identity);
}

static BdObject *list_create(const char *id, GVariant *props, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(ListProps) p = { 0 };
    AuthzList *l = g_new0(AuthzList, 1);

    bd_schema_decode(list_fields, props, &p);
    bd_object_init(&l->parent.parent, &bd_authz_list_type, id);
    l->parent.is_allowed = list_is_allowed;
    l->rules = bd_authz_rules_from_variant(p.policy, p.rules);
    return &l->parent.parent;
}

static void list_free(BdObject *obj)
{
    AuthzList *l = (AuthzList *)obj;

    bd_authz_rules_unref(l->rules);
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
