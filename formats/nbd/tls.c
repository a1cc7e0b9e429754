/* SPDX-License-Identifier: MIT */
/* NBD over TLS for the nbd driver, with blockd's own TLS layer
 * (crypto/): the driver does the NBD greeting and NBD_OPT_STARTTLS
 * itself, runs the TLS handshake with the tls-creds object's
 * credentials (x509 with tls-hostname, PSK, anonymous, priority: the
 * same as the server side), then relays the session's plaintext to a
 * socket pair on which libnbd continues the option haggling.  libnbd's
 * own TLS knows only certificate directories and PSK files, and no
 * hostname other than the one it dials.
 *
 * Thread model: the setup runs on the calling thread; then two relay
 * threads per connection, one per direction (a session may send on one
 * thread while it receives on another).  The last to finish frees the
 * session and closes both sockets.
 */
#define G_LOG_DOMAIN "blockd-nbd-client"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "graph/error.h"
#include "formats/nbd/nbd-int.h"

#define NBD_INIT_MAGIC      0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC      0x49484156454f5054ull   /* "IHAVEOPT" */
#define NBD_REP_MAGIC       0x0003e889045565a9ull
#define NBD_OPT_STARTTLS    5
#define NBD_REP_ACK         1
#define NBD_REP_ERR_UNSUP   0x80000001u
#define NBD_REP_ERR_POLICY  0x80000002u
#define NBD_FLAG_FIXED_NEWSTYLE 1
#define NBD_FLAG_NO_ZEROES      2
#define GREETING_LEN        18

typedef struct {
    BdTlsSession *tls;
    int net_fd;             /* the server's socket */
    int pair_fd;            /* our end of libnbd's socket pair */
    gint users;             /* relay threads still running */
} Relay;

static gboolean read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return FALSE;
        }
        p += n;
        len -= (size_t)n;
    }
    return TRUE;
}

static gboolean write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return FALSE;
        }
        p += n;
        len -= (size_t)n;
    }
    return TRUE;
}

static void relay_put(Relay *r)
{
    if (!g_atomic_int_dec_and_test(&r->users)) {
        return;
    }
    bd_tls_session_free(r->tls);
    close(r->net_fd);
    close(r->pair_fd);
    g_free(r);
}

/* libnbd -> server.  The first four bytes are libnbd's handshake flags,
 * which the server has had from us already. */
static gpointer relay_up(gpointer opaque)
{
    Relay *r = opaque;
    char buf[64 * 1024];
    uint32_t flags;

    if (read_full(r->pair_fd, &flags, sizeof(flags))) {
        for (;;) {
            ssize_t n = read(r->pair_fd, buf, sizeof(buf));
            struct iovec iov = { .iov_base = buf };

            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            iov.iov_len = (size_t)n;
            if (bd_tls_session_sendv(r->tls, &iov, 1) < 0) {
                break;
            }
        }
        bd_tls_session_bye(r->tls);
    }
    /* Wake the other direction. */
    shutdown(r->net_fd, SHUT_RDWR);
    shutdown(r->pair_fd, SHUT_RDWR);
    relay_put(r);
    return NULL;
}

/* server -> libnbd. */
static gpointer relay_down(gpointer opaque)
{
    Relay *r = opaque;
    char buf[64 * 1024];

    for (;;) {
        ssize_t n = bd_tls_session_recv(r->tls, buf, sizeof(buf));
        if (n <= 0 || !write_full(r->pair_fd, buf, (size_t)n)) {
            break;
        }
    }
    shutdown(r->pair_fd, SHUT_RDWR);
    shutdown(r->net_fd, SHUT_RDWR);
    relay_put(r);
    return NULL;
}

/* The greeting and NBD_OPT_STARTTLS, in plaintext.  'greeting' gets
 * the server's 18 bytes for libnbd. */
