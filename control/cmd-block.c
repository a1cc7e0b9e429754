/* SPDX-License-Identifier: MIT */
/* Block graph commands: blockdev-add, blockdev-del, blockdev-reopen and
 * query-named-block-nodes.
 *
 * Thread model: main thread only.
 */
#include "control/qmp-int.h"
#include "jobs/chain.h"
#include "graph/error.h"
#include "graph/node.h"
#include "graph/query.h"
#include "graph/main-thread.h"
#include "graph/trace.h"

/* --- schemas --- */

/* The arguments of the commands here but blockdev-add. */
typedef struct {
    const char *node_name;
    gboolean flat;
    const char *device;
    gint64 size;
    GVariant *options;
    const char *image_node_name;
    const char *backing_file;
} BlockArgs;

#define A(f) BD_AT(BlockArgs, f)
static const BdSchemaField del_fields[] = {
    BD_FIELD("node-name", &bd_schema_str, A(node_name), .def.s = ""),
    { NULL } };
static const BdSchemaType del_args = {
    .name = "q_obj_blockdev-del-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = del_fields };

static const BdSchemaField query_fields[] = {
    BD_OPT("flat", &bd_schema_bool, A(flat)),
    { NULL } };
static const BdSchemaType query_args = {
    .name = "q_obj_query-named-block-nodes-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = query_fields };

/* BlockDeviceInfo, as graph/query.c fills it (for query-qmp-schema). */

static const BdSchemaType image_info;
static const BdSchemaField image_info_fields[] = {
    BD_FIELD("filename", &bd_schema_str),
    BD_FIELD("format", &bd_schema_str),
    BD_OPT("dirty-flag", &bd_schema_bool),
    BD_FIELD("virtual-size", &bd_schema_int),
    BD_OPT("actual-size", &bd_schema_int),
    BD_OPT("cluster-size", &bd_schema_int),
    /* Optional in QEMU's ImageInfo; blockd reports neither (QEMU 7.2's
     * block nodes leave them out too), listed for introspection. */
    BD_OPT("encrypted", &bd_schema_bool),
    BD_OPT("compressed", &bd_schema_bool),
    BD_OPT("backing-filename", &bd_schema_str),
    BD_OPT("full-backing-filename", &bd_schema_str),
    BD_OPT("backing-filename-format", &bd_schema_str),
    BD_OPT("snapshots", &bd_cmd_snapshot_info_list),
    BD_OPT("backing-image", &image_info),
    BD_OPT("format-specific", &bd_schema_any),
    { NULL } };
static const BdSchemaType image_info = {
    .name = "ImageInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = image_info_fields };
static const BdSchemaField dirty_info_fields[] = {
    BD_OPT("name", &bd_schema_str),
    BD_FIELD("count", &bd_schema_int),
    BD_FIELD("granularity", &bd_schema_int),
    BD_FIELD("recording", &bd_schema_bool),
    BD_FIELD("busy", &bd_schema_bool),
    BD_FIELD("persistent", &bd_schema_bool),
    BD_OPT("inconsistent", &bd_schema_bool),
    { NULL } };
static const BdSchemaType dirty_info = {
    .name = "BlockDirtyInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = dirty_info_fields };
static const BdSchemaType dirty_info_list = {
    .name = "[BlockDirtyInfo]", .kind = BD_SCHEMA_LIST,
    .element = &dirty_info };
static const BdSchemaField cache_info_fields[] = {
    BD_FIELD("writeback", &bd_schema_bool),
    BD_FIELD("direct", &bd_schema_bool),
    BD_FIELD("no-flush", &bd_schema_bool),
    { NULL } };
static const BdSchemaType cache_info = {
    .name = "BlockdevCacheInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = cache_info_fields };
static const char *const detect_zeroes_values[] = { "off", "on", "unmap",
                                                    NULL };
static const BdSchemaType detect_zeroes_type = {
    .name = "BlockdevDetectZeroesOptions", .kind = BD_SCHEMA_ENUM,
    .enum_values = detect_zeroes_values };
static const BdSchemaField device_info_fields[] = {
    BD_FIELD("file", &bd_schema_str),
    BD_OPT("node-name", &bd_schema_str),
    BD_FIELD("ro", &bd_schema_bool),
    BD_FIELD("drv", &bd_schema_str),
    BD_OPT("backing_file", &bd_schema_str),
    BD_FIELD("backing_file_depth", &bd_schema_int),
    BD_FIELD("encrypted", &bd_schema_bool),
    BD_FIELD("detect_zeroes", &detect_zeroes_type),
    BD_FIELD("bps", &bd_schema_int),
    BD_FIELD("bps_rd", &bd_schema_int),
    BD_FIELD("bps_wr", &bd_schema_int),
    BD_FIELD("iops", &bd_schema_int),
    BD_FIELD("iops_rd", &bd_schema_int),
    BD_FIELD("iops_wr", &bd_schema_int),
    BD_FIELD("image", &image_info),
    /* QEMU's throttling members beyond the six above exist only when a
     * device's BlockBackend is throttled, which a storage daemon's
     * nodes never are: listed for introspection, never returned. */
    BD_OPT("bps_max", &bd_schema_int),
    BD_OPT("bps_rd_max", &bd_schema_int),
    BD_OPT("bps_wr_max", &bd_schema_int),
    BD_OPT("iops_max", &bd_schema_int),
    BD_OPT("iops_rd_max", &bd_schema_int),
    BD_OPT("iops_wr_max", &bd_schema_int),
    BD_OPT("bps_max_length", &bd_schema_int),
    BD_OPT("bps_rd_max_length", &bd_schema_int),
    BD_OPT("bps_wr_max_length", &bd_schema_int),
    BD_OPT("iops_max_length", &bd_schema_int),
    BD_OPT("iops_rd_max_length", &bd_schema_int),
    BD_OPT("iops_wr_max_length", &bd_schema_int),
    BD_OPT("iops_size", &bd_schema_int),
    BD_OPT("group", &bd_schema_str),
    BD_FIELD("write_threshold", &bd_schema_int),
    BD_OPT("dirty-bitmaps", &dirty_info_list),
    BD_FIELD("cache", &cache_info),
    { NULL } };
static const BdSchemaType device_info = {
    .name = "BlockDeviceInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = device_info_fields };
static const BdSchemaType device_info_list = {
    .name = "[BlockDeviceInfo]", .kind = BD_SCHEMA_LIST,
    .element = &device_info };

static const BdSchemaField resize_fields[] = {
    BD_OPT("device", &bd_schema_str, A(device)),
    BD_OPT("node-name", &bd_schema_str, A(node_name)),
    BD_FIELD("size", &bd_schema_int, A(size)),
    { NULL } };
static const BdSchemaType resize_args = {
    .name = "q_obj_block_resize-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = resize_fields };

/* blockdev-reopen {"options": [BlockdevOptions, ...]}; the element type
 * exists only once the drivers are registered. */
static const BdSchemaType *reopen_args_fn(void)
{
    static BdSchemaType list = {
        .name = "[BlockdevOptions]", .kind = BD_SCHEMA_LIST };
    static BdSchemaField fields[] = {
        BD_FIELD("options", &list, A(options)),
        { NULL } };
    static const BdSchemaType args = {
        .name = "q_obj_blockdev-reopen-arg", .kind = BD_SCHEMA_OBJECT,
        .fields = fields };

    list.element = bd_blockdev_options_schema();
    return &args;
}

static const BdSchemaField change_backing_fields[] = {
    BD_FIELD("device", &bd_schema_str, A(device), .def.s = ""),
    BD_FIELD("image-node-name", &bd_schema_str, A(image_node_name),
             .def.s = ""),
    BD_FIELD("backing-file", &bd_schema_str, A(backing_file), .def.s = ""),
    { NULL } };
#undef A
static const BdSchemaType change_backing_args = {
    .name = "q_obj_change-backing-file-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = change_backing_fields };
static const BdSchemaType *change_backing_args_fn(void)
{
    return &change_backing_args;
}

static const BdSchemaType block_info_list = {
    .name = "[BlockInfo]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_any };
static const BdSchemaType *block_info_list_fn(void)
{
    return &block_info_list;
}

static const BdSchemaType *del_args_fn(void) { return &del_args; }
static const BdSchemaType *resize_args_fn(void) { return &resize_args; }
static const BdSchemaType *query_args_fn(void) { return &query_args; }
static const BdSchemaType *device_info_fn(void) { return &device_info_list; }

/* --- handlers --- */

gboolean bd_cmd_blockdev_add(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNodeOptions o = { 0 };

    bd_node_options_decode(options, &o);
    if (!o.node_name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'node-name' must be specified for the root node");
        return FALSE;
    }
    BdNode *node = bd_node_open(options, errp);
    if (!node) {
        return FALSE;
    }
    /* The reference bd_node_open() returned is the monitor's. */
    node->monitor_owned = TRUE;
    return TRUE;
}

/* One log line and trace point for a graph change a command asked for,
 * with the reason when it failed. */
static gboolean graph_change_done(BdTraceEvent ev, const char *what,
                                  const char *name, gboolean ok,
                                  GError **errp)
{
    const char *why = !ok && errp && *errp ? (*errp)->message : "";

    if (ok) {
        g_info("%s of '%s' done", what, name ? name : "");
        BD_TRACE(ev, "node=%s ok", name ? name : "");
    } else {
        g_info("%s of '%s' failed: %s", what, name ? name : "", why);
        BD_TRACE(ev, "node=%s error=%s", name ? name : "", why);
    }
    return ok;
}

static gboolean blockdev_add(GVariant *args, JsonNode **ret, GError **errp)
{
    BdNodeOptions o = { 0 };
    g_autoptr(GError) err = NULL;
    gboolean ok;

    bd_node_options_decode(args, &o);
    ok = bd_cmd_blockdev_add(args, &err);
    if (!ok && bd_open_offload_queued()) {
        /* Not done: made again after the queued work (open-stages.c). */
        g_propagate_error(errp, g_steal_pointer(&err));
        return FALSE;
    }
    graph_change_done(BD_TRACE_BLOCKDEV_ADD, "blockdev-add", o.node_name, ok,
                      &err);
    if (err) {
        g_propagate_error(errp, g_steal_pointer(&err));
    }
    return ok;
}

/* blockdev-add from a monitor: in stages (control/open-stages.c), so
 * that an rbd node connects and a LUKS node unlocks off the main loop. */
static gboolean blockdev_add_async(GVariant *args, BdQmpPending *p)
{
    BD_GLOBAL_STATE_CODE();

    BdNodeOptions o = { 0 };
    GPtrArray *prepare;

    bd_node_options_decode(args, &o);
    if (!o.node_name) {
        return FALSE;
    }
    prepare = g_ptr_array_new_with_free_func((GDestroyNotify)g_variant_unref);
    if (bd_node_needs_prepare(args)) {
        g_ptr_array_add(prepare, g_variant_ref(args));
    }
    bd_ctl_run_open_stages(args, p, prepare, blockdev_add);
    return TRUE;
}

static gboolean blockdev_reopen(GVariant *args, JsonNode **ret,
                                GError **errp)
{
    BlockArgs a = { 0 };
    g_autoptr(GPtrArray) opts = g_ptr_array_new_with_free_func(
        (GDestroyNotify)g_variant_unref);
    gsize n;
    gboolean ok;

    bd_schema_decode(reopen_args_fn()->fields, args, &a);
    n = a.options ? g_variant_n_children(a.options) : 0;
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(a.options, i);
        g_ptr_array_add(opts, g_variant_get_variant(boxed));
    }
    ok = bd_node_reopen_multiple(opts, errp);
    bd_schema_clear(reopen_args_fn()->fields, &a);
    return ok;
}

/* query-block lists block backends with a name or a device attached:
 * a storage daemon has neither (its exports' backends are anonymous), so
 * the list is empty, as qemu-storage-daemon's.  Nodes are in
 * query-named-block-nodes. */
static gboolean query_block(GVariant *args, JsonNode **ret, GError **errp)
{
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, json_array_new());
    return TRUE;
}

/* change-backing-file: rewrite the backing file name in the header of
 * 'image-node-name', an image in the chain of 'device' that has a
 * backing file; the graph stays as it is (QEMU's checks and texts). */
static gboolean change_backing_file(GVariant *args, JsonNode **ret,
                                    GError **errp)
{
    BlockArgs a = { 0 };

    bd_schema_decode(change_backing_fields, args, &a);
    const char *device = a.device;
    const char *image = a.image_node_name;
    const char *file = a.backing_file;
    BdNode *bs = bd_node_find(device);
    BdNode *image_bs = bd_node_find(image);
    BdNode *backing;
    gboolean ro, ok;

    if (!bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", device,
                    device);
        return FALSE;
    }
    /* QEMU's qmp_get_root_bs: no node nor job above 'device'. */
    gboolean root = bd_chain_check_busy(bs, NULL);
    for (GList *l = bs->parents; root && l; l = l->next) {
        root = ((BdChild *)l->data)->parent == NULL;
    }
    if (!root) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Need a root block node");
        return FALSE;
    }
    if (!image_bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='' nor node-name='%s'", image);
        return FALSE;
    }
    backing = bd_node_backing(image_bs);
    if (!backing) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "not allowing backing file change on an image without "
                    "a backing file");
        return FALSE;
    }
    if (!bd_chain_check_busy(bs, errp)) {
        return FALSE;
    }
    if (!bd_chain_contains(bs, image_bs)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'%s' and image file are not in the same chain", device);
        return FALSE;
    }
    ro = image_bs->read_only;
    if (ro && !bd_chain_reopen_read_only(image_bs, FALSE, errp)) {
        return FALSE;
    }
    /* The format of the image below any filter (a backup's
     * copy-before-write node, say): a filter's name is no image format
     * and would not even fit the header extension QEMU reads. */
    BdNode *fmt_node = bd_chain_skip_filters(backing);
    ok = bd_chain_change_backing_file(image_bs, file,
                                      (fmt_node ? fmt_node : backing)->drv->name,
                                      errp);
    if (ro) {
        /* Back to read-only; a failure here leaves it writable, as QEMU. */
        bd_chain_reopen_read_only(image_bs, TRUE, NULL);
    }
    return ok;
}

static gboolean blockdev_del(GVariant *args, JsonNode **ret, GError **errp)
{
    BlockArgs a = { 0 };

    g_autoptr(GError) err = NULL;
    gboolean ok;

    bd_schema_decode(del_fields, args, &a);
    ok = bd_node_monitor_del(a.node_name, &err);
    graph_change_done(BD_TRACE_BLOCKDEV_DEL, "blockdev-del", a.node_name, ok,
                      &err);
    if (err) {
        g_propagate_error(errp, g_steal_pointer(&err));
    }
    return ok;
}

static gboolean query_named_block_nodes(GVariant *args, JsonNode **ret,
                                        GError **errp)
{
    BlockArgs a = { 0 };
    gboolean flat;
    GPtrArray *nodes = bd_node_list();
    JsonArray *arr = json_array_new();

    bd_schema_decode(query_fields, args, &a);
    flat = a.flat;
    /* Newest first, as QEMU lists them. */
    for (guint i = nodes->len; i-- > 0;) {
        g_autoptr(GVariant) info = bd_node_query_info(nodes->pdata[i], flat);
        if (info) {
            g_variant_ref_sink(info);
            json_array_add_element(arr, bd_variant_to_json(info));
        }
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

/* block_resize: blockd has no devices, so 'device' names a node too. */
static gboolean block_resize(GVariant *args, JsonNode **ret, GError **errp)
{
    BlockArgs a = { 0 };
    const char *device, *node_name;
    gint64 size;
    BdNode *node = NULL;

    bd_schema_decode(resize_fields, args, &a);
    device = a.device;
    node_name = a.node_name;
    size = a.size;

    if (node_name) {
        node = bd_node_find(node_name);
    } else if (device) {
        node = bd_node_find(device);
    }
    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'",
                    device ? device : "", node_name ? node_name : "");
        return FALSE;
    }
    if (size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'size' expects a >0 size");
        return FALSE;
    }
    /* QEMU's op blockers refuse resizing a node a job holds or one used
     * as a backing image, naming 'device' (printf's "(null)" when only
     * node-name is given, as QEMU's text has it). */
    gboolean blocked = !bd_chain_check_busy(node, NULL);
    for (GList *l = node->parents; !blocked && l; l = l->next) {
        BdChild *c = l->data;
        blocked = c->parent && (c->role & BD_CHILD_COW);
    }
    if (blocked) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Device '%s' is in use", device ? device : "(null)");
        return FALSE;
    }
    return bd_node_resize(node, (uint64_t)size, errp);
}

/* --- x-blockdev-change (QEMU's qmp_x_blockdev_change) --- */

typedef struct {
    const char *parent;
    const char *child;
    const char *node;
} ChangeArgs;

static const BdSchemaField change_fields[] = {
    BD_FIELD("parent", &bd_schema_str, BD_AT(ChangeArgs, parent),
             .def.s = ""),
    BD_OPT("child", &bd_schema_str, BD_AT(ChangeArgs, child)),
    BD_OPT("node", &bd_schema_str, BD_AT(ChangeArgs, node)),
    { NULL } };
static const BdSchemaType change_args = {
    .name = "q_obj_x-blockdev-change-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = change_fields };

static const BdSchemaType *change_args_fn(void)
{
    return &change_args;
}

static BdChild *find_child(BdNode *node, const char *name)
{
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

static gboolean x_blockdev_change(GVariant *args, JsonNode **ret,
                                  GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ChangeArgs a = { 0 };
    BdNode *parent;

    (void)ret;
    bd_schema_decode(change_fields, args, &a);
    parent = bd_ctl_lookup_node(a.parent, errp);
    if (!parent) {
        return FALSE;
    }
    if (!a.child == !a.node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, a.child
                    ? "The parameters child and node are in conflict"
                    : "Either child or node must be specified");
        return FALSE;
    }
    if (a.child) {
        BdChild *c = find_child(parent, a.child);
        if (!c) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' does not have child '%s'", a.parent,
                        a.child);
            return FALSE;
        }
        if (!parent->drv->del_child) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "The node %s does not support removing a child",
                        parent->node_name);
            return FALSE;
        }
        return parent->drv->del_child(parent, c, errp);
    }
    BdNode *node = bd_node_find(a.node);
    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Node '%s' not found",
                    a.node);
        return FALSE;
    }
    if (!parent->drv->add_child) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The node %s does not support adding a child",
                    parent->node_name);
        return FALSE;
    }
    if (node->parents) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The node %s already has a parent", node->node_name);
        return FALSE;
    }
    return parent->drv->add_child(parent, node, errp);
}

static const BdQmpCommand block_commands[] = {
    { "x-blockdev-change", change_args_fn, FALSE, NULL, x_blockdev_change },
    { "block_resize", resize_args_fn, FALSE, NULL, block_resize },
    { "blockdev-add", bd_blockdev_options_schema, TRUE, NULL, blockdev_add,
      blockdev_add_async },
    { "change-backing-file", change_backing_args_fn, FALSE, NULL,
      change_backing_file },
    { "blockdev-del", del_args_fn, FALSE, NULL, blockdev_del },
    { "blockdev-reopen", reopen_args_fn, FALSE, NULL, blockdev_reopen },
    { "query-block", NULL, FALSE, block_info_list_fn, query_block },
    { "query-named-block-nodes", query_args_fn, FALSE, device_info_fn,
      query_named_block_nodes },
    { NULL } };

void bd_cmd_block_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(block_commands);
}

BdNode *bd_ctl_lookup_node(const char *name, GError **errp)
{
    BdNode *node = bd_node_find(name);

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", name, name);
    }
    return node;
}
