/* SPDX-License-Identifier: MIT */
/* One scrape: the exposition text of every metric (metrics.h).
 *
 * The text format wants every sample of a family together, after its
 * HELP and TYPE lines; so the objects are looked up once (snapshots of
 * their counters) and each family then walks them.  Label values are
 * escaped as the format says (backslash, double quote, newline).
 *
 * Label cardinality stays bounded by what exists: nodes, exports, jobs
 * and bitmaps while they exist, NBD clients while connected.
 *
 * Thread model: main thread (the node, export, job and bitmap lists are
 * the main thread's); the counters are read with relaxed atomics.
 */


#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "export/export.h"
#include "export-nbd/nbd-server.h"
#include "graph/bitmap.h"
#include "graph/entry.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "jobs/job.h"
#include "metrics/metrics.h"

static char *build_version;
static gint64 start_monotonic_us;
static gint64 start_real_us;

void bd_metrics_set_version(const char *version)
{
    BD_GLOBAL_STATE_CODE();

    g_free(build_version);
    build_version = g_strdup(version);
    if (!start_monotonic_us) {
        start_monotonic_us = g_get_monotonic_time();
        start_real_us = g_get_real_time();
    }
}

/* --- text format helpers --- */

/* The text being built and its format. */
typedef struct {
    GString *s;
    BdMetricsFormat fmt;
} Out;

/* A family's metadata.  'name' is the Prometheus text format's (a
 * counter's with _total, as its samples are named); OpenMetrics names
 * the family without the suffix (its samples keep it), escapes double
 * quotes in HELP too, and gets a UNIT line for the units the name ends
 * in. */
static void family(Out *o, const char *name, const char *type,
                   const char *help)
{
    gboolean om = o->fmt == BD_METRICS_OPENMETRICS;
    g_autofree char *fam = g_strdup(name);

    if (om && strcmp(type, "counter") == 0 && g_str_has_suffix(fam, "_total")) {
        fam[strlen(fam) - strlen("_total")] = '\0';
    }
    g_string_append_printf(o->s, "# HELP %s ", fam);
    for (const char *p = help; *p; p++) {
        switch (*p) {
        case '\\': g_string_append(o->s, "\\\\"); break;
        case '\n': g_string_append(o->s, "\\n"); break;
        case '"':
            g_string_append(o->s, om ? "\\\"" : "\"");
            break;
        default: g_string_append_c(o->s, *p);
        }
    }
    g_string_append_printf(o->s, "\n# TYPE %s %s\n", fam, type);
    if (om && (g_str_has_suffix(fam, "_seconds") ||
               g_str_has_suffix(fam, "_bytes"))) {
        g_string_append_printf(o->s, "# UNIT %s %s\n", fam,
                               strrchr(fam, '_') + 1);
    }
}

/* Append ',key="value"' (no comma first) to a label set. */
static void label(GString *l, const char *key, const char *value)
{
    if (l->len) {
        g_string_append_c(l, ',');
    }
    g_string_append_printf(l, "%s=\"", key);
    for (const char *p = value ? value : ""; *p; p++) {
        switch (*p) {
        case '\\': g_string_append(l, "\\\\"); break;
        case '"': g_string_append(l, "\\\""); break;
        case '\n': g_string_append(l, "\\n"); break;
        default: g_string_append_c(l, *p);
        }
    }
    g_string_append_c(l, '"');
}

static void sample_u(Out *o, const char *name, const char *suffix,
                     const GString *labels, uint64_t v)
{
    g_string_append_printf(o->s, "%s%s%s%s%s %" G_GUINT64_FORMAT "\n", name,
                           suffix, labels->len ? "{" : "", labels->str,
                           labels->len ? "}" : "", v);
}

static void sample_d(Out *o, const char *name, const GString *labels,
                     double v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];

    g_string_append_printf(o->s, "%s%s%s%s %s\n", name,
                           labels->len ? "{" : "", labels->str,
                           labels->len ? "}" : "",
                           g_ascii_formatd(buf, sizeof(buf), "%.15g", v));
}

