/* SPDX-License-Identifier: MIT */
/* The nbd driver's client: libnbd connections to one export, each with
 * an I/O thread, many requests in flight, and reconnection.
 *
 * Thread model: any number of request threads issue commands on a
 * connection's libnbd handle (libnbd locks the handle) and sleep on
 * their own NbdOp until its completion callback runs.  Each connection
 * has one I/O thread that polls the socket and drives libnbd's state
 * machine (notify_read/notify_write), which is where replies are read
 * and completion callbacks run; an issuing thread whose command could
 * not be sent whole kicks it (eventfd) to wait for POLLOUT too.  A
 * reconnect thread replaces lost connections.  c->lock (a leaf) guards
 * the connection slots and the reconnection state; a request never
 * holds it while it waits for a reply.
 */
#define G_LOG_DOMAIN "blockd-nbd-client"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "graph/error.h"
#include "graph/main-thread.h"
#include "formats/nbd/nbd-int.h"

#define NBD_MAX_CONNS 16
/* Reconnection attempts: the first after this long, then twice as long
 * each time up to the maximum, a short one while requests wait out
 * reconnect-delay (QEMU waits 1 s to 16 s; a restarted server here is
 * usually back within a second or two). */
#define RECONNECT_FIRST_US (100 * 1000)
#define RECONNECT_MAX_US (2 * G_USEC_PER_SEC)
#define RECONNECT_WAITED_MAX_US (250 * 1000)
/* One connection attempt at most: connect, TLS and the NBD handshake,
 * against a server that accepted but does not answer. */
#define CONNECT_TIMEOUT_US (10 * G_USEC_PER_SEC)

typedef struct NbdConn {
    gint refcnt;
    struct nbd_handle *h;
    int wake_fd;            /* eventfd: issuers ask for POLLOUT */
    GThread *thread;        /* the I/O thread; joined by its reaper */
    gint lost;              /* atomic: the connection broke */
    gint stop;              /* atomic: the I/O thread must end */
    guint slot;
} NbdConn;

struct NbdClient {
    NbdConfig cfg;
    NbdInfo info;
    guint nconns;
    guint next;             /* atomic: round-robin over the slots */

    BdMutex lock;
    GCond cond;             /* a connection came back, or closing */
    GCond reconnect_cond;   /* work for the reconnect thread */
    NbdConn *conns[NBD_MAX_CONNS] BD_GUARDED_BY(lock);
    GPtrArray *dead BD_GUARDED_BY(lock);  /* lost, to be reaped */
    guint live BD_GUARDED_BY(lock);
    gint64 lost_at BD_GUARDED_BY(lock);   /* when live fell to 0 */
    gboolean closing BD_GUARDED_BY(lock);
    GThread *reconnect_thread;
    gint stopping;          /* atomic: close began; attempts give up */
};

typedef enum { OP_READ, OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH,
               OP_STATUS } NbdOpType;

/* One request, on the issuing thread's stack. */
typedef struct {
    NbdOpType type;
    uint64_t offset, bytes;
    void *buf;
    uint32_t flags;
    const char *context;        /* OP_STATUS: the context to read */
    uint64_t pnum;              /* OP_STATUS results */
    uint32_t status;
    gboolean got_extent;

    GMutex m;
    GCond c;
    gboolean done;
    int err;
} NbdOp;

void nbd_config_clear(NbdConfig *cfg)
{
    g_free(cfg->host);
    g_free(cfg->port);
    g_free(cfg->path);
    g_free(cfg->export_name);
    g_free(cfg->bitmap_context);
    g_free(cfg->tls_hostname);
    g_clear_pointer(&cfg->tls, bd_tls_creds_unref);
    memset(cfg, 0, sizeof(*cfg));
}

/* --- one connection --- */

static NbdConn *conn_ref(NbdConn *cn)
{
    g_atomic_int_inc(&cn->refcnt);
    return cn;
}

static void conn_unref(NbdConn *cn)
{
    if (!g_atomic_int_dec_and_test(&cn->refcnt)) {
        return;
    }
    g_assert(!cn->thread);
    if (!g_atomic_int_get(&cn->lost)) {
        /* Orderly end: NBD_CMD_DISC, nothing being in flight. */
        nbd_shutdown(cn->h, 0);
    }
    nbd_close(cn->h);
    close(cn->wake_fd);
    g_free(cn);
}

