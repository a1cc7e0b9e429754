/* SPDX-License-Identifier: MIT */
/* Node-level I/O wrappers: the one path every request to a node takes.
 *
 * Thread model: any thread.  Every request that changes data (write,
 * write-zeroes, discard) is entered into the node's request list
 * (node->reqs, graph/reqlist.h) for as long as it runs at the node.
 * One that is not aligned to node->request_alignment is a
 * read-modify-write of the aligned blocks around it: it is serialising
 * over them, so that no other write to those blocks can land between
 * its read and its write (and be overwritten with stale data), and
 * other writes wait for it in turn.  No lock is held across I/O.
 *
 * A node that needs no alignment and whose driver enters no
 * serialising requests of its own can have no conflict: its writes
 * skip the list (most nodes: the list costs nothing where it is not
 * needed).  Both conditions change only while the node is drained.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <errno.h>
#include <string.h>
#include "graph/io.h"
#include "graph/reqlist.h"
#include "graph/bitmap.h"
#include "graph/debug-event.h"
#include "graph/events.h"

/* Zero buffer for write-zeroes fallbacks. */
#define ZERO_CHUNK (1u << 20)

gboolean bd_buffer_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (len == 0) {
        return TRUE;
    }
    /* Test a few bytes first: most buffers are not zero. */
    for (size_t i = 0; i < len && i < 16; i++) {
        if (p[i]) {
            return FALSE;
        }
    }
    /* First 16 zero and every byte equal to the one 16 before it. */
    return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

static inline uint64_t node_size(BdNode *node)
{
    return __atomic_load_n(&node->size, __ATOMIC_ACQUIRE);
}

int64_t bd_node_getlength(BdNode *node)
{
    return (int64_t)node_size(node);
}

static inline gboolean is_aligned(BdNode *node, uint64_t offset,
                                  uint64_t bytes)
{
    uint64_t mask = node->request_alignment - 1;
    return ((offset | bytes) & mask) == 0;
}

/* Whether writes at the node go through its request list (see top). */
static inline gboolean node_tracks_writes(BdNode *node)
{
    return node->request_alignment > 1 || node->drv->serialises_requests;
}

/* Enter a data-changing request into the node's list; an unaligned one
 * is serialising over the aligned blocks it touches (see the top).
 * Returns whether it was entered (bd_req_end then). */
static inline gboolean node_req_begin(BdNode *node, BdReq *req,
                                      uint64_t offset, uint64_t bytes)
{
    uint64_t align = node->request_alignment;

    if (!node_tracks_writes(node)) {
        return FALSE;
    }
    if (align > 1 && !is_aligned(node, offset, bytes)) {
        uint64_t start = offset & ~(align - 1);
        uint64_t end = (offset + bytes + align - 1) & ~(align - 1);
        bd_req_begin(&node->reqs, req, start, end - start, TRUE);
    } else {
        bd_req_begin(&node->reqs, req, offset, bytes, FALSE);
    }
    return TRUE;
}

/* --- read --- */

/* Call the driver's read or write in pieces of at most max_transfer.
 * 'buf' is only read from for writes. */
static int node_rw_split(BdNode *node, uint64_t offset, uint64_t bytes,
                         char *buf, int flags, gboolean write)
{
    const BdDriver *drv = node->drv;
    uint64_t max = node->max_transfer ? node->max_transfer : bytes;

    while (bytes) {
        uint64_t n = MIN(bytes, max);
        int ret = write ? drv->pwrite(node, offset, n, buf, flags)
                        : drv->pread(node, offset, n, buf, flags);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        buf += n;
    }
    return 0;
}

static int node_pread_aligned(BdNode *node, uint64_t offset, uint64_t bytes,
                              void *buf, int flags)
{
    BdChild *filtered;

    if (!node->drv->pread) {
        filtered = bd_node_filtered_child(node);
        return filtered ? bd_node_pread(filtered->node, offset, bytes, buf,
                                        flags) : -ENOTSUP;
    }
    if (flags & ~node->drv->supported_read_flags & BD_REQ_NOWAIT) {
        /* The driver may block: the caller retries where it may. */
        return -EAGAIN;
    }
    return node_rw_split(node, offset, bytes, buf, flags, FALSE);
}

