/* SPDX-License-Identifier: MIT */
/* Dirty bitmap commands shared by the QMP commands (cmd-bitmap.c) and
 * their transaction actions (transaction.c).  Main thread only. */
#ifndef BD_CONTROL_CMD_BITMAP_H
#define BD_CONTROL_CMD_BITMAP_H

#include "control/qmp-int.h"
#include "graph/bitmap.h"

/* QEMU's block_dirty_bitmap_lookup(): "Node 'X' not found", "Dirty bitmap
 * 'Y' not found". */
BdDirtyBitmap *bd_cmd_bitmap_lookup(const char *node, const char *name,
                                    BdNode **pnode, GError **errp);
/* block-dirty-bitmap-add from validated BlockDirtyBitmapAdd. */
gboolean bd_cmd_bitmap_add(GVariant *args, GError **errp);
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

/* Schemas, shared with the transaction's action table. */
const BdSchemaType *bd_cmd_bitmap_add_schema(void);
const BdSchemaType *bd_cmd_bitmap_schema(void);
const BdSchemaType *bd_cmd_bitmap_merge_schema(void);

#endif
