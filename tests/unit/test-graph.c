/* SPDX-License-Identifier: MIT */
/* Graph core tests with in-memory test drivers: node names, permissions
 * and their conflict messages, blockdev-del refusals, drain under
 * concurrent I/O, block status through backing chains, the work an open
 * leaves to a thread. */
#include <errno.h>
#include <string.h>
#include "graph/entry.h"
#include "graph/io.h"
#include "graph/main-thread.h"

/* --- "mem": a RAM disk that counts requests running inside it --- */

typedef struct {
    /* Requests of several threads may overlap, as on a disk; the bytes
     * are copied under data_lock so that they do not race in memory. */
    GMutex data_lock;
    guint8 *data;
    gint active;          /* requests inside the driver right now */
    gint completed;
    guint delay_us;
    uint32_t align;       /* limits it reports (refresh_limits) */
    uint64_t max_transfer;
} MemState;

typedef struct {
    gint64 size;
    gint64 align;
    gint64 max_transfer;
} MemOptions;

static const BdSchemaField mem_options[] = {
    { "size", &bd_schema_int, TRUE, BD_AT(MemOptions, size),
      .def.i = 1 << 20 },
    { "align", &bd_schema_int, TRUE, BD_AT(MemOptions, align) },
    { "max-transfer", &bd_schema_int, TRUE,
      BD_AT(MemOptions, max_transfer) },
    { NULL } };

static gboolean mem_open(BdNode *node, GVariant *options, GError **errp)
{
    MemState *s = g_new0(MemState, 1);
    MemOptions o = { 0 };
    gint64 size;

    g_mutex_init(&s->data_lock);
    bd_schema_decode(mem_options, options, &o);
    size = o.size;
    s->data = g_malloc0(size);
    s->align = o.align;
    s->max_transfer = o.max_transfer;
    node->opaque = s;
    node->filename = g_strdup("mem://");
    bd_node_set_size(node, size);
    return TRUE;
}

static void mem_close(BdNode *node)
{
    MemState *s = node->opaque;
    g_mutex_clear(&s->data_lock);
    g_free(s->data);
    g_free(s);
    node->opaque = NULL;
}

static int mem_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    MemState *s = node->opaque;
    g_atomic_int_inc(&s->active);
    if (s->delay_us) {
        g_usleep(s->delay_us);
    }
    g_mutex_lock(&s->data_lock);
    memcpy(buf, s->data + offset, bytes);
    g_mutex_unlock(&s->data_lock);
    g_atomic_int_add(&s->active, -1);
    g_atomic_int_inc(&s->completed);
    return 0;
}

static int mem_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    MemState *s = node->opaque;
    g_atomic_int_inc(&s->active);
    g_mutex_lock(&s->data_lock);
    memcpy(s->data + offset, buf, bytes);
    g_mutex_unlock(&s->data_lock);
    g_atomic_int_add(&s->active, -1);
    g_atomic_int_inc(&s->completed);
    return 0;
}

/* Reports the first 64 KiB as data and the rest as zero. */
static int mem_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    *map = offset;
    *file = node;
    if (offset < 65536) {
        *pnum = MIN(bytes, 65536 - offset);
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    *pnum = bytes;
    return BD_BLOCK_ZERO | BD_BLOCK_OFFSET_VALID;
}

static void mem_refresh_limits(BdNode *node)
{
    MemState *s = node->opaque;

    if (s->align) {
        node->request_alignment = s->align;
    }
    if (s->max_transfer) {
        node->max_transfer = s->max_transfer;
    }
}

static const BdDriver mem_driver = {
    .name = "mem",
    .options = mem_options,
    .is_protocol = TRUE,
    .open = mem_open,
    .close = mem_close,
    .refresh_limits = mem_refresh_limits,
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .block_status = mem_block_status,
};

/* --- "fmt": a format over 'file' (+ optional 'backing') whose first
 * half-megabyte is "allocated" and the rest falls to the backing --- */

typedef struct {
    GVariant *file;
    GVariant *backing;
} FmtOptions;

static const BdSchemaField fmt_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(FmtOptions, file) },
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE,
      BD_AT(FmtOptions, backing) },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(FmtOptions, fmt_options)

static gboolean fmt_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(FmtOptions) o = { 0 };

    bd_schema_decode(fmt_options, options, &o);
    if (!bd_node_open_child(node, o.file, "file",
                            BD_CHILD_DATA | BD_CHILD_METADATA |
                            BD_CHILD_PRIMARY, FALSE, errp)) {
        return FALSE;
    }
    if (!bd_node_open_child(node, o.backing, "backing", BD_CHILD_COW, TRUE,
                            errp) && errp && *errp) {
        return FALSE;
    }
    bd_node_set_size(node, node->file->node->size);
    return TRUE;
}

