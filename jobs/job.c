/* SPDX-License-Identifier: MIT */
/* The job state machine on the main thread: QEMU's transition and verb
 * tables, creation and start, the verbs, transactions, finalization and
 * the JOB_STATUS_CHANGE / BLOCK_JOB_* events.
 *
 * Thread model: every function here runs on the main thread (the job
 * thread's side is in job-thread.c).  The job thread reports the end of
 * its work through an idle source (job_exit); the main thread joins it
 * there.  Fields marked [lock] in job.h are read and written under
 * job->lock even here.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <string.h>
#include "graph/trace.h"
#include "graph/error.h"
#include "graph/events.h"
#include "graph/main-thread.h"
#include "jobs/job-int.h"

struct BdJobTxn {
    GList *jobs;          /* BdJob *, borrowed: a job leaves on conclude */
    int refcnt;
    gboolean aborting;
};

static GPtrArray *jobs;   /* BdJob *, one reference each */

/* Allowed transitions (QEMU's JobSTT), rows: from, columns: to. */
static const gboolean transitions[BD_JOB_STATUS__MAX][BD_JOB_STATUS__MAX] = {
                                 /* U, C, R, P, Y, S, W, D, X, E, N */
    [BD_JOB_STATUS_UNDEFINED] =    { 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
    [BD_JOB_STATUS_CREATED] =      { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1 },
    [BD_JOB_STATUS_RUNNING] =      { 0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0 },
    [BD_JOB_STATUS_PAUSED] =       { 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 },
    [BD_JOB_STATUS_READY] =        { 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0 },
    [BD_JOB_STATUS_STANDBY] =      { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    [BD_JOB_STATUS_WAITING] =      { 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0 },
    [BD_JOB_STATUS_PENDING] =      { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    [BD_JOB_STATUS_ABORTING] =     { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    [BD_JOB_STATUS_CONCLUDED] =    { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    [BD_JOB_STATUS_NULL] =         { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* Verbs accepted per state (QEMU's JobVerbTable). */
static const gboolean verbs[BD_JOB_VERB__MAX][BD_JOB_STATUS__MAX] = {
                                 /* U, C, R, P, Y, S, W, D, X, E, N */
    [BD_JOB_VERB_CANCEL] =         { 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 },
    [BD_JOB_VERB_PAUSE] =          { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [BD_JOB_VERB_RESUME] =         { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [BD_JOB_VERB_SET_SPEED] =      { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [BD_JOB_VERB_COMPLETE] =       { 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0 },
    [BD_JOB_VERB_FINALIZE] =       { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 },
    [BD_JOB_VERB_DISMISS] =        { 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
};

static const char *const status_names[BD_JOB_STATUS__MAX] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null",
};

static const char *const verb_names[BD_JOB_VERB__MAX] = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize",
    "dismiss",
};

const char *bd_job_status_name(BdJobStatus status)
{
    return status < BD_JOB_STATUS__MAX ? status_names[status] : "undefined";
}

const char *bd_job_verb_name(BdJobVerb verb)
{
    return verb < BD_JOB_VERB__MAX ? verb_names[verb] : "?";
}

/* --- events --- */

static void emit_status_change(BdJob *job)
{
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "id", "s", job->id);
    g_variant_dict_insert(&d, "status", "s", bd_job_status_name(job->status));
    bd_event_emit("JOB_STATUS_CHANGE", g_variant_dict_end(&d));
}

/* BLOCK_JOB_COMPLETED / _CANCELLED / _READY data: type, device, len,
 * offset, speed (+ error). */
void bd_job_emit_block_event(BdJob *job, const char *name,
                             const char *error)
{
    BD_GLOBAL_STATE_CODE();

    BdJobSnapshot s;
    GVariantDict d;

    if (!job->driver->is_block_job) {
        return;
    }
    bd_job_snapshot(job, &s);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "type", "s", job->driver->type);
    g_variant_dict_insert(&d, "device", "s", job->id);
    g_variant_dict_insert(&d, "len", "x", (gint64)s.total);
    g_variant_dict_insert(&d, "offset", "x", (gint64)s.current);
    g_variant_dict_insert(&d, "speed", "x", (gint64)s.speed);
    if (error) {
        g_variant_dict_insert(&d, "error", "s", error);
    }
    bd_event_emit(name, g_variant_dict_end(&d));
}

static void emit_pending(BdJob *job)
{
    GVariantDict d;

    if (!job->driver->is_block_job) {
        return;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "type", "s", job->driver->type);
    g_variant_dict_insert(&d, "id", "s", job->id);
    bd_event_emit("BLOCK_JOB_PENDING", g_variant_dict_end(&d));
}

/* --- state --- */

void bd_job_transition(BdJob *job, BdJobStatus to)
{
    BD_GLOBAL_STATE_CODE();

    BdJobStatus from = job->status;

    if (!transitions[from][to]) {
        /* A bug, never client input: the verb table refuses what a
         * state does not accept before anything moves.  Carrying on
         * would emit events out of order and finalize a transaction
         * twice, so every build stops here, as QEMU's job_state_
         * transition() asserts. */
        g_error("job '%s': invalid state transition %s -> %s", job->id,
                bd_job_status_name(from), bd_job_status_name(to));
    }
    job->status = to;
    if (from != to) {
        g_info("job '%s' (%s): %s -> %s%s%s", job->id, job->driver->type,
               bd_job_status_name(from), bd_job_status_name(to),
               job->err ? ": " : "", job->err ? job->err->message : "");
        BD_TRACE(BD_TRACE_JOB_STATUS_CHANGE, "job=%s type=%s %s -> %s",
                 job->id, job->driver->type, bd_job_status_name(from),
                 bd_job_status_name(to));
        /* QEMU's job_state_transition, with the error if any. */
        BD_TRACE(BD_TRACE_JOB_STATE_TRANSITION,
                 "job=%s ret=%d %s -> %s%s%s", job->id, job->err ? -1 : 0,
                 bd_job_status_name(from), bd_job_status_name(to),
                 job->err ? " error=" : "",
                 job->err ? job->err->message : "");
        emit_status_change(job);
    }
}

gboolean bd_job_apply_verb(BdJob *job, BdJobVerb verb, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    /* QEMU's job_apply_verb: "job %p in state %s; applying verb %s (%s)". */
    BD_TRACE(BD_TRACE_JOB_APPLY_VERB, "job=%s state=%s verb=%s %s", job->id,
             bd_job_status_name(job->status), bd_job_verb_name(verb),
             verbs[verb][job->status] ? "allowed" : "prohibited");
    if (verbs[verb][job->status]) {
        return TRUE;
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Job '%s' in state '%s' cannot accept command verb '%s'",
                job->id, bd_job_status_name(job->status),
                bd_job_verb_name(verb));
    return FALSE;
}

gboolean bd_job_is_completed(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    switch (job->status) {
    case BD_JOB_STATUS_WAITING:
    case BD_JOB_STATUS_PENDING:
    case BD_JOB_STATUS_ABORTING:
    case BD_JOB_STATUS_CONCLUDED:
    case BD_JOB_STATUS_NULL:
        return TRUE;
    default:
        return FALSE;
    }
}

gboolean bd_job_is_ready(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    return job->status == BD_JOB_STATUS_READY ||
           job->status == BD_JOB_STATUS_STANDBY;
}

/* --- lifecycle --- */

BdJob *bd_job_find(const char *id)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; jobs && i < jobs->len; i++) {
        BdJob *job = jobs->pdata[i];
        if (strcmp(job->id, id) == 0) {
            return job;
        }
    }
    return NULL;
}

GPtrArray *bd_job_list(void)
{
    BD_GLOBAL_STATE_CODE();

    if (!jobs) {
        jobs = g_ptr_array_new();
    }
    return jobs;
}

BdJobTxn *bd_job_txn_new(void)
{
    BD_GLOBAL_STATE_CODE();

    BdJobTxn *txn = g_new0(BdJobTxn, 1);

    txn->refcnt = 1;
    return txn;
}

void bd_job_txn_unref(BdJobTxn *txn)
{
    BD_GLOBAL_STATE_CODE();

    if (txn && --txn->refcnt == 0) {
        g_assert(!txn->jobs);
        g_free(txn);
    }
}

static void txn_del_job(BdJob *job)
{
    if (job->txn) {
        job->txn->jobs = g_list_remove(job->txn->jobs, job);
        bd_job_txn_unref(job->txn);
        job->txn = NULL;
    }
}

BdJob *bd_job_create(const BdJobDriver *driver, const char *id,
                     gboolean auto_finalize, gboolean auto_dismiss,
                     BdJobTxn *txn, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(driver->instance_size >= sizeof(BdJob));
    if (!id || !bd_id_wellformed(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Invalid job ID '%s'",
                    id ? id : "");
        return NULL;
    }
    if (bd_job_find(id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Job ID '%s' already in use", id);
        return NULL;
    }
    BdJob *job = g_malloc0(driver->instance_size);
    job->id = g_strdup(id);
    job->driver = driver;
    job->auto_finalize = auto_finalize;
    job->auto_dismiss = auto_dismiss;
    job->refcnt = 1;
    bd_mutex_init(&job->lock);
    g_cond_init(&job->cond);
    bd_mutex_lock(&job->lock);
    job->pause_count = 1;     /* bd_job_start() lifts it */
    job->paused = TRUE;
    bd_mutex_unlock(&job->lock);
    if (txn) {
        txn->refcnt++;
    } else {
        txn = bd_job_txn_new();
    }
    job->txn = txn;
    txn->jobs = g_list_append(txn->jobs, job);
    g_ptr_array_add(bd_job_list(), job);
    bd_job_transition(job, BD_JOB_STATUS_CREATED);
    return job;
}

BdJob *bd_job_ref(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    job->refcnt++;
    return job;
}

void bd_job_unref(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    if (!job || --job->refcnt > 0) {
        return;
    }
    g_assert(job->status == BD_JOB_STATUS_NULL);
    g_assert(!job->thread);
    if (job->driver->free) {
        job->driver->free(job);
    }
    g_clear_error(&job->err);
    g_clear_error(&job->run_err);
    bd_mutex_destroy(&job->lock);
    g_cond_clear(&job->cond);
    g_free(job->id);
    g_free(job);
}

void bd_job_start(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(job->status == BD_JOB_STATUS_CREATED && !job->started);
    bd_mutex_lock(&job->lock);
    job->pause_count--;
    job->busy = !job->driver->idle_while_running;
    job->paused = FALSE;
    bd_mutex_unlock(&job->lock);
    job->started = TRUE;
    bd_job_transition(job, BD_JOB_STATUS_RUNNING);
    job->thread = g_thread_new("bd-job", bd_job_thread_main, job);
}

static void do_dismiss(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    job->busy = FALSE;
    job->paused = FALSE;
    bd_mutex_unlock(&job->lock);
    job->deferred = TRUE;
    txn_del_job(job);
    bd_job_transition(job, BD_JOB_STATUS_NULL);
    g_ptr_array_remove(jobs, job);
    bd_job_unref(job);
}

static void update_rc(BdJob *job)
{
    if (!job->ret && bd_job_is_cancelled(job)) {
        job->ret = -ECANCELED;
    }
    if (job->ret) {
        if (!job->err) {
            job->err = g_error_new(BD_ERROR, BD_ERROR_GENERIC, "%s",
                                   g_strerror(-job->ret));
        }
        bd_job_transition(job, BD_JOB_STATUS_ABORTING);
    }
}

static void conclude(BdJob *job)
{
    bd_job_transition(job, BD_JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss || !job->started) {
        do_dismiss(job);
    }
}

static void finalize_single(BdJob *job)
{
    update_rc(job);
    if (!job->ret) {
        if (job->driver->commit) {
            job->driver->commit(job);
        }
    } else if (job->driver->abort) {
        job->driver->abort(job);
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    if (job->started) {
        if (bd_job_is_cancelled(job)) {
            bd_job_emit_block_event(job, "BLOCK_JOB_CANCELLED", NULL);
        } else {
            bd_job_emit_block_event(job, "BLOCK_JOB_COMPLETED",
                                    job->ret ? job->err->message : NULL);
        }
    }
    txn_del_job(job);
    conclude(job);
}

static void cancel_async(BdJob *job, gboolean force)
{
    force = job->driver->cancel ? job->driver->cancel(job, force) : TRUE;
    bd_mutex_lock(&job->lock);
    if (job->user_paused) {
        job->user_paused = FALSE;
        job->pause_count--;
    }
    /* A soft cancel after the work is done changes nothing. */
    if (force || !job->deferred) {
        job->cancelled = TRUE;
        job->force_cancel |= force;
    }
    job->wake_gen++;
    g_cond_broadcast(&job->cond);
    bd_mutex_unlock(&job->lock);
}

/* Once every job of an aborting transaction has stopped working,
 * finalize them all (QEMU waits for them synchronously; we wait for
 * their job_exit instead). */
static void txn_finish_abort(BdJobTxn *txn)
{
    for (GList *l = txn->jobs; l; l = l->next) {
        BdJob *other = l->data;
        if (other->started && !other->deferred) {
            return;
        }
    }
    txn->refcnt++;
    while (txn->jobs) {
        BdJob *other = bd_job_ref(txn->jobs->data);
        finalize_single(other);
        bd_job_unref(other);
    }
    bd_job_txn_unref(txn);
}

static void txn_abort(BdJob *job)
{
    BdJobTxn *txn = job->txn;

    if (!txn) {
        return;
    }
    if (!txn->aborting) {
        txn->aborting = TRUE;
        for (GList *l = txn->jobs; l; l = l->next) {
            if (l->data != job) {
                cancel_async(l->data, FALSE);
            }
        }
    }
    txn_finish_abort(txn);
}

static void do_finalize(BdJob *job)
{
    BdJobTxn *txn = job->txn;
    gboolean failed = FALSE;

    txn->refcnt++;
    for (GList *l = txn->jobs; l && !failed; l = l->next) {
        BdJob *j = l->data;
        if (!j->ret && j->driver->prepare) {
            j->ret = j->driver->prepare(j);
        }
        update_rc(j);
        failed = j->ret != 0;
    }
    if (failed) {
        txn_abort(job);
    } else {
        while (txn->jobs) {
            BdJob *j = bd_job_ref(txn->jobs->data);
            finalize_single(j);
            bd_job_unref(j);
        }
    }
    bd_job_txn_unref(txn);
}

static void txn_success(BdJob *job)
{
    BdJobTxn *txn = job->txn;
    gboolean manual = FALSE;

    bd_job_transition(job, BD_JOB_STATUS_WAITING);
    for (GList *l = txn->jobs; l; l = l->next) {
        if (!bd_job_is_completed(l->data)) {
            return;
        }
    }
    for (GList *l = txn->jobs; l; l = l->next) {
        BdJob *j = l->data;
        bd_job_transition(j, BD_JOB_STATUS_PENDING);
        if (!j->auto_finalize) {
            emit_pending(j);
            manual = TRUE;
        }
    }
    if (!manual) {
        do_finalize(job);
    }
}

static void job_completed(BdJob *job)
{
    update_rc(job);
    if (job->ret || (job->txn && job->txn->aborting)) {
        txn_abort(job);
    } else {
        txn_success(job);
    }
}

/* The job thread's work has returned (posted by job-thread.c). */
gboolean bd_job_exit(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdJob *job = opaque;

    g_thread_join(job->thread);
    job->thread = NULL;
    job->ret = job->run_ret;
    if (job->run_ret < 0) {
        job->err = g_steal_pointer(&job->run_err);
    }
    job->deferred = TRUE;
    bd_mutex_lock(&job->lock);
    job->busy = FALSE;
    bd_mutex_unlock(&job->lock);
    bd_job_ref(job);
    job_completed(job);
    bd_job_unref(job);
    return G_SOURCE_REMOVE;
}

void bd_job_early_fail(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    g_assert(job->status == BD_JOB_STATUS_CREATED && !job->started);
    do_dismiss(job);
}

/* --- verbs --- */

static void job_cancel(BdJob *job, gboolean force)
{
    if (job->status == BD_JOB_STATUS_CONCLUDED) {
        do_dismiss(job);
        return;
    }
    bd_job_ref(job);
    cancel_async(job, force);
    if (!job->started) {
        job_completed(job);
    } else if (job->deferred) {
        if (bd_job_is_cancelled(job)) {
            txn_abort(job);
        }
    }
    bd_job_unref(job);
}

gboolean bd_job_user_cancel(BdJob *job, gboolean force, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_job_apply_verb(job, BD_JOB_VERB_CANCEL, errp)) {
        return FALSE;
    }
    job_cancel(job, force);
    return TRUE;
}

void bd_job_pause(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&job->lock);
    job->pause_count++;
    job->wake_gen++;
    g_cond_broadcast(&job->cond);
    bd_mutex_unlock(&job->lock);
}

void bd_job_resume(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&job->lock);
    if (job->pause_count > 0 && --job->pause_count == 0) {
        g_cond_broadcast(&job->cond);
    }
    bd_mutex_unlock(&job->lock);
}

/* QEMU's child_job_drained_begin/end: job_pause and job_resume; the
 * job reaches its pause point while the drain polls, so the status
 * changes are seen before the drained operation goes on.  Here they are
 * made at once (the job's handles admit nothing meanwhile anyway), and
 * undone at the end unless something else keeps the job paused. */
void bd_job_drain_notify(void *opaque, gboolean begin)
{
    BD_GLOBAL_STATE_CODE();

    BdJob *job = opaque;
    gboolean paused;

    if (begin) {
        bd_job_pause(job);
        if (job->drained++ == 0) {
            if (job->status == BD_JOB_STATUS_RUNNING) {
                bd_job_transition(job, BD_JOB_STATUS_PAUSED);
            } else if (job->status == BD_JOB_STATUS_READY) {
                bd_job_transition(job, BD_JOB_STATUS_STANDBY);
            }
        }
        return;
    }
    g_return_if_fail(job->drained > 0);
    bd_job_resume(job);
    if (--job->drained > 0) {
        return;
    }
    bd_mutex_lock(&job->lock);
    paused = job->pause_count > 0;
    bd_mutex_unlock(&job->lock);
    if (paused) {
        return;
    }
    if (job->status == BD_JOB_STATUS_PAUSED) {
        bd_job_transition(job, BD_JOB_STATUS_RUNNING);
    } else if (job->status == BD_JOB_STATUS_STANDBY) {
        bd_job_transition(job, BD_JOB_STATUS_READY);
    }
}

gboolean bd_job_user_pause(BdJob *job, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gboolean already;

    if (!bd_job_apply_verb(job, BD_JOB_VERB_PAUSE, errp)) {
        return FALSE;
    }
    bd_mutex_lock(&job->lock);
    already = job->user_paused;
    job->user_paused = TRUE;
    bd_mutex_unlock(&job->lock);
    if (already) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Job is already paused");
        return FALSE;
    }
    bd_job_pause(job);
    return TRUE;
}

gboolean bd_job_user_resume(BdJob *job, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    gboolean paused;

    bd_mutex_lock(&job->lock);
    paused = job->user_paused && job->pause_count > 0;
    bd_mutex_unlock(&job->lock);
    if (!paused) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Can't resume a job that was not paused");
        return FALSE;
    }
    if (!bd_job_apply_verb(job, BD_JOB_VERB_RESUME, errp)) {
        return FALSE;
    }
    bd_mutex_lock(&job->lock);
    job->user_paused = FALSE;
    if (job->driver->is_block_job) {
        job->iostatus = BD_IOSTATUS_OK;
    }
    bd_mutex_unlock(&job->lock);
    bd_job_resume(job);
    return TRUE;
}

gboolean bd_job_complete(BdJob *job, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_job_apply_verb(job, BD_JOB_VERB_COMPLETE, errp)) {
        return FALSE;
    }
    if (bd_job_cancel_requested(job) || !job->driver->complete) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The active block job '%s' cannot be completed",
                    job->id);
        return FALSE;
    }
    return job->driver->complete(job, errp);
}

