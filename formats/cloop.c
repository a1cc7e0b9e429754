/* SPDX-License-Identifier: MIT */
/* The 'cloop' format driver: compressed loopback images (Knoppix's
 * cloop, V2.0), read-only (as QEMU).
 *
 * On disk (big endian): a 128-byte shell-script preamble, the block
 * size (uint32, a multiple of 512) and the number of blocks n (uint32)
 * at 128, then n + 1 uint64 offsets at 136: block i is the zlib stream
 * in [offsets[i], offsets[i+1]) and inflates to exactly one block.
 *
 *   [#!/bin/sh ...][bs][n][off 0][off 1]...[off n][zlib 0][zlib 1]...
 *
 * Thread model: open/close on the main thread, data callbacks on any
 * thread.  The offsets are fixed after open.  A reader inflates a block
 * into a buffer of its own, without a lock; CloopState.cache_lock
 * guards the last block inflated (number and bytes), which readers copy
 * from and replace under the lock (a memcpy, never I/O).  Two readers
 * missing the same block both inflate it; the second replaces the
 * first's copy with an equal one.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <zlib.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"
#include "formats/byteorder.h"

#define CLOOP_SECTOR        512u
#define CLOOP_HEADER_END    136u     /* preamble, block size, n_blocks */
/* QEMU's limits: blocks of at most 64 MiB, compressed blocks of at
 * most twice that, an offsets table of at most 512 MiB. */
#define CLOOP_BLOCK_MAX     (64u * 1024 * 1024)
#define CLOOP_COMPRESSED_MAX (2ull * CLOOP_BLOCK_MAX)
#define CLOOP_OFFSETS_MAX   (512ull * 1024 * 1024)
#define CLOOP_NO_BLOCK      UINT64_MAX

typedef struct {
    BdNode *node;
    BdChild *file;
    uint32_t block_size;
    uint32_t n_blocks;
    uint64_t *offsets;         /* n_blocks + 1, host order; fixed */

    BdMutex cache_lock;        /* protects the two members below */
    uint64_t cached BD_GUARDED_BY(cache_lock);       /* or CLOOP_NO_BLOCK */
    uint8_t *cache BD_PT_GUARDED_BY(cache_lock);     /* block_size bytes */
} CloopState;

