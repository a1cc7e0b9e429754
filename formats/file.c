/* SPDX-License-Identifier: MIT */
/* The 'file' protocol driver: a regular file or block device via pread/pwrite.
 *
 * Thread model: open/close and the permission callbacks run on the main
 * thread.  The data callbacks run on any thread, concurrently: they use
 * only positional syscalls on the shared fd.  'size_lock' serializes
 * updates of node->size after a write past the end; the fast-path
 * capability flags are plain ints read and cleared atomically.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"
#include "formats/drivers.h"
#include "formats/file-lock.h"
#include "formats/file-create.h"

#define MAX_ALIGN      4096u
#define ZERO_BUF_SIZE  (1u << 20)

typedef struct {
    int fd;
    gboolean is_blk;        /* a block device: fixed size, no growth */
    gboolean direct;        /* opened with O_DIRECT */
    size_t buf_align;       /* memory alignment O_DIRECT needs */
    uint32_t req_align;     /* request alignment O_DIRECT needs */
    int has_punch;          /* atomic: FALLOC_FL_PUNCH_HOLE may work */
    int has_zero_range;     /* atomic: FALLOC_FL_ZERO_RANGE may work */
    BdMutex size_lock;       /* protects growing node->size */
    BdFileLock lock;
    /* The fd whose open file description holds the image locks: the
     * one of the first open.  A reopen with other flags gets a new data
     * fd but keeps this one, so the locks never lapse. */
    int lock_fd;
    /* query-blockstats' driver-specific counters (QEMU's file-posix
     * BlockStatsSpecificFile): discards that reached the file. */
    uint64_t discard_nb_ok, discard_nb_failed, discard_bytes_ok;
} FileState;

/* --- schema (QAPI BlockdevOptionsFile) --- */

typedef enum { ON_OFF_AUTO_ON, ON_OFF_AUTO_OFF, ON_OFF_AUTO_AUTO } OnOffAuto;

static const char *const on_off_auto_values[] = {
    [ON_OFF_AUTO_ON] = "on",
    [ON_OFF_AUTO_OFF] = "off",
    [ON_OFF_AUTO_AUTO] = "auto",
    NULL };
static const BdSchemaType on_off_auto_type = {
    .name = "OnOffAuto", .kind = BD_SCHEMA_ENUM,
    .enum_values = on_off_auto_values };

typedef enum { FILE_AIO_THREADS, FILE_AIO_NATIVE, FILE_AIO_IO_URING } FileAio;

static const char *const aio_values[] = {
    [FILE_AIO_THREADS] = "threads",
    [FILE_AIO_NATIVE] = "native",
    [FILE_AIO_IO_URING] = "io_uring",
    NULL };
static const BdSchemaType aio_type = {
    .name = "BlockdevAioOptions", .kind = BD_SCHEMA_ENUM,
    .enum_values = aio_values };

typedef struct {
    const char *filename;
    OnOffAuto locking;
    FileAio aio;
} FileOptions;

/* pr-manager, aio-max-batch, drop-cache, x-check-cache-dropped: accepted
 * for compatibility; synchronous I/O has no use for them. */
static const BdSchemaField file_options[] = {
    { "filename", &bd_schema_str, FALSE, BD_AT(FileOptions, filename),
      .flags = BD_FIELD_STRONG },
    { "pr-manager", &bd_schema_str, TRUE, .flags = BD_FIELD_IGNORED },
    { "locking", &on_off_auto_type, TRUE, BD_AT(FileOptions, locking),
      .def.i = ON_OFF_AUTO_AUTO },
    { "aio", &aio_type, TRUE, BD_AT(FileOptions, aio),
      .def.i = FILE_AIO_THREADS },
    { "aio-max-batch", &bd_schema_int, TRUE, .flags = BD_FIELD_IGNORED },
    { "drop-cache", &bd_schema_bool, TRUE,
      .flags = BD_FIELD_IGNORED | BD_FIELD_MUTABLE | BD_FIELD_NO_RESET },
    { "x-check-cache-dropped", &bd_schema_bool, TRUE,
      .flags = BD_FIELD_IGNORED | BD_FIELD_MUTABLE },
    { NULL },
};

