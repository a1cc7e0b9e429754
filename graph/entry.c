/* SPDX-License-Identifier: MIT */
/* Entry handles: admission, in-flight counting, drain, and the request
 * range checks every export and job relies on.
 *
 * Thread model: see entry.h.  'lock' protects nothing but the condition
 * variable's sleeps; the counters are atomics.  Lock order: none (no
 * other lock is taken while holding it).
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <errno.h>
#include "graph/trace.h"
#include "graph/entry.h"
#include "graph/io.h"
#include "graph/main-thread.h"

struct BdEntry {
    BdChild *root;          /* edge to the node, parent == NULL */
    char *owner;            /* for messages, or NULL */
    gint in_flight;         /* requests admitted and not yet finished */
    gint quiesce;           /* > 0: drained, admit nothing */
    gboolean allow_beyond_eof;
    gboolean job_link;      /* QEMU's child_job, not a BlockBackend */
    /* Told when a drained section begins and ends over the handle
     * (main thread; a job pauses, as QEMU's child_job does). */
    void (*drain_notify)(void *opaque, gboolean begin);
    void *drain_opaque;
    BdMutex lock;           /* only for the sleeps on cond */
    GCond cond;
    /* Main thread: the owner's reference and one per drained section
     * holding the handle; bd_entry_free() detaches it at once and the
     * memory goes with the last reference, so a section may end after
     * its owner freed a handle (a job cancelled inside a transaction). */
    int refcnt;
};

static void entry_unref(BdEntry *entry)
{
    if (--entry->refcnt > 0) {
        return;
    }
    bd_mutex_destroy(&entry->lock);
    g_cond_clear(&entry->cond);
    g_free(entry);
}

BdEntry *bd_entry_new(BdNode *node, const char *owner, uint64_t perm,
                      uint64_t shared, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdEntry *entry = g_new0(BdEntry, 1);
    BdChild *root = g_new0(BdChild, 1);

    bd_mutex_init(&entry->lock);
    g_cond_init(&entry->cond);
    entry->owner = g_strdup(owner);
    entry->refcnt = 1;
    entry->root = root;
    root->name = g_strdup("root");
    root->entry = entry;
    root->node = node;
    root->role = BD_CHILD_DATA | BD_CHILD_FILTERED | BD_CHILD_PRIMARY;
    root->shared = BD_PERM_ALL;
    root->new_perm = perm;
    root->new_shared = shared;
    node->parents = g_list_prepend(node->parents, root);

    if (!bd_node_refresh_perms(node, errp)) {
        node->parents = g_list_remove(node->parents, root);
        g_free(root->name);
        g_free(root);
        g_free(entry->owner);
        bd_mutex_destroy(&entry->lock);
        g_cond_clear(&entry->cond);
        g_free(entry);
        return NULL;
    }
    root->perm = perm;
    root->shared = shared;
    bd_node_ref(node);
    return entry;
}

static void entry_detach(BdEntry *entry)
{
    BdChild *root = entry->root;
    BdNode *node = root->node;

    node->parents = g_list_remove(node->parents, root);
    bd_node_refresh_perms(node, NULL);
    bd_node_unref(node);
}

void bd_entry_free(BdEntry *entry)
{
    BD_GLOBAL_STATE_CODE();

    if (!entry) {
        return;
    }
    bd_entry_drained_begin(entry);
    entry_detach(entry);
    g_free(entry->root->name);
    g_clear_pointer(&entry->root, g_free);
    g_clear_pointer(&entry->owner, g_free);
    entry->drain_notify = NULL;
    entry_unref(entry);
}

BdNode *bd_entry_node(BdEntry *entry)
{
    return entry->root->node;
}

char *bd_entry_owner_desc(const BdEntry *entry)
{
    if (entry && entry->owner) {
        return g_strdup(entry->owner);
    }
    return g_strdup("an unnamed block device");
}

gboolean bd_entry_set_perm(BdEntry *entry, uint64_t perm, uint64_t shared,
                           GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *root = entry->root;

    root->new_perm = perm;
    root->new_shared = shared;
    if (!bd_node_refresh_perms(root->node, errp)) {
        root->new_perm = root->perm;
        root->new_shared = root->shared;
        return FALSE;
    }
    bd_perm_store(&root->perm, perm);
    bd_perm_store(&root->shared, shared);
    return TRUE;
}

void bd_entry_get_perm(BdEntry *entry, uint64_t *perm, uint64_t *shared)
{
    BD_GLOBAL_STATE_CODE();

    *perm = bd_perm_load(&entry->root->perm);
    *shared = bd_perm_load(&entry->root->shared);
}

