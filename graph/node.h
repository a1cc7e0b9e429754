/* SPDX-License-Identifier: MIT */
/* The block graph: nodes, the edges between them, and the driver contract.
 *
 * Thread model: the graph's shape (nodes, children, names, permissions)
 * is changed only on the main thread, and only while the affected part of
 * the graph is drained (see entry.h).  Data callbacks run on any thread
 * (NBD workers, FUSE workers, job threads) and see a stable graph because
 * drain waits for them before any change.
 *
 *      entry (export/job) --"root"--> node --"file"----> node (file)
 *                                       \---"backing"--> node ...
 */
#ifndef BD_GRAPH_NODE_H
#define BD_GRAPH_NODE_H

#include <glib.h>
#include <stdint.h>
#include "graph/schema.h"
#include "graph/error.h"
#include "graph/lock.h"
#include "graph/reqlist.h"
#include "graph/stats.h"
#include "graph/worker-pool.h"

typedef struct BdNode BdNode;
typedef struct BdChild BdChild;
typedef struct BdDriver BdDriver;
typedef struct BdEntry BdEntry;
typedef struct BdReopenState BdReopenState;

/* One internal snapshot (QEMU's QEMUSnapshotInfo / SnapshotInfo). */
typedef struct BdSnapshotInfo {
    char *id;
    char *name;
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount;             /* UINT64_MAX: none */
} BdSnapshotInfo;

void bd_snapshot_info_free(BdSnapshotInfo *sn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdSnapshotInfo, bd_snapshot_info_free)

/* Permissions: what a parent needs from a child, and what it lets other
 * parents do.  Bit values match QEMU's so the file driver's byte-range
 * locks (100 + bit, 200 + bit) interoperate with QEMU and qemu-img. */
typedef enum {
    BD_PERM_CONSISTENT_READ = 0x01,
    BD_PERM_WRITE           = 0x02,
    BD_PERM_WRITE_UNCHANGED = 0x04,
    BD_PERM_RESIZE          = 0x08,
    BD_PERM_ALL             = 0x0f,
} BdPerm;

/* What a child is to its parent (QEMU's BdrvChildRole). */
typedef enum {
    BD_CHILD_DATA     = 1 << 0,  /* guest data lives here */
    BD_CHILD_METADATA = 1 << 1,  /* the parent's own metadata lives here */
    BD_CHILD_FILTERED = 1 << 2,  /* parent shows this child's data as is */
    BD_CHILD_COW      = 1 << 3,  /* backing: read where unallocated */
    BD_CHILD_PRIMARY  = 1 << 4,  /* the parent's main child */
} BdChildRole;

/* Request flags. */
enum {
    BD_REQ_FUA         = 1 << 0, /* write: durable before completion */
    BD_REQ_MAY_UNMAP   = 1 << 1, /* zeroes: may deallocate (no NO_HOLE) */
    BD_REQ_NO_FALLBACK = 1 << 2, /* zeroes: fail -ENOTSUP unless fast */
    BD_REQ_WRITE_COMPRESSED = 1 << 3, /* write: store compressed (whole
                                       * clusters); drivers opt in */
    BD_REQ_NOWAIT      = 1 << 4, /* read: fail -EAGAIN rather than wait
                                  * for storage (page cache misses); the
                                  * caller retries without it where it
                                  * may block.  Drivers opt in. */
};

/* Where a zero-copy read sends its data (BdDriver.pread_to_fd): a
 * socket or a pipe.  Whatever must precede the data on 'fd' (a reply
 * header) is written by 'begin', which the driver that moves the bytes
 * calls through bd_fd_sink_begin() once it is committed to sending
 * them, and before the first byte.  Until then the request may still
 * fail or be refused (-ENOTSUP) with nothing written; after it, a
 * failure leaves 'fd' with part of the data: the caller must close it
 * (an NBD connection) rather than send anything else. */
typedef struct BdFdSink BdFdSink;
struct BdFdSink {
    int fd;
    int (*begin)(BdFdSink *sink);   /* may be NULL; 0 or -errno */
    gboolean begun;                 /* begin was called */
};

/* Call sink->begin once (later calls return 0).  Drivers, any thread. */
static inline int bd_fd_sink_begin(BdFdSink *sink)
{
    if (sink->begun) {
        return 0;
    }
    sink->begun = TRUE;
    return sink->begin ? sink->begin(sink) : 0;
}

