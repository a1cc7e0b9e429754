/* SPDX-License-Identifier: MIT */
/* Internal interfaces of control/: the command table, dispatch, events
 * and scalar conversions shared by the files of this folder.
 *
 * Thread model: main thread only.
 */
#ifndef BD_CONTROL_QMP_INT_H
#define BD_CONTROL_QMP_INT_H

#include <gio/gio.h>
#include "control/control.h"
#include "graph/node.h"
#include "jobs/job.h"

#undef G_LOG_DOMAIN
#define G_LOG_DOMAIN "blockd-control"

/* A command handler: 'args' is the validated argument object (a{sv},
 * never NULL).  On success it may set *ret (default: {}). */
typedef gboolean (*BdQmpHandler)(GVariant *args, JsonNode **ret,
                                 GError **errp);

/* A command that may finish later, when part of its work has to wait
 * off the main thread (connecting to a remote cluster): the handler
 * starts the work and returns; the command ends with exactly one
 * bd_qmp_pending_done() on the main thread.  Until then its session
 * reads no further request (replies stay in order), while every other
 * session, the jobs and the exports go on. */
typedef struct BdQmpPending BdQmpPending;
/* Returns TRUE when the command went pending (it owns 'p' then), FALSE
 * to have it run synchronously by the command's 'fn' instead. */
typedef gboolean (*BdQmpAsyncHandler)(GVariant *args, BdQmpPending *p);
/* Finish a pending command: 'err' (taken) or success with 'ret' (taken;
 * NULL: {}).  Main thread, once per command; the reply goes out from
 * the main loop, never from inside this call. */
void bd_qmp_pending_done(BdQmpPending *p, JsonNode *ret, GError *err);

typedef struct {
    const char *name;
    /* Argument schema (an OBJECT, or with 'boxed' any object/union type);
     * NULL: no arguments. */
    const BdSchemaType *(*args)(void);
    gboolean boxed;
    /* Return type, for query-qmp-schema; NULL: an empty object. */
    const BdSchemaType *(*ret)(void);
    BdQmpHandler fn;
    /* Optional: the same command for callers that can wait for its
     * reply (monitor sessions); 'fn' serves the others. */
    BdQmpAsyncHandler afn;
} BdQmpCommand;

typedef struct {
    const char *name;
    const BdSchemaType *(*data)(void);   /* NULL: no data */
} BdQmpEvent;

/* Command table (dispatch.c).  'cmds' ends with a {NULL} entry and must
 * stay valid. */
void bd_qmp_register(const BdQmpCommand *cmds);
const BdQmpCommand *bd_qmp_find(const char *name);
/* Every registered command, in registration order (borrowed). */
GPtrArray *bd_qmp_commands(void);

/* Per-session protocol state. */
typedef struct {
    gboolean negotiated;   /* qmp_capabilities done */
    gboolean oob;          /* the "oob" capability was enabled */
} BdQmpState;

/* Handle one request object; returns the reply ({"return"} or
 * {"error"}, with "id" when given), or NULL when the command went
 * pending (see BdQmpAsyncHandler; only when 'later' is given): its
 * reply is then handed to later(reply, opaque) from the main loop
 * (transfer full). */
typedef void (*BdQmpReplyFn)(JsonNode *reply, gpointer opaque);
JsonNode *bd_qmp_dispatch(BdQmpState *st, JsonNode *request,
                          BdQmpReplyFn later, gpointer opaque);
/* {"error": {"class": ..., "desc": ...}} for an error */
JsonNode *bd_qmp_error_reply(const GError *err, JsonNode *id);

