/* SPDX-License-Identifier: MIT */
/* The 'backup' job: copies the clusters its copy bitmap marks from the
 * source to the target while a copy-before-write filter saves the old
 * data of every guest write first; bitmap sync modes as QEMU's.
 *
 * Thread model: backup_run runs on the job thread and only calls the
 * job-thread API, the copy engine and the filter's claim functions: the
 * job thread claims runs of marked clusters (bd_cbw_claim, inside the
 * filter's job bracket), the engine's workers copy and release them
 * (bd_cbw_copy_claimed).  Creation, commit/abort (the bitmap's fate),
 * clean (filter removal) and free run on the main thread after the
 * thread was joined.
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
#include "graph/main-thread.h"
#include "formats/copy-before-write.h"
#include "jobs/backup.h"
#include "jobs/chain.h"
#include "jobs/copy-engine.h"

/* Chunks: runs of marked clusters, as QEMU's block-copy cuts them: at
 * most 1 MiB (a cluster at least) while copying through a buffer, and
 * 16 MiB once a copy offload has worked; never more than max-chunk.
 * With a speed limit the first step of a job therefore copies 1 MiB, as
 * in QEMU.  A worker's buffer is at most BACKUP_BUF_MAX (longer runs of
 * data are copied through it piece by piece, zeroes need none). */
#define BACKUP_CHUNK_BUFFER  (1024 * 1024)
#define BACKUP_CHUNK_OFFLOAD (16 * 1024 * 1024)
#define BACKUP_BUF_MAX       (4 * 1024 * 1024)

