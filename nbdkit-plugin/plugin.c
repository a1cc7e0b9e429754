/* SPDX-License-Identifier: MIT */
/* nbdkit-blockd-plugin: blockd's graph and formats served by nbdkit.
 *
 * One graph per plugin instance, opened once and shared by every
 * connection through one entry handle (as an export of the daemon
 * shares one among its clients):
 *
 *   nbdkit connections --> entry handle --"root"--> node --> ... --> file
 *   (any thread)           (admission,               (qcow2, raw, throttle,
 *                           in-flight count)          backing chains, ...)
 *
 * Thread model (NBDKIT_THREAD_MODEL_PARALLEL).  nbdkit's main thread is
 * the graph's main thread: it loads the plugin (.load claims it), reads
 * the parameters, opens the graph in .get_ready, and closes it in
 * .cleanup once every connection has gone.  nbdkit's connection threads
 * call only the data path (bd_entry_*), which is thread-safe.
 *
 * Fork: nbdkit daemonizes (forks) after .get_ready.  Opening the graph
 * creates no thread (requests run on the caller's thread; qcow2's cache
 * cleaning is a main-loop timer that no loop runs here), so opening in
 * .get_ready is safe, and errors reach the user's terminal and exit
 * status before nbdkit goes to the background.  The child's thread keeps
 * its identity across fork(); .after_fork claims it again all the same.
 * The nbd driver is the exception: its nodes run connection threads,
 * which stay behind in the parent, so such a graph needs nbdkit -f and
 * .after_fork says so.
 */
#define G_LOG_DOMAIN "blockd-nbdkit"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include "control/input.h"
#include "formats/registry.h"
#include "graph/entry.h"
#include "graph/main-thread.h"
#include "graph/node.h"
#include "nbdkit-plugin/blockd-plugin.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* NBD_CMD_CACHE reads through the graph in pieces of this size. */
#define CACHE_CHUNK (1u << 20)

static struct {
    BdNode *node;       /* the graph's top node (one reference) */
    BdEntry *entry;     /* every connection's requests go through it */
    gboolean writable;
    pid_t pid;          /* the process that opened it */
} graph;

/* Map a data-path result to nbdkit's convention: 0, or -1 with the
 * errno the client will see. */
static int ret_errno(int ret)
{
    if (ret < 0) {
        nbdkit_set_error(-ret);
        return -1;
    }
    return 0;
}

/* --- lifecycle (nbdkit's main thread) --- */

static void blockd_load(void)
{
    bd_main_thread_claim();
    bd_formats_register_all();
    /* BlockdevRef members (file, backing) nest whole BlockdevOptions. */
    bd_validate_set_blockdev_schema(bd_blockdev_options_schema);
}

static int blockd_get_ready(void)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;
    uint64_t perm = BD_PERM_CONSISTENT_READ;

    graph.node = bd_node_open(bd_plugin_options(), &err);
    if (!graph.node) {
        nbdkit_error(BD_PLUGIN_NAME ": %s", err->message);
        return -1;
    }
    graph.pid = getpid();
    graph.writable = !graph.node->read_only;
    if (graph.writable) {
        perm |= BD_PERM_WRITE;
    }
    /* Share everything, as the daemon's exports do: the graph's own
     * nodes (qcow2 over its file) say what they cannot share. */
    graph.entry = bd_entry_new(graph.node, "nbdkit plugin " BD_PLUGIN_NAME,
                               perm, BD_PERM_ALL, &err);
    if (!graph.entry) {
        nbdkit_error(BD_PLUGIN_NAME ": %s", err->message);
        g_clear_pointer(&graph.node, bd_node_unref);
        return -1;
    }
    nbdkit_debug("%s: serving node '%s' (%s), %s", BD_PLUGIN_NAME,
                 graph.node->node_name, graph.node->drv->name,
                 graph.writable ? "writable" : "read-only");
    return 0;
}

/* Whether a node at or below 'node' runs threads of its own (the nbd
 * driver's I/O and reconnect threads, TLS relays): they do not cross a
 * fork. */
