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
#include "control/input.h"
#include "control/qmp-int.h"
#include "objects/authz.h"
#include "objects/tls-creds.h"
#include "graph/entry.h"
#include "export/export.h"
#include "export-nbd/nbd-server.h"
#include "graph/error.h"
#include "objects/iothread.h"
#include "graph/main-thread.h"

/* --- socket addresses (qapi/sockets.json) --- */

/* The flat SocketAddress and its variants are export-nbd's, which reads
 * them (address.c). */

/* SocketAddressLegacy: each variant wraps its address in 'data', which
 * decodes along the variant's flat type. */
typedef struct {
    BdSocketAddressType type;
    GVariant *data;
} LegacyAddress;

#define WRAPPER(var, tname, inner)                                   \
    static const BdSchemaField var##_fields[] = {                    \
        BD_FIELD("data", &inner, BD_AT(LegacyAddress, data)),        \
        { NULL } };                                                  \
    static const BdSchemaType var = { .name = tname,                 \
        .kind = BD_SCHEMA_OBJECT, .fields = var##_fields };
WRAPPER(inet_wrapper, "InetSocketAddressWrapper", bd_socket_address_inet)
WRAPPER(unix_wrapper, "UnixSocketAddressWrapper", bd_socket_address_unix)
WRAPPER(vsock_wrapper, "VsockSocketAddressWrapper", bd_socket_address_vsock)
WRAPPER(string_wrapper, "StringWrapper", bd_socket_address_fd)

static const BdSchemaType legacy_type_enum = {
    .name = "SocketAddressLegacyType", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_socket_address_type_names };
static const BdSchemaField legacy_base[] = {
    BD_FIELD("type", &legacy_type_enum, BD_AT(LegacyAddress, type)),
    { NULL } };
static const BdSchemaVariant legacy_variants[] = {
    { "inet", &inet_wrapper }, { "unix", &unix_wrapper },
    { "vsock", &vsock_wrapper }, { "fd", &string_wrapper }, { NULL } };
const BdSchemaType bd_qmp_socket_address_legacy = {
    .name = "SocketAddressLegacy", .kind = BD_SCHEMA_UNION,
    .fields = legacy_base, .discriminator = "type",
    .variants = legacy_variants };

/* --- command schemas --- */

/* nbd-server-start's arguments and --nbd-server's NbdServerOptions. */
typedef struct {
    GVariant *addr;
    const char *tls_creds;
    const char *tls_authz;
    gboolean has_tls_authz;
    guint64 max_connections;
    guint64 handshake_max_seconds;
} NbdServerArgs;

#define N(f) BD_AT(NbdServerArgs, f)
static const BdSchemaField nbd_start_fields[] = {
    BD_FIELD("addr", &bd_qmp_socket_address_legacy, N(addr)),
    BD_OPT("tls-creds", &bd_schema_str, N(tls_creds)),
    BD_OPT("tls-authz", &bd_schema_str, N(tls_authz),
           BD_HAS(NbdServerArgs, tls_authz)),
    BD_OPT("max-connections", &bd_schema_uint32, N(max_connections)),
    /* QEMU 9.0 */
    BD_OPT("handshake-max-seconds", &bd_schema_uint32,
           N(handshake_max_seconds),
           .def.u = BD_NBD_HANDSHAKE_MAX_SECONDS),
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(NbdServerArgs, nbd_start_fields)
static const BdSchemaType nbd_start_args = {
    .name = "q_obj_nbd-server-start-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_start_fields };

static const BdSchemaField nbd_options_fields[] = {
    BD_FIELD("addr", &bd_socket_address, N(addr)),
    BD_OPT("tls-creds", &bd_schema_str, N(tls_creds)),
    BD_OPT("tls-authz", &bd_schema_str, N(tls_authz),
           BD_HAS(NbdServerArgs, tls_authz)),
    BD_OPT("max-connections", &bd_schema_uint32, N(max_connections)),
    BD_OPT("handshake-max-seconds", &bd_schema_uint32,
           N(handshake_max_seconds),
           .def.u = BD_NBD_HANDSHAKE_MAX_SECONDS),
    { NULL } };
#undef N
static const BdSchemaType nbd_options = {
    .name = "NbdServerOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_options_fields };

const BdSchemaType *bd_cmd_nbd_server_options_schema(void)
{
    BD_GLOBAL_STATE_CODE();

    return &nbd_options;
}

typedef enum { REMOVE_MODE_SAFE, REMOVE_MODE_HARD } RemoveMode;

static const char *const remove_mode_values[] = {
    [REMOVE_MODE_SAFE] = "safe",
    [REMOVE_MODE_HARD] = "hard",
    NULL };
static const BdSchemaType remove_mode_enum = {
    .name = "BlockExportRemoveMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = remove_mode_values };

typedef struct {
    const char *id;
    RemoveMode mode;
} ExportDelArgs;

static const BdSchemaField export_del_fields[] = {
    BD_FIELD("id", &bd_schema_str, BD_AT(ExportDelArgs, id), .def.s = ""),
    BD_OPT("mode", &remove_mode_enum, BD_AT(ExportDelArgs, mode),
           .def.i = REMOVE_MODE_SAFE),
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

/* Start the server at 'addr' with the other options of 'a'. */
static gboolean nbd_start(const BdSocketAddress *addr, const NbdServerArgs *a,
                          GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdServerConfig cfg = {
        .max_connections = (uint32_t)a->max_connections,
        .tls_authz = a->tls_authz,
        .handshake_max_seconds = (uint32_t)a->handshake_max_seconds,
    };
    g_autoptr(BdTlsCreds) creds = NULL;
    g_autoptr(BdObject) creds_obj = NULL;
    g_autoptr(BdObject) authz_obj = NULL;

    if (bd_nbd_server_running()) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server already running");
        return FALSE;
    }
    if (addr->type == BD_SOCKET_ADDRESS_VSOCK) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server: socket address type '%s' is not supported "
                    "by blockd", bd_socket_address_type_names[addr->type]);
        return FALSE;
    }
    if (a->tls_creds) {
        creds = bd_tls_creds_lookup(a->tls_creds, BD_TLS_ENDPOINT_SERVER,
                                    &creds_obj, errp);
        if (!creds) {
            return FALSE;
        }
    } else if (a->has_tls_authz) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "tls-authz is not supported without tls-creds");
        return FALSE;
    }
    /* As QEMU, an authz id is looked up at each connection (one added
     * later counts); one that exists now cannot go while the server
     * runs. */
    if (a->tls_authz) {
        authz_obj = bd_object_find_kind(a->tls_authz, BD_AUTHZ_KIND);
    }
    cfg.tls_creds = creds;
    cfg.tls_creds_obj = creds_obj;
    cfg.tls_authz_obj = authz_obj;
    return bd_nbd_server_start(addr, &cfg, errp);
}

gboolean bd_cmd_nbd_server_start_flat(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(NbdServerArgs) a = { 0 };
    BdSocketAddress addr = { 0 };

    bd_schema_decode(nbd_options_fields, options, &a);
    bd_socket_address_decode(a.addr, &addr);
    return nbd_start(&addr, &a, errp);
}

static gboolean nbd_server_start(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_auto(NbdServerArgs) a = { 0 };
    LegacyAddress legacy = { 0 };
    BdSocketAddress addr = { 0 };
    const BdSchemaType *wrapper;
    gboolean ok;

    bd_schema_decode(nbd_start_fields, args, &a);
    /* {"type": T, "data": {...}}: 'data' is T's flat variant, the type
     * of the wrapper's one member (legacy_variants in enum order). */
    bd_schema_decode_union(&bd_qmp_socket_address_legacy, a.addr, &legacy);
    wrapper = legacy_variants[legacy.type].type;
    bd_schema_decode(wrapper->fields[0].type->fields, legacy.data, &addr);
    addr.type = legacy.type;
    ok = nbd_start(&addr, &a, errp);
    bd_schema_clear_union(&bd_qmp_socket_address_legacy, &legacy);
    return ok;
}

/* As QEMU: nbd-server-stop returns once the NBD exports are deleted
 * (their BLOCK_EXPORT_DELETED sent, their ids and nodes free).  Their
 * clients were told to go; we sleep until the last one has (woken by
 * its thread, no polling), for a bounded time: an export whose client
 * is stuck in I/O goes later, with its event. */
#define NBD_STOP_WAIT_US (10 * G_USEC_PER_SEC)

static gboolean nbd_server_stop(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

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

/* An export's iothread: the worker pool its threads run in
 * (export/iothread.c).  Borrowed: the object stays while the main
 * thread runs block-export-add. */
static BdWorkerPool *iothread_pool(const char *id)
{
    g_autoptr(BdObject) obj = bd_object_find_kind(id, BD_IOTHREAD_KIND);

    return obj ? ((BdIothread *)obj)->pool : NULL;
}

gboolean bd_cmd_block_export_add(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    return bd_export_add(options, iothread_pool, errp) != NULL;
}

static gboolean block_export_add(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    return bd_cmd_block_export_add(args, errp);
}

static gboolean block_export_del(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ExportDelArgs a = { 0 };

    bd_schema_decode(export_del_fields, args, &a);
    return bd_export_del(a.id, a.mode == REMOVE_MODE_HARD, errp);
}

static gboolean query_block_exports(GVariant *args, JsonNode **ret,
                                    GError **errp)
{
    BD_GLOBAL_STATE_CODE();

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

/* x-query-nbd-clients (blockd's own): who is connected, over what. */
static const BdSchemaField nbd_client_info_fields[] = {
    BD_FIELD("export", &bd_schema_str),
    BD_FIELD("address", &bd_schema_str),
    BD_FIELD("tls", &bd_schema_bool),
    BD_OPT("tls-identity", &bd_schema_str),
    BD_FIELD("bytes-read", &bd_schema_uint),
    BD_FIELD("bytes-written", &bd_schema_uint),
    { NULL } };
static const BdSchemaType nbd_client_info = {
    .name = "NbdClientInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_client_info_fields };
static const BdSchemaType nbd_client_info_list = {
    .name = "[NbdClientInfo]", .kind = BD_SCHEMA_LIST,
    .element = &nbd_client_info };
static const BdSchemaType *nbd_clients_fn(void)
{
    return &nbd_client_info_list;
}

static gboolean query_nbd_clients(GVariant *args, JsonNode **ret,
                                  GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) list = bd_nbd_server_query_clients();
    JsonArray *arr = json_array_new();

    for (guint i = 0; i < list->len; i++) {
        BdNbdClientInfo *info = list->pdata[i];
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "export", info->export_name);
        json_object_set_string_member(o, "address", info->address);
        json_object_set_boolean_member(o, "tls", info->tls);
        if (info->tls_identity) {
            json_object_set_string_member(o, "tls-identity",
                                          info->tls_identity);
        }
        json_object_set_int_member(o, "bytes-read",
                                   (gint64)info->bytes_read);
        json_object_set_int_member(o, "bytes-written",
                                   (gint64)info->bytes_written);
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

/* --- the legacy NBD export commands (blockdev-nbd.c) --- */

typedef struct {
    const char *name;
    const char *description;
    const char *device;
    gboolean writable;
    gboolean has_writable;
    const char *bitmap;
} NbdAddArgs;

static const BdSchemaField nbd_add_fields[] = {
    BD_OPT("name", &bd_schema_str, BD_AT(NbdAddArgs, name)),
    BD_OPT("description", &bd_schema_str, BD_AT(NbdAddArgs, description)),
    BD_FIELD("device", &bd_schema_str, BD_AT(NbdAddArgs, device),
             .def.s = ""),
    BD_OPT("writable", &bd_schema_bool, BD_AT(NbdAddArgs, writable),
           BD_HAS(NbdAddArgs, writable)),
    BD_OPT("bitmap", &bd_schema_str, BD_AT(NbdAddArgs, bitmap)),
    { NULL } };
static const BdSchemaType nbd_add_args = {
    .name = "NbdServerAddOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_add_fields };
static const BdSchemaField nbd_remove_fields[] = {
    BD_FIELD("name", &bd_schema_str, BD_AT(ExportDelArgs, id), .def.s = ""),
    BD_OPT("mode", &remove_mode_enum, BD_AT(ExportDelArgs, mode),
           .def.i = REMOVE_MODE_SAFE),
    { NULL } };
static const BdSchemaType nbd_remove_args = {
    .name = "q_obj_nbd-server-remove-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = nbd_remove_fields };

static const BdSchemaType *nbd_add_fn(void) { return &nbd_add_args; }
static const BdSchemaType *nbd_remove_fn(void) { return &nbd_remove_args; }

/* nbd-server-add: block-export-add with the legacy defaults - the
 * export id and name are 'name', else the device; a read-only node is
 * exported read-only even when 'writable' asks otherwise. */
static gboolean nbd_server_add(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    NbdAddArgs a = { 0 };
    BdNode *node;
    gboolean writable;

    (void)ret;
    bd_schema_decode(nbd_add_fields, args, &a);
    /* As QEMU: the device first; whether the server runs is the NBD
     * export's check, after the node's permissions. */
    node = bd_ctl_lookup_node(a.device, errp);
    if (!node) {
        return FALSE;
    }
    const char *name = a.name ? a.name : a.device;
    writable = a.has_writable && a.writable && !node->read_only;

    g_autoptr(JsonBuilder) b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, "nbd");
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, name);
    json_builder_set_member_name(b, "node-name");
    json_builder_add_string_value(b, node->node_name);
    json_builder_set_member_name(b, "writable");
    json_builder_add_boolean_value(b, writable);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, name);
    if (a.description) {
        json_builder_set_member_name(b, "description");
        json_builder_add_string_value(b, a.description);
    }
    if (a.bitmap) {
        json_builder_set_member_name(b, "bitmaps");
        json_builder_begin_array(b);
        json_builder_add_string_value(b, a.bitmap);
        json_builder_end_array(b);
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) opts = json_builder_get_root(b);
    g_autoptr(GVariant) v = bd_validate(bd_export_options_schema(), opts,
                                        FALSE, errp);
    if (!v) {
        return FALSE;
    }
    return bd_export_add(v, NULL, errp) != NULL;
}

static gboolean nbd_server_remove(GVariant *args, JsonNode **ret,
                                  GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ExportDelArgs a = { 0 };
    BdExport *exp;

    (void)ret;
    bd_schema_decode(nbd_remove_fields, args, &a);
    exp = bd_export_find(a.id);
    if (exp && strcmp(exp->drv->type, "nbd") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block export '%s' is not an NBD export", a.id);
        return FALSE;
    }
    return bd_export_del(a.id, a.mode == REMOVE_MODE_HARD, errp);
}

static const BdQmpCommand export_commands[] = {
    { "nbd-server-add", nbd_add_fn, TRUE, NULL, nbd_server_add },
    { "nbd-server-remove", nbd_remove_fn, FALSE, NULL, nbd_server_remove },
    { "nbd-server-start", nbd_start_fn, FALSE, NULL, nbd_server_start },
    { "nbd-server-stop", NULL, FALSE, NULL, nbd_server_stop },
    { "block-export-add", bd_export_options_schema, TRUE, NULL,
      block_export_add },
    { "block-export-del", export_del_fn, FALSE, NULL, block_export_del },
    { "query-block-exports", NULL, FALSE, export_info_fn,
      query_block_exports },
    { "x-query-nbd-clients", NULL, FALSE, nbd_clients_fn,
      query_nbd_clients },
    { NULL } };

void bd_cmd_export_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(export_commands);
}
