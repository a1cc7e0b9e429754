/* SPDX-License-Identifier: MIT */
/* Private types shared by the files of export-nbd/: the NBD export, the
 * client connection and the helpers each phase offers the others.
 *
 * Thread model:
 *   main thread   - server start/stop, accept, export create/shutdown/
 *                   destroy (export.c, server.c)
 *   conn thread   - one per accepted socket: runs the handshake, then
 *                   becomes transmission worker 0 (handshake.c)
 *   workers       - BD_NBD_MIN_WORKERS..BD_NBD_MAX_WORKERS per
 *                   connection in transmission (workers.c); any may
 *                   call the entry's I/O.  One at a time is the reader.
 *
 * Locks, in the order they may be taken:
 *   bd_nbd_lock        - global: export name table, every export's
 *                        client list, the server's client list and
 *                        connection count.  Never held across I/O.
 *   client->pool_lock  - who is the reader, parked workers.  Never
 *                        held across I/O.
 *   client->send_lock  - the socket's write side (one reply at a time).
 * The socket's read side and read buffer belong to the worker holding
 * the reader role (client->reading), taken and given up under
 * pool_lock.  pool_lock and send_lock are never held together.
 */
#ifndef BD_EXPORT_NBD_INTERNAL_H
#define BD_EXPORT_NBD_INTERNAL_H

#include <sys/uio.h>

#include "crypto/tls.h"
#include "export-nbd/budget.h"
#include "export-nbd/nbd-server.h"
#include "export-nbd/protocol.h"
#include "graph/bitmap.h"
#include "graph/lock.h"

/* Worker threads per connection in transmission phase: started with
 * the minimum, one more whenever every worker is busy, up to
 * 4 per CPU within [8, BD_NBD_MAX_WORKERS] (more threads than that
 * only contend on the image's locks when I/O hits the page cache). */
#define BD_NBD_MIN_WORKERS 4
#define BD_NBD_MAX_WORKERS 16
/* Worker buffers above this size are freed after the request. */
#define BD_NBD_KEEP_BUF BD_NBD_BUDGET_FREE
/* ... and up to this many while the export's node waits on the network
 * (BdNode.latency_bound: rbd, nbd), where a worker spends its request
 * asleep on a round trip and a client's queue depth (fio's 32, QEMU's
 * 16) only fills with as many workers.  The workers past
 * BD_NBD_MAX_WORKERS keep no buffer above BD_NBD_EXTRA_KEEP_BUF, so
 * the memory a connection holds between requests stays as bounded as
 * before (budget.h). */
#define BD_NBD_MAX_LATENCY_WORKERS 64
#define BD_NBD_EXTRA_KEEP_BUF (128u << 10)
/* How often (microseconds) a connection at its worker limit looks
 * again whether its export's node is latency-bound (graph changes
 * move an export onto other nodes). */
#define BD_NBD_LATENCY_RECHECK_US (100 * 1000)
/* Connections at most in the handshake at once; the listener pauses
 * beyond (they count apart from max-connections, and the handshake
 * timeout bounds how long each may take). */
#define BD_NBD_MAX_HANDSHAKES 512
/* Send buffer asked for on unix-socket connections. */
#define BD_NBD_UNIX_SNDBUF (4u << 20)
/* Size of a connection's read-ahead buffer. */
#define BD_NBD_RBUF_SIZE (32u << 10)

/* The global lock (see the order above); static, needs no init. */
extern BdMutex bd_nbd_lock;

/* Metadata context ids (stable per connection). */
enum {
    BD_NBD_META_BASE_ALLOCATION = 0,
    BD_NBD_META_ALLOCATION_DEPTH = 1,
    BD_NBD_META_BITMAP0 = 2,       /* + index into the export's bitmaps */
};
/* Dirty bitmaps one export may offer (one selection bit each). */
#define BD_NBD_MAX_BITMAPS 64

/* Contexts a query selects (or lists). */
typedef struct {
    gboolean base_allocation;
    gboolean allocation_depth;
    guint64 bitmaps;          /* bit i: "qemu:dirty-bitmap:" + name i */
} BdNbdMetaSel;

typedef struct BdNbdExport {
    BdExport common;          /* first member */
    char *name;
    char *description;        /* NULL when none */
    gboolean allocation_depth;
    /* Exported dirty bitmaps (busy while exported) and their names,
     * NULL-terminated; fixed for the export's life. */
    BdDirtyBitmap **bitmaps;
    char **bitmap_names;
    guint n_bitmaps;
    /* Payload read by the clients that have left; those still attached
     * keep their own count (no shared counter on the read path). */
    guint64 bytes_read_left BD_STATIC_GUARDED_BY(bd_nbd_lock);
    gboolean listed BD_STATIC_GUARDED_BY(bd_nbd_lock);  /* in the name table */
    /* BdNbdClient * in transmission. */
    GList *clients BD_STATIC_GUARDED_BY(bd_nbd_lock);
    /* Failed handshakes of clients that named this export, by
     * BD_NBD_HS_FAIL_* (atomic, relaxed; handshake.c). */
    guint64 hs_failures[BD_NBD_HS_FAIL__MAX];
} BdNbdExport;

