/* SPDX-License-Identifier: MIT */
/* The 'mirror' block job (blockdev-mirror): copy a node's data into a
 * target node while the node stays in use, keep the target in sync
 * (ready), then on job-complete move the node's users onto the target.
 *
 * Thread model: main thread.
 */
#ifndef BD_JOBS_MIRROR_H
#define BD_JOBS_MIRROR_H

#include "jobs/job.h"

/* MirrorSyncMode (the ones mirror supports). */
typedef enum {
    BD_MIRROR_SYNC_FULL,
    BD_MIRROR_SYNC_TOP,
    BD_MIRROR_SYNC_NONE,
} BdMirrorSync;

/* MirrorCopyMode */
typedef enum {
    BD_MIRROR_COPY_BACKGROUND,
    BD_MIRROR_COPY_WRITE_BLOCKING,
} BdMirrorCopyMode;

typedef struct {
    const char *job_id;          /* "" when omitted (QEMU's device name) */
    BdNode *bs;                  /* the source, a root node */
    BdNode *target;
    BdNode *replaces;            /* NULL: bs itself */
    BdMirrorSync sync;
    int64_t speed;
    uint32_t granularity;        /* 0: the target's default */
    int64_t buf_size;            /* 0: default */
    BdOnError on_source_error, on_target_error;
    const char *filter_node_name;
    BdMirrorCopyMode copy_mode;
    gboolean auto_finalize, auto_dismiss;
    /* drive-mirror: do not unmap zero areas of the target ('unmap'
     * false); the node that becomes the target's backing node at the
     * pivot (QEMU's MIRROR_SOURCE_BACKING_CHAIN), or NULL. */
    gboolean no_unmap;
    BdNode *target_backing;
    /* Active commit (QEMU's commit_active_start, a mode of this job):
     * 'target' is this node of bs's backing chain.  Only what bs's
     * chain holds above it is copied, it grows to bs's length if
     * shorter, it is made writable for the job, bs down to it are
     * claimed, and the job's type is "commit".  NULL: a mirror. */
    BdNode *commit_base;
} BdMirrorParams;

/* QEMU's mirror_start_job checks (buf-size, "Can't mirror node into
 * itself", filter node name, job id, speed, permissions), then the job
 * starts.  The other argument checks are the caller's. */
gboolean bd_mirror_start(const BdMirrorParams *p, GError **errp);

/* The 'mirror_top' filter driver the job inserts above the source:
 * internal, opened by driver pointer (bd_node_open_driver), never
 * registered. */
extern const BdDriver bd_mirror_top_driver;

/* Between the job (mirror.c) and its filter (mirror-top.c).  With a
 * hook installed (write-blocking mode), every guest write, write-zeroes
 * and discard through the filter is handed to it instead: the hook
 * writes the source (the filter's child) and the target and returns 0
 * or -errno.  Any thread.  NULL: requests pass through to the source. */
typedef enum {
    BD_MIRROR_OP_WRITE,
    BD_MIRROR_OP_ZEROES,
    BD_MIRROR_OP_DISCARD,
} BdMirrorOp;
typedef int (*BdMirrorTopHook)(void *opaque, BdMirrorOp op, uint64_t offset,
                               uint64_t bytes, const void *buf, int flags);
/* Main thread; the hook may be installed and removed while drained. */
void bd_mirror_top_set_hook(BdNode *filter, BdMirrorTopHook hook,
                            void *opaque);

#endif