/* Block-status flags (QEMU's BDRV_BLOCK_*). */
enum {
    BD_BLOCK_DATA         = 1 << 0, /* reads return data from this layer */
    BD_BLOCK_ZERO         = 1 << 1, /* reads return zeroes */
    BD_BLOCK_OFFSET_VALID = 1 << 2, /* *map is the offset in *file */
    BD_BLOCK_RAW          = 1 << 3, /* driver: ask *file at *map instead */
    BD_BLOCK_ALLOCATED    = 1 << 4, /* set by the generic layer */
    BD_BLOCK_EOF          = 1 << 5, /* range reaches the end of the node */
};

/* The order of BlockdevDetectZeroesOptions' values (node.c). */
typedef enum {
    BD_DETECT_ZEROES_OFF,
    BD_DETECT_ZEROES_ON,
    BD_DETECT_ZEROES_UNMAP,
} BdDetectZeroes;

/* BlockdevDiscardOptions */
typedef enum {
    BD_DISCARD_IGNORE,
    BD_DISCARD_UNMAP,
} BdDiscard;

/* BlockdevCacheOptions */
typedef struct {
    gboolean direct;
    gboolean no_flush;
} BdCacheOptions;

/* The members every BlockdevOptions has (QAPI's base of the union),
 * decoded by bd_node_options_decode(): the graph applies them, and
 * the callers that need one (a node-name) read them here.  Drivers
 * see their effect on the node (node->read_only, ...). */
typedef struct {
    const char *driver;        /* NULL: absent (internal filters) */
    const char *node_name;     /* NULL: absent */
    BdDiscard discard;
    BdCacheOptions cache;
    gboolean read_only;
    gboolean auto_read_only;
    gboolean force_share;
    BdDetectZeroes detect_zeroes;
} BdNodeOptions;

/* Fill 'out' from a validated BlockdevOptions (strings borrowed). */
void bd_node_options_decode(GVariant *options, BdNodeOptions *out);

/* The BlockdevRef members the graph handles for every driver that has
 * them, decoded from a whole BlockdevOptions: reopen replaces and
 * detaches 'file' and 'backing', and a reopen built from a node's
 * options (jobs/chain.c) keeps them. */
typedef struct {
    GVariant *file;
    gboolean has_file;
    GVariant *backing;
    gboolean has_backing;
} BdChildRefs;
void bd_child_refs_decode(GVariant *options, BdChildRefs *out);
void bd_child_refs_clear(BdChildRefs *refs);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(BdChildRefs, bd_child_refs_clear)

/*
 * The driver contract.  Drivers are listed in formats/registry.c and
 * registered with bd_driver_register() at start-up.
 *
 * Control callbacks run on the main thread, take GError ** last and
 * return gboolean (or a value and set the error).  Data callbacks run on
 * any thread, concurrently with each other, return 0 (or a value >= 0)
 * or -errno, allocate nothing on failure and never touch GError.  The
 * generic layer (io.c) has already checked: request range (for entries),
 * read-only, permissions, and alignment to node->request_alignment.
 */
struct BdDriver {
    const char *name;                  /* "file", "raw", "qcow2", ... */
    /* Driver-specific members of BlockdevOptions<Name>; {NULL}-terminated.
     * The common members (driver, node-name, read-only, cache, discard,
     * detect-zeroes, ...) are added by the graph.  Those blockdev-reopen
     * may change are flagged BD_FIELD_MUTABLE. */
    const BdSchemaField *options;

    gboolean is_filter;    /* data passes through 'file' (or 'backing') */
    gboolean is_format;    /* interprets its file child's bytes */
    gboolean is_protocol;  /* leaf: talks to a file, socket, memory */
    /* The driver enters serialising requests of its own into the node's
     * request list (node->reqs; copy-on-read's copy cycles), so every
     * write through the node must be entered too.  Nodes that neither
     * do this nor need an alignment keep no list of their writes. */
    gboolean serialises_requests;
    /* Optional BD_REQ_* write flags the driver handles itself (today only
     * BD_REQ_WRITE_COMPRESSED); others get such writes refused. */
    int supported_write_flags;
    /* Optional BD_REQ_* read flags the driver handles (BD_REQ_NOWAIT);
     * reads with others get -EAGAIN from the generic layer (for NOWAIT:
     * "would block", so the caller retries where it may). */
    int supported_read_flags;
    /* Copy offload may read through this driver's BD_BLOCK_RAW block
     * status without calling it (raw: reads pass through unchanged).
     * FALSE for anything that may change or fail reads (blkdebug). */
    gboolean copy_range_passthrough;

