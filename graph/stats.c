/* SPDX-License-Identifier: MIT */
/* I/O accounting with relaxed atomics (see stats.h). */
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

void bd_io_stats_done(BdIoStats *s, BdAcctType type, uint64_t bytes,
                      int64_t start_ns, int ret)
{
    int64_t now = bd_io_stats_now();

    if (ret < 0) {
        add(&s->failed[type], 1);
    } else {
        add(&s->bytes[type], bytes);
        add(&s->ops[type], 1);
    }
    if (ret >= 0 || s->account_failed) {
        add(&s->total_time_ns[type], (uint64_t)(now - start_ns));
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
    }
    out->last_access_ns = __atomic_load_n(&s->last_access_ns,
                                          __ATOMIC_RELAXED);
    out->account_invalid = s->account_invalid;
    out->account_failed = s->account_failed;
}
