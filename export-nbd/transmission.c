/* SPDX-License-Identifier: MIT */
/* The transmission phase, one request at a time: receive -> validate ->
 * dispatch -> reply.  Which worker thread reads and runs which request
 * is workers.c's business; here a worker reads one request header and
 * its payload (as the connection's reader), runs it through the
 * export's entry handle (any thread may), then takes send_lock and
 * writes the whole reply with one sendmsg, so replies go out in
 * completion order.
 *
 * Zero-copy reads: on a plaintext connection, a read of at least
 * BD_NBD_ZERO_COPY_MIN bytes asks the graph to send the data from the
 * image to the socket itself (bd_entry_pread_to_fd: sendfile where the
 * chain is a file, or raw on a file).  The reply header goes first,
 * written by the sink's begin callback, which takes send_lock; the
 * lock is held until the data has gone.  A chain that cannot refuses
 * before anything is sent (-ENOTSUP) and the read takes the buffer
 * path; a failure after the header has gone cannot be reported any
 * more, and the connection is closed rather than left corrupt.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "export-nbd/nbd-internal.h"
#include "graph/trace.h"
#include "graph/io.h"

/* Reads at least this long look for holes to send as OFFSET_HOLE. */
#define BD_NBD_SPARSE_READ_MIN  (64u << 10)
/* At most this many chunks in a sparse read reply. */
#define BD_NBD_MAX_READ_CHUNKS  64
/* Reads at least this long go to the socket without a copy where the
 * node chain can (see the top); shorter ones cost no more with one. */
#define BD_NBD_ZERO_COPY_MIN    (64u << 10)
#define BD_NBD_ZERO_BUF         (1u << 20)

static uint8_t zero_buf[BD_NBD_ZERO_BUF];  /* never written */

typedef struct {
    uint64_t offset;
    uint32_t length;
    gboolean hole;
} ReadSeg;

/* A structured chunk header with room for its fixed payload part. */
typedef struct BD_NBD_PACKED {
    BdNbdStructuredReply h;
    union {
        uint64_t data_offset;         /* OFFSET_DATA */
        BdNbdChunkOffsetHole hole;    /* OFFSET_HOLE */
        uint32_t context_id;          /* BLOCK_STATUS */
    } u;
} ChunkHdr;

struct BdNbdWorker {
    BdNbdClient *c;
    BdEntry *entry;
    int io_err;          /* the request's I/O error (accounting), or 0 */
    BdNbdReqLimits lim;
    uint8_t *buf;
    size_t cap;
    size_t keep_buf;     /* BD_NBD_KEEP_BUF or BD_NBD_EXTRA_KEEP_BUF */
    uint64_t reserved;   /* of the budgets, for a buffer past keep_buf */
    GArray *segs;        /* ReadSeg */
    GArray *hdrs;        /* ChunkHdr */
    GArray *iov;         /* struct iovec */
    gboolean send_locked;   /* holds c->send_lock across a reply */
    /* BdNbdExtent per selected context, made on first use. */
    GArray *extents[BD_NBD_META_BITMAP0 + BD_NBD_MAX_BITMAPS];
};

/* Free a buffer too large to keep, and give its budget back. */
static void drop_large_buf(BdNbdWorker *w)
{
    if (w->cap > w->keep_buf) {
        g_clear_pointer(&w->buf, free);
        w->cap = 0;
    }
    if (w->reserved) {
        bd_nbd_budget_release(&w->c->budget, w->reserved);
        w->reserved = 0;
    }
}

/* Page-aligned, so that O_DIRECT nodes need no bounce buffer.  A large
 * one is reserved from the budgets first, which may wait (budget.h). */
static int ensure_buf(BdNbdWorker *w, size_t len)
{
    if (w->cap < len) {
        void *p = NULL;
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
        if (len > w->keep_buf && len > w->reserved) {
            if (!bd_nbd_budget_reserve(&w->c->budget, len - w->reserved,
                                       &w->c->quit)) {
                return -ESHUTDOWN;
            }
            w->reserved = len;
        }
        if (posix_memalign(&p, 4096, len) != 0) {
            return -ENOMEM;
        }
        w->buf = p;
        w->cap = len;
    }
    return 0;
}

