/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the daemon's whole command line.  The input is an
 * argv, its words separated by NUL bytes (argv[0] is "blockd"): it goes
 * through the daemon's getopt tables and each option's argument through
 * the parser and checks start-up uses (bd_daemon_check_argv): keyval or
 * JSON and the schema for --blockdev, --export, --object, --nbd-server
 * and --metrics, QemuOpts-style --chardev, --monitor, -T, --log,
 * --sandbox, --run-with, --runas, --chroot, and the help requests.
 * Nothing is started, opened or applied.  fuzz-keyval covers the keyval
 * and JSON layer below with single arguments. */
#include <string.h>

#include "daemon/daemon.h"
#include "tests/fuzz/fuzz-common.h"

/* More words than any real command line needs; the rest is ignored. */
#define MAX_WORDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *text = g_malloc(size + 1);
    char *argv[MAX_WORDS + 2];
    g_autoptr(GError) err = NULL;
    int argc = 0;
    size_t start = 0;

    bd_fuzz_init();
    memcpy(text, data, size);
    text[size] = '\0';
    argv[argc++] = (char *)"blockd";
    for (size_t i = 0; i <= size && argc <= MAX_WORDS; i++) {
        if (text[i] == '\0') {
            argv[argc++] = text + start;
            start = i + 1;
        }
    }
    argv[argc] = NULL;
    if (!bd_daemon_check_argv(argc, argv, &err)) {
        /* Refusals carry a reason, as start-up prints it. */
        g_assert(err && err->message && *err->message);
    }
    return 0;
}
