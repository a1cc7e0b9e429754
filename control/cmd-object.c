/* SPDX-License-Identifier: MIT */
/* User-creatable objects: object-add, object-del and --object.
 *
 * QEMU keeps these objects as children of the /objects container; the
 * ids share one namespace whatever the type.  Throttle groups live in
 * formats/ (this file keeps their ids); every other type is in
 * objects/'s registry, which creates, finds and deletes them.
 *
 * Thread model: main thread only.
 */
#include <stdlib.h>
#include <string.h>
#include "control/qmp-int.h"
#include "formats/throttle-group.h"
#include "export/export.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "objects/object.h"
#include "objects/iothread.h"

/* --- schemas (qapi/qom.json, qapi/block-core.json) --- */

typedef struct {
    const char *qom_type;
    const char *id;
} ObjectArgs;

/* ObjectOptions lists throttle-group and every type of objects/'s
 * registry, so it is built when first asked for (after the types are
 * registered) and again should more types come. */
typedef struct {
    guint n_registered;          /* bd_object_types() it was built from */
    const char **type_values;    /* ObjectType, sorted; NULL-terminated */
    BdSchemaVariant *variants;   /* the same order; {NULL}-terminated */
    BdSchemaType type_enum;
    BdSchemaField base[3];
    BdSchemaType options;
} ObjectSchema;

static ObjectSchema *object_schema;

static const BdSchemaField del_fields[] = {
    BD_FIELD("id", &bd_schema_str, BD_AT(ObjectArgs, id), .def.s = ""),
    { NULL } };
static const BdSchemaType del_args = {
    .name = "q_obj_object-del-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = del_fields };

static int compare_variants(const void *a, const void *b)
{
    return strcmp(((const BdSchemaVariant *)a)->value,
                  ((const BdSchemaVariant *)b)->value);
}

static void object_schema_free(ObjectSchema *os)
{
    g_free(os->type_values);
    g_free(os->variants);
    g_free(os);
}

static ObjectSchema *object_schema_new(void)
{
    const BdObjectType *const *types = bd_object_types();
    ObjectSchema *os = g_new0(ObjectSchema, 1);
    guint n = 0;

    while (types[n]) {
        n++;
    }
    os->n_registered = n;
    os->variants = g_new0(BdSchemaVariant, n + 2);
    os->variants[0] = (BdSchemaVariant){ "throttle-group",
                                         &bd_throttle_group_props_type };
    for (guint i = 0; i < n; i++) {
        os->variants[i + 1] = (BdSchemaVariant){ types[i]->name,
                                                 types[i]->props };
    }
    /* QEMU's ObjectType lists the types by name. */
    qsort(os->variants, n + 1, sizeof(*os->variants), compare_variants);
    os->type_values = g_new0(const char *, n + 2);
    for (guint i = 0; i < n + 1; i++) {
        os->type_values[i] = os->variants[i].value;
    }
    os->type_enum = (BdSchemaType){
        .name = "ObjectType", .kind = BD_SCHEMA_ENUM,
        .enum_values = os->type_values };
    /* The qom-type is read as its name, the key of the variants. */
    os->base[0] = (BdSchemaField)BD_FIELD("qom-type", &os->type_enum,
                                          BD_AT(ObjectArgs, qom_type),
                                          .def.s = "");
    os->base[1] = (BdSchemaField)BD_FIELD("id", &bd_schema_str,
                                          BD_AT(ObjectArgs, id),
                                          .def.s = "");
    os->options = (BdSchemaType){
        .name = "ObjectOptions", .kind = BD_SCHEMA_UNION,
        .fields = os->base, .discriminator = "qom-type",
        .variants = os->variants };
    return os;
}

static ObjectSchema *object_schema_get(void)
{
    BD_GLOBAL_STATE_CODE();

    const BdObjectType *const *types = bd_object_types();
    guint n = 0;

    while (types[n]) {
        n++;
    }
    if (!object_schema || object_schema->n_registered != n) {
        g_clear_pointer(&object_schema, object_schema_free);
        object_schema = object_schema_new();
    }
    return object_schema;
}

const BdSchemaType *bd_cmd_object_options_schema(void)
{
    return &object_schema_get()->options;
}

static const BdSchemaType *del_args_fn(void) { return &del_args; }

/* --- throttle groups: the ids formats/ keeps, known here --- */

static GHashTable *throttle_groups;

static GHashTable *throttle_group_ids(void)
{
    if (!throttle_groups) {
        throttle_groups = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                g_free, NULL);
    }
    return throttle_groups;
}

