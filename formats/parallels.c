/* SPDX-License-Identifier: MIT */
/* The 'parallels' format driver: Parallels (ploop) disk images,
 * read-write, with blockdev-create.
 *
 * On disk (little endian, docs/interop/parallels.txt): a 64-byte
 * header, the BAT right after it (one uint32 per cluster of 'tracks'
 * sectors: 0 unallocated, else where the cluster's data starts - in
 * sectors for the "WithoutFreeSpace" magic, in clusters for
 * "WithouFreSpacExt"), then the data from data_off (in sectors).
 *
 *   [header][BAT ...][pad][cluster][cluster] ...
 *   0       64            data_off*512
 *
 * While an image is open read-write its header's 'inuse' field holds
 * 0x746f6e59; an image found so was not closed cleanly and, as in
 * QEMU, is opened read-only only (qemu-img check -r repairs it).  New
 * clusters go at the end of the data (data_end); the BAT entry is
 * written to disk before the write that needed it completes.
 * Unallocated clusters read as zeroes, or from the backing node when
 * one was attached (blockdev-snapshot: parallels has no 'backing'
 * option, as in QEMU's schema).
 *
 * Thread model: open/close on the main thread, create on the create
 * job's thread, data callbacks on any thread.  Readers and writers of
 * allocated clusters take no lock: they load the BAT entry atomically.
 * Allocation is serialised by PrlState.alloc_lock, held across the new
 * cluster's data write and its BAT entry write; the entry is published
 * in memory (release store) only once it is on disk.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"
#include "formats/create-util.h"
#include "formats/byteorder.h"

#define PRL_HEADER_SIZE     64
#define PRL_SECTOR          512u
#define PRL_MAGIC           "WithoutFreeSpace"
#define PRL_MAGIC_EXT       "WithouFreSpacExt"
#define PRL_VERSION         2
#define PRL_INUSE_MAGIC     0x746f6e59u
#define PRL_DEFAULT_CLUSTER (1u << 20)
/* QEMU's limits: tracks <= INT32_MAX / 513, the BAT <= INT_MAX bytes. */
#define PRL_TRACKS_MAX      (INT32_MAX / 513)
#define PRL_BAT_MAX         (INT_MAX / 4)
#define PRL_IMAGE_FACTOR    (1ull << 32)
/* Bounded buffers for filling a new cluster (which may be 2 GiB). */
#define PRL_CHUNK           (1u << 20)

/* Header field offsets. */
enum {
    H_MAGIC = 0, H_VERSION = 16, H_HEADS = 20, H_CYLINDERS = 24,
    H_TRACKS = 28, H_BAT_ENTRIES = 32, H_NB_SECTORS = 36, H_INUSE = 44,
    H_DATA_OFF = 48, H_FLAGS = 52, H_EXT_OFF = 56,
};

typedef struct {
    BdNode *node;
    BdChild *file;
    uint32_t tracks;           /* cluster size in sectors */
    uint64_t cluster_size;     /* bytes */
    uint32_t off_multiplier;   /* sectors per unit of a BAT entry */
    uint32_t bat_size;
    uint64_t disk_size;
    gboolean writable;         /* opened read-write: inuse is set */
    /* Entries in host order; read with atomic loads (see above). */
    uint32_t *bat;

    BdMutex alloc_lock;        /* protects the members below */
    uint8_t header[PRL_HEADER_SIZE] BD_GUARDED_BY(alloc_lock); /* as on disk */
    uint64_t data_end BD_GUARDED_BY(alloc_lock); /* sectors: next cluster */
} PrlState;

typedef struct {
    GVariant *file;
} PrlOptions;

