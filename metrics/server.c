/* SPDX-License-Identifier: MIT */
/* The HTTP side of the metrics endpoint: a SoupServer (libsoup 3) on the
 * main loop, listening on a socket made by graph/socket-address.c.
 *
 * libsoup parses the requests (and refuses malformed ones and oversized
 * headers itself); this file answers GET/HEAD /metrics with the
 * exposition text (OpenMetrics when the Accept header prefers it), other paths with 404 and other methods with 405.
 * Connections are bounded in number (max-connections: one more is
 * shut down as soon as libsoup reports it) and in time (idle-timeout:
 * a new connection must send a request and read the answer within that
 * many seconds, and a kept one its next from the end of the last answer,
 * or it is shut down); libsoup reports a new connection with
 * request-started before its first byte (and before TLS), so a silent
 * client is seen too.  A connection is followed by a weak reference on
 * its GSocket, and forgotten once libsoup has closed that socket.
 *
 * A scrape is built on the main thread in one go: it reads counters and
 * lists, never waits on the I/O path, so it holds the loop for about a
 * millisecond per few hundred series.
 *
 * Thread model: main thread only (libsoup runs in the thread-default
 * main context of the thread that started it: the main loop's).
 */


#include <errno.h>
#include <unistd.h>
#include <gio/gio.h>
#include <libsoup/soup.h>

#include "graph/error.h"
#include "graph/main-thread.h"
#include "metrics/metrics.h"

/* The formats Prometheus negotiates by these types. */
#define EXPOSITION_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define OPENMETRICS_TYPE \
    "application/openmetrics-text; version=1.0.0; charset=utf-8"

typedef struct MetricsServer MetricsServer;

/* One open connection (its socket: the key, no reference held). */
typedef struct {
    MetricsServer *srv;
    GSocket *sock;
    guint timer;              /* the running request's deadline, or 0 */
} Conn;

struct MetricsServer {
    SoupServer *soup;
    char *unix_path;          /* removed on stop, or NULL */
    BdMetricsLimits limits;
    GHashTable *conns;        /* GSocket * -> Conn * (owned) */
};

static MetricsServer *server;
/* Connections closed for a limit, over every start. */
static guint64 nr_refused, nr_timed_out;

static void sweep(MetricsServer *srv);

void bd_metrics_http_stats(BdMetricsHttpStats *st)
{
    BD_GLOBAL_STATE_CODE();

    if (server) {
        sweep(server);
    }
    st->open = server ? g_hash_table_size(server->conns) : 0;
    st->refused = nr_refused;
    st->timed_out = nr_timed_out;
}

static void conn_free(gpointer data)
{
    Conn *conn = data;

    if (conn->timer) {
        g_source_remove(conn->timer);
    }
    g_free(conn);
}

/* libsoup let go of the connection's socket: the connection is over. */
static void conn_gone(gpointer data, GObject *where_the_socket_was)
{
    Conn *conn = data;

    g_hash_table_remove(conn->srv->conns, where_the_socket_was);
}

/* Forget the connections libsoup has closed: it may keep the socket
 * object a while after (so conn_gone comes late, or at stop). */
static void sweep(MetricsServer *srv)
{
    GHashTableIter it;
    gpointer key, value;

    g_hash_table_iter_init(&it, srv->conns);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        if (g_socket_is_closed(key)) {
            g_object_weak_unref(G_OBJECT(key), conn_gone, value);
            g_hash_table_iter_remove(&it);
        }
    }
}

static gboolean conn_timeout(gpointer data)
{
    Conn *conn = data;
    GSocket *sock = conn->sock;

    conn->timer = 0;
    if (!g_socket_is_closed(sock)) {
        nr_timed_out++;
        g_debug("metrics: a connection idle for %u s closed",
                conn->srv->limits.idle_timeout);
        /* libsoup reads the end and lets the connection go. */
        g_socket_shutdown(sock, TRUE, TRUE, NULL);
    }
    /* Over for the count now, whenever libsoup gets to it. */
    g_object_weak_unref(G_OBJECT(sock), conn_gone, conn);
    g_hash_table_remove(conn->srv->conns, sock);
    return G_SOURCE_REMOVE;
}

/* (Re)start the connection's deadline. */
static void arm(Conn *conn)
{
    if (conn->timer) {
        g_source_remove(conn->timer);
        conn->timer = 0;
    }
    if (conn->srv->limits.idle_timeout) {
        conn->timer = g_timeout_add_seconds(conn->srv->limits.idle_timeout,
                                            conn_timeout, conn);
    }
}