/* Commands by subject (cmd-*.c). */
void bd_cmd_core_register(void);
void bd_cmd_block_register(void);
void bd_cmd_block_graph_register(void);
void bd_cmd_blockstats_register(void);
/* BLOCK_WRITE_THRESHOLD's data type (cmd-blockstats.c). */
const BdSchemaType *bd_blockstats_event_write_threshold(void);
void bd_cmd_export_register(void);
void bd_cmd_job_register(void);
/* Job event data types (cmd-job.c), listed in events.c. */
const BdSchemaType *bd_job_event_status_change(void);
const BdSchemaType *bd_job_event_completed(void);
const BdSchemaType *bd_job_event_cancelled(void);
const BdSchemaType *bd_job_event_ready(void);
const BdSchemaType *bd_job_event_error(void);
const BdSchemaType *bd_job_event_pending(void);
void bd_cmd_bitmap_register(void);
void bd_cmd_checkpoint_register(void);
void bd_cmd_snapshot_internal_register(void);
/* [SnapshotInfo] (cmd-snapshot-internal.c), also in ImageInfo. */
extern const BdSchemaType bd_cmd_snapshot_info_list;
/* BLOCKD_CHECKPOINT_UNUSABLE's data type (cmd-checkpoint.c). */
const BdSchemaType *bd_checkpoint_event_unusable(void);
void bd_cmd_transaction_register(void);
void bd_cmd_object_register(void);
/* qom-* and x-blockdev-set-iothread (cmd-qom.c). */
void bd_cmd_qom_register(void);
/* The ids of /objects: throttle groups and objects/'s, sorted
 * (cmd-object.c). */
GPtrArray *bd_cmd_object_ids(void);
void bd_cmd_backup_register(void);
void bd_cmd_snapshot_register(void);
void bd_cmd_stream_register(void);
void bd_cmd_mirror_register(void);
void bd_cmd_backup_session_register(void);
void bd_cmd_metrics_register(void);
void bd_cmd_trace_register(void);
/* Data of BLOCKD_BACKUP_PROGRESS and BLOCKD_BACKUP_END. */
const BdSchemaType *bd_backup_session_event_progress(void);
const BdSchemaType *bd_backup_session_event_end(void);

/* Events (events.c). */
void bd_events_init(void);
const BdQmpEvent *bd_qmp_events(void);    /* {NULL}-terminated */
/* Send an event to every negotiated session (takes 'data'). */
void bd_qmp_event_send(const char *name, JsonNode *data);

/* Chardevs (chardev.c): hand each accepted connection to 'accept'. */
typedef void (*BdChardevAccept)(GSocketConnection *conn, gpointer opaque);
gboolean bd_chardev_claim(const char *id, BdChardevAccept accept,
                          gpointer opaque, GError **errp);
void bd_chardev_cleanup(void);
/* The ids of the chardevs, in creation order (qom-list /chardevs). */
GPtrArray *bd_chardev_ids(void);
/* query-chardev's 'filename' of socket chardev 'id' (new), or NULL. */
char *bd_chardev_filename(const char *id);
/* QMP's SocketAddressLegacy (cmd-export.c). */
extern const BdSchemaType bd_qmp_socket_address_legacy;
/* A chardev's monitor session ended (monitor.c). */
void bd_chardev_session_closed(const char *id);
gboolean bd_chardev_is_claimed(const char *id);
/* qom-get of socket chardev 'id': 'connected' (bool) and 'addr' (a
 * SocketAddress, as QEMU's); NULL for another property or chardev. */
JsonNode *bd_chardev_qom_get(const char *id, const char *prop);
/* Runtime socket chardevs (chardev-add/change): a new one from a
 * validated ChardevSocket, not yet listed (errors without QEMU's
 * "Failed to add chardev" prefix); listing it (its id must be free);
 * unlisting an unclaimed one; freeing. */
typedef struct BdChardev BdChardev;
BdChardev *bd_chardev_socket_new(const char *id, GVariant *data,
                                 GError **errp);
void bd_chardev_socket_insert(BdChardev *c);
BdChardev *bd_chardev_socket_steal(const char *id);
void bd_chardev_socket_free(BdChardev *c);
/* Runtime chardevs (cmd-chardev.c): the ringbufs' ids, the commands,
 * and their cleanup at exit. */
GPtrArray *bd_ringbuf_ids(void);
void bd_cmd_chardev_register(void);
void bd_cmd_chardev_cleanup(void);

