/* SPDX-License-Identifier: MIT */
/* Dirty bitmap tests: bit ranges and counts, next dirty/zero, merge across
 * granularities, QEMU's sha256 of known bitmaps, serialization, resize,
 * recording on a node's write paths, and concurrent recording threads. */
#include <errno.h>
#include <string.h>
#include "graph/bitmap.h"
#include "graph/io.h"

/* --- "bmem": a RAM disk --- */

typedef struct {
    gint64 size;
} BmemOptions;

static const BdSchemaField bmem_options[] = {
    { "size", &bd_schema_int, TRUE, BD_AT(BmemOptions, size),
      .def.i = 1 << 20 },
    { NULL } };

static gboolean bmem_open(BdNode *node, GVariant *options, GError **errp)
{
    BmemOptions o = { 0 };
    gint64 size;

    bd_schema_decode(bmem_options, options, &o);
    size = o.size;

    node->opaque = g_malloc0(size);
    node->filename = g_strdup("bmem://");
    bd_node_set_size(node, size);
    return TRUE;
}

static void bmem_close(BdNode *node)
{
    g_free(node->opaque);
    node->opaque = NULL;
}

static int bmem_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                      void *buf, int flags)
{
    memcpy(buf, (char *)node->opaque + offset, bytes);
    return 0;
}

static int bmem_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                       const void *buf, int flags)
{
    memcpy((char *)node->opaque + offset, buf, bytes);
    return 0;
}

static const BdDriver bmem_driver = {
    .name = "bmem", .options = bmem_options, .is_protocol = TRUE,
    .open = bmem_open, .close = bmem_close,
    .pread = bmem_pread, .pwrite = bmem_pwrite,
};

static BdNode *new_node(const char *name, gint64 size)
{
    GVariantDict d;
    g_autoptr(GError) err = NULL;
    BdNode *node;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "bmem");
    g_variant_dict_insert(&d, "node-name", "s", name);
    g_variant_dict_insert(&d, "size", "x", size);
    g_variant_dict_insert(&d, "discard", "s", "unmap");
    node = bd_node_open(g_variant_dict_end(&d), &err);
    g_assert_no_error(err);
    /* No parents here: let the write paths through. */
    node->cum_perm = BD_PERM_CONSISTENT_READ | BD_PERM_WRITE;
    return node;
}

static BdDirtyBitmap *new_bitmap(BdNode *node, uint32_t gran,
                                 const char *name)
{
    g_autoptr(GError) err = NULL;
    BdDirtyBitmap *bm = bd_dirty_bitmap_create(node, gran, name, &err);

    g_assert_no_error(err);
    return bm;
}

static void test_ranges(void)
{
    g_autoptr(BdNode) node = new_node("r", 1 << 20);
    BdDirtyBitmap *bm = new_bitmap(node, 4096, "b");

    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 0);
    bd_dirty_bitmap_set(bm, 100, 1);                 /* chunk 0 */
    bd_dirty_bitmap_set(bm, 4095, 2);                /* chunks 0, 1 */
    bd_dirty_bitmap_set(bm, 64 * 4096, 65 * 4096);   /* 64..128, 2 words */
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, (2 + 65) * 4096);
    g_assert_true(bd_dirty_bitmap_get(bm, 4096));
    g_assert_false(bd_dirty_bitmap_get(bm, 2 * 4096));
    g_assert_cmpint(bd_dirty_bitmap_next_dirty(bm, 5000, 1 << 20), ==, 5000);
    g_assert_cmpint(bd_dirty_bitmap_next_dirty(bm, 8192, 1 << 20), ==,
                    64 * 4096);
    g_assert_cmpint(bd_dirty_bitmap_next_zero(bm, 64 * 4096, 1 << 20), ==,
                    129 * 4096);
    g_assert_cmpint(bd_dirty_bitmap_next_dirty(bm, 8192, 64 * 4096), ==, -1);
    uint64_t start, len;
    g_assert_true(bd_dirty_bitmap_next_dirty_area(bm, 8192, 1 << 20, 0,
                                                  &start, &len));
    g_assert_cmpuint(start, ==, 64 * 4096);
    g_assert_cmpuint(len, ==, 65 * 4096);
    g_assert_true(bd_dirty_bitmap_next_dirty_area(bm, 8192, 1 << 20, 4096,
                                                  &start, &len));
    g_assert_cmpuint(len, ==, 4096);
    /* Reset part of the run; beyond the end is clipped. */
    bd_dirty_bitmap_reset(bm, 65 * 4096, 4096);
    bd_dirty_bitmap_set(bm, (1 << 20) - 1, 1000);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, (2 + 64 + 1) * 4096);
    bd_dirty_bitmap_set(bm, 1 << 20, 10);            /* past the end */
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, (2 + 64 + 1) * 4096);
    bd_dirty_bitmap_clear(bm);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 0);
    g_assert_cmpint(bd_dirty_bitmap_next_dirty(bm, 0, 1 << 20), ==, -1);
}

