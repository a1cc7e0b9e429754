/* SPDX-License-Identifier: MIT */
/* vmdk hosted sparse extents ("KDMV"): the header (or, for a
 * streamOptimized image written by VMware, the footer it points to),
 * the grain directory and its redundant copy, grain tables, plain and
 * deflate-compressed grains.  VMware 3 sparse extents ("COWD", the
 * vmfsSparse subformat) go the same way from their own header: one
 * grain directory, grain tables of 4096 entries, plain grains.
 *
 *   [header][descriptor][RGD][RGTs][GD][GTs][grains ...]
 *   [COWD header, 2048 bytes][GD][GTs][grains ...]
 *
 * A grain table entry is the grain's sector in the file, 0 for a grain
 * never written (backing file or zeroes) or 1 for a zeroed grain (when
 * the header's zeroed-grain flag is set).  A compressed grain starts
 * with a 12-byte marker {lba, size} and 'size' bytes of zlib data.
 *
 * New grains are appended at the end of the file and then entered in
 * the grain table and its redundant copy, both on disk: a crash before
 * the entries leaves an unused grain at the end, never a wrong mapping.
 *
 * Beyond QEMU 7.2 (which opens such images as empty disks or reads
 * garbage): grain directories and grain tables that do not lie in the
 * file are refused at open; grain table entries past the end of the
 * file or before the first grain (into the header, descriptor or
 * tables, which a write there would overwrite) fail the request with
 * EIO and a warning naming the node.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>
#include "formats/vmdk/vmdk.h"

/* Cached grain tables beyond this are dropped and read again. */
#define VMDK_GT_CACHE_MAX   (64ull << 20)
/* QEMU's bounds. */
#define VMDK_GRANULARITY_MAX 0x200000ull      /* sectors: 1 GiB */
#define VMDK_L1_MAX         (32ull * 1024 * 1024)
#define VMDK_CAPACITY_MAX   ((uint64_t)INT64_MAX / VMDK_SECTOR)

void vmdk_extent_free(VmdkExtent *e)
{
    if (!e) {
        return;
    }
    if (e->gt) {
        for (uint32_t i = 0; i < e->gd_entries; i++) {
            g_free(e->gt[i]);
        }
    }
    g_free(e->gt);
    g_free(e->gd);
    g_free(e->rgd);
    if (e->lock_init) {
        bd_mutex_destroy(&e->lock);
    }
    g_free(e);
}

static const char *extent_name(VmdkExtent *e)
{
    return e->file->node->filename ? e->file->node->filename
                                   : e->file->node->node_name;
}

/* Read a grain directory of e->gd_entries entries at 'off' and check
 * that every grain table it names lies in the file. */
static uint32_t *load_gd(BdNode *node, VmdkExtent *e, uint64_t off,
                         const char *what, uint64_t file_size,
                         GError **errp)
{
    uint64_t bytes = (uint64_t)e->gd_entries * 4;
    uint64_t gt_bytes = (uint64_t)e->gt_entries * 4;
    g_autofree uint32_t *gd = NULL;
    int ret;

    if (off > file_size || bytes > file_size - off) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s': vmdk: %s (%" PRIu32 " entries at offset 0x%"
                    PRIx64 ") extends beyond the end of the file '%s' (%"
                    PRIu64 " bytes); the image is truncated or corrupt",
                    node->node_name, what, e->gd_entries, off,
                    extent_name(e), file_size);
        return NULL;
    }
    gd = g_try_malloc(MAX(bytes, 4));
    if (!gd) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s': vmdk: cannot allocate %" PRIu64 " bytes for "
                    "the %s", node->node_name, bytes, what);
        return NULL;
    }
    ret = bd_child_pread(e->file, off, bytes, gd, 0);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not read the VMDK %s: %s", what, g_strerror(-ret));
        return NULL;
    }
    for (uint32_t i = 0; i < e->gd_entries; i++) {
        uint64_t gt;

        gd[i] = vmdk_le32((const uint8_t *)&gd[i]);
        gt = (uint64_t)gd[i] * VMDK_SECTOR;
        if (gd[i] && (gt > file_size || gt_bytes > file_size - gt)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s': vmdk: %s entry %" PRIu32 " names a grain "
                        "table at offset 0x%" PRIx64 ", beyond the end of the "
                        "file '%s' (%" PRIu64 " bytes); the image is truncated "
                        "or corrupt", node->node_name, what, i, gt,
                        extent_name(e), file_size);
            return NULL;
        }
        if (gd[i] && gt < VMDK_SECTOR) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s': vmdk: %s entry %" PRIu32 " names a grain "
                        "table inside the header", node->node_name, what, i);
            return NULL;
        }
    }
    return g_steal_pointer(&gd);
}

