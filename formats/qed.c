/* SPDX-License-Identifier: MIT */
/* The 'qed' format driver: QEMU Enhanced Disk images (QEMU's
 * docs/interop/qed_spec.txt), read-write, with backing files, zero
 * clusters, the consistency check after an unclean close, and
 * blockdev-create.
 *
 * On disk (little endian): a 64-byte header at the start of
 * header_size clusters (the backing file name lives there too), then
 * regular clusters: the L1 table (table_size clusters), L2 tables (as
 * large) and data clusters, each aligned to the cluster size.  A guest
 * offset splits into L1 index, L2 index and the offset in the cluster.
 * L2 entries: 0 unallocated (backing file or zeroes), 1 a zero cluster,
 * else the file offset of the data.  New clusters are appended at the
 * end of the file; nothing is ever freed, so the worst an interrupted
 * allocation leaves is a leaked cluster.
 *
 *   [header + name][L1 table][L2 table][data][data][L2 table] ...
 *
 * Memory: every L2 table the L1 names is loaded at open (that is also
 * when they are all checked).  Tables are refused where they overlap
 * each other, the header or the L1 table, so what is held is bounded by
 * the file's size.
 *
 * QED_F_NEED_CHECK is set in the header (and flushed) before the first
 * allocating write changes any metadata, and cleared on flush and on
 * close once the writes before are durable.  Opened read-write with the
 * bit set (an unclean close), the check runs: L1 and L2 entries that
 * point past the end of the file or are misaligned are dropped, then
 * the bit is cleared.  Leaked clusters are harmless (allocation goes to
 * the end of the file) and are left to qemu-img check -r.
 *
 * Thread model: open/close/query on the main thread, create on the
 * create job's thread, data callbacks on any thread.  Readers and
 * in-place writers take no lock: they load L1 slots (table pointers)
 * and L2 entries atomically (acquire).  Allocation (new L2 table, new
 * data clusters, zero clusters, the header's NEED_CHECK bit) is
 * serialised by QedState.alloc_lock, held from the re-lookup to the
 * publication of the new entries with release stores, after their
 * on-disk copies are written: data, then the L2 entry, then (for a new
 * table) the L1 entry.  Writers to the same unallocated cluster wait on
 * the lock and then find it allocated.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"
#include "formats/create-util.h"
#include "formats/filename.h"
#include "formats/registry.h"

#define QED_MAGIC               0x00444551u   /* "QED\0" */
#define QED_HEADER_SIZE         64
#define QED_MIN_CLUSTER_SIZE    (4u * 1024)
#define QED_MAX_CLUSTER_SIZE    (64u * 1024 * 1024)
#define QED_DEFAULT_CLUSTER_SIZE (64u * 1024)
#define QED_MIN_TABLE_SIZE      1u
#define QED_MAX_TABLE_SIZE      16u
#define QED_DEFAULT_TABLE_SIZE  4u
#define QED_F_BACKING_FILE      0x01u
#define QED_F_NEED_CHECK        0x02u
#define QED_F_BACKING_FORMAT_NO_PROBE 0x04u
#define QED_FEATURE_MASK        (QED_F_BACKING_FILE | QED_F_NEED_CHECK | \
                                 QED_F_BACKING_FORMAT_NO_PROBE)
#define QED_AUTOCLEAR_FEATURE_MASK 0u
#define QED_ZERO_CLUSTER        1u
/* QEMU's limit on a backing file name (its PATH_MAX buffer). */
#define QED_MAX_BACKING_NAME    4095u
/* Clusters one allocation may append at once. */
#define QED_MAX_ALLOC_BYTES     (16u * 1024 * 1024)

/* Header field offsets. */
enum {
    H_MAGIC = 0, H_CLUSTER_SIZE = 4, H_TABLE_SIZE = 8, H_HEADER_SIZE = 12,
    H_FEATURES = 16, H_COMPAT = 24, H_AUTOCLEAR = 32, H_L1_OFFSET = 40,
    H_IMAGE_SIZE = 48, H_BACKING_OFFSET = 56, H_BACKING_SIZE = 60,
};

