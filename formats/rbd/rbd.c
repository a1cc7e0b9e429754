/* SPDX-License-Identifier: MIT */
/* The 'rbd' protocol driver: a node whose data is a Ceph RBD image,
 * reached with librbd (QEMU's BlockdevOptionsRbd, encryption aside).
 *
 * Thread model: open, close, reopen, create and queries as the driver
 * contract says (graph/node.h).  blockdev-add from a monitor connects
 * beforehand on a worker thread (prepare, the 'prepared' list under
 * prepared_lock), so the main loop does not wait for the cluster at
 * all; an open without that (the command line) connects on a thread of
 * its own (connect.c) and waits for it no longer than the connect
 * timeout.  The data callbacks run on the requesting thread, many at
 * once: each submits one librbd aio request and sleeps on its own
 * RbdWait until librbd's completion callback (on a librbd finisher
 * thread) wakes it - no thread per request, and librbd keeps every
 * request of every caller in flight together.  The driver's state is
 * fixed after open but for the size (grow_lock).
 */
#define G_LOG_DOMAIN "blockd-rbd"

#include <errno.h>
#include <string.h>

#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "formats/drivers.h"
#include "formats/json-filename.h"
#include "formats/rbd/rbd-int.h"

typedef struct {
    RbdConn conn;
    char *image;
    char *snapshot;        /* NULL: the image's head */
    uint64_t object_size;
    /* Serialises growing the image for writes past its end (the size
     * read-modify-write); taken with no other lock held. */
    GMutex grow_lock;
} RbdState;

static rbd_image_t image_of(BdNode *node)
{
    return ((RbdState *)node->opaque)->conn.image;
}

/* --- waiting for one aio request --- */

typedef struct {
    GMutex lock;
    GCond cond;
    gboolean done;
    ssize_t ret;
} RbdWait;

/* librbd's finisher thread.  The waiter may free 'w' as soon as the
 * lock is released with 'done' set, so nothing touches it after. */
static void rbd_wait_complete(rbd_completion_t c, void *opaque)
{
    RbdWait *w = opaque;
    ssize_t ret = rbd_aio_get_return_value(c);

    g_mutex_lock(&w->lock);
    w->ret = ret;
    w->done = TRUE;
    g_cond_signal(&w->cond);
    g_mutex_unlock(&w->lock);
}

/* Before submitting: a completion that wakes 'w'.  0 or -errno. */
static int rbd_wait_begin(RbdWait *w, rbd_completion_t *c)
{
    int r;

    g_mutex_init(&w->lock);
    g_cond_init(&w->cond);
    w->done = FALSE;
    r = rbd_aio_create_completion(w, rbd_wait_complete, c);
    if (r < 0) {
        g_mutex_clear(&w->lock);
        g_cond_clear(&w->cond);
    }
    return r;
}

/* After submitting ('submitted': the rbd_aio_* call's result): wait for
 * the completion unless the submission failed.  librbd's return value
 * (>= 0) or -errno. */
static ssize_t rbd_wait_end(RbdWait *w, rbd_completion_t c, int submitted)
{
    ssize_t r = submitted;

    if (submitted == 0) {
        g_mutex_lock(&w->lock);
        while (!w->done) {
            g_cond_wait(&w->cond, &w->lock);
        }
        g_mutex_unlock(&w->lock);
        r = w->ret;
    }
    rbd_aio_release(c);
    g_mutex_clear(&w->lock);
    g_cond_clear(&w->cond);
    return r;
}

/* librbd reports some failures as errnos the exports would pass on
 * unchanged; a request that timed out is an I/O error to the client. */
static int io_errno(ssize_t r)
{
    if (r >= 0) {
        return 0;
    }
    return r == -ETIMEDOUT || r == -ESHUTDOWN ? -EIO : (int)r;
}

/* --- data path --- */

static int rbd_node_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                          void *buf, int flags)
{
    RbdWait w;
    rbd_completion_t c;
    ssize_t r = rbd_wait_begin(&w, &c);

    if (r == 0) {
        r = rbd_wait_end(&w, c, rbd_aio_read(image_of(node), offset, bytes,
                                             buf, c));
    }
    if (r < 0) {
        return io_errno(r);
    }
    /* Past the end of an image shrunk behind our back: zeroes. */
    if ((uint64_t)r < bytes) {
        memset((char *)buf + r, 0, bytes - r);
    }
    return 0;
}

static int rbd_node_flush(BdNode *node)
{
    RbdWait w;
    rbd_completion_t c;
    ssize_t r = rbd_wait_begin(&w, &c);

    if (r == 0) {
        r = rbd_wait_end(&w, c, rbd_aio_flush(image_of(node), c));
    }
    return io_errno(r);
}

