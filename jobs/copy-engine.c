/* SPDX-License-Identifier: MIT */
/* The copy engine: a job's chunks on a worker pool (see copy-engine.h).
 *
 * Thread model: bd_copy_engine_new/run/free on the job thread, worker()
 * on the engine's own threads.  e->lock is a leaf lock guarding the
 * fields marked [lock]; no I/O and no callback runs under it.  The pool
 * is plain threads and a queue under e->lock rather than a GThreadPool,
 * whose hand-off happens inside GLib where ThreadSanitizer cannot see
 * it (tests/tsan/include/glib.h).
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include "graph/io.h"
#include "graph/lock.h"
#include "jobs/copy-engine.h"

struct BdCopyEngine {
    BdCopyEngineParams p;
    GPtrArray *threads;          /* GThread *, the workers */

    /* Job thread only. */
    unsigned in_flight;          /* chunks handed to the pool */
    uint64_t bytes_in_flight;
    GQueue retry;                /* BdCopyChunk *: failed, to redo */
    int error;                   /* reported: the run ends */
    int ignored_error;

    BdMutex lock;
    GCond cond;                  /* a chunk finished */
    GCond work_cond;             /* a chunk to copy, or stopping */
    GQueue pending BD_GUARDED_BY(lock);    /* BdCopyChunk *: to copy */
    gboolean stopping BD_GUARDED_BY(lock);
    GQueue finished BD_GUARDED_BY(lock);   /* BdCopyChunk * */
    GSList *bufs BD_GUARDED_BY(lock);      /* idle worker buffers */
};

static BdCopyChunk *chunk_new(BdCopyEngine *e)
{
    BdCopyChunk *c = g_malloc0(sizeof(*c) + e->p.priv_size);

    c->priv = c + 1;
    return c;
}

static void copy_one(BdCopyEngine *e, BdCopyChunk *c)
{
    uint8_t *buf;

    bd_mutex_lock(&e->lock);
    buf = e->bufs ? e->bufs->data : NULL;
    if (buf) {
        e->bufs = g_slist_delete_link(e->bufs, e->bufs);
    }
    bd_mutex_unlock(&e->lock);
    if (!buf) {
        buf = g_malloc(e->p.buf_size);
    }

    c->is_read = FALSE;
    c->ret = e->p.ops->copy(e->p.opaque, c, buf, e->p.buf_size);

    bd_mutex_lock(&e->lock);
    e->bufs = g_slist_prepend(e->bufs, buf);
    g_queue_push_tail(&e->finished, c);
    g_cond_broadcast(&e->cond);
    bd_mutex_unlock(&e->lock);
}

/* A worker: copy queued chunks until the engine stops. */
static gpointer worker(gpointer opaque)
{
    BdCopyEngine *e = opaque;

    for (;;) {
        BdCopyChunk *c;

        bd_mutex_lock(&e->lock);
        while (!(c = g_queue_pop_head(&e->pending)) && !e->stopping) {
            bd_cond_wait(&e->work_cond, &e->lock);
        }
        bd_mutex_unlock(&e->lock);
        if (!c) {
            return NULL;
        }
        copy_one(e, c);
    }
}

static gboolean target_reads_zeroes(BdEntry *dst, uint64_t offset,
                                    uint64_t bytes, uint64_t *pnum)
{
    gboolean zero;

    bd_entry_begin(dst);
    zero = bd_node_reads_own_zeroes(bd_entry_node(dst), offset, bytes,
                                    pnum);
    bd_entry_end(dst);
    return zero;
}

