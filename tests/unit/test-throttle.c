/* SPDX-License-Identifier: MIT */
/* Unit tests of throttle groups and the throttle driver: QEMU's limit checks, leaky-bucket arithmetic, the group registry, releasing waiters on drain. */
#include <string.h>
#include <glib.h>
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/node.h"
#include "formats/registry.h"
#include "formats/throttle-group.h"

#define NS 1000000000LL

static void expect_invalid(BdThrottleConfig *cfg, const char *msg)
{
    g_autoptr(GError) err = NULL;

    g_assert_false(bd_throttle_config_is_valid(cfg, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, msg);
}

static void test_validity(void)
{
    BdThrottleConfig cfg;
    BdLeakyBucket *b = cfg.buckets;

    bd_throttle_config_init(&cfg);
    g_assert_true(bd_throttle_config_is_valid(&cfg, NULL));
    g_assert_false(bd_throttle_config_enabled(&cfg));

    b[BD_THROTTLE_OPS_TOTAL].avg = 10;
    b[BD_THROTTLE_OPS_WRITE].avg = 5;
    expect_invalid(&cfg, "bps/iops/max total values and read/write values "
                         "cannot be used at the same time");

    bd_throttle_config_init(&cfg);
    b[BD_THROTTLE_BPS_TOTAL].max = 10;
    b[BD_THROTTLE_BPS_TOTAL].avg = 5;
    b[BD_THROTTLE_BPS_READ].max = 10;
    b[BD_THROTTLE_BPS_READ].avg = 0;
    expect_invalid(&cfg, "bps/iops/max total values and read/write values "
                         "cannot be used at the same time");

    bd_throttle_config_init(&cfg);
    cfg.op_size = 4096;
    expect_invalid(&cfg, "iops size requires an iops value to be set");
    b[BD_THROTTLE_OPS_READ].avg = 1;
    g_assert_true(bd_throttle_config_is_valid(&cfg, NULL));

    bd_throttle_config_init(&cfg);
    b[BD_THROTTLE_BPS_WRITE].avg = BD_THROTTLE_VALUE_MAX + 1;
    expect_invalid(&cfg, "bps/iops/max values must be within "
                         "[0, 1000000000000000]");
    /* A negative rate from a client wraps, as in QEMU. */
    b[BD_THROTTLE_BPS_WRITE].avg = (uint64_t)-1;
    expect_invalid(&cfg, "bps/iops/max values must be within "
                         "[0, 1000000000000000]");

    bd_throttle_config_init(&cfg);
    b[BD_THROTTLE_OPS_TOTAL].avg = 10;
    b[BD_THROTTLE_OPS_TOTAL].burst_length = 0;
    expect_invalid(&cfg, "the burst length cannot be 0");
    b[BD_THROTTLE_OPS_TOTAL].burst_length = 3;
    expect_invalid(&cfg, "burst length set without burst rate");
    b[BD_THROTTLE_OPS_TOTAL].max = 5;
    expect_invalid(&cfg, "bps_max/iops_max cannot be lower than bps/iops");
    b[BD_THROTTLE_OPS_TOTAL].max = 50;
    g_assert_true(bd_throttle_config_is_valid(&cfg, NULL));
    b[BD_THROTTLE_OPS_TOTAL].burst_length = BD_THROTTLE_VALUE_MAX / 50 + 1;
    expect_invalid(&cfg, "burst length too high for this burst rate");
    b[BD_THROTTLE_OPS_TOTAL].burst_length = BD_THROTTLE_VALUE_MAX / 50;
    g_assert_true(bd_throttle_config_is_valid(&cfg, NULL));
    b[BD_THROTTLE_OPS_TOTAL].avg = 0;
    expect_invalid(&cfg, "bps_max/iops_max require corresponding bps/iops "
                         "values");
}

/* Without a burst rate a bucket holds a tenth of a second's worth
 * (here one op). */
static void test_leak_and_wait(void)
{
    BdThrottleConfig cfg;
    BdLeakyBucket *ops = &cfg.buckets[BD_THROTTLE_OPS_TOTAL];

    bd_throttle_config_init(&cfg);
    ops->avg = 10;
    bd_throttle_config_reset(&cfg);
    g_assert_true(bd_throttle_config_enabled(&cfg));

    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, 0);
    bd_throttle_account(&cfg, FALSE, 4096);
    /* Level 1 == max: still nothing to wait for. */
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, 0);
    bd_throttle_account(&cfg, TRUE, 4096);
    /* One op over at 10/s: 0.1 s, for reads and writes alike. */
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, NS / 10);
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, TRUE), ==, NS / 10);
    bd_throttle_leak(&cfg, NS / 20);
    g_assert_cmpfloat(ops->level, ==, 1.5);
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, TRUE), ==, NS / 20);
    /* Time going backwards leaks nothing; a long pause empties it. */
    bd_throttle_leak(&cfg, -NS);
    g_assert_cmpfloat(ops->level, ==, 1.5);
    bd_throttle_leak(&cfg, 100 * NS);
    g_assert_cmpfloat(ops->level, ==, 0);
}

