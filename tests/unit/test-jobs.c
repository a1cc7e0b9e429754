/* SPDX-License-Identifier: MIT */
/* Unit tests of the job framework: a test job kind copies a buffer in
 * chunks (optionally reaching 'ready' like mirror, or failing at a
 * chunk) and the tests drive QEMU's lifecycle, verbs, pause/resume,
 * cancel, speed, error actions and transactions through the events the
 * framework publishes.
 *
 * Thread model: the test holds the default main context for its whole
 * run and iterates it until the condition it waits for holds; jobs run
 * on their own threads.  No assertion depends on timing.
 */
#include <errno.h>
#include <string.h>
#include "graph/error.h"
#include "graph/events.h"
#include "jobs/job-int.h"

#define CHUNK 4096
#define NCHUNKS 64

typedef struct {
    BdJob common;
    guint8 src[CHUNK * NCHUNKS];
    guint8 dst[CHUNK * NCHUNKS];
    gboolean wait_ready;      /* stay in 'ready' until complete/cancel */
    int fail_chunk;           /* < 0: none */
    int fail_errno;
    BdOnError on_err;
    gboolean should_complete; /* [lock] set by complete */
    gboolean soft_cancel_ok;  /* .cancel returns FALSE in ready */
    int commits, aborts, cleans, prepares;
    int prepare_ret;
} TestJob;

/* --- events --- */

static GMutex ev_lock;
static GPtrArray *events;     /* char *: "NAME" or "NAME:detail" */

static void sink(const char *name, GVariant *data, gpointer opaque)
{
    g_autoptr(GVariant) d = data ? g_variant_ref_sink(data) : NULL;
    const char *detail = NULL;
    char *entry;

    if (d && !g_variant_lookup(d, "status", "&s", &detail)) {
        g_variant_lookup(d, "action", "&s", &detail);
    }
    if (d && strcmp(name, "BLOCK_JOB_COMPLETED") == 0 &&
        g_variant_lookup(d, "error", "&s", &detail)) {
        entry = g_strdup_printf("%s:error=%s", name, detail);
    } else {
        entry = detail ? g_strdup_printf("%s:%s", name, detail)
                       : g_strdup(name);
    }
    g_mutex_lock(&ev_lock);
    g_ptr_array_add(events, entry);
    g_mutex_unlock(&ev_lock);
}

/* The events so far, joined by spaces; clears the list. */
static char *take_events(void)
{
    GString *s = g_string_new(NULL);

    g_mutex_lock(&ev_lock);
    for (guint i = 0; i < events->len; i++) {
        g_string_append_printf(s, "%s%s", i ? " " : "",
                               (char *)events->pdata[i]);
    }
    g_ptr_array_set_size(events, 0);
    g_mutex_unlock(&ev_lock);
    return g_string_free(s, FALSE);
}

/* --- the test job --- */

static int test_run(BdJob *job, GError **errp)
{
    TestJob *t = (TestJob *)job;

    bd_job_progress_set_remaining(job, sizeof(t->src));
    for (int i = 0; i < NCHUNKS; i++) {
        if (bd_job_is_cancelled(job)) {
            return -ECANCELED;
        }
        while (i == t->fail_chunk) {
            BdErrorAction a = bd_job_error_action(job, t->on_err, TRUE,
                                                  t->fail_errno);
            if (a == BD_ERROR_ACTION_REPORT) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "chunk %d: %s", i, g_strerror(t->fail_errno));
                return -t->fail_errno;
            }
            if (a == BD_ERROR_ACTION_IGNORE) {
                break;
            }
            /* stop: the job is paused; after resume the "retry" works */
            t->fail_chunk = -1;
            bd_job_pause_point(job);
        }
        memcpy(t->dst + i * CHUNK, t->src + i * CHUNK, CHUNK);
        bd_job_progress_update(job, CHUNK);
        bd_job_ratelimit_processed(job, CHUNK);
        bd_job_ratelimit_sleep(job);
    }
    if (t->wait_ready) {
        bd_job_transition_to_ready(job);
        for (;;) {
            bd_mutex_lock(&job->lock);
            gboolean done = t->should_complete;
            bd_mutex_unlock(&job->lock);
            if (done || bd_job_cancel_requested(job)) {
                break;
            }
            bd_job_sleep(job, G_TIME_SPAN_SECOND * 1000ll);
        }
    }
    return 0;
}

