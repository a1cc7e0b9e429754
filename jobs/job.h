/* SPDX-License-Identifier: MIT */
/* The job framework: QEMU's job state machine, verbs, transactions,
 * progress, rate limiting and error actions, with one thread per job.
 *
 * Thread model: a job's work function (driver->run) runs on the job's
 * own GThread and calls only the "job thread" functions below plus the
 * graph's I/O API through its own entry handles.  Everything else -
 * creation, verbs, state transitions, the driver's prepare / commit /
 * abort / clean / complete callbacks, events and queries - runs on the
 * main thread.  The job thread never changes the state itself: it posts
 * its news (paused, resumed, ready, finished) to the main context, in
 * order, and the main thread makes the transition and emits the event.
 * job->lock protects the fields marked [lock]; it is a leaf lock.
 *
 *   created -> running <-> paused           (job-pause / job-resume)
 *                 |  \-> ready <-> standby  (mirror-like jobs)
 *                 v        v
 *              waiting -> pending -> concluded -> null
 *                 \          \-> aborting -/       (failure or cancel)
 */
#ifndef BD_JOBS_JOB_H
#define BD_JOBS_JOB_H

#include <glib.h>
#include <stdint.h>
#include "graph/lock.h"
#include "graph/node.h"

typedef enum {
    BD_JOB_STATUS_UNDEFINED,
    BD_JOB_STATUS_CREATED,
    BD_JOB_STATUS_RUNNING,
    BD_JOB_STATUS_PAUSED,
    BD_JOB_STATUS_READY,
    BD_JOB_STATUS_STANDBY,
    BD_JOB_STATUS_WAITING,
    BD_JOB_STATUS_PENDING,
    BD_JOB_STATUS_ABORTING,
    BD_JOB_STATUS_CONCLUDED,
    BD_JOB_STATUS_NULL,
    BD_JOB_STATUS__MAX,
} BdJobStatus;

typedef enum {
    BD_JOB_VERB_CANCEL,
    BD_JOB_VERB_PAUSE,
    BD_JOB_VERB_RESUME,
    BD_JOB_VERB_SET_SPEED,
    BD_JOB_VERB_COMPLETE,
    BD_JOB_VERB_FINALIZE,
    BD_JOB_VERB_DISMISS,
    BD_JOB_VERB__MAX,
} BdJobVerb;

/* BlockdevOnError */
typedef enum {
    BD_ON_ERROR_REPORT,
    BD_ON_ERROR_IGNORE,
    BD_ON_ERROR_ENOSPC,
    BD_ON_ERROR_STOP,
    BD_ON_ERROR_AUTO,
} BdOnError;

/* BlockErrorAction */
typedef enum {
    BD_ERROR_ACTION_IGNORE,
    BD_ERROR_ACTION_REPORT,
    BD_ERROR_ACTION_STOP,
} BdErrorAction;

/* BlockDeviceIoStatus */
typedef enum {
    BD_IOSTATUS_OK,
    BD_IOSTATUS_FAILED,
    BD_IOSTATUS_NOSPACE,
} BdIoStatus;

typedef struct BdJob BdJob;
typedef struct BdJobTxn BdJobTxn;

/* A job kind (QEMU's JobDriver + BlockJobDriver). */
typedef struct {
    const char *type;          /* JobType: "backup", "create", ... */
    size_t instance_size;      /* >= sizeof(BdJob); the job is zeroed */
    /* Block jobs appear in query-block-jobs, take block-job-* commands
     * and emit BLOCK_JOB_* events; "create" is not one. */
    gboolean is_block_job;
    /* Not 'busy' while it runs (QEMU's backup, whose coroutine waits in
     * job_yield() for its block-copy call from its first step on). */
    gboolean idle_while_running;

    /* The work, on the job thread.  Returns 0 or -errno (then *errp may
     * be set; otherwise strerror is the message).  Must call
     * bd_job_pause_point() (or sleep/ratelimit) between chunks and stop
     * soon once bd_job_is_cancelled(). */
    int (*run)(BdJob *job, GError **errp);
    /* job-complete in state ready (main thread); NULL: the verb gives
     * "The active block job 'x' cannot be completed". */
    gboolean (*complete)(BdJob *job, GError **errp);
    /* A cancel request (main thread): returns the effective 'force'.
     * NULL: every cancel is a forced one (QEMU's default). */
    gboolean (*cancel)(BdJob *job, gboolean force);
    /* Finalization, main thread, as QEMU: prepare (may fail: -errno,
     * then the whole transaction aborts), then commit on success or
     * abort on failure, then clean always. */
    int (*prepare)(BdJob *job);
    void (*commit)(BdJob *job);
    void (*abort)(BdJob *job);
    void (*clean)(BdJob *job);
    /* Release the driver's part of the job (main thread). */
    void (*free)(BdJob *job);
} BdJobDriver;

