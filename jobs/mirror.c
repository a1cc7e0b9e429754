/* SPDX-License-Identifier: MIT */
/* The 'mirror' block job (QEMU's block/mirror.c, blockdev-mirror).
 *
 *   users -> mirror_top -> source (anonymous dirty bitmap) ...
 *   job:  src entry on the source (reads), dst entry on the target
 *
 * The job marks what the sync mode asks for (full: what the chain has
 * allocated, or what the target does not already read as zeroes; top:
 * what the source's own layer holds; none: nothing), then copies dirty
 * chunks until none is left and goes 'ready'; the bitmap keeps
 * recording guest writes (background mode), or the filter writes the
 * target synchronously (write-blocking mode).  At the end, with the
 * users drained, the rest is copied; job-complete then moves the users
 * onto the target (or the 'replaces' node's users), a soft cancel in
 * 'ready' leaves the target in sync and the graph as it was.
 *
 * Active commit is a mode of this job, as in QEMU: the target is a node
 * of the source's backing chain (the base), the job copies only what
 * lies above it, and its type is "commit".
 *
 * Thread model: start, verbs and finalization on the main thread;
 * mirror_run on the job thread; the write-blocking hook on the writing
 * threads.  The range lock serializes a hook write with a copy of the
 * same chunks; 'lock' (a leaf) guards should_complete.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <string.h>
#include "graph/bitmap.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "jobs/chain.h"
#include "jobs/copy-engine.h"
#include "jobs/mirror.h"

#define MIRROR_MAX_CHUNK   (1024 * 1024)
#define MIRROR_DEFAULT_BUF (16 * 1024 * 1024)
#define MIRROR_IDLE_NS     (50 * 1000 * 1000ll)
#define MIRROR_DRAINED_MAX (16 * 1024 * 1024)

typedef struct {
    BdJob common;
    BdNode *bs, *target, *replaces;   /* refs; replaces may be NULL */
    BdNode *target_backing;           /* ref or NULL (drive-mirror) */
    int zero_flags;                   /* BD_REQ_MAY_UNMAP or 0 */
    BdNode *filter;                   /* our reference, or NULL */
    BdEntry *src, *dst;
    BdDirtyBitmap *bitmap;            /* on bs */
    uint32_t granularity;
    uint64_t chunk;                   /* bytes per copy step */
    uint64_t buf_size;                /* bytes in flight at most */
    unsigned workers;
    uint64_t len;                     /* job thread: the source's */
    uint64_t cursor;                  /* job thread: where next looks */
    BdMirrorSync sync;
    BdMirrorCopyMode copy_mode;
    BdOnError on_source_error, on_target_error;
    gboolean frozen, inserted;
    GPtrArray *claimed;               /* BdNode * (refs) claimed by us */
    BdReqList inflight;               /* copies and write-blocking writes */
    BdNode *commit_base;              /* active commit: the target; ref */
    gboolean base_read_only;          /* active commit: reopened r/w */

    BdMutex lock;
    gboolean should_complete BD_GUARDED_BY(lock); /* job-complete seen */
    gboolean ready;                   /* job thread only */
} BdMirrorJob;

/* --- copying (workers; the main thread in prepare) --- */

/* Copy [offset, offset + n), whose bits the caller cleared (a write
 * after that marks them again) and which it entered in s->inflight.
 * Block status first: zero ranges of the source are written as zeroes
 * without a read, data goes through 'buf' in pieces of buf_size.  On
 * failure the bits are set again and *in_source says which side. */
static int copy_claimed(BdMirrorJob *s, uint8_t *buf, uint64_t buf_size,
                        uint64_t offset, uint64_t n, gboolean *in_source)
{
    int ret = bd_copy_range_by_status(s->src, s->dst, NULL, buf, buf_size,
                                      offset, n, s->zero_flags, in_source);

    if (ret < 0) {
        bd_dirty_bitmap_set(s->bitmap, offset, n);
    }
    return ret;
}

