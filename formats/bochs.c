/* SPDX-License-Identifier: MIT */
/* The 'bochs' format driver: Bochs "growing" redolog disk images,
 * read-only (as QEMU).
 *
 * On disk (little endian): a 512-byte header (magic "Bochs Virtual HD
 * Image", type "Redolog", subtype "Growing", version 2.0 or the old
 * 1.0 whose disk size sits 4 bytes earlier), at the header's 'header'
 * offset the catalog (one uint32 per extent: the index of its slot, or
 * 0xffffffff for an extent never written), then the slots.  A slot is
 * the extent's bitmap (one bit per 512-byte sector, least significant
 * bit first; padded to whole sectors) followed by the extent's sectors.
 * A sector whose extent is not in the catalog, or whose bit is clear,
 * reads as zeroes.
 *
 *   [header][catalog][bitmap 0][extent 0][bitmap 1][extent 1] ...
 *
 * Thread model: open/close on the main thread, data callbacks on any
 * thread.  Nothing changes after open, so reads take no lock.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/node.h"
#include "formats/byteorder.h"

#define BOCHS_HEADER_SIZE   512
#define BOCHS_SECTOR        512u
#define BOCHS_VERSION       0x00020000u
#define BOCHS_VERSION_1     0x00010000u
#define BOCHS_UNALLOCATED   0xffffffffu
/* QEMU's limits: 1M catalog entries (bximage's largest, ~8 TB), extents
 * of 512 bytes to 8 MiB. */
#define BOCHS_CATALOG_MAX   0x100000u
#define BOCHS_EXTENT_MAX    0x800000u
/* Bitmap bytes of the largest extent. */
#define BOCHS_BITMAP_MAX    (BOCHS_EXTENT_MAX / BOCHS_SECTOR / 8)

/* Header field offsets. */
enum {
    H_MAGIC = 0, H_TYPE = 32, H_SUBTYPE = 48, H_VERSION = 64,
    H_HEADER = 68, H_CATALOG = 72, H_BITMAP = 76, H_EXTENT = 80,
    H_DISK = 88, H_DISK_V1 = 84,
};

typedef struct {
    BdChild *file;
    uint32_t *catalog;         /* host order; fixed after open */
    uint32_t catalog_size;
    uint64_t data_offset;      /* of slot 0 */
    uint32_t extent_size;
    uint64_t bitmap_bytes;     /* bitmap_blocks * 512 */
    uint64_t slot_size;        /* (bitmap_blocks + extent_blocks) * 512 */
} BochsState;

