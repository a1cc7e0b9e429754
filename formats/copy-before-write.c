/* SPDX-License-Identifier: MIT */
/* The 'copy-before-write' filter driver (QEMU's): before a write reaches
 * 'file', the old data of the clusters it touches is copied to 'target'
 * once; the backup job shares its copy bitmap (copy-before-write.h).
 * For image fleecing it also keeps the point-in-time view that a
 * 'snapshot-access' node reads (the snapshot API, QEMU's): regions a
 * guest write has copied are read from the target ('done' bitmap), the
 * rest from the source, and a guest write to a region waits for the
 * view's reads from the source there ('frozen_reads').  'access' says
 * what the view still offers: the copied set at the start, less what
 * its reader discarded.
 *
 * Thread model: open/close, append/drop and the drain hooks run on the
 * main thread.  Data callbacks run on any thread; the backup job calls
 * bd_cbw_copy() on its own thread.  The copies in flight are requests
 * in s->copies (graph/reqlist.h); its lock also covers the copy
 * bitmap's read-modify-write steps (find, reset, set back).  The
 * snapshot reads in flight are requests in s->frozen_reads, whose lock
 * covers the done and access bitmaps.  s->lock protects the counters
 * (quiesce, job, background copies) and the progress callback.  All
 * are leaf locks, never held together nor across I/O.
 *
 *   write [o, o+n) --> copy marked clusters of it (wait for any copy of
 *                      them in flight; with cbw-timeout, at most that
 *                      long) --> mark them done, wait for the view's
 *                      reads of them from file --> write to file
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/entry.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "formats/copy-before-write.h"

#define CBW_CLUSTER_DEFAULT (64 * 1024)
#define CBW_CHUNK_DEFAULT (1024 * 1024)

typedef enum { CBW_BREAK_GUEST_WRITE, CBW_BREAK_SNAPSHOT } CbwOnError;

struct BdCbw {
    BdChild *file, *target;
    BdDirtyBitmap *copy_bitmap;   /* on file's node; bit set: to copy */
    uint64_t cluster_size;
    uint64_t size;
    CbwOnError on_cbw_error;
    uint32_t cbw_timeout;         /* seconds; 0: none */
    gboolean skip_unallocated;    /* set before the filter goes live */
    int write_flags;              /* BD_REQ_WRITE_COMPRESSED or 0 */
    gboolean copy_range;          /* try copy offload (set before live) */
    gint copy_range_ok;           /* atomic: an offload has succeeded */

    BdReqList copies;             /* copies in flight */
    int snapshot_error;           /* atomic; break-snapshot: -errno */

    /* The snapshot view (see the top); its list's lock guards both. */
    BdReqList frozen_reads;       /* view reads from file in flight */
    BdDirtyBitmap *done_bitmap;   /* copied by guest writes: on target */
    BdDirtyBitmap *access_bitmap; /* still readable through the view */

    BdMutex lock;                 /* a leaf: guards what follows */
    GCond cond;                   /* quiesce, job idle */
    int quiesce BD_GUARDED_BY(lock);      /* drained: job waits */
    int job_active BD_GUARDED_BY(lock);   /* job chunks under way */
    int bg_copies BD_GUARDED_BY(lock);    /* timed copies still running */
    void (*progress)(void *opaque, uint64_t n) BD_GUARDED_BY(lock);
    void *progress_opaque BD_GUARDED_BY(lock);
};

static const char *const on_cbw_error_values[] = {
    [CBW_BREAK_GUEST_WRITE] = "break-guest-write",
    [CBW_BREAK_SNAPSHOT] = "break-snapshot",
    NULL };
static const BdSchemaType on_cbw_error_type = {
    .name = "OnCbwError", .kind = BD_SCHEMA_ENUM,
    .enum_values = on_cbw_error_values };

typedef struct {
    const char *node;
    const char *name;
} CbwBitmap;

static const BdSchemaField bitmap_fields[] = {
    { "node", &bd_schema_str, FALSE, BD_AT(CbwBitmap, node), .def.s = "" },
    { "name", &bd_schema_str, FALSE, BD_AT(CbwBitmap, name), .def.s = "" },
    { NULL } };
static const BdSchemaType bitmap_type = {
    .name = "BlockDirtyBitmap", .kind = BD_SCHEMA_OBJECT,
    .fields = bitmap_fields };

