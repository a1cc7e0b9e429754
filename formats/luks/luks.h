/* SPDX-License-Identifier: MIT */
/* The luks driver's internals: the LUKS1 on-disk layout, the QAPI enums
 * of its creation options, and the nettle-backed crypto (crypto.c). */
#ifndef BD_FORMATS_LUKS_H
#define BD_FORMATS_LUKS_H

#include <glib.h>
#include <stdint.h>
#include <nettle/nettle-meta.h>
#include "graph/error.h"
#include "graph/schema.h"

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

/* Bounds on the PBKDF2 work a header may ask of an open, which runs on
 * the main thread: the counts come from the file, and 2^32 - 1 in each
 * slot would keep QMP waiting for hours.  Work is counted as PBKDF2
 * iterations times output blocks (one HMAC each, ceil(key bytes /
 * digest size)), so that the limit on iterations is the same time for
 * every hash and key size.  cryptsetup luksFormat --type luks1 and
 * qemu-img create -f luks (iter-time 2 s) measured 3.8 M and 6.6 M
 * iterations of sha256 for 64-byte keys (13 M blocks) here, on a 3 GHz
 * EPYC with SHA-NI where nettle runs 7.9 M sha256 blocks a second; a
 * machine twice as fast makes 26 M.  The limits are ten times that:
 * a slot 2^28 blocks (34 s of sha256 here, 2 min of sha512), the
 * master key digest (1/8 of iter-time: 1.9 M here) 2^26, and all the
 * slots an open may try, each with the digest, 2^30 together (2 min of
 * sha256 here, 8 of sha512; eight slots made on that fast machine need
 * 240 M).  Checked before any PBKDF2 runs. */
#define LUKS_MAX_SLOT_WORK  (1u << 28)
#define LUKS_MAX_MK_ITERS   (1u << 26)
#define LUKS_MAX_OPEN_WORK  ((uint64_t)1 << 30)

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
typedef enum { MODE_ECB, MODE_CBC, MODE_XTS, MODE_CTR } LuksMode;
typedef enum { IV_PLAIN, IV_PLAIN64, IV_ESSIV } LuksIvAlg;
typedef enum { HASH_MD5, HASH_SHA1, HASH_SHA224, HASH_SHA256, HASH_SHA384,
               HASH_SHA512, HASH_RIPEMD160 } LuksHashAlg;

typedef struct {
    const struct nettle_cipher *aes;   /* nettle_aes128/192/256 */
    LuksMode mode;                     /* MODE_CBC or MODE_XTS */
    LuksIvAlg ivalg;
    void *enc, *dec, *tweak, *essiv;   /* key schedules (aes contexts) */
    const struct nettle_cipher *essiv_aes;
} LuksCipher;

extern const char *const bd_luks_cipher_alg_names[];
extern const char *const bd_luks_cipher_mode_names[];
extern const char *const bd_luks_ivgen_names[];
extern const char *const bd_luks_hash_names[];

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* nettle's hash for a supported LUKS hash (sha1, sha256, sha512), else NULL. */
const struct nettle_hash *bd_luks_hash_of(LuksHashAlg h);
/* The hash named 'name', or FALSE with "Hash algorithm '%s' not supported". */
gboolean bd_luks_hash_lookup(const char *name, LuksHashAlg *out,
                             GError **errp);
/* PBKDF2-HMAC of 'h' ('h' supported). */
void bd_luks_pbkdf2(LuksHashAlg h, const uint8_t *pw, size_t pwlen,
                    const uint8_t *salt, size_t saltlen, unsigned iter,
                    uint8_t *out, size_t outlen);
/* The most PBKDF2 iterations of 'h' ('h' supported) blockd opens in a
 * key slot of 'key_bytes' bytes: LUKS_MAX_SLOT_WORK over the blocks. */
uint32_t bd_luks_slot_iters_max(LuksHashAlg h, size_t key_bytes);
/* The AF splitter: merge 'stripes' stripes of 'len' bytes into 'out';
 * split 'key' into them (FALSE: no random bytes). */
void bd_luks_af_merge(const struct nettle_hash *hh, const uint8_t *split,
                      size_t len, uint32_t stripes, uint8_t *out);
gboolean bd_luks_af_split(const struct nettle_hash *hh, const uint8_t *key,
                          size_t len, uint32_t stripes, uint8_t *split);
/* nettle's AES of a 16, 24 or 32-byte key, else NULL. */
const struct nettle_cipher *bd_luks_aes_of_bytes(size_t n);
/* Key schedules for 'mode' with 'key' (XTS: data key, then tweak key)
 * and for essiv the one of 'ivhash' of the key; wiped by _free. */
gboolean bd_luks_cipher_init(LuksCipher *c, LuksMode mode, LuksIvAlg ivalg,
                             LuksHashAlg ivhash, const uint8_t *key,
                             size_t keylen, GError **errp);
void bd_luks_cipher_free(LuksCipher *c);
/* En- or decrypt 'len' bytes (a multiple of 512) from 'src' to 'dst'
 * (may be the same), the first sector being number 'sector'.  Any
 * thread: the schedules are only read. */
void bd_luks_cipher_run(const LuksCipher *c, gboolean encrypt,
                        uint64_t sector, uint8_t *dst, const uint8_t *src,
                        size_t len);

/* A LUKS1 header and its unlocked master key (block.c), for the luks
 * driver and qcow2's encrypt.format=luks.  Offsets are from the start
 * of the LUKS header. */
typedef int (*BdLuksReadFn)(void *opaque, uint64_t offset, size_t len,
                            void *buf);
typedef struct BdLuksBlock {
    const char *node_name;
    gboolean ready;                    /* c is set up */
    uint64_t payload;                  /* byte offset of the payload */
    uint8_t header[LUKS_HEADER_SIZE];  /* as on disk, for queries */
    LuksCipher c;
    char cipher_alg[16], cipher_mode[8], ivgen_alg[8], ivgen_hash[8];
    char hash_alg[8];
} BdLuksBlock;

/* Read and check the header ('size' bytes are available to it: the
 * file, or qcow2's header region) with 'read', and unlock a key slot
 * with 'pw'; QEMU's error texts. */
gboolean bd_luks_block_open(BdLuksBlock *b, const char *node_name,
                            uint64_t size, BdLuksReadFn read, void *opaque,
                            const char *pw, GError **errp);
void bd_luks_block_free(BdLuksBlock *b);
/* QCryptoBlockInfoLUKS's members (cipher-alg ... slots) into 'data'. */
void bd_luks_block_info(const BdLuksBlock *b, GVariantDict *data);

/* blockdev-create (create.c). */
extern const BdSchemaField bd_luks_create_options[];
gboolean bd_luks_create(GVariant *options, GError **errp);
/* For qcow2: the LUKS header and key material made from 'options'
 * (QCryptoBlockCreateOptionsLUKS), 'len' bytes (the payload offset). */
gboolean bd_luks_create_header(GVariant *options, uint8_t **out,
                               size_t *len, GError **errp);

#endif