/* A streamOptimized image from VMware keeps its real header in a
 * footer: marker (type 3), header, end-of-stream marker, the last
 * 1536 bytes of the file.  'h' gets the footer's header. */
static gboolean read_footer(BdNode *node, VmdkExtent *e, uint64_t file_size,
                            uint8_t *h, GError **errp)
{
    uint8_t f[1536];
    int ret;

    if (file_size < 1536 + VMDK_SECTOR) {
        VMDK_FAIL("Node '%s': vmdk: invalid footer: the file is too short",
                  node->node_name);
    }
    ret = bd_child_pread(e->file, file_size - 1536, sizeof(f), f, 0);
    if (ret < 0) {
        VMDK_FAIL("Could not read the VMDK footer: %s", g_strerror(-ret));
    }
    if (vmdk_le32(f + 8) != 0 || vmdk_le32(f + 12) != VMDK_MARKER_FOOTER ||
        memcmp(f + 512, VMDK4_MAGIC, 4) != 0 ||
        vmdk_le64(f + 1024) != 0 || vmdk_le32(f + 1032) != 0 ||
        vmdk_le32(f + 1036) != VMDK_MARKER_EOS) {
        VMDK_FAIL("Node '%s': vmdk: invalid footer", node->node_name);
    }
    memcpy(h, f + 512, VMDK_SECTOR);
    if (vmdk_le64(h + VH_GD_OFFSET) == VMDK_GD_AT_END) {
        VMDK_FAIL("Node '%s': vmdk: invalid footer: its grain directory "
                  "is at the end again", node->node_name);
    }
    return TRUE;
}

/* Finish opening a sparse extent whose header fields are set: read
 * the grain directories, set up the grain table cache. */
static gboolean load_tables(BdNode *node, VmdkExtent *e, uint64_t file_size,
                            uint64_t rgd_offset, GError **errp)
{
    e->gd = load_gd(node, e, e->gd_offset, "grain directory", file_size,
                    errp);
    if (!e->gd) {
        return FALSE;
    }
    if (e->flags & VMDK4_FLAG_RGD) {
        e->rgd_offset = rgd_offset;
        e->rgd = load_gd(node, e, e->rgd_offset,
                         "redundant grain directory", file_size, errp);
        if (!e->rgd) {
            return FALSE;
        }
    }
    e->gt = g_new0(uint32_t *, MAX(e->gd_entries, 1));
    e->next_sector = (file_size + VMDK_SECTOR - 1) / VMDK_SECTOR;
    bd_mutex_init(&e->lock);
    e->lock_init = TRUE;
    return TRUE;
}

/* A VMware 3 sparse extent ("COWD", the vmfsSparse subformat's delta
 * files): a 2048-byte header of 32-bit fields, one grain directory of
 * l1dir_size entries (no redundant copy), grain tables of 4096
 * entries, plain grains.  QEMU reads the header's first 44 bytes only;
 * so do we.  There is no embedded descriptor. */
