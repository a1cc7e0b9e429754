/* SPDX-License-Identifier: MIT */
/* Unit tests of the copy engine (jobs/copy-engine.c): a job copies an
 * array in chunks on the engine's workers; the tests check that chunks
 * run in parallel, that a paused job has nothing in flight, and that a
 * chunk failing under 'stop' is copied again after job-resume.
 *
 * Thread model: the test holds the default main context and iterates it
 * until the condition it waits for holds; the job and its workers run
 * on their own threads.  No assertion depends on timing.
 */
#include <errno.h>
#include <string.h>
#include "jobs/copy-engine.h"
#include "jobs/job-int.h"

#define CHUNK 4096
#define NCHUNKS 64

typedef struct {
    BdJob common;
    guint8 src[CHUNK * NCHUNKS];
    guint8 dst[CHUNK * NCHUNKS];
    unsigned workers;
    uint64_t cursor;             /* job thread */
    int fail_chunk;              /* fails once; < 0: none */
    int running;                 /* atomic: copies under way */
    int max_running;             /* atomic */
    int copies;                  /* atomic: finished copies */
    GMutex gate_lock;
    GCond gate_cond;
    gboolean gate_closed;        /* [gate_lock] copies wait while set */
} EngineJob;

static int ej_next(void *opaque, BdCopyChunk *c)
{
    EngineJob *t = opaque;

    if (t->cursor >= sizeof(t->src)) {
        return 0;
    }
    c->offset = t->cursor;
    c->bytes = CHUNK;
    t->cursor += CHUNK;
    return 1;
}

static int ej_copy(void *opaque, BdCopyChunk *c, uint8_t *buf,
                   uint64_t buf_size)
{
    EngineJob *t = opaque;
    int now = g_atomic_int_add(&t->running, 1) + 1;
    int ret = 0;

    for (int m = g_atomic_int_get(&t->max_running);
         now > m && !g_atomic_int_compare_and_exchange(&t->max_running, m,
                                                       now);
         m = g_atomic_int_get(&t->max_running)) {
    }
    g_mutex_lock(&t->gate_lock);
    while (t->gate_closed) {
        g_cond_wait(&t->gate_cond, &t->gate_lock);
    }
    g_mutex_unlock(&t->gate_lock);
    g_assert_cmpuint(buf_size, >=, c->bytes);
    if ((int)(c->offset / CHUNK) == g_atomic_int_get(&t->fail_chunk)) {
        g_atomic_int_set(&t->fail_chunk, -1);
        c->is_read = FALSE;
        ret = -ENOSPC;
    } else {
        memcpy(buf, t->src + c->offset, c->bytes);
        memcpy(t->dst + c->offset, buf, c->bytes);
    }
    g_usleep(1000);
    g_atomic_int_add(&t->copies, 1);
    g_atomic_int_add(&t->running, -1);
    return ret;
}

static void ej_done(void *opaque, BdCopyChunk *c, int ret,
                    BdErrorAction action)
{
    EngineJob *t = opaque;

    (void)action;
    if (ret == 0) {
        bd_job_progress_update(&t->common, c->bytes);
    }
}

static const BdCopyOps ej_ops = {
    .next = ej_next,
    .copy = ej_copy,
    .done = ej_done,
};

static int ej_run(BdJob *job, GError **errp)
{
    EngineJob *t = (EngineJob *)job;
    BdCopyEngineParams p = {
        .job = job,
        .ops = &ej_ops,
        .opaque = t,
        .workers = t->workers,
        .buf_size = CHUNK,
        .on_source_error = BD_ON_ERROR_ENOSPC,
        .on_target_error = BD_ON_ERROR_ENOSPC,
        .requeue_failed = TRUE,
        .ratelimit = TRUE,
    };
    g_autoptr(BdCopyEngine) e = bd_copy_engine_new(&p);

    (void)errp;
    bd_job_progress_set_remaining(job, sizeof(t->src));
    return bd_copy_engine_run(e);
}

static const BdJobDriver ej_driver = {
    .type = "backup",
    .instance_size = sizeof(EngineJob),
    .is_block_job = TRUE,
    .run = ej_run,
};

