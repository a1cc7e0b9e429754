/* SPDX-License-Identifier: MIT */
/* Unit tests of the object registry (ids, references, users blocking
 * deletion, lookups from other threads) and of the 'secret' type
 * (inline, file, base64, AES-256-CBC encrypted, with QEMU's errors). */
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "graph/error.h"
#include "objects/object.h"
#include "objects/secret.h"

/* --- a test type that counts its frees --- */

static gint frees;

static const BdSchemaType thing_props = {
    .name = "ThingProperties", .kind = BD_SCHEMA_OBJECT };
static const char *const thing_kinds[] = { "thing", NULL };
static const BdObjectType thing_type;

static BdObject *thing_create(const char *id, GVariant *props, GError **errp)
{
    BdObject *obj;

    if (strcmp(id, "refused") == 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "refused");
        return NULL;
    }
    obj = g_new0(BdObject, 1);
    bd_object_init(obj, &thing_type, id);
    return obj;
}

static void thing_free(BdObject *obj)
{
    bd_object_finalize(obj);
    g_free(obj);
    g_atomic_int_inc(&frees);
}

static const BdObjectType thing_type = {
    .name = "test-thing",
    .props = &thing_props,
    .kinds = thing_kinds,
    .create = thing_create,
    .free = thing_free,
};

static void setup(void)
{
    static gboolean done;

    if (!done) {
        done = TRUE;
        bd_objects_register_builtin();
        bd_object_type_register(&thing_type);
    }
}

static void add_thing(const char *id)
{
    g_autoptr(GError) err = NULL;

    g_assert_true(bd_object_add(&thing_type, id, NULL, &err));
    g_assert_no_error(err);
}

static void expect_error(GError *err, const char *msg)
{
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, msg);
}

/* --- registry --- */

static void test_types(void)
{
    gboolean secret = FALSE, thing = FALSE;

    setup();
    g_assert_true(bd_object_type_find("secret") == &bd_secret_type);
    g_assert_null(bd_object_type_find("no-such-type"));
    for (const BdObjectType *const *t = bd_object_types(); *t; t++) {
        secret |= *t == &bd_secret_type;
        thing |= *t == &thing_type;
    }
    g_assert_true(secret && thing);
}

static void test_add_find_del(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GError) err2 = NULL;
    BdObject *obj;
    gint before;

    setup();
    before = g_atomic_int_get(&frees);
    add_thing("t0");
    g_assert_true(bd_object_exists("t0"));
    g_assert_false(bd_object_add(&thing_type, "t0", NULL, &err));
    expect_error(err, "attempt to add duplicate property 't0' to object "
                      "(type 'container')");
    g_assert_false(bd_object_add(&thing_type, "refused", NULL, &err2));
    expect_error(err2, "refused");
    g_assert_false(bd_object_exists("refused"));

    obj = bd_object_find("t0");
    g_assert_nonnull(obj);
    g_assert_cmpstr(obj->id, ==, "t0");
    g_assert_true(bd_object_is_kind(obj, "thing"));
    g_assert_false(bd_object_is_kind(obj, "secret"));
    bd_object_unref(obj);
    obj = bd_object_find_kind("t0", "thing");
    g_assert_nonnull(obj);
    bd_object_unref(obj);
    g_assert_null(bd_object_find_kind("t0", "authz"));
    g_assert_null(bd_object_find("nope"));

    g_assert_true(bd_object_del("t0", NULL));
    g_assert_false(bd_object_exists("t0"));
    g_assert_cmpint(g_atomic_int_get(&frees), ==, before + 1);
    g_clear_error(&err);
    g_assert_false(bd_object_del("t0", &err));
    expect_error(err, "object 't0' not found");
}

static void test_users_block_del(void)
{
    g_autoptr(GError) err = NULL;
    BdObject *obj;

    setup();
    add_thing("used");
    obj = bd_object_find("used");
    bd_object_use(obj);
    g_assert_false(bd_object_del("used", &err));
    expect_error(err, "object 'used' is in use, can not be deleted");
    g_assert_true(bd_object_exists("used"));
    bd_object_unuse(obj);
    bd_object_unref(obj);
    g_assert_true(bd_object_del("used", NULL));
}

