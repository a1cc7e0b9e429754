/* SPDX-License-Identifier: MIT */
/* Locks whose rules are checked: a mutex that knows its owner (so the
 * `_locked` functions can assert that their caller holds it) and
 * clang's thread-safety annotations (-Wthread-safety), which compile
 * to nothing elsewhere.
 *
 * Thread model: any thread.  The owner field is written by the holder
 * only and read with atomics, so asserting from any thread is safe.
 * A thread is known by the address of its own copy of bd_thread_tag
 * (thread-local): cheaper than g_thread_self() on the I/O path.
 */
#ifndef BD_GRAPH_LOCK_H
#define BD_GRAPH_LOCK_H

#include <glib.h>

#if defined(__clang__)
#define BD_TSA(x) __attribute__((x))
#else
#define BD_TSA(x)
#endif
#define BD_CAPABILITY(x)        BD_TSA(capability(x))
#define BD_GUARDED_BY(x)        BD_TSA(guarded_by(x))
#define BD_PT_GUARDED_BY(x)     BD_TSA(pt_guarded_by(x))
#define BD_REQUIRES(...)        BD_TSA(requires_capability(__VA_ARGS__))
#define BD_EXCLUDES(...)        BD_TSA(locks_excluded(__VA_ARGS__))
#define BD_ACQUIRE(...)         BD_TSA(acquire_capability(__VA_ARGS__))
#define BD_RELEASE(...)         BD_TSA(release_capability(__VA_ARGS__))
#define BD_ASSERT_HELD(x)       BD_TSA(assert_capability(x))
#define BD_NO_THREAD_SAFETY     BD_TSA(no_thread_safety_analysis)

extern _Thread_local char bd_thread_tag;
#define BD_THIS_THREAD ((gpointer)&bd_thread_tag)

typedef struct BD_CAPABILITY("mutex") BdMutex {
    GMutex m;
    gpointer owner;               /* BD_THIS_THREAD of the holder, or NULL */
} BdMutex;

static inline void bd_mutex_init(BdMutex *m)
{
    g_mutex_init(&m->m);
    m->owner = NULL;
}

static inline void bd_mutex_destroy(BdMutex *m)
{
    g_mutex_clear(&m->m);
}

static inline void bd_mutex_lock(BdMutex *m) BD_ACQUIRE(m) BD_NO_THREAD_SAFETY
{
    g_mutex_lock(&m->m);
    g_atomic_pointer_set(&m->owner, BD_THIS_THREAD);
}

static inline void bd_mutex_unlock(BdMutex *m) BD_RELEASE(m) BD_NO_THREAD_SAFETY
{
    g_atomic_pointer_set(&m->owner, NULL);
    g_mutex_unlock(&m->m);
}

/* Whether the calling thread holds 'm'. */
static inline gboolean bd_mutex_held(BdMutex *m)
{
    return g_atomic_pointer_get(&m->owner) == BD_THIS_THREAD;
}

/* In every `_locked` function: the caller must hold 'm'. */
static inline void bd_mutex_assert_held(BdMutex *m) BD_ASSERT_HELD(m)
    BD_NO_THREAD_SAFETY
{
    g_assert(bd_mutex_held(m));
}

/* g_cond_wait on a BdMutex, keeping the owner right. */
static inline void bd_cond_wait(GCond *c, BdMutex *m) BD_REQUIRES(m)
    BD_NO_THREAD_SAFETY
{
    g_atomic_pointer_set(&m->owner, NULL);
    g_cond_wait(c, &m->m);
    g_atomic_pointer_set(&m->owner, BD_THIS_THREAD);
}

static inline gboolean bd_cond_wait_until(GCond *c, BdMutex *m,
                                          gint64 end_time) BD_REQUIRES(m)
    BD_NO_THREAD_SAFETY
{
    gboolean ok;

    g_atomic_pointer_set(&m->owner, NULL);
    ok = g_cond_wait_until(c, &m->m, end_time);
    g_atomic_pointer_set(&m->owner, BD_THIS_THREAD);
    return ok;
}

#endif
