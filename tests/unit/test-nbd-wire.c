/* SPDX-License-Identifier: MIT */
/* Unit tests of the NBD request decoder/validator, the errno mapping and
 * the metadata-context query rules (export-nbd/wire.c, meta-context.c),
 * plus a short random-input run of the request parser. */
#include <errno.h>
#include <string.h>

#include "export-nbd/nbd-internal.h"

#define SIZE (1u << 20)

static void encode(uint8_t *hdr, uint32_t magic, uint16_t flags,
                   uint16_t type, uint64_t cookie, uint64_t offset,
                   uint32_t length)
{
    BdNbdRequestWire w = {
        .magic = GUINT32_TO_BE(magic),
        .flags = GUINT16_TO_BE(flags),
        .type = GUINT16_TO_BE(type),
        .cookie = cookie,
        .offset = GUINT64_TO_BE(offset),
        .length = GUINT32_TO_BE(length),
    };
    memcpy(hdr, &w, sizeof(w));
}

static uint32_t check(uint16_t type, uint16_t flags, uint64_t offset,
                      uint32_t length, gboolean ro, gboolean structured)
{
    BdNbdReqLimits lim = {
        .export_size = SIZE,
        .read_only = ro,
        .structured = structured,
        .has_contexts = structured,
    };
    BdNbdRequest req = {
        .flags = flags, .type = type, .offset = offset, .length = length,
    };
    return bd_nbd_request_check(&req, &lim);
}

static void test_decode(void)
{
    uint8_t hdr[28];
    BdNbdRequest req;

    encode(hdr, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE,
           0x1122334455667788ull, 4096, 512);
    g_assert_true(bd_nbd_request_decode(hdr, sizeof(hdr), &req));
    g_assert_cmpuint(req.flags, ==, NBD_CMD_FLAG_FUA);
    g_assert_cmpuint(req.type, ==, NBD_CMD_WRITE);
    g_assert_cmpuint(req.cookie, ==, 0x1122334455667788ull); /* opaque */
    g_assert_cmpuint(req.offset, ==, 4096);
    g_assert_cmpuint(req.length, ==, 512);

    encode(hdr, 0x12560953, 0, NBD_CMD_READ, 1, 0, 512);
    g_assert_false(bd_nbd_request_decode(hdr, sizeof(hdr), &req));
    g_assert_false(bd_nbd_request_decode(hdr, 27, &req));
}

static void test_check_ranges(void)
{
    g_assert_cmpuint(check(NBD_CMD_READ, 0, 0, SIZE, FALSE, TRUE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_READ, 0, SIZE, 0, FALSE, TRUE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_READ, 0, SIZE - 1, 2, FALSE, TRUE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_READ, 0, UINT64_MAX, 2, FALSE, TRUE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_WRITE, 0, SIZE - 1, 2, FALSE, TRUE), ==,
                     NBD_ENOSPC);
    g_assert_cmpuint(check(NBD_CMD_WRITE_ZEROES, 0, SIZE, 1, FALSE, TRUE),
                     ==, NBD_ENOSPC);
    g_assert_cmpuint(check(NBD_CMD_TRIM, 0, SIZE, 1, FALSE, TRUE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_CACHE, 0, SIZE, 1, FALSE, TRUE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_BLOCK_STATUS, 0, SIZE, 1, FALSE, TRUE),
                     ==, NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_BLOCK_STATUS, 0, 0, 0, FALSE, TRUE), ==,
                     NBD_EINVAL);
    /* Payload limit. */
    g_assert_cmpuint(check(NBD_CMD_READ, 0, 0, BD_NBD_MAX_PAYLOAD + 1, FALSE,
                           TRUE), ==, NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_WRITE, 0, 0, BD_NBD_MAX_PAYLOAD + 1, FALSE,
                           TRUE), ==, NBD_EINVAL);
    /* No payload: large effect lengths are only range-checked. */
    g_assert_cmpuint(check(NBD_CMD_TRIM, 0, 0, SIZE, FALSE, TRUE), ==, 0);
}

static void test_check_flags(void)
{
    g_assert_cmpuint(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1, FALSE, TRUE),
                     ==, 0);
    g_assert_cmpuint(check(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1, FALSE,
                           FALSE), ==, NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1, FALSE,
                           FALSE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1, FALSE,
                           TRUE), ==, NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE |
                           NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA, 0, 1,
                           FALSE, TRUE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, 1,
                           FALSE, TRUE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_BLOCK_STATUS, 0, 0, 1, FALSE, FALSE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_READ, 1u << 7, 0, 1, FALSE, TRUE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_FLUSH, 0, 0, 0, FALSE, TRUE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_FLUSH, 0, 1, 0, FALSE, TRUE), ==,
                     NBD_EINVAL);
    g_assert_cmpuint(check(NBD_CMD_DISC, 0xffff, 5, 5, FALSE, TRUE), ==, 0);
    g_assert_cmpuint(check(8, 0, 0, 0, FALSE, TRUE), ==, NBD_EINVAL);
    g_assert_cmpuint(check(0xffff, 0, 0, 0, FALSE, TRUE), ==, NBD_EINVAL);
}

