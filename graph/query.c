/* SPDX-License-Identifier: MIT */
/* query-named-block-nodes data: QEMU's BlockDeviceInfo and ImageInfo
 * shapes built from a node.  Main thread. */
#define G_LOG_DOMAIN "blockd-graph"

#include "graph/query.h"
#include "graph/io.h"
#include "graph/bitmap.h"
#include "graph/main-thread.h"

static int64_t node_allocated_size(BdNode *node)
{
    int64_t sum = 0;

    if (node->drv->allocated_size) {
        return node->drv->allocated_size(node);
    }
    /* Default: what the node's own storage children use (not backing). */
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (c->role & BD_CHILD_COW) {
            continue;
        }
        int64_t n = node_allocated_size(c->node);
        if (n < 0) {
            return n;
        }
        sum += n;
    }
    return node->children->len ? sum : -1;
}

static GVariant *node_image_info(BdNode *node, gboolean with_backing)
{
    GVariantDict image;
    BdNode *backing = bd_node_backing(node);
    int64_t actual = node_allocated_size(node);

    g_variant_dict_init(&image, NULL);
    g_variant_dict_insert(&image, "filename", "s", node->filename);
    g_variant_dict_insert(&image, "format", "s", node->drv->name);
    g_variant_dict_insert(&image, "virtual-size", "x",
                          bd_node_getlength(node));
    if (actual >= 0) {
        g_variant_dict_insert(&image, "actual-size", "x", actual);
    }
    if (backing) {
        g_variant_dict_insert(&image, "backing-filename", "s",
                              backing->filename);
    }
    if (node->drv->query_image_info) {
        node->drv->query_image_info(node, &image);
    }
    if (backing && with_backing) {
        g_variant_dict_insert_value(&image, "backing-image",
                                    node_image_info(backing, TRUE));
    }
    return g_variant_dict_end(&image);
}

static const char *detect_zeroes_name(BdDetectZeroes dz)
{
    switch (dz) {
    case BD_DETECT_ZEROES_ON:
        return "on";
    case BD_DETECT_ZEROES_UNMAP:
        return "unmap";
    default:
        return "off";
    }
}

GVariant *bd_node_query_info(BdNode *node, gboolean flat)
{
    BD_GLOBAL_STATE_CODE();

    static const char *const zero_fields[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
    };
    GVariantDict info, cache;
    int depth = 0;

    for (BdNode *b = bd_node_backing(node); b; b = bd_node_backing(b)) {
        depth++;
    }
    g_variant_dict_init(&cache, NULL);
    g_variant_dict_insert(&cache, "writeback", "b", TRUE);
    g_variant_dict_insert(&cache, "direct", "b", node->cache_direct);
    g_variant_dict_insert(&cache, "no-flush", "b", node->cache_no_flush);

    g_variant_dict_init(&info, NULL);
    g_variant_dict_insert(&info, "file", "s", node->filename);
    g_variant_dict_insert(&info, "node-name", "s", node->node_name);
    g_variant_dict_insert(&info, "ro", "b", node->read_only);
    g_variant_dict_insert(&info, "drv", "s", node->drv->name);
    if (bd_node_backing(node)) {
        g_variant_dict_insert(&info, "backing_file", "s",
                              bd_node_backing(node)->filename);
    }
    g_variant_dict_insert(&info, "backing_file_depth", "x", (gint64)depth);
    g_variant_dict_insert(&info, "encrypted", "b", node->encrypted);
    g_variant_dict_insert(&info, "detect_zeroes", "s",
                          detect_zeroes_name(node->detect_zeroes));
    for (gsize i = 0; i < G_N_ELEMENTS(zero_fields); i++) {
        g_variant_dict_insert(&info, zero_fields[i], "x", (gint64)0);
    }
    /* A uint64 shown as QAPI's int, as QEMU prints it. */
    g_variant_dict_insert(&info, "write_threshold", "x",
                          (gint64)bd_node_write_threshold(node));
    g_variant_dict_insert_value(&info, "cache", g_variant_dict_end(&cache));
    g_variant_dict_insert_value(&info, "image",
                                node_image_info(node, !flat));
    GVariant *bitmaps = bd_dirty_bitmap_query(node);
    if (bitmaps) {
        g_variant_dict_insert_value(&info, "dirty-bitmaps", bitmaps);
    }
    return g_variant_dict_end(&info);
}
