/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the daemon's start-up and shutdown pieces. */
#ifndef BD_DAEMON_DAEMON_H
#define BD_DAEMON_DAEMON_H

#include <glib.h>

/* Apply one command-line option (by its long name, without "--") in
 * command-line order.  Errors are prefixed by the caller. */
gboolean bd_daemon_apply_option(const char *name, const char *arg,
                                GError **errp);

/* pidfile.c: create and lock the PID file; remove it at exit. */
gboolean bd_pidfile_write(const char *path, GError **errp);
void bd_pidfile_remove(void);

/* daemonize.c: fork; the parent exits once the child reports readiness
 * (status 0) or failure (the child's exit status). */
gboolean bd_daemonize_start(GError **errp);
void bd_daemonize_ready(void);

#endif