/* Read and write buckets are separate; totals see both. */
static void test_directions(void)
{
    BdThrottleConfig cfg;

    bd_throttle_config_init(&cfg);
    cfg.buckets[BD_THROTTLE_BPS_WRITE].avg = 1000;
    bd_throttle_config_reset(&cfg);
    bd_throttle_account(&cfg, FALSE, 1 << 20);
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, TRUE), ==, 0);
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, 0);
    g_assert_cmpfloat(cfg.buckets[BD_THROTTLE_BPS_READ].level, ==, 1 << 20);
    g_assert_cmpfloat(cfg.buckets[BD_THROTTLE_BPS_TOTAL].level, ==,
                      1 << 20);
    bd_throttle_account(&cfg, TRUE, 1100);
    /* 1100 - max (100) = 1000 bytes over at 1000 B/s: one second. */
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, TRUE), ==, NS);
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, 0);
}

/* iops-size: a request bigger than op_size counts as several ops. */
static void test_op_size(void)
{
    BdThrottleConfig cfg;

    bd_throttle_config_init(&cfg);
    cfg.buckets[BD_THROTTLE_OPS_READ].avg = 100;
    cfg.op_size = 4096;
    bd_throttle_config_reset(&cfg);
    bd_throttle_account(&cfg, FALSE, 16384);
    g_assert_cmpfloat(cfg.buckets[BD_THROTTLE_OPS_READ].level, ==, 4);
    bd_throttle_account(&cfg, FALSE, 512);
    g_assert_cmpfloat(cfg.buckets[BD_THROTTLE_OPS_READ].level, ==, 5);
}

/* Bursts longer than a second: the bucket holds max * length, and the
 * burst itself is held to 'max' per second. */
static void test_burst(void)
{
    BdThrottleConfig cfg;
    BdLeakyBucket *b = &cfg.buckets[BD_THROTTLE_OPS_TOTAL];

    bd_throttle_config_init(&cfg);
    b->avg = 10;
    b->max = 100;
    b->burst_length = 2;
    g_assert_true(bd_throttle_config_is_valid(&cfg, NULL));
    bd_throttle_config_reset(&cfg);
    for (int i = 0; i < 10; i++) {
        bd_throttle_account(&cfg, FALSE, 512);
    }
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, 0);
    bd_throttle_account(&cfg, FALSE, 512);
    /* burst_level 11 - max/10: one op over at 100/s. */
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, NS / 100);
    bd_throttle_leak(&cfg, NS / 100);
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, 0);
    g_assert_cmpfloat(b->burst_level, ==, 10);
    g_assert_cmpfloat_with_epsilon(b->level, 10.9, 1e-9);
    /* Once max * length is used up, the average rate rules. */
    b->level = 210;
    b->burst_level = 0;
    g_assert_cmpint(bd_throttle_compute_wait(&cfg, FALSE), ==, NS);
}

