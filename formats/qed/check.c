/* SPDX-License-Identifier: MIT */
/* Opening a qed image: QEMU's header checks, the L1 and L2 tables
 * loaded and checked (nothing may overlap or point outside the file),
 * and the consistency check of an image not closed cleanly. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/qed/qed.h"

/* QEMU's checks, in QEMU's order and words. */
static gboolean check_header(QedState *s, const uint8_t *h,
                             uint64_t file_end, GError **errp)
{
    uint64_t features = get_le64(h + H_FEATURES);
    uint64_t cs = get_le32(h + H_CLUSTER_SIZE);
    uint64_t ts = get_le32(h + H_TABLE_SIZE);
    uint64_t hs = get_le32(h + H_HEADER_SIZE);
    uint64_t l1 = get_le64(h + H_L1_OFFSET);
    uint64_t l1_last;

    if (get_le32(h + H_MAGIC) != QED_MAGIC) {
        FAIL("Image not in QED format");
    }
    if (features & ~(uint64_t)QED_FEATURE_MASK) {
        FAIL("Unsupported QED features: %" PRIx64,
             features & ~(uint64_t)QED_FEATURE_MASK);
    }
    if (!cluster_size_valid(cs)) {
        FAIL("QED cluster size is invalid");
    }
    if (!table_size_valid(ts)) {
        FAIL("QED table size is invalid");
    }
    if (!image_size_valid(get_le64(h + H_IMAGE_SIZE), cs, ts)) {
        FAIL("QED image size is invalid");
    }
    /* QEMU's table offset rule: first and last cluster of the table
     * aligned, after the header and starting inside the file. */
    l1_last = l1 + (ts - 1) * cs;
    if (l1_last <= l1 || (l1 & (cs - 1)) || l1 < hs * cs ||
        l1_last >= file_end) {
        FAIL("QED table offset is invalid");
    }
    if (hs > UINT32_MAX / cs) {
        FAIL("QED header size is too large");
    }
    if (features & QED_F_BACKING_FILE) {
        uint64_t bo = get_le32(h + H_BACKING_OFFSET);
        uint64_t bs = get_le32(h + H_BACKING_SIZE);
        if (bo + bs > hs * cs) {
            FAIL("QED backing filename offset is invalid");
        }
        if (bs > QED_MAX_BACKING_NAME) {
            FAIL("Failed to read backing filename");
        }
    }
    s->cluster_size = (uint32_t)cs;
    s->table_size = (uint32_t)ts;
    s->header_size = (uint32_t)hs;
    s->cluster_bits = (uint32_t)g_bit_nth_lsf(cs, -1);
    s->table_bytes = cs * ts;
    s->table_nelems = s->table_bytes / 8;
    s->l1_shift = s->cluster_bits + g_bit_nth_lsf(s->table_nelems, -1);
    s->l1_offset = l1;
    s->image_size = get_le64(h + H_IMAGE_SIZE);
    s->features = features;
    return TRUE;
}

typedef struct {
    QedState *s;
    uint8_t *used;             /* one bit per cluster of the file */
    uint64_t nclusters;
    gboolean fix;              /* drop bad entries (NEED_CHECK, writable) */
    uint64_t dropped;
    uint64_t used_end;         /* end of the last used cluster */
} QedScan;

/* Mark [off, off+len) used; FALSE if any of it was. */
static gboolean mark_used(QedScan *sc, uint64_t off, uint64_t len)
{
    uint64_t first = off >> sc->s->cluster_bits;
    uint64_t n = len >> sc->s->cluster_bits;

    for (uint64_t c = first; c < first + n; c++) {
        if (sc->used[c / 8] & (1u << (c % 8))) {
            return FALSE;
        }
    }
    for (uint64_t c = first; c < first + n; c++) {
        sc->used[c / 8] |= (uint8_t)(1u << (c % 8));
    }
    sc->used_end = MAX(sc->used_end, off + len);
    return TRUE;
}

/* An offset QEMU's check accepts: aligned, after the header, the
 * cluster (or table) starting inside the file. */
