/* SPDX-License-Identifier: MIT */
/* A LUKS1 header and its key slots, wherever they are stored: the luks
 * driver reads them at the start of its file, qcow2 in the clusters
 * its full disk encryption header extension points to.  Parses and
 * checks the header as QEMU does, unlocks a key slot with the
 * passphrase and keeps the master key's cipher for the data path.
 *
 * Unlocking runs PBKDF2 as often as the header says: up to minutes
 * within blockd's limits (luks.h).  An open that may leave work to a
 * thread (bd_open_offload_enabled: blockdev-add from a monitor) reads
 * the key material and queues the unlock when it is longer than
 * LUKS_INLINE_WORK, so that the main loop and every other client go on
 * meanwhile; the open made again afterwards takes the result.
 *
 * Thread model: unlock_run runs on the caller's worker thread with its
 * own copy of the header, key material and passphrase; the results it
 * leaves are guarded by results_lock.  Everything else runs where the
 * open runs (the main thread). */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/main-thread.h"
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
                                  uint64_t *work_out, GError **errp)
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
    *work_out = work;
    return TRUE;
}

/* The bytes of one slot's key material, padded to whole sectors. */
static size_t split_padded(const LuksParams *p)
{
    size_t split_len = (size_t)p->key_bytes * LUKS_STRIPES;

    return (split_len + LUKS_SECTOR - 1) & ~(size_t)(LUKS_SECTOR - 1);
}

/* Try the passphrase on slot 'i': 1 and the master key in 'mk' if it
 * opens it, 0 if not, -errno on a read error. */
