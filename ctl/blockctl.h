/* SPDX-License-Identifier: MIT */
/* blockctl: the human command line for blockd.  The subcommands and
 * what they share: the connection, output mode and exit codes. */
#ifndef BD_CTL_BLOCKCTL_H
#define BD_CTL_BLOCKCTL_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "ctl/qmp-client.h"

/* Exit codes: 0 success, 1 the command failed, 2 usage error. */
enum { BD_CTL_OK = 0, BD_CTL_FAILED = 1, BD_CTL_USAGE = 2 };

typedef struct {
    const char *socket;     /* -s, or $BLOCKD_SOCKET */
    gboolean json;          /* --json: machine-readable output */
} BdCtlGlobal;

/* A subcommand: argv[0] is its name.  Returns an exit code; on failure
 * it has printed the reason to stderr. */
typedef int (*BdCtlCommandFn)(const BdCtlGlobal *g, int argc, char **argv);

/* Connect to the daemon or print why not (exit code 1). */
BdQmpClient *bd_ctl_connect(const BdCtlGlobal *g);
/* Run a command; on failure print the daemon's desc and return NULL. */
JsonNode *bd_ctl_execute(BdQmpClient *c, const char *command,
                         JsonNode *args);
/* Print 'node' as JSON (pretty) on stdout. */
void bd_ctl_print_json(JsonNode *node);
/* "1.5 GiB" */
char *bd_ctl_size(gint64 bytes);
/* A usage error: the message, then exit code 2. */
int bd_ctl_usage(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* keyval arguments typed along the command's schema (typed-args.c). */
JsonNode *bd_ctl_typed_args(BdQmpClient *c, const char *command,
                            JsonNode *args, GError **errp);

int bd_ctl_cmd_qmp(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_status(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_graph(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_jobs(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_wait(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_backup(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_backup_list(const BdCtlGlobal *g, int argc, char **argv);
int bd_ctl_cmd_restore(const BdCtlGlobal *g, int argc, char **argv);

#endif
