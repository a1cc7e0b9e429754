/* SPDX-License-Identifier: MIT */
/* Socket chardevs inside control/: the options both parsers fill
 * (chardev-opts.c) and the implementation opens (chardev.c). */
#ifndef BD_CONTROL_CHARDEV_INT_H
#define BD_CONTROL_CHARDEV_INT_H

#include "control/qmp-int.h"
#include "graph/socket-address.h"

/* QEMU's ChardevSocket, from --chardev or from QMP (strings borrowed). */
typedef struct {
    const char *id;
    BdSocketAddressType type;
    const char *path, *host, *port;
    const char *fd;            /* fd: a number or a LISTEN_FDNAMES name */
    gboolean abstract, tight;
    gboolean has_server, server;
    gboolean has_wait, wait;
    gboolean has_reconnect;
    gint64 reconnect;
    gboolean nodelay, telnet, tn3270, websocket;
    const char *tls_creds, *tls_authz, *logfile;
} BdChardevSockOpts;

/* QEMU's checks (qmp_chardev_validate_socket and the TLS lookup) and
 * what blockd does not do; errors without a prefix. */
gboolean bd_chardev_opts_check(const BdChardevSockOpts *o, GError **errp);
/* A new socket chardev, not yet listed.  With 'wait' (a server at
 * start-up) it returns once the first client has connected. */
BdChardev *bd_chardev_open(const BdChardevSockOpts *o, GError **errp);
/* TRUE when a socket chardev 'id' is listed. */
gboolean bd_chardev_socket_exists(const char *id);

#endif
