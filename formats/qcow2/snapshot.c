/* SPDX-License-Identifier: MIT */
/* qcow2 internal snapshots: the snapshot table, snapshot create and
 * delete, and the refcount and QCOW2_OFLAG_COPIED bookkeeping they need
 * (docs/interop/qcow2.txt, "Snapshots").
 *
 * Thread model: open/close and the query run on the main thread; create
 * and delete run on the main thread with the node drained and take
 * Qcow2State.lock for the whole operation.
 *
 * A snapshot is a copy of the active L1 table.  Taking one adds a
 * reference to every L2 table and data cluster the active L1 table
 * reaches and clears their COPIED flags, so that the next write to any
 * of them copies it first (rw.c, cluster.c).  Deleting one takes those
 * references away again and sets COPIED where a cluster is the active
 * image's alone once more.  The order on disk follows QEMU: the new
 * references are on disk before the table that needs them; a crash in
 * between leaks clusters, never loses data.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "graph/io.h"
#include "graph/entry.h"
#include "graph/main-thread.h"
#include "formats/qcow2/qcow2.h"

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* The fixed part of a table entry, then the extra data QEMU writes. */
#define SN_HEADER_SIZE   40
#define SN_EXTRA_SIZE    24          /* vm_state_size_large, disk_size,
                                        icount */
#define SN_MAX_TABLE     (1024ull * QCOW2_MAX_SNAPSHOTS)

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}
static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}
static void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void wr32(uint8_t *p, uint32_t v)
{
    wr16(p, v >> 16);
    wr16(p + 2, v & 0xffff);
}
static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, v >> 32);
    wr32(p + 4, v & 0xffffffffu);
}

static void snapshot_clear(Qcow2Snapshot *sn)
{
    g_free(sn->id_str);
    g_free(sn->name);
    g_free(sn->unknown_extra);
    memset(sn, 0, sizeof(*sn));
}

void qcow2_snapshots_free(Qcow2State *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->h.nb_snapshots; i++) {
        snapshot_clear(&s->snapshots[i]);
    }
    g_clear_pointer(&s->snapshots, g_free);
}

/* --- reading the table --- */

/* Read 'len' bytes of the table at 'off', which must lie in the file. */
static gboolean table_read(Qcow2State *s, uint64_t off, uint64_t len,
                           void *buf, uint64_t file_size, uint32_t i,
                           GError **errp)
{
    int ret;

    if (!len) {
        return TRUE;
    }
    if (off > file_size || len > file_size - off) {
        FAIL("Snapshot table entry %" PRIu32 " lies beyond the end of the "
             "image", i);
    }
    ret = bd_child_pread(s->file, off, len, buf, 0);
    if (ret < 0) {
        FAIL("Failed to read snapshot table: %s", g_strerror(-ret));
    }
    return TRUE;
}

