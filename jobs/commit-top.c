/* SPDX-License-Identifier: MIT */
/* The 'commit_top' filter (QEMU's commit_top): an intermediate commit
 * puts it above the top image.  It takes no permissions of its own and
 * shares everything, so that the job may write into the base under the
 * chain.  (Active commit is the mirror job's, with mirror_top.)
 *
 * Thread model: open/close on the main thread; data callbacks on any
 * thread.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "jobs/chain.h"
#include "jobs/commit.h"
#include "jobs/commit-int.h"

typedef struct {
    BdChild *backing;
} CommitTopState;

typedef struct {
    GVariant *backing;
} CommitTopOptions;

static const BdSchemaField commit_top_options[] = {
    { "backing", &bd_schema_blockdev_ref, FALSE, BD_AT(CommitTopOptions, backing) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(CommitTopOptions, commit_top_options)

static gboolean commit_top_open(BdNode *node, GVariant *options,
                                GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(CommitTopOptions) o = { 0 };
    CommitTopState *s;
    BdChild *child;

    bd_schema_decode(commit_top_options, options, &o);
    child = bd_node_open_child(node, o.backing, "backing",
                               BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                               errp);
    if (!child) {
        return FALSE;
    }
    s = g_new0(CommitTopState, 1);
    s->backing = child;
    node->opaque = s;
    bd_chain_filter_look_like(node, child->node);
    return TRUE;
}

static void commit_top_close(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    g_clear_pointer(&node->opaque, g_free);
}

/* Nothing is needed, everything is shared (the job writes the base
 * below; the overlay above only reads). */
static void commit_top_child_perm(BdNode *node, BdChild *child,
                                  BdChildRole role, uint64_t parent_perm,
                                  uint64_t parent_shared, uint64_t *perm,
                                  uint64_t *shared)
{
    (void)node;
    (void)child;
    (void)role;
    (void)parent_perm;
    (void)parent_shared;
    *perm = 0;
    *shared = BD_PERM_ALL;
}

static int commit_top_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                            void *buf, int flags)
{
    CommitTopState *s = node->opaque;

    return bd_child_pread(s->backing, offset, bytes, buf, flags);
}

static int commit_top_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                             const void *buf, int flags)
{
    CommitTopState *s = node->opaque;
    return bd_child_pwrite(s->backing, offset, bytes, buf, flags);
}

static int commit_top_pwrite_zeroes(BdNode *node, uint64_t offset,
                                    uint64_t bytes, int flags)
{
    CommitTopState *s = node->opaque;
    return bd_child_pwrite_zeroes(s->backing, offset, bytes, flags);
}

static int commit_top_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    CommitTopState *s = node->opaque;
    return bd_child_pdiscard(s->backing, offset, bytes);
}

/* The status of the whole chain below (the generic walk follows only
 * 'backing' links from the node it starts at, not a filter's child). */
static int commit_top_block_status(BdNode *node, uint64_t offset,
                                   uint64_t bytes, uint64_t *pnum,
                                   uint64_t *map, BdNode **file)
{
    CommitTopState *s = node->opaque;
    int ret = bd_node_block_status_above(s->backing->node, offset, bytes,
                                         pnum, NULL);

    *map = 0;
    *file = NULL;
    return ret < 0 ? ret : ret & (BD_BLOCK_DATA | BD_BLOCK_ZERO);
}

static int commit_top_flush(BdNode *node)
{
    CommitTopState *s = node->opaque;

    return bd_child_flush(s->backing);
}

static int commit_top_truncate(BdNode *node, uint64_t size)
{
    /* The job copies a fixed length; resizing under it is refused, as
     * QEMU's jobs do by not sharing resize. */
    (void)node;
    (void)size;
    return -EBUSY;
}

const BdDriver bd_commit_top_driver = {
    .name = "commit_top",
    .options = commit_top_options,
    .is_filter = TRUE,
    .open = commit_top_open,
    .close = commit_top_close,
    .child_perm = commit_top_child_perm,
    .pread = commit_top_pread,
    .pwrite = commit_top_pwrite,
    .pwrite_zeroes = commit_top_pwrite_zeroes,
    .pdiscard = commit_top_pdiscard,
    .flush = commit_top_flush,
    .block_status = commit_top_block_status,
    .truncate = commit_top_truncate,
};
