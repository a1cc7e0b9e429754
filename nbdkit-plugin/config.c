/* SPDX-License-Identifier: MIT */
/* The plugin's parameters (image, format, blockdev) turned into one
 * validated BlockdevOptions, with the daemon's schema and messages.
 *
 *   image=disk.qcow2 [format=F]  ->  {"driver": F or probed,
 *                                     "discard": "unmap",
 *                                     "file": {"driver": "file",
 *                                              "filename": "/abs/disk.qcow2"}}
 *   blockdev='{...}'             ->  as --blockdev '{...}' takes it
 *
 * Both forms go through bd_validate() against bd_blockdev_options_schema(),
 * so a mistake reads as it would on blockd's command line.
 *
 * Thread model: nbdkit's main thread, before any connection (see
 * blockd-plugin.h).
 */
#define G_LOG_DOMAIN "blockd-nbdkit"

#include <string.h>
#include <unistd.h>
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include "control/input.h"
#include "formats/registry.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "nbdkit-plugin/blockd-plugin.h"

static struct {
    char *image;        /* absolute path */
    char *format;
    char *blockdev;
    GVariant *options;  /* validated BlockdevOptions */
} config;

/* One value per key: a second one is a mistake, not an override. */
static int set_once(char **slot, const char *key, char *value)
{
    if (*slot) {
        nbdkit_error(BD_PLUGIN_NAME ": parameter '%s' given more than once",
                     key);
        g_free(value);
        return -1;
    }
    *slot = value;
    return 0;
}

int bd_plugin_config(const char *key, const char *value)
{
    BD_GLOBAL_STATE_CODE();

    if (strcmp(key, "image") == 0) {
        /* Absolute now: nbdkit changes to / when it daemonizes. */
        char *path = nbdkit_absolute_path(value);
        if (!path) {
            return -1;
        }
        int r = set_once(&config.image, key, g_strdup(path));
        free(path);
        return r;
    }
    if (strcmp(key, "format") == 0) {
        return set_once(&config.format, key, g_strdup(value));
    }
    if (strcmp(key, "blockdev") == 0) {
        return set_once(&config.blockdev, key, g_strdup(value));
    }
    nbdkit_error(BD_PLUGIN_NAME ": unknown parameter '%s' "
                 "(expected image, format or blockdev)", key);
    return -1;
}

/* The BlockdevOptions of an image file, as JSON. */
static JsonNode *image_options(void)
{
    const char *fmt = config.format ? config.format
                                    : bd_formats_probe_file(config.image);
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "driver");
    json_builder_add_string_value(b, fmt);
    /* NBD trim frees space, as nbdkit's file plugin does (the daemon's
     * default, QEMU's, is to ignore it); inherited by the file node. */
    json_builder_set_member_name(b, "discard");
    json_builder_add_string_value(b, "unmap");
    /* A file we may not write is served read-only (nbdkit then tells
     * clients so) rather than refused. */
    if (access(config.image, W_OK) != 0 && access(config.image, R_OK) == 0) {
        json_builder_set_member_name(b, "read-only");
        json_builder_add_boolean_value(b, TRUE);
    }
    json_builder_set_member_name(b, "file");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "driver");
    json_builder_add_string_value(b, "file");
    json_builder_set_member_name(b, "filename");
    json_builder_add_string_value(b, config.image);
    json_builder_end_object(b);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static GVariant *build_options(GError **errp)
{
    g_autoptr(JsonNode) json = NULL;
    gboolean keyval = FALSE;

    if (config.blockdev) {
        /* The same parser as --blockdev: JSON when it starts with '{'. */
        json = bd_option_parse(config.blockdev, "driver", &keyval, errp);
    } else {
        json = image_options();
    }
    if (!json) {
        return NULL;
    }
    return bd_validate(bd_blockdev_options_schema(), json, keyval, errp);
}

int bd_plugin_config_complete(void)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;

    if (!config.image && !config.blockdev) {
        nbdkit_error(BD_PLUGIN_NAME
                     ": image or blockdev parameter is required");
        return -1;
    }
    if (config.image && config.blockdev) {
        nbdkit_error(BD_PLUGIN_NAME
                     ": give either image or blockdev, not both");
        return -1;
    }
    if (config.format && !config.image) {
        nbdkit_error(BD_PLUGIN_NAME ": format goes with image; with "
                     "blockdev the graph names its drivers itself");
        return -1;
    }
    config.options = build_options(&err);
    if (!config.options) {
        nbdkit_error(BD_PLUGIN_NAME ": %s: %s",
                     config.blockdev ? "blockdev" : "image", err->message);
        return -1;
    }
    return 0;
}

GVariant *bd_plugin_options(void)
{
    return config.options;
}

void bd_plugin_config_free(void)
{
    g_clear_pointer(&config.image, g_free);
    g_clear_pointer(&config.format, g_free);
    g_clear_pointer(&config.blockdev, g_free);
    g_clear_pointer(&config.options, g_variant_unref);
}
