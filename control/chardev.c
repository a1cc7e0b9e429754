/* SPDX-License-Identifier: MIT */
/* --chardev socket,...: listening unix and TCP sockets for monitors.
 *
 * QEMU parses --chardev with QemuOpts (implied key "backend"); the same
 * messages are given here for the options blockd knows.  A socket
 * listens from the moment it is defined (server=on,wait=off); its
 * connections are taken only once a monitor is attached to it.
 *
 * Thread model: main thread only.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"

typedef struct {
    char *id;
    char *path;                /* unix socket path to unlink, or NULL */
    char *filename;            /* QEMU's query-chardev 'filename' */
    GSocketService *service;
    gboolean claimed;
    gulong handler;
    GSocketConnection *pending;  /* accepted before a monitor came */
    BdChardevAccept accept;
    gpointer opaque;
} BdChardev;

static GPtrArray *chardevs;

static BdChardev *chardev_find(const char *id)
{
    for (guint i = 0; chardevs && i < chardevs->len; i++) {
        BdChardev *c = chardevs->pdata[i];
        if (strcmp(c->id, id) == 0) {
            return c;
        }
    }
    return NULL;
}

static void chardev_free(BdChardev *c)
{
    g_clear_object(&c->pending);
    if (c->service) {
        g_socket_service_stop(c->service);
        g_socket_listener_close(G_SOCKET_LISTENER(c->service));
        g_object_unref(c->service);
    }
    if (c->path) {
        unlink(c->path);
    }
    g_free(c->id);
    g_free(c->path);
    g_free(c->filename);
    g_free(c);
}

/* Options of the socket backend blockd serves, and the ones QEMU knows
 * but blockd does not (refused by name rather than as unknown). */
static const char *const known_keys[] = {
    "backend", "id", "path", "server", "wait", "host", "port", "ipv4",
    "ipv6", "nodelay", "abstract", "tight", NULL };
static const char *const unsupported_keys[] = {
    "to", "telnet", "tn3270", "websocket", "reconnect", "fd", "tls-creds",
    "tls-authz", "mux", "logfile", "logappend", "numeric", "keep-alive",
    NULL };

static gboolean opt_bool(JsonObject *o, const char *key, gboolean def,
                         gboolean *out, GError **errp)
{
    const char *s = json_object_get_string_member_with_default(o, key, NULL);

    *out = def;
    if (s && !bd_parse_bool(s, out)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' expects 'on' or 'off'", key);
        return FALSE;
    }
    return TRUE;
}

static gboolean check_keys(JsonObject *o, GError **errp)
{
    g_autoptr(GList) keys = json_object_get_members(o);

    for (GList *l = keys; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(o, k);
        if (!JSON_NODE_HOLDS_VALUE(v)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", k);
            return FALSE;
        }
        if (g_strv_contains(unsupported_keys, k)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "chardev: socket option '%s' is not supported by "
                        "blockd", k);
            return FALSE;
        }
        if (!g_strv_contains(known_keys, k)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", k);
            return FALSE;
        }
    }
    return TRUE;
}

static GSocketAddress *tcp_address(const char *host, const char *port,
                                   GError **errp)
{
    guint64 p;

    if (!bd_parse_uint64(port, &p) || p > 65535) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev: socket: invalid port '%s'", port);
        return NULL;
    }
    if (!*host) {
        host = "0.0.0.0";
    }
    GInetAddress *ia = g_inet_address_new_from_string(host);
    if (!ia) {
        g_autoptr(GResolver) r = g_resolver_get_default();
        GList *list = g_resolver_lookup_by_name(r, host, NULL, errp);
        if (!list) {
            g_prefix_error(errp, "address resolution failed for %s:%s: ",
                           host, port);
            return NULL;
        }
        ia = g_object_ref(list->data);
        g_resolver_free_addresses(list);
    }
    GSocketAddress *sa = g_inet_socket_address_new(ia, (guint16)p);
    g_object_unref(ia);
    return sa;
}

static gboolean chardev_listen(BdChardev *c, GSocketAddress *sa,
                               const char *path, GError **errp)
{
    g_autoptr(GError) err = NULL;

    c->service = g_socket_service_new();
    g_socket_service_stop(c->service);
    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(c->service), sa,
                                       G_SOCKET_TYPE_STREAM,
                                       G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL,
                                       &err)) {
        /* GIO says "Error binding to address (...): <strerror>"; keep
         * the reason in QEMU's sentence. */
        const char *why = strrchr(err->message, ':');
        why = why ? why + 2 : err->message;
        if (path) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to bind socket to %s: %s", path, why);
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to bind socket: %s", why);
        }
        return FALSE;
    }
    return TRUE;
}

