/* SPDX-License-Identifier: MIT */
/* Checkpoint commands (blockd's own, graph/checkpoint.h):
 * x-blockd-checkpoint-create/delete/list/changes, the first, second and
 * last also as transaction actions, and the BLOCKD_CHECKPOINT_UNUSABLE
 * event's data type.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/cmd-bitmap.h"
#include "control/transaction.h"
#include "graph/checkpoint.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"

/* --- schemas --- */

typedef struct {
    const char *node;
    const char *name;
    guint64 granularity;
    gboolean has_granularity;
    const char *target;
} CheckpointArgs;

#define A(f) BD_AT(CheckpointArgs, f)
static const BdSchemaField create_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    BD_OPT("granularity", &bd_schema_uint32, A(granularity),
           BD_HAS(CheckpointArgs, granularity)),
    { NULL } };
static const BdSchemaType create_type = {
    .name = "BlockdCheckpointCreate", .kind = BD_SCHEMA_OBJECT,
    .fields = create_fields };

static const BdSchemaField checkpoint_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    { NULL } };
static const BdSchemaType checkpoint_type = {
    .name = "BlockdCheckpoint", .kind = BD_SCHEMA_OBJECT,
    .fields = checkpoint_fields };

static const BdSchemaField list_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    { NULL } };
static const BdSchemaType list_type = {
    .name = "q_obj_x-blockd-checkpoint-list-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = list_fields };

static const BdSchemaField changes_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    BD_FIELD("target", &bd_schema_str, A(target), .def.s = ""),
    { NULL } };
static const BdSchemaType changes_type = {
    .name = "BlockdCheckpointChanges", .kind = BD_SCHEMA_OBJECT,
    .fields = changes_fields };
#undef A

static const BdSchemaField info_fields[] = {
    BD_FIELD("name", &bd_schema_str),
    BD_FIELD("creation-time", &bd_schema_int),
    BD_FIELD("bitmap", &bd_schema_str),
    BD_OPT("dirty-bytes", &bd_schema_uint),
    BD_FIELD("usable", &bd_schema_bool),
    BD_FIELD("active", &bd_schema_bool),
    { NULL } };
static const BdSchemaType info_type = {
    .name = "BlockdCheckpointInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = info_fields };
static const BdSchemaType info_list = {
    .name = "[BlockdCheckpointInfo]", .kind = BD_SCHEMA_LIST,
    .element = &info_type };

static const BdSchemaType names_list = {
    .name = "[str]", .kind = BD_SCHEMA_LIST, .element = &bd_schema_str };
static const BdSchemaField unusable_fields[] = {
    BD_FIELD("node", &bd_schema_str),
    BD_FIELD("checkpoints", &names_list),
    { NULL } };
static const BdSchemaType unusable_type = {
    .name = "q_obj_BLOCKD_CHECKPOINT_UNUSABLE-arg",
    .kind = BD_SCHEMA_OBJECT, .fields = unusable_fields };

static const BdSchemaType *create_fn(void) { return &create_type; }
static const BdSchemaType *checkpoint_fn(void) { return &checkpoint_type; }
static const BdSchemaType *list_fn(void) { return &list_type; }
static const BdSchemaType *changes_fn(void) { return &changes_type; }
static const BdSchemaType *info_list_fn(void) { return &info_list; }
const BdSchemaType *bd_checkpoint_event_unusable(void)
{
    return &unusable_type;
}

/* --- shared steps --- */

static void args_decode(const BdSchemaType *type, GVariant *args,
                        CheckpointArgs *out)
{
    memset(out, 0, sizeof(*out));
    bd_schema_decode(type->fields, args, out);
}


static BdCheckpointChange *create_prepare(GVariant *args, GError **errp)
{
    CheckpointArgs a;
    BdNode *bs;

    args_decode(&create_type, args, &a);
    if (a.has_granularity &&
        (a.granularity < 512 || (a.granularity & (a.granularity - 1)))) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Granularity must be power of 2 and at least 512");
        return NULL;
    }
    bs = bd_ctl_lookup_node(a.node, errp);
    return bs ? bd_checkpoint_create_prepare(bs, a.name,
                                             (uint32_t)a.granularity, errp)
              : NULL;
}

static BdCheckpointChange *delete_prepare(GVariant *args, GError **errp)
{
    CheckpointArgs a;
    BdNode *bs;

    args_decode(&checkpoint_type, args, &a);
    bs = bd_ctl_lookup_node(a.node, errp);
    return bs ? bd_checkpoint_delete_prepare(bs, a.name, errp) : NULL;
}