/* QAPI BlockdevOptionsGenericFormat (no 'backing', as in QEMU 7.2). */
static const BdSchemaField prl_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(PrlOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(PrlOptions, prl_options)

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static inline uint32_t bat_get(PrlState *s, uint64_t i)
{
    return __atomic_load_n(&s->bat[i], __ATOMIC_ACQUIRE);
}

/* Byte offset in the file of cluster 'i''s data, 0 when unallocated. */
static inline uint64_t cluster_offset(PrlState *s, uint64_t i)
{
    uint32_t e = i < s->bat_size ? bat_get(s, i) : 0;

    return (uint64_t)e * s->off_multiplier * PRL_SECTOR;
}

/* --- data path --- */

/* Unallocated bytes: the backing node's (zeroes past its end), or
 * zeroes when there is none. */
static int prl_read_unallocated(BdNode *node, uint64_t offset,
                                uint64_t bytes, uint8_t *p)
{
    BdChild *cow = node->backing;
    int64_t blen;
    uint64_t n = 0;

    if (cow) {
        blen = bd_node_getlength(cow->node);
        if (blen < 0) {
            return (int)blen;
        }
        if (offset < (uint64_t)blen) {
            int ret;

            n = MIN(bytes, (uint64_t)blen - offset);
            ret = bd_child_pread(cow, offset, n, p, 0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    memset(p + n, 0, bytes - n);
    return 0;
}

static int prl_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                     void *buf, int flags)
{
    PrlState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        uint64_t ci = offset / s->cluster_size;
        uint64_t in = offset % s->cluster_size;
        uint64_t n = MIN(bytes, s->cluster_size - in);
        uint64_t off = cluster_offset(s, ci);
        int ret;

        if (off) {
            ret = bd_child_pread(s->file, off + in, n, p, 0);
        } else {
            ret = prl_read_unallocated(node, offset, n, p);
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

/* Zero-copy reads inside one allocated cluster; anything else falls
 * back to prl_pread before anything is sent. */
static int prl_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           BdFdSink *sink, int flags)
{
    PrlState *s = node->opaque;
    uint64_t in = offset % s->cluster_size;
    uint64_t off;

    if (in + bytes > s->cluster_size) {
        return -ENOTSUP;
    }
    off = cluster_offset(s, offset / s->cluster_size);
    if (!off) {
        return -ENOTSUP;
    }
    return bd_child_pread_to_fd(s->file, off + in, bytes, sink, flags);
}

/* Fill the new cluster at file offset 'start' for guest cluster 'ci':
 * [in, in+n) from 'buf', the rest from the backing node or zeroes.
 * Space beyond the end of the file reads as zeroes already, so without
 * a backing node only the data and the zeroes after it (which make the
 * file cover the whole cluster, as QEMU's check expects) are written;
 * otherwise the cluster is written whole, a bounded chunk at a time. */
static int prl_fill_cluster(PrlState *s, uint64_t start, uint64_t ci,
                            uint64_t in, uint64_t n, const uint8_t *buf)
{
    uint64_t cs = s->cluster_size;
    uint64_t guest = ci * cs;
    int64_t flen = bd_node_getlength(s->file->node);
    g_autofree uint8_t *chunk = NULL;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    if (!s->node->backing && (uint64_t)flen <= start) {
        ret = bd_child_pwrite(s->file, start + in, n, buf, 0);
        if (ret == 0 && in + n < cs) {
            ret = bd_child_pwrite_zeroes(s->file, start + in + n,
                                         cs - in - n, 0);
        }
        return ret;
    }
    chunk = g_try_malloc(MIN(cs, (uint64_t)PRL_CHUNK));
    if (!chunk) {
        return -ENOMEM;
    }
    for (uint64_t pos = 0; pos < cs; ) {
        uint64_t len = MIN(cs - pos, (uint64_t)PRL_CHUNK);
        uint64_t lo = MAX(pos, in), hi = MIN(pos + len, in + n);

        if (lo <= pos && hi >= pos + len) {
            /* Wholly new data: straight from the caller's buffer. */
            ret = bd_child_pwrite(s->file, start + pos, len,
                                  buf + (pos - in), 0);
        } else {
            ret = prl_read_unallocated(s->node, guest + pos, len, chunk);
            if (ret == 0 && lo < hi) {
                memcpy(chunk + (lo - pos), buf + (lo - in), hi - lo);
            }
            if (ret == 0) {
                ret = bd_child_pwrite(s->file, start + pos, len, chunk, 0);
            }
        }
        if (ret < 0) {
            return ret;
        }
        pos += len;
    }
    return 0;
}

/* Allocate guest cluster 'ci' at the end of the data and write
 * [in, in+n) of it from 'buf'.  Takes alloc_lock; if another request
 * allocated the cluster meanwhile, writes in place instead. */
static int prl_allocate_write(PrlState *s, uint64_t ci, uint64_t in,
                              uint64_t n, const uint8_t *buf)
{
    uint64_t off, start_sect, unit;
    uint8_t le[4];
    int ret;

    bd_mutex_lock(&s->alloc_lock);
    off = cluster_offset(s, ci);
    if (off) {
        bd_mutex_unlock(&s->alloc_lock);
        return bd_child_pwrite(s->file, off + in, n, buf, 0);
    }
    /* An entry counts in off_multiplier sectors: start on one. */
    start_sect = (s->data_end + s->off_multiplier - 1) / s->off_multiplier *
                 s->off_multiplier;
    unit = start_sect / s->off_multiplier;
    if (unit == 0 || unit > UINT32_MAX) {
        ret = -ENOSPC;     /* the BAT cannot name a cluster that far */
        goto out;
    }
    ret = prl_fill_cluster(s, start_sect * PRL_SECTOR, ci, in, n, buf);
    if (ret < 0) {
        goto out;
    }
    s->data_end = start_sect + s->tracks;
    put_le32(le, (uint32_t)unit);
    ret = bd_child_pwrite(s->file, PRL_HEADER_SIZE + ci * 4, 4, le, 0);
    if (ret == 0) {
        __atomic_store_n(&s->bat[ci], (uint32_t)unit, __ATOMIC_RELEASE);
    }
out:
    bd_mutex_unlock(&s->alloc_lock);
    return ret;
}

static int prl_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                      const void *buf, int flags)
{
    PrlState *s = node->opaque;
    const uint8_t *p = buf;
    int ret = 0;

    while (bytes && ret == 0) {
        uint64_t ci = offset / s->cluster_size;
        uint64_t in = offset % s->cluster_size;
        uint64_t n = MIN(bytes, s->cluster_size - in);
        uint64_t off = cluster_offset(s, ci);

        if (off) {
            ret = bd_child_pwrite(s->file, off + in, n, p, 0);
        } else {
            ret = prl_allocate_write(s, ci, in, n, p);
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

/* Allocated clusters are zeroed in place (the format cannot free
 * them); unallocated ones read as zeroes already unless a backing node
 * shows through, and then they are allocated with zeroes as QEMU does
 * (it writes zeroes through its write path). */
static int prl_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                             int flags)
{
    PrlState *s = node->opaque;
    int ret = 0;

    while (bytes && ret == 0) {
        uint64_t ci = offset / s->cluster_size;
        uint64_t in = offset % s->cluster_size;
        uint64_t n = MIN(bytes, s->cluster_size - in);
        uint64_t off = cluster_offset(s, ci);

        if (off) {
            ret = bd_child_pwrite_zeroes(s->file, off + in, n,
                                         flags & ~BD_REQ_MAY_UNMAP);
        } else if (node->backing) {
            g_autofree uint8_t *z = g_try_malloc0(MIN(n, (uint64_t)PRL_CHUNK));

            if (!z) {
                return -ENOMEM;
            }
            for (uint64_t done = 0; done < n && ret == 0; ) {
                uint64_t len = MIN(n - done, (uint64_t)PRL_CHUNK);

                ret = prl_pwrite(node, offset + done, len, z, 0);
                done += len;
            }
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

static int prl_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                            uint64_t *pnum, uint64_t *map, BdNode **file)
{
    PrlState *s = node->opaque;
    uint64_t ci = offset / s->cluster_size;
    uint64_t in = offset % s->cluster_size;
    uint64_t off = cluster_offset(s, ci);
    uint64_t n = MIN(bytes, s->cluster_size - in);

    if (off) {
        /* A run of clusters that follow each other in the file too. */
        uint64_t next = off + s->cluster_size;

        while (n < bytes && cluster_offset(s, ci + 1) == next) {
            n = MIN(bytes, n + s->cluster_size);
            next += s->cluster_size;
            ci++;
        }
        *pnum = n;
        *map = off + in;
        *file = s->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    while (n < bytes && ++ci < s->bat_size && !cluster_offset(s, ci)) {
        n = MIN(bytes, n + s->cluster_size);
    }
    if (n < bytes && ci >= s->bat_size) {
        n = bytes;
    }
    *pnum = n;
    /* QEMU's rule for formats with backing support: unallocated is
     * zeroes without a backing node, the backing node's otherwise. */
    return node->backing ? 0 : BD_BLOCK_ZERO;
}

/* --- open, close --- */

/* QEMU's header checks, in QEMU's order and words. */
static gboolean prl_check_header(PrlState *s, const uint8_t *h,
                                 GError **errp)
{
    if (get_le32(h + H_VERSION) != PRL_VERSION) {
        FAIL("Image not in Parallels format");
    }
    if (memcmp(h + H_MAGIC, PRL_MAGIC, 16) == 0) {
        s->off_multiplier = 1;
        s->disk_size = (get_le64(h + H_NB_SECTORS) & 0xffffffffu) *
                       PRL_SECTOR;
    } else if (memcmp(h + H_MAGIC, PRL_MAGIC_EXT, 16) == 0) {
        s->off_multiplier = get_le32(h + H_TRACKS);
        if (get_le64(h + H_NB_SECTORS) > UINT64_MAX / PRL_SECTOR) {
            FAIL("Node '%s': parallels: image size of %" PRIu64 " sectors "
                 "(nb_sectors) is too large", s->node->node_name,
                 get_le64(h + H_NB_SECTORS));
        }
        s->disk_size = get_le64(h + H_NB_SECTORS) * PRL_SECTOR;
    } else {
        FAIL("Image not in Parallels format");
    }
    s->tracks = get_le32(h + H_TRACKS);
    if (s->tracks == 0) {
        FAIL("Invalid image: Zero sectors per track");
    }
    if (s->tracks > PRL_TRACKS_MAX) {
        FAIL("Invalid image: Too big cluster");
    }
    s->cluster_size = (uint64_t)s->tracks * PRL_SECTOR;
    s->bat_size = get_le32(h + H_BAT_ENTRIES);
    if (s->bat_size > PRL_BAT_MAX) {
        FAIL("Catalog too large");
    }
    return TRUE;
}

/* Beyond QEMU: the BAT lies in the file, covers the disk size, and
 * every entry names a cluster after the BAT, starting inside the file,
 * used by no other entry.  QEMU 7.2 opens such images and serves
 * zeroes, wrong data, or writes over its own BAT. */
static gboolean prl_check_layout(PrlState *s, uint64_t file_size,
                                 GError **errp)
{
    const char *name = s->node->node_name;
    uint64_t bat_end = PRL_HEADER_SIZE + (uint64_t)s->bat_size * 4;

    if (bat_end > file_size) {
        FAIL("Node '%s': parallels: BAT (%" PRIu32 " entries) extends "
             "beyond the end of the file (%" PRIu64 " bytes); the image is "
             "truncated", name, s->bat_size, file_size);
    }
    if (s->disk_size > (uint64_t)s->bat_size * s->cluster_size) {
        FAIL("Node '%s': parallels: image size %" PRIu64 " bytes "
             "(nb_sectors) is larger than its BAT covers (%" PRIu32
             " clusters of %" PRIu64 " bytes)", name, s->disk_size,
             s->bat_size, s->cluster_size);
    }
    return TRUE;
}

typedef struct {
    uint64_t start;    /* sectors */
    uint32_t index;
} PrlExtent;

static int extent_cmp(const void *a, const void *b)
{
    const PrlExtent *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

static gboolean prl_check_bat(PrlState *s, uint64_t file_size,
                              GError **errp)
{
    const char *name = s->node->node_name;
    uint64_t bat_end_sect = (PRL_HEADER_SIZE + (uint64_t)s->bat_size * 4 +
                             PRL_SECTOR - 1) / PRL_SECTOR;
    g_autofree PrlExtent *ext = NULL;
    uint32_t count = 0;

    for (uint32_t i = 0; i < s->bat_size; i++) {
        count += s->bat[i] != 0;
    }
    ext = g_try_new(PrlExtent, MAX(count, 1));
    if (!ext) {
        FAIL("Node '%s': parallels: cannot allocate memory to check the "
             "BAT", name);
    }
    count = 0;
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t start = (uint64_t)s->bat[i] * s->off_multiplier;

        if (!s->bat[i]) {
            continue;
        }
        if (start < bat_end_sect) {
            FAIL("Node '%s': parallels: BAT entry %" PRIu32 " names data "
                 "at offset 0x%" PRIx64 ", inside the header or BAT", name,
                 i, start * PRL_SECTOR);
        }
        if (start * PRL_SECTOR >= file_size) {
            FAIL("Node '%s': parallels: BAT entry %" PRIu32 " names data "
                 "at offset 0x%" PRIx64 ", beyond the end of the file (%"
                 PRIu64 " bytes); the image is truncated or corrupt", name,
                 i, start * PRL_SECTOR, file_size);
        }
        ext[count].start = start;
        ext[count].index = i;
        count++;
        s->data_end = MAX(s->data_end, start + s->tracks);
    }
    qsort(ext, count, sizeof(*ext), extent_cmp);
    for (uint32_t k = 1; k < count; k++) {
        if (ext[k].start < ext[k - 1].start + s->tracks) {
            FAIL("Node '%s': parallels: BAT entries %" PRIu32 " and %"
                 PRIu32 " name overlapping data (offset 0x%" PRIx64 ")",
                 name, MIN(ext[k - 1].index, ext[k].index),
                 MAX(ext[k - 1].index, ext[k].index),
                 ext[k].start * PRL_SECTOR);
        }
    }
    return TRUE;
}

static int prl_write_header(PrlState *s)
{
    int ret = bd_child_pwrite(s->file, 0, PRL_HEADER_SIZE, s->header, 0);

    return ret < 0 ? ret : bd_child_flush(s->file);
}

static void prl_close(BdNode *node)
{
    PrlState *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->writable) {
        /* Closed cleanly: clear the in-use marker, as QEMU does. */
        int ret;

        put_le32(s->header + H_INUSE, 0);
        ret = prl_write_header(s);
        if (ret < 0) {
            g_warning("node '%s': parallels: could not clear the in-use "
                      "marker: %s", node->node_name, g_strerror(-ret));
        }
    }
    bd_mutex_destroy(&s->alloc_lock);
    g_free(s->bat);
    g_free(s);
    node->opaque = NULL;
}

static gboolean prl_load_bat(PrlState *s, uint64_t file_size, GError **errp)
{
    uint64_t bat_bytes = (uint64_t)s->bat_size * 4;
    int ret;

    /* Bounded by the file size (checked before). */
    s->bat = g_try_malloc(MAX(bat_bytes, 4));
    if (!s->bat) {
        FAIL("Node '%s': parallels: cannot allocate %" PRIu64 " bytes for "
             "the BAT", s->node->node_name, bat_bytes);
    }
    ret = bd_child_pread(s->file, PRL_HEADER_SIZE, bat_bytes, s->bat, 0);
    if (ret < 0) {
        FAIL("Could not read Parallels BAT: %s", g_strerror(-ret));
    }
    for (uint64_t i = 0; i < s->bat_size; i++) {
        s->bat[i] = get_le32((const uint8_t *)&s->bat[i]);
    }
    return prl_check_bat(s, file_size, errp);
}

static gboolean prl_load(BdNode *node, PrlState *s, GError **errp)
{
    int64_t file_size = bd_node_getlength(s->file->node);
    uint8_t *h = s->header;
    uint64_t data_off;
    int ret;

    if (file_size < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-file_size));
    }
    if (file_size < PRL_HEADER_SIZE) {
        FAIL("Node '%s': parallels: the file (%" PRId64 " bytes) is too "
             "short for a Parallels header (%d bytes)", node->node_name,
             file_size, PRL_HEADER_SIZE);
    }
    ret = bd_child_pread(s->file, 0, PRL_HEADER_SIZE, h, 0);
    if (ret < 0) {
        FAIL("Could not read Parallels header: %s", g_strerror(-ret));
    }
    if (!prl_check_header(s, h, errp) ||
        !prl_check_layout(s, (uint64_t)file_size, errp)) {
        return FALSE;
    }
    data_off = get_le32(h + H_DATA_OFF);
    if (data_off == 0) {
        data_off = (PRL_HEADER_SIZE + (uint64_t)s->bat_size * 4 +
                    PRL_SECTOR - 1) / PRL_SECTOR;
    }
    /* Never below the BAT, whatever data_off says. */
    s->data_end = MAX(data_off, (PRL_HEADER_SIZE + (uint64_t)s->bat_size *
                                 4 + PRL_SECTOR - 1) / PRL_SECTOR);
    if (!prl_load_bat(s, (uint64_t)file_size, errp)) {
        return FALSE;
    }
    if (get_le32(h + H_INUSE) == PRL_INUSE_MAGIC && !node->read_only) {
        FAIL("parallels: Image was not closed correctly; cannot be opened "
             "read/write");
    }
    if (!node->read_only) {
        put_le32(h + H_INUSE, PRL_INUSE_MAGIC);
        ret = prl_write_header(s);
        if (ret < 0) {
            FAIL("Could not write Parallels header: %s", g_strerror(-ret));
        }
        s->writable = TRUE;
    }
    return TRUE;
}

static gboolean prl_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(PrlOptions) o = { 0 };
    PrlState *s = g_new0(PrlState, 1);

    bd_schema_decode(prl_options, options, &o);
    bd_mutex_init(&s->alloc_lock);
    s->node = node;
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !prl_load(node, s, errp)) {
        prl_close(node);
        return FALSE;
    }
    bd_node_set_size(node, s->disk_size);
    return TRUE;
}

/* Parallels keeps no backing file name: blockdev-snapshot may attach a
 * backing node (QEMU's supports_backing), but a job that must record a
 * new one in the image cannot, as in QEMU. */
static gboolean prl_change_backing_file(BdNode *node, const char *file,
                                        const char *fmt, GError **errp)
{
    FAIL("Could not update backing file link: %s", g_strerror(ENOTSUP));
}

/* --- blockdev-create (BlockdevCreateOptionsParallels) --- */

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    guint64 cluster_size;
} PrlCreateOptions;

static const BdSchemaField prl_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE,
      BD_AT(PrlCreateOptions, file) },
    { "size", &bd_schema_size, FALSE, BD_AT(PrlCreateOptions, size) },
    { "cluster-size", &bd_schema_size, TRUE,
      BD_AT(PrlCreateOptions, cluster_size), .def.u = PRL_DEFAULT_CLUSTER },
    { NULL } };
