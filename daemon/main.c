/* SPDX-License-Identifier: MIT */
/* blockd's main(): parse the command line (qemu-storage-daemon's),
 * configure the graph, exports and monitors in option order, run the
 * main loop, and shut down cleanly on SIGTERM/SIGINT/SIGHUP or 'quit'.
 *
 * Thread model: this is the main thread; it owns the GLib main loop
 * (it acquires the default main context at start and keeps it, so that
 * "on the main thread" is g_main_context_is_owner() everywhere, and
 * another thread's g_main_context_invoke() queues instead of running the
 * callback itself), the control channel and every graph change.
 */
#define G_LOG_DOMAIN "blockd"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <glib-unix.h>
#include "control/control.h"
#include "daemon/daemon.h"
#include "export-fuse/fuse-export.h"
#include "export-nbd/nbd-server.h"
#include "metrics/metrics.h"
#include "daemon/version.h"
#include "export/export.h"
#include "formats/registry.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "graph/socket-address.h"
#include "jobs/job.h"
#include "objects/object.h"

/* Exports get this long to see their clients go before we give up. */
#define SHUTDOWN_EXPORT_TIMEOUT_US (10 * G_USEC_PER_SEC)

static GMainLoop *main_loop;

/* The drivers, object types, export types and commands. */
static void register_everything(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_formats_register_all();
    bd_objects_register_builtin();
    bd_export_register_driver(&bd_nbd_export_driver);
    bd_export_register_driver(&bd_fuse_export_driver);
    bd_control_init();
}

static gboolean on_signal(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    g_main_loop_quit(main_loop);
    return G_SOURCE_CONTINUE;
}

static void on_quit_command(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    g_main_loop_quit(main_loop);
}

/* Stop exports, the NBD server, nodes and monitors, in that order:
 * clients go first so that nodes close with no request in flight.  The
 * main loop no longer runs, so no control command starts meanwhile; the
 * clients' threads wake us as each export's last reference goes. */
static void shutdown_everything(void)
{
    BD_GLOBAL_STATE_CODE();

    gint64 deadline = g_get_monotonic_time() + SHUTDOWN_EXPORT_TIMEOUT_US;

    bd_job_cancel_sync_all();
    bd_backup_sessions_end_all();
    bd_export_close_all(NULL);
    if (!bd_export_wait_gone(NULL, deadline)) {
        g_warning("exports still have clients after %d s; exiting anyway",
                  (int)(SHUTDOWN_EXPORT_TIMEOUT_US / G_USEC_PER_SEC));
    }
    if (bd_nbd_server_running()) {
        bd_nbd_server_stop(NULL);
    }
    if (bd_metrics_running()) {
        bd_cmd_metrics_stop(NULL);
    }
    bd_node_close_all();
    bd_objects_cleanup();
    bd_monitor_cleanup();
    bd_pidfile_remove();
}

static G_NORETURN void fail_startup(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

static void fail_startup(const char *fmt, ...)
{
    BD_GLOBAL_STATE_CODE();

    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "blockd: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    shutdown_everything();
    exit(EXIT_FAILURE);
}

/* A help request found by the first pass: printed once the registries
 * it lists are filled.  'option' is "help" (arg: the topic or NULL) or
 * the option whose argument asked for help ("blockdev", ...). */
typedef struct {
    const char *option;
    const char *arg;
} HelpRequest;

/* First pass: --help, --version, usage errors and --daemonize, before
 * anything is started (and before any thread exists, for fork). */
static gboolean scan_options(int argc, char **argv, HelpRequest *help)
{
    gboolean daemonize = FALSE;
    int c, index;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, bd_daemon_short_options,
                            bd_daemon_long_options,
                            &index)) != -1) {
        switch (c) {
        case 'h':
            /* --help [drivers|exports|objects] */
            if (!help->option) {
                help->option = "help";
                if (optind < argc && argv[optind][0] != '-') {
                    help->arg = argv[optind++];
                }
            }
            break;
        case 'V':
            bd_daemon_print_version();
            exit(EXIT_SUCCESS);
        case BD_OPT_DAEMONIZE:
            daemonize = TRUE;
            break;
        case ':':
            fprintf(stderr, "blockd: option '%s' requires an argument\n",
                    argv[optind - 1]);
            exit(EXIT_FAILURE);
        case '?':
            if (optopt) {
                fprintf(stderr, "blockd: invalid option -- '%c'\n", optopt);
            } else {
                fprintf(stderr, "blockd: unrecognized option '%s'\n",
                        argv[optind - 1]);
            }
            exit(EXIT_FAILURE);
        default:
            if (c >= 256 && !help->option &&
                bd_daemon_help_requested(bd_daemon_long_options[index].name,
                                         optarg)) {
                help->option = bd_daemon_long_options[index].name;
                help->arg = optarg;
            }
            break;
        }
    }
    if (optind < argc && !help->option) {
        fprintf(stderr, "blockd: Unexpected argument: %s\n", argv[optind]);
        exit(EXIT_FAILURE);
    }
    return daemonize;
}

/* Second pass: apply every option in order; -T/--trace first, as
 * qemu-storage-daemon does, so that it sees the nodes the other options
 * open. */
