/* SPDX-License-Identifier: MIT */
/* A LUKS1 header and its key slots, wherever they are stored: the luks
 * driver reads them at the start of its file, qcow2 in the clusters
 * its full disk encryption header extension points to.  Parses and
 * checks the header as QEMU does, unlocks a key slot with the
 * passphrase and keeps the master key's cipher for the data path. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/node.h"
#include "formats/luks/luks.h"


typedef struct {
    LuksMode mode;
    LuksIvAlg ivalg;
    LuksHashAlg ivhash, hash;
    uint32_t key_bytes;
} LuksParams;

/* The cipher name, mode string ("<mode>-<ivgen>[:<hash>]") and hash of
 * the header, as QEMU reads them. */
static gboolean luks_parse_params(BdLuksBlock *s, const uint8_t *h,
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
        if (!bd_luks_hash_lookup(ivhash, &p->ivhash, errp)) {
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
    if (strcmp(name, "aes") != 0 || !bd_luks_aes_of_bytes(aes) ||
        (p->mode == MODE_XTS && p->key_bytes % 2)) {
        FAIL("Cipher name '%s' with key size %" PRIu32 " bytes not "
             "supported", name, p->key_bytes);
    }
    if (!bd_luks_hash_lookup(hash, &p->hash, errp)) {
        return FALSE;
    }
    for (int i = 0; bd_luks_ivgen_names[i]; i++) {
        if (strcmp(ivgen, bd_luks_ivgen_names[i]) == 0) {
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
static gboolean luks_check_layout(BdLuksBlock *s, const uint8_t *h,
                                  const LuksParams *p, uint64_t file_size,
                                  GError **errp)
{
    const char *name = s->node_name;
    uint64_t payload = get_be32(h + H_PAYLOAD_OFFSET);
    uint64_t split_sectors = ((uint64_t)p->key_bytes * LUKS_STRIPES +
                              LUKS_SECTOR - 1) / LUKS_SECTOR;
    uint32_t mk_iters = get_be32(h + H_MK_ITER);
    uint32_t slot_max = bd_luks_slot_iters_max(p->hash, p->key_bytes);
    uint32_t blocks = LUKS_MAX_SLOT_WORK / slot_max;
    uint64_t work = 0;

    if (mk_iters == 0) {
        FAIL("LUKS key iteration count is zero");
    }
    if (mk_iters > LUKS_MAX_MK_ITERS) {
        FAIL("Node '%s': luks: the master key digest has %" PRIu32 " PBKDF2 "
             "iterations, more than blockd's limit of %u", name, mk_iters,
             LUKS_MAX_MK_ITERS);
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
        if (get_be32(sl + S_ITER) > slot_max) {
            FAIL("Node '%s': luks: key slot %d has %" PRIu32 " PBKDF2 "
                 "iterations, more than blockd's limit of %" PRIu32 " for "
                 "%s with a %" PRIu32 "-byte key", name, i,
                 get_be32(sl + S_ITER), slot_max, s->hash_alg, p->key_bytes);
        }
        work += (uint64_t)get_be32(sl + S_ITER) * blocks + mk_iters;
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
    /* Each slot within its limit, but eight of them tried in turn. */
    if (work > LUKS_MAX_OPEN_WORK) {
        FAIL("Node '%s': luks: the key slots together need %" PRIu64
             " PBKDF2 blocks to try, more than blockd's limit of %" PRIu64,
             name, work, LUKS_MAX_OPEN_WORK);
    }
    return TRUE;
}

/* Try the passphrase on slot 'i': 1 and the master key in 'mk' if it
 * opens it, 0 if not, -errno on a read error. */
static int luks_try_slot(BdLuksBlock *s, BdLuksReadFn read, void *opaque, const uint8_t *h, const LuksParams *p,
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
    ret = read(opaque, (uint64_t)get_be32(sl + S_KEY_OFFSET) * LUKS_SECTOR,
               split_pad, split);
    if (ret < 0) {
        return ret;
    }
    bd_luks_pbkdf2(p->hash, (const uint8_t *)pw, strlen(pw), sl + S_SALT,
           LUKS_SALT_LEN, get_be32(sl + S_ITER), slot_key, p->key_bytes);
    if (!bd_luks_cipher_init(&c, p->mode, p->ivalg, p->ivhash, slot_key,
                     p->key_bytes, NULL)) {
        return -EINVAL;
    }
    bd_luks_cipher_run(&c, FALSE, 0, split, split, split_pad);
    bd_luks_cipher_free(&c);
    bd_luks_af_merge(bd_luks_hash_of(p->hash), split, p->key_bytes, LUKS_STRIPES, mk);
    bd_luks_pbkdf2(p->hash, mk, p->key_bytes, h + H_MK_SALT, LUKS_SALT_LEN,
           get_be32(h + H_MK_ITER), digest, LUKS_DIGEST_LEN);
    memset(slot_key, 0, sizeof(slot_key));
    memset(split, 0, split_pad);
    return memcmp(digest, h + H_MK_DIGEST, LUKS_DIGEST_LEN) == 0;
}


gboolean bd_luks_block_open(BdLuksBlock *s, const char *node_name,
                            uint64_t file_size, BdLuksReadFn read,
                            void *opaque, const char *pw, GError **errp)
{
    uint8_t h[LUKS_HEADER_SIZE], mk[64];
    LuksParams p;
    int ret = 0;

    memset(s, 0, sizeof(*s));
    s->node_name = node_name;
    if (file_size < LUKS_HEADER_SIZE) {
        FAIL("Node '%s': luks: the file (%" PRIu64 " bytes) is too short "
             "for a LUKS header (%d bytes)", node_name, file_size,
             LUKS_HEADER_SIZE);
    }
    ret = read(opaque, 0, LUKS_HEADER_SIZE, h);
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
        !luks_check_layout(s, h, &p, file_size, errp)) {
        return FALSE;
    }
    ret = 0;
    for (int i = 0; i < LUKS_SLOTS && ret == 0; i++) {
        if (get_be32(h + H_SLOTS + i * SLOT_SIZE + S_ACTIVE) ==
            LUKS_SLOT_ENABLED) {
            ret = luks_try_slot(s, read, opaque, h, &p, i, pw, mk);
        }
    }
    if (ret < 0) {
        FAIL("Unable to read LUKS key slot: %s", g_strerror(-ret));
    }
    if (ret == 0) {
        FAIL("Invalid password, cannot unlock any keyslot");
    }
    if (!bd_luks_cipher_init(&s->c, p.mode, p.ivalg, p.ivhash, mk, p.key_bytes,
                     errp)) {
        return FALSE;
    }
    memset(mk, 0, sizeof(mk));
    s->payload = (uint64_t)get_be32(h + H_PAYLOAD_OFFSET) * LUKS_SECTOR;
    s->ready = TRUE;
    return TRUE;
}
void bd_luks_block_info(const BdLuksBlock *s, GVariantDict *data_out)
{
    GVariantDict data;
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
        g_variant_dict_insert_value(&data, "uuid", g_variant_new_take_string(bd_query_string(uuid)));
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
    {
        g_autoptr(GVariant) d = g_variant_ref_sink(g_variant_dict_end(&data));
        GVariantIter it;
        const char *k;
        GVariant *v;

        g_variant_iter_init(&it, d);
        while (g_variant_iter_next(&it, "{&sv}", &k, &v)) {
            g_variant_dict_insert_value(data_out, k, v);
            g_variant_unref(v);
        }
    }
}

void bd_luks_block_free(BdLuksBlock *s)
{
    if (s->ready) {
        bd_luks_cipher_free(&s->c);
    }
    memset(s, 0, sizeof(*s));
}