/* --- helpers --- */

static int64_t file_current_size(FileState *s)
{
    struct stat st;

    if (s->is_blk) {
        uint64_t bytes;
        if (ioctl(s->fd, BLKGETSIZE64, &bytes) < 0) {
            return -errno;
        }
        return (int64_t)bytes;
    }
    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return st.st_size;
}

/* The node's size for a file of 'bytes': QEMU counts a node's length in
 * 512-byte sectors, so a file of unaligned length shows (to queries,
 * exports and the formats above) as the next multiple of 512, its tail
 * reading as zeroes; writing there extends the file. */
static uint64_t file_node_size(uint64_t bytes)
{
    return (bytes + 511) & ~(uint64_t)511;
}

/* After a request that may have grown the file up to 'end'. */
static void file_note_end(BdNode *node, FileState *s, uint64_t end)
{
    if (s->is_blk || end <= __atomic_load_n(&node->size, __ATOMIC_ACQUIRE)) {
        return;
    }
    bd_mutex_lock(&s->size_lock);
    if (end > node->size) {
        bd_node_set_size(node, file_node_size(end));
    }
    bd_mutex_unlock(&s->size_lock);
}

static void *file_alloc_aligned(FileState *s, size_t len)
{
    void *p = NULL;

    if (posix_memalign(&p, MAX(s->buf_align, sizeof(void *)), len) != 0) {
        return NULL;
    }
    return p;
}

static gboolean file_buf_aligned(FileState *s, const void *buf)
{
    return !s->direct || ((uintptr_t)buf & (s->buf_align - 1)) == 0;
}

/* Full positional read; the part beyond EOF reads as zeroes.  With
 * RWF_NOWAIT (BD_REQ_NOWAIT), -EAGAIN where the page cache misses. */