    /* Open the node from its validated options (a{sv}, the whole
     * BlockdevOptions object).  The common options are already applied
     * to the node.  Children are attached with bd_node_open_child(). */
    gboolean (*open)(BdNode *node, GVariant *options, GError **errp);
    /* Optional: the slow part of an open (connecting to a remote
     * cluster), done beforehand off the main thread by callers that can
     * wait for it (blockdev-add from a monitor, see bd_node_prepare), so
     * that the main loop never waits for the network.  'options' are
     * the node's validated options as given (a nested node's as nested).
     * Any thread, may block; touches no graph state.  On success the
     * driver keeps what it made for the open of the same options that
     * follows on the main thread; prepare_drop (main thread) releases
     * it when no open took it.  Open must still work unprepared (the
     * command line, nested opens by other paths). */
    gboolean (*prepare)(GVariant *options, GError **errp);
    void (*prepare_drop)(GVariant *options);
    /* Release driver state, including node->opaque (the driver owns it);
     * also called after a failed open when node->opaque is not NULL.
     * Children are detached by the graph afterwards. */
    void (*close)(BdNode *node);

    /* Permissions this node needs on 'child' (role 'role') and shares,
     * given the cumulative perms its own parents need (parent_perm) and
     * share (parent_shared).  NULL: bd_default_child_perm(). */
    void (*child_perm)(BdNode *node, BdChild *child, BdChildRole role,
                       uint64_t parent_perm, uint64_t parent_shared,
                       uint64_t *perm, uint64_t *shared);
    /* Protocol drivers: check (and tentatively take) the cumulative perms
     * outside the daemon, e.g. byte-range locks.  set_perm commits,
     * abort_perm rolls back to the last committed state. */
    gboolean (*check_perm)(BdNode *node, uint64_t perm, uint64_t shared,
                           GError **errp);
    void (*set_perm)(BdNode *node, uint64_t perm, uint64_t shared);
    void (*abort_perm)(BdNode *node);

    /* Data path. */
    int (*pread)(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
                 int flags);
    int (*pwrite)(BdNode *node, uint64_t offset, uint64_t bytes,
                  const void *buf, int flags);
    int (*pwrite_zeroes)(BdNode *node, uint64_t offset, uint64_t bytes,
                         int flags);
    int (*pdiscard)(BdNode *node, uint64_t offset, uint64_t bytes);
    int (*flush)(BdNode *node);
    /* Zero-copy data path (optional; NULL: -ENOTSUP and the caller
     * uses pread/pwrite with a buffer).  Only drivers whose bytes are
     * the file's bytes (file, raw on file) offer them, and for
     * pread_to_fd formats whose mapped ranges are (vdi, vpc: -ENOTSUP
     * where not); a driver that must see or change the data
     * (compressed or encrypted formats, filters) leaves them NULL.
     * The generic layer has done every check pread
     * and pwrite get, entered a write into the request list and
     * records it in the dirty bitmaps; it never calls these for
     * requests that need a read-modify-write or detect-zeroes.
     *
     * pread_to_fd: send exactly 'bytes' bytes to sink->fd (as pread:
     * beyond the end of the storage, zeroes), calling
     * bd_fd_sink_begin() before the first one.  -ENOTSUP before that
     * call: nothing was written, the caller falls back.  'flags' as
     * pread (BD_REQ_NOWAIT when supported_read_flags has it).
     *
     * pwrite_from_fd: write exactly 'bytes' bytes, read from 'in_fd'
     * (a pipe holding at least that many), at 'offset'.  -ENOTSUP
     * having read nothing: the caller falls back to a buffer.  Other
     * errors may leave the pipe partly read; the caller discards the
     * rest.  'flags' as pwrite (BD_REQ_FUA). */
    int (*pread_to_fd)(BdNode *node, uint64_t offset, uint64_t bytes,
                       BdFdSink *sink, int flags);
    int (*pwrite_from_fd)(BdNode *node, uint64_t offset, uint64_t bytes,
                          int in_fd, int flags);
    /* Status of [offset, offset+bytes): returns BD_BLOCK_* flags for the
     * first *pnum bytes (> 0).  With BD_BLOCK_RAW or OFFSET_VALID, *map
     * and *file say where the data lives.  NULL: filters ask their
     * filtered child, others report DATA for the whole range. */
    int (*block_status)(BdNode *node, uint64_t offset, uint64_t bytes,
                        uint64_t *pnum, uint64_t *map, BdNode **file);
    /* The snapshot-access API (QEMU's *_snapshot callbacks): a filter
     * that keeps a frozen point-in-time view of its filtered child
     * (copy-before-write) offers it to a 'snapshot-access' parent
     * through these.  Reads of the view, its block status (as
     * block_status) and discard (drop a region from the view: it is no
     * longer needed).  NULL: the node offers no snapshot (-ENOTSUP). */
    int (*pread_snapshot)(BdNode *node, uint64_t offset, uint64_t bytes,
                          void *buf);
    int (*block_status_snapshot)(BdNode *node, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 uint64_t *map, BdNode **file);
    int (*pdiscard_snapshot)(BdNode *node, uint64_t offset, uint64_t bytes);
    /* Copy offload (QEMU's copy_range), for bd_node_copy_range() in
     * graph/io.c (any thread).  host_fd: a host-file driver's fd, which
     * another node's copy_range_from may read.  copy_range_from: write
     * [offset, offset+bytes) of this node from 'src_fd' at 'src_offset'
     * without a buffer - the kernel's copy for a host file, a mapped
     * range of a child (bd_node_copy_range_from_fd) for a format; the
     * generic layer has checked range, alignment and permissions and
     * does the request list and dirty bitmaps.  Returns bytes copied
     * (> 0, maybe fewer) or -errno; -ENOTSUP, -EXDEV, -EOPNOTSUPP,
     * -EINVAL, -ENOSYS: not this way (the caller reads and writes).
     * NULL: never offloaded. */
    int (*host_fd)(BdNode *node);
    int64_t (*copy_range_from)(BdNode *node, uint64_t offset,
                               uint64_t bytes, int src_fd,
                               uint64_t src_offset);
    /* Resize to exactly 'size' bytes.  Updates node->size on success. */
    int (*truncate)(BdNode *node, uint64_t size);
    /* block_resize: refuse a size change up front with the driver's own
     * text (e.g. qcow2's "Can't resize a v2 image which has snapshots").
     * NULL: truncate alone decides.  Main thread. */
    gboolean (*resize_check)(BdNode *node, uint64_t size, GError **errp);
    /* Bytes of storage actually used (for "actual-size"); -errno if
     * unknown.  NULL: sum of the children's. */
    int64_t (*allocated_size)(BdNode *node);

