/* SPDX-License-Identifier: MIT */
/* Trace points: the event table, patterns and the output (trace.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/trace.h"

/* Names as QEMU spells its own: subsystem_what, lower case. */
static const char *const names[BD_TRACE__MAX] = {
    [BD_TRACE_NBD_CLIENT_CONNECT] = "nbd_client_connect",
    [BD_TRACE_NBD_CLIENT_DISCONNECT] = "nbd_client_disconnect",
    [BD_TRACE_NBD_HANDSHAKE_FAILED] = "nbd_handshake_failed",
    [BD_TRACE_NBD_REQUEST] = "nbd_request",
    [BD_TRACE_FUSE_REQUEST] = "fuse_request",
    [BD_TRACE_JOB_STATUS_CHANGE] = "job_status_change",
    [BD_TRACE_NODE_OPEN] = "node_open",
    [BD_TRACE_NODE_CLOSE] = "node_close",
    [BD_TRACE_DRAINED_BEGIN] = "drained_begin",
    [BD_TRACE_DRAINED_END] = "drained_end",
    /* Graph changes: QMP's commands, then QEMU's block.c functions. */
    [BD_TRACE_BLOCKDEV_ADD] = "qmp_blockdev_add",
    [BD_TRACE_BLOCKDEV_DEL] = "qmp_blockdev_del",
    [BD_TRACE_BDRV_REOPEN_PREPARE] = "bdrv_reopen_prepare",
    [BD_TRACE_BDRV_REOPEN_COMMIT] = "bdrv_reopen_commit",
    [BD_TRACE_BDRV_REOPEN_ABORT] = "bdrv_reopen_abort",
    [BD_TRACE_BDRV_CHILD_CHANGE] = "bdrv_replace_child",
    [BD_TRACE_BDRV_REFRESH_PERMS] = "bdrv_refresh_perms",
    /* QEMU's job.c events. */
    [BD_TRACE_JOB_STATE_TRANSITION] = "job_state_transition",
    [BD_TRACE_JOB_APPLY_VERB] = "job_apply_verb",
};

int bd_trace_state[BD_TRACE__MAX];

/* The output: stderr unless --trace file=F.  One line per write, under
 * out_lock so that lines of several threads never mix. */
static GMutex out_lock;
static FILE *out;

void bd_trace_emit(BdTraceEvent ev, const char *fmt, ...)
{
    g_autofree char *args = NULL;
    gint64 now = g_get_real_time();
    va_list ap;

    va_start(ap, fmt);
    args = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_mutex_lock(&out_lock);
    /* QEMU's log backend: "PID@SECONDS.MICROS:name args". */
    fprintf(out ? out : stderr, "%d@%" G_GINT64_FORMAT ".%06d:%s %s\n",
            (int)syscall(SYS_gettid), now / G_USEC_PER_SEC,
            (int)(now % G_USEC_PER_SEC), names[ev], args);
    fflush(out ? out : stderr);
    g_mutex_unlock(&out_lock);
}

const char *bd_trace_event_name(BdTraceEvent ev)
{
    return names[ev];
}

gboolean bd_trace_is_pattern(const char *name)
{
    return strchr(name, '*') != NULL || strchr(name, '?') != NULL;
}

int bd_trace_find(const char *name)
{
    for (int i = 0; i < BD_TRACE__MAX; i++) {
        if (strcmp(names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

guint bd_trace_set_pattern(const char *pattern, gboolean on)
{
    BD_GLOBAL_STATE_CODE();

    guint n = 0;

    for (int i = 0; i < BD_TRACE__MAX; i++) {
        if (g_pattern_match_simple(pattern, names[i])) {
            __atomic_store_n(&bd_trace_state[i], on ? 1 : 0,
                             __ATOMIC_RELAXED);
            n++;
        }
    }
    return n;
}

gboolean bd_trace_enabled(BdTraceEvent ev)
{
    return __atomic_load_n(&bd_trace_state[ev], __ATOMIC_RELAXED) != 0;
}

gboolean bd_trace_load_events_file(const char *path, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autofree char *text = NULL;
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) lines = NULL;

    if (!g_file_get_contents(path, &text, NULL, &err)) {
        /* QEMU's text: the file, then the reason. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s: %s", path,
                    g_strerror(err->code == G_FILE_ERROR_NOENT ? ENOENT
                               : err->code == G_FILE_ERROR_ACCES ? EACCES
                               : EIO));
        return FALSE;
    }
    lines = g_strsplit(text, "\n", -1);
    for (guint i = 0; lines[i]; i++) {
        char *line = g_strstrip(lines[i]);
        if (!*line || *line == '#') {
            continue;
        }
        if (*line == '-') {
            bd_trace_set_pattern(line + 1, FALSE);
        } else {
            bd_trace_set_pattern(line, TRUE);
        }
    }
    return TRUE;
}

gboolean bd_trace_set_output(const char *path, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    FILE *f = fopen(path, "ae");

    if (!f) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Error opening logfile %s: %s", path,
                    g_strerror(errno));
        return FALSE;
    }
    g_mutex_lock(&out_lock);
    if (out) {
        fclose(out);
    }
    out = f;
    g_mutex_unlock(&out_lock);
    return TRUE;
}
