/* SPDX-License-Identifier: MIT */
/* The copy-before-write filter's interface for the backup job: insert the
 * filter above a source, share its copy bitmap, copy clusters.
 *
 *   parents of source (exports, nodes)        parents (moved)
 *            |                                     |
 *          source            ==append==>   copy-before-write --target--> T
 *                                                  |file
 *                                                source
 *
 * The copy bitmap (an anonymous, disabled bitmap on the source node,
 * one bit per cluster) marks what still has to reach the target.  A
 * guest write first copies the marked clusters it touches; the backup
 * job copies the rest with bd_cbw_copy().  A cluster being copied is
 * "in flight": whoever else needs it waits until the copy is done.
 *
 * Thread model: append/drop and the setters run on the main thread;
 * bd_cbw_copy(), bd_cbw_reset_unallocated() and the job bracket run on
 * the job thread, concurrently with guest writes on any thread.
 */
#ifndef BD_FORMATS_COPY_BEFORE_WRITE_H
#define BD_FORMATS_COPY_BEFORE_WRITE_H

#include "graph/node.h"
#include "graph/bitmap.h"

typedef struct BdCbw BdCbw;

typedef struct {
    const char *filter_node_name;   /* NULL: implicit, generated name */
    BdDirtyBitmap *bitmap;          /* copy only its dirty clusters */
    gboolean skip_unallocated;      /* sync=top: unallocated in the top
                                     * layer needs no copy */
    gboolean compress;              /* compressed writes to the target */
    gboolean use_copy_range;        /* copy offload where it applies */
} BdCbwAppendOptions;

/* Open a copy-before-write node over 'source' and 'target' and move every
 * parent of 'source' onto it (drained).  Returns the filter (one
 * reference, the caller's) or NULL with *errp set. */
BdNode *bd_cbw_append(BdNode *source, BdNode *target,
                      const BdCbwAppendOptions *opts, GError **errp);
/* Move the filter's parents back to its source and drop the reference
 * from bd_cbw_append(). */
void bd_cbw_drop(BdNode *filter);

BdCbw *bd_cbw_state(BdNode *filter);
BdDirtyBitmap *bd_cbw_copy_bitmap(BdCbw *s);
uint64_t bd_cbw_cluster_size(BdCbw *s);
/* Whether a copy offload has succeeded yet (any thread). */
gboolean bd_cbw_copy_range_works(BdCbw *s);
/* Called with the bytes of every finished copy (job progress).  Any
 * thread. */
void bd_cbw_set_progress(BdCbw *s, void (*fn)(void *opaque, uint64_t n),
                         void *opaque);

/* Job thread: bracket each chunk of work so that a drain of the filter
 * waits for it (begin blocks while the filter is drained). */
void bd_cbw_job_begin(BdCbw *s);
void bd_cbw_job_end(BdCbw *s);
/* Copy the marked clusters of [offset, offset + bytes) in runs of at
 * most max_chunk bytes (0: 1 MiB).  0 or -errno; *is_read says which
 * side failed.  Clusters that fail are marked again. */
int bd_cbw_copy(BdCbw *s, uint64_t offset, uint64_t bytes,
                uint64_t max_chunk, gboolean *is_read);
/* The backup job's parallel copies: claim a run on the job thread (its
 * clusters leave the bitmap and enter the copies in flight, so a guest
 * write on them waits for the copy rather than copying again), copy it
 * on any thread, which also releases it.  A claim must be copied; a
 * claim taken between bd_cbw_job_begin and _end keeps the filter's
 * drain waiting until it is released. */
typedef struct {
    uint64_t offset, bytes;
    BdReq req;
} BdCbwClaim;
/* The first marked run at or after 'offset', at most max_chunk bytes
 * (0: 1 MiB, rounded down to clusters).  FALSE: nothing marked. */
gboolean bd_cbw_claim(BdCbw *s, uint64_t offset, uint64_t max_chunk,
                      BdCbwClaim *claim);
/* 0 or -errno (*is_read: which side); failed clusters are marked again.
 * 'buf' of buf_size bytes (NULL: allocated here). */
int bd_cbw_copy_claimed(BdCbw *s, BdCbwClaim *claim, uint8_t *buf,
                        uint64_t buf_size, gboolean *is_read);
/* sync=top start-up: unmark the clusters at 'offset' that the top layer
 * does not allocate; *pnum gets how far the answer reaches. */
int bd_cbw_reset_unallocated(BdCbw *s, uint64_t offset, uint64_t *pnum);

#endif
