/* SPDX-License-Identifier: MIT */
/* The 'qcow2' format driver: driver table, options, open/close, queries.
 *
 * Thread model: open/close/reopen/query on the main thread (asserted:
 * query_image_info is also called straight from other drivers' open,
 * outside the graph's asserted paths); create on the create job's
 * thread (create-qapi.c).  Data callbacks
 * (rw.c) run on any thread; Qcow2State.lock protects the metadata (L1,
 * refcount table, caches, allocation state) and is never held across
 * guest data I/O.  The cache-clean timer runs on the main loop and takes
 * the lock.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "formats/qcow2/backing.h"
#include "formats/qcow2/qcow2.h"
#include "formats/filename.h"
#include "formats/json-filename.h"
#include "formats/registry.h"
#include "formats/qcow2/create-qapi.h"

#define DEFAULT_L2_CACHE_MAX_SIZE (32u * 1024 * 1024)
#define MIN_REFCOUNT_CACHE_CLUSTERS 4
#define MIN_L2_CACHE_CLUSTERS 2
#define DEFAULT_CACHE_CLEAN_INTERVAL 600

/* --- schema (QAPI BlockdevOptionsQcow2) --- */

typedef enum {
    OVERLAP_NONE, OVERLAP_CONSTANT, OVERLAP_CACHED, OVERLAP_ALL
} OverlapMode;

static const char *const overlap_mode_values[] = {
    [OVERLAP_NONE] = "none",
    [OVERLAP_CONSTANT] = "constant",
    [OVERLAP_CACHED] = "cached",
    [OVERLAP_ALL] = "all",
    NULL };
