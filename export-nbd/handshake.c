/* SPDX-License-Identifier: MIT */
/* The fixed newstyle handshake: greeting, client flags, then option
 * haggling with one small function per option.
 *
 *   S: NBDMAGIC IHAVEOPT flags     C: client flags
 *   loop:  C: IHAVEOPT opt len data
 *          S: reply(ies)  ...  until EXPORT_NAME, GO+ACK or ABORT
 *
 * With tls-creds, only NBD_OPT_STARTTLS (and ABORT) is allowed until
 * TLS is up; the rest of the haggling then runs over the TLS session.
 *
 * Thread model: runs on the connection's own thread with blocking
 * reads straight from the socket or the TLS session (no read-ahead, so
 * nothing of the transmission phase is consumed here).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "export-nbd/nbd-internal.h"
#include "graph/trace.h"
#include "objects/authz.h"

typedef enum {
    OPT_NEXT,      /* keep haggling */
    OPT_GO,        /* enter transmission (c->exp set) */
    OPT_CLOSE,     /* end the session */
} OptResult;

/* --- replies --- */

int bd_nbd_send_rep(BdNbdClient *c, uint32_t opt, uint32_t type,
                    const void *data, size_t len)
{
    BdNbdOptionReply rep = {
        .magic = GUINT64_TO_BE(NBD_REP_MAGIC),
        .option = GUINT32_TO_BE(opt),
        .reply = GUINT32_TO_BE(type),
        .length = GUINT32_TO_BE((uint32_t)len),
    };
    struct iovec iov[2] = {
        { .iov_base = &rep, .iov_len = sizeof(rep) },
        { .iov_base = (void *)data, .iov_len = len },
    };
    return bd_nbd_conn_writev(c, iov, len ? 2 : 1);
}

int bd_nbd_send_rep_err(BdNbdClient *c, uint32_t opt, uint32_t type,
                        const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_debug("%s: %s: %s", c->peer, bd_nbd_opt_name(opt), msg);
    g_atomic_int_set(&c->fail_reason,
                     type == NBD_REP_ERR_UNKNOWN ? BD_NBD_HS_FAIL_EXPORT_NOT_FOUND
                     : type == NBD_REP_ERR_TLS_REQD ? BD_NBD_HS_FAIL_TLS_REQUIRED
                     : BD_NBD_HS_FAIL_PROTOCOL);
    return bd_nbd_send_rep(c, opt, type, msg, MIN(strlen(msg),
                                                  BD_NBD_MAX_STRING));
}

/* --- failures --- */

static guint64 handshake_failures[BD_NBD_HS_FAIL__MAX];

guint64 bd_nbd_handshake_failures(BdNbdHandshakeFailure reason)
{
    return __atomic_load_n(&handshake_failures[reason], __ATOMIC_RELAXED);
}

guint64 bd_nbd_export_handshake_failures(BdExport *exp,
                                         BdNbdHandshakeFailure reason)
{
    BdNbdExport *ne = (BdNbdExport *)exp;

    return __atomic_load_n(&ne->hs_failures[reason], __ATOMIC_RELAXED);
}

/* The export a client names, when one of that name exists: a failure
 * later in this handshake is counted there as well.  Only existing
 * exports, so that clients cannot make up label values. */
static void note_export(BdNbdClient *c, uint32_t opt, const uint8_t *data,
                        uint32_t len)
{
    g_autofree char *name = NULL;
    BdNbdExport *exp;
    uint32_t namelen;

    if (opt == NBD_OPT_EXPORT_NAME) {
        name = len <= BD_NBD_MAX_STRING && !memchr(data, 0, len)
               ? g_strndup((const char *)data, len) : NULL;
    } else if ((opt == NBD_OPT_GO || opt == NBD_OPT_INFO) && len >= 4) {
        memcpy(&namelen, data, 4);
        namelen = GUINT32_FROM_BE(namelen);
        if (namelen <= len - 4 && namelen <= BD_NBD_MAX_STRING &&
            !memchr(data + 4, 0, namelen)) {
            name = g_strndup((const char *)data + 4, namelen);
        }
    }
    if (!name || !(exp = bd_nbd_export_get(name))) {
        return;
    }
    g_free(c->hs_export);
    c->hs_export = g_strdup(name);
    bd_export_unref(&exp->common);
}

