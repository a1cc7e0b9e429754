/* SPDX-License-Identifier: MIT */
/* The nbd driver's socket: connect to the server's unix or inet address
 * ourselves (libnbd then speaks NBD over it), so that errors read as
 * QEMU's and TLS can be set up before libnbd takes over.
 *
 * Thread model: no state; blocking calls on the calling thread (the
 * main thread at open, the reconnect thread later).
 */
#define G_LOG_DOMAIN "blockd-nbd-client"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "graph/error.h"
#include "formats/nbd/nbd-int.h"

static int connect_unix(const char *path, GError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to create socket: %s", g_strerror(errno));
        return -1;
    }
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR) {
            continue;
        }
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to connect to '%s': %s", path,
                    g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_inet(const char *host, const char *port, GError **errp)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_ADDRCONFIG };
    struct addrinfo *res = NULL;
    int err, saved = ECONNREFUSED;

    err = getaddrinfo(host, port, &hints, &res);
    if (err) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "address resolution failed for %s:%s: %s", host, port,
                    gai_strerror(err));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        while (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            if (errno != EINTR) {
                saved = errno;
                close(fd);
                fd = -1;
                break;
            }
        }
        if (fd >= 0) {
            /* Small requests and replies go out at once. */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            freeaddrinfo(res);
            return fd;
        }
    }
    freeaddrinfo(res);
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Failed to connect to '%s:%s': %s", host, port,
                g_strerror(saved));
    return -1;
}

int nbd_socket_connect(const NbdConfig *cfg, GError **errp)
{
    if (cfg->type == BD_SOCKET_ADDRESS_UNIX) {
        return connect_unix(cfg->path, errp);
    }
    return connect_inet(cfg->host, cfg->port, errp);
}
