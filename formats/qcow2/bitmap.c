/* SPDX-License-Identifier: MIT */
/* qcow2 persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps"):
 * the bitmaps header extension, the bitmap directory and the bitmap
 * tables; loaded into the node's dirty bitmaps on open, stored on close.
 *
 *   header ext (nb_bitmaps, dir size, dir offset) --> bitmap directory
 *     entry: table offset/size, flags (in-use, auto), granularity, name
 *       --> bitmap table: one 64-bit entry per cluster of bitmap data
 *             (0: all zeroes, 1: all ones, else the data cluster offset)
 *
 * As QEMU: while the image is open read-write every stored bitmap has
 * the in-use flag set on disk, so a bitmap found in use on open (the
 * last writer did not close cleanly) is loaded as inconsistent.  The
 * bits are stored on close (QEMU stores on close and inactivation); the
 * clusters of the bitmaps replaced are freed after the new directory and
 * header are on disk.  A sync while open (checkpoints) stores the set of
 * bitmaps without their bits: every entry in use, with an empty table,
 * so that a crash leaves each one there, inconsistent.
 *
 * Thread model: open and close run on the main thread with no I/O in
 * flight on the node; the allocator calls take Qcow2State.lock.  A sync
 * runs on the main thread while guest I/O goes on and holds that lock
 * throughout, as the allocating write path does (then the node's
 * bitmaps_lock, a leaf, to list the bitmaps).
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/bitmap.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "formats/qcow2/qcow2.h"

#define BME_FLAG_IN_USE        (1u << 0)
#define BME_FLAG_AUTO          (1u << 1)
#define BME_FLAG_EXTRA_COMPAT  (1u << 2)
#define BME_RESERVED_FLAGS     (~7u)
#define BME_TYPE_DIRTY         1
#define BME_MIN_GRAN_BITS      9
#define BME_MAX_GRAN_BITS      31
#define BME_MAX_NAME           1023
#define BME_MAX_BITMAPS        65535
#define BME_MAX_DIR_SIZE       (64u * 1024 * 1024)
#define BME_MAX_TABLE_SIZE     0x8000000ull
#define BME_MAX_PHYS_SIZE      0x20000000ull
#define BME_ENTRY_OFFSET_MASK  0x00fffffffffffe00ull
#define BME_ENTRY_RESERVED     0xff000000000001feull
#define BME_ENTRY_ALL_ONES     1ull

typedef struct {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t gran_bits;
    char *name;
} BitmapEntry;

typedef struct Qcow2Bitmaps {
    gboolean loaded;           /* open finished: close may store */
    gboolean mark_in_use;      /* reopened writable: commit_post marks */
    GPtrArray *old;            /* BitmapEntry *: the directory on disk */
} Qcow2Bitmaps;

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static void entry_free(gpointer p)
{
    BitmapEntry *e = p;

    g_free(e->name);
    g_free(e);
}

static uint64_t align8(uint64_t n) { return (n + 7) & ~7ull; }

static void put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put_be32(uint8_t *p, uint32_t v)
{
    put_be16(p, v >> 16);
    put_be16(p + 2, v & 0xffff);
}
static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, v & 0xffffffff);
}
static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)be16(p) << 16 | be16(p + 2);
}
static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* Bytes of bitmap data (one bit per chunk) for this image. */
static uint64_t data_bytes(Qcow2State *s, unsigned gran_bits)
{
    uint64_t chunks = (s->h.size + (1ull << gran_bits) - 1) >> gran_bits;
    return (chunks + 7) / 8;
}

/* --- can_store (block-dirty-bitmap-add persistent=true) --- */

