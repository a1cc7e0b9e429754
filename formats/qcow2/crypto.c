/* SPDX-License-Identifier: MIT */
/* qcow2 encryption (crypt_method 2, encrypt.format=luks): the LUKS1
 * header lies in the clusters that the full disk encryption header
 * extension (0x0537be77: offset, length) points to; data clusters are
 * encrypted with its master key, each 512-byte sector with the IV of
 * its host offset in the file (qcow2_crypt).  The header is parsed and
 * unlocked by formats/luks/block.c.
 *
 * Old AES-CBC images (crypt_method 1) open too, as in
 * qemu-storage-daemon 7.2 (open_aes). */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "objects/secret.h"
#include "formats/qcow2/qcow2.h"
#include "formats/luks/luks.h"

static const char *const crypt_names[] = { "none", "aes", "luks" };

/* LUKS header reads, confined to the extension's region. */
static int qcow2_crypto_read(void *opaque, uint64_t offset, size_t len,
                             void *buf)
{
    Qcow2State *s = opaque;

    if (offset > s->h.crypto_length || len > s->h.crypto_length - offset) {
        return -EINVAL;
    }
    return bd_child_pread(s->file, s->h.crypto_offset + offset, len, buf, 0);
}

/* The members of BlockdevQcow2Encryption: 'format' and 'key-secret'. */
static gboolean parse_encrypt(GVariant *encrypt, const char **format,
                              const char **secret, GError **errp)
{
    GVariantIter it;
    const char *key;
    GVariant *v;

    *format = *secret = NULL;
    if (!encrypt) {
        return TRUE;
    }
    if (!g_variant_is_of_type(encrypt, G_VARIANT_TYPE_VARDICT)) {
        FAIL("Invalid parameter type for 'encrypt', expected: object");
    }
    g_variant_iter_init(&it, encrypt);
    while (g_variant_iter_next(&it, "{&sv}", &key, &v)) {
        g_autoptr(GVariant) val = v;
        const char **dst = strcmp(key, "format") == 0 ? format
                           : strcmp(key, "key-secret") == 0 ? secret : NULL;

        if (!dst) {
            FAIL("Parameter 'encrypt.%s' is unexpected", key);
        }
        if (!g_variant_is_of_type(val, G_VARIANT_TYPE_STRING)) {
            FAIL("Invalid parameter type for 'encrypt.%s', expected: string",
                 key);
        }
        *dst = g_variant_get_string(val, NULL);
    }
    if (!*format) {
        FAIL("Parameter 'encrypt.format' is missing");
    }
    if (strcmp(*format, "aes") != 0 && strcmp(*format, "luks") != 0) {
        FAIL("Parameter 'encrypt.format' does not accept value '%s'",
             *format);
    }
    return TRUE;
}

/* The old qcow AES scheme, which qemu-storage-daemon 7.2 still opens
 * read-write (only QEMU's system emulators refuse it): AES-128-CBC, the
 * key the passphrase's first 16 bytes (zero padded), plain64 IVs of
 * the guest sector. */
static gboolean open_aes(Qcow2State *s, const char *secret, GError **errp)
{
    g_autofree char *pw = bd_secret_lookup_as_utf8(secret, errp);
    uint8_t key[16] = { 0 };
    gboolean ok;

    if (!pw) {
        return FALSE;
    }
    memcpy(key, pw, MIN(strlen(pw), sizeof(key)));
    memset(pw, 0, strlen(pw));
    s->crypto = g_new0(BdLuksBlock, 1);
    ok = bd_luks_cipher_init(&s->crypto->c, MODE_CBC, IV_PLAIN64,
                             HASH_SHA256, key, sizeof(key), errp);
    memset(key, 0, sizeof(key));
    if (!ok) {
        g_clear_pointer(&s->crypto, g_free);
        return FALSE;
    }
    s->crypto->ready = TRUE;
    s->crypto_aes = TRUE;
    s->crypto_secret = g_strdup(secret);
    s->node->encrypted = TRUE;
    return TRUE;
}

