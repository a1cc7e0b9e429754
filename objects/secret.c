/* SPDX-License-Identifier: MIT */
/* The 'secret' object (QEMU's crypto/secret.c): bytes given inline
 * ('data') or read from a file ('file') once at creation, optionally
 * base64 ('format') and optionally AES-256-CBC encrypted with the key
 * of another secret ('keyid', 'iv').
 *
 *   data | file --> [keyid: base64?, decrypt with secret keyid, unpad]
 *               --> [else base64: decode] --> the secret's bytes
 *
 * Buffers that held secret bytes are wiped before they are freed.
 *
 * Thread model: created on the main thread; immutable afterwards, so
 * lookups read it from any thread under the reference the registry
 * gives them.
 */
#define G_LOG_DOMAIN "blockd-objects"

#include <string.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include "graph/error.h"
#include "graph/main-thread.h"
#include "objects/secret.h"

/* Every object type of this kind starts with a BdSecret. */
#define SECRET_KIND "secret"

#define SECRET_KEY_LEN 32        /* AES-256 */
#define SECRET_IV_LEN 16
#define SECRET_BLOCK_LEN 16

typedef struct {
    BdObject parent;
    guint8 *data;                /* NUL-terminated (not counted in len) */
    gsize len;
} BdSecret;

/* --- properties (qapi/crypto.json: SecretProperties) --- */

/* QCryptoSecretFormat, in QAPI order. */
typedef enum {
    SECRET_FORMAT_RAW,
    SECRET_FORMAT_BASE64,
} SecretFormat;

typedef struct {
    gboolean loaded;
    gboolean has_loaded;
    int format;                  /* SecretFormat */
    const char *keyid;
    const char *iv;
    const char *data;
    const char *file;
} SecretProps;

static const char *const format_values[] = {
    [SECRET_FORMAT_RAW] = "raw",
    [SECRET_FORMAT_BASE64] = "base64",
    NULL };
static const BdSchemaType format_type = {
    .name = "QCryptoSecretFormat", .kind = BD_SCHEMA_ENUM,
    .enum_values = format_values };

/* SecretCommonProperties, then SecretProperties' own members. */
static const BdSchemaField secret_fields[] = {
    { "loaded", &bd_schema_bool, TRUE, BD_AT(SecretProps, loaded),
      BD_HAS(SecretProps, loaded) },
    { "format", &format_type, TRUE, BD_AT(SecretProps, format),
      .def.i = SECRET_FORMAT_RAW },
    { "keyid", &bd_schema_str, TRUE, BD_AT(SecretProps, keyid) },
    { "iv", &bd_schema_str, TRUE, BD_AT(SecretProps, iv) },
    { "data", &bd_schema_str, TRUE, BD_AT(SecretProps, data) },
    { "file", &bd_schema_str, TRUE, BD_AT(SecretProps, file) },
    { NULL } };
static const BdSchemaType secret_props_type = {
    .name = "SecretProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = secret_fields };

/* --- buffers that are wiped --- */

typedef struct {
    guint8 *p;
    gsize len;
} SecretBuf;

static void secret_buf_clear(SecretBuf *b)
{
    if (b->p) {
        explicit_bzero(b->p, b->len);
        g_free(b->p);
    }
    b->p = NULL;
    b->len = 0;
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(SecretBuf, secret_buf_clear)

static void secret_buf_free(SecretBuf *b)
{
    secret_buf_clear(b);
    g_free(b);
}

/* A copy of 'len' bytes, NUL-terminated as QEMU's lookups are. */
static void secret_buf_set(SecretBuf *b, const void *data, gsize len)
{
    secret_buf_clear(b);
    b->p = g_malloc(len + 1);
    if (len) {
        memcpy(b->p, data, len);
    }
    b->p[len] = 0;
    b->len = len;
}

/* QEMU's qbase64_decode() for 'len' bytes at 'in' (NUL-terminated):
 * only base64 characters and newlines, then GLib's lenient decoder. */
static gboolean base64_decode(const guint8 *in, gsize len, SecretBuf *out,
                              GError **errp)
{
    static const char valid[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n";
    gsize n;

    if (memchr(in, 0, len)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Base64 data contains embedded NUL characters");
        return FALSE;
    }
    if (strspn((const char *)in, valid) != len) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Base64 data contains invalid characters");
        return FALSE;
    }
    secret_buf_clear(out);
    out->p = g_base64_decode((const char *)in, &n);
    out->len = n;
    return TRUE;
}

/* --- loading --- */

static gboolean secret_props_check(GVariant *props, GError **errp)
{
    SecretProps p = { 0 };

    bd_schema_decode(secret_fields, props, &p);
    if (p.has_loaded) {
        /* Read-only in QEMU 7.2 (and deprecated). */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property 'secret.loaded' is not writable");
        return FALSE;
    }
    return TRUE;
}

static gboolean secret_load(const SecretProps *p, SecretBuf *out,
                            GError **errp)
{
    if (p->file) {
        g_autoptr(GError) err = NULL;
        char *contents;
        gsize len;

        if (p->data) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "'file' and 'data' are mutually exclusive");
            return FALSE;
        }
        if (!g_file_get_contents(p->file, &contents, &len, &err)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Unable to read %s: %s", p->file, err->message);
            return FALSE;
        }
        secret_buf_clear(out);
        out->p = (guint8 *)contents;
        out->len = len;
        return TRUE;
    }
    if (p->data) {
        secret_buf_set(out, p->data, strlen(p->data));
        return TRUE;
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Either 'file' or 'data' must be provided");
    return FALSE;
}

static gboolean aes_cbc_decrypt(GBytes *key, const SecretBuf *iv,
                                const SecretBuf *in, SecretBuf *out,
                                GError **errp)
{
    gnutls_cipher_hd_t h;
    gsize keylen;
    gnutls_datum_t k, v = { iv->p, (unsigned)iv->len };
    int ret;

    k.data = (unsigned char *)g_bytes_get_data(key, &keylen);
    k.size = keylen;
    if (in->len % SECRET_BLOCK_LEN) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Length %zu must be a multiple of block size %d",
                    in->len, SECRET_BLOCK_LEN);
        return FALSE;
    }
    ret = gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC, &k, &v);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot initialize cipher: %s", gnutls_strerror(ret));
        return FALSE;
    }
    secret_buf_clear(out);
    out->p = g_malloc0(in->len + 1);
    out->len = in->len;
    ret = in->len ? gnutls_cipher_decrypt2(h, in->p, in->len, out->p,
                                           out->len) : 0;
    gnutls_cipher_deinit(h);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot decrypt data: %s", gnutls_strerror(ret));
        return FALSE;
    }
    return TRUE;
}

