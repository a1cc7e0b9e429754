/* SPDX-License-Identifier: MIT */
/* export-nbd/budget.c: reservations up to the limit, waiting for room,
 * giving up on quit, one oversized request on an empty budget, and the
 * global budget shared by connections. */
#include "export-nbd/budget.h"

#define MiB (1u << 20)

typedef struct {
    BdNbdBudget *conn;
    uint64_t bytes;
    gint quit;
    gint done;        /* 1: reserved, -1: gave up */
} Waiter;

static gpointer reserve_thread(gpointer opaque)
{
    Waiter *w = opaque;

    g_atomic_int_set(&w->done, bd_nbd_budget_reserve(w->conn, w->bytes,
                                                     &w->quit) ? 1 : -1);
    return NULL;
}

static void wait_done(Waiter *w)
{
    for (int i = 0; i < 5000 && !g_atomic_int_get(&w->done); i++) {
        g_usleep(1000);
    }
}

static void test_waits_for_room(void)
{
    BdNbdBudget conn;
    Waiter w = { .conn = &conn, .bytes = 32 * MiB };
    gint no_quit = 0;
    GThread *t;

    bd_nbd_budget_init(&conn, 64 * MiB);
    g_assert_true(bd_nbd_budget_reserve(&conn, 32 * MiB, &no_quit));
    g_assert_true(bd_nbd_budget_reserve(&conn, 32 * MiB, &no_quit));
    t = g_thread_new("waiter", reserve_thread, &w);
    g_usleep(50 * 1000);
    g_assert_cmpint(g_atomic_int_get(&w.done), ==, 0);   /* still waiting */
    bd_nbd_budget_release(&conn, 32 * MiB);
    g_thread_join(t);
    g_assert_cmpint(w.done, ==, 1);
    bd_nbd_budget_release(&conn, 32 * MiB);
    bd_nbd_budget_release(&conn, 32 * MiB);
    bd_nbd_budget_destroy(&conn);
}

static void test_gives_up_on_quit(void)
{
    BdNbdBudget conn;
    Waiter w = { .conn = &conn, .bytes = 8 * MiB };
    gint no_quit = 0;
    GThread *t;

    bd_nbd_budget_init(&conn, 8 * MiB);
    g_assert_true(bd_nbd_budget_reserve(&conn, 8 * MiB, &no_quit));
    t = g_thread_new("waiter", reserve_thread, &w);
    g_usleep(50 * 1000);
    g_atomic_int_set(&w.quit, 1);
    bd_nbd_budget_wake(&conn);       /* as bd_nbd_workers_wake() does */
    wait_done(&w);
    g_thread_join(t);
    g_assert_cmpint(w.done, ==, -1);
    /* Nothing was kept by the one that gave up: the budget empties. */
    bd_nbd_budget_release(&conn, 8 * MiB);
    g_assert_true(bd_nbd_budget_reserve(&conn, 8 * MiB, &no_quit));
    bd_nbd_budget_release(&conn, 8 * MiB);
    bd_nbd_budget_destroy(&conn);
}

static void test_oversized_on_empty(void)
{
    BdNbdBudget conn;
    gint no_quit = 0;

    bd_nbd_budget_init(&conn, 4 * MiB);
    g_assert_true(bd_nbd_budget_reserve(&conn, 32 * MiB, &no_quit));
    bd_nbd_budget_release(&conn, 32 * MiB);
    bd_nbd_budget_destroy(&conn);
}

/* Connections with room of their own still wait for the global budget. */
static void test_global_budget_shared(void)
{
    enum { N = BD_NBD_BUDGET_GLOBAL / BD_NBD_BUDGET_CONNECTION };
    BdNbdBudget conns[N + 1];
    Waiter w = { .conn = &conns[N], .bytes = BD_NBD_BUDGET_CONNECTION };
    gint no_quit = 0;
    GThread *t;

    for (int i = 0; i <= N; i++) {
        bd_nbd_budget_init(&conns[i], BD_NBD_BUDGET_CONNECTION);
    }
    for (int i = 0; i < N; i++) {
        g_assert_true(bd_nbd_budget_reserve(&conns[i],
                                            BD_NBD_BUDGET_CONNECTION,
                                            &no_quit));
    }
    t = g_thread_new("waiter", reserve_thread, &w);
    g_usleep(50 * 1000);
    g_assert_cmpint(g_atomic_int_get(&w.done), ==, 0);
    bd_nbd_budget_release(&conns[0], BD_NBD_BUDGET_CONNECTION);
    g_thread_join(t);
    g_assert_cmpint(w.done, ==, 1);
    for (int i = 1; i <= N; i++) {
        bd_nbd_budget_release(&conns[i], BD_NBD_BUDGET_CONNECTION);
    }
    for (int i = 0; i <= N; i++) {
        bd_nbd_budget_destroy(&conns[i]);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd-budget/waits-for-room", test_waits_for_room);
    g_test_add_func("/nbd-budget/gives-up-on-quit", test_gives_up_on_quit);
    g_test_add_func("/nbd-budget/oversized-on-empty", test_oversized_on_empty);
    g_test_add_func("/nbd-budget/global-shared", test_global_budget_shared);
    return g_test_run();
}
