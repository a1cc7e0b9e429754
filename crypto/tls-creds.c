/* SPDX-License-Identifier: MIT */
/* TLS credentials: the files of a tls-creds-* object's 'dir' loaded
 * into GnuTLS credentials once, with QEMU's names and errors.
 *
 * Thread model: made and freed on the main thread (object-add/del);
 * immutable in between, so connection threads share them (counted).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "crypto/tls-internal.h"
#include "graph/error.h"

const char *const bd_tls_endpoint_names[] = {
    [BD_TLS_ENDPOINT_CLIENT] = "client",
    [BD_TLS_ENDPOINT_SERVER] = "server",
    NULL };

/* The path of 'name' in the directory, or NULL: absent and not
 * required (errp untouched), or an error (errp set). */
static char *creds_path(const BdTlsCredsConfig *cfg, const char *name,
                        gboolean required, GError **errp)
{
    g_autofree char *path = NULL;
    struct stat sb;

    if (!cfg->dir) {
        if (required) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Missing 'dir' property value");
        }
        return NULL;
    }
    path = g_strdup_printf("%s/%s", cfg->dir, name);
    if (stat(path, &sb) < 0) {
        int err = errno;
        if (err != ENOENT || required) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Unable to access credentials %s: %s", path,
                        g_strerror(err));
        }
        return NULL;
    }
    return g_steal_pointer(&path);
}

/* creds_path for an optional file: FALSE only on a real error. */
static gboolean optional_path(const BdTlsCredsConfig *cfg, const char *name,
                              char **out, GError **errp)
{
    GError *err = NULL;

    *out = creds_path(cfg, name, FALSE, &err);
    if (err) {
        g_propagate_error(errp, err);
        return FALSE;
    }
    return TRUE;
}

/* The server's Diffie-Hellman group: dh-params.pem when given, else
 * GnuTLS's well-known group (QEMU generates one, which takes seconds;
 * a known safe group is as strong and instant). */
static gboolean load_dh_params(BdTlsCreds *c, const char *file,
                               GError **errp)
{
    g_autofree char *contents = NULL;
    gsize len;
    GError *gerr = NULL;
    gnutls_datum_t data;
    int ret;

    if (!file) {
        return TRUE;
    }
    if (!g_file_get_contents(file, &contents, &len, &gerr)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s", gerr->message);
        g_error_free(gerr);
        return FALSE;
    }
    ret = gnutls_dh_params_init(&c->dh_params);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to initialize DH parameters: %s",
                    gnutls_strerror(ret));
        return FALSE;
    }
    data.data = (unsigned char *)contents;
    data.size = len;
    ret = gnutls_dh_params_import_pkcs3(c->dh_params, &data,
                                        GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        gnutls_dh_params_deinit(c->dh_params);
        c->dh_params = NULL;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to load DH parameters from %s: %s", file,
                    gnutls_strerror(ret));
        return FALSE;
    }
    return TRUE;
}

/* --- x509 --- */