static int fmt_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    return bd_child_pread(node->file, offset, bytes, buf, flags);
}

static int fmt_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    return bd_child_pwrite(node->file, offset, bytes, buf, flags);
}

static int fmt_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    if (offset < 524288) {
        *pnum = MIN(bytes, 524288 - offset);
        *map = offset;
        *file = node->file->node;
        return BD_BLOCK_RAW | BD_BLOCK_OFFSET_VALID;
    }
    *pnum = bytes;
    return 0;
}

static const BdDriver fmt_driver = {
    .name = "fmt",
    .options = fmt_options,
    .is_format = TRUE,
    .open = fmt_open,
    .pread = fmt_pread,
    .pwrite = fmt_pwrite,
    .block_status = fmt_block_status,
};

/* --- helpers --- */

static BdNode *open_or_fail(const char *text)
{
    g_autoptr(GError) err = NULL;
    BdNode *node = bd_node_open(g_variant_new_parsed(text), &err);

    g_assert_no_error(err);
    g_assert_nonnull(node);
    node->monitor_owned = TRUE;
    return node;
}

static void del_or_fail(const char *name)
{
    g_autoptr(GError) err = NULL;
    g_assert_true(bd_node_monitor_del(name, &err));
    g_assert_no_error(err);
}

static void assert_del_refused(const char *name, const char *msg)
{
    g_autoptr(GError) err = NULL;
    g_assert_false(bd_node_monitor_del(name, &err));
    g_assert_cmpstr(err->message, ==, msg);
}

/* --- tests --- */

static void test_names(void)
{
    g_autoptr(GError) err = NULL;
    BdNode *top = open_or_fail("{'driver': <'fmt'>, 'node-name': <'top'>, "
                               "'file': <{'driver': <'mem'>}>}");

    g_assert_true(g_str_has_prefix(top->file->node->node_name, "#block"));
    g_assert_true(top->file->node->auto_named);
    g_assert_null(bd_node_open(g_variant_new_parsed(
        "{'driver': <'mem'>, 'node-name': <'top'>}"), &err));
    g_assert_cmpstr(err->message, ==, "Duplicate nodes with node-name='top'");
    g_clear_error(&err);
    g_assert_null(bd_node_open(g_variant_new_parsed(
        "{'driver': <'mem'>, 'node-name': <'1bad'>}"), &err));
    g_assert_cmpstr(err->message, ==, "Invalid node-name: '1bad'");
    g_clear_error(&err);
    g_assert_null(bd_node_open(g_variant_new_parsed(
        "{'driver': <'fmt'>, 'node-name': <'x'>, 'file': <'nope'>}"), &err));
    g_assert_cmpstr(err->message, ==,
                    "Cannot find device='nope' nor node-name='nope'");
    g_assert_null(bd_node_find("x"));
    /* Deleting the top drops the nested, unnamed node with it. */
    del_or_fail("top");
    g_assert_cmpuint(bd_node_list()->len, ==, 0);
}

static void test_perm_conflict(void)
{
    g_autoptr(GError) err = NULL;
    BdNode *f;

    open_or_fail("{'driver': <'mem'>, 'node-name': <'f'>}");
    open_or_fail("{'driver': <'fmt'>, 'node-name': <'a'>, 'file': <'f'>}");
    f = bd_node_find("f");
    g_assert_cmphex(f->cum_perm, ==, BD_PERM_CONSISTENT_READ |
                    BD_PERM_WRITE | BD_PERM_RESIZE);

    g_assert_null(bd_node_open(g_variant_new_parsed(
        "{'driver': <'fmt'>, 'node-name': <'b'>, 'file': <'f'>}"), &err));
    g_assert_cmpstr(err->message, ==,
        "Permission conflict on node 'f': permissions 'write, resize' are "
        "both required by node 'a' (uses node 'f' as 'file' child) and "
        "unshared by node 'b' (uses node 'f' as 'file' child).");
    g_clear_error(&err);
    /* Nothing changed: 'f' keeps exactly one parent and its perms. */
    g_assert_cmpuint(g_list_length(f->parents), ==, 1);
    g_assert_cmphex(f->cum_perm, ==, BD_PERM_CONSISTENT_READ |
                    BD_PERM_WRITE | BD_PERM_RESIZE);

    /* A read-only format still needs 'f' unchanged by others. */
    g_assert_null(bd_node_open(g_variant_new_parsed(
        "{'driver': <'fmt'>, 'node-name': <'b'>, 'read-only': <true>, "
        "'file': <'f'>}"), &err));
    g_assert_nonnull(strstr(err->message, "Permission conflict on node 'f'"));
    g_clear_error(&err);

    /* A writable entry on a read-only node is refused. */
    BdNode *ro = open_or_fail("{'driver': <'mem'>, 'node-name': <'ro'>, "
                              "'read-only': <true>}");
    g_assert_null(bd_entry_new(ro, NULL, BD_PERM_WRITE, BD_PERM_ALL, &err));
    g_assert_cmpstr(err->message, ==, "Block node is read-only");
    g_clear_error(&err);

    /* An entry that shares nothing blocks a new writer of the node. */
    BdEntry *e = bd_entry_new(ro, "export 'e1'", BD_PERM_CONSISTENT_READ,
                              BD_PERM_CONSISTENT_READ, &err);
    g_assert_no_error(err);
    BdEntry *e2 = bd_entry_new(ro, NULL, BD_PERM_RESIZE, BD_PERM_ALL, &err);
    g_assert_null(e2);
    g_assert_cmpstr(err->message, ==,
        "Permission conflict on node 'ro': permissions 'resize' are both "
        "required by an unnamed block device (uses node 'ro' as 'root' "
        "child) and unshared by export 'e1' (uses node 'ro' as 'root' "
        "child).");
    g_clear_error(&err);
    bd_entry_free(e);

    del_or_fail("a");
    del_or_fail("f");
    del_or_fail("ro");
}

