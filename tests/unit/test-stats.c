/* SPDX-License-Identifier: MIT */
/* graph/stats.c: QEMU's accounting rules (failed requests count no
 * bytes, invalid ones no time), histogram bins and their validation,
 * and exact counts from several threads without a lock. */
#include <errno.h>
#include "graph/stats.h"

static void test_done_failed_invalid(void)
{
    BdIoStats s, r;

    bd_io_stats_init(&s);
    bd_io_stats_done(&s, BD_ACCT_WRITE, 65536, bd_io_stats_now(), 0);
    bd_io_stats_done(&s, BD_ACCT_WRITE, 4096, bd_io_stats_now(), -EIO);
    bd_io_stats_invalid(&s, BD_ACCT_READ);
    bd_io_stats_read(&s, &r);
    g_assert_cmpuint(r.bytes[BD_ACCT_WRITE], ==, 65536);
    g_assert_cmpuint(r.ops[BD_ACCT_WRITE], ==, 1);
    g_assert_cmpuint(r.failed[BD_ACCT_WRITE], ==, 1);
    g_assert_cmpuint(r.invalid[BD_ACCT_READ], ==, 1);
    g_assert_cmpuint(r.ops[BD_ACCT_READ], ==, 0);
    g_assert_cmpint(r.last_access_ns, >, 0);
    g_assert_true(r.account_invalid && r.account_failed);
}

static void test_histogram(void)
{
    static const uint64_t b[] = { 10, 1000000000000ull };
    static const uint64_t bad[] = { 10, 10 };
    static const uint64_t zero[] = { 0, 5 };
    BdIoStats s;
    const BdLatencyHistogram *h;
    int64_t now;

    bd_io_stats_init(&s);
    g_assert_false(bd_io_stats_set_histogram(&s, BD_ACCT_READ, bad, 2));
    g_assert_false(bd_io_stats_set_histogram(&s, BD_ACCT_READ, zero, 2));
    g_assert_null(bd_io_stats_histogram(&s, BD_ACCT_READ));
    g_assert_true(bd_io_stats_set_histogram(&s, BD_ACCT_READ, b, 2));
    now = bd_io_stats_now();
    /* Starts in the past give latencies of at least 100 ns (bin 1,
     * [10, 1e12)) and at least 2e12 ns (bin 2, [1e12, inf)). */
    bd_io_stats_done(&s, BD_ACCT_READ, 1, now - 100, 0);
    bd_io_stats_done(&s, BD_ACCT_READ, 1, now - 2000000000000ll, 0);
    bd_io_stats_done(&s, BD_ACCT_WRITE, 1, now - 100, 0);     /* no histogram */
    h = bd_io_stats_histogram(&s, BD_ACCT_READ);
    g_assert_nonnull(h);
    g_assert_cmpuint(h->n, ==, 2);
    g_assert_cmpuint(h->bins[0], ==, 0);
    g_assert_cmpuint(h->bins[1], ==, 1);
    g_assert_cmpuint(h->bins[2], ==, 1);
    /* The sum is of the latencies the bins counted. */
    g_assert_cmpuint(h->sum_ns, >=, 2000000000100ull);
    g_assert_cmpuint(h->sum_ns, <=, s.total_time_ns[BD_ACCT_READ]);
    /* Setting again starts from empty bins and a zero sum. */
    g_assert_true(bd_io_stats_set_histogram(&s, BD_ACCT_READ, b, 2));
    g_assert_cmpuint(bd_io_stats_histogram(&s, BD_ACCT_READ)->bins[1], ==, 0);
    g_assert_cmpuint(bd_io_stats_histogram(&s, BD_ACCT_READ)->sum_ns, ==, 0);
    g_assert_true(bd_io_stats_set_histogram(&s, BD_ACCT_READ, NULL, 0));
    g_assert_null(bd_io_stats_histogram(&s, BD_ACCT_READ));
    g_assert_cmpint(s.nr_hist, ==, 0);
    bd_io_stats_destroy(&s);
}

#define THREADS 4
#define PER_THREAD 100000

static gpointer hammer(gpointer data)
{
    BdIoStats *s = data;

    for (int i = 0; i < PER_THREAD; i++) {
        bd_io_stats_done(s, BD_ACCT_READ, 4096, bd_io_stats_now(), 0);
    }
    return NULL;
}