static const BdSchemaType overlap_mode_type = {
    .name = "Qcow2OverlapCheckMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = overlap_mode_values };

/* Qcow2OverlapCheckFlags: flag[i] is the check QCOW2_OL_* 1 << i. */
#define N_OVERLAP_FLAGS 9
typedef struct {
    OverlapMode template_mode;
    gboolean flag[N_OVERLAP_FLAGS];
    gboolean has_flag[N_OVERLAP_FLAGS];
} OverlapFlags;

#define FLAG(bit, n) \
    { n, &bd_schema_bool, TRUE, BD_AT(OverlapFlags, flag[bit]), \
      BD_HAS(OverlapFlags, flag[bit]) }
static const BdSchemaField overlap_flag_fields[] = {
    { "template", &overlap_mode_type, TRUE,
      BD_AT(OverlapFlags, template_mode), .def.i = OVERLAP_CACHED },
    FLAG(0, "main-header"),
    FLAG(1, "active-l1"),
    FLAG(2, "active-l2"),
    FLAG(3, "refcount-table"),
    FLAG(4, "refcount-block"),
    FLAG(5, "snapshot-table"),
    FLAG(6, "inactive-l1"),
    FLAG(7, "inactive-l2"),
    FLAG(8, "bitmap-directory"),
    { NULL },
};
#undef FLAG
G_STATIC_ASSERT(QCOW2_OL_MAIN_HEADER == 1 << 0 &&
                QCOW2_OL_BITMAP_DIRECTORY == 1 << (N_OVERLAP_FLAGS - 1));
static const BdSchemaType overlap_flags_type = {
    .name = "Qcow2OverlapCheckFlags", .kind = BD_SCHEMA_OBJECT,
    .fields = overlap_flag_fields };
static const BdSchemaType *const overlap_alts[] = {
    &overlap_flags_type, &overlap_mode_type, NULL };
static const BdSchemaType overlap_type = {
    .name = "Qcow2OverlapChecks", .kind = BD_SCHEMA_ALTERNATE,
    .alternatives = overlap_alts };

typedef struct {
    GVariant *file;
    GVariant *backing;
    gboolean has_backing;
    gboolean lazy_refcounts;
    gboolean has_lazy_refcounts;     /* else: as the image header says */
    gboolean pass_discard_request;
    gboolean pass_discard_snapshot;
    gboolean pass_discard_other;
    GVariant *overlap_check;         /* Qcow2OverlapChecks */
    gint64 cache_size;
    gboolean has_cache_size;
    gint64 l2_cache_size;
    gboolean has_l2_cache_size;
    gint64 l2_cache_entry_size;
    gboolean has_l2_cache_entry_size; /* else: the cluster size */
    gint64 refcount_cache_size;
    gboolean has_refcount_cache_size;
    gint64 cache_clean_interval;
    GVariant *encrypt;
    GVariant *data_file;
} Qcow2Options;

#define O(f) BD_AT(Qcow2Options, f)
#define HAS(f) BD_HAS(Qcow2Options, f)
/* QEMU's mutable qcow2 options: the caches, discard passing, lazy
 * refcounts and overlap checks. */
#define MUTABLE .flags = BD_FIELD_MUTABLE
static const BdSchemaField qcow2_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, O(file) },
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE, O(backing),
      HAS(backing) },
    { "lazy-refcounts", &bd_schema_bool, TRUE, O(lazy_refcounts),
      HAS(lazy_refcounts), MUTABLE },
    { "pass-discard-request", &bd_schema_bool, TRUE,
      O(pass_discard_request), .def.i = TRUE, MUTABLE },
    { "pass-discard-snapshot", &bd_schema_bool, TRUE,
      O(pass_discard_snapshot), .def.i = TRUE, MUTABLE },
    { "pass-discard-other", &bd_schema_bool, TRUE, O(pass_discard_other),
      MUTABLE },
    { "overlap-check", &overlap_type, TRUE, O(overlap_check), MUTABLE },
    { "cache-size", &bd_schema_int, TRUE, O(cache_size), HAS(cache_size),
      MUTABLE },
    { "l2-cache-size", &bd_schema_int, TRUE, O(l2_cache_size),
      HAS(l2_cache_size), MUTABLE },
    { "l2-cache-entry-size", &bd_schema_int, TRUE, O(l2_cache_entry_size),
      HAS(l2_cache_entry_size), MUTABLE },
    { "refcount-cache-size", &bd_schema_int, TRUE, O(refcount_cache_size),
      HAS(refcount_cache_size), MUTABLE },
    { "cache-clean-interval", &bd_schema_int, TRUE, O(cache_clean_interval),
      .def.i = DEFAULT_CACHE_CLEAN_INTERVAL, MUTABLE },
    { "encrypt", &bd_schema_any, TRUE, O(encrypt) },
    { "data-file", &bd_schema_blockdev_ref, TRUE, O(data_file) },
    { NULL },
};
#undef MUTABLE
#undef O
#undef HAS
BD_SCHEMA_DEFINE_AUTO(Qcow2Options, qcow2_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

void qcow2_signal_corruption(Qcow2State *s, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (s->corrupt) {
        return;
    }
    if (!s->writable) {
        g_warning("node '%s': qcow2: image is corrupt: %s",
                  s->node->node_name, msg);
        return;
    }
    g_warning("node '%s': qcow2: Marking image as corrupt: %s; further "
              "corruption events will be suppressed",
              s->node->node_name, msg);
    s->corrupt = TRUE;
    if (s->h.version >= 3) {
        uint64_t be = GUINT64_TO_BE(s->h.incompatible |
                                    QCOW2_INCOMPAT_CORRUPT);
        if (bd_child_pwrite(s->file, 72, 8, &be, 0) == 0) {
            s->h.incompatible |= QCOW2_INCOMPAT_CORRUPT;
            bd_child_flush(s->file);
        }
    }
}

/* --- caches: QEMU's read_cache_sizes() rules and messages --- */

static gboolean read_cache_sizes(Qcow2State *s, const Qcow2Options *o,
                                 uint64_t *l2, uint64_t *rc, uint64_t *entry,
                                 GError **errp)
{
    gboolean has_all = o->has_cache_size;
    gboolean has_l2 = o->has_l2_cache_size;
    gboolean has_rc = o->has_refcount_cache_size;
    uint64_t all = (uint64_t)o->cache_size;
    uint64_t cs = s->cluster_size;
    uint64_t max_l2 = ((s->h.size + cs - 1) / cs * 8 + cs - 1) / cs * cs;
    uint64_t min_rc = MIN_REFCOUNT_CACHE_CLUSTERS * cs;
    const struct { gint64 value; const char *name; } sizes[] = {
        { o->l2_cache_size, "l2-cache-size" },
        { o->l2_cache_entry_size, "l2-cache-entry-size" },
        { o->refcount_cache_size, "refcount-cache-size" },
        { o->cache_size, "cache-size" } };

    /* QEMU parses these as sizes: no negative numbers. */
    for (gsize i = 0; i < G_N_ELEMENTS(sizes); i++) {
        if (sizes[i].value < 0) {
            FAIL("Parameter '%s' expects a non-negative number below 2^64",
                 sizes[i].name);
        }
    }

    *l2 = (uint64_t)o->l2_cache_size;
    *rc = (uint64_t)o->refcount_cache_size;
    *entry = o->has_l2_cache_entry_size ? (uint64_t)o->l2_cache_entry_size
                                        : cs;
    if (has_all) {
        if (has_l2 && has_rc) {
            FAIL("cache-size, l2-cache-size and refcount-cache-size may "
                 "not be set at the same time");
        } else if (has_l2 && *l2 > all) {
            FAIL("l2-cache-size may not exceed cache-size");
        } else if (has_rc && *rc > all) {
            FAIL("refcount-cache-size may not exceed cache-size");
        }
        if (has_l2) {
            *rc = all - *l2;
        } else if (has_rc) {
            *l2 = all - *rc;
        } else if (all >= max_l2 + min_rc) {
            *l2 = max_l2;
            *rc = all - *l2;
        } else {
            *rc = MIN(all, min_rc);
            *l2 = all - *rc;
        }
    } else {
        if (!has_l2) {
            *l2 = MIN(max_l2, (uint64_t)DEFAULT_L2_CACHE_MAX_SIZE);
        }
        if (!has_rc) {
            *rc = min_rc;
        }
    }
    if (*entry < 512 || *entry > cs || (*entry & (*entry - 1))) {
        FAIL("L2 cache entry size must be a power of two between %d and "
             "the cluster size (%" PRIu64 ")", 512, cs);
    }
    return TRUE;
}

static gboolean clean_caches(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = opaque;

    g_mutex_lock(&s->lock);
    qcow2_cache_clean_unused(s->l2_cache);
    qcow2_cache_clean_unused(s->rc_cache);
    g_mutex_unlock(&s->lock);
    return G_SOURCE_CONTINUE;
}

/* Cache geometry from the options, checked but not applied yet. */
typedef struct {
    uint64_t l2_entries, rc_entries, entry_size;
    guint interval;
} Qcow2CacheConfig;

static gboolean parse_caches(Qcow2State *s, const Qcow2Options *o,
                             Qcow2CacheConfig *c, GError **errp)
{
    uint64_t l2, rc, entry;
    gint64 interval = o->cache_clean_interval;

    if (!read_cache_sizes(s, o, &l2, &rc, &entry, errp)) {
        return FALSE;
    }
    l2 = MAX(l2 / entry, (uint64_t)MIN_L2_CACHE_CLUSTERS *
                             (s->cluster_size / entry));
    if (l2 > INT_MAX) {
        FAIL("L2 cache size too big");
    }
    rc = MAX(rc / s->cluster_size, (uint64_t)MIN_REFCOUNT_CACHE_CLUSTERS);
    if (rc > INT_MAX) {
        FAIL("Refcount cache size too big");
    }
    if (interval < 0 || (uint64_t)interval > UINT_MAX) {
        FAIL("Cache clean interval too big");
    }
    c->l2_entries = l2;
    c->rc_entries = rc;
    c->entry_size = entry;
    c->interval = (guint)interval;
    return TRUE;
}

/* Replaces the caches; the old ones must hold nothing dirty. */
static void apply_caches(Qcow2State *s, const Qcow2CacheConfig *c)
{
    BD_GLOBAL_STATE_CODE();

    if (s->clean_timer) {
        g_source_remove(s->clean_timer);
        s->clean_timer = 0;
    }
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->rc_cache);
    s->l2_slice_size = c->entry_size / 8;
    s->l2_cache = qcow2_cache_new(s, c->l2_entries, c->entry_size);
    s->rc_cache = qcow2_cache_new(s, c->rc_entries, s->cluster_size);
    /* Lazy refcounts: L2 tables may reach the disk before the refcounts
     * (the dirty bit covers the difference). */
    qcow2_cache_set_dependency(s->l2_cache,
                               s->lazy_refcounts ? NULL : s->rc_cache);
    if (c->interval > 0) {
        s->clean_timer = g_timeout_add_seconds(c->interval, clean_caches, s);
    }
}

