/* SPDX-License-Identifier: MIT */
/* The 'vdi' format driver: VirtualBox disk images, static and dynamic,
 * read-write, with blockdev-create.
 *
 * On disk (little endian): a 512-byte header, the block map (one
 * uint32 per 1 MiB guest block: the index of its data block, or
 * 0xffffffff never written, 0xfffffffe discarded; both read as zeroes),
 * then the data blocks at offset_data + index * block_size.  A static
 * image maps every block at creation; a dynamic one appends a data
 * block when a guest block is first written, as index blocks_allocated.
 *
 *   [header][block map ...][data block 0][data block 1] ...
 *
 * Thread model: open/close/query on the main thread, create on the
 * create job's thread, data callbacks on any thread.  Readers and
 * writers of mapped blocks take no lock: they load the map entry
 * atomically (acquire) and do their I/O.  Allocation is serialised by
 * VdiState.alloc_lock, held across the whole allocation (new data block
 * with the write's bytes, then header, then map entry on disk, then the
 * entry published with a release store), so that the on-disk rule
 * "mapped indices are 0 .. blocks_allocated-1, each used once", which
 * QEMU relies on to pick the next index, holds after every step: a
 * crash between the header and the map entry leaves an unused index,
 * never a shared one.  Writers to the same unmapped block wait on the
 * lock and then find it mapped.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"
#include "formats/create-util.h"

#define VDI_HEADER_SIZE     512
#define VDI_SECTOR_SIZE     512
#define VDI_BLOCK_SIZE      (1u << 20)
#define VDI_SIGNATURE       0xbeda107fu
#define VDI_VERSION_1_1     0x00010001u
#define VDI_TYPE_DYNAMIC    1
#define VDI_TYPE_STATIC     2
#define VDI_UNALLOCATED     0xffffffffu
#define VDI_DISCARDED       0xfffffffeu
#define VDI_IS_ALLOCATED(e) ((e) < VDI_DISCARDED)
/* QEMU's limit: the map stays below 2 GiB. */
#define VDI_BLOCKS_MAX      0x1fffff80u
#define VDI_DISK_SIZE_MAX   ((uint64_t)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE)
#define VDI_TEXT            "<<< QEMU VM Virtual Disk Image >>>\n"

/* Header field offsets. */
enum {
    H_SIGNATURE = 0x40, H_VERSION = 0x44, H_HEADER_SIZE = 0x48,
    H_IMAGE_TYPE = 0x4c, H_OFFSET_BMAP = 0x154, H_OFFSET_DATA = 0x158,
    H_SECTOR_SIZE = 0x168, H_DISK_SIZE = 0x170, H_BLOCK_SIZE = 0x178,
    H_BLOCKS_IN_IMAGE = 0x180, H_BLOCKS_ALLOCATED = 0x184,
    H_UUID_IMAGE = 0x188, H_UUID_LAST_SNAP = 0x198, H_UUID_LINK = 0x1a8,
    H_UUID_PARENT = 0x1b8,
};

typedef struct {
    BdNode *node;
    BdChild *file;
    uint32_t image_type;
    uint32_t block_size;
    uint32_t blocks_in_image;
    uint64_t offset_bmap, offset_data;
    uint64_t disk_size;
    /* Entries in host order; read with atomic loads (see above). */
    uint32_t *bmap;

    BdMutex alloc_lock;        /* protects the members below */
    uint8_t header[VDI_HEADER_SIZE];   /* as on disk */
    uint32_t blocks_allocated;
    uint32_t next_block;       /* index the next allocation takes */
} VdiState;