static gboolean test_complete(BdJob *job, GError **errp)
{
    TestJob *t = (TestJob *)job;

    bd_mutex_lock(&job->lock);
    t->should_complete = TRUE;
    bd_mutex_unlock(&job->lock);
    bd_job_enter(job);
    return TRUE;
}

static gboolean test_cancel(BdJob *job, gboolean force)
{
    TestJob *t = (TestJob *)job;

    /* As mirror: a soft cancel of a ready job completes it. */
    return !(t->soft_cancel_ok && bd_job_is_ready(job)) || force;
}

static int test_prepare(BdJob *job)
{
    TestJob *t = (TestJob *)job;

    t->prepares++;
    return t->prepare_ret;
}
static void test_commit(BdJob *job) { ((TestJob *)job)->commits++; }
static void test_abort(BdJob *job) { ((TestJob *)job)->aborts++; }
static void test_clean(BdJob *job) { ((TestJob *)job)->cleans++; }

static const BdJobDriver test_driver = {
    .type = "backup",
    .instance_size = sizeof(TestJob),
    .is_block_job = TRUE,
    .run = test_run,
    .complete = test_complete,
    .cancel = test_cancel,
    .prepare = test_prepare,
    .commit = test_commit,
    .abort = test_abort,
    .clean = test_clean,
};

static TestJob *new_job(const char *id, gboolean auto_fin,
                        gboolean auto_dis, BdJobTxn *txn)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = (TestJob *)bd_job_create(&test_driver, id, auto_fin,
                                          auto_dis, txn, &err);

    g_assert_no_error(err);
    g_assert_nonnull(t);
    for (gsize i = 0; i < sizeof(t->src); i++) {
        t->src[i] = (guint8)(i * 7 + 1);
    }
    t->fail_chunk = -1;
    return t;
}

/* --- waiting --- */

static void wait_status(BdJob *job, BdJobStatus st)
{
    while (job->status != st) {
        g_main_context_iteration(NULL, TRUE);
    }
}

static void wait_gone(const char *id)
{
    while (bd_job_find(id)) {
        g_main_context_iteration(NULL, TRUE);
    }
}

static void drain_loop(void)
{
    while (g_main_context_iteration(NULL, FALSE)) {
    }
}

/* The call fails with exactly 'msg' (the call runs first). */
#define expect_error(call, err, msg) do {                   \
        gboolean ok_ = (call);                              \
        g_assert_false(ok_);                                \
        g_assert_nonnull(err);                              \
        g_assert_cmpstr((err)->message, ==, (msg));         \
    } while (0)

/* --- tests --- */

static void test_lifecycle_auto(void)
{
    TestJob *t = new_job("j0", TRUE, TRUE, NULL);
    /* Kept past dismissal to check the callbacks. */
    BdJob *job = bd_job_ref(&t->common);

    bd_job_start(job);
    wait_gone("j0");
    g_assert_cmpmem(t->src, sizeof(t->src), t->dst, sizeof(t->dst));
    g_assert_cmpint(t->prepares, ==, 1);
    g_assert_cmpint(t->commits, ==, 1);
    g_assert_cmpint(t->aborts, ==, 0);
    g_assert_cmpint(t->cleans, ==, 1);
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:waiting JOB_STATUS_CHANGE:pending "
        "BLOCK_JOB_COMPLETED JOB_STATUS_CHANGE:concluded "
        "JOB_STATUS_CHANGE:null");
    bd_job_unref(job);
}

