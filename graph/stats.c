/* SPDX-License-Identifier: MIT */
/* I/O accounting with relaxed atomics (see stats.h). */
#include <errno.h>
#include <sched.h>
#include <time.h>
#include "graph/stats.h"

int64_t bd_io_stats_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bd_io_stats_init(BdIoStats *s)
{
    *s = (BdIoStats) { .account_invalid = TRUE, .account_failed = TRUE };
}

static inline void add(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static void histogram_account(BdIoStats *s, BdAcctType type,
                              uint64_t latency)
{
    BdLatencyHistogram *h;
    guint lo = 0, hi;

    __atomic_fetch_add(&s->hist_users, 1, __ATOMIC_SEQ_CST);
    h = __atomic_load_n(&s->hist[type], __ATOMIC_SEQ_CST);
    if (h) {
        /* The first boundary above 'latency' is its bin. */
        hi = h->n;
        while (lo < hi) {
            guint mid = (lo + hi) / 2;
            if (latency < h->boundaries[mid]) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        add(&h->bins[lo], 1);
        add(&h->sum_ns, latency);
    }
    __atomic_fetch_sub(&s->hist_users, 1, __ATOMIC_RELEASE);
}

/* The fixed bucket of a latency: the smallest i with
 * latency <= 1000 * 2^i ns, i.e. ceil(latency in us) <= 2^i. */
static inline guint lat_bucket(uint64_t ns)
{
    uint64_t us = (ns + 999) / 1000;
    guint i = us <= 1 ? 0 : 64 - (guint)__builtin_clzll(us - 1);

    return MIN(i, BD_LAT_BUCKETS - 1);
}

int64_t bd_io_stats_begin(BdIoStats *s)
{
    add(&s->in_flight, 1);
    return bd_io_stats_now();
}

void bd_io_stats_end(BdIoStats *s, BdAcctType type, uint64_t bytes,
                     int64_t start_ns, int ret)
{
    __atomic_fetch_sub(&s->in_flight, 1, __ATOMIC_RELAXED);
    if (ret != -EAGAIN && ret != -ENOTSUP) {
        bd_io_stats_done(s, type, bytes, start_ns, ret);
    }
}

void bd_io_stats_done(BdIoStats *s, BdAcctType type, uint64_t bytes,
                      int64_t start_ns, int ret)
{
    int64_t now = bd_io_stats_now();

    if (__atomic_load_n(&s->nr_hist, __ATOMIC_RELAXED) > 0) {
        histogram_account(s, type, (uint64_t)(now - start_ns));
    }

    if (ret < 0) {
        add(&s->failed[type], 1);
    } else {
        add(&s->bytes[type], bytes);
        add(&s->ops[type], 1);
    }
    if (ret >= 0 || s->account_failed) {
        add(&s->total_time_ns[type], (uint64_t)(now - start_ns));
        add(&s->lat[type][lat_bucket((uint64_t)(now - start_ns))], 1);
        __atomic_store_n(&s->last_access_ns, now, __ATOMIC_RELAXED);
    }
}

void bd_io_stats_invalid(BdIoStats *s, BdAcctType type)
{
    add(&s->invalid[type], 1);
    if (s->account_invalid) {
        __atomic_store_n(&s->last_access_ns, bd_io_stats_now(),
                         __ATOMIC_RELAXED);
    }
}

void bd_io_stats_read(const BdIoStats *s, BdIoStats *out)
{
    for (int t = 0; t < BD_ACCT__MAX; t++) {
        out->bytes[t] = __atomic_load_n(&s->bytes[t], __ATOMIC_RELAXED);
        out->ops[t] = __atomic_load_n(&s->ops[t], __ATOMIC_RELAXED);
        out->failed[t] = __atomic_load_n(&s->failed[t], __ATOMIC_RELAXED);
        out->invalid[t] = __atomic_load_n(&s->invalid[t], __ATOMIC_RELAXED);
        out->total_time_ns[t] = __atomic_load_n(&s->total_time_ns[t],
                                                __ATOMIC_RELAXED);
        out->merged[t] = __atomic_load_n(&s->merged[t], __ATOMIC_RELAXED);
        for (int i = 0; i < BD_LAT_BUCKETS; i++) {
            out->lat[t][i] = __atomic_load_n(&s->lat[t][i], __ATOMIC_RELAXED);
        }
    }
    out->in_flight = __atomic_load_n(&s->in_flight, __ATOMIC_RELAXED);
    out->last_access_ns = __atomic_load_n(&s->last_access_ns,
                                          __ATOMIC_RELAXED);
    out->account_invalid = s->account_invalid;
    out->account_failed = s->account_failed;
}

static void histogram_free(BdLatencyHistogram *h)
{
    if (h) {
        g_free(h->boundaries);
        g_free(h->bins);
        g_free(h);
    }
}

gboolean bd_latency_boundaries_valid(const uint64_t *boundaries, guint n)
{
    for (guint i = 0; i < n; i++) {
        if (boundaries[i] <= (i ? boundaries[i - 1] : 0)) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean bd_io_stats_set_histogram(BdIoStats *s, BdAcctType type,
                                   const uint64_t *boundaries, guint n)
{
    BdLatencyHistogram *h = NULL, *old;

    if (!bd_latency_boundaries_valid(boundaries, n)) {
        return FALSE;
    }
    if (n > 0) {
        h = g_new0(BdLatencyHistogram, 1);
        h->n = n;
        h->boundaries = g_memdup2(boundaries, n * sizeof(uint64_t));
        h->bins = g_new0(uint64_t, n + 1);
    }
    old = __atomic_exchange_n(&s->hist[type], h, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&s->nr_hist, (h ? 1 : 0) - (old ? 1 : 0),
                       __ATOMIC_RELAXED);
    /* A request that took 'old' holds hist_users up until it is done
     * with it; one that comes later sees the new pointer.  The window is
     * a binary search long. */
    while (old && __atomic_load_n(&s->hist_users, __ATOMIC_SEQ_CST) > 0) {
        sched_yield();
    }
    histogram_free(old);
    return TRUE;
}

const BdLatencyHistogram *bd_io_stats_histogram(const BdIoStats *s,
                                                BdAcctType type)
{
    return s->hist[type];
}

void bd_io_stats_destroy(BdIoStats *s)
{
    for (int t = 0; t < BD_ACCT__MAX; t++) {
        histogram_free(s->hist[t]);
        s->hist[t] = NULL;
    }
    s->nr_hist = 0;
}
