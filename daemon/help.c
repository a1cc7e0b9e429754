/* SPDX-License-Identifier: MIT */
/* --help, --version and the help topics (--help drivers|exports|objects,
 * --blockdev help, --blockdev DRIVER,help, --export help, --object help).
 *
 * What the help lists comes from the registries the daemon runs with:
 * the block drivers (graph's driver table), the export types and the
 * object types (the BlockExportOptions and ObjectOptions schemas built
 * from them), so that a driver or type added there shows up here.  Only
 * the one-line descriptions live in this file; a name without one shows
 * "(no description)", which tests/integration/test_docs.py refuses.
 * Main thread, after the registries are filled.
 */
#define G_LOG_DOMAIN "blockd"

#include <stdio.h>
#include <string.h>
#include "control/control.h"
#include "daemon/daemon.h"
#include "daemon/version.h"
#include "export/export.h"
#include "graph/main-thread.h"
#include "graph/node.h"

typedef struct {
    const char *name;
    const char *text;
} Description;

static const Description driver_descriptions[] = {
    { "file", "a regular file (pread/pwrite, QEMU-compatible locks)" },
    { "host_device", "a host block device, as 'file'" },
    { "null-aio", "reads zeroes (or garbage), discards writes; tests" },
    { "null-co", "reads zeroes (or garbage), discards writes; tests" },
    { "nbd", "another server's NBD export (libnbd client, TLS, reconnect)" },
    { "rbd", "a Ceph RBD image (librbd; snapshots, create, resize)" },
    { "raw", "raw image on a file child, with an optional offset/size window" },
    { "qcow2", "qcow2 images: backing chains, compression, bitmaps" },
    { "vdi", "VirtualBox images, static and dynamic, read-write" },
    { "vpc", "VHD images, fixed and dynamic, read-write" },
    { "parallels", "Parallels (ploop) images, read-write; in-use marker" },
    { "bochs", "Bochs growing disk images, read-only" },
    { "cloop", "compressed loopback (cloop V2.0) images, read-only" },
    { "vhdx", "VHDX images: fixed, dynamic, differencing; log replay" },
    { "qed", "QED images: backing files, check after an unclean close" },
    { "vmdk", "VMware images: sparse, flat, streamOptimized, delta disks" },
    { "dmg", "Apple disk images (UDIF; zlib, bzip2 chunks), read-only" },
    { "luks", "LUKS1 encrypted images (AES XTS/CBC), read-write" },
    { "compress", "writes compressed qcow2 clusters" },
    { "blkdebug", "fault injection (inject-error, set-state, align)" },
    { "blkverify", "test filter: compares every read with a raw copy" },
    { "quorum", "test filter: votes over several children" },
    { "throttle", "I/O limits of a throttle-group object" },
    { "copy-before-write", "saves old data to a target (fleecing)" },
    { "copy-on-read", "copies what it reads into its child" },
    { "snapshot-access", "the point-in-time view of a copy-before-write" },
    { NULL, NULL },
};

static const Description export_descriptions[] = {
    { "nbd", "an NBD export on the server of --nbd-server" },
    { "fuse", "the node's raw content mounted over a regular file" },
    { NULL, NULL },
};

static const Description object_descriptions[] = {
    { "authz-list", "an ordered list of match rules for TLS clients" },
    { "authz-listfile", "authz-list rules read (and reloaded) from a file" },
    { "authz-simple", "lets one TLS identity in" },
    { "iothread", "a worker pool that the threads of exports in it join" },
    { "secret", "a password or key (data or file, optionally encrypted)" },
    { "throttle-group", "I/O limits shared by the throttle nodes naming it" },
    { "tls-creds-anon", "anonymous TLS credentials" },
    { "tls-creds-psk", "TLS pre-shared keys (keys.psk in dir)" },
    { "tls-creds-x509", "TLS x509 certificates (ca-cert.pem ... in dir)" },
    { NULL, NULL },
};

static const char *describe(const Description *table, const char *name)
{
    for (const Description *d = table; d->name; d++) {
        if (strcmp(d->name, name) == 0) {
            return d->text;
        }
    }
    return "(no description)";
}