static gboolean qcow2_can_store(BdNode *node, const char *name,
                                uint32_t granularity, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    unsigned bits = (unsigned)g_bit_nth_lsf(granularity, -1);
    uint64_t len = (uint64_t)bd_node_getlength(node);
    g_autoptr(GPtrArray) list = NULL;
    uint64_t nb = 1, dir = align8(24 + strlen(name));

    if (!s || s->h.version < 3) {
        FAIL("Cannot store dirty bitmaps in qcow2 v2 files");
    }
    if (bits > BME_MAX_GRAN_BITS) {
        FAIL("Granularity exceeds maximum (%llu bytes)",
             1ull << BME_MAX_GRAN_BITS);
    }
    if (bits < BME_MIN_GRAN_BITS) {
        FAIL("Granularity is under minimum (%llu bytes)",
             1ull << BME_MIN_GRAN_BITS);
    }
    /* QEMU's len > MAX << bits, without overflowing at 2 GiB chunks. */
    if ((len >> bits) > BME_MAX_PHYS_SIZE ||
        (len >> bits) > BME_MAX_TABLE_SIZE * s->cluster_size) {
        FAIL("Too much space will be occupied by the bitmap. "
             "Use larger granularity");
    }
    if (strlen(name) > BME_MAX_NAME) {
        FAIL("Name length exceeds maximum (%u characters)", BME_MAX_NAME);
    }
    list = bd_dirty_bitmap_list(node);
    for (guint i = 0; i < list->len; i++) {
        BdDirtyBitmap *bm = list->pdata[i];
        if (bd_dirty_bitmap_persistent(bm)) {
            nb++;
            dir += align8(24 + strlen(bd_dirty_bitmap_name(bm)));
        }
    }
    if (nb > BME_MAX_BITMAPS) {
        FAIL("Maximum number of persistent bitmaps is already reached");
    }
    if (dir > BME_MAX_DIR_SIZE) {
        FAIL("Not enough space in the bitmap directory");
    }
    return TRUE;
}

static gboolean qcow2_store_sync(BdNode *node, GError **errp);

static const BdBitmapStoreOps qcow2_store_ops = {
    .can_store = qcow2_can_store,
    .sync = qcow2_store_sync,
};

void qcow2_bitmaps_register(void)
{
    BD_GLOBAL_STATE_CODE();

    extern const BdDriver bd_qcow2_driver;
    bd_dirty_bitmap_register_store(&bd_qcow2_driver, &qcow2_store_ops);
}

/* --- the directory --- */

static gboolean check_entry(Qcow2State *s, const BitmapEntry *e,
                            GError **errp)
{
    uint64_t phys = (uint64_t)e->table_size * s->cluster_size;

    if (e->type != BME_TYPE_DIRTY || e->gran_bits < BME_MIN_GRAN_BITS ||
        e->gran_bits > BME_MAX_GRAN_BITS || (e->flags & BME_RESERVED_FLAGS) ||
        phys > BME_MAX_PHYS_SIZE || e->table_size > BME_MAX_TABLE_SIZE ||
        !e->table_offset || (e->table_offset & (s->cluster_size - 1)) ||
        data_bytes(s, e->gran_bits) > phys) {
        FAIL("Bitmap '%s' doesn't satisfy the constraints", e->name);
    }
    return TRUE;
}

static gboolean parse_directory(Qcow2State *s, const uint8_t *dir,
                                uint64_t size, GPtrArray *out, GError **errp)
{
    uint64_t off = 0;

    while (off < size) {
        BitmapEntry *e;
        uint32_t extra;
        uint16_t name_size;

        if (size - off < 24) {
            FAIL("Bitmap directory is truncated");
        }
        name_size = be16(dir + off + 18);
        extra = be32(dir + off + 20);
        if (name_size == 0 || name_size > BME_MAX_NAME ||
            (uint64_t)24 + extra + name_size > size - off) {
            FAIL("Bitmap directory entry is invalid");
        }
        e = g_new0(BitmapEntry, 1);
        e->table_offset = be64(dir + off);
        e->table_size = be32(dir + off + 8);
        e->flags = be32(dir + off + 12);
        e->type = dir[off + 16];
        e->gran_bits = dir[off + 17];
        e->name = g_strndup((const char *)dir + off + 24 + extra, name_size);
        g_ptr_array_add(out, e);
        if (extra && !(e->flags & BME_FLAG_EXTRA_COMPAT)) {
            FAIL("Bitmap '%s': extra data is not supported", e->name);
        }
        if (!check_entry(s, e, errp)) {
            return FALSE;
        }
        off += align8(24 + (uint64_t)extra + name_size);
    }
    if (out->len != s->h.nb_bitmaps) {
        FAIL("Bitmap directory holds %u bitmaps, the header says %" PRIu32,
             out->len, s->h.nb_bitmaps);
    }
    return TRUE;
}

