/* SPDX-License-Identifier: MIT */
/* The 'snapshot-access' driver (QEMU's): a read-only view of the frozen
 * point-in-time image that its 'file' child keeps, for image fleecing.
 * The child is a copy-before-write filter: reads come from its source
 * where the guest has not written since the filter started, from its
 * target where it has (formats/copy-before-write.c).  Block status and
 * discard go to the child's snapshot API too; discard tells the filter
 * that a region of the view is no longer needed (a pull client that
 * discards what it has read keeps the fleecing target small).
 *
 *   NBD export (read-only) --> snapshot-access --file--> copy-before-write
 *                                                         |file   |target
 *                                                       source  fleece
 *
 * Like QEMU's, it opens over any node; one without a snapshot API
 * answers every read with ENOTSUP.  Writes are not supported.
 * Thread model: open/close on the main thread, data callbacks on any.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include "graph/io.h"
#include "graph/node.h"

typedef struct {
    GVariant *file;
} SnapshotAccessOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField snapshot_access_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE,
      BD_AT(SnapshotAccessOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(SnapshotAccessOptions, snapshot_access_options)

static gboolean snapshot_access_open(BdNode *node, GVariant *options,
                                     GError **errp)
{
    g_auto(SnapshotAccessOptions) o = { 0 };
    BdChild *file;

    bd_schema_decode(snapshot_access_options, options, &o);
    file = bd_node_open_child(node, o.file, "file",
                              BD_CHILD_DATA | BD_CHILD_PRIMARY, FALSE, errp);
    if (!file) {
        return FALSE;
    }
    g_free(node->filename);
    node->filename = g_strdup(file->node->filename);
    bd_node_set_size(node, (uint64_t)bd_node_getlength(file->node));
    return TRUE;
}

/* The snapshot API needs no permission on the child: the view it reads
 * is frozen by the filter, whoever writes below. */
static void snapshot_access_child_perm(BdNode *node, BdChild *child,
                                       BdChildRole role,
                                       uint64_t parent_perm,
                                       uint64_t parent_shared,
                                       uint64_t *perm, uint64_t *shared)
{
    *perm = 0;
    *shared = BD_PERM_ALL;
}

static int snapshot_access_pread(BdNode *node, uint64_t offset,
                                 uint64_t bytes, void *buf, int flags)
{
    if (flags) {
        return -ENOTSUP;
    }
    return bd_node_pread_snapshot(node->file->node, offset, bytes, buf);
}

static int snapshot_access_block_status(BdNode *node, uint64_t offset,
                                        uint64_t bytes, uint64_t *pnum,
                                        uint64_t *map, BdNode **file)
{
    return bd_node_block_status_snapshot(node->file->node, offset, bytes,
                                         pnum, map, file);
}

static int snapshot_access_pdiscard(BdNode *node, uint64_t offset,
                                    uint64_t bytes)
{
    return bd_node_pdiscard_snapshot(node->file->node, offset, bytes);
}

static int snapshot_access_pwrite(BdNode *node, uint64_t offset,
                                  uint64_t bytes, const void *buf, int flags)
{
    return -ENOTSUP;
}

static int snapshot_access_pwrite_zeroes(BdNode *node, uint64_t offset,
                                         uint64_t bytes, int flags)
{
    return -ENOTSUP;
}

/* Nothing of the view is cached here, and the child is not ours to
 * flush (no write permission on it). */
static int snapshot_access_flush(BdNode *node)
{
    return 0;
}

const BdDriver bd_snapshot_access_driver = {
    .name = "snapshot-access",
    .options = snapshot_access_options,
    .open = snapshot_access_open,
    .child_perm = snapshot_access_child_perm,
    .pread = snapshot_access_pread,
    .pwrite = snapshot_access_pwrite,
    .pwrite_zeroes = snapshot_access_pwrite_zeroes,
    .pdiscard = snapshot_access_pdiscard,
    .flush = snapshot_access_flush,
    .block_status = snapshot_access_block_status,
};