gboolean bd_entry_replace_node(BdEntry *entry, BdNode *node, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *root = entry->root;
    BdNode *old = root->node;
    gboolean ok;

    if (old == node) {
        return TRUE;
    }
    bd_entry_drained_begin(entry);
    old->parents = g_list_remove(old->parents, root);
    root->node = node;
    node->parents = g_list_prepend(node->parents, root);
    ok = bd_node_refresh_perms(node, errp);
    if (ok) {
        bd_node_ref(node);
        bd_node_refresh_perms(old, NULL);
        bd_node_unref(old);
    } else {
        node->parents = g_list_remove(node->parents, root);
        root->node = old;
        old->parents = g_list_prepend(old->parents, root);
    }
    bd_entry_drained_end(entry);
    return ok;
}

void bd_entry_set_allow_beyond_eof(BdEntry *entry, gboolean allow)
{
    BD_GLOBAL_STATE_CODE();

    entry->allow_beyond_eof = allow;
}

void bd_entry_set_job_link(BdEntry *entry)
{
    BD_GLOBAL_STATE_CODE();

    entry->job_link = TRUE;
}

gboolean bd_entry_is_job_link(const BdEntry *entry)
{
    return entry->job_link;
}

void bd_entry_set_drain_notify(BdEntry *entry,
                               void (*fn)(void *opaque, gboolean begin),
                               void *opaque)
{
    BD_GLOBAL_STATE_CODE();

    entry->drain_notify = fn;
    entry->drain_opaque = opaque;
}

/* --- admission and drain --- */

/* Raise in-flight first, then look at quiesce; the drainer does the
 * opposite, so one of the two always sees the other (both are full
 * barriers). */
static inline void entry_begin(BdEntry *entry)
{
    for (;;) {
        g_atomic_int_inc(&entry->in_flight);
        if (G_LIKELY(!g_atomic_int_get(&entry->quiesce))) {
            return;
        }
        bd_mutex_lock(&entry->lock);
        if (g_atomic_int_dec_and_test(&entry->in_flight)) {
            g_cond_broadcast(&entry->cond);
        }
        while (g_atomic_int_get(&entry->quiesce)) {
            bd_cond_wait(&entry->cond, &entry->lock);
        }
        bd_mutex_unlock(&entry->lock);
    }
}

/* entry_begin for requests that must not wait (BD_REQ_NOWAIT): FALSE
 * while the handle is quiesced. */
static inline gboolean entry_try_begin(BdEntry *entry)
{
    g_atomic_int_inc(&entry->in_flight);
    if (G_LIKELY(!g_atomic_int_get(&entry->quiesce))) {
        return TRUE;
    }
    bd_mutex_lock(&entry->lock);
    if (g_atomic_int_dec_and_test(&entry->in_flight)) {
        g_cond_broadcast(&entry->cond);
    }
    bd_mutex_unlock(&entry->lock);
    return FALSE;
}

static inline void entry_end(BdEntry *entry)
{
    if (g_atomic_int_dec_and_test(&entry->in_flight) &&
        g_atomic_int_get(&entry->quiesce)) {
        bd_mutex_lock(&entry->lock);
        g_cond_broadcast(&entry->cond);
        bd_mutex_unlock(&entry->lock);
    }
}

void bd_entry_drained_begin(BdEntry *entry)
{
    BD_GLOBAL_STATE_CODE();

    g_atomic_int_inc(&entry->quiesce);
    bd_mutex_lock(&entry->lock);
    while (g_atomic_int_get(&entry->in_flight) > 0) {
        bd_cond_wait(&entry->cond, &entry->lock);
    }
    bd_mutex_unlock(&entry->lock);
}

void bd_entry_drained_end(BdEntry *entry)
{
    BD_GLOBAL_STATE_CODE();

    bd_mutex_lock(&entry->lock);
    if (g_atomic_int_dec_and_test(&entry->quiesce)) {
        g_cond_broadcast(&entry->cond);
    }
    bd_mutex_unlock(&entry->lock);
}

void bd_entry_begin(BdEntry *entry)
{
    entry_begin(entry);
}

void bd_entry_end(BdEntry *entry)
{
    entry_end(entry);
}

unsigned bd_entry_in_flight(BdEntry *entry)
{
    return (unsigned)g_atomic_int_get(&entry->in_flight);
}

/* Every entry that can reach 'node': on it or on any ancestor. */
static void collect_entries(BdNode *node, GHashTable *seen, GPtrArray *out)
{
    if (!g_hash_table_add(seen, node)) {
        return;
    }
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent) {
            collect_entries(c->parent, seen, out);
        } else {
            g_ptr_array_add(out, c->entry);
        }
    }
}

static GPtrArray *entries_above(BdNode *node)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    GPtrArray *out = g_ptr_array_new();

    collect_entries(node, seen, out);
    return out;
}

struct BdDrainSection {
    GPtrArray *entries;
    GPtrArray *nodes;      /* below the entries, each holding a ref */
};