static gboolean read_entry(Qcow2State *s, uint64_t *off, uint32_t i,
                           uint64_t file_size, Qcow2Snapshot *sn,
                           GError **errp)
{
    uint8_t h[SN_HEADER_SIZE];
    g_autofree uint8_t *extra = NULL;
    uint32_t extra_size;
    uint16_t id_size, name_size;

    *off = (*off + 7) & ~7ull;
    if (!table_read(s, *off, sizeof(h), h, file_size, i, errp)) {
        return FALSE;
    }
    *off += sizeof(h);
    sn->l1_table_offset = rd64(h);
    sn->l1_size = rd32(h + 8);
    id_size = rd16(h + 12);
    name_size = rd16(h + 14);
    sn->date_sec = rd32(h + 16);
    sn->date_nsec = rd32(h + 20);
    sn->vm_clock_nsec = rd64(h + 24);
    sn->vm_state_size = rd32(h + 32);
    extra_size = rd32(h + 36);
    if (extra_size > QCOW2_MAX_SNAPSHOT_EXTRA) {
        FAIL("Too much extra metadata in snapshot table entry %" PRIu32, i);
    }
    extra = g_malloc0(MAX(extra_size, SN_EXTRA_SIZE));
    if (!table_read(s, *off, extra_size, extra, file_size, i, errp)) {
        return FALSE;
    }
    *off += extra_size;
    if (extra_size >= 8) {
        sn->vm_state_size = rd64(extra);
    }
    sn->disk_size = extra_size >= 16 ? rd64(extra + 8) : s->h.size;
    sn->icount = extra_size >= 24 ? rd64(extra + 16) : UINT64_MAX;
    if (extra_size > SN_EXTRA_SIZE) {
        sn->unknown_extra_size = extra_size - SN_EXTRA_SIZE;
        sn->unknown_extra = g_memdup2(extra + SN_EXTRA_SIZE,
                                      sn->unknown_extra_size);
    }
    sn->id_str = g_malloc0((gsize)id_size + 1);
    sn->name = g_malloc0((gsize)name_size + 1);
    if (!table_read(s, *off, id_size, sn->id_str, file_size, i, errp) ||
        !table_read(s, *off + id_size, name_size, sn->name, file_size, i,
                    errp)) {
        return FALSE;
    }
    *off += (uint64_t)id_size + name_size;
    if (*off - s->h.snapshots_offset > SN_MAX_TABLE) {
        FAIL("Snapshot table is too big");
    }
    return TRUE;
}

gboolean qcow2_snapshots_load(Qcow2State *s, uint64_t file_size,
                              GError **errp)
{
    uint32_t nb = s->h.nb_snapshots;
    uint64_t off = s->h.snapshots_offset;

    s->snapshots = NULL;
    s->snapshots_size = 0;
    if (!nb) {
        return TRUE;
    }
    /* QEMU's qcow2_validate_table for the table as a whole. */
    if (nb > QCOW2_MAX_SNAPSHOTS) {
        FAIL("Snapshot table too large");
    }
    if ((uint64_t)INT64_MAX - (uint64_t)nb * SN_HEADER_SIZE < off ||
        (off & (s->cluster_size - 1))) {
        FAIL("Snapshot table offset invalid");
    }
    if (off < s->cluster_size) {
        FAIL("Snapshot table offset 0x%" PRIx64 " overlaps the qcow2 header",
             off);
    }
    s->snapshots = g_new0(Qcow2Snapshot, nb);
    for (uint32_t i = 0; i < nb; i++) {
        if (!read_entry(s, &off, i, file_size, &s->snapshots[i], errp)) {
            qcow2_snapshots_free(s);
            return FALSE;
        }
    }
    s->snapshots_size = off - s->h.snapshots_offset;
    return TRUE;
}

/* QEMU's qcow2_validate_table for a snapshot's L1 table, plus the end
 * of the file. */
static gboolean check_snapshot_l1(Qcow2State *s, const Qcow2Snapshot *sn,
                                  GError **errp)
{
    uint64_t bytes = (uint64_t)sn->l1_size * 8;
    int64_t flen = bd_node_getlength(s->file->node);

    if (bytes > QCOW2_MAX_L1_BYTES) {
        FAIL("Snapshot L1 table too large");
    }
    if ((uint64_t)INT64_MAX - bytes < sn->l1_table_offset ||
        (sn->l1_table_offset & (s->cluster_size - 1)) ||
        (sn->l1_size && !sn->l1_table_offset) ||
        sn->l1_table_offset + bytes > (uint64_t)MAX(flen, 0)) {
        FAIL("Snapshot L1 table offset invalid");
    }
    return TRUE;
}

/* --- overlap checks --- */

