/* SPDX-License-Identifier: MIT */
/* Unit tests for control/validate.c against a small schema defined here
 * (no drivers needed): QEMU's messages for missing, mistyped and
 * unexpected members with full paths, enums, flat unions, BlockdevRef,
 * alternates, integer ranges, and the keyval conversions. */
#include "control/control.h"
#include "control/qmp-int.h"

/* --- the test schema --- */

static const char *const drivers[] = { "file", "raw", "qcow2", "null", NULL };
static const BdSchemaType driver_enum = {
    .name = "TestDriver", .kind = BD_SCHEMA_ENUM, .enum_values = drivers };
static const char *const dz_values[] = { "off", "on", "unmap", NULL };
static const BdSchemaType dz_enum = {
    .name = "TestDetectZeroes", .kind = BD_SCHEMA_ENUM,
    .enum_values = dz_values };
static const BdSchemaField cache_fields[] = {
    BD_OPT("direct", &bd_schema_bool),
    BD_OPT("no-flush", &bd_schema_bool),
    { NULL } };
static const BdSchemaType cache_type = {
    .name = "TestCache", .kind = BD_SCHEMA_OBJECT, .fields = cache_fields };
static const BdSchemaField base_fields[] = {
    BD_FIELD("driver", &driver_enum),
    BD_OPT("node-name", &bd_schema_str),
    BD_OPT("cache", &cache_type),
    BD_OPT("read-only", &bd_schema_bool),
    BD_OPT("detect-zeroes", &dz_enum),
    { NULL } };

static const BdSchemaField file_fields[] = {
    BD_FIELD("filename", &bd_schema_str),
    { NULL } };
static const BdSchemaType file_type = {
    .name = "TestFile", .kind = BD_SCHEMA_OBJECT, .fields = file_fields };
static const BdSchemaField raw_fields[] = {
    BD_FIELD("file", &bd_schema_blockdev_ref),
    BD_OPT("offset", &bd_schema_int),
    BD_OPT("size", &bd_schema_size),
    { NULL } };
static const BdSchemaType raw_type = {
    .name = "TestRaw", .kind = BD_SCHEMA_OBJECT, .fields = raw_fields };
static const BdSchemaField qcow2_fields[] = {
    BD_FIELD("file", &bd_schema_blockdev_ref),
    BD_OPT("backing", &bd_schema_blockdev_ref_or_null),
    { NULL } };
static const BdSchemaType qcow2_type = {
    .name = "TestQcow2", .kind = BD_SCHEMA_OBJECT, .fields = qcow2_fields };
static const BdSchemaVariant variants[] = {
    { "file", &file_type }, { "raw", &raw_type }, { "qcow2", &qcow2_type },
    { NULL } };  /* "null" has no members of its own */
static const BdSchemaType blockdev = {
    .name = "TestBlockdevOptions", .kind = BD_SCHEMA_UNION,
    .fields = base_fields, .discriminator = "driver", .variants = variants };

static const BdSchemaType *blockdev_fn(void)
{
    return &blockdev;
}

static const BdSchemaType blockdev_list = {
    .name = "[TestBlockdevOptions]", .kind = BD_SCHEMA_LIST,
    .element = &blockdev };
static const BdSchemaType str_list = {
    .name = "[str]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_str };
static const BdSchemaType *const str_or_int_alts[] = {
    &bd_schema_str, &bd_schema_int, NULL };
static const BdSchemaType str_or_int = {
    .name = "StrOrInt", .kind = BD_SCHEMA_ALTERNATE,
    .alternatives = str_or_int_alts };
static const BdSchemaType *const str_or_null_alts[] = { &bd_schema_str, NULL };
static const BdSchemaType str_or_null = {
    .name = "StrOrNull", .kind = BD_SCHEMA_ALTERNATE,
    .alternatives = str_or_null_alts, .alt_null = TRUE };
static const BdSchemaField cmd_fields[] = {
    BD_OPT("options", &blockdev_list),
    BD_OPT("names", &str_list),
    BD_OPT("max", &bd_schema_uint32),
    BD_OPT("count", &bd_schema_uint),
    BD_OPT("ratio", &bd_schema_number),
    BD_OPT("alt", &str_or_int),
    BD_OPT("name-or-null", &str_or_null),
    BD_OPT("data", &bd_schema_any),
    { NULL } };
static const BdSchemaType cmd = {
    .name = "TestCommandArgs", .kind = BD_SCHEMA_OBJECT,
    .fields = cmd_fields };

/* --- helpers --- */

/* Validate JSON text (or keyval text) and return the printed result or
 * "ERR message". */
static char *check(const BdSchemaType *t, const char *text, gboolean keyval)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) in = keyval ? bd_keyval_parse(text, NULL, &err)
                                    : bd_json_parse(text, -1, &err);
    g_assert_no_error(err);
    g_autoptr(GVariant) v = bd_validate(t, in, keyval, &err);
    if (!v) {
        g_assert_nonnull(err);
        return g_strdup_printf("ERR %s", err->message);
    }
    g_assert_no_error(err);
    g_assert_false(g_variant_is_floating(v));
    return g_variant_print(v, FALSE);
}

