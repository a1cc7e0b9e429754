/* SPDX-License-Identifier: MIT */
/* qcow2 reference counts: lookup, update, cluster allocation, table growth.
 *
 * Thread model: all functions need Qcow2State.lock.  Crash-safety order:
 * a new refcount block is on disk before the refcount table points to
 * it; a grown refcount table (and the blocks describing it) is on disk
 * before the header points to it; refcount increments reach the disk
 * before any L2/L1 entry that references the cluster (cache dependency).
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/qcow2/qcow2.h"

uint64_t qcow2_refcount_read(const void *block, uint64_t i, uint32_t order)
{
    const uint8_t *b = block;

    switch (order) {
    case 0: case 1: case 2: {
        uint32_t bits = 1u << order, per = 8 / bits;
        return (b[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
    }
    case 3:
        return b[i];
    case 4:
        return (uint64_t)b[2 * i] << 8 | b[2 * i + 1];
    case 5:
        return (uint64_t)GUINT32_FROM_BE(((const uint32_t *)block)[i]);
    default:
        return GUINT64_FROM_BE(((const uint64_t *)block)[i]);
    }
}

void qcow2_refcount_write(void *block, uint64_t i, uint32_t order,
                          uint64_t v)
{
    uint8_t *b = block;

    switch (order) {
    case 0: case 1: case 2: {
        uint32_t bits = 1u << order, per = 8 / bits;
        uint32_t shift = (i % per) * bits, mask = ((1u << bits) - 1) << shift;
        b[i / per] = (b[i / per] & ~mask) | ((v << shift) & mask);
        break;
    }
    case 3:
        b[i] = v;
        break;
    case 4:
        b[2 * i] = v >> 8;
        b[2 * i + 1] = v;
        break;
    case 5:
        ((uint32_t *)block)[i] = GUINT32_TO_BE((uint32_t)v);
        break;
    default:
        ((uint64_t *)block)[i] = GUINT64_TO_BE(v);
    }
}

static uint64_t refblock_offset(Qcow2State *s, uint64_t idx)
{
    if (idx >= s->reftable_size) {
        return 0;
    }
    return s->reftable[idx] & ~((uint64_t)s->cluster_size - 1) &
           0x00ffffffffffffffull;
}

int qcow2_refcount_get_locked(Qcow2State *s, uint64_t cluster,
                              uint64_t *refcount)
{
    uint64_t idx = cluster >> s->refblock_bits;
    uint64_t off = refblock_offset(s, idx);
    void *block;
    int ret;

    *refcount = 0;
    if (!off) {
        return 0;
    }
    ret = qcow2_cache_get(s->rc_cache, off, FALSE, &block);
    if (ret < 0) {
        return ret;
    }
    *refcount = qcow2_refcount_read(block, cluster &
                                    ((1ull << s->refblock_bits) - 1),
                                    s->h.refcount_order);
    return 0;
}

static int write_be64_at(Qcow2State *s, uint64_t offset, uint64_t v)
{
    uint64_t be = GUINT64_TO_BE(v);

    return bd_child_pwrite(s->file, offset, 8, &be, 0);
}

/* A new refcount block for table index 'idx', stored at the free
 * 'cluster': either in the range it describes (it counts itself) or in a
 * range whose refcount block exists (that block counts it).  On failure
 * nothing changed: the reftable in memory points to the block only once
 * the entry on disk does, and the block's own reference is given back. */
