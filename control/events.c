/* SPDX-License-Identifier: MIT */
/* QMP events: the graph's event sink, handed over to the main loop and
 * sent with a timestamp to every negotiated session.
 *
 * Thread model: event_sink() runs on whichever thread emitted the event
 * (an NBD worker dropping the last reference of an export, a job
 * thread, ...); it only copies the event and queues it on the default
 * main context.  Everything else runs on the main thread.
 */
#include <string.h>
#include "control/qmp-int.h"
#include "graph/events.h"
#include "graph/main-thread.h"

static const BdSchemaField export_deleted_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    { NULL } };

static const BdSchemaType export_deleted_type = {
    .name = "q_obj_BLOCK_EXPORT_DELETED-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = export_deleted_fields };

static const BdSchemaType *export_deleted_data(void)
{
    return &export_deleted_type;
}

static const BdQmpEvent events[] = {
    { "BLOCK_EXPORT_DELETED", export_deleted_data },
    { "JOB_STATUS_CHANGE", bd_job_event_status_change },
    { "BLOCK_JOB_COMPLETED", bd_job_event_completed },
    { "BLOCK_JOB_CANCELLED", bd_job_event_cancelled },
    { "BLOCK_JOB_ERROR", bd_job_event_error },
    { "BLOCK_JOB_READY", bd_job_event_ready },
    { "BLOCK_JOB_PENDING", bd_job_event_pending },
    { "BLOCKD_BACKUP_PROGRESS", bd_backup_session_event_progress },
    { "BLOCKD_BACKUP_END", bd_backup_session_event_end },
    { "BLOCKD_CHECKPOINT_UNUSABLE", bd_checkpoint_event_unusable },
    { "BLOCK_WRITE_THRESHOLD", bd_blockstats_event_write_threshold },
    { NULL } };

const BdQmpEvent *bd_qmp_events(void)
{
    return events;
}

void bd_qmp_event_send(const char *name, JsonNode *data)
{
    BD_GLOBAL_STATE_CODE();

    gint64 now = g_get_real_time();
    JsonObject *ts = json_object_new();
    JsonObject *ev = json_object_new();
    g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);

    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    json_object_set_object_member(ev, "timestamp", ts);
    json_object_set_string_member(ev, "event", name);
    if (data) {
        json_object_set_member(ev, "data", data);
    }
    json_node_take_object(node, ev);

    g_autofree char *text = bd_json_to_string(node);
    bd_monitor_broadcast(text);
}

typedef struct {
    char *name;
    GVariant *data;
} PendingEvent;

static gboolean deliver(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    PendingEvent *pe = opaque;

    bd_qmp_event_send(pe->name, pe->data ? bd_variant_to_json(pe->data)
                                         : NULL);
    return G_SOURCE_REMOVE;
}

static void pending_free(gpointer opaque)
{
    PendingEvent *pe = opaque;

    g_free(pe->name);
    if (pe->data) {
        g_variant_unref(pe->data);
    }
    g_free(pe);
}

static void event_sink(const char *name, GVariant *data, gpointer opaque)
{
    PendingEvent *pe = g_new0(PendingEvent, 1);

    pe->name = g_strdup(name);
    pe->data = data ? g_variant_ref_sink(data) : NULL;
    /* Runs at once when we are the main thread; queued otherwise. */
    g_main_context_invoke_full(NULL, G_PRIORITY_DEFAULT, deliver, pe,
                               pending_free);
}

void bd_events_init(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_event_set_sink(event_sink, NULL);
}
