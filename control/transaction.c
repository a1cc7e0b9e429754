/* SPDX-License-Identifier: MIT */
/* The 'transaction' command (qapi/transaction.json): the action table,
 * the prepare/commit/abort driver, and the dirty bitmap and 'abort'
 * actions with QEMU's semantics.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/transaction.h"
#include "control/cmd-bitmap.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "jobs/job.h"

/* --- the action table and the schema built from it --- */

static GPtrArray *action_kinds;   /* const BdTxnActionOps * */

void bd_txn_register_action(const BdTxnActionOps *ops)
{
    BD_GLOBAL_STATE_CODE();

    if (!action_kinds) {
        action_kinds = g_ptr_array_new();
    }
    g_ptr_array_add(action_kinds, (gpointer)ops);
}

static const BdTxnActionOps *find_kind(const char *type)
{
    for (guint i = 0; action_kinds && i < action_kinds->len; i++) {
        const BdTxnActionOps *ops = action_kinds->pdata[i];
        if (strcmp(ops->type, type) == 0) {
            return ops;
        }
    }
    return NULL;
}

typedef enum { COMPLETION_INDIVIDUAL, COMPLETION_GROUPED } CompletionMode;

static const char *const completion_values[] = {
    [COMPLETION_INDIVIDUAL] = "individual",
    [COMPLETION_GROUPED] = "grouped",
    NULL };
static const BdSchemaType completion_type = {
    .name = "ActionCompletionMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = completion_values };

typedef struct {
    CompletionMode completion_mode;
} TxnProperties;

static const BdSchemaField props_fields[] = {
    BD_OPT("completion-mode", &completion_type,
           BD_AT(TxnProperties, completion_mode),
           .def.i = COMPLETION_INDIVIDUAL),
    { NULL } };
static const BdSchemaType props_type = {
    .name = "TransactionProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = props_fields };

/* The transaction's arguments. */
typedef struct {
    GVariant *actions;
    TxnProperties properties;
} TxnArgs;

/* One TransactionAction: its kind (a run-time enum, read as its name)
 * and, from the kind's wrapper, its data. */
typedef struct {
    const char *type;
    GVariant *data;
} TxnActionArgs;

static BdSchemaType kind_enum;
static const BdSchemaField action_base[] = {
    BD_FIELD("type", &kind_enum, BD_AT(TxnActionArgs, type), .def.s = ""),
    { NULL } };
static BdSchemaType action;

/* TransactionAction: {type, data} with one wrapper type per kind. */
static const BdSchemaType *transaction_schema(void)
{
    static BdSchemaType args, actions;
    static BdSchemaField args_fields[3];
    static gsize done;

    if (g_once_init_enter(&done)) {
        guint n = action_kinds ? action_kinds->len : 0;
        const char **names = g_new0(const char *, n + 1);
        BdSchemaVariant *variants = g_new0(BdSchemaVariant, n + 1);

        for (guint i = 0; i < n; i++) {
            const BdTxnActionOps *ops = action_kinds->pdata[i];
            BdSchemaField *f = g_new0(BdSchemaField, 2);
            BdSchemaType *wrapper = g_new0(BdSchemaType, 1);

            f[0] = (BdSchemaField)BD_FIELD("data", ops->data(),
                                           BD_AT(TxnActionArgs, data));
            wrapper->name = g_strdup_printf("q_obj_%s-wrapper", ops->type);
            wrapper->kind = BD_SCHEMA_OBJECT;
            wrapper->fields = f;
            names[i] = ops->type;
            variants[i].value = ops->type;
            variants[i].type = wrapper;
        }
        kind_enum = (BdSchemaType) {
            .name = "TransactionActionKind", .kind = BD_SCHEMA_ENUM,
            .enum_values = names };
        action = (BdSchemaType) {
            .name = "TransactionAction", .kind = BD_SCHEMA_UNION,
            .fields = action_base, .discriminator = "type",
            .variants = variants };
        actions = (BdSchemaType) {
            .name = "[TransactionAction]", .kind = BD_SCHEMA_LIST,
            .element = &action };
        args_fields[0] = (BdSchemaField)BD_FIELD("actions", &actions,
                                                 BD_AT(TxnArgs, actions));
        args_fields[1] = (BdSchemaField)BD_OPT("properties", &props_type,
                                               BD_AT(TxnArgs, properties));
        args = (BdSchemaType) {
            .name = "q_obj_transaction-arg", .kind = BD_SCHEMA_OBJECT,
            .fields = args_fields };
        g_once_init_leave(&done, 1);
    }
    return &args;
}

/* --- running a transaction --- */

static gboolean action_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    if (a->txn->grouped && !a->ops->supports_grouped) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Action '%s' does not support Transaction property "
                    "completion-mode = grouped", a->ops->type);
        return FALSE;
    }
    return a->ops->prepare(a, data, errp);
}

