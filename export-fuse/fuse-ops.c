/* SPDX-License-Identifier: MIT */
/* The FUSE export's request handlers: the one regular file's attributes,
 * open, read, write, fsync, fallocate and lseek, mapped onto the entry
 * handle, with -errno mapped to reply_err() here and only here.
 *
 * Thread model: every handler runs on a worker thread (fuse-workers.c),
 * many at once.  They share nothing but the export's read-only fields,
 * attr_lock (mode and ownership) and resize_lock (size changes); data
 * requests take no lock.
 *
 * Caching: every open is answered with FOPEN_DIRECT_IO, so the kernel
 * keeps no page cache for the file and every read and write reaches the
 * node.  The same node may be exported over NBD (or changed by a job) at
 * the same time; with the page cache on (even with keep_cache off, which
 * only drops the cache at open) a reader holding the file open would see
 * stale data after an NBD write.  Direct I/O keeps both views coherent at
 * once, and it costs little: the node below does its own caching, and
 * large requests still arrive whole (up to 1 MiB).  Attributes are not
 * cached either (timeout 0), so a resize is seen at the next stat.
 * FOPEN_PARALLEL_DIRECT_WRITES lets the kernel send writes to the file in
 * parallel instead of holding the inode lock across each one.  With no
 * cache there is nothing to write back at close, so FOPEN_NOFLUSH spares
 * the FLUSH round trip (durability is fsync's job, as for any file).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fuse.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "export-fuse/fuse-internal.h"
#include "graph/trace.h"

#ifndef FOPEN_PARALLEL_DIRECT_WRITES
#define FOPEN_PARALLEL_DIRECT_WRITES (1 << 6)
#endif

/* Attributes are re-read on every stat: see "Caching" above. */
#define ATTR_TIMEOUT 0.0

/* Replies.  Each drops the request's export reference first, so that a
 * client that got its answer never sees the export still "in use"
 * (block-export-del mode=safe) because a worker was preempted between
 * reply and release.  The export outlives the release: destroy joins
 * the workers before freeing anything. */

/* One request on the export's stats, and its trace point. */
static void account(BdExport *exp, BdAcctType type, uint64_t offset,
                    uint64_t bytes, int64_t start, int ret)
{
    bd_io_stats_done(&exp->stats, type, bytes, start, ret);
    BD_TRACE(BD_TRACE_FUSE_REQUEST,
             "export=%s type=%d offset=%" G_GUINT64_FORMAT " length=%"
             G_GUINT64_FORMAT " ret=%d latency_ns=%" G_GINT64_FORMAT,
             exp->id, (int)type, offset, bytes, ret,
             bd_io_stats_now() - start);
}

static void reply_err(fuse_req_t req, int err)
{
    bd_fuse_request_release();
    fuse_reply_err(req, err);
}

static void reply_buf(fuse_req_t req, const void *buf, size_t size)
{
    bd_fuse_request_release();
    fuse_reply_buf(req, buf, size);
}

static void reply_attr(fuse_req_t req, const struct stat *st)
{
    bd_fuse_request_release();
    fuse_reply_attr(req, st, ATTR_TIMEOUT);
}

static void reply_write(fuse_req_t req, size_t count)
{
    bd_fuse_request_release();
    fuse_reply_write(req, count);
}

static void reply_lseek(fuse_req_t req, off_t off)
{
    bd_fuse_request_release();
    fuse_reply_lseek(req, off);
}

