/* SPDX-License-Identifier: MIT */
/* Write-back caches of qcow2 metadata tables (L2 slices, refcount blocks).
 *
 * Thread model: every function runs under Qcow2State.lock, which also
 * protects the cache; table pointers are valid only while it is held.
 * A dirty entry is written back on eviction or flush, after the cache it
 * depends on (the refcount cache, for L2) was written and synced: a
 * table never references a cluster whose refcount is not on disk yet.
 * A cache marked 'sync_before_write' (L2) also syncs the file once
 * after being dirtied and before writing back: the guest data an L2
 * entry points to is on stable storage before the entry (power loss).
 * Readers may load a table without the lock (qcow2_cache_peek, read,
 * qcow2_cache_insert): the generation counter, bumped on every
 * write-back, discard and fresh table, tells whether the copy read
 * meanwhile can be trusted.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <string.h>
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/qcow2/qcow2.h"

typedef struct {
    uint64_t offset;        /* 0: unused */
    void *data;             /* entry_size bytes, allocated on first use */
    gboolean dirty;
    uint64_t lru;
    gboolean used;          /* since the last clean-interval tick */
} Qcow2CacheEntry;

struct Qcow2Cache {
    Qcow2State *s;
    Qcow2Cache *depends_on;
    Qcow2CacheEntry *entries;
    unsigned n;
    uint32_t entry_size;
    uint64_t lru_counter;
    unsigned n_dirty;
    gboolean sync_before_write;
    gboolean sync_needed;   /* dirtied since the last file sync */
    uint64_t generation;    /* bumped when a table may differ from disk */
    GHashTable *index;      /* offset -> entry index + 1 */
};

Qcow2Cache *qcow2_cache_new(Qcow2State *s, unsigned entries,
                            uint32_t entry_size)
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);

    c->s = s;
    c->n = MAX(entries, 2u);
    c->entry_size = entry_size;
    c->entries = g_new0(Qcow2CacheEntry, c->n);
    c->index = g_hash_table_new(g_int64_hash, g_int64_equal);
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        g_free(c->entries[i].data);
    }
    g_hash_table_destroy(c->index);
    g_free(c->entries);
    g_free(c);
}

void qcow2_cache_set_dependency(Qcow2Cache *c, Qcow2Cache *depends_on)
{
    c->depends_on = depends_on;
    c->sync_before_write = TRUE;
}

static gboolean cache_has_dirty(Qcow2Cache *c)
{
    return c->n_dirty > 0;
}

static int cache_flush_dependency(Qcow2Cache *c)
{
    int ret;

    if (c->depends_on && cache_has_dirty(c->depends_on)) {
        ret = qcow2_cache_flush(c->depends_on);
        if (ret < 0) {
            return ret;
        }
    } else if (!c->sync_needed) {
        return 0;
    }
    ret = bd_child_flush(c->s->file);
    if (ret == 0) {
        c->sync_needed = FALSE;
    }
    return ret;
}

static int cache_writeback(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    int ret;

    if (!e->dirty) {
        return 0;
    }
    ret = cache_flush_dependency(c);
    if (ret == 0) {
        bd_debug_event(c->s->file, c == c->s->l2_cache ? BD_DEBUG_EVENT_L2_UPDATE : BD_DEBUG_EVENT_REFBLOCK_UPDATE_PART);
        ret = bd_child_pwrite(c->s->file, e->offset, c->entry_size,
                              e->data, 0);
    }
    if (ret == 0) {
        e->dirty = FALSE;
        c->n_dirty--;
    }
    /* Written back, or maybe partly: a table read from disk without
     * the lock meanwhile may be torn or stale. */
    c->generation++;
    return ret;
}

int qcow2_cache_flush(Qcow2Cache *c)
{
    int result = 0;

    if (!c->n_dirty) {
        return 0;
    }
    for (unsigned i = 0; i < c->n; i++) {
        int ret = cache_writeback(c, &c->entries[i]);
        if (ret < 0 && result == 0) {
            result = ret;
        }
    }
    return result;
}

static Qcow2CacheEntry *cache_lookup(Qcow2Cache *c, uint64_t offset)
{
    gpointer v = g_hash_table_lookup(c->index, &offset);

    return v ? &c->entries[GPOINTER_TO_UINT(v) - 1] : NULL;
}