gboolean bd_txn_run(GVariant *args, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const BdSchemaType *schema = transaction_schema();
    TxnArgs a = { 0 };
    gsize n;
    g_autofree BdTxnAction *acts = NULL;
    BdTransaction txn = { 0 };
    gsize prepared = 0;
    gboolean ok = TRUE;

    bd_schema_decode(schema->fields, args, &a);
    bd_txn_drain_all();
    n = a.actions ? g_variant_n_children(a.actions) : 0;
    acts = g_new0(BdTxnAction, MAX(n, 1));
    txn.grouped = a.properties.completion_mode == COMPLETION_GROUPED;
    for (gsize i = 0; i < n && ok; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(a.actions, i);
        g_autoptr(GVariant) item = g_variant_get_variant(boxed);
        const BdTxnActionOps *ops;
        TxnActionArgs act = { 0 };

        bd_schema_decode_union(&action, item, &act);
        ops = find_kind(act.type);

        if (!ops) {   /* the schema accepts registered kinds only */
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Unknown transaction action");
            ok = FALSE;
            break;
        }
        acts[i] = (BdTxnAction) { .ops = ops, .txn = &txn };
        prepared = i + 1;
        ok = action_prepare(&acts[i], act.data, errp);
        g_clear_pointer(&act.data, g_variant_unref);
    }
    if (ok) {
        for (gsize i = 0; i < prepared; i++) {
            if (acts[i].ops->commit) {
                acts[i].ops->commit(&acts[i]);
            }
        }
    } else {
        for (gsize i = prepared; i-- > 0;) {
            if (acts[i].ops->abort) {
                acts[i].ops->abort(&acts[i]);
            }
        }
    }
    for (gsize i = 0; i < prepared; i++) {
        if (acts[i].ops->clean) {
            acts[i].ops->clean(&acts[i]);
        }
    }
    if (txn.job_txn && txn.job_txn_unref) {
        txn.job_txn_unref(txn.job_txn);
    }
    bd_schema_clear(schema->fields, &a);
    return ok;
}

/* What clients see of QEMU's bdrv_drain_all() there: every block job
 * pauses and resumes.  The exports are not held back: blockd drains
 * only what a change touches (DESIGN: a drain of one disk must not
 * pause the others), and nothing changes here. */
void bd_txn_drain_all(void)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *list = bd_job_list();
    g_autoptr(GPtrArray) jobs = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_job_unref);

    for (guint i = 0; i < list->len; i++) {
        g_ptr_array_add(jobs, bd_job_ref(list->pdata[i]));
    }
    for (guint i = 0; i < jobs->len; i++) {
        BdJob *job = jobs->pdata[i];
        if (job->driver->is_block_job) {
            bd_job_drain_notify(job, TRUE);
        }
    }
    for (guint i = 0; i < jobs->len; i++) {
        BdJob *job = jobs->pdata[i];
        if (job->driver->is_block_job) {
            bd_job_drain_notify(job, FALSE);
        }
    }
}

gboolean bd_txn_run_one(const BdTxnActionOps *ops, GVariant *data,
                        GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdTransaction txn = { 0 };
    BdTxnAction a = { .ops = ops, .txn = &txn };
    gboolean ok;

    bd_txn_drain_all();
    ok = ops->prepare(&a, data, errp);
    if (ok && ops->commit) {
        ops->commit(&a);
    } else if (!ok && ops->abort) {
        ops->abort(&a);
    }
    if (ops->clean) {
        ops->clean(&a);
    }
    return ok;
}

