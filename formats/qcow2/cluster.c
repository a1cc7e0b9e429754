/* SPDX-License-Identifier: MIT */
/* qcow2 guest-to-host mapping: L1/L2 lookup, L2 updates, L1 growth.
 *
 * Thread model: every function needs Qcow2State.lock.  Order on disk: a
 * new L2 table is written (zeroed or copied) and the refcounts that
 * describe it are synced before the L1 entry points to it; L2 slices
 * are written back after the refcount cache (cache dependency).
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/qcow2/qcow2.h"

Qcow2ClusterType qcow2_entry_type(Qcow2State *s, uint64_t l2e)
{
    if (l2e & QCOW2_OFLAG_COMPRESSED) {
        return QCOW2_CT_COMPRESSED;
    }
    if ((l2e & QCOW2_OFLAG_ZERO) && s->h.version >= 3) {
        return (l2e & QCOW2_OFFSET_MASK) ? QCOW2_CT_ZERO_ALLOC
                                         : QCOW2_CT_ZERO_PLAIN;
    }
    return (l2e & QCOW2_OFFSET_MASK) ? QCOW2_CT_NORMAL
                                     : QCOW2_CT_UNALLOCATED;
}

static int write_l1_entry(Qcow2State *s, uint32_t idx, uint64_t value)
{
    uint64_t be = GUINT64_TO_BE(value);

    bd_debug_event(s->file, BD_DEBUG_EVENT_L1_UPDATE);
    return bd_child_pwrite(s->file, s->h.l1_table_offset + idx * 8ull, 8,
                           &be, 0);
}

/* Copy the L2 table at 'old' into 'buf' through the cache, whose slices
 * are the newest version. */
static int l2_copy_table(Qcow2State *s, uint64_t old, uint8_t *buf)
{
    uint32_t esize = qcow2_cache_entry_size(s->l2_cache);

    for (uint64_t k = 0; k < s->cluster_size; k += esize) {
        void *t;
        int ret = qcow2_cache_get(s->l2_cache, old + k, FALSE, &t);
        if (ret < 0) {
            return ret;
        }
        memcpy(buf + k, t, esize);
    }
    return 0;
}

/* Cache the slices of a table just written from 'buf' (clean: they equal
 * the disk), so that its first use does not read it back.  Best effort:
 * a slice that finds no room is read from disk when needed. */
static void l2_cache_fill(Qcow2State *s, uint64_t off, const uint8_t *buf)
{
    uint32_t esize = qcow2_cache_entry_size(s->l2_cache);

    for (uint64_t k = 0; k < s->cluster_size; k += esize) {
        void *t;
        if (qcow2_cache_get(s->l2_cache, off + k, TRUE, &t) < 0) {
            return;
        }
        memcpy(t, buf + k, esize);
    }
}

/* A new L2 table for L1 index 'idx' (a copy of the old one, if shared).
 * The L1 entry in memory changes only once the one on disk has: when a
 * step fails, the L1 table is still the old one and the new cluster is
 * given back (QEMU's l2_allocate), so a retry allocates again instead of
 * writing through a table that the image on disk does not reference. */
static int l2_allocate(Qcow2State *s, uint32_t idx)
{
    uint64_t old = s->l1[idx] & QCOW2_OFFSET_MASK, entry = 0;
    g_autofree uint8_t *buf = g_try_malloc0(s->cluster_size);
    int64_t off;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    off = qcow2_alloc_clusters_locked(s, 1);
    if (off < 0) {
        return (int)off;
    }
    /* The new table's refcount reaches the disk before the L1 entry. */
    ret = qcow2_cache_flush(s->rc_cache);
    if (ret == 0 && old) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_L2_ALLOC_COW_READ);
        ret = l2_copy_table(s, old, buf);
    }
    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_L2_ALLOC_WRITE);
        ret = bd_child_pwrite(s->file, off, s->cluster_size, buf, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        entry = (uint64_t)off | QCOW2_OFLAG_COPIED;
        ret = write_l1_entry(s, idx, entry);
    }
    if (ret < 0) {
        qcow2_free_clusters_locked(s, off, s->cluster_size,
                                   QCOW2_DISCARD_OTHER);
        return ret;
    }
    s->l1[idx] = entry;
    l2_cache_fill(s, off, buf);
    if (old) {
        /* The old table stays in the snapshots that share it; should
         * this fail, its cluster leaks (harmless, as in QEMU). */
        qcow2_free_clusters_locked(s, old, s->cluster_size,
                                   QCOW2_DISCARD_OTHER);
    }
    return 0;
}

