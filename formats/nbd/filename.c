/* SPDX-License-Identifier: MIT */
/* The nbd driver's filenames: the URIs and QEMU's legacy "nbd:" strings
 * people put in backing file names and mirror targets, parsed into
 * BlockdevOptionsNbd members, and the name a node shows.
 *
 * Thread model: no state.
 */
#define G_LOG_DOMAIN "blockd-nbd-client"

#include <string.h>

#include "graph/error.h"
#include "formats/nbd/nbd-int.h"

#define NBD_DEFAULT_PORT "10809"
#define EXPORTNAME_OPT ":exportname="

static void put_server(GVariantDict *d, const char *type, const char *k1,
                       const char *v1, const char *k2, const char *v2)
{
    GVariantDict server;

    g_variant_dict_init(&server, NULL);
    g_variant_dict_insert(&server, "type", "s", type);
    g_variant_dict_insert(&server, k1, "s", v1);
    if (k2) {
        g_variant_dict_insert(&server, k2, "s", v2);
    }
    g_variant_dict_insert_value(d, "server", g_variant_dict_end(&server));
}

/* QEMU's nbd_parse_uri: nbd[+tcp]://HOST[:PORT][/EXPORT] and
 * nbd+unix:///[EXPORT]?socket=PATH; one query parameter at most. */
static gboolean parse_uri(const char *filename, GVariantDict *d)
{
    g_autoptr(GUri) uri = g_uri_parse(filename, G_URI_FLAGS_NONE, NULL);
    g_autoptr(GHashTable) params = NULL;
    const char *scheme, *path, *query, *host;
    gboolean is_unix;

    if (!uri) {
        return FALSE;
    }
    scheme = g_uri_get_scheme(uri);
    if (!strcmp(scheme, "nbd") || !strcmp(scheme, "nbd+tcp")) {
        is_unix = FALSE;
    } else if (!strcmp(scheme, "nbd+unix")) {
        is_unix = TRUE;
    } else {
        return FALSE;
    }
    query = g_uri_get_query(uri);
    if (query && *query) {
        params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL);
        if (!params || g_hash_table_size(params) > 1) {
            return FALSE;
        }
    }
    host = g_uri_get_host(uri);
    if (host && !*host) {
        host = NULL;
    }
    if (is_unix) {
        const char *socket = params ? g_hash_table_lookup(params, "socket")
                                    : NULL;
        if (host || g_uri_get_port(uri) > 0 || !socket) {
            return FALSE;
        }
        put_server(d, "unix", "path", socket, NULL, NULL);
    } else {
        g_autofree char *port = NULL;

        if (!host || params) {
            return FALSE;
        }
        port = g_uri_get_port(uri) > 0
               ? g_strdup_printf("%d", g_uri_get_port(uri))
               : g_strdup(NBD_DEFAULT_PORT);
        /* An IPv6 literal comes back without its brackets. */
        put_server(d, "inet", "host", host, "port", port);
    }
    path = g_uri_get_path(uri);
    if (path[0] == '/') {
        path++;
    }
    if (path[0]) {
        g_variant_dict_insert(d, "export", "s", path);
    }
    return TRUE;
}

/* QEMU's inet_parse for "HOST:PORT" and "[IPV6]:PORT". */
static gboolean parse_host_port(const char *spec, char **host, char **port,
                                GError **errp)
{
    const char *colon;

    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':') {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "error parsing IPv6 address '%s'", spec);
            return FALSE;
        }
        *host = g_strndup(spec + 1, end - spec - 1);
        colon = end + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "error parsing address '%s'", spec);
            return FALSE;
        }
        *host = g_strndup(spec, colon - spec);
    }
    *port = g_strdup(colon + 1);
    return TRUE;
}

gboolean nbd_filename_parse(const char *filename, GVariantDict *d,
                            GError **errp)
{
    g_autofree char *file = NULL;
    char *export_name;
    const char *spec;

    if (strstr(filename, "://")) {
        if (!parse_uri(filename, d)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "No valid URL specified");
            return FALSE;
        }
        return TRUE;
    }
    file = g_strdup(filename);
    export_name = strstr(file, EXPORTNAME_OPT);
    if (export_name) {
        if (!export_name[strlen(EXPORTNAME_OPT)]) {
            goto missing;
        }
        *export_name = '\0';
        export_name += strlen(EXPORTNAME_OPT);
        g_variant_dict_insert(d, "export", "s", export_name);
    }
    if (!g_str_has_prefix(file, "nbd:")) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File name string for NBD must start with 'nbd:'");
        return FALSE;
    }
    spec = file + strlen("nbd:");
    if (!*spec) {
        goto missing;
    }
    if (g_str_has_prefix(spec, "unix:")) {
        put_server(d, "unix", "path", spec + strlen("unix:"), NULL, NULL);
    } else {
        g_autofree char *host = NULL, *port = NULL;

        if (!parse_host_port(spec, &host, &port, errp)) {
            return FALSE;
        }
        put_server(d, "inet", "host", host, "port", port);
    }
    return TRUE;

missing:
    /* QEMU then reports the missing server member. */
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Parameter 'server' is missing");
    return FALSE;
}

char *nbd_filename_of(const NbdConfig *cfg)
{
    const char *e = cfg->export_name;

    if (cfg->type == BD_SOCKET_ADDRESS_UNIX) {
        return e ? g_strdup_printf("nbd+unix:///%s?socket=%s", e, cfg->path)
                 : g_strdup_printf("nbd+unix://?socket=%s", cfg->path);
    }
    return e ? g_strdup_printf("nbd://%s:%s/%s", cfg->host, cfg->port, e)
             : g_strdup_printf("nbd://%s:%s", cfg->host, cfg->port);
}