typedef struct {
    GVariant *file;
} VdiOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField vdi_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(VdiOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(VdiOptions, vdi_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static uint32_t get_le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static gboolean uuid_is_null(const uint8_t *p)
{
    static const uint8_t zero[16];

    return memcmp(p, zero, 16) == 0;
}

static inline uint32_t bmap_get(VdiState *s, uint64_t i)
{
    return __atomic_load_n(&s->bmap[i], __ATOMIC_ACQUIRE);
}

/* --- data path --- */

static int vdi_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    VdiState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t bi = offset / s->block_size;
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);
        uint32_t e = bi < s->blocks_in_image ? bmap_get(s, bi)
                                              : VDI_UNALLOCATED;

        if (!VDI_IS_ALLOCATED(e)) {
            memset(p, 0, n);
        } else {
            int ret = bd_child_pread(s->file, s->offset_data +
                                     (uint64_t)e * s->block_size + in,
                                     n, p, 0);
            if (ret < 0) {
                return ret;
            }
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

/* Zero-copy reads of a range inside one mapped block: the file's bytes
 * as they are.  Anything else (unmapped, across blocks) falls back to
 * vdi_pread before anything is sent. */
static int vdi_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           BdFdSink *sink, int flags)
{
    VdiState *s = node->opaque;
    uint64_t in = offset % s->block_size;
    uint32_t e;

    if (in + bytes > s->block_size) {
        return -ENOTSUP;
    }
    e = bmap_get(s, offset / s->block_size);
    if (!VDI_IS_ALLOCATED(e)) {
        return -ENOTSUP;
    }
    return bd_child_pread_to_fd(s->file, s->offset_data +
                                (uint64_t)e * s->block_size + in, bytes,
                                sink, flags);
}

/* Fill data block 'idx' with [in, in+n) from 'buf' and zeroes around
 * it.  A block wholly beyond the end of the file is zeroes already: the
 * data and the block's last bytes (so that the file covers the block,
 * as VirtualBox expects) are all that is written, not the whole MiB
 * QEMU writes.  Otherwise (left-overs of an interrupted allocation) the
 * whole block is written. */
static int vdi_write_new_block(VdiState *s, uint32_t idx, uint64_t in,
                               uint64_t n, const uint8_t *buf)
{
    uint64_t start = s->offset_data + (uint64_t)idx * s->block_size;
    int64_t flen = bd_node_getlength(s->file->node);
    g_autofree uint8_t *block = NULL;
    int ret;

    if (flen >= 0 && (uint64_t)flen <= start) {
        uint64_t tail = MIN(VDI_SECTOR_SIZE, s->block_size - (in + n));
        ret = bd_child_pwrite(s->file, start + in, n, buf, 0);
        if (ret == 0 && tail) {
            static const uint8_t zeroes[VDI_SECTOR_SIZE];
            ret = bd_child_pwrite(s->file, start + s->block_size - tail,
                                  tail, zeroes, 0);
        }
        return ret;
    }
    block = g_try_malloc0(s->block_size);
    if (!block) {
        return -ENOMEM;
    }
    memcpy(block + in, buf, n);
    return bd_child_pwrite(s->file, start, s->block_size, block, 0);
}

/* Map guest block 'bi' and write [in, in+n) of it from 'buf', the rest
 * of the new data block zeroes.  Takes alloc_lock; if another request
 * mapped the block meanwhile, writes in place instead. */
static int vdi_allocate_write(VdiState *s, uint64_t bi, uint64_t in,
                              uint64_t n, const uint8_t *buf)
{
    uint8_t le[4];
    uint32_t e, idx;
    int ret;

    bd_mutex_lock(&s->alloc_lock);
    e = s->bmap[bi];
    if (VDI_IS_ALLOCATED(e)) {
        bd_mutex_unlock(&s->alloc_lock);
        return bd_child_pwrite(s->file, s->offset_data +
                               (uint64_t)e * s->block_size + in, n, buf, 0);
    }
    idx = s->next_block;
    if (idx >= s->blocks_in_image) {
        /* Only a header that lies about blocks_allocated gets here. */
        ret = -ENOSPC;
        goto out;
    }
    ret = vdi_write_new_block(s, idx, in, n, buf);
    if (ret < 0) {
        goto out;
    }
    /* Header first: a crash before the map entry leaves a gap. */
    put_le32(s->header + H_BLOCKS_ALLOCATED, s->blocks_allocated + 1);
    ret = bd_child_pwrite(s->file, 0, VDI_HEADER_SIZE, s->header, 0);
    if (ret < 0) {
        put_le32(s->header + H_BLOCKS_ALLOCATED, s->blocks_allocated);
        goto out;
    }
    s->blocks_allocated++;
    s->next_block++;
    put_le32(le, idx);
    ret = bd_child_pwrite(s->file, s->offset_bmap + bi * 4, 4, le, 0);
    if (ret == 0) {
        __atomic_store_n(&s->bmap[bi], idx, __ATOMIC_RELEASE);
    }
out:
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

static int vdi_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    VdiState *s = node->opaque;
    const uint8_t *p = buf;
    int ret = 0;

    while (bytes && ret == 0) {
        uint64_t bi = offset / s->block_size;
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);
        uint32_t e = bmap_get(s, bi);

        if (VDI_IS_ALLOCATED(e)) {
            ret = bd_child_pwrite(s->file, s->offset_data +
                                  (uint64_t)e * s->block_size + in, n, p, 0);
        } else {
            ret = vdi_allocate_write(s, bi, in, n, p);
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    if (ret == 0 && (flags & BD_REQ_FUA)) {
        ret = bd_child_flush(s->file);
    }
    return ret;
}

/* Unmapped blocks read as zeroes already; mapped ones are zeroed in
 * place (never unmapped: VDI keeps no free list to reuse them). */
static int vdi_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                             int flags)
{
    VdiState *s = node->opaque;
    int ret = 0;

    while (bytes && ret == 0) {
        uint64_t bi = offset / s->block_size;
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);
        uint32_t e = bmap_get(s, bi);

        if (VDI_IS_ALLOCATED(e)) {
            ret = bd_child_pwrite_zeroes(s->file, s->offset_data +
                                         (uint64_t)e * s->block_size + in,
                                         n, flags & ~BD_REQ_MAY_UNMAP);
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

static int vdi_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    VdiState *s = node->opaque;
    uint64_t bi = offset / s->block_size;
    uint64_t in = offset % s->block_size;
    uint32_t e = bmap_get(s, bi);
    uint64_t n = MIN(bytes, s->block_size - in);

    if (VDI_IS_ALLOCATED(e)) {
        *pnum = n;
        *map = s->offset_data + (uint64_t)e * s->block_size + in;
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    /* A run of unmapped blocks. */
    while (n < bytes && ++bi < s->blocks_in_image &&
           !VDI_IS_ALLOCATED(bmap_get(s, bi))) {
        n = MIN(bytes, n + s->block_size);
    }
    *pnum = n;
    return BD_BLOCK_ZERO;
}

/* --- open --- */

/* QEMU's header checks, in QEMU's order and words. */
static gboolean vdi_check_header(const uint8_t *h, GError **errp)
{
    uint64_t disk_size = get_le64(h + H_DISK_SIZE);
    uint32_t sig = get_le32(h + H_SIGNATURE);
    uint32_t version = get_le32(h + H_VERSION);
    uint32_t bmap_off = get_le32(h + H_OFFSET_BMAP);
    uint32_t data_off = get_le32(h + H_OFFSET_DATA);
    uint32_t sector_size = get_le32(h + H_SECTOR_SIZE);
    uint32_t block_size = get_le32(h + H_BLOCK_SIZE);
    uint32_t blocks = get_le32(h + H_BLOCKS_IN_IMAGE);

    if (disk_size > VDI_DISK_SIZE_MAX) {
        FAIL("Unsupported VDI image size (size is 0x%" PRIx64 ", max "
             "supported is 0x%" PRIx64 ")", disk_size, VDI_DISK_SIZE_MAX);
    }
    /* VBoxManage convertfromraw makes odd sizes: rounded up, as QEMU. */
    disk_size = (disk_size + VDI_SECTOR_SIZE - 1) & ~(uint64_t)511;
    if (sig != VDI_SIGNATURE) {
        FAIL("Image not in VDI format (bad signature %08" PRIx32 ")", sig);
    }
    if (version != VDI_VERSION_1_1) {
        FAIL("unsupported VDI image (version %" PRIu32 ".%" PRIu32 ")",
             version >> 16, version & 0xffff);
    }
    if (bmap_off % VDI_SECTOR_SIZE) {
        FAIL("unsupported VDI image (unaligned block map offset 0x%" PRIx32
             ")", bmap_off);
    }
    if (data_off % VDI_SECTOR_SIZE) {
        FAIL("unsupported VDI image (unaligned data offset 0x%" PRIx32 ")",
             data_off);
    }
    if (sector_size != VDI_SECTOR_SIZE) {
        FAIL("unsupported VDI image (sector size %" PRIu32 " is not %u)",
             sector_size, VDI_SECTOR_SIZE);
    }
    if (block_size != VDI_BLOCK_SIZE) {
        FAIL("unsupported VDI image (block size %" PRIu32 " is not %u)",
             block_size, VDI_BLOCK_SIZE);
    }
    if (disk_size > (uint64_t)blocks * block_size) {
        FAIL("unsupported VDI image (disk size %" PRIu64 ", image bitmap "
             "has room for %" PRIu64 ")", disk_size,
             (uint64_t)blocks * block_size);
    }
    if (!uuid_is_null(h + H_UUID_LINK)) {
        FAIL("unsupported VDI image (non-NULL link UUID)");
    }
    if (!uuid_is_null(h + H_UUID_PARENT)) {
        FAIL("unsupported VDI image (non-NULL parent UUID)");
    }
    if (blocks > VDI_BLOCKS_MAX) {
        FAIL("unsupported VDI image (too many blocks %u, max is %u)",
             blocks, VDI_BLOCKS_MAX);
    }
    return TRUE;
}

/* Beyond QEMU: the map and every data block it names must lie in the
 * file, and no two entries may share a data block.  QEMU 7.2 opens
 * such images and serves wrong data. */
static gboolean vdi_check_layout(VdiState *s, uint64_t file_size,
                                 GError **errp)
{
    const char *name = s->node->node_name;
    uint64_t map_end = s->offset_bmap + (uint64_t)s->blocks_in_image * 4;

    if (s->offset_bmap < VDI_HEADER_SIZE) {
        FAIL("Node '%s': vdi: block map offset 0x%" PRIx64 " overlaps the "
             "header", name, s->offset_bmap);
    }
    if (map_end > file_size) {
        FAIL("Node '%s': vdi: block map (%" PRIu32 " entries at 0x%" PRIx64
             ") extends beyond the end of the file (%" PRIu64 " bytes); the "
             "image is truncated", name, s->blocks_in_image, s->offset_bmap,
             file_size);
    }
    if (s->offset_data < map_end && s->blocks_in_image) {
        FAIL("Node '%s': vdi: data offset 0x%" PRIx64 " overlaps the block "
             "map (0x%" PRIx64 "..0x%" PRIx64 ")", name, s->offset_data,
             s->offset_bmap, map_end);
    }
    return TRUE;
}

static gboolean vdi_check_map(VdiState *s, uint64_t file_size,
                              GError **errp)
{
    const char *name = s->node->node_name;
    g_autofree uint8_t *used = g_try_malloc0(s->blocks_in_image / 8 + 1);
    uint64_t max_plus_one = 0;

    if (!used) {
        FAIL("Node '%s': vdi: cannot allocate memory for the block map",
             name);
    }
    for (uint64_t i = 0; i < s->blocks_in_image; i++) {
        uint32_t e = s->bmap[i];
        uint64_t guest = i * s->block_size;
        uint64_t need, start;

        if (!VDI_IS_ALLOCATED(e)) {
            continue;
        }
        if (e >= s->blocks_in_image) {
            FAIL("Node '%s': vdi: block map entry %" PRIu64 " names data "
                 "block %" PRIu32 ", beyond the %" PRIu32 " blocks of the "
                 "image", name, i, e, s->blocks_in_image);
        }
        if (used[e / 8] & (1u << (e % 8))) {
            FAIL("Node '%s': vdi: block map entry %" PRIu64 " names data "
                 "block %" PRIu32 ", which an earlier entry uses too",
                 name, i, e);
        }
        used[e / 8] |= 1u << (e % 8);
        start = s->offset_data + (uint64_t)e * s->block_size;
        need = guest < s->disk_size ? MIN(s->block_size, s->disk_size - guest)
                                    : 0;
        if (need && start + need > file_size) {
            FAIL("Node '%s': vdi: block map entry %" PRIu64 " names data at "
                 "offset 0x%" PRIx64 ", beyond the end of the file (%" PRIu64
                 " bytes); the image is truncated or corrupt", name, i,
                 start, file_size);
        }
        max_plus_one = MAX(max_plus_one, (uint64_t)e + 1);
    }
    s->next_block = (uint32_t)MAX(max_plus_one, s->blocks_allocated);
    return TRUE;
}

static void vdi_close(BdNode *node)
{
    VdiState *s = node->opaque;

    if (!s) {
        return;
    }
    bd_mutex_destroy(&s->alloc_lock);
    g_free(s->bmap);
    g_free(s);
    node->opaque = NULL;
}

static gboolean vdi_load(BdNode *node, VdiState *s, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    uint64_t map_bytes;
    int ret;

    if (file_size < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-file_size));
    }
    if (file_size < VDI_HEADER_SIZE) {
        FAIL("Node '%s': vdi: the file (%" PRId64 " bytes) is too short for "
             "a VDI header (%d bytes)", node->node_name, file_size,
             VDI_HEADER_SIZE);
    }
    ret = bd_child_pread(s->file, 0, VDI_HEADER_SIZE, s->header, 0);
    if (ret < 0) {
        FAIL("Could not read VDI header: %s", g_strerror(-ret));
    }
    if (!vdi_check_header(s->header, errp)) {
        return FALSE;
    }
    s->image_type = get_le32(s->header + H_IMAGE_TYPE);
    s->block_size = get_le32(s->header + H_BLOCK_SIZE);
    s->blocks_in_image = get_le32(s->header + H_BLOCKS_IN_IMAGE);
    s->blocks_allocated = get_le32(s->header + H_BLOCKS_ALLOCATED);
    s->offset_bmap = get_le32(s->header + H_OFFSET_BMAP);
    s->offset_data = get_le32(s->header + H_OFFSET_DATA);
    s->disk_size = (get_le64(s->header + H_DISK_SIZE) + 511) & ~(uint64_t)511;
    if (!vdi_check_layout(s, (uint64_t)file_size, errp)) {
        return FALSE;
    }
    /* Bounded by the file size (checked above). */
    map_bytes = (uint64_t)s->blocks_in_image * 4;
    s->bmap = g_try_malloc(MAX(map_bytes, 4));
    if (!s->bmap) {
        FAIL("Node '%s': vdi: cannot allocate %" PRIu64 " bytes for the "
             "block map", node->node_name, map_bytes);
    }
    ret = bd_child_pread(s->file, s->offset_bmap, map_bytes, s->bmap, 0);
    if (ret < 0) {
        FAIL("Could not read VDI block map: %s", g_strerror(-ret));
    }
    for (uint64_t i = 0; i < s->blocks_in_image; i++) {
        s->bmap[i] = get_le32((const uint8_t *)&s->bmap[i]);
    }
    return vdi_check_map(s, (uint64_t)file_size, errp);
}

static gboolean vdi_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(VdiOptions) o = { 0 };
    VdiState *s = g_new0(VdiState, 1);

    bd_schema_decode(vdi_options, options, &o);
    bd_mutex_init(&s->alloc_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !vdi_load(node, s, errp)) {
        vdi_close(node);
        return FALSE;
    }
    bd_node_set_size(node, s->disk_size);
    return TRUE;
}

