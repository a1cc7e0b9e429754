/* SPDX-License-Identifier: MIT */
/* Node information for query-named-block-nodes (QEMU's BlockDeviceInfo)
 * as an a{sv} GVariant with QEMU's field names.  Main thread. */
#ifndef BD_GRAPH_QUERY_H
#define BD_GRAPH_QUERY_H

#include "graph/node.h"

/* BlockDeviceInfo of one node; 'flat' leaves out backing-image. */
GVariant *bd_node_query_info(BdNode *node, gboolean flat);

#endif
