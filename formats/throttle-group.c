/* SPDX-License-Identifier: MIT */
/* Throttle groups: leaky-bucket arithmetic as QEMU's util/throttle.c, the registry of named groups, and the waiting of over-limit requests.
 *
 * Thread model: see throttle-group.h.  Lock order: registry_lock, then a
 * group's lock (the registry never takes a group lock, so in practice the
 * two are never nested).  A group's configuration is fixed at creation;
 * its buckets, its round-robin of members and the members' wait queues
 * change under tg->lock only.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <limits.h>
#include <string.h>
#include "graph/error.h"
#include "graph/lock.h"
#include "graph/schema.h"
#include "graph/main-thread.h"
#include "formats/throttle-group.h"

#define NS_PER_SEC 1000000000.0

/* --- bucket arithmetic --- */

void bd_throttle_config_init(BdThrottleConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (int i = 0; i < BD_THROTTLE_BUCKETS; i++) {
        cfg->buckets[i].burst_length = 1;
    }
}

static gboolean total_and_split(const BdThrottleConfig *cfg, gboolean max,
                                BdThrottleBucketType total,
                                BdThrottleBucketType rd,
                                BdThrottleBucketType wr)
{
    const BdLeakyBucket *b = cfg->buckets;

    if (max) {
        return b[total].max && (b[rd].max || b[wr].max);
    }
    return b[total].avg && (b[rd].avg || b[wr].avg);
}

gboolean bd_throttle_config_is_valid(const BdThrottleConfig *cfg,
                                     GError **errp)
{
    const BdLeakyBucket *b = cfg->buckets;

    for (int max = 0; max < 2; max++) {
        if (total_and_split(cfg, max, BD_THROTTLE_BPS_TOTAL,
                            BD_THROTTLE_BPS_READ, BD_THROTTLE_BPS_WRITE) ||
            total_and_split(cfg, max, BD_THROTTLE_OPS_TOTAL,
                            BD_THROTTLE_OPS_READ, BD_THROTTLE_OPS_WRITE)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "bps/iops/max total values and read/write values "
                        "cannot be used at the same time");
            return FALSE;
        }
    }
    if (cfg->op_size && !b[BD_THROTTLE_OPS_TOTAL].avg &&
        !b[BD_THROTTLE_OPS_READ].avg && !b[BD_THROTTLE_OPS_WRITE].avg) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "iops size requires an iops value to be set");
        return FALSE;
    }
    for (int i = 0; i < BD_THROTTLE_BUCKETS; i++) {
        const char *msg = NULL;

        if (b[i].avg > BD_THROTTLE_VALUE_MAX ||
            b[i].max > BD_THROTTLE_VALUE_MAX) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "bps/iops/max values must be within [0, %llu]",
                        BD_THROTTLE_VALUE_MAX);
            return FALSE;
        }
        if (!b[i].burst_length) {
            msg = "the burst length cannot be 0";
        } else if (b[i].burst_length > 1 && !b[i].max) {
            msg = "burst length set without burst rate";
        } else if (b[i].max &&
                   b[i].burst_length > BD_THROTTLE_VALUE_MAX / b[i].max) {
            msg = "burst length too high for this burst rate";
        } else if (b[i].max && !b[i].avg) {
            msg = "bps_max/iops_max require corresponding bps/iops values";
        } else if (b[i].max && b[i].max < b[i].avg) {
            msg = "bps_max/iops_max cannot be lower than bps/iops";
        }
        if (msg) {
            g_set_error_literal(errp, BD_ERROR, BD_ERROR_GENERIC, msg);
            return FALSE;
        }
    }
    return TRUE;
}

void bd_throttle_config_reset(BdThrottleConfig *cfg)
{
    for (int i = 0; i < BD_THROTTLE_BUCKETS; i++) {
        cfg->buckets[i].level = cfg->buckets[i].burst_level = 0;
    }
}

gboolean bd_throttle_config_enabled(const BdThrottleConfig *cfg)
{
    for (int i = 0; i < BD_THROTTLE_BUCKETS; i++) {
        if (cfg->buckets[i].avg > 0) {
            return TRUE;
        }
    }
    return FALSE;
}

