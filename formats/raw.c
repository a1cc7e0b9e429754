/* SPDX-License-Identifier: MIT */
/* The 'raw' format driver: the child's bytes as they are, optionally a window (offset, size).
 *
 * Thread model: open/close/child_perm on the main thread; the data
 * callbacks on any thread.  The window is fixed after open; 'size_lock'
 * serializes growing node->size when a write past the end grows the
 * child (image creation through an entry that allows it).  'probed' is
 * set once on the main thread right after open, before any request.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/json-filename.h"
#include "formats/drivers.h"
#include "formats/registry.h"

typedef struct {
    BdChild *file;
    uint64_t offset;
    uint64_t size;          /* the window; node->size mirrors it */
    gboolean has_size;      /* 'size' given: fixed window */
    gboolean probed;        /* format probed: guard the first sector */
    BdMutex size_lock;
} RawState;

typedef struct {
    GVariant *file;
    gint64 offset;
    gboolean has_offset;
    gint64 size;
    gboolean has_size;
} RawOptions;

/* QAPI BlockdevOptionsRaw (base BlockdevOptionsGenericFormat). */
static const BdSchemaField raw_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(RawOptions, file) },
    { "offset", &bd_schema_int, TRUE, BD_AT(RawOptions, offset),
      BD_HAS(RawOptions, offset),
      .flags = BD_FIELD_STRONG | BD_FIELD_MUTABLE },
    { "size", &bd_schema_int, TRUE, BD_AT(RawOptions, size),
      BD_HAS(RawOptions, size), .flags = BD_FIELD_STRONG | BD_FIELD_MUTABLE },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(RawOptions, raw_options)

/* Map a request into the child; -EINVAL/-ENOSPC outside a fixed window. */
static int raw_adjust(RawState *s, uint64_t *offset, uint64_t bytes,
                      gboolean is_write)
{
    if (s->has_size && (*offset > s->size || bytes > s->size - *offset)) {
        return is_write ? -ENOSPC : -EINVAL;
    }
    if (*offset > INT64_MAX - s->offset) {
        return -EINVAL;
    }
    *offset += s->offset;
    return 0;
}

/* Without a fixed size, a write past the end grows the window too. */
static void raw_note_end(BdNode *node, RawState *s, uint64_t child_end)
{
    uint64_t end = child_end - s->offset;

    if (s->has_size || end <= __atomic_load_n(&node->size, __ATOMIC_ACQUIRE)) {
        return;
    }
    bd_mutex_lock(&s->size_lock);
    if (end > node->size) {
        s->size = end;
        bd_node_set_size(node, end);
    }
    bd_mutex_unlock(&s->size_lock);
}

static int raw_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_adjust(s, &offset, bytes, FALSE);

    if (ret == 0) bd_debug_event(s->file, BD_DEBUG_EVENT_READ_AIO);
    return ret < 0 ? ret : bd_child_pread(s->file, offset, bytes, buf, flags);
}

/* A probed raw image must not start to look like another format (QEMU's
 * raw_co_pwritev): requests are sector-aligned then (refresh_limits), so
 * a write there holds the whole first sector. */
static int raw_check_probed(RawState *s, uint64_t offset, uint64_t bytes,
                            const void *buf)
{
    if (!s->probed || offset >= 512 || !bytes) {
        return 0;
    }
    if (offset != 0 || bytes < 512) {
        return -EPERM;          /* not aligned: cannot happen */
    }
    return bd_formats_buf_has_image_magic(buf, 512) ? -EPERM : 0;
}

static int raw_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_check_probed(s, offset, bytes, buf);

    if (ret < 0) {
        return ret;
    }
    ret = raw_adjust(s, &offset, bytes, TRUE);

    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_AIO);
        ret = bd_child_pwrite(s->file, offset, bytes, buf, flags);
    }
    if (ret == 0) {
        raw_note_end(node, s, offset + bytes);
    }
    return ret;
}

static int raw_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           BdFdSink *sink, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_adjust(s, &offset, bytes, FALSE);

    if (ret == 0) {
        ret = bd_child_pread_to_fd(s->file, offset, bytes, sink, flags);
    }
    /* Only a file child takes it (blkdebug refuses, and its fallback
     * through raw_pread announces the read): the event goes after. */
    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_READ_AIO);
    }
    return ret;
}

static int raw_pwrite_from_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                              int in_fd, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_adjust(s, &offset, bytes, TRUE);

    if (ret == 0 && s->probed && offset - s->offset < 512) {
        return -ENOTSUP;        /* raw_pwrite checks the first sector */
    }
    if (ret == 0) {
        ret = bd_child_pwrite_from_fd(s->file, offset, bytes, in_fd, flags);
    }
    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_AIO);
        raw_note_end(node, s, offset + bytes);
    }
    return ret;
}

