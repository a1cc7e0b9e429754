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

/* The same from a parent's (new) options and driver, for reopen. */
GVariant *bd_inherit_options_from(const BdDriver *parent_drv,
                                  GVariant *parent_options, GVariant *child,
                                  BdChildRole role);

/* Whether 'node' is 'ancestor' or below it. */
gboolean bd_node_is_ancestor_of(BdNode *ancestor, BdNode *node);

#endif