/* A reference outlives object-del: the id is free at once, the object
 * goes with the last reference. */
static void test_ref_outlives_del(void)
{
    gint before;
    BdObject *obj;

    setup();
    before = g_atomic_int_get(&frees);
    add_thing("held");
    obj = bd_object_find("held");
    g_assert_true(bd_object_del("held", NULL));
    g_assert_false(bd_object_exists("held"));
    add_thing("held");                  /* the id is free again */
    g_assert_cmpint(g_atomic_int_get(&frees), ==, before);
    g_assert_cmpstr(obj->id, ==, "held");
    bd_object_unref(obj);
    g_assert_cmpint(g_atomic_int_get(&frees), ==, before + 1);
    g_assert_true(bd_object_del("held", NULL));
}

static gint stop_readers;

static gpointer reader_thread(gpointer opaque)
{
    guint found = 0;

    while (!g_atomic_int_get(&stop_readers)) {
        g_autoptr(BdObject) obj = bd_object_find("churn");

        if (obj) {
            g_assert_cmpstr(obj->id, ==, "churn");
            found++;
        }
    }
    return GUINT_TO_POINTER(found);
}

/* Lookups on other threads while the main thread adds and deletes. */
static void test_concurrent_lookups(void)
{
    GThread *threads[4];

    setup();
    g_atomic_int_set(&stop_readers, 0);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
        threads[i] = g_thread_new("reader", reader_thread, NULL);
    }
    for (guint i = 0; i < 2000; i++) {
        add_thing("churn");
        g_assert_true(bd_object_del("churn", NULL));
    }
    g_atomic_int_set(&stop_readers, 1);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
        g_thread_join(threads[i]);
    }
}

static void test_cleanup(void)
{
    gint before;

    setup();
    before = g_atomic_int_get(&frees);
    add_thing("c0");
    add_thing("c1");
    bd_objects_cleanup();
    g_assert_false(bd_object_exists("c0"));
    g_assert_cmpint(g_atomic_int_get(&frees), ==, before + 2);
    bd_objects_cleanup();               /* nothing left: a no-op */
}

/* --- secret --- */

/* AES-256-CBC with PKCS#7 padding: key bytes 0..31, IV bytes 100..115;
 * QEMU decrypts these to the same plaintexts. */
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define IV_B64 "ZGVmZ2hpamtsbW5vcHFycw=="
#define CT_PASSWORD "Pup2r6kyHNfgg9eWEyQyAw=="          /* "password123" */
#define CT_16 "GfDaI073NTsf3vVUW1La/Xvwb9BT4BUGu5GThxDJ0pI="
#define CT_EMPTY "95X26IAv0VGgIaQRUNSraQ=="

static gboolean add_secret(const char *id, const char *props, GError **errp)
{
    g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new_parsed(props));

    if (bd_secret_type.check && !bd_secret_type.check(v, errp)) {
        return FALSE;
    }
    return bd_object_add(&bd_secret_type, id, v, errp);
}

static void expect_secret(const char *id, const void *data, gsize len)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) b = bd_secret_lookup(id, &err);

    g_assert_no_error(err);
    g_assert_nonnull(b);
    g_assert_cmpmem(g_bytes_get_data(b, NULL), g_bytes_get_size(b), data,
                    len);
    g_assert_true(bd_object_del(id, NULL));
}

static void expect_refused(const char *props, const char *msg)
{
    g_autoptr(GError) err = NULL;

    g_assert_false(add_secret("bad", props, &err));
    expect_error(err, msg);
    g_assert_false(bd_object_exists("bad"));
}

static char *temp_file(const void *data, gsize len)
{
    g_autoptr(GError) err = NULL;
    char *path = NULL;
    int fd = g_file_open_tmp("blockd-secret-XXXXXX", &path, &err);

    g_assert_no_error(err);
    close(fd);
    g_assert_true(g_file_set_contents(path, data, len, NULL));
    return path;
}

