/* SPDX-License-Identifier: MIT */
/* Unit tests for control/keyval.c: QEMU's KEY=VALUE,... syntax, the
 * JSON-or-keyval choice, and the scalar conversions of keyval strings. */
#include <malloc.h>

#include "control/input.h"

/* Parse and serialize, or return the error message. */
static char *kv(const char *str, const char *implied)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) n = bd_keyval_parse(str, implied, &err);

    if (!n) {
        g_assert_nonnull(err);
        return g_strdup_printf("ERR %s", err->message);
    }
    g_assert_null(err);
    return bd_json_to_string(n);
}

#define CHECK(str, implied, expect) do {                    \
        g_autofree char *got_ = kv((str), (implied));       \
        g_assert_cmpstr(got_, ==, (expect));                \
    } while (0)

static void test_flat(void)
{
    CHECK("", NULL, "{}");
    CHECK("a=1", NULL, "{\"a\": \"1\"}");
    CHECK("driver=qcow2,node-name=a", NULL,
          "{\"driver\": \"qcow2\", \"node-name\": \"a\"}");
    CHECK("a=1,", NULL, "{\"a\": \"1\"}");
    CHECK("a=", NULL, "{\"a\": \"\"}");
    /* The last value of a key wins. */
    CHECK("a=1,a=2", NULL, "{\"a\": \"2\"}");
}

static void test_nesting(void)
{
    CHECK("driver=raw,file.driver=file,file.filename=x", NULL,
          "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
          "\"filename\": \"x\"}}");
    CHECK("a.b.c=1,a.b.d=2,a.e=3", NULL,
          "{\"a\": {\"b\": {\"c\": \"1\", \"d\": \"2\"}, \"e\": \"3\"}}");
    CHECK("addr.type=unix,addr.path=/tmp/s", NULL,
          "{\"addr\": {\"type\": \"unix\", \"path\": \"/tmp/s\"}}");
}

static void test_escaping(void)
{
    CHECK("a=x,,y", NULL, "{\"a\": \"x,y\"}");
    CHECK("a=x,,,,y,b=2", NULL, "{\"a\": \"x,,y\", \"b\": \"2\"}");
    CHECK("a=a=b", NULL, "{\"a\": \"a=b\"}");
    CHECK("filename=/a b/c.img", NULL, "{\"filename\": \"/a b/c.img\"}");
}

static void test_implied(void)
{
    CHECK("null-co,node-name=n", "driver",
          "{\"driver\": \"null-co\", \"node-name\": \"n\"}");
    CHECK("socket,id=m", "backend",
          "{\"backend\": \"socket\", \"id\": \"m\"}");
    CHECK("m0", "chardev", "{\"chardev\": \"m0\"}");
    /* Only the first item may omit its key. */
    CHECK("driver=raw,x", "driver", "ERR Expected '=' after parameter 'x'");
    CHECK("unix", NULL, "ERR Expected '=' after parameter 'unix'");
    /* An explicit first key is fine with an implied key too. */
    CHECK("driver=raw", "driver", "{\"driver\": \"raw\"}");
}

static void test_lists(void)
{
    CHECK("bitmaps.0=a,bitmaps.1=b", NULL,
          "{\"bitmaps\": [\"a\", \"b\"]}");
    CHECK("bitmaps.1=b,bitmaps.0=a", NULL,
          "{\"bitmaps\": [\"a\", \"b\"]}");
    CHECK("l.0.x=1,l.0.y=2,l.1.x=3", NULL,
          "{\"l\": [{\"x\": \"1\", \"y\": \"2\"}, {\"x\": \"3\"}]}");
    CHECK("bitmaps.1=x", NULL, "ERR Parameter 'bitmaps.0' missing");
    CHECK("a.0=x,a.b=y", NULL, "ERR Parameters 'a.*' used inconsistently");
}

static void test_errors(void)
{
    CHECK("=b", NULL, "ERR Invalid parameter ''");
    CHECK("x..y=1", NULL, "ERR Invalid parameter 'x..y'");
    CHECK("1x=1", NULL, "ERR Invalid parameter '1x'");
    CHECK("a.1x=1", NULL, "ERR Invalid parameter 'a.1x'");
    CHECK("a=1,a.b=2", NULL, "ERR Parameters 'a.*' used inconsistently");
    CHECK("a.b=2,a=1", NULL, "ERR Parameters 'a.*' used inconsistently");
    CHECK("node-name.x=1,node-name=a", NULL,
          "ERR Parameters 'node-name.*' used inconsistently");

    g_autofree char *longkey = g_strnfill(128, 'k');
    g_autofree char *in = g_strdup_printf("%s=1", longkey);
    g_autofree char *got = kv(in, NULL);
    g_assert_true(g_str_has_prefix(got, "ERR Parameter '"));
    g_assert_true(g_str_has_suffix(got, "' is too long"));
}

