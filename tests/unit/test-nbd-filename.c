/* SPDX-License-Identifier: MIT */
/* The nbd driver's filenames: QEMU's URI and legacy syntaxes into
 * BlockdevOptionsNbd members, the refusals, and the name a node shows. */
#include <glib.h>

#include "formats/filename.h"
#include "formats/nbd/nbd-int.h"

/* Parse 'name' and print the result as GVariant text, or NULL with the
 * error message in *msg. */
static char *parse(const char *name, char **msg)
{
    g_autoptr(GError) err = NULL;
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    if (!nbd_filename_parse(name, &d, &err)) {
        g_variant_dict_clear(&d);
        *msg = g_strdup(err->message);
        return NULL;
    }
    g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_dict_end(&d));
    *msg = NULL;
    return g_variant_print(v, FALSE);
}

/* Equal as dictionaries, whatever the order of their members. */
static gboolean dict_equal(GVariant *a, GVariant *b)
{
    GVariantIter it;
    const char *key;
    GVariant *value;

    if (g_variant_is_of_type(a, G_VARIANT_TYPE_VARIANT)) {
        g_autoptr(GVariant) ia = g_variant_get_variant(a);
        g_autoptr(GVariant) ib = g_variant_is_of_type(
            b, G_VARIANT_TYPE_VARIANT) ? g_variant_get_variant(b) : NULL;
        return ib && dict_equal(ia, ib);
    }
    if (!g_variant_is_of_type(a, G_VARIANT_TYPE_VARDICT)) {
        return g_variant_equal(a, b);
    }
    if (!g_variant_is_of_type(b, G_VARIANT_TYPE_VARDICT) ||
        g_variant_n_children(a) != g_variant_n_children(b)) {
        return FALSE;
    }
    g_variant_iter_init(&it, a);
    while (g_variant_iter_loop(&it, "{&sv}", &key, &value)) {
        g_autoptr(GVariant) other = g_variant_lookup_value(b, key, NULL);
        if (!other || !dict_equal(value, other)) {
            return FALSE;
        }
    }
    return TRUE;
}

static void check(const char *name, const char *expected)
{
    g_autofree char *msg = NULL;
    g_autofree char *got = parse(name, &msg);

    g_assert_null(msg);
    /* GVariantDict keeps no order: compare member by member. */
    g_autoptr(GVariant) a = g_variant_parse(NULL, got, NULL, NULL, NULL);
    g_autoptr(GVariant) b = g_variant_parse(G_VARIANT_TYPE_VARDICT,
                                            expected, NULL, NULL, NULL);
    g_assert_nonnull(b);
    if (!dict_equal(a, b)) {
        g_error("%s: expected %s, got %s", name, expected, got);
    }
}

static void refused(const char *name, const char *message)
{
    g_autofree char *msg = NULL;
    g_autofree char *got = parse(name, &msg);

    g_assert_null(got);
    g_assert_cmpstr(msg, ==, message);
}

static void test_uris(void)
{
    check("nbd+unix:///disk?socket=/run/a.sock",
          "{'server': <{'type': <'unix'>, 'path': <'/run/a.sock'>}>,"
          " 'export': <'disk'>}");
    check("nbd+unix://?socket=/run/a.sock",
          "{'server': <{'type': <'unix'>, 'path': <'/run/a.sock'>}>}");
    check("nbd://10.0.0.5/disk",
          "{'server': <{'type': <'inet'>, 'host': <'10.0.0.5'>,"
          " 'port': <'10809'>}>, 'export': <'disk'>}");
    check("nbd+tcp://example.org:10900",
          "{'server': <{'type': <'inet'>, 'host': <'example.org'>,"
          " 'port': <'10900'>}>}");
    check("nbd://[::1]:10900/a%20b",
          "{'server': <{'type': <'inet'>, 'host': <'::1'>,"
          " 'port': <'10900'>}>, 'export': <'a b'>}");
}