static void test_manual_finalize_dismiss(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("j1", FALSE, FALSE, NULL);
    BdJob *job = &t->common;

    expect_error(bd_job_finalize(job, &err), err,
                 "Job 'j1' in state 'created' cannot accept command verb "
                 "'finalize'");
    g_clear_error(&err);
    bd_job_start(job);
    wait_status(job, BD_JOB_STATUS_PENDING);
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:waiting JOB_STATUS_CHANGE:pending "
        "BLOCK_JOB_PENDING");
    g_assert_cmpint(t->commits, ==, 0);
    expect_error(bd_job_dismiss(job, &err), err,
                 "Job 'j1' in state 'pending' cannot accept command verb "
                 "'dismiss'");
    g_clear_error(&err);
    expect_error(bd_job_user_pause(job, &err), err,
                 "Job 'j1' in state 'pending' cannot accept command verb "
                 "'pause'");
    g_clear_error(&err);
    g_assert_true(bd_job_finalize(job, &err));
    g_assert_no_error(err);
    g_assert_cmpint(job->status, ==, BD_JOB_STATUS_CONCLUDED);
    g_assert_cmpint(t->commits, ==, 1);
    g_free(ev);
    ev = take_events();
    g_assert_cmpstr(ev, ==,
        "BLOCK_JOB_COMPLETED JOB_STATUS_CHANGE:concluded");
    expect_error(bd_job_user_cancel(job, TRUE, &err), err,
                 "Job 'j1' in state 'concluded' cannot accept command verb "
                 "'cancel'");
    g_clear_error(&err);
    g_assert_true(bd_job_dismiss(job, &err));
    g_assert_null(bd_job_find("j1"));
    g_free(ev);
    ev = take_events();
    g_assert_cmpstr(ev, ==, "JOB_STATUS_CHANGE:null");
}

static void test_ids(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("dup", TRUE, TRUE, NULL);

    g_assert_null(bd_job_create(&test_driver, "dup", TRUE, TRUE, NULL,
                                &err));
    g_assert_cmpstr(err->message, ==, "Job ID 'dup' already in use");
    g_clear_error(&err);
    g_assert_null(bd_job_create(&test_driver, "1x", TRUE, TRUE, NULL,
                                &err));
    g_assert_cmpstr(err->message, ==, "Invalid job ID '1x'");
    g_clear_error(&err);
    /* A job that never started is dismissed at once by cancel. */
    g_assert_true(bd_job_user_cancel(&t->common, TRUE, &err));
    g_assert_null(bd_job_find("dup"));
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:aborting "
        "JOB_STATUS_CHANGE:concluded JOB_STATUS_CHANGE:null");
}

static void test_pause_resume(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("p", TRUE, FALSE, NULL);
    BdJob *job = &t->common;

    expect_error(bd_job_user_resume(job, &err), err,
                 "Can't resume a job that was not paused");
    g_clear_error(&err);
    /* Paused before it starts: it parks at its first pause point. */
    g_assert_true(bd_job_user_pause(job, &err));
    expect_error(bd_job_user_pause(job, &err), err, "Job is already paused");
    g_clear_error(&err);
    bd_job_start(job);
    wait_status(job, BD_JOB_STATUS_PAUSED);
    BdJobSnapshot s;
    bd_job_snapshot(job, &s);
    g_assert_true(s.paused);
    g_assert_false(s.busy);
    g_assert_cmpuint(s.current, <, s.total);
    /* An internal pause on top: the user's resume leaves it paused. */
    bd_job_pause(job);
    g_assert_true(bd_job_user_resume(job, &err));
    drain_loop();
    g_assert_cmpint(job->status, ==, BD_JOB_STATUS_PAUSED);
    bd_job_resume(job);
    wait_status(job, BD_JOB_STATUS_CONCLUDED);
    g_assert_cmpmem(t->src, sizeof(t->src), t->dst, sizeof(t->dst));
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:paused JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:waiting JOB_STATUS_CHANGE:pending "
        "BLOCK_JOB_COMPLETED JOB_STATUS_CHANGE:concluded");
    g_assert_true(bd_job_dismiss(job, &err));
    g_free(take_events());
}

