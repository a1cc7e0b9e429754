/* SPDX-License-Identifier: MIT */
/* The rbd driver's options (QEMU's BlockdevOptionsRbd) and its
 * connection to a Ceph cluster: librados configured from the conf file,
 * the servers, the user and key, then the pool and the image opened.
 *
 * Thread model: rbd_config_decode and rbd_connect run on the calling
 * thread (open on the main thread, create on a job thread).
 * rbd_connect_bounded hands the connection to a thread of its own and
 * waits for it at most the connect timeout: librados blocks until the
 * monitor answers.  ConnectJob.lock protects 'done' and 'abandoned';
 * the thread that is last to let go of a job frees it.
 */
#define G_LOG_DOMAIN "blockd-rbd"

#include <errno.h>
#include <string.h>

#include "graph/error.h"
#include "graph/node.h"
#include "objects/secret.h"
#include "formats/rbd/rbd-int.h"

typedef struct {
    const char *pool, *ns, *image, *conf, *snapshot, *user, *key_secret;
    GVariant *auth;
    GVariant *server;
} RbdOptions;

static const char *const auth_mode_values[] = { "cephx", "none", NULL };
static const BdSchemaType auth_mode_type = {
    .name = "RbdAuthMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = auth_mode_values };
static const BdSchemaType auth_mode_list = {
    .name = "[RbdAuthMode]", .kind = BD_SCHEMA_LIST,
    .element = &auth_mode_type };

typedef struct {
    const char *host, *port;
} RbdServer;

static const BdSchemaField inet_base_fields[] = {
    { "host", &bd_schema_str, FALSE, BD_AT(RbdServer, host) },
    { "port", &bd_schema_str, FALSE, BD_AT(RbdServer, port) },
    { NULL } };
static const BdSchemaType inet_base_type = {
    .name = "InetSocketAddressBase", .kind = BD_SCHEMA_OBJECT,
    .fields = inet_base_fields };
static const BdSchemaType inet_base_list = {
    .name = "[InetSocketAddressBase]", .kind = BD_SCHEMA_LIST,
    .element = &inet_base_type };

#define O(f) BD_AT(RbdOptions, f)

/* QAPI BlockdevOptionsRbd (encryption aside); the strong members are
 * QEMU's qemu_rbd_strong_runtime_opts. */
const BdSchemaField rbd_options_fields[] = {
    { "pool", &bd_schema_str, FALSE, O(pool), .flags = BD_FIELD_STRONG },
    { "namespace", &bd_schema_str, TRUE, O(ns), .flags = BD_FIELD_STRONG },
    { "image", &bd_schema_str, FALSE, O(image), .flags = BD_FIELD_STRONG },
    { "conf", &bd_schema_str, TRUE, O(conf), .flags = BD_FIELD_STRONG },
    { "snapshot", &bd_schema_str, TRUE, O(snapshot),
      .flags = BD_FIELD_STRONG },
    { "user", &bd_schema_str, TRUE, O(user), .flags = BD_FIELD_STRONG },
    { "auth-client-required", &auth_mode_list, TRUE, O(auth) },
    { "key-secret", &bd_schema_str, TRUE, O(key_secret) },
    { "server", &inet_base_list, TRUE, O(server),
      .flags = BD_FIELD_STRONG },
    { NULL } };

const BdSchemaType rbd_options_type = {
    .name = "BlockdevOptionsRbd", .kind = BD_SCHEMA_OBJECT,
    .fields = rbd_options_fields };

void rbd_config_clear(RbdConfig *cfg)
{
    g_clear_pointer(&cfg->pool, g_free);
    g_clear_pointer(&cfg->ns, g_free);
    g_clear_pointer(&cfg->image, g_free);
    g_clear_pointer(&cfg->snapshot, g_free);
    g_clear_pointer(&cfg->conf, g_free);
    g_clear_pointer(&cfg->user, g_free);
    if (cfg->key) {
        memset(cfg->key, 0, strlen(cfg->key));
    }
    g_clear_pointer(&cfg->key, g_free);
    g_clear_pointer(&cfg->mon_host, g_free);
    g_clear_pointer(&cfg->auth_client_required, g_free);
    g_clear_pointer(&cfg->keyvalue_pairs, g_strfreev);
}

static void config_copy(RbdConfig *to, const RbdConfig *from)
{
    to->pool = g_strdup(from->pool);
    to->ns = g_strdup(from->ns);
    to->image = g_strdup(from->image);
    to->snapshot = g_strdup(from->snapshot);
    to->conf = g_strdup(from->conf);
    to->user = g_strdup(from->user);
    to->key = g_strdup(from->key);
    to->mon_host = g_strdup(from->mon_host);
    to->auth_client_required = g_strdup(from->auth_client_required);
    to->keyvalue_pairs = g_strdupv(from->keyvalue_pairs);
    to->nocache = from->nocache;
}

char *rbd_config_fingerprint(const RbdConfig *cfg)
{
    const char *parts[] = {
        cfg->pool, cfg->ns, cfg->image, cfg->snapshot, cfg->conf, cfg->user,
        cfg->key, cfg->mon_host, cfg->auth_client_required };
    g_autoptr(GString) s = g_string_new(cfg->nocache ? "d" : "c");

    for (gsize i = 0; i < G_N_ELEMENTS(parts); i++) {
        /* \x1f cannot be in any of them; NULL and "" differ. */
        g_string_append(s, parts[i] ? parts[i] : "\x1e");
        g_string_append_c(s, '\x1f');
    }
    for (char **kv = cfg->keyvalue_pairs; kv && *kv; kv++) {
        g_string_append(s, *kv);
        g_string_append_c(s, '\x1f');
    }
    return g_string_free(g_steal_pointer(&s), FALSE);
}

/* QEMU's qemu_rbd_mon_host: "host:port;[v6host]:port". */
static char *mon_host_of(GVariant *servers)
{
    g_autoptr(GString) s = g_string_new(NULL);
    gsize n = g_variant_n_children(servers);

    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(servers, i);
        g_autoptr(GVariant) srv = g_variant_get_variant(boxed);
        RbdServer a = { 0 };

        bd_schema_decode(inet_base_fields, srv, &a);
        if (s->len) {
            g_string_append_c(s, ';');
        }
        g_string_append_printf(s, strchr(a.host, ':') ? "[%s]:%s" : "%s:%s",
                               a.host, a.port);
        bd_schema_clear(inet_base_fields, &a);
    }
    return g_string_free(g_steal_pointer(&s), FALSE);
}