void bd_nbd_handshake_failed(BdNbdClient *c)
{
    int reason = g_atomic_int_get(&c->fail_reason);
    BdNbdExport *exp;

    if (reason == BD_NBD_HS_FAIL_ABORTED) {
        return;         /* a clean end (a listing) */
    }
    __atomic_fetch_add(&handshake_failures[reason], 1, __ATOMIC_RELAXED);
    exp = c->hs_export ? bd_nbd_export_get(c->hs_export) : NULL;
    if (exp) {
        __atomic_fetch_add(&exp->hs_failures[reason], 1, __ATOMIC_RELAXED);
        g_info("NBD client %s: handshake failed (%s) for export '%s'",
               c->label, bd_nbd_handshake_failure_names[reason],
               exp->common.id);
        BD_TRACE(BD_TRACE_NBD_HANDSHAKE_FAILED,
                 "client=%s reason=%s export=%s", c->label,
                 bd_nbd_handshake_failure_names[reason], exp->common.id);
        bd_export_unref(&exp->common);
        return;
    }
    g_info("NBD client %s: handshake failed (%s)", c->label,
           bd_nbd_handshake_failure_names[reason]);
    BD_TRACE(BD_TRACE_NBD_HANDSHAKE_FAILED, "client=%s reason=%s", c->label,
             bd_nbd_handshake_failure_names[reason]);
}

static OptResult rep_result(int ret)
{
    return ret < 0 ? OPT_CLOSE : OPT_NEXT;
}

/* A NUL-free name of at most BD_NBD_MAX_STRING bytes, or NULL. */
static char *wire_string(const uint8_t *p, size_t len)
{
    if (len > BD_NBD_MAX_STRING || memchr(p, 0, len)) {
        return NULL;
    }
    return g_strndup((const char *)p, len);
}

static uint32_t get_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static uint16_t get_be16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return GUINT16_FROM_BE(v);
}

/* --- options --- */

static OptResult opt_export_name(BdNbdClient *c, uint32_t opt,
                                 const uint8_t *data, uint32_t len)
{
    g_autofree char *name = wire_string(data, len);
    BdNbdExportNameReply rep;
    static const uint8_t zeroes[124];
    struct iovec iov[2];
    BdNbdExport *exp = name ? bd_nbd_export_get(name) : NULL;
    int64_t size;

    /* No way to report an error here: the protocol says disconnect. */
    if (!exp) {
        g_debug("%s: NBD_OPT_EXPORT_NAME: export '%s' not found", c->peer,
                name ? name : "(invalid)");
        g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_EXPORT_NOT_FOUND);
        return OPT_CLOSE;
    }
    size = bd_entry_getlength(exp->common.entry);
    if (size < 0 || !bd_nbd_client_claim_slot(c) ||
        !bd_nbd_export_attach(exp, c)) {
        bd_export_unref(&exp->common);
        return OPT_CLOSE;
    }
    c->exp = exp;
    c->size = size;
    c->tflags = bd_nbd_export_tflags(exp, c->structured);
    if (!c->meta_export || strcmp(c->meta_export, name) != 0) {
        memset(&c->meta, 0, sizeof(c->meta));
        c->meta_set = FALSE;
    }
    rep.size = GUINT64_TO_BE(c->size);
    rep.flags = GUINT16_TO_BE(c->tflags);
    iov[0] = (struct iovec){ .iov_base = &rep, .iov_len = sizeof(rep) };
    iov[1] = (struct iovec){ .iov_base = (void *)zeroes,
                             .iov_len = sizeof(zeroes) };
    if (bd_nbd_conn_writev(c, iov, c->no_zeroes ? 1 : 2) < 0) {
        return OPT_CLOSE;   /* c->exp is released with the client */
    }
    return OPT_GO;
}

static OptResult opt_abort(BdNbdClient *c, uint32_t opt,
                           const uint8_t *data, uint32_t len)
{
    /* The client may already be gone; errors do not matter. */
    /* A clean end (nbdinfo --list), unless something was refused
     * before: then the handshake failed for that. */
    g_atomic_int_compare_and_exchange(&c->fail_reason,
                                      BD_NBD_HS_FAIL_DISCONNECTED,
                                      BD_NBD_HS_FAIL_ABORTED);
    bd_nbd_send_rep(c, opt, NBD_REP_ACK, NULL, 0);
    return OPT_CLOSE;
}

