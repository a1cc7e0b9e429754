/* SPDX-License-Identifier: MIT */
/* The dmg driver's open-time parser: UDIF trailer, block tables, chunks.
 *
 * On disk (big endian), as QEMU reads it:
 *
 *   [data fork: chunk data ...][resource fork | XML plist]["koly" trailer]
 *
 * The 512-byte trailer starts with "koly" somewhere in the last 515
 * bytes window QEMU searches (a file may end a few bytes after it).  It
 * names the data fork (0x18), the resource fork (0x28 offset, 0x30
 * length), the XML property list (0xd8, 0xe0) and the guest size in
 * sectors (0x1ec).  The block tables are "mish" blocks: in the resource
 * fork as resources of their own, in the plist base64-encoded inside
 * <data> elements.  A mish block has a 204-byte header (0x08: its first
 * guest sector, 0x18: its data offset in the data fork) and 40-byte
 * chunk entries (type, comment, sector, sector count, data offset, data
 * length).
 *
 * Everything the file says is checked before it is used: offsets and
 * lengths against the trailer and the file, QEMU's limits on a chunk's
 * size (with QEMU's words), and, beyond QEMU, chunk data inside the
 * file and chunks that do not overlap.  Allocations are bounded by
 * those limits or by the bytes the file holds.
 *
 * Thread model: main thread, at open.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <inttypes.h>
#include <string.h>
#include "graph/io.h"
#include "formats/dmg/dmg.h"
#include "formats/byteorder.h"

#define DMG_TRAILER_SIZE    512
#define DMG_KOLY_WINDOW     515
#define DMG_XML_MAX         (16u * 1024 * 1024)
#define DMG_RESOURCE_MAX    DMG_LENGTHS_MAX
#define DMG_MISH_MAGIC      0x6d697368u       /* "mish" */
#define DMG_MISH_HEADER     204
#define DMG_MISH_ENTRY      40

/* Trailer field offsets. */
enum {
    K_DATA_FORK = 0x18, K_RSRC_OFFSET = 0x28, K_RSRC_LENGTH = 0x30,
    K_XML_OFFSET = 0xd8, K_XML_LENGTH = 0xe0, K_SECTOR_COUNT = 0x1ec,
};

/* What the mish blocks are read into, and from where. */
typedef struct {
    BdNode *node;
    GArray *chunks;              /* DmgChunk, in the file's order */
    uint64_t data_fork;
    gboolean warned_unknown;
} DmgParse;

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

const char *dmg_type_name(uint32_t type)
{
    switch (type) {
    case DMG_ZERO: return "zero";
    case DMG_RAW: return "raw";
    case DMG_IGNORE: return "ignore";
    case DMG_ZLIB: return "zlib";
    case DMG_BZIP2: return "bzip2";
    case DMG_LZFSE: return "lzfse";
    default: return "unknown";
    }
}

/* QEMU reads these; lzfse and bzip2 stay in the table even when they
 * cannot be decompressed, so that their reads fail with a reason. */
static gboolean type_is_known(uint32_t type)
{
    switch (type) {
    case DMG_ZERO: case DMG_RAW: case DMG_IGNORE: case DMG_ZLIB:
    case DMG_BZIP2: case DMG_LZFSE:
        return TRUE;
    default:
        return FALSE;
    }
}

/* The offset of "koly" in the window QEMU searches: the last 511 bytes
 * of the second-last sector and the first 4 of the last. */
static int64_t find_koly(BdChild *file, uint64_t length, GError **errp)
{
    uint8_t buf[DMG_KOLY_WINDOW];
    uint64_t start = 0, n;
    int ret;

    if (length < DMG_TRAILER_SIZE) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "dmg file must be at least 512 bytes long");
        return -1;
    }
    if (length > 511 + 512) {
        start = length - 511 - 512;
    }
    n = MIN(length, (uint64_t)DMG_KOLY_WINDOW);
    ret = bd_child_pread(file, start, n, buf, 0);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed while reading UDIF trailer: %s", g_strerror(-ret));
        return -1;
    }
    for (uint64_t i = 0; i + 3 < n; i++) {
        if (memcmp(buf + i, "koly", 4) == 0) {
            return (int64_t)(start + i);
        }
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Could not locate UDIF trailer in dmg file");
    return -1;
}

