/* SPDX-License-Identifier: MIT */
/* Socket chardev options: --chardev socket,... (QemuOpts, implied key
 * "backend") and QMP's ChardevSocket, both read into one
 * BdChardevSockOpts and checked as QEMU checks them, with its texts;
 * chardev.c opens the result.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include <sys/un.h>
#include "control/chardev-int.h"
#include "control/input.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "objects/tls-creds.h"

gboolean bd_chardev_opts_check(const BdChardevSockOpts *o, GError **errp)
{
    const char *unsupported = NULL;

    if (o->type == BD_SOCKET_ADDRESS_FD && o->has_reconnect) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'reconnect' option is incompatible with 'fd' address "
                    "type");
        return FALSE;
    }
    if (o->tls_authz && !o->tls_creds) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'tls_authz' option requires 'tls_creds' option");
        return FALSE;
    }
    if (o->server && o->has_reconnect) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'reconnect' option is incompatible with socket in "
                    "server listen mode");
        return FALSE;
    }
    if (!o->server && o->websocket) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Websocket client is not implemented");
        return FALSE;
    }
    if (!o->server && o->has_wait) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'wait' option is incompatible with socket in client "
                    "connect mode");
        return FALSE;
    }
    if (o->tls_creds) {
        g_autoptr(BdObject) obj = bd_object_find(o->tls_creds);

        if (!obj) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "No TLS credentials with id '%s'", o->tls_creds);
            return FALSE;
        }
        if (!bd_object_is_kind(obj, BD_TLS_CREDS_KIND)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Object with id '%s' is not TLS credentials",
                        o->tls_creds);
            return FALSE;
        }
        unsupported = "tls-creds";
    }
    if (o->type == BD_SOCKET_ADDRESS_FD && !o->server) {
        /* QEMU would take a connected socket; blockd only listens on a
         * passed one. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "a file descriptor chardev must be a server "
                    "(server=on): blockd takes listening sockets only");
        return FALSE;
    }
    if (o->type == BD_SOCKET_ADDRESS_UNIX &&
        strlen(o->path) + (o->abstract ? 1 : 0) >=
            sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "UNIX socket path '%s' is too long", o->path);
        return FALSE;
    }
    if (o->type == BD_SOCKET_ADDRESS_VSOCK) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "vsock chardevs are not supported by blockd");
        return FALSE;
    }
    unsupported = o->telnet ? "telnet" : o->tn3270 ? "tn3270"
                : o->websocket ? "websocket" : o->logfile ? "logfile"
                : unsupported;
    if (unsupported) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "socket option '%s' is not supported by blockd",
                    unsupported);
        return FALSE;
    }
    return TRUE;
}

/* --- --chardev socket,... (QemuOpts, implied key "backend") --- */

static const char *const known_keys[] = {
    "backend", "id", "path", "server", "wait", "host", "port", "ipv4",
    "ipv6", "nodelay", "abstract", "tight", "reconnect", "telnet",
    "tn3270", "websocket", "tls-creds", "tls-authz", "logfile", "fd", NULL };
static const char *const unsupported_keys[] = {
    "to", "mux", "logappend", "numeric", "keep-alive", NULL };

static gboolean opt_bool(JsonObject *o, const char *key, gboolean def,
                         gboolean *has, gboolean *out, GError **errp)
{
    const char *s = json_object_get_string_member_with_default(o, key, NULL);

    *out = def;
    if (has) {
        *has = s != NULL;
    }
    if (s && !bd_parse_bool(s, out)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' expects 'on' or 'off'", key);
        return FALSE;
    }
    return TRUE;
}

static gboolean check_keys(JsonObject *o, GError **errp)
{
    g_autoptr(GList) keys = json_object_get_members(o);

    for (GList *l = keys; l; l = l->next) {
        const char *k = l->data;
        JsonNode *v = json_object_get_member(o, k);
        if (!JSON_NODE_HOLDS_VALUE(v)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", k);
            return FALSE;
        }
        if (g_strv_contains(unsupported_keys, k)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "chardev: socket option '%s' is not supported by "
                        "blockd", k);
            return FALSE;
        }
        if (!g_strv_contains(known_keys, k)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid parameter '%s'", k);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean keyval_opts(JsonObject *o, BdChardevSockOpts *s, GError **errp)
{
    const char *reconnect = json_object_get_string_member_with_default(
        o, "reconnect", NULL);
    guint64 r;

    s->path = json_object_get_string_member_with_default(o, "path", NULL);
    s->host = json_object_get_string_member_with_default(o, "host", NULL);
    s->port = json_object_get_string_member_with_default(o, "port", NULL);
    s->fd = json_object_get_string_member_with_default(o, "fd", NULL);
    s->tls_creds = json_object_get_string_member_with_default(
        o, "tls-creds", NULL);
    s->tls_authz = json_object_get_string_member_with_default(
        o, "tls-authz", NULL);
    s->logfile = json_object_get_string_member_with_default(o, "logfile",
                                                            NULL);
    if (!opt_bool(o, "server", FALSE, &s->has_server, &s->server, errp) ||
        !opt_bool(o, "wait", TRUE, &s->has_wait, &s->wait, errp) ||
        !opt_bool(o, "nodelay", FALSE, NULL, &s->nodelay, errp) ||
        !opt_bool(o, "abstract", FALSE, NULL, &s->abstract, errp) ||
        !opt_bool(o, "tight", TRUE, NULL, &s->tight, errp) ||
        !opt_bool(o, "telnet", FALSE, NULL, &s->telnet, errp) ||
        !opt_bool(o, "tn3270", FALSE, NULL, &s->tn3270, errp) ||
        !opt_bool(o, "websocket", FALSE, NULL, &s->websocket, errp)) {
        return FALSE;
    }
    s->wait = s->wait && s->server;
    if (reconnect) {
        if (!bd_parse_uint64(reconnect, &r) || r > G_MAXINT64) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameter 'reconnect' expects a number");
            return FALSE;
        }
        s->has_reconnect = TRUE;
        s->reconnect = (gint64)r;
    }
    if (s->path) {
        s->type = BD_SOCKET_ADDRESS_UNIX;
    } else if (s->port) {
        s->type = BD_SOCKET_ADDRESS_INET;
        s->host = s->host ? s->host : "";
    } else if (s->fd) {
        s->type = BD_SOCKET_ADDRESS_FD;
    } else {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    s->host ? "chardev: socket: no port given"
                            : "chardev: socket: no host given");
        return FALSE;
    }
    return TRUE;
}