static const char *driver_kind(const BdDriver *drv)
{
    return drv->is_protocol ? "protocol"
         : drv->is_format ? "format"
         : drv->is_filter ? "filter" : "other";
}

static void list_drivers(FILE *out)
{
    const BdDriver *const *list = bd_driver_list();

    for (gsize i = 0; list[i]; i++) {
        fprintf(out, "  %-18s %-8s  %s\n", list[i]->name,
                driver_kind(list[i]), describe(driver_descriptions,
                                               list[i]->name));
    }
}

static void list_variants(FILE *out, const BdSchemaType *type,
                          const Description *table)
{
    for (const BdSchemaVariant *v = type->variants; v && v->value; v++) {
        fprintf(out, "  %-18s %s\n", v->value, describe(table, v->value));
    }
}

/* "(<what>: a, b, c)" wrapped at 79 columns under the descriptions. */
static void print_names(const char *what, const char *const *names)
{
    int col = printf("%25s(%s: ", "", what);

    for (gsize i = 0; names[i]; i++) {
        col += printf("%s%s", names[i], names[i + 1] ? "," : ")\n");
        if (names[i + 1]) {
            if (col + 1 + (int)strlen(names[i + 1]) + 1 > 79) {
                col = printf("\n%25s", "") - 1;
            } else {
                col += printf(" ");
            }
        }
    }
}

static void print_driver_names(void)
{
    const BdDriver *const *list = bd_driver_list();
    g_autoptr(GPtrArray) names = g_ptr_array_new();

    for (gsize i = 0; list[i]; i++) {
        g_ptr_array_add(names, (gpointer)list[i]->name);
    }
    g_ptr_array_add(names, NULL);
    print_names("drivers", (const char *const *)names->pdata);
}

static void print_variant_names(const char *what, const BdSchemaType *type)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();

    for (const BdSchemaVariant *v = type->variants; v && v->value; v++) {
        g_ptr_array_add(names, (gpointer)v->value);
    }
    g_ptr_array_add(names, NULL);
    print_names(what, (const char *const *)names->pdata);
}

