/* SPDX-License-Identifier: MIT */
/* What the authz types share: the is-allowed entry points with QEMU's
 * errors (authz/base.c), and the rule sets of authz-list and
 * authz-listfile with QEMU's matching (authz/list.c).
 *
 * Thread model: bd_authz_is_allowed*() run on any thread; a rule set is
 * built on the main thread and immutable once shared (see authz-int.h).
 */
#include <string.h>
#include "graph/error.h"
#include "objects/authz-int.h"

/* --- QAPI enums and the rule type (qapi/authz.json) --- */

const char *const bd_authz_policy_values[] = {
    [BD_AUTHZ_POLICY_DENY] = "deny",
    [BD_AUTHZ_POLICY_ALLOW] = "allow",
    NULL };
const char *const bd_authz_format_values[] = {
    [BD_AUTHZ_FORMAT_EXACT] = "exact",
    [BD_AUTHZ_FORMAT_GLOB] = "glob",
    NULL };

const BdSchemaType bd_authz_policy_type = {
    .name = "QAuthZListPolicy", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_authz_policy_values };
static const BdSchemaType format_type = {
    .name = "QAuthZListFormat", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_authz_format_values };

typedef struct {
    const char *match;
    int policy;                  /* BdAuthzPolicy */
    int format;                  /* BdAuthzFormat */
} RuleArgs;

static const BdSchemaField rule_fields[] = {
    { "match", &bd_schema_str, FALSE, BD_AT(RuleArgs, match) },
    { "policy", &bd_authz_policy_type, FALSE, BD_AT(RuleArgs, policy) },
    { "format", &format_type, TRUE, BD_AT(RuleArgs, format),
      .def.i = BD_AUTHZ_FORMAT_EXACT },
    { NULL } };
static const BdSchemaType rule_type = {
    .name = "QAuthZListRule", .kind = BD_SCHEMA_OBJECT,
    .fields = rule_fields };
const BdSchemaType bd_authz_rules_type = {
    .name = "QAuthZListRuleList", .kind = BD_SCHEMA_LIST,
    .element = &rule_type };

/* --- rule sets --- */

typedef struct {
    char *match;
    BdAuthzPolicy policy;
    BdAuthzFormat format;
    GPatternSpec *glob;          /* format glob: 'match' compiled */
} Rule;

struct BdAuthzRules {
    gint refcount;               /* atomic */
    BdAuthzPolicy policy;        /* when no rule matches */
    GPtrArray *rules;            /* Rule *, first match wins */
};

static void rule_free(gpointer p)
{
    Rule *r = p;

    g_free(r->match);
    if (r->glob) {
        g_pattern_spec_free(r->glob);
    }
    g_free(r);
}

BdAuthzRules *bd_authz_rules_new(BdAuthzPolicy policy)
{
    BdAuthzRules *set = g_new0(BdAuthzRules, 1);

    set->refcount = 1;
    set->policy = policy;
    set->rules = g_ptr_array_new_with_free_func(rule_free);
    return set;
}

void bd_authz_rules_append(BdAuthzRules *set, const char *match,
                           BdAuthzPolicy policy, BdAuthzFormat format)
{
    Rule *r = g_new0(Rule, 1);

    /* Still private to its builder: nobody else may match against it. */
    g_assert(g_atomic_int_get(&set->refcount) == 1);
    r->match = g_strdup(match);
    r->policy = policy;
    r->format = format;
    if (format == BD_AUTHZ_FORMAT_GLOB) {
        r->glob = g_pattern_spec_new(match);
    }
    g_ptr_array_add(set->rules, r);
}

BdAuthzRules *bd_authz_rules_from_variant(BdAuthzPolicy policy,
                                          GVariant *list)
{
    BdAuthzRules *set = bd_authz_rules_new(policy);
    gsize n = list ? g_variant_n_children(list) : 0;

    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(list, i);
        g_autoptr(GVariant) elt = g_variant_get_variant(boxed);
        RuleArgs r = { 0 };

        bd_schema_decode(rule_fields, elt, &r);
        bd_authz_rules_append(set, r.match, r.policy, r.format);
    }
    return set;
}

BdAuthzRules *bd_authz_rules_ref(BdAuthzRules *set)
{
    g_atomic_int_inc(&set->refcount);
    return set;
}

void bd_authz_rules_unref(BdAuthzRules *set)
{
    if (set && g_atomic_int_dec_and_test(&set->refcount)) {
        g_ptr_array_unref(set->rules);
        g_free(set);
    }
}

guint bd_authz_rules_count(const BdAuthzRules *set)
{
    return set->rules->len;
}

static gboolean rule_matches(const Rule *r, const char *identity)
{
    switch (r->format) {
    case BD_AUTHZ_FORMAT_EXACT:
        return strcmp(r->match, identity) == 0;
    case BD_AUTHZ_FORMAT_GLOB:
        return g_pattern_spec_match_string(r->glob, identity);
    }
    g_assert_not_reached();
}

gboolean bd_authz_rules_allow(const BdAuthzRules *set, const char *identity)
{
    for (guint i = 0; i < set->rules->len; i++) {
        const Rule *r = set->rules->pdata[i];

        if (rule_matches(r, identity)) {
            g_debug("identity '%s' matches rule %u '%s': %s", identity, i,
                    r->match, bd_authz_policy_values[r->policy]);
            return r->policy == BD_AUTHZ_POLICY_ALLOW;
        }
    }
    g_debug("identity '%s' matches no rule: default policy %s", identity,
            bd_authz_policy_values[set->policy]);
    return set->policy == BD_AUTHZ_POLICY_ALLOW;
}

/* --- entry points --- */

gboolean bd_authz_is_allowed(BdObject *authz, const char *identity,
                             GError **errp)
{
    BdAuthz *a = (BdAuthz *)authz;

    if (!bd_object_is_kind(authz, BD_AUTHZ_KIND)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Object '%s' is not a QAuthZ subclass", authz->id);
        return FALSE;
    }
    return a->is_allowed(a, identity, errp);
}

gboolean bd_authz_is_allowed_by_id(const char *authz_id,
                                   const char *identity, GError **errp)
{
    g_autoptr(BdObject) obj = bd_object_find(authz_id);

    if (!obj) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find QAuthZ object ID %s", authz_id);
        return FALSE;
    }
    return bd_authz_is_allowed(obj, identity, errp);
}
