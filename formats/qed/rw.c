/* SPDX-License-Identifier: MIT */
/* The qed data path: lookups, reads (from the backing file where
 * unallocated), in-place and allocating writes, zero clusters, and the
 * header's NEED_CHECK bit.  Thread model: see qed.c. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/qed/qed.h"

/* The entry for 'offset' and how many bytes from there (at most
 * 'bytes') share its kind: contiguous data in the file, zero clusters,
 * or unallocated clusters. */
static uint64_t lookup_run(QedState *s, uint64_t offset, uint64_t bytes,
                           uint64_t *pnum)
{
    uint64_t e = l2_entry(s, offset);
    uint64_t in = offset & (s->cluster_size - 1);
    uint64_t n = MIN(bytes, s->cluster_size - in);

    while (n < bytes) {
        uint64_t next = l2_entry(s, offset + n);
        if (e > QED_ZERO_CLUSTER
            ? next != (e + in + n) : next != e) {
            break;
        }
        n = MIN(bytes, n + s->cluster_size);
    }
    *pnum = n;
    return e;
}

static int read_backing(QedState *s, uint64_t off, uint64_t bytes,
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

int qed_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    QedState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t n;
        uint64_t e = lookup_run(s, offset, bytes, &n);
        int ret = 0;

        if (e > QED_ZERO_CLUSTER) {
            ret = bd_child_pread(s->file, e + (offset & (s->cluster_size - 1)),
                                 n, p, 0);
        } else if (e == QED_ZERO_CLUSTER) {
            memset(p, 0, n);
        } else {
            ret = read_backing(s, offset, n, p);
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

/* Zero-copy reads of contiguous data clusters; anything else falls
 * back to qed_pread before anything is sent. */
int qed_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           BdFdSink *sink, int flags)
{
    QedState *s = node->opaque;
    uint64_t n;
    uint64_t e = lookup_run(s, offset, bytes, &n);

    if (e <= QED_ZERO_CLUSTER || n < bytes) {
        return -ENOTSUP;
    }
    return bd_child_pread_to_fd(s->file,
                                e + (offset & (s->cluster_size - 1)),
                                bytes, sink, flags);
}

int qed_write_header_locked(QedState *s)
{
    put_le64(s->header + H_FEATURES, s->features);
    return bd_child_pwrite(s->file, 0, QED_HEADER_SIZE, s->header, 0);
}

/* QED_F_NEED_CHECK on disk before any metadata changes. */
static int mark_need_check_locked(QedState *s)
{
    int ret;

    if (s->features & QED_F_NEED_CHECK) {
        return 0;
    }
    s->features |= QED_F_NEED_CHECK;
    ret = qed_write_header_locked(s);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        s->features &= ~(uint64_t)QED_F_NEED_CHECK;
    }
    return ret;
}

/* Clear QED_F_NEED_CHECK once everything written before is durable. */
int qed_clear_need_check_locked(QedState *s)
{
    int ret;

    if (!(s->features & QED_F_NEED_CHECK) || s->node->read_only) {
        return 0;
    }
    ret = bd_child_flush(s->file);
    if (ret < 0) {
        return ret;
    }
    s->features &= ~(uint64_t)QED_F_NEED_CHECK;
    ret = qed_write_header_locked(s);
    if (ret < 0) {
        s->features |= QED_F_NEED_CHECK;
    }
    return ret;
}

/* The L2 table for L1 index 'l1i', allocated (zeroed, at the end of the
 * file, then the L1 entry) when there is none. */
static int ensure_table_locked(QedState *s, uint64_t l1i, uint64_t **pt)
{
    uint64_t *t = s->l2[l1i];
    uint64_t off;
    uint8_t le[8];
    int ret;

    if (t) {
        *pt = t;
        return 0;
    }
    t = g_try_malloc0(s->table_bytes);
    if (!t) {
        return -ENOMEM;
    }
    off = s->file_end;
    ret = bd_child_pwrite(s->file, off, s->table_bytes, t, 0);
    if (ret < 0) {
        g_free(t);
        return ret;
    }
    s->file_end += s->table_bytes;
    put_le64(le, off);
    ret = bd_child_pwrite(s->file, s->l1_offset + l1i * 8, 8, le, 0);
    if (ret < 0) {
        g_free(t);
        return ret;
    }
    __atomic_store_n(&s->l1[l1i], off, __ATOMIC_RELEASE);
    __atomic_store_n(&s->l2[l1i], t, __ATOMIC_RELEASE);
    *pt = t;
    return 0;
}

