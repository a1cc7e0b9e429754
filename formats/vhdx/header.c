/* SPDX-License-Identifier: MIT */
/* vhdx metadata at open: the file identifier, the two headers (the
 * current one by sequence number), the region table (BAT and metadata
 * regions), the metadata items and the BAT, each checked against the
 * file before it is trusted; and the header update. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "formats/create-util.h"
#include "formats/vhdx/vhdx.h"

static const uint8_t guid_bat[16] = {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 };
static const uint8_t guid_metadata[16] = {
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
    0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e };
static const uint8_t guid_file_params[16] = {
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
    0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b };
static const uint8_t guid_disk_size[16] = {
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
    0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 };
static const uint8_t guid_page83[16] = {
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
    0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 };
static const uint8_t guid_logical_sector[16] = {
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
    0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f };
static const uint8_t guid_physical_sector[16] = {
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
    0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 };
static const uint8_t guid_parent_locator[16] = {
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
    0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c };

static const uint8_t guid_vhdx_locator[16] = {
    0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
    0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13 };
#define MAX_LOCATOR_SIZE (1u * 1024 * 1024)

/* [off, off+len) inside a file of 'file_len' bytes, without overflow. */
static gboolean in_file(uint64_t off, uint64_t len, int64_t file_len)
{
    return off <= (uint64_t)file_len && len <= (uint64_t)file_len - off;
}

static gboolean header_valid(const uint8_t *h)
{
    return memcmp(h, "head", 4) == 0 &&
           get_le32(h + HD_CSUM) == vhdx_checksum(h, VHDX_HEADER_SIZE,
                                                  HD_CSUM);
}

gboolean vhdx_load_headers(VhdxState *s, int64_t file_len, GError **errp)
{
    uint8_t ident[8];
    g_autofree uint8_t *h = g_malloc(2 * VHDX_HEADER_SIZE);
    gboolean ok[2];
    int ret;

    if (file_len < (int64_t)(VHDX_REGION2_OFFSET + VHDX_REGION_SIZE)) {
        NODE_FAIL("the file (%" PRId64 " bytes) is too short for the "
                  "headers and region tables", file_len);
    }
    ret = bd_child_pread(s->file, 0, 8, ident, 0);
    if (ret == 0) {
        ret = bd_child_pread(s->file, VHDX_HEADER1_OFFSET, VHDX_HEADER_SIZE,
                             h, 0);
    }
    if (ret == 0) {
        ret = bd_child_pread(s->file, VHDX_HEADER2_OFFSET, VHDX_HEADER_SIZE,
                             h + VHDX_HEADER_SIZE, 0);
    }
    if (ret < 0) {
        NODE_FAIL("cannot read the headers: %s", g_strerror(-ret));
    }
    if (memcmp(ident, "vhdxfile", 8) != 0) {
        NODE_FAIL("no 'vhdxfile' file identifier: not a VHDX image");
    }
    ok[0] = header_valid(h);
    ok[1] = header_valid(h + VHDX_HEADER_SIZE);
    if (!ok[0] && !ok[1]) {
        NODE_FAIL("both headers are invalid (bad signature or checksum)");
    }
    if (ok[0] && ok[1]) {
        uint64_t q0 = get_le64(h + HD_SEQ);
        uint64_t q1 = get_le64(h + VHDX_HEADER_SIZE + HD_SEQ);
        s->cur_slot = q1 > q0 ? 1 : 0;
    } else {
        s->cur_slot = ok[0] ? 0 : 1;
    }
    memcpy(s->header, h + s->cur_slot * VHDX_HEADER_SIZE, VHDX_HEADER_SIZE);
    if (get_le16(s->header + HD_VERSION) != 1) {
        NODE_FAIL("unsupported header version %u",
                  get_le16(s->header + HD_VERSION));
    }
    if (get_le16(s->header + HD_LOG_VERSION) != 0) {
        NODE_FAIL("unsupported log version %u",
                  get_le16(s->header + HD_LOG_VERSION));
    }
    s->log_offset = get_le64(s->header + HD_LOG_OFFSET);
    s->log_length = get_le32(s->header + HD_LOG_LENGTH);
    if (s->log_offset % MiB_ || s->log_offset < MiB_ ||
        s->log_length % MiB_) {
        NODE_FAIL("log at 0x%" PRIx64 " (0x%" PRIx32 " bytes) is not "
                  "1 MiB aligned", s->log_offset, s->log_length);
    }
    if (!in_file(s->log_offset, s->log_length, file_len)) {
        NODE_FAIL("log at 0x%" PRIx64 " (0x%" PRIx32 " bytes) is past the "
                  "end of the file (%" PRId64 " bytes)", s->log_offset,
                  s->log_length, file_len);
    }
    return TRUE;
}

