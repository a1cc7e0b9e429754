/* SPDX-License-Identifier: MIT */
/* Node information for query-named-block-nodes (QEMU's BlockDeviceInfo)
 * as an a{sv} GVariant with QEMU's field names.  Main thread. */
#ifndef BD_GRAPH_QUERY_H
#define BD_GRAPH_QUERY_H

#include "graph/node.h"

/* BlockDeviceInfo of one node; 'flat' leaves out backing-image. */
GVariant *bd_node_query_info(BdNode *node, gboolean flat);
/* The node's file name as queries show it now, newly allocated (QEMU's
 * refreshed bs->filename): what goes into an overlay's header when the
 * node becomes its backing file. */
char *bd_node_query_filename(BdNode *node);

#endif
