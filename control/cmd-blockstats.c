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
 * block-latency-histogram-set's 'id' is an export id, as the qdev,
 * or a node name (the node's histograms in /metrics), or both.
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
    const char *id;
    GVariant *boundaries[5];   /* all, read, write, zap, flush */
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

static const BdSchemaType uint_list = {
    .name = "[uint64]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_uint };
static const BdSchemaField histogram_set_fields[] = {
    BD_FIELD("id", &bd_schema_str, A(id), .def.s = ""),
    BD_OPT("boundaries", &uint_list, A(boundaries[0])),
    BD_OPT("boundaries-read", &uint_list, A(boundaries[1])),
    BD_OPT("boundaries-write", &uint_list, A(boundaries[2])),
    BD_OPT("boundaries-zap", &uint_list, A(boundaries[3])),
    BD_OPT("boundaries-flush", &uint_list, A(boundaries[4])),
    { NULL } };
static const BdSchemaType histogram_set_args = {
    .name = "q_obj_block-latency-histogram-set-arg",
    .kind = BD_SCHEMA_OBJECT, .fields = histogram_set_fields };
BD_SCHEMA_DEFINE_AUTO(StatsArgs, histogram_set_fields)

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
static const BdSchemaType *histogram_args_fn(void)
{
    return &histogram_set_args;
}

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
    for (int t = 0; t < BD_ACCT__QMP; t++) {
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
    for (int t = 0; s && t < BD_ACCT__QMP; t++) {
        const BdLatencyHistogram *h = bd_io_stats_histogram(s, t);
        g_autofree char *name = g_strdup_printf("%s_latency_histogram",
                                                kind[t]);
        JsonObject *ho;
        JsonArray *b, *bins;

        if (!h) {
            continue;
        }
        ho = json_object_new();
        b = json_array_new();
        bins = json_array_new();
        for (guint i = 0; i < h->n; i++) {
            json_array_add_int_element(b, (gint64)h->boundaries[i]);
        }
        for (guint i = 0; i <= h->n; i++) {
            json_array_add_int_element(
                bins, (gint64)__atomic_load_n(&h->bins[i], __ATOMIC_RELAXED));
        }
        json_object_set_array_member(ho, "boundaries", b);
        json_object_set_array_member(ho, "bins", bins);
        json_object_set_object_member(o, name, ho);
    }
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
    if (node->opened && node->drv->query_stats) {
        GVariantDict d;
        g_autoptr(GVariant) v = NULL;

        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "driver", "s", node->drv->name);
        node->drv->query_stats(node, &d);
        v = g_variant_ref_sink(g_variant_dict_end(&d));
        json_object_set_member(o, "driver-specific", bd_variant_to_json(v));
    }
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
            /* Every named node, jobs' filters too (their generated
             * names), as QEMU's walk over its named nodes. */
            if (!n->node_name || !n->node_name[0]) {
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

/* --- block-latency-histogram-set --- */

/* The accounting records 'id' names: an export's (QEMU looks 'id' up
 * as a guest device's qdev id; here the export stands for the device)
 * and a node's (its histograms are those of /metrics), one or both. */
typedef struct {
    BdIoStats *stats[2];
    gboolean is_node[2];
    guint n;
} HistogramTargets;

static gboolean find_targets(const char *id, HistogramTargets *t,
                             GError **errp)
{
    BdExport *exp = bd_export_find(id);
    BdNode *node = id[0] ? bd_node_find(id) : NULL;

    t->n = 0;
    if (exp && exp->entry) {
        t->is_node[t->n] = FALSE;
        t->stats[t->n++] = &exp->stats;
    }
    if (node) {
        t->is_node[t->n] = TRUE;
        t->stats[t->n++] = &node->stats;
    }
    if (!t->n) {
        g_set_error(errp, BD_ERROR, BD_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", id);
        return FALSE;
    }
    return TRUE;
}

static uint64_t *list_values(GVariant *list, guint *n)
{
    uint64_t *v;

    *n = g_variant_n_children(list);
    v = g_new(uint64_t, *n ? *n : 1);
    for (guint i = 0; i < *n; i++) {
        g_autoptr(GVariant) e = g_variant_get_child_value(list, i);
        while (g_variant_is_of_type(e, G_VARIANT_TYPE_VARIANT)) {
            GVariant *inner = g_variant_get_variant(e);
            g_variant_unref(e);
            e = inner;
        }
        v[i] = g_variant_is_of_type(e, G_VARIANT_TYPE_UINT64)
            ? g_variant_get_uint64(e) : (uint64_t)g_variant_get_int64(e);
    }
    return v;
}

/* Give the histogram of 'type' (of a target) boundaries 'v'.  A node
 * counts write zeroes apart (op="zero" in /metrics) where QEMU's devices
 * count them as writes: the write boundaries are theirs too.  Whether a
 * list is valid depends on the list alone, so the first target refuses
 * it before anything changed or none does. */
static gboolean targets_set(HistogramTargets *t, BdAcctType type,
                            const uint64_t *v, guint n)
{
    for (guint i = 0; i < t->n; i++) {
        if (!bd_io_stats_set_histogram(t->stats[i], type, v, n)) {
            return FALSE;
        }
        if (t->is_node[i] && type == BD_ACCT_WRITE) {
            bd_io_stats_set_histogram(t->stats[i], BD_ACCT_ZERO, v, n);
        }
    }
    return TRUE;
}

static gboolean latency_histogram_set(GVariant *args, JsonNode **ret,
                                      GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    /* QEMU's order (block/qapi-sysemu.c).  Zone append ('zap', QEMU
     * 8.1) has no requests in blockd: its list is checked as QEMU does
     * and kept nowhere. */
    static const struct { int type; const char *what; } kinds[] = {
        { BD_ACCT_READ, "read" }, { BD_ACCT_WRITE, "write" },
        { -1, "append write" }, { BD_ACCT_FLUSH, "flush" },
    };
    g_auto(StatsArgs) a = { 0 };
    HistogramTargets t;

    bd_schema_decode(histogram_set_fields, args, &a);
    if (!find_targets(a.id, &t, errp)) {
        return FALSE;
    }
    /* As QEMU's: boundaries-zap alone is no boundary, it clears. */
    if (!a.boundaries[0] && !a.boundaries[1] && !a.boundaries[2] &&
        !a.boundaries[4]) {
        for (guint i = 0; i < t.n; i++) {
            for (int k = 0; k < BD_ACCT__MAX; k++) {
                bd_io_stats_set_histogram(t.stats[i], k, NULL, 0);
            }
        }
        return TRUE;
    }
    /* As QEMU: one kind after the other, stopping at the first bad
     * list (the kinds before it keep their new histograms).  An empty
     * list is refused: a histogram needs a boundary. */
    for (guint k = 0; k < G_N_ELEMENTS(kinds); k++) {
        GVariant *list = a.boundaries[k + 1] ? a.boundaries[k + 1]
                                             : a.boundaries[0];
        g_autofree uint64_t *v = NULL;
        guint n;
        gboolean ok;

        if (!list) {
            continue;
        }
        v = list_values(list, &n);
        if (kinds[k].type < 0) {
            ok = n > 0 && bd_latency_boundaries_valid(v, n);
        } else {
            ok = n > 0 && targets_set(&t, kinds[k].type, v, n);
        }
        if (!ok) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Device '%s' set %s boundaries fail", a.id,
                        kinds[k].what);
            return FALSE;
        }
    }
    return TRUE;
}

static const BdQmpCommand stats_commands[] = {
    { "query-blockstats", query_args_fn, FALSE, query_ret_fn,
      query_blockstats },
    { "block-set-write-threshold", threshold_args_fn, FALSE, NULL,
      set_write_threshold },
    { "block-latency-histogram-set", histogram_args_fn, FALSE, NULL,
      latency_histogram_set },
    { NULL } };

void bd_cmd_blockstats_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(stats_commands);
}
