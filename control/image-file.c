/* SPDX-License-Identifier: MIT */
/* Image files named by file name, for the commands that take one
 * (drive-backup, drive-mirror, blockdev-snapshot-sync): created as
 * QEMU's bdrv_img_create (formats/image-create.c does the work), and
 * opened after a preparation off the main thread where the name's
 * protocol node has one (an rbd: name connects to its cluster, for up
 * to its connect timeout: the main loop and every other QMP client go
 * on meanwhile, as with blockdev-add).
 *
 * Thread model: main thread only, but for prepare_thread (a GTask
 * thread, which touches only its options).
 */
#include <string.h>

#include "control/qmp-int.h"
#include "formats/filename.h"
#include "formats/image-create.h"
#include "graph/main-thread.h"
#include "graph/node.h"

gboolean bd_ctl_image_create(const char *filename, const char *fmt,
                             uint64_t size, BdNode *backing, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    return bd_formats_image_create(filename, fmt, size,
                                   backing ? backing->filename : NULL,
                                   backing ? backing->drv->name : NULL,
                                   errp);
}

typedef struct {
    GVariant *args;
    GVariant *file;           /* the protocol node's options */
    BdQmpHandler fn;
    BdQmpPending *p;
} OpenWork;

static void open_work_free(gpointer opaque)
{
    OpenWork *w = opaque;

    g_variant_unref(w->args);
    g_variant_unref(w->file);
    g_free(w);
}

static void prepare_thread(GTask *task, gpointer src, gpointer data,
                           GCancellable *cancel)
{
    OpenWork *w = data;
    GError *err = NULL;

    /* A failure is kept by the driver for the open: the command reports
     * it after its own checks, in QEMU's order. */
    bd_node_prepare(w->file, &err);
    g_clear_error(&err);
    g_task_return_boolean(task, TRUE);
}

static void prepared(GObject *src, GAsyncResult *res, gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    OpenWork *w = g_task_get_task_data(G_TASK(res));
    JsonNode *ret = NULL;
    GError *err = NULL;

    if (!w->fn(w->args, &ret, &err)) {
        g_clear_pointer(&ret, json_node_unref);
    }
    bd_node_prepare_drop(w->file);
    bd_qmp_pending_done(w->p, ret, err);
}

gboolean bd_ctl_open_by_name_async(GVariant *args, BdQmpPending *p,
                                   const char *key, BdQmpHandler fn)
{
    BD_GLOBAL_STATE_CODE();

    const char *filename = NULL, *mode = NULL;
    GVariant *file;
    OpenWork *w;

    /* Another mode creates the image first, which connects on its own. */
    if (!g_variant_lookup(args, key, "&s", &filename) ||
        !g_variant_lookup(args, "mode", "&s", &mode) ||
        strcmp(mode, "existing") != 0 ||
        !bd_formats_filename_is_remote(filename)) {
        return FALSE;
    }
    file = bd_formats_protocol_options(filename, NULL);
    if (!file) {
        return FALSE;       /* the command reports the bad name */
    }
    g_variant_ref_sink(file);
    if (!bd_node_needs_prepare(file)) {
        g_variant_unref(file);
        return FALSE;
    }
    w = g_new0(OpenWork, 1);
    w->args = g_variant_ref(args);
    w->file = file;
    w->fn = fn;
    w->p = p;
    g_autoptr(GTask) task = g_task_new(NULL, NULL, prepared, NULL);
    g_task_set_task_data(task, w, open_work_free);
    g_task_run_in_thread(task, prepare_thread);
    return TRUE;
}
