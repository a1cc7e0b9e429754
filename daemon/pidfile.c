/* SPDX-License-Identifier: MIT */
/* The PID file: created exclusively-locked as QEMU does, so that a
 * second daemon with the same PID file refuses to start, and removed on
 * exit.  Main thread. */
#define G_LOG_DOMAIN "blockd"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include "daemon/daemon.h"
#include "graph/error.h"
#include "graph/main-thread.h"

static char *pidfile_path;
static int pidfile_fd = -1;

gboolean bd_pidfile_write(const char *path, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autofree char *pid = g_strdup_printf("%d\n", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "cannot create PID file: Could not create '%s': %s",
                    path, g_strerror(errno));
        return FALSE;
    }
    if (lockf(fd, F_TLOCK, 0) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "cannot create PID file: Cannot lock pid file '%s': %s",
                    path, g_strerror(errno));
        close(fd);
        return FALSE;
    }
    if (ftruncate(fd, 0) < 0 ||
        write(fd, pid, strlen(pid)) != (ssize_t)strlen(pid)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "cannot create PID file: Failed to write pid file '%s': %s",
                    path, g_strerror(errno));
        close(fd);
        unlink(path);
        return FALSE;
    }
    /* Keep the fd open: the lock lives as long as the daemon. */
    pidfile_fd = fd;
    pidfile_path = g_canonicalize_filename(path, NULL);
    return TRUE;
}

void bd_pidfile_remove(void)
{
    BD_GLOBAL_STATE_CODE();

    if (pidfile_path) {
        unlink(pidfile_path);
        g_clear_pointer(&pidfile_path, g_free);
    }
    if (pidfile_fd >= 0) {
        close(pidfile_fd);
        pidfile_fd = -1;
    }
}