/* A request begins (on a new connection, or the next one on a kept
 * one): count a new connection against the limit, (re)arm its deadline. */
static void track_request(SoupServerMessage *msg)
{
    MetricsServer *srv = server;
    GSocket *sock = soup_server_message_get_socket(msg);
    Conn *conn;

    if (!srv || !sock) {
        return;
    }
    conn = g_hash_table_lookup(srv->conns, sock);
    if (!conn) {
        sweep(srv);
        if (srv->limits.max_connections &&
            g_hash_table_size(srv->conns) >= srv->limits.max_connections) {
            nr_refused++;
            g_debug("metrics: more than %u connections, one closed",
                    srv->limits.max_connections);
            g_socket_shutdown(sock, TRUE, TRUE, NULL);
            return;
        }
        conn = g_new0(Conn, 1);
        conn->srv = srv;
        conn->sock = sock;
        g_hash_table_insert(srv->conns, sock, conn);
        g_object_weak_ref(G_OBJECT(sock), conn_gone, conn);
    }
    arm(conn);
}

/* An answer went out: the connection is idle until the next request,
 * for at most idle-timeout again (libsoup reports that request only
 * once its first bytes come). */
static void request_finished(SoupServer *soup, SoupServerMessage *msg,
                             gpointer data)
{
    GSocket *sock = soup_server_message_get_socket(msg);
    Conn *conn = server && sock ? g_hash_table_lookup(server->conns, sock)
                                : NULL;

    if (conn) {
        arm(conn);
    }
}

/* A client certificate (verify-peer): GIO has checked it against the CA
 * and reports what is wrong; libsoup asks the message whether to go on
 * even when nothing is, and refuses without an answer. */
static gboolean accept_client_cert(SoupServerMessage *msg,
                                   GTlsCertificate *cert,
                                   GTlsCertificateFlags errors,
                                   gpointer data)
{
    if (errors) {
        g_debug("metrics: client certificate refused (GTlsCertificateFlags "
                "0x%x)", errors);
    }
    return errors == 0;
}

/* A new request: its connection may still be in the TLS handshake. */
static void request_started(SoupServer *soup, SoupServerMessage *msg,
                            gpointer data)
{
    if (data) {                 /* verify-peer */
        g_signal_connect(msg, "accept-certificate",
                         G_CALLBACK(accept_client_cert), NULL);
    }
    track_request(msg);
}

/* The format of the first type of the Accept header (by q-value) that
 * names one: OpenMetrics for application/openmetrics-text of version
 * 1.0.0 or none; the text format for text/plain, any other version of
 * OpenMetrics being skipped.  Nothing acceptable named (or no header):
 * the text format anyway, as Prometheus's own client libraries do. */
static BdMetricsFormat negotiate(SoupServerMessage *msg)
{
    const char *accept = soup_message_headers_get_list(
        soup_server_message_get_request_headers(msg), "Accept");
    GSList *types;
    BdMetricsFormat fmt = BD_METRICS_TEXT;

    if (!accept) {
        return fmt;
    }
    types = soup_header_parse_quality_list(accept, NULL);
    for (GSList *t = types; t; t = t->next) {
        g_autofree char *type = g_strdup(t->data);
        char *semi = strchr(type, ';');
        g_autoptr(GHashTable) params = NULL;
        const char *version;

        if (semi) {
            *semi = '\0';
            params = soup_header_parse_semi_param_list(semi + 1);
        }
        g_strstrip(type);
        version = params ? g_hash_table_lookup(params, "version") : NULL;
        if (g_ascii_strcasecmp(type, "application/openmetrics-text") == 0) {
            if (!version || strcmp(version, "1.0.0") == 0) {
                fmt = BD_METRICS_OPENMETRICS;
                break;
            }
        } else if (g_ascii_strcasecmp(type, "text/plain") == 0) {
            break;
        }
    }
    g_slist_free_full(types, g_free);
    return fmt;
}