static uint8_t *build_directory(GPtrArray *entries, uint64_t *size)
{
    uint64_t total = 0, off = 0;
    uint8_t *dir;

    for (guint i = 0; i < entries->len; i++) {
        total += align8(24 + strlen(((BitmapEntry *)entries->pdata[i])->name));
    }
    dir = g_malloc0(MAX(total, 1));
    for (guint i = 0; i < entries->len; i++) {
        BitmapEntry *e = entries->pdata[i];
        size_t n = strlen(e->name);
        put_be64(dir + off, e->table_offset);
        put_be32(dir + off + 8, e->table_size);
        /* Extra data is never written back: drop the compat flag too. */
        put_be32(dir + off + 12, e->flags & ~BME_FLAG_EXTRA_COMPAT);
        dir[off + 16] = e->type;
        dir[off + 17] = e->gran_bits;
        put_be16(dir + off + 18, (uint16_t)n);
        put_be32(dir + off + 20, 0);
        memcpy(dir + off + 24, e->name, n);
        off += align8(24 + n);
    }
    *size = total;
    return dir;
}

/* --- load (open) --- */

static gboolean read_table(Qcow2State *s, const BitmapEntry *e,
                           uint64_t **table, GError **errp)
{
    uint64_t *t = g_new(uint64_t, MAX(e->table_size, 1));
    int ret = bd_child_pread(s->file, e->table_offset,
                             (uint64_t)e->table_size * 8, t, 0);

    if (ret < 0) {
        g_free(t);
        FAIL("Could not read bitmap table of '%s': %s", e->name,
             g_strerror(-ret));
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        t[i] = GUINT64_FROM_BE(t[i]);
    }
    *table = t;
    return TRUE;
}

static gboolean load_data(Qcow2State *s, const BitmapEntry *e,
                          BdDirtyBitmap *bm, GError **errp)
{
    g_autofree uint64_t *table = NULL;
    g_autofree uint8_t *buf = g_malloc(s->cluster_size);
    uint64_t total = bd_dirty_bitmap_serialized_size(bm);

    if (!read_table(s, e, &table, errp)) {
        return FALSE;
    }
    for (uint64_t i = 0; i < e->table_size && i * s->cluster_size < total;
         i++) {
        uint64_t first = i * s->cluster_size;
        uint64_t n = MIN(s->cluster_size, total - first);
        uint64_t off = table[i] & BME_ENTRY_OFFSET_MASK;

        if (table[i] & BME_ENTRY_RESERVED) {
            FAIL("Bitmap '%s': invalid bitmap table entry", e->name);
        }
        if (off) {
            int ret = bd_child_pread(s->file, off, n, buf, 0);
            if (ret < 0) {
                FAIL("Could not read bitmap '%s': %s", e->name,
                     g_strerror(-ret));
            }
        } else if (table[i] & BME_ENTRY_ALL_ONES) {
            memset(buf, 0xff, n);
        } else {
            continue;
        }
        bd_dirty_bitmap_deserialize(bm, first, n, buf);
    }
    return TRUE;
}

static gboolean write_directory_in_place(Qcow2State *s, GError **errp)
{
    uint64_t size;
    g_autofree uint8_t *dir = build_directory(s->bitmaps->old, &size);
    int ret;

    if (size != s->h.bitmap_directory_size) {
        FAIL("Bitmap directory size changed");
    }
    ret = bd_child_pwrite(s->file, s->h.bitmap_directory_offset, size, dir, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        FAIL("Could not update bitmap directory: %s", g_strerror(-ret));
    }
    return TRUE;
}

/* A refcount rebuilt from the active tables alone (lazy refcounts after
 * a crash) misses the bitmap clusters: give each one it references back
 * its reference, as 'qemu-img check -r' counts them. */
