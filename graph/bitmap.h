/* SPDX-License-Identifier: MIT */
/* Dirty bitmaps: per-node records of which byte ranges were written,
 * as QEMU's BdrvDirtyBitmap (block-dirty-bitmap-*, incremental backup,
 * the NBD qemu:dirty-bitmap context, qcow2 persistence).
 *
 * Thread model: a bitmap belongs to one node.  Creation, removal, the
 * flags (enabled, busy, persistent, ...) and queries are changed on the
 * main thread.  The data functions (set, reset, get, next_dirty,
 * next_zero, count, serialize) may be called on any thread, at the same
 * time as the write path records writes: bits are words updated with
 * atomic operations; the owning node's reader/writer lock keeps its list
 * and the word arrays stable (readers: the write path and the data
 * functions; writer: create, release, truncate).  Nothing is global: a
 * write to a node without bitmaps does not look at any lock.  A bitmap pointer stays
 * valid until bd_dirty_bitmap_release() or the node closes; users that
 * keep one across main-loop iterations (jobs, exports) mark it busy, which
 * makes the QMP commands refuse to remove or modify it.
 *
 * Granularity is a power of two >= 512 bytes; one bit covers one chunk.
 * Offsets and lengths are bytes; ranges are clipped to the bitmap size.
 */
#ifndef BD_GRAPH_BITMAP_H
#define BD_GRAPH_BITMAP_H

#include <glib.h>
#include <stdint.h>
#include "graph/node.h"

typedef struct BdDirtyBitmap BdDirtyBitmap;

/* QEMU's BDRV_BITMAP_* checks (bd_dirty_bitmap_check). */
typedef enum {
    BD_BITMAP_BUSY         = 1 << 0,
    BD_BITMAP_RO           = 1 << 1,
    BD_BITMAP_INCONSISTENT = 1 << 2,
    BD_BITMAP_DEFAULT      = BD_BITMAP_BUSY | BD_BITMAP_RO |
                             BD_BITMAP_INCONSISTENT,
    BD_BITMAP_ALLOW_RO     = BD_BITMAP_BUSY | BD_BITMAP_INCONSISTENT,
} BdBitmapCheck;

#define BD_BITMAP_MAX_NAME 1023

/* --- lifetime (main thread) --- */

/* A new enabled, non-persistent bitmap covering the node's current size.
 * 'name' NULL: anonymous (never found by name, not listed by QMP name
 * look-ups; used by merge and by jobs).  Errors: "Bitmap already exists:
 * NAME", "Bitmap name too long: NAME". */
BdDirtyBitmap *bd_dirty_bitmap_create(BdNode *node, uint32_t granularity,
                                      const char *name, GError **errp);
/* Remove from the node and free. */
void bd_dirty_bitmap_release(BdDirtyBitmap *bm);
/* Named bitmap of the node, or NULL. */
BdDirtyBitmap *bd_dirty_bitmap_find(BdNode *node, const char *name);
/* The node's bitmaps, newest first (QEMU's order): a new array of
 * borrowed pointers. */
GPtrArray *bd_dirty_bitmap_list(BdNode *node);
gboolean bd_dirty_bitmap_node_has_any(BdNode *node);
/* Release every bitmap of a node that is being freed (graph/node.c). */
void bd_dirty_bitmaps_node_closing(BdNode *node);

/* QEMU's default: the cluster size the driver reports ("cluster-size" of
 * its query_image_info, following raw/filters to their file child),
 * clamped to [4 KiB, 64 KiB]; 64 KiB when there is none. */
uint32_t bd_dirty_bitmap_default_granularity(BdNode *node);

/* --- properties --- */
const char *bd_dirty_bitmap_name(const BdDirtyBitmap *bm);   /* or NULL */
BdNode *bd_dirty_bitmap_node(const BdDirtyBitmap *bm);
uint32_t bd_dirty_bitmap_granularity(const BdDirtyBitmap *bm);
uint64_t bd_dirty_bitmap_size(const BdDirtyBitmap *bm);      /* bytes */
/* Dirty bytes as QEMU counts them: set bits times the granularity. */
uint64_t bd_dirty_bitmap_count(const BdDirtyBitmap *bm);

