/* SPDX-License-Identifier: MIT */
/* SocketAddress (qapi/sockets.json): the schema of the address the NBD
 * server listens on and the nbd driver connects to, next to the struct
 * it is decoded into.
 *
 * Thread model: constant tables; decoding runs on the main thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <netdb.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "graph/error.h"
#include "graph/socket-address.h"

const char *const bd_socket_address_type_names[] = {
    [BD_SOCKET_ADDRESS_INET] = "inet",
    [BD_SOCKET_ADDRESS_UNIX] = "unix",
    [BD_SOCKET_ADDRESS_VSOCK] = "vsock",
    [BD_SOCKET_ADDRESS_FD] = "fd",
    NULL };

#define A(f) BD_AT(BdSocketAddress, f)
#define HAS(f) BD_HAS(BdSocketAddress, f)

/* Listening sockets take none of the connection options. */
static const BdSchemaField inet_fields[] = {
    { "host", &bd_schema_str, FALSE, A(host) },
    { "port", &bd_schema_str, FALSE, A(port) },
    { "numeric", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "to", &bd_schema_uint16, TRUE, .flags = BD_FIELD_IGNORED },
    { "ipv4", &bd_schema_bool, TRUE, A(ipv4), HAS(ipv4) },
    { "ipv6", &bd_schema_bool, TRUE, A(ipv6), HAS(ipv6) },
    { "keep-alive", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "mptcp", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_inet = {
    .name = "InetSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = inet_fields };

/* Abstract sockets are not offered: the server refuses no path. */
static const BdSchemaField unix_fields[] = {
    { "path", &bd_schema_str, FALSE, A(path) },
    { "abstract", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "tight", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_unix = {
    .name = "UnixSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = unix_fields };

/* vsock and fd addresses are accepted by the schema and refused by the
 * server for their type, before their members matter. */
static const BdSchemaField vsock_fields[] = {
    { "cid", &bd_schema_str, FALSE, .flags = BD_FIELD_IGNORED },
    { "port", &bd_schema_str, FALSE, .flags = BD_FIELD_IGNORED },
    { NULL } };
const BdSchemaType bd_socket_address_vsock = {
    .name = "VsockSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = vsock_fields };
static const BdSchemaField string_fields[] = {
    { "str", &bd_schema_str, FALSE, A(str) },
    { NULL } };
const BdSchemaType bd_socket_address_fd = {
    .name = "String", .kind = BD_SCHEMA_OBJECT, .fields = string_fields };

static const BdSchemaType type_enum = {
    .name = "SocketAddressType", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_socket_address_type_names };
static const BdSchemaField base_fields[] = {
    { "type", &type_enum, FALSE, A(type) },
    { NULL } };
static const BdSchemaVariant variants[] = {
    { "inet", &bd_socket_address_inet },
    { "unix", &bd_socket_address_unix },
    { "vsock", &bd_socket_address_vsock },
    { "fd", &bd_socket_address_fd },
    { NULL } };
const BdSchemaType bd_socket_address = {
    .name = "SocketAddress", .kind = BD_SCHEMA_UNION, .fields = base_fields,
    .discriminator = "type", .variants = variants };

void bd_socket_address_decode(GVariant *addr, BdSocketAddress *out)
{
    *out = (BdSocketAddress) { 0 };
    bd_schema_decode_union(&bd_socket_address, addr, out);
}

/* --- listening sockets (the NBD server, the metrics endpoint) --- */


static int listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to create socket: %s", g_strerror(errno));
        return -1;
    }
    /* As QEMU: a stale socket file from an earlier run is replaced. */
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, SOMAXCONN) < 0) {
        int err = errno;
        close(fd);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to bind socket to %s: %s", path,
                    g_strerror(err));
        return -1;
    }
    return fd;
}

static int listen_inet(const BdSocketAddress *addr, GError **errp)
{
    const char *host = addr->host;
    const char *port = addr->port;
    gboolean has4 = addr->has_ipv4;
    gboolean has6 = addr->has_ipv6;
    gboolean v4 = addr->ipv4;
    gboolean v6 = addr->ipv6;
    struct addrinfo hints = {
        .ai_flags = AI_PASSIVE | AI_ADDRCONFIG,
        .ai_socktype = SOCK_STREAM,
        .ai_family = AF_UNSPEC,
    };
    struct addrinfo *res = NULL, *ai;
    int fd = -1, err = 0, rc;

    if (!port) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'port' is missing");
        return -1;
    }
    /* Only one family asked for explicitly: restrict to it. */
    if (has4 && !v4) {
        hints.ai_family = AF_INET6;
    } else if (has6 && !v6) {
        hints.ai_family = AF_INET;
    } else if (has4 && !has6) {
        hints.ai_family = AF_INET;
    } else if (has6 && !has4) {
        hints.ai_family = AF_INET6;
    }
    if (host && !*host) {
        host = NULL;
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "address resolution failed for %s:%s: %s",
                    host ? host : "", port, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6) {
            int only = has4 && !v4 ? 1 : 0;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only));
        }
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, SOMAXCONN) == 0) {
            break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to bind socket to %s:%s: %s",
                    host ? host : "", port, g_strerror(err));
    }
    return fd;
}

