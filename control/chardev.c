/* SPDX-License-Identifier: MIT */
/* Socket chardevs (QEMU's char-socket.c): listening or connecting unix
 * and TCP sockets, from --chardev socket,... and from chardev-add and
 * chardev-change (one implementation; the two parsers are in
 * chardev-opts.c).
 *
 * A chardev's user (its "frontend") in blockd is a QMP monitor, attached
 * at start-up (--monitor; QMP has no monitor-add).  A claimed server
 * hands every accepted connection to its monitor.  A chardev nobody
 * claims behaves as QEMU's without a frontend: a server takes one
 * connection at a time and a client connects; the peer's bytes are read
 * and dropped, and when it hangs up a server listens again and a client
 * with 'reconnect' tries again every 'reconnect' seconds.
 *
 * query-chardev's filename follows QEMU: "disconnected:unix:P,server=on"
 * while no peer is there, then the connection's own addresses
 * ("unix:P,server=on", "unix:" for a client, "tcp:L:LP,server=on <->
 * R:RP").
 *
 *   --chardev ---.                      .--> listen --> accept --.
 *                 >-- opts -- open ----<                          >--> monitor
 *   chardev-add -'                      '--> connect ------------'     or drain
 *
 * Thread model: main thread only.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include "control/chardev-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/socket-address.h"

struct BdChardev {
    char *id;
    gboolean server;
    gint64 reconnect;          /* client: seconds between attempts, or 0 */
    /* Where to listen or connect. */
    BdSocketAddressType type;
    char *path;                /* unix */
    gboolean abstract, tight;  /* unix, Linux abstract namespace */
    char *host, *port;         /* inet (a server's: the bound address) */
    char *fd;                  /* fd: as given */
    gboolean nodelay;
    /* A unix path we bound, to unlink when we go, if still ours. */
    gboolean bound;
    dev_t bound_dev;
    ino_t bound_ino;
    char *disconnected;        /* filename without a peer */
    char *connected;           /* filename with the latest peer */
    GSocketService *service;   /* server */
    /* The peer while no frontend holds it, and its drain watch. */
    GSocketConnection *conn;
    GSource *conn_src;
    guint retry_id;            /* client reconnect timer */
    gboolean err_reported;     /* a failed attempt was reported */
    /* The frontend (a monitor) and its open sessions. */
    gboolean claimed;
    BdChardevAccept accept;
    gpointer opaque;
    int sessions;
};

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

/* Stop draining the held peer and hand it over (a new reference). */
static GSocketConnection *take_conn(BdChardev *c)
{
    if (c->conn_src) {
        g_source_destroy(c->conn_src);
        g_clear_pointer(&c->conn_src, g_source_unref);
    }
    return g_steal_pointer(&c->conn);
}

static void drop_conn(BdChardev *c)
{
    if (c->conn_src) {
        g_source_destroy(c->conn_src);
        g_clear_pointer(&c->conn_src, g_source_unref);
    }
    if (c->conn) {
        g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
        g_clear_object(&c->conn);
    }
}

static void chardev_free(BdChardev *c)
{
    struct stat st;

    drop_conn(c);
    if (c->retry_id) {
        g_source_remove(c->retry_id);
    }
    if (c->service) {
        g_signal_handlers_disconnect_by_data(c->service, c);
        g_socket_service_stop(c->service);
        g_socket_listener_close(G_SOCKET_LISTENER(c->service));
        g_object_unref(c->service);
    }
    /* Only our own socket: a newer chardev may have bound the path. */
    if (c->bound && stat(c->path, &st) == 0 && st.st_dev == c->bound_dev &&
        st.st_ino == c->bound_ino) {
        unlink(c->path);
    }
    g_free(c->id);
    g_free(c->path);
    g_free(c->host);
    g_free(c->port);
    g_free(c->fd);
    g_free(c->disconnected);
    g_free(c->connected);
    g_free(c);
}

/* --- addresses and filenames --- */

static GSocketAddress *unix_address(const BdChardev *c)
{
    if (c->abstract) {
        return g_unix_socket_address_new_with_type(
            c->path, -1, c->tight ? G_UNIX_SOCKET_ADDRESS_ABSTRACT
                                  : G_UNIX_SOCKET_ADDRESS_ABSTRACT_PADDED);
    }
    return g_unix_socket_address_new(c->path);
}

