/* SPDX-License-Identifier: MIT */
/* Backup sessions: a pull backup's whole fleecing setup, made and torn
 * down as one thing (x-blockd-backup-begin/-end, x-blockd-query-backups).
 *
 *   other exports --> copy-before-write --target--> fleecing target
 *                          |file                   (auto: a temporary
 *                        source                     qcow2, unlinked)
 *                          ^
 *   session export --> snapshot-access (+ bitmap '<since>': the changes
 *   (NBD, read-only)                     since that checkpoint)
 *
 * Begin works in one drained section of the source, so the view, the
 * "changes since" bitmap and the new checkpoint all describe the same
 * instant; any failure undoes every step.  End deletes the export
 * (disconnecting its clients), the view, the filter and the automatic
 * target.  A session also ends when its lease runs out with no client,
 * when its export is deleted by hand, and when the daemon shuts down;
 * BLOCKD_BACKUP_END says which.  BLOCKD_BACKUP_PROGRESS reports the bytes
 * read, at most once a second while they change.
 *
 * An automatic target's file is unlinked as soon as it is open: even a
 * daemon killed mid-session leaves no file behind.
 *
 * Thread model: main thread only (commands, the 1 s tick, shutdown).
 */
#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include "control/qmp-int.h"
#include "export/export.h"
#include "export-nbd/nbd-server.h"
#include "formats/copy-before-write.h"
#include "graph/bitmap.h"
#include "graph/checkpoint.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/events.h"
#include "graph/main-thread.h"

#define SESSION_TICK_SECONDS 1
#define SESSION_END_WAIT_US (10 * G_USEC_PER_SEC)

typedef struct {
    char *id;
    char *node_name;
    char *export_name;
    char *since;                /* checkpoint, NULL: a full backup */
    char *new_checkpoint;       /* taken at begin, or NULL */
    BdNode *source;             /* references, ours */
    BdNode *target;
    gboolean auto_target;
    BdNode *cbw;
    BdNode *access;
    BdDirtyBitmap *changes;     /* on 'access', named 'since' */
    uint64_t dirty_bytes;       /* what the client has to read */
    guint lease_seconds;        /* 0: no lease */
    gint64 alone_since;         /* monotonic: no client since; 0: one */
    guint64 reported_bytes;     /* in the last progress event */
    guint tick;
    gboolean ending;            /* the export is being deleted */
} Session;

static GPtrArray *sessions;    /* Session * */

static void session_free(Session *s)
{
    g_free(s->id);
    g_free(s->node_name);
    g_free(s->export_name);
    g_free(s->since);
    g_free(s->new_checkpoint);
    g_free(s);
}

static Session *session_find(const char *id)
{
    for (guint i = 0; sessions && i < sessions->len; i++) {
        Session *s = sessions->pdata[i];
        if (strcmp(s->id, id) == 0) {
            return s;
        }
    }
    return NULL;
}

static guint64 session_bytes_read(Session *s)
{
    BdExport *exp = bd_export_find(s->id);

    return exp ? bd_nbd_export_bytes_read(exp) : s->reported_bytes;
}

/* --- checkpoints --- */

/* The changes since checkpoint 'since' of the source, as a disabled
 * bitmap named 'since' on the view: the export finds it there. */
static BdDirtyBitmap *changes_on_view(Session *s, GError **errp)
{
    BdDirtyBitmap *tmp = bd_checkpoint_changes_since(s->source, s->since,
                                                     NULL, errp);
    BdDirtyBitmap *view;

    if (!tmp) {
        return NULL;
    }
    view = bd_dirty_bitmap_create(s->access, bd_dirty_bitmap_granularity(tmp),
                                  s->since, errp);
    if (view && !bd_dirty_bitmap_merge(view, tmp, NULL, errp)) {
        bd_dirty_bitmap_release(view);
        view = NULL;
    }
    bd_dirty_bitmap_release(tmp);
    if (view) {
        bd_dirty_bitmap_set_enabled(view, FALSE);
    }
    return view;
}

/* --- the fleecing graph --- */

/* A temporary qcow2 as large as the source, opened and unlinked at
 * once; its directory goes too. */