int bd_copy_range_by_status(BdEntry *src, BdEntry *dst, BdNode *holder,
                            uint8_t *buf, uint64_t buf_size, uint64_t offset,
                            uint64_t n, int zero_flags, gboolean *in_source)
{
    uint64_t pos = offset, end = offset + n;
    int ret = 0;

    while (pos < end && ret >= 0) {
        uint64_t pnum = 0;
        int64_t copied;
        int st = bd_entry_block_status(src, pos, end - pos, &pnum);

        if (st < 0 || pnum == 0) {
            st = BD_BLOCK_DATA;      /* the read will tell */
            pnum = end - pos;
        }
        pnum = MIN(pnum, end - pos);
        if (st & BD_BLOCK_ZERO) {
            uint64_t z = 0;

            *in_source = FALSE;
            /* May the target keep holes, and does it read zeroes there
             * already?  Then zeroing would only allocate (see
             * copy-before-write.c's copy_run). */
            if ((zero_flags & BD_REQ_MAY_UNMAP) &&
                target_reads_zeroes(dst, pos, pnum, &z)) {
                pnum = z;
            } else {
                ret = bd_entry_pwrite_zeroes(dst, pos, pnum, zero_flags);
            }
        } else if ((copied = bd_copy_offload(src, dst, holder, pos,
                                             pnum)) > 0) {
            *in_source = FALSE;
            pnum = MIN(pnum, (uint64_t)copied);
        } else {
            pnum = MIN(pnum, buf_size);
            *in_source = TRUE;
            ret = bd_entry_pread(src, pos, pnum, buf, 0);
            if (ret >= 0) {
                *in_source = FALSE;
                ret = bd_buffer_is_zero(buf, pnum)
                    ? bd_entry_pwrite_zeroes(dst, pos, pnum, zero_flags)
                    : bd_entry_pwrite(dst, pos, pnum, buf, 0);
            }
        }
        pos += pnum;
    }
    return ret;
}

int64_t bd_copy_offload(BdEntry *src, BdEntry *dst, BdNode *holder,
                        uint64_t offset, uint64_t bytes)
{
    int64_t ret;

    bd_entry_begin(src);
    bd_entry_begin(dst);
    ret = bd_node_copy_range(holder ? holder : bd_entry_node(src),
                             bd_entry_node(dst), offset, bytes);
    bd_entry_end(dst);
    bd_entry_end(src);
    return ret;
}

unsigned bd_copy_engine_default_workers(void)
{
    return (unsigned)CLAMP(2 * g_get_num_processors(), 2,
                           BD_COPY_MAX_WORKERS);
}

unsigned bd_copy_engine_workers(int64_t max_workers)
{
    unsigned def = bd_copy_engine_default_workers();

    if (max_workers <= 0) {
        return def;
    }
    return (unsigned)MIN(max_workers, (int64_t)def);
}

BdCopyEngine *bd_copy_engine_new(const BdCopyEngineParams *p)
{
    BdCopyEngine *e = g_new0(BdCopyEngine, 1);

    g_assert(p->job && p->ops && p->buf_size);
    e->p = *p;
    e->p.workers = MAX(p->workers, 1u);
    bd_mutex_init(&e->lock);
    g_cond_init(&e->cond);
    g_queue_init(&e->retry);
    g_queue_init(&e->finished);
    g_cond_init(&e->work_cond);
    g_queue_init(&e->pending);
    /* Threads of its own: a job's workers never wait behind another
     * job's, nor behind a pool a driver shares. */
    e->threads = g_ptr_array_new();
    for (unsigned i = 0; i < e->p.workers; i++) {
        g_ptr_array_add(e->threads, g_thread_new("bd-copy", worker, e));
    }
    return e;
}

/* The job's policy for a failed chunk; then the job's bookkeeping. */
static void finish(BdCopyEngine *e, BdCopyChunk *c)
{
    BdErrorAction action = BD_ERROR_ACTION_IGNORE;
    gboolean keep = FALSE;

    e->in_flight--;
    e->bytes_in_flight -= c->bytes;
    if (c->ret < 0) {
        BdOnError on = c->is_read ? e->p.on_source_error
                                  : e->p.on_target_error;
        if (e->error) {
            /* Already failing: no more events, just unwind. */
            action = BD_ERROR_ACTION_REPORT;
        } else {
            action = bd_job_error_action(e->p.job, on, c->is_read, -c->ret);
        }
        if (action == BD_ERROR_ACTION_REPORT) {
            if (!e->error) {
                e->error = c->ret;
            }
        } else if (action == BD_ERROR_ACTION_IGNORE && e->p.ignore_skips) {
            if (!e->ignored_error) {
                e->ignored_error = c->ret;
            }
        } else if (e->p.requeue_failed) {
            keep = TRUE;
        }
    }
    e->p.ops->done(e->p.opaque, c, c->ret, action);
    if (keep) {
        c->ret = 0;
        g_queue_push_tail(&e->retry, c);
    } else {
        g_free(c);
    }
}