static void test_del_refusals(void)
{
    BdNode *base;
    BdEntry *e;

    open_or_fail("{'driver': <'mem'>, 'node-name': <'base'>}");
    open_or_fail("{'driver': <'mem'>, 'node-name': <'top-file'>}");
    open_or_fail("{'driver': <'fmt'>, 'node-name': <'top'>, "
                 "'file': <'top-file'>, 'backing': <'base'>}");
    assert_del_refused("nosuch", "Failed to find node with node-name='nosuch'");
    assert_del_refused("base",
                       "Node 'base' is busy: node is used as backing hd of 'top'");
    assert_del_refused("top-file", "Block device top-file is in use");

    base = bd_node_find("top");
    e = bd_entry_new(base, NULL, BD_PERM_CONSISTENT_READ, BD_PERM_ALL, NULL);
    g_assert_nonnull(e);
    assert_del_refused("top", "Node top is in use");
    bd_entry_free(e);

    del_or_fail("top");
    del_or_fail("top-file");
    del_or_fail("base");
}

static void test_block_status_chain(void)
{
    BdNode *top;
    BdEntry *e;
    uint64_t pnum;
    int ret;

    open_or_fail("{'driver': <'mem'>, 'node-name': <'b'>}");
    top = open_or_fail("{'driver': <'fmt'>, 'node-name': <'t'>, "
                       "'file': <{'driver': <'mem'>}>, 'backing': <'b'>}");
    e = bd_entry_new(top, NULL, BD_PERM_CONSISTENT_READ, BD_PERM_ALL, NULL);

    /* Allocated in the top: the file below says data for 64k... */
    ret = bd_entry_block_status(e, 0, 1 << 20, &pnum);
    g_assert_cmpint(ret & (BD_BLOCK_DATA | BD_BLOCK_ALLOCATED), ==,
                    BD_BLOCK_DATA | BD_BLOCK_ALLOCATED);
    g_assert_cmpuint(pnum, ==, 65536);
    /* ...then zero but still allocated in the top up to 512k. */
    ret = bd_entry_block_status(e, 65536, (1 << 20) - 65536, &pnum);
    g_assert_cmpint(ret & (BD_BLOCK_ZERO | BD_BLOCK_DATA), ==, BD_BLOCK_ZERO);
    g_assert_cmpuint(pnum, ==, 524288 - 65536);
    g_assert_cmpint(bd_entry_allocation_depth(e, 65536, 4096, &pnum), ==, 1);
    /* Past 512k it falls to the backing node, depth 2. */
    g_assert_cmpint(bd_entry_allocation_depth(e, 524288, 4096, &pnum), ==, 2);
    /* Out of range. */
    g_assert_cmpint(bd_entry_block_status(e, 1 << 20, 1, &pnum), ==, -EINVAL);

    bd_entry_free(e);
    del_or_fail("t");
    del_or_fail("b");
}

typedef struct {
    BdEntry *entry;
    gint stop;
    gint errors;
    gint done;
} IoLoad;

