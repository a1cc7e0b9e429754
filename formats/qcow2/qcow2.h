/* SPDX-License-Identifier: MIT */
/* Internal interface between the files of the qcow2 format driver.
 *
 * Thread model: see qcow2.c.  Everything named *_locked, and every
 * access to the L1 table, the refcount table, the caches and the list
 * of in-flight allocations, needs Qcow2State.lock.  Data I/O (guest
 * clusters) runs without the lock.
 */
#ifndef BD_FORMATS_QCOW2_H
#define BD_FORMATS_QCOW2_H

#include <glib.h>
#include <stdint.h>
#include "graph/node.h"

#define QCOW2_MAGIC             0x514649fbu  /* "QFI\xfb" */
#define QCOW2_MIN_CLUSTER_BITS  9
#define QCOW2_MAX_CLUSTER_BITS  21
#define QCOW2_V2_HEADER_SIZE    72
#define QCOW2_V3_HEADER_SIZE    104
#define QCOW2_MAX_BACKING_NAME  1023
/* QEMU's limits on table sizes (bytes). */
#define QCOW2_MAX_L1_BYTES      (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8u * 1024 * 1024)

/* Incompatible, compatible and autoclear feature bits. */
#define QCOW2_INCOMPAT_DIRTY     (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT   (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2     (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN     (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Header extension types. */
#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO         0x0537be77u
#define QCOW2_CRYPT_NONE         0
#define QCOW2_CRYPT_AES          1
#define QCOW2_CRYPT_LUKS         2
#define QCOW2_AUTOCLEAR_BITMAPS  (1ull << 0)

/* Table entry bits. */
#define QCOW2_OFLAG_COPIED       (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED   (1ull << 62)
#define QCOW2_OFLAG_ZERO         (1ull << 0)
#define QCOW2_OFFSET_MASK        0x00fffffffffffe00ull
#define QCOW2_L2E_RESERVED       0x3f000000000001feull
#define QCOW2_L1E_RESERVED       0x7f000000000001ffull

/* A parsed header; fields as in docs/interop/qcow2.txt. */
typedef struct {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible;
    uint64_t compatible;
    uint64_t autoclear;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    char *backing_file;        /* NULL when none */
    char *backing_format;      /* NULL when no extension */
    char *feature_names;       /* names of unknown incompatible features */
    /* The bitmaps extension (bitmap.c), when has_bitmaps_ext. */
    gboolean has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint32_t bitmaps_ext_reserved;
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;
    /* The full disk encryption header extension, when has_crypto_ext:
     * where the LUKS header lies in the file. */
    gboolean has_crypto_ext;
    uint64_t crypto_offset, crypto_length;
} Qcow2Header;

void qcow2_header_clear(Qcow2Header *h);
/* Parse and validate the header in 'buf' (the first cluster of the image,
 * or as much of it as the file holds; 'len' bytes) for a file of
 * 'file_size' bytes.  Safe on any input: the fuzz entry point. */
gboolean qcow2_header_parse(const uint8_t *buf, size_t len,
                            uint64_t file_size, Qcow2Header *h,
                            GError **errp);

/* --- caches (cache.c) --- */
typedef struct Qcow2Cache Qcow2Cache;
typedef struct Qcow2State Qcow2State;

Qcow2Cache *qcow2_cache_new(Qcow2State *s, unsigned entries,
                            uint32_t entry_size);
void qcow2_cache_free(Qcow2Cache *c);
/* A cached table (slice) at host 'offset'; read in when missing.  The
 * pointer stays valid until the lock is dropped or the cache is used
 * again for another offset.  'fresh': do not read, start from zeroes. */
int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, gboolean fresh,
                    void **table);
/* Lock-free loading, for readers: peek returns the cached table or
 * -ENOENT, with the cache generation in both cases; the caller may then
 * drop the lock, read the table from disk, retake the lock and insert
 * it: -EAGAIN when the generation changed (the copy may be stale: read
 * again), 0 when inserted or when another copy is cached already. */
int qcow2_cache_peek(Qcow2Cache *c, uint64_t offset, void **table,
                     uint64_t *generation);