static gboolean graph_has_threads(BdNode *node)
{
    if (!strcmp(node->drv->name, "nbd")) {
        return TRUE;
    }
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = node->children->pdata[i];
        if (graph_has_threads(c->node)) {
            return TRUE;
        }
    }
    return FALSE;
}

static int blockd_after_fork(void)
{
    bd_main_thread_claim();
    if (graph.node && getpid() != graph.pid && graph_has_threads(graph.node)) {
        nbdkit_error(BD_PLUGIN_NAME ": a graph with 'nbd' nodes cannot go "
                     "to the background with nbdkit (its connection threads "
                     "stay in the parent): run nbdkit with -f");
        return -1;
    }
    return 0;
}

/* Every connection has closed: flush and close the graph. */
static void blockd_cleanup(void)
{
    BD_GLOBAL_STATE_CODE();

    if (graph.entry) {
        int ret = bd_entry_flush(graph.entry);
        if (ret < 0) {
            nbdkit_error(BD_PLUGIN_NAME ": flush at close: %s",
                         g_strerror(-ret));
        }
    }
    g_clear_pointer(&graph.entry, bd_entry_free);
    g_clear_pointer(&graph.node, bd_node_unref);
}

static void blockd_unload(void)
{
    /* .cleanup has run when .get_ready did; this is for the rest. */
    blockd_cleanup();
    bd_plugin_config_free();
}

static void blockd_dump_plugin(void)
{
    const BdDriver *const *drv = bd_driver_list();

    printf("blockd_version=%s\n", BLOCKD_VERSION);
    printf("blockd_drivers=");
    for (gsize i = 0; drv[i]; i++) {
        printf("%s%s", i ? "," : "", drv[i]->name);
    }
    printf("\n");
}

/* --- per connection (connection threads) --- */

static void *blockd_open(int readonly)
{
    /* Connections share the graph; the handle only has to be non-NULL. */
    return &graph;
}

static int64_t blockd_get_size(void *handle)
{
    int64_t len = bd_entry_getlength(graph.entry);
    return len < 0 ? ret_errno((int)len) : len;
}

static int blockd_can_write(void *handle)
{
    return graph.writable;
}

static int blockd_can_flush(void *handle)
{
    return 1;
}

static int blockd_can_trim(void *handle)
{
    return graph.writable;
}

static int blockd_can_zero(void *handle)
{
    return graph.writable;
}

/* BD_REQ_NO_FALLBACK: the graph fails a zero it cannot do fast. */
static int blockd_can_fast_zero(void *handle)
{
    return 1;
}

static int blockd_can_fua(void *handle)
{
    return NBDKIT_FUA_NATIVE;
}

static int blockd_can_cache(void *handle)
{
    return NBDKIT_CACHE_NATIVE;
}

static int blockd_can_extents(void *handle)
{
    return 1;
}

/* One entry handle, no per-connection cache, and a flush reaches the
 * storage: a flush on one connection covers writes done on all. */
static int blockd_can_multi_conn(void *handle)
{
    return 1;
}

static int blockd_pread(void *handle, void *buf, uint32_t count,
                        uint64_t offset, uint32_t flags)
{
    return ret_errno(bd_entry_pread(graph.entry, offset, count, buf, 0));
}

static int blockd_pwrite(void *handle, const void *buf, uint32_t count,
                         uint64_t offset, uint32_t flags)
{
    int bflags = flags & NBDKIT_FLAG_FUA ? BD_REQ_FUA : 0;
    return ret_errno(bd_entry_pwrite(graph.entry, offset, count, buf,
                                     bflags));
}

/* nbdkit writes zero buffers itself when we answer ENOTSUP to a zero
 * request without FAST_ZERO. */
static int blockd_zero(void *handle, uint32_t count, uint64_t offset,
                       uint32_t flags)
{
    int bflags = 0;

    if (flags & NBDKIT_FLAG_MAY_TRIM) {
        bflags |= BD_REQ_MAY_UNMAP;
    }
    if (flags & NBDKIT_FLAG_FAST_ZERO) {
        bflags |= BD_REQ_NO_FALLBACK;
    }
    if (flags & NBDKIT_FLAG_FUA) {
        bflags |= BD_REQ_FUA;
    }
    return ret_errno(bd_entry_pwrite_zeroes(graph.entry, offset, count,
                                            bflags));
}

