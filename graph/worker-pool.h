/* SPDX-License-Identifier: MIT */
/* Worker pools: what an 'iothread' object is in blockd.
 *
 * blockd has no event loop per iothread: requests run on the threads of
 * the export that receives them (NBD connection workers, FUSE workers).
 * A worker pool groups those threads: an export bound to an iothread
 * runs its workers in that iothread's pool, which names them
 * ("IO <id>", as QEMU names its iothreads' threads), counts them and
 * bounds how many a busy export may start (thread-pool-max).  A pool
 * outlives whatever refers to it (reference counted).
 *
 * An export's current pool is kept in a slot (BdWorkerPoolSlot) that the
 * main thread may point elsewhere while workers run (an export following
 * its node to another iothread); workers notice the change through the
 * slot's generation and move themselves (bd_worker_pool_follow).
 *
 * Thread model: pools and slots from any thread; the counters are
 * atomic, a slot's pointer is guarded by one leaf lock (slot_lock in
 * worker-pool.c) so that taking a reference never races with the swap.
 */
#ifndef BD_GRAPH_WORKER_POOL_H
#define BD_GRAPH_WORKER_POOL_H

#include <glib.h>

typedef struct BdWorkerPool BdWorkerPool;

/* A pool for the iothread 'id', bounded to 'max' workers (> 0). */
BdWorkerPool *bd_worker_pool_new(const char *id, int max);
BdWorkerPool *bd_worker_pool_ref(BdWorkerPool *pool);
void bd_worker_pool_unref(BdWorkerPool *pool);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdWorkerPool, bd_worker_pool_unref)

const char *bd_worker_pool_id(BdWorkerPool *pool);
/* The bound on workers (thread-pool-max); applies to workers started
 * after the change. */
void bd_worker_pool_set_max(BdWorkerPool *pool, int max);
/* Live workers in the pool, and requests they have served. */
int bd_worker_pool_workers(BdWorkerPool *pool);
guint64 bd_worker_pool_requests(BdWorkerPool *pool);
/* How many more workers may start (<= 0: none).  An export's first
 * worker per connection (or its first FUSE worker) always runs, so that
 * the bound can slow an export but never stop it. */
int bd_worker_pool_room(BdWorkerPool *pool);

/* Where an export keeps its current pool (NULL: the main pool, i.e. no
 * iothread, no bound).  Zero-initialised is empty. */
typedef struct {
    BdWorkerPool *pool;
    gint gen;                  /* bumped by every set (atomic) */
} BdWorkerPoolSlot;

/* A new reference to the slot's pool (NULL when none); any thread. */
BdWorkerPool *bd_worker_pool_slot_get(BdWorkerPoolSlot *slot);
/* Point the slot at 'pool' (may be NULL); takes a reference. */
void bd_worker_pool_slot_set(BdWorkerPoolSlot *slot, BdWorkerPool *pool);
void bd_worker_pool_slot_clear(BdWorkerPoolSlot *slot);

/* A worker thread's membership: the pool it counts in, and the slot
 * generation it last saw.  One per worker thread, used by it alone. */
typedef struct {
    BdWorkerPool *pool;
    gint gen;
    const char *default_name;  /* the thread's name outside any pool */
    gboolean renamed;          /* the thread has a pool's name */
} BdWorkerMembership;

/* Count a worker in the slot's current pool ('m' starts zeroed).  With
 * 'bounded', only while the pool is below its bound: FALSE (and 'm'
 * left out of any pool) when it is full.  May run on the thread that
 * starts the worker, so that the bound holds for workers not yet
 * running; the worker then names itself (bd_worker_pool_name_thread). */
gboolean bd_worker_pool_enter(BdWorkerMembership *m, BdWorkerPoolSlot *slot,
                              const char *default_name, gboolean bounded);
/* On the worker's thread: take the pool's name, or back to default_name
 * after leaving one. */
void bd_worker_pool_name_thread(BdWorkerMembership *m);
/* Cheap check before each request: move to the slot's pool if the
 * export has moved since; counts the request in the pool. */
void bd_worker_pool_follow(BdWorkerMembership *m, BdWorkerPoolSlot *slot);
void bd_worker_pool_leave(BdWorkerMembership *m);

#endif