static gboolean overlaps(uint64_t a, uint64_t alen, uint64_t b,
                         uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

const char *qcow2_snapshots_overlap(Qcow2State *s, int chk, uint64_t offset,
                                    uint64_t bytes)
{
    if ((chk & QCOW2_OL_SNAPSHOT_TABLE) && s->h.nb_snapshots &&
        overlaps(offset, bytes, s->h.snapshots_offset, s->snapshots_size)) {
        return "snapshot table";
    }
    for (uint32_t i = 0; (chk & QCOW2_OL_INACTIVE_L1) && s->snapshots &&
                         i < s->h.nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];
        if (overlaps(offset, bytes, sn->l1_table_offset,
                     (uint64_t)sn->l1_size * 8)) {
            return "inactive L1 table";
        }
    }
    return NULL;
}

/* --- writing the table --- */

static uint64_t entry_size(const Qcow2Snapshot *sn)
{
    return SN_HEADER_SIZE + SN_EXTRA_SIZE + sn->unknown_extra_size +
           strlen(sn->id_str) + strlen(sn->name);
}

static void encode_entry(const Qcow2Snapshot *sn, uint8_t *p)
{
    uint32_t extra = SN_EXTRA_SIZE + sn->unknown_extra_size;
    size_t id_size = strlen(sn->id_str), name_size = strlen(sn->name);

    wr64(p, sn->l1_table_offset);
    wr32(p + 8, sn->l1_size);
    wr16(p + 12, (uint16_t)id_size);
    wr16(p + 14, (uint16_t)name_size);
    wr32(p + 16, sn->date_sec);
    wr32(p + 20, sn->date_nsec);
    wr64(p + 24, sn->vm_clock_nsec);
    /* A VM state over 4 GiB: older readers see a disk-only snapshot. */
    wr32(p + 32, sn->vm_state_size <= UINT32_MAX
                 ? (uint32_t)sn->vm_state_size : 0);
    wr32(p + 36, extra);
    p += SN_HEADER_SIZE;
    wr64(p, sn->vm_state_size);
    wr64(p + 8, sn->disk_size);
    wr64(p + 16, sn->icount);
    if (sn->unknown_extra_size) {
        memcpy(p + SN_EXTRA_SIZE, sn->unknown_extra, sn->unknown_extra_size);
    }
    p += extra;
    memcpy(p, sn->id_str, id_size);
    memcpy(p + id_size, sn->name, name_size);
}

/* Write 'list' ('nb' entries) as a new table, switch the header to it,
 * then free the old one (QEMU's qcow2_write_snapshots).  On failure the
 * header still names the old table. */
static int write_table_locked(Qcow2State *s, const Qcow2Snapshot *list,
                              uint32_t nb)
{
    uint64_t size = 0, off = 0, old_off = s->h.snapshots_offset;
    uint64_t old_size = s->snapshots_size;
    g_autofree uint8_t *buf = NULL;
    uint8_t hdr[12];
    int64_t table = 0;
    int ret;

    for (uint32_t i = 0; i < nb; i++) {
        size = ((size + 7) & ~7ull) + entry_size(&list[i]);
    }
    if (size > SN_MAX_TABLE) {
        return -EFBIG;
    }
    if (size) {
        buf = g_try_malloc0(size);
        if (!buf) {
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < nb; i++) {
            off = (off + 7) & ~7ull;
            encode_entry(&list[i], buf + off);
            off += entry_size(&list[i]);
        }
        table = qcow2_alloc_clusters_locked(s, qcow2_size_to_clusters(s,
                                                                      size));
        if (table < 0) {
            return (int)table;
        }
        /* The table's refcounts reach the disk before the header. */
        ret = qcow2_metadata_flush_locked(s);
        if (ret == 0) {
            ret = qcow2_overlap_check_locked(s, table, size);
        }
        if (ret == 0) {
            ret = bd_child_pwrite(s->file, table, size, buf, 0);
        }
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        if (ret < 0) {
            goto fail;
        }
    }
    wr32(hdr, nb);
    wr64(hdr + 4, (uint64_t)table);
    ret = bd_child_pwrite(s->file, 60, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        goto fail;
    }
    s->h.nb_snapshots = nb;
    s->h.snapshots_offset = (uint64_t)table;
    s->snapshots_size = size;
    if (old_size) {
        /* Should this fail, the old table leaks (harmless). */
        qcow2_free_clusters_locked(s, old_off, old_size,
                                   QCOW2_DISCARD_SNAPSHOT);
    }
    return 0;

fail:
    if (table > 0) {
        qcow2_free_clusters_locked(s, table, size, QCOW2_DISCARD_OTHER);
    }
    return ret;
}

