/* SPDX-License-Identifier: MIT */
/* QMP monitors and their sessions: greeting, reading the byte stream
 * into requests, replies and events written back without ever blocking
 * the main loop.
 *
 *   accept --> greeting --> read --> json-stream --> dispatch --> reply
 *                                                   events ---> (negotiated)
 *
 * A command that goes pending (BdQmpAsyncHandler) pauses its session's
 * reading: requests already read wait in 'queued', and run in order
 * once its reply is out.  The pending command holds a reference to the
 * session, so a client that hangs up meanwhile frees nothing early.
 *
 * Thread model: main thread only.
 */
#include <malloc.h>
#include <string.h>

#include "control/json-stream.h"
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"

#define MAX_REQUEST_SIZE (64u << 20)   /* as QEMU's token size limit */
#define MAX_OUTPUT_BACKLOG (64u << 20) /* a client not reading is dropped */
#define OUT_KEEP (64u << 10)           /* output buffer kept between replies */
/* Seconds after a command before free heap goes back to the system. */
#define HEAP_TRIM_DELAY 2
/* Events wait for a client only while its backlog is below this: a
 * monitor that never reads loses events (logged), not the daemon's
 * memory, and keeps its session. */
#define MAX_EVENT_BACKLOG (1u << 20)

typedef struct {
    char *chardev;
    gboolean pretty;
} BdMonitor;

typedef struct {
    BdMonitor *mon;
    GSocketConnection *conn;
    GSocket *sock;
    GSource *in_src;
    GSource *out_src;
    GString *out;
    BdJsonStream *stream;
    BdQmpState st;
    gboolean dead;
    guint64 events_dropped;    /* since the backlog last went down */
    int refs;              /* the session list's, and a pending command's */
    gboolean pending;      /* a command's reply is still to come */
    GQueue queued;         /* QueuedValue *: read while pending */
} BdSession;

/* A complete JSON value read while a command was pending. */
typedef struct {
    char *text;
    gsize len;
    char *error;           /* a lexical error instead */
} QueuedValue;

static void queued_value_free(gpointer opaque)
{
    QueuedValue *v = opaque;

    g_free(v->text);
    g_free(v->error);
    g_free(v);
}

static GPtrArray *monitors;
static GPtrArray *sessions;

static void session_unref(gpointer opaque)
{
    BdSession *s = opaque;

    if (--s->refs > 0) {
        return;
    }
    g_queue_clear_full(&s->queued, queued_value_free);
    bd_json_stream_free(s->stream);
    g_string_free(s->out, TRUE);
    g_object_unref(s->conn);
    g_free(s);
}

static gboolean idle_done(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    return G_SOURCE_REMOVE;
}

static void session_close(BdSession *s)
{
    if (s->dead) {
        return;
    }
    s->dead = TRUE;
    if (s->in_src) {
        g_source_destroy(s->in_src);
        g_source_unref(s->in_src);
        s->in_src = NULL;
    }
    if (s->out_src) {
        g_source_destroy(s->out_src);
        g_source_unref(s->out_src);
        s->out_src = NULL;
    }
    g_io_stream_close(G_IO_STREAM(s->conn), NULL, NULL);
    g_ptr_array_remove(sessions, s);
    bd_chardev_session_closed(s->mon->chardev);
    /* Freed from the main loop: we may be inside one of its callbacks. */
    g_idle_add_full(G_PRIORITY_DEFAULT, idle_done, s, session_unref);
}

static gboolean on_writable(GSocket *sock, GIOCondition cond, gpointer opaque);

