/* SPDX-License-Identifier: MIT */
/* Dirty bitmaps: the per-node bitmap lists, the bit operations, merge,
 * QEMU's sha256 and the recording hook of the write path.
 *
 * Thread model: see graph/bitmap.h.  Each node's bitmaps_lock (a
 * BdRWLock, leaf: nothing is called with it held but the bit helpers)
 * protects the node's list and its bitmaps' word arrays and sizes.  The
 * write path and the data functions take it for reading and change
 * words with atomic operations; create/release/truncate take it for
 * writing (main thread).  A merge of bitmaps of two nodes takes both
 * locks for reading, in address order.  Flags are atomic ints so any
 * thread may read them.  There is no process-wide state: a write to a
 * node without bitmaps costs one atomic load.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <errno.h>
#include <string.h>
#include "graph/bitmap.h"
#include "graph/io.h"
#include "graph/main-thread.h"

struct BdDirtyBitmap {
    BdNode *node;              /* owner (not a reference) */
    char *name;                /* NULL: anonymous */
    uint32_t granularity;
    unsigned gran_bits;
    /* The geometry changes with the node's size (writers of the lock);
     * the words are changed with atomics under the read lock. */
    uint64_t size BD_GUARDED_BY(node->bitmaps_lock);   /* bytes covered */
    uint64_t nbits BD_GUARDED_BY(node->bitmaps_lock);
    uint64_t nwords BD_GUARDED_BY(node->bitmaps_lock);
    /* bits beyond nbits stay 0 */
    uint64_t *words BD_GUARDED_BY(node->bitmaps_lock)
                    BD_PT_GUARDED_BY(node->bitmaps_lock);
    gint64 count;              /* set bits (atomic) */
    int enabled, busy, persistent, inconsistent, readonly, skip_store;
    BdDirtyBitmap *successor;  /* main thread */
};

struct BdDirtyBitmapBackup {
    uint64_t nwords;
    gint64 count;
    uint64_t *words;
};

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

/* The lock guarding a bitmap's words: its node's. */
static inline void bm_read_lock(const BdDirtyBitmap *bm)
    BD_ACQUIRE_SHARED(bm->node->bitmaps_lock)
{
    bd_rwlock_rdlock(&bm->node->bitmaps_lock);
}

static inline void bm_read_unlock(const BdDirtyBitmap *bm)
    BD_RELEASE_SHARED(bm->node->bitmaps_lock)
{
    bd_rwlock_rdunlock(&bm->node->bitmaps_lock);
}

/* Both bitmaps' locks for reading, one lock when they share a node
 * (which the analysis cannot follow). */
static void pair_read_lock(BdDirtyBitmap *a, BdDirtyBitmap *b)
    BD_ACQUIRE_SHARED(a->node->bitmaps_lock, b->node->bitmaps_lock)
    BD_NO_THREAD_SAFETY
{
    BdRWLock *la = &a->node->bitmaps_lock, *lb = &b->node->bitmaps_lock;

    if (la == lb) {
        bd_rwlock_rdlock(la);
        return;
    }
    bd_rwlock_rdlock(la < lb ? la : lb);
    bd_rwlock_rdlock(la < lb ? lb : la);
}

static void pair_read_unlock(BdDirtyBitmap *a, BdDirtyBitmap *b)
    BD_RELEASE_SHARED(a->node->bitmaps_lock, b->node->bitmaps_lock)
    BD_NO_THREAD_SAFETY
{
    bd_rwlock_rdunlock(&a->node->bitmaps_lock);
    if (a->node != b->node) {
        bd_rwlock_rdunlock(&b->node->bitmaps_lock);
    }
}

/* --- lists --- */

static void release_locked(BdNode *node, BdDirtyBitmap *bm)
    BD_REQUIRES(node->bitmaps_lock);

/* Not (or no longer) listed: nobody else can reach it. */
static void bitmap_free(BdDirtyBitmap *bm) BD_NO_THREAD_SAFETY
{
    g_free(bm->words);
    g_free(bm->name);
    g_free(bm);
}

/* The lock is passed as its node's: the analysis cannot see that
 * bm->node is 'node'. */