/* Enter [offset, offset + n) in s->inflight (after any earlier copy or
 * write-blocking write of it) and clear its bits. */
static void claim(BdMirrorJob *s, BdReq *req, uint64_t offset, uint64_t n)
{
    bd_req_begin(&s->inflight, req, offset, n, TRUE);
    bd_dirty_bitmap_reset(s->bitmap, offset, n);
}

/* Does the target already read zeroes at [offset, offset + *n)? */
static gboolean target_reads_zero(BdMirrorJob *s, uint64_t offset,
                                  uint64_t *n)
{
    int st = bd_entry_block_status(s->dst, offset, *n, n);

    return st >= 0 && (st & BD_BLOCK_ZERO);
}

/* QEMU's mirror_dirty_init: mark what the sync mode has to copy. */
static int mirror_dirty_init(BdMirrorJob *s, uint64_t len)
{
    BdNode *base = s->commit_base ? s->commit_base
                   : s->sync == BD_MIRROR_SYNC_TOP ? bd_chain_next(
                       bd_chain_skip_filters(s->bs)) : NULL;

    if (s->sync == BD_MIRROR_SYNC_NONE) {
        return 0;
    }
    for (uint64_t offset = 0, n; offset < len; offset += n) {
        int ret;

        if (bd_job_is_cancelled(&s->common)) {
            return 0;
        }
        n = MIN((uint64_t)MIRROR_MAX_CHUNK * 64, len - offset);
        /* Through the source's handle: a reopen below waits for it. */
        bd_entry_begin(s->src);
        ret = bd_chain_is_allocated_above(s->bs, base, FALSE, offset, n,
                                          &n);
        bd_entry_end(s->src);
        if (ret < 0) {
            return ret;
        }
        if (n == 0) {
            n = len - offset;
        }
        if (ret == 0 && s->sync == BD_MIRROR_SYNC_FULL && !s->commit_base) {
            if (!target_reads_zero(s, offset, &n)) {
                ret = 1;    /* the target must become zero there */
            } else {
                /* Already zero: done, and counted as QEMU counts its
                 * zeroing of the whole target. */
                bd_job_progress_update(&s->common, n);
            }
        }
        if (ret) {
            bd_dirty_bitmap_set(s->bitmap, offset, n);
        }
    }
    return 0;
}

static gboolean complete_requested(BdMirrorJob *s)
{
    gboolean c;

    bd_mutex_lock(&s->lock);
    c = s->should_complete;
    bd_mutex_unlock(&s->lock);
    return c;
}

/* Nothing dirty: flush and go ready once.  Returns 1 when the loop
 * should end, 0 to go on, -errno when a flush error ends the job. */
static int mirror_idle(BdMirrorJob *s)
{
    BdJob *job = &s->common;

    if (!s->ready) {
        int ret = bd_entry_flush(s->dst);
        if (ret < 0) {
            if (bd_job_error_action(job, s->on_target_error, FALSE, -ret) ==
                BD_ERROR_ACTION_REPORT) {
                return ret;
            }
            bd_job_sleep(job, MIRROR_IDLE_NS);
            return 0;
        }
        s->ready = TRUE;
        bd_job_transition_to_ready(job);
    }
    if (complete_requested(s)) {
        return 1;    /* the rest is copied drained, in prepare */
    }
    bd_job_sleep(job, MIRROR_IDLE_NS);
    return 0;
}

/* --- the copy engine's callbacks --- */

/* Job thread: the next dirty area from the cursor, claimed; 0 when
 * none is left or the loop should stop for a completion or cancel. */