static void conn_kick(NbdConn *cn)
{
    uint64_t one = 1;

    if (write(cn->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, the thread will wake anyway. */
    }
}

static void client_conn_lost(NbdClient *c, NbdConn *cn);

typedef struct {
    NbdClient *c;
    NbdConn *cn;
} IoThreadArgs;

/* The I/O thread: poll the socket in the direction libnbd wants and let
 * it read replies (and finish sends that did not fit at once). */
static gpointer conn_io_main(gpointer opaque)
{
    IoThreadArgs *a = opaque;
    NbdClient *c = a->c;
    NbdConn *cn = a->cn;

    g_free(a);
    while (!g_atomic_int_get(&cn->stop)) {
        unsigned dir = nbd_aio_get_direction(cn->h);
        struct pollfd p[2] = {
            { .fd = nbd_aio_get_fd(cn->h) },
            { .fd = cn->wake_fd, .events = POLLIN },
        };
        int r = 0;

        if (dir & LIBNBD_AIO_DIRECTION_READ) {
            p[0].events |= POLLIN;
        }
        if (dir & LIBNBD_AIO_DIRECTION_WRITE) {
            p[0].events |= POLLOUT;
        }
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            g_warning("nbd client: poll: %s", g_strerror(errno));
            break;
        }
        if (p[1].revents & POLLIN) {
            uint64_t v;
            if (read(cn->wake_fd, &v, sizeof(v)) < 0) {
                /* EAGAIN: another wake-up took it. */
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            r = nbd_aio_notify_read(cn->h);
        } else if (p[0].revents & POLLOUT) {
            r = nbd_aio_notify_write(cn->h);
        }
        if (r < 0 || nbd_aio_is_dead(cn->h) || nbd_aio_is_closed(cn->h)) {
            client_conn_lost(c, cn);
            break;
        }
    }
    return NULL;
}

/* libnbd's handshake on 'fd' (taken over), driven here rather than by
 * the blocking nbd_connect_socket, so that it ends at 'deadline' or
 * when *cancel is set.  0, or -1 with libnbd's error for this thread
 * (or errno ETIMEDOUT/ECANCELED and no libnbd error). */
static int handshake(struct nbd_handle *h, int fd, gint64 deadline,
                     const gint *cancel)
{
    if (nbd_aio_connect_socket(h, fd) < 0) {
        return -1;
    }
    while (!nbd_aio_is_ready(h)) {
        unsigned dir = nbd_aio_get_direction(h);
        struct pollfd p = { .fd = nbd_aio_get_fd(h) };
        gint64 left = deadline - g_get_monotonic_time();
        int n;

        if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h)) {
            return -1;
        }
        if (g_atomic_int_get(cancel)) {
            errno = ECANCELED;
            return -2;
        }
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -2;
        }
        p.events = (dir & LIBNBD_AIO_DIRECTION_READ ? POLLIN : 0) |
                   (dir & LIBNBD_AIO_DIRECTION_WRITE ? POLLOUT : 0);
        n = poll(&p, 1, (int)MIN(left / 1000 + 1, 100));
        if (n < 0 && errno != EINTR) {
            return -2;
        }
        if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) &&
            nbd_aio_notify_read(h) < 0) {
            return -1;
        }
        if (n > 0 && (p.revents & POLLOUT) && nbd_aio_notify_write(h) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Connect, negotiate and read what the server offers into *info. */
static NbdConn *conn_open(const NbdConfig *cfg, NbdInfo *info,
                          const gint *cancel, GError **errp)
{
    const char *export = cfg->export_name ? cfg->export_name : "";
    gint64 deadline = g_get_monotonic_time() + CONNECT_TIMEOUT_US;
    struct nbd_handle *h;
    NbdConn *cn;
    int fd, min, max, ret;

    fd = nbd_socket_connect(cfg, deadline, cancel, errp);
    if (fd < 0) {
        return NULL;
    }
    if (cfg->tls) {
        fd = nbd_tls_start(cfg, fd, deadline, errp);
        if (fd < 0) {
            return NULL;
        }
    }
    h = nbd_create();
    if (!h) {
        close(fd);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "nbd: %s",
                    nbd_get_error());
        return NULL;
    }
    if (nbd_set_export_name(h, export) < 0 ||
        nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        (cfg->bitmap_context &&
         nbd_add_meta_context(h, cfg->bitmap_context) < 0)) {
        goto fail_libnbd;
    }
    ret = handshake(h, fd, deadline, cancel);
    if (ret == -2) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD handshake with the server failed: %s",
                    g_strerror(errno));
        nbd_close(h);
        return NULL;
    }
    if (ret < 0) {
        int err = nbd_get_errno();

        /* QEMU's texts for the refusals a user meets. */
        if (err == ENOENT || err == EINVAL) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Requested export not available");
            nbd_close(h);
            return NULL;
        }
        if (err == ENOTSUP && !cfg->tls &&
            strstr(nbd_get_error(), "TLS")) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "TLS negotiation required before option 7 (go)");
            nbd_close(h);
            return NULL;
        }
        goto fail_libnbd;
    }
    if (cfg->bitmap_context &&
        nbd_can_meta_context(h, cfg->bitmap_context) != 1) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "requested x-dirty-bitmap %s not found",
                    cfg->bitmap_context);
        nbd_close(h);
        return NULL;
    }

    *info = (NbdInfo) {
        .size = (uint64_t)nbd_get_size(h),
        .read_only = nbd_is_read_only(h) == 1,
        .can_flush = nbd_can_flush(h) == 1,
        .can_fua = nbd_can_fua(h) == 1,
        .can_trim = nbd_can_trim(h) == 1,
        .can_zero = nbd_can_zero(h) == 1,
        .can_fast_zero = nbd_can_fast_zero(h) == 1,
        .can_multi_conn = nbd_can_multi_conn(h) == 1,
        .can_cache = nbd_can_cache(h) == 1,
        .has_allocation =
            nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1,
    };
    min = (int)nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    max = (int)nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    info->min_block = min > 0 ? (uint32_t)min : 1;
    info->max_block = max > 0 ? MIN((uint32_t)max, NBD_CLIENT_MAX_REQUEST)
                              : NBD_CLIENT_MAX_REQUEST;

    cn = g_new0(NbdConn, 1);
    cn->refcnt = 1;
    cn->h = h;
    cn->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (cn->wake_fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "eventfd: %s",
                    g_strerror(errno));
        nbd_close(h);
        g_free(cn);
        return NULL;
    }
    return cn;