void bd_throttle_leak(BdThrottleConfig *cfg, int64_t delta_ns)
{
    if (delta_ns <= 0) {
        return;
    }
    for (int i = 0; i < BD_THROTTLE_BUCKETS; i++) {
        BdLeakyBucket *b = &cfg->buckets[i];

        b->level = MAX(b->level -
                       (double)b->avg * (double)delta_ns / NS_PER_SEC, 0);
        /* Bursts longer than a second also track the burst rate. */
        if (b->burst_length > 1) {
            b->burst_level = MAX(b->burst_level - (double)b->max *
                                 (double)delta_ns / NS_PER_SEC, 0);
        }
    }
}

/* Nanoseconds for 'extra' units to leak at 'rate', capped far beyond any
 * useful wait so that huge levels (accounted while drained) cannot
 * overflow the conversion. */
static int64_t leak_time(double extra, double rate)
{
    double ns = extra * NS_PER_SEC / rate;

    return ns < 1e18 ? (int64_t)ns : (int64_t)1e18;
}

static int64_t bucket_wait(const BdLeakyBucket *b)
{
    double size, burst_size, extra;

    if (!b->avg) {
        return 0;
    }
    if (!b->max) {
        /* No burst rate: a tenth of a second's worth may still pass at
         * once, so that requests arriving in small batches are not
         * each held back. */
        size = (double)b->avg / 10;
        burst_size = 0;
    } else {
        /* The whole burst may go at 'max' before 'avg' rules. */
        size = (double)b->max * (double)b->burst_length;
        burst_size = (double)b->max / 10;
    }
    /* Full bucket: wait until the overflow has leaked at 'avg'. */
    extra = b->level - size;
    if (extra > 0) {
        return leak_time(extra, (double)b->avg);
    }
    /* Within a long burst: keep to the burst rate 'max'. */
    if (b->burst_length > 1) {
        extra = b->burst_level - burst_size;
        if (extra > 0) {
            return leak_time(extra, (double)b->max);
        }
    }
    return 0;
}

static const BdThrottleBucketType checked[2][4] = {
    { BD_THROTTLE_BPS_TOTAL, BD_THROTTLE_OPS_TOTAL,
      BD_THROTTLE_BPS_READ, BD_THROTTLE_OPS_READ },
    { BD_THROTTLE_BPS_TOTAL, BD_THROTTLE_OPS_TOTAL,
      BD_THROTTLE_BPS_WRITE, BD_THROTTLE_OPS_WRITE },
};

int64_t bd_throttle_compute_wait(const BdThrottleConfig *cfg,
                                 gboolean is_write)
{
    int64_t max_wait = 0;

    for (int i = 0; i < 4; i++) {
        max_wait = MAX(max_wait,
                       bucket_wait(&cfg->buckets[checked[!!is_write][i]]));
    }
    return max_wait;
}

static void bucket_add(BdLeakyBucket *b, double units)
{
    b->level += units;
    if (b->burst_length > 1) {
        b->burst_level += units;
    }
}

void bd_throttle_account(BdThrottleConfig *cfg, gboolean is_write,
                         uint64_t bytes)
{
    double ops = 1.0;

    /* With iops-size, a big request counts as several operations. */
    if (cfg->op_size && bytes > cfg->op_size) {
        ops = (double)bytes / (double)cfg->op_size;
    }
    bucket_add(&cfg->buckets[BD_THROTTLE_BPS_TOTAL], (double)bytes);
    bucket_add(&cfg->buckets[BD_THROTTLE_OPS_TOTAL], ops);
    bucket_add(&cfg->buckets[is_write ? BD_THROTTLE_BPS_WRITE
                                      : BD_THROTTLE_BPS_READ],
               (double)bytes);
    bucket_add(&cfg->buckets[is_write ? BD_THROTTLE_OPS_WRITE
                                      : BD_THROTTLE_OPS_READ], ops);
}

/* --- ThrottleGroupProperties (qapi/qom.json) --- */

typedef enum { PROP_AVG, PROP_MAX, PROP_BURST, PROP_OP_SIZE } PropKind;

/* The ThrottleLimits members in schema order; the legacy flat
 * properties are "x-" + name, in the same order. */
