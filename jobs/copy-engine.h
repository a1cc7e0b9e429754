/* SPDX-License-Identifier: MIT */
/* The copy engine under backup, mirror, stream and commit: many chunks
 * in flight on a small worker pool, the job's own rules for what to
 * copy and how, and the job framework's rate limit, pause, cancel and
 * error actions applied in one place.
 *
 *   job thread                               workers (pool of N)
 *   ----------                               -------------------
 *   loop: reap finished chunks  <----------- copy(chunk, buf)
 *         error action (report/ignore/stop)
 *         pause / speed: wait for all in flight, then a pause point
 *         next(chunk) -- the job claims a range (bitmap, allocation)
 *         wait for a free slot (workers, bytes) ------> submit
 *
 * The job's next() runs on the job thread only, so the job's cursor and
 * its claiming of ranges need no lock of their own; copy() runs on the
 * workers and must be safe with other copies and with guest I/O (the
 * jobs use reqlists for that).  Every chunk next() handed out is
 * finished (copy, then done on the job thread) before
 * bd_copy_engine_run() returns, and before the job parks at a pause
 * point: a paused, cancelled or drained job has nothing in flight.
 *
 * Thread model: create, run and free on the job thread; copy() on the
 * pool's threads.  e->lock (a leaf) guards the queue of
 * finished chunks and the in-flight counters.
 */
#ifndef BD_JOBS_COPY_ENGINE_H
#define BD_JOBS_COPY_ENGINE_H

#include "graph/entry.h"
#include "jobs/job.h"

/* Workers per job: twice the cores, 2 to 16 (x-perf max-workers may
 * ask for fewer).  Requests block on I/O, so a few more than the cores
 * help; many more do not: buffered writes (and copy_file_range) into
 * one target file take its inode lock in turn, and the waiters spin on
 * it - measured on 2 cores, 16 workers spent 3-4x the CPU of 2 to 4
 * for the same or a longer time. */
#define BD_COPY_MAX_WORKERS     16

typedef struct BdCopyEngine BdCopyEngine;

typedef struct {
    uint64_t offset, bytes;
    gboolean is_read;            /* copy(): the failing side */
    int ret;                     /* copy()'s result */
    /* The job's per-chunk state (priv_size bytes, zeroed). */
    void *priv;
} BdCopyChunk;

typedef struct {
    /* Job thread: claim the next chunk to copy into *c (offset, bytes,
     * priv): 1, or 0 when there is nothing (more) to do now, or -errno
     * (the run ends with it). */
    int (*next)(void *opaque, BdCopyChunk *c);
    /* A worker: copy the chunk with 'buf' (buf_size bytes) and release
     * what next() claimed.  0 or -errno with c->is_read set. */
    int (*copy)(void *opaque, BdCopyChunk *c, uint8_t *buf,
                uint64_t buf_size);
    /* Job thread: the chunk finished; ret 0 or -errno with the action
     * the job's error policy chose (progress, bookkeeping). */
    void (*done)(void *opaque, BdCopyChunk *c, int ret,
                 BdErrorAction action);
} BdCopyOps;

typedef struct {
    BdJob *job;
    const BdCopyOps *ops;
    void *opaque;
    size_t priv_size;            /* bytes of BdCopyChunk.priv */
    unsigned workers;            /* chunks in flight (threads), >= 1 */
    uint64_t buf_size;           /* per worker buffer; >= any chunk */
    uint64_t max_bytes;          /* bytes in flight; 0: no bound */
    BdOnError on_source_error, on_target_error;
    /* A failed chunk under 'stop' or 'ignore' is handed out again by
     * the engine (jobs without a bitmap to mark it again).  With
     * ignore_skips, 'ignore' moves on instead (stream). */
    gboolean requeue_failed;
    gboolean ignore_skips;
    /* Account chunks against the job's speed. */
    gboolean ratelimit;
} BdCopyEngineParams;

BdCopyEngine *bd_copy_engine_new(const BdCopyEngineParams *p);
void bd_copy_engine_free(BdCopyEngine *e);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdCopyEngine, bd_copy_engine_free)

/* Copy until next() has nothing left and nothing is in flight, the job
 * is cancelled (forced) or an error is reported under the policy.
 * Returns 0 or the reported -errno; every chunk has finished. */
int bd_copy_engine_run(BdCopyEngine *e);
/* The first error an 'ignore' action skipped (ignore_skips), or 0. */
int bd_copy_engine_ignored_error(BdCopyEngine *e);
/* Copy offload between two of a job's entry handles (any thread): both
 * held admitted as one request each (drains wait for it), then
 * bd_node_copy_range() from 'holder' (a node below src's that holds the
 * range's data, its links frozen by the job; NULL: src's node).  Bytes
 * copied (> 0), or <= 0: copy the usual way (which also tells the
 * failing side). */
int64_t bd_copy_offload(BdEntry *src, BdEntry *dst, BdNode *holder,
                        uint64_t offset, uint64_t bytes);
/* Copy [offset, offset + n) from src to dst, block status first:
 * ranges that read as zeroes are written as zeroes ('zero_flags')
 * without a read, then copy offload from 'holder' (as above), then
 * through 'buf' in pieces of buf_size (data that is all zeroes written
 * as zeroes).  0 or -errno; *in_source says which side failed. */
int bd_copy_range_by_status(BdEntry *src, BdEntry *dst, BdNode *holder,
                            uint8_t *buf, uint64_t buf_size, uint64_t offset,
                            uint64_t n, int zero_flags, gboolean *in_source);
/* Workers for a job: x-perf max-workers (0: the default), capped. */
unsigned bd_copy_engine_default_workers(void);
unsigned bd_copy_engine_workers(int64_t max_workers);

#endif