    /* blockdev-reopen (graph/reopen.c), for drivers that support it;
     * NULL reopen_prepare: "Block format 'X' used by node 'Y' does not
     * support reopening files".  The graph has already refused changes
     * to options not flagged BD_FIELD_MUTABLE ("Cannot change the option"),
     * omitted options that are neither common nor mutable ("cannot be
     * reset") and handled the common options and the file/backing
     * children.  prepare validates state->options (the whole new
     * BlockdevOptions; omitted mutable options return to their
     * defaults) and stages the driver's new state in state->opaque,
     * changing nothing visible; commit (node drained) makes it current;
     * abort drops it.  commit and abort may be NULL.  bd_reopen_prepare_fixed
     * suits drivers whose options are all fixed. */
    gboolean (*reopen_prepare)(BdReopenState *state, GError **errp);
    void (*reopen_commit)(BdReopenState *state);
    void (*reopen_abort)(BdReopenState *state);
    /* After every node of the reopen has committed (QEMU's
     * bdrv_reopen_commit_post): the children have their new state too,
     * so a driver may write to them here (qcow2 marks its bitmaps in use
     * once its file is writable).  NULL: nothing to do. */
    void (*reopen_commit_post)(BdReopenState *state);
    /* Limits (QEMU's bdrv_refresh_limits): the graph has set them from
     * the children (bd_node_refresh_limits); the driver overrides what
     * it constrains itself (request_alignment for O_DIRECT or blkdebug's
     * 'align', max_transfer).  NULL: the merged limits stand.  Main
     * thread; the node is being opened, or drained. */
    void (*refresh_limits)(BdNode *node);
    /* Store 'file' (NULL: none) and its format 'fmt' (NULL: none) as
     * the backing file name in the image (QEMU's bdrv_change_backing_file:
     * stream, commit, change-backing-file).  NULL: the driver keeps no
     * such name, nothing to do.  Main thread, node quiet. */
    gboolean (*change_backing_file)(BdNode *node, const char *file,
                                    const char *fmt, GError **errp);
    /* Whether the image names a backing file of its own (qcow2 header):
     * then reopen requires the 'backing' option.  NULL: no. */
    gboolean (*has_default_backing)(BdNode *node);
    /* Whether the backing link is not the one the image names (QEMU's
     * bdrv_backing_overridden): the node's options then include its
     * backing ('null' when there is none) and it shows a json: file
     * name in queries.  NULL: any backing link counts as given.  Main
     * thread. */
    gboolean (*backing_overridden)(BdNode *node);
    /* The file name queries show now, newly allocated, or NULL for
     * node->filename (QEMU refreshes file names when it answers a
     * query).  Main thread. */
    char *(*query_filename)(BdNode *node);
    /* QEMU's full_open_options (floating a{sv}) for a driver whose own
     * are not the generic driver + strong options + children (blkdebug's
     * flattened rules); NULL: the generic ones.  json: names of the
     * nodes above use it.  Main thread. */
    GVariant *(*full_options)(BdNode *node);

