/* SPDX-License-Identifier: MIT */
/* blkdebug's rules: QEMU's config file format and option lists, the state machine and error injection.
 *
 * A config file holds sections of 'key = "value"' lines:
 *
 *     [inject-error]             [set-state]
 *     event = "read_aio"         event = "flush_to_disk"
 *     errno = "5"                state = "1"
 *     once = "on"                new_state = "2"
 *
 * An event runs the rules registered for it whose 'state' is 0 or the
 * current state: inject-error rules become the active set (replacing the
 * previous one), set-state rules choose the next state.  Each request
 * then fails with the errno of the first active rule matching its type
 * and, with 'sector', its range; a 'once' rule is dropped when it fires.
 * Rules of one event run newest first, as QEMU lists them.
 *
 * Thread model: see blkdebug-rules.h; 'lock' protects state, the rule
 * lists and the active set.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "graph/error.h"
#include "graph/lock.h"
#include "graph/schema.h"
#include "graph/main-thread.h"
#include "formats/blkdebug-rules.h"

const char *const bd_blkdebug_iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
    NULL,
};

enum { ACTION_INJECT_ERROR, ACTION_SET_STATE };

typedef struct {
    int event;
    int action;
    int64_t state;              /* 0: any state */
    /* inject-error */
    uint64_t iotype_mask;
    int error;
    gboolean once;
    int64_t offset;             /* -1: any offset */
    /* set-state */
    int64_t new_state;
} Rule;

struct BdBlkdebugRules {
    BdMutex lock;
    int64_t state BD_GUARDED_BY(lock);
    /* Rule * (owned), newest first; the arrays' contents [lock]. */
    GPtrArray *rules[BD_DEBUG_EVENT__MAX];
    GPtrArray *active BD_PT_GUARDED_BY(lock); /* Rule * (borrowed) */
};

/* --- the rule options (QAPI BlkdebugInjectErrorOptions and
 * BlkdebugSetStateOptions), shared by config files and option lists --- */

/* One rule of either kind.  The enums are read as strings: config files
 * give any text, which add_rule() checks with QEMU's message. */
typedef struct {
    const char *event;          /* NULL: missing */
    gint64 state;               /* 0: any state */
    const char *iotype;         /* NULL: every type but block-status */
    gint64 error;               /* 'errno' */
    gint64 sector;              /* -1: any */
    gboolean once;
    gint64 new_state;
} RuleOptions;

static const BdSchemaType event_type = {
    .name = "BlkdebugEvent", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_debug_event_names };
static const BdSchemaType iotype_type = {
    .name = "BlkdebugIOType", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_blkdebug_iotype_names };

