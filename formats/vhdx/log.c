/* SPDX-License-Identifier: MIT */
/* The vhdx log: replayed at open when the header names a log GUID (a
 * dirty image), and written for every metadata update so that a crash
 * never leaves a half-updated BAT.
 *
 * A log entry is 4 KiB sectors in the circular log region: a header
 * and descriptors, then one data sector per data descriptor.  A data
 * descriptor keeps the first 8 and last 4 bytes of its target sector,
 * the data sector the 4084 between, both stamped with the entry's
 * sequence number; the entry's CRC-32C covers all of it.
 *
 *   [loge hdr | desc desc ...][desc ...][data][data] ...
 *
 * Replay finds the valid sequence (entries with the header's log GUID,
 * consecutive sequence numbers, good checksums) whose last entry has
 * the highest sequence number, as QEMU does, writes its sectors in
 * place, flushes and clears the log GUID.  Writing follows QEMU's
 * vhdx_log_write_and_flush: log GUID set in both headers, the entry at
 * the start of the log, flush, the sector in place, flush, log GUID
 * cleared; so the image is clean between metadata updates.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/create-util.h"
#include "formats/vhdx/vhdx.h"

/* Log entry header fields. */
enum {
    LE_SIG = 0, LE_CSUM = 4, LE_LENGTH = 8, LE_TAIL = 12, LE_SEQ = 16,
    LE_DESC_COUNT = 24, LE_GUID = 32, LE_FLUSHED = 48, LE_LAST = 56,
};
/* Descriptor fields (data and zero descriptors share the layout). */
enum {
    LD_SIG = 0, LD_TRAILING = 4, LD_LEADING = 8, LD_ZERO_LENGTH = 8,
    LD_OFFSET = 16, LD_SEQ = 24,
};
#define LOG_ENTRY_MAX_ALLOC (64u * 1024 * 1024)

typedef struct {
    uint64_t seq;
    uint32_t length;
} LogEntryInfo;

/* 64-bit: a hostile count must not wrap to a small number. */
static uint64_t desc_sectors(uint64_t count)
{
    return (count + 2 + 127) / 128;
}

/* 'len' bytes of the circular log from 'pos'. */
static int read_log(VhdxState *s, uint32_t pos, uint32_t len, uint8_t *buf)
{
    uint32_t first = MIN(len, s->log_length - pos);
    int ret = bd_child_pread(s->file, s->log_offset + pos, first, buf, 0);

    if (ret == 0 && first < len) {
        ret = bd_child_pread(s->file, s->log_offset, len - first,
                             buf + first, 0);
    }
    return ret;
}

/* The entry at 'pos', valid (and with sequence number 'want' unless 0):
 * returned in a new buffer, else NULL.  -errno only for I/O errors. */
static int read_entry(VhdxState *s, uint32_t pos, uint64_t want,
                      LogEntryInfo *info, uint8_t **pbuf)
{
    uint8_t h[VHDX_LOG_SECTOR];
    g_autofree uint8_t *buf = NULL;
    uint32_t len, count;
    uint64_t nds, ndata = 0;
    uint64_t seq;
    int ret;

    *pbuf = NULL;
    ret = read_log(s, pos, sizeof(h), h);
    if (ret < 0) {
        return ret;
    }
    len = get_le32(h + LE_LENGTH);
    seq = get_le64(h + LE_SEQ);
    count = get_le32(h + LE_DESC_COUNT);
    if (memcmp(h, "loge", 4) != 0 || len == 0 || len % VHDX_LOG_SECTOR ||
        len > s->log_length || len > LOG_ENTRY_MAX_ALLOC || seq == 0 ||
        (want && seq != want) ||
        memcmp(h + LE_GUID, s->header + HD_LOG_GUID, 16) != 0 ||
        desc_sectors(count) * VHDX_LOG_SECTOR > len) {
        return 0;
    }
    buf = g_try_malloc(len);
    if (!buf) {
        return -ENOMEM;
    }
    ret = read_log(s, pos, len, buf);
    if (ret < 0) {
        return ret;
    }
    if (get_le32(buf + LE_CSUM) != vhdx_checksum(buf, len, LE_CSUM)) {
        return 0;
    }
    nds = desc_sectors(count);
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *d = buf + 64 + 32 * (uint64_t)i;
        if (get_le64(d + LD_SEQ) != seq ||
            get_le64(d + LD_OFFSET) % VHDX_LOG_SECTOR) {
            return 0;
        }
        if (memcmp(d, "desc", 4) == 0) {
            const uint8_t *ds;
            if ((nds + ndata + 1) * VHDX_LOG_SECTOR > len) {
                return 0;
            }
            ds = buf + (nds + ndata) * VHDX_LOG_SECTOR;
            if (memcmp(ds, "data", 4) != 0 ||
                ((uint64_t)get_le32(ds + 4) << 32 | get_le32(ds + 4092)) !=
                seq) {
                return 0;
            }
            ndata++;
        } else if (memcmp(d, "zero", 4) != 0 ||
                   get_le64(d + LD_ZERO_LENGTH) % VHDX_LOG_SECTOR) {
            return 0;
        }
    }
    info->seq = seq;
    info->length = len;
    *pbuf = g_steal_pointer(&buf);
    return 0;
}