static void cache_unindex(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    if (e->offset) {
        g_hash_table_remove(c->index, &e->offset);
        e->offset = 0;
    }
}

/* The least recently used entry, written back first if dirty. */
static int cache_victim(Qcow2Cache *c, Qcow2CacheEntry **out)
{
    Qcow2CacheEntry *best = NULL;
    int ret;

    for (unsigned i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->entries[i];
        if (!e->offset) {
            best = e;
            break;
        }
        if (!best || e->lru < best->lru) {
            best = e;
        }
    }
    ret = cache_writeback(c, best);
    if (ret < 0) {
        return ret;
    }
    cache_unindex(c, best);
    *out = best;
    return 0;
}

int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, gboolean fresh,
                    void **table)
{
    Qcow2CacheEntry *e = cache_lookup(c, offset);
    int ret;

    if (!e) {
        ret = cache_victim(c, &e);
        if (ret < 0) {
            return ret;
        }
        if (!e->data) {
            e->data = g_try_malloc(c->entry_size);
            if (!e->data) {
                return -ENOMEM;
            }
        }
        if (fresh) {
            memset(e->data, 0, c->entry_size);
            c->generation++;
        } else {
            bd_debug_event(c->s->file, c == c->s->l2_cache ? BD_DEBUG_EVENT_L2_LOAD : BD_DEBUG_EVENT_REFBLOCK_LOAD);
            ret = bd_child_pread(c->s->file, offset, c->entry_size, e->data,
                                 0);
            if (ret < 0) {
                return ret;
            }
        }
        e->offset = offset;
        g_hash_table_insert(c->index, &e->offset,
                            GUINT_TO_POINTER((guint)(e - c->entries) + 1));
    } else if (fresh) {
        memset(e->data, 0, c->entry_size);
        c->generation++;
    }
    e->lru = ++c->lru_counter;
    e->used = TRUE;
    *table = e->data;
    return 0;
}

int qcow2_cache_peek(Qcow2Cache *c, uint64_t offset, void **table,
                     uint64_t *generation)
{
    Qcow2CacheEntry *e = cache_lookup(c, offset);

    *generation = c->generation;
    if (!e) {
        return -ENOENT;
    }
    e->lru = ++c->lru_counter;
    e->used = TRUE;
    *table = e->data;
    return 0;
}

int qcow2_cache_insert(Qcow2Cache *c, uint64_t offset, const void *data,
                       uint64_t generation)
{
    Qcow2CacheEntry *e;
    int ret;

    if (cache_lookup(c, offset)) {
        return 0;       /* someone else's copy is at least as new */
    }
    if (generation != c->generation) {
        return -EAGAIN;
    }
    ret = cache_victim(c, &e);
    if (ret < 0) {
        return ret;
    }
    if (!e->data) {
        e->data = g_try_malloc(c->entry_size);
        if (!e->data) {
            return -ENOMEM;
        }
    }
    memcpy(e->data, data, c->entry_size);
    e->offset = offset;
    g_hash_table_insert(c->index, &e->offset,
                        GUINT_TO_POINTER((guint)(e - c->entries) + 1));
    e->lru = ++c->lru_counter;
    e->used = TRUE;
    return 0;
}

uint32_t qcow2_cache_entry_size(Qcow2Cache *c)
{
    return c->entry_size;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, uint64_t offset)
{
    Qcow2CacheEntry *e = cache_lookup(c, offset);

    g_assert(e);
    c->sync_needed = c->sync_before_write;
    if (!e->dirty) {
        e->dirty = TRUE;
        c->n_dirty++;
    }
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    for (uint64_t off = offset; off < offset + c->s->cluster_size;
         off += c->entry_size) {
        Qcow2CacheEntry *e = cache_lookup(c, off);
        c->generation++;
        if (e) {
            if (e->dirty) {
                e->dirty = FALSE;
                c->n_dirty--;
            }
            cache_unindex(c, e);
        }
    }
}

void qcow2_cache_clean_unused(Qcow2Cache *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->entries[i];
        if (!e->used && !e->dirty && e->data) {
            cache_unindex(c, e);
            g_clear_pointer(&e->data, g_free);
        }
        e->used = FALSE;
    }
}