static void bitmap_set_geometry(BdNode *node, BdDirtyBitmap *bm,
                                uint64_t size) BD_REQUIRES(node->bitmaps_lock)
{
    g_assert(bm->node == node);
    bd_rwlock_assert_wrheld(&node->bitmaps_lock);
    bm->size = size;
    bm->nbits = (size + bm->granularity - 1) >> bm->gran_bits;
    bm->nwords = (bm->nbits + 63) / 64;
}

BdDirtyBitmap *bd_dirty_bitmap_find(BdNode *node, const char *name)
{
    BD_GLOBAL_STATE_CODE();

    BdDirtyBitmap *found = NULL;
    GPtrArray *list;

    if (!name) {
        return NULL;
    }
    bd_rwlock_rdlock(&node->bitmaps_lock);
    list = node->bitmaps;
    for (guint i = 0; i < list->len && !found; i++) {
        BdDirtyBitmap *bm = list->pdata[i];
        if (bm->name && strcmp(bm->name, name) == 0) {
            found = bm;
        }
    }
    bd_rwlock_rdunlock(&node->bitmaps_lock);
    return found;
}

BdDirtyBitmap *bd_dirty_bitmap_create(BdNode *node, uint32_t granularity,
                                      const char *name, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdDirtyBitmap *bm;

    g_return_val_if_fail(granularity >= 512 &&
                         !(granularity & (granularity - 1)), NULL);
    if (name && bd_dirty_bitmap_find(node, name)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap already exists: %s", name);
        return NULL;
    }
    if (name && strlen(name) > BD_BITMAP_MAX_NAME) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap name too long: %s", name);
        return NULL;
    }
    bm = g_new0(BdDirtyBitmap, 1);
    bm->node = node;
    bm->name = g_strdup(name);
    bm->granularity = granularity;
    bm->gran_bits = (unsigned)g_bit_nth_lsf(granularity, -1);
    bm->enabled = 1;

    /* The size read and the bitmap listed under the lock, so that no
     * resize falls in between. */
    bd_rwlock_wrlock(&node->bitmaps_lock);
    bitmap_set_geometry(node, bm, (uint64_t)bd_node_getlength(node));
    bm->words = g_try_new0(uint64_t, MAX(bm->nwords, 1));
    if (!bm->words) {
        bd_rwlock_wrunlock(&node->bitmaps_lock);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not allocate dirty bitmap");
        bitmap_free(bm);
        return NULL;
    }
    g_ptr_array_insert(node->bitmaps, 0, bm);
    __atomic_add_fetch(&node->nr_bitmaps, 1, __ATOMIC_RELEASE);
    bd_rwlock_wrunlock(&node->bitmaps_lock);
    return bm;
}

/* A successor lives on its parent's node: one lock covers both. */
static void release_locked(BdNode *node, BdDirtyBitmap *bm)
{
    g_assert(bm->node == node);
    bd_rwlock_assert_wrheld(&node->bitmaps_lock);
    if (bm->successor) {
        release_locked(node, bm->successor);
        bm->successor = NULL;
    }
    if (g_ptr_array_remove(node->bitmaps, bm)) {
        __atomic_sub_fetch(&node->nr_bitmaps, 1, __ATOMIC_RELEASE);
    }
    bitmap_free(bm);
}

void bd_dirty_bitmap_release(BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *node;

    if (!bm) {
        return;
    }
    node = bm->node;
    bd_rwlock_wrlock(&node->bitmaps_lock);
    release_locked(node, bm);
    bd_rwlock_wrunlock(&node->bitmaps_lock);
}

void bd_dirty_bitmaps_node_closing(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *list = node->bitmaps;

    bd_rwlock_wrlock(&node->bitmaps_lock);
    /* Successors go with their parents: release parents first. */
    while (list->len) {
        BdDirtyBitmap *victim = list->pdata[0];
        for (guint i = 0; i < list->len; i++) {
            if (((BdDirtyBitmap *)list->pdata[i])->successor) {
                victim = list->pdata[i];
                break;
            }
        }
        release_locked(node, victim);
    }
    bd_rwlock_wrunlock(&node->bitmaps_lock);
}

GPtrArray *bd_dirty_bitmap_list(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *out = g_ptr_array_new();

    bd_rwlock_rdlock(&node->bitmaps_lock);
    for (guint i = 0; i < node->bitmaps->len; i++) {
        g_ptr_array_add(out, node->bitmaps->pdata[i]);
    }
    bd_rwlock_rdunlock(&node->bitmaps_lock);
    return out;
}

