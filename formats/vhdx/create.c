/* SPDX-License-Identifier: MIT */
/* blockdev-create for vhdx (BlockdevCreateOptionsVhdx), laid out as
 * QEMU does: identifier, two headers, two region tables, the log at
 * 1 MiB, then the BAT and the metadata region, then (fixed) the
 * payload blocks. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/create-util.h"
#include "formats/vhdx/vhdx.h"

typedef enum { VHDX_SUB_DYNAMIC, VHDX_SUB_FIXED } VhdxSubformat;

static const char *const subformat_values[] = {
    [VHDX_SUB_DYNAMIC] = "dynamic",
    [VHDX_SUB_FIXED] = "fixed",
    NULL };
static const BdSchemaType subformat_type = {
    .name = "BlockdevVhdxSubformat", .kind = BD_SCHEMA_ENUM,
    .enum_values = subformat_values };

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    guint64 log_size;
    guint64 block_size;
    gboolean has_block_size;
    VhdxSubformat subformat;
    gboolean block_state_zero;
} VhdxCreateOptions;

#define C(f) BD_AT(VhdxCreateOptions, f)
const BdSchemaField vhdx_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, C(file) },
    { "size", &bd_schema_size, FALSE, C(size) },
    { "log-size", &bd_schema_size, TRUE, C(log_size), .def.u = MiB_ },
    { "block-size", &bd_schema_size, TRUE, C(block_size),
      BD_HAS(VhdxCreateOptions, block_size) },
    { "subformat", &subformat_type, TRUE, C(subformat),
      .def.i = VHDX_SUB_DYNAMIC },
    { "block-state-zero", &bd_schema_bool, TRUE, C(block_state_zero),
      .def.i = 1 },
    { NULL } };
#undef C
BD_SCHEMA_DEFINE_AUTO(VhdxCreateOptions, vhdx_create_options)

static const uint8_t guid_bat[16] = {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
static const uint8_t guid_metadata[16] = {
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
    0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
/* Metadata items: GUID, offset in the region, length, flags. */
static const struct {
    uint8_t guid[16];
    uint32_t off, len, flags;
} items[] = {
    { { 0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
        0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b }, 65536, 8, 4 },
    { { 0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
        0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 }, 65544, 8, 6 },
    { { 0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
        0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 }, 65552, 16, 6 },
    { { 0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
        0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f }, 65568, 4, 6 },
    { { 0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
        0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 }, 65572, 4, 6 },
};

/* QEMU's default block size by image size. */
static uint64_t default_block_size(uint64_t size)
{
    if (size > 32 * 1024 * 1024 * MiB_) {
        return 64 * MiB_;
    } else if (size > 100 * 1024 * MiB_) {
        return 32 * MiB_;
    } else if (size > 1024 * MiB_) {
        return 16 * MiB_;
    }
    return 8 * MiB_;
}

static gboolean check_options(const VhdxCreateOptions *c, GError **errp)
{
    if (c->size > VHDX_MAX_SIZE) {
        FAIL("Image size too large; max of 64TB");
    }
    if (c->log_size > UINT32_MAX) {
        FAIL("Log size must be smaller than 4 GB");
    }
    if (c->log_size < MiB_ || c->log_size % MiB_) {
        FAIL("Log size must be a multiple of 1 MB");
    }
    if (c->has_block_size) {
        if (c->block_size < MiB_ || c->block_size % MiB_) {
            FAIL("Block size must be a multiple of 1 MB");
        }
        if (c->block_size & (c->block_size - 1)) {
            FAIL("Block size must be a power of two");
        }
        if (c->block_size > VHDX_MAX_BLOCK) {
            FAIL("Block size must not exceed %u", VHDX_MAX_BLOCK);
        }
    }
    return TRUE;
}

