/* SPDX-License-Identifier: MIT */
/* A command from a monitor that opens nodes, run in stages so that the
 * main loop never waits for the slow parts of an open:
 *
 *   1. the nodes that prepare (an rbd node connects to its cluster,
 *      BdDriver.prepare) do so on a thread of their own;
 *   2. the command runs on the main thread, with its opens allowed to
 *      leave work to a thread (a LUKS unlock, bd_open_offload_begin);
 *   3. when one did, and the command failed for it, the work runs on a
 *      thread of its own (the preparations are made again beside it),
 *      and the command runs again from step 2, where the open finds its
 *      result.
 *
 * Each attempt is the whole command, made from its arguments afresh, so
 * that a failed one leaves nothing behind and a graph changed meanwhile
 * is seen as it is.  The reply follows the last attempt.
 *
 * Each stage off the main thread is a thread of its own, which hands
 * back with g_idle_add: a command is rare and waits for seconds, and
 * thread creation and an idle source are hand-offs ThreadSanitizer sees
 * (GLib's GTask pool synchronises with futexes it does not).
 *
 * Thread model: main thread, but for stage_thread (which touches only
 * the preparations' options and the queued work).
 */
#include "control/qmp-int.h"
#include "graph/main-thread.h"
#include "graph/node.h"

/* Each attempt unlocks at least one more node than the one before. */
#define MAX_ATTEMPTS 16

typedef struct {
    GVariant *args;
    GPtrArray *prepare;     /* GVariant *: options trees to prepare */
    BdQmpHandler fn;
    BdQmpPending *p;
    GPtrArray *runs;        /* each attempt's work: the last is for the
                             * next stage; all are dropped at the end */
    int attempts;
} Stages;

static gboolean stage_done(gpointer data);

static gpointer stage_thread(gpointer data)
{
    Stages *st = data;
    /* Nothing yet before the first attempt (a stage only to prepare). */
    GPtrArray *queued = st->runs->len
                        ? g_ptr_array_index(st->runs, st->runs->len - 1)
                        : NULL;

    for (guint i = 0; i < st->prepare->len; i++) {
        GError *err = NULL;

        /* A failure is kept by the driver for the open: the command
         * reports it after its own checks, in QEMU's order. */
        bd_node_prepare(g_ptr_array_index(st->prepare, i), &err);
        g_clear_error(&err);
    }
    bd_open_offload_run(queued);
    g_idle_add(stage_done, st);
    return NULL;
}

static void stage_start(Stages *st)
{
    g_autoptr(GError) err = NULL;
    GThread *t = g_thread_try_new("bd-open-stage", stage_thread, st, &err);

    if (!t) {
        /* Out of threads: the stage runs here; slow, but it runs. */
        g_warning("Cannot start a thread for an open (%s): running it on "
                  "the main loop", err->message);
        stage_thread(st);
        return;
    }
    g_thread_unref(t);
}

static void finish(Stages *st, JsonNode *ret, GError *err)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; i < st->runs->len; i++) {
        bd_open_offload_drop(g_ptr_array_index(st->runs, i));
    }
    bd_qmp_pending_done(st->p, ret, err);
    g_variant_unref(st->args);
    g_ptr_array_unref(st->prepare);
    g_ptr_array_unref(st->runs);
    g_free(st);
}

/* Step 2: one attempt; then step 3 or the reply. */
static void attempt(Stages *st)
{
    BD_GLOBAL_STATE_CODE();

    JsonNode *ret = NULL;
    GError *err = NULL;
    GPtrArray *queued;
    gboolean ok;

    st->attempts++;
    bd_open_offload_begin();
    ok = st->fn(st->args, &ret, &err);
    queued = bd_open_offload_end();
    for (guint i = 0; i < st->prepare->len; i++) {
        bd_node_prepare_drop(g_ptr_array_index(st->prepare, i));
    }
    if (!ok) {
        g_clear_pointer(&ret, json_node_unref);
    }
    if (queued) {
        g_ptr_array_add(st->runs, queued);
    }
    if (!queued || ok) {
        finish(st, ret, err);
        return;
    }
    g_clear_error(&err);
    if (st->attempts >= MAX_ATTEMPTS) {
        g_set_error(&err, BD_ERROR, BD_ERROR_GENERIC,
                    "Opening the nodes took more than %d attempts",
                    MAX_ATTEMPTS);
        finish(st, NULL, err);
        return;
    }
    stage_start(st);
}

static gboolean stage_done(gpointer data)
{
    BD_GLOBAL_STATE_CODE();

    attempt(data);
    return G_SOURCE_REMOVE;
}

void bd_ctl_run_open_stages(GVariant *args, BdQmpPending *p,
                            GPtrArray *prepare, BdQmpHandler fn)
{
    BD_GLOBAL_STATE_CODE();

    Stages *st = g_new0(Stages, 1);

    st->args = g_variant_ref(args);
    st->prepare = prepare;
    st->fn = fn;
    st->p = p;
    st->runs = g_ptr_array_new();
    if (prepare->len) {
        stage_start(st);
    } else {
        attempt(st);
    }
}
