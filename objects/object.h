/* SPDX-License-Identifier: MIT */
/* User-creatable objects (QEMU's --object / object-add): the registry
 * of ids and the interface each object type implements.
 *
 * QEMU keeps these as children of /objects; ids share one namespace
 * whatever the type.  Throttle groups keep their own table in formats/
 * (control/cmd-object.c checks both); every other type lives here.
 *
 * Thread model: add and del run on the main thread.  Lookups may run on
 * any thread (an NBD connection thread resolves its server's tls-authz
 * at each handshake): the table has its own mutex and every lookup
 * returns a reference, so an object outlives its object-del while a
 * thread still uses it.
 */
#ifndef BD_OBJECTS_OBJECT_H
#define BD_OBJECTS_OBJECT_H

#include <glib.h>

#include "graph/schema.h"

typedef struct BdObject BdObject;

typedef struct BdObjectType {
    const char *name;                 /* qom-type, e.g. "tls-creds-x509" */
    /* Its properties, the ObjectOptions variant (a BD_SCHEMA_OBJECT). */
    const BdSchemaType *props;
    /* Interfaces it implements, matched by bd_object_find_kind(): e.g.
     * "tls-creds", "authz".  NULL-terminated; may be NULL. */
    const char *const *kinds;
    /* Main thread.  Build the object from validated properties (the
     * whole ObjectOptions dictionary: qom-type and id too).  Returns a
     * new object with bd_object_init() done, or NULL with *errp set. */
    BdObject *(*create)(const char *id, GVariant *props, GError **errp);
    /* Main thread; optional.  The checks QEMU makes while it sets the
     * properties, before it looks at the id: control/ calls it before
     * the duplicate-id check, create after it (QEMU's 'complete'). */
    gboolean (*check)(GVariant *props, GError **errp);
    /* Main thread; optional.  The object leaves the table (object-del,
     * bd_objects_cleanup): stop what the main loop does for it (a file
     * monitor), so that no callback runs once other threads may hold
     * the last reference. */
    void (*unparent)(BdObject *obj);
    /* Any thread (the last reference).  Free what create made, and the
     * object itself (after bd_object_finalize()). */
    void (*free)(BdObject *obj);
} BdObjectType;

struct BdObject {
    const BdObjectType *type;
    char *id;
    gint refcount;     /* atomic: the table's, plus one per lookup */
    gint users;        /* atomic: holders that make object-del fail */
    /* The properties it was created with (a{sv}), for qom-get; set by
     * bd_object_add, main thread only. */
    GVariant *props;
};

/* For create/free implementations: set up and tear down the common
 * part (refcount 1, owned by the caller until bd_object_add). */
void bd_object_init(BdObject *obj, const BdObjectType *type, const char *id);
void bd_object_finalize(BdObject *obj);

/* Every type's registration (objects/meson's list); main thread. */
void bd_objects_register_builtin(void);
void bd_object_type_register(const BdObjectType *type);
const BdObjectType *bd_object_type_find(const char *name);
/* The registered types, for the ObjectOptions schema (NULL-terminated,
 * in registration order). */
const BdObjectType *const *bd_object_types(void);

/* Main thread.  Create an object of 'type' with 'id' and add it; the
 * caller has checked that the id is well formed and free. */
gboolean bd_object_add(const BdObjectType *type, const char *id,
                       GVariant *props, GError **errp);
/* TRUE when the table has 'id'. */
gboolean bd_object_exists(const char *id);
/* Main thread.  Remove 'id'.  Fails with QEMU's "object '%s' is in use,
 * can not be deleted" while it has users. */
gboolean bd_object_del(const char *id, GError **errp);

/* Any thread: the object 'id' with a new reference, or NULL. */
BdObject *bd_object_find(const char *id);
/* Same, only when its type implements 'kind'; else NULL. */
BdObject *bd_object_find_kind(const char *id, const char *kind);
gboolean bd_object_is_kind(BdObject *obj, const char *kind);
BdObject *bd_object_ref(BdObject *obj);
void bd_object_unref(BdObject *obj);
/* A user blocks object-del until it goes: a running NBD server of its
 * tls-creds, for example. */
void bd_object_use(BdObject *obj);
void bd_object_unuse(BdObject *obj);

/* The ids in the table (a new array of new strings). */
GPtrArray *bd_object_list_ids(void);

/* Main thread, at exit: drop every object. */
void bd_objects_cleanup(void);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdObject, bd_object_unref)

#endif