static void test_secret_plain(void)
{
    g_autofree char *file = temp_file("from a file\n", 12);
    g_autofree char *props = g_strdup_printf("{'file': <'%s'>}", file);

    setup();
    g_assert_true(add_secret("s0", "{'data': <'pw'>}", NULL));
    expect_secret("s0", "pw", 2);
    g_assert_true(add_secret("s0", "{'data': <''>}", NULL));
    expect_secret("s0", "", 0);
    g_assert_true(add_secret("s0", props, NULL));
    expect_secret("s0", "from a file\n", 12);
    g_assert_true(add_secret("s0", "{'data': <'cGFzc3dvcmQ='>, "
                                   "'format': <'base64'>}", NULL));
    expect_secret("s0", "password", 8);
    /* Newlines pass, and GLib's decoder forgives stray padding. */
    g_assert_true(add_secret("s0", "{'data': <'YWJj\nZGVm='>, "
                                   "'format': <'base64'>}", NULL));
    expect_secret("s0", "abcdef", 6);
    g_unlink(file);
}

static void test_secret_errors(void)
{
    static const char nul_b64[] = "YWJj\0YWJj";
    g_autofree char *nul_file = temp_file(nul_b64, sizeof(nul_b64) - 1);
    g_autofree char *both = g_strdup_printf("{'data': <'x'>, 'file': <'%s'>}",
                                            nul_file);
    g_autofree char *embedded = g_strdup_printf(
        "{'file': <'%s'>, 'format': <'base64'>}", nul_file);

    setup();
    expect_refused("@a{sv} {}", "Either 'file' or 'data' must be provided");
    expect_refused(both, "'file' and 'data' are mutually exclusive");
    expect_refused("{'file': <'/nonexistent/secret'>}",
                   "Unable to read /nonexistent/secret: Failed to open file "
                   "\u201c/nonexistent/secret\u201d: No such file or "
                   "directory");
    expect_refused("{'data': <'!!!'>, 'format': <'base64'>}",
                   "Base64 data contains invalid characters");
    expect_refused(embedded, "Base64 data contains embedded NUL characters");
    expect_refused("{'data': <'x'>, 'loaded': <true>}",
                   "Property 'secret.loaded' is not writable");
    g_unlink(nul_file);
}

static void test_secret_encrypted(void)
{
    static const guint8 ct_raw[] = {
        0x3e, 0xea, 0x76, 0xaf, 0xa9, 0x32, 0x1c, 0xd7,
        0xe0, 0x83, 0xd7, 0x96, 0x13, 0x24, 0x32, 0x03 };
    g_autofree char *raw_file = temp_file(ct_raw, sizeof(ct_raw));
    g_autofree char *raw = g_strdup_printf(
        "{'file': <'%s'>, 'keyid': <'key'>, 'iv': <'" IV_B64 "'>}",
        raw_file);

    setup();
    g_assert_true(add_secret("key", "{'data': <'" KEY_B64 "'>, "
                                    "'format': <'base64'>}", NULL));
    g_assert_true(add_secret("s1", "{'data': <'" CT_PASSWORD "'>, "
                                   "'format': <'base64'>, 'keyid': <'key'>, "
                                   "'iv': <'" IV_B64 "'>}", NULL));
    expect_secret("s1", "password123", 11);
    g_assert_true(add_secret("s1", "{'data': <'" CT_16 "'>, "
                                   "'format': <'base64'>, 'keyid': <'key'>, "
                                   "'iv': <'" IV_B64 "'>}", NULL));
    expect_secret("s1", "exactly16bytes!!", 16);
    g_assert_true(add_secret("s1", "{'data': <'" CT_EMPTY "'>, "
                                   "'format': <'base64'>, 'keyid': <'key'>, "
                                   "'iv': <'" IV_B64 "'>}", NULL));
    expect_secret("s1", "", 0);
    /* Raw ciphertext bytes, from a file. */
    g_assert_true(add_secret("s1", raw, NULL));
    expect_secret("s1", "password123", 11);
    g_assert_true(bd_object_del("key", NULL));
    g_unlink(raw_file);
}

