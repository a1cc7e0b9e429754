/* SPDX-License-Identifier: MIT */
/* blockctl status: the nodes as a tree from the exports and top nodes
 * down, the exports with their clients, the jobs with their progress. */
#include <stdio.h>
#include <string.h>

#include "ctl/blockctl.h"
#include "ctl/graph-model.h"
#include "control/input.h"

static void print_node(BdCtlGraph *gr, BdCtlVertex *v, const char *role,
                       int depth, GHashTable *seen)
{
    g_autofree char *line = bd_ctl_graph_describe(gr, v);

    printf("%*s%s%s%s\n", depth * 2, "", role ? role : "", role ? ": " : "",
           line);
    if (g_hash_table_contains(seen, v)) {
        return;   /* shared below two parents: shown once in full */
    }
    g_hash_table_add(seen, v);
    for (guint i = 0; i < v->children->len; i++) {
        BdCtlEdge *e = v->children->pdata[i];
        print_node(gr, e->child, e->name, depth + 1, seen);
    }
}

static void print_jobs(JsonArray *jobs)
{
    printf("Jobs:%s\n", json_array_get_length(jobs) ? "" : " none");
    for (guint i = 0; i < json_array_get_length(jobs); i++) {
        JsonObject *j = json_array_get_object_element(jobs, i);
        gint64 cur = json_object_get_int_member_with_default(
            j, "current-progress", 0);
        gint64 total = json_object_get_int_member_with_default(
            j, "total-progress", 0);
        printf("  %s (%s): %s, %.1f%%%s%s\n",
               json_object_get_string_member(j, "id"),
               json_object_get_string_member(j, "type"),
               json_object_get_string_member(j, "status"),
               total ? 100.0 * cur / total : 0.0,
               json_object_has_member(j, "error") ? ", error: " : "",
               json_object_get_string_member_with_default(j, "error", ""));
    }
}

static void print_exports(JsonArray *exports, JsonArray *clients)
{
    printf("Exports:%s\n", json_array_get_length(exports) ? "" : " none");
    for (guint i = 0; i < json_array_get_length(exports); i++) {
        JsonObject *e = json_array_get_object_element(exports, i);

        printf("  %s: %s export of node '%s'%s\n",
               json_object_get_string_member(e, "id"),
               json_object_get_string_member(e, "type"),
               json_object_get_string_member(e, "node-name"),
               json_object_get_boolean_member_with_default(
                   e, "shutting-down", FALSE) ? " (shutting down)" : "");
    }
    if (!clients) {
        return;
    }
    printf("NBD clients:%s\n", json_array_get_length(clients) ? "" : " none");
    for (guint k = 0; k < json_array_get_length(clients); k++) {
        JsonObject *c = json_array_get_object_element(clients, k);
        g_autofree char *rd = bd_ctl_size(
            json_object_get_int_member_with_default(c, "bytes-read", 0));
        g_autofree char *wr = bd_ctl_size(
            json_object_get_int_member_with_default(c, "bytes-written", 0));

        printf("  %s on '%s'%s: read %s, written %s\n",
               json_object_get_string_member_with_default(c, "address", "?"),
               json_object_get_string_member_with_default(c, "export", "?"),
               json_object_get_boolean_member_with_default(c, "tls", FALSE)
               ? " (TLS)" : "", rd, wr);
    }
}

int bd_ctl_cmd_status(const BdCtlGlobal *g, int argc, char **argv)
{
    g_autoptr(BdQmpClient) c = NULL;
    g_autoptr(JsonNode) exports = NULL, jobs = NULL, clients = NULL;
    g_autoptr(BdCtlGraph) gr = NULL;
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);

    if (argc > 1) {
        return bd_ctl_usage("status takes no arguments");
    }
    c = bd_ctl_connect(g);
    if (!c) {
        return BD_CTL_FAILED;
    }
    gr = bd_ctl_graph_load(c);
    exports = bd_ctl_execute(c, "query-block-exports", NULL);
    jobs = bd_ctl_execute(c, "query-jobs", NULL);
    if (!gr || !exports || !jobs) {
        return BD_CTL_FAILED;
    }
    /* blockd's own; a daemon without it shows no clients. */
    clients = bd_qmp_client_execute(c, "x-query-nbd-clients", NULL, NULL,
                                    NULL);
    if (g->json) {
        JsonObject *o = json_object_new();
        json_object_set_member(o, "nodes", json_node_copy(gr->nodes_info));
        json_object_set_member(o, "graph", json_node_copy(gr->raw));
        json_object_set_member(o, "exports", json_node_copy(exports));
        json_object_set_member(o, "clients", clients
                               ? json_node_copy(clients)
                               : bd_json_node_take_array(json_array_new()));
        json_object_set_member(o, "jobs", json_node_copy(jobs));
        g_autoptr(JsonNode) out = bd_json_node_take_object(o);
        bd_ctl_print_json(out);
        return BD_CTL_OK;
    }
    printf("Nodes:%s\n", gr->vertices->len ? "" : " none");
    for (guint i = 0; i < gr->vertices->len; i++) {
        BdCtlVertex *v = gr->vertices->pdata[i];
        if (!v->parents) {
            print_node(gr, v, NULL, 1, seen);
        }
    }
    print_exports(json_node_get_array(exports),
                  clients ? json_node_get_array(clients) : NULL);
    print_jobs(json_node_get_array(jobs));
    return BD_CTL_OK;
}
