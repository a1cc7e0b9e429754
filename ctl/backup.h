/* SPDX-License-Identifier: MIT */
/* blockctl's pull-mode backups: images written with blockd's own
 * drivers (image.c), data pulled over NBD (pull.c), the chain and its
 * manifest (cmd-backup.c). */
#ifndef BD_CTL_BACKUP_H
#define BD_CTL_BACKUP_H

#include <glib.h>
#include <stdint.h>

#include "graph/entry.h"
#include "graph/node.h"

/* --- image.c (main thread) --- */

/* Claim this thread as the graph's main thread and register drivers. */
void bd_ctl_graph_init(void);
/* A new qcow2 image of 'size' bytes, over 'backing' (a qcow2 file name
 * relative to the image, or NULL). */
gboolean bd_ctl_qcow2_create(const char *path, uint64_t size,
                             const char *backing, GError **errp);
/* An image (format probed) through an entry handle; a qcow2 opened for
 * writing reads no backing file unless 'with_backing'. */
BdEntry *bd_ctl_image_open(const char *path, gboolean writable,
                           gboolean with_backing, GError **errp);
void bd_ctl_image_close(BdEntry *entry);

/* --- pull.c --- */

typedef struct {
    uint64_t offset, length;
} BdCtlExtent;

/* The extents of the export at 'uri' to copy: with 'bitmap_context'
 * (qemu:dirty-bitmap:NAME) its dirty extents, else every extent that
 * does not read as zeroes.  *size gets the export's size. */
GArray *bd_ctl_pull_extents(const char *uri, const char *bitmap_context,
                            uint64_t *size, GError **errp);

typedef void (*BdCtlProgressFn)(uint64_t done, uint64_t total,
                                gpointer opaque);

/* Read 'extents' from 'uri' with 'workers' connections in parallel and
 * write them at the same offsets through 'entry' ('compress': as
 * compressed qcow2 clusters where they are whole clusters).  'progress'
 * is called on the calling thread about four times a second. */
gboolean bd_ctl_pull(const char *uri, GArray *extents, BdEntry *entry,
                     int workers, gboolean compress,
                     BdCtlProgressFn progress, gpointer opaque,
                     GError **errp);

#endif
