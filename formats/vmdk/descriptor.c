/* SPDX-License-Identifier: MIT */
/* vmdk descriptor text: "key=value" lines (CID, parentCID, createType,
 * parentFileNameHint, ddb.*) and extent lines
 *   ACCESS SECTORS TYPE ["FILENAME" [OFFSET]]
 * as VMware's Virtual Disk Format 1.1 describes them.  Comments start
 * with '#'.  Pure text processing: no I/O here. */
#define G_LOG_DOMAIN "blockd-formats"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "formats/vmdk/vmdk.h"

static void extent_desc_free(gpointer p)
{
    VmdkExtentDesc *x = p;

    g_free(x->access);
    g_free(x->type_name);
    g_free(x->filename);
    g_free(x);
}

void vmdk_desc_free(VmdkDesc *d)
{
    if (!d) {
        return;
    }
    g_free(d->create_type);
    g_free(d->parent_hint);
    if (d->extents) {
        g_ptr_array_unref(d->extents);
    }
    g_free(d);
}

/* The value of a key=value line without its quotes (new string). */
static char *unquote(const char *v)
{
    size_t len;

    while (*v == ' ' || *v == '\t') {
        v++;
    }
    len = strlen(v);
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
        return g_strndup(v + 1, len - 2);
    }
    return g_strndup(v, len);
}

static gboolean parse_hex32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long long v;

    v = strtoull(s, &end, 16);
    if (end == s || v > 0xffffffffull) {
        return FALSE;
    }
    *out = (uint32_t)v;
    return TRUE;
}

static gboolean parse_extent(VmdkDesc *d, const char *line,
                             const char *node_name, GError **errp)
{
    g_autofree char *access = NULL, *type = NULL, *fname = NULL;
    const char *p = line;
    const char *q;
    char *end;
    VmdkExtentDesc *x;
    uint64_t sectors, offset = 0;
    gboolean has_offset = FALSE;

    q = strchr(p, ' ');
    if (!q) {
        goto bad;
    }
    access = g_strndup(p, q - p);
    p = q + 1;
    sectors = g_ascii_strtoull(p, &end, 10);
    if (end == p || *end != ' ') {
        goto bad;
    }
    p = end + 1;
    q = p;
    while (*q && *q != ' ') {
        q++;
    }
    type = g_strndup(p, q - p);
    p = q;
    while (*p == ' ') {
        p++;
    }
    if (*p == '"') {
        q = strchr(p + 1, '"');
        if (!q) {
            goto bad;
        }
        fname = g_strndup(p + 1, q - p - 1);
        p = q + 1;
        while (*p == ' ') {
            p++;
        }
        if (*p) {
            offset = g_ascii_strtoull(p, &end, 10);
            if (end == p) {
                goto bad;
            }
            has_offset = TRUE;
        }
    } else if (*p) {
        goto bad;
    }
    x = g_new0(VmdkExtentDesc, 1);
    if (strcmp(type, "FLAT") == 0 || strcmp(type, "VMFS") == 0) {
        x->type = VMDK_EXTENT_FLAT;
    } else if (strcmp(type, "SPARSE") == 0 ||
               strcmp(type, "VMFSSPARSE") == 0) {
        /* Either header, "KDMV" or "COWD", as in QEMU. */
        x->type = VMDK_EXTENT_SPARSE;
    } else if (strcmp(type, "ZERO") == 0) {
        x->type = VMDK_EXTENT_ZERO;
    } else {
        extent_desc_free(x);
        VMDK_FAIL("Node '%s': vmdk: unsupported extent type '%s'",
                  node_name, type);
    }
    x->access = g_steal_pointer(&access);
    x->type_name = g_steal_pointer(&type);
    x->filename = g_steal_pointer(&fname);
    x->sectors = sectors;
    x->offset = offset;
    g_ptr_array_add(d->extents, x);
    if ((x->type != VMDK_EXTENT_ZERO && !x->filename) ||
        (x->type == VMDK_EXTENT_FLAT && !has_offset) ||
        (x->type == VMDK_EXTENT_SPARSE && has_offset && offset)) {
        goto bad;
    }
    return TRUE;
bad:
    VMDK_FAIL("Invalid extent line: %s", line);
}

VmdkDesc *vmdk_desc_parse(const char *text, const char *node_name,
                          GError **errp)
{
    g_autoptr(VmdkDesc) d = g_new0(VmdkDesc, 1);
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);

    d->extents = g_ptr_array_new_with_free_func(extent_desc_free);
    for (char **lp = lines; *lp; lp++) {
        char *line = *lp;
        size_t len = strlen(line);
        char *eq;

        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' ||
                       line[len - 1] == '\t')) {
            line[--len] = '\0';
        }
        while (*line == ' ' || *line == '\t') {
            line++;
        }
        if (!*line || *line == '#') {
            continue;
        }
        if (g_str_has_prefix(line, "RW ") ||
            g_str_has_prefix(line, "RDONLY ") ||
            g_str_has_prefix(line, "NOACCESS ")) {
            if (!parse_extent(d, line, node_name, errp)) {
                return NULL;
            }
            continue;
        }
        eq = strchr(line, '=');
        if (!eq) {
            continue;
        }
        *eq = '\0';
        g_strchomp(line);
        if (strcmp(line, "createType") == 0) {
            g_free(d->create_type);
            d->create_type = unquote(eq + 1);
        } else if (strcmp(line, "parentFileNameHint") == 0) {
            g_free(d->parent_hint);
            d->parent_hint = unquote(eq + 1);
        } else if (strcmp(line, "CID") == 0) {
            g_autofree char *v = unquote(eq + 1);
            d->has_cid = parse_hex32(v, &d->cid);
        } else if (strcmp(line, "parentCID") == 0) {
            g_autofree char *v = unquote(eq + 1);
            d->has_parent_cid = parse_hex32(v, &d->parent_cid);
        }
    }
    return g_steal_pointer(&d);
}