static int refblock_create_locked(Qcow2State *s, uint64_t idx,
                                  uint64_t cluster)
{
    uint64_t off = cluster << s->cluster_bits;
    gboolean self = cluster >> s->refblock_bits == idx;
    void *block;
    int ret;

    bd_debug_event(s->file, BD_DEBUG_EVENT_REFBLOCK_ALLOC);
    if (!self) {
        ret = qcow2_refcount_update_locked(s, off, 1, 1, QCOW2_DISCARD_OTHER);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_cache_get(s->rc_cache, off, TRUE, &block);
    if (ret == 0) {
        if (self) {
            qcow2_refcount_write(block,
                                 cluster & ((1ull << s->refblock_bits) - 1),
                                 s->h.refcount_order, 1);
        }
        qcow2_cache_mark_dirty(s->rc_cache, off);
        bd_debug_event(s->file, BD_DEBUG_EVENT_REFBLOCK_ALLOC_WRITE);
        ret = qcow2_cache_flush(s->rc_cache);
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        if (ret == 0) {
            bd_debug_event(s->file, BD_DEBUG_EVENT_REFBLOCK_ALLOC_HOOKUP);
            ret = write_be64_at(s, s->h.refcount_table_offset + idx * 8, off);
        }
        if (ret < 0) {
            /* Nothing references the block: forget it, dirty or not. */
            qcow2_cache_discard(s->rc_cache, off);
        }
    }
    if (ret < 0) {
        if (!self) {
            qcow2_refcount_update_locked(s, off, 1, -1, QCOW2_DISCARD_OTHER);
        }
        return ret;
    }
    s->reftable[idx] = off;
    s->reftable_used = MAX(s->reftable_used, idx + 1);
    s->alloc_end = MAX(s->alloc_end, cluster + 1);
    return 0;
}

static gboolean refblock_missing(Qcow2State *s, uint64_t idx)
{
    return refblock_offset(s, idx) == 0;
}

/* Count the clusters [p, end) of a grown refcount table: in the new
 * blocks (buffers in 'blocks', one per missing index in order) or,
 * where the block exists, through the cache.  *counted: the end of what
 * was counted through the cache, for reftable_uncount_locked(). */
static int reftable_count_new_locked(Qcow2State *s, uint64_t p, uint64_t end,
                                     uint8_t **blocks, uint64_t *counted)
{
    uint64_t k = 0;

    for (uint64_t i = p >> s->refblock_bits;
         i <= (end - 1) >> s->refblock_bits; i++) {
        uint64_t from = MAX(p, i << s->refblock_bits);
        uint64_t to = MIN(end, (i + 1) << s->refblock_bits);

        if (refblock_missing(s, i)) {
            for (uint64_t c = from; c < to; c++) {
                qcow2_refcount_write(blocks[k],
                                     c & ((1ull << s->refblock_bits) - 1),
                                     s->h.refcount_order, 1);
            }
            k++;
            continue;
        }
        int ret = qcow2_refcount_update_locked(
            s, from << s->cluster_bits, (to - from) << s->cluster_bits, 1,
            QCOW2_DISCARD_OTHER);
        if (ret < 0) {
            return ret;
        }
        *counted = to;
    }
    return 0;
}

/* Take back what reftable_count_new_locked() counted in existing blocks. */
static void reftable_uncount_locked(Qcow2State *s, uint64_t p,
                                    uint64_t counted)
{
    for (uint64_t i = p >> s->refblock_bits;
         counted > p && i <= (counted - 1) >> s->refblock_bits; i++) {
        uint64_t from = MAX(p, i << s->refblock_bits);
        uint64_t to = MIN(counted, (i + 1) << s->refblock_bits);

        if (!refblock_missing(s, i)) {
            qcow2_refcount_update_locked(s, from << s->cluster_bits,
                                         (to - from) << s->cluster_bits, -1,
                                         QCOW2_DISCARD_OTHER);
        }
    }
}

/* Write the new blocks and the new table, then switch the header to it
 * (QEMU's qcow2_refcount_area). */
static int reftable_write_new_locked(Qcow2State *s, uint64_t p,
                                     uint64_t tclusters, uint64_t r,
                                     uint8_t **blocks, const uint64_t *table)
{
    uint64_t cs = s->cluster_size;
    uint64_t be_off = GUINT64_TO_BE(p << s->cluster_bits);
    uint32_t be_clusters = GUINT32_TO_BE((uint32_t)tclusters);
    uint8_t hdr[12];
    int ret = 0;

    bd_debug_event(s->file, BD_DEBUG_EVENT_REFBLOCK_ALLOC_WRITE_BLOCKS);
    for (uint64_t k = 0; ret == 0 && k < r; k++) {
        ret = bd_child_pwrite(s->file, (p + tclusters + k) << s->cluster_bits,
                              cs, blocks[k], 0);
    }
    /* Counts in existing blocks too: all on disk before the switch. */
    if (ret == 0) {
        ret = qcow2_cache_flush(s->rc_cache);
    }
    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_REFBLOCK_ALLOC_WRITE_TABLE);
        ret = bd_child_pwrite(s->file, p << s->cluster_bits, tclusters * cs,
                              table, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        return ret;
    }
    memcpy(hdr, &be_off, sizeof(be_off));          /* no alignment here */
    memcpy(hdr + 8, &be_clusters, sizeof(be_clusters));
    bd_debug_event(s->file, BD_DEBUG_EVENT_REFBLOCK_ALLOC_SWITCH_TABLE);
    ret = bd_child_pwrite(s->file, 48, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    return ret;
}

/* Grow the refcount table so that it has an entry for 'need_idx'.  The
 * new table and the blocks describing it go at the end of the image.
 * The refcount table in memory changes only once the header on disk
 * points to the new one; on failure the counts added to existing blocks
 * are taken back, and the clusters written beyond the end of the image
 * stay unreferenced. */
static int reftable_grow_locked(Qcow2State *s, uint64_t need_idx)
{
    uint64_t per_cluster = s->cluster_size / 8;
    uint64_t entries = MAX(need_idx + 1, s->reftable_size * 3 / 2);
    uint64_t tclusters = (entries + per_cluster - 1) / per_cluster;
    uint64_t p = s->alloc_end, r = 0, nr, k = 0, end, counted;
    g_autofree uint64_t *table = NULL;
    g_autofree uint8_t **blocks = NULL;
    uint64_t old_off = s->h.refcount_table_offset;
    uint64_t old_clusters = s->h.refcount_table_clusters;
    int ret;

    bd_debug_event(s->file, BD_DEBUG_EVENT_REFTABLE_GROW);
    for (;;) {
        if (tclusters * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
            return -EFBIG;
        }
        entries = tclusters * per_cluster;
        /* New blocks for every missing index the new clusters fall in. */
        for (;;) {
            nr = 0;
            for (uint64_t i = p >> s->refblock_bits;
                 i <= (p + tclusters + r - 1) >> s->refblock_bits; i++) {
                nr += refblock_missing(s, i);
            }
            if (nr == r) {
                break;
            }
            r = nr;
        }
        end = p + tclusters + r;
        /* The table must have entries for its own blocks too. */
        if (((end - 1) >> s->refblock_bits) < entries) {
            break;
        }
        tclusters = ((((end - 1) >> s->refblock_bits) + 1) + per_cluster - 1) /
                    per_cluster;
    }
    table = g_try_new0(uint64_t, entries);
    blocks = g_try_new0(uint8_t *, MAX(r, 1));
    if (!table || !blocks) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < s->reftable_size; i++) {
        table[i] = GUINT64_TO_BE(s->reftable[i]);
    }
    for (uint64_t i = p >> s->refblock_bits;
         i <= (end - 1) >> s->refblock_bits; i++) {
        if (refblock_missing(s, i)) {
            table[i] = GUINT64_TO_BE((p + tclusters + k) << s->cluster_bits);
            blocks[k] = g_try_malloc0(s->cluster_size);
            if (!blocks[k++]) {
                ret = -ENOMEM;
                goto out;
            }
        }
    }
    counted = p;
    ret = reftable_count_new_locked(s, p, end, blocks, &counted);
    if (ret == 0) {
        ret = reftable_write_new_locked(s, p, tclusters, r, blocks, table);
    }
    if (ret < 0) {
        reftable_uncount_locked(s, p, counted);
        goto out;
    }
    for (uint64_t i = 0; i < entries; i++) {
        table[i] = GUINT64_FROM_BE(table[i]);
    }
    g_free(s->reftable);
    s->reftable = g_steal_pointer(&table);
    s->reftable_size = entries;
    qcow2_reftable_scan_used(s);
    s->h.refcount_table_offset = p << s->cluster_bits;
    s->h.refcount_table_clusters = tclusters;
    s->alloc_end = end;
    /* The old table is garbage now; should freeing it fail, it leaks. */
    qcow2_free_clusters_locked(s, old_off, old_clusters * s->cluster_size,
                               QCOW2_DISCARD_OTHER);
out:
    for (uint64_t i = 0; i < r; i++) {
        g_free(blocks[i]);
    }
    return ret;
}