/* One namespace for every object, as QEMU's /objects container. */
static gboolean object_id_free(const char *id, GError **errp)
{
    if (g_hash_table_contains(throttle_group_ids(), id) ||
        bd_object_exists(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "attempt to add duplicate property '%s' to object "
                    "(type 'container')", id);
        return FALSE;
    }
    return TRUE;
}

/* throttle-group: properties, then the id, then the combination, in the
 * order QEMU's object creation checks them. */
static gboolean throttle_group_add(const char *id, GVariant *props,
                                   GError **errp)
{
    BdThrottleConfig cfg;

    bd_throttle_config_init(&cfg);
    if (!bd_throttle_config_from_props(&cfg, props, errp)) {
        return FALSE;
    }
    if (!object_id_free(id, errp)) {
        return FALSE;
    }
    if (!bd_throttle_config_is_valid(&cfg, errp)) {
        return FALSE;
    }
    bd_throttle_group_create(id, &cfg);
    g_hash_table_add(throttle_group_ids(), g_strdup(id));
    return TRUE;
}

/* The other types: the checks of QEMU's property setters, the id, then
 * the object's creation (QEMU's 'complete'). */
static gboolean registered_object_add(const BdObjectType *type,
                                      const char *id, GVariant *props,
                                      GError **errp)
{
    if (type->check && !type->check(props, errp)) {
        return FALSE;
    }
    if (!object_id_free(id, errp)) {
        return FALSE;
    }
    return bd_object_add(type, id, props, errp);
}

gboolean bd_cmd_object_add(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ObjectArgs a = { 0 };
    const BdObjectType *type;

    bd_schema_decode(object_schema_get()->base, options, &a);
    if (!bd_id_wellformed(a.id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'id' expects an identifier");
        return FALSE;
    }
    if (strcmp(a.qom_type, "throttle-group") == 0) {
        return throttle_group_add(a.id, options, errp);
    }
    type = bd_object_type_find(a.qom_type);
    if (!type) {
        /* The schema admits no other type. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'qom-type' does not accept value '%s'",
                    a.qom_type);
        return FALSE;
    }
    return registered_object_add(type, a.id, options, errp);
}

static gboolean object_add(GVariant *args, JsonNode **ret, GError **errp)
{
    return bd_cmd_object_add(args, errp);
}

static gboolean object_del(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ObjectArgs a = { 0 };

    bd_schema_decode(del_fields, args, &a);
    if (!g_hash_table_contains(throttle_group_ids(), a.id)) {
        g_autoptr(BdObject) io = bd_object_find_kind(a.id, BD_IOTHREAD_KIND);

        /* QEMU 7.2 deletes an iothread that nodes still run in and then
         * crashes; blockd refuses with QEMU's in-use text. */
        if (io && bd_export_pool_in_use(((BdIothread *)io)->pool)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "object '%s' is in use, can not be deleted", a.id);
            return FALSE;
        }
        return bd_object_del(a.id, errp);
    }
    if (!bd_throttle_group_delete(a.id, errp)) {
        return FALSE;
    }
    g_hash_table_remove(throttle_group_ids(), a.id);
    return TRUE;
}

static gint compare_ids(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

GPtrArray *bd_cmd_object_ids(void)
{
    BD_GLOBAL_STATE_CODE();

    GPtrArray *ids = bd_object_list_ids();
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, throttle_group_ids());
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        g_ptr_array_add(ids, g_strdup(key));
    }
    g_ptr_array_sort(ids, compare_ids);
    return ids;
}

static const BdQmpCommand object_commands[] = {
    { "object-add", bd_cmd_object_options_schema, TRUE, NULL, object_add },
    { "object-del", del_args_fn, FALSE, NULL, object_del },
    { NULL } };

void bd_cmd_object_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(object_commands);
}