static char *auth_of(GVariant *modes)
{
    g_autoptr(GString) s = g_string_new(NULL);
    gsize n = g_variant_n_children(modes);

    for (gsize i = 0; i < n; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(modes, i);
        g_autoptr(GVariant) mode = g_variant_get_variant(boxed);

        if (s->len) {
            g_string_append_c(s, ';');
        }
        g_string_append(s, g_variant_get_string(mode, NULL));
    }
    return g_string_free(g_steal_pointer(&s), FALSE);
}

gboolean rbd_config_decode(GVariant *options, RbdConfig *cfg, GError **errp)
{
    RbdOptions o = { 0 };
    gboolean ok = TRUE;
    g_autoptr(GVariant) pairs = NULL;

    BdNodeOptions common = { 0 };

    /* As QEMU: cache.direct=on turns librbd's cache off, else on. */
    bd_node_options_decode(options, &common);
    cfg->nocache = common.cache.direct;
    bd_schema_decode(rbd_options_fields, options, &o);
    cfg->pool = g_strdup(o.pool);
    cfg->ns = g_strdup(o.ns);
    cfg->image = g_strdup(o.image);
    cfg->snapshot = g_strdup(o.snapshot);
    cfg->conf = g_strdup(o.conf);
    cfg->user = g_strdup(o.user);
    if (o.server && g_variant_n_children(o.server)) {
        cfg->mon_host = mon_host_of(o.server);
    }
    if (o.auth && g_variant_n_children(o.auth)) {
        cfg->auth_client_required = auth_of(o.auth);
    }
    pairs = g_variant_lookup_value(options, RBD_KEYVALUE_PAIRS,
                                   G_VARIANT_TYPE_STRING_ARRAY);
    if (pairs) {
        cfg->keyvalue_pairs = g_variant_dup_strv(pairs, NULL);
    }
    if (o.key_secret) {
        /* As QEMU: the secret's bytes, base64-encoded, are the key; a
         * secret given as format=base64 with the key `ceph auth
         * get-key` prints is that key again. */
        g_autoptr(GBytes) bytes = bd_secret_lookup(o.key_secret, errp);
        if (bytes) {
            gsize len;
            const guchar *data = g_bytes_get_data(bytes, &len);
            cfg->key = g_base64_encode(data, len);
        } else {
            ok = FALSE;
        }
    }
    bd_schema_clear(rbd_options_fields, &o);
    return ok;
}

void rbd_conn_close(RbdConn *c)
{
    if (c->image) {
        rbd_close(c->image);
        c->image = NULL;
    }
    if (c->io) {
        rados_ioctx_destroy(c->io);
        c->io = NULL;
    }
    if (c->cluster) {
        rados_shutdown(c->cluster);
        c->cluster = NULL;
    }
}