static gboolean overlaps(uint64_t a, uint64_t alen, uint64_t b,
                         uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

static gboolean parse_region_table(VhdxState *s, const uint8_t *t,
                                   int64_t file_len, GError **errp)
{
    uint32_t n = get_le32(t + 8);
    gboolean have_bat = FALSE, have_meta = FALSE;

    if (n > VHDX_MAX_ENTRIES) {
        NODE_FAIL("region table has %" PRIu32 " entries (at most %u)", n,
                  VHDX_MAX_ENTRIES);
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = t + 16 + 32 * i;
        uint64_t off = get_le64(e + 16);
        uint32_t len = get_le32(e + 24);
        gboolean required = get_le32(e + 28) & 1;

        if (off % MiB_ || len % MiB_ || off < MiB_ || len == 0) {
            NODE_FAIL("region %" PRIu32 " at 0x%" PRIx64 " (0x%" PRIx32
                      " bytes) is not 1 MiB aligned", i, off, len);
        }
        if (!in_file(off, len, file_len)) {
            NODE_FAIL("region %" PRIu32 " (%s) at 0x%" PRIx64 " (0x%" PRIx32
                      " bytes) is past the end of the file (%" PRId64
                      " bytes)", i,
                      memcmp(e, guid_bat, 16) == 0 ? "BAT" :
                      memcmp(e, guid_metadata, 16) == 0 ? "metadata" :
                      "unknown", off, len, file_len);
        }
        if (s->log_length && overlaps(off, len, s->log_offset,
                                      s->log_length)) {
            NODE_FAIL("region %" PRIu32 " at 0x%" PRIx64 " overlaps the log",
                      i, off);
        }
        for (uint32_t j = 0; j < i; j++) {
            const uint8_t *o = t + 16 + 32 * j;
            if (overlaps(off, len, get_le64(o + 16), get_le32(o + 24))) {
                NODE_FAIL("regions %" PRIu32 " and %" PRIu32 " overlap", j,
                          i);
            }
        }
        if (memcmp(e, guid_bat, 16) == 0) {
            if (have_bat) {
                NODE_FAIL("two BAT regions");
            }
            have_bat = TRUE;
            s->bat_offset = off;
            s->bat_length = len;
        } else if (memcmp(e, guid_metadata, 16) == 0) {
            if (have_meta) {
                NODE_FAIL("two metadata regions");
            }
            have_meta = TRUE;
            s->meta_offset = off;
            s->meta_length = len;
        } else if (required) {
            NODE_FAIL("unknown required region %" PRIu32, i);
        }
    }
    if (!have_bat || !have_meta) {
        NODE_FAIL("the region table has no %s region",
                  have_bat ? "metadata" : "BAT");
    }
    return TRUE;
}

gboolean vhdx_load_regions(VhdxState *s, int64_t file_len, GError **errp)
{
    g_autofree uint8_t *t = g_malloc(VHDX_REGION_SIZE);
    int ret;

    ret = bd_child_pread(s->file, VHDX_REGION1_OFFSET, VHDX_REGION_SIZE, t,
                         0);
    if (ret < 0) {
        NODE_FAIL("cannot read the region table: %s", g_strerror(-ret));
    }
    if (memcmp(t, "regi", 4) != 0 ||
        get_le32(t + 4) != vhdx_checksum(t, VHDX_REGION_SIZE, 4)) {
        /* The second copy, as the specification allows. */
        ret = bd_child_pread(s->file, VHDX_REGION2_OFFSET, VHDX_REGION_SIZE,
                             t, 0);
        if (ret < 0) {
            NODE_FAIL("cannot read the region table: %s", g_strerror(-ret));
        }
        if (memcmp(t, "regi", 4) != 0 ||
            get_le32(t + 4) != vhdx_checksum(t, VHDX_REGION_SIZE, 4)) {
            NODE_FAIL("both region tables are invalid (bad signature or "
                      "checksum)");
        }
    }
    return parse_region_table(s, t, file_len, errp);
}

/* The item 'guid' of the metadata table 't' into 'out' ('len' bytes
 * exactly); FALSE with *found unset where it is absent. */
static gboolean meta_item(VhdxState *s, const uint8_t *t,
                          const uint8_t *guid, void *out, uint32_t len,
                          gboolean *found, GError **errp)
{
    uint16_t n = get_le16(t + 10);

    *found = FALSE;
    for (uint16_t i = 0; i < n; i++) {
        const uint8_t *e = t + 32 + 32 * i;
        uint32_t off = get_le32(e + 16);
        uint32_t ilen = get_le32(e + 20);
        int ret;

        if (memcmp(e, guid, 16) != 0) {
            continue;
        }
        if (ilen != len || off < VHDX_METADATA_TABLE_SIZE ||
            (uint64_t)off + len > s->meta_length) {
            NODE_FAIL("metadata item %u (offset 0x%" PRIx32 ", %" PRIu32
                      " bytes) is invalid", i, off, ilen);
        }
        ret = bd_child_pread(s->file, s->meta_offset + off, len, out, 0);
        if (ret < 0) {
            NODE_FAIL("cannot read metadata: %s", g_strerror(-ret));
        }
        *found = TRUE;
        return TRUE;
    }
    return TRUE;
}

static gboolean known_item(const uint8_t *g)
{
    const uint8_t *known[] = { guid_file_params, guid_disk_size, guid_page83,
                               guid_logical_sector, guid_physical_sector,
                               guid_parent_locator };

    for (gsize i = 0; i < G_N_ELEMENTS(known); i++) {
        if (memcmp(g, known[i], 16) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

/* A UTF-16LE string of 'len' bytes as UTF-8 (NULL if invalid). */
static char *utf16_string(const uint8_t *p, uint16_t len)
{
    g_autofree gunichar2 *w = g_new0(gunichar2, len / 2 + 1);

    for (uint16_t i = 0; i < len / 2; i++) {
        w[i] = get_le16(p + 2 * i);
    }
    return g_utf16_to_utf8(w, len / 2, NULL, NULL, NULL);
}

/* The parent locator item: the parent's path, relative_path first,
 * then absolute_win32_path, with '\\' made '/'. */
static gboolean parse_locator(VhdxState *s, const uint8_t *t, GError **errp)
{
    uint16_t n = get_le16(t + 10);
    g_autofree uint8_t *loc = NULL;
    g_autofree char *rel = NULL, *abs = NULL;
    uint32_t off = 0, len = 0;
    uint16_t count;
    int ret;

    for (uint16_t i = 0; i < n; i++) {
        const uint8_t *e = t + 32 + 32 * i;
        if (memcmp(e, guid_parent_locator, 16) == 0) {
            off = get_le32(e + 16);
            len = get_le32(e + 20);
            break;
        }
    }
    if (!len) {
        NODE_FAIL("differencing image without a parent locator");
    }
    if (len < 20 || len > MAX_LOCATOR_SIZE || off < VHDX_METADATA_TABLE_SIZE ||
        (uint64_t)off + len > s->meta_length) {
        NODE_FAIL("parent locator (offset 0x%" PRIx32 ", %" PRIu32
                  " bytes) is invalid", off, len);
    }
    loc = g_malloc(len);
    ret = bd_child_pread(s->file, s->meta_offset + off, len, loc, 0);
    if (ret < 0) {
        NODE_FAIL("cannot read the parent locator: %s", g_strerror(-ret));
    }
    if (memcmp(loc, guid_vhdx_locator, 16) != 0) {
        NODE_FAIL("unknown parent locator type");
    }
    count = get_le16(loc + 18);
    if (20 + 12 * (uint64_t)count > len) {
        NODE_FAIL("parent locator has %u entries, too many for its size",
                  count);
    }
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = loc + 20 + 12 * i;
        uint32_t ko = get_le32(e), vo = get_le32(e + 4);
        uint16_t kl = get_le16(e + 8), vl = get_le16(e + 10);
        g_autofree char *key = NULL;

        if ((uint64_t)ko + kl > len || (uint64_t)vo + vl > len) {
            NODE_FAIL("parent locator entry %u is outside the locator", i);
        }
        key = utf16_string(loc + ko, kl);
        if (!key) {
            continue;
        }
        if (strcmp(key, "relative_path") == 0 && !rel) {
            rel = utf16_string(loc + vo, vl);
        } else if (strcmp(key, "absolute_win32_path") == 0 && !abs) {
            abs = utf16_string(loc + vo, vl);
        }
    }
    if ((!rel || !*rel) && (!abs || !*abs)) {
        NODE_FAIL("the parent locator names no parent path");
    }
    s->parent_path = g_strdup(rel && *rel ? rel : abs);
    g_strdelimit(s->parent_path, "\\", '/');
    return TRUE;
}

gboolean vhdx_load_metadata(VhdxState *s, GError **errp)
{
    g_autofree uint8_t *t = g_malloc(VHDX_METADATA_TABLE_SIZE);
    uint8_t params[8], size[8], lss[4], pss[4];
    gboolean f1, f2, f3, f4, f5;
    uint16_t n;
    int ret;

    ret = bd_child_pread(s->file, s->meta_offset, VHDX_METADATA_TABLE_SIZE,
                         t, 0);
    if (ret < 0) {
        NODE_FAIL("cannot read the metadata table: %s", g_strerror(-ret));
    }
    if (memcmp(t, "metadata", 8) != 0) {
        NODE_FAIL("bad metadata table signature");
    }
    n = get_le16(t + 10);
    if (n > VHDX_MAX_ENTRIES) {
        NODE_FAIL("metadata table has %u entries (at most %u)", n,
                  VHDX_MAX_ENTRIES);
    }
    for (uint16_t i = 0; i < n; i++) {
        const uint8_t *e = t + 32 + 32 * i;
        if ((get_le32(e + 24) & 4) && !known_item(e)) {
            NODE_FAIL("unknown required metadata item %u", i);
        }
    }
    if (!meta_item(s, t, guid_file_params, params, 8, &f1, errp) ||
        !meta_item(s, t, guid_disk_size, size, 8, &f2, errp) ||
        !meta_item(s, t, guid_logical_sector, lss, 4, &f3, errp) ||
        !meta_item(s, t, guid_physical_sector, pss, 4, &f4, errp) ||
        !meta_item(s, t, guid_page83, s->page83, 16, &f5, errp)) {
        return FALSE;
    }
    if (!f1 || !f2 || !f3 || !f4 || !f5) {
        NODE_FAIL("required metadata item missing: %s",
                  !f1 ? "file parameters" : !f2 ? "virtual disk size" :
                  !f3 ? "logical sector size" :
                  !f4 ? "physical sector size" : "page 83 data");
    }
    s->block_size = get_le32(params);
    s->leave_allocated = get_le32(params + 4) & 1;
    s->size = get_le64(size);
    s->logical_sector = get_le32(lss);
    s->physical_sector = get_le32(pss);
    s->has_parent = (get_le32(params + 4) & 2) != 0;
    if (s->block_size < VHDX_MIN_BLOCK || s->block_size > VHDX_MAX_BLOCK ||
        (s->block_size & (s->block_size - 1))) {
        NODE_FAIL("invalid block size %" PRIu32, s->block_size);
    }
    if (s->logical_sector != 512 && s->logical_sector != 4096) {
        NODE_FAIL("invalid logical sector size %" PRIu32, s->logical_sector);
    }
    if (s->physical_sector != 512 && s->physical_sector != 4096) {
        NODE_FAIL("invalid physical sector size %" PRIu32,
                  s->physical_sector);
    }
    /* Size 0 is valid: qemu-img creates such images and QEMU opens them. */
    if (s->size > VHDX_MAX_SIZE || s->size % s->logical_sector) {
        NODE_FAIL("invalid virtual disk size %" PRIu64, s->size);
    }
    s->block_bits = (uint32_t)g_bit_nth_lsf(s->block_size, -1);
    s->chunk_ratio = ((uint64_t)1 << 23) * s->logical_sector / s->block_size;
    s->data_blocks = (s->size + s->block_size - 1) / s->block_size;
    if (s->has_parent) {
        uint64_t chunks = (s->data_blocks + s->chunk_ratio - 1) /
                          s->chunk_ratio;
        s->bat_entries = chunks * (s->chunk_ratio + 1);
        return parse_locator(s, t, errp);
    }
    s->bat_entries = s->data_blocks ?
        s->data_blocks + (s->data_blocks - 1) / s->chunk_ratio : 0;
    return TRUE;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* No two present blocks share file space (a write to one would change
 * the other). */
static gboolean check_blocks_apart(VhdxState *s, GError **errp)
{
    g_autofree uint64_t *offs = g_try_new(uint64_t, MAX(s->data_blocks, 1));
    uint64_t n = 0;

    if (!offs) {
        NODE_FAIL("cannot allocate memory to check the BAT");
    }
    for (uint64_t b = 0; b < s->data_blocks; b++) {
        uint64_t e = s->bat[bat_index(s, b)];
        if (BAT_STATE(e) == PAYLOAD_FULLY_PRESENT ||
            BAT_STATE(e) == PAYLOAD_PARTIALLY_PRESENT) {
            offs[n++] = BAT_OFFSET(e);
        }
    }
    if (n > 1) {
        qsort(offs, n, sizeof(*offs), cmp_u64);
    }
    for (uint64_t i = 1; i < n; i++) {
        if (offs[i] - offs[i - 1] < s->block_size) {
            NODE_FAIL("two BAT entries name overlapping blocks at 0x%" PRIx64
                      " and 0x%" PRIx64, offs[i - 1], offs[i]);
        }
    }
    return TRUE;
}

gboolean vhdx_load_bat(VhdxState *s, int64_t file_len, GError **errp)
{
    uint64_t bytes = s->bat_entries * 8;
    g_autofree uint8_t *raw = NULL;
    int ret;

    if (bytes > s->bat_length) {
        NODE_FAIL("BAT region (0x%" PRIx32 " bytes) too small for %" PRIu64
                  " entries", s->bat_length, s->bat_entries);
    }
    /* The region lies in the file (checked): the size is bounded. */
    /* One entry at least: a size-0 image has none, and g_try_new(0)
     * would say NULL as if allocation had failed. */
    raw = g_try_malloc(MAX(bytes, 8));
    s->bat = g_try_new(uint64_t, MAX(s->bat_entries, 1));
    if (!raw || !s->bat) {
        NODE_FAIL("cannot allocate %" PRIu64 " bytes for the BAT", bytes);
    }
    ret = bytes ? bd_child_pread(s->file, s->bat_offset, bytes, raw, 0) : 0;
    if (ret < 0) {
        NODE_FAIL("cannot read the BAT: %s", g_strerror(-ret));
    }
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        s->bat[i] = get_le64(raw + 8 * i);
    }
    for (uint64_t b = 0; b < s->data_blocks; b++) {
        uint64_t e = s->bat[bat_index(s, b)];
        uint64_t off = BAT_OFFSET(e);
        uint64_t used = MIN(s->block_size, s->size - (b << s->block_bits));

        switch (BAT_STATE(e)) {
        case PAYLOAD_NOT_PRESENT: case PAYLOAD_UNDEFINED:
        case PAYLOAD_ZERO: case PAYLOAD_UNMAPPED:
            break;
        case PAYLOAD_PARTIALLY_PRESENT:
            if (!s->has_parent) {
                NODE_FAIL("BAT entry %" PRIu64 " is partially present in an "
                          "image without a parent", b);
            }
            if (BAT_STATE(bitmap_get(s, b / s->chunk_ratio)) != 6) {
                NODE_FAIL("BAT entry %" PRIu64 " is partially present "
                          "without a sector bitmap", b);
            }
            /* fall through */
        case PAYLOAD_FULLY_PRESENT:
            if (off < MiB_ || !in_file(off, used, file_len)) {
                NODE_FAIL("BAT entry %" PRIu64 " names a block at 0x%" PRIx64
                          " past the end of the file (%" PRId64 " bytes)",
                          b, off, file_len);
            }
            if (overlaps(off, s->block_size, s->bat_offset, s->bat_length) ||
                overlaps(off, s->block_size, s->meta_offset,
                         s->meta_length) ||
                overlaps(off, s->block_size, s->log_offset, s->log_length)) {
                NODE_FAIL("BAT entry %" PRIu64 " names a block at 0x%" PRIx64
                          " that overlaps the image's metadata", b, off);
            }
            break;
        default:
            NODE_FAIL("BAT entry %" PRIu64 " has invalid state %u", b,
                      BAT_STATE(e));
        }
    }
    for (uint64_t c = 0; s->has_parent &&
         c * s->chunk_ratio < s->data_blocks; c++) {
        uint64_t e = bitmap_get(s, c);
        uint64_t off = BAT_OFFSET(e);

        if (BAT_STATE(e) != 0 && BAT_STATE(e) != 6) {
            NODE_FAIL("sector bitmap entry %" PRIu64 " has invalid state %u",
                      c, BAT_STATE(e));
        }
        if (BAT_STATE(e) == 6 &&
            (off < MiB_ || !in_file(off, MiB_, file_len))) {
            NODE_FAIL("sector bitmap %" PRIu64 " at 0x%" PRIx64 " is past "
                      "the end of the file (%" PRId64 " bytes)", c, off,
                      file_len);
        }
    }
    return check_blocks_apart(s, errp);
}

/* One header copy to the slot not current, then that is current. */
static int update_header_locked(VhdxState *s, gboolean new_guids,
                                const uint8_t *log_guid)
{
    uint8_t h[VHDX_HEADER_SIZE];
    int slot = 1 - s->cur_slot;
    int ret;

    memcpy(h, s->header, sizeof(h));
    put_le64(h + HD_SEQ, get_le64(h + HD_SEQ) + 1);
    if (new_guids) {
        bd_formats_uuid_generate(h + HD_FILE_GUID);
        bd_formats_uuid_generate(h + HD_DATA_GUID);
    }
    memcpy(h + HD_LOG_GUID, log_guid, 16);
    put_le32(h + HD_CSUM, vhdx_checksum(h, sizeof(h), HD_CSUM));
    ret = bd_child_pwrite(s->file, slot ? VHDX_HEADER2_OFFSET
                                        : VHDX_HEADER1_OFFSET,
                          sizeof(h), h, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        memcpy(s->header, h, sizeof(h));
        s->cur_slot = slot;
    }
    return ret;
}

/* Twice, as QEMU does, so both copies hold the new state. */
int vhdx_update_headers_locked(VhdxState *s, gboolean new_guids,
                               const uint8_t *log_guid)
{
    int ret = update_header_locked(s, new_guids, log_guid);

    if (ret == 0) {
        ret = update_header_locked(s, FALSE, log_guid);
    }
    return ret;
}