static void test_names_and_checks(void)
{
    g_autoptr(BdNode) node = new_node("n", 1 << 20);
    g_autoptr(GError) err = NULL;
    BdDirtyBitmap *bm = new_bitmap(node, 65536, "b");
    BdDirtyBitmap *anon = new_bitmap(node, 65536, NULL);
    g_autoptr(GPtrArray) list = NULL;

    g_assert_null(bd_dirty_bitmap_create(node, 65536, "b", &err));
    g_assert_cmpstr(err->message, ==, "Bitmap already exists: b");
    g_assert_true(bd_dirty_bitmap_find(node, "b") == bm);
    list = bd_dirty_bitmap_list(node);
    g_assert_cmpuint(list->len, ==, 2);
    g_assert_true(list->pdata[0] == anon);           /* newest first */
    bd_dirty_bitmap_release(anon);

    g_clear_error(&err);
    bd_dirty_bitmap_set_busy(bm, TRUE);
    g_assert_false(bd_dirty_bitmap_check(bm, BD_BITMAP_DEFAULT, &err));
    g_assert_cmpstr(err->message, ==, "Bitmap 'b' is currently in use by "
                    "another operation and cannot be used");
    bd_dirty_bitmap_set_busy(bm, FALSE);
    g_clear_error(&err);
    bd_dirty_bitmap_set_readonly(bm, TRUE);
    g_assert_true(bd_dirty_bitmap_check(bm, BD_BITMAP_ALLOW_RO, NULL));
    g_assert_false(bd_dirty_bitmap_check(bm, BD_BITMAP_DEFAULT, &err));
    g_assert_cmpstr(err->message, ==,
                    "Bitmap 'b' is readonly and cannot be modified");
    g_clear_error(&err);
    bd_dirty_bitmap_set_readonly(bm, FALSE);
    bd_dirty_bitmap_set_inconsistent(bm);
    g_assert_false(bd_dirty_bitmap_enabled(bm));
    g_assert_false(bd_dirty_bitmap_check(bm, BD_BITMAP_ALLOW_RO, &err));
    g_assert_cmpstr(err->message, ==,
                    "Bitmap 'b' is inconsistent and cannot be used");
    g_assert_cmpuint(bd_dirty_bitmap_default_granularity(node), ==, 65536);
}

static char *sha_of_words(const guint64 *w, gsize n)
{
    g_autoptr(GChecksum) c = g_checksum_new(G_CHECKSUM_SHA256);
    for (gsize i = 0; i < n; i++) {
        guint64 le = GUINT64_TO_LE(w[i]);
        g_checksum_update(c, (const guchar *)&le, 8);
    }
    return g_strdup(g_checksum_get_string(c));
}

static void test_sha256(void)
{
    /* 64 MiB at 64 KiB: QEMU's well-known empty-bitmap hash. */
    g_autoptr(BdNode) node = new_node("s", 64 << 20);
    BdDirtyBitmap *bm = new_bitmap(node, 65536, "b");
    g_autofree char *empty = bd_dirty_bitmap_sha256(bm);
    guint64 words[16] = { 0 };
    g_autofree char *want = NULL, *got = NULL;

    g_assert_cmpstr(empty, ==, "38723a2e5e8a17aa7950dc008209944e"
                               "898f69a7bd10a23c839d341e935fd5ca");
    bd_dirty_bitmap_set(bm, 0, 65536 * 3);           /* bits 0-2 */
    bd_dirty_bitmap_set(bm, 1000ull * 65536, 1);     /* bit 1000 */
    words[0] = 7;
    words[1000 / 64] |= 1ull << (1000 % 64);
    want = sha_of_words(words, 16);
    got = bd_dirty_bitmap_sha256(bm);
    g_assert_cmpstr(got, ==, want);
}

