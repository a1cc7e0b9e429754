/* SPDX-License-Identifier: MIT */
/* Unit tests of the qcow2 driver: header parsing on built and hostile buffers, image creation checked by qemu-img, the L2 cache generation rule of lock-free table loading. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include "graph/node.h"
#include "graph/io.h"
#include "graph/entry.h"
#include "formats/registry.h"
#include "formats/qcow2/qcow2.h"
#include "helpers.h"

#define CS 65536

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, v >> 32);
    put_be32(p + 4, v);
}

/* A valid v3 header of a 1 GiB image: reftable at 64k, L1 at 192k. */
static uint8_t *good_header(void)
{
    uint8_t *b = g_malloc0(CS);

    put_be32(b, QCOW2_MAGIC);
    put_be32(b + 4, 3);
    put_be32(b + 20, 16);
    put_be64(b + 24, 1ull << 30);
    put_be32(b + 36, 2);
    put_be64(b + 40, 3 * CS);
    put_be64(b + 48, CS);
    put_be32(b + 56, 1);
    put_be32(b + 96, 4);
    put_be32(b + 100, 104);
    return b;
}

static gboolean parse(const uint8_t *b, size_t len, Qcow2Header *h,
                      GError **errp)
{
    return qcow2_header_parse(b, len, 4 * CS, h, errp);
}

static void expect_error(const uint8_t *b, size_t len, const char *needle)
{
    g_autoptr(GError) err = NULL;
    Qcow2Header h;

    g_assert_false(parse(b, len, &h, &err));
    g_assert_nonnull(err);
    if (needle && !strstr(err->message, needle)) {
        g_error("expected '%s' in '%s'", needle, err->message);
    }
    qcow2_header_clear(&h);
}