static int luks_try_slot(BdLuksReadFn read, void *opaque, const uint8_t *h,
                         const LuksParams *p, int i, const char *pw,
                         uint8_t *mk)
{
    const uint8_t *sl = h + H_SLOTS + i * SLOT_SIZE;
    size_t split_pad = split_padded(p);
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


static gboolean slot_active(const uint8_t *h, int i)
{
    return get_be32(h + H_SLOTS + i * SLOT_SIZE + S_ACTIVE) ==
           LUKS_SLOT_ENABLED;
}

/* Try the passphrase on the active slots in turn: 1 and the master key
 * in 'mk' when one opens, 0 when none does, -errno on a read error. */
static int luks_unlock(BdLuksReadFn read, void *opaque, const uint8_t *h,
                       const LuksParams *p, const char *pw, uint8_t *mk)
{
    int ret = 0;

    for (int i = 0; i < LUKS_SLOTS && ret == 0; i++) {
        if (slot_active(h, i)) {
            ret = luks_try_slot(read, opaque, h, p, i, pw, mk);
        }
    }
    return ret;
}

/* --- an unlock left to a thread --- */

/* Unlocks longer than this many PBKDF2 blocks (0.13 s of sha256 on a
 * 3 GHz EPYC) go to a thread when the open may leave work there. */
#define LUKS_INLINE_WORK ((uint64_t)1 << 20)

/* Everything an unlock reads, copied at open time, and its result. */
typedef struct {
    uint8_t h[LUKS_HEADER_SIZE];
    LuksParams p;
    size_t split_pad;               /* one slot's key material, padded */
    uint8_t *material;              /* the active slots' key material */
    uint64_t offset[LUKS_SLOTS];    /* where each slot's is, in 'material' */
    char *pw;
    uint8_t fingerprint[32];        /* SHA-256 of the above */
    int ret;                        /* set by unlock_run, before it lists */
    uint8_t mk[64];                 /* the work in 'results' */
} UnlockWork;

static GMutex results_lock;
static GList *results;              /* UnlockWork *, run; results_lock */

/* BdLuksReadFn over the copied key material. */
static int material_read(void *opaque, uint64_t offset, size_t len,
                         void *buf)
{
    UnlockWork *w = opaque;

    for (int i = 0; i < LUKS_SLOTS; i++) {
        uint64_t at = (uint64_t)get_be32(w->h + H_SLOTS + i * SLOT_SIZE +
                                         S_KEY_OFFSET) * LUKS_SECTOR;
        if (slot_active(w->h, i) && at == offset && len <= w->split_pad) {
            memcpy(buf, w->material + w->offset[i], len);
            return 0;
        }
    }
    return -EIO;
}

static void unlock_run(gpointer data)
{
    UnlockWork *w = data;
    uint8_t mk[64];
    int ret = luks_unlock(material_read, w, w->h, &w->p, w->pw, mk);

    g_mutex_lock(&results_lock);
    w->ret = ret;
    memcpy(w->mk, mk, sizeof(mk));
    results = g_list_prepend(results, w);
    g_mutex_unlock(&results_lock);
    memset(mk, 0, sizeof(mk));
}

static void unlock_drop(gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    g_mutex_lock(&results_lock);
    results = g_list_remove(results, data);
    g_mutex_unlock(&results_lock);
}

static void unlock_free(gpointer data)
{
    UnlockWork *w = data;

    if (w->material) {
        memset(w->material, 0, LUKS_SLOTS * w->split_pad);
        g_free(w->material);
    }
    if (w->pw) {
        memset(w->pw, 0, strlen(w->pw));
        g_free(w->pw);
    }
    memset(w, 0, sizeof(*w));
    g_free(w);
}

static const BdOpenOffloadOps unlock_ops = {
    .run = unlock_run, .drop = unlock_drop, .free = unlock_free,
};

/* The result of an unlock with the same inputs as 'w', if a thread
 * made one: 1 or 0 as luks_unlock (mk set for 1), -1 when none. */
static int result_find(const UnlockWork *w, uint8_t *mk)
{
    int ret = -1;

    g_mutex_lock(&results_lock);
    for (GList *l = results; l; l = l->next) {
        const UnlockWork *r = l->data;

        if (!memcmp(r->fingerprint, w->fingerprint,
                               sizeof(w->fingerprint))) {
            ret = r->ret;
            memcpy(mk, r->mk, sizeof(r->mk));
            break;
        }
    }
    g_mutex_unlock(&results_lock);
    return ret;
}

/* Copy what an unlock reads into a new UnlockWork: NULL with -errno
 * in *ret on a read error. */
static UnlockWork *unlock_capture(BdLuksReadFn read, void *opaque,
                                  const uint8_t *h, const LuksParams *p,
                                  const char *pw, int *ret)
{
    UnlockWork *w = g_new0(UnlockWork, 1);
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = sizeof(w->fingerprint);
    uint64_t used = 0;

    memcpy(w->h, h, LUKS_HEADER_SIZE);
    w->p = *p;
    w->split_pad = split_padded(p);
    w->material = g_malloc0(LUKS_SLOTS * w->split_pad);
    w->pw = g_strdup(pw);
    for (int i = 0; i < LUKS_SLOTS; i++) {
        if (!slot_active(h, i)) {
            continue;
        }
        w->offset[i] = used;
        *ret = read(opaque, (uint64_t)get_be32(h + H_SLOTS + i * SLOT_SIZE +
                                               S_KEY_OFFSET) * LUKS_SECTOR,
                    w->split_pad, w->material + used);
        if (*ret < 0) {
            unlock_free(w);
            return NULL;
        }
        used += w->split_pad;
    }
    g_checksum_update(sum, w->h, LUKS_HEADER_SIZE);
    g_checksum_update(sum, w->material, used);
    g_checksum_update(sum, (const guchar *)pw, strlen(pw) + 1);
    g_checksum_get_digest(sum, w->fingerprint, &len);
    return w;
}

/* luks_unlock, or, for a long one when the open may leave work to a
 * thread, its result from the thread: -EINPROGRESS when it is queued
 * now (the open fails and is made again). */
static int luks_unlock_offloadable(BdLuksReadFn read, void *opaque,
                                   const uint8_t *h, const LuksParams *p,
                                   uint64_t work, const char *pw,
                                   uint8_t *mk)
{
    UnlockWork *w;
    int ret = 0;

    if (work <= LUKS_INLINE_WORK || !bd_in_main_thread() ||
        !bd_open_offload_enabled()) {
        return luks_unlock(read, opaque, h, p, pw, mk);
    }
    w = unlock_capture(read, opaque, h, p, pw, &ret);
    if (!w) {
        return ret;
    }
    ret = result_find(w, mk);
    if (ret >= 0) {
        unlock_free(w);
        return ret;
    }
    bd_open_offload_queue(&unlock_ops, w);
    return -EINPROGRESS;
}


gboolean bd_luks_block_open(BdLuksBlock *s, const char *node_name,
                            uint64_t file_size, BdLuksReadFn read,
                            void *opaque, const char *pw, GError **errp)
{
    uint8_t h[LUKS_HEADER_SIZE], mk[64];
    LuksParams p;
    uint64_t work = 0;
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
        !luks_check_layout(s, h, &p, file_size, &work, errp)) {
        return FALSE;
    }
    ret = luks_unlock_offloadable(read, opaque, h, &p, work, pw, mk);
    if (ret == -EINPROGRESS) {
        FAIL("Node '%s': luks: unlocking a key slot was left to a thread",
             node_name);
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