/* Rate limit state (QEMU's RateLimit: quota per time slice). */
typedef struct {
    int64_t slice_start_ns, slice_end_ns;
    uint64_t slice_quota, slice_ns, dispatched;
} BdRateLimit;

struct BdJob {
    /* Fixed at creation. */
    char *id;
    const BdJobDriver *driver;
    gboolean auto_finalize, auto_dismiss;

    /* Main thread. */
    BdJobStatus status;
    int refcnt;
    BdJobTxn *txn;
    int ret;                   /* result of run/prepare; -ECANCELED */
    GError *err;               /* message for ret != 0 */
    gboolean started;          /* the thread was spawned */
    gboolean deferred;         /* run returned; completion on main */
    int drained;               /* drained sections over its handles */
    unsigned unparks_seen;     /* resumed callbacks run (see parks) */
    GThread *thread;

    /* The work's result, written by the job thread as it ends and taken
     * into ret/err by the main thread once it has joined it. */
    int run_ret;
    GError *run_err;

    /* [lock]: the fields below, checked by BD_GUARDED_BY. */
    BdMutex lock;
    GCond cond;                /* [lock] pause/sleep/wake changes */
    int pause_count BD_GUARDED_BY(lock);       /* > 0: pause requested */
    gboolean user_paused BD_GUARDED_BY(lock);  /* by job-pause or 'stop' */
    gboolean paused BD_GUARDED_BY(lock);       /* job thread parked */
    unsigned parks BD_GUARDED_BY(lock);        /* times it parked */
    gboolean busy BD_GUARDED_BY(lock);         /* job thread working */
    gboolean cancelled BD_GUARDED_BY(lock);    /* cancel requested */
    gboolean force_cancel BD_GUARDED_BY(lock); /* ... and forced */
    unsigned wake_gen BD_GUARDED_BY(lock);     /* bumped by bd_job_enter */
    int64_t speed BD_GUARDED_BY(lock);         /* bytes/s, 0 = unlimited */
    BdRateLimit limit BD_GUARDED_BY(lock);
    BdIoStatus iostatus BD_GUARDED_BY(lock);
    uint64_t progress_current BD_GUARDED_BY(lock);
    uint64_t progress_total BD_GUARDED_BY(lock);
};

/* --- main thread: lifecycle --- */

/* Create a job in state 'created' with QEMU's id checks ("Invalid job
 * ID 'x'", "Job ID 'x' already in use").  txn NULL: a transaction of
 * its own.  The job list holds the returned (borrowed) job. */
BdJob *bd_job_create(const BdJobDriver *driver, const char *id,
                     gboolean auto_finalize, gboolean auto_dismiss,
                     BdJobTxn *txn, GError **errp);
/* Start the job's thread (state 'running'). */
void bd_job_start(BdJob *job);
/* Fail a created, never started job: it goes to 'null' and is freed. */
void bd_job_early_fail(BdJob *job);

BdJob *bd_job_ref(BdJob *job);
void bd_job_unref(BdJob *job);

BdJob *bd_job_find(const char *id);
/* Every job, in creation order (borrowed pointers). */
GPtrArray *bd_job_list(void);

/* Transactions (grouped completion): jobs added before they start. */
BdJobTxn *bd_job_txn_new(void);
void bd_job_txn_unref(BdJobTxn *txn);

/* --- main thread: verbs (QEMU's refusals) --- */

gboolean bd_job_apply_verb(BdJob *job, BdJobVerb verb, GError **errp);
gboolean bd_job_user_pause(BdJob *job, GError **errp);
gboolean bd_job_user_resume(BdJob *job, GError **errp);
/* job-cancel (force TRUE) and block-job-cancel. */
gboolean bd_job_user_cancel(BdJob *job, gboolean force, GError **errp);
gboolean bd_job_complete(BdJob *job, GError **errp);
gboolean bd_job_finalize(BdJob *job, GError **errp);
gboolean bd_job_dismiss(BdJob *job, GError **errp);
gboolean bd_job_set_speed(BdJob *job, int64_t speed, GError **errp);
/* Internal pause (drain, graph changes): counted apart from the user's. */
void bd_job_pause(BdJob *job);
void bd_job_resume(BdJob *job);
/* For bd_entry_set_drain_notify() on a job's handles: a drain pauses
 * the job, shown as QEMU shows it ('paused' or 'standby' while drained,
 * then back), unless it is not running or already paused. */
