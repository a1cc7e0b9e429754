/* SPDX-License-Identifier: MIT */
/* The command line's KEY=VALUE,... syntax (QEMU's keyval), parsed into a
 * JSON tree of strings, and the JSON-or-keyval choice every option makes.
 *
 *   key-vals     = [ key-val { ',' key-val } [ ',' ] ]
 *   key-val      = key '=' val          (or a bare first val: implied key)
 *   key          = fragment { '.' fragment }
 *   val          = any text; ',,' stands for one ','
 *
 * A dotted key names a path of nested objects; an object whose keys are
 * all decimal indexes becomes an array (bitmaps.0=a,bitmaps.1=b).  All
 * leaves are strings; validate.c converts them per the schema.
 */
#include <errno.h>
#include <string.h>
#include "control/input.h"
#include "graph/error.h"

#define KEY_FRAGMENT_MAX 127

/* Length of a QAPI name at 's' (a letter, then letters, digits, '-',
 * '_'), or 0 when 's' does not start one. */
static size_t qapi_name_len(const char *s)
{
    const char *p = s;

    if (g_str_has_prefix(p, "__")) {        /* __RFQDN_name extension */
        const char *u = strchr(p + 2, '_');
        if (u && u > p + 2) {
            p = u + 1;
        }
    }
    if (!g_ascii_isalpha(*p)) {
        return 0;
    }
    p++;
    while (g_ascii_isalnum(*p) || *p == '-' || *p == '_') {
        p++;
    }
    return p - s;
}

/* Length of a run of decimal digits at 's' (a list index), or 0. */
static size_t index_len(const char *s)
{
    size_t n = 0;

    while (g_ascii_isdigit(s[n])) {
        n++;
    }
    return n;
}

/* Make sure 'obj'.'name' is an object (value NULL) or set it to the
 * string 'value'.  'key'/'key_len' identify the key for messages. */
static JsonObject *put(JsonObject *obj, const char *name, const char *value,
                       const char *key, size_t key_len, GError **errp)
{
    JsonNode *old = json_object_get_member(obj, name);

    if (old) {
        gboolean want_obj = value == NULL;
        gboolean is_obj = JSON_NODE_HOLDS_OBJECT(old);
        if (want_obj != is_obj) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameters '%.*s.*' used inconsistently",
                        (int)key_len, key);
            return NULL;
        }
        if (want_obj) {
            return json_node_get_object(old);
        }
    }
    if (value) {
        json_object_set_string_member(obj, name, value);
        return obj;
    }
    JsonObject *child = json_object_new();
    json_object_set_object_member(obj, name, child);
    return child;
}

/* Parse one key=val (or the implied-key value) at 'params' into 'root'.
 * Returns the position after it, or NULL with *errp set. */
static const char *parse_one(JsonObject *root, const char *params,
                             const char *implied_key, GError **errp)
{
    const char *key = params;
    size_t len = strcspn(params, "=,");
    gboolean implied = FALSE;

    if (implied_key && len && key[len] != '=') {
        key = implied_key;
        len = strlen(implied_key);
        implied = TRUE;
    }
    const char *key_end = key + len;

    JsonObject *cur = root;
    char frag[KEY_FRAGMENT_MAX + 1];
    const char *s = key;
    for (;;) {
        size_t flen = (s != key) ? index_len(s) : 0;
        if (!flen) {
            flen = qapi_name_len(s);
        }
        if (!flen || (s + flen < key_end && s[flen] != '.') ||
            s + flen > key_end) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%.*s'", (int)(key_end - key), key);
            return NULL;
        }
        if (flen > KEY_FRAGMENT_MAX) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameter%s '%.*s' is too long",
                        s != key || s + flen != key_end ? " fragment" : "",
                        (int)flen, s);
            return NULL;
        }
        if (s != key) {
            /* 'frag' (the previous fragment) is an inner node. */
            cur = put(cur, frag, NULL, key, s - 1 - key, errp);
            if (!cur) {
                return NULL;
            }
        }
        memcpy(frag, s, flen);
        frag[flen] = 0;
        s += flen;
        if (*s != '.') {
            break;
        }
        s++;
    }

    if (implied) {
        s = params;
    } else {
        if (*s != '=') {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Expected '=' after parameter '%.*s'",
                        (int)(s - key), key);
            return NULL;
        }
        s++;
    }

    g_autoptr(GString) val = g_string_new(NULL);
    for (;;) {
        if (!*s) {
            break;
        }
        if (*s == ',') {
            s++;
            if (*s != ',') {
                break;
            }
        }
        g_string_append_c(val, *s++);
    }
    if (!put(cur, frag, val->str, key, key_end - key, errp)) {
        return NULL;
    }
    return s;
}

static gboolean is_index(const char *key)
{
    size_t n = index_len(key);
    return n > 0 && key[n] == 0;
}

/* Replace objects whose keys are all indexes by arrays, depth first.
 * 'path' is the dotted key of 'node' plus a trailing '.' (or ""). */
