/* SPDX-License-Identifier: MIT */
/* The block graph as blockctl sees it: x-debug-query-block-graph's
 * vertices and edges, with query-named-block-nodes' details. */
#ifndef BD_CTL_GRAPH_MODEL_H
#define BD_CTL_GRAPH_MODEL_H

#include "ctl/blockctl.h"

typedef struct BdCtlVertex BdCtlVertex;

typedef struct {
    BdCtlVertex *parent, *child;
    const char *name;           /* role: file, backing, root, ... */
    gboolean writes;            /* the parent holds write permission */
} BdCtlEdge;

struct BdCtlVertex {
    gint64 id;
    const char *type;           /* block-driver, block-backend, block-job */
    const char *name;
    JsonObject *info;           /* query-named-block-nodes entry, or NULL */
    GPtrArray *children;        /* BdCtlEdge * */
    guint parents;
};

typedef struct {
    JsonNode *raw;              /* x-debug-query-block-graph */
    JsonNode *nodes_info;       /* query-named-block-nodes (flat) */
    GPtrArray *vertices;        /* BdCtlVertex *, in the daemon's order */
    GPtrArray *edges;           /* BdCtlEdge * */
} BdCtlGraph;

/* Both queries; NULL after printing the daemon's error. */
BdCtlGraph *bd_ctl_graph_load(BdQmpClient *c);
void bd_ctl_graph_free(BdCtlGraph *g);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdCtlGraph, bd_ctl_graph_free)

/* "disk (qcow2, disk.qcow2, 64 MiB, read-only) bitmaps: b0 (dirty 1 MiB)" */
char *bd_ctl_graph_describe(BdCtlGraph *g, BdCtlVertex *v);

#endif