static void session_flush(BdSession *s)
{
    while (!s->dead && s->out->len) {
        g_autoptr(GError) err = NULL;
        gssize n = g_socket_send(s->sock, s->out->str, s->out->len, NULL,
                                 &err);
        if (n < 0) {
            if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
                break;
            }
            session_close(s);
            return;
        }
        g_string_erase(s->out, 0, n);
    }
    /* A GString keeps its capacity: after a large reply (a query over
     * thousands of nodes) the session would hold that much for ever. */
    if (!s->dead && s->out->len == 0 && s->out->allocated_len > OUT_KEEP) {
        g_string_free(s->out, TRUE);
        s->out = g_string_new(NULL);
    }
    if (s->dead) {
        return;
    }
    if (s->events_dropped && s->out->len < MAX_EVENT_BACKLOG / 2) {
        g_message("monitor '%s': client reads again; %" G_GUINT64_FORMAT
                  " events were dropped for it", s->mon->chardev,
                  s->events_dropped);
        s->events_dropped = 0;
    }
    if (s->out->len && !s->out_src) {
        s->out_src = g_socket_create_source(s->sock, G_IO_OUT, NULL);
        g_source_set_callback(s->out_src, G_SOURCE_FUNC(on_writable), s, NULL);
        g_source_attach(s->out_src, NULL);
    } else if (!s->out->len && s->out_src) {
        g_source_destroy(s->out_src);
        g_source_unref(s->out_src);
        s->out_src = NULL;
    }
}