static const char *export_name(BdNbdWorker *w)
{
    return w->c->exp->name;
}

/* --- replies --- */

/* Conditional locking, which clang's analysis cannot follow. */
static void send_lock(BdNbdWorker *w) BD_NO_THREAD_SAFETY
{
    if (!w->send_locked) {
        bd_mutex_lock(&w->c->send_lock);
        w->send_locked = TRUE;
    }
}

static void send_unlock(BdNbdWorker *w) BD_NO_THREAD_SAFETY
{
    if (w->send_locked) {
        w->send_locked = FALSE;
        bd_mutex_unlock(&w->c->send_lock);
    }
}

/* Inside a zero-copy reply the worker holds the lock already. */
static int send_iov(BdNbdWorker *w, struct iovec *iov, int n)
{
    BdNbdClient *c = w->c;
    int ret;

    if (w->send_locked) {
        return bd_nbd_conn_writev(c, iov, n);
    }
    bd_mutex_lock(&c->send_lock);
    ret = bd_nbd_conn_writev(c, iov, n);
    bd_mutex_unlock(&c->send_lock);
    return ret;
}

static int send_simple(BdNbdWorker *w, const BdNbdRequest *req,
                       uint32_t err, const void *data, size_t len)
{
    BdNbdSimpleReply r = {
        .magic = GUINT32_TO_BE(NBD_SIMPLE_REPLY_MAGIC),
        .error = GUINT32_TO_BE(err),
        .cookie = req->cookie,
    };
    struct iovec iov[2] = {
        { .iov_base = &r, .iov_len = sizeof(r) },
        { .iov_base = (void *)data, .iov_len = len },
    };
    return send_iov(w, iov, len ? 2 : 1);
}

static void chunk_header(BdNbdStructuredReply *h, const BdNbdRequest *req,
                         uint16_t flags, uint16_t type, uint32_t length)
{
    h->magic = GUINT32_TO_BE(NBD_STRUCTURED_REPLY_MAGIC);
    h->flags = GUINT16_TO_BE(flags);
    h->type = GUINT16_TO_BE(type);
    h->cookie = req->cookie;
    h->length = GUINT32_TO_BE(length);
}

/* An OFFSET_HOLE chunk for [offset, offset + length); its wire size. */
static size_t hole_chunk(ChunkHdr *ch, const BdNbdRequest *req,
                         uint16_t flags, uint64_t offset, uint32_t length)
{
    chunk_header(&ch->h, req, flags, NBD_REPLY_TYPE_OFFSET_HOLE,
                 sizeof(ch->u.hole));
    ch->u.hole.offset = GUINT64_TO_BE(offset);
    ch->u.hole.length = GUINT32_TO_BE(length);
    return sizeof(ch->h) + sizeof(ch->u.hole);
}

