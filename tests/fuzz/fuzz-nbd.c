/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the NBD server as a client meets it.  The bytes are
 * what a client sends on a fresh connection to blockd's real server (a
 * unix socket in a private directory): the handshake's flags and
 * options (export names, meta contexts, INFO/GO, STARTTLS refused
 * without TLS, ...) and, once an export is chosen, transmission
 * requests.  The export is writable, on an in-memory null-co node with
 * a dirty bitmap and allocation depth, so that every request type and
 * meta context is reachable.  The server's replies are read and thrown
 * away; the input ends with the client's half-close, after which the
 * server must close too: a hang is a bug (libFuzzer's -timeout). */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/fuzz/fuzz-common.h"

static char *socket_path;

static void setup(void)
{
    socket_path = g_build_filename(bd_fuzz_tmpdir(), "nbd.sock", NULL);
    bd_fuzz_qmp_ok("{\"execute\": \"nbd-server-start\", \"arguments\": "
                   "{\"addr\": {\"type\": \"unix\", \"data\": "
                   "{\"path\": \"%s\"}}}}", socket_path);
    bd_fuzz_qmp_ok("{\"execute\": \"blockdev-add\", \"arguments\": "
                   "{\"driver\": \"null-co\", \"node-name\": \"n0\", "
                   "\"size\": 67108864}}");
    bd_fuzz_qmp_ok("{\"execute\": \"block-dirty-bitmap-add\", "
                   "\"arguments\": {\"node\": \"n0\", \"name\": \"b0\"}}");
    bd_fuzz_qmp_ok("{\"execute\": \"block-export-add\", \"arguments\": "
                   "{\"type\": \"nbd\", \"id\": \"e0\", \"node-name\": \"n0\", "
                   "\"name\": \"\", \"writable\": true, \"bitmaps\": [\"b0\"], "
                   "\"allocation-depth\": true}}");
}

static int connect_server(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    g_strlcpy(sa.sun_path, socket_path, sizeof(sa.sun_path));
    if (fd < 0 || (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
                   errno != EINPROGRESS && errno != EAGAIN)) {
        g_error("fuzz-nbd: cannot connect to %s: %s", socket_path,
                g_strerror(errno));
    }
    return fd;
}

/* Send 'data', read until the server closes; the server's accept and
 * the end of its connection threads run on this (main) thread's loop. */
static void converse(int fd, const uint8_t *data, size_t size)
{
    size_t sent = 0;
    gboolean shut = FALSE;
    char buf[65536];

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };

        if (!shut && sent == size) {
            shutdown(fd, SHUT_WR);
            shut = TRUE;
        }
        if (!shut) {
            p.events |= POLLOUT;
        }
        bd_fuzz_iterate();
        if (poll(&p, 1, 5) < 0 && errno != EINTR) {
            break;
        }
        if (p.revents & POLLOUT) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);

            if (n > 0) {
                sent += (size_t)n;
            } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                sent = size;    /* the server hung up: stop sending */
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);

            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                break;
            }
        }
    }
}

/* The threads of this process now (entries of /proc/self/task). */
static int thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    if (!dir) {
        return -1;
    }
    while ((e = readdir(dir))) {
        n += e->d_name[0] != '.';
    }
    closedir(dir);
    return n;
}

/* Let the connection's threads finish and release it before the next
 * input, so that connections never pile up; then wait for the threads
 * themselves to be gone ('threads' is the count before the input).  The
 * connection and worker threads are detached: one that dropped the
 * client's last reference still runs its thread-local destructors
 * (GLib's per-thread slice magazines, 2 KiB) for a moment, and a leak
 * check in that moment finds that memory referenced by nothing. */
static void wait_connection_gone(int threads)
{
    int i;

    for (i = 0; i < 2000; i++) {
        g_autoptr(JsonNode) r = NULL;
        JsonNode *ret;

        bd_fuzz_iterate();
        r = bd_fuzz_qmp("{\"execute\": \"x-query-nbd-clients\"}");
        ret = json_object_get_member(json_node_get_object(r), "return");
        if (ret && json_array_get_length(json_node_get_array(ret)) == 0) {
            break;
        }
        g_usleep(1000);
    }
    for (; i < 4000 && thread_count() > threads; i++) {
        bd_fuzz_iterate();
        g_usleep(1000);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd, threads;

    bd_fuzz_init();
    if (!socket_path) {
        setup();
    }
    threads = thread_count();
    fd = connect_server();
    converse(fd, data, size);
    close(fd);
    wait_connection_gone(threads);
    return 0;
}
