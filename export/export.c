/* SPDX-License-Identifier: MIT */
/* The common export layer: block-export-add/del/query, reference
 * counting, destruction on the main loop and BLOCK_EXPORT_DELETED.
 *
 * Thread model: the export list, add/del/close_all/wait_gone and
 * destruction run on the main thread (BD_GLOBAL_STATE_CODE), which owns
 * the default main context for the daemon's life.  The reference count is
 * atomic; the last unref on another thread hands the export over to the
 * main thread through 'reap_queue': an idle callback destroys it, or a
 * main thread waiting in bd_export_wait_gone() is woken by reap_cond.
 * reap_lock guards reap_queue and reap_scheduled; nothing else is taken
 * under it but the main context's own lock (g_idle_add).
 */
#define G_LOG_DOMAIN "blockd-export"

#include <string.h>
#include "export/export.h"
#include "graph/events.h"
#include "graph/lock.h"
#include "graph/main-thread.h"

static GPtrArray *export_drivers;
static GPtrArray *exports;

void bd_export_register_driver(const BdExportDriver *drv)
{
    BD_GLOBAL_STATE_CODE();

    if (!export_drivers) {
        export_drivers = g_ptr_array_new();
    }
    g_ptr_array_add(export_drivers, (gpointer)drv);
}

const BdExportDriver *bd_export_find_driver(const char *type)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; export_drivers && i < export_drivers->len; i++) {
        const BdExportDriver *drv = export_drivers->pdata[i];
        if (strcmp(drv->type, type) == 0) {
            return drv;
        }
    }
    return NULL;
}

/* The members every BlockExportOptions has (QAPI's base). */
typedef struct {
    const char *type;
    const char *id;
    const char *node_name;
    gboolean writable;
    gboolean writethrough;
    gboolean fixed_iothread;
    const char *iothread;
} ExportOptions;

/* BlockExportType: the registered drivers' types, read as a string. */
static BdSchemaType type_enum;
static const BdSchemaField base_fields[] = {
    { "type", &type_enum, FALSE, BD_AT(ExportOptions, type), .def.s = "" },
    { "id", &bd_schema_str, FALSE, BD_AT(ExportOptions, id), .def.s = "" },
    /* 'iothread' is a worker pool (export/iothread.c). */
    { "fixed-iothread", &bd_schema_bool, TRUE,
      BD_AT(ExportOptions, fixed_iothread) },
    { "iothread", &bd_schema_str, TRUE, BD_AT(ExportOptions, iothread) },
    { "node-name", &bd_schema_str, FALSE, BD_AT(ExportOptions, node_name),
      .def.s = "" },
    { "writable", &bd_schema_bool, TRUE, BD_AT(ExportOptions, writable) },
    { "writethrough", &bd_schema_bool, TRUE,
      BD_AT(ExportOptions, writethrough) },
    { NULL } };

const BdSchemaType *bd_export_options_schema(void)
{
    BD_GLOBAL_STATE_CODE();

    static BdSchemaType union_type;
    static gsize done;

    if (g_once_init_enter(&done)) {
        guint n = export_drivers ? export_drivers->len : 0;
        const char **names = g_new0(const char *, n + 1);
        BdSchemaVariant *variants = g_new0(BdSchemaVariant, n + 1);
        static const BdSchemaField no_fields[] = { { NULL } };

        for (guint i = 0; i < n; i++) {
            const BdExportDriver *drv = export_drivers->pdata[i];
            BdSchemaType *t = g_new0(BdSchemaType, 1);
            t->name = g_strdup_printf("BlockExportOptions-%s", drv->type);
            t->kind = BD_SCHEMA_OBJECT;
            t->fields = drv->options ? drv->options : no_fields;
            names[i] = drv->type;
            variants[i] = (BdSchemaVariant) { drv->type, t };
        }
        type_enum = (BdSchemaType) { .name = "BlockExportType",
            .kind = BD_SCHEMA_ENUM, .enum_values = names };
        union_type = (BdSchemaType) { .name = "BlockExportOptions",
            .kind = BD_SCHEMA_UNION, .fields = base_fields,
            .discriminator = "type", .variants = variants };
        g_once_init_leave(&done, 1);
    }
    return &union_type;
}

static GPtrArray *export_list(void)
{
    BD_GLOBAL_STATE_CODE();

    if (!exports) {
        exports = g_ptr_array_new();
    }
    return exports;
}

BdExport *bd_export_find(const char *id)
{
    GPtrArray *list = export_list();

    for (guint i = 0; i < list->len; i++) {
        BdExport *exp = list->pdata[i];
        if (strcmp(exp->id, id) == 0) {
            return exp;
        }
    }
    return NULL;
}

GPtrArray *bd_export_list(void)
{
    return export_list();
}

gboolean bd_export_unshare(BdExport *exp, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!exp->drv->unshared) {
        return TRUE;
    }
    return bd_entry_set_perm(exp->entry, exp->perm,
                             BD_PERM_ALL & ~exp->drv->unshared, errp);
}