static void test_header_good(void)
{
    g_autofree uint8_t *b = good_header();
    g_autoptr(GError) err = NULL;
    Qcow2Header h;
    size_t p = 104;

    /* Backing format extension, an unknown extension, end, name. */
    put_be32(b + p, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + p + 4, 5);
    memcpy(b + p + 8, "qcow2", 5);
    p += 16;
    put_be32(b + p, 0x12345678);
    put_be32(b + p + 4, 3);
    p += 16;
    p += 8;
    put_be64(b + 8, p);
    put_be32(b + 16, 8);
    memcpy(b + p, "base.img", 8);
    g_assert_true(parse(b, CS, &h, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(h.version, ==, 3);
    g_assert_cmpuint(h.cluster_bits, ==, 16);
    g_assert_cmpuint(h.size, ==, 1ull << 30);
    g_assert_cmpuint(h.l1_size, ==, 2);
    g_assert_cmpuint(h.refcount_order, ==, 4);
    g_assert_cmpstr(h.backing_file, ==, "base.img");
    g_assert_cmpstr(h.backing_format, ==, "qcow2");
    qcow2_header_clear(&h);

    /* Version 2: 72-byte header, refcount order fixed at 4. */
    memset(b + 72, 0, 32 + 64);
    put_be32(b + 4, 2);
    put_be64(b + 8, 0);
    put_be32(b + 16, 0);
    g_assert_true(parse(b, 72, &h, &err));
    g_assert_cmpuint(h.version, ==, 2);
    g_assert_cmpuint(h.refcount_order, ==, 4);
    g_assert_null(h.backing_file);
    qcow2_header_clear(&h);
}

static void test_header_hostile(void)
{
    g_autofree uint8_t *b = good_header();
    uint8_t save[CS];

    memcpy(save, b, CS);
#define RESET() memcpy(b, save, CS)
    expect_error(b, 10, "not in qcow2 format");
    b[0] = 0;
    expect_error(b, CS, "not in qcow2 format");
    RESET();
    put_be32(b + 4, 4);
    expect_error(b, CS, "Unsupported qcow2 version 4");
    RESET();
    put_be32(b + 20, 8);
    expect_error(b, CS, "cluster size");
    put_be32(b + 20, 30);
    expect_error(b, CS, "cluster size");
    RESET();
    expect_error(b, 80, "too short");
    put_be32(b + 100, 50);
    expect_error(b, CS, "too short");
    put_be32(b + 100, CS + 8);
    expect_error(b, CS, "exceeds cluster size");
    RESET();
    put_be64(b + 72, 1ull << 40);
    expect_error(b, CS, "Unknown incompatible feature");
    RESET();
    put_be32(b + 96, 7);
    expect_error(b, CS, "64 bits");
    RESET();
    /* AES-CBC (1) and LUKS (2) parse; the key is checked at open. */
    for (uint32_t method = 1; method <= 2; method++) {
        g_autoptr(GError) err = NULL;
        Qcow2Header h;

        put_be32(b + 32, method);
        g_assert_true(parse(b, CS, &h, &err));
        g_assert_cmpuint(h.crypt_method, ==, method);
        qcow2_header_clear(&h);
    }
    put_be32(b + 32, 9);
    expect_error(b, CS, "Unsupported encryption method: 9");
    RESET();
    put_be64(b + 48, 12345);
    expect_error(b, CS, "reference count table offset");
    put_be64(b + 48, 1ull << 50);
    expect_error(b, CS, "beyond end of file");
    RESET();
    put_be32(b + 56, 0xffffffff);
    expect_error(b, CS, "too large");
    RESET();
    put_be32(b + 36, 0xffffffff);
    expect_error(b, CS, "too large");
    put_be32(b + 36, 1);
    expect_error(b, CS, "L1 table is too small");
    RESET();
    put_be64(b + 40, 1ull << 60);
    expect_error(b, CS, "beyond end of file");
    put_be64(b + 40, 77);
    expect_error(b, CS, "Invalid L1 table offset");
    RESET();
    put_be64(b + 24, UINT64_MAX);
    expect_error(b, CS, "too large");
    RESET();
    /* Extension length running past the header cluster. */
    put_be32(b + 104, 0x1234);
    put_be32(b + 108, 0xfffffff0);
    expect_error(b, CS, "ext_len too large");
    RESET();
    put_be32(b + 104, QCOW2_EXT_BACKING_FORMAT);
    put_be32(b + 108, 5000);
    expect_error(b, CS, "too large");
    RESET();
    put_be64(b + 8, CS - 4);
    put_be32(b + 16, 100);
    expect_error(b, CS, "beyond end");
    put_be32(b + 16, 5000);
    expect_error(b, CS, "too long");
    put_be64(b + 8, 1ull << 40);
    expect_error(b, CS, "Invalid backing file offset");
#undef RESET
}

/* Random mutations of a good header: the parser never crashes or reads
 * out of bounds (run under ASan/valgrind to make that visible). */
static void test_header_fuzz(void)
{
    g_autofree uint8_t *good = good_header();
    GRand *r = g_rand_new_with_seed(7);

    for (int i = 0; i < 20000; i++) {
        size_t len = g_rand_int_range(r, 0, 2) ? CS
                     : (size_t)g_rand_int_range(r, 0, 400);
        g_autofree uint8_t *b = g_memdup2(good, len ? len : 1);
        int flips = g_rand_int_range(r, 1, 8);
        g_autoptr(GError) err = NULL;
        Qcow2Header h;

        for (int k = 0; k < flips && len; k++) {
            size_t at = g_rand_int_range(r, 0, MIN(len, 256));
            b[at] = (uint8_t)g_rand_int(r);
        }
        (void)parse(b, len, &h, &err);
        qcow2_header_clear(&h);
    }
    g_rand_free(r);
}

/* --- creation, verified by qemu-img --- */

typedef struct {
    Qcow2CreateOptions o;
    const char *compat;
} CreateCase;

static void check_created(const char *img, const CreateCase *c)
{
    g_autofree char *out = NULL;
    char *check[] = { "qemu-img", "check", (char *)img, NULL };
    char *info[] = { "qemu-img", "info", "--output=json", (char *)img,
                     NULL };
    char *io[] = { "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 70k",
                   "-c", "read -P 0x5a 0 70k", (char *)img, NULL };
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *o, *data;
    const Qcow2CreateOptions *co = &c->o;

    g_assert_true(bd_test_run(check, NULL, NULL) == 0);
    g_assert_true(bd_test_run(info, &out, NULL) == 0);
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    o = json_node_get_object(json_parser_get_root(p));
    g_assert_cmpstr(json_object_get_string_member(o, "format"), ==, "qcow2");
    g_assert_cmpint(json_object_get_int_member(o, "virtual-size"), ==,
                    (gint64)co->size);
    g_assert_cmpint(json_object_get_int_member(o, "cluster-size"), ==,
                    co->cluster_size ? co->cluster_size : 65536);
    data = json_object_get_object_member(
        json_object_get_object_member(o, "format-specific"), "data");
    g_assert_cmpstr(json_object_get_string_member(data, "compat"), ==,
                    c->compat);
    g_assert_cmpint(json_object_get_int_member(data, "refcount-bits"), ==,
                    co->refcount_bits ? co->refcount_bits : 16);
    if (co->version != 2) {
        g_assert_cmpint(json_object_get_boolean_member(data,
                                                       "lazy-refcounts"),
                        ==, co->lazy_refcounts);
    }
    if (co->backing_file) {
        g_assert_cmpstr(json_object_get_string_member(o,
                                                      "backing-filename"),
                        ==, co->backing_file);
    }
    if (co->backing_format) {
        g_assert_cmpstr(json_object_get_string_member(
                            o, "backing-filename-format"),
                        ==, co->backing_format);
    }
    if (!co->backing_file && co->size >= 70 * 1024) {
        /* qemu can write to it, and the result is still clean. */
        g_assert_true(bd_test_run(io, NULL, NULL) == 0);
        g_assert_true(bd_test_run(check, NULL, NULL) == 0);
    }
}

static void cleanup_dir(const char *dir)
{
    g_autofree char *sub = g_build_filename(dir, "sub", NULL);
    g_autofree char *raw = g_build_filename(sub, "base.raw", NULL);
    g_autofree char *base = g_build_filename(dir, "base.qcow2", NULL);

    g_unlink(raw);
    g_rmdir(sub);
    g_unlink(base);
    g_rmdir(dir);
}

static void test_create(void)
{
    static const CreateCase cases[] = {
        { { .size = 64 << 20 }, "1.1" },
        { { .size = 1ull << 30, .cluster_size = 512, .refcount_bits = 1 },
          "1.1" },
        { { .size = 100 << 20, .cluster_size = 4096, .refcount_bits = 64,
            .lazy_refcounts = TRUE }, "1.1" },
        { { .size = 16ull << 40, .cluster_size = 2 << 20,
            .refcount_bits = 8 }, "1.1" },
        { { .size = 32 << 20, .version = 2 }, "0.10" },
        { { .size = 32 << 20, .version = 2, .backing_file = "base.qcow2",
            .backing_format = "qcow2" }, "0.10" },
        { { .size = 10 << 20, .cluster_size = 1024, .refcount_bits = 4,
            .backing_file = "sub/base.raw", .backing_format = "raw" },
          "1.1" },
        { { .size = 0 }, "1.1" },
        /* Many refcount blocks and L1 clusters for the metadata. */
        { { .size = 100ull << 30, .cluster_size = 512, .refcount_bits = 64 },
          "1.1" },
    };
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("blockd-qcow2-XXXXXX", &err);
    g_autofree char *img = g_build_filename(dir, "new.qcow2", NULL);
    g_autofree char *tool = g_find_program_in_path("qemu-img");

    g_assert_no_error(err);
    if (!tool || !bd_test_have_program("qemu-io")) {
        g_test_skip("qemu-img/qemu-io not installed");
        g_rmdir(dir);
        return;
    }
    {
        /* The backing files the cases name (qemu-img opens them). */
        g_autofree char *sub = g_build_filename(dir, "sub", NULL);
        g_autofree char *raw = g_build_filename(sub, "base.raw", NULL);
        g_autofree char *base = g_build_filename(dir, "base.qcow2", NULL);
        char *mk[] = { "qemu-img", "create", "-f", "qcow2", base, "32M",
                       NULL };
        g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
        g_assert_true(g_file_set_contents(raw, "", 0, NULL));
        g_assert_cmpint(truncate(raw, 10 << 20), ==, 0);
        g_assert_true(bd_test_run(mk, NULL, NULL) == 0);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *text = NULL;
        g_autoptr(BdNode) file = NULL;
        g_autoptr(BdEntry) entry = NULL;
        g_autoptr(GError) e2 = NULL;

        g_test_message("case %" G_GSIZE_FORMAT, i);
        /* Stale content must not survive creation. */
        g_assert_true(g_file_set_contents(img, "junk junk junk", -1, NULL));
        text = g_strdup_printf("{'driver': <'file'>, 'filename': <'%s'>}",
                               img);
        file = bd_node_open(g_variant_new_parsed(text), &e2);
        g_assert_no_error(e2);
        /* The create job holds write and resize permission on 'file'. */
        entry = bd_entry_new(file, NULL, BD_PERM_CONSISTENT_READ |
                             BD_PERM_WRITE | BD_PERM_RESIZE, BD_PERM_ALL,
                             &e2);
        g_assert_no_error(e2);
        bd_qcow2_create(file, &cases[i].o, &e2);
        g_assert_no_error(e2);
        g_clear_pointer(&entry, bd_entry_free);
        g_clear_pointer(&file, bd_node_unref);
        check_created(img, &cases[i]);
    }
    g_unlink(img);
    cleanup_dir(dir);
}

static void test_create_invalid(void)
{
    static const Qcow2CreateOptions bad[] = {
        { .size = 1 << 20, .cluster_size = 3000 },
        { .size = 1 << 20, .cluster_size = 256 },
        { .size = 1 << 20, .refcount_bits = 128 },
        { .size = 1 << 20, .refcount_bits = 12 },
        { .size = 1 << 20, .version = 2, .refcount_bits = 8 },
        { .size = 1 << 20, .version = 2, .lazy_refcounts = TRUE },
        { .size = 1 << 20, .version = 4 },
        { .size = 1 << 20, .backing_format = "raw" },
        { .size = 1000 },
        { .size = 1ull << 62, .cluster_size = 512 },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) err = NULL;
        /* Refused before any I/O: no file needed. */
        g_assert_false(bd_qcow2_create(NULL, &bad[i], &err));
        g_assert_nonnull(err);
    }
}

/* Compressed writes: whole clusters only (QEMU: -EINVAL otherwise). */
static void test_write_compressed(void)
{
    static const Qcow2CreateOptions o = { .size = 1 << 20 };
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("blockd-qcow2-XXXXXX", &err);
    g_autofree char *img = g_build_filename(dir, "c.qcow2", NULL);
    g_autofree char *text = NULL;
    g_autofree uint8_t *buf = g_malloc(2 * CS), *back = g_malloc(2 * CS);
    char *check[] = { "qemu-img", "check", img, NULL };
    BdNode *node;
    BdEntry *entry;

    g_assert_true(g_file_set_contents(img, "", 0, NULL));
    text = g_strdup_printf("{'driver': <'file'>, 'filename': <'%s'>}", img);
    node = bd_node_open(g_variant_new_parsed(text), &err);
    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, BD_PERM_CONSISTENT_READ |
                         BD_PERM_WRITE | BD_PERM_RESIZE, BD_PERM_ALL, &err);
    g_assert_true(bd_qcow2_create(node, &o, &err));
    bd_entry_free(entry);
    bd_node_unref(node);
    g_free(text);
    text = g_strdup_printf("{'driver': <'qcow2'>, 'file': <{'driver': "
                           "<'file'>, 'filename': <'%s'>}>}", img);
    node = bd_node_open(g_variant_new_parsed(text), &err);
    g_assert_no_error(err);
    entry = bd_entry_new(node, NULL, BD_PERM_CONSISTENT_READ |
                         BD_PERM_WRITE, BD_PERM_ALL, &err);
    g_assert_no_error(err);
    memset(buf, 0x61, 2 * CS);
    g_assert_cmpint(bd_entry_pwrite(entry, 512, CS, buf,
                                    BD_REQ_WRITE_COMPRESSED), ==, -EINVAL);
    g_assert_cmpint(bd_entry_pwrite(entry, CS, 1000, buf,
                                    BD_REQ_WRITE_COMPRESSED), ==, -EINVAL);
    g_assert_cmpint(bd_entry_pwrite(entry, CS, 2 * CS, buf,
                                    BD_REQ_WRITE_COMPRESSED), ==, 0);
    /* Overwriting a compressed cluster frees the old bytes. */
    memset(buf, 0x62, CS);
    g_assert_cmpint(bd_entry_pwrite(entry, CS, CS, buf,
                                    BD_REQ_WRITE_COMPRESSED), ==, 0);
    g_assert_cmpint(bd_entry_pread(entry, CS, 2 * CS, back, 0), ==, 0);
    g_assert_cmpint(back[0], ==, 0x62);
    g_assert_cmpint(back[CS - 1], ==, 0x62);
    g_assert_cmpint(back[CS], ==, 0x61);
    g_assert_cmpint(back[2 * CS - 1], ==, 0x61);
    bd_entry_free(entry);
    bd_node_unref(node);
    if (bd_test_have_program("qemu-img")) {
        g_assert_true(bd_test_run(check, NULL, NULL) == 0);
    }
    g_unlink(img);
    g_rmdir(dir);
}