static void test_cancel_running(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("c", TRUE, FALSE, NULL);
    BdJob *job = &t->common;

    /* 1 byte/s: the job sleeps after its first chunk "forever". */
    g_assert_true(bd_job_set_speed(job, 1, &err));
    expect_error(bd_job_set_speed(job, -1, &err), err,
                 "Parameter 'speed' expects a non-negative value");
    g_clear_error(&err);
    bd_job_start(job);
    /* Pause wakes the sleeping job; it parks. */
    g_assert_true(bd_job_user_pause(job, &err));
    wait_status(job, BD_JOB_STATUS_PAUSED);
    g_assert_true(bd_job_user_cancel(job, TRUE, &err));
    wait_status(job, BD_JOB_STATUS_CONCLUDED);
    g_assert_cmpint(job->ret, ==, -ECANCELED);
    g_assert_cmpint(t->aborts, ==, 1);
    g_assert_cmpint(t->commits, ==, 0);
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:paused JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:aborting BLOCK_JOB_CANCELLED "
        "JOB_STATUS_CHANGE:concluded");
    g_assert_true(bd_job_dismiss(job, &err));
    g_free(take_events());
}

static void test_speed_change(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("s", TRUE, TRUE, NULL);
    BdJob *job = bd_job_ref(&t->common);

    g_assert_true(bd_job_set_speed(job, 1, &err));
    bd_job_start(job);
    drain_loop();
    /* Lifting the limit wakes the sleeper and it finishes. */
    g_assert_true(bd_job_set_speed(job, 0, &err));
    wait_gone("s");
    g_assert_cmpmem(t->src, sizeof(t->src), t->dst, sizeof(t->dst));
    g_free(take_events());
    bd_job_unref(job);
}

static void test_ready_complete(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("r", TRUE, TRUE, NULL);
    BdJob *job = bd_job_ref(&t->common);

    t->wait_ready = TRUE;
    expect_error(bd_job_complete(job, &err), err,
                 "Job 'r' in state 'created' cannot accept command verb "
                 "'complete'");
    g_clear_error(&err);
    bd_job_start(job);
    wait_status(job, BD_JOB_STATUS_READY);
    /* Pausing a ready job: standby, and back. */
    g_assert_true(bd_job_user_pause(job, &err));
    wait_status(job, BD_JOB_STATUS_STANDBY);
    g_assert_true(bd_job_user_resume(job, &err));
    wait_status(job, BD_JOB_STATUS_READY);
    g_assert_true(bd_job_complete(job, &err));
    g_assert_no_error(err);
    wait_gone("r");
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "JOB_STATUS_CHANGE:ready BLOCK_JOB_READY "
        "JOB_STATUS_CHANGE:standby JOB_STATUS_CHANGE:ready "
        "JOB_STATUS_CHANGE:waiting JOB_STATUS_CHANGE:pending "
        "BLOCK_JOB_COMPLETED JOB_STATUS_CHANGE:concluded "
        "JOB_STATUS_CHANGE:null");
    g_assert_cmpint(t->commits, ==, 1);
    bd_job_unref(job);
}

static void test_ready_soft_cancel(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("rc", TRUE, TRUE, NULL);
    BdJob *job = bd_job_ref(&t->common);

    t->wait_ready = TRUE;
    t->soft_cancel_ok = TRUE;
    bd_job_start(job);
    wait_status(job, BD_JOB_STATUS_READY);
    g_assert_true(bd_job_user_cancel(job, FALSE, &err));
    /* Cancelled jobs cannot be completed any more. */
    expect_error(bd_job_complete(job, &err), err,
                 "The active block job 'rc' cannot be completed");
    g_clear_error(&err);
    wait_gone("rc");
    g_autofree char *ev = take_events();
    /* A soft cancel of a ready job is a successful completion. */
    g_assert_nonnull(strstr(ev, "JOB_STATUS_CHANGE:pending "
                                "BLOCK_JOB_COMPLETED "));
    g_assert_null(strstr(ev, "CANCELLED"));
    g_assert_cmpint(t->commits, ==, 1);
    bd_job_unref(job);
}

