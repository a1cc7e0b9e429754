/* SPDX-License-Identifier: MIT */
/* The FUSE export's worker threads: each waits for kernel requests on
 * the session's /dev/fuse descriptor and serves them, in parallel.
 *
 * Thread model: a fixed pool of worker threads per export, started on
 * the main thread after the mount and joined on the main thread in
 * destroy.  The /dev/fuse descriptor is non-blocking; each worker has
 * its own epoll set holding that descriptor (EPOLLEXCLUSIVE, so one
 * request wakes one idle worker, not all of them) and the export's
 * stop eventfd (so a stop wakes every worker at once, with no lost
 * wake-up).  A woken worker reads requests until the queue is empty,
 * then waits again.  Requests run synchronously on the worker through
 * the entry handle; there is no lock on the data path.
 *
 *   kernel queue --read--> worker --bd_entry_p*()--> node --> reply
 *
 * Iothreads: the workers join the worker pool of the export's iothread
 * (graph/worker-pool.h), named after it; an export in one starts no
 * more workers than the pool has room for (at least one), and its
 * workers follow the export when it moves to another iothread (checked
 * before each request).
 *
 * libfuse's own fuse_session_loop_mt() is not used because it cannot
 * be woken: its workers block in read() and only see fuse_session_exit()
 * after the next request, which a lazily unmounted but still open file
 * may never send.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <linux/fuse.h>
#include <unistd.h>

#include "export-fuse/fuse-internal.h"
#include "graph/main-thread.h"

struct BdFuseWorker {
    BdFuseExport *fe;
    GThread *thread;
    int epfd;
    struct fuse_buf fbuf;      /* request buffer (libfuse allocates) */
    void *data;                /* read buffer, BD_FUSE_MAX_IO bytes */
    void *extra;               /* larger one-off buffer, freed per request */
    gboolean admitted;         /* current request holds an export ref */
    char name[16];             /* the thread's own name */
    BdWorkerMembership pool;   /* the worker's iothread, if any */
};

enum { TAG_FUSE = 1, TAG_STOP = 2 };

static __thread BdFuseWorker *current_worker;

gboolean bd_fuse_request_admitted(void)
{
    return current_worker && current_worker->admitted;
}

void bd_fuse_request_release(void)
{
    BdFuseWorker *w = current_worker;

    if (w && w->admitted) {
        w->admitted = FALSE;
        bd_export_unref(&w->fe->common);
    }
}

/* Requests that reach the export's node or state hold a reference while
 * they run.  The rest (INIT, RELEASE, FORGET, STATFS, INTERRUPT, ...) are
 * answered by libfuse from the session alone: they take none, so that an
 * asynchronous RELEASE after close() never makes the export "in use". */
static gboolean opcode_uses_export(const struct fuse_buf *fbuf)
{
    const struct fuse_in_header *in = fbuf->mem;

    if (fbuf->size < sizeof(*in) || (fbuf->flags & FUSE_BUF_IS_FD)) {
        return TRUE;
    }
    switch (in->opcode) {
    case FUSE_GETATTR:
    case FUSE_SETATTR:
    case FUSE_OPEN:
    case FUSE_READ:
    case FUSE_WRITE:
    case FUSE_FSYNC:
    case FUSE_FALLOCATE:
    case FUSE_LSEEK:
        return TRUE;
    default:
        return FALSE;
    }
}

void *bd_fuse_worker_buffer(size_t size)
{
    BdFuseWorker *w = current_worker;

    if (size <= BD_FUSE_MAX_IO) {
        if (!w->data) {
            w->data = g_try_malloc(BD_FUSE_MAX_IO);
        }
        return w->data;
    }
    g_free(w->extra);
    w->extra = g_try_malloc(size);
    return w->extra;
}

/* Take a request reference unless the export is shutting down (see
 * 'stopping' in fuse-internal.h). */
static gboolean worker_admit(BdFuseExport *fe)
{
    return !g_atomic_int_get(&fe->stopping) &&
           bd_export_try_ref(&fe->common);
}

