/* SPDX-License-Identifier: MIT */
/* Unit tests of the file, raw and null-co drivers, including image locking against qemu-io. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "graph/node.h"
#include "graph/entry.h"
#include "graph/io.h"
#include "formats/registry.h"
#include "graph/bitmap.h"
#include "helpers.h"

#define MiB (1024 * 1024)
#define RW_PERM (BD_PERM_CONSISTENT_READ | BD_PERM_WRITE)
/* What a guest device shares by default in QEMU: no other writers. */
#define DEV_SHARED (BD_PERM_CONSISTENT_READ | BD_PERM_WRITE_UNCHANGED)

typedef struct {
    char *dir;
    char *img;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    int fd;

    f->dir = g_dir_make_tmp("blockd-formats-XXXXXX", &err);
    g_assert_no_error(err);
    f->img = g_build_filename(f->dir, "disk.img", NULL);
    fd = open(f->img, O_CREAT | O_RDWR, 0644);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 4 * MiB), ==, 0);
    close(fd);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_unlink(f->img);
    g_rmdir(f->dir);
    g_free(f->img);
    g_free(f->dir);
}

static BdNode *open_raw(const char *img, const char *extra, GError **errp)
{
    g_autofree char *text = g_strdup_printf(
        "{'driver': <'raw'>, 'node-name': <'r'>, "
        "'file': <{'driver': <'file'>, 'node-name': <'f'>, "
        "'filename': <'%s'>}>%s}", img, extra ? extra : "");
    GVariant *opts = g_variant_new_parsed(text);

    return bd_node_open(opts, errp);
}

static void pattern(char *buf, size_t len, int seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (char)(seed + i * 7);
    }
}

/* Read the image behind blockd's back. */
static void read_file_at(const char *path, off_t off, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, buf, len, off), ==, (ssize_t)len);
    close(fd);
}

static void test_null(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = NULL;
    g_autoptr(BdNode) junk = NULL;
    g_autoptr(BdEntry) entry = NULL;
    char buf[4096];
    uint64_t pnum = 0, map = 0;
    BdNode *file = NULL;

    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'null-co'>, 'node-name': <'n0'>}"), &err);
    g_assert_no_error(err);
    g_assert_cmpuint(node->size, ==, 1ull << 30);
    g_assert_cmpstr(node->filename, ==, "null-co://");
    entry = bd_entry_new(node, NULL, RW_PERM, BD_PERM_ALL, &err);
    g_assert_no_error(err);
    /* Without read-zeroes the buffer stays as it was (QEMU). */
    memset(buf, 0xaa, sizeof(buf));
    g_assert_cmpint(bd_entry_pread(entry, 0, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint((unsigned char)buf[100], ==, 0xaa);
    g_assert_cmpint(bd_entry_pwrite(entry, 512, 512, buf, 0), ==, 0);
    g_assert_cmpint(bd_node_block_status(node, 0, 4096, &pnum, &map, &file)
                    & ~BD_BLOCK_ALLOCATED, ==, BD_BLOCK_OFFSET_VALID);
    g_clear_pointer(&entry, bd_entry_free);
    g_clear_pointer(&node, bd_node_unref);

    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'null-aio'>, 'node-name': <'n1'>, 'size': <int64 65536>,"
        " 'read-zeroes': <true>}"), &err);
    g_assert_no_error(err);
    g_assert_cmpuint(node->size, ==, 65536);
    /* QEMU's json: name, keys in QEMU's order. */
    g_assert_cmpstr(node->filename, ==, "json:{\"read-zeroes\": true, "
                    "\"driver\": \"null-aio\", \"size\": 65536}");
    entry = bd_entry_new(node, NULL, RW_PERM, BD_PERM_ALL, &err);
    g_assert_no_error(err);
    memset(buf, 0xaa, sizeof(buf));
    g_assert_cmpint(bd_entry_pread(entry, 4096, sizeof(buf), buf, 0), ==, 0);
    g_assert_cmpint(buf[0] | buf[4095], ==, 0);
    g_assert_cmpint(bd_node_block_status(node, 0, 8192, &pnum, &map, &file)
                    & ~BD_BLOCK_ALLOCATED, ==,
                    BD_BLOCK_ZERO | BD_BLOCK_OFFSET_VALID);
    g_assert_cmpuint(pnum, ==, 8192);
    g_assert_true(file == node);

    junk = bd_node_open(g_variant_new_parsed(
        "{'driver': <'null-co'>, 'size': <int64 -1>}"), &err);
    g_assert_null(junk);
    g_assert_nonnull(err);
}