static void ref_if_free_locked(Qcow2State *s, uint64_t off, uint64_t bytes)
{
    for (uint64_t c = off; c < off + bytes; c += s->cluster_size) {
        uint64_t rc = 1;
        if (qcow2_refcount_get_locked(s, c >> s->cluster_bits, &rc) == 0 &&
            rc == 0) {
            qcow2_refcount_update_locked(s, c, s->cluster_size, 1,
                                         QCOW2_DISCARD_OTHER);
        }
    }
}

static void fix_refcounts(Qcow2State *s)
{
    GPtrArray *old = s->bitmaps->old;

    g_mutex_lock(&s->lock);
    ref_if_free_locked(s, s->h.bitmap_directory_offset,
                       s->h.bitmap_directory_size);
    for (guint i = 0; i < old->len; i++) {
        BitmapEntry *e = old->pdata[i];
        g_autofree uint64_t *table = NULL;

        ref_if_free_locked(s, e->table_offset, (uint64_t)e->table_size * 8);
        if (!read_table(s, e, &table, NULL)) {
            continue;
        }
        for (uint32_t j = 0; j < e->table_size; j++) {
            if (table[j] & BME_ENTRY_OFFSET_MASK) {
                ref_if_free_locked(s, table[j] & BME_ENTRY_OFFSET_MASK,
                                   s->cluster_size);
            }
        }
    }
    qcow2_metadata_flush_locked(s);
    g_mutex_unlock(&s->lock);
}

static gboolean load_entries(Qcow2State *s, GError **errp)
{
    GPtrArray *old = s->bitmaps->old;
    gboolean mark = FALSE;

    for (guint i = 0; i < old->len; i++) {
        BitmapEntry *e = old->pdata[i];
        BdDirtyBitmap *bm = bd_dirty_bitmap_create(s->node, 1u << e->gran_bits,
                                                   e->name, errp);
        if (!bm) {
            return FALSE;
        }
        bd_dirty_bitmap_set_persistent(bm, TRUE);
        if (e->flags & BME_FLAG_IN_USE) {
            bd_dirty_bitmap_set_inconsistent(bm);
        } else {
            if (!load_data(s, e, bm, errp)) {
                return FALSE;
            }
            bd_dirty_bitmap_set_enabled(bm, !!(e->flags & BME_FLAG_AUTO));
            if (s->writable) {
                e->flags |= BME_FLAG_IN_USE;
                mark = TRUE;
            }
        }
        bd_dirty_bitmap_set_readonly(bm, !s->writable);
    }
    return !mark || write_directory_in_place(s, errp);
}

