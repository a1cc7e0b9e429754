/* SPDX-License-Identifier: MIT */
/* blockctl's entry: global options, the subcommand table, and the
 * helpers every subcommand shares. */
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "ctl/blockctl.h"

static const struct {
    const char *name;
    BdCtlCommandFn fn;
    const char *help;
} commands[] = {
    { "status", bd_ctl_cmd_status,
      "the nodes as a tree, the exports and their clients, the jobs" },
    { "graph", bd_ctl_cmd_graph,
      "the block graph [--format text|dot|svg|png] [-o FILE]" },
    { "jobs", bd_ctl_cmd_jobs,
      "the jobs and their progress [--watch]" },
    { "wait", bd_ctl_cmd_wait,
      "JOB: follow a job to its end; fails when the job fails" },
    { "backup", bd_ctl_cmd_backup,
      "NODE DIR [--full|--incremental|--differential] [--compress]\n"
      "              [--workers N] --nbd SOCKET: "
      "pull a backup into a qcow2 chain" },
    { "restore", bd_ctl_cmd_restore,
      "DIR [--at N] [--verify] TARGET: a backup point to a raw file or "
      "an NBD URI" },
    { "backup-list", bd_ctl_cmd_backup_list,
      "DIR: the chain, with sizes and times" },
    { "qmp", bd_ctl_cmd_qmp,
      "COMMAND [key=value ...] [--args JSON]: any QMP command" },
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: blockctl [-s QMP_SOCKET] [--json] COMMAND [ARGS]\n"
                 "The socket is also taken from BLOCKD_SOCKET.\n\n"
                 "Commands:\n");
    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].help);
    }
    fprintf(out, "\nExit status: 0 success, 1 the command failed, "
                 "2 usage error.\n");
}

int bd_ctl_usage(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "blockctl: %s\n", msg);
    return BD_CTL_USAGE;
}

BdQmpClient *bd_ctl_connect(const BdCtlGlobal *g)
{
    g_autoptr(GError) err = NULL;
    BdQmpClient *c = bd_qmp_client_connect(g->socket, &err);

    if (!c) {
        fprintf(stderr, "blockctl: %s\n", err->message);
    }
    return c;
}

JsonNode *bd_ctl_execute(BdQmpClient *c, const char *command, JsonNode *args)
{
    g_autoptr(GError) err = NULL;
    JsonNode *ret = bd_qmp_client_execute(c, command, args, NULL, &err);

    if (!ret) {
        fprintf(stderr, "blockctl: %s\n", err->message);
    }
    return ret;
}

void bd_ctl_print_json(JsonNode *node)
{
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autofree char *text = NULL;

    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 2);
    json_generator_set_root(gen, node);
    text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
}

char *bd_ctl_size(gint64 bytes)
{
    static const char *const units[] = { "bytes", "KiB", "MiB", "GiB",
                                         "TiB", "PiB" };
    double v = (double)MAX(bytes, 0);
    guint u = 0;

    while (v >= 1024 && u + 1 < G_N_ELEMENTS(units)) {
        v /= 1024;
        u++;
    }
    /* Whole numbers without a fraction: "64 MiB", "1.5 GiB". */
    if (v == (double)(gint64)v) {
        return g_strdup_printf("%" G_GINT64_FORMAT " %s", (gint64)v,
                               units[u]);
    }
    return g_strdup_printf("%.1f %s", v, units[u]);
}

int main(int argc, char **argv)
{
    BdCtlGlobal g = { .socket = g_getenv("BLOCKD_SOCKET") };
    int i = 1;

    setlocale(LC_ALL, "");
    /* --json may come anywhere, also after the subcommand. */
    int n = 1;
    for (int k = 1; k < argc; k++) {
        if (!strcmp(argv[k], "--json")) {
            g.json = TRUE;
        } else {
            argv[n++] = argv[k];
        }
    }
    argc = n;
    argv[argc] = NULL;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-s") || !strcmp(argv[i], "--socket")) {
            if (++i == argc) {
                return bd_ctl_usage("%s needs a socket path", argv[i - 1]);
            }
            g.socket = argv[i];
        } else if (g_str_has_prefix(argv[i], "--socket=")) {
            g.socket = argv[i] + strlen("--socket=");
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return BD_CTL_OK;
        } else {
            return bd_ctl_usage("unknown option '%s' (try --help)", argv[i]);
        }
    }
    if (i == argc) {
        usage(stderr);
        return BD_CTL_USAGE;
    }
    for (gsize k = 0; k < G_N_ELEMENTS(commands); k++) {
        if (!strcmp(argv[i], commands[k].name)) {
            if (!g.socket) {
                return bd_ctl_usage("no QMP socket: give -s PATH or set "
                                    "BLOCKD_SOCKET");
            }
            return commands[k].fn(&g, argc - i, argv + i);
        }
    }
    return bd_ctl_usage("unknown command '%s' (try --help)", argv[i]);
}
