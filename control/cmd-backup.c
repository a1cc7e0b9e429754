/* SPDX-License-Identifier: MIT */
/* Backup commands: blockdev-backup, drive-backup and their transaction
 * actions, with QEMU's argument checks in QEMU's order.
 *
 * Thread model: main thread only.
 */
#include <stdio.h>
#include <string.h>
#include "control/cmd-bitmap.h"
#include "control/transaction.h"
#include "formats/filename.h"
#include "formats/registry.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "jobs/chain.h"
#include "graph/node.h"
#include "jobs/backup.h"

/* --- schemas (qapi/block-core.json) --- */

static const char *const bitmap_mode_values[] = {
    [BD_BITMAP_SYNC_ON_SUCCESS] = "on-success",
    [BD_BITMAP_SYNC_NEVER] = "never",
    [BD_BITMAP_SYNC_ALWAYS] = "always",
    NULL };
static const BdSchemaType bitmap_mode_type = {
    .name = "BitmapSyncMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = bitmap_mode_values };

/* BackupPerf */
typedef struct {
    gboolean use_copy_range;
    gint64 max_workers;
    gint64 max_chunk;
} BackupPerf;

static const BdSchemaField perf_fields[] = {
    /* QEMU's default is false; blockd's offload falls back to read and
     * write by itself wherever it does not apply, so it is on unless
     * asked otherwise. */
    BD_OPT("use-copy-range", &bd_schema_bool,
           BD_AT(BackupPerf, use_copy_range), .def.i = TRUE),
    BD_OPT("max-workers", &bd_schema_int, BD_AT(BackupPerf, max_workers),
           .def.i = 64),
    BD_OPT("max-chunk", &bd_schema_int, BD_AT(BackupPerf, max_chunk)),
    { NULL } };
static const BdSchemaType perf_type = {
    .name = "BackupPerf", .kind = BD_SCHEMA_OBJECT, .fields = perf_fields };

/* BlockdevBackup and DriveBackup (format, mode). */
typedef struct {
    const char *job_id;
    const char *device;
    BdCtlSyncMode sync;
    gint64 speed;
    const char *bitmap;
    BdBitmapSyncMode bitmap_mode;
    gboolean has_bitmap_mode;
    gboolean compress;
    BdOnError on_source_error;
    BdOnError on_target_error;
    gboolean auto_finalize;
    gboolean auto_dismiss;
    const char *filter_node_name;
    BackupPerf x_perf;
    const char *target;
    const char *format;
    BdCtlNewImageMode mode;
} BackupArgs;

#define BACKUP_COMMON_FIELDS \
    BD_OPT("job-id", &bd_schema_str, BD_AT(BackupArgs, job_id)), \
    BD_FIELD("device", &bd_schema_str, BD_AT(BackupArgs, device), \
             .def.s = ""), \
    BD_FIELD("sync", &bd_ctl_schema_sync_mode, BD_AT(BackupArgs, sync), \
             .def.i = BD_CTL_SYNC_FULL), \
    BD_OPT("speed", &bd_schema_int, BD_AT(BackupArgs, speed)), \
    BD_OPT("bitmap", &bd_schema_str, BD_AT(BackupArgs, bitmap)), \
    BD_OPT("bitmap-mode", &bitmap_mode_type, BD_AT(BackupArgs, bitmap_mode), \
           BD_HAS(BackupArgs, bitmap_mode)), \
    BD_OPT("compress", &bd_schema_bool, BD_AT(BackupArgs, compress)), \
    BD_OPT("on-source-error", &bd_ctl_schema_on_error, \
           BD_AT(BackupArgs, on_source_error), .def.i = BD_ON_ERROR_REPORT), \
    BD_OPT("on-target-error", &bd_ctl_schema_on_error, \
           BD_AT(BackupArgs, on_target_error), .def.i = BD_ON_ERROR_REPORT), \
    BD_OPT("auto-finalize", &bd_schema_bool, \
           BD_AT(BackupArgs, auto_finalize), .def.i = TRUE), \
    BD_OPT("auto-dismiss", &bd_schema_bool, BD_AT(BackupArgs, auto_dismiss), \
           .def.i = TRUE), \
    BD_OPT("filter-node-name", &bd_schema_str, \
           BD_AT(BackupArgs, filter_node_name)), \
    BD_OPT("x-perf", &perf_type, BD_AT(BackupArgs, x_perf))

static const BdSchemaField blockdev_backup_fields[] = {
    BACKUP_COMMON_FIELDS,
    BD_FIELD("target", &bd_schema_str, BD_AT(BackupArgs, target),
             .def.s = ""),
    { NULL } };
static const BdSchemaType blockdev_backup_type = {
    .name = "BlockdevBackup", .kind = BD_SCHEMA_OBJECT,
    .fields = blockdev_backup_fields };
static const BdSchemaField drive_backup_fields[] = {
    BACKUP_COMMON_FIELDS,
    BD_FIELD("target", &bd_schema_str, BD_AT(BackupArgs, target),
             .def.s = ""),
    BD_OPT("format", &bd_schema_str, BD_AT(BackupArgs, format)),
    BD_OPT("mode", &bd_ctl_schema_new_image_mode, BD_AT(BackupArgs, mode),
           .def.i = BD_CTL_NEW_IMAGE_ABSOLUTE_PATHS),
    { NULL } };
static const BdSchemaType drive_backup_type = {
    .name = "DriveBackup", .kind = BD_SCHEMA_OBJECT,
    .fields = drive_backup_fields };

static const BdSchemaType *blockdev_backup_fn(void)
{
    return &blockdev_backup_type;
}

static const BdSchemaType *drive_backup_fn(void)
{
    return &drive_backup_type;
}

/* --- shared checks (QEMU's do_backup_common) --- */


/* The bitmap arguments, checked as QEMU checks them; fills p->sync,
 * p->bitmap and p->bitmap_mode. */
static gboolean backup_bitmap_args(const BackupArgs *a, BdNode *source,
                                   BdBackupParams *p, GError **errp)
{
    BdCtlSyncMode sync = a->sync;
    const char *bitmap = a->bitmap;
    gboolean has_mode = a->has_bitmap_mode;
    BdBitmapSyncMode mode = a->bitmap_mode;
    gboolean incremental = sync == BD_CTL_SYNC_INCREMENTAL;

    if ((incremental || sync == BD_CTL_SYNC_BITMAP) && !bitmap) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "must provide a valid bitmap name for '%s' sync mode",
                    bd_ctl_sync_mode_name(sync));
        return FALSE;
    }
    if (incremental) {
        if (has_mode && mode != BD_BITMAP_SYNC_ON_SUCCESS) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap sync mode must be 'on-success' when using "
                        "sync mode 'incremental'");
            return FALSE;
        }
        sync = BD_CTL_SYNC_BITMAP;
        has_mode = TRUE;
        mode = BD_BITMAP_SYNC_ON_SUCCESS;
    }
    p->sync = sync == BD_CTL_SYNC_TOP ? BD_BACKUP_SYNC_TOP :
              sync == BD_CTL_SYNC_NONE ? BD_BACKUP_SYNC_NONE :
              sync == BD_CTL_SYNC_BITMAP ? BD_BACKUP_SYNC_BITMAP :
              BD_BACKUP_SYNC_FULL;
    if (bitmap) {
        p->bitmap = bd_dirty_bitmap_find(source, bitmap);
        if (!p->bitmap) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap '%s' could not be found", bitmap);
            return FALSE;
        }
        if (!has_mode) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap sync mode must be given when providing a "
                        "bitmap");
            return FALSE;
        }
        if (!bd_dirty_bitmap_check(p->bitmap, BD_BITMAP_ALLOW_RO, errp)) {
            return FALSE;
        }
        if (p->sync == BD_BACKUP_SYNC_NONE) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "sync mode '%s' does not produce meaningful bitmap "
                        "outputs", bd_ctl_sync_mode_name(sync));
            return FALSE;
        }
        p->bitmap_mode = mode;
        if (p->bitmap_mode == BD_BITMAP_SYNC_NEVER &&
            p->sync != BD_BACKUP_SYNC_BITMAP) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap sync mode '%s' has no meaningful effect "
                        "when combined with sync mode '%s'",
                        bitmap_mode_values[mode], bd_ctl_sync_mode_name(sync));
            return FALSE;
        }
        /* A checkpoint's bitmap may be read, never cleared by a job. */
        if (p->bitmap_mode != BD_BITMAP_SYNC_NEVER &&
            !bd_cmd_bitmap_check_owner(p->bitmap, errp)) {
            return FALSE;
        }
    } else if (has_mode) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot specify bitmap sync mode without a bitmap");
        return FALSE;
    }
    return TRUE;
}