static void test_registry(void)
{
    g_autoptr(GError) err = NULL;
    BdThrottleConfig cfg;
    BdThrottleGroup *a, *b;

    bd_throttle_config_init(&cfg);
    cfg.buckets[BD_THROTTLE_OPS_TOTAL].avg = 100;
    bd_throttle_group_create("reg0", &cfg);
    g_assert_true(bd_throttle_group_exists("reg0"));
    g_assert_null(bd_throttle_group_get("nope", &err));
    g_assert_cmpstr(err->message, ==, "Throttle group 'nope' does not exist");
    g_clear_error(&err);

    a = bd_throttle_group_get("reg0", &err);
    b = bd_throttle_group_get("reg0", &err);
    g_assert_no_error(err);
    g_assert_true(a == b);
    g_assert_cmpstr(bd_throttle_group_name(a), ==, "reg0");
    g_assert_false(bd_throttle_group_delete("reg0", &err));
    g_assert_cmpstr(err->message, ==,
                    "object 'reg0' is in use, can not be deleted");
    g_clear_error(&err);
    bd_throttle_group_put(a);
    g_assert_false(bd_throttle_group_delete("reg0", &err));
    g_clear_error(&err);
    bd_throttle_group_put(b);
    g_assert_true(bd_throttle_group_delete("reg0", &err));
    g_assert_false(bd_throttle_group_exists("reg0"));
    g_assert_false(bd_throttle_group_delete("reg0", &err));
    g_assert_cmpstr(err->message, ==, "object 'reg0' not found");
}

typedef struct {
    BdThrottleGroup *tg;
    BdThrottleMember *m;
    gint done;
} Waiter;

static gpointer waiter_thread(gpointer opaque)
{
    Waiter *w = opaque;

    bd_throttle_group_intercept(w->tg, w->m, FALSE, 4096);
    g_atomic_int_set(&w->done, 1);
    return NULL;
}

/* At 1 byte/s a second 4k read would wait over an hour: only disabling
 * its member (drain) and a kick let it go. */
static void test_release_on_drain(void)
{
    BdThrottleConfig cfg;
    BdThrottleMember drained = { 0 }, other = { 0 };
    Waiter w[3];
    GThread *t[3];
    BdThrottleGroup *tg;

    bd_throttle_config_init(&cfg);
    cfg.buckets[BD_THROTTLE_BPS_TOTAL].avg = 1;
    bd_throttle_group_create("slow", &cfg);
    tg = bd_throttle_group_get("slow", NULL);
    bd_throttle_group_intercept(tg, &other, FALSE, 4096);  /* goes at once */

    for (int i = 0; i < 3; i++) {
        w[i] = (Waiter) { tg, &drained, 0 };
        t[i] = g_thread_new("waiter", waiter_thread, &w[i]);
    }
    g_usleep(G_USEC_PER_SEC / 10);
    for (int i = 0; i < 3; i++) {
        g_assert_cmpint(g_atomic_int_get(&w[i].done), ==, 0);
    }
    g_atomic_int_inc(&drained.disabled);
    bd_throttle_group_kick(tg);
    for (int i = 0; i < 3; i++) {
        g_thread_join(t[i]);
        g_assert_cmpint(w[i].done, ==, 1);
    }
    /* While disabled, new requests do not wait either. */
    bd_throttle_group_intercept(tg, &drained, TRUE, 1 << 20);
    bd_throttle_group_put(tg);
    g_assert_true(bd_throttle_group_delete("slow", NULL));
}

static gint order_counter;

typedef struct {
    BdThrottleGroup *tg;
    BdThrottleMember *m;
    gint seq;
} Ordered;

static gpointer ordered_thread(gpointer opaque)
{
    Ordered *o = opaque;

    bd_throttle_group_intercept(o->tg, o->m, FALSE, 512);
    g_atomic_int_set(&o->seq, g_atomic_int_add(&order_counter, 1) + 1);
    return NULL;
}

static guint waiting_len(BdThrottleMember *m)
{
    /* Racy peek at group-internal state: good enough to wait for. */
    return ((volatile GQueue *)&m->waiting[0])->length;
}

/* Members take turns: a node with one request is not queued behind all
 * the requests of a busier node of the same group. */