/* As QEMU: a write past the end grows the image first (a format on
 * top, qcow2, allocates at the end of its file). */
static int grow_for(BdNode *node, uint64_t end)
{
    RbdState *s = node->opaque;
    int r = 0;

    if (end <= __atomic_load_n(&node->size, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    g_mutex_lock(&s->grow_lock);
    if (end > __atomic_load_n(&node->size, __ATOMIC_ACQUIRE)) {
        r = rbd_resize(s->conn.image, end);
        if (r == 0) {
            bd_node_set_size(node, end);
        }
    }
    g_mutex_unlock(&s->grow_lock);
    return r;
}

static int rbd_node_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                           const void *buf, int flags)
{
    RbdWait w;
    rbd_completion_t c;
    ssize_t r = grow_for(node, offset + bytes);

    if (r == 0) {
        r = rbd_wait_begin(&w, &c);
    }

    if (r == 0) {
        r = rbd_wait_end(&w, c, rbd_aio_write(image_of(node), offset, bytes,
                                              buf, c));
    }
    if (r < 0) {
        return io_errno(r);
    }
    return flags & BD_REQ_FUA ? rbd_node_flush(node) : 0;
}

static int rbd_node_pwrite_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, int flags)
{
    RbdWait w;
    rbd_completion_t c;
    /* Without MAY_UNMAP the zeroes stay allocated (NBD's NO_HOLE). */
    int zflags = flags & BD_REQ_MAY_UNMAP
                 ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
    ssize_t r;

    if (flags & BD_REQ_NO_FALLBACK) {
        /* librbd cannot promise a fast zero (QEMU offers none either). */
        return -ENOTSUP;
    }
    r = grow_for(node, offset + bytes);
    if (r == 0) {
        r = rbd_wait_begin(&w, &c);
    }
    if (r == 0) {
        r = rbd_wait_end(&w, c, rbd_aio_write_zeroes(image_of(node), offset,
                                                     bytes, c, zflags, 0));
    }
    if (r < 0) {
        return io_errno(r);
    }
    return flags & BD_REQ_FUA ? rbd_node_flush(node) : 0;
}

static int rbd_node_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    RbdWait w;
    rbd_completion_t c;
    ssize_t r = rbd_wait_begin(&w, &c);

    if (r == 0) {
        r = rbd_wait_end(&w, c, rbd_aio_discard(image_of(node), offset,
                                                bytes, c));
    }
    return io_errno(r);
}

/* Block status: the objects that exist in [offset, end), as
 * rbd_diff_iterate2 reports them (whole objects, from the object map:
 * only with fast-diff, as QEMU). */
typedef struct {
    uint64_t offset, end;   /* the range asked about */
    gboolean data;          /* a data run starts at 'offset' */
    uint64_t run_end;       /* end of the status found so far */
} RbdStatusReq;

/* Stop rbd_diff_iterate2 once the answer is known (any value < 0 that
 * librbd does not use itself). */
#define RBD_DIFF_STOP (-9000)

static int rbd_status_cb(uint64_t offs, size_t len, int exists, void *opaque)
{
    RbdStatusReq *req = opaque;
    uint64_t s = MAX(offs, req->offset), e = MIN(offs + len, req->end);

    if (!exists || s >= e) {
        return 0;
    }
    if (!req->data) {
        if (req->run_end == 0 && s > req->offset) {
            /* A hole first, up to this object. */
            req->run_end = s;
            return RBD_DIFF_STOP;
        }
        req->data = TRUE;
        req->run_end = e;
        return 0;
    }
    if (s > req->run_end) {
        return RBD_DIFF_STOP;    /* a hole after the data run */
    }
    req->run_end = MAX(req->run_end, e);
    return 0;
}