gboolean bd_dirty_bitmap_node_has_any(BdNode *node)
{
    return LOAD(node->nr_bitmaps) > 0;
}

/* --- default granularity --- */

static int64_t node_cluster_size(BdNode *node, int depth)
{
    GVariantDict dict;
    gint64 cs = 0;

    if (!node || depth > 16) {
        return 0;
    }
    if (node->drv->query_image_info) {
        g_variant_dict_init(&dict, NULL);
        node->drv->query_image_info(node, &dict);
        if (!g_variant_dict_lookup(&dict, "cluster-size", "x", &cs)) {
            cs = 0;
        }
        g_variant_dict_clear(&dict);
        if (cs > 0) {
            return cs;
        }
    }
    /* QEMU's raw and filter drivers answer with their file child's. */
    if (strcmp(node->drv->name, "raw") == 0 && node->file) {
        return node_cluster_size(node->file->node, depth + 1);
    }
    if (node->drv->is_filter && bd_node_filtered_child(node)) {
        return node_cluster_size(bd_node_filtered_child(node)->node,
                                 depth + 1);
    }
    return 0;
}

uint32_t bd_dirty_bitmap_default_granularity(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    int64_t cs = node_cluster_size(node, 0);

    if (cs <= 0) {
        return 65536;
    }
    return (uint32_t)CLAMP(cs, 4096, 65536);
}

/* --- properties --- */

const char *bd_dirty_bitmap_name(const BdDirtyBitmap *bm) { return bm->name; }
BdNode *bd_dirty_bitmap_node(const BdDirtyBitmap *bm) { return bm->node; }
uint32_t bd_dirty_bitmap_granularity(const BdDirtyBitmap *bm)
{ return bm->granularity; }
uint64_t bd_dirty_bitmap_size(const BdDirtyBitmap *bm)
{
    uint64_t size;

    bm_read_lock(bm);
    size = bm->size;
    bm_read_unlock(bm);
    return size;
}

uint64_t bd_dirty_bitmap_count(const BdDirtyBitmap *bm)
{
    return (uint64_t)LOAD(bm->count) << bm->gran_bits;
}

gboolean bd_dirty_bitmap_enabled(const BdDirtyBitmap *bm)
{ return LOAD(bm->enabled); }
void bd_dirty_bitmap_set_enabled(BdDirtyBitmap *bm, gboolean enabled)
{
    BD_GLOBAL_STATE_CODE();
    STORE(bm->enabled, !!enabled);
}
gboolean bd_dirty_bitmap_busy(const BdDirtyBitmap *bm)
{ return LOAD(bm->busy); }
void bd_dirty_bitmap_set_busy(BdDirtyBitmap *bm, gboolean busy)
{
    BD_GLOBAL_STATE_CODE();
    STORE(bm->busy, !!busy);
}
gboolean bd_dirty_bitmap_persistent(const BdDirtyBitmap *bm)
{ return LOAD(bm->persistent); }
void bd_dirty_bitmap_set_persistent(BdDirtyBitmap *bm, gboolean persistent)
{
    BD_GLOBAL_STATE_CODE();
    STORE(bm->persistent, !!persistent);
}
gboolean bd_dirty_bitmap_inconsistent(const BdDirtyBitmap *bm)
{ return LOAD(bm->inconsistent); }
gboolean bd_dirty_bitmap_readonly(const BdDirtyBitmap *bm)
{ return LOAD(bm->readonly); }
void bd_dirty_bitmap_set_readonly(BdDirtyBitmap *bm, gboolean readonly)
{
    BD_GLOBAL_STATE_CODE();
    STORE(bm->readonly, !!readonly);
}
gboolean bd_dirty_bitmap_skip_store(const BdDirtyBitmap *bm)
{ return LOAD(bm->skip_store); }
void bd_dirty_bitmap_set_skip_store(BdDirtyBitmap *bm, gboolean skip)
{
    BD_GLOBAL_STATE_CODE();
    STORE(bm->skip_store, !!skip);
}

void bd_dirty_bitmap_set_inconsistent(BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    STORE(bm->inconsistent, 1);
    STORE(bm->enabled, 0);
}

void bd_dirty_bitmap_clear_inconsistent(BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    STORE(bm->inconsistent, 0);
}

