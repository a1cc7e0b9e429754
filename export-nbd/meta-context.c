/* SPDX-License-Identifier: MIT */
/* Metadata contexts: NBD_OPT_LIST/SET_META_CONTEXT and the extents of
 * NBD_CMD_BLOCK_STATUS for "base:allocation", "qemu:allocation-depth" and
 * "qemu:dirty-bitmap:NAME".
 *
 * Query rules (the NBD spec for "base:", QEMU's docs/interop/nbd.txt
 * for "qemu:"):
 *   "base:allocation"       selects base:allocation
 *   "base:"                 LIST only: every base: context
 *   "qemu:allocation-depth" selects it when the export enables it
 *   "qemu:"                 LIST only: every qemu: context
 *   "qemu:dirty-bitmap:NAME" selects an exported bitmap by name
 *   "qemu:dirty-bitmap:"    LIST only: every exported bitmap
 *   other namespaces        ignored
 *   no query at all         LIST: every context; SET: none
 *
 * Thread model: the option handler runs on the connection thread in the
 * handshake; the extent builders on any transmission worker.
 */
#include <errno.h>
#include <string.h>

#include "export-nbd/nbd-internal.h"

#define CTX_BASE_ALLOCATION   "base:allocation"
#define CTX_ALLOCATION_DEPTH  "qemu:allocation-depth"

/* If [*q, *q + *len) starts with 'prefix', consume it. */
static gboolean strshift(const char **q, size_t *len, const char *prefix)
{
    size_t n = strlen(prefix);

    if (*len < n || memcmp(*q, prefix, n) != 0) {
        return FALSE;
    }
    *q += n;
    *len -= n;
    return TRUE;
}

static gboolean leaf_is(const char *q, size_t len, const char *leaf)
{
    return len == strlen(leaf) && memcmp(q, leaf, len) == 0;
}

static void select_bitmaps(const char *q, size_t len, gboolean all,
                           const char *const *bitmaps, BdNbdMetaSel *sel)
{
    for (guint i = 0; bitmaps && bitmaps[i]; i++) {
        if (all || leaf_is(q, len, bitmaps[i])) {
            sel->bitmaps |= G_GUINT64_CONSTANT(1) << i;
        }
    }
}

void bd_nbd_meta_query(const char *query, size_t len, gboolean list,
                       gboolean has_depth, const char *const *bitmaps,
                       BdNbdMetaSel *sel)
{
    if (strshift(&query, &len, "base:")) {
        if ((list && len == 0) || leaf_is(query, len, "allocation")) {
            sel->base_allocation = TRUE;
        }
    } else if (strshift(&query, &len, "qemu:")) {
        if (list && len == 0) {
            sel->allocation_depth |= has_depth;
            select_bitmaps(query, len, TRUE, bitmaps, sel);
        } else if (leaf_is(query, len, "allocation-depth")) {
            sel->allocation_depth |= has_depth;
        } else if (strshift(&query, &len, "dirty-bitmap:")) {
            select_bitmaps(query, len, list && len == 0, bitmaps, sel);
        }
    }
}

static int send_context(BdNbdClient *c, uint32_t opt, uint32_t id,
                        const char *name)
{
    size_t n = strlen(name);
    g_autofree uint8_t *buf = g_malloc(4 + n);
    uint32_t be = GUINT32_TO_BE(id);

    memcpy(buf, &be, 4);
    memcpy(buf + 4, name, n);
    return bd_nbd_send_rep(c, opt, NBD_REP_META_CONTEXT, buf, 4 + n);
}

