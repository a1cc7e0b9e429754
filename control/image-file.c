/* SPDX-License-Identifier: MIT */
/* Image files named by file name, for the commands that take one
 * (drive-backup, drive-mirror, blockdev-snapshot-sync): created as
 * QEMU's bdrv_img_create (formats/image-create.c does the work), and
 * opened in stages (control/open-stages.c) after a preparation off the
 * main thread where the name's protocol node has one (an rbd: name
 * connects to its cluster, for up to its connect timeout: the main loop
 * and every other QMP client go on meanwhile, as with blockdev-add).
 *
 * Thread model: main thread only.
 */
#include <string.h>

#include "control/qmp-int.h"
#include "formats/filename.h"
#include "formats/image-create.h"
#include "graph/main-thread.h"
#include "graph/node.h"

gboolean bd_ctl_image_create(const char *filename, const char *fmt,
                             uint64_t size, BdNode *backing, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    return bd_formats_image_create(filename, fmt, size,
                                   backing ? backing->filename : NULL,
                                   backing ? backing->drv->name : NULL,
                                   errp);
}

/* Add to 'files' the protocol options of the existing image that the
 * arguments 'dict' name in member 'key' (mode "existing"), when they
 * prepare off the main thread.  Another mode creates the image first,
 * which connects on its own. */
static void collect_file(GVariant *dict, const char *key, GPtrArray *files)
{
    const char *filename = NULL, *mode = NULL;
    GVariant *file;

    if (!g_variant_lookup(dict, key, "&s", &filename) ||
        !g_variant_lookup(dict, "mode", "&s", &mode) ||
        strcmp(mode, "existing") != 0 ||
        !bd_formats_filename_is_remote(filename)) {
        return;
    }
    file = bd_formats_protocol_options(filename, NULL);
    if (!file) {
        return;             /* the command reports the bad name */
    }
    g_variant_ref_sink(file);
    if (bd_node_needs_prepare(file)) {
        g_ptr_array_add(files, file);
    } else {
        g_variant_unref(file);
    }
}

gboolean bd_ctl_open_by_name_async(GVariant *args, BdQmpPending *p,
                                   const char *key, BdQmpHandler fn)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *files = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);

    collect_file(args, key, files);
    bd_ctl_run_open_stages(args, p, files, fn);
    return TRUE;
}

gboolean bd_ctl_transaction_opens_async(GVariant *args, BdQmpPending *p,
                                        BdQmpHandler fn)
{
    BD_GLOBAL_STATE_CODE();

    static const struct { const char *type, *key; } by_name[] = {
        { "drive-backup", "target" },
        { "blockdev-snapshot-sync", "snapshot-file" },
    };
    GPtrArray *files = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);
    g_autoptr(GVariant) actions = g_variant_lookup_value(args, "actions",
                                                         NULL);
    gsize n = actions && g_variant_is_container(actions)
              ? g_variant_n_children(actions) : 0;

    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) item = g_variant_get_child_value(actions, i);
        g_autoptr(GVariant) data = NULL;
        const char *type = NULL;

        while (g_variant_is_of_type(item, G_VARIANT_TYPE_VARIANT)) {
            GVariant *inner = g_variant_get_variant(item);
            g_variant_unref(item);
            item = inner;
        }
        if (!g_variant_is_of_type(item, G_VARIANT_TYPE_VARDICT) ||
            !g_variant_lookup(item, "type", "&s", &type)) {
            continue;
        }
        data = g_variant_lookup_value(item, "data", G_VARIANT_TYPE_VARDICT);
        for (gsize k = 0; data && k < G_N_ELEMENTS(by_name); k++) {
            if (!strcmp(type, by_name[k].type)) {
                collect_file(data, by_name[k].key, files);
            }
        }
    }
    bd_ctl_run_open_stages(args, p, files, fn);
    return TRUE;
}