static gboolean offset_ok(QedState *s, uint64_t off, uint64_t len,
                          uint64_t file_end)
{
    uint64_t last = off + len - s->cluster_size;

    return !(off & (s->cluster_size - 1)) &&
           off >= (uint64_t)s->header_size * s->cluster_size &&
           last >= off && last < file_end;
}

static gboolean load_tables(QedState *s, QedScan *sc, uint64_t file_end,
                            GError **errp)
{
    const char *name = s->node->node_name;
    g_autofree uint8_t *raw = g_try_malloc(s->table_bytes);
    int ret;

    s->l1 = g_try_malloc(s->table_bytes);
    s->l2 = g_try_new0(uint64_t *, s->table_nelems);
    if (!raw || !s->l1 || !s->l2) {
        FAIL("Node '%s': qed: cannot allocate memory for the L1 table",
             name);
    }
    ret = bd_child_pread(s->file, s->l1_offset, s->table_bytes, raw, 0);
    if (ret < 0) {
        FAIL("Failed to read L1 table");
    }
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        s->l1[i] = get_le64(raw + i * 8);
    }
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        uint64_t off = s->l1[i];
        gboolean dirty = FALSE;
        uint64_t *t;

        if (!off) {
            continue;
        }
        if (!offset_ok(s, off, s->table_bytes, file_end)) {
            if (!sc->fix) {
                FAIL("Node '%s': qed: L1 entry %" PRIu64 " names an L2 "
                     "table at 0x%" PRIx64 ", misaligned, inside the header "
                     "or beyond the end of the file (%" PRIu64 " bytes)",
                     name, i, off, file_end);
            }
            s->l1[i] = 0;
            sc->dropped++;
            put_le64(raw, 0);
            ret = bd_child_pwrite(s->file, s->l1_offset + i * 8, 8, raw, 0);
            if (ret < 0) {
                FAIL("Failed to update the L1 table: %s", g_strerror(-ret));
            }
            continue;
        }
        if (!mark_used(sc, off, s->table_bytes)) {
            FAIL("Node '%s': qed: the L2 table of L1 entry %" PRIu64 " at "
                 "0x%" PRIx64 " overlaps the header, the L1 table or another "
                 "table; the image is corrupt", name, i, off);
        }
        t = g_try_malloc(s->table_bytes);
        if (!t) {
            FAIL("Node '%s': qed: cannot allocate memory for an L2 table",
                 name);
        }
        s->l2[i] = t;
        ret = bd_child_pread(s->file, off, s->table_bytes, raw, 0);
        if (ret < 0) {
            FAIL("Failed to read L2 table: %s", g_strerror(-ret));
        }
        for (uint64_t j = 0; j < s->table_nelems; j++) {
            t[j] = get_le64(raw + j * 8);
        }
        for (uint64_t j = 0; j < s->table_nelems; j++) {
            uint64_t d = t[j];
            if (d <= QED_ZERO_CLUSTER) {
                continue;
            }
            if (!offset_ok(s, d, s->cluster_size, file_end)) {
                if (!sc->fix) {
                    FAIL("Node '%s': qed: L2 entry %" PRIu64 " of table %"
                         PRIu64 " names a cluster at 0x%" PRIx64 ", "
                         "misaligned, inside the header or beyond the end "
                         "of the file (%" PRIu64 " bytes)", name, j, i, d,
                         file_end);
                }
                t[j] = 0;
                dirty = TRUE;
                sc->dropped++;
                continue;
            }
            if (!mark_used(sc, d, s->cluster_size)) {
                FAIL("Node '%s': qed: L2 entry %" PRIu64 " of table %"
                     PRIu64 " names cluster 0x%" PRIx64 ", which is used "
                     "elsewhere too; the image is corrupt", name, j, i, d);
            }
        }
        if (dirty) {
            for (uint64_t j = 0; j < s->table_nelems; j++) {
                put_le64(raw + j * 8, t[j]);
            }
            ret = bd_child_pwrite(s->file, off, s->table_bytes, raw, 0);
            if (ret < 0) {
                FAIL("Failed to update an L2 table: %s", g_strerror(-ret));
            }
        }
    }
    return TRUE;
}

