/* SPDX-License-Identifier: MIT */
/* The 'copy-on-read' filter driver (QEMU's): data read through it that
 * is not allocated in its 'file' child, but is allocated in that child's
 * backing chain (down to 'bottom' when given), is written into 'file'.
 *
 * Thread model: open/close on the main thread; data callbacks on any
 * thread.  A copy cycle (read the range, write it back into 'file')
 * must not interleave with a guest write to the same bytes, or the
 * stale copy would overwrite the new data: a copy cycle is a
 * serialising request in the node's request list, where the generic
 * layer enters every write through the filter (graph/reqlist.h).
 * Ranges already allocated in 'file' are read without it.
 *
 * With 'bottom', the filter freezes the links from itself down to the
 * bottom node while it exists (QEMU's cor does: a stream job relies on
 * it), so that nothing reshapes the part of the chain it copies from.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <string.h>
#include "formats/json-filename.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/node.h"

typedef struct {
    GVariant *file;
    const char *bottom;
} CorOptions;

/* QAPI BlockdevOptionsCor. */
static const BdSchemaField cor_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(CorOptions, file) },
    { "bottom", &bd_schema_str, TRUE, BD_AT(CorOptions, bottom) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(CorOptions, cor_options)

typedef struct {
    BdChild *file;
    BdNode *bottom;          /* not a reference: the chain holds it */
    gboolean chain_frozen;   /* links from the filter to bottom frozen */
} CorState;

/* The filtered child of a filter, else the backing child. */
static BdChild *filter_or_cow_child(BdNode *node)
{
    BdChild *f = bd_node_filtered_child(node);

    return f ? f : node->backing;
}

/* Freeze the links from 'node' down to (not including) 'bottom', or
 * none when one of them is frozen already (QEMU's message). */
static gboolean freeze_chain(BdNode *node, BdNode *bottom, GError **errp)
{
    BdChild *c;

    for (BdNode *n = node; n && n != bottom; n = c ? c->node : NULL) {
        c = filter_or_cow_child(n);
        if (c && c->frozen) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot change '%s' link from '%s' to '%s'",
                        c->name, n->node_name, c->node->node_name);
            return FALSE;
        }
    }
    for (BdNode *n = node; n && n != bottom; n = c ? c->node : NULL) {
        c = filter_or_cow_child(n);
        if (c) {
            c->frozen++;
        }
    }
    return TRUE;
}

static void unfreeze_chain(BdNode *node, BdNode *bottom)
{
    BdChild *c;

    for (BdNode *n = node; n && n != bottom; n = c ? c->node : NULL) {
        c = filter_or_cow_child(n);
        if (c && c->frozen > 0) {
            c->frozen--;
        }
    }
}

static gboolean cor_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(CorOptions) o = { 0 };
    const char *bottom;
    BdNode *bottom_node = NULL;
    CorState *s;
    BdChild *file;

    bd_schema_decode(cor_options, options, &o);
    bottom = o.bottom;

    if (bottom) {
        bottom_node = bd_node_find(bottom);
        if (!bottom_node) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bottom node '%s' not found", bottom);
            return FALSE;
        }
        if (bottom_node->drv && bottom_node->drv->is_filter) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bottom node '%s' is a filter", bottom);
            return FALSE;
        }
    }
    file = bd_node_open_child(node, o.file, "file",
                              BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                              errp);
    if (!file) {
        return FALSE;
    }
    s = g_new0(CorState, 1);
    s->file = file;
    s->bottom = bottom_node;
    node->opaque = s;
    if (bottom_node) {
        if (!freeze_chain(node, bottom_node, errp)) {
            return FALSE;
        }
        s->chain_frozen = TRUE;
    }
    g_free(node->filename);
    node->filename = bd_formats_json_filename(node);
    bd_node_set_size(node, (uint64_t)bd_node_getlength(file->node));
    return TRUE;
}

static void cor_close(BdNode *node)
{
    CorState *s = node->opaque;

    if (s) {
        if (s->chain_frozen) {
            unfreeze_chain(node, s->bottom);
        }
        g_free(s);
        node->opaque = NULL;
    }
}

/* QEMU's cor_child_perm: pass the parents' needs through and always
 * write unchanged data into the child. */
static void cor_child_perm(BdNode *node, BdChild *child, BdChildRole role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared)
{
    const uint64_t unchanged = BD_PERM_ALL &
                               ~(uint64_t)(BD_PERM_WRITE | BD_PERM_RESIZE);

    *perm = (parent_perm & BD_PERM_ALL) | BD_PERM_WRITE_UNCHANGED;
    *shared = (parent_shared & BD_PERM_ALL) | unchanged;
}

