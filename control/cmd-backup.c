/* SPDX-License-Identifier: MIT */
/* Backup commands: blockdev-backup, drive-backup and the 'blockdev-backup'
 * transaction action, with QEMU's argument checks in QEMU's order.
 *
 * Thread model: main thread only.
 */
#include <stdio.h>
#include <string.h>
#include "control/transaction.h"
#include "formats/registry.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "jobs/backup.h"

/* --- schemas (qapi/block-core.json) --- */

static const char *const bitmap_mode_values[] = {
    "on-success", "never", "always", NULL };
static const BdSchemaType bitmap_mode_type = {
    .name = "BitmapSyncMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = bitmap_mode_values };
static const BdSchemaField perf_fields[] = {
    BD_OPT("use-copy-range", &bd_schema_bool),
    BD_OPT("max-workers", &bd_schema_int),
    BD_OPT("max-chunk", &bd_schema_int),
    { NULL } };
static const BdSchemaType perf_type = {
    .name = "BackupPerf", .kind = BD_SCHEMA_OBJECT, .fields = perf_fields };

#define BACKUP_COMMON_FIELDS \
    BD_OPT("job-id", &bd_schema_str), \
    BD_FIELD("device", &bd_schema_str), \
    BD_FIELD("sync", &bd_ctl_schema_sync_mode), \
    BD_OPT("speed", &bd_schema_int), \
    BD_OPT("bitmap", &bd_schema_str), \
    BD_OPT("bitmap-mode", &bitmap_mode_type), \
    BD_OPT("compress", &bd_schema_bool), \
    BD_OPT("on-source-error", &bd_ctl_schema_on_error), \
    BD_OPT("on-target-error", &bd_ctl_schema_on_error), \
    BD_OPT("auto-finalize", &bd_schema_bool), \
    BD_OPT("auto-dismiss", &bd_schema_bool), \
    BD_OPT("filter-node-name", &bd_schema_str), \
    BD_OPT("x-perf", &perf_type)

static const BdSchemaField blockdev_backup_fields[] = {
    BACKUP_COMMON_FIELDS,
    BD_FIELD("target", &bd_schema_str),
    { NULL } };
static const BdSchemaType blockdev_backup_type = {
    .name = "BlockdevBackup", .kind = BD_SCHEMA_OBJECT,
    .fields = blockdev_backup_fields };
static const BdSchemaField drive_backup_fields[] = {
    BACKUP_COMMON_FIELDS,
    BD_FIELD("target", &bd_schema_str),
    BD_OPT("format", &bd_schema_str),
    BD_OPT("mode", &bd_ctl_schema_new_image_mode),
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

static int enum_index(const char *const *values, const char *s)
{
    for (int i = 0; values[i]; i++) {
        if (strcmp(values[i], s) == 0) {
            return i;
        }
    }
    return 0;
}

static BdNode *lookup_node(const char *name, GError **errp)
{
    BdNode *node = bd_node_find(name);

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", name, name);
    }
    return node;
}

/* The bitmap arguments, checked as QEMU checks them; fills p->sync,
 * p->bitmap and p->bitmap_mode. */
static gboolean backup_bitmap_args(GVariant *args, BdNode *source,
                                   BdBackupParams *p, GError **errp)
{
    const char *sync = bd_opts_get_str(args, "sync", "full");
    const char *bitmap = bd_opts_get_str(args, "bitmap", NULL);
    const char *mode = bd_opts_get_str(args, "bitmap-mode", NULL);
    gboolean incremental = strcmp(sync, "incremental") == 0;

    if ((incremental || strcmp(sync, "bitmap") == 0) && !bitmap) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "must provide a valid bitmap name for '%s' sync mode",
                    sync);
        return FALSE;
    }
    if (incremental) {
        if (mode && strcmp(mode, "on-success") != 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap sync mode must be 'on-success' when using "
                        "sync mode 'incremental'");
            return FALSE;
        }
        sync = "bitmap";
        mode = "on-success";
    }
    p->sync = strcmp(sync, "top") == 0 ? BD_BACKUP_SYNC_TOP :
              strcmp(sync, "none") == 0 ? BD_BACKUP_SYNC_NONE :
              strcmp(sync, "bitmap") == 0 ? BD_BACKUP_SYNC_BITMAP :
              BD_BACKUP_SYNC_FULL;
    if (bitmap) {
        p->bitmap = bd_dirty_bitmap_find(source, bitmap);
        if (!p->bitmap) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap '%s' could not be found", bitmap);
            return FALSE;
        }
        if (!mode) {
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
                        "outputs", sync);
            return FALSE;
        }
        p->bitmap_mode = (BdBitmapSyncMode)enum_index(bitmap_mode_values,
                                                      mode);
        if (p->bitmap_mode == BD_BITMAP_SYNC_NEVER &&
            p->sync != BD_BACKUP_SYNC_BITMAP) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap sync mode '%s' has no meaningful effect "
                        "when combined with sync mode '%s'", mode, sync);
            return FALSE;
        }
    } else if (mode) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot specify bitmap sync mode without a bitmap");
        return FALSE;
    }
    return TRUE;
}