static int rbd_node_block_status(BdNode *node, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 uint64_t *map, BdNode **file)
{
    rbd_image_t img = image_of(node);
    RbdStatusReq req = { .offset = offset, .end = offset + bytes };
    uint64_t features = 0, iflags = 0;
    int r;

    *map = offset;
    *file = node;
    *pnum = bytes;
    if (rbd_get_features(img, &features) < 0 ||
        !(features & RBD_FEATURE_FAST_DIFF) ||
        rbd_get_flags(img, &iflags) < 0 ||
        (iflags & RBD_FLAG_FAST_DIFF_INVALID)) {
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    r = rbd_diff_iterate2(img, NULL, offset, bytes, 1, 1, rbd_status_cb,
                          &req);
    if (r < 0 && r != RBD_DIFF_STOP) {
        /* No map: everything is data, as QEMU. */
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    if (req.data) {
        *pnum = req.run_end - offset;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    *pnum = req.run_end ? req.run_end - offset : bytes;
    return BD_BLOCK_ZERO | BD_BLOCK_OFFSET_VALID;
}

static int rbd_node_truncate(BdNode *node, uint64_t size)
{
    RbdState *s = node->opaque;
    int r;

    if (s->snapshot) {
        return -EROFS;
    }
    g_mutex_lock(&s->grow_lock);
    r = rbd_resize(s->conn.image, size);
    if (r == 0) {
        bd_node_set_size(node, size);
    }
    g_mutex_unlock(&s->grow_lock);
    return r;
}

static int64_t rbd_node_allocated_size(BdNode *node)
{
    return -ENOTSUP;
}

static void rbd_node_refresh_limits(BdNode *node)
{
    node->request_alignment = 1;
    /* librbd splits requests by object itself. */
    node->max_transfer = 0;
    node->latency_bound = TRUE;
}

/* --- open / close --- */

/* Connections made by rbd_node_prepare off the main thread, each
 * waiting for the open of the same configuration.  A connection that
 * failed is kept too, with its error: the open that follows fails with
 * it at once instead of waiting for the cluster again on the main
 * thread (a command that opens by file name reports it in its own
 * order, after its other checks: control/image-file.c). */
typedef struct {
    char *fingerprint;
    RbdConn conn;
    GError *error;
} Prepared;

static GMutex prepared_lock;
static GList *prepared;         /* Prepared *, guarded by prepared_lock */

/* The prepared connection for 'cfg', taken from the list: 1, or -1
 * with its error when it failed; 0 when there is none. */
static int prepared_take(const RbdConfig *cfg, RbdConn *out, GError **errp)
{
    g_autofree char *fp = rbd_config_fingerprint(cfg);
    Prepared *found = NULL;
    int ret;

    g_mutex_lock(&prepared_lock);
    for (GList *l = prepared; l; l = l->next) {
        Prepared *p = l->data;
        if (!strcmp(p->fingerprint, fp)) {
            found = p;
            prepared = g_list_delete_link(prepared, l);
            break;
        }
    }
    g_mutex_unlock(&prepared_lock);
    if (!found) {
        return 0;
    }
    ret = found->error ? -1 : 1;
    if (found->error) {
        g_propagate_error(errp, found->error);
    } else {
        *out = found->conn;
    }
    memset(found->fingerprint, 0, strlen(found->fingerprint));
    g_free(found->fingerprint);
    g_free(found);
    return ret;
}

/* BdDriver.prepare: connect and open the image on the calling thread
 * (blockdev-add's worker), bounded by librados' timeouts. */
static gboolean rbd_node_prepare(GVariant *options, GError **errp)
{
    g_auto(RbdConfig) cfg = { 0 };
    GError *err = NULL;
    Prepared *p;

    if (!rbd_config_decode(options, &cfg, errp)) {
        return FALSE;
    }
    p = g_new0(Prepared, 1);
    if (!rbd_connect(&cfg, TRUE, &p->conn, &err)) {
        p->error = g_error_copy(err);
        g_propagate_error(errp, err);
    }
    p->fingerprint = rbd_config_fingerprint(&cfg);
    g_mutex_lock(&prepared_lock);
    prepared = g_list_prepend(prepared, p);
    g_mutex_unlock(&prepared_lock);
    return p->error == NULL;
}

static void rbd_node_prepare_drop(GVariant *options)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(RbdConfig) cfg = { 0 };
    RbdConn conn;

    if (rbd_config_decode(options, &cfg, NULL) &&
        prepared_take(&cfg, &conn, NULL) > 0) {
        rbd_conn_close(&conn);
    }
}

static void rbd_node_close(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    RbdState *s = node->opaque;

    if (!s) {
        return;
    }
    rbd_conn_close(&s->conn);
    g_mutex_clear(&s->grow_lock);
    g_free(s->image);
    g_free(s->snapshot);
    g_free(s);
    node->opaque = NULL;
}

static gboolean rbd_node_open(BdNode *node, GVariant *options,
                              GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(RbdConfig) cfg = { 0 };
    RbdState *s;
    rbd_image_info_t info;
    int r;

    if (!rbd_config_decode(options, &cfg, errp)) {
        return FALSE;
    }
    if (cfg.snapshot && !node->read_only) {
        /* QEMU's bdrv_apply_auto_read_only() for snapshots. */
        if (!node->auto_read_only) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "rbd snapshots are read-only");
            return FALSE;
        }
        node->read_only = TRUE;
    }
    s = g_new0(RbdState, 1);
    g_mutex_init(&s->grow_lock);
    node->opaque = s;
    s->image = g_strdup(cfg.image);
    s->snapshot = g_strdup(cfg.snapshot);
    switch (prepared_take(&cfg, &s->conn, errp)) {
    case -1:
        return FALSE;
    case 0:
        if (!rbd_connect_bounded(&cfg, TRUE, &s->conn, errp)) {
            return FALSE;
        }
        break;
    default:
        break;
    }
    r = rbd_stat(s->conn.image, &info, sizeof(info));
    if (r < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "error getting image info from %s: %s", cfg.image,
                    g_strerror(-r));
        return FALSE;
    }
    s->object_size = info.obj_size;
    bd_node_set_size(node, info.size);
    /* As QEMU: json:{"driver": "rbd", ...} of the strong options. */
    g_free(node->filename);
    node->filename = bd_formats_json_filename(node);
    return TRUE;
}

