/* SPDX-License-Identifier: MIT */
/* User-creatable objects: object-add, object-del and --object (today the throttle-group type).
 *
 * QEMU keeps these objects as children of the /objects container; the
 * ids share one namespace whatever the type, so this file keeps the id
 * table and hands each type's properties to its implementation.
 *
 * Thread model: main thread only.
 */
#include "control/qmp-int.h"
#include "formats/throttle-group.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"

/* --- schemas (qapi/qom.json, qapi/block-core.json) --- */

typedef struct {
    const char *qom_type;
    const char *id;
} ObjectArgs;

/* ObjectType; read as its name, the key of the id table. */
static const char *const object_type_values[] = { "throttle-group", NULL };
static const BdSchemaType object_type_enum = {
    .name = "ObjectType", .kind = BD_SCHEMA_ENUM,
    .enum_values = object_type_values };
static const BdSchemaField object_base[] = {
    BD_FIELD("qom-type", &object_type_enum, BD_AT(ObjectArgs, qom_type),
             .def.s = ""),
    BD_FIELD("id", &bd_schema_str, BD_AT(ObjectArgs, id), .def.s = ""),
    { NULL } };
static const BdSchemaVariant object_variants[] = {
    { "throttle-group", &bd_throttle_group_props_type },
    { NULL } };
static const BdSchemaType object_options = {
    .name = "ObjectOptions", .kind = BD_SCHEMA_UNION, .fields = object_base,
    .discriminator = "qom-type", .variants = object_variants };

static const BdSchemaField del_fields[] = {
    BD_FIELD("id", &bd_schema_str, BD_AT(ObjectArgs, id), .def.s = ""),
    { NULL } };
static const BdSchemaType del_args = {
    .name = "q_obj_object-del-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = del_fields };

const BdSchemaType *bd_cmd_object_options_schema(void)
{
    return &object_options;
}

static const BdSchemaType *del_args_fn(void) { return &del_args; }

/* --- the id table: id -> qom-type --- */

static GHashTable *objects;

static GHashTable *object_table(void)
{
    if (!objects) {
        objects = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        g_free);
    }
    return objects;
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
    if (g_hash_table_contains(object_table(), id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "attempt to add duplicate property '%s' to object "
                    "(type 'container')", id);
        return FALSE;
    }
    if (!bd_throttle_config_is_valid(&cfg, errp)) {
        return FALSE;
    }
    bd_throttle_group_create(id, &cfg);
    return TRUE;
}

gboolean bd_cmd_object_add(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ObjectArgs a = { 0 };
    const char *type, *id;

    bd_schema_decode(object_base, options, &a);
    type = a.qom_type;
    id = a.id;

    if (!bd_id_wellformed(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'id' expects an identifier");
        return FALSE;
    }
    if (g_strcmp0(type, "throttle-group") != 0) {
        /* The schema admits no other type. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'qom-type' does not accept value '%s'", type);
        return FALSE;
    }
    if (!throttle_group_add(id, options, errp)) {
        return FALSE;
    }
    g_hash_table_insert(object_table(), g_strdup(id), g_strdup(type));
    return TRUE;
}

static gboolean object_add(GVariant *args, JsonNode **ret, GError **errp)
{
    return bd_cmd_object_add(args, errp);
}

static gboolean object_del(GVariant *args, JsonNode **ret, GError **errp)
{
    ObjectArgs a = { 0 };
    const char *id, *type;

    bd_schema_decode(del_fields, args, &a);
    id = a.id;
    type = g_hash_table_lookup(object_table(), id);

    if (!type) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "object '%s' not found", id);
        return FALSE;
    }
    if (!bd_throttle_group_delete(id, errp)) {
        return FALSE;
    }
    g_hash_table_remove(object_table(), id);
    return TRUE;
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
