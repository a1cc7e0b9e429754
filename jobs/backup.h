/* SPDX-License-Identifier: MIT */
/* The backup job (QEMU's block/backup.c): a point-in-time copy of a node
 * to a target through a copy-before-write filter, with bitmap sync modes.
 *
 * Thread model: creation and the finalization callbacks run on the main
 * thread; the copy loop on the job thread (see jobs/job.h).
 */
#ifndef BD_JOBS_BACKUP_H
#define BD_JOBS_BACKUP_H

#include "jobs/job.h"
#include "graph/bitmap.h"

/* MirrorSyncMode ('incremental' is 'bitmap' with on-success). */
typedef enum {
    BD_BACKUP_SYNC_TOP,
    BD_BACKUP_SYNC_FULL,
    BD_BACKUP_SYNC_NONE,
    BD_BACKUP_SYNC_BITMAP,
} BdBackupSync;

/* BitmapSyncMode */
typedef enum {
    BD_BITMAP_SYNC_ON_SUCCESS,
    BD_BITMAP_SYNC_NEVER,
    BD_BITMAP_SYNC_ALWAYS,
} BdBitmapSyncMode;

typedef struct {
    const char *job_id;               /* NULL: "Invalid job ID ''" */
    BdNode *source, *target;
    BdBackupSync sync;
    BdDirtyBitmap *bitmap;            /* NULL: none */
    BdBitmapSyncMode bitmap_mode;
    gboolean compress;
    int64_t speed;
    BdOnError on_source_error, on_target_error;
    gboolean auto_finalize, auto_dismiss;
    const char *filter_node_name;     /* NULL: implicit filter */
    int64_t max_workers;              /* BackupPerf; 1..INT_MAX */
    int64_t max_chunk;                /* 0: no limit */
    gboolean use_copy_range;          /* copy offload where it applies
                                       * (blockd's default: TRUE) */
} BdBackupParams;

/* backup_job_create(): QEMU's checks and messages, the filter inserted,
 * the sync bitmap frozen with a successor recording new writes.  The job
 * is created but not started (bd_job_start, or the transaction's commit).
 * Main thread. */
BdJob *bd_backup_job_create(const BdBackupParams *p, BdJobTxn *txn,
                            GError **errp);

#endif