static int raw_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                             int flags)
{
    RawState *s = node->opaque;
    int ret = raw_adjust(s, &offset, bytes, TRUE);

    if (ret == 0) {
        ret = bd_child_pwrite_zeroes(s->file, offset, bytes, flags);
    }
    if (ret == 0) {
        raw_note_end(node, s, offset + bytes);
    }
    return ret;
}

static int raw_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    RawState *s = node->opaque;
    int ret = raw_adjust(s, &offset, bytes, TRUE);

    return ret < 0 ? ret : bd_child_pdiscard(s->file, offset, bytes);
}

static int raw_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    RawState *s = node->opaque;

    *pnum = bytes;
    *map = offset + s->offset;
    *file = s->file->node;
    return BD_BLOCK_RAW | BD_BLOCK_OFFSET_VALID;
}

/* Copy offload: the same window rules as raw_pwrite. */
static int64_t raw_copy_range_from(BdNode *node, uint64_t offset,
                                   uint64_t bytes, int src_fd,
                                   uint64_t src_offset)
{
    RawState *s = node->opaque;
    int ret = raw_adjust(s, &offset, bytes, TRUE);
    int64_t n;

    if (ret < 0) {
        return ret;
    }
    if (s->probed && offset - s->offset < 512) {
        return -ENOTSUP;        /* raw_pwrite checks the first sector */
    }
    n = bd_node_copy_range_from_fd(s->file->node, offset, bytes, src_fd,
                                   src_offset);
    if (n > 0) {
        raw_note_end(node, s, offset + (uint64_t)n);
    }
    return n;
}

static int raw_truncate(BdNode *node, uint64_t size)
{
    RawState *s = node->opaque;
    int ret;

    /* As QEMU: a fixed window cannot change; an offset alone moves along. */
    if (s->has_size) {
        return -ENOTSUP;
    }
    if (size > INT64_MAX - s->offset) {
        return -EINVAL;
    }
    ret = bd_node_truncate(s->file->node, size + s->offset);
    if (ret < 0) {
        return ret;
    }
    bd_mutex_lock(&s->size_lock);
    s->size = size;
    bd_node_set_size(node, size);
    bd_mutex_unlock(&s->size_lock);
    return 0;
}

static void raw_child_perm(BdNode *node, BdChild *child, BdChildRole role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared)
{
    if (role & BD_CHILD_FILTERED) {
        /* No window: a pure pass-through, as QEMU's filter default. */
        *perm = parent_perm & BD_PERM_ALL;
        *shared = parent_shared & BD_PERM_ALL;
        return;
    }
    bd_default_child_perm(node, child, role, parent_perm, parent_shared,
                          perm, shared);
    /* The storage default adds write and resize; a window needs them
     * only when its own parents do (QEMU's raw_child_perm). */
    *perm &= ~(uint64_t)(BD_PERM_WRITE | BD_PERM_RESIZE);
    *perm |= parent_perm & (BD_PERM_WRITE | BD_PERM_RESIZE);
}

static gboolean raw_read_window(const RawOptions *o, uint64_t *offset,
                                gboolean *has_size, uint64_t *size,
                                GError **errp)
{
    if (o->offset < 0 || o->size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' expects a non-negative number below 2^64",
                    o->offset < 0 ? "offset" : "size");
        return FALSE;
    }
    *offset = o->offset;
    *has_size = o->has_size;
    *size = o->size;
    return TRUE;
}

static gboolean raw_check_window(RawState *s, int64_t real_size,
                                 GError **errp)
{
    if (s->offset > (uint64_t)real_size) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Offset (%" PRIu64 ") cannot be greater than size of "
                    "the containing file (%" PRId64 ")",
                    s->offset, real_size);
        return FALSE;
    }
    if (s->has_size && (uint64_t)real_size - s->offset < s->size) {
        /* Sic: QEMU's text has two spaces before "actual". */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The sum of offset (%" PRIu64 ") and size (%" PRIu64
                    ") has to be smaller or equal to the  actual size of "
                    "the containing file (%" PRId64 ")",
                    s->offset, s->size, real_size);
        return FALSE;
    }
    if (s->has_size && s->size % 512) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Specified size is not multiple of 512");
        return FALSE;
    }
    return TRUE;
}

static void raw_close(BdNode *node)
{
    RawState *s = node->opaque;

    if (!s) {
        return;
    }
    bd_mutex_destroy(&s->size_lock);
    g_free(s);
    node->opaque = NULL;
}

