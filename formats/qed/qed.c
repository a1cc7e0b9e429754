/* SPDX-License-Identifier: MIT */
/* The 'qed' format driver: QEMU Enhanced Disk images (QEMU's
 * docs/interop/qed_spec.txt), read-write, with backing files, zero
 * clusters, the consistency check after an unclean close, and
 * blockdev-create.
 *
 * On disk (little endian): a 64-byte header at the start of
 * header_size clusters (the backing file name lives there too), then
 * regular clusters: the L1 table (table_size clusters), L2 tables (as
 * large) and data clusters, each aligned to the cluster size.  A guest
 * offset splits into L1 index, L2 index and the offset in the cluster.
 * L2 entries: 0 unallocated (backing file or zeroes), 1 a zero cluster,
 * else the file offset of the data.  New clusters are appended at the
 * end of the file; nothing is ever freed, so the worst an interrupted
 * allocation leaves is a leaked cluster.
 *
 *   [header + name][L1 table][L2 table][data][data][L2 table] ...
 *
 * Memory: every L2 table the L1 names is loaded at open (that is also
 * when they are all checked).  Tables are refused where they overlap
 * each other, the header or the L1 table, so what is held is bounded by
 * the file's size.
 *
 * QED_F_NEED_CHECK is set in the header (and flushed) before the first
 * allocating write changes any metadata, and cleared on flush and on
 * close once the writes before are durable.  Opened read-write with the
 * bit set (an unclean close), the check runs: L1 and L2 entries that
 * point past the end of the file or are misaligned are dropped, then
 * the bit is cleared.  Leaked clusters are harmless (allocation goes to
 * the end of the file) and are left to qemu-img check -r.
 *
 * Thread model: open/close/query on the main thread, create on the
 * create job's thread, data callbacks on any thread.  Readers and
 * in-place writers take no lock: they load L1 slots (table pointers)
 * and L2 entries atomically (acquire).  Allocation (new L2 table, new
 * data clusters, zero clusters, the header's NEED_CHECK bit) is
 * serialised by QedState.alloc_lock, held from the re-lookup to the
 * publication of the new entries with release stores, after their
 * on-disk copies are written: data, then the L2 entry, then (for a new
 * table) the L1 entry.  Writers to the same unallocated cluster wait on
 * the lock and then find it allocated.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/filename.h"
#include "formats/qed/qed.h"
#include "formats/registry.h"

typedef struct {
    GVariant *file;
    GVariant *backing;
    gboolean has_backing;
} QedOptions;

/* QAPI BlockdevOptionsGenericCOWFormat. */
static const BdSchemaField qed_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(QedOptions, file) },
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE,
      BD_AT(QedOptions, backing), BD_HAS(QedOptions, backing) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(QedOptions, qed_options)

static void qed_close(BdNode *node)
{
    QedState *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->opened) {
        bd_mutex_lock(&s->alloc_lock);
        if (qed_clear_need_check_locked(s) == 0 &&
            !node->read_only) {
            bd_child_flush(s->file);
        }
        bd_mutex_unlock(&s->alloc_lock);
    }
    if (s->l2) {
        for (uint64_t i = 0; i < s->table_nelems; i++) {
            g_free(s->l2[i]);
        }
    }
    g_free(s->l2);
    g_free(s->l1);
    g_free(s->backing_file);
    bd_mutex_destroy(&s->alloc_lock);
    g_free(s);
    node->opaque = NULL;
}

static gboolean open_backing(BdNode *node, QedState *s, const QedOptions *o,
                             GError **errp)
{
    g_autofree char *dir = NULL;
    g_autoptr(GVariant) ref = NULL;
    BdChild *backing;

    if (o->has_backing) {
        return bd_node_open_child(node, o->backing, "backing", BD_CHILD_COW,
                                  TRUE, errp) != NULL || !errp || !*errp;
    }
    if (!s->backing_file) {
        return TRUE;
    }
    s->backing_from_header = TRUE;
    if (s->file->node->filename) {
        dir = g_path_get_dirname(s->file->node->filename);
    }
    ref = bd_formats_image_options(s->backing_file, s->backing_fmt, dir,
                                   errp);
    if (!ref) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    backing = bd_node_open_child(node, ref, "backing", BD_CHILD_COW, FALSE,
                                 errp);
    if (!backing) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    if (!s->backing_fmt && !bd_formats_filename_is_remote(s->backing_file)) {
        bd_formats_raw_set_probed(backing->node);
    }
    return TRUE;
}

static gboolean qed_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(QedOptions) o = { 0 };
    QedState *s = g_new0(QedState, 1);

    bd_schema_decode(qed_options, options, &o);
    bd_mutex_init(&s->alloc_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !qed_load(node, s, errp) ||
        !open_backing(node, s, &o, errp)) {
        qed_close(node);
        return FALSE;
    }
    s->opened = TRUE;
    bd_node_set_size(node, s->image_size);
    return TRUE;
}

/* --- resize, backing file name --- */

/* QEMU's refusals, in its words. */
static gboolean qed_resize_check(BdNode *node, uint64_t size, GError **errp)
{
    QedState *s = node->opaque;

    if (size < s->image_size) {
        FAIL("Shrinking images is currently not supported");
    }
    if (!image_size_valid(size, s->cluster_size, s->table_size)) {
        FAIL("Invalid image size specified");
    }
    return TRUE;
}

