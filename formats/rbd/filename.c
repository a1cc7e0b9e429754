/* SPDX-License-Identifier: MIT */
/* QEMU's legacy rbd file names, rbd:pool[/namespace]/image[@snap][:k=v...],
 * parsed into BlockdevOptionsRbd members and librados options.  A
 * backslash takes the next character literally (a ':', '@' or '=' in a
 * name or a value).
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

/* QEMU's keyvalue-pairs: every key but conf and id goes to librados
 * as it is (rados_conf_set, in the name's order, after the conf file;
 * rbd_connect), so any Ceph option works and librados judges it. */
static int put_pair(GVariantDict *d, GVariantBuilder *pairs,
                    const char *key, const char *val)
{
    if (!strcmp(key, "id")) {
        put_str(d, "user", val);
    } else if (!strcmp(key, "conf")) {
        put_str(d, "conf", val);
    } else {
        g_variant_builder_add(pairs, "s", key);
        g_variant_builder_add(pairs, "s", val);
        return 1;
    }
    return 0;
}

gboolean rbd_filename_parse(const char *filename, GVariantDict *d,
                            GError **errp)
{
    const char *p = filename;
    g_autofree char *pool = NULL, *image = NULL, *snap = NULL;
    GVariantBuilder pairs;
    int n_pairs = 0;
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
    /* As QEMU: "rbd:p/i:" ends in an option with no name and no value. */
    g_variant_builder_init(&pairs, G_VARIANT_TYPE_STRING_ARRAY);
    while (found == ':') {
        g_autofree char *key = next_tok(&p, "=:", &found);
        g_autofree char *val = NULL;

        if (found != '=') {
            g_variant_builder_clear(&pairs);
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "conf option %s has no value", key);
            return FALSE;
        }
        val = next_tok(&p, ":", &found);
        n_pairs += put_pair(d, &pairs, key, val);
    }
    if (n_pairs) {
        g_variant_dict_insert_value(d, RBD_KEYVALUE_PAIRS,
                                    g_variant_builder_end(&pairs));
    } else {
        g_variant_builder_clear(&pairs);
    }
    return TRUE;
}