    /* blockdev-create: members of BlockdevCreateOptions<Name> other
     * than 'driver' ({NULL}-terminated; NULL: the driver cannot create
     * images), and the creation itself from the validated options
     * (a{sv} including 'driver').  Runs on a job thread; children given
     * by node-name are looked up on the main thread by the job before
     * (see jobs/).  Returns FALSE with *errp set on failure. */
    const BdSchemaField *create_options;
    gboolean (*create)(GVariant *options, GError **errp);
    /* x-blockdev-amend: members of BlockdevAmendOptions<Name> other than
     * 'driver' ({NULL}-terminated; NULL amend: not supported), and the
     * change itself from the validated options, on a job thread (the
     * job holds a reference to the node).  FALSE with *errp set. */
    const BdSchemaField *amend_options;
    gboolean (*amend)(BdNode *node, GVariant *options, gboolean force,
                      GError **errp);

    /* Drain (entry.c): called on every node below a quiescing entry
     * handle, before waiting for its requests, and again when the
     * section ends.  Drivers that hold requests back (throttle) release
     * them while drained so that drain never stalls.  Main thread. */
    void (*drained_begin)(BdNode *node);
    void (*drained_end)(BdNode *node);
    /* Then, once every node of the section has had drained_begin and
     * the entries' requests are done: wait for I/O the node runs on its
     * own (a backup job's chunk, a copy left behind by a timeout).  Its
     * children have been told to let requests go, so this ends. */
    void (*drained_wait)(BdNode *node);

    /* Fault-injection hook (blkdebug): 'event' is a BdDebugEvent of
     * graph/debug-event.h, sent by the parent through
     * bd_debug_event().  Any thread. */
    void (*debug_event)(BdNode *node, int event);

    /* x-blockdev-change (QEMU's bdrv_add_child/bdrv_del_child): attach
     * 'child' (a node without parents) as a new child, or detach one of
     * the node's children, with the driver's own checks and names.
     * NULL: "The node X does not support adding/removing a child".
     * Main thread. */
    gboolean (*add_child)(BdNode *node, BdNode *child, GError **errp);
    gboolean (*del_child)(BdNode *node, BdChild *child, GError **errp);

    /* Extra query-named-block-nodes fields of this driver, added to the
     * "image" dictionary (e.g. "format-specific", "cluster-size").
     * Main thread. */
    void (*query_image_info)(BdNode *node, GVariantDict *image);

    /* Internal snapshots (QEMU's bdrv_snapshot_*): main thread.  list
     * returns the snapshots (BdSnapshotInfo *, freed by the array).
     * create and delete run with the node drained; create fills in the
     * new snapshot's id, delete copies the deleted one into *deleted.
     * NULL snapshot_create: the driver has no internal snapshots. */
    GPtrArray *(*snapshot_list)(BdNode *node);
    gboolean (*snapshot_create)(BdNode *node, BdSnapshotInfo *sn,
                                GError **errp);
    gboolean (*snapshot_delete)(BdNode *node, const char *id,
                                const char *name, BdSnapshotInfo *deleted,
                                GError **errp);
    /* query-blockstats' "driver-specific" members of this driver (QEMU's
     * BlockStatsSpecific; "driver" is added by the caller).  NULL: the
     * driver has none and the member is left out.  Main thread. */
    void (*query_stats)(BdNode *node, GVariantDict *stats);
};

struct BdChild {
    char *name;          /* role name: "file", "backing", "root", ... */
    BdNode *parent;      /* NULL when the parent is an entry handle */
    BdEntry *entry;      /* the entry handle when parent == NULL */
    BdNode *node;        /* the child node (holds one reference) */
    BdChildRole role;
    uint64_t perm;       /* what the parent needs (bd_perm_load) */
    uint64_t shared;     /* what the parent lets others do */
    /* Tentative values during a permission update (perm.c). */
    uint64_t new_perm, new_shared;
    int frozen;          /* > 0: the link may not be changed (jobs) */
};

/* One node's part of a blockdev-reopen transaction (graph/reopen.c). */
struct BdReopenState {
    BdNode *node;
    GVariant *options;       /* new validated BlockdevOptions (a{sv}) */
    /* New common options, applied by the graph at commit. */
    gboolean read_only;
    gboolean cache_direct;
    gboolean cache_no_flush;
    void *opaque;            /* the driver's staged state */
};