fail_libnbd:
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s", nbd_get_error());
    nbd_close(h);
    return NULL;
}

static void conn_start(NbdClient *c, NbdConn *cn)
{
    IoThreadArgs *a = g_new(IoThreadArgs, 1);

    a->c = c;
    a->cn = cn;
    cn->thread = g_thread_new("nbd-client-io", conn_io_main, a);
}

/* Stop and join the I/O thread (not on the thread itself). */
static void conn_stop(NbdConn *cn)
{
    if (cn->thread) {
        g_atomic_int_set(&cn->stop, 1);
        conn_kick(cn);
        g_thread_join(cn->thread);
        cn->thread = NULL;
    }
}

/* --- the connection set --- */

/* A connection broke: take it out of its slot (once) and hand it to the
 * reconnect thread.  Any thread, including its own I/O thread.  'lost'
 * is set under the lock, so that whoever holds it sees every lost
 * connection already out of its slot. */
static void client_conn_lost(NbdClient *c, NbdConn *cn)
{
    bd_mutex_lock(&c->lock);
    if (!g_atomic_int_get(&cn->lost)) {
        g_atomic_int_set(&cn->lost, 1);
        if (c->conns[cn->slot] == cn) {
            c->conns[cn->slot] = NULL;
            /* The slot's reference goes to the reaper. */
            g_ptr_array_add(c->dead, cn);
            if (--c->live == 0) {
                c->lost_at = g_get_monotonic_time();
                g_warning("nbd client: connection to the server lost%s",
                          c->cfg.reconnect_delay ? ", reconnecting" : "");
            }
            g_cond_signal(&c->reconnect_cond);
        }
    }
    bd_mutex_unlock(&c->lock);
}

/* A live connection for the next request, with a reference, or NULL
 * when there is none and reconnect-delay has run out (or is 0). */
static NbdConn *client_get_conn(NbdClient *c)
{
    guint start = (guint)g_atomic_int_add(&c->next, 1);
    NbdConn *found = NULL;

    bd_mutex_lock(&c->lock);
    for (;;) {
        for (guint i = 0; i < c->nconns; i++) {
            NbdConn *cn = c->conns[(start + i) % c->nconns];
            if (cn && !g_atomic_int_get(&cn->lost)) {
                found = conn_ref(cn);
                break;
            }
        }
        if (found || c->closing || !c->cfg.reconnect_delay) {
            break;
        }
        gint64 deadline = c->lost_at +
                          (gint64)c->cfg.reconnect_delay * G_USEC_PER_SEC;
        if (g_get_monotonic_time() >= deadline) {
            break;
        }
        bd_cond_wait_until(&c->cond, &c->lock, deadline);
    }
    bd_mutex_unlock(&c->lock);
    return found;
}