static void test_check_read_only(void)
{
    g_assert_cmpuint(check(NBD_CMD_WRITE, 0, 0, 1, TRUE, TRUE), ==,
                     NBD_EPERM);
    g_assert_cmpuint(check(NBD_CMD_WRITE, 0, SIZE, 1, TRUE, TRUE), ==,
                     NBD_EPERM);
    g_assert_cmpuint(check(NBD_CMD_TRIM, 0, 0, 1, TRUE, TRUE), ==, NBD_EPERM);
    g_assert_cmpuint(check(NBD_CMD_WRITE_ZEROES, 0, 0, 1, TRUE, TRUE), ==,
                     NBD_EPERM);
    g_assert_cmpuint(check(NBD_CMD_READ, 0, 0, 1, TRUE, TRUE), ==, 0);
    g_assert_cmpuint(check(NBD_CMD_FLUSH, 0, 0, 0, TRUE, TRUE), ==, 0);
}

/* QEMU's mapping (nbd/server.c): the protocol's own values pass
 * through, EROFS is NBD_EPERM, EDQUOT/EFBIG are NBD_ENOSPC, and any
 * other errno is NBD_EINVAL.  Positive and negative errno alike. */
static void test_errno(void)
{
    static const struct {
        int err;
        uint32_t nbd;
    } map[] = {
        { 0, NBD_SUCCESS },
        { EPERM, NBD_EPERM }, { EROFS, NBD_EPERM },
        { EIO, NBD_EIO },
        { ENOMEM, NBD_ENOMEM },
        { EINVAL, NBD_EINVAL },
        { ENOSPC, NBD_ENOSPC }, { EDQUOT, NBD_ENOSPC }, { EFBIG, NBD_ENOSPC },
        { EOVERFLOW, NBD_EOVERFLOW },
        { ENOTSUP, NBD_ENOTSUP }, { EOPNOTSUPP, NBD_ENOTSUP },
        { ESHUTDOWN, NBD_ESHUTDOWN },
        /* Not in the protocol: NBD_EINVAL, as QEMU (not NBD_EIO). */
        { EACCES, NBD_EINVAL }, { ENOENT, NBD_EINVAL }, { EBADF, NBD_EINVAL },
        { EAGAIN, NBD_EINVAL }, { ENXIO, NBD_EINVAL }, { ENOTCONN, NBD_EINVAL },
        { ETIMEDOUT, NBD_EINVAL }, { EMFILE, NBD_EINVAL }, { 4095, NBD_EINVAL },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(map); i++) {
        g_test_message("errno %d", map[i].err);
        g_assert_cmpuint(bd_nbd_errno_to_wire(-map[i].err), ==, map[i].nbd);
        g_assert_cmpuint(bd_nbd_errno_to_wire(map[i].err), ==, map[i].nbd);
    }
    /* The wire values are the Linux errno values the protocol chose. */
    g_assert_cmpuint(NBD_EPERM, ==, 1);
    g_assert_cmpuint(NBD_EIO, ==, 5);
    g_assert_cmpuint(NBD_ENOMEM, ==, 12);
    g_assert_cmpuint(NBD_EINVAL, ==, 22);
    g_assert_cmpuint(NBD_ENOSPC, ==, 28);
    g_assert_cmpuint(NBD_EOVERFLOW, ==, 75);
    g_assert_cmpuint(NBD_ENOTSUP, ==, 95);
    g_assert_cmpuint(NBD_ESHUTDOWN, ==, 108);
}

static BdNbdMetaSel query(const char *q, gboolean list, gboolean depth)
{
    BdNbdMetaSel sel = { 0 };
    bd_nbd_meta_query(q, strlen(q), list, depth, NULL, &sel);
    return sel;
}

