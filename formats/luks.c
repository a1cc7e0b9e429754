/* SPDX-License-Identifier: MIT */
/* The 'luks' format driver: LUKS1 encrypted images (cryptsetup
 * luksFormat --type luks1, qemu-img create -f luks), read-write, with
 * blockdev-create.
 *
 * On disk: a 592-byte big-endian header (magic, cipher name and mode,
 * hash, payload offset in 512-byte sectors, master key length, master
 * key digest, 8 key slots), the key material of each slot (the master
 * key split into 4000 stripes by the AF splitter, encrypted with a key
 * derived from the passphrase by PBKDF2) and from payload_offset on the
 * encrypted payload.  Payload sector n (512 bytes, counted from the
 * payload start) is encrypted with the master key and the IV of n
 * (plain: 32-bit, plain64: 64-bit little endian, essiv: that encrypted
 * with the hash of the master key).
 *
 * All the cryptography is nettle's (AES, CBC, XTS, SHA, PBKDF2); this
 * file only lays the bytes out.  The key schedules are set once at open
 * and only read afterwards, so data callbacks on any thread share them
 * without a lock.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <nettle/cbc.h>
#include <nettle/nettle-meta.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <nettle/xts.h>
#include <gnutls/crypto.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/node.h"
#include "objects/secret.h"
#include "formats/create-util.h"
#include "formats/json-filename.h"

#define LUKS_SECTOR         512
#define LUKS_HEADER_SIZE    592
#define LUKS_MAGIC          "LUKS\xba\xbe"
#define LUKS_MAGIC_LEN      6
#define LUKS_VERSION        1
#define LUKS_SLOTS          8
#define LUKS_STRIPES        4000
#define LUKS_SALT_LEN       32
#define LUKS_DIGEST_LEN     20
#define LUKS_SLOT_ENABLED   0x00ac71f3u
#define LUKS_SLOT_DISABLED  0x0000deadu
#define LUKS_MIN_ITERS      1000
#define LUKS_ALIGN_SECTORS  (4096 / LUKS_SECTOR)
#define LUKS_IV_LEN         16
#define LUKS_BOUNCE_MAX     (1u << 20)

/* Header field offsets. */
enum {
    H_MAGIC = 0, H_VERSION = 6, H_CIPHER_NAME = 8, H_CIPHER_MODE = 40,
    H_HASH_SPEC = 72, H_PAYLOAD_OFFSET = 104, H_KEY_BYTES = 108,
    H_MK_DIGEST = 112, H_MK_SALT = 132, H_MK_ITER = 164, H_UUID = 168,
    H_SLOTS = 208, SLOT_SIZE = 48,
    S_ACTIVE = 0, S_ITER = 4, S_SALT = 8, S_KEY_OFFSET = 40, S_STRIPES = 44,
};

/* QAPI enums, in their order. */
typedef enum { ALG_AES_128, ALG_AES_192, ALG_AES_256, ALG_DES, ALG_3DES,
               ALG_CAST5_128, ALG_SERPENT_128, ALG_SERPENT_192,
               ALG_SERPENT_256, ALG_TWOFISH_128, ALG_TWOFISH_192,
               ALG_TWOFISH_256, ALG_SM4 } LuksCipherAlg;
static const char *const cipher_alg_values[] = {
    "aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128",
    "serpent-128", "serpent-192", "serpent-256", "twofish-128",
    "twofish-192", "twofish-256", "sm4", NULL };
typedef enum { MODE_ECB, MODE_CBC, MODE_XTS, MODE_CTR } LuksMode;
static const char *const cipher_mode_values[] = {
    "ecb", "cbc", "xts", "ctr", NULL };
typedef enum { IV_PLAIN, IV_PLAIN64, IV_ESSIV } LuksIvAlg;
static const char *const ivgen_values[] = {
    "plain", "plain64", "essiv", NULL };
typedef enum { HASH_MD5, HASH_SHA1, HASH_SHA224, HASH_SHA256, HASH_SHA384,
               HASH_SHA512, HASH_RIPEMD160 } LuksHashAlg;
static const char *const hash_values[] = {
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160",
    NULL };

typedef struct {
    const struct nettle_cipher *aes;   /* nettle_aes128/192/256 */
    LuksMode mode;                     /* MODE_CBC or MODE_XTS */
    LuksIvAlg ivalg;
    void *enc, *dec, *tweak, *essiv;   /* key schedules (aes contexts) */
    const struct nettle_cipher *essiv_aes;
} LuksCipher;

