/* SPDX-License-Identifier: MIT */
/* The 'vpc' format driver: VHD (Virtual PC / Hyper-V) images, fixed and
 * dynamic, read-write, with blockdev-create.
 *
 * On disk (big endian): a 512-byte footer at the end of the file.  A
 * fixed disk is its data followed by the footer.  A dynamic disk starts
 * with a copy of the footer, then the dynamic disk header (1024 bytes)
 * naming the block allocation table (BAT: one uint32 per block, the
 * sector where the block starts, 0xffffffff for none).  Each allocated
 * block is a sector bitmap (bit set: the sector holds data; MSB first)
 * followed by block_size bytes of data.  New blocks go where the footer
 * is, and the footer moves behind them.
 *
 *   [footer copy][dyn header][BAT][bitmap|block][bitmap|block]...[footer]
 *
 * The guest size is the CHS geometry's (cylinders * heads * sectors)
 * unless the creator application is one that uses current_size (Hyper-V,
 * disk2vhd, XenServer, QEMU with force-size) or the geometry is the
 * largest there is: QEMU's rules.
 *
 * Thread model: open/close/query on the main thread, create on the
 * create job's thread, data callbacks on any thread.  Requests to
 * allocated blocks take no lock: they load the BAT entry atomically
 * (acquire).  VpcState.alloc_lock serialises allocation (bitmap, data,
 * footer, sync, BAT entry, then the entry published with a release
 * store) and the sector-bitmap updates of blocks not yet fully marked,
 * so no two requests ever rewrite the same bitmap or the footer at once.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"
#include "formats/create-util.h"

#define VHD_FOOTER_SIZE     512
#define VHD_DYN_HEADER_SIZE 1024
#define VHD_SECTOR          512
#define VHD_FIXED           2
#define VHD_DYNAMIC         3
#define VHD_DIFFERENCING    4
#define VHD_TIMESTAMP_BASE  946684800
#define VHD_CHS_MAX_C       65535u
#define VHD_CHS_MAX_H       16u
#define VHD_CHS_MAX_S       255u
#define VHD_MAX_SECTORS     0xff000000ull   /* 2040 GiB */
#define VHD_MAX_GEOMETRY    ((uint64_t)VHD_CHS_MAX_C * VHD_CHS_MAX_H * \
                             VHD_CHS_MAX_S)
#define VHD_BAT_NONE        0xffffffffu
#define VHD_DEFAULT_BLOCK   (2u << 20)
/* QEMU's limit on the BAT (entries). */
#define VHD_MAX_TABLE_ENTRIES (0x7fffffffu / 4)

/* Footer fields. */
enum {
    F_COOKIE = 0, F_FEATURES = 8, F_VERSION = 12, F_DATA_OFFSET = 16,
    F_TIMESTAMP = 24, F_CREATOR_APP = 28, F_MAJOR = 32, F_MINOR = 34,
    F_CREATOR_OS = 36, F_ORIG_SIZE = 40, F_CURRENT_SIZE = 48, F_CYLS = 56,
    F_HEADS = 58, F_SECS = 59, F_TYPE = 60, F_CHECKSUM = 64, F_UUID = 68,
};
/* Dynamic disk header fields. */
enum {
    D_COOKIE = 0, D_DATA_OFFSET = 8, D_TABLE_OFFSET = 16, D_VERSION = 24,
    D_MAX_ENTRIES = 28, D_BLOCK_SIZE = 32, D_CHECKSUM = 36,
};

typedef struct {
    BdNode *node;
    BdChild *file;
    uint32_t type;             /* VHD_FIXED or VHD_DYNAMIC */
    uint8_t footer[VHD_FOOTER_SIZE];
    /* Dynamic disks. */
    uint32_t block_size;
    uint32_t bitmap_size;      /* bytes before each block's data */
    uint32_t max_entries;
    uint64_t bat_offset;
    uint32_t *bat;             /* host order; atomic loads */
    uint8_t *full;             /* bit per block: bitmap all ones (atomic) */

    BdMutex alloc_lock;        /* protects free_offset, bitmaps on disk */
    uint64_t free_offset;      /* where the next block (and footer) goes */
} VpcState;

typedef struct {
    GVariant *file;
} VpcOptions;

