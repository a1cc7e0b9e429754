/* SPDX-License-Identifier: MIT */
/* --daemonize: fork before any thread exists; the parent waits on a
 * pipe and exits with the child's start-up result, so that scripts may
 * rely on every socket being ready once the command returns. */
#define G_LOG_DOMAIN "blockd"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "daemon/daemon.h"
#include "graph/error.h"
#include "graph/main-thread.h"

static int ready_fd = -1;

gboolean bd_daemonize_start(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "--daemonize: pipe: %s", g_strerror(errno));
        return FALSE;
    }
    pid = fork();
    if (pid < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "--daemonize: fork: %s", g_strerror(errno));
        return FALSE;
    }
    if (pid > 0) {
        /* Parent: one status byte means ready; EOF means the child
         * failed and already said why on the shared stderr. */
        char status;
        ssize_t n;
        int wstatus;

        close(fds[1]);
        do {
            n = read(fds[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        if (n == 1) {
            _exit(0);
        }
        if (waitpid(pid, &wstatus, 0) == pid && WIFEXITED(wstatus)) {
            _exit(WEXITSTATUS(wstatus) ? WEXITSTATUS(wstatus) : 1);
        }
        _exit(1);
    }
    close(fds[0]);
    ready_fd = fds[1];
    setsid();
    return TRUE;
}

void bd_daemonize_ready(void)
{
    BD_GLOBAL_STATE_CODE();

    int null_fd;
    char ok = 0;

    if (ready_fd < 0) {
        return;
    }
    null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        if (null_fd > STDERR_FILENO) {
            close(null_fd);
        }
    }
    if (write(ready_fd, &ok, 1) != 1) {
        /* The parent is gone; nobody is waiting for us. */
    }
    close(ready_fd);
    ready_fd = -1;
}