typedef struct {
    GVariant *file;
    GVariant *target;
    CbwBitmap bitmap;
    gboolean has_bitmap;
    CbwOnError on_cbw_error;
    guint64 cbw_timeout;
} CbwOptions;

/* QAPI BlockdevOptionsCbw. */
static const BdSchemaField cbw_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(CbwOptions, file) },
    { "target", &bd_schema_blockdev_ref, FALSE, BD_AT(CbwOptions, target) },
    { "bitmap", &bitmap_type, TRUE, BD_AT(CbwOptions, bitmap),
      BD_HAS(CbwOptions, bitmap) },
    { "on-cbw-error", &on_cbw_error_type, TRUE,
      BD_AT(CbwOptions, on_cbw_error), .def.i = CBW_BREAK_GUEST_WRITE },
    { "cbw-timeout", &bd_schema_uint32, TRUE,
      BD_AT(CbwOptions, cbw_timeout) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(CbwOptions, cbw_options)

/* --- the copy engine --- */

/* Report 'n' bytes copied to whoever follows the progress (backup). */
static void cbw_progress(BdCbw *s, uint64_t n)
{
    void (*fn)(void *opaque, uint64_t n);
    void *opaque;

    bd_mutex_lock(&s->lock);
    fn = s->progress;
    opaque = s->progress_opaque;
    bd_mutex_unlock(&s->lock);
    if (fn) {
        fn(opaque, n);
    }
}

/* Copy [start, start+len) piece by piece as block status splits it:
 * zeroes become write-zeroes, unallocated top-layer pieces are skipped
 * under skip_unallocated, data is read and written through 'buf'
 * (buf_size bytes; NULL: one of our own).  *done: bytes finished before
 * an error. */
static int copy_run(BdCbw *s, uint64_t start, uint64_t len, uint8_t *buf,
                    uint64_t buf_size, uint64_t *done, gboolean *is_read)
{
    g_autofree uint8_t *own = NULL;
    uint64_t pos = start, end = start + len;

    if (!buf) {
        buf_size = MIN(len, (uint64_t)CBW_CHUNK_DEFAULT);
    }
    while (pos < end) {
        uint64_t n = 0;
        int depth = 1;
        int st = bd_node_block_status_above(s->file->node, pos, end - pos,
                                            &n, &depth);
        int ret = 0;
        int64_t copied;

        if (st < 0 || n == 0) {
            st = BD_BLOCK_DATA;
            n = end - pos;
            depth = 1;
        }
        n = MIN(n, end - pos);
        if (s->skip_unallocated && depth != 1) {
            /* not in the top layer: nothing to copy */
        } else if (st & BD_BLOCK_ZERO) {
            uint64_t z = 0;

            /* A target that reads zeroes there already (a new raw
             * file's holes) is left alone: zeroing it would allocate
             * unwritten extents, which ext4 turns into written ones
             * next to later writes. */
            if (bd_node_reads_own_zeroes(s->target->node, pos, n, &z)) {
                n = z;
            } else {
                ret = bd_child_pwrite_zeroes(s->target, pos, n,
                                             BD_REQ_MAY_UNMAP);
                if (ret < 0) {
                    *is_read = FALSE;
                    return ret;
                }
            }
        } else if (s->copy_range &&
                   (copied = bd_node_copy_range(s->file->node,
                                                s->target->node, pos,
                                                n)) > 0) {
            n = MIN(n, (uint64_t)copied);   /* offloaded */
            if (!g_atomic_int_get(&s->copy_range_ok)) {
                g_atomic_int_set(&s->copy_range_ok, 1);
            }
        } else {
            /* Any failure of the offload: the read and write say which
             * side it was, or that it works this way. */
            n = MIN(n, buf_size);
            if (!buf) {
                buf = own = g_malloc(buf_size);
            }
            ret = bd_child_pread(s->file, pos, n, buf, 0);
            if (ret < 0) {
                *is_read = TRUE;
                return ret;
            }
            ret = bd_child_pwrite(s->target, pos, n, buf, s->write_flags);
            if (ret < 0) {
                *is_read = FALSE;
                return ret;
            }
        }
        pos += n;
        *done = pos - start;
    }
    return 0;
}

/* Under s->copies' lock: take the first marked run of [pos, end), at
 * most max_chunk bytes, out of the bitmap and into the copies in
 * flight.  FALSE when nothing is marked there. */
static gboolean claim_locked(BdCbw *s, uint64_t pos, uint64_t end,
                             uint64_t max_chunk, BdCbwClaim *claim)
    BD_REQUIRES(s->copies.lock)
{
    uint64_t start, len;

    if (!bd_dirty_bitmap_next_dirty_area(s->copy_bitmap, pos, end,
                                         max_chunk, &start, &len)) {
        return FALSE;
    }
    len = MIN(len, s->size - start);
    bd_dirty_bitmap_reset(s->copy_bitmap, start, len);
    bd_req_insert_locked(&s->copies, &claim->req, start, len, TRUE);
    claim->offset = start;
    claim->bytes = len;
    return TRUE;
}

static uint64_t chunk_limit(BdCbw *s, uint64_t max_chunk)
{
    uint64_t cs = s->cluster_size;

    max_chunk = max_chunk ? max_chunk / cs * cs
                          : MAX(cs, (uint64_t)CBW_CHUNK_DEFAULT);
    return MAX(max_chunk, cs);
}

gboolean bd_cbw_claim(BdCbw *s, uint64_t offset, uint64_t max_chunk,
                      BdCbwClaim *claim)
{
    uint64_t cs = s->cluster_size;
    gboolean found;

    max_chunk = chunk_limit(s, max_chunk);
    bd_reqlist_lock(&s->copies);
    /* Marked clusters are never in flight (a claim unmarks them under
     * this lock), so there is nothing to wait for. */
    found = offset < s->size &&
            claim_locked(s, offset / cs * cs, s->size, max_chunk, claim);
    bd_reqlist_unlock(&s->copies);
    return found;
}

int bd_cbw_copy_claimed(BdCbw *s, BdCbwClaim *claim, uint8_t *buf,
                        uint64_t buf_size, gboolean *is_read)
{
    uint64_t done = 0;
    int ret = g_atomic_int_get(&s->snapshot_error);

    if (ret == 0) {
        ret = copy_run(s, claim->offset, claim->bytes, buf, buf_size,
                       &done, is_read);
    } else {
        *is_read = TRUE;
    }
    bd_reqlist_lock(&s->copies);
    if (ret < 0) {
        bd_dirty_bitmap_set(s->copy_bitmap, claim->offset + done,
                            claim->bytes - done);
    }
    bd_req_remove_locked(&s->copies, &claim->req);
    bd_reqlist_unlock(&s->copies);
    if (done) {
        cbw_progress(s, done);
    }
    return ret;
}

int bd_cbw_copy(BdCbw *s, uint64_t offset, uint64_t bytes,
                uint64_t max_chunk, gboolean *is_read)
{
    uint64_t cs = s->cluster_size;
    uint64_t pos = offset / cs * cs;
    uint64_t end = MIN((offset + bytes + cs - 1) / cs * cs, s->size);
    gboolean dummy;

    if (!is_read) {
        is_read = &dummy;
    }
    max_chunk = chunk_limit(s, max_chunk);
    while (pos < end) {
        BdCbwClaim claim;
        int ret;

        bd_reqlist_lock(&s->copies);
        /* Someone copies part of our range: its old data is not on the
         * target yet, so neither a write nor our copy may go ahead. */
        if (bd_reqlist_overlaps_locked(&s->copies, pos, end - pos)) {
            bd_reqlist_wait_locked(&s->copies);
            bd_reqlist_unlock(&s->copies);
            continue;
        }
        ret = g_atomic_int_get(&s->snapshot_error);
        if (ret) {
            bd_reqlist_unlock(&s->copies);
            *is_read = TRUE;
            return ret;
        }
        if (!claim_locked(s, pos, end, max_chunk, &claim)) {
            bd_reqlist_unlock(&s->copies);
            break;
        }
        bd_reqlist_unlock(&s->copies);

        ret = bd_cbw_copy_claimed(s, &claim, NULL, 0, is_read);
        if (ret < 0) {
            return ret;
        }
        pos = claim.offset + claim.bytes;
    }
    return 0;
}

int bd_cbw_reset_unallocated(BdCbw *s, uint64_t offset, uint64_t *pnum)
{
    uint64_t cs = s->cluster_size, n = 0;
    int depth = 1;
    int st = bd_node_block_status_above(s->file->node, offset,
                                        s->size - offset, &n, &depth);

    if (st < 0) {
        return st;
    }
    if (n == 0) {
        n = s->size - offset;
    }
    *pnum = n;
    if (depth != 1) {
        /* Whole clusters only: a partly allocated one is copied. */
        uint64_t start = (offset + cs - 1) / cs * cs;
        uint64_t end = offset + n == s->size ? s->size
                                             : (offset + n) / cs * cs;
        if (end > start) {
            bd_reqlist_lock(&s->copies);
            bd_dirty_bitmap_reset(s->copy_bitmap, start, end - start);
            bd_reqlist_unlock(&s->copies);
        }
    }
    return 0;
}

void bd_cbw_job_begin(BdCbw *s)
{
    bd_mutex_lock(&s->lock);
    while (s->quiesce) {
        bd_cond_wait(&s->cond, &s->lock);
    }
    s->job_active++;
    bd_mutex_unlock(&s->lock);
}

void bd_cbw_job_end(BdCbw *s)
{
    bd_mutex_lock(&s->lock);
    s->job_active--;
    g_cond_broadcast(&s->cond);
    bd_mutex_unlock(&s->lock);
}

BdCbw *bd_cbw_state(BdNode *filter)
{
    return filter->opaque;
}

BdDirtyBitmap *bd_cbw_copy_bitmap(BdCbw *s)
{
    return s->copy_bitmap;
}

gboolean bd_cbw_copy_range_works(BdCbw *s)
{
    return g_atomic_int_get(&s->copy_range_ok) != 0;
}

uint64_t bd_cbw_cluster_size(BdCbw *s)
{
    return s->cluster_size;
}

void bd_cbw_set_progress(BdCbw *s, void (*fn)(void *opaque, uint64_t n),
                         void *opaque)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&s->lock);
    s->progress = fn;
    s->progress_opaque = opaque;
    bd_mutex_unlock(&s->lock);
}