static gboolean setup_caches(Qcow2State *s, const Qcow2Options *o,
                             GError **errp)
{
    Qcow2CacheConfig c;

    if (!parse_caches(s, o, &c, errp)) {
        return FALSE;
    }
    apply_caches(s, &c);
    return TRUE;
}

static gboolean parse_overlap_check(const Qcow2Options *o, int *out,
                                    GError **errp)
{
    const int constant = QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 |
                         QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_SNAPSHOT_TABLE |
                         QCOW2_OL_INACTIVE_L1 | QCOW2_OL_BITMAP_DIRECTORY;
    const int cached = constant | QCOW2_OL_ACTIVE_L2 |
                       QCOW2_OL_REFCOUNT_BLOCK;
    GVariant *v = o->overlap_check;
    OverlapFlags flags = { 0 };

    /* The alternate: a mode, or flags over a template mode. */
    if (v && g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        bd_schema_decode(overlap_flag_fields, NULL, &flags);
        flags.template_mode = bd_schema_enum_index(
            &overlap_mode_type, g_variant_get_string(v, NULL));
    } else {
        bd_schema_decode(overlap_flag_fields, v, &flags);
    }
    *out = flags.template_mode == OVERLAP_NONE ? 0 :
           flags.template_mode == OVERLAP_CONSTANT ? constant :
           flags.template_mode == OVERLAP_ALL ? cached | QCOW2_OL_INACTIVE_L2
                                              : cached;
    for (int i = 0; i < N_OVERLAP_FLAGS; i++) {
        if (flags.has_flag[i]) {
            if (flags.flag[i]) {
                *out |= 1 << i;
            } else {
                *out &= ~(1 << i);
            }
        }
    }
    return TRUE;
}

