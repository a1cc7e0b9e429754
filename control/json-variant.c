/* SPDX-License-Identifier: MIT */
/* Conversions between GVariant values (what the graph speaks) and JSON
 * (what QMP speaks), and JSON text in and out with QEMU's spacing. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "control/input.h"
#include "graph/error.h"

JsonNode *bd_variant_to_json(GVariant *value)
{
    JsonNode *node;

    if (!value) {
        return json_node_new(JSON_NODE_NULL);
    }
    const GVariantType *t = g_variant_get_type(value);

    if (g_variant_type_is_maybe(t)) {
        g_autoptr(GVariant) inner = g_variant_get_maybe(value);
        return inner ? bd_variant_to_json(inner)
                     : json_node_new(JSON_NODE_NULL);
    }
    if (g_variant_type_equal(t, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(value);
        return bd_variant_to_json(inner);
    }
    if (g_variant_type_is_array(t) &&
        g_variant_type_is_dict_entry(g_variant_type_element(t))) {
        JsonObject *obj = json_object_new();
        gsize n = g_variant_n_children(value);
        for (gsize i = 0; i < n; i++) {
            g_autoptr(GVariant) entry = g_variant_get_child_value(value, i);
            g_autoptr(GVariant) key = g_variant_get_child_value(entry, 0);
            g_autoptr(GVariant) val = g_variant_get_child_value(entry, 1);
            const char *k = g_variant_is_of_type(key, G_VARIANT_TYPE_STRING)
                            ? g_variant_get_string(key, NULL) : "?";
            json_object_set_member(obj, k, bd_variant_to_json(val));
        }
        node = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(node, obj);
        return node;
    }
    if (g_variant_type_is_array(t) || g_variant_type_is_tuple(t)) {
        JsonArray *arr = json_array_new();
        gsize n = g_variant_n_children(value);
        for (gsize i = 0; i < n; i++) {
            g_autoptr(GVariant) elt = g_variant_get_child_value(value, i);
            json_array_add_element(arr, bd_variant_to_json(elt));
        }
        node = json_node_new(JSON_NODE_ARRAY);
        json_node_take_array(node, arr);
        return node;
    }

    node = json_node_new(JSON_NODE_VALUE);
    switch (g_variant_classify(value)) {
    case G_VARIANT_CLASS_BOOLEAN:
        json_node_set_boolean(node, g_variant_get_boolean(value));
        break;
    case G_VARIANT_CLASS_BYTE:
        json_node_set_int(node, g_variant_get_byte(value));
        break;
    case G_VARIANT_CLASS_INT16:
        json_node_set_int(node, g_variant_get_int16(value));
        break;
    case G_VARIANT_CLASS_UINT16:
        json_node_set_int(node, g_variant_get_uint16(value));
        break;
    case G_VARIANT_CLASS_INT32:
        json_node_set_int(node, g_variant_get_int32(value));
        break;
    case G_VARIANT_CLASS_UINT32:
        json_node_set_int(node, g_variant_get_uint32(value));
        break;
    case G_VARIANT_CLASS_INT64:
        json_node_set_int(node, g_variant_get_int64(value));
        break;
    case G_VARIANT_CLASS_UINT64: {
        guint64 u = g_variant_get_uint64(value);
        if (u <= G_MAXINT64) {
            json_node_set_int(node, (gint64)u);
        } else {
            json_node_set_double(node, (double)u);
        }
        break;
    }
    case G_VARIANT_CLASS_HANDLE:
        json_node_set_int(node, g_variant_get_handle(value));
        break;
    case G_VARIANT_CLASS_DOUBLE:
        json_node_set_double(node, g_variant_get_double(value));
        break;
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
        json_node_set_string(node, g_variant_get_string(value, NULL));
        break;
    default:
        json_node_init_null(node);
        break;
    }
    return node;
}

GVariant *bd_json_to_variant(JsonNode *node)
{
    switch (json_node_get_node_type(node)) {
    case JSON_NODE_OBJECT: {
        GVariantBuilder b;
        JsonObject *obj = json_node_get_object(node);
        g_autoptr(GList) keys = json_object_get_members(obj);
        g_variant_builder_init(&b, G_VARIANT_TYPE_VARDICT);
        for (GList *l = keys; l; l = l->next) {
            g_variant_builder_add(&b, "{sv}", (const char *)l->data,
                bd_json_to_variant(json_object_get_member(obj, l->data)));
        }
        return g_variant_builder_end(&b);
    }
    case JSON_NODE_ARRAY: {
        GVariantBuilder b;
        JsonArray *arr = json_node_get_array(node);
        g_variant_builder_init(&b, G_VARIANT_TYPE("av"));
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            g_variant_builder_add(&b, "v",
                bd_json_to_variant(json_array_get_element(arr, i)));
        }
        return g_variant_builder_end(&b);
    }
    case JSON_NODE_NULL:
        return bd_variant_null();
    case JSON_NODE_VALUE:
        break;
    }
    GType vt = json_node_get_value_type(node);
    if (vt == G_TYPE_INT64) {
        return g_variant_new_int64(json_node_get_int(node));
    }
    if (vt == G_TYPE_DOUBLE) {
        return g_variant_new_double(json_node_get_double(node));
    }
    if (vt == G_TYPE_BOOLEAN) {
        return g_variant_new_boolean(json_node_get_boolean(node));
    }
    return g_variant_new_string(json_node_get_string(node) ?: "");
}

/* QEMU's pretty layout: one member per line, four spaces per level. */
static void newline(GString *out, int level)
{
    if (level >= 0) {
        g_string_append_c(out, '\n');
        for (int i = 0; i < level; i++) {
            g_string_append(out, "    ");
        }
    }
}