/* QEMU's SocketAddress_to_str, prefixed "disconnected:". */
static char *disconnected_name(const BdChardev *c)
{
    if (c->type == BD_SOCKET_ADDRESS_UNIX) {
        return g_strdup_printf("disconnected:unix:%s%s%s%s", c->path,
                               c->abstract ? ",abstract=on" : "",
                               c->abstract && c->tight ? ",tight=on" : "",
                               c->server ? ",server=on" : "");
    }
    if (c->type == BD_SOCKET_ADDRESS_FD) {
        return g_strdup_printf("disconnected:fd:%s%s", c->fd,
                               c->server ? ",server=on" : "");
    }
    return g_strdup_printf("disconnected:tcp:%s:%s%s", c->host, c->port,
                           c->server ? ",server=on" : "");
}

static char *inet_name(GSocketAddress *sa)
{
    GInetSocketAddress *isa = G_INET_SOCKET_ADDRESS(sa);
    g_autofree char *ip = g_inet_address_to_string(
        g_inet_socket_address_get_address(isa));
    gboolean v6 = g_inet_address_get_family(
        g_inet_socket_address_get_address(isa)) == G_SOCKET_FAMILY_IPV6;

    return g_strdup_printf("%s%s%s:%u", v6 ? "[" : "", ip, v6 ? "]" : "",
                           g_inet_socket_address_get_port(isa));
}

/* QEMU's qemu_chr_compute_filename: the connection's own addresses. */
static char *connected_name(const BdChardev *c, GSocketConnection *conn)
{
    g_autoptr(GSocketAddress) local =
        g_socket_connection_get_local_address(conn, NULL);
    g_autoptr(GSocketAddress) remote =
        g_socket_connection_get_remote_address(conn, NULL);

    if (local && G_IS_INET_SOCKET_ADDRESS(local) && remote) {
        g_autofree char *l = inet_name(local);
        g_autofree char *r = inet_name(remote);
        return g_strdup_printf("tcp:%s%s <-> %s", l,
                               c->server ? ",server=on" : "", r);
    }
    if (local && G_IS_UNIX_SOCKET_ADDRESS(local)) {
        GUnixSocketAddress *ua = G_UNIX_SOCKET_ADDRESS(local);
        /* QEMU prints sun_path: empty for an abstract address. */
        gboolean named = g_unix_socket_address_get_address_type(ua) ==
                         G_UNIX_SOCKET_ADDRESS_PATH;

        return g_strdup_printf("unix:%s%s",
                               named ? g_unix_socket_address_get_path(ua) : "",
                               c->server ? ",server=on" : "");
    }
    return g_strdup(c->disconnected + strlen("disconnected:"));
}

/* --- the peer while nobody claims the chardev --- */

static void peer_gone(BdChardev *c);

/* Read and drop what the peer sends, until it hangs up. */
static gboolean on_peer_input(GSocket *sock, GIOCondition cond,
                              gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = opaque;
    g_autoptr(GError) err = NULL;
    char buf[4096];
    gssize n = g_socket_receive(sock, buf, sizeof(buf), NULL, &err);

    if (n > 0 ||
        (n < 0 && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))) {
        return G_SOURCE_CONTINUE;
    }
    g_clear_pointer(&c->conn_src, g_source_unref);
    peer_gone(c);
    return G_SOURCE_REMOVE;
}

/* A connection is there (accepted or made): to the frontend, or held. */
static void peer_connected(BdChardev *c, GSocketConnection *conn)
{
    GSocket *sock = g_socket_connection_get_socket(conn);

    g_free(c->connected);
    c->connected = connected_name(c, conn);
    if (c->nodelay && c->type == BD_SOCKET_ADDRESS_INET) {
        g_socket_set_option(sock, IPPROTO_TCP, TCP_NODELAY, 1, NULL);
    }
    if (c->claimed) {
        c->sessions++;
        c->accept(conn, c->opaque);
        return;
    }
    c->conn = g_object_ref(conn);
    g_socket_set_blocking(sock, FALSE);
    c->conn_src = g_socket_create_source(sock, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                         NULL);
    g_source_set_callback(c->conn_src, G_SOURCE_FUNC(on_peer_input), c,
                          NULL);
    g_source_attach(c->conn_src, NULL);
    if (c->service) {
        /* One peer at a time: the next waits in the backlog. */
        g_socket_service_stop(c->service);
    }
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *conn,
                            GObject *source, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    peer_connected(opaque, conn);
    return TRUE;
}

