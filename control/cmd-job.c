/* SPDX-License-Identifier: MIT */
/* Job commands: query-jobs, query-block-jobs, job-*, block-job-*,
 * blockdev-create, and the schemas of the job events.
 *
 * Jobs are found by id.  job-* commands see every job ("Job not
 * found"); block-job-* commands only block jobs, and a missing one is
 * QEMU's DeviceNotActive "Block job 'x' not found".
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "jobs/create.h"
#include "jobs/amend.h"
#include "jobs/job.h"

/* --- enums and info types (qapi/job.json, qapi/block-core.json) --- */

/* Shared with the backup, mirror, stream and commit commands. */
static const char *const sync_mode_values[] = {
    [BD_CTL_SYNC_TOP] = "top",
    [BD_CTL_SYNC_FULL] = "full",
    [BD_CTL_SYNC_NONE] = "none",
    [BD_CTL_SYNC_INCREMENTAL] = "incremental",
    [BD_CTL_SYNC_BITMAP] = "bitmap",
    NULL };
const BdSchemaType bd_ctl_schema_sync_mode = {
    .name = "MirrorSyncMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = sync_mode_values };
static const char *const on_error_values[] = {
    [BD_ON_ERROR_REPORT] = "report",
    [BD_ON_ERROR_IGNORE] = "ignore",
    [BD_ON_ERROR_ENOSPC] = "enospc",
    [BD_ON_ERROR_STOP] = "stop",
    [BD_ON_ERROR_AUTO] = "auto",
    NULL };
const BdSchemaType bd_ctl_schema_on_error = {
    .name = "BlockdevOnError", .kind = BD_SCHEMA_ENUM,
    .enum_values = on_error_values };
static const char *const new_image_mode_values[] = {
    [BD_CTL_NEW_IMAGE_EXISTING] = "existing",
    [BD_CTL_NEW_IMAGE_ABSOLUTE_PATHS] = "absolute-paths",
    NULL };
const BdSchemaType bd_ctl_schema_new_image_mode = {
    .name = "NewImageMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = new_image_mode_values };

const char *bd_ctl_sync_mode_name(BdCtlSyncMode mode)
{
    return sync_mode_values[mode];
}

static const char *const job_type_values[] = {
    "commit", "stream", "mirror", "backup", "create", "amend",
    "snapshot-load", "snapshot-save", "snapshot-delete", NULL };
static const BdSchemaType job_type_enum = {
    .name = "JobType", .kind = BD_SCHEMA_ENUM,
    .enum_values = job_type_values };
static const char *const job_status_values[] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null", NULL };
static const BdSchemaType job_status_enum = {
    .name = "JobStatus", .kind = BD_SCHEMA_ENUM,
    .enum_values = job_status_values };
static const char *const iostatus_values[] = { "ok", "failed", "nospace",
                                               NULL };
static const BdSchemaType iostatus_enum = {
    .name = "BlockDeviceIoStatus", .kind = BD_SCHEMA_ENUM,
    .enum_values = iostatus_values };
static const char *const io_op_values[] = { "read", "write", NULL };
static const BdSchemaType io_op_enum = {
    .name = "IoOperationType", .kind = BD_SCHEMA_ENUM,
    .enum_values = io_op_values };
static const char *const error_action_values[] = { "ignore", "report",
                                                   "stop", NULL };
static const BdSchemaType error_action_enum = {
    .name = "BlockErrorAction", .kind = BD_SCHEMA_ENUM,
    .enum_values = error_action_values };

static const BdSchemaField job_info_fields[] = {
    BD_FIELD("id", &bd_schema_str),
    BD_FIELD("type", &job_type_enum),
    BD_FIELD("status", &job_status_enum),
    BD_FIELD("current-progress", &bd_schema_int),
    BD_FIELD("total-progress", &bd_schema_int),
    BD_OPT("error", &bd_schema_str),
    { NULL } };
static const BdSchemaType job_info = {
    .name = "JobInfo", .kind = BD_SCHEMA_OBJECT, .fields = job_info_fields };
static const BdSchemaType job_info_list = {
    .name = "[JobInfo]", .kind = BD_SCHEMA_LIST, .element = &job_info };

static const BdSchemaField block_job_info_fields[] = {
    BD_FIELD("type", &bd_schema_str),
    BD_FIELD("device", &bd_schema_str),
    BD_FIELD("len", &bd_schema_int),
    BD_FIELD("offset", &bd_schema_int),
    BD_FIELD("busy", &bd_schema_bool),
    BD_FIELD("paused", &bd_schema_bool),
    BD_FIELD("speed", &bd_schema_int),
    BD_FIELD("io-status", &iostatus_enum),
    BD_FIELD("ready", &bd_schema_bool),
    BD_FIELD("status", &job_status_enum),
    BD_FIELD("auto-finalize", &bd_schema_bool),
    BD_FIELD("auto-dismiss", &bd_schema_bool),
    BD_OPT("error", &bd_schema_str),
    { NULL } };
static const BdSchemaType block_job_info = {
    .name = "BlockJobInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = block_job_info_fields };
static const BdSchemaType block_job_info_list = {
    .name = "[BlockJobInfo]", .kind = BD_SCHEMA_LIST,
    .element = &block_job_info };

/* --- argument types --- */

#define ARGS(var, tname, ...)                                          \
    static const BdSchemaField var##_fields[] = { __VA_ARGS__, { NULL } }; \
    static const BdSchemaType var = { .name = tname,                   \
        .kind = BD_SCHEMA_OBJECT, .fields = var##_fields };            \
    static const BdSchemaType *var##_fn(void) { return &var; }

/* What the job commands take: a job by 'id' or by 'device', and the
 * members of block-job-cancel and block-job-set-speed. */
typedef struct {
    const char *id;
    const char *device;
    gboolean force;
    gint64 speed;
} JobArgs;

ARGS(job_id_args, "q_obj_job-pause-arg",
     BD_FIELD("id", &bd_schema_str, BD_AT(JobArgs, id), .def.s = ""))
ARGS(device_args, "q_obj_block-job-pause-arg",
     BD_FIELD("device", &bd_schema_str, BD_AT(JobArgs, device),
              .def.s = ""))
ARGS(block_cancel_args, "q_obj_block-job-cancel-arg",
     BD_FIELD("device", &bd_schema_str, BD_AT(JobArgs, device),
              .def.s = ""),
     BD_OPT("force", &bd_schema_bool, BD_AT(JobArgs, force)))
ARGS(set_speed_args, "q_obj_block-job-set-speed-arg",
     BD_FIELD("device", &bd_schema_str, BD_AT(JobArgs, device),
              .def.s = ""),
     BD_FIELD("speed", &bd_schema_int, BD_AT(JobArgs, speed)))

typedef struct {
    const char *job_id;
    GVariant *options;
} CreateArgs;

static const BdSchemaField create_fields[] = {
    BD_FIELD("job-id", &bd_schema_str, BD_AT(CreateArgs, job_id),
             .def.s = ""),
    /* BlockdevCreateOptions, once the drivers are registered. */
    BD_FIELD("options", NULL, BD_AT(CreateArgs, options)),
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(CreateArgs, create_fields)

static const BdSchemaType *create_args_fn(void)
{
    static BdSchemaField fields[3];
    static BdSchemaType t;
    static gsize done;

    if (g_once_init_enter(&done)) {
        memcpy(fields, create_fields, sizeof(fields));
        fields[1].type = bd_create_options_schema();
        t = (BdSchemaType) { .name = "q_obj_blockdev-create-arg",
                             .kind = BD_SCHEMA_OBJECT, .fields = fields };
        g_once_init_leave(&done, 1);
    }
    return &t;
}

typedef struct {
    const char *job_id;
    const char *node_name;
    GVariant *options;
    gboolean force;
} AmendArgs;

static const BdSchemaField amend_fields[] = {
    BD_FIELD("job-id", &bd_schema_str, BD_AT(AmendArgs, job_id),
             .def.s = ""),
    BD_FIELD("node-name", &bd_schema_str, BD_AT(AmendArgs, node_name),
             .def.s = ""),
    /* BlockdevAmendOptions, once the drivers are registered. */
    BD_FIELD("options", NULL, BD_AT(AmendArgs, options)),
    BD_OPT("force", &bd_schema_bool, BD_AT(AmendArgs, force)),
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(AmendArgs, amend_fields)

static const BdSchemaType *amend_args_fn(void)
{
    static BdSchemaField fields[5];
    static BdSchemaType t;
    static gsize done;

    if (g_once_init_enter(&done)) {
        memcpy(fields, amend_fields, sizeof(fields));
        fields[2].type = bd_amend_options_schema();
        t = (BdSchemaType) { .name = "q_obj_x-blockdev-amend-arg",
                             .kind = BD_SCHEMA_OBJECT, .fields = fields };
        g_once_init_leave(&done, 1);
    }
    return &t;
}

static const BdSchemaType *job_info_fn(void) { return &job_info_list; }
static const BdSchemaType *block_job_info_fn(void)
{
    return &block_job_info_list;
}

/* --- event data (for query-qmp-schema) --- */

ARGS(ev_status_change, "q_obj_JOB_STATUS_CHANGE-arg",
     BD_FIELD("id", &bd_schema_str), BD_FIELD("status", &job_status_enum))
ARGS(ev_completed, "q_obj_BLOCK_JOB_COMPLETED-arg",
     BD_FIELD("type", &job_type_enum), BD_FIELD("device", &bd_schema_str),
     BD_FIELD("len", &bd_schema_int), BD_FIELD("offset", &bd_schema_int),
     BD_FIELD("speed", &bd_schema_int), BD_OPT("error", &bd_schema_str))
ARGS(ev_cancelled, "q_obj_BLOCK_JOB_CANCELLED-arg",
     BD_FIELD("type", &job_type_enum), BD_FIELD("device", &bd_schema_str),
     BD_FIELD("len", &bd_schema_int), BD_FIELD("offset", &bd_schema_int),
     BD_FIELD("speed", &bd_schema_int))
ARGS(ev_ready, "q_obj_BLOCK_JOB_READY-arg",
     BD_FIELD("type", &job_type_enum), BD_FIELD("device", &bd_schema_str),
     BD_FIELD("len", &bd_schema_int), BD_FIELD("offset", &bd_schema_int),
     BD_FIELD("speed", &bd_schema_int))
ARGS(ev_error, "q_obj_BLOCK_JOB_ERROR-arg",
     BD_FIELD("device", &bd_schema_str),
     BD_FIELD("operation", &io_op_enum),
     BD_FIELD("action", &error_action_enum))
ARGS(ev_pending, "q_obj_BLOCK_JOB_PENDING-arg",
     BD_FIELD("type", &job_type_enum), BD_FIELD("id", &bd_schema_str))

const BdSchemaType *bd_job_event_status_change(void)
{
    return ev_status_change_fn();
}
const BdSchemaType *bd_job_event_completed(void) { return ev_completed_fn(); }
const BdSchemaType *bd_job_event_cancelled(void) { return ev_cancelled_fn(); }
const BdSchemaType *bd_job_event_ready(void) { return ev_ready_fn(); }
const BdSchemaType *bd_job_event_error(void) { return ev_error_fn(); }
const BdSchemaType *bd_job_event_pending(void) { return ev_pending_fn(); }

/* --- lookups --- */

/* The members of 'args' along the table of 'type' (one of the above). */
static JobArgs job_args(const BdSchemaType *type, GVariant *args)
{
    JobArgs a = { 0 };

    bd_schema_decode(type->fields, args, &a);
    return a;
}

static BdJob *find_job(const char *id, GError **errp)
{
    BdJob *job = bd_job_find(id);

    if (!job) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Job not found");
    }
    return job;
}

static BdJob *find_block_job(const char *id, GError **errp)
{
    BdJob *job = bd_job_find(id);

    if (!job || !job->driver->is_block_job) {
        g_set_error(errp, BD_ERROR, BD_ERROR_DEVICE_NOT_ACTIVE,
                    "Block job '%s' not found", id);
        return NULL;
    }
    return job;
}

/* --- queries --- */

static JsonNode *variant_list_to_json(GPtrArray *items)
{
    JsonArray *arr = json_array_new();
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);

    for (guint i = 0; i < items->len; i++) {
        g_autoptr(GVariant) v = g_variant_ref_sink(items->pdata[i]);
        json_array_add_element(arr, bd_variant_to_json(v));
    }
    json_node_take_array(node, arr);
    return node;
}

static GVariant *job_info_of(BdJob *job)
{
    BdJobSnapshot s;
    GVariantDict d;

    bd_job_snapshot(job, &s);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "id", "s", job->id);
    g_variant_dict_insert(&d, "type", "s", job->driver->type);
    g_variant_dict_insert(&d, "status", "s", bd_job_status_name(job->status));
    g_variant_dict_insert(&d, "current-progress", "x", (gint64)s.current);
    g_variant_dict_insert(&d, "total-progress", "x", (gint64)s.total);
    if (job->err && job->ret) {
        g_variant_dict_insert(&d, "error", "s", job->err->message);
    }
    return g_variant_dict_end(&d);
}

static GVariant *block_job_info_of(BdJob *job)
{
    BdJobSnapshot s;
    GVariantDict d;

    bd_job_snapshot(job, &s);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "type", "s", job->driver->type);
    g_variant_dict_insert(&d, "device", "s", job->id);
    g_variant_dict_insert(&d, "len", "x", (gint64)s.total);
    g_variant_dict_insert(&d, "offset", "x", (gint64)s.current);
    g_variant_dict_insert(&d, "busy", "b", s.busy);
    g_variant_dict_insert(&d, "paused", "b", s.paused);
    g_variant_dict_insert(&d, "speed", "x", (gint64)s.speed);
    g_variant_dict_insert(&d, "io-status", "s", bd_iostatus_name(s.iostatus));
    g_variant_dict_insert(&d, "ready", "b", bd_job_is_ready(job));
    g_variant_dict_insert(&d, "status", "s", bd_job_status_name(job->status));
    g_variant_dict_insert(&d, "auto-finalize", "b", job->auto_finalize);
    g_variant_dict_insert(&d, "auto-dismiss", "b", job->auto_dismiss);
    if (job->ret) {
        g_variant_dict_insert(&d, "error", "s",
                              job->err ? job->err->message
                                       : g_strerror(-job->ret));
    }
    return g_variant_dict_end(&d);
}

static gboolean query_jobs(GVariant *args, JsonNode **ret, GError **errp)
{
    GPtrArray *list = bd_job_list();
    g_autoptr(GPtrArray) items = g_ptr_array_new();

    /* Newest first, as QEMU lists them. */
    for (guint i = list->len; i-- > 0;) {
        g_ptr_array_add(items, job_info_of(list->pdata[i]));
    }
    *ret = variant_list_to_json(items);
    return TRUE;
}

static gboolean query_block_jobs(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    GPtrArray *list = bd_job_list();
    g_autoptr(GPtrArray) items = g_ptr_array_new();

    for (guint i = list->len; i-- > 0;) {
        BdJob *job = list->pdata[i];
        if (job->driver->is_block_job) {
            g_ptr_array_add(items, block_job_info_of(job));
        }
    }
    *ret = variant_list_to_json(items);
    return TRUE;
}

/* --- job-* --- */

#define JOB_CMD(fname, call)                                              \
    static gboolean fname(GVariant *args, JsonNode **ret, GError **errp)  \
    {                                                                     \
        JobArgs a = job_args(&job_id_args, args);                         \
        BdJob *job = find_job(a.id, errp);                                \
        return job && call;                                               \
    }

JOB_CMD(job_pause, bd_job_user_pause(job, errp))
JOB_CMD(job_resume, bd_job_user_resume(job, errp))
JOB_CMD(job_cancel, bd_job_user_cancel(job, TRUE, errp))
JOB_CMD(job_complete, bd_job_complete(job, errp))
JOB_CMD(job_finalize, bd_job_finalize(job, errp))
JOB_CMD(job_dismiss, bd_job_dismiss(job, errp))

/* --- block-job-* --- */

/* 'type': the argument type, whose 'member' names the job. */
#define BLOCK_JOB_CMD(fname, type, member, call)                          \
    static gboolean fname(GVariant *args, JsonNode **ret, GError **errp)  \
    {                                                                     \
        JobArgs a = job_args(&type, args);                                \
        BdJob *job = find_block_job(a.member, errp);                      \
        return job && call;                                               \
    }

BLOCK_JOB_CMD(block_job_pause, device_args, device,
              bd_job_user_pause(job, errp))
BLOCK_JOB_CMD(block_job_resume, device_args, device,
              bd_job_user_resume(job, errp))
BLOCK_JOB_CMD(block_job_complete, device_args, device,
              bd_job_complete(job, errp))
BLOCK_JOB_CMD(block_job_finalize, job_id_args, id, bd_job_finalize(job, errp))
BLOCK_JOB_CMD(block_job_dismiss, job_id_args, id, bd_job_dismiss(job, errp))
BLOCK_JOB_CMD(block_job_set_speed, set_speed_args, device,
              bd_job_set_speed(job, a.speed, errp))

static gboolean block_job_cancel(GVariant *args, JsonNode **ret,
                                 GError **errp)
{
    JobArgs a = job_args(&block_cancel_args, args);
    const char *device = a.device;
    gboolean force = a.force;
    BdJob *job = find_block_job(device, errp);
    BdJobSnapshot s;

    if (!job) {
        return FALSE;
    }
    bd_job_snapshot(job, &s);
    if (s.user_paused && !force) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The block job for device '%s' is currently paused",
                    device);
        return FALSE;
    }
    return bd_job_user_cancel(job, force, errp);
}