typedef struct {
    BdJob common;
    BdNode *source, *target;     /* references */
    BdNode *filter;              /* the reference bd_cbw_append gave */
    BdCbw *cbw;
    BdEntry *drain_entry;        /* on the filter: drains reach the job */
    BdBackupSync sync;
    BdDirtyBitmap *sync_bitmap, *successor;
    BdBitmapSyncMode bitmap_mode;
    BdOnError on_source_error, on_target_error;
    uint64_t len;
    uint64_t max_chunk;          /* x-perf max-chunk in clusters; 0: none */
    unsigned workers;            /* x-perf max-workers, capped */
    uint64_t cursor;             /* job thread: where next() looks */
    gboolean bitmap_done, torn_down;
    gboolean claimed;            /* filter and target claimed */
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

/* --- the copy engine's callbacks --- */

/* Job thread: the next marked run from the cursor, claimed under the
 * filter's job bracket (a drain of the filter waits for it). */
/* The size of the next chunk (see BACKUP_CHUNK_BUFFER). */
static uint64_t backup_chunk(BdBackupJob *s)
{
    uint64_t cs = bd_cbw_cluster_size(s->cbw);
    uint64_t chunk = bd_cbw_copy_range_works(s->cbw) ? BACKUP_CHUNK_OFFLOAD
                                                     : BACKUP_CHUNK_BUFFER;

    chunk = MAX(chunk, cs);
    return s->max_chunk ? MIN(chunk, s->max_chunk) : chunk;
}

static int backup_next(void *opaque, BdCopyChunk *c)
{
    BdBackupJob *s = opaque;
    BdCbwClaim *claim = c->priv;
    uint64_t chunk = backup_chunk(s);

    bd_cbw_job_begin(s->cbw);
    if (!bd_cbw_claim(s->cbw, s->cursor, chunk, claim) &&
        (s->cursor == 0 || !bd_cbw_claim(s->cbw, 0, chunk, claim))) {
        /* A failed chunk marks its clusters again: the cursor starts
         * over once before the job calls the bitmap done. */
        bd_cbw_job_end(s->cbw);
        s->cursor = 0;
        return 0;
    }
    c->offset = claim->offset;
    c->bytes = claim->bytes;
    s->cursor = claim->offset + claim->bytes;
    return 1;
}

/* A worker: copy and release the claim (progress comes from the
 * filter, as for the copies guest writes make). */
static int backup_copy(void *opaque, BdCopyChunk *c, uint8_t *buf,
                       uint64_t buf_size)
{
    BdBackupJob *s = opaque;
    int ret = bd_cbw_copy_claimed(s->cbw, c->priv, buf, buf_size,
                                  &c->is_read);

    bd_cbw_job_end(s->cbw);
    return ret;
}

static void backup_done(void *opaque, BdCopyChunk *c, int ret,
                        BdErrorAction action)
{
    BdBackupJob *s = opaque;

    (void)action;
    if (ret < 0 && c->offset < s->cursor) {
        /* ignore / stop: the same region again (QEMU's retry) */
        s->cursor = c->offset;
    }
}

static const BdCopyOps backup_copy_ops = {
    .next = backup_next,
    .copy = backup_copy,
    .done = backup_done,
};

static int backup_loop(BdBackupJob *s)
{
    BdCopyEngineParams p = {
        .job = &s->common,
        .ops = &backup_copy_ops,
        .opaque = s,
        .priv_size = sizeof(BdCbwClaim),
        .workers = s->workers,
        .buf_size = MIN(MAX(backup_chunk(s),
                            (uint64_t)BACKUP_CHUNK_BUFFER),
                        (uint64_t)BACKUP_BUF_MAX),
        .on_source_error = s->on_source_error,
        .on_target_error = s->on_target_error,
        .ratelimit = TRUE,
    };
    g_autoptr(BdCopyEngine) e = bd_copy_engine_new(&p);

    s->cursor = 0;
    return bd_copy_engine_run(e);
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
    if (sync) {
        bd_dirty_bitmap_abdicate(bm);       /* B := S */
    } else {
        bd_dirty_bitmap_reclaim(bm);        /* B |= S */
    }
    s->successor = NULL;
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
    if (s->claimed) {
        /* QEMU's job blockers on the filter and the target go. */
        bd_chain_release(s->filter);
        bd_chain_release(s->target);
        s->claimed = FALSE;
    }
    if (s->filter) {
        bd_cbw_drop(g_steal_pointer(&s->filter));
        s->cbw = NULL;
    }
    g_clear_pointer(&s->source, bd_node_unref);
    g_clear_pointer(&s->target, bd_node_unref);
}

static void backup_commit(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    backup_sync_bitmap((BdBackupJob *)job, 0);
}

static void backup_abort(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    backup_sync_bitmap((BdBackupJob *)job, job->ret ? job->ret : -EIO);
}

static void backup_clean(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    backup_teardown((BdBackupJob *)job);
}

static void backup_free(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdBackupJob *s = (BdBackupJob *)job;

    backup_sync_bitmap(s, -ECANCELED);
    backup_teardown(s);
}

static const BdJobDriver backup_job_driver = {
    .type = "backup",
    .instance_size = sizeof(BdBackupJob),
    .is_block_job = TRUE,
    .idle_while_running = TRUE,
    .run = backup_run,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .free = backup_free,
};

/* --- creation --- */

static gboolean backup_check(const BdBackupParams *p, GError **errp)
{
    /* QEMU's order: the same node twice before its op blockers. */
    if (p->source == p->target) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Source and target cannot be the same");
        return FALSE;
    }
    /* QEMU's BACKUP_SOURCE/BACKUP_TARGET op blockers: another job's
     * nodes are refused. */
    if (!bd_chain_check_busy(p->source, errp) ||
        !bd_chain_check_busy(p->target, errp)) {
        return FALSE;
    }
    if (p->compress && !(p->target->drv->supported_write_flags &
                         BD_REQ_WRITE_COMPRESSED)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Compression is not supported for this drive %s", "");
        return FALSE;
    }
    /* As QEMU's op blockers: a node another job holds is busy, as
     * source or target. */
    if (!bd_chain_check_busy(p->source, errp) ||
        !bd_chain_check_busy(p->target, errp)) {
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

BdJob *bd_backup_job_create(const BdBackupParams *p, BdJobTxn *txn,
                            GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!backup_check(p, errp)) {
        return NULL;
    }
    /* Freeze the sync bitmap first, as QEMU does: a successor, linked
     * so that queries show the bitmap 'recording' through it, records
     * writes meanwhile.  Until the job owns it, a failure reclaims it. */
    BdDirtyBitmap *successor = NULL;
    if (p->bitmap &&
        !(successor = bd_dirty_bitmap_create_successor(p->bitmap, errp))) {
        return NULL;
    }
    BdCbwAppendOptions copts = {
        .filter_node_name = p->filter_node_name,
        .bitmap = p->sync == BD_BACKUP_SYNC_BITMAP ? p->bitmap : NULL,
        .skip_unallocated = p->sync == BD_BACKUP_SYNC_TOP,
        .compress = p->compress,
        .use_copy_range = p->use_copy_range,
    };
    BdNode *filter = bd_cbw_append(p->source, p->target, &copts, errp);
    if (!filter) {
        if (successor) {
            bd_dirty_bitmap_reclaim(p->bitmap);
        }
        return NULL;
    }
    BdCbw *cbw = bd_cbw_state(filter);
    uint64_t cs = bd_cbw_cluster_size(cbw);
    if (p->max_chunk && (uint64_t)p->max_chunk < cs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Required max-chunk (%" PRIi64 ") is less than backup "
                    "cluster size (%" PRIu64 ")", p->max_chunk, cs);
        bd_cbw_drop(filter);
        if (successor) {
            bd_dirty_bitmap_reclaim(p->bitmap);
        }
        return NULL;
    }
    BdBackupJob *s = (BdBackupJob *)bd_job_create(&backup_job_driver,
                                                  p->job_id, p->auto_finalize,
                                                  p->auto_dismiss, txn, errp);
    if (!s) {
        bd_cbw_drop(filter);
        if (successor) {
            bd_dirty_bitmap_reclaim(p->bitmap);
        }
        return NULL;
    }
    if (successor) {
        s->sync_bitmap = p->bitmap;
        s->successor = successor;
    }
    s->filter = filter;
    s->cbw = cbw;
    s->source = bd_node_ref(p->source);
    s->target = bd_node_ref(p->target);
    s->sync = p->sync;
    s->bitmap_mode = p->bitmap_mode;
    s->on_source_error = p->on_source_error;
    s->on_target_error = p->on_target_error;
    s->len = (uint64_t)bd_node_getlength(p->source);
    s->workers = bd_copy_engine_workers(p->max_workers);
    if (p->max_chunk) {
        s->max_chunk = MAX(cs, (uint64_t)p->max_chunk / cs * cs);
    }
    s->drain_entry = bd_entry_new(filter, NULL, 0, BD_PERM_ALL, errp);
    if (!s->drain_entry) {
        bd_job_early_fail(&s->common);
        return NULL;
    }
    if (p->speed && !bd_job_set_speed(&s->common, p->speed, errp)) {
        bd_job_early_fail(&s->common);
        return NULL;
    }
    /* QEMU links the filter (the job's main node) and the target to
     * the job, which blocks their deletion with the job's reason. */
    bd_entry_set_job_link(s->drain_entry);
    bd_entry_set_drain_notify(s->drain_entry, bd_job_drain_notify, s);
    bd_chain_claim(filter, "backup");
    bd_chain_claim(s->target, "backup");
    s->claimed = TRUE;
    bd_cbw_set_progress(cbw, backup_progress, s);
    /* Known before the command returns, as in QEMU, where the job's
     * coroutine sets it before job_start() returns; the job thread
     * refines it. */
    bd_job_progress_set_remaining(&s->common, s->sync == BD_BACKUP_SYNC_TOP
        ? s->len : bd_dirty_bitmap_count(bd_cbw_copy_bitmap(cbw)));
    return &s->common;
}
