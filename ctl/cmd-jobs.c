/* SPDX-License-Identifier: MIT */
/* blockctl jobs [--watch] and blockctl wait JOB: jobs with their
 * progress, followed live.  Status changes come from the daemon's
 * events as they happen; progress is read between them (QMP has no
 * progress event). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl/blockctl.h"

#define POLL_MS 250

typedef struct {
    gint64 last_bytes;      /* progress at the last sample */
    gint64 last_time;
    double rate;            /* bytes/s, smoothed */
} Sample;

static void bar(const BdCtlGlobal *g, JsonObject *j, Sample *s, gboolean tty)
{
    gint64 cur = json_object_get_int_member_with_default(
        j, "current-progress", 0);
    gint64 total = json_object_get_int_member_with_default(
        j, "total-progress", 0);
    gint64 now = g_get_monotonic_time();
    double frac = total ? (double)cur / total : 0;
    char fill[31];
    int n = (int)(frac * 30);
    g_autofree char *rate = NULL, *done = NULL, *all = NULL;
    g_autofree char *eta = NULL;

    if (s->last_time && now > s->last_time) {
        double r = (cur - s->last_bytes) * 1e6 / (now - s->last_time);
        s->rate = s->rate ? 0.7 * s->rate + 0.3 * r : r;
    }
    s->last_bytes = cur;
    s->last_time = now;
    if (g->json) {
        return;
    }
    memset(fill, '#', n);
    memset(fill + n, '.', 30 - n);
    fill[30] = '\0';
    rate = bd_ctl_size((gint64)s->rate);
    done = bd_ctl_size(cur);
    all = bd_ctl_size(total);
    eta = s->rate > 0 && total > cur
          ? g_strdup_printf("%.0fs", (total - cur) / s->rate)
          : g_strdup("-");
    printf("%s%-12s [%s] %5.1f%% %s/%s %s/s ETA %s %-9s%s",
           tty ? "\r" : "", json_object_get_string_member(j, "id"), fill,
           frac * 100, done, all, rate, eta,
           json_object_get_string_member(j, "status"), tty ? "" : "\n");
    fflush(stdout);
}

static JsonObject *find_job(JsonNode *jobs, const char *id)
{
    JsonArray *a = json_node_get_array(jobs);

    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *j = json_array_get_object_element(a, i);
        if (!strcmp(json_object_get_string_member(j, "id"), id)) {
            return j;
        }
    }
    return NULL;
}

static void print_event(const BdCtlGlobal *g, JsonNode *ev, gboolean tty)
{
    JsonObject *o = json_node_get_object(ev);
    JsonObject *data = json_object_has_member(o, "data")
                       ? json_object_get_object_member(o, "data") : NULL;
    const char *name = json_object_get_string_member(o, "event");

    if (g->json) {
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autofree char *t = NULL;
        json_generator_set_root(gen, ev);
        t = json_generator_to_data(gen, NULL);
        printf("%s\n", t);
        fflush(stdout);
        return;
    }
    if (!strcmp(name, "JOB_STATUS_CHANGE") && data) {
        printf("%s%s: %s\n", tty ? "\n" : "",
               json_object_get_string_member(data, "id"),
               json_object_get_string_member(data, "status"));
    } else if (g_str_has_prefix(name, "BLOCK_JOB_") && data &&
               json_object_has_member(data, "error")) {
        printf("%s%s: %s: %s\n", tty ? "\n" : "",
               json_object_get_string_member(data, "device"), name,
               json_object_get_string_member(data, "error"));
    }
    fflush(stdout);
}

/* Follow jobs until 'id' ends (NULL: until none is left).  Returns the
 * exit code: a followed job that concluded with an error fails. */
