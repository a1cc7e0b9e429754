/* SPDX-License-Identifier: MIT */
/* bd_schema_decode(): every member kind into its C type, defaults and
 * has_ flags of absent members, nested structs, references held and
 * dropped, integers given in the other signedness, uninitialized
 * structs, values that do not fit. */
#include <string.h>
#include "graph/schema.h"

typedef enum { COLOUR_RED, COLOUR_GREEN, COLOUR_BLUE } Colour;

static const char *const colour_values[] = {
    [COLOUR_RED] = "red",
    [COLOUR_GREEN] = "green",
    [COLOUR_BLUE] = "blue",
    NULL };
static const BdSchemaType colour_type = {
    .name = "Colour", .kind = BD_SCHEMA_ENUM, .enum_values = colour_values };
static const BdSchemaType str_list = {
    .name = "[str]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_str };

typedef struct {
    gint64 depth;
    gboolean deep;
} Inner;

static const BdSchemaField inner_fields[] = {
    { "depth", &bd_schema_int, TRUE, BD_AT(Inner, depth), .def.i = 7 },
    { "deep", &bd_schema_bool, TRUE, BD_AT(Inner, deep), .def.i = TRUE },
    { NULL } };
static const BdSchemaType inner_type = {
    .name = "Inner", .kind = BD_SCHEMA_OBJECT, .fields = inner_fields };

typedef struct {
    const char *name;
    gint64 count;
    gboolean has_count;
    guint64 size;
    gboolean flag;
    double ratio;
    Colour colour;
    const char *colour_name;
    Inner inner;
    gboolean has_inner;
    GVariant *list;
    GVariant *ref;
} Opts;

static const BdSchemaField opts_fields[] = {
    { "name", &bd_schema_str, FALSE, BD_AT(Opts, name) },
    { "count", &bd_schema_int, TRUE, BD_AT(Opts, count),
      BD_HAS(Opts, count), .def.i = -5 },
    { "size", &bd_schema_size, TRUE, BD_AT(Opts, size), .def.u = 4096 },
    { "flag", &bd_schema_bool, TRUE, BD_AT(Opts, flag) },
    { "ratio", &bd_schema_number, TRUE, BD_AT(Opts, ratio), .def.d = 0.5 },
    { "colour", &colour_type, TRUE, BD_AT(Opts, colour),
      .def.i = COLOUR_BLUE },
    { "inner", &inner_type, TRUE, BD_AT(Opts, inner), BD_HAS(Opts, inner) },
    { "list", &str_list, TRUE, BD_AT(Opts, list) },
    { "ref", &bd_schema_blockdev_ref_or_null, TRUE, BD_AT(Opts, ref) },
    { "ignored", &bd_schema_str, TRUE, .flags = BD_FIELD_IGNORED },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(Opts, opts_fields)

/* The same enum member read as its string. */
static const BdSchemaField colour_name_fields[] = {
    { "colour", &colour_type, TRUE, BD_AT(Opts, colour_name),
      .def.s = "none" },
    { NULL } };

static GVariant *dict(const char *text)
{
    g_autoptr(GError) err = NULL;
    GVariant *v = g_variant_parse(G_VARIANT_TYPE_VARDICT, text, NULL, NULL,
                                  &err);

    g_assert_no_error(err);
    return g_variant_ref_sink(v);
}

static void test_defaults(void)
{
    g_auto(Opts) o = { 0 };

    bd_schema_decode(opts_fields, NULL, &o);
    g_assert_null(o.name);
    g_assert_cmpint(o.count, ==, -5);
    g_assert_false(o.has_count);
    g_assert_cmpuint(o.size, ==, 4096);
    g_assert_false(o.flag);
    g_assert_cmpfloat(o.ratio, ==, 0.5);
    g_assert_cmpint(o.colour, ==, COLOUR_BLUE);
    g_assert_false(o.has_inner);
    g_assert_cmpint(o.inner.depth, ==, 7);
    g_assert_true(o.inner.deep);
    g_assert_null(o.list);
    g_assert_null(o.ref);
}

static void test_values(void)
{
    g_autoptr(GVariant) v = dict(
        "{'name': <'n0'>, 'count': <int64 3>, 'size': <uint64 8>,"
        " 'flag': <true>, 'ratio': <2.0>, 'colour': <'green'>,"
        " 'inner': <{'depth': <int64 1>, 'deep': <false>}>,"
        " 'list': <[<'a'>, <'b'>]>, 'ref': <'node0'>, 'ignored': <'x'>}");
    g_auto(Opts) o = { 0 };

    bd_schema_decode(opts_fields, v, &o);
    g_assert_cmpstr(o.name, ==, "n0");
    g_assert_cmpint(o.count, ==, 3);
    g_assert_true(o.has_count);
    g_assert_cmpuint(o.size, ==, 8);
    g_assert_true(o.flag);
    g_assert_cmpfloat(o.ratio, ==, 2.0);
    g_assert_cmpint(o.colour, ==, COLOUR_GREEN);
    g_assert_true(o.has_inner);
    g_assert_cmpint(o.inner.depth, ==, 1);
    g_assert_false(o.inner.deep);
    g_assert_cmpuint(g_variant_n_children(o.list), ==, 2);
    g_assert_cmpstr(g_variant_get_string(o.ref, NULL), ==, "node0");

    bd_schema_decode(colour_name_fields, v, &o);
    g_assert_cmpstr(o.colour_name, ==, "green");
    bd_schema_decode(colour_name_fields, NULL, &o);
    g_assert_cmpstr(o.colour_name, ==, "none");
}

/* A nested object given without its members gets their defaults; a
 * null reference stays null; the struct keeps its own references. */
static void test_nested_and_null(void)
{
    g_autoptr(GVariant) v = dict("{'name': <'n'>, 'inner': <@a{sv} {}>,"
                                 " 'ref': <@mv nothing>}");
    g_auto(Opts) o = { 0 };

    bd_schema_decode(opts_fields, v, &o);
    g_assert_true(o.has_inner);
    g_assert_cmpint(o.inner.depth, ==, 7);
    g_assert_true(bd_variant_is_null(o.ref));
    g_clear_pointer(&v, g_variant_unref);
    /* Still ours after the container is gone. */
    g_assert_true(bd_variant_is_null(o.ref));
    bd_schema_clear(opts_fields, &o);
    g_assert_null(o.ref);
}

/* Options built inside the daemon may hold either signedness. */
static void test_signedness(void)
{
    g_autoptr(GVariant) v = dict("{'count': <uint64 9>, 'size': <int64 10>}");
    g_auto(Opts) o = { 0 };

    bd_schema_decode(opts_fields, v, &o);
    g_assert_cmpint(o.count, ==, 9);
    g_assert_cmpuint(o.size, ==, 10);
}

/* Every decoded member is written, whatever the struct held. */
static void test_uninitialized(void)
{
    g_autoptr(GVariant) a = dict("{'ref': <'a'>}");
    Opts o;

    memset(&o, 0xa5, sizeof(o));
    bd_schema_decode(opts_fields, a, &o);
    g_assert_cmpstr(g_variant_get_string(o.ref, NULL), ==, "a");
    g_assert_null(o.list);
    g_assert_null(o.name);
    g_assert_cmpint(o.inner.depth, ==, 7);
    bd_schema_clear(opts_fields, &o);
}

/* Options built by hand with a wrong value: read as absent, loudly. */
static void test_misfit(void)
{
    g_autoptr(GVariant) v = dict("{'count': <'three'>, 'colour': <'pink'>}");
    g_auto(Opts) o = { 0 };

    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*member 'count'*");
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*member 'colour'*");
    bd_schema_decode(opts_fields, v, &o);
    g_test_assert_expected_messages();
    g_assert_cmpint(o.count, ==, -5);
    g_assert_false(o.has_count);
    g_assert_cmpint(o.colour, ==, COLOUR_BLUE);
}

static void test_ctype_fits(void)
{
    g_assert_true(bd_schema_ctype_fits(&bd_schema_int, BD_CTYPE_INT64));
    g_assert_false(bd_schema_ctype_fits(&bd_schema_int, BD_CTYPE_UINT64));
    g_assert_true(bd_schema_ctype_fits(&bd_schema_size, BD_CTYPE_UINT64));
    g_assert_true(bd_schema_ctype_fits(&bd_schema_bool, BD_CTYPE_INT));
    g_assert_false(bd_schema_ctype_fits(&bd_schema_str, BD_CTYPE_VARIANT));
    g_assert_true(bd_schema_ctype_fits(&colour_type, BD_CTYPE_INT));
    g_assert_true(bd_schema_ctype_fits(&colour_type, BD_CTYPE_STR));
    g_assert_true(bd_schema_ctype_fits(&inner_type, BD_CTYPE_STRUCT));
    g_assert_true(bd_schema_ctype_fits(&str_list, BD_CTYPE_VARIANT));
    g_assert_false(bd_schema_ctype_fits(&str_list, BD_CTYPE_STRUCT));
    g_assert_cmpint(bd_schema_enum_index(&colour_type, "blue"), ==,
                    COLOUR_BLUE);
    g_assert_cmpint(bd_schema_enum_index(&colour_type, "pink"), ==, -1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/schema/decode/defaults", test_defaults);
    g_test_add_func("/schema/decode/values", test_values);
    g_test_add_func("/schema/decode/nested-and-null", test_nested_and_null);
    g_test_add_func("/schema/decode/signedness", test_signedness);
    g_test_add_func("/schema/decode/uninitialized", test_uninitialized);
    g_test_add_func("/schema/decode/misfit", test_misfit);
    g_test_add_func("/schema/ctype-fits", test_ctype_fits);
    return g_test_run();
}