typedef struct {
    BdNode *node;
    BdChild *file;
    uint32_t cluster_size;
    uint32_t table_size;
    uint32_t header_size;
    uint32_t cluster_bits;
    uint64_t l1_shift;
    uint64_t table_nelems;
    uint64_t table_bytes;
    uint64_t l1_offset;
    uint64_t image_size;
    char *backing_file;        /* from the header, or NULL */
    const char *backing_fmt;   /* "raw" with NO_PROBE, else NULL */
    gboolean backing_from_header;
    /* On-disk L1 entries (read with atomic loads) and the loaded L2
     * table of each (NULL: none), entries in host order. */
    uint64_t *l1;
    uint64_t **l2;

    BdMutex alloc_lock;        /* protects the members below */
    uint8_t header[QED_HEADER_SIZE];   /* as on disk */
    uint64_t features;
    uint64_t file_end;         /* where the next cluster goes */
    gboolean opened;           /* close may update the header */
} QedState;

typedef struct {
    GVariant *file;
    GVariant *backing;
    gboolean has_backing;
} QedOptions;

/* QAPI BlockdevOptionsGenericCOWFormat. */
static const BdSchemaField qed_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(QedOptions, file) },
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE,
      BD_AT(QedOptions, backing), BD_HAS(QedOptions, backing) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(QedOptions, qed_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static uint32_t get_le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static gboolean is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static gboolean cluster_size_valid(uint64_t cs)
{
    return cs >= QED_MIN_CLUSTER_SIZE && cs <= QED_MAX_CLUSTER_SIZE &&
           is_pow2(cs);
}

static gboolean table_size_valid(uint64_t ts)
{
    return ts >= QED_MIN_TABLE_SIZE && ts <= QED_MAX_TABLE_SIZE &&
           is_pow2(ts);
}

static uint64_t max_image_size(uint64_t cs, uint64_t ts)
{
    uint64_t nelems = cs * ts / 8;

    return nelems * nelems * cs;
}

static gboolean image_size_valid(uint64_t size, uint64_t cs, uint64_t ts)
{
    return size % 512 == 0 && size <= max_image_size(cs, ts);
}

/* --- lookups --- */

static inline uint64_t l2_entry(QedState *s, uint64_t offset)
{
    uint64_t l1i = offset >> s->l1_shift;
    uint64_t *t = __atomic_load_n(&s->l2[l1i], __ATOMIC_ACQUIRE);

    if (!t) {
        return 0;
    }
    return __atomic_load_n(&t[(offset >> s->cluster_bits) &
                              (s->table_nelems - 1)], __ATOMIC_ACQUIRE);
}

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

/* --- data path --- */

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

static int qed_pread(BdNode *node, uint64_t offset, uint64_t bytes,
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
static int qed_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
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

static int write_header_locked(QedState *s)
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
    ret = write_header_locked(s);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret < 0) {
        s->features &= ~(uint64_t)QED_F_NEED_CHECK;
    }
    return ret;
}

/* Clear QED_F_NEED_CHECK once everything written before is durable. */
static int clear_need_check_locked(QedState *s)
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
    ret = write_header_locked(s);
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

static int qed_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
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
static int qed_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
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

