/* SPDX-License-Identifier: MIT */
/* The common export layer: block-export-add/del/query, reference
 * counting, destruction on the main loop and BLOCK_EXPORT_DELETED.
 *
 * Thread model: the export list and add/del run on the main thread; the
 * reference count is atomic, and the last unref (from any thread)
 * schedules destruction on the main context.
 */
#define G_LOG_DOMAIN "blockd-export"

#include <string.h>
#include "export/export.h"
#include "graph/events.h"

static GPtrArray *export_drivers;
static GPtrArray *exports;

void bd_export_register_driver(const BdExportDriver *drv)
{
    if (!export_drivers) {
        export_drivers = g_ptr_array_new();
    }
    g_ptr_array_add(export_drivers, (gpointer)drv);
}

const BdExportDriver *bd_export_find_driver(const char *type)
{
    for (guint i = 0; export_drivers && i < export_drivers->len; i++) {
        const BdExportDriver *drv = export_drivers->pdata[i];
        if (strcmp(drv->type, type) == 0) {
            return drv;
        }
    }
    return NULL;
}

const BdSchemaType *bd_export_options_schema(void)
{
    static BdSchemaType union_type, type_enum;
    static BdSchemaField base[8];
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
        BdSchemaField b[] = {
            { "type", &type_enum, FALSE },
            { "id", &bd_schema_str, FALSE },
            { "fixed-iothread", &bd_schema_bool, TRUE },
            { "iothread", &bd_schema_str, TRUE },
            { "node-name", &bd_schema_str, FALSE },
            { "writable", &bd_schema_bool, TRUE },
            { "writethrough", &bd_schema_bool, TRUE },
            { NULL } };
        memcpy(base, b, sizeof(b));
        union_type = (BdSchemaType) { .name = "BlockExportOptions",
            .kind = BD_SCHEMA_UNION, .fields = base,
            .discriminator = "type", .variants = variants };
        g_once_init_leave(&done, 1);
    }
    return &union_type;
}

static GPtrArray *export_list(void)
{
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

gboolean bd_export_any(void)
{
    return export_list()->len > 0;
}

BdExport *bd_export_add(GVariant *options, GError **errp)
{
    const char *type = bd_opts_get_str(options, "type", "");
    const char *id = bd_opts_get_str(options, "id", "");
    const char *node_name = bd_opts_get_str(options, "node-name", "");
    const BdExportDriver *drv;
    uint64_t perm = BD_PERM_CONSISTENT_READ;
    BdNode *node;
    BdExport *exp;

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

    exp = g_malloc0(drv->instance_size);
    exp->drv = drv;
    exp->id = g_strdup(id);
    exp->node_name = g_strdup(node->node_name);
    exp->writable = bd_opts_get_bool(options, "writable", FALSE);
    exp->writethrough = bd_opts_get_bool(options, "writethrough", FALSE);
    exp->refcount = 1;
    exp->user_owned = TRUE;
    if (exp->writable) {
        perm |= BD_PERM_WRITE;
    }
    if (drv->extra_perm) {
        perm |= drv->extra_perm(options);
    }
    exp->entry = bd_entry_new(node, NULL, perm, BD_PERM_ALL & ~drv->unshared,
                              errp);
    if (!exp->entry || !drv->create(exp, options, errp)) {
        g_clear_pointer(&exp->entry, bd_entry_free);
        g_free(exp->id);
        g_free(exp->node_name);
        g_free(exp);
        return NULL;
    }
    g_ptr_array_add(export_list(), exp);
    return exp;
}

void bd_export_ref(BdExport *exp)
{
    g_atomic_int_inc(&exp->refcount);
}

static gboolean export_destroy(gpointer opaque)
{
    BdExport *exp = opaque;
    g_autofree char *id = g_strdup(exp->id);

    g_ptr_array_remove(export_list(), exp);
    if (exp->drv->destroy) {
        exp->drv->destroy(exp);
    }
    g_clear_pointer(&exp->entry, bd_entry_free);
    g_free(exp->id);
    g_free(exp->node_name);
    g_free(exp);
    bd_event_emit("BLOCK_EXPORT_DELETED", g_variant_new_parsed("{'id': <%s>}", id));
    return G_SOURCE_REMOVE;
}

/* A hard block-export-del waiting for the last client reference. */
static GMutex del_lock;
static GCond del_cond;

void bd_export_unref(BdExport *exp)
{
    if (g_atomic_int_dec_and_test(&exp->refcount)) {
        g_mutex_lock(&del_lock);
        if (exp->main_waits) {
            exp->released = TRUE;
            g_cond_broadcast(&del_cond);
            g_mutex_unlock(&del_lock);
            return;
        }
        g_mutex_unlock(&del_lock);
        /* Clients drop their references on their own threads; the
         * export goes away on the main loop, where the graph lives.  On
         * the main loop itself it goes at once, so that block-export-del
         * without clients emits BLOCK_EXPORT_DELETED before its reply,
         * as QEMU does. */
        if (g_main_context_is_owner(g_main_context_default())) {
            export_destroy(exp);
        } else {
            g_idle_add(export_destroy, exp);
        }
    }
}

static void export_request_shutdown(BdExport *exp)
{
    if (!exp->user_owned) {
        return;
    }
    exp->user_owned = FALSE;
    exp->shutting_down = TRUE;
    exp->drv->request_shutdown(exp);
    bd_export_unref(exp);
}

/* Shut the export down and, for a while, wait until its clients have
 * let go, so that the node is free when block-export-del returns (as
 * with QEMU, where the clients go on the main loop).  A client that
 * takes longer leaves the export to be destroyed later, with its
 * BLOCK_EXPORT_DELETED event. */
static void export_shutdown_and_wait(BdExport *exp)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_TIME_SPAN_SECOND;
    gboolean released;

    bd_export_ref(exp);
    g_mutex_lock(&del_lock);
    exp->main_waits = TRUE;
    exp->released = FALSE;
    g_mutex_unlock(&del_lock);
    export_request_shutdown(exp);
    if (g_atomic_int_dec_and_test(&exp->refcount)) {
        export_destroy(exp);
        return;
    }
    g_mutex_lock(&del_lock);
    while (!exp->released &&
           g_cond_wait_until(&del_cond, &del_lock, deadline)) {
    }
    released = exp->released;
    exp->main_waits = FALSE;
    g_mutex_unlock(&del_lock);
    if (released) {
        export_destroy(exp);
    }
}

gboolean bd_export_del(const char *id, gboolean hard, GError **errp)
{
    BdExport *exp = bd_export_find(id);

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
    /* A client that has just hung up is still being torn down on its
     * connection thread: give it a moment before calling it a user. */
    for (int i = 0; !hard && i < 20 && g_atomic_int_get(&exp->refcount) > 1;
         i++) {
        g_usleep(5000);
    }
    if (!hard && g_atomic_int_get(&exp->refcount) > 1) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "export '%s' still in use", id);
        return FALSE;
    }
    export_shutdown_and_wait(exp);
    return TRUE;
}

void bd_export_close_all(const char *type)
{
    g_autoptr(GPtrArray) copy = g_ptr_array_copy(export_list(), NULL, NULL);

    for (guint i = 0; i < copy->len; i++) {
        BdExport *exp = copy->pdata[i];
        if (!type || strcmp(exp->drv->type, type) == 0) {
            export_request_shutdown(exp);
        }
    }
}
