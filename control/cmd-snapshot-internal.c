/* SPDX-License-Identifier: MIT */
/* Internal snapshot commands (qapi/block-core.json):
 * blockdev-snapshot-internal-sync and blockdev-snapshot-delete-internal-
 * sync, both also as transaction actions, with QEMU's checks and texts
 * (blockdev.c: internal_snapshot_prepare/abort,
 * qmp_blockdev_snapshot_delete_internal_sync).
 *
 * Thread model: main thread only.  The driver's create and delete run
 * with the node drained.
 */
#include <string.h>
#include "control/transaction.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "jobs/chain.h"

/* --- schemas --- */

typedef struct {
    const char *device;
    const char *name;
    const char *id;
    gboolean has_id, has_name;
} SnapArgs;

#define A(f) BD_AT(SnapArgs, f)
static const BdSchemaField internal_fields[] = {
    BD_FIELD("device", &bd_schema_str, A(device), .def.s = ""),
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    { NULL } };
static const BdSchemaType internal_type = {
    .name = "BlockdevSnapshotInternal", .kind = BD_SCHEMA_OBJECT,
    .fields = internal_fields };

static const BdSchemaField delete_fields[] = {
    BD_FIELD("device", &bd_schema_str, A(device), .def.s = ""),
    BD_OPT("id", &bd_schema_str, A(id), BD_HAS(SnapArgs, id)),
    BD_OPT("name", &bd_schema_str, A(name), BD_HAS(SnapArgs, name)),
    { NULL } };
static const BdSchemaType delete_type = {
    .name = "q_obj_blockdev-snapshot-delete-internal-sync-arg",
    .kind = BD_SCHEMA_OBJECT, .fields = delete_fields };
#undef A

static const BdSchemaField info_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_FIELD("name", &bd_schema_str),
    BD_FIELD("vm-state-size", &bd_schema_int),
    BD_FIELD("date-sec", &bd_schema_int),
    BD_FIELD("date-nsec", &bd_schema_int),
    BD_FIELD("vm-clock-sec", &bd_schema_int),
    BD_FIELD("vm-clock-nsec", &bd_schema_int),
    BD_OPT("icount", &bd_schema_int),
    { NULL } };
static const BdSchemaType info_type = {
    .name = "SnapshotInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = info_fields };

static const BdSchemaType *internal_fn(void) { return &internal_type; }
static const BdSchemaType *delete_fn(void) { return &delete_type; }
static const BdSchemaType *info_fn(void) { return &info_type; }

const BdSchemaType bd_cmd_snapshot_info_list = {
    .name = "[SnapshotInfo]", .kind = BD_SCHEMA_LIST, .element = &info_type };

/* --- shared steps --- */

/* QEMU's qmp_get_root_bs: only entry handles above the node (a job
 * holding a node is a parent of it in QEMU). */
static BdNode *lookup_root(const char *name, GError **errp)
{
    BdNode *node = bd_ctl_lookup_node(name, errp);

    if (!node) {
        return NULL;
    }
    if (!bd_chain_check_busy(node, NULL)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Need a root block node");
        return NULL;
    }
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Need a root block node");
            return NULL;
        }
    }
    return node;
}

/* The node whose driver keeps the snapshots (QEMU's
 * bdrv_snapshot_fallback: through filters), or NULL. */
static BdNode *snapshot_node(BdNode *bs)
{
    while (bs && !bs->drv->snapshot_create) {
        BdChild *c = bs->drv->is_filter ? bd_node_filtered_child(bs) : NULL;
        bs = c ? c->node : NULL;
    }
    return bs;
}

static JsonNode *info_json(const BdSnapshotInfo *sn)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_object_set_string_member(o, "id", sn->id);
    json_object_set_string_member(o, "name", sn->name);
    json_object_set_int_member(o, "vm-state-size", (gint64)sn->vm_state_size);
    json_object_set_int_member(o, "date-sec", sn->date_sec);
    json_object_set_int_member(o, "date-nsec", sn->date_nsec);
    json_object_set_int_member(o, "vm-clock-sec",
                               (gint64)(sn->vm_clock_nsec / 1000000000u));
    json_object_set_int_member(o, "vm-clock-nsec",
                               (gint64)(sn->vm_clock_nsec % 1000000000u));
    if (sn->icount != UINT64_MAX) {
        json_object_set_int_member(o, "icount", (gint64)sn->icount);
    }
    json_node_take_object(n, o);
    return n;
}

/* QEMU's bdrv_snapshot_find_by_id_and_name: both given, both match. */
static BdSnapshotInfo *find_snapshot(GPtrArray *list, const char *id,
                                     const char *name)
{
    for (guint i = 0; i < list->len; i++) {
        BdSnapshotInfo *sn = list->pdata[i];
        if ((!id || strcmp(sn->id, id) == 0) &&
            (!name || strcmp(sn->name, name) == 0)) {
            return sn;
        }
    }
    return NULL;
}

static gboolean do_delete(BdNode *bs, const char *id, const char *name,
                          BdSnapshotInfo *deleted, GError **errp)
{
    BdDrainSection *sec = bd_drained_begin(bs);
    gboolean ok = bs->drv->snapshot_delete(bs, id, name, deleted, errp);

    bd_drained_end(sec);
    return ok;
}

/* --- blockdev-snapshot-internal-sync --- */

typedef struct {
    BdNode *bs;             /* the node keeping the snapshot (a ref) */
    char *device;
    BdSnapshotInfo *sn;     /* the snapshot taken, once created */
} InternalState;