static const BdSchemaField vpc_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(VpcOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(VpcOptions, vpc_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void put_be(uint8_t *p, int n, uint64_t v)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* One's complement of the byte sum, the checksum field counting as 0. */
static uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t field)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < len; i++) {
        if (i < field || i >= field + 4) {
            sum += buf[i];
        }
    }
    return ~sum;
}

static inline uint32_t bat_get(VpcState *s, uint64_t i)
{
    return i < s->max_entries ? __atomic_load_n(&s->bat[i], __ATOMIC_ACQUIRE)
                              : VHD_BAT_NONE;
}

static inline gboolean block_full(VpcState *s, uint64_t i)
{
    return __atomic_load_n(&s->full[i / 8], __ATOMIC_ACQUIRE) &
           (1u << (i % 8));
}

static inline void set_block_full(VpcState *s, uint64_t i)
{
    __atomic_fetch_or(&s->full[i / 8], (uint8_t)(1u << (i % 8)),
                      __ATOMIC_RELEASE);
}

static inline gboolean bit_is_set(const uint8_t *bm, uint64_t sector)
{
    return bm[sector / 8] & (0x80u >> (sector % 8));
}

/* Whether the bitmap marks every sector of a block. */
static gboolean bitmap_all_set(VpcState *s, const uint8_t *bm)
{
    uint64_t sectors = s->block_size / VHD_SECTOR;

    for (uint64_t i = 0; i < sectors / 8; i++) {
        if (bm[i] != 0xff) {
            return FALSE;
        }
    }
    for (uint64_t i = sectors / 8 * 8; i < sectors; i++) {
        if (!bit_is_set(bm, i)) {
            return FALSE;
        }
    }
    return TRUE;
}

/* --- data path --- */

/* Read [in, in+n) of allocated block 'bi' (whose bitmap is at 'boff')
 * into 'p': sectors the bitmap leaves unmarked read as zeroes. */
static int read_block(VpcState *s, uint64_t bi, uint64_t boff, uint64_t in,
                      uint64_t n, uint8_t *p)
{
    g_autofree uint8_t *bm = NULL;
    int ret = bd_child_pread(s->file, boff + s->bitmap_size + in, n, p, 0);

    if (ret < 0 || block_full(s, bi)) {
        return ret;
    }
    bm = g_try_malloc(s->bitmap_size);
    if (!bm) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->file, boff, s->bitmap_size, bm, 0);
    if (ret < 0) {
        return ret;
    }
    if (bitmap_all_set(s, bm)) {
        set_block_full(s, bi);
        return 0;
    }
    /* request_alignment is a sector: whole sectors only. */
    for (uint64_t off = in; off < in + n; off += VHD_SECTOR) {
        if (!bit_is_set(bm, off / VHD_SECTOR)) {
            memset(p + (off - in), 0, VHD_SECTOR);
        }
    }
    return 0;
}

static int vpc_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    VpcState *s = node->opaque;
    uint8_t *p = buf;

    if (s->type == VHD_FIXED) {
        return bd_child_pread(s->file, offset, bytes, buf, 0);
    }
    while (bytes) {
        uint64_t bi = offset / s->block_size;
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);
        uint32_t e = bat_get(s, bi);
        int ret = 0;

        if (e == VHD_BAT_NONE) {
            memset(p, 0, n);
        } else {
            ret = read_block(s, bi, (uint64_t)e * VHD_SECTOR, in, n, p);
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

/* Zero-copy reads where the image holds the file's bytes as they are:
 * all of a fixed disk, or a range inside one allocated block whose
 * bitmap is known to be full.  Anything else falls back to vpc_pread
 * before anything is sent. */
static int vpc_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           BdFdSink *sink, int flags)
{
    VpcState *s = node->opaque;
    uint64_t in, bi;
    uint32_t e;

    if (s->type == VHD_FIXED) {
        return bd_child_pread_to_fd(s->file, offset, bytes, sink, flags);
    }
    in = offset % s->block_size;
    bi = offset / s->block_size;
    if (in + bytes > s->block_size) {
        return -ENOTSUP;
    }
    e = bat_get(s, bi);
    if (e == VHD_BAT_NONE || !block_full(s, bi)) {
        return -ENOTSUP;
    }
    return bd_child_pread_to_fd(s->file, (uint64_t)e * VHD_SECTOR +
                                s->bitmap_size + in, bytes, sink, flags);
}

/* Mark the sectors of [in, in+n) in the bitmap of block 'bi' (at
 * 'boff') after their data was written.  alloc_lock held. */
