/* SPDX-License-Identifier: MIT */
/* Declarative descriptions of argument and option shapes (QAPI-like).
 *
 * One description per command argument set and per driver option set.
 * control/ validates incoming JSON (QMP) or keyval strings (command line)
 * against these descriptions, producing QEMU's error messages, and turns
 * the input into a typed GVariant tree that the graph and drivers read.
 * The same descriptions feed query-qmp-schema.
 *
 * Validated values use these GVariant types:
 *   BD_SCHEMA_STR, ENUM  -> "s"
 *   BD_SCHEMA_INT        -> "x"
 *   BD_SCHEMA_UINT, SIZE -> "t"
 *   BD_SCHEMA_BOOL       -> "b"
 *   BD_SCHEMA_NUMBER     -> "d"
 *   BD_SCHEMA_OBJECT     -> "a{sv}" (absent optional members are absent)
 *   BD_SCHEMA_LIST       -> "av"
 *   BD_SCHEMA_ANY        -> any of the above
 *   null (where allowed) -> "mv" holding nothing; see bd_variant_is_null()
 *   BD_SCHEMA_BLOCKDEV_REF(_OR_NULL) -> "s" (node-name reference),
 *                            "a{sv}" (nested BlockdevOptions) or null
 */
#ifndef BD_GRAPH_SCHEMA_H
#define BD_GRAPH_SCHEMA_H

#include <glib.h>

typedef enum {
    BD_SCHEMA_STR,
    BD_SCHEMA_INT,
    BD_SCHEMA_UINT,
    BD_SCHEMA_SIZE,
    BD_SCHEMA_BOOL,
    BD_SCHEMA_NUMBER,
    BD_SCHEMA_ENUM,
    BD_SCHEMA_OBJECT,
    BD_SCHEMA_LIST,
    BD_SCHEMA_ANY,
    /* A flat union: the members of 'fields' (the base) plus the members
     * of the variant chosen by the value of the 'discriminator' member. */
    BD_SCHEMA_UNION,
    /* BlockdevRef: node-name string or nested BlockdevOptions object. */
    BD_SCHEMA_BLOCKDEV_REF,
    /* BlockdevRefOrNull: as above, or JSON null. */
    BD_SCHEMA_BLOCKDEV_REF_OR_NULL,
    /* An alternate of two or more types, e.g. 'str' or 'null' */
    BD_SCHEMA_ALTERNATE,
} BdSchemaKind;

typedef struct BdSchemaType BdSchemaType;
typedef struct BdSchemaField BdSchemaField;
typedef struct BdSchemaVariant BdSchemaVariant;

struct BdSchemaField {
    const char *name;
    const BdSchemaType *type;
    gboolean optional;
};

struct BdSchemaVariant {
    const char *value;              /* discriminator value */
    const BdSchemaType *type;       /* a BD_SCHEMA_OBJECT with its members */
};

struct BdSchemaType {
    const char *name;               /* QAPI name, e.g. "BlockdevOptionsFile" */
    BdSchemaKind kind;
    const char *const *enum_values; /* ENUM: NULL-terminated */
    const BdSchemaField *fields;    /* OBJECT, UNION base: {NULL} terminated */
    const BdSchemaType *element;    /* LIST element type */
    const char *discriminator;      /* UNION */
    const BdSchemaVariant *variants;/* UNION: {NULL} terminated */
    const BdSchemaType *const *alternatives; /* ALTERNATE: NULL-terminated */
    gboolean alt_null;              /* ALTERNATE: also accepts JSON null */
};

/* Builtin scalar types, shared by every description. */
extern const BdSchemaType bd_schema_str;
extern const BdSchemaType bd_schema_int;
extern const BdSchemaType bd_schema_uint;
extern const BdSchemaType bd_schema_size;
extern const BdSchemaType bd_schema_bool;
extern const BdSchemaType bd_schema_number;
extern const BdSchemaType bd_schema_any;
extern const BdSchemaType bd_schema_blockdev_ref;
extern const BdSchemaType bd_schema_blockdev_ref_or_null;

/* Helpers for reading validated option dictionaries ("a{sv}"). */
gboolean bd_variant_is_null(GVariant *v);
GVariant *bd_variant_null(void);
GVariant *bd_opts_lookup(GVariant *opts, const char *key);   /* transfer full, or NULL */
const char *bd_opts_get_str(GVariant *opts, const char *key, const char *def);
gboolean bd_opts_get_bool(GVariant *opts, const char *key, gboolean def);
gint64 bd_opts_get_int(GVariant *opts, const char *key, gint64 def);
guint64 bd_opts_get_uint(GVariant *opts, const char *key, guint64 def);
gboolean bd_opts_has(GVariant *opts, const char *key);

/* Append 'str' as a JSON string, quoted as QEMU quotes: '"', '\\' and
 * control characters escaped, everything outside printable ASCII as
 * \uXXXX (surrogate pairs above the BMP).  Invalid UTF-8 is repaired.
 * Shared by QMP output and json: filenames. */
void bd_json_quote(GString *out, const char *str);

#endif
