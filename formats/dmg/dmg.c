/* SPDX-License-Identifier: MIT */
/* The 'dmg' format driver: Apple disk images (UDIF), read-only, as
 * QEMU reads them.
 *
 * The image is a table of chunks (parse.c), each a run of guest sectors
 * stored as zeroes (no data), raw bytes, or a zlib, bzip2 or lzfse
 * stream that only decompresses as a whole.  Reads of raw chunks go to
 * the file directly; a compressed chunk is decompressed whole and kept
 * as the node's last chunk, since reads come in smaller pieces than
 * chunks (up to 64 MiB) and mostly in order.  Sectors that no chunk
 * covers, chunks of types QEMU leaves out, lzfse chunks (no Debian
 * library) and bzip2 chunks in a build without libbz2 fail with EIO and
 * a log line; the rest of the image still reads.
 *
 * Thread model: open/close/refresh_limits on the main thread, data
 * callbacks on any thread.  The chunk table is fixed after open.
 * DmgState.cache_lock protects the cached chunk (index and buffer); it
 * is never held across I/O or decompression: a reader that misses
 * decompresses into a buffer of its own and then swaps it in, so that
 * concurrent readers of different chunks run in parallel, each with at
 * most one chunk's buffers (bounded by QEMU's 64 MiB chunk limits).
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>
#ifdef BD_HAVE_BZIP2
#include <bzlib.h>
#endif
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"
#include "formats/dmg/dmg.h"

/* Read errors logged per node; after that one line says they go on. */
#define DMG_LOG_MAX 16

typedef struct {
    BdNode *node;
    BdChild *file;
    DmgTable table;

    BdMutex cache_lock;        /* protects the two members below */
    uint32_t cache_chunk BD_GUARDED_BY(cache_lock);  /* n_chunks: none */
    uint8_t *cache_buf BD_GUARDED_BY(cache_lock);    /* its sectors */

    int logged;                /* atomic: read errors logged so far */
} DmgState;