/* --- references of an L1 table --- */

typedef enum {
    WALK_COPIED,    /* active table: recompute the COPIED flags */
    WALK_REF,       /* active table: +1 everywhere, COPIED cleared */
    WALK_UNREF,     /* a snapshot's table (not the active one): -1 */
} WalkMode;

/* The references of one L2 entry; *ne: the entry with its new COPIED
 * flag (modes on the active table). */
static int walk_entry(Qcow2State *s, uint64_t e, WalkMode mode,
                      uint64_t *ne)
{
    int64_t delta = mode == WALK_REF ? 1 : mode == WALK_UNREF ? -1 : 0;
    uint64_t rc;
    int ret = 0;

    *ne = e;
    switch (qcow2_entry_type(s, e)) {
    case QCOW2_CT_NORMAL:
    case QCOW2_CT_ZERO_ALLOC: {
        uint64_t off = e & QCOW2_OFFSET_MASK;
        if (off & (s->cluster_size - 1)) {
            qcow2_signal_corruption(s, "Cluster allocation offset 0x%"
                                    PRIx64 " unaligned", off);
            return -EIO;
        }
        if (delta) {
            ret = qcow2_refcount_update_locked(s, off, s->cluster_size,
                                               delta,
                                               QCOW2_DISCARD_SNAPSHOT);
        }
        if (ret == 0 && mode != WALK_UNREF) {
            ret = qcow2_refcount_get_locked(s, off >> s->cluster_bits, &rc);
            *ne = rc == 1 ? e | QCOW2_OFLAG_COPIED
                          : e & ~QCOW2_OFLAG_COPIED;
        }
        return ret;
    }
    case QCOW2_CT_COMPRESSED:
        /* Never COPIED: compressed clusters are never written in place. */
        if (delta) {
            uint64_t coff = e & s->coffset_mask;
            uint64_t nb = ((e >> s->csize_shift) & s->csize_mask) + 1;
            ret = qcow2_refcount_update_locked(s, coff & ~511ull, nb * 512,
                                               delta,
                                               QCOW2_DISCARD_SNAPSHOT);
        }
        return ret;
    default:
        return 0;
    }
}

static int walk_l2(Qcow2State *s, uint64_t l2_off, WalkMode mode)
{
    uint32_t esize = qcow2_cache_entry_size(s->l2_cache);

    for (uint64_t k = 0; k < s->cluster_size; k += esize) {
        for (uint32_t j = 0; j < esize / 8; j++) {
            uint64_t *slice, e, ne;
            /* Taken again for every entry: a refcount update may use
             * the cache in between (the L2 and refcount caches are
             * separate, but keep to the documented contract). */
            int ret = qcow2_cache_get(s->l2_cache, l2_off + k, FALSE,
                                      (void **)&slice);
            if (ret < 0) {
                return ret;
            }
            e = GUINT64_FROM_BE(slice[j]);
            ret = walk_entry(s, e, mode, &ne);
            if (ret < 0) {
                return ret;
            }
            if (ne != e) {
                ret = qcow2_cache_get(s->l2_cache, l2_off + k, FALSE,
                                      (void **)&slice);
                if (ret < 0) {
                    return ret;
                }
                slice[j] = GUINT64_TO_BE(ne);
                qcow2_cache_mark_dirty(s->l2_cache, l2_off + k);
            }
        }
    }
    return 0;
}

/* QEMU's qcow2_update_snapshot_refcount.  'l1' is s->l1 for the active
 * table (whose new COPIED flags are then written to disk) or a
 * snapshot's table in host byte order. */
