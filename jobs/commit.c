/* SPDX-License-Identifier: MIT */
/* The 'commit' block job (QEMU's block/commit.c).
 *
 *   intermediate:  bs -> commit_top -> top -> ... -> base
 *       copy what top..base's overlay hold into base; then bs's chain
 *       skips to base (the merged images are dropped) and the overlay's
 *       header names base.
 *
 * Active commit (top is the active layer, or has a writer) is a mode of
 * the mirror job, as in QEMU: bd_commit_active_start hands it over.
 *
 * The base is reopened read-write for the job and back to read-only
 * after it.
 *
 * Thread model: start and finalization on the main thread; commit_run
 * on the job thread and the copy engine's workers, with I/O only
 * through the job's entry handles.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <string.h>
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "graph/query.h"
#include "jobs/chain.h"
#include "jobs/commit.h"
#include "jobs/commit-int.h"
#include "jobs/copy-engine.h"
#include "jobs/mirror.h"

#define COMMIT_CHUNK (2 * 1024 * 1024)

typedef struct {
    BdJob common;
    BdNode *bs, *top, *base;     /* refs */
    BdNode *filter;              /* commit_top (our reference) or NULL */
    BdEntry *src;                /* on top: reads, allocation depth */
    BdEntry *dst;                /* on base: writes */
    int base_depth;              /* base's depth below top (top = 1) */
    char *backing_file;
    BdOnError on_error;
    gboolean base_read_only;
    gboolean chain_frozen;
    GPtrArray *claimed;          /* BdNode * (refs) busy until free */
    uint64_t len, cursor;        /* job thread: where next() looks */
} BdCommitJob;

/* --- copying (job thread) --- */

/* Allocated above the base: the depth of the layer that holds
 * [offset, offset + *n) (top = 1), 0 when nothing is to be copied. */
static int needs_copy(BdCommitJob *s, uint64_t offset, uint64_t *n)
{
    int depth = bd_entry_allocation_depth(s->src, offset, *n, n);

    if (depth < 0) {
        return depth;
    }
    return depth >= 1 && depth < s->base_depth ? depth : 0;
}

/* The node at 'depth' below the top (1: the top); the links down to
 * the base are frozen while the job runs. */
static BdNode *layer(BdCommitJob *s, int depth)
{
    BdNode *n = s->top;

    while (n && --depth > 0) {
        n = bd_node_backing(n);
    }
    return n ? n : s->top;
}

/* Copy [offset, offset + n) from the top's view into the base, block
 * status first: ranges that read as zeroes are written as zeroes
 * without a read, data goes through 'buf' in pieces of buf_size.
 * *error_in_source tells which side failed. */
static int copy_range(BdCommitJob *s, BdNode *holder, uint8_t *buf,
                      uint64_t buf_size, uint64_t offset, uint64_t n,
                      gboolean *error_in_source)
{
    return bd_copy_range_by_status(s->src, s->dst, holder, buf, buf_size,
                                   offset, n, 0, error_in_source);
}

static int grow_base(BdCommitJob *s, int64_t len)
{
    int64_t base_len = bd_entry_getlength(s->dst);

    if (base_len < 0) {
        return (int)base_len;
    }
    if (base_len < len) {
        return bd_entry_truncate(s->dst, (uint64_t)len);
    }
    return 0;
}

/* --- the first pass on the copy engine --- */

typedef struct {
    int query_error;         /* the allocation query failed here */
    int depth;               /* the layer holding the data */
} CommitChunk;

/* Job thread: the next range allocated above the base (QEMU's
 * commit_run), unallocated ones counted as done. */