static void test_error_stop_resume(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *t = new_job("e", TRUE, TRUE, NULL);
    BdJob *job = bd_job_ref(&t->common);

    t->fail_chunk = 3;
    t->fail_errno = ENOSPC;
    t->on_err = BD_ON_ERROR_ENOSPC;   /* ENOSPC: stop */
    bd_job_start(job);
    wait_status(job, BD_JOB_STATUS_PAUSED);
    BdJobSnapshot s;
    bd_job_snapshot(job, &s);
    g_assert_true(s.user_paused);
    g_assert_cmpint(s.iostatus, ==, BD_IOSTATUS_NOSPACE);
    g_assert_true(bd_job_user_resume(job, &err));
    bd_job_snapshot(job, &s);
    g_assert_cmpint(s.iostatus, ==, BD_IOSTATUS_OK);
    wait_gone("e");
    g_assert_cmpmem(t->src, sizeof(t->src), t->dst, sizeof(t->dst));
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "BLOCK_JOB_ERROR:stop JOB_STATUS_CHANGE:paused "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:waiting "
        "JOB_STATUS_CHANGE:pending BLOCK_JOB_COMPLETED "
        "JOB_STATUS_CHANGE:concluded JOB_STATUS_CHANGE:null");
    bd_job_unref(job);
}

static void test_error_report_ignore(void)
{
    TestJob *t = new_job("er", TRUE, FALSE, NULL);
    BdJob *job = &t->common;
    g_autoptr(GError) err = NULL;

    t->fail_chunk = 5;
    t->fail_errno = EIO;
    t->on_err = BD_ON_ERROR_ENOSPC;   /* not ENOSPC: report */
    bd_job_start(job);
    wait_status(job, BD_JOB_STATUS_CONCLUDED);
    g_assert_cmpint(job->ret, ==, -EIO);
    g_assert_cmpint(t->aborts, ==, 1);
    g_autofree char *ev = take_events();
    g_assert_cmpstr(ev, ==,
        "JOB_STATUS_CHANGE:created JOB_STATUS_CHANGE:running "
        "BLOCK_JOB_ERROR:report JOB_STATUS_CHANGE:aborting "
        "BLOCK_JOB_COMPLETED:error=chunk 5: Input/output error "
        "JOB_STATUS_CHANGE:concluded");
    g_assert_true(bd_job_dismiss(job, &err));
    g_free(take_events());

    t = new_job("ei", TRUE, TRUE, NULL);
    job = bd_job_ref(&t->common);
    t->fail_chunk = 5;
    t->fail_errno = EIO;
    t->on_err = BD_ON_ERROR_IGNORE;
    bd_job_start(job);
    wait_gone("ei");
    g_assert_cmpint(job->ret, ==, 0);
    g_free(ev);
    ev = take_events();
    g_assert_nonnull(strstr(ev, "BLOCK_JOB_ERROR:ignore"));
    g_assert_nonnull(strstr(ev, "BLOCK_JOB_COMPLETED "));
    bd_job_unref(job);
}

static void test_txn_abort(void)
{
    g_autoptr(GError) err = NULL;
    BdJobTxn *txn = bd_job_txn_new();
    TestJob *a = new_job("ta", TRUE, TRUE, txn);
    TestJob *b = new_job("tb", TRUE, TRUE, txn);
    BdJob *ja = bd_job_ref(&a->common), *jb = bd_job_ref(&b->common);

    bd_job_txn_unref(txn);
    g_assert_true(bd_job_set_speed(ja, 1, &err));   /* a sleeps */
    b->fail_chunk = 0;
    b->fail_errno = EIO;
    b->on_err = BD_ON_ERROR_REPORT;
    bd_job_start(ja);
    bd_job_start(jb);
    wait_gone("ta");
    wait_gone("tb");
    g_assert_cmpint(ja->ret, ==, -ECANCELED);
    g_assert_cmpint(jb->ret, ==, -EIO);
    g_assert_cmpint(a->aborts, ==, 1);
    g_assert_cmpint(b->aborts, ==, 1);
    g_autofree char *ev = take_events();
    g_assert_nonnull(strstr(ev, "BLOCK_JOB_CANCELLED"));
    g_assert_nonnull(strstr(ev, "BLOCK_JOB_COMPLETED:error="));
    bd_job_unref(ja);
    bd_job_unref(jb);
}