struct BdNode {
    char *node_name;
    gboolean auto_named;       /* "#blockNNN" generated name */
    gboolean monitor_owned;    /* created by blockdev-add / --blockdev */
    /* Inserted by a job without a filter-node-name (QEMU's implicit
     * nodes): skipped by queries and by reopen's child matching. */
    gboolean implicit;
    /* The parent this node was defined inline under (nested options):
     * reopen may change its options through that parent.  NULL when
     * it was added on its own or by reference.  Not a reference. */
    BdNode *inherits_from;
    const BdDriver *drv;
    void *opaque;              /* driver state */
    GVariant *options;         /* the validated BlockdevOptions (a{sv}) */
    /* For a child defined inline: its options as written, before what
     * it inherits from the parent was added; NULL otherwise. */
    GVariant *explicit_options;
    char *filename;            /* what queries show as the file name */
    int refcnt;                /* main thread only */
    /* The driver's open has succeeded and close not begun: the node's
     * own state is there for refresh_limits and queries. */
    gboolean opened;
    /* The driver decrypts the data (luks), set at open: query-block's
     * and query-named-block-nodes' 'encrypted'. */
    gboolean encrypted;

    GPtrArray *children;       /* BdChild *: edges to our children */
    GList *parents;            /* BdChild *: edges from parents/entries */
    BdChild *file;             /* shortcut into children, or NULL */
    BdChild *backing;          /* shortcut into children, or NULL */

    /* Common options. */
    gboolean read_only;
    gboolean auto_read_only;
    gboolean force_share;
    gboolean cache_direct;
    gboolean cache_no_flush;
    gboolean discard_unmap;
    BdDetectZeroes detect_zeroes;

    /* Limits (bd_node_refresh_limits): requests at this node must be
     * aligned to request_alignment (1: any) and at most max_transfer
     * bytes long (0: no limit); the generic layer makes them so. */
    uint32_t request_alignment;
    uint64_t max_transfer;
    /* Requests here wait on a network round trip (rbd, nbd), alone or
     * through a child: their time is latency, not CPU or disk, so
     * exports run more of them at once (see export-nbd/workers.c).
     * Inherited from the data, filtered and COW children; a driver sets
     * it for itself in refresh_limits. */
    gboolean latency_bound;

    /* Size in bytes, maintained by the driver (bd_node_set_size). */
    uint64_t size;

    /* Cumulative permissions of all parents (perm.c; bd_perm_load). */
    uint64_t cum_perm, cum_shared;
    /* The job type that claimed the node (QEMU's op blockers; see
     * jobs/chain.h), or NULL.  Main thread only. */
    const char *claimed_by;
    /* The iothread its users run in (QEMU's AioContext), as a worker
     * pool: exports on the node run their workers there.  NULL: none
     * (the main pool).  Main thread only; a reference. */
    BdWorkerPool *pool;

    /* During a reopen: the read-only value the node will have, so the
     * permission check can refuse writers (reopen.c, perm.c). */
    gboolean reopen_pending;
    gboolean reopen_read_only;

    /* Dirty bitmaps (bitmap.c), newest first.  bitmaps_lock (a leaf
     * reader/writer lock) guards the list and each bitmap's words and
     * size: readers are the write path and the bit operations, writers
     * create, release and resize (main thread).  nr_bitmaps (atomic)
     * lets the write path skip a node without any at no cost. */
    BdRWLock bitmaps_lock;
    GPtrArray *bitmaps BD_PT_GUARDED_BY(bitmaps_lock);
    int nr_bitmaps;
    /* Checkpoints already reported unusable (checkpoint.c), made when
     * first needed.  Main thread only. */
    struct BdNodeCheckpoints *checkpoints;

    /* QEMU's wr_highest_offset: the end of the furthest write or write
     * zeroes that reached this node (atomic max, io.c); and the write
     * threshold (block-set-write-threshold, 0: none), swapped to 0 by
     * the write that passes it, which emits BLOCK_WRITE_THRESHOLD. */
    uint64_t wr_highest_offset;
    uint64_t write_threshold;

    /* The node's own request accounting (io.c counts every request
     * that reaches the node, lock-free): the metrics endpoint's per-node
     * figures.  query-blockstats shows device counters only, as QEMU. */
    BdIoStats stats;

    /* Data-changing requests in flight at this node (io.c): keeps a
     * read-modify-write apart from writes to the same blocks. */
    BdReqList reqs;
};

/* A permission update (attaching a user, bd_entry_set_perm) is not
 * drained: the edges' perm and the nodes' cum_perm/cum_shared change on
 * the main thread while requests read them, so both sides use these.
 * Relaxed: a request needs the value, nothing published with it. */
