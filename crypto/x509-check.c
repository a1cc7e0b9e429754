/* SPDX-License-Identifier: MIT */
/* Sanity checks of our own x509 certificates when credentials load, as
 * QEMU makes them (sanity-check=on): a certificate that is expired, not
 * yet valid, of the wrong kind or not signed by the CA fails object-add
 * with a clear message instead of every later handshake. */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "crypto/tls-internal.h"
#include "graph/error.h"

#define MAX_CA_CERTS 16

static const char *role(gboolean server, gboolean ca)
{
    return ca ? "CA" : server ? "server" : "client";
}

static gboolean check_times(gnutls_x509_crt_t cert, const char *file,
                            gboolean server, gboolean ca, GError **errp)
{
    time_t now = time(NULL);

    if (gnutls_x509_crt_get_expiration_time(cert) < now) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The %s certificate %s has expired", role(server, ca),
                    file);
        return FALSE;
    }
    if (gnutls_x509_crt_get_activation_time(cert) > now) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The %s certificate %s is not yet active",
                    role(server, ca), file);
        return FALSE;
    }
    return TRUE;
}

static gboolean check_constraints(gnutls_x509_crt_t cert, const char *file,
                                  gboolean server, gboolean ca,
                                  GError **errp)
{
    int status = gnutls_x509_crt_get_basic_constraints(cert, NULL, NULL,
                                                       NULL);

    if (status > 0 && !ca) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The certificate %s basic constraints show a CA, but "
                    "we need one for a %s", file, role(server, FALSE));
        return FALSE;
    }
    if (status == 0 && ca) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The certificate %s basic constraints do not show a CA",
                    file);
        return FALSE;
    }
    if (status == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
        if (ca) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "The certificate %s is missing basic constraints "
                        "for a CA", file);
            return FALSE;
        }
    } else if (status < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to query certificate %s basic constraints: %s",
                    file, gnutls_strerror(status));
        return FALSE;
    }
    return TRUE;
}

/* Only a critical key usage extension that lacks a needed bit is an
 * error. */
static gboolean check_usage(gnutls_x509_crt_t cert, const char *file,
                            gboolean ca, GError **errp)
{
    unsigned int usage = 0, critical = 0;
    int status = gnutls_x509_crt_get_key_usage(cert, &usage, &critical);
    const char *missing = NULL;

    if (status == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
        return TRUE;
    }
    if (status < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to query certificate %s key usage: %s", file,
                    gnutls_strerror(status));
        return FALSE;
    }
    if (!critical) {
        return TRUE;
    }
    /* Key encipherment is not asked for: ECDSA keys cannot have it and
     * (EC)DHE key exchange does not use it; qemu-storage-daemon 7.2
     * accepts such certificates too. */
    if (ca && !(usage & GNUTLS_KEY_KEY_CERT_SIGN)) {
        missing = "certificate signing";
    } else if (!ca && !(usage & GNUTLS_KEY_DIGITAL_SIGNATURE)) {
        missing = "digital signature";
    }
    if (missing) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Certificate %s usage does not permit %s", file,
                    missing);
        return FALSE;
    }
    return TRUE;
}

/* A critical extended key usage must allow our end of the connection. */
static gboolean check_purpose(gnutls_x509_crt_t cert, const char *file,
                              gboolean server, GError **errp)
{
    gboolean allow_server = FALSE, allow_client = FALSE, critical = FALSE;
    unsigned int i;

    for (i = 0;; i++) {
        char oid[128];
        size_t size = sizeof(oid);
        unsigned int crit = 0;
        int status = gnutls_x509_crt_get_key_purpose_oid(cert, i, oid,
                                                         &size, &crit);

        if (status == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
            if (i == 0) {
                return TRUE;       /* no extension: any use */
            }
            break;
        }
        if (status < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Unable to query certificate %s key purpose: %s",
                        file, gnutls_strerror(status));
            return FALSE;
        }
        critical |= crit != 0;
        if (g_str_equal(oid, GNUTLS_KP_TLS_WWW_SERVER)) {
            allow_server = TRUE;
        } else if (g_str_equal(oid, GNUTLS_KP_TLS_WWW_CLIENT)) {
            allow_client = TRUE;
        } else if (g_str_equal(oid, GNUTLS_KP_ANY)) {
            allow_server = allow_client = TRUE;
        }
    }
    if (critical && !(server ? allow_server : allow_client)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Certificate %s purpose does not allow use with a TLS "
                    "%s", file, role(server, FALSE));
        return FALSE;
    }
    return TRUE;
}

