/* SPDX-License-Identifier: MIT */
/* Entry handles: where exports and jobs submit I/O into the graph.
 *
 * An entry handle (QEMU's BlockBackend) is attached to one node as a
 * "root" parent with its own permissions.  Every request is admitted
 * here, counted in flight while it runs, and held back while the handle
 * is quiesced by a drain.
 *
 * Thread model: bd_entry_p*() and friends are called from any thread.
 * Admission is lock-free on the fast path: the in-flight counter is
 * raised first, then the quiesce counter is checked; a drainer raises
 * the quiesce counter first, then waits for in-flight to reach zero
 * under 'lock'.  Creation, destruction, permission changes and drain
 * happen on the main thread.
 */
#ifndef BD_GRAPH_ENTRY_H
#define BD_GRAPH_ENTRY_H

#include "graph/node.h"

/* Attach a handle to 'node' needing 'perm' and sharing 'shared'.
 * 'owner' describes the user in messages ("export 'exp0'"); may be NULL
 * for "a block device".  Checks permissions before attaching. */
BdEntry *bd_entry_new(BdNode *node, const char *owner, uint64_t perm,
                      uint64_t shared, GError **errp);
/* Drain, detach and free.  Main thread. */
void bd_entry_free(BdEntry *entry);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdEntry, bd_entry_free)

BdNode *bd_entry_node(BdEntry *entry);
/* "export x", or "an unnamed block device" when the owner was not named. */
char *bd_entry_owner_desc(const BdEntry *entry);
gboolean bd_entry_set_perm(BdEntry *entry, uint64_t perm, uint64_t shared,
                           GError **errp);
/* What the handle needs and shares now.  Main thread. */
void bd_entry_get_perm(BdEntry *entry, uint64_t *perm, uint64_t *shared);
/* Replace the node the handle points at (drained inside). */
gboolean bd_entry_replace_node(BdEntry *entry, BdNode *node, GError **errp);
/* Allow requests past the end (image creation). */
void bd_entry_set_allow_beyond_eof(BdEntry *entry, gboolean allow);
/* Mark a job's handle on a node that QEMU links to the job itself
 * (block_job_add_bdrv) rather than through a BlockBackend: blockdev-del
 * of that node then reports the job's claim, not "Node X is in use". */
void bd_entry_set_job_link(BdEntry *entry);
gboolean bd_entry_is_job_link(const BdEntry *entry);
/* Call fn(opaque, TRUE) when a drained section (bd_drained_begin*)
 * quiesces the handle and fn(opaque, FALSE) when it ends.  Main
 * thread; fn may not change the graph. */
void bd_entry_set_drain_notify(BdEntry *entry,
                               void (*fn)(void *opaque, gboolean begin),
                               void *opaque);

/* Length of the node in bytes, or -errno. */
int64_t bd_entry_getlength(BdEntry *entry);
/* Whether requests through the handle wait on the network
 * (BdNode.latency_bound): 1 or 0, or -1 while a drain holds the handle
 * (it never waits for one: a caller that must not block can ask).
 * Any thread; admitted as a request. */
int bd_entry_latency_bound(BdEntry *entry);

/* Hold the handle admitted, as one request, across node-level calls
 * that do not go through it (a job's allocation queries down its own
 * chain), so that a drain of the nodes below waits for them as for any
 * request.  Any thread; never while the caller drains the handle. */
void bd_entry_begin(BdEntry *entry);
void bd_entry_end(BdEntry *entry);

/* I/O: 0 or -errno.  Ranges beyond the end give -EINVAL (-ENOSPC for
 * writes when growing is not allowed), writes on read-only nodes -EPERM
 * (read-only check at the node: -EACCES), any alignment is accepted. */
/* With BD_REQ_NOWAIT a read also answers -EAGAIN instead of waiting for
 * a drain to end. */
int bd_entry_pread(BdEntry *entry, uint64_t offset, uint64_t bytes,
                   void *buf, int flags);
int bd_entry_pwrite(BdEntry *entry, uint64_t offset, uint64_t bytes,
                    const void *buf, int flags);
/* Zero-copy read and write (graph/io.h's bd_node_*_fd): the same
 * admission and checks as pread/pwrite.  -ENOTSUP with nothing done
 * (sink->begun FALSE, the pipe unread) where the chain cannot. */
int bd_entry_pread_to_fd(BdEntry *entry, uint64_t offset, uint64_t bytes,
                         BdFdSink *sink, int flags);
int bd_entry_pwrite_from_fd(BdEntry *entry, uint64_t offset, uint64_t bytes,
                            int in_fd, int flags);
int bd_entry_pwrite_zeroes(BdEntry *entry, uint64_t offset, uint64_t bytes,
                           int flags);
int bd_entry_pdiscard(BdEntry *entry, uint64_t offset, uint64_t bytes);
int bd_entry_flush(BdEntry *entry);
int bd_entry_truncate(BdEntry *entry, uint64_t size);
/* Block status through the whole chain below the handle's node:
 * BD_BLOCK_* for [offset, offset + *pnum).  Unallocated ranges of the
 * top node that fall to a backing node report that node's status. */
int bd_entry_block_status(BdEntry *entry, uint64_t offset, uint64_t bytes,
                          uint64_t *pnum);
/* How many layers down [offset, offset + *pnum) is allocated: 0 for
 * unallocated in the whole chain, 1 for the top node, ... */
int bd_entry_allocation_depth(BdEntry *entry, uint64_t offset,
                              uint64_t bytes, uint64_t *pnum);

/* --- drain (main thread) --- */

/* Quiesce every entry handle that can reach 'node' (on it or above it)
 * and wait for their in-flight requests.  Nests.  The section remembers
 * the handles it quiesced, so that handles attached meanwhile are not
 * resumed by mistake; no handle it holds may be freed before its end. */
typedef struct BdDrainSection BdDrainSection;
BdDrainSection *bd_drained_begin(BdNode *node);
void bd_drained_end(BdDrainSection *section);
void bd_entry_drained_begin(BdEntry *entry);
void bd_entry_drained_end(BdEntry *entry);
/* Requests in flight on the handle right now (tests, queries).  While
 * drained it may count, for a moment, a request that arrives, sees the
 * drain and backs off. */
unsigned bd_entry_in_flight(BdEntry *entry);

#endif
