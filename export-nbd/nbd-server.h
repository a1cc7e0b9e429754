/* SPDX-License-Identifier: MIT */
/* The NBD server: one listener (unix or TCP) serving every NBD export.
 * Main thread for start/stop; connections are served by their own
 * threads (see the files of this folder). */
#ifndef BD_EXPORT_NBD_SERVER_H
#define BD_EXPORT_NBD_SERVER_H

#include "export/export.h"

/* 'addr' is a flat SocketAddress a{sv}: {"type": "unix", "path": P} or
 * {"type": "inet", "host": H, "port": P[, "ipv4": b, "ipv6": b]}.
 * max_connections 0 = unlimited.  Errors as QEMU's:
 * "NBD server already running". */
gboolean bd_nbd_server_start(GVariant *addr, uint32_t max_connections,
                             GError **errp);
/* Closes the listener and every NBD export ("NBD server not running"). */
gboolean bd_nbd_server_stop(GError **errp);
gboolean bd_nbd_server_running(void);

/* The "nbd" export type for export/export.h. */
extern const BdExportDriver bd_nbd_export_driver;

#endif
