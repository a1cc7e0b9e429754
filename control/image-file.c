/* SPDX-License-Identifier: MIT */
/* Image files named by file name, for the commands that take one
 * (drive-backup, drive-mirror): creating one as QEMU's bdrv_img_create,
 * and guessing the format of an existing one.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/qmp-int.h"
#include "formats/filename.h"
#include "formats/registry.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/main-thread.h"

/* Run driver 'drv_name''s blockdev-create with 'opts' (floating). */
static gboolean run_create(const char *drv_name, GVariant *opts,
                           GError **errp)
{
    const BdDriver *drv = bd_driver_find(drv_name);
    g_autoptr(GVariant) ref = g_variant_ref_sink(opts);

    if (!drv || !drv->create) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Format driver '%s' does not support image creation",
                    drv_name);
        return FALSE;
    }
    return drv->create(ref, errp);
}

gboolean bd_ctl_image_create(const char *filename, const char *fmt,
                             uint64_t size, BdNode *backing, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gboolean raw = strcmp(fmt, "raw") == 0;
    GVariantDict d;

    if (!bd_driver_find(fmt)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown file format '%s'", fmt);
        return FALSE;
    }
    if (bd_formats_filename_is_remote(filename)) {
        /* QEMU's bdrv_create: the nbd protocol makes no images. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Driver '%s' does not support image creation",
                    g_str_has_prefix(filename, "json:") ? "json" : "nbd");
        return FALSE;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", filename);
    g_variant_dict_insert(&d, "size", "t", raw ? size : 0);
    if (!run_create("file", g_variant_dict_end(&d), errp)) {
        return FALSE;
    }
    if (raw) {
        return TRUE;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", filename);
    g_autoptr(GVariant) fopts = g_variant_ref_sink(g_variant_dict_end(&d));
    g_autoptr(BdNode) file = bd_node_open(fopts, errp);
    if (!file) {
        return FALSE;
    }
    /* The format writes through a handle that may grow the file. */
    g_autoptr(BdEntry) entry = bd_entry_new(file, NULL,
                                            BD_PERM_WRITE | BD_PERM_RESIZE,
                                            BD_PERM_ALL, errp);
    if (!entry) {
        return FALSE;
    }
    bd_entry_set_allow_beyond_eof(entry, TRUE);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    g_variant_dict_insert(&d, "file", "s", file->node_name);
    g_variant_dict_insert(&d, "size", "t", size);
    if (backing && backing->filename) {
        g_variant_dict_insert(&d, "backing-file", "s", backing->filename);
        g_variant_dict_insert(&d, "backing-fmt", "s", backing->drv->name);
    }
    return run_create(fmt, g_variant_dict_end(&d), errp);
}
