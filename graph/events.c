/* SPDX-License-Identifier: MIT */
/* The event publication point: emitters call bd_event_emit(), control/
 * subscribes as the single sink. */
#include "graph/events.h"
#include "graph/error.h"
#include "graph/main-thread.h"

/* Set once at start-up before any thread runs; read from any thread. */
static BdEventSink event_sink;
static gpointer event_sink_opaque;

void bd_event_set_sink(BdEventSink sink, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    event_sink = sink;
    event_sink_opaque = opaque;
}

void bd_event_emit(const char *name, GVariant *data)
{
    if (data) {
        g_variant_ref_sink(data);
    }
    if (event_sink) {
        event_sink(name, data, event_sink_opaque);
    }
    if (data) {
        g_variant_unref(data);
    }
}

/* Not G_DEFINE_QUARK: its plain static is set by whichever thread asks
 * first, and NBD connection threads and job threads build errors at the
 * same time as the main thread.  g_quark_from_string, not _static_:
 * GLib's quark table would keep a pointer into our read-only data, and
 * the graph may live in a plugin that is unloaded before the process
 * (and GLib) ends. */
GQuark bd_error_quark(void)
{
    static gsize quark;

    if (g_once_init_enter(&quark)) {
        g_once_init_leave(&quark,
                          g_quark_from_string("blockd-error-quark"));
    }
    return (GQuark)quark;
}

void bd_prefix_backing_error(GError **errp)
{
    if (errp && *errp &&
        !g_error_matches(*errp, BD_ERROR, BD_ERROR_CHAIN_LOOP)) {
        g_prefix_error(errp, "Could not open backing file: ");
    }
}
