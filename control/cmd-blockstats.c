/* SPDX-License-Identifier: MIT */
/* query-blockstats and block-set-write-threshold (QEMU's BlockStats,
 * BlockDeviceStats and write-threshold.c).
 *
 * Where the numbers come from, as in QEMU:
 *   - device stats (bytes, operations, times, failed/invalid) are kept
 *     by the user of a BlockBackend; in blockd the exports are those
 *     users and count each client request (export/export.h);
 *   - a node keeps only wr_highest_offset and its write threshold
 *     (graph/io.c).
 * Without query-nodes the list has one BlockStats per export, named by
 * "qdev": the export id (the export stands where QEMU has a guest
 * device); qemu-storage-daemon 7.2 counts nothing for its exports and
 * lists none there.  With query-nodes, every named node, with zero
 * device counters, as qemu-storage-daemon shows them.
 *
 * Thread model: main thread only; the counters are read with atomics
 * while the I/O threads add to them.
 */
#include "control/qmp-int.h"
#include "export/export.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "graph/stats.h"

/* --- schemas --- */

typedef struct {
    gboolean query_nodes;
    const char *node_name;
    guint64 write_threshold;
} StatsArgs;

#define A(f) BD_AT(StatsArgs, f)
static const BdSchemaField query_fields[] = {
    BD_OPT("query-nodes", &bd_schema_bool, A(query_nodes)),
    { NULL } };
