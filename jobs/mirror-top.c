/* SPDX-License-Identifier: MIT */
/* The 'mirror_top' filter (QEMU's mirror_top node): the mirror job puts
 * it above its source so that every user of the source writes through
 * it.  In background mode it passes requests through (the source's
 * dirty bitmap records the writes for the job); in write-blocking mode
 * it hands guest writes to the job, which writes source and target
 * before the request completes.
 *
 * Thread model: open/close on the main thread; the hook is set on the
 * main thread while the filter's users are drained (or before it has
 * any); data callbacks on any thread read it without a lock.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "jobs/chain.h"
#include "jobs/mirror.h"

typedef struct {
    BdChild *backing;
    BdMirrorTopHook hook;        /* NULL: pass through */
    void *opaque;
} MirrorTopState;

typedef struct {
    GVariant *backing;
} MirrorTopOptions;

static const BdSchemaField mirror_top_options[] = {
    { "backing", &bd_schema_blockdev_ref, FALSE, BD_AT(MirrorTopOptions, backing) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(MirrorTopOptions, mirror_top_options)

static gboolean mirror_top_open(BdNode *node, GVariant *options,
                                GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(MirrorTopOptions) o = { 0 };
    MirrorTopState *s;
    BdChild *child;

    bd_schema_decode(mirror_top_options, options, &o);
    child = bd_node_open_child(node, o.backing, "backing",
                               BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                               errp);

    if (!child) {
        return FALSE;
    }
    s = g_new0(MirrorTopState, 1);
    s->backing = child;
    node->opaque = s;
    bd_chain_filter_look_like(node, child->node);
    return TRUE;
}

static void mirror_top_close(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    g_clear_pointer(&node->opaque, g_free);
}

void bd_mirror_top_set_hook(BdNode *filter, BdMirrorTopHook hook,
                            void *opaque)
{
    BD_GLOBAL_STATE_CODE();

    MirrorTopState *s = filter->opaque;

    s->hook = hook;
    s->opaque = opaque;
}

/* What the users need passes through; everything is shared (the job
 * reads the source itself and its target is another node).  Resize is
 * not passed on: the job copies a fixed length (QEMU's mirror_top
 * refuses it as well). */
static void mirror_top_child_perm(BdNode *node, BdChild *child,
                                  BdChildRole role, uint64_t parent_perm,
                                  uint64_t parent_shared, uint64_t *perm,
                                  uint64_t *shared)
{
    (void)node;
    (void)child;
    (void)role;
    (void)parent_shared;
    /* Resize too: the filter cannot resize (the job copies a fixed
     * length), but asking it of the source lets the job's own handle,
     * which does not share it, refuse a parent that wants it, as QEMU's
     * job refuses it on its filter. */
    *perm = parent_perm & (BD_PERM_CONSISTENT_READ | BD_PERM_WRITE |
                           BD_PERM_WRITE_UNCHANGED | BD_PERM_RESIZE);
    *shared = BD_PERM_ALL;
}

static int mirror_top_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                            void *buf, int flags)
{
    MirrorTopState *s = node->opaque;

    return bd_child_pread(s->backing, offset, bytes, buf, flags);
}

static int mirror_top_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                             const void *buf, int flags)
{
    MirrorTopState *s = node->opaque;
    BdMirrorTopHook hook = s->hook;

    if (hook) {
        return hook(s->opaque, BD_MIRROR_OP_WRITE, offset, bytes, buf,
                    flags);
    }
    return bd_child_pwrite(s->backing, offset, bytes, buf, flags);
}

static int mirror_top_pwrite_zeroes(BdNode *node, uint64_t offset,
                                    uint64_t bytes, int flags)
{
    MirrorTopState *s = node->opaque;
    BdMirrorTopHook hook = s->hook;

    if (hook) {
        return hook(s->opaque, BD_MIRROR_OP_ZEROES, offset, bytes, NULL,
                    flags);
    }
    return bd_child_pwrite_zeroes(s->backing, offset, bytes, flags);
}

static int mirror_top_pdiscard(BdNode *node, uint64_t offset,
                               uint64_t bytes)
{
    MirrorTopState *s = node->opaque;
    BdMirrorTopHook hook = s->hook;

    if (hook) {
        return hook(s->opaque, BD_MIRROR_OP_DISCARD, offset, bytes, NULL,
                    0);
    }
    return bd_child_pdiscard(s->backing, offset, bytes);
}

static int mirror_top_flush(BdNode *node)
{
    MirrorTopState *s = node->opaque;

    return bd_child_flush(s->backing);
}

static int mirror_top_truncate(BdNode *node, uint64_t size)
{
    (void)node;
    (void)size;
    return -EBUSY;
}

const BdDriver bd_mirror_top_driver = {
    .name = "mirror_top",
    .options = mirror_top_options,
    .is_filter = TRUE,
    .open = mirror_top_open,
    .close = mirror_top_close,
    .child_perm = mirror_top_child_perm,
    .pread = mirror_top_pread,
    .pwrite = mirror_top_pwrite,
    .pwrite_zeroes = mirror_top_pwrite_zeroes,
    .pdiscard = mirror_top_pdiscard,
    .flush = mirror_top_flush,
    .truncate = mirror_top_truncate,
};