BdExport *bd_export_add(GVariant *options, BdExportIothreadLookup lookup,
                        GError **errp)
{
    ExportOptions o = { 0 };
    const char *type, *id, *node_name;
    const BdExportDriver *drv;
    uint64_t perm = BD_PERM_CONSISTENT_READ;
    BdNode *node;
    BdExport *exp;
    BdWorkerPool *pool, *iothread = NULL;

    BD_GLOBAL_STATE_CODE();
    bd_schema_decode(base_fields, options, &o);
    type = o.type;
    id = o.id;
    node_name = o.node_name;
    if (!bd_id_wellformed(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid block export id");
        return NULL;
    }
    if (bd_export_find(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block export id '%s' is already in use", id);
        return NULL;
    }
    drv = bd_export_find_driver(type);
    if (!drv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "No driver found for the requested export type");
        return NULL;
    }
    node = bd_node_find(node_name);
    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='' nor node-name='%s'", node_name);
        return NULL;
    }
    if (o.writable && node->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot export read-only node as writable");
        return NULL;
    }
    if (o.iothread) {
        iothread = lookup ? lookup(o.iothread) : NULL;
        if (!iothread) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "iothread \"%s\" not found", o.iothread);
            return NULL;
        }
    }
    if (!bd_export_pick_pool(node, iothread, o.fixed_iothread, &pool,
                             errp)) {
        return NULL;
    }

    exp = g_malloc0(drv->instance_size);
    exp->drv = drv;
    exp->id = g_strdup(id);
    exp->node_name = g_strdup(node->node_name);
    exp->writable = o.writable;
    exp->writethrough = o.writethrough;
    exp->refcount = 1;
    exp->user_owned = TRUE;
    exp->fixed_iothread = o.fixed_iothread;
    /* Before create: the driver's threads join it as they start. */
    bd_worker_pool_slot_set(&exp->pool, pool);
    bd_io_stats_init(&exp->stats);
    if (exp->writable) {
        perm |= BD_PERM_WRITE;
    }
    if (drv->extra_perm) {
        perm |= drv->extra_perm(options);
    }
    exp->perm = perm;
    exp->entry = bd_entry_new(node, NULL, perm, BD_PERM_ALL, errp);
    if (!exp->entry || !drv->create(exp, options, errp)) {
        g_clear_pointer(&exp->entry, bd_entry_free);
        bd_worker_pool_slot_clear(&exp->pool);
        g_free(exp->id);
        g_free(exp->node_name);
        g_free(exp);
        return NULL;
    }
    g_ptr_array_add(export_list(), exp);
    g_info("export '%s': %s export of node '%s' added%s", exp->id,
           exp->drv->type, exp->node_name, exp->writable ? ", writable" : "");
    return exp;
}

void bd_export_ref(BdExport *exp)
{
    g_atomic_int_inc(&exp->refcount);
}

gboolean bd_export_try_ref(BdExport *exp)
{
    gint n;

    do {
        n = g_atomic_int_get(&exp->refcount);
        if (n == 0) {
            return FALSE;
        }
    } while (!g_atomic_int_compare_and_exchange(&exp->refcount, n, n + 1));
    return TRUE;
}

/* The last reference is gone: release the node and tell the user. */
static void export_destroy(BdExport *exp)
{
    g_autofree char *id = g_strdup(exp->id);

    BD_GLOBAL_STATE_CODE();
    g_ptr_array_remove(export_list(), exp);
    if (exp->drv->destroy) {
        exp->drv->destroy(exp);
    }
    g_clear_pointer(&exp->entry, bd_entry_free);
    bd_worker_pool_slot_clear(&exp->pool);
    bd_io_stats_destroy(&exp->stats);
    g_free(exp->id);
    g_free(exp->node_name);
    g_free(exp);
    g_info("export '%s': deleted", id);
    bd_event_emit("BLOCK_EXPORT_DELETED", g_variant_new_parsed("{'id': <%s>}", id));
}

static BdMutex reap_lock;                  /* static: needs no init */
static GCond reap_cond;                    /* an export was queued */
/* BdExport *, refcount 0 */
static GQueue reap_queue BD_STATIC_GUARDED_BY(reap_lock) = G_QUEUE_INIT;
/* An idle reap_cb is due. */
static gboolean reap_scheduled BD_STATIC_GUARDED_BY(reap_lock);

/* Destroy the exports handed over by other threads.  Main thread. */
static void reap_queued(void)
{
    BD_GLOBAL_STATE_CODE();

    for (;;) {
        BdExport *exp;

        bd_mutex_lock(&reap_lock);
        exp = g_queue_pop_head(&reap_queue);
        bd_mutex_unlock(&reap_lock);
        if (!exp) {
            return;
        }
        export_destroy(exp);
    }
}

static gboolean reap_cb(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&reap_lock);
    reap_scheduled = FALSE;
    bd_mutex_unlock(&reap_lock);
    reap_queued();
    return G_SOURCE_REMOVE;
}