static OptResult opt_list(BdNbdClient *c, uint32_t opt,
                          const uint8_t *data, uint32_t len)
{
    g_autoptr(GPtrArray) names = NULL;
    guint i;

    if (len != 0) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "NBD_OPT_LIST must not carry data"));
    }
    names = bd_nbd_export_names();
    for (i = 0; i + 1 < names->len; i += 2) {
        const char *name = names->pdata[i], *desc = names->pdata[i + 1];
        size_t nlen = strlen(name), dlen = strlen(desc);
        g_autofree uint8_t *buf = g_malloc(4 + nlen + dlen);
        uint32_t be = GUINT32_TO_BE((uint32_t)nlen);

        memcpy(buf, &be, 4);
        memcpy(buf + 4, name, nlen);
        memcpy(buf + 4 + nlen, desc, dlen);
        if (bd_nbd_send_rep(c, opt, NBD_REP_SERVER, buf,
                            4 + nlen + dlen) < 0) {
            return OPT_CLOSE;
        }
    }
    return rep_result(bd_nbd_send_rep(c, opt, NBD_REP_ACK, NULL, 0));
}

/* tls-authz: the identity the TLS handshake proved must be allowed. */
static gboolean check_authz(BdNbdClient *c, GError **errp)
{
    const char *identity = bd_tls_session_identity(c->tls);
    const char *kind = bd_tls_session_kind_name(c->tls);
    GError *err = NULL;

    if (!c->tls_authz) {
        return TRUE;
    }
    if (!identity) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "TLS %s authz check: the client has no identity "
                    "(verify-peer is off)", kind);
        return FALSE;
    }
    if (!bd_authz_is_allowed_by_id(c->tls_authz, identity, &err)) {
        if (err) {
            g_propagate_error(errp, err);
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "TLS %s authz check for %s is denied", kind,
                        identity);
        }
        return FALSE;
    }
    return TRUE;
}

/* After the ACK of STARTTLS: the TLS handshake, the peer's credentials
 * and authorization.  Any failure ends this connection only, with a
 * line in the log that says why. */
static gboolean start_tls(BdNbdClient *c)
{
    g_autoptr(GError) err = NULL;

    c->tls = bd_tls_session_new(c->tls_creds, c->fd, NULL, &err);
    if (!c->tls || !bd_tls_session_handshake(c->tls, &err) ||
        !check_authz(c, &err)) {
        g_warning("NBD client %s: TLS: %s", c->peer, err->message);
        g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_TLS);
        return FALSE;
    }
    g_debug("NBD client %s: TLS up%s%s%s", c->peer,
            bd_tls_session_identity(c->tls) ? " for " : "",
            bd_tls_session_identity(c->tls) ?: "",
            bd_tls_session_ktls(c->tls) ? " (kTLS)" : "");
    return TRUE;
}

static OptResult opt_starttls(BdNbdClient *c, uint32_t opt,
                              const uint8_t *data, uint32_t len)
{
    if (len != 0) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "option 'starttls' has unexpected length"));
    }
    if (c->tls) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                              "TLS already enabled"));
    }
    if (!c->tls_creds) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_POLICY,
                                              "TLS not configured"));
    }
    if (bd_nbd_send_rep(c, opt, NBD_REP_ACK, NULL, 0) < 0) {
        return OPT_CLOSE;
    }
    return start_tls(c) ? OPT_NEXT : OPT_CLOSE;
}

static OptResult opt_structured_reply(BdNbdClient *c, uint32_t opt,
                                      const uint8_t *data, uint32_t len)
{
    if (len != 0) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "NBD_OPT_STRUCTURED_REPLY must not carry data"));
    }
    if (c->structured) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "structured reply already negotiated"));
    }
    c->structured = TRUE;
    return rep_result(bd_nbd_send_rep(c, opt, NBD_REP_ACK, NULL, 0));
}

static int send_info(BdNbdClient *c, uint32_t opt, uint16_t type,
                     const void *payload, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(2 + len);
    uint16_t be = GUINT16_TO_BE(type);

    memcpy(buf, &be, 2);
    memcpy(buf + 2, payload, len);
    return bd_nbd_send_rep(c, opt, NBD_REP_INFO, buf, 2 + len);
}

