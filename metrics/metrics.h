/* SPDX-License-Identifier: MIT */
/* The metrics endpoint: GET /metrics in the Prometheus text exposition
 * format (version 0.0.4), or OpenMetrics 1.0.0 when the scraper's Accept
 * header prefers it, served by libsoup 3 on the main loop.
 *
 * The figures are the lock-free counters the I/O path keeps (nodes:
 * graph/io.c, exports: BdExport.stats, NBD clients: export-nbd/) and
 * the state the main thread owns (jobs, dirty bitmaps); a scrape reads
 * them on the main thread, so it sees the graph as QMP does, and the
 * request path never waits for it.
 *
 * Thread model: everything here runs on the main thread (asserted).
 */
#ifndef BD_METRICS_METRICS_H
#define BD_METRICS_METRICS_H

#include <glib.h>
#include "graph/socket-address.h"

/* HTTPS: PEM files of the server's certificate and key, and with
 * verify_peer the CA a client certificate must be signed by. */
typedef struct {
    const char *cert_file;
    const char *key_file;
    const char *ca_file;
    gboolean verify_peer;
} BdMetricsTls;

/* Limits of the HTTP side: connections served at once (more are
 * closed as they come), and the seconds a connection may take to send a
 * request and read the answer, idle time before it included (then it is
 * closed).  0: no limit. */
typedef struct {
    guint32 max_connections;
    guint32 idle_timeout;
} BdMetricsLimits;
#define BD_METRICS_MAX_CONNECTIONS 16
#define BD_METRICS_IDLE_TIMEOUT 30

/* Listen on a unix or inet address and serve, over TLS when 'tls' is
 * not NULL, within 'limits'.  Errors: "Metrics server already running", the socket's
 * ("Failed to bind socket to ..."), the certificate's.  A unix socket
 * file is removed again by bd_metrics_stop. */
gboolean bd_metrics_start(const BdSocketAddress *addr,
                          const BdMetricsTls *tls,
                          const BdMetricsLimits *limits, GError **errp);
/* Stop serving ("Metrics server not running"). */
gboolean bd_metrics_stop(GError **errp);
gboolean bd_metrics_running(void);

/* The endpoint's own figures: connections open now, and those it closed
 * for a limit since the daemon started (over max-connections, idle
 * timeout). */
typedef struct {
    guint64 open;
    guint64 refused;
    guint64 timed_out;
} BdMetricsHttpStats;
void bd_metrics_http_stats(BdMetricsHttpStats *st);

/* The version blockd_build_info reports (the daemon's, with the git
 * description); set once at start-up. */
void bd_metrics_set_version(const char *version);

/* The exposition formats a scrape may ask for (HTTP Accept). */
typedef enum {
    BD_METRICS_TEXT,          /* Prometheus text format 0.0.4 */
    BD_METRICS_OPENMETRICS,   /* OpenMetrics text format 1.0.0 */
} BdMetricsFormat;

/* The whole exposition text of one scrape. */
GString *bd_metrics_collect(BdMetricsFormat fmt);

#endif