static void test_txn_grouped_success(void)
{
    g_autoptr(GError) err = NULL;
    BdJobTxn *txn = bd_job_txn_new();
    TestJob *a = new_job("ga", TRUE, TRUE, txn);
    TestJob *b = new_job("gb", TRUE, TRUE, txn);
    BdJob *ja = bd_job_ref(&a->common), *jb = bd_job_ref(&b->common);

    bd_job_txn_unref(txn);
    g_assert_true(bd_job_set_speed(jb, 1, &err));   /* b sleeps */
    bd_job_start(ja);
    bd_job_start(jb);
    /* a finishes its work and waits for b. */
    wait_status(ja, BD_JOB_STATUS_WAITING);
    g_assert_cmpint(a->commits, ==, 0);
    g_assert_true(bd_job_set_speed(jb, 0, &err));
    wait_gone("ga");
    wait_gone("gb");
    g_assert_cmpint(a->commits, ==, 1);
    g_assert_cmpint(b->commits, ==, 1);
    g_free(take_events());
    bd_job_unref(ja);
    bd_job_unref(jb);
}

static void test_prepare_failure(void)
{
    TestJob *t = new_job("pf", TRUE, TRUE, NULL);
    BdJob *job = bd_job_ref(&t->common);

    t->prepare_ret = -ENOSPC;
    bd_job_start(job);
    wait_gone("pf");
    g_assert_cmpint(t->aborts, ==, 1);
    g_assert_cmpint(t->commits, ==, 0);
    g_autofree char *ev = take_events();
    g_assert_nonnull(strstr(ev, "JOB_STATUS_CHANGE:pending "
                                "JOB_STATUS_CHANGE:aborting "
                                "BLOCK_JOB_COMPLETED:error="));
    bd_job_unref(job);
}

static void test_ratelimit(void)
{
    BdRateLimit l = { 0 };
    const int64_t slice = 100 * 1000 * 1000;

    bd_ratelimit_set_speed(&l, 0, slice);
    g_assert_cmpint(bd_ratelimit_calculate_delay(&l, 1 << 30, 0), ==, 0);
    /* 1 MiB/s: 104857 bytes per 100 ms slice. */
    bd_ratelimit_set_speed(&l, 1 << 20, slice);
    g_assert_cmpuint(l.slice_quota, ==, 104857);
    g_assert_cmpint(bd_ratelimit_calculate_delay(&l, 50000, 1000), ==, 0);
    /* 2 * quota dispatched in the first slice: wait until 2 slices. */
    int64_t d = bd_ratelimit_calculate_delay(&l, 2 * 104857 - 50000, 2000);
    g_assert_cmpint(d, ==, 1000 + 2 * slice - 2000);
    /* After the extended slice a new one starts. */
    g_assert_cmpint(bd_ratelimit_calculate_delay(&l, 1, 3 * slice), ==, 0);
    /* A tiny speed still allows one unit per slice. */
    bd_ratelimit_set_speed(&l, 1, slice);
    g_assert_cmpuint(l.slice_quota, ==, 1);
}

/* --- backing chain freezing, on a tiny driver with a 'backing' child --- */

typedef struct {
    GVariant *backing;
} ChainOptions;

static const BdSchemaField chain_options[] = {
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE,
      BD_AT(ChainOptions, backing) },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(ChainOptions, chain_options)

static gboolean chain_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(ChainOptions) o = { 0 };

    bd_schema_decode(chain_options, options, &o);
    if (!bd_node_open_child(node, o.backing, "backing", BD_CHILD_COW, TRUE,
                            errp) && errp && *errp) {
        return FALSE;
    }
    bd_node_set_size(node, 65536);
    return TRUE;
}

static const BdDriver chain_driver = {
    .name = "tchain",
    .options = chain_options,
    .is_format = TRUE,
    .open = chain_open,
};

static BdNode *open_chain_node(const char *name, const char *backing)
{
    g_autoptr(GError) err = NULL;
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "tchain");
    g_variant_dict_insert(&d, "node-name", "s", name);
    if (backing) {
        g_variant_dict_insert(&d, "backing", "s", backing);
    }
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    BdNode *node = bd_node_open(opts, &err);
    g_assert_no_error(err);
    return node;
}

