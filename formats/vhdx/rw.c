/* SPDX-License-Identifier: MIT */
/* The vhdx data path: reads, in-place and allocating writes, zeroes,
 * block status.  Thread model: see vhdx.c. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/vhdx/vhdx.h"

typedef enum { K_DATA, K_ZERO, K_PARENT, K_PARTIAL } BlockKind;

static BlockKind kind_of(VhdxState *s, uint64_t e)
{
    switch (BAT_STATE(e)) {
    case PAYLOAD_FULLY_PRESENT:
        return K_DATA;
    case PAYLOAD_PARTIALLY_PRESENT:
        return K_PARTIAL;
    case PAYLOAD_NOT_PRESENT: case PAYLOAD_UNDEFINED:
        return s->has_parent ? K_PARENT : K_ZERO;
    default:
        return K_ZERO;
    }
}

/* The kind of block at 'offset' and how many bytes from there (at most
 * 'bytes') are of the same kind (contiguous in the file for data; a
 * partially present block alone); *host: where data is in the file. */
static BlockKind lookup_run(VhdxState *s, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *host)
{
    uint64_t b = offset >> s->block_bits;
    uint64_t e = bat_get(s, b);
    uint64_t in = offset & (s->block_size - 1);
    uint64_t n = MIN(bytes, s->block_size - in);
    BlockKind k = kind_of(s, e);

    *host = BAT_OFFSET(e) + in;
    while (n < bytes && k != K_PARTIAL) {
        uint64_t next = bat_get(s, ++b);
        if (kind_of(s, next) != k ||
            (k == K_DATA && BAT_OFFSET(next) != BAT_OFFSET(e) + in + n)) {
            break;
        }
        n = MIN(bytes, n + s->block_size);
    }
    *pnum = n;
    return k;
}