static void test_legacy(void)
{
    check("nbd:unix:/run/a.sock:exportname=disk",
          "{'server': <{'type': <'unix'>, 'path': <'/run/a.sock'>}>,"
          " 'export': <'disk'>}");
    check("nbd:unix:/run/a.sock",
          "{'server': <{'type': <'unix'>, 'path': <'/run/a.sock'>}>}");
    check("nbd:localhost:10809:exportname=disk",
          "{'server': <{'type': <'inet'>, 'host': <'localhost'>,"
          " 'port': <'10809'>}>, 'export': <'disk'>}");
    check("nbd:[::1]:10809",
          "{'server': <{'type': <'inet'>, 'host': <'::1'>,"
          " 'port': <'10809'>}>}");
}

static void test_refused(void)
{
    refused("nbd+unix:///disk", "No valid URL specified");
    refused("nbd+unix://host/disk?socket=/a", "No valid URL specified");
    refused("nbd://host/disk?socket=/a", "No valid URL specified");
    refused("nbd:///disk", "No valid URL specified");
    refused("nbd+ssh://host/disk", "No valid URL specified");
    refused("nbd:", "Parameter 'server' is missing");
    refused("nbd:unix:/a:exportname=", "Parameter 'server' is missing");
    refused("nbd:hostonly", "error parsing address 'hostonly'");
}

static void test_shown_name(void)
{
    NbdConfig unix_cfg = { .type = BD_SOCKET_ADDRESS_UNIX,
                           .path = (char *)"/run/a.sock",
                           .export_name = (char *)"disk" };
    NbdConfig inet_cfg = { .type = BD_SOCKET_ADDRESS_INET,
                           .host = (char *)"10.0.0.5",
                           .port = (char *)"10809" };
    g_autofree char *u = nbd_filename_of(&unix_cfg);
    g_autofree char *i = nbd_filename_of(&inet_cfg);

    g_assert_cmpstr(u, ==, "nbd+unix:///disk?socket=/run/a.sock");
    g_assert_cmpstr(i, ==, "nbd://10.0.0.5:10809");
}

static void test_protocol_options(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) file = NULL, nbd = NULL, bad = NULL;
    const char *s;

    file = g_variant_ref_sink(bd_formats_protocol_options("file:/a b", &err));
    g_assert_no_error(err);
    g_assert_true(g_variant_lookup(file, "filename", "&s", &s));
    g_assert_cmpstr(s, ==, "/a b");
    nbd = g_variant_ref_sink(bd_formats_protocol_options(
        "nbd:unix:/s:exportname=e", &err));
    g_assert_no_error(err);
    g_assert_true(g_variant_lookup(nbd, "driver", "&s", &s));
    g_assert_cmpstr(s, ==, "nbd");
    g_assert_true(bd_formats_filename_is_remote("nbd+unix:///e?socket=/s"));
    g_assert_true(bd_formats_filename_is_remote("json:{}"));
    g_assert_false(bd_formats_filename_is_remote("/srv/nbd:x.raw"));
    bad = bd_formats_protocol_options("json:{}", &err);
    g_assert_null(bad);
    g_assert_nonnull(err);
}

/* A name from an image that is not UTF-8 (a vmdk extent, a backing
 * file) is refused, not made into a GVariant string (a critical). */
static void test_not_utf8(void)
{
    g_autoptr(GError) err = NULL, err2 = NULL;

    g_assert_null(bd_formats_protocol_options("/x/im\xffg", &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, "Could not open '/x/im\xef\xbf\xbdg': "
                    "the file name is not valid UTF-8");
    g_assert_null(bd_formats_image_options("b\xc3", "raw", "/x", &err2));
    g_assert_nonnull(err2);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd-filename/uris", test_uris);
    g_test_add_func("/nbd-filename/legacy", test_legacy);
    g_test_add_func("/nbd-filename/refused", test_refused);
    g_test_add_func("/nbd-filename/shown-name", test_shown_name);
    g_test_add_func("/nbd-filename/protocol-options", test_protocol_options);
    g_test_add_func("/nbd-filename/not-utf8", test_not_utf8);
    return g_test_run();
}
