/* SPDX-License-Identifier: MIT */
/* I/O accounting (QEMU's BlockAcctStats): bytes, operations, failed and
 * invalid requests, total latency and the last access time of one user
 * of the graph (an entry handle), kept lock-free so that the request
 * path pays an atomic add per counter and nothing else.
 *
 * Thread model: bd_io_stats_done/invalid from any thread (relaxed
 * atomics: each counter is exact, a reader may see one counter of a
 * request before another).  bd_io_stats_read from any thread, e.g.
 * the control channel or a metrics endpoint.
 */
#ifndef BD_GRAPH_STATS_H
#define BD_GRAPH_STATS_H

#include <glib.h>
#include <stdint.h>

/* QEMU's BlockAcctType order (BLOCK_ACCT_READ, ...), then write
 * zeroes, which QEMU's device models count as writes and which blockd
 * counts apart only at the nodes (graph/io.c) for the metrics. */
typedef enum {
    BD_ACCT_READ,
    BD_ACCT_WRITE,
    BD_ACCT_FLUSH,
    BD_ACCT_UNMAP,
    BD_ACCT_ZERO,
    BD_ACCT__MAX,
} BdAcctType;
/* The kinds QEMU's BlockDeviceStats reports (query-blockstats). */
#define BD_ACCT__QMP BD_ACCT_ZERO

/* The always-on latency buckets of the metrics endpoint: bucket i < 
 * BD_LAT_BUCKETS - 1 counts latencies of at most 2^i microseconds (and
 * more than the bucket below), the last one everything longer (up to
 * 2^25 us = 33.5 s is told apart).  One atomic add per request. */
#define BD_LAT_BUCKETS 27
/* Upper bound of bucket i in ns (i < BD_LAT_BUCKETS - 1). */
#define BD_LAT_BUCKET_NS(i) (UINT64_C(1000) << (i))

/* A latency histogram (block-latency-histogram-set): n boundaries in
 * ns, strictly increasing and > 0, and n + 1 bins [0, b0), [b0, b1),
 * ..., [b(n-1), inf); sum_ns is the latencies the bins counted, so that
 * a histogram set anew has a _sum that matches its _count. */
typedef struct {
    guint n;
    uint64_t *boundaries;
    uint64_t *bins;            /* atomics */
    uint64_t sum_ns;           /* atomic */
} BdLatencyHistogram;

typedef struct {
    uint64_t bytes[BD_ACCT__MAX];
    uint64_t ops[BD_ACCT__MAX];
    uint64_t failed[BD_ACCT__MAX];
    uint64_t invalid[BD_ACCT__MAX];
    uint64_t total_time_ns[BD_ACCT__MAX];
    uint64_t merged[BD_ACCT__MAX];        /* blockd merges nothing: 0 */
    int64_t last_access_ns;               /* monotonic; 0: never */
    /* Latencies of the requests whose time is counted, in the fixed
     * buckets above (the metrics endpoint). */
    uint64_t lat[BD_ACCT__MAX][BD_LAT_BUCKETS];
    /* Requests begun (bd_io_stats_begin) and not yet done: the nodes
     * keep it; exports use their entry handle's count. */
    uint64_t in_flight;
    gboolean account_invalid;             /* invalid ops touch last_access */
    gboolean account_failed;              /* failed ops count their time */
    /* Histograms, set and read on the main thread: the request path
     * looks at them only while nr_hist > 0 (a relaxed load), and then
     * holds hist_users raised while it uses one, so that a replaced
     * histogram is freed only when no request holds it. */
    BdLatencyHistogram *hist[BD_ACCT__MAX];
    int nr_hist;
    int hist_users;
} BdIoStats;

/* A monotonic clock in nanoseconds (the start of a request). */
int64_t bd_io_stats_now(void);
void bd_io_stats_init(BdIoStats *s);
/* A request starts: in_flight raised, the start time returned for
 * bd_io_stats_end. */
int64_t bd_io_stats_begin(BdIoStats *s);
/* ... and ends: in_flight lowered and bd_io_stats_done, unless 'ret' is
 * -EAGAIN or -ENOTSUP (not done: the caller takes another way). */
void bd_io_stats_end(BdIoStats *s, BdAcctType type, uint64_t bytes,
                     int64_t start_ns, int ret);
/* A request of 'type' and 'bytes' that started at 'start_ns' ended
 * with 'ret' (0 or -errno): done, or failed (QEMU's block_acct_done /
 * block_acct_failed). */
void bd_io_stats_done(BdIoStats *s, BdAcctType type, uint64_t bytes,
                      int64_t start_ns, int ret);
/* A request refused before it reached the graph (out of range, not
 * writable): QEMU's block_acct_invalid. */
void bd_io_stats_invalid(BdIoStats *s, BdAcctType type);
/* Whether 'n' boundaries are strictly increasing and > 0 (n == 0 is). */
gboolean bd_latency_boundaries_valid(const uint64_t *boundaries, guint n);
/* Replace the histogram of 'type' with one of 'n' boundaries (n == 0:
 * remove it).  FALSE, nothing changed, unless the boundaries are
 * strictly increasing and > 0.  Main thread. */
gboolean bd_io_stats_set_histogram(BdIoStats *s, BdAcctType type,
                                   const uint64_t *boundaries, guint n);
/* The histogram of 'type' or NULL; main thread (the only writer of the
 * pointers), bins read with atomics. */
const BdLatencyHistogram *bd_io_stats_histogram(const BdIoStats *s,
                                                BdAcctType type);
/* Free the histograms (the owner of 's' is going away). */
void bd_io_stats_destroy(BdIoStats *s);

/* A consistent-enough copy (each counter read atomically, the fixed
 * latency buckets and in_flight too), without the histograms. */
void bd_io_stats_read(const BdIoStats *s, BdIoStats *out);

#endif