static gboolean info_compatible(const NbdInfo *old, const NbdInfo *now)
{
    return old->size == now->size && (old->read_only || !now->read_only);
}

/* Replace every lost connection; on failure wait and try again, until
 * the client closes. */
static gpointer client_reconnect_main(gpointer opaque)
{
    NbdClient *c = opaque;
    gint64 backoff = RECONNECT_FIRST_US;

    bd_mutex_lock(&c->lock);
    while (!c->closing) {
        g_autoptr(GPtrArray) dead = NULL;
        gboolean missing = FALSE;

        for (guint i = 0; i < c->nconns; i++) {
            missing |= c->conns[i] == NULL;
        }
        if (!missing && c->dead->len == 0) {
            backoff = RECONNECT_FIRST_US;
            bd_cond_wait(&c->reconnect_cond, &c->lock);
            continue;
        }
        dead = g_steal_pointer(&c->dead);
        c->dead = g_ptr_array_new();
        bd_mutex_unlock(&c->lock);

        for (guint i = 0; i < dead->len; i++) {
            NbdConn *cn = dead->pdata[i];
            conn_stop(cn);
            conn_unref(cn);
        }

        for (guint slot = 0; slot < c->nconns; slot++) {
            g_autoptr(GError) err = NULL;
            NbdInfo info;
            NbdConn *cn;

            bd_mutex_lock(&c->lock);
            gboolean want = !c->closing && !c->conns[slot];
            bd_mutex_unlock(&c->lock);
            if (!want) {
                continue;
            }
            cn = conn_open(&c->cfg, &info, &c->stopping, &err);
            if (cn && !info_compatible(&c->info, &info)) {
                g_warning("nbd client: the export changed on reconnect "
                          "(size or read-only); not using it");
                g_atomic_int_set(&cn->lost, 1);
                conn_unref(cn);
                cn = NULL;
            }
            if (!cn) {
                break;
            }
            cn->slot = slot;
            conn_start(c, cn);
            bd_mutex_lock(&c->lock);
            if (c->closing) {
                bd_mutex_unlock(&c->lock);
                conn_stop(cn);
                conn_unref(cn);
                break;
            }
            c->conns[slot] = cn;
            if (c->live++ == 0) {
                g_message("nbd client: reconnected to the server");
            }
            g_cond_broadcast(&c->cond);
            bd_mutex_unlock(&c->lock);
            backoff = RECONNECT_FIRST_US;
        }

        bd_mutex_lock(&c->lock);
        missing = FALSE;
        for (guint i = 0; i < c->nconns; i++) {
            missing |= c->conns[i] == NULL;
        }
        if (missing && !c->closing) {
            gint64 now = g_get_monotonic_time();
            /* Requests wait for us: try often enough that a server back
             * within reconnect-delay is found within it. */
            gboolean waited_for = c->live == 0 &&
                now < c->lost_at +
                      (gint64)c->cfg.reconnect_delay * G_USEC_PER_SEC;

            bd_cond_wait_until(&c->reconnect_cond, &c->lock, now + backoff);
            backoff = MIN(backoff * 2, waited_for ? RECONNECT_WAITED_MAX_US
                                                  : RECONNECT_MAX_US);
        }
    }
    bd_mutex_unlock(&c->lock);
    return NULL;
}