gboolean bd_job_finalize(BdJob *job, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_job_apply_verb(job, BD_JOB_VERB_FINALIZE, errp)) {
        return FALSE;
    }
    bd_job_ref(job);
    do_finalize(job);
    bd_job_unref(job);
    return TRUE;
}

gboolean bd_job_dismiss(BdJob *job, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_job_apply_verb(job, BD_JOB_VERB_DISMISS, errp)) {
        return FALSE;
    }
    do_dismiss(job);
    return TRUE;
}

gboolean bd_job_set_speed(BdJob *job, int64_t speed, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_job_apply_verb(job, BD_JOB_VERB_SET_SPEED, errp)) {
        return FALSE;
    }
    if (speed < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return FALSE;
    }
    bd_mutex_lock(&job->lock);
    int64_t old = job->speed;
    job->speed = speed;
    bd_ratelimit_set_speed(&job->limit, speed, BD_JOB_SLICE_NS);
    if (speed == 0 || speed > old) {
        /* Let a sleeping job recompute its delay. */
        job->wake_gen++;
        g_cond_broadcast(&job->cond);
    }
    bd_mutex_unlock(&job->lock);
    return TRUE;
}

static gboolean any_job_working(void)
{
    for (guint i = 0; jobs && i < jobs->len; i++) {
        BdJob *job = jobs->pdata[i];
        if (job->started && !job->deferred) {
            return TRUE;
        }
    }
    return FALSE;
}

