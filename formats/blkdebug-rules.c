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

/* One section of a config file or one element of an option list, as
 * strings (file) or typed values (options): key -> GVariant. */
typedef GHashTable Section;

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

static const char *const inject_keys[] = {
    "event", "state", "iotype", "errno", "sector", "once", "immediately",
    NULL,
};
static const char *const set_state_keys[] = {
    "event", "state", "new_state", NULL,
};

/* A config-file line 'key = "value"' of a section: typed as the option. */
static gboolean section_set(Section *sec, gboolean inject, const char *key,
                            const char *value, GError **errp)
{
    const char *const *keys = inject ? inject_keys : set_state_keys;
    GVariant *v;
    gint64 n;
    gboolean b;

    if (!g_strv_contains(keys, key)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter '%s'", key);
        return FALSE;
    }
    if (!strcmp(key, "event") || !strcmp(key, "iotype")) {
        v = g_variant_new_string(value);
    } else if (!strcmp(key, "once") || !strcmp(key, "immediately")) {
        if (!parse_bool(key, value, &b, errp)) {
            return FALSE;
        }
        v = g_variant_new_boolean(b);
    } else {
        if (!parse_number(key, value, &n, errp)) {
            return FALSE;
        }
        v = g_variant_new_int64(n);
    }
    g_hash_table_replace(sec, g_strdup(key), g_variant_ref_sink(v));
    return TRUE;
}

static Section *section_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                 (GDestroyNotify)g_variant_unref);
}

/* QEMU's qemu_config_parse() for blkdebug's two groups. */
static gboolean parse_config(FILE *f, GPtrArray *inject, GPtrArray *set_state,
                             GError **errp)
{
    char line[1024], group[64], arg[64], value[1024];
    Section *cur = NULL;
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
            cur = section_new();
            g_ptr_array_add(cur_inject ? inject : set_state, cur);
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

/* Validated option list elements (a{sv}) as sections. */
static void sections_from_list(GVariant *list, GPtrArray *out)
{
    GVariantIter it;
    GVariant *elem;

    if (!list) {
        return;
    }
    g_variant_iter_init(&it, list);
    while ((elem = g_variant_iter_next_value(&it))) {
        g_autoptr(GVariant) dict = g_variant_get_variant(elem);
        GVariantIter mit;
        const char *key;
        GVariant *val;
        Section *sec = section_new();

        g_variant_iter_init(&mit, dict);
        while (g_variant_iter_next(&mit, "{&sv}", &key, &val)) {
            g_hash_table_replace(sec, g_strdup(key), val);
        }
        g_ptr_array_add(out, sec);
        g_variant_unref(elem);
    }
}

/* --- building rules --- */

static gint64 sec_int(Section *sec, const char *key, gint64 def)
{
    GVariant *v = g_hash_table_lookup(sec, key);

    if (!v) {
        return def;
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64)) {
        return (gint64)g_variant_get_uint64(v);
    }
    return g_variant_is_of_type(v, G_VARIANT_TYPE_INT64)
           ? g_variant_get_int64(v) : def;
}

static gboolean sec_bool(Section *sec, const char *key)
{
    GVariant *v = g_hash_table_lookup(sec, key);

    return v && g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN) &&
           g_variant_get_boolean(v);
}

static const char *sec_str(Section *sec, const char *key)
{
    GVariant *v = g_hash_table_lookup(sec, key);

    return v && g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)
           ? g_variant_get_string(v, NULL) : NULL;
}

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
static gboolean add_rule(BdBlkdebugRules *r, Section *sec, int action,
                         GError **errp)
{
    const char *event_name = sec_str(sec, "event");
    const char *iotype_name;
    g_autofree Rule *rule = NULL;
    int event, iotype;
    gint64 sector;

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
    rule->state = (int)sec_int(sec, "state", 0);
    if (action == ACTION_INJECT_ERROR) {
        rule->error = (int)sec_int(sec, "errno", EIO);
        rule->once = sec_bool(sec, "once");
        sector = sec_int(sec, "sector", -1);
        rule->offset = sector == -1 ? -1 : (int64_t)((uint64_t)sector * 512);
        iotype_name = sec_str(sec, "iotype");
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
        rule->new_state = (int)sec_int(sec, "new_state", 0);
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
        (GDestroyNotify)g_hash_table_unref);
    g_autoptr(GPtrArray) states = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_hash_table_unref);

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