/* One chunk entry of a mish block into the table. */
static gboolean add_chunk(DmgParse *p, const uint8_t *e, uint64_t first,
                          uint64_t in_offset, GError **errp)
{
    const char *name = p->node->node_name;
    DmgChunk c = { 0 };

    c.type = get_be32(e);
    if (!type_is_known(c.type)) {
        if (c.type != DMG_COMMENT && c.type != DMG_LAST &&
            !p->warned_unknown) {
            /* QEMU's warning: the chunk is left out, its sectors fail. */
            g_warning("Node '%s': dmg: Image contains chunks of unknown type "
                      "%" PRIx32 ", accessing them will result in I/O errors",
                      name, c.type);
            p->warned_unknown = TRUE;
        }
        return TRUE;
    }
    c.index = p->chunks->len;
    c.sector = get_be64(e + 8);
    c.count = get_be64(e + 0x10);
    c.offset = get_be64(e + 0x18);
    c.length = get_be64(e + 0x20);
    if (!dmg_type_is_zero(c.type) && c.count > DMG_SECTORCOUNTS_MAX) {
        FAIL("sector count %" PRIu64 " for chunk %" PRIu32 " is larger than "
             "max (%u)", c.count, c.index, DMG_SECTORCOUNTS_MAX);
    }
    if (c.length > DMG_LENGTHS_MAX) {
        FAIL("length %" PRIu64 " for chunk %" PRIu32 " is larger than max "
             "(%u)", c.length, c.index, DMG_LENGTHS_MAX);
    }
    if (c.sector > UINT64_MAX - first ||
        c.sector + first > UINT64_MAX - c.count) {
        FAIL("Node '%s': dmg: chunk %" PRIu32 " starts at sector %" PRIu64
             " + %" PRIu64 ", beyond any disk size", name, c.index, first,
             c.sector);
    }
    c.sector += first;
    if (c.offset > UINT64_MAX - in_offset) {
        FAIL("Node '%s': dmg: chunk %" PRIu32 " has its data at an offset "
             "beyond any file size", name, c.index);
    }
    c.offset += in_offset;
    g_array_append_val(p->chunks, c);
    return TRUE;
}

