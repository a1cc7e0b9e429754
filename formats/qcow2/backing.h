/* SPDX-License-Identifier: MIT */
/* Rewriting the backing file name of a qcow2 image (QEMU's
 * bdrv_change_backing_file for qcow2), for jobs that change a chain.
 *
 * Thread model: main thread, with the node drained or quiet.
 */
#ifndef BD_FORMATS_QCOW2_BACKING_H
#define BD_FORMATS_QCOW2_BACKING_H

#include "graph/node.h"

/* Store 'file' (NULL: none) and 'fmt' (NULL: no extension) as the
 * backing file of 'node' when it is a qcow2 node; other drivers keep no
 * backing file name and succeed without change. */
gboolean bd_qcow2_change_backing_file(BdNode *node, const char *file,
                                      const char *fmt, GError **errp);

#endif
