/* SPDX-License-Identifier: MIT */
/* Helpers shared by the unit tests: the tool runners (see helpers.h). */
#include <stdarg.h>
#include <sys/wait.h>
#include "helpers.h"

gboolean bd_test_have_program(const char *name)
{
    g_autofree char *path = g_find_program_in_path(name);

    return path != NULL;
}

int bd_test_run(char *const *argv, char **out, char **errout)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *own_out = NULL, *own_err = NULL;
    g_autofree char *cmd = g_strjoinv(" ", (char **)argv);
    int status = 0, code;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL,
                      NULL, &own_out, &own_err, &status, &err)) {
        g_error("%s: %s", cmd, err->message);
    }
    if (WIFEXITED(status)) {
        code = WEXITSTATUS(status);
    } else {
        code = 128 + WTERMSIG(status);
    }
    if (code != 0) {
        g_test_message("%s: exit %d: %s%s", cmd, code, own_out, own_err);
    }
    if (out) {
        *out = g_steal_pointer(&own_out);
    }
    if (errout) {
        *errout = g_steal_pointer(&own_err);
    }
    return code;
}

void bd_test_sh(const char *fmt, ...)
{
    g_autoptr(GError) err = NULL;
    g_auto(GStrv) argv = NULL;
    g_autofree char *cmd = NULL, *errout = NULL;
    va_list ap;

    va_start(ap, fmt);
    cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (!g_shell_parse_argv(cmd, NULL, &argv, &err)) {
        g_error("%s: %s", cmd, err->message);
    }
    if (bd_test_run(argv, NULL, &errout) != 0) {
        g_error("%s failed: %s", cmd, errout);
    }
}
