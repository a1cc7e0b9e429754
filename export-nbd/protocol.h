/* SPDX-License-Identifier: MIT */
/* NBD wire format: magics, flags, option/command/reply codes and the
 * packed structs sent on the socket (doc/proto.md of the NBD project).
 *
 * Everything on the wire is big-endian; the structs below hold the
 * on-the-wire byte layout and are filled with GUINT*_TO_BE().  The pure
 * request decoder and validator live in wire.c so that unit tests and
 * fuzz targets can use them without a socket.
 */
#ifndef BD_EXPORT_NBD_PROTOCOL_H
#define BD_EXPORT_NBD_PROTOCOL_H

#include <glib.h>
#include <stdint.h>

/* --- handshake --- */
#define NBD_MAGIC                 UINT64_C(0x4e42444d41474943) /* NBDMAGIC */
#define NBD_OPTS_MAGIC            UINT64_C(0x49484156454F5054) /* IHAVEOPT */
#define NBD_REP_MAGIC             UINT64_C(0x0003e889045565a9)

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS        (1u << 0)
#define NBD_FLAG_READ_ONLY        (1u << 1)
#define NBD_FLAG_SEND_FLUSH       (1u << 2)
#define NBD_FLAG_SEND_FUA         (1u << 3)
#define NBD_FLAG_ROTATIONAL       (1u << 4)
#define NBD_FLAG_SEND_TRIM        (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF          (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN   (1u << 8)
#define NBD_FLAG_SEND_CACHE       (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO   (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* Option replies. */
#define NBD_REP_ACK               1u
#define NBD_REP_SERVER            2u
#define NBD_REP_INFO              3u
#define NBD_REP_META_CONTEXT      4u
#define NBD_REP_ERR(n)            ((1u << 31) | (n))
#define NBD_REP_ERR_UNSUP         NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY        NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID       NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM      NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD      NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN       NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN      NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG       NBD_REP_ERR(9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT           0
#define NBD_INFO_NAME             1
#define NBD_INFO_DESCRIPTION      2
#define NBD_INFO_BLOCK_SIZE       3

/* --- transmission --- */
#define NBD_REQUEST_MAGIC         0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC    0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

#define NBD_CMD_READ              0
#define NBD_CMD_WRITE             1
#define NBD_CMD_DISC              2
#define NBD_CMD_FLUSH             3
#define NBD_CMD_TRIM              4
#define NBD_CMD_CACHE             5
#define NBD_CMD_WRITE_ZEROES      6
#define NBD_CMD_BLOCK_STATUS      7

#define NBD_CMD_FLAG_FUA          (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE      (1u << 1)
#define NBD_CMD_FLAG_DF           (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE      (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO    (1u << 4)

#define NBD_REPLY_FLAG_DONE       (1u << 0)

#define NBD_REPLY_TYPE_NONE       0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR      ((1u << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) | 2)

/* base:allocation flags. */
#define NBD_STATE_HOLE            (1u << 0)
#define NBD_STATE_ZERO            (1u << 1)
/* qemu:dirty-bitmap:NAME (QEMU docs/interop/nbd.txt) */
#define NBD_STATE_DIRTY           (1u << 0)

/* Error values. */
#define NBD_SUCCESS               0
#define NBD_EPERM                 1
#define NBD_EIO                   5
#define NBD_ENOMEM                12
#define NBD_EINVAL                22
#define NBD_ENOSPC                28
#define NBD_EOVERFLOW             75
#define NBD_ENOTSUP               95
#define NBD_ESHUTDOWN             108

/* --- limits of this server --- */
#define BD_NBD_MAX_STRING         4096          /* names, queries */
#define BD_NBD_MAX_PAYLOAD        (32u << 20)   /* read/write length */
#define BD_NBD_MIN_BLOCK          1u
#define BD_NBD_PREF_BLOCK         4096u
#define BD_NBD_OPT_MAX            (64u << 10)   /* option data we parse */
#define BD_NBD_OPT_DRAIN_MAX      (16u << 20)   /* beyond: hard disconnect */
#define BD_NBD_MAX_EXTENTS        (1u << 17)    /* per block-status chunk */

/* --- wire structs (network byte order) --- */
#define BD_NBD_PACKED __attribute__((packed))