/* One histogram's samples: 'n' upper bounds in ns (the last bucket,
 * bins[n], is +Inf), per-bucket counts, the sum in ns. */
static void histogram(Out *o, const char *name, const GString *labels,
                      const uint64_t *bounds_ns, guint n,
                      const uint64_t *bins, uint64_t sum_ns)
{
    g_autoptr(GString) l = g_string_new(NULL);
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    uint64_t cum = 0;

    for (guint i = 0; i <= n; i++) {
        cum += bins[i];
        g_string_assign(l, labels->str);
        label(l, "le", i < n ? g_ascii_formatd(buf, sizeof(buf), "%.9g",
                                               bounds_ns[i] / 1e9)
                             : "+Inf");
        sample_u(o, name, "_bucket", l, cum);
    }
    g_string_assign(l, labels->str);
    g_string_append_printf(o->s, "%s_sum%s%s%s %s\n", name,
                           l->len ? "{" : "", l->str, l->len ? "}" : "",
                           g_ascii_formatd(buf, sizeof(buf), "%.9g",
                                           sum_ns / 1e9));
    sample_u(o, name, "_count", l, cum);
}

/* The fixed log2 buckets of graph/stats.h. */
static const uint64_t *fixed_bounds(void)
{
    static uint64_t b[BD_LAT_BUCKETS - 1];

    if (!b[0]) {
        for (guint i = 0; i < BD_LAT_BUCKETS - 1; i++) {
            b[i] = BD_LAT_BUCKET_NS(i);
        }
    }
    return b;
}

/* --- I/O statistics of nodes and exports --- */

static const char *const op_names[BD_ACCT__MAX] = {
    [BD_ACCT_READ] = "read", [BD_ACCT_WRITE] = "write",
    [BD_ACCT_FLUSH] = "flush", [BD_ACCT_UNMAP] = "discard",
    [BD_ACCT_ZERO] = "zero",
};

/* A counter owner's figures, copied once per scrape. */
typedef struct {
    const char *key;          /* "node" / "export" */
    const char *name;
    BdIoStats st;
    const BdIoStats *live;    /* for the histograms set by QMP, or NULL */
    uint64_t in_flight;
} IoOwner;

typedef enum { F_OPS, F_BYTES, F_ERRORS, F_INVALID } IoField;

static uint64_t io_field(const BdIoStats *s, IoField f, int t)
{
    switch (f) {
    case F_OPS: return s->ops[t];
    case F_BYTES: return s->bytes[t];
    case F_ERRORS: return s->failed[t];
    default: return s->invalid[t];
    }
}

static void io_counter(Out *o, GArray *owners, int nops, IoField f,
                       const char *name, const char *help)
{
    g_autoptr(GString) l = g_string_new(NULL);

    family(o, name, "counter", help);
    for (guint i = 0; i < owners->len; i++) {
        IoOwner *w = &g_array_index(owners, IoOwner, i);
        for (int t = 0; t < nops; t++) {
            if (f == F_BYTES && t == BD_ACCT_FLUSH) {
                continue;
            }
            g_string_truncate(l, 0);
            label(l, w->key, w->name);
            label(l, "op", op_names[t]);
            sample_u(o, name, "", l, io_field(&w->st, f, t));
        }
    }
}