static BdFuseExport *req_export(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* Replies ENOTCONN and returns FALSE for requests that arrive while the
 * export shuts down (they hold no export reference). */
static gboolean req_admit(fuse_req_t req)
{
    if (!bd_fuse_request_admitted()) {
        fuse_reply_err(req, ENOTCONN);
        return FALSE;
    }
    return TRUE;
}

static void reply_status(fuse_req_t req, int ret)
{
    reply_err(req, ret < 0 ? -ret : 0);
}

/* libfuse's room for the request header in its buffer and pipe. */
#define SPLICE_HEADER_ROOM 4096

/* The largest write a pipe of this process can carry with its header. */
static size_t splice_pipe_room(void)
{
    int p[2];
    int sz;

    if (pipe2(p, O_CLOEXEC) < 0) {
        return 0;
    }
    sz = fcntl(p[0], F_SETPIPE_SZ, BD_FUSE_MAX_IO + SPLICE_HEADER_ROOM);
    close(p[0]);
    close(p[1]);
    return sz > SPLICE_HEADER_ROOM ? (size_t)sz - SPLICE_HEADER_ROOM : 0;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    /* Room for many asynchronous direct requests (io_uring, libaio) in
     * flight at once; the kernel's default of 12 would throttle them. */
    conn->max_background = 128;
    conn->congestion_threshold = 96;
    /* A write-back cache would break coherence with other exports. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    /* Splice: libfuse then reads requests into a pipe, and
     * op_write_buf splices a write's data on into the image
     * (bd_entry_pwrite_from_fd).  Only when the pipe holds a whole
     * 1 MiB request (CAP_SYS_RESOURCE or a raised fs.pipe-max-size):
     * libfuse needs max_write plus a page, and shrinking max_write to
     * fit the default 1 MiB limit sends every 1 MiB write as two
     * requests.  Even then it saves no copy under FOPEN_DIRECT_IO: the
     * kernel copies the writer's pages into the pipe ("can't control
     * lifetime of pipe buffers"), so it is one more system call per
     * request; measured on 2 CPUs, no gain (see the commit). */
    if ((conn->capable & FUSE_CAP_SPLICE_READ) &&
        splice_pipe_room() >= BD_FUSE_MAX_IO) {
        conn->want |= FUSE_CAP_SPLICE_READ;
    } else {
        conn->want &= ~FUSE_CAP_SPLICE_READ;
    }
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    /* The mount is a single regular file: it has no entries. */
    reply_err(req, ENOENT);
}

static int fill_stat(BdFuseExport *fe, struct stat *st)
{
    int64_t len = bd_entry_getlength(fe->common.entry);
    time_t now = time(NULL);

    if (len < 0) {
        return (int)len;
    }
    memset(st, 0, sizeof(*st));
    st->st_ino = FUSE_ROOT_ID;
    st->st_nlink = 1;
    bd_mutex_lock(&fe->attr_lock);
    st->st_mode = fe->st_mode;
    st->st_uid = fe->st_uid;
    st->st_gid = fe->st_gid;
    bd_mutex_unlock(&fe->attr_lock);
    st->st_size = len;
    st->st_blksize = 4096;
    st->st_blocks = (len + 511) / 512;
    st->st_atime = st->st_mtime = st->st_ctime = now;
    return 0;
}

static void reply_stat(fuse_req_t req, BdFuseExport *fe)
{
    struct stat st;
    int ret = fill_stat(fe, &st);

    if (ret < 0) {
        reply_err(req, -ret);
        return;
    }
    reply_attr(req, &st);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    if (req_admit(req)) {
        reply_stat(req, req_export(req));
    }
}

/* truncate(2): a writable export may change its size, growable or not
 * (QEMU's FUSE export borrows the resize permission for the call). */
static int export_truncate(BdFuseExport *fe, uint64_t size)
{
    int ret;

    if (!fe->common.writable) {
        return -EACCES;
    }
    bd_mutex_lock(&fe->resize_lock);
    ret = bd_fuse_resize(fe, size, FALSE);
    bd_mutex_unlock(&fe->resize_lock);
    return ret;
}

/* Grow the node to at least 'end'. */
static int export_grow(BdFuseExport *fe, uint64_t end)
{
    int ret;

    bd_mutex_lock(&fe->resize_lock);
    ret = bd_fuse_resize(fe, end, TRUE);
    bd_mutex_unlock(&fe->resize_lock);
    return ret;
}

/* Mode and ownership changes, checked as QEMU does: no +w on a
 * read-only export, no access for others without allow_other. */
static int check_setattr(BdFuseExport *fe, const struct stat *st, int to_set)
{
    int supported = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
                    FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                    FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                    FUSE_SET_ATTR_CTIME;

    if (fe->allow_other) {
        supported |= FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
    }
    if (to_set & ~supported) {
        return -ENOTSUP;
    }
    if (to_set & FUSE_SET_ATTR_MODE) {
        if (!fe->allow_other && (st->st_mode & (S_IRWXG | S_IRWXO))) {
            return -EPERM;
        }
        if (!fe->common.writable && (st->st_mode & 0222)) {
            return -EROFS;
        }
    }
    return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st,
                       int to_set, struct fuse_file_info *fi)
{
    BdFuseExport *fe = req_export(req);
    int ret;

    if (!req_admit(req)) {
        return;
    }
    ret = check_setattr(fe, st, to_set);
    if (ret == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
        ret = st->st_size < 0 ? -EINVAL
                              : export_truncate(fe, (uint64_t)st->st_size);
    }
    if (ret < 0) {
        reply_err(req, -ret);
        return;
    }
    /* Times are not stored: stat reports the current time. */
    bd_mutex_lock(&fe->attr_lock);
    if (to_set & FUSE_SET_ATTR_MODE) {
        fe->st_mode = S_IFREG | (st->st_mode & 07777);
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        fe->st_uid = st->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        fe->st_gid = st->st_gid;
    }
    bd_mutex_unlock(&fe->attr_lock);
    reply_stat(req, fe);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    BdFuseExport *fe = req_export(req);
    /* libfuse 3.14 has no bit for FOPEN_PARALLEL_DIRECT_WRITES, so the
     * open reply (struct fuse_open_out) is sent as is. */
    struct fuse_open_out out = {
        .fh = 0,
        .open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES |
                      FOPEN_NOFLUSH,
    };
    int ret;

    if (!req_admit(req)) {
        return;
    }
    /* Refused here rather than at the first write: root passes the
     * kernel's mode check even without write bits. */
    if ((fi->flags & O_ACCMODE) != O_RDONLY && !fe->common.writable) {
        reply_err(req, EACCES);
        return;
    }
    /* O_TRUNC arrives here (the kernel's atomic_o_trunc, on by default
     * in libfuse 3).  An open with it (dd without conv=notrunc, a
     * shell's '>') on a disk of fixed size is almost always a mistake
     * that would wipe it: refused, where QEMU's export empties the disk.
     * An explicit truncate(2) still resizes (op_setattr). */
    if ((fi->flags & O_TRUNC) && fe->common.writable && !fe->growable) {
        reply_err(req, EPERM);
        return;
    }
    if (fi->flags & O_TRUNC) {
        ret = export_truncate(fe, 0);
        if (ret < 0) {
            reply_err(req, -ret);
            return;
        }
    }
    reply_buf(req, &out, sizeof(out));
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    BdFuseExport *fe = req_export(req);
    int64_t len, start;
    void *buf;
    int ret;

    if (!req_admit(req)) {
        return;
    }
    len = bd_entry_getlength(fe->common.entry);
    if (len < 0 || off < 0) {
        reply_err(req, len < 0 ? (int)-len : EINVAL);
        return;
    }
    /* Short reads at the end of the file, as any regular file. */
    if (off >= len || size == 0) {
        reply_buf(req, NULL, 0);
        return;
    }
    size = MIN((uint64_t)size, (uint64_t)(len - off));
    buf = bd_fuse_worker_buffer(size);
    if (!buf) {
        reply_err(req, ENOMEM);
        return;
    }
    start = bd_io_stats_now();
    ret = bd_entry_pread(fe->common.entry, off, size, buf, 0);
    account(&fe->common, BD_ACCT_READ, off, size, start, ret);
    if (ret < 0) {
        reply_err(req, -ret);
        return;
    }
    reply_buf(req, buf, size);
}

/* The checks every write gets before its data is looked at: on success
 * *size may be cut short at the end of a fixed-size disk, *flags holds
 * BD_REQ_FUA where asked.  1: already answered (a write at the end). */
static int write_prepare(fuse_req_t req, struct fuse_file_info *fi,
                         off_t off, size_t *size, int *flags)
{
    BdFuseExport *fe = req_export(req);
    int64_t len;
    int ret;

    if (!fe->common.writable) {
        return -EACCES;
    }
    len = bd_entry_getlength(fe->common.entry);
    if (len < 0 || off < 0) {
        return len < 0 ? (int)len : -EINVAL;
    }
    if ((uint64_t)off + *size > (uint64_t)len) {
        if (fe->growable) {
            ret = export_grow(fe, (uint64_t)off + *size);
            if (ret < 0) {
                return ret;
            }
        } else if (off >= len) {
            /* A fixed-size disk is full at its end. */
            if (*size == 0) {
                reply_write(req, 0);
                return 1;
            }
            return -ENOSPC;
        } else {
            *size = len - off;    /* a short write up to the end */
        }
    }
    /* O_SYNC/O_DSYNC opens and writethrough exports write through. */
    *flags = 0;
    if (fe->common.writethrough || (fi->flags & O_DSYNC)) {
        *flags |= BD_REQ_FUA;
    }
    return 0;
}

/* A write whose data libfuse spliced from /dev/fuse into a pipe
 * (FUSE_CAP_SPLICE_READ): spliced on into the image where the node
 * chain allows (bd_entry_pwrite_from_fd, which does every check of a
 * buffered write), else read into the worker's buffer.  Whatever is
 * left in the pipe (a short write, an error half-way) libfuse discards
 * when bufv->idx says it was not consumed. */
static int write_from_pipe(BdFuseExport *fe, struct fuse_bufvec *bufv,
                           off_t off, size_t size, int flags)
{
    struct fuse_bufvec mem = FUSE_BUFVEC_INIT(size);
    size_t whole = fuse_buf_size(bufv);
    int ret;

    ret = bd_entry_pwrite_from_fd(fe->common.entry, off, size,
                                  bufv->buf[0].fd, flags);
    if (ret != -ENOTSUP) {
        if (ret == 0 && size == whole) {
            bufv->idx = bufv->count;
        }
        return ret;
    }
    mem.buf[0].mem = bd_fuse_worker_buffer(size);
    if (!mem.buf[0].mem) {
        return -ENOMEM;
    }
    if (fuse_buf_copy(&mem, bufv, 0) != (ssize_t)size) {
        return -EIO;
    }
    return bd_entry_pwrite(fe->common.entry, off, size, mem.buf[0].mem,
                           flags);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino,
                         struct fuse_bufvec *bufv, off_t off,
                         struct fuse_file_info *fi)
{
    BdFuseExport *fe = req_export(req);
    size_t size = fuse_buf_size(bufv);
    int64_t start = bd_io_stats_now();
    int flags = 0;
    int ret;

    if (!req_admit(req)) {
        return;
    }
    ret = write_prepare(req, fi, off, &size, &flags);
    if (ret == 1) {
        return;
    }
    if (ret < 0) {
        bd_io_stats_invalid(&fe->common.stats, BD_ACCT_WRITE);
    }
    if (ret == 0) {
        if (bufv->count == 1 && (bufv->buf[0].flags & FUSE_BUF_IS_FD)) {
            ret = write_from_pipe(fe, bufv, off, size, flags);
        } else if (bufv->count == 1) {
            ret = bd_entry_pwrite(fe->common.entry, off, size,
                                  bufv->buf[0].mem, flags);
        } else {
            ret = -EIO;      /* libfuse passes one buffer */
        }
        account(&fe->common, BD_ACCT_WRITE, off, size, start, ret);
    }
    if (ret < 0) {
        reply_err(req, -ret);
        return;
    }
    reply_write(req, size);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                     struct fuse_file_info *fi)
{
    if (req_admit(req)) {
        BdExport *exp = &req_export(req)->common;
        int64_t start = bd_io_stats_now();
        int ret = bd_entry_flush(exp->entry);

        account(exp, BD_ACCT_FLUSH, 0, 0, start, ret);
        reply_status(req, ret);
    }
}

/* Plain allocation.  Past the end it grows the node (any writable
 * export, as QEMU's) and allocates the new range by writing zeroes
 * without unmapping, which a file node turns into fallocate(2) zeroing,
 * so that the image's disk usage grows as the caller asked.  Inside the
 * node it succeeds where the range is already allocated, else it is
 * refused with EOPNOTSUPP so that posix_fallocate() writes the blocks. */
static int fallocate_plain(BdFuseExport *fe, uint64_t off, uint64_t bytes,
                           int64_t len, gboolean keep_size)
{
    uint64_t end = off + bytes;

    if (end > (uint64_t)len && !keep_size) {
        uint64_t from = MAX(off, (uint64_t)len);
        int ret = export_grow(fe, end);

        if (ret < 0) {
            return ret;
        }
        ret = bd_entry_pwrite_zeroes(fe->common.entry, from, end - from, 0);
        /* The size is what was asked for; allocation is best effort. */
        return ret == -ENOTSUP ? 0 : ret;
    }
    end = MIN(end, (uint64_t)len);
    while (off < end) {
        uint64_t pnum;
        int st = bd_entry_block_status(fe->common.entry, off, end - off,
                                       &pnum);
        if (st < 0) {
            return st;
        }
        if (!(st & BD_BLOCK_DATA) || pnum == 0) {
            return -EOPNOTSUPP;
        }
        off += pnum;
    }
    return 0;
}

/* PUNCH_HOLE must leave zeroes behind whatever the node's discard
 * policy: it is a write of zeroes that may deallocate (discard=unmap),
 * and only a fast one (as QEMU), else EOPNOTSUPP.  ZERO_RANGE is a
 * write of zeroes that keeps the range allocated. */
static int fallocate_zero(BdFuseExport *fe, int mode, uint64_t off,
                          uint64_t bytes, int64_t len)
{
    gboolean punch = mode & FALLOC_FL_PUNCH_HOLE;
    uint64_t end = off + bytes;
    int flags = punch ? BD_REQ_MAY_UNMAP | BD_REQ_NO_FALLBACK : 0;
    int64_t start;
    int ret;

    if (punch && !(mode & FALLOC_FL_KEEP_SIZE)) {
        return -EINVAL;
    }
    if (end > (uint64_t)len && !(mode & FALLOC_FL_KEEP_SIZE)) {
        ret = export_grow(fe, end);
        if (ret < 0) {
            return ret;
        }
        len = end;
    }
    if (off >= (uint64_t)len) {
        return 0;
    }
    end = MIN(end, (uint64_t)len);
    if (fe->common.writethrough) {
        flags |= BD_REQ_FUA;
    }
    /* Zeroing, punched or not, counts as a write (as NBD's write
     * zeroes). */
    start = bd_io_stats_now();
    ret = bd_entry_pwrite_zeroes(fe->common.entry, off, end - off, flags);
    account(&fe->common, BD_ACCT_WRITE, off, end - off, start, ret);
    return ret == -ENOTSUP ? -EOPNOTSUPP : ret;
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
                         off_t off, off_t length, struct fuse_file_info *fi)
{
    BdFuseExport *fe = req_export(req);
    const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
                      FALLOC_FL_ZERO_RANGE;
    int64_t len;
    int ret;

    if (!req_admit(req)) {
        return;
    }
    if (!fe->common.writable) {
        reply_err(req, EACCES);
        return;
    }
    if ((mode & ~known) || ((mode & FALLOC_FL_PUNCH_HOLE) &&
                            (mode & FALLOC_FL_ZERO_RANGE))) {
        reply_err(req, EOPNOTSUPP);
        return;
    }
    if (off < 0 || length <= 0 || off + length < off) {
        reply_err(req, EINVAL);
        return;
    }
    len = bd_entry_getlength(fe->common.entry);
    if (len < 0) {
        reply_err(req, (int)-len);
        return;
    }
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        ret = fallocate_zero(fe, mode, off, length, len);
    } else {
        ret = fallocate_plain(fe, off, length, len,
                              mode & FALLOC_FL_KEEP_SIZE);
    }
    reply_status(req, ret);
}

