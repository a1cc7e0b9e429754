/* SPDX-License-Identifier: MIT */
/* The NBD server: one listener (unix or TCP) serving every NBD export.
 * Main thread for start/stop; connections are served by their own
 * threads (see the files of this folder). */
#ifndef BD_EXPORT_NBD_SERVER_H
#define BD_EXPORT_NBD_SERVER_H

#include "export/export.h"

/* --- SocketAddress (address.c) --- */

/* SocketAddressType, in QAPI order. */
typedef enum {
    BD_SOCKET_ADDRESS_INET,
    BD_SOCKET_ADDRESS_UNIX,
    BD_SOCKET_ADDRESS_VSOCK,
    BD_SOCKET_ADDRESS_FD,
} BdSocketAddressType;
extern const char *const bd_socket_address_type_names[];

/* A decoded SocketAddress: the members a listener uses. */
typedef struct {
    BdSocketAddressType type;
    const char *host;          /* inet */
    const char *port;          /* inet */
    gboolean ipv4, has_ipv4;   /* inet */
    gboolean ipv6, has_ipv6;   /* inet */
    const char *path;          /* unix */
} BdSocketAddress;

/* The flat SocketAddress union ({"type": "unix", "path": P}), and its
 * variants, which SocketAddressLegacy wraps in 'data' (control/). */
extern const BdSchemaType bd_socket_address;
extern const BdSchemaType bd_socket_address_inet;
extern const BdSchemaType bd_socket_address_unix;
extern const BdSchemaType bd_socket_address_vsock;
extern const BdSchemaType bd_socket_address_fd;

/* Decode a validated flat SocketAddress (strings borrowed). */
void bd_socket_address_decode(GVariant *addr, BdSocketAddress *out);

/* --- the server --- */

/* Listen on 'addr', a unix or inet address; max_connections 0 =
 * unlimited.  Errors as QEMU's: "NBD server already running". */
gboolean bd_nbd_server_start(const BdSocketAddress *addr,
                             uint32_t max_connections, GError **errp);
/* Closes the listener and every NBD export ("NBD server not running"). */
gboolean bd_nbd_server_stop(GError **errp);
gboolean bd_nbd_server_running(void);

/* The "nbd" export type for export/export.h. */
extern const BdExportDriver bd_nbd_export_driver;

#endif
