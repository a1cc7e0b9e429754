/* SPDX-License-Identifier: MIT */
/* One generic walker that checks JSON input against a BdSchemaType and
 * builds the typed GVariant value, with QEMU's error messages.
 *
 * The walk mirrors QEMU's QObject input visitor: members are visited in
 * schema order (missing and mistyped members are reported as they are
 * met), and members left over are reported when their object is done.
 * Messages name the full path of the member ("options[0].file.filename",
 * "bitmaps.0" in keyval mode), except where QEMU uses the bare member
 * name: enum values, alternates and sized-integer ranges.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "control/input.h"
#include "graph/error.h"

typedef struct {
    const char *name;     /* member name, or NULL for a list index */
    guint index;
} Seg;

typedef struct {
    GArray *segs;         /* Seg: containers from the root down */
    gboolean keyval;
    GString *buf;         /* full_name() result */
} Ctx;

static BdSchemaGetter blockdev_schema_getter;

static GVariant *visit(Ctx *c, const BdSchemaType *t, const char *name,
                       JsonNode *n, GError **errp);

void bd_validate_set_blockdev_schema(BdSchemaGetter getter)
{
    blockdev_schema_getter = getter;
}

G_GNUC_PRINTF(2, 3)
static void fail(GError **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, BD_ERROR, BD_ERROR_GENERIC, msg);
}

/* The full path of member 'name' (NULL: the current list element). */
static const char *full_name(Ctx *c, const char *name)
{
    g_string_truncate(c->buf, 0);
    for (guint i = 0; i < c->segs->len; i++) {
        Seg *s = &g_array_index(c->segs, Seg, i);
        if (s->name) {
            if (c->buf->len) {
                g_string_append_c(c->buf, '.');
            }
            g_string_append(c->buf, s->name);
        } else {
            g_string_append_printf(c->buf, c->keyval ? ".%u" : "[%u]",
                                   s->index);
        }
    }
    if (name) {
        if (c->buf->len) {
            g_string_append_c(c->buf, '.');
        }
        g_string_append(c->buf, name);
    }
    return c->buf->len ? c->buf->str : "<anonymous>";
}

static void push(Ctx *c, const char *name, guint index)
{
    Seg s = { name, index };
    g_array_append_val(c->segs, s);
}

static void pop(Ctx *c)
{
    g_array_set_size(c->segs, c->segs->len - 1);
}

static GType value_type(JsonNode *n)
{
    return JSON_NODE_HOLDS_VALUE(n) ? json_node_get_value_type(n)
                                    : G_TYPE_INVALID;
}

static void invalid_type(Ctx *c, const char *name, const char *expected,
                         GError **errp)
{
    fail(errp, "Invalid parameter type for '%s', expected: %s",
         full_name(c, name), expected);
}

/* The string of a keyval leaf, or NULL with QEMU's message. */
static const char *keyval_str(Ctx *c, const char *name, JsonNode *n,
                              GError **errp)
{
    if (value_type(n) == G_TYPE_STRING) {
        return json_node_get_string(n);
    }
    if (JSON_NODE_HOLDS_OBJECT(n) || JSON_NODE_HOLDS_ARRAY(n)) {
        fail(errp, "Parameters '%s.*' are unexpected", full_name(c, name));
    } else {
        fail(errp, "Internal error: parameter %s invalid", full_name(c, name));
    }
    return NULL;
}

static GVariant *visit_str(Ctx *c, const char *name, JsonNode *n,
                           GError **errp)
{
    if (c->keyval) {
        const char *s = keyval_str(c, name, n, errp);
        return s ? g_variant_new_string(s) : NULL;
    }
    if (value_type(n) != G_TYPE_STRING) {
        invalid_type(c, name, "string", errp);
        return NULL;
    }
    return g_variant_new_string(json_node_get_string(n));
}

static GVariant *visit_enum(Ctx *c, const BdSchemaType *t, const char *name,
                            JsonNode *n, GError **errp)
{
    /* Floating, as every visit_* result: the caller's builder sinks it
     * (a sunk reference returned here would leak one per value). */
    GVariant *sv = visit_str(c, name, n, errp);
    if (!sv) {
        return NULL;
    }
    const char *s = g_variant_get_string(sv, NULL);
    for (guint i = 0; t->enum_values && t->enum_values[i]; i++) {
        if (strcmp(t->enum_values[i], s) == 0) {
            return sv;
        }
    }
    fail(errp, "Parameter '%s' does not accept value '%s'",
         name ? name : "null", s);
    g_variant_unref(g_variant_ref_sink(sv));
    return NULL;
}

