/* SPDX-License-Identifier: MIT */
/* Unit tests of blkdebug's rule engine (states, once, sector, iotype, rule order, config files) and of quorum/blkverify/blkdebug nodes over files. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "graph/node.h"
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/blkdebug-rules.h"
#include "formats/registry.h"

#define E(name) BD_DEBUG_EVENT_##name

static BdBlkdebugRules *rules_from(const char *inject, const char *states,
                                   GError **errp)
{
    g_autoptr(GVariant) i = inject ? g_variant_ref_sink(
        g_variant_new_parsed(inject)) : NULL;
    g_autoptr(GVariant) s = states ? g_variant_ref_sink(
        g_variant_new_parsed(states)) : NULL;

    return bd_blkdebug_rules_new(NULL, i, s, errp);
}

static void test_names(void)
{
    g_assert_cmpint(BD_DEBUG_EVENT__MAX, ==, 48);
    g_assert_cmpstr(bd_debug_event_names[E(L1_UPDATE)], ==, "l1_update");
    g_assert_cmpstr(bd_debug_event_names[E(READ_AIO)], ==, "read_aio");
    g_assert_cmpstr(bd_debug_event_names[E(FLUSH_TO_DISK)], ==, "flush_to_disk");
    g_assert_cmpstr(bd_debug_event_names[E(NONE)], ==, "none");
    g_assert_null(bd_debug_event_names[BD_DEBUG_EVENT__MAX]);
    g_assert_cmpint(bd_debug_event_from_name("cor_write"), ==, E(COR_WRITE));
    g_assert_cmpint(bd_debug_event_from_name("l1_grow.alloc_table"), ==, -1);
    g_assert_cmpint(bd_debug_event_from_name(NULL), ==, -1);
}

/* Seed 257's rules: flush 1 -> 2, read 2 -> 3, then the next read in
 * state 3 arms a once-error for the request that follows. */
static void test_state_machine(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdBlkdebugRules) r = rules_from(
        "[<{'event': <'read_aio'>, 'errno': <int64 5>, 'state': <int64 3>,"
        "   'immediately': <false>, 'once': <true>}>]",
        "[<{'event': <'flush_to_disk'>, 'state': <int64 1>,"
        "   'new_state': <int64 2>}>,"
        " <{'event': <'read_aio'>, 'state': <int64 2>,"
        "   'new_state': <int64 3>}>]", &err);

    g_assert_no_error(err);
    g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 1);
    bd_blkdebug_rules_event(r, E(READ_AIO));
    g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 1);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 512, BD_BLKDEBUG_IO_READ), ==, 0);
    bd_blkdebug_rules_event(r, E(FLUSH_TO_DISK));
    g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 2);
    /* The inject rule is for state 3: this read's event only moves on. */
    bd_blkdebug_rules_event(r, E(READ_AIO));
    g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 3);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 512, BD_BLKDEBUG_IO_READ), ==, 0);
    bd_blkdebug_rules_event(r, E(READ_AIO));
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 512, BD_BLKDEBUG_IO_READ), ==, -EIO);
    /* once: gone for good, even when its event comes again. */
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 512, BD_BLKDEBUG_IO_READ), ==, 0);
    bd_blkdebug_rules_event(r, E(READ_AIO));
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 512, BD_BLKDEBUG_IO_READ), ==, 0);
}

static void test_sector_iotype(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdBlkdebugRules) r = rules_from(
        "[<{'event': <'write_aio'>, 'errno': <int64 28>, 'sector': <int64 8>}>,"
        " <{'event': <'none'>, 'errno': <int64 1>, 'iotype': <'flush'>}>]",
        NULL, &err);

    g_assert_no_error(err);
    /* Nothing active before an event. */
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 1 << 20, BD_BLKDEBUG_IO_WRITE), ==, 0);
    bd_blkdebug_rules_event(r, E(NONE));
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 0, BD_BLKDEBUG_IO_FLUSH), ==, -EPERM);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 512, BD_BLKDEBUG_IO_READ), ==, 0);
    /* A new injecting event replaces the active set. */
    bd_blkdebug_rules_event(r, E(WRITE_AIO));
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 0, BD_BLKDEBUG_IO_FLUSH), ==, 0);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 4096, BD_BLKDEBUG_IO_WRITE), ==, 0);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 4095, 2, BD_BLKDEBUG_IO_WRITE), ==, -ENOSPC);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 4096, 512, BD_BLKDEBUG_IO_READ), ==, -ENOSPC);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 4096, 512, BD_BLKDEBUG_IO_DISCARD), ==, -ENOSPC);
    /* Block status is not in the default mask; flush has no range. */
    g_assert_cmpint(bd_blkdebug_rules_check(r, 4096, 512, BD_BLKDEBUG_IO_BLOCK_STATUS), ==, 0);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 0, BD_BLKDEBUG_IO_FLUSH), ==, 0);
    g_assert_cmpint(bd_blkdebug_rules_check(r, 4608, 512, BD_BLKDEBUG_IO_WRITE), ==, 0);
}