static void test_secret_decrypt_errors(void)
{
    setup();
    g_assert_true(add_secret("key", "{'data': <'" KEY_B64 "'>, "
                                    "'format': <'base64'>}", NULL));
    g_assert_true(add_secret("short", "{'data': <'pw'>}", NULL));
    add_thing("thing");
    expect_refused("{'data': <'x'>, 'keyid': <'nokey'>}",
                   "No secret with id 'nokey'");
    expect_refused("{'data': <'x'>, 'keyid': <'thing'>}",
                   "Object with id 'thing' is not a secret");
    expect_refused("{'data': <'x'>, 'keyid': <'short'>}",
                   "Key should be 32 bytes in length");
    expect_refused("{'data': <'x'>, 'keyid': <'key'>}",
                   "IV is required to decrypt secret");
    expect_refused("{'data': <'x'>, 'keyid': <'key'>, 'iv': <'!!'>}",
                   "Base64 data contains invalid characters");
    expect_refused("{'data': <'x'>, 'keyid': <'key'>, "
                   "'iv': <'eHh4eHh4eHh4eHh4eHh4'>}",
                   "IV should be 16 bytes in length not 15");
    expect_refused("{'data': <'x'>, 'keyid': <'key'>, 'iv': <'" IV_B64 "'>}",
                   "Length 1 must be a multiple of block size 16");
    expect_refused("{'data': <'!'>, 'format': <'base64'>, 'keyid': <'key'>, "
                   "'iv': <'" IV_B64 "'>}",
                   "Base64 data contains invalid characters");
    /* Sixteen bytes of garbage: the last decrypted byte is no padding. */
    expect_refused("{'data': <'xxxxxxxxxxxxxxxx'>, 'keyid': <'key'>, "
                   "'iv': <'eHh4eHh4eHh4eHh4eHh4eA=='>}",
                   "Incorrect number of padding bytes (27) found on "
                   "decrypted data");
    g_assert_true(bd_object_del("key", NULL));
    g_assert_true(bd_object_del("short", NULL));
    g_assert_true(bd_object_del("thing", NULL));
}

static void test_secret_lookup(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GError) err2 = NULL;
    g_autoptr(GError) err3 = NULL;
    g_autofree char *s = NULL;

    setup();
    g_assert_null(bd_secret_lookup("none", &err));
    expect_error(err, "No secret with id 'none'");
    add_thing("thing");
    g_assert_null(bd_secret_lookup("thing", &err2));
    expect_error(err2, "Object with id 'thing' is not a secret");
    g_assert_true(add_secret("utf8", "{'data': <'p\u00e4ss'>}", NULL));
    s = bd_secret_lookup_as_utf8("utf8", NULL);
    g_assert_cmpstr(s, ==, "p\u00e4ss");
    g_assert_true(add_secret("bin", "{'data': <'/w=='>, "
                                    "'format': <'base64'>}", NULL));
    g_assert_null(bd_secret_lookup_as_utf8("bin", &err3));
    expect_error(err3, "Data from secret bin is not valid UTF-8");
    g_assert_true(bd_object_del("thing", NULL));
    g_assert_true(bd_object_del("utf8", NULL));
    g_assert_true(bd_object_del("bin", NULL));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/objects/types", test_types);
    g_test_add_func("/objects/add-find-del", test_add_find_del);
    g_test_add_func("/objects/users-block-del", test_users_block_del);
    g_test_add_func("/objects/ref-outlives-del", test_ref_outlives_del);
    g_test_add_func("/objects/concurrent-lookups", test_concurrent_lookups);
    g_test_add_func("/objects/secret/plain", test_secret_plain);
    g_test_add_func("/objects/secret/errors", test_secret_errors);
    g_test_add_func("/objects/secret/encrypted", test_secret_encrypted);
    g_test_add_func("/objects/secret/decrypt-errors",
                    test_secret_decrypt_errors);
    g_test_add_func("/objects/secret/lookup", test_secret_lookup);
    g_test_add_func("/objects/cleanup", test_cleanup);
    return g_test_run();
}
