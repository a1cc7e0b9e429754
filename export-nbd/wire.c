/* SPDX-License-Identifier: MIT */
/* Pure NBD request decoding and validation, and the one place where
 * -errno values become NBD error codes.  No I/O: unit tests and fuzz
 * targets call these directly. */
#include <errno.h>
#include <string.h>

#include "export-nbd/protocol.h"

gboolean bd_nbd_request_decode(const void *hdr, size_t len,
                               BdNbdRequest *req)
{
    BdNbdRequestWire w;

    if (len < sizeof(w)) {
        return FALSE;
    }
    memcpy(&w, hdr, sizeof(w));
    if (GUINT32_FROM_BE(w.magic) != NBD_REQUEST_MAGIC) {
        return FALSE;
    }
    req->flags = GUINT16_FROM_BE(w.flags);
    req->type = GUINT16_FROM_BE(w.type);
    req->cookie = w.cookie;     /* opaque: echoed back unchanged */
    req->offset = GUINT64_FROM_BE(w.offset);
    req->length = GUINT32_FROM_BE(w.length);
    return TRUE;
}

static gboolean in_range(const BdNbdRequest *req, const BdNbdReqLimits *lim)
{
    return req->offset <= lim->export_size &&
           req->length <= lim->export_size - req->offset;
}

/* Command flags each command accepts (FUA is valid on every command). */
static uint16_t allowed_flags(uint16_t type, const BdNbdReqLimits *lim)
{
    switch (type) {
    case NBD_CMD_READ:
        return NBD_CMD_FLAG_FUA | (lim->structured ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
               NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
        return NBD_CMD_FLAG_FUA;
    }
}

uint32_t bd_nbd_request_check(const BdNbdRequest *req,
                              const BdNbdReqLimits *lim)
{
    if (req->type == NBD_CMD_DISC) {
        return 0;
    }
    if (req->type > NBD_CMD_BLOCK_STATUS) {
        return NBD_EINVAL;
    }
    if (req->flags & ~allowed_flags(req->type, lim)) {
        return NBD_EINVAL;
    }

    switch (req->type) {
    case NBD_CMD_READ:
        if (req->length > BD_NBD_MAX_PAYLOAD || !in_range(req, lim)) {
            return NBD_EINVAL;
        }
        return 0;
    case NBD_CMD_WRITE:
        if (lim->read_only) {
            return NBD_EPERM;
        }
        if (req->length > BD_NBD_MAX_PAYLOAD) {
            return NBD_EINVAL;
        }
        return in_range(req, lim) ? 0 : NBD_ENOSPC;
    case NBD_CMD_FLUSH:
        return req->offset == 0 && req->length == 0 ? 0 : NBD_EINVAL;
    case NBD_CMD_TRIM:
        if (lim->read_only) {
            return NBD_EPERM;
        }
        return in_range(req, lim) ? 0 : NBD_EINVAL;
    case NBD_CMD_CACHE:
        return in_range(req, lim) ? 0 : NBD_EINVAL;
    case NBD_CMD_WRITE_ZEROES:
        if (lim->read_only) {
            return NBD_EPERM;
        }
        return in_range(req, lim) ? 0 : NBD_ENOSPC;
    case NBD_CMD_BLOCK_STATUS:
        if (!lim->structured || !lim->has_contexts || req->length == 0) {
            return NBD_EINVAL;
        }
        return in_range(req, lim) ? 0 : NBD_EINVAL;
    default:
        return NBD_EINVAL;
    }
}

/* As QEMU's server (nbd/server.c): the values the protocol defines pass
 * through, EROFS is a permission error, EDQUOT and EFBIG are "no space"
 * (the protocol asks for that), and every errno the protocol does not
 * list is NBD_EINVAL, the value a client must assume for anything it
 * does not know.  NBD_ENOTSUP goes out on any command, as QEMU's, though
 * the protocol expects it only for FAST_ZERO: a client that does not
 * know it there treats it as NBD_EINVAL anyway. */
uint32_t bd_nbd_errno_to_wire(int err)
{
    if (err < 0) {
        err = -err;
    }
    switch (err) {
    case 0:
        return NBD_SUCCESS;
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    case EINVAL:
    default:
        return NBD_EINVAL;
    }
}

const char *bd_nbd_cmd_name(uint16_t type)
{
    static const char *const names[] = {
        [NBD_CMD_READ] = "read", [NBD_CMD_WRITE] = "write",
        [NBD_CMD_DISC] = "disc", [NBD_CMD_FLUSH] = "flush",
        [NBD_CMD_TRIM] = "trim", [NBD_CMD_CACHE] = "cache",
        [NBD_CMD_WRITE_ZEROES] = "write-zeroes",
        [NBD_CMD_BLOCK_STATUS] = "block-status",
    };
    return type < G_N_ELEMENTS(names) ? names[type] : "unknown";
}

const char *bd_nbd_opt_name(uint32_t opt)
{
    static const char *const names[] = {
        [NBD_OPT_EXPORT_NAME] = "NBD_OPT_EXPORT_NAME",
        [NBD_OPT_ABORT] = "NBD_OPT_ABORT",
        [NBD_OPT_LIST] = "NBD_OPT_LIST",
        [4] = "NBD_OPT_PEEK_EXPORT",
        [NBD_OPT_STARTTLS] = "NBD_OPT_STARTTLS",
        [NBD_OPT_INFO] = "NBD_OPT_INFO",
        [NBD_OPT_GO] = "NBD_OPT_GO",
        [NBD_OPT_STRUCTURED_REPLY] = "NBD_OPT_STRUCTURED_REPLY",
        [NBD_OPT_LIST_META_CONTEXT] = "NBD_OPT_LIST_META_CONTEXT",
        [NBD_OPT_SET_META_CONTEXT] = "NBD_OPT_SET_META_CONTEXT",
        [11] = "NBD_OPT_EXTENDED_HEADERS",
    };
    return opt < G_N_ELEMENTS(names) && names[opt] ? names[opt] : "unknown";
}