gboolean bd_dirty_bitmap_enabled(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_set_enabled(BdDirtyBitmap *bm, gboolean enabled);
gboolean bd_dirty_bitmap_busy(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_set_busy(BdDirtyBitmap *bm, gboolean busy);
gboolean bd_dirty_bitmap_persistent(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_set_persistent(BdDirtyBitmap *bm, gboolean persistent);
gboolean bd_dirty_bitmap_inconsistent(const BdDirtyBitmap *bm);
/* Inconsistent bitmaps are also disabled (QEMU). */
void bd_dirty_bitmap_set_inconsistent(BdDirtyBitmap *bm);
/* Undo set_inconsistent in a transaction that aborts; the caller puts
 * back the enabled state it saved. */
void bd_dirty_bitmap_clear_inconsistent(BdDirtyBitmap *bm);
gboolean bd_dirty_bitmap_readonly(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_set_readonly(BdDirtyBitmap *bm, gboolean readonly);
/* Transaction remove: the bitmap stays until commit but must not be
 * stored by the format meanwhile. */
gboolean bd_dirty_bitmap_skip_store(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_set_skip_store(BdDirtyBitmap *bm, gboolean skip);

/* QEMU's bdrv_dirty_bitmap_check(): "Bitmap 'X' is currently in use by
 * another operation and cannot be used", "... is readonly and cannot be
 * modified", "... is inconsistent and cannot be used". */
gboolean bd_dirty_bitmap_check(const BdDirtyBitmap *bm, int flags,
                               GError **errp);

/* --- data (any thread) --- */
void bd_dirty_bitmap_set(BdDirtyBitmap *bm, uint64_t offset, uint64_t bytes);
void bd_dirty_bitmap_reset(BdDirtyBitmap *bm, uint64_t offset,
                           uint64_t bytes);
void bd_dirty_bitmap_clear(BdDirtyBitmap *bm);
/* Is the chunk holding 'offset' dirty? */
gboolean bd_dirty_bitmap_get(BdDirtyBitmap *bm, uint64_t offset);
/* First dirty (clean) byte offset in [offset, end), chunk aligned but
 * never below 'offset', or -1.  end is clipped to the size. */
int64_t bd_dirty_bitmap_next_dirty(BdDirtyBitmap *bm, uint64_t offset,
                                   uint64_t end);
int64_t bd_dirty_bitmap_next_zero(BdDirtyBitmap *bm, uint64_t offset,
                                  uint64_t end);
/* The first dirty extent in [offset, end), at most max_bytes long (0: no
 * limit): TRUE with *start and *len, FALSE when none. */
gboolean bd_dirty_bitmap_next_dirty_area(BdDirtyBitmap *bm, uint64_t offset,
                                         uint64_t end, uint64_t max_bytes,
                                         uint64_t *start, uint64_t *len);

/* A copy of the bits, to undo a transaction step. */
typedef struct BdDirtyBitmapBackup BdDirtyBitmapBackup;
BdDirtyBitmapBackup *bd_dirty_bitmap_backup(BdDirtyBitmap *bm);
void bd_dirty_bitmap_restore(BdDirtyBitmap *bm, BdDirtyBitmapBackup *b);
void bd_dirty_bitmap_backup_free(BdDirtyBitmapBackup *b);

/* dst |= src (any granularities: a src chunk dirties every dst chunk it
 * touches).  Checks as QEMU: dst BD_BITMAP_DEFAULT, src ALLOW_RO, equal
 * sizes ("Bitmaps are of different sizes (destination size is N, source
 * size is M) and can't be merged").  'backup' (may be NULL) gets dst's
 * previous bits. */
gboolean bd_dirty_bitmap_merge(BdDirtyBitmap *dst, BdDirtyBitmap *src,
                               BdDirtyBitmapBackup **backup, GError **errp);

/* The same without checks, for jobs that hold the bitmaps busy. */
void bd_dirty_bitmap_merge_internal(BdDirtyBitmap *dst, BdDirtyBitmap *src);

/* --- successors (QEMU's backup bitmap handling; main thread) ---
 * A job working from bitmap B creates a successor: B stops recording
 * and turns busy, new writes go to the anonymous successor (which
 * records if B did); B still reports "recording" as QEMU does.  When the
 * job ends: abdicate (B takes the successor's bits: what was written
 * since; the job's copy is done) or reclaim (the successor's bits merge
 * back into B: nothing is lost).  Either frees the successor and leaves
 * B not busy, recording as before. */
BdDirtyBitmap *bd_dirty_bitmap_create_successor(BdDirtyBitmap *bm,
                                                GError **errp);
BdDirtyBitmap *bd_dirty_bitmap_successor(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_abdicate(BdDirtyBitmap *bm);
void bd_dirty_bitmap_reclaim(BdDirtyBitmap *bm);
/* enabled, or with a recording successor (query's "recording"). */
gboolean bd_dirty_bitmap_recording(const BdDirtyBitmap *bm);

/* QEMU's hbitmap_sha256: SHA-256 (hex) of the bit array as an array of
 * 64-bit little-endian words, at least one word. */
char *bd_dirty_bitmap_sha256(BdDirtyBitmap *bm);

/* Serialized form (qcow2 bitmap data): bit i of byte j is chunk 8*j+i.
 * Total bytes: (bits + 7) / 8.  deserialize ORs the bits in. */
uint64_t bd_dirty_bitmap_serialized_size(const BdDirtyBitmap *bm);
void bd_dirty_bitmap_serialize(BdDirtyBitmap *bm, uint64_t first_byte,
                               uint64_t nbytes, void *out);
void bd_dirty_bitmap_deserialize(BdDirtyBitmap *bm, uint64_t first_byte,
                                 uint64_t nbytes, const void *in);

/* --- the write path (graph/io.c) and resizes --- */

/* Mark [offset, offset+bytes) in every enabled bitmap of the node.
 * One atomic load when the node has none. */
void bd_dirty_bitmaps_record_slow(BdNode *node, uint64_t offset,
                                  uint64_t bytes);
static inline void bd_dirty_bitmaps_record(BdNode *node, uint64_t offset,
                                           uint64_t bytes)
{
    if (__atomic_load_n(&node->nr_bitmaps, __ATOMIC_ACQUIRE) && bytes) {
        bd_dirty_bitmaps_record_slow(node, offset, bytes);
    }
}
/* The node's size changed: resize its bitmaps (bits beyond the old size
 * start clean; shrinking drops bits). */
void bd_dirty_bitmaps_truncate(BdNode *node, uint64_t size);

/* --- formats that store bitmaps (qcow2) --- */
typedef struct {
    /* May a new persistent bitmap be stored?  Errors are the format's
     * own ("Cannot store dirty bitmaps in qcow2 v2 files"); the caller
     * prefixes "Can't make bitmap 'X' persistent in 'NODE': ". */
    gboolean (*can_store)(BdNode *node, const char *name,
                          uint32_t granularity, GError **errp);
    /* A persistent bitmap is being removed (may be NULL). */
    gboolean (*remove)(BdNode *node, const char *name, GError **errp);
    /* Write the set of persistent bitmaps (names, granularities) to the
     * image now, while it stays open and writes go on: each one marked
     * in use, its bits still stored on close.  What was added or
     * removed then survives a crash, as inconsistent bitmaps.  NULL:
     * the format stores on close only. */
    gboolean (*sync)(BdNode *node, GError **errp);
} BdBitmapStoreOps;

void bd_dirty_bitmap_register_store(const BdDriver *drv,
                                    const BdBitmapStoreOps *ops);
/* QEMU's bdrv_can_store_new_dirty_bitmap(), with its messages ("Can't
 * store persistent bitmaps to NODE: Operation not supported"). */
gboolean bd_dirty_bitmap_can_store(BdNode *node, const char *name,
                                   uint32_t granularity, GError **errp);
gboolean bd_dirty_bitmap_remove_persistent(BdNode *node, const char *name,
                                           GError **errp);
/* Whether the node's driver stores persistent bitmaps at all. */
gboolean bd_dirty_bitmap_store_supported(BdNode *node);
/* The store's sync (above); TRUE when it has none. */
gboolean bd_dirty_bitmap_store_sync(BdNode *node, GError **errp);

/* query-named-block-nodes "dirty-bitmaps": av of BlockDirtyInfo, or NULL
 * when the node has none (the member is then omitted). */
GVariant *bd_dirty_bitmap_query(BdNode *node);

#endif
