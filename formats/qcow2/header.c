/* SPDX-License-Identifier: MIT */
/* Parsing and validation of the qcow2 header and its extensions.
 *
 * Pure functions over a buffer: no I/O, no state, so that the parser can
 * be fed any bytes (unit tests, fuzzing).  Thread-safe.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "formats/qcow2/qcow2.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

void qcow2_header_clear(Qcow2Header *h)
{
    g_free(h->backing_file);
    g_free(h->backing_format);
    g_free(h->feature_names);
    memset(h, 0, sizeof(*h));
}

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* Names of the unknown incompatible feature bits, from the feature name
 * table when it has them (QEMU's report_unsupported_feature). */
static void note_feature_table(Qcow2Header *h, const uint8_t *p,
                               uint32_t len)
{
    uint64_t unknown = h->incompatible & ~QCOW2_INCOMPAT_KNOWN;
    g_autoptr(GString) names = g_string_new(NULL);

    for (uint32_t off = 0; off + 48 <= len; off += 48) {
        uint8_t type = p[off], bit = p[off + 1];
        if (type == 0 && bit < 64 && (unknown & (1ull << bit))) {
            char name[47];
            memcpy(name, p + off + 2, 46);
            name[46] = '\0';
            g_string_append_printf(names, "%s%s", names->len ? ", " : "",
                                   name);
            unknown &= ~(1ull << bit);
        }
    }
    if (unknown) {
        g_string_append_printf(names, "%sUnknown incompatible feature: %"
                               PRIx64, names->len ? ", " : "", unknown);
    }
    g_free(h->feature_names);
    h->feature_names = g_string_free(g_steal_pointer(&names), FALSE);
}

static gboolean parse_extensions(Qcow2Header *h, const uint8_t *buf,
                                 size_t start, size_t end, GError **errp)
{
    size_t off = start;

    while (off + 8 <= end) {
        uint32_t type = be32(buf + off), len = be32(buf + off + 4);
        off += 8;
        if (len > end - off) {
            FAIL("ext_len too large");
        }
        if (type == QCOW2_EXT_END) {
            break;
        }
        if (type == QCOW2_EXT_BACKING_FORMAT) {
            if (len > QCOW2_MAX_BACKING_NAME) {
                FAIL("ERROR: ext_backing_format: len=%" PRIu32
                     " too large (>=%u)", len, QCOW2_MAX_BACKING_NAME + 1);
            }
            g_free(h->backing_format);
            h->backing_format = g_strndup((const char *)buf + off, len);
        } else if (type == QCOW2_EXT_FEATURE_TABLE) {
            note_feature_table(h, buf + off, len);
        } else if (type == QCOW2_EXT_BITMAPS) {
            if (len != 24) {
                FAIL("bitmaps_ext: Invalid extension length");
            }
            h->has_bitmaps_ext = TRUE;
            h->nb_bitmaps = be32(buf + off);
            h->bitmaps_ext_reserved = be32(buf + off + 4);
            h->bitmap_directory_size = be64(buf + off + 8);
            h->bitmap_directory_offset = be64(buf + off + 16);
        } else if (type == QCOW2_EXT_CRYPTO) {
            if (len != 16) {
                FAIL("Invalid encryption header length");
            }
            h->has_crypto_ext = TRUE;
            h->crypto_offset = be64(buf + off);
            h->crypto_length = be64(buf + off + 8);
        }
        /* Other extensions (data file, unknown) stay in
         * the file untouched (bitmap.c rewrites only its own). */
        off += ((uint64_t)len + 7) & ~7ull;
    }
    return TRUE;
}

static gboolean parse_fixed(Qcow2Header *h, const uint8_t *b, size_t len,
                            GError **errp)
{
    if (len < QCOW2_V2_HEADER_SIZE || be32(b) != QCOW2_MAGIC) {
        FAIL("Image is not in qcow2 format");
    }
    h->version = be32(b + 4);
    if (h->version < 2 || h->version > 3) {
        FAIL("Unsupported qcow2 version %" PRIu32, h->version);
    }
    h->backing_file_offset = be64(b + 8);
    h->backing_file_size = be32(b + 16);
    h->cluster_bits = be32(b + 20);
    h->size = be64(b + 24);
    h->crypt_method = be32(b + 32);
    h->l1_size = be32(b + 36);
    h->l1_table_offset = be64(b + 40);
    h->refcount_table_offset = be64(b + 48);
    h->refcount_table_clusters = be32(b + 56);
    h->nb_snapshots = be32(b + 60);
    h->snapshots_offset = be64(b + 64);
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        FAIL("Unsupported cluster size: 2^%" PRIu32, h->cluster_bits);
    }
    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_SIZE;
        return TRUE;
    }
    if (len < QCOW2_V3_HEADER_SIZE) {
        FAIL("qcow2 header too short");
    }
    h->incompatible = be64(b + 72);
    h->compatible = be64(b + 80);
    h->autoclear = be64(b + 88);
    h->refcount_order = be32(b + 96);
    h->header_length = be32(b + 100);
    if (h->header_length < QCOW2_V3_HEADER_SIZE) {
        FAIL("qcow2 header too short");
    }
    if (h->header_length > (1u << h->cluster_bits) || h->header_length > len) {
        FAIL("qcow2 header exceeds cluster size");
    }
    if (h->header_length > QCOW2_V3_HEADER_SIZE) {
        h->compression_type = b[104];
    }
    return TRUE;
}