/* Add 'delta' to the refcounts of clusters [first, end).  Clusters
 * before *done have been changed, also when it fails; those that reached
 * zero are appended to 'freed' (when not NULL). */
static int refcount_apply_locked(Qcow2State *s, uint64_t first, uint64_t end,
                                 int64_t delta, uint64_t *done,
                                 GArray *freed)
{
    for (uint64_t c = first; c < end; c++) {
        uint64_t idx = c >> s->refblock_bits, off = refblock_offset(s, idx);
        uint64_t i = c & ((1ull << s->refblock_bits) - 1), v;
        void *block;
        int ret;

        if (!off) {
            qcow2_signal_corruption(s, "Cluster 0x%" PRIx64 " has no "
                                    "refcount block", c << s->cluster_bits);
            return -EIO;
        }
        ret = qcow2_cache_get(s->rc_cache, off, FALSE, &block);
        if (ret < 0) {
            return ret;
        }
        v = qcow2_refcount_read(block, i, s->h.refcount_order);
        if ((delta < 0 && v < (uint64_t)-delta) ||
            (delta > 0 && s->refcount_max - v < (uint64_t)delta)) {
            if (delta < 0) {
                qcow2_signal_corruption(s, "Refcount of cluster 0x%" PRIx64
                                        " would drop below zero",
                                        c << s->cluster_bits);
                return -EIO;
            }
            return -ERANGE;
        }
        v += delta;
        qcow2_refcount_write(block, i, s->h.refcount_order, v);
        qcow2_cache_mark_dirty(s->rc_cache, off);
        if (v == 0 && freed) {
            g_array_append_val(freed, c);
        }
        *done = c + 1;
    }
    return 0;
}

