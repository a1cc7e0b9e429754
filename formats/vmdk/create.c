/* SPDX-License-Identifier: MIT */
/* blockdev-create for vmdk (BlockdevCreateOptionsVmdk): the one-file
 * subformats monolithicSparse and streamOptimized, laid out as qemu-img
 * lays them out:
 *
 *   sector 0        header
 *   sector 1..20    embedded descriptor
 *   sector 21       redundant grain directory, then its grain tables
 *   then            grain directory, then its grain tables
 *   rounded up to a grain: the first grain
 *
 * All grain tables exist from the start (zeroes), so that a write only
 * ever appends a grain and fills in two entries.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/create-util.h"
#include "formats/vmdk/vmdk.h"

#define GRANULARITY     128u            /* sectors: 64 KiB grains */
#define NUM_GTES        512u
#define DESC_SECTORS    20u
/* A sparse extent's grain table entries are 32-bit sectors: 2 TiB. */
#define SPARSE_MAX      (2ull << 40)

typedef enum {
    SUB_MONOLITHIC_SPARSE, SUB_MONOLITHIC_FLAT, SUB_TWO_GB_SPARSE,
    SUB_TWO_GB_FLAT, SUB_STREAM_OPTIMIZED,
} VmdkSubformat;

static const char *const subformat_values[] = {
    [SUB_MONOLITHIC_SPARSE] = "monolithicSparse",
    [SUB_MONOLITHIC_FLAT] = "monolithicFlat",
    [SUB_TWO_GB_SPARSE] = "twoGbMaxExtentSparse",
    [SUB_TWO_GB_FLAT] = "twoGbMaxExtentFlat",
    [SUB_STREAM_OPTIMIZED] = "streamOptimized",
    NULL };
static const BdSchemaType subformat_type = {
    .name = "BlockdevVmdkSubformat", .kind = BD_SCHEMA_ENUM,
    .enum_values = subformat_values };

typedef enum { AD_IDE, AD_BUSLOGIC, AD_LSILOGIC, AD_LEGACY_ESX } VmdkAdapter;
static const char *const adapter_values[] = {
    [AD_IDE] = "ide", [AD_BUSLOGIC] = "buslogic",
    [AD_LSILOGIC] = "lsilogic", [AD_LEGACY_ESX] = "legacyESX", NULL };
static const BdSchemaType adapter_type = {
    .name = "BlockdevVmdkAdapterType", .kind = BD_SCHEMA_ENUM,
    .enum_values = adapter_values };

static const BdSchemaType extents_type = {
    .name = "[BlockdevRef]", .kind = BD_SCHEMA_LIST,
    .element = &bd_schema_blockdev_ref };

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    GVariant *extents;
    VmdkSubformat subformat;
    const char *backing_file;
    VmdkAdapter adapter;
    const char *hwversion;
    const char *toolsversion;
    gboolean zeroed_grain;
} VmdkCreateOptions;

#define C(f) BD_AT(VmdkCreateOptions, f)
const BdSchemaField vmdk_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, C(file) },
    { "size", &bd_schema_size, FALSE, C(size) },
    { "extents", &extents_type, TRUE, C(extents) },
    { "subformat", &subformat_type, TRUE, C(subformat),
      .def.i = SUB_MONOLITHIC_SPARSE },
    { "backing-file", &bd_schema_str, TRUE, C(backing_file) },
    { "adapter-type", &adapter_type, TRUE, C(adapter), .def.i = AD_IDE },
    { "hwversion", &bd_schema_str, TRUE, C(hwversion) },
    { "toolsversion", &bd_schema_str, TRUE, C(toolsversion) },
    { "zeroed-grain", &bd_schema_bool, TRUE, C(zeroed_grain) },
    { NULL } };
#undef C
BD_SCHEMA_DEFINE_AUTO(VmdkCreateOptions, vmdk_create_options)

static char *make_descriptor(const VmdkCreateOptions *c, const char *fname,
                             uint64_t sectors)
{
    uint32_t heads = c->adapter == AD_IDE ? 16 : 255;
    uint32_t cid = g_random_int();

    return g_strdup_printf(
        "# Disk DescriptorFile\n"
        "version=1\n"
        "CID=%08" PRIx32 "\n"
        "parentCID=ffffffff\n"
        "createType=\"%s\"\n"
        "\n"
        "# Extent description\n"
        "RW %" PRIu64 " SPARSE \"%s\"\n"
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        "ddb.virtualHWVersion = \"%s\"\n"
        "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
        "ddb.geometry.heads = \"%" PRIu32 "\"\n"
        "ddb.geometry.sectors = \"63\"\n"
        "ddb.adapterType = \"%s\"\n"
        "ddb.toolsVersion = \"%s\"\n",
        cid, subformat_values[c->subformat], sectors, fname,
        c->hwversion ? c->hwversion : "4",
        sectors / ((uint64_t)63 * heads), heads, adapter_values[c->adapter],
        c->toolsversion ? c->toolsversion : "2147483647");
}