gboolean qcow2_bitmaps_load(Qcow2State *s, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2Bitmaps *b = g_new0(Qcow2Bitmaps, 1);
    const Qcow2Header *h = &s->h;
    g_autofree uint8_t *dir = NULL;
    int ret;

    qcow2_bitmaps_register();
    b->old = g_ptr_array_new_with_free_func(entry_free);
    s->bitmaps = b;
    if (!h->has_bitmaps_ext) {
        b->loaded = TRUE;
        return TRUE;
    }
    if (h->version < 3 || !(h->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        g_warning("node '%s': qcow2: a program lacking bitmap support "
                  "modified this file, so all bitmaps are now considered "
                  "inconsistent", s->node->node_name);
        /* As QEMU: the extension is dropped and whatever it pointed at
         * is leaked.  Its directory was never checked, so it must not
         * be freed either: a hostile header could name any clusters. */
        s->h.has_bitmaps_ext = FALSE;
        s->h.nb_bitmaps = 0;
        s->h.bitmap_directory_size = 0;
        s->h.bitmap_directory_offset = 0;
        b->loaded = TRUE;
        return TRUE;
    }
    if (h->bitmaps_ext_reserved) {
        FAIL("bitmaps_ext: Reserved field is not zero");
    }
    if (h->nb_bitmaps == 0 || h->nb_bitmaps > BME_MAX_BITMAPS) {
        FAIL("bitmaps_ext: invalid number of bitmaps (%" PRIu32 ")",
             h->nb_bitmaps);
    }
    if (h->bitmap_directory_size > BME_MAX_DIR_SIZE ||
        h->bitmap_directory_size < 24) {
        FAIL("bitmaps_ext: bitmap_directory_size (%" PRIu64 ") exceeds the "
             "maximum supported size (%u)", h->bitmap_directory_size,
             BME_MAX_DIR_SIZE);
    }
    if (!h->bitmap_directory_offset ||
        (h->bitmap_directory_offset & (s->cluster_size - 1))) {
        FAIL("bitmaps_ext: invalid bitmap_directory_offset");
    }
    dir = g_malloc(h->bitmap_directory_size);
    ret = bd_child_pread(s->file, h->bitmap_directory_offset,
                         h->bitmap_directory_size, dir, 0);
    if (ret < 0) {
        FAIL("Could not read bitmap directory: %s", g_strerror(-ret));
    }
    if (!parse_directory(s, dir, h->bitmap_directory_size, b->old, errp)) {
        return FALSE;
    }
    if (s->writable) {
        fix_refcounts(s);
    }
    if (!load_entries(s, errp)) {
        return FALSE;
    }
    b->loaded = TRUE;
    return TRUE;
}

/* --- store (close) --- */

/* Clusters allocated for a store: given back if it fails. */
typedef struct {
    uint64_t offset, bytes;
} StoreAlloc;

static int64_t store_alloc(Qcow2State *s, uint64_t clusters, GArray *allocs)
{
    int64_t off = qcow2_alloc_clusters_locked(s, clusters);

    if (off >= 0) {
        StoreAlloc a = { (uint64_t)off, clusters << s->cluster_bits };
        g_array_append_val(allocs, a);
    }
    return off;
}

/* Write one bitmap's data clusters and table; fills e's table fields.
 * 'in_use': the image stays open (or the bitmap is inconsistent): its
 * bits would be stale at once, so the table stays empty and the entry
 * is marked in use. */
static int store_bitmap(Qcow2State *s, BdDirtyBitmap *bm, BitmapEntry *e,
                        GArray *allocs, gboolean in_use)
{
    uint64_t total = bd_dirty_bitmap_serialized_size(bm);
    uint64_t cs = s->cluster_size;
    uint64_t n = MAX((total + cs - 1) / cs, 1);
    uint64_t tclusters = (n * 8 + cs - 1) / cs;
    g_autofree uint64_t *table = g_new0(uint64_t, tclusters * cs / 8);
    g_autofree uint8_t *buf = g_malloc(cs);
    int64_t toff;
    int ret;

    if (n > BME_MAX_TABLE_SIZE) {
        return -EFBIG;
    }
    for (uint64_t i = 0; i < n && i * cs < total && !in_use; i++) {
        uint64_t len = MIN(cs, total - i * cs);
        int64_t off;

        memset(buf, 0, cs);
        bd_dirty_bitmap_serialize(bm, i * cs, len, buf);
        if (bd_buffer_is_zero(buf, cs)) {
            continue;   /* entry 0: all zeroes */
        }
        off = store_alloc(s, 1, allocs);
        if (off < 0) {
            return (int)off;
        }
        table[i] = GUINT64_TO_BE((uint64_t)off);
        ret = bd_child_pwrite(s->file, (uint64_t)off, cs, buf, 0);
        if (ret < 0) {
            return ret;
        }
    }
    toff = store_alloc(s, tclusters, allocs);
    if (toff < 0) {
        return (int)toff;
    }
    ret = bd_child_pwrite(s->file, (uint64_t)toff, tclusters * cs, table, 0);
    if (ret < 0) {
        return ret;
    }
    e->table_offset = (uint64_t)toff;
    e->table_size = (uint32_t)n;
    e->type = BME_TYPE_DIRTY;
    e->gran_bits = (uint8_t)g_bit_nth_lsf(bd_dirty_bitmap_granularity(bm),
                                          -1);
    e->flags = (bd_dirty_bitmap_enabled(bm) ? BME_FLAG_AUTO : 0) |
               (in_use ? BME_FLAG_IN_USE : 0);
    e->name = g_strdup(bd_dirty_bitmap_name(bm));
    return 0;
}

/* Rewrite the extension area of the header cluster with the bitmaps
 * extension replaced (or dropped when nb == 0) and the autoclear bit to
 * match; other extensions and the backing file name are kept. */
static int update_header(Qcow2State *s, uint32_t nb, uint64_t dir_size,
                         uint64_t dir_off)
{
    uint64_t cs = s->cluster_size;
    g_autofree uint8_t *old = g_malloc0(cs), *buf = g_malloc0(cs);
    uint64_t end = s->h.backing_file_offset && s->h.backing_file_offset < cs
                   ? s->h.backing_file_offset : cs;
    uint64_t in = s->h.header_length, out = s->h.header_length;
    uint64_t autoclear = s->h.autoclear;
    int ret = bd_child_pread(s->file, 0, cs, old, 0);

    if (ret < 0) {
        return ret;
    }
    memcpy(buf, old, s->h.header_length);
    while (in + 8 <= end) {
        uint32_t type = be32(old + in), len = be32(old + in + 4);
        uint64_t step = 8 + align8(len);
        if (type == QCOW2_EXT_END || len > end - in - 8) {
            break;
        }
        if (type != QCOW2_EXT_BITMAPS) {
            if (out + step > cs) {
                return -ENOSPC;
            }
            memcpy(buf + out, old + in, 8 + len);
            out += step;
        }
        in += step;
    }
    if (nb) {
        if (out + 8 + 24 > cs) {
            return -ENOSPC;
        }
        put_be32(buf + out, QCOW2_EXT_BITMAPS);
        put_be32(buf + out + 4, 24);
        put_be32(buf + out + 8, nb);
        put_be64(buf + out + 16, dir_size);
        put_be64(buf + out + 24, dir_off);
        out += 32;
        autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
    out += 8;   /* end of extensions: zeroes */
    if (s->h.backing_file_offset) {
        if (out + s->h.backing_file_size > cs) {
            return -ENOSPC;
        }
        memcpy(buf + out, old + s->h.backing_file_offset,
               s->h.backing_file_size);
        put_be64(buf + 8, out);
    }
    put_be64(buf + 88, autoclear);
    ret = bd_child_pwrite(s->file, 0, cs, buf, 0);
    if (ret < 0) {
        return ret;
    }
    if (s->h.backing_file_offset) {
        s->h.backing_file_offset = out;
    }
    s->h.autoclear = autoclear;
    s->h.has_bitmaps_ext = nb != 0;
    s->h.nb_bitmaps = nb;
    s->h.bitmap_directory_size = dir_size;
    s->h.bitmap_directory_offset = dir_off;
    return 0;
}

/* Release host [off, off+bytes) once the header that no longer points
 * to it is on disk (with the L2 entries released later, cluster.c). */
static void free_later(Qcow2State *s, uint64_t off, uint64_t bytes)
{
    for (uint64_t c = off; c < off + bytes; c += s->cluster_size) {
        qcow2_free_entry_later_locked(s, c | QCOW2_OFLAG_COPIED,
                                      QCOW2_DISCARD_OTHER);
    }
}

/* Release the clusters of an old entry's table and data; a table that
 * cannot be read leaks its data clusters (harmless). */
static void free_entry_clusters(Qcow2State *s, const BitmapEntry *e)
{
    g_autofree uint64_t *table = NULL;
    uint64_t cs = s->cluster_size;

    if (read_table(s, e, &table, NULL)) {
        for (uint32_t i = 0; i < e->table_size; i++) {
            uint64_t off = table[i] & BME_ENTRY_OFFSET_MASK;
            if (off) {
                free_later(s, off, cs);
            }
        }
    }
    free_later(s, e->table_offset,
               ((uint64_t)e->table_size * 8 + cs - 1) / cs * cs);
}

static BitmapEntry *find_old(Qcow2Bitmaps *b, const char *name)
{
    for (guint i = 0; i < b->old->len; i++) {
        BitmapEntry *e = b->old->pdata[i];
        if (strcmp(e->name, name) == 0) {
            return e;
        }
    }
    return NULL;
}

/* The new directory: fresh entries for consistent bitmaps, the old
 * entry (still in use) for inconsistent ones, and a fresh in-use entry
 * for an inconsistent one the image does not hold yet (a checkpoint
 * marked so this session).  'kept' collects the old entries whose
 * clusters stay referenced. */
static int store_all_locked(Qcow2State *s, GPtrArray *entries,
                            GHashTable *kept, GArray *allocs,
                            gboolean in_use)
{
    g_autoptr(GPtrArray) list = bd_dirty_bitmap_list(s->node);

    for (guint i = list->len; i-- > 0;) {   /* oldest first */
        BdDirtyBitmap *bm = list->pdata[i];
        BitmapEntry *e, *old;
        int ret;

        if (!bd_dirty_bitmap_persistent(bm) || bd_dirty_bitmap_skip_store(bm) ||
            !bd_dirty_bitmap_name(bm)) {
            continue;
        }
        old = bd_dirty_bitmap_inconsistent(bm)
              ? find_old(s->bitmaps, bd_dirty_bitmap_name(bm)) : NULL;
        if (old) {
            e = g_memdup2(old, sizeof(*old));
            e->name = g_strdup(old->name);
            g_ptr_array_add(entries, e);
            g_hash_table_add(kept, old);
            continue;
        }
        e = g_new0(BitmapEntry, 1);
        g_ptr_array_add(entries, e);
        ret = store_bitmap(s, bm, e, allocs,
                           in_use || bd_dirty_bitmap_inconsistent(bm));
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Store every persistent bitmap into new clusters, then switch the
 * header to the new directory.  Until the switch nothing references the
 * new clusters: on failure they are given back (as QEMU's
 * qcow2_store_persistent_dirty_bitmaps) and the image keeps its old
 * bitmaps.  After it, the old ones are released once the new header is
 * on disk; a failure there is left to the next flush (close flushes
 * again), the store itself is done.  'in_use': a sync while the image
 * stays open (store_bitmap). */
static int store_locked(Qcow2State *s, gboolean in_use)
{
    Qcow2Bitmaps *b = s->bitmaps;
    g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func(entry_free);
    g_autoptr(GHashTable) kept = g_hash_table_new(NULL, NULL);
    g_autoptr(GArray) allocs = g_array_new(FALSE, FALSE, sizeof(StoreAlloc));
    g_autofree uint8_t *dir = NULL;
    uint64_t dir_size = 0, old_dir_off = s->h.bitmap_directory_offset;
    uint64_t old_dir_size = s->h.bitmap_directory_size;
    gboolean had_ext = s->h.has_bitmaps_ext;
    int64_t dir_off = 0;
    int ret = store_all_locked(s, entries, kept, allocs, in_use);

    if (ret < 0) {
        goto fail;
    }
    if (!entries->len && !had_ext) {
        return 0;
    }
    if (entries->len) {
        dir = build_directory(entries, &dir_size);
        dir_off = store_alloc(s, qcow2_size_to_clusters(s, dir_size), allocs);
        if (dir_off < 0) {
            ret = (int)dir_off;
            goto fail;
        }
        ret = bd_child_pwrite(s->file, (uint64_t)dir_off, dir_size, dir, 0);
        if (ret < 0) {
            goto fail;
        }
    }
    /* New data, tables and refcounts reach the disk before the header
     * points at them. */
    ret = qcow2_metadata_flush_locked(s);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        ret = update_header(s, entries->len, dir_size, (uint64_t)dir_off);
    }
    if (ret < 0) {
        goto fail;
    }
    /* Only now the old directory and replaced bitmaps are garbage. */
    if (had_ext && old_dir_off) {
        free_later(s, old_dir_off, (old_dir_size + s->cluster_size - 1) &
                                       ~(uint64_t)(s->cluster_size - 1));
        for (guint i = 0; i < b->old->len; i++) {
            if (!g_hash_table_contains(kept, b->old->pdata[i])) {
                free_entry_clusters(s, b->old->pdata[i]);
            }
        }
    }
    /* The new directory is what the disk holds now. */
    g_ptr_array_unref(b->old);
    b->old = g_ptr_array_ref(entries);
    if (bd_child_flush(s->file) == 0) {
        qcow2_metadata_flush_locked(s);     /* releases the old ones */
    }
    return 0;

fail:
    for (guint i = 0; i < allocs->len; i++) {
        StoreAlloc *a = &g_array_index(allocs, StoreAlloc, i);
        qcow2_free_clusters_locked(s, a->offset, a->bytes,
                                   QCOW2_DISCARD_OTHER);
    }
    return ret;
}

void qcow2_bitmaps_close(Qcow2State *s)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2Bitmaps *b = s->bitmaps;

    if (!b) {
        return;
    }
    if (b->loaded && s->writable && !s->corrupt && s->h.version >= 3) {
        int ret;

        g_mutex_lock(&s->lock);
        ret = store_locked(s, FALSE);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            g_warning("node '%s': qcow2: could not store dirty bitmaps: %s",
                      s->node->node_name, g_strerror(-ret));
        }
    }
    g_ptr_array_unref(b->old);
    g_free(b);
    s->bitmaps = NULL;
}

/* --- sync while open (checkpoints) --- */

/* Guest writes go on meanwhile: the store allocates and writes under
 * the metadata lock as they do, and no bits are read (in-use entries). */
static gboolean qcow2_store_sync(BdNode *node, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s = node->opaque;
    int ret;

    if (!s || !s->bitmaps || !s->bitmaps->loaded || !s->writable) {
        FAIL("Cannot store dirty bitmaps: the image is not open read-write");
    }
    if (s->corrupt) {
        FAIL("Cannot store dirty bitmaps: the image is corrupt");
    }
    if (s->h.version < 3) {
        FAIL("Cannot store dirty bitmaps in qcow2 v2 files");
    }
    g_mutex_lock(&s->lock);
    ret = store_locked(s, TRUE);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        FAIL("Could not store dirty bitmaps: %s", g_strerror(-ret));
    }
    return TRUE;
}

