/* SPDX-License-Identifier: MIT */
/* <glib.h> of a ThreadSanitizer build (-Db_sanitize=thread puts this
 * folder first on the include path, see meson.build): the real glib.h,
 * then what tells TSan about the synchronisation that GLib does where
 * TSan cannot see it.  Every blockd file reaches GLib through <glib.h>
 * (directly or from gio.h, json-glib.h), each after its G_LOG_DOMAIN.
 *
 * TSan learns about locks from the pthread functions it intercepts.
 * GLib's GMutex and GCond on Linux are its own futex code inside an
 * uninstrumented libglib, so every section they protect looks racy to
 * TSan, and so does every hand-off through a GMainContext (a job thread
 * posting an idle callback, an event handed to the main loop), which
 * GLib orders with a GMutex of its own.  This header wraps the calls
 * that blockd makes and publishes exactly the edges GLib guarantees:
 *
 *   g_mutex_*, g_cond_wait*  TSan's mutex annotations, keyed on the GMutex
 *   g_once_init_*            release at leave, acquire when already done
 *   g_idle_add*, g_timeout_add*, g_main_context_invoke*
 *                            the posting thread attaches the source under
 *                            a pthread mutex that the callback (or its
 *                            destroy notify) takes too, so everything
 *                            before and during the attach (GLib's own
 *                            allocations included) happens before it
 *
 * A GSource attached by hand (g_source_attach) is not covered: blockd
 * does that on the main thread only (control/monitor.c), except
 * formats/qcow2/create-qapi.c, whose tests are not in suite 'tsan'.
 *
 * Nothing else changes: the real GLib functions do the work.  GRWLock,
 * GRecMutex, GPrivate and GThread are pthread-based and need nothing.
 * Races GLib's own code has against itself stay invisible (it is not
 * instrumented); reports inside it go to tests/tsan/suppressions.txt.
 */
#ifndef BD_TESTS_TSAN_GLIB_H
#define BD_TESTS_TSAN_GLIB_H

#include_next <glib.h>
#include <pthread.h>
#include <sanitizer/tsan_interface.h>

/* --- GMutex, GCond --- */

static inline void bd_tsan_mutex_init(GMutex *m)
{
    (g_mutex_init)(m);
    __tsan_mutex_create(m, 0);
}

static inline void bd_tsan_mutex_clear(GMutex *m)
{
    __tsan_mutex_destroy(m, 0);
    (g_mutex_clear)(m);
}

static inline void bd_tsan_mutex_lock(GMutex *m)
{
    __tsan_mutex_pre_lock(m, 0);
    (g_mutex_lock)(m);
    __tsan_mutex_post_lock(m, 0, 0);
}

static inline gboolean bd_tsan_mutex_trylock(GMutex *m)
{
    gboolean ok;

    __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
    ok = (g_mutex_trylock)(m);
    __tsan_mutex_post_lock(m, __tsan_mutex_try_lock |
                              (ok ? 0 : __tsan_mutex_try_lock_failed), 0);
    return ok;
}

static inline void bd_tsan_mutex_unlock(GMutex *m)
{
    __tsan_mutex_pre_unlock(m, 0);
    (g_mutex_unlock)(m);
    __tsan_mutex_post_unlock(m, 0);
}

/* The wait releases the mutex and takes it again before returning. */
static inline void bd_tsan_cond_wait(GCond *c, GMutex *m)
{
    __tsan_mutex_pre_unlock(m, 0);
    __tsan_mutex_post_unlock(m, 0);
    (g_cond_wait)(c, m);
    __tsan_mutex_pre_lock(m, 0);
    __tsan_mutex_post_lock(m, 0, 0);
}

static inline gboolean bd_tsan_cond_wait_until(GCond *c, GMutex *m,
                                               gint64 end_time)
{
    gboolean ok;

    __tsan_mutex_pre_unlock(m, 0);
    __tsan_mutex_post_unlock(m, 0);
    ok = (g_cond_wait_until)(c, m, end_time);
    __tsan_mutex_pre_lock(m, 0);
    __tsan_mutex_post_lock(m, 0, 0);
    return ok;
}

#define g_mutex_init(m)               bd_tsan_mutex_init(m)
#define g_mutex_clear(m)              bd_tsan_mutex_clear(m)
#define g_mutex_lock(m)               bd_tsan_mutex_lock(m)
#define g_mutex_trylock(m)            bd_tsan_mutex_trylock(m)
#define g_mutex_unlock(m)             bd_tsan_mutex_unlock(m)
#define g_cond_wait(c, m)             bd_tsan_cond_wait((c), (m))
#define g_cond_wait_until(c, m, t)    bd_tsan_cond_wait_until((c), (m), (t))

/* --- g_once_init_enter/leave --- */

/* leave publishes with an atomic store inside libglib, which TSan does
 * not see; enter's fast path loads it in our (instrumented) code. */
#undef g_once_init_enter
#undef g_once_init_leave
#define g_once_init_enter(location)                                     \
    (G_GNUC_EXTENSION ({                                                \
        gboolean bd_tsan_first_ =                                       \
            !g_atomic_pointer_get(location) &&                          \
            (g_once_init_enter)(location);                              \
        if (!bd_tsan_first_) {                                          \
            __tsan_acquire((void *)(location));                         \
        }                                                               \
        bd_tsan_first_;                                                 \
    }))