/* SEEK_DATA/SEEK_HOLE from the block status of the whole chain below
 * the export: data is what reads from some layer (BD_BLOCK_DATA), a
 * hole is what reads as zeroes without being allocated.  The end of the
 * node is a hole, as for any file. */
static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    BdFuseExport *fe = req_export(req);
    int64_t len;

    if (!req_admit(req)) {
        return;
    }
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        reply_err(req, EINVAL);
        return;
    }
    len = bd_entry_getlength(fe->common.entry);
    if (len < 0) {
        reply_err(req, (int)-len);
        return;
    }
    if (off < 0 || off >= len) {
        reply_err(req, ENXIO);
        return;
    }
    while (off < len) {
        uint64_t pnum = 0;
        int st = bd_entry_block_status(fe->common.entry, off, len - off,
                                       &pnum);
        gboolean data;

        if (st < 0) {
            reply_err(req, -st);
            return;
        }
        data = st & BD_BLOCK_DATA;
        if ((whence == SEEK_DATA) == data) {
            reply_lseek(req, off);
            return;
        }
        if (pnum == 0) {
            break;       /* no progress: treat the rest as one extent */
        }
        off += MIN(pnum, (uint64_t)(len - off));
    }
    if (whence == SEEK_DATA) {
        reply_err(req, ENXIO);
    } else {
        reply_lseek(req, len);
    }
}

const struct fuse_lowlevel_ops bd_fuse_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .open = op_open,
    .read = op_read,
    .write_buf = op_write_buf,
    .fsync = op_fsync,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
};