static int mirror_next(void *opaque, BdCopyChunk *c)
{
    BdMirrorJob *s = opaque;
    BdJob *job = &s->common;
    uint64_t start, n;
    uint64_t dirty = bd_dirty_bitmap_count(s->bitmap);

    bd_job_progress_set_remaining(job, dirty);
    if (s->ready && bd_job_cancel_requested(job)) {
        return 0;
    }
    /* Completing under a steady write load: a little left is copied
     * drained, in prepare, so that the job always converges. */
    if (s->ready && complete_requested(s) && dirty <= MIRROR_DRAINED_MAX) {
        return 0;
    }
    if (!bd_dirty_bitmap_next_dirty_area(s->bitmap, s->cursor, s->len,
                                         s->chunk, &start, &n) &&
        !bd_dirty_bitmap_next_dirty_area(s->bitmap, 0, s->len, s->chunk,
                                         &start, &n)) {
        return 0;
    }
    s->cursor = start + n;
    claim(s, c->priv, start, n);
    c->offset = start;
    c->bytes = n;
    return 1;
}

static int mirror_copy(void *opaque, BdCopyChunk *c, uint8_t *buf,
                       uint64_t buf_size)
{
    BdMirrorJob *s = opaque;
    int ret = copy_claimed(s, buf, buf_size, c->offset, c->bytes,
                           &c->is_read);

    bd_req_end(&s->inflight, c->priv);
    return ret;
}

static void mirror_done(void *opaque, BdCopyChunk *c, int ret,
                        BdErrorAction action)
{
    BdMirrorJob *s = opaque;

    if (ret == 0) {
        bd_job_progress_update(&s->common, c->bytes);
    } else if (action == BD_ERROR_ACTION_IGNORE) {
        /* Marked again: the engine comes back to it, not at once. */
        bd_job_sleep(&s->common, MIRROR_IDLE_NS);
    }
}

static const BdCopyOps mirror_copy_ops = {
    .next = mirror_next,
    .copy = mirror_copy,
    .done = mirror_done,
};

static int mirror_loop(BdMirrorJob *s)
{
    BdJob *job = &s->common;
    BdCopyEngineParams p = {
        .job = job,
        .ops = &mirror_copy_ops,
        .opaque = s,
        .priv_size = sizeof(BdReq),
        .workers = s->workers,
        .buf_size = s->chunk,
        .max_bytes = s->buf_size,
        .on_source_error = s->on_source_error,
        .on_target_error = s->on_target_error,
        .ratelimit = TRUE,
    };
    g_autoptr(BdCopyEngine) e = bd_copy_engine_new(&p);

    for (;;) {
        int ret;

        bd_job_progress_set_remaining(job, bd_dirty_bitmap_count(s->bitmap));
        ret = bd_copy_engine_run(e);

        if (ret < 0) {
            return ret;
        }
        if (bd_job_is_cancelled(job) ||
            (s->ready && bd_job_cancel_requested(job))) {
            return 0;
        }
        if (s->ready && complete_requested(s) &&
            bd_dirty_bitmap_count(s->bitmap) <= MIRROR_DRAINED_MAX) {
            return 0;
        }
        if (bd_dirty_bitmap_count(s->bitmap) == 0) {
            ret = mirror_idle(s);
            if (ret != 0) {
                return MIN(ret, 0);
            }
        }
    }
}

static int mirror_run(BdJob *job, GError **errp)
{
    BdMirrorJob *s = (BdMirrorJob *)job;
    int64_t len = bd_entry_getlength(s->src);
    int64_t target_len = bd_entry_getlength(s->dst);
    int ret;

    if (len < 0 || target_len < 0) {
        return (int)MIN(len, target_len);
    }
    if (s->commit_base && target_len < len) {
        /* The base takes everything above it: it grows (QEMU's
         * mirror_run for a commit). */
        ret = bd_entry_truncate(s->dst, (uint64_t)len);
        if (ret < 0) {
            return ret;
        }
    } else if (len != target_len && !s->commit_base) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Source and target image have different sizes");
        return -EINVAL;
    }
    s->len = (uint64_t)len;
    ret = mirror_dirty_init(s, (uint64_t)len);
    if (ret < 0 || bd_job_is_cancelled(job)) {
        return ret;
    }
    return mirror_loop(s);
}