void bd_job_cancel_sync_all(void)
{
    BD_GLOBAL_STATE_CODE();

    /* Own the context so that no job thread runs a main-loop callback
     * itself while we wait between iterations. */
    g_main_context_acquire(NULL);
    while (jobs && jobs->len) {
        g_autoptr(GPtrArray) snap = g_ptr_array_copy(jobs, NULL, NULL);
        for (guint i = 0; i < snap->len; i++) {
            bd_job_ref(snap->pdata[i]);
        }
        for (guint i = 0; i < snap->len; i++) {
            BdJob *job = snap->pdata[i];
            if (job->status != BD_JOB_STATUS_NULL) {
                job_cancel(job, TRUE);
            }
        }
        for (guint i = 0; i < snap->len; i++) {
            bd_job_unref(snap->pdata[i]);
        }
        while (any_job_working()) {
            g_main_context_iteration(NULL, TRUE);
        }
    }
    g_main_context_release(NULL);
}

/* --- queries --- */

void bd_job_snapshot(BdJob *job, BdJobSnapshot *s)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&job->lock);
    s->current = job->progress_current;
    s->total = job->progress_total;
    s->speed = job->speed;
    s->busy = job->busy;
    s->paused = job->pause_count > 0;
    s->user_paused = job->user_paused;
    s->iostatus = job->iostatus;
    bd_mutex_unlock(&job->lock);
}