/* The target is an ordinary bitmap: a checkpoint's name is refused. */
static BdDirtyBitmap *changes_prepare(GVariant *args, GError **errp)
{
    CheckpointArgs a;
    BdNode *bs;

    args_decode(&changes_type, args, &a);
    if (!*a.target) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap name cannot be empty");
        return NULL;
    }
    if (!bd_cmd_bitmap_check_name(a.target, errp)) {
        return NULL;
    }
    bs = bd_ctl_lookup_node(a.node, errp);
    return bs ? bd_checkpoint_changes_since(bs, a.name, a.target, errp)
              : NULL;
}

/* --- commands --- */

static gboolean cmd_create(GVariant *args, JsonNode **ret, GError **errp)
{
    BdCheckpointChange *c = create_prepare(args, errp);

    if (c) {
        bd_checkpoint_change_commit(c);
    }
    return c != NULL;
}

static gboolean cmd_delete(GVariant *args, JsonNode **ret, GError **errp)
{
    BdCheckpointChange *c = delete_prepare(args, errp);

    if (c) {
        bd_checkpoint_change_commit(c);
    }
    return c != NULL;
}

static gboolean cmd_changes(GVariant *args, JsonNode **ret, GError **errp)
{
    return changes_prepare(args, errp) != NULL;
}

static JsonObject *info_json(const BdCheckpointInfo *info)
{
    JsonObject *o = json_object_new();

    json_object_set_string_member(o, "name", info->name);
    json_object_set_int_member(o, "creation-time", info->creation_time);
    json_object_set_string_member(o, "bitmap", info->bitmap);
    /* Unknown when unusable: absent rather than a wrong number. */
    if (info->usable) {
        json_object_set_int_member(o, "dirty-bytes",
                                   (gint64)info->dirty_bytes);
    }
    json_object_set_boolean_member(o, "usable", info->usable);
    json_object_set_boolean_member(o, "active", info->active);
    return o;
}

static gboolean cmd_list(GVariant *args, JsonNode **ret, GError **errp)
{
    CheckpointArgs a;
    g_autoptr(GPtrArray) list = NULL;
    JsonArray *arr;
    BdNode *bs;

    args_decode(&list_type, args, &a);
    bs = bd_ctl_lookup_node(a.node, errp);
    if (!bs || !(list = bd_checkpoint_list(bs, errp))) {
        return FALSE;
    }
    arr = json_array_new();
    for (guint i = 0; i < list->len; i++) {
        json_array_add_object_element(arr, info_json(list->pdata[i]));
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

/* --- transaction actions --- */

static gboolean create_action_prepare(BdTxnAction *a, GVariant *data,
                                      GError **errp)
{
    a->opaque = create_prepare(data, errp);
    return a->opaque != NULL;
}

static gboolean delete_action_prepare(BdTxnAction *a, GVariant *data,
                                      GError **errp)
{
    a->opaque = delete_prepare(data, errp);
    return a->opaque != NULL;
}

static void change_commit(BdTxnAction *a)
{
    if (a->opaque) {
        bd_checkpoint_change_commit(g_steal_pointer(&a->opaque));
    }
}

static void change_abort(BdTxnAction *a)
{
    if (a->opaque) {
        bd_checkpoint_change_abort(g_steal_pointer(&a->opaque));
    }
}

static gboolean changes_action_prepare(BdTxnAction *a, GVariant *data,
                                       GError **errp)
{
    a->opaque = changes_prepare(data, errp);
    return a->opaque != NULL;
}

static void changes_action_abort(BdTxnAction *a)
{
    bd_dirty_bitmap_release(g_steal_pointer(&a->opaque));
}

static void changes_action_commit(BdTxnAction *a)
{
    a->opaque = NULL;          /* the bitmap stays, the user's now */
}

static const BdTxnActionOps checkpoint_actions[] = {
    { .type = "x-blockd-checkpoint-create", .data = create_fn,
      .prepare = create_action_prepare, .commit = change_commit,
      .abort = change_abort },
    { .type = "x-blockd-checkpoint-delete", .data = checkpoint_fn,
      .prepare = delete_action_prepare, .commit = change_commit,
      .abort = change_abort },
    { .type = "x-blockd-checkpoint-changes", .data = changes_fn,
      .prepare = changes_action_prepare, .commit = changes_action_commit,
      .abort = changes_action_abort },
};

static const BdQmpCommand checkpoint_commands[] = {
    { "x-blockd-checkpoint-create", create_fn, FALSE, NULL, cmd_create },
    { "x-blockd-checkpoint-delete", checkpoint_fn, FALSE, NULL, cmd_delete },
    { "x-blockd-checkpoint-list", list_fn, FALSE, info_list_fn, cmd_list },
    { "x-blockd-checkpoint-changes", changes_fn, FALSE, NULL, cmd_changes },
    { NULL } };

void bd_cmd_checkpoint_register(void)
{
    BD_GLOBAL_STATE_CODE();

    for (gsize i = 0; i < G_N_ELEMENTS(checkpoint_actions); i++) {
        bd_txn_register_action(&checkpoint_actions[i]);
    }
    bd_qmp_register(checkpoint_commands);
}
