/* SPDX-License-Identifier: MIT */
/* Checkpoint tests on a RAM driver that "stores" persistent bitmaps:
 * the usability rule (an inconsistent bitmap breaks its checkpoint and
 * the earlier ones, not the later ones), the event reported once, what
 * delete keeps, and that a failed store or an abort leaves the chain,
 * the bits and the recording exactly as they were. */
#include <string.h>
#include "graph/checkpoint.h"
#include "graph/events.h"
#include "graph/io.h"

/* --- "cmem": a RAM disk whose bitmap store can be told to fail --- */

static gboolean store_fails;
static int syncs;

static gboolean cmem_open(BdNode *node, GVariant *options, GError **errp)
{
    node->opaque = g_malloc0(1 << 20);
    node->filename = g_strdup("cmem://");
    bd_node_set_size(node, 1 << 20);
    return TRUE;
}

static void cmem_close(BdNode *node)
{
    g_clear_pointer(&node->opaque, g_free);
}

static int cmem_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                       const void *buf, int flags)
{
    memcpy((char *)node->opaque + offset, buf, bytes);
    return 0;
}

static const BdSchemaField cmem_options[] = { { NULL } };

static const BdDriver cmem_driver = {
    .name = "cmem", .options = cmem_options, .is_format = TRUE,
    .open = cmem_open, .close = cmem_close, .pwrite = cmem_pwrite,
};

static gboolean cmem_can_store(BdNode *node, const char *name,
                               uint32_t granularity, GError **errp)
{
    return TRUE;
}

static gboolean cmem_sync(BdNode *node, GError **errp)
{
    syncs++;
    if (store_fails) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "disk full");
        return FALSE;
    }
    return TRUE;
}

static const BdBitmapStoreOps cmem_store = {
    .can_store = cmem_can_store, .sync = cmem_sync,
};

/* --- helpers --- */

static GPtrArray *events;      /* "NAME: checkpoint checkpoint ..." */

static void sink(const char *name, GVariant *data, gpointer opaque)
{
    g_autoptr(GVariant) d = g_variant_ref_sink(data);
    g_autofree const char **names = NULL;
    g_autofree char *joined = NULL;

    g_variant_lookup(d, "checkpoints", "^a&s", &names);
    joined = g_strjoinv(" ", (char **)names);
    g_ptr_array_add(events, g_strdup_printf("%s: %s", name, joined));
}

static BdNode *new_node(void)
{
    GVariantDict d;
    g_autoptr(GError) err = NULL;
    BdNode *node;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "cmem");
    g_variant_dict_insert(&d, "node-name", "s", "n");
    node = bd_node_open(g_variant_dict_end(&d), &err);
    g_assert_no_error(err);
    node->cum_perm = BD_PERM_CONSISTENT_READ | BD_PERM_WRITE;
    store_fails = FALSE;
    g_ptr_array_set_size(events, 0);
    return node;
}

static void create(BdNode *node, const char *name)
{
    g_autoptr(GError) err = NULL;
    BdCheckpointChange *c = bd_checkpoint_create_prepare(node, name, 4096,
                                                         &err);

    g_assert_no_error(err);
    bd_checkpoint_change_commit(c);
}

static void write_at(BdNode *node, uint64_t offset)
{
    char buf[4096] = { 1 };

    g_assert_cmpint(bd_node_pwrite(node, offset, sizeof(buf), buf, 0), ==, 0);
}

/* "name:usable:active:dirty-KiB ..." */
static char *summary(BdNode *node)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) list = bd_checkpoint_list(node, &err);
    GString *s = g_string_new(NULL);

    g_assert_no_error(err);
    for (guint i = 0; i < list->len; i++) {
        BdCheckpointInfo *c = list->pdata[i];
        g_string_append_printf(s, "%s%s:%d:%d:%" G_GUINT64_FORMAT,
                               i ? " " : "", c->name, c->usable, c->active,
                               c->dirty_bytes / 1024);
    }
    return g_string_free(s, FALSE);
}

static BdDirtyBitmap *bitmap_of(BdNode *node, const char *checkpoint)
{
    g_autoptr(GPtrArray) list = bd_dirty_bitmap_list(node);

    for (guint i = 0; i < list->len; i++) {
        const char *owner;
        if (bd_checkpoint_owns_bitmap(list->pdata[i], &owner) &&
            strcmp(owner, checkpoint) == 0) {
            return list->pdata[i];
        }
    }
    g_assert_not_reached();
}