/* --- the driver --- */

/* The target's cluster size from its query info, at least 64 KiB. */
static uint64_t target_cluster_size(BdNode *target)
{
    GVariantDict d;
    gint64 cs = 0;

    if (target->drv->query_image_info) {
        g_variant_dict_init(&d, NULL);
        target->drv->query_image_info(target, &d);
        if (!g_variant_dict_lookup(&d, "cluster-size", "x", &cs)) {
            cs = 0;
        }
        g_variant_dict_clear(&d);
    }
    if (cs <= CBW_CLUSTER_DEFAULT || (cs & (cs - 1))) {
        return CBW_CLUSTER_DEFAULT;
    }
    return (uint64_t)cs;
}

/* An anonymous bitmap of the filter's own: one bit per cluster of the
 * source, changed only by the filter (disabled: writes do not mark it).
 * As in QEMU (and so in queries), the copy bitmap lives on the source
 * node, the view's two on the filter itself. */
static BdDirtyBitmap *cluster_bitmap(BdCbw *s, BdNode *on, GError **errp)
{
    BdDirtyBitmap *bm = bd_dirty_bitmap_create(on, (uint32_t)s->cluster_size,
                                               NULL, errp);

    if (bm) {
        bd_dirty_bitmap_set_enabled(bm, FALSE);
    }
    return bm;
}