static int qed_flush(BdNode *node)
{
    QedState *s = node->opaque;
    int ret;

    bd_mutex_lock(&s->alloc_lock);
    ret = clear_need_check_locked(s);
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

static int qed_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
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

/* --- open --- */

/* QEMU's checks, in QEMU's order and words. */
static gboolean check_header(QedState *s, const uint8_t *h,
                             uint64_t file_end, GError **errp)
{
    uint64_t features = get_le64(h + H_FEATURES);
    uint64_t cs = get_le32(h + H_CLUSTER_SIZE);
    uint64_t ts = get_le32(h + H_TABLE_SIZE);
    uint64_t hs = get_le32(h + H_HEADER_SIZE);
    uint64_t l1 = get_le64(h + H_L1_OFFSET);
    uint64_t l1_last;

    if (get_le32(h + H_MAGIC) != QED_MAGIC) {
        FAIL("Image not in QED format");
    }
    if (features & ~(uint64_t)QED_FEATURE_MASK) {
        FAIL("Unsupported QED features: %" PRIx64,
             features & ~(uint64_t)QED_FEATURE_MASK);
    }
    if (!cluster_size_valid(cs)) {
        FAIL("QED cluster size is invalid");
    }
    if (!table_size_valid(ts)) {
        FAIL("QED table size is invalid");
    }
    if (!image_size_valid(get_le64(h + H_IMAGE_SIZE), cs, ts)) {
        FAIL("QED image size is invalid");
    }
    /* QEMU's table offset rule: first and last cluster of the table
     * aligned, after the header and starting inside the file. */
    l1_last = l1 + (ts - 1) * cs;
    if (l1_last <= l1 || (l1 & (cs - 1)) || l1 < hs * cs ||
        l1_last >= file_end) {
        FAIL("QED table offset is invalid");
    }
    if (hs > UINT32_MAX / cs) {
        FAIL("QED header size is too large");
    }
    if (features & QED_F_BACKING_FILE) {
        uint64_t bo = get_le32(h + H_BACKING_OFFSET);
        uint64_t bs = get_le32(h + H_BACKING_SIZE);
        if (bo + bs > hs * cs) {
            FAIL("QED backing filename offset is invalid");
        }
        if (bs > QED_MAX_BACKING_NAME) {
            FAIL("Failed to read backing filename");
        }
    }
    s->cluster_size = (uint32_t)cs;
    s->table_size = (uint32_t)ts;
    s->header_size = (uint32_t)hs;
    s->cluster_bits = (uint32_t)g_bit_nth_lsf(cs, -1);
    s->table_bytes = cs * ts;
    s->table_nelems = s->table_bytes / 8;
    s->l1_shift = s->cluster_bits + g_bit_nth_lsf(s->table_nelems, -1);
    s->l1_offset = l1;
    s->image_size = get_le64(h + H_IMAGE_SIZE);
    s->features = features;
    return TRUE;
}

typedef struct {
    QedState *s;
    uint8_t *used;             /* one bit per cluster of the file */
    uint64_t nclusters;
    gboolean fix;              /* drop bad entries (NEED_CHECK, writable) */
    uint64_t dropped;
    uint64_t used_end;         /* end of the last used cluster */
} QedScan;

/* Mark [off, off+len) used; FALSE if any of it was. */
static gboolean mark_used(QedScan *sc, uint64_t off, uint64_t len)
{
    uint64_t first = off >> sc->s->cluster_bits;
    uint64_t n = len >> sc->s->cluster_bits;

    for (uint64_t c = first; c < first + n; c++) {
        if (sc->used[c / 8] & (1u << (c % 8))) {
            return FALSE;
        }
    }
    for (uint64_t c = first; c < first + n; c++) {
        sc->used[c / 8] |= (uint8_t)(1u << (c % 8));
    }
    sc->used_end = MAX(sc->used_end, off + len);
    return TRUE;
}

/* An offset QEMU's check accepts: aligned, after the header, the
 * cluster (or table) starting inside the file. */
static gboolean offset_ok(QedState *s, uint64_t off, uint64_t len,
                          uint64_t file_end)
{
    uint64_t last = off + len - s->cluster_size;

    return !(off & (s->cluster_size - 1)) &&
           off >= (uint64_t)s->header_size * s->cluster_size &&
           last >= off && last < file_end;
}

static gboolean load_tables(QedState *s, QedScan *sc, uint64_t file_end,
                            GError **errp)
{
    const char *name = s->node->node_name;
    g_autofree uint8_t *raw = g_try_malloc(s->table_bytes);
    int ret;

    s->l1 = g_try_malloc(s->table_bytes);
    s->l2 = g_try_new0(uint64_t *, s->table_nelems);
    if (!raw || !s->l1 || !s->l2) {
        FAIL("Node '%s': qed: cannot allocate memory for the L1 table",
             name);
    }
    ret = bd_child_pread(s->file, s->l1_offset, s->table_bytes, raw, 0);
    if (ret < 0) {
        FAIL("Failed to read L1 table");
    }
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        s->l1[i] = get_le64(raw + i * 8);
    }
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        uint64_t off = s->l1[i];
        gboolean dirty = FALSE;
        uint64_t *t;

        if (!off) {
            continue;
        }
        if (!offset_ok(s, off, s->table_bytes, file_end)) {
            if (!sc->fix) {
                FAIL("Node '%s': qed: L1 entry %" PRIu64 " names an L2 "
                     "table at 0x%" PRIx64 ", misaligned, inside the header "
                     "or beyond the end of the file (%" PRIu64 " bytes)",
                     name, i, off, file_end);
            }
            s->l1[i] = 0;
            sc->dropped++;
            put_le64(raw, 0);
            ret = bd_child_pwrite(s->file, s->l1_offset + i * 8, 8, raw, 0);
            if (ret < 0) {
                FAIL("Failed to update the L1 table: %s", g_strerror(-ret));
            }
            continue;
        }
        if (!mark_used(sc, off, s->table_bytes)) {
            FAIL("Node '%s': qed: the L2 table of L1 entry %" PRIu64 " at "
                 "0x%" PRIx64 " overlaps the header, the L1 table or another "
                 "table; the image is corrupt", name, i, off);
        }
        t = g_try_malloc(s->table_bytes);
        if (!t) {
            FAIL("Node '%s': qed: cannot allocate memory for an L2 table",
                 name);
        }
        s->l2[i] = t;
        ret = bd_child_pread(s->file, off, s->table_bytes, raw, 0);
        if (ret < 0) {
            FAIL("Failed to read L2 table: %s", g_strerror(-ret));
        }
        for (uint64_t j = 0; j < s->table_nelems; j++) {
            t[j] = get_le64(raw + j * 8);
        }
        for (uint64_t j = 0; j < s->table_nelems; j++) {
            uint64_t d = t[j];
            if (d <= QED_ZERO_CLUSTER) {
                continue;
            }
            if (!offset_ok(s, d, s->cluster_size, file_end)) {
                if (!sc->fix) {
                    FAIL("Node '%s': qed: L2 entry %" PRIu64 " of table %"
                         PRIu64 " names a cluster at 0x%" PRIx64 ", "
                         "misaligned, inside the header or beyond the end "
                         "of the file (%" PRIu64 " bytes)", name, j, i, d,
                         file_end);
                }
                t[j] = 0;
                dirty = TRUE;
                sc->dropped++;
                continue;
            }
            if (!mark_used(sc, d, s->cluster_size)) {
                FAIL("Node '%s': qed: L2 entry %" PRIu64 " of table %"
                     PRIu64 " names cluster 0x%" PRIx64 ", which is used "
                     "elsewhere too; the image is corrupt", name, j, i, d);
            }
        }
        if (dirty) {
            for (uint64_t j = 0; j < s->table_nelems; j++) {
                put_le64(raw + j * 8, t[j]);
            }
            ret = bd_child_pwrite(s->file, off, s->table_bytes, raw, 0);
            if (ret < 0) {
                FAIL("Failed to update an L2 table: %s", g_strerror(-ret));
            }
        }
    }
    return TRUE;
}

