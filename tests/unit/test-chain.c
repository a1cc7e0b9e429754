/* SPDX-License-Identifier: MIT */
/* Unit tests of the chain surgery the stream and commit jobs use (jobs/chain.c), the copy-on-read filter and the qcow2 backing file rewrite, on real qcow2 images made by qemu-img. */
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "formats/qcow2/backing.h"
#include "formats/registry.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/node.h"
#include "jobs/chain.h"
#include "jobs/job.h"
#include "helpers.h"

#define MiB (1024 * 1024)

typedef struct {
    char *dir;
    char *base, *top;
} Fixture;

/* base (1 MiB of 0x5a at 0) <- top (64 KiB of 0x33 at 2 MiB); 4 MiB. */
static void setup(Fixture *f, gconstpointer data)
{
    f->dir = g_dir_make_tmp("blockd-chain-XXXXXX", NULL);
    f->base = g_build_filename(f->dir, "base.qcow2", NULL);
    f->top = g_build_filename(f->dir, "top.qcow2", NULL);
    bd_test_sh("qemu-img create -q -f qcow2 %s 4M", f->base);
    bd_test_sh("qemu-img create -q -f qcow2 -b %s -F qcow2 %s",
               f->base, f->top);
    bd_test_sh("qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' %s", f->base);
    bd_test_sh("qemu-io -f qcow2 -c 'write -P 0x33 2M 64k' %s", f->top);
}

static void teardown(Fixture *f, gconstpointer data)
{
    g_unlink(f->base);
    g_unlink(f->top);
    g_rmdir(f->dir);
    g_free(f->base);
    g_free(f->top);
    g_free(f->dir);
}

/* The top node, its backing opened from the image header. */
static BdNode *open_top(Fixture *f)
{
    g_autoptr(GError) err = NULL;
    BdNode *top = bd_node_open(g_variant_new_parsed(
        "{'driver': <'qcow2'>, 'node-name': <'top'>, "
        "'file': <{'driver': <'file'>, 'filename': <%s>}>}", f->top), &err);

    g_assert_no_error(err);
    g_assert_nonnull(top->backing);
    return top;
}

static void test_allocation(Fixture *f, gconstpointer data)
{
    g_autoptr(BdNode) top = open_top(f);
    BdNode *base = bd_node_backing(top);
    uint64_t n = 0;

    g_assert_cmpint(bd_chain_is_allocated(top, 0, 4 * MiB, &n), ==, 0);
    g_assert_cmpint(n, ==, 2 * MiB);
    g_assert_cmpint(bd_chain_is_allocated(top, 2 * MiB, MiB, &n), ==, 1);
    g_assert_cmpint(n, ==, 64 * 1024);
    g_assert_cmpint(bd_chain_is_allocated_above(top, base, TRUE, 0, MiB, &n),
                    ==, 1);
    g_assert_cmpint(n, ==, MiB);
    g_assert_cmpint(bd_chain_is_allocated_above(top, base, FALSE, 0, MiB, &n),
                    ==, 0);
    g_assert_cmpint(bd_chain_is_allocated_above(top, NULL, FALSE, 3 * MiB,
                                                MiB, &n), ==, 0);
    g_assert_cmpint(n, ==, MiB);
    g_assert_true(bd_chain_contains(top, base));
    g_assert_false(bd_chain_contains(base, top));
    g_assert_true(bd_chain_find_overlay(top, base) == top);
    g_assert_true(bd_chain_find_backing_image(top, f->base) == base);
    g_assert_null(bd_chain_find_backing_image(top, "nope"));
}

/* An entry on top moves onto the filter and back; reads through the
 * filter copy the backing data up into top. */