static gboolean cbw_init_bitmap(BdNode *node, BdCbw *s, const CbwOptions *o,
                                GError **errp)
{
    s->copy_bitmap = cluster_bitmap(s, s->file->node, errp);
    if (!s->copy_bitmap) {
        return FALSE;
    }
    if (!o->has_bitmap) {
        bd_dirty_bitmap_set(s->copy_bitmap, 0, s->size);
        return TRUE;
    }
    const char *bnode = o->bitmap.node;
    const char *bname = o->bitmap.name;
    BdNode *n = bd_node_find(bnode);
    if (!n) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s' not found", bnode);
        return FALSE;
    }
    BdDirtyBitmap *src = bd_dirty_bitmap_find(n, bname);
    if (!src) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Dirty bitmap '%s' not found", bname);
        return FALSE;
    }
    (void)node;
    return bd_dirty_bitmap_merge(s->copy_bitmap, src, NULL, errp);
}

/* The view starts with everything that is to be copied (QEMU's
 * access_bitmap), nothing of it on the target yet.  A backup job's
 * bitmap replaces the copy bitmap later, the view stays (as QEMU's). */
static gboolean cbw_init_view(BdNode *node, BdCbw *s, GError **errp)
{
    s->done_bitmap = cluster_bitmap(s, node, errp);
    if (!s->done_bitmap) {
        return FALSE;
    }
    s->access_bitmap = cluster_bitmap(s, node, errp);
    if (!s->access_bitmap) {
        return FALSE;
    }
    bd_dirty_bitmap_merge_internal(s->access_bitmap, s->copy_bitmap);
    return TRUE;
}

