/* SPDX-License-Identifier: MIT */
/* Preparing an open off the main thread: the drivers' prepare callbacks
 * for every node a BlockdevOptions tree defines (see BdDriver.prepare),
 * and the work an open leaves to a thread (bd_open_offload_*), which
 * needs what only the open reads (a LUKS header in the node's file).
 *
 * Thread model: bd_node_prepare and bd_open_offload_run run on any
 * thread and read only their arguments and the driver registry, which
 * is fixed after start-up; the others run on the main thread.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include "graph/main-thread.h"
#include "graph/node.h"

/* The driver of a dict that names one with a prepare callback. */
static const BdDriver *preparing_driver(GVariant *dict)
{
    const char *name = NULL;
    const BdDriver *drv;

    if (!g_variant_lookup(dict, "driver", "&s", &name)) {
        return NULL;
    }
    drv = bd_driver_find(name);
    return drv && drv->prepare ? drv : NULL;
}

typedef gboolean (*VisitFn)(const BdDriver *drv, GVariant *dict,
                            gpointer opaque);

/* Call 'fn' on every dict of the tree whose driver prepares, parents
 * before the nodes nested in them; stops when 'fn' returns FALSE. */
static gboolean visit(GVariant *v, VisitFn fn, gpointer opaque)
{
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(v);
        return visit(inner, fn, opaque);
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
        const BdDriver *drv = preparing_driver(v);
        GVariantIter it;
        GVariant *child;

        if (drv && !fn(drv, v, opaque)) {
            return FALSE;
        }
        g_variant_iter_init(&it, v);
        while ((child = g_variant_iter_next_value(&it))) {
            g_autoptr(GVariant) value = g_variant_get_child_value(child, 1);
            g_variant_unref(child);
            if (!visit(value, fn, opaque)) {
                return FALSE;
            }
        }
        return TRUE;
    }
    if (g_variant_is_container(v) &&
        !g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        GVariantIter it;
        GVariant *child;

        g_variant_iter_init(&it, v);
        while ((child = g_variant_iter_next_value(&it))) {
            gboolean ok = visit(child, fn, opaque);
            g_variant_unref(child);
            if (!ok) {
                return FALSE;
            }
        }
    }
    return TRUE;
}

static gboolean found(const BdDriver *drv, GVariant *dict, gpointer opaque)
{
    *(gboolean *)opaque = TRUE;
    return FALSE;
}

gboolean bd_node_needs_prepare(GVariant *options)
{
    BD_GLOBAL_STATE_CODE();

    gboolean any = FALSE;

    visit(options, found, &any);
    return any;
}

static gboolean prepare_one(const BdDriver *drv, GVariant *dict,
                            gpointer opaque)
{
    return drv->prepare(dict, opaque);
}

gboolean bd_node_prepare(GVariant *options, GError **errp)
{
    return visit(options, prepare_one, errp);
}

static gboolean drop_one(const BdDriver *drv, GVariant *dict,
                         gpointer opaque)
{
    if (drv->prepare_drop) {
        drv->prepare_drop(dict);
    }
    return TRUE;
}

void bd_node_prepare_drop(GVariant *options)
{
    BD_GLOBAL_STATE_CODE();

    visit(options, drop_one, NULL);
}

/* --- work an open leaves to a thread --- */

typedef struct {
    const BdOpenOffloadOps *ops;
    gpointer data;
} OffloadItem;

static void offload_item_free(gpointer opaque)
{
    OffloadItem *item = opaque;

    if (item->ops->free) {
        item->ops->free(item->data);
    }
    g_free(item);
}

/* The work queued since bd_open_offload_begin(), or NULL outside. */
static GPtrArray *offload_queue;

void bd_open_offload_begin(void)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(!offload_queue);
    offload_queue = g_ptr_array_new_with_free_func(offload_item_free);
}

GPtrArray *bd_open_offload_end(void)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *work = g_steal_pointer(&offload_queue);

    g_assert(work);
    if (work->len == 0) {
        g_ptr_array_unref(work);
        return NULL;
    }
    return work;
}

gboolean bd_open_offload_enabled(void)
{
    BD_GLOBAL_STATE_CODE();

    return offload_queue != NULL;
}

gboolean bd_open_offload_queued(void)
{
    BD_GLOBAL_STATE_CODE();

    return offload_queue && offload_queue->len > 0;
}

void bd_open_offload_queue(const BdOpenOffloadOps *ops, gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    OffloadItem *item = g_new0(OffloadItem, 1);

    g_assert(offload_queue);
    item->ops = ops;
    item->data = data;
    g_ptr_array_add(offload_queue, item);
}

void bd_open_offload_run(GPtrArray *work)
{
    for (guint i = 0; work && i < work->len; i++) {
        OffloadItem *item = g_ptr_array_index(work, i);

        item->ops->run(item->data);
    }
}

void bd_open_offload_drop(GPtrArray *work)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; work && i < work->len; i++) {
        OffloadItem *item = g_ptr_array_index(work, i);

        if (item->ops->drop) {
            item->ops->drop(item->data);
        }
    }
    if (work) {
        g_ptr_array_unref(work);
    }
}