/* The first MiB: identifier, headers, region tables. */
static void build_head(uint8_t *m, uint64_t log_size, uint64_t bat_off,
                       uint64_t bat_len, uint64_t meta_off)
{
    static const char creator[] = "blockd";
    uint8_t *h1 = m + VHDX_HEADER1_OFFSET, *h2 = m + VHDX_HEADER2_OFFSET;
    uint8_t *r = m + VHDX_REGION1_OFFSET;
    uint64_t seq = g_random_int() | 1;

    memcpy(m, "vhdxfile", 8);
    for (gsize i = 0; i < sizeof(creator) - 1; i++) {
        m[8 + 2 * i] = (uint8_t)creator[i];
    }
    memcpy(h1, "head", 4);
    put_le64(h1 + HD_SEQ, seq);
    bd_formats_uuid_generate(h1 + HD_FILE_GUID);
    bd_formats_uuid_generate(h1 + HD_DATA_GUID);
    put_le16(h1 + HD_VERSION, 1);
    put_le32(h1 + HD_LOG_LENGTH, (uint32_t)log_size);
    put_le64(h1 + HD_LOG_OFFSET, MiB_);
    memcpy(h2, h1, VHDX_HEADER_SIZE);
    put_le64(h2 + HD_SEQ, seq + 1);
    put_le32(h1 + HD_CSUM, vhdx_checksum(h1, VHDX_HEADER_SIZE, HD_CSUM));
    put_le32(h2 + HD_CSUM, vhdx_checksum(h2, VHDX_HEADER_SIZE, HD_CSUM));

    memcpy(r, "regi", 4);
    put_le32(r + 8, 2);
    memcpy(r + 16, guid_bat, 16);
    put_le64(r + 32, bat_off);
    put_le32(r + 40, (uint32_t)bat_len);
    put_le32(r + 44, 1);
    memcpy(r + 48, guid_metadata, 16);
    put_le64(r + 64, meta_off);
    put_le32(r + 72, (uint32_t)MiB_);
    put_le32(r + 76, 1);
    put_le32(r + 4, vhdx_checksum(r, VHDX_REGION_SIZE, 4));
    memcpy(m + VHDX_REGION2_OFFSET, r, VHDX_REGION_SIZE);
}

/* The metadata table and its items (the region's first 64 KiB + 64). */
static void build_metadata(uint8_t *m, uint64_t size, uint64_t bs,
                           gboolean fixed)
{
    memcpy(m, "metadata", 8);
    put_le16(m + 10, G_N_ELEMENTS(items));
    for (gsize i = 0; i < G_N_ELEMENTS(items); i++) {
        uint8_t *e = m + 32 + 32 * i;
        memcpy(e, items[i].guid, 16);
        put_le32(e + 16, items[i].off);
        put_le32(e + 20, items[i].len);
        put_le32(e + 24, items[i].flags);
    }
    put_le32(m + 65536, (uint32_t)bs);
    put_le32(m + 65540, fixed ? 1 : 0);
    put_le64(m + 65544, size);
    bd_formats_uuid_generate(m + 65552);
    put_le32(m + 65568, 512);
    put_le32(m + 65572, 512);
}

gboolean vhdx_create(GVariant *options, GError **errp)
{
    g_auto(VhdxCreateOptions) c = { 0 };
    g_autofree uint8_t *head = NULL, *meta = NULL, *bat = NULL;
    uint64_t bs, chunk, blocks, entries, region_entries, bat_len, bat_off;
    uint64_t meta_off, end;
    gboolean fixed;
    BdNode *file;
    int ret;

    bd_schema_decode(vhdx_create_options, options, &c);
    if (!check_options(&c, errp)) {
        return FALSE;
    }
    fixed = c.subformat == VHDX_SUB_FIXED;
    bs = c.has_block_size ? c.block_size : default_block_size(c.size);
    chunk = ((uint64_t)1 << 23) * 512 / bs;
    blocks = (c.size + bs - 1) / bs;
    entries = blocks ? blocks + (blocks - 1) / chunk : 0;
    /* The BAT region's size.  For a size-0 image QEMU counts its BAT
     * entries in 32 bits, where "blocks - 1" wraps, and its open wants
     * a region that large (qemu-img makes one: 64 MiB with 8 MiB
     * blocks); the same here, so that QEMU opens the image. */
    region_entries = blocks ? entries : UINT32_MAX / chunk;
    bat_len = MAX((region_entries * 8 + MiB_ - 1) & ~(MiB_ - 1), MiB_);
    bat_off = MiB_ + c.log_size;
    meta_off = bat_off + bat_len;
    end = meta_off + MiB_;
    head = g_malloc0(MiB_);
    meta = g_malloc0(VHDX_METADATA_TABLE_SIZE + 128);
    bat = g_try_malloc0(MAX(entries * 8, 8));
    if (!bat) {
        FAIL("Could not allocate the BAT (%" PRIu64 " entries)", entries);
    }
    build_head(head, c.log_size, bat_off, bat_len, meta_off);
    build_metadata(meta, c.size, bs, fixed);
    for (uint64_t b = 0; b < blocks; b++) {
        uint64_t e = fixed ? (end + b * bs) | PAYLOAD_FULLY_PRESENT
                     : c.block_state_zero ? PAYLOAD_ZERO
                     : PAYLOAD_NOT_PRESENT;
        put_le64(bat + 8 * (b + b / chunk), e);
    }
    if (fixed) {
        end += blocks * bs;
    }
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_truncate(file, end);
    }
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, MiB_, head, 0);
    }
    if (ret == 0) {
        ret = bd_node_pwrite(file, meta_off, VHDX_METADATA_TABLE_SIZE + 128,
                             meta, 0);
    }
    if (ret == 0 && entries) {
        ret = bd_node_pwrite(file, bat_off, entries * 8, bat, 0);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write VHDX image: %s", g_strerror(-ret));
    }
    return TRUE;
}
