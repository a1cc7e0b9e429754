/* SPDX-License-Identifier: MIT */
/* The qcow2 data path: read, write (with allocation and COW), zeroes,
 * discard, flush, block status, growth.
 *
 * Thread model: any thread, concurrently.  Qcow2State.lock is held only
 * to look up or change metadata, never across guest data I/O; reads hold
 * it only for cache lookups, never across any I/O (read_lookup).  An
 * allocating write registers its cluster range in s->inflight; other
 * requests touching those clusters wait on s->cond until the new L2
 * entries are in place, so overlapping allocations never lose data.
 * Data is written before the L2 entry that points to it is updated.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <string.h>
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/qcow2/qcow2.h"
#include "formats/luks/luks.h"

static int read_backing(BdNode *node, uint64_t off, uint64_t bytes,
                        uint8_t *buf)
{
    BdNode *b = bd_node_backing(node);
    int64_t bsize;
    uint64_t n = 0;
    int ret;

    if (b) {
        bsize = bd_node_getlength(b);
        if (bsize < 0) {
            return (int)bsize;
        }
        if (off < (uint64_t)bsize) {
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

static int read_compressed_part(Qcow2State *s, uint64_t l2e, uint64_t intra,
                                uint64_t n, uint8_t *buf)
{
    g_autofree uint8_t *c = g_try_malloc(s->cluster_size);
    int ret;

    if (!c) {
        return -ENOMEM;
    }
    ret = qcow2_read_compressed(s, l2e, c);
    if (ret == 0) {
        memcpy(buf, c + intra, n);
    }
    return ret;
}

/* Read guest [off, off+n), whose first cluster maps to l2e/host. */
static int read_mapped(Qcow2State *s, uint64_t off, uint64_t n,
                       uint64_t host, uint64_t l2e, uint8_t *buf)
{
    switch (qcow2_entry_type(s, l2e)) {
    case QCOW2_CT_UNALLOCATED:
        if (s->node->backing) bd_debug_event(s->file, BD_DEBUG_EVENT_READ_BACKING_AIO);
        return read_backing(s->node, off, n, buf);
    case QCOW2_CT_ZERO_PLAIN:
    case QCOW2_CT_ZERO_ALLOC:
        memset(buf, 0, n);
        return 0;
    case QCOW2_CT_COMPRESSED:
        return read_compressed_part(s, l2e, off & (s->cluster_size - 1), n,
                                    buf);
    default: {
        int ret;

        bd_debug_event(s->file, BD_DEBUG_EVENT_READ_AIO);
        ret = bd_child_pread(s->file, host, n, buf, 0);
        if (ret == 0 && s->crypto) {
            qcow2_crypt(s, FALSE, host, off, buf, buf, n);
        }
        return ret;
    }
    }
}

/* Write guest data 'buf' at host 'hoff' of the file, encrypted first
 * when the image is (through a bounce buffer of at most
 * LUKS_BOUNCE_MAX bytes at a time). */
static int write_data(Qcow2State *s, uint64_t hoff, uint64_t goff,
                      uint64_t n, const uint8_t *buf)
{
    g_autofree uint8_t *bounce = NULL;
    size_t cap;
    int ret = 0;

    bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_AIO);
    if (!s->crypto) {
        return bd_child_pwrite(s->file, hoff, n, buf, 0);
    }
    cap = MIN(n, LUKS_BOUNCE_MAX);
    bounce = g_try_malloc(MAX(cap, 1));
    if (!bounce) {
        return -ENOMEM;
    }
    while (n && ret == 0) {
        size_t len = MIN(n, cap);

        qcow2_crypt(s, TRUE, hoff, goff, bounce, buf, len);
        ret = bd_child_pwrite(s->file, hoff, len, bounce, 0);
        hoff += len;
        goff += len;
        n -= len;
        buf += len;
    }
    return ret;
}

/* Look up the mapping of a read (or block status).  A cached L2 slice is looked up under
 * the lock for a moment; a missing one is read from disk without the
 * lock, so readers never wait for one another's metadata reads, and
 * inserted unless the cache changed meanwhile (then read again; after a
 * few tries, under the lock as writers do). */
