/* SPDX-License-Identifier: MIT */
/* Node limits computed in one place (QEMU's bdrv_refresh_limits and
 * bdrv_merge_limits): inherited from the children, overridden by the
 * driver, recomputed up the graph when a node's limits change.
 *
 * Thread model: main thread; the nodes concerned are being opened or
 * drained, so no request reads the limits while they change.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include "graph/main-thread.h"
#include "graph/node.h"

static uint64_t min_non_zero(uint64_t a, uint64_t b)
{
    if (!a) {
        return b;
    }
    return b ? MIN(a, b) : a;
}

void bd_node_refresh_limits(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    uint32_t old_align = node->request_alignment;
    uint64_t old_max = node->max_transfer;
    uint64_t max_transfer = 0;
    gboolean old_latency = node->latency_bound;
    gboolean latency_bound = FALSE;

    /* Data a request touches passes through these children. */
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (c->role & (BD_CHILD_DATA | BD_CHILD_FILTERED | BD_CHILD_COW)) {
            max_transfer = min_non_zero(max_transfer, c->node->max_transfer);
            latency_bound |= c->node->latency_bound;
        }
    }
    node->request_alignment = 1;
    node->max_transfer = max_transfer;
    node->latency_bound = latency_bound;
    /* A driver still opening has not set up what its callback reads;
     * bd_node_open refreshes the node once open has succeeded. */
    if (node->opened && node->drv->refresh_limits) {
        node->drv->refresh_limits(node);
    }
    if (node->request_alignment != old_align ||
        node->max_transfer != old_max ||
        node->latency_bound != old_latency) {
        for (GList *l = node->parents; l; l = l->next) {
            BdChild *c = l->data;
            if (c->parent && c->parent->opened) {
                bd_node_refresh_limits(c->parent);
            }
        }
    }
}