/* --- connecting (clients) --- */

static int connect_unix(const BdChardev *c)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t len;
    size_t plen = strlen(c->path);
    int fd;

    if (plen >= sizeof(sun.sun_path) - (c->abstract ? 1 : 0)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (c->abstract) {
        memcpy(sun.sun_path + 1, c->path, plen);
        len = c->tight ? offsetof(struct sockaddr_un, sun_path) + 1 + plen
                       : sizeof(sun);
    } else {
        memcpy(sun.sun_path, c->path, plen);
        len = sizeof(sun);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int connect_inet(const BdChardev *c, GError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_ADDRCONFIG };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    int fd = -1, e = 0;

    if (rc != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "address resolution failed for %s:%s: %s", c->host,
                    c->port, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        e = errno;
        if (fd >= 0) {
            close(fd);
        }
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to connect to '%s:%s': %s", c->host, c->port,
                    g_strerror(e));
    }
    return fd;
}

/* Connect now (blocking, as QEMU's first attempt). */
static gboolean client_connect(BdChardev *c, GError **errp)
{
    g_autoptr(GSocket) sock = NULL;
    g_autoptr(GSocketConnection) conn = NULL;
    int fd;

    if (c->type == BD_SOCKET_ADDRESS_UNIX) {
        fd = connect_unix(c);
        if (fd < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to connect to '%s': %s", c->path,
                        g_strerror(errno));
            return FALSE;
        }
    } else {
        fd = connect_inet(c, errp);
        if (fd < 0) {
            return FALSE;
        }
    }
    sock = g_socket_new_from_fd(fd, errp);
    if (!sock) {
        close(fd);
        return FALSE;
    }
    conn = g_socket_connection_factory_create_connection(sock);
    peer_connected(c, conn);
    return TRUE;
}

static guint retry_seconds(const BdChardev *c)
{
    return (guint)MIN(c->reconnect, G_MAXUINT);
}

static gboolean on_retry(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = opaque;
    g_autoptr(GError) err = NULL;

    c->retry_id = 0;
    if (client_connect(c, &err)) {
        c->err_reported = FALSE;
    } else {
        /* Once until it connects, as QEMU. */
        if (!c->err_reported) {
            g_printerr("blockd: Unable to connect character device %s: %s\n",
                       c->id, err->message);
            c->err_reported = TRUE;
        }
        c->retry_id = g_timeout_add_seconds(retry_seconds(c), on_retry, c);
    }
    return G_SOURCE_REMOVE;
}

static void peer_gone(BdChardev *c)
{
    drop_conn(c);
    if (c->service) {
        g_socket_service_start(c->service);
    } else if (c->reconnect > 0 && !c->retry_id) {
        c->retry_id = g_timeout_add_seconds(retry_seconds(c), on_retry, c);
    }
}

/* --- listening (servers) --- */

/* The first address getaddrinfo gives, as QEMU's listener binds. */
static GSocketAddress *tcp_listen_address(const char *host, const char *port,
                                          GError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    GSocketAddress *sa;
    int rc;

    rc = getaddrinfo(*host ? host : "0.0.0.0", port, &hints, &res);
    if (rc != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "address resolution failed for %s:%s: %s", host, port,
                    gai_strerror(rc));
        return NULL;
    }
    sa = g_socket_address_new_from_native(res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (!sa) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "address resolution failed for %s:%s", host, port);
    }
    return sa;
}

/* A listening socket systemd or the caller passed (address type fd). */
static gboolean server_listen_fd(BdChardev *c, GError **errp)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GSocket) sock = NULL;
    int fd = bd_socket_inherited_take(c->fd, errp);

    if (fd < 0) {
        return FALSE;
    }
    sock = g_socket_new_from_fd(fd, &err);
    if (!sock) {
        close(fd);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File descriptor '%s': %s", c->fd, err->message);
        return FALSE;
    }
    c->service = g_socket_service_new();
    g_socket_service_stop(c->service);
    if (!g_socket_listener_add_socket(G_SOCKET_LISTENER(c->service), sock,
                                      NULL, &err)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File descriptor '%s': %s", c->fd, err->message);
        return FALSE;
    }
    g_signal_connect(c->service, "incoming", G_CALLBACK(on_incoming), c);
    return TRUE;
}