static BdJob *backup_common(GVariant *args, BdNode *source, BdNode *target,
                            BdJobTxn *txn, GError **errp)
{
    g_autoptr(GVariant) perf = bd_opts_lookup(args, "x-perf");
    BdBackupParams p = {
        .job_id = bd_opts_get_str(args, "job-id", NULL),
        .source = source,
        .target = target,
        .compress = bd_opts_get_bool(args, "compress", FALSE),
        .speed = bd_opts_get_int(args, "speed", 0),
        .on_source_error = bd_ctl_on_error_arg(args, "on-source-error"),
        .on_target_error = bd_ctl_on_error_arg(args, "on-target-error"),
        .auto_finalize = bd_opts_get_bool(args, "auto-finalize", TRUE),
        .auto_dismiss = bd_opts_get_bool(args, "auto-dismiss", TRUE),
        .filter_node_name = bd_opts_get_str(args, "filter-node-name", NULL),
        .max_workers = 64,
    };

    if (perf) {
        p.use_copy_range = bd_opts_get_bool(perf, "use-copy-range", FALSE);
        p.max_workers = bd_opts_get_int(perf, "max-workers", 64);
        p.max_chunk = bd_opts_get_int(perf, "max-chunk", 0);
    }
    if (!backup_bitmap_args(args, source, &p, errp)) {
        return NULL;
    }
    return bd_backup_job_create(&p, txn, errp);
}

static BdJob *blockdev_backup_job(GVariant *args, BdJobTxn *txn,
                                  GError **errp)
{
    BdNode *source = lookup_node(bd_opts_get_str(args, "device", ""), errp);
    if (!source) {
        return NULL;
    }
    BdNode *target = lookup_node(bd_opts_get_str(args, "target", ""), errp);
    if (!target) {
        return NULL;
    }
    return backup_common(args, source, target, txn, errp);
}

static gboolean blockdev_backup(GVariant *args, JsonNode **ret, GError **errp)
{
    BdJob *job = blockdev_backup_job(args, NULL, errp);

    (void)ret;
    if (!job) {
        return FALSE;
    }
    bd_job_start(job);
    return TRUE;
}

/* --- drive-backup: the target named by file name --- */

/* Open the image as drive-backup does (discard and detect-zeroes
 * 'unmap'); without a format, qcow2 is recognised by its magic. */
static BdNode *open_image(const char *filename, const char *fmt,
                          GError **errp)
{
    GVariantDict d, f;

    if (!fmt) {
        fmt = bd_formats_probe_file(filename);
    }
    g_variant_dict_init(&f, NULL);
    g_variant_dict_insert(&f, "driver", "s", "file");
    g_variant_dict_insert(&f, "filename", "s", filename);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    g_variant_dict_insert(&d, "discard", "s", "unmap");
    g_variant_dict_insert(&d, "detect-zeroes", "s", "unmap");
    g_variant_dict_insert_value(&d, "file", g_variant_dict_end(&f));
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    return bd_node_open(opts, errp);
}

static gboolean drive_backup(GVariant *args, JsonNode **ret, GError **errp)
{
    const char *device = bd_opts_get_str(args, "device", "");
    const char *filename = bd_opts_get_str(args, "target", "");
    const char *mode = bd_opts_get_str(args, "mode", "absolute-paths");
    const char *sync = bd_opts_get_str(args, "sync", "full");
    gboolean existing = strcmp(mode, "existing") == 0;
    BdNode *backing = NULL;
    GVariantDict d;

    (void)ret;
    BdNode *source = lookup_node(device, errp);
    if (!source) {
        return FALSE;
    }
    g_variant_dict_init(&d, args);
    if (strcmp(sync, "top") == 0) {
        backing = bd_node_backing(source);
        if (!backing) {
            g_variant_dict_insert(&d, "sync", "s", "full");
        }
    }
    g_autoptr(GVariant) eff = g_variant_ref_sink(g_variant_dict_end(&d));
    const char *fmt = bd_opts_get_str(args, "format",
                                      existing ? NULL : source->drv->name);
    if (!existing &&
        !bd_ctl_image_create(filename, fmt,
                             (uint64_t)bd_node_getlength(source), backing,
                             errp)) {
        return FALSE;
    }
    g_autoptr(BdNode) target = open_image(filename, fmt, errp);
    if (!target) {
        return FALSE;
    }
    BdJob *job = backup_common(eff, source, target, NULL, errp);
    if (!job) {
        return FALSE;
    }
    bd_job_start(job);
    return TRUE;
}

/* --- the transaction action --- */

static gboolean txn_backup_prepare(BdTxnAction *a, GVariant *data,
                                   GError **errp)
{
    BdJobTxn *txn = NULL;

    if (a->txn->grouped) {
        if (!a->txn->job_txn) {
            a->txn->job_txn = bd_job_txn_new();
            a->txn->job_txn_unref = (GDestroyNotify)bd_job_txn_unref;
        }
        txn = a->txn->job_txn;
    }
    BdJob *job = blockdev_backup_job(data, txn, errp);
    if (!job) {
        return FALSE;
    }
    a->opaque = bd_job_ref(job);
    return TRUE;
}

static void txn_backup_commit(BdTxnAction *a)
{
    bd_job_start(a->opaque);
}

static void txn_backup_abort(BdTxnAction *a)
{
    BdJob *job = a->opaque;

    if (job && job->status == BD_JOB_STATUS_CREATED) {
        bd_job_user_cancel(job, TRUE, NULL);
    }
}

static void txn_backup_clean(BdTxnAction *a)
{
    g_clear_pointer(&a->opaque, bd_job_unref);
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

static const BdQmpCommand backup_commands[] = {
    { "blockdev-backup", blockdev_backup_fn, FALSE, NULL, blockdev_backup },
    { "drive-backup", drive_backup_fn, FALSE, NULL, drive_backup },
    { NULL },
};

void bd_cmd_backup_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(backup_commands);
    bd_txn_register_action(&backup_action);
}