static int walk_l1(Qcow2State *s, uint64_t *l1, uint32_t l1_size,
                   WalkMode mode)
{
    int64_t delta = mode == WALK_REF ? 1 : mode == WALK_UNREF ? -1 : 0;
    gboolean active = l1 == s->l1, changed = FALSE;
    int ret;

    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_off = l1[i] & QCOW2_OFFSET_MASK, rc, ne;

        if (!l2_off) {
            continue;
        }
        if (l2_off & (s->cluster_size - 1)) {
            qcow2_signal_corruption(s, "L2 table offset 0x%" PRIx64
                                    " unaligned (L1 index: 0x%" PRIx32 ")",
                                    l2_off, i);
            return -EIO;
        }
        ret = walk_l2(s, l2_off, mode);
        if (ret == 0 && delta) {
            ret = qcow2_refcount_update_locked(s, l2_off, s->cluster_size,
                                               delta,
                                               QCOW2_DISCARD_SNAPSHOT);
        }
        if (ret == 0 && active) {
            ret = qcow2_refcount_get_locked(s, l2_off >> s->cluster_bits,
                                            &rc);
        }
        if (ret < 0) {
            return ret;
        }
        if (active) {
            ne = rc == 1 ? l1[i] | QCOW2_OFLAG_COPIED
                         : l1[i] & ~QCOW2_OFLAG_COPIED;
            changed |= ne != l1[i];
            l1[i] = ne;
        }
    }
    if (active && changed) {
        g_autofree uint64_t *be = g_new(uint64_t, l1_size);
        for (uint32_t i = 0; i < l1_size; i++) {
            be[i] = GUINT64_TO_BE(l1[i]);
        }
        ret = bd_child_pwrite(s->file, s->h.l1_table_offset,
                              (uint64_t)l1_size * 8, be, 0);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int qcow2_update_copied_flags_locked(Qcow2State *s)
{
    return walk_l1(s, s->l1, s->l1_size, WALK_COPIED);
}

/* Everything in memory on disk: caches, deferred releases, then sync. */
static int sync_locked(Qcow2State *s)
{
    int ret = qcow2_metadata_flush_locked(s);

    return ret < 0 ? ret : bd_child_flush(s->file);
}

/* --- create --- */

static void next_id(Qcow2State *s, char *buf, size_t len)
{
    unsigned long max = 0;

    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        unsigned long id = strtoul(s->snapshots[i].id_str, NULL, 10);
        max = MAX(max, id);
    }
    g_snprintf(buf, len, "%lu", max + 1);
}

/* A copy of the active L1 table (without COPIED flags, which only the
 * active tables use) in new clusters; returns its offset or -errno. */
static int64_t copy_active_l1(Qcow2State *s)
{
    uint64_t bytes = (uint64_t)s->l1_size * 8;
    g_autofree uint64_t *be = NULL;
    int64_t off;
    int ret;

    if (!bytes) {
        return 0;
    }
    be = g_try_new(uint64_t, s->l1_size);
    if (!be) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        be[i] = GUINT64_TO_BE(s->l1[i] & ~QCOW2_OFLAG_COPIED);
    }
    off = qcow2_alloc_clusters_locked(s, qcow2_size_to_clusters(s, bytes));
    if (off < 0) {
        return off;
    }
    ret = qcow2_overlap_check_locked(s, off, bytes);
    if (ret == 0) {
        ret = bd_child_pwrite(s->file, off, bytes, be, 0);
    }
    if (ret < 0) {
        qcow2_free_clusters_locked(s, off, bytes, QCOW2_DISCARD_OTHER);
        return ret;
    }
    return off;
}