int qcow2_cache_insert(Qcow2Cache *c, uint64_t offset, const void *data,
                       uint64_t generation);
uint32_t qcow2_cache_entry_size(Qcow2Cache *c);
void qcow2_cache_mark_dirty(Qcow2Cache *c, uint64_t offset);
/* Write back every dirty entry (after flushing 'depends_on', if set). */
int qcow2_cache_flush(Qcow2Cache *c);
void qcow2_cache_set_dependency(Qcow2Cache *c, Qcow2Cache *depends_on);
/* Forget an entry (the table it caches was freed). */
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);
/* Drop clean entries not used since the previous call. */
void qcow2_cache_clean_unused(Qcow2Cache *c);

/* --- the driver state --- */
typedef struct Qcow2Deferred {
    uint64_t l2e;              /* the old L2 entry */
    int discard_type;
} Qcow2Deferred;

typedef struct Qcow2Inflight {
    uint64_t start, end;       /* guest byte range being allocated */
} Qcow2Inflight;

struct Qcow2State {
    BdNode *node;
    BdChild *file;
    Qcow2Header h;
    uint32_t cluster_bits, cluster_size;
    uint32_t l2_bits;          /* log2(entries per L2 table) */
    uint32_t l2_slice_size;    /* entries per cached L2 slice */
    uint32_t refcount_bits;
    uint32_t refblock_bits;    /* log2(entries per refcount block) */
    uint64_t refcount_max;
    uint32_t csize_shift;
    uint64_t csize_mask, coffset_mask;

    GMutex lock;               /* protects everything below */
    GCond cond;                /* in-flight allocation finished */
    uint64_t *l1;              /* host byte order */
    uint32_t l1_size;
    uint64_t *reftable;        /* host byte order */
    uint64_t reftable_size;    /* entries */
    uint64_t reftable_used;    /* 1 + index of the last non-zero entry */
    Qcow2Cache *l2_cache;
    Qcow2Cache *rc_cache;
    uint64_t free_cluster_index;
    uint64_t free_byte_offset;  /* compressed data: next free byte */
    uint64_t alloc_end;        /* first cluster beyond all allocations */
    GPtrArray *inflight;       /* Qcow2Inflight * */
    /* Old L2 entries (Qcow2Deferred) whose clusters are released once
     * the L2 tables that no longer reference them are on disk. */
    GArray *deferred_free;
    guint clean_timer;
    int overlap_check;         /* bitmask of QCOW2_OL_* */

    gboolean writable;
    /* The backing child came from the header, not the 'backing' option
     * (at open; queries show backing-filename then, as QEMU). */
    gboolean backing_from_header;
    /* QEMU's auto_backing_file: the backing's file name when it was
     * opened from the header, else the header's name (NULL: none);
     * updated when the header's name changes.  Main thread. */
    char *auto_backing_file;
    gboolean corrupt;          /* found inconsistent: no more writes */
    gboolean lazy_refcounts;
    gboolean pass_discard[3];  /* request, snapshot, other */
    struct Qcow2Bitmaps *bitmaps;  /* persistent bitmaps (bitmap.c) */
    /* The snapshot table (snapshot.c): s->h.nb_snapshots entries at
     * s->h.snapshots_offset, snapshots_size bytes on disk. */
    struct Qcow2Snapshot *snapshots;
    uint64_t snapshots_size;
    /* encrypt.format=luks: the unlocked LUKS header (NULL: the image
     * is not encrypted).  Set at open, only read afterwards. */
    struct BdLuksBlock *crypto;
    char *crypto_secret;       /* encrypt.key-secret, with crypto */
    gboolean crypto_aes;       /* crypt_method 1: AES-CBC, guest IVs */
};