typedef struct {
    GVariant *file;
} CloopOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField cloop_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(CloopOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(CloopOptions, cloop_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* --- data path --- */

/* Copy [in, in+n) of block 'bi' if it is the cached one. */
static gboolean cloop_copy_cached(CloopState *s, uint64_t bi, uint64_t in,
                                  uint64_t n, uint8_t *p)
{
    gboolean hit;

    bd_mutex_lock(&s->cache_lock);
    hit = s->cached == bi;
    if (hit) {
        memcpy(p, s->cache + in, n);
    }
    bd_mutex_unlock(&s->cache_lock);
    return hit;
}

/* Inflate block 'bi' into a new buffer: exactly one block, or -EIO (a
 * corrupt or short stream, as QEMU). */
static int cloop_inflate(CloopState *s, uint64_t bi, uint8_t **out)
{
    uint64_t start = s->offsets[bi];
    uint64_t csize = s->offsets[bi + 1] - start;
    g_autofree uint8_t *comp = g_try_malloc(MAX(csize, 1));
    g_autofree uint8_t *plain = g_try_malloc(s->block_size);
    uLongf plain_len = s->block_size;
    int ret;

    if (!comp || !plain) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->file, start, csize, comp, 0);
    if (ret < 0) {
        return ret;
    }
    if (uncompress(plain, &plain_len, comp, (uLong)csize) != Z_OK ||
        plain_len != s->block_size) {
        g_debug("node '%s': cloop: block %" PRIu64 " (0x%" PRIx64 ", %"
                PRIu64 " bytes) does not inflate to %" PRIu32 " bytes",
                s->node->node_name, bi, start, csize, s->block_size);
        return -EIO;
    }
    *out = g_steal_pointer(&plain);
    return 0;
}

/* [in, in+n) of block 'bi' into 'p', through the cache. */
static int cloop_read_block(CloopState *s, uint64_t bi, uint64_t in,
                            uint64_t n, uint8_t *p)
{
    g_autofree uint8_t *block = NULL;
    uint8_t *old;
    int ret;

    if (cloop_copy_cached(s, bi, in, n, p)) {
        return 0;
    }
    ret = cloop_inflate(s, bi, &block);
    if (ret < 0) {
        return ret;
    }
    memcpy(p, block + in, n);
    bd_mutex_lock(&s->cache_lock);
    old = s->cache;
    s->cache = g_steal_pointer(&block);
    s->cached = bi;
    bd_mutex_unlock(&s->cache_lock);
    g_free(old);
    return 0;
}

static int cloop_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                       void *buf, int flags)
{
    CloopState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t bi = offset / s->block_size;
        uint64_t in = offset % s->block_size;
        uint64_t n = MIN(bytes, s->block_size - in);
        int ret = cloop_read_block(s, bi, in, n, p);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

/* --- open --- */

/* QEMU's checks of block size and count, in its order and words. */
static gboolean cloop_check_header(uint32_t block_size, uint32_t n_blocks,
                                   GError **errp)
{
    if (block_size % CLOOP_SECTOR) {
        FAIL("block_size %" PRIu32 " must be a multiple of 512", block_size);
    }
    if (block_size == 0) {
        FAIL("block_size cannot be zero");
    }
    /* cloop's own tools warn beyond 256 KiB; QEMU bounds the buffer. */
    if (block_size > CLOOP_BLOCK_MAX) {
        FAIL("block_size %" PRIu32 " must be %u MB or less", block_size,
             CLOOP_BLOCK_MAX / (1024 * 1024));
    }
    if (n_blocks > (UINT32_MAX - 1) / sizeof(uint64_t)) {
        FAIL("n_blocks %" PRIu32 " must be %zu or less", n_blocks,
             (size_t)((UINT32_MAX - 1) / sizeof(uint64_t)));
    }
    if (((uint64_t)n_blocks + 1) * sizeof(uint64_t) > CLOOP_OFFSETS_MAX) {
        FAIL("image requires too many offsets, try increasing block size");
    }
    return TRUE;
}

/* QEMU's checks of the offsets, then (beyond QEMU, which opens such an
 * image and fails its reads) that every block lies in the file. */
static gboolean cloop_check_offsets(CloopState *s, uint64_t file_size,
                                    GError **errp)
{
    const char *name = s->node->node_name;

    for (uint32_t i = 1; i <= s->n_blocks; i++) {
        if (s->offsets[i] < s->offsets[i - 1]) {
            FAIL("offsets not monotonically increasing at index %" PRIu32
                 ", image file is corrupt", i);
        }
        if (s->offsets[i] - s->offsets[i - 1] > CLOOP_COMPRESSED_MAX) {
            FAIL("invalid compressed block size at index %" PRIu32
                 ", image file is corrupt", i);
        }
    }
    for (uint32_t i = 0; i < s->n_blocks; i++) {
        if (s->offsets[i + 1] > file_size) {
            FAIL("Node '%s': cloop: block %" PRIu32 " (compressed data at "
                 "0x%" PRIx64 "..0x%" PRIx64 ") extends beyond the end of the "
                 "file (%" PRIu64 " bytes); the image is truncated", name, i,
                 s->offsets[i], s->offsets[i + 1], file_size);
        }
    }
    return TRUE;
}

static gboolean cloop_load(BdNode *node, CloopState *s, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    uint8_t h[8];
    uint64_t table_bytes;
    int ret;

    if (file_size < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-file_size));
    }
    if (file_size < CLOOP_HEADER_END) {
        FAIL("Node '%s': cloop: the file (%" PRId64 " bytes) is too short "
             "for a cloop header (%u bytes)", node->node_name, file_size,
             CLOOP_HEADER_END);
    }
    ret = bd_child_pread(s->file, 128, sizeof(h), h, 0);
    if (ret < 0) {
        FAIL("Could not read cloop header: %s", g_strerror(-ret));
    }
    s->block_size = get_be32(h);
    s->n_blocks = get_be32(h + 4);
    if (!cloop_check_header(s->block_size, s->n_blocks, errp)) {
        return FALSE;
    }
    table_bytes = ((uint64_t)s->n_blocks + 1) * sizeof(uint64_t);
    if (CLOOP_HEADER_END + table_bytes > (uint64_t)file_size) {
        FAIL("Node '%s': cloop: offsets table (%" PRIu64 " entries at %u) "
             "extends beyond the end of the file (%" PRId64 " bytes); the "
             "image is truncated", node->node_name, (uint64_t)s->n_blocks + 1,
             CLOOP_HEADER_END, file_size);
    }
    /* Bounded by the file size (above) and 512 MiB. */
    s->offsets = g_try_malloc(table_bytes);
    if (!s->offsets) {
        FAIL("Could not allocate offsets table");
    }
    ret = bd_child_pread(s->file, CLOOP_HEADER_END, table_bytes, s->offsets,
                         0);
    if (ret < 0) {
        FAIL("Could not read cloop offsets table: %s", g_strerror(-ret));
    }
    for (uint64_t i = 0; i <= s->n_blocks; i++) {
        s->offsets[i] = get_be64((const uint8_t *)&s->offsets[i]);
    }
    return cloop_check_offsets(s, (uint64_t)file_size, errp);
}

static void cloop_close(BdNode *node)
{
    CloopState *s = node->opaque;

    if (!s) {
        return;
    }
    /* No reader is left (the node is closing); the lock is for the
     * analysis. */
    bd_mutex_lock(&s->cache_lock);
    g_clear_pointer(&s->cache, g_free);
    bd_mutex_unlock(&s->cache_lock);
    bd_mutex_destroy(&s->cache_lock);
    g_free(s->offsets);
    g_free(s);
    node->opaque = NULL;
}

static gboolean cloop_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(CloopOptions) o = { 0 };
    CloopState *s;

    /* QEMU's bdrv_apply_auto_read_only(), before the file is opened. */
    if (!node->read_only) {
        if (!node->auto_read_only) {
            FAIL("Image is read-only");
        }
        node->read_only = TRUE;
    }
    bd_schema_decode(cloop_options, options, &o);
    s = g_new0(CloopState, 1);
    bd_mutex_init(&s->cache_lock);
    bd_mutex_lock(&s->cache_lock);
    s->cached = CLOOP_NO_BLOCK;
    bd_mutex_unlock(&s->cache_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !cloop_load(node, s, errp)) {
        cloop_close(node);
        return FALSE;
    }
    bd_node_set_size(node, (uint64_t)s->n_blocks * s->block_size);
    return TRUE;
}

/* No sub-sector I/O, as QEMU. */
static void cloop_refresh_limits(BdNode *node)
{
    node->request_alignment = MAX(node->request_alignment, CLOOP_SECTOR);
}

const BdDriver bd_cloop_driver = {
    .name = "cloop",
    .options = cloop_options,
    .is_format = TRUE,
    .open = cloop_open,
    .close = cloop_close,
    .pread = cloop_pread,
    .refresh_limits = cloop_refresh_limits,
};