/* Lock-free table loading: a copy read while the cache changed (write
 * back, discard, fresh table) is refused; a cached copy always wins. */
static void test_cache_generation(void)
{
    Qcow2State s = { .cluster_size = CS, .cluster_bits = 16 };
    Qcow2Cache *c = qcow2_cache_new(&s, 2, 512);
    uint8_t a[512], b[512];
    void *t = NULL;
    uint64_t g0, g1, g2;

    memset(a, 0xaa, sizeof(a));
    memset(b, 0xbb, sizeof(b));
    g_assert_cmpint(qcow2_cache_peek(c, CS, &t, &g0), ==, -ENOENT);
    g_assert_cmpint(qcow2_cache_insert(c, CS, a, g0), ==, 0);
    g_assert_cmpint(qcow2_cache_peek(c, CS, &t, &g1), ==, 0);
    g_assert_cmpint(memcmp(t, a, 512), ==, 0);
    g_assert_cmpuint(g1, ==, g0);
    /* Another copy of a cached table is dropped, whatever its age. */
    g_assert_cmpint(qcow2_cache_insert(c, CS, b, g0 - 1), ==, 0);
    g_assert_cmpint(qcow2_cache_peek(c, CS, &t, &g1), ==, 0);
    g_assert_cmpint(memcmp(t, a, 512), ==, 0);
    /* A discard meanwhile: the copy of 2*CS may be stale. */
    g_assert_cmpint(qcow2_cache_peek(c, 2 * CS, &t, &g1), ==, -ENOENT);
    qcow2_cache_discard(c, 5 * CS);
    g_assert_cmpint(qcow2_cache_insert(c, 2 * CS, b, g1), ==, -EAGAIN);
    g_assert_cmpint(qcow2_cache_peek(c, 2 * CS, &t, &g2), ==, -ENOENT);
    g_assert_cmpuint(g2, !=, g1);
    /* A fresh table meanwhile, too. */
    g_assert_cmpint(qcow2_cache_get(c, 3 * CS, TRUE, &t), ==, 0);
    g_assert_cmpint(qcow2_cache_insert(c, 2 * CS, b, g2), ==, -EAGAIN);
    g_assert_cmpint(qcow2_cache_peek(c, 2 * CS, &t, &g2), ==, -ENOENT);
    /* Unchanged: inserted (evicting a clean entry, no I/O). */
    g_assert_cmpint(qcow2_cache_insert(c, 2 * CS, b, g2), ==, 0);
    g_assert_cmpint(qcow2_cache_peek(c, 2 * CS, &t, &g2), ==, 0);
    g_assert_cmpint(memcmp(t, b, 512), ==, 0);
    qcow2_cache_free(c);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bd_formats_register_all();

    g_test_add_func("/qcow2/header/good", test_header_good);
    g_test_add_func("/qcow2/header/hostile", test_header_hostile);
    g_test_add_func("/qcow2/header/fuzz", test_header_fuzz);
    g_test_add_func("/qcow2/create", test_create);
    g_test_add_func("/qcow2/create/invalid", test_create_invalid);
    g_test_add_func("/qcow2/write-compressed", test_write_compressed);
    g_test_add_func("/qcow2/cache/generation", test_cache_generation);
    return g_test_run();
}
