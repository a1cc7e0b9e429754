/* SPDX-License-Identifier: MIT */
/* The QMP command table and the dispatcher: request shape checks,
 * capability negotiation, argument validation, the call, the reply.
 *
 *   request --> shape check --> negotiated? --> find --> validate args
 *                                                          |
 *   {"return": ..., "id"} / {"id", "error"} <-- handler <--+
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"

static GPtrArray *commands;   /* const BdQmpCommand * */

void bd_qmp_register(const BdQmpCommand *cmds)
{
    BD_GLOBAL_STATE_CODE();

    if (!commands) {
        commands = g_ptr_array_new();
    }
    for (const BdQmpCommand *c = cmds; c->name; c++) {
        g_ptr_array_add(commands, (gpointer)c);
    }
}

const BdQmpCommand *bd_qmp_find(const char *name)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; commands && i < commands->len; i++) {
        const BdQmpCommand *c = commands->pdata[i];
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

GPtrArray *bd_qmp_commands(void)
{
    BD_GLOBAL_STATE_CODE();

    if (!commands) {
        commands = g_ptr_array_new();
    }
    return commands;
}

static const char *error_class(const GError *err)
{
    if (err->domain == BD_ERROR) {
        switch ((BdErrorCode)err->code) {
        case BD_ERROR_DEVICE_NOT_FOUND:
            return "DeviceNotFound";
        case BD_ERROR_COMMAND_NOT_FOUND:
            return "CommandNotFound";
        case BD_ERROR_DEVICE_NOT_ACTIVE:
            return "DeviceNotActive";
        case BD_ERROR_GENERIC:
        case BD_ERROR_CHAIN_LOOP:
            break;
        }
    }
    return "GenericError";
}

JsonNode *bd_qmp_error_reply(const GError *err, JsonNode *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_set_member_name(b, "error");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "class");
    json_builder_add_string_value(b, error_class(err));
    /* A message's lines after the first are QEMU's hints
     * (error_append_hint: "Is another process using the image ...?"),
     * which the command line shows and QMP does not. */
    const char *nl = strchr(err->message, '\n');
    g_autofree char *desc = g_strndup(err->message,
                                      nl ? (gsize)(nl - err->message)
                                         : strlen(err->message));
    json_builder_set_member_name(b, "desc");
    json_builder_add_string_value(b, desc);
    json_builder_end_object(b);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static JsonNode *return_reply(JsonNode *ret, JsonNode *id)
{
    JsonObject *obj = json_object_new();
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_object_set_member(obj, "return", ret);
    if (id) {
        json_object_set_member(obj, "id", json_node_copy(id));
    }
    json_node_take_object(node, obj);
    return node;
}

/* QEMU's checks on the request object itself. */
static gboolean check_request(BdQmpState *st, JsonObject *req,
                              const char **name, gboolean *oob,
                              GError **errp)
{
    g_autoptr(GList) keys = json_object_get_members(req);
    const char *exec = NULL, *exec_oob = NULL;

    for (GList *l = keys; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(req, k);
        gboolean is_str = JSON_NODE_HOLDS_VALUE(v) &&
                          json_node_get_value_type(v) == G_TYPE_STRING;
        if (strcmp(k, "execute") == 0 ||
            (st->oob && strcmp(k, "exec-oob") == 0)) {
            if (!is_str) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "QMP input member '%s' must be a string", k);
                return FALSE;
            }
            *(k[4] == '-' ? &exec_oob : &exec) = json_node_get_string(v);
        } else if (strcmp(k, "arguments") == 0) {
            if (!JSON_NODE_HOLDS_OBJECT(v)) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "QMP input member 'arguments' must be an object");
                return FALSE;
            }
        } else if (strcmp(k, "id") != 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "QMP input member '%s' is unexpected", k);
            return FALSE;
        }
    }
    if (exec && exec_oob) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "QMP input member 'execute' clashes with 'exec-oob'");
        return FALSE;
    }
    if (!exec && !exec_oob) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "QMP input lacks member 'execute'");
        return FALSE;
    }
    *name = exec ? exec : exec_oob;
    *oob = exec_oob != NULL;
    return TRUE;
}

struct BdQmpPending {
    JsonNode *id;           /* the request's, or NULL */
    BdQmpReplyFn later;
    gpointer opaque;
    JsonNode *reply;        /* set by bd_qmp_pending_done */
};