static void vdi_query_image_info(BdNode *node, GVariantDict *image)
{
    VdiState *s = node->opaque;

    g_variant_dict_insert(image, "cluster-size", "x", (gint64)s->block_size);
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
}

/* --- blockdev-create (BlockdevCreateOptionsVdi) --- */

typedef enum {
    VDI_PREALLOC_OFF, VDI_PREALLOC_METADATA, VDI_PREALLOC_FALLOC,
    VDI_PREALLOC_FULL,
} VdiPrealloc;

static const char *const prealloc_values[] = {
    [VDI_PREALLOC_OFF] = "off",
    [VDI_PREALLOC_METADATA] = "metadata",
    [VDI_PREALLOC_FALLOC] = "falloc",
    [VDI_PREALLOC_FULL] = "full",
    NULL };
static const BdSchemaType prealloc_type = {
    .name = "PreallocMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = prealloc_values };

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    VdiPrealloc preallocation;
} VdiCreateOptions;

static const BdSchemaField vdi_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE,
      BD_AT(VdiCreateOptions, file) },
    { "size", &bd_schema_size, FALSE, BD_AT(VdiCreateOptions, size) },
    { "preallocation", &prealloc_type, TRUE,
      BD_AT(VdiCreateOptions, preallocation), .def.i = VDI_PREALLOC_OFF },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(VdiCreateOptions, vdi_create_options)

