/* SPDX-License-Identifier: MIT */
/* libFuzzer target: an image of any format but qcow2 (fuzz-qcow2 has
 * its own).  The first byte picks the driver from image_drivers[]
 * below, the rest is the image file (a file in the target's private
 * directory, so that a vmdk descriptor's relative extent names stay
 * inside it), possibly in pieces with holes between (write_image).  The node is opened read-only with no backing file:
 * header, tables, descriptors are parsed and checked; when it opens, a
 * few reads and a block-status walk run, then the node is deleted.
 * Drivers that write at open (vhdx replays its log, qed repairs an
 * image that was not closed cleanly) are opened read-write a second
 * time, written once and flushed.  An image must be refused with an
 * error or work: never a crash, a hang or an allocation without bound.
 *
 * What the target keeps out, and why (none is a parser's business):
 * - vmdk extent names that are absolute or climb with "..": they would
 *   open any file of the machine.  Extents inside the directory are
 *   fine (the image itself, as a flat or sparse extent of its own
 *   descriptor, is a good test).  A vhdx parent locator can still name
 *   any path; it is opened read-only as a backing file.
 * - LUKS PBKDF2 iteration counts above LUKS_MAX_ITERS are lowered to it
 *   before the image is written, unless they are above what the driver
 *   opens at all (2^28 a slot, 2^26 the master key digest: refused
 *   before any PBKDF2 runs, so those stay, and the refusal is fuzzed).
 *   Counts the driver accepts still cost seconds each (2^28 blocks are
 *   34 s of sha256 here, past libFuzzer's 25 s timeout): the time is
 *   bounded by the driver, but the fuzzer is kept from spending it. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "control/input.h"
#include "graph/entry.h"
#include "graph/io.h"
#include "graph/node.h"
#include "tests/fuzz/fuzz-common.h"

enum {
    IMG_RW_PASS = 1 << 0,   /* also open read-write: writes at open */
    IMG_LUKS = 1 << 1,      /* LUKS header: clamp its iteration counts */
    IMG_EXTENTS = 1 << 2,   /* vmdk: extent names must stay in the dir */
};

typedef struct {
    const char *name;       /* the driver, as blockdev-add names it */
    const char *options;    /* more blockdev-add members, or "" */
    unsigned flags;
} ImageDriver;

/* The first input byte is an index into this table.  APPEND ONLY:
 * the seeds in corpus/images/ start with their entry's index, so an
 * entry never moves.  A name that no registered driver has is skipped
 * (the input does nothing), so a driver can be listed before it lands. */
static const ImageDriver image_drivers[] = {
    /* 0 */ { "vdi", "", 0 },
    /* 1 */ { "vpc", "", 0 },
    /* 2 */ { "qed", ", \"backing\": null", IMG_RW_PASS },
    /* 3 */ { "vmdk", ", \"backing\": null", IMG_EXTENTS },
    /* 4 */ { "vhdx", "", IMG_RW_PASS },
    /* 5 */ { "luks", ", \"key-secret\": \"fuzz-secret\"", IMG_LUKS },
    /* --- Drivers being added by other engineers: listed here ahead of
     * their landing (skipped until they register).  Add a format's
     * seeds to make-seeds.py (images_seeds) with its index. --- */
    /* 6 */ { "parallels", "", 0 },
    /* 7 */ { "bochs", "", 0 },
    /* 8 */ { "cloop", "", 0 },
    /* 9 */ { "dmg", "", 0 },
};

/* The virtual disk the harness walks: at most this many bytes of block
 * status from the start, and 64 KiB reads at three places, whatever
 * size the header claims. */
#define WALK_MAX ((uint64_t)256 << 20)
#define READ_MAX 65536

/* LUKS1 header offsets (big endian): the master key digest's PBKDF2
 * iterations, then 8 key slots of 48 bytes (active, iterations, ...). */
#define LUKS_H_MK_ITER 164
#define LUKS_H_SLOTS 208
#define LUKS_SLOT_SIZE 48
#define LUKS_MAX_ITERS 2000
/* Above these the driver refuses the header (LUKS_MAX_SLOT_WORK and
 * LUKS_MAX_MK_ITERS of formats/luks/luks.h, whatever the key size). */