/* Allocated in the backing chain of 'top', from its backing node down to
 * 'bottom' (included; NULL: the whole chain)?  Filters looked through. */
static int allocated_below(BdNode *top, BdNode *bottom, uint64_t offset,
                           uint64_t bytes, uint64_t *pnum)
{
    BdNode *cur = bd_node_backing(top);
    uint64_t n = bytes;

    while (cur) {
        BdChild *f = bd_node_filtered_child(cur);
        uint64_t size = (uint64_t)bd_node_getlength(cur), pn = 0;
        int ret;

        if (f) {
            cur = f->node;
            continue;
        }
        if (offset < size) {
            ret = bd_node_block_status(cur, offset, MIN(n, size - offset),
                                       &pn, NULL, NULL);
            if (ret < 0) {
                return ret;
            }
            if (pn && (ret & BD_BLOCK_ALLOCATED)) {
                *pnum = pn;
                return 1;
            }
            if (pn) {
                n = MIN(n, pn);
            }
        }
        if (cur == bottom) {
            break;
        }
        cur = bd_node_backing(cur);
    }
    *pnum = n;
    return 0;
}

/* One copy cycle over [offset, offset + bytes), serialising against
 * writes to the range.  Re-checks the allocation once no write to it is
 * in flight; returns the bytes handled. */
static int cor_copy(BdNode *node, CorState *s, uint64_t offset,
                    uint64_t bytes, uint8_t *buf, int flags, uint64_t *done)
{
    BdNode *top = s->file->node;
    uint64_t n = 0;
    BdReq req;
    int ret;

    bd_req_begin(&node->reqs, &req, offset, bytes, TRUE);
    ret = bd_node_block_status(top, offset, bytes, &n, NULL, NULL);
    if (ret >= 0) {
        n = MAX(MIN(n, bytes), 1);
        gboolean copy = !(ret & BD_BLOCK_ALLOCATED);
        if (copy) {
            ret = allocated_below(top, s->bottom, offset, n, &n);
            copy = ret > 0;
        }
        ret = bd_child_pread(s->file, offset, n, buf, flags);
        if (ret >= 0 && copy) {
            if (bd_buffer_is_zero(buf, n)) {
                ret = bd_child_pwrite_zeroes(s->file, offset, n, 0);
            } else {
                ret = bd_child_pwrite(s->file, offset, n, buf, 0);
            }
        }
    }
    bd_req_end(&node->reqs, &req);
    *done = n;
    return ret < 0 ? ret : 0;
}

static int cor_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    CorState *s = node->opaque;
    BdNode *top = s->file->node;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t n = 0;
        int ret = bd_node_block_status(top, offset, bytes, &n, NULL, NULL);

        if (ret < 0) {
            return ret;
        }
        n = MAX(MIN(n, bytes), 1);
        if (!(ret & BD_BLOCK_ALLOCATED)) {
            ret = allocated_below(top, s->bottom, offset, n, &n);
            if (ret < 0) {
                return ret;
            }
            if (ret) {
                ret = cor_copy(node, s, offset, n, p, flags, &n);
                if (ret < 0) {
                    return ret;
                }
                goto next;
            }
        }
        ret = bd_child_pread(s->file, offset, n, p, flags);
        if (ret < 0) {
            return ret;
        }
next:
        offset += n;
        p += n;
        bytes -= n;
    }
    return 0;
}

/* The status of the whole chain below: unallocated ranges of 'file'
 * read from its backing nodes, which the generic walk (that follows
 * 'backing' links only) would not reach from a filter. */
static int cor_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    CorState *s = node->opaque;
    int ret = bd_node_block_status_above(s->file->node, offset, bytes, pnum,
                                         NULL);

    *map = 0;
    *file = NULL;
    return ret < 0 ? ret : ret & (BD_BLOCK_DATA | BD_BLOCK_ZERO);
}

static int cor_truncate(BdNode *node, uint64_t size)
{
    CorState *s = node->opaque;
    int ret = bd_node_truncate(s->file->node, size);

    if (ret == 0) {
        bd_node_set_size(node, size);
    }
    return ret;
}

const BdDriver bd_copy_on_read_driver = {
    .name = "copy-on-read",
    .options = cor_options,
    .is_filter = TRUE,
    .serialises_requests = TRUE,
    .open = cor_open,
    .close = cor_close,
    .child_perm = cor_child_perm,
    .pread = cor_pread,
    .block_status = cor_block_status,
    .truncate = cor_truncate,
};