#define JSON(t, text, expect) do {                             \
        g_autofree char *got_ = check((t), (text), FALSE);     \
        g_assert_cmpstr(got_, ==, (expect));                   \
    } while (0)
#define KEYVAL(t, text, expect) do {                           \
        g_autofree char *got_ = check((t), (text), TRUE);      \
        g_assert_cmpstr(got_, ==, (expect));                   \
    } while (0)

/* --- tests --- */

static void test_valid(void)
{
    JSON(&blockdev, "{\"driver\": \"file\", \"filename\": \"a\"}",
         "{'driver': <'file'>, 'filename': <'a'>}");
    JSON(&blockdev, "{\"driver\": \"raw\", \"node-name\": \"r\", "
         "\"file\": \"f\", \"offset\": -5, \"size\": 4096}",
         "{'driver': <'raw'>, 'node-name': <'r'>, 'file': <'f'>, "
         "'offset': <int64 -5>, 'size': <uint64 4096>}");
    JSON(&blockdev, "{\"driver\": \"null\", \"cache\": {\"direct\": true}}",
         "{'driver': <'null'>, 'cache': <{'direct': <true>}>}");
}

static void test_missing(void)
{
    JSON(&blockdev, "{}", "ERR Parameter 'driver' is missing");
    JSON(&blockdev, "{\"driver\": \"raw\"}", "ERR Parameter 'file' is missing");
    JSON(&blockdev, "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\"}}",
         "ERR Parameter 'file.filename' is missing");
    JSON(&cmd, "{\"options\": [{\"driver\": \"file\", \"filename\": \"x\"}, "
         "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\"}}]}",
         "ERR Parameter 'options[1].file.filename' is missing");
}

static void test_wrong_type(void)
{
    JSON(&blockdev, "{\"driver\": 1}",
         "ERR Invalid parameter type for 'driver', expected: string");
    JSON(&blockdev, "{\"driver\": \"null\", \"node-name\": 3}",
         "ERR Invalid parameter type for 'node-name', expected: string");
    JSON(&blockdev, "{\"driver\": \"null\", \"read-only\": \"x\"}",
         "ERR Invalid parameter type for 'read-only', expected: boolean");
    JSON(&blockdev, "{\"driver\": \"null\", \"cache\": {\"direct\": 1}}",
         "ERR Invalid parameter type for 'cache.direct', expected: boolean");
    JSON(&blockdev, "{\"driver\": \"null\", \"cache\": 1}",
         "ERR Invalid parameter type for 'cache', expected: object");
    JSON(&blockdev, "{\"driver\": \"raw\", \"file\": \"f\", \"offset\": 1.5}",
         "ERR Invalid parameter type for 'offset', expected: integer");
    JSON(&cmd, "{\"options\": [{\"driver\": \"raw\", \"file\": "
         "{\"driver\": \"file\", \"filename\": 1}}]}",
         "ERR Invalid parameter type for 'options[0].file.filename', "
         "expected: string");
    JSON(&cmd, "{\"options\": [{\"driver\": \"raw\", \"file\": \"f\", "
         "\"node-name\": 1}]}",
         "ERR Invalid parameter type for 'options[0].node-name', "
         "expected: string");
    JSON(&cmd, "{\"options\": {}}",
         "ERR Invalid parameter type for 'options', expected: array");
    JSON(&cmd, "{\"names\": [\"a\", 2]}",
         "ERR Invalid parameter type for 'names[1]', expected: string");
    JSON(&cmd, "{\"ratio\": \"x\"}",
         "ERR Invalid parameter type for 'ratio', expected: number");
    JSON(&cmd, "{\"count\": 1.5}", "ERR Parameter 'count' expects uint64");
}