/* --- write-blocking mode (writing threads) --- */

static int mirror_write_hook(void *opaque, BdMirrorOp op, uint64_t offset,
                             uint64_t bytes, const void *buf, int flags)
{
    BdMirrorJob *s = opaque;
    uint64_t g = s->granularity;
    uint64_t a0 = offset / g * g;
    uint64_t a1 = (offset + bytes + g - 1) / g * g;
    BdReq req;
    int ret, tret;

    bd_req_begin(&s->inflight, &req, a0, a1 - a0, TRUE);
    switch (op) {
    case BD_MIRROR_OP_WRITE:
        ret = bd_node_pwrite(s->bs, offset, bytes, buf, flags);
        tret = ret < 0 ? ret :
               bd_entry_pwrite(s->dst, offset, bytes, buf,
                               flags & BD_REQ_FUA);
        break;
    case BD_MIRROR_OP_ZEROES:
        ret = bd_node_pwrite_zeroes(s->bs, offset, bytes, flags);
        tret = ret < 0 ? ret :
               bd_entry_pwrite_zeroes(s->dst, offset, bytes,
                                      flags & BD_REQ_MAY_UNMAP);
        break;
    default:
        /* The source's bitmap marked the range: the job copies it. */
        ret = bd_node_pdiscard(s->bs, offset, bytes);
        tret = -EAGAIN;
        break;
    }
    if (tret == 0) {
        /* Whole chunks written to both sides are in sync. */
        uint64_t c0 = (offset + g - 1) / g * g;
        uint64_t c1 = (offset + bytes) / g * g;
        if (c1 > c0) {
            bd_dirty_bitmap_reset(s->bitmap, c0, c1 - c0);
        }
    }
    bd_req_end(&s->inflight, &req);
    return ret;
}

/* --- main thread: verbs --- */

static gboolean mirror_complete(BdJob *job, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdMirrorJob *s = (BdMirrorJob *)job;

    if (!bd_job_is_ready(job)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The active block job '%s' cannot be completed",
                    job->id);
        return FALSE;
    }
    bd_mutex_lock(&s->lock);
    s->should_complete = TRUE;
    bd_mutex_unlock(&s->lock);
    bd_job_enter(job);
    return TRUE;
}

/* Before 'ready' every cancel is a forced one (QEMU's mirror_cancel). */
static gboolean mirror_cancel(BdJob *job, gboolean force)
{
    BD_GLOBAL_STATE_CODE();

    return force || !bd_job_is_ready(job);
}

/* --- main thread: finalization --- */

static void mirror_unfreeze(BdMirrorJob *s)
{
    if (s->frozen) {
        bd_job_unfreeze_backing_chain(s->filter, s->commit_base
                                                 ? s->commit_base : s->bs);
        s->frozen = FALSE;
    }
}

/* With the users drained: copy what is still dirty and flush. */
static int mirror_final_sync(BdMirrorJob *s)
{
    g_autofree uint8_t *buf = g_malloc(s->chunk);
    int64_t len = bd_entry_getlength(s->src);
    uint64_t start, n;
    int ret = 0;

    if (len < 0) {
        return (int)len;
    }
    bd_job_progress_set_remaining(&s->common,
                                  bd_dirty_bitmap_count(s->bitmap));
    while (ret >= 0 &&
           bd_dirty_bitmap_next_dirty_area(s->bitmap, 0, (uint64_t)len,
                                           s->chunk, &start, &n)) {
        gboolean in_source;
        BdReq req;

        claim(s, &req, start, n);
        ret = copy_claimed(s, buf, s->chunk, start, n, &in_source);
        bd_req_end(&s->inflight, &req);
        if (ret >= 0) {
            /* The job thread has ended: the counters are ours. */
            bd_job_progress_update(&s->common, n);
        }
    }
    return ret < 0 ? ret : bd_entry_flush(s->dst);
}

