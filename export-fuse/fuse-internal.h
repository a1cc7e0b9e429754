/* SPDX-License-Identifier: MIT */
/* Shared state of the FUSE export between its lifecycle (fuse-export.c),
 * its worker threads (fuse-workers.c) and its request handlers
 * (fuse-ops.c).
 *
 * Thread model: the fields above 'attr_lock' are set on the main thread
 * in create and read-only afterwards until destroy (which runs after
 * every worker has been joined).  st_mode/st_uid/st_gid are set in
 * create and changed by setattr on worker threads, always under
 * attr_lock.  resize_lock serializes
 * size changes (growing writes, truncate, fallocate past the end) so
 * that two growing writers never shrink each other's growth.
 * Lock order: resize_lock before attr_lock; neither is held across a
 * reply to the kernel.
 */
#ifndef BD_EXPORT_FUSE_INTERNAL_H
#define BD_EXPORT_FUSE_INTERNAL_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include "export-fuse/fuse-export.h"
#include "graph/lock.h"

/* Largest read or write the kernel sends (FUSE_MAX_MAX_PAGES pages). */
#define BD_FUSE_MAX_IO (1u << 20)

typedef struct BdFuseWorker BdFuseWorker;
typedef struct BdFuseResizeCall BdFuseResizeCall;

typedef struct BdFuseExport {
    BdExport common;
    struct fuse_session *session;
    char *mountpoint;
    gboolean growable;
    gboolean allow_other;      /* the mount used allow_other */
    gboolean mounted;
    int stop_fd;               /* eventfd: readable once workers must exit */
    BdFuseWorker **workers;
    guint n_workers;
    /* Requests are refused once 'stopping' is set (request_shutdown).
     * One admitted just before takes its export reference with
     * bd_export_try_ref(), which fails once the last reference has gone:
     * an export on its way to destruction is never brought back. */
    gint stopping;             /* atomic */
    gint closed_outside;       /* atomic: connection lost, reported once */
    gint spinning;             /* atomic: a worker is polling the queue */

    BdMutex attr_lock;
    mode_t st_mode BD_GUARDED_BY(attr_lock);
    uid_t st_uid BD_GUARDED_BY(attr_lock);
    gid_t st_gid BD_GUARDED_BY(attr_lock);
    BdMutex resize_lock;       /* guards no field: a size change's steps */
    /* A resize handed to the main thread (fuse-resize.c), so that
     * request_shutdown can wake the worker waiting for it. */
    BdMutex resize_call_lock;
    BdFuseResizeCall *resize_call BD_GUARDED_BY(resize_call_lock);
} BdFuseExport;

/* The low-level operations table (fuse-ops.c). */
extern const struct fuse_lowlevel_ops bd_fuse_ops;

/* Worker pool (fuse-workers.c): start after mount, stop, join; main
 * thread only. */
gboolean bd_fuse_workers_start(BdFuseExport *fe, GError **errp);
void bd_fuse_workers_stop(BdFuseExport *fe);
void bd_fuse_workers_join(BdFuseExport *fe);

/* Resize the export's node to 'size' (only ever larger with
 * 'grow_only'): growable exports hold the resize permission, writable
 * ones borrow it on the main thread for the call.  Worker thread, with
 * resize_lock held.  0 or -errno. */
int bd_fuse_resize(BdFuseExport *fe, uint64_t size, gboolean grow_only)
    BD_REQUIRES(fe->resize_lock);
/* Wake a worker waiting for a resize on the main thread: the export is
 * shutting down.  Main thread. */
void bd_fuse_resize_cancel(BdFuseExport *fe);

/* TRUE when the request being processed on this worker thread was
 * admitted (holds an export reference); FALSE during shutdown. */
gboolean bd_fuse_request_admitted(void);
/* Drop the current request's export reference (before its reply). */
void bd_fuse_request_release(void);
/* A buffer of at least 'size' bytes owned by the calling worker, valid
 * until its next request; NULL on allocation failure. */
void *bd_fuse_worker_buffer(size_t size);

#endif