#define N_PROPS 19
static const struct {
    BdThrottleBucketType bucket;
    PropKind kind;
} props[N_PROPS] = {
    { BD_THROTTLE_OPS_TOTAL, PROP_AVG },
    { BD_THROTTLE_OPS_TOTAL, PROP_MAX },
    { BD_THROTTLE_OPS_TOTAL, PROP_BURST },
    { BD_THROTTLE_OPS_READ, PROP_AVG },
    { BD_THROTTLE_OPS_READ, PROP_MAX },
    { BD_THROTTLE_OPS_READ, PROP_BURST },
    { BD_THROTTLE_OPS_WRITE, PROP_AVG },
    { BD_THROTTLE_OPS_WRITE, PROP_MAX },
    { BD_THROTTLE_OPS_WRITE, PROP_BURST },
    { BD_THROTTLE_BPS_TOTAL, PROP_AVG },
    { BD_THROTTLE_BPS_TOTAL, PROP_MAX },
    { BD_THROTTLE_BPS_TOTAL, PROP_BURST },
    { BD_THROTTLE_BPS_READ, PROP_AVG },
    { BD_THROTTLE_BPS_READ, PROP_MAX },
    { BD_THROTTLE_BPS_READ, PROP_BURST },
    { BD_THROTTLE_BPS_WRITE, PROP_AVG },
    { BD_THROTTLE_BPS_WRITE, PROP_MAX },
    { BD_THROTTLE_BPS_WRITE, PROP_BURST },
    { 0, PROP_OP_SIZE },
};

/* ThrottleLimits, by props[] index. */
typedef struct {
    gint64 v[N_PROPS];
    gboolean has_v[N_PROPS];
} ThrottleLimits;

/* ThrottleGroupProperties: 'limits' and the legacy x-* properties. */
typedef struct {
    ThrottleLimits limits;
    gboolean has_limits;
    gint64 x[N_PROPS];
    gboolean has_x[N_PROPS];
} ThrottleGroupProps;

#define LIMIT(i, n) \
    { n, &bd_schema_int, TRUE, BD_AT(ThrottleLimits, v[i]), \
      BD_HAS(ThrottleLimits, v[i]) }
#define LIMITS(i, n) LIMIT(i, n), LIMIT(i + 1, n "-max"), \
    LIMIT(i + 2, n "-max-length")
#define LEGACY(i, n) \
    { "x-" n, &bd_schema_int, TRUE, BD_AT(ThrottleGroupProps, x[i]), \
      BD_HAS(ThrottleGroupProps, x[i]) }
#define LEGACIES(i, n) LEGACY(i, n), LEGACY(i + 1, n "-max"), \
    LEGACY(i + 2, n "-max-length")

static const BdSchemaField limits_fields[N_PROPS + 1] = {
    LIMITS(0, "iops-total"), LIMITS(3, "iops-read"), LIMITS(6, "iops-write"),
    LIMITS(9, "bps-total"), LIMITS(12, "bps-read"), LIMITS(15, "bps-write"),
    LIMIT(18, "iops-size"),
    { NULL } };
static const BdSchemaType limits_type = {
    .name = "ThrottleLimits", .kind = BD_SCHEMA_OBJECT,
    .fields = limits_fields };

static const BdSchemaField tg_fields[] = {
    { "limits", &limits_type, TRUE, BD_AT(ThrottleGroupProps, limits),
      BD_HAS(ThrottleGroupProps, limits) },
    LEGACIES(0, "iops-total"), LEGACIES(3, "iops-read"),
    LEGACIES(6, "iops-write"), LEGACIES(9, "bps-total"),
    LEGACIES(12, "bps-read"), LEGACIES(15, "bps-write"),
    LEGACY(18, "iops-size"),
    { NULL } };