static int blockd_trim(void *handle, uint32_t count, uint64_t offset,
                       uint32_t flags)
{
    int ret = bd_entry_pdiscard(graph.entry, offset, count);

    if (ret == 0 && (flags & NBDKIT_FLAG_FUA)) {
        ret = bd_entry_flush(graph.entry);
    }
    return ret_errno(ret);
}

static int blockd_flush(void *handle, uint32_t flags)
{
    return ret_errno(bd_entry_flush(graph.entry));
}

/* Prefetch: read through the graph, which fills the host page cache
 * below the file node (as the daemon's NBD export does). */
static int blockd_cache(void *handle, uint32_t count, uint64_t offset,
                        uint32_t flags)
{
    g_autofree void *buf = g_try_malloc(MIN(count, CACHE_CHUNK));
    uint64_t end = offset + count;
    int ret = 0;

    if (!buf && count) {
        return ret_errno(-ENOMEM);
    }
    while (ret == 0 && offset < end) {
        uint64_t n = MIN(end - offset, CACHE_CHUNK);
        ret = bd_entry_pread(graph.entry, offset, n, buf, 0);
        offset += n;
    }
    return ret_errno(ret);
}

/* Block status through the whole chain: unallocated in every layer is
 * a hole, and what reads as zeroes is ZERO (NBD's base:allocation). */
static int blockd_extents(void *handle, uint32_t count, uint64_t offset,
                          uint32_t flags, struct nbdkit_extents *extents)
{
    uint64_t end = offset + count;
    gboolean any = FALSE;

    while (offset < end) {
        uint64_t pnum = 0;
        int st = bd_entry_block_status(graph.entry, offset, end - offset,
                                       &pnum);
        if (st < 0) {
            return ret_errno(st);
        }
        if (pnum == 0) {
            break;
        }
        pnum = MIN(pnum, end - offset);
        uint32_t type = (st & BD_BLOCK_DATA ? 0 : NBDKIT_EXTENT_HOLE) |
                        (st & BD_BLOCK_ZERO ? NBDKIT_EXTENT_ZERO : 0);
        if (nbdkit_add_extent(extents, offset, pnum, type) == -1) {
            return -1;
        }
        any = TRUE;
        offset += pnum;
        if (flags & NBDKIT_FLAG_REQ_ONE) {
            break;
        }
    }
    return any ? 0 : ret_errno(-EIO);
}

static struct nbdkit_plugin plugin = {
    .name = BD_PLUGIN_NAME,
    .longname = "blockd graph and formats",
    .version = BLOCKD_VERSION,
    .description = "Serve any node blockd's drivers can open "
                   "(qcow2 with backing chains, raw, throttle, ...)",
    .load = blockd_load,
    .unload = blockd_unload,
    .config = bd_plugin_config,
    .config_complete = bd_plugin_config_complete,
    .config_help = BD_PLUGIN_CONFIG_HELP,
    .magic_config_key = "image",
    .get_ready = blockd_get_ready,
    .after_fork = blockd_after_fork,
    .cleanup = blockd_cleanup,
    .dump_plugin = blockd_dump_plugin,
    .open = blockd_open,
    .get_size = blockd_get_size,
    .can_write = blockd_can_write,
    .can_flush = blockd_can_flush,
    .can_trim = blockd_can_trim,
    .can_zero = blockd_can_zero,
    .can_fast_zero = blockd_can_fast_zero,
    .can_fua = blockd_can_fua,
    .can_cache = blockd_can_cache,
    .can_extents = blockd_can_extents,
    .can_multi_conn = blockd_can_multi_conn,
    .pread = blockd_pread,
    .pwrite = blockd_pwrite,
    .zero = blockd_zero,
    .trim = blockd_trim,
    .flush = blockd_flush,
    .cache = blockd_cache,
    .extents = blockd_extents,
};

/* The one exported symbol (plugin.syms); declared for -Wmissing-prototypes. */
struct nbdkit_plugin *plugin_init(void);
NBDKIT_REGISTER_PLUGIN(plugin)
