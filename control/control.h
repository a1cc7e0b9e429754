/* SPDX-License-Identifier: MIT */
/* The control layer's public API for daemon/: QMP monitors and the
 * command set, and (control/input.h) keyval and JSON option parsing,
 * schema validation and JSON <-> GVariant.
 *
 * Thread model: everything here runs on the main thread (the one that
 * runs the GLib main loop), except bd_control_events_init()'s sink,
 * which may be called from any thread and hands events to the main loop.
 */
#ifndef BD_CONTROL_CONTROL_H
#define BD_CONTROL_CONTROL_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include "graph/schema.h"
#include "control/input.h"

/* --- the QMP server (monitor.c, dispatch.c, events.c) --- */

/* Register every command and subscribe to graph events.  Call once at
 * start-up, after the drivers are registered. */
void bd_control_init(void);

/* --chardev: parse "socket,id=ID,path=P,server=on,wait=off" (or the
 * host/port TCP form) and start listening.  Refused forms give QEMU's
 * messages. */
gboolean bd_chardev_add(const char *arg, GError **errp);
/* --monitor: attach a QMP monitor to a chardev (keyval or JSON). */
gboolean bd_monitor_add(const char *arg, GError **errp);
/* Parse and check the argument of --chardev or --monitor as _add does,
 * short of what depends on the chardevs that exist; starts nothing.
 * Any thread (the command-line fuzz target). */
gboolean bd_chardev_check(const char *arg, GError **errp);
gboolean bd_monitor_check(const char *arg, GError **errp);
/* Close every session and listener and unlink the unix sockets. */
void bd_monitor_cleanup(void);

/* Shutdown: end every backup session (backup-session.c), before the
 * exports close. */
void bd_backup_sessions_end_all(void);

/* Set when the 'quit' command ran (the daemon then shuts down). */
typedef void (*BdQuitFunc)(gpointer opaque);
void bd_control_set_quit_handler(BdQuitFunc fn, gpointer opaque);

/* --- option handlers shared with the command line (cmd-*.c) --- */

/* --blockdev / blockdev-add with already validated BlockdevOptions. */
gboolean bd_cmd_blockdev_add(GVariant *options, GError **errp);
/* --nbd-server: flat NbdServerOptions (addr is a flat SocketAddress). */
gboolean bd_cmd_nbd_server_start_flat(GVariant *options, GError **errp);
/* --metrics / x-blockd-metrics-start with validated options. */
gboolean bd_cmd_metrics_start(GVariant *options, GError **errp);
/* x-blockd-metrics-stop; also at shutdown (releases the TLS object). */
gboolean bd_cmd_metrics_stop(GError **errp);
const BdSchemaType *bd_cmd_metrics_options_schema(void);
/* --export / block-export-add with validated BlockExportOptions. */
gboolean bd_cmd_block_export_add(GVariant *options, GError **errp);

/* --object / object-add with validated ObjectOptions. */
gboolean bd_cmd_object_add(GVariant *options, GError **errp);
const BdSchemaType *bd_cmd_object_options_schema(void);

/* Schemas of the command-line option objects. */
const BdSchemaType *bd_cmd_nbd_server_options_schema(void);
const BdSchemaType *bd_cmd_monitor_options_schema(void);

#endif