static BdJob *backup_common(const BackupArgs *a, BdNode *source,
                            BdNode *target, BdJobTxn *txn, GError **errp)
{
    BdBackupParams p = {
        .job_id = a->job_id,
        .source = source,
        .target = target,
        .compress = a->compress,
        .speed = a->speed,
        .on_source_error = a->on_source_error,
        .on_target_error = a->on_target_error,
        .auto_finalize = a->auto_finalize,
        .auto_dismiss = a->auto_dismiss,
        .filter_node_name = a->filter_node_name,
        .use_copy_range = a->x_perf.use_copy_range,
        .max_workers = a->x_perf.max_workers,
        .max_chunk = a->x_perf.max_chunk,
    };

    if (!backup_bitmap_args(a, source, &p, errp)) {
        return NULL;
    }
    return bd_backup_job_create(&p, txn, errp);
}

static BdJob *blockdev_backup_job(GVariant *args, BdJobTxn *txn,
                                  GError **errp)
{
    BackupArgs a = { 0 };

    bd_schema_decode(blockdev_backup_fields, args, &a);
    BdNode *source = bd_ctl_lookup_node(a.device, errp);
    if (!source) {
        return NULL;
    }
    BdNode *target = bd_ctl_lookup_node(a.target, errp);
    if (!target) {
        return NULL;
    }
    return backup_common(&a, source, target, txn, errp);
}