typedef struct {
    GVariant *file;
} DmgOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField dmg_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(DmgOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(DmgOptions, dmg_options)

/* A read failed: say why (the first few times per node). */
G_GNUC_PRINTF(2, 3)
static void dmg_log(DmgState *s, const char *fmt, ...)
{
    int n = g_atomic_int_add(&s->logged, 1);
    g_autofree char *msg = NULL;
    va_list ap;

    if (n > DMG_LOG_MAX) {
        return;
    }
    if (n == DMG_LOG_MAX) {
        g_warning("Node '%s': dmg: further read errors are not logged",
                  s->node->node_name);
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_warning("Node '%s': dmg: %s", s->node->node_name, msg);
}

/* The chunk holding 'sector', or the first one after it (n_chunks:
 * none after it). */
static uint32_t find_chunk(const DmgTable *t, uint64_t sector)
{
    uint32_t lo = 0, hi = t->n_chunks;

    /* First chunk whose end lies after 'sector'. */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const DmgChunk *c = &t->chunks[mid];

        if (c->sector + c->count <= sector) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Bytes from 'offset' to sector 'end' (> offset's), at most 'bytes';
 * zero chunks may be longer than any node, so no product overflows. */
static uint64_t bytes_until(uint64_t offset, uint64_t bytes, uint64_t end)
{
    uint64_t run = end - offset / DMG_SECTOR;

    if (run > bytes / DMG_SECTOR + 1) {
        return bytes;
    }
    return MIN(bytes, run * DMG_SECTOR - offset % DMG_SECTOR);
}

/* --- decompression --- */

static int inflate_zlib(const uint8_t *in, uint64_t in_len, uint8_t *out,
                        uint64_t out_len, const char **why)
{
    z_stream z = { 0 };
    int ret;

    if (inflateInit(&z) != Z_OK) {
        *why = "cannot initialise zlib";
        return -ENOMEM;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    ret = inflate(&z, Z_FINISH);
    if (ret != Z_STREAM_END) {
        *why = z.msg ? z.msg : "stream does not end in the chunk";
        ret = -EIO;
    } else if (z.total_out != out_len) {
        /* QEMU's rule: the stream holds exactly the chunk's sectors. */
        *why = "stream ends before the chunk's sectors do";
        ret = -EIO;
    } else {
        ret = 0;
    }
    inflateEnd(&z);
    return ret;
}

static int inflate_bzip2(const uint8_t *in, uint64_t in_len, uint8_t *out,
                         uint64_t out_len, const char **why)
{
#ifdef BD_HAVE_BZIP2
    unsigned int n = (unsigned int)out_len;
    int ret = BZ2_bzBuffToBuffDecompress((char *)out, &n, (char *)in,
                                         (unsigned int)in_len, 0, 0);

    if (ret == BZ_MEM_ERROR) {
        *why = "out of memory in libbz2";
        return -ENOMEM;
    }
    if (ret != BZ_OK) {
        *why = ret == BZ_OUTBUFF_FULL ? "stream is larger than the chunk"
                                      : "corrupt bzip2 stream";
        return -EIO;
    }
    /* A short stream: the rest of the chunk reads as zeroes. */
    memset(out + n, 0, out_len - n);
    return 0;
#else
    (void)in, (void)in_len, (void)out, (void)out_len;
    *why = "blockd was built without bzip2 support (-Dbzip2)";
    return -EIO;
#endif
}

/* Decompress chunk 'c' into a new buffer of its sectors. */
static int decompress_chunk(DmgState *s, const DmgChunk *c, uint8_t **out)
{
    uint64_t out_len = c->count * DMG_SECTOR;
    g_autofree uint8_t *in = NULL;
    g_autofree uint8_t *buf = NULL;
    const char *why = NULL;
    int ret;

    if (c->type == DMG_LZFSE) {
        dmg_log(s, "chunk %" PRIu32 " (sectors %" PRIu64 "..%" PRIu64 ") is "
                "lzfse-compressed, which blockd cannot decompress",
                c->index, c->sector, c->sector + c->count - 1);
        return -EIO;
    }
    in = g_try_malloc(MAX(c->length, 1));
    buf = g_try_malloc(out_len);
    if (!in || !buf) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->file, c->offset, c->length, in, 0);
    if (ret < 0) {
        return ret;
    }
    if (c->type == DMG_ZLIB) {
        ret = inflate_zlib(in, c->length, buf, out_len, &why);
    } else {
        ret = inflate_bzip2(in, c->length, buf, out_len, &why);
    }
    if (ret < 0) {
        dmg_log(s, "cannot decompress chunk %" PRIu32 " (%s, %" PRIu64
                " bytes at 0x%" PRIx64 "): %s", c->index,
                dmg_type_name(c->type), c->length, c->offset, why);
        return ret;
    }
    *out = g_steal_pointer(&buf);
    return 0;
}

/* Copy [in, in+n) of compressed chunk 'idx' to 'out', from the cache
 * or decompressing it (then it becomes the cached chunk). */
static int read_compressed(DmgState *s, uint32_t idx, uint64_t in,
                           uint64_t n, uint8_t *out)
{
    uint8_t *buf = NULL, *old;
    int ret;

    bd_mutex_lock(&s->cache_lock);
    if (s->cache_chunk == idx) {
        memcpy(out, s->cache_buf + in, n);
        bd_mutex_unlock(&s->cache_lock);
        return 0;
    }
    bd_mutex_unlock(&s->cache_lock);

    ret = decompress_chunk(s, &s->table.chunks[idx], &buf);
    if (ret < 0) {
        return ret;
    }
    memcpy(out, buf + in, n);
    bd_mutex_lock(&s->cache_lock);
    old = s->cache_buf;
    s->cache_buf = buf;
    s->cache_chunk = idx;
    bd_mutex_unlock(&s->cache_lock);
    g_free(old);
    return 0;
}

/* --- data path --- */

/* [in, in+n) of raw chunk 'c': the file's bytes, zeroes past the data
 * the chunk has (QEMU leaves whatever its buffer held there). */
static int read_raw(DmgState *s, const DmgChunk *c, uint64_t in, uint64_t n,
                    uint8_t *out)
{
    uint64_t avail = in < c->length ? MIN(n, c->length - in) : 0;
    int ret = 0;

    if (avail) {
        ret = bd_child_pread(s->file, c->offset + in, avail, out, 0);
    }
    memset(out + avail, 0, n - avail);
    return ret;
}

/* Offsets and lengths are whole sectors (request_alignment). */
static int dmg_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    DmgState *s = node->opaque;
    const DmgTable *t = &s->table;
    uint8_t *p = buf;

    (void)flags;
    while (bytes) {
        uint64_t sector = offset / DMG_SECTOR;
        uint32_t i = find_chunk(t, sector);
        const DmgChunk *c = i < t->n_chunks ? &t->chunks[i] : NULL;
        uint64_t in, n;
        int ret;

        if (!c || c->sector > sector) {
            dmg_log(s, "no chunk of the image holds sector %" PRIu64
                    " (offset 0x%" PRIx64 ")", sector, offset);
            return -EIO;
        }
        in = (sector - c->sector) * DMG_SECTOR;
        n = bytes_until(offset, bytes, c->sector + c->count);
        switch (c->type) {
        case DMG_ZERO:
        case DMG_IGNORE:
            memset(p, 0, n);
            ret = 0;
            break;
        case DMG_RAW:
            ret = read_raw(s, c, in, n, p);
            break;
        default:
            ret = read_compressed(s, i, in, n, p);
            break;
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

/* Zero chunks read as zeroes, everything else (data chunks and sectors
 * no chunk holds, whose reads fail) as data. */
static int dmg_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    DmgState *s = node->opaque;
    const DmgTable *t = &s->table;
    uint64_t sector = offset / DMG_SECTOR;
    uint32_t i = find_chunk(t, sector);
    gboolean zero;
    uint64_t end;      /* sector where the answer may change */

    (void)map, (void)file;
    if (i >= t->n_chunks) {
        *pnum = bytes;
        return BD_BLOCK_DATA;
    }
    if (t->chunks[i].sector > sector) {
        end = t->chunks[i].sector;
        zero = FALSE;
    } else {
        zero = dmg_type_is_zero(t->chunks[i].type);
        end = t->chunks[i].sector + t->chunks[i].count;
        /* Runs of adjacent chunks of the same kind answer together. */
        while (++i < t->n_chunks && t->chunks[i].sector == end &&
               dmg_type_is_zero(t->chunks[i].type) == zero &&
               end - sector <= bytes / DMG_SECTOR) {
            end += t->chunks[i].count;
        }
    }
    *pnum = bytes_until(offset, bytes, end);
    return zero ? BD_BLOCK_ZERO : BD_BLOCK_DATA;
}

/* --- open --- */

static void dmg_close(BdNode *node)
{
    DmgState *s = node->opaque;

    if (!s) {
        return;
    }
    dmg_table_clear(&s->table);
    g_free(s->cache_buf);
    bd_mutex_destroy(&s->cache_lock);
    g_free(s);
    node->opaque = NULL;
}

/* As QEMU warns when it opens such an image: which chunks will fail. */
static void warn_unreadable(BdNode *node, const DmgTable *t)
{
    gboolean lzfse = FALSE, bzip2 = FALSE;

    for (uint32_t i = 0; i < t->n_chunks; i++) {
        lzfse |= t->chunks[i].type == DMG_LZFSE;
        bzip2 |= t->chunks[i].type == DMG_BZIP2;
    }
    if (lzfse) {
        g_warning("Node '%s': dmg: the image has lzfse-compressed chunks, "
                  "which blockd cannot decompress: reading them fails with "
                  "EIO", node->node_name);
    }
#ifndef BD_HAVE_BZIP2
    if (bzip2) {
        g_warning("Node '%s': dmg: the image has bzip2-compressed chunks and "
                  "blockd was built without bzip2 support: reading them "
                  "fails with EIO", node->node_name);
    }
#else
    (void)bzip2;
#endif
}

static gboolean dmg_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(DmgOptions) o = { 0 };
    DmgState *s;

    /* QEMU's bdrv_apply_auto_read_only(): dmg is read-only. */
    if (!node->read_only) {
        if (!node->auto_read_only) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Image is read-only");
            return FALSE;
        }
        node->read_only = TRUE;
    }
    bd_schema_decode(dmg_options, options, &o);
    s = g_new0(DmgState, 1);
    bd_mutex_init(&s->cache_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !dmg_table_load(node, s->file, &s->table, errp)) {
        dmg_close(node);
        return FALSE;
    }
    s->cache_chunk = s->table.n_chunks;
    warn_unreadable(node, &s->table);
    bd_node_set_size(node, s->table.total_sectors * DMG_SECTOR);
    return TRUE;
}

/* QEMU's dmg has no sub-sector I/O. */
static void dmg_refresh_limits(BdNode *node)
{
    node->request_alignment = MAX(node->request_alignment, DMG_SECTOR);
}

/* No reopen_prepare: QEMU's dmg cannot be reopened either. */
const BdDriver bd_dmg_driver = {
    .name = "dmg",
    .options = dmg_options,
    .is_format = TRUE,
    .open = dmg_open,
    .close = dmg_close,
    .pread = dmg_pread,
    .block_status = dmg_block_status,
    .refresh_limits = dmg_refresh_limits,
};
