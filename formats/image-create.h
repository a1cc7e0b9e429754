/* SPDX-License-Identifier: MIT */
/* Creating an image file by name, as QEMU's bdrv_img_create: the file
 * protocol's create, then the format's create through a handle that may
 * grow the file.  Shared by the daemon's commands that take a file name
 * (drive-backup, drive-mirror, blockdev-snapshot-sync, backup sessions)
 * and by blockctl's backup chain.
 *
 * Thread model: main thread (the graph's).
 */
#ifndef BD_FORMATS_IMAGE_CREATE_H
#define BD_FORMATS_IMAGE_CREATE_H

#include <glib.h>
#include <stdint.h>

/* A new 'fmt' image of 'size' bytes at 'filename' (an existing file is
 * truncated), naming 'backing_file' of format 'backing_fmt' in its
 * header when both are given.  Errors as QEMU's: "Unknown file format
 * 'x'", "Driver 'nbd' does not support image creation", "Format driver
 * 'x' does not support image creation". */
gboolean bd_formats_image_create(const char *filename, const char *fmt,
                                 uint64_t size, const char *backing_file,
                                 const char *backing_fmt, GError **errp);

#endif
