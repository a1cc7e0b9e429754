/* SPDX-License-Identifier: MIT */
/* Request memory budgets of the NBD server: a bound on the bytes that
 * large requests' buffers hold at once, per connection and over all
 * connections (issue 20's resource limits).
 *
 * Requests up to BD_NBD_BUDGET_FREE bytes draw on nothing: a
 * connection's workers keep such buffers (at most BD_NBD_MAX_WORKERS
 * of them; the extra workers of a latency-bound export keep none above
 * BD_NBD_EXTRA_KEEP_BUF and reserve what is larger).  A larger buffer
 * is reserved from the connection's budget, then from the global one,
 * before it is allocated, and both are given back when the request has
 * been answered and the buffer freed.  A
 * reservation waits while the budget is spent: the reader then stops
 * reading, so a client that sends 32 MiB writes as fast as it can, or
 * does not read the replies of its 32 MiB reads, is slowed down by TCP
 * instead of growing the daemon.  One request always fits an empty
 * budget, whatever its size, so nothing waits forever on its own.
 *
 * Thread model: any worker thread; each budget has its own lock.
 */
#ifndef BD_EXPORT_NBD_BUDGET_H
#define BD_EXPORT_NBD_BUDGET_H

#include <glib.h>
#include <stdint.h>

#include "graph/lock.h"

/* Buffers up to this size are not counted (BD_NBD_KEEP_BUF). */
#define BD_NBD_BUDGET_FREE       (4u << 20)
/* Large request buffers one connection may hold at once. */
#define BD_NBD_BUDGET_CONNECTION (128u << 20)
/* ... and all connections together. */
#define BD_NBD_BUDGET_GLOBAL     (1024u << 20)

typedef struct {
    BdMutex lock;
    GCond cond;
    uint64_t limit;
    uint64_t used BD_GUARDED_BY(lock);
} BdNbdBudget;

void bd_nbd_budget_init(BdNbdBudget *b, uint64_t limit);
void bd_nbd_budget_destroy(BdNbdBudget *b);

/* The server-wide budget (static, initialized on first use). */
BdNbdBudget *bd_nbd_budget_global(void);

/* Reserve 'bytes' from 'conn' and then the global budget, waiting for
 * room; gives up (FALSE, nothing reserved) once *quit is set (and
 * bd_nbd_budget_wake() called). */
gboolean bd_nbd_budget_reserve(BdNbdBudget *conn, uint64_t bytes,
                               const gint *quit);
/* Wake reservations waiting on 'conn' (and in the global budget) to
 * look at their quit flag again: call after setting it. */
void bd_nbd_budget_wake(BdNbdBudget *conn);
/* Give back what bd_nbd_budget_reserve took. */
void bd_nbd_budget_release(BdNbdBudget *conn, uint64_t bytes);

#endif