/* Move the users onto the target (QEMU's mirror_exit_common). */
static gboolean mirror_pivot(BdMirrorJob *s, GError **errp)
{
    BdNode *from = s->replaces && s->replaces != s->bs ? s->replaces
                                                       : s->filter;

    bd_mirror_top_set_hook(s->filter, NULL, NULL);
    /* Our writer must not stand in the way of the target's new users. */
    g_clear_pointer(&s->dst, bd_entry_free);
    mirror_unfreeze(s);
    if (s->target_backing &&
        bd_node_backing(bd_chain_skip_filters(s->target)) !=
        s->target_backing &&
        !bd_chain_set_backing(bd_chain_skip_filters(s->target),
                              s->target_backing, errp)) {
        return FALSE;
    }
    return bd_node_replace(from, s->target, errp);
}

static int mirror_prepare(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdMirrorJob *s = (BdMirrorJob *)job;
    BdDrainSection *drain = bd_drained_begin(s->filter);
    g_autoptr(GError) err = NULL;
    int ret = mirror_final_sync(s);

    if (ret < 0) {
        g_set_error(&err, BD_ERROR, BD_ERROR_GENERIC, "%s",
                    g_strerror(-ret));
    } else if (complete_requested(s) && !bd_job_cancel_requested(job) &&
               !mirror_pivot(s, &err)) {
        ret = -EPERM;
    }
    bd_drained_end(drain);
    if (ret < 0) {
        job->err = g_steal_pointer(&err);
    }
    return ret;
}

static void mirror_clean(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdMirrorJob *s = (BdMirrorJob *)job;

    if (s->filter && s->inserted) {
        /* No hook call may be running when the target entry goes. */
        BdDrainSection *drain = bd_drained_begin(s->filter);
        bd_mirror_top_set_hook(s->filter, NULL, NULL);
        bd_drained_end(drain);
    }
    mirror_unfreeze(s);
    g_clear_pointer(&s->src, bd_entry_free);
    g_clear_pointer(&s->dst, bd_entry_free);
    if (s->bitmap) {
        g_clear_pointer(&s->bitmap, bd_dirty_bitmap_release);
    }
    if (s->filter) {
        if (s->inserted) {
            /* Still in the graph unless pivoted: its users go back to
             * the source. */
            bd_chain_drop_filter(g_steal_pointer(&s->filter));
        } else {
            g_clear_pointer(&s->filter, bd_node_unref);
        }
    }
    /* QEMU's mirror_exit_common drops the job's blockers here. */
    if (s->claimed) {
        for (guint i = 0; i < s->claimed->len; i++) {
            bd_chain_release(s->claimed->pdata[i]);
        }
        g_clear_pointer(&s->claimed, g_ptr_array_unref);
    }
    /* QEMU 7.2 leaves the base of an active commit that started
     * read-write, whatever the outcome. */
    if (s->base_read_only && !job->started) {
        g_autoptr(GError) err = NULL;
        if (!bd_chain_reopen_read_only(s->commit_base, TRUE, &err)) {
            g_warning("job '%s': node '%s' stays read-write: %s", job->id,
                      s->commit_base->node_name, err->message);
        }
    }
    s->base_read_only = FALSE;
}

static void mirror_free(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdMirrorJob *s = (BdMirrorJob *)job;

    mirror_clean(job);
    g_clear_pointer(&s->commit_base, bd_node_unref);
    g_clear_pointer(&s->bs, bd_node_unref);
    g_clear_pointer(&s->target, bd_node_unref);
    g_clear_pointer(&s->replaces, bd_node_unref);
    g_clear_pointer(&s->target_backing, bd_node_unref);
    bd_reqlist_destroy(&s->inflight);
    bd_mutex_destroy(&s->lock);
}

