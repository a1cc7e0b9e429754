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

/* What QEMU shows below a node in its image chain and counts in
 * backing_file_depth: a filter's child, else the backing. */
static BdNode *node_chain_next(BdNode *node)
{
    BdChild *f = bd_node_filtered_child(node);

    return f ? f->node : bd_node_backing(node);
}

/* The node's file name as queries show it (see query_filename). */
char *bd_node_query_filename(BdNode *node)
{
    char *name = node->drv->query_filename
                 ? node->drv->query_filename(node) : NULL;

    return name ? name : g_strdup(node->filename);
}

/* A filter shows the cluster size and dirty flag of the image below it,
 * as QEMU's bdrv_get_info() passes through filters. */
static void filter_image_info(BdNode *node, GVariantDict *image)
{
    BdChild *c = bd_node_filtered_child(node);
    BdNode *below = c ? c->node : NULL;
    GVariantDict scratch;
    static const char *const keys[] = { "cluster-size", "dirty-flag" };

    while (below && below->drv->is_filter && !below->drv->query_image_info) {
        c = bd_node_filtered_child(below);
        below = c ? c->node : NULL;
    }
    if (!below || !below->drv->query_image_info) {
        return;
    }
    g_variant_dict_init(&scratch, NULL);
    below->drv->query_image_info(below, &scratch);
    for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autoptr(GVariant) v = g_variant_dict_lookup_value(&scratch, keys[i],
                                                            NULL);
        if (v) {
            g_variant_dict_insert_value(image, keys[i], v);
        }
    }
    g_variant_dict_clear(&scratch);
}

static GVariant *node_image_info(BdNode *node, gboolean with_backing)
{
    GVariantDict image;
    BdNode *below = node_chain_next(node);
    int64_t actual = node_allocated_size(node);
    g_autofree char *filename = bd_node_query_filename(node);

    g_variant_dict_init(&image, NULL);
    g_variant_dict_insert_value(&image, "filename",
                                g_variant_new_take_string(bd_query_string(filename)));
    g_variant_dict_insert(&image, "format", "s", node->drv->name);
    g_variant_dict_insert(&image, "virtual-size", "x",
                          bd_node_getlength(node));
    if (actual >= 0) {
        g_variant_dict_insert(&image, "actual-size", "x", actual);
    }
    /* backing-filename and the like come from the image's own header
     * (query_image_info), as QEMU's: a backing node given by the user
     * does not show there. */
    if (node->drv->query_image_info) {
        node->drv->query_image_info(node, &image);
    } else if (node->drv->is_filter) {
        filter_image_info(node, &image);
    }
    if (below && with_backing) {
        g_variant_dict_insert_value(&image, "backing-image",
                                    node_image_info(below, TRUE));
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

    /* As QEMU: every layer below, filters included, and nothing when
     * flat (the count stops with the chain it describes). */
    for (BdNode *b = flat ? NULL : node_chain_next(node); b;
         b = node_chain_next(b)) {
        depth++;
    }
    g_variant_dict_init(&cache, NULL);
    g_variant_dict_insert(&cache, "writeback", "b", TRUE);
    g_variant_dict_insert(&cache, "direct", "b", node->cache_direct);
    g_variant_dict_insert(&cache, "no-flush", "b", node->cache_no_flush);

    g_autofree char *filename = bd_node_query_filename(node);

    g_variant_dict_init(&info, NULL);
    g_variant_dict_insert_value(&info, "file",
                                g_variant_new_take_string(bd_query_string(filename)));
    g_variant_dict_insert(&info, "node-name", "s", node->node_name);
    g_variant_dict_insert(&info, "ro", "b", node->read_only);
    g_variant_dict_insert(&info, "drv", "s", node->drv->name);
    /* As QEMU: the COW child's file only, not a filter's child. */
    if (bd_node_backing(node) && !node->drv->is_filter) {
        g_autofree char *bf = bd_node_query_filename(bd_node_backing(node));

        g_variant_dict_insert_value(&info, "backing_file",
                                    g_variant_new_take_string(bd_query_string(bf)));
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
