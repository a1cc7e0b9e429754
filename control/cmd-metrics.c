/* SPDX-License-Identifier: MIT */
/* x-blockd-metrics-start/-stop and --metrics: the metrics endpoint
 * (metrics/metrics.h).  Both take {"addr": SocketAddress} in the flat
 * form ({"type": "unix", "path": P}), as --nbd-server's and newer QEMU
 * commands' addresses are; no legacy 'data' wrapper for a new command.
 * 'max-connections' and 'idle-timeout' bound the HTTP connections
 * (metrics.h; 0: no limit).  'tls-creds' names a tls-creds-x509 object
 * (endpoint server): HTTPS with its server-cert.pem/server-key.pem, and
 * with verify-peer a client certificate signed by its ca-cert.pem; the
 * object is in use (object-del refuses) while the endpoint runs.
 *
 * Thread model: main thread only.
 */
#include "control/control.h"
#include "graph/error.h"
#include "objects/tls-creds.h"
#include "control/qmp-int.h"
#include "graph/main-thread.h"
#include "graph/socket-address.h"
#include "metrics/metrics.h"

typedef struct {
    GVariant *addr;
    const char *tls_creds;
    guint64 max_connections;
    guint64 idle_timeout;
} MetricsArgs;

static const BdSchemaField metrics_fields[] = {
    BD_FIELD("addr", &bd_socket_address, BD_AT(MetricsArgs, addr)),
    BD_OPT("tls-creds", &bd_schema_str, BD_AT(MetricsArgs, tls_creds)),
    BD_OPT("max-connections", &bd_schema_uint32,
           BD_AT(MetricsArgs, max_connections),
           .def.u = BD_METRICS_MAX_CONNECTIONS),
    BD_OPT("idle-timeout", &bd_schema_uint32,
           BD_AT(MetricsArgs, idle_timeout),
           .def.u = BD_METRICS_IDLE_TIMEOUT),
    { NULL } };

/* The credentials object of the running endpoint (in use), or NULL. */
static BdObject *tls_obj;

/* The files of x509 server credentials for GIO's TLS. */
static gboolean metrics_tls(BdTlsCreds *creds, const char *id,
                            BdMetricsTls *tls, char **files,
                            GError **errp)
{
    const char *dir = bd_tls_creds_dir(creds);

    if (bd_tls_creds_kind(creds) != BD_TLS_CREDS_X509 || !dir) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server: TLS credentials '%s' must be "
                    "tls-creds-x509 with a 'dir'", id);
        return FALSE;
    }
    if (bd_tls_creds_key_encrypted(creds)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server: TLS credentials '%s': an encrypted key "
                    "(passwordid) is not supported here", id);
        return FALSE;
    }
    files[0] = g_build_filename(dir, "server-cert.pem", NULL);
    files[1] = g_build_filename(dir, "server-key.pem", NULL);
    files[2] = g_build_filename(dir, "ca-cert.pem", NULL);
    *tls = (BdMetricsTls) { files[0], files[1], files[2],
                            bd_tls_creds_verify_peer(creds) };
    return TRUE;
}
static const BdSchemaType metrics_args = {
    .name = "x-blockd-MetricsOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = metrics_fields };

const BdSchemaType *bd_cmd_metrics_options_schema(void)
{
    return &metrics_args;
}

gboolean bd_cmd_metrics_start(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    MetricsArgs a = { 0 };
    BdSocketAddress addr = { 0 };
    BdMetricsTls tls;
    BdMetricsLimits limits;
    g_autoptr(BdTlsCreds) creds = NULL;
    g_autoptr(BdObject) obj = NULL;
    char *files[3] = { NULL, NULL, NULL };
    gboolean ok;

    bd_schema_decode(metrics_fields, options, &a);
    bd_socket_address_decode(a.addr, &addr);
    if (bd_metrics_running()) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Metrics server already running");
        return FALSE;
    }
    if (a.tls_creds) {
        creds = bd_tls_creds_lookup(a.tls_creds, BD_TLS_ENDPOINT_SERVER, &obj,
                                    errp);
        if (!creds || !metrics_tls(creds, a.tls_creds, &tls, files, errp)) {
            return FALSE;
        }
    }
    limits = (BdMetricsLimits) { (guint32)a.max_connections,
                                 (guint32)a.idle_timeout };
    ok = bd_metrics_start(&addr, a.tls_creds ? &tls : NULL, &limits, errp);
    for (int i = 0; i < 3; i++) {
        g_free(files[i]);
    }
    if (ok && obj) {
        bd_object_use(obj);
        tls_obj = g_steal_pointer(&obj);
    }
    return ok;
}

static gboolean metrics_start(GVariant *args, JsonNode **ret, GError **errp)
{
    (void)ret;
    return bd_cmd_metrics_start(args, errp);
}

gboolean bd_cmd_metrics_stop(GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!bd_metrics_stop(errp)) {
        return FALSE;
    }
    if (tls_obj) {
        bd_object_unuse(tls_obj);
        g_clear_pointer(&tls_obj, bd_object_unref);
    }
    return TRUE;
}

static gboolean metrics_stop(GVariant *args, JsonNode **ret, GError **errp)
{
    (void)args;
    (void)ret;
    return bd_cmd_metrics_stop(errp);
}

static const BdQmpCommand metrics_commands[] = {
    { "x-blockd-metrics-start", bd_cmd_metrics_options_schema, FALSE, NULL,
      metrics_start },
    { "x-blockd-metrics-stop", NULL, FALSE, NULL, metrics_stop },
    { NULL } };

void bd_cmd_metrics_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(metrics_commands);
}