static int file_do_pread(int fd, uint64_t offset, uint64_t bytes, char *buf,
                         int rwflags)
{
    while (bytes > 0) {
        struct iovec iov = {
            .iov_base = buf,
            .iov_len = MIN(bytes, (uint64_t)SSIZE_MAX),
        };
        ssize_t n = rwflags ? preadv2(fd, &iov, 1, offset, rwflags)
                            : pread(fd, buf, iov.iov_len, offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EOPNOTSUPP) {
                return -EAGAIN;    /* no RWF_NOWAIT here: may block */
            }
            return -errno;
        }
        if (n == 0) {
            memset(buf, 0, bytes);
            break;
        }
        buf += n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_do_pwrite(int fd, uint64_t offset, uint64_t bytes,
                          const char *buf)
{
    while (bytes > 0) {
        ssize_t n = pwrite(fd, buf, MIN(bytes, (uint64_t)SSIZE_MAX), offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return -ENOSPC;
        }
        buf += n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_sync(BdNode *node, FileState *s)
{
    if (node->cache_no_flush) {
        return 0;
    }
    while (fdatasync(s->fd) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* --- data path --- */

static int file_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                      void *buf, int flags)
{
    FileState *s = node->opaque;
    g_autofree char *bounce = NULL;
    int rwflags = (flags & BD_REQ_NOWAIT) ? RWF_NOWAIT : 0;
    int ret;

    if (file_buf_aligned(s, buf)) {
        return file_do_pread(s->fd, offset, bytes, buf, rwflags);
    }
    bounce = file_alloc_aligned(s, bytes);
    if (!bounce) {
        return -ENOMEM;
    }
    ret = file_do_pread(s->fd, offset, bytes, bounce, rwflags);
    if (ret == 0) {
        memcpy(buf, bounce, bytes);
    }
    return ret;
}

static int file_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                       const void *buf, int flags)
{
    FileState *s = node->opaque;
    g_autofree char *bounce = NULL;
    int ret;

    if (!file_buf_aligned(s, buf)) {
        bounce = file_alloc_aligned(s, bytes);
        if (!bounce) {
            return -ENOMEM;
        }
        memcpy(bounce, buf, bytes);
        buf = bounce;
    }
    ret = file_do_pwrite(s->fd, offset, bytes, buf);
    if (ret < 0) {
        return ret;
    }
    file_note_end(node, s, offset + bytes);
    return (flags & BD_REQ_FUA) ? file_sync(node, s) : 0;
}

/* --- zero-copy: sendfile to a socket or pipe, splice from a pipe --- */

/* Zeroes for the part of a read beyond the end of the file. */
static int file_send_zeroes(int fd, uint64_t bytes)
{
    static const char zeroes[4096];

    while (bytes > 0) {
        ssize_t n = send(fd, zeroes, MIN(bytes, sizeof(zeroes)),
                         MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) {
            n = write(fd, zeroes, MIN(bytes, sizeof(zeroes)));
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        bytes -= n;
    }
    return 0;
}

/* O_DIRECT would need aligned pages in the pipe: not worth it. */
static int file_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                            BdFdSink *sink, int flags)
{
    FileState *s = node->opaque;
    off_t pos = offset;
    int ret;

    if (s->direct) {
        return -ENOTSUP;
    }
    if (flags & BD_REQ_NOWAIT) {
        return -EAGAIN;    /* sendfile has no RWF_NOWAIT */
    }
    ret = bd_fd_sink_begin(sink);
    if (ret < 0) {
        return ret;
    }
    while (bytes > 0) {
        ssize_t n = sendfile(sink->fd, s->fd, &pos, MIN(bytes, 1u << 30));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            return file_send_zeroes(sink->fd, bytes);   /* EOF */
        }
        bytes -= n;
    }
    return 0;
}

static int file_pwrite_from_fd(BdNode *node, uint64_t offset,
                               uint64_t bytes, int in_fd, int flags)
{
    FileState *s = node->opaque;
    loff_t pos = offset;
    uint64_t left = bytes;

    if (s->direct) {
        return -ENOTSUP;
    }
    while (left > 0) {
        ssize_t n = splice(in_fd, NULL, s->fd, &pos, MIN(left, 1u << 30),
                           SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (left == bytes && (errno == EINVAL || errno == ENOSYS)) {
                return -ENOTSUP;  /* e.g. a file system without splice */
            }
            return -errno;
        }
        if (n == 0) {
            return -EIO;          /* the pipe ran dry: a caller's bug */
        }
        left -= n;
    }
    file_note_end(node, s, offset + bytes);
    return (flags & BD_REQ_FUA) ? file_sync(node, s) : 0;
}

/* --- copy offload (see BdDriver.copy_range_from) --- */

static int file_host_fd(BdNode *node)
{
    FileState *s = node->opaque;

    /* Block devices: copy_file_range wants regular files. */
    return s->is_blk ? -1 : s->fd;
}

static int64_t file_copy_range_from(BdNode *node, uint64_t offset,
                                    uint64_t bytes, int src_fd,
                                    uint64_t src_offset)
{
    FileState *s = node->opaque;
    loff_t in = (loff_t)src_offset, out = (loff_t)offset;
    ssize_t n;

    if (s->is_blk) {
        return -EOPNOTSUPP;
    }
    do {
        n = copy_file_range(src_fd, &in, s->fd, &out,
                            MIN(bytes, (uint64_t)SSIZE_MAX), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    if (n > 0) {
        file_note_end(node, s, offset + (uint64_t)n);
    }
    return n;
}

static int file_fallocate(FileState *s, int *capable, int mode,
                          uint64_t offset, uint64_t bytes)
{
    if (!g_atomic_int_get(capable)) {
        return -ENOTSUP;
    }
    while (fallocate(s->fd, mode, offset, bytes) < 0) {
        int err = errno;
        if (err == EINTR) {
            continue;
        }
        if (err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
            /* EINVAL: e.g. a file system without this mode; do not
             * retry it on every request. */
            g_atomic_int_set(capable, 0);
            return -ENOTSUP;
        }
        return -err;
    }
    return 0;
}

static int file_write_zero_buffers(BdNode *node, FileState *s,
                                   uint64_t offset, uint64_t bytes)
{
    size_t chunk = MIN(bytes, (uint64_t)ZERO_BUF_SIZE);
    g_autofree char *zeroes = file_alloc_aligned(s, chunk);

    if (!zeroes) {
        return -ENOMEM;
    }
    memset(zeroes, 0, chunk);
    while (bytes > 0) {
        uint64_t n = MIN(bytes, (uint64_t)chunk);
        int ret = file_do_pwrite(s->fd, offset, n, zeroes);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_zeroes_fast(BdNode *node, FileState *s, uint64_t offset,
                            uint64_t bytes, int flags)
{
    uint64_t size = __atomic_load_n(&node->size, __ATOMIC_ACQUIRE);
    uint64_t end = offset + bytes;
    int ret = -ENOTSUP;

    /* Punching keeps the size, so only the part inside the file may be
     * punched; the rest is zero-ranged, which also extends the file. */
    if ((flags & BD_REQ_MAY_UNMAP) && node->discard_unmap &&
        (offset < size || s->is_blk)) {
        uint64_t in_file = s->is_blk ? bytes : MIN(end, size) - offset;
        ret = file_fallocate(s, &s->has_punch,
                             FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             offset, in_file);
        if (ret == 0) {
            if (offset + in_file == end) {
                return 0;
            }
            offset += in_file;
            bytes -= in_file;
        } else if (ret != -ENOTSUP) {
            return ret;
        }
    }
    return file_fallocate(s, &s->has_zero_range, FALLOC_FL_ZERO_RANGE,
                          offset, bytes);
}

static int file_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                              int flags)
{
    FileState *s = node->opaque;
    int ret = file_zeroes_fast(node, s, offset, bytes, flags);

    if (ret == -ENOTSUP) {
        if (flags & BD_REQ_NO_FALLBACK) {
            return -ENOTSUP;
        }
        ret = file_write_zero_buffers(node, s, offset, bytes);
    }
    if (ret < 0) {
        return ret;
    }
    file_note_end(node, s, offset + bytes);
    return (flags & BD_REQ_FUA) ? file_sync(node, s) : 0;
}

static int file_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    FileState *s = node->opaque;
    int ret;

    if (!node->discard_unmap) {
        return 0;
    }
    ret = file_fallocate(s, &s->has_punch,
                         FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         offset, bytes);
    /* Discard is advisory: no hole punching means nothing to do. */
    if (ret == -ENOTSUP) {
        ret = 0;
    }
    if (ret < 0) {
        __atomic_fetch_add(&s->discard_nb_failed, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&s->discard_nb_ok, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->discard_bytes_ok, bytes, __ATOMIC_RELAXED);
    }
    return ret;
}

static int file_flush(BdNode *node)
{
    return file_sync(node, node->opaque);
}

static int file_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *map, BdNode **file)
{
    FileState *s = node->opaque;
    uint64_t size = __atomic_load_n(&node->size, __ATOMIC_ACQUIRE);
    int ret = BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    off_t data, hole;

    *pnum = bytes;
    *map = offset;
    *file = node;
    if (offset >= size) {
        return BD_BLOCK_ZERO | BD_BLOCK_OFFSET_VALID | BD_BLOCK_EOF;
    }
    if (!s->is_blk) {
        data = lseek(s->fd, offset, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
            /* A hole up to the end of the file. */
            ret = BD_BLOCK_ZERO | BD_BLOCK_OFFSET_VALID;
            *pnum = MIN(bytes, size - offset);
        } else if (data > (off_t)offset) {
            ret = BD_BLOCK_ZERO | BD_BLOCK_OFFSET_VALID;
            *pnum = MIN(bytes, (uint64_t)data - offset);
        } else if (data == (off_t)offset) {
            hole = lseek(s->fd, offset, SEEK_HOLE);
            if (hole > (off_t)offset) {
                *pnum = MIN(bytes, (uint64_t)hole - offset);
            }
        }
        /* Other errors, or a racing change: report data, always safe. */
    }
    *pnum = MIN(*pnum, size - offset);
    /* Keep boundaries on request_alignment, except at the end. */
    if (node->request_alignment > 1 && offset + *pnum < size) {
        uint64_t aligned = *pnum - (offset + *pnum) % node->request_alignment;
        if (aligned > 0) {
            *pnum = aligned;
        } else {
            *pnum = MIN(bytes, node->request_alignment);
            ret = BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
        }
    }
    if (offset + *pnum >= size) {
        ret |= BD_BLOCK_EOF;
    }
    return ret;
}

static int file_truncate(BdNode *node, uint64_t size)
{
    FileState *s = node->opaque;
    int64_t cur;

    if (s->is_blk) {
        cur = file_current_size(s);
        if (cur < 0) {
            return (int)cur;
        }
        return (uint64_t)cur == size ? 0 : -ENOTSUP;
    }
    bd_mutex_lock(&s->size_lock);
    if (ftruncate(s->fd, size) < 0) {
        int err = errno;
        bd_mutex_unlock(&s->size_lock);
        return -err;
    }
    bd_node_set_size(node, file_node_size(size));
    bd_mutex_unlock(&s->size_lock);
    return 0;
}

static int64_t file_allocated_size(BdNode *node)
{
    FileState *s = node->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return (int64_t)st.st_blocks * 512;
}

/* --- open / close --- */

static gboolean file_is_io_aligned(int fd, char *buf, size_t len)
{
    /* Linux returns EINVAL for misaligned O_DIRECT reads; any other
     * outcome (data, EOF, an I/O error) means the alignment is fine. */
    return pread(fd, buf, len, 0) >= 0 || errno != EINVAL;
}

static gboolean file_probe_alignment(FileState *s, GError **errp)
{
    static const size_t aligns[] = { 1, 512, 1024, 2048, 4096 };
    uint32_t req_align = 0;
    size_t buf_align = 0;
    char *buf = NULL;

    if (!s->direct) {
        s->req_align = 1;
        s->buf_align = 1;
        return TRUE;
    }
    if (s->is_blk) {
        int ssz = 0;
        if (ioctl(s->fd, BLKSSZGET, &ssz) == 0 && ssz > 0) {
            req_align = ssz;
        }
    }
    if (posix_memalign((void **)&buf, MAX_ALIGN, 2 * MAX_ALIGN) != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Out of memory");
        return FALSE;
    }
    for (gsize i = 0; !req_align && i < G_N_ELEMENTS(aligns); i++) {
        if (file_is_io_aligned(s->fd, buf, aligns[i])) {
            /* Byte-sized reads passing usually means EOF: be safe. */
            req_align = aligns[i] == 1 ? MAX_ALIGN : aligns[i];
        }
    }
    for (gsize i = 0; !buf_align && i < G_N_ELEMENTS(aligns); i++) {
        if (file_is_io_aligned(s->fd, buf + aligns[i], MAX_ALIGN)) {
            buf_align = aligns[i] == 1 ? MAX(req_align, 1u) : aligns[i];
        }
    }
    free(buf);
    if (!req_align || !buf_align) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not find working O_DIRECT alignment\n"
                    "Try cache.direct=off");
        return FALSE;
    }
    s->req_align = req_align;
    s->buf_align = MAX(buf_align, sizeof(void *));
    return TRUE;
}

static int file_open_fd(BdNode *node, const char *filename, GError **errp)
{
    int flags = O_CLOEXEC | (node->cache_direct ? O_DIRECT : 0);
    int fd;

    fd = open(filename, flags | (node->read_only ? O_RDONLY : O_RDWR));
    if (fd < 0 && !node->read_only && node->auto_read_only &&
        (errno == EACCES || errno == EROFS || errno == EPERM)) {
        /* auto-read-only: settle for read access. */
        fd = open(filename, flags | O_RDONLY);
        if (fd >= 0) {
            node->read_only = TRUE;
        }
    }
    if (fd < 0) {
        int err = errno == EROFS ? EACCES : errno;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not open '%s': %s", filename, g_strerror(err));
    }
    return fd;
}

static void file_close(BdNode *node)
{
    FileState *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->fd >= 0) {
        close(s->fd);    /* also drops every OFD lock */
    }
    if (s->lock_fd >= 0 && s->lock_fd != s->fd) {
        close(s->lock_fd);
    }
    bd_mutex_destroy(&s->size_lock);
    g_free(s);
    node->opaque = NULL;
}