/* Range of QEMU's sized integer types, recognised by type name. */
static gboolean sized_range(const BdSchemaType *t, gint64 *min, guint64 *max,
                            const char **cname)
{
    static const struct {
        const char *name, *cname;
        gint64 min;
        guint64 max;
    } sizes[] = {
        { "int8", "int8_t", INT8_MIN, INT8_MAX },
        { "int16", "int16_t", INT16_MIN, INT16_MAX },
        { "int32", "int32_t", INT32_MIN, INT32_MAX },
        { "uint8", "uint8_t", 0, UINT8_MAX },
        { "uint16", "uint16_t", 0, UINT16_MAX },
        { "uint32", "uint32_t", 0, UINT32_MAX },
    };
    for (guint i = 0; t->name && i < G_N_ELEMENTS(sizes); i++) {
        if (strcmp(t->name, sizes[i].name) == 0) {
            *min = sizes[i].min;
            *max = sizes[i].max;
            *cname = sizes[i].cname;
            return TRUE;
        }
    }
    return FALSE;
}

static GVariant *visit_int(Ctx *c, const BdSchemaType *t, const char *name,
                           JsonNode *n, GError **errp)
{
    gint64 val;

    if (c->keyval) {
        const char *s = keyval_str(c, name, n, errp);
        if (!s) {
            return NULL;
        }
        if (!bd_parse_int64(s, &val)) {
            fail(errp, "Parameter '%s' expects integer", full_name(c, name));
            return NULL;
        }
    } else {
        if (value_type(n) != G_TYPE_INT64) {
            invalid_type(c, name, "integer", errp);
            return NULL;
        }
        val = json_node_get_int(n);
    }
    gint64 min;
    guint64 max;
    const char *cname;
    if (sized_range(t, &min, &max, &cname) &&
        (val < min || (val > 0 && (guint64)val > max))) {
        fail(errp, "Parameter '%s' expects %s", name ? name : "null", cname);
        return NULL;
    }
    return g_variant_new_int64(val);
}

static GVariant *visit_uint(Ctx *c, const BdSchemaType *t, const char *name,
                            JsonNode *n, GError **errp)
{
    guint64 val;

    if (c->keyval) {
        const char *s = keyval_str(c, name, n, errp);
        if (!s) {
            return NULL;
        }
        if (t->kind == BD_SCHEMA_SIZE) {
            if (!bd_parse_size(s, &val)) {
                fail(errp, "Parameter '%s' expects size", full_name(c, name));
                return NULL;
            }
        } else if (!bd_parse_uint64(s, &val)) {
            fail(errp, "Parameter '%s' expects integer", full_name(c, name));
            return NULL;
        }
    } else {
        /* Negative values are accepted (and wrap) as QEMU does; values
         * above INT64_MAX arrive as doubles (json-variant.c), those
         * rounded up to 2^64 meaning UINT64_MAX. */
        double d = value_type(n) == G_TYPE_DOUBLE ? json_node_get_double(n)
                                                  : 0;
        if (value_type(n) == G_TYPE_DOUBLE && d == 18446744073709551616.0) {
            val = G_MAXUINT64;
        } else if (value_type(n) == G_TYPE_DOUBLE &&
                   d >= 9223372036854775808.0 &&
                   d < 18446744073709551616.0 && d == (double)(guint64)d) {
            val = (guint64)d;
        } else if (value_type(n) != G_TYPE_INT64) {
            fail(errp, "Parameter '%s' expects uint64", full_name(c, name));
            return NULL;
        } else {
            val = (guint64)json_node_get_int(n);
        }
    }
    gint64 min;
    guint64 max;
    const char *cname;
    if (sized_range(t, &min, &max, &cname) && val > max) {
        fail(errp, "Parameter '%s' expects %s", name ? name : "null", cname);
        return NULL;
    }
    return g_variant_new_uint64(val);
}

static GVariant *visit_bool(Ctx *c, const char *name, JsonNode *n,
                            GError **errp)
{
    if (c->keyval) {
        const char *s = keyval_str(c, name, n, errp);
        if (!s) {
            return NULL;
        }
        gboolean b;
        if (!bd_parse_bool(s, &b)) {
            fail(errp, "Parameter '%s' expects 'on' or 'off'",
                 full_name(c, name));
            return NULL;
        }
        return g_variant_new_boolean(b);
    }
    if (value_type(n) != G_TYPE_BOOLEAN) {
        invalid_type(c, name, "boolean", errp);
        return NULL;
    }
    return g_variant_new_boolean(json_node_get_boolean(n));
}

static GVariant *visit_number(Ctx *c, const char *name, JsonNode *n,
                              GError **errp)
{
    if (c->keyval) {
        const char *s = keyval_str(c, name, n, errp);
        if (!s) {
            return NULL;
        }
        char *end;
        errno = 0;
        double d = g_ascii_strtod(s, &end);
        if (!*s || *end || errno || !isfinite(d)) {
            invalid_type(c, name, "number", errp);
            return NULL;
        }
        return g_variant_new_double(d);
    }
    GType vt = value_type(n);
    if (vt == G_TYPE_INT64) {
        return g_variant_new_double((double)json_node_get_int(n));
    }
    if (vt != G_TYPE_DOUBLE) {
        invalid_type(c, name, "number", errp);
        return NULL;
    }
    return g_variant_new_double(json_node_get_double(n));
}