/* The NBD_REP_INFO replies of INFO/GO, then ACK. */
static int send_export_info(BdNbdClient *c, uint32_t opt, BdNbdExport *exp,
                            uint64_t size, uint16_t tflags,
                            gboolean want_name, gboolean want_desc)
{
    BdNbdInfoExport ie = {
        .info = GUINT16_TO_BE(NBD_INFO_EXPORT),
        .size = GUINT64_TO_BE(size),
        .flags = GUINT16_TO_BE(tflags),
    };
    BdNbdInfoBlockSize bs = {
        .info = GUINT16_TO_BE(NBD_INFO_BLOCK_SIZE),
        .minimum = GUINT32_TO_BE(BD_NBD_MIN_BLOCK),
        .preferred = GUINT32_TO_BE(BD_NBD_PREF_BLOCK),
        .maximum = GUINT32_TO_BE(BD_NBD_MAX_PAYLOAD),
    };

    if (want_name &&
        send_info(c, opt, NBD_INFO_NAME, exp->name, strlen(exp->name)) < 0) {
        return -1;
    }
    if (want_desc && exp->description &&
        send_info(c, opt, NBD_INFO_DESCRIPTION, exp->description,
                  strlen(exp->description)) < 0) {
        return -1;
    }
    /* Always sent (as QEMU): our constraints are the protocol defaults,
     * so clients that did not ask lose nothing by ignoring it. */
    if (bd_nbd_send_rep(c, opt, NBD_REP_INFO, &bs.info, sizeof(bs)) < 0 ||
        bd_nbd_send_rep(c, opt, NBD_REP_INFO, &ie.info, sizeof(ie)) < 0) {
        return -1;
    }
    return bd_nbd_send_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

static OptResult opt_info_go(BdNbdClient *c, uint32_t opt,
                             const uint8_t *data, uint32_t len)
{
    uint32_t namelen;
    uint16_t nreq, i;
    gboolean want_name = FALSE, want_desc = FALSE;
    g_autofree char *name = NULL;
    BdNbdExport *exp;
    int64_t size;
    uint16_t tflags;

    if (len < 6 || (namelen = get_be32(data)) > len - 6) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "%s: bad name length", bd_nbd_opt_name(opt)));
    }
    nreq = get_be16(data + 4 + namelen);
    if (len != 4 + namelen + 2 + 2u * nreq) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "%s: bad length", bd_nbd_opt_name(opt)));
    }
    name = wire_string(data + 4, namelen);
    if (!name) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "%s: invalid export name", bd_nbd_opt_name(opt)));
    }
    for (i = 0; i < nreq; i++) {
        uint16_t info = get_be16(data + 4 + namelen + 2 + 2 * i);
        want_name |= info == NBD_INFO_NAME;
        want_desc |= info == NBD_INFO_DESCRIPTION;
    }

    exp = bd_nbd_export_get(name);
    if (!exp) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_UNKNOWN,
                          "export '%s' not present", name));
    }
    size = bd_entry_getlength(exp->common.entry);
    if (size < 0) {
        bd_export_unref(&exp->common);
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                          "export '%s': cannot get its size: %s", name,
                          g_strerror(-size)));
    }
    tflags = bd_nbd_export_tflags(exp, c->structured);
    if (opt == NBD_OPT_INFO) {
        int ret = send_export_info(c, opt, exp, size, tflags, want_name,
                                   want_desc);
        bd_export_unref(&exp->common);
        return rep_result(ret);
    }
    if (!bd_nbd_client_claim_slot(c)) {
        bd_export_unref(&exp->common);
        return OPT_CLOSE;
    }
    if (!bd_nbd_export_attach(exp, c)) {
        bd_export_unref(&exp->common);
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_SHUTDOWN,
                          "export '%s' is shutting down", name));
    }
    /* From here the client owns the reference (released on close). */
    c->exp = exp;
    c->size = size;
    c->tflags = tflags;
    if (!c->meta_export || strcmp(c->meta_export, name) != 0) {
        memset(&c->meta, 0, sizeof(c->meta));
        c->meta_set = FALSE;
    }
    if (send_export_info(c, opt, exp, size, tflags, want_name,
                         want_desc) < 0) {
        return OPT_CLOSE;
    }
    return OPT_GO;
}

static OptResult opt_meta_context(BdNbdClient *c, uint32_t opt,
                                  const uint8_t *data, uint32_t len)
{
    return rep_result(bd_nbd_opt_meta_context(c, opt, data, len));
}

typedef OptResult (*OptHandler)(BdNbdClient *c, uint32_t opt,
                                const uint8_t *data, uint32_t len);

