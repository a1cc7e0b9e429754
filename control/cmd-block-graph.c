/* SPDX-License-Identifier: MIT */
/* x-debug-query-block-graph (QEMU's XDbgBlockGraph): every node and
 * every edge of the block graph, with the permissions each parent holds
 * on its child.  blockctl draws it.
 *
 * Thread model: main thread only.
 */
#include <string.h>

#include "control/qmp-int.h"
#include "graph/entry.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "control/input.h"

typedef struct {
    GHashTable *ids;        /* BdNode * or BdEntry * -> id */
    guint64 next_id;
    JsonArray *nodes;
    JsonArray *edges;
} Graph;

static const char *const perm_names[] = {
    "consistent-read", "write", "write-unchanged", "resize",
};

static JsonNode *perm_list(uint64_t perm)
{
    JsonArray *a = json_array_new();

    for (guint i = 0; i < G_N_ELEMENTS(perm_names); i++) {
        if (perm & (1ull << i)) {
            json_array_add_string_element(a, perm_names[i]);
        }
    }
    return bd_json_node_take_array(a);
}

/* The id of a vertex, adding it to the node list the first time. */
static guint64 vertex(Graph *g, gconstpointer key, const char *type,
                      const char *name)
{
    gpointer id = g_hash_table_lookup(g->ids, key);
    JsonObject *o;

    if (id) {
        return GPOINTER_TO_SIZE(id);
    }
    g->next_id++;
    g_hash_table_insert(g->ids, (gpointer)key, GSIZE_TO_POINTER(g->next_id));
    o = json_object_new();
    json_object_set_int_member(o, "id", (gint64)g->next_id);
    json_object_set_string_member(o, "type", type);
    json_object_set_string_member(o, "name", name);
    json_array_add_object_element(g->nodes, o);
    return g->next_id;
}

static void add_edges(Graph *g, BdNode *node)
{
    guint64 child_id = vertex(g, node, "block-driver", node->node_name);

    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        guint64 parent_id;
        JsonObject *e = json_object_new();

        if (c->parent) {
            parent_id = vertex(g, c->parent, "block-driver",
                               c->parent->node_name);
        } else {
            g_autofree char *desc = bd_entry_owner_desc(c->entry);
            parent_id = vertex(g, c->entry, "block-backend", desc);
        }
        json_object_set_int_member(e, "parent", (gint64)parent_id);
        json_object_set_int_member(e, "child", (gint64)child_id);
        json_object_set_string_member(e, "name", c->name);
        json_object_set_member(e, "perm", perm_list(c->perm));
        json_object_set_member(e, "shared-perm", perm_list(c->shared));
        json_array_add_object_element(g->edges, e);
    }
}

static gboolean query_block_graph(GVariant *args, JsonNode **ret,
                                  GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GHashTable) ids = g_hash_table_new(NULL, NULL);
    Graph g = { .ids = ids, .nodes = json_array_new(),
                .edges = json_array_new() };
    GPtrArray *list = bd_node_list();
    JsonObject *o = json_object_new();

    for (guint i = 0; i < list->len; i++) {
        add_edges(&g, list->pdata[i]);
    }
    /* Nodes below named ones that have no name of their own are reached
     * as children: walk the children too. */
    for (guint i = 0; i < list->len; i++) {
        BdNode *n = list->pdata[i];
        for (guint j = 0; j < n->children->len; j++) {
            BdChild *c = n->children->pdata[j];
            if (!g_hash_table_contains(ids, c->node)) {
                add_edges(&g, c->node);
            }
        }
    }
    json_object_set_array_member(o, "nodes", g.nodes);
    json_object_set_array_member(o, "edges", g.edges);
    *ret = bd_json_node_take_object(o);
    return TRUE;
}

static const BdQmpCommand graph_commands[] = {
    { "x-debug-query-block-graph", NULL, FALSE, NULL, query_block_graph },
    { NULL } };

void bd_cmd_block_graph_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(graph_commands);
}
