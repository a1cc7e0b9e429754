/* SPDX-License-Identifier: MIT */
/* The NBD server: one listener (unix or TCP) serving every NBD export.
 * Main thread for start/stop; connections are served by their own
 * threads (see the files of this folder). */
#ifndef BD_EXPORT_NBD_SERVER_H
#define BD_EXPORT_NBD_SERVER_H

#include "crypto/tls.h"
#include "export/export.h"
#include "objects/object.h"
#include "graph/socket-address.h"

/* --- the server --- */

/* What nbd-server-start sets besides the address. */
typedef struct {
    uint32_t max_connections;      /* clients in transmission; 0 = any */
    BdTlsCreds *tls_creds;         /* server end, or NULL: plaintext */
    BdObject *tls_creds_obj;       /* its object: in use while running */
    const char *tls_authz;         /* authz object id, or NULL */
    BdObject *tls_authz_obj;       /* that object if it exists: in use too */
    uint32_t handshake_max_seconds;/* 0: no limit */
} BdNbdServerConfig;

/* Default of handshake-max-seconds (QEMU 9's NBD_DEFAULT_HANDSHAKE_MAX_SECS). */
#define BD_NBD_HANDSHAKE_MAX_SECONDS 10

/* Listen on 'addr', a unix or inet address.  The server takes its own
 * references to the credentials and their object.  Errors as QEMU's:
 * "NBD server already running". */
gboolean bd_nbd_server_start(const BdSocketAddress *addr,
                             const BdNbdServerConfig *cfg, GError **errp);
/* Closes the listener and every NBD export ("NBD server not running"). */
gboolean bd_nbd_server_stop(GError **errp);
gboolean bd_nbd_server_running(void);
/* Main thread.  The NBD URI (libnbd's syntax) at which a client on this
 * host reaches 'export_name' on the running server, or NULL when no
 * server listens.  Free with g_free(). */
char *bd_nbd_server_uri(const char *export_name);

/* Why handshakes ended without transmission (the metrics endpoint).
 * The reason is the last refusal the client got before it went. */
typedef enum {
    BD_NBD_HS_FAIL_DISCONNECTED,     /* hung up, nothing refused */
    BD_NBD_HS_FAIL_PROTOCOL,         /* bad magic, flags, option */
    BD_NBD_HS_FAIL_EXPORT_NOT_FOUND, /* asked for an unknown export */
    BD_NBD_HS_FAIL_TLS_REQUIRED,     /* options before STARTTLS */
    BD_NBD_HS_FAIL_TLS,              /* TLS handshake or authz failed */
    BD_NBD_HS_FAIL_TIMEOUT,          /* handshake-max-seconds passed */
    BD_NBD_HS_FAIL_ABORTED,          /* NBD_OPT_ABORT: not counted */
    BD_NBD_HS_FAIL__MAX,
} BdNbdHandshakeFailure;
extern const char *const bd_nbd_handshake_failure_names[];
/* Handshakes that failed for 'reason' since the daemon started.  Any
 * thread. */
guint64 bd_nbd_handshake_failures(BdNbdHandshakeFailure reason);
/* Of those, the ones of clients that had named 'exp' (an NBD export that
 * existed then) in NBD_OPT_EXPORT_NAME, INFO or GO: the same reasons but
 * export-not-found.  Any thread. */
struct BdExport;
guint64 bd_nbd_export_handshake_failures(struct BdExport *exp,
                                         BdNbdHandshakeFailure reason);

/* One client in transmission, for x-query-nbd-clients. */
typedef struct {
    char *export_name;
    char *export_id;      /* the export's block-export-add id */
    char *address;        /* "host:port", or "unix socket client" */
    guint64 id;           /* connection number: unique while running */
    guint64 requests;     /* requests the export counted for it */
    gboolean tls;
    char *tls_identity;   /* certificate DN or PSK username, or NULL */
    guint64 bytes_read;   /* payload the client read from the export */
    guint64 bytes_written;
} BdNbdClientInfo;
void bd_nbd_client_info_free(BdNbdClientInfo *info);
/* Main thread.  The connected clients (BdNbdClientInfo), oldest first. */
GPtrArray *bd_nbd_server_query_clients(void);

/* Payload bytes all clients of an NBD export have read so far, those
 * gone included (0 for an export of another type).  Any thread. */
guint64 bd_nbd_export_bytes_read(BdExport *exp);

/* The "nbd" export type for export/export.h. */
extern const BdExportDriver bd_nbd_export_driver;

#endif
