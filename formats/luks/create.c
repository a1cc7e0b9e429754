/* SPDX-License-Identifier: MIT */
/* blockdev-create for luks (BlockdevCreateOptionsLUKS): a LUKS1 header
 * with the passphrase in key slot 0, laid out as QEMU and cryptsetup do
 * (key material from 4 KiB on, each slot 4 KiB aligned, the payload
 * after the eighth).  Runs on the create job's thread. */
#define G_LOG_DOMAIN "blockd-formats"

#include <inttypes.h>
#include <string.h>
#include <gnutls/crypto.h>
#include "graph/io.h"
#include "graph/node.h"
#include "objects/secret.h"
#include "formats/create-util.h"
#include "formats/luks/luks.h"

static const BdSchemaType cipher_alg_type = {
    .name = "QCryptoCipherAlgorithm", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_luks_cipher_alg_names };
static const BdSchemaType cipher_mode_type = {
    .name = "QCryptoCipherMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_luks_cipher_mode_names };
static const BdSchemaType ivgen_type = {
    .name = "QCryptoIVGenAlgorithm", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_luks_ivgen_names };
static const BdSchemaType hash_type = {
    .name = "QCryptoHashAlgorithm", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_luks_hash_names };
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

const BdSchemaField bd_luks_create_options[] = {
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
BD_SCHEMA_DEFINE_AUTO(LuksCreateOptions, bd_luks_create_options)

/* PBKDF2 iterations of 'hash' that take about 'ms' milliseconds here
 * (QEMU's and cryptsetup's benchmark), at least LUKS_MIN_ITERS. */
static uint32_t luks_iterations(LuksHashAlg hash, uint64_t ms)
{
    static const uint8_t pw[] = "benchmark", salt[LUKS_SALT_LEN];
    uint8_t out[32];
    uint64_t iters = 1 << 12, elapsed, want;

    for (;;) {
        gint64 t0 = g_get_monotonic_time();
        bd_luks_pbkdf2(hash, pw, sizeof(pw) - 1, salt, sizeof(salt), (unsigned)iters,
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

/* The LUKS header and slot 0's key material for 'c' and passphrase
 * 'pw', in a zero-filled buffer of the payload offset's length. */
static gboolean luks_build(const LuksCreateOptions *c, const char *pw,
                           uint8_t **out, size_t *out_len, GError **errp)
{
    g_autofree uint8_t *split = NULL;
    g_autofree uint8_t *img = NULL;
    uint8_t h[LUKS_HEADER_SIZE] = { 0 }, mk[64], slot_key[64], uu[16];
    size_t aes, key_bytes, split_len, split_pad;
    uint64_t slot_sectors, payload;
    LuksCipher ciph;
    char mode[32];

    if (c->cipher_alg > ALG_AES_256) {
        FAIL("Cipher algorithm '%s' not supported",
             bd_luks_cipher_alg_names[c->cipher_alg]);
    }
    if (c->cipher_mode != MODE_XTS && c->cipher_mode != MODE_CBC) {
        FAIL("Cipher mode '%s' not supported",
             bd_luks_cipher_mode_names[c->cipher_mode]);
    }
    if (!bd_luks_hash_of(c->hash_alg)) {
        FAIL("Hash algorithm '%s' not supported", bd_luks_hash_names[c->hash_alg]);
    }
    if (c->ivgen_alg == IV_ESSIV && !bd_luks_hash_of(c->ivgen_hash_alg)) {
        FAIL("Hash algorithm '%s' not supported",
             bd_luks_hash_names[c->ivgen_hash_alg]);
    }
    if (c->iter_time < 0) {
        FAIL("Parameter 'iter-time' expects a non-negative value");
    }

    aes = 16 + 8 * (size_t)c->cipher_alg;
    key_bytes = c->cipher_mode == MODE_XTS ? 2 * aes : aes;
    split_len = key_bytes * LUKS_STRIPES;
    split_pad = (split_len + LUKS_SECTOR - 1) & ~(size_t)511;
    slot_sectors = (split_pad / LUKS_SECTOR + LUKS_ALIGN_SECTORS - 1) /
                   LUKS_ALIGN_SECTORS * LUKS_ALIGN_SECTORS;
    payload = LUKS_ALIGN_SECTORS + LUKS_SLOTS * slot_sectors;
    g_snprintf(mode, sizeof(mode), "%s-%s%s%s",
               bd_luks_cipher_mode_names[c->cipher_mode], bd_luks_ivgen_names[c->ivgen_alg],
               c->has_ivgen_hash_alg || c->ivgen_alg == IV_ESSIV ? ":" : "",
               c->has_ivgen_hash_alg || c->ivgen_alg == IV_ESSIV ?
               bd_luks_hash_names[c->ivgen_hash_alg] : "");
    memcpy(h + H_MAGIC, LUKS_MAGIC, LUKS_MAGIC_LEN);
    h[H_VERSION + 1] = LUKS_VERSION;
    strcpy((char *)h + H_CIPHER_NAME, "aes");
    strcpy((char *)h + H_CIPHER_MODE, mode);
    strcpy((char *)h + H_HASH_SPEC, bd_luks_hash_names[c->hash_alg]);
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
        uint32_t slot_iters = luks_iterations(c->hash_alg, c->iter_time);
        uint32_t mk_iters = MAX(slot_iters / 8, LUKS_MIN_ITERS);
        uint32_t slot_max = bd_luks_slot_iters_max(c->hash_alg, key_bytes);

        /* An image blockd would refuse to open is not made. */
        if (slot_iters > slot_max) {
            FAIL("Parameter 'iter-time' of %" PRId64 " ms gives %" PRIu32
                 " PBKDF2 iterations, more than blockd opens (%" PRIu32 ")",
                 c->iter_time, slot_iters, slot_max);
        }
        put_be32(h + H_MK_ITER, mk_iters);
        bd_luks_pbkdf2(c->hash_alg, mk, key_bytes, h + H_MK_SALT, LUKS_SALT_LEN,
               mk_iters, h + H_MK_DIGEST, LUKS_DIGEST_LEN);
        put_be32(h + H_SLOTS + S_ITER, slot_iters);
        bd_luks_pbkdf2(c->hash_alg, (const uint8_t *)pw, strlen(pw),
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
    if (!bd_luks_af_split(bd_luks_hash_of(c->hash_alg), mk, key_bytes, LUKS_STRIPES, split)) {
        FAIL("Unable to generate random data");
    }
    if (!bd_luks_cipher_init(&ciph, c->cipher_mode, c->ivgen_alg, c->ivgen_hash_alg,
                     slot_key, key_bytes, errp)) {
        return FALSE;
    }
    bd_luks_cipher_run(&ciph, TRUE, 0, split, split, split_pad);
    bd_luks_cipher_free(&ciph);
    memset(mk, 0, sizeof(mk));
    memset(slot_key, 0, sizeof(slot_key));

    img = g_try_malloc0(payload * LUKS_SECTOR);
    if (!img) {
        FAIL("Could not allocate the LUKS header");
    }
    memcpy(img, h, LUKS_HEADER_SIZE);
    memcpy(img + LUKS_ALIGN_SECTORS * LUKS_SECTOR, split, split_pad);
    *out = g_steal_pointer(&img);
    *out_len = payload * LUKS_SECTOR;
    return TRUE;
}

gboolean bd_luks_create_header(GVariant *options, uint8_t **out,
                               size_t *len, GError **errp)
{
    g_auto(LuksCreateOptions) c = { 0 };
    g_autofree char *pw = NULL;
    gboolean ok;

    bd_schema_decode(bd_luks_create_options, options, &c);
    if (!c.key_secret) {
        FAIL("Parameter 'key-secret' is required for cipher");
    }
    pw = bd_secret_lookup_as_utf8(c.key_secret, errp);
    if (!pw) {
        return FALSE;
    }
    ok = luks_build(&c, pw, out, len, errp);
    memset(pw, 0, strlen(pw));
    return ok;
}

gboolean bd_luks_create(GVariant *options, GError **errp)
{
    g_auto(LuksCreateOptions) c = { 0 };
    g_autofree char *pw = NULL;
    g_autofree uint8_t *img = NULL;
    size_t len;
    BdNode *file;
    int ret;

    bd_schema_decode(bd_luks_create_options, options, &c);
    if (!c.key_secret) {
        FAIL("Parameter 'key-secret' is required for cipher");
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
    if (!luks_build(&c, pw, &img, &len, errp)) {
        return FALSE;
    }
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, len, img, 0);
    }
    if (ret == 0) {
        ret = bd_node_truncate(file, len + c.size);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write LUKS image: %s", g_strerror(-ret));
    }
    return TRUE;
}