/* A cluster's refcount dropped to zero: it may be allocated again. */
static void cluster_freed_locked(Qcow2State *s, uint64_t c, int discard_type)
{
    qcow2_cache_discard(s->l2_cache, c << s->cluster_bits);
    qcow2_cache_discard(s->rc_cache, c << s->cluster_bits);
    s->free_cluster_index = MIN(s->free_cluster_index, c);
    if (s->free_byte_offset >> s->cluster_bits == c) {
        /* Never put compressed data into a freed cluster. */
        s->free_byte_offset = 0;
    }
    if (s->pass_discard[discard_type]) {
        bd_child_pdiscard(s->file, c << s->cluster_bits, s->cluster_size);
    }
}

/* All or nothing, as QEMU's update_refcount: when a cluster of the range
 * fails (its refcount block cannot be read, or a cache entry written
 * back), the clusters already changed are changed back, so that callers
 * can treat an error as "nothing happened".  The effects of freeing
 * (cache entries dropped, discards) wait until the whole range is done.
 * Should the undo fail too, a decrement cannot be trusted any more (a
 * cluster in use could be allocated twice): the image is marked corrupt
 * and refuses writes, as QEMU does on inconsistent metadata. */
int qcow2_refcount_update_locked(Qcow2State *s, uint64_t offset,
                                 uint64_t bytes, int64_t delta,
                                 int discard_type)
{
    uint64_t first = offset >> s->cluster_bits;
    uint64_t end = bytes ? ((offset + bytes - 1) >> s->cluster_bits) + 1
                         : first;
    g_autoptr(GArray) freed = NULL;
    uint64_t done = first, undone = first;
    int ret;

    if (!bytes) {
        return 0;
    }
    if (s->lazy_refcounts && !(s->h.incompatible & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_mark_dirty_locked(s);
        if (ret < 0) {
            return ret;
        }
    }
    freed = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    ret = refcount_apply_locked(s, first, end, delta, &done, freed);
    if (ret < 0) {
        int ret2 = refcount_apply_locked(s, first, done, -delta, &undone,
                                         NULL);
        if (ret2 < 0 && delta < 0) {
            qcow2_signal_corruption(s, "Could not restore the refcounts of "
                                    "clusters 0x%" PRIx64 "..0x%" PRIx64
                                    " after an I/O error: %s",
                                    undone << s->cluster_bits,
                                    (done << s->cluster_bits) - 1,
                                    g_strerror(-ret2));
        }
        return ret;
    }
    for (guint i = 0; i < freed->len; i++) {
        cluster_freed_locked(s, g_array_index(freed, uint64_t, i),
                             discard_type);
    }
    return 0;
}

int qcow2_free_clusters_locked(Qcow2State *s, uint64_t offset, uint64_t bytes,
                               int discard_type)
{
    bd_debug_event(s->file, BD_DEBUG_EVENT_CLUSTER_FREE);
    return qcow2_refcount_update_locked(s, offset, bytes, -1, discard_type);
}

int64_t qcow2_alloc_clusters_locked(Qcow2State *s, uint64_t n)
{
    uint64_t start, run, c, rc, limit = (1ull << 56) >> s->cluster_bits;
    uint64_t first_free;
    int ret;

retry:
    bd_debug_event(s->file, BD_DEBUG_EVENT_CLUSTER_ALLOC);
    start = c = MAX(s->free_cluster_index, 1);
    first_free = UINT64_MAX;   /* first free cluster the scan met */
    run = 0;
    while (run < n) {
        if (c >= limit) {
            return -EFBIG;
        }
        ret = qcow2_refcount_get_locked(s, c, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 0) {
            first_free = MIN(first_free, c);
            if (run++ == 0) {
                start = c;
            }
        } else {
            run = 0;
        }
        c++;
    }
    for (uint64_t idx = start >> s->refblock_bits;
         idx <= (start + n - 1) >> s->refblock_bits; idx++) {
        if (!refblock_missing(s, idx)) {
            continue;
        }
        /* The block goes at the run's first cluster, counted by itself
         * or by the existing block of that cluster's range; the retry
         * then finds the run one cluster further on.  (Placed in its own
         * range, every range would hold a used cluster, and a run as long
         * as a range -- an L2 table's span with 64-bit refcounts -- could
         * never be found: the scan looped forever.) */
        if (idx >= s->reftable_size) {
            ret = reftable_grow_locked(s, idx);
        } else {
            ret = refblock_create_locked(s, idx, start);
        }
        if (ret < 0) {
            return ret;
        }
        goto retry;
    }
    ret = qcow2_refcount_update_locked(s, start << s->cluster_bits,
                                       n << s->cluster_bits, 1,
                                       QCOW2_DISCARD_OTHER);
    if (ret < 0) {
        return ret;
    }
    /* Everything below the scan's first free cluster is in use: the next
     * scan starts there (or past this run when it was that cluster). */
    s->free_cluster_index = first_free == start ? start + n : first_free;
    s->alloc_end = MAX(s->alloc_end, start + n);
    return (int64_t)(start << s->cluster_bits);
}

int64_t qcow2_alloc_bytes_locked(Qcow2State *s, uint64_t bytes)
{
    uint64_t off = s->free_byte_offset;
    uint64_t in_cluster = off & (s->cluster_size - 1);
    int64_t ret;

    bd_debug_event(s->file, BD_DEBUG_EVENT_CLUSTER_ALLOC_BYTES);
    if (off && in_cluster && bytes <= s->cluster_size - in_cluster) {
        ret = qcow2_refcount_update_locked(s, off, 1, 1,
                                           QCOW2_DISCARD_OTHER);
        if (ret == 0) {
            s->free_byte_offset = off + bytes;
            return (int64_t)off;
        }
        if (ret != -ERANGE) {
            return ret;
        }
    }
    ret = qcow2_alloc_clusters_locked(s, 1);
    if (ret >= 0) {
        s->free_byte_offset = (uint64_t)ret + bytes;
    }
    return ret;
}

/* Dirty entries that fail to be written stay dirty and are written at
 * the next flush; so do releases that wait for the L2 tables. */
int qcow2_metadata_flush_locked(Qcow2State *s)
{
    int ret = qcow2_cache_flush(s->rc_cache);

    if (ret == 0) {
        ret = qcow2_cache_flush(s->l2_cache);
    }
    if (ret == 0 && s->deferred_free->len) {
        ret = qcow2_release_deferred_locked(s);
        if (ret == 0) {
            ret = qcow2_cache_flush(s->rc_cache);
        }
    }
    return ret;
}

void qcow2_reftable_scan_used(Qcow2State *s)
{
    s->reftable_used = 0;
    for (uint64_t i = s->reftable_size; i > 0; i--) {
        if (refblock_offset(s, i - 1)) {
            s->reftable_used = i;
            break;
        }
    }
}

static gboolean ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                               uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

int qcow2_overlap_check_locked(Qcow2State *s, uint64_t offset,
                               uint64_t bytes)
{
    int chk = s->overlap_check;
    const char *what = NULL;

    if ((chk & QCOW2_OL_MAIN_HEADER) && offset < s->cluster_size) {
        what = "qcow2_header";
    } else if ((chk & QCOW2_OL_ACTIVE_L1) && s->l1_size &&
               ranges_overlap(offset, bytes, s->h.l1_table_offset,
                              (uint64_t)s->l1_size * 8)) {
        what = "active L1 table";
    } else if ((chk & QCOW2_OL_REFCOUNT_TABLE) &&
               ranges_overlap(offset, bytes, s->h.refcount_table_offset,
                              (uint64_t)s->h.refcount_table_clusters *
                                  s->cluster_size)) {
        what = "refcount table";
    }
    for (uint64_t i = 0; !what && (chk & QCOW2_OL_REFCOUNT_BLOCK) &&
                         i < s->reftable_used; i++) {
        uint64_t b = refblock_offset(s, i);
        if (b && ranges_overlap(offset, bytes, b, s->cluster_size)) {
            what = "refcount block";
        }
    }
    for (uint32_t i = 0; !what && (chk & QCOW2_OL_ACTIVE_L2) &&
                         i < s->l1_size; i++) {
        uint64_t l2 = s->l1[i] & QCOW2_OFFSET_MASK;
        if (l2 && ranges_overlap(offset, bytes, l2, s->cluster_size)) {
            what = "active L2 table";
        }
    }
    if (!what) {
        what = qcow2_snapshots_overlap(s, chk, offset, bytes);
    }
    if (what) {
        qcow2_signal_corruption(s, "Preventing invalid write on metadata "
                                "(overlaps with %s)", what);
        return -EIO;
    }
    return 0;
}

/* --- lazy refcounts: the dirty bit and the repair on open --- */

static int write_incompat(Qcow2State *s, uint64_t bits)
{
    int ret = write_be64_at(s, 72, bits);

    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        s->h.incompatible = bits;
    }
    return ret;
}