static inline uint64_t bd_perm_load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void bd_perm_store(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* --- driver registry --- */
void bd_driver_register(const BdDriver *drv);
const BdDriver *bd_driver_find(const char *name);
/* NULL-terminated array of registered drivers, in registration order. */
const BdDriver *const *bd_driver_list(void);

/* The full schema of BlockdevOptions (union on 'driver') built from the
 * registered drivers; used by control/ for blockdev-add and the schema. */
/* A string from an image (a header's backing file name, a snapshot or
 * bitmap name) or a path, for a query's GVariant: GVariant strings must
 * be UTF-8, and such bytes need not be.  Invalid sequences become
 * U+FFFD, as QEMU's JSON output writes them.  Free with g_free. */
static inline char *bd_query_string(const char *s)
{
    return g_utf8_make_valid(s ? s : "", -1);
}

const BdSchemaType *bd_blockdev_options_schema(void);
/* BlockdevDriver, the enum of the registered drivers' names (decoded as
 * a string), for other tables' members; filled by the first
 * bd_blockdev_options_schema(), which their users call first. */
extern BdSchemaType bd_blockdev_driver_enum;

/* --- nodes --- */

/* Create a node (and any nested children) from validated BlockdevOptions.
 * Returns a new reference.  'top' nodes without a node-name get one
 * generated ("#blockNNN").  Main thread. */
BdNode *bd_node_open(GVariant *options, GError **errp);

/* The same with the driver given by pointer: internal filters (the
 * jobs' commit_top and mirror_top) that are not registered, so that
 * they are in neither BlockdevDriver nor blockdev-add.  'options' holds
 * the driver's options and the common ones; its "driver" member is not
 * looked at.  Main thread. */
BdNode *bd_node_open_driver(const BdDriver *drv, GVariant *options,
                            GError **errp);

/* Whether 'options' (validated BlockdevOptions) or any node nested in
 * them has a driver with a prepare callback.  Main thread. */
gboolean bd_node_needs_prepare(GVariant *options);
/* Run the prepare callback of every such node, outermost first,
 * stopping at the first failure.  Any thread (the driver registry is
 * fixed after start-up); may block.  The caller runs
 * bd_node_prepare_drop() afterwards, whether this failed or not. */
gboolean bd_node_prepare(GVariant *options, GError **errp);
/* After the open that followed bd_node_prepare (whether it succeeded or
 * not): release what no open took.  Main thread. */
void bd_node_prepare_drop(GVariant *options);

/* Work an open leaves to a thread.  A caller that can wait (blockdev-add
 * from a monitor) opens between bd_open_offload_begin() and _end(); an
 * open that would otherwise compute for long on the main thread (a LUKS
 * key slot's PBKDF2: up to minutes) queues the computation with
 * bd_open_offload_queue() instead, and fails.  The caller runs what was
 * queued off the main thread (bd_open_offload_run), then opens again
 * from the start, and the driver finds its result.  Results stay until
 * bd_open_offload_drop() after the caller's last attempt, so that a
 * later attempt that opens several such nodes finds every one.  Other
 * callers (the command line) never begin: their opens compute inline. */
typedef struct {
    void (*run)(gpointer data);     /* any thread; may take long */
    void (*drop)(gpointer data);    /* main thread: forget the result */
    GDestroyNotify free;            /* main thread */
} BdOpenOffloadOps;

/* Main thread: let the opens until _end() queue work. */
void bd_open_offload_begin(void);
/* Main thread: the work queued since _begin() (a GPtrArray the caller
 * owns, for _run and _drop), or NULL when none was. */
GPtrArray *bd_open_offload_end(void);
/* Main thread: whether an open may queue work now. */
gboolean bd_open_offload_enabled(void);
/* Main thread: whether work was queued since _begin(). */
gboolean bd_open_offload_queued(void);
/* Main thread, inside an open: queue 'data' for ops->run. */
void bd_open_offload_queue(const BdOpenOffloadOps *ops, gpointer data);
/* Any thread: run the work in 'work' (from _end) in order. */
void bd_open_offload_run(GPtrArray *work);
/* Main thread, after the last attempt: drop the results and free the
 * work ('work' may be NULL). */
void bd_open_offload_drop(GPtrArray *work);

/* Inside a driver's open: attach the child 'name' given by 'ref', the
 * driver's decoded BlockdevRef(OrNull) member: a node-name reference, a
 * nested definition, or absent (NULL) or null when allow_none.  Returns
 * NULL with *errp set on error, or NULL without an error when absent
 * and allowed. */
BdChild *bd_node_open_child(BdNode *parent, GVariant *ref, const char *name,
                            BdChildRole role, gboolean allow_none,
                            GError **errp);
/* Attach an existing node as a child of 'parent' (takes a reference),
 * checking permissions first. */
BdChild *bd_node_attach_child(BdNode *parent, BdNode *child,
                              const char *name, BdChildRole role,
                              GError **errp);
/* QEMU's bdrv_replace_node: every parent of 'from' (edges and entry
 * handles, except 'to' and the nodes below it) is moved onto 'to',
 * with the users of 'from' drained, in one permission update; a frozen
 * edge or a conflict refuses it and nothing changes.  Main thread. */
gboolean bd_node_replace(BdNode *from, BdNode *to, GError **errp);
/* QEMU's bdrv_append: 'base' becomes the backing child of 'top' and
 * every other parent of 'base' (edges and entry handles) moves onto
 * 'top', in one drained section and one permission update; on error
 * nothing has changed.  Undone by bd_node_replace(top, base) and
 * detaching top's backing child.  Main thread. */
gboolean bd_node_append(BdNode *top, BdNode *base, GError **errp);
/* Detach and drop the reference (permissions are relaxed afterwards). */
void bd_node_detach_child(BdNode *parent, BdChild *child);

BdNode *bd_node_ref(BdNode *node);
void bd_node_unref(BdNode *node);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdNode, bd_node_unref)