/* A target shorter than its source cannot take the old data of the
 * tail: a guest write there would break the snapshot without a word
 * (QEMU 7.2 aborts on it).  Refuse it up front. */
static gboolean cbw_check_target_size(BdCbw *s, GError **errp)
{
    uint64_t target_size = (uint64_t)bd_node_getlength(s->target->node);

    if (target_size < s->size) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The copy-before-write target '%s' is smaller than its "
                    "source '%s' (target size %" PRIu64 ", source size %"
                    PRIu64 ")", s->target->node->node_name,
                    s->file->node->node_name, target_size, s->size);
        return FALSE;
    }
    return TRUE;
}

static gboolean cbw_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(CbwOptions) o = { 0 };
    BdCbw *s = g_new0(BdCbw, 1);

    bd_schema_decode(cbw_options, options, &o);
    bd_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    bd_reqlist_init(&s->copies);
    bd_reqlist_init(&s->frozen_reads);
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                                 errp);
    if (!s->file) {
        return FALSE;
    }
    s->target = bd_node_open_child(node, o.target, "target", BD_CHILD_DATA,
                                   FALSE, errp);
    if (!s->target) {
        return FALSE;
    }
    s->on_cbw_error = o.on_cbw_error;
    s->cbw_timeout = (uint32_t)MIN(o.cbw_timeout, G_MAXUINT32);
    s->size = (uint64_t)bd_node_getlength(s->file->node);
    s->cluster_size = target_cluster_size(s->target->node);
    bd_node_set_size(node, s->size);
    return cbw_check_target_size(s, errp) &&
           cbw_init_bitmap(node, s, &o, errp) &&
           cbw_init_view(node, s, errp);
}

static void cbw_close(BdNode *node)
{
    BdCbw *s = node->opaque;

    if (!s) {
        return;
    }
    /* Copies that a guest write stopped waiting for still use s: let
     * the nodes below the target release them (a throttled target),
     * then wait. */
    bd_mutex_lock(&s->lock);
    if (s->bg_copies) {
        BdDrainSection *drain;

        bd_mutex_unlock(&s->lock);
        drain = bd_drained_begin(s->target->node);
        bd_mutex_lock(&s->lock);
        while (s->bg_copies) {
            bd_cond_wait(&s->cond, &s->lock);
        }
        bd_mutex_unlock(&s->lock);
        bd_drained_end(drain);
    } else {
        bd_mutex_unlock(&s->lock);
    }
    if (s->copy_bitmap) {
        bd_dirty_bitmap_release(s->copy_bitmap);
    }
    if (s->done_bitmap) {
        bd_dirty_bitmap_release(s->done_bitmap);
    }
    if (s->access_bitmap) {
        bd_dirty_bitmap_release(s->access_bitmap);
    }
    bd_reqlist_destroy(&s->frozen_reads);
    bd_reqlist_destroy(&s->copies);
    bd_mutex_destroy(&s->lock);
    g_cond_clear(&s->cond);
    g_free(s);
    node->opaque = NULL;
}

/* QEMU's cbw_child_perm: the target is written and shared (but not
 * resized); the source is a filtered child that, once the filter is in
 * use, lets nobody else write or resize it behind the filter's back. */
static void cbw_child_perm(BdNode *node, BdChild *child, BdChildRole role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared)
{
    if (!(role & BD_CHILD_FILTERED)) {
        *perm = BD_PERM_WRITE;
        *shared = BD_PERM_ALL & ~BD_PERM_RESIZE;
        return;
    }
    bd_default_child_perm(node, child, role, parent_perm, parent_shared,
                          perm, shared);
    if (node->parents) {
        if (parent_perm & BD_PERM_WRITE) {
            *perm |= BD_PERM_CONSISTENT_READ;
        }
        *shared &= ~(uint64_t)(BD_PERM_WRITE | BD_PERM_RESIZE);
    }
}

/* --- guest writes --- */

/* A copy run for a guest write under cbw-timeout: it goes on in the
 * background when the write stops waiting for it (QEMU's block-copy
 * does the same), so it is shared by the waiter and the worker. */
typedef struct {
    BdCbw *s;
    uint64_t offset, bytes;
    int ret;
    gboolean done;
    int refs;                     /* [s->lock] */
} CbwTimedCopy;