/* --chardev's argument parsed into 'node' and read into 's' (whose
 * strings point into it), as far as it can be without the chardevs
 * that exist. */
static gboolean chardev_parse(const char *arg, JsonNode **node,
                              BdChardevSockOpts *s, GError **errp)
{
    JsonObject *o;
    const char *backend;

    *node = bd_keyval_parse(arg, "backend", errp);
    if (!*node) {
        return FALSE;
    }
    o = json_node_get_object(*node);
    /* First: a dotted key ("id.0=x") makes a member an array or object,
     * which json-glib's string getters refuse with a critical. */
    if (!check_keys(o, errp)) {
        return FALSE;
    }
    backend = json_object_get_string_member_with_default(o, "backend", NULL);
    s->id = json_object_get_string_member_with_default(o, "id", NULL);
    if (!s->id) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev: no id specified");
        return FALSE;
    }
    if (!backend) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "chardev: \"%s\" missing backend", s->id);
        return FALSE;
    }
    if (strcmp(backend, "socket") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'%s' is not a valid char driver name", backend);
        return FALSE;
    }
    return keyval_opts(o, s, errp);
}

gboolean bd_chardev_check(const char *arg, GError **errp)
{
    g_autoptr(JsonNode) node = NULL;
    BdChardevSockOpts s = { 0 };

    return chardev_parse(arg, &node, &s, errp) &&
           bd_chardev_opts_check(&s, errp);
}

gboolean bd_chardev_add(const char *arg, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(JsonNode) node = NULL;
    BdChardevSockOpts s = { 0 };
    BdChardev *c;

    if (!chardev_parse(arg, &node, &s, errp)) {
        return FALSE;
    }
    if (bd_chardev_socket_exists(s.id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Duplicate ID '%s' for chardev", s.id);
        return FALSE;
    }
    c = bd_chardev_open(&s, errp);
    if (!c) {
        return FALSE;
    }
    bd_chardev_socket_insert(c);
    return TRUE;
}

/* --- ChardevSocket (QMP) --- */

static gboolean lookup_bool(GVariant *d, const char *key, gboolean *out)
{
    return g_variant_lookup(d, key, "b", out);
}

BdChardev *bd_chardev_socket_new(const char *id, GVariant *data,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GVariant) addr = g_variant_lookup_value(data, "addr", NULL);
    g_autoptr(GVariant) inner = NULL;
    const char *type = "";
    BdChardevSockOpts s = { .id = id, .server = TRUE, .tight = TRUE };

    g_variant_lookup(addr, "type", "&s", &type);
    inner = g_variant_lookup_value(addr, "data", NULL);
    for (int i = 0; bd_socket_address_type_names[i]; i++) {
        if (strcmp(bd_socket_address_type_names[i], type) == 0) {
            s.type = i;
        }
    }
    if (inner) {
        g_variant_lookup(inner, "path", "&s", &s.path);
        g_variant_lookup(inner, "host", "&s", &s.host);
        g_variant_lookup(inner, "port", "&s", &s.port);
        g_variant_lookup(inner, "str", "&s", &s.fd);
        lookup_bool(inner, "abstract", &s.abstract);
        lookup_bool(inner, "tight", &s.tight);
    }
    s.has_server = lookup_bool(data, "server", &s.server);
    s.has_wait = lookup_bool(data, "wait", &s.wait);
    s.has_reconnect = g_variant_lookup(data, "reconnect", "x", &s.reconnect);
    lookup_bool(data, "nodelay", &s.nodelay);
    lookup_bool(data, "telnet", &s.telnet);
    lookup_bool(data, "tn3270", &s.tn3270);
    lookup_bool(data, "websocket", &s.websocket);
    g_variant_lookup(data, "tls-creds", "&s", &s.tls_creds);
    g_variant_lookup(data, "tls-authz", "&s", &s.tls_authz);
    g_variant_lookup(data, "logfile", "&s", &s.logfile);
    if (bd_chardev_opts_check(&s, errp) && s.server && s.wait) {
        /* QEMU 7.2 blocks its monitor until a client comes. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'wait' for a client would block the monitor: blockd "
                    "refuses it at runtime (use wait=false)");
        return NULL;
    }
    return bd_chardev_open(&s, errp);
}
