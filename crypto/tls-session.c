/* SPDX-License-Identifier: MIT */
/* TLS sessions over a connected socket: the handshake, the peer's
 * credentials checked as QEMU checks them, and record I/O.
 *
 * Thread model: the handshake runs on one thread; afterwards one thread
 * at a time receives and one at a time sends, which GnuTLS allows in
 * parallel.  The socket goes to GnuTLS as a plain fd (not through
 * callbacks) so that GnuTLS can hand the record layer to the kernel
 * (kTLS) where the system configuration enables it.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <stdint.h>

#include <gnutls/socket.h>
#include <gnutls/x509.h>

#include "crypto/tls-internal.h"
#include "graph/error.h"

/* QEMU's default priority, and what anonymous and PSK sessions add. */
#define TLS_PRIORITY_DEFAULT "NORMAL"
#define TLS_PRIORITY_ANON    "+ANON-ECDH:+ANON-DH"
#define TLS_PRIORITY_PSK     "+ECDHE-PSK:+DHE-PSK:+PSK"

struct BdTlsSession {
    BdTlsCreds *creds;
    gnutls_session_t handle;
    char *hostname;
    char *identity;
};

static gboolean set_priority(BdTlsSession *s, GError **errp)
{
    const char *base = s->creds->priority ? s->creds->priority
                                          : TLS_PRIORITY_DEFAULT;
    g_autofree char *prio = NULL;
    const char *err_pos = NULL;
    int ret;

    switch (s->creds->kind) {
    case BD_TLS_CREDS_ANON:
        prio = g_strdup_printf("%s:%s", base, TLS_PRIORITY_ANON);
        break;
    case BD_TLS_CREDS_PSK:
        prio = g_strdup_printf("%s:%s", base, TLS_PRIORITY_PSK);
        break;
    case BD_TLS_CREDS_X509:
        prio = g_strdup(base);
        break;
    }
    ret = gnutls_priority_set_direct(s->handle, prio, &err_pos);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to set TLS session priority %s: %s", prio,
                    gnutls_strerror(ret));
        return FALSE;
    }
    return TRUE;
}

static gboolean set_credentials(BdTlsSession *s, GError **errp)
{
    BdTlsCreds *c = s->creds;
    int ret = 0;

    switch (c->kind) {
    case BD_TLS_CREDS_ANON:
        ret = gnutls_credentials_set(s->handle, GNUTLS_CRD_ANON,
                                     c->anon_server ? (void *)c->anon_server
                                                    : (void *)c->anon_client);
        break;
    case BD_TLS_CREDS_PSK:
        ret = gnutls_credentials_set(s->handle, GNUTLS_CRD_PSK,
                                     c->psk_server ? (void *)c->psk_server
                                                   : (void *)c->psk_client);
        break;
    case BD_TLS_CREDS_X509:
        ret = gnutls_credentials_set(s->handle, GNUTLS_CRD_CERTIFICATE,
                                     c->x509);
        /* Ask for the client's certificate; the check after the
         * handshake decides whether it was required. */
        if (ret >= 0 && c->endpoint == BD_TLS_ENDPOINT_SERVER) {
            gnutls_certificate_server_set_request(s->handle,
                                                  GNUTLS_CERT_REQUEST);
        }
        break;
    }
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot set session credentials: %s",
                    gnutls_strerror(ret));
        return FALSE;
    }
    return TRUE;
}

BdTlsSession *bd_tls_session_new(BdTlsCreds *creds, int fd,
                                 const char *hostname, GError **errp)
{
    g_autoptr(BdTlsSession) s = g_new0(BdTlsSession, 1);
    gboolean server = creds->endpoint == BD_TLS_ENDPOINT_SERVER;
    int ret;

    s->creds = bd_tls_creds_ref(creds);
    s->hostname = g_strdup(hostname);
    ret = gnutls_init(&s->handle, server ? GNUTLS_SERVER : GNUTLS_CLIENT);
    if (ret < 0) {
        s->handle = NULL;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot initialize TLS session: %s",
                    gnutls_strerror(ret));
        return NULL;
    }
    if (!set_priority(s, errp) || !set_credentials(s, errp)) {
        return NULL;
    }
    if (!server && hostname) {
        gnutls_server_name_set(s->handle, GNUTLS_NAME_DNS, hostname,
                               strlen(hostname));
    }
    gnutls_transport_set_int(s->handle, fd);
    return g_steal_pointer(&s);
}

void bd_tls_session_free(BdTlsSession *s)
{
    if (!s) {
        return;
    }
    if (s->handle) {
        gnutls_deinit(s->handle);
    }
    bd_tls_creds_unref(s->creds);
    g_free(s->hostname);
    g_free(s->identity);
    g_free(s);
}

/* --- checking the peer --- */

static const char *verify_reason(unsigned int status)
{
    if (status & GNUTLS_CERT_INSECURE_ALGORITHM) {
        return "The certificate uses an insecure algorithm";
    }
    if (status & GNUTLS_CERT_REVOKED) {
        return "The certificate has been revoked";
    }
    if (status & GNUTLS_CERT_SIGNER_NOT_FOUND) {
        return "The certificate hasn't got a known issuer";
    }
    if (status & GNUTLS_CERT_INVALID) {
        return "The certificate is not trusted";
    }
    return "Invalid certificate";
}

/* verify-peer on an x509 session: a certificate signed by our CA, in
 * its validity period, for the expected host; its DN is the identity. */
