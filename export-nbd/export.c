/* SPDX-License-Identifier: MIT */
/* The "nbd" export type: BlockExportOptionsNbd, the table of export
 * names the handshake looks clients up in, and disconnecting an
 * export's clients when it shuts down.
 *
 * Thread model: create/in_use/request_shutdown/destroy run on the main
 * thread (export/export.h); connection threads look exports up and attach
 * themselves under bd_nbd_lock, taking a bd_export_ref per connection.
 */
#include <string.h>

#include "export-nbd/nbd-internal.h"
#include "graph/main-thread.h"

/* name -> BdNbdExport * */
static GHashTable *exports BD_STATIC_GUARDED_BY(bd_nbd_lock);

/* BlockDirtyBitmapOrStr: a name looked up along the node's chain, or a
 * {node, name} pair. */
typedef struct {
    const char *node;
    const char *name;
} DirtyBitmap;

static const BdSchemaField dirty_bitmap_fields[] = {
    { "node", &bd_schema_str, FALSE, BD_AT(DirtyBitmap, node), .def.s = "" },
    { "name", &bd_schema_str, FALSE, BD_AT(DirtyBitmap, name), .def.s = "" },
    { NULL },
};
static const BdSchemaType dirty_bitmap_type = {
    .name = "BlockDirtyBitmap", .kind = BD_SCHEMA_OBJECT,
    .fields = dirty_bitmap_fields };
static const BdSchemaType *const bitmap_or_str_alts[] = {
    &bd_schema_str, &dirty_bitmap_type, NULL };
static const BdSchemaType bitmap_or_str = {
    .name = "BlockDirtyBitmapOrStr", .kind = BD_SCHEMA_ALTERNATE,
    .alternatives = bitmap_or_str_alts };
static const BdSchemaType nbd_bitmap_list = {
    .name = "[BlockDirtyBitmapOrStr]",
    .kind = BD_SCHEMA_LIST,
    .element = &bitmap_or_str,
};

typedef struct {
    const char *name;          /* NULL: the node's name */
    const char *description;
    GVariant *bitmaps;
    gboolean allocation_depth;
} NbdExportOptions;

/* BlockExportOptionsNbd (QEMU 7.2). */
static const BdSchemaField nbd_export_options[] = {
    { "name", &bd_schema_str, TRUE, BD_AT(NbdExportOptions, name) },
    { "description", &bd_schema_str, TRUE,
      BD_AT(NbdExportOptions, description) },
    { "bitmaps", &nbd_bitmap_list, TRUE, BD_AT(NbdExportOptions, bitmaps) },
    { "allocation-depth", &bd_schema_bool, TRUE,
      BD_AT(NbdExportOptions, allocation_depth) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(NbdExportOptions, nbd_export_options)

static BdNbdExport *nbd_export(BdExport *exp)
{
    return (BdNbdExport *)exp;
}

/* One entry of 'bitmaps', resolved as QEMU's nbd_export_create(). */
static BdDirtyBitmap *lookup_bitmap(BdExport *exp, GVariant *item,
                                    GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdDirtyBitmap *bm = NULL;
    BdNode *where;

    if (g_variant_is_of_type(item, G_VARIANT_TYPE_STRING)) {
        const char *name = g_variant_get_string(item, NULL);

        /* Down the chain of filters and backing files. */
        for (where = bd_node_find(exp->node_name); where && !bm;) {
            BdChild *next = bd_node_filtered_child(where);
            bm = bd_dirty_bitmap_find(where, name);
            if (!bm) {
                where = next ? next->node : bd_node_backing(where);
            }
        }
        if (!bm) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Bitmap '%s' is not found", name);
            return NULL;
        }
    } else {
        DirtyBitmap b = { 0 };

        bd_schema_decode(dirty_bitmap_fields, item, &b);
        const char *node = b.node;
        const char *name = b.name;

        where = bd_node_find(node);
        if (!where) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' not found", node);
            return NULL;
        }
        bm = bd_dirty_bitmap_find(where, name);
        if (!bm) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Dirty bitmap '%s' not found", name);
            return NULL;
        }
    }
    if (!bd_dirty_bitmap_check(bm, BD_BITMAP_ALLOW_RO, errp)) {
        return NULL;
    }
    /* A read-only view of a disk that still changes would go stale. */
    if (!exp->writable && !where->read_only && bd_dirty_bitmap_enabled(bm)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Enabled bitmap '%s' incompatible with readonly export",
                    bd_dirty_bitmap_name(bm));
        return NULL;
    }
    return bm;
}

