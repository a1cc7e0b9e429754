/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the daemon's start-up and shutdown pieces. */
#ifndef BD_DAEMON_DAEMON_H
#define BD_DAEMON_DAEMON_H

#include <getopt.h>
#include <glib.h>

/* The command line (options.c): getopt_long's tables, and the values
 * of the long options without a short form. */
enum {
    BD_OPT_BLOCKDEV = 256,
    BD_OPT_CHARDEV,
    BD_OPT_DAEMONIZE,
    BD_OPT_EXPORT,
    BD_OPT_LOG,
    BD_OPT_METRICS,
    BD_OPT_MONITOR,
    BD_OPT_NBD_SERVER,
    BD_OPT_OBJECT,
    BD_OPT_PIDFILE,
    BD_OPT_RUNAS,
    BD_OPT_CHROOT,
    BD_OPT_RUN_WITH,
    BD_OPT_SANDBOX,
};
extern const struct option bd_daemon_long_options[];
extern const char bd_daemon_short_options[];

/* Apply one command-line option (by its long name, without "--") in
 * command-line order.  Errors are prefixed by the caller. */
gboolean bd_daemon_apply_option(const char *name, const char *arg,
                                GError **errp);
/* --log [level=]error|warning|info|debug[,target=auto|stderr|journald]
 * (daemon/log.c).  Before any other thread exists. */
gboolean bd_daemon_apply_log(const char *arg, GError **errp);
/* -T/--trace [enable=]PATTERN[,events=FILE][,file=FILE]. */
gboolean bd_daemon_apply_trace(const char *arg, GError **errp);
/* The same three parsed and checked, nothing applied or opened. */
gboolean bd_daemon_check_log(const char *arg, GError **errp);
gboolean bd_daemon_check_trace(const char *arg, GError **errp);
/* A whole command line (argv[0] the program) parsed and each option's
 * argument checked as start-up would, up to what needs the daemon's
 * state (other nodes, objects, chardevs, files): nothing is started,
 * opened or applied.  FALSE with the first error.  For the fuzz target
 * of the command line (tests/fuzz/fuzz-cmdline.c); uses getopt's
 * globals, so main thread only. */
gboolean bd_daemon_check_argv(int argc, char **argv, GError **errp);

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