static void collect_nodes_below(BdNode *node, GHashTable *seen,
                                GPtrArray *out)
{
    if (!g_hash_table_add(seen, node)) {
        return;
    }
    g_ptr_array_add(out, bd_node_ref(node));
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        collect_nodes_below(c->node, seen, out);
    }
}

/* Nodes that may hold requests of the quiesced entries back (throttle)
 * are told to let them go, so the wait below always ends: those below
 * the entries, and below the drained node itself, whose own I/O (a
 * filter's background copy) may have no entry above it. */
static GPtrArray *drain_notify_nodes(GPtrArray *entries, GPtrArray *starts)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    GPtrArray *nodes = g_ptr_array_new();

    for (guint i = 0; i < starts->len; i++) {
        collect_nodes_below(starts->pdata[i], seen, nodes);
    }
    for (guint i = 0; i < entries->len; i++) {
        BdEntry *e = entries->pdata[i];
        if (e->root) {
            collect_nodes_below(e->root->node, seen, nodes);
        }
    }
    for (guint i = 0; i < nodes->len; i++) {
        BdNode *n = nodes->pdata[i];
        if (n->drv && n->drv->drained_begin) {
            n->drv->drained_begin(n);
        }
    }
    return nodes;
}

/* Drain 'entries' (taken) and the nodes below them and below 'starts'. */
static BdDrainSection *section_begin(GPtrArray *entries, GPtrArray *starts)
{
    BdDrainSection *section = g_new0(BdDrainSection, 1);

    BD_TRACE(BD_TRACE_DRAINED_BEGIN, "node=%s users=%u",
             starts->len ? ((BdNode *)starts->pdata[0])->node_name : "",
             entries->len);
    section->entries = entries;
    /* Stop admission everywhere first, then wait: waiting one by one
     * would let requests keep entering the others meanwhile. */
    for (guint i = 0; i < entries->len; i++) {
        BdEntry *e = entries->pdata[i];
        e->refcnt++;
        g_atomic_int_inc(&e->quiesce);
    }
    for (guint i = 0; i < entries->len; i++) {
        BdEntry *e = entries->pdata[i];
        if (e->drain_notify) {
            e->drain_notify(e->drain_opaque, TRUE);
        }
    }
    section->nodes = drain_notify_nodes(entries, starts);
    for (guint i = 0; i < entries->len; i++) {
        BdEntry *e = entries->pdata[i];
        bd_mutex_lock(&e->lock);
        while (g_atomic_int_get(&e->in_flight) > 0) {
            bd_cond_wait(&e->cond, &e->lock);
        }
        bd_mutex_unlock(&e->lock);
    }
    for (guint i = 0; i < section->nodes->len; i++) {
        BdNode *n = section->nodes->pdata[i];
        if (n->drv && n->drv->drained_wait) {
            n->drv->drained_wait(n);
        }
    }
    return section;
}

BdDrainSection *bd_drained_begin(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) starts = g_ptr_array_new();

    g_ptr_array_add(starts, node);
    return section_begin(entries_above(node), starts);
}

void bd_drained_end(BdDrainSection *section)
{
    BD_GLOBAL_STATE_CODE();

    BD_TRACE(BD_TRACE_DRAINED_END, "users=%u", section->entries->len);
    for (guint i = 0; i < section->nodes->len; i++) {
        BdNode *n = section->nodes->pdata[i];
        if (n->drv && n->drv->drained_end) {
            n->drv->drained_end(n);
        }
        bd_node_unref(n);
    }
    g_ptr_array_unref(section->nodes);
    for (guint i = 0; i < section->entries->len; i++) {
        bd_entry_drained_end(section->entries->pdata[i]);
    }
    for (guint i = 0; i < section->entries->len; i++) {
        BdEntry *e = section->entries->pdata[i];
        if (e->drain_notify) {
            e->drain_notify(e->drain_opaque, FALSE);
        }
        entry_unref(e);
    }
    g_ptr_array_unref(section->entries);
    g_free(section);
}

/* --- I/O --- */

static inline int entry_check_range(BdEntry *entry, BdNode *node,
                                    uint64_t offset, uint64_t bytes,
                                    gboolean write)
{
    uint64_t size = __atomic_load_n(&node->size, __ATOMIC_ACQUIRE);

    if (offset + bytes < offset) {
        return -EINVAL;
    }
    if (offset + bytes > size && !entry->allow_beyond_eof) {
        return write ? -ENOSPC : -EINVAL;
    }
    return 0;
}

static inline int entry_check_write(BdEntry *entry)
{
    if (!(bd_perm_load(&entry->root->perm) &
          (BD_PERM_WRITE | BD_PERM_WRITE_UNCHANGED))) {
        return -EPERM;
    }
    return 0;
}