NbdClient *nbd_client_open(NbdConfig *cfg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;
    NbdClient *c = g_new0(NbdClient, 1);
    gint64 deadline;
    gint64 pause = RECONNECT_FIRST_US;
    NbdConn *first;

    c->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    bd_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    g_cond_init(&c->reconnect_cond);
    c->dead = g_ptr_array_new();

    /* open-timeout: keep trying until it runs out (0: once). */
    deadline = g_get_monotonic_time() +
               (gint64)c->cfg.open_timeout * G_USEC_PER_SEC;
    for (;;) {
        g_clear_error(&err);
        first = conn_open(&c->cfg, &c->info, &c->stopping, &err);
        if (first || g_get_monotonic_time() + pause > deadline) {
            break;
        }
        g_usleep(pause);
        pause = MIN(pause * 2, (gint64)G_USEC_PER_SEC);
    }
    if (!first) {
        g_propagate_error(errp, g_steal_pointer(&err));
        nbd_client_close(c);
        return NULL;
    }

    /* Multi-conn: the server says a flush on one connection covers
     * writes completed on any, so several connections are safe for a
     * writer as for a reader. */
    c->nconns = c->info.can_multi_conn ? NBD_CLIENT_MULTI_CONN : 1;
    bd_mutex_lock(&c->lock);
    c->conns[0] = first;
    c->live = 1;
    bd_mutex_unlock(&c->lock);
    conn_start(c, first);
    for (guint slot = 1; slot < c->nconns; slot++) {
        NbdInfo info;
        NbdConn *cn = conn_open(&c->cfg, &info, &c->stopping, NULL);

        if (!cn || !info_compatible(&c->info, &info)) {
            if (cn) {
                g_atomic_int_set(&cn->lost, 1);
                conn_unref(cn);
            }
            /* Fewer connections then, not an error. */
            c->nconns = slot;
            break;
        }
        cn->slot = slot;
        conn_start(c, cn);
        bd_mutex_lock(&c->lock);
        c->conns[slot] = cn;
        c->live++;
        bd_mutex_unlock(&c->lock);
    }
    c->reconnect_thread = g_thread_new("nbd-reconnect",
                                       client_reconnect_main, c);
    return c;
}

void nbd_client_close(NbdClient *c)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *dead;

    if (!c) {
        return;
    }
    g_atomic_int_set(&c->stopping, 1);
    bd_mutex_lock(&c->lock);
    c->closing = TRUE;
    g_cond_broadcast(&c->cond);
    g_cond_broadcast(&c->reconnect_cond);
    bd_mutex_unlock(&c->lock);
    if (c->reconnect_thread) {
        g_thread_join(c->reconnect_thread);
    }
    bd_mutex_lock(&c->lock);
    dead = g_steal_pointer(&c->dead);
    for (guint i = 0; i < NBD_MAX_CONNS; i++) {
        if (c->conns[i]) {
            g_ptr_array_add(dead, c->conns[i]);
            c->conns[i] = NULL;
        }
    }
    bd_mutex_unlock(&c->lock);
    for (guint i = 0; i < dead->len; i++) {
        NbdConn *cn = dead->pdata[i];
        conn_stop(cn);
        conn_unref(cn);
    }
    g_ptr_array_unref(dead);
    g_cond_clear(&c->cond);
    g_cond_clear(&c->reconnect_cond);
    bd_mutex_destroy(&c->lock);
    nbd_config_clear(&c->cfg);
    g_free(c);
}

const NbdInfo *nbd_client_info(NbdClient *c)
{
    return &c->info;
}

const NbdConfig *nbd_client_config(NbdClient *c)
{
    return &c->cfg;
}

/* --- requests --- */

static int op_complete(void *user_data, int *error)
{
    NbdOp *op = user_data;

    g_mutex_lock(&op->m);
    op->err = *error;
    op->done = TRUE;
    g_cond_signal(&op->c);
    g_mutex_unlock(&op->m);
    return 1;   /* retire the command: nobody asks for it again */
}

static int op_extent(void *user_data, const char *context, uint64_t offset,
                     uint32_t *entries, size_t nr_entries, int *error)
{
    NbdOp *op = user_data;

    if (!op->got_extent && nr_entries >= 2 &&
        strcmp(context, op->context) == 0) {
        op->pnum = entries[0];
        op->status = entries[1];
        op->got_extent = TRUE;
    }
    return 0;
}

static int64_t op_issue(struct nbd_handle *h, NbdOp *op)
{
    nbd_completion_callback done = { .callback = op_complete,
                                     .user_data = op };

    switch (op->type) {
    case OP_READ:
        return nbd_aio_pread(h, op->buf, op->bytes, op->offset, done, 0);
    case OP_WRITE:
        return nbd_aio_pwrite(h, op->buf, op->bytes, op->offset, done,
                              op->flags);
    case OP_ZERO:
        return nbd_aio_zero(h, op->bytes, op->offset, done, op->flags);
    case OP_TRIM:
        return nbd_aio_trim(h, op->bytes, op->offset, done, 0);
    case OP_FLUSH:
        return nbd_aio_flush(h, done, 0);
    case OP_STATUS: {
        nbd_extent_callback ext = { .callback = op_extent,
                                    .user_data = op };
        return nbd_aio_block_status(h, op->bytes, op->offset, ext, done,
                                    LIBNBD_CMD_FLAG_REQ_ONE);
    }
    }
    g_assert_not_reached();
}

