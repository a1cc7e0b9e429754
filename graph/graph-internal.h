/* SPDX-License-Identifier: MIT */
/* Functions shared between the files of graph/ only. */
#ifndef BD_GRAPH_INTERNAL_H
#define BD_GRAPH_INTERNAL_H

#include "graph/node.h"

/* The options of a child defined inline under 'parent', completed with
 * what it inherits (QEMU's bdrv_inherited_options).  Returns a new
 * floating a{sv}. */
GVariant *bd_child_inherit_options(BdNode *parent, GVariant *child,
                                   BdChildRole role);

#endif