static void timed_copy_unref_locked(BdCbw *s, CbwTimedCopy *t)
    BD_REQUIRES(s->lock)
{
    if (--t->refs == 0) {
        g_free(t);
    }
}

static gpointer timed_copy_run(gpointer data)
{
    CbwTimedCopy *t = data;
    BdCbw *s = t->s;
    int ret = bd_cbw_copy(s, t->offset, t->bytes, 0, NULL);

    bd_mutex_lock(&s->lock);
    t->ret = ret;
    t->done = TRUE;
    s->bg_copies--;
    g_cond_broadcast(&s->cond);
    timed_copy_unref_locked(s, t);
    bd_mutex_unlock(&s->lock);
    return NULL;
}

/* Anything of [offset, offset+bytes) still to copy, or being copied? */
static gboolean copy_pending(BdCbw *s, uint64_t offset, uint64_t bytes)
{
    gboolean pending;

    bd_reqlist_lock(&s->copies);
    pending = bd_dirty_bitmap_next_dirty(s->copy_bitmap, offset,
                                         offset + bytes) != -1 ||
              bd_reqlist_overlaps_locked(&s->copies, offset, bytes);
    bd_reqlist_unlock(&s->copies);
    return pending;
}

/* bd_cbw_copy, but give up waiting after cbw-timeout: -ETIMEDOUT.  The
 * copy runs on a thread of its own (only when there is one to make): a
 * copy stuck behind a slow target must not hold a thread that other
 * work waits for. */
static int cbw_copy_timed(BdCbw *s, uint64_t offset, uint64_t bytes)
{
    CbwTimedCopy *t;
    GThread *thread;
    gint64 deadline = g_get_monotonic_time() +
                      (gint64)s->cbw_timeout * G_USEC_PER_SEC;
    int ret;

    if (!copy_pending(s, offset, bytes)) {
        return 0;
    }
    t = g_new0(CbwTimedCopy, 1);
    *t = (CbwTimedCopy){ .s = s, .offset = offset, .bytes = bytes,
                         .refs = 2 };
    bd_mutex_lock(&s->lock);
    s->bg_copies++;
    bd_mutex_unlock(&s->lock);
    thread = g_thread_try_new("cbw-copy", timed_copy_run, t, NULL);
    if (!thread) {
        timed_copy_run(t);      /* no thread: wait without a limit */
    } else {
        g_thread_unref(thread);
    }

    bd_mutex_lock(&s->lock);
    while (!t->done) {
        if (!bd_cond_wait_until(&s->cond, &s->lock, deadline)) {
            break;
        }
    }
    ret = t->done ? t->ret : -ETIMEDOUT;
    timed_copy_unref_locked(s, t);
    bd_mutex_unlock(&s->lock);
    return ret;
}

/* Save the old data of [offset, offset+bytes) before it changes; then
 * the view reads those clusters from the target, and no read of the
 * view from the source is left there. */
static int cbw_before_write(BdNode *node, uint64_t offset, uint64_t bytes)
{
    BdCbw *s = node->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t start = offset / cs * cs;
    uint64_t end = MIN((offset + bytes + cs - 1) / cs * cs, s->size);
    int ret;

    if (g_atomic_int_get(&s->snapshot_error) || start >= end) {
        return 0;    /* the snapshot is broken already: writes go on */
    }
    ret = s->cbw_timeout ? cbw_copy_timed(s, start, end - start)
                         : bd_cbw_copy(s, start, end - start, 0, NULL);
    if (ret < 0 && s->on_cbw_error == CBW_BREAK_GUEST_WRITE) {
        return ret;
    }

    bd_reqlist_lock(&s->frozen_reads);
    if (ret < 0) {
        if (g_atomic_int_compare_and_exchange(&s->snapshot_error, 0, ret)) {
            g_warning("node '%s': copy-before-write failed (%s); the "
                      "snapshot is broken", node->node_name,
                      g_strerror(-ret));
        }
    } else {
        bd_dirty_bitmap_set(s->done_bitmap, start, end - start);
    }
    while (bd_reqlist_overlaps_locked(&s->frozen_reads, start,
                                      end - start)) {
        bd_reqlist_wait_locked(&s->frozen_reads);
    }
    bd_reqlist_unlock(&s->frozen_reads);
    return 0;
}

/* --- the snapshot API (for snapshot-access) --- */