int qcow2_mark_dirty_locked(Qcow2State *s)
{
    if (!s->lazy_refcounts || (s->h.incompatible & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    return write_incompat(s, s->h.incompatible | QCOW2_INCOMPAT_DIRTY);
}

int qcow2_mark_clean_locked(Qcow2State *s)
{
    int ret;

    if (!(s->h.incompatible & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    ret = qcow2_metadata_flush_locked(s);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    return ret < 0 ? ret
                   : write_incompat(s, s->h.incompatible &
                                           ~QCOW2_INCOMPAT_DIRTY);
}

/* Count one reference to host [offset, offset+bytes) in 'want'. */
static gboolean count_range(Qcow2State *s, uint32_t *want, uint64_t nb,
                            uint64_t offset, uint64_t bytes, const char *what,
                            GError **errp)
{
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (offset + bytes - 1) >> s->cluster_bits;

    if (!bytes) {
        return TRUE;
    }
    if (last >= nb) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "%s at 0x%" PRIx64 " lies beyond the end of the image",
                    what, offset);
        return FALSE;
    }
    for (uint64_t c = first; c <= last; c++) {
        if (want[c] == UINT32_MAX) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Refcount of cluster 0x%" PRIx64 " overflows",
                        c << s->cluster_bits);
            return FALSE;
        }
        want[c]++;
    }
    return TRUE;
}

