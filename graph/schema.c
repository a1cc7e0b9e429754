/* SPDX-License-Identifier: MIT */
/* Builtin schema types and readers for validated option dictionaries. */
#include <string.h>
#include "graph/schema.h"
#include "graph/graph-internal.h"

const BdSchemaType bd_schema_str = { .name = "str", .kind = BD_SCHEMA_STR };
const BdSchemaType bd_schema_int = { .name = "int", .kind = BD_SCHEMA_INT };
const BdSchemaType bd_schema_uint = { .name = "uint64", .kind = BD_SCHEMA_UINT };
const BdSchemaType bd_schema_size = { .name = "size", .kind = BD_SCHEMA_SIZE };
const BdSchemaType bd_schema_uint16 = { .name = "uint16",
                                        .kind = BD_SCHEMA_UINT };
const BdSchemaType bd_schema_uint32 = { .name = "uint32",
                                        .kind = BD_SCHEMA_UINT };
const BdSchemaType bd_schema_bool = { .name = "bool", .kind = BD_SCHEMA_BOOL };
const BdSchemaType bd_schema_number = { .name = "number", .kind = BD_SCHEMA_NUMBER };
const BdSchemaType bd_schema_any = { .name = "any", .kind = BD_SCHEMA_ANY };
const BdSchemaType bd_schema_blockdev_ref = {
    .name = "BlockdevRef", .kind = BD_SCHEMA_BLOCKDEV_REF };
const BdSchemaType bd_schema_blockdev_ref_or_null = {
    .name = "BlockdevRefOrNull", .kind = BD_SCHEMA_BLOCKDEV_REF_OR_NULL };

gboolean bd_variant_is_null(GVariant *v)
{
    return v && g_variant_is_of_type(v, G_VARIANT_TYPE("mv")) &&
           g_variant_n_children(v) == 0;
}

GVariant *bd_variant_null(void)
{
    return g_variant_new_maybe(G_VARIANT_TYPE_VARIANT, NULL);
}

/* --- typed decoding --- */

int bd_schema_enum_index(const BdSchemaType *type, const char *value)
{
    for (int i = 0; type->enum_values && type->enum_values[i]; i++) {
        if (strcmp(type->enum_values[i], value) == 0) {
            return i;
        }
    }
    return -1;
}

GVariant *bd_schema_member(GVariant *validated, const BdSchemaField *field)
{
    return bd_opts_lookup(validated, field->name);
}

/* Whether a member of C type 'ctype' can hold a value of schema 'type'
 * (a wrong table is a programming error, caught on first use and by
 * tests/unit/test-members.c for every table). */
gboolean bd_schema_ctype_fits(const BdSchemaType *type, BdCType ctype)
{
    switch (type->kind) {
    case BD_SCHEMA_STR:
        return ctype == BD_CTYPE_STR;
    case BD_SCHEMA_INT:
        return ctype == BD_CTYPE_INT64;
    case BD_SCHEMA_UINT:
    case BD_SCHEMA_SIZE:
        return ctype == BD_CTYPE_UINT64;
    case BD_SCHEMA_BOOL:
        return ctype == BD_CTYPE_INT;
    case BD_SCHEMA_NUMBER:
        return ctype == BD_CTYPE_DOUBLE;
    case BD_SCHEMA_ENUM:
        return ctype == BD_CTYPE_INT || ctype == BD_CTYPE_STR;
    case BD_SCHEMA_OBJECT:
        return ctype == BD_CTYPE_VARIANT || ctype == BD_CTYPE_STRUCT;
    case BD_SCHEMA_LIST:
    case BD_SCHEMA_ANY:
    case BD_SCHEMA_UNION:
    case BD_SCHEMA_BLOCKDEV_REF:
    case BD_SCHEMA_BLOCKDEV_REF_OR_NULL:
    case BD_SCHEMA_ALTERNATE:
        return ctype == BD_CTYPE_VARIANT;
    }
    return FALSE;
}

/* Whether 'v' has the GVariant type of member 'f' (graph/schema.h), and
 * an enum one of its values.  Integers are taken in either signedness,
 * as options built inside the daemon (jobs' filters, tests) may hold
 * either. */
static gboolean value_fits(const BdSchemaField *f, GVariant *v)
{
    switch (f->ctype) {
    case BD_CTYPE_STR:
        return g_variant_is_of_type(v, G_VARIANT_TYPE_STRING);
    case BD_CTYPE_INT64:
    case BD_CTYPE_UINT64:
        return g_variant_is_of_type(v, G_VARIANT_TYPE_INT64) ||
               g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64);
    case BD_CTYPE_INT:
        if (f->type->kind == BD_SCHEMA_BOOL) {
            return g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN);
        }
        return g_variant_is_of_type(v, G_VARIANT_TYPE_STRING) &&
               bd_schema_enum_index(f->type,
                                    g_variant_get_string(v, NULL)) >= 0;
    case BD_CTYPE_DOUBLE:
        return g_variant_is_of_type(v, G_VARIANT_TYPE_DOUBLE);
    case BD_CTYPE_STRUCT:
        return g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT);
    case BD_CTYPE_VARIANT:
        return TRUE;
    case BD_CTYPE_NONE:
        break;
    }
    return FALSE;
}

static gint64 int_value(GVariant *v)
{
    return g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64)
           ? (gint64)g_variant_get_uint64(v) : g_variant_get_int64(v);
}

