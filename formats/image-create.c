/* SPDX-License-Identifier: MIT */
/* Image creation by file name (image-create.h).
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "formats/filename.h"
#include "formats/image-create.h"
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

gboolean bd_formats_image_create(const char *filename, const char *fmt,
                                 uint64_t size, const char *backing_file,
                                 const char *backing_fmt, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gboolean raw = strcmp(fmt, "raw") == 0;
    const BdDriver *drv = bd_driver_find(fmt);
    GVariantDict d;

    if (!drv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown file format '%s'", fmt);
        return FALSE;
    }
    /* As QEMU's bdrv_img_create, before anything is created. */
    if (backing_file && !drv->change_backing_file) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Backing file not supported for file format '%s'", fmt);
        return FALSE;
    }
    if (g_str_has_prefix(filename, "rbd:")) {
        /* QEMU creates the RBD image here; blockd does not connect to a
         * cluster on the main loop, so it is made beforehand. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Creating an rbd: image by file name is not supported: "
                    "create it (blockdev-create, rbd create) and use "
                    "mode=existing");
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
    if (backing_file && backing_fmt) {
        g_variant_dict_insert(&d, "backing-file", "s", backing_file);
        g_variant_dict_insert(&d, "backing-fmt", "s", backing_fmt);
    }
    return run_create(fmt, g_variant_dict_end(&d), errp);
}