/* Reap what has finished; with 'wait', sleep until one chunk has. */
static void reap(BdCopyEngine *e, gboolean wait)
{
    GQueue done = G_QUEUE_INIT;

    bd_mutex_lock(&e->lock);
    while (wait && e->in_flight && g_queue_is_empty(&e->finished)) {
        bd_cond_wait(&e->cond, &e->lock);
    }
    /* Steal the whole queue: the callbacks run without the lock. */
    done = e->finished;
    g_queue_init(&e->finished);
    bd_mutex_unlock(&e->lock);

    for (BdCopyChunk *c; (c = g_queue_pop_head(&done));) {
        finish(e, c);
    }
}

static void reap_all(BdCopyEngine *e)
{
    while (e->in_flight) {
        reap(e, TRUE);
    }
}

/* Room for one more chunk of 'bytes'?  One chunk always fits. */
static gboolean has_room(BdCopyEngine *e, uint64_t bytes)
{
    if (e->in_flight >= e->p.workers) {
        return FALSE;
    }
    return !e->in_flight || !e->p.max_bytes ||
           e->bytes_in_flight + bytes <= e->p.max_bytes;
}

static void submit(BdCopyEngine *e, BdCopyChunk *c)
{
    e->in_flight++;
    e->bytes_in_flight += c->bytes;
    if (e->p.ratelimit) {
        /* Counted when issued, as QEMU's block-copy does: the speed
         * bounds what is started, whatever the parallelism. */
        bd_job_ratelimit_processed(e->p.job, c->bytes);
    }
    bd_mutex_lock(&e->lock);
    g_queue_push_tail(&e->pending, c);
    g_cond_signal(&e->work_cond);
    bd_mutex_unlock(&e->lock);
}

/* One step of the loop: 1 a chunk went out, 0 nothing left, -errno. */
static int step(BdCopyEngine *e)
{
    BdCopyChunk *c;

    if (e->in_flight >= e->p.workers) {
        /* Claim nothing before a worker is free: a chunk that fails
         * meanwhile may end the run (or pause it), and what was not
         * claimed stays to copy (bitmap modes count on that). */
        reap(e, TRUE);
        return 1;
    }
    c = g_queue_pop_head(&e->retry);
    if (!c) {
        int r;

        c = chunk_new(e);
        r = e->p.ops->next(e->p.opaque, c);
        if (r <= 0) {
            g_free(c);
            return r;
        }
    }
    while (!has_room(e, c->bytes)) {
        reap(e, TRUE);
    }
    submit(e, c);
    return 1;
}

int bd_copy_engine_run(BdCopyEngine *e)
{
    BdJob *job = e->p.job;

    while (!e->error) {
        int r;

        reap(e, FALSE);
        if (e->error || bd_job_is_cancelled(job)) {
            break;
        }
        if (bd_job_pause_requested(job) ||
            (e->p.ratelimit && bd_job_ratelimit_delay(job) > 0)) {
            /* Nothing may be in flight while the job is parked. */
            reap_all(e);
            if (e->error) {
                break;
            }
            bd_job_ratelimit_sleep(job);
            continue;
        }
        r = step(e);
        if (r < 0) {
            e->error = r;
        } else if (r == 0) {
            if (!e->in_flight) {
                break;
            }
            /* Finished chunks may leave more work (retries, bitmaps
             * marked again): ask again once one is back. */
            reap(e, TRUE);
        }
    }
    reap_all(e);
    /* Retries of a cancelled or failed run are dropped. */
    for (BdCopyChunk *c; (c = g_queue_pop_head(&e->retry));) {
        g_free(c);
    }
    return e->error;
}

int bd_copy_engine_ignored_error(BdCopyEngine *e)
{
    return e->ignored_error;
}

void bd_copy_engine_free(BdCopyEngine *e)
{
    if (!e) {
        return;
    }
    g_assert(!e->in_flight);
    bd_mutex_lock(&e->lock);
    e->stopping = TRUE;
    g_cond_broadcast(&e->work_cond);
    bd_mutex_unlock(&e->lock);
    for (guint i = 0; i < e->threads->len; i++) {
        g_thread_join(e->threads->pdata[i]);
    }
    g_ptr_array_unref(e->threads);
    g_cond_clear(&e->work_cond);
    g_slist_free_full(e->bufs, g_free);
    for (BdCopyChunk *c; (c = g_queue_pop_head(&e->retry));) {
        g_free(c);
    }
    bd_mutex_destroy(&e->lock);
    g_cond_clear(&e->cond);
    g_free(e);
}