BdNode *bd_node_find(const char *node_name);
/* QEMU's id_wellformed(): a letter, then letters, digits, '-', '.', '_'
 * (node names, export ids). */
gboolean bd_id_wellformed(const char *name);
/* All named nodes, in creation order (borrowed pointers). */
GPtrArray *bd_node_list(void);

/* blockdev-del: checks that the node exists, is monitor-owned and is not
 * in use (QEMU's messages), then drops the monitor's reference. */
gboolean bd_node_monitor_del(const char *node_name, GError **errp);
/* block_resize: resize 'node' to 'size' bytes through a temporary
 * handle needing resize permission, with the node's users drained. */
gboolean bd_node_resize(BdNode *node, uint64_t size, GError **errp);
/* Drop every monitor-owned node (shutdown). */
void bd_node_close_all(void);

/* The filtered child of a filter node (file or backing), or NULL. */
BdChild *bd_node_filtered_child(BdNode *node);
/* The child holding COW data ('backing'), or NULL. */
BdNode *bd_node_backing(BdNode *node);

/* Recompute the node's limits, as QEMU's bdrv_refresh_limits: the
 * smallest max_transfer of its data, filtered and COW children, then
 * the driver's refresh_limits; request_alignment is the driver's own (a
 * read-modify-write happens at the node that needs it, so every writer
 * of the same blocks meets there).  When they change, the parents'
 * limits are recomputed too.  Called after open, after a reopen
 * commits and when a child is attached, detached or replaced.  Main
 * thread, node not in use or drained. */
void bd_node_refresh_limits(BdNode *node);

/* block-set-write-threshold: arm (or with 0 disarm) the one-shot
 * threshold of 'node'.  Any thread. */
void bd_node_set_write_threshold(BdNode *node, uint64_t threshold);
uint64_t bd_node_write_threshold(BdNode *node);
uint64_t bd_node_wr_highest_offset(BdNode *node);

/* Publish a new size (atomic store).  Drivers that grow the node from
 * several threads serialize their own read-modify-write of the size. */
void bd_node_set_size(BdNode *node, uint64_t size);

/* Description of a parent for messages: "node 'hd0'" or the entry's. */
char *bd_child_parent_desc(const BdChild *child);

/* --- reopen (reopen.c) --- */

/* blockdev-reopen: 'list' holds validated BlockdevOptions (a{sv}), one
 * per node to reopen; all are applied as one transaction or none.
 * Main thread. */
gboolean bd_node_reopen_multiple(GPtrArray *list, GError **errp);
/* reopen_prepare for drivers whose options are all fixed (the generic
 * checks already refused any change): succeeds, stages nothing. */
gboolean bd_reopen_prepare_fixed(BdReopenState *state, GError **errp);

/* --- permissions (perm.c) --- */

/* QEMU's default perms for a child of the given role. */
void bd_default_child_perm(BdNode *node, BdChild *child, BdChildRole role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared);
/* Recompute the permissions of the graph below 'node' after a change,
 * checking every node for conflicts before committing any.  On error
 * nothing has changed. */
gboolean bd_node_refresh_perms(BdNode *node, GError **errp);
/* The same over the union of the subgraphs below several nodes. */
gboolean bd_nodes_refresh_perms(GPtrArray *nodes, GError **errp);
/* "write, resize" */
char *bd_perm_names(uint64_t perm);

#endif
