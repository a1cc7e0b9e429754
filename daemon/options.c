/* SPDX-License-Identifier: MIT */
/* The command-line options that configure the daemon, as
 * qemu-storage-daemon's: each takes the keyval or the JSON form and is
 * validated with the same schema as its QMP twin.  Main thread. */
#define G_LOG_DOMAIN "blockd"

#include <string.h>
#include "control/control.h"
#include "daemon/daemon.h"
#include "export/export.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "graph/trace.h"

typedef gboolean (*OptionApply)(GVariant *options, GError **errp);

typedef struct {
    const char *name;                    /* long option, no dashes */
    const char *implied_key;             /* key of a leading bare value */
    const BdSchemaType *(*schema)(void);
    OptionApply apply;
} ObjectOption;

static const ObjectOption object_options[] = {
    { "blockdev", "driver", bd_blockdev_options_schema, bd_cmd_blockdev_add },
    { "nbd-server", NULL, bd_cmd_nbd_server_options_schema,
      bd_cmd_nbd_server_start_flat },
    { "export", "type", bd_export_options_schema, bd_cmd_block_export_add },
    { "metrics", NULL, bd_cmd_metrics_options_schema, bd_cmd_metrics_start },
    { "object", "qom-type", bd_cmd_object_options_schema, bd_cmd_object_add },
};

static gboolean apply_object_option(const ObjectOption *opt, const char *arg,
                                    GError **errp)
{
    g_autoptr(JsonNode) json = NULL;
    g_autoptr(GVariant) value = NULL;
    gboolean keyval = FALSE;

    json = bd_option_parse(arg, opt->implied_key, &keyval, errp);
    if (!json) {
        return FALSE;
    }
    value = bd_validate(opt->schema(), json, keyval, errp);
    return value && opt->apply(value, errp);
}

gboolean bd_daemon_apply_option(const char *name, const char *arg,
                                GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    for (gsize i = 0; i < G_N_ELEMENTS(object_options); i++) {
        if (strcmp(name, object_options[i].name) == 0) {
            return apply_object_option(&object_options[i], arg, errp);
        }
    }
    if (strcmp(name, "chardev") == 0) {
        return bd_chardev_add(arg, errp);
    }
    if (strcmp(name, "monitor") == 0) {
        return bd_monitor_add(arg, errp);
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "unsupported option");
    return FALSE;
}

/* -T as QEMU's: a bare first value is 'enable' (a pattern), 'events'
 * a file of patterns, 'file' where the lines go.  The file is opened
 * first, so that the events it enables go there from the start. */
gboolean bd_daemon_apply_trace(const char *arg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    const char *enable = NULL, *events = NULL, *file = NULL;

    for (guint i = 0; items[i]; i++) {
        char *eq = strchr(items[i], '=');
        if (!eq) {
            if (i > 0) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "Invalid parameter '%s'", items[i]);
                return FALSE;
            }
            enable = items[i];
            continue;
        }
        *eq = '\0';
        if (strcmp(items[i], "enable") == 0) {
            enable = eq + 1;
        } else if (strcmp(items[i], "events") == 0) {
            events = eq + 1;
        } else if (strcmp(items[i], "file") == 0) {
            file = eq + 1;
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", items[i]);
            return FALSE;
        }
    }
    if (file && !bd_trace_set_output(file, errp)) {
        return FALSE;
    }
    if (events && !bd_trace_load_events_file(events, errp)) {
        return FALSE;
    }
    if (enable && *enable) {
        bd_trace_set_pattern(enable, TRUE);
    }
    return TRUE;
}