static void test_file_rw(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = open_raw(f->img, NULL, &err);
    g_autoptr(BdEntry) entry = NULL;
    g_autofree char *buf = g_malloc(MiB);
    g_autofree char *back = g_malloc(MiB);
    struct stat st;

    g_assert_no_error(err);
    g_assert_cmpuint(node->size, ==, 4 * MiB);
    g_assert_cmpstr(node->file->node->filename, ==, f->img);
    entry = bd_entry_new(node, NULL, RW_PERM | BD_PERM_RESIZE, DEV_SHARED,
                         &err);
    g_assert_no_error(err);

    /* Unaligned write and read back, checked on the file itself. */
    pattern(buf, 100000, 3);
    g_assert_cmpint(bd_entry_pwrite(entry, 12345, 100000, buf,
                                    BD_REQ_FUA), ==, 0);
    read_file_at(f->img, 12345, back, 100000);
    g_assert_cmpmem(buf, 100000, back, 100000);
    memset(back, 0, MiB);
    g_assert_cmpint(bd_entry_pread(entry, 12345, 100000, back, 0), ==, 0);
    g_assert_cmpmem(buf, 100000, back, 100000);
    g_assert_cmpint(bd_entry_flush(entry), ==, 0);

    /* Out of range for the entry. */
    g_assert_cmpint(bd_entry_pread(entry, 4 * MiB - 10, 20, back, 0), <, 0);

    /* Growing through truncate, and writes past the end when allowed. */
    g_assert_cmpint(bd_entry_truncate(entry, 5 * MiB), ==, 0);
    g_assert_cmpuint(node->size, ==, 5 * MiB);
    g_assert_cmpint(stat(f->img, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 5 * MiB);
    bd_entry_set_allow_beyond_eof(entry, TRUE);
    g_assert_cmpint(bd_entry_pwrite(entry, 6 * MiB, 4096, buf, 0), ==, 0);
    g_assert_cmpint(stat(f->img, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 6 * MiB + 4096);
    g_assert_cmpuint(node->file->node->size, ==, 6 * MiB + 4096);
    g_assert_cmpuint(node->size, ==, 6 * MiB + 4096);
}

typedef struct {
    BdEntry *entry;
    int index;
} Writer;

static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;
    char buf[4096];

    pattern(buf, sizeof(buf), w->index);
    for (int i = 0; i < 64; i++) {
        uint64_t off = 4 * MiB + (uint64_t)(i * 8 + w->index) * 4096;
        g_assert_cmpint(bd_entry_pwrite(w->entry, off, sizeof(buf), buf, 0),
                        ==, 0);
    }
    return NULL;
}

/* Concurrent writes growing the file: the size ends at the furthest. */
static void test_file_concurrent_growth(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = open_raw(f->img, NULL, &err);
    g_autoptr(BdEntry) entry = NULL;
    GThread *threads[8];
    Writer writers[8];
    char buf[4096], back[4096];
    struct stat st;

    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, RW_PERM | BD_PERM_RESIZE, DEV_SHARED,
                         &err);
    g_assert_no_error(err);
    bd_entry_set_allow_beyond_eof(entry, TRUE);
    for (int i = 0; i < 8; i++) {
        writers[i] = (Writer) { entry, i };
        threads[i] = g_thread_new("writer", writer_thread, &writers[i]);
    }
    for (int i = 0; i < 8; i++) {
        g_thread_join(threads[i]);
    }
    g_assert_cmpuint(node->size, ==, 6 * MiB);
    g_assert_cmpuint(node->file->node->size, ==, 6 * MiB);
    g_assert_cmpint(stat(f->img, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 6 * MiB);
    pattern(buf, sizeof(buf), 5);
    read_file_at(f->img, 4 * MiB + (63 * 8 + 5) * 4096, back, sizeof(back));
    g_assert_cmpmem(buf, sizeof(buf), back, sizeof(back));

    /* Shrinking works too. */
    g_assert_cmpint(bd_entry_truncate(entry, MiB), ==, 0);
    g_assert_cmpint(stat(f->img, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, MiB);
    g_assert_cmpuint(node->size, ==, MiB);
}

static void test_file_zeroes(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = open_raw(f->img,
        ", 'discard': <'unmap'>", &err);
    g_autoptr(BdEntry) entry = NULL;
    g_autofree char *buf = g_malloc(MiB);
    g_autofree char *zero = g_malloc0(MiB);
    BdNode *file = node ? node->file->node : NULL;
    int fd;

    g_assert_no_error(err);
    /* A nested file child defaults to discard=unmap (QEMU's rule). */
    g_assert_true(file->discard_unmap);
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_no_error(err);
    pattern(buf, MiB, 9);
    g_assert_cmpint(bd_entry_pwrite(entry, 0, MiB, buf, 0), ==, 0);
    g_assert_cmpint(bd_entry_pwrite(entry, 2 * MiB, MiB, buf, 0), ==, 0);

    /* Zeroes with unmap punch a hole. */
    g_assert_cmpint(bd_entry_pwrite_zeroes(entry, 0, MiB, BD_REQ_MAY_UNMAP),
                    ==, 0);
    read_file_at(f->img, 0, buf, MiB);
    g_assert_cmpmem(buf, MiB, zero, MiB);
    fd = open(f->img, O_RDONLY);
    g_assert_cmpint(lseek(fd, 0, SEEK_DATA), >=, MiB);
    /* Discard punches too. */
    g_assert_cmpint(bd_entry_pdiscard(entry, 2 * MiB, MiB), ==, 0);
    g_assert_cmpint(lseek(fd, 0, SEEK_DATA), ==, -1);
    close(fd);

    /* Without unmap: zero range, and NO_FALLBACK is fine on ext4/xfs. */
    pattern(buf, MiB, 1);
    g_assert_cmpint(bd_entry_pwrite(entry, MiB, 65536, buf, 0), ==, 0);
    g_assert_cmpint(bd_entry_pwrite_zeroes(entry, MiB + 4096, 8192, 0), ==, 0);
    read_file_at(f->img, MiB, buf, 65536);
    g_assert_cmpint(buf[4095] == 0, ==, FALSE);
    g_assert_cmpmem(buf + 4096, 8192, zero, 8192);
    g_assert_cmpint(buf[12288] == 0, ==, FALSE);

    /* discard=ignore on the file: discard does nothing. */
    file->discard_unmap = FALSE;
    g_assert_cmpint(bd_entry_pdiscard(entry, MiB, 65536), ==, 0);
    read_file_at(f->img, MiB, buf, 4096);
    g_assert_cmpint(buf[100] == 0, ==, FALSE);
}

static void test_block_status(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = open_raw(f->img, NULL, &err);
    g_autoptr(BdEntry) entry = NULL;
    g_autofree char *buf = g_malloc(65536);
    uint64_t pnum = 0, map = 0;
    BdNode *file = NULL;
    int ret;

    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_no_error(err);
    pattern(buf, 65536, 5);
    g_assert_cmpint(bd_entry_pwrite(entry, MiB, 65536, buf, 0), ==, 0);

    /* raw reports RAW and where the bytes are. */
    ret = node->drv->block_status(node, 4096, 512, &pnum, &map, &file);
    g_assert_cmpint(ret, ==, BD_BLOCK_RAW | BD_BLOCK_OFFSET_VALID);
    g_assert_cmpuint(map, ==, 4096);
    g_assert_true(file == node->file->node);

    /* file: a hole, the data, a hole to the end. */
    ret = bd_node_block_status(node->file->node, 0, 4 * MiB, &pnum, &map,
                               &file);
    g_assert_true(ret & BD_BLOCK_ZERO);
    g_assert_false(ret & BD_BLOCK_DATA);
    g_assert_cmpuint(pnum, ==, MiB);
    ret = bd_node_block_status(node->file->node, MiB, 3 * MiB, &pnum, &map,
                               &file);
    g_assert_true(ret & BD_BLOCK_DATA);
    g_assert_true(ret & BD_BLOCK_OFFSET_VALID);
    g_assert_cmpuint(map, ==, MiB);
    g_assert_cmpuint(pnum, ==, 65536);
    ret = bd_node_block_status(node->file->node, MiB + 65536,
                               3 * MiB - 65536, &pnum, &map, &file);
    g_assert_true(ret & BD_BLOCK_ZERO);
    g_assert_true(ret & BD_BLOCK_EOF);
    g_assert_cmpuint(pnum, ==, 3 * MiB - 65536);

    /* The same through the entry (follows raw down to the file). */
    ret = bd_entry_block_status(entry, 0, 4 * MiB, &pnum);
    g_assert_true(ret & BD_BLOCK_ZERO);
    g_assert_cmpuint(pnum, ==, MiB);
    ret = bd_entry_block_status(entry, MiB, 3 * MiB, &pnum);
    g_assert_true(ret & BD_BLOCK_DATA);
    g_assert_cmpuint(pnum, ==, 65536);
}

static void test_raw_window(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = NULL;
    g_autoptr(BdEntry) entry = NULL;
    char buf[4096], back[4096];
    uint64_t pnum = 0, map = 0;
    BdNode *file = NULL;
    g_autofree char *json = NULL;

    node = open_raw(f->img, ", 'offset': <int64 3145728>, "
                    "'size': <int64 2097152>", &err);
    g_assert_null(node);
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, "The sum of offset (3145728) and size "
                    "(2097152) has to be smaller or equal to the  actual size "
                    "of the containing file (4194304)");
    g_clear_error(&err);
    node = open_raw(f->img, ", 'offset': <int64 5242880>", &err);
    g_assert_null(node);
    g_assert_cmpstr(err->message, ==, "Offset (5242880) cannot be greater "
                    "than size of the containing file (4194304)");
    g_clear_error(&err);
    node = open_raw(f->img, ", 'size': <int64 1000>", &err);
    g_assert_null(node);
    g_assert_cmpstr(err->message, ==, "Specified size is not multiple of 512");
    g_clear_error(&err);
    g_assert_null(bd_node_find("f"));

    node = open_raw(f->img, ", 'offset': <int64 1048576>, "
                    "'size': <int64 65536>", &err);
    g_assert_no_error(err);
    g_assert_cmpuint(node->size, ==, 65536);
    json = g_strdup_printf("json:{\"offset\": 1048576, \"driver\": \"raw\", "
                           "\"size\": 65536, \"file\": {\"driver\": \"file\", "
                           "\"filename\": \"%s\"}}", f->img);
    g_assert_cmpstr(node->filename, ==, json);
    entry = bd_entry_new(node, NULL, RW_PERM | BD_PERM_RESIZE, DEV_SHARED,
                         &err);
    g_assert_no_error(err);
    pattern(buf, sizeof(buf), 77);
    g_assert_cmpint(bd_entry_pwrite(entry, 8192, sizeof(buf), buf, 0), ==, 0);
    read_file_at(f->img, MiB + 8192, back, sizeof(back));
    g_assert_cmpmem(buf, sizeof(buf), back, sizeof(back));
    g_assert_cmpint(node->drv->block_status(node, 8192, 4096, &pnum, &map,
                                            &file), ==,
                    BD_BLOCK_RAW | BD_BLOCK_OFFSET_VALID);
    g_assert_cmpuint(map, ==, MiB + 8192);
    /* The window cannot grow; direct calls past it are refused. */
    g_assert_cmpint(bd_entry_truncate(entry, 131072), <, 0);
    g_assert_cmpint(node->drv->pwrite(node, 65536 - 512, 1024, buf, 0), ==,
                    -ENOSPC);
    g_assert_cmpint(node->drv->pread(node, 65536, 512, buf, 0), ==, -EINVAL);
}

static void test_raw_inherit(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = open_raw(f->img,
        ", 'read-only': <true>, 'cache': <{'no-flush': <true>}>", &err);
    BdNode *file;

    g_assert_no_error(err);
    file = node->file->node;
    g_assert_true(file->read_only);
    g_assert_true(file->cache_no_flush);
    g_assert_false(file->cache_direct);
    g_assert_true(file->discard_unmap);
    g_clear_pointer(&node, bd_node_unref);

    /* A child's own setting wins. */
    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'raw'>, 'read-only': <true>, 'file': <{'driver': "
        "<'file'>, 'filename': <%s>, 'discard': <'ignore'>}>}", f->img), &err);
    g_assert_no_error(err);
    g_assert_false(node->file->node->discard_unmap);
    g_assert_true(node->file->node->read_only);
}