static int send_none(BdNbdWorker *w, const BdNbdRequest *req)
{
    BdNbdStructuredReply h;

    struct iovec iov = { .iov_base = &h, .iov_len = sizeof(h) };

    chunk_header(&h, req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
    return send_iov(w, &iov, 1);
}

/* An error reply: a structured error chunk with a message when
 * structured replies are on, else a simple reply. */
static int send_error(BdNbdWorker *w, const BdNbdRequest *req,
                      uint32_t err, const char *msg)
{
    BdNbdStructuredReply h;
    BdNbdChunkError e;
    size_t mlen = msg ? MIN(strlen(msg), BD_NBD_MAX_STRING) : 0;
    struct iovec iov[3];

    g_debug("export '%s': %s at %" G_GUINT64_FORMAT "+%u failed: %s "
            "(NBD error %u)", export_name(w), bd_nbd_cmd_name(req->type),
            req->offset, req->length, msg ? msg : "", err);
    if (!w->lim.structured) {
        return send_simple(w, req, err, NULL, 0);
    }
    chunk_header(&h, req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                 sizeof(e) + mlen);
    e.error = GUINT32_TO_BE(err);
    e.msg_len = GUINT16_TO_BE((uint16_t)mlen);
    iov[0] = (struct iovec){ .iov_base = &h, .iov_len = sizeof(h) };
    iov[1] = (struct iovec){ .iov_base = &e, .iov_len = sizeof(e) };
    iov[2] = (struct iovec){ .iov_base = (void *)msg, .iov_len = mlen };
    return send_iov(w, iov, mlen ? 3 : 2);
}

static int send_errno(BdNbdWorker *w, const BdNbdRequest *req, int ret)
{
    w->io_err = ret;
    return send_error(w, req, bd_nbd_errno_to_wire(ret), g_strerror(-ret));
}

/* Success of a command without payload. */
static int send_ok(BdNbdWorker *w, const BdNbdRequest *req)
{
    return send_simple(w, req, 0, NULL, 0);
}

/* --- commands --- */

static int io_flags(BdNbdWorker *w, const BdNbdRequest *req)
{
    return (req->flags & NBD_CMD_FLAG_FUA) ||
           w->c->exp->common.writethrough ? BD_REQ_FUA : 0;
}

/* Split [offset, offset + length) into data and hole segments. */
static void plan_sparse_read(BdNbdWorker *w, const BdNbdRequest *req)
{
    uint64_t pos = req->offset, end = req->offset + req->length;

    g_array_set_size(w->segs, 0);
    while (pos < end) {
        uint64_t pnum = 0;
        gboolean hole = FALSE;
        ReadSeg *last;

        if (w->segs->len < BD_NBD_MAX_READ_CHUNKS - 1) {
            int ret = bd_entry_block_status(w->entry, pos, end - pos, &pnum);
            if (ret >= 0 && pnum > 0) {
                hole = (ret & BD_BLOCK_ZERO) != 0;
                pnum = MIN(pnum, end - pos);
            } else {
                pnum = end - pos;
            }
        } else {
            pnum = end - pos;
        }
        last = w->segs->len ?
               &g_array_index(w->segs, ReadSeg, w->segs->len - 1) : NULL;
        if (last && last->hole == hole) {
            last->length += pnum;
        } else {
            g_array_append_val(w->segs, ((ReadSeg){ pos, pnum, hole }));
        }
        pos += pnum;
    }
}

/* x-query-nbd-clients' byte counts: one relaxed add per request. */
static void count_bytes(guint64 *counter, uint32_t n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/* Whether a read reply looks for holes to send as OFFSET_HOLE. */
static gboolean sparse_ok(BdNbdWorker *w, const BdNbdRequest *req)
{
    return w->lim.structured && !(req->flags & NBD_CMD_FLAG_DF) &&
           req->length >= BD_NBD_SPARSE_READ_MIN;
}

/* 'planned': w->segs holds the plan already (zero-copy was refused). */
static int do_sparse_read(BdNbdWorker *w, const BdNbdRequest *req,
                          gboolean planned)
{
    guint i, n;

    if (!planned) {
        plan_sparse_read(w, req);
    }
    n = w->segs->len;
    for (i = 0; i < n; i++) {
        ReadSeg *s = &g_array_index(w->segs, ReadSeg, i);
        int ret;
        if (s->hole) {
            continue;
        }
        ret = bd_entry_pread(w->entry, s->offset, s->length,
                             w->buf + (s->offset - req->offset), 0);
        if (ret < 0) {
            return send_errno(w, req, ret);
        }
    }
    count_bytes(&w->c->bytes_read, req->length);
    g_array_set_size(w->hdrs, n);
    g_array_set_size(w->iov, 0);
    for (i = 0; i < n; i++) {
        ReadSeg *s = &g_array_index(w->segs, ReadSeg, i);
        ChunkHdr *ch = &g_array_index(w->hdrs, ChunkHdr, i);
        uint16_t flags = i == n - 1 ? NBD_REPLY_FLAG_DONE : 0;
        struct iovec v = { .iov_base = ch };

        if (s->hole) {
            v.iov_len = hole_chunk(ch, req, flags, s->offset, s->length);
            g_array_append_val(w->iov, v);
        } else {
            chunk_header(&ch->h, req, flags, NBD_REPLY_TYPE_OFFSET_DATA,
                         8 + s->length);
            ch->u.data_offset = GUINT64_TO_BE(s->offset);
            v.iov_len = sizeof(ch->h) + 8;
            g_array_append_val(w->iov, v);
            v.iov_base = w->buf + (s->offset - req->offset);
            v.iov_len = s->length;
            g_array_append_val(w->iov, v);
        }
    }
    return send_iov(w, (struct iovec *)w->iov->data, w->iov->len);
}

/* --- zero-copy reads --- */

/* Where a zero-copy read sends its data: the client's socket, after
 * 'iov' (the reply or chunk headers that precede the data). */
typedef struct {
    BdFdSink sink;            /* first member */
    BdNbdWorker *w;
    struct iovec *iov;
    int iovcnt;
} ReplySink;

static int reply_sink_begin(BdFdSink *sink)
{
    ReplySink *rs = (ReplySink *)sink;

    send_lock(rs->w);
    /* MSG_MORE: on TCP the header and the data leave in one segment. */
    return bd_nbd_writev_flags(rs->w->c->fd, rs->iov, rs->iovcnt,
                               MSG_MORE) < 0 ? -EPIPE : 0;
}

static gboolean zero_copy_ok(BdNbdWorker *w, const BdNbdRequest *req)
{
    /* TLS records are made by GnuTLS in user space: keep buffers. */
    return !w->c->tls && req->length >= BD_NBD_ZERO_COPY_MIN;
}

/* Send [offset, offset + length) after 'iov'.  0: sent; -ENOTSUP or
 * -errno with *sent FALSE: nothing of it (nor 'iov') went out; with
 * *sent TRUE, the stream is broken. */
static int zero_copy_send(BdNbdWorker *w, uint64_t offset, uint32_t length,
                          struct iovec *iov, int iovcnt, gboolean *sent)
{
    ReplySink rs = {
        .sink = { .fd = w->c->fd, .begin = reply_sink_begin },
        .w = w,
        .iov = iov,
        .iovcnt = iovcnt,
    };
    int ret = bd_entry_pread_to_fd(w->entry, offset, length, &rs.sink, 0);

    *sent = rs.sink.begun;
    return ret;
}

static int zero_copy_broken(BdNbdWorker *w, const BdNbdRequest *req, int ret)
{
    send_unlock(w);
    g_info("export '%s': read at %" G_GUINT64_FORMAT "+%u failed after "
           "its reply began (%s): closing the connection to %s",
           export_name(w), req->offset, req->length, g_strerror(-ret),
           w->c->peer);
    return -1;
}

/* A read as one simple reply or one OFFSET_DATA chunk.  1: the chain
 * cannot, nothing sent (use the buffer path); else as handle. */
static int zero_copy_read(BdNbdWorker *w, const BdNbdRequest *req)
{
    BdNbdSimpleReply r = {
        .magic = GUINT32_TO_BE(NBD_SIMPLE_REPLY_MAGIC),
        .cookie = req->cookie,
    };
    ChunkHdr ch;
    struct iovec hdr = { .iov_base = &r, .iov_len = sizeof(r) };
    gboolean sent;
    int ret;

    if (w->lim.structured) {
        chunk_header(&ch.h, req, NBD_REPLY_FLAG_DONE,
                     NBD_REPLY_TYPE_OFFSET_DATA, 8 + req->length);
        ch.u.data_offset = GUINT64_TO_BE(req->offset);
        hdr = (struct iovec){ .iov_base = &ch, .iov_len = sizeof(ch.h) + 8 };
    }
    ret = zero_copy_send(w, req->offset, req->length, &hdr, 1, &sent);
    if (sent) {
        if (ret < 0) {
            return zero_copy_broken(w, req, ret);
        }
        send_unlock(w);
        count_bytes(&w->c->bytes_read, req->length);
        return 0;
    }
    return ret == -ENOTSUP ? 1 : send_errno(w, req, ret);
}

/* The data segment 's' of a sparse read through a buffer, after the
 * chunks pending in w->iov (the chain refused it half-way through a
 * reply already begun). */
static int sparse_segment_buffered(BdNbdWorker *w, const BdNbdRequest *req,
                                   const ReadSeg *s)
{
    struct iovec v;
    int ret = ensure_buf(w, s->length);

    if (ret == 0) {
        ret = bd_entry_pread(w->entry, s->offset, s->length, w->buf, 0);
    }
    if (ret < 0) {
        return ret;
    }
    v = (struct iovec){ .iov_base = w->buf, .iov_len = s->length };
    g_array_append_val(w->iov, v);
    return send_iov(w, (struct iovec *)w->iov->data, w->iov->len) < 0
           ? -EPIPE : 0;
}

/* A sparse structured read: hole chunks go out with the header of the
 * next data chunk, whose data follows from the image.  send_lock is
 * held from the first chunk to the last.  1: the chain cannot, nothing
 * sent; else as handle. */
static int zero_copy_sparse_read(BdNbdWorker *w, const BdNbdRequest *req)
{
    guint i, n;
    int ret = 0;

    plan_sparse_read(w, req);
    n = w->segs->len;
    g_array_set_size(w->hdrs, n);
    g_array_set_size(w->iov, 0);
    for (i = 0; i < n; i++) {
        ReadSeg *s = &g_array_index(w->segs, ReadSeg, i);
        ChunkHdr *ch = &g_array_index(w->hdrs, ChunkHdr, i);
        uint16_t flags = i == n - 1 ? NBD_REPLY_FLAG_DONE : 0;
        struct iovec v = { .iov_base = ch };
        gboolean sent;

        if (s->hole) {
            v.iov_len = hole_chunk(ch, req, flags, s->offset, s->length);
            g_array_append_val(w->iov, v);
            continue;
        }
        chunk_header(&ch->h, req, flags, NBD_REPLY_TYPE_OFFSET_DATA,
                     8 + s->length);
        ch->u.data_offset = GUINT64_TO_BE(s->offset);
        v.iov_len = sizeof(ch->h) + 8;
        g_array_append_val(w->iov, v);
        ret = zero_copy_send(w, s->offset, s->length,
                             (struct iovec *)w->iov->data, w->iov->len,
                             &sent);
        if (ret < 0 && sent) {
            return zero_copy_broken(w, req, ret);
        }
        if (ret == -ENOTSUP && !w->send_locked) {
            return 1;                 /* nothing sent yet */
        }
        if (ret == -ENOTSUP) {
            ret = sparse_segment_buffered(w, req, s);
        }
        if (ret < 0) {
            /* Ends the reply (a structured error chunk), or the whole
             * reply when nothing went out yet. */
            ret = send_errno(w, req, ret);
            send_unlock(w);
            return ret;
        }
        g_array_set_size(w->iov, 0);
    }
    if (w->iov->len) {
        /* Trailing holes; all of it when there was no data. */
        ret = send_iov(w, (struct iovec *)w->iov->data, w->iov->len);
    }
    send_unlock(w);
    if (ret == 0) {
        count_bytes(&w->c->bytes_read, req->length);
    }
    return ret;
}

/* 'rflags': BD_REQ_NOWAIT from the reader (handle_inline): then
 * BD_NBD_WOULD_BLOCK with nothing sent where the read would wait. */
#define BD_NBD_WOULD_BLOCK 2

static int do_read(BdNbdWorker *w, const BdNbdRequest *req, int rflags)
{
    gboolean zero_copy_refused = FALSE;
    ChunkHdr ch;
    struct iovec iov[2];
    int ret;

    if (req->length == 0) {
        return w->lim.structured ? send_none(w, req) : send_ok(w, req);
    }
    if (zero_copy_ok(w, req)) {
        ret = sparse_ok(w, req) ? zero_copy_sparse_read(w, req)
                                : zero_copy_read(w, req);
        if (ret != 1) {
            return ret;
        }
        zero_copy_refused = TRUE;
    }
    ret = ensure_buf(w, req->length);
    if (ret < 0) {
        return send_errno(w, req, ret);
    }
    if (sparse_ok(w, req)) {
        return do_sparse_read(w, req, zero_copy_refused);
    }
    ret = bd_entry_pread(w->entry, req->offset, req->length, w->buf, rflags);
    if (ret == -EAGAIN && (rflags & BD_REQ_NOWAIT)) {
        return BD_NBD_WOULD_BLOCK;
    }
    if (ret < 0) {
        return send_errno(w, req, ret);
    }
    count_bytes(&w->c->bytes_read, req->length);
    if (!w->lim.structured) {
        return send_simple(w, req, 0, w->buf, req->length);
    }
    if (!(req->flags & NBD_CMD_FLAG_DF) &&
        bd_buffer_is_zero(w->buf, req->length)) {
        /* Zeroes go as a hole chunk, as QEMU sends them for unallocated
         * space: 12 bytes on the wire instead of the whole buffer. */
        iov[0] = (struct iovec){
            .iov_base = &ch,
            .iov_len = hole_chunk(&ch, req, NBD_REPLY_FLAG_DONE, req->offset,
                                  req->length),
        };
        return send_iov(w, iov, 1);
    }
    chunk_header(&ch.h, req, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
                 8 + req->length);
    ch.u.data_offset = GUINT64_TO_BE(req->offset);
    iov[0] = (struct iovec){ .iov_base = &ch, .iov_len = sizeof(ch.h) + 8 };
    iov[1] = (struct iovec){ .iov_base = w->buf, .iov_len = req->length };
    return send_iov(w, iov, 2);
}

static int do_write(BdNbdWorker *w, const BdNbdRequest *req)
{
    int ret = 0;

    if (req->length) {
        ret = bd_entry_pwrite(w->entry, req->offset, req->length, w->buf,
                              io_flags(w, req));
    }
    if (ret < 0) {
        return send_errno(w, req, ret);
    }
    count_bytes(&w->c->bytes_written, req->length);
    return send_ok(w, req);
}

static int do_flush(BdNbdWorker *w, const BdNbdRequest *req)
{
    int ret = bd_entry_flush(w->entry);
    return ret < 0 ? send_errno(w, req, ret) : send_ok(w, req);
}

static int do_trim(BdNbdWorker *w, const BdNbdRequest *req)
{
    int ret = 0;

    if (req->length) {
        ret = bd_entry_pdiscard(w->entry, req->offset, req->length);
    }
    if (ret == 0 && io_flags(w, req)) {
        ret = bd_entry_flush(w->entry);
    }
    return ret < 0 ? send_errno(w, req, ret) : send_ok(w, req);
}

/* Write zeroes by hand when the graph has no faster way. */
static int write_zero_buffers(BdNbdWorker *w, const BdNbdRequest *req)
{
    uint64_t pos = req->offset, end = req->offset + req->length;

    while (pos < end) {
        uint64_t n = MIN(end - pos, sizeof(zero_buf));
        int ret = bd_entry_pwrite(w->entry, pos, n, zero_buf,
                                  io_flags(w, req));
        if (ret < 0) {
            return ret;
        }
        pos += n;
    }
    return 0;
}

static int do_write_zeroes(BdNbdWorker *w, const BdNbdRequest *req)
{
    int flags = io_flags(w, req);
    int ret = 0;

    if (!(req->flags & NBD_CMD_FLAG_NO_HOLE)) {
        flags |= BD_REQ_MAY_UNMAP;
    }
    if (req->flags & NBD_CMD_FLAG_FAST_ZERO) {
        flags |= BD_REQ_NO_FALLBACK;
    }
    if (req->length) {
        ret = bd_entry_pwrite_zeroes(w->entry, req->offset, req->length,
                                     flags);
        if (ret == -ENOTSUP && !(flags & BD_REQ_NO_FALLBACK)) {
            ret = write_zero_buffers(w, req);
        }
    }
    return ret < 0 ? send_errno(w, req, ret) : send_ok(w, req);
}

/* Prefetch by reading through the graph (fills the host page cache). */
static int do_cache(BdNbdWorker *w, const BdNbdRequest *req)
{
    uint64_t pos = req->offset, end = req->offset + req->length;
    int ret = ensure_buf(w, MIN(req->length, 1u << 20));

    while (ret == 0 && pos < end) {
        uint64_t n = MIN(end - pos, 1u << 20);
        ret = bd_entry_pread(w->entry, pos, n, w->buf, 0);
        pos += n;
    }
    return ret < 0 ? send_errno(w, req, ret) : send_ok(w, req);
}

static int do_block_status(BdNbdWorker *w, const BdNbdRequest *req)
{
    const BdNbdMetaSel *sel = &w->c->meta;
    gboolean req_one = !!(req->flags & NBD_CMD_FLAG_REQ_ONE);
    enum { MAX_CTX = BD_NBD_META_BITMAP0 + BD_NBD_MAX_BITMAPS };
    uint32_t ids[MAX_CTX];
    ChunkHdr ch[MAX_CTX];
    struct iovec iov[2 * MAX_CTX];
    int n = 0, i, ret;

    if (sel->base_allocation) {
        ids[n++] = BD_NBD_META_BASE_ALLOCATION;
    }
    if (sel->allocation_depth) {
        ids[n++] = BD_NBD_META_ALLOCATION_DEPTH;
    }
    for (guint b = 0; b < BD_NBD_MAX_BITMAPS; b++) {
        if (sel->bitmaps & (G_GUINT64_CONSTANT(1) << b)) {
            ids[n++] = BD_NBD_META_BITMAP0 + b;
        }
    }
    for (i = 0; i < n; i++) {
        if (!w->extents[i]) {
            w->extents[i] = g_array_new(FALSE, FALSE, sizeof(BdNbdExtent));
        }
        ret = bd_nbd_meta_extents(w->c->exp, w->entry, ids[i], req->offset,
                                  req->length, req_one, w->extents[i]);
        if (ret < 0) {
            return send_errno(w, req, ret);
        }
    }
    for (i = 0; i < n; i++) {
        GArray *ext = w->extents[i];
        chunk_header(&ch[i].h, req, i == n - 1 ? NBD_REPLY_FLAG_DONE : 0,
                     NBD_REPLY_TYPE_BLOCK_STATUS,
                     4 + ext->len * sizeof(BdNbdExtent));
        ch[i].u.context_id = GUINT32_TO_BE(ids[i]);
        iov[2 * i] = (struct iovec){ .iov_base = &ch[i],
                                     .iov_len = sizeof(ch[i].h) + 4 };
        iov[2 * i + 1] = (struct iovec){
            .iov_base = ext->data,
            .iov_len = ext->len * sizeof(BdNbdExtent),
        };
    }
    return send_iov(w, iov, 2 * n);
}

static int handle_request(BdNbdWorker *w, const BdNbdRequest *req,
                          uint32_t err)
{
    if (err) {
        return send_error(w, req, err, "invalid request");
    }
    switch (req->type) {
    case NBD_CMD_READ:
        return do_read(w, req, 0);
    case NBD_CMD_WRITE:
        return do_write(w, req);
    case NBD_CMD_FLUSH:
        return do_flush(w, req);
    case NBD_CMD_TRIM:
        return do_trim(w, req);
    case NBD_CMD_CACHE:
        return do_cache(w, req);
    case NBD_CMD_WRITE_ZEROES:
        return do_write_zeroes(w, req);
    case NBD_CMD_BLOCK_STATUS:
        return do_block_status(w, req);
    default:
        return send_error(w, req, NBD_EINVAL, "unknown command");
    }
}

/* --- receiving --- */

/* Read one request and its payload; the caller is the reader.  -1: drop
 * the connection.  *err: 0 or the NBD error the request gets. */
int bd_nbd_worker_recv(BdNbdWorker *w, BdNbdRequest *req, uint32_t *err)
{
    BdNbdClient *c = w->c;
    uint8_t hdr[sizeof(BdNbdRequestWire)];

    if (bd_nbd_client_read(c, hdr, sizeof(hdr)) < 0) {
        return -1;
    }
    if (!bd_nbd_request_decode(hdr, sizeof(hdr), req)) {
        g_info("export '%s': %s sent a bad request magic, disconnecting",
               export_name(w), c->peer);
        return -1;
    }
    *err = bd_nbd_request_check(req, &w->lim);
    if (req->type != NBD_CMD_WRITE || req->length == 0) {
        return 0;
    }
    /* A write's payload follows whatever we think of the request. */
    if (*err == 0 && ensure_buf(w, req->length) < 0) {
        *err = NBD_ENOMEM;
    }
    if (*err) {
        return bd_nbd_client_skip(c, req->length);
    }
    return bd_nbd_client_read(c, w->buf, req->length);
}

BdNbdWorker *bd_nbd_worker_new(BdNbdClient *c, size_t keep_buf)
{
    BdNbdWorker *w = g_new0(BdNbdWorker, 1);

    w->c = c;
    w->keep_buf = keep_buf;
    w->entry = c->exp->common.entry;
    w->lim = (BdNbdReqLimits){
        .export_size = c->size,
        .read_only = (c->tflags & NBD_FLAG_READ_ONLY) != 0,
        .structured = c->structured,
        .has_contexts = c->meta_set,
    };
    w->segs = g_array_new(FALSE, FALSE, sizeof(ReadSeg));
    w->hdrs = g_array_new(FALSE, FALSE, sizeof(ChunkHdr));
    w->iov = g_array_new(FALSE, FALSE, sizeof(struct iovec));
    return w;
}

void bd_nbd_worker_free(BdNbdWorker *w)
{
    drop_large_buf(w);
    free(w->buf);
    g_array_unref(w->segs);
    g_array_unref(w->hdrs);
    g_array_unref(w->iov);
    for (gsize i = 0; i < G_N_ELEMENTS(w->extents); i++) {
        if (w->extents[i]) {
            g_array_unref(w->extents[i]);
        }
    }
    g_free(w);
}

/* The accounting type of an NBD command; BD_ACCT__MAX: not counted
 * (cache, block status), as QEMU's devices count only data requests. */
static BdAcctType acct_type(const BdNbdRequest *req)
{
    switch (req->type) {
    case NBD_CMD_READ:
        return BD_ACCT_READ;
    case NBD_CMD_WRITE:
    case NBD_CMD_WRITE_ZEROES:
        return BD_ACCT_WRITE;
    case NBD_CMD_FLUSH:
        return BD_ACCT_FLUSH;
    case NBD_CMD_TRIM:
        return BD_ACCT_UNMAP;
    default:
        return BD_ACCT__MAX;
    }
}

/* One NBD command is one operation on the export's stats, however many
 * graph calls it took (sparse reads, zero buffers): an invalid one when
 * the request check refused it, a failed one when its I/O did. */
static void account(BdNbdWorker *w, const BdNbdRequest *req, uint32_t err,
                    int64_t start)
{
    BdIoStats *stats = &w->c->exp->common.stats;
    BdAcctType type = acct_type(req);
    uint64_t bytes = type == BD_ACCT_FLUSH ? 0 : req->length;

    __atomic_fetch_add(&w->c->requests, 1, __ATOMIC_RELAXED);
    if (type == BD_ACCT__MAX) {
        /* not counted (cache, block status); traced all the same */
    } else if (err) {
        bd_io_stats_invalid(stats, type);
    } else {
        bd_io_stats_done(stats, type, bytes, start, w->io_err);
    }
    BD_TRACE(BD_TRACE_NBD_REQUEST,
             "export=%s client=%s cookie=0x%" G_GINT64_MODIFIER "x type=%u "
             "offset=%" G_GUINT64_FORMAT " length=%u err=%u io_err=%d "
             "latency_ns=%" G_GINT64_FORMAT,
             w->c->exp->common.id, w->c->label, req->cookie, req->type, req->offset, req->length,
             err, w->io_err, bd_io_stats_now() - start);
}

int bd_nbd_worker_handle_inline(BdNbdWorker *w, const BdNbdRequest *req,
                                uint32_t err)
{
    int64_t start = bd_io_stats_now();
    int ret;

    w->io_err = 0;
    if (err) {
        account(w, req, err, start);
        return send_error(w, req, err, "invalid request") < 0 ? -1 : 1;
    }
    /* Short reads only: the long ones go by sendfile, which may wait. */
    if (req->type != NBD_CMD_READ || req->length == 0 ||
        req->length >= BD_NBD_ZERO_COPY_MIN ||
        (w->lim.structured && !(req->flags & NBD_CMD_FLAG_DF) &&
         req->length >= BD_NBD_SPARSE_READ_MIN)) {
        return 0;
    }
    ret = do_read(w, req, BD_REQ_NOWAIT);
    if (ret == BD_NBD_WOULD_BLOCK) {
        return 0;           /* counted when a worker runs it */
    }
    account(w, req, 0, start);
    return ret < 0 ? -1 : 1;
}

int bd_nbd_worker_handle(BdNbdWorker *w, const BdNbdRequest *req,
                         uint32_t err)
{
    int64_t start = bd_io_stats_now();
    int ret;

    w->io_err = 0;
    ret = handle_request(w, req, err);
    account(w, req, err, start);
    drop_large_buf(w);
    return ret;
}