static gboolean on_writable(GSocket *sock, GIOCondition cond, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdSession *s = opaque;
    GSource *src = s->out_src;

    g_source_ref(src);
    session_flush(s);
    gboolean keep = !s->dead && s->out_src == src;
    g_source_unref(src);
    return keep ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static void session_send_node(BdSession *s, JsonNode *node)
{
    if (s->dead) {
        return;
    }
    g_autofree char *text = NULL;
    if (s->mon->pretty) {
        /* QEMU's monitor turns every "\n" into "\r\n". */
        g_autofree char *pretty = bd_json_to_string_pretty(node);
        g_auto(GStrv) lines = g_strsplit(pretty, "\n", -1);
        text = g_strjoinv("\r\n", lines);
    } else {
        text = bd_json_to_string(node);
    }
    g_string_append(s->out, text);
    g_string_append(s->out, "\r\n");
    if (s->out->len > MAX_OUTPUT_BACKLOG) {
        g_message("monitor '%s': client does not read its replies; "
                  "closing the session", s->mon->chardev);
        session_close(s);
        return;
    }
    session_flush(s);
}

static void session_send_error(BdSession *s, const char *msg)
{
    g_autoptr(GError) err = g_error_new_literal(BD_ERROR, BD_ERROR_GENERIC,
                                                msg);
    g_autoptr(JsonNode) reply = bd_qmp_error_reply(err, NULL);
    session_send_node(s, reply);
}

static GSource *heap_trim_source;

static gboolean trim_heap(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    g_clear_pointer(&heap_trim_source, g_source_unref);
    malloc_trim(0);
    return G_SOURCE_REMOVE;
}

/* Commands build and drop large structures (a query's reply, a deleted
 * graph); glibc keeps the freed heap, so the daemon's memory would stay
 * at its peak.  Give it back once the commands have stopped for
 * HEAP_TRIM_DELAY seconds: a trim of a large heap takes milliseconds,
 * which must not land in the middle of a burst of commands. */
static void schedule_heap_trim(void)
{
    gint64 when = g_get_monotonic_time() + HEAP_TRIM_DELAY * G_USEC_PER_SEC;

    if (heap_trim_source) {
        g_source_set_ready_time(heap_trim_source, when);
        return;
    }
    heap_trim_source = g_timeout_source_new_seconds(HEAP_TRIM_DELAY);
    g_source_set_ready_time(heap_trim_source, when);
    g_source_set_callback(heap_trim_source, trim_heap, NULL, NULL);
    g_source_attach(heap_trim_source, NULL);
}

static gboolean on_readable(GSocket *sock, GIOCondition cond,
                            gpointer opaque);

static void input_pause(BdSession *s)
{
    if (s->in_src) {
        g_source_destroy(s->in_src);
        g_source_unref(s->in_src);
        s->in_src = NULL;
    }
}

static void input_resume(BdSession *s)
{
    if (s->dead || s->in_src) {
        return;
    }
    s->in_src = g_socket_create_source(s->sock, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                       NULL);
    g_source_set_callback(s->in_src, G_SOURCE_FUNC(on_readable), s, NULL);
    g_source_attach(s->in_src, NULL);
}

static void handle_value(BdSession *s, const char *text, gsize len,
                         const char *error);

/* A pending command's reply (the dispatcher's BdQmpReplyFn). */
static void reply_later(JsonNode *reply, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdSession *s = opaque;

    session_send_node(s, reply);
    json_node_unref(reply);
    schedule_heap_trim();
    s->pending = FALSE;
    while (!s->dead && !s->pending && !g_queue_is_empty(&s->queued)) {
        QueuedValue *v = g_queue_pop_head(&s->queued);
        handle_value(s, v->text, v->len, v->error);
        queued_value_free(v);
    }
    if (!s->pending) {
        input_resume(s);
    }
    session_unref(s);
}

static void handle_value(BdSession *s, const char *text, gsize len,
                         const char *error)
{
    g_autoptr(GError) err = NULL;

    if (s->dead) {
        return;
    }
    if (error) {
        session_send_error(s, error);
        return;
    }
    g_autoptr(JsonNode) req = bd_json_parse(text, len, &err);
    if (!req) {
        session_send_error(s, err->message);
        return;
    }
    g_autoptr(JsonNode) reply = bd_qmp_dispatch(&s->st, req, reply_later, s);
    if (!reply) {
        s->pending = TRUE;
        s->refs++;
        input_pause(s);
        return;
    }
    session_send_node(s, reply);
    schedule_heap_trim();
}

/* One complete top-level JSON value (or a lexical error) arrived. */
static void on_value(const char *text, gsize len, const char *error,
                     gpointer opaque)
{
    BdSession *s = opaque;

    if (s->dead) {
        return;
    }
    if (s->pending) {
        QueuedValue *v = g_new0(QueuedValue, 1);
        v->text = error ? NULL : g_strndup(text, len);
        v->len = len;
        v->error = g_strdup(error);
        g_queue_push_tail(&s->queued, v);
        return;
    }
    handle_value(s, text, len, error);
}

static gboolean on_readable(GSocket *sock, GIOCondition cond, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdSession *s = opaque;
    char buf[65536];

    for (;;) {
        g_autoptr(GError) err = NULL;
        gssize n = g_socket_receive(sock, buf, sizeof(buf), NULL, &err);
        if (n < 0 &&
            g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
            return G_SOURCE_CONTINUE;
        }
        if (n <= 0) {
            session_close(s);
            return G_SOURCE_REMOVE;
        }
        bd_json_stream_feed(s->stream, buf, n);
        if (s->dead || !s->in_src) {
            /* Closed, or paused by a pending command. */
            return G_SOURCE_REMOVE;
        }
    }
}

static void on_connection(GSocketConnection *conn, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdSession *s = g_new0(BdSession, 1);

    s->mon = opaque;
    s->conn = g_object_ref(conn);
    s->sock = g_socket_connection_get_socket(conn);
    s->out = g_string_new(NULL);
    s->stream = bd_json_stream_new(MAX_REQUEST_SIZE, on_value, s);
    s->refs = 1;
    g_queue_init(&s->queued);
    g_socket_set_blocking(s->sock, FALSE);
    g_ptr_array_add(sessions, s);

    g_autoptr(JsonNode) greeting = bd_qmp_greeting();
    session_send_node(s, greeting);
    if (s->dead) {
        return;
    }
    input_resume(s);
}

typedef enum { MONITOR_MODE_READLINE, MONITOR_MODE_CONTROL } MonitorMode;

static const char *const monitor_mode_values[] = {
    [MONITOR_MODE_READLINE] = "readline",
    [MONITOR_MODE_CONTROL] = "control",
    NULL };
static const BdSchemaType monitor_mode_type = {
    .name = "MonitorMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = monitor_mode_values };

typedef struct {
    MonitorMode mode;
    gboolean pretty;
    const char *chardev;
} MonitorOptions;

static const BdSchemaField monitor_fields[] = {
    /* Names the monitor in QEMU's device tree, which blockd has not. */
    BD_OPT("id", &bd_schema_str, .flags = BD_FIELD_IGNORED),
    BD_OPT("mode", &monitor_mode_type, BD_AT(MonitorOptions, mode),
           .def.i = MONITOR_MODE_CONTROL),
    BD_OPT("pretty", &bd_schema_bool, BD_AT(MonitorOptions, pretty)),
    BD_FIELD("chardev", &bd_schema_str, BD_AT(MonitorOptions, chardev),
             .def.s = ""),
    { NULL } };
static const BdSchemaType monitor_options_type = {
    .name = "MonitorOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = monitor_fields };

const BdSchemaType *bd_cmd_monitor_options_schema(void)
{
    return &monitor_options_type;
}

/* --monitor's argument validated into 'opts' and read into 'o' (whose
 * chardev points into it). */
static gboolean monitor_parse(const char *arg, GVariant **opts,
                              MonitorOptions *o, GError **errp)
{
    gboolean keyval;
    g_autoptr(JsonNode) node = bd_option_parse(arg, "chardev", &keyval,
                                               errp);
    if (!node) {
        return FALSE;
    }
    *opts = bd_validate(&monitor_options_type, node, keyval, errp);
    if (!*opts) {
        return FALSE;
    }
    bd_schema_decode(monitor_fields, *opts, o);
    if (o->mode != MONITOR_MODE_CONTROL) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Only QMP is supported");
        return FALSE;
    }
    return TRUE;
}

gboolean bd_monitor_check(const char *arg, GError **errp)
{
    g_autoptr(GVariant) opts = NULL;
    MonitorOptions o = { 0 };

    return monitor_parse(arg, &opts, &o, errp);
}

gboolean bd_monitor_add(const char *arg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GVariant) opts = NULL;
    MonitorOptions o = { 0 };

    if (!monitor_parse(arg, &opts, &o, errp)) {
        return FALSE;
    }
    BdMonitor *mon = g_new0(BdMonitor, 1);
    mon->chardev = g_strdup(o.chardev);
    mon->pretty = o.pretty;
    if (!monitors) {
        monitors = g_ptr_array_new();
    }
    if (!sessions) {
        sessions = g_ptr_array_new();
    }
    /* A client may be waiting already (wait=on): sessions must exist. */
    if (!bd_chardev_claim(mon->chardev, on_connection, mon, errp)) {
        g_free(mon->chardev);
        g_free(mon);
        return FALSE;
    }
    g_ptr_array_add(monitors, mon);
    return TRUE;
}

void bd_monitor_broadcast(const char *json_text)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(JsonNode) node = NULL;

    for (guint i = 0; sessions && i < sessions->len; i++) {
        BdSession *s = sessions->pdata[i];
        if (!s->st.negotiated || s->dead) {
            continue;
        }
        if (s->out->len >= MAX_EVENT_BACKLOG) {
            if (s->events_dropped++ == 0) {
                g_message("monitor '%s': client does not read; dropping "
                          "events for it until it does", s->mon->chardev);
            }
            continue;
        }
        if (s->mon->pretty) {
            if (!node) {
                node = bd_json_parse(json_text, -1, NULL);
            }
            if (node) {
                session_send_node(s, node);
            }
            continue;
        }
        g_string_append(s->out, json_text);
        g_string_append(s->out, "\r\n");
        session_flush(s);
    }
}

void bd_monitor_cleanup(void)
{
    BD_GLOBAL_STATE_CODE();

    if (heap_trim_source) {
        g_source_destroy(heap_trim_source);
        g_clear_pointer(&heap_trim_source, g_source_unref);
    }
    /* Give replies already queued (e.g. quit's) a last chance to go. */
    while (sessions && sessions->len) {
        BdSession *s = sessions->pdata[0];
        if (s->out->len) {
            g_socket_set_blocking(s->sock, TRUE);
            g_socket_set_timeout(s->sock, 1);
            g_socket_send(s->sock, s->out->str, s->out->len, NULL, NULL);
            g_string_truncate(s->out, 0);
        }
        session_close(s);
    }
    bd_chardev_cleanup();
    bd_cmd_chardev_cleanup();
    for (guint i = 0; monitors && i < monitors->len; i++) {
        BdMonitor *mon = monitors->pdata[i];
        g_free(mon->chardev);
        g_free(mon);
    }
    g_clear_pointer(&monitors, g_ptr_array_unref);
}