static gboolean check_certificate(BdTlsSession *s, GError **errp)
{
    const gnutls_datum_t *certs;
    unsigned int ncerts = 0, status = 0;
    gnutls_x509_crt_t cert = NULL;
    time_t now = time(NULL);
    size_t dnlen = 0;
    gboolean ok = FALSE;
    int ret;

    ret = gnutls_certificate_verify_peers2(s->handle, &status);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Verify failed: %s",
                    gnutls_strerror(ret));
        return FALSE;
    }
    certs = gnutls_certificate_get_peers(s->handle, &ncerts);
    if (!certs || ncerts == 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "No certificate peers");
        return FALSE;
    }
    if (status != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s",
                    verify_reason(status));
        return FALSE;
    }
    if (gnutls_x509_crt_init(&cert) < 0 ||
        gnutls_x509_crt_import(cert, &certs[0], GNUTLS_X509_FMT_DER) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot import certificate");
        goto out;
    }
    if (gnutls_x509_crt_get_expiration_time(cert) < now) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The certificate has expired");
        goto out;
    }
    if (gnutls_x509_crt_get_activation_time(cert) > now) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The certificate is not yet activated");
        goto out;
    }
    ret = gnutls_x509_crt_get_dn(cert, NULL, &dnlen);
    if (ret != GNUTLS_E_SHORT_MEMORY_BUFFER) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot get client distinguished name: %s",
                    gnutls_strerror(ret));
        goto out;
    }
    s->identity = g_malloc0(dnlen + 1);
    ret = gnutls_x509_crt_get_dn(cert, s->identity, &dnlen);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot get client distinguished name: %s",
                    gnutls_strerror(ret));
        goto out;
    }
    if (s->hostname && !gnutls_x509_crt_check_hostname(cert, s->hostname)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Certificate does not match the hostname %s",
                    s->hostname);
        goto out;
    }
    if (!s->hostname && s->creds->endpoint == BD_TLS_ENDPOINT_CLIENT) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "No hostname for certificate validation");
        goto out;
    }
    ok = TRUE;
out:
    if (cert) {
        gnutls_x509_crt_deinit(cert);
    }
    return ok;
}

static gboolean check_peer(BdTlsSession *s, GError **errp)
{
    switch (s->creds->kind) {
    case BD_TLS_CREDS_ANON:
        return TRUE;
    case BD_TLS_CREDS_PSK:
        if (s->creds->endpoint == BD_TLS_ENDPOINT_SERVER) {
            const char *user = gnutls_psk_server_get_username(s->handle);
            s->identity = g_strdup(user);
        }
        return TRUE;
    case BD_TLS_CREDS_X509:
        return !s->creds->verify_peer || check_certificate(s, errp);
    }
    return FALSE;
}

gboolean bd_tls_session_handshake(BdTlsSession *s, GError **errp)
{
    int ret;

    do {
        ret = gnutls_handshake(s->handle);
    } while (ret < 0 && !gnutls_error_is_fatal(ret));
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "TLS handshake failed: %s", gnutls_strerror(ret));
        return FALSE;
    }
    return check_peer(s, errp);
}

const char *bd_tls_session_identity(BdTlsSession *s)
{
    return s->identity;
}

const char *bd_tls_session_kind_name(BdTlsSession *s)
{
    return s->creds->kind == BD_TLS_CREDS_PSK ? "PSK" : "x509";
}

gboolean bd_tls_session_ktls(BdTlsSession *s)
{
    return gnutls_transport_is_ktls_enabled(s->handle) == GNUTLS_KTLS_DUPLEX;
}

/* --- data --- */

ssize_t bd_tls_session_recv(BdTlsSession *s, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = gnutls_record_recv(s->handle, buf, len);

        if (n >= 0) {
            return n;
        }
        switch (n) {
        case GNUTLS_E_INTERRUPTED:
        case GNUTLS_E_AGAIN:
            continue;
        case GNUTLS_E_PREMATURE_TERMINATION:
            return -ECONNRESET;
        default:
            /* Including a renegotiation request: not offered. */
            g_debug("TLS receive: %s", gnutls_strerror((int)n));
            return -EIO;
        }
    }
}

/* The largest record payload TLS allows. */
#define TLS_RECORD_MAX 16384

static int send_all(BdTlsSession *s, const uint8_t *p, size_t left)
{
    while (left > 0) {
        ssize_t n = gnutls_record_send(s->handle, p, left);
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN) {
            continue;
        }
        if (n < 0) {
            return -EIO;
        }
        p += n;
        left -= n;
    }
    return 0;
}

static int uncork(BdTlsSession *s)
{
    int ret;

    do {
        ret = gnutls_record_uncork(s->handle, GNUTLS_RECORD_WAIT);
    } while (ret == GNUTLS_E_INTERRUPTED || ret == GNUTLS_E_AGAIN);
    return ret < 0 ? -EIO : 0;
}

/* Small pieces (a reply header, a short payload) are corked together
 * into as few records as the record size allows.  Of a large payload
 * only what completes the current record is copied into the cork
 * buffer; the rest goes from the caller's buffer, record by record,
 * without that copy. */
int bd_tls_session_sendv(BdTlsSession *s, const struct iovec *iov,
                         int iovcnt)
{
    size_t corked = 0;
    int i;

    gnutls_record_cork(s->handle);
    for (i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        size_t fill = MIN(len, TLS_RECORD_MAX - corked % TLS_RECORD_MAX);

        if (send_all(s, p, fill) < 0) {
            gnutls_record_uncork(s->handle, 0);
            return -EIO;
        }
        corked += fill;
        if (fill == len) {
            continue;
        }
        if (uncork(s) < 0 || send_all(s, p + fill, len - fill) < 0) {
            return -EIO;
        }
        corked = 0;
        gnutls_record_cork(s->handle);
    }
    return uncork(s);
}

void bd_tls_session_bye(BdTlsSession *s)
{
    gnutls_bye(s->handle, GNUTLS_SHUT_WR);
}