void bd_daemon_print_help(void)
{
    BD_GLOBAL_STATE_CODE();

    printf(
"Usage: blockd [options]\n"
"blockd: a block-export daemon (qemu-storage-daemon compatible)\n"
"\n"
"  -h, --help             display this help and exit\n"
"  --help drivers|exports|objects\n"
"                         list the block drivers, export types or object\n"
"                         types with one line each\n"
"  -V, --version          output version information and exit\n"
"  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]\n"
"                         turn trace points on (trace-event-get-state\n"
"                         lists them)\n"
"\n"
"  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
"             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
"             [,read-only=on|off][,auto-read-only=on|off]\n"
"             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
"             [,driver specific parameters...]\n"
"                         configure a block node; the JSON form {...}\n"
"                         works too.  --blockdev help lists the drivers,\n"
"                         --blockdev <driver>,help their options\n");
    print_driver_names();
    printf("\n"
"  --chardev socket,id=<id>,path=<path>|host=<host>,port=<port>|fd=<fd>\n"
"            [,server=on|off][,wait=on|off][,reconnect=<seconds>]\n"
"                         configure a socket chardev (for a monitor);\n"
"                         fd=<fd>: a passed listening socket, by number\n"
"                         or LISTEN_FDNAMES name\n"
"\n"
"  --daemonize            daemonize the process, and have the parent exit\n"
"                         once startup is complete\n"
"\n"
"  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
"           [,description=<text>][,writable=on|off][,allocation-depth=on|off]\n"
"           [,bitmaps.0=<bitmap>]\n"
"                         export the specified block node over NBD\n"
"                         (requires --nbd-server)\n"
"  --export [type=]fuse,id=<id>,node-name=<node-name>,mountpoint=<file>\n"
"           [,writable=on|off][,growable=on|off][,allow-other=on|off|auto]\n"
"                         mount the node's raw content over a file\n");
    print_variant_names("export types", bd_export_options_schema());
    printf("\n"
"  --log [level=]error|warning|info|debug[,target=auto|stderr|journald]\n"
"                         log through GLib's structured logging; info\n"
"                         says every client, node, export and job change\n"
"\n"
"  --metrics addr.type=inet,addr.host=<host>,addr.port=<port>[,tls-creds=<id>]\n"
"  --metrics addr.type=unix,addr.path=<path>[,tls-creds=<id>]\n"
"            [,max-connections=<n>][,idle-timeout=<seconds>]\n"
"                         serve Prometheus metrics at http://.../metrics\n"
"\n"
"  --monitor [chardev=]name[,mode=control][,pretty[=on|off]]\n"
"                         configure a QMP monitor\n"
"\n"
"  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
"               [,max-connections=<n>][,tls-creds=<id>][,tls-authz=<id>]\n"
"               [,handshake-max-seconds=<n>]\n"
"  --nbd-server addr.type=unix,addr.path=<path>[,max-connections=<n>]...\n"
"  --nbd-server addr.type=fd,addr.str=<fd>[,max-connections=<n>]...\n"
"                         start an NBD server for exporting block nodes\n"
"\n"
"  --object secret,id=<id>,data=<data>|file=<file>[,format=raw|base64]\n"
"           [,keyid=<secret-id>,iv=<base64>]\n"
"  --object authz-simple,id=<id>,identity=<name>\n"
"  --object authz-list,id=<id>[,policy=allow|deny][,rules.0.match=<m>\n"
"           ,rules.0.policy=allow|deny[,rules.0.format=exact|glob]]...\n"
"  --object authz-listfile,id=<id>,filename=<file>[,refresh=on|off]\n"
"  --object throttle-group,id=<id>[,limits.iops-total=<n>][,limits.bps-read=<n>]...\n"
"  --object tls-creds-x509,id=<id>,dir=<dir>,endpoint=server|client...\n"
"                         define an object (the JSON form {...} works\n"
"                         too); --object help lists the types\n");
    print_variant_names("object types", bd_cmd_object_options_schema());
    printf("\n"
"  --pidfile <path>       write process ID to a file after startup\n"
"\n"
"  --runas <user>|<uid>:<gid>\n"
"                         switch to that user once startup is complete\n"
"  --chroot <dir>         chroot to <dir> once startup is complete\n"
"  --run-with [chroot=<dir>][,user=<user>]\n"
"                         both, in newer QEMU's form\n"
"\n"
"  --sandbox on|off[,obsolete=allow|deny][,elevateprivileges=allow|deny]\n"
"            [,spawn=allow|deny][,resourcecontrol=allow|deny]\n"
"                         install a seccomp filter once startup is\n"
"                         complete (a denylist, as QEMU's -sandbox)\n"
"\n"
"Options are applied in the order given.  See blockd(1), blockd-qmp(7)\n"
"and blockd-drivers(7).\n");
}

void bd_daemon_print_version(void)
{
    printf("blockd version " BLOCKD_VERSION_FULL "\n"
           "QMP compatible with qemu-storage-daemon 7.2\n");
}

/* One member of a driver's options, as --blockdev DRIVER,help shows it. */
static void print_field(FILE *out, const BdSchemaField *f)
{
    const BdSchemaType *t = f->type;
    g_autofree char *type = NULL;

    if (t->kind == BD_SCHEMA_ENUM && t->enum_values) {
        g_autofree char *values = g_strjoinv("|", (char **)t->enum_values);
        type = g_strdup(values);
    } else if (t->kind == BD_SCHEMA_BLOCKDEV_REF) {
        type = g_strdup("node-name or {options}");
    } else if (t->kind == BD_SCHEMA_BLOCKDEV_REF_OR_NULL) {
        type = g_strdup("node-name, {options} or null");
    } else if (t->kind == BD_SCHEMA_LIST) {
        type = g_strdup_printf("list of %s",
                               t->element && t->element->name ?
                               t->element->name : "values");
    } else {
        type = g_strdup(t->name ? t->name : "value");
    }
    fprintf(out, "  %s=<%s>%s%s\n", f->name, type,
            f->optional ? "" : " (required)",
            (f->flags & BD_FIELD_MUTABLE) ? " (mutable)" : "");
}