/* --- reopen --- */

gboolean qcow2_bitmaps_reopen_prepare(Qcow2State *s, gboolean writable,
                                      GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2Bitmaps *b = s->bitmaps;
    int ret;

    /* Going read-only: store now, as on close (QEMU does the same). */
    if (!b || !b->loaded || writable || !s->writable || s->corrupt ||
        s->h.version < 3) {
        return TRUE;
    }
    g_mutex_lock(&s->lock);
    ret = store_locked(s, FALSE);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        FAIL("Could not store dirty bitmaps: %s", g_strerror(-ret));
    }
    return TRUE;
}

void qcow2_bitmaps_reopen_commit(Qcow2State *s, gboolean was_writable)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2Bitmaps *b = s->bitmaps;
    g_autoptr(GPtrArray) list = NULL;

    if (!b || !b->loaded) {
        return;
    }
    list = bd_dirty_bitmap_list(s->node);
    for (guint i = 0; i < list->len; i++) {
        if (bd_dirty_bitmap_persistent(list->pdata[i])) {
            bd_dirty_bitmap_set_readonly(list->pdata[i], !s->writable);
        }
    }
    /* Now writable: the stored bitmaps are in use again.  Marked in
     * commit_post: the file child takes its writable descriptor in its
     * own commit, after this one. */
    b->mark_in_use = !was_writable && s->writable && s->h.has_bitmaps_ext;
}

/* Before the node's first write after a reopen to read-write, the image
 * flags its bitmaps in use: killed after that write, they come back
 * inconsistent, never consistent and stale. */
void qcow2_bitmaps_reopen_commit_post(Qcow2State *s)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2Bitmaps *b = s->bitmaps;
    gboolean mark = FALSE;

    if (!b || !b->mark_in_use) {
        return;
    }
    b->mark_in_use = FALSE;
    if (!s->writable || !s->h.has_bitmaps_ext) {
        return;
    }
    for (guint i = 0; i < b->old->len; i++) {
        BitmapEntry *e = b->old->pdata[i];
        if (!(e->flags & BME_FLAG_IN_USE)) {
            e->flags |= BME_FLAG_IN_USE;
            mark = TRUE;
        }
    }
    if (mark) {
        g_autoptr(GError) err = NULL;
        if (!write_directory_in_place(s, &err)) {
            g_warning("node '%s': qcow2: %s", s->node->node_name,
                      err->message);
        }
    }
}
