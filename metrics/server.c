/* SPDX-License-Identifier: MIT */
/* The HTTP side of the metrics endpoint: a SoupServer (libsoup 3) on the
 * main loop, listening on a socket made by graph/socket-address.c.
 *
 * libsoup parses the requests (and refuses malformed ones and oversized
 * headers itself); this file answers GET/HEAD /metrics with the
 * exposition text, other paths with 404 and other methods with 405.
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

/* The text format version Prometheus negotiates by this type. */
#define EXPOSITION_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct {
    SoupServer *soup;
    char *unix_path;          /* removed on stop, or NULL */
} MetricsServer;

static MetricsServer *server;

static void handle(SoupServer *soup, SoupServerMessage *msg,
                   const char *path, GHashTable *query, gpointer data)
{
    const char *method = soup_server_message_get_method(msg);
    g_autoptr(GString) text = NULL;
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
    text = bd_metrics_collect();
    len = text->len;
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_server_message_set_response(msg, EXPOSITION_TYPE, SOUP_MEMORY_TAKE,
                                     g_string_free(g_steal_pointer(&text),
                                                   FALSE), len);
}

gboolean bd_metrics_running(void)
{
    BD_GLOBAL_STATE_CODE();

    return server != NULL;
}

gboolean bd_metrics_start(const BdSocketAddress *addr, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;
    g_autoptr(GSocket) sock = NULL;
    SoupServer *soup;
    int fd;

    if (server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server already running");
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
    soup = soup_server_new("server-header", "blockd ", NULL);
    soup_server_add_handler(soup, NULL, handle, NULL, NULL);
    if (!soup_server_listen_socket(soup, sock, 0, &err)) {
        g_object_unref(soup);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server: %s", err->message);
        return FALSE;
    }
    server = g_new0(MetricsServer, 1);
    server->soup = soup;
    if (addr->type == BD_SOCKET_ADDRESS_UNIX) {
        server->unix_path = g_strdup(addr->path);
    }
    g_debug("metrics server listening (%s)",
            addr->type == BD_SOCKET_ADDRESS_UNIX ? addr->path : "inet");
    return TRUE;
}

gboolean bd_metrics_stop(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server not running");
        return FALSE;
    }
    soup_server_disconnect(server->soup);
    g_object_unref(server->soup);
    if (server->unix_path) {
        unlink(server->unix_path);
    }
    g_free(server->unix_path);
    g_clear_pointer(&server, g_free);
    return TRUE;
}