static int mark_sectors_locked(VpcState *s, uint64_t bi, uint64_t boff,
                               uint64_t in, uint64_t n)
{
    g_autofree uint8_t *bm = g_try_malloc(s->bitmap_size);
    int ret;

    if (!bm) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->file, boff, s->bitmap_size, bm, 0);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t sec = in / VHD_SECTOR; sec < (in + n) / VHD_SECTOR; sec++) {
        bm[sec / 8] |= 0x80u >> (sec % 8);
    }
    ret = bd_child_pwrite(s->file, boff, s->bitmap_size, bm, 0);
    if (ret == 0 && bitmap_all_set(s, bm)) {
        set_block_full(s, bi);
    }
    return ret;
}

/* Allocate guest block 'bi' at the footer's place and write [in, in+n)
 * of it: bitmap (all set), zeroes where the file already has bytes,
 * the data, the footer behind the block, a sync, then the BAT entry. */
static int allocate_locked(VpcState *s, uint64_t bi, uint64_t in, uint64_t n,
                           const uint8_t *p)
{
    uint64_t boff = s->free_offset;
    uint64_t data = boff + s->bitmap_size;
    uint64_t end = data + s->block_size;
    g_autofree uint8_t *bm = g_try_malloc(s->bitmap_size);
    int64_t flen = bd_node_getlength(s->file->node);
    uint8_t be[4];
    int ret;

    if (!bm) {
        return -ENOMEM;
    }
    if (flen < 0) {
        return (int)flen;
    }
    if (boff / VHD_SECTOR > 0xfffffffeu) {
        return -ENOSPC;
    }
    memset(bm, 0xff, s->bitmap_size);
    ret = bd_child_pwrite(s->file, boff, s->bitmap_size, bm, 0);
    if (ret == 0 && (uint64_t)flen > data) {
        /* Left-overs of an interrupted allocation: not guest data. */
        ret = bd_child_pwrite_zeroes(s->file, data,
                                     MIN((uint64_t)flen, end) - data, 0);
    }
    if (ret == 0) {
        ret = bd_child_pwrite(s->file, data + in, n, p, 0);
    }
    if (ret == 0) {
        ret = bd_child_pwrite(s->file, end, VHD_FOOTER_SIZE, s->footer, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        return ret;
    }
    put_be(be, 4, boff / VHD_SECTOR);
    ret = bd_child_pwrite(s->file, s->bat_offset + bi * 4, 4, be, 0);
    if (ret < 0) {
        return ret;
    }
    s->free_offset = end;
    set_block_full(s, bi);
    __atomic_store_n(&s->bat[bi], (uint32_t)(boff / VHD_SECTOR),
                     __ATOMIC_RELEASE);
    return 0;
}

static int write_block(VpcState *s, uint64_t bi, uint64_t in, uint64_t n,
                       const uint8_t *p)
{
    uint32_t e = bat_get(s, bi);
    int ret;

    if (e != VHD_BAT_NONE) {
        uint64_t boff = (uint64_t)e * VHD_SECTOR;
        ret = bd_child_pwrite(s->file, boff + s->bitmap_size + in, n, p, 0);
        if (ret < 0 || block_full(s, bi)) {
            return ret;
        }
        bd_mutex_lock(&s->alloc_lock);
        ret = mark_sectors_locked(s, bi, boff, in, n);
        bd_mutex_unlock(&s->alloc_lock);
        return ret;
    }
    bd_mutex_lock(&s->alloc_lock);
    e = s->bat[bi];
    if (e == VHD_BAT_NONE) {
        ret = allocate_locked(s, bi, in, n, p);
        bd_mutex_unlock(&s->alloc_lock);
        return ret;
    }
    bd_mutex_unlock(&s->alloc_lock);
    /* Another request allocated it meanwhile. */
    return write_block(s, bi, in, n, p);
}

static int vpc_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    VpcState *s = node->opaque;
    const uint8_t *p = buf;
    int ret = 0;

    if (s->type == VHD_FIXED) {
        return bd_child_pwrite(s->file, offset, bytes, buf,
                               flags & BD_REQ_FUA);
    }
    while (bytes && ret == 0) {
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);

        ret = write_block(s, offset / s->block_size, in, n, p);
        offset += n;
        bytes -= n;
        p += n;
    }
    if (ret == 0 && (flags & BD_REQ_FUA)) {
        ret = bd_child_flush(s->file);
    }
    return ret;
}