const BdSchemaType bd_throttle_group_props_type = {
    .name = "ThrottleGroupProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = tg_fields };

static void set_prop(BdThrottleConfig *cfg, gsize i, gint64 value)
{
    BdLeakyBucket *b = &cfg->buckets[props[i].bucket];

    /* QAPI's signed values go into unsigned fields, as in QEMU. */
    switch (props[i].kind) {
    case PROP_AVG:
        b->avg = (guint64)value;
        break;
    case PROP_MAX:
        b->max = (guint64)value;
        break;
    case PROP_BURST:
        b->burst_length = (guint64)value;
        break;
    case PROP_OP_SIZE:
        cfg->op_size = (guint64)value;
        break;
    }
}

/* The order QEMU's object-add sets throttle-group properties in: that
 * of its QDict's hash buckets.  It decides which error comes first
 * when 'limits' (checked as a whole when set) meets x-* values. */
static const char *const apply_order[] = {
    "x-iops-total", "x-bps-read-max", "x-iops-read-max-length",
    "x-bps-total-max-length", "x-iops-size", "x-iops-total-max-length",
    "limits", "x-bps-read-max-length", "x-bps-read",
    "x-bps-write-max-length", "x-iops-read", "x-iops-read-max",
    "x-bps-total", "x-bps-total-max", "x-iops-write-max", "x-iops-write",
    "x-bps-write", "x-bps-write-max", "x-iops-total-max",
    "x-iops-write-max-length",
};
G_STATIC_ASSERT(G_N_ELEMENTS(apply_order) == N_PROPS + 1);

static gboolean limits_apply(BdThrottleConfig *cfg, const ThrottleLimits *l,
                             GError **errp)
{
    for (gsize i = 0; i < N_PROPS; i++) {
        gint64 v = l->v[i];

        if (!l->has_v[i]) {
            continue;
        }
        if (props[i].kind == PROP_BURST && v > UINT_MAX) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "%s value must be in the range [0, %u]",
                        limits_fields[i].name, UINT_MAX);
            return FALSE;
        }
        set_prop(cfg, i, v);
    }
    return bd_throttle_config_is_valid(cfg, errp);
}

static gboolean legacy_apply(BdThrottleConfig *cfg, gsize i, gint64 v,
                             GError **errp)
{
    if (v < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property values cannot be negative");
        return FALSE;
    }
    if (props[i].kind == PROP_BURST && v > UINT_MAX) {
        /* sic: QEMU's legacy setter lacks the space. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "%s value must be in therange [0, %u]",
                    tg_fields[i + 1].name, UINT_MAX);
        return FALSE;
    }
    set_prop(cfg, i, v);
    return TRUE;
}

gboolean bd_throttle_config_from_props(BdThrottleConfig *cfg,
                                       GVariant *in, GError **errp)
{
    ThrottleGroupProps p = { 0 };

    bd_schema_decode(tg_fields, in, &p);
    for (gsize k = 0; k < G_N_ELEMENTS(apply_order); k++) {
        if (strcmp(apply_order[k], "limits") == 0) {
            if (p.has_limits && !limits_apply(cfg, &p.limits, errp)) {
                return FALSE;
            }
            continue;
        }
        for (gsize i = 0; i < N_PROPS; i++) {
            if (strcmp(tg_fields[i + 1].name, apply_order[k]) == 0 &&
                p.has_x[i] && !legacy_apply(cfg, i, p.x[i], errp)) {
                return FALSE;
            }
        }
    }
    return TRUE;
}

/* The ThrottleLimits of a configuration, every member set (QEMU's
 * throttle_config_to_limits, for qom-get of 'limits'). */
void bd_throttle_config_to_limits(const BdThrottleConfig *cfg,
                                  gint64 out[BD_THROTTLE_N_LIMITS])
{
    for (gsize i = 0; i < N_PROPS; i++) {
        const BdLeakyBucket *b = &cfg->buckets[props[i].bucket];

        switch (props[i].kind) {
        case PROP_AVG:
            out[i] = (gint64)b->avg;
            break;
        case PROP_MAX:
            out[i] = (gint64)b->max;
            break;
        case PROP_BURST:
            out[i] = (gint64)b->burst_length;
            break;
        case PROP_OP_SIZE:
            out[i] = (gint64)cfg->op_size;
            break;
        }
    }
}

const char *bd_throttle_limit_name(gsize i)
{
    g_assert(i < N_PROPS);
    return limits_fields[i].name;
}

const BdSchemaType *bd_throttle_limits_type(void)
{
    return &limits_type;
}

gboolean bd_throttle_config_from_limits(BdThrottleConfig *cfg,
                                        GVariant *limits, GError **errp)
{
    g_autoptr(GVariantBuilder) b =
        g_variant_builder_new(G_VARIANT_TYPE_VARDICT);
    g_autoptr(GVariant) props_v = NULL;

    g_variant_builder_add(b, "{sv}", "limits", limits);
    props_v = g_variant_ref_sink(g_variant_builder_end(b));
    return bd_throttle_config_from_props(cfg, props_v, errp);
}

/* --- groups --- */

/* A request waiting for its turn; lives on the waiter's stack. */
typedef struct {
    GList link;              /* in member->waiting[dir] */
} Waiter;

/* Guards the registry and the groups' user counts.  Static: needs no
 * init. */
static BdMutex registry_lock;
static GHashTable *registry BD_STATIC_GUARDED_BY(registry_lock);
                             /* name -> BdThrottleGroup * (owned) */

struct BdThrottleGroup {
    char *name;
    int users BD_STATIC_GUARDED_BY(registry_lock); /* throttle nodes on it */
    gint enabled;            /* atomic: any limit at all (qom-set may
                              * change it) */

    BdMutex lock;            /* protects what follows (and the members'
                              * queues and turn links) */
    GCond cond;              /* signalled when a waiter may go or leave */
    BdThrottleConfig cfg BD_GUARDED_BY(lock);  /* buckets, their levels */
    int64_t previous_leak BD_GUARDED_BY(lock); /* ns of the last leak */
    /* Members with waiting requests, per direction ([0] reads, [1]
     * writes); the head's oldest request is next. */
    GQueue turns[2] BD_GUARDED_BY(lock);
};

static int64_t now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}

static GHashTable *groups_locked(void) BD_REQUIRES(registry_lock)
{
    bd_mutex_assert_held(&registry_lock);
    if (!registry) {
        registry = g_hash_table_new(g_str_hash, g_str_equal);
    }
    return registry;
}

void bd_throttle_group_create(const char *id, const BdThrottleConfig *cfg)
{
    BD_GLOBAL_STATE_CODE();

    BdThrottleGroup *tg = g_new0(BdThrottleGroup, 1);

    tg->name = g_strdup(id);
    g_atomic_int_set(&tg->enabled, bd_throttle_config_enabled(cfg));
    bd_mutex_init(&tg->lock);
    g_cond_init(&tg->cond);
    bd_mutex_lock(&tg->lock);
    tg->cfg = *cfg;
    bd_throttle_config_reset(&tg->cfg);
    tg->previous_leak = now_ns();
    bd_mutex_unlock(&tg->lock);
    bd_mutex_lock(&registry_lock);
    g_hash_table_insert(groups_locked(), tg->name, tg);
    bd_mutex_unlock(&registry_lock);
}

gboolean bd_throttle_group_exists(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    gboolean found;

    bd_mutex_lock(&registry_lock);
    found = g_hash_table_contains(groups_locked(), id);
    bd_mutex_unlock(&registry_lock);
    return found;
}

static void group_free(BdThrottleGroup *tg)
{
    bd_mutex_destroy(&tg->lock);
    g_cond_clear(&tg->cond);
    g_free(tg->name);
    g_free(tg);
}

gboolean bd_throttle_group_delete(const char *id, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdThrottleGroup *tg;

    bd_mutex_lock(&registry_lock);
    tg = g_hash_table_lookup(groups_locked(), id);
    if (tg && tg->users > 0) {
        bd_mutex_unlock(&registry_lock);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "object '%s' is in use, can not be deleted", id);
        return FALSE;
    }
    if (tg) {
        g_hash_table_remove(registry, id);
    }
    bd_mutex_unlock(&registry_lock);
    if (!tg) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "object '%s' not found", id);
        return FALSE;
    }
    group_free(tg);
    return TRUE;
}