static gboolean server_listen(BdChardev *c, GError **errp)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GSocketAddress) sa = NULL;
    g_autoptr(GSocketAddress) eff = NULL;
    struct stat st;

    if (c->type == BD_SOCKET_ADDRESS_FD) {
        return server_listen_fd(c, errp);
    }
    if (c->type == BD_SOCKET_ADDRESS_UNIX && !*c->path && !c->abstract) {
        /* QEMU makes up a path in the temporary directory. */
        g_autofree char *tmpl = g_build_filename(g_get_tmp_dir(),
                                                 "blockd-socket-XXXXXX", NULL);
        int fd = g_mkstemp(tmpl);

        if (fd < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to make a temporary socket name: %s",
                        g_strerror(errno));
            return FALSE;
        }
        close(fd);
        unlink(tmpl);
        g_free(c->path);
        c->path = g_steal_pointer(&tmpl);
    }
    if (c->type == BD_SOCKET_ADDRESS_UNIX) {
        /* QEMU replaces a stale socket left at the path. */
        if (!c->abstract && stat(c->path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            unlink(c->path);
        }
        sa = unix_address(c);
    } else {
        sa = tcp_listen_address(c->host, c->port, errp);
        if (!sa) {
            return FALSE;
        }
    }
    c->service = g_socket_service_new();
    g_socket_service_stop(c->service);
    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(c->service), sa,
                                       G_SOCKET_TYPE_STREAM,
                                       G_SOCKET_PROTOCOL_DEFAULT, NULL, &eff,
                                       &err)) {
        /* GIO says "Error binding to address (...): <strerror>"; keep
         * the reason in QEMU's sentence. */
        const char *why = strrchr(err->message, ':');
        why = why ? why + 2 : err->message;
        if (c->type == BD_SOCKET_ADDRESS_UNIX) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to bind socket to %s: %s", c->path, why);
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to bind socket: %s", why);
        }
        return FALSE;
    }
    if (c->type == BD_SOCKET_ADDRESS_UNIX && !c->abstract &&
        stat(c->path, &st) == 0) {
        c->bound = TRUE;
        c->bound_dev = st.st_dev;
        c->bound_ino = st.st_ino;
    }
    if (c->type == BD_SOCKET_ADDRESS_INET && eff) {
        /* QEMU shows the bound address: numeric, the real port. */
        GInetSocketAddress *isa = G_INET_SOCKET_ADDRESS(eff);
        g_free(c->host);
        c->host = g_inet_address_to_string(
            g_inet_socket_address_get_address(isa));
        g_free(c->port);
        c->port = g_strdup_printf("%u", g_inet_socket_address_get_port(isa));
    }
    g_signal_connect(c->service, "incoming", G_CALLBACK(on_incoming), c);
    return TRUE;
}

/* --- opening --- */

BdChardev *bd_chardev_open(const BdChardevSockOpts *o, GError **errp)
{
    BdChardev *c;

    if (!bd_chardev_opts_check(o, errp)) {
        return NULL;
    }
    c = g_new0(BdChardev, 1);
    c->id = g_strdup(o->id);
    c->server = o->server;
    c->reconnect = o->has_reconnect ? MAX(o->reconnect, 0) : 0;
    c->type = o->type;
    c->path = g_strdup(o->path);
    c->abstract = o->abstract;
    c->tight = o->tight;
    c->host = g_strdup(o->host);
    c->port = g_strdup(o->port);
    c->fd = g_strdup(o->fd);
    c->nodelay = o->nodelay;
    if (c->server) {
        if (!server_listen(c, errp)) {
            chardev_free(c);
            return NULL;
        }
        c->disconnected = disconnected_name(c);
        if (o->wait) {
            /* QEMU's message; start-up waits for the first client. */
            g_autoptr(GSocketConnection) conn = NULL;

            g_printerr("blockd: info: waiting for connection on: %s\n",
                       c->disconnected);
            conn = g_socket_listener_accept(G_SOCKET_LISTENER(c->service),
                                            NULL, NULL, errp);
            if (!conn) {
                chardev_free(c);
                return NULL;
            }
            peer_connected(c, conn);
        } else {
            g_socket_service_start(c->service);
        }
        return c;
    }
    c->disconnected = disconnected_name(c);
    if (c->reconnect > 0) {
        /* QEMU: failures are reported and retried, never returned. */
        on_retry(c);
        return c;
    }
    if (!client_connect(c, errp)) {
        chardev_free(c);
        return NULL;
    }
    return c;
}