const char *bd_iostatus_name(BdIoStatus st)
{
    switch (st) {
    case BD_IOSTATUS_FAILED:
        return "failed";
    case BD_IOSTATUS_NOSPACE:
        return "nospace";
    default:
        return "ok";
    }
}

/* --- backing chain freezing --- */

/* QEMU's bdrv_filter_or_cow_child(). */
static BdChild *filter_or_cow_child(BdNode *node)
{
    return node->drv->is_filter ? bd_node_filtered_child(node)
                                : node->backing;
}

gboolean bd_job_freeze_backing_chain(BdNode *top, BdNode *base,
                                     GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *c;

    for (BdNode *n = top; n && n != base; n = c ? c->node : NULL) {
        c = filter_or_cow_child(n);
        if (c && c->frozen) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot change '%s' link from '%s' to '%s'",
                        c->name, n->node_name, c->node->node_name);
            return FALSE;
        }
    }
    for (BdNode *n = top; n && n != base; n = c ? c->node : NULL) {
        c = filter_or_cow_child(n);
        if (c) {
            c->frozen++;
        }
    }
    return TRUE;
}

void bd_job_unfreeze_backing_chain(BdNode *top, BdNode *base)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *c;

    for (BdNode *n = top; n && n != base; n = c ? c->node : NULL) {
        c = filter_or_cow_child(n);
        if (c && c->frozen > 0) {
            c->frozen--;
        }
    }
}
