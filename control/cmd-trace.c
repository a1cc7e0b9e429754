/* SPDX-License-Identifier: MIT */
/* trace-event-get-state and trace-event-set-state (QEMU's qapi/trace.json
 * and trace/qmp.c semantics) over graph/trace.h's events.  blockd has no
 * vCPUs: a 'vcpu' argument is an invalid index, as it would be in a QEMU
 * without that CPU.  Every event is compiled in ("available").
 *
 * Thread model: main thread only.
 */
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/trace.h"

typedef struct {
    const char *name;
    gboolean enable;
    gboolean ignore_unavailable;
    gint64 vcpu;
    gboolean has_vcpu;
} TraceArgs;

#define A(f) BD_AT(TraceArgs, f)
static const BdSchemaField get_fields[] = {
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    BD_OPT("vcpu", &bd_schema_int, A(vcpu), BD_HAS(TraceArgs, vcpu)),
    { NULL } };
static const BdSchemaType get_args = {
    .name = "q_obj_trace-event-get-state-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = get_fields };
static const BdSchemaField set_fields[] = {
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    BD_FIELD("enable", &bd_schema_bool, A(enable)),
    BD_OPT("ignore-unavailable", &bd_schema_bool, A(ignore_unavailable)),
    BD_OPT("vcpu", &bd_schema_int, A(vcpu), BD_HAS(TraceArgs, vcpu)),
    { NULL } };
#undef A
static const BdSchemaType set_args = {
    .name = "q_obj_trace-event-set-state-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = set_fields };

static const char *const state_names[] = {
    "unavailable", "disabled", "enabled", NULL };
static const BdSchemaType state_enum = {
    .name = "TraceEventState", .kind = BD_SCHEMA_ENUM,
    .enum_values = state_names };
static const BdSchemaField info_fields[] = {
    BD_FIELD("name", &bd_schema_str),
    BD_FIELD("state", &state_enum),
    BD_FIELD("vcpu", &bd_schema_bool),
    { NULL } };
static const BdSchemaType info = {
    .name = "TraceEventInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = info_fields };
static const BdSchemaType info_list = {
    .name = "[TraceEventInfo]", .kind = BD_SCHEMA_LIST, .element = &info };

static const BdSchemaType *get_args_fn(void) { return &get_args; }
static const BdSchemaType *set_args_fn(void) { return &set_args; }
static const BdSchemaType *info_list_fn(void) { return &info_list; }

/* QEMU's checks, in its order: the vCPU, then a plain name must exist. */
static gboolean check(const TraceArgs *a, GError **errp)
{
    if (a->has_vcpu) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "invalid vCPU index %u", (unsigned)a->vcpu);
        return FALSE;
    }
    if (!bd_trace_is_pattern(a->name) && bd_trace_find(a->name) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "unknown event \"%s\"", a->name);
        return FALSE;
    }
    return TRUE;
}

static gboolean get_state(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    TraceArgs a = { 0 };
    JsonArray *arr;

    bd_schema_decode(get_fields, args, &a);
    if (!check(&a, errp)) {
        return FALSE;
    }
    arr = json_array_new();
    /* QEMU prepends each match: the last event of the table first. */
    for (int i = BD_TRACE__MAX - 1; i >= 0; i--) {
        JsonObject *o;

        if (!g_pattern_match_simple(a.name, bd_trace_event_name(i))) {
            continue;
        }
        o = json_object_new();
        json_object_set_string_member(o, "name", bd_trace_event_name(i));
        json_object_set_string_member(o, "state",
                                      bd_trace_enabled(i) ? "enabled"
                                                          : "disabled");
        json_object_set_boolean_member(o, "vcpu", FALSE);
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

static gboolean set_state(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    TraceArgs a = { 0 };

    (void)ret;
    bd_schema_decode(set_fields, args, &a);
    if (!check(&a, errp)) {
        return FALSE;
    }
    bd_trace_set_pattern(a.name, a.enable);
    return TRUE;
}

static const BdQmpCommand trace_commands[] = {
    { "trace-event-get-state", get_args_fn, FALSE, info_list_fn, get_state },
    { "trace-event-set-state", set_args_fn, FALSE, NULL, set_state },
    { NULL } };

void bd_cmd_trace_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(trace_commands);
}