typedef struct BD_NBD_PACKED {
    uint64_t nbdmagic;
    uint64_t optsmagic;
    uint16_t flags;
} BdNbdNewstyleGreeting;

typedef struct BD_NBD_PACKED {
    uint64_t magic;          /* IHAVEOPT */
    uint32_t option;
    uint32_t length;
} BdNbdOptionHeader;

typedef struct BD_NBD_PACKED {
    uint64_t magic;          /* NBD_REP_MAGIC */
    uint32_t option;
    uint32_t reply;
    uint32_t length;
} BdNbdOptionReply;

typedef struct BD_NBD_PACKED {
    uint64_t size;
    uint16_t flags;
} BdNbdExportNameReply;      /* + 124 zero bytes unless NO_ZEROES */

typedef struct BD_NBD_PACKED {
    uint16_t info;           /* NBD_INFO_EXPORT */
    uint64_t size;
    uint16_t flags;
} BdNbdInfoExport;

typedef struct BD_NBD_PACKED {
    uint16_t info;           /* NBD_INFO_BLOCK_SIZE */
    uint32_t minimum;
    uint32_t preferred;
    uint32_t maximum;
} BdNbdInfoBlockSize;

typedef struct BD_NBD_PACKED {
    uint32_t magic;
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
} BdNbdRequestWire;

typedef struct BD_NBD_PACKED {
    uint32_t magic;
    uint32_t error;
    uint64_t cookie;
} BdNbdSimpleReply;

typedef struct BD_NBD_PACKED {
    uint32_t magic;
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint32_t length;
} BdNbdStructuredReply;

typedef struct BD_NBD_PACKED {
    uint64_t offset;
} BdNbdChunkOffsetData;      /* followed by data */

typedef struct BD_NBD_PACKED {
    uint64_t offset;
    uint32_t length;
} BdNbdChunkOffsetHole;

typedef struct BD_NBD_PACKED {
    uint32_t error;
    uint16_t msg_len;
} BdNbdChunkError;           /* followed by the message */

typedef struct BD_NBD_PACKED {
    uint32_t length;
    uint32_t flags;
} BdNbdExtent;

_Static_assert(sizeof(BdNbdNewstyleGreeting) == 18, "greeting");
_Static_assert(sizeof(BdNbdOptionHeader) == 16, "option header");
_Static_assert(sizeof(BdNbdOptionReply) == 20, "option reply");
_Static_assert(sizeof(BdNbdExportNameReply) == 10, "export name reply");
_Static_assert(sizeof(BdNbdInfoExport) == 12, "NBD_INFO_EXPORT");
_Static_assert(sizeof(BdNbdInfoBlockSize) == 14, "NBD_INFO_BLOCK_SIZE");
_Static_assert(sizeof(BdNbdRequestWire) == 28, "request");
_Static_assert(sizeof(BdNbdSimpleReply) == 16, "simple reply");
_Static_assert(sizeof(BdNbdStructuredReply) == 20, "structured reply");
_Static_assert(sizeof(BdNbdChunkOffsetHole) == 12, "offset hole");
_Static_assert(sizeof(BdNbdChunkError) == 6, "error chunk");
_Static_assert(sizeof(BdNbdExtent) == 8, "extent");

/* --- decoded requests (wire.c: pure functions, no I/O) --- */

typedef struct {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
} BdNbdRequest;

/* What the validator needs to know about the connection. */
typedef struct {
    uint64_t export_size;
    gboolean read_only;
    gboolean structured;       /* NBD_OPT_STRUCTURED_REPLY negotiated */
    gboolean has_contexts;     /* at least one meta context selected */
} BdNbdReqLimits;

/* Decode the 28-byte request header.  FALSE on bad magic (the caller
 * drops the connection). */
gboolean bd_nbd_request_decode(const void *hdr, size_t len,
                               BdNbdRequest *req);
/* Validate a decoded request: 0 (go ahead) or the NBD error to reply
 * with.  NBD_CMD_WRITE payload must still be consumed by the caller
 * whatever this returns. */
uint32_t bd_nbd_request_check(const BdNbdRequest *req,
                              const BdNbdReqLimits *lim);
/* Map -errno (or errno) from the graph to an NBD error value. */
uint32_t bd_nbd_errno_to_wire(int err);
const char *bd_nbd_cmd_name(uint16_t type);
const char *bd_nbd_opt_name(uint32_t opt);

#endif