static gboolean cowd_open(BdNode *node, VmdkExtent *e, const uint8_t *h,
                          uint64_t file_size, GError **errp)
{
    const char *name = node->node_name;
    uint64_t granularity = vmdk_le32(h + VH3_GRANULARITY);
    uint64_t capacity = vmdk_le32(h + VH3_DISK_SECTORS);
    uint32_t l1_size = vmdk_le32(h + VH3_L1DIR_SIZE);

    e->cowd = TRUE;
    e->version = vmdk_le32(h + VH3_VERSION);
    /* COWD flags mean other things than KDMV's: none of ours apply. */
    e->flags = 0;
    /* QEMU 7.2 takes granularity 0 and divides by it on the first read. */
    if (granularity == 0 || granularity > VMDK_GRANULARITY_MAX) {
        VMDK_FAIL("Node '%s': vmdk: invalid granularity %" PRIu64
                  " sectors in the COWD header of '%s', image may be "
                  "corrupt", name, granularity, extent_name(e));
    }
    if (l1_size > VMDK_L1_MAX) {
        VMDK_FAIL("L1 size too big");
    }
    e->grain_size = granularity * VMDK_SECTOR;
    e->gt_entries = VMDK3_GT_ENTRIES;
    e->gd_entries = l1_size;
    e->gd_offset = (uint64_t)vmdk_le32(h + VH3_L1DIR_OFFSET) * VMDK_SECTOR;
    /* No grain lies in the header (unless the directory does). */
    e->grain_offset = MIN(e->gd_offset, VMDK3_HEADER_BYTES);
    if (file_size < e->grain_offset) {
        VMDK_FAIL("Node '%s': vmdk: the file '%s' (%" PRIu64 " bytes) ends "
                  "inside its COWD header (%" PRIu64 " bytes); the image is "
                  "truncated or corrupt", name, extent_name(e), file_size,
                  e->grain_offset);
    }
    if (e->length == 0) {
        e->length = capacity * VMDK_SECTOR;
    }
    return load_tables(node, e, file_size, 0, errp);
}

