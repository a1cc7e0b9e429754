/* SPDX-License-Identifier: MIT */
/* Export commands: nbd-server-start/stop, block-export-add/del,
 * query-block-exports, and the socket address types they take.
 *
 * QMP's nbd-server-start takes the legacy SocketAddressLegacy
 * ({"type": "unix", "data": {"path": P}}); the command line's
 * --nbd-server takes the flat SocketAddress ({"type": "unix", "path": P}).
 * Both are flattened to the form export-nbd/nbd-server.h wants.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/qmp-int.h"
#include "graph/entry.h"
#include "export/export.h"
#include "export-nbd/nbd-server.h"
#include "graph/error.h"

/* --- socket addresses (qapi/sockets.json) --- */

static const BdSchemaField inet_fields[] = {
    BD_FIELD("host", &bd_schema_str),
    BD_FIELD("port", &bd_schema_str),
    BD_OPT("numeric", &bd_schema_bool),
    BD_OPT("to", &bd_ctl_schema_uint16),
    BD_OPT("ipv4", &bd_schema_bool),
    BD_OPT("ipv6", &bd_schema_bool),
    BD_OPT("keep-alive", &bd_schema_bool),
    BD_OPT("mptcp", &bd_schema_bool),
    { NULL } };
static const BdSchemaType inet_type = {
    .name = "InetSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = inet_fields };
static const BdSchemaField unix_fields[] = {
    BD_FIELD("path", &bd_schema_str),
    BD_OPT("abstract", &bd_schema_bool),
    BD_OPT("tight", &bd_schema_bool),
    { NULL } };
static const BdSchemaType unix_type = {
    .name = "UnixSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = unix_fields };
static const BdSchemaField vsock_fields[] = {
    BD_FIELD("cid", &bd_schema_str),
    BD_FIELD("port", &bd_schema_str),
    { NULL } };
static const BdSchemaType vsock_type = {
    .name = "VsockSocketAddress", .kind = BD_SCHEMA_OBJECT,
    .fields = vsock_fields };
static const BdSchemaField string_fields[] = {
    BD_FIELD("str", &bd_schema_str),
    { NULL } };
static const BdSchemaType string_type = {
    .name = "String", .kind = BD_SCHEMA_OBJECT, .fields = string_fields };

static const char *const addr_type_values[] = { "inet", "unix", "vsock",
                                                "fd", NULL };
static const BdSchemaType addr_type_enum = {
    .name = "SocketAddressType", .kind = BD_SCHEMA_ENUM,
    .enum_values = addr_type_values };
static const BdSchemaField addr_base[] = {
    BD_FIELD("type", &addr_type_enum),
    { NULL } };

/* Flat SocketAddress. */
static const BdSchemaVariant flat_variants[] = {
    { "inet", &inet_type }, { "unix", &unix_type },
    { "vsock", &vsock_type }, { "fd", &string_type }, { NULL } };
static const BdSchemaType socket_address = {
    .name = "SocketAddress", .kind = BD_SCHEMA_UNION, .fields = addr_base,
    .discriminator = "type", .variants = flat_variants };

/* SocketAddressLegacy: each variant wraps its address in 'data'. */
#define WRAPPER(var, tname, inner)                                   \
    static const BdSchemaField var##_fields[] = {                    \
        BD_FIELD("data", &inner), { NULL } };                        \
    static const BdSchemaType var = { .name = tname,                 \
        .kind = BD_SCHEMA_OBJECT, .fields = var##_fields };
WRAPPER(inet_wrapper, "InetSocketAddressWrapper", inet_type)
WRAPPER(unix_wrapper, "UnixSocketAddressWrapper", unix_type)
WRAPPER(vsock_wrapper, "VsockSocketAddressWrapper", vsock_type)
WRAPPER(string_wrapper, "StringWrapper", string_type)

static const char *const legacy_type_values[] = { "inet", "unix", "vsock",
                                                  "fd", NULL };
static const BdSchemaType legacy_type_enum = {
    .name = "SocketAddressLegacyType", .kind = BD_SCHEMA_ENUM,
    .enum_values = legacy_type_values };
static const BdSchemaField legacy_base[] = {
    BD_FIELD("type", &legacy_type_enum),
    { NULL } };
static const BdSchemaVariant legacy_variants[] = {
    { "inet", &inet_wrapper }, { "unix", &unix_wrapper },
    { "vsock", &vsock_wrapper }, { "fd", &string_wrapper }, { NULL } };
static const BdSchemaType socket_address_legacy = {
    .name = "SocketAddressLegacy", .kind = BD_SCHEMA_UNION,
    .fields = legacy_base, .discriminator = "type",
    .variants = legacy_variants };

/* --- command schemas --- */

static const BdSchemaField nbd_start_fields[] = {
    BD_FIELD("addr", &socket_address_legacy),
    BD_OPT("tls-creds", &bd_schema_str),
    BD_OPT("tls-authz", &bd_schema_str),
    BD_OPT("max-connections", &bd_ctl_schema_uint32),
    { NULL } };
static const BdSchemaType nbd_start_args = {
    .name = "q_obj_nbd-server-start-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_start_fields };

static const BdSchemaField nbd_options_fields[] = {
    BD_FIELD("addr", &socket_address),
    BD_OPT("tls-creds", &bd_schema_str),
    BD_OPT("tls-authz", &bd_schema_str),
    BD_OPT("max-connections", &bd_ctl_schema_uint32),
    { NULL } };
static const BdSchemaType nbd_options = {
    .name = "NbdServerOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_options_fields };

const BdSchemaType *bd_cmd_nbd_server_options_schema(void)
{
    return &nbd_options;
}

static const char *const remove_mode_values[] = { "safe", "hard", NULL };
static const BdSchemaType remove_mode_enum = {
    .name = "BlockExportRemoveMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = remove_mode_values };
static const BdSchemaField export_del_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_OPT("mode", &remove_mode_enum),
    { NULL } };
static const BdSchemaType export_del_args = {
    .name = "q_obj_block-export-del-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = export_del_fields };

static const BdSchemaField export_info_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_FIELD("type", &bd_schema_str),
    BD_FIELD("node-name", &bd_schema_str),
    BD_FIELD("shutting-down", &bd_schema_bool),
    { NULL } };
static const BdSchemaType export_info = {
    .name = "BlockExportInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = export_info_fields };
static const BdSchemaType export_info_list = {
    .name = "[BlockExportInfo]", .kind = BD_SCHEMA_LIST,
    .element = &export_info };

static const BdSchemaType *nbd_start_fn(void) { return &nbd_start_args; }
static const BdSchemaType *export_del_fn(void) { return &export_del_args; }
static const BdSchemaType *export_info_fn(void) { return &export_info_list; }

/* --- handlers --- */

/* Start the server from validated options whose 'addr' is flat. */
static gboolean nbd_start(GVariant *addr, GVariant *options, GError **errp)
{
    const char *type = bd_opts_get_str(addr, "type", "");
    const char *creds = bd_opts_get_str(options, "tls-creds", NULL);

    if (creds) {
        /* blockd has no --object yet, so no credentials can exist. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "No TLS credentials with id '%s'", creds);
        return FALSE;
    }
    if (bd_opts_has(options, "tls-authz")) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "tls-authz is not supported without tls-creds");
        return FALSE;
    }
    if (strcmp(type, "unix") != 0 && strcmp(type, "inet") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server: socket address type '%s' is not supported "
                    "by blockd", type);
        return FALSE;
    }
    guint64 max = bd_opts_get_uint(options, "max-connections", 0);
    return bd_nbd_server_start(addr, (uint32_t)max, errp);
}

gboolean bd_cmd_nbd_server_start_flat(GVariant *options, GError **errp)
{
    g_autoptr(GVariant) addr = bd_opts_lookup(options, "addr");
    return nbd_start(addr, options, errp);
}

static gboolean nbd_server_start(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    g_autoptr(GVariant) legacy = bd_opts_lookup(args, "addr");
    g_autoptr(GVariant) data = bd_opts_lookup(legacy, "data");
    GVariantDict flat;

    /* {"type": T, "data": {...}} -> {"type": T, ...} */
    g_variant_dict_init(&flat, data);
    g_variant_dict_insert(&flat, "type", "s",
                          bd_opts_get_str(legacy, "type", ""));
    g_autoptr(GVariant) addr = g_variant_ref_sink(g_variant_dict_end(&flat));
    return nbd_start(addr, args, errp);
}

/* As QEMU: nbd-server-stop returns once the NBD exports are deleted
 * (their BLOCK_EXPORT_DELETED sent, their ids and nodes free).  Their
 * clients were told to go; we sleep until the last one has (woken by
 * its thread, no polling), for a bounded time: an export whose client
 * is stuck in I/O goes later, with its event. */
#define NBD_STOP_WAIT_US (10 * G_USEC_PER_SEC)

static gboolean nbd_server_stop(GVariant *args, JsonNode **ret, GError **errp)
{
    if (!bd_nbd_server_stop(errp)) {
        return FALSE;
    }
    if (!bd_export_wait_gone("nbd", g_get_monotonic_time() +
                                    NBD_STOP_WAIT_US)) {
        g_warning("nbd-server-stop: NBD exports still have clients after "
                  "%d s; they go when those leave",
                  (int)(NBD_STOP_WAIT_US / G_USEC_PER_SEC));
    }
    return TRUE;
}

gboolean bd_cmd_block_export_add(GVariant *options, GError **errp)
{
    return bd_export_add(options, errp) != NULL;
}

static gboolean block_export_add(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    return bd_cmd_block_export_add(args, errp);
}

static gboolean block_export_del(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    const char *mode = bd_opts_get_str(args, "mode", "safe");
    return bd_export_del(bd_opts_get_str(args, "id", ""),
                         strcmp(mode, "hard") == 0, errp);
}

static gboolean query_block_exports(GVariant *args, JsonNode **ret,
                                    GError **errp)
{
    GPtrArray *list = bd_export_list();
    JsonArray *arr = json_array_new();

    /* Newest first, as QEMU lists them. */
    for (guint i = list ? list->len : 0; i-- > 0;) {
        BdExport *exp = list->pdata[i];
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "id", exp->id);
        json_object_set_string_member(o, "type", exp->drv->type);
        /* The node under the export now, as QEMU (a job's filter or a
         * mirror's target after its pivot). */
        BdNode *node = exp->entry ? bd_entry_node(exp->entry) : NULL;
        json_object_set_string_member(o, "node-name",
                                      node ? node->node_name
                                           : exp->node_name);
        json_object_set_boolean_member(o, "shutting-down",
                                       exp->shutting_down);
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

static const BdQmpCommand export_commands[] = {
    { "nbd-server-start", nbd_start_fn, FALSE, NULL, nbd_server_start },
    { "nbd-server-stop", NULL, FALSE, NULL, nbd_server_stop },
    { "block-export-add", bd_export_options_schema, TRUE, NULL,
      block_export_add },
    { "block-export-del", export_del_fn, FALSE, NULL, block_export_del },
    { "query-block-exports", NULL, FALSE, export_info_fn,
      query_block_exports },
    { NULL } };

void bd_cmd_export_register(void)
{
    bd_qmp_register(export_commands);
}