static void qed_close(BdNode *node)
{
    QedState *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->opened) {
        bd_mutex_lock(&s->alloc_lock);
        if (clear_need_check_locked(s) == 0 &&
            !node->read_only) {
            bd_child_flush(s->file);
        }
        bd_mutex_unlock(&s->alloc_lock);
    }
    if (s->l2) {
        for (uint64_t i = 0; i < s->table_nelems; i++) {
            g_free(s->l2[i]);
        }
    }
    g_free(s->l2);
    g_free(s->l1);
    g_free(s->backing_file);
    bd_mutex_destroy(&s->alloc_lock);
    g_free(s);
    node->opaque = NULL;
}

static gboolean qed_load(BdNode *node, QedState *s, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    gboolean writable = !node->read_only;
    QedScan sc = { .s = s };
    g_autofree uint8_t *used = NULL;
    uint64_t file_end;
    int ret;

    if (file_size < 0) {
        FAIL("Failed to get file length");
    }
    memset(s->header, 0, sizeof(s->header));
    ret = bd_child_pread(s->file, 0, MIN((uint64_t)file_size,
                                         QED_HEADER_SIZE), s->header, 0);
    if (ret < 0) {
        FAIL("Failed to read QED header");
    }
    /* Clusters are whole: a partial last one is not the image's. */
    file_end = (uint64_t)file_size & ~(uint64_t)(QED_MIN_CLUSTER_SIZE - 1);
    if (get_le32(s->header + H_MAGIC) == QED_MAGIC &&
        cluster_size_valid(get_le32(s->header + H_CLUSTER_SIZE))) {
        file_end = (uint64_t)file_size &
                   ~(uint64_t)(get_le32(s->header + H_CLUSTER_SIZE) - 1);
    }
    if (!check_header(s, s->header, file_end, errp)) {
        return FALSE;
    }
    s->file_end = file_end;
    if (s->features & QED_F_BACKING_FILE) {
        uint32_t bo = get_le32(s->header + H_BACKING_OFFSET);
        uint32_t bs = get_le32(s->header + H_BACKING_SIZE);
        s->backing_file = g_malloc0(bs + 1);
        ret = bd_child_pread(s->file, bo, bs, s->backing_file, 0);
        if (ret < 0) {
            FAIL("Failed to read backing filename");
        }
        if (s->features & QED_F_BACKING_FORMAT_NO_PROBE) {
            s->backing_fmt = "raw";
        }
    }
    /* Unknown autoclear bits go, as QEMU (none are known). */
    if (get_le64(s->header + H_AUTOCLEAR) & ~(uint64_t)QED_AUTOCLEAR_FEATURE_MASK &&
        writable) {
        put_le64(s->header + H_AUTOCLEAR,
                 get_le64(s->header + H_AUTOCLEAR) & QED_AUTOCLEAR_FEATURE_MASK);
        ret = write_header_locked(s);
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        if (ret < 0) {
            FAIL("Failed to update header");
        }
    }
    sc.nclusters = file_end >> s->cluster_bits;
    used = g_try_malloc0(sc.nclusters / 8 + 1);
    if (!used) {
        FAIL("Node '%s': qed: cannot allocate memory for the check",
             node->node_name);
    }
    sc.used = used;
    sc.fix = writable && (s->features & QED_F_NEED_CHECK);
    /* The header's clusters, at least the one it starts. */
    mark_used(&sc, 0, MIN(MAX((uint64_t)s->header_size, 1) << s->cluster_bits,
                          file_end));
    if (!mark_used(&sc, s->l1_offset, s->table_bytes)) {
        FAIL("QED table offset is invalid");
    }
    if (!load_tables(s, &sc, file_end, errp)) {
        return FALSE;
    }
    if (sc.fix) {
        if (sc.dropped) {
            g_message("qed: node '%s': the check after an unclean close "
                      "dropped %" PRIu64 " table entries beyond the end of "
                      "the file", node->node_name, sc.dropped);
        }
        /* An allocation cut short leaves its clusters at the end of the
         * file, unreferenced (allocations are serialised and append):
         * cut them off, so that the image checks clean. */
        if (sc.used_end < (uint64_t)file_size &&
            bd_node_truncate(s->file->node, sc.used_end) == 0) {
            s->file_end = sc.used_end;
        }
        bd_mutex_lock(&s->alloc_lock);
        ret = clear_need_check_locked(s);
        if (ret == 0) {
            ret = bd_child_flush(s->file);
        }
        bd_mutex_unlock(&s->alloc_lock);
        if (ret < 0) {
            FAIL("Image corrupted");
        }
    }
    return TRUE;
}