BD_SCHEMA_DEFINE_AUTO(PrlCreateOptions, prl_create_options)

/* QEMU's checks in QEMU's order, then what QEMU 7.2 misses: a cluster
 * size of 0 (a division by zero there) or one its open refuses. */
static gboolean prl_check_create(uint64_t size, uint64_t cl, GError **errp)
{
    if (cl >= INT64_MAX / PRL_IMAGE_FACTOR) {
        FAIL("Cluster size is too large");
    }
    if (size >= PRL_IMAGE_FACTOR * cl && cl) {
        FAIL("Image size is too large for this cluster size");
    }
    if (size % PRL_SECTOR) {
        FAIL("Image size must be a multiple of 512 bytes");
    }
    if (cl % PRL_SECTOR) {
        FAIL("Cluster size must be a multiple of 512 bytes");
    }
    if (cl == 0) {
        FAIL("parallels: cluster size must not be 0");
    }
    if (cl / PRL_SECTOR > PRL_TRACKS_MAX) {
        FAIL("parallels: cluster size %" PRIu64 " is too large (at most %"
             PRIu64 " bytes)", cl, (uint64_t)PRL_TRACKS_MAX * PRL_SECTOR);
    }
    if ((size + cl - 1) / cl > PRL_BAT_MAX) {
        FAIL("parallels: image size %" PRIu64 " needs more than %d BAT "
             "entries with clusters of %" PRIu64 " bytes", size,
             PRL_BAT_MAX, cl);
    }
    return TRUE;
}

