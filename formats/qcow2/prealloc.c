/* SPDX-License-Identifier: MIT */
/* qcow2 preallocation at creation (metadata, falloc, full): every guest
 * cluster of a freshly created, empty image gets an L2 entry and a data
 * cluster, so later writes allocate nothing.
 *
 * Thread model: runs on the create job's thread, right after
 * bd_qcow2_create() on the same 'file'; the caller holds write and
 * resize permission on it and nobody else writes it.
 *
 * The empty image's refcount structures only cover its own metadata, so
 * a new refcount table and new refcount blocks covering everything are
 * written after the data, and the header is switched to them last.  The
 * clusters of the old ones become free (refcount 0).
 *
 *   [hdr][old rt][old rb][L1] [L2 ...][data ...][new rt][new rb]
 *    1     0       0      1     1        1         1       1     refcount
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "formats/qcow2/create-qapi.h"
#include "formats/qcow2/qcow2.h"

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

typedef struct {
    uint64_t cs;                  /* cluster size */
    uint32_t refcount_order;
    uint64_t l1_off, l1_size;     /* from the empty image */
    uint64_t e;                   /* clusters of the empty image */
    uint64_t l2_first, n_l2;      /* new L2 tables */
    uint64_t data_first, n_data;  /* data clusters, one per guest cluster */
    uint64_t rt_first, n_rt;      /* new refcount table */
    uint64_t rb_first, n_rb;      /* new refcount blocks */
    uint64_t total;
} Layout;

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static gboolean plan(BdNode *file, uint64_t size, Layout *l, GError **errp)
{
    uint8_t h[QCOW2_V3_HEADER_SIZE];
    int ret = bd_node_pread(file, 0, sizeof(h), h, 0);

    if (ret < 0) {
        FAIL("Could not read qcow2 header: %s", g_strerror(-ret));
    }
    int64_t len = bd_node_getlength(file);
    if (len < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-len));
    }
    l->cs = 1ull << get_be(h + 20, 4);
    l->l1_size = get_be(h + 36, 4);
    l->l1_off = get_be(h + 40, 8);
    l->refcount_order = get_be(h + 4, 4) >= 3 ? get_be(h + 96, 4) : 4;
    l->e = ((uint64_t)len + l->cs - 1) / l->cs;
    l->n_data = (size + l->cs - 1) / l->cs;
    l->n_l2 = l->l1_size;
    l->l2_first = l->e;
    l->data_first = l->l2_first + l->n_l2;
    l->rt_first = l->data_first + l->n_data;

    uint64_t per_block = l->cs * 8 >> l->refcount_order;
    uint64_t prev = 0;
    l->n_rt = l->n_rb = 1;
    for (;;) {
        l->total = l->rt_first + l->n_rt + l->n_rb;
        if (l->total == prev) {
            break;
        }
        prev = l->total;
        l->n_rb = (l->total + per_block - 1) / per_block;
        l->n_rt = (l->n_rb * 8 + l->cs - 1) / l->cs;
    }
    l->rb_first = l->rt_first + l->n_rt;
    if (l->n_rt * l->cs > QCOW2_MAX_REFTABLE_BYTES) {
        FAIL("Refcount table too large");
    }
    return TRUE;
}

static gboolean in_use(const Layout *l, uint64_t c)
{
    uint64_t l1_first = l->l1_off / l->cs;
    uint64_t l1_clusters = (l->l1_size * 8 + l->cs - 1) / l->cs;

    return c == 0 || (c >= l1_first && c < l1_first + l1_clusters) ||
           c >= l->e;
}