static gboolean open_backing(BdNode *node, QedState *s, const QedOptions *o,
                             GError **errp)
{
    g_autofree char *dir = NULL;
    g_autoptr(GVariant) ref = NULL;
    BdChild *backing;

    if (o->has_backing) {
        return bd_node_open_child(node, o->backing, "backing", BD_CHILD_COW,
                                  TRUE, errp) != NULL || !errp || !*errp;
    }
    if (!s->backing_file) {
        return TRUE;
    }
    s->backing_from_header = TRUE;
    if (s->file->node->filename) {
        dir = g_path_get_dirname(s->file->node->filename);
    }
    ref = bd_formats_image_options(s->backing_file, s->backing_fmt, dir,
                                   errp);
    if (!ref) {
        g_prefix_error(errp, "Could not open backing file: ");
        return FALSE;
    }
    backing = bd_node_open_child(node, ref, "backing", BD_CHILD_COW, FALSE,
                                 errp);
    if (!backing) {
        g_prefix_error(errp, "Could not open backing file: ");
        return FALSE;
    }
    if (!s->backing_fmt && !bd_formats_filename_is_remote(s->backing_file)) {
        bd_formats_raw_set_probed(backing->node);
    }
    return TRUE;
}

static gboolean qed_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(QedOptions) o = { 0 };
    QedState *s = g_new0(QedState, 1);

    bd_schema_decode(qed_options, options, &o);
    bd_mutex_init(&s->alloc_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !qed_load(node, s, errp) ||
        !open_backing(node, s, &o, errp)) {
        qed_close(node);
        return FALSE;
    }
    s->opened = TRUE;
    bd_node_set_size(node, s->image_size);
    return TRUE;
}

/* --- resize, backing file name --- */

