/* SPDX-License-Identifier: MIT */
/* The control layer's public API for daemon/: keyval and JSON option
 * parsing, schema validation, JSON <-> GVariant, QMP monitors and the
 * command set.
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

/* --- keyval.c: "key=val,a.b=c" command-line syntax --- */

/* Parse QEMU's KEY=VALUE,... syntax into a JSON object whose leaves are
 * strings; dotted keys nest, numeric fragments make arrays (a.0=x).
 * 'implied_key' (may be NULL) names the key of a leading bare value. */
JsonNode *bd_keyval_parse(const char *str, const char *implied_key,
                          GError **errp);

/* Parse one command-line option argument: JSON when it starts with '{',
 * keyval otherwise.  *is_keyval tells which (may be NULL). */
JsonNode *bd_option_parse(const char *str, const char *implied_key,
                          gboolean *is_keyval, GError **errp);

/* --- validate.c: JSON -> typed GVariant along a BdSchemaType --- */

/* Validate 'input' against 'type' and build the GVariant value described
 * in graph/schema.h.  With 'keyval', scalars arrive as strings and are
 * converted as QEMU's keyval input visitor does.  Error texts are
 * QEMU's ("Parameter 'file.filename' is missing", ...).  Returns a new
 * (non-floating) reference or NULL with *errp set. */
GVariant *bd_validate(const BdSchemaType *type, JsonNode *input,
                      gboolean keyval, GError **errp);

/* Where BD_SCHEMA_BLOCKDEV_REF finds the BlockdevOptions schema.  The
 * control layer installs bd_blockdev_options_schema(); unit tests may
 * install their own. */
typedef const BdSchemaType *(*BdSchemaGetter)(void);
void bd_validate_set_blockdev_schema(BdSchemaGetter getter);

/* --- json-variant.c --- */

/* GVariant (a{sv}, av, mv, scalars, as, ...) to JSON.  Never NULL. */
JsonNode *bd_variant_to_json(GVariant *value);
/* Untyped JSON to GVariant (objects a{sv}, arrays av, null mv). */
GVariant *bd_json_to_variant(JsonNode *node);
/* Compact JSON text with QEMU's spacing ({"a": 1, "b": [2]}). */
char *bd_json_to_string(JsonNode *node);
/* The same, laid out as QEMU's pretty monitors do. */
char *bd_json_to_string_pretty(JsonNode *node);
/* Parse one JSON text; errors read "JSON parse error, ...". */
JsonNode *bd_json_parse(const char *text, gssize len, GError **errp);

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
/* --export / block-export-add with validated BlockExportOptions. */
gboolean bd_cmd_block_export_add(GVariant *options, GError **errp);

/* --object / object-add with validated ObjectOptions. */
gboolean bd_cmd_object_add(GVariant *options, GError **errp);
const BdSchemaType *bd_cmd_object_options_schema(void);

/* Schemas of the command-line option objects. */
const BdSchemaType *bd_cmd_nbd_server_options_schema(void);
const BdSchemaType *bd_cmd_monitor_options_schema(void);

#endif