static gpointer io_thread(gpointer opaque)
{
    IoLoad *load = opaque;
    char buf[4096];

    while (!g_atomic_int_get(&load->stop)) {
        if (bd_entry_pread(load->entry, 0, sizeof(buf), buf, 0) < 0 ||
            bd_entry_pwrite(load->entry, 8192, sizeof(buf), buf, 0) < 0) {
            g_atomic_int_inc(&load->errors);
        }
        g_atomic_int_inc(&load->done);
    }
    return NULL;
}

static void test_drain_concurrent(void)
{
    BdNode *mem = open_or_fail("{'driver': <'mem'>, 'node-name': <'m'>}");
    BdNode *top = open_or_fail("{'driver': <'fmt'>, 'node-name': <'t'>, "
                               "'file': <'m'>}");
    MemState *s = mem->opaque;
    IoLoad load = { 0 };
    GThread *threads[4];

    load.entry = bd_entry_new(top, NULL, BD_PERM_CONSISTENT_READ |
                              BD_PERM_WRITE, BD_PERM_ALL, NULL);
    g_assert_nonnull(load.entry);
    s->delay_us = 100;
    for (int i = 0; i < 4; i++) {
        threads[i] = g_thread_new("io", io_thread, &load);
    }
    for (int round = 0; round < 20; round++) {
        g_usleep(2000);
        /* Draining the bottom node quiesces the entry on the top. */
        BdDrainSection *d = bd_drained_begin(mem);
        gint before = g_atomic_int_get(&s->completed);
        g_assert_cmpint(g_atomic_int_get(&s->active), ==, 0);
        /* A request arriving now counts itself in flight for a moment
         * before it sees the drain and backs off (entry.c's admission),
         * so the count is 0 once such arrivals have parked, not at every
         * instant. */
        for (int i = 0; bd_entry_in_flight(load.entry) != 0; i++) {
            g_assert_cmpint(i, <, 1000);
            g_usleep(1000);
        }
        /* Add and delete a node under drain, as blockdev-add/del do. */
        open_or_fail("{'driver': <'mem'>, 'node-name': <'other'>}");
        del_or_fail("other");
        g_usleep(1000);
        g_assert_cmpint(g_atomic_int_get(&s->completed), ==, before);
        bd_drained_end(d);
    }
    g_atomic_int_set(&load.stop, 1);
    for (int i = 0; i < 4; i++) {
        g_thread_join(threads[i]);
    }
    g_assert_cmpint(load.errors, ==, 0);
    g_assert_cmpint(load.done, >, 20);
    bd_entry_free(load.entry);
    del_or_fail("t");
    del_or_fail("m");
}