/* QEMU's refusals, in its words. */
static gboolean qed_resize_check(BdNode *node, uint64_t size, GError **errp)
{
    QedState *s = node->opaque;

    if (size < s->image_size) {
        FAIL("Shrinking images is currently not supported");
    }
    if (!image_size_valid(size, s->cluster_size, s->table_size)) {
        FAIL("Invalid image size specified");
    }
    return TRUE;
}

/* Growing is a new size in the header: the tables cover the maximum. */
static int qed_truncate(BdNode *node, uint64_t size)
{
    QedState *s = node->opaque;
    uint8_t le[8];
    int ret;

    if (size < s->image_size) {
        return -ENOTSUP;
    }
    if (!image_size_valid(size, s->cluster_size, s->table_size)) {
        return -EINVAL;
    }
    bd_mutex_lock(&s->alloc_lock);
    put_le64(le, size);
    ret = bd_child_pwrite(s->file, H_IMAGE_SIZE, 8, le, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        put_le64(s->header + H_IMAGE_SIZE, size);
        s->image_size = size;
        bd_node_set_size(node, size);
    }
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

/* The header rewritten with the name right after it, as QEMU does; it
 * must fit in the header's clusters. */
static gboolean qed_change_backing_file(BdNode *node, const char *file,
                                        const char *fmt, GError **errp)
{
    QedState *s = node->opaque;
    size_t len = file ? strlen(file) : 0;
    g_autofree uint8_t *buf = NULL;
    uint64_t features;
    int ret;

    if (file && get_le64(s->header + H_COMPAT)) {
        FAIL("Could not update backing file link: %s", g_strerror(ENOTSUP));
    }
    if (len > QED_MAX_BACKING_NAME ||
        QED_HEADER_SIZE + len >
        (uint64_t)s->header_size * s->cluster_size) {
        FAIL("Could not update backing file link: %s", g_strerror(ENOSPC));
    }
    buf = g_malloc0(QED_HEADER_SIZE + len);
    bd_mutex_lock(&s->alloc_lock);
    features = s->features & ~(uint64_t)(QED_F_BACKING_FILE |
                                         QED_F_BACKING_FORMAT_NO_PROBE);
    if (file) {
        features |= QED_F_BACKING_FILE;
        if (fmt && strcmp(fmt, "raw") == 0) {
            features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
    }
    memcpy(buf, s->header, QED_HEADER_SIZE);
    put_le64(buf + H_FEATURES, features);
    put_le32(buf + H_BACKING_OFFSET, file ? QED_HEADER_SIZE : 0);
    put_le32(buf + H_BACKING_SIZE, (uint32_t)len);
    memcpy(buf + QED_HEADER_SIZE, file ? file : "", len);
    ret = bd_child_pwrite(s->file, 0, QED_HEADER_SIZE + len, buf, 0);
    if (ret == 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret == 0) {
        memcpy(s->header, buf, QED_HEADER_SIZE);
        s->features = features;
        g_free(s->backing_file);
        s->backing_file = g_strdup(file);
        s->backing_fmt = (features & QED_F_BACKING_FORMAT_NO_PROBE)
                         ? "raw" : NULL;
    }
    bd_mutex_unlock(&s->alloc_lock);
    if (ret < 0) {
        FAIL("Could not update backing file link: %s", g_strerror(-ret));
    }
    return TRUE;
}

/* All options are fixed.  Going read-only, the image is left clean
 * first (as QEMU, which flushes a node it makes read-only): a read-only
 * node never writes the header again. */
static gboolean qed_reopen_prepare(BdReopenState *state, GError **errp)
{
    BdNode *node = state->node;
    int ret;

    if (!state->read_only || node->read_only) {
        return TRUE;
    }
    ret = qed_flush(node);
    if (ret < 0) {
        FAIL("Could not mark the QED image clean: %s", g_strerror(-ret));
    }
    return TRUE;
}

static gboolean qed_has_default_backing(BdNode *node)
{
    QedState *s = node->opaque;

    return s->backing_file != NULL;
}

static void qed_query_image_info(BdNode *node, GVariantDict *image)
{
    QedState *s = node->opaque;

    g_variant_dict_insert(image, "cluster-size", "x",
                          (gint64)s->cluster_size);
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
    if (s->backing_file && bd_node_backing(node) && s->backing_from_header) {
        g_variant_dict_insert(image, "backing-filename", "s",
                              s->backing_file);
        g_variant_dict_insert(image, "full-backing-filename", "s",
                              bd_node_backing(node)->filename);
    }
    if (s->backing_fmt) {
        g_variant_dict_insert(image, "backing-filename-format", "s",
                              s->backing_fmt);
    }
}

/* --- blockdev-create (BlockdevCreateOptionsQed) --- */

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    const char *backing_file;
    const char *backing_fmt;
    guint64 cluster_size;
    gint64 table_size;
} QedCreateOptions;

#define C(f) BD_AT(QedCreateOptions, f)
static const BdSchemaField qed_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, C(file) },
    { "size", &bd_schema_size, FALSE, C(size) },
    { "backing-file", &bd_schema_str, TRUE, C(backing_file) },
    { "backing-fmt", &bd_schema_str, TRUE, C(backing_fmt) },
    { "cluster-size", &bd_schema_size, TRUE, C(cluster_size),
      .def.u = QED_DEFAULT_CLUSTER_SIZE },
    { "table-size", &bd_schema_int, TRUE, C(table_size),
      .def.i = QED_DEFAULT_TABLE_SIZE },
    { NULL } };
