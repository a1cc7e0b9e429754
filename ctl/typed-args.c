/* SPDX-License-Identifier: MIT */
/* Typing keyval arguments: "blockctl qmp CMD size=1G,read-only=on"
 * arrives as strings; the daemon's own query-qmp-schema says which are
 * numbers, booleans or nested objects, as QEMU's keyval input visitor
 * does for -blockdev.
 *
 * Thread model: no shared state.
 */
#include <string.h>

#include "ctl/blockctl.h"
#include "control/input.h"

typedef struct {
    GHashTable *types;      /* name -> JsonObject * (SchemaInfo) */
} Schema;

static JsonNode *convert(Schema *s, JsonNode *in, const char *type);

static gboolean parse_bool(const char *v, gboolean *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *out = TRUE;
        return TRUE;
    }
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no")) {
        *out = FALSE;
        return TRUE;
    }
    return FALSE;
}

/* Integers in decimal or 0x hex, with QEMU's size suffixes (k, M, G, T). */
static gboolean parse_int(const char *v, gint64 *out)
{
    char *end = NULL;
    guint64 mult = 1;
    gint64 n;

    if (!*v) {
        return FALSE;
    }
    n = g_ascii_strtoll(v, &end, 0);
    if (end == v) {
        return FALSE;
    }
    switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; end++; break;
    case 'M': mult = 1ull << 20; end++; break;
    case 'G': mult = 1ull << 30; end++; break;
    case 'T': mult = 1ull << 40; end++; break;
    }
    if (*end) {
        return FALSE;
    }
    *out = n * (gint64)mult;
    return TRUE;
}

static JsonNode *convert_builtin(JsonNode *in, const char *json_type)
{
    const char *v;
    gint64 i;
    gboolean b;

    if (!JSON_NODE_HOLDS_VALUE(in) ||
        json_node_get_value_type(in) != G_TYPE_STRING) {
        return json_node_copy(in);
    }
    v = json_node_get_string(in);
    if (!strcmp(json_type, "int") && parse_int(v, &i)) {
        return json_node_init_int(json_node_alloc(), i);
    }
    if (!strcmp(json_type, "number")) {
        char *end;
        double d = g_ascii_strtod(v, &end);
        if (end != v && !*end) {
            return json_node_init_double(json_node_alloc(), d);
        }
    }
    if (!strcmp(json_type, "boolean") && parse_bool(v, &b)) {
        return json_node_init_boolean(json_node_alloc(), b);
    }
    if (!strcmp(json_type, "null") && !strcmp(v, "null")) {
        return json_node_init_null(json_node_alloc());
    }
    return json_node_copy(in);
}

/* The member 'name' of object type 'info', looking into the variant
 * chosen by the input's tag too. */
static const char *member_type(Schema *s, JsonObject *info, JsonObject *in,
                               const char *name)
{
    JsonArray *members = json_object_get_array_member(info, "members");
    const char *tag;

    for (guint i = 0; members && i < json_array_get_length(members); i++) {
        JsonObject *m = json_array_get_object_element(members, i);
        if (!strcmp(json_object_get_string_member(m, "name"), name)) {
            return json_object_get_string_member(m, "type");
        }
    }
    tag = json_object_get_string_member_with_default(info, "tag", NULL);
    if (tag && json_object_has_member(info, "variants") &&
        json_object_has_member(in, tag)) {
        JsonNode *tv = json_object_get_member(in, tag);
        const char *value = JSON_NODE_HOLDS_VALUE(tv) &&
            json_node_get_value_type(tv) == G_TYPE_STRING
            ? json_node_get_string(tv) : "";
        JsonArray *variants = json_object_get_array_member(info, "variants");

        for (guint i = 0; i < json_array_get_length(variants); i++) {
            JsonObject *v = json_array_get_object_element(variants, i);
            if (!strcmp(json_object_get_string_member(v, "case"), value)) {
                JsonObject *vi = g_hash_table_lookup(
                    s->types, json_object_get_string_member(v, "type"));
                return vi ? member_type(s, vi, in, name) : NULL;
            }
        }
    }
    return NULL;
}

