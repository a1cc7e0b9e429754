/* SPDX-License-Identifier: MIT */
/* Running hardened: systemd's readiness notification (sd_notify's
 * protocol, without libsystemd), the privilege drop after start-up
 * (--runas, --chroot, --run-with, as QEMU's) and the seccomp filter of
 * --sandbox (QEMU's -sandbox syntax, libseccomp).
 *
 * The seccomp filter is a denylist, as QEMU's: an allowlist would have
 * to cover every system call of GLib, libfuse3, libnbd, GnuTLS/nettle,
 * libsoup, librbd and the sanitizers, in every version, and a missed one
 * kills the daemon in the middle of a client's write.  The sets:
 *
 *   (always)           kernel administration and obsolete calls:
 *                      reboot, swapon, kexec_load, init_module, ...
 *                      (QEMU's default set without mount/umount, which
 *                      FUSE exports need); the process is killed.
 *   obsolete=allow     lets the obsolete ones through.
 *   elevateprivileges=deny   set*uid, set*gid, setgroups, setsid,
 *                      setpgid fail with EPERM.
 *   spawn=deny         fork, vfork, execve, execveat and clone without
 *                      CLONE_THREAD fail with EPERM (clone3 with ENOSYS,
 *                      so that glibc creates threads with clone).
 *   resourcecontrol=deny     the calls that change priorities, the
 *                      scheduler or the CPU affinity fail with EPERM
 *                      (QEMU's set also denies reading them).
 *
 * Thread model: main thread, at start-up (before or after the first
 * threads: the filter is synchronised to every thread).
 */
#define G_LOG_DOMAIN "blockd"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "control/input.h"
#include "daemon/daemon.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#ifdef HAVE_LIBSECCOMP
#include <seccomp.h>
#endif

/* --- readiness (sd_notify) --- */

/* Connected before any privilege drop or chroot, so that the socket's
 * path need not be reachable afterwards. */
static int notify_fd = -1;

void bd_notify_init(void)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t len;
    size_t plen;

    if (!path || !*path || (path[0] != '/' && path[0] != '@')) {
        return;
    }
    plen = strlen(path);
    if (plen >= sizeof(sun.sun_path)) {
        g_warning("NOTIFY_SOCKET is too long; not notifying systemd");
        return;
    }
    memcpy(sun.sun_path, path, plen);
    if (path[0] == '@') {
        sun.sun_path[0] = '\0';    /* an abstract address */
    }
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (notify_fd < 0 ||
        connect(notify_fd, (struct sockaddr *)&sun, len) < 0) {
        g_warning("NOTIFY_SOCKET %s: %s; not notifying systemd", path,
                  g_strerror(errno));
        if (notify_fd >= 0) {
            close(notify_fd);
        }
        notify_fd = -1;
    }
    /* Nothing the daemon starts is to notify in its name. */
    g_unsetenv("NOTIFY_SOCKET");
}

void bd_notify(const char *state)
{
    g_autofree char *msg = NULL;

    if (notify_fd < 0) {
        return;
    }
    /* MAINPID: after --daemonize the service's main process is the
     * child that sends this. */
    msg = g_strdup_printf("%s\nMAINPID=%ld", state, (long)getpid());
    if (send(notify_fd, msg, strlen(msg), MSG_NOSIGNAL) < 0) {
        g_warning("NOTIFY_SOCKET: %s", g_strerror(errno));
    }
}

/* --- --runas, --chroot, --run-with --- */

static char *runas_user;
static char *chroot_dir;

gboolean bd_harden_set_runas(const char *arg, GError **errp)
{
    if (!*arg) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "User \"\" doesn't exist");
        return FALSE;
    }
    g_free(runas_user);
    runas_user = g_strdup(arg);
    return TRUE;
}

gboolean bd_harden_set_chroot(const char *arg, GError **errp)
{
    if (!*arg) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chroot: empty directory");
        return FALSE;
    }
    g_free(chroot_dir);
    chroot_dir = g_strdup(arg);
    return TRUE;
}

/* --run-with [chroot=DIR][,user=USER] (QEMU 9's -run-with; its
 * async-teardown does not apply to a storage daemon). */
gboolean bd_harden_set_run_with(const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);

    for (guint i = 0; items[i]; i++) {
        char *eq = strchr(items[i], '=');

        if (!*items[i]) {
            continue;
        }
        if (!eq) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", items[i]);
            return FALSE;
        }
        *eq = '\0';
        if (strcmp(items[i], "chroot") == 0) {
            if (!bd_harden_set_chroot(eq + 1, errp)) {
                return FALSE;
            }
        } else if (strcmp(items[i], "user") == 0) {
            if (!bd_harden_set_runas(eq + 1, errp)) {
                return FALSE;
            }
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", items[i]);
            return FALSE;
        }
    }
    return TRUE;
}

