/* SPDX-License-Identifier: MIT */
/* The registry of user-creatable objects: the types, and the table of
 * objects by id that object-add fills and object-del empties.
 *
 * Thread model: types are registered on the main thread at start-up and
 * only read afterwards.  The table is changed on the main thread only
 * (add, del, cleanup) and read from any thread (find): 'table_lock'
 * protects it, and every lookup takes a reference under the lock, so
 * an object deleted while another thread uses it lives until that
 * thread drops its reference.  The lock is a leaf: nothing is called
 * while it is held, in particular no type's free or unparent.
 *
 *   object-add --> type->create --> table (ref 1)
 *   find (any thread) ------------> ref +1 ... unref
 *   object-del --> users? --> unparent --> table's ref dropped
 *                                          (free at the last unref)
 */
#define G_LOG_DOMAIN "blockd-objects"

#include <string.h>
#include "graph/error.h"
#include "graph/lock.h"
#include "graph/main-thread.h"
#include "objects/object.h"

/* Registered types, NULL-terminated; main thread. */
static GPtrArray *types;

/* id -> BdObject * (the table's reference). */
static BdMutex table_lock;
static GHashTable *table BD_STATIC_GUARDED_BY(table_lock);

void bd_object_init(BdObject *obj, const BdObjectType *type, const char *id)
{
    obj->type = type;
    obj->id = g_strdup(id);
    obj->refcount = 1;
    obj->users = 0;
}

void bd_object_finalize(BdObject *obj)
{
    g_assert(g_atomic_int_get(&obj->refcount) == 0);
    g_clear_pointer(&obj->id, g_free);
    g_clear_pointer(&obj->props, g_variant_unref);
}

/* --- types --- */

void bd_object_type_register(const BdObjectType *type)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(type->name && type->props && type->create && type->free);
    if (!types) {
        types = g_ptr_array_new_null_terminated(8, NULL, TRUE);
    }
    g_assert(!bd_object_type_find(type->name));
    g_ptr_array_add(types, (gpointer)type);
}

const BdObjectType *bd_object_type_find(const char *name)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; types && i < types->len; i++) {
        const BdObjectType *t = types->pdata[i];
        if (strcmp(t->name, name) == 0) {
            return t;
        }
    }
    return NULL;
}

const BdObjectType *const *bd_object_types(void)
{
    static const BdObjectType *const none[] = { NULL };

    BD_GLOBAL_STATE_CODE();

    return types ? (const BdObjectType *const *)types->pdata : none;
}

/* --- references --- */

BdObject *bd_object_ref(BdObject *obj)
{
    g_assert(g_atomic_int_get(&obj->refcount) > 0);
    g_atomic_int_inc(&obj->refcount);
    return obj;
}

void bd_object_unref(BdObject *obj)
{
    if (obj && g_atomic_int_dec_and_test(&obj->refcount)) {
        g_assert(g_atomic_int_get(&obj->users) == 0);
        obj->type->free(obj);
    }
}

void bd_object_use(BdObject *obj)
{
    g_atomic_int_inc(&obj->users);
}

void bd_object_unuse(BdObject *obj)
{
    g_assert(g_atomic_int_get(&obj->users) > 0);
    g_atomic_int_add(&obj->users, -1);
}

gboolean bd_object_is_kind(BdObject *obj, const char *kind)
{
    const char *const *k = obj->type->kinds;

    for (; k && *k; k++) {
        if (strcmp(*k, kind) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

/* --- the table --- */

static GHashTable *table_locked(void) BD_REQUIRES(table_lock)
{
    bd_mutex_assert_held(&table_lock);
    if (!table) {
        table = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, NULL);
    }
    return table;
}

gboolean bd_object_add(const BdObjectType *type, const char *id,
                       GVariant *props, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdObject *obj;

    if (bd_object_exists(id)) {
        /* The caller checks first; the same text as QEMU's anyway. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "attempt to add duplicate property '%s' to object "
                    "(type 'container')", id);
        return FALSE;
    }
    obj = type->create(id, props, errp);
    if (!obj) {
        return FALSE;
    }
    g_assert(obj->type == type && strcmp(obj->id, id) == 0);
    obj->props = props ? g_variant_ref(props) : NULL;

    bd_mutex_lock(&table_lock);
    /* The key is the object's own id, which lives as long as the entry;
     * the table takes the creator's reference. */
    g_hash_table_insert(table_locked(), obj->id, obj);
    bd_mutex_unlock(&table_lock);
    return TRUE;
}

gboolean bd_object_exists(const char *id)
{
    gboolean found;

    bd_mutex_lock(&table_lock);
    found = g_hash_table_contains(table_locked(), id);
    bd_mutex_unlock(&table_lock);
    return found;
}

/* The table's reference to the object leaves with it: unparent, then
 * drop it.  Main thread, without the lock. */
static void object_release(BdObject *obj)
{
    BD_GLOBAL_STATE_CODE();

    if (obj->type->unparent) {
        obj->type->unparent(obj);
    }
    bd_object_unref(obj);
}

gboolean bd_object_del(const char *id, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdObject *obj;

    bd_mutex_lock(&table_lock);
    obj = g_hash_table_lookup(table_locked(), id);
    if (!obj) {
        bd_mutex_unlock(&table_lock);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "object '%s' not found", id);
        return FALSE;
    }
    /* Users are added by threads that hold a reference already: one
     * that comes after this check finds the object gone from the table
     * but still valid (QEMU's check is no stronger). */
    if (g_atomic_int_get(&obj->users) > 0) {
        bd_mutex_unlock(&table_lock);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "object '%s' is in use, can not be deleted", id);
        return FALSE;
    }
    g_hash_table_steal(table_locked(), id);
    bd_mutex_unlock(&table_lock);

    object_release(obj);
    return TRUE;
}

BdObject *bd_object_find(const char *id)
{
    BdObject *obj;

    bd_mutex_lock(&table_lock);
    obj = g_hash_table_lookup(table_locked(), id);
    if (obj) {
        bd_object_ref(obj);
    }
    bd_mutex_unlock(&table_lock);
    return obj;
}

BdObject *bd_object_find_kind(const char *id, const char *kind)
{
    g_autoptr(BdObject) obj = bd_object_find(id);

    if (!obj || !bd_object_is_kind(obj, kind)) {
        return NULL;
    }
    return g_steal_pointer(&obj);
}

GPtrArray *bd_object_list_ids(void)
{
    GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
    GHashTableIter it;
    gpointer key;

    bd_mutex_lock(&table_lock);
    g_hash_table_iter_init(&it, table_locked());
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        g_ptr_array_add(ids, g_strdup(key));
    }
    bd_mutex_unlock(&table_lock);
    return ids;
}

void bd_objects_cleanup(void)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GHashTable) old = NULL;
    GHashTableIter it;
    gpointer value;

    bd_mutex_lock(&table_lock);
    old = g_steal_pointer(&table);
    bd_mutex_unlock(&table_lock);
    if (!old) {
        return;
    }
    g_hash_table_iter_init(&it, old);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        BdObject *obj = value;

        if (g_atomic_int_get(&obj->users) > 0) {
            g_warning("object '%s' still has users at exit", obj->id);
            continue;
        }
        /* The key is obj->id: take the entry out before the object
         * may go. */
        g_hash_table_iter_steal(&it);
        object_release(obj);
    }
}