static const BdSchemaType query_args = {
    .name = "q_obj_query-blockstats-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = query_fields };

static const BdSchemaField threshold_fields[] = {
    BD_FIELD("node-name", &bd_schema_str, A(node_name), .def.s = ""),
    BD_FIELD("write-threshold", &bd_schema_uint, A(write_threshold)),
    { NULL } };
static const BdSchemaType threshold_args = {
    .name = "q_obj_block-set-write-threshold-arg",
    .kind = BD_SCHEMA_OBJECT, .fields = threshold_fields };

static const BdSchemaType int_list = {
    .name = "[int]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_int };
static const BdSchemaField histogram_fields[] = {
    BD_FIELD("boundaries", &int_list),
    BD_FIELD("bins", &int_list),
    { NULL } };
static const BdSchemaType histogram_info = {
    .name = "BlockLatencyHistogramInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = histogram_fields };
static const BdSchemaType timed_stats_list = {
    .name = "[BlockDeviceTimedStats]", .kind = BD_SCHEMA_LIST,
    .element = &bd_schema_any };

#define I(n) BD_FIELD(n, &bd_schema_int)
static const BdSchemaField device_stats_fields[] = {
    I("rd_bytes"), I("wr_bytes"), I("unmap_bytes"),
    I("rd_operations"), I("wr_operations"), I("flush_operations"),
    I("unmap_operations"),
    I("rd_total_time_ns"), I("wr_total_time_ns"), I("flush_total_time_ns"),
    I("unmap_total_time_ns"),
    I("wr_highest_offset"),
    I("rd_merged"), I("wr_merged"), I("unmap_merged"),
    BD_OPT("idle_time_ns", &bd_schema_int),
    I("failed_rd_operations"), I("failed_wr_operations"),
    I("failed_flush_operations"), I("failed_unmap_operations"),
    I("invalid_rd_operations"), I("invalid_wr_operations"),
    I("invalid_flush_operations"), I("invalid_unmap_operations"),
    BD_FIELD("account_invalid", &bd_schema_bool),
    BD_FIELD("account_failed", &bd_schema_bool),
    BD_FIELD("timed_stats", &timed_stats_list),
    BD_OPT("rd_latency_histogram", &histogram_info),
    BD_OPT("wr_latency_histogram", &histogram_info),
    BD_OPT("flush_latency_histogram", &histogram_info),
    { NULL } };
#undef I
static const BdSchemaType device_stats = {
    .name = "BlockDeviceStats", .kind = BD_SCHEMA_OBJECT,
    .fields = device_stats_fields };

static const BdSchemaType block_stats;
static const BdSchemaField block_stats_fields[] = {
    BD_OPT("device", &bd_schema_str),
    BD_OPT("qdev", &bd_schema_str),
    BD_OPT("node-name", &bd_schema_str),
    BD_FIELD("stats", &device_stats),
    BD_OPT("driver-specific", &bd_schema_any),
    BD_OPT("parent", &block_stats),
    BD_OPT("backing", &block_stats),
    { NULL } };
static const BdSchemaType block_stats = {
    .name = "BlockStats", .kind = BD_SCHEMA_OBJECT,
    .fields = block_stats_fields };
static const BdSchemaType block_stats_list = {
    .name = "[BlockStats]", .kind = BD_SCHEMA_LIST, .element = &block_stats };

static const BdSchemaType *query_args_fn(void) { return &query_args; }
static const BdSchemaType *query_ret_fn(void) { return &block_stats_list; }
static const BdSchemaType *threshold_args_fn(void) { return &threshold_args; }

/* BLOCK_WRITE_THRESHOLD's data (listed in events.c). */
static const BdSchemaField threshold_event_fields[] = {
    BD_FIELD("node-name", &bd_schema_str),
    BD_FIELD("amount-exceeded", &bd_schema_uint),
    BD_FIELD("write-threshold", &bd_schema_uint),
    { NULL } };
static const BdSchemaType threshold_event = {
    .name = "q_obj_BLOCK_WRITE_THRESHOLD-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = threshold_event_fields };

const BdSchemaType *bd_blockstats_event_write_threshold(void)
{
    return &threshold_event;
}

/* --- query-blockstats --- */

/* BlockDeviceStats from an accounting record ('s' NULL: a node's, all
 * device counters zero) and the node's wr_highest_offset. */
static JsonObject *device_stats_json(const BdIoStats *s, BdNode *node)
{
    static const char *const kind[BD_ACCT__MAX] = {
        [BD_ACCT_READ] = "rd", [BD_ACCT_WRITE] = "wr",
        [BD_ACCT_FLUSH] = "flush", [BD_ACCT_UNMAP] = "unmap",
    };
    BdIoStats z = { 0 };
    JsonObject *o = json_object_new();

    if (s) {
        bd_io_stats_read(s, &z);
    }
    for (int t = 0; t < BD_ACCT__MAX; t++) {
        g_autofree char *ops = g_strdup_printf("%s_operations", kind[t]);
        g_autofree char *time = g_strdup_printf("%s_total_time_ns", kind[t]);
        g_autofree char *failed = g_strdup_printf("failed_%s_operations",
                                                  kind[t]);
        g_autofree char *invalid = g_strdup_printf("invalid_%s_operations",
                                                   kind[t]);
        if (t != BD_ACCT_FLUSH) {
            g_autofree char *bytes = g_strdup_printf("%s_bytes", kind[t]);
            g_autofree char *merged = g_strdup_printf("%s_merged", kind[t]);
            json_object_set_int_member(o, bytes, (gint64)z.bytes[t]);
            json_object_set_int_member(o, merged, (gint64)z.merged[t]);
        }
        json_object_set_int_member(o, ops, (gint64)z.ops[t]);
        json_object_set_int_member(o, time, (gint64)z.total_time_ns[t]);
        json_object_set_int_member(o, failed, (gint64)z.failed[t]);
        json_object_set_int_member(o, invalid, (gint64)z.invalid[t]);
    }
    json_object_set_int_member(o, "wr_highest_offset",
                               node ? (gint64)bd_node_wr_highest_offset(node)
                                    : 0);
    if (z.last_access_ns > 0) {
        json_object_set_int_member(o, "idle_time_ns",
                                   bd_io_stats_now() - z.last_access_ns);
    }
    json_object_set_boolean_member(o, "account_invalid", z.account_invalid);
    json_object_set_boolean_member(o, "account_failed", z.account_failed);
    json_object_set_array_member(o, "timed_stats", json_array_new());
    return o;
}

/* The child whose stats go under "parent" (QEMU's bdrv_query_bds_stats):
 * the primary child if it holds data or is filtered, else the only
 * data child. */
static BdNode *stats_parent_child(BdNode *node)
{
    BdChild *found = NULL;

    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = node->children->pdata[i];
        if ((c->role & BD_CHILD_PRIMARY) &&
            (c->role & (BD_CHILD_DATA | BD_CHILD_FILTERED))) {
            return c->node;
        }
    }
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = node->children->pdata[i];
        if (c->role & BD_CHILD_DATA) {
            if (found) {
                return NULL;        /* several: none chosen */
            }
            found = c;
        }
    }
    return found ? found->node : NULL;
}

/* BlockStats of a node; 'dev' the device-level accounting (an export's)
 * or NULL; 'blk_level' adds "backing" and skips implicit filters. */
static JsonObject *node_stats_json(BdNode *node, const BdIoStats *dev,
                                   gboolean blk_level)
{
    JsonObject *o = json_object_new();
    BdNode *child;

    while (blk_level && node->implicit && bd_node_filtered_child(node)) {
        node = bd_node_filtered_child(node)->node;
    }
    if (node->node_name && node->node_name[0]) {
        json_object_set_string_member(o, "node-name", node->node_name);
    }
    json_object_set_object_member(o, "stats", device_stats_json(dev, node));
    child = stats_parent_child(node);
    if (child) {
        json_object_set_object_member(o, "parent",
                                      node_stats_json(child, NULL,
                                                      blk_level));
    }
    if (blk_level) {
        BdChild *f = bd_node_filtered_child(node);
        BdNode *b = f ? f->node : bd_node_backing(node);
        if (b) {
            json_object_set_object_member(o, "backing",
                                          node_stats_json(b, NULL, TRUE));
        }
    }
    return o;
}

static gboolean query_blockstats(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    StatsArgs a = { 0 };
    JsonArray *arr = json_array_new();

    bd_schema_decode(query_fields, args, &a);
    if (a.query_nodes) {
        GPtrArray *nodes = bd_node_list();
        for (guint i = 0; i < nodes->len; i++) {
            BdNode *n = nodes->pdata[i];
            if (n->implicit || !n->node_name || !n->node_name[0]) {
                continue;
            }
            json_array_add_object_element(arr,
                                          node_stats_json(n, NULL, FALSE));
        }
    } else {
        GPtrArray *exports = bd_export_list();
        for (guint i = 0; i < exports->len; i++) {
            BdExport *exp = exports->pdata[i];
            JsonObject *o;
            if (!exp->entry) {
                continue;
            }
            o = node_stats_json(bd_entry_node(exp->entry), &exp->stats, TRUE);
            json_object_set_string_member(o, "qdev", exp->id);
            json_array_add_object_element(arr, o);
        }
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

/* --- block-set-write-threshold --- */

static gboolean set_write_threshold(GVariant *args, JsonNode **ret,
                                    GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    StatsArgs a = { 0 };
    BdNode *node;

    bd_schema_decode(threshold_fields, args, &a);
    node = bd_node_find(a.node_name);
    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Device '%s' not found", a.node_name);
        return FALSE;
    }
    bd_node_set_write_threshold(node, a.write_threshold);
    return TRUE;
}

static const BdQmpCommand stats_commands[] = {
    { "query-blockstats", query_args_fn, FALSE, query_ret_fn,
      query_blockstats },
    { "block-set-write-threshold", threshold_args_fn, FALSE, NULL,
      set_write_threshold },
    { NULL } };

void bd_cmd_blockstats_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(stats_commands);
}