gboolean vmdk_sparse_open(BdNode *node, VmdkExtent *e, gboolean read_only,
                          char **desc_text, GError **errp)
{
    const char *name = node->node_name;
    int64_t flen = bd_node_getlength(e->file->node);
    uint8_t h[VMDK_SECTOR];
    uint64_t file_size, capacity, granularity, l1_sectors, desc_off,
             desc_size;
    uint32_t num_gtes;
    int ret;

    if (flen < 0) {
        VMDK_FAIL("Could not get image size: %s", g_strerror((int)-flen));
    }
    file_size = (uint64_t)flen;
    if (file_size < VMDK_SECTOR) {
        VMDK_FAIL("Node '%s': vmdk: the file '%s' (%" PRIu64 " bytes) is too "
                  "short for a sparse extent header (512 bytes)", name,
                  extent_name(e), file_size);
    }
    ret = bd_child_pread(e->file, 0, VMDK_SECTOR, h, 0);
    if (ret < 0) {
        VMDK_FAIL("Could not read the VMDK header: %s", g_strerror(-ret));
    }
    if (memcmp(h, VMDK3_MAGIC, 4) == 0) {
        return cowd_open(node, e, h, file_size, errp);
    }
    if (memcmp(h, VMDK4_MAGIC, 4) != 0) {
        VMDK_FAIL("Node '%s': vmdk: the extent '%s' is not a VMDK sparse "
                  "extent (no KDMV or COWD magic)", name, extent_name(e));
    }
    /* The embedded descriptor is found through the first header. */
    desc_off = vmdk_le64(h + VH_DESC_OFFSET);
    desc_size = vmdk_le64(h + VH_DESC_SIZE);
    if (vmdk_le64(h + VH_GD_OFFSET) == VMDK_GD_AT_END &&
        !read_footer(node, e, file_size, h, errp)) {
        return FALSE;
    }
    e->version = vmdk_le32(h + VH_VERSION);
    e->flags = vmdk_le32(h + VH_FLAGS);
    capacity = vmdk_le64(h + VH_CAPACITY);
    granularity = vmdk_le64(h + VH_GRANULARITY);
    num_gtes = vmdk_le32(h + VH_NUM_GTES);
    e->compressed = (e->flags & VMDK4_FLAG_COMPRESS) != 0;
    e->markers = (e->flags & VMDK4_FLAG_MARKER) != 0;
    e->zero_grain = (e->flags & VMDK4_FLAG_ZERO_GRAIN) != 0;

    if (e->version > 3) {
        VMDK_FAIL("Unsupported VMDK version %" PRIu32, e->version);
    }
    if (e->version == 3 && !read_only && !e->compressed) {
        VMDK_FAIL("VMDK version 3 must be read only");
    }
    if (num_gtes > 512) {
        VMDK_FAIL("L2 table size too big");
    }
    l1_sectors = (uint64_t)num_gtes * granularity;
    if (l1_sectors == 0 || granularity > VMDK_GRANULARITY_MAX) {
        if (l1_sectors == 0) {
            VMDK_FAIL("L1 entry size is invalid");
        }
        VMDK_FAIL("Node '%s': vmdk: invalid granularity %" PRIu64
                  " sectors, image may be corrupt", name, granularity);
    }
    if (capacity > VMDK_CAPACITY_MAX) {
        VMDK_FAIL("Node '%s': vmdk: capacity of %" PRIu64 " sectors is too "
                  "large", name, capacity);
    }
    if ((capacity + l1_sectors - 1) / l1_sectors > VMDK_L1_MAX) {
        VMDK_FAIL("L1 size too big");
    }
    if (e->compressed &&
        vmdk_le32(h + VH_COMPRESS - 0) % 65536 != VMDK4_COMPRESS_DEFLATE) {
        VMDK_FAIL("Node '%s': vmdk: unsupported compression algorithm %u",
                  name, (unsigned)(h[VH_COMPRESS] | h[VH_COMPRESS + 1] << 8));
    }
    e->grain_size = granularity * VMDK_SECTOR;
    e->gt_entries = num_gtes;
    e->gd_entries = (uint32_t)((capacity + l1_sectors - 1) / l1_sectors);
    e->gd_offset = vmdk_le64(h + VH_GD_OFFSET) * VMDK_SECTOR;
    e->grain_offset = vmdk_le64(h + VH_GRAIN_OFFSET) * VMDK_SECTOR;
    if (vmdk_le64(h + VH_GD_OFFSET) > VMDK_CAPACITY_MAX ||
        vmdk_le64(h + VH_RGD_OFFSET) > VMDK_CAPACITY_MAX ||
        vmdk_le64(h + VH_GRAIN_OFFSET) > VMDK_CAPACITY_MAX) {
        VMDK_FAIL("Node '%s': vmdk: the header's offsets are out of range; "
                  "the image is corrupt", name);
    }
    if (e->grain_offset > file_size) {
        VMDK_FAIL("File truncated, expecting at least %" PRIu64 " bytes",
                  e->grain_offset);
    }
    if (e->length == 0) {
        e->length = capacity * VMDK_SECTOR;
    }
    if (!load_tables(node, e, file_size,
                     vmdk_le64(h + VH_RGD_OFFSET) * VMDK_SECTOR, errp)) {
        return FALSE;
    }

    if (desc_text && desc_off && desc_size) {
        uint64_t off = desc_off * VMDK_SECTOR;
        uint64_t len;

        if (desc_size > VMDK_DESC_MAX / VMDK_SECTOR || off > file_size) {
            VMDK_FAIL("Node '%s': vmdk: embedded descriptor (%" PRIu64
                      " sectors at sector %" PRIu64 ") is out of range",
                      name, desc_size, desc_off);
        }
        len = MIN(desc_size * VMDK_SECTOR, file_size - off);
        e->desc_offset = off;
        e->desc_size = len;
        *desc_text = g_malloc0(len + 1);
        ret = bd_child_pread(e->file, off, len, *desc_text, 0);
        if (ret < 0) {
            VMDK_FAIL("Could not read the VMDK descriptor: %s",
                      g_strerror(-ret));
        }
    }
    return TRUE;
}

/* The grain table e->gt[l1], read and checked if not cached; NULL and
 * *err = 0 when the directory entry is 0.  Lock held. */
static uint32_t *gt_get_locked(BdNode *node, VmdkExtent *e, uint32_t l1,
                               int *err)
{
    uint64_t bytes = (uint64_t)e->gt_entries * 4;
    uint32_t *gt;
    int ret;

    *err = 0;
    if (e->gt[l1]) {
        return e->gt[l1];
    }
    if (!e->gd[l1]) {
        return NULL;
    }
    if (e->gt_cached + bytes > VMDK_GT_CACHE_MAX) {
        for (uint32_t i = 0; i < e->gd_entries; i++) {
            g_free(e->gt[i]);
            e->gt[i] = NULL;
        }
        e->gt_cached = 0;
    }
    gt = g_try_malloc(bytes);
    if (!gt) {
        *err = -ENOMEM;
        return NULL;
    }
    ret = bd_child_pread(e->file, (uint64_t)e->gd[l1] * VMDK_SECTOR, bytes,
                         gt, 0);
    if (ret < 0) {
        g_free(gt);
        *err = ret;
        return NULL;
    }
    for (uint32_t i = 0; i < e->gt_entries; i++) {
        gt[i] = vmdk_le32((const uint8_t *)&gt[i]);
    }
    e->gt[l1] = gt;
    e->gt_cached += bytes;
    return gt;
}

