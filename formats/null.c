/* SPDX-License-Identifier: MIT */
/* The 'null-co' and 'null-aio' protocol drivers: a sized sink that discards writes.
 *
 * Thread model: open/close on the main thread; the data callbacks on
 * any thread.  The state is read-only after open.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <string.h>
#include "graph/error.h"
#include "graph/node.h"
#include "formats/json-filename.h"

#define NULL_DEFAULT_SIZE (1ull << 30)   /* QEMU's default: 1 GiB */

typedef struct {
    uint64_t latency_ns;
    gboolean read_zeroes;
} NullState;

typedef struct {
    gint64 size;
    gboolean has_size;
    guint64 latency_ns;
    gboolean read_zeroes;
    gboolean has_read_zeroes;
} NullOptions;

/* QAPI BlockdevOptionsNull. */
static const BdSchemaField null_options[] = {
    { "size", &bd_schema_int, TRUE, BD_AT(NullOptions, size),
      BD_HAS(NullOptions, size), .def.i = NULL_DEFAULT_SIZE,
      .flags = BD_FIELD_STRONG },
    { "latency-ns", &bd_schema_uint, TRUE, BD_AT(NullOptions, latency_ns) },
    { "read-zeroes", &bd_schema_bool, TRUE, BD_AT(NullOptions, read_zeroes),
      BD_HAS(NullOptions, read_zeroes), .flags = BD_FIELD_STRONG },
    { NULL },
};

/* Emulated latency: this request's thread sleeps, as QEMU's timer does
 * for its coroutine. */
static int null_common(NullState *s)
{
    if (s->latency_ns) {
        g_usleep(MAX(s->latency_ns / 1000, (uint64_t)1));
    }
    return 0;
}

static int null_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                      void *buf, int flags)
{
    NullState *s = node->opaque;

    /* As QEMU: without read-zeroes the buffer is left as it is. */
    if (s->read_zeroes) {
        memset(buf, 0, bytes);
    }
    return null_common(s);
}

static int null_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                       const void *buf, int flags)
{
    return null_common(node->opaque);
}

static int null_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                              int flags)
{
    return null_common(node->opaque);
}

static int null_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    return 0;
}

static int null_flush(BdNode *node)
{
    return null_common(node->opaque);
}

static int null_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *map, BdNode **file)
{
    NullState *s = node->opaque;

    /* QEMU's null_co_block_status: the range maps onto itself; it reads
     * as zeroes only with read-zeroes, and is never "data". */
    *pnum = bytes;
    *map = offset;
    *file = node;
    return BD_BLOCK_OFFSET_VALID | (s->read_zeroes ? BD_BLOCK_ZERO : 0);
}

static int64_t null_allocated_size(BdNode *node)
{
    return 0;
}

static void null_close(BdNode *node)
{
    g_clear_pointer(&node->opaque, g_free);
}

static gboolean null_open_common(BdNode *node, GVariant *options,
                                 const char *filename, GError **errp)
{
    NullOptions o = { 0 };
    gint64 size;
    guint64 latency;
    NullState *s;

    bd_schema_decode(null_options, options, &o);
    size = o.size;
    latency = o.latency_ns;

    if (size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'size' expects a non-negative number below 2^64");
        return FALSE;
    }
    if (latency > INT64_MAX) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "latency-ns is invalid");
        return FALSE;
    }
    s = g_new0(NullState, 1);
    s->latency_ns = latency;
    s->read_zeroes = o.read_zeroes;
    node->opaque = s;
    g_free(node->filename);
    /* As QEMU: "null-co://" unless size or read-zeroes were given. */
    if (o.has_size || o.has_read_zeroes) {
        node->filename = bd_formats_json_filename(node);
    } else {
        node->filename = g_strdup(filename);
    }
    bd_node_set_size(node, (uint64_t)size);
    return TRUE;
}

static gboolean null_co_open(BdNode *node, GVariant *options, GError **errp)
{
    return null_open_common(node, options, "null-co://", errp);
}

static gboolean null_aio_open(BdNode *node, GVariant *options, GError **errp)
{
    return null_open_common(node, options, "null-aio://", errp);
}

const BdDriver bd_null_co_driver = {
    .name = "null-co",
    .reopen_prepare = bd_reopen_prepare_fixed,
    .options = null_options,
    .is_protocol = TRUE,
    .open = null_co_open,
    .close = null_close,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .pdiscard = null_pdiscard,
    .flush = null_flush,
    .block_status = null_block_status,
    .allocated_size = null_allocated_size,
};

const BdDriver bd_null_aio_driver = {
    .name = "null-aio",
    .reopen_prepare = bd_reopen_prepare_fixed,
    .options = null_options,
    .is_protocol = TRUE,
    .open = null_aio_open,
    .close = null_close,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .pdiscard = null_pdiscard,
    .flush = null_flush,
    .block_status = null_block_status,
    .allocated_size = null_allocated_size,
};