static void test_file_errors(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *missing = g_build_filename(f->dir, "nope", NULL);
    g_autofree char *msg = NULL;
    BdNode *node;

    node = open_raw(missing, NULL, &err);
    g_assert_null(node);
    msg = g_strdup_printf("Could not open '%s': No such file or directory",
                          missing);
    g_assert_cmpstr(err->message, ==, msg);
    g_clear_error(&err);
    node = open_raw(f->dir, NULL, &err);
    g_assert_null(node);
    g_assert_nonnull(err);
    g_clear_error(&err);
    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'file'>, 'filename': <%s>, 'aio': <'native'>}", f->img),
        &err);
    g_assert_null(node);
    g_assert_cmpstr(err->message, ==, "aio=native was specified, but it "
                    "requires cache.direct=on, which was not specified.");
}

static void test_file_direct(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = NULL;
    g_autoptr(BdEntry) entry = NULL;
    g_autofree char *buf = g_malloc(70000);
    g_autofree char *back = g_malloc(70000);

    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'raw'>, 'node-name': <'r'>, "
        "'cache': <{'direct': <true>}>, 'file': <{'driver': <'file'>,"
        " 'filename': <%s>, 'aio': <'native'>}>}", f->img), &err);
    if (!node && err && strstr(err->message, "Invalid argument")) {
        g_test_skip("O_DIRECT not supported here");
        return;
    }
    g_assert_no_error(err);
    /* The nested file child inherited cache.direct (QEMU's rule). */
    g_assert_true(node->file->node->cache_direct);
    g_assert_cmpuint(node->file->node->request_alignment, >=, 512);
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_no_error(err);
    pattern(buf, 70000, 11);
    /* Unaligned offset, length and memory. */
    g_assert_cmpint(bd_entry_pwrite(entry, 777, 69999, buf + 1, 0), ==, 0);
    g_assert_cmpint(bd_entry_pread(entry, 777, 69999, back + 1, 0), ==, 0);
    g_assert_cmpmem(buf + 1, 69999, back + 1, 69999);
    read_file_at(f->img, 777, back, 69999);
    g_assert_cmpmem(buf + 1, 69999, back, 69999);
}