static JsonNode *convert_object(Schema *s, JsonNode *in, JsonObject *info)
{
    JsonObject *obj, *out;
    g_autoptr(GList) names = NULL;

    if (!JSON_NODE_HOLDS_OBJECT(in)) {
        return json_node_copy(in);
    }
    obj = json_node_get_object(in);
    out = json_object_new();
    names = json_object_get_members(obj);
    for (GList *l = names; l; l = l->next) {
        const char *type = member_type(s, info, obj, l->data);
        JsonNode *v = json_object_get_member(obj, l->data);

        json_object_set_member(out, l->data,
                               type ? convert(s, v, type)
                                    : json_node_copy(v));
    }
    return bd_json_node_take_object(out);
}

static JsonNode *convert(Schema *s, JsonNode *in, const char *type)
{
    JsonObject *info = g_hash_table_lookup(s->types, type);
    const char *meta;

    if (!info) {
        return json_node_copy(in);
    }
    meta = json_object_get_string_member(info, "meta-type");
    if (!strcmp(meta, "builtin")) {
        return convert_builtin(in, json_object_get_string_member(
                                       info, "json-type"));
    }
    if (!strcmp(meta, "object")) {
        return convert_object(s, in, info);
    }
    if (!strcmp(meta, "array") && JSON_NODE_HOLDS_ARRAY(in)) {
        JsonArray *a = json_node_get_array(in), *out = json_array_new();
        const char *elem = json_object_get_string_member(info,
                                                         "element-type");
        for (guint i = 0; i < json_array_get_length(a); i++) {
            json_array_add_element(out, convert(s,
                json_array_get_element(a, i), elem));
        }
        return bd_json_node_take_array(out);
    }
    if (!strcmp(meta, "alternate")) {
        /* The first branch the value fits: an object for an object
         * input; else a typed scalar; else the string as it is. */
        JsonArray *members = json_object_get_array_member(info, "members");
        for (guint i = 0; i < json_array_get_length(members); i++) {
            const char *t = json_object_get_string_member(
                json_array_get_object_element(members, i), "type");
            JsonObject *ti = g_hash_table_lookup(s->types, t);
            const char *tm = ti ? json_object_get_string_member(
                                      ti, "meta-type") : "";
            if (JSON_NODE_HOLDS_OBJECT(in) && !strcmp(tm, "object")) {
                return convert(s, in, t);
            }
            if (!JSON_NODE_HOLDS_OBJECT(in) && !strcmp(tm, "builtin")) {
                const char *jt = json_object_get_string_member(ti,
                                                               "json-type");
                if (strcmp(jt, "string") != 0) {
                    g_autoptr(JsonNode) c = convert_builtin(in, jt);
                    if (json_node_get_value_type(c) != G_TYPE_STRING ||
                        JSON_NODE_HOLDS_NULL(c)) {
                        return g_steal_pointer(&c);
                    }
                }
            }
        }
    }
    return json_node_copy(in);
}

JsonNode *bd_ctl_typed_args(BdQmpClient *c, const char *command,
                            JsonNode *args, GError **errp)
{
    g_autoptr(JsonNode) schema = NULL;
    g_autoptr(GHashTable) types = NULL;
    const char *arg_type = NULL;
    Schema s;
    JsonArray *a;

    schema = bd_qmp_client_execute(c, "query-qmp-schema", NULL, NULL, errp);
    if (!schema) {
        return NULL;
    }
    types = g_hash_table_new(g_str_hash, g_str_equal);
    a = json_node_get_array(schema);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        const char *name = json_object_get_string_member(o, "name");
        g_hash_table_insert(types, (gpointer)name, o);
        if (!strcmp(json_object_get_string_member(o, "meta-type"),
                    "command") && !strcmp(name, command)) {
            arg_type = json_object_get_string_member(o, "arg-type");
        }
    }
    if (!arg_type) {
        /* Unknown command: the daemon says so in its own words. */
        return json_node_copy(args);
    }
    s.types = types;
    return convert(&s, args, arg_type);
}