/* Unallocated blocks and unmarked sectors read as zeroes already;
 * allocated data is zeroed in place. */
static int vpc_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                             int flags)
{
    VpcState *s = node->opaque;
    int ret = 0;

    flags &= ~BD_REQ_MAY_UNMAP;
    if (s->type == VHD_FIXED) {
        return bd_child_pwrite_zeroes(s->file, offset, bytes, flags);
    }
    while (bytes && ret == 0) {
        uint64_t bi = offset / s->block_size;
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);
        uint32_t e = bat_get(s, bi);

        if (e != VHD_BAT_NONE) {
            ret = bd_child_pwrite_zeroes(s->file, (uint64_t)e * VHD_SECTOR +
                                         s->bitmap_size + in, n, flags);
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

static int vpc_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    VpcState *s = node->opaque;
    uint64_t bi, n;
    uint32_t e;

    if (s->type == VHD_FIXED) {
        *pnum = bytes;
        *map = offset;
        *file = s->file->node;
        return BD_BLOCK_RAW | BD_BLOCK_OFFSET_VALID;
    }
    bi = offset / s->block_size;
    n = MIN(bytes, s->block_size - offset % s->block_size);
    e = bat_get(s, bi);
    if (e != VHD_BAT_NONE) {
        *pnum = n;
        *map = (uint64_t)e * VHD_SECTOR + s->bitmap_size +
               offset % s->block_size;
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    while (n < bytes && bat_get(s, ++bi) == VHD_BAT_NONE) {
        n = MIN(bytes, n + s->block_size);
    }
    *pnum = n;
    return BD_BLOCK_ZERO;
}

static void vpc_refresh_limits(BdNode *node)
{
    VpcState *s = node->opaque;

    /* Sector bitmaps: a dynamic disk is written in whole sectors. */
    if (s && s->type == VHD_DYNAMIC) {
        node->request_alignment = MAX(node->request_alignment, VHD_SECTOR);
    }
}

/* --- open --- */

/* The guest size in sectors by QEMU's rules (see the top). */
static uint64_t footer_sectors(const uint8_t *f)
{
    const char *app = (const char *)f + F_CREATOR_APP;
    uint64_t chs = get_be(f + F_CYLS, 2) * f[F_HEADS] * f[F_SECS];
    gboolean use_chs = memcmp(app, "win ", 4) && memcmp(app, "qem2", 4) &&
                       memcmp(app, "d2v ", 4) && memcmp(app, "CTXS", 4) &&
                       memcmp(app, "tap", 4);

    if (!use_chs || chs == VHD_MAX_GEOMETRY) {
        return get_be(f + F_CURRENT_SIZE, 8) / VHD_SECTOR;
    }
    return chs;
}

static gboolean read_footer(VpcState *s, uint64_t flen, GError **errp)
{
    uint8_t *f = s->footer;
    int ret;

    if (flen < VHD_FOOTER_SIZE) {
        FAIL("File too small for a VHD header");
    }
    ret = bd_child_pread(s->file, 0, VHD_FOOTER_SIZE, f, 0);
    if (ret < 0) {
        FAIL("Unable to read VHD header");
    }
    s->type = VHD_DYNAMIC;
    if (memcmp(f, "conectix", 8)) {
        /* A fixed disk has its footer only at the end. */
        ret = bd_child_pread(s->file, flen - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE,
                             f, 0);
        if (ret < 0) {
            FAIL("Unable to read VHD header");
        }
        if (memcmp(f, "conectix", 8)) {
            FAIL("invalid VPC image");
        }
        s->type = VHD_FIXED;
    }
    if (vpc_checksum(f, VHD_FOOTER_SIZE, F_CHECKSUM) !=
        get_be(f + F_CHECKSUM, 4)) {
        FAIL("Incorrect header checksum");
    }
    return TRUE;
}

static gboolean check_type(VpcState *s, GError **errp)
{
    const char *name = s->node->node_name;
    uint32_t type = (uint32_t)get_be(s->footer + F_TYPE, 4);

    if (type == VHD_DIFFERENCING) {
        FAIL("Node '%s': vpc: differencing VHD images (with a parent) are "
             "not supported", name);
    }
    if (s->type == VHD_FIXED && type != VHD_FIXED) {
        FAIL("Node '%s': vpc: the footer says disk type %" PRIu32 " but the "
             "copy at the start of the file is missing", name, type);
    }
    if (s->type == VHD_DYNAMIC && type != VHD_DYNAMIC) {
        FAIL("Node '%s': vpc: footer copy at the start of the file, but "
             "disk type %" PRIu32 " is not dynamic", name, type);
    }
    return TRUE;
}

static gboolean read_dyn_header(VpcState *s, uint64_t flen, uint64_t sectors,
                                GError **errp)
{
    const char *name = s->node->node_name;
    uint8_t h[VHD_DYN_HEADER_SIZE];
    uint64_t hoff = get_be(s->footer + F_DATA_OFFSET, 8);
    int ret;

    if (hoff > flen || flen - hoff < VHD_DYN_HEADER_SIZE || hoff < 512) {
        FAIL("Node '%s': vpc: dynamic disk header offset 0x%" PRIx64 " is "
             "outside the file (%" PRIu64 " bytes)", name, hoff, flen);
    }
    ret = bd_child_pread(s->file, hoff, VHD_DYN_HEADER_SIZE, h, 0);
    if (ret < 0) {
        FAIL("Error reading dynamic VHD header");
    }
    if (memcmp(h, "cxsparse", 8)) {
        FAIL("Invalid header magic");
    }
    s->block_size = (uint32_t)get_be(h + D_BLOCK_SIZE, 4);
    if (s->block_size < VHD_SECTOR ||
        (s->block_size & (s->block_size - 1))) {
        FAIL("Invalid block size %" PRIu32, s->block_size);
    }
    s->bitmap_size = ((s->block_size / (8 * VHD_SECTOR)) + 511) & ~511u;
    s->max_entries = (uint32_t)get_be(h + D_MAX_ENTRIES, 4);
    if (sectors * VHD_SECTOR / s->block_size > 0xffffffffu) {
        FAIL("Too many blocks");
    }
    if ((uint64_t)s->max_entries * s->block_size < sectors * VHD_SECTOR) {
        FAIL("Page table too small");
    }
    if (s->max_entries > VHD_MAX_TABLE_ENTRIES) {
        FAIL("Max Table Entries too large (%" PRIu32 ")", s->max_entries);
    }
    s->bat_offset = get_be(h + D_TABLE_OFFSET, 8);
    if (s->bat_offset > flen ||
        flen - s->bat_offset < (uint64_t)s->max_entries * 4) {
        FAIL("Node '%s': vpc: block allocation table (%" PRIu32 " entries "
             "at 0x%" PRIx64 ") extends beyond the end of the file (%" PRIu64
             " bytes); the image is truncated", name, s->max_entries,
             s->bat_offset, flen);
    }
    if (s->bat_offset < VHD_FOOTER_SIZE ||
        (s->bat_offset < hoff + VHD_DYN_HEADER_SIZE &&
         s->bat_offset + (uint64_t)s->max_entries * 4 > hoff)) {
        FAIL("Node '%s': vpc: block allocation table at 0x%" PRIx64
             " overlaps the image headers", name, s->bat_offset);
    }
    return TRUE;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Every allocated block must lie in the file, after the metadata, and
 * apart from the others.  QEMU 7.2 catches only blocks past the end. */
static gboolean check_bat(VpcState *s, uint64_t flen, GError **errp)
{
    const char *name = s->node->node_name;
    uint64_t span = (uint64_t)s->bitmap_size + s->block_size;
    uint64_t meta_end = (s->bat_offset + (uint64_t)s->max_entries * 4 +
                         VHD_SECTOR - 1) & ~(uint64_t)(VHD_SECTOR - 1);
    uint64_t hoff = get_be(s->footer + F_DATA_OFFSET, 8);
    g_autoptr(GArray) starts = g_array_new(FALSE, FALSE, sizeof(uint32_t));

    meta_end = MAX(meta_end, hoff + VHD_DYN_HEADER_SIZE);
    s->free_offset = meta_end;
    for (uint64_t i = 0; i < s->max_entries; i++) {
        uint32_t e = s->bat[i];
        uint64_t off = (uint64_t)e * VHD_SECTOR;

        if (e == VHD_BAT_NONE) {
            continue;
        }
        if (off < meta_end) {
            FAIL("Node '%s': vpc: BAT entry %" PRIu64 " points into the image "
                 "headers (offset 0x%" PRIx64 ")", name, i, off);
        }
        if (off + span > flen) {
            FAIL("Node '%s': vpc: BAT entry %" PRIu64 " points to a block at "
                 "0x%" PRIx64 " that ends beyond the end of the file (%"
                 PRIu64 " bytes); the image is truncated", name, i, off, flen);
        }
        s->free_offset = MAX(s->free_offset, off + span);
        g_array_append_val(starts, e);
    }
    g_array_sort(starts, cmp_u32);
    for (guint k = 1; k < starts->len; k++) {
        uint64_t prev = g_array_index(starts, uint32_t, k - 1);
        uint64_t cur = g_array_index(starts, uint32_t, k);
        if (prev * VHD_SECTOR + span > cur * VHD_SECTOR) {
            FAIL("Node '%s': vpc: BAT entries share or overlap the block at "
                 "0x%" PRIx64, name, cur * VHD_SECTOR);
        }
    }
    return TRUE;
}

static gboolean load_bat(VpcState *s, uint64_t flen, GError **errp)
{
    uint64_t bytes = (uint64_t)s->max_entries * 4;
    int ret;

    /* Both bounded by the file size (read_dyn_header). */
    s->bat = g_try_malloc(MAX(bytes, 4));
    s->full = g_try_malloc0(s->max_entries / 8 + 1);
    if (!s->bat || !s->full) {
        FAIL("Unable to allocate memory for page table");
    }
    ret = bd_child_pread(s->file, s->bat_offset, bytes, s->bat, 0);
    if (ret < 0) {
        FAIL("Error reading pagetable");
    }
    for (uint64_t i = 0; i < s->max_entries; i++) {
        s->bat[i] = (uint32_t)get_be((const uint8_t *)&s->bat[i], 4);
    }
    return check_bat(s, flen, errp);
}

static void vpc_close(BdNode *node)
{
    VpcState *s = node->opaque;

    if (!s) {
        return;
    }
    bd_mutex_destroy(&s->alloc_lock);
    g_free(s->bat);
    g_free(s->full);
    g_free(s);
    node->opaque = NULL;
}

static gboolean vpc_load(VpcState *s, GError **errp)
{
    const char *name = s->node->node_name;
    int64_t flen = bd_node_getlength(s->file->node);
    uint64_t sectors;

    if (flen < 0) {
        FAIL("Invalid file size");
    }
    if (!read_footer(s, (uint64_t)flen, errp) || !check_type(s, errp)) {
        return FALSE;
    }
    sectors = footer_sectors(s->footer);
    if (sectors > VHD_MAX_SECTORS) {
        FAIL("Node '%s': vpc: disk size of %" PRIu64 " sectors is larger "
             "than the VHD maximum of 2040 GiB", name, sectors);
    }
    if (s->type == VHD_FIXED) {
        if (sectors * VHD_SECTOR > (uint64_t)flen - VHD_FOOTER_SIZE) {
            FAIL("Node '%s': vpc: fixed disk of %" PRIu64 " bytes does not "
                 "fit in the file (%" PRId64 " bytes with the footer); the "
                 "image is truncated", name, sectors * VHD_SECTOR, flen);
        }
    } else if (!read_dyn_header(s, (uint64_t)flen, sectors, errp) ||
               !load_bat(s, (uint64_t)flen, errp)) {
        return FALSE;
    }
    bd_node_set_size(s->node, sectors * VHD_SECTOR);
    return TRUE;
}

static gboolean vpc_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(VpcOptions) o = { 0 };
    VpcState *s = g_new0(VpcState, 1);

    bd_schema_decode(vpc_options, options, &o);
    bd_mutex_init(&s->alloc_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !vpc_load(s, errp)) {
        vpc_close(node);
        return FALSE;
    }
    return TRUE;
}

static void vpc_query_image_info(BdNode *node, GVariantDict *image)
{
    VpcState *s = node->opaque;

    if (s->type != VHD_FIXED) {
        g_variant_dict_insert(image, "cluster-size", "x",
                              (gint64)s->block_size);
    }
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
}

/* --- blockdev-create (BlockdevCreateOptionsVpc) --- */

typedef enum { VPC_SUB_DYNAMIC, VPC_SUB_FIXED } VpcSubformat;

static const char *const subformat_values[] = {
    [VPC_SUB_DYNAMIC] = "dynamic",
    [VPC_SUB_FIXED] = "fixed",
    NULL };
static const BdSchemaType subformat_type = {
    .name = "BlockdevVpcSubformat", .kind = BD_SCHEMA_ENUM,
    .enum_values = subformat_values };

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    VpcSubformat subformat;
    gboolean force_size;
} VpcCreateOptions;

static const BdSchemaField vpc_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE,
      BD_AT(VpcCreateOptions, file) },
    { "size", &bd_schema_size, FALSE, BD_AT(VpcCreateOptions, size) },
    { "subformat", &subformat_type, TRUE,
      BD_AT(VpcCreateOptions, subformat), .def.i = VPC_SUB_DYNAMIC },
    { "force-size", &bd_schema_bool, TRUE,
      BD_AT(VpcCreateOptions, force_size) },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(VpcCreateOptions, vpc_create_options)