gboolean bd_dirty_bitmap_check(const BdDirtyBitmap *bm, int flags,
                               GError **errp)
{
    const char *name = bm->name ? bm->name : "";

    if ((flags & BD_BITMAP_BUSY) && bd_dirty_bitmap_busy(bm)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap '%s' is currently in use by another operation "
                    "and cannot be used", name);
        return FALSE;
    }
    if ((flags & BD_BITMAP_RO) && bd_dirty_bitmap_readonly(bm)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap '%s' is readonly and cannot be modified", name);
        return FALSE;
    }
    if ((flags & BD_BITMAP_INCONSISTENT) && bd_dirty_bitmap_inconsistent(bm)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap '%s' is inconsistent and cannot be used", name);
        return FALSE;
    }
    return TRUE;
}

/* --- bits (callers hold the node's lock for reading at least) --- */

static inline uint64_t range_mask(uint64_t w, uint64_t first, uint64_t last)
{
    uint64_t mask = ~0ull;

    if (w == first / 64) {
        mask &= ~0ull << (first % 64);
    }
    if (w == last / 64) {
        mask &= ~0ull >> (63 - last % 64);
    }
    return mask;
}

/* Set (or clear) bits [first, last]. */
static void bits_update_locked(BdNode *node, BdDirtyBitmap *bm,
                               uint64_t first, uint64_t last, gboolean set)
    BD_REQUIRES_SHARED(node->bitmaps_lock)
{
    gint64 delta = 0;

    g_assert(bm->node == node);
    bd_rwlock_assert_held(&node->bitmaps_lock);
    for (uint64_t w = first / 64; w <= last / 64; w++) {
        uint64_t mask = range_mask(w, first, last);
        uint64_t old = __atomic_load_n(&bm->words[w], __ATOMIC_RELAXED);
        if (set) {
            /* Already dirty words are only read: no cache-line bounce. */
            if ((old & mask) == mask) {
                continue;
            }
            old = __atomic_fetch_or(&bm->words[w], mask, __ATOMIC_RELAXED);
            delta += __builtin_popcountll(mask & ~old);
        } else {
            if (!(old & mask)) {
                continue;
            }
            old = __atomic_fetch_and(&bm->words[w], ~mask, __ATOMIC_RELAXED);
            delta -= __builtin_popcountll(mask & old);
        }
    }
    if (delta) {
        __atomic_add_fetch(&bm->count, delta, __ATOMIC_RELEASE);
    }
}

/* Bits covering bytes [offset, offset+bytes), clipped; FALSE if none. */
static gboolean byte_range_bits(BdDirtyBitmap *bm, uint64_t offset,
                                uint64_t bytes, uint64_t *first,
                                uint64_t *last)
{
    uint64_t end;

    if (bytes == 0 || offset >= bm->size) {
        return FALSE;
    }
    end = bytes > bm->size - offset ? bm->size : offset + bytes;
    *first = offset >> bm->gran_bits;
    *last = (end - 1) >> bm->gran_bits;
    return TRUE;
}

static void range_update(BdDirtyBitmap *bm, uint64_t offset, uint64_t bytes,
                         gboolean set)
{
    uint64_t first, last;

    bm_read_lock(bm);
    if (byte_range_bits(bm, offset, bytes, &first, &last)) {
        bits_update_locked(bm->node, bm, first, last, set);
    }
    bm_read_unlock(bm);
}

void bd_dirty_bitmap_set(BdDirtyBitmap *bm, uint64_t offset, uint64_t bytes)
{
    range_update(bm, offset, bytes, TRUE);
}

void bd_dirty_bitmap_reset(BdDirtyBitmap *bm, uint64_t offset,
                           uint64_t bytes)
{
    range_update(bm, offset, bytes, FALSE);
}

void bd_dirty_bitmap_clear(BdDirtyBitmap *bm)
{
    range_update(bm, 0, UINT64_MAX, FALSE);
}

gboolean bd_dirty_bitmap_get(BdDirtyBitmap *bm, uint64_t offset)
{
    gboolean dirty = FALSE;

    bm_read_lock(bm);
    if (offset < bm->size) {
        uint64_t bit = offset >> bm->gran_bits;
        dirty = (LOAD(bm->words[bit / 64]) >> (bit % 64)) & 1;
    }
    bm_read_unlock(bm);
    return dirty;
}