static gboolean pending_deliver(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdQmpPending *p = opaque;

    p->later(g_steal_pointer(&p->reply), p->opaque);
    if (p->id) {
        json_node_unref(p->id);
    }
    g_free(p);
    return G_SOURCE_REMOVE;
}

void bd_qmp_pending_done(BdQmpPending *p, JsonNode *ret, GError *err)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(!p->reply);
    if (err) {
        p->reply = bd_qmp_error_reply(err, p->id);
        g_error_free(err);
        if (ret) {
            json_node_unref(ret);
        }
    } else {
        if (!ret) {
            ret = json_node_new(JSON_NODE_OBJECT);
            json_node_take_object(ret, json_object_new());
        }
        p->reply = return_reply(ret, p->id);
    }
    g_idle_add(pending_deliver, p);
}

/* NULL with *pending set: the command finishes later (afn). */
static JsonNode *run(BdQmpState *st, JsonObject *req, BdQmpReplyFn later,
                     gpointer opaque, gboolean *pending, GError **errp)
{
    const char *name;
    gboolean oob;

    if (!check_request(st, req, &name, &oob, errp)) {
        return NULL;
    }
    gboolean is_caps = strcmp(name, "qmp_capabilities") == 0;
    if (!st->negotiated && !is_caps) {
        g_set_error(errp, BD_ERROR, BD_ERROR_COMMAND_NOT_FOUND,
                    "Expecting capabilities negotiation with "
                    "'qmp_capabilities'");
        return NULL;
    }
    const BdQmpCommand *cmd = bd_qmp_find(name);
    if (!cmd) {
        g_set_error(errp, BD_ERROR, BD_ERROR_COMMAND_NOT_FOUND,
                    "The command %s has not been found", name);
        return NULL;
    }
    if (oob) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The command %s does not support OOB", name);
        return NULL;
    }

    /* Arguments: validated against the command's schema; a command
     * without arguments takes only an empty object. */
    JsonNode *args = json_object_get_member(req, "arguments");
    g_autoptr(JsonNode) empty = NULL;
    if (!args) {
        empty = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(empty, json_object_new());
        args = empty;
    }
    static const BdSchemaType no_args = { .name = "q_empty",
                                          .kind = BD_SCHEMA_OBJECT };
    const BdSchemaType *schema = cmd->args ? cmd->args() : &no_args;
    g_autoptr(GVariant) v = bd_validate(schema, args, FALSE, errp);
    if (!v) {
        return NULL;
    }

    if (is_caps && st->negotiated) {
        g_set_error(errp, BD_ERROR, BD_ERROR_COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command "
                    "ignored");
        return NULL;
    }

    if (cmd->afn && later && !is_caps) {
        BdQmpPending *p = g_new0(BdQmpPending, 1);
        JsonNode *id = json_object_get_member(req, "id");

        p->id = id ? json_node_copy(id) : NULL;
        p->later = later;
        p->opaque = opaque;
        if (cmd->afn(v, p)) {
            *pending = TRUE;
            return NULL;
        }
        if (p->id) {
            json_node_unref(p->id);
        }
        g_free(p);
    }

    JsonNode *ret = NULL;
    if (!cmd->fn(v, &ret, errp)) {
        if (ret) {
            json_node_unref(ret);
        }
        return NULL;
    }
    if (is_caps) {
        st->negotiated = TRUE;
        st->oob = bd_qmp_caps_enable_oob(v);
    }
    if (!ret) {
        ret = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(ret, json_object_new());
    }
    return ret;
}

JsonNode *bd_qmp_dispatch(BdQmpState *st, JsonNode *request,
                          BdQmpReplyFn later, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;

    if (!JSON_NODE_HOLDS_OBJECT(request)) {
        g_set_error(&err, BD_ERROR, BD_ERROR_GENERIC,
                    "QMP input must be a JSON object");
        return bd_qmp_error_reply(err, NULL);
    }
    JsonObject *req = json_node_get_object(request);
    JsonNode *id = json_object_get_member(req, "id");
    gboolean pending = FALSE;
    JsonNode *ret = run(st, req, later, opaque, &pending, &err);

    if (pending) {
        return NULL;
    }
    if (!ret) {
        return bd_qmp_error_reply(err, id);
    }
    return return_reply(ret, id);
}
