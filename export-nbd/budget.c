/* SPDX-License-Identifier: MIT */
/* Request memory budgets of the NBD server (budget.h). */
#include "export-nbd/budget.h"

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
        bd_cond_wait(&b->cond, &b->lock);
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

static void wake(BdNbdBudget *b)
{
    bd_mutex_lock(&b->lock);
    g_cond_broadcast(&b->cond);
    bd_mutex_unlock(&b->lock);
}

void bd_nbd_budget_wake(BdNbdBudget *conn)
{
    /* The quit flag is tested under each budget's lock, and set before
     * this: a waiter either saw it or is in its wait now. */
    wake(conn);
    wake(bd_nbd_budget_global());
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
