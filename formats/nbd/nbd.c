/* SPDX-License-Identifier: MIT */
/* The 'nbd' protocol driver: a node whose data lives on an NBD server,
 * reached with libnbd (QEMU's BlockdevOptionsNbd).
 *
 * Thread model: open, close, reopen and queries on the main thread;
 * the data callbacks on any thread, many at once, each waiting only for
 * its own reply (client.c).  The driver's state is fixed after open.
 */
#define G_LOG_DOMAIN "blockd-nbd-client"

#include <errno.h>
#include <string.h>

#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "objects/tls-creds.h"
#include "formats/nbd/nbd-int.h"
#include "formats/drivers.h"

/* NBD state flags of block status (base:allocation; a dirty bitmap's
 * "dirty" bit is the same bit as "hole", as QEMU reads it). */
#define NBD_STATE_HOLE 1u
#define NBD_STATE_ZERO 2u

/* The longest zero or trim request: the protocol's length is 32 bits. */
#define NBD_MAX_EFFECT_LENGTH (1ull << 30)

typedef struct {
    GVariant *server;
    const char *export_name;
    const char *tls_creds;
    const char *tls_hostname;
    const char *x_dirty_bitmap;
    guint64 reconnect_delay;
    guint64 open_timeout;
} NbdOptions;

/* QAPI BlockdevOptionsNbd. */
static const BdSchemaField nbd_options[] = {
    { "server", &bd_socket_address, FALSE, BD_AT(NbdOptions, server),
      .flags = BD_FIELD_STRONG },
    { "export", &bd_schema_str, TRUE, BD_AT(NbdOptions, export_name),
      .flags = BD_FIELD_STRONG },
    { "tls-creds", &bd_schema_str, TRUE, BD_AT(NbdOptions, tls_creds),
      .flags = BD_FIELD_STRONG },
    { "tls-hostname", &bd_schema_str, TRUE,
      BD_AT(NbdOptions, tls_hostname) },
    { "x-dirty-bitmap", &bd_schema_str, TRUE,
      BD_AT(NbdOptions, x_dirty_bitmap) },
    { "reconnect-delay", &bd_schema_uint32, TRUE,
      BD_AT(NbdOptions, reconnect_delay) },
    { "open-timeout", &bd_schema_uint32, TRUE,
      BD_AT(NbdOptions, open_timeout) },
    { NULL },
};

typedef struct {
    NbdClient *client;
    BdObject *tls_obj;      /* in use while the node is open */
} NbdState;

static NbdClient *client_of(BdNode *node)
{
    return ((NbdState *)node->opaque)->client;
}

static const NbdInfo *info_of(BdNode *node)
{
    return nbd_client_info(client_of(node));
}

/* --- data path --- */

static int nbd_node_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                          void *buf, int flags)
{
    return nbd_client_pread(client_of(node), offset, bytes, buf);
}

static int nbd_node_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                           const void *buf, int flags)
{
    NbdClient *c = client_of(node);
    gboolean fua = (flags & BD_REQ_FUA) != 0;
    gboolean native_fua = fua && info_of(node)->can_fua;
    int ret;

    ret = nbd_client_pwrite(c, offset, bytes, buf,
                            native_fua ? LIBNBD_CMD_FLAG_FUA : 0);
    if (ret == 0 && fua && !native_fua && info_of(node)->can_flush) {
        ret = nbd_client_flush(c);
    }
    return ret;
}