enum { QCOW2_DISCARD_REQUEST, QCOW2_DISCARD_SNAPSHOT, QCOW2_DISCARD_OTHER };
enum {
    QCOW2_OL_MAIN_HEADER = 1 << 0, QCOW2_OL_ACTIVE_L1 = 1 << 1,
    QCOW2_OL_ACTIVE_L2 = 1 << 2, QCOW2_OL_REFCOUNT_TABLE = 1 << 3,
    QCOW2_OL_REFCOUNT_BLOCK = 1 << 4, QCOW2_OL_SNAPSHOT_TABLE = 1 << 5,
    QCOW2_OL_INACTIVE_L1 = 1 << 6, QCOW2_OL_INACTIVE_L2 = 1 << 7,
    QCOW2_OL_BITMAP_DIRECTORY = 1 << 8,
};

static inline uint64_t qcow2_size_to_clusters(Qcow2State *s, uint64_t b)
{
    return (b + s->cluster_size - 1) >> s->cluster_bits;
}

/* Mark the image corrupt (header bit) and report it, naming the node. */
void qcow2_signal_corruption(Qcow2State *s, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/* --- refcounts (refcount.c) --- */
int qcow2_refcount_get_locked(Qcow2State *s, uint64_t cluster,
                              uint64_t *refcount);
/* Add 'delta' to the refcount of every cluster of host [offset,
 * offset+bytes); all or nothing: on failure no refcount changed. */
int qcow2_refcount_update_locked(Qcow2State *s, uint64_t offset,
                                 uint64_t bytes, int64_t delta,
                                 int discard_type);
/* Allocate 'n' contiguous clusters (refcount 1); returns host offset. */
int64_t qcow2_alloc_clusters_locked(Qcow2State *s, uint64_t n);
/* Allocate 'bytes' in a partly used cluster for compressed data. */
int64_t qcow2_alloc_bytes_locked(Qcow2State *s, uint64_t bytes);
uint64_t qcow2_refcount_read(const void *block, uint64_t index,
                             uint32_t order);
void qcow2_refcount_write(void *block, uint64_t index, uint32_t order,
                          uint64_t value);
/* Take one reference from each cluster of host [offset, offset+bytes):
 * the debug event 'cluster_free', then qcow2_refcount_update_locked. */
int qcow2_free_clusters_locked(Qcow2State *s, uint64_t offset, uint64_t bytes,
                               int discard_type);
/* Write back both caches, then release the deferred entries; what fails
 * stays dirty (or deferred) for the next call. */
int qcow2_metadata_flush_locked(Qcow2State *s);
/* Recompute s->reftable_used from the refcount table. */
void qcow2_reftable_scan_used(Qcow2State *s);
/* Lazy refcounts: set the dirty bit (on disk, synced) before the first
 * refcount change; clear it after writing every cache back. */
int qcow2_mark_dirty_locked(Qcow2State *s);
int qcow2_mark_clean_locked(Qcow2State *s);
/* Rebuild the refcounts of a dirty image from its active tables (as
 * 'qemu-img check -r all' would), then clear the dirty bit.  *fixed:
 * how many refcounts changed. */
gboolean qcow2_repair_refcounts_locked(Qcow2State *s, uint64_t file_size,
                                       uint64_t *fixed, GError **errp);
/* Is [offset, offset+bytes) free of metadata?  0 or -EIO (corruption). */
int qcow2_overlap_check_locked(Qcow2State *s, uint64_t offset,
                               uint64_t bytes);

/* --- cluster mapping (cluster.c) --- */
typedef enum {
    QCOW2_CT_UNALLOCATED,
    QCOW2_CT_ZERO_PLAIN,
    QCOW2_CT_ZERO_ALLOC,
    QCOW2_CT_NORMAL,
    QCOW2_CT_COMPRESSED,
} Qcow2ClusterType;

Qcow2ClusterType qcow2_entry_type(Qcow2State *s, uint64_t l2e);
/* Look up [offset, offset+bytes): the type of the first cluster, the
 * number of bytes (*pnum) with the same type and contiguous host
 * offsets, the host offset of 'offset' (*host) and the raw L2 entry. */
int qcow2_get_mapping_locked(Qcow2State *s, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *host, uint64_t *l2e);
/* The same without metadata I/O: when the L2 slice is not cached,
 * -EAGAIN with its host offset in *miss_off and the L2 cache generation
 * in *miss_gen (for qcow2_cache_insert after reading it unlocked). */
int qcow2_get_mapping_cached_locked(Qcow2State *s, uint64_t offset,
                                    uint64_t bytes, uint64_t *pnum,
                                    uint64_t *host, uint64_t *l2e,
                                    uint64_t *miss_off, uint64_t *miss_gen);
/* Point the L2 entries of guest clusters [offset, offset + n clusters)
 * to new values: entries[i] (host byte order).  Old entries returned
 * in 'old' when not NULL.  Allocates L2 tables as needed. */
int qcow2_set_l2_entries_locked(Qcow2State *s, uint64_t offset, uint64_t n,
                                const uint64_t *entries, uint64_t *old);
/* Shrink the guest disk from 'old_size' to 'size' bytes (QEMU's
 * qcow2_co_truncate): the clusters past the new end are discarded, the
 * L2 tables wholly past it freed and their L1 entries cleared.  The L1
 * table keeps its size, as in QEMU; the header is the caller's. */
int qcow2_shrink_locked(Qcow2State *s, uint64_t old_size, uint64_t size);
/* Grow the L1 table to cover 'size' guest bytes. */
int qcow2_grow_l1_locked(Qcow2State *s, uint64_t size);
int qcow2_read_compressed(Qcow2State *s, uint64_t l2e, uint8_t *out);
/* Compress one cluster; returns the compressed length or -errno
 * (-ENOSPC: does not shrink). */
ssize_t qcow2_compress_cluster(const uint8_t *in, size_t len, uint8_t *out,
                               size_t out_len);

typedef enum {
    QCOW2_ZERO_UNMAP,          /* zero flag, free the host cluster */
    QCOW2_ZERO_KEEP,           /* zero flag, keep the host cluster */
    QCOW2_DISCARD,             /* unallocated (zero flag over a backing) */
} Qcow2ZeroMode;
/* Zero or discard whole guest clusters [offset, offset + n clusters). */
int qcow2_zero_clusters_locked(Qcow2State *s, uint64_t offset, uint64_t n,
                               Qcow2ZeroMode mode);
/* Release the host clusters an old L2 entry referenced. */
int qcow2_free_entry_locked(Qcow2State *s, uint64_t l2e, int discard_type);
/* The same once no L2 table on disk references them any more: queued
 * in s->deferred_free (entries that reference nothing are ignored). */
void qcow2_free_entry_later_locked(Qcow2State *s, uint64_t l2e,
                                   int discard_type);
/* Write back the L2 cache, sync, then release the queued entries.  On
 * an I/O error the entries not released stay queued and the next
 * metadata flush tries again. */
int qcow2_release_deferred_locked(Qcow2State *s);
/* The same when QCOW2_DEFERRED_MAX entries are queued, ignoring errors
 * (for writes: their own update is complete).  Otherwise the entries
 * wait for the next flush, which writes the L2 cache back anyway: a
 * write costs no extra sync, and a failed L2 write-back is reported
 * to the flush that the client retries. */
#define QCOW2_DEFERRED_MAX 256
void qcow2_release_deferred_some_locked(Qcow2State *s);

/* --- encryption (crypto.c) --- */
/* Unlock the image's LUKS header with the 'encrypt' options (QAPI
 * BlockdevQcow2Encryption; NULL: none given), QEMU's checks and texts. */
gboolean qcow2_crypto_open(Qcow2State *s, GVariant *encrypt, GError **errp);
void qcow2_crypto_close(Qcow2State *s);
/* En- or decrypt 'len' bytes (a multiple of 512) of guest data at
 * 'guest' stored at host offset 'host': as QEMU, LUKS sectors are
 * numbered by their offset in the image file, AES ones by the guest
 * offset.  Any thread. */
void qcow2_crypt(Qcow2State *s, gboolean encrypt, uint64_t host,
                 uint64_t guest, uint8_t *dst, const uint8_t *src,
                 size_t len);
/* ImageInfoSpecificQCow2's 'encrypt' (QCryptoBlockInfo) into 'data'. */
void qcow2_crypto_query(Qcow2State *s, GVariantDict *data);

/* --- data path (rw.c) --- */
int qcow2_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
                int flags);