/* --- locking interplay with qemu-io --- */

static int run_qemu_io(const char *img, const char *cmd, char **errout)
{
    gboolean ro = g_str_has_prefix(cmd, "read");
    const char *argv[] = { "qemu-io", "-f", "raw", "-c", cmd,
                           ro ? "-r" : img, ro ? img : NULL, NULL };

    return bd_test_run((char **)argv, NULL, errout);
}

/* Is byte 'off' of 'img' locked by some other process? */
static gboolean byte_locked(const char *img, int off)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                        .l_start = off, .l_len = 1 };
    int fd = open(img, O_RDONLY);
    int ret;

    g_assert_cmpint(fd, >=, 0);
    ret = fcntl(fd, F_OFD_GETLK, &fl);
    close(fd);
    return ret == 0 && fl.l_type != F_UNLCK;
}

static void test_lock_blockd_holds(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = NULL;
    g_autoptr(BdEntry) entry = NULL;
    g_autofree char *errout = NULL;
    g_autofree char *hint = NULL;

    if (!bd_test_have_program("qemu-io")) {
        g_test_skip("qemu-io not installed");
        return;
    }
    node = open_raw(f->img, NULL, &err);
    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_no_error(err);
    /* QEMU's layout: 100 + perm held, 200 + perm not shared. */
    g_assert_true(byte_locked(f->img, 100));
    g_assert_true(byte_locked(f->img, 101));
    g_assert_false(byte_locked(f->img, 102));
    g_assert_false(byte_locked(f->img, 103));
    g_assert_false(byte_locked(f->img, 200));
    g_assert_true(byte_locked(f->img, 201));
    g_assert_false(byte_locked(f->img, 202));
    g_assert_true(byte_locked(f->img, 203));

    g_assert_cmpint(run_qemu_io(f->img, "write 0 4k", &errout), !=, 0);
    g_assert_nonnull(strstr(errout, "Failed to get \"write\" lock"));
    hint = g_strdup_printf("Is another process using the image [%s]?", f->img);
    g_assert_nonnull(strstr(errout, hint));
    g_clear_pointer(&errout, g_free);
    /* Read-only openers are fine: we share consistent read. */
    g_assert_cmpint(run_qemu_io(f->img, "read 0 4k", &errout), ==, 0);
    g_clear_pointer(&errout, g_free);

    /* Dropping the entry releases the locks. */
    g_clear_pointer(&entry, bd_entry_free);
    g_assert_cmpint(run_qemu_io(f->img, "write 0 4k", &errout), ==, 0);
    g_clear_pointer(&errout, g_free);

    /* locking=off takes no locks at all. */
    g_clear_pointer(&node, bd_node_unref);
    node = bd_node_open(g_variant_new_parsed(
        "{'driver': <'file'>, 'node-name': <'f'>, 'filename': <%s>, "
        "'locking': <'off'>}", f->img), &err);
    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_no_error(err);
    g_assert_cmpint(run_qemu_io(f->img, "write 0 4k", &errout), ==, 0);
}