/* Growing is a new size in the header: the tables cover the maximum. */
static int qed_truncate(BdNode *node, uint64_t size)
{
    QedState *s = node->opaque;
    uint8_t le[8];
    int ret;

    if (size < s->image_size) {
        return -ENOTSUP;
    }
    if (!image_size_valid(size, s->cluster_size, s->table_size)) {
        return -EINVAL;
    }
    bd_mutex_lock(&s->alloc_lock);
    put_le64(le, size);
    ret = bd_child_pwrite(s->file, H_IMAGE_SIZE, 8, le, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        put_le64(s->header + H_IMAGE_SIZE, size);
        s->image_size = size;
        bd_node_set_size(node, size);
    }
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

/* The header rewritten with the name right after it, as QEMU does; it
 * must fit in the header's clusters. */
static gboolean qed_change_backing_file(BdNode *node, const char *file,
                                        const char *fmt, GError **errp)
{
    QedState *s = node->opaque;
    size_t len = file ? strlen(file) : 0;
    g_autofree uint8_t *buf = NULL;
    uint64_t features;
    int ret;

    if (file && get_le64(s->header + H_COMPAT)) {
        FAIL("Could not update backing file link: %s", g_strerror(ENOTSUP));
    }
    if (len > QED_MAX_BACKING_NAME ||
        QED_HEADER_SIZE + len >
        (uint64_t)s->header_size * s->cluster_size) {
        FAIL("Could not update backing file link: %s", g_strerror(ENOSPC));
    }
    buf = g_malloc0(QED_HEADER_SIZE + len);
    bd_mutex_lock(&s->alloc_lock);
    features = s->features & ~(uint64_t)(QED_F_BACKING_FILE |
                                         QED_F_BACKING_FORMAT_NO_PROBE);
    if (file) {
        features |= QED_F_BACKING_FILE;
        if (fmt && strcmp(fmt, "raw") == 0) {
            features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
    }
    memcpy(buf, s->header, QED_HEADER_SIZE);
    put_le64(buf + H_FEATURES, features);
    put_le32(buf + H_BACKING_OFFSET, file ? QED_HEADER_SIZE : 0);
    put_le32(buf + H_BACKING_SIZE, (uint32_t)len);
    memcpy(buf + QED_HEADER_SIZE, file ? file : "", len);
    ret = bd_child_pwrite(s->file, 0, QED_HEADER_SIZE + len, buf, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        memcpy(s->header, buf, QED_HEADER_SIZE);
        s->features = features;
        g_free(s->backing_file);
        s->backing_file = g_strdup(file);
        s->backing_fmt = (features & QED_F_BACKING_FORMAT_NO_PROBE)
                         ? "raw" : NULL;
    }
    bd_mutex_unlock(&s->alloc_lock);
    if (ret < 0) {
        FAIL("Could not update backing file link: %s", g_strerror(-ret));
    }
    return TRUE;
}

/* All options are fixed.  Going read-only, the image is left clean
 * first (as QEMU, which flushes a node it makes read-only): a read-only
 * node never writes the header again. */
static gboolean qed_reopen_prepare(BdReopenState *state, GError **errp)
{
    BdNode *node = state->node;
    int ret;

    if (!state->read_only || node->read_only) {
        return TRUE;
    }
    ret = qed_flush(node);
    if (ret < 0) {
        FAIL("Could not mark the QED image clean: %s", g_strerror(-ret));
    }
    return TRUE;
}

static gboolean qed_has_default_backing(BdNode *node)
{
    QedState *s = node->opaque;

    return s->backing_file != NULL;
}

static void qed_query_image_info(BdNode *node, GVariantDict *image)
{
    QedState *s = node->opaque;

    g_variant_dict_insert(image, "cluster-size", "x",
                          (gint64)s->cluster_size);
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
    if (s->backing_file && bd_node_backing(node) && s->backing_from_header) {
        g_variant_dict_insert_value(image, "backing-filename",
                                    g_variant_new_take_string(bd_query_string(s->backing_file)));
        g_variant_dict_insert_value(image, "full-backing-filename",
                                    g_variant_new_take_string(bd_query_string(bd_node_backing(node)->filename)));
    }
    if (s->backing_fmt) {
        g_variant_dict_insert_value(image, "backing-filename-format",
                                    g_variant_new_take_string(bd_query_string(s->backing_fmt)));
    }
}

const BdDriver bd_qed_driver = {
    .name = "qed",
    .options = qed_options,
    .is_format = TRUE,
    .open = qed_open,
    .close = qed_close,
    .reopen_prepare = qed_reopen_prepare,
    .has_default_backing = qed_has_default_backing,
    .change_backing_file = qed_change_backing_file,
    .resize_check = qed_resize_check,
    .truncate = qed_truncate,
    .pread = qed_pread,
    .pread_to_fd = qed_pread_to_fd,
    .pwrite = qed_pwrite,
    .pwrite_zeroes = qed_pwrite_zeroes,
    .flush = qed_flush,
    .block_status = qed_block_status,
    .query_image_info = qed_query_image_info,
    .create_options = qed_create_options,
    .create = qed_create,
};