/* QEMU lists each event's rules newest first: of two set-state rules
 * for one event, the first given is applied last and wins. */
static void test_rule_order(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdBlkdebugRules) r = rules_from(
        NULL,
        "[<{'event': <'cow_read'>, 'new_state': <int64 5>}>,"
        " <{'event': <'cow_read'>, 'new_state': <int64 7>}>]", &err);

    g_assert_no_error(err);
    bd_blkdebug_rules_event(r, E(COW_READ));
    g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 5);
    /* Out-of-range events are ignored. */
    bd_blkdebug_rules_event(r, -1);
    bd_blkdebug_rules_event(r, BD_DEBUG_EVENT__MAX);
    g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 5);
}

static char *write_config(const char *dir, const char *name, const char *text)
{
    char *path = g_build_filename(dir, name, NULL);

    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    return path;
}

static void test_config_file(void)
{
    static const struct {
        const char *text;
        const char *error;
    } cases[] = {
        { "# rules\n\n[inject-error]\nevent = \"read_aio\"\nerrno = \"0x1c\"\n"
          "once = \"on\"\n[set-state \"s1\"]\nevent = \"read_aio\"\n"
          "new_state = \"9\"\n", NULL },
        { "event = \"read_aio\"\n", "no group defined" },
        { "[nope]\n", "There is no option group 'nope'" },
        { "[inject-error]\nerrno = \"5\"\n", "Missing event name for rule" },
        { "[inject-error]\nevent = \"bad\"\n", "invalid parameter value: bad" },
        { "[inject-error]\nevent \"read_aio\"\n", "invalid parameter value: " },
        { "[inject-error]\nevent = \"read_aio\"\nx = \"1\"\n",
          "Invalid parameter 'x'" },
        { "[set-state]\nevent = \"read_aio\"\nnew_state = \"z\"\n",
          "Parameter 'new_state' expects a number" },
        { "[inject-error]\nevent = \"read_aio\"\nimmediately = \"2\"\n",
          "Parameter 'immediately' expects 'on' or 'off'" },
        { "[inject-error]\nevent = \"read_aio\"\niotype = \"x\"\n",
          "invalid parameter value: x" },
        { "[inject-error]\n   \n", "parse error" },
    };
    g_autofree char *dir = g_dir_make_tmp("blockd-dbg-XXXXXX", NULL);

    g_assert_nonnull(dir);
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        g_autofree char *path = write_config(dir, "rules.cfg", cases[i].text);
        g_autoptr(BdBlkdebugRules) r = bd_blkdebug_rules_new(path, NULL, NULL,
                                                             &err);
        if (!cases[i].error) {
            g_assert_no_error(err);
            bd_blkdebug_rules_event(r, E(READ_AIO));
            g_assert_cmpint(bd_blkdebug_rules_state(r), ==, 9);
            g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 1, BD_BLKDEBUG_IO_READ), ==, -ENOSPC);
            g_assert_cmpint(bd_blkdebug_rules_check(r, 0, 1, BD_BLKDEBUG_IO_READ), ==, 0);
        } else {
            g_assert_null(r);
            g_assert_nonnull(err);
            g_assert_cmpstr(err->message, ==, cases[i].error);
        }
        g_unlink(path);
    }
    {
        g_autoptr(GError) err = NULL;
        g_autofree char *missing = g_build_filename(dir, "missing", NULL);
        g_assert_null(bd_blkdebug_rules_new(missing, NULL, NULL, &err));
        g_assert_cmpstr(err->message, ==, "Could not read blkdebug config file: "
                        "No such file or directory");
    }
    g_rmdir(dir);
}

/* --- nodes over files --- */

typedef struct {
    char *dir;
    char *img[3];
} Files;

static void files_setup(Files *f, gconstpointer data)
{
    f->dir = g_dir_make_tmp("blockd-dbg-XXXXXX", NULL);
    g_assert_nonnull(f->dir);
    for (int i = 0; i < 3; i++) {
        g_autofree char *name = g_strdup_printf("c%d.img", i);
        g_autofree char *buf = g_malloc(65536);
        memset(buf, 0x11, 65536);
        f->img[i] = g_build_filename(f->dir, name, NULL);
        g_assert_true(g_file_set_contents(f->img[i], buf, 65536, NULL));
    }
}

static void files_teardown(Files *f, gconstpointer data)
{
    for (int i = 0; i < 3; i++) {
        g_unlink(f->img[i]);
        g_free(f->img[i]);
    }
    g_rmdir(f->dir);
    g_free(f->dir);
}

static void corrupt(const char *path, off_t off, int byte, size_t len)
{
    g_autofree char *buf = g_malloc(len);
    FILE *fp = fopen(path, "r+b");

    memset(buf, byte, len);
    g_assert_nonnull(fp);
    g_assert_cmpint(fseek(fp, off, SEEK_SET), ==, 0);
    g_assert_cmpuint(fwrite(buf, 1, len, fp), ==, len);
    fclose(fp);
}

