/* SPDX-License-Identifier: MIT */
/* The rbd driver's legacy file names (rbd:pool/image[@snap][:k=v...]):
 * the options they give, QEMU's refusals, and the librados options of
 * the name reaching librados before any connection is tried. */
#include <glib.h>

#include "formats/rbd/rbd-int.h"

/* Parse 'name' and print the result as GVariant text, or NULL with the
 * error message in *msg. */
static char *parse(const char *name, char **msg)
{
    g_autoptr(GError) err = NULL;
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    if (!rbd_filename_parse(name, &d, &err)) {
        g_variant_dict_clear(&d);
        *msg = g_strdup(err->message);
        return NULL;
    }
    g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_dict_end(&d));
    *msg = NULL;
    return g_variant_print(v, FALSE);
}

/* Equal as dictionaries (a{sv}), whatever the order of their members. */
static gboolean dict_equal(GVariant *a, GVariant *b)
{
    GVariantIter it;
    const char *key;
    GVariant *value;

    if (g_variant_n_children(a) != g_variant_n_children(b)) {
        return FALSE;
    }
    g_variant_iter_init(&it, a);
    while (g_variant_iter_loop(&it, "{&sv}", &key, &value)) {
        g_autoptr(GVariant) other = g_variant_lookup_value(b, key, NULL);
        if (!other || !g_variant_equal(value, other)) {
            g_variant_unref(value);
            return FALSE;
        }
    }
    return TRUE;
}

static void check(const char *name, const char *expected)
{
    g_autofree char *msg = NULL;
    g_autofree char *got = parse(name, &msg);
    g_autoptr(GVariant) want = g_variant_parse(G_VARIANT_TYPE_VARDICT,
                                               expected, NULL, NULL, NULL);
    g_autoptr(GVariant) have = NULL;

    g_assert_nonnull(want);
    if (!got) {
        g_error("%s: refused: %s", name, msg);
    }
    have = g_variant_parse(G_VARIANT_TYPE_VARDICT, got, NULL, NULL, NULL);
    if (!dict_equal(have, want)) {
        g_error("%s:\n  got  %s\n  want %s", name, got, expected);
    }
}

static void refused(const char *name, const char *message)
{
    g_autofree char *msg = NULL;
    g_autofree char *got = parse(name, &msg);

    if (got) {
        g_error("%s: accepted as %s", name, got);
    }
    g_assert_cmpstr(msg, ==, message);
}

static void test_names(void)
{
    check("rbd:rbd/img",
          "{'pool': <'rbd'>, 'image': <'img'>}");
    check("rbd:rbd/ns1/img@s1",
          "{'pool': <'rbd'>, 'namespace': <'ns1'>, 'image': <'img'>, "
          "'snapshot': <'s1'>}");
    check("rbd:p\\/q/a\\:b\\@c@s\\:1:id=u",
          "{'pool': <'p/q'>, 'image': <'a:b@c'>, 'snapshot': <'s:1'>, "
          "'user': <'u'>}");
}

/* conf and id are options of the schema; every other key goes, in its
 * order and unescaped, to librados. */
static void test_keyvalue_pairs(void)
{
    check("rbd:rbd/img:rados_mon_op_timeout=7:conf=/etc/c.conf:id=admin",
          "{'pool': <'rbd'>, 'image': <'img'>, 'conf': <'/etc/c.conf'>, "
          "'user': <'admin'>, "
          "'=keyvalue-pairs': <['rados_mon_op_timeout', '7']>}");
    check("rbd:rbd/img@s:mon_host=v2\\:10.0.0.1\\:3300:k\\=x=a\\=b:"
          "auth_supported=none",
          "{'pool': <'rbd'>, 'image': <'img'>, 'snapshot': <'s'>, "
          "'=keyvalue-pairs': <['mon_host', 'v2:10.0.0.1:3300', "
          "'k=x', 'a=b', 'auth_supported', 'none']>}");
}

static void test_refused(void)
{
    refused("nbd:x", "File name must start with 'rbd:'");
    refused("rbd:img", "Pool name is required");
    refused("rbd:rbd/img:conf", "conf option conf has no value");
    /* As QEMU: a trailing ':' is an option without a name or value. */
    refused("rbd:rbd/img:conf=/c:", "conf option  has no value");
}

/* The name's options are set before connecting: one librados refuses
 * fails the open with QEMU's text, and no monitor is ever asked. */
static void connect_refused(const char *name, const char *message)
{
    g_autoptr(GError) err = NULL;
    g_auto(RbdConfig) cfg = { 0 };
    GVariantDict d;
    RbdConn conn;

    g_variant_dict_init(&d, NULL);
    g_assert_true(rbd_filename_parse(name, &d, &err));
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    g_assert_true(rbd_config_decode(opts, &cfg, &err));
    g_assert_nonnull(cfg.keyvalue_pairs);
    g_assert_false(rbd_connect(&cfg, FALSE, &conn, &err));
    g_assert_cmpstr(err->message, ==, message);
}

static void test_librados_refuses(void)
{
    connect_refused("rbd:rbd/img:conf=/dev/null:bogus_key=1",
                    "invalid conf option bogus_key: No such file or directory");
    connect_refused("rbd:rbd/img:rados_osd_op_timeout=1:"
                    "rados_mon_op_timeout=abc:conf=/dev/null",
                    "invalid conf option rados_mon_op_timeout: Invalid argument");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rbd-filename/names", test_names);
    g_test_add_func("/rbd-filename/keyvalue-pairs", test_keyvalue_pairs);
    g_test_add_func("/rbd-filename/refused", test_refused);
    g_test_add_func("/rbd-filename/librados-refuses", test_librados_refuses);
    return g_test_run();
}
