/* SPDX-License-Identifier: MIT */
/* Request list tests: which requests wait for which, arrival order,
 * and mutual exclusion of conflicting requests under many threads. */
#include "graph/reqlist.h"

/* Spin (yielding) until 'n' threads sleep in the list: then they are
 * known to be blocked, with no timing assumption. */
static void wait_for_waiters(BdReqList *l, unsigned n)
{
    for (;;) {
        bd_reqlist_lock(l);
        unsigned w = l->waiters;
        bd_reqlist_unlock(l);
        if (w >= n) {
            return;
        }
        g_thread_yield();
    }
}

typedef struct {
    BdReqList *l;
    uint64_t offset, bytes;
    gboolean serialising;
    gint entered;
} Entrant;

static gpointer enter_thread(gpointer opaque)
{
    Entrant *e = opaque;
    BdReq req;

    bd_req_begin(e->l, &req, e->offset, e->bytes, e->serialising);
    g_atomic_int_set(&e->entered, 1);
    bd_req_end(e->l, &req);
    return NULL;
}

static void test_non_serialising_share(void)
{
    BdReqList l;
    BdReq a, b, c;

    bd_reqlist_init(&l);
    /* Overlapping plain writes never wait for each other. */
    bd_req_begin(&l, &a, 0, 4096, FALSE);
    bd_req_begin(&l, &b, 512, 512, FALSE);
    /* A serialising request elsewhere does not matter either. */
    bd_req_begin(&l, &c, 8192, 4096, TRUE);
    bd_req_end(&l, &b);
    bd_req_end(&l, &a);
    bd_req_end(&l, &c);
    bd_reqlist_destroy(&l);
}

/* An aligned write waits for a read-modify-write of its block, and a
 * read-modify-write waits for an aligned write already in flight. */
static void check_waits(gboolean first_serialising)
{
    BdReqList l;
    BdReq first;
    Entrant e = { &l, 0, 4096, !first_serialising, 0 };
    GThread *t;

    bd_reqlist_init(&l);
    bd_req_begin(&l, &first, 0, 4096, first_serialising);
    t = g_thread_new("entrant", enter_thread, &e);
    wait_for_waiters(&l, 1);
    g_assert_cmpint(g_atomic_int_get(&e.entered), ==, 0);
    bd_req_end(&l, &first);
    g_thread_join(t);
    g_assert_cmpint(e.entered, ==, 1);
    bd_reqlist_destroy(&l);
}

static void test_write_waits_for_rmw(void)
{
    check_waits(TRUE);
}

static void test_rmw_waits_for_write(void)
{
    check_waits(FALSE);
}

/* Arrival order: C comes after B, which waits for A; C conflicts only
 * with B and must wait for it even though B is itself waiting, and
 * nothing deadlocks. */
static void test_arrival_order(void)
{
    BdReqList l;
    BdReq a;
    Entrant b = { &l, 0, 8192, TRUE, 0 };
    Entrant c = { &l, 6000, 100, FALSE, 0 };
    GThread *tb, *tc;

    bd_reqlist_init(&l);
    bd_req_begin(&l, &a, 0, 4096, FALSE);
    tb = g_thread_new("b", enter_thread, &b);
    wait_for_waiters(&l, 1);
    tc = g_thread_new("c", enter_thread, &c);
    wait_for_waiters(&l, 2);
    g_assert_cmpint(g_atomic_int_get(&b.entered), ==, 0);
    g_assert_cmpint(g_atomic_int_get(&c.entered), ==, 0);
    bd_req_end(&l, &a);
    g_thread_join(tb);
    g_thread_join(tc);
    g_assert_cmpint(b.entered, ==, 1);
    g_assert_cmpint(c.entered, ==, 1);
    bd_reqlist_destroy(&l);
}

/* Many threads, random ranges over a few blocks: while a serialising
 * request runs, no other request runs over its blocks. */
#define BLOCKS 8
#define BLOCK 64

typedef struct {
    BdReqList l;
    gint running[BLOCKS];      /* requests running over each block */
    gint exclusive[BLOCKS];    /* of which serialising */
    gint violations;
} Stress;

static gpointer stress_thread(gpointer opaque)
{
    Stress *st = opaque;
    GRand *r = g_rand_new();

    for (int i = 0; i < 20000; i++) {
        uint64_t off = g_rand_int_range(r, 0, BLOCKS * BLOCK);
        uint64_t len = g_rand_int_range(r, 1, 2 * BLOCK);
        gboolean ser = g_rand_boolean(r);
        uint64_t first, last;
        BdReq req;

        len = MIN(len, (uint64_t)BLOCKS * BLOCK - off);
        first = off / BLOCK;
        last = (off + len - 1) / BLOCK;
        if (ser) {
            /* Serialising requests cover whole blocks, as RMW does. */
            off = first * BLOCK;
            len = (last + 1) * BLOCK - off;
        }
        bd_req_begin(&st->l, &req, off, len, ser);
        for (uint64_t b = first; b <= last; b++) {
            if (g_atomic_int_get(&st->exclusive[b]) ||
                (ser && g_atomic_int_get(&st->running[b]))) {
                g_atomic_int_inc(&st->violations);
            }
            g_atomic_int_inc(&st->running[b]);
            if (ser) {
                g_atomic_int_inc(&st->exclusive[b]);
            }
        }
        g_thread_yield();
        for (uint64_t b = first; b <= last; b++) {
            if (ser) {
                g_atomic_int_add(&st->exclusive[b], -1);
            }
            g_atomic_int_add(&st->running[b], -1);
        }
        bd_req_end(&st->l, &req);
    }
    g_rand_free(r);
    return NULL;
}

static void test_stress_exclusion(void)
{
    Stress st = { 0 };
    GThread *t[6];

    bd_reqlist_init(&st.l);
    for (guint i = 0; i < G_N_ELEMENTS(t); i++) {
        t[i] = g_thread_new("stress", stress_thread, &st);
    }
    for (guint i = 0; i < G_N_ELEMENTS(t); i++) {
        g_thread_join(t[i]);
    }
    g_assert_cmpint(st.violations, ==, 0);
    bd_reqlist_destroy(&st.l);
}

/* The locked interface: pick a range, claim it, see overlaps. */
static void test_locked_interface(void)
{
    BdReqList l;
    BdReq a;

    bd_reqlist_init(&l);
    bd_reqlist_lock(&l);
    g_assert_false(bd_reqlist_overlaps_locked(&l, 0, 100));
    bd_req_insert_locked(&l, &a, 50, 100, TRUE);
    g_assert_true(bd_reqlist_overlaps_locked(&l, 0, 51));
    g_assert_false(bd_reqlist_overlaps_locked(&l, 0, 50));
    g_assert_false(bd_reqlist_overlaps_locked(&l, 150, 10));
    bd_req_remove_locked(&l, &a);
    g_assert_false(bd_reqlist_overlaps_locked(&l, 0, 1000));
    bd_reqlist_unlock(&l);
    bd_reqlist_destroy(&l);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/reqlist/non-serialising-share",
                    test_non_serialising_share);
    g_test_add_func("/reqlist/write-waits-for-rmw", test_write_waits_for_rmw);
    g_test_add_func("/reqlist/rmw-waits-for-write", test_rmw_waits_for_write);
    g_test_add_func("/reqlist/arrival-order", test_arrival_order);
    g_test_add_func("/reqlist/locked-interface", test_locked_interface);
    g_test_add_func("/reqlist/stress-exclusion", test_stress_exclusion);
    return g_test_run();
}
