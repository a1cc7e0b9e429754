/* SPDX-License-Identifier: MIT */
/* Builtin schema types and readers for validated option dictionaries. */
#include "graph/schema.h"

const BdSchemaType bd_schema_str = { .name = "str", .kind = BD_SCHEMA_STR };
const BdSchemaType bd_schema_int = { .name = "int", .kind = BD_SCHEMA_INT };
const BdSchemaType bd_schema_uint = { .name = "uint64", .kind = BD_SCHEMA_UINT };
const BdSchemaType bd_schema_size = { .name = "size", .kind = BD_SCHEMA_SIZE };
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

GVariant *bd_opts_lookup(GVariant *opts, const char *key)
{
    if (!opts || !g_variant_is_of_type(opts, G_VARIANT_TYPE_VARDICT)) {
        return NULL;
    }
    return g_variant_lookup_value(opts, key, NULL);
}

gboolean bd_opts_has(GVariant *opts, const char *key)
{
    g_autoptr(GVariant) v = bd_opts_lookup(opts, key);
    return v != NULL;
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

gboolean bd_opts_get_bool(GVariant *opts, const char *key, gboolean def)
{
    gboolean b;

    if (opts && g_variant_is_of_type(opts, G_VARIANT_TYPE_VARDICT) &&
        g_variant_lookup(opts, key, "b", &b)) {
        return b;
    }
    return def;
}

gint64 bd_opts_get_int(GVariant *opts, const char *key, gint64 def)
{
    g_autoptr(GVariant) v = bd_opts_lookup(opts, key);

    if (!v) {
        return def;
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_INT64)) {
        return g_variant_get_int64(v);
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64)) {
        return (gint64)g_variant_get_uint64(v);
    }
    return def;
}

guint64 bd_opts_get_uint(GVariant *opts, const char *key, guint64 def)
{
    g_autoptr(GVariant) v = bd_opts_lookup(opts, key);

    if (!v) {
        return def;
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64)) {
        return g_variant_get_uint64(v);
    }
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_INT64)) {
        return (guint64)g_variant_get_int64(v);
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