static int driver_help(const char *name)
{
    const BdDriver *drv = bd_driver_find(name);

    if (!drv) {
        fprintf(stderr, "blockd: --blockdev %s,help: Parameter 'driver' "
                "does not accept value '%s'\n", name, name);
        return 1;
    }
    printf("%s (%s): %s\n", drv->name, driver_kind(drv),
           describe(driver_descriptions, drv->name));
    printf("Options (besides node-name, read-only, auto-read-only, "
           "force-share,\ncache.direct, cache.no-flush, discard, "
           "detect-zeroes):\n");
    gboolean any = FALSE;
    for (const BdSchemaField *f = drv->options; f && f->name; f++) {
        print_field(stdout, f);
        any = TRUE;
    }
    if (!any) {
        printf("  (none)\n");
    }
    return 0;
}

/* "help" or "?" alone, or as the value of the implied key, or a bare
 * "help" after other keys (DRIVER,help). */
static gboolean is_help_arg(const char *arg, const char *implied_key,
                            char **subject)
{
    g_auto(GStrv) parts = g_strsplit(arg, ",", -1);
    guint n = g_strv_length(parts);

    *subject = NULL;
    if (n == 0) {
        return FALSE;
    }
    for (guint i = 0; i < n; i++) {
        const char *p = parts[i];
        size_t klen = strlen(implied_key);
        if (strncmp(p, implied_key, klen) == 0 && p[klen] == '=') {
            p += klen + 1;
        }
        if (strcmp(p, "help") == 0 || strcmp(p, "?") == 0) {
            /* the subject: the other bare value or implied key, if any */
            for (guint j = 0; j < n; j++) {
                const char *q = parts[j];
                if (j == i) {
                    continue;
                }
                if (strncmp(q, implied_key, klen) == 0 && q[klen] == '=') {
                    q += klen + 1;
                } else if (strchr(q, '=')) {
                    continue;
                }
                g_free(*subject);
                *subject = g_strdup(q);
            }
            return TRUE;
        }
    }
    return FALSE;
}

gboolean bd_daemon_help_requested(const char *option, const char *arg)
{
    g_autofree char *subject = NULL;

    if (strcmp(option, "blockdev") == 0) {
        return is_help_arg(arg, "driver", &subject);
    }
    if (strcmp(option, "export") == 0) {
        return is_help_arg(arg, "type", &subject);
    }
    if (strcmp(option, "object") == 0) {
        return is_help_arg(arg, "qom-type", &subject);
    }
    return FALSE;
}

int bd_daemon_print_topic(const char *option, const char *arg)
{
    BD_GLOBAL_STATE_CODE();

    g_autofree char *subject = NULL;

    if (strcmp(option, "help") == 0) {
        if (!arg || !*arg) {
            bd_daemon_print_help();
        } else if (strcmp(arg, "drivers") == 0) {
            printf("Block drivers (--blockdev driver=...):\n");
            list_drivers(stdout);
        } else if (strcmp(arg, "exports") == 0) {
            printf("Export types (--export type=...):\n");
            list_variants(stdout, bd_export_options_schema(),
                          export_descriptions);
        } else if (strcmp(arg, "objects") == 0) {
            printf("Object types (--object qom-type=...):\n");
            list_variants(stdout, bd_cmd_object_options_schema(),
                          object_descriptions);
        } else {
            fprintf(stderr, "blockd: --help %s: unknown topic; try "
                    "drivers, exports or objects\n", arg);
            return 1;
        }
        return 0;
    }
    if (strcmp(option, "blockdev") == 0) {
        is_help_arg(arg, "driver", &subject);
        if (subject) {
            return driver_help(subject);
        }
        printf("Block drivers (--blockdev driver=...; "
               "--blockdev <driver>,help for its options):\n");
        list_drivers(stdout);
        return 0;
    }
    if (strcmp(option, "export") == 0) {
        printf("Export types (--export type=...):\n");
        list_variants(stdout, bd_export_options_schema(),
                      export_descriptions);
        return 0;
    }
    if (strcmp(option, "object") == 0) {
        printf("List of user creatable objects:\n");
        list_variants(stdout, bd_cmd_object_options_schema(),
                      object_descriptions);
        return 0;
    }
    return 1;
}
