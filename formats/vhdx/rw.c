/* SPDX-License-Identifier: MIT */
/* The vhdx data path: reads, in-place and allocating writes, zeroes,
 * block status.  Thread model: see vhdx.c. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/vhdx/vhdx.h"

/* The BAT entry for 'offset' and how many bytes from there (at most
 * 'bytes') are of the same kind: contiguous data in the file, or
 * blocks that read as zeroes. */
static uint64_t lookup_run(VhdxState *s, uint64_t offset, uint64_t bytes,
                           uint64_t *pnum)
{
    uint64_t b = offset >> s->block_bits;
    uint64_t e = bat_get(s, b);
    uint64_t in = offset & (s->block_size - 1);
    uint64_t n = MIN(bytes, s->block_size - in);
    gboolean present = BAT_STATE(e) == PAYLOAD_FULLY_PRESENT;

    while (n < bytes) {
        uint64_t next = bat_get(s, ++b);
        gboolean np = BAT_STATE(next) == PAYLOAD_FULLY_PRESENT;
        if (np != present ||
            (present && BAT_OFFSET(next) != BAT_OFFSET(e) + in + n)) {
            break;
        }
        n = MIN(bytes, n + s->block_size);
    }
    *pnum = n;
    return present ? BAT_OFFSET(e) + in : 0;
}

int vhdx_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
               int flags)
{
    VhdxState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t n;
        uint64_t host = lookup_run(s, offset, bytes, &n);
        int ret = 0;

        if (host) {
            ret = bd_child_pread(s->file, host, n, p, 0);
        } else {
            memset(p, 0, n);
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
    host = s->file_end;
    ret = bd_node_truncate(s->file->node, host + s->block_size);
    if (ret == 0) {
        s->file_end = host + s->block_size;
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
        uint64_t n, host = lookup_run(s, offset, bytes, &n);

        if (host) {
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

/* Blocks not present read as zeroes already; present ones are zeroed
 * in place. */
int vhdx_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                       int flags)
{
    VhdxState *s = node->opaque;
    int ret = user_visible_write(s);

    while (ret == 0 && bytes) {
        uint64_t n, host = lookup_run(s, offset, bytes, &n);

        if (host) {
            ret = bd_child_pwrite_zeroes(s->file, host, n,
                                         flags & ~BD_REQ_MAY_UNMAP);
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
    uint64_t host = lookup_run(s, offset, bytes, pnum);

    if (host) {
        *map = host;
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    return BD_BLOCK_ZERO;
}
