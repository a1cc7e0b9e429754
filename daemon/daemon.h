/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the daemon's start-up and shutdown pieces. */
#ifndef BD_DAEMON_DAEMON_H
#define BD_DAEMON_DAEMON_H

#include <glib.h>

/* Apply one command-line option (by its long name, without "--") in
 * command-line order.  Errors are prefixed by the caller. */
gboolean bd_daemon_apply_option(const char *name, const char *arg,
                                GError **errp);
/* --log [level=]error|warning|info|debug[,target=auto|stderr|journald]
 * (daemon/log.c).  Before any other thread exists. */
gboolean bd_daemon_apply_log(const char *arg, GError **errp);
/* -T/--trace [enable=]PATTERN[,events=FILE][,file=FILE]. */
gboolean bd_daemon_apply_trace(const char *arg, GError **errp);

/* pidfile.c: create and lock the PID file; remove it at exit. */
gboolean bd_pidfile_write(const char *path, GError **errp);
void bd_pidfile_remove(void);

/* daemonize.c: fork; the parent exits once the child reports readiness
 * (status 0) or failure (the child's exit status). */
gboolean bd_daemonize_start(GError **errp);
void bd_daemonize_ready(void);

/* harden.c: systemd's readiness notification (NOTIFY_SOCKET, connected
 * by bd_notify_init() at start, before any privilege drop; bd_notify()
 * sends "READY=1" etc. with MAINPID), the privilege drop after start-up
 * and the seccomp filter (--sandbox). */
void bd_notify_init(void);
void bd_notify(const char *state);
gboolean bd_harden_set_runas(const char *arg, GError **errp);
gboolean bd_harden_set_chroot(const char *arg, GError **errp);
gboolean bd_harden_set_run_with(const char *arg, GError **errp);
gboolean bd_harden_set_sandbox(const char *arg, GError **errp);
/* chroot, then setgid/setgroups/setuid, as configured (no-op without). */
gboolean bd_harden_drop_privileges(GError **errp);
/* Install the --sandbox filter (no-op without --sandbox on). */
gboolean bd_harden_apply_sandbox(GError **errp);

/* help.c: --help, --version and the help topics, listed from the
 * registries (fill them first). */
void bd_daemon_print_help(void);
void bd_daemon_print_version(void);
/* TRUE when the argument of --blockdev, --export or --object asks for
 * help ("help", "driver=help", "qcow2,help", ...). */
gboolean bd_daemon_help_requested(const char *option, const char *arg);
/* Print the topic of --help [topic] (option "help") or of an option
 * whose argument asked for help; returns the exit status. */
int bd_daemon_print_topic(const char *option, const char *arg);

#endif
