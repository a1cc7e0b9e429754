/* SPDX-License-Identifier: MIT */
/* The job thread's side of the job framework: the thread body, pause
 * points, sleeping, progress, the rate limiter and error actions.
 *
 * Thread model: the functions without a "main thread" note run on the
 * job's own thread.  They change [lock] fields under job->lock and post
 * what the main thread must turn into state transitions and events as
 * idle sources on the default main context; idle sources of one
 * priority run in the order they were attached, so the main thread sees
 * paused / resumed / ready / finished in the order they happened.  The
 * job outlives every source it posts: it cannot be dismissed before
 * bd_job_exit, the last one, has run.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include "graph/error.h"
#include "graph/events.h"
#include "graph/main-thread.h"
#include "jobs/job-int.h"

static void post(BdJob *job, GSourceFunc fn)
{
    /* Always queued (g_main_context_invoke could run 'fn' right here
     * if the main context happened to be free): an idle source on the
     * default context. */
    g_idle_add_full(G_PRIORITY_DEFAULT, fn, job, NULL);
}

gpointer bd_job_thread_main(gpointer opaque)
{
    BdJob *job = opaque;
    GError *err = NULL;
    int ret = job->driver->run(job, &err);

    if (ret > 0 || (ret == 0 && err)) {
        ret = err ? -EIO : 0;
    }
    /* ret and err are the main thread's (queries read them at any
     * time): bd_job_exit takes these over after joining us. */
    job->run_ret = ret;
    if (ret < 0) {
        job->run_err = err;
    } else {
        g_clear_error(&err);
    }
    post(job, bd_job_exit);
    return NULL;
}

/* --- pause, sleep, cancel --- */

/* Main thread: the job thread parked (or unparked) meanwhile. */
static gboolean paused_cb(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdJob *job = opaque;

    /* Parked and still asked to pause: a drain that has ended since
     * (bd_job_drain_notify) leaves the status alone. */
    bd_mutex_lock(&job->lock);
    gboolean parked = job->paused && job->pause_count > 0;
    bd_mutex_unlock(&job->lock);
    if (parked && job->status == BD_JOB_STATUS_RUNNING) {
        bd_job_transition(job, BD_JOB_STATUS_PAUSED);
    } else if (parked && job->status == BD_JOB_STATUS_READY) {
        bd_job_transition(job, BD_JOB_STATUS_STANDBY);
    }
    return G_SOURCE_REMOVE;
}

static gboolean resumed_cb(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdJob *job = opaque;

    /* The job thread parks and unparks in turn, posting paused_cb and
     * resumed_cb in that order: this is unpark number unparks_seen.  A
     * later park (an error stopped the job again right after a resume)
     * still shows this resume: 'running' now, 'paused' from the later
     * park's paused_cb, as QEMU's job passes through running. */
    bd_mutex_lock(&job->lock);
    gboolean parked = job->paused;
    gboolean parked_again = job->parks > ++job->unparks_seen;
    bd_mutex_unlock(&job->lock);
    if (!parked || parked_again) {
        if (job->status == BD_JOB_STATUS_PAUSED) {
            bd_job_transition(job, BD_JOB_STATUS_RUNNING);
        } else if (job->status == BD_JOB_STATUS_STANDBY) {
            bd_job_transition(job, BD_JOB_STATUS_READY);
        }
    }
    return G_SOURCE_REMOVE;
}

void bd_job_pause_point(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    if (job->pause_count > 0 && !job->force_cancel) {
        gboolean busy = job->busy;

        job->paused = TRUE;
        job->parks++;
        job->busy = FALSE;
        post(job, paused_cb);
        while (job->pause_count > 0 && !job->force_cancel) {
            bd_cond_wait(&job->cond, &job->lock);
        }
        job->paused = FALSE;
        job->busy = busy;
        post(job, resumed_cb);
    }
    bd_mutex_unlock(&job->lock);
}

void bd_job_sleep(BdJob *job, int64_t ns)
{
    bd_mutex_lock(&job->lock);
    if (job->pause_count == 0 && !job->force_cancel && ns > 0) {
        unsigned gen = job->wake_gen;
        gint64 end = g_get_monotonic_time() + (ns + 999) / 1000;
        gboolean busy = job->busy;

        job->busy = FALSE;
        while (job->wake_gen == gen && !job->force_cancel &&
               job->pause_count == 0) {
            if (!bd_cond_wait_until(&job->cond, &job->lock, end)) {
                break;
            }
        }
        job->busy = busy;
    }
    bd_mutex_unlock(&job->lock);
    bd_job_pause_point(job);
}

void bd_job_enter(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    job->wake_gen++;
    g_cond_broadcast(&job->cond);
    bd_mutex_unlock(&job->lock);
}

gboolean bd_job_is_cancelled(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    gboolean c = job->force_cancel;
    bd_mutex_unlock(&job->lock);
    return c;
}

gboolean bd_job_cancel_requested(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    gboolean c = job->cancelled;
    bd_mutex_unlock(&job->lock);
    return c;
}

gboolean bd_job_pause_requested(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    gboolean p = job->pause_count > 0 && !job->force_cancel;
    bd_mutex_unlock(&job->lock);
    return p;
}

/* --- progress --- */

void bd_job_progress_update(BdJob *job, uint64_t done)
{
    bd_mutex_lock(&job->lock);
    job->progress_current += done;
    bd_mutex_unlock(&job->lock);
}

