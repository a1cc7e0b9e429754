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
    BdLuksBlock b;             /* header, master key cipher */
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
        bd_luks_cipher_run(&s->b.c, FALSE, offset / LUKS_SECTOR, buf, buf, bytes);
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

        bd_luks_cipher_run(&s->b.c, TRUE, offset / LUKS_SECTOR, bounce, p, n);
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

static int luks_read_file(void *opaque, uint64_t offset, size_t len,
                          void *buf)
{
    return bd_child_pread(opaque, offset, len, buf, 0);
}

static void luks_close(BdNode *node)
{
    LuksState *s = node->opaque;

    if (!s) {
        return;
    }
    bd_luks_block_free(&s->b);
    g_free(s);
    node->opaque = NULL;
}

static gboolean luks_load(LuksState *s, const char *pw, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);

    if (file_size < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-file_size));
    }
    if (!bd_luks_block_open(&s->b, s->node->node_name, (uint64_t)file_size,
                            luks_read_file, s->file, pw, errp)) {
        return FALSE;
    }
    s->payload = s->b.payload;
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

    g_variant_dict_init(&data, NULL);
    bd_luks_block_info(&s->b, &data);
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
