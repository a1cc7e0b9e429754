/* SPDX-License-Identifier: MIT */
/* The protocol's own commands: qmp_capabilities, query-version,
 * query-commands, query-qmp-schema and quit; plus control start-up.
 *
 * Thread model: main thread only.
 */
#include "control/qmp-int.h"
#include "formats/filename.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"

/* blockd answers as the QEMU release whose QMP it implements. */
#define QEMU_MAJOR 7
#define QEMU_MINOR 2
#define QEMU_MICRO 0

static BdQuitFunc quit_fn;
static gpointer quit_opaque;

void bd_control_set_quit_handler(BdQuitFunc fn, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    quit_fn = fn;
    quit_opaque = opaque;
}

void bd_control_request_quit(void)
{
    BD_GLOBAL_STATE_CODE();

    if (quit_fn) {
        quit_fn(quit_opaque);
    }
}

JsonNode *bd_qmp_version_info(void)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "qemu");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "micro");
    json_builder_add_int_value(b, QEMU_MICRO);
    json_builder_set_member_name(b, "minor");
    json_builder_add_int_value(b, QEMU_MINOR);
    json_builder_set_member_name(b, "major");
    json_builder_add_int_value(b, QEMU_MAJOR);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "package");
    json_builder_add_string_value(b, "blockd " BLOCKD_VERSION);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

JsonNode *bd_qmp_greeting(void)
{
    BD_GLOBAL_STATE_CODE();

    JsonObject *qmp = json_object_new();
    JsonObject *top = json_object_new();
    JsonArray *caps = json_array_new();
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_object_set_member(qmp, "version", bd_qmp_version_info());
    json_array_add_string_element(caps, "oob");
    json_object_set_array_member(qmp, "capabilities", caps);
    json_object_set_object_member(top, "QMP", qmp);
    json_node_take_object(node, top);
    return node;
}

/* --- schemas --- */

static const char *const qmp_capability_values[] = { "oob", NULL };
static const BdSchemaType qmp_capability_type = {
    .name = "QMPCapability", .kind = BD_SCHEMA_ENUM,
    .enum_values = qmp_capability_values };
static const BdSchemaType qmp_capability_list = {
    .name = "[QMPCapability]", .kind = BD_SCHEMA_LIST,
    .element = &qmp_capability_type };
typedef struct {
    GVariant *enable;
} CapsArgs;

static const BdSchemaField caps_fields[] = {
    BD_OPT("enable", &qmp_capability_list, BD_AT(CapsArgs, enable)),
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(CapsArgs, caps_fields)
static const BdSchemaType caps_args = {
    .name = "q_obj_qmp_capabilities-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = caps_fields };

static const BdSchemaField version_triple_fields[] = {
    BD_FIELD("major", &bd_schema_int),
    BD_FIELD("minor", &bd_schema_int),
    BD_FIELD("micro", &bd_schema_int),
    { NULL } };
static const BdSchemaType version_triple = {
    .name = "VersionTriple", .kind = BD_SCHEMA_OBJECT,
    .fields = version_triple_fields };
static const BdSchemaField version_info_fields[] = {
    BD_FIELD("qemu", &version_triple),
    BD_FIELD("package", &bd_schema_str),
    { NULL } };
static const BdSchemaType version_info = {
    .name = "VersionInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = version_info_fields };

static const BdSchemaField command_info_fields[] = {
    BD_FIELD("name", &bd_schema_str),
    { NULL } };
static const BdSchemaType command_info = {
    .name = "CommandInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = command_info_fields };
static const BdSchemaType command_info_list = {
    .name = "[CommandInfo]", .kind = BD_SCHEMA_LIST,
    .element = &command_info };

/* SchemaInfo is described loosely: its exact shape is the format of
 * query-qmp-schema itself. */
static const BdSchemaType schema_info_list = {
    .name = "[SchemaInfo]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_any };

static const BdSchemaType *caps_args_fn(void) { return &caps_args; }
static const BdSchemaType *version_info_fn(void) { return &version_info; }
static const BdSchemaType *command_info_fn(void) { return &command_info_list; }
static const BdSchemaType *schema_info_fn(void) { return &schema_info_list; }

/* --- handlers --- */

gboolean bd_qmp_caps_enable_oob(GVariant *args)
{
    g_auto(CapsArgs) a = { 0 };

    /* "oob" is the one capability there is. */
    bd_schema_decode(caps_fields, args, &a);
    return a.enable && g_variant_n_children(a.enable) > 0;
}

static gboolean qmp_capabilities(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    return TRUE;            /* the dispatcher records the negotiation */
}

static gboolean query_version(GVariant *args, JsonNode **ret, GError **errp)
{
    *ret = bd_qmp_version_info();
    return TRUE;
}

static gboolean query_commands(GVariant *args, JsonNode **ret, GError **errp)
{
    GPtrArray *cmds = bd_qmp_commands();
    JsonArray *arr = json_array_new();

    for (guint i = 0; i < cmds->len; i++) {
        const BdQmpCommand *c = cmds->pdata[i];
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", c->name);
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

static gboolean query_qmp_schema(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    *ret = bd_qmp_schema_info();
    return TRUE;
}

static gboolean quit(GVariant *args, JsonNode **ret, GError **errp)
{
    bd_control_request_quit();
    return TRUE;
}

static const BdQmpCommand core_commands[] = {
    { "qmp_capabilities", caps_args_fn, FALSE, NULL, qmp_capabilities },
    { "query-version", NULL, FALSE, version_info_fn, query_version },
    { "query-commands", NULL, FALSE, command_info_fn, query_commands },
    { "query-qmp-schema", NULL, FALSE, schema_info_fn, query_qmp_schema },
    { "quit", NULL, FALSE, NULL, quit },
    { NULL } };

void bd_cmd_core_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(core_commands);
}

/* json: image names (formats/filename.h): BlockdevOptions in JSON,
 * validated as blockdev-add's. */
static GVariant *parse_json_blockdev(const char *text,
                                     const char *default_driver,
                                     GError **errp)
{
    g_autoptr(JsonNode) node = bd_json_parse(text, -1, errp);

    if (!node) {
        g_prefix_error(errp, "Could not parse the JSON options: ");
        return NULL;
    }
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid JSON object given");
        return NULL;
    }
    if (default_driver &&
        !json_object_has_member(json_node_get_object(node), "driver")) {
        json_object_set_string_member(json_node_get_object(node), "driver",
                                      default_driver);
    }
    return bd_validate(bd_blockdev_options_schema(), node, FALSE, errp);
}

void bd_control_init(void)
{
    BD_GLOBAL_STATE_CODE();

    static gboolean done;

    if (done) {
        return;
    }
    done = TRUE;
    bd_validate_set_blockdev_schema(bd_blockdev_options_schema);
    bd_formats_set_json_parser(parse_json_blockdev);
    bd_cmd_core_register();
    bd_cmd_block_register();
    bd_cmd_block_graph_register();
    bd_cmd_blockstats_register();
    bd_cmd_export_register();
    bd_cmd_job_register();
    bd_cmd_object_register();
    bd_cmd_qom_register();
    bd_cmd_chardev_register();
    bd_cmd_bitmap_register();
    bd_cmd_transaction_register();
    bd_cmd_checkpoint_register();
    bd_cmd_snapshot_internal_register();
    bd_cmd_backup_register();
    bd_cmd_snapshot_register();
    bd_cmd_stream_register();
    bd_cmd_mirror_register();
    bd_cmd_backup_session_register();
    bd_cmd_metrics_register();
    bd_cmd_trace_register();
    bd_events_init();
}