/* Monitor (monitor.c): send one line of JSON to every negotiated
 * session. */
void bd_monitor_broadcast(const char *json_text);

/* query-qmp-schema (schema-query.c). */
JsonNode *bd_qmp_schema_info(void);

/* Whether validated qmp_capabilities arguments enable "oob"
 * (cmd-core.c). */
gboolean bd_qmp_caps_enable_oob(GVariant *args);

/* The greeting and query-version's VersionInfo (cmd-core.c). */
JsonNode *bd_qmp_greeting(void);
JsonNode *bd_qmp_version_info(void);

/* Quit (cmd-core.c). */
void bd_control_request_quit(void);

/* Image files by name (image-file.c), as QEMU's bdrv_img_create: a new
 * 'fmt' image of 'size' bytes naming 'backing' (may be NULL) in its
 * header. */
/* The node named 'name' (QEMU's bdrv_lookup_bs with device == node):
 * "Cannot find device='X' nor node-name='X'" when there is none. */
BdNode *bd_ctl_lookup_node(const char *name, GError **errp);
gboolean bd_ctl_image_create(const char *filename, const char *fmt,
                             uint64_t size, BdNode *backing, GError **errp);
/* Run 'fn' for a monitor's command that opens nodes, in stages so that
 * the main loop never waits for an open's slow parts (control/
 * open-stages.c): the options trees in 'prepare' (GPtrArray of GVariant
 * *, taken; may be empty) prepare on a thread first (an rbd node
 * connects to its cluster); 'fn' then runs on the main thread, and again
 * after the work its opens left to a thread (a LUKS unlock) has run
 * there.  The command is pending until the reply of its last attempt. */
void bd_ctl_run_open_stages(GVariant *args, BdQmpPending *p,
                            GPtrArray *prepare, BdQmpHandler fn);
/* The async handler of a command that opens an image named by file name
 * (args' member 'key'): run in stages, with the name's protocol node
 * prepared first when the mode is "existing" and it prepares (an rbd:
 * name); the open takes the prepared connection or fails at once with
 * its error.  Always TRUE (pending). */
gboolean bd_ctl_open_by_name_async(GVariant *args, BdQmpPending *p,
                                   const char *key, BdQmpHandler fn);
/* The same for a transaction: the drive-backup and blockdev-snapshot-sync
 * actions' images. */
gboolean bd_ctl_transaction_opens_async(GVariant *args, BdQmpPending *p,
                                        BdQmpHandler fn);

/* Small helpers to build schema types for commands: a required or
 * optional member, then where it goes in the handler's argument struct
 * (BD_AT, BD_HAS, .def: see graph/schema.h), e.g.
 *   BD_OPT("force", &bd_schema_bool, BD_AT(CancelArgs, force)) */
#define BD_FIELD(n, t, ...) { (n), (t), FALSE, __VA_ARGS__ }
#define BD_OPT(n, t, ...) { (n), (t), TRUE, __VA_ARGS__ }

/* Enums of the block-job commands (cmd-job.c): MirrorSyncMode,
 * BlockdevOnError (decoded as BdOnError), NewImageMode. */
typedef enum {
    BD_CTL_SYNC_TOP,
    BD_CTL_SYNC_FULL,
    BD_CTL_SYNC_NONE,
    BD_CTL_SYNC_INCREMENTAL,
    BD_CTL_SYNC_BITMAP,
} BdCtlSyncMode;
typedef enum {
    BD_CTL_NEW_IMAGE_EXISTING,
    BD_CTL_NEW_IMAGE_ABSOLUTE_PATHS,
} BdCtlNewImageMode;
extern const BdSchemaType bd_ctl_schema_sync_mode;
extern const BdSchemaType bd_ctl_schema_on_error;
extern const BdSchemaType bd_ctl_schema_new_image_mode;
/* "full", ... (messages) */
const char *bd_ctl_sync_mode_name(BdCtlSyncMode mode);

#endif