#define g_once_init_leave(location, result)                             \
    (G_GNUC_EXTENSION ({                                                \
        __tsan_release((void *)(location));                             \
        (g_once_init_leave)((location), (gsize)(result));               \
    }))

/* --- hand-offs through a GMainContext --- */

typedef struct {
    GSourceFunc fn;
    gpointer data;
    GDestroyNotify notify;
} BdTsanHandoff;

/* One per file, like the trampolines that take it. */
static pthread_mutex_t bd_tsan_post_lock G_GNUC_UNUSED =
    PTHREAD_MUTEX_INITIALIZER;

/* After the poster's attach has returned: an edge from all it did. */
static inline void bd_tsan_after_post(void)
{
    pthread_mutex_lock(&bd_tsan_post_lock);
    pthread_mutex_unlock(&bd_tsan_post_lock);
}

static inline gboolean bd_tsan_handoff_run(gpointer opaque)
{
    BdTsanHandoff *h = opaque;

    bd_tsan_after_post();
    return h->fn(h->data);
}

static inline void bd_tsan_handoff_free(gpointer opaque)
{
    BdTsanHandoff *h = opaque;

    bd_tsan_after_post();
    if (h->notify) {
        h->notify(h->data);
    }
    g_free(h);
}

/* Post 'fn' on 'src' to 'ctx'.  The source cannot run before the
 * attach has put it in the context, and its callback waits for the lock
 * that the attach holds. */
static inline guint bd_tsan_post(GMainContext *ctx, GSource *src,
                                 gint priority, GSourceFunc fn,
                                 gpointer data, GDestroyNotify notify)
{
    BdTsanHandoff *h = g_new(BdTsanHandoff, 1);
    guint id;

    h->fn = fn;
    h->data = data;
    h->notify = notify;
    g_source_set_priority(src, priority);
    g_source_set_callback(src, bd_tsan_handoff_run, h, bd_tsan_handoff_free);
    pthread_mutex_lock(&bd_tsan_post_lock);
    id = g_source_attach(src, ctx);
    pthread_mutex_unlock(&bd_tsan_post_lock);
    g_source_unref(src);
    return id;
}

static inline guint bd_tsan_idle_add_full(gint priority, GSourceFunc fn,
                                          gpointer data,
                                          GDestroyNotify notify)
{
    return bd_tsan_post(NULL, g_idle_source_new(), priority, fn, data,
                        notify);
}

static inline guint bd_tsan_timeout_add_full(gint priority, guint ms,
                                             GSourceFunc fn, gpointer data,
                                             GDestroyNotify notify)
{
    return bd_tsan_post(NULL, g_timeout_source_new(ms), priority, fn, data,
                        notify);
}

static inline guint bd_tsan_timeout_add_seconds_full(gint priority,
                                                     guint s, GSourceFunc fn,
                                                     gpointer data,
                                                     GDestroyNotify notify)
{
    return bd_tsan_post(NULL, g_timeout_source_new_seconds(s), priority,
                        fn, data, notify);
}

/* GLib's g_main_context_invoke_full(): at once where 'ctx' is ours (or
 * can be), posted otherwise. */
static inline void bd_tsan_main_context_invoke_full(GMainContext *ctx,
                                                    gint priority,
                                                    GSourceFunc fn,
                                                    gpointer data,
                                                    GDestroyNotify notify)
{
    GMainContext *ours = g_main_context_get_thread_default();

    ctx = ctx ? ctx : g_main_context_default();
    ours = ours ? ours : g_main_context_default();
    if (g_main_context_is_owner(ctx)) {
        while (fn(data)) {
        }
    } else if (ours == ctx && g_main_context_acquire(ctx)) {
        while (fn(data)) {
        }
        g_main_context_release(ctx);
    } else {
        bd_tsan_post(ctx, g_idle_source_new(), priority, fn, data, notify);
        return;
    }
    if (notify) {
        notify(data);
    }
}

#define g_idle_add(fn, data) \
    bd_tsan_idle_add_full(G_PRIORITY_DEFAULT_IDLE, (fn), (data), NULL)
#define g_idle_add_full(p, fn, data, notify) \
    bd_tsan_idle_add_full((p), (fn), (data), (notify))
#define g_timeout_add(ms, fn, data) \
    bd_tsan_timeout_add_full(G_PRIORITY_DEFAULT, (ms), (fn), (data), NULL)
#define g_timeout_add_full(p, ms, fn, data, notify) \
    bd_tsan_timeout_add_full((p), (ms), (fn), (data), (notify))
#define g_timeout_add_seconds(s, fn, data) \
    bd_tsan_timeout_add_seconds_full(G_PRIORITY_DEFAULT, (s), (fn), (data), \
                                     NULL)
#define g_timeout_add_seconds_full(p, s, fn, data, notify) \
    bd_tsan_timeout_add_seconds_full((p), (s), (fn), (data), (notify))
#define g_main_context_invoke(ctx, fn, data) \
    bd_tsan_main_context_invoke_full((ctx), G_PRIORITY_DEFAULT, (fn), \
                                     (data), NULL)
#define g_main_context_invoke_full(ctx, p, fn, data, notify) \
    bd_tsan_main_context_invoke_full((ctx), (p), (fn), (data), (notify))

#endif
