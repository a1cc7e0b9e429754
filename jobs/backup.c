/* SPDX-License-Identifier: MIT */
/* The 'backup' job: copies the clusters its copy bitmap marks from the
 * source to the target while a copy-before-write filter saves the old
 * data of every guest write first; bitmap sync modes as QEMU's.
 *
 * Thread model: backup_run runs on the job thread and only calls the
 * job-thread API, bd_cbw_copy() and the bitmap data functions.  Creation,
 * commit/abort (the bitmap's fate), clean (filter removal) and free run
 * on the main thread after the thread was joined.
 *
 *  sync bitmap B:  at start   B frozen (busy, not recording);
 *                             successor S records new writes
 *                  success or 'always':  B := S      (QEMU's abdicate)
 *                  failure or 'never':   B := B | S  (QEMU's reclaim)
 *                  failure and 'always': B |= what was left to copy
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <inttypes.h>
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "formats/copy-before-write.h"
#include "jobs/backup.h"

typedef struct {
    BdJob common;
    BdNode *source, *target;     /* references */
    BdNode *filter;              /* the reference bd_cbw_append gave */
    BdCbw *cbw;
    BdEntry *drain_entry;        /* on the filter: drains reach the job */
    BdBackupSync sync;
    BdDirtyBitmap *sync_bitmap, *successor;
    gboolean sync_bitmap_enabled;
    BdBitmapSyncMode bitmap_mode;
    BdOnError on_source_error, on_target_error;
    uint64_t len, chunk;
    gboolean bitmap_done, torn_down;
} BdBackupJob;

static void backup_progress(void *opaque, uint64_t n)
{
    bd_job_progress_update(opaque, n);
}

/* sync=top: unmark what the top layer does not allocate. */
static int backup_init_top(BdBackupJob *s)
{
    uint64_t offset = 0;

    while (offset < s->len) {
        uint64_t n = 0;
        int ret;

        if (bd_job_is_cancelled(&s->common)) {
            return 0;
        }
        bd_cbw_job_begin(s->cbw);
        ret = bd_cbw_reset_unallocated(s->cbw, offset, &n);
        bd_cbw_job_end(s->cbw);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bd_job_pause_point(&s->common);
    }
    return 0;
}

static int backup_loop(BdBackupJob *s)
{
    BdDirtyBitmap *cb = bd_cbw_copy_bitmap(s->cbw);
    uint64_t pos = 0;

    while (!bd_job_is_cancelled(&s->common)) {
        int64_t next = bd_dirty_bitmap_next_dirty(cb, pos, s->len);
        gboolean is_read = FALSE;
        int ret;

        if (next < 0) {
            return 0;
        }
        uint64_t end = MIN((uint64_t)next + s->chunk, s->len);
        bd_cbw_job_begin(s->cbw);
        ret = bd_cbw_copy(s->cbw, next, end - next, s->chunk, &is_read);
        bd_cbw_job_end(s->cbw);
        if (ret < 0) {
            BdOnError on = is_read ? s->on_source_error : s->on_target_error;
            if (bd_job_error_action(&s->common, on, is_read, -ret) ==
                BD_ERROR_ACTION_REPORT) {
                return ret;
            }
            /* ignore / stop: try the same region again (QEMU's retry) */
            pos = next;
            bd_job_pause_point(&s->common);
            continue;
        }
        bd_job_ratelimit_processed(&s->common, end - next);
        bd_job_ratelimit_sleep(&s->common);
        pos = end;
    }
    return 0;
}

/* The final flush of the target: its failure is a target write error
 * like any other, under on-target-error (a qcow2 target writes its
 * metadata back here), instead of failing the job whatever the policy. */
static int backup_flush_target(BdBackupJob *s)
{
    while (!bd_job_is_cancelled(&s->common)) {
        int ret = bd_node_flush(s->target);

        if (ret == 0) {
            return 0;
        }
        switch (bd_job_error_action(&s->common, s->on_target_error, FALSE,
                                    -ret)) {
        case BD_ERROR_ACTION_REPORT:
            return ret;
        case BD_ERROR_ACTION_IGNORE:
            return 0;
        default:
            bd_job_pause_point(&s->common);   /* stop: flush again */
        }
    }
    return 0;
}