/* --- tables --- */

static gboolean read_table(Qcow2State *s, uint64_t offset, uint64_t entries,
                           uint64_t **out, const char *what, GError **errp)
{
    g_autofree uint64_t *t = NULL;
    int ret;

    if (entries == 0) {
        *out = NULL;
        return TRUE;
    }
    t = g_try_new(uint64_t, entries);
    if (!t) {
        FAIL("Could not allocate %s", what);
    }
    ret = bd_child_pread(s->file, offset, entries * 8, t, 0);
    if (ret < 0) {
        FAIL("Could not read %s: %s", what, g_strerror(-ret));
    }
    for (uint64_t i = 0; i < entries; i++) {
        t[i] = GUINT64_FROM_BE(t[i]);
    }
    *out = g_steal_pointer(&t);
    return TRUE;
}

static gboolean read_header(Qcow2State *s, GError **errp)
{
    int64_t flen = bd_node_getlength(s->file->node);
    uint64_t len;
    g_autofree uint8_t *buf = NULL;
    int ret;

    if (flen < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-flen));
    }
    len = MIN((uint64_t)flen, 1ull << QCOW2_MAX_CLUSTER_BITS);
    buf = g_malloc0(MAX(len, QCOW2_V3_HEADER_SIZE));
    ret = bd_child_pread(s->file, 0, len, buf, 0);
    if (ret < 0) {
        FAIL("Could not read qcow2 header: %s", g_strerror(-ret));
    }
    return qcow2_header_parse(buf, len, flen, &s->h, errp);
}

static gboolean check_writable(Qcow2State *s, const Qcow2Options *o,
                               GError **errp)
{
    if (s->h.incompatible & QCOW2_INCOMPAT_CORRUPT) {
        FAIL("qcow2: Image is corrupt; cannot be opened read/write");
    }
    if (o->lazy_refcounts && s->h.version < 3) {
        FAIL("Lazy refcounts require a qcow2 image with at least qemu 1.1 "
             "compatibility level");
    }
    /* The bitmaps bit stays: bitmap.c maintains that extension. */
    uint64_t keep = s->h.has_bitmaps_ext ? QCOW2_AUTOCLEAR_BITMAPS : 0;
    if (s->h.autoclear & ~keep) {
        /* Features we do not maintain must be marked stale (spec). */
        uint64_t be = GUINT64_TO_BE(s->h.autoclear & keep);
        int ret = bd_child_pwrite(s->file, 88, 8, &be, 0);
        if (ret < 0) {
            FAIL("Could not update qcow2 header: %s", g_strerror(-ret));
        }
        s->h.autoclear &= keep;
    }
    return TRUE;
}

/* lazy-refcounts, by default what the image header says. */
static gboolean lazy_refcounts(Qcow2State *s, const Qcow2Options *o)
{
    return o->has_lazy_refcounts
           ? o->lazy_refcounts
           : !!(s->h.compatible & QCOW2_COMPAT_LAZY_REFCOUNTS);
}