static uint32_t be32_at(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

int bd_nbd_opt_meta_context(BdNbdClient *c, uint32_t opt,
                            const uint8_t *data, uint32_t len)
{
    gboolean list = opt == NBD_OPT_LIST_META_CONTEXT;
    const char *what = bd_nbd_opt_name(opt);
    BdNbdMetaSel sel = { 0 };
    g_autofree char *name = NULL;
    uint32_t namelen, nq, i, p;
    gboolean has_depth;
    g_auto(GStrv) bitmaps = NULL;
    BdNbdExport *exp;

    if (!list) {
        /* SET replaces the selection, even when it fails. */
        memset(&c->meta, 0, sizeof(c->meta));
        c->meta_set = FALSE;
        g_clear_pointer(&c->meta_export, g_free);
    }
    if (!c->structured) {
        return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                   "request option '%s' when structured reply is not "
                   "negotiated", what);
    }
    if (len < 8 || (namelen = be32_at(data)) > len - 8) {
        return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "%s: bad export name length", what);
    }
    name = g_strndup((const char *)data + 4, namelen);
    if (namelen > BD_NBD_MAX_STRING || strlen(name) != namelen) {
        return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "%s: invalid export name", what);
    }
    nq = be32_at(data + 4 + namelen);
    p = 8 + namelen;

    exp = bd_nbd_export_get(name);
    if (!exp) {
        return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_UNKNOWN,
                                   "export '%s' not present", name);
    }
    has_depth = exp->allocation_depth;
    bitmaps = g_strdupv(exp->bitmap_names);
    bd_export_unref(&exp->common);

    for (i = 0; i < nq; i++) {
        uint32_t qlen;
        if (len - p < 4 || (qlen = be32_at(data + p)) > len - p - 4) {
            return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                       "%s: query %u overruns the option",
                                       what, i);
        }
        if (qlen > BD_NBD_MAX_STRING) {
            return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_TOO_BIG,
                                       "%s: query %u too long", what, i);
        }
        bd_nbd_meta_query((const char *)data + p + 4, qlen, list,
                          has_depth, (const char *const *)bitmaps, &sel);
        p += 4 + qlen;
    }
    if (p != len) {
        return bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "%s: trailing data", what);
    }
    if (nq == 0 && list) {
        sel.base_allocation = TRUE;
        sel.allocation_depth = has_depth;
        select_bitmaps(NULL, 0, TRUE, (const char *const *)bitmaps, &sel);
    }

    if (sel.base_allocation &&
        send_context(c, opt, list ? 0 : BD_NBD_META_BASE_ALLOCATION,
                     CTX_BASE_ALLOCATION) < 0) {
        return -1;
    }
    if (sel.allocation_depth &&
        send_context(c, opt, list ? 0 : BD_NBD_META_ALLOCATION_DEPTH,
                     CTX_ALLOCATION_DEPTH) < 0) {
        return -1;
    }
    for (guint b = 0; bitmaps && bitmaps[b]; b++) {
        g_autofree char *ctx = NULL;
        if (!(sel.bitmaps & (G_GUINT64_CONSTANT(1) << b))) {
            continue;
        }
        ctx = g_strconcat("qemu:dirty-bitmap:", bitmaps[b], NULL);
        if (send_context(c, opt, list ? 0 : BD_NBD_META_BITMAP0 + b,
                         ctx) < 0) {
            return -1;
        }
    }
    if (!list) {
        c->meta = sel;
        c->meta_set = sel.base_allocation || sel.allocation_depth ||
                      sel.bitmaps;
        c->meta_export = g_steal_pointer(&name);
    }
    return bd_nbd_send_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

/* --- NBD_CMD_BLOCK_STATUS --- */

static void add_extent(GArray *out, uint64_t len, uint32_t flags)
{
    BdNbdExtent *last = out->len ?
        &g_array_index(out, BdNbdExtent, out->len - 1) : NULL;

    /* Merge with an equal neighbour while the 32-bit length allows. */
    if (last && GUINT32_FROM_BE(last->flags) == flags) {
        uint64_t merged = GUINT32_FROM_BE(last->length);
        merged += len;
        if (merged <= UINT32_MAX) {
            uint32_t m32 = (uint32_t)merged;
            last->length = GUINT32_TO_BE(m32);
            return;
        }
    }
    g_array_append_val(out, ((BdNbdExtent){
        .length = GUINT32_TO_BE((uint32_t)len),
        .flags = GUINT32_TO_BE(flags),
    }));
}

/* A dirty bitmap as extents: clean runs 0, dirty runs NBD_STATE_DIRTY. */
static int bitmap_extents(BdDirtyBitmap *bm, uint64_t offset, uint64_t end,
                          gboolean req_one, GArray *out)
{
    uint64_t start, len;

    while (offset < end && out->len < BD_NBD_MAX_EXTENTS) {
        if (!bd_dirty_bitmap_next_dirty_area(bm, offset, end, UINT32_MAX,
                                             &start, &len)) {
            start = end;
            len = 0;
        }
        if (start > offset) {
            add_extent(out, MIN(start - offset, (uint64_t)UINT32_MAX), 0);
            offset += MIN(start - offset, (uint64_t)UINT32_MAX);
        } else {
            len = MIN(len, end - offset);
            add_extent(out, len, NBD_STATE_DIRTY);
            offset += len;
        }
        if (req_one) {
            break;
        }
    }
    return out->len ? 0 : -EIO;
}

int bd_nbd_meta_extents(BdNbdExport *exp, BdEntry *entry, uint32_t id,
                        uint64_t offset, uint32_t length, gboolean req_one,
                        GArray *out)
{
    uint64_t end = offset + length;

    g_array_set_size(out, 0);
    if (id >= BD_NBD_META_BITMAP0) {
        if (id - BD_NBD_META_BITMAP0 >= exp->n_bitmaps) {
            return -EINVAL;
        }
        return bitmap_extents(exp->bitmaps[id - BD_NBD_META_BITMAP0],
                              offset, end, req_one, out);
    }
    while (offset < end && out->len < BD_NBD_MAX_EXTENTS) {
        uint64_t pnum = 0;
        uint32_t flags;
        int ret;

        if (id == BD_NBD_META_BASE_ALLOCATION) {
            ret = bd_entry_block_status(entry, offset, end - offset, &pnum);
            flags = ret < 0 ? 0 :
                    (ret & BD_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
                    (ret & BD_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
        } else {
            ret = bd_entry_allocation_depth(entry, offset, end - offset,
                                            &pnum);
            flags = ret;
        }
        if (ret < 0) {
            return ret;
        }
        if (pnum == 0) {
            break;
        }
        pnum = MIN(pnum, end - offset);
        add_extent(out, pnum, flags);
        offset += pnum;
        if (req_one) {
            break;
        }
    }
    return out->len ? 0 : -EIO;
}