static int backup_run(BdJob *job, GError **errp)
{
    BdBackupJob *s = (BdBackupJob *)job;
    int ret = 0;

    (void)errp;
    if (s->sync == BD_BACKUP_SYNC_TOP) {
        bd_job_progress_set_remaining(job, s->len);
        ret = backup_init_top(s);
        if (ret < 0) {
            return ret;
        }
    }
    bd_job_progress_set_remaining(job,
        bd_dirty_bitmap_count(bd_cbw_copy_bitmap(s->cbw)));
    if (s->sync == BD_BACKUP_SYNC_NONE) {
        /* The filter does all the work until the job is cancelled. */
        while (!bd_job_is_cancelled(job)) {
            bd_job_sleep(job, G_USEC_PER_SEC * 1000ll);
        }
        return 0;
    }
    ret = backup_loop(s);
    if (ret == 0 && !bd_job_is_cancelled(job)) {
        ret = backup_flush_target(s);
    }
    return ret;
}

/* Merge without the busy/read-only refusals meant for users. */
static void merge_into(BdDirtyBitmap *dst, BdDirtyBitmap *src)
{
    g_autoptr(GError) err = NULL;
    gboolean ro = bd_dirty_bitmap_readonly(dst);

    bd_dirty_bitmap_set_readonly(dst, FALSE);
    if (!bd_dirty_bitmap_merge(dst, src, NULL, &err)) {
        g_warning("backup: bitmap '%s': %s", bd_dirty_bitmap_name(dst),
                  err->message);
    }
    bd_dirty_bitmap_set_readonly(dst, ro);
}

/* QEMU's backup_cleanup_sync_bitmap(). */
static void backup_sync_bitmap(BdBackupJob *s, int ret)
{
    BdDirtyBitmap *bm = s->sync_bitmap;
    gboolean sync;

    if (!bm || s->bitmap_done) {
        return;
    }
    s->bitmap_done = TRUE;
    sync = (ret == 0 || s->bitmap_mode == BD_BITMAP_SYNC_ALWAYS) &&
           s->bitmap_mode != BD_BITMAP_SYNC_NEVER;
    bd_dirty_bitmap_set_busy(bm, FALSE);
    if (sync) {
        bd_dirty_bitmap_clear(bm);          /* abdicate: B := S */
    }
    merge_into(bm, s->successor);           /* reclaim: B |= S */
    bd_dirty_bitmap_release(s->successor);
    s->successor = NULL;
    bd_dirty_bitmap_set_enabled(bm, s->sync_bitmap_enabled);
    if (ret < 0 && s->bitmap_mode == BD_BITMAP_SYNC_ALWAYS && s->cbw) {
        merge_into(bm, bd_cbw_copy_bitmap(s->cbw));
    }
}

static void backup_teardown(BdBackupJob *s)
{
    if (s->torn_down) {
        return;
    }
    s->torn_down = TRUE;
    if (s->cbw) {
        bd_cbw_set_progress(s->cbw, NULL, NULL);
    }
    g_clear_pointer(&s->drain_entry, bd_entry_free);
    if (s->filter) {
        bd_cbw_drop(g_steal_pointer(&s->filter));
        s->cbw = NULL;
    }
    g_clear_pointer(&s->source, bd_node_unref);
    g_clear_pointer(&s->target, bd_node_unref);
}

static void backup_commit(BdJob *job)
{
    backup_sync_bitmap((BdBackupJob *)job, 0);
}

static void backup_abort(BdJob *job)
{
    backup_sync_bitmap((BdBackupJob *)job, job->ret ? job->ret : -EIO);
}

static void backup_clean(BdJob *job)
{
    backup_teardown((BdBackupJob *)job);
}

static void backup_free(BdJob *job)
{
    BdBackupJob *s = (BdBackupJob *)job;

    backup_sync_bitmap(s, -ECANCELED);
    backup_teardown(s);
}

static const BdJobDriver backup_job_driver = {
    .type = "backup",
    .instance_size = sizeof(BdBackupJob),
    .is_block_job = TRUE,
    .run = backup_run,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .free = backup_free,
};

/* --- creation --- */

