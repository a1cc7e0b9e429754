/* SPDX-License-Identifier: MIT */
/* The 'vhdx' format driver: Hyper-V virtual hard disks (Microsoft's
 * MS-VHDX), fixed, dynamic and differencing, read-write, with log
 * replay at open and metadata updates through the log, and
 * blockdev-create.
 *
 * On disk (little endian, GUIDs in Microsoft's mixed-endian order):
 *
 *   0      64K     128K    192K    256K         1M ...
 *   [ident][header][header][regions][regions]...[log][metadata][BAT][blocks]
 *
 * The current header is the valid one with the higher sequence number;
 * it places the log.  The region table places the BAT and the metadata
 * region; the metadata gives block size, virtual size and sector
 * sizes.  A BAT entry per payload block (state in bits 0-2, file offset
 * in MiB above bit 20), with a sector bitmap entry after every
 * chunk_ratio of them (used by differencing images only).  Blocks not
 * present read as zeroes, or in a differencing image from the parent
 * (the parent locator's relative_path, else absolute_win32_path, taken
 * from the image's directory, its format probed); a partially present
 * block's sectors come from the block or the parent as the chunk's
 * sector bitmap says.  A write to a differencing image's block not
 * fully present writes the whole block (what it reads as, with the new
 * bytes) and marks it fully present, so sector bitmaps are only read.
 *
 * Everything the headers, region table, metadata and BAT name is
 * checked against the file at open (regions and blocks inside it and
 * apart from each other), so what is read and held is bounded by the
 * file's size; the error names the node and what is wrong.
 *
 * Writes: the first write of an open gives the headers new write GUIDs.
 * A block not present is appended at the end of the file (the file is
 * extended, so the block reads as zeroes where it is not written), the
 * data written and flushed, then its BAT sector is written through the
 * log (log.c): a crash leaves either the old BAT or a log that replay
 * completes.  A crash before that leaks the block only.
 *
 * Thread model: open/close/query on the main thread, create on the
 * create job's thread, data callbacks on any thread.  Readers and
 * in-place writers take no lock: they load BAT entries atomically
 * (acquire).  Allocation, header and log updates are serialised by
 * VhdxState.lock, held from the re-lookup to the publication of the
 * new entry (release store) after it is durable on disk.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/filename.h"
#include "formats/registry.h"
#include "formats/vhdx/vhdx.h"

typedef struct {
    GVariant *file;
} VhdxOptions;

/* QAPI BlockdevOptionsGenericFormat. */
static const BdSchemaField vhdx_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(VhdxOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(VhdxOptions, vhdx_options)

static void vhdx_close(BdNode *node)
{
    VhdxState *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->file && !node->read_only && s->user_visible_written) {
        bd_child_flush(s->file);
    }
    g_free(s->bat);
    g_free(s->parent_path);
    bd_mutex_destroy(&s->lock);
    g_free(s);
    node->opaque = NULL;
}

static gboolean vhdx_load(VhdxState *s, GError **errp)
{
    int64_t len = bd_node_getlength(s->file->node);

    if (len < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-len));
    }
    if (!vhdx_load_headers(s, len, errp) ||
        !vhdx_replay_log(s, len, errp)) {
        return FALSE;
    }
    len = bd_node_getlength(s->file->node);
    if (len < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-len));
    }
    if (!vhdx_load_regions(s, len, errp) || !vhdx_load_metadata(s, errp) ||
        !vhdx_load_bat(s, len, errp)) {
        return FALSE;
    }
    s->file_end = ((uint64_t)len + MiB_ - 1) & ~(MiB_ - 1);
    return TRUE;
}

/* Parent chains are opened recursively on the main thread: a bound
 * on the depth stops a loop (an image naming itself). */
#define VHDX_MAX_CHAIN 64
static int chain_depth;

static gboolean open_parent(BdNode *node, VhdxState *s, GError **errp)
{
    g_autofree char *dir = NULL;
    g_autoptr(GVariant) ref = NULL;
    BdChild *parent;

    if (!s->has_parent) {
        return TRUE;
    }
    if (chain_depth >= VHDX_MAX_CHAIN) {
        NODE_FAIL("parent chain longer than %d images (a loop?)",
                  VHDX_MAX_CHAIN);
    }
    if (s->file->node->filename) {
        dir = g_path_get_dirname(s->file->node->filename);
    }
    ref = bd_formats_image_options(s->parent_path, NULL, dir, errp);
    if (!ref) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    chain_depth++;
    parent = bd_node_open_child(node, ref, "backing", BD_CHILD_COW, FALSE,
                                errp);
    chain_depth--;
    if (!parent) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    return TRUE;
}

static gboolean vhdx_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(VhdxOptions) o = { 0 };
    VhdxState *s = g_new0(VhdxState, 1);

    bd_schema_decode(vhdx_options, options, &o);
    bd_mutex_init(&s->lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !vhdx_load(s, errp) || !open_parent(node, s, errp)) {
        vhdx_close(node);
        return FALSE;
    }
    bd_node_set_size(node, s->size);
    return TRUE;
}

static void vhdx_query_image_info(BdNode *node, GVariantDict *image)
{
    VhdxState *s = node->opaque;

    g_variant_dict_insert(image, "cluster-size", "x", (gint64)s->block_size);
}

const BdDriver bd_vhdx_driver = {
    .name = "vhdx",
    .options = vhdx_options,
    .is_format = TRUE,
    .open = vhdx_open,
    .close = vhdx_close,
    .reopen_prepare = bd_reopen_prepare_fixed,
    .pread = vhdx_pread,
    .pwrite = vhdx_pwrite,
    .pwrite_zeroes = vhdx_pwrite_zeroes,
    .flush = vhdx_flush,
    .block_status = vhdx_block_status,
    .query_image_info = vhdx_query_image_info,
    .create_options = vhdx_create_options,
    .create = vhdx_create,
};