static void setup_geometry(Qcow2State *s)
{
    s->cluster_bits = s->h.cluster_bits;
    s->cluster_size = 1u << s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->refcount_bits = 1u << s->h.refcount_order;
    s->refblock_bits = s->cluster_bits + 3 - s->h.refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX
                      : (1ull << s->refcount_bits) - 1;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ull << s->csize_shift) - 1;
}

/* --- backing --- */

static gboolean open_backing(BdNode *node, Qcow2State *s,
                             const Qcow2Options *o, GError **errp)
{
    g_autofree char *dir = NULL;
    g_autoptr(GVariant) ref = NULL;

    if (o->has_backing) {
        s->auto_backing_file = g_strdup(s->h.backing_file);
        return bd_node_open_child(node, o->backing, "backing", BD_CHILD_COW,
                                  TRUE, errp) != NULL || !errp || !*errp;
    }
    if (!s->h.backing_file) {
        return TRUE;
    }
    /* A relative name is taken from the image's own directory, as QEMU. */
    if (s->file->node->filename) {
        dir = g_path_get_dirname(s->file->node->filename);
    }
    ref = bd_formats_image_options(s->h.backing_file, s->h.backing_format,
                                   dir, errp);
    if (!ref) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    BdChild *backing = bd_node_open_child(node, ref, "backing", BD_CHILD_COW,
                                          FALSE, errp);
    if (!backing) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    /* No format in the header: probed, as QEMU. */
    if (!s->h.backing_format &&
        !bd_formats_filename_is_remote(s->h.backing_file)) {
        bd_formats_raw_set_probed(backing->node);
    }
    s->auto_backing_file = g_strdup(bd_node_backing(node)->filename);
    return TRUE;
}

/* --- open / close --- */

static void qcow2_close(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->clean_timer) {
        g_source_remove(s->clean_timer);
    }
    qcow2_bitmaps_close(s);
    if (s->writable && s->l2_cache && !s->corrupt) {
        int ret = qcow2_metadata_flush_locked(s);

        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        if (ret == 0) {
            ret = qcow2_mark_clean_locked(s);
        }
        if (ret < 0) {
            /* The last chance to write them: say what is lost. */
            g_warning("node '%s': qcow2: could not write metadata back on "
                      "close: %s", node->node_name, g_strerror(-ret));
        }
    }
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->rc_cache);
    g_free(s->l1);
    g_free(s->reftable);
    qcow2_snapshots_free(s);
    qcow2_header_clear(&s->h);
    g_free(s->auto_backing_file);
    if (s->inflight) {
        g_ptr_array_unref(s->inflight);
    }
    if (s->deferred_free) {
        g_array_unref(s->deferred_free);
    }
    qcow2_crypto_close(s);
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
    g_free(s);
    node->opaque = NULL;
}

static gboolean qcow2_open_tables(BdNode *node, Qcow2State *s,
                                  const Qcow2Options *o, GError **errp)
{
    int64_t flen;

    if (!read_header(s, errp)) {
        return FALSE;
    }
    setup_geometry(s);
    if (o->data_file || (s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE)) {
        FAIL("External data files are not supported by blockd");
    }
    if (!qcow2_crypto_open(s, o->encrypt, errp)) {
        return FALSE;
    }
    if (s->writable && !check_writable(s, o, errp)) {
        return FALSE;
    }
    s->lazy_refcounts = s->writable && lazy_refcounts(s, o);
    s->l1_size = s->h.l1_size;
    s->reftable_size = (uint64_t)s->h.refcount_table_clusters *
                       s->cluster_size / 8;
    if (!read_table(s, s->h.l1_table_offset, s->l1_size, &s->l1,
                    "L1 table", errp) ||
        !read_table(s, s->h.refcount_table_offset, s->reftable_size,
                    &s->reftable, "refcount table", errp) ||
        !setup_caches(s, o, errp) ||
        !parse_overlap_check(o, &s->overlap_check, errp)) {
        return FALSE;
    }
    qcow2_reftable_scan_used(s);
    flen = bd_node_getlength(s->file->node);
    if (!qcow2_snapshots_load(s, MAX(flen, 0), errp)) {
        return FALSE;
    }
    s->alloc_end = qcow2_size_to_clusters(s, MAX(flen, 0));
    s->pass_discard[QCOW2_DISCARD_REQUEST] = o->pass_discard_request;
    s->pass_discard[QCOW2_DISCARD_SNAPSHOT] = o->pass_discard_snapshot;
    s->pass_discard[QCOW2_DISCARD_OTHER] = o->pass_discard_other;
    if (s->writable && (s->h.incompatible & QCOW2_INCOMPAT_DIRTY)) {
        /* As QEMU: a dirty image (lazy refcounts, not closed cleanly)
         * gets its refcounts rebuilt before anything is written. */
        uint64_t fixed;
        gboolean ok;

        g_mutex_lock(&s->lock);
        ok = qcow2_repair_refcounts_locked(s, MAX(flen, 0), &fixed, errp);
        g_mutex_unlock(&s->lock);
        if (!ok) {
            g_prefix_error(errp, "qcow2: Could not repair dirty image: ");
            return FALSE;
        }
        if (fixed) {
            g_message("node '%s': qcow2: repaired %" PRIu64 " refcounts "
                      "of a dirty image", node->node_name, fixed);
        }
    }
    return TRUE;
}

