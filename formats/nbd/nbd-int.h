/* SPDX-License-Identifier: MIT */
/* The nbd driver's parts: the client (connections to one export, their
 * I/O threads and reconnection), the socket it connects, TLS, and the
 * filename syntaxes.  Internal to formats/nbd/. */
#ifndef BD_FORMATS_NBD_INT_H
#define BD_FORMATS_NBD_INT_H

#include <glib.h>
#include <stdint.h>
#include <libnbd.h>

#include "crypto/tls.h"
#include "graph/lock.h"
#include "graph/socket-address.h"

/* QEMU's NBD_MAX_BUFFER_SIZE: the largest request when the server
 * states no maximum block size. */
#define NBD_CLIENT_MAX_REQUEST (32u << 20)
/* Connections opened to a server that advertises multi-conn. */
#define NBD_CLIENT_MULTI_CONN 4

/* Where and how to connect (what BlockdevOptionsNbd says). */
typedef struct {
    BdSocketAddressType type;   /* inet or unix */
    char *host, *port;          /* inet */
    char *path;                 /* unix */
    char *export_name;          /* NULL: the default export "" */
    char *bitmap_context;       /* x-dirty-bitmap, or NULL */
    BdTlsCreds *tls;            /* client credentials, or NULL */
    char *tls_hostname;         /* NULL: the inet host */
    uint32_t reconnect_delay;   /* seconds; 0: fail at once */
    uint32_t open_timeout;      /* seconds; 0: one attempt */
} NbdConfig;

void nbd_config_clear(NbdConfig *cfg);

/* What the server said in the handshake, equal on every connection. */
typedef struct {
    uint64_t size;
    gboolean read_only, can_flush, can_fua, can_trim, can_zero,
             can_fast_zero, can_multi_conn, can_cache;
    gboolean has_allocation;    /* base:allocation negotiated */
    uint32_t min_block, max_block;
} NbdInfo;

typedef struct NbdClient NbdClient;

/* Connect (with the open-timeout retries) and negotiate: the client, or
 * NULL with QEMU's messages ("Failed to connect to '...': ...").  Main
 * thread.  'cfg' is taken over.  When the server advertises multi-conn
 * (a flush on one connection covers writes completed on any), more
 * connections are opened, for readers and writers alike. */
NbdClient *nbd_client_open(NbdConfig *cfg, GError **errp);
/* Stop the I/O threads and close every connection.  No request may be
 * in flight (the node is closing).  Main thread. */
void nbd_client_close(NbdClient *c);
const NbdInfo *nbd_client_info(NbdClient *c);
const NbdConfig *nbd_client_config(NbdClient *c);

/* Requests: any thread, many at once.  0 or -errno.  A request cut by
 * a lost connection is sent again once reconnected, for as long as
 * reconnect-delay allows; then it fails with -EIO. */
int nbd_client_pread(NbdClient *c, uint64_t offset, uint64_t bytes,
                     void *buf);
int nbd_client_pwrite(NbdClient *c, uint64_t offset, uint64_t bytes,
                      const void *buf, uint32_t nbd_flags);
int nbd_client_zero(NbdClient *c, uint64_t offset, uint64_t bytes,
                    uint32_t nbd_flags);
int nbd_client_trim(NbdClient *c, uint64_t offset, uint64_t bytes);
int nbd_client_flush(NbdClient *c);
/* The first extent at 'offset' (at most 'bytes') of the context block
 * status reads (x-dirty-bitmap's, else base:allocation): its length in
 * *pnum and NBD state flags in *flags. */
int nbd_client_block_status(NbdClient *c, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint32_t *flags);

/* --- socket.c --- */

/* A connected stream socket to the configured server, or -1 with QEMU's
 * messages.  Gives up at 'deadline' (monotonic time) or when *cancel
 * (may be NULL) is set.  Blocking; any thread. */
int nbd_socket_connect(const NbdConfig *cfg, gint64 deadline,
                       const gint *cancel, GError **errp);

/* --- tls.c --- */

/* On a connected socket 'fd' (taken over): the NBD greeting, the
 * NBD_OPT_STARTTLS option and the TLS handshake with the configured
 * credentials; then a relay thread carries the session's plaintext to
 * a socket pair.  Returns the pair's other end, on which libnbd goes on
 * with the option haggling as after a greeting (handshake flags
 * NBD_FLAG_FIXED_NEWSTYLE|NO_ZEROES already sent), or -1.  The relay
 * ends when either side closes.  The setup fails once 'deadline'
 * (monotonic) passes with the server silent. */
int nbd_tls_start(const NbdConfig *cfg, int fd, gint64 deadline,
                  GError **errp);

/* --- filename.c --- */

/* nbd://, nbd+unix://, nbd+tcp:// URIs and QEMU's legacy
 * nbd:unix:PATH[:exportname=E] / nbd:HOST:PORT[:exportname=E] syntax
 * into BlockdevOptionsNbd members (server, export), added to 'd'.
 * FALSE with QEMU's messages for a malformed one. */
gboolean nbd_filename_parse(const char *filename, GVariantDict *d,
                            GError **errp);
/* The node's filename as QEMU shows it: nbd+unix:///EXPORT?socket=PATH,
 * nbd://HOST:PORT/EXPORT. */
char *nbd_filename_of(const NbdConfig *cfg);

#endif
