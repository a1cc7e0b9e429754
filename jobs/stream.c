/* SPDX-License-Identifier: MIT */
/* The 'stream' block job (QEMU's block/stream.c behaviour): data
 * allocated in the images between 'bs' and its base is pulled into
 * 'bs' through a copy-on-read filter; then 'bs' gets the base as its
 * backing node and the image header names it.
 *
 *   before:  parents -> bs -> int1 -> ... -> base_overlay -> base
 *   running: parents -> copy-on-read -> bs -> ... (links frozen down
 *            to base_overlay; the filter copies what guests read too)
 *   after:   parents -> bs -> base       (int1..base_overlay dropped)
 *
 * Thread model: start, prepare, abort, clean and free on the main
 * thread; stream_run on the job thread (allocation queries on 'bs',
 * through the job's 'top' handle) and the copy engine's workers (reads
 * through the filter's handle): all I/O goes through the job's two
 * entry handles, so that drained graph changes never race it.
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
#include "jobs/copy-engine.h"
#include "jobs/stream.h"

/* Chunks of allocated data per worker (the old loop's 512 KiB made a
 * request per half-MiB; larger runs cost fewer round trips). */
#define STREAM_CHUNK (2 * 1024 * 1024)

typedef struct {
    BdJob common;
    BdNode *bs;              /* ref */
    BdNode *base_overlay;    /* ref: lowest node copied from */
    BdNode *above_base;      /* ref: its link to the base is kept */
    BdNode *cor;             /* the filter (our reference), or NULL */
    BdEntry *blk;            /* on the filter: copying reads */
    BdEntry *top;            /* on bs: allocation depth queries */
    int overlay_depth;       /* base_overlay's depth below bs (bs = 1) */
    char *backing_file;
    BdOnError on_error;
    gboolean bs_read_only;   /* reopened read-write for the job */
    GPtrArray *claimed;      /* BdNode * (refs) marked busy until free */
    uint64_t len, cursor;    /* job thread: where next() looks */
} BdStreamJob;

/* --- job thread --- */

/* Whether [offset, offset + *n) must be copied: allocated below bs, at
 * most down to base_overlay.  *n is shortened to a uniform range. */
static int stream_needs_copy(BdStreamJob *s, uint64_t offset, uint64_t *n)
{
    int depth = bd_entry_allocation_depth(s->top, offset, *n, n);

    if (depth < 0) {
        return depth;
    }
    return depth > 1 && depth <= s->overlay_depth;
}

/* --- the copy engine's callbacks --- */

typedef struct {
    int query_error;         /* the allocation query failed here */
} StreamChunk;

/* Job thread: skip (and count) what needs no copy, hand out the next
 * allocated run, at most one chunk long. */
static int stream_next(void *opaque, BdCopyChunk *c)
{
    BdStreamJob *s = opaque;
    StreamChunk *sc = c->priv;

    while (s->cursor < s->len) {
        uint64_t n = s->len - s->cursor;
        int ret = stream_needs_copy(s, s->cursor, &n);

        if (n == 0) {
            n = s->len - s->cursor;
        }
        if (ret == 0) {
            bd_job_progress_update(&s->common, n);
            s->cursor += n;
            continue;
        }
        /* A failed query is a failed read of that range. */
        sc->query_error = MIN(ret, 0);
        c->offset = s->cursor;
        c->bytes = MIN(n, (uint64_t)STREAM_CHUNK);
        s->cursor += c->bytes;
        return 1;
    }
    return 0;
}

/* A worker: a read through the copy-on-read filter writes what it
 * read into bs. */
static int stream_copy(void *opaque, BdCopyChunk *c, uint8_t *buf,
                       uint64_t buf_size)
{
    BdStreamJob *s = opaque;
    StreamChunk *sc = c->priv;

    g_assert(c->bytes <= buf_size);
    c->is_read = TRUE;
    if (sc->query_error) {
        int ret = sc->query_error;
        sc->query_error = 0;     /* a retry asks the read */
        return ret;
    }
    return bd_entry_pread(s->blk, c->offset, c->bytes, buf, 0);
}