/* What l2_slice_get() may do to the L2 table. */
typedef enum {
    L2_LOOKUP,      /* read only */
    L2_MODIFY,      /* will change entries: copy a shared table first */
    L2_ALLOC,       /* also create a missing table */
} L2Access;

/* The cached L2 slice holding the entry of guest 'offset'; *slice NULL
 * when no L2 table exists and the access is not L2_ALLOC.  With
 * 'miss_gen', a slice not in the cache is not read: -EAGAIN, its offset
 * in *slice_off. */
static int l2_slice_get(Qcow2State *s, uint64_t offset, L2Access access,
                        uint64_t **slice, uint64_t *slice_off,
                        uint32_t *index, uint64_t *miss_gen)
{
    uint64_t l1_idx = offset >> (s->l2_bits + s->cluster_bits);
    uint64_t l2_index = (offset >> s->cluster_bits) &
                        ((1ull << s->l2_bits) - 1);
    uint64_t l2_off;
    int ret;

    *slice = NULL;
    if (l1_idx >= s->l1_size) {
        return access == L2_ALLOC ? -EIO : 0;
    }
    l2_off = s->l1[l1_idx] & QCOW2_OFFSET_MASK;
    if (l2_off & (s->cluster_size - 1)) {
        qcow2_signal_corruption(s, "L2 table offset 0x%" PRIx64
                                " unaligned (L1 index: 0x%" PRIx64 ")",
                                l2_off, l1_idx);
        return -EIO;
    }
    if (l2_off && l2_off + s->cluster_size >
        (uint64_t)MAX(bd_node_getlength(s->file->node), 0)) {
        qcow2_signal_corruption(s, "L2 table offset 0x%" PRIx64
                                " beyond end of file (L1 index: 0x%" PRIx64
                                ")", l2_off, l1_idx);
        return -EIO;
    }
    if ((access == L2_ALLOC && !l2_off) ||
        (access != L2_LOOKUP && l2_off &&
         !(s->l1[l1_idx] & QCOW2_OFLAG_COPIED))) {
        ret = l2_allocate(s, l1_idx);
        if (ret < 0) {
            return ret;
        }
        l2_off = s->l1[l1_idx] & QCOW2_OFFSET_MASK;
    }
    if (!l2_off) {
        return 0;
    }
    *slice_off = l2_off + (l2_index / s->l2_slice_size) *
                 s->l2_slice_size * 8;
    *index = l2_index % s->l2_slice_size;
    if (miss_gen) {
        ret = qcow2_cache_peek(s->l2_cache, *slice_off, (void **)slice,
                               miss_gen);
        return ret == -ENOENT ? -EAGAIN : ret;
    }
    return qcow2_cache_get(s->l2_cache, *slice_off, FALSE, (void **)slice);
}

static int get_mapping(Qcow2State *s, uint64_t offset, uint64_t bytes,
                       uint64_t *pnum, uint64_t *host, uint64_t *l2e,
                       uint64_t *miss_off, uint64_t *miss_gen)
{
    uint64_t intra = offset & (s->cluster_size - 1);
    uint64_t *slice, slice_off, e, avail;
    uint32_t idx, n = 1;
    Qcow2ClusterType type;
    int ret;

    ret = l2_slice_get(s, offset, L2_LOOKUP, &slice, &slice_off, &idx,
                       miss_gen);
    if (ret == -EAGAIN) {
        *miss_off = slice_off;
    }
    if (ret < 0) {
        return ret;
    }
    if (!slice) {
        /* No L2 table: unallocated up to the end of its coverage. */
        uint64_t cover = (uint64_t)s->cluster_size << s->l2_bits;
        *pnum = MIN(bytes, cover - (offset & (cover - 1)));
        *host = 0;
        *l2e = 0;
        return 0;
    }
    e = GUINT64_FROM_BE(slice[idx]);
    type = qcow2_entry_type(s, e);
    if (type == QCOW2_CT_NORMAL || type == QCOW2_CT_ZERO_ALLOC) {
        if ((e & QCOW2_OFFSET_MASK) & (s->cluster_size - 1)) {
            qcow2_signal_corruption(s, "Cluster allocation offset 0x%"
                                    PRIx64 " unaligned (L2 offset: 0x%"
                                    PRIx64 ", L2 index: 0x%" PRIx32 ")",
                                    (uint64_t)(e & QCOW2_OFFSET_MASK),
                                    slice_off, idx);
            return -EIO;
        }
    }
    avail = s->cluster_size - intra;
    if (type != QCOW2_CT_COMPRESSED) {
        for (; idx + n < s->l2_slice_size && avail < bytes; n++) {
            uint64_t e2 = GUINT64_FROM_BE(slice[idx + n]);
            if (qcow2_entry_type(s, e2) != type ||
                (type == QCOW2_CT_NORMAL &&
                 ((e2 & QCOW2_OFFSET_MASK) !=
                      (e & QCOW2_OFFSET_MASK) +
                          (uint64_t)n * s->cluster_size ||
                  (e2 ^ e) & QCOW2_OFLAG_COPIED))) {
                break;
            }
            avail += s->cluster_size;
        }
    }
    *pnum = MIN(bytes, avail);
    *l2e = e;
    *host = type == QCOW2_CT_NORMAL ? (e & QCOW2_OFFSET_MASK) + intra : 0;
    return 0;
}

