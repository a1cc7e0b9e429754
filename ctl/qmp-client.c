/* SPDX-License-Identifier: MIT */
/* A small blocking QMP client over a unix socket (see qmp-client.h).
 * QMP sends one JSON object per line, so input is split at newlines.
 *
 * Thread model: one client per thread; nothing shared.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/qmp-client.h"

struct BdQmpClient {
    int fd;
    GString *in;            /* bytes read, not yet a whole line */
    GQueue events;          /* JsonNode * */
    JsonNode *greeting;
    guint64 next_id;
};

G_DEFINE_QUARK(bd-qmp-error-quark, bd_qmp_error)

/* Read until a whole line is there; its object node, or NULL on EOF,
 * time-out (*timed_out) or error. */
static JsonNode *read_message(BdQmpClient *c, int timeout_ms,
                              gboolean *timed_out, GError **errp)
{
    gint64 deadline = timeout_ms < 0 ? -1
                      : g_get_monotonic_time() + timeout_ms * 1000ll;

    *timed_out = FALSE;
    for (;;) {
        char *nl = memchr(c->in->str, '\n', c->in->len);
        if (nl) {
            gsize len = nl - c->in->str + 1;
            g_autofree char *line = g_strndup(c->in->str, len);
            g_autoptr(JsonParser) parser = json_parser_new();
            g_autoptr(GError) err = NULL;

            g_string_erase(c->in, 0, len);
            g_strstrip(line);
            if (!*line) {
                continue;
            }
            if (!json_parser_load_from_data(parser, line, -1, &err) ||
                !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
                g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                            "the daemon sent something that is not a QMP "
                            "message: %s", line);
                return NULL;
            }
            return json_node_copy(json_parser_get_root(parser));
        }

        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int wait = -1;
        if (deadline >= 0) {
            gint64 left = deadline - g_get_monotonic_time();
            if (left <= 0) {
                *timed_out = TRUE;
                return NULL;
            }
            wait = (int)((left + 999) / 1000);
        }
        int n = poll(&p, 1, wait);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0) {
            *timed_out = TRUE;
            return NULL;
        }
        char buf[65536];
        ssize_t got = read(c->fd, buf, sizeof(buf));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "the daemon closed the connection");
            return NULL;
        }
        g_string_append_len(c->in, buf, got);
    }
}

static gboolean send_text(BdQmpClient *c, const char *text, GError **errp)
{
    gsize len = strlen(text), done = 0;

    while (done < len) {
        ssize_t n = send(c->fd, text + done, len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "the daemon closed the connection");
            return FALSE;
        }
        done += n;
    }
    return TRUE;
}

BdQmpClient *bd_qmp_client_connect(const char *path, GError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    g_autoptr(BdQmpClient) c = g_new0(BdQmpClient, 1);
    g_autoptr(JsonNode) ret = NULL;
    gboolean timed_out;

    c->fd = -1;
    c->in = g_string_new(NULL);
    g_queue_init(&c->events);
    if (strlen(path) >= sizeof(sa.sun_path)) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_CONNECT,
                    "socket path too long: %s", path);
        return NULL;
    }
    strcpy(sa.sun_path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 ||
        connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_CONNECT,
                    "cannot reach blockd at %s: %s (is the daemon running "
                    "with --monitor on that socket?)", path,
                    g_strerror(errno));
        return NULL;
    }
    c->greeting = read_message(c, 10000, &timed_out, errp);
    if (!c->greeting ||
        !json_object_has_member(json_node_get_object(c->greeting), "QMP")) {
        if (errp && !*errp) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "%s does not greet as a QMP monitor", path);
        }
        return NULL;
    }
    ret = bd_qmp_client_execute(c, "qmp_capabilities", NULL, NULL, errp);
    if (!ret) {
        return NULL;
    }
    return g_steal_pointer(&c);
}

void bd_qmp_client_free(BdQmpClient *c)
{
    if (!c) {
        return;
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    g_string_free(c->in, TRUE);
    g_queue_clear_full(&c->events, (GDestroyNotify)json_node_unref);
    if (c->greeting) {
        json_node_unref(c->greeting);
    }
    g_free(c);
}

JsonObject *bd_qmp_client_greeting(BdQmpClient *c)
{
    return json_object_get_object_member(json_node_get_object(c->greeting),
                                         "QMP");
}

JsonNode *bd_qmp_client_execute(BdQmpClient *c, const char *command,
                                JsonNode *args, char **error_class,
                                GError **errp)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) req = NULL;
    g_autofree char *id = g_strdup_printf("blockctl-%" G_GUINT64_FORMAT,
                                          ++c->next_id);
    g_autofree char *text = NULL;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, command);
    if (args) {
        json_builder_set_member_name(b, "arguments");
        json_builder_add_value(b, json_node_copy(args));
    }
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, id);
    json_builder_end_object(b);
    req = json_builder_get_root(b);
    json_generator_set_root(gen, req);
    text = json_generator_to_data(gen, NULL);
    if (!send_text(c, text, errp) || !send_text(c, "\n", errp)) {
        return NULL;
    }
    for (;;) {
        gboolean timed_out;
        JsonNode *msg = read_message(c, -1, &timed_out, errp);
        JsonObject *o;

        if (!msg) {
            return NULL;
        }
        o = json_node_get_object(msg);
        if (json_object_has_member(o, "event")) {
            g_queue_push_tail(&c->events, msg);
            continue;
        }
        if (g_strcmp0(json_object_get_string_member_with_default(o, "id",
                                                                 ""),
                      id) != 0) {
            json_node_unref(msg);
            continue;
        }
        if (json_object_has_member(o, "error")) {
            JsonObject *e = json_object_get_object_member(o, "error");
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_COMMAND, "%s",
                        json_object_get_string_member_with_default(
                            e, "desc", "unknown error"));
            if (error_class) {
                *error_class = g_strdup(
                    json_object_get_string_member_with_default(
                        e, "class", "GenericError"));
            }
            json_node_unref(msg);
            return NULL;
        }
        JsonNode *ret = json_object_get_member(o, "return");
        ret = ret ? json_node_copy(ret) : json_node_new(JSON_NODE_NULL);
        json_node_unref(msg);
        return ret;
    }
}

JsonNode *bd_qmp_client_next_event(BdQmpClient *c, int timeout_ms,
                                   GError **errp)
{
    gboolean timed_out;

    if (!g_queue_is_empty(&c->events)) {
        return g_queue_pop_head(&c->events);
    }
    for (;;) {
        JsonNode *msg = read_message(c, timeout_ms, &timed_out, errp);
        if (!msg) {
            return NULL;
        }
        if (json_object_has_member(json_node_get_object(msg), "event")) {
            return msg;
        }
        json_node_unref(msg);
    }
}
