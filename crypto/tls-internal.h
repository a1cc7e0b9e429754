/* SPDX-License-Identifier: MIT */
/* Private to crypto/: what credentials hold, shared by the files that
 * load them and the sessions that use them. */
#ifndef BD_CRYPTO_TLS_INTERNAL_H
#define BD_CRYPTO_TLS_INTERNAL_H

#include <gnutls/gnutls.h>

#include "crypto/tls.h"

struct BdTlsCreds {
    gint refcount;                         /* atomic */
    BdTlsCredsKind kind;
    BdTlsEndpoint endpoint;
    gboolean verify_peer;
    char *priority;                        /* NULL: the default */
    char *dir;                             /* the object's 'dir', or NULL */
    gboolean key_password;                 /* the x509 key is encrypted */
    char *username;                        /* PSK client end */
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_anon_server_credentials_t anon_server;
    gnutls_anon_client_credentials_t anon_client;
    gnutls_dh_params_t dh_params;          /* from dh-params.pem, or NULL */
};

/* x509-check.c: QEMU's checks of our own certificates before use
 * (dates, CA constraints, key usage and purpose, cert signed by the
 * CA).  'cert' may be NULL (a client without a certificate). */
gboolean bd_tls_x509_sanity_check(gboolean server, const char *cacert_file,
                                  const char *cert_file, GError **errp);

#endif
