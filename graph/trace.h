/* SPDX-License-Identifier: MIT */
/* Named trace points (-T/--trace, trace-event-get-state/-set-state):
 * QEMU's model, one table of events, each off until a pattern turns it
 * on; an enabled event writes one line to the trace output (stderr, or
 * the file of --trace file=F) with its arguments.
 *
 * Off, a trace point costs one relaxed load and a predicted branch.
 *
 * Thread model: events are emitted from any thread (the output is
 * written under a lock, one whole line at a time); states are changed
 * on the main thread (options, QMP) and read with atomics.
 */
#ifndef BD_GRAPH_TRACE_H
#define BD_GRAPH_TRACE_H

#include <glib.h>

/* Every event, in the order of the table in trace.c. */
typedef enum {
    BD_TRACE_NBD_CLIENT_CONNECT,
    BD_TRACE_NBD_CLIENT_DISCONNECT,
    BD_TRACE_NBD_HANDSHAKE_FAILED,
    BD_TRACE_NBD_REQUEST,
    BD_TRACE_FUSE_REQUEST,
    BD_TRACE_JOB_STATUS_CHANGE,
    BD_TRACE_NODE_OPEN,
    BD_TRACE_NODE_CLOSE,
    BD_TRACE_DRAINED_BEGIN,
    BD_TRACE_DRAINED_END,
    BD_TRACE_BLOCKDEV_ADD,
    BD_TRACE_BLOCKDEV_DEL,
    BD_TRACE_BDRV_REOPEN_PREPARE,
    BD_TRACE_BDRV_REOPEN_COMMIT,
    BD_TRACE_BDRV_REOPEN_ABORT,
    BD_TRACE_BDRV_CHILD_CHANGE,
    BD_TRACE_BDRV_REFRESH_PERMS,
    BD_TRACE_JOB_STATE_TRANSITION,
    BD_TRACE_JOB_APPLY_VERB,
    BD_TRACE__MAX,
} BdTraceEvent;

extern int bd_trace_state[BD_TRACE__MAX];     /* atomics: 1 = on */

#define BD_TRACE(ev, ...)                                                  \
    do {                                                                   \
        if (G_UNLIKELY(__atomic_load_n(&bd_trace_state[ev],                \
                                       __ATOMIC_RELAXED))) {               \
            bd_trace_emit(ev, __VA_ARGS__);                                \
        }                                                                  \
    } while (0)

/* Write one line "NAME ARGS" (with a timestamp and the thread id). */
void bd_trace_emit(BdTraceEvent ev, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

const char *bd_trace_event_name(BdTraceEvent ev);
/* Whether 'name' holds a wildcard (QEMU: '*'); glob matching. */
gboolean bd_trace_is_pattern(const char *name);
/* The event called 'name', or -1. */
int bd_trace_find(const char *name);
/* Turn every event matching 'pattern' on or off; the number matched.
 * Main thread. */
guint bd_trace_set_pattern(const char *pattern, gboolean on);
gboolean bd_trace_enabled(BdTraceEvent ev);
/* Lines of an events file: one pattern per line, '-' before a pattern
 * turns it off, '#' starts a comment.  Main thread. */
gboolean bd_trace_load_events_file(const char *path, GError **errp);
/* Send the output to 'path' (appended), instead of stderr. */
gboolean bd_trace_set_output(const char *path, GError **errp);

#endif