static void test_lock_qemu_holds(Fixture *f, gconstpointer data)
{
    const char *argv[] = { "qemu-io", "-f", "raw", "-c", "sleep 30000",
                           f->img, NULL };
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = NULL;
    g_autoptr(BdEntry) entry = NULL;
    g_autofree char *hint = NULL;
    GPid pid;
    int tries;

    if (!bd_test_have_program("qemu-io")) {
        g_test_skip("qemu-io not installed");
        return;
    }
    g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                                G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                                G_SPAWN_STDOUT_TO_DEV_NULL,
                                NULL, NULL, &pid, &err));
    for (tries = 0; tries < 500 && !byte_locked(f->img, 101); tries++) {
        g_usleep(10000);
    }
    g_assert_true(byte_locked(f->img, 101));   /* qemu-io holds "write" */

    node = open_raw(f->img, NULL, &err);
    g_assert_no_error(err);
    /* A writer that does not share writing must be refused... */
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_null(entry);
    g_assert_nonnull(err);
    hint = g_strdup_printf("Failed to get shared \"write\" lock\n"
                           "Is another process using the image [%s]?", f->img);
    g_assert_cmpstr(err->message, ==, hint);
    g_clear_error(&err);
    /* ...and leave no lock of ours behind (the node stays usable). */
    g_assert_false(node->file->node->cum_perm & BD_PERM_WRITE);
    /* A writer sharing writes is what QEMU allows too. */
    entry = bd_entry_new(node, NULL, RW_PERM, BD_PERM_ALL, &err);
    g_assert_no_error(err);

    /* A read-only node of ours takes "consistent read" (byte 100) and
     * coexists with the writer when it shares writes. */
    {
        g_autoptr(BdNode) ro = bd_node_open(g_variant_new_parsed(
            "{'driver': <'file'>, 'node-name': <'ro'>, 'filename': <%s>, "
            "'read-only': <true>}", f->img), &err);
        g_autoptr(BdEntry) reader = NULL;

        g_assert_no_error(err);
        reader = bd_entry_new(ro, NULL, BD_PERM_CONSISTENT_READ, BD_PERM_ALL,
                              &err);
        g_assert_no_error(err);
        g_assert_null(bd_entry_new(ro, NULL, BD_PERM_WRITE, BD_PERM_ALL,
                                   NULL));
    }

    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    g_spawn_close_pid(pid);
    /* With qemu-io gone the strict writer gets in. */
    g_assert_true(bd_entry_set_perm(entry, RW_PERM, DEV_SHARED, &err));
    g_assert_no_error(err);
}