static BdNode *open_auto_target(Session *s, GError **errp)
{
    g_autofree char *dir = g_dir_make_tmp("blockd-backup-XXXXXX", NULL);
    g_autofree char *path = NULL;
    g_autofree char *name = g_strdup_printf("backup-%s-fleece", s->id);
    GVariantDict d, f;
    BdNode *node;

    if (!dir) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot create a directory for the fleecing image: %s",
                    g_strerror(errno));
        return NULL;
    }
    path = g_build_filename(dir, "fleece.qcow2", NULL);
    /* qcow2 sizes are whole sectors; a larger target is fine. */
    if (!bd_ctl_image_create(path, "qcow2", (s->source->size + 511) / 512 * 512,
                             NULL, errp)) {
        g_unlink(path);
        g_rmdir(dir);
        return NULL;
    }
    g_variant_dict_init(&f, NULL);
    g_variant_dict_insert(&f, "driver", "s", "file");
    g_variant_dict_insert(&f, "filename", "s", path);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "qcow2");
    g_variant_dict_insert(&d, "node-name", "s", name);
    /* What the reader discards through the view frees space here. */
    g_variant_dict_insert(&d, "discard", "s", "unmap");
    g_variant_dict_insert_value(&d, "file", g_variant_dict_end(&f));
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    node = bd_node_open(opts, errp);
    g_unlink(path);
    g_rmdir(dir);
    return node;
}

static BdNode *open_access(Session *s, GError **errp)
{
    g_autofree char *name = g_strdup_printf("backup-%s-access", s->id);
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "snapshot-access");
    g_variant_dict_insert(&d, "node-name", "s", name);
    g_variant_dict_insert(&d, "file", "s", s->cbw->node_name);
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    return bd_node_open(opts, errp);
}

static gboolean add_export(Session *s, GError **errp)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, "nbd");
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, s->id);
    json_builder_set_member_name(b, "node-name");
    json_builder_add_string_value(b, s->access->node_name);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, s->export_name);
    json_builder_set_member_name(b, "description");
    json_builder_add_string_value(b, "blockd backup session");
    if (s->changes) {
        json_builder_set_member_name(b, "bitmaps");
        json_builder_begin_array(b);
        json_builder_add_string_value(b, s->since);
        json_builder_end_array(b);
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) json = json_builder_get_root(b);
    g_autoptr(GVariant) opts = bd_validate(bd_export_options_schema(), json,
                                           FALSE, errp);
    return opts && bd_export_add(opts, NULL, errp) != NULL;
}

/* Undo what begin built, newest first.  The export must be gone. */
static void teardown_graph(Session *s)
{
    if (s->changes) {
        bd_dirty_bitmap_set_busy(s->changes, FALSE);
        bd_dirty_bitmap_release(s->changes);
        s->changes = NULL;
    }
    g_clear_pointer(&s->access, bd_node_unref);
    if (s->cbw) {
        bd_cbw_drop(s->cbw);
        s->cbw = NULL;
    }
    g_clear_pointer(&s->target, bd_node_unref);
    g_clear_pointer(&s->source, bd_node_unref);
}

/* Within the drained section: filter, view, "changes since", export,
 * then the new checkpoint (prepared: *checkpoint, for the caller to
 * commit or abort); the caller undoes the rest if one fails. */
static gboolean build_view(Session *s, BdCheckpointChange **checkpoint,
                           GError **errp)
{
    BdCbwAppendOptions opts = { 0 };
    g_autofree char *cbw_name = g_strdup_printf("backup-%s-cbw", s->id);

    opts.filter_node_name = cbw_name;
    s->cbw = bd_cbw_append(s->source, s->target, &opts, errp);
    if (!s->cbw) {
        return FALSE;
    }
    s->access = open_access(s, errp);
    if (!s->access) {
        return FALSE;
    }
    if (s->since) {
        s->changes = changes_on_view(s, errp);
        if (!s->changes) {
            return FALSE;
        }
        s->dirty_bytes = bd_dirty_bitmap_count(s->changes);
    } else {
        s->dirty_bytes = s->source->size;
    }
    if (!add_export(s, errp)) {
        return FALSE;
    }
    if (s->new_checkpoint) {
        *checkpoint = bd_checkpoint_create_prepare(s->source,
                                                   s->new_checkpoint, 0,
                                                   errp);
        if (!*checkpoint) {
            return FALSE;
        }
    }
    return TRUE;
}

/* --- events and the tick --- */