static BdNode *open_text(const char *text)
{
    g_autoptr(GError) err = NULL;
    BdNode *n = bd_node_open(g_variant_new_parsed(text), &err);

    g_assert_no_error(err);
    return n;
}

static void test_quorum_vote(Files *f, gconstpointer data)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'quorum'>, 'node-name': <'q'>, 'vote-threshold': <int64 2>,"
        " 'children': <[<{'driver': <'file'>, 'filename': <'%s'>}>,"
        "               <{'driver': <'file'>, 'filename': <'%s'>}>,"
        "               <{'driver': <'file'>, 'filename': <'%s'>}>]>}",
        f->img[0], f->img[1], f->img[2]);
    g_autoptr(BdNode) q = NULL;
    char buf[512];

    corrupt(f->img[1], 0, 0x22, 512);
    corrupt(f->img[0], 4096, 0x33, 512);
    corrupt(f->img[2], 4096, 0x44, 512);
    q = open_text(text);
    g_assert_cmpuint(q->size, ==, 65536);
    g_assert_cmpuint(q->children->len, ==, 3);
    g_assert_cmpstr(((BdChild *)q->children->pdata[2])->name, ==, "children.2");
    g_assert_cmpint(bd_node_pread(q, 0, 512, buf, 0), ==, 0);
    g_assert_cmpint(buf[0], ==, 0x11);
    g_assert_cmpint(buf[511], ==, 0x11);
    g_test_expect_message("blockd-formats", G_LOG_LEVEL_WARNING,
                          "*no version of offset=4096*");
    g_assert_cmpint(bd_node_pread(q, 4096, 512, buf, 0), ==, -EIO);
    g_test_assert_expected_messages();
    g_assert_cmpint(bd_node_pread(q, 8192, 512, buf, 0), ==, 0);
}

/* raw over blkdebug: raw announces read_aio, blkdebug fails that read. */
static void test_blkdebug_node(Files *f, gconstpointer data)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'raw'>, 'node-name': <'r'>,"
        " 'file': <{'driver': <'blkdebug'>, 'node-name': <'d'>, 'align': <int64 4096>,"
        "   'inject-error': <[<{'event': <'read_aio'>, 'once': <true>}>]>,"
        "   'image': <{'driver': <'file'>, 'filename': <'%s'>}>}>}", f->img[0]);
    g_autoptr(BdNode) r = open_text(text);
    BdNode *d = bd_node_find("d");
    char buf[100];

    g_assert_nonnull(d);
    g_assert_cmpuint(d->request_alignment, ==, 4096);
    g_assert_cmpint(bd_node_pread(d, 0, 100, buf, 0), ==, 0);
    g_assert_cmpint(bd_node_pread(r, 0, 100, buf, 0), ==, -EIO);
    g_assert_cmpint(bd_node_pread(r, 0, 100, buf, 0), ==, 0);
    g_assert_cmpint(buf[99], ==, 0x11);
}

static void test_blkverify_node(Files *f, gconstpointer data)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'blkverify'>, 'node-name': <'bv'>,"
        " 'test': <{'driver': <'file'>, 'filename': <'%s'>}>,"
        " 'raw': <{'driver': <'file'>, 'filename': <'%s'>}>}",
        f->img[0], f->img[1]);
    g_autoptr(BdNode) bv = NULL;
    g_autofree char *expect = g_strdup_printf("blkverify:%s:%s", f->img[1],
                                              f->img[0]);
    char buf[1024];

    corrupt(f->img[0], 1024, 0x55, 1);
    bv = open_text(text);
    g_assert_cmpstr(bv->filename, ==, expect);
    g_assert_cmpint(bd_node_pread(bv, 0, 512, buf, 0), ==, 0);
    g_test_expect_message("blockd-formats", G_LOG_LEVEL_WARNING,
                          "*contents mismatch at offset 1024*");
    g_assert_cmpint(bd_node_pread(bv, 512, 1024, buf, 0), ==, -EIO);
    g_test_assert_expected_messages();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_formats_register_all();
    g_test_add_func("/debug/event-names", test_names);
    g_test_add_func("/debug/blkdebug/state-machine", test_state_machine);
    g_test_add_func("/debug/blkdebug/sector-iotype", test_sector_iotype);
    g_test_add_func("/debug/blkdebug/rule-order", test_rule_order);
    g_test_add_func("/debug/blkdebug/config-file", test_config_file);
    g_test_add("/debug/quorum/vote", Files, NULL, files_setup,
               test_quorum_vote, files_teardown);
    g_test_add("/debug/blkdebug/node", Files, NULL, files_setup,
               test_blkdebug_node, files_teardown);
    g_test_add("/debug/blkverify/node", Files, NULL, files_setup,
               test_blkverify_node, files_teardown);
    return g_test_run();
}