/* Write a fresh image onto 'file' (write and resize permission held by
 * the job): header, block map (identity for static), and for static
 * the data area as a hole of the full size. */
static gboolean vdi_write_image(BdNode *file, uint64_t size,
                                gboolean is_static, GError **errp)
{
    uint32_t blocks = (uint32_t)((size + VDI_BLOCK_SIZE - 1) / VDI_BLOCK_SIZE);
    uint64_t map_bytes = ((uint64_t)blocks * 4 + 511) & ~(uint64_t)511;
    uint64_t data_off = VDI_HEADER_SIZE + map_bytes;
    g_autofree uint8_t *buf = g_try_malloc0(data_off);
    uint8_t *h = buf;
    int ret;

    if (!buf) {
        FAIL("Could not allocate the VDI block map: %s", g_strerror(ENOMEM));
    }
    memcpy(h, VDI_TEXT, strlen(VDI_TEXT));
    put_le32(h + H_SIGNATURE, VDI_SIGNATURE);
    put_le32(h + H_VERSION, VDI_VERSION_1_1);
    put_le32(h + H_HEADER_SIZE, 0x180);
    put_le32(h + H_IMAGE_TYPE, is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
    put_le32(h + H_OFFSET_BMAP, VDI_HEADER_SIZE);
    put_le32(h + H_OFFSET_DATA, (uint32_t)data_off);
    put_le32(h + H_SECTOR_SIZE, VDI_SECTOR_SIZE);
    put_le64(h + H_DISK_SIZE, size);
    put_le32(h + H_BLOCK_SIZE, VDI_BLOCK_SIZE);
    put_le32(h + H_BLOCKS_IN_IMAGE, blocks);
    put_le32(h + H_BLOCKS_ALLOCATED, is_static ? blocks : 0);
    bd_formats_uuid_generate(h + H_UUID_IMAGE);
    bd_formats_uuid_generate(h + H_UUID_LAST_SNAP);
    for (uint32_t i = 0; i < blocks; i++) {
        put_le32(buf + VDI_HEADER_SIZE + (uint64_t)i * 4,
                 is_static ? i : VDI_UNALLOCATED);
    }
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, data_off, buf, 0);
    }
    if (ret == 0 && is_static) {
        ret = bd_node_truncate(file, data_off +
                               (uint64_t)blocks * VDI_BLOCK_SIZE);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write VDI image: %s", g_strerror(-ret));
    }
    return TRUE;
}

