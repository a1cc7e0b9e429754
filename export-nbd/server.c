/* SPDX-License-Identifier: MIT */
/* The NBD server's lifecycle: the unix or TCP listener, accepting
 * connections (with max-connections), and tearing everything down on
 * nbd-server-stop.
 *
 * Thread model: start/stop and the accept callback run on the main
 * thread (GLib main loop).  Each accepted socket gets a connection
 * thread (handshake, then transmission); clients are tracked in
 * 'clients' under bd_nbd_lock so that stop can disconnect them.
 *
 *   listener --accept--> conn thread: handshake --GO--> workers x16
 *                                         |                 |
 *                                      close <--last ref----+
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib-unix.h>

#include "export-nbd/nbd-internal.h"
#include "graph/main-thread.h"
#include "graph/trace.h"

BdMutex bd_nbd_lock;

typedef struct {
    int fd;
    guint source;
    char *unix_path;          /* to unlink on stop, or NULL */
    uint32_t max_connections; /* 0 = unlimited */
    BdTlsCreds *tls_creds;    /* NULL: plaintext */
    BdObject *tls_creds_obj;  /* in use while the server runs */
    char *tls_authz;
    BdObject *tls_authz_obj;  /* in use while the server runs, or NULL */
    uint32_t handshake_max_seconds;
} BdNbdServer;

static BdNbdServer *server;   /* main thread */
/* BdNbdClient *, from accept to the last reference. */
static GList *clients BD_STATIC_GUARDED_BY(bd_nbd_lock);
/* Clients still negotiating (the listener pauses at
 * BD_NBD_MAX_HANDSHAKES), and those holding a place under
 * max-connections: the two never limit each other, so sockets idling in
 * the handshake cannot lock real clients out. */
static guint nr_handshaking BD_STATIC_GUARDED_BY(bd_nbd_lock);
static guint nr_slots BD_STATIC_GUARDED_BY(bd_nbd_lock);
static GCond slot_cond;       /* a slot freed, or stop (bd_nbd_lock) */
static gint max_conns;        /* atomic copy for connection threads */

gboolean bd_nbd_server_running(void)
{
    BD_GLOBAL_STATE_CODE();

    return server != NULL;
}

char *bd_nbd_server_uri(const char *export_name)
{
    BD_GLOBAL_STATE_CODE();

    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    g_autofree char *name = NULL;
    const char *scheme;

    if (!server || getsockname(server->fd, (struct sockaddr *)&ss, &len) < 0) {
        return NULL;
    }
    name = g_uri_escape_string(export_name, NULL, FALSE);
    if (ss.ss_family == AF_UNIX) {
        g_autofree char *path = g_uri_escape_string(server->unix_path, "/",
                                                    FALSE);
        scheme = server->tls_creds ? "nbds+unix" : "nbd+unix";
        return g_strdup_printf("%s:///%s?socket=%s", scheme, name, path);
    }
    if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv,
                    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return NULL;
    }
    /* A wildcard listener is reached on the loopback address from here;
     * a client elsewhere knows the host it wants. */
    if (!strcmp(host, "0.0.0.0")) {
        g_strlcpy(host, "127.0.0.1", sizeof(host));
    } else if (!strcmp(host, "::")) {
        g_strlcpy(host, "::1", sizeof(host));
    }
    scheme = server->tls_creds ? "nbds" : "nbd";
    return g_strdup_printf(strchr(host, ':') ? "%s://[%s]:%s/%s"
                                             : "%s://%s:%s/%s",
                           scheme, host, serv, name);
}

uint32_t bd_nbd_server_max_connections(void)
{
    return (uint32_t)g_atomic_int_get(&max_conns);
}

/* --- clients --- */

static gboolean resume_cb(gpointer data);

const char *const bd_nbd_handshake_failure_names[] = {
    [BD_NBD_HS_FAIL_DISCONNECTED] = "disconnected",
    [BD_NBD_HS_FAIL_PROTOCOL] = "protocol",
    [BD_NBD_HS_FAIL_EXPORT_NOT_FOUND] = "export-not-found",
    [BD_NBD_HS_FAIL_TLS_REQUIRED] = "tls-required",
    [BD_NBD_HS_FAIL_TLS] = "tls",
    [BD_NBD_HS_FAIL_TIMEOUT] = "timeout",
    [BD_NBD_HS_FAIL_ABORTED] = "aborted",
    NULL };

