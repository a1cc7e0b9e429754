/* SPDX-License-Identifier: MIT */
/* SocketAddress (qapi/sockets.json): the schema shared by the NBD
 * server's listener and the nbd driver's server address, and the struct
 * a validated one is decoded into. */
#ifndef BD_GRAPH_SOCKET_ADDRESS_H
#define BD_GRAPH_SOCKET_ADDRESS_H

#include <glib.h>
#include "graph/schema.h"

/* SocketAddressType, in QAPI order. */
typedef enum {
    BD_SOCKET_ADDRESS_INET,
    BD_SOCKET_ADDRESS_UNIX,
    BD_SOCKET_ADDRESS_VSOCK,
    BD_SOCKET_ADDRESS_FD,
} BdSocketAddressType;
extern const char *const bd_socket_address_type_names[];

/* A decoded SocketAddress: the members a listener or a client uses. */
typedef struct {
    BdSocketAddressType type;
    const char *host;          /* inet */
    const char *port;          /* inet */
    gboolean ipv4, has_ipv4;   /* inet */
    gboolean ipv6, has_ipv6;   /* inet */
    const char *path;          /* unix */
    const char *str;           /* fd: a number or a LISTEN_FDNAMES name */
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

/* A listening stream socket (close-on-exec, blocking) on a unix or inet
 * address, or -1 with QEMU's texts ("Failed to bind socket to P: ...").
 * A stale unix socket file is replaced, as QEMU does. */
int bd_socket_address_listen(const BdSocketAddress *addr, GError **errp);

/* Inherited listening sockets (systemd socket activation and plain fd
 * passing).  bd_socket_inherited_init() runs first thing in main(),
 * before any thread and before GLib opens descriptors: it records the
 * descriptors from 3 up that the daemon was started with, and the
 * names LISTEN_FDNAMES gives those of LISTEN_FDS (only when LISTEN_PID
 * is our PID), marks them close-on-exec and unsets the LISTEN_*
 * variables, as sd_listen_fds(1) does. */
void bd_socket_inherited_init(void);
/* The number of sockets systemd passed (LISTEN_FDS), 0 without. */
guint bd_socket_activation_count(void);
/* The address type fd's 'str' of a listener: a LISTEN_FDNAMES name or
 * the number of a descriptor the daemon inherited, which must be a
 * listening stream socket.  Returns a new descriptor (a duplicate,
 * close-on-exec: the inherited one stays open, so that a server stopped
 * and started again may take it again) or -1 with QEMU's texts
 * ("File descriptor '%s' is not a socket"). */
int bd_socket_inherited_take(const char *str, GError **errp);
/* The LISTEN_FDS sockets no address has taken ("4 (nbd), 5"), or NULL:
 * connections to them would wait forever. */
char *bd_socket_activation_unused(void);

#endif
