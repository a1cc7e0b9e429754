/* SPDX-License-Identifier: MIT */
/* Backing-chain surgery for the stream and commit jobs (see chain.h).
 *
 * Thread model: graph changes on the main thread, inside drained
 * sections; allocation queries on any thread.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <string.h>
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "jobs/chain.h"

/* --- chain navigation --- */

BdNode *bd_chain_next(BdNode *node)
{
    BdChild *f;

    if (!node) {
        return NULL;
    }
    f = bd_node_filtered_child(node);
    if (f) {
        return f->node;
    }
    return bd_node_backing(node);
}

BdNode *bd_chain_skip_filters(BdNode *node)
{
    BdChild *f;

    while (node && (f = bd_node_filtered_child(node))) {
        node = f->node;
    }
    return node;
}

gboolean bd_chain_contains(BdNode *top, BdNode *base)
{
    BD_GLOBAL_STATE_CODE();

    for (BdNode *n = top; n; n = bd_chain_next(n)) {
        if (n == base) {
            return TRUE;
        }
    }
    return FALSE;
}

BdNode *bd_chain_find_overlay(BdNode *top, BdNode *base)
{
    BD_GLOBAL_STATE_CODE();

    for (BdNode *n = top; n; n = bd_chain_next(n)) {
        if (bd_chain_next(n) == base) {
            return n;
        }
    }
    return NULL;
}

BdNode *bd_chain_find_backing_image(BdNode *top, const char *name)
{
    BD_GLOBAL_STATE_CODE();

    for (BdNode *n = bd_chain_next(top); n; n = bd_chain_next(n)) {
        if (n->drv && n->drv->is_filter) {
            continue;
        }
        if (strcmp(n->node_name, name) == 0 ||
            (n->filename && strcmp(n->filename, name) == 0)) {
            return n;
        }
    }
    return NULL;
}

/* --- busy nodes --- */

gboolean bd_chain_check_busy(BdNode *node, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const char *type = node ? node->claimed_by : NULL;

    if (type) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s' is busy: block device is in use by block "
                    "job: %s", node->node_name, type);
        return FALSE;
    }
    return TRUE;
}

void bd_chain_claim(BdNode *node, const char *job_type)
{
    BD_GLOBAL_STATE_CODE();

    node->claimed_by = job_type;
}

void bd_chain_release(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    node->claimed_by = NULL;
}

/* --- graph changes --- */

BdNode *bd_chain_insert_filter(BdNode *below, GVariant *options,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNodeOptions o = { 0 };
    gboolean named;
    BdNode *filter;

    bd_node_options_decode(options, &o);
    named = o.node_name != NULL;
    filter = bd_node_open(options, errp);

    if (!filter) {
        g_prefix_error(errp, "Could not create node: ");
        return NULL;
    }
    filter->implicit = !named;
    if (!bd_node_replace(below, filter, errp)) {
        bd_node_unref(filter);
        return NULL;
    }
    return filter;
}

void bd_chain_filter_look_like(BdNode *filter, BdNode *child)
{
    BD_GLOBAL_STATE_CODE();

    g_free(filter->filename);
    filter->filename = g_strdup(child->filename);
    bd_node_set_size(filter, (uint64_t)bd_node_getlength(child));
}

void bd_chain_drop_filter(BdNode *filter)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *f = bd_node_filtered_child(filter);
    g_autoptr(GError) err = NULL;

    if (f) {
        if (!bd_node_replace(filter, f->node, &err)) {
            g_warning("node '%s': cannot remove the filter: %s",
                      filter->node_name, err->message);
        }
    }
    bd_node_unref(filter);
}

static gboolean inherits_from_recursive(BdNode *child, BdNode *parent)
{
    while (child && child != parent) {
        child = child->inherits_from;
    }
    return child != NULL;
}

gboolean bd_chain_set_backing(BdNode *node, BdNode *base, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gboolean update_inherits = base && inherits_from_recursive(base, node);
    BdDrainSection *drain;
    gboolean ok = TRUE;

    if (bd_node_backing(node) == base) {
        return TRUE;
    }
    drain = bd_drained_begin(node);
    if (base) {
        bd_node_ref(base);
    }
    if (node->backing) {
        bd_node_detach_child(node, node->backing);
    }
    if (base) {
        ok = bd_node_attach_child(node, base, "backing", BD_CHILD_COW,
                                  errp) != NULL;
        if (ok && update_inherits) {
            base->inherits_from = node;
        }
        bd_node_unref(base);
    }
    bd_drained_end(drain);
    return ok;
}

gboolean bd_chain_reopen_read_only(BdNode *node, gboolean ro, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);
    g_auto(BdChildRefs) refs = { 0 };
    GVariantDict d;

    if (node->read_only == ro) {
        return TRUE;
    }
    bd_child_refs_decode(node->options, &refs);
    g_variant_dict_init(&d, node->options);
    g_variant_dict_insert(&d, "read-only", "b", ro);
    if (node->backing) {
        g_variant_dict_insert(&d, "backing", "s",
                              node->backing->node->node_name);
    } else if (refs.has_backing) {
        g_variant_dict_insert_value(&d, "backing", bd_variant_null());
    }
    if (refs.has_file && node->file &&
        node->file->node->inherits_from != node) {
        g_variant_dict_insert(&d, "file", "s", node->file->node->node_name);
    }
    g_ptr_array_add(list, g_variant_ref_sink(g_variant_dict_end(&d)));
    return bd_node_reopen_multiple(list, errp);
}

/* --- the backing file name --- */

gboolean bd_chain_change_backing_file(BdNode *node, const char *file,
                                      const char *fmt, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!node->drv->change_backing_file) {
        return TRUE;
    }
    return node->drv->change_backing_file(node, file, fmt, errp);
}

/* --- allocation --- */

int bd_chain_is_allocated(BdNode *node, uint64_t offset, uint64_t bytes,
                          uint64_t *pnum)
{
    uint64_t size = (uint64_t)bd_node_getlength(node);  /* may grow */
    int ret;

    if (offset >= size) {
        *pnum = bytes;
        return 0;
    }
    ret = bd_node_block_status(node, offset, MIN(bytes, size - offset), pnum,
                               NULL, NULL);
    if (ret < 0) {
        return ret;
    }
    if (*pnum == 0) {
        *pnum = MIN(bytes, size - offset);
        return 0;
    }
    return (ret & BD_BLOCK_ALLOCATED) ? 1 : 0;
}

int bd_chain_is_allocated_above(BdNode *top, BdNode *base,
                                gboolean include_base, uint64_t offset,
                                uint64_t bytes, uint64_t *pnum)
{
    BdNode *stop = include_base ? bd_chain_next(base) : base;
    uint64_t n = bytes;

    for (BdNode *cur = bd_chain_skip_filters(top); cur && cur != stop;
         cur = bd_chain_skip_filters(bd_node_backing(cur))) {
        uint64_t pn = 0;
        int ret = bd_chain_is_allocated(cur, offset, n, &pn);

        if (ret < 0) {
            return ret;
        }
        if (ret) {
            *pnum = pn;
            return 1;
        }
        n = MIN(n, pn);
        if (base && cur == base) {
            break;
        }
    }
    *pnum = n;
    return 0;
}