static int nbd_node_pwrite_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, int flags)
{
    const NbdInfo *info = info_of(node);
    NbdClient *c = client_of(node);
    uint32_t nflags = 0;
    gboolean flush_after = FALSE;

    if (!info->can_zero) {
        return -ENOTSUP;
    }
    if (flags & BD_REQ_NO_FALLBACK) {
        if (!info->can_fast_zero) {
            return -ENOTSUP;
        }
        nflags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    if (!(flags & BD_REQ_MAY_UNMAP)) {
        nflags |= LIBNBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & BD_REQ_FUA) {
        if (info->can_fua) {
            nflags |= LIBNBD_CMD_FLAG_FUA;
        } else {
            flush_after = info->can_flush;
        }
    }
    while (bytes) {
        uint64_t n = MIN(bytes, NBD_MAX_EFFECT_LENGTH);
        int ret = nbd_client_zero(c, offset, n, nflags);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return flush_after ? nbd_client_flush(c) : 0;
}

static int nbd_node_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    NbdClient *c = client_of(node);

    /* Discard is advisory: a server that cannot trim keeps the data. */
    if (!info_of(node)->can_trim) {
        return 0;
    }
    while (bytes) {
        uint64_t n = MIN(bytes, NBD_MAX_EFFECT_LENGTH);
        int ret = nbd_client_trim(c, offset, n);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int nbd_node_flush(BdNode *node)
{
    if (!info_of(node)->can_flush) {
        return 0;
    }
    return nbd_client_flush(client_of(node));
}

/* QEMU's nbd_client_co_block_status: the range maps onto itself; a hole
 * (or, with x-dirty-bitmap, a dirty extent) is not data. */
static int nbd_node_block_status(BdNode *node, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 uint64_t *map, BdNode **file)
{
    const NbdInfo *info = info_of(node);
    NbdClient *c = client_of(node);
    uint32_t state;
    int ret;

    *map = offset;
    *file = node;
    if (!info->has_allocation &&
        !nbd_client_config(c)->bitmap_context) {
        *pnum = bytes;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    /* One request covers at most the protocol's 32-bit length, kept
     * to whole blocks. */
    bytes = MIN(bytes, (uint64_t)(UINT32_MAX - info->min_block + 1));
    ret = nbd_client_block_status(c, offset, bytes, pnum, &state);
    if (ret < 0) {
        return ret;
    }
    return (state & NBD_STATE_HOLE ? 0 : BD_BLOCK_DATA) |
           (state & NBD_STATE_ZERO ? BD_BLOCK_ZERO : 0) |
           BD_BLOCK_OFFSET_VALID;
}

/* An NBD export keeps its size; only "resizing" to it succeeds. */
static int nbd_node_truncate(BdNode *node, uint64_t size)
{
    return size == node->size ? 0 : -ENOTSUP;
}

static int64_t nbd_node_allocated_size(BdNode *node)
{
    return -ENOTSUP;
}

static void nbd_node_refresh_limits(BdNode *node)
{
    const NbdInfo *info = info_of(node);

    node->request_alignment = MAX(info->min_block, 1u);
    node->max_transfer = info->max_block;
    node->latency_bound = TRUE;
}

/* --- open / close --- */

static void nbd_node_close(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    NbdState *s = node->opaque;

    if (!s) {
        return;
    }
    nbd_client_close(s->client);
    if (s->tls_obj) {
        bd_object_unuse(s->tls_obj);
        bd_object_unref(s->tls_obj);
    }
    g_free(s);
    node->opaque = NULL;
}

/* Fill 'cfg' from the decoded options. */
static gboolean nbd_config_from(const NbdOptions *o, NbdConfig *cfg,
                                BdObject **tls_obj, GError **errp)
{
    BdSocketAddress addr;

    bd_socket_address_decode(o->server, &addr);
    if (addr.type != BD_SOCKET_ADDRESS_UNIX &&
        addr.type != BD_SOCKET_ADDRESS_INET) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "nbd: socket address type '%s' is not supported by "
                    "blockd", bd_socket_address_type_names[addr.type]);
        return FALSE;
    }
    cfg->type = addr.type;
    cfg->path = g_strdup(addr.path);
    cfg->host = g_strdup(addr.host);
    cfg->port = g_strdup(addr.port);
    cfg->export_name = g_strdup(o->export_name);
    cfg->bitmap_context = g_strdup(o->x_dirty_bitmap);
    cfg->reconnect_delay = (uint32_t)o->reconnect_delay;
    cfg->open_timeout = (uint32_t)o->open_timeout;
    if (o->tls_hostname && !o->tls_creds) {
        /* As QEMU's nbd_process_options. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "tls-hostname is set but tls-creds is not");
        return FALSE;
    }
    if (o->tls_creds) {
        cfg->tls = bd_tls_creds_lookup(o->tls_creds, BD_TLS_ENDPOINT_CLIENT,
                                       tls_obj, errp);
        if (!cfg->tls) {
            return FALSE;
        }
        cfg->tls_hostname = g_strdup(o->tls_hostname ? o->tls_hostname
                                                     : addr.host);
    }
    return TRUE;
}

static gboolean nbd_node_open(BdNode *node, GVariant *options,
                              GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    NbdOptions o = { 0 };
    NbdConfig cfg = { 0 };
    BdObject *tls_obj = NULL;
    NbdState *s;
    const NbdInfo *info;

    bd_schema_decode(nbd_options, options, &o);
    if (!nbd_config_from(&o, &cfg, &tls_obj, errp)) {
        nbd_config_clear(&cfg);
        if (tls_obj) {
            bd_object_unref(tls_obj);
        }
        bd_schema_clear(nbd_options, &o);
        return FALSE;
    }
    bd_schema_clear(nbd_options, &o);

    s = g_new0(NbdState, 1);
    node->opaque = s;
    if (tls_obj) {
        s->tls_obj = tls_obj;
        bd_object_use(tls_obj);
    }
    s->client = nbd_client_open(&cfg, errp);
    nbd_config_clear(&cfg);
    if (!s->client) {
        return FALSE;
    }
    info = nbd_client_info(s->client);
    if (info->read_only && !node->read_only) {
        if (!node->auto_read_only) {
            /* QEMU 7.2's text (its open fails with EACCES). */
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Could not open image: Permission denied");
            return FALSE;
        }
        node->read_only = TRUE;
    }
    g_free(node->filename);
    node->filename = nbd_filename_of(nbd_client_config(s->client));
    bd_node_set_size(node, info->size);
    return TRUE;
}

/* Every option is fixed; read-write again only if the server allows. */
static gboolean nbd_node_reopen_prepare(BdReopenState *state,
                                        GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    if (!state->read_only && info_of(state->node)->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Can't reopen read-only NBD mount as read-write");
        return FALSE;
    }
    return bd_reopen_prepare_fixed(state, errp);
}

const BdDriver bd_nbd_driver = {
    .name = "nbd",
    .options = nbd_options,
    .is_protocol = TRUE,
    .open = nbd_node_open,
    .close = nbd_node_close,
    .pread = nbd_node_pread,
    .pwrite = nbd_node_pwrite,
    .pwrite_zeroes = nbd_node_pwrite_zeroes,
    .pdiscard = nbd_node_pdiscard,
    .flush = nbd_node_flush,
    .block_status = nbd_node_block_status,
    .truncate = nbd_node_truncate,
    .allocated_size = nbd_node_allocated_size,
    .refresh_limits = nbd_node_refresh_limits,
    .reopen_prepare = nbd_node_reopen_prepare,
};