/* 'level' < 0: compact, else pretty at that depth. */
static void to_string(GString *out, JsonNode *node, int level)
{
    int inner = level >= 0 ? level + 1 : -1;

    switch (json_node_get_node_type(node)) {
    case JSON_NODE_OBJECT: {
        JsonObject *obj = json_node_get_object(node);
        g_autoptr(GList) keys = json_object_get_members(obj);
        g_string_append_c(out, '{');
        for (GList *l = keys; l; l = l->next) {
            newline(out, inner);
            bd_json_quote(out, l->data);
            g_string_append(out, ": ");
            to_string(out, json_object_get_member(obj, l->data), inner);
            if (l->next) {
                g_string_append(out, level >= 0 ? "," : ", ");
            }
        }
        newline(out, level);
        g_string_append_c(out, '}');
        return;
    }
    case JSON_NODE_ARRAY: {
        JsonArray *arr = json_node_get_array(node);
        guint n = json_array_get_length(arr);
        g_string_append_c(out, '[');
        for (guint i = 0; i < n; i++) {
            newline(out, inner);
            to_string(out, json_array_get_element(arr, i), inner);
            if (i + 1 < n) {
                g_string_append(out, level >= 0 ? "," : ", ");
            }
        }
        newline(out, level);
        g_string_append_c(out, ']');
        return;
    }
    case JSON_NODE_NULL:
        g_string_append(out, "null");
        return;
    case JSON_NODE_VALUE:
        break;
    }
    GType vt = json_node_get_value_type(node);
    if (vt == G_TYPE_INT64) {
        g_string_append_printf(out, "%" G_GINT64_FORMAT, json_node_get_int(node));
    } else if (vt == G_TYPE_DOUBLE) {
        double d = json_node_get_double(node);
        char buf[G_ASCII_DTOSTR_BUF_SIZE];
        if (!isfinite(d)) {
            g_string_append(out, "null");
        } else {
            g_string_append(out, g_ascii_dtostr(buf, sizeof(buf), d));
        }
    } else if (vt == G_TYPE_BOOLEAN) {
        g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
    } else {
        bd_json_quote(out, json_node_get_string(node) ?: "");
    }
}

char *bd_json_to_string(JsonNode *node)
{
    GString *out = g_string_new(NULL);
    to_string(out, node, -1);
    return g_string_free(out, FALSE);
}

char *bd_json_to_string_pretty(JsonNode *node)
{
    GString *out = g_string_new(NULL);
    to_string(out, node, 0);
    return g_string_free(out, FALSE);
}