static void test_round_robin(void)
{
    BdThrottleConfig cfg;
    BdThrottleMember busy = { 0 }, quiet = { 0 }, warm = { 0 };
    Ordered a[4], b;
    GThread *ta[4], *tb;
    BdThrottleGroup *tg;
    int after_b = 0;

    bd_throttle_config_init(&cfg);
    cfg.buckets[BD_THROTTLE_OPS_TOTAL].avg = 20;   /* 50 ms per op */
    bd_throttle_group_create("rr", &cfg);
    tg = bd_throttle_group_get("rr", NULL);
    for (int i = 0; i < 3; i++) {
        bd_throttle_group_intercept(tg, &warm, FALSE, 512);  /* fill it */
    }
    for (int i = 0; i < 4; i++) {
        a[i] = (Ordered) { tg, &busy, 0 };
        ta[i] = g_thread_new("busy", ordered_thread, &a[i]);
    }
    while (waiting_len(&busy) + g_atomic_int_get(&order_counter) < 4) {
        g_usleep(1000);
    }
    b = (Ordered) { tg, &quiet, 0 };
    tb = g_thread_new("quiet", ordered_thread, &b);
    g_thread_join(tb);
    for (int i = 0; i < 4; i++) {
        g_thread_join(ta[i]);
        after_b += a[i].seq > b.seq;
    }
    /* First come, first served would finish all four first. */
    g_assert_cmpint(after_b, >=, 2);
    bd_throttle_group_put(tg);
    g_assert_true(bd_throttle_group_delete("rr", NULL));
}

typedef struct {
    BdEntry *entry;
    int ret;
    gint done;
} Reader;

static gpointer reader_thread(gpointer opaque)
{
    Reader *r = opaque;
    char buf[4096];

    r->ret = bd_entry_pread(r->entry, 0, sizeof(buf), buf, 0);
    g_atomic_int_set(&r->done, 1);
    return NULL;
}

/* The driver through the graph: a read stuck at 1 byte/s is released by
 * a drain of the throttle node (drained_begin hook), and the group stays
 * in use until the node is gone. */
static void test_driver_drain(void)
{
    g_autoptr(GError) err = NULL;
    BdThrottleConfig cfg;
    BdNode *node;
    BdEntry *entry;
    BdDrainSection *section;
    Reader r[2];
    GThread *t[2];

    bd_formats_register_all();
    bd_throttle_config_init(&cfg);
    cfg.buckets[BD_THROTTLE_BPS_TOTAL].avg = 1;
    bd_throttle_group_create("drv", &cfg);

    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'throttle'>, 'node-name': <'t0'>, "
        "'throttle-group': <'nope'>, "
        "'file': <{'driver': <'null-co'>, 'read-zeroes': <true>}>}"), &err);
    g_assert_null(node);
    g_assert_cmpstr(err->message, ==, "Throttle group 'nope' does not exist");
    g_clear_error(&err);

    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'throttle'>, 'node-name': <'t0'>, "
        "'throttle-group': <'drv'>, "
        "'file': <{'driver': <'null-co'>, 'read-zeroes': <true>}>}"), &err);
    g_assert_no_error(err);
    g_assert_cmpuint(node->size, ==, 1ull << 30);
    g_assert_false(bd_throttle_group_delete("drv", &err));
    g_clear_error(&err);
    entry = bd_entry_new(node, NULL, BD_PERM_CONSISTENT_READ, BD_PERM_ALL,
                         &err);
    g_assert_no_error(err);

    for (int i = 0; i < 2; i++) {
        r[i] = (Reader) { entry, -1, 0 };
        t[i] = g_thread_new("reader", reader_thread, &r[i]);
    }
    /* One read goes at once; the other waits (for about an hour). */
    while (!g_atomic_int_get(&r[0].done) && !g_atomic_int_get(&r[1].done)) {
        g_usleep(1000);
    }
    g_usleep(G_USEC_PER_SEC / 20);
    g_assert_cmpint(g_atomic_int_get(&r[0].done) +
                    g_atomic_int_get(&r[1].done), ==, 1);
    section = bd_drained_begin(node);
    for (int i = 0; i < 2; i++) {
        g_thread_join(t[i]);
        g_assert_cmpint(r[i].ret, ==, 0);
    }
    bd_drained_end(section);

    bd_entry_free(entry);
    bd_node_unref(node);
    g_assert_true(bd_throttle_group_delete("drv", &err));
    g_assert_no_error(err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/throttle/validity", test_validity);
    g_test_add_func("/throttle/leak-and-wait", test_leak_and_wait);
    g_test_add_func("/throttle/directions", test_directions);
    g_test_add_func("/throttle/op-size", test_op_size);
    g_test_add_func("/throttle/burst", test_burst);
    g_test_add_func("/throttle/registry", test_registry);
    g_test_add_func("/throttle/release-on-drain", test_release_on_drain);
    g_test_add_func("/throttle/round-robin", test_round_robin);
    g_test_add_func("/throttle/driver-drain", test_driver_drain);
    return g_test_run();
}