gboolean qed_load(BdNode *node, QedState *s, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    gboolean writable = !node->read_only;
    QedScan sc = { .s = s };
    g_autofree uint8_t *used = NULL;
    uint64_t file_end, autoclear;
    int ret;

    if (file_size < 0) {
        FAIL("Failed to get file length");
    }
    memset(s->header, 0, sizeof(s->header));
    ret = bd_child_pread(s->file, 0, MIN((uint64_t)file_size,
                                         QED_HEADER_SIZE), s->header, 0);
    if (ret < 0) {
        FAIL("Failed to read QED header");
    }
    /* Clusters are whole: a partial last one is not the image's. */
    file_end = (uint64_t)file_size & ~(uint64_t)(QED_MIN_CLUSTER_SIZE - 1);
    if (get_le32(s->header + H_MAGIC) == QED_MAGIC &&
        cluster_size_valid(get_le32(s->header + H_CLUSTER_SIZE))) {
        file_end = (uint64_t)file_size &
                   ~(uint64_t)(get_le32(s->header + H_CLUSTER_SIZE) - 1);
    }
    if (!check_header(s, s->header, file_end, errp)) {
        return FALSE;
    }
    s->file_end = file_end;
    if (s->features & QED_F_BACKING_FILE) {
        uint32_t bo = get_le32(s->header + H_BACKING_OFFSET);
        uint32_t bs = get_le32(s->header + H_BACKING_SIZE);
        s->backing_file = g_malloc0(bs + 1);
        ret = bd_child_pread(s->file, bo, bs, s->backing_file, 0);
        if (ret < 0) {
            FAIL("Failed to read backing filename");
        }
        if (s->features & QED_F_BACKING_FORMAT_NO_PROBE) {
            s->backing_fmt = "raw";
        }
    }
    /* Unknown autoclear bits go, as QEMU (none are known). */
    autoclear = get_le64(s->header + H_AUTOCLEAR);
    if ((autoclear & ~(uint64_t)QED_AUTOCLEAR_FEATURE_MASK) && writable) {
        put_le64(s->header + H_AUTOCLEAR,
                 autoclear & QED_AUTOCLEAR_FEATURE_MASK);
        ret = qed_write_header_locked(s);
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        if (ret < 0) {
            FAIL("Failed to update header");
        }
    }
    sc.nclusters = file_end >> s->cluster_bits;
    used = g_try_malloc0(sc.nclusters / 8 + 1);
    if (!used) {
        FAIL("Node '%s': qed: cannot allocate memory for the check",
             node->node_name);
    }
    sc.used = used;
    sc.fix = writable && (s->features & QED_F_NEED_CHECK);
    /* The header's clusters, at least the one it starts. */
    mark_used(&sc, 0, MIN(MAX((uint64_t)s->header_size, 1) << s->cluster_bits,
                          file_end));
    if (!mark_used(&sc, s->l1_offset, s->table_bytes)) {
        FAIL("QED table offset is invalid");
    }
    if (!load_tables(s, &sc, file_end, errp)) {
        return FALSE;
    }
    if (sc.fix) {
        if (sc.dropped) {
            g_message("qed: node '%s': the check after an unclean close "
                      "dropped %" PRIu64 " table entries beyond the end of "
                      "the file", node->node_name, sc.dropped);
        }
        /* An allocation cut short leaves its clusters at the end of the
         * file, unreferenced (allocations are serialised and append):
         * cut them off, so that the image checks clean. */
        if (sc.used_end < (uint64_t)file_size &&
            bd_node_truncate(s->file->node, sc.used_end) == 0) {
            s->file_end = sc.used_end;
        }
        bd_mutex_lock(&s->alloc_lock);
        ret = qed_clear_need_check_locked(s);
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        bd_mutex_unlock(&s->alloc_lock);
        if (ret < 0) {
            FAIL("Image corrupted");
        }
    }
    return TRUE;
}