/* --- drive-backup: the target named by file name --- */

/* Open the image as drive-backup does (discard and detect-zeroes
 * 'unmap'); without a format, qcow2 is recognised by its magic. */
static BdNode *open_image(const char *filename, const char *fmt,
                          GError **errp)
{
    GVariantDict d;
    GVariant *file;

    gboolean probed = !fmt && !bd_formats_filename_is_remote(filename);

    if (!fmt) {
        fmt = probed ? bd_formats_probe_file(filename) : "raw";
    }
    /* A path, or a remote target such as QEMU's nbd:unix:PATH:... */
    file = bd_formats_protocol_options(filename, errp);
    if (!file) {
        return NULL;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    g_variant_dict_insert(&d, "discard", "s", "unmap");
    g_variant_dict_insert(&d, "detect-zeroes", "s", "unmap");
    g_variant_dict_insert_value(&d, "file", file);
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    BdNode *node = bd_node_open(opts, errp);

    if (node && probed) {
        bd_formats_raw_set_probed(node);
    }
    return node;
}

static BdJob *drive_backup_job(GVariant *args, BdJobTxn *txn,
                               GError **errp)
{
    BackupArgs a = { 0 };
    gboolean existing;
    BdNode *backing = NULL;
    const char *fmt;

    bd_schema_decode(drive_backup_fields, args, &a);
    existing = a.mode == BD_CTL_NEW_IMAGE_EXISTING;
    BdNode *source = bd_ctl_lookup_node(a.device, errp);
    if (!source) {
        return NULL;
    }
    /* As QEMU: a source another job holds is refused before the target
     * image is created. */
    if (!bd_chain_check_busy(source, errp)) {
        return NULL;
    }
    if (a.sync == BD_CTL_SYNC_TOP) {
        backing = bd_node_backing(source);
        if (!backing) {
            a.sync = BD_CTL_SYNC_FULL;
        }
    }
    fmt = a.format ? a.format : existing ? NULL : source->drv->name;
    if (!existing &&
        !bd_ctl_image_create(a.target, fmt,
                             (uint64_t)bd_node_getlength(source), backing,
                             errp)) {
        return NULL;
    }
    g_autoptr(BdNode) target = open_image(a.target, fmt, errp);
    if (!target) {
        return NULL;
    }
    return backup_common(&a, source, target, txn, errp);
}

/* --- the transaction action --- */

/* As QEMU's blockdev_backup_prepare: the source stays drained from
 * prepare to clean, so the jobs above it pause meanwhile and the new
 * job, started in commit, shows 'paused' until clean. */
typedef struct {
    BdJob *job;
    BdDrainSection *drained;
    gboolean drain_notified;
} BackupAct;

static void backup_act_drain(BdTxnAction *a, GVariant *data)
{
    BackupAct *act = g_new0(BackupAct, 1);
    const char *device = NULL;
    BdNode *source;

    a->opaque = act;
    if (g_variant_lookup(data, "device", "&s", &device) &&
        (source = bd_ctl_lookup_node(device, NULL)) != NULL) {
        act->drained = bd_drained_begin(source);
    }
}

static gboolean txn_prepare(BdTxnAction *a, GVariant *data, gboolean drive,
                            GError **errp)
{
    BdJobTxn *txn = NULL;
    BackupAct *act;

    backup_act_drain(a, data);
    act = a->opaque;

    if (a->txn->grouped) {
        if (!a->txn->job_txn) {
            a->txn->job_txn = bd_job_txn_new();
            a->txn->job_txn_unref = (GDestroyNotify)bd_job_txn_unref;
        }
        txn = a->txn->job_txn;
    }
    BdJob *job = drive ? drive_backup_job(data, txn, errp)
                       : blockdev_backup_job(data, txn, errp);
    if (!job) {
        return FALSE;
    }
    act->job = bd_job_ref(job);
    return TRUE;
}

static gboolean txn_backup_prepare(BdTxnAction *a, GVariant *data,
                                   GError **errp)
{
    return txn_prepare(a, data, FALSE, errp);
}

static gboolean txn_drive_backup_prepare(BdTxnAction *a, GVariant *data,
                                         GError **errp)
{
    return txn_prepare(a, data, TRUE, errp);
}

static void txn_backup_commit(BdTxnAction *a)
{
    BackupAct *act = a->opaque;

    bd_job_start(act->job);
    if (act->drained) {
        /* Linked to a drained node: paused until the drain ends. */
        bd_job_drain_notify(act->job, TRUE);
        act->drain_notified = TRUE;
    }
}

static void txn_backup_abort(BdTxnAction *a)
{
    BackupAct *act = a->opaque;
    BdJob *job = act ? act->job : NULL;

    if (job && job->status == BD_JOB_STATUS_CREATED) {
        bd_job_user_cancel(job, TRUE, NULL);
    }
}

static void txn_backup_clean(BdTxnAction *a)
{
    BackupAct *act = g_steal_pointer(&a->opaque);

    if (!act) {
        return;
    }
    if (act->drain_notified) {
        bd_job_drain_notify(act->job, FALSE);
    }
    if (act->drained) {
        bd_drained_end(act->drained);
    }
    g_clear_pointer(&act->job, bd_job_unref);
    g_free(act);
}

static const BdTxnActionOps backup_action = {
    .type = "blockdev-backup",
    .data = blockdev_backup_fn,
    .supports_grouped = TRUE,
    .prepare = txn_backup_prepare,
    .commit = txn_backup_commit,
    .abort = txn_backup_abort,
    .clean = txn_backup_clean,
};

static const BdTxnActionOps drive_backup_action = {
    .type = "drive-backup",
    .data = drive_backup_fn,
    .supports_grouped = TRUE,
    .prepare = txn_drive_backup_prepare,
    .commit = txn_backup_commit,
    .abort = txn_backup_abort,
    .clean = txn_backup_clean,
};

static gboolean blockdev_backup(GVariant *args, JsonNode **ret, GError **errp)
{
    (void)ret;
    return bd_txn_run_one(&backup_action, args, errp);
}

static gboolean drive_backup(GVariant *args, JsonNode **ret, GError **errp)
{
    (void)ret;
    return bd_txn_run_one(&drive_backup_action, args, errp);
}

/* A target on a remote cluster connects off the main thread first. */
static gboolean drive_backup_async(GVariant *args, BdQmpPending *p)
{
    return bd_ctl_open_by_name_async(args, p, "target", drive_backup);
}

static const BdQmpCommand backup_commands[] = {
    { "blockdev-backup", blockdev_backup_fn, FALSE, NULL, blockdev_backup },
    { "drive-backup", drive_backup_fn, FALSE, NULL, drive_backup,
      drive_backup_async },
    { NULL },
};

void bd_cmd_backup_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(backup_commands);
    bd_txn_register_action(&backup_action);
    bd_txn_register_action(&drive_backup_action);
}