/* Check a grain table entry against the file: the grain must start
 * after the metadata and before the end of the file. */
static int64_t check_gte(BdNode *node, VmdkExtent *e, uint64_t off,
                         uint32_t gte)
{
    if (gte == 0 || (gte == VMDK_GTE_ZEROED && e->zero_grain)) {
        return gte;
    }
    if ((uint64_t)gte >= e->next_sector ||
        (uint64_t)gte * VMDK_SECTOR < MAX(e->grain_offset, VMDK_SECTOR)) {
        g_warning("Node '%s': vmdk: the grain table entry for offset 0x%"
                  PRIx64 " of '%s' names sector %" PRIu32 ", outside the "
                  "file's grains (sectors %" PRIu64 " to %" PRIu64 "); the "
                  "image is corrupt", node->node_name, off, extent_name(e),
                  gte, MAX(e->grain_offset, VMDK_SECTOR) / VMDK_SECTOR,
                  e->next_sector);
        return -EIO;
    }
    return gte;
}

static int64_t lookup_locked(BdNode *node, VmdkExtent *e, uint64_t off,
                             uint32_t **gtp, uint32_t *l2p)
{
    uint64_t gi = off / e->grain_size;
    uint64_t l1 = gi / e->gt_entries;
    uint32_t l2 = (uint32_t)(gi % e->gt_entries);
    uint32_t *gt;
    int err;

    *gtp = NULL;
    if (l1 >= e->gd_entries) {
        if (!e->cowd) {
            return 0;
        }
        /* A COWD header's directory size is its own field, and may not
         * cover the disk: QEMU fails such requests too. */
        g_warning("Node '%s': vmdk: offset 0x%" PRIx64 " of '%s' is beyond "
                  "its grain directory (%" PRIu32 " entries); the image is "
                  "corrupt", node->node_name, off, extent_name(e),
                  e->gd_entries);
        return -EIO;
    }
    gt = gt_get_locked(node, e, (uint32_t)l1, &err);
    if (!gt) {
        return err;
    }
    *gtp = gt;
    *l2p = l2;
    return check_gte(node, e, off, gt[l2]);
}

int64_t vmdk_sparse_lookup(BdNode *node, VmdkExtent *e, uint64_t off)
{
    uint32_t *gt, l2;
    int64_t r;

    bd_mutex_lock(&e->lock);
    r = lookup_locked(node, e, off, &gt, &l2);
    bd_mutex_unlock(&e->lock);
    return r;
}

int vmdk_sparse_read_grain(VmdkExtent *e, uint64_t gte, uint64_t off,
                           uint64_t n, uint8_t *buf)
{
    uint64_t in = off % e->grain_size;
    uint64_t pos = gte * VMDK_SECTOR;
    g_autofree uint8_t *cbuf = NULL, *grain = NULL;
    uint8_t marker[12];
    uint32_t csize;
    uLongf out_len;
    int ret;

    if (!e->compressed) {
        return bd_child_pread(e->file, pos + in, n, buf, 0);
    }
    ret = bd_child_pread(e->file, pos, sizeof(marker), marker, 0);
    if (ret < 0) {
        return ret;
    }
    csize = vmdk_le32(marker + 8);
    if (csize == 0 || csize > 2 * e->grain_size + 1024 ||
        pos + 12 + csize >
        __atomic_load_n(&e->next_sector, __ATOMIC_RELAXED) * VMDK_SECTOR) {
        return -EIO;
    }
    cbuf = g_try_malloc(csize);
    grain = g_try_malloc0(e->grain_size);
    if (!cbuf || !grain) {
        return -ENOMEM;
    }
    ret = bd_child_pread(e->file, pos + 12, csize, cbuf, 0);
    if (ret < 0) {
        return ret;
    }
    out_len = e->grain_size;
    if (uncompress(grain, &out_len, cbuf, csize) != Z_OK) {
        return -EIO;
    }
    memcpy(buf, grain + in, n);
    return 0;
}