#define LUKS_REFUSED_SLOT_ITERS (1u << 28)
#define LUKS_REFUSED_MK_ITERS (1u << 26)

/* Lower a count above 'max' to it, unless it is above 'refused'. */
static void clamp_be32(uint8_t *p, uint32_t max, uint32_t refused)
{
    uint32_t v = (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3];

    if (v > max && v <= refused) {
        p[0] = max >> 24;
        p[1] = max >> 16;
        p[2] = max >> 8;
        p[3] = max;
    }
}

static void luks_clamp(int fd)
{
    uint8_t h[LUKS_H_SLOTS + 8 * LUKS_SLOT_SIZE];

    if (pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h)) {
        clamp_be32(h + LUKS_H_MK_ITER, LUKS_MAX_ITERS, LUKS_REFUSED_MK_ITERS);
        for (int i = 0; i < 8; i++) {
            clamp_be32(h + LUKS_H_SLOTS + i * LUKS_SLOT_SIZE + 4,
                       LUKS_MAX_ITERS, LUKS_REFUSED_SLOT_ITERS);
        }
        if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
            g_error("fuzz-images: pwrite: %s", g_strerror(errno));
        }
    }
}

/* The image file from the input: pieces of bytes, the first at offset
 * 0, each next one after PIECE_MAGIC and a 32-bit little-endian offset
 * in KiB (below PIECE_MAX_KIB; an offset inside the previous piece
 * means its end); what lies between pieces is a hole.
 * Formats whose regions are megabyte-aligned (vhdx) or whose blocks are
 * megabytes (vdi, vpc) keep their seeds small so; an input without the
 * magic is the file as it is.  Returns FALSE when a piece may not be. */
#define PIECE_MAGIC "BDFZSEEK"
#define PIECE_MAGIC_LEN 8
#define PIECE_MAX_KIB (1u << 20)

typedef struct {
    const uint8_t *data;
    size_t len;
    uint64_t offset;
} Piece;

/* vmdk: an extent name ("...") that is absolute or climbs out of the
 * directory.  Conservative: "/ or .. anywhere in a piece, or a piece
 * that could join its neighbour into one. */
static gboolean piece_escapes(const Piece *p)
{
    return memmem(p->data, p->len, "\"/", 2) ||
           memmem(p->data, p->len, "..", 2) ||
           (p->len && (p->data[0] == '/' || p->data[0] == '.' ||
                       p->data[p->len - 1] == '"' ||
                       p->data[p->len - 1] == '.'));
}

static gboolean write_image(int fd, const ImageDriver *d, const uint8_t *in,
                            size_t size)
{
    Piece p = { in, size, 0 };

    if (ftruncate(fd, 0) < 0) {
        g_error("fuzz-images: ftruncate: %s", g_strerror(errno));
    }
    for (;;) {
        const uint8_t *m = memmem(p.data, p.len, PIECE_MAGIC,
                                  PIECE_MAGIC_LEN);
        const uint8_t *end = p.data + p.len;
        uint32_t kib = 0;

        p.len = m ? (size_t)(m - p.data) : p.len;
        if ((d->flags & IMG_EXTENTS) && piece_escapes(&p)) {
            return FALSE;
        }
        if (pwrite(fd, p.data, p.len, (off_t)p.offset) != (ssize_t)p.len) {
            g_error("fuzz-images: pwrite: %s", g_strerror(errno));
        }
        if (!m) {
            return TRUE;
        }
        m += PIECE_MAGIC_LEN;
        for (int i = 0; i < 4 && m < end; i++) {
            kib |= (uint32_t)*m++ << (8 * i);
        }
        /* Never back over the previous piece: pieces that overlap could
         * join into what piece_escapes() checks each one for. */
        p = (Piece){ m, (size_t)(end - m),
                     MAX((uint64_t)(kib % PIECE_MAX_KIB) << 10,
                         p.offset + p.len) };
        if (ftruncate(fd, (off_t)p.offset) < 0) {
            g_error("fuzz-images: ftruncate: %s", g_strerror(errno));
        }
    }
}