static gboolean file_setup(BdNode *node, FileState *s, OnOffAuto locking,
                           const char *filename, GError **errp)
{
    struct stat st;
    int64_t size;

    if (fstat(s->fd, &st) < 0) {
        int err = errno;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not stat file: %s", g_strerror(err));
        return FALSE;
    }
    if (node->drv == &bd_host_device_driver) {
        if (!S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "'host_device' driver requires '%s' to be either "
                        "a character or block device", filename);
            return FALSE;
        }
        s->is_blk = S_ISBLK(st.st_mode);
    } else if (S_ISBLK(st.st_mode)) {
        s->is_blk = TRUE;
    } else if (!S_ISREG(st.st_mode)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'file' driver requires '%s' to be a regular file",
                    filename);
        return FALSE;
    }
    size = file_current_size(s);
    if (size < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not get the size of '%s': %s", filename,
                    g_strerror((int)-size));
        return FALSE;
    }
    if (!file_probe_alignment(s, errp)) {
        return FALSE;
    }
    if (locking == ON_OFF_AUTO_ON) {
        bd_file_lock_init(&s->lock, s->fd, TRUE);
    } else if (locking == ON_OFF_AUTO_OFF) {
        bd_file_lock_init(&s->lock, s->fd, FALSE);
    } else {
        bd_file_lock_init(&s->lock, s->fd, bd_file_lock_supported(s->fd));
    }
    bd_node_set_size(node, file_node_size((uint64_t)size));
    return TRUE;
}