static void test_unexpected(void)
{
    JSON(&blockdev, "{\"driver\": \"null\", \"bogus\": 1}",
         "ERR Parameter 'bogus' is unexpected");
    /* Members are checked before leftovers of the enclosing object. */
    JSON(&blockdev, "{\"driver\": \"raw\", \"zz\": 1, \"file\": "
         "{\"driver\": \"file\", \"filename\": \"x\", \"bogus\": 1}}",
         "ERR Parameter 'file.bogus' is unexpected");
    JSON(&blockdev, "{\"driver\": \"raw\", \"foo\": null}",
         "ERR Parameter 'file' is missing");
    /* A member of another union branch is unexpected in this one. */
    JSON(&blockdev, "{\"driver\": \"file\", \"filename\": \"x\", "
         "\"file\": \"y\"}", "ERR Parameter 'file' is unexpected");
    JSON(&cmd, "{\"options\": [{\"driver\": \"null\", \"x\": 1}]}",
         "ERR Parameter 'options[0].x' is unexpected");
}

static void test_enum(void)
{
    JSON(&blockdev, "{\"driver\": \"foo\"}",
         "ERR Parameter 'driver' does not accept value 'foo'");
    JSON(&blockdev, "{\"driver\": \"\"}",
         "ERR Parameter 'driver' does not accept value ''");
    /* QEMU names enums by the bare member name, even nested. */
    JSON(&blockdev, "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
         "\"filename\": \"x\", \"detect-zeroes\": \"bad\"}}",
         "ERR Parameter 'detect-zeroes' does not accept value 'bad'");
    JSON(&blockdev, "{\"driver\": \"null\", \"detect-zeroes\": 1}",
         "ERR Invalid parameter type for 'detect-zeroes', expected: string");
}

static void test_blockdev_ref(void)
{
    JSON(&blockdev, "{\"driver\": \"raw\", \"file\": 1}",
         "ERR Invalid parameter type for 'file', expected: BlockdevRef");
    JSON(&blockdev, "{\"driver\": \"raw\", \"file\": null}",
         "ERR Invalid parameter type for 'file', expected: BlockdevRef");
    JSON(&blockdev, "{\"driver\": \"qcow2\", \"file\": \"f\", "
         "\"backing\": null}",
         "{'driver': <'qcow2'>, 'file': <'f'>, 'backing': <@mv nothing>}");
    JSON(&blockdev, "{\"driver\": \"qcow2\", \"file\": \"f\", "
         "\"backing\": []}",
         "ERR Invalid parameter type for 'backing', expected: "
         "BlockdevRefOrNull");
    JSON(&blockdev, "{\"driver\": \"qcow2\", \"file\": \"f\", "
         "\"backing\": {\"driver\": \"qcow2\", \"file\": {\"driver\": "
         "\"file\"}}}", "ERR Parameter 'backing.file.filename' is missing");
}

static void test_alternate(void)
{
    JSON(&cmd, "{\"alt\": \"s\"}", "{'alt': <'s'>}");
    JSON(&cmd, "{\"alt\": 7}", "{'alt': <int64 7>}");
    JSON(&cmd, "{\"alt\": true}",
         "ERR Invalid parameter type for 'alt', expected: StrOrInt");
    JSON(&cmd, "{\"name-or-null\": null}", "{'name-or-null': <@mv nothing>}");
    JSON(&cmd, "{\"data\": {\"a\": [1, \"b\", null]}}",
         "{'data': <{'a': <[<int64 1>, <'b'>, <@mv nothing>]>}>}");
}