static void stream_done(void *opaque, BdCopyChunk *c, int ret,
                        BdErrorAction action)
{
    BdStreamJob *s = opaque;

    /* Done, or an error ignored: it counts (QEMU's stream). */
    if (ret == 0 || action == BD_ERROR_ACTION_IGNORE) {
        bd_job_progress_update(&s->common, c->bytes);
    }
}

static const BdCopyOps stream_copy_ops = {
    .next = stream_next,
    .copy = stream_copy,
    .done = stream_done,
};

static int stream_run(BdJob *job, GError **errp)
{
    BdStreamJob *s = (BdStreamJob *)job;
    int64_t len;
    int ret;

    (void)errp;
    if (s->bs == s->base_overlay) {
        return 0;           /* nothing to stream */
    }
    len = bd_entry_getlength(s->top);
    if (len < 0) {
        return (int)len;
    }
    bd_job_progress_set_remaining(job, (uint64_t)len);
    s->len = (uint64_t)len;
    s->cursor = 0;

    BdCopyEngineParams p = {
        .job = job,
        .ops = &stream_copy_ops,
        .opaque = s,
        .priv_size = sizeof(StreamChunk),
        .workers = bd_copy_engine_workers(0),
        .buf_size = STREAM_CHUNK,
        .on_source_error = s->on_error,
        .on_target_error = s->on_error,
        .requeue_failed = TRUE,
        .ignore_skips = TRUE,
        .ratelimit = TRUE,
    };
    g_autoptr(BdCopyEngine) e = bd_copy_engine_new(&p);

    ret = bd_copy_engine_run(e);
    /* The backing chain stays when an error was ignored. */
    return ret < 0 ? ret : bd_copy_engine_ignored_error(e);
}

/* --- main thread --- */

static void stream_drop_filter(BdStreamJob *s)
{
    g_clear_pointer(&s->blk, bd_entry_free);
    if (s->cor) {
        bd_chain_release(s->cor);
        bd_chain_drop_filter(g_steal_pointer(&s->cor));
    }
}

static int stream_prepare(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdStreamJob *s = (BdStreamJob *)job;
    g_autoptr(GError) err = NULL;
    BdNode *base, *unfiltered_base;
    g_autofree char *base_name = NULL;

    stream_drop_filter(s);     /* and with it the frozen links */
    if (!bd_node_backing(s->bs)) {
        return 0;
    }
    base = bd_chain_next(s->above_base);
    unfiltered_base = bd_chain_skip_filters(base);
    /* As queries show it: json: where the file name alone would not
     * open the base (QEMU's refreshed filename). */
    base_name = unfiltered_base ? bd_node_query_filename(unfiltered_base)
                                : NULL;
    if (!bd_chain_set_backing(s->bs, base, &err) ||
        !bd_chain_change_backing_file(
            s->bs,
            unfiltered_base ? (s->backing_file ? s->backing_file
                                               : base_name)
                            : NULL,
            unfiltered_base ? unfiltered_base->drv->name : NULL, &err)) {
        job->err = g_steal_pointer(&err);
        return -EPERM;
    }
    return 0;
}

static void release_claims(BdStreamJob *s)
{
    if (s->claimed) {
        for (guint i = 0; i < s->claimed->len; i++) {
            bd_chain_release(s->claimed->pdata[i]);
        }
        g_clear_pointer(&s->claimed, g_ptr_array_unref);
    }
}

static void stream_clean(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdStreamJob *s = (BdStreamJob *)job;
    g_autoptr(GError) err = NULL;

    stream_drop_filter(s);
    g_clear_pointer(&s->top, bd_entry_free);
    if (s->bs_read_only && !bd_chain_reopen_read_only(s->bs, TRUE, &err)) {
        g_warning("job '%s': node '%s' stays read-write: %s", job->id,
                  s->bs->node_name, err->message);
    }
    s->bs_read_only = FALSE;
}

static void stream_free(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdStreamJob *s = (BdStreamJob *)job;

    stream_clean(job);
    /* As QEMU's job blockers, the claims last until the job is gone. */
    release_claims(s);
    g_clear_pointer(&s->bs, bd_node_unref);
    g_clear_pointer(&s->base_overlay, bd_node_unref);
    g_clear_pointer(&s->above_base, bd_node_unref);
    g_free(s->backing_file);
}

