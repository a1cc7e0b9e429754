/* SPDX-License-Identifier: MIT */
/* blockdev-create for the 'file' driver: create (or empty) a regular
 * file and give it its size, with QEMU's preallocation modes.
 *
 * Thread model: runs on the create job's thread; touches only the file
 * it opens itself (its OFD locks are private to that descriptor).
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graph/error.h"
#include "formats/file-create.h"
#include "formats/file-lock.h"

#define ZERO_CHUNK 65536

typedef enum {
    PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL
} PreallocMode;

static const char *const prealloc_values[] = {
    [PREALLOC_OFF] = "off",
    [PREALLOC_METADATA] = "metadata",
    [PREALLOC_FALLOC] = "falloc",
    [PREALLOC_FULL] = "full",
    NULL };
static const BdSchemaType prealloc_type = {
    .name = "PreallocMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = prealloc_values };

typedef struct {
    const char *filename;
    guint64 size;
    PreallocMode preallocation;
    gboolean nocow;
    guint64 extent_size_hint;
} FileCreateOptions;

const BdSchemaField bd_file_create_options[] = {
    { "filename", &bd_schema_str, FALSE,
      BD_AT(FileCreateOptions, filename), .def.s = "" },
    { "size", &bd_schema_size, FALSE, BD_AT(FileCreateOptions, size) },
    { "preallocation", &prealloc_type, TRUE,
      BD_AT(FileCreateOptions, preallocation), .def.i = PREALLOC_OFF },
    { "nocow", &bd_schema_bool, TRUE, BD_AT(FileCreateOptions, nocow) },
    { "extent-size-hint", &bd_schema_size, TRUE,
      BD_AT(FileCreateOptions, extent_size_hint), .def.u = 1 << 20 },
    { NULL } };

static gboolean set_errno_error(GError **errp, int err, const char *what)
{
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s: %s", what,
                g_strerror(err));
    return FALSE;
}

static gboolean write_zeroes_to(int fd, off_t from, off_t to, GError **errp)
{
    g_autofree char *buf = g_malloc0(ZERO_CHUNK);

    while (from < to) {
        size_t n = MIN((off_t)ZERO_CHUNK, to - from);
        ssize_t r = pwrite(fd, buf, n, from);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return set_errno_error(errp, errno,
                                   "Could not write zeros for preallocation");
        }
        from += r;
    }
    if (fsync(fd) < 0) {
        return set_errno_error(errp, errno, "Could not flush file to disk");
    }
    return TRUE;
}

/* QEMU's raw_regular_truncate() for a file of size 0. */
static gboolean resize(int fd, off_t size, PreallocMode prealloc,
                       GError **errp)
{
    if (prealloc == PREALLOC_FALLOC) {
        int r = size ? posix_fallocate(fd, 0, size) : 0;
        if (r != 0) {
            return set_errno_error(errp, r, "Could not preallocate new data");
        }
        return TRUE;
    }
    if (prealloc == PREALLOC_FULL) {
        if (ftruncate(fd, size) != 0) {
            return set_errno_error(errp, errno, "Could not resize file");
        }
        return write_zeroes_to(fd, 0, size, errp);
    }
    if (prealloc == PREALLOC_OFF) {
        if (ftruncate(fd, size) != 0) {
            return set_errno_error(errp, errno, "Could not resize file");
        }
        return TRUE;
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Unsupported preallocation mode: %s",
                prealloc_values[prealloc]);
    return FALSE;
}

static void set_nocow(int fd)
{
    int attr;

    /* Best effort, as QEMU: only some file systems (btrfs) know it. */
    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
}

gboolean bd_file_create(GVariant *options, GError **errp)
{
    FileCreateOptions o = { 0 };
    const char *filename;
    guint64 hint;
    BdFileLock lk;
    gboolean ok;
    int fd;

    bd_schema_decode(bd_file_create_options, options, &o);
    filename = o.filename;
    hint = o.extent_size_hint;

    if (hint > UINT32_MAX) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Extent size hint is too large");
        return FALSE;
    }
    fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not create '%s': %s", filename, g_strerror(errno));
        return FALSE;
    }
    /* Writing and resizing; nobody else may resize meanwhile. */
    bd_file_lock_init(&lk, fd, bd_file_lock_supported(fd));
    ok = bd_file_lock_prepare(&lk, BD_PERM_WRITE | BD_PERM_RESIZE,
                              BD_PERM_ALL & ~BD_PERM_RESIZE, filename, errp);
    if (ok && ftruncate(fd, 0) != 0) {
        ok = set_errno_error(errp, errno, "Could not resize file");
    }
    if (ok) {
        if (o.nocow) {
            set_nocow(fd);
        }
        ok = resize(fd, (off_t)o.size, o.preallocation, errp);
    }
    if (close(fd) != 0 && ok) {
        ok = set_errno_error(errp, errno, "Could not close the new file");
    }
    return ok;
}
