/* SPDX-License-Identifier: MIT */
/* The 'compress' filter driver (QEMU's): every write to it becomes a compressed write to 'file'.
 *
 * Thread model: open/close on the main thread; data callbacks on any
 * thread.  No state beyond the child: each callback forwards to it.
 * Writes are aligned to the child's cluster size by the generic layer
 * (request_alignment), so partial clusters are read, merged and written
 * whole, as QEMU's block layer does for this filter.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"

typedef struct {
    GVariant *file;
} CompressOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField compress_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(CompressOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(CompressOptions, compress_options)

static BdChild *compress_child(BdNode *node)
{
    return node->opaque;
}

/* The child's cluster size, from its query info ("cluster-size"). */
static int64_t child_cluster_size(BdNode *child)
{
    GVariantDict d;
    gint64 cs = 0;

    if (!child->drv->query_image_info) {
        return 0;
    }
    g_variant_dict_init(&d, NULL);
    child->drv->query_image_info(child, &d);
    if (!g_variant_dict_lookup(&d, "cluster-size", "x", &cs)) {
        cs = 0;
    }
    g_variant_dict_clear(&d);
    return cs;
}

static gboolean compress_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(CompressOptions) o = { 0 };
    BdChild *file;

    bd_schema_decode(compress_options, options, &o);
    file = bd_node_open_child(node, o.file, "file",
                              BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                              errp);
    if (!file) {
        return FALSE;
    }
    node->opaque = file;
    if (!(file->node->drv->supported_write_flags &
          BD_REQ_WRITE_COMPRESSED)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Compression is not supported for underlying format: %s",
                    file->node->drv->name);
        node->opaque = NULL;
        return FALSE;
    }
    bd_node_set_size(node, (uint64_t)bd_node_getlength(file->node));
    return TRUE;
}

/* Compressed clusters are written whole: requests come aligned to the
 * child's cluster size (the generic layer reads and merges the rest). */
static void compress_refresh_limits(BdNode *node)
{
    int64_t cs = child_cluster_size(compress_child(node)->node);

    if (cs > 0 && cs <= (1 << 21) && !(cs & (cs - 1))) {
        node->request_alignment = (uint32_t)cs;
    }
}

static void compress_close(BdNode *node)
{
    node->opaque = NULL;
}

static int compress_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                          void *buf, int flags)
{
    return bd_child_pread(compress_child(node), offset, bytes, buf, flags);
}

static int compress_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                           const void *buf, int flags)
{
    return bd_child_pwrite(compress_child(node), offset, bytes, buf,
                           flags | BD_REQ_WRITE_COMPRESSED);
}

static int compress_pwrite_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, int flags)
{
    return bd_child_pwrite_zeroes(compress_child(node), offset, bytes,
                                  flags);
}

static int compress_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    return bd_child_pdiscard(compress_child(node), offset, bytes);
}

static int compress_flush(BdNode *node)
{
    return bd_child_flush(compress_child(node));
}

static int compress_truncate(BdNode *node, uint64_t size)
{
    int ret = bd_node_truncate(compress_child(node)->node, size);

    if (ret == 0) {
        bd_node_set_size(node, size);
    }
    return ret;
}

const BdDriver bd_compress_driver = {
    .name = "compress",
    .options = compress_options,
    .is_filter = TRUE,
    .supported_write_flags = BD_REQ_WRITE_COMPRESSED,
    .open = compress_open,
    .close = compress_close,
    .refresh_limits = compress_refresh_limits,
    .pread = compress_pread,
    .pwrite = compress_pwrite,
    .pwrite_zeroes = compress_pwrite_zeroes,
    .pdiscard = compress_pdiscard,
    .flush = compress_flush,
    .truncate = compress_truncate,
};