static int snapshot_create_locked(Qcow2State *s, BdSnapshotInfo *info)
{
    Qcow2Snapshot sn = { 0 };
    g_autofree Qcow2Snapshot *list = NULL;
    char id[32];
    int64_t l1_off;
    int ret;

    if (s->corrupt) {
        return -EIO;
    }
    if (!s->writable) {
        return -EACCES;
    }
    if (s->h.nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        return -EFBIG;
    }
    ret = sync_locked(s);
    if (ret < 0) {
        return ret;
    }
    next_id(s, id, sizeof(id));
    l1_off = copy_active_l1(s);
    if (l1_off < 0) {
        return (int)l1_off;
    }
    /* The references of the new table, on disk before the table is. */
    ret = walk_l1(s, s->l1, s->l1_size, WALK_REF);
    if (ret == 0) {
        ret = sync_locked(s);
    }
    if (ret < 0) {
        /* References already added leak (harmless, as in QEMU). */
        qcow2_free_clusters_locked(s, l1_off, (uint64_t)s->l1_size * 8,
                                   QCOW2_DISCARD_OTHER);
        return ret;
    }
    sn.l1_table_offset = (uint64_t)l1_off;
    sn.l1_size = s->l1_size;
    sn.id_str = g_strdup(id);
    sn.name = g_strdup(info->name);
    sn.date_sec = info->date_sec;
    sn.date_nsec = info->date_nsec;
    sn.vm_clock_nsec = info->vm_clock_nsec;
    sn.vm_state_size = info->vm_state_size;
    sn.disk_size = s->h.size;
    sn.icount = info->icount;

    list = g_new(Qcow2Snapshot, s->h.nb_snapshots + 1);
    if (s->h.nb_snapshots) {
        memcpy(list, s->snapshots, s->h.nb_snapshots * sizeof(*list));
    }
    list[s->h.nb_snapshots] = sn;
    ret = write_table_locked(s, list, s->h.nb_snapshots + 1);
    if (ret < 0) {
        qcow2_free_clusters_locked(s, l1_off, (uint64_t)s->l1_size * 8,
                                   QCOW2_DISCARD_OTHER);
        snapshot_clear(&sn);
        return ret;
    }
    g_free(s->snapshots);
    s->snapshots = g_steal_pointer(&list);
    g_free(info->id);
    info->id = g_strdup(id);
    return sync_locked(s);
}

gboolean qcow2_snapshot_create(BdNode *node, BdSnapshotInfo *info,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    int ret;

    g_mutex_lock(&s->lock);
    ret = snapshot_create_locked(s, info);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s",
                    g_strerror(-ret));
        return FALSE;
    }
    return TRUE;
}

/* --- delete --- */

static int find_snapshot(Qcow2State *s, const char *id, const char *name)
{
    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];
        if ((!id || strcmp(sn->id_str, id) == 0) &&
            (!name || strcmp(sn->name, name) == 0)) {
            return (int)i;
        }
    }
    return -1;
}

static void info_from(const Qcow2Snapshot *sn, BdSnapshotInfo *info)
{
    info->id = g_strdup(sn->id_str);
    info->name = g_strdup(sn->name);
    info->vm_state_size = sn->vm_state_size;
    info->date_sec = sn->date_sec;
    info->date_nsec = sn->date_nsec;
    info->vm_clock_nsec = sn->vm_clock_nsec;
    info->icount = sn->icount;
}