int qcow2_get_mapping_locked(Qcow2State *s, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *host, uint64_t *l2e)
{
    return get_mapping(s, offset, bytes, pnum, host, l2e, NULL, NULL);
}

int qcow2_get_mapping_cached_locked(Qcow2State *s, uint64_t offset,
                                    uint64_t bytes, uint64_t *pnum,
                                    uint64_t *host, uint64_t *l2e,
                                    uint64_t *miss_off, uint64_t *miss_gen)
{
    return get_mapping(s, offset, bytes, pnum, host, l2e, miss_off,
                       miss_gen);
}

int qcow2_set_l2_entries_locked(Qcow2State *s, uint64_t offset, uint64_t n,
                                const uint64_t *entries, uint64_t *old)
{
    uint64_t *slice, slice_off;
    uint32_t idx;
    int ret = l2_slice_get(s, offset, L2_ALLOC, &slice, &slice_off, &idx,
                           NULL);

    if (ret < 0) {
        return ret;
    }
    /* One slice: nothing else can fail once it is in the cache. */
    g_assert(idx + n <= s->l2_slice_size);
    for (uint64_t i = 0; i < n; i++) {
        if (old) {
            old[i] = GUINT64_FROM_BE(slice[idx + i]);
        }
        slice[idx + i] = GUINT64_TO_BE(entries[i]);
    }
    qcow2_cache_mark_dirty(s->l2_cache, slice_off);
    return 0;
}

/* Grow the L1 table (QEMU's qcow2_grow_l1_table): a new table is
 * written, then the header switched to it.  The table in memory changes
 * only after the switch; on failure the new clusters are given back. */
int qcow2_grow_l1_locked(Qcow2State *s, uint64_t size)
{
    uint64_t cover = (uint64_t)s->cluster_size << s->l2_bits;
    uint64_t need = (size + cover - 1) / cover, bytes;
    g_autofree uint64_t *table = NULL;
    uint64_t old_off = s->h.l1_table_offset, old_size = s->l1_size;
    uint32_t be_size;
    uint64_t be_off;
    uint8_t hdr[12];
    int64_t off;
    int ret;

    if (need <= s->l1_size) {
        return 0;
    }
    if (need * 8 > QCOW2_MAX_L1_BYTES) {
        return -EFBIG;
    }
    bytes = (need * 8 + s->cluster_size - 1) & ~((uint64_t)s->cluster_size - 1);
    table = g_try_malloc0(bytes);
    if (!table) {
        return -ENOMEM;
    }
    bd_debug_event(s->file, BD_DEBUG_EVENT_L1_GROW_ALLOC_TABLE);
    off = qcow2_alloc_clusters_locked(s, bytes >> s->cluster_bits);
    if (off < 0) {
        return (int)off;
    }
    for (uint64_t i = 0; i < s->l1_size; i++) {
        table[i] = GUINT64_TO_BE(s->l1[i]);
    }
    ret = qcow2_cache_flush(s->rc_cache);
    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_L1_GROW_WRITE_TABLE);
        ret = bd_child_pwrite(s->file, off, bytes, table, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        /* l1_size and l1_table_offset are adjacent but not 8-aligned. */
        be_size = GUINT32_TO_BE((uint32_t)need);
        be_off = GUINT64_TO_BE((uint64_t)off);
        memcpy(hdr, &be_size, sizeof(be_size));
        memcpy(hdr + 4, &be_off, sizeof(be_off));
        bd_debug_event(s->file, BD_DEBUG_EVENT_L1_GROW_ACTIVATE_TABLE);
        ret = bd_child_pwrite(s->file, 36, sizeof(hdr), hdr, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        qcow2_free_clusters_locked(s, off, bytes, QCOW2_DISCARD_OTHER);
        return ret;
    }
    for (uint64_t i = 0; i < need; i++) {
        table[i] = GUINT64_FROM_BE(table[i]);
    }
    g_free(s->l1);
    s->l1 = g_steal_pointer(&table);
    s->l1_size = need;
    s->h.l1_size = need;
    s->h.l1_table_offset = off;
    if (old_size) {
        /* Should this fail, the old table leaks (harmless). */
        qcow2_free_clusters_locked(s, old_off, old_size * 8,
                                   QCOW2_DISCARD_OTHER);
    }
    return 0;
}