static char *peer_name(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], serv[NI_MAXSERV];

    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0 ||
        ss.ss_family == AF_UNIX) {
        return g_strdup("unix socket client");
    }
    if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv,
                    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return g_strdup("TCP client");
    }
    return g_strdup_printf("%s:%s", host, serv);
}

void bd_nbd_client_kick(BdNbdClient *c)
{
    g_atomic_int_set(&c->quit, TRUE);
    shutdown(c->fd, SHUT_RDWR);
    bd_nbd_workers_wake(c);
}

gboolean bd_nbd_client_leaving(BdNbdClient *c)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLRDHUP };

    if (g_atomic_int_get(&c->quit)) {
        return TRUE;
    }
    /* The peer hung up, or shut its sending side after NBD_CMD_DISC,
     * and the worker reading the socket has not seen it yet: a client
     * process that has just exited is no user any more. */
    return poll(&pfd, 1, 0) > 0 &&
           (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

void bd_nbd_client_unref(BdNbdClient *c)
{
    if (!g_atomic_int_dec_and_test(&c->refcount)) {
        return;
    }
    bd_mutex_lock(&bd_nbd_lock);
    clients = g_list_remove(clients, c);
    if (c->has_slot) {
        nr_slots--;
        g_cond_broadcast(&slot_cond);
    }
    bd_mutex_unlock(&bd_nbd_lock);
    if (c->exp) {
        bd_nbd_export_detach(c->exp, c);
        g_info("export '%s': NBD client %s disconnected after %"
               G_GUINT64_FORMAT " requests", c->exp->common.id, c->label,
               __atomic_load_n(&c->requests, __ATOMIC_RELAXED));
        BD_TRACE(BD_TRACE_NBD_CLIENT_DISCONNECT,
                 "export=%s client=%s requests=%" G_GUINT64_FORMAT,
                 c->exp->common.id, c->label,
                 __atomic_load_n(&c->requests, __ATOMIC_RELAXED));
        bd_export_unref(&c->exp->common);
    }
    if (c->tls) {
        if (!g_atomic_int_get(&c->quit)) {
            bd_tls_session_bye(c->tls);
        }
        bd_tls_session_free(c->tls);
    }
    bd_tls_creds_unref(c->tls_creds);
    g_free(c->tls_authz);
    close(c->fd);
    bd_mutex_destroy(&c->pool_lock);
    bd_nbd_budget_destroy(&c->budget);
    g_cond_clear(&c->parked_cond);
    bd_mutex_destroy(&c->send_lock);
    g_free(c->rbuf);
    g_free(c->meta_export);
    g_free(c->hs_export);
    g_free(c->peer);
    g_free(c->label);
    g_free(c);
}

static gboolean wait_for_greeting(BdNbdClient *c);
static void start_handshake_timer(BdNbdClient *c);

static gpointer client_thread(gpointer data)
{
    BdNbdClient *c = data;

    if (wait_for_greeting(c)) {
        start_handshake_timer(c);
        if (bd_nbd_handshake(c) == 0) {
            bd_nbd_transmission_run(c);    /* consumes our reference */
            return NULL;
        }
        bd_nbd_handshake_failed(c);
    }
    bd_nbd_client_handshake_done(c);
    bd_nbd_client_unref(c);
    return NULL;
}

/* --- handshake limits --- */

/* Main loop: the handshake took too long.  The timer holds a reference. */
static gboolean handshake_timeout_cb(gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdClient *c = data;

    if (g_atomic_int_get(&c->in_handshake)) {
        g_warning("NBD client %s: handshake not finished within the time "
                  "limit, closing the connection", c->peer);
        g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_TIMEOUT);
        bd_nbd_client_kick(c);
    }
    return G_SOURCE_REMOVE;
}

static void timer_unref(gpointer data)
{
    bd_nbd_client_unref(data);
}

/* Main loop: stop a timer whose handshake is over; its destroy notify
 * (timer_unref) drops the client reference it held. */
static gboolean destroy_timer_cb(gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    GSource *timer = data;

    g_source_destroy(timer);
    g_source_unref(timer);
    return G_SOURCE_REMOVE;
}

/* As QEMU, which stops accepting at max-connections: while the clients
 * in transmission fill max-connections, a new one gets no greeting and
 * waits, untimed, for a place.  Only established clients count, so
 * sockets idling in the handshake never hold one. */
