/* SPDX-License-Identifier: MIT */
/* The block graph as blockctl sees it (see graph-model.h). */
#include <string.h>

#include "ctl/graph-model.h"
#include "control/input.h"

static void vertex_free(BdCtlVertex *v)
{
    g_ptr_array_unref(v->children);
    g_free(v);
}

void bd_ctl_graph_free(BdCtlGraph *g)
{
    if (!g) {
        return;
    }
    g_clear_pointer(&g->vertices, g_ptr_array_unref);
    g_clear_pointer(&g->edges, g_ptr_array_unref);
    g_clear_pointer(&g->raw, json_node_unref);
    g_clear_pointer(&g->nodes_info, json_node_unref);
    g_free(g);
}

static BdCtlVertex *find(BdCtlGraph *g, gint64 id)
{
    for (guint i = 0; i < g->vertices->len; i++) {
        BdCtlVertex *v = g->vertices->pdata[i];
        if (v->id == id) {
            return v;
        }
    }
    return NULL;
}

BdCtlGraph *bd_ctl_graph_load(BdQmpClient *c)
{
    g_autoptr(BdCtlGraph) g = g_new0(BdCtlGraph, 1);
    g_autoptr(JsonNode) flat = NULL;
    JsonObject *args = json_object_new();
    JsonArray *nodes, *edges, *info;

    json_object_set_boolean_member(args, "flat", TRUE);
    flat = bd_json_node_take_object(args);
    g->vertices = g_ptr_array_new_with_free_func((GDestroyNotify)vertex_free);
    g->edges = g_ptr_array_new_with_free_func(g_free);
    g->raw = bd_ctl_execute(c, "x-debug-query-block-graph", NULL);
    if (!g->raw) {
        return NULL;
    }
    g->nodes_info = bd_ctl_execute(c, "query-named-block-nodes", flat);
    if (!g->nodes_info) {
        return NULL;
    }
    nodes = json_object_get_array_member(json_node_get_object(g->raw),
                                         "nodes");
    edges = json_object_get_array_member(json_node_get_object(g->raw),
                                         "edges");
    info = json_node_get_array(g->nodes_info);
    for (guint i = 0; i < json_array_get_length(nodes); i++) {
        JsonObject *n = json_array_get_object_element(nodes, i);
        BdCtlVertex *v = g_new0(BdCtlVertex, 1);

        v->id = json_object_get_int_member(n, "id");
        v->type = json_object_get_string_member(n, "type");
        v->name = json_object_get_string_member(n, "name");
        v->children = g_ptr_array_new();
        for (guint k = 0; k < json_array_get_length(info); k++) {
            JsonObject *ni = json_array_get_object_element(info, k);
            if (!strcmp(v->type, "block-driver") &&
                !g_strcmp0(json_object_get_string_member_with_default(
                               ni, "node-name", NULL), v->name)) {
                v->info = ni;
            }
        }
        g_ptr_array_add(g->vertices, v);
    }
    for (guint i = 0; i < json_array_get_length(edges); i++) {
        JsonObject *e = json_array_get_object_element(edges, i);
        BdCtlEdge *edge = g_new0(BdCtlEdge, 1);
        JsonArray *perm = json_object_get_array_member(e, "perm");

        edge->parent = find(g, json_object_get_int_member(e, "parent"));
        edge->child = find(g, json_object_get_int_member(e, "child"));
        edge->name = json_object_get_string_member(e, "name");
        for (guint k = 0; perm && k < json_array_get_length(perm); k++) {
            edge->writes |= !strcmp(json_array_get_string_element(perm, k),
                                    "write");
        }
        if (!edge->parent || !edge->child) {
            g_free(edge);
            continue;
        }
        g_ptr_array_add(edge->parent->children, edge);
        edge->child->parents++;
        g_ptr_array_add(g->edges, edge);
    }
    return g_steal_pointer(&g);
}

char *bd_ctl_graph_describe(BdCtlGraph *g, BdCtlVertex *v)
{
    GString *s = g_string_new(v->name);
    JsonObject *img;
    JsonArray *bitmaps;

    if (!v->info) {
        g_string_append_printf(s, " (%s)", v->type);
        return g_string_free(s, FALSE);
    }
    img = json_object_get_object_member(v->info, "image");
    g_autofree char *size = bd_ctl_size(
        json_object_get_int_member_with_default(img, "virtual-size", 0));
    g_string_append_printf(s, " (%s, %s, %s%s)",
        json_object_get_string_member_with_default(v->info, "drv", "?"),
        json_object_get_string_member_with_default(v->info, "file", ""),
        size,
        json_object_get_boolean_member_with_default(v->info, "ro", FALSE)
        ? ", read-only" : "");
    bitmaps = json_object_has_member(v->info, "dirty-bitmaps")
              ? json_object_get_array_member(v->info, "dirty-bitmaps")
              : NULL;
    for (guint i = 0; bitmaps && i < json_array_get_length(bitmaps); i++) {
        JsonObject *b = json_array_get_object_element(bitmaps, i);
        g_autofree char *dirty = bd_ctl_size(
            json_object_get_int_member_with_default(b, "count", 0));
        g_string_append_printf(s, "%s%s (dirty %s)", i ? ", " : " bitmaps: ",
            json_object_get_string_member_with_default(b, "name", "?"),
            dirty);
    }
    return g_string_free(s, FALSE);
}
