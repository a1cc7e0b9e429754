/* SPDX-License-Identifier: MIT */
/* TLS for blockd's sockets, a thin layer over GnuTLS: credentials
 * (x509, PSK, anonymous) loaded once, and sessions over a connected
 * socket for either end.  No cryptography of our own.
 *
 * Thread model: credentials are immutable once made and reference
 * counted, so any thread may start sessions with them.  A session is
 * used by one connection: one thread may receive while another sends
 * (GnuTLS allows one of each at once); the callers serialise their
 * receivers and their senders.
 */
#ifndef BD_CRYPTO_TLS_H
#define BD_CRYPTO_TLS_H

#include <sys/uio.h>

#include <glib.h>

/* QCryptoTLSCredsEndpoint, in QAPI order. */
typedef enum {
    BD_TLS_ENDPOINT_CLIENT,
    BD_TLS_ENDPOINT_SERVER,
} BdTlsEndpoint;
extern const char *const bd_tls_endpoint_names[];   /* NULL-terminated */

typedef enum {
    BD_TLS_CREDS_ANON,
    BD_TLS_CREDS_PSK,
    BD_TLS_CREDS_X509,
} BdTlsCredsKind;

/* What the tls-creds-* objects hold (strings borrowed for the call). */
typedef struct {
    BdTlsCredsKind kind;
    BdTlsEndpoint endpoint;
    const char *dir;            /* NULL: none given */
    gboolean verify_peer;
    const char *priority;       /* GnuTLS priority string, NULL: default */
    gboolean sanity_check;      /* x509: check our own certificates */
    const char *key_password;   /* x509: of an encrypted key, or NULL */
    const char *username;       /* psk, client end: NULL means "qemu" */
} BdTlsCredsConfig;

typedef struct BdTlsCreds BdTlsCreds;

/* Load the files of 'cfg->dir' as QEMU names them (ca-cert.pem,
 * server-cert.pem, server-key.pem, client-*.pem, ca-crl.pem,
 * dh-params.pem, keys.psk), with QEMU's errors. */
BdTlsCreds *bd_tls_creds_new(const BdTlsCredsConfig *cfg, GError **errp);
BdTlsCreds *bd_tls_creds_ref(BdTlsCreds *creds);
void bd_tls_creds_unref(BdTlsCreds *creds);
BdTlsEndpoint bd_tls_creds_endpoint(const BdTlsCreds *creds);
/* What the credentials were made from, for a server that loads the
 * files itself (the metrics endpoint's GIO TLS): the kind, the 'dir'
 * (NULL when none was given), verify-peer, and whether the x509 key
 * needs its password. */
BdTlsCredsKind bd_tls_creds_kind(const BdTlsCreds *creds);
const char *bd_tls_creds_dir(const BdTlsCreds *creds);
gboolean bd_tls_creds_verify_peer(const BdTlsCreds *creds);
gboolean bd_tls_creds_key_encrypted(const BdTlsCreds *creds);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdTlsCreds, bd_tls_creds_unref)

typedef struct BdTlsSession BdTlsSession;

/* A session of the credentials' endpoint over the connected socket
 * 'fd' (not owned; blocking).  'hostname': client end, the name the
 * server's certificate must carry (NULL for none). */
BdTlsSession *bd_tls_session_new(BdTlsCreds *creds, int fd,
                                 const char *hostname, GError **errp);
void bd_tls_session_free(BdTlsSession *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdTlsSession, bd_tls_session_free)

/* Run the handshake to its end, then check the peer as the credentials
 * say (verify-peer: the certificate chain, dates, hostname) and record
 * its identity.  FALSE with a message for the log on any failure. */
gboolean bd_tls_session_handshake(BdTlsSession *s, GError **errp);
/* The peer's identity after the handshake: the distinguished name of
 * its certificate, or the PSK username; NULL when it has none. */
const char *bd_tls_session_identity(BdTlsSession *s);
/* "x509" or "PSK", for authz messages as QEMU's. */
const char *bd_tls_session_kind_name(BdTlsSession *s);
/* TRUE when the kernel does the record layer both ways (kTLS). */
gboolean bd_tls_session_ktls(BdTlsSession *s);

/* Data.  recv: bytes read (> 0), 0 at a clean end of the stream, or
 * -errno (-EIO for TLS errors; -ECONNRESET when the peer went without
 * a close_notify).  sendv: 0 once everything went out, or -errno. */
ssize_t bd_tls_session_recv(BdTlsSession *s, void *buf, size_t len);
int bd_tls_session_sendv(BdTlsSession *s, const struct iovec *iov,
                         int iovcnt);
/* Tell the peer we are done writing (close_notify); errors ignored. */
void bd_tls_session_bye(BdTlsSession *s);

#endif