static gboolean wait_for_greeting(BdNbdClient *c)
{
    uint32_t max = bd_nbd_server_max_connections();
    gboolean ok;

    bd_mutex_lock(&bd_nbd_lock);
    while (max && nr_slots >= max && !g_atomic_int_get(&c->quit)) {
        bd_cond_wait(&slot_cond, &bd_nbd_lock);
    }
    ok = !g_atomic_int_get(&c->quit);
    bd_mutex_unlock(&bd_nbd_lock);
    return ok;
}

/* Conn thread, once greeted: handshake-max-seconds from now on.  The
 * timer holds a reference; bd_nbd_client_handshake_done drops it. */
static void start_handshake_timer(BdNbdClient *c)
{
    if (!c->handshake_max_seconds) {
        return;
    }
    g_atomic_int_inc(&c->refcount);
    c->handshake_timer = g_timeout_source_new_seconds(c->handshake_max_seconds);
    g_source_set_callback(c->handshake_timer, handshake_timeout_cb, c,
                          timer_unref);
    g_source_attach(c->handshake_timer, NULL);
}

void bd_nbd_client_handshake_done(BdNbdClient *c)
{
    if (!g_atomic_int_compare_and_exchange(&c->in_handshake, 1, 0)) {
        return;
    }
    if (c->handshake_timer) {
        /* The main thread destroys it: a timeout running there right
         * now finishes with the client before the timer's reference
         * goes, on the thread that ran it. */
        g_idle_add(destroy_timer_cb, g_steal_pointer(&c->handshake_timer));
    }
    bd_mutex_lock(&bd_nbd_lock);
    nr_handshaking--;
    bd_mutex_unlock(&bd_nbd_lock);
    g_idle_add(resume_cb, NULL);
}

gboolean bd_nbd_client_claim_slot(BdNbdClient *c)
{
    uint32_t max = bd_nbd_server_max_connections();
    gboolean ok;

    bd_nbd_client_handshake_done(c);
    bd_mutex_lock(&bd_nbd_lock);
    /* Another client may have taken the place this one was greeted for:
     * wait again, as before the greeting. */
    while (max && nr_slots >= max && !g_atomic_int_get(&c->quit)) {
        bd_cond_wait(&slot_cond, &bd_nbd_lock);
    }
    ok = !g_atomic_int_get(&c->quit);
    if (ok) {
        nr_slots++;
        c->has_slot = TRUE;
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return ok;
}

static guint64 next_client_id;     /* main thread */

static void client_start(int fd)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdClient *c;
    GThread *thread;
    GError *err = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    int one = 1;

    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0 &&
        ss.ss_family != AF_UNIX) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    } else {
        /* Room for a few whole 1 MiB replies: with the default (about
         * 200 KiB) every large reply blocks several times waiting for
         * the client, a sleep and a wake-up each.  TCP tunes its own
         * buffers; net.core.wmem_max caps the request. */
        int sndbuf = BD_NBD_UNIX_SNDBUF;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }
    c = g_new0(BdNbdClient, 1);
    c->refcount = 1;
    c->fd = fd;
    c->peer = peer_name(fd);
    c->id = ++next_client_id;
    c->label = strchr(c->peer, ':') ? g_strdup(c->peer)
               : g_strdup_printf("unix#%" G_GUINT64_FORMAT, c->id);
    bd_mutex_init(&c->pool_lock);
    bd_nbd_budget_init(&c->budget, BD_NBD_BUDGET_CONNECTION);
    g_cond_init(&c->parked_cond);
    bd_mutex_init(&c->send_lock);
    if (server->tls_creds) {
        c->tls_creds = bd_tls_creds_ref(server->tls_creds);
    }
    c->tls_authz = g_strdup(server->tls_authz);
    c->in_handshake = 1;

    bd_mutex_lock(&bd_nbd_lock);
    clients = g_list_prepend(clients, c);
    nr_handshaking++;
    bd_mutex_unlock(&bd_nbd_lock);

    c->handshake_max_seconds = server->handshake_max_seconds;

    thread = g_thread_try_new("nbd-conn", client_thread, c, &err);
    if (!thread) {
        g_warning("NBD server: cannot serve %s: %s", c->peer, err->message);
        g_error_free(err);
        bd_nbd_client_handshake_done(c);
        bd_nbd_client_unref(c);
        return;
    }
    g_thread_unref(thread);
}