static void worker_signal_stop(BdFuseExport *fe)
{
    uint64_t one = 1;

    if (write(fe->stop_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        g_warning("export '%s': cannot wake FUSE workers: %s",
                  fe->common.id, g_strerror(errno));
    }
}

/* Serve queued requests until none is left.  FALSE when the connection
 * is gone (unmounted or aborted from outside). */
static gboolean worker_serve_queue(BdFuseWorker *w)
{
    BdFuseExport *fe = w->fe;

    for (;;) {
        int res = fuse_session_receive_buf(fe->session, &w->fbuf);

        if (res == -EAGAIN || res == -EINTR) {
            return TRUE;
        }
        if (res <= 0) {
            /* 0: ENODEV, the mount went away; < 0: a device error. */
            return FALSE;
        }
        bd_worker_pool_follow(&w->pool, &fe->common.pool);
        w->admitted = opcode_uses_export(&w->fbuf) && worker_admit(fe);
        fuse_session_process_buf(fe->session, &w->fbuf);
        bd_fuse_request_release();      /* if the handler did not */
        g_clear_pointer(&w->extra, g_free);
    }
}

/* Before sleeping, one worker at a time polls the queue for a short
 * while: a synchronous client (one request in flight, or io_uring writes,
 * which the kernel serializes per file) sends its next request within a
 * few microseconds of our reply, and finding it awake saves a wake-up
 * of an idle CPU, which dominates the round trip (worst in VMs).  The
 * spin is bounded in time and taken by one worker only, so it costs at
 * most a fraction of one CPU, and only while requests keep coming. */
#define SPIN_NS (40 * 1000)

static gboolean worker_spin(BdFuseWorker *w)
{
    BdFuseExport *fe = w->fe;
    struct pollfd pfd = { .fd = fuse_session_fd(fe->session), .events = POLLIN };
    gint64 end;
    gboolean got = FALSE;

    if (!g_atomic_int_compare_and_exchange(&fe->spinning, 0, 1)) {
        return FALSE;
    }
    end = g_get_monotonic_time() * 1000 + SPIN_NS;
    while (!g_atomic_int_get(&fe->stopping)) {
        if (poll(&pfd, 1, 0) > 0) {
            got = TRUE;
            break;
        }
        if (g_get_monotonic_time() * 1000 >= end) {
            break;
        }
    }
    g_atomic_int_set(&fe->spinning, 0);
    return got;
}

static gpointer worker_main(gpointer opaque)
{
    BdFuseWorker *w = opaque;
    BdFuseExport *fe = w->fe;

    current_worker = w;
    bd_worker_pool_name_thread(&w->pool);
    for (;;) {
        struct epoll_event ev;
        int n;

        if (worker_spin(w)) {
            if (!worker_serve_queue(w)) {
                worker_signal_stop(fe);
                break;
            }
            continue;
        }
        n = epoll_wait(w->epfd, &ev, 1, -1);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 || ev.data.u32 == TAG_STOP) {
            break;
        }
        if (!worker_serve_queue(w)) {
            if (!g_atomic_int_get(&fe->stopping) &&
                g_atomic_int_compare_and_exchange(&fe->closed_outside, 0, 1)) {
                g_message("export '%s': FUSE connection on '%s' closed "
                          "from outside (unmounted or aborted)",
                          fe->common.id, fe->mountpoint);
            }
            worker_signal_stop(fe);
            break;
        }
    }
    bd_worker_pool_leave(&w->pool);
    current_worker = NULL;
    return NULL;
}

static void worker_free(BdFuseWorker *w)
{
    if (w->epfd >= 0) {
        close(w->epfd);
    }
    free(w->fbuf.mem);
    g_free(w->data);
    g_free(w->extra);
    g_free(w);
}

static BdFuseWorker *worker_new(BdFuseExport *fe, guint index, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdFuseWorker *w = g_new0(BdFuseWorker, 1);
    struct epoll_event ev_fuse = { .events = EPOLLIN | EPOLLEXCLUSIVE,
                                   .data.u32 = TAG_FUSE };
    struct epoll_event ev_stop = { .events = EPOLLIN, .data.u32 = TAG_STOP };

    g_snprintf(w->name, sizeof(w->name), "fuse-%s-%u", fe->common.id, index);
    w->fe = fe;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, fuse_session_fd(fe->session),
                  &ev_fuse) < 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, fe->stop_fd, &ev_stop) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to set up FUSE worker: %s", g_strerror(errno));
        worker_free(w);
        return NULL;
    }
    /* Counted in the iothread before it runs (the count is the pool's
     * room, worked out by the caller). */
    bd_worker_pool_enter(&w->pool, &fe->common.pool, w->name, FALSE);
    w->thread = g_thread_try_new(w->name, worker_main, w, errp);
    if (!w->thread) {
        bd_worker_pool_leave(&w->pool);
        worker_free(w);
        return NULL;
    }
    return w;
}

/* Workers per export: blocked I/O needs more threads than CPUs. */
static guint worker_count(void)
{
    return CLAMP(g_get_num_processors() * 4, 8, 32);
}

gboolean bd_fuse_workers_start(BdFuseExport *fe, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    int fd = fuse_session_fd(fe->session);
    int fl = fcntl(fd, F_GETFL);
    guint n = worker_count();
    g_autoptr(BdWorkerPool) pool = bd_worker_pool_slot_get(&fe->common.pool);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to set up FUSE session: %s", g_strerror(errno));
        return FALSE;
    }
    fe->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fe->stop_fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to set up FUSE session: %s", g_strerror(errno));
        return FALSE;
    }
    if (pool) {
        n = CLAMP(bd_worker_pool_room(pool), 1, (int)n);
    }
    fe->workers = g_new0(BdFuseWorker *, n);
    for (guint i = 0; i < n; i++) {
        fe->workers[i] = worker_new(fe, i, errp);
        if (!fe->workers[i]) {
            bd_fuse_workers_stop(fe);
            bd_fuse_workers_join(fe);
            return FALSE;
        }
        fe->n_workers++;
    }
    return TRUE;
}

void bd_fuse_workers_stop(BdFuseExport *fe)
{
    BD_GLOBAL_STATE_CODE();

    if (fe->stop_fd >= 0) {
        worker_signal_stop(fe);
    }
}

void bd_fuse_workers_join(BdFuseExport *fe)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; i < fe->n_workers; i++) {
        g_thread_join(fe->workers[i]->thread);
        worker_free(fe->workers[i]);
    }
    g_clear_pointer(&fe->workers, g_free);
    fe->n_workers = 0;
    if (fe->stop_fd >= 0) {
        close(fe->stop_fd);
        fe->stop_fd = -1;
    }
}