static void test_threads(void)
{
    static const uint64_t b[] = { 1000, 1000000 };
    BdIoStats s, r;
    GThread *t[THREADS];
    const BdLatencyHistogram *h;
    uint64_t sum = 0;

    bd_io_stats_init(&s);
    g_assert_true(bd_io_stats_set_histogram(&s, BD_ACCT_READ, b, 2));
    for (int i = 0; i < THREADS; i++) {
        t[i] = g_thread_new("hammer", hammer, &s);
    }
    /* Replace the histogram while they count: never a use after free
     * (ASan), and the new one counts what came after. */
    for (int i = 0; i < 50; i++) {
        g_assert_true(bd_io_stats_set_histogram(&s, BD_ACCT_READ, b, 2));
    }
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(t[i]);
    }
    bd_io_stats_read(&s, &r);
    g_assert_cmpuint(r.ops[BD_ACCT_READ], ==, THREADS * PER_THREAD);
    g_assert_cmpuint(r.bytes[BD_ACCT_READ], ==,
                     (uint64_t)THREADS * PER_THREAD * 4096);
    h = bd_io_stats_histogram(&s, BD_ACCT_READ);
    for (guint i = 0; i <= h->n; i++) {
        sum += h->bins[i];
    }
    g_assert_cmpuint(sum, <=, THREADS * PER_THREAD);
    bd_io_stats_destroy(&s);
}

/* The fixed buckets: latency L lands in the first i with
 * L <= 1000 * 2^i ns; the last bucket takes everything longer. */
static void test_fixed_buckets(void)
{
    static const struct { int64_t ns; int bucket; } cases[] = {
        { 0, 0 }, { 1, 0 }, { 1000, 0 }, { 1001, 1 }, { 2000, 1 },
        { 2001, 2 }, { 4000, 2 }, { 1000000, 10 }, { 1024000, 10 },
        { 1024001, 11 }, { (int64_t)1000 << 25, 25 },
        { ((int64_t)1000 << 25) + 1, BD_LAT_BUCKETS - 1 },
        { (int64_t)3600 * 1000000000, BD_LAT_BUCKETS - 1 },
    };

    for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
        BdIoStats s, r;
        int64_t start;

        bd_io_stats_init(&s);
        /* done() takes the time itself: start 'ns' before now, so the
         * latency is at least 'ns' and, on a sane machine, less than a
         * bucket boundary more -- checked against the bucket and the
         * one above. */
        start = bd_io_stats_now() - cases[c].ns;
        bd_io_stats_done(&s, BD_ACCT_ZERO, 512, start, 0);
        bd_io_stats_read(&s, &r);
        if (r.lat[BD_ACCT_ZERO][cases[c].bucket] != 1) {
            g_assert_cmpint(cases[c].bucket + 1, <, BD_LAT_BUCKETS);
            g_assert_cmpuint(r.lat[BD_ACCT_ZERO][cases[c].bucket + 1], ==, 1);
        }
        g_assert_cmpuint(r.ops[BD_ACCT_ZERO], ==, 1);
        g_assert_cmpuint(r.bytes[BD_ACCT_ZERO], ==, 512);
        bd_io_stats_destroy(&s);
    }
    g_assert_cmpuint(BD_LAT_BUCKET_NS(25), ==, UINT64_C(33554432000));
}

/* begin/end: in flight while running; -EAGAIN and -ENOTSUP are not
 * counted (the caller takes another way), errors are. */
static void test_begin_end(void)
{
    BdIoStats s, r;
    int64_t start;

    bd_io_stats_init(&s);
    start = bd_io_stats_begin(&s);
    bd_io_stats_read(&s, &r);
    g_assert_cmpuint(r.in_flight, ==, 1);
    bd_io_stats_end(&s, BD_ACCT_READ, 4096, start, -EAGAIN);
    start = bd_io_stats_begin(&s);
    bd_io_stats_end(&s, BD_ACCT_READ, 4096, start, -ENOTSUP);
    start = bd_io_stats_begin(&s);
    bd_io_stats_end(&s, BD_ACCT_READ, 4096, start, -EIO);
    start = bd_io_stats_begin(&s);
    bd_io_stats_end(&s, BD_ACCT_READ, 4096, start, 0);
    bd_io_stats_read(&s, &r);
    g_assert_cmpuint(r.in_flight, ==, 0);
    g_assert_cmpuint(r.ops[BD_ACCT_READ], ==, 1);
    g_assert_cmpuint(r.failed[BD_ACCT_READ], ==, 1);
    g_assert_cmpuint(r.bytes[BD_ACCT_READ], ==, 4096);
    bd_io_stats_destroy(&s);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/stats/done-failed-invalid", test_done_failed_invalid);
    g_test_add_func("/stats/histogram", test_histogram);
    g_test_add_func("/stats/threads", test_threads);
    g_test_add_func("/stats/fixed-buckets", test_fixed_buckets);
    g_test_add_func("/stats/begin-end", test_begin_end);
    return g_test_run();
}
