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
 * All the cryptography is nettle's (crypto.c); this file reads and
 * checks the header, unlocks a key slot and runs the data path;
 * create.c makes new images.  The key schedules are set once at open
 * and only read afterwards, so data callbacks on any thread share them
 * without a lock.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/io.h"
#include "graph/node.h"
#include "objects/secret.h"
#include "formats/json-filename.h"
#include "formats/luks/luks.h"

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

/* --- data path --- */

static int luks_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                      void *buf, int flags)
{
    LuksState *s = node->opaque;
    int ret = bd_child_pread(s->file, s->payload + offset, bytes, buf, 0);

    if (ret == 0) {
        bd_luks_cipher_run(&s->c, FALSE, offset / LUKS_SECTOR, buf, buf, bytes);
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

        bd_luks_cipher_run(&s->c, TRUE, offset / LUKS_SECTOR, bounce, p, n);
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

static void luks_close(BdNode *node)
{
    LuksState *s = node->opaque;

    if (!s) {
        return;
    }
    bd_luks_cipher_free(&s->c);
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
    if (!bd_luks_cipher_init(&s->c, p.mode, p.ivalg, p.ivhash, mk, p.key_bytes,
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
    g_variant_dict_init(&spec, NULL);
    g_variant_dict_insert(&spec, "type", "s", "luks");
    g_variant_dict_insert_value(&spec, "data", g_variant_dict_end(&data));
    g_variant_dict_insert_value(image, "format-specific",
                                g_variant_dict_end(&spec));
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
    g_variant_dict_insert(image, "encrypted", "b", TRUE);
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
    .create_options = bd_luks_create_options,
    .create = bd_luks_create,
};
