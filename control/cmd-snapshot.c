/* SPDX-License-Identifier: MIT */
/* External snapshots: blockdev-snapshot and blockdev-snapshot-sync, as
 * commands and as transaction actions, with QEMU's checks and messages
 * in QEMU's order (blockdev.c, external_snapshot_prepare).
 *
 * Thread model: main thread only.
 *
 *   before:   export --> old --> ...        after:  export --> overlay
 *                                                                |backing
 *                                                                v
 *                                                               old --> ...
 *
 * prepare: find 'old', check it, create the overlay image (sync, unless
 *          mode=existing), open it (or find the given overlay node) and
 *          append it: 'old' becomes its backing child and every parent
 *          of 'old' moves onto it (bd_node_append).
 * commit:  'old' is reopened read-only, as QEMU does.
 * abort:   the parents move back onto 'old' and the overlay lets go of
 *          it, so the graph is as before (a created file stays, as in
 *          QEMU).
 */
#include <string.h>
#include "control/transaction.h"
#include "formats/filename.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "jobs/chain.h"

/* --- schemas (qapi/block-core.json) --- */

typedef struct {
    const char *node;
    const char *overlay;
    /* BlockdevSnapshotSync */
    const char *device;
    const char *node_name;
    const char *snapshot_file;
    const char *snapshot_node_name;
    const char *format;
    BdCtlNewImageMode mode;
    gboolean sync;
} SnapArgs;

static const BdSchemaField snapshot_fields[] = {
    BD_FIELD("node", &bd_schema_str, BD_AT(SnapArgs, node), .def.s = ""),
    BD_FIELD("overlay", &bd_schema_str, BD_AT(SnapArgs, overlay),
             .def.s = ""),
    { NULL } };
static const BdSchemaType snapshot_type = {
    .name = "BlockdevSnapshot", .kind = BD_SCHEMA_OBJECT,
    .fields = snapshot_fields };

static const BdSchemaField snapshot_sync_fields[] = {
    BD_OPT("device", &bd_schema_str, BD_AT(SnapArgs, device)),
    BD_OPT("node-name", &bd_schema_str, BD_AT(SnapArgs, node_name)),
    BD_FIELD("snapshot-file", &bd_schema_str,
             BD_AT(SnapArgs, snapshot_file), .def.s = ""),
    BD_OPT("snapshot-node-name", &bd_schema_str,
           BD_AT(SnapArgs, snapshot_node_name)),
    BD_OPT("format", &bd_schema_str, BD_AT(SnapArgs, format)),
    BD_OPT("mode", &bd_ctl_schema_new_image_mode, BD_AT(SnapArgs, mode),
           .def.i = BD_CTL_NEW_IMAGE_ABSOLUTE_PATHS),
    { NULL } };
static const BdSchemaType snapshot_sync_type = {
    .name = "BlockdevSnapshotSync", .kind = BD_SCHEMA_OBJECT,
    .fields = snapshot_sync_fields };

static const BdSchemaType *snapshot_fn(void)
{
    return &snapshot_type;
}

static const BdSchemaType *snapshot_sync_fn(void)
{
    return &snapshot_sync_type;
}

/* --- the action --- */

typedef struct {
    BdNode *old_node;      /* a reference */
    BdNode *new_node;      /* a reference, or NULL */
    gboolean appended;
    /* As QEMU's external_snapshot_prepare: the old node is drained from
     * prepare to clean (its jobs show paused meanwhile). */
    BdDrainSection *drained;
} SnapState;

/* QEMU's bdrv_lookup_bs: blockd has no named block backends, so a
 * 'device' never matches; 'node-name' is looked up as a node name. */
static BdNode *lookup(const char *device, const char *node_name,
                      GError **errp)
{
    BdNode *node = node_name ? bd_node_find(node_name) : NULL;

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'",
                    device ? device : "", node_name ? node_name : "");
    }
    return node;
}

/* QEMU's op blockers for BLOCK_OP_TYPE_EXTERNAL_SNAPSHOT: a job's
 * claim, and being some image's backing file. */