/* A sink that notes when it was begun. */
typedef struct {
    BdFdSink sink;
    int begins;
} CountingSink;

static int counting_begin(BdFdSink *sink)
{
    ((CountingSink *)sink)->begins++;
    return 0;
}

/* Fill a pipe with 'len' bytes of 'buf' (len fits the pipe). */
static void pipe_fill(int fd, const char *buf, size_t len)
{
    g_assert_cmpint(write(fd, buf, len), ==, (ssize_t)len);
}

/* The zero-copy entry points on raw-on-file: data lands where the
 * buffered path puts it, bitmaps record writes, and what needs the
 * data in memory (detect-zeroes, O_DIRECT alignment) or no write
 * permission is refused with nothing consumed or sent. */
static void test_zero_copy(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BdNode) node = open_raw(f->img, NULL, &err);
    g_autoptr(BdEntry) entry = NULL;
    g_autoptr(BdEntry) ro = NULL;
    g_autofree char *buf = g_malloc(256 * 1024);
    g_autofree char *back = g_malloc(256 * 1024);
    CountingSink cs = { .sink = { .begin = counting_begin } };
    BdDirtyBitmap *bm;
    int p[2];

    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, RW_PERM, DEV_SHARED, &err);
    g_assert_no_error(err);
    bm = bd_dirty_bitmap_create(node, 65536, "b0", &err);
    g_assert_no_error(err);
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    g_assert_cmpint(fcntl(p[0], F_SETPIPE_SZ, 256 * 1024), >=, 256 * 1024);

    /* Write from the pipe, checked on the file and in the bitmap. */
    pattern(buf, 200000, 5);
    pipe_fill(p[1], buf, 200000);
    g_assert_cmpint(bd_entry_pwrite_from_fd(entry, MiB + 512, 200000, p[0],
                                            BD_REQ_FUA), ==, 0);
    read_file_at(f->img, MiB + 512, back, 200000);
    g_assert_cmpmem(buf, 200000, back, 200000);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4 * 65536);

    /* Read to the pipe: the sink is begun once, the bytes are right. */
    cs.sink.fd = p[1];
    g_assert_cmpint(bd_entry_pread_to_fd(entry, MiB + 512, 200000,
                                         &cs.sink, 0), ==, 0);
    g_assert_cmpint(cs.begins, ==, 1);
    g_assert_cmpint(read(p[0], back, 200000), ==, 200000);
    g_assert_cmpmem(buf, 200000, back, 200000);

    /* Out of range: refused before the sink is begun. */
    cs.begins = 0;
    cs.sink.begun = FALSE;
    g_assert_cmpint(bd_entry_pread_to_fd(entry, 4 * MiB - 10, 20, &cs.sink, 0),
                    ==, -EINVAL);
    g_assert_cmpint(cs.begins, ==, 0);
    g_assert_cmpint(bd_entry_pwrite_from_fd(entry, 4 * MiB - 10, 20, p[0], 0),
                    ==, -ENOSPC);
    /* NOWAIT has no sendfile form: -EAGAIN, nothing sent. */
    g_assert_cmpint(bd_entry_pread_to_fd(entry, 0, 4096, &cs.sink,
                                         BD_REQ_NOWAIT), ==, -EAGAIN);
    g_assert_cmpint(cs.begins, ==, 0);
    /* A cached NOWAIT read through the buffer path works. */
    g_assert_cmpint(bd_entry_pread(entry, MiB + 512, 4096, back,
                                   BD_REQ_NOWAIT), ==, 0);
    g_assert_cmpmem(buf, 4096, back, 4096);

    /* A read-only user may not write; the pipe stays full. */
    ro = bd_entry_new(node, NULL, BD_PERM_CONSISTENT_READ, BD_PERM_ALL, &err);
    g_assert_no_error(err);
    pipe_fill(p[1], buf, 4096);
    g_assert_cmpint(bd_entry_pwrite_from_fd(ro, 0, 4096, p[0], 0), ==,
                    -EPERM);
    /* detect-zeroes needs the data: refused, nothing read. */
    node->detect_zeroes = BD_DETECT_ZEROES_ON;
    g_assert_cmpint(bd_entry_pwrite_from_fd(entry, 0, 4096, p[0], 0), ==,
                    -ENOTSUP);
    node->detect_zeroes = BD_DETECT_ZEROES_OFF;
    g_assert_cmpint(read(p[0], back, 4096), ==, 4096);
    g_assert_cmpuint(bd_dirty_bitmap_count(bm), ==, 4 * 65536);
    close(p[0]);
    close(p[1]);
}

