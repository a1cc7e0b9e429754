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
#include <stddef.h>

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

/* The C type of a struct member that bd_schema_decode() fills, as
 * BD_AT() records it, so that a member whose C type does not fit its
 * schema type is caught (bd_schema_decode asserts, and the unit test
 * test-members walks every table). */
typedef enum {
    BD_CTYPE_NONE,          /* not decoded */
    BD_CTYPE_STR,           /* const char * */
    BD_CTYPE_INT64,         /* gint64 */
    BD_CTYPE_UINT64,        /* guint64 */
    BD_CTYPE_INT,           /* gboolean, int, or a C enum */
    BD_CTYPE_DOUBLE,        /* double */
    BD_CTYPE_VARIANT,       /* GVariant * (a reference) */
    BD_CTYPE_STRUCT,        /* anything else: a nested struct */
} BdCType;

#define BD_CTYPE_OF(expr) _Generic((expr),                        \
    const char *: BD_CTYPE_STR,                                   \
    gint64: BD_CTYPE_INT64,                                       \
    guint64: BD_CTYPE_UINT64,                                     \
    int: BD_CTYPE_INT,                                            \
    unsigned int: BD_CTYPE_INT,     /* a C enum without negatives */ \
    double: BD_CTYPE_DOUBLE,                                      \
    GVariant *: BD_CTYPE_VARIANT,                                 \
    default: BD_CTYPE_STRUCT)

/* Default of an absent optional member, by the member's C type. */
typedef union {
    gint64 i;               /* BD_CTYPE_INT64, and INT (bool, enum) */
    guint64 u;              /* BD_CTYPE_UINT64 */
    double d;               /* BD_CTYPE_DOUBLE */
    const char *s;          /* BD_CTYPE_STR */
} BdSchemaDefault;

/* Members that no C struct receives say why (BdSchemaField.flags): */
enum {
    /* Accepted for compatibility with QEMU; has no effect in blockd. */
    BD_FIELD_IGNORED = 1 << 0,
    /* Read only by generic code that walks the dictionary, not by the
     * table's owner: for a member the graph alone would handle for
     * every driver.  (Unused today: the BlockdevRef children, which the
     * graph also reads for reopen, are decoded by their drivers.) */
    BD_FIELD_GENERIC = 1 << 1,
    /* Part of what the node shows as a json: filename (QEMU's
     * strong_runtime_opts); combines with a decoded member. */
    BD_FIELD_STRONG  = 1 << 2,
    /* A top-level BlockdevOptions member that blockdev-reopen may change
     * or leave out (QEMU's mutable_opts); graph/reopen.c refuses a change
     * to any other ("Cannot change the option"). */
    BD_FIELD_MUTABLE = 1 << 3,
    /* With BD_FIELD_MUTABLE: may change, but once given may not be left
     * out ("Option 'X' cannot be reset to its default value"): an
     * option QEMU's driver reads on reopen without listing it in its
     * mutable_opts (file's drop-cache). */
    BD_FIELD_NO_RESET = 1 << 4,
};

/*
 * A member of an object type.  The first three are the schema: existing
 * positional initializers { "name", &type, optional } stay valid.  The
 * rest say where bd_schema_decode() puts the member in the C struct of
 * the table's owner:
 *
 *   { "size", &bd_schema_int, TRUE, BD_AT(NullOptions, size),
 *     BD_HAS(NullOptions, size), .def.i = 1 << 30 },
 */
struct BdSchemaField {
    const char *name;
    const BdSchemaType *type;
    gboolean optional;
    size_t at;              /* offsetof(T, member) + 1; 0: not decoded */
    size_t has_at;          /* offsetof(T, has_member) + 1, or 0 */
    BdCType ctype;          /* the member's C type (BD_AT sets it) */
    BdSchemaDefault def;    /* value when absent (optional members) */
    unsigned flags;         /* BD_FIELD_* */
};

/* .at and .ctype of member 'm' of struct T. */
#define BD_AT(T, m) \
    .at = offsetof(T, m) + 1, .ctype = BD_CTYPE_OF(((T *)0)->m)
/* .has_at: the gboolean has_<m> of T, TRUE when the member was given
 * (where absence must be told from the default). */