typedef struct {
    uint16_t cyls;
    uint8_t heads, secs;
} Chs;

/* The VHD specification's geometry for a sector count (it may round
 * down), with up to 16 heads. */
static Chs chs_for(uint64_t sectors)
{
    Chs g;
    uint64_t ch;

    sectors = MIN(sectors, VHD_MAX_GEOMETRY);
    if (sectors >= 65535ull * 16 * 63) {
        g.secs = 255;
        g.heads = 16;
        ch = sectors / g.secs;
    } else {
        uint64_t heads;

        g.secs = 17;
        ch = sectors / g.secs;
        heads = MAX((ch + 1023) / 1024, 4);
        if (ch >= heads * 1024 || heads > 16) {
            g.secs = 31;
            heads = 16;
            ch = sectors / g.secs;
        }
        if (ch >= heads * 1024) {
            g.secs = 63;
            heads = 16;
            ch = sectors / g.secs;
        }
        g.heads = (uint8_t)heads;
    }
    g.cyls = (uint16_t)(ch / g.heads);
    return g;
}

/* QEMU's rounding: the smallest geometry holding the size (the largest
 * geometry, or force-size, keep the size itself).  Sets *sectors. */
static gboolean create_geometry(const VpcCreateOptions *c, Chs *g,
                                uint64_t *sectors, GError **errp)
{
    uint64_t want = MIN(VHD_MAX_GEOMETRY, c->size / VHD_SECTOR);

    *g = (Chs){ 0, 0, 0 };
    if (c->force_size) {
        *g = (Chs){ VHD_CHS_MAX_C, VHD_CHS_MAX_H, VHD_CHS_MAX_S };
    } else {
        for (uint64_t i = 0;
             want > (uint64_t)g->cyls * g->heads * g->secs; i++) {
            *g = chs_for(want + i);
        }
    }
    if ((uint64_t)g->cyls * g->heads * g->secs == VHD_MAX_GEOMETRY) {
        *sectors = c->size / VHD_SECTOR;
        if (*sectors > VHD_MAX_SECTORS) {
            FAIL("Disk size is too large, max size is 2040 GiB");
        }
    } else {
        *sectors = (uint64_t)g->cyls * g->heads * g->secs;
    }
    return TRUE;
}