int qcow2_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                 const void *buf, int flags);
int64_t qcow2_copy_range_from(BdNode *node, uint64_t offset, uint64_t bytes,
                              int src_fd, uint64_t src_offset);
int qcow2_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                        int flags);
int qcow2_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes);
int qcow2_flush(BdNode *node);
int qcow2_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                       uint64_t *pnum, uint64_t *map, BdNode **file);
int qcow2_truncate(BdNode *node, uint64_t size);

/* --- persistent dirty bitmaps (bitmap.c) --- */
/* Open: load the image's bitmaps into the node (in-use ones as
 * inconsistent) and, when writable, mark them in use on disk. */
gboolean qcow2_bitmaps_load(Qcow2State *s, GError **errp);
/* Close: store the node's persistent bitmaps (when writable), free the
 * replaced clusters, and release the loader's state. */
void qcow2_bitmaps_close(Qcow2State *s);
/* blockdev-reopen: going read-only stores the bitmaps (prepare, node
 * drained); commit, after s->writable changed, sets the bitmaps'
 * read-only flag and marks them in use on disk when now writable. */
gboolean qcow2_bitmaps_reopen_prepare(Qcow2State *s, gboolean writable,
                                      GError **errp);
void qcow2_bitmaps_reopen_commit(Qcow2State *s, gboolean was_writable);
void qcow2_bitmaps_reopen_commit_post(Qcow2State *s);
/* Register qcow2's can_store/remove with graph/bitmap.c. */
void qcow2_bitmaps_register(void);