static void test_ranges(void)
{
    JSON(&cmd, "{\"max\": 4294967295}", "{'max': <uint64 4294967295>}");
    JSON(&cmd, "{\"max\": 4294967296}", "ERR Parameter 'max' expects uint32_t");
    JSON(&cmd, "{\"max\": -1}", "ERR Parameter 'max' expects uint32_t");
    JSON(&cmd, "{\"max\": \"1\"}", "ERR Parameter 'max' expects uint64");
    /* uint64 takes negative numbers, as QEMU does. */
    JSON(&cmd, "{\"count\": -1}", "{'count': <uint64 18446744073709551615>}");
    /* Up to UINT64_MAX as QEMU's parser keeps it; 2^64 and past are out
     * of range (doubles, in QEMU). */
    JSON(&cmd, "{\"count\": 9223372036854775808}",
         "{'count': <uint64 9223372036854775808>}");
    JSON(&cmd, "{\"count\": 18446744073709551615}",
         "{'count': <uint64 18446744073709551615>}");
    JSON(&cmd, "{\"count\": 18446744073709551616}",
         "ERR Parameter 'count' expects uint64");
    JSON(&cmd, "{\"count\": 18446744073709551617}",
         "ERR Parameter 'count' expects uint64");
    JSON(&cmd, "{\"count\": 100000000000000000000}",
         "ERR Parameter 'count' expects uint64");
    JSON(&cmd, "{\"max\": 18446744073709551615}",
         "ERR Parameter 'max' expects uint32_t");
}

static void test_keyval(void)
{
    KEYVAL(&blockdev, "driver=raw,file.driver=file,file.filename=x,"
           "offset=0x10,size=1k,read-only=on",
           "{'driver': <'raw'>, 'read-only': <true>, 'file': <{'driver': "
           "<'file'>, 'filename': <'x'>}>, 'offset': <int64 16>, "
           "'size': <uint64 1024>}");
    KEYVAL(&blockdev, "driver=raw,file=f", "{'driver': <'raw'>, "
           "'file': <'f'>}");
    KEYVAL(&blockdev, "driver=raw,file.driver=file",
           "ERR Parameter 'file.filename' is missing");
    KEYVAL(&blockdev, "driver=raw,file=f,offset=x",
           "ERR Parameter 'offset' expects integer");
    KEYVAL(&blockdev, "driver=raw,file=f,size=x",
           "ERR Parameter 'size' expects size");
    KEYVAL(&blockdev, "driver=null,read-only=maybe",
           "ERR Parameter 'read-only' expects 'on' or 'off'");
    KEYVAL(&blockdev, "driver=null,cache=1",
           "ERR Invalid parameter type for 'cache', expected: object");
    KEYVAL(&blockdev, "driver=null,cache.direct.x=1",
           "ERR Parameters 'cache.direct.*' are unexpected");
    KEYVAL(&blockdev, "driver=foo",
           "ERR Parameter 'driver' does not accept value 'foo'");
    KEYVAL(&cmd, "names.0=a,names.1=b", "{'names': <[<'a'>, <'b'>]>}");
    KEYVAL(&cmd, "names=a",
           "ERR Invalid parameter type for 'names', expected: array");
    KEYVAL(&cmd, "names.0=a,names.1.x=b",
           "ERR Parameters 'names.1.*' are unexpected");
    KEYVAL(&cmd, "options.0.driver=raw",
           "ERR Parameter 'options.0.file' is missing");
    KEYVAL(&cmd, "max=-1", "ERR Parameter 'max' expects uint32_t");
    KEYVAL(&cmd, "max=x", "ERR Parameter 'max' expects integer");
    KEYVAL(&cmd, "ratio=0.5", "{'ratio': <0.5>}");
    KEYVAL(&cmd, "ratio=x",
           "ERR Invalid parameter type for 'ratio', expected: number");
    /* Alternates take a string branch first, then convert. */
    KEYVAL(&cmd, "alt=12", "{'alt': <'12'>}");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_validate_set_blockdev_schema(blockdev_fn);
    g_test_add_func("/validate/valid", test_valid);
    g_test_add_func("/validate/missing", test_missing);
    g_test_add_func("/validate/wrong-type", test_wrong_type);
    g_test_add_func("/validate/unexpected", test_unexpected);
    g_test_add_func("/validate/enum", test_enum);
    g_test_add_func("/validate/blockdev-ref", test_blockdev_ref);
    g_test_add_func("/validate/alternate", test_alternate);
    g_test_add_func("/validate/ranges", test_ranges);
    g_test_add_func("/validate/keyval", test_keyval);
    return g_test_run();
}