static gboolean vdi_create(GVariant *options, GError **errp)
{
    g_auto(VdiCreateOptions) c = { 0 };
    BdNode *file;

    bd_schema_decode(vdi_create_options, options, &c);
    if (c.preallocation != VDI_PREALLOC_OFF &&
        c.preallocation != VDI_PREALLOC_METADATA) {
        FAIL("Preallocation mode not supported for vdi");
    }
    if (c.size > VDI_DISK_SIZE_MAX) {
        FAIL("Unsupported VDI image size (size is 0x%" PRIx64 ", max "
             "supported is 0x%" PRIx64 ")", (uint64_t)c.size,
             VDI_DISK_SIZE_MAX);
    }
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    return vdi_write_image(file, c.size,
                           c.preallocation == VDI_PREALLOC_METADATA, errp);
}

const BdDriver bd_vdi_driver = {
    .name = "vdi",
    .options = vdi_options,
    .is_format = TRUE,
    .open = vdi_open,
    .close = vdi_close,
    .reopen_prepare = bd_reopen_prepare_fixed,
    .pread = vdi_pread,
    .pread_to_fd = vdi_pread_to_fd,
    .pwrite = vdi_pwrite,
    .pwrite_zeroes = vdi_pwrite_zeroes,
    .block_status = vdi_block_status,
    .query_image_info = vdi_query_image_info,
    .create_options = vdi_create_options,
    .create = vdi_create,
};