/* First bit in [first, limit) equal to 'want', or limit. */
static uint64_t find_bit_locked(BdDirtyBitmap *bm, uint64_t first,
                                uint64_t limit, gboolean want)
    BD_REQUIRES_SHARED(bm->node->bitmaps_lock)
{
    bd_rwlock_assert_held(&bm->node->bitmaps_lock);
    for (uint64_t w = first / 64; w * 64 < limit; w++) {
        uint64_t v = LOAD(bm->words[w]);
        if (!want) {
            v = ~v;
        }
        if (w == first / 64) {
            v &= ~0ull << (first % 64);
        }
        if (v) {
            uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(v);
            return MIN(bit, limit);
        }
    }
    return limit;
}

static int64_t next_bit(BdDirtyBitmap *bm, uint64_t offset, uint64_t end,
                        gboolean want)
{
    int64_t ret = -1;

    bm_read_lock(bm);
    end = MIN(end, bm->size);
    if (offset < end) {
        uint64_t first = offset >> bm->gran_bits;
        uint64_t limit = ((end - 1) >> bm->gran_bits) + 1;
        uint64_t bit = find_bit_locked(bm, first, limit, want);
        if (bit < limit) {
            ret = (int64_t)MAX(offset, bit << bm->gran_bits);
        }
    }
    bm_read_unlock(bm);
    return ret;
}

int64_t bd_dirty_bitmap_next_dirty(BdDirtyBitmap *bm, uint64_t offset,
                                   uint64_t end)
{
    return next_bit(bm, offset, end, TRUE);
}

int64_t bd_dirty_bitmap_next_zero(BdDirtyBitmap *bm, uint64_t offset,
                                  uint64_t end)
{
    return next_bit(bm, offset, end, FALSE);
}

gboolean bd_dirty_bitmap_next_dirty_area(BdDirtyBitmap *bm, uint64_t offset,
                                         uint64_t end, uint64_t max_bytes,
                                         uint64_t *start, uint64_t *len)
{
    int64_t s, z;

    end = MIN(end, bd_dirty_bitmap_size(bm));
    s = bd_dirty_bitmap_next_dirty(bm, offset, end);
    if (s < 0) {
        return FALSE;
    }
    z = bd_dirty_bitmap_next_zero(bm, (uint64_t)s, end);
    *start = (uint64_t)s;
    *len = (z < 0 ? end : (uint64_t)z) - (uint64_t)s;
    if (max_bytes && *len > max_bytes) {
        *len = max_bytes;
    }
    return TRUE;
}

/* --- backup, merge --- */

BdDirtyBitmapBackup *bd_dirty_bitmap_backup(BdDirtyBitmap *bm)
{
    BdDirtyBitmapBackup *b = g_new0(BdDirtyBitmapBackup, 1);

    bm_read_lock(bm);
    b->nwords = bm->nwords;
    b->words = g_new(uint64_t, MAX(bm->nwords, 1));
    for (uint64_t w = 0; w < bm->nwords; w++) {
        b->words[w] = LOAD(bm->words[w]);
    }
    b->count = LOAD(bm->count);
    bm_read_unlock(bm);
    return b;
}

void bd_dirty_bitmap_restore(BdDirtyBitmap *bm, BdDirtyBitmapBackup *b)
{
    bm_read_lock(bm);
    if (b->nwords == bm->nwords) {
        gint64 count = 0;
        for (uint64_t w = 0; w < bm->nwords; w++) {
            STORE(bm->words[w], b->words[w]);
            count += __builtin_popcountll(b->words[w]);
        }
        STORE(bm->count, count);
    }
    bm_read_unlock(bm);
}

void bd_dirty_bitmap_backup_free(BdDirtyBitmapBackup *b)
{
    if (b) {
        g_free(b->words);
        g_free(b);
    }
}