/* Resolve every bitmap first, then mark them busy: nothing to undo. */
static gboolean setup_bitmaps(BdNbdExport *ne, GVariant *list,
                              GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gsize n = list ? g_variant_n_children(list) : 0;
    g_autofree BdDirtyBitmap **bms = g_new0(BdDirtyBitmap *, n + 1);

    if (n > BD_NBD_MAX_BITMAPS) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "An NBD export offers at most %d bitmaps",
                    BD_NBD_MAX_BITMAPS);
        return FALSE;
    }
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(list, i);
        g_autoptr(GVariant) item = g_variant_get_variant(boxed);
        bms[i] = lookup_bitmap(&ne->common, item, errp);
        if (!bms[i]) {
            return FALSE;
        }
    }
    ne->bitmap_names = g_new0(char *, n + 1);
    for (gsize i = 0; i < n; i++) {
        bd_dirty_bitmap_set_busy(bms[i], TRUE);
        ne->bitmap_names[i] = g_strdup(bd_dirty_bitmap_name(bms[i]));
    }
    ne->n_bitmaps = n;
    ne->bitmaps = g_steal_pointer(&bms);
    return TRUE;
}

static void release_bitmaps(BdNbdExport *ne)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; i < ne->n_bitmaps; i++) {
        bd_dirty_bitmap_set_busy(ne->bitmaps[i], FALSE);
    }
    g_clear_pointer(&ne->bitmaps, g_free);
    g_clear_pointer(&ne->bitmap_names, g_strfreev);
    ne->n_bitmaps = 0;
}

static gboolean nbd_export_create(BdExport *exp, GVariant *options,
                                  GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdExport *ne = nbd_export(exp);
    g_auto(NbdExportOptions) o = { 0 };
    const char *name, *desc;

    bd_schema_decode(nbd_export_options, options, &o);
    name = o.name ? o.name : exp->node_name;
    desc = o.description;

    if (!bd_nbd_server_running()) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server not running");
        return FALSE;
    }
    if (strlen(name) > BD_NBD_MAX_STRING) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "export name '%s' too long", name);
        return FALSE;
    }
    if (desc && strlen(desc) > BD_NBD_MAX_STRING) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "description '%s' too long", desc);
        return FALSE;
    }
    /* As QEMU: no resize while the export serves the node. */
    if (!bd_export_unshare(exp, errp)) {
        return FALSE;
    }

    bd_mutex_lock(&bd_nbd_lock);
    if (!exports) {
        exports = g_hash_table_new(g_str_hash, g_str_equal);
    }
    if (g_hash_table_contains(exports, name)) {
        bd_mutex_unlock(&bd_nbd_lock);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server already has export named '%s'", name);
        return FALSE;
    }
    if (!setup_bitmaps(ne, o.bitmaps, errp)) {
        bd_mutex_unlock(&bd_nbd_lock);
        return FALSE;
    }
    ne->name = g_strdup(name);
    ne->description = g_strdup(desc);
    ne->allocation_depth = o.allocation_depth;
    ne->listed = TRUE;
    g_hash_table_insert(exports, ne->name, ne);
    bd_mutex_unlock(&bd_nbd_lock);
    g_debug("export '%s': serving node '%s' as NBD export '%s'%s", exp->id,
            exp->node_name, name, exp->writable ? " (writable)" : "");
    return TRUE;
}

static void unlist_locked(BdNbdExport *ne) BD_REQUIRES(bd_nbd_lock)
{
    bd_mutex_assert_held(&bd_nbd_lock);
    if (ne->listed) {
        g_hash_table_remove(exports, ne->name);
        ne->listed = FALSE;
    }
}

/* In use while a client in transmission is not on its way out.  Clients
 * still negotiating do not count, as with QEMU: they attach only while
 * the export is listed, and request_shutdown unlists it. */