static void test_unaligned_rmw(void)
{
    BdNode *mem = open_or_fail("{'driver': <'mem'>, 'node-name': <'m'>}");
    MemState *s = mem->opaque;
    BdEntry *e = bd_entry_new(mem, NULL, BD_PERM_CONSISTENT_READ |
                              BD_PERM_WRITE, BD_PERM_ALL, NULL);
    char buf[700], out[700];

    mem->request_alignment = 512;
    memset(s->data, 0x11, 4096);
    memset(buf, 0x22, sizeof(buf));
    g_assert_cmpint(bd_entry_pwrite(e, 300, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint(s->data[299], ==, 0x11);
    g_assert_cmpint(s->data[300], ==, 0x22);
    g_assert_cmpint(s->data[999], ==, 0x22);
    g_assert_cmpint(s->data[1000], ==, 0x11);
    g_assert_cmpint(bd_entry_pread(e, 300, sizeof(out), out, 0), ==, 0);
    g_assert_cmpmem(buf, sizeof(buf), out, sizeof(out));
    /* Writes beyond the end are refused at the entry. */
    g_assert_cmpint(bd_entry_pwrite(e, (1 << 20) - 1, 2, buf, 0), ==,
                    -ENOSPC);
    bd_entry_free(e);
    del_or_fail("m");
}

/* Limits: max_transfer merged from the data and COW children, the
 * alignment the driver's own, recomputed up the graph on changes. */
static void test_refresh_limits(void)
{
    BdNode *top = open_or_fail(
        "{'driver': <'fmt'>, 'node-name': <'top'>, "
        "'file': <{'driver': <'mem'>, 'node-name': <'f'>, "
        "          'align': <int64 4096>, 'max-transfer': <int64 65536>}>, "
        "'backing': <{'driver': <'mem'>, 'node-name': <'b'>, "
        "             'max-transfer': <int64 16384>}>}");
    BdNode *f = bd_node_find("f");
    MemState *fs = f->opaque;

    g_assert_cmpuint(f->request_alignment, ==, 4096);
    g_assert_cmpuint(f->max_transfer, ==, 65536);
    /* The read-modify-write stays where the alignment is needed. */
    g_assert_cmpuint(top->request_alignment, ==, 1);
    g_assert_cmpuint(top->max_transfer, ==, 16384);

    /* A child's new limits reach its parents. */
    fs->max_transfer = 8192;
    fs->align = 0;
    bd_node_refresh_limits(f);
    g_assert_cmpuint(f->request_alignment, ==, 1);
    g_assert_cmpuint(top->max_transfer, ==, 8192);

    /* Without the backing child only the file's limit is left. */
    fs->max_transfer = 0;
    bd_node_refresh_limits(f);
    g_assert_cmpuint(top->max_transfer, ==, 16384);
    bd_node_detach_child(top, top->backing);
    g_assert_cmpuint(top->max_transfer, ==, 0);
    del_or_fail("top");
}

/* A "main thread only" function called from another thread stops the
 * process, naming the function and the thread. */
static gpointer find_on_thread(gpointer opaque)
{
    g_assert_false(bd_in_main_thread());
    return bd_node_find("any");
}

static void test_main_thread_only(void)
{
    if (g_test_subprocess()) {
        g_assert_true(bd_in_main_thread());
        g_assert_null(bd_node_find("any"));
        g_thread_join(g_thread_new("intruder", find_on_thread, NULL));
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*bd_node_find() must run on the main thread, "
                              "called on thread 'intruder'*");
}

/* --- work an open leaves to a thread (bd_open_offload_*) --- */

typedef struct {
    int runs, drops, frees;
    GThread *ran_on;
} OffloadCount;

static void offload_run(gpointer data)
{
    OffloadCount *c = data;

    c->runs++;
    c->ran_on = g_thread_self();
}

static void offload_drop(gpointer data)
{
    ((OffloadCount *)data)->drops++;
}

static void offload_free(gpointer data)
{
    ((OffloadCount *)data)->frees++;
}

static const BdOpenOffloadOps offload_ops = {
    .run = offload_run, .drop = offload_drop, .free = offload_free,
};

static gpointer offload_thread(gpointer work)
{
    bd_open_offload_run(work);
    return NULL;
}

static void test_open_offload(void)
{
    OffloadCount a = { 0 }, b = { 0 };
    GPtrArray *work;
    GThread *t;

    /* Outside begin/end an open may not queue: it computes in place. */
    g_assert_false(bd_open_offload_enabled());
    g_assert_false(bd_open_offload_queued());

    /* An attempt that queues nothing gives no work. */
    bd_open_offload_begin();
    g_assert_true(bd_open_offload_enabled());
    g_assert_false(bd_open_offload_queued());
    g_assert_null(bd_open_offload_end());
    g_assert_false(bd_open_offload_enabled());

    /* Queued work comes back in order, runs on another thread, and is
     * dropped and freed once, after the caller's last attempt. */
    bd_open_offload_begin();
    bd_open_offload_queue(&offload_ops, &a);
    g_assert_true(bd_open_offload_queued());
    bd_open_offload_queue(&offload_ops, &b);
    work = bd_open_offload_end();
    g_assert_nonnull(work);
    g_assert_cmpuint(work->len, ==, 2);
    g_assert_false(bd_open_offload_enabled());
    t = g_thread_new("offload", offload_thread, work);
    g_thread_join(t);
    g_assert_cmpint(a.runs, ==, 1);
    g_assert_cmpint(b.runs, ==, 1);
    g_assert_true(a.ran_on != g_thread_self());
    g_assert_cmpint(a.drops + a.frees + b.drops + b.frees, ==, 0);
    bd_open_offload_drop(work);
    g_assert_cmpint(a.drops, ==, 1);
    g_assert_cmpint(a.frees, ==, 1);
    g_assert_cmpint(b.drops, ==, 1);
    g_assert_cmpint(b.frees, ==, 1);
    bd_open_offload_drop(NULL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_driver_register(&mem_driver);
    bd_driver_register(&fmt_driver);
    g_test_add_func("/graph/names", test_names);
    g_test_add_func("/graph/perm-conflict", test_perm_conflict);
    g_test_add_func("/graph/del-refusals", test_del_refusals);
    g_test_add_func("/graph/block-status-chain", test_block_status_chain);
    g_test_add_func("/graph/drain-concurrent", test_drain_concurrent);
    g_test_add_func("/graph/unaligned-rmw", test_unaligned_rmw);
    g_test_add_func("/graph/refresh-limits", test_refresh_limits);
    g_test_add_func("/graph/main-thread-only", test_main_thread_only);
    g_test_add_func("/graph/open-offload", test_open_offload);
    return g_test_run();
}
