/* SPDX-License-Identifier: MIT */
/* Iothreads of nodes and exports: which worker pool an export's threads
 * join, and moving a node's exports with it (x-blockdev-set-iothread).
 *
 * QEMU runs every node and BlockBackend of a connected graph in one
 * AioContext (the main loop or an iothread's).  blockd keeps the same
 * bookkeeping -- each node records its iothread as a worker pool
 * (BdNode.pool) and a move takes the whole connected graph along -- but
 * what runs "in" an iothread is only an export's worker threads: they
 * join the pool (named after it, counted, bounded by thread-pool-max;
 * graph/worker-pool.h).  Requests keep running synchronously on those
 * threads, as everywhere in blockd.
 *
 * QEMU's rules, with its texts: an export with 'iothread' moves its
 * node's graph there; if another user of that graph cannot move (an
 * export with fixed-iothread) the new export fails when it is fixed
 * itself and otherwise runs where the node is.  An export without
 * 'iothread' runs where its node is.
 *
 * Thread model: main thread only (asserted); workers follow a move
 * through their export's pool slot.
 */
#define G_LOG_DOMAIN "blockd-export"

#include "export/export.h"
#include "graph/main-thread.h"

/* The nodes connected to 'node' through child links either way. */
static GHashTable *connected_nodes(BdNode *node)
{
    GHashTable *seen = g_hash_table_new(NULL, NULL);
    GPtrArray *todo = g_ptr_array_new();

    g_hash_table_add(seen, node);
    g_ptr_array_add(todo, node);
    while (todo->len) {
        BdNode *n = g_ptr_array_steal_index_fast(todo, todo->len - 1);

        for (guint i = 0; i < n->children->len; i++) {
            BdChild *c = g_ptr_array_index(n->children, i);
            if (g_hash_table_add(seen, c->node)) {
                g_ptr_array_add(todo, c->node);
            }
        }
        for (GList *l = n->parents; l; l = l->next) {
            BdChild *c = l->data;
            if (c->parent && g_hash_table_add(seen, c->parent)) {
                g_ptr_array_add(todo, c->parent);
            }
        }
    }
    g_ptr_array_free(todo, TRUE);
    return seen;
}

static BdNode *export_node(BdExport *exp)
{
    return exp->entry ? bd_entry_node(exp->entry) : NULL;
}

/* Move 'nodes' and their exports to 'pool', unless an export fixed to
 * another iothread is among them (QEMU's blk_root_change_aio_ctx). */
static gboolean move_nodes(GHashTable *nodes, BdWorkerPool *pool,
                           GError **errp)
{
    GPtrArray *exports = bd_export_list();
    GHashTableIter it;
    gpointer key;

    for (guint i = 0; i < exports->len; i++) {
        BdExport *exp = exports->pdata[i];
        g_autoptr(BdWorkerPool) cur = NULL;

        if (!exp->fixed_iothread ||
            !g_hash_table_contains(nodes, export_node(exp))) {
            continue;
        }
        cur = bd_worker_pool_slot_get(&exp->pool);
        if (cur != pool) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot change iothread of active block backend");
            return FALSE;
        }
    }
    g_hash_table_iter_init(&it, nodes);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        BdNode *n = key;
        if (n->pool != pool) {
            g_clear_pointer(&n->pool, bd_worker_pool_unref);
            n->pool = pool ? bd_worker_pool_ref(pool) : NULL;
        }
    }
    for (guint i = 0; i < exports->len; i++) {
        BdExport *exp = exports->pdata[i];

        if (g_hash_table_contains(nodes, export_node(exp))) {
            g_autoptr(BdWorkerPool) cur = bd_worker_pool_slot_get(&exp->pool);
            if (cur != pool) {
                bd_worker_pool_slot_set(&exp->pool, pool);
            }
        }
    }
    return TRUE;
}

static gboolean all_in(GHashTable *nodes, BdWorkerPool *pool)
{
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, nodes);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (((BdNode *)key)->pool != pool) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean bd_export_node_set_pool(BdNode *node, BdWorkerPool *pool,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GHashTable) nodes = connected_nodes(node);

    /* QEMU: already there, nothing checked.  The whole graph is looked
     * at: a node attached later to a graph in an iothread stays where it
     * was made (QEMU 7.2 crashes there), and a move makes it one again. */
    if (all_in(nodes, pool)) {
        return TRUE;
    }
    return move_nodes(nodes, pool, errp);
}

gboolean bd_export_pick_pool(BdNode *node, BdWorkerPool *want,
                             gboolean fixed, BdWorkerPool **out,
                             GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;

    if (want && !bd_export_node_set_pool(node, want, &err)) {
        if (fixed) {
            g_propagate_error(errp, g_steal_pointer(&err));
            return FALSE;
        }
        g_debug("node '%s': stays in its iothread: %s", node->node_name,
                err->message);
    }
    *out = node->pool;
    return TRUE;
}

gboolean bd_export_pool_in_use(BdWorkerPool *pool)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *nodes = bd_node_list();
    GPtrArray *exports = bd_export_list();

    for (guint i = 0; i < nodes->len; i++) {
        if (((BdNode *)nodes->pdata[i])->pool == pool) {
            return TRUE;
        }
    }
    for (guint i = 0; i < exports->len; i++) {
        g_autoptr(BdWorkerPool) cur =
            bd_worker_pool_slot_get(&((BdExport *)exports->pdata[i])->pool);
        if (cur == pool) {
            return TRUE;
        }
    }
    return FALSE;
}