static gboolean file_open(BdNode *node, GVariant *options, GError **errp)
{
    FileOptions o = { 0 };
    const char *filename;
    FileState *s;

    bd_schema_decode(file_options, options, &o);
    filename = o.filename;
    if (!filename) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'filename' is missing");
        return FALSE;
    }
    if (!filename[0]) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The '%s' block driver requires a file name",
                    node->drv->name);
        return FALSE;
    }
    if (o.aio == FILE_AIO_NATIVE && !node->cache_direct) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "aio=native was specified, but it requires "
                    "cache.direct=on, which was not specified.");
        return FALSE;
    }
    s = g_new0(FileState, 1);
    bd_mutex_init(&s->size_lock);
    s->has_punch = 1;
    s->has_zero_range = 1;
    s->direct = node->cache_direct;
    node->opaque = s;
    s->fd = file_open_fd(node, filename, errp);
    s->lock_fd = s->fd;
    if (s->fd < 0 || !file_setup(node, s, o.locking, filename, errp)) {
        file_close(node);
        return FALSE;
    }
    g_free(node->filename);
    node->filename = g_strdup(filename);
    return TRUE;
}

/* --- permissions: QEMU-compatible image locks --- */

static gboolean file_check_perm(BdNode *node, uint64_t perm, uint64_t shared,
                                GError **errp)
{
    FileState *s = node->opaque;

    return bd_file_lock_prepare(&s->lock, perm, shared, node->filename, errp);
}

