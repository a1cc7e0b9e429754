/* SPDX-License-Identifier: MIT */
/* QEMU-compatible OFD byte-range image locks for the file driver.
 *
 * Thread model: see file-lock.h; for the file driver the graph calls
 * prepare/commit/abort from its permission update (graph/perm.c, main
 * thread), never concurrently.
 *
 * The algorithm follows QEMU's file-posix locking, so that blockd and
 * QEMU tools see each other's locks (see file-lock.h for the layout):
 *
 *   prepare(new):  lock  100+b for b in old|new perm,
 *                  lock  200+b for b not in (old & new) shared,
 *                  test  200+b for b in new perm      -> "Failed to get \"x\" lock"
 *                  test  100+b for b not in new shared -> "Failed to get shared \"x\" lock"
 *                  on failure: back to the committed set
 *   commit(new):   lock/unlock so that exactly new is held
 *   abort:         lock/unlock so that exactly the committed set is held
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "graph/error.h"
#include "graph/node.h"
#include "formats/file-lock.h"

#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200
#define PERM_BITS        4     /* BD_PERM_ALL == 0x0f */

static int ofd_lock(int fd, int off, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = off,
        .l_len = 1,
        .l_type = type,
    };

    while (fcntl(fd, F_OFD_SETLK, &fl) == -1) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* 0 when nobody else holds a lock on 'off', -EAGAIN when someone does. */
static int ofd_test(int fd, int off)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = off,
        .l_len = 1,
        .l_type = F_WRLCK,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) == -1) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

gboolean bd_file_lock_supported(int fd)
{
    int ret = ofd_test(fd, LOCK_PERM_BASE);

    return ret == 0 || ret == -EAGAIN;
}

void bd_file_lock_init(BdFileLock *lk, int fd, gboolean enabled)
{
    *lk = (BdFileLock) {
        .fd = fd,
        .enabled = enabled,
        .perm = 0,
        .shared = BD_PERM_ALL,
    };
}

static void set_lock_error(GError **errp, int err, const char *msg)
{
    /* EAGAIN/EACCES mean "another process holds it": no errno text. */
    if (err == EAGAIN || err == EACCES) {
        g_set_error_literal(errp, BD_ERROR, BD_ERROR_GENERIC, msg);
    } else {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s: %s",
                    msg, g_strerror(err));
    }
}

/* Hold byte base+b for every b in 'want'; with 'unlock', release the
 * bytes held for bits outside 'want'.  Updates *held as it goes. */
static int apply_bytes(int fd, int base, uint64_t want, gboolean unlock,
                       uint64_t *held, GError **errp)
{
    for (int i = 0; i < PERM_BITS; i++) {
        uint64_t bit = 1ull << i;
        int ret;

        if ((want & bit) && !(*held & bit)) {
            ret = ofd_lock(fd, base + i, F_RDLCK);
            if (ret < 0) {
                g_autofree char *msg =
                    g_strdup_printf("Failed to lock byte %d", base + i);
                set_lock_error(errp, -ret, msg);
                return ret;
            }
            *held |= bit;
        } else if (unlock && (*held & bit) && !(want & bit)) {
            ret = ofd_lock(fd, base + i, F_UNLCK);
            if (ret < 0) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "Failed to unlock byte %d: %s", base + i,
                            g_strerror(-ret));
                return ret;
            }
            *held &= ~bit;
        }
    }
    return 0;
}

static int apply_locks(BdFileLock *lk, uint64_t perm, uint64_t unshared,
                       gboolean unlock, GError **errp)
{
    int ret = apply_bytes(lk->fd, LOCK_PERM_BASE, perm & BD_PERM_ALL, unlock,
                          &lk->locked_perm, errp);
    if (ret < 0) {
        return ret;
    }
    return apply_bytes(lk->fd, LOCK_SHARED_BASE, unshared & BD_PERM_ALL,
                       unlock, &lk->locked_unshared, errp);
}

/* Does anyone else hold what conflicts with perm/shared? */
static int check_locks(int fd, uint64_t perm, uint64_t shared, GError **errp)
{
    for (int i = 0; i < PERM_BITS; i++) {
        uint64_t bit = 1ull << i;
        if (perm & bit) {
            int ret = ofd_test(fd, LOCK_SHARED_BASE + i);
            if (ret < 0) {
                g_autofree char *name = bd_perm_names(bit);
                g_autofree char *msg =
                    g_strdup_printf("Failed to get \"%s\" lock", name);
                set_lock_error(errp, -ret, msg);
                return ret;
            }
        }
    }
    for (int i = 0; i < PERM_BITS; i++) {
        uint64_t bit = 1ull << i;
        if (!(shared & bit)) {
            int ret = ofd_test(fd, LOCK_PERM_BASE + i);
            if (ret < 0) {
                g_autofree char *name = bd_perm_names(bit);
                g_autofree char *msg =
                    g_strdup_printf("Failed to get shared \"%s\" lock", name);
                set_lock_error(errp, -ret, msg);
                return ret;
            }
        }
    }
    return 0;
}

static void relock_committed(BdFileLock *lk)
{
    g_autoptr(GError) err = NULL;

    /* Only releases bytes; a failure here is unexpected but harmless. */
    if (apply_locks(lk, lk->perm, ~lk->shared, TRUE, &err) < 0) {
        g_warning("%s", err->message);
    }
}

gboolean bd_file_lock_prepare(BdFileLock *lk, uint64_t perm, uint64_t shared,
                              const char *filename, GError **errp)
{
    GError *err = NULL;
    int ret;

    if (!lk->enabled) {
        return TRUE;
    }
    /* Only giving up permissions or sharing more: nothing to check. */
    if ((lk->perm | perm) == lk->perm &&
        (lk->shared & shared) == lk->shared) {
        return TRUE;
    }
    ret = apply_locks(lk, lk->perm | perm, ~lk->shared | ~shared, FALSE,
                      &err);
    if (ret == 0) {
        ret = check_locks(lk->fd, perm, shared, &err);
        if (ret == 0) {
            return TRUE;
        }
        /* As QEMU: a conflict found by the test gets the hint. */
        if (ret == -EAGAIN || ret == -EACCES) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "%s\nIs another process using the image [%s]?",
                        err->message, filename);
            g_clear_error(&err);
        }
    }
    relock_committed(lk);
    if (err) {
        g_propagate_error(errp, err);
    }
    return FALSE;
}

void bd_file_lock_commit(BdFileLock *lk, uint64_t perm, uint64_t shared)
{
    g_autoptr(GError) err = NULL;

    if (lk->enabled &&
        apply_locks(lk, perm, ~shared, TRUE, &err) < 0) {
        g_warning("%s", err->message);
    }
    lk->perm = perm;
    lk->shared = shared;
}

void bd_file_lock_abort(BdFileLock *lk)
{
    if (lk->enabled) {
        relock_committed(lk);
    }
}
