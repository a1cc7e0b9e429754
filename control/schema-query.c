/* SPDX-License-Identifier: MIT */
/* query-qmp-schema: the SchemaInfo list (qapi/introspect.json) built
 * from the same BdSchemaType descriptions that validate the commands,
 * so it describes exactly what blockd implements.
 *
 * As QEMU does, non-builtin type names are masked as numbers ("0" is
 * the empty object), every integer type shows as "int", and arrays are
 * named "[ELEMENT]".
 *
 * Thread model: main thread only.
 */
#include "control/qmp-int.h"
#include "graph/main-thread.h"
#include "graph/node.h"

typedef struct {
    GHashTable *names;     /* const BdSchemaType * -> char * */
    GHashTable *emitted;   /* names already in 'out' */
    JsonArray *out;
    guint next;
} Introspect;

static const char *type_name(Introspect *in, const BdSchemaType *t);

static const BdSchemaType empty_object = { .name = "q_empty",
                                           .kind = BD_SCHEMA_OBJECT };

static void emit(Introspect *in, const char *name, JsonObject *info,
                 const char *meta)
{
    json_object_set_string_member(info, "name", name);
    json_object_set_string_member(info, "meta-type", meta);
    json_array_add_object_element(in->out, info);
}

static const char *builtin(Introspect *in, const char *name,
                           const char *json_type)
{
    if (!g_hash_table_contains(in->emitted, name)) {
        JsonObject *o = json_object_new();
        g_hash_table_add(in->emitted, g_strdup(name));
        json_object_set_string_member(o, "json-type", json_type);
        emit(in, name, o, "builtin");
    }
    return name;
}

static JsonArray *members_of(Introspect *in, const BdSchemaField *fields)
{
    JsonArray *arr = json_array_new();

    for (const BdSchemaField *f = fields; f && f->name; f++) {
        JsonObject *m = json_object_new();
        json_object_set_string_member(m, "name", f->name);
        json_object_set_string_member(m, "type", type_name(in, f->type));
        if (f->optional) {
            json_object_set_null_member(m, "default");
        }
        json_array_add_object_element(arr, m);
    }
    return arr;
}

static void describe(Introspect *in, const BdSchemaType *t, const char *name)
{
    JsonObject *o = json_object_new();

    switch (t->kind) {
    case BD_SCHEMA_ENUM: {
        JsonArray *values = json_array_new();
        JsonArray *members = json_array_new();
        for (guint i = 0; t->enum_values && t->enum_values[i]; i++) {
            JsonObject *m = json_object_new();
            json_array_add_string_element(values, t->enum_values[i]);
            json_object_set_string_member(m, "name", t->enum_values[i]);
            json_array_add_object_element(members, m);
        }
        json_object_set_array_member(o, "members", members);
        json_object_set_array_member(o, "values", values);
        emit(in, name, o, "enum");
        return;
    }
    case BD_SCHEMA_OBJECT:
    case BD_SCHEMA_UNION:
        json_object_set_array_member(o, "members", members_of(in, t->fields));
        if (t->kind == BD_SCHEMA_UNION && t->discriminator) {
            JsonArray *vars = json_array_new();
            json_object_set_string_member(o, "tag", t->discriminator);
            for (const BdSchemaVariant *v = t->variants; v && v->value; v++) {
                JsonObject *vo = json_object_new();
                json_object_set_string_member(vo, "case", v->value);
                json_object_set_string_member(vo, "type",
                                              type_name(in, v->type));
                json_array_add_object_element(vars, vo);
            }
            json_object_set_array_member(o, "variants", vars);
        }
        emit(in, name, o, "object");
        return;
    case BD_SCHEMA_BLOCKDEV_REF:
    case BD_SCHEMA_BLOCKDEV_REF_OR_NULL:
    case BD_SCHEMA_ALTERNATE: {
        JsonArray *members = json_array_new();
        const BdSchemaType *const *alts = t->alternatives;
        gboolean with_null = t->alt_null;
        if (t->kind != BD_SCHEMA_ALTERNATE) {
            static const BdSchemaType *ref_alts[3];
            ref_alts[0] = &bd_schema_str;
            ref_alts[1] = bd_blockdev_options_schema();
            alts = ref_alts;
            with_null = t->kind == BD_SCHEMA_BLOCKDEV_REF_OR_NULL;
        }
        for (guint i = 0; alts && alts[i]; i++) {
            JsonObject *m = json_object_new();
            json_object_set_string_member(m, "type", type_name(in, alts[i]));
            json_array_add_object_element(members, m);
        }
        if (with_null) {
            JsonObject *m = json_object_new();
            json_object_set_string_member(m, "type",
                                          builtin(in, "null", "null"));
            json_array_add_object_element(members, m);
        }
        json_object_set_array_member(o, "members", members);
        emit(in, name, o, "alternate");
        return;
    }
    default:
        json_object_unref(o);
        return;
    }
}

