/* SPDX-License-Identifier: MIT */
/* Helpers shared by the unit tests: running the external tools
 * (qemu-img, qemu-io) that check the images blockd's code wrote. */
#ifndef BLOCKD_TESTS_UNIT_HELPERS_H
#define BLOCKD_TESTS_UNIT_HELPERS_H

#include <glib.h>

/* Whether 'name' is found on PATH (a test skips without its tool). */
gboolean bd_test_have_program(const char *name);

/* Run argv (NULL-terminated, searched on PATH) and wait for it.  Its
 * standard output and error go to *out and *errout when those are not
 * NULL (the caller frees them).  Returns the exit status, 128 + the
 * signal number if a signal killed it; a status other than 0 is logged
 * with g_test_message together with what the tool printed.  A tool that
 * cannot be started fails the test. */
int bd_test_run(char *const *argv, char **out, char **errout);

/* Run a command line (printf format; split as a shell would, without
 * one) that must succeed: the test fails with the tool's stderr if not. */
void bd_test_sh(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

#endif