static gboolean check_blockers(BdNode *node, GError **errp)
{
    if (!bd_chain_check_busy(node, errp)) {
        return FALSE;
    }
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent && c->parent->backing == c) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' is busy: node is used as backing hd of "
                        "'%s'", node->node_name, c->parent->node_name);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean supports_backing(BdNode *node)
{
    return node->drv && node->drv->change_backing_file != NULL;
}

/* blockdev-snapshot-sync: create (unless mode=existing) and open the
 * overlay image, without its backing file. */
static BdNode *open_sync_overlay(SnapArgs *a, BdNode *old, GError **errp)
{
    const char *fmt = a->format ? a->format : "qcow2";
    const BdDriver *drv;
    GVariantDict d;
    GVariant *file;

    if (a->node_name && !a->snapshot_node_name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "New overlay node-name missing");
        return NULL;
    }
    if (a->snapshot_node_name && bd_node_find(a->snapshot_node_name)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "New overlay node-name already in use");
        return NULL;
    }
    if (a->mode != BD_CTL_NEW_IMAGE_EXISTING &&
        !bd_ctl_image_create(a->snapshot_file, fmt,
                             (uint64_t)bd_node_getlength(old), old, errp)) {
        return NULL;
    }
    drv = bd_driver_find(fmt);
    if (!drv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown driver '%s'", fmt);
        return NULL;
    }
    /* A path, or a remote image such as QEMU's rbd:pool/image names. */
    file = bd_formats_protocol_options(a->snapshot_file, errp);
    if (!file) {
        return NULL;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    if (a->snapshot_node_name) {
        g_variant_dict_insert(&d, "node-name", "s", a->snapshot_node_name);
    }
    if (old->read_only) {
        g_variant_dict_insert(&d, "read-only", "b", TRUE);
    }
    g_variant_dict_insert_value(&d, "file", file);
    if (drv->change_backing_file) {
        /* BDRV_O_NO_BACKING: the backing is attached below. */
        g_variant_dict_insert_value(&d, "backing", bd_variant_null());
    }
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    return bd_node_open(opts, errp);
}

static gboolean snapshot_prepare(SnapState *st, SnapArgs *a, GError **errp)
{
    const char *device = a->sync ? a->device : a->node;
    const char *node_name = a->sync ? a->node_name : a->node;
    BdNode *old = lookup(device, node_name, errp);
    BdNode *overlay;

    if (!old) {
        return FALSE;
    }
    st->old_node = bd_node_ref(old);
    st->drained = bd_drained_begin(old);
    if (!check_blockers(old, errp)) {
        return FALSE;
    }
    if (!old->read_only && bd_node_flush(old) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "An IO error has occurred");
        return FALSE;
    }
    if (a->sync) {
        st->new_node = open_sync_overlay(a, old, errp);
        if (!st->new_node) {
            return FALSE;
        }
    } else {
        overlay = lookup(a->overlay, a->overlay, errp);
        if (!overlay) {
            return FALSE;
        }
        st->new_node = bd_node_ref(overlay);
    }
    overlay = st->new_node;
    /* As QEMU 7.2: in use when a user reads it as an image (an export, a
     * format parent); a mirror target, written only, may get one. */
    if (bd_perm_load(&overlay->cum_perm) & BD_PERM_CONSISTENT_READ) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The overlay is already in use");
        return FALSE;
    }
    if (overlay->drv->is_filter) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Filters cannot be used as overlays");
        return FALSE;
    }
    if (overlay->backing) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The overlay already has a backing image");
        return FALSE;
    }
    if (!supports_backing(overlay)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The overlay does not support backing images");
        return FALSE;
    }
    if (!bd_node_append(overlay, old, errp)) {
        return FALSE;
    }
    st->appended = TRUE;
    return TRUE;
}

static void snapshot_commit(SnapState *st)
{
    /* QEMU: the old image is read-only from now on. */
    if (!st->old_node->read_only) {
        bd_chain_reopen_read_only(st->old_node, TRUE, NULL);
    }
}