static gboolean starttls(int fd, uint8_t greeting[GREETING_LEN],
                         GError **errp)
{
    struct {
        uint64_t magic;
        uint32_t option, type, len;
    } __attribute__((packed)) reply;
    struct {
        uint64_t magic;
        uint32_t option, len;
    } __attribute__((packed)) request = {
        GUINT64_TO_BE(NBD_OPTS_MAGIC), GUINT32_TO_BE(NBD_OPT_STARTTLS), 0
    };
    uint64_t magic;
    uint16_t server_flags;
    uint32_t client_flags;

    if (!read_full(fd, greeting, GREETING_LEN)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to read initial magic");
        return FALSE;
    }
    memcpy(&magic, greeting, 8);
    if (GUINT64_FROM_BE(magic) != NBD_INIT_MAGIC) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Bad initial magic "
                    "received: 0x%" G_GINT64_MODIFIER "x",
                    GUINT64_FROM_BE(magic));
        return FALSE;
    }
    memcpy(&magic, greeting + 8, 8);
    memcpy(&server_flags, greeting + 16, 2);
    server_flags = GUINT16_FROM_BE(server_flags);
    if (GUINT64_FROM_BE(magic) != NBD_OPTS_MAGIC ||
        !(server_flags & NBD_FLAG_FIXED_NEWSTYLE)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Server does not support STARTTLS");
        return FALSE;
    }
    client_flags = GUINT32_TO_BE(server_flags &
                                 (NBD_FLAG_FIXED_NEWSTYLE |
                                  NBD_FLAG_NO_ZEROES));
    if (!write_full(fd, &client_flags, sizeof(client_flags)) ||
        !write_full(fd, &request, sizeof(request)) ||
        !read_full(fd, &reply, sizeof(reply))) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to start TLS: connection closed");
        return FALSE;
    }
    reply.type = GUINT32_FROM_BE(reply.type);
    reply.len = GUINT32_FROM_BE(reply.len);
    if (GUINT64_FROM_BE(reply.magic) != NBD_REP_MAGIC ||
        GUINT32_FROM_BE(reply.option) != NBD_OPT_STARTTLS ||
        reply.len > 4096) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unexpected reply to the STARTTLS option");
        return FALSE;
    }
    if (reply.len) {
        g_autofree char *msg = g_malloc0(reply.len + 1);
        if (!read_full(fd, msg, reply.len)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to start TLS: connection closed");
            return FALSE;
        }
    }
    if (reply.type == NBD_REP_ACK) {
        return TRUE;
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                reply.type == NBD_REP_ERR_UNSUP
                ? "Server does not support STARTTLS"
                : reply.type == NBD_REP_ERR_POLICY
                ? "Server rejected request to start TLS: not permitted"
                : "Server rejected request to start TLS");
    return FALSE;
}

/* Bound each blocking receive and send of the set-up by the time left
 * (a zero timeval: none again, for the relay). */
static void set_io_timeout(int fd, gint64 usec)
{
    struct timeval tv = { .tv_sec = usec / G_USEC_PER_SEC,
                          .tv_usec = usec % G_USEC_PER_SEC };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int nbd_tls_start(const NbdConfig *cfg, int fd, gint64 deadline,
                  GError **errp)
{
    uint8_t greeting[GREETING_LEN];
    g_autoptr(BdTlsSession) tls = NULL;
    int pair[2];
    Relay *r;

    set_io_timeout(fd, MAX(deadline - g_get_monotonic_time(), 1));
    if (!starttls(fd, greeting, errp)) {
        close(fd);
        return -1;
    }
    tls = bd_tls_session_new(cfg->tls, fd, cfg->tls_hostname, errp);
    if (!tls || !bd_tls_session_handshake(tls, errp)) {
        close(fd);
        return -1;
    }
    set_io_timeout(fd, 0);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "socketpair: %s",
                    g_strerror(errno));
        close(fd);
        return -1;
    }
    /* libnbd starts at the greeting; the pair's buffer holds it. */
    if (!write_full(pair[1], greeting, sizeof(greeting))) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "socketpair: %s",
                    g_strerror(errno));
        close(pair[0]);
        close(pair[1]);
        close(fd);
        return -1;
    }
    r = g_new0(Relay, 1);
    r->tls = g_steal_pointer(&tls);
    r->net_fd = fd;
    r->pair_fd = pair[1];
    r->users = 2;
    g_thread_unref(g_thread_new("nbd-tls-up", relay_up, r));
    g_thread_unref(g_thread_new("nbd-tls-down", relay_down, r));
    return pair[0];
}
