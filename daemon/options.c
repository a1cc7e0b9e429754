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

const struct option bd_daemon_long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "blockdev", required_argument, NULL, BD_OPT_BLOCKDEV },
    { "chardev", required_argument, NULL, BD_OPT_CHARDEV },
    { "daemonize", no_argument, NULL, BD_OPT_DAEMONIZE },
    { "export", required_argument, NULL, BD_OPT_EXPORT },
    { "log", required_argument, NULL, BD_OPT_LOG },
    { "metrics", required_argument, NULL, BD_OPT_METRICS },
    { "monitor", required_argument, NULL, BD_OPT_MONITOR },
    { "nbd-server", required_argument, NULL, BD_OPT_NBD_SERVER },
    { "object", required_argument, NULL, BD_OPT_OBJECT },
    { "pidfile", required_argument, NULL, BD_OPT_PIDFILE },
    { "runas", required_argument, NULL, BD_OPT_RUNAS },
    { "chroot", required_argument, NULL, BD_OPT_CHROOT },
    { "run-with", required_argument, NULL, BD_OPT_RUN_WITH },
    { "sandbox", required_argument, NULL, BD_OPT_SANDBOX },
    { "trace", required_argument, NULL, 'T' },
    { NULL, 0, NULL, 0 },
};

const char bd_daemon_short_options[] = "+:hVT:";

/* --trace's entry in bd_daemon_long_options (-T has no index). */
#define TRACE_INDEX 16

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

/* The option's argument, parsed (keyval or JSON) and validated along
 * its schema, or NULL. */
static GVariant *parse_object_option(const ObjectOption *opt,
                                     const char *arg, GError **errp)
{
    g_autoptr(JsonNode) json = NULL;
    gboolean keyval = FALSE;

    json = bd_option_parse(arg, opt->implied_key, &keyval, errp);
    return json ? bd_validate(opt->schema(), json, keyval, errp) : NULL;
}

static gboolean apply_object_option(const ObjectOption *opt, const char *arg,
                                    GError **errp)
{
    g_autoptr(GVariant) value = parse_object_option(opt, arg, errp);

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
 * a file of patterns, 'file' where the lines go.  'items' is the
 * argument split at commas; the values point into it. */
static gboolean parse_trace(GStrv items, const char **enable_out,
                            const char **events_out, const char **file_out,
                            GError **errp)
{
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
    *enable_out = enable;
    *events_out = events;
    *file_out = file;
    return TRUE;
}

/* The file is opened first, so that the events it enables go there
 * from the start. */
gboolean bd_daemon_apply_trace(const char *arg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    const char *enable, *events, *file;

    if (!parse_trace(items, &enable, &events, &file, errp)) {
        return FALSE;
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

gboolean bd_daemon_check_trace(const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    const char *enable, *events, *file;

    return parse_trace(items, &enable, &events, &file, errp);
}

/* One option of the command line checked: its argument parsed and
 * validated, nothing applied. */
static gboolean check_option(int c, int index, const char *arg,
                             GError **errp)
{
    const char *name = bd_daemon_long_options[index].name;

    g_assert(c != 'T' || strcmp(name, "trace") == 0);
    if (c >= 256 && bd_daemon_help_requested(name, arg)) {
        return TRUE;                    /* main() prints the topic */
    }
    switch (c) {
    case 'T':
        return bd_daemon_check_trace(arg, errp);
    case BD_OPT_LOG:
        return bd_daemon_check_log(arg, errp);
    case BD_OPT_CHARDEV:
        return bd_chardev_check(arg, errp);
    case BD_OPT_MONITOR:
        return bd_monitor_check(arg, errp);
    /* These record their setting, which only start-up acts on. */
    case BD_OPT_RUNAS:
        return bd_harden_set_runas(arg, errp);
    case BD_OPT_CHROOT:
        return bd_harden_set_chroot(arg, errp);
    case BD_OPT_RUN_WITH:
        return bd_harden_set_run_with(arg, errp);
    case BD_OPT_SANDBOX:
        return bd_harden_set_sandbox(arg, errp);
    default:
        break;
    }
    for (gsize i = 0; c >= 256 && i < G_N_ELEMENTS(object_options); i++) {
        if (strcmp(name, object_options[i].name) == 0) {
            g_autoptr(GVariant) v = parse_object_option(&object_options[i],
                                                        arg, errp);
            return v != NULL;
        }
    }
    return TRUE;                        /* --pidfile, --daemonize, -h, -V */
}

gboolean bd_daemon_check_argv(int argc, char **argv, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    int c, index = 0;

    opterr = 0;
    optind = 0;                         /* getopt's full reset */
    while ((c = getopt_long(argc, argv, bd_daemon_short_options,
                            bd_daemon_long_options, &index)) != -1) {
        if (c == ':' || c == '?') {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        c == ':' ? "option '%s' requires an argument"
                                 : "unrecognized option '%s'",
                        argv[optind - 1]);
            return FALSE;
        }
        if (c == 'h' && optind < argc && argv[optind][0] != '-') {
            optind++;                   /* --help TOPIC, as main() */
        }
        if (c < 256) {
            index = c == 'T' ? TRACE_INDEX : 0;
        }
        if (!check_option(c, index, optarg, errp)) {
            g_prefix_error(errp, "--%s: ", bd_daemon_long_options[index].name);
            return FALSE;
        }
    }
    if (optind < argc) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unexpected argument: %s", argv[optind]);
        return FALSE;
    }
    return TRUE;
}