static const BdJobDriver mirror_job_driver = {
    .type = "mirror",
    .instance_size = sizeof(BdMirrorJob),
    .is_block_job = TRUE,
    .run = mirror_run,
    .complete = mirror_complete,
    .cancel = mirror_cancel,
    .prepare = mirror_prepare,
    .clean = mirror_clean,
    .free = mirror_free,
};

/* Active commit: the same job under the type QEMU gives it. */
static const BdJobDriver commit_active_job_driver = {
    .type = "commit",
    .instance_size = sizeof(BdMirrorJob),
    .is_block_job = TRUE,
    .run = mirror_run,
    .complete = mirror_complete,
    .cancel = mirror_cancel,
    .prepare = mirror_prepare,
    .clean = mirror_clean,
    .free = mirror_free,
};

/* --- start (main thread) --- */

static BdNode *open_filter(BdNode *bs, const char *node_name,
                           GError **errp)
{
    GVariantDict d;
    BdNode *filter;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "mirror_top");
    g_variant_dict_insert(&d, "backing", "s", bs->node_name);
    if (node_name) {
        g_variant_dict_insert(&d, "node-name", "s", node_name);
    }
    filter = bd_node_open_driver(&bd_mirror_top_driver,
                                 g_variant_dict_end(&d), errp);
    if (filter) {
        filter->implicit = node_name == NULL;
    }
    return filter;
}

/* The job's writer on the target.  An active commit's base is also
 * read by the source's chain, which lets it be written under it; it
 * may have to grow. */
static gboolean open_target(BdMirrorJob *s, const BdMirrorParams *p,
                            GError **errp)
{
    uint64_t perm = BD_PERM_WRITE;
    uint64_t shared = BD_PERM_WRITE_UNCHANGED;

    if (p->commit_base) {
        if (bd_node_getlength(p->commit_base) < bd_node_getlength(p->bs)) {
            perm |= BD_PERM_RESIZE;
        }
        shared |= BD_PERM_CONSISTENT_READ | BD_PERM_WRITE;
    }
    s->dst = bd_entry_new(p->target, NULL, perm, shared, errp);
    return s->dst != NULL;
}