static const BdJobDriver stream_job_driver = {
    .type = "stream",
    .instance_size = sizeof(BdStreamJob),
    .is_block_job = TRUE,
    .run = stream_run,
    .prepare = stream_prepare,
    .clean = stream_clean,
    .free = stream_free,
};

static GVariant *cor_options(const char *bs, const char *bottom,
                             const char *node_name)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "copy-on-read");
    g_variant_dict_insert(&d, "file", "s", bs);
    g_variant_dict_insert(&d, "bottom", "s", bottom);
    if (node_name) {
        g_variant_dict_insert(&d, "node-name", "s", node_name);
    }
    return g_variant_dict_end(&d);
}

/* Graph set-up once the job exists; on failure the job is failed early
 * and its free callback undoes what was done. */
static gboolean stream_setup(BdStreamJob *s, const BdStreamParams *p,
                             GError **errp)
{
    BdNode *bs = p->bs;

    s->bs = bd_node_ref(bs);
    if (p->bottom) {
        s->base_overlay = bd_node_ref(p->bottom);
        s->above_base = bd_node_ref(p->bottom);
    } else {
        BdNode *overlay = bd_chain_find_overlay(bs, p->base);
        BdNode *above = overlay;
        if (!overlay) {
            overlay = above = bs;
        }
        while (bd_chain_next(above) && bd_chain_next(above) != p->base) {
            above = bd_chain_next(above);
        }
        s->base_overlay = bd_node_ref(overlay);
        s->above_base = bd_node_ref(above);
    }
    s->overlay_depth = 1;
    for (BdNode *n = bs; n && n != s->base_overlay; n = bd_node_backing(n)) {
        s->overlay_depth++;
    }
    s->backing_file = g_strdup(p->backing_file);
    s->on_error = p->on_error;

    if (bs->read_only) {
        if (!bd_chain_reopen_read_only(bs, FALSE, errp)) {
            return FALSE;
        }
        s->bs_read_only = TRUE;
    }
    g_autoptr(GVariant) opts = g_variant_ref_sink(
        cor_options(bs->node_name, s->base_overlay->node_name,
                    p->filter_node_name));
    /* The filter freezes the chain from itself down to base_overlay
     * for as long as it exists (QEMU's). */
    s->cor = bd_chain_insert_filter(bs, opts, errp);
    if (!s->cor) {
        return FALSE;
    }

    /* The length is read once: nobody may resize under the job. */
    s->blk = bd_entry_new(s->cor, NULL, 0, BD_PERM_ALL & ~BD_PERM_RESIZE,
                          errp);
    s->top = s->blk ? bd_entry_new(bs, NULL, 0,
                                   BD_PERM_ALL & ~BD_PERM_RESIZE, errp)
                    : NULL;
    if (!s->top) {
        return FALSE;
    }
    /* QEMU links the top to the job (the filter has the job's
     * BlockBackend). */
    bd_entry_set_job_link(s->top);
    bd_entry_set_drain_notify(s->top, bd_job_drain_notify, s);
    bd_entry_set_drain_notify(s->blk, bd_job_drain_notify, s);
    s->claimed = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_node_unref);
    bd_chain_claim(s->cor, "stream");
    for (BdNode *n = bs; n && n != bd_chain_next(s->above_base);
         n = bd_chain_next(n)) {
        bd_chain_claim(n, "stream");
        g_ptr_array_add(s->claimed, bd_node_ref(n));
    }
    return TRUE;
}

gboolean bd_stream_start(const BdStreamParams *p, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdStreamJob *s;

    if (p->speed < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return FALSE;
    }
    s = (BdStreamJob *)bd_job_create(&stream_job_driver,
                                     p->job_id ? p->job_id : "",
                                     p->auto_finalize, p->auto_dismiss,
                                     NULL, errp);
    if (!s) {
        return FALSE;
    }
    if (!stream_setup(s, p, errp)) {
        stream_clean(&s->common);
        bd_job_early_fail(&s->common);
        return FALSE;
    }
    if (p->speed) {
        bd_job_set_speed(&s->common, p->speed, NULL);
    }
    bd_job_start(&s->common);
    return TRUE;
}