static int first_next(void *opaque, BdCopyChunk *c)
{
    BdCommitJob *s = opaque;
    CommitChunk *cc = c->priv;

    while (s->cursor < s->len) {
        uint64_t n = s->len - s->cursor;
        int ret = needs_copy(s, s->cursor, &n);

        if (n == 0) {
            n = s->len - s->cursor;
        }
        if (ret == 0) {
            bd_job_progress_update(&s->common, n);
            s->cursor += n;
            continue;
        }
        cc->query_error = MIN(ret, 0);
        cc->depth = MAX(ret, 1);
        c->offset = s->cursor;
        c->bytes = MIN(n, (uint64_t)COMMIT_CHUNK);
        s->cursor += c->bytes;
        return 1;
    }
    return 0;
}

static int first_copy(void *opaque, BdCopyChunk *c, uint8_t *buf,
                      uint64_t buf_size)
{
    BdCommitJob *s = opaque;
    CommitChunk *cc = c->priv;

    if (cc->query_error) {
        int ret = cc->query_error;
        cc->query_error = 0;     /* a retry copies */
        c->is_read = TRUE;
        return ret;
    }
    return copy_range(s, layer(s, cc->depth), buf, buf_size, c->offset,
                      c->bytes, &c->is_read);
}

static void commit_done(void *opaque, BdCopyChunk *c, int ret,
                        BdErrorAction action)
{
    BdCommitJob *s = opaque;

    (void)action;
    if (ret == 0) {
        bd_job_progress_update(&s->common, c->bytes);
    }
}

static const BdCopyOps first_pass_ops = {
    .next = first_next,
    .copy = first_copy,
    .done = commit_done,
};

static BdCopyEngine *commit_engine(BdCommitJob *s, const BdCopyOps *ops)
{
    BdCopyEngineParams p = {
        .job = &s->common,
        .ops = ops,
        .opaque = s,
        .priv_size = sizeof(CommitChunk),
        .workers = bd_copy_engine_workers(0),
        .buf_size = COMMIT_CHUNK,
        .on_source_error = s->on_error,
        .on_target_error = s->on_error,
        .requeue_failed = TRUE,
        .ratelimit = TRUE,
    };

    return bd_copy_engine_new(&p);
}

static int commit_run(BdJob *job, GError **errp)
{
    BdCommitJob *s = (BdCommitJob *)job;
    int64_t len = bd_entry_getlength(s->src);
    int ret;

    (void)errp;
    if (len < 0) {
        return (int)len;
    }
    bd_job_progress_set_remaining(job, (uint64_t)len);
    ret = grow_base(s, len);
    if (ret < 0) {
        return ret;
    }
    s->len = (uint64_t)len;
    s->cursor = 0;
    g_autoptr(BdCopyEngine) e = commit_engine(s, &first_pass_ops);
    return bd_copy_engine_run(e);
}

/* --- main thread: finalization --- */

static void commit_unfreeze(BdCommitJob *s)
{
    if (s->chain_frozen) {
        bd_job_unfreeze_backing_chain(s->filter, s->base);
        s->chain_frozen = FALSE;
    }
}

/* Intermediate commit: the filter's parents skip to the base, whose
 * name goes into their headers (QEMU's bdrv_drop_intermediate). */
static int commit_drop_intermediate(BdCommitJob *s, GError **errp)
{
    g_autoptr(GPtrArray) overlays = g_ptr_array_new();
    /* The name QEMU's refreshed filename gives: json: where the base's
     * file name alone would not open it (a format over blkdebug rules). */
    g_autofree char *base_name = bd_node_query_filename(s->base);
    const char *name = s->backing_file ? s->backing_file : base_name;
    BdNode *explicit_top = s->top;
    gboolean update_inherits = FALSE;

    for (BdNode *n = s->base; n; n = n->inherits_from) {
        if (n == explicit_top) {
            update_inherits = TRUE;
            break;
        }
    }
    for (GList *l = s->filter->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent && c->parent->backing == c) {
            g_ptr_array_add(overlays, c->parent);
        }
    }
    if (!bd_node_replace(s->filter, s->base, errp)) {
        return -EPERM;
    }
    /* The format of the image below any filter over the base, as
     * QEMU's bdrv_drop_intermediate (a filter's name is no format). */
    BdNode *base_image = bd_chain_skip_filters(s->base);
    const char *fmt = (base_image ? base_image : s->base)->drv->name;
    for (guint i = 0; i < overlays->len; i++) {
        if (!bd_chain_change_backing_file(overlays->pdata[i], name, fmt,
                                          errp)) {
            return -EIO;
        }
    }
    if (update_inherits) {
        s->base->inherits_from = explicit_top->inherits_from;
    }
    return 0;
}