typedef struct {
    BdNode *node;
    BdChild *file;
    uint64_t payload;          /* byte offset of the payload */
    uint8_t header[LUKS_HEADER_SIZE];  /* as on disk, for queries */
    LuksCipher c;
    /* For query-named-block-nodes' format-specific info. */
    char cipher_alg[16], cipher_mode[8], ivgen_alg[8], ivgen_hash[8];
    char hash_alg[8];
} LuksState;

typedef struct {
    GVariant *file;
    const char *key_secret;
} LuksOptions;

/* QAPI BlockdevOptionsLUKS. */
static const BdSchemaField luks_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(LuksOptions, file) },
    { "key-secret", &bd_schema_str, TRUE, BD_AT(LuksOptions, key_secret),
      .flags = BD_FIELD_STRONG },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(LuksOptions, luks_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* --- hashes, PBKDF2 and the AF splitter --- */

static const struct nettle_hash *hash_of(LuksHashAlg h)
{
    switch (h) {
    case HASH_SHA1: return &nettle_sha1;
    case HASH_SHA256: return &nettle_sha256;
    case HASH_SHA512: return &nettle_sha512;
    default: return NULL;
    }
}

static gboolean hash_lookup(const char *name, LuksHashAlg *out,
                            GError **errp)
{
    for (int i = 0; hash_values[i]; i++) {
        if (strcmp(name, hash_values[i]) == 0 && hash_of(i)) {
            *out = i;
            return TRUE;
        }
    }
    FAIL("Hash algorithm '%s' not supported", name);
}

static void luks_pbkdf2(LuksHashAlg h, const uint8_t *pw, size_t pwlen,
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
static void af_merge(const struct nettle_hash *hh, const uint8_t *split,
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
static gboolean af_split(const struct nettle_hash *hh, const uint8_t *key,
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

static void cipher_free(LuksCipher *c)
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

static const struct nettle_cipher *aes_of_bytes(size_t n)
{
    return n == 16 ? &nettle_aes128 : n == 24 ? &nettle_aes192 :
           n == 32 ? &nettle_aes256 : NULL;
}

/* Key schedules for 'mode' with 'key' (for XTS: data key then tweak
 * key), and for ESSIV the schedule of the hash of the key. */
static gboolean cipher_init(LuksCipher *c, LuksMode mode, LuksIvAlg ivalg,
                            LuksHashAlg ivhash, const uint8_t *key,
                            size_t keylen, GError **errp)
{
    size_t aeslen = mode == MODE_XTS ? keylen / 2 : keylen;

    memset(c, 0, sizeof(*c));
    c->aes = aes_of_bytes(aeslen);
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
        const struct nettle_hash *hh = hash_of(ivhash);
        uint8_t digest[SHA512_DIGEST_SIZE];
        HashCtx ctx;

        c->essiv_aes = hh ? aes_of_bytes(hh->digest_size) : NULL;
        if (!c->essiv_aes) {
            cipher_free(c);
            FAIL("Unsupported IV generator hash '%s' for essiv",
                 hash_values[ivhash]);
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
static void cipher_run(const LuksCipher *c, gboolean encrypt,
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

/* --- data path --- */

static int luks_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                      void *buf, int flags)
{
    LuksState *s = node->opaque;
    int ret = bd_child_pread(s->file, s->payload + offset, bytes, buf, 0);

    if (ret == 0) {
        cipher_run(&s->c, FALSE, offset / LUKS_SECTOR, buf, buf, bytes);
    }
    return ret;
}

static int luks_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                       const void *buf, int flags)
{
    LuksState *s = node->opaque;
    const uint8_t *p = buf;
    size_t cap = MIN(bytes, LUKS_BOUNCE_MAX);
    g_autofree uint8_t *bounce = g_try_malloc(MAX(cap, 1));
    int ret = 0;

    if (!bounce) {
        return -ENOMEM;
    }
    while (bytes && ret == 0) {
        size_t n = MIN(bytes, cap);

        cipher_run(&s->c, TRUE, offset / LUKS_SECTOR, bounce, p, n);
        ret = bd_child_pwrite(s->file, s->payload + offset, n, bounce,
                              flags & BD_REQ_FUA);
        offset += n;
        bytes -= n;
        p += n;
    }
    return ret;
}

static void luks_refresh_limits(BdNode *node)
{
    node->request_alignment = MAX(node->request_alignment, LUKS_SECTOR);
}

static int luks_truncate(BdNode *node, uint64_t size)
{
    LuksState *s = node->opaque;
    int ret;

    if (size % LUKS_SECTOR) {
        return -EINVAL;
    }
    ret = bd_node_truncate(s->file->node, s->payload + size);
    if (ret == 0) {
        bd_node_set_size(node, size);
    }
    return ret;
}

/* --- open --- */

typedef struct {
    LuksMode mode;
    LuksIvAlg ivalg;
    LuksHashAlg ivhash, hash;
    uint32_t key_bytes;
} LuksParams;

/* The cipher name, mode string ("<mode>-<ivgen>[:<hash>]") and hash of
 * the header, as QEMU reads them. */
static gboolean luks_parse_params(LuksState *s, const uint8_t *h,
                                  LuksParams *p, GError **errp)
{
    char name[33], mode[33], hash[33];
    char *ivgen, *ivhash;
    gboolean found = FALSE;
    size_t aes;

    memcpy(name, h + H_CIPHER_NAME, 32);
    memcpy(mode, h + H_CIPHER_MODE, 32);
    memcpy(hash, h + H_HASH_SPEC, 32);
    name[32] = mode[32] = hash[32] = '\0';
    p->key_bytes = get_be32(h + H_KEY_BYTES);

    ivgen = strchr(mode, '-');
    if (!ivgen) {
        FAIL("Unexpected cipher mode string format %s", mode);
    }
    *ivgen++ = '\0';
    ivhash = strchr(ivgen, ':');
    p->ivhash = HASH_SHA256;
    if (ivhash) {
        *ivhash++ = '\0';
        if (!hash_lookup(ivhash, &p->ivhash, errp)) {
            return FALSE;
        }
    }
    if (strcmp(mode, "xts") == 0) {
        p->mode = MODE_XTS;
    } else if (strcmp(mode, "cbc") == 0) {
        p->mode = MODE_CBC;
    } else {
        FAIL("Cipher mode '%s' not supported", mode);
    }
    aes = p->mode == MODE_XTS ? p->key_bytes / 2 : p->key_bytes;
    if (strcmp(name, "aes") != 0 || !aes_of_bytes(aes) ||
        (p->mode == MODE_XTS && p->key_bytes % 2)) {
        FAIL("Cipher name '%s' with key size %" PRIu32 " bytes not "
             "supported", name, p->key_bytes);
    }
    if (!hash_lookup(hash, &p->hash, errp)) {
        return FALSE;
    }
    for (int i = 0; ivgen_values[i]; i++) {
        if (strcmp(ivgen, ivgen_values[i]) == 0) {
            p->ivalg = i;
            found = TRUE;
        }
    }
    if (!found) {
        FAIL("IV generator '%s' not supported", ivgen);
    }
    if (p->ivalg == IV_ESSIV && !ivhash) {
        FAIL("Missing IV generator hash specification");
    }
    g_snprintf(s->cipher_alg, sizeof(s->cipher_alg), "aes-%zu", aes * 8);
    g_strlcpy(s->cipher_mode, mode, sizeof(s->cipher_mode));
    g_strlcpy(s->ivgen_alg, ivgen, sizeof(s->ivgen_alg));
    g_strlcpy(s->ivgen_hash, p->ivalg == IV_ESSIV ? ivhash : "",
              sizeof(s->ivgen_hash));
    g_strlcpy(s->hash_alg, hash, sizeof(s->hash_alg));
    return TRUE;
}

/* The key slots and the payload must lie where LUKS1 puts them: after
 * the header, apart from each other, before the payload, inside the
 * file.  QEMU's checks and words, and the file size besides. */
static gboolean luks_check_layout(LuksState *s, const uint8_t *h,
                                  const LuksParams *p, uint64_t file_size,
                                  GError **errp)
{
    const char *name = s->node->node_name;
    uint64_t payload = get_be32(h + H_PAYLOAD_OFFSET);
    uint64_t split_sectors = ((uint64_t)p->key_bytes * LUKS_STRIPES +
                              LUKS_SECTOR - 1) / LUKS_SECTOR;

    if (get_be32(h + H_MK_ITER) == 0) {
        FAIL("LUKS key iteration count is zero");
    }
    if (payload * LUKS_SECTOR < LUKS_HEADER_SIZE) {
        FAIL("LUKS payload is overlapping with the header");
    }
    if (payload * LUKS_SECTOR > file_size) {
        FAIL("Node '%s': luks: payload offset 0x%" PRIx64 " is beyond the "
             "end of the file (%" PRIu64 " bytes); the image is truncated",
             name, payload * LUKS_SECTOR, file_size);
    }
    for (int i = 0; i < LUKS_SLOTS; i++) {
        const uint8_t *sl = h + H_SLOTS + i * SLOT_SIZE;
        uint32_t active = get_be32(sl + S_ACTIVE);
        uint64_t start = get_be32(sl + S_KEY_OFFSET);
        uint32_t stripes = get_be32(sl + S_STRIPES);

        if (active != LUKS_SLOT_ENABLED && active != LUKS_SLOT_DISABLED) {
            FAIL("Keyslot %d state (active/disable) is corrupted", i);
        }
        if (active != LUKS_SLOT_ENABLED) {
            continue;
        }
        if (stripes != LUKS_STRIPES) {
            FAIL("Keyslot %d is corrupted (stripes %" PRIu32 " != %d)", i,
                 stripes, LUKS_STRIPES);
        }
        if (get_be32(sl + S_ITER) == 0) {
            FAIL("Keyslot %d iteration count is zero", i);
        }
        if (start * LUKS_SECTOR < LUKS_HEADER_SIZE) {
            FAIL("Keyslot %d is overlapping with the LUKS header", i);
        }
        if (start + split_sectors > payload) {
            FAIL("Keyslot %d is overlapping with the encrypted payload", i);
        }
        for (int j = 0; j < i; j++) {
            const uint8_t *o = h + H_SLOTS + j * SLOT_SIZE;
            uint64_t ostart = get_be32(o + S_KEY_OFFSET);

            if (get_be32(o + S_ACTIVE) == LUKS_SLOT_ENABLED &&
                start < ostart + split_sectors &&
                ostart < start + split_sectors) {
                FAIL("Keyslots %d and %d are overlapping in the header", j, i);
            }
        }
    }
    return TRUE;
}

/* Try the passphrase on slot 'i': 1 and the master key in 'mk' if it
 * opens it, 0 if not, -errno on a read error. */
static int luks_try_slot(LuksState *s, const uint8_t *h, const LuksParams *p,
                         int i, const char *pw, uint8_t *mk)
{
    const uint8_t *sl = h + H_SLOTS + i * SLOT_SIZE;
    size_t split_len = (size_t)p->key_bytes * LUKS_STRIPES;
    size_t split_pad = (split_len + LUKS_SECTOR - 1) & ~(size_t)511;
    g_autofree uint8_t *split = g_try_malloc(split_pad);
    uint8_t slot_key[64], digest[LUKS_DIGEST_LEN];
    LuksCipher c;
    int ret;

    if (!split) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->file,
                         (uint64_t)get_be32(sl + S_KEY_OFFSET) * LUKS_SECTOR,
                         split_pad, split, 0);
    if (ret < 0) {
        return ret;
    }
    luks_pbkdf2(p->hash, (const uint8_t *)pw, strlen(pw), sl + S_SALT,
           LUKS_SALT_LEN, get_be32(sl + S_ITER), slot_key, p->key_bytes);
    if (!cipher_init(&c, p->mode, p->ivalg, p->ivhash, slot_key,
                     p->key_bytes, NULL)) {
        return -EINVAL;
    }
    cipher_run(&c, FALSE, 0, split, split, split_pad);
    cipher_free(&c);
    af_merge(hash_of(p->hash), split, p->key_bytes, LUKS_STRIPES, mk);
    luks_pbkdf2(p->hash, mk, p->key_bytes, h + H_MK_SALT, LUKS_SALT_LEN,
           get_be32(h + H_MK_ITER), digest, LUKS_DIGEST_LEN);
    memset(slot_key, 0, sizeof(slot_key));
    memset(split, 0, split_pad);
    return memcmp(digest, h + H_MK_DIGEST, LUKS_DIGEST_LEN) == 0;
}

static void luks_close(BdNode *node)
{
    LuksState *s = node->opaque;

    if (!s) {
        return;
    }
    cipher_free(&s->c);
    g_free(s);
    node->opaque = NULL;
}

static gboolean luks_load(LuksState *s, const char *pw, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    uint8_t h[LUKS_HEADER_SIZE], mk[64];
    LuksParams p;
    int ret = 0;

    if (file_size < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-file_size));
    }
    if (file_size < LUKS_HEADER_SIZE) {
        FAIL("Node '%s': luks: the file (%" PRId64 " bytes) is too short "
             "for a LUKS header (%d bytes)", s->node->node_name, file_size,
             LUKS_HEADER_SIZE);
    }
    ret = bd_child_pread(s->file, 0, LUKS_HEADER_SIZE, h, 0);
    if (ret < 0) {
        FAIL("Unable to read LUKS header: %s", g_strerror(-ret));
    }
    memcpy(s->header, h, LUKS_HEADER_SIZE);
    if (memcmp(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN) != 0) {
        FAIL("Volume is not in LUKS format");
    }
    if (((h[H_VERSION] << 8) | h[H_VERSION + 1]) != LUKS_VERSION) {
        FAIL("LUKS version %d is not supported",
             (h[H_VERSION] << 8) | h[H_VERSION + 1]);
    }
    if (!luks_parse_params(s, h, &p, errp) ||
        !luks_check_layout(s, h, &p, (uint64_t)file_size, errp)) {
        return FALSE;
    }
    ret = 0;
    for (int i = 0; i < LUKS_SLOTS && ret == 0; i++) {
        if (get_be32(h + H_SLOTS + i * SLOT_SIZE + S_ACTIVE) ==
            LUKS_SLOT_ENABLED) {
            ret = luks_try_slot(s, h, &p, i, pw, mk);
        }
    }
    if (ret < 0) {
        FAIL("Unable to read LUKS key slot: %s", g_strerror(-ret));
    }
    if (ret == 0) {
        FAIL("Invalid password, cannot unlock any keyslot");
    }
    if (!cipher_init(&s->c, p.mode, p.ivalg, p.ivhash, mk, p.key_bytes,
                     errp)) {
        return FALSE;
    }
    memset(mk, 0, sizeof(mk));
    s->payload = (uint64_t)get_be32(h + H_PAYLOAD_OFFSET) * LUKS_SECTOR;
    /* As QEMU: a payload ending inside a sector counts the whole of it
     * (a size given to qemu-img create is not rounded in the file). */
    bd_node_set_size(s->node, ((uint64_t)file_size - s->payload +
                               LUKS_SECTOR - 1) & ~(uint64_t)(LUKS_SECTOR - 1));
    return TRUE;
}

static gboolean luks_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(LuksOptions) o = { 0 };
    g_autofree char *pw = NULL;
    LuksState *s;

    bd_schema_decode(luks_options, options, &o);
    s = g_new0(LuksState, 1);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE,
                                 errp);
    if (!s->file) {
        goto fail;
    }
    if (!o.key_secret) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'key-secret' is required for cipher");
        goto fail;
    }
    pw = bd_secret_lookup_as_utf8(o.key_secret, errp);
    if (!pw || !luks_load(s, pw, errp)) {
        goto fail;
    }
    memset(pw, 0, strlen(pw));
    node->encrypted = TRUE;
    /* key-secret is a strong option: QEMU names the node in JSON. */
    g_free(node->filename);
    node->filename = bd_formats_json_filename(node);
    return TRUE;