static gboolean server_full(void)
{
    BD_GLOBAL_STATE_CODE();

    gboolean full;

    bd_mutex_lock(&bd_nbd_lock);
    full = nr_handshaking >= BD_NBD_MAX_HANDSHAKES;
    bd_mutex_unlock(&bd_nbd_lock);
    return full;
}

/* With BD_NBD_MAX_HANDSHAKES connections negotiating, the listener stops
 * accepting; further clients wait in the backlog until one finishes. */
static gboolean accept_cb(gint fd, GIOCondition cond, gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    int cfd;

    if (server_full()) {
        server->source = 0;
        return G_SOURCE_REMOVE;
    }
    cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            g_warning("NBD server: accept failed: %s", g_strerror(errno));
        }
        return G_SOURCE_CONTINUE;
    }
    client_start(cfd);
    if (server_full()) {
        g_debug("NBD server: %u connections in the handshake, pausing "
                "accept", BD_NBD_MAX_HANDSHAKES);
        server->source = 0;
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

/* Main loop, after a client went away: accept again if paused. */
static gboolean resume_cb(gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    if (server && !server->source && !server_full()) {
        server->source = g_unix_fd_add(server->fd, G_IO_IN, accept_cb, NULL);
    }
    return G_SOURCE_REMOVE;
}

/* --- start / stop --- */

gboolean bd_nbd_server_start(const BdSocketAddress *addr,
                             const BdNbdServerConfig *cfg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const char *path = NULL;
    int fd;

    if (server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server already running");
        return FALSE;
    }
    if (addr->type == BD_SOCKET_ADDRESS_VSOCK) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server: unsupported address type '%s'",
                    bd_socket_address_type_names[addr->type]);
        return FALSE;
    }
    if (addr->type == BD_SOCKET_ADDRESS_UNIX) {
        path = addr->path;
    }
    fd = bd_socket_address_listen(addr, errp);
    if (fd < 0) {
        return FALSE;
    }
    g_unix_set_fd_nonblocking(fd, TRUE, NULL);

    server = g_new0(BdNbdServer, 1);
    server->fd = fd;
    server->unix_path = g_strdup(path);
    server->max_connections = cfg->max_connections;
    g_atomic_int_set(&max_conns, (gint)cfg->max_connections);
    if (cfg->tls_creds) {
        server->tls_creds = bd_tls_creds_ref(cfg->tls_creds);
    }
    if (cfg->tls_creds_obj) {
        server->tls_creds_obj = bd_object_ref(cfg->tls_creds_obj);
        bd_object_use(server->tls_creds_obj);
    }
    server->tls_authz = g_strdup(cfg->tls_authz);
    if (cfg->tls_authz_obj) {
        server->tls_authz_obj = bd_object_ref(cfg->tls_authz_obj);
        bd_object_use(server->tls_authz_obj);
    }
    server->handshake_max_seconds = cfg->handshake_max_seconds;
    server->source = g_unix_fd_add(fd, G_IO_IN, accept_cb, NULL);
    g_debug("NBD server listening (%s)", path ? path
            : addr->type == BD_SOCKET_ADDRESS_FD ? "fd" : "inet");
    return TRUE;
}

gboolean bd_nbd_server_stop(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    GList *l;

    if (!server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server not running");
        return FALSE;
    }
    if (server->source) {
        g_source_remove(server->source);
    }
    close(server->fd);
    if (server->unix_path) {
        unlink(server->unix_path);
    }
    g_free(server->unix_path);
    bd_tls_creds_unref(server->tls_creds);
    if (server->tls_creds_obj) {
        bd_object_unuse(server->tls_creds_obj);
        bd_object_unref(server->tls_creds_obj);
    }
    g_free(server->tls_authz);
    if (server->tls_authz_obj) {
        bd_object_unuse(server->tls_authz_obj);
        bd_object_unref(server->tls_authz_obj);
    }
    g_clear_pointer(&server, g_free);

    bd_export_close_all("nbd");
    /* Clients still negotiating belong to no export: drop them too. */
    bd_mutex_lock(&bd_nbd_lock);
    for (l = clients; l; l = l->next) {
        bd_nbd_client_kick(l->data);
    }
    /* Under the lock the waiters test 'quit' with: none misses it. */
    g_cond_broadcast(&slot_cond);
    bd_mutex_unlock(&bd_nbd_lock);
    return TRUE;
}