/* QEMU's qcrypto_secret_decrypt(): the key is secret 'keyid' (32
 * bytes), the IV base64 (16 bytes), the input base64 or raw; the
 * padding check is QEMU's (the last byte, at most one block). */
static gboolean secret_decrypt(const SecretProps *p, SecretBuf *data,
                               GError **errp)
{
    g_autoptr(GBytes) key = bd_secret_lookup(p->keyid, errp);
    g_auto(SecretBuf) iv = { 0 };
    g_auto(SecretBuf) cipher = { 0 };
    g_auto(SecretBuf) plain = { 0 };
    guint8 pad;

    if (!key) {
        return FALSE;
    }
    if (g_bytes_get_size(key) != SECRET_KEY_LEN) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Key should be 32 bytes in length");
        return FALSE;
    }
    if (!p->iv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "IV is required to decrypt secret");
        return FALSE;
    }
    if (!base64_decode((const guint8 *)p->iv, strlen(p->iv), &iv, errp)) {
        return FALSE;
    }
    if (iv.len != SECRET_IV_LEN) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "IV should be 16 bytes in length not %zu", iv.len);
        return FALSE;
    }
    if (p->format == SECRET_FORMAT_BASE64) {
        if (!base64_decode(data->p, data->len, &cipher, errp)) {
            return FALSE;
        }
    } else {
        secret_buf_set(&cipher, data->p, data->len);
    }
    if (!aes_cbc_decrypt(key, &iv, &cipher, &plain, errp)) {
        return FALSE;
    }
    /* QEMU reads the byte before an empty buffer here; an empty
     * ciphertext gives an empty secret there too. */
    pad = plain.len ? plain.p[plain.len - 1] : 0;
    if (pad > SECRET_BLOCK_LEN || pad > plain.len) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Incorrect number of padding bytes (%d) found on "
                    "decrypted data", pad);
        return FALSE;
    }
    plain.len -= pad;
    plain.p[plain.len] = 0;
    secret_buf_clear(data);
    *data = plain;
    plain = (SecretBuf){ 0 };
    return TRUE;
}

static BdObject *secret_create(const char *id, GVariant *props,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    SecretProps p = { 0 };
    g_auto(SecretBuf) data = { 0 };
    BdSecret *s;

    bd_schema_decode(secret_fields, props, &p);
    if (!secret_load(&p, &data, errp)) {
        return NULL;
    }
    if (p.keyid) {
        if (!secret_decrypt(&p, &data, errp)) {
            return NULL;
        }
    } else if (p.format == SECRET_FORMAT_BASE64) {
        g_auto(SecretBuf) raw = { 0 };

        if (!base64_decode(data.p, data.len, &raw, errp)) {
            return NULL;
        }
        secret_buf_set(&data, raw.p, raw.len);
    }

    s = g_new0(BdSecret, 1);
    bd_object_init(&s->parent, &bd_secret_type, id);
    /* NUL-terminated on every path above. */
    s->data = g_steal_pointer(&data.p);
    s->len = data.len;
    return &s->parent;
}

static void secret_free(BdObject *obj)
{
    BdSecret *s = (BdSecret *)obj;
    SecretBuf b = { s->data, s->len };

    secret_buf_clear(&b);
    bd_object_finalize(obj);
    g_free(s);
}

static const char *const secret_kinds[] = { SECRET_KIND, NULL };

const BdObjectType bd_secret_type = {
    .name = "secret",
    .props = &secret_props_type,
    .kinds = secret_kinds,
    .check = secret_props_check,
    .create = secret_create,
    .free = secret_free,
};

/* --- lookups --- */

GBytes *bd_secret_lookup(const char *id, GError **errp)
{
    g_autoptr(BdObject) obj = bd_object_find(id);
    SecretBuf *copy;
    BdSecret *s;

    if (!obj) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "No secret with id '%s'", id);
        return NULL;
    }
    if (!bd_object_is_kind(obj, SECRET_KIND)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Object with id '%s' is not a secret", id);
        return NULL;
    }
    s = (BdSecret *)obj;
    copy = g_new0(SecretBuf, 1);
    secret_buf_set(copy, s->data, s->len);
    return g_bytes_new_with_free_func(copy->p, copy->len,
                                      (GDestroyNotify)secret_buf_free, copy);
}

char *bd_secret_lookup_as_utf8(const char *id, GError **errp)
{
    g_autoptr(GBytes) b = bd_secret_lookup(id, errp);
    gsize len;
    const char *data;

    if (!b) {
        return NULL;
    }
    data = g_bytes_get_data(b, &len);
    if (!g_utf8_validate(data, len, NULL)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Data from secret %s is not valid UTF-8", id);
        return NULL;
    }
    return g_strndup(data, len);
}
