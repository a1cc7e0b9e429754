/* SPDX-License-Identifier: MIT */
/* Publishing events (export deleted, job status, ...) without knowing
 * who listens.  control/ subscribes and turns them into QMP events.
 *
 * Thread model: bd_event_emit() may be called from any thread; the sink
 * is called on the emitting thread and must hand the event over to the
 * main loop itself.
 */
#ifndef BD_GRAPH_EVENTS_H
#define BD_GRAPH_EVENTS_H

#include <glib.h>

/* 'data' is an a{sv} GVariant (sink takes a reference; floating is
 * consumed) or NULL for no data. */
typedef void (*BdEventSink)(const char *name, GVariant *data,
                            gpointer opaque);

void bd_event_set_sink(BdEventSink sink, gpointer opaque);
void bd_event_emit(const char *name, GVariant *data);

#endif
