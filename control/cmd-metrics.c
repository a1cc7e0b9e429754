/* SPDX-License-Identifier: MIT */
/* x-blockd-metrics-start/-stop and --metrics: the metrics endpoint
 * (metrics/metrics.h).  Both take {"addr": SocketAddress} in the flat
 * form ({"type": "unix", "path": P}), as --nbd-server's and newer QEMU
 * commands' addresses are; no legacy 'data' wrapper for a new command.
 *
 * Thread model: main thread only.
 */
#include "control/control.h"
#include "control/qmp-int.h"
#include "graph/main-thread.h"
#include "graph/socket-address.h"
#include "metrics/metrics.h"

typedef struct {
    GVariant *addr;
} MetricsArgs;

static const BdSchemaField metrics_fields[] = {
    BD_FIELD("addr", &bd_socket_address, BD_AT(MetricsArgs, addr)),
    { NULL } };
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

    bd_schema_decode(metrics_fields, options, &a);
    bd_socket_address_decode(a.addr, &addr);
    return bd_metrics_start(&addr, errp);
}

static gboolean metrics_start(GVariant *args, JsonNode **ret, GError **errp)
{
    (void)ret;
    return bd_cmd_metrics_start(args, errp);
}

static gboolean metrics_stop(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    (void)args;
    (void)ret;
    return bd_metrics_stop(errp);
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
