/* SPDX-License-Identifier: MIT */
/* Worker pools: the iothread mapping (see worker-pool.h).
 *
 * Thread model: any thread.  Counters are atomics; slot_lock (a leaf:
 * nothing is taken under it) guards every slot's pool pointer, so that
 * slot_get's reference is taken before a concurrent set can drop the
 * slot's own.
 */
#include <string.h>
#include <sys/prctl.h>
#include "graph/lock.h"
#include "graph/worker-pool.h"

struct BdWorkerPool {
    gint refcount;
    char *id;
    char thread_name[16];      /* "IO <id>", cut to the kernel's 15 */
    gint max;                  /* atomic */
    gint workers;              /* atomic */
    guint64 requests;          /* atomic */
};

static BdMutex slot_lock;

BdWorkerPool *bd_worker_pool_new(const char *id, int max)
{
    BdWorkerPool *p = g_new0(BdWorkerPool, 1);

    p->refcount = 1;
    p->id = g_strdup(id);
    g_snprintf(p->thread_name, sizeof(p->thread_name), "IO %s", id);
    p->max = MAX(max, 1);
    return p;
}

BdWorkerPool *bd_worker_pool_ref(BdWorkerPool *pool)
{
    g_atomic_int_inc(&pool->refcount);
    return pool;
}

void bd_worker_pool_unref(BdWorkerPool *pool)
{
    if (pool && g_atomic_int_dec_and_test(&pool->refcount)) {
        g_free(pool->id);
        g_free(pool);
    }
}

const char *bd_worker_pool_id(BdWorkerPool *pool)
{
    return pool->id;
}

void bd_worker_pool_set_max(BdWorkerPool *pool, int max)
{
    g_atomic_int_set(&pool->max, MAX(max, 1));
}

int bd_worker_pool_workers(BdWorkerPool *pool)
{
    return g_atomic_int_get(&pool->workers);
}

guint64 bd_worker_pool_requests(BdWorkerPool *pool)
{
    return __atomic_load_n(&pool->requests, __ATOMIC_RELAXED);
}

int bd_worker_pool_room(BdWorkerPool *pool)
{
    return g_atomic_int_get(&pool->max) - g_atomic_int_get(&pool->workers);
}

BdWorkerPool *bd_worker_pool_slot_get(BdWorkerPoolSlot *slot)
{
    BdWorkerPool *p;

    bd_mutex_lock(&slot_lock);
    p = slot->pool ? bd_worker_pool_ref(slot->pool) : NULL;
    bd_mutex_unlock(&slot_lock);
    return p;
}

void bd_worker_pool_slot_set(BdWorkerPoolSlot *slot, BdWorkerPool *pool)
{
    BdWorkerPool *old;

    bd_mutex_lock(&slot_lock);
    old = slot->pool;
    slot->pool = pool ? bd_worker_pool_ref(pool) : NULL;
    g_atomic_int_inc(&slot->gen);
    bd_mutex_unlock(&slot_lock);
    bd_worker_pool_unref(old);
}

void bd_worker_pool_slot_clear(BdWorkerPoolSlot *slot)
{
    bd_worker_pool_slot_set(slot, NULL);
}

static void set_thread_name(const char *name)
{
    /* Best effort: the name is for ps/top/gdb only. */
    (void)prctl(PR_SET_NAME, name, 0, 0, 0);
}

gboolean bd_worker_pool_enter(BdWorkerMembership *m, BdWorkerPoolSlot *slot,
                              const char *default_name, gboolean bounded)
{
    BdWorkerPool *p;

    m->default_name = default_name;
    m->gen = g_atomic_int_get(&slot->gen);
    p = bd_worker_pool_slot_get(slot);
    if (!p) {
        m->pool = NULL;
        return TRUE;
    }
    for (;;) {
        gint n = g_atomic_int_get(&p->workers);

        if (bounded && n >= g_atomic_int_get(&p->max)) {
            bd_worker_pool_unref(p);
            m->pool = NULL;
            return FALSE;
        }
        if (g_atomic_int_compare_and_exchange(&p->workers, n, n + 1)) {
            break;
        }
    }
    m->pool = p;
    return TRUE;
}

void bd_worker_pool_name_thread(BdWorkerMembership *m)
{
    if (m->pool) {
        set_thread_name(m->pool->thread_name);
        m->renamed = TRUE;
    } else if (m->renamed) {
        /* Back from a pool: a thread never in one keeps its name. */
        set_thread_name(m->default_name);
        m->renamed = FALSE;
    }
}

void bd_worker_pool_leave(BdWorkerMembership *m)
{
    if (m->pool) {
        g_atomic_int_add(&m->pool->workers, -1);
        g_clear_pointer(&m->pool, bd_worker_pool_unref);
    }
}

void bd_worker_pool_follow(BdWorkerMembership *m, BdWorkerPoolSlot *slot)
{
    if (G_UNLIKELY(g_atomic_int_get(&slot->gen) != m->gen)) {
        bd_worker_pool_leave(m);
        bd_worker_pool_enter(m, slot, m->default_name, FALSE);
        bd_worker_pool_name_thread(m);
    }
    if (m->pool) {
        __atomic_fetch_add(&m->pool->requests, 1, __ATOMIC_RELAXED);
    }
}
