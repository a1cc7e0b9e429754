/* SPDX-License-Identifier: MIT */
/* The 'blkverify' driver (QEMU's): every request goes to 'test' and 'raw'; reads must agree.
 *
 * 'raw' is a known-good copy (the filtered, primary child); 'test' is the
 * image under test.  Writes go to both; a read returns 'test's data after
 * comparing it with 'raw's.  Where QEMU prints the mismatch and exits,
 * blockd logs it (naming the node and the first differing offset) and
 * fails the request with EIO: a client must not be able to end the daemon.
 *
 * Thread model: open/close/child_perm on the main thread; the data
 * callbacks on any thread.  No state beyond the two children.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"
#include "formats/json-filename.h"

typedef struct {
    BdChild *raw;
    BdChild *test;
} BlkverifyState;

typedef struct {
    GVariant *test;
    GVariant *raw;
} BlkverifyOptions;

/* QAPI BlockdevOptionsBlkverify. */
static const BdSchemaField blkverify_options[] = {
    { "test", &bd_schema_blockdev_ref, FALSE,
      BD_AT(BlkverifyOptions, test) },
    { "raw", &bd_schema_blockdev_ref, FALSE, BD_AT(BlkverifyOptions, raw) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(BlkverifyOptions, blkverify_options)

static int blkverify_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                           void *buf, int flags)
{
    BlkverifyState *s = node->opaque;
    g_autofree uint8_t *raw_buf = g_try_malloc(bytes ? bytes : 1);
    int ret, raw_ret;

    if (!raw_buf) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->test, offset, bytes, buf, flags);
    raw_ret = bd_child_pread(s->raw, offset, bytes, raw_buf, flags);
    if (ret != raw_ret) {
        g_warning("node '%s': blkverify: read offset=%" PRIu64 " bytes=%"
                  PRIu64 " return value mismatch %d != %d",
                  node->node_name, offset, bytes, ret, raw_ret);
        return -EIO;
    }
    if (ret < 0) {
        return ret;
    }
    if (memcmp(buf, raw_buf, bytes) != 0) {
        uint64_t i = 0;

        while (((uint8_t *)buf)[i] == raw_buf[i]) {
            i++;
        }
        g_warning("node '%s': blkverify: read offset=%" PRIu64 " bytes=%"
                  PRIu64 " contents mismatch at offset %" PRIu64,
                  node->node_name, offset, bytes, offset + i);
        return -EIO;
    }
    return 0;
}

/* Both children get the request; their results must agree. */
static int blkverify_both(BdNode *node, const char *what, uint64_t offset,
                          uint64_t bytes, int ret, int raw_ret)
{
    if (ret != raw_ret) {
        g_warning("node '%s': blkverify: %s offset=%" PRIu64 " bytes=%"
                  PRIu64 " return value mismatch %d != %d",
                  node->node_name, what, offset, bytes, ret, raw_ret);
        return ret < 0 ? ret : -EIO;
    }
    return ret;
}

static int blkverify_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                            const void *buf, int flags)
{
    BlkverifyState *s = node->opaque;
    int ret = bd_child_pwrite(s->test, offset, bytes, buf, flags);
    int raw_ret = bd_child_pwrite(s->raw, offset, bytes, buf, flags);

    return blkverify_both(node, "write", offset, bytes, ret, raw_ret);
}

static int blkverify_pwrite_zeroes(BdNode *node, uint64_t offset,
                                   uint64_t bytes, int flags)
{
    BlkverifyState *s = node->opaque;
    int ret = bd_child_pwrite_zeroes(s->test, offset, bytes, flags);
    int raw_ret = bd_child_pwrite_zeroes(s->raw, offset, bytes, flags);

    return blkverify_both(node, "write-zeroes", offset, bytes, ret, raw_ret);
}

static int blkverify_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    BlkverifyState *s = node->opaque;
    int ret = bd_child_pdiscard(s->test, offset, bytes);
    int raw_ret = bd_child_pdiscard(s->raw, offset, bytes);

    return blkverify_both(node, "discard", offset, bytes, ret, raw_ret);
}

/* Flushing is left to the graph, which flushes both children after. */
static int blkverify_flush(BdNode *node)
{
    return 0;
}

/* As QEMU's blkverify_child_perm: default perms, everything shared. */
static void blkverify_child_perm(BdNode *node, BdChild *child,
                                 BdChildRole role, uint64_t parent_perm,
                                 uint64_t parent_shared, uint64_t *perm,
                                 uint64_t *shared)
{
    bd_default_child_perm(node, child, role, parent_perm, parent_shared,
                          perm, shared);
    *shared = BD_PERM_ALL;
}

/* QEMU's "blkverify:RAW:TEST" while both children have plain names. */
static char *blkverify_filename(BdNode *node)
{
    BlkverifyState *s = node->opaque;
    const char *raw = s->raw->node->filename;
    const char *test = s->test->node->filename;

    if (g_str_has_prefix(raw, "json:") || g_str_has_prefix(test, "json:")) {
        return bd_formats_json_filename(node);
    }
    return g_strdup_printf("blkverify:%s:%s", raw, test);
}

static void blkverify_close(BdNode *node)
{
    g_free(node->opaque);
    node->opaque = NULL;
}

static gboolean blkverify_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(BlkverifyOptions) o = { 0 };
    BlkverifyState *s = g_new0(BlkverifyState, 1);

    bd_schema_decode(blkverify_options, options, &o);
    node->opaque = s;
    /* QEMU opens 'raw' first, as the filtered child, then 'test'. */
    s->raw = bd_node_open_child(node, o.raw, "raw",
                                BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                                errp);
    if (!s->raw) {
        goto fail;
    }
    s->test = bd_node_open_child(node, o.test, "test", BD_CHILD_DATA, FALSE,
                                 errp);
    if (!s->test) {
        goto fail;
    }
    bd_node_set_size(node, (uint64_t)bd_node_getlength(s->test->node));
    node->filename = blkverify_filename(node);
    return TRUE;

fail:
    blkverify_close(node);
    return FALSE;
}

static void blkverify_query_image_info(BdNode *node, GVariantDict *image)
{
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
}

static int64_t blkverify_allocated_size(BdNode *node)
{
    return -ENOTSUP;    /* QEMU shows no actual-size for blkverify */
}

const BdDriver bd_blkverify_driver = {
    .name = "blkverify",
    .options = blkverify_options,
    .is_filter = TRUE,
    .open = blkverify_open,
    .close = blkverify_close,
    .child_perm = blkverify_child_perm,
    .pread = blkverify_pread,
    .pwrite = blkverify_pwrite,
    .pwrite_zeroes = blkverify_pwrite_zeroes,
    .pdiscard = blkverify_pdiscard,
    .flush = blkverify_flush,
    .allocated_size = blkverify_allocated_size,
    .query_image_info = blkverify_query_image_info,
};