/* Write one grain's table entry (and its redundant copy) on disk. */
static int write_gte_locked(VmdkExtent *e, uint64_t off, uint32_t gte)
{
    uint64_t gi = off / e->grain_size;
    uint32_t l1 = (uint32_t)(gi / e->gt_entries);
    uint32_t l2 = (uint32_t)(gi % e->gt_entries);
    uint8_t le[4];
    int ret;

    vmdk_put_le32(le, gte);
    ret = bd_child_pwrite(e->file, (uint64_t)e->gd[l1] * VMDK_SECTOR +
                          (uint64_t)l2 * 4, 4, le, 0);
    if (ret == 0 && e->rgd && e->rgd[l1]) {
        ret = bd_child_pwrite(e->file, (uint64_t)e->rgd[l1] * VMDK_SECTOR +
                              (uint64_t)l2 * 4, 4, le, 0);
    }
    return ret;
}

int vmdk_sparse_write(BdNode *node, VmdkExtent *e, uint64_t off,
                      uint64_t n, const uint8_t *buf,
                      int (*fill)(void *opaque, uint64_t grain_off,
                                  uint8_t *grain),
                      void *fill_opaque)
{
    uint64_t in = off % e->grain_size;
    uint64_t gstart = off - in;
    g_autofree uint8_t *grain = NULL, *cbuf = NULL;
    const uint8_t *out;
    uint64_t out_len, sectors, pos;
    uint32_t *gt, l2;
    int64_t gte;
    int ret;

    bd_mutex_lock(&e->lock);
    gte = lookup_locked(node, e, off, &gt, &l2);
    if (gte < 0) {
        ret = (int)gte;
        goto out;
    }
    if (!gt) {
        /* No grain table for this part of the disk (QEMU neither makes
         * one). */
        ret = -ENOTSUP;
        goto out;
    }
    if (gte > 1 || (gte == 1 && !e->zero_grain)) {
        bd_mutex_unlock(&e->lock);
        if (e->compressed) {
            g_warning("Node '%s': vmdk: could not write to allocated "
                      "cluster for streamOptimized", node->node_name);
            return -EIO;
        }
        return bd_child_pwrite(e->file, (uint64_t)gte * VMDK_SECTOR + in,
                               n, buf, 0);
    }
    grain = g_try_malloc0(e->grain_size);
    if (!grain) {
        ret = -ENOMEM;
        goto out;
    }
    if (n < e->grain_size && gte == 0 && fill) {
        ret = fill(fill_opaque, gstart, grain);
        if (ret < 0) {
            goto out;
        }
    }
    memcpy(grain + in, buf, n);
    out = grain;
    out_len = e->grain_size;
    if (e->compressed) {
        uLongf clen = compressBound(e->grain_size);

        cbuf = g_try_malloc0(12 + clen + VMDK_SECTOR);
        if (!cbuf) {
            ret = -ENOMEM;
            goto out;
        }
        if (compress(cbuf + 12, &clen, grain, e->grain_size) != Z_OK) {
            ret = -EIO;
            goto out;
        }
        vmdk_put_le64(cbuf, gstart / VMDK_SECTOR);
        vmdk_put_le32(cbuf + 8, (uint32_t)clen);
        out = cbuf;
        out_len = 12 + clen;
    }
    sectors = (out_len + VMDK_SECTOR - 1) / VMDK_SECTOR;
    if (e->next_sector + sectors > UINT32_MAX) {
        ret = -ENOSPC;
        goto out;
    }
    pos = e->next_sector * VMDK_SECTOR;
    /* Whole sectors, so that the file ends on a sector boundary. */
    ret = bd_child_pwrite(e->file, pos, sectors * VMDK_SECTOR, out, 0);
    if (ret < 0) {
        goto out;
    }
    /* Read without the lock by vmdk_sparse_read_grain. */
    __atomic_store_n(&e->next_sector, e->next_sector + sectors,
                     __ATOMIC_RELAXED);
    ret = write_gte_locked(e, off, (uint32_t)(pos / VMDK_SECTOR));
    if (ret == 0) {
        gt[l2] = (uint32_t)(pos / VMDK_SECTOR);
    }
out:
    bd_mutex_unlock(&e->lock);
    return ret;
}
