/* SPDX-License-Identifier: MIT */
/* A connection's worker threads, and which of them runs which request.
 *
 * One worker at a time is the reader: it reads the next request from
 * the socket.  Then it either runs that request itself (inline), or
 * first hands the reader role to another worker (hand-off), so that the
 * next request is read while this one runs.
 *
 * A hand-off costs a thread wake-up and a context switch per request:
 * more than the whole of a 4 KiB read of cached or unallocated data.
 * Running inline costs parallelism when a request blocks on storage.
 * So each connection measures: while the requests it runs inline take
 * under BD_NBD_INLINE_LIMIT_US on average it stays inline; a window of
 * BD_NBD_INLINE_WINDOW requests that goes over switches it to hand-off,
 * and after BD_NBD_PROBE_AFTER handed-off requests it tries inline
 * again.  Requests that may block for long (flush, trim, write-zeroes,
 * cache, FUA writes, transfers above BD_NBD_INLINE_MAX_LEN) are always
 * handed off, so a flush never holds up the reads behind it.
 *
 * A request can also block for longer than any average foresees (a
 * throttle at its limit, a drain, a storage hiccup), so while requests
 * run inline one parked worker stands by and takes over reading when
 * the same request has run for BD_NBD_STALL_US (standby_watch).
 *
 * Threads: the connection thread is worker 0; BD_NBD_MIN_WORKERS start
 * at once; a hand-off with no parked worker starts one more, up to
 * max_workers().  Workers without a request park on parked_cond.  The
 * first worker to see EOF, a bad magic or NBD_CMD_DISC sets c->quit and
 * wakes the parked ones; the others finish the request they hold,
 * reply, and leave; the last one out closes the socket and drops the
 * export reference (bd_nbd_client_unref).
 */
#include "export-nbd/nbd-internal.h"

/* Inline while requests average under this (microseconds)... */
#define BD_NBD_INLINE_LIMIT_US  25
/* ...over windows of this many requests. */
#define BD_NBD_INLINE_WINDOW    16
/* Handed-off requests before trying inline again. */
#define BD_NBD_PROBE_AFTER      4096
/* Reads and writes above this size are always handed off. */
#define BD_NBD_INLINE_MAX_LEN   (64u << 10)
/* An inline request running this long is taken as stuck... */
#define BD_NBD_STALL_US         1000
/* ...and after this long without requests the standby stops checking. */
#define BD_NBD_STANDBY_NAP_US   (100 * 1000)

static gboolean spawn_worker(BdNbdClient *c);

static gboolean may_run_inline(const BdNbdRequest *req, uint32_t err)
{
    if (err) {
        return TRUE;   /* only an error reply to send */
    }
    switch (req->type) {
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
        return req->length <= BD_NBD_INLINE_MAX_LEN &&
               !(req->flags & NBD_CMD_FLAG_FUA);
    case NBD_CMD_BLOCK_STATUS:
        return TRUE;
    default:
        return FALSE;
    }
}

static void start_window(BdNbdPoolMode *m, gboolean run_inline)
{
    m->run_inline = run_inline;
    m->samples = 0;
    m->window_us = 0;
    m->handed_off = 0;
}

/* Account one inline request that took 'took_us'; pool_lock held. */
static void account_inline(BdNbdPoolMode *m, gint64 took_us)
{
    m->samples++;
    m->window_us += took_us;
    if (m->window_us > BD_NBD_INLINE_LIMIT_US * BD_NBD_INLINE_WINDOW) {
        start_window(m, FALSE);
    } else if (m->samples >= BD_NBD_INLINE_WINDOW) {
        start_window(m, m->run_inline);
    }
}

/* The standby: one parked worker that, while requests run inline,
 * wakes every BD_NBD_STALL_US to check that the one running is not
 * stuck (on storage, on a throttle, in a drain).  If the same request
 * is still running and nobody reads, it takes the reader role itself
 * and the connection goes over to hand-off.  Once the connection has
 * been idle for BD_NBD_STANDBY_NAP_US it waits without a timeout, and
 * the next inline request wakes it.  pool_lock held; returns when the
 * role is free to take or the connection is closing. */
static void standby_watch(BdNbdClient *c)
{
    guint seq = c->inline_seq;
    gint64 now = g_get_monotonic_time();
    gint64 since = now;       /* inline_seq last moved */

    c->has_standby = TRUE;
    while (!g_atomic_int_get(&c->quit)) {
        if (!c->reading && (c->inline_busy == 0 || !c->mode.run_inline)) {
            break;            /* handed off to us, or the reader left */
        }
        if (!c->reading && c->inline_busy > 0 && c->inline_seq == seq &&
            now - since >= BD_NBD_STALL_US) {
            start_window(&c->mode, FALSE);
            break;            /* stuck inline: read on in its place */
        }
        if (c->inline_busy == 0 && now - since >= BD_NBD_STANDBY_NAP_US) {
            c->standby_asleep = TRUE;
            g_cond_wait(&c->standby_cond, &c->pool_lock);
            c->standby_asleep = FALSE;
        } else {
            g_cond_wait_until(&c->standby_cond, &c->pool_lock,
                              now + BD_NBD_STALL_US);
        }
        now = g_get_monotonic_time();
        if (c->inline_seq != seq) {
            seq = c->inline_seq;
            since = now;
        }
    }
    c->has_standby = FALSE;
}

