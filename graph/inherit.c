/* SPDX-License-Identifier: MIT */
/* Options a child defined inline inherits from its parent, as QEMU does.
 *
 * A nested definition ("file": {...}) takes from its parent, where it
 * does not set them itself: cache.direct, cache.no-flush, force-share,
 * and read-only/auto-read-only (a COW child instead defaults to
 * read-only on, auto-read-only off).  Below a format node, a non-COW
 * child defaults to discard=unmap: formats respect the unmap policy
 * themselves, so the layers below may always pass discards on.  A child
 * given by node-name keeps its own options.  Main thread.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include "graph/graph-internal.h"
#include "graph/main-thread.h"

static void copy_default(GVariantDict *child, GVariant *parent,
                         const char *key)
{
    g_autoptr(GVariant) v = NULL;

    if (!g_variant_dict_contains(child, key) &&
        (v = bd_opts_lookup(parent, key)) != NULL) {
        g_variant_dict_insert_value(child, key, v);
    }
}

static void set_default_bool(GVariantDict *d, const char *key, gboolean val)
{
    if (!g_variant_dict_contains(d, key)) {
        g_variant_dict_insert(d, key, "b", val);
    }
}

static GVariant *inherit_cache(GVariant *parent_cache, GVariant *child_cache)
{
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(child_cache);

    copy_default(&d, parent_cache, "direct");
    copy_default(&d, parent_cache, "no-flush");
    return g_variant_dict_end(&d);
}

GVariant *bd_child_inherit_options(BdNode *parent, GVariant *child,
                                   BdChildRole role)
{
    BD_GLOBAL_STATE_CODE();

    return bd_inherit_options_from(parent->drv, parent->options, child,
                                   role);
}

GVariant *bd_inherit_options_from(const BdDriver *parent_drv,
                                  GVariant *popts, GVariant *child,
                                  BdChildRole role)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(child);
    g_autoptr(GVariant) pcache = bd_opts_lookup(popts, "cache");
    g_autoptr(GVariant) ccache = bd_opts_lookup(child, "cache");

    if (pcache) {
        g_variant_dict_insert_value(&d, "cache",
                                    inherit_cache(pcache, ccache));
    }
    copy_default(&d, popts, "force-share");
    if (role & BD_CHILD_COW) {
        set_default_bool(&d, "read-only", TRUE);
        set_default_bool(&d, "auto-read-only", FALSE);
    } else {
        copy_default(&d, popts, "read-only");
        copy_default(&d, popts, "auto-read-only");
        if (parent_drv->is_format && !g_variant_dict_contains(&d, "discard")) {
            g_variant_dict_insert(&d, "discard", "s", "unmap");
        }
    }
    return g_variant_dict_end(&d);
}