/* Where the file may be written by replay: past the region tables, and
 * below a bound (the file's end or the entry's last file offset). */
static gboolean replay_entry(VhdxState *s, const uint8_t *e,
                             int64_t *file_len, GError **errp)
{
    uint32_t count = get_le32(e + LE_DESC_COUNT);
    uint64_t flushed = get_le64(e + LE_FLUSHED);
    uint64_t last = get_le64(e + LE_LAST);
    uint64_t limit = MAX((uint64_t)*file_len, last);
    uint64_t data = desc_sectors(count);
    uint8_t sector[VHDX_LOG_SECTOR];
    int ret = 0;

    if (flushed > (uint64_t)*file_len) {
        NODE_FAIL("log entry %" PRIu64 " expects a file of at least %"
                  PRIu64 " bytes, the file has %" PRId64 " (truncated?)",
                  get_le64(e + LE_SEQ), flushed, *file_len);
    }
    if (limit > VHDX_MAX_SIZE * 2) {
        NODE_FAIL("log entry %" PRIu64 " names a file of %" PRIu64
                  " bytes", get_le64(e + LE_SEQ), last);
    }
    for (uint32_t i = 0; i < count && ret == 0; i++) {
        const uint8_t *d = e + 64 + 32 * (uint64_t)i;
        uint64_t off = get_le64(d + LD_OFFSET);
        uint64_t len = memcmp(d, "desc", 4) == 0 ? VHDX_LOG_SECTOR
                       : get_le64(d + LD_ZERO_LENGTH);

        if (off < VHDX_REGION1_OFFSET || len > limit || off > limit - len) {
            NODE_FAIL("log entry %" PRIu64 " writes 0x%" PRIx64 " bytes at "
                      "0x%" PRIx64 ", outside the image",
                      get_le64(e + LE_SEQ), len, off);
        }
        if (memcmp(d, "desc", 4) == 0) {
            const uint8_t *ds = e + data++ * VHDX_LOG_SECTOR;
            memcpy(sector, d + LD_LEADING, 8);
            memcpy(sector + 8, ds + 8, 4084);
            memcpy(sector + 4092, d + LD_TRAILING, 4);
            ret = bd_child_pwrite(s->file, off, VHDX_LOG_SECTOR, sector, 0);
        } else if (len) {
            ret = bd_child_pwrite_zeroes(s->file, off, len, 0);
        }
    }
    if (ret == 0 && last > (uint64_t)*file_len) {
        uint64_t end = (last + MiB_ - 1) & ~(MiB_ - 1);
        ret = bd_node_truncate(s->file->node, end);
        if (ret == 0) {
            *file_len = (int64_t)end;
        }
    }
    if (ret < 0) {
        NODE_FAIL("cannot replay the log: %s", g_strerror(-ret));
    }
    return TRUE;
}

typedef struct {
    gboolean valid;
    uint32_t start;
    uint32_t count;
    uint64_t last_seq;
} LogSequence;

/* The active sequence: of the runs of consecutive valid entries, the
 * one ending with the highest sequence number.  Every log position is
 * looked at about once. */
static int search_log(VhdxState *s, LogSequence *best)
{
    uint32_t pos = 0;

    memset(best, 0, sizeof(*best));
    while (pos < s->log_length) {
        LogEntryInfo info;
        g_autofree uint8_t *buf = NULL;
        uint64_t covered, seq;
        uint32_t count = 1, p;
        int ret = read_entry(s, pos, 0, &info, &buf);

        if (ret < 0) {
            return ret;
        }
        if (!buf) {
            pos += VHDX_LOG_SECTOR;
            continue;
        }
        seq = info.seq;
        covered = info.length;
        p = (uint32_t)((pos + covered) % s->log_length);
        while (covered < s->log_length) {
            g_autofree uint8_t *next = NULL;
            ret = read_entry(s, p, seq + 1, &info, &next);
            if (ret < 0) {
                return ret;
            }
            if (!next) {
                break;
            }
            count++;
            seq = info.seq;
            covered += info.length;
            p = (uint32_t)((p + info.length) % s->log_length);
        }
        if (!best->valid || seq > best->last_seq) {
            *best = (LogSequence){ TRUE, pos, count, seq };
        }
        if (pos + covered >= s->log_length) {
            break;
        }
        pos += (uint32_t)covered;
    }
    return 0;
}