int64_t bd_entry_getlength(BdEntry *entry)
{
    int64_t len;

    /* Admitted as any request: a drained graph change may move the
     * handle to another node meanwhile. */
    entry_begin(entry);
    len = bd_node_getlength(entry->root->node);
    entry_end(entry);
    return len;
}

int bd_entry_latency_bound(BdEntry *entry)
{
    int ret;

    if (!entry_try_begin(entry)) {
        return -1;
    }
    ret = entry->root->node->latency_bound ? 1 : 0;
    entry_end(entry);
    return ret;
}

/* Admit a request and check it against the handle; on success the
 * caller runs it and then calls entry_end(). */
static inline int entry_admit(BdEntry *entry, uint64_t offset,
                              uint64_t bytes, gboolean write, BdNode **node)
{
    int ret = 0;

    entry_begin(entry);
    *node = entry->root->node;
    if (write) {
        ret = entry_check_write(entry);
    }
    if (ret == 0) {
        ret = entry_check_range(entry, *node, offset, bytes, write);
    }
    if (ret < 0) {
        entry_end(entry);
    }
    return ret;
}

int bd_entry_pread(BdEntry *entry, uint64_t offset, uint64_t bytes,
                   void *buf, int flags)
{
    BdNode *node;
    int ret;

    if ((flags & BD_REQ_NOWAIT) && !entry_try_begin(entry)) {
        return -EAGAIN;             /* drained: do not wait here */
    }
    if (flags & BD_REQ_NOWAIT) {
        node = entry->root->node;
        ret = entry_check_range(entry, node, offset, bytes, FALSE);
        if (ret == 0) {
            ret = bd_node_pread(node, offset, bytes, buf, flags);
        }
        entry_end(entry);
        return ret;
    }
    ret = entry_admit(entry, offset, bytes, FALSE, &node);

    if (ret == 0) {
        ret = bd_node_pread(node, offset, bytes, buf, flags);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_pwrite(BdEntry *entry, uint64_t offset, uint64_t bytes,
                    const void *buf, int flags)
{
    BdNode *node;
    int ret = entry_admit(entry, offset, bytes, TRUE, &node);

    if (ret == 0) {
        ret = bd_node_pwrite(node, offset, bytes, buf, flags);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_pread_to_fd(BdEntry *entry, uint64_t offset, uint64_t bytes,
                         BdFdSink *sink, int flags)
{
    BdNode *node;
    int ret = entry_admit(entry, offset, bytes, FALSE, &node);

    if (ret == 0) {
        ret = bd_node_pread_to_fd(node, offset, bytes, sink, flags);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_pwrite_from_fd(BdEntry *entry, uint64_t offset, uint64_t bytes,
                            int in_fd, int flags)
{
    BdNode *node;
    int ret = entry_admit(entry, offset, bytes, TRUE, &node);

    if (ret == 0) {
        ret = bd_node_pwrite_from_fd(node, offset, bytes, in_fd, flags);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_pwrite_zeroes(BdEntry *entry, uint64_t offset, uint64_t bytes,
                           int flags)
{
    BdNode *node;
    int ret = entry_admit(entry, offset, bytes, TRUE, &node);

    if (ret == 0) {
        ret = bd_node_pwrite_zeroes(node, offset, bytes, flags);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_pdiscard(BdEntry *entry, uint64_t offset, uint64_t bytes)
{
    BdNode *node;
    int ret = entry_admit(entry, offset, bytes, TRUE, &node);

    if (ret == 0) {
        ret = bd_node_pdiscard(node, offset, bytes);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_flush(BdEntry *entry)
{
    int ret;

    entry_begin(entry);
    ret = bd_node_flush(entry->root->node);
    entry_end(entry);
    return ret;
}

int bd_entry_truncate(BdEntry *entry, uint64_t size)
{
    int ret = 0;

    entry_begin(entry);
    if (!(bd_perm_load(&entry->root->perm) & BD_PERM_RESIZE)) {
        ret = -EPERM;
    } else {
        ret = bd_node_truncate(entry->root->node, size);
    }
    entry_end(entry);
    return ret;
}

int bd_entry_block_status(BdEntry *entry, uint64_t offset, uint64_t bytes,
                          uint64_t *pnum)
{
    BdNode *node;
    int ret = entry_admit(entry, offset, bytes, FALSE, &node);

    if (ret == 0) {
        ret = bd_node_block_status_above(node, offset, bytes, pnum, NULL);
        entry_end(entry);
    }
    return ret;
}

int bd_entry_allocation_depth(BdEntry *entry, uint64_t offset,
                              uint64_t bytes, uint64_t *pnum)
{
    BdNode *node;
    int depth = 0;
    int ret = entry_admit(entry, offset, bytes, FALSE, &node);

    if (ret == 0) {
        ret = bd_node_block_status_above(node, offset, bytes, pnum, &depth);
        entry_end(entry);
    }
    return ret < 0 ? ret : depth;
}