static gboolean qcow2_open(BdNode *node, GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(Qcow2Options) o = { 0 };
    Qcow2State *s = g_new0(Qcow2State, 1);

    bd_schema_decode(qcow2_options, options, &o);

    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    s->node = node;
    s->inflight = g_ptr_array_new();
    s->deferred_free = g_array_new(FALSE, FALSE, sizeof(Qcow2Deferred));
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file) {
        goto fail;
    }
    s->writable = !node->read_only;
    if (!qcow2_open_tables(node, s, &o, errp) ||
        !open_backing(node, s, &o, errp)) {
        goto fail;
    }
    bd_node_set_size(node, s->h.size);
    if (!qcow2_bitmaps_load(s, errp)) {
        goto fail;
    }
    return TRUE;

fail:
    s->writable = FALSE;
    qcow2_close(node);
    return FALSE;
}

/* --- reopen: caches, discard passing, lazy refcounts, overlap checks,
 * read-only (QEMU's mutable qcow2 options) --- */

typedef struct {
    Qcow2CacheConfig caches;
    int overlap_check;
    gboolean pass_discard[3];
    gboolean lazy_refcounts;
    gboolean writable;
} Qcow2Reopen;

static gboolean qcow2_reopen_prepare(BdReopenState *state, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = state->node->opaque;
    g_auto(Qcow2Options) o = { 0 };
    g_autofree Qcow2Reopen *r = g_new0(Qcow2Reopen, 1);
    int ret;

    bd_schema_decode(qcow2_options, state->options, &o);
    r->writable = !state->read_only;
    if (!parse_caches(s, &o, &r->caches, errp) ||
        !parse_overlap_check(&o, &r->overlap_check, errp)) {
        return FALSE;
    }
    if (r->writable && !s->writable &&
        (s->h.incompatible & QCOW2_INCOMPAT_CORRUPT)) {
        FAIL("qcow2: Image is corrupt; cannot be opened read/write");
    }
    r->lazy_refcounts = r->writable && lazy_refcounts(s, &o);
    if (r->lazy_refcounts && s->h.version < 3) {
        FAIL("Lazy refcounts require a qcow2 image with at least qemu 1.1 "
             "compatibility level");
    }
    r->pass_discard[QCOW2_DISCARD_REQUEST] = o.pass_discard_request;
    r->pass_discard[QCOW2_DISCARD_SNAPSHOT] = o.pass_discard_snapshot;
    r->pass_discard[QCOW2_DISCARD_OTHER] = o.pass_discard_other;

    if (!qcow2_bitmaps_reopen_prepare(s, r->writable, errp)) {
        return FALSE;
    }
    /* The node is drained: write back everything now, so the caches can
     * be replaced and a read-only image is clean on disk. */
    if (s->writable && !s->corrupt) {
        g_mutex_lock(&s->lock);
        ret = qcow2_metadata_flush_locked(s);
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        if (ret == 0 && (!r->writable || !r->lazy_refcounts)) {
            ret = qcow2_mark_clean_locked(s);
        }
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            FAIL("Could not flush qcow2 metadata: %s", g_strerror(-ret));
        }
    }
    state->opaque = g_steal_pointer(&r);
    return TRUE;
}

