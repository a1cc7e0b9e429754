/* SPDX-License-Identifier: MIT */
/* Checkpoints: named points in time of a node, kept as a chain of
 * persistent dirty bitmaps.  Each bitmap records the writes from its
 * checkpoint until the next one was taken; only the newest (active)
 * one still records.  What changed since checkpoint X is the union of
 * X's bitmap and every later one:
 *
 *   cp1 [t1, t2)      cp2 [t2, t3)      cp3 [t3, now)
 *   frozen            frozen            recording (active)
 *                     '---- changes since cp2 = cp2 | cp3 ----'
 *
 * The chain is stored in the bitmaps' names, so it lives in the image
 * (qcow2) with nothing else to keep in step, and QEMU and qemu-img see
 * ordinary persistent bitmaps:
 *
 *   blockd-checkpoint.<seq>.<created>.<name>
 *
 * <seq>: position in the chain, decimal, zero-padded to 6 digits so
 * that sorting the names sorts the chain; <created>: seconds since the
 * epoch; <name>: the checkpoint's name, the rest of the string.
 *
 * Usability: the changes since X are known only if X's bitmap and every
 * later one are consistent.  A bitmap found inconsistent (in use when
 * the image was last closed: a crash; or, the newest one, found not
 * recording) therefore makes its checkpoint and every earlier one
 * unusable, for good (the bitmap stays inconsistent in the image);
 * checkpoints taken after it are usable, so after a crash the next
 * checkpoint starts a usable chain.  Unusable checkpoints are reported
 * once per node open with the event BLOCKD_CHECKPOINT_UNUSABLE
 * {node, checkpoints: [names]}, when the chain is first looked at (a
 * checkpoint call on the node: at open no monitor may be listening).
 *
 * Deleting checkpoint X merges its bitmap into its predecessor's
 * (nothing changed since an earlier checkpoint is lost) and removes it;
 * if X was the active one, the predecessor records again.  If X's
 * bitmap was inconsistent the predecessor's is marked inconsistent too,
 * as what it would need is gone.
 *
 * Thread model: main thread only.  Guest writes go on throughout: a
 * write is recorded in the old or the new active bitmap (or both) while
 * one takes over from the other, never in neither.
 */
#ifndef BD_GRAPH_CHECKPOINT_H
#define BD_GRAPH_CHECKPOINT_H

#include <glib.h>
#include <stdint.h>
#include "graph/bitmap.h"
#include "graph/node.h"

#define BD_CHECKPOINT_BITMAP_PREFIX "blockd-checkpoint."
#define BD_CHECKPOINT_EVENT_UNUSABLE "BLOCKD_CHECKPOINT_UNUSABLE"

typedef struct {
    char *name;
    char *bitmap;              /* the bitmap's name */
    gint64 creation_time;      /* seconds since the epoch */
    gboolean usable;
    gboolean active;           /* the newest, recording */
    /* Bytes written since the checkpoint (the union's dirty chunks,
     * counted at the chain's finest granularity); 0 when unusable. */
    uint64_t dirty_bytes;
} BdCheckpointInfo;

void bd_checkpoint_info_free(BdCheckpointInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdCheckpointInfo, bd_checkpoint_info_free)

/* The node's checkpoints, oldest first (BdCheckpointInfo *, the array
 * frees them).  Errors: a node whose driver stores no persistent
 * bitmaps ("Node 'X' cannot hold checkpoints: ..."). */
GPtrArray *bd_checkpoint_list(BdNode *node, GError **errp);

/* Everything written to 'node' since checkpoint 'name': a new disabled,
 * non-persistent bitmap on the node holding the union of the
 * checkpoint's bitmap and every later one, named 'target' (NULL:
 * anonymous).  The caller owns it (bd_dirty_bitmap_release).  It covers
 * the writes recorded until this call; drain the node around it (and
 * around the snapshot it goes with) for an exact point in time.
 * Errors: the node cannot hold checkpoints; "Checkpoint 'X' not found
 * on node 'N'"; "Checkpoint 'X' is not usable: ...; take a full
 * backup"; "Bitmap already exists: T".  Never a partial or stale
 * result. */
BdDirtyBitmap *bd_checkpoint_changes_since(BdNode *node, const char *name,
                                           const char *target,
                                           GError **errp);

/* Creating and deleting, in two steps for transactions: prepare makes
 * the change (in memory and in the image) and returns what undoes it;
 * then exactly one of commit or abort, which free it.  Changes
 * prepared on one node are undone newest first. */
typedef struct BdCheckpointChange BdCheckpointChange;

/* A new active checkpoint 'name' with a bitmap of 'granularity' bytes
 * (0: block-dirty-bitmap-add's default); the active one is frozen.
 * Refused: a node that cannot hold checkpoints, a read-only node, an
 * invalid or duplicate name, an invalid granularity, an active bitmap
 * in use by another operation. */
BdCheckpointChange *bd_checkpoint_create_prepare(BdNode *node,
                                                 const char *name,
                                                 uint32_t granularity,
                                                 GError **errp);
/* Merge checkpoint 'name' into its predecessor and remove it (see
 * above).  Refused: unknown name, read-only node, its bitmap or the
 * predecessor's in use by another operation. */
BdCheckpointChange *bd_checkpoint_delete_prepare(BdNode *node,
                                                 const char *name,
                                                 GError **errp);
void bd_checkpoint_change_commit(BdCheckpointChange *change);
void bd_checkpoint_change_abort(BdCheckpointChange *change);

/* Whether 'bm' is a checkpoint's bitmap; *checkpoint (may be NULL) gets
 * the checkpoint's name, borrowed from the bitmap's. */
gboolean bd_checkpoint_owns_bitmap(const BdDirtyBitmap *bm,
                                   const char **checkpoint);

/* graph/node.c: the node is being freed. */
void bd_checkpoints_node_closing(BdNode *node);

#endif