static int write_l2_tables(BdNode *file, const Layout *l, uint8_t *buf)
{
    uint64_t per_l2 = l->cs / 8;

    for (uint64_t t = 0; t < l->n_l2; t++) {
        memset(buf, 0, l->cs);
        for (uint64_t j = 0; j < per_l2; j++) {
            uint64_t g = t * per_l2 + j;
            if (g >= l->n_data) {
                break;
            }
            put_be64(buf + j * 8,
                     ((l->data_first + g) * l->cs) | QCOW2_OFLAG_COPIED);
        }
        int ret = bd_node_pwrite(file, (l->l2_first + t) * l->cs, l->cs,
                                 buf, 0);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int write_l1(BdNode *file, const Layout *l)
{
    g_autofree uint8_t *l1 = g_malloc0(l->l1_size * 8);

    for (uint64_t i = 0; i < l->n_l2; i++) {
        put_be64(l1 + i * 8, ((l->l2_first + i) * l->cs) |
                             QCOW2_OFLAG_COPIED);
    }
    return bd_node_pwrite(file, l->l1_off, l->l1_size * 8, l1, 0);
}

static int write_refcounts(BdNode *file, const Layout *l, uint8_t *buf)
{
    uint64_t per_block = l->cs * 8 >> l->refcount_order;
    g_autofree uint8_t *rt = g_malloc0(l->n_rt * l->cs);
    int ret;

    for (uint64_t b = 0; b < l->n_rb; b++) {
        memset(buf, 0, l->cs);
        for (uint64_t i = 0; i < per_block; i++) {
            uint64_t c = b * per_block + i;
            if (c >= l->total) {
                break;
            }
            if (in_use(l, c)) {
                qcow2_refcount_write(buf, i, l->refcount_order, 1);
            }
        }
        ret = bd_node_pwrite(file, (l->rb_first + b) * l->cs, l->cs, buf, 0);
        if (ret < 0) {
            return ret;
        }
        put_be64(rt + b * 8, (l->rb_first + b) * l->cs);
    }
    return bd_node_pwrite(file, l->rt_first * l->cs, l->n_rt * l->cs, rt, 0);
}

/* Switch the header to the new refcount table. */
static int write_header(BdNode *file, const Layout *l)
{
    uint8_t f[12];

    put_be64(f, l->rt_first * l->cs);
    f[8] = (uint8_t)(l->n_rt >> 24);
    f[9] = (uint8_t)(l->n_rt >> 16);
    f[10] = (uint8_t)(l->n_rt >> 8);
    f[11] = (uint8_t)l->n_rt;
    return bd_node_pwrite(file, 48, sizeof(f), f, 0);
}

/* falloc: allocate the data area; full: write its zeroes. */
static int allocate_data(BdNode *file, const Layout *l, Qcow2Prealloc mode,
                         uint8_t *buf)
{
    uint64_t off = l->data_first * l->cs;
    uint64_t end = off + l->n_data * l->cs;

    if (mode == QCOW2_PREALLOC_FALLOC) {
        return l->n_data ? bd_node_pwrite_zeroes(file, off, end - off, 0) : 0;
    }
    memset(buf, 0, l->cs);
    for (; off < end; off += l->cs) {
        int ret = bd_node_pwrite(file, off, l->cs, buf, 0);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

gboolean bd_qcow2_preallocate(BdNode *file, uint64_t size,
                              Qcow2Prealloc mode, GError **errp)
{
    Layout l;
    int ret;

    if (!plan(file, size, &l, errp)) {
        return FALSE;
    }
    g_autofree uint8_t *buf = g_malloc(l.cs);
    ret = bd_node_truncate(file, l.total * l.cs);
    if (ret < 0) {
        FAIL("Could not resize image: %s", g_strerror(-ret));
    }
    ret = write_l2_tables(file, &l, buf);
    if (ret == 0) {
        ret = write_l1(file, &l);
    }
    if (ret == 0) {
        ret = write_refcounts(file, &l, buf);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret == 0) {
        ret = write_header(file, &l);
    }
    if (ret == 0 && mode != QCOW2_PREALLOC_METADATA) {
        ret = allocate_data(file, &l, mode, buf);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not preallocate metadata: %s", g_strerror(-ret));
    }
    return TRUE;
}