#define ASSERT_CHAIN(node, want) do { \
        g_autofree char *got_ = summary(node); \
        g_assert_cmpstr(got_, ==, (want)); \
    } while (0)

/* c1 (write 0), c2 (write 64K), c3 (write 128K). */
static BdNode *three(void)
{
    BdNode *node = new_node();

    create(node, "c1");
    write_at(node, 0);
    create(node, "c2");
    write_at(node, 65536);
    create(node, "c3");
    write_at(node, 131072);
    ASSERT_CHAIN(node, "c1:1:0:12 c2:1:0:8 c3:1:1:4");
    return node;
}

/* --- tests --- */

static void test_usability_rule(void)
{
    g_autoptr(BdNode) node = three();
    g_autoptr(GError) err = NULL;
    BdDirtyBitmap *bm;

    /* c2's bitmap lost writes: the changes since c1 and c2 are unknown,
     * those since c3 are not. */
    bd_dirty_bitmap_set_inconsistent(bitmap_of(node, "c2"));
    ASSERT_CHAIN(node, "c1:0:0:0 c2:0:0:0 c3:1:1:4");
    g_assert_cmpuint(events->len, ==, 1);
    g_assert_cmpstr(events->pdata[0], ==,
                    BD_CHECKPOINT_EVENT_UNUSABLE ": c1 c2");
    ASSERT_CHAIN(node, "c1:0:0:0 c2:0:0:0 c3:1:1:4");
    g_assert_cmpuint(events->len, ==, 1);

    g_assert_null(bd_checkpoint_changes_since(node, "c1", NULL, &err));
    g_assert_cmpstr(err->message, ==, "Checkpoint 'c1' is not usable: the "
                    "bitmap of the later checkpoint 'c2' was not saved "
                    "cleanly; take a full backup");
    g_clear_error(&err);
    bm = bd_checkpoint_changes_since(node, "c3", "t", &err);
    g_assert_no_error(err);
    g_assert_false(bd_dirty_bitmap_enabled(bm));
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4096);
    g_assert_false(bd_checkpoint_owns_bitmap(bm, NULL));
    bd_dirty_bitmap_release(bm);

    /* Deleting the inconsistent one keeps c1 unusable. */
    bd_checkpoint_change_commit(bd_checkpoint_delete_prepare(node, "c2",
                                                             &err));
    g_assert_no_error(err);
    ASSERT_CHAIN(node, "c1:0:0:0 c3:1:1:4");
    g_assert_true(bd_dirty_bitmap_inconsistent(bitmap_of(node, "c1")));
}

static void test_newest_not_recording(void)
{
    g_autoptr(BdNode) node = three();

    bd_dirty_bitmap_set_enabled(bitmap_of(node, "c3"), FALSE);
    g_test_expect_message("blockd-graph", G_LOG_LEVEL_WARNING,
                          "node 'n': checkpoint 'c3': its bitmap does not "
                          "record writes*");
    ASSERT_CHAIN(node, "c1:0:0:0 c2:0:0:0 c3:0:0:0");
    g_test_assert_expected_messages();
    g_assert_true(bd_dirty_bitmap_inconsistent(bitmap_of(node, "c3")));
    create(node, "c4");
    write_at(node, 0);
    ASSERT_CHAIN(node, "c1:0:0:0 c2:0:0:0 c3:0:0:0 c4:1:1:4");
}

static void test_delete_keeps_changes(void)
{
    g_autoptr(BdNode) node = three();
    g_autoptr(GError) err = NULL;

    bd_checkpoint_change_commit(bd_checkpoint_delete_prepare(node, "c2",
                                                             &err));
    ASSERT_CHAIN(node, "c1:1:0:12 c3:1:1:4");
    g_assert_cmpuint(bd_dirty_bitmap_count(bitmap_of(node, "c1")), ==, 8192);
    /* The active one: its predecessor takes over the recording. */
    bd_checkpoint_change_commit(bd_checkpoint_delete_prepare(node, "c3",
                                                             &err));
    ASSERT_CHAIN(node, "c1:1:1:12");
    write_at(node, 262144);
    ASSERT_CHAIN(node, "c1:1:1:16");
    bd_checkpoint_change_commit(bd_checkpoint_delete_prepare(node, "c1",
                                                             &err));
    g_assert_no_error(err);
    ASSERT_CHAIN(node, "");
    g_assert_false(bd_dirty_bitmap_node_has_any(node));
}