static gboolean check_cert(gnutls_x509_crt_t cert, const char *file,
                           gboolean server, gboolean ca, GError **errp)
{
    return check_times(cert, file, server, ca, errp) &&
           check_constraints(cert, file, server, ca, errp) &&
           check_usage(cert, file, ca, errp) &&
           (ca || check_purpose(cert, file, server, errp));
}

static gboolean check_pair(gnutls_x509_crt_t cert, const char *file,
                           gnutls_x509_crt_t *cas, unsigned int ncas,
                           const char *cafile, gboolean server,
                           GError **errp)
{
    unsigned int status = 0;
    const char *reason = "Invalid certificate";

    if (gnutls_x509_crt_list_verify(&cert, 1, cas, ncas, NULL, 0, 0,
                                    &status) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to verify %s certificate %s against CA "
                    "certificate %s", role(server, FALSE), file, cafile);
        return FALSE;
    }
    if (status == 0) {
        return TRUE;
    }
    if (status & GNUTLS_CERT_INVALID) {
        reason = "The certificate is not trusted";
    }
    if (status & GNUTLS_CERT_SIGNER_NOT_FOUND) {
        reason = "The certificate hasn't got a known issuer";
    }
    if (status & GNUTLS_CERT_REVOKED) {
        reason = "The certificate has been revoked";
    }
    if (status & GNUTLS_CERT_INSECURE_ALGORITHM) {
        reason = "The certificate uses an insecure algorithm";
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Our own certificate %s failed validation against %s: %s",
                file, cafile, reason);
    return FALSE;
}

static gboolean read_pem(const char *file, gnutls_datum_t *data,
                         char **buf, GError **errp)
{
    GError *gerr = NULL;

    if (!g_file_get_contents(file, buf, NULL, &gerr)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot load CA cert list %s: %s", file, gerr->message);
        g_error_free(gerr);
        return FALSE;
    }
    data->data = (unsigned char *)*buf;
    data->size = strlen(*buf);
    return TRUE;
}

gboolean bd_tls_x509_sanity_check(gboolean server, const char *cacert_file,
                                  const char *cert_file, GError **errp)
{
    gnutls_x509_crt_t cert = NULL;
    gnutls_x509_crt_t cas[MAX_CA_CERTS];
    unsigned int ncas = 0, i;
    gboolean ok = FALSE;
    g_autofree char *certbuf = NULL, *cabuf = NULL;
    gnutls_datum_t data;

    if (cert_file && access(cert_file, R_OK) == 0) {
        int ret;
        if (!read_pem(cert_file, &data, &certbuf, errp)) {
            return FALSE;
        }
        gnutls_x509_crt_init(&cert);
        ret = gnutls_x509_crt_import(cert, &data, GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Unable to import %s certificate %s: %s",
                        role(server, FALSE), cert_file,
                        gnutls_strerror(ret));
            goto out;
        }
    }
    if (access(cacert_file, R_OK) == 0) {
        ncas = MAX_CA_CERTS;
        if (!read_pem(cacert_file, &data, &cabuf, errp)) {
            ncas = 0;
            goto out;
        }
        if (gnutls_x509_crt_list_import(cas, &ncas, &data,
                                        GNUTLS_X509_FMT_PEM, 0) < 0) {
            ncas = 0;
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Unable to import CA certificate list %s",
                        cacert_file);
            goto out;
        }
    }
    if (cert && !check_cert(cert, cert_file, server, FALSE, errp)) {
        goto out;
    }
    for (i = 0; i < ncas; i++) {
        if (!check_cert(cas[i], cacert_file, server, TRUE, errp)) {
            goto out;
        }
    }
    if (cert && ncas &&
        !check_pair(cert, cert_file, cas, ncas, cacert_file, server, errp)) {
        goto out;
    }
    ok = TRUE;
out:
    if (cert) {
        gnutls_x509_crt_deinit(cert);
    }
    for (i = 0; i < ncas; i++) {
        gnutls_x509_crt_deinit(cas[i]);
    }
    return ok;
}