fail:
    if (pw) {
        memset(pw, 0, strlen(pw));
    }
    luks_close(node);
    return FALSE;
}

static void luks_query_image_info(BdNode *node, GVariantDict *image)
{
    LuksState *s = node->opaque;
    GVariantDict spec, data;
    GVariantBuilder slots;

    g_variant_dict_init(&data, NULL);
    g_variant_dict_insert(&data, "cipher-alg", "s", s->cipher_alg);
    g_variant_dict_insert(&data, "cipher-mode", "s", s->cipher_mode);
    g_variant_dict_insert(&data, "ivgen-alg", "s", s->ivgen_alg);
    if (s->ivgen_hash[0]) {
        g_variant_dict_insert(&data, "ivgen-hash-alg", "s", s->ivgen_hash);
    }
    g_variant_dict_insert(&data, "hash-alg", "s", s->hash_alg);
    g_variant_dict_insert(&data, "payload-offset", "x", (gint64)s->payload);
    g_variant_dict_insert(&data, "master-key-iters", "x",
                          (gint64)get_be32(s->header + H_MK_ITER));
    {
        char uuid[41];

        memcpy(uuid, s->header + H_UUID, 40);
        uuid[40] = '\0';
        g_variant_dict_insert(&data, "uuid", "s", uuid);
    }
    g_variant_builder_init(&slots, G_VARIANT_TYPE("aa{sv}"));
    for (int i = 0; i < LUKS_SLOTS; i++) {
        const uint8_t *sl = s->header + H_SLOTS + i * SLOT_SIZE;
        gboolean active = get_be32(sl + S_ACTIVE) == LUKS_SLOT_ENABLED;
        GVariantDict slot;

        g_variant_dict_init(&slot, NULL);
        g_variant_dict_insert(&slot, "active", "b", active);
        if (active) {
            g_variant_dict_insert(&slot, "iters", "x",
                                  (gint64)get_be32(sl + S_ITER));
            g_variant_dict_insert(&slot, "stripes", "x",
                                  (gint64)get_be32(sl + S_STRIPES));
        }
        g_variant_dict_insert(&slot, "key-offset", "x",
                              (gint64)get_be32(sl + S_KEY_OFFSET) *
                              LUKS_SECTOR);
        g_variant_builder_add_value(&slots, g_variant_dict_end(&slot));
    }
    g_variant_dict_insert_value(&data, "slots", g_variant_builder_end(&slots));
    g_variant_dict_init(&spec, NULL);
    g_variant_dict_insert(&spec, "type", "s", "luks");
    g_variant_dict_insert_value(&spec, "data", g_variant_dict_end(&data));
    g_variant_dict_insert_value(image, "format-specific",
                                g_variant_dict_end(&spec));
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
    g_variant_dict_insert(image, "encrypted", "b", TRUE);
}

