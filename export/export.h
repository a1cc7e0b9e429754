/* SPDX-License-Identifier: MIT */
/* The common export layer: block-export-add/del/query for every export
 * type (nbd, fuse), reference counting and BLOCK_EXPORT_DELETED.
 *
 * An export holds one entry handle on its node.  Its reference count is
 * one for the user (dropped by block-export-del) plus one per client
 * connection (NBD) or running request (FUSE).  When it reaches zero the
 * export is destroyed on the main loop -- its node released -- and
 * BLOCK_EXPORT_DELETED {"id"} is emitted; until then it stays listed,
 * shutting down.  Nothing waits for that by polling: the last reference,
 * dropped on whatever thread, queues the export for the main loop (an
 * idle callback), and a main thread that must wait (shutdown,
 * nbd-server-stop) sleeps on a condition variable signalled by the same
 * hand-over.
 *
 *   block-export-del --> request_shutdown: clients told to go
 *        |                        |
 *   user ref dropped     each client drops its ref as it leaves
 *        '---------> 0 <----------'
 *                    | (any thread: queued; main thread: at once)
 *                 destroy on the main loop --> BLOCK_EXPORT_DELETED
 *
 * Thread model: add/del/query/close_all/wait and the driver's create/
 * in_use/request_shutdown/destroy run on the main thread (asserted);
 * bd_export_ref/try_ref/unref from any thread.
 */
#ifndef BD_EXPORT_EXPORT_H
#define BD_EXPORT_EXPORT_H

#include "graph/entry.h"
#include "graph/stats.h"
#include "graph/worker-pool.h"

typedef struct BdExport BdExport;
typedef struct BdExportDriver BdExportDriver;

struct BdExportDriver {
    const char *type;                /* "nbd", "fuse" */
    /* Type-specific members of BlockExportOptions<Type>; {NULL}-ended. */
    const BdSchemaField *options;
    size_t instance_size;            /* >= sizeof(BdExport), first member */
    /* Extra permissions the export needs beyond read (+write when
     * writable), e.g. BD_PERM_RESIZE for a growable FUSE export. */
    uint64_t (*extra_perm)(GVariant *options);
    /* Permissions the export refuses to share while it exists, e.g.
     * BD_PERM_RESIZE for NBD, whose clients cannot follow a resize. */
    uint64_t unshared;
    /* Start serving.  exp->entry, id, node_name, writable are set. */
    gboolean (*create)(BdExport *exp, GVariant *options, GError **errp);
    /* Optional: TRUE while a client still uses the export, so that
     * block-export-del mode=safe refuses.  Clients on their way out (that
     * hung up, or were told to go) do not count.  Without it, any
     * reference beyond the user's counts.  Main thread. */
    gboolean (*in_use)(BdExport *exp);
    /* Stop accepting clients and disconnect the current ones; each
     * connection drops its reference as it goes. */
    void (*request_shutdown)(BdExport *exp);
    /* Free the driver's state; the common layer frees the rest. */
    void (*destroy)(BdExport *exp);
};

struct BdExport {
    const BdExportDriver *drv;
    char *id;
    char *node_name;
    BdEntry *entry;
    uint64_t perm;             /* what 'entry' needs */
    gboolean writable;
    gboolean writethrough;     /* every write is FUA */
    /* Atomic.  block-export-del mode=safe refuses while a client holds
     * one, so a threaded export drops a request's reference before
     * replying: a client that has its answer must not look "in use". */
    gint refcount;
    gboolean user_owned;       /* not yet deleted by the user (main) */
    /* The export's request accounting, as QEMU's device models keep
     * theirs on their BlockBackend: one operation per client request
     * (an NBD command, a FUSE read/write/fsync/fallocate), counted by
     * the export driver with atomics (graph/stats.h). */
    BdIoStats stats;
    gboolean shutting_down;    /* (main) */
    /* The iothread the export runs in, as the worker pool its threads
     * join (export/iothread.c); set by the main thread, followed by the
     * workers.  fixed_iothread: QEMU's option, the export may not move
     * with its node (main). */
    BdWorkerPoolSlot pool;
    gboolean fixed_iothread;
};

void bd_export_register_driver(const BdExportDriver *drv);
const BdExportDriver *bd_export_find_driver(const char *type);
/* The BlockExportOptions union (on 'type') of the registered drivers. */
const BdSchemaType *bd_export_options_schema(void);

/* Stop sharing what the driver's 'unshared' names.  The handle is
 * attached sharing everything, as QEMU's blk_exp_add; the driver's
 * create calls this where QEMU's does (NBD: after its name checks), so
 * a conflict is reported as QEMU reports it. */
gboolean bd_export_unshare(BdExport *exp, GError **errp);

/* The worker pool of iothread 'id' (borrowed), or NULL when there is no
 * such iothread: the caller's, which knows the objects. */
typedef BdWorkerPool *(*BdExportIothreadLookup)(const char *id);
/* block-export-add with validated BlockExportOptions.  An 'iothread'
 * option is resolved with 'lookup' (NULL: none is known) in QEMU's
 * order: the export's node moves to that iothread, or the export
 * refuses (fixed-iothread) or runs where the node is, as QEMU's. */
BdExport *bd_export_add(GVariant *options, BdExportIothreadLookup lookup,
                        GError **errp);
/* block-export-del.  Mode safe ('hard' FALSE) refuses while a client
 * uses the export; mode hard disconnects the clients.  Either way it
 * returns at once: the export is deleted (BLOCK_EXPORT_DELETED) right
 * away when no client holds it, else when the last one has gone. */
gboolean bd_export_del(const char *id, gboolean hard, GError **errp);
BdExport *bd_export_find(const char *id);
/* All exports (borrowed), including those shutting down. */
GPtrArray *bd_export_list(void);
/* Request shutdown of every export (of 'type', or all when NULL). */
void bd_export_close_all(const char *type);
/* Wait, blocking the main loop, until no export of 'type' (any when
 * NULL) is left or the monotonic time 'deadline' has come; FALSE then.
 * Requests a node holds back (a throttle) are let go first, as a drain
 * does, so that shut-down exports go without waiting for them.  For
 * shutdown and nbd-server-stop, after bd_export_close_all(). */
gboolean bd_export_wait_gone(const char *type, gint64 deadline);
/* The same for the one export 'id' (after bd_export_del). */
gboolean bd_export_wait_deleted(const char *id, gint64 deadline);

/* export/iothread.c: iothreads (worker pools) of nodes and exports.
 * Main thread.  Move the nodes connected to 'node' (parents and
 * children, as QEMU moves an AioContext) and their exports to 'pool'
 * (NULL: out of any iothread); refused with QEMU's text when an export
 * there is fixed to another.  x-blockdev-set-iothread. */
gboolean bd_export_node_set_pool(BdNode *node, BdWorkerPool *pool,
                                 GError **errp);
/* For bd_export_add: the pool an export on 'node' runs in (borrowed,
 * NULL: none) after moving the node's graph to 'want' where it can. */
gboolean bd_export_pick_pool(BdNode *node, BdWorkerPool *want,
                             gboolean fixed, BdWorkerPool **out,
                             GError **errp);
/* TRUE while a node or an export is in 'pool' (object-del refuses). */
gboolean bd_export_pool_in_use(BdWorkerPool *pool);

void bd_export_ref(BdExport *exp);
/* Take a reference unless the last one is already gone (the export is
 * on its way to destruction): for a request that may race with it. */
gboolean bd_export_try_ref(BdExport *exp);
void bd_export_unref(BdExport *exp);

#endif
