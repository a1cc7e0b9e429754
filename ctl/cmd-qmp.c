/* SPDX-License-Identifier: MIT */
/* blockctl qmp COMMAND [key=value ...] [--args JSON]: any QMP command,
 * its arguments in the keyval syntax of --blockdev (dotted keys nest),
 * typed along the daemon's schema, or given as JSON. */
#include <stdio.h>
#include <string.h>

#include "control/input.h"
#include "ctl/blockctl.h"

static JsonNode *parse_args(BdQmpClient *c, const char *command, int argc,
                            char **argv, GError **errp)
{
    g_autoptr(GString) kv = g_string_new(NULL);
    g_autoptr(JsonNode) raw = NULL;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--args")) {
            if (i + 1 >= argc || argc != 2) {
                g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                            "--args takes one JSON object, alone");
                return NULL;
            }
            raw = bd_json_parse(argv[i + 1], -1, errp);
            if (raw && !JSON_NODE_HOLDS_OBJECT(raw)) {
                g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                            "--args must be a JSON object");
                return NULL;
            }
            return raw ? g_steal_pointer(&raw) : NULL;
        }
        if (!strchr(argv[i], '=')) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "argument '%s' is not key=value", argv[i]);
            return NULL;
        }
        /* Each word is one key=value; a comma inside a value stays a
         * comma (doubled for the keyval parser). */
        const char *sep = strchr(argv[i], '=');
        g_autofree char *key = g_strndup(argv[i], sep - argv[i]);
        g_auto(GStrv) parts = g_strsplit(sep + 1, ",", -1);
        g_autofree char *value = g_strjoinv(",,", parts);
        if (kv->len) {
            g_string_append_c(kv, ',');
        }
        g_string_append_printf(kv, "%s=%s", key, value);
    }
    if (!kv->len) {
        return NULL;
    }
    raw = bd_keyval_parse(kv->str, NULL, errp);
    if (!raw) {
        return NULL;
    }
    return bd_ctl_typed_args(c, command, raw, errp);
}

int bd_ctl_cmd_qmp(const BdCtlGlobal *g, int argc, char **argv)
{
    g_autoptr(BdQmpClient) c = NULL;
    g_autoptr(JsonNode) args = NULL, ret = NULL;
    g_autoptr(GError) err = NULL;

    if (argc < 2) {
        return bd_ctl_usage("qmp: which command? (blockctl qmp "
                            "query-jobs, blockctl qmp block-job-cancel "
                            "device=job0)");
    }
    c = bd_ctl_connect(g);
    if (!c) {
        return BD_CTL_FAILED;
    }
    args = parse_args(c, argv[1], argc - 2, argv + 2, &err);
    if (err) {
        return bd_ctl_usage("qmp: %s", err->message);
    }
    ret = bd_ctl_execute(c, argv[1], args);
    if (!ret) {
        return BD_CTL_FAILED;
    }
    bd_ctl_print_json(ret);
    return BD_CTL_OK;
}