#undef C
BD_SCHEMA_DEFINE_AUTO(QedCreateOptions, qed_create_options)

static gboolean qed_create(GVariant *options, GError **errp)
{
    g_auto(QedCreateOptions) c = { 0 };
    g_autofree uint8_t *h = NULL;
    uint64_t cs, ts, features = 0;
    size_t blen = 0;
    BdNode *file;
    int ret;

    bd_schema_decode(qed_create_options, options, &c);
    cs = c.cluster_size;
    if (!cluster_size_valid(cs)) {
        FAIL("QED cluster size must be within range [%u, %u] and power of 2",
             QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
    }
    if (c.table_size < 0 || !table_size_valid((uint64_t)c.table_size)) {
        FAIL("QED table size must be within range [%u, %u] and power of 2",
             QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
    }
    ts = (uint64_t)c.table_size;
    if (!image_size_valid(c.size, cs, ts)) {
        FAIL("QED image size must be a non-zero multiple of cluster size "
             "and less than %" PRIu64 " bytes", max_image_size(cs, ts));
    }
    if (c.backing_file) {
        blen = strlen(c.backing_file);
        if (blen > QED_MAX_BACKING_NAME || QED_HEADER_SIZE + blen > cs) {
            FAIL("Backing file name too long for the QED header (%zu "
                 "bytes)", blen);
        }
        features |= QED_F_BACKING_FILE;
        if (c.backing_fmt && strcmp(c.backing_fmt, "raw") == 0) {
            features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
    }
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    h = g_malloc0(QED_HEADER_SIZE + blen);
    put_le32(h + H_MAGIC, QED_MAGIC);
    put_le32(h + H_CLUSTER_SIZE, (uint32_t)cs);
    put_le32(h + H_TABLE_SIZE, (uint32_t)ts);
    put_le32(h + H_HEADER_SIZE, 1);
    put_le64(h + H_FEATURES, features);
    put_le64(h + H_L1_OFFSET, cs);
    put_le64(h + H_IMAGE_SIZE, c.size);
    if (blen) {
        put_le32(h + H_BACKING_OFFSET, QED_HEADER_SIZE);
        put_le32(h + H_BACKING_SIZE, (uint32_t)blen);
        memcpy(h + QED_HEADER_SIZE, c.backing_file, blen);
    }
    /* The L1 table is zeroes: a hole up to its end. */
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_truncate(file, cs + cs * ts);
    }
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, QED_HEADER_SIZE + blen, h, 0);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write QED image: %s", g_strerror(-ret));
    }
    return TRUE;
}

const BdDriver bd_qed_driver = {
    .name = "qed",
    .options = qed_options,
    .is_format = TRUE,
    .open = qed_open,
    .close = qed_close,
    .reopen_prepare = qed_reopen_prepare,
    .has_default_backing = qed_has_default_backing,
    .change_backing_file = qed_change_backing_file,
    .resize_check = qed_resize_check,
    .truncate = qed_truncate,
    .pread = qed_pread,
    .pread_to_fd = qed_pread_to_fd,
    .pwrite = qed_pwrite,
    .pwrite_zeroes = qed_pwrite_zeroes,
    .flush = qed_flush,
    .block_status = qed_block_status,
    .query_image_info = qed_query_image_info,
    .create_options = qed_create_options,
    .create = qed_create,
};