/* Where the view's [offset, offset+bytes) starts: on the target (TRUE)
 * or the source, for *pnum bytes.  A read from the source is entered
 * in frozen_reads ('req'; leave with snapshot_read_unlock) so that no
 * guest write changes it meanwhile.  -EACCES when the snapshot is
 * broken or part of the range is not (or no longer) in the view. */
static int snapshot_read_lock(BdCbw *s, uint64_t offset, uint64_t bytes,
                              uint64_t *pnum, gboolean *on_target,
                              BdReq *req)
{
    uint64_t end = offset + bytes;
    int64_t next;

    bd_reqlist_lock(&s->frozen_reads);
    if (g_atomic_int_get(&s->snapshot_error) ||
        bd_dirty_bitmap_next_zero(s->access_bitmap, offset, end) != -1) {
        bd_reqlist_unlock(&s->frozen_reads);
        return -EACCES;
    }
    *on_target = bd_dirty_bitmap_get(s->done_bitmap, offset);
    next = *on_target ? bd_dirty_bitmap_next_zero(s->done_bitmap, offset, end)
                      : bd_dirty_bitmap_next_dirty(s->done_bitmap, offset,
                                                   end);
    *pnum = (next < 0 ? end : (uint64_t)next) - offset;
    if (!*on_target) {
        bd_req_insert_locked(&s->frozen_reads, req, offset, *pnum, FALSE);
    }
    bd_reqlist_unlock(&s->frozen_reads);
    return 0;
}

static void snapshot_read_unlock(BdCbw *s, gboolean on_target, BdReq *req)
{
    if (!on_target) {
        bd_reqlist_lock(&s->frozen_reads);
        bd_req_remove_locked(&s->frozen_reads, req);
        bd_reqlist_unlock(&s->frozen_reads);
    }
}

static int cbw_pread_snapshot(BdNode *node, uint64_t offset, uint64_t bytes,
                              void *buf)
{
    BdCbw *s = node->opaque;
    char *p = buf;

    while (bytes) {
        uint64_t n;
        gboolean on_target;
        BdReq req;
        int ret = snapshot_read_lock(s, offset, bytes, &n, &on_target, &req);

        if (ret < 0) {
            return ret;
        }
        ret = bd_child_pread(on_target ? s->target : s->file, offset, n, p,
                             0);
        snapshot_read_unlock(s, on_target, &req);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

static int cbw_block_status_snapshot(BdNode *node, uint64_t offset,
                                     uint64_t bytes, uint64_t *pnum,
                                     uint64_t *map, BdNode **file)
{
    BdCbw *s = node->opaque;
    uint64_t n;
    gboolean on_target;
    BdReq req;
    int ret = snapshot_read_lock(s, offset, bytes, &n, &on_target, &req);

    if (ret < 0) {
        return ret;
    }
    ret = bd_node_block_status(on_target ? s->target->node : s->file->node,
                               offset, n, pnum, map, file);
    snapshot_read_unlock(s, on_target, &req);
    if (ret >= 0 && on_target && !(ret & BD_BLOCK_ALLOCATED)) {
        /* Written to the target by a copy, so its own: never let a
         * reader fall through to what lies below the target. */
        ret |= BD_BLOCK_ALLOCATED | BD_BLOCK_ZERO;
    }
    return ret;
}

/* The reader needs [offset, offset+bytes) of the view no more: whole
 * clusters inside it leave the view, are never copied, and the target
 * lets their space go.  A piece smaller than a cluster does nothing
 * (QEMU 7.2 aborts there). */
static int cbw_pdiscard_snapshot(BdNode *node, uint64_t offset,
                                 uint64_t bytes)
{
    BdCbw *s = node->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t start = (offset + cs - 1) / cs * cs;
    uint64_t end = offset + bytes == s->size ? s->size
                                             : (offset + bytes) / cs * cs;

    if (end <= start) {
        return 0;
    }
    bd_reqlist_lock(&s->frozen_reads);
    bd_dirty_bitmap_reset(s->access_bitmap, start, end - start);
    bd_reqlist_unlock(&s->frozen_reads);
    bd_reqlist_lock(&s->copies);
    bd_dirty_bitmap_reset(s->copy_bitmap, start, end - start);
    bd_reqlist_unlock(&s->copies);
    return bd_child_pdiscard(s->target, start, end - start);
}

static int cbw_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    BdCbw *s = node->opaque;

    return bd_child_pread(s->file, offset, bytes, buf, flags);
}

static int cbw_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    BdCbw *s = node->opaque;
    int ret = cbw_before_write(node, offset, bytes);

    return ret < 0 ? ret
                   : bd_child_pwrite(s->file, offset, bytes, buf, flags);
}