static gboolean count_l2(Qcow2State *s, uint32_t *want, uint64_t nb,
                         uint64_t l2_off, uint64_t *l2, GError **errp)
{
    int ret = bd_child_pread(s->file, l2_off, s->cluster_size, l2, 0);

    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not read L2 table: %s", g_strerror(-ret));
        return FALSE;
    }
    for (uint64_t j = 0; j < s->cluster_size / 8; j++) {
        uint64_t e = GUINT64_FROM_BE(l2[j]);
        gboolean ok = TRUE;

        switch (qcow2_entry_type(s, e)) {
        case QCOW2_CT_NORMAL:
        case QCOW2_CT_ZERO_ALLOC:
            ok = count_range(s, want, nb, e & QCOW2_OFFSET_MASK,
                             s->cluster_size, "Data cluster", errp);
            break;
        case QCOW2_CT_COMPRESSED: {
            uint64_t coff = e & s->coffset_mask;
            uint64_t sectors = ((e >> s->csize_shift) & s->csize_mask) + 1;
            ok = count_range(s, want, nb, coff & ~511ull, sectors * 512,
                             "Compressed cluster", errp);
            break;
        }
        default:
            break;
        }
        if (!ok) {
            return FALSE;
        }
    }
    return TRUE;
}

/* The references of one L1 table's L2 tables and their clusters. */
static gboolean count_l1(Qcow2State *s, uint32_t *want, uint64_t nb,
                         const uint64_t *l1, uint32_t l1_size, uint64_t *l2,
                         GError **errp)
{
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_off = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2_off) {
            continue;
        }
        if ((l2_off & (s->cluster_size - 1)) ||
            !count_range(s, want, nb, l2_off, s->cluster_size, "L2 table",
                         errp) ||
            !count_l2(s, want, nb, l2_off, l2, errp)) {
            if (errp && !*errp) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "L2 table offset 0x%" PRIx64 " unaligned",
                            l2_off);
            }
            return FALSE;
        }
    }
    return TRUE;
}