/* Every option is fixed; a snapshot stays read-only. */
static gboolean rbd_node_reopen_prepare(BdReopenState *state, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    RbdState *s = state->node->opaque;

    if (s->snapshot && !state->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot change node '%s' to r/w when using RBD "
                    "snapshot", state->node->node_name);
        return FALSE;
    }
    return bd_reopen_prepare_fixed(state, errp);
}


/* --- internal snapshots (QEMU's qemu_rbd_snap_*): the name is the id --- */

static GPtrArray *rbd_node_snapshot_list(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *list = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_snapshot_info_free);
    int max = 16, n;
    rbd_snap_info_t *snaps;

    for (;;) {
        snaps = g_new0(rbd_snap_info_t, max);
        n = rbd_snap_list(image_of(node), snaps, &max);
        if (n != -ERANGE) {
            break;
        }
        g_free(snaps);      /* 'max' now says how many there are */
    }
    for (int i = 0; i < n; i++) {
        BdSnapshotInfo *sn = g_new0(BdSnapshotInfo, 1);

        sn->id = g_strdup(snaps[i].name);
        sn->name = g_strdup(snaps[i].name);
        sn->vm_state_size = snaps[i].size;
        sn->icount = 0;         /* as QEMU's zeroed entries show it */
        g_ptr_array_add(list, sn);
    }
    if (n >= 0) {
        rbd_snap_list_end(snaps);
    }
    g_free(snaps);
    return list;
}

static gboolean rbd_node_snapshot_create(BdNode *node, BdSnapshotInfo *sn,
                                         GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    int r;

    if (sn->id && *sn->id && strcmp(sn->id, sn->name)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "rbd snapshots are named by their id: '%s' and '%s' "
                    "differ", sn->id, sn->name);
        return FALSE;
    }
    r = rbd_snap_create(image_of(node), sn->name);
    if (r < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "failed to create snap: %s", g_strerror(-r));
        return FALSE;
    }
    g_free(sn->id);
    sn->id = g_strdup(sn->name);
    return TRUE;
}

static gboolean rbd_node_snapshot_delete(BdNode *node, const char *id,
                                         const char *name,
                                         BdSnapshotInfo *deleted,
                                         GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const char *which = name ? name : id;
    int r;

    if (deleted) {
        g_autoptr(GPtrArray) list = rbd_node_snapshot_list(node);

        for (guint i = 0; i < list->len; i++) {
            BdSnapshotInfo *sn = list->pdata[i];
            if (!strcmp(sn->name, which)) {
                *deleted = *sn;
                sn->id = sn->name = NULL;
                break;
            }
        }
    }
    r = rbd_snap_remove(image_of(node), which);
    if (r < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to remove the snapshot: %s", g_strerror(-r));
        return FALSE;
    }
    return TRUE;
}