/* --- actions: abort --- */

static const BdSchemaField no_fields[] = { { NULL } };
static const BdSchemaType abort_type = {
    .name = "Abort", .kind = BD_SCHEMA_OBJECT, .fields = no_fields };
static const BdSchemaType *abort_schema(void) { return &abort_type; }

static gboolean abort_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Transaction aborted using Abort action");
    return FALSE;
}

/* --- actions: dirty bitmaps --- */

typedef struct {
    BdDirtyBitmap *bm;
    BdDirtyBitmapBackup *backup;
    gboolean was_enabled;
    char *node, *name;          /* add: what to release on abort */
} BitmapAct;

static BitmapAct *bitmap_act(BdTxnAction *a)
{
    if (!a->opaque) {
        a->opaque = g_new0(BitmapAct, 1);
    }
    return a->opaque;
}

static void bitmap_clean(BdTxnAction *a)
{
    BitmapAct *st = a->opaque;

    if (st) {
        bd_dirty_bitmap_backup_free(st->backup);
        g_free(st->node);
        g_free(st->name);
        g_free(st);
        a->opaque = NULL;
    }
}

static BdDirtyBitmap *lookup_data(BdTxnAction *a, GVariant *data, int flags,
                                  GError **errp)
{
    g_auto(BdCmdBitmapArgs) b = { 0 };
    BdDirtyBitmap *bm;

    bd_cmd_bitmap_args(a->ops->data(), data, &b);
    bm = bd_cmd_bitmap_lookup(b.node, b.name, NULL, errp);
    return bm && bd_dirty_bitmap_check(bm, flags, errp) &&
           bd_cmd_bitmap_check_owner(bm, errp) ? bm : NULL;
}

static gboolean add_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    BitmapAct *st = bitmap_act(a);
    g_auto(BdCmdBitmapArgs) b = { 0 };

    bd_cmd_bitmap_args(a->ops->data(), data, &b);
    if (!bd_cmd_bitmap_add(&b, errp)) {
        return FALSE;
    }
    st->node = g_strdup(b.node);
    st->name = g_strdup(b.name);
    return TRUE;
}

static void add_abort(BdTxnAction *a)
{
    BitmapAct *st = bitmap_act(a);
    BdNode *node = st->node ? bd_node_find(st->node) : NULL;

    if (node) {
        bd_dirty_bitmap_release(bd_dirty_bitmap_find(node, st->name));
    }
}

static gboolean clear_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    BitmapAct *st = bitmap_act(a);

    st->bm = lookup_data(a, data, BD_BITMAP_DEFAULT, errp);
    if (!st->bm) {
        return FALSE;
    }
    st->backup = bd_dirty_bitmap_backup(st->bm);
    bd_dirty_bitmap_clear(st->bm);
    return TRUE;
}

/* clear and merge: put the old bits back. */
static void restore_abort(BdTxnAction *a)
{
    BitmapAct *st = bitmap_act(a);

    if (st->bm && st->backup) {
        bd_dirty_bitmap_restore(st->bm, st->backup);
    }
}

static gboolean merge_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    BitmapAct *st = bitmap_act(a);
    g_auto(BdCmdBitmapArgs) b = { 0 };

    bd_cmd_bitmap_args(a->ops->data(), data, &b);
    st->bm = bd_cmd_bitmap_merge(b.node, b.target, b.bitmaps, &st->backup,
                                 errp);
    return st->bm != NULL;
}

static gboolean enable_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    BitmapAct *st = bitmap_act(a);

    st->bm = lookup_data(a, data, BD_BITMAP_ALLOW_RO, errp);
    if (!st->bm) {
        return FALSE;
    }
    st->was_enabled = bd_dirty_bitmap_enabled(st->bm);
    bd_dirty_bitmap_set_enabled(st->bm, TRUE);
    return TRUE;
}

