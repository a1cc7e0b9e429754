/* SPDX-License-Identifier: MIT */
/* What the authz types share (objects/authz*.c): the common object
 * header with its check, and the list rules of authz-list and
 * authz-listfile with their QAPI enums.
 *
 * Thread model: a BdAuthzRules is immutable once built and reference
 * counted, so any thread may match against it while the main thread
 * swaps in a newer set.
 */
#ifndef BD_OBJECTS_AUTHZ_INT_H
#define BD_OBJECTS_AUTHZ_INT_H

#include "objects/authz.h"

#undef G_LOG_DOMAIN
#define G_LOG_DOMAIN "blockd-objects"

/* QAuthZListPolicy and QAuthZListFormat, in QAPI order. */
typedef enum {
    BD_AUTHZ_POLICY_DENY,
    BD_AUTHZ_POLICY_ALLOW,
} BdAuthzPolicy;

typedef enum {
    BD_AUTHZ_FORMAT_EXACT,
    BD_AUTHZ_FORMAT_GLOB,
} BdAuthzFormat;

extern const char *const bd_authz_policy_values[];   /* NULL-terminated */
extern const char *const bd_authz_format_values[];
extern const BdSchemaType bd_authz_policy_type;      /* QAuthZListPolicy */
/* [QAuthZListRule]: authz-list's 'rules'. */
extern const BdSchemaType bd_authz_rules_type;

/* Every object of kind BD_AUTHZ_KIND starts with this. */
typedef struct BdAuthz BdAuthz;
struct BdAuthz {
    BdObject parent;
    /* Any thread: TRUE to allow, FALSE to deny (errp untouched) or on
     * error (errp set). */
    gboolean (*is_allowed)(BdAuthz *authz, const char *identity,
                           GError **errp);
};

/* --- list rules --- */

typedef struct BdAuthzRules BdAuthzRules;

/* An empty set with default 'policy'; main thread while it is built. */
BdAuthzRules *bd_authz_rules_new(BdAuthzPolicy policy);
void bd_authz_rules_append(BdAuthzRules *rules, const char *match,
                           BdAuthzPolicy policy, BdAuthzFormat format);
/* From validated authz-list 'rules' (av of QAuthZListRule; NULL: none). */
BdAuthzRules *bd_authz_rules_from_variant(BdAuthzPolicy policy,
                                          GVariant *list);
BdAuthzRules *bd_authz_rules_ref(BdAuthzRules *rules);
void bd_authz_rules_unref(BdAuthzRules *rules);
guint bd_authz_rules_count(const BdAuthzRules *rules);
/* QEMU's qauthz_list_is_allowed(): the policy of the first rule that
 * matches 'identity' (exact: equal strings; glob: '*' and '?' as GLib's
 * g_pattern_match_simple(), which QEMU uses), else the default. */
gboolean bd_authz_rules_allow(const BdAuthzRules *rules,
                              const char *identity);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdAuthzRules, bd_authz_rules_unref)

#endif