static void io_latency(Out *o, GArray *owners, int nops,
                       const char *name, const char *help)
{
    g_autoptr(GString) l = g_string_new(NULL);

    family(o, name, "histogram", help);
    for (guint i = 0; i < owners->len; i++) {
        IoOwner *w = &g_array_index(owners, IoOwner, i);
        for (int t = 0; t < nops; t++) {
            const BdLatencyHistogram *h =
                w->live ? bd_io_stats_histogram(w->live, t) : NULL;

            g_string_truncate(l, 0);
            label(l, w->key, w->name);
            label(l, "op", op_names[t]);
            if (h) {
                /* block-latency-histogram-set's boundaries. */
                g_autofree uint64_t *bins = g_new(uint64_t, h->n + 1);
                for (guint b = 0; b <= h->n; b++) {
                    bins[b] = __atomic_load_n(&h->bins[b], __ATOMIC_RELAXED);
                }
                histogram(o, name, l, h->boundaries, h->n, bins,
                          __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED));
            } else {
                histogram(o, name, l, fixed_bounds(), BD_LAT_BUCKETS - 1,
                          w->st.lat[t], w->st.total_time_ns[t]);
            }
        }
    }
}

static void io_in_flight(Out *o, GArray *owners, const char *name,
                         const char *help)
{
    g_autoptr(GString) l = g_string_new(NULL);

    family(o, name, "gauge", help);
    for (guint i = 0; i < owners->len; i++) {
        IoOwner *w = &g_array_index(owners, IoOwner, i);
        g_string_truncate(l, 0);
        label(l, w->key, w->name);
        sample_u(o, name, "", l, w->in_flight);
    }
}

static void collect_nodes(Out *o)
{
    GPtrArray *nodes = bd_node_list();
    g_autoptr(GArray) owners = g_array_new(FALSE, TRUE, sizeof(IoOwner));

    for (guint i = 0; i < nodes->len; i++) {
        BdNode *n = nodes->pdata[i];
        IoOwner w = { .key = "node", .name = n->node_name,
                      .live = &n->stats };

        if (!n->node_name || !n->node_name[0]) {
            continue;
        }
        bd_io_stats_read(&n->stats, &w.st);
        w.in_flight = w.st.in_flight;
        g_array_append_val(owners, w);
    }
    io_counter(o, owners, BD_ACCT__MAX, F_OPS, "blockd_node_requests_total",
               "Requests completed at the node, by operation.");
    io_counter(o, owners, BD_ACCT__MAX, F_BYTES, "blockd_node_bytes_total",
               "Bytes of the requests completed at the node.");
    io_counter(o, owners, BD_ACCT__MAX, F_ERRORS, "blockd_node_errors_total",
               "Requests that failed at the node.");
    io_in_flight(o, owners, "blockd_node_in_flight_requests",
                 "Requests running at the node now.");
    io_latency(o, owners, BD_ACCT__MAX, "blockd_node_request_duration_seconds",
               "Latency of the requests at the node (buckets of "
               "block-latency-histogram-set where set).");
}

/* --- exports and NBD clients --- */