static void chardev_insert(BdChardev *c)
{
    if (!chardevs) {
        chardevs = g_ptr_array_new();
    }
    g_ptr_array_add(chardevs, c);
}

gboolean bd_chardev_socket_exists(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    return chardev_find(id) != NULL;
}

void bd_chardev_socket_insert(BdChardev *c)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(!chardev_find(c->id));
    chardev_insert(c);
}

void bd_chardev_socket_free(BdChardev *c)
{
    BD_GLOBAL_STATE_CODE();

    chardev_free(c);
}

BdChardev *bd_chardev_socket_steal(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);

    if (c) {
        g_assert(!c->claimed);
        g_ptr_array_remove(chardevs, c);
    }
    return c;
}

/* --- frontends (monitors) --- */

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
    if (c->conn) {
        /* A client came first (wait=on, or a connecting chardev). */
        g_autoptr(GSocketConnection) conn = take_conn(c);

        g_socket_set_blocking(g_socket_connection_get_socket(conn), TRUE);
        c->sessions++;
        accept(conn, opaque);
    }
    if (c->service) {
        /* A monitor serves every client that connects. */
        g_socket_service_start(c->service);
    }
    return TRUE;
}

void bd_chardev_session_closed(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);

    if (c && c->sessions > 0 && --c->sessions == 0 && !c->server &&
        c->reconnect > 0 && !c->retry_id) {
        c->retry_id = g_timeout_add_seconds(retry_seconds(c), on_retry, c);
    }
}

gboolean bd_chardev_is_claimed(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);

    return c && c->claimed;
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

/* A peer is connected (to the monitor, or held). */
static gboolean chardev_up(const BdChardev *c)
{
    return c->claimed ? c->sessions > 0 : c->conn != NULL;
}

char *bd_chardev_filename(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);

    if (!c) {
        return NULL;
    }
    return g_strdup(chardev_up(c) && c->connected ? c->connected
                                                  : c->disconnected);
}

/* QEMU's 'addr': the address as given, a server's as bound. */
static JsonNode *addr_json(const BdChardev *c)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "type");
    if (c->type == BD_SOCKET_ADDRESS_UNIX) {
        json_builder_add_string_value(b, "unix");
        json_builder_set_member_name(b, "path");
        json_builder_add_string_value(b, c->path);
        if (c->abstract) {
            json_builder_set_member_name(b, "abstract");
            json_builder_add_boolean_value(b, TRUE);
            json_builder_set_member_name(b, "tight");
            json_builder_add_boolean_value(b, c->tight);
        }
    } else {
        json_builder_add_string_value(b, "inet");
        json_builder_set_member_name(b, "host");
        json_builder_add_string_value(b, c->host);
        json_builder_set_member_name(b, "port");
        json_builder_add_string_value(b, c->port);
        if (c->server) {
            /* The bound address says its family. */
            json_builder_set_member_name(b, strchr(c->host, ':') ? "ipv6"
                                                                 : "ipv4");
            json_builder_add_boolean_value(b, TRUE);
        }
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

JsonNode *bd_chardev_qom_get(const char *id, const char *prop)
{
    BD_GLOBAL_STATE_CODE();

    BdChardev *c = chardev_find(id);
    JsonNode *n;

    if (!c) {
        return NULL;
    }
    if (strcmp(prop, "connected") == 0) {
        n = json_node_new(JSON_NODE_VALUE);
        json_node_set_boolean(n, chardev_up(c));
        return n;
    }
    if (strcmp(prop, "addr") == 0) {
        return addr_json(c);
    }
    return NULL;
}