/* After a shrink: the file ends after its last cluster in use, as
 * QEMU cuts it (qcow2_get_last_cluster).  Best effort: the image is
 * correct either way. */
static void shrink_file_locked(Qcow2State *s)
{
    int64_t len = bd_node_getlength(s->file->node);
    uint64_t cs = s->cluster_size, end;
    int ret;

    if (len <= 0 || qcow2_metadata_flush_locked(s) < 0) {
        return;
    }
    end = (uint64_t)len / cs;
    while (end > 0) {
        uint64_t refcount = 0;

        if (qcow2_refcount_get_locked(s, end - 1, &refcount) < 0) {
            return;
        }
        if (refcount) {
            break;
        }
        end--;
    }
    if (end * cs < (uint64_t)len) {
        ret = bd_node_truncate(s->file->node, end * cs);
        if (ret < 0) {
            g_warning("node '%s': could not cut the image file after "
                      "shrinking: %s", s->node->node_name, g_strerror(-ret));
        }
    }
}

int qcow2_shrink_locked(Qcow2State *s, uint64_t old_size, uint64_t size)
{
    uint64_t cs = s->cluster_size;
    uint64_t cover = cs << s->l2_bits;
    uint64_t start = (size + cs - 1) & ~(cs - 1);
    uint64_t first = (size + cover - 1) / cover;   /* first L1 index cut */
    uint32_t slice = qcow2_cache_entry_size(s->l2_cache);
    g_autofree uint64_t *zeroes = NULL;
    int ret = 0;

    if (start < old_size) {
        ret = qcow2_zero_clusters_locked(s, start,
                                         (old_size - start + cs - 1) >>
                                         s->cluster_bits, QCOW2_DISCARD);
    }
    if (ret == 0) {
        /* The L2 tables go next: their changes must be on disk, and
         * the clusters they no longer reference released. */
        ret = qcow2_metadata_flush_locked(s);
    }
    if (ret < 0 || first >= s->l1_size) {
        return ret;
    }
    /* Clear the L1 entries on disk before their tables are freed: a
     * crash in between leaks clusters, never points into a free one. */
    zeroes = g_try_malloc0((s->l1_size - first) * 8);
    if (!zeroes) {
        return -ENOMEM;
    }
    ret = bd_child_pwrite(s->file, s->h.l1_table_offset + first * 8,
                          (s->l1_size - first) * 8, zeroes, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = first; i < s->l1_size; i++) {
        uint64_t l2 = s->l1[i] & QCOW2_OFFSET_MASK;

        s->l1[i] = 0;
        if (!l2) {
            continue;
        }
        for (uint64_t off = l2; off < l2 + cs; off += slice) {
            qcow2_cache_discard(s->l2_cache, off);
        }
        /* A table a snapshot shares only loses our reference. */
        qcow2_free_clusters_locked(s, l2, cs, QCOW2_DISCARD_OTHER);
    }
    shrink_file_locked(s);
    return 0;
}

int qcow2_free_entry_locked(Qcow2State *s, uint64_t l2e, int discard_type)
{
    switch (qcow2_entry_type(s, l2e)) {
    case QCOW2_CT_NORMAL:
    case QCOW2_CT_ZERO_ALLOC:
        return qcow2_free_clusters_locked(s, l2e & QCOW2_OFFSET_MASK,
                                          s->cluster_size, discard_type);
    case QCOW2_CT_COMPRESSED: {
        uint64_t coff = l2e & s->coffset_mask;
        uint64_t nb = ((l2e >> s->csize_shift) & s->csize_mask) + 1;
        uint64_t first = coff & ~511ull;
        return qcow2_free_clusters_locked(s, first, nb * 512, discard_type);
    }
    default:
        return 0;
    }
}