static EngineJob *new_job(const char *id, unsigned workers)
{
    g_autoptr(GError) err = NULL;
    EngineJob *t = (EngineJob *)bd_job_create(&ej_driver, id, TRUE, FALSE,
                                              NULL, &err);

    g_assert_no_error(err);
    for (gsize i = 0; i < sizeof(t->src); i++) {
        t->src[i] = (guint8)(i * 13 + 5);
    }
    t->workers = workers;
    t->fail_chunk = -1;
    g_mutex_init(&t->gate_lock);
    g_cond_init(&t->gate_cond);
    return t;
}

static void set_gate(EngineJob *t, gboolean closed)
{
    g_mutex_lock(&t->gate_lock);
    t->gate_closed = closed;
    g_cond_broadcast(&t->gate_cond);
    g_mutex_unlock(&t->gate_lock);
}

static void wait_status(BdJob *job, BdJobStatus st)
{
    while (job->status != st) {
        g_main_context_iteration(NULL, TRUE);
    }
}

/* Wait for the end, check the copy and the number of copy calls, and
 * dismiss the job (which frees it). */
static void finish(EngineJob *t, int copies)
{
    g_autoptr(GError) err = NULL;

    wait_status(&t->common, BD_JOB_STATUS_CONCLUDED);
    g_assert_cmpint(t->common.ret, ==, 0);
    g_assert_cmpmem(t->src, sizeof(t->src), t->dst, sizeof(t->dst));
    g_assert_cmpint(g_atomic_int_get(&t->copies), ==, copies);
    g_mutex_clear(&t->gate_lock);
    g_cond_clear(&t->gate_cond);
    g_assert_true(bd_job_dismiss(&t->common, &err));
}

/* With four workers and copies held at a gate, four run at once. */
static void test_parallel(void)
{
    EngineJob *t = new_job("par", 4);

    set_gate(t, TRUE);
    bd_job_start(&t->common);
    while (g_atomic_int_get(&t->running) < 4) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    g_assert_cmpint(g_atomic_int_get(&t->max_running), ==, 4);
    set_gate(t, FALSE);
    finish(t, NCHUNKS);
}

/* A pause requested while chunks are in flight parks the job only once
 * they have finished; nothing runs while it is paused. */
static void test_pause_waits_in_flight(void)
{
    g_autoptr(GError) err = NULL;
    EngineJob *t = new_job("pause", 4);

    set_gate(t, TRUE);
    bd_job_start(&t->common);
    while (g_atomic_int_get(&t->running) < 4) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    g_assert_true(bd_job_user_pause(&t->common, &err));
    set_gate(t, FALSE);
    wait_status(&t->common, BD_JOB_STATUS_PAUSED);
    g_assert_cmpint(g_atomic_int_get(&t->running), ==, 0);
    int copies = g_atomic_int_get(&t->copies);
    g_assert_cmpint(copies, <, NCHUNKS);
    g_usleep(20 * 1000);
    g_assert_cmpint(g_atomic_int_get(&t->copies), ==, copies);
    g_assert_true(bd_job_user_resume(&t->common, &err));
    finish(t, NCHUNKS);
}

/* ENOSPC under 'enospc' stops the job; resumed, the chunk is redone. */
static void test_stop_requeues(void)
{
    g_autoptr(GError) err = NULL;
    EngineJob *t = new_job("stop", 3);
    BdJobSnapshot s;

    t->fail_chunk = 7;
    bd_job_start(&t->common);
    wait_status(&t->common, BD_JOB_STATUS_PAUSED);
    g_assert_cmpint(g_atomic_int_get(&t->running), ==, 0);
    bd_job_snapshot(&t->common, &s);
    g_assert_true(s.user_paused);
    g_assert_cmpint(s.iostatus, ==, BD_IOSTATUS_NOSPACE);
    g_assert_true(bd_job_user_resume(&t->common, &err));
    finish(t, NCHUNKS + 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_main_context_acquire(NULL);
    g_test_add_func("/copy-engine/parallel", test_parallel);
    g_test_add_func("/copy-engine/pause-waits-in-flight",
                    test_pause_waits_in_flight);
    g_test_add_func("/copy-engine/stop-requeues", test_stop_requeues);
    int ret = g_test_run();
    g_main_context_release(NULL);
    return ret;
}