static void test_merge_granularities(void)
{
    g_autoptr(BdNode) node = new_node("m", 1 << 20);
    g_autoptr(BdNode) other = new_node("o", 2 << 20);
    g_autoptr(GError) err = NULL;
    BdDirtyBitmap *fine = new_bitmap(node, 512, "fine");
    BdDirtyBitmap *coarse = new_bitmap(node, 65536, "coarse");
    BdDirtyBitmap *big = new_bitmap(other, 65536, "big");
    BdDirtyBitmapBackup *backup = NULL;

    bd_dirty_bitmap_set(fine, 65536 + 512, 512);     /* inside chunk 1 */
    bd_dirty_bitmap_set(fine, 131071, 2);            /* chunks 1 and 2 */
    g_assert_true(bd_dirty_bitmap_merge(coarse, fine, &backup, &err));
    g_assert_cmpuint(bd_dirty_bitmap_count(coarse), ==, 2 * 65536);
    bd_dirty_bitmap_restore(coarse, backup);
    bd_dirty_bitmap_backup_free(backup);
    g_assert_cmpuint(bd_dirty_bitmap_count(coarse), ==, 0);
    /* Coarse into fine: every fine chunk of the coarse one. */
    bd_dirty_bitmap_set(coarse, 0, 1);
    g_assert_true(bd_dirty_bitmap_merge(fine, coarse, NULL, &err));
    /* fine already held chunks 129, 255 and 256 */
    g_assert_cmpuint(bd_dirty_bitmap_count(fine), ==, (128 + 3) * 512);
    g_assert_false(bd_dirty_bitmap_merge(coarse, big, NULL, &err));
    g_assert_cmpstr(err->message, ==, "Bitmaps are of different sizes "
                    "(destination size is 1048576, source size is 2097152) "
                    "and can't be merged");
}

static void test_serialize(void)
{
    g_autoptr(BdNode) node = new_node("z", 1 << 20);
    BdDirtyBitmap *a = new_bitmap(node, 512, "a");
    BdDirtyBitmap *b = new_bitmap(node, 512, "b");
    uint64_t n = bd_dirty_bitmap_serialized_size(a);
    g_autofree guint8 *buf = g_malloc0(n);
    g_autofree char *sa = NULL, *sb = NULL;

    g_assert_cmpuint(n, ==, 2048 / 8);
    bd_dirty_bitmap_set(a, 0, 512);                  /* bit 0 */
    bd_dirty_bitmap_set(a, 9 * 512, 512);            /* bit 9 */
    bd_dirty_bitmap_set(a, 100000, 300000);
    bd_dirty_bitmap_serialize(a, 0, n, buf);
    g_assert_cmpuint(buf[0], ==, 1);
    g_assert_cmpuint(buf[1], ==, 2);
    /* In odd pieces, as the qcow2 loader feeds clusters. */
    bd_dirty_bitmap_deserialize(b, 0, 3, buf);
    bd_dirty_bitmap_deserialize(b, 3, n - 3, buf + 3);
    sa = bd_dirty_bitmap_sha256(a);
    sb = bd_dirty_bitmap_sha256(b);
    g_assert_cmpstr(sa, ==, sb);
    g_assert_cmpuint(bd_dirty_bitmap_count(a), ==, bd_dirty_bitmap_count(b));
}

static void test_write_paths_and_resize(void)
{
    g_autoptr(BdNode) node = new_node("w", 1 << 20);
    BdDirtyBitmap *bm = new_bitmap(node, 4096, "b");
    BdDirtyBitmap *off = new_bitmap(node, 4096, "off");
    char buf[8192] = { 1 };

    bd_dirty_bitmap_set_enabled(off, FALSE);
    g_assert_cmpint(bd_node_pwrite(node, 10, 100, buf, 0), ==, 0);
    g_assert_cmpint(bd_node_pwrite_zeroes(node, 65536, 8192, 0), ==, 0);
    g_assert_cmpint(bd_node_pdiscard(node, 131072, 4096), ==, 0);
    g_assert_cmpint(bd_node_pread(node, 200000, 8192, buf, 0), ==, 0);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4 * 4096);
    g_assert_cmpuint(bd_dirty_bitmap_count(off), ==, 0);
    /* Growing: new chunks start clean and are tracked. */
    bd_node_set_size(node, 2 << 20);
    bd_dirty_bitmaps_truncate(node, 2 << 20);
    g_assert_cmpuint(bd_dirty_bitmap_size(bm), ==, 2 << 20);
    bd_dirty_bitmap_set(bm, (2 << 20) - 1, 1);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 5 * 4096);
    bd_dirty_bitmaps_truncate(node, 65536);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4096);
}

