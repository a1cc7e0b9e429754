/* SPDX-License-Identifier: MIT */
/* The 'iothread' object (QEMU's iothread.c), mapped onto a worker pool.
 *
 * blockd runs no event loop per iothread: an iothread owns a worker
 * pool (graph/worker-pool.h) that the threads of the exports in it join
 * -- the exports that name it ('iothread' option) or whose node was
 * moved there (x-blockdev-set-iothread; export/iothread.c).  Its
 * thread-pool-max bounds those threads; its properties are kept,
 * checked with QEMU's messages and read back through qom-get; poll-*,
 * aio-max-batch and thread-pool-min have no effect here
 * (blockd-qmp(7), "Iothreads").
 *
 * Thread model: main thread only (created, read and changed by control).
 */
#include "graph/error.h"
#include "graph/main-thread.h"
#include "objects/iothread.h"

/* IothreadProperties (qapi/qom.json), with EventLoopBaseProperties. */
typedef struct {
    gint64 v[BD_IOTHREAD_N_PROPS];
    gboolean has_v[BD_IOTHREAD_N_PROPS];
} IothreadProps;

#define PROP(i, n) \
    { n, &bd_schema_int, TRUE, BD_AT(IothreadProps, v[i]), \
      BD_HAS(IothreadProps, v[i]) }
static const BdSchemaField iothread_fields[] = {
    PROP(BD_IOTHREAD_AIO_MAX_BATCH, "aio-max-batch"),
    PROP(BD_IOTHREAD_THREAD_POOL_MIN, "thread-pool-min"),
    PROP(BD_IOTHREAD_THREAD_POOL_MAX, "thread-pool-max"),
    PROP(BD_IOTHREAD_POLL_MAX_NS, "poll-max-ns"),
    PROP(BD_IOTHREAD_POLL_GROW, "poll-grow"),
    PROP(BD_IOTHREAD_POLL_SHRINK, "poll-shrink"),
    { NULL } };
static const BdSchemaType iothread_props_type = {
    .name = "IothreadProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = iothread_fields };

/* QEMU's defaults (IOTHREAD_POLL_MAX_NS_DEFAULT on Linux, the thread
 * pool's 64). */
static const gint64 defaults[BD_IOTHREAD_N_PROPS] = {
    [BD_IOTHREAD_POLL_MAX_NS] = 32768,
    [BD_IOTHREAD_THREAD_POOL_MAX] = 64,
};

static const char *const prop_names[BD_IOTHREAD_N_PROPS] = {
    [BD_IOTHREAD_POLL_MAX_NS] = "poll-max-ns",
    [BD_IOTHREAD_POLL_GROW] = "poll-grow",
    [BD_IOTHREAD_POLL_SHRINK] = "poll-shrink",
    [BD_IOTHREAD_AIO_MAX_BATCH] = "aio-max-batch",
    [BD_IOTHREAD_THREAD_POOL_MIN] = "thread-pool-min",
    [BD_IOTHREAD_THREAD_POOL_MAX] = "thread-pool-max",
};

const char *bd_iothread_prop_name(int prop)
{
    g_assert(prop >= 0 && prop < BD_IOTHREAD_N_PROPS);
    return prop_names[prop];
}

int bd_iothread_prop_find(const char *name)
{
    for (int i = 0; i < BD_IOTHREAD_N_PROPS; i++) {
        if (g_str_equal(bd_iothread_prop_name(i), name)) {
            return i;
        }
    }
    return -1;
}

gboolean bd_iothread_check_value(int prop, gint64 value, GError **errp)
{
    if (value < 0) {
        /* QEMU's iothread_set_param (the pool bounds are int64 too). */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "%s value must be in range [0, %" G_GINT64_FORMAT "]",
                    bd_iothread_prop_name(prop), G_MAXINT64);
        return FALSE;
    }
    return TRUE;
}

static gboolean pool_bounds_ok(gint64 min, gint64 max, GError **errp)
{
    if (min > max || max <= 0 || min > G_MAXINT32 || max > G_MAXINT32) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "bad thread-pool-min/thread-pool-max values");
        return FALSE;
    }
    return TRUE;
}

/* The setters' checks, before the id is looked at (as QEMU). */
static gboolean iothread_check(GVariant *props, GError **errp)
{
    IothreadProps p = { 0 };

    bd_schema_decode(iothread_fields, props, &p);
    for (const BdSchemaField *f = iothread_fields; f->name; f++) {
        int i = bd_iothread_prop_find(f->name);

        if (p.has_v[i] && !bd_iothread_check_value(i, p.v[i], errp)) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean bd_iothread_set(BdIothread *io, int prop, gint64 value,
                         GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gint64 min = io->v[BD_IOTHREAD_THREAD_POOL_MIN];
    gint64 max = io->v[BD_IOTHREAD_THREAD_POOL_MAX];

    if (!bd_iothread_check_value(prop, value, errp)) {
        return FALSE;
    }
    if (prop == BD_IOTHREAD_THREAD_POOL_MIN) {
        min = value;
    } else if (prop == BD_IOTHREAD_THREAD_POOL_MAX) {
        max = value;
    }
    if (!pool_bounds_ok(min, max, errp)) {
        return FALSE;
    }
    io->v[prop] = value;
    if (prop == BD_IOTHREAD_THREAD_POOL_MAX) {
        bd_worker_pool_set_max(io->pool, (int)value);
    }
    return TRUE;
}

static BdObject *iothread_create(const char *id, GVariant *props,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    IothreadProps p = { 0 };
    g_autofree BdIothread *io = g_new0(BdIothread, 1);

    bd_schema_decode(iothread_fields, props, &p);
    for (int i = 0; i < BD_IOTHREAD_N_PROPS; i++) {
        io->v[i] = p.has_v[i] ? p.v[i] : defaults[i];
    }
    if (!pool_bounds_ok(io->v[BD_IOTHREAD_THREAD_POOL_MIN],
                        io->v[BD_IOTHREAD_THREAD_POOL_MAX], errp)) {
        return NULL;
    }
    io->pool = bd_worker_pool_new(id,
                                  (int)io->v[BD_IOTHREAD_THREAD_POOL_MAX]);
    bd_object_init(&io->parent, &bd_iothread_type, id);
    return &g_steal_pointer(&io)->parent;
}

static void iothread_free(BdObject *obj)
{
    /* Nodes and exports hold references of their own. */
    g_clear_pointer(&((BdIothread *)obj)->pool, bd_worker_pool_unref);
    bd_object_finalize(obj);
    g_free(obj);
}

static const char *const iothread_kinds[] = { BD_IOTHREAD_KIND, NULL };

const BdObjectType bd_iothread_type = {
    .name = "iothread",
    .props = &iothread_props_type,
    .kinds = iothread_kinds,
    .check = iothread_check,
    .create = iothread_create,
    .free = iothread_free,
};