static void internal_state_free(InternalState *st)
{
    if (st) {
        if (st->bs) {
            bd_node_unref(st->bs);
        }
        g_free(st->device);
        bd_snapshot_info_free(st->sn);
        g_free(st);
    }
}

static gboolean internal_do(GVariant *args, InternalState **out,
                            GError **errp)
{
    SnapArgs a = { 0 };
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(BdSnapshotInfo) sn = NULL;
    BdDrainSection *sec;
    BdNode *bs, *target;
    gint64 rt;
    gboolean ok;

    bd_schema_decode(internal_fields, args, &a);
    bs = lookup_root(a.device, errp);
    if (!bs || !bd_chain_check_busy(bs, errp)) {
        return FALSE;
    }
    if (bs->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Device '%s' is read only", a.device);
        return FALSE;
    }
    target = snapshot_node(bs);
    if (!target || target->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block format '%s' used by device '%s' does not support "
                    "internal snapshots", bs->drv->name, a.device);
        return FALSE;
    }
    if (!*a.name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Name is empty");
        return FALSE;
    }
    list = target->drv->snapshot_list(target);
    if (find_snapshot(list, NULL, a.name)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Snapshot with name '%s' already exists on device '%s'",
                    a.name, a.device);
        return FALSE;
    }
    sn = g_new0(BdSnapshotInfo, 1);
    sn->name = g_strdup(a.name);
    rt = g_get_real_time();
    sn->date_sec = (uint32_t)(rt / G_USEC_PER_SEC);
    sn->date_nsec = (uint32_t)(rt % G_USEC_PER_SEC) * 1000;
    /* A daemon's virtual clock is the host clock, as in QSD. */
    sn->vm_clock_nsec = (uint64_t)rt * 1000;
    sn->icount = UINT64_MAX;

    sec = bd_drained_begin(target);
    ok = target->drv->snapshot_create(target, sn, errp);
    bd_drained_end(sec);
    if (!ok) {
        g_prefix_error(errp, "Failed to create snapshot '%s' on device "
                       "'%s': ", a.name, a.device);
        return FALSE;
    }
    if (out) {
        InternalState *st = g_new0(InternalState, 1);
        st->bs = bd_node_ref(target);
        st->device = g_strdup(a.device);
        st->sn = g_steal_pointer(&sn);
        *out = st;
    }
    return TRUE;
}


static gboolean internal_prepare(BdTxnAction *a, GVariant *data,
                                 GError **errp)
{
    InternalState *st = NULL;
    gboolean ok = internal_do(data, &st, errp);

    a->opaque = st;
    return ok;
}

/* QEMU's internal_snapshot_abort: the snapshot taken is deleted. */
static void internal_abort(BdTxnAction *a)
{
    InternalState *st = a->opaque;
    g_autoptr(GError) err = NULL;

    if (st && !do_delete(st->bs, st->sn->id, st->sn->name, NULL, &err)) {
        g_warning("Failed to delete snapshot with id '%s' and name '%s' on "
                  "device '%s' in abort: %s", st->sn->id, st->sn->name,
                  st->device, err->message);
    }
}

static void internal_clean(BdTxnAction *a)
{
    internal_state_free(g_steal_pointer(&a->opaque));
}

/* --- blockdev-snapshot-delete-internal-sync --- */

static gboolean cmd_delete(GVariant *args, JsonNode **ret, GError **errp)
{
    SnapArgs a = { 0 };
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(BdSnapshotInfo) deleted = g_new0(BdSnapshotInfo, 1);
    const char *id, *name;
    BdNode *bs, *target;

    bd_schema_decode(delete_fields, args, &a);
    id = a.has_id ? a.id : NULL;
    name = a.has_name ? a.name : NULL;
    bs = lookup_root(a.device, errp);
    if (!bs) {
        return FALSE;
    }
    if (!id && !name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Name or id must be provided");
        return FALSE;
    }
    if (!bd_chain_check_busy(bs, errp)) {
        return FALSE;
    }
    target = snapshot_node(bs);
    if (!target) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to get a snapshot list: Operation not supported");
        return FALSE;
    }
    list = target->drv->snapshot_list(target);
    if (!find_snapshot(list, id, name)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Snapshot with id '%s' and name '%s' does not exist on "
                    "device '%s'", id ? id : "null", name ? name : "null",
                    a.device);
        return FALSE;
    }
    if (!do_delete(target, id, name, deleted, errp)) {
        return FALSE;
    }
    *ret = info_json(deleted);
    return TRUE;
}

/* --- registration --- */

static const BdTxnActionOps snapshot_actions[] = {
    { .type = "blockdev-snapshot-internal-sync", .data = internal_fn,
      .prepare = internal_prepare, .abort = internal_abort,
      .clean = internal_clean },
};

static gboolean cmd_internal(GVariant *args, JsonNode **ret, GError **errp)
{
    (void)ret;
    return bd_txn_run_one(&snapshot_actions[0], args, errp);
}

static const BdQmpCommand snapshot_commands[] = {
    { "blockdev-snapshot-internal-sync", internal_fn, FALSE, NULL,
      cmd_internal },
    { "blockdev-snapshot-delete-internal-sync", delete_fn, FALSE, info_fn,
      cmd_delete },
    { NULL } };

void bd_cmd_snapshot_internal_register(void)
{
    BD_GLOBAL_STATE_CODE();

    for (gsize i = 0; i < G_N_ELEMENTS(snapshot_actions); i++) {
        bd_txn_register_action(&snapshot_actions[i]);
    }
    bd_qmp_register(snapshot_commands);
}