static void file_set_perm(BdNode *node, uint64_t perm, uint64_t shared)
{
    FileState *s = node->opaque;

    bd_file_lock_commit(&s->lock, perm, shared);
}

static void file_abort_perm(BdNode *node)
{
    FileState *s = node->opaque;

    bd_file_lock_abort(&s->lock);
}

/* --- reopen: read-only and cache.direct may change --- */

typedef struct {
    int fd;                    /* the new data fd, or -1: keep the old */
    uint32_t req_align;
    size_t buf_align;
} FileReopen;

static gboolean file_reopen_prepare(BdReopenState *state, GError **errp)
{
    BdNode *node = state->node;
    FileState *s = node->opaque;
    FileReopen *r = g_new0(FileReopen, 1);
    FileState probe = *s;
    int flags = O_CLOEXEC | (state->cache_direct ? O_DIRECT : 0) |
                (state->read_only ? O_RDONLY : O_RDWR);
    gboolean ok;

    r->fd = -1;
    state->opaque = r;
    if (state->read_only == node->read_only &&
        state->cache_direct == s->direct) {
        return TRUE;
    }
    r->fd = open(node->filename, flags);
    if (r->fd < 0) {
        int err = errno == EROFS ? EACCES : errno;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not reopen file: %s", g_strerror(err));
        return FALSE;
    }
    /* Probe on a copy; the node keeps its limits until commit. */
    probe.fd = r->fd;
    probe.direct = state->cache_direct;
    ok = file_probe_alignment(&probe, errp);
    r->req_align = probe.req_align;
    r->buf_align = probe.buf_align;
    return ok;
}

