/* SPDX-License-Identifier: MIT */
/* The table of block drivers blockd offers. */
#ifndef BD_FORMATS_REGISTRY_H
#define BD_FORMATS_REGISTRY_H

#include <stddef.h>
#include <stdint.h>
#include "graph/node.h"

/* Register every driver of formats/ with the graph (once, at start-up). */
void bd_formats_register_all(void);

/* The format of an image file as its first bytes say: "qcow2", "vdi",
 * "vpc" (a dynamic VHD), "qed", "bochs", "cloop", ... for their magic;
 * without a magic "dmg" for a name ending in ".dmg" (QEMU's probe),
 * otherwise (or unreadable) "raw". */
const char *bd_formats_probe_file(const char *filename);
/* The same for the first 'len' bytes of an image. */
const char *bd_formats_probe_buf(const uint8_t *buf, size_t len);
/* Whether a first sector shows the magic of any format QEMU probes
 * (qcow2, qed, vmdk, vhdx, vpc, vdi, luks, ...). */
gboolean bd_formats_buf_has_image_magic(const uint8_t *buf, size_t len);

/* QEMU's rule for a raw node whose format was probed rather than named
 * (drive-mirror/drive-backup targets, backing files without a format):
 * a write that would give its first sector another format's magic fails
 * with EPERM, so that raw is never silently turned into something else
 * the next time it is probed; its requests become sector-aligned.  Call
 * right after opening it.  No-op for other drivers.  Main thread. */
void bd_formats_raw_set_probed(BdNode *node);

#endif