/* --- internal snapshots (snapshot.c) --- */
#define QCOW2_MAX_SNAPSHOTS      65536
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024

typedef struct Qcow2Snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id_str;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount;             /* UINT64_MAX: none */
    /* Extra data beyond the fields above, kept as read. */
    uint8_t *unknown_extra;
    uint32_t unknown_extra_size;
} Qcow2Snapshot;

/* Open: read and validate the snapshot table (header fields checked
 * here too: count, offset, alignment, the end of the file). */
gboolean qcow2_snapshots_load(Qcow2State *s, uint64_t file_size,
                              GError **errp);
void qcow2_snapshots_free(Qcow2State *s);
/* Is [offset, offset+bytes) part of the snapshot table or of a
 * snapshot's L1 table?  Its name, or NULL. */
const char *qcow2_snapshots_overlap(Qcow2State *s, int chk, uint64_t offset,
                                    uint64_t bytes);
/* Recompute QCOW2_OFLAG_COPIED in the active L1 and L2 tables from the
 * refcounts (after refcounts changed under them). */
int qcow2_update_copied_flags_locked(Qcow2State *s);
GPtrArray *qcow2_snapshot_list(BdNode *node);
gboolean qcow2_snapshot_create(BdNode *node, BdSnapshotInfo *sn,
                               GError **errp);
gboolean qcow2_snapshot_delete(BdNode *node, const char *id,
                               const char *name, BdSnapshotInfo *deleted,
                               GError **errp);
/* "snapshots" of query-named-block-nodes' ImageInfo, when any. */
void qcow2_snapshots_query(Qcow2State *s, GVariantDict *image);

/* --- image creation (create.c) --- */
typedef struct {
    uint64_t size;
    uint32_t cluster_size;       /* 0: 65536 */
    uint32_t refcount_bits;      /* 0: 16 */
    int version;                 /* 2 or 3; 0: 3 */
    gboolean lazy_refcounts;
    const char *backing_file;
    const char *backing_format;
    /* Encrypted (crypt_method 2): the LUKS header and key material to
     * store in clusters of their own, 'crypto_len' bytes. */
    const uint8_t *crypto_hdr;
    size_t crypto_len;
} Qcow2CreateOptions;

/* Write a fresh qcow2 image onto 'file' (a protocol node); the caller
 * holds write and resize permission on it.  Options are validated first
 * (before any I/O); the old content of 'file' is truncated away. */
gboolean bd_qcow2_create(BdNode *file, const Qcow2CreateOptions *opts,
                         GError **errp);

#endif