static void test_cor_filter(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) top = open_top(f);
    g_autofree uint8_t *buf = g_malloc(MiB);
    uint64_t n = 0;
    BdEntry *e = bd_entry_new(top, "export 'e'", BD_PERM_CONSISTENT_READ |
                              BD_PERM_WRITE, BD_PERM_ALL, &err);
    BdNode *cor;

    g_assert_no_error(err);
    cor = bd_chain_insert_filter(top, g_variant_new_parsed(
        "{'driver': <'copy-on-read'>, 'file': <'top'>}"), &err);
    g_assert_no_error(err);
    g_assert_true(cor->implicit);
    g_assert_true(bd_entry_node(e) == cor);
    g_assert_cmpint(bd_entry_pread(e, 0, MiB, buf, 0), ==, 0);
    for (guint i = 0; i < MiB; i++) {
        g_assert_cmpint(buf[i], ==, 0x5a);
    }
    g_assert_cmpint(bd_chain_is_allocated(top, 0, MiB, &n), ==, 1);
    g_assert_cmpint(n, >=, MiB);
    /* Block status through the filter sees the backing chain. */
    g_assert_cmpint(bd_entry_block_status(e, 3 * MiB, MiB, &n) &
                    BD_BLOCK_ZERO, ==, BD_BLOCK_ZERO);
    bd_chain_drop_filter(cor);
    g_assert_true(bd_entry_node(e) == top);
    bd_entry_free(e);
}

/* A frozen link cannot be moved; nothing changes then. */
static void test_frozen_replace(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) top = open_top(f);
    BdNode *base = bd_node_backing(top);
    BdNode *other = bd_node_open(g_variant_new_parsed(
        "{'driver': <'null-co'>, 'node-name': <'other'>, "
        "'size': <int64 4194304>}"), &err);

    g_assert_no_error(err);
    g_assert_true(bd_job_freeze_backing_chain(top, NULL, NULL));
    g_autofree char *msg = g_strdup_printf(
        "Cannot change frozen 'backing' link from 'top' to '%s'",
        base->node_name);
    g_assert_false(bd_node_replace(base, other, &err));
    g_assert_cmpstr(err->message, ==, msg);
    g_assert_true(bd_node_backing(top) == base);
    bd_job_unfreeze_backing_chain(top, NULL);
    g_clear_error(&err);
    g_assert_true(bd_node_replace(base, other, &err));
    g_assert_true(bd_node_backing(top) == other);
    bd_node_unref(other);
}

/* Dropping the backing node and its name; the image opens without one
 * and passes qemu-img check. */
static void test_backing_change(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    BdNode *top = open_top(f);

    g_assert_true(bd_chain_set_backing(top, NULL, &err));
    g_assert_null(top->backing);
    g_assert_true(bd_qcow2_change_backing_file(top, NULL, NULL, &err));
    g_assert_no_error(err);
    g_assert_false(top->drv->has_default_backing(top));
    bd_node_unref(top);
    bd_test_sh("qemu-img check -q %s", f->top);

    top = bd_node_open(g_variant_new_parsed(
        "{'driver': <'qcow2'>, 'node-name': <'top'>, "
        "'file': <{'driver': <'file'>, 'filename': <%s>}>}", f->top), &err);
    g_assert_no_error(err);
    g_assert_null(top->backing);
    /* And a name again (the backing node itself is not opened here). */
    g_assert_true(bd_qcow2_change_backing_file(top, f->base, "qcow2", &err));
    g_assert_true(top->drv->has_default_backing(top));
    bd_node_unref(top);
    bd_test_sh("qemu-img check -q %s", f->top);
    top = open_top(f);
    g_assert_cmpstr(bd_node_backing(top)->filename, ==, f->base);
    bd_node_unref(top);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_formats_register_all();
    g_test_add("/chain/allocation", Fixture, NULL, setup, test_allocation,
               teardown);
    g_test_add("/chain/cor-filter", Fixture, NULL, setup, test_cor_filter,
               teardown);
    g_test_add("/chain/frozen-replace", Fixture, NULL, setup,
               test_frozen_replace, teardown);
    g_test_add("/chain/backing-change", Fixture, NULL, setup,
               test_backing_change, teardown);
    return g_test_run();
}