static void test_failed_store_changes_nothing(void)
{
    g_autoptr(BdNode) node = three();
    g_autoptr(GError) err = NULL;

    store_fails = TRUE;
    /* The undo cannot store the old set either: said, not fatal. */
    g_test_expect_message("blockd-graph", G_LOG_LEVEL_WARNING,
                          "node 'n': checkpoints: disk full");
    g_test_expect_message("blockd-graph", G_LOG_LEVEL_WARNING,
                          "node 'n': checkpoints: disk full");
    g_assert_null(bd_checkpoint_create_prepare(node, "c4", 0, &err));
    g_assert_cmpstr(err->message, ==, "Cannot create checkpoint 'c4' on node "
                    "'n': disk full");
    g_clear_error(&err);
    g_assert_null(bd_checkpoint_delete_prepare(node, "c3", &err));
    g_assert_cmpstr(err->message, ==, "Cannot delete checkpoint 'c3' on node "
                    "'n': disk full");
    g_test_assert_expected_messages();
    store_fails = FALSE;
    /* Still c3 records; c2 has its own bits only. */
    write_at(node, 196608);
    ASSERT_CHAIN(node, "c1:1:0:16 c2:1:0:12 c3:1:1:8");
    g_assert_cmpuint(bd_dirty_bitmap_count(bitmap_of(node, "c2")), ==, 4096);
}

static void test_abort_changes_nothing(void)
{
    g_autoptr(BdNode) node = three();
    g_autoptr(GError) err = NULL;
    BdCheckpointChange *del, *cre;
    int before;

    /* As a transaction would: delete c3, create c4, then abort both. */
    del = bd_checkpoint_delete_prepare(node, "c3", &err);
    g_assert_no_error(err);
    cre = bd_checkpoint_create_prepare(node, "c4", 0, &err);
    g_assert_no_error(err);
    ASSERT_CHAIN(node, "c1:1:0:12 c2:1:0:8 c4:1:1:0");
    /* c3's bitmap is still there until commit: c4 does not take its seq. */
    g_assert_true(g_str_has_prefix(bd_dirty_bitmap_name(bitmap_of(node, "c4")),
                                   BD_CHECKPOINT_BITMAP_PREFIX "000004."));
    write_at(node, 196608);    /* lands in c4, and in c3 still */
    before = syncs;
    bd_checkpoint_change_abort(cre);
    bd_checkpoint_change_abort(del);
    g_assert_cmpint(syncs, ==, before + 2);
    ASSERT_CHAIN(node, "c1:1:0:16 c2:1:0:12 c3:1:1:8");
    g_assert_cmpuint(bd_dirty_bitmap_count(bitmap_of(node, "c2")), ==, 4096);
    g_assert_false(bd_dirty_bitmap_enabled(bitmap_of(node, "c2")));
}

static void test_names(void)
{
    g_autoptr(BdNode) node = new_node();
    g_autoptr(GError) err = NULL;
    BdDirtyBitmap *odd;

    /* Look-alikes are not checkpoints; a name may hold dots. */
    odd = bd_dirty_bitmap_create(node, 4096, "blockd-checkpoint.1.x.y", &err);
    bd_dirty_bitmap_set_persistent(odd, TRUE);
    create(node, "a.b.c");
    ASSERT_CHAIN(node, "a.b.c:1:1:0");
    g_assert_false(bd_checkpoint_owns_bitmap(odd, NULL));
    g_assert_null(bd_checkpoint_create_prepare(node, "a.b.c", 0, &err));
    g_assert_cmpstr(err->message, ==,
                    "Checkpoint 'a.b.c' already exists on node 'n'");
    g_clear_error(&err);
    g_assert_null(bd_checkpoint_create_prepare(node, "tab\there", 0, &err));
    g_assert_cmpstr(err->message, ==,
                    "Checkpoint name must not contain control characters");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_driver_register(&cmem_driver);
    bd_dirty_bitmap_register_store(&cmem_driver, &cmem_store);
    events = g_ptr_array_new_with_free_func(g_free);
    bd_event_set_sink(sink, NULL);
    g_test_add_func("/checkpoint/usability-rule", test_usability_rule);
    g_test_add_func("/checkpoint/newest-not-recording",
                    test_newest_not_recording);
    g_test_add_func("/checkpoint/delete-keeps-changes",
                    test_delete_keeps_changes);
    g_test_add_func("/checkpoint/failed-store-changes-nothing",
                    test_failed_store_changes_nothing);
    g_test_add_func("/checkpoint/abort-changes-nothing",
                    test_abort_changes_nothing);
    g_test_add_func("/checkpoint/names", test_names);
    return g_test_run();
}