static const char *type_name(Introspect *in, const BdSchemaType *t)
{
    switch (t->kind) {
    case BD_SCHEMA_STR:
        return builtin(in, "str", "string");
    case BD_SCHEMA_INT:
    case BD_SCHEMA_UINT:
    case BD_SCHEMA_SIZE:
        return builtin(in, "int", "int");
    case BD_SCHEMA_BOOL:
        return builtin(in, "bool", "boolean");
    case BD_SCHEMA_NUMBER:
        return builtin(in, "number", "number");
    case BD_SCHEMA_ANY:
        return builtin(in, "any", "value");
    default:
        break;
    }

    const char *known = g_hash_table_lookup(in->names, t);
    if (known) {
        return known;
    }
    if (t->kind == BD_SCHEMA_LIST) {
        const char *elt = type_name(in, t->element);
        char *name = g_strdup_printf("[%s]", elt);
        g_hash_table_insert(in->names, (gpointer)t, name);
        if (!g_hash_table_contains(in->emitted, name)) {
            JsonObject *o = json_object_new();
            g_hash_table_add(in->emitted, g_strdup(name));
            json_object_set_string_member(o, "element-type", elt);
            emit(in, name, o, "array");
        }
        return name;
    }
    /* Named before describing, so recursive types terminate. */
    char *name = g_strdup_printf("%u", in->next++);
    g_hash_table_insert(in->names, (gpointer)t, name);
    describe(in, t, name);
    return name;
}

/* The commands' features, as qemu-storage-daemon 7.2 lists them; every
 * "x-" command is 'unstable' (QEMU's convention). */
static const struct {
    const char *command, *feature;
} command_features[] = {
    { "blockdev-snapshot", "allow-write-only-overlay" },
    { "drive-backup", "deprecated" },
    { "nbd-server-add", "deprecated" },
    { "nbd-server-remove", "deprecated" },
};

static void command_features_set(JsonObject *o, const char *name)
{
    JsonArray *features = json_array_new();

    for (gsize i = 0; i < G_N_ELEMENTS(command_features); i++) {
        if (strcmp(command_features[i].command, name) == 0) {
            json_array_add_string_element(features,
                                          command_features[i].feature);
        }
    }
    if (g_str_has_prefix(name, "x-")) {
        json_array_add_string_element(features, "unstable");
    }
    if (json_array_get_length(features)) {
        json_object_set_array_member(o, "features", features);
    } else {
        json_array_unref(features);
    }
}

static void command_info(Introspect *in, const BdQmpCommand *c)
{
    JsonObject *o = json_object_new();
    const BdSchemaType *args = c->args ? c->args() : &empty_object;
    const BdSchemaType *ret = c->ret ? c->ret() : &empty_object;

    json_object_set_string_member(o, "arg-type", type_name(in, args));
    json_object_set_string_member(o, "ret-type", type_name(in, ret));
    command_features_set(o, c->name);
    emit(in, c->name, o, "command");
}

static void event_info(Introspect *in, const BdQmpEvent *e)
{
    JsonObject *o = json_object_new();
    const BdSchemaType *data = e->data ? e->data() : &empty_object;

    json_object_set_string_member(o, "arg-type", type_name(in, data));
    emit(in, e->name, o, "event");
}

JsonNode *bd_qmp_schema_info(void)
{
    BD_GLOBAL_STATE_CODE();

    Introspect in = {
        .names = g_hash_table_new_full(NULL, NULL, NULL, g_free),
        .emitted = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                         NULL),
        .out = json_array_new(),
    };
    GPtrArray *cmds = bd_qmp_commands();

    type_name(&in, &empty_object);          /* "0", as in QEMU */
    for (guint i = 0; i < cmds->len; i++) {
        command_info(&in, cmds->pdata[i]);
    }
    for (const BdQmpEvent *e = bd_qmp_events(); e->name; e++) {
        event_info(&in, e);
    }

    JsonNode *node = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(node, in.out);
    g_hash_table_unref(in.names);
    g_hash_table_unref(in.emitted);
    return node;
}