static void rbd_node_query_image_info(BdNode *node, GVariantDict *image)
{
    BD_GLOBAL_STATE_CODE();

    RbdState *s = node->opaque;
    g_autoptr(GPtrArray) list = rbd_node_snapshot_list(node);
    GVariantBuilder b;

    GVariantDict spec;

    /* As QEMU 7.2: its bdrv_get_info (cluster size, never dirty) and an
     * empty ImageInfoSpecificRbd (only encryption would fill it). */
    g_variant_dict_insert(image, "cluster-size", "x",
                          (gint64)s->object_size);
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
    g_variant_dict_init(&spec, NULL);
    g_variant_dict_insert(&spec, "type", "s", "rbd");
    g_variant_dict_insert_value(&spec, "data",
                                g_variant_new_array(G_VARIANT_TYPE("{sv}"),
                                                    NULL, 0));
    g_variant_dict_insert_value(image, "format-specific",
                                g_variant_dict_end(&spec));
    if (!list->len) {
        return;
    }
    g_variant_builder_init(&b, G_VARIANT_TYPE("aa{sv}"));
    for (guint i = 0; i < list->len; i++) {
        BdSnapshotInfo *sn = list->pdata[i];
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "id", "s", sn->id);
        g_variant_dict_insert(&d, "name", "s", sn->name);
        g_variant_dict_insert(&d, "vm-state-size", "x",
                              (gint64)sn->vm_state_size);
        g_variant_dict_insert(&d, "date-sec", "x", (gint64)0);
        g_variant_dict_insert(&d, "date-nsec", "x", (gint64)0);
        g_variant_dict_insert(&d, "vm-clock-sec", "x", (gint64)0);
        g_variant_dict_insert(&d, "vm-clock-nsec", "x", (gint64)0);
        g_variant_dict_insert(&d, "icount", "x", (gint64)sn->icount);
        g_variant_builder_add_value(&b, g_variant_dict_end(&d));
    }
    g_variant_dict_insert_value(image, "snapshots", g_variant_builder_end(&b));
}

/* --- blockdev-create --- */

typedef struct {
    GVariant *location;
    guint64 size;
    guint64 cluster_size;
    gboolean has_cluster_size;
} RbdCreateOptions;

/* QAPI BlockdevCreateOptionsRbd (encryption aside). */
static const BdSchemaField rbd_create_options[] = {
    { "location", &rbd_options_type, FALSE,
      BD_AT(RbdCreateOptions, location) },
    { "size", &bd_schema_size, FALSE, BD_AT(RbdCreateOptions, size) },
    { "cluster-size", &bd_schema_size, TRUE,
      BD_AT(RbdCreateOptions, cluster_size),
      BD_HAS(RbdCreateOptions, cluster_size) },
    { NULL } };

BD_SCHEMA_DEFINE_AUTO(RbdCreateOptions, rbd_create_options)

/* A job thread: connecting may block (bounded by librados' timeouts). */
static gboolean rbd_node_create(GVariant *options, GError **errp)
{
    g_auto(RbdCreateOptions) o = { 0 };
    g_auto(RbdConfig) cfg = { 0 };
    RbdConn conn;
    int order = 0;
    int r;

    bd_schema_decode(rbd_create_options, options, &o);
    if (o.has_cluster_size) {
        if (o.cluster_size & (o.cluster_size - 1)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "obj size needs to be power of 2");
            return FALSE;
        }
        if (o.cluster_size < 4096) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "obj size too small");
            return FALSE;
        }
        order = g_bit_nth_lsf(o.cluster_size, -1);
    }
    if (!rbd_config_decode(o.location, &cfg, errp)) {
        return FALSE;
    }
    if (cfg.snapshot) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Can't use snapshot name for image creation");
        return FALSE;
    }
    if (!rbd_connect(&cfg, FALSE, &conn, errp)) {
        return FALSE;
    }
    r = rbd_create(conn.io, cfg.image, o.size, &order);
    rbd_conn_close(&conn);
    if (r < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "error rbd create: %s",
                    g_strerror(-r));
        return FALSE;
    }
    return TRUE;
}

const BdDriver bd_rbd_driver = {
    .name = "rbd",
    .options = rbd_options_fields,
    .is_protocol = TRUE,
    .open = rbd_node_open,
    .prepare = rbd_node_prepare,
    .prepare_drop = rbd_node_prepare_drop,
    .close = rbd_node_close,
    .pread = rbd_node_pread,
    .pwrite = rbd_node_pwrite,
    .pwrite_zeroes = rbd_node_pwrite_zeroes,
    .pdiscard = rbd_node_pdiscard,
    .flush = rbd_node_flush,
    .block_status = rbd_node_block_status,
    .truncate = rbd_node_truncate,
    .allocated_size = rbd_node_allocated_size,
    .refresh_limits = rbd_node_refresh_limits,
    .reopen_prepare = rbd_node_reopen_prepare,
    .query_image_info = rbd_node_query_image_info,
    .snapshot_list = rbd_node_snapshot_list,
    .snapshot_create = rbd_node_snapshot_create,
    .snapshot_delete = rbd_node_snapshot_delete,
    .create_options = rbd_create_options,
    .create = rbd_node_create,
};