static void collect_exports(Out *o)
{
    GPtrArray *exports = bd_export_list();
    g_autoptr(GArray) owners = g_array_new(FALSE, TRUE, sizeof(IoOwner));
    g_autoptr(GPtrArray) clients = bd_nbd_server_query_clients();
    g_autoptr(GString) l = g_string_new(NULL);

    for (guint i = 0; i < exports->len; i++) {
        BdExport *exp = exports->pdata[i];
        IoOwner w = { .key = "export", .name = exp->id, .live = &exp->stats };

        if (!exp->entry) {
            continue;
        }
        bd_io_stats_read(&exp->stats, &w.st);
        w.in_flight = bd_entry_in_flight(exp->entry);
        g_array_append_val(owners, w);
    }

    family(o, "blockd_export_info", "gauge",
           "One per export: its type and the node it serves.");
    for (guint i = 0; i < exports->len; i++) {
        BdExport *exp = exports->pdata[i];
        if (!exp->entry) {
            continue;
        }
        g_string_truncate(l, 0);
        label(l, "export", exp->id);
        label(l, "type", exp->drv->type);
        label(l, "node", bd_entry_node(exp->entry)->node_name);
        sample_u(o, "blockd_export_info", "", l, 1);
    }
    family(o, "blockd_export_clients", "gauge",
           "NBD clients in transmission on the export.");
    for (guint i = 0; i < exports->len; i++) {
        BdExport *exp = exports->pdata[i];
        uint64_t n = 0;
        if (!exp->entry || strcmp(exp->drv->type, "nbd") != 0) {
            continue;
        }
        for (guint c = 0; c < clients->len; c++) {
            BdNbdClientInfo *ci = clients->pdata[c];
            n += g_strcmp0(ci->export_id, exp->id) == 0;
        }
        g_string_truncate(l, 0);
        label(l, "export", exp->id);
        sample_u(o, "blockd_export_clients", "", l, n);
    }
    /* The export counts as QEMU's devices do: write zeroes are writes. */
    io_counter(o, owners, BD_ACCT__QMP, F_OPS, "blockd_export_requests_total",
               "Client requests the export completed, by operation.");
    io_counter(o, owners, BD_ACCT__QMP, F_BYTES, "blockd_export_bytes_total",
               "Bytes of the client requests the export completed.");
    io_counter(o, owners, BD_ACCT__QMP, F_ERRORS, "blockd_export_errors_total",
               "Client requests whose I/O failed.");
    io_counter(o, owners, BD_ACCT__QMP, F_INVALID,
               "blockd_export_invalid_requests_total",
               "Client requests refused before any I/O (out of range, "
               "read-only).");
    io_in_flight(o, owners, "blockd_export_in_flight_requests",
                 "Requests of the export running in the graph now.");
    io_latency(o, owners, BD_ACCT__QMP, "blockd_export_request_duration_seconds",
               "Latency of the client requests (buckets of "
               "block-latency-histogram-set where set).");

    family(o, "blockd_nbd_handshake_failures_total", "counter",
           "NBD handshakes that ended without transmission, by the last "
           "refusal's reason.");
    for (int r = 0; r < BD_NBD_HS_FAIL__MAX; r++) {
        if (r == BD_NBD_HS_FAIL_ABORTED) {
            continue;       /* NBD_OPT_ABORT is a clean end (--list) */
        }
        g_string_truncate(l, 0);
        label(l, "reason", bd_nbd_handshake_failure_names[r]);
        sample_u(o, "blockd_nbd_handshake_failures_total", "", l,
                 bd_nbd_handshake_failures(r));
    }

    family(o, "blockd_export_handshake_failures_total", "counter",
           "NBD handshakes that failed after the client named this export, "
           "by the last refusal's reason.");
    for (guint i = 0; i < exports->len; i++) {
        BdExport *exp = exports->pdata[i];
        if (!exp->entry || strcmp(exp->drv->type, "nbd") != 0) {
            continue;
        }
        for (int r = 0; r < BD_NBD_HS_FAIL__MAX; r++) {
            if (r == BD_NBD_HS_FAIL_ABORTED ||
                r == BD_NBD_HS_FAIL_EXPORT_NOT_FOUND) {
                continue;
            }
            g_string_truncate(l, 0);
            label(l, "export", exp->id);
            label(l, "reason", bd_nbd_handshake_failure_names[r]);
            sample_u(o, "blockd_export_handshake_failures_total", "", l,
                     bd_nbd_export_handshake_failures(exp, r));
        }
    }

    static const struct { const char *name, *help; } cf[] = {
        { "blockd_nbd_client_requests_total",
          "Requests of a connected NBD client." },
        { "blockd_nbd_client_read_bytes_total",
          "Payload a connected NBD client read." },
        { "blockd_nbd_client_written_bytes_total",
          "Payload a connected NBD client wrote." },
    };
    for (guint f = 0; f < G_N_ELEMENTS(cf); f++) {
        family(o, cf[f].name, "counter", cf[f].help);
        for (guint c = 0; c < clients->len; c++) {
            BdNbdClientInfo *ci = clients->pdata[c];
            g_autofree char *who = NULL;
            /* Unix clients have no address of their own: numbered. */
            who = strchr(ci->address, ':')
                ? g_strdup(ci->address)
                : g_strdup_printf("%s #%" G_GUINT64_FORMAT, ci->address,
                                  ci->id);
            g_string_truncate(l, 0);
            label(l, "export", ci->export_id);
            label(l, "client", who);
            sample_u(o, cf[f].name, "", l,
                     f == 0 ? ci->requests
                     : f == 1 ? ci->bytes_read : ci->bytes_written);
        }
    }
}