static JsonNode *listify(JsonNode *node, const char *path, GError **errp)
{
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        return json_node_ref(node);
    }
    JsonObject *obj = json_node_get_object(node);
    g_autoptr(GList) members = json_object_get_members(obj);
    gboolean has_index = FALSE, has_member = FALSE;
    guint64 max_index = 0;

    for (GList *l = members; l; l = l->next) {
        /* Own the key: set_member below frees the borrowed one. */
        g_autofree char *k = g_strdup(l->data);
        g_autofree char *sub = g_strconcat(path, k, ".", NULL);
        JsonNode *cur = json_object_get_member(obj, k);
        g_autoptr(JsonNode) v = listify(cur, sub, errp);
        if (!v) {
            return NULL;
        }
        /* json_object_set_member() keeps a node it already holds and
         * drops the reference it was given without releasing it. */
        if (v != cur) {
            json_object_set_member(obj, k, g_steal_pointer(&v));
        }
        if (is_index(k)) {
            guint64 i = g_ascii_strtoull(k, NULL, 10);
            has_index = TRUE;
            max_index = MAX(max_index, i);
        } else {
            has_member = TRUE;
        }
    }
    /* set_member() above replaced the keys 'members' pointed to. */
    g_list_free(members);
    members = json_object_get_members(obj);

    if (has_index && has_member) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameters '%s*' used inconsistently", path);
        return NULL;
    }
    if (!has_index) {
        return json_node_ref(node);
    }

    /* Indexes may come in any order but must have no gaps. */
    guint n = json_object_get_size(obj);
    g_autoptr(JsonArray) arr = json_array_sized_new(n);
    for (guint64 i = 0; i <= max_index; i++) {
        char name[32];
        JsonNode *elt = NULL;
        if (i < n) {
            /* Keys like "01" denote index 1 too; look for any match. */
            for (GList *l = members; l && !elt; l = l->next) {
                if (g_ascii_strtoull(l->data, NULL, 10) == i) {
                    elt = json_object_get_member(obj, l->data);
                }
            }
        }
        if (!elt) {
            g_snprintf(name, sizeof(name), "%" G_GUINT64_FORMAT, i);
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameter '%s%s' missing", path, name);
            return NULL;
        }
        json_array_add_element(arr, json_node_ref(elt));
    }
    JsonNode *out = json_node_new(JSON_NODE_ARRAY);
    json_node_set_array(out, arr);
    return out;
}

JsonNode *bd_keyval_parse(const char *str, const char *implied_key,
                          GError **errp)
{
    g_autoptr(JsonObject) root = json_object_new();
    const char *s = str;
    const char *bad;

    /* Keys and values become GVariant strings, which must be UTF-8. */
    if (!g_utf8_validate(str, -1, &bad)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid UTF-8 sequence at byte %td of '%.*s...'",
                    bad - str, (int)MIN(bad - str, 32), str);
        return NULL;
    }
    while (*s) {
        s = parse_one(root, s, implied_key, errp);
        if (!s) {
            return NULL;
        }
        implied_key = NULL;
    }

    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, root);
    return listify(node, "", errp);
}

JsonNode *bd_option_parse(const char *str, const char *implied_key,
                          gboolean *is_keyval, GError **errp)
{
    gboolean json = str[0] == '{';

    if (is_keyval) {
        *is_keyval = !json;
    }
    if (!json) {
        return bd_keyval_parse(str, implied_key, errp);
    }
    g_autoptr(JsonNode) node = bd_json_parse(str, -1, errp);
    if (!node) {
        return NULL;
    }
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "JSON parse error, expecting an object");
        return NULL;
    }
    return g_steal_pointer(&node);
}

/* --- scalar conversions of keyval strings (QEMU's qemu_strto*()) --- */

gboolean bd_parse_int64(const char *s, gint64 *out)
{
    char *end;

    if (!*s) {
        return FALSE;
    }
    errno = 0;
    *out = g_ascii_strtoll(s, &end, 0);
    return !errno && !*end;
}

gboolean bd_parse_uint64(const char *s, guint64 *out)
{
    char *end;
    const char *p = s;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (!*p) {
        return FALSE;
    }
    errno = 0;
    /* A leading '-' wraps around, as strtoull() and QEMU do. */
    if (*p == '-') {
        guint64 v = g_ascii_strtoull(p + 1, &end, 0);
        *out = -v;
    } else {
        *out = g_ascii_strtoull(p, &end, 0);
    }
    return !errno && !*end;
}

gboolean bd_parse_size(const char *s, guint64 *out)
{
    static const char suffixes[] = "BKMGTPE";
    char *end;
    guint64 mul = 1;

    if (g_str_has_prefix(s, "0x") || g_str_has_prefix(s, "0X")) {
        errno = 0;
        *out = g_ascii_strtoull(s, &end, 16);
        return !errno && end != s + 2 && !*end;
    }
    const char *p = s;
    while (g_ascii_isdigit(*p)) {
        p++;
    }
    if (p == s) {
        return FALSE;
    }
    const char *frac = NULL;
    if (*p == '.') {
        frac = p;
        p++;
        while (g_ascii_isdigit(*p)) {
            p++;
        }
    }
    const char *num_end = p;
    if (*p) {
        const char *u = strchr(suffixes, g_ascii_toupper(*p));
        if (!u || p[1]) {
            return FALSE;
        }
        for (const char *q = suffixes; q < u; q++) {
            mul *= 1024;
        }
    }
    g_autofree char *ip = g_strndup(s, (frac ? frac : num_end) - s);
    errno = 0;
    guint64 val = g_ascii_strtoull(ip, NULL, 10);
    if (errno || (mul > 1 && val > G_MAXUINT64 / mul)) {
        return FALSE;
    }
    val *= mul;
    if (frac && num_end > frac + 1) {
        g_autofree char *fp = g_strndup(frac, num_end - frac);
        double f = g_ascii_strtod(fp, NULL) * (double)mul;
        if (mul == 1 && f != 0) {
            return FALSE;           /* no fractional bytes */
        }
        if ((double)(G_MAXUINT64 - val) < f) {
            return FALSE;
        }
        val += (guint64)f;
    }
    *out = val;
    return TRUE;
}

gboolean bd_parse_bool(const char *s, gboolean *out)
{
    if (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true") ||
        !strcmp(s, "y")) {
        *out = TRUE;
        return TRUE;
    }
    if (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false") ||
        !strcmp(s, "n")) {
        *out = FALSE;
        return TRUE;
    }
    return FALSE;
}