static void test_freeze_chain(void)
{
    g_autoptr(GError) err = NULL;
    BdNode *base = open_chain_node("base", NULL);
    BdNode *mid = open_chain_node("mid", "base");
    BdNode *top = open_chain_node("top", "mid");

    /* top -> mid frozen only ('base' excluded): mid -> base stays free. */
    g_assert_true(bd_job_freeze_backing_chain(top, mid, &err));
    g_assert_cmpint(top->backing->frozen, ==, 1);
    g_assert_cmpint(mid->backing->frozen, ==, 0);
    /* The whole chain overlaps: refused, nothing changed. */
    g_assert_false(bd_job_freeze_backing_chain(top, NULL, &err));
    g_assert_cmpstr(err->message, ==,
                    "Cannot change 'backing' link from 'top' to 'mid'");
    g_clear_error(&err);
    g_assert_cmpint(mid->backing->frozen, ==, 0);
    g_assert_true(bd_job_freeze_backing_chain(mid, NULL, &err));
    g_assert_cmpint(mid->backing->frozen, ==, 1);
    bd_job_unfreeze_backing_chain(top, mid);
    bd_job_unfreeze_backing_chain(mid, NULL);
    g_assert_cmpint(top->backing->frozen, ==, 0);
    g_assert_cmpint(mid->backing->frozen, ==, 0);
    bd_node_unref(top);
    bd_node_unref(mid);
    bd_node_unref(base);
}

static void test_cancel_sync_all(void)
{
    g_autoptr(GError) err = NULL;
    TestJob *a = new_job("x1", TRUE, FALSE, NULL);
    TestJob *b = new_job("x2", FALSE, FALSE, NULL);

    g_assert_true(bd_job_set_speed(&a->common, 1, &err));
    bd_job_start(&a->common);
    bd_job_start(&b->common);
    wait_status(&b->common, BD_JOB_STATUS_PENDING);
    bd_job_cancel_sync_all();
    g_assert_cmpuint(bd_job_list()->len, ==, 0);
    g_free(take_events());
}

/* An invalid transition is a bug: every build stops there, naming the
 * job and both states. */
static void test_invalid_transition(void)
{
    if (g_test_subprocess()) {
        TestJob *t = new_job("bad", TRUE, TRUE, NULL);
        bd_job_transition(&t->common, BD_JOB_STATUS_CONCLUDED);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr(
        "*job 'bad': invalid state transition created -> concluded*");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    events = g_ptr_array_new_with_free_func(g_free);
    bd_event_set_sink(sink, NULL);
    g_main_context_acquire(NULL);
    g_test_add_func("/jobs/lifecycle-auto", test_lifecycle_auto);
    g_test_add_func("/jobs/manual-finalize-dismiss",
                    test_manual_finalize_dismiss);
    g_test_add_func("/jobs/ids", test_ids);
    g_test_add_func("/jobs/pause-resume", test_pause_resume);
    g_test_add_func("/jobs/cancel-running", test_cancel_running);
    g_test_add_func("/jobs/speed-change", test_speed_change);
    g_test_add_func("/jobs/ready-complete", test_ready_complete);
    g_test_add_func("/jobs/ready-soft-cancel", test_ready_soft_cancel);
    g_test_add_func("/jobs/error-stop-resume", test_error_stop_resume);
    g_test_add_func("/jobs/error-report-ignore", test_error_report_ignore);
    g_test_add_func("/jobs/txn-abort", test_txn_abort);
    g_test_add_func("/jobs/txn-grouped-success", test_txn_grouped_success);
    g_test_add_func("/jobs/prepare-failure", test_prepare_failure);
    g_test_add_func("/jobs/ratelimit", test_ratelimit);
    g_test_add_func("/jobs/cancel-sync-all", test_cancel_sync_all);
    g_test_add_func("/jobs/invalid-transition", test_invalid_transition);
    bd_driver_register(&chain_driver);
    g_test_add_func("/jobs/freeze-chain", test_freeze_chain);
    int ret = g_test_run();
    g_main_context_release(NULL);
    g_ptr_array_unref(events);
    return ret;
}
