/* SPDX-License-Identifier: MIT */
/* The 'copy-before-write' filter driver (QEMU's): before a write reaches
 * 'file', the old data of the clusters it touches is copied to 'target'
 * once; the backup job shares its copy bitmap (copy-before-write.h).
 *
 * Thread model: open/close, append/drop and the drain hooks run on the
 * main thread.  Data callbacks run on any thread; the backup job calls
 * bd_cbw_copy() on its own thread.  The copies in flight are requests
 * in s->copies (graph/reqlist.h); its lock also covers the copy
 * bitmap's read-modify-write steps (find, reset, set back).  s->lock
 * protects the quiesce/job counters and the progress callback.  Both
 * are leaf locks, never held together nor across I/O.
 *
 *   write [o, o+n) --> copy marked clusters of it (wait for any copy of
 *                      them in flight) --> write to file
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
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
    uint32_t cbw_timeout;         /* accepted, not enforced */
    gboolean skip_unallocated;    /* set before the filter goes live */
    int write_flags;              /* BD_REQ_WRITE_COMPRESSED or 0 */

    BdReqList copies;             /* copies in flight */
    int snapshot_error;           /* atomic; break-snapshot: -errno */

    BdMutex lock;                 /* a leaf: guards what follows */
    GCond cond;                   /* quiesce, job idle */
    int quiesce BD_GUARDED_BY(lock);      /* drained: job waits */
    int job_active BD_GUARDED_BY(lock);   /* job chunks under way */
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
    { "cbw-timeout", &bd_schema_uint, TRUE, BD_AT(CbwOptions, cbw_timeout) },
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
 * under skip_unallocated, data is read and written.  *done: bytes
 * finished before an error. */
static int copy_run(BdCbw *s, uint64_t start, uint64_t len, uint64_t *done,
                    gboolean *is_read)
{
    g_autofree uint8_t *buf = NULL;
    uint64_t pos = start, end = start + len;

    while (pos < end) {
        uint64_t n = 0;
        int depth = 1;
        int st = bd_node_block_status_above(s->file->node, pos, end - pos,
                                            &n, &depth);
        int ret = 0;

        if (st < 0 || n == 0) {
            st = BD_BLOCK_DATA;
            n = end - pos;
            depth = 1;
        }
        n = MIN(n, end - pos);
        if (s->skip_unallocated && depth != 1) {
            /* not in the top layer: nothing to copy */
        } else if (st & BD_BLOCK_ZERO) {
            ret = bd_child_pwrite_zeroes(s->target, pos, n,
                                         BD_REQ_MAY_UNMAP);
            if (ret < 0) {
                *is_read = FALSE;
                return ret;
            }
        } else {
            n = MIN(n, (uint64_t)CBW_CHUNK_DEFAULT);
            if (!buf) {
                buf = g_malloc(MIN(len, (uint64_t)CBW_CHUNK_DEFAULT));
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
    max_chunk = max_chunk ? max_chunk / cs * cs : MAX(cs, CBW_CHUNK_DEFAULT);
    max_chunk = MAX(max_chunk, cs);
    while (pos < end) {
        uint64_t start, len, done = 0;
        BdReq req;
        int err;

        bd_reqlist_lock(&s->copies);
        /* Someone copies part of our range: its old data is not on the
         * target yet, so neither a write nor our copy may go ahead. */
        if (bd_reqlist_overlaps_locked(&s->copies, pos, end - pos)) {
            bd_reqlist_wait_locked(&s->copies);
            bd_reqlist_unlock(&s->copies);
            continue;
        }
        err = g_atomic_int_get(&s->snapshot_error);
        if (err) {
            bd_reqlist_unlock(&s->copies);
            *is_read = TRUE;
            return err;
        }
        if (!bd_dirty_bitmap_next_dirty_area(s->copy_bitmap, pos, end,
                                             max_chunk, &start, &len)) {
            bd_reqlist_unlock(&s->copies);
            break;
        }
        len = MIN(len, s->size - start);
        bd_dirty_bitmap_reset(s->copy_bitmap, start, len);
        bd_req_insert_locked(&s->copies, &req, start, len, TRUE);
        bd_reqlist_unlock(&s->copies);

        int ret = copy_run(s, start, len, &done, is_read);

        bd_reqlist_lock(&s->copies);
        if (ret < 0) {
            bd_dirty_bitmap_set(s->copy_bitmap, start + done, len - done);
        }
        bd_req_remove_locked(&s->copies, &req);
        bd_reqlist_unlock(&s->copies);
        if (done) {
            cbw_progress(s, done);
        }
        if (ret < 0) {
            return ret;
        }
        pos = start + len;
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

static gboolean cbw_init_bitmap(BdNode *node, BdCbw *s, const CbwOptions *o,
                                GError **errp)
{
    s->copy_bitmap = bd_dirty_bitmap_create(s->file->node,
                                            (uint32_t)s->cluster_size, NULL,
                                            errp);
    if (!s->copy_bitmap) {
        return FALSE;
    }
    bd_dirty_bitmap_set_enabled(s->copy_bitmap, FALSE);
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

static gboolean cbw_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(CbwOptions) o = { 0 };
    BdCbw *s = g_new0(BdCbw, 1);

    bd_schema_decode(cbw_options, options, &o);
    bd_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    bd_reqlist_init(&s->copies);
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
    return cbw_init_bitmap(node, s, &o, errp);
}

static void cbw_close(BdNode *node)
{
    BdCbw *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->copy_bitmap) {
        bd_dirty_bitmap_release(s->copy_bitmap);
    }
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

/* Save the old data of [offset, offset+bytes) before it changes. */
static int cbw_before_write(BdNode *node, uint64_t offset, uint64_t bytes)
{
    BdCbw *s = node->opaque;
    int ret;

    if (g_atomic_int_get(&s->snapshot_error)) {
        return 0;    /* the snapshot is broken already: writes go on */
    }
    ret = bd_cbw_copy(s, offset, bytes, 0, NULL);
    if (ret < 0 && s->on_cbw_error == CBW_BREAK_SNAPSHOT) {
        g_atomic_int_set(&s->snapshot_error, ret);
        g_warning("node '%s': copy-before-write failed (%s); the snapshot "
                  "is broken", node->node_name, g_strerror(-ret));
        return 0;
    }
    return ret;
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

/* A drain of the filter waits for the backup job's chunk under way and
 * holds the next one back. */
static void cbw_drained_begin(BdNode *node)
{
    BdCbw *s = node->opaque;

    bd_mutex_lock(&s->lock);
    s->quiesce++;
    while (s->job_active) {
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
    .drained_begin = cbw_drained_begin,
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
    if (opts->bitmap) {
        bd_dirty_bitmap_clear(s->copy_bitmap);
        if (!bd_dirty_bitmap_merge(s->copy_bitmap, opts->bitmap, NULL,
                                   errp)) {
            bd_node_unref(filter);
            return NULL;
        }
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