static void test_option_parse(void)
{
    g_autoptr(GError) err = NULL;
    gboolean keyval = TRUE;
    g_autoptr(JsonNode) n = bd_option_parse(
        "{\"driver\": \"null-co\", \"size\": 5}", "driver", &keyval, &err);

    g_assert_no_error(err);
    g_assert_false(keyval);
    g_autofree char *s = bd_json_to_string(n);
    g_assert_cmpstr(s, ==, "{\"driver\": \"null-co\", \"size\": 5}");

    g_autoptr(JsonNode) k = bd_option_parse("null-co,size=5", "driver",
                                            &keyval, &err);
    g_assert_no_error(err);
    g_assert_true(keyval);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(k));

    g_autoptr(JsonNode) bad = bd_option_parse("{\"driver\": ", "driver",
                                              &keyval, &err);
    g_assert_null(bad);
    g_assert_nonnull(err);
    g_assert_true(g_str_has_prefix(err->message, "JSON parse error, "));
}

static void test_conversions(void)
{
    gint64 i;
    guint64 u;
    gboolean b;

    g_assert_true(bd_parse_int64("-42", &i) && i == -42);
    g_assert_true(bd_parse_int64("0x10", &i) && i == 16);
    g_assert_false(bd_parse_int64("", &i));
    g_assert_false(bd_parse_int64("1k", &i));
    g_assert_false(bd_parse_int64("99999999999999999999", &i));

    g_assert_true(bd_parse_uint64("18446744073709551615", &u) &&
                  u == G_MAXUINT64);
    g_assert_true(bd_parse_uint64("-1", &u) && u == G_MAXUINT64);
    g_assert_false(bd_parse_uint64("x", &u));

    g_assert_true(bd_parse_size("512", &u) && u == 512);
    g_assert_true(bd_parse_size("1k", &u) && u == 1024);
    g_assert_true(bd_parse_size("64M", &u) && u == 64u << 20);
    g_assert_true(bd_parse_size("1.5G", &u) && u == 3u << 29);
    g_assert_true(bd_parse_size("1E", &u) && u == G_GUINT64_CONSTANT(1) << 60);
    g_assert_false(bd_parse_size("16E", &u));
    g_assert_false(bd_parse_size("1.5", &u));
    g_assert_false(bd_parse_size("-1", &u));
    g_assert_false(bd_parse_size("1Q", &u));

    g_assert_true(bd_parse_bool("on", &b) && b);
    g_assert_true(bd_parse_bool("yes", &b) && b);
    g_assert_true(bd_parse_bool("off", &b) && !b);
    g_assert_true(bd_parse_bool("false", &b) && !b);
    g_assert_false(bd_parse_bool("1", &b));
}

/* Parsing gives back everything it took: json_object_set_member() once
 * kept a node it already held and dropped the extra reference, leaking
 * every member of every keyval argument (found by tests/fuzz/fuzz-keyval:
 * RSS grew without bound).  Heap in use is compared only with GLib's
 * slice allocator off (G_SLICE=always-malloc, set by meson for this
 * test): its slabs would hide the nodes. */
static void test_no_leak(void)
{
    const char *in = "a.b.c=1,a.b.d=2,x.0=y,x.1=z,flat=v";
    size_t before;

    if (g_strcmp0(g_getenv("G_SLICE"), "always-malloc") != 0) {
        g_test_skip("needs G_SLICE=always-malloc");
        return;
    }
    for (int round = 0; round < 2; round++) {
        before = mallinfo2().uordblks;
        for (int i = 0; i < 20000; i++) {
            g_autoptr(GError) err = NULL;
            g_autoptr(JsonNode) n = bd_keyval_parse(in, NULL, &err);

            g_assert_nonnull(n);
        }
    }
    /* The second round runs warm: nothing may be left over. */
    g_assert_cmpuint(mallinfo2().uordblks, <=, before + 64 * 1024);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/keyval/flat", test_flat);
    g_test_add_func("/keyval/nesting", test_nesting);
    g_test_add_func("/keyval/escaping", test_escaping);
    g_test_add_func("/keyval/implied-key", test_implied);
    g_test_add_func("/keyval/lists", test_lists);
    g_test_add_func("/keyval/errors", test_errors);
    g_test_add_func("/keyval/option-parse", test_option_parse);
    g_test_add_func("/keyval/conversions", test_conversions);
    g_test_add_func("/keyval/no-leak", test_no_leak);
    return g_test_run();
}