static const BdSchemaField progress_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_FIELD("dirty-bytes", &bd_schema_uint),
    BD_FIELD("bytes-read", &bd_schema_uint),
    { NULL } };
static const BdSchemaType progress_type = {
    .name = "q_obj_BLOCKD_BACKUP_PROGRESS-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = progress_fields };

static const char *const end_reasons[] = {
    "ended", "lease-expired", "export-deleted", "shutdown", NULL };
static const BdSchemaType end_reason_type = {
    .name = "BlockdBackupEndReason", .kind = BD_SCHEMA_ENUM,
    .enum_values = end_reasons };
static const BdSchemaField end_event_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_FIELD("reason", &end_reason_type),
    BD_FIELD("dirty-bytes", &bd_schema_uint),
    BD_FIELD("bytes-read", &bd_schema_uint),
    { NULL } };
static const BdSchemaType end_event_type = {
    .name = "q_obj_BLOCKD_BACKUP_END-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = end_event_fields };

const BdSchemaType *bd_backup_session_event_progress(void)
{
    return &progress_type;
}

const BdSchemaType *bd_backup_session_event_end(void)
{
    return &end_event_type;
}

static void emit_end(Session *s, const char *reason)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "id", "s", s->id);
    g_variant_dict_insert(&d, "reason", "s", reason);
    g_variant_dict_insert(&d, "dirty-bytes", "t", s->dirty_bytes);
    g_variant_dict_insert(&d, "bytes-read", "t", s->reported_bytes);
    bd_event_emit("BLOCKD_BACKUP_END", g_variant_dict_end(&d));
}

static void emit_progress(Session *s, guint64 bytes)
{
    GVariantDict d;

    s->reported_bytes = bytes;
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "id", "s", s->id);
    g_variant_dict_insert(&d, "dirty-bytes", "t", s->dirty_bytes);
    g_variant_dict_insert(&d, "bytes-read", "t", bytes);
    bd_event_emit("BLOCKD_BACKUP_PROGRESS", g_variant_dict_end(&d));
}