gboolean qcow2_crypto_open(Qcow2State *s, GVariant *encrypt, GError **errp)
{
    const char *format, *secret;
    g_autofree char *pw = NULL;
    uint32_t method = s->h.crypt_method;
    int64_t flen;
    gboolean ok;

    if (!parse_encrypt(encrypt, &format, &secret, errp)) {
        return FALSE;
    }
    if (method == QCOW2_CRYPT_NONE) {
        if (format) {
            FAIL("No encryption in image header, but options specified "
                 "format '%s'", format);
        }
        return TRUE;
    }
    if (format && strcmp(format, crypt_names[method]) != 0) {
        FAIL("Header reported '%s' encryption format but options specify "
             "'%s'", crypt_names[method], format);
    }
    if (!secret) {
        FAIL("Parameter 'encrypt.key-secret' is required for cipher");
    }
    if (method == QCOW2_CRYPT_AES) {
        return open_aes(s, secret, errp);
    }
    if (!s->h.has_crypto_ext) {
        FAIL("Node '%s': qcow2: the image is LUKS encrypted but has no "
             "encryption header extension", s->node->node_name);
    }
    if ((s->h.crypto_offset & (s->cluster_size - 1)) ||
        s->h.crypto_length > UINT64_MAX - s->h.crypto_offset) {
        FAIL("Node '%s': qcow2: the LUKS header offset 0x%" PRIx64 " is not "
             "cluster aligned or its length 0x%" PRIx64 " is invalid",
             s->node->node_name, s->h.crypto_offset, s->h.crypto_length);
    }
    flen = bd_node_getlength(s->file->node);
    if (flen >= 0 && s->h.crypto_offset + s->h.crypto_length > (uint64_t)flen) {
        FAIL("Node '%s': qcow2: the LUKS header (0x%" PRIx64 " bytes at 0x%"
             PRIx64 ") is beyond the end of the file (%" PRId64 " bytes)",
             s->node->node_name, s->h.crypto_length, s->h.crypto_offset,
             flen);
    }
    pw = bd_secret_lookup_as_utf8(secret, errp);
    if (!pw) {
        return FALSE;
    }
    s->crypto = g_new0(BdLuksBlock, 1);
    ok = bd_luks_block_open(s->crypto, s->node->node_name,
                            s->h.crypto_length, qcow2_crypto_read, s, pw,
                            errp);
    memset(pw, 0, strlen(pw));
    if (!ok) {
        qcow2_crypto_close(s);
        return FALSE;
    }
    s->crypto_secret = g_strdup(secret);
    s->node->encrypted = TRUE;
    return TRUE;
}

void qcow2_crypto_close(Qcow2State *s)
{
    if (s->crypto) {
        bd_luks_block_free(s->crypto);
        g_free(s->crypto);
        s->crypto = NULL;
    }
    g_clear_pointer(&s->crypto_secret, g_free);
}

void qcow2_crypto_query(Qcow2State *s, GVariantDict *data)
{
    GVariantDict enc;

    if (!s->crypto) {
        return;
    }
    g_variant_dict_init(&enc, NULL);
    if (s->crypto_aes) {
        g_variant_dict_insert(&enc, "format", "s", "aes");
    } else {
        g_variant_dict_insert(&enc, "format", "s", "luks");
        bd_luks_block_info(s->crypto, &enc);
    }
    g_variant_dict_insert_value(data, "encrypt", g_variant_dict_end(&enc));
}

void qcow2_crypt(Qcow2State *s, gboolean encrypt, uint64_t host,
                 uint64_t guest, uint8_t *dst, const uint8_t *src,
                 size_t len)
{
    bd_luks_cipher_run(&s->crypto->c, encrypt,
                       (s->crypto_aes ? guest : host) / LUKS_SECTOR, dst, src,
                       len);
}