/* Write 'count' L2 entries from index l2i of table 't' (L1 index l1i):
 * on disk, then published. */
static int set_entries_locked(QedState *s, uint64_t l1i, uint64_t *t,
                              uint64_t l2i, uint64_t count,
                              const uint64_t *vals)
{
    g_autofree uint8_t *le = g_try_malloc(count * 8);
    int ret;

    if (!le) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < count; i++) {
        put_le64(le + i * 8, vals[i]);
    }
    ret = bd_child_pwrite(s->file, s->l1[l1i] + l2i * 8, count * 8, le, 0);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < count; i++) {
        __atomic_store_n(&t[l2i + i], vals[i], __ATOMIC_RELEASE);
    }
    return 0;
}

/* What an unwritten part of cluster 'cstart' (entry 'e') holds: the
 * backing file's bytes for an unallocated one, else zeroes. */
static int fill_cluster(QedState *s, uint64_t e, uint64_t cstart,
                        uint8_t *buf)
{
    if (e == 0) {
        return read_backing(s, cstart, s->cluster_size, buf);
    }
    memset(buf, 0, s->cluster_size);
    return 0;
}

/* Allocate clusters for the write [offset, offset+bytes) from its start
 * (as many unallocated or zero clusters in a row of one L2 table as it
 * covers, up to QED_MAX_ALLOC_BYTES) and write them: the request's
 * bytes ('buf'; NULL: zeroes) with the rest of the first and last
 * cluster from the backing file or zeroes.  Returns the bytes done or
 * -errno.  If another request allocated the first cluster meanwhile,
 * writes that one in place instead. */
static int64_t alloc_write(QedState *s, uint64_t offset, uint64_t bytes,
                           const uint8_t *buf)
{
    uint64_t cs = s->cluster_size;
    uint64_t in = offset & (cs - 1);
    uint64_t l1i = offset >> s->l1_shift;
    uint64_t l2i = (offset >> s->cluster_bits) & (s->table_nelems - 1);
    uint64_t cstart = offset - in;
    uint64_t *t, count, len, host, done;
    g_autofree uint64_t *vals = NULL;
    g_autofree uint8_t *data = NULL;
    int64_t ret;
    uint64_t e;

    bd_mutex_lock(&s->alloc_lock);
    e = l2_entry(s, offset);
    if (e > QED_ZERO_CLUSTER) {
        bd_mutex_unlock(&s->alloc_lock);
        done = MIN(bytes, cs - in);
        if (buf) {
            ret = bd_child_pwrite(s->file, e + in, done, buf, 0);
        } else {
            ret = bd_child_pwrite_zeroes(s->file, e + in, done, 0);
        }
        return ret < 0 ? ret : (int64_t)done;
    }
    ret = mark_need_check_locked(s);
    if (ret == 0) {
        ret = ensure_table_locked(s, l1i, &t);
    }
    if (ret < 0) {
        goto out;
    }
    /* The run of clusters to allocate. */
    count = 1;
    while (l2i + count < s->table_nelems &&
           count * cs < in + bytes && (count + 1) * cs <= QED_MAX_ALLOC_BYTES &&
           t[l2i + count] <= QED_ZERO_CLUSTER) {
        count++;
    }
    len = count * cs;
    done = MIN(bytes, len - in);
    data = g_try_malloc(len);
    vals = g_try_new(uint64_t, count);
    if (!data || !vals) {
        ret = -ENOMEM;
        goto out;
    }
    if (in) {
        ret = fill_cluster(s, e, cstart, data);
        if (ret < 0) {
            goto out;
        }
    }
    if (in + done < len && !(count == 1 && in)) {
        uint64_t last = (count - 1) * cs;
        ret = fill_cluster(s, t[l2i + count - 1], cstart + last, data + last);
        if (ret < 0) {
            goto out;
        }
    }
    if (buf) {
        memcpy(data + in, buf, done);
    } else {
        memset(data + in, 0, done);
    }
    host = s->file_end;
    ret = bd_child_pwrite(s->file, host, len, data, 0);
    if (ret < 0) {
        goto out;
    }
    s->file_end += len;
    for (uint64_t i = 0; i < count; i++) {
        vals[i] = host + i * cs;
    }
    ret = set_entries_locked(s, l1i, t, l2i, count, vals);
out:
    bd_mutex_unlock(&s->alloc_lock);
    return ret < 0 ? ret : (int64_t)done;
}