static void merge_locked(BdDirtyBitmap *dst, BdDirtyBitmap *src)
    BD_REQUIRES_SHARED(dst->node->bitmaps_lock, src->node->bitmaps_lock)
{
    bd_rwlock_assert_held(&dst->node->bitmaps_lock);
    bd_rwlock_assert_held(&src->node->bitmaps_lock);
    if (dst->granularity == src->granularity && dst->nwords == src->nwords) {
        gint64 delta = 0;
        for (uint64_t w = 0; w < src->nwords; w++) {
            uint64_t v = LOAD(src->words[w]), old;
            if (!v) {
                continue;
            }
            old = __atomic_fetch_or(&dst->words[w], v, __ATOMIC_RELAXED);
            delta += __builtin_popcountll(v & ~old);
        }
        __atomic_add_fetch(&dst->count, delta, __ATOMIC_RELEASE);
        return;
    }
    /* Different granularities: each dirty run of src, in bytes. */
    for (uint64_t bit = find_bit_locked(src, 0, src->nbits, TRUE);
         bit < src->nbits;) {
        uint64_t zero = find_bit_locked(src, bit, src->nbits, FALSE);
        uint64_t first, last;
        if (byte_range_bits(dst, bit << src->gran_bits,
                            (zero - bit) << src->gran_bits, &first, &last)) {
            bits_update_locked(dst->node, dst, first, last, TRUE);
        }
        bit = zero < src->nbits ? find_bit_locked(src, zero, src->nbits, TRUE)
                                : src->nbits;
    }
}

gboolean bd_dirty_bitmap_merge(BdDirtyBitmap *dst, BdDirtyBitmap *src,
                               BdDirtyBitmapBackup **backup, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_dirty_bitmap_check(dst, BD_BITMAP_DEFAULT, errp) ||
        !bd_dirty_bitmap_check(src, BD_BITMAP_ALLOW_RO, errp)) {
        return FALSE;
    }
    uint64_t dst_size = bd_dirty_bitmap_size(dst);
    uint64_t src_size = bd_dirty_bitmap_size(src);

    if (dst_size != src_size) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmaps are of different sizes (destination size is %"
                    G_GUINT64_FORMAT ", source size is %" G_GUINT64_FORMAT
                    ") and can't be merged", dst_size, src_size);
        return FALSE;
    }
    if (backup) {
        *backup = bd_dirty_bitmap_backup(dst);
    }
    if (dst != src) {
        pair_read_lock(dst, src);
        merge_locked(dst, src);
        pair_read_unlock(dst, src);
    }
    return TRUE;
}

void bd_dirty_bitmap_merge_internal(BdDirtyBitmap *dst, BdDirtyBitmap *src)
{
    if (dst != src) {
        pair_read_lock(dst, src);
        merge_locked(dst, src);
        pair_read_unlock(dst, src);
    }
}

/* --- successors --- */

BdDirtyBitmap *bd_dirty_bitmap_create_successor(BdDirtyBitmap *bm,
                                                GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdDirtyBitmap *succ;

    if (!bd_dirty_bitmap_check(bm, BD_BITMAP_BUSY | BD_BITMAP_INCONSISTENT,
                               errp)) {
        return NULL;
    }
    if (bm->successor) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot create a successor for a bitmap that already "
                    "has one");
        return NULL;
    }
    succ = bd_dirty_bitmap_create(bm->node, bm->granularity, NULL, errp);
    if (!succ) {
        return NULL;
    }
    bd_dirty_bitmap_set_enabled(succ, bd_dirty_bitmap_enabled(bm));
    bd_dirty_bitmap_set_enabled(bm, FALSE);
    bm->successor = succ;
    bd_dirty_bitmap_set_busy(bm, TRUE);
    return succ;
}

BdDirtyBitmap *bd_dirty_bitmap_successor(const BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    return bm->successor;
}

static void successor_finish(BdDirtyBitmap *bm, gboolean take)
{
    BdDirtyBitmap *succ = bm->successor;

    if (!succ) {
        return;
    }
    if (take) {
        bd_dirty_bitmap_clear(bm);
    }
    bd_dirty_bitmap_merge_internal(bm, succ);
    bd_dirty_bitmap_set_enabled(bm, bd_dirty_bitmap_enabled(succ));
    bm->successor = NULL;
    bd_dirty_bitmap_release(succ);
    bd_dirty_bitmap_set_busy(bm, FALSE);
}

void bd_dirty_bitmap_abdicate(BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    successor_finish(bm, TRUE);
}

void bd_dirty_bitmap_reclaim(BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    successor_finish(bm, FALSE);
}

gboolean bd_dirty_bitmap_recording(const BdDirtyBitmap *bm)
{
    BD_GLOBAL_STATE_CODE();

    return bd_dirty_bitmap_enabled(bm) ||
           (bm->successor && bd_dirty_bitmap_enabled(bm->successor));
}