static gboolean backup_check(const BdBackupParams *p, GError **errp)
{
    if (p->source == p->target) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Source and target cannot be the same");
        return FALSE;
    }
    if (p->compress && !(p->target->drv->supported_write_flags &
                         BD_REQ_WRITE_COMPRESSED)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Compression is not supported for this drive %s", "");
        return FALSE;
    }
    if (p->max_workers < 1 || p->max_workers > G_MAXINT) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "max-workers must be between 1 and %d", G_MAXINT);
        return FALSE;
    }
    if (p->max_chunk < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "max-chunk must be zero (which means no limit) or "
                    "positive");
        return FALSE;
    }
    if (p->bitmap && p->bitmap_mode != BD_BITMAP_SYNC_NEVER &&
        !bd_dirty_bitmap_check(p->bitmap, BD_BITMAP_DEFAULT, errp)) {
        return FALSE;
    }
    if (p->bitmap && bd_dirty_bitmap_busy(p->bitmap)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot create a successor for a bitmap that is in-use "
                    "by an operation");
        return FALSE;
    }
    if (bd_node_getlength(p->target) != bd_node_getlength(p->source)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Source and target image have different sizes");
        return FALSE;
    }
    return TRUE;
}

/* Freeze the sync bitmap; a successor records writes meanwhile. */
static gboolean backup_freeze_bitmap(BdBackupJob *s, BdDirtyBitmap *bm,
                                     GError **errp)
{
    s->successor = bd_dirty_bitmap_create(bd_dirty_bitmap_node(bm),
                                          bd_dirty_bitmap_granularity(bm),
                                          NULL, errp);
    if (!s->successor) {
        return FALSE;
    }
    s->sync_bitmap = bm;
    s->sync_bitmap_enabled = bd_dirty_bitmap_enabled(bm);
    bd_dirty_bitmap_set_enabled(s->successor, s->sync_bitmap_enabled);
    bd_dirty_bitmap_set_enabled(bm, FALSE);
    bd_dirty_bitmap_set_busy(bm, TRUE);
    return TRUE;
}

BdJob *bd_backup_job_create(const BdBackupParams *p, BdJobTxn *txn,
                            GError **errp)
{
    if (!backup_check(p, errp)) {
        return NULL;
    }
    BdCbwAppendOptions copts = {
        .filter_node_name = p->filter_node_name,
        .bitmap = p->sync == BD_BACKUP_SYNC_BITMAP ? p->bitmap : NULL,
        .skip_unallocated = p->sync == BD_BACKUP_SYNC_TOP,
        .compress = p->compress,
    };
    BdNode *filter = bd_cbw_append(p->source, p->target, &copts, errp);
    if (!filter) {
        return NULL;
    }
    BdCbw *cbw = bd_cbw_state(filter);
    uint64_t cs = bd_cbw_cluster_size(cbw);
    if (p->max_chunk && (uint64_t)p->max_chunk < cs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Required max-chunk (%" PRIi64 ") is less than backup "
                    "cluster size (%" PRIu64 ")", p->max_chunk, cs);
        bd_cbw_drop(filter);
        return NULL;
    }
    BdBackupJob *s = (BdBackupJob *)bd_job_create(&backup_job_driver,
                                                  p->job_id, p->auto_finalize,
                                                  p->auto_dismiss, txn, errp);
    if (!s) {
        bd_cbw_drop(filter);
        return NULL;
    }
    s->filter = filter;
    s->cbw = cbw;
    s->source = bd_node_ref(p->source);
    s->target = bd_node_ref(p->target);
    s->sync = p->sync;
    s->bitmap_mode = p->bitmap_mode;
    s->on_source_error = p->on_source_error;
    s->on_target_error = p->on_target_error;
    s->len = p->source->size;
    s->chunk = MAX(cs, (uint64_t)1024 * 1024);
    if (p->max_chunk) {
        s->chunk = MAX(cs, (uint64_t)p->max_chunk / cs * cs);
    }
    s->drain_entry = bd_entry_new(filter, NULL, 0, BD_PERM_ALL, errp);
    if (!s->drain_entry ||
        (p->bitmap && !backup_freeze_bitmap(s, p->bitmap, errp))) {
        bd_job_early_fail(&s->common);
        return NULL;
    }
    if (p->speed && !bd_job_set_speed(&s->common, p->speed, errp)) {
        bd_job_early_fail(&s->common);
        return NULL;
    }
    bd_cbw_set_progress(cbw, backup_progress, s);
    /* Known before the command returns, as in QEMU, where the job's
     * coroutine sets it before job_start() returns; the job thread
     * refines it. */
    bd_job_progress_set_remaining(&s->common, s->sync == BD_BACKUP_SYNC_TOP
        ? s->len : bd_dirty_bitmap_count(bd_cbw_copy_bitmap(cbw)));
    return &s->common;
}