/* --- blockdev-create --- */

static gboolean blockdev_create(GVariant *args, JsonNode **ret,
                                GError **errp)
{
    g_auto(CreateArgs) a = { 0 };

    bd_schema_decode(create_args_fn()->fields, args, &a);
    return bd_create_job_start(a.job_id, a.options, errp);
}

/* --- x-blockdev-amend --- */

static gboolean blockdev_amend(GVariant *args, JsonNode **ret,
                               GError **errp)
{
    g_auto(AmendArgs) a = { 0 };

    bd_schema_decode(amend_args_fn()->fields, args, &a);
    return bd_amend_job_start(a.job_id, a.node_name, a.options, a.force,
                              errp);
}

static const BdQmpCommand job_commands[] = {
    { "blockdev-create", create_args_fn, FALSE, NULL, blockdev_create },
    { "x-blockdev-amend", amend_args_fn, FALSE, NULL, blockdev_amend },
    { "query-jobs", NULL, FALSE, job_info_fn, query_jobs },
    { "query-block-jobs", NULL, FALSE, block_job_info_fn, query_block_jobs },
    { "job-pause", job_id_args_fn, FALSE, NULL, job_pause },
    { "job-resume", job_id_args_fn, FALSE, NULL, job_resume },
    { "job-cancel", job_id_args_fn, FALSE, NULL, job_cancel },
    { "job-complete", job_id_args_fn, FALSE, NULL, job_complete },
    { "job-finalize", job_id_args_fn, FALSE, NULL, job_finalize },
    { "job-dismiss", job_id_args_fn, FALSE, NULL, job_dismiss },
    { "block-job-pause", device_args_fn, FALSE, NULL, block_job_pause },
    { "block-job-resume", device_args_fn, FALSE, NULL, block_job_resume },
    { "block-job-cancel", block_cancel_args_fn, FALSE, NULL,
      block_job_cancel },
    { "block-job-complete", device_args_fn, FALSE, NULL,
      block_job_complete },
    { "block-job-finalize", job_id_args_fn, FALSE, NULL,
      block_job_finalize },
    { "block-job-dismiss", job_id_args_fn, FALSE, NULL, block_job_dismiss },
    { "block-job-set-speed", set_speed_args_fn, FALSE, NULL,
      block_job_set_speed },
    { NULL } };

void bd_cmd_job_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(job_commands);
}
