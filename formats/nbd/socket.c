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
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "graph/error.h"
#include "formats/nbd/nbd-int.h"

/* connect() on a non-blocking socket, waiting at most until 'deadline'
 * (monotonic) and giving up when *cancel is set: 0 or an errno. */
static int connect_until(int fd, const struct sockaddr *sa, socklen_t len,
                         gint64 deadline, const gint *cancel)
{
    int flags = fcntl(fd, F_GETFL);
    int err = 0;
    socklen_t errlen = sizeof(err);

    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    if (connect(fd, sa, len) == 0) {
        goto done;
    }
    if (errno != EINPROGRESS && errno != EINTR && errno != EAGAIN) {
        err = errno;
        goto done;
    }
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        gint64 left = deadline - g_get_monotonic_time();

        if (cancel && g_atomic_int_get(cancel)) {
            err = ECANCELED;
            break;
        }
        if (left <= 0) {
            err = ETIMEDOUT;
            break;
        }
        /* Slices, so that a closing node is not held up. */
        if (poll(&p, 1, (int)MIN(left / 1000 + 1, 100)) > 0) {
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0) {
                err = errno;
            }
            break;
        }
    }
done:
    fcntl(fd, F_SETFL, flags);
    return err;
}

static int connect_unix(const char *path, gint64 deadline,
                        const gint *cancel, GError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd, err;

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
    err = connect_until(fd, (struct sockaddr *)&sa, sizeof(sa), deadline,
                        cancel);
    if (err) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to connect to '%s': %s", path, g_strerror(err));
        close(fd);
        return -1;
    }
    return fd;
}

static int connect_inet(const char *host, const char *port, gint64 deadline,
                        const gint *cancel, GError **errp)
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
        err = connect_until(fd, ai->ai_addr, ai->ai_addrlen, deadline,
                            cancel);
        if (err) {
            saved = err;
            close(fd);
            fd = -1;
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

int nbd_socket_connect(const NbdConfig *cfg, gint64 deadline,
                       const gint *cancel, GError **errp)
{
    if (cfg->type == BD_SOCKET_ADDRESS_UNIX) {
        return connect_unix(cfg->path, deadline, cancel, errp);
    }
    return connect_inet(cfg->host, cfg->port, deadline, cancel, errp);
}