BdThrottleGroup *bd_throttle_group_get(const char *id, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdThrottleGroup *tg;

    bd_mutex_lock(&registry_lock);
    tg = g_hash_table_lookup(groups_locked(), id);
    if (tg) {
        tg->users++;
    }
    bd_mutex_unlock(&registry_lock);
    if (!tg) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Throttle group '%s' does not exist", id);
    }
    return tg;
}

void bd_throttle_group_get_config(const char *id, BdThrottleConfig *cfg)
{
    BD_GLOBAL_STATE_CODE();

    BdThrottleGroup *tg;

    bd_mutex_lock(&registry_lock);
    tg = g_hash_table_lookup(groups_locked(), id);
    bd_mutex_unlock(&registry_lock);
    /* Only the main thread deletes groups: tg stays valid here. */
    g_assert(tg);
    bd_mutex_lock(&tg->lock);
    *cfg = tg->cfg;
    bd_mutex_unlock(&tg->lock);
}

void bd_throttle_group_set_config(const char *id,
                                  const BdThrottleConfig *cfg)
{
    BD_GLOBAL_STATE_CODE();

    BdThrottleGroup *tg;

    bd_mutex_lock(&registry_lock);
    tg = g_hash_table_lookup(groups_locked(), id);
    bd_mutex_unlock(&registry_lock);
    g_assert(tg);
    /* As QEMU's throttle_group_config: new limits, levels start again;
     * waiters are woken to recompute their wait under the new ones. */
    bd_mutex_lock(&tg->lock);
    tg->cfg = *cfg;
    bd_throttle_config_reset(&tg->cfg);
    tg->previous_leak = now_ns();
    g_atomic_int_set(&tg->enabled, bd_throttle_config_enabled(cfg));
    bd_mutex_unlock(&tg->lock);
    bd_throttle_group_kick(tg);
}