static gboolean check_features(Qcow2Header *h, GError **errp)
{
    uint64_t unknown = h->incompatible & ~QCOW2_INCOMPAT_KNOWN;

    if (unknown) {
        if (!h->feature_names) {
            h->feature_names = g_strdup_printf(
                "Unknown incompatible feature: %" PRIx64, unknown);
        }
        FAIL("Unsupported qcow2 feature(s): %s", h->feature_names);
    }
    if (h->refcount_order > 6) {
        FAIL("Reference count entry width too large; may not exceed 64 bits");
    }
    if (h->crypt_method > 2) {
        FAIL("Unsupported encryption method: %" PRIu32, h->crypt_method);
    }
    return TRUE;
}

static gboolean check_tables(Qcow2Header *h, uint64_t file_size,
                             GError **errp)
{
    uint64_t csize = 1ull << h->cluster_bits;
    uint64_t l2_entries = csize / 8;
    uint64_t need_l1;

    if (h->refcount_table_offset == 0 || h->refcount_table_offset % csize) {
        FAIL("Invalid reference count table offset");
    }
    if (h->refcount_table_clusters == 0 ||
        (uint64_t)h->refcount_table_clusters * csize >
            QCOW2_MAX_REFTABLE_BYTES) {
        FAIL("Reference count table too large");
    }
    if (h->refcount_table_offset > file_size ||
        (uint64_t)h->refcount_table_clusters * csize >
            file_size - h->refcount_table_offset + csize) {
        FAIL("Reference count table offset 0x%" PRIx64 " beyond end of file",
             h->refcount_table_offset);
    }
    if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        FAIL("Active L1 table too large");
    }
    if (h->size > (1ull << 62)) {
        FAIL("Image size too large: %" PRIu64, h->size);
    }
    need_l1 = (h->size + l2_entries * csize - 1) / (l2_entries * csize);
    if (need_l1 > h->l1_size) {
        FAIL("L1 table is too small");
    }
    if (h->l1_size && (h->l1_table_offset % csize ||
                       h->l1_table_offset == 0)) {
        FAIL("Invalid L1 table offset");
    }
    if (h->l1_size && (h->l1_table_offset > file_size ||
                       (uint64_t)h->l1_size * 8 >
                           file_size - h->l1_table_offset)) {
        FAIL("L1 table offset 0x%" PRIx64 " beyond end of file",
             h->l1_table_offset);
    }
    return TRUE;
}

static gboolean parse_backing(Qcow2Header *h, const uint8_t *b, size_t len,
                              GError **errp)
{
    if (!h->backing_file_offset) {
        return TRUE;
    }
    if (h->backing_file_offset > (1ull << h->cluster_bits)) {
        FAIL("Invalid backing file offset");
    }
    if (h->backing_file_size > QCOW2_MAX_BACKING_NAME) {
        FAIL("Backing file name too long");
    }
    if (h->backing_file_offset + h->backing_file_size > len) {
        FAIL("Backing file name beyond end of header cluster");
    }
    if (h->backing_file_size) {
        h->backing_file = g_strndup((const char *)b + h->backing_file_offset,
                                    h->backing_file_size);
    }
    return TRUE;
}

gboolean qcow2_header_parse(const uint8_t *buf, size_t len,
                            uint64_t file_size, Qcow2Header *h,
                            GError **errp)
{
    size_t ext_end;

    memset(h, 0, sizeof(*h));
    if (!parse_fixed(h, buf, len, errp)) {
        return FALSE;
    }
    ext_end = MIN(len, (size_t)1 << h->cluster_bits);
    if (h->backing_file_offset && h->backing_file_offset < ext_end) {
        ext_end = h->backing_file_offset;
    }
    if (!parse_extensions(h, buf, h->header_length, ext_end, errp) ||
        !check_features(h, errp) ||
        !parse_backing(h, buf, len, errp) ||
        !check_tables(h, file_size, errp)) {
        return FALSE;
    }
    return TRUE;
}
