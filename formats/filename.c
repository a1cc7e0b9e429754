/* SPDX-License-Identifier: MIT */
/* Image file names into node options, as QEMU reads a name where a
 * command or an image header gives one (see filename.h).
 *
 * Thread model: the parser hook is set once at start-up on the main
 * thread, before any name is read; the rest has no state.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <string.h>

#include "graph/error.h"
#include "formats/filename.h"
#include "formats/registry.h"
#include "formats/nbd/nbd-int.h"
#ifdef BD_HAVE_RBD
#include "formats/rbd/rbd-int.h"
#endif

static BdJsonOptionsParser json_parser;

void bd_formats_set_json_parser(BdJsonOptionsParser parser)
{
    json_parser = parser;
}

/* QEMU's protocol prefixes that the nbd driver parses. */
static gboolean is_nbd_name(const char *filename)
{
    return g_str_has_prefix(filename, "nbd:") ||
           g_str_has_prefix(filename, "nbd+unix:") ||
           g_str_has_prefix(filename, "nbd+tcp:");
}

/* QEMU's legacy rbd:pool/image... names (formats/rbd/filename.c). */
static gboolean is_rbd_name(const char *filename)
{
    return g_str_has_prefix(filename, "rbd:");
}

gboolean bd_formats_filename_is_remote(const char *filename)
{
    return is_nbd_name(filename) || is_rbd_name(filename) ||
           g_str_has_prefix(filename, "json:");
}

/* A name from an image (a vmdk extent, a backing file) is bytes; node
 * options are GVariant strings, which must be UTF-8 (g_variant_new_string
 * fails a critical otherwise: found by tests/fuzz/fuzz-images with a vmdk
 * extent name).  Such a name is refused, with its bytes shown as U+FFFD. */
static gboolean filename_valid(const char *filename, GError **errp)
{
    g_autofree char *shown = NULL;

    if (g_utf8_validate(filename, -1, NULL)) {
        return TRUE;
    }
    shown = g_utf8_make_valid(filename, -1);
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Could not open '%s': the file name is not valid UTF-8",
                shown);
    return FALSE;
}

GVariant *bd_formats_protocol_options(const char *filename, GError **errp)
{
    GVariantDict d;

    if (!filename_valid(filename, errp)) {
        return NULL;
    }
    g_variant_dict_init(&d, NULL);
    if (is_nbd_name(filename)) {
        g_variant_dict_insert(&d, "driver", "s", "nbd");
        if (!nbd_filename_parse(filename, &d, errp)) {
            g_variant_dict_clear(&d);
            return NULL;
        }
        return g_variant_dict_end(&d);
    }
    if (is_rbd_name(filename)) {
#ifdef BD_HAVE_RBD
        g_variant_dict_insert(&d, "driver", "s", "rbd");
        if (!rbd_filename_parse(filename, &d, errp)) {
            g_variant_dict_clear(&d);
            return NULL;
        }
        return g_variant_dict_end(&d);
#else
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown protocol 'rbd' (blockd was built without "
                    "librbd)");
        g_variant_dict_clear(&d);
        return NULL;
#endif
    }
    if (g_str_has_prefix(filename, "json:")) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "A json: file name cannot be used here: '%s'",
                    filename);
        g_variant_dict_clear(&d);
        return NULL;
    }
    /* "file:PATH" names the file protocol explicitly. */
    if (g_str_has_prefix(filename, "file:")) {
        filename += strlen("file:");
    }
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", filename);
    return g_variant_dict_end(&d);
}

GVariant *bd_formats_image_options(const char *filename, const char *fmt,
                                   const char *relative_to, GError **errp)
{
    g_autofree char *path = NULL;
    g_autoptr(GVariant) file = NULL;
    GVariantDict d;

    if (!filename_valid(filename, errp)) {
        return NULL;
    }
    if (g_str_has_prefix(filename, "json:")) {
        if (!json_parser) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "json: file names are not supported here");
            return NULL;
        }
        /* As QEMU: the name gives the node's options whole. */
        return json_parser(filename + strlen("json:"), fmt, errp);
    }
    if (is_nbd_name(filename) || is_rbd_name(filename)) {
        path = g_strdup(filename);
        fmt = fmt ? fmt : "raw";
    } else {
        if (g_str_has_prefix(filename, "file:")) {
            filename += strlen("file:");
        }
        path = relative_to && !g_path_is_absolute(filename)
               ? g_build_filename(relative_to, filename, NULL)
               : g_strdup(filename);
        fmt = fmt ? fmt : bd_formats_probe_file(path);
    }
    if (!bd_driver_find(fmt)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown driver '%s'", fmt);
        return NULL;
    }
    file = bd_formats_protocol_options(path, errp);
    if (!file) {
        return NULL;
    }
    g_variant_ref_sink(file);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    g_variant_dict_insert_value(&d, "file", file);
    return g_variant_ref_sink(g_variant_dict_end(&d));
}