static void exercise(BdNode *node, gboolean write)
{
    g_autoptr(GError) err = NULL;
    uint64_t perm = BD_PERM_CONSISTENT_READ | (write ? BD_PERM_WRITE : 0);
    BdEntry *entry = bd_entry_new(node, "fuzz", perm, BD_PERM_ALL, &err);
    static uint8_t buf[READ_MAX];
    uint64_t len, walk, off = 0;
    int64_t ret;

    if (!entry) {
        return;
    }
    ret = bd_entry_getlength(entry);
    if (ret > 0) {
        len = (uint64_t)ret;
        walk = MIN(len, WALK_MAX);
        uint64_t spots[] = { 0, walk / 2, len - MIN(len, 4096) };

        for (gsize i = 0; i < G_N_ELEMENTS(spots); i++) {
            bd_entry_pread(entry, spots[i], MIN(READ_MAX, len - spots[i]),
                           buf, 0);
        }
        for (int i = 0; i < 16 && off < walk; i++) {
            uint64_t pnum = 0;

            if (bd_entry_block_status(entry, off, walk - off, &pnum) < 0 ||
                pnum == 0) {
                break;
            }
            off += pnum;
        }
        if (write) {
            memset(buf, 0xa5, 4096);
            bd_entry_pwrite(entry, walk / 2, MIN(4096, len - walk / 2),
                            buf, 0);
            bd_entry_flush(entry);
        }
    }
    bd_entry_free(entry);
}

/* Open the image as 'd', exercise it and delete it. */
static void run(const ImageDriver *d, const char *path, gboolean rw)
{
    g_autoptr(JsonNode) reply = NULL;

    reply = bd_fuzz_qmp("{\"execute\": \"blockdev-add\", \"arguments\": "
                        "{\"driver\": \"%s\", \"node-name\": \"img\", "
                        "\"read-only\": %s%s, \"file\": {\"driver\": "
                        "\"file\", \"locking\": \"off\", "
                        "\"filename\": \"%s\"}}}", d->name,
                        rw ? "false" : "true", d->options, path);
    if (g_getenv("FUZZ_IMAGES_DEBUG")) {
        /* Why a seed does not open: FUZZ_IMAGES_DEBUG=1 fuzz-images SEED */
        g_autofree char *text = bd_json_to_string(reply);

        fprintf(stderr, "%s %s: %s\n", d->name, rw ? "rw" : "ro", text);
    }
    if (json_object_has_member(json_node_get_object(reply), "return")) {
        exercise(bd_node_find("img"), rw);
        json_node_unref(bd_fuzz_qmp("{\"execute\": "
                                    "\"query-named-block-nodes\"}"));
        bd_fuzz_qmp_ok("{\"execute\": \"blockdev-del\", \"arguments\": "
                       "{\"node-name\": \"img\"}}");
    }
    bd_fuzz_iterate();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *path;
    const ImageDriver *d;
    int fd;

    bd_fuzz_init();
    if (!path) {
        path = g_build_filename(bd_fuzz_tmpdir(), "img", NULL);
        bd_fuzz_qmp_ok("{\"execute\": \"object-add\", \"arguments\": "
                       "{\"qom-type\": \"secret\", \"id\": \"fuzz-secret\", "
                       "\"data\": \"fuzz\"}}");
    }
    if (size < 1 || data[0] >= G_N_ELEMENTS(image_drivers)) {
        return 0;
    }
    d = &image_drivers[data[0]];
    if (!bd_driver_find(d->name)) {
        return 0;
    }
    /* A private copy (never empty: g_malloc(0) is NULL) to edit. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        g_error("fuzz-images: %s: %s", path, g_strerror(errno));
    }
    if (!write_image(fd, d, data + 1, size - 1)) {
        close(fd);
        return 0;
    }
    if (d->flags & IMG_LUKS) {
        luks_clamp(fd);
    }
    close(fd);
    run(d, path, FALSE);
    if (d->flags & IMG_RW_PASS) {
        run(d, path, TRUE);
    }
    return 0;
}
