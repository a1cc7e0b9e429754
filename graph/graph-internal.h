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

/* Reads of option dictionaries (a{sv}) by key, for the graph's generic
 * code alone; drivers and commands decode their options into a struct
 * instead (bd_schema_decode), so that no key outside their schema can
 * be read.  The remaining users, and why a key there is no schema
 * member of theirs:
 *   schema.c   the decoder itself, keyed by the table it is given, and
 *              a union's discriminator, named by the union's type;
 *   reopen.c   a node's children, whose keys are their role names
 *              ("file", "image", "children.0") known only at run time;
 *   inherit.c  the members a child defined inline takes from its
 *              parent's dictionary: copied as they are, never read.
 * Absent (or, for the string, mistyped) members give NULL / 'def'. */
GVariant *bd_opts_lookup(GVariant *opts, const char *key);   /* full, or NULL */
const char *bd_opts_get_str(GVariant *opts, const char *key, const char *def);

/* The table of the common BlockdevOptions members (node.c). */
const BdSchemaField *bd_node_common_fields(void);

/* The common options' rule between members (detect-zeroes=unmap needs
 * discard=unmap), for open and reopen. */
gboolean bd_node_options_check(const BdNodeOptions *o, GError **errp);

/* Whether 'node' is 'ancestor' or below it. */
gboolean bd_node_is_ancestor_of(BdNode *ancestor, BdNode *node);

/* Edges without permission updates (the callers do those):
 * link creates parent -> node (holding a reference to 'node'), listed
 * on both sides and as parent->file/backing; unlink takes an edge out
 * of both lists and the shortcuts and returns its position among the
 * parent's children; relink puts it back at that position; free drops
 * an unlinked edge and its reference. */
BdChild *bd_child_link(BdNode *parent, BdNode *node, const char *name,
                       BdChildRole role);
guint bd_child_unlink(BdChild *child);
void bd_child_relink(BdChild *child, guint index);
void bd_child_free(BdChild *child);

#endif
