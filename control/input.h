/* SPDX-License-Identifier: MIT */
/* Option input: the keyval and JSON forms of an option, validation
 * against a BdSchemaType with QEMU's messages, and JSON <-> GVariant.
 *
 * This is the part of control/ that users other than the QMP server
 * need (the nbdkit plugin validates its 'blockdev' parameter here).  It
 * is built as a library of its own, 'bdinput', that depends on graph/
 * (the schema) and json-glib only: no monitor, command, job or export.
 *
 * Thread model: no shared state but the BlockdevRef schema getter, which
 * is set once at start-up on the main thread; the functions may run on
 * any thread.
 */
#ifndef BD_CONTROL_INPUT_H
#define BD_CONTROL_INPUT_H

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

/* --- JSON nodes that own what they hold --- */

/* A node holding 'o' (or 'a'), taking over the caller's reference:
 * json_node_init_object() takes a reference of its own, and a fresh
 * object passed to it that way is never freed. */
static inline JsonNode *bd_json_node_take_object(JsonObject *o)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(n, o);
    return n;
}

static inline JsonNode *bd_json_node_take_array(JsonArray *a)
{
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    json_node_take_array(n, a);
    return n;
}

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

/* Scalar conversions of keyval strings, as QEMU's (keyval.c). */
gboolean bd_parse_int64(const char *s, gint64 *out);
gboolean bd_parse_uint64(const char *s, guint64 *out);
gboolean bd_parse_size(const char *s, guint64 *out);
gboolean bd_parse_bool(const char *s, gboolean *out);

#endif
