/* SPDX-License-Identifier: MIT */
/* The table of block drivers blockd offers. */
#ifndef BD_FORMATS_REGISTRY_H
#define BD_FORMATS_REGISTRY_H

/* Register every driver of formats/ with the graph (once, at start-up). */
void bd_formats_register_all(void);

/* The format of an image file as its first bytes say: "qcow2", "vdi"
 * or "vpc" (a dynamic VHD) for their magic, otherwise (or unreadable)
 * "raw". */
const char *bd_formats_probe_file(const char *filename);

#endif
