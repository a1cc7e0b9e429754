/* SPDX-License-Identifier: MIT */
/* Locks whose rules are checked: a mutex and a reader/writer lock that
 * know who holds them (so the `_locked` functions can assert that their
 * caller does) and clang's thread-safety annotations (-Wthread-safety),
 * which compile to nothing elsewhere.
 *
 * How to use them: a lock's fields carry BD_GUARDED_BY(lock) (or
 * BD_PT_GUARDED_BY for what a pointer points at); a function called
 * with the lock held is named `_locked`, declared BD_REQUIRES(lock) and
 * starts with bd_mutex_assert_held().  clang then checks every access
 * and call at compile time where it can follow the lock, and the
 * assertion checks the rest at run time.  A BdMutex of static storage
 * needs no bd_mutex_init() (all zero is unlocked, as for a GMutex).
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
/* On a struct member, naming a sibling member (the lock).  C compilers
 * parse attributes before the struct is complete, so clang checks these
 * only where the build found it can (BD_TSA_MEMBERS, see meson.build);
 * elsewhere they document the rule and bd_mutex_assert_held() checks
 * it at run time. */
#if defined(BD_TSA_MEMBERS)
#define BD_GUARDED_BY(x)        BD_TSA(guarded_by(x))
#define BD_PT_GUARDED_BY(x)     BD_TSA(pt_guarded_by(x))
#else
#define BD_GUARDED_BY(x)
#define BD_PT_GUARDED_BY(x)
#endif
/* On a variable of static storage guarded by a static lock: always
 * checked by clang. */
#define BD_STATIC_GUARDED_BY(x) BD_TSA(guarded_by(x))
#define BD_CAPABILITY(x)        BD_TSA(capability(x))
#define BD_REQUIRES(...)        BD_TSA(requires_capability(__VA_ARGS__))
#define BD_REQUIRES_SHARED(...) BD_TSA(requires_shared_capability(__VA_ARGS__))
#define BD_EXCLUDES(...)        BD_TSA(locks_excluded(__VA_ARGS__))
#define BD_ACQUIRE(...)         BD_TSA(acquire_capability(__VA_ARGS__))
#define BD_RELEASE(...)         BD_TSA(release_capability(__VA_ARGS__))
#define BD_ACQUIRE_SHARED(...)  BD_TSA(acquire_shared_capability(__VA_ARGS__))
#define BD_RELEASE_SHARED(...)  BD_TSA(release_shared_capability(__VA_ARGS__))
#define BD_ASSERT_HELD(x)       BD_TSA(assert_capability(x))
#define BD_ASSERT_SHARED_HELD(x) BD_TSA(assert_shared_capability(x))
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

/* A GRWLock that knows its writer and how many readers hold it.  The
 * readers are counted, not named: "held for reading" asserts that this
 * thread writes or that some thread reads, which catches the forgotten
 * lock; clang's analysis checks the rest. */
typedef struct BD_CAPABILITY("rwlock") BdRWLock {
    GRWLock l;
    gpointer writer;              /* GThread * of the writer, or NULL */
    gint readers;                 /* atomic */
} BdRWLock;

static inline void bd_rwlock_init(BdRWLock *l)
{
    g_rw_lock_init(&l->l);
    l->writer = NULL;
    l->readers = 0;
}

static inline void bd_rwlock_destroy(BdRWLock *l)
{
    g_rw_lock_clear(&l->l);
}

static inline void bd_rwlock_rdlock(BdRWLock *l) BD_ACQUIRE_SHARED(l)
    BD_NO_THREAD_SAFETY
{
    g_rw_lock_reader_lock(&l->l);
    g_atomic_int_inc(&l->readers);
}

static inline void bd_rwlock_rdunlock(BdRWLock *l) BD_RELEASE_SHARED(l)
    BD_NO_THREAD_SAFETY
{
    g_atomic_int_add(&l->readers, -1);
    g_rw_lock_reader_unlock(&l->l);
}

static inline void bd_rwlock_wrlock(BdRWLock *l) BD_ACQUIRE(l)
    BD_NO_THREAD_SAFETY
{
    g_rw_lock_writer_lock(&l->l);
    g_atomic_pointer_set(&l->writer, BD_THIS_THREAD);
}

static inline void bd_rwlock_wrunlock(BdRWLock *l) BD_RELEASE(l)
    BD_NO_THREAD_SAFETY
{
    g_atomic_pointer_set(&l->writer, NULL);
    g_rw_lock_writer_unlock(&l->l);
}

/* The caller holds 'l' for writing. */
static inline void bd_rwlock_assert_wrheld(BdRWLock *l) BD_ASSERT_HELD(l)
    BD_NO_THREAD_SAFETY
{
    g_assert(g_atomic_pointer_get(&l->writer) == BD_THIS_THREAD);
}

/* The caller holds 'l' for reading or writing (see above). */
static inline void bd_rwlock_assert_held(BdRWLock *l) BD_ASSERT_SHARED_HELD(l)
    BD_NO_THREAD_SAFETY
{
    g_assert(g_atomic_pointer_get(&l->writer) == BD_THIS_THREAD ||
             g_atomic_int_get(&l->readers) > 0);
}

#endif