/* Wait to become the reader; FALSE once the connection is closing.
 * took_us: how long this worker's last inline request took, or -1. */
static gboolean take_reader(BdNbdClient *c, gint64 took_us)
{
    gboolean ok;

    g_mutex_lock(&c->pool_lock);
    if (took_us >= 0) {
        c->inline_busy--;
        account_inline(&c->mode, took_us);
    }
    while (c->reading && !g_atomic_int_get(&c->quit)) {
        if (!c->has_standby) {
            standby_watch(c);
            break;
        }
        c->parked++;
        g_cond_wait(&c->parked_cond, &c->pool_lock);
        c->parked--;
    }
    ok = !g_atomic_int_get(&c->quit);
    if (ok) {
        c->reading = TRUE;
    }
    g_mutex_unlock(&c->pool_lock);
    return ok;
}

/* Give up the reader role after reading 'req'; TRUE: run it inline,
 * FALSE: another worker now reads the next request. */
static gboolean give_up_reader(BdNbdClient *c, const BdNbdRequest *req,
                               uint32_t err)
{
    BdNbdPoolMode *m = &c->mode;
    gboolean run_inline, spawn = FALSE;

    g_mutex_lock(&c->pool_lock);
    run_inline = m->run_inline && may_run_inline(req, err);
    if (!m->run_inline && ++m->handed_off >= BD_NBD_PROBE_AFTER) {
        start_window(m, TRUE);
    }
    c->reading = FALSE;
    if (run_inline) {
        c->inline_busy++;
        c->inline_seq++;
        if (c->standby_asleep) {
            g_cond_signal(&c->standby_cond);
        } else if (!c->has_standby) {
            /* Someone must watch: a parked worker, or a new one. */
            if (c->parked > 0) {
                g_cond_signal(&c->parked_cond);
            } else {
                spawn = TRUE;
            }
        }
    } else if (c->parked > 0) {
        g_cond_signal(&c->parked_cond);
    } else if (c->has_standby) {
        g_cond_signal(&c->standby_cond);
    } else {
        spawn = TRUE;
    }
    g_mutex_unlock(&c->pool_lock);
    if (spawn) {
        spawn_worker(c);
    }
    return run_inline;
}

void bd_nbd_workers_wake(BdNbdClient *c)
{
    g_mutex_lock(&c->pool_lock);
    g_cond_broadcast(&c->parked_cond);
    g_cond_broadcast(&c->standby_cond);
    g_mutex_unlock(&c->pool_lock);
}

static gpointer worker_main(gpointer data)
{
    BdNbdClient *c = data;
    BdNbdWorker *w = bd_nbd_worker_new(c);
    gint64 took_us = -1;

    while (take_reader(c, took_us)) {
        BdNbdRequest req;
        uint32_t err = 0;
        gboolean run_inline;
        gint64 t0;

        if (bd_nbd_worker_recv(w, &req, &err) < 0 ||
            req.type == NBD_CMD_DISC) {
            g_atomic_int_set(&c->quit, TRUE);
            bd_nbd_workers_wake(c);
            break;
        }
        run_inline = give_up_reader(c, &req, err);
        t0 = g_get_monotonic_time();
        if (bd_nbd_worker_handle(w, &req, err) < 0) {
            /* The client is gone: wake the worker blocked in recv. */
            bd_nbd_client_kick(c);
            break;
        }
        took_us = run_inline ? g_get_monotonic_time() - t0 : -1;
    }
    bd_nbd_worker_free(w);
    g_atomic_int_add(&c->nworkers, -1);
    bd_nbd_client_unref(c);
    return NULL;
}

static int max_workers(void)
{
    static gsize value;

    if (g_once_init_enter(&value)) {
        gsize n = CLAMP(4 * g_get_num_processors(), 8, BD_NBD_MAX_WORKERS);
        g_once_init_leave(&value, n);
    }
    return (int)value;
}

/* Start one more worker unless at the limit; FALSE if none started. */
static gboolean spawn_worker(BdNbdClient *c)
{
    GThread *t;
    gint n;

    do {
        n = g_atomic_int_get(&c->nworkers);
        if (n >= max_workers() || g_atomic_int_get(&c->quit)) {
            return FALSE;
        }
    } while (!g_atomic_int_compare_and_exchange(&c->nworkers, n, n + 1));
    g_atomic_int_inc(&c->refcount);
    t = g_thread_try_new("nbd-worker", worker_main, c, NULL);
    if (!t) {
        g_atomic_int_dec_and_test(&c->refcount);  /* never the last */
        g_atomic_int_add(&c->nworkers, -1);
        return FALSE;
    }
    g_thread_unref(t);
    return TRUE;
}

void bd_nbd_transmission_run(BdNbdClient *c)
{
    int i;

    c->rbuf = g_malloc(BD_NBD_RBUF_SIZE);
    c->nworkers = 1;
    start_window(&c->mode, TRUE);
    for (i = 1; i < BD_NBD_MIN_WORKERS && spawn_worker(c); i++) {
    }
    worker_main(c);
}