static void file_reopen_commit(BdReopenState *state)
{
    BdNode *node = state->node;
    FileState *s = node->opaque;
    FileReopen *r = state->opaque;

    if (r->fd >= 0) {
        if (s->fd != s->lock_fd) {
            close(s->fd);
        }
        s->fd = r->fd;
        s->direct = state->cache_direct;
        s->buf_align = r->buf_align;
        s->req_align = r->req_align;
    }
    g_free(r);
    state->opaque = NULL;
}

static void file_reopen_abort(BdReopenState *state)
{
    FileReopen *r = state->opaque;

    if (r && r->fd >= 0) {
        close(r->fd);
    }
    g_free(r);
    state->opaque = NULL;
}

/* O_DIRECT needs its probed alignment; buffered I/O takes any. */
static void file_refresh_limits(BdNode *node)
{
    FileState *s = node->opaque;

    node->request_alignment = s->req_align;
}

/* QEMU reports these for every driver with get_info (file and raw). */
static void file_query_image_info(BdNode *node, GVariantDict *image)
{
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
}

static void file_query_stats(BdNode *node, GVariantDict *stats)
{
    FileState *s = node->opaque;

    g_variant_dict_insert(stats, "discard-nb-ok", "t",
                          __atomic_load_n(&s->discard_nb_ok,
                                          __ATOMIC_RELAXED));
    g_variant_dict_insert(stats, "discard-nb-failed", "t",
                          __atomic_load_n(&s->discard_nb_failed,
                                          __ATOMIC_RELAXED));
    g_variant_dict_insert(stats, "discard-bytes-ok", "t",
                          __atomic_load_n(&s->discard_bytes_ok,
                                          __ATOMIC_RELAXED));
}

/* Everything 'file' and 'host_device' share: the same code serves
 * regular files and devices (file_setup tells them apart). */
#define FILE_DRIVER_CALLBACKS                        \
    .query_image_info = file_query_image_info,       \
    .query_stats = file_query_stats,                 \
    .options = file_options,                         \
    .is_protocol = TRUE,                             \
    .reopen_prepare = file_reopen_prepare,           \
    .reopen_commit = file_reopen_commit,             \
    .reopen_abort = file_reopen_abort,               \
    .refresh_limits = file_refresh_limits,           \
    .open = file_open,                               \
    .close = file_close,                             \
    .check_perm = file_check_perm,                   \
    .set_perm = file_set_perm,                       \
    .abort_perm = file_abort_perm,                   \
    .pread = file_pread,                             \
    .pwrite = file_pwrite,                           \
    .pread_to_fd = file_pread_to_fd,                 \
    .pwrite_from_fd = file_pwrite_from_fd,           \
    .supported_read_flags = BD_REQ_NOWAIT,           \
    .pwrite_zeroes = file_pwrite_zeroes,             \
    .pdiscard = file_pdiscard,                       \
    .flush = file_flush,                             \
    .block_status = file_block_status,               \
    .truncate = file_truncate,                       \
    .host_fd = file_host_fd,                         \
    .copy_range_from = file_copy_range_from,         \
    .allocated_size = file_allocated_size

const BdDriver bd_file_driver = {
    .name = "file",
    FILE_DRIVER_CALLBACKS,
    .create_options = bd_file_create_options,
    .create = bd_file_create,
};

/* Block and character devices, as QEMU's host_device. */
const BdDriver bd_host_device_driver = {
    .name = "host_device",
    FILE_DRIVER_CALLBACKS,
};