gboolean vhdx_replay_log(VhdxState *s, int64_t file_len, GError **errp)
{
    static const uint8_t zero[16];
    LogSequence seq;
    uint32_t pos;
    int ret;

    s->log_seq = 1;
    if (guid_is_zero(s->header + HD_LOG_GUID) || s->log_length == 0) {
        return TRUE;
    }
    ret = search_log(s, &seq);
    if (ret < 0) {
        NODE_FAIL("cannot read the log: %s", g_strerror(-ret));
    }
    if (seq.valid && s->node->read_only) {
        /* QEMU's words. */
        const char *fn = s->file->node->filename ? s->file->node->filename
                                                  : s->file->node->node_name;
        FAIL("VHDX image file '%s' opened read-only, but contains a log "
             "that needs to be replayed.  To replay the log, execute:\n "
             "qemu-img check -r all '%s'", fn, fn);
    }
    if (s->node->read_only) {
        return TRUE;
    }
    pos = seq.start;
    for (uint32_t i = 0; seq.valid && i < seq.count; i++) {
        LogEntryInfo info;
        g_autofree uint8_t *buf = NULL;

        ret = read_entry(s, pos, 0, &info, &buf);
        if (ret < 0 || !buf) {
            NODE_FAIL("cannot read the log: %s",
                      g_strerror(ret < 0 ? -ret : EIO));
        }
        if (!replay_entry(s, buf, &file_len, errp)) {
            return FALSE;
        }
        pos = (uint32_t)((pos + info.length) % s->log_length);
    }
    if (seq.valid) {
        s->log_seq = seq.last_seq + 1;
    }
    bd_mutex_lock(&s->lock);
    ret = bd_child_flush(s->file);
    if (ret == 0) {
        ret = vhdx_update_headers_locked(s, FALSE, zero);
    }
    bd_mutex_unlock(&s->lock);
    if (ret < 0) {
        NODE_FAIL("cannot mark the log replayed: %s", g_strerror(-ret));
    }
    return TRUE;
}

/* The 4 KiB 'sector' for file offset 'file_offset' through the log:
 * log GUID on, entry written and flushed, sector in place and flushed,
 * log GUID off. */
int vhdx_log_write_sector_locked(VhdxState *s, uint64_t file_offset,
                                 const uint8_t *sector)
{
    static const uint8_t zero[16];
    uint8_t e[2 * VHDX_LOG_SECTOR] = { 0 };
    uint8_t guid[16];
    uint8_t *d = e + 64, *ds = e + VHDX_LOG_SECTOR;
    int64_t flen = bd_node_getlength(s->file->node);
    uint64_t seq = s->log_seq;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    if (s->log_length < sizeof(e)) {
        return -ENOSPC;
    }
    bd_formats_uuid_generate(guid);
    ret = vhdx_update_headers_locked(s, FALSE, guid);
    if (ret < 0) {
        return ret;
    }
    memcpy(e + LE_SIG, "loge", 4);
    put_le32(e + LE_LENGTH, sizeof(e));
    put_le32(e + LE_TAIL, 0);
    put_le64(e + LE_SEQ, seq);
    put_le32(e + LE_DESC_COUNT, 1);
    memcpy(e + LE_GUID, guid, 16);
    put_le64(e + LE_FLUSHED, (uint64_t)flen);
    put_le64(e + LE_LAST, (uint64_t)flen);
    memcpy(d + LD_SIG, "desc", 4);
    memcpy(d + LD_TRAILING, sector + 4092, 4);
    memcpy(d + LD_LEADING, sector, 8);
    put_le64(d + LD_OFFSET, file_offset);
    put_le64(d + LD_SEQ, seq);
    memcpy(ds, "data", 4);
    put_le32(ds + 4, (uint32_t)(seq >> 32));
    memcpy(ds + 8, sector + 8, 4084);
    put_le32(ds + 4092, (uint32_t)seq);
    put_le32(e + LE_CSUM, vhdx_checksum(e, sizeof(e), LE_CSUM));
    s->log_seq++;
    ret = bd_child_pwrite(s->file, s->log_offset, sizeof(e), e, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        ret = bd_child_pwrite(s->file, file_offset, VHDX_LOG_SECTOR, sector,
                              0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        ret = vhdx_update_headers_locked(s, FALSE, zero);
    }
    return ret;
}