/* --- blockdev-create (BlockdevCreateOptionsLUKS) --- */

static const BdSchemaType cipher_alg_type = {
    .name = "QCryptoCipherAlgorithm", .kind = BD_SCHEMA_ENUM,
    .enum_values = cipher_alg_values };
static const BdSchemaType cipher_mode_type = {
    .name = "QCryptoCipherMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = cipher_mode_values };
static const BdSchemaType ivgen_type = {
    .name = "QCryptoIVGenAlgorithm", .kind = BD_SCHEMA_ENUM,
    .enum_values = ivgen_values };
static const BdSchemaType hash_type = {
    .name = "QCryptoHashAlgorithm", .kind = BD_SCHEMA_ENUM,
    .enum_values = hash_values };
static const char *const prealloc_values[] = {
    "off", "metadata", "falloc", "full", NULL };
static const BdSchemaType prealloc_type = {
    .name = "PreallocMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = prealloc_values };

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    int preallocation;
    const char *key_secret;
    int cipher_alg, cipher_mode, ivgen_alg, ivgen_hash_alg, hash_alg;
    gboolean has_ivgen_hash_alg;
    gint64 iter_time;
} LuksCreateOptions;

static const BdSchemaField luks_create_options[] = {
    { "key-secret", &bd_schema_str, TRUE,
      BD_AT(LuksCreateOptions, key_secret) },
    { "cipher-alg", &cipher_alg_type, TRUE,
      BD_AT(LuksCreateOptions, cipher_alg), .def.i = ALG_AES_256 },
    { "cipher-mode", &cipher_mode_type, TRUE,
      BD_AT(LuksCreateOptions, cipher_mode), .def.i = MODE_XTS },
    { "ivgen-alg", &ivgen_type, TRUE,
      BD_AT(LuksCreateOptions, ivgen_alg), .def.i = IV_PLAIN64 },
    { "ivgen-hash-alg", &hash_type, TRUE,
      BD_AT(LuksCreateOptions, ivgen_hash_alg),
      BD_HAS(LuksCreateOptions, ivgen_hash_alg), .def.i = HASH_SHA256 },
    { "hash-alg", &hash_type, TRUE,
      BD_AT(LuksCreateOptions, hash_alg), .def.i = HASH_SHA256 },
    { "iter-time", &bd_schema_int, TRUE,
      BD_AT(LuksCreateOptions, iter_time), .def.i = 2000 },
    { "file", &bd_schema_blockdev_ref, FALSE,
      BD_AT(LuksCreateOptions, file) },
    { "size", &bd_schema_size, FALSE, BD_AT(LuksCreateOptions, size) },
    { "preallocation", &prealloc_type, TRUE,
      BD_AT(LuksCreateOptions, preallocation), .def.i = 0 },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(LuksCreateOptions, luks_create_options)

/* PBKDF2 iterations of 'hash' that take about 'ms' milliseconds here
 * (QEMU's and cryptsetup's benchmark), at least LUKS_MIN_ITERS. */
static uint32_t luks_iterations(LuksHashAlg hash, uint64_t ms)
{
    static const uint8_t pw[] = "benchmark", salt[LUKS_SALT_LEN];
    uint8_t out[32];
    uint64_t iters = 1 << 12, elapsed, want;

    for (;;) {
        gint64 t0 = g_get_monotonic_time();
        luks_pbkdf2(hash, pw, sizeof(pw) - 1, salt, sizeof(salt), (unsigned)iters,
               out, sizeof(out));
        elapsed = (uint64_t)(g_get_monotonic_time() - t0);
        if (elapsed >= 20000 || iters >= (1u << 30)) {
            break;
        }
        iters *= 2;
    }
    want = iters * ms * 1000 / MAX(elapsed, 1);
    return (uint32_t)CLAMP(want, LUKS_MIN_ITERS, UINT32_MAX);
}

static gboolean luks_create(GVariant *options, GError **errp)
{
    g_auto(LuksCreateOptions) c = { 0 };
    g_autofree char *pw = NULL;
    g_autofree uint8_t *split = NULL;
    uint8_t h[LUKS_HEADER_SIZE] = { 0 }, mk[64], slot_key[64], uu[16];
    size_t aes, key_bytes, split_len, split_pad;
    uint64_t slot_sectors, payload;
    LuksCipher ciph;
    BdNode *file;
    char mode[32];
    int ret;

    bd_schema_decode(luks_create_options, options, &c);
    if (!c.key_secret) {
        FAIL("Parameter 'key-secret' is required for cipher");
    }
    if (c.cipher_alg > ALG_AES_256) {
        FAIL("Cipher algorithm '%s' not supported",
             cipher_alg_values[c.cipher_alg]);
    }
    if (c.cipher_mode != MODE_XTS && c.cipher_mode != MODE_CBC) {
        FAIL("Cipher mode '%s' not supported",
             cipher_mode_values[c.cipher_mode]);
    }
    if (!hash_of(c.hash_alg)) {
        FAIL("Hash algorithm '%s' not supported", hash_values[c.hash_alg]);
    }
    if (c.ivgen_alg == IV_ESSIV && !hash_of(c.ivgen_hash_alg)) {
        FAIL("Hash algorithm '%s' not supported",
             hash_values[c.ivgen_hash_alg]);
    }
    if (c.iter_time < 0) {
        FAIL("Parameter 'iter-time' expects a non-negative value");
    }
    if (c.preallocation != 0) {
        FAIL("Preallocation mode '%s' not supported for luks",
             prealloc_values[c.preallocation]);
    }
    pw = bd_secret_lookup_as_utf8(c.key_secret, errp);
    if (!pw) {
        return FALSE;
    }
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }

    aes = 16 + 8 * (size_t)c.cipher_alg;
    key_bytes = c.cipher_mode == MODE_XTS ? 2 * aes : aes;
    split_len = key_bytes * LUKS_STRIPES;
    split_pad = (split_len + LUKS_SECTOR - 1) & ~(size_t)511;
    slot_sectors = (split_pad / LUKS_SECTOR + LUKS_ALIGN_SECTORS - 1) /
                   LUKS_ALIGN_SECTORS * LUKS_ALIGN_SECTORS;
    payload = LUKS_ALIGN_SECTORS + LUKS_SLOTS * slot_sectors;
    g_snprintf(mode, sizeof(mode), "%s-%s%s%s",
               cipher_mode_values[c.cipher_mode], ivgen_values[c.ivgen_alg],
               c.has_ivgen_hash_alg || c.ivgen_alg == IV_ESSIV ? ":" : "",
               c.has_ivgen_hash_alg || c.ivgen_alg == IV_ESSIV ?
               hash_values[c.ivgen_hash_alg] : "");

    memcpy(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN);
    h[H_VERSION + 1] = LUKS_VERSION;
    strcpy((char *)h + H_CIPHER_NAME, "aes");
    strcpy((char *)h + H_CIPHER_MODE, mode);
    strcpy((char *)h + H_HASH_SPEC, hash_values[c.hash_alg]);
    put_be32(h + H_PAYLOAD_OFFSET, (uint32_t)payload);
    put_be32(h + H_KEY_BYTES, (uint32_t)key_bytes);
    bd_formats_uuid_generate(uu);
    {
        char str[37];
        g_snprintf(str, sizeof(str),
                   "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                   "%02x%02x%02x%02x%02x%02x", uu[0], uu[1], uu[2], uu[3],
                   uu[4], uu[5], uu[6], uu[7], uu[8], uu[9], uu[10], uu[11],
                   uu[12], uu[13], uu[14], uu[15]);
        memcpy(h + H_UUID, str, 36);
    }
    if (gnutls_rnd(GNUTLS_RND_KEY, mk, key_bytes) < 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, h + H_MK_SALT, LUKS_SALT_LEN) < 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, h + H_SLOTS + S_SALT,
                   LUKS_SALT_LEN) < 0) {
        FAIL("Unable to generate random data");
    }
    /* As QEMU: the master key digest costs an eighth of iter-time. */
    {
        uint32_t slot_iters = luks_iterations(c.hash_alg, c.iter_time);
        uint32_t mk_iters = MAX(slot_iters / 8, LUKS_MIN_ITERS);

        put_be32(h + H_MK_ITER, mk_iters);
        luks_pbkdf2(c.hash_alg, mk, key_bytes, h + H_MK_SALT, LUKS_SALT_LEN,
               mk_iters, h + H_MK_DIGEST, LUKS_DIGEST_LEN);
        put_be32(h + H_SLOTS + S_ITER, slot_iters);
        luks_pbkdf2(c.hash_alg, (const uint8_t *)pw, strlen(pw),
               h + H_SLOTS + S_SALT, LUKS_SALT_LEN, slot_iters, slot_key,
               key_bytes);
    }
    for (int i = 0; i < LUKS_SLOTS; i++) {
        uint8_t *sl = h + H_SLOTS + i * SLOT_SIZE;

        put_be32(sl + S_ACTIVE, i == 0 ? LUKS_SLOT_ENABLED
                                       : LUKS_SLOT_DISABLED);
        put_be32(sl + S_KEY_OFFSET,
                 (uint32_t)(LUKS_ALIGN_SECTORS + i * slot_sectors));
        put_be32(sl + S_STRIPES, LUKS_STRIPES);
    }
    split = g_malloc0(split_pad);
    if (!af_split(hash_of(c.hash_alg), mk, key_bytes, LUKS_STRIPES, split)) {
        FAIL("Unable to generate random data");
    }
    if (!cipher_init(&ciph, c.cipher_mode, c.ivgen_alg, c.ivgen_hash_alg,
                     slot_key, key_bytes, errp)) {
        return FALSE;
    }
    cipher_run(&ciph, TRUE, 0, split, split, split_pad);
    cipher_free(&ciph);
    memset(mk, 0, sizeof(mk));
    memset(slot_key, 0, sizeof(slot_key));
    memset(pw, 0, strlen(pw));

    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, LUKS_HEADER_SIZE, h, 0);
    }
    if (ret == 0) {
        ret = bd_node_pwrite(file, LUKS_ALIGN_SECTORS * LUKS_SECTOR,
                             split_pad, split, 0);
    }
    if (ret == 0) {
        ret = bd_node_truncate(file, payload * LUKS_SECTOR + c.size);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write LUKS image: %s", g_strerror(-ret));
    }
    return TRUE;
}

const BdDriver bd_luks_driver = {
    .name = "luks",
    .options = luks_options,
    .is_format = TRUE,
    .open = luks_open,
    .close = luks_close,
    .reopen_prepare = bd_reopen_prepare_fixed,
    .refresh_limits = luks_refresh_limits,
    .pread = luks_pread,
    .pwrite = luks_pwrite,
    .truncate = luks_truncate,
    .query_image_info = luks_query_image_info,
    .create_options = luks_create_options,
    .create = luks_create,
};
