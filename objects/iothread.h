/* SPDX-License-Identifier: MIT */
/* The 'iothread' object: a worker pool for exports, with QEMU's tuning
 * values (objects/iothread.c says what they mean in blockd). */
#ifndef BD_OBJECTS_IOTHREAD_H
#define BD_OBJECTS_IOTHREAD_H

#include "graph/worker-pool.h"
#include "objects/object.h"

#define BD_IOTHREAD_KIND "iothread"

/* The properties, by index. */
enum {
    BD_IOTHREAD_POLL_MAX_NS,
    BD_IOTHREAD_POLL_GROW,
    BD_IOTHREAD_POLL_SHRINK,
    BD_IOTHREAD_AIO_MAX_BATCH,
    BD_IOTHREAD_THREAD_POOL_MIN,
    BD_IOTHREAD_THREAD_POOL_MAX,
    BD_IOTHREAD_N_PROPS,
};

typedef struct {
    BdObject parent;
    gint64 v[BD_IOTHREAD_N_PROPS];   /* main thread */
    /* What the iothread is in blockd: the worker pool that the threads
     * of exports in it join, bounded by thread-pool-max. */
    BdWorkerPool *pool;
} BdIothread;

extern const BdObjectType bd_iothread_type;

const char *bd_iothread_prop_name(int prop);
/* The index of property 'name', or -1. */
int bd_iothread_prop_find(const char *name);
gboolean bd_iothread_check_value(int prop, gint64 value, GError **errp);
/* Main thread: qom-set of one property, QEMU's checks. */
gboolean bd_iothread_set(BdIothread *io, int prop, gint64 value,
                         GError **errp);

#endif
