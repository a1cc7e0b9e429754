/* SPDX-License-Identifier: MIT */
/* libFuzzer target: a qcow2 image from anywhere.  The bytes are the
 * image file (in a memfd, reached through /proc/self/fd).  blockd opens
 * it read-write with no backing file: header, extensions, L1 and
 * refcount tables, the bitmap directory and the snapshot table are read
 * and checked at open, and a dirty or lazy-refcount image is repaired.
 * When it opens, a few reads, a block-status walk, a write, a flush and
 * the node queries run, then the node is deleted (storing bitmaps and
 * clearing the dirty bit).  An image must be refused with an error or
 * work: never a crash, a hang or an allocation without bound. */
#include <sys/mman.h>
#include <unistd.h>

#include "graph/entry.h"
#include "graph/io.h"
#include "graph/node.h"
#include "tests/fuzz/fuzz-common.h"

static void exercise(BdNode *node)
{
    g_autoptr(GError) err = NULL;
    BdEntry *entry = bd_entry_new(node, "fuzz", BD_PERM_CONSISTENT_READ |
                                  BD_PERM_WRITE, BD_PERM_ALL, &err);
    static uint8_t buf[65536];
    int64_t len;
    uint64_t off = 0;

    if (!entry) {
        return;
    }
    len = bd_entry_getlength(entry);
    if (len > 0) {
        uint64_t spots[] = { 0, (uint64_t)len / 2,
                             (uint64_t)len - MIN((uint64_t)len, 4096) };

        for (gsize i = 0; i < G_N_ELEMENTS(spots); i++) {
            bd_entry_pread(entry, spots[i],
                           MIN(sizeof(buf), (uint64_t)len - spots[i]), buf, 0);
        }
        for (int i = 0; i < 16 && off < (uint64_t)len; i++) {
            uint64_t pnum = 0;

            if (bd_entry_block_status(entry, off, (uint64_t)len - off,
                                      &pnum) < 0 || pnum == 0) {
                break;
            }
            off += pnum;
        }
        memset(buf, 0xa5, 4096);
        bd_entry_pwrite(entry, 0, MIN(4096, (uint64_t)len), buf, 0);
        bd_entry_pwrite_zeroes(entry, (uint64_t)len / 2,
                               MIN(65536, (uint64_t)len / 2), 0);
        bd_entry_flush(entry);
    }
    bd_entry_free(entry);
    json_node_unref(bd_fuzz_qmp("{\"execute\": \"query-named-block-nodes\", "
                                "\"arguments\": {\"flat\": false}}"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(JsonNode) reply = NULL;
    int fd;

    bd_fuzz_init();
    fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        g_error("fuzz-qcow2: memfd: %s", g_strerror(errno));
    }
    reply = bd_fuzz_qmp("{\"execute\": \"blockdev-add\", \"arguments\": "
                        "{\"driver\": \"qcow2\", \"node-name\": \"q\", "
                        "\"backing\": null, \"file\": {\"driver\": \"file\", "
                        "\"locking\": \"off\", "
                        "\"filename\": \"/proc/self/fd/%d\"}}}", fd);
    if (json_object_has_member(json_node_get_object(reply), "return")) {
        exercise(bd_node_find("q"));
        bd_fuzz_qmp_ok("{\"execute\": \"blockdev-del\", \"arguments\": "
                       "{\"node-name\": \"q\"}}");
    }
    bd_fuzz_iterate();
    close(fd);
    return 0;
}