static gboolean errno_error(GError **errp, int r, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static gboolean errno_error(GError **errp, int r, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *what = NULL;

    va_start(ap, fmt);
    what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "%s: %s", what,
                g_strerror(-r));
    return FALSE;
}

/* Our default for 'key' unless something set it away from librados'
 * own default 'lib_default'. */
static void default_timeout(rados_t cluster, const char *key,
                            double lib_default, double ours)
{
    char buf[64];

    if (rados_conf_get(cluster, key, buf, sizeof(buf)) == 0 &&
        g_ascii_strtod(buf, NULL) == lib_default) {
        g_snprintf(buf, sizeof(buf), "%g", ours);
        rados_conf_set(cluster, key, buf);
    }
}

static double conf_double(rados_t cluster, const char *key)
{
    char buf[64];

    if (rados_conf_get(cluster, key, buf, sizeof(buf)) != 0) {
        return 0;
    }
    return g_ascii_strtod(buf, NULL);
}

static gboolean conf_set(rados_t cluster, const char *key, const char *val,
                         GError **errp)
{
    int r = rados_conf_set(cluster, key, val);

    if (r < 0) {
        return errno_error(errp, r, "invalid conf option %s", key);
    }
    return TRUE;
}

/* The cluster handle, configured as QEMU's qemu_rbd_connect does, but
 * not yet connected.  Local work only (the conf file). */
static gboolean cluster_prepare(const RbdConfig *cfg, RbdConn *c,
                                GError **errp)
{
    int r = rados_create(&c->cluster, cfg->user);

    if (r < 0) {
        c->cluster = NULL;
        return errno_error(errp, r, "error initializing");
    }
    if (cfg->conf) {
        r = rados_conf_read_file(c->cluster, cfg->conf);
        if (r < 0) {
            return errno_error(errp, r, "error reading conf file %s",
                               cfg->conf);
        }
    } else {
        /* librados' search path; no file is not an error. */
        rados_conf_read_file(c->cluster, NULL);
    }
    /* As QEMU: the file name's options after the conf file, before the
     * options of the schema (and rbd_cache) that they may not override. */
    for (char **kv = cfg->keyvalue_pairs; kv && kv[0] && kv[1]; kv += 2) {
        if (!conf_set(c->cluster, kv[0], kv[1], errp)) {
            return FALSE;
        }
    }
    if ((cfg->mon_host &&
         !conf_set(c->cluster, "mon_host", cfg->mon_host, errp)) ||
        (cfg->key && !conf_set(c->cluster, "key", cfg->key, errp)) ||
        (cfg->auth_client_required &&
         !conf_set(c->cluster, "auth_client_required",
                   cfg->auth_client_required, errp))) {
        return FALSE;
    }
    if (!conf_set(c->cluster, "rbd_cache", cfg->nocache ? "false" : "true",
                  errp)) {
        return FALSE;
    }
    default_timeout(c->cluster, "client_mount_timeout", 300,
                    RBD_DEFAULT_MOUNT_TIMEOUT);
    default_timeout(c->cluster, "rados_mon_op_timeout", 0,
                    RBD_DEFAULT_MON_OP_TIMEOUT);
    default_timeout(c->cluster, "rados_osd_op_timeout", 0,
                    RBD_DEFAULT_OSD_OP_TIMEOUT);
    c->mount_timeout = conf_double(c->cluster, "client_mount_timeout");
    return TRUE;
}

/* What the connection is doing, for the message when it takes too long. */
enum { STAGE_CONNECT, STAGE_POOL, STAGE_IMAGE };

static gboolean cluster_connect(const RbdConfig *cfg, gboolean open_image,
                                RbdConn *c, int *stage, GError **errp)
{
    int r;

    g_atomic_int_set(stage, STAGE_CONNECT);
    r = rados_connect(c->cluster);
    if (r == -ETIMEDOUT) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "error connecting: %s (cluster unreachable or "
                    "credentials refused, timeout %g s)",
                    g_strerror(ETIMEDOUT), c->mount_timeout);
        return FALSE;
    }
    if (r < 0) {
        return errno_error(errp, r, "error connecting");
    }
    g_atomic_int_set(stage, STAGE_POOL);
    r = rados_ioctx_create(c->cluster, cfg->pool, &c->io);
    if (r < 0) {
        c->io = NULL;
        return errno_error(errp, r, "error opening pool %s", cfg->pool);
    }
    rados_ioctx_set_namespace(c->io, cfg->ns ? cfg->ns : "");
    if (!open_image) {
        return TRUE;
    }
    g_atomic_int_set(stage, STAGE_IMAGE);
    r = rbd_open(c->io, cfg->image, &c->image, cfg->snapshot);
    if (r < 0) {
        c->image = NULL;
        if (r == -ENOENT && cfg->snapshot) {
            /* The image may be there and the snapshot not. */
            return errno_error(errp, r, "error reading header from %s "
                               "(snapshot %s)", cfg->image, cfg->snapshot);
        }
        return errno_error(errp, r, "error reading header from %s",
                           cfg->image);
    }
    return TRUE;
}

