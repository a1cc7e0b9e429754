/* SPDX-License-Identifier: MIT */
/* blockdev-create for qcow2: the BlockdevCreateOptionsQcow2 members,
 * QEMU's option checks in QEMU's order, then bd_qcow2_create() on the
 * node named by 'file' and, if asked, preallocation (prealloc.c).
 *
 * Thread model: bd_qcow2_create_hook runs on the create job's thread.
 * The job has resolved 'file' on the main thread, holds the node and an
 * entry handle with write and resize permission on it, and passes the
 * node's name; bd_formats_create_file_node() finds it again.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <string.h>
#include "graph/error.h"
#include "formats/create-util.h"
#include "formats/qcow2/create-qapi.h"
#include "formats/qcow2/qcow2.h"
#include "formats/luks/luks.h"

typedef enum { QCOW2_VERSION_V2, QCOW2_VERSION_V3 } Qcow2Version;

static const char *const version_values[] = {
    [QCOW2_VERSION_V2] = "v2",
    [QCOW2_VERSION_V3] = "v3",
    NULL };
static const BdSchemaType version_type = {
    .name = "BlockdevQcow2Version", .kind = BD_SCHEMA_ENUM,
    .enum_values = version_values };
static const char *const prealloc_values[] = {
    [QCOW2_PREALLOC_OFF] = "off",
    [QCOW2_PREALLOC_METADATA] = "metadata",
    [QCOW2_PREALLOC_FALLOC] = "falloc",
    [QCOW2_PREALLOC_FULL] = "full",
    NULL };
static const BdSchemaType prealloc_type = {
    .name = "PreallocMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = prealloc_values };
static const char *const compression_values[] = { "zlib", NULL };
static const BdSchemaType compression_type = {
    .name = "Qcow2CompressionType", .kind = BD_SCHEMA_ENUM,
    .enum_values = compression_values };

/* BlockdevCreateOptionsQcow2 */
typedef struct {
    GVariant *file;             /* by now the name of the node (jobs/) */
    GVariant *data_file;
    gboolean data_file_raw;
    gboolean extended_l2;
    guint64 size;
    Qcow2Version version;
    const char *backing_file;
    const char *backing_fmt;
    GVariant *encrypt;
    guint64 cluster_size;
    Qcow2Prealloc preallocation;
    gboolean lazy_refcounts;
    gint64 refcount_bits;
} CreateOptions;

#define C(f) BD_AT(CreateOptions, f)
const BdSchemaField bd_qcow2_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, C(file) },
    { "data-file", &bd_schema_blockdev_ref, TRUE, C(data_file) },
    { "data-file-raw", &bd_schema_bool, TRUE, C(data_file_raw) },
    { "extended-l2", &bd_schema_bool, TRUE, C(extended_l2) },
    { "size", &bd_schema_size, FALSE, C(size) },
    { "version", &version_type, TRUE, C(version),
      .def.i = QCOW2_VERSION_V3 },
    { "backing-file", &bd_schema_str, TRUE, C(backing_file) },
    { "backing-fmt", &bd_blockdev_driver_enum, TRUE, C(backing_fmt) },
    { "encrypt", &bd_schema_any, TRUE, C(encrypt) },
    { "cluster-size", &bd_schema_size, TRUE, C(cluster_size),
      .def.u = 65536 },
    { "preallocation", &prealloc_type, TRUE, C(preallocation),
      .def.i = QCOW2_PREALLOC_OFF },
    { "lazy-refcounts", &bd_schema_bool, TRUE, C(lazy_refcounts) },
    { "refcount-bits", &bd_schema_int, TRUE, C(refcount_bits),
      .def.i = 16 },
    /* zlib, the one type and the default: nothing to choose. */
    { "compression-type", &compression_type, TRUE,
      .flags = BD_FIELD_IGNORED },
    { NULL } };