/* USER (a name from the password database) or UID:GID, numbers. */
static gboolean resolve_user(const char *spec, uid_t *uid, gid_t *gid,
                             char **name, GError **errp)
{
    const char *colon = strchr(spec, ':');
    struct passwd *pw;

    if (colon) {
        guint64 u, g;
        g_autofree char *us = g_strndup(spec, colon - spec);

        if (!g_ascii_string_to_unsigned(us, 10, 0, G_MAXUINT32 - 1, &u,
                                        NULL) ||
            !g_ascii_string_to_unsigned(colon + 1, 10, 0, G_MAXUINT32 - 1,
                                        &g, NULL)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "User \"%s\" doesn't exist", spec);
            return FALSE;
        }
        *uid = (uid_t)u;
        *gid = (gid_t)g;
        *name = NULL;
        return TRUE;
    }
    errno = 0;
    pw = getpwnam(spec);
    if (!pw) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "User \"%s\" doesn't exist", spec);
        return FALSE;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    *name = g_strdup(pw->pw_name);
    return TRUE;
}

gboolean bd_harden_drop_privileges(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autofree char *name = NULL;
    uid_t uid = 0;
    gid_t gid = 0;

    /* Resolved before the chroot: the password database is outside. */
    if (runas_user && !resolve_user(runas_user, &uid, &gid, &name, errp)) {
        return FALSE;
    }
    if (chroot_dir) {
        if (chroot(chroot_dir) < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "chroot: %s: %s", chroot_dir, g_strerror(errno));
            return FALSE;
        }
        if (chdir("/") < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "chdir(\"/\"): %s", g_strerror(errno));
            return FALSE;
        }
    }
    if (!runas_user) {
        return TRUE;
    }
    if (setgid(gid) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to setgid(%u): %s", (unsigned)gid,
                    g_strerror(errno));
        return FALSE;
    }
    if ((name ? initgroups(name, gid) : setgroups(1, &gid)) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to set the supplementary groups of %s: %s",
                    runas_user, g_strerror(errno));
        return FALSE;
    }
    if (setuid(uid) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to setuid(%u): %s", (unsigned)uid,
                    g_strerror(errno));
        return FALSE;
    }
    /* Make sure there is no way back (as QEMU checks). */
    if (uid != 0 && setuid(0) == 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Dropping privileges failed: setuid(0) still works");
        return FALSE;
    }
    return TRUE;
}

/* --- --sandbox --- */

typedef enum {
    SANDBOX_OBSOLETE = 1 << 0,         /* obsolete=deny (the default) */
    SANDBOX_ELEVATE = 1 << 1,
    SANDBOX_SPAWN = 1 << 2,
    SANDBOX_RESOURCE = 1 << 3,
} SandboxSets;

static gboolean sandbox_on;
static unsigned sandbox_sets = SANDBOX_OBSOLETE;

gboolean bd_harden_set_sandbox(const char *arg, GError **errp)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);
    gboolean on = FALSE;
    unsigned sets = SANDBOX_OBSOLETE;

    for (guint i = 0; items[i]; i++) {
        const char *key = items[i], *val;
        char *eq = strchr(items[i], '=');
        unsigned bit = 0;

        if (!eq && i == 0) {
            key = "enable";
            val = items[i];
        } else if (!eq) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", items[i]);
            return FALSE;
        } else {
            *eq = '\0';
            val = eq + 1;
        }
        if (strcmp(key, "enable") == 0) {
            if (!bd_parse_bool(val, &on)) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "Parameter 'enable' expects 'on' or 'off'");
                return FALSE;
            }
            continue;
        }
        if (strcmp(key, "obsolete") == 0) {
            bit = SANDBOX_OBSOLETE;
        } else if (strcmp(key, "elevateprivileges") == 0) {
            bit = SANDBOX_ELEVATE;
        } else if (strcmp(key, "spawn") == 0) {
            bit = SANDBOX_SPAWN;
        } else if (strcmp(key, "resourcecontrol") == 0) {
            bit = SANDBOX_RESOURCE;
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", key);
            return FALSE;
        }
        if (strcmp(val, "deny") == 0) {
            sets |= bit;
        } else if (strcmp(val, "allow") == 0) {
            sets &= ~bit;
        } else {
            /* QEMU's elevateprivileges=children has no use here. */
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "invalid argument for %s", key);
            return FALSE;
        }
    }
#ifndef HAVE_LIBSECCOMP
    if (on) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "seccomp support is disabled (blockd was built "
                    "without libseccomp)");
        return FALSE;
    }
#endif
    sandbox_on = on;
    sandbox_sets = sets;
    return TRUE;
}