static int commit_prepare(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdCommitJob *s = (BdCommitJob *)job;
    g_autoptr(GError) err = NULL;
    int ret = 0;

    commit_unfreeze(s);
    g_clear_pointer(&s->dst, bd_entry_free);
    ret = commit_drop_intermediate(s, &err);
    if (ret < 0) {
        job->err = g_steal_pointer(&err);
    }
    return ret;
}

static void commit_abort(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    commit_unfreeze((BdCommitJob *)job);
}

static void commit_clean(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdCommitJob *s = (BdCommitJob *)job;
    g_autoptr(GError) err = NULL;

    commit_unfreeze(s);
    g_clear_pointer(&s->src, bd_entry_free);
    g_clear_pointer(&s->dst, bd_entry_free);
    if (s->filter) {
        /* Still in the graph unless pivoted or dropped: its parents go
         * back to the top (drained), and only then does it stop
         * reporting writes to the job. */
        BdChild *f = bd_node_filtered_child(s->filter);
        if (f && s->filter->parents &&
            !bd_node_replace(s->filter, f->node, &err)) {
            g_warning("job '%s': %s", job->id, err->message);
            g_clear_error(&err);
        }
        bd_chain_drop_filter(g_steal_pointer(&s->filter));
    }
    if (s->base_read_only &&
        !bd_chain_reopen_read_only(s->base, TRUE, &err)) {
        g_warning("job '%s': node '%s' stays read-write: %s", job->id,
                  s->base->node_name, err->message);
    }
    s->base_read_only = FALSE;
}

static void commit_free(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdCommitJob *s = (BdCommitJob *)job;

    commit_clean(job);
    /* As QEMU's job blockers, the claims last until the job is gone. */
    if (s->claimed) {
        for (guint i = 0; i < s->claimed->len; i++) {
            bd_chain_release(s->claimed->pdata[i]);
        }
        g_clear_pointer(&s->claimed, g_ptr_array_unref);
    }
    g_clear_pointer(&s->bs, bd_node_unref);
    g_clear_pointer(&s->top, bd_node_unref);
    g_clear_pointer(&s->base, bd_node_unref);
    g_free(s->backing_file);
}

static const BdJobDriver commit_job_driver = {
    .type = "commit",
    .instance_size = sizeof(BdCommitJob),
    .is_block_job = TRUE,
    .run = commit_run,
    .prepare = commit_prepare,
    .abort = commit_abort,
    .clean = commit_clean,
    .free = commit_free,
};

/* --- start --- */

static BdNode *open_filter(BdCommitJob *s, const char *node_name,
                           GError **errp)
{
    GVariantDict d;
    BdNode *filter;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "commit_top");
    g_variant_dict_insert(&d, "backing", "s", s->top->node_name);
    if (node_name) {
        g_variant_dict_insert(&d, "node-name", "s", node_name);
    }
    filter = bd_node_open_driver(&bd_commit_top_driver,
                                 g_variant_dict_end(&d), errp);
    if (!filter) {
        return NULL;
    }
    filter->implicit = node_name == NULL;
    /* QEMU opens an intermediate commit's filter without write access
     * (queries show it read-only); nothing writes through it. */
    filter->read_only = TRUE;
    return filter;
}