static void qcow2_reopen_commit(BdReopenState *state)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = state->node->opaque;
    Qcow2Reopen *r = state->opaque;
    gboolean was_writable = s->writable;

    g_mutex_lock(&s->lock);
    s->writable = r->writable;
    s->lazy_refcounts = r->lazy_refcounts;
    s->overlap_check = r->overlap_check;
    memcpy(s->pass_discard, r->pass_discard, sizeof(s->pass_discard));
    apply_caches(s, &r->caches);
    g_mutex_unlock(&s->lock);
    qcow2_bitmaps_reopen_commit(s, was_writable);
    g_free(r);
    state->opaque = NULL;
}

static void qcow2_reopen_commit_post(BdReopenState *state)
{
    BD_GLOBAL_STATE_CODE();

    qcow2_bitmaps_reopen_commit_post(state->node->opaque);
}

static void qcow2_reopen_abort(BdReopenState *state)
{
    BD_GLOBAL_STATE_CODE();

    g_free(state->opaque);
    state->opaque = NULL;
}

static gboolean qcow2_has_default_backing(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;

    return s->h.backing_file != NULL;
}

/* --- queries --- */

static gboolean qcow2_backing_overridden(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    BdNode *backing = bd_node_backing(node);

    if (backing) {
        return g_strcmp0(s->auto_backing_file ? s->auto_backing_file : "",
                         backing->filename) != 0;
    }
    return s->auto_backing_file && s->auto_backing_file[0];
}

static char *qcow2_query_filename(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;

    if (s->crypto_secret) {
        /* QEMU's strong option "encrypt.key-secret", flat. */
        g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(
            bd_formats_full_options(node));

        g_variant_dict_insert(&d, "encrypt.key-secret", "s",
                              s->crypto_secret);
        return bd_formats_json_of(g_variant_dict_end(&d));
    }
    return qcow2_backing_overridden(node) ||
           !bd_formats_child_name_passes(s->file->node)
           ? bd_formats_json_filename(node) : NULL;
}

/* QEMU's bdrv_get_full_backing_filename(): the header's name taken from
 * the directory of the image file unless it is absolute or has a
 * protocol prefix; NULL when that directory is unknown. */
static char *qcow2_full_backing_filename(Qcow2State *s)
{
    const char *name = s->h.backing_file;
    const char *colon = strchr(name, ':');
    const char *slash = strchr(name, '/');
    const char *file = s->file ? s->file->node->filename : NULL;
    const char *last;

    if (g_path_is_absolute(name) || (colon && (!slash || colon < slash))) {
        return g_strdup(name);
    }
    if (!file || g_str_has_prefix(file, "json:")) {
        return NULL;
    }
    last = strrchr(file, '/');
    return last ? g_strdup_printf("%.*s%s", (int)(last - file + 1), file,
                                  name)
                : g_strdup(name);
}

/* Encrypted: whole 512-byte sectors, as QEMU's crypto sector size. */
static void qcow2_refresh_limits(BdNode *node)
{
    Qcow2State *s = node->opaque;

    if (s && s->crypto) {
        node->request_alignment = MAX(node->request_alignment, 512);
    }
}

