/* SPDX-License-Identifier: MIT */
/* Inherited options of nested child definitions (QEMU's rules). */
#ifndef BD_FORMATS_CHILD_OPTS_H
#define BD_FORMATS_CHILD_OPTS_H

#include "graph/node.h"

/* A copy of 'options' whose nested definition under 'key' (when it is a
 * dictionary, not a node-name) carries the options it inherits from the
 * parent.  Pass the result to bd_node_open_child(); unref it after. */
GVariant *bd_formats_inherit_child_options(GVariant *options,
                                           const char *key, BdChildRole role);

#endif
