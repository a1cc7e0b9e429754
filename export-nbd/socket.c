/* SPDX-License-Identifier: MIT */
/* Blocking socket I/O for NBD connections: exact reads, a read-ahead
 * buffer shared by a connection's workers, and gathered writes that
 * never raise SIGPIPE; through the connection's TLS session once
 * STARTTLS has made one.
 *
 * Thread model: the plain helpers are called by whichever thread owns
 * that side of the socket; the conn_* helpers by the connection thread
 * in the handshake, then the client_* helpers only by the worker
 * holding the reader role (workers.c) and conn_writev by the holder of
 * send_lock.  So one thread receives and one sends at a time, which is
 * what a TLS session allows.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "export-nbd/nbd-internal.h"

int bd_nbd_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        /* One system call for a whole payload where the kernel can. */
        ssize_t n = recv(fd, p, len, MSG_WAITALL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int bd_nbd_writev_full(int fd, struct iovec *iov, int iovcnt)
{
    return bd_nbd_writev_flags(fd, iov, iovcnt, 0);
}

int bd_nbd_writev_flags(int fd, struct iovec *iov, int iovcnt, int flags)
{
    while (iovcnt > 0) {
        struct msghdr msg = {
            .msg_iov = iov,
            .msg_iovlen = MIN(iovcnt, 1024),
        };
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -1;
        }
        /* Skip what was sent. */
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}

/* --- the connection: plaintext or TLS --- */

/* Whatever the connection has, up to len bytes: > 0, or -1 at the end
 * of the stream or on an error. */
static ssize_t conn_recv_some(BdNbdClient *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->tls) {
        n = bd_tls_session_recv(c->tls, buf, len);
        return n > 0 ? n : -1;
    }
    do {
        n = recv(c->fd, buf, len, 0);
    } while (n < 0 && errno == EINTR);
    return n > 0 ? n : -1;
}

int bd_nbd_conn_read(BdNbdClient *c, void *buf, size_t len)
{
    uint8_t *p = buf;

    if (!c->tls) {
        return bd_nbd_read_full(c->fd, buf, len);
    }
    while (len > 0) {
        ssize_t n = conn_recv_some(c, p, len);
        if (n < 0) {
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int bd_nbd_conn_skip(BdNbdClient *c, uint64_t len)
{
    uint8_t scratch[16384];

    while (len > 0) {
        size_t n = MIN(len, sizeof(scratch));
        if (bd_nbd_conn_read(c, scratch, n) < 0) {
            return -1;
        }
        len -= n;
    }
    return 0;
}

int bd_nbd_conn_writev(BdNbdClient *c, struct iovec *iov, int iovcnt)
{
    if (c->tls) {
        return bd_tls_session_sendv(c->tls, iov, iovcnt) < 0 ? -1 : 0;
    }
    return bd_nbd_writev_full(c->fd, iov, iovcnt);
}

int bd_nbd_conn_write(BdNbdClient *c, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return bd_nbd_conn_writev(c, &iov, 1);
}

/* --- the read-ahead buffer of transmission --- */

/* Refill the empty read-ahead buffer with whatever the socket has. */
static int client_fill(BdNbdClient *c)
{
    ssize_t n = conn_recv_some(c, c->rbuf, BD_NBD_RBUF_SIZE);

    if (n < 0) {
        return -1;
    }
    c->rstart = 0;
    c->rend = n;
    return 0;
}

int bd_nbd_client_read(BdNbdClient *c, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        size_t avail = c->rend - c->rstart;
        if (avail > 0) {
            size_t n = MIN(avail, len);
            memcpy(p, c->rbuf + c->rstart, n);
            c->rstart += n;
            p += n;
            len -= n;
            continue;
        }
        /* Large payloads go straight to the caller's buffer. */
        if (len >= BD_NBD_RBUF_SIZE) {
            return bd_nbd_conn_read(c, p, len);
        }
        if (client_fill(c) < 0) {
            return -1;
        }
    }
    return 0;
}

int bd_nbd_client_skip(BdNbdClient *c, uint64_t len)
{
    size_t avail = c->rend - c->rstart;
    size_t n = MIN(avail, len);

    c->rstart += n;
    len -= n;
    return len > 0 ? bd_nbd_conn_skip(c, len) : 0;
}