/* --- jobs and dirty bitmaps --- */

static void collect_jobs(Out *o)
{
    GPtrArray *jobs = bd_job_list();
    g_autoptr(GString) l = g_string_new(NULL);
    g_autoptr(GArray) snaps = g_array_sized_new(FALSE, TRUE,
                                                sizeof(BdJobSnapshot),
                                                jobs->len);

    for (guint i = 0; i < jobs->len; i++) {
        BdJobSnapshot s;
        bd_job_snapshot(jobs->pdata[i], &s);
        g_array_append_val(snaps, s);
    }
    family(o, "blockd_job_status", "gauge",
           "One per job: its type and current status.");
    for (guint i = 0; i < jobs->len; i++) {
        BdJob *job = jobs->pdata[i];
        g_string_truncate(l, 0);
        label(l, "job", job->id);
        label(l, "type", job->driver->type);
        label(l, "status", bd_job_status_name(job->status));
        sample_u(o, "blockd_job_status", "", l, 1);
    }
    static const struct { const char *name, *help; } jf[] = {
        { "blockd_job_offset_bytes", "Progress of the job (its offset)." },
        { "blockd_job_length_bytes", "Work the job knows of (its len)." },
        { "blockd_job_speed_limit_bytes", "The job's speed limit in bytes "
          "per second (0: none)." },
    };
    for (guint f = 0; f < G_N_ELEMENTS(jf); f++) {
        family(o, jf[f].name, "gauge", jf[f].help);
        for (guint i = 0; i < jobs->len; i++) {
            BdJob *job = jobs->pdata[i];
            BdJobSnapshot *s = &g_array_index(snaps, BdJobSnapshot, i);
            g_string_truncate(l, 0);
            label(l, "job", job->id);
            sample_u(o, jf[f].name, "", l,
                     f == 0 ? s->current : f == 1 ? s->total
                     : (uint64_t)MAX(s->speed, 0));
        }
    }
    /* The rate is left to PromQL: progress only grows (job-thread.c adds
     * to it, nothing takes from it), so it is exported a second time as
     * a counter, and rate(blockd_job_processed_bytes_total[1m]) is the
     * job's rate over any window the user picks.  A rate the daemon
     * computed itself would be a gauge over a window of its choosing,
     * lost between scrapes and wrong with two scrapers; and the offset
     * gauge above cannot be rate()d by the book.  A job id used again
     * after a dismiss starts again from 0: a reset, as rate() expects. */
    family(o, "blockd_job_processed_bytes_total", "counter",
           "Work the job has done (its offset): rate() of it is the "
           "job's rate. Create and amend jobs count 1 in all.");
    for (guint i = 0; i < jobs->len; i++) {
        BdJob *job = jobs->pdata[i];
        g_string_truncate(l, 0);
        label(l, "job", job->id);
        sample_u(o, "blockd_job_processed_bytes_total", "", l,
                 g_array_index(snaps, BdJobSnapshot, i).current);
    }
}