/* Delete the export and wait for it; TRUE when it is gone. */
static gboolean remove_export(Session *s)
{
    if (bd_export_find(s->id)) {
        if (!s->ending) {
            g_autoptr(GError) err = NULL;
            BdExport *exp = bd_export_find(s->id);

            s->reported_bytes = bd_nbd_export_bytes_read(exp);
            if (!bd_export_del(s->id, TRUE, &err) && bd_export_find(s->id)) {
                g_warning("backup session '%s': %s", s->id, err->message);
            }
            s->ending = TRUE;
        }
        if (!bd_export_wait_deleted(s->id, g_get_monotonic_time() +
                                               SESSION_END_WAIT_US)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean session_tick(gpointer opaque);

/* End the session: nothing it made stays.  When the export's clients
 * do not go in time, the tick tries again. */
static void session_end(Session *s, const char *reason)
{
    BD_GLOBAL_STATE_CODE();

    if (!remove_export(s)) {
        g_warning("backup session '%s': its export still has requests in "
                  "flight; it ends when they are done", s->id);
        if (!s->tick) {
            s->tick = g_timeout_add_seconds(SESSION_TICK_SECONDS,
                                            session_tick, s);
        }
        return;
    }
    if (s->tick) {
        g_source_remove(s->tick);
        s->tick = 0;
    }
    teardown_graph(s);
    emit_end(s, reason);
    g_ptr_array_remove(sessions, s);
    session_free(s);
}

static gboolean export_has_clients(BdExport *exp)
{
    return exp->drv->in_use ? exp->drv->in_use(exp)
                            : g_atomic_int_get(&exp->refcount) > 1;
}

static gboolean session_tick(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    Session *s = opaque;
    BdExport *exp = bd_export_find(s->id);
    gint64 now = g_get_monotonic_time();

    if (s->ending) {
        s->tick = 0;
        session_end(s, "ended");
        return G_SOURCE_REMOVE;
    }
    if (!exp) {
        s->tick = 0;
        session_end(s, "export-deleted");
        return G_SOURCE_REMOVE;
    }
    guint64 bytes = bd_nbd_export_bytes_read(exp);
    if (bytes != s->reported_bytes) {
        emit_progress(s, bytes);
    }
    if (export_has_clients(exp)) {
        s->alone_since = 0;
    } else if (!s->alone_since) {
        s->alone_since = now;
    } else if (s->lease_seconds &&
               now - s->alone_since >=
                   (gint64)s->lease_seconds * G_USEC_PER_SEC) {
        s->tick = 0;
        session_end(s, "lease-expired");
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

/* --- commands --- */

typedef struct {
    const char *node;
    const char *id;
    const char *since;
    const char *new_checkpoint;
    const char *export_name;
    const char *fleecing_target;
    guint64 lease_seconds;
} BeginArgs;

#define A(f) BD_AT(BeginArgs, f)
static const BdSchemaField begin_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("id", &bd_schema_str, A(id), .def.s = ""),
    BD_OPT("since", &bd_schema_str, A(since)),
    BD_OPT("new-checkpoint", &bd_schema_str, A(new_checkpoint)),
    BD_OPT("export-name", &bd_schema_str, A(export_name)),
    BD_OPT("fleecing-target", &bd_schema_str, A(fleecing_target)),
    BD_OPT("lease-seconds", &bd_schema_uint32, A(lease_seconds)),
    { NULL } };
#undef A
static const BdSchemaType begin_args = {
    .name = "q_obj_x-blockd-backup-begin-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = begin_fields };

typedef struct {
    const char *id;
} EndArgs;

static const BdSchemaField end_fields[] = {
    BD_FIELD("id", &bd_schema_str, BD_AT(EndArgs, id), .def.s = ""),
    { NULL } };
static const BdSchemaType end_args = {
    .name = "q_obj_x-blockd-backup-end-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = end_fields };

static const BdSchemaField info_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_FIELD("node", &bd_schema_str),
    BD_FIELD("export-name", &bd_schema_str),
    BD_OPT("nbd-uri", &bd_schema_str),
    BD_OPT("since", &bd_schema_str),
    BD_OPT("new-checkpoint", &bd_schema_str),
    BD_FIELD("fleecing-target", &bd_schema_str),
    BD_FIELD("dirty-bytes", &bd_schema_uint),
    BD_FIELD("bytes-read", &bd_schema_uint),
    BD_FIELD("clients", &bd_schema_bool),
    BD_OPT("lease-seconds", &bd_schema_uint32),
    { NULL } };
static const BdSchemaType info_type = {
    .name = "BlockdBackupInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = info_fields };
static const BdSchemaType info_list = {
    .name = "BlockdBackupInfoList", .kind = BD_SCHEMA_LIST,
    .element = &info_type };

static const BdSchemaType *begin_args_fn(void) { return &begin_args; }
static const BdSchemaType *end_args_fn(void) { return &end_args; }
static const BdSchemaType *info_list_fn(void) { return &info_list; }
static const BdSchemaType *info_fn(void) { return &info_type; }

static gboolean check_begin(const BeginArgs *a, GError **errp)
{
    if (!a->id[0]) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'id' must not be empty");
        return FALSE;
    }
    if (session_find(a->id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Backup session '%s' already exists", a->id);
        return FALSE;
    }
    if (bd_export_find(a->id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block export id '%s' is already in use", a->id);
        return FALSE;
    }
    if (!bd_nbd_server_running()) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "NBD server not running");
        return FALSE;
    }
    return TRUE;
}

/* One BlockdBackupInfo. */
static void build_session_info(JsonBuilder *b, Session *s)
{
    BdExport *exp = bd_export_find(s->id);
    g_autofree char *uri = bd_nbd_server_uri(s->export_name);

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, s->id);
    json_builder_set_member_name(b, "node");
    json_builder_add_string_value(b, s->node_name);
    json_builder_set_member_name(b, "export-name");
    json_builder_add_string_value(b, s->export_name);
    if (uri) {
        json_builder_set_member_name(b, "nbd-uri");
        json_builder_add_string_value(b, uri);
    }
    if (s->since) {
        json_builder_set_member_name(b, "since");
        json_builder_add_string_value(b, s->since);
    }
    if (s->new_checkpoint) {
        json_builder_set_member_name(b, "new-checkpoint");
        json_builder_add_string_value(b, s->new_checkpoint);
    }
    json_builder_set_member_name(b, "fleecing-target");
    json_builder_add_string_value(b, s->target->node_name);
    json_builder_set_member_name(b, "dirty-bytes");
    json_builder_add_int_value(b, (gint64)s->dirty_bytes);
    json_builder_set_member_name(b, "bytes-read");
    json_builder_add_int_value(b, (gint64)session_bytes_read(s));
    json_builder_set_member_name(b, "clients");
    json_builder_add_boolean_value(b, exp && export_has_clients(exp));
    if (s->lease_seconds) {
        json_builder_set_member_name(b, "lease-seconds");
        json_builder_add_int_value(b, s->lease_seconds);
    }
    json_builder_end_object(b);
}

static gboolean backup_begin(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BeginArgs a = { 0 };
    Session *s;
    BdNode *source;
    BdDrainSection *drain;
    BdCheckpointChange *checkpoint = NULL;
    gboolean ok;

    bd_schema_decode(begin_fields, args, &a);
    if (!check_begin(&a, errp)) {
        return FALSE;
    }
    source = bd_ctl_lookup_node(a.node, errp);
    if (!source) {
        return FALSE;
    }
    s = g_new0(Session, 1);
    s->id = g_strdup(a.id);
    s->node_name = g_strdup(a.node);
    s->export_name = g_strdup(a.export_name ? a.export_name : a.id);
    s->since = g_strdup(a.since);
    s->new_checkpoint = g_strdup(a.new_checkpoint);
    s->lease_seconds = (guint)a.lease_seconds;
    s->source = bd_node_ref(source);

    if (!a.fleecing_target || strcmp(a.fleecing_target, "auto") == 0) {
        s->auto_target = TRUE;
        s->target = open_auto_target(s, errp);
    } else if ((s->target = bd_ctl_lookup_node(a.fleecing_target, errp))) {
        bd_node_ref(s->target);
    }
    if (!s->target) {
        teardown_graph(s);
        session_free(s);
        return FALSE;
    }

    drain = bd_drained_begin(source);
    ok = build_view(s, &checkpoint, errp);
    if (checkpoint) {
        if (ok) {
            bd_checkpoint_change_commit(checkpoint);
        } else {
            bd_checkpoint_change_abort(checkpoint);
        }
    }
    bd_drained_end(drain);
    if (!ok) {
        if (bd_export_find(s->id)) {
            remove_export(s);
        }
        teardown_graph(s);
        session_free(s);
        return FALSE;
    }
    if (!sessions) {
        sessions = g_ptr_array_new();
    }
    g_ptr_array_add(sessions, s);
    s->alone_since = g_get_monotonic_time();
    s->tick = g_timeout_add_seconds(SESSION_TICK_SECONDS, session_tick, s);

    g_autoptr(JsonBuilder) b = json_builder_new();
    build_session_info(b, s);
    *ret = json_builder_get_root(b);
    return TRUE;
}

static gboolean backup_end(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    EndArgs a = { 0 };
    Session *s;

    (void)ret;
    bd_schema_decode(end_fields, args, &a);
    const char *id = a.id;
    s = session_find(id);
    if (!s) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Backup session '%s' not found", id);
        return FALSE;
    }
    session_end(s, "ended");
    return TRUE;
}

static gboolean query_backups(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(JsonBuilder) b = json_builder_new();

    (void)args;
    (void)errp;
    json_builder_begin_array(b);
    for (guint i = 0; sessions && i < sessions->len; i++) {
        build_session_info(b, sessions->pdata[i]);
    }
    json_builder_end_array(b);
    *ret = json_builder_get_root(b);
    return TRUE;
}

static const BdQmpCommand session_commands[] = {
    { "x-blockd-backup-begin", begin_args_fn, FALSE, info_fn, backup_begin },
    { "x-blockd-backup-end", end_args_fn, FALSE, NULL, backup_end },
    { "x-blockd-query-backups", NULL, FALSE, info_list_fn, query_backups },
    { NULL } };

void bd_cmd_backup_session_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(session_commands);
}

void bd_backup_sessions_end_all(void)
{
    BD_GLOBAL_STATE_CODE();

    while (sessions && sessions->len) {
        Session *s = sessions->pdata[sessions->len - 1];
        guint before = sessions->len;

        session_end(s, "shutdown");
        if (sessions->len == before) {
            /* Its export would not go: leave it to the export shutdown
             * and drop the session's hold on the graph. */
            if (s->tick) {
                g_source_remove(s->tick);
            }
            g_ptr_array_remove(sessions, s);
            session_free(s);
        }
    }
}