static gboolean raw_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(RawOptions) o = { 0 };
    RawState *s;
    BdChildRole role = BD_CHILD_DATA | BD_CHILD_PRIMARY;
    int64_t real_size;

    bd_schema_decode(raw_options, options, &o);
    s = g_new0(RawState, 1);
    bd_mutex_init(&s->size_lock);
    node->opaque = s;
    if (!raw_read_window(&o, &s->offset, &s->has_size, &s->size, errp)) {
        goto fail;
    }
    /* Without a window raw behaves like a filter (QEMU's file role). */
    if (!s->offset && !s->has_size) {
        role |= BD_CHILD_FILTERED;
    }
    s->file = bd_node_open_child(node, o.file, "file", role, FALSE, errp);
    if (!s->file) {
        goto fail;
    }
    real_size = bd_node_getlength(s->file->node);
    if (real_size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not get image size: %s",
                    g_strerror((int)-real_size));
        goto fail;
    }
    if (!raw_check_window(s, real_size, errp)) {
        goto fail;
    }
    if (!s->has_size) {
        s->size = real_size - s->offset;
    }
    bd_node_set_size(node, s->size);
    /* A window is not the child's file any more, nor is a child that
     * is no protocol: QEMU's json: name. */
    if (o.has_offset || s->has_size ||
        !bd_formats_child_name_passes(s->file->node)) {
        g_free(node->filename);
        node->filename = bd_formats_json_filename(node);
    }
    return TRUE;

fail:
    raw_close(node);
    return FALSE;
}

/* --- reopen: the window may change --- */

typedef struct {
    uint64_t offset, size;
    gboolean has_offset;
    gboolean has_size;
} RawWindow;

static gboolean raw_reopen_prepare(BdReopenState *state, GError **errp)
{
    RawState *s = state->node->opaque;
    RawState check = { 0 };
    int64_t real_size = bd_node_getlength(s->file->node);
    g_auto(RawOptions) o = { 0 };
    RawWindow *w;

    bd_schema_decode(raw_options, state->options, &o);
    if (!raw_read_window(&o, &check.offset, &check.has_size,
                         &check.size, errp)) {
        return FALSE;
    }
    if (real_size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not get image size: %s",
                    g_strerror((int)-real_size));
        return FALSE;
    }
    if (!raw_check_window(&check, real_size, errp)) {
        return FALSE;
    }
    w = g_new0(RawWindow, 1);
    w->offset = check.offset;
    w->size = check.size;
    w->has_size = check.has_size;
    w->has_offset = o.has_offset;
    state->opaque = w;
    return TRUE;
}

/* The node is drained: no request reads the window meanwhile.  The
 * size follows the file child, which the reopen may have replaced. */
static void raw_reopen_commit(BdReopenState *state)
{
    BdNode *node = state->node;
    RawState *s = node->opaque;
    RawWindow *w = state->opaque;
    int64_t real_size = bd_node_getlength(s->file->node);

    s->offset = w->offset;
    s->has_size = w->has_size;
    s->size = w->has_size ? w->size :
              real_size > (int64_t)w->offset ? real_size - w->offset : 0;
    bd_node_set_size(node, s->size);
    g_free(node->filename);
    if (w->has_offset || s->has_size ||
        !bd_formats_child_name_passes(s->file->node)) {
        node->filename = bd_formats_json_filename(node);
    } else {
        node->filename = g_strdup(s->file->node->filename);
    }
    g_free(w);
    state->opaque = NULL;
}

static void raw_reopen_abort(BdReopenState *state)
{
    g_free(state->opaque);
    state->opaque = NULL;
}

static void raw_refresh_limits(BdNode *node)
{
    RawState *s = node->opaque;

    if (s && s->probed) {
        node->request_alignment = MAX(node->request_alignment, 512);
    }
}

void bd_formats_raw_set_probed(BdNode *node)
{
    if (node->drv != &bd_raw_driver || !node->opaque) {
        return;
    }
    ((RawState *)node->opaque)->probed = TRUE;
    bd_node_refresh_limits(node);
}

/* QEMU reports these for every driver with get_info (file and raw). */
static void raw_query_image_info(BdNode *node, GVariantDict *image)
{
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
}

const BdDriver bd_raw_driver = {
    .query_image_info = raw_query_image_info,
    .name = "raw",
    .options = raw_options,
    .reopen_prepare = raw_reopen_prepare,
    .reopen_commit = raw_reopen_commit,
    .reopen_abort = raw_reopen_abort,
    .is_format = TRUE,
    .open = raw_open,
    .close = raw_close,
    .child_perm = raw_child_perm,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pread_to_fd = raw_pread_to_fd,
    .pwrite_from_fd = raw_pwrite_from_fd,
    /* Passed on to the file child, which refuses what it cannot do. */
    .supported_read_flags = BD_REQ_NOWAIT,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .block_status = raw_block_status,
    .copy_range_passthrough = TRUE,
    .copy_range_from = raw_copy_range_from,
    .truncate = raw_truncate,
    .refresh_limits = raw_refresh_limits,
};
