/* SPDX-License-Identifier: MIT */
/* QEMU's "json:{...}" filenames for nodes whose options a plain file name cannot say.
 *
 * QEMU prints a node's essential ("strong") options as JSON, with keys
 * in the iteration order of its QDict: by bucket tdb_hash(key) % 512.
 * Reproducing that order makes query-named-block-nodes show the same
 * text as QEMU, e.g.
 *   json:{"offset": 512, "driver": "raw", "size": 4096,
 *         "file": {"driver": "file", "filename": "/tmp/a.img"}}
 * Main thread.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <stdlib.h>
#include <string.h>
#include "graph/node.h"
#include "graph/main-thread.h"
#include "formats/json-filename.h"

#define QDICT_BUCKETS 512

/* QEMU's qdict bucket hash (the Samba tdb hash). */
static unsigned qdict_bucket(const char *key)
{
    guint32 value = 0x238F13AFu * (guint32)strlen(key);

    for (unsigned i = 0; key[i]; i++) {
        value += (guint32)(unsigned char)key[i] << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % QDICT_BUCKETS;
}

typedef struct {
    const char *key;
    unsigned bucket;
    unsigned seq;
} Member;

static int member_cmp(gconstpointer a, gconstpointer b)
{
    const Member *x = a, *y = b;

    if (x->bucket != y->bucket) {
        return x->bucket < y->bucket ? -1 : 1;
    }
    /* Same bucket: QEMU inserts at the head, so the newest comes first. */
    return x->seq > y->seq ? -1 : 1;
}

static void append_value(GString *out, GVariant *v);

static void append_dict(GString *out, GVariant *dict)
{
    gsize n = g_variant_n_children(dict);
    g_autofree Member *members = g_new0(Member, n ? n : 1);
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);

    for (gsize i = 0; i < n; i++) {
        GVariant *entry = g_variant_get_child_value(dict, i);
        g_ptr_array_add(keep, entry);
        g_variant_get_child(entry, 0, "&s", &members[i].key);
        members[i].bucket = qdict_bucket(members[i].key);
        members[i].seq = i;
    }
    qsort(members, n, sizeof(Member), (int (*)(const void *, const void *))
          member_cmp);
    g_string_append_c(out, '{');
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) v = g_variant_lookup_value(dict, members[i].key,
                                                       NULL);
        if (i) {
            g_string_append(out, ", ");
        }
        bd_json_quote(out, members[i].key);
        g_string_append(out, ": ");
        append_value(out, v);
    }
    g_string_append_c(out, '}');
}

static void append_value(GString *out, GVariant *v)
{
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) inner = g_variant_get_variant(v);
        append_value(out, inner);
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
        append_dict(out, v);
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_ARRAY)) {
        /* A list ("av"), e.g. quorum's children. */
        g_string_append_c(out, '[');
        for (gsize i = 0; i < g_variant_n_children(v); i++) {
            g_autoptr(GVariant) e = g_variant_get_child_value(v, i);
            g_string_append(out, i ? ", " : "");
            append_value(out, e);
        }
        g_string_append_c(out, ']');
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        bd_json_quote(out, g_variant_get_string(v, NULL));
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_INT64)) {
        g_string_append_printf(out, "%" G_GINT64_FORMAT,
                               g_variant_get_int64(v));
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_UINT64)) {
        g_string_append_printf(out, "%" G_GUINT64_FORMAT,
                               g_variant_get_uint64(v));
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_BOOLEAN)) {
        g_string_append(out, g_variant_get_boolean(v) ? "true" : "false");
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_DOUBLE)) {
        g_string_append_printf(out, "%.17g", g_variant_get_double(v));
    } else {
        g_string_append(out, "null");
    }
}

void bd_formats_add_strong(GVariantDict *d, const BdSchemaField *fields,
                           GVariant *options)
{
    for (const BdSchemaField *f = fields; f && f->name; f++) {
        g_autoptr(GVariant) v = NULL;

        if ((f->flags & BD_FIELD_STRONG) &&
            (v = bd_schema_member(options, f)) != NULL) {
            g_variant_dict_insert_value(d, f->name, v);
        }
    }
}

GVariant *bd_formats_full_options(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(NULL);

    /* The backing only when it is not the image's own (QEMU's
     * bdrv_backing_overridden), and then 'null' for none. */
    gboolean overridden = !node->drv->backing_overridden ||
                          node->drv->backing_overridden(node);

    if (node->drv->full_options) {
        return node->drv->full_options(node);
    }

    g_variant_dict_insert(&d, "driver", "s", node->drv->name);
    bd_formats_add_strong(&d, node->drv->options, node->options);
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (c == node->backing && !overridden) {
            continue;
        }
        g_variant_dict_insert_value(&d, c->name,
                                    bd_formats_full_options(c->node));
    }
    if (overridden && !node->backing && node->drv->backing_overridden) {
        g_variant_dict_insert_value(&d, "backing", bd_variant_null());
    }
    return g_variant_dict_end(&d);
}

char *bd_formats_json_filename(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GVariant) full = g_variant_ref_sink(bd_formats_full_options(node));
    GString *out = g_string_new("json:");

    append_value(out, full);
    return g_string_free(out, FALSE);
}

gboolean bd_formats_child_name_passes(BdNode *child)
{
    static const char *const file_open[] = { "blkdebug", "blkverify",
                                              "quorum", NULL };

    if (!child->drv) {
        return FALSE;
    }
    /* A child without a plain name of its own (blkdebug with its rules
     * as options, say) shows json:, and the format above it then shows
     * its own json: that nests the child's, as QEMU's exact_filename. */
    if (!child->filename || g_str_has_prefix(child->filename, "json:")) {
        return FALSE;
    }
    return child->drv->is_protocol ||
           g_strv_contains(file_open, child->drv->name);
}

char *bd_formats_json_of(GVariant *dict)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GVariant) full = g_variant_ref_sink(dict);
    GString *out = g_string_new("json:");

    append_value(out, full);
    return g_string_free(out, FALSE);
}