void bd_job_progress_set_remaining(BdJob *job, uint64_t remaining)
{
    bd_mutex_lock(&job->lock);
    job->progress_total = job->progress_current + remaining;
    bd_mutex_unlock(&job->lock);
}

void bd_job_progress_increase_remaining(BdJob *job, uint64_t delta)
{
    bd_mutex_lock(&job->lock);
    job->progress_total += delta;
    bd_mutex_unlock(&job->lock);
}

/* --- rate limiting (QEMU's ratelimit.h arithmetic) --- */

void bd_ratelimit_set_speed(BdRateLimit *limit, uint64_t speed,
                            uint64_t slice_ns)
{
    limit->slice_ns = slice_ns;
    if (speed == 0) {
        limit->slice_quota = 0;
    } else {
        double quota = (double)speed * slice_ns / 1e9;
        limit->slice_quota = quota < 1 ? 1 : (uint64_t)quota;
    }
}

/* Account 'n' units; returns how long to wait (ns) before the next
 * request so that the quota per slice holds, or 0. */
int64_t bd_ratelimit_calculate_delay(BdRateLimit *limit, uint64_t n,
                                     int64_t now)
{
    if (!limit->slice_quota) {
        return 0;
    }
    if (limit->slice_end_ns < now) {
        /* The previous (possibly extended) slice is over: start anew. */
        limit->slice_start_ns = now;
        limit->slice_end_ns = now + limit->slice_ns;
        limit->dispatched = 0;
    }
    limit->dispatched += n;
    if (limit->dispatched < limit->slice_quota) {
        return 0;
    }
    /* Over quota: wait in proportion to the excess, then a new slice. */
    double slices = (double)limit->dispatched / limit->slice_quota;
    limit->slice_end_ns = limit->slice_start_ns +
                          (int64_t)(slices * limit->slice_ns);
    return limit->slice_end_ns - now;
}

static int64_t now_ns(void)
{
    return g_get_monotonic_time() * 1000;
}

void bd_job_ratelimit_processed(BdJob *job, uint64_t bytes)
{
    bd_mutex_lock(&job->lock);
    bd_ratelimit_calculate_delay(&job->limit, bytes, now_ns());
    bd_mutex_unlock(&job->lock);
}

int64_t bd_job_ratelimit_delay(BdJob *job)
{
    bd_mutex_lock(&job->lock);
    int64_t delay = bd_ratelimit_calculate_delay(&job->limit, 0, now_ns());
    bd_mutex_unlock(&job->lock);
    return delay;
}

void bd_job_ratelimit_sleep(BdJob *job)
{
    int64_t delay;

    /* Sleep at least once (a pause point); if woken early, wait out the
     * rest, recomputed each time in case the speed changed. */
    do {
        bd_mutex_lock(&job->lock);
        delay = bd_ratelimit_calculate_delay(&job->limit, 0, now_ns());
        bd_mutex_unlock(&job->lock);
        bd_job_sleep(job, delay);
    } while (delay > 0 && !bd_job_is_cancelled(job));
}

/* --- ready, errors --- */

static gboolean ready_cb(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    BdJob *job = opaque;

    if (job->status == BD_JOB_STATUS_RUNNING) {
        bd_job_transition(job, BD_JOB_STATUS_READY);
        bd_job_emit_block_event(job, "BLOCK_JOB_READY", NULL);
    }
    return G_SOURCE_REMOVE;
}

void bd_job_transition_to_ready(BdJob *job)
{
    post(job, ready_cb);
}

BdErrorAction bd_job_error_action(BdJob *job, BdOnError on_err,
                                  gboolean is_read, int error)
{
    static const char *const names[] = { "ignore", "report", "stop" };
    BdErrorAction action;

    switch (on_err) {
    case BD_ON_ERROR_ENOSPC:
    case BD_ON_ERROR_AUTO:
        action = error == ENOSPC ? BD_ERROR_ACTION_STOP
                                 : BD_ERROR_ACTION_REPORT;
        break;
    case BD_ON_ERROR_STOP:
        action = BD_ERROR_ACTION_STOP;
        break;
    case BD_ON_ERROR_IGNORE:
        action = BD_ERROR_ACTION_IGNORE;
        break;
    default:
        action = BD_ERROR_ACTION_REPORT;
        break;
    }
    if (job->driver->is_block_job) {
        GVariantDict d;
        g_variant_dict_init(&d, NULL);
        g_variant_dict_insert(&d, "device", "s", job->id);
        g_variant_dict_insert(&d, "operation", "s", is_read ? "read"
                                                            : "write");
        g_variant_dict_insert(&d, "action", "s", names[action]);
        bd_event_emit("BLOCK_JOB_ERROR", g_variant_dict_end(&d));
    }
    if (action == BD_ERROR_ACTION_STOP) {
        bd_mutex_lock(&job->lock);
        if (!job->user_paused) {
            /* A user-visible pause: job-resume continues. */
            job->pause_count++;
            job->user_paused = TRUE;
        }
        if (job->iostatus == BD_IOSTATUS_OK) {
            job->iostatus = error == ENOSPC ? BD_IOSTATUS_NOSPACE
                                            : BD_IOSTATUS_FAILED;
        }
        bd_mutex_unlock(&job->lock);
    }
    return action;
}
