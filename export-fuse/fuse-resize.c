/* SPDX-License-Identifier: MIT */
/* Size changes of a FUSE export's node: truncate, fallocate and writes
 * past the end.
 *
 * A growable export holds the resize permission for its whole life and
 * resizes on the worker that asked.  A writable export that is not
 * growable still honours an explicit truncate or fallocate, as QEMU's
 * does (iotest 308): it takes the resize permission for that one call
 * and gives it back.  Permissions change on the main thread only, so the
 * worker hands the whole call (take, resize, give back) to the main loop
 * and waits for it.  Doing all three there in one go also means no other
 * user can ever see the borrowed permission between two steps.
 *
 * Thread model: bd_fuse_resize runs on a worker with resize_lock held
 * and an export reference (an admitted request), so the export outlives
 * the call; it holds no request of the node in flight while it waits, so
 * a drain on the main thread never waits for it.  The main thread does
 * not always run its loop, though: at shutdown it waits for the exports
 * to go without iterating.  request_shutdown therefore wakes a waiting
 * worker (bd_fuse_resize_cancel), which gives the call up unless the
 * main thread has already started it; a call given up is dropped
 * untouched when the loop next reaches it.
 */
#include <errno.h>

#include "export-fuse/fuse-internal.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"

typedef enum {
    RESIZE_QUEUED,       /* posted, not yet started by the main thread */
    RESIZE_RUNNING,      /* the main thread is on it: wait for it */
    RESIZE_DONE,
    RESIZE_GIVEN_UP,     /* the worker left: the main thread must not run it */
} ResizeState;

struct BdFuseResizeCall {
    BdFuseExport *fe;
    uint64_t size;
    gint refs;                            /* worker + queued source */
    BdMutex lock;
    GCond cond;
    ResizeState state BD_GUARDED_BY(lock);
    gboolean cancel BD_GUARDED_BY(lock);  /* the export is shutting down */
    int ret BD_GUARDED_BY(lock);
};

static void call_unref(BdFuseResizeCall *call)
{
    if (g_atomic_int_dec_and_test(&call->refs)) {
        bd_mutex_destroy(&call->lock);
        g_cond_clear(&call->cond);
        g_free(call);
    }
}

/* Main thread: borrow the resize permission, resize, give it back. */
static int resize_with_borrowed_perm(BdFuseExport *fe, uint64_t size)
{
    BD_GLOBAL_STATE_CODE();

    BdEntry *entry = fe->common.entry;
    g_autoptr(GError) err = NULL;
    uint64_t perm, shared;
    int ret;

    bd_entry_get_perm(entry, &perm, &shared);
    if (!bd_entry_set_perm(entry, perm | BD_PERM_RESIZE, shared, &err)) {
        g_debug("export '%s': cannot resize: %s", fe->common.id,
                err->message);
        return -EPERM;
    }
    ret = bd_entry_truncate(entry, size);
    /* Giving a permission up cannot conflict with anyone. */
    if (!bd_entry_set_perm(entry, perm, shared, &err)) {
        g_warning("export '%s': giving back the resize permission: %s",
                  fe->common.id, err->message);
    }
    return ret;
}

static gboolean resize_on_main_thread(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdFuseResizeCall *call = opaque;
    int ret;

    bd_mutex_lock(&call->lock);
    if (call->state == RESIZE_GIVEN_UP) {
        bd_mutex_unlock(&call->lock);
        call_unref(call);
        return G_SOURCE_REMOVE;
    }
    call->state = RESIZE_RUNNING;
    bd_mutex_unlock(&call->lock);

    ret = resize_with_borrowed_perm(call->fe, call->size);

    bd_mutex_lock(&call->lock);
    call->ret = ret;
    call->state = RESIZE_DONE;
    g_cond_broadcast(&call->cond);
    bd_mutex_unlock(&call->lock);
    call_unref(call);
    return G_SOURCE_REMOVE;
}

/* Worker: run the resize on the main thread and wait for its result. */
static int resize_via_main_thread(BdFuseExport *fe, uint64_t size)
{
    BdFuseResizeCall *call = g_new0(BdFuseResizeCall, 1);
    int ret;

    call->fe = fe;
    call->size = size;
    call->refs = 2;
    call->state = RESIZE_QUEUED;
    bd_mutex_init(&call->lock);
    g_cond_init(&call->cond);

    bd_mutex_lock(&fe->resize_call_lock);
    if (g_atomic_int_get(&fe->stopping)) {
        bd_mutex_unlock(&fe->resize_call_lock);
        call->refs = 1;
        call_unref(call);
        return -ENOTCONN;
    }
    fe->resize_call = call;
    bd_mutex_unlock(&fe->resize_call_lock);

    g_idle_add_full(G_PRIORITY_DEFAULT, resize_on_main_thread, call, NULL);

    bd_mutex_lock(&call->lock);
    while (call->state != RESIZE_DONE &&
           !(call->cancel && call->state == RESIZE_QUEUED)) {
        bd_cond_wait(&call->cond, &call->lock);
    }
    if (call->state == RESIZE_DONE) {
        ret = call->ret;
    } else {
        call->state = RESIZE_GIVEN_UP;
        ret = -ENOTCONN;
    }
    bd_mutex_unlock(&call->lock);

    bd_mutex_lock(&fe->resize_call_lock);
    fe->resize_call = NULL;
    bd_mutex_unlock(&fe->resize_call_lock);
    call_unref(call);
    return ret;
}

void bd_fuse_resize_cancel(BdFuseExport *fe)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&fe->resize_call_lock);
    if (fe->resize_call) {
        BdFuseResizeCall *call = fe->resize_call;

        bd_mutex_lock(&call->lock);
        call->cancel = TRUE;
        g_cond_broadcast(&call->cond);
        bd_mutex_unlock(&call->lock);
    }
    bd_mutex_unlock(&fe->resize_call_lock);
}

int bd_fuse_resize(BdFuseExport *fe, uint64_t size, gboolean grow_only)
{
    bd_mutex_assert_held(&fe->resize_lock);

    int64_t len = bd_entry_getlength(fe->common.entry);

    if (len < 0) {
        return (int)len;
    }
    if ((uint64_t)len == size || (grow_only && (uint64_t)len > size)) {
        return 0;
    }
    if (fe->growable) {
        return bd_entry_truncate(fe->common.entry, size);
    }
    return resize_via_main_thread(fe, size);
}
