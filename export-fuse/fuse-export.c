/* SPDX-License-Identifier: MIT */
/* The "fuse" export type: BlockExportOptionsFuse, mountpoint checks,
 * mounting and unmounting, and the export's lifecycle.
 *
 * Thread model: create, request_shutdown and destroy run on the main
 * thread, as does the table of mountpoints in use.  The mount happens in
 * create; request_shutdown stops admitting requests and wakes the
 * workers; destroy (after the last request reference is gone) joins
 * them, then unmounts (lazily, so that a file still held open by a
 * reader does not block it) and closes the session, which aborts the
 * kernel connection: such a reader then gets ENOTCONN, never a hang.
 *
 * References: as QEMU, a request holds an export reference while it
 * runs; an open file does not, so block-export-del (mode safe) succeeds
 * while a file is open and refuses only while a request is running.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "export-fuse/fuse-internal.h"
#include "graph/main-thread.h"

static GHashTable *mountpoints;   /* mountpoint -> BdFuseExport *, main */

typedef enum {
    FUSE_ALLOW_OTHER_OFF, FUSE_ALLOW_OTHER_ON, FUSE_ALLOW_OTHER_AUTO
} FuseAllowOther;

static const char *const allow_other_values[] = {
    [FUSE_ALLOW_OTHER_OFF] = "off",
    [FUSE_ALLOW_OTHER_ON] = "on",
    [FUSE_ALLOW_OTHER_AUTO] = "auto",
    NULL };

static const BdSchemaType fuse_allow_other_type = {
    .name = "FuseExportAllowOther",
    .kind = BD_SCHEMA_ENUM,
    .enum_values = allow_other_values,
};

typedef struct {
    const char *mountpoint;
    gboolean growable;
    FuseAllowOther allow_other;
} FuseExportOptions;

/* BlockExportOptionsFuse (QEMU 7.2). */
static const BdSchemaField fuse_export_options[] = {
    { "mountpoint", &bd_schema_str, FALSE,
      BD_AT(FuseExportOptions, mountpoint), .def.s = "" },
    { "growable", &bd_schema_bool, TRUE,
      BD_AT(FuseExportOptions, growable) },
    { "allow-other", &fuse_allow_other_type, TRUE,
      BD_AT(FuseExportOptions, allow_other),
      .def.i = FUSE_ALLOW_OTHER_AUTO },
    { NULL },
};

static BdFuseExport *fuse_export(BdExport *exp)
{
    return (BdFuseExport *)exp;
}

static uint64_t fuse_export_extra_perm(GVariant *options)
{
    BD_GLOBAL_STATE_CODE();

    FuseExportOptions o = { 0 };

    bd_schema_decode(fuse_export_options, options, &o);
    /* A growable export resizes the node on writes past the end. */
    return o.growable ? BD_PERM_RESIZE : 0;
}

/* The mountpoint must be an existing regular file that nothing is
 * mounted on yet.  Texts as QEMU's, plus the remedy for a mount left
 * behind by a daemon that was killed. */
static gboolean check_mountpoint(const char *path, struct stat *st,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autofree char *dir = g_path_get_dirname(path);
    struct stat dst;

    if (stat(path, st) < 0) {
        int err = errno;
        if (err == ENOTCONN) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to stat '%s': %s (a stale FUSE mount, "
                        "probably left by a daemon that was killed; "
                        "clear it with: fusermount3 -u '%s')",
                        path, g_strerror(err), path);
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to stat '%s': %s", path, g_strerror(err));
        }
        return FALSE;
    }
    if (!S_ISREG(st->st_mode)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'%s' is not a regular file", path);
        return FALSE;
    }
    /* A file on another device than its directory is a mount point. */
    if (stat(dir, &dst) == 0 && dst.st_dev != st->st_dev) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'%s' is already a mount point; unmount it first "
                    "(fusermount3 -u '%s')", path, path);
        return FALSE;
    }
    return TRUE;
}

/* Create the session and mount it; on failure nothing is left. */
static gboolean mount_session(BdFuseExport *fe, const char *path,
                              gboolean allow_other, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autofree char *opts = g_strdup_printf(
        "default_permissions,fsname=blockd:%s,subtype=blockd%s",
        fe->common.id, allow_other ? ",allow_other" : "");
    char *argv[] = { (char *)"blockd", (char *)"-o", opts, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);

    fe->session = fuse_session_new(&args, &bd_fuse_ops, sizeof(bd_fuse_ops),
                                   fe);
    fuse_opt_free_args(&args);
    if (!fe->session) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to set up FUSE session");
        return FALSE;
    }
    if (fuse_session_mount(fe->session, path) < 0) {
        fuse_session_destroy(fe->session);
        fe->session = NULL;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to mount FUSE session to export");
        return FALSE;
    }
    fe->mounted = TRUE;
    fe->allow_other = allow_other;
    return TRUE;
}

