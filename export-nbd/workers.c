/* SPDX-License-Identifier: MIT */
/* A connection's worker threads, and which of them reads the socket.
 *
 * One worker at a time is the reader: it reads the next request from
 * the socket, hands the reader role on, then runs the request and sends
 * its reply.  So requests of one connection run in parallel, and one
 * that blocks (on storage, a throttle, a drain) never holds up the ones
 * behind it.
 *
 * Workers without a request park on parked_cond; giving up the reader
 * role wakes one of them only when none is already on its way back to
 * read (a worker that has just replied takes a free role at once), and
 * starts one more worker when none is parked, up to worker_limit().  On
 * cached or unallocated data a worker is usually back before a parked
 * one has woken, so a busy connection costs few wake-ups; a mutex
 * around the socket instead woke a waiter for every request.
 *
 * A request the reader can run without waiting (a short read that the
 * page cache holds: BD_REQ_NOWAIT, or an invalid request) it runs at
 * once and keeps the reader role: no hand-off, no wake-up, which is
 * most of the CPU a 4 KiB request costs on a small machine.  Only a
 * request that would wait (a cache miss, a drain, a throttle, a
 * write) is handed over as above.
 *
 * The connection thread is worker 0; BD_NBD_MIN_WORKERS start at once.
 * The first worker to see EOF, a bad magic or NBD_CMD_DISC sets c->quit
 * and wakes the parked ones; the others finish the request they hold,
 * reply, and leave; the last one out closes the socket and drops the
 * export reference (bd_nbd_client_unref).
 *
 * Iothreads: every worker of the connection (the connection thread
 * included) joins the worker pool of its export's iothread for the
 * transmission phase (graph/worker-pool.h): it takes the pool's name and
 * counts in it, and extra workers start only while the pool is below its
 * thread-pool-max.  A worker checks before each request whether the
 * export has moved to another iothread, and moves with it.
 */
#include "export-nbd/nbd-internal.h"

static gboolean spawn_worker(BdNbdClient *c);

/* Wait to become the reader; FALSE once the connection is closing. */
static gboolean take_reader(BdNbdClient *c)
{
    gboolean ok;

    bd_mutex_lock(&c->pool_lock);
    while (c->reading && !g_atomic_int_get(&c->quit)) {
        c->parked++;
        bd_cond_wait(&c->parked_cond, &c->pool_lock);
        c->parked--;
        if (c->waking > 0) {
            c->waking--;
        }
    }
    ok = !g_atomic_int_get(&c->quit);
    if (ok) {
        c->reading = TRUE;
    }
    bd_mutex_unlock(&c->pool_lock);
    return ok;
}

/* Give up the reader role, so another worker reads the next request
 * while this one runs the request it has read. */
static void give_up_reader(BdNbdClient *c)
{
    gboolean spawn = FALSE;

    bd_mutex_lock(&c->pool_lock);
    c->reading = FALSE;
    if (c->parked == 0) {
        spawn = TRUE;
    } else if (c->waking == 0) {
        c->waking++;
        g_cond_signal(&c->parked_cond);
    }
    bd_mutex_unlock(&c->pool_lock);
    if (spawn) {
        spawn_worker(c);
    }
}

void bd_nbd_workers_wake(BdNbdClient *c)
{
    bd_mutex_lock(&c->pool_lock);
    g_cond_broadcast(&c->parked_cond);
    bd_mutex_unlock(&c->pool_lock);
    /* ... and those waiting for request memory. */
    bd_nbd_budget_wake(&c->budget);
}

/* The connection is over: let every worker see it. */
static void workers_quit(BdNbdClient *c)
{
    g_atomic_int_set(&c->quit, TRUE);
    bd_nbd_workers_wake(c);
}

/* As the reader: read requests, running those that need not wait
 * (see the top), until one must go to a worker that may block.
 * FALSE when the connection is over. */
static gboolean read_next(BdNbdWorker *w, BdNbdClient *c,
                          BdWorkerMembership *m, BdNbdRequest *req,
                          uint32_t *err)
{
    for (;;) {
        int ret;

        *err = 0;
        if (bd_nbd_worker_recv(w, req, err) < 0 ||
            req->type == NBD_CMD_DISC) {
            workers_quit(c);
            return FALSE;
        }
        bd_worker_pool_follow(m, &c->exp->common.pool);
        ret = bd_nbd_worker_handle_inline(w, req, *err);
        if (ret == 0) {
            return TRUE;
        }
        if (ret < 0) {
            /* The client is gone. */
            bd_nbd_client_kick(c);
            workers_quit(c);
            return FALSE;
        }
        if (g_atomic_int_get(&c->quit)) {
            return FALSE;
        }
    }
}