static const OptHandler opt_handlers[] = {
    [NBD_OPT_EXPORT_NAME] = opt_export_name,
    [NBD_OPT_ABORT] = opt_abort,
    [NBD_OPT_LIST] = opt_list,
    [NBD_OPT_STARTTLS] = opt_starttls,
    [NBD_OPT_INFO] = opt_info_go,
    [NBD_OPT_GO] = opt_info_go,
    [NBD_OPT_STRUCTURED_REPLY] = opt_structured_reply,
    [NBD_OPT_LIST_META_CONTEXT] = opt_meta_context,
    [NBD_OPT_SET_META_CONTEXT] = opt_meta_context,
};

/* Read one option and dispatch it. */
static OptResult handle_option(BdNbdClient *c)
{
    BdNbdOptionHeader hdr;
    g_autofree uint8_t *data = NULL;
    uint32_t opt, len;

    if (bd_nbd_conn_read(c, &hdr, sizeof(hdr)) < 0) {
        return OPT_CLOSE;
    }
    if (GUINT64_FROM_BE(hdr.magic) != NBD_OPTS_MAGIC) {
        g_debug("%s: bad option magic, dropping the connection", c->peer);
        g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_PROTOCOL);
        return OPT_CLOSE;
    }
    opt = GUINT32_FROM_BE(hdr.option);
    len = GUINT32_FROM_BE(hdr.length);
    if (len > BD_NBD_OPT_MAX) {
        if (len > BD_NBD_OPT_DRAIN_MAX || bd_nbd_conn_skip(c, len) < 0) {
            g_debug("%s: option data of %u bytes, dropping the connection",
                    c->peer, len);
            g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_PROTOCOL);
            return OPT_CLOSE;
        }
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_TOO_BIG,
                          "option data too long (%u bytes)", len));
    }
    data = g_malloc(len ? len : 1);
    if (len && bd_nbd_conn_read(c, data, len) < 0) {
        return OPT_CLOSE;
    }
    note_export(c, opt, data, len);
    /* TLS required and not up yet (doc/proto.md, "TLS support"). */
    if (c->tls_creds && !c->tls && opt != NBD_OPT_STARTTLS &&
        opt != NBD_OPT_ABORT) {
        if (opt == NBD_OPT_EXPORT_NAME) {
            g_warning("NBD client %s: NBD_OPT_EXPORT_NAME before TLS, "
                      "closing the connection", c->peer);
            g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_TLS_REQUIRED);
            return OPT_CLOSE;
        }
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_TLS_REQD,
                          "Option 0x%" PRIx32 " not permitted before TLS",
                          opt));
    }
    if (opt >= G_N_ELEMENTS(opt_handlers) || !opt_handlers[opt]) {
        return rep_result(bd_nbd_send_rep_err(c, opt, NBD_REP_ERR_UNSUP,
                          "option %u (%s) not supported", opt,
                          bd_nbd_opt_name(opt)));
    }
    return opt_handlers[opt](c, opt, data, len);
}

int bd_nbd_handshake(BdNbdClient *c)
{
    BdNbdNewstyleGreeting greet = {
        .nbdmagic = GUINT64_TO_BE(NBD_MAGIC),
        .optsmagic = GUINT64_TO_BE(NBD_OPTS_MAGIC),
        .flags = GUINT16_TO_BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    };
    uint32_t cflags;

    if (bd_nbd_conn_write(c, &greet, sizeof(greet)) < 0 ||
        bd_nbd_conn_read(c, &cflags, sizeof(cflags)) < 0) {
        return -1;
    }
    cflags = GUINT32_FROM_BE(cflags);
    if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        g_debug("%s: unknown client flags 0x%x, dropping", c->peer, cflags);
        g_atomic_int_set(&c->fail_reason, BD_NBD_HS_FAIL_PROTOCOL);
        return -1;
    }
    c->no_zeroes = !!(cflags & NBD_FLAG_C_NO_ZEROES);

    for (;;) {
        if (g_atomic_int_get(&c->quit)) {
            return -1;
        }
        switch (handle_option(c)) {
        case OPT_NEXT:
            continue;
        case OPT_GO:
            g_info("export '%s': NBD client %s connected%s", c->exp->common.id,
                   c->label, c->tls ? " over TLS" : "");
            BD_TRACE(BD_TRACE_NBD_CLIENT_CONNECT, "export=%s client=%s tls=%d",
                     c->exp->common.id, c->label, c->tls != NULL);
            return 0;
        case OPT_CLOSE:
            return -1;
        }
    }
}