static int read_lookup(Qcow2State *s, uint64_t offset, uint64_t bytes,
                       uint64_t *n, uint64_t *host, uint64_t *l2e)
{
    g_autofree void *tmp = NULL;
    int ret;

    g_mutex_lock(&s->lock);
    for (int attempt = 0;; attempt++) {
        uint64_t miss_off = 0, gen = 0;
        uint32_t esize;

        if (attempt == 4) {
            ret = qcow2_get_mapping_locked(s, offset, bytes, n, host, l2e);
            break;
        }
        ret = qcow2_get_mapping_cached_locked(s, offset, bytes, n, host, l2e,
                                              &miss_off, &gen);
        if (ret != -EAGAIN) {
            break;
        }
        esize = qcow2_cache_entry_size(s->l2_cache);
        g_mutex_unlock(&s->lock);
        if (!tmp) {
            tmp = g_try_malloc(esize);
        }
        bd_debug_event(s->file, BD_DEBUG_EVENT_L2_LOAD);
        ret = tmp ? bd_child_pread(s->file, miss_off, esize, tmp, 0)
                  : -ENOMEM;
        g_mutex_lock(&s->lock);
        if (ret == 0) {
            ret = qcow2_cache_insert(s->l2_cache, miss_off, tmp, gen);
        }
        if (ret < 0 && ret != -EAGAIN) {
            break;
        }
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
                int flags)
{
    Qcow2State *s = node->opaque;
    uint8_t *p = buf;

    while (bytes > 0) {
        uint64_t n, host, l2e;
        int ret;

        ret = read_lookup(s, offset, bytes, &n, &host, &l2e);
        if (ret == 0) {
            ret = read_mapped(s, offset, n, host, l2e, p);
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

static gboolean inflight_overlaps(Qcow2State *s, uint64_t start,
                                  uint64_t end)
{
    for (guint i = 0; i < s->inflight->len; i++) {
        Qcow2Inflight *f = g_ptr_array_index(s->inflight, i);
        if (f->start < end && start < f->end) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean inflight_overlaps_clusters(Qcow2State *s, uint64_t off,
                                           uint64_t n)
{
    uint64_t start = off & ~((uint64_t)s->cluster_size - 1);
    uint64_t end = (off + n + s->cluster_size - 1) &
                   ~((uint64_t)s->cluster_size - 1);

    return inflight_overlaps(s, start, end);
}

static void inflight_wait_locked(Qcow2State *s, uint64_t off, uint64_t n)
{
    while (inflight_overlaps_clusters(s, off, n)) {
        g_cond_wait(&s->cond, &s->lock);
    }
}

/* Fill the COW parts of the new clusters from the old contents. */
static int cow_fill(Qcow2State *s, uint64_t cstart, uint64_t nc,
                    uint64_t off, uint64_t n, uint64_t l2e, uint8_t *bounce)
{
    uint64_t cs = s->cluster_size, end = off + n;
    Qcow2ClusterType t = qcow2_entry_type(s, l2e);
    int ret;

    if (off > cstart) {
        uint64_t host = t == QCOW2_CT_NORMAL ? (l2e & QCOW2_OFFSET_MASK) : 0;
        ret = read_mapped(s, cstart, cs, host, l2e, bounce);
        if (ret < 0) {
            return ret;
        }
    }
    if (end < cstart + nc * cs && (nc > 1 || off == cstart)) {
        uint64_t last = cstart + (nc - 1) * cs;
        uint64_t host = t == QCOW2_CT_NORMAL
                        ? (l2e & QCOW2_OFFSET_MASK) + (nc - 1) * cs : 0;
        ret = read_mapped(s, last, cs, host, l2e, bounce + (nc - 1) * cs);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Does the old content of a cluster with entry 'l2e' read as zeroes? */
static gboolean cow_reads_zero(Qcow2State *s, uint64_t l2e)
{
    switch (qcow2_entry_type(s, l2e)) {
    case QCOW2_CT_ZERO_PLAIN:
    case QCOW2_CT_ZERO_ALLOC:
        return TRUE;
    case QCOW2_CT_UNALLOCATED:
        return bd_node_backing(s->node) == NULL;
    default:
        return FALSE;
    }
}

/* Write guest [off, off+n) into the new clusters at 'hoff' (guest
 * clusters from 'cstart', 'nc' of them), with the COW of partial
 * clusters from what 'l2e' maps.  Without the lock. */
static int write_new_clusters(Qcow2State *s, uint64_t hoff, uint64_t cstart,
                              uint64_t nc, uint64_t off, uint64_t n,
                              uint64_t l2e, const uint8_t *buf)
{
    uint64_t cs = s->cluster_size;
    g_autofree uint8_t *bounce = NULL;
    int ret;

    if (off == cstart && n == nc * cs) {
        return write_data(s, hoff, off, n, buf);
    }
    /* Encrypted: zeroes in the file would not read back as zeroes, so
     * the COW parts are always written (encrypted), as QEMU does. */
    if (!s->crypto && cow_reads_zero(s, l2e)) {
        /* As QEMU: the COW parts would be zeroes, so zero the new
         * clusters cheaply in the file and write only the guest data;
         * only "cannot do it cheaply" falls back to writing them. */
        bd_debug_event(s->file, BD_DEBUG_EVENT_CLUSTER_ALLOC_SPACE);
        ret = bd_child_pwrite_zeroes(s->file, hoff, nc * cs,
                                     BD_REQ_NO_FALLBACK);
        if (ret == 0) {
            bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_AIO);
            return bd_child_pwrite(s->file, hoff + (off - cstart), n, buf,
                                   0);
        }
        if (ret != -ENOTSUP) {
            return ret;
        }
    }
    bounce = g_try_malloc(nc * cs);
    if (!bounce) {
        return -ENOMEM;
    }
    bd_debug_event(s->file, BD_DEBUG_EVENT_COW_READ);
    ret = cow_fill(s, cstart, nc, off, n, l2e, bounce);
    if (ret < 0) {
        return ret;
    }
    memcpy(bounce + (off - cstart), buf, n);
    /* Guest data and COW in one request (QEMU's merged COW). */
    if (s->crypto) {
        qcow2_crypt(s, TRUE, hoff, cstart, bounce, bounce, nc * cs);
    }
    bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_AIO);
    return bd_child_pwrite(s->file, hoff, nc * cs, bounce, 0);
}

/* Allocate new clusters for [off, off+n) (one mapping run), write the
 * data (with COW of partial clusters) and point the L2 entries at it.
 * Called and returns with the lock held; drops it for the data I/O. */
static int write_allocating_locked(Qcow2State *s, uint64_t off, uint64_t n,
                                   uint64_t l2e, const uint8_t *buf)
{
    uint64_t cs = s->cluster_size;
    uint64_t cstart = off & ~(cs - 1);
    uint64_t nc = ((off + n + cs - 1) & ~(cs - 1)) / cs - cstart / cs;
    Qcow2Inflight f = { cstart, cstart + nc * cs };
    g_autofree uint64_t *entries = NULL, *old = NULL;
    int64_t hoff;
    int ret;

    hoff = qcow2_alloc_clusters_locked(s, nc);
    if (hoff < 0) {
        return (int)hoff;
    }
    ret = qcow2_overlap_check_locked(s, hoff, nc * cs);
    if (ret < 0) {
        return ret;     /* corrupt: the refcounts stay as they are */
    }
    g_ptr_array_add(s->inflight, &f);
    g_mutex_unlock(&s->lock);

    ret = write_new_clusters(s, hoff, cstart, nc, off, n, l2e, buf);

    g_mutex_lock(&s->lock);
    g_ptr_array_remove_fast(s->inflight, &f);
    g_cond_broadcast(&s->cond);
    if (ret < 0) {
        goto fail;
    }
    entries = g_new(uint64_t, nc);
    old = g_new(uint64_t, nc);
    for (uint64_t i = 0; i < nc; i++) {
        entries[i] = ((uint64_t)hoff + i * cs) | QCOW2_OFLAG_COPIED;
    }
    ret = qcow2_set_l2_entries_locked(s, cstart, nc, entries, old);
    if (ret < 0) {
        goto fail;
    }
    for (uint64_t i = 0; i < nc; i++) {
        qcow2_free_entry_later_locked(s, old[i], QCOW2_DISCARD_OTHER);
    }
    qcow2_release_deferred_some_locked(s);
    return 0;

fail:
    /* Nothing references the new clusters: give them back (QEMU's
     * qcow2_alloc_cluster_abort), or a retry would leak them. */
    qcow2_free_clusters_locked(s, hoff, nc * cs, QCOW2_DISCARD_OTHER);
    return ret;
}

/* Write one mapping run starting at offset; returns bytes done. */
static int64_t write_chunk(Qcow2State *s, uint64_t off, uint64_t bytes,
                           const uint8_t *buf)
{
    uint64_t n, host, l2e;
    int ret;

    g_mutex_lock(&s->lock);
    for (;;) {
        ret = qcow2_get_mapping_locked(s, off, bytes, &n, &host, &l2e);
        if (ret < 0 || !inflight_overlaps_clusters(s, off, n)) {
            break;
        }
        inflight_wait_locked(s, off, n);
    }
    if (ret == 0 && s->corrupt) {
        ret = -EIO;
    }
    if (ret < 0) {
        g_mutex_unlock(&s->lock);
        return ret;
    }
    if (qcow2_entry_type(s, l2e) != QCOW2_CT_NORMAL ||
        !(l2e & QCOW2_OFLAG_COPIED)) {
        /* An allocation stays within one L2 slice, so that its L2
         * update is all or nothing. */
        uint64_t span = (uint64_t)s->l2_slice_size << s->cluster_bits;
        n = MIN(n, span - (off & (span - 1)));
    }
    if (qcow2_entry_type(s, l2e) == QCOW2_CT_NORMAL &&
        (l2e & QCOW2_OFLAG_COPIED)) {
        /* A corrupted L2 entry may point into metadata: every data
         * write is checked, as QEMU's pre-write overlap check. */
        ret = qcow2_overlap_check_locked(s, host, n);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        ret = write_data(s, host, off, n, buf);
        return ret < 0 ? ret : (int64_t)n;
    }
    ret = write_allocating_locked(s, off, n, l2e, buf);
    g_mutex_unlock(&s->lock);
    return ret < 0 ? ret : (int64_t)n;
}

/* Point the L2 entry of guest cluster 'cstart' at 'entry', then release
 * what the old entry referenced (after the new L2 table is on disk). */
static int replace_entry_locked(Qcow2State *s, uint64_t cstart,
                                uint64_t entry)
{
    uint64_t old;
    int ret = qcow2_set_l2_entries_locked(s, cstart, 1, &entry, &old);

    if (ret < 0) {
        return ret;
    }
    qcow2_free_entry_later_locked(s, old, QCOW2_DISCARD_OTHER);
    qcow2_release_deferred_some_locked(s);
    return 0;
}

/* One whole guest cluster stored compressed ('len' bytes of 'data'). */
static int write_compressed_cluster(Qcow2State *s, uint64_t cstart,
                                    const uint8_t *data, size_t len)
{
    Qcow2Inflight f = { cstart, cstart + s->cluster_size };
    int64_t hoff;
    uint64_t entry, sectors;
    int ret;

    g_mutex_lock(&s->lock);
    inflight_wait_locked(s, cstart, s->cluster_size);
    if (s->corrupt) {
        g_mutex_unlock(&s->lock);
        return -EIO;
    }
    hoff = qcow2_alloc_bytes_locked(s, len);
    ret = hoff < 0 ? (int)hoff : qcow2_overlap_check_locked(s, hoff, len);
    if (ret < 0) {
        g_mutex_unlock(&s->lock);
        return ret;
    }
    g_ptr_array_add(s->inflight, &f);
    g_mutex_unlock(&s->lock);

    bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_COMPRESSED);
    ret = bd_child_pwrite(s->file, hoff, len, data, 0);

    g_mutex_lock(&s->lock);
    g_ptr_array_remove_fast(s->inflight, &f);
    g_cond_broadcast(&s->cond);
    /* Sectors spanned, minus one, as the L2 entry stores it. */
    sectors = ((uint64_t)hoff + len - 1) / 512 - (uint64_t)hoff / 512;
    entry = QCOW2_OFLAG_COMPRESSED | ((uint64_t)hoff & s->coffset_mask) |
            (sectors << s->csize_shift);
    if (ret == 0) {
        bd_debug_event(s->file, BD_DEBUG_EVENT_L2_UPDATE_COMPRESSED);
        ret = replace_entry_locked(s, cstart, entry);
    }
    if (ret < 0) {
        /* Nothing references the new bytes: give them back. */
        qcow2_free_entry_locked(s, entry, QCOW2_DISCARD_OTHER);
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

/* BD_REQ_WRITE_COMPRESSED: whole clusters (or the image's last, partial
 * one), each stored compressed unless that would not save space; other
 * requests are refused with -EINVAL, as QEMU's. */
static int qcow2_pwrite_compressed(Qcow2State *s, uint64_t offset,
                                   uint64_t bytes, const uint8_t *buf)
{
    uint64_t cs = s->cluster_size;
    g_autofree uint8_t *in = NULL, *out = NULL;

    if ((offset & (cs - 1)) ||
        ((bytes & (cs - 1)) && offset + bytes != s->node->size)) {
        return -EINVAL;
    }
    in = g_try_malloc(cs);
    out = g_try_malloc(cs);
    if (!in || !out) {
        return -ENOMEM;
    }
    while (bytes > 0) {
        uint64_t n = MIN(bytes, cs);
        ssize_t clen;
        int ret;

        memcpy(in, buf, n);
        memset(in + n, 0, cs - n);
        clen = qcow2_compress_cluster(in, cs, out, cs - 1);
        if (clen == -ENOSPC) {
            ret = qcow2_pwrite(s->node, offset, n, buf, 0);
        } else if (clen < 0) {
            ret = (int)clen;
        } else {
            ret = write_compressed_cluster(s, offset, out, clen);
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        buf += n;
    }
    return 0;
}

int qcow2_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                 const void *buf, int flags)
{
    Qcow2State *s = node->opaque;
    const uint8_t *p = buf;

    if (flags & BD_REQ_WRITE_COMPRESSED) {
        int ret;

        if (s->crypto) {
            /* As QEMU: compressed clusters are not encrypted. */
            return -ENOTSUP;
        }
        ret = qcow2_pwrite_compressed(s, offset, bytes, buf);
        return ret == 0 && (flags & BD_REQ_FUA) ? qcow2_flush(node) : ret;
    }

    while (bytes > 0) {
        int64_t n = write_chunk(s, offset, bytes, p);
        if (n < 0) {
            return (int)n;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return (flags & BD_REQ_FUA) ? qcow2_flush(node) : 0;
}

/* --- copy offload (BdDriver.copy_range_from) --- */

/* Copy 'n' bytes from the fd into the file child at 'hoff', all of
 * them (a new cluster run is all or nothing): 0 or -errno. */
static int copy_into_file(Qcow2State *s, uint64_t hoff, uint64_t n,
                          int src_fd, uint64_t src_offset)
{
    for (uint64_t done = 0; done < n;) {
        int64_t r = bd_node_copy_range_from_fd(s->file->node, hoff + done,
                                               n - done, src_fd,
                                               src_offset + done);
        if (r <= 0) {
            return r < 0 ? (int)r : -ENOTSUP;
        }
        done += (uint64_t)r;
    }
    return 0;
}

/* Whole clusters only (no COW to do): into clusters the image owns
 * already, or into new ones linked once the data is in place, as
 * write_allocating_locked does with a buffer.  Anything else (partial
 * clusters) is -ENOTSUP: the caller
 * writes the usual way.  Returns the bytes done. */
int64_t qcow2_copy_range_from(BdNode *node, uint64_t offset, uint64_t bytes,
                              int src_fd, uint64_t src_offset)
{
    Qcow2State *s = node->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t n, host, l2e, nc;
    int64_t hoff;
    int ret;

    /* Decline before any side effect (an allocation fires debug
     * events, which blkdebug rules count) when the file child cannot
     * take the copy anyway. */
    if (s->crypto || !s->file->node->drv->copy_range_from ||
        (offset & (cs - 1)) || bytes < cs || offset >= node->size) {
        return -ENOTSUP;
    }
    bytes = MIN(bytes, node->size - offset) & ~(cs - 1);
    if (bytes == 0) {
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    for (;;) {
        ret = qcow2_get_mapping_locked(s, offset, bytes, &n, &host, &l2e);
        if (ret < 0 || !inflight_overlaps_clusters(s, offset, n)) {
            break;
        }
        inflight_wait_locked(s, offset, n);
    }
    if (ret == 0 && s->corrupt) {
        ret = -EIO;
    }
    if (ret < 0) {
        g_mutex_unlock(&s->lock);
        return ret;
    }
    n &= ~(cs - 1);
    if (n == 0) {
        g_mutex_unlock(&s->lock);
        return -ENOTSUP;
    }
    if (qcow2_entry_type(s, l2e) == QCOW2_CT_NORMAL &&
        (l2e & QCOW2_OFLAG_COPIED)) {
        ret = qcow2_overlap_check_locked(s, host, n);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        return bd_node_copy_range_from_fd(s->file->node, host, n, src_fd,
                                          src_offset);
    }

    /* New clusters, within one L2 slice (all or nothing). */
    uint64_t span = (uint64_t)s->l2_slice_size << s->cluster_bits;
    n = MIN(n, span - (offset & (span - 1)));
    nc = n / cs;
    Qcow2Inflight f = { offset, offset + n };
    g_autofree uint64_t *entries = NULL, *old = NULL;

    hoff = qcow2_alloc_clusters_locked(s, nc);
    ret = hoff < 0 ? (int)hoff : qcow2_overlap_check_locked(s, hoff, n);
    if (ret < 0) {
        g_mutex_unlock(&s->lock);
        return ret;
    }
    g_ptr_array_add(s->inflight, &f);
    g_mutex_unlock(&s->lock);

    bd_debug_event(s->file, BD_DEBUG_EVENT_WRITE_AIO);
    ret = copy_into_file(s, (uint64_t)hoff, n, src_fd, src_offset);

    g_mutex_lock(&s->lock);
    g_ptr_array_remove_fast(s->inflight, &f);
    g_cond_broadcast(&s->cond);
    if (ret == 0) {
        entries = g_new(uint64_t, nc);
        old = g_new(uint64_t, nc);
        for (uint64_t i = 0; i < nc; i++) {
            entries[i] = ((uint64_t)hoff + i * cs) | QCOW2_OFLAG_COPIED;
        }
        ret = qcow2_set_l2_entries_locked(s, offset, nc, entries, old);
    }
    if (ret < 0) {
        qcow2_free_clusters_locked(s, (uint64_t)hoff, n,
                                   QCOW2_DISCARD_OTHER);
        g_mutex_unlock(&s->lock);
        return ret;
    }
    for (uint64_t i = 0; i < nc; i++) {
        qcow2_free_entry_later_locked(s, old[i], QCOW2_DISCARD_OTHER);
    }
    qcow2_release_deferred_some_locked(s);
    g_mutex_unlock(&s->lock);
    return (int64_t)n;
}

/* Zero the unaligned head or tail by writing a zero buffer. */
static int write_zero_buffer(BdNode *node, uint64_t off, uint64_t n)
{
    g_autofree uint8_t *z = g_try_malloc0(n);

    return z ? qcow2_pwrite(node, off, n, z, 0) : -ENOMEM;
}

static int zero_aligned(Qcow2State *s, uint64_t off, uint64_t bytes,
                        Qcow2ZeroMode mode)
{
    int ret;

    g_mutex_lock(&s->lock);
    inflight_wait_locked(s, off, bytes);
    ret = s->corrupt ? -EIO
                     : qcow2_zero_clusters_locked(s, off,
                                                  bytes >> s->cluster_bits,
                                                  mode);
    g_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                        int flags)
{
    Qcow2State *s = node->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t astart = (offset + cs - 1) & ~(cs - 1);
    uint64_t aend = (offset + bytes) & ~(cs - 1);
    int ret = 0;

    if (s->h.version < 3 || astart >= aend) {
        return -ENOTSUP;    /* the generic layer writes zero buffers */
    }
    if (offset < astart) {
        ret = write_zero_buffer(node, offset, astart - offset);
    }
    if (ret == 0) {
        ret = zero_aligned(s, astart, aend - astart,
                           (flags & BD_REQ_MAY_UNMAP) ? QCOW2_ZERO_UNMAP
                                                      : QCOW2_ZERO_KEEP);
    }
    if (ret == 0 && aend < offset + bytes) {
        ret = write_zero_buffer(node, aend, offset + bytes - aend);
    }
    if (ret == 0 && (flags & BD_REQ_FUA)) {
        ret = qcow2_flush(node);
    }
    return ret;
}

int qcow2_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    Qcow2State *s = node->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t astart = (offset + cs - 1) & ~(cs - 1);
    uint64_t aend = (offset + bytes) & ~(cs - 1);

    if (offset + bytes == node->size) {
        aend = (offset + bytes + cs - 1) & ~(cs - 1);
    }
    if (!node->discard_unmap || astart >= aend) {
        return 0;
    }
    return zero_aligned(s, astart, aend - astart, QCOW2_DISCARD);
}

int qcow2_flush(BdNode *node)
{
    Qcow2State *s = node->opaque;
    int ret;

    g_mutex_lock(&s->lock);
    ret = qcow2_metadata_flush_locked(s);
    g_mutex_unlock(&s->lock);
    return ret < 0 ? ret : bd_child_flush(s->file);
}

int qcow2_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                       uint64_t *pnum, uint64_t *map, BdNode **file)
{
    Qcow2State *s = node->opaque;
    uint64_t host, l2e;
    int ret;

    ret = read_lookup(s, offset, bytes, pnum, &host, &l2e);
    if (ret < 0) {
        return ret;
    }
    switch (qcow2_entry_type(s, l2e)) {
    case QCOW2_CT_NORMAL:
        if (s->crypto) {
            /* The file holds ciphertext: no offset to read it at. */
            return BD_BLOCK_DATA;
        }
        *map = host;
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    case QCOW2_CT_ZERO_PLAIN:
    case QCOW2_CT_ZERO_ALLOC:
        return BD_BLOCK_ZERO;
    case QCOW2_CT_COMPRESSED:
        return BD_BLOCK_DATA;
    default:
        return 0;
    }
}

int qcow2_truncate(BdNode *node, uint64_t size)
{
    Qcow2State *s = node->opaque;
    uint64_t be = GUINT64_TO_BE(size);
    int ret;

    if (s->h.nb_snapshots && s->h.version < 3) {
        /* A v2 snapshot does not record its disk size (QEMU: "Can't
         * resize a v2 image which has snapshots"). */
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    if (s->corrupt) {
        ret = -EIO;
    } else if (size < node->size) {
        ret = qcow2_shrink_locked(s, node->size, size);
    } else {
        ret = qcow2_grow_l1_locked(s, size);
    }
    if (ret == 0) {
        ret = qcow2_metadata_flush_locked(s);
    }
    if (ret == 0) {
        ret = bd_child_pwrite(s->file, 24, 8, &be, 0);
    }
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        s->h.size = size;
        bd_node_set_size(node, size);
    }
    g_mutex_unlock(&s->lock);
    return ret;
}
