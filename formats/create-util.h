/* SPDX-License-Identifier: MIT */
/* Helpers shared by the image formats' blockdev-create hooks. */
#ifndef BD_FORMATS_CREATE_UTIL_H
#define BD_FORMATS_CREATE_UTIL_H

#include "graph/node.h"

/* The node named 'name', looked up on the main thread (bd_node_find is
 * main-thread only) while the calling create-job thread waits; NULL
 * when there is none.  The job holds the node (and an entry with write
 * and resize permission on it) for the whole creation, so the pointer
 * stays valid.  Called on the main thread, it looks up directly. */
BdNode *bd_formats_create_find_node(const char *name);

/* The same from a create hook's decoded 'file' member (by now the node
 * name, jobs/create.c): the node, or NULL with QEMU's "Cannot find
 * device=... nor node-name=..." in *errp. */
BdNode *bd_formats_create_file_node(GVariant *file, GError **errp);

/* A random (version 4) UUID in 'out'. */
void bd_formats_uuid_generate(uint8_t out[16]);

#endif