/* --- sha256, serialization --- */

char *bd_dirty_bitmap_sha256(BdDirtyBitmap *bm)
{
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    uint64_t buf[256];
    uint64_t n;

    bm_read_lock(bm);
    n = MAX(bm->nwords, 1);
    for (uint64_t w = 0; w < n; w += G_N_ELEMENTS(buf)) {
        uint64_t k = MIN(n - w, G_N_ELEMENTS(buf));
        for (uint64_t i = 0; i < k; i++) {
            buf[i] = GUINT64_TO_LE(w + i < bm->nwords
                                   ? LOAD(bm->words[w + i]) : 0);
        }
        g_checksum_update(sum, (const guchar *)buf, k * 8);
    }
    bm_read_unlock(bm);
    return g_strdup(g_checksum_get_string(sum));
}

uint64_t bd_dirty_bitmap_serialized_size(const BdDirtyBitmap *bm)
{
    uint64_t nbits;

    bm_read_lock(bm);
    nbits = bm->nbits;
    bm_read_unlock(bm);
    return (nbits + 7) / 8;
}

void bd_dirty_bitmap_serialize(BdDirtyBitmap *bm, uint64_t first_byte,
                               uint64_t nbytes, void *out)
{
    uint8_t *p = out;

    bm_read_lock(bm);
    for (uint64_t i = 0; i < nbytes; i++) {
        uint64_t b = first_byte + i;
        uint64_t w = b / 8;
        p[i] = w < bm->nwords
               ? (uint8_t)(LOAD(bm->words[w]) >> (8 * (b % 8))) : 0;
    }
    bm_read_unlock(bm);
}

void bd_dirty_bitmap_deserialize(BdDirtyBitmap *bm, uint64_t first_byte,
                                 uint64_t nbytes, const void *in)
{
    const uint8_t *p = in;
    gint64 delta = 0;

    bm_read_lock(bm);
    for (uint64_t i = 0; i < nbytes;) {
        uint64_t b = first_byte + i;
        uint64_t w = b / 8, mask = 0, old;
        if (w >= bm->nwords) {
            break;
        }
        /* Gather the bytes of one word, then one atomic OR. */
        do {
            mask |= (uint64_t)p[i] << (8 * ((first_byte + i) % 8));
            i++;
        } while (i < nbytes && (first_byte + i) % 8);
        if (w == bm->nwords - 1 && bm->nbits % 64) {
            mask &= ~0ull >> (64 - bm->nbits % 64);
        }
        if (mask) {
            old = __atomic_fetch_or(&bm->words[w], mask, __ATOMIC_RELAXED);
            delta += __builtin_popcountll(mask & ~old);
        }
    }
    __atomic_add_fetch(&bm->count, delta, __ATOMIC_RELEASE);
    bm_read_unlock(bm);
}

/* --- write path, resize --- */

void bd_dirty_bitmaps_record_slow(BdNode *node, uint64_t offset,
                                  uint64_t bytes)
{
    GPtrArray *list = node->bitmaps;

    bd_rwlock_rdlock(&node->bitmaps_lock);
    for (guint i = 0; i < list->len; i++) {
        BdDirtyBitmap *bm = list->pdata[i];
        uint64_t first, last;
        if (LOAD(bm->enabled) &&
            byte_range_bits(bm, offset, bytes, &first, &last)) {
            bits_update_locked(node, bm, first, last, TRUE);
        }
    }
    bd_rwlock_rdunlock(&node->bitmaps_lock);
}

void bd_dirty_bitmaps_truncate(BdNode *node, uint64_t size)
{
    GPtrArray *list = node->bitmaps;

    if (!LOAD(node->nr_bitmaps)) {
        return;
    }
    bd_rwlock_wrlock(&node->bitmaps_lock);
    for (guint i = 0; i < list->len; i++) {
        BdDirtyBitmap *bm = list->pdata[i];
        uint64_t old_nwords = bm->nwords;
        uint64_t *words;
        gint64 count = 0;

        bitmap_set_geometry(node, bm, size);
        words = g_try_renew(uint64_t, bm->words, MAX(bm->nwords, 1));
        if (!words) {
            /* Keep the old array; the new tail simply is not tracked. */
            bitmap_set_geometry(node, bm,
                                MIN(size, old_nwords * 64ull << bm->gran_bits));
            continue;
        }
        bm->words = words;
        for (uint64_t w = old_nwords; w < bm->nwords; w++) {
            bm->words[w] = 0;
        }
        if (bm->nbits % 64 && bm->nwords) {
            bm->words[bm->nwords - 1] &= ~0ull >> (64 - bm->nbits % 64);
        }
        for (uint64_t w = 0; w < bm->nwords; w++) {
            count += __builtin_popcountll(bm->words[w]);
        }
        /* Readers load it without the lock. */
        STORE(bm->count, count);
    }
    bd_rwlock_wrunlock(&node->bitmaps_lock);
}