/* Read the aligned span around [offset, offset+bytes) into a bounce
 * buffer and copy the middle out. */
static int node_pread_unaligned(BdNode *node, uint64_t offset,
                                uint64_t bytes, void *buf, int flags)
{
    uint64_t align = node->request_alignment;
    uint64_t start = offset & ~(align - 1);
    uint64_t end = (offset + bytes + align - 1) & ~(align - 1);
    g_autofree void *bounce = NULL;
    int ret;

    if (posix_memalign(&bounce, MAX(align, sizeof(void *)), end - start)) {
        return -ENOMEM;
    }
    ret = node_pread_aligned(node, start, end - start, bounce, flags);
    if (ret == 0) {
        memcpy(buf, (char *)bounce + (offset - start), bytes);
    }
    return ret;
}

static int node_pread_impl(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
                  int flags)
{
    if (bytes == 0) {
        return 0;
    }
    if (offset + bytes < offset) {
        return -EINVAL;
    }
    if (node->request_alignment > 1 && !is_aligned(node, offset, bytes)) {
        return node_pread_unaligned(node, offset, bytes, buf, flags);
    }
    return node_pread_aligned(node, offset, bytes, buf, flags);
}

/* --- write --- */

static int node_check_writable(BdNode *node)
{
    if (node->read_only) {
        return -EPERM;
    }
    if (!(bd_perm_load(&node->cum_perm) &
          (BD_PERM_WRITE | BD_PERM_WRITE_UNCHANGED))) {
        return -EPERM;
    }
    return 0;
}

static int node_pwrite_aligned(BdNode *node, uint64_t offset, uint64_t bytes,
                               const void *buf, int flags)
{
    BdChild *filtered;

    if (!node->drv->pwrite) {
        filtered = bd_node_filtered_child(node);
        return filtered ? bd_node_pwrite(filtered->node, offset, bytes, buf,
                                         flags) : -ENOTSUP;
    }
    /* The driver's pwrite takes const; the split helper never writes. */
    return node_rw_split(node, offset, bytes, (char *)buf, flags, TRUE);
}

/* Read-modify-write of the aligned span.  The caller's request is
 * serialising over it (node_req_begin), so nothing else writes these
 * blocks between the read and the write. */
static int node_pwrite_unaligned(BdNode *node, uint64_t offset,
                                 uint64_t bytes, const void *buf, int flags)
{
    uint64_t align = node->request_alignment;
    uint64_t start = offset & ~(align - 1);
    uint64_t end = (offset + bytes + align - 1) & ~(align - 1);
    g_autofree void *bounce = NULL;
    int ret = 0;

    if (posix_memalign(&bounce, MAX(align, sizeof(void *)), end - start)) {
        return -ENOMEM;
    }
    /* Only the first and last aligned blocks need their old contents. */
    if (offset != start) {
        ret = node_pread_aligned(node, start, align, bounce, 0);
    }
    /* The tail block, unless it is the head block already read. */
    if (ret == 0 && (offset + bytes) != end &&
        !(end - align == start && offset != start)) {
        ret = node_pread_aligned(node, end - align, align,
                                 (char *)bounce + (end - align - start), 0);
    }
    if (ret == 0) {
        memcpy((char *)bounce + (offset - start), buf, bytes);
        ret = node_pwrite_aligned(node, start, end - start, bounce, flags);
    }
    return ret;
}

/* --- write threshold and highest offset (QEMU's write-threshold.c and
 * bdrv_co_write_req_finish) --- */

void bd_node_set_write_threshold(BdNode *node, uint64_t threshold)
{
    __atomic_store_n(&node->write_threshold, threshold, __ATOMIC_RELAXED);
}

uint64_t bd_node_write_threshold(BdNode *node)
{
    return __atomic_load_n(&node->write_threshold, __ATOMIC_RELAXED);
}

uint64_t bd_node_wr_highest_offset(BdNode *node)
{
    return __atomic_load_n(&node->wr_highest_offset, __ATOMIC_RELAXED);
}

/* BLOCK_WRITE_THRESHOLD's data, carried as plain values to the main
 * loop, where the event is built and sent: the request thread shares
 * no GVariant with it. */
typedef struct {
    char *node_name;
    uint64_t amount;
    uint64_t threshold;
} ThresholdEvent;