/* The probe of a sector holding 'text' and zeroes. */
static const char *probe_text(const char *text)
{
    uint8_t buf[512] = { 0 };

    memcpy(buf, text, strlen(text));
    return bd_formats_probe_buf(buf, sizeof(buf));
}

/* Probing by the first sector, as QEMU: a vdi needs its whole header,
 * a dynamic VHD shows its footer copy, a vmdk its magic or descriptor
 * text, everything else is raw; the
 * probed-raw guard knows the magics of formats blockd does not open. */
static void test_probe(void)
{
    uint8_t buf[512] = { 0 };

    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "raw");
    memcpy(buf, "QFI\xfb", 4);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "qcow2");
    memset(buf, 0, 512);
    memcpy(buf + 0x40, "\x7f\x10\xda\xbe", 4);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "vdi");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 511), ==, "raw");
    g_assert_true(bd_formats_buf_has_image_magic(buf, 512));
    memset(buf, 0, 512);
    memcpy(buf, "conectix", 8);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "vpc");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 7), ==, "raw");
    memset(buf, 0, 512);
    memcpy(buf, "QED", 4);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "qed");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 63), ==, "raw");
    memset(buf, 0, 512);
    memcpy(buf, "WithoutFreeSpace\x02", 17);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "parallels");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 63), ==, "raw");
    memcpy(buf, "WithouFreSpacExt", 16);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 64), ==, "parallels");
    buf[16] = 3;    /* QEMU probes version 2 only */
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "raw");
    g_assert_true(bd_formats_buf_has_image_magic(buf, 512));
    memset(buf, 0, 512);
    memcpy(buf, "LUKS\xba\xbe", 6);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "luks");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 5), ==, "raw");
    memset(buf, 0, 512);
    memcpy(buf, "KDMV", 4);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "vmdk");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 3), ==, "raw");
    /* VMware 3 sparse ("COWD", vmfsSparse extents). */
    memcpy(buf, "COWD", 4);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "vmdk");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 3), ==, "raw");
    g_assert_true(bd_formats_buf_has_image_magic(buf, 512));
    /* A vmdk descriptor: comments and blank lines, then version=N. */
    g_assert_cmpstr(probe_text("# Disk DescriptorFile\n  \nversion=1\nCID=1\n"),
                    ==, "vmdk");
    g_assert_cmpstr(probe_text("# Disk DescriptorFile\r\nversion=2\r\n"),
                    ==, "vmdk");
    g_assert_cmpstr(probe_text("# Disk DescriptorFile\ncid=1\nversion=1\n"),
                    ==, "raw");
    g_assert_cmpstr(probe_text("# Disk DescriptorFile\nversion=4\n\n\n"),
                    ==, "raw");
    memset(buf, 0, 512);
    memcpy(buf, "vhdxfile", 8);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "vhdx");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 7), ==, "raw");
    g_assert_true(bd_formats_buf_has_image_magic(buf, 512));
    memcpy(buf, "plain da", 8);
    g_assert_false(bd_formats_buf_has_image_magic(buf, 512));
}