/* --- persistence registry --- */

typedef struct {
    const BdDriver *drv;
    const BdBitmapStoreOps *ops;
} StoreEntry;

static GArray *store_ops;

void bd_dirty_bitmap_register_store(const BdDriver *drv,
                                    const BdBitmapStoreOps *ops)
{
    BD_GLOBAL_STATE_CODE();

    StoreEntry e = { drv, ops };

    if (!store_ops) {
        store_ops = g_array_new(FALSE, FALSE, sizeof(StoreEntry));
    }
    for (guint i = 0; i < store_ops->len; i++) {
        if (g_array_index(store_ops, StoreEntry, i).drv == drv) {
            return;
        }
    }
    g_array_append_val(store_ops, e);
}

static const BdBitmapStoreOps *store_ops_of(BdNode *node)
{
    for (guint i = 0; store_ops && i < store_ops->len; i++) {
        StoreEntry *e = &g_array_index(store_ops, StoreEntry, i);
        if (e->drv == node->drv) {
            return e->ops;
        }
    }
    return NULL;
}

gboolean bd_dirty_bitmap_can_store(BdNode *node, const char *name,
                                   uint32_t granularity, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const BdBitmapStoreOps *ops = store_ops_of(node);

    if (!ops || !ops->can_store) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Can't store persistent bitmaps to %s: %s",
                    node->node_name, g_strerror(ENOTSUP));
        return FALSE;
    }
    if (!ops->can_store(node, name, granularity, errp)) {
        g_prefix_error(errp, "Can't make bitmap '%s' persistent in '%s': ",
                       name, node->node_name);
        return FALSE;
    }
    return TRUE;
}

gboolean bd_dirty_bitmap_remove_persistent(BdNode *node, const char *name,
                                           GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const BdBitmapStoreOps *ops = store_ops_of(node);

    return !ops || !ops->remove || ops->remove(node, name, errp);
}

gboolean bd_dirty_bitmap_store_supported(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    const BdBitmapStoreOps *ops = store_ops_of(node);

    return ops && ops->can_store;
}

gboolean bd_dirty_bitmap_store_sync(BdNode *node, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const BdBitmapStoreOps *ops = store_ops_of(node);

    return !ops || !ops->sync || ops->sync(node, errp);
}

/* --- query --- */

GVariant *bd_dirty_bitmap_query(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) list = bd_dirty_bitmap_list(node);
    GVariantBuilder arr;

    if (!list->len) {
        return NULL;
    }
    g_variant_builder_init(&arr, G_VARIANT_TYPE("av"));
    for (guint i = 0; i < list->len; i++) {
        BdDirtyBitmap *bm = list->pdata[i];
        GVariantDict d;

        g_variant_dict_init(&d, NULL);
        if (bm->name) {
            g_variant_dict_insert_value(&d, "name",
                g_variant_new_take_string(bd_query_string(bm->name)));
        }
        g_variant_dict_insert(&d, "recording", "b",
                              bd_dirty_bitmap_recording(bm));
        g_variant_dict_insert(&d, "persistent", "b",
                              bd_dirty_bitmap_persistent(bm));
        g_variant_dict_insert(&d, "busy", "b", bd_dirty_bitmap_busy(bm));
        g_variant_dict_insert(&d, "granularity", "x",
                              (gint64)bm->granularity);
        g_variant_dict_insert(&d, "count", "x",
                              (gint64)bd_dirty_bitmap_count(bm));
        if (bd_dirty_bitmap_inconsistent(bm)) {
            g_variant_dict_insert(&d, "inconsistent", "b", TRUE);
        }
        g_variant_builder_add(&arr, "v", g_variant_dict_end(&d));
    }
    return g_variant_builder_end(&arr);
}