static int read_parent(VhdxState *s, uint64_t off, uint64_t bytes,
                       uint8_t *buf)
{
    BdNode *b = bd_node_backing(s->node);
    uint64_t n = 0;

    if (b) {
        int64_t bsize = bd_node_getlength(b);
        if (bsize < 0) {
            return (int)bsize;
        }
        if (off < (uint64_t)bsize) {
            int ret;
            n = MIN(bytes, (uint64_t)bsize - off);
            ret = bd_node_pread(b, off, n, buf, 0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    memset(buf + n, 0, bytes - n);
    return 0;
}

/* Part of a partially present block: sector by sector from the block
 * or the parent, as the chunk's sector bitmap says. */
static int read_partial(VhdxState *s, uint64_t offset, uint64_t bytes,
                        uint64_t host, uint8_t *buf)
{
    uint64_t ss = s->logical_sector;
    uint64_t first = offset / ss, last = (offset + bytes - 1) / ss;
    uint64_t chunk_bytes = s->chunk_ratio << s->block_bits;
    uint64_t bm = BAT_OFFSET(bitmap_get(s, offset / chunk_bytes));
    uint64_t base = (offset / chunk_bytes) * (chunk_bytes / ss);
    uint64_t b0 = (first - base) / 8, b1 = (last - base) / 8;
    g_autofree uint8_t *bits = g_try_malloc(b1 - b0 + 1);
    uint64_t pos = offset;
    int ret;

    if (!bits) {
        return -ENOMEM;
    }
    ret = bd_child_pread(s->file, bm + b0, b1 - b0 + 1, bits, 0);
    while (ret == 0 && pos < offset + bytes) {
        uint64_t sec = pos / ss - base;
        gboolean set = bits[sec / 8 - b0] >> (sec % 8) & 1;
        uint64_t end = MIN(offset + bytes, (pos / ss + 1) * ss);

        while (end < offset + bytes) {
            uint64_t nsec = end / ss - base;
            if ((bits[nsec / 8 - b0] >> (nsec % 8) & 1) != set) {
                break;
            }
            end = MIN(offset + bytes, end + ss);
        }
        if (set) {
            ret = bd_child_pread(s->file, host + (pos - offset), end - pos,
                                 buf + (pos - offset), 0);
        } else {
            ret = read_parent(s, pos, end - pos, buf + (pos - offset));
        }
        pos = end;
    }
    return ret;
}

int vhdx_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
               int flags)
{
    VhdxState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t n, host;
        BlockKind k = lookup_run(s, offset, bytes, &n, &host);
        int ret = 0;

        switch (k) {
        case K_DATA:
            ret = bd_child_pread(s->file, host, n, p, 0);
            break;
        case K_PARTIAL:
            ret = read_partial(s, offset, n, host, p);
            break;
        case K_PARENT:
            ret = read_parent(s, offset, n, p);
            break;
        case K_ZERO:
            memset(p, 0, n);
            break;
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

/* New file and data write GUIDs in the headers before the first write
 * of this open, as the specification wants (and QEMU does). */
static int user_visible_write(VhdxState *s)
{
    static const uint8_t zero[16];
    int ret = 0;

    if (__atomic_load_n(&s->user_visible_written, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    bd_mutex_lock(&s->lock);
    if (!s->user_visible_written) {
        ret = vhdx_update_headers_locked(s, TRUE, zero);
        if (ret == 0) {
            __atomic_store_n(&s->user_visible_written, TRUE,
                             __ATOMIC_RELEASE);
        }
    }
    bd_mutex_unlock(&s->lock);
    return ret;
}

/* A new block at the end of the file: the file grown over it (it reads
 * as zeroes), by truncate, or by writing zeroes where the child cannot
 * be truncated (a filter). */
static int append_block_locked(VhdxState *s, uint64_t *host)
{
    uint64_t at = s->file_end;
    int ret = bd_node_truncate(s->file->node, at + s->block_size);

    if (ret == -ENOTSUP) {
        ret = bd_child_pwrite_zeroes(s->file, at, s->block_size, 0);
    }
    if (ret == 0) {
        s->file_end = at + s->block_size;
        *host = at;
    }
    return ret;
}

/* The BAT entry of block 'b' set to 'entry' through the log. */
static int set_bat_locked(VhdxState *s, uint64_t b, uint64_t entry)
{
    uint64_t idx = bat_index(s, b);
    uint64_t soff = (idx * 8) & ~(uint64_t)(VHDX_LOG_SECTOR - 1);
    uint8_t sector[VHDX_LOG_SECTOR];
    int ret;

    ret = bd_child_pread(s->file, s->bat_offset + soff, sizeof(sector),
                         sector, 0);
    if (ret < 0) {
        return ret;
    }
    put_le64(sector + (idx * 8 - soff), entry);
    ret = vhdx_log_write_sector_locked(s, s->bat_offset + soff, sector);
    if (ret == 0) {
        __atomic_store_n(&s->bat[idx], entry, __ATOMIC_RELEASE);
    }
    return ret;
}

/* Allocate block 'b' at the end of the file (it reads as zeroes
 * there), write 'n' bytes of 'buf' at 'in' into it, make that durable,
 * then point the BAT at it through the log.  If another request
 * allocated it meanwhile, writes in place instead. */
/* In a differencing image the whole block is written: what it reads as
 * now (parent data, the block's own sectors) with the request's bytes,
 * so it becomes fully present and needs no sector bitmap update. */
static int full_block_write_locked(VhdxState *s, uint64_t b, uint64_t e,
                                   uint64_t in, uint64_t n, const void *buf)
{
    uint64_t start = b << s->block_bits;
    uint64_t len = MIN(s->block_size, s->size - start);
    g_autofree uint8_t *data = g_try_malloc(len);
    uint64_t host;
    int ret;

    if (!data) {
        return -ENOMEM;
    }
    ret = vhdx_pread(s->node, start, len, data, 0);
    if (ret < 0) {
        return ret;
    }
    memcpy(data + in, buf, n);
    if (BAT_STATE(e) == PAYLOAD_PARTIALLY_PRESENT) {
        host = BAT_OFFSET(e);
    } else {
        ret = append_block_locked(s, &host);
        if (ret < 0) {
            return ret;
        }
    }
    ret = bd_child_pwrite(s->file, host, len, data, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        ret = set_bat_locked(s, b, host | PAYLOAD_FULLY_PRESENT);
    }
    return ret;
}

static int alloc_write(VhdxState *s, uint64_t b, uint64_t in, uint64_t n,
                       const void *buf)
{
    uint64_t e, host;
    int ret;

    bd_mutex_lock(&s->lock);
    e = bat_get(s, b);
    if (BAT_STATE(e) == PAYLOAD_FULLY_PRESENT) {
        bd_mutex_unlock(&s->lock);
        return bd_child_pwrite(s->file, BAT_OFFSET(e) + in, n, buf, 0);
    }
    if (kind_of(s, e) != K_ZERO) {
        ret = full_block_write_locked(s, b, e, in, n, buf);
        bd_mutex_unlock(&s->lock);
        return ret;
    }
    ret = append_block_locked(s, &host);
    if (ret == 0) {
        ret = bd_child_pwrite(s->file, host + in, n, buf, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        ret = set_bat_locked(s, b, host | PAYLOAD_FULLY_PRESENT);
    }
    bd_mutex_unlock(&s->lock);
    return ret;
}

int vhdx_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                const void *buf, int flags)
{
    VhdxState *s = node->opaque;
    const uint8_t *p = buf;
    int ret = user_visible_write(s);

    while (ret == 0 && bytes) {
        uint64_t b = offset >> s->block_bits;
        uint64_t in = offset & (s->block_size - 1);
        uint64_t n, host;

        if (lookup_run(s, offset, bytes, &n, &host) == K_DATA) {
            ret = bd_child_pwrite(s->file, host, n, p, 0);
        } else {
            n = MIN(bytes, s->block_size - in);
            ret = alloc_write(s, b, in, n, p);
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    if (ret == 0 && (flags & BD_REQ_FUA)) {
        ret = bd_child_flush(s->file);
    }
    return ret;
}

/* Blocks not present read as zeroes already (without a parent);
 * present ones are zeroed in place; with a parent, zeroes are written
 * as data. */
int vhdx_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                       int flags)
{
    VhdxState *s = node->opaque;
    int ret = user_visible_write(s);

    while (ret == 0 && bytes) {
        uint64_t n, host;
        BlockKind k = lookup_run(s, offset, bytes, &n, &host);

        if (k == K_DATA) {
            ret = bd_child_pwrite_zeroes(s->file, host, n,
                                         flags & ~BD_REQ_MAY_UNMAP);
        } else if (k != K_ZERO) {
            g_autofree uint8_t *z = NULL;
            n = MIN(n, s->block_size - (offset & (s->block_size - 1)));
            z = g_try_malloc0(n);
            ret = z ? alloc_write(s, offset >> s->block_bits,
                                  offset & (s->block_size - 1), n, z)
                    : -ENOMEM;
        }
        offset += n;
        bytes -= n;
    }
    if (ret == 0 && (flags & BD_REQ_FUA)) {
        ret = bd_child_flush(s->file);
    }
    return ret;
}

int vhdx_flush(BdNode *node)
{
    VhdxState *s = node->opaque;

    return bd_child_flush(s->file);
}

int vhdx_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                      uint64_t *pnum, uint64_t *map, BdNode **file)
{
    VhdxState *s = node->opaque;
    uint64_t host;

    switch (lookup_run(s, offset, bytes, pnum, &host)) {
    case K_DATA:
        *map = host;
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    case K_PARTIAL:
        return BD_BLOCK_DATA;
    case K_PARENT:
        return 0;
    default:
        return BD_BLOCK_ZERO;
    }
}