/* Is the innermost container open at 'line':'col' of 'text' an object? */
static gboolean in_object_at(const char *text, gssize len, int line, int col)
{
    GString *stack = g_string_new(NULL);
    char quote = 0;
    gboolean escape = FALSE, obj;
    int l = 1, c = 0;

    for (gssize i = 0; (len < 0 ? text[i] != 0 : i < len); i++) {
        char ch = text[i];
        if (ch == '\n') {
            l++;
            c = 0;
            continue;
        }
        c++;
        if (l > line || (l == line && c > col)) {
            break;
        }
        if (quote) {
            if (escape) {
                escape = FALSE;
            } else if (ch == '\\') {
                escape = TRUE;
            } else if (ch == quote) {
                quote = 0;
            }
        } else if (ch == '"' || ch == '\'') {
            quote = ch;
        } else if (ch == '{' || ch == '[') {
            g_string_append_c(stack, ch);
        } else if ((ch == '}' || ch == ']') && stack->len) {
            g_string_truncate(stack, stack->len - 1);
        }
    }
    obj = stack->len && stack->str[stack->len - 1] == '{';
    g_string_free(stack, TRUE);
    return obj;
}

/* QEMU's wording for what json-glib found wrong. */
static const char *parse_error_text(const GError *err, const char *text,
                                    gssize len)
{
    int line = 0, col = 0;

    if (err->domain != JSON_PARSER_ERROR) {
        return "expecting value";
    }
    switch (err->code) {
    case JSON_PARSER_ERROR_MISSING_COMMA:
        if (sscanf(err->message, "<data>:%d:%d:", &line, &col) == 2 &&
            !in_object_at(text, len, line, col)) {
            return "expected separator in list";
        }
        return "expected separator in dict";
    case JSON_PARSER_ERROR_MISSING_COLON:
        return "missing : in object pair";
    case JSON_PARSER_ERROR_INVALID_BAREWORD:
        return "key is not a string in object";
    default:
        return "expecting value";
    }
}

/* json-glib keeps the last of duplicate keys; QEMU refuses them.  Each
 * parsed member is recorded per object to notice a second one. */
typedef struct {
    GHashTable *seen;       /* JsonObject * -> GHashTable of names */
    gboolean duplicate;
} DupCheck;

static void on_member(JsonParser *parser, JsonObject *object,
                      const char *name, gpointer opaque)
{
    DupCheck *dc = opaque;
    GHashTable *names = g_hash_table_lookup(dc->seen, object);

    if (!names) {
        names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_hash_table_insert(dc->seen, object, names);
    }
    if (!g_hash_table_add(names, g_strdup(name))) {
        dc->duplicate = TRUE;
    }
}

/* json-glib stores every integer as gint64, so 2^63..2^64-1 would wrap
 * to negative numbers.  QEMU's parser keeps them unsigned: 'int'
 * members refuse them, 'uint64' ones take them.  Such literals (outside
 * strings) get a ".0" here, to reach the validator as doubles it can
 * tell apart.  The largest of them round to 2^64 as doubles, which the
 * validator reads as UINT64_MAX; so a literal past UINT64_MAX that
 * would round to 2^64 too is moved to the next double (2^64 + 4096),
 * where it stays out of uint64's range as QEMU has it. */
#define UINT64_MAX_TEXT "18446744073709551615"
#define AFTER_2_64_TEXT "18446744073709555712"
static GString *mark_big_unsigned(const char *text, gssize len)
{
    GString *out = g_string_sized_new(len + 16);
    gboolean in_string = FALSE;
    gssize i = 0;

    while (i < len) {
        char ch = text[i];

        if (in_string) {
            g_string_append_c(out, ch);
            if (ch == '\\' && i + 1 < len) {
                g_string_append_c(out, text[++i]);
            } else if (ch == '"') {
                in_string = FALSE;
            }
            i++;
            continue;
        }
        if (ch == '"') {
            in_string = TRUE;
        } else if (g_ascii_isdigit(ch) &&
                   (i == 0 || !(g_ascii_isalnum(text[i - 1]) ||
                                text[i - 1] == '-' || text[i - 1] == '.' ||
                                text[i - 1] == '+'))) {
            gssize start = i, n;

            while (i < len && g_ascii_isdigit(text[i])) {
                i++;
            }
            n = i - start;
            gboolean whole = i >= len || !strchr(".eE", text[i]);
            if (whole && n == 20 &&
                strncmp(text + start, UINT64_MAX_TEXT, 20) > 0 &&
                strncmp(text + start, AFTER_2_64_TEXT, 20) < 0) {
                g_string_append(out, AFTER_2_64_TEXT);
            } else {
                g_string_append_len(out, text + start, n);
            }
            if (whole &&
                (n > 19 || (n == 19 && strncmp(text + start,
                                               "9223372036854775807",
                                               19) > 0))) {
                g_string_append(out, ".0");
            }
            continue;
        }
        g_string_append_c(out, ch);
        i++;
    }
    return out;
}