int bd_socket_address_listen(const BdSocketAddress *addr, GError **errp)
{
    if (addr->type == BD_SOCKET_ADDRESS_UNIX) {
        if (!addr->path) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameter 'path' is missing");
            return -1;
        }
        return listen_unix(addr->path, errp);
    }
    if (addr->type == BD_SOCKET_ADDRESS_INET) {
        return listen_inet(addr, errp);
    }
    if (addr->type == BD_SOCKET_ADDRESS_FD) {
        return bd_socket_inherited_take(addr->str, errp);
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "unsupported address type '%s'",
                bd_socket_address_type_names[addr->type]);
    return -1;
}

/* --- inherited sockets --- */

/* The descriptors the daemon was started with (from 3 up), and for
 * those systemd passed, their LISTEN_FDNAMES names.  Written once by
 * bd_socket_inherited_init() before any thread; read-only afterwards. */
typedef struct {
    int fd;
    char *name;     /* NULL: not from LISTEN_FDS, or no name */
    gboolean activated;  /* from LISTEN_FDS */
    gboolean taken;      /* an address named it once */
} Inherited;

static GArray *inherited;
static guint activation_count;

static gboolean parse_uint(const char *s, guint64 *out)
{
    char *end;

    if (!s || !g_ascii_isdigit(*s)) {
        return FALSE;
    }
    errno = 0;
    *out = g_ascii_strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
}

void bd_socket_inherited_init(void)
{
    g_auto(GStrv) names = NULL;
    DIR *dir;
    struct dirent *de;
    guint64 pid = 0, n = 0;
    int first_unlisted = 3;

    inherited = g_array_new(FALSE, TRUE, sizeof(Inherited));
    if (parse_uint(getenv("LISTEN_PID"), &pid) && pid == (guint64)getpid() &&
        parse_uint(getenv("LISTEN_FDS"), &n) && n > 0 && n < 4096) {
        const char *fdnames = getenv("LISTEN_FDNAMES");

        names = fdnames ? g_strsplit(fdnames, ":", -1) : NULL;
        for (guint i = 0; i < n; i++) {
            Inherited e = { .fd = 3 + (int)i, .activated = TRUE };
            int flags = fcntl(e.fd, F_GETFD);

            if (flags < 0) {
                continue;    /* systemd said so, but it is not open */
            }
            fcntl(e.fd, F_SETFD, flags | FD_CLOEXEC);
            if (names && i < g_strv_length(names)) {
                e.name = g_strdup(names[i]);
            }
            g_array_append_val(inherited, e);
        }
        activation_count = (guint)n;
        first_unlisted = 3 + (int)n;
    }
    g_unsetenv("LISTEN_PID");
    g_unsetenv("LISTEN_FDS");
    g_unsetenv("LISTEN_FDNAMES");

    /* Descriptors passed without systemd (a script's --nbd-server
     * addr.type=fd,addr.str=N, as with qemu-storage-daemon). */
    dir = opendir("/proc/self/fd");
    while (dir && (de = readdir(dir))) {
        guint64 fd;
        Inherited e = { 0 };

        if (!parse_uint(de->d_name, &fd) || fd < (guint64)first_unlisted ||
            fd > G_MAXINT || (int)fd == dirfd(dir)) {
            continue;
        }
        e.fd = (int)fd;
        g_array_append_val(inherited, e);
    }
    if (dir) {
        closedir(dir);
    }
}

guint bd_socket_activation_count(void)
{
    return activation_count;
}

int bd_socket_inherited_take(const char *str, GError **errp)
{
    Inherited *found = NULL;
    int type = 0, listening = 0, fd;
    socklen_t len = sizeof(type);
    struct stat st;
    guint64 num;

    for (guint i = 0; inherited && i < inherited->len; i++) {
        Inherited *e = &g_array_index(inherited, Inherited, i);
        if (e->name && strcmp(e->name, str) == 0) {
            found = e;
            break;
        }
    }
    if (!found && parse_uint(str, &num)) {
        for (guint i = 0; inherited && i < inherited->len; i++) {
            Inherited *e = &g_array_index(inherited, Inherited, i);
            if ((guint64)e->fd == num) {
                found = e;
                break;
            }
        }
        if (!found) {
            /* Not ours to take: a descriptor the daemon opened itself. */
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "File descriptor '%s' is not a socket", str);
            return -1;
        }
    }
    if (!found) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    activation_count ?
                    "File descriptor named '%s' has not been found "
                    "(not a number, nor a name in LISTEN_FDNAMES)" :
                    "Unable to parse FD number %s", str);
        return -1;
    }
    if (fstat(found->fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File descriptor '%s' is not a socket", str);
        return -1;
    }
    len = sizeof(type);
    if (getsockopt(found->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        type != SOCK_STREAM) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File descriptor '%s' is not a stream socket", str);
        return -1;
    }
    len = sizeof(listening);
    if (getsockopt(found->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening,
                   &len) < 0 || !listening) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File descriptor '%s' is not a listening socket", str);
        return -1;
    }
    fd = fcntl(found->fd, F_DUPFD_CLOEXEC, 3);
    found->taken = fd >= 0;
    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File descriptor '%s': %s", str, g_strerror(errno));
    }
    return fd;
}

char *bd_socket_activation_unused(void)
{
    g_autoptr(GString) out = g_string_new(NULL);

    for (guint i = 0; inherited && i < inherited->len; i++) {
        const Inherited *e = &g_array_index(inherited, Inherited, i);
        if (e->activated && !e->taken) {
            g_string_append_printf(out, "%s%d%s%s%s", out->len ? ", " : "",
                                   e->fd, e->name ? " (" : "",
                                   e->name ? e->name : "", e->name ? ")" : "");
        }
    }
    return out->len ? g_string_free(g_steal_pointer(&out), FALSE) : NULL;
}