static gboolean prl_create(GVariant *options, GError **errp)
{
    g_auto(PrlCreateOptions) c = { 0 };
    uint8_t h[PRL_SECTOR] = { 0 };
    uint64_t bat_entries, data_off;
    BdNode *file;
    int ret;

    bd_schema_decode(prl_create_options, options, &c);
    if (!prl_check_create(c.size, c.cluster_size, errp)) {
        return FALSE;
    }
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    bat_entries = (c.size + c.cluster_size - 1) / c.cluster_size;
    /* The data starts on the first cluster boundary after the BAT. */
    data_off = (PRL_HEADER_SIZE + bat_entries * 4 + c.cluster_size - 1) /
               c.cluster_size * c.cluster_size;
    memcpy(h + H_MAGIC, PRL_MAGIC_EXT, 16);
    put_le32(h + H_VERSION, PRL_VERSION);
    /* Geometry, unused by the format: 16 heads, 32 sectors a track. */
    put_le32(h + H_HEADS, 16);
    put_le32(h + H_CYLINDERS, (uint32_t)(c.size / PRL_SECTOR / 16 / 32));
    put_le32(h + H_TRACKS, (uint32_t)(c.cluster_size / PRL_SECTOR));
    put_le32(h + H_BAT_ENTRIES, (uint32_t)bat_entries);
    put_le64(h + H_NB_SECTORS, c.size / PRL_SECTOR);
    put_le32(h + H_DATA_OFF, (uint32_t)(data_off / PRL_SECTOR));

    /* Header, then a zeroed BAT: the file's length as a hole. */
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, sizeof(h), h, 0);
    }
    if (ret == 0) {
        ret = bd_node_truncate(file, data_off);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Failed to create Parallels image: %s", g_strerror(-ret));
    }
    return TRUE;
}

const BdDriver bd_parallels_driver = {
    .name = "parallels",
    .options = prl_options,
    .is_format = TRUE,
    .open = prl_open,
    .close = prl_close,
    .pread = prl_pread,
    .pread_to_fd = prl_pread_to_fd,
    .pwrite = prl_pwrite,
    .pwrite_zeroes = prl_pwrite_zeroes,
    .block_status = prl_block_status,
    .change_backing_file = prl_change_backing_file,
    .create_options = prl_create_options,
    .create = prl_create,
};