static gboolean commit_setup(BdCommitJob *s, const BdCommitParams *p,
                             GError **errp)
{
    uint64_t dst_perm = BD_PERM_WRITE | BD_PERM_CONSISTENT_READ;

    s->bs = bd_node_ref(p->bs);
    s->top = bd_node_ref(p->top);
    s->base = bd_node_ref(p->base);
    s->backing_file = g_strdup(p->backing_file);
    s->on_error = p->on_error;
    s->base_depth = 1;
    for (BdNode *n = p->top; n && n != p->base; n = bd_node_backing(n)) {
        s->base_depth++;
    }
    if (bd_node_getlength(p->base) < bd_node_getlength(p->top)) {
        dst_perm |= BD_PERM_RESIZE;
    }
    if (p->base->read_only) {
        if (!bd_chain_reopen_read_only(p->base, FALSE, errp)) {
            return FALSE;
        }
        s->base_read_only = TRUE;
    }
    s->filter = open_filter(s, p->filter_node_name, errp);
    if (!s->filter || !bd_node_replace(p->top, s->filter, errp)) {
        return FALSE;
    }
    if (!bd_job_freeze_backing_chain(s->filter, s->base, errp)) {
        return FALSE;
    }
    s->chain_frozen = TRUE;

    s->src = bd_entry_new(p->top, NULL, 0, BD_PERM_ALL, errp);
    if (!s->src) {
        return FALSE;
    }
    s->dst = bd_entry_new(p->base, NULL, dst_perm,
                          BD_PERM_CONSISTENT_READ | BD_PERM_WRITE_UNCHANGED,
                          errp);
    if (!s->dst) {
        return FALSE;
    }
    bd_entry_set_drain_notify(s->src, bd_job_drain_notify, s);
    bd_entry_set_drain_notify(s->dst, bd_job_drain_notify, s);
    s->claimed = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_node_unref);
    if (p->bs != p->top) {
        bd_chain_claim(p->bs, "commit");
        g_ptr_array_add(s->claimed, bd_node_ref(p->bs));
    }
    for (BdNode *n = p->top; n && n != bd_chain_next(p->base);
         n = bd_chain_next(n)) {
        bd_chain_claim(n, "commit");
        g_ptr_array_add(s->claimed, bd_node_ref(n));
    }
    return TRUE;
}

static gboolean start(const BdCommitParams *p, GError **errp)
{
    BdCommitJob *s;

    if (p->speed < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return FALSE;
    }
    s = (BdCommitJob *)bd_job_create(&commit_job_driver,
                                     p->job_id ? p->job_id : "",
                                     p->auto_finalize, p->auto_dismiss,
                                     NULL, errp);
    if (!s) {
        return FALSE;
    }
    if (!commit_setup(s, p, errp)) {
        commit_clean(&s->common);
        bd_job_early_fail(&s->common);
        return FALSE;
    }
    if (p->speed) {
        bd_job_set_speed(&s->common, p->speed, NULL);
    }
    bd_job_start(&s->common);
    return TRUE;
}

gboolean bd_commit_start(const BdCommitParams *p, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (bd_chain_skip_filters(p->top) == bd_chain_skip_filters(p->base)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid files for merge: top and base are the same");
        return FALSE;
    }
    return start(p, errp);
}

/* QEMU's commit_active_start: a mirror of top into base in background
 * mode whose pivot moves top's users onto the base. */
gboolean bd_commit_active_start(const BdCommitParams *p, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdMirrorParams m = {
        .job_id = p->job_id ? p->job_id : "",
        .bs = p->top,
        .target = p->base,
        .commit_base = p->base,
        .sync = BD_MIRROR_SYNC_FULL,
        .speed = p->speed,
        .on_source_error = p->on_error,
        .on_target_error = p->on_error,
        .filter_node_name = p->filter_node_name,
        .copy_mode = BD_MIRROR_COPY_BACKGROUND,
        .auto_finalize = p->auto_finalize,
        .auto_dismiss = p->auto_dismiss,
    };

    return bd_mirror_start(&m, errp);
}