int qed_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    QedState *s = node->opaque;
    const uint8_t *p = buf;

    while (bytes) {
        uint64_t n;
        uint64_t e = lookup_run(s, offset, bytes, &n);
        int64_t ret;

        if (e > QED_ZERO_CLUSTER) {
            ret = bd_child_pwrite(s->file,
                                  e + (offset & (s->cluster_size - 1)),
                                  n, p, 0);
            ret = ret < 0 ? ret : (int64_t)n;
        } else {
            ret = alloc_write(s, offset, bytes, p);
        }
        if (ret < 0) {
            return (int)ret;
        }
        offset += (uint64_t)ret;
        bytes -= (uint64_t)ret;
        p += ret;
    }
    if (flags & BD_REQ_FUA) {
        return bd_child_flush(s->file);
    }
    return 0;
}

/* Mark whole cluster 'offset' a zero cluster. */
static int set_zero_cluster(QedState *s, uint64_t offset)
{
    uint64_t l1i = offset >> s->l1_shift;
    uint64_t l2i = (offset >> s->cluster_bits) & (s->table_nelems - 1);
    uint64_t one = QED_ZERO_CLUSTER;
    uint64_t *t;
    int ret;

    bd_mutex_lock(&s->alloc_lock);
    if (l2_entry(s, offset) != 0) {
        /* Allocated or zero meanwhile: the caller's loop sees it. */
        bd_mutex_unlock(&s->alloc_lock);
        return -EAGAIN;
    }
    ret = mark_need_check_locked(s);
    if (ret == 0) {
        ret = ensure_table_locked(s, l1i, &t);
    }
    if (ret == 0) {
        ret = set_entries_locked(s, l1i, t, l2i, 1, &one);
    }
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

/* Data clusters are zeroed in place; unallocated ones read as zeroes
 * already without a backing file, and become zero clusters with one
 * (whole clusters; parts of one are written as zeroes). */
int qed_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                             int flags)
{
    QedState *s = node->opaque;
    gboolean backing = bd_node_backing(node) != NULL;

    while (bytes) {
        uint64_t cs = s->cluster_size;
        uint64_t in = offset & (cs - 1);
        uint64_t n = MIN(bytes, cs - in);
        uint64_t e = l2_entry(s, offset);
        int64_t ret = 0;

        if (e > QED_ZERO_CLUSTER) {
            ret = bd_child_pwrite_zeroes(s->file, e + in, n,
                                         flags & ~BD_REQ_MAY_UNMAP);
        } else if (e == 0 && backing) {
            if (n == cs) {
                ret = set_zero_cluster(s, offset);
                if (ret == -EAGAIN) {
                    continue;
                }
            } else {
                ret = alloc_write(s, offset, n, NULL);
                if (ret >= 0) {
                    n = (uint64_t)ret;
                }
            }
        }
        if (ret < 0) {
            return (int)ret;
        }
        offset += n;
        bytes -= n;
    }
    if (flags & BD_REQ_FUA) {
        return bd_child_flush(s->file);
    }
    return 0;
}

int qed_flush(BdNode *node)
{
    QedState *s = node->opaque;
    int ret;

    bd_mutex_lock(&s->alloc_lock);
    ret = qed_clear_need_check_locked(s);
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

int qed_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    QedState *s = node->opaque;
    uint64_t e = lookup_run(s, offset, bytes, pnum);

    if (e > QED_ZERO_CLUSTER) {
        *map = e + (offset & (s->cluster_size - 1));
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    return e == QED_ZERO_CLUSTER ? BD_BLOCK_ZERO : 0;
}