static void decode_member(const BdSchemaField *f, GVariant *v, char *p)
{
    switch (f->ctype) {
    case BD_CTYPE_STR:
        /* The string lives in the container's data ('&s' semantics). */
        *(const char **)p = v ? g_variant_get_string(v, NULL) : f->def.s;
        return;
    case BD_CTYPE_INT64:
        *(gint64 *)p = v ? int_value(v) : f->def.i;
        return;
    case BD_CTYPE_UINT64:
        *(guint64 *)p = v ? (guint64)int_value(v) : f->def.u;
        return;
    case BD_CTYPE_INT:
        if (!v) {
            *(int *)p = (int)f->def.i;
        } else if (f->type->kind == BD_SCHEMA_BOOL) {
            *(int *)p = g_variant_get_boolean(v);
        } else {
            /* One of the values: value_fits() checked. */
            *(int *)p = bd_schema_enum_index(f->type,
                                             g_variant_get_string(v, NULL));
        }
        return;
    case BD_CTYPE_DOUBLE:
        *(double *)p = v ? g_variant_get_double(v) : f->def.d;
        return;
    case BD_CTYPE_VARIANT:
        /* Overwritten, not released: 'out' may be uninitialized. */
        *(GVariant **)p = v ? g_variant_ref(v) : NULL;
        return;
    case BD_CTYPE_STRUCT:
        bd_schema_decode(f->type->fields, v, p);
        return;
    case BD_CTYPE_NONE:
        break;
    }
    g_assert_not_reached();
}

void bd_schema_decode(const BdSchemaField *fields, GVariant *validated,
                      void *out)
{
    for (const BdSchemaField *f = fields; f && f->name; f++) {
        g_autoptr(GVariant) v = NULL;

        if (!f->at) {
            continue;
        }
        g_assert(bd_schema_ctype_fits(f->type, f->ctype));
        v = bd_opts_lookup(validated, f->name);
        if (v && !value_fits(f, v)) {
            /* Only options built by hand inside the daemon can get here:
             * validated input always fits.  Read it as absent, as the
             * key readers did, and say so (fatal in the unit tests). */
            g_critical("member '%s' holds a value of type '%s' that its "
                       "schema type '%s' does not take", f->name,
                       g_variant_get_type_string(v), f->type->name);
            g_clear_pointer(&v, g_variant_unref);
        }
        if (f->has_at) {
            *(gboolean *)((char *)out + f->has_at - 1) = v != NULL;
        }
        decode_member(f, v, (char *)out + f->at - 1);
    }
}

/* The variant of flat union 't' that 'validated' holds, or NULL. */
static const BdSchemaVariant *union_variant(const BdSchemaType *t,
                                            GVariant *validated)
{
    const char *tag = bd_opts_get_str(validated, t->discriminator, NULL);

    for (const BdSchemaVariant *v = t->variants; tag && v && v->value; v++) {
        if (strcmp(v->value, tag) == 0) {
            return v;
        }
    }
    return NULL;
}

void bd_schema_decode_union(const BdSchemaType *t, GVariant *validated,
                            void *out)
{
    const BdSchemaVariant *v = union_variant(t, validated);

    bd_schema_decode(t->fields, validated, out);
    if (v) {
        bd_schema_decode(v->type->fields, validated, out);
    }
}

void bd_schema_clear_union(const BdSchemaType *t, void *out)
{
    bd_schema_clear(t->fields, out);
    for (const BdSchemaVariant *v = t->variants; v && v->value; v++) {
        bd_schema_clear(v->type->fields, out);
    }
}

void bd_schema_clear(const BdSchemaField *fields, void *out)
{
    for (const BdSchemaField *f = fields; f && f->name; f++) {
        char *p = (char *)out + f->at - 1;

        if (f->ctype == BD_CTYPE_VARIANT && f->at) {
            g_clear_pointer((GVariant **)p, g_variant_unref);
        } else if (f->ctype == BD_CTYPE_STRUCT && f->at) {
            bd_schema_clear(f->type->fields, p);
        }
    }
}

/* --- generic reads by key (graph/graph-internal.h) --- */

GVariant *bd_opts_lookup(GVariant *opts, const char *key)
{
    if (!opts || !g_variant_is_of_type(opts, G_VARIANT_TYPE_VARDICT)) {
        return NULL;
    }
    return g_variant_lookup_value(opts, key, NULL);
}

const char *bd_opts_get_str(GVariant *opts, const char *key, const char *def)
{
    const char *s;

    /* The returned string points into 'opts', which outlives the call. */
    if (opts && g_variant_is_of_type(opts, G_VARIANT_TYPE_VARDICT) &&
        g_variant_lookup(opts, key, "&s", &s)) {
        return s;
    }
    return def;
}

void bd_json_quote(GString *out, const char *str)
{
    g_autofree char *valid = g_utf8_make_valid(str, -1);

    g_string_append_c(out, '"');
    for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        switch (c) {
        case '"':  g_string_append(out, "\\\""); break;
        case '\\': g_string_append(out, "\\\\"); break;
        case '\b': g_string_append(out, "\\b"); break;
        case '\f': g_string_append(out, "\\f"); break;
        case '\n': g_string_append(out, "\\n"); break;
        case '\r': g_string_append(out, "\\r"); break;
        case '\t': g_string_append(out, "\\t"); break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                g_string_append_c(out, (char)c);
            } else if (c < 0x10000) {
                g_string_append_printf(out, "\\u%04X", c);
            } else {
                c -= 0x10000;
                g_string_append_printf(out, "\\u%04X\\u%04X",
                                       0xD800 | (c >> 10), 0xDC00 | (c & 0x3ff));
            }
        }
    }
    g_string_append_c(out, '"');
}