static void collect_bitmaps(Out *o)
{
    GPtrArray *nodes = bd_node_list();
    g_autoptr(GString) l = g_string_new(NULL);

    family(o, "blockd_dirty_bitmap_dirty_bytes", "gauge",
           "Bytes a named dirty bitmap marks dirty.");
    for (guint i = 0; i < nodes->len; i++) {
        BdNode *n = nodes->pdata[i];
        g_autoptr(GPtrArray) bms = NULL;

        if (!n->node_name || !n->node_name[0]) {
            continue;
        }
        bms = bd_dirty_bitmap_list(n);
        for (guint b = 0; b < bms->len; b++) {
            const char *name = bd_dirty_bitmap_name(bms->pdata[b]);
            if (!name) {
                continue;
            }
            g_string_truncate(l, 0);
            label(l, "node", n->node_name);
            label(l, "bitmap", name);
            sample_u(o, "blockd_dirty_bitmap_dirty_bytes", "", l,
                     bd_dirty_bitmap_count(bms->pdata[b]));
        }
    }
}

/* --- the process --- */

/* A "Key:  value" line of /proc/self/status, or 0. */
static uint64_t proc_status(const char *key)
{
    g_autofree char *text = NULL;
    size_t klen = strlen(key);

    if (!g_file_get_contents("/proc/self/status", &text, NULL, NULL)) {
        return 0;
    }
    for (char *line = text; line && *line; ) {
        char *next = strchr(line, '\n');
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            return g_ascii_strtoull(line + klen + 1, NULL, 10);
        }
        line = next ? next + 1 : NULL;
    }
    return 0;
}

static void collect_process(Out *o)
{
    g_autoptr(GString) none = g_string_new(NULL);
    g_autoptr(GString) l = g_string_new(NULL);

    family(o, "blockd_build_info", "gauge", "The daemon's version.");
    label(l, "version", build_version ? build_version : BLOCKD_VERSION);
    sample_u(o, "blockd_build_info", "", l, 1);
    family(o, "blockd_process_resident_memory_bytes", "gauge",
           "Resident set size (VmRSS).");
    sample_u(o, "blockd_process_resident_memory_bytes", "", none,
             proc_status("VmRSS") * 1024);
    family(o, "blockd_process_threads", "gauge", "Threads of the daemon.");
    sample_u(o, "blockd_process_threads", "", none, proc_status("Threads"));
    family(o, "blockd_process_start_time_seconds", "gauge",
           "Start time of the daemon since the Unix epoch.");
    sample_d(o, "blockd_process_start_time_seconds", none,
             (start_real_us ? start_real_us : g_get_real_time()) / 1e6);
    family(o, "blockd_uptime_seconds", "gauge",
           "Seconds since the daemon started.");
    sample_d(o, "blockd_uptime_seconds", none,
             start_monotonic_us
             ? (g_get_monotonic_time() - start_monotonic_us) / 1e6 : 0);

    BdMetricsHttpStats hs;
    bd_metrics_http_stats(&hs);
    family(o, "blockd_metrics_http_connections", "gauge",
           "Connections open to this endpoint (this scrape's included).");
    sample_u(o, "blockd_metrics_http_connections", "", none, hs.open);
    family(o, "blockd_metrics_http_connections_closed_total", "counter",
           "Connections to this endpoint closed for a limit: over "
           "max-connections, or past idle-timeout.");
    g_string_truncate(l, 0);
    label(l, "reason", "max-connections");
    sample_u(o, "blockd_metrics_http_connections_closed_total", "", l,
             hs.refused);
    g_string_truncate(l, 0);
    label(l, "reason", "idle-timeout");
    sample_u(o, "blockd_metrics_http_connections_closed_total", "", l,
             hs.timed_out);
}

GString *bd_metrics_collect(BdMetricsFormat fmt)
{
    BD_GLOBAL_STATE_CODE();

    Out o = { .s = g_string_sized_new(16384), .fmt = fmt };

    collect_nodes(&o);
    collect_exports(&o);
    collect_jobs(&o);
    collect_bitmaps(&o);
    collect_process(&o);
    if (fmt == BD_METRICS_OPENMETRICS) {
        g_string_append(o.s, "# EOF\n");
    }
    return o.s;
}