static void snapshot_abort(SnapState *st)
{
    BdNode *overlay = st->new_node;

    if (!st->appended) {
        return;
    }
    bd_node_ref(overlay);
    if (!bd_node_replace(overlay, st->old_node, NULL)) {
        g_warning("node '%s': could not move its parents back to '%s'",
                  overlay->node_name, st->old_node->node_name);
    }
    if (overlay->backing && overlay->backing->node == st->old_node) {
        bd_node_detach_child(overlay, overlay->backing);
    }
    bd_node_unref(overlay);
    st->appended = FALSE;
}

static void snapshot_clean(SnapState *st)
{
    /* A sync overlay nobody uses goes away, as in QEMU. */
    g_clear_pointer(&st->new_node, bd_node_unref);
    g_clear_pointer(&st->drained, bd_drained_end);
    g_clear_pointer(&st->old_node, bd_node_unref);
}

static gboolean txn_prepare(BdTxnAction *a, GVariant *data, gboolean sync,
                            GError **errp)
{
    SnapArgs args = { 0 };
    SnapState *st = g_new0(SnapState, 1);
    gboolean ok;

    a->opaque = st;
    bd_schema_decode(sync ? snapshot_sync_fields : snapshot_fields, data,
                     &args);
    args.sync = sync;
    ok = snapshot_prepare(st, &args, errp);
    bd_schema_clear(sync ? snapshot_sync_fields : snapshot_fields, &args);
    return ok;
}

static gboolean txn_snapshot_prepare(BdTxnAction *a, GVariant *data,
                                     GError **errp)
{
    return txn_prepare(a, data, FALSE, errp);
}

static gboolean txn_snapshot_sync_prepare(BdTxnAction *a, GVariant *data,
                                          GError **errp)
{
    return txn_prepare(a, data, TRUE, errp);
}

static void txn_commit(BdTxnAction *a)
{
    snapshot_commit(a->opaque);
}

static void txn_abort(BdTxnAction *a)
{
    if (a->opaque) {
        snapshot_abort(a->opaque);
    }
}

static void txn_clean(BdTxnAction *a)
{
    if (a->opaque) {
        snapshot_clean(a->opaque);
        g_clear_pointer(&a->opaque, g_free);
    }
}

static const BdTxnActionOps snapshot_action = {
    .type = "blockdev-snapshot",
    .data = snapshot_fn,
    .prepare = txn_snapshot_prepare,
    .commit = txn_commit,
    .abort = txn_abort,
    .clean = txn_clean,
};

static const BdTxnActionOps snapshot_sync_action = {
    .type = "blockdev-snapshot-sync",
    .data = snapshot_sync_fn,
    .prepare = txn_snapshot_sync_prepare,
    .commit = txn_commit,
    .abort = txn_abort,
    .clean = txn_clean,
};

/* --- the commands: a transaction of one action, as QEMU's
 * blockdev_do_action --- */

static gboolean blockdev_snapshot(GVariant *args, JsonNode **ret,
                                  GError **errp)
{
    (void)ret;
    return bd_txn_run_one(&snapshot_action, args, errp);
}

static gboolean blockdev_snapshot_sync(GVariant *args, JsonNode **ret,
                                       GError **errp)
{
    (void)ret;
    return bd_txn_run_one(&snapshot_sync_action, args, errp);
}

/* An overlay on a remote cluster connects off the main thread first. */
static gboolean blockdev_snapshot_sync_async(GVariant *args,
                                             BdQmpPending *p)
{
    return bd_ctl_open_by_name_async(args, p, "snapshot-file",
                                     blockdev_snapshot_sync);
}

static const BdQmpCommand snapshot_commands[] = {
    { "blockdev-snapshot", snapshot_fn, FALSE, NULL, blockdev_snapshot },
    { "blockdev-snapshot-sync", snapshot_sync_fn, FALSE, NULL,
      blockdev_snapshot_sync, blockdev_snapshot_sync_async },
    { NULL },
};

void bd_cmd_snapshot_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(snapshot_commands);
    bd_txn_register_action(&snapshot_action);
    bd_txn_register_action(&snapshot_sync_action);
}