void bd_job_drain_notify(void *job, gboolean begin);
/* Cancel every job and wait (iterating the main context) until all
 * have finished.  Shutdown. */
void bd_job_cancel_sync_all(void);

/* --- main thread: queries --- */

const char *bd_job_status_name(BdJobStatus status);
const char *bd_job_verb_name(BdJobVerb verb);
/* TRUE in waiting, pending, aborting, concluded, null. */
gboolean bd_job_is_completed(BdJob *job);
gboolean bd_job_is_ready(BdJob *job);   /* ready or standby */
/* A consistent copy of the [lock] fields queries show. */
typedef struct {
    uint64_t current, total;
    int64_t speed;
    gboolean busy, paused, user_paused;
    BdIoStatus iostatus;
} BdJobSnapshot;
void bd_job_snapshot(BdJob *job, BdJobSnapshot *snap);
const char *bd_iostatus_name(BdIoStatus st);

/* --- job thread --- */

/* Park here while a pause is requested (and not cancelled). */
void bd_job_pause_point(BdJob *job);
/* Sleep up to 'ns' nanoseconds; returns early on cancel, pause or
 * bd_job_enter(); then a pause point. */
void bd_job_sleep(BdJob *job, int64_t ns);
/* Forced cancel requested: stop now (QEMU's job_is_cancelled). */
gboolean bd_job_is_cancelled(BdJob *job);
/* Any cancel requested (soft cancels included). */
gboolean bd_job_cancel_requested(BdJob *job);
/* A pause is requested and the next pause point would park: a job with
 * work in flight finishes it first. */
gboolean bd_job_pause_requested(BdJob *job);
void bd_job_progress_update(BdJob *job, uint64_t done);
void bd_job_progress_set_remaining(BdJob *job, uint64_t remaining);
void bd_job_progress_increase_remaining(BdJob *job, uint64_t delta);
/* Account 'bytes' copied against the speed limit... */
void bd_job_ratelimit_processed(BdJob *job, uint64_t bytes);
/* ...and sleep as long as the limit requires (a pause point too). */
void bd_job_ratelimit_sleep(BdJob *job);
/* How long bd_job_ratelimit_sleep would sleep now (ns), or 0. */
int64_t bd_job_ratelimit_delay(BdJob *job);
/* running -> ready, with BLOCK_JOB_READY (posted to the main thread). */
void bd_job_transition_to_ready(BdJob *job);
/* Decide what an I/O error 'error' (errno, positive) means under
 * 'on_err'; emits BLOCK_JOB_ERROR; 'stop' pauses the job as a user
 * pause (resumed by job-resume) and sets the I/O status. */
BdErrorAction bd_job_error_action(BdJob *job, BdOnError on_err,
                                  gboolean is_read, int error);

/* Any thread: wake the job thread from a sleep (complete, set-speed). */
void bd_job_enter(BdJob *job);

/* --- helpers for job kinds (main thread) --- */

/* Freeze every link from 'top' down to (not including) 'base' (NULL:
 * the whole chain) - the backing child of formats, the filtered child
 * of filters - so that graph changes refuse to touch them while the job
 * runs (graph/reopen.c gives "Cannot change frozen 'backing' link from
 * 'hd0' to 'hd1'").  As QEMU, a link already frozen cannot be frozen
 * again: "Cannot change 'backing' link from 'hd0' to 'hd1'"; nothing
 * changes then.  Unfreeze with the same top and base. */
gboolean bd_job_freeze_backing_chain(BdNode *top, BdNode *base,
                                     GError **errp);
void bd_job_unfreeze_backing_chain(BdNode *top, BdNode *base);

/* Rate limit arithmetic (exposed for tests). */
void bd_ratelimit_set_speed(BdRateLimit *limit, uint64_t speed,
                            uint64_t slice_ns);
int64_t bd_ratelimit_calculate_delay(BdRateLimit *limit, uint64_t n,
                                     int64_t now_ns);

#endif