gboolean vmdk_create(GVariant *options, GError **errp);

gboolean vmdk_create(GVariant *options, GError **errp)
{
    g_auto(VmdkCreateOptions) c = { 0 };
    g_autofree char *desc = NULL, *fname = NULL;
    g_autofree uint8_t *meta = NULL;
    gboolean compressed;
    uint64_t sectors, l1_size, gd_sectors, gt_sectors, rgd, gd, grain_off;
    uint32_t flags;
    BdNode *file;
    uint8_t *h;
    int ret;

    bd_schema_decode(vmdk_create_options, options, &c);
    if (c.subformat != SUB_MONOLITHIC_SPARSE &&
        c.subformat != SUB_STREAM_OPTIMIZED) {
        VMDK_FAIL("blockd creates vmdk images of the subformats "
                  "monolithicSparse and streamOptimized only, not '%s'",
                  subformat_values[c.subformat]);
    }
    if (c.extents && g_variant_n_children(c.extents)) {
        VMDK_FAIL("The subformat '%s' takes no extents",
                  subformat_values[c.subformat]);
    }
    if (c.backing_file) {
        VMDK_FAIL("blockd does not create vmdk images with a backing file "
                  "yet (use qemu-img create -b)");
    }
    if (c.size > SPARSE_MAX) {
        VMDK_FAIL("Could not create vmdk image: the size %" PRIu64 " is "
                  "larger than a sparse extent's 2 TiB", (uint64_t)c.size);
    }
    compressed = c.subformat == SUB_STREAM_OPTIMIZED;
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    sectors = (c.size + VMDK_SECTOR - 1) / VMDK_SECTOR;
    l1_size = (sectors + (uint64_t)NUM_GTES * GRANULARITY - 1) /
              ((uint64_t)NUM_GTES * GRANULARITY);
    gd_sectors = (l1_size * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
    gt_sectors = NUM_GTES * 4 / VMDK_SECTOR;
    rgd = 1 + DESC_SECTORS;
    gd = rgd + gd_sectors + l1_size * gt_sectors;
    grain_off = (gd + gd_sectors + l1_size * gt_sectors + GRANULARITY - 1) /
                GRANULARITY * GRANULARITY;

    fname = file->filename ? g_path_get_basename(file->filename)
                           : g_strdup(file->node_name);
    desc = make_descriptor(&c, fname, sectors);
    if (strlen(desc) > DESC_SECTORS * VMDK_SECTOR) {
        VMDK_FAIL("Could not create vmdk image: the descriptor does not fit "
                  "in %u sectors", DESC_SECTORS);
    }

    /* Header, descriptor and both directories with their tables, in
     * one buffer (at most 2 TiB / 32 MiB * 2 KiB = 128 KiB of tables
     * per directory). */
    meta = g_try_malloc0(grain_off * VMDK_SECTOR);
    if (!meta) {
        VMDK_FAIL("Could not create vmdk image: %s", g_strerror(ENOMEM));
    }
    h = meta;
    flags = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD;
    if (c.zeroed_grain) {
        flags |= VMDK4_FLAG_ZERO_GRAIN;
    }
    if (compressed) {
        flags |= VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER;
    }
    memcpy(h, VMDK4_MAGIC, 4);
    vmdk_put_le32(h + VH_VERSION, compressed ? 3 : c.zeroed_grain ? 2 : 1);
    vmdk_put_le32(h + VH_FLAGS, flags);
    vmdk_put_le64(h + VH_CAPACITY, sectors);
    vmdk_put_le64(h + VH_GRANULARITY, GRANULARITY);
    vmdk_put_le64(h + VH_DESC_OFFSET, 1);
    vmdk_put_le64(h + VH_DESC_SIZE, DESC_SECTORS);
    vmdk_put_le32(h + VH_NUM_GTES, NUM_GTES);
    vmdk_put_le64(h + VH_RGD_OFFSET, rgd);
    vmdk_put_le64(h + VH_GD_OFFSET, gd);
    vmdk_put_le64(h + VH_GRAIN_OFFSET, grain_off);
    memcpy(h + VH_CHECK_BYTES, "\n \r\n", 4);
    if (compressed) {
        h[VH_COMPRESS] = VMDK4_COMPRESS_DEFLATE;
    }
    memcpy(meta + VMDK_SECTOR, desc, strlen(desc));
    for (uint64_t i = 0; i < l1_size; i++) {
        vmdk_put_le32(meta + rgd * VMDK_SECTOR + i * 4,
                      (uint32_t)(rgd + gd_sectors + i * gt_sectors));
        vmdk_put_le32(meta + gd * VMDK_SECTOR + i * 4,
                      (uint32_t)(gd + gd_sectors + i * gt_sectors));
    }
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, grain_off * VMDK_SECTOR, meta, 0);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        VMDK_FAIL("Could not write vmdk image: %s", g_strerror(-ret));
    }
    return TRUE;
}