gboolean rbd_connect(const RbdConfig *cfg, gboolean open_image,
                     RbdConn *out, GError **errp)
{
    int stage;

    memset(out, 0, sizeof(*out));
    if (!cluster_prepare(cfg, out, errp) ||
        !cluster_connect(cfg, open_image, out, &stage, errp)) {
        rbd_conn_close(out);
        return FALSE;
    }
    return TRUE;
}

typedef struct {
    GMutex lock;
    GCond cond;
    gboolean done;          /* the thread has finished */
    gboolean abandoned;     /* the waiter gave up: the thread frees */
    int stage;              /* atomic */
    RbdConfig cfg;
    gboolean open_image;
    RbdConn conn;
    gboolean ok;
    GError *err;
} ConnectJob;

static void connect_job_free(ConnectJob *j)
{
    rbd_conn_close(&j->conn);
    rbd_config_clear(&j->cfg);
    g_clear_error(&j->err);
    g_mutex_clear(&j->lock);
    g_cond_clear(&j->cond);
    g_free(j);
}

static gpointer connect_thread(gpointer opaque)
{
    ConnectJob *j = opaque;
    gboolean abandoned;

    j->ok = cluster_connect(&j->cfg, j->open_image, &j->conn, &j->stage,
                            &j->err);
    g_mutex_lock(&j->lock);
    j->done = TRUE;
    abandoned = j->abandoned;
    g_cond_signal(&j->cond);
    g_mutex_unlock(&j->lock);
    if (abandoned) {
        connect_job_free(j);
    }
    return NULL;
}

static void timeout_error(ConnectJob *j, double secs, GError **errp)
{
    switch (g_atomic_int_get(&j->stage)) {
    case STAGE_CONNECT:
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "error connecting: %s (cluster unreachable or "
                    "credentials refused, timeout %g s)",
                    g_strerror(ETIMEDOUT), secs);
        break;
    case STAGE_POOL:
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "error opening pool %s: %s (no answer within %g s)",
                    j->cfg.pool, g_strerror(ETIMEDOUT), secs);
        break;
    default:
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "error reading header from %s: %s (no answer from the "
                    "OSDs within %g s)", j->cfg.image, g_strerror(ETIMEDOUT),
                    secs);
        break;
    }
}

gboolean rbd_connect_bounded(const RbdConfig *cfg, gboolean open_image,
                             RbdConn *out, GError **errp)
{
    ConnectJob *j = g_new0(ConnectJob, 1);
    g_autoptr(GThread) thread = NULL;
    double secs;
    gint64 deadline;
    gboolean done;

    memset(out, 0, sizeof(*out));
    g_mutex_init(&j->lock);
    g_cond_init(&j->cond);
    config_copy(&j->cfg, cfg);
    j->open_image = open_image;
    if (!cluster_prepare(&j->cfg, &j->conn, errp)) {
        connect_job_free(j);
        return FALSE;
    }
    secs = j->conn.mount_timeout;
    thread = g_thread_try_new("rbd-connect", connect_thread, j, errp);
    if (!thread) {
        connect_job_free(j);
        return FALSE;
    }
    /* Every answer librados waits for is bounded by its own timeouts
     * (set above), but together they could add up: the whole open gets
     * the mount timeout and one second. */
    deadline = g_get_monotonic_time() + (gint64)((secs + 1) * G_USEC_PER_SEC);
    g_mutex_lock(&j->lock);
    while (!j->done) {
        if (secs > 0 && !g_cond_wait_until(&j->cond, &j->lock, deadline)) {
            break;
        }
        if (secs <= 0) {
            g_cond_wait(&j->cond, &j->lock);
        }
    }
    done = j->done;
    j->abandoned = !done;
    g_mutex_unlock(&j->lock);
    if (!done) {
        /* The thread closes the connection when librados lets go. */
        timeout_error(j, secs, errp);
        return FALSE;
    }
    g_thread_join(g_steal_pointer(&thread));
    if (!j->ok) {
        g_propagate_error(errp, g_steal_pointer(&j->err));
        connect_job_free(j);
        return FALSE;
    }
    *out = j->conn;
    memset(&j->conn, 0, sizeof(j->conn));
    connect_job_free(j);
    return TRUE;
}