static void make_footer(uint8_t *f, const VpcCreateOptions *c, const Chs *g,
                        gboolean dynamic)
{
    memset(f, 0, VHD_FOOTER_SIZE);
    memcpy(f + F_COOKIE, "conectix", 8);
    put_be(f + F_FEATURES, 4, 2);
    put_be(f + F_VERSION, 4, 0x00010000);
    put_be(f + F_DATA_OFFSET, 8, dynamic ? VHD_FOOTER_SIZE : UINT64_MAX);
    put_be(f + F_TIMESTAMP, 4, (uint32_t)(time(NULL) - VHD_TIMESTAMP_BASE));
    memcpy(f + F_CREATOR_APP, c->force_size ? "qem2" : "qemu", 4);
    put_be(f + F_MAJOR, 2, 5);     /* Virtual PC 2007 */
    put_be(f + F_MINOR, 2, 3);
    memcpy(f + F_CREATOR_OS, "Wi2k", 4);
    put_be(f + F_ORIG_SIZE, 8, c->size);
    put_be(f + F_CURRENT_SIZE, 8, c->size);
    put_be(f + F_CYLS, 2, g->cyls);
    f[F_HEADS] = g->heads;
    f[F_SECS] = g->secs;
    put_be(f + F_TYPE, 4, dynamic ? VHD_DYNAMIC : VHD_FIXED);
    bd_formats_uuid_generate(f + F_UUID);
    put_be(f + F_CHECKSUM, 4, vpc_checksum(f, VHD_FOOTER_SIZE, F_CHECKSUM));
}