/* Visit the members 'fields' of 'obj' into 'b', removing each visited
 * key from 'unvisited'. */
static gboolean visit_fields(Ctx *c, const BdSchemaField *fields,
                             JsonObject *obj, GHashTable *unvisited,
                             GVariantBuilder *b, GError **errp)
{
    for (const BdSchemaField *f = fields; f && f->name; f++) {
        JsonNode *m = json_object_get_member(obj, f->name);
        if (!m) {
            if (!f->optional) {
                fail(errp, "Parameter '%s' is missing", full_name(c, f->name));
                return FALSE;
            }
            continue;
        }
        g_hash_table_remove(unvisited, f->name);
        GVariant *v = visit(c, f->type, f->name, m, errp);
        if (!v) {
            return FALSE;
        }
        g_variant_builder_add(b, "{sv}", f->name, v);
    }
    return TRUE;
}

static const BdSchemaVariant *find_variant(const BdSchemaType *t,
                                           const char *value)
{
    for (const BdSchemaVariant *v = t->variants; v && v->value; v++) {
        if (strcmp(v->value, value) == 0) {
            return v;
        }
    }
    return NULL;
}

/* An OBJECT or a flat UNION. */
static GVariant *visit_object(Ctx *c, const BdSchemaType *t,
                              const char *name, JsonNode *n, GError **errp)
{
    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        invalid_type(c, name, "object", errp);
        return NULL;
    }
    JsonObject *obj = json_node_get_object(n);
    g_autoptr(GList) keys = json_object_get_members(obj);
    g_autoptr(GHashTable) unvisited = g_hash_table_new(g_str_hash,
                                                       g_str_equal);
    for (GList *l = keys; l; l = l->next) {
        g_hash_table_add(unvisited, l->data);
    }

    g_auto(GVariantBuilder) b = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    gboolean ok;
    if (name) {
        push(c, name, 0);
    }
    ok = visit_fields(c, t->fields, obj, unvisited, &b, errp);
    if (ok && t->kind == BD_SCHEMA_UNION && t->discriminator) {
        const char *tag = json_object_get_string_member_with_default(
            obj, t->discriminator, "");
        const BdSchemaVariant *var = find_variant(t, tag);
        if (var) {
            ok = visit_fields(c, var->type->fields, obj, unvisited, &b, errp);
        }
    }
    if (ok) {
        for (GList *l = keys; l; l = l->next) {
            if (g_hash_table_contains(unvisited, l->data)) {
                fail(errp, "Parameter '%s' is unexpected",
                     full_name(c, l->data));
                ok = FALSE;
                break;
            }
        }
    }
    if (name) {
        pop(c);
    }
    return ok ? g_variant_builder_end(&b) : NULL;
}

static GVariant *visit_list(Ctx *c, const BdSchemaType *t, const char *name,
                            JsonNode *n, GError **errp)
{
    if (!JSON_NODE_HOLDS_ARRAY(n)) {
        invalid_type(c, name, "array", errp);
        return NULL;
    }
    JsonArray *arr = json_node_get_array(n);
    g_auto(GVariantBuilder) b = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("av"));
    gboolean ok = TRUE;

    if (name) {
        push(c, name, 0);
    }
    for (guint i = 0; ok && i < json_array_get_length(arr); i++) {
        push(c, NULL, i);
        GVariant *v = visit(c, t->element, NULL,
                                        json_array_get_element(arr, i), errp);
        pop(c);
        if (v) {
            g_variant_builder_add(&b, "v", v);
        } else {
            ok = FALSE;
        }
    }
    if (name) {
        pop(c);
    }
    return ok ? g_variant_builder_end(&b) : NULL;
}

/* BlockdevRef / BlockdevRefOrNull: a node-name, a nested definition, or
 * (OrNull) null. */
static GVariant *visit_blockdev_ref(Ctx *c, const BdSchemaType *t,
                                    const char *name, JsonNode *n,
                                    GError **errp)
{
    gboolean or_null = t->kind == BD_SCHEMA_BLOCKDEV_REF_OR_NULL;

    if (value_type(n) == G_TYPE_STRING) {
        return g_variant_new_string(json_node_get_string(n));
    }
    if (JSON_NODE_HOLDS_OBJECT(n)) {
        const BdSchemaType *opts = blockdev_schema_getter ?
                                   blockdev_schema_getter() : NULL;
        if (!opts) {
            fail(errp, "Parameter '%s': nested block devices are not "
                 "available", full_name(c, name));
            return NULL;
        }
        return visit_object(c, opts, name, n, errp);
    }
    if (or_null && JSON_NODE_HOLDS_NULL(n)) {
        return bd_variant_null();
    }
    fail(errp, "Invalid parameter type for '%s', expected: %s",
         name ? name : "null", or_null ? "BlockdevRefOrNull" : "BlockdevRef");
    return NULL;
}