static int hex4(const char *p, const char *end)
{
    int v = 0;

    if (end - p < 4) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        int d = g_ascii_xdigit_value(p[i]);

        if (d < 0) {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* The strings of a JSON text hold only valid UTF-8 and \u escapes of
 * real characters (a high surrogate followed by a low one), with
 * QEMU's messages.  json-glib would pass invalid bytes and lone
 * surrogates on as invalid UTF-8, which no later step may see (GVariant
 * strings must be UTF-8).  Other malformations are json-glib's to
 * report. */
static gboolean check_strings(const char *p, const char *end, GError **errp)
{
    while (p < end) {
        const char *start;

        if (*p++ != '"') {
            continue;
        }
        start = p;
        while (p < end && *p != '"') {
            if (*p != '\\') {
                p++;
                continue;
            }
            if (end - p >= 2 && p[1] == 'u') {
                const char *esc = p;
                int cp = hex4(p + 2, end);

                if (cp < 0) {
                    /* json-glib would decode the non-hex digits as
                     * something (even a lone surrogate); QEMU shows the
                     * six bytes it looked at. */
                    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                                "JSON parse error, %.*s is not a valid "
                                "Unicode character", (int)MIN(6, end - esc),
                                esc);
                    return FALSE;
                }
                p += 6;
                if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 2 &&
                    p[0] == '\\' && p[1] == 'u') {
                    int low = hex4(p + 2, end);

                    if (low >= 0xdc00 && low <= 0xdfff) {
                        p += 6;
                        continue;
                    }
                }
                if (cp >= 0xd800 && cp <= 0xdfff) {
                    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                                "JSON parse error, %.*s is not a valid "
                                "Unicode character", (int)(p - esc), esc);
                    return FALSE;
                }
                continue;
            }
            p += MIN(2, end - p);
        }
        if (!g_utf8_validate(start, p - start, NULL)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "JSON parse error, invalid UTF-8 sequence in string");
            return FALSE;
        }
        p++;    /* the closing quote */
    }
    return TRUE;
}

/* Whether every member name and string under 'node' is UTF-8.  The
 * text check above gives QEMU's messages for what a client usually
 * sends; this one is the guarantee, whatever json-glib's scanner
 * decodes into a string (its escapes and quoting differ from QEMU's
 * in corners that the text check does not model). */
static gboolean strings_are_utf8(JsonNode *node)
{
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        JsonObjectIter it;
        const char *name;
        JsonNode *member;

        json_object_iter_init(&it, json_node_get_object(node));
        while (json_object_iter_next(&it, &name, &member)) {
            if (!g_utf8_validate(name, -1, NULL) ||
                !strings_are_utf8(member)) {
                return FALSE;
            }
        }
    } else if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *a = json_node_get_array(node);

        for (guint i = 0; i < json_array_get_length(a); i++) {
            if (!strings_are_utf8(json_array_get_element(a, i))) {
                return FALSE;
            }
        }
    } else if (JSON_NODE_HOLDS_VALUE(node) &&
               json_node_get_value_type(node) == G_TYPE_STRING) {
        return g_utf8_validate(json_node_get_string(node), -1, NULL);
    }
    return TRUE;
}

JsonNode *bd_json_parse(const char *text, gssize len, GError **errp)
{
    if (!check_strings(text, text + (len < 0 ? (gssize)strlen(text) : len),
                       errp)) {
        return NULL;
    }
    g_autoptr(GString) marked = mark_big_unsigned(text,
                                                  len < 0 ? (gssize)strlen(text)
                                                          : len);
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;
    DupCheck dc = {
        .seen = g_hash_table_new_full(NULL, NULL, NULL,
                                      (GDestroyNotify)g_hash_table_unref),
    };
    g_signal_connect(parser, "object-member", G_CALLBACK(on_member), &dc);
    gboolean ok = json_parser_load_from_data(parser, marked->str,
                                             (gssize)marked->len, &err);
    g_hash_table_unref(dc.seen);
    if (ok && dc.duplicate) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "JSON parse error, duplicate key");
        return NULL;
    }

    if (!ok) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "JSON parse error, %s",
                    parse_error_text(err, text, len));
        return NULL;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "JSON parse error, expecting value");
        return NULL;
    }
    if (!strings_are_utf8(root)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "JSON parse error, invalid UTF-8 sequence in string");
        return NULL;
    }
    return json_node_copy(root);
}