typedef struct BdNbdClient {
    gint refcount;            /* conn thread + workers (atomic) */
    int fd;                   /* closed when the last reference goes */
    char *peer;               /* "unix socket" / "1.2.3.4:5678" for logs */
    char *label;              /* "1.2.3.4:5678" / "unix#N": trace lines */
    gboolean quit;            /* atomic: stop reading requests */

    /* The server's TLS settings when the connection came (immutable). */
    BdTlsCreds *tls_creds;    /* NULL: plaintext */
    char *tls_authz;          /* authz object id, or NULL */
    /* Made by STARTTLS in the handshake, then read-only. */
    BdTlsSession *tls;
    /* Handshake bookkeeping (server.c). */
    gint in_handshake;        /* atomic: counted in nr_handshaking */
    uint32_t handshake_max_seconds;   /* set at accept, 0: no limit */
    GSource *handshake_timer; /* conn thread; NULL when none */
    gboolean has_slot;        /* counted against max-connections */
    /* Payload bytes the client read and wrote, and its requests
     * (atomic, relaxed). */
    guint64 bytes_read;
    guint64 bytes_written;
    guint64 requests;
    guint64 id;               /* connection number, from 1 (main) */
    /* Why the handshake would end unsuccessfully now (the last refusal
     * the client got), BD_NBD_HS_FAIL_*: counted when it ends so
     * (atomic: the handshake timer sets it on the main thread). */
    gint fail_reason;
    /* The export the client last named in EXPORT_NAME/INFO/GO, if one
     * of that name existed then: its failure is counted there too (conn
     * thread only). */
    char *hs_export;

    /* Negotiated in the handshake (conn thread only, then read-only). */
    gboolean no_zeroes;
    gboolean structured;
    BdNbdMetaSel meta;        /* selected contexts */
    char *meta_export;        /* export the selection was made for */
    gboolean meta_set;        /* SET_META_CONTEXT selected something */
    BdNbdExport *exp;         /* holds a bd_export_ref in transmission */
    uint64_t size;            /* export size announced to the client */
    uint16_t tflags;          /* transmission flags announced */

    /* Transmission. */
    gint nworkers;            /* live workers (atomic) */
    BdMutex pool_lock;
    GCond parked_cond;        /* parked workers wait here (pool_lock) */
    int parked BD_GUARDED_BY(pool_lock);   /* workers in parked_cond */
    int waking BD_GUARDED_BY(pool_lock);   /* ...signalled, not yet up */
    gboolean reading BD_GUARDED_BY(pool_lock); /* a worker is the reader */
    /* Last answer of bd_entry_latency_bound() and when it was asked. */
    gboolean latency_bound BD_GUARDED_BY(pool_lock);
    gint64 latency_checked BD_GUARDED_BY(pool_lock);
    uint8_t *rbuf;            /* read-ahead buffer (the reader's) */
    size_t rstart, rend;
    BdMutex send_lock;        /* the socket's write side, no fields */
    BdNbdBudget budget;       /* its large request buffers (budget.h) */
} BdNbdClient;

/* socket.c: blocking I/O on the client's socket.  0 or -1 (EOF/error). */
int bd_nbd_read_full(int fd, void *buf, size_t len);
int bd_nbd_writev_full(int fd, struct iovec *iov, int iovcnt);
/* The same with sendmsg flags (MSG_MORE: data follows by sendfile). */
int bd_nbd_writev_flags(int fd, struct iovec *iov, int iovcnt, int flags);
/* The same on the connection: through its TLS session when it has one. */
int bd_nbd_conn_read(BdNbdClient *c, void *buf, size_t len);
int bd_nbd_conn_skip(BdNbdClient *c, uint64_t len);
int bd_nbd_conn_writev(BdNbdClient *c, struct iovec *iov, int iovcnt);
int bd_nbd_conn_write(BdNbdClient *c, const void *buf, size_t len);
/* Buffered reads through client->rbuf; the caller is the reader. */
int bd_nbd_client_read(BdNbdClient *c, void *buf, size_t len);
int bd_nbd_client_skip(BdNbdClient *c, uint64_t len);

/* server.c */
uint32_t bd_nbd_server_max_connections(void);
void bd_nbd_client_unref(BdNbdClient *c);
/* Stop the client's threads reading: shutdown(2) of the socket. */
void bd_nbd_client_kick(BdNbdClient *c);
/* TRUE when the client is on its way out: told to go, or its peer has
 * hung up (seen without reading).  The caller keeps c->fd open (holds
 * bd_nbd_lock while c is attached to an export, or a reference). */
