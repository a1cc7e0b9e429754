/* SPDX-License-Identifier: MIT */
/* Options a nested child definition inherits from its parent, as QEMU's bdrv_inherited_options.
 *
 * A child defined inline ("file": {...}) takes from its parent, where it
 * does not set them itself: cache.direct, cache.no-flush, force-share,
 * read-only and auto-read-only (a COW child: read-only on, auto off),
 * and discard defaults to "unmap".  A child given by node-name keeps its
 * own options.  Main thread.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include "graph/node.h"
#include "formats/child-opts.h"

static void copy_default(GVariantDict *child, GVariant *parent,
                         const char *key)
{
    g_autoptr(GVariant) v = NULL;

    if (!g_variant_dict_contains(child, key) &&
        (v = bd_opts_lookup(parent, key)) != NULL) {
        g_variant_dict_insert_value(child, key, v);
    }
}

static GVariant *inherit_cache(GVariant *parent_cache, GVariant *child_cache)
{
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(child_cache);

    copy_default(&d, parent_cache, "direct");
    copy_default(&d, parent_cache, "no-flush");
    return g_variant_dict_end(&d);
}

static GVariant *inherit_child(GVariant *parent, GVariant *child,
                               BdChildRole role)
{
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(child);
    g_autoptr(GVariant) pcache = bd_opts_lookup(parent, "cache");
    g_autoptr(GVariant) ccache = bd_opts_lookup(child, "cache");

    if (pcache) {
        g_variant_dict_insert_value(&d, "cache",
                                    inherit_cache(pcache, ccache));
    }
    copy_default(&d, parent, "force-share");
    if (role & BD_CHILD_COW) {
        if (!g_variant_dict_contains(&d, "read-only")) {
            g_variant_dict_insert(&d, "read-only", "b", TRUE);
        }
        if (!g_variant_dict_contains(&d, "auto-read-only")) {
            g_variant_dict_insert(&d, "auto-read-only", "b", FALSE);
        }
    } else {
        copy_default(&d, parent, "read-only");
        copy_default(&d, parent, "auto-read-only");
    }
    if (!g_variant_dict_contains(&d, "discard")) {
        g_variant_dict_insert(&d, "discard", "s", "unmap");
    }
    return g_variant_dict_end(&d);
}

GVariant *bd_formats_inherit_child_options(GVariant *options,
                                           const char *key, BdChildRole role)
{
    g_autoptr(GVariant) child = bd_opts_lookup(options, key);
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(options);

    if (!child || !g_variant_is_of_type(child, G_VARIANT_TYPE_VARDICT)) {
        return g_variant_ref_sink(g_variant_dict_end(&d));
    }
    g_variant_dict_insert_value(&d, key, inherit_child(options, child, role));
    return g_variant_ref_sink(g_variant_dict_end(&d));
}