/* The worker loop; 'm' is the worker's place in its export's iothread
 * (entered by whoever started it). */
static void worker_run(BdNbdClient *c, BdWorkerMembership *m,
                       size_t keep_buf)
{
    BdNbdWorker *w = bd_nbd_worker_new(c, keep_buf);

    bd_worker_pool_name_thread(m);
    while (take_reader(c)) {
        BdNbdRequest req;
        uint32_t err;

        if (!read_next(w, c, m, &req, &err)) {
            break;
        }
        give_up_reader(c);
        if (bd_nbd_worker_handle(w, &req, err) < 0) {
            /* The client is gone: wake the worker blocked in recv. */
            bd_nbd_client_kick(c);
            break;
        }
    }
    bd_nbd_worker_free(w);
    bd_worker_pool_leave(m);
    g_atomic_int_add(&c->nworkers, -1);
    bd_nbd_client_unref(c);
}

typedef struct {
    BdNbdClient *c;
    BdWorkerMembership m;
    size_t keep_buf;
} WorkerStart;

static gpointer worker_main(gpointer data)
{
    WorkerStart *ws = data;

    worker_run(ws->c, &ws->m, ws->keep_buf);
    g_free(ws);
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

/* Whether the export's node waits on the network, asked of the graph
 * at most every BD_NBD_LATENCY_RECHECK_US: only a connection that has
 * all its usual workers busy asks, and asking admits a request.  While
 * a drain holds the export the last answer stands: the reader does not
 * wait for the drain here but with its request, like any worker. */
static gboolean latency_bound(BdNbdClient *c)
{
    gint64 now = g_get_monotonic_time();
    gboolean bound;
    int answer;

    bd_mutex_lock(&c->pool_lock);
    if (c->latency_checked &&
        now - c->latency_checked < BD_NBD_LATENCY_RECHECK_US) {
        bound = c->latency_bound;
        bd_mutex_unlock(&c->pool_lock);
        return bound;
    }
    bd_mutex_unlock(&c->pool_lock);
    answer = bd_entry_latency_bound(c->exp->common.entry);
    bd_mutex_lock(&c->pool_lock);
    if (answer >= 0) {
        c->latency_bound = answer;
        c->latency_checked = now;
    }
    bound = c->latency_bound;
    bd_mutex_unlock(&c->pool_lock);
    return bound;
}

/* Start one more worker unless at the limit (blockd's, higher for a
 * latency-bound node, or the bound of the export's iothread); FALSE if
 * none started. */
static gboolean spawn_worker(BdNbdClient *c)
{
    WorkerStart *ws;
    GThread *t;
    gint n;

    do {
        n = g_atomic_int_get(&c->nworkers);
        if (g_atomic_int_get(&c->quit) || n >= BD_NBD_MAX_LATENCY_WORKERS ||
            (n >= max_workers() && !latency_bound(c))) {
            return FALSE;
        }
    } while (!g_atomic_int_compare_and_exchange(&c->nworkers, n, n + 1));
    ws = g_new0(WorkerStart, 1);
    ws->c = c;
    ws->keep_buf = n < max_workers() ? BD_NBD_KEEP_BUF : BD_NBD_EXTRA_KEEP_BUF;
    if (!bd_worker_pool_enter(&ws->m, &c->exp->common.pool, "nbd-worker",
                              TRUE)) {
        g_free(ws);
        g_atomic_int_add(&c->nworkers, -1);
        return FALSE;
    }
    g_atomic_int_inc(&c->refcount);
    t = g_thread_try_new("nbd-worker", worker_main, ws, NULL);
    if (!t) {
        bd_worker_pool_leave(&ws->m);
        g_free(ws);
        g_atomic_int_dec_and_test(&c->refcount);  /* never the last */
        g_atomic_int_add(&c->nworkers, -1);
        return FALSE;
    }
    g_thread_unref(t);
    return TRUE;
}

void bd_nbd_transmission_run(BdNbdClient *c)
{
    BdWorkerMembership m = { 0 };
    int i;

    c->rbuf = g_malloc(BD_NBD_RBUF_SIZE);
    c->nworkers = 1;
    /* The connection thread always serves: it enters unbounded. */
    bd_worker_pool_enter(&m, &c->exp->common.pool, "nbd-worker", FALSE);
    for (i = 1; i < BD_NBD_MIN_WORKERS && spawn_worker(c); i++) {
    }
    worker_run(c, &m, BD_NBD_KEEP_BUF);
}