#define BD_HAS(T, m)                                                  \
    .has_at = offsetof(T, has_##m) + 1 +                              \
              0 * sizeof(char[BD_CTYPE_OF(((T *)0)->has_##m) ==       \
                              BD_CTYPE_INT ? 1 : -1])

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
/* Sized unsigned integers: the validator checks their range by name. */
extern const BdSchemaType bd_schema_uint16;
extern const BdSchemaType bd_schema_uint32;
extern const BdSchemaType bd_schema_bool;
extern const BdSchemaType bd_schema_number;
extern const BdSchemaType bd_schema_any;
extern const BdSchemaType bd_schema_blockdev_ref;
extern const BdSchemaType bd_schema_blockdev_ref_or_null;

/*
 * Typed reading of validated values: fill the C struct 'out' from the
 * object value 'validated' (a{sv}; NULL: every member absent) along
 * 'fields', for every member with .at:
 *
 *   str                       -> const char *, borrowed from 'validated'
 *                                (valid as long as it is)
 *   int                       -> gint64
 *   uint, size (and uint32..) -> guint64
 *   bool                      -> gboolean
 *   number                    -> double
 *   enum                      -> int (a C enum): the index of the value
 *                                in enum_values, which therefore lists
 *                                the values in the C enum's order
 *                                (initialize it as [ENUM_X] = "x");
 *                                or const char * where the values are
 *                                only known at run time (BlockdevDriver)
 *   object                    -> a nested struct decoded along the
 *                                object's own fields, or GVariant *
 *   list, any, union, alternate, BlockdevRef(OrNull)
 *                             -> GVariant * (a new reference; null is
 *                                "mv", see bd_variant_is_null())
 *
 * Absent members get .def (0, FALSE, NULL unless given) and has_<m>
 * FALSE.  Members of other tables cannot be read: the owner of a table
 * reads its struct, never a key.  Every member with .at is written and
 * no other: initialize 'out' ({ 0 }) where one struct serves several
 * tables (the commands of one file), so that a member another table
 * has reads as absent.  Release what the struct holds with
 * bd_schema_clear() (or g_auto, see BD_SCHEMA_DEFINE_AUTO) before
 * decoding into it again.
 */
void bd_schema_decode(const BdSchemaField *fields, GVariant *validated,
                      void *out);
/* Drop the GVariant references a decoded struct holds (idempotent). */
void bd_schema_clear(const BdSchemaField *fields, void *out);

/* The same for a flat union (BD_SCHEMA_UNION): its base members, then
 * those of the variant the discriminator chooses, into one struct
 * (members of other variants are left as they are).  The clear drops
 * the references of every variant's members: initialize 'out' before
 * decoding into it when the variants hold references. */
void bd_schema_decode_union(const BdSchemaType *type, GVariant *validated,
                            void *out);
void bd_schema_clear_union(const BdSchemaType *type, void *out);

/* g_auto(T) for a struct T filled along 'fields':
 *   BD_SCHEMA_DEFINE_AUTO(FileOptions, file_options)
 *   g_auto(FileOptions) o = { 0 };
 *   bd_schema_decode(file_options, options, &o); */
#define BD_SCHEMA_DEFINE_AUTO(T, fields)                              \
    static inline void T##_clear_(T *o) { bd_schema_clear(fields, o); } \
    G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(T, T##_clear_)

/* The value of member 'field' (of some table) in 'validated', a new
 * reference, or NULL when absent: for generic code that walks a table
 * (json: filenames, blockdev-create's BlockdevRef members). */
GVariant *bd_schema_member(GVariant *validated, const BdSchemaField *field);

/* Whether a struct member of C type 'ctype' can receive values of
 * 'type' (the table above). */
gboolean bd_schema_ctype_fits(const BdSchemaType *type, BdCType ctype);

/* Index of 'value' in an enum's values, or -1. */
int bd_schema_enum_index(const BdSchemaType *type, const char *value);

/* Null values (JSON null where a type allows it). */
gboolean bd_variant_is_null(GVariant *v);
GVariant *bd_variant_null(void);

/* Append 'str' as a JSON string, quoted as QEMU quotes: '"', '\\' and
 * control characters escaped, everything outside printable ASCII as
 * \uXXXX (surrogate pairs above the BMP).  Invalid UTF-8 is repaired.
 * Shared by QMP output and json: filenames. */
void bd_json_quote(GString *out, const char *str);

#endif
