/* SPDX-License-Identifier: MIT */
/* Dirty bitmap commands shared by the QMP commands (cmd-bitmap.c) and
 * their transaction actions (transaction.c).  Main thread only. */
#ifndef BD_CONTROL_CMD_BITMAP_H
#define BD_CONTROL_CMD_BITMAP_H

#include "control/qmp-int.h"
#include "graph/bitmap.h"

/* The members of the bitmap argument types (BlockDirtyBitmap,
 * BlockDirtyBitmapAdd, BlockDirtyBitmapMerge), decoded along the type's
 * table with bd_cmd_bitmap_args(). */
typedef struct {
    const char *node;
    const char *name;
    guint64 granularity;
    gboolean has_granularity;
    gboolean persistent;
    gboolean disabled;
    const char *target;
    GVariant *bitmaps;          /* merge: [BlockDirtyBitmapOrStr] */
} BdCmdBitmapArgs;
void bd_cmd_bitmap_args(const BdSchemaType *type, GVariant *args,
                        BdCmdBitmapArgs *out);
void bd_cmd_bitmap_args_clear(BdCmdBitmapArgs *a);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(BdCmdBitmapArgs, bd_cmd_bitmap_args_clear)

/* QEMU's block_dirty_bitmap_lookup(): "Node 'X' not found", "Dirty bitmap
 * 'Y' not found". */
BdDirtyBitmap *bd_cmd_bitmap_lookup(const char *node, const char *name,
                                    BdNode **pnode, GError **errp);
/* block-dirty-bitmap-add from decoded BlockDirtyBitmapAdd. */
gboolean bd_cmd_bitmap_add(const BdCmdBitmapArgs *a, GError **errp);
/* Checks and (when release) removes; without release returns the bitmap
 * still attached (the transaction releases it at commit). */
BdDirtyBitmap *bd_cmd_bitmap_remove(const char *node, const char *name,
                                    gboolean release, GError **errp);
/* block-dirty-bitmap-merge; 'backup' (may be NULL) gets the target's old
 * bits.  Returns the target or NULL. */
BdDirtyBitmap *bd_cmd_bitmap_merge(const char *node, const char *target,
                                   GVariant *sources,
                                   BdDirtyBitmapBackup **backup,
                                   GError **errp);

/* Checkpoints own their bitmaps (graph/checkpoint.h): names with the
 * checkpoint prefix are refused for new bitmaps ("Bitmap name 'X' is
 * reserved for checkpoints"), and a checkpoint's bitmap is refused by
 * every command that would change or remove it ("Bitmap 'X' belongs
 * to checkpoint 'Y'; ...") so that its chain stays right. */
gboolean bd_cmd_bitmap_check_name(const char *name, GError **errp);
gboolean bd_cmd_bitmap_check_owner(const BdDirtyBitmap *bm, GError **errp);

/* Schemas, shared with the transaction's action table. */
const BdSchemaType *bd_cmd_bitmap_add_schema(void);
const BdSchemaType *bd_cmd_bitmap_schema(void);
const BdSchemaType *bd_cmd_bitmap_merge_schema(void);

#endif
