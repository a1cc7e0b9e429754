/* SPDX-License-Identifier: MIT */
/* The luks driver's cryptography, all of it nettle's: SHA and PBKDF2 for
 * the key slots, the LUKS AF splitter's diffusion, AES in XTS or CBC
 * with the plain, plain64 and essiv IV generators per 512-byte sector. */
#define G_LOG_DOMAIN "blockd-formats"

#include <string.h>
#include <gnutls/crypto.h>
#include <nettle/cbc.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <nettle/xts.h>
#include "formats/luks/luks.h"

const char *const bd_luks_cipher_alg_names[] = {
    "aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128",
    "serpent-128", "serpent-192", "serpent-256", "twofish-128",
    "twofish-192", "twofish-256", NULL };
const char *const bd_luks_cipher_mode_names[] = {
    "ecb", "cbc", "xts", "ctr", NULL };
const char *const bd_luks_ivgen_names[] = {
    "plain", "plain64", "essiv", NULL };
const char *const bd_luks_hash_names[] = {
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160",
    NULL };

/* --- hashes, PBKDF2 and the AF splitter --- */

const struct nettle_hash *bd_luks_hash_of(LuksHashAlg h)
{
    switch (h) {
    case HASH_SHA1: return &nettle_sha1;
    case HASH_SHA256: return &nettle_sha256;
    case HASH_SHA512: return &nettle_sha512;
    default: return NULL;
    }
}

gboolean bd_luks_hash_lookup(const char *name, LuksHashAlg *out,
                            GError **errp)
{
    for (int i = 0; bd_luks_hash_names[i]; i++) {
        if (strcmp(name, bd_luks_hash_names[i]) == 0 && bd_luks_hash_of(i)) {
            *out = i;
            return TRUE;
        }
    }
    FAIL("Hash algorithm '%s' not supported", name);
}

void bd_luks_pbkdf2(LuksHashAlg h, const uint8_t *pw, size_t pwlen,
                   const uint8_t *salt, size_t saltlen, unsigned iter,
                   uint8_t *out, size_t outlen)
{
    switch (h) {
    case HASH_SHA1:
        pbkdf2_hmac_sha1(pwlen, pw, iter, saltlen, salt, outlen, out);
        break;
    case HASH_SHA256:
        pbkdf2_hmac_sha256(pwlen, pw, iter, saltlen, salt, outlen, out);
        break;
    default:
        pbkdf2_hmac_sha512(pwlen, pw, iter, saltlen, salt, outlen, out);
        break;
    }
}

uint32_t bd_luks_slot_iters_max(LuksHashAlg h, size_t key_bytes)
{
    size_t ds = bd_luks_hash_of(h)->digest_size;

    return LUKS_MAX_SLOT_WORK / (uint32_t)MAX((key_bytes + ds - 1) / ds, 1);
}

typedef union {
    struct sha1_ctx s1;
    struct sha256_ctx s256;
    struct sha512_ctx s512;
} HashCtx;

/* The AF splitter's diffusion: each digest-sized piece of 'block'
 * replaced by the hash of its index (be32) and itself. */
static void af_diffuse(const struct nettle_hash *hh, uint8_t *block,
                       size_t len)
{
    size_t ds = hh->digest_size;
    uint8_t digest[SHA512_DIGEST_SIZE];
    HashCtx ctx;

    for (size_t i = 0, off = 0; off < len; i++, off += ds) {
        size_t n = MIN(ds, len - off);
        uint8_t be[4];

        put_be32(be, (uint32_t)i);
        hh->init(&ctx);
        hh->update(&ctx, 4, be);
        hh->update(&ctx, n, block + off);
        hh->digest(&ctx, ds, digest);
        memcpy(block + off, digest, n);
    }
}

static void xor_into(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] ^= src[i];
    }
}

/* Merge 'stripes' stripes of 'len' bytes into the key 'out'. */
void bd_luks_af_merge(const struct nettle_hash *hh, const uint8_t *split,
                     size_t len, uint32_t stripes, uint8_t *out)
{
    memset(out, 0, len);
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(out, split + (size_t)i * len, len);
        af_diffuse(hh, out, len);
    }
    xor_into(out, split + (size_t)(stripes - 1) * len, len);
}

/* Split 'key' into 'stripes' stripes (random but the last). */
gboolean bd_luks_af_split(const struct nettle_hash *hh, const uint8_t *key,
                         size_t len, uint32_t stripes, uint8_t *split)
{
    g_autofree uint8_t *acc = g_malloc0(len);

    if (gnutls_rnd(GNUTLS_RND_RANDOM, split,
                   (size_t)(stripes - 1) * len) < 0) {
        return FALSE;
    }
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(acc, split + (size_t)i * len, len);
        af_diffuse(hh, acc, len);
    }
    memcpy(split + (size_t)(stripes - 1) * len, key, len);
    xor_into(split + (size_t)(stripes - 1) * len, acc, len);
    return TRUE;
}

