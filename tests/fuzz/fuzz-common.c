/* SPDX-License-Identifier: MIT */
/* Shared set-up of the fuzz targets (fuzz-common.h). */
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "control/control.h"
#include "control/input.h"
#include "control/qmp-int.h"
#include "export-nbd/nbd-server.h"
#include "export/export.h"
#include "formats/registry.h"
#include "graph/main-thread.h"
#include "objects/object.h"
#include "tests/fuzz/fuzz-common.h"

static BdQmpState session = { .negotiated = TRUE };
static char *tmpdir;

/* Below warnings nothing is printed: a fuzzer runs millions of inputs
 * and each refused one logs.  Criticals abort (see g_log_set_always_fatal). */
static GLogWriterOutput quiet_writer(GLogLevelFlags level,
                                     const GLogField *fields, gsize n,
                                     gpointer opaque)
{
    if (!(level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))) {
        return G_LOG_WRITER_HANDLED;
    }
    g_log_writer_standard_streams(level, fields, n, opaque);
    /* GLib ends a fatal message with SIGTRAP, which libFuzzer does not
     * catch: the input would be lost.  abort() makes it a crash that
     * libFuzzer reports and saves (crash-*). */
    abort();
}

static void remove_tmpdir(void)
{
    if (tmpdir) {
        g_autoptr(GDir) dir = g_dir_open(tmpdir, 0, NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
            g_autofree char *path = g_build_filename(tmpdir, name, NULL);
            g_remove(path);
        }
        g_rmdir(tmpdir);
    }
}

void bd_fuzz_init(void)
{
    static gboolean done;

    if (done) {
        return;
    }
    done = TRUE;
    bd_main_thread_claim();
    g_log_set_writer_func(quiet_writer, NULL, NULL);
    g_log_set_always_fatal(G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL);
    bd_formats_register_all();
    bd_objects_register_builtin();
    bd_export_register_driver(&bd_nbd_export_driver);
    bd_control_init();
    tmpdir = g_dir_make_tmp("blockd-fuzz-XXXXXX", NULL);
    if (!tmpdir) {
        fprintf(stderr, "fuzz: cannot make a temporary directory\n");
        abort();
    }
    atexit(remove_tmpdir);
}

const char *bd_fuzz_tmpdir(void)
{
    return tmpdir;
}

G_GNUC_PRINTF(1, 0)
static JsonNode *qmp_v(const char *fmt, va_list ap)
{
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) req = bd_json_parse(text, -1, &err);

    if (!req) {
        fprintf(stderr, "fuzz: bad fixture request %s: %s\n", text,
                err->message);
        abort();
    }
    return bd_qmp_dispatch(&session, req, NULL, NULL);
}

JsonNode *bd_fuzz_qmp(const char *fmt, ...)
{
    va_list ap;
    JsonNode *reply;

    va_start(ap, fmt);
    reply = qmp_v(fmt, ap);
    va_end(ap);
    return reply;
}

void bd_fuzz_qmp_ok(const char *fmt, ...)
{
    va_list ap;
    g_autoptr(JsonNode) reply = NULL;

    va_start(ap, fmt);
    reply = qmp_v(fmt, ap);
    va_end(ap);
    if (json_object_has_member(json_node_get_object(reply), "error")) {
        g_autofree char *text = bd_json_to_string(reply);

        fprintf(stderr, "fuzz: fixture request failed: %s\n", text);
        abort();
    }
}

void bd_fuzz_iterate(void)
{
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}