void bd_export_unref(BdExport *exp)
{
    gboolean schedule;

    if (!g_atomic_int_dec_and_test(&exp->refcount)) {
        return;
    }
    /* On the main thread (block-export-del of an export that no client
     * holds) the export goes at once, so that BLOCK_EXPORT_DELETED is
     * sent before the command's reply, as QEMU does. */
    if (bd_in_main_thread()) {
        export_destroy(exp);
        return;
    }
    /* Clients let go on their own threads; the graph lives on the main
     * loop. */
    bd_mutex_lock(&reap_lock);
    g_queue_push_tail(&reap_queue, exp);
    g_cond_broadcast(&reap_cond);
    schedule = !reap_scheduled;
    reap_scheduled = TRUE;
    bd_mutex_unlock(&reap_lock);
    if (schedule) {
        g_idle_add(reap_cb, NULL);
    }
}

static void export_request_shutdown(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    if (!exp->user_owned) {
        return;
    }
    exp->user_owned = FALSE;
    exp->shutting_down = TRUE;
    g_debug("export '%s': shutting down", exp->id);
    exp->drv->request_shutdown(exp);
    bd_export_unref(exp);
}

static gboolean export_in_use(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    if (exp->drv->in_use) {
        return exp->drv->in_use(exp);
    }
    return g_atomic_int_get(&exp->refcount) > 1;
}

gboolean bd_export_del(const char *id, gboolean hard, GError **errp)
{
    BdExport *exp;

    BD_GLOBAL_STATE_CODE();
    exp = bd_export_find(id);
    if (!exp) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Export '%s' is not found", id);
        return FALSE;
    }
    if (!exp->user_owned) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Export '%s' is already shutting down", id);
        return FALSE;
    }
    if (!hard && export_in_use(exp)) {
        /* QEMU's hint ("Use mode='hard' to force client disconnect")
         * is not part of a QMP error; it goes to the log. */
        g_debug("export '%s': still in use; mode 'hard' disconnects its "
                "clients", id);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "export '%s' still in use", id);
        return FALSE;
    }
    /* Deleted right here when no client holds it, else by the last
     * client to go: nothing waits for them. */
    export_request_shutdown(exp);
    return TRUE;
}

static gboolean of_type(BdExport *exp, const char *type)
{
    return !type || strcmp(exp->drv->type, type) == 0;
}

void bd_export_close_all(const char *type)
{
    g_autoptr(GPtrArray) copy = NULL;

    BD_GLOBAL_STATE_CODE();
    /* A copy: an export without clients is destroyed on the way. */
    copy = g_ptr_array_copy(export_list(), NULL, NULL);
    for (guint i = 0; i < copy->len; i++) {
        BdExport *exp = copy->pdata[i];
        if (of_type(exp, type)) {
            export_request_shutdown(exp);
        }
    }
}

/* Of 'type' (any when NULL) and, when 'id' is not NULL, that one. */
static gboolean selected(BdExport *exp, const char *type, const char *id)
{
    return of_type(exp, type) && (!id || strcmp(exp->id, id) == 0);
}

static gboolean any_left(const char *type, const char *id)
{
    GPtrArray *list = export_list();

    for (guint i = 0; i < list->len; i++) {
        if (selected(list->pdata[i], type, id)) {
            return TRUE;
        }
    }
    return FALSE;
}

/* The clients of the remaining exports are gone or going; requests they
 * left behind in a throttle would keep the export alive at the
 * throttle's pace.  A drain lets them go (and waits for them), as QEMU's
 * deletion of an export drains its block backend. */
static void release_held_requests(const char *type, const char *id)
{
    g_autoptr(GPtrArray) nodes =
        g_ptr_array_new_with_free_func((GDestroyNotify)bd_node_unref);
    GPtrArray *list = export_list();

    for (guint i = 0; i < list->len; i++) {
        BdExport *exp = list->pdata[i];
        BdNode *node = exp->entry ? bd_entry_node(exp->entry) : NULL;

        if (node && selected(exp, type, id) &&
            !g_ptr_array_find(nodes, node, NULL)) {
            g_ptr_array_add(nodes, bd_node_ref(node));
        }
    }
    for (guint i = 0; i < nodes->len; i++) {
        bd_drained_end(bd_drained_begin(nodes->pdata[i]));
    }
}

static gboolean wait_for(const char *type, const char *id, gint64 deadline)
{
    BD_GLOBAL_STATE_CODE();
    reap_queued();
    if (!any_left(type, id)) {
        return TRUE;
    }
    release_held_requests(type, id);
    for (;;) {
        gboolean woken = TRUE;

        reap_queued();
        if (!any_left(type, id)) {
            return TRUE;
        }
        bd_mutex_lock(&reap_lock);
        while (woken && g_queue_is_empty(&reap_queue)) {
            woken = bd_cond_wait_until(&reap_cond, &reap_lock, deadline);
        }
        bd_mutex_unlock(&reap_lock);
        if (!woken) {
            reap_queued();
            return !any_left(type, id);
        }
    }
}

gboolean bd_export_wait_gone(const char *type, gint64 deadline)
{
    return wait_for(type, NULL, deadline);
}

gboolean bd_export_wait_deleted(const char *id, gint64 deadline)
{
    return wait_for(NULL, id, deadline);
}