#undef C
BD_SCHEMA_DEFINE_AUTO(CreateOptions, bd_qcow2_create_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* --- options --- */

static gboolean check_options(const CreateOptions *c, Qcow2CreateOptions *o,
                              GError **errp)
{
    gint64 rbits = c->refcount_bits;
    guint64 cs = c->cluster_size;
    gboolean has_backing = c->backing_file != NULL;

    o->size = c->size;
    o->version = c->version == QCOW2_VERSION_V2 ? 2 : 3;
    o->lazy_refcounts = c->lazy_refcounts;
    o->backing_file = c->backing_file;
    o->backing_format = c->backing_fmt;

    if (o->size % 512) {
        FAIL("Image size must be a multiple of 512 bytes");
    }
    if (c->extended_l2) {
        if (o->version < 3) {
            FAIL("Extended L2 entries are only supported with compatibility "
                 "level 1.1 and above (use version=v3 or greater)");
        }
        FAIL("Extended L2 entries are not supported by this server");
    }
    if (cs < 512 || cs > (1u << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
        FAIL("Cluster size must be a power of two between 512 and 2048k");
    }
    if (has_backing && c->preallocation != QCOW2_PREALLOC_OFF) {
        FAIL("Backing file and preallocation can only be used at the same "
             "time if extended_l2 is on");
    }
    if (o->backing_format && !has_backing) {
        FAIL("Backing format cannot be used without backing file");
    }
    if (o->version < 3 && o->lazy_refcounts) {
        FAIL("Lazy refcounts only supported with compatibility level 1.1 "
             "and above (use version=v3 or greater)");
    }
    if (rbits <= 0 || rbits > 64 || (rbits & (rbits - 1))) {
        FAIL("Refcount width must be a power of two and may not exceed 64 "
             "bits");
    }
    if (o->version < 3 && rbits != 16) {
        FAIL("Different refcount widths than 16 bits require compatibility "
             "level 1.1 or above (use version=v3 or greater)");
    }
    if (c->data_file_raw && !c->data_file) {
        FAIL("data-file-raw requires data-file");
    }
    if (c->data_file) {
        if (o->version < 3) {
            FAIL("External data files are only supported with compatibility "
                 "level 1.1 and above (use version=v3 or greater)");
        }
        FAIL("External data files are not supported by this server");
    }
    if (c->encrypt && c->preallocation != QCOW2_PREALLOC_OFF) {
        FAIL("Preallocation of encrypted qcow2 images is not supported by "
             "this server");
    }
    o->cluster_size = (uint32_t)cs;
    o->refcount_bits = (uint32_t)rbits;
    return TRUE;
}

/* encrypt (QCryptoBlockCreateOptions): format luks with the members of
 * QCryptoBlockCreateOptionsLUKS; the header made by the luks driver. */
static gboolean make_crypto_header(GVariant *encrypt, uint8_t **hdr,
                                   Qcow2CreateOptions *o, GError **errp)
{
    static const char *const known[] = {
        "format", "key-secret", "cipher-alg", "cipher-mode", "ivgen-alg",
        "ivgen-hash-alg", "hash-alg", "iter-time", NULL };
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(NULL);
    g_autoptr(GVariant) luks = NULL;
    const char *format = NULL;
    GVariantIter it;
    const char *key;
    GVariant *v;

    if (!g_variant_is_of_type(encrypt, G_VARIANT_TYPE_VARDICT)) {
        FAIL("Invalid parameter type for 'encrypt', expected: object");
    }
    g_variant_iter_init(&it, encrypt);
    while (g_variant_iter_next(&it, "{&sv}", &key, &v)) {
        g_autoptr(GVariant) val = v;
        gboolean is_int = strcmp(key, "iter-time") == 0;

        if (!g_strv_contains(known, key)) {
            FAIL("Parameter 'encrypt.%s' is unexpected", key);
        }
        if (is_int ? !g_variant_is_of_type(val, G_VARIANT_TYPE_INT64)
                   : !g_variant_is_of_type(val, G_VARIANT_TYPE_STRING)) {
            FAIL("Invalid parameter type for 'encrypt.%s', expected: %s",
                 key, is_int ? "integer" : "string");
        }
        if (strcmp(key, "format") == 0) {
            format = g_variant_get_string(val, NULL);
        } else {
            g_variant_dict_insert_value(&d, key, val);
        }
    }
    if (!format) {
        FAIL("Parameter 'encrypt.format' is missing");
    }
    if (strcmp(format, "aes") == 0) {
        FAIL("Creation of AES-CBC encrypted qcow2 images is not supported "
             "by this server; use format 'luks'");
    }
    if (strcmp(format, "luks") != 0) {
        FAIL("Parameter 'encrypt.format' does not accept value '%s'", format);
    }
    luks = g_variant_ref_sink(g_variant_dict_end(&d));
    if (!bd_luks_create_header(luks, hdr, &o->crypto_len, errp)) {
        return FALSE;
    }
    o->crypto_hdr = *hdr;
    return TRUE;
}

gboolean bd_qcow2_create_hook(GVariant *options, GError **errp)
{
    g_auto(CreateOptions) c = { 0 };
    Qcow2CreateOptions o = { 0 };
    g_autofree uint8_t *crypto = NULL;
    BdNode *file;

    bd_schema_decode(bd_qcow2_create_options, options, &c);
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    if (!check_options(&c, &o, errp)) {
        return FALSE;
    }
    if (c.encrypt && !make_crypto_header(c.encrypt, &crypto, &o, errp)) {
        return FALSE;
    }
    if (!bd_qcow2_create(file, &o, errp)) {
        return FALSE;
    }
    if (c.preallocation != QCOW2_PREALLOC_OFF) {
        return bd_qcow2_preallocate(file, o.size, c.preallocation, errp);
    }
    return TRUE;
}
