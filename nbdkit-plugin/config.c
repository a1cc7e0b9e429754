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
 *   object=throttle-group,id=tg0,limits.bps-total=N   (repeatable)
 *
 * defines a throttle group as --object does, for 'throttle' nodes of the
 * blockdev graph; groups are created when the parameters are complete,
 * before the graph opens, and deleted after it closes.
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
#include "formats/throttle-group.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "nbdkit-plugin/blockd-plugin.h"

static struct {
    char *image;        /* absolute path */
    char *format;
    char *blockdev;
    GVariant *options;  /* validated BlockdevOptions */
    GPtrArray *objects; /* object= values, in order */
    GPtrArray *groups;  /* ids of the throttle groups created */
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
    if (strcmp(key, "object") == 0) {
        if (!config.objects) {
            config.objects = g_ptr_array_new_with_free_func(g_free);
        }
        g_ptr_array_add(config.objects, g_strdup(value));
        return 0;
    }
    nbdkit_error(BD_PLUGIN_NAME ": unknown parameter '%s' "
                 "(expected image, format, blockdev or object)", key);
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

/* The string member 'name' of a parsed option, with QEMU's messages
 * when it is absent or not a string. */
static const char *str_member(JsonObject *obj, const char *name,
                              GError **errp)
{
    JsonNode *n = json_object_get_member(obj, name);

    if (!n) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' is missing", name);
        return NULL;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter type for '%s', expected: string",
                    name);
        return NULL;
    }
    return json_node_get_string(n);
}

/* One object= parameter: --object's syntax, throttle-group only (the
 * one object type the graph's drivers use by themselves). */
static gboolean add_object(const char *arg, GError **errp)
{
    g_autoptr(JsonNode) json = NULL;
    g_autoptr(GVariant) props = NULL;
    g_autofree char *id = NULL;
    gboolean keyval = FALSE;
    BdThrottleConfig cfg;

    json = bd_option_parse(arg, "qom-type", &keyval, errp);
    if (!json) {
        return FALSE;
    }
    JsonObject *obj = json_node_get_object(json);
    const char *type = str_member(obj, "qom-type", errp);
    if (!type) {
        return FALSE;
    }
    if (strcmp(type, "throttle-group") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "object type '%s' is not supported here "
                    "(only throttle-group)", type);
        return FALSE;
    }
    id = g_strdup(str_member(obj, "id", errp));
    if (!id) {
        return FALSE;
    }
    if (!bd_id_wellformed(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'id' expects an identifier");
        return FALSE;
    }
    /* The rest is ThrottleGroupProperties, checked as object-add does. */
    json_object_remove_member(obj, "qom-type");
    json_object_remove_member(obj, "id");
    props = bd_validate(&bd_throttle_group_props_type, json, keyval, errp);
    if (!props) {
        return FALSE;
    }
    bd_throttle_config_init(&cfg);
    if (!bd_throttle_config_from_props(&cfg, props, errp)) {
        return FALSE;
    }
    if (bd_throttle_group_exists(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "attempt to add duplicate property '%s' to object "
                    "(type 'container')", id);
        return FALSE;
    }
    if (!bd_throttle_config_is_valid(&cfg, errp)) {
        return FALSE;
    }
    bd_throttle_group_create(id, &cfg);
    g_ptr_array_add(config.groups, g_steal_pointer(&id));
    return TRUE;
}

static int add_objects(void)
{
    g_autoptr(GError) err = NULL;

    config.groups = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; config.objects && i < config.objects->len; i++) {
        const char *arg = config.objects->pdata[i];
        if (!add_object(arg, &err)) {
            nbdkit_error(BD_PLUGIN_NAME ": object '%s': %s", arg,
                         err->message);
            return -1;
        }
    }
    return 0;
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
    if (add_objects() < 0) {
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
    BD_GLOBAL_STATE_CODE();

    /* The graph is closed: no throttle node holds a group any more. */
    for (guint i = 0; config.groups && i < config.groups->len; i++) {
        g_autoptr(GError) err = NULL;
        if (!bd_throttle_group_delete(config.groups->pdata[i], &err)) {
            nbdkit_error(BD_PLUGIN_NAME ": %s", err->message);
        }
    }
    g_clear_pointer(&config.groups, g_ptr_array_unref);
    g_clear_pointer(&config.objects, g_ptr_array_unref);
    g_clear_pointer(&config.image, g_free);
    g_clear_pointer(&config.format, g_free);
    g_clear_pointer(&config.blockdev, g_free);
    g_clear_pointer(&config.options, g_variant_unref);
}