/* A block table (QEMU skips anything that is not one). */
static gboolean read_mish(DmgParse *p, const uint8_t *buf, uint64_t len,
                          GError **errp)
{
    uint64_t first, in_offset, n;

    if (len < DMG_MISH_HEADER + DMG_MISH_ENTRY ||
        get_be32(buf) != DMG_MISH_MAGIC) {
        return TRUE;
    }
    first = get_be64(buf + 8);
    in_offset = get_be64(buf + 0x18);
    if (in_offset > UINT64_MAX - p->data_fork) {
        FAIL("Node '%s': dmg: block table data offset 0x%" PRIx64 " is "
             "beyond any file size", p->node->node_name, in_offset);
    }
    in_offset += p->data_fork;
    n = (len - DMG_MISH_HEADER) / DMG_MISH_ENTRY;
    for (uint64_t i = 0; i < n; i++) {
        if (!add_chunk(p, buf + DMG_MISH_HEADER + i * DMG_MISH_ENTRY, first,
                       in_offset, errp)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean read_be32(BdChild *file, uint64_t off, uint32_t *v,
                          GError **errp)
{
    uint8_t b[4];
    int ret = bd_child_pread(file, off, 4, b, 0);

    if (ret < 0) {
        FAIL("Could not read dmg resource fork: %s", g_strerror(-ret));
    }
    *v = get_be32(b);
    return TRUE;
}

/* The resource fork: a header (offset of the resource data at 0, its
 * length at 8), then resources, each a be32 length and its bytes. */
static gboolean read_resource_fork(DmgParse *p, BdChild *file,
                                   uint64_t begin, uint64_t length,
                                   GError **errp)
{
    const char *name = p->node->node_name;
    uint32_t data_off, count;
    uint64_t off, end;

    if (!read_be32(file, begin, &data_off, errp)) {
        return FALSE;
    }
    if (data_off > length) {
        FAIL("Node '%s': dmg: resource data offset %" PRIu32 " lies beyond "
             "the resource fork (%" PRIu64 " bytes)", name, data_off, length);
    }
    if (!read_be32(file, begin + 8, &count, errp)) {
        return FALSE;
    }
    if (count == 0 || (uint64_t)data_off + count > length) {
        FAIL("Node '%s': dmg: resource data length %" PRIu32 " does not fit "
             "in the resource fork (%" PRIu64 " bytes from offset %" PRIu32
             ")", name, count, length, data_off);
    }
    off = begin + data_off;
    end = off + count;
    while (off < end) {
        g_autofree uint8_t *buf = NULL;
        int ret;

        if (!read_be32(file, off, &count, errp)) {
            return FALSE;
        }
        /* QEMU's bound (from the length field); ours on memory too. */
        if (count == 0 || count > end - off) {
            FAIL("Node '%s': dmg: resource at 0x%" PRIx64 " of %" PRIu32
                 " bytes does not fit in the resource data", name, off,
                 count);
        }
        if (count > DMG_RESOURCE_MAX) {
            FAIL("Node '%s': dmg: resource at 0x%" PRIx64 " of %" PRIu32
                 " bytes is larger than max (%u)", name, off, count,
                 DMG_RESOURCE_MAX);
        }
        off += 4;
        buf = g_try_malloc(count);
        if (!buf) {
            FAIL("Node '%s': dmg: cannot allocate %" PRIu32 " bytes for a "
                 "resource", name, count);
        }
        ret = bd_child_pread(file, off, count, buf, 0);
        if (ret < 0) {
            FAIL("Could not read dmg resource fork: %s", g_strerror(-ret));
        }
        if (!read_mish(p, buf, count, errp)) {
            return FALSE;
        }
        off += count;
    }
    return TRUE;
}

/* The XML property list: every <data> element is base64 that may be a
 * mish block (those of "blkx"; QEMU does not look at the keys). */
static gboolean read_plist(DmgParse *p, BdChild *file, uint64_t begin,
                           uint64_t length, GError **errp)
{
    const char *name = p->node->node_name;
    g_autofree char *xml = NULL;
    char *cur;
    int ret;

    if (length == 0 || length > DMG_XML_MAX) {
        FAIL("Node '%s': dmg: XML property list of %" PRIu64 " bytes (at "
             "most %u supported)", name, length, DMG_XML_MAX);
    }
    xml = g_try_malloc(length + 1);
    if (!xml) {
        FAIL("Node '%s': dmg: cannot allocate %" PRIu64 " bytes for the XML "
             "property list", name, length);
    }
    ret = bd_child_pread(file, begin, length, xml, 0);
    if (ret < 0) {
        FAIL("Could not read dmg XML property list: %s", g_strerror(-ret));
    }
    xml[length] = '\0';
    cur = xml;
    while ((cur = strstr(cur, "<data>")) != NULL) {
        g_autofree guchar *mish = NULL;
        char *end;
        gsize n = 0;

        cur += strlen("<data>");
        end = strstr(cur, "</data>");
        if (!end) {
            FAIL("Node '%s': dmg: malformed XML property list: <data> "
                 "without </data>", name);
        }
        *end = '\0';
        mish = g_base64_decode(cur, &n);
        if (!read_mish(p, mish, n, errp)) {
            return FALSE;
        }
        cur = end + 1;
    }
    return TRUE;
}

static int compare_chunks(const void *a, const void *b)
{
    const DmgChunk *x = a, *y = b;

    if (x->sector != y->sector) {
        return x->sector < y->sector ? -1 : 1;
    }
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Beyond QEMU: chunk data inside the file, chunks sorted (QEMU's binary
 * search assumes they are) and not overlapping.  Empty chunks go. */
static gboolean check_chunks(BdNode *node, DmgTable *t, GArray *chunks,
                             uint64_t file_size, GError **errp)
{
    const char *name = node->node_name;
    uint32_t n = 0;

    for (guint i = 0; i < chunks->len; i++) {
        DmgChunk *c = &g_array_index(chunks, DmgChunk, i);

        if (c->count == 0) {
            continue;
        }
        if (!dmg_type_is_zero(c->type) &&
            (c->offset > file_size || c->length > file_size - c->offset)) {
            FAIL("Node '%s': dmg: chunk %" PRIu32 " (%s, sectors %" PRIu64
                 "..%" PRIu64 ") has its data at 0x%" PRIx64 "..0x%" PRIx64
                 ", beyond the end of the file (%" PRIu64 " bytes); the "
                 "image is truncated or corrupt", name, c->index,
                 dmg_type_name(c->type), c->sector, c->sector + c->count - 1,
                 c->offset, c->offset + c->length, file_size);
        }
        g_array_index(chunks, DmgChunk, n++) = *c;
    }
    g_array_set_size(chunks, n);
    if (n > 1) {    /* an empty array's data is NULL: qsort must not see it */
        qsort(chunks->data, n, sizeof(DmgChunk), compare_chunks);
    }
    for (uint32_t i = 1; i < n; i++) {
        DmgChunk *a = &g_array_index(chunks, DmgChunk, i - 1);
        DmgChunk *b = &g_array_index(chunks, DmgChunk, i);

        if (a->sector + a->count > b->sector) {
            FAIL("Node '%s': dmg: chunk %" PRIu32 " (sectors %" PRIu64
                 "..%" PRIu64 ") overlaps chunk %" PRIu32 " (from sector %"
                 PRIu64 "); the image is corrupt", name, a->index, a->sector,
                 a->sector + a->count - 1, b->index, b->sector);
        }
    }
    t->n_chunks = n;
    t->chunks = g_array_steal(chunks, NULL);
    return TRUE;
}

/* QEMU's checks on the trailer's offsets (its open fails with EINVAL
 * and no text; ours say which). */
static gboolean check_trailer(BdNode *node, const uint8_t *k, uint64_t koly,
                              GError **errp)
{
    const char *name = node->node_name;
    uint64_t data_fork = get_be64(k + K_DATA_FORK);
    uint64_t rsrc = get_be64(k + K_RSRC_OFFSET);
    uint64_t rsrc_len = get_be64(k + K_RSRC_LENGTH);
    uint64_t xml = get_be64(k + K_XML_OFFSET);
    uint64_t xml_len = get_be64(k + K_XML_LENGTH);
    uint64_t sectors = get_be64(k + K_SECTOR_COUNT);

    if (data_fork > koly) {
        FAIL("Node '%s': dmg: data fork offset 0x%" PRIx64 " lies beyond the "
             "UDIF trailer at 0x%" PRIx64, name, data_fork, koly);
    }
    if (rsrc >= koly || rsrc_len > koly - rsrc) {
        FAIL("Node '%s': dmg: resource fork (0x%" PRIx64 ", %" PRIu64
             " bytes) does not lie before the UDIF trailer at 0x%" PRIx64,
             name, rsrc, rsrc_len, koly);
    }
    if (xml >= koly || xml_len > koly - xml) {
        FAIL("Node '%s': dmg: XML property list (0x%" PRIx64 ", %" PRIu64
             " bytes) does not lie before the UDIF trailer at 0x%" PRIx64,
             name, xml, xml_len, koly);
    }
    /* QEMU refuses a negative count; the size must fit a node too. */
    if (sectors > (uint64_t)(G_MAXINT64 - ((1 << 30) - 1)) / DMG_SECTOR) {
        FAIL("Node '%s': dmg: disk size of %" PRIu64 " sectors is too large",
             name, sectors);
    }
    if (rsrc_len == 0 && xml_len == 0) {
        FAIL("Node '%s': dmg: the UDIF trailer names neither a resource fork "
             "nor an XML property list", name);
    }
    return TRUE;
}

gboolean dmg_table_load(BdNode *node, BdChild *file, DmgTable *table,
                        GError **errp)
{
    g_autoptr(GArray) chunks = g_array_new(FALSE, FALSE, sizeof(DmgChunk));
    uint8_t k[DMG_TRAILER_SIZE] = { 0 };
    int64_t length = bd_node_getlength(file->node);
    DmgParse p = { .node = node, .chunks = chunks };
    uint64_t rsrc_len, xml_len;
    int64_t koly;
    int ret;

    if (length < 0) {
        FAIL("Failed to get file size while reading UDIF trailer: %s",
             g_strerror((int)-length));
    }
    koly = find_koly(file, (uint64_t)length, errp);
    if (koly < 0) {
        return FALSE;
    }
    /* A trailer cut short by the end of the file reads as zeroes. */
    ret = bd_child_pread(file, (uint64_t)koly,
                         MIN((uint64_t)(length - koly), sizeof(k)), k, 0);
    if (ret < 0) {
        FAIL("Failed while reading UDIF trailer: %s", g_strerror(-ret));
    }
    if (!check_trailer(node, k, (uint64_t)koly, errp)) {
        return FALSE;
    }
    p.data_fork = get_be64(k + K_DATA_FORK);
    rsrc_len = get_be64(k + K_RSRC_LENGTH);
    xml_len = get_be64(k + K_XML_LENGTH);
    if (rsrc_len != 0) {
        if (!read_resource_fork(&p, file, get_be64(k + K_RSRC_OFFSET),
                                rsrc_len, errp)) {
            return FALSE;
        }
    } else if (!read_plist(&p, file, get_be64(k + K_XML_OFFSET), xml_len,
                           errp)) {
        return FALSE;
    }
    table->total_sectors = get_be64(k + K_SECTOR_COUNT);
    return check_chunks(node, table, chunks, (uint64_t)length, errp);
}

void dmg_table_clear(DmgTable *table)
{
    g_clear_pointer(&table->chunks, g_free);
    table->n_chunks = 0;
}
