/* SPDX-License-Identifier: MIT */
/* Request memory budgets of the NBD server (budget.h). */
#include "export-nbd/budget.h"

/* How often a waiting reservation looks at its connection's quit flag:
 * a connection that is shut down while one of its workers waits for
 * room must not keep that worker (and its thread) until room comes. */
#define QUIT_CHECK_US (100 * 1000)

void bd_nbd_budget_init(BdNbdBudget *b, uint64_t limit)
{
    bd_mutex_init(&b->lock);
    g_cond_init(&b->cond);
    b->limit = limit;
    b->used = 0;
}

void bd_nbd_budget_destroy(BdNbdBudget *b)
{
    bd_mutex_destroy(&b->lock);
    g_cond_clear(&b->cond);
}

BdNbdBudget *bd_nbd_budget_global(void)
{
    static BdNbdBudget global;
    static gsize ready;

    if (g_once_init_enter(&ready)) {
        bd_nbd_budget_init(&global, BD_NBD_BUDGET_GLOBAL);
        g_once_init_leave(&ready, 1);
    }
    return &global;
}

static gboolean take(BdNbdBudget *b, uint64_t bytes, const gint *quit)
{
    gboolean ok = TRUE;

    bd_mutex_lock(&b->lock);
    /* An empty budget takes any one request: a request larger than the
     * limit must not wait for ever. */
    while (b->used != 0 && b->used + bytes > b->limit) {
        if (g_atomic_int_get(quit)) {
            ok = FALSE;
            break;
        }
        bd_cond_wait_until(&b->cond, &b->lock,
                           g_get_monotonic_time() + QUIT_CHECK_US);
    }
    if (ok) {
        b->used += bytes;
    }
    bd_mutex_unlock(&b->lock);
    return ok;
}

static void give(BdNbdBudget *b, uint64_t bytes)
{
    bd_mutex_lock(&b->lock);
    g_assert(b->used >= bytes);
    b->used -= bytes;
    g_cond_broadcast(&b->cond);
    bd_mutex_unlock(&b->lock);
}

gboolean bd_nbd_budget_reserve(BdNbdBudget *conn, uint64_t bytes,
                               const gint *quit)
{
    if (!take(conn, bytes, quit)) {
        return FALSE;
    }
    if (!take(bd_nbd_budget_global(), bytes, quit)) {
        give(conn, bytes);
        return FALSE;
    }
    return TRUE;
}

void bd_nbd_budget_release(BdNbdBudget *conn, uint64_t bytes)
{
    give(bd_nbd_budget_global(), bytes);
    give(conn, bytes);
}