/* A Bochs header: the three strings with their NULs and version 2.0 or
 * 1.0; QEMU probes a short file zero-padded, so the 68 bytes up to the
 * version are enough.  cloop: the preamble's first three lines. */
static void test_probe_bochs_cloop(void)
{
    static const char cloop[] = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop "
        "file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
    uint8_t buf[512] = { 0 };

    memcpy(buf, "Bochs Virtual HD Image", 22);
    memcpy(buf + 32, "Redolog", 7);
    memcpy(buf + 48, "Growing", 7);
    buf[66] = 2;                                   /* 0x00020000 */
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "bochs");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 68), ==, "bochs");
    g_assert_cmpstr(bd_formats_probe_buf(buf, 67), ==, "raw");
    g_assert_true(bd_formats_buf_has_image_magic(buf, 512));
    buf[66] = 1;                                   /* 0x00010000 */
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "bochs");
    buf[66] = 3;
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "raw");
    buf[66] = 2;
    memcpy(buf + 48, "Undoable", 8);
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "raw");
    memcpy(buf + 48, "Growing", 8);
    buf[22] = 'X';                                 /* no NUL after it */
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "raw");

    memset(buf, 0, 512);
    memcpy(buf, cloop, strlen(cloop));
    g_assert_cmpstr(bd_formats_probe_buf(buf, 512), ==, "cloop");
    g_assert_cmpstr(bd_formats_probe_buf(buf, strlen(cloop)), ==, "cloop");
    g_assert_cmpstr(bd_formats_probe_buf(buf, strlen(cloop) - 1), ==, "raw");
    g_assert_true(bd_formats_buf_has_image_magic(buf, 512));
    g_assert_cmpstr(probe_text("#!/bin/sh\n#V2.0 Format\necho hi\n"), ==,
                    "raw");
    /* A vmdk descriptor's comment lines are not a cloop. */
    g_assert_cmpstr(probe_text("#!/bin/sh\nversion=1\n"), ==, "vmdk");
}

/* dmg goes by the file name (QEMU's probe): "*.dmg" without a magic
 * is dmg, with one it is that format; no other name becomes dmg. */
static void test_probe_dmg(void)
{
    g_autofree char *dir = g_dir_make_tmp("blockd-probe-XXXXXX", NULL);
    g_autofree char *dmg = g_build_filename(dir, "disk.dmg", NULL);
    g_autofree char *other = g_build_filename(dir, "disk.dmg.raw", NULL);
    g_autofree char *qcow = g_build_filename(dir, "q.dmg", NULL);
    char zeroes[4096] = { 0 };

    g_assert_nonnull(dir);
    g_assert_true(g_file_set_contents(dmg, zeroes, sizeof(zeroes), NULL));
    g_assert_true(g_file_set_contents(other, zeroes, sizeof(zeroes), NULL));
    memcpy(zeroes, "QFI\xfb", 4);
    g_assert_true(g_file_set_contents(qcow, zeroes, sizeof(zeroes), NULL));
    g_assert_cmpstr(bd_formats_probe_file(dmg), ==, "dmg");
    g_assert_cmpstr(bd_formats_probe_file(other), ==, "raw");
    g_assert_cmpstr(bd_formats_probe_file(qcow), ==, "qcow2");
    /* A name that is only ".dmg" (no such file in the working
     * directory): QEMU wants something before it. */
    g_assert_cmpstr(bd_formats_probe_file(".dmg"), ==, "raw");
    g_unlink(dmg);
    g_unlink(other);
    g_unlink(qcow);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_formats_register_all();

    g_test_add_func("/formats/null", test_null);
    g_test_add_func("/formats/probe", test_probe);
    g_test_add_func("/formats/probe/bochs-cloop", test_probe_bochs_cloop);
    g_test_add_func("/formats/probe-dmg", test_probe_dmg);
#define ADD(path, fn) \
    g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/formats/file/rw", test_file_rw);
    ADD("/formats/file/concurrent-growth", test_file_concurrent_growth);
    ADD("/formats/file/zeroes-discard", test_file_zeroes);
    ADD("/formats/file/block-status", test_block_status);
    ADD("/formats/file/errors", test_file_errors);
    ADD("/formats/file/direct", test_file_direct);
    ADD("/formats/raw/window", test_raw_window);
    ADD("/formats/raw/zero-copy", test_zero_copy);
    ADD("/formats/raw/inherit", test_raw_inherit);
    ADD("/formats/lock/blockd-holds", test_lock_blockd_holds);
    ADD("/formats/lock/qemu-holds", test_lock_qemu_holds);
#undef ADD
    return g_test_run();
}
