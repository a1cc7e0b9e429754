/* SPDX-License-Identifier: MIT */
/* QEMU's legacy rbd file names, rbd:pool[/namespace]/image[@snap][:k=v...],
 * parsed into BlockdevOptionsRbd members.  A backslash takes the next
 * character literally (a ':' or '@' in a name).
 *
 * Thread model: no state.
 */
#define G_LOG_DOMAIN "blockd-rbd"

#include <string.h>

#include "graph/error.h"
#include "formats/rbd/rbd-int.h"

/* Cut the token at the first unescaped character of 'delims' (or the
 * end), unescaping it; *p moves past the delimiter.  *found: which
 * delimiter ended it ('\0' at the end). */
static char *next_tok(const char **p, const char *delims, char *found)
{
    GString *s = g_string_new(NULL);
    const char *q = *p;

    for (; *q; q++) {
        if (*q == '\\' && q[1]) {
            g_string_append_c(s, *++q);
        } else if (strchr(delims, *q)) {
            break;
        } else {
            g_string_append_c(s, *q);
        }
    }
    *found = *q;
    *p = *q ? q + 1 : q;
    return g_string_free(s, FALSE);
}

static void put_str(GVariantDict *d, const char *key, const char *val)
{
    g_variant_dict_insert(d, key, "s", val);
}

/* mon_host: "host[:port]" entries separated by ',', ';' or spaces,
 * with Ceph's optional "v1:"/"v2:" prefixes and brackets; QEMU's
 * 'server' list has room for host and port only. */
static gboolean put_servers(GVariantDict *d, const char *spec,
                            GError **errp)
{
    g_auto(GStrv) parts = g_strsplit_set(spec, ",; ", -1);
    GVariantBuilder list;
    int n = 0;

    g_variant_builder_init(&list, G_VARIANT_TYPE("av"));
    for (int i = 0; parts[i]; i++) {
        const char *a = parts[i];
        g_autofree char *host = NULL;
        const char *port = "6789";
        GVariantDict srv;

        if (!*a) {
            continue;
        }
        if (g_str_has_prefix(a, "v1:") || g_str_has_prefix(a, "v2:")) {
            a += 3;
        }
        if (*a == '[') {
            const char *end = strchr(a, ']');
            if (!end) {
                g_variant_builder_clear(&list);
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "rbd: invalid mon_host address '%s'", parts[i]);
                return FALSE;
            }
            host = g_strndup(a + 1, end - a - 1);
            if (end[1] == ':') {
                port = end + 2;
            }
        } else if (strchr(a, ':')) {
            const char *c = strrchr(a, ':');
            host = g_strndup(a, c - a);
            port = c + 1;
        } else {
            host = g_strdup(a);
        }
        g_variant_dict_init(&srv, NULL);
        put_str(&srv, "host", host);
        put_str(&srv, "port", port);
        g_variant_builder_add(&list, "v", g_variant_dict_end(&srv));
        n++;
    }
    if (!n) {
        g_variant_builder_clear(&list);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "rbd: empty mon_host");
        return FALSE;
    }
    g_variant_dict_insert_value(d, "server", g_variant_builder_end(&list));
    return TRUE;
}

static gboolean put_auth(GVariantDict *d, const char *spec, GError **errp)
{
    g_auto(GStrv) parts = g_strsplit_set(spec, ",;", -1);
    GVariantBuilder list;

    g_variant_builder_init(&list, G_VARIANT_TYPE("av"));
    for (int i = 0; parts[i]; i++) {
        if (strcmp(parts[i], "cephx") && strcmp(parts[i], "none")) {
            g_variant_builder_clear(&list);
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "rbd: auth_supported: unknown mode '%s'", parts[i]);
            return FALSE;
        }
        g_variant_builder_add(&list, "v", g_variant_new_string(parts[i]));
    }
    g_variant_dict_insert_value(d, "auth-client-required",
                                g_variant_builder_end(&list));
    return TRUE;
}

static gboolean put_pair(GVariantDict *d, const char *key, const char *val,
                         GError **errp)
{
    if (!strcmp(key, "id")) {
        put_str(d, "user", val);
    } else if (!strcmp(key, "conf")) {
        put_str(d, "conf", val);
    } else if (!strcmp(key, "mon_host")) {
        return put_servers(d, val, errp);
    } else if (!strcmp(key, "auth_supported")) {
        return put_auth(d, val, errp);
    } else {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "rbd: the file name option '%s' is not supported by "
                    "blockd (put it in a conf file)", key);
        return FALSE;
    }
    return TRUE;
}

gboolean rbd_filename_parse(const char *filename, GVariantDict *d,
                            GError **errp)
{
    const char *p = filename;
    g_autofree char *pool = NULL, *image = NULL, *snap = NULL;
    char found;

    if (!g_str_has_prefix(p, "rbd:")) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File name must start with 'rbd:'");
        return FALSE;
    }
    p += strlen("rbd:");
    pool = next_tok(&p, "/", &found);
    if (!*pool || found != '/') {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Pool name is required");
        return FALSE;
    }
    image = next_tok(&p, "/@:", &found);
    if (found == '/') {
        put_str(d, "namespace", image);
        g_free(image);
        image = next_tok(&p, "@:", &found);
    }
    if (!*image) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Image name is required");
        return FALSE;
    }
    if (found == '@') {
        snap = next_tok(&p, ":", &found);
        put_str(d, "snapshot", snap);
    }
    put_str(d, "pool", pool);
    put_str(d, "image", image);
    while (found == ':' && *p) {
        g_autofree char *key = next_tok(&p, "=:", &found);
        g_autofree char *val = NULL;

        if (found != '=') {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "conf option %s has no value", key);
            return FALSE;
        }
        val = next_tok(&p, ":", &found);
        if (!put_pair(d, key, val, errp)) {
            return FALSE;
        }
    }
    return TRUE;
}
