/* SPDX-License-Identifier: MIT */
/* Backing-chain surgery shared by the stream and commit jobs: filter
 * insertion and removal, backing changes, read-only toggles, allocation
 * queries through a chain, and the hook that rewrites an image's
 * backing file name.
 *
 * Thread model: everything here runs on the main thread, except
 * bd_chain_is_allocated*() and the two steps they walk the chain with,
 * bd_chain_next() and bd_chain_skip_filters() (any thread: the job
 * that asks has frozen the links it walks).
 */
#ifndef BD_JOBS_CHAIN_H
#define BD_JOBS_CHAIN_H

#include <glib.h>
#include "graph/node.h"

/* --- graph changes (main thread) --- */

/* Open a filter from 'options' (its child refers to 'below' by name) and
 * put it above 'below' in every parent.  Returns the new filter (one
 * reference, owned by the caller).  No node-name: implicit.  Open
 * errors are prefixed "Could not create node: " (QEMU's
 * bdrv_insert_node). */
BdNode *bd_chain_insert_filter(BdNode *below, GVariant *options,
                               GError **errp);

/* A job filter's open: take its child's file name and size, so that it
 * looks like the node it stands over (limits come from the graph). */
void bd_chain_filter_look_like(BdNode *filter, BdNode *child);

/* Take a filter out of the graph again (its parents get its filtered
 * child) and drop the caller's reference. */
void bd_chain_drop_filter(BdNode *filter);

/* Make 'base' (or nothing) the backing child of 'node'.  Drained. */
gboolean bd_chain_set_backing(BdNode *node, BdNode *base, GError **errp);

/* Reopen 'node' with read-only set to 'ro', its other options kept. */
gboolean bd_chain_reopen_read_only(BdNode *node, gboolean ro, GError **errp);

/* The filtered or COW child of 'node' (QEMU's bdrv_filter_or_cow_bs).
 * Any thread. */
BdNode *bd_chain_next(BdNode *node);
/* Skip filters from 'node' down.  Any thread. */
BdNode *bd_chain_skip_filters(BdNode *node);
/* Whether 'base' is 'top' or below it in its chain. */
gboolean bd_chain_contains(BdNode *top, BdNode *base);
/* The node directly above 'base' in the chain of 'top' (QEMU's
 * bdrv_find_overlay); NULL when 'base' is not below 'top'. */
BdNode *bd_chain_find_overlay(BdNode *top, BdNode *base);
/* The image named 'name' (node or file name) in the chain below 'top'. */
BdNode *bd_chain_find_backing_image(BdNode *top, const char *name);

/* Jobs claim the nodes they work on; a second job touching one is
 * refused with QEMU's "Node 'x' is busy: block device is in use by
 * block job: stream". */
gboolean bd_chain_check_busy(BdNode *node, GError **errp);
void bd_chain_claim(BdNode *node, const char *job_type);
void bd_chain_release(BdNode *node);

/* --- the backing file name in an image header --- */

/* The driver's change_backing_file, where it has one. */
gboolean bd_chain_change_backing_file(BdNode *node, const char *file,
                                      const char *fmt, GError **errp);

/* --- any thread --- */

/* Allocation of [offset, offset + bytes) in 'node' alone: 1 allocated,
 * 0 not, -errno; *pnum gets the length of the answer. */
int bd_chain_is_allocated(BdNode *node, uint64_t offset, uint64_t bytes,
                          uint64_t *pnum);
/* Allocated anywhere from 'top' down to 'base' (included when
 * include_base; NULL: the whole chain).  Filters are looked through. */
int bd_chain_is_allocated_above(BdNode *top, BdNode *base,
                                gboolean include_base, uint64_t offset,
                                uint64_t bytes, uint64_t *pnum);

#endif