static gboolean load_x509(BdTlsCreds *c, const BdTlsCredsConfig *cfg,
                          GError **errp)
{
    gboolean server = cfg->endpoint == BD_TLS_ENDPOINT_SERVER;
    g_autofree char *cacert = NULL, *cacrl = NULL, *cert = NULL;
    g_autofree char *key = NULL, *dh = NULL;
    int ret;

    if (!(cacert = creds_path(cfg, "ca-cert.pem", TRUE, errp))) {
        return FALSE;
    }
    if (server) {
        if (!optional_path(cfg, "ca-crl.pem", &cacrl, errp) ||
            !(cert = creds_path(cfg, "server-cert.pem", TRUE, errp)) ||
            !(key = creds_path(cfg, "server-key.pem", TRUE, errp)) ||
            !optional_path(cfg, "dh-params.pem", &dh, errp)) {
            return FALSE;
        }
    } else if (!optional_path(cfg, "client-cert.pem", &cert, errp) ||
               !optional_path(cfg, "client-key.pem", &key, errp)) {
        return FALSE;
    }
    if (cfg->sanity_check &&
        !bd_tls_x509_sanity_check(server, cacert, cert, errp)) {
        return FALSE;
    }

    ret = gnutls_certificate_allocate_credentials(&c->x509);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot allocate credentials: '%s'",
                    gnutls_strerror(ret));
        return FALSE;
    }
    ret = gnutls_certificate_set_x509_trust_file(c->x509, cacert,
                                                 GNUTLS_X509_FMT_PEM);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot load CA certificate '%s': %s", cacert,
                    gnutls_strerror(ret));
        return FALSE;
    }
    if (cert && key) {
        ret = gnutls_certificate_set_x509_key_file2(
            c->x509, cert, key, GNUTLS_X509_FMT_PEM, cfg->key_password, 0);
        if (ret < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot load certificate '%s' & key '%s': %s",
                        cert, key, gnutls_strerror(ret));
            return FALSE;
        }
    }
    if (cacrl) {
        ret = gnutls_certificate_set_x509_crl_file(c->x509, cacrl,
                                                   GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot load CRL '%s': %s", cacrl,
                        gnutls_strerror(ret));
            return FALSE;
        }
    }
    if (server) {
        if (!load_dh_params(c, dh, errp)) {
            return FALSE;
        }
        if (c->dh_params) {
            gnutls_certificate_set_dh_params(c->x509, c->dh_params);
        } else {
            gnutls_certificate_set_known_dh_params(c->x509,
                                                   GNUTLS_SEC_PARAM_MEDIUM);
        }
    }
    return TRUE;
}

/* --- PSK --- */

/* The hex key of 'username' in a keys.psk file (username:hexkey). */
static char *psk_lookup_key(const char *file, const char *username,
                            GError **errp)
{
    g_autofree char *contents = NULL;
    g_auto(GStrv) lines = NULL;
    size_t ulen = strlen(username);
    GError *gerr = NULL;

    if (!g_file_get_contents(file, &contents, NULL, &gerr)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot read PSK file %s: %s", file, gerr->message);
        g_error_free(gerr);
        return NULL;
    }
    lines = g_strsplit(contents, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (strncmp(*l, username, ulen) == 0 && (*l)[ulen] == ':') {
            return g_strstrip(g_strdup(*l + ulen + 1));
        }
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Username %s not found in PSK file %s", username, file);
    return NULL;
}

static gboolean load_psk(BdTlsCreds *c, const BdTlsCredsConfig *cfg,
                         GError **errp)
{
    g_autofree char *pskfile = NULL, *dh = NULL, *hexkey = NULL;
    gnutls_datum_t key;
    int ret;

    if (cfg->endpoint == BD_TLS_ENDPOINT_SERVER) {
        if (cfg->username) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "username should not be set when endpoint=server");
            return FALSE;
        }
        if (!optional_path(cfg, "dh-params.pem", &dh, errp) ||
            !(pskfile = creds_path(cfg, "keys.psk", TRUE, errp))) {
            return FALSE;
        }
        ret = gnutls_psk_allocate_server_credentials(&c->psk_server);
        if (ret < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot allocate credentials: %s",
                        gnutls_strerror(ret));
            return FALSE;
        }
        if (!load_dh_params(c, dh, errp)) {
            return FALSE;
        }
        ret = gnutls_psk_set_server_credentials_file(c->psk_server, pskfile);
        if (ret < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot read PSK file %s: %s", pskfile,
                        gnutls_strerror(ret));
            return FALSE;
        }
        if (c->dh_params) {
            gnutls_psk_set_server_dh_params(c->psk_server, c->dh_params);
        } else {
            gnutls_psk_set_server_known_dh_params(c->psk_server,
                                                  GNUTLS_SEC_PARAM_MEDIUM);
        }
        return TRUE;
    }

    if (!(pskfile = creds_path(cfg, "keys.psk", TRUE, errp))) {
        return FALSE;
    }
    c->username = g_strdup(cfg->username ? cfg->username : "qemu");
    if (!(hexkey = psk_lookup_key(pskfile, c->username, errp))) {
        return FALSE;
    }
    ret = gnutls_psk_allocate_client_credentials(&c->psk_client);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot allocate credentials: %s", gnutls_strerror(ret));
        return FALSE;
    }
    key.data = (unsigned char *)hexkey;
    key.size = strlen(hexkey);
    ret = gnutls_psk_set_client_credentials(c->psk_client, c->username,
                                            &key, GNUTLS_PSK_KEY_HEX);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot set PSK of %s from %s: %s", c->username,
                    pskfile, gnutls_strerror(ret));
        return FALSE;
    }
    return TRUE;
}