/* Does alternative 'a' take a JSON value of this shape? */
static gboolean alt_takes(const BdSchemaType *a, JsonNode *n, gboolean keyval)
{
    GType vt = value_type(n);

    switch (a->kind) {
    case BD_SCHEMA_STR:
    case BD_SCHEMA_ENUM:
        return vt == G_TYPE_STRING;
    case BD_SCHEMA_INT:
    case BD_SCHEMA_UINT:
    case BD_SCHEMA_SIZE:
        return vt == G_TYPE_INT64 || (keyval && vt == G_TYPE_STRING);
    case BD_SCHEMA_NUMBER:
        return vt == G_TYPE_INT64 || vt == G_TYPE_DOUBLE ||
               (keyval && vt == G_TYPE_STRING);
    case BD_SCHEMA_BOOL:
        return vt == G_TYPE_BOOLEAN || (keyval && vt == G_TYPE_STRING);
    case BD_SCHEMA_OBJECT:
    case BD_SCHEMA_UNION:
        return JSON_NODE_HOLDS_OBJECT(n);
    case BD_SCHEMA_LIST:
        return JSON_NODE_HOLDS_ARRAY(n);
    case BD_SCHEMA_BLOCKDEV_REF:
    case BD_SCHEMA_BLOCKDEV_REF_OR_NULL:
        return vt == G_TYPE_STRING || JSON_NODE_HOLDS_OBJECT(n);
    case BD_SCHEMA_ANY:
        return TRUE;
    default:
        return FALSE;
    }
}

static GVariant *visit_alternate(Ctx *c, const BdSchemaType *t,
                                 const char *name, JsonNode *n, GError **errp)
{
    if (JSON_NODE_HOLDS_NULL(n) && t->alt_null) {
        return bd_variant_null();
    }
    /* An exact match first (a string goes to a string branch even in
     * keyval mode), then, in keyval mode, a scalar that converts. */
    for (int pass = 0; pass < 2; pass++) {
        for (guint i = 0; t->alternatives && t->alternatives[i]; i++) {
            const BdSchemaType *a = t->alternatives[i];
            if (alt_takes(a, n, pass == 1 && c->keyval)) {
                return visit(c, a, name, n, errp);
            }
        }
    }
    fail(errp, "Invalid parameter type for '%s', expected: %s",
         name ? name : "null", t->name ? t->name : "alternate");
    return NULL;
}

static GVariant *visit(Ctx *c, const BdSchemaType *t, const char *name,
                       JsonNode *n, GError **errp)
{
    switch (t->kind) {
    case BD_SCHEMA_STR:
        return visit_str(c, name, n, errp);
    case BD_SCHEMA_ENUM:
        return visit_enum(c, t, name, n, errp);
    case BD_SCHEMA_INT:
        return visit_int(c, t, name, n, errp);
    case BD_SCHEMA_UINT:
    case BD_SCHEMA_SIZE:
        return visit_uint(c, t, name, n, errp);
    case BD_SCHEMA_BOOL:
        return visit_bool(c, name, n, errp);
    case BD_SCHEMA_NUMBER:
        return visit_number(c, name, n, errp);
    case BD_SCHEMA_OBJECT:
    case BD_SCHEMA_UNION:
        return visit_object(c, t, name, n, errp);
    case BD_SCHEMA_LIST:
        return visit_list(c, t, name, n, errp);
    case BD_SCHEMA_ANY:
        return bd_json_to_variant(n);
    case BD_SCHEMA_BLOCKDEV_REF:
    case BD_SCHEMA_BLOCKDEV_REF_OR_NULL:
        return visit_blockdev_ref(c, t, name, n, errp);
    case BD_SCHEMA_ALTERNATE:
        return visit_alternate(c, t, name, n, errp);
    }
    fail(errp, "Parameter '%s' has an unsupported schema type",
         full_name(c, name));
    return NULL;
}

GVariant *bd_validate(const BdSchemaType *type, JsonNode *input,
                      gboolean keyval, GError **errp)
{
    Ctx c = {
        .segs = g_array_new(FALSE, FALSE, sizeof(Seg)),
        .keyval = keyval,
        .buf = g_string_new(NULL),
    };
    GVariant *v = visit(&c, type, NULL, input, errp);

    g_array_unref(c.segs);
    g_string_free(c.buf, TRUE);
    return v ? g_variant_ref_sink(v) : NULL;
}
