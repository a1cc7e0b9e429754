/* SPDX-License-Identifier: MIT */
/* The "fuse" export type: mounts a node over a regular file (libfuse3). */
#ifndef BD_EXPORT_FUSE_H
#define BD_EXPORT_FUSE_H

#include "export/export.h"

/* Register with bd_export_register_driver() at start-up. */
extern const BdExportDriver bd_fuse_export_driver;

#endif