/* The references every cluster should have, from the active tables and
 * the snapshots'. */
static gboolean count_references(Qcow2State *s, uint32_t *want, uint64_t nb,
                                 GError **errp)
{
    g_autofree uint64_t *l2 = g_try_malloc(s->cluster_size);

    if (!l2) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Out of memory");
        return FALSE;
    }
    if (!count_range(s, want, nb, 0, s->cluster_size, "Header", errp) ||
        !count_range(s, want, nb, s->h.l1_table_offset,
                     (uint64_t)s->l1_size * 8, "L1 table", errp) ||
        !count_range(s, want, nb, s->h.refcount_table_offset,
                     (uint64_t)s->h.refcount_table_clusters *
                         s->cluster_size, "Refcount table", errp)) {
        return FALSE;
    }
    for (uint64_t i = 0; i < s->reftable_size; i++) {
        uint64_t b = refblock_offset(s, i);
        if (b && !count_range(s, want, nb, b, s->cluster_size,
                              "Refcount block", errp)) {
            return FALSE;
        }
    }
    if (!count_l1(s, want, nb, s->l1, s->l1_size, l2, errp)) {
        return FALSE;
    }
    /* Internal snapshots: the table, each L1 copy and what it reaches
     * (a table shared by n L1 tables is counted n times, as its
     * clusters' refcounts are). */
    if (s->h.nb_snapshots &&
        !count_range(s, want, nb, s->h.snapshots_offset, s->snapshots_size,
                     "Snapshot table", errp)) {
        return FALSE;
    }
    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];
        g_autofree uint64_t *l1 = NULL;
        int ret;

        if (!sn->l1_size) {
            continue;
        }
        if ((sn->l1_table_offset & (s->cluster_size - 1)) ||
            (uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Snapshot L1 table offset invalid");
            return FALSE;
        }
        if (!count_range(s, want, nb, sn->l1_table_offset,
                         (uint64_t)sn->l1_size * 8, "Snapshot L1 table",
                         errp)) {
            return FALSE;
        }
        l1 = g_new(uint64_t, sn->l1_size);
        ret = bd_child_pread(s->file, sn->l1_table_offset,
                             (uint64_t)sn->l1_size * 8, l1, 0);
        if (ret < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Could not read snapshot L1 table: %s",
                        g_strerror(-ret));
            return FALSE;
        }
        for (uint32_t j = 0; j < sn->l1_size; j++) {
            l1[j] = GUINT64_FROM_BE(l1[j]);
        }
        if (!count_l1(s, want, nb, l1, sn->l1_size, l2, errp)) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean qcow2_repair_refcounts_locked(Qcow2State *s, uint64_t file_size,
                                       uint64_t *fixed, GError **errp)
{
    uint64_t nb = qcow2_size_to_clusters(s, file_size);
    uint64_t covered = s->reftable_size << s->refblock_bits;
    g_autofree uint32_t *want = NULL;
    int ret;

    *fixed = 0;
    want = g_try_new0(uint32_t, MAX(nb, 1));
    if (!want) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Out of memory counting %" PRIu64 " clusters", nb);
        return FALSE;
    }
    if (!count_references(s, want, nb, errp)) {
        return FALSE;
    }
    /* Every cluster the tables describe: set the counted value. */
    for (uint64_t c = 0; c < MAX(nb, MIN(covered, s->alloc_end)); c++) {
        uint64_t w = c < nb ? want[c] : 0, have, off;
        void *block;

        ret = qcow2_refcount_get_locked(s, c, &have);
        if (ret < 0) {
            goto io_error;
        }
        if (have == w) {
            continue;
        }
        off = refblock_offset(s, c >> s->refblock_bits);
        if (!off) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cluster 0x%" PRIx64 " has no refcount block; "
                        "use 'qemu-img check -r all'", c << s->cluster_bits);
            return FALSE;
        }
        if (w > s->refcount_max) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Refcount of cluster 0x%" PRIx64 " overflows",
                        c << s->cluster_bits);
            return FALSE;
        }
        ret = qcow2_cache_get(s->rc_cache, off, FALSE, &block);
        if (ret < 0) {
            goto io_error;
        }
        qcow2_refcount_write(block, c & ((1ull << s->refblock_bits) - 1),
                             s->h.refcount_order, w);
        qcow2_cache_mark_dirty(s->rc_cache, off);
        (*fixed)++;
    }
    s->free_cluster_index = 0;
    s->alloc_end = MAX(s->alloc_end, nb);
    ret = qcow2_cache_flush(s->rc_cache);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0 && s->h.nb_snapshots) {
        /* COPIED must match the repaired refcounts (the L2 tables read
         * by count_l2 went around the cache, which is still empty). */
        ret = qcow2_update_copied_flags_locked(s);
        if (ret == 0) {
            ret = qcow2_metadata_flush_locked(s);
        }
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
    }
    if (ret == 0) {
        ret = write_incompat(s, s->h.incompatible & ~QCOW2_INCOMPAT_DIRTY);
    }
    if (ret == 0) {
        return TRUE;
    }
io_error:
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Could not repair refcounts: %s", g_strerror(-ret));
    return FALSE;
}