static void handle(SoupServer *soup, SoupServerMessage *msg,
                   const char *path, GHashTable *query, gpointer data)
{
    const char *method = soup_server_message_get_method(msg);
    g_autoptr(GString) text = NULL;
    BdMetricsFormat fmt;
    gsize len;

    if (g_strcmp0(path, "/metrics") != 0) {
        soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
        soup_server_message_set_response(msg, "text/plain", SOUP_MEMORY_STATIC,
                                         "Not Found: try /metrics\n", 24);
        return;
    }
    if (method != SOUP_METHOD_GET && method != SOUP_METHOD_HEAD) {
        soup_message_headers_append(
            soup_server_message_get_response_headers(msg), "Allow",
            "GET, HEAD");
        soup_server_message_set_status(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                                       NULL);
        return;
    }
    fmt = negotiate(msg);
    text = bd_metrics_collect(fmt);
    len = text->len;
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    /* Caches between scraper and daemon keep the two apart. */
    soup_message_headers_append(
        soup_server_message_get_response_headers(msg), "Vary", "Accept");
    soup_server_message_set_response(msg,
                                     fmt == BD_METRICS_OPENMETRICS
                                     ? OPENMETRICS_TYPE : EXPOSITION_TYPE,
                                     SOUP_MEMORY_TAKE,
                                     g_string_free(g_steal_pointer(&text),
                                                   FALSE), len);
}

gboolean bd_metrics_running(void)
{
    BD_GLOBAL_STATE_CODE();

    return server != NULL;
}

/* The server's certificate (and the CA for client certificates). */
static gboolean setup_tls(SoupServer *soup, const BdMetricsTls *tls,
                          GError **errp)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GTlsCertificate) cert = NULL;
    g_autoptr(GTlsDatabase) db = NULL;

    cert = g_tls_certificate_new_from_files(tls->cert_file, tls->key_file,
                                            &err);
    if (!cert) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server: cannot load %s and %s: %s",
                    tls->cert_file, tls->key_file, err->message);
        return FALSE;
    }
    soup_server_set_tls_certificate(soup, cert);
    if (tls->verify_peer) {
        db = g_tls_file_database_new(tls->ca_file, &err);
        if (!db) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Metrics server: cannot load %s: %s", tls->ca_file,
                        err->message);
            return FALSE;
        }
        soup_server_set_tls_database(soup, db);
        soup_server_set_tls_auth_mode(soup, G_TLS_AUTHENTICATION_REQUIRED);
    }
    return TRUE;
}

gboolean bd_metrics_start(const BdSocketAddress *addr,
                          const BdMetricsTls *tls,
                          const BdMetricsLimits *limits, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;
    g_autoptr(GSocket) sock = NULL;
    g_autoptr(SoupServer) soup = NULL;
    int fd;

    if (server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server already running");
        return FALSE;
    }
    /* The certificates before the socket: a bad one leaves no socket. */
    soup = soup_server_new("server-header", "blockd ", NULL);
    if (tls && !setup_tls(soup, tls, errp)) {
        return FALSE;
    }
    fd = bd_socket_address_listen(addr, errp);
    if (fd < 0) {
        g_prefix_error(errp, "Metrics server: ");
        return FALSE;
    }
    sock = g_socket_new_from_fd(fd, &err);
    if (!sock) {
        close(fd);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server: %s", err->message);
        return FALSE;
    }
    soup_server_add_handler(soup, NULL, handle, NULL, NULL);
    g_signal_connect(soup, "request-started", G_CALLBACK(request_started),
                     GINT_TO_POINTER(tls && tls->verify_peer));
    g_signal_connect(soup, "request-finished", G_CALLBACK(request_finished),
                     NULL);
    if (!soup_server_listen_socket(soup, sock,
                                   tls ? SOUP_SERVER_LISTEN_HTTPS : 0,
                                   &err)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server: %s", err->message);
        return FALSE;
    }
    server = g_new0(MetricsServer, 1);
    server->soup = g_steal_pointer(&soup);
    server->limits = *limits;
    server->conns = g_hash_table_new_full(NULL, NULL, NULL, conn_free);
    if (addr->type == BD_SOCKET_ADDRESS_UNIX) {
        server->unix_path = g_strdup(addr->path);
    }
    g_debug("metrics server listening (%s%s)",
            addr->type == BD_SOCKET_ADDRESS_UNIX ? addr->path : "inet",
            tls ? ", TLS" : "");
    return TRUE;
}

gboolean bd_metrics_stop(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    GHashTableIter it;
    gpointer key, value;

    if (!server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server not running");
        return FALSE;
    }
    /* Stop following the connections first: they may outlive the
     * server object for a while. */
    g_hash_table_iter_init(&it, server->conns);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        g_object_weak_unref(G_OBJECT(key), conn_gone, value);
    }
    g_hash_table_destroy(server->conns);
    soup_server_disconnect(server->soup);
    g_object_unref(server->soup);
    if (server->unix_path) {
        unlink(server->unix_path);
    }
    g_free(server->unix_path);
    g_clear_pointer(&server, g_free);
    return TRUE;
}