static const BdSchemaField inject_error_fields[] = {
    { "event", &event_type, FALSE, BD_AT(RuleOptions, event) },
    { "state", &bd_schema_int, TRUE, BD_AT(RuleOptions, state) },
    { "iotype", &iotype_type, TRUE, BD_AT(RuleOptions, iotype) },
    { "errno", &bd_schema_int, TRUE, BD_AT(RuleOptions, error),
      .def.i = EIO },
    { "sector", &bd_schema_int, TRUE, BD_AT(RuleOptions, sector),
      .def.i = -1 },
    { "once", &bd_schema_bool, TRUE, BD_AT(RuleOptions, once) },
    /* Whether the error comes back before or after a yield: requests
     * here are synchronous, so it makes no difference. */
    { "immediately", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { NULL },
};
static const BdSchemaType inject_error_type = {
    .name = "BlkdebugInjectErrorOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = inject_error_fields };
const BdSchemaType bd_blkdebug_inject_error_list = {
    .name = "[BlkdebugInjectErrorOptions]", .kind = BD_SCHEMA_LIST,
    .element = &inject_error_type };

static const BdSchemaField set_state_fields[] = {
    { "event", &event_type, FALSE, BD_AT(RuleOptions, event) },
    { "state", &bd_schema_int, TRUE, BD_AT(RuleOptions, state) },
    { "new_state", &bd_schema_int, FALSE, BD_AT(RuleOptions, new_state) },
    { NULL },
};
static const BdSchemaType set_state_type = {
    .name = "BlkdebugSetStateOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = set_state_fields };
const BdSchemaType bd_blkdebug_set_state_list = {
    .name = "[BlkdebugSetStateOptions]", .kind = BD_SCHEMA_LIST,
    .element = &set_state_type };

/* --- parsing values as QEMU's QemuOpts do --- */

static gboolean parse_number(const char *key, const char *str, gint64 *out,
                             GError **errp)
{
    char *end = NULL;
    guint64 v;

    errno = 0;
    v = g_ascii_strtoull(str, &end, 0);
    if (!*str || *end || errno) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' expects a number", key);
        return FALSE;
    }
    *out = (gint64)v;
    return TRUE;
}

static gboolean parse_bool(const char *key, const char *str, gboolean *out,
                           GError **errp)
{
    static const char *const yes[] = { "on", "yes", "true", "y" };
    static const char *const no[] = { "off", "no", "false", "n" };

    for (gsize i = 0; i < G_N_ELEMENTS(yes); i++) {
        if (strcmp(str, yes[i]) == 0) {
            *out = TRUE;
            return TRUE;
        }
        if (strcmp(str, no[i]) == 0) {
            *out = FALSE;
            return TRUE;
        }
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Parameter '%s' expects 'on' or 'off'", key);
    return FALSE;
}

/* A config-file line 'key = "value"' of a section: typed as the option
 * member of that name. */
static gboolean section_set(GVariantDict *sec, gboolean inject,
                            const char *key, const char *value, GError **errp)
{
    const BdSchemaField *f = inject ? inject_error_fields : set_state_fields;
    GVariant *v;
    gint64 n;
    gboolean b;

    while (f->name && strcmp(f->name, key) != 0) {
        f++;
    }
    if (!f->name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter '%s'", key);
        return FALSE;
    }
    switch (f->type->kind) {
    case BD_SCHEMA_BOOL:
        if (!parse_bool(key, value, &b, errp)) {
            return FALSE;
        }
        v = g_variant_new_boolean(b);
        break;
    case BD_SCHEMA_INT:
        if (!parse_number(key, value, &n, errp)) {
            return FALSE;
        }
        v = g_variant_new_int64(n);
        break;
    default:
        v = g_variant_new_string(value);
        break;
    }
    g_variant_dict_insert_value(sec, key, v);
    return TRUE;
}

/* QEMU's qemu_config_parse() for blkdebug's two groups: each section
 * becomes the a{sv} of one rule, as an option list element would be. */
static gboolean parse_config(FILE *f, GPtrArray *inject, GPtrArray *set_state,
                             GError **errp)
{
    char line[1024], group[64], arg[64], value[1024];
    g_autoptr(GPtrArray) sections = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_dict_unref);
    g_autoptr(GArray) is_inject = g_array_new(FALSE, FALSE, sizeof(gboolean));
    GVariantDict *cur = NULL;
    gboolean cur_inject = FALSE;

    while (fgets(line, sizeof(line), f)) {
        if (line[0] == '\n' || line[0] == '#') {
            continue;
        }
        if (line[0] == '[') {
            if (sscanf(line, "[%63s \"%1023[^\"]\"]", group, value) != 2 &&
                sscanf(line, "[%63[^]]]", group) != 1) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "parse error");
                return FALSE;
            }
            if (strcmp(group, "inject-error") && strcmp(group, "set-state")) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "There is no option group '%s'", group);
                return FALSE;
            }
            cur_inject = strcmp(group, "inject-error") == 0;
            cur = g_variant_dict_new(NULL);
            g_ptr_array_add(sections, cur);
            g_array_append_val(is_inject, cur_inject);
            continue;
        }
        value[0] = '\0';
        if (sscanf(line, " %63s = \"%1023[^\"]\"", arg, value) != 2 &&
            sscanf(line, " %63s = \"\"", arg) != 1) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "parse error");
            return FALSE;
        }
        if (!cur) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "no group defined");
            return FALSE;
        }
        if (!section_set(cur, cur_inject, arg, value, errp)) {
            return FALSE;
        }
    }
    if (ferror(f)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot read config file: %s", g_strerror(errno));
        return FALSE;
    }
    for (guint i = 0; i < sections->len; i++) {
        GVariant *sec = g_variant_dict_end(sections->pdata[i]);
        g_ptr_array_add(g_array_index(is_inject, gboolean, i) ? inject
                                                               : set_state,
                        g_variant_ref_sink(sec));
    }
    return TRUE;
}

static gboolean read_config_file(const char *path, GPtrArray *inject,
                                 GPtrArray *set_state, GError **errp)
{
    FILE *f = fopen(path, "r");
    gboolean ok;

    if (!f) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not read blkdebug config file: %s",
                    g_strerror(errno));
        return FALSE;
    }
    ok = parse_config(f, inject, set_state, errp);
    fclose(f);
    return ok;
}

/* Validated option list elements: the a{sv} of each rule. */
static void sections_from_list(GVariant *list, GPtrArray *out)
{
    for (gsize i = 0; list && i < g_variant_n_children(list); i++) {
        g_autoptr(GVariant) elem = g_variant_get_child_value(list, i);
        g_ptr_array_add(out, g_variant_get_variant(elem));
    }
}

/* --- building rules --- */

static int enum_index(const char *const *names, const char *value)
{
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], value) == 0) {
            return i;
        }
    }
    return -1;
}