static int cbw_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                             int flags)
{
    BdCbw *s = node->opaque;
    int ret = cbw_before_write(node, offset, bytes);

    return ret < 0 ? ret
                   : bd_child_pwrite_zeroes(s->file, offset, bytes, flags);
}

static int cbw_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    BdCbw *s = node->opaque;
    int ret = cbw_before_write(node, offset, bytes);

    return ret < 0 ? ret : bd_child_pdiscard(s->file, offset, bytes);
}

static int cbw_flush(BdNode *node)
{
    BdCbw *s = node->opaque;

    return bd_child_flush(s->file);
}

/* A drain of the filter holds the backup job's next chunk back ... */
static void cbw_drained_begin(BdNode *node)
{
    BdCbw *s = node->opaque;

    bd_mutex_lock(&s->lock);
    s->quiesce++;
    bd_mutex_unlock(&s->lock);
}

/* ... and, once the nodes below let their requests go (a throttled
 * target), waits for the chunk under way and for the copies that
 * timed-out guest writes left running. */
static void cbw_drained_wait(BdNode *node)
{
    BdCbw *s = node->opaque;

    bd_mutex_lock(&s->lock);
    while (s->job_active || s->bg_copies) {
        bd_cond_wait(&s->cond, &s->lock);
    }
    bd_mutex_unlock(&s->lock);
}

static void cbw_drained_end(BdNode *node)
{
    BdCbw *s = node->opaque;

    bd_mutex_lock(&s->lock);
    s->quiesce--;
    g_cond_broadcast(&s->cond);
    bd_mutex_unlock(&s->lock);
}

const BdDriver bd_cbw_driver = {
    .name = "copy-before-write",
    .options = cbw_options,
    .is_filter = TRUE,
    .open = cbw_open,
    .close = cbw_close,
    .child_perm = cbw_child_perm,
    .pread = cbw_pread,
    .pwrite = cbw_pwrite,
    .pwrite_zeroes = cbw_pwrite_zeroes,
    .pdiscard = cbw_pdiscard,
    .flush = cbw_flush,
    .pread_snapshot = cbw_pread_snapshot,
    .block_status_snapshot = cbw_block_status_snapshot,
    .pdiscard_snapshot = cbw_pdiscard_snapshot,
    .drained_begin = cbw_drained_begin,
    .drained_wait = cbw_drained_wait,
    .drained_end = cbw_drained_end,
};

/* --- insertion and removal (main thread) --- */

BdNode *bd_cbw_append(BdNode *source, BdNode *target,
                      const BdCbwAppendOptions *opts, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    GVariantDict d;
    g_autoptr(GVariant) options = NULL;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "copy-before-write");
    if (opts->filter_node_name) {
        g_variant_dict_insert(&d, "node-name", "s", opts->filter_node_name);
    }
    g_variant_dict_insert(&d, "file", "s", source->node_name);
    g_variant_dict_insert(&d, "target", "s", target->node_name);
    options = g_variant_ref_sink(g_variant_dict_end(&d));

    BdNode *filter = bd_node_open(options, errp);
    if (!filter) {
        g_prefix_error(errp, "Could not create node: ");
        return NULL;
    }
    filter->implicit = opts->filter_node_name == NULL;
    BdCbw *s = filter->opaque;
    s->skip_unallocated = opts->skip_unallocated;
    s->write_flags = opts->compress ? BD_REQ_WRITE_COMPRESSED : 0;
    s->copy_range = opts->use_copy_range && !opts->compress;
    if (opts->bitmap) {
        /* The job's frozen bitmap (busy: checked by the job). */
        bd_dirty_bitmap_clear(s->copy_bitmap);
        bd_dirty_bitmap_merge_internal(s->copy_bitmap, opts->bitmap);
    }

    /* Every user of the source now goes through the filter. */
    if (!bd_node_replace(source, filter, errp)) {
        bd_node_unref(filter);
        return NULL;
    }
    return filter;
}

void bd_cbw_drop(BdNode *filter)
{
    BD_GLOBAL_STATE_CODE();

    BdCbw *s = filter->opaque;
    g_autoptr(GError) err = NULL;

    if (!bd_node_replace(filter, s->file->node, &err)) {
        g_warning("node '%s': cannot remove the filter: %s",
                  filter->node_name, err->message);
    }
    bd_node_unref(filter);
}
