/* SPDX-License-Identifier: MIT */
/* Debug events (QEMU's BlkdebugEvent): points in a driver's I/O path that blkdebug rules react to.
 *
 * A parent announces "I am about to do X through this child" with
 * bd_debug_event(child, ev); when the child node's driver has a
 * debug_event hook (blkdebug), it updates its rule state, which may make
 * the next request to it fail.  Drivers without the hook ignore events,
 * so emitting costs one pointer test.  Any thread.
 *
 * The values and names follow qapi/block-core.json (BlkdebugEvent) in
 * order; the names are what blkdebug's options and config files use.
 */
#ifndef BD_GRAPH_DEBUG_EVENT_H
#define BD_GRAPH_DEBUG_EVENT_H

#include <string.h>
#include "graph/node.h"

#define BD_DEBUG_EVENTS(X)                                              \
    X(L1_UPDATE, "l1_update")                                           \
    X(L1_GROW_ALLOC_TABLE, "l1_grow_alloc_table")                       \
    X(L1_GROW_WRITE_TABLE, "l1_grow_write_table")                       \
    X(L1_GROW_ACTIVATE_TABLE, "l1_grow_activate_table")                 \
    X(L2_LOAD, "l2_load")                                               \
    X(L2_UPDATE, "l2_update")                                           \
    X(L2_UPDATE_COMPRESSED, "l2_update_compressed")                     \
    X(L2_ALLOC_COW_READ, "l2_alloc_cow_read")                           \
    X(L2_ALLOC_WRITE, "l2_alloc_write")                                 \
    X(READ_AIO, "read_aio")                                             \
    X(READ_BACKING_AIO, "read_backing_aio")                             \
    X(READ_COMPRESSED, "read_compressed")                               \
    X(WRITE_AIO, "write_aio")                                           \
    X(WRITE_COMPRESSED, "write_compressed")                             \
    X(VMSTATE_LOAD, "vmstate_load")                                     \
    X(VMSTATE_SAVE, "vmstate_save")                                     \
    X(COW_READ, "cow_read")                                             \
    X(COW_WRITE, "cow_write")                                           \
    X(REFTABLE_LOAD, "reftable_load")                                   \
    X(REFTABLE_GROW, "reftable_grow")                                   \
    X(REFTABLE_UPDATE, "reftable_update")                               \
    X(REFBLOCK_LOAD, "refblock_load")                                   \
    X(REFBLOCK_UPDATE, "refblock_update")                               \
    X(REFBLOCK_UPDATE_PART, "refblock_update_part")                     \
    X(REFBLOCK_ALLOC, "refblock_alloc")                                 \
    X(REFBLOCK_ALLOC_HOOKUP, "refblock_alloc_hookup")                   \
    X(REFBLOCK_ALLOC_WRITE, "refblock_alloc_write")                     \
    X(REFBLOCK_ALLOC_WRITE_BLOCKS, "refblock_alloc_write_blocks")       \
    X(REFBLOCK_ALLOC_WRITE_TABLE, "refblock_alloc_write_table")         \
    X(REFBLOCK_ALLOC_SWITCH_TABLE, "refblock_alloc_switch_table")       \
    X(CLUSTER_ALLOC, "cluster_alloc")                                   \
    X(CLUSTER_ALLOC_BYTES, "cluster_alloc_bytes")                       \
    X(CLUSTER_FREE, "cluster_free")                                     \
    X(FLUSH_TO_OS, "flush_to_os")                                       \
    X(FLUSH_TO_DISK, "flush_to_disk")                                   \
    X(PWRITEV_RMW_HEAD, "pwritev_rmw_head")                             \
    X(PWRITEV_RMW_AFTER_HEAD, "pwritev_rmw_after_head")                 \
    X(PWRITEV_RMW_TAIL, "pwritev_rmw_tail")                             \
    X(PWRITEV_RMW_AFTER_TAIL, "pwritev_rmw_after_tail")                 \
    X(PWRITEV, "pwritev")                                               \
    X(PWRITEV_ZERO, "pwritev_zero")                                     \
    X(PWRITEV_DONE, "pwritev_done")                                     \
    X(EMPTY_IMAGE_PREPARE, "empty_image_prepare")                       \
    X(L1_SHRINK_WRITE_TABLE, "l1_shrink_write_table")                   \
    X(L1_SHRINK_FREE_L2_CLUSTERS, "l1_shrink_free_l2_clusters")         \
    X(COR_WRITE, "cor_write")                                           \
    X(CLUSTER_ALLOC_SPACE, "cluster_alloc_space")                       \
    X(NONE, "none")

#define BD_DEBUG_EVENT_ENUM_(id, name) BD_DEBUG_EVENT_##id,
typedef enum BdDebugEvent {
    BD_DEBUG_EVENTS(BD_DEBUG_EVENT_ENUM_)
    BD_DEBUG_EVENT__MAX
} BdDebugEvent;
#undef BD_DEBUG_EVENT_ENUM_

/* The QAPI names, indexed by BdDebugEvent, NULL-terminated (usable as a
 * schema enum_values list). */
#define BD_DEBUG_EVENT_NAME_(id, name) name,
static const char *const bd_debug_event_names[BD_DEBUG_EVENT__MAX + 1] = {
    BD_DEBUG_EVENTS(BD_DEBUG_EVENT_NAME_)
    NULL
};
#undef BD_DEBUG_EVENT_NAME_

/* The event with QAPI name 'name', or -1. */
static inline int bd_debug_event_from_name(const char *name)
{
    for (int i = 0; name && i < BD_DEBUG_EVENT__MAX; i++) {
        if (strcmp(bd_debug_event_names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

/* Announce 'ev' to the node below 'child' (QEMU's BLKDBG_EVENT). */
static inline void bd_debug_event(BdChild *child, BdDebugEvent ev)
{
    if (child && child->node->drv && child->node->drv->debug_event) {
        child->node->drv->debug_event(child->node, (int)ev);
    }
}

/* The node's primary child (QEMU's bdrv_primary_child), or NULL. */
static inline BdChild *bd_debug_primary_child(BdNode *node)
{
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (c->role & BD_CHILD_PRIMARY) {
            return c;
        }
    }
    return NULL;
}

#endif
