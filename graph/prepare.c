/* SPDX-License-Identifier: MIT */
/* Preparing an open off the main thread: the drivers' prepare callbacks
 * for every node a BlockdevOptions tree defines (see BdDriver.prepare).
 *
 * Thread model: bd_node_prepare runs on any thread and reads only the
 * options and the driver registry, which is fixed after start-up; the
 * others run on the main thread.
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