static int follow(const BdCtlGlobal *g, BdQmpClient *c, const char *id)
{
    gboolean tty = isatty(STDOUT_FILENO) && !g->json;
    g_autoptr(GHashTable) samples = g_hash_table_new_full(
        g_str_hash, g_str_equal, g_free, g_free);
    g_autofree char *error = NULL;

    for (;;) {
        g_autoptr(JsonNode) jobs = bd_ctl_execute(c, "query-jobs", NULL);
        JsonArray *a;
        gboolean any = FALSE;

        if (!jobs) {
            return BD_CTL_FAILED;
        }
        a = json_node_get_array(jobs);
        for (guint i = 0; i < json_array_get_length(a); i++) {
            JsonObject *j = json_array_get_object_element(a, i);
            const char *jid = json_object_get_string_member(j, "id");
            const char *st = json_object_get_string_member(j, "status");
            Sample *s;

            if (id && strcmp(jid, id)) {
                continue;
            }
            s = g_hash_table_lookup(samples, jid);
            if (!s) {
                s = g_new0(Sample, 1);
                g_hash_table_insert(samples, g_strdup(jid), s);
            }
            bar(g, j, s, tty);
            if (!strcmp(st, "concluded") || !strcmp(st, "null")) {
                if (id) {
                    if (json_object_has_member(j, "error")) {
                        error = g_strdup(json_object_get_string_member(
                            j, "error"));
                    }
                    goto done;
                }
                continue;
            }
            any = TRUE;
        }
        if (id && !find_job(jobs, id)) {
            if (!g_hash_table_size(samples)) {
                fprintf(stderr, "blockctl: no job '%s'\n", id);
                return BD_CTL_FAILED;
            }
            /* Dismissed on its own (auto-dismiss): it ended; the events
             * said how. */
            goto done;
        }
        if (!id && !any) {
            goto done;
        }
        /* Wait for an event, or the next progress sample. */
        g_autoptr(GError) err = NULL;
        gint64 until = g_get_monotonic_time() + POLL_MS * 1000;
        for (;;) {
            gint64 left = (until - g_get_monotonic_time()) / 1000;
            g_autoptr(JsonNode) ev = NULL;
            if (left <= 0) {
                break;
            }
            ev = bd_qmp_client_next_event(c, (int)left, &err);
            if (!ev) {
                if (err) {
                    fprintf(stderr, "blockctl: %s\n", err->message);
                    return BD_CTL_FAILED;
                }
                break;
            }
            print_event(g, ev, tty);
            JsonObject *o = json_node_get_object(ev);
            JsonObject *data = json_object_has_member(o, "data")
                ? json_object_get_object_member(o, "data") : NULL;
            if (id && data && !strcmp(json_object_get_string_member(o, "event"),
                                      "BLOCK_JOB_COMPLETED") &&
                !g_strcmp0(json_object_get_string_member_with_default(
                               data, "device", ""), id) &&
                json_object_has_member(data, "error")) {
                g_free(error);
                error = g_strdup(json_object_get_string_member(data, "error"));
            }
        }
    }
done:
    if (tty) {
        printf("\n");
    }
    if (error) {
        fprintf(stderr, "blockctl: job %s failed: %s\n", id, error);
        return BD_CTL_FAILED;
    }
    return BD_CTL_OK;
}

int bd_ctl_cmd_jobs(const BdCtlGlobal *g, int argc, char **argv)
{
    gboolean watch = FALSE;
    g_autoptr(BdQmpClient) c = NULL;
    g_autoptr(JsonNode) jobs = NULL;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--watch")) {
            watch = TRUE;
        } else {
            return bd_ctl_usage("jobs: unexpected argument '%s'", argv[i]);
        }
    }
    c = bd_ctl_connect(g);
    if (!c) {
        return BD_CTL_FAILED;
    }
    if (watch) {
        return follow(g, c, NULL);
    }
    jobs = bd_ctl_execute(c, "query-jobs", NULL);
    if (!jobs) {
        return BD_CTL_FAILED;
    }
    if (g->json) {
        bd_ctl_print_json(jobs);
        return BD_CTL_OK;
    }
    JsonArray *a = json_node_get_array(jobs);
    if (!json_array_get_length(a)) {
        printf("no jobs\n");
    }
    for (guint i = 0; i < json_array_get_length(a); i++) {
        Sample s = { 0 };
        bar(g, json_array_get_object_element(a, i), &s, FALSE);
    }
    return BD_CTL_OK;
}

int bd_ctl_cmd_wait(const BdCtlGlobal *g, int argc, char **argv)
{
    g_autoptr(BdQmpClient) c = NULL;

    if (argc != 2) {
        return bd_ctl_usage("wait: which job? (blockctl wait JOB)");
    }
    c = bd_ctl_connect(g);
    if (!c) {
        return BD_CTL_FAILED;
    }
    return follow(g, c, argv[1]);
}