void bd_throttle_group_put(BdThrottleGroup *tg)
{
    BD_GLOBAL_STATE_CODE();

    if (!tg) {
        return;
    }
    bd_mutex_lock(&registry_lock);
    g_assert(tg->users > 0);
    tg->users--;
    bd_mutex_unlock(&registry_lock);
}

const char *bd_throttle_group_name(const BdThrottleGroup *tg)
{
    return tg->name;
}

/* How long the head request must still wait (ns), after leaking. */
static int64_t head_wait_locked(BdThrottleGroup *tg, gboolean is_write)
    BD_REQUIRES(tg->lock)
{
    int64_t now = now_ns();

    bd_mutex_assert_held(&tg->lock);
    bd_throttle_leak(&tg->cfg, now - tg->previous_leak);
    tg->previous_leak = MAX(tg->previous_leak, now);
    return bd_throttle_compute_wait(&tg->cfg, is_write);
}

/* Leave the queues.  A member is in the round-robin exactly while it
 * has waiting requests.  'served': the request went in its turn (its
 * member was at the head), so a member with more waiting goes to the
 * back; a request released by a drain leaves its member's place alone. */
static void leave_locked(BdThrottleGroup *tg, BdThrottleMember *m, int dir,
                         Waiter *w, gboolean served) BD_REQUIRES(tg->lock)
{
    bd_mutex_assert_held(&tg->lock);
    g_queue_unlink(&m->waiting[dir], &w->link);
    if (!m->waiting[dir].length) {
        g_queue_unlink(&tg->turns[dir], &m->turn[dir]);
    } else if (served) {
        g_queue_unlink(&tg->turns[dir], &m->turn[dir]);
        g_queue_push_tail_link(&tg->turns[dir], &m->turn[dir]);
    }
}

static gboolean is_next_locked(BdThrottleGroup *tg, BdThrottleMember *m,
                               int dir, Waiter *w) BD_REQUIRES(tg->lock)
{
    bd_mutex_assert_held(&tg->lock);
    return tg->turns[dir].head == &m->turn[dir] &&
           m->waiting[dir].head == &w->link;
}

void bd_throttle_group_intercept(BdThrottleGroup *tg, BdThrottleMember *m,
                                 gboolean is_write, uint64_t bytes)
{
    int dir = is_write ? 1 : 0;
    Waiter w = { .link = { .data = &w } };
    gboolean served = TRUE;

    if (!g_atomic_int_get(&tg->enabled)) {
        return;
    }
    bd_mutex_lock(&tg->lock);
    if (!m->waiting[dir].length) {
        m->turn[dir].data = m;
        g_queue_push_tail_link(&tg->turns[dir], &m->turn[dir]);
    }
    g_queue_push_tail_link(&m->waiting[dir], &w.link);
    for (;;) {
        int64_t wait;

        if (g_atomic_int_get(&m->disabled) > 0) {
            served = FALSE;  /* drained: go at once, wherever we are */
            break;
        }
        if (!is_next_locked(tg, m, dir, &w)) {
            bd_cond_wait(&tg->cond, &tg->lock);
            continue;
        }
        wait = head_wait_locked(tg, is_write);
        if (wait == 0) {
            break;
        }
        bd_cond_wait_until(&tg->cond, &tg->lock,
                           g_get_monotonic_time() + wait / 1000 + 1);
    }
    leave_locked(tg, m, dir, &w, served);
    /* Accounted even when drained, as QEMU does. */
    bd_throttle_account(&tg->cfg, is_write, bytes);
    /* The next in line (or a drained waiter) may now go. */
    if (tg->turns[dir].head) {
        g_cond_broadcast(&tg->cond);
    }
    bd_mutex_unlock(&tg->lock);
}

void bd_throttle_group_kick(BdThrottleGroup *tg)
{
    bd_mutex_lock(&tg->lock);
    g_cond_broadcast(&tg->cond);
    bd_mutex_unlock(&tg->lock);
}