static void apply_options(int argc, char **argv, const char **pidfile)
{
    BD_GLOBAL_STATE_CODE();

    int c, index;

    optind = 1;
    while ((c = getopt_long(argc, argv, bd_daemon_short_options,
                            bd_daemon_long_options,
                            &index)) != -1) {
        g_autoptr(GError) err = NULL;

        if (c == 'T' && !bd_daemon_apply_trace(optarg, &err)) {
            fail_startup("-T %s: %s", optarg, err->message);
        }
        if (c == BD_OPT_LOG && !bd_daemon_apply_log(optarg, &err)) {
            fail_startup("--log %s: %s", optarg, err->message);
        }
        /* Checked before anything starts; applied after start-up. */
        if ((c == BD_OPT_RUNAS && !bd_harden_set_runas(optarg, &err)) ||
            (c == BD_OPT_CHROOT && !bd_harden_set_chroot(optarg, &err)) ||
            (c == BD_OPT_RUN_WITH && !bd_harden_set_run_with(optarg, &err)) ||
            (c == BD_OPT_SANDBOX && !bd_harden_set_sandbox(optarg, &err))) {
            fail_startup("--%s %s: %s", bd_daemon_long_options[index].name,
                         optarg,
                         err->message);
        }
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, bd_daemon_short_options,
                            bd_daemon_long_options,
                            &index)) != -1) {
        g_autoptr(GError) err = NULL;

        if (c == BD_OPT_PIDFILE) {
            *pidfile = optarg;
            continue;
        }
        if (c < 256 || c == BD_OPT_DAEMONIZE || c == BD_OPT_LOG ||
            c == BD_OPT_RUNAS || c == BD_OPT_CHROOT || c == BD_OPT_RUN_WITH ||
            c == BD_OPT_SANDBOX) {
            continue;
        }
        if (!bd_daemon_apply_option(bd_daemon_long_options[index].name,
                                    optarg,
                                    &err)) {
            fail_startup("--%s %s: %s", bd_daemon_long_options[index].name,
                         optarg,
                         err->message);
        }
    }
}

/* GLib 2.74's slice allocator (GVariant, GList, hash table nodes) keeps
 * every chunk it ever handed out: after 10,000 nodes were added and
 * deleted the daemon stayed three times its size.  GLib reads G_SLICE
 * in a constructor, before main(), so the setting takes a re-exec; GLib
 * 2.76 and later always use malloc, as this asks. */
static void use_malloc_for_slices(char **argv)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* A sanitizer's allocator keeps freed memory anyway, and LeakSanitizer
     * would report GLib's own lifelong allocations that the slice
     * allocator hides from it. */
    return;
#endif
    if (getenv("G_SLICE") || glib_check_version(2, 76, 0) == NULL) {
        return;
    }
    setenv("G_SLICE", "always-malloc", 1);
    execv("/proc/self/exe", argv);
    /* Still here (no /proc): run with the slice allocator. */
}

int main(int argc, char **argv)
{
    use_malloc_for_slices(argv);
    /* Before GLib opens a descriptor and before --daemonize's fork
     * (LISTEN_PID is this process). */
    bd_socket_inherited_init();

    g_autoptr(GError) err = NULL;
    const char *pidfile = NULL;
    HelpRequest help = { NULL, NULL };
    gboolean daemonize = scan_options(argc, argv, &help);

    if (help.option) {
        /* Lists what the registries hold: fill them, start nothing. */
        BD_GLOBAL_STATE_CODE();
        g_main_context_acquire(NULL);
        register_everything();
        return bd_daemon_print_topic(help.option, help.arg) == 0 ?
               EXIT_SUCCESS : EXIT_FAILURE;
    }
    bd_notify_init();
    if (daemonize && !bd_daemonize_start(&err)) {
        fprintf(stderr, "blockd: %s\n", err->message);
        return EXIT_FAILURE;
    }
    /* The daemonized child's initial thread is the main thread too
     * (graph/main-thread.h); everything from here relies on it. */
    BD_GLOBAL_STATE_CODE();
    /* Clients that hang up must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    g_main_context_acquire(NULL);
    main_loop = g_main_loop_new(NULL, FALSE);

    register_everything();
    bd_control_set_quit_handler(on_quit_command, NULL);
    bd_metrics_set_version(BLOCKD_VERSION_FULL);

    /* Before any socket appears: a signal sent as soon as a socket is
     * seen must already find its handler (it is served by the loop). */
    g_unix_signal_add(SIGTERM, on_signal, NULL);
    g_unix_signal_add(SIGINT, on_signal, NULL);
    g_unix_signal_add(SIGHUP, on_signal, NULL);

    apply_options(argc, argv, &pidfile);
    {
        g_autofree char *unused = bd_socket_activation_unused();
        if (unused) {
            g_warning("socket activation: no option takes the passed "
                      "socket(s) %s (use --nbd-server addr.type=fd,"
                      "addr.str=NAME or --chardev socket,fd=NAME,...)",
                      unused);
        }
    }
    if (pidfile && !bd_pidfile_write(pidfile, &err)) {
        fail_startup("%s", err->message);
    }
    /* Everything is open: give up what start-up needed. */
    if (!bd_harden_drop_privileges(&err)) {
        fail_startup("%s", err->message);
    }
    if (!bd_harden_apply_sandbox(&err)) {
        fail_startup("--sandbox: %s", err->message);
    }

    /* systemd first: once --daemonize's parent exits, the service
     * manager may already look for the notification. */
    bd_notify("READY=1");
    bd_daemonize_ready();

    g_main_loop_run(main_loop);

    bd_notify("STOPPING=1");
    shutdown_everything();
    g_main_loop_unref(main_loop);
    g_main_context_release(NULL);
    return EXIT_SUCCESS;
}