static gboolean mirror_setup(BdMirrorJob *s, const BdMirrorParams *p,
                             GError **errp)
{
    uint64_t buf_size = p->buf_size ? (uint64_t)p->buf_size
                                    : MIRROR_DEFAULT_BUF;

    s->bs = bd_node_ref(p->bs);
    s->target = bd_node_ref(p->target);
    s->replaces = p->replaces ? bd_node_ref(p->replaces) : NULL;
    s->target_backing = p->target_backing ? bd_node_ref(p->target_backing)
                                          : NULL;
    s->commit_base = p->commit_base ? bd_node_ref(p->commit_base) : NULL;
    /* An active commit writes zeroes into the base as they are: the
     * base may have a backing file of its own. */
    s->zero_flags = p->no_unmap || p->commit_base ? 0 : BD_REQ_MAY_UNMAP;
    s->sync = p->sync;
    s->copy_mode = p->copy_mode;
    s->on_source_error = p->on_source_error;
    s->on_target_error = p->on_target_error;
    s->granularity = p->granularity ? p->granularity
                     : bd_dirty_bitmap_default_granularity(p->target);
    buf_size = (buf_size + s->granularity - 1) / s->granularity *
               s->granularity;
    s->chunk = MAX(MIN(buf_size, (uint64_t)MIRROR_MAX_CHUNK),
                   (uint64_t)s->granularity);
    /* buf-size bounds the bytes in flight (as QEMU's), so the workers
     * are as many chunks as fit, one at least. */
    s->buf_size = MAX(buf_size, s->chunk);
    s->workers = (unsigned)MIN((uint64_t)bd_copy_engine_default_workers(),
                               s->buf_size / s->chunk);

    s->bitmap = bd_dirty_bitmap_create(p->bs, s->granularity, NULL, errp);
    if (!s->bitmap) {
        return FALSE;
    }
    if (p->commit_base && p->commit_base->read_only) {
        if (!bd_chain_reopen_read_only(p->commit_base, FALSE, errp)) {
            return FALSE;
        }
        s->base_read_only = TRUE;
    }
    /* Anonymous: no QMP command reaches it; QEMU shows it not busy. */
    if (!bd_node_replace(p->bs, s->filter, errp)) {
        return FALSE;
    }
    s->inserted = TRUE;
    if (!bd_job_freeze_backing_chain(s->filter, p->commit_base
                                                ? p->commit_base : p->bs,
                                     errp)) {
        return FALSE;
    }
    s->frozen = TRUE;
    /* The job copies a fixed length: the source may not be resized. */
    s->src = bd_entry_new(p->bs, NULL, BD_PERM_CONSISTENT_READ,
                          BD_PERM_ALL & ~(uint64_t)BD_PERM_RESIZE, errp);
    if (!s->src) {
        return FALSE;
    }
    if (!open_target(s, p, errp)) {
        return FALSE;
    }
    s->claimed = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_node_unref);
    /* The filter is the job's main node in QEMU, the source linked to
     * the job: both report the job when someone tries to delete them. */
    bd_entry_set_job_link(s->src);
    bd_entry_set_drain_notify(s->src, bd_job_drain_notify, s);
    bd_entry_set_drain_notify(s->dst, bd_job_drain_notify, s);
    bd_chain_claim(s->filter, p->commit_base ? "commit" : "mirror");
    g_ptr_array_add(s->claimed, bd_node_ref(s->filter));
    if (p->commit_base) {
        for (BdNode *n = p->bs; n && n != bd_chain_next(p->commit_base);
             n = bd_chain_next(n)) {
            bd_chain_claim(n, "commit");
            g_ptr_array_add(s->claimed, bd_node_ref(n));
        }
    } else {
        bd_chain_claim(p->bs, "mirror");
        g_ptr_array_add(s->claimed, bd_node_ref(p->bs));
        bd_chain_claim(p->target, "mirror");
        g_ptr_array_add(s->claimed, bd_node_ref(p->target));
    }
    if (p->copy_mode == BD_MIRROR_COPY_WRITE_BLOCKING) {
        BdDrainSection *drain = bd_drained_begin(s->filter);
        bd_mirror_top_set_hook(s->filter, mirror_write_hook, s);
        bd_drained_end(drain);
    }
    return TRUE;
}

gboolean bd_mirror_start(const BdMirrorParams *p, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdMirrorJob *s;
    BdNode *filter;

    if (p->buf_size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter 'buf-size'");
        return FALSE;
    }
    if (bd_chain_skip_filters(p->bs) == bd_chain_skip_filters(p->target)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Can't mirror node into itself");
        return FALSE;
    }
    if (!p->commit_base &&
        bd_chain_contains(p->bs, bd_chain_skip_filters(p->target))) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot mirror to a filter on top of a node in the "
                    "source's backing chain");
        return FALSE;
    }
    filter = open_filter(p->bs, p->filter_node_name, errp);
    if (!filter) {
        return FALSE;
    }
    s = (BdMirrorJob *)bd_job_create(p->commit_base
                                     ? &commit_active_job_driver
                                     : &mirror_job_driver, p->job_id,
                                     p->auto_finalize, p->auto_dismiss,
                                     NULL, errp);
    if (!s) {
        bd_node_unref(filter);
        return FALSE;
    }
    s->filter = filter;
    bd_mutex_init(&s->lock);
    bd_reqlist_init(&s->inflight);
    if (p->speed < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
    }
    if (p->speed < 0 || !mirror_setup(s, p, errp)) {
        mirror_clean(&s->common);
        bd_job_early_fail(&s->common);
        return FALSE;
    }
    if (p->speed) {
        bd_job_set_speed(&s->common, p->speed, NULL);
    }
    bd_job_start(&s->common);
    return TRUE;
}