/* --- anonymous --- */

static gboolean load_anon(BdTlsCreds *c, const BdTlsCredsConfig *cfg,
                          GError **errp)
{
    g_autofree char *dh = NULL;
    int ret;

    if (cfg->endpoint == BD_TLS_ENDPOINT_CLIENT) {
        ret = gnutls_anon_allocate_client_credentials(&c->anon_client);
    } else {
        if (!optional_path(cfg, "dh-params.pem", &dh, errp)) {
            return FALSE;
        }
        ret = gnutls_anon_allocate_server_credentials(&c->anon_server);
    }
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot allocate credentials: %s", gnutls_strerror(ret));
        return FALSE;
    }
    if (c->anon_server) {
        if (!load_dh_params(c, dh, errp)) {
            return FALSE;
        }
        if (c->dh_params) {
            gnutls_anon_set_server_dh_params(c->anon_server, c->dh_params);
        } else {
            gnutls_anon_set_server_known_dh_params(c->anon_server,
                                                   GNUTLS_SEC_PARAM_MEDIUM);
        }
    }
    return TRUE;
}

/* --- the credentials --- */

BdTlsCreds *bd_tls_creds_new(const BdTlsCredsConfig *cfg, GError **errp)
{
    g_autoptr(BdTlsCreds) c = g_new0(BdTlsCreds, 1);
    gboolean ok = FALSE;

    c->refcount = 1;
    c->kind = cfg->kind;
    c->endpoint = cfg->endpoint;
    c->verify_peer = cfg->verify_peer;
    c->priority = g_strdup(cfg->priority);
    c->dir = g_strdup(cfg->dir);
    c->key_password = cfg->key_password != NULL;
    switch (cfg->kind) {
    case BD_TLS_CREDS_X509:
        ok = load_x509(c, cfg, errp);
        break;
    case BD_TLS_CREDS_PSK:
        ok = load_psk(c, cfg, errp);
        break;
    case BD_TLS_CREDS_ANON:
        ok = load_anon(c, cfg, errp);
        break;
    }
    return ok ? g_steal_pointer(&c) : NULL;
}

BdTlsCreds *bd_tls_creds_ref(BdTlsCreds *c)
{
    g_atomic_int_inc(&c->refcount);
    return c;
}

void bd_tls_creds_unref(BdTlsCreds *c)
{
    if (!c || !g_atomic_int_dec_and_test(&c->refcount)) {
        return;
    }
    if (c->x509) {
        gnutls_certificate_free_credentials(c->x509);
    }
    if (c->psk_server) {
        gnutls_psk_free_server_credentials(c->psk_server);
    }
    if (c->psk_client) {
        gnutls_psk_free_client_credentials(c->psk_client);
    }
    if (c->anon_server) {
        gnutls_anon_free_server_credentials(c->anon_server);
    }
    if (c->anon_client) {
        gnutls_anon_free_client_credentials(c->anon_client);
    }
    if (c->dh_params) {
        gnutls_dh_params_deinit(c->dh_params);
    }
    g_free(c->priority);
    g_free(c->dir);
    g_free(c->username);
    g_free(c);
}

BdTlsEndpoint bd_tls_creds_endpoint(const BdTlsCreds *c)
{
    return c->endpoint;
}

BdTlsCredsKind bd_tls_creds_kind(const BdTlsCreds *c)
{
    return c->kind;
}

const char *bd_tls_creds_dir(const BdTlsCreds *c)
{
    return c->dir;
}

gboolean bd_tls_creds_verify_peer(const BdTlsCreds *c)
{
    return c->verify_peer;
}

gboolean bd_tls_creds_key_encrypted(const BdTlsCreds *c)
{
    return c->key_password;
}