gboolean bd_nbd_client_leaving(BdNbdClient *c);
/* Conn thread: the client's part of the handshake is over (it asked to
 * go, or failed): stop its timeout and stop counting it as handshaking. */
void bd_nbd_client_handshake_done(BdNbdClient *c);
/* Conn thread, at GO/EXPORT_NAME: wait for a place under
 * max-connections; FALSE when the client was told to go meanwhile. */
gboolean bd_nbd_client_claim_slot(BdNbdClient *c);

/* export.c: the name table.  All take bd_nbd_lock themselves. */
/* The listed export named 'name' with a new bd_export_ref, or NULL. */
BdNbdExport *bd_nbd_export_get(const char *name);
/* Attach a client for request_shutdown; FALSE when the export went. */
gboolean bd_nbd_export_attach(BdNbdExport *exp, BdNbdClient *c);
void bd_nbd_export_detach(BdNbdExport *exp, BdNbdClient *c);
/* Snapshot of the listed exports: pairs name, description ("" if none). */
GPtrArray *bd_nbd_export_names(void);
/* Transmission flags for a client of 'exp'. */
uint16_t bd_nbd_export_tflags(BdNbdExport *exp, gboolean structured);

/* handshake.c: 0 when the client entered transmission with c->exp set,
 * -1 to close the connection. */
int bd_nbd_handshake(BdNbdClient *c);
/* Conn thread: the handshake ended without transmission; count it (by
 * c->fail_reason, server-wide and at the export the client named), log
 * and trace it.  A clean NBD_OPT_ABORT counts nothing. */
void bd_nbd_handshake_failed(BdNbdClient *c);

/* meta-context.c */
/* Apply one query to 'sel'.  'list': NBD_OPT_LIST_META_CONTEXT rules
 * (empty leaf names are wildcards).  Unknown namespaces are ignored. */
void bd_nbd_meta_query(const char *query, size_t len, gboolean list,
                       gboolean has_depth, const char *const *bitmaps,
                       BdNbdMetaSel *sel);
/* Handle NBD_OPT_LIST/SET_META_CONTEXT (data already read). */
int bd_nbd_opt_meta_context(BdNbdClient *c, uint32_t opt,
                            const uint8_t *data, uint32_t len);

/* Extents of context 'id' for [offset, offset + length) into 'out'
 * (BdNbdExtent, wire order), equal neighbours merged; one extent when
 * 'req_one'.  0 or -errno. */
int bd_nbd_meta_extents(BdNbdExport *exp, BdEntry *entry, uint32_t id,
                        uint64_t offset, uint32_t length, gboolean req_one,
                        GArray *out);

/* transmission.c: one worker's buffers and the commands. */
typedef struct BdNbdWorker BdNbdWorker;
/* 'keep_buf': the largest buffer the worker keeps between requests
 * (BD_NBD_KEEP_BUF, or BD_NBD_EXTRA_KEEP_BUF for extra workers); larger
 * ones are reserved from the budgets and freed after the request. */
BdNbdWorker *bd_nbd_worker_new(BdNbdClient *c, size_t keep_buf);
void bd_nbd_worker_free(BdNbdWorker *w);
/* Read the next request and its payload; the caller is the reader.
 * -1: drop the connection; *err: 0 or the NBD error for the request. */
int bd_nbd_worker_recv(BdNbdWorker *w, BdNbdRequest *req, uint32_t *err);
/* Run a request and send its reply; -1 when the client is gone. */
int bd_nbd_worker_handle(BdNbdWorker *w, const BdNbdRequest *req,
                         uint32_t err);
/* The same for a request the reader may run at once, without waiting
 * for storage (a short read from the page cache, an invalid request):
 * 1 when it replied, 0 when the request must go to a worker that may
 * block (nothing sent), -1 when the client is gone. */
int bd_nbd_worker_handle_inline(BdNbdWorker *w, const BdNbdRequest *req,
                                uint32_t err);

/* workers.c: serve requests until the client leaves; consumes the
 * connection thread's reference. */
void bd_nbd_transmission_run(BdNbdClient *c);
/* Wake the parked workers and those waiting in a budget, to see
 * c->quit (set it first). */
void bd_nbd_workers_wake(BdNbdClient *c);
/* Option-phase reply helpers (handshake.c). */
int bd_nbd_send_rep(BdNbdClient *c, uint32_t opt, uint32_t type,
                    const void *data, size_t len);
int bd_nbd_send_rep_err(BdNbdClient *c, uint32_t opt, uint32_t type,
                        const char *fmt, ...) G_GNUC_PRINTF(4, 5);

#endif