/* Whether a request that failed with 'err' failed with its connection.
 * libnbd may fail a command with ENOTCONN before its state says dead
 * (a command refused on a handle the server just closed); a server
 * that is shutting down answers ESHUTDOWN: both are worth sending again
 * on a new connection. */
static gboolean conn_is_broken(NbdConn *cn, int err)
{
    switch (err) {
    case ENOTCONN:
    case ESHUTDOWN:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
        return TRUE;
    }
    return g_atomic_int_get(&cn->lost) || nbd_aio_is_dead(cn->h) ||
           nbd_aio_is_closed(cn->h);
}

/* Run 'op' on 'cn': 0 or -errno; *broken when the connection failed
 * under it (then the op may be run again elsewhere). */
static int conn_run(NbdConn *cn, NbdOp *op, gboolean *broken)
{
    op->done = FALSE;
    op->err = 0;
    op->got_extent = FALSE;
    *broken = FALSE;
    if (op_issue(cn->h, op) < 0) {
        int err = nbd_get_errno() ? nbd_get_errno() : EIO;

        *broken = conn_is_broken(cn, err);
        return -err;
    }
    if (nbd_aio_get_direction(cn->h) & LIBNBD_AIO_DIRECTION_WRITE) {
        conn_kick(cn);
    }
    g_mutex_lock(&op->m);
    while (!op->done) {
        g_cond_wait(&op->c, &op->m);
    }
    g_mutex_unlock(&op->m);
    if (op->err) {
        *broken = conn_is_broken(cn, op->err);
        return -op->err;
    }
    return 0;
}

static int client_run(NbdClient *c, NbdOp *op)
{
    int ret;

    g_mutex_init(&op->m);
    g_cond_init(&op->c);
    for (;;) {
        gboolean broken;
        NbdConn *cn = client_get_conn(c);

        if (!cn) {
            ret = -EIO;
            break;
        }
        ret = conn_run(cn, op, &broken);
        if (broken) {
            client_conn_lost(c, cn);
        }
        conn_unref(cn);
        if (!broken) {
            break;
        }
        /* Sent again on another or a new connection, or failed with
         * EIO by client_get_conn when reconnect-delay runs out. */
    }
    g_cond_clear(&op->c);
    g_mutex_clear(&op->m);
    return ret;
}

int nbd_client_pread(NbdClient *c, uint64_t offset, uint64_t bytes,
                     void *buf)
{
    NbdOp op = { .type = OP_READ, .offset = offset, .bytes = bytes,
                 .buf = buf };
    return client_run(c, &op);
}

int nbd_client_pwrite(NbdClient *c, uint64_t offset, uint64_t bytes,
                      const void *buf, uint32_t nbd_flags)
{
    NbdOp op = { .type = OP_WRITE, .offset = offset, .bytes = bytes,
                 .buf = (void *)buf, .flags = nbd_flags };
    return client_run(c, &op);
}

int nbd_client_zero(NbdClient *c, uint64_t offset, uint64_t bytes,
                    uint32_t nbd_flags)
{
    NbdOp op = { .type = OP_ZERO, .offset = offset, .bytes = bytes,
                 .flags = nbd_flags };
    return client_run(c, &op);
}

int nbd_client_trim(NbdClient *c, uint64_t offset, uint64_t bytes)
{
    NbdOp op = { .type = OP_TRIM, .offset = offset, .bytes = bytes };
    return client_run(c, &op);
}

int nbd_client_flush(NbdClient *c)
{
    NbdOp op = { .type = OP_FLUSH };
    return client_run(c, &op);
}

int nbd_client_block_status(NbdClient *c, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint32_t *flags)
{
    NbdOp op = { .type = OP_STATUS, .offset = offset, .bytes = bytes,
                 .context = c->cfg.bitmap_context
                            ? c->cfg.bitmap_context
                            : LIBNBD_CONTEXT_BASE_ALLOCATION };
    int ret = client_run(c, &op);

    if (ret < 0) {
        return ret;
    }
    /* A server that answers without an extent, or with an empty or
     * too long one, breaks the protocol. */
    if (!op.got_extent || op.pnum == 0) {
        return -EIO;
    }
    *pnum = MIN(op.pnum, bytes);
    *flags = op.status;
    return 0;
}