static gboolean snapshot_delete_locked(Qcow2State *s, int idx,
                                       GError **errp)
{
    Qcow2Snapshot sn = s->snapshots[idx];
    uint32_t nb = s->h.nb_snapshots;
    g_autofree Qcow2Snapshot *list = g_new(Qcow2Snapshot, MAX(nb, 1));
    g_autofree uint64_t *l1 = NULL;
    int ret;

    if (!check_snapshot_l1(s, &sn, errp)) {
        return FALSE;
    }
    ret = s->corrupt ? -EIO : !s->writable ? -EPERM : sync_locked(s);
    if (ret == 0 && sn.l1_size) {
        l1 = g_try_new(uint64_t, sn.l1_size);
        ret = !l1 ? -ENOMEM
                  : bd_child_pread(s->file, sn.l1_table_offset,
                                   (uint64_t)sn.l1_size * 8, l1, 0);
    }
    if (ret == 0) {
        memcpy(list, s->snapshots, idx * sizeof(*list));
        memcpy(list + idx, s->snapshots + idx + 1,
               (nb - idx - 1) * sizeof(*list));
        ret = write_table_locked(s, list, nb - 1);
    }
    if (ret < 0) {
        FAIL("Failed to remove snapshot from snapshot list: %s",
             g_strerror(-ret));
    }
    g_free(s->snapshots);
    s->snapshots = nb > 1 ? g_steal_pointer(&list) : NULL;

    for (uint32_t i = 0; i < sn.l1_size; i++) {
        l1[i] = GUINT64_FROM_BE(l1[i]);
    }
    ret = walk_l1(s, l1, sn.l1_size, WALK_UNREF);
    if (ret == 0 && sn.l1_size) {
        ret = qcow2_free_clusters_locked(s, sn.l1_table_offset,
                                         (uint64_t)sn.l1_size * 8,
                                         QCOW2_DISCARD_SNAPSHOT);
    }
    snapshot_clear(&sn);
    if (ret < 0) {
        FAIL("Failed to free the cluster and L1 table: %s",
             g_strerror(-ret));
    }
    ret = qcow2_update_copied_flags_locked(s);
    if (ret == 0) {
        ret = sync_locked(s);
    }
    if (ret < 0) {
        FAIL("Failed to update snapshot status in disk: %s",
             g_strerror(-ret));
    }
    return TRUE;
}

gboolean qcow2_snapshot_delete(BdNode *node, const char *id,
                               const char *name, BdSnapshotInfo *deleted,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    gboolean ok;
    int idx;

    g_mutex_lock(&s->lock);
    idx = find_snapshot(s, id, name);
    if (idx < 0) {
        g_mutex_unlock(&s->lock);
        FAIL("Can't find the snapshot");
    }
    if (deleted) {
        info_from(&s->snapshots[idx], deleted);
    }
    ok = snapshot_delete_locked(s, idx, errp);
    g_mutex_unlock(&s->lock);
    return ok;
}

/* --- queries --- */

GPtrArray *qcow2_snapshot_list(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    GPtrArray *a = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_snapshot_info_free);

    g_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        BdSnapshotInfo *info = g_new0(BdSnapshotInfo, 1);
        info_from(&s->snapshots[i], info);
        g_ptr_array_add(a, info);
    }
    g_mutex_unlock(&s->lock);
    return a;
}

void qcow2_snapshots_query(Qcow2State *s, GVariantDict *image)
{
    GVariantBuilder b;

    if (!s->h.nb_snapshots) {
        return;
    }
    g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert_value(&d, "id",
            g_variant_new_take_string(bd_query_string(sn->id_str)));
        g_variant_dict_insert_value(&d, "name",
            g_variant_new_take_string(bd_query_string(sn->name)));
        g_variant_dict_insert(&d, "vm-state-size", "x",
                              (gint64)sn->vm_state_size);
        g_variant_dict_insert(&d, "date-sec", "x", (gint64)sn->date_sec);
        g_variant_dict_insert(&d, "date-nsec", "x", (gint64)sn->date_nsec);
        g_variant_dict_insert(&d, "vm-clock-sec", "x",
                              (gint64)(sn->vm_clock_nsec / 1000000000u));
        g_variant_dict_insert(&d, "vm-clock-nsec", "x",
                              (gint64)(sn->vm_clock_nsec % 1000000000u));
        if (sn->icount != UINT64_MAX) {
            g_variant_dict_insert(&d, "icount", "x", (gint64)sn->icount);
        }
        g_variant_builder_add_value(&b, g_variant_dict_end(&d));
    }
    g_variant_dict_insert_value(image, "snapshots", g_variant_builder_end(&b));
}