/* Mode and ownership of the mounted file, as QEMU's: the daemon's user
 * may read it, and write it when the export is writable (0600, else
 * 0400), whatever the mountpoint's own mode. */
static void init_attrs(BdFuseExport *fe, const struct stat *st)
{
    BD_GLOBAL_STATE_CODE();

    mode_t mode = S_IRUSR | (fe->common.writable ? S_IWUSR : 0);

    (void)st;
    bd_mutex_lock(&fe->attr_lock);
    fe->st_mode = S_IFREG | mode;
    fe->st_uid = getuid();
    fe->st_gid = getgid();
    bd_mutex_unlock(&fe->attr_lock);
}

static void unmount_session(BdFuseExport *fe)
{
    BD_GLOBAL_STATE_CODE();

    if (fe->session) {
        if (fe->mounted) {
            fuse_session_unmount(fe->session);
            fe->mounted = FALSE;
        }
        fuse_session_destroy(fe->session);
        fe->session = NULL;
    }
}

static gboolean fuse_export_create(BdExport *exp, GVariant *options,
                                   GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdFuseExport *fe = fuse_export(exp);
    FuseExportOptions o = { 0 };
    const char *path;
    struct stat st;
    gboolean ok;

    bd_schema_decode(fuse_export_options, options, &o);
    path = o.mountpoint;

    fe->stop_fd = -1;
    bd_mutex_init(&fe->attr_lock);
    bd_mutex_init(&fe->resize_lock);
    bd_mutex_init(&fe->resize_call_lock);
    if (!mountpoints) {
        mountpoints = g_hash_table_new(g_str_hash, g_str_equal);
    }
    if (g_hash_table_contains(mountpoints, path)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "There already is a FUSE export on '%s'", path);
        goto fail;
    }
    if (!check_mountpoint(path, &st, errp)) {
        goto fail;
    }
    fe->growable = o.growable;
    init_attrs(fe, &st);

    if (o.allow_other == FUSE_ALLOW_OTHER_AUTO) {
        /* allow_other needs root or user_allow_other in fuse.conf. */
        ok = mount_session(fe, path, TRUE, NULL) ||
             mount_session(fe, path, FALSE, errp);
    } else {
        ok = mount_session(fe, path, o.allow_other == FUSE_ALLOW_OTHER_ON,
                           errp);
    }
    /* Set before the workers start: they name it in their messages. */
    fe->mountpoint = g_strdup(path);
    if (!ok || !bd_fuse_workers_start(fe, errp)) {
        goto fail;
    }
    g_hash_table_insert(mountpoints, fe->mountpoint, fe);
    g_debug("export '%s': node '%s' mounted on '%s'%s%s", exp->id,
            exp->node_name, path, exp->writable ? " (writable)" : "",
            fe->growable ? " (growable)" : "");
    return TRUE;

fail:
    unmount_session(fe);
    g_clear_pointer(&fe->mountpoint, g_free);
    bd_mutex_destroy(&fe->attr_lock);
    bd_mutex_destroy(&fe->resize_lock);
    bd_mutex_destroy(&fe->resize_call_lock);
    return FALSE;
}

static void fuse_export_request_shutdown(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    BdFuseExport *fe = fuse_export(exp);

    /* From now on requests are refused.  One that raced with this holds
     * a reference and keeps the export until it has replied; none can
     * take one after the last is gone (bd_export_try_ref). */
    g_atomic_int_set(&fe->stopping, 1);
    bd_fuse_resize_cancel(fe);
    bd_fuse_workers_stop(fe);
    if (fe->mountpoint && mountpoints) {
        g_hash_table_remove(mountpoints, fe->mountpoint);
    }
    g_debug("export '%s': shutting down FUSE export on '%s'", exp->id,
            fe->mountpoint);
}

static void fuse_export_destroy(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    BdFuseExport *fe = fuse_export(exp);

    /* No request holds a reference any more; the workers have been told
     * to stop and exit at once.  Join them before the session's
     * descriptor is closed under them. */
    bd_fuse_workers_stop(fe);
    bd_fuse_workers_join(fe);
    unmount_session(fe);
    if (fe->mountpoint && mountpoints &&
        g_hash_table_lookup(mountpoints, fe->mountpoint) == fe) {
        g_hash_table_remove(mountpoints, fe->mountpoint);
    }
    g_free(fe->mountpoint);
    bd_mutex_destroy(&fe->attr_lock);
    bd_mutex_destroy(&fe->resize_lock);
    bd_mutex_destroy(&fe->resize_call_lock);
}

const BdExportDriver bd_fuse_export_driver = {
    .type = "fuse",
    .options = fuse_export_options,
    .instance_size = sizeof(BdFuseExport),
    .extra_perm = fuse_export_extra_perm,
    .create = fuse_export_create,
    .request_shutdown = fuse_export_request_shutdown,
    .destroy = fuse_export_destroy,
};
