/* SPDX-License-Identifier: MIT */
/* qcow2 image creation: a fresh, empty image written onto a protocol node.
 *
 * Thread model: runs on one thread (the create job's); the caller owns
 * 'file' exclusively (write permission, no other writer) for the call.
 *
 * Layout, as QEMU's: the header (with extensions and the backing file
 * name) in cluster 0, then the refcount table, the refcount blocks, and
 * the L1 table; every cluster of the image counted once.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "formats/qcow2/qcow2.h"

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* Feature name table entries (type, bit, name), as QEMU writes them. */
static const struct { uint8_t type, bit; const char *name; } features[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

/* The header is written last in whole pages of this size: a page is
 * what one write stores whole even when the writer is killed. */
#define BD_QCOW2_CREATE_PAGE 4096

typedef struct {
    uint32_t cluster_bits, refcount_order;
    uint64_t l1_size;          /* entries */
    uint64_t reftable_clusters, refblocks, l1_clusters;
    uint64_t crypto_clusters;  /* the LUKS header's, after the L1 table */
    uint64_t total;            /* clusters in the image */
} CreateLayout;

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, v >> 16);
    put_be16(p + 2, v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, v);
}

static gboolean check_options(const Qcow2CreateOptions *o, uint32_t cs,
                              uint32_t rbits, int version, GError **errp)
{
    if (cs < 512 || cs > (1u << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
        FAIL("Cluster size must be a power of two between 512 and 2048k");
    }
    if (rbits > 64 || (rbits & (rbits - 1)) || rbits == 0) {
        FAIL("Refcount width must be a power of two and may not exceed "
             "64 bits");
    }
    if (version != 2 && version != 3) {
        FAIL("Invalid compatibility level");
    }
    if (version < 3 && rbits != 16) {
        FAIL("Different refcount widths than 16 bits require "
             "compatibility level 1.1 or above (use version=v3 or "
             "greater)");
    }
    if (version < 3 && o->lazy_refcounts) {
        FAIL("Lazy refcounts only supported with compatibility level 1.1 "
             "and above (use version=v3 or greater)");
    }
    if (o->backing_format && !o->backing_file) {
        FAIL("Backing format cannot be used without backing file");
    }
    if (o->size % 512) {
        FAIL("Image size must be a multiple of 512 bytes");
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        FAIL("Backing file name too long");
    }
    return TRUE;
}

static gboolean plan_layout(const Qcow2CreateOptions *o, uint32_t cs,
                            uint32_t rbits, CreateLayout *l, GError **errp)
{
    uint64_t l2_cover = (uint64_t)cs * (cs / 8);
    uint64_t per_block = (uint64_t)cs * 8 / rbits;
    uint64_t prev = 0;

    l->cluster_bits = g_bit_nth_msf(cs, -1);
    l->refcount_order = g_bit_nth_msf(rbits, -1);
    l->l1_size = (o->size + l2_cover - 1) / l2_cover;
    if (l->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        FAIL("The image size is too large for file format 'qcow2' (try "
             "using a larger cluster size)");
    }
    l->l1_clusters = (l->l1_size * 8 + cs - 1) / cs;
    l->crypto_clusters = (o->crypto_len + cs - 1) / cs;
    l->reftable_clusters = 1;
    l->refblocks = 1;
    /* Metadata counting itself: iterate to the fixpoint. */
    for (;;) {
        l->total = 1 + l->reftable_clusters + l->refblocks + l->l1_clusters +
                   l->crypto_clusters;
        if (l->total == prev) {
            break;
        }
        prev = l->total;
        l->refblocks = (l->total + per_block - 1) / per_block;
        l->reftable_clusters = (l->refblocks * 8 + cs - 1) / cs;
    }
    if (l->reftable_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        FAIL("Refcount table too large");
    }
    return TRUE;
}

/* Header, extensions and backing file name in one cluster. */
static gboolean build_header(const Qcow2CreateOptions *o, int version,
                             const CreateLayout *l, uint8_t *hdr,
                             uint32_t cs, size_t *used, GError **errp)
{
    uint32_t hlen = version >= 3 ? QCOW2_V3_HEADER_SIZE
                                 : QCOW2_V2_HEADER_SIZE;
    size_t p = hlen, blen = o->backing_file ? strlen(o->backing_file) : 0;
    size_t need = hlen + 8 + 8 + (o->crypto_hdr ? 8 + 16 : 0);

    if (o->backing_format) {
        need += 8 + ((strlen(o->backing_format) + 7) & ~(size_t)7);
    }
    if (version >= 3) {
        need += 8 + G_N_ELEMENTS(features) * 48;
    }
    if (need + blen > cs) {
        FAIL("Header extensions and backing file name do not fit in a "
             "cluster");
    }
    put_be32(hdr, QCOW2_MAGIC);
    put_be32(hdr + 4, version);
    put_be32(hdr + 20, l->cluster_bits);
    put_be64(hdr + 24, o->size);
    put_be32(hdr + 32, o->crypto_hdr ? 2 : 0);      /* crypt_method */
    put_be32(hdr + 36, (uint32_t)l->l1_size);
    put_be64(hdr + 40, (1 + l->reftable_clusters + l->refblocks) << l->cluster_bits);
    put_be64(hdr + 48, 1ull << l->cluster_bits);    /* refcount table */
    put_be32(hdr + 56, (uint32_t)l->reftable_clusters);
    if (version >= 3) {
        put_be64(hdr + 80, o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS
                                             : 0);
        put_be32(hdr + 96, l->refcount_order);
        put_be32(hdr + 100, hlen);
    }
    if (o->backing_format) {
        size_t n = strlen(o->backing_format);
        put_be32(hdr + p, QCOW2_EXT_BACKING_FORMAT);
        put_be32(hdr + p + 4, n);
        memcpy(hdr + p + 8, o->backing_format, n);
        p += 8 + ((n + 7) & ~(size_t)7);
    }
    if (o->crypto_hdr) {
        uint64_t off = (1 + l->reftable_clusters + l->refblocks +
                        l->l1_clusters) << l->cluster_bits;

        put_be32(hdr + p, QCOW2_EXT_CRYPTO);
        put_be32(hdr + p + 4, 16);
        put_be64(hdr + p + 8, off);
        put_be64(hdr + p + 16, o->crypto_len);
        p += 8 + 16;
    }
    if (version >= 3) {
        put_be32(hdr + p, QCOW2_EXT_FEATURE_TABLE);
        put_be32(hdr + p + 4, G_N_ELEMENTS(features) * 48);
        p += 8;
        for (gsize i = 0; i < G_N_ELEMENTS(features); i++, p += 48) {
            hdr[p] = features[i].type;
            hdr[p + 1] = features[i].bit;
            strncpy((char *)hdr + p + 2, features[i].name, 46);
        }
    }
    p += 8;                                         /* end of extensions */
    if (o->backing_file) {
        put_be64(hdr + 8, p);
        put_be32(hdr + 16, blen);
        memcpy(hdr + p, o->backing_file, blen);
    }
    *used = p + blen;
    return TRUE;
}

gboolean bd_qcow2_create(BdNode *file, const Qcow2CreateOptions *o,
                         GError **errp)
{
    uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
    uint32_t rbits = o->refcount_bits ? o->refcount_bits : 16;
    int version = o->version ? o->version : 3;
    uint64_t meta_bytes;
    g_autofree uint8_t *meta = NULL;
    CreateLayout l;
    uint64_t rt_off, rb_off, head;
    size_t used;
    int ret;

    if (!check_options(o, cs, rbits, version, errp) ||
        !plan_layout(o, cs, rbits, &l, errp)) {
        return FALSE;
    }
    meta_bytes = l.total * cs;
    meta = g_try_malloc0(meta_bytes);
    if (!meta) {
        FAIL("Could not allocate the image metadata (%" PRIu64 " bytes)",
             meta_bytes);
    }
    if (!build_header(o, version, &l, meta, cs, &used, errp)) {
        return FALSE;
    }
    rt_off = cs;
    rb_off = (1 + l.reftable_clusters) * cs;
    for (uint64_t i = 0; i < l.refblocks; i++) {
        put_be64(meta + rt_off + i * 8, rb_off + i * cs);
    }
    if (o->crypto_hdr) {
        memcpy(meta + (l.total - l.crypto_clusters) * cs, o->crypto_hdr,
               o->crypto_len);
    }
    for (uint64_t c = 0; c < l.total; c++) {
        qcow2_refcount_write(meta + rb_off, c, l.refcount_order, 1);
    }
    /* Shrink to nothing first: no stale data may survive in the file. */
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_truncate(file, meta_bytes);
    }
    if (ret < 0 && ret != -ENOTSUP) {
        FAIL("Could not resize image: %s", g_strerror(-ret));
    }
    /* The header goes last, after the tables it points to are on disk:
     * a kill (the kernel ends a large write short on SIGKILL) or a crash
     * part way leaves a file without the qcow2 magic, never an image whose
     * header names a backing file but whose refcounts are still zero.
     * The header takes less than a page (1023-byte backing name at most),
     * so its write is whole or absent. */
    head = MIN((uint64_t)cs, (used + BD_QCOW2_CREATE_PAGE - 1) /
                             BD_QCOW2_CREATE_PAGE * BD_QCOW2_CREATE_PAGE);
    ret = bd_node_pwrite(file, head, meta_bytes - head, meta + head, 0);
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, head, meta, 0);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write qcow2 header: %s", g_strerror(-ret));
    }
    return TRUE;
}
