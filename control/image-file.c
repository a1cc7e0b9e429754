/* SPDX-License-Identifier: MIT */
/* Image files named by file name, for the commands that take one
 * (drive-backup, drive-mirror, blockdev-snapshot-sync): created as
 * QEMU's bdrv_img_create (formats/image-create.c does the work).
 *
 * Thread model: main thread only.
 */
#include "control/qmp-int.h"
#include "formats/image-create.h"
#include "graph/main-thread.h"

gboolean bd_ctl_image_create(const char *filename, const char *fmt,
                             uint64_t size, BdNode *backing, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    return bd_formats_image_create(filename, fmt, size,
                                   backing ? backing->filename : NULL,
                                   backing ? backing->drv->name : NULL,
                                   errp);
}