static gboolean disable_prepare(BdTxnAction *a, GVariant *data,
                                GError **errp)
{
    BitmapAct *st = bitmap_act(a);

    st->bm = lookup_data(a, data, BD_BITMAP_ALLOW_RO, errp);
    if (!st->bm) {
        return FALSE;
    }
    st->was_enabled = bd_dirty_bitmap_enabled(st->bm);
    bd_dirty_bitmap_set_enabled(st->bm, FALSE);
    return TRUE;
}

static void enable_disable_abort(BdTxnAction *a)
{
    BitmapAct *st = bitmap_act(a);

    if (st->bm) {
        bd_dirty_bitmap_set_enabled(st->bm, st->was_enabled);
    }
}

/* remove: hidden from the format's store and busy until commit. */
static gboolean remove_prepare(BdTxnAction *a, GVariant *data, GError **errp)
{
    BitmapAct *st = bitmap_act(a);
    g_auto(BdCmdBitmapArgs) b = { 0 };

    bd_cmd_bitmap_args(a->ops->data(), data, &b);
    st->bm = bd_cmd_bitmap_remove(b.node, b.name, FALSE, errp);
    if (!st->bm) {
        return FALSE;
    }
    bd_dirty_bitmap_set_skip_store(st->bm, TRUE);
    bd_dirty_bitmap_set_busy(st->bm, TRUE);
    return TRUE;
}

static void remove_abort(BdTxnAction *a)
{
    BitmapAct *st = bitmap_act(a);

    if (st->bm) {
        bd_dirty_bitmap_set_skip_store(st->bm, FALSE);
        bd_dirty_bitmap_set_busy(st->bm, FALSE);
    }
}

static void remove_commit(BdTxnAction *a)
{
    BitmapAct *st = bitmap_act(a);

    if (st->bm) {
        bd_dirty_bitmap_set_busy(st->bm, FALSE);
        bd_dirty_bitmap_release(st->bm);
        st->bm = NULL;
    }
}

static const BdTxnActionOps builtin_actions[] = {
    { .type = "abort", .data = abort_schema, .prepare = abort_prepare },
    { .type = "block-dirty-bitmap-add", .data = bd_cmd_bitmap_add_schema,
      .prepare = add_prepare, .abort = add_abort, .clean = bitmap_clean },
    { .type = "block-dirty-bitmap-remove", .data = bd_cmd_bitmap_schema,
      .prepare = remove_prepare, .commit = remove_commit,
      .abort = remove_abort, .clean = bitmap_clean },
    { .type = "block-dirty-bitmap-clear", .data = bd_cmd_bitmap_schema,
      .prepare = clear_prepare, .abort = restore_abort,
      .clean = bitmap_clean },
    { .type = "block-dirty-bitmap-enable", .data = bd_cmd_bitmap_schema,
      .prepare = enable_prepare, .abort = enable_disable_abort,
      .clean = bitmap_clean },
    { .type = "block-dirty-bitmap-disable", .data = bd_cmd_bitmap_schema,
      .prepare = disable_prepare, .abort = enable_disable_abort,
      .clean = bitmap_clean },
    { .type = "block-dirty-bitmap-merge",
      .data = bd_cmd_bitmap_merge_schema, .prepare = merge_prepare,
      .abort = restore_abort, .clean = bitmap_clean },
};

/* --- the command --- */

static gboolean cmd_transaction(GVariant *args, JsonNode **ret, GError **errp)
{
    return bd_txn_run(args, errp);
}

/* Images on a remote cluster that actions open connect off the main
 * thread first (control/image-file.c). */
static gboolean transaction_async(GVariant *args, BdQmpPending *p)
{
    return bd_ctl_transaction_opens_async(args, p, cmd_transaction);
}

static const BdQmpCommand txn_commands[] = {
    { "transaction", transaction_schema, FALSE, NULL, cmd_transaction,
      transaction_async },
    { NULL } };

void bd_cmd_transaction_register(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(builtin_actions); i++) {
        bd_txn_register_action(&builtin_actions[i]);
    }
    bd_qmp_register(txn_commands);
}