static void test_meta_queries(void)
{
    BdNbdMetaSel s;

    s = query("base:allocation", FALSE, TRUE);
    g_assert_true(s.base_allocation && !s.allocation_depth);
    s = query("base:", FALSE, TRUE);          /* wildcard: LIST only */
    g_assert_false(s.base_allocation);
    s = query("base:", TRUE, TRUE);
    g_assert_true(s.base_allocation);
    s = query("base:allocationX", TRUE, TRUE);
    g_assert_false(s.base_allocation);
    s = query("qemu:allocation-depth", FALSE, TRUE);
    g_assert_true(s.allocation_depth && !s.base_allocation);
    s = query("qemu:allocation-depth", FALSE, FALSE); /* not enabled */
    g_assert_false(s.allocation_depth);
    s = query("qemu:", FALSE, TRUE);
    g_assert_false(s.allocation_depth);
    s = query("qemu:", TRUE, TRUE);
    g_assert_true(s.allocation_depth && !s.base_allocation);
    s = query("qemu:dirty-bitmap:b0", FALSE, TRUE);   /* none exported */
    g_assert_false(s.allocation_depth || s.base_allocation || s.bitmaps);
    s = query("x-foo:allocation", TRUE, TRUE);
    g_assert_false(s.allocation_depth || s.base_allocation);
    s = query("", TRUE, TRUE);
    g_assert_false(s.allocation_depth || s.base_allocation);
    /* Exported bitmaps: by name, or all of them when listing. */
    {
        const char *const names[] = { "b0", "b1", NULL };
        BdNbdMetaSel b = { 0 };
        bd_nbd_meta_query("qemu:dirty-bitmap:b1", 20, FALSE, TRUE, names, &b);
        g_assert_cmphex(b.bitmaps, ==, 0x2);
        memset(&b, 0, sizeof(b));
        bd_nbd_meta_query("qemu:dirty-bitmap:", 18, FALSE, TRUE, names, &b);
        g_assert_cmphex(b.bitmaps, ==, 0);
        bd_nbd_meta_query("qemu:dirty-bitmap:", 18, TRUE, TRUE, names, &b);
        g_assert_cmphex(b.bitmaps, ==, 0x3);
        memset(&b, 0, sizeof(b));
        bd_nbd_meta_query("qemu:", 5, TRUE, FALSE, names, &b);
        g_assert_cmphex(b.bitmaps, ==, 0x3);
        g_assert_false(b.allocation_depth);
        memset(&b, 0, sizeof(b));
        bd_nbd_meta_query("qemu:dirty-bitmap:b2", 20, FALSE, TRUE, names, &b);
        g_assert_cmphex(b.bitmaps, ==, 0);
    }
    /* Embedded NUL: never equal to a context name. */
    {
        BdNbdMetaSel n = { 0 };
        bd_nbd_meta_query("base:allocation\0x", 17, FALSE, TRUE, NULL, &n);
        g_assert_false(n.base_allocation);
    }
}

/* Random headers: the parser never crashes, and whatever it accepts is
 * within the export for every ranged command. */
static void test_random_requests(void)
{
    GRand *rand = g_rand_new_with_seed(42);
    int i;

    for (i = 0; i < 200000; i++) {
        uint8_t hdr[28];
        BdNbdRequest req;
        BdNbdReqLimits lim = {
            .export_size = g_rand_int_range(rand, 0, 4) == 0 ? UINT64_MAX
                           : g_rand_int(rand),
            .read_only = g_rand_boolean(rand),
            .structured = g_rand_boolean(rand),
            .has_contexts = g_rand_boolean(rand),
        };
        uint32_t err;
        int j;

        for (j = 0; j < 28; j++) {
            hdr[j] = g_rand_int(rand);
        }
        if (g_rand_boolean(rand)) {
            uint32_t m = GUINT32_TO_BE(NBD_REQUEST_MAGIC);
            memcpy(hdr, &m, 4);
            hdr[4] = 0;
            hdr[6] = 0;
            hdr[7] = g_rand_int_range(rand, 0, 10);
        }
        if (!bd_nbd_request_decode(hdr, sizeof(hdr), &req)) {
            continue;
        }
        err = bd_nbd_request_check(&req, &lim);
        if (err == 0 && req.type != NBD_CMD_DISC &&
            req.type != NBD_CMD_FLUSH) {
            g_assert_cmpuint(req.offset, <=, lim.export_size);
            g_assert_cmpuint(req.length, <=, lim.export_size - req.offset);
            g_assert_cmpuint(req.type, <=, NBD_CMD_BLOCK_STATUS);
        }
        if (err == 0 && (req.type == NBD_CMD_READ ||
                         req.type == NBD_CMD_WRITE)) {
            g_assert_cmpuint(req.length, <=, BD_NBD_MAX_PAYLOAD);
        }
        if (err == 0 && lim.read_only) {
            g_assert_true(req.type != NBD_CMD_WRITE &&
                          req.type != NBD_CMD_TRIM &&
                          req.type != NBD_CMD_WRITE_ZEROES);
        }
    }
    g_rand_free(rand);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd-wire/decode", test_decode);
    g_test_add_func("/nbd-wire/check-ranges", test_check_ranges);
    g_test_add_func("/nbd-wire/check-flags", test_check_flags);
    g_test_add_func("/nbd-wire/check-read-only", test_check_read_only);
    g_test_add_func("/nbd-wire/errno", test_errno);
    g_test_add_func("/nbd-wire/meta-queries", test_meta_queries);
    g_test_add_func("/nbd-wire/random-requests", test_random_requests);
    return g_test_run();
}