static void qcow2_query_image_info(BdNode *node, GVariantDict *image)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    GVariantDict data, spec;

    qcow2_snapshots_query(s, image);
    g_variant_dict_init(&data, NULL);
    qcow2_crypto_query(s, &data);
    if (s->h.version >= 3) {
        g_variant_dict_insert(&data, "compat", "s", "1.1");
        g_variant_dict_insert(&data, "compression-type", "s", "zlib");
        g_variant_dict_insert(&data, "lazy-refcounts", "b",
                              !!(s->h.compatible &
                                 QCOW2_COMPAT_LAZY_REFCOUNTS));
        g_variant_dict_insert(&data, "refcount-bits", "x",
                              (gint64)s->refcount_bits);
        g_variant_dict_insert(&data, "corrupt", "b",
                              !!(s->h.incompatible &
                                 QCOW2_INCOMPAT_CORRUPT));
        g_variant_dict_insert(&data, "extended-l2", "b", FALSE);
    } else {
        g_variant_dict_insert(&data, "compat", "s", "0.10");
        g_variant_dict_insert(&data, "compression-type", "s", "zlib");
        g_variant_dict_insert(&data, "refcount-bits", "x",
                              (gint64)s->refcount_bits);
    }
    g_variant_dict_init(&spec, NULL);
    g_variant_dict_insert(&spec, "type", "s", "qcow2");
    g_variant_dict_insert_value(&spec, "data", g_variant_dict_end(&data));
    g_variant_dict_insert_value(image, "format-specific",
                                g_variant_dict_end(&spec));
    g_variant_dict_insert(image, "cluster-size", "x",
                          (gint64)s->cluster_size);
    g_variant_dict_insert(image, "dirty-flag", "b",
                          !!(s->h.incompatible & QCOW2_INCOMPAT_DIRTY));
    if (s->crypto) {
        g_variant_dict_insert(image, "encrypted", "b", TRUE);
    }
    /* As QEMU: the name as the header has it and where it leads from
     * the image's directory, whatever backing node is attached. */
    if (s->h.backing_file) {
        g_autofree char *full = qcow2_full_backing_filename(s);

        g_variant_dict_insert_value(image, "backing-filename",
                                    g_variant_new_take_string(bd_query_string(s->h.backing_file)));
        if (full) {
            g_variant_dict_insert_value(image, "full-backing-filename",
                                        g_variant_new_take_string(bd_query_string(full)));
        }
    }
    if (s->h.backing_format) {
        g_variant_dict_insert_value(image, "backing-filename-format",
                                    g_variant_new_take_string(bd_query_string(s->h.backing_format)));
    }
}

static gboolean qcow2_resize_check(BdNode *node, uint64_t size,
                                   GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;

    /* A v2 snapshot does not record its disk size. */
    if (s->h.nb_snapshots && s->h.version < 3) {
        FAIL("Can't resize a v2 image which has snapshots");
    }
    return TRUE;
}

/* --- x-blockdev-amend (BlockdevAmendOptionsQcow2 of QEMU 7.2: only
 * 'encrypt'; changing the key slots of an encrypted image is not
 * implemented) --- */

typedef struct {
    GVariant *encrypt;
} Qcow2AmendOptions;

static const BdSchemaField qcow2_amend_options[] = {
    { "encrypt", &bd_schema_any, TRUE, BD_AT(Qcow2AmendOptions, encrypt) },
    { NULL } };

static gboolean qcow2_amend(BdNode *node, GVariant *options, gboolean force,
                            GError **errp)
{
    Qcow2AmendOptions o = { 0 };
    gboolean has_encrypt;

    bd_schema_decode(qcow2_amend_options, options, &o);
    has_encrypt = o.encrypt != NULL;
    bd_schema_clear(qcow2_amend_options, &o);
    if (has_encrypt && !((Qcow2State *)node->opaque)->crypto) {
        FAIL("image is not encrypted, can't amend");
    }
    if (has_encrypt) {
        FAIL("Amending the key slots of an encrypted qcow2 image is not "
             "supported by this server");
    }
    return TRUE;
}

const BdDriver bd_qcow2_driver = {
    .name = "qcow2",
    .options = qcow2_options,
    .is_format = TRUE,
    .supported_write_flags = BD_REQ_WRITE_COMPRESSED,
    .reopen_prepare = qcow2_reopen_prepare,
    .reopen_commit = qcow2_reopen_commit,
    .reopen_commit_post = qcow2_reopen_commit_post,
    .reopen_abort = qcow2_reopen_abort,
    .has_default_backing = qcow2_has_default_backing,
    .backing_overridden = qcow2_backing_overridden,
    .query_filename = qcow2_query_filename,
    .change_backing_file = bd_qcow2_change_backing_file,
    .open = qcow2_open,
    .close = qcow2_close,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .copy_range_from = qcow2_copy_range_from,
    .pwrite_zeroes = qcow2_pwrite_zeroes,
    .pdiscard = qcow2_pdiscard,
    .flush = qcow2_flush,
    .block_status = qcow2_block_status,
    .truncate = qcow2_truncate,
    .resize_check = qcow2_resize_check,
    .amend_options = qcow2_amend_options,
    .amend = qcow2_amend,
    .query_image_info = qcow2_query_image_info,
    .refresh_limits = qcow2_refresh_limits,
    .snapshot_list = qcow2_snapshot_list,
    .snapshot_create = qcow2_snapshot_create,
    .snapshot_delete = qcow2_snapshot_delete,
    .create_options = bd_qcow2_create_options,
    .create = bd_qcow2_create_hook,
};