typedef struct {
    GVariant *file;
} BochsOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField bochs_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(BochsOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(BochsOptions, bochs_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* The fixed strings QEMU compares with strcmp: the text and its NUL. */
static gboolean header_is_bochs(const uint8_t *h)
{
    uint32_t version = get_le32(h + H_VERSION);

    return memcmp(h + H_MAGIC, "Bochs Virtual HD Image", 23) == 0 &&
           memcmp(h + H_TYPE, "Redolog", 8) == 0 &&
           memcmp(h + H_SUBTYPE, "Growing", 8) == 0 &&
           (version == BOCHS_VERSION || version == BOCHS_VERSION_1);
}

/* --- data path --- */

/* Where extent 'ei' lives: the file offset of its slot (its bitmap), or
 * 0 when the catalog does not map it. */
static uint64_t bochs_slot(BochsState *s, uint64_t ei)
{
    uint32_t e = ei < s->catalog_size ? s->catalog[ei] : BOCHS_UNALLOCATED;

    if (e == BOCHS_UNALLOCATED) {
        return 0;
    }
    return s->data_offset + (uint64_t)e * s->slot_size;
}

/* Read the bitmap bits of sectors [first, last] of the slot at 'slot'
 * into 'bm' (bm[0] holds sector first & ~7). */
static int bochs_read_bitmap(BochsState *s, uint64_t slot, uint64_t first,
                             uint64_t last, uint8_t *bm)
{
    return bd_child_pread(s->file, slot + first / 8,
                          last / 8 - first / 8 + 1, bm, 0);
}

static inline gboolean bit_set(const uint8_t *bm, uint64_t first,
                               uint64_t sector)
{
    uint64_t i = sector - (first & ~(uint64_t)7);

    return (bm[i / 8] >> (i % 8)) & 1;
}

/* [in, in+n) of the extent in the slot at 'slot' into 'p': runs of
 * present sectors in one read each, absent ones zeroed. */
static int bochs_read_extent(BochsState *s, uint64_t slot, uint64_t in,
                             uint64_t n, uint8_t *p)
{
    uint8_t bm[BOCHS_BITMAP_MAX];
    uint64_t first = in / BOCHS_SECTOR;
    uint64_t last = (in + n - 1) / BOCHS_SECTOR;
    int ret = bochs_read_bitmap(s, slot, first, last, bm);

    if (ret < 0) {
        return ret;
    }
    while (n) {
        uint64_t sec = in / BOCHS_SECTOR;
        gboolean present = bit_set(bm, first, sec);
        uint64_t end = sec + 1;
        uint64_t len;

        while (end <= last && bit_set(bm, first, end) == present) {
            end++;
        }
        len = MIN(n, end * BOCHS_SECTOR - in);
        if (present) {
            ret = bd_child_pread(s->file, slot + s->bitmap_bytes + in, len,
                                 p, 0);
            if (ret < 0) {
                return ret;
            }
        } else {
            memset(p, 0, len);
        }
        in += len;
        n -= len;
        p += len;
    }
    return 0;
}

static int bochs_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                       void *buf, int flags)
{
    BochsState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t ei = offset / s->extent_size;
        uint64_t in = offset % s->extent_size;
        uint64_t n = MIN(bytes, s->extent_size - in);
        uint64_t slot = bochs_slot(s, ei);

        if (!slot) {
            memset(p, 0, n);
        } else {
            int ret = bochs_read_extent(s, slot, in, n, p);
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

/* Present sectors are data at their place in the file; absent ones
 * and unmapped extents (a run of them at once) read as zeroes.  QEMU
 * 7.2 reports the whole image as data. */
static int bochs_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                              uint64_t *pnum, uint64_t *map, BdNode **file)
{
    BochsState *s = node->opaque;
    uint64_t ei = offset / s->extent_size;
    uint64_t in = offset % s->extent_size;
    uint64_t n = MIN(bytes, s->extent_size - in);
    uint64_t slot = bochs_slot(s, ei);
    uint8_t bm[BOCHS_BITMAP_MAX];
    uint64_t first, last, end;
    gboolean present;
    int ret;

    if (!slot) {
        while (n < bytes && !bochs_slot(s, ++ei)) {
            n = MIN(bytes, n + s->extent_size);
        }
        *pnum = n;
        return BD_BLOCK_ZERO;
    }
    first = in / BOCHS_SECTOR;
    last = (in + n - 1) / BOCHS_SECTOR;
    ret = bochs_read_bitmap(s, slot, first, last, bm);
    if (ret < 0) {
        return ret;
    }
    present = bit_set(bm, first, first);
    for (end = first + 1; end <= last; end++) {
        if (bit_set(bm, first, end) != present) {
            break;
        }
    }
    *pnum = MIN(n, end * BOCHS_SECTOR - in);
    if (!present) {
        return BD_BLOCK_ZERO;
    }
    *map = slot + s->bitmap_bytes + in;
    *file = s->file->node;
    return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
}

/* --- open --- */

/* QEMU's checks of the geometry, in its order and words. */
static gboolean bochs_check_geometry(BochsState *s, uint64_t disk_sectors,
                                     GError **errp)
{
    if (s->extent_size < BOCHS_SECTOR) {
        FAIL("Extent size must be at least 512");
    }
    if (s->extent_size & (s->extent_size - 1)) {
        FAIL("Extent size %" PRIu32 " is not a power of two",
             s->extent_size);
    }
    if (s->extent_size > BOCHS_EXTENT_MAX) {
        FAIL("Extent size %" PRIu32 " is too large", s->extent_size);
    }
    if (s->catalog_size < (disk_sectors + s->extent_size / BOCHS_SECTOR - 1) /
                          (s->extent_size / BOCHS_SECTOR)) {
        FAIL("Catalog size is too small for this disk size");
    }
    return TRUE;
}

/* Beyond QEMU: every bitmap covers its extent, and every slot the disk
 * reads lies in the file.  QEMU 7.2 opens such images and reads the
 * bits from the extent's data, or zeroes past the end of the file. */
static gboolean bochs_check_slots(BdNode *node, BochsState *s,
                                  uint64_t file_size, GError **errp)
{
    uint64_t extents = (node->size + s->extent_size - 1) / s->extent_size;

    if (s->bitmap_bytes * 8 < s->extent_size / BOCHS_SECTOR) {
        FAIL("Node '%s': bochs: the bitmap (%" PRIu64 " bytes) is too small "
             "for an extent of %" PRIu32 " bytes", node->node_name,
             s->bitmap_bytes, s->extent_size);
    }
    for (uint64_t ei = 0; ei < extents; ei++) {
        uint64_t slot = bochs_slot(s, ei);
        uint64_t need = MIN(s->extent_size,
                            node->size - ei * s->extent_size);

        if (slot && slot + s->bitmap_bytes + need > file_size) {
            FAIL("Node '%s': bochs: catalog entry %" PRIu64 " names extent "
                 "data at offset 0x%" PRIx64 ", beyond the end of the file "
                 "(%" PRIu64 " bytes); the image is truncated or corrupt",
                 node->node_name, ei, slot, file_size);
        }
    }
    return TRUE;
}

static gboolean bochs_load(BdNode *node, BochsState *s, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    uint8_t h[BOCHS_HEADER_SIZE];
    uint64_t catalog_offset, disk_sectors;
    uint32_t version, bitmap;
    int ret;

    if (file_size < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-file_size));
    }
    if (file_size < BOCHS_HEADER_SIZE) {
        FAIL("Node '%s': bochs: the file (%" PRId64 " bytes) is too short "
             "for a Bochs header (%d bytes)", node->node_name, file_size,
             BOCHS_HEADER_SIZE);
    }
    ret = bd_child_pread(s->file, 0, sizeof(h), h, 0);
    if (ret < 0) {
        FAIL("Could not read Bochs header: %s", g_strerror(-ret));
    }
    if (!header_is_bochs(h)) {
        FAIL("Image not in Bochs format");
    }
    version = get_le32(h + H_VERSION);
    disk_sectors = get_le64(h + (version == BOCHS_VERSION_1 ? H_DISK_V1
                                                            : H_DISK)) /
                   BOCHS_SECTOR;
    s->catalog_size = get_le32(h + H_CATALOG);
    if (s->catalog_size > BOCHS_CATALOG_MAX) {
        FAIL("Catalog size is too large");
    }
    catalog_offset = get_le32(h + H_HEADER);
    if (catalog_offset + (uint64_t)s->catalog_size * 4 > (uint64_t)file_size) {
        FAIL("Node '%s': bochs: catalog (%" PRIu32 " entries at 0x%" PRIx64
             ") extends beyond the end of the file (%" PRId64 " bytes); the "
             "image is truncated", node->node_name, s->catalog_size,
             catalog_offset, file_size);
    }
    /* At most 4 MiB (the limit above). */
    s->catalog = g_new(uint32_t, MAX(s->catalog_size, 1));
    ret = bd_child_pread(s->file, catalog_offset,
                         (uint64_t)s->catalog_size * 4, s->catalog, 0);
    if (ret < 0) {
        FAIL("Could not read Bochs catalog: %s", g_strerror(-ret));
    }
    for (uint32_t i = 0; i < s->catalog_size; i++) {
        s->catalog[i] = get_le32((const uint8_t *)&s->catalog[i]);
    }
    /* As QEMU, in 32 bits: a bitmap size of 0 wraps to a huge bitmap. */
    bitmap = get_le32(h + H_BITMAP);
    s->extent_size = get_le32(h + H_EXTENT);
    s->data_offset = catalog_offset + (uint64_t)s->catalog_size * 4;
    s->bitmap_bytes = (1 + (uint64_t)((bitmap - 1) / BOCHS_SECTOR)) *
                      BOCHS_SECTOR;
    s->slot_size = s->bitmap_bytes +
                   (1 + (uint64_t)((s->extent_size - 1) / BOCHS_SECTOR)) *
                   BOCHS_SECTOR;
    if (!bochs_check_geometry(s, disk_sectors, errp)) {
        return FALSE;
    }
    bd_node_set_size(node, disk_sectors * BOCHS_SECTOR);
    return bochs_check_slots(node, s, (uint64_t)file_size, errp);
}

static void bochs_close(BdNode *node)
{
    BochsState *s = node->opaque;

    if (!s) {
        return;
    }
    g_free(s->catalog);
    g_free(s);
    node->opaque = NULL;
}

static gboolean bochs_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(BochsOptions) o = { 0 };
    BochsState *s;

    /* QEMU's bdrv_apply_auto_read_only(), before the file is opened. */
    if (!node->read_only) {
        if (!node->auto_read_only) {
            FAIL("Image is read-only");
        }
        node->read_only = TRUE;
    }
    bd_schema_decode(bochs_options, options, &o);
    s = g_new0(BochsState, 1);
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !bochs_load(node, s, errp)) {
        bochs_close(node);
        return FALSE;
    }
    return TRUE;
}

/* No sub-sector I/O, as QEMU. */
static void bochs_refresh_limits(BdNode *node)
{
    node->request_alignment = MAX(node->request_alignment, BOCHS_SECTOR);
}

const BdDriver bd_bochs_driver = {
    .name = "bochs",
    .options = bochs_options,
    .is_format = TRUE,
    .open = bochs_open,
    .close = bochs_close,
    .pread = bochs_pread,
    .block_status = bochs_block_status,
    .refresh_limits = bochs_refresh_limits,
};