/* footer copy | dynamic header | BAT (sector-rounded, all 0xff) | footer */
static int write_dynamic(BdNode *file, const uint8_t *footer,
                         uint64_t sectors)
{
    uint64_t entries = (sectors + VHD_DEFAULT_BLOCK / VHD_SECTOR - 1) /
                       (VHD_DEFAULT_BLOCK / VHD_SECTOR);
    uint64_t bat_bytes = (entries * 4 + 511) & ~(uint64_t)511;
    uint64_t total = 3 * 512 + bat_bytes + VHD_FOOTER_SIZE;
    g_autofree uint8_t *buf = g_try_malloc0(total);
    uint8_t *h;

    if (!buf) {
        return -ENOMEM;
    }
    h = buf + VHD_FOOTER_SIZE;
    memcpy(buf, footer, VHD_FOOTER_SIZE);
    memcpy(h + D_COOKIE, "cxsparse", 8);
    /* The spec says 0xFFFFFFFF; Microsoft's tools want all 64 bits. */
    put_be(h + D_DATA_OFFSET, 8, UINT64_MAX);
    put_be(h + D_TABLE_OFFSET, 8, 3 * 512);
    put_be(h + D_VERSION, 4, 0x00010000);
    put_be(h + D_MAX_ENTRIES, 4, entries);
    put_be(h + D_BLOCK_SIZE, 4, VHD_DEFAULT_BLOCK);
    put_be(h + D_CHECKSUM, 4, vpc_checksum(h, VHD_DYN_HEADER_SIZE,
                                           D_CHECKSUM));
    memset(buf + 3 * 512, 0xff, bat_bytes);
    memcpy(buf + 3 * 512 + bat_bytes, footer, VHD_FOOTER_SIZE);
    return bd_node_pwrite(file, 0, total, buf, 0);
}