/* Old entries are released only after the L2 tables without them are on
 * disk, so that no table on disk references a free cluster.  Until then
 * their clusters keep their references and cannot be allocated again. */
void qcow2_free_entry_later_locked(Qcow2State *s, uint64_t l2e,
                                   int discard_type)
{
    Qcow2Deferred d = { l2e, discard_type };

    switch (qcow2_entry_type(s, l2e)) {
    case QCOW2_CT_NORMAL:
    case QCOW2_CT_ZERO_ALLOC:
    case QCOW2_CT_COMPRESSED:
        g_array_append_val(s->deferred_free, d);
        break;
    default:
        break;
    }
}

void qcow2_release_deferred_some_locked(Qcow2State *s)
{
    if (s->deferred_free->len >= QCOW2_DEFERRED_MAX) {
        qcow2_release_deferred_locked(s);   /* or at the next flush */
    }
}

int qcow2_release_deferred_locked(Qcow2State *s)
{
    int ret;

    if (s->corrupt) {
        /* The refcounts cannot be trusted: leave them for a repair. */
        g_array_set_size(s->deferred_free, 0);
        return 0;
    }
    if (!s->deferred_free->len) {
        return 0;
    }
    ret = qcow2_cache_flush(s->l2_cache);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    while (ret == 0 && s->deferred_free->len) {
        guint last = s->deferred_free->len - 1;
        Qcow2Deferred d = g_array_index(s->deferred_free, Qcow2Deferred,
                                        last);

        /* All or nothing: on an I/O error it stays queued. */
        ret = qcow2_free_entry_locked(s, d.l2e, d.discard_type);
        if (ret == 0 || s->corrupt) {
            g_array_remove_index(s->deferred_free, last);
        }
    }
    return ret;
}

/* Zero or discard clusters one by one.  When one fails, those before it
 * stay changed (in the cache, dirty); their old clusters are released
 * as usual. */
int qcow2_zero_clusters_locked(Qcow2State *s, uint64_t offset, uint64_t n,
                               Qcow2ZeroMode mode)
{
    gboolean has_backing = bd_node_backing(s->node) != NULL;
    int type = mode == QCOW2_DISCARD ? QCOW2_DISCARD_REQUEST
                                     : QCOW2_DISCARD_OTHER;
    int ret = 0;

    for (uint64_t i = 0; i < n; i++) {
        uint64_t *slice, slice_off, e, ne;
        uint32_t idx;
        Qcow2ClusterType t;

        ret = l2_slice_get(s, offset + (i << s->cluster_bits),
                           mode == QCOW2_DISCARD ? L2_MODIFY : L2_ALLOC,
                           &slice, &slice_off, &idx, NULL);
        if (ret < 0) {
            break;
        }
        if (!slice) {
            continue;
        }
        e = GUINT64_FROM_BE(slice[idx]);
        t = qcow2_entry_type(s, e);
        if (mode == QCOW2_DISCARD) {
            ne = (s->h.version >= 3 && has_backing) ? QCOW2_OFLAG_ZERO : 0;
        } else if (mode == QCOW2_ZERO_KEEP &&
                   (t == QCOW2_CT_NORMAL || t == QCOW2_CT_ZERO_ALLOC) &&
                   (e & QCOW2_OFLAG_COPIED)) {
            ne = (e & QCOW2_OFFSET_MASK) | QCOW2_OFLAG_COPIED |
                 QCOW2_OFLAG_ZERO;
        } else {
            ne = QCOW2_OFLAG_ZERO;
        }
        if (ne == e) {
            continue;
        }
        if ((e & QCOW2_OFFSET_MASK) != (ne & QCOW2_OFFSET_MASK) ||
            t == QCOW2_CT_COMPRESSED) {
            qcow2_free_entry_later_locked(s, e, type);
        }
        slice[idx] = GUINT64_TO_BE(ne);
        qcow2_cache_mark_dirty(s->l2_cache, slice_off);
    }
    qcow2_release_deferred_some_locked(s);
    return ret;
}