static gboolean nbd_export_in_use(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdExport *ne = nbd_export(exp);
    gboolean used = FALSE;

    bd_mutex_lock(&bd_nbd_lock);
    for (GList *l = ne->clients; l && !used; l = l->next) {
        used = !bd_nbd_client_leaving(l->data);
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return used;
}

static void nbd_export_request_shutdown(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdExport *ne = nbd_export(exp);
    GList *l;

    bd_mutex_lock(&bd_nbd_lock);
    unlist_locked(ne);
    for (l = ne->clients; l; l = l->next) {
        bd_nbd_client_kick(l->data);
    }
    bd_mutex_unlock(&bd_nbd_lock);
    g_debug("export '%s': shutting down NBD export '%s'", exp->id,
            ne->name ? ne->name : "");
}

static void nbd_export_destroy(BdExport *exp)
{
    BD_GLOBAL_STATE_CODE();

    BdNbdExport *ne = nbd_export(exp);

    bd_mutex_lock(&bd_nbd_lock);
    unlist_locked(ne);
    g_warn_if_fail(ne->clients == NULL);
    bd_mutex_unlock(&bd_nbd_lock);
    release_bitmaps(ne);
    g_free(ne->name);
    g_free(ne->description);
}

guint64 bd_nbd_export_bytes_read(BdExport *exp)
{
    BdNbdExport *ne = nbd_export(exp);
    guint64 total;

    if (exp->drv != &bd_nbd_export_driver) {
        return 0;
    }
    bd_mutex_lock(&bd_nbd_lock);
    total = ne->bytes_read_left;
    for (GList *l = ne->clients; l; l = l->next) {
        BdNbdClient *c = l->data;
        total += __atomic_load_n(&c->bytes_read, __ATOMIC_RELAXED);
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return total;
}

const BdExportDriver bd_nbd_export_driver = {
    .type = "nbd",
    .options = nbd_export_options,
    .instance_size = sizeof(BdNbdExport),
    /* As QEMU: no resize while the NBD server serves the node. */
    .unshared = BD_PERM_RESIZE,
    .create = nbd_export_create,
    .in_use = nbd_export_in_use,
    .request_shutdown = nbd_export_request_shutdown,
    .destroy = nbd_export_destroy,
};

/* --- used by the connection threads --- */

BdNbdExport *bd_nbd_export_get(const char *name)
{
    BdNbdExport *ne = NULL;

    bd_mutex_lock(&bd_nbd_lock);
    if (exports) {
        ne = g_hash_table_lookup(exports, name);
    }
    if (ne) {
        bd_export_ref(&ne->common);
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return ne;
}

gboolean bd_nbd_export_attach(BdNbdExport *exp, BdNbdClient *c)
{
    gboolean ok;

    bd_mutex_lock(&bd_nbd_lock);
    ok = exp->listed;
    if (ok) {
        exp->clients = g_list_prepend(exp->clients, c);
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return ok;
}

void bd_nbd_export_detach(BdNbdExport *exp, BdNbdClient *c)
{
    bd_mutex_lock(&bd_nbd_lock);
    exp->clients = g_list_remove(exp->clients, c);
    /* The last reference: no worker of c counts any more. */
    exp->bytes_read_left += __atomic_load_n(&c->bytes_read,
                                            __ATOMIC_RELAXED);
    bd_mutex_unlock(&bd_nbd_lock);
}

GPtrArray *bd_nbd_export_names(void)
{
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter iter;
    gpointer value;

    bd_mutex_lock(&bd_nbd_lock);
    if (exports) {
        g_hash_table_iter_init(&iter, exports);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
            BdNbdExport *ne = value;
            g_ptr_array_add(names, g_strdup(ne->name));
            g_ptr_array_add(names, g_strdup(ne->description ?
                                            ne->description : ""));
        }
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return names;
}

uint16_t bd_nbd_export_tflags(BdNbdExport *exp, gboolean structured)
{
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                     NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;

    if (structured) {
        flags |= NBD_FLAG_SEND_DF;
    }
    /* Every connection of an export shares one entry handle and node,
     * with no per-connection cache, and a flush reaches the node's
     * storage: flush/FUA on one connection covers the writes completed
     * on all of them.  So multi-conn is safe for writable exports too
     * (QEMU 8.0 behaviour; 7.2 only offered it read-only).  As QEMU,
     * not when the server accepts only one connection. */
    if (bd_nbd_server_max_connections() != 1) {
        flags |= NBD_FLAG_CAN_MULTI_CONN;
    }
    if (!exp->common.writable) {
        flags |= NBD_FLAG_READ_ONLY;
    } else {
        flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                 NBD_FLAG_SEND_FAST_ZERO;
    }
    return flags;
}

/* --- x-query-nbd-clients --- */

void bd_nbd_client_info_free(BdNbdClientInfo *info)
{
    g_free(info->export_name);
    g_free(info->export_id);
    g_free(info->address);
    g_free(info->tls_identity);
    g_free(info);
}

/* The clients of the listed exports: attached under bd_nbd_lock after
 * their handshake, so their TLS session is settled by then. */
GPtrArray *bd_nbd_server_query_clients(void)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *out = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_nbd_client_info_free);
    GHashTableIter it;
    gpointer value;

    bd_mutex_lock(&bd_nbd_lock);
    if (exports) {
        g_hash_table_iter_init(&it, exports);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            BdNbdExport *ne = value;
            for (GList *l = ne->clients; l; l = l->next) {
                BdNbdClient *c = l->data;
                BdNbdClientInfo *info = g_new0(BdNbdClientInfo, 1);

                info->export_name = g_strdup(ne->name);
                info->export_id = g_strdup(ne->common.id);
                info->address = g_strdup(c->peer);
                info->tls = c->tls != NULL;
                if (c->tls) {
                    info->tls_identity =
                        g_strdup(bd_tls_session_identity(c->tls));
                }
                info->id = c->id;
                info->requests = __atomic_load_n(&c->requests,
                                                 __ATOMIC_RELAXED);
                info->bytes_read = __atomic_load_n(&c->bytes_read,
                                                   __ATOMIC_RELAXED);
                info->bytes_written = __atomic_load_n(&c->bytes_written,
                                                      __ATOMIC_RELAXED);
                g_ptr_array_add(out, info);
            }
        }
    }
    bd_mutex_unlock(&bd_nbd_lock);
    return out;
}
