/* SPDX-License-Identifier: MIT */
/* --log: GLib's structured logging with a level and a target.
 *
 * Without --log, GLib's default writer stays (warnings and errors on
 * stderr, debug with G_MESSAGES_DEBUG).  With it, messages up to the
 * level go to journald when the daemon runs under systemd's journal
 * (target=auto: g_log_writer_is_journald finds stderr connected to a
 * socket under /run/systemd/journal/, as systemd connects a service's;
 * tests/integration/journal_sink.py plays that part), or to stderr; each
 * subsystem logs under its own G_LOG_DOMAIN, and the lines at info
 * level say what changed: clients connecting and going (with the reason
 * a handshake failed), nodes opened and closed, job state changes.
 *
 * Thread model: set up once on the main thread before any other thread
 * exists; the writer runs on any thread (GLib serialises nothing: each
 * call writes one whole line).
 */
#include <string.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "graph/error.h"
#include "graph/main-thread.h"

typedef enum { TARGET_AUTO, TARGET_STDERR, TARGET_JOURNALD } LogTarget;

static GLogLevelFlags max_level;       /* the least severe level shown */
static LogTarget target;

/* GLib's levels from the most severe: error, critical, warning,
 * message, info, debug (their flag values grow in that order). */
static GLogWriterOutput writer(GLogLevelFlags level, const GLogField *fields,
                               gsize n, gpointer data)
{
    GLogLevelFlags l = level & G_LOG_LEVEL_MASK;

    if (l > max_level) {
        return G_LOG_WRITER_HANDLED;
    }
    if (target == TARGET_JOURNALD ||
        (target == TARGET_AUTO && g_log_writer_is_journald(STDERR_FILENO))) {
        if (g_log_writer_journald(level, fields, n, data) ==
            G_LOG_WRITER_HANDLED) {
            return G_LOG_WRITER_HANDLED;
        }
        /* No journal to talk to: stderr rather than nothing. */
    }
    return g_log_writer_standard_streams(level, fields, n, data);
}

/* --log's argument into a level and a target; changes nothing. */
static gboolean parse_log(const char *arg, GLogLevelFlags *lvl_out,
                          LogTarget *tgt_out, GError **errp)
{
    static const struct { const char *name; GLogLevelFlags flag; } levels[] = {
        { "error", G_LOG_LEVEL_CRITICAL }, { "warning", G_LOG_LEVEL_WARNING },
        { "info", G_LOG_LEVEL_INFO }, { "debug", G_LOG_LEVEL_DEBUG },
    };
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    GLogLevelFlags lvl = G_LOG_LEVEL_INFO;
    LogTarget tgt = TARGET_AUTO;

    for (guint i = 0; items[i]; i++) {
        char *eq = strchr(items[i], '=');
        const char *key = eq ? items[i] : "level";
        const char *val = eq ? eq + 1 : items[i];
        gboolean found = FALSE;

        if (eq) {
            *eq = '\0';
        }
        if (strcmp(key, "level") == 0) {
            for (guint j = 0; j < G_N_ELEMENTS(levels); j++) {
                if (strcmp(val, levels[j].name) == 0) {
                    lvl = levels[j].flag;
                    found = TRUE;
                }
            }
            if (!found) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "Parameter 'level' does not accept value '%s' "
                            "(error, warning, info, debug)", val);
                return FALSE;
            }
        } else if (strcmp(key, "target") == 0) {
            if (strcmp(val, "auto") == 0) {
                tgt = TARGET_AUTO;
            } else if (strcmp(val, "stderr") == 0) {
                tgt = TARGET_STDERR;
            } else if (strcmp(val, "journald") == 0) {
                tgt = TARGET_JOURNALD;
            } else {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "Parameter 'target' does not accept value '%s' "
                            "(auto, stderr, journald)", val);
                return FALSE;
            }
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", key);
            return FALSE;
        }
    }
    *lvl_out = lvl;
    *tgt_out = tgt;
    return TRUE;
}

gboolean bd_daemon_check_log(const char *arg, GError **errp)
{
    GLogLevelFlags lvl;
    LogTarget tgt;

    return parse_log(arg, &lvl, &tgt, errp);
}

gboolean bd_daemon_apply_log(const char *arg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    static gboolean installed;
    GLogLevelFlags lvl;
    LogTarget tgt;

    if (!parse_log(arg, &lvl, &tgt, errp)) {
        return FALSE;
    }
    max_level = lvl;
    target = tgt;
    if (!installed) {
        /* GLib allows one writer per process, set before any message. */
        g_log_set_writer_func(writer, NULL, NULL);
        installed = TRUE;
    }
    return TRUE;
}