static gboolean vpc_create(GVariant *options, GError **errp)
{
    g_auto(VpcCreateOptions) c = { 0 };
    uint8_t footer[VHD_FOOTER_SIZE];
    gboolean dynamic;
    uint64_t sectors;
    BdNode *file;
    Chs g;
    int ret;

    bd_schema_decode(vpc_create_options, options, &c);
    dynamic = c.subformat == VPC_SUB_DYNAMIC;
    file = bd_formats_create_file_node(c.file, errp);
    if (!file || !create_geometry(&c, &g, &sectors, errp)) {
        return FALSE;
    }
    if (c.size != sectors * VHD_SECTOR) {
        FAIL("The requested image size cannot be represented in CHS "
             "geometry");
    }
    make_footer(footer, &c, &g, dynamic);
    ret = bd_node_truncate(file, 0);
    if (ret == 0 && dynamic) {
        ret = write_dynamic(file, footer, sectors);
        if (ret < 0) {
            FAIL("Unable to create or write VHD header");
        }
    } else if (ret == 0) {
        ret = bd_node_truncate(file, c.size + VHD_FOOTER_SIZE);
        if (ret == 0) {
            ret = bd_node_pwrite(file, c.size, VHD_FOOTER_SIZE, footer, 0);
            if (ret < 0) {
                FAIL("Unable to write VHD header: %s", g_strerror(-ret));
            }
        }
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write VHD image: %s", g_strerror(-ret));
    }
    return TRUE;
}

const BdDriver bd_vpc_driver = {
    .name = "vpc",
    .options = vpc_options,
    .is_format = TRUE,
    .open = vpc_open,
    .close = vpc_close,
    .reopen_prepare = bd_reopen_prepare_fixed,
    .refresh_limits = vpc_refresh_limits,
    .pread = vpc_pread,
    .pread_to_fd = vpc_pread_to_fd,
    .pwrite = vpc_pwrite,
    .pwrite_zeroes = vpc_pwrite_zeroes,
    .block_status = vpc_block_status,
    .query_image_info = vpc_query_image_info,
    .create_options = vpc_create_options,
    .create = vpc_create,
};