static gboolean threshold_event_send(gpointer opaque)
{
    ThresholdEvent *ev = opaque;
    GVariantDict d;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "node-name", "s", ev->node_name);
    g_variant_dict_insert(&d, "amount-exceeded", "x", (gint64)ev->amount);
    g_variant_dict_insert(&d, "write-threshold", "x", (gint64)ev->threshold);
    bd_event_emit("BLOCK_WRITE_THRESHOLD", g_variant_dict_end(&d));
    return G_SOURCE_REMOVE;
}

static void threshold_event_free(gpointer opaque)
{
    ThresholdEvent *ev = opaque;

    g_free(ev->node_name);
    g_free(ev);
}

/* Before a write, write zeroes or discard reaches the driver: the first
 * request that ends past the threshold disarms it (compare-and-swap, so
 * that exactly one request fires) and has the event sent. */
static void node_check_write_threshold(BdNode *node, uint64_t offset,
                                       uint64_t bytes)
{
    uint64_t end = offset + bytes;
    uint64_t wtr = __atomic_load_n(&node->write_threshold, __ATOMIC_RELAXED);

    while (wtr != 0 && wtr < end) {
        if (__atomic_compare_exchange_n(&node->write_threshold, &wtr, 0,
                                        FALSE, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            ThresholdEvent *ev = g_new0(ThresholdEvent, 1);

            ev->node_name = g_strdup(node->node_name ? node->node_name : "");
            ev->amount = end - wtr;
            ev->threshold = wtr;
            g_main_context_invoke_full(NULL, G_PRIORITY_DEFAULT,
                                       threshold_event_send, ev,
                                       threshold_event_free);
            return;
        }
    }
}

/* After a write or write zeroes, whatever its result (as QEMU). */
static void node_note_write_end(BdNode *node, uint64_t offset,
                                uint64_t bytes)
{
    uint64_t end = offset + bytes;
    uint64_t cur = __atomic_load_n(&node->wr_highest_offset,
                                   __ATOMIC_RELAXED);

    while (cur < end &&
           !__atomic_compare_exchange_n(&node->wr_highest_offset, &cur, end,
                                        TRUE, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
}

static int node_pwrite_zeroes_impl(BdNode *node, uint64_t offset,
                                   uint64_t bytes, int flags);

static int node_pwrite_impl(BdNode *node, uint64_t offset, uint64_t bytes,
                   const void *buf, int flags)
{
    BdReq req;
    gboolean tracked;
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (offset + bytes < offset) {
        return -EINVAL;
    }
    ret = node_check_writable(node);
    if (ret < 0) {
        return ret;
    }
    if ((flags & BD_REQ_WRITE_COMPRESSED) &&
        !(node->drv->supported_write_flags & BD_REQ_WRITE_COMPRESSED)) {
        return -ENOTSUP;
    }
    if (node->detect_zeroes != BD_DETECT_ZEROES_OFF &&
        bd_buffer_is_zero(buf, bytes)) {
        int zflags = flags & BD_REQ_FUA;
        if (node->detect_zeroes == BD_DETECT_ZEROES_UNMAP) {
            zflags |= BD_REQ_MAY_UNMAP;
        }
        return node_pwrite_zeroes_impl(node, offset, bytes, zflags);
    }
    node_check_write_threshold(node, offset, bytes);
    tracked = node_req_begin(node, &req, offset, bytes);
    if (node->request_alignment > 1 && !is_aligned(node, offset, bytes)) {
        ret = node_pwrite_unaligned(node, offset, bytes, buf, flags);
    } else {
        ret = node_pwrite_aligned(node, offset, bytes, buf, flags);
    }
    node_note_write_end(node, offset, bytes);
    if (tracked) {
        bd_req_end(&node->reqs, &req);
    }
    /* As QEMU: dirty even when the write failed part-way. */
    bd_dirty_bitmaps_record(node, offset, bytes);
    return ret;
}

/* --- zero-copy --- */

static int node_pread_to_fd_impl(BdNode *node, uint64_t offset, uint64_t bytes,
                        BdFdSink *sink, int flags)
{
    const BdDriver *drv = node->drv;
    uint64_t max = node->max_transfer ? node->max_transfer : bytes;
    BdChild *filtered;

    if (offset + bytes < offset) {
        return -EINVAL;
    }
    if (bytes == 0) {
        return bd_fd_sink_begin(sink);
    }
    /* A bounce buffer would be the copy this path saves. */
    if (node->request_alignment > 1 && !is_aligned(node, offset, bytes)) {
        return -ENOTSUP;
    }
    if (!drv->pread) {
        filtered = bd_node_filtered_child(node);
        return filtered ? bd_node_pread_to_fd(filtered->node, offset, bytes,
                                              sink, flags) : -ENOTSUP;
    }
    if (!drv->pread_to_fd) {
        return -ENOTSUP;
    }
    if (flags & ~drv->supported_read_flags & BD_REQ_NOWAIT) {
        return -EAGAIN;
    }
    while (bytes) {
        uint64_t n = MIN(bytes, max);
        int ret = drv->pread_to_fd(node, offset, n, sink, flags);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

/* The checks of bd_node_pwrite; -ENOTSUP where the data must be seen
 * (detect-zeroes) or merged (read-modify-write). */
static int node_check_pwrite_from_fd(BdNode *node, uint64_t offset,
                                     uint64_t bytes, int flags)
{
    int ret = node_check_writable(node);

    if (ret < 0) {
        return ret;
    }
    if (flags & BD_REQ_WRITE_COMPRESSED) {
        return -ENOTSUP;
    }
    if (node->detect_zeroes != BD_DETECT_ZEROES_OFF) {
        return -ENOTSUP;
    }
    if (node->request_alignment > 1 && !is_aligned(node, offset, bytes)) {
        return -ENOTSUP;
    }
    return 0;
}

static int node_pwrite_from_fd_impl(BdNode *node, uint64_t offset, uint64_t bytes,
                           int in_fd, int flags)
{
    const BdDriver *drv = node->drv;
    uint64_t max = node->max_transfer ? node->max_transfer : bytes;
    BdChild *filtered = NULL;
    BdReq req;
    gboolean tracked;
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (offset + bytes < offset) {
        return -EINVAL;
    }
    ret = node_check_pwrite_from_fd(node, offset, bytes, flags);
    if (ret < 0) {
        return ret;
    }
    if (!drv->pwrite) {
        filtered = bd_node_filtered_child(node);
        if (!filtered) {
            return -ENOTSUP;
        }
    } else if (!drv->pwrite_from_fd) {
        return -ENOTSUP;
    }
    node_check_write_threshold(node, offset, bytes);
    tracked = node_req_begin(node, &req, offset, bytes);
    if (!drv->pwrite) {
        ret = bd_node_pwrite_from_fd(filtered->node, offset, bytes, in_fd,
                                     flags);
    }
    for (uint64_t done = 0; drv->pwrite && ret == 0 && done < bytes;
         done += max) {
        ret = drv->pwrite_from_fd(node, offset + done, MIN(bytes - done, max),
                                  in_fd, flags);
        if (ret == -ENOTSUP && done > 0) {
            ret = -EIO;     /* refused half-way: the pipe is partly read */
        }
    }
    if (tracked) {
        bd_req_end(&node->reqs, &req);
    }
    /* As bd_node_pwrite; a refusal wrote nothing, the fallback records. */
    if (ret != -ENOTSUP) {
        node_note_write_end(node, offset, bytes);
        bd_dirty_bitmaps_record(node, offset, bytes);
    }
    return ret;
}

/* --- copy offload --- */

#define COPY_CHAIN_MAX 8

/* The host fd and offset where src's data at 'offset' lives, for *n
 * bytes at most, or -1 when it is not plain data in a host file.  The
 * walk asks each driver's block_status itself, so that it passes only
 * through drivers that said their reads pass through unchanged
 * (copy_range_passthrough); a filter such as blkdebug, which may fail
 * reads on purpose, ends it. */
static int copy_source_fd(BdNode *node, uint64_t offset, uint64_t *n,
                          uint64_t *fd_offset)
{
    for (int depth = 0; depth < COPY_CHAIN_MAX; depth++) {
        BdNode *file = NULL;
        uint64_t map = 0, pnum = 0;
        int st;

        if (!node->drv->block_status || offset >= node_size(node)) {
            return -1;
        }
        *n = MIN(*n, node_size(node) - offset);
        st = node->drv->block_status(node, offset, *n, &pnum, &map, &file);
        if (st < 0 || pnum == 0 || !file) {
            return -1;
        }
        *n = MIN(*n, pnum);
        if (st & BD_BLOCK_RAW) {
            if (!node->drv->copy_range_passthrough) {
                return -1;
            }
        } else if (!(st & BD_BLOCK_OFFSET_VALID) || (st & BD_BLOCK_ZERO) ||
                   !(st & BD_BLOCK_DATA)) {
            return -1;
        } else if (file == node) {
            /* The host file itself. */
            *fd_offset = map;
            return node->drv->host_fd ? node->drv->host_fd(node) : -1;
        }
        /* A pass-through, or a format's data in its file child: the
         * child must say in turn where (and that) it is. */
        node = file;
        offset = map;
    }
    return -1;
}

static gboolean kernel_cannot(int64_t ret)
{
    return ret == -EXDEV || ret == -EOPNOTSUPP || ret == -ENOTSUP ||
           ret == -EINVAL || ret == -ENOSYS || ret == -EBADF ||
           ret == -ETXTBSY || ret == -EPERM;
}

int64_t bd_node_copy_range_from_fd(BdNode *dst, uint64_t offset,
                                   uint64_t bytes, int fd,
                                   uint64_t fd_offset)
{
    BdReq req;
    gboolean tracked;
    int64_t ret;

    if (bytes == 0 || offset + bytes < offset || fd < 0 ||
        !dst->drv->copy_range_from ||
        node_check_writable(dst) < 0 ||
        dst->detect_zeroes != BD_DETECT_ZEROES_OFF ||
        !is_aligned(dst, offset, bytes)) {
        /* Past the end is the driver's call, as for writes (a file
         * grows, a format allocates at its file's end). */
        return -ENOTSUP;
    }
    node_check_write_threshold(dst, offset, bytes);
    tracked = node_req_begin(dst, &req, offset, bytes);
    ret = dst->drv->copy_range_from(dst, offset, bytes, fd, fd_offset);
    if (tracked) {
        bd_req_end(&dst->reqs, &req);
    }
    if (ret > 0) {
        node_note_write_end(dst, offset, (uint64_t)ret);
        bd_dirty_bitmaps_record(dst, offset, (uint64_t)ret);
    }
    if (ret == 0 || kernel_cannot(ret)) {
        return -ENOTSUP;
    }
    return ret;
}

int64_t bd_node_copy_range(BdNode *src, BdNode *dst, uint64_t offset,
                           uint64_t bytes)
{
    uint64_t fd_offset = 0;
    int fd;

    if (bytes == 0 || offset + bytes < offset) {
        return -ENOTSUP;
    }
    fd = copy_source_fd(src, offset, &bytes, &fd_offset);
    if (fd < 0) {
        return -ENOTSUP;
    }
    return bd_node_copy_range_from_fd(dst, offset, bytes, fd, fd_offset);
}

/* --- write zeroes, discard --- */

static int node_write_zero_buffers(BdNode *node, uint64_t offset,
                                   uint64_t bytes, int flags)
{
    g_autofree void *zeroes = NULL;
    size_t chunk = MIN(bytes, ZERO_CHUNK);
    size_t align = MAX(node->request_alignment, sizeof(void *));

    if (posix_memalign(&zeroes, align, chunk)) {
        return -ENOMEM;
    }
    memset(zeroes, 0, chunk);
    while (bytes) {
        uint64_t n = MIN(bytes, chunk);
        int ret = node->request_alignment > 1 && !is_aligned(node, offset, n)
                  ? node_pwrite_unaligned(node, offset, n, zeroes, flags)
                  : node_pwrite_aligned(node, offset, n, zeroes, flags);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int node_pwrite_zeroes_impl(BdNode *node, uint64_t offset, uint64_t bytes,
                          int flags)
{
    const BdDriver *drv = node->drv;
    BdChild *filtered;
    BdReq req;
    gboolean tracked;
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (offset + bytes < offset) {
        return -EINVAL;
    }
    ret = node_check_writable(node);
    if (ret < 0) {
        return ret;
    }
    if (!node->discard_unmap) {
        flags &= ~BD_REQ_MAY_UNMAP;
    }
    node_check_write_threshold(node, offset, bytes);
    /* Unaligned, the fallback below is a read-modify-write. */
    tracked = node_req_begin(node, &req, offset, bytes);
    if (drv->pwrite_zeroes) {
        ret = drv->pwrite_zeroes(node, offset, bytes, flags);
    } else if (!drv->pwrite && (filtered = bd_node_filtered_child(node))) {
        ret = bd_node_pwrite_zeroes(filtered->node, offset, bytes, flags);
        /* The child fell back to buffers already where it had to. */
        flags |= BD_REQ_NO_FALLBACK;
    } else {
        ret = -ENOTSUP;
    }
    if (ret == -ENOTSUP && !(flags & BD_REQ_NO_FALLBACK)) {
        ret = node_write_zero_buffers(node, offset, bytes,
                                      flags & BD_REQ_FUA);
    }
    if (tracked) {
        bd_req_end(&node->reqs, &req);
    }
    if (ret != -ENOTSUP) {
        node_note_write_end(node, offset, bytes);
        bd_dirty_bitmaps_record(node, offset, bytes);
    }
    return ret;
}

static int node_pdiscard_impl(BdNode *node, uint64_t offset, uint64_t bytes)
{
    const BdDriver *drv = node->drv;
    BdChild *filtered;
    BdReq req;
    gboolean tracked = node_tracks_writes(node);
    int ret;

    if (offset + bytes < offset) {
        return -EINVAL;
    }
    ret = node_check_writable(node);
    if (ret < 0 || bytes == 0 || !node->discard_unmap) {
        /* Discard is advisory: without discard=unmap it does nothing. */
        return ret;
    }
    node_check_write_threshold(node, offset, bytes);
    /* Never a read-modify-write: not serialising even when unaligned. */
    if (tracked) {
        bd_req_begin(&node->reqs, &req, offset, bytes, FALSE);
    }
    if (drv->pdiscard) {
        ret = drv->pdiscard(node, offset, bytes);
    } else if ((filtered = bd_node_filtered_child(node))) {
        ret = bd_node_pdiscard(filtered->node, offset, bytes);
    } else {
        ret = 0;
    }
    if (tracked) {
        bd_req_end(&node->reqs, &req);
    }
    bd_dirty_bitmaps_record(node, offset, bytes);
    return ret == -ENOTSUP ? 0 : ret;
}

/* --- flush, truncate --- */

static int node_flush_impl(BdNode *node)
{
    int ret = 0;

    /* As QEMU's bdrv_co_flush: announced on the primary child (blkdebug). */
    if (!node->read_only) {
        bd_debug_event(bd_debug_primary_child(node), BD_DEBUG_EVENT_FLUSH_TO_OS);
        if (!node->cache_no_flush) {
            bd_debug_event(bd_debug_primary_child(node), BD_DEBUG_EVENT_FLUSH_TO_DISK);
        }
    }
    /* The node's own cached state first, then everything below it. */
    if (node->drv && node->drv->flush && !node->cache_no_flush) {
        ret = node->drv->flush(node);
    }
    for (guint i = 0; ret == 0 && i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (bd_perm_load(&c->perm) &
            (BD_PERM_WRITE | BD_PERM_WRITE_UNCHANGED)) {
            ret = bd_node_flush(c->node);
        }
    }
    return ret;
}

int bd_node_truncate(BdNode *node, uint64_t size)
{
    int ret;

    if (node->read_only) {
        return -EPERM;
    }
    if (!node->drv->truncate) {
        return -ENOTSUP;
    }
    ret = node->drv->truncate(node, size);
    if (ret == 0) {
        bd_dirty_bitmaps_truncate(node, size);
    }
    return ret;
}

/* --- the snapshot-access API --- */

int bd_node_pread_snapshot(BdNode *node, uint64_t offset, uint64_t bytes,
                           void *buf)
{
    if (!node->drv->pread_snapshot) {
        return -ENOTSUP;
    }
    if (offset + bytes < offset || offset + bytes > node_size(node)) {
        return -EINVAL;
    }
    return bytes ? node->drv->pread_snapshot(node, offset, bytes, buf) : 0;
}

int bd_node_block_status_snapshot(BdNode *node, uint64_t offset,
                                  uint64_t bytes, uint64_t *pnum,
                                  uint64_t *map, BdNode **file)
{
    uint64_t size = node_size(node);

    if (!node->drv->block_status_snapshot) {
        return -ENOTSUP;
    }
    if (offset >= size) {
        *pnum = 0;
        return BD_BLOCK_EOF;
    }
    return node->drv->block_status_snapshot(node, offset,
                                            MIN(bytes, size - offset), pnum,
                                            map, file);
}

int bd_node_pdiscard_snapshot(BdNode *node, uint64_t offset,
                              uint64_t bytes)
{
    if (!node->drv->pdiscard_snapshot) {
        return -ENOTSUP;
    }
    if (offset + bytes < offset || offset + bytes > node_size(node)) {
        return -EINVAL;
    }
    return bytes ? node->drv->pdiscard_snapshot(node, offset, bytes) : 0;
}

/* --- block status --- */

/* QEMU's supports_backing: the driver takes a 'backing' option. */
static gboolean driver_supports_backing(BdNode *node)
{
    for (const BdSchemaField *f = node->drv->options; f && f->name; f++) {
        if (strcmp(f->name, "backing") == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

int bd_node_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                         uint64_t *pnum, uint64_t *map, BdNode **file)
{
    const BdDriver *drv = node->drv;
    uint64_t size = node_size(node);
    uint64_t local_map = 0;
    BdNode *local_file = NULL;
    BdChild *filtered;
    int ret;

    if (offset >= size) {
        *pnum = 0;
        return BD_BLOCK_EOF;
    }
    bytes = MIN(bytes, size - offset);
    if (!drv->block_status) {
        filtered = bd_node_filtered_child(node);
        if (filtered) {
            return bd_node_block_status(filtered->node, offset, bytes, pnum,
                                        map, file);
        }
        *pnum = bytes;
        ret = BD_BLOCK_DATA | BD_BLOCK_ALLOCATED;
        if (file) {
            *file = NULL;
        }
        return offset + bytes == size ? ret | BD_BLOCK_EOF : ret;
    }

    ret = drv->block_status(node, offset, bytes, pnum, &local_map,
                            &local_file);
    if (ret < 0) {
        return ret;
    }
    *pnum = MIN(MAX(*pnum, 1), bytes);
    if (ret & BD_BLOCK_RAW) {
        /* The driver says: the data lives as is in local_file. */
        uint64_t n = *pnum;
        if (!local_file) {
            return -EIO;
        }
        ret = bd_node_block_status(local_file, local_map, n, pnum, map,
                                   file);
        if (ret < 0) {
            return ret;
        }
        ret &= ~BD_BLOCK_EOF;
    } else {
        if ((ret & BD_BLOCK_OFFSET_VALID) && local_file &&
            local_file != node && !(ret & BD_BLOCK_ZERO)) {
            /* Data mapped onto a hole of the file below reads as zero.
             * The answer covers what the file said about its first run
             * only, so that a run of data followed by a hole there (a
             * sparse flat extent, a raw offset) is not all data. */
            uint64_t n = 0;
            int ret2 = bd_node_block_status(local_file, local_map, *pnum,
                                            &n, NULL, NULL);
            /* Unlike QEMU, nothing is concluded past the file's end: a
             * filter's length may be behind its file's (see
             * test_reopen_live filter_over_grown_file). */
            if (ret2 >= 0 && n > 0) {
                *pnum = MIN(*pnum, n);
                ret |= ret2 & BD_BLOCK_ZERO;
            }
        }
        if (map) {
            *map = local_map;
        }
        if (file) {
            *file = local_file;
        }
    }
    if (ret & (BD_BLOCK_DATA | BD_BLOCK_ZERO)) {
        ret |= BD_BLOCK_ALLOCATED;
    } else if (driver_supports_backing(node)) {
        /* QEMU's rule: unallocated in an image that could have a
         * backing file reads as zeroes when it has none, or past its
         * end.  A protocol's hole (an NBD server's, a dirty extent
         * under x-dirty-bitmap) says nothing about zeroes. */
        BdNode *cow = bd_node_backing(node);
        if (!cow || (int64_t)offset >= bd_node_getlength(cow)) {
            ret |= BD_BLOCK_ZERO;
        }
    }
    if (offset + *pnum == size) {
        ret |= BD_BLOCK_EOF;
    }
    return ret;
}

int bd_node_block_status_above(BdNode *node, uint64_t offset,
                               uint64_t bytes, uint64_t *pnum, int *depth)
{
    BdNode *cur = node;
    int level = 1;

    for (;;) {
        uint64_t n = 0;
        BdNode *backing;
        int ret = bd_node_block_status(cur, offset, bytes, &n, NULL, NULL);

        if (ret < 0) {
            return ret;
        }
        if (cur != node && (ret & BD_BLOCK_EOF) && n == 0) {
            /* Past the end of a shorter backing node: zeroes. */
            *pnum = bytes;
            if (depth) {
                *depth = 0;
            }
            return BD_BLOCK_ZERO;
        }
        /* Below a filter (throttle, a job's filter) the chain goes on
         * through its filtered child, as QEMU's filter-or-COW walk. */
        backing = bd_node_backing(cur);
        if (!backing && bd_node_filtered_child(cur)) {
            backing = bd_node_filtered_child(cur)->node;
        }
        if ((ret & BD_BLOCK_ALLOCATED) || !backing) {
            *pnum = n;
            if (depth) {
                *depth = (ret & BD_BLOCK_ALLOCATED) ? level : 0;
            }
            return cur == node ? ret : ret & ~BD_BLOCK_EOF;
        }
        bytes = n;
        cur = backing;
        level++;
    }
}

gboolean bd_node_reads_own_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, uint64_t *pnum)
{
    uint64_t n = 0;
    int ret = bd_node_block_status(node, offset, bytes, &n, NULL, NULL);

    *pnum = MIN(n, bytes);
    if (ret < 0 || n == 0 || !(ret & BD_BLOCK_ZERO)) {
        return FALSE;
    }
    /* Unallocated here and something below: what reads as zeroes now
     * is that node's data, which may change (a fleecing target over
     * its source). */
    return (ret & BD_BLOCK_ALLOCATED) ||
           (!bd_node_backing(node) && !bd_node_filtered_child(node));
}

/* --- per-node accounting (graph/stats.h) ---
 *
 * Each public entry above is counted at the node it is called on: a
 * request that passes through a filter and a format to the protocol
 * node is counted once at each of them.  The internal paths (an
 * unaligned read's bounce, a write that detect-zeroes turns into write
 * zeroes) stay one request.  -EAGAIN and -ENOTSUP mean "not done here,
 * take another way" and are not counted (graph/stats.c). */

int bd_node_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
                  int flags)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_pread_impl(node, offset, bytes, buf, flags);

    bd_io_stats_end(&node->stats, BD_ACCT_READ, bytes, start, ret);
    return ret;
}

int bd_node_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                   const void *buf, int flags)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_pwrite_impl(node, offset, bytes, buf, flags);

    bd_io_stats_end(&node->stats, BD_ACCT_WRITE, bytes, start, ret);
    return ret;
}

int bd_node_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                        BdFdSink *sink, int flags)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_pread_to_fd_impl(node, offset, bytes, sink, flags);

    bd_io_stats_end(&node->stats, BD_ACCT_READ, bytes, start, ret);
    return ret;
}

int bd_node_pwrite_from_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           int in_fd, int flags)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_pwrite_from_fd_impl(node, offset, bytes, in_fd, flags);

    bd_io_stats_end(&node->stats, BD_ACCT_WRITE, bytes, start, ret);
    return ret;
}

int bd_node_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                          int flags)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_pwrite_zeroes_impl(node, offset, bytes, flags);

    bd_io_stats_end(&node->stats, BD_ACCT_ZERO, bytes, start, ret);
    return ret;
}

int bd_node_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_pdiscard_impl(node, offset, bytes);

    bd_io_stats_end(&node->stats, BD_ACCT_UNMAP, bytes, start, ret);
    return ret;
}

int bd_node_flush(BdNode *node)
{
    int64_t start = bd_io_stats_begin(&node->stats);
    int ret = node_flush_impl(node);

    bd_io_stats_end(&node->stats, BD_ACCT_FLUSH, 0, start, ret);
    return ret;
}
