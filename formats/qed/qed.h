/* SPDX-License-Identifier: MIT */
/* The qed driver's shared state, on-disk layout and helpers. */
#ifndef BD_FORMATS_QED_H
#define BD_FORMATS_QED_H

#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"

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

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

static inline uint32_t get_le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const uint8_t *p)
{
    return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline gboolean is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static inline gboolean cluster_size_valid(uint64_t cs)
{
    return cs >= QED_MIN_CLUSTER_SIZE && cs <= QED_MAX_CLUSTER_SIZE &&
           is_pow2(cs);
}

static inline gboolean table_size_valid(uint64_t ts)
{
    return ts >= QED_MIN_TABLE_SIZE && ts <= QED_MAX_TABLE_SIZE &&
           is_pow2(ts);
}

static inline uint64_t max_image_size(uint64_t cs, uint64_t ts)
{
    uint64_t nelems = cs * ts / 8;

    return nelems * nelems * cs;
}

static inline gboolean image_size_valid(uint64_t size, uint64_t cs,
                                        uint64_t ts)
{
    return size % 512 == 0 && size <= max_image_size(cs, ts);
}

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

/* rw.c: the data path (any thread) and the header's NEED_CHECK bit. */
int qed_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
              int flags);
int qed_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                    BdFdSink *sink, int flags);
int qed_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
               const void *buf, int flags);
int qed_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                      int flags);
int qed_flush(BdNode *node);
int qed_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                     uint64_t *pnum, uint64_t *map, BdNode **file);
/* The 64 header bytes, features from s->features (alloc_lock held). */
int qed_write_header_locked(QedState *s);
/* Clear NEED_CHECK once all written before is durable (alloc_lock
 * held; nothing for a read-only node). */
int qed_clear_need_check_locked(QedState *s);

/* check.c: read and check header and tables at open (main thread),
 * with the consistency check of a dirty image opened read-write. */
gboolean qed_load(BdNode *node, QedState *s, GError **errp);

/* create.c: blockdev-create (BlockdevCreateOptionsQed), job thread. */
extern const BdSchemaField qed_create_options[];
gboolean qed_create(GVariant *options, GError **errp);

#endif