/* --- ciphers --- */

void bd_luks_cipher_free(LuksCipher *c)
{
    /* Key schedules are secrets: wiped before they go. */
    void *ctxs[] = { c->enc, c->dec, c->tweak, c->essiv };
    for (gsize i = 0; i < G_N_ELEMENTS(ctxs); i++) {
        if (ctxs[i]) {
            memset(ctxs[i], 0, (i == 3 ? c->essiv_aes : c->aes)->context_size);
            g_free(ctxs[i]);
        }
    }
    memset(c, 0, sizeof(*c));
}

const struct nettle_cipher *bd_luks_aes_of_bytes(size_t n)
{
    return n == 16 ? &nettle_aes128 : n == 24 ? &nettle_aes192 :
           n == 32 ? &nettle_aes256 : NULL;
}

/* Key schedules for 'mode' with 'key' (for XTS: data key then tweak
 * key), and for ESSIV the schedule of the hash of the key. */
gboolean bd_luks_cipher_init(LuksCipher *c, LuksMode mode, LuksIvAlg ivalg,
                            LuksHashAlg ivhash, const uint8_t *key,
                            size_t keylen, GError **errp)
{
    size_t aeslen = mode == MODE_XTS ? keylen / 2 : keylen;

    memset(c, 0, sizeof(*c));
    c->aes = bd_luks_aes_of_bytes(aeslen);
    c->mode = mode;
    c->ivalg = ivalg;
    if (!c->aes || (mode == MODE_XTS && keylen % 2)) {
        FAIL("Invalid key length %zu for cipher mode", keylen);
    }
    c->enc = g_malloc(c->aes->context_size);
    c->dec = g_malloc(c->aes->context_size);
    c->aes->set_encrypt_key(c->enc, key);
    c->aes->set_decrypt_key(c->dec, key);
    if (mode == MODE_XTS) {
        c->tweak = g_malloc(c->aes->context_size);
        c->aes->set_encrypt_key(c->tweak, key + aeslen);
    }
    if (ivalg == IV_ESSIV) {
        const struct nettle_hash *hh = bd_luks_hash_of(ivhash);
        uint8_t digest[SHA512_DIGEST_SIZE];
        HashCtx ctx;

        c->essiv_aes = hh ? bd_luks_aes_of_bytes(hh->digest_size) : NULL;
        if (!c->essiv_aes) {
            bd_luks_cipher_free(c);
            FAIL("Unsupported IV generator hash '%s' for essiv",
                 bd_luks_hash_names[ivhash]);
        }
        hh->init(&ctx);
        hh->update(&ctx, keylen, key);
        hh->digest(&ctx, hh->digest_size, digest);
        c->essiv = g_malloc(c->essiv_aes->context_size);
        c->essiv_aes->set_encrypt_key(c->essiv, digest);
        memset(digest, 0, sizeof(digest));
    }
    return TRUE;
}

static void cipher_iv(const LuksCipher *c, uint64_t sector,
                      uint8_t iv[LUKS_IV_LEN])
{
    uint64_t v = c->ivalg == IV_PLAIN ? (uint32_t)sector : sector;

    memset(iv, 0, LUKS_IV_LEN);
    for (int i = 0; i < 8; i++) {
        iv[i] = (uint8_t)(v >> (8 * i));
    }
    if (c->ivalg == IV_ESSIV) {
        c->essiv_aes->encrypt(c->essiv, LUKS_IV_LEN, iv, iv);
    }
}

/* En- or decrypt 'len' bytes (a multiple of 512) from 'src' to 'dst'
 * (may be the same), the first sector being number 'sector'. */
void bd_luks_cipher_run(const LuksCipher *c, gboolean encrypt,
                       uint64_t sector, uint8_t *dst, const uint8_t *src,
                       size_t len)
{
    for (size_t off = 0; off < len; off += LUKS_SECTOR, sector++) {
        uint8_t iv[LUKS_IV_LEN];

        cipher_iv(c, sector, iv);
        if (c->mode == MODE_XTS) {
            if (encrypt) {
                xts_encrypt_message(c->enc, c->tweak, c->aes->encrypt, iv,
                                    LUKS_SECTOR, dst + off, src + off);
            } else {
                xts_decrypt_message(c->dec, c->tweak, c->aes->decrypt,
                                    c->aes->encrypt, iv, LUKS_SECTOR,
                                    dst + off, src + off);
            }
        } else if (encrypt) {
            cbc_encrypt(c->enc, c->aes->encrypt, LUKS_IV_LEN, iv,
                        LUKS_SECTOR, dst + off, src + off);
        } else {
            cbc_decrypt(c->dec, c->aes->decrypt, LUKS_IV_LEN, iv,
                        LUKS_SECTOR, dst + off, src + off);
        }
    }
}