#ifdef HAVE_LIBSECCOMP
static const char *const always_denied[] = {
    /* QEMU's default set, without mount and umount (FUSE). */
    "reboot", "swapon", "swapoff", "syslog", "kexec_load", "afs_syscall",
    "break", "ftime", "getpmsg", "gtty", "lock", "mpx", "prof", "profil",
    "putpmsg", "query_module", "security", "sgetmask", "ssetmask",
    "stty", "sysfs", "tuxcall", "uselib", "ustat", "vserver",
    /* Kernel administration no storage daemon does. */
    "kexec_file_load", "init_module", "finit_module", "delete_module",
    "acct", "iopl", "ioperm", "pivot_root", "settimeofday",
    "clock_settime", "adjtimex", "clock_adjtime", "sethostname",
    "setdomainname", "quotactl", "nfsservctl", "lookup_dcookie",
    NULL };
static const char *const obsolete[] = {
    "readdir", "_sysctl", "bdflush", "create_module", "get_kernel_syms",
    "vm86", "vm86old", "uselib", "ustat", "sysfs", NULL };
static const char *const elevate[] = {
    "setuid", "setgid", "setpgid", "setsid", "setreuid", "setregid",
    "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
    "setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32",
    "setresgid32", "setfsuid32", "setfsgid32", "setgroups32", NULL };
static const char *const spawn[] = {
    "fork", "vfork", "execve", "execveat", NULL };
/* QEMU's set without the calls that only read: glibc's
 * pthread_getattr_np() reads the affinity (the sanitizers call it in
 * every new thread), and reading changes nothing. */
static const char *const resource[] = {
    "setpriority", "sched_setparam", "sched_setscheduler",
    "sched_setaffinity", "sched_setattr", NULL };

static gboolean add_rules(scmp_filter_ctx ctx, const char *const *names,
                          uint32_t action, GError **errp)
{
    for (guint i = 0; names[i]; i++) {
        int nr = seccomp_syscall_resolve_name(names[i]);
        int rc;

        if (nr == __NR_SCMP_ERROR) {
            continue;    /* not on this architecture */
        }
        rc = seccomp_rule_add(ctx, action, nr, 0);
        if (rc < 0 && rc != -EEXIST) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "failed to add seccomp filter rule for '%s': %s",
                        names[i], g_strerror(-rc));
            return FALSE;
        }
    }
    return TRUE;
}

/* The clone flags that make a clone no new process: a thread.  In a
 * sanitizer build also LeakSanitizer's tracer (CLONE_UNTRACED, which
 * nothing else here uses), which stops the threads at exit. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CLONE_SPARED (CLONE_THREAD | CLONE_UNTRACED)
#else
#define CLONE_SPARED CLONE_THREAD
#endif

static gboolean install_filter(GError **errp)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    /* QEMU kills the process for the default set when the kernel can. */
    uint32_t kill = seccomp_api_get() >= 3 ? SCMP_ACT_KILL_PROCESS
                                            : SCMP_ACT_TRAP;
    uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
    gboolean ok = FALSE;
    int rc;

    if (!ctx) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "failed to initialize seccomp context");
        return FALSE;
    }
    /* Every thread (the workers already run), not only this one. */
    if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "seccomp: thread synchronisation: %s", g_strerror(-rc));
        goto out;
    }
    if (!add_rules(ctx, always_denied, kill, errp) ||
        ((sandbox_sets & SANDBOX_OBSOLETE) &&
         !add_rules(ctx, obsolete, kill, errp)) ||
        ((sandbox_sets & SANDBOX_ELEVATE) &&
         !add_rules(ctx, elevate, eperm, errp)) ||
        ((sandbox_sets & SANDBOX_RESOURCE) &&
         !add_rules(ctx, resource, eperm, errp))) {
        goto out;
    }
    if (sandbox_sets & SANDBOX_SPAWN) {
        int nr3 = seccomp_syscall_resolve_name("clone3");

        if (!add_rules(ctx, spawn, eperm, errp)) {
            goto out;
        }
        /* New processes, not threads: clone3's flags are behind a
         * pointer the filter cannot read, so clone3 says ENOSYS and
         * glibc falls back to clone for its threads. */
        rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_SPARED, 0));
        if (rc == 0 && nr3 != __NR_SCMP_ERROR) {
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr3, 0);
        }
        if (rc < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "failed to add seccomp filter rule for 'clone': %s",
                        g_strerror(-rc));
            goto out;
        }
    }
    rc = seccomp_load(ctx);
    if (rc < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "failed to install seccomp syscall filter in the "
                    "kernel: %s", g_strerror(-rc));
        goto out;
    }
    ok = TRUE;
out:
    seccomp_release(ctx);
    return ok;
}
#endif

gboolean bd_harden_apply_sandbox(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!sandbox_on) {
        return TRUE;
    }
#ifdef HAVE_LIBSECCOMP
    return install_filter(errp);
#else
    g_assert_not_reached();
#endif
}