static void test_successor(void)
{
    g_autoptr(BdNode) node = new_node("j", 1 << 20);
    g_autoptr(GError) err = NULL;
    BdDirtyBitmap *bm = new_bitmap(node, 4096, "b");
    BdDirtyBitmap *succ;

    bd_dirty_bitmap_set(bm, 0, 4096);
    succ = bd_dirty_bitmap_create_successor(bm, &err);
    g_assert_no_error(err);
    g_assert_true(bd_dirty_bitmap_busy(bm));
    g_assert_true(bd_dirty_bitmap_recording(bm));
    g_assert_null(bd_dirty_bitmap_create_successor(bm, &err));
    g_clear_error(&err);
    /* New writes go to the successor only. */
    bd_dirty_bitmaps_record(node, 8192, 4096);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4096);
    g_assert_cmpuint(bd_dirty_bitmap_count(succ), ==, 4096);
    /* Failure: nothing lost. */
    bd_dirty_bitmap_reclaim(bm);
    g_assert_false(bd_dirty_bitmap_busy(bm));
    g_assert_true(bd_dirty_bitmap_enabled(bm));
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 2 * 4096);
    /* Success: only what was written during the job remains. */
    bd_dirty_bitmap_create_successor(bm, &err);
    g_assert_no_error(err);
    bd_dirty_bitmaps_record(node, 65536, 1);
    bd_dirty_bitmap_abdicate(bm);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4096);
    g_assert_true(bd_dirty_bitmap_get(bm, 65536));
    /* A node closing with a successor in place frees both. */
    bd_dirty_bitmap_create_successor(bm, &err);
    g_assert_no_error(err);
}

typedef struct {
    BdNode *node;
    int id;
} Writer;

static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;

    /* Each thread dirties its own interleaved chunks, many times. */
    for (int round = 0; round < 50; round++) {
        for (uint64_t c = w->id; c < 4096; c += 4) {
            bd_dirty_bitmaps_record(w->node, c * 512 + 7, 3);
        }
    }
    return NULL;
}

static void test_concurrent_recording(void)
{
    g_autoptr(BdNode) node = new_node("c", 2 << 20);
    BdDirtyBitmap *bm = new_bitmap(node, 512, "b");
    Writer w[4];
    GThread *t[4];

    for (int i = 0; i < 4; i++) {
        w[i] = (Writer) { node, i };
        t[i] = g_thread_new("writer", writer_thread, &w[i]);
    }
    /* Meanwhile the main thread reads and merges. */
    for (int i = 0; i < 100; i++) {
        g_free(bd_dirty_bitmap_sha256(bm));
        (void)bd_dirty_bitmap_next_zero(bm, 0, 2 << 20);
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
    }
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4096 * 512);
    /* Every chunk of the 2 MiB node is dirty. */
    g_assert_cmpint(bd_dirty_bitmap_next_zero(bm, 0, 2 << 20), ==, -1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_driver_register(&bmem_driver);
    g_test_add_func("/bitmap/ranges", test_ranges);
    g_test_add_func("/bitmap/names-and-checks", test_names_and_checks);
    g_test_add_func("/bitmap/sha256", test_sha256);
    g_test_add_func("/bitmap/merge-granularities", test_merge_granularities);
    g_test_add_func("/bitmap/serialize", test_serialize);
    g_test_add_func("/bitmap/write-paths-and-resize",
                    test_write_paths_and_resize);
    g_test_add_func("/bitmap/successor", test_successor);
    g_test_add_func("/bitmap/concurrent-recording", test_concurrent_recording);
    return g_test_run();
}