gboolean bd_chardev_add(const char *arg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(JsonNode) node = bd_keyval_parse(arg, "backend", errp);
    if (!node) {
        return FALSE;
    }
    JsonObject *o = json_node_get_object(node);
    const char *backend = json_object_get_string_member_with_default(
        o, "backend", NULL);
    const char *id = json_object_get_string_member_with_default(o, "id", NULL);

    if (!check_keys(o, errp)) {
        return FALSE;
    }
    if (!id) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev: no id specified");
        return FALSE;
    }
    if (!backend) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev: \"%s\" missing backend", id);
        return FALSE;
    }
    if (strcmp(backend, "socket") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'%s' is not a valid char driver name", backend);
        return FALSE;
    }
    if (chardev_find(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Duplicate ID '%s' for chardev", id);
        return FALSE;
    }

    gboolean server, wait_, ipv4, ipv6, nodelay;
    if (!opt_bool(o, "server", FALSE, &server, errp) ||
        !opt_bool(o, "wait", TRUE, &wait_, errp) ||
        !opt_bool(o, "ipv4", FALSE, &ipv4, errp) ||
        !opt_bool(o, "ipv6", FALSE, &ipv6, errp) ||
        !opt_bool(o, "nodelay", FALSE, &nodelay, errp)) {
        return FALSE;
    }
    if (!server) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev '%s': only server=on sockets are supported", id);
        return FALSE;
    }

    const char *path = json_object_get_string_member_with_default(o, "path",
                                                                  NULL);
    const char *host = json_object_get_string_member_with_default(o, "host",
                                                                  NULL);
    const char *port = json_object_get_string_member_with_default(o, "port",
                                                                  NULL);
    g_autoptr(GSocketAddress) sa = NULL;
    BdChardev *c = g_new0(BdChardev, 1);
    c->id = g_strdup(id);
    if (path) {
        struct stat st;
        /* QEMU replaces a stale socket left at the path. */
        if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            unlink(path);
        }
        sa = g_unix_socket_address_new(path);
    } else if (port) {
        sa = tcp_address(host ? host : "", port, errp);
    } else {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    host ? "chardev: socket: no port given"
                         : "chardev: socket: no host given");
    }
    if (!sa || !chardev_listen(c, sa, path, errp)) {
        chardev_free(c);
        return FALSE;
    }
    c->path = g_strdup(path);   /* ours to unlink from now on */
    if (!chardevs) {
        chardevs = g_ptr_array_new();
    }
    c->filename = path ? g_strdup_printf("unix:%s,server=on", path)
                       : g_strdup_printf("tcp:%s:%s,server=on",
                                         host ? host : "", port);
    g_ptr_array_add(chardevs, c);

    /* wait=on (the default): start-up waits for the first client, which
     * the monitor takes over once attached, as QEMU does. */
    if (wait_) {
        if (path) {
            g_printerr("blockd: info: waiting for connection on: "
                       "disconnected:unix:%s,server=on\n", path);
        } else {
            g_printerr("blockd: info: waiting for connection on: "
                       "disconnected:tcp:%s:%s,server=on\n",
                       host ? host : "", port);
        }
        c->pending = g_socket_listener_accept(G_SOCKET_LISTENER(c->service),
                                              NULL, NULL, errp);
        if (!c->pending) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *conn,
                            GObject *source, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = opaque;

    c->accept(conn, c->opaque);
    return TRUE;
}

gboolean bd_chardev_claim(const char *id, BdChardevAccept accept,
                          gpointer opaque, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);

    if (!c) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev \"%s\" not found", id);
        return FALSE;
    }
    if (c->claimed) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Device '%s' is in use", id);
        return FALSE;
    }
    c->claimed = TRUE;
    c->accept = accept;
    c->opaque = opaque;
    c->handler = g_signal_connect(c->service, "incoming",
                                  G_CALLBACK(on_incoming), c);
    g_socket_service_start(c->service);
    if (c->pending) {
        g_autoptr(GSocketConnection) conn = g_steal_pointer(&c->pending);
        accept(conn, opaque);
    }
    return TRUE;
}

void bd_chardev_cleanup(void)
{
    BD_GLOBAL_STATE_CODE();

    if (!chardevs) {
        return;
    }
    for (guint i = 0; i < chardevs->len; i++) {
        chardev_free(chardevs->pdata[i]);
    }
    g_ptr_array_free(chardevs, TRUE);
    chardevs = NULL;
}

GPtrArray *bd_chardev_ids(void)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; chardevs && i < chardevs->len; i++) {
        BdChardev *c = chardevs->pdata[i];
        g_ptr_array_add(ids, g_strdup(c->id));
    }
    return ids;
}

char *bd_chardev_filename(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);

    return c ? g_strdup(c->filename) : NULL;
}
