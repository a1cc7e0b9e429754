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

G_DEFINE_QUARK(blockd-error-quark, bd_error)