/* QEMU's add_rule(). */
static gboolean add_rule(BdBlkdebugRules *r, GVariant *sec, int action,
                         GError **errp)
{
    RuleOptions o = { 0 };
    const char *event_name;
    const char *iotype_name;
    g_autofree Rule *rule = NULL;
    int event, iotype;
    gint64 sector;

    bd_schema_decode(action == ACTION_INJECT_ERROR ? inject_error_fields
                                                   : set_state_fields,
                     sec, &o);
    event_name = o.event;

    if (!event_name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Missing event name for rule");
        return FALSE;
    }
    event = bd_debug_event_from_name(event_name);
    if (event < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "invalid parameter value: %s", event_name);
        return FALSE;
    }
    rule = g_new0(Rule, 1);
    rule->event = event;
    rule->action = action;
    /* QEMU keeps state, errno and new_state in an int. */
    rule->state = (int)o.state;
    if (action == ACTION_INJECT_ERROR) {
        rule->error = (int)o.error;
        rule->once = o.once;
        sector = o.sector;
        rule->offset = sector == -1 ? -1 : (int64_t)((uint64_t)sector * 512);
        iotype_name = o.iotype;
        if (iotype_name) {
            iotype = enum_index(bd_blkdebug_iotype_names, iotype_name);
            if (iotype < 0) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "invalid parameter value: %s", iotype_name);
                return FALSE;
            }
            rule->iotype_mask = 1ull << iotype;
        } else {
            /* QEMU's default: every type but block-status. */
            rule->iotype_mask = (1ull << BD_BLKDEBUG_IO_BLOCK_STATUS) - 1;
        }
    } else {
        rule->new_state = (int)o.new_state;
    }
    g_ptr_array_insert(r->rules[event], 0, g_steal_pointer(&rule));
    return TRUE;
}

BdBlkdebugRules *bd_blkdebug_rules_new(const char *config,
                                       GVariant *inject_error,
                                       GVariant *set_state, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(BdBlkdebugRules) r = g_new0(BdBlkdebugRules, 1);
    g_autoptr(GPtrArray) inject = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);
    g_autoptr(GPtrArray) states = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);

    bd_mutex_init(&r->lock);
    bd_mutex_lock(&r->lock);
    r->state = 1;
    bd_mutex_unlock(&r->lock);
    r->active = g_ptr_array_new();
    for (int i = 0; i < BD_DEBUG_EVENT__MAX; i++) {
        r->rules[i] = g_ptr_array_new_with_free_func(g_free);
    }
    if (config && !read_config_file(config, inject, states, errp)) {
        return NULL;
    }
    sections_from_list(inject_error, inject);
    sections_from_list(set_state, states);
    for (guint i = 0; i < inject->len; i++) {
        if (!add_rule(r, inject->pdata[i], ACTION_INJECT_ERROR, errp)) {
            return NULL;
        }
    }
    for (guint i = 0; i < states->len; i++) {
        if (!add_rule(r, states->pdata[i], ACTION_SET_STATE, errp)) {
            return NULL;
        }
    }
    return g_steal_pointer(&r);
}

void bd_blkdebug_rules_free(BdBlkdebugRules *r)
{
    BD_GLOBAL_STATE_CODE();

    if (!r) {
        return;
    }
    g_ptr_array_unref(r->active);
    for (int i = 0; i < BD_DEBUG_EVENT__MAX; i++) {
        g_ptr_array_unref(r->rules[i]);
    }
    bd_mutex_destroy(&r->lock);
    g_free(r);
}

/* --- the engine --- */

void bd_blkdebug_rules_event(BdBlkdebugRules *r, int event)
{
    gboolean injected = FALSE;
    int64_t new_state;

    if (event < 0 || event >= BD_DEBUG_EVENT__MAX) {
        return;
    }
    bd_mutex_lock(&r->lock);
    new_state = r->state;
    for (guint i = 0; i < r->rules[event]->len; i++) {
        Rule *rule = r->rules[event]->pdata[i];

        if (rule->state && rule->state != r->state) {
            continue;
        }
        if (rule->action == ACTION_INJECT_ERROR) {
            if (!injected) {
                g_ptr_array_set_size(r->active, 0);
                injected = TRUE;
            }
            g_ptr_array_insert(r->active, 0, rule);
        } else {
            new_state = rule->new_state;
        }
    }
    r->state = new_state;
    bd_mutex_unlock(&r->lock);
}

static gboolean rule_matches(const Rule *rule, uint64_t offset,
                             uint64_t bytes, BdBlkdebugIOType iotype)
{
    uint64_t at = (uint64_t)rule->offset;

    if (!(rule->iotype_mask & (1ull << iotype))) {
        return FALSE;
    }
    return rule->offset == -1 ||
           (bytes && at >= offset && at - offset < bytes);
}

int bd_blkdebug_rules_check(BdBlkdebugRules *r, uint64_t offset,
                            uint64_t bytes, BdBlkdebugIOType iotype)
{
    Rule *rule = NULL;
    int error;

    bd_mutex_lock(&r->lock);
    for (guint i = 0; i < r->active->len; i++) {
        if (rule_matches(r->active->pdata[i], offset, bytes, iotype)) {
            rule = r->active->pdata[i];
            break;
        }
    }
    /* A zero (or negative) errno injects nothing. */
    if (!rule || rule->error <= 0) {
        bd_mutex_unlock(&r->lock);
        return 0;
    }
    error = rule->error;
    if (rule->once) {
        g_ptr_array_remove(r->active, rule);
        g_ptr_array_remove(r->rules[rule->event], rule);   /* frees it */
    }
    bd_mutex_unlock(&r->lock);
    return -error;
}

int64_t bd_blkdebug_rules_state(BdBlkdebugRules *r)
{
    int64_t state;

    bd_mutex_lock(&r->lock);
    state = r->state;
    bd_mutex_unlock(&r->lock);
    return state;
}
