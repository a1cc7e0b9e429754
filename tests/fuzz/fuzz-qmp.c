/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the QMP input path.  The bytes are a monitor's
 * input stream: split into JSON values (json-stream.c, with its resets
 * on 0xFF and control characters), parsed, and each request checked as
 * the dispatcher does (shape, command lookup, arguments validated along
 * the command's schema, for every command there is).  Requests that
 * pass validation run only when the command cannot change the process
 * (queries and QOM reads over a small fixed graph): anything else would
 * make the next input's outcome depend on this one's, or touch files. */
#include <string.h>

#include "control/input.h"
#include "control/json-stream.h"
#include "control/qmp-int.h"
#include "tests/fuzz/fuzz-common.h"

static BdQmpState session = { .negotiated = TRUE };

static gboolean runs_safely(const char *name)
{
    static const char *const reads[] = {
        "qom-list", "qom-get", "qom-list-types", "qom-list-properties",
        "x-debug-query-block-graph", "qmp_capabilities",
    };

    if (g_str_has_prefix(name, "query-") ||
        g_str_has_prefix(name, "x-query-")) {
        return TRUE;
    }
    for (gsize i = 0; i < G_N_ELEMENTS(reads); i++) {
        if (strcmp(name, reads[i]) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

/* Whether the dispatcher would stop before the command's handler. */
static gboolean refused_before_handler(JsonObject *req)
{
    const char *name = NULL;
    JsonNode *exec = json_object_get_member(req, "execute");
    const BdQmpCommand *cmd;
    JsonNode *args;
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) v = NULL;
    g_autoptr(JsonNode) empty = NULL;

    if (!exec || !JSON_NODE_HOLDS_VALUE(exec) ||
        json_node_get_value_type(exec) != G_TYPE_STRING ||
        json_object_has_member(req, "exec-oob")) {
        return TRUE;
    }
    name = json_node_get_string(exec);
    cmd = bd_qmp_find(name);
    if (!cmd || runs_safely(name)) {
        return TRUE;
    }
    args = json_object_get_member(req, "arguments");
    if (!args) {
        empty = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(empty, json_object_new());
        args = empty;
    }
    if (!cmd->args) {
        return !JSON_NODE_HOLDS_OBJECT(args) ||
               json_object_get_size(json_node_get_object(args)) != 0;
    }
    v = bd_validate(cmd->args(), args, FALSE, &err);
    return v == NULL;
}

static void on_value(const char *text, gsize len, const char *error,
                     gpointer opaque)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) req = NULL;
    g_autoptr(JsonNode) reply = NULL;
    g_autofree char *out = NULL;

    if (error || !text) {
        return;
    }
    req = bd_json_parse(text, (gssize)len, &err);
    if (!req) {
        return;
    }
    if (JSON_NODE_HOLDS_OBJECT(req) &&
        !refused_before_handler(json_node_get_object(req))) {
        return;    /* valid, but it would change the process */
    }
    reply = bd_qmp_dispatch(&session, req, NULL, NULL);
    out = bd_json_to_string(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gboolean ready;
    BdJsonStream *stream;

    bd_fuzz_init();
    if (!ready) {
        ready = TRUE;
        /* Something for the queries to report. */
        bd_fuzz_qmp_ok("{\"execute\": \"blockdev-add\", \"arguments\": "
                       "{\"driver\": \"null-co\", \"node-name\": \"n0\", "
                       "\"size\": 1048576}}");
        bd_fuzz_qmp_ok("{\"execute\": \"block-dirty-bitmap-add\", "
                       "\"arguments\": {\"node\": \"n0\", \"name\": \"b0\"}}");
        bd_fuzz_qmp_ok("{\"execute\": \"object-add\", \"arguments\": "
                       "{\"qom-type\": \"throttle-group\", \"id\": \"tg0\", "
                       "\"limits\": {\"iops-total\": 1000}}}");
    }
    stream = bd_json_stream_new(1 << 20, on_value, NULL);
    bd_json_stream_feed(stream, (const char *)data, size);
    bd_json_stream_free(stream);
    return 0;
}
