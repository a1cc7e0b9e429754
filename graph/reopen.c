/* SPDX-License-Identifier: MIT */
/* blockdev-reopen: several nodes get new options and children as one
 * transaction (prepare all, then commit all or abort all).
 *
 * Thread model: main thread only, with every reopened node drained.
 *
 *   queue:    each listed node, and recursively each child defined
 *             inline under it whose options are given again as a dict
 *             (or by its own node-name: it keeps its options but
 *             inherits anew from the parent)
 *   prepare:  per node, in queue order: common options, the reset
 *             rule, the driver's prepare, the 'backing' and 'file'
 *             changes (made on the graph at once, undone on abort),
 *             then every other option must be unchanged
 *   perms:    one permission update over all affected nodes
 *   commit:   drivers commit, common options and option sets replaced;
 *             then each driver's commit_post, when all nodes (children
 *             included) are in their new state
 *
 * Where several options are wrong, the one named is the first in the
 * order QEMU's QDict iterates them (its hash buckets), so error texts
 * match QEMU's word for word.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <string.h>
#include "graph/graph-internal.h"
#include "graph/entry.h"
#include "graph/main-thread.h"
#include "graph/trace.h"

typedef struct {
    BdReopenState st;
    GVariant *explicit;     /* inline child: its options as written */
    gboolean drv_prepared;
    /* The node's file name was its file child's, and that child changes:
     * it follows the new child (drivers naming nodes themselves, as
     * json:{...}, keep theirs). */
    gboolean filename_follows_file;
    gboolean auto_read_only;
    gboolean discard_unmap;
    BdDetectZeroes detect_zeroes;
    /* Top-level keys of st.options handled as children (not compared). */
    GHashTable *consumed;
} ReopenEntry;

/* A change to an edge made during prepare. */
typedef enum { CHANGE_REPLACE, CHANGE_DETACH, CHANGE_ATTACH } ChangeKind;

typedef struct {
    ChangeKind kind;
    BdNode *parent;
    BdChild *child;      /* REPLACE/DETACH: the edge; ATTACH: the new one */
    BdNode *old_node;    /* REPLACE/DETACH: reference held until the end */
    guint index;         /* DETACH: position in parent->children */
} ChildChange;

typedef struct {
    GPtrArray *entries;  /* ReopenEntry * in queue order */
    GPtrArray *changes;  /* ChildChange * in the order made */
} ReopenQueue;

/* --- QEMU's QDict order --- */

/* QEMU's QDict hashes keys into 512 buckets (tdb_hash) and iterates the
 * buckets in order; the first differing option it meets is the one its
 * error names. */
static guint qdict_bucket(const char *key)
{
    guint32 value = 0x238F13AFu * (guint32)strlen(key);

    for (guint i = 0; key[i]; i++) {
        value += (guint32)(guchar)key[i] << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % 512u;
}

static gint qdict_order_cmp(gconstpointer a, gconstpointer b)
{
    const char *ka = *(const char *const *)a;
    const char *kb = *(const char *const *)b;
    guint ba = qdict_bucket(ka), bb = qdict_bucket(kb);

    return ba != bb ? (ba < bb ? -1 : 1) : strcmp(ka, kb);
}

/* --- flattened options --- */

static void flatten_into(GVariant *v, const char *prefix, GHashTable *out)
{
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
        GVariantIter it;
        const char *k;
        GVariant *val;

        g_variant_iter_init(&it, v);
        while (g_variant_iter_next(&it, "{&sv}", &k, &val)) {
            g_autofree char *key = prefix ? g_strdup_printf("%s.%s", prefix, k)
                                          : g_strdup(k);
            flatten_into(val, key, out);
            g_variant_unref(val);
        }
    } else if (g_variant_is_of_type(v, G_VARIANT_TYPE("av"))) {
        gsize n = g_variant_n_children(v);

        for (gsize i = 0; i < n; i++) {
            g_autoptr(GVariant) boxed = g_variant_get_child_value(v, i);
            g_autoptr(GVariant) val = g_variant_get_variant(boxed);
            g_autofree char *key = g_strdup_printf("%s.%zu", prefix, i);
            flatten_into(val, key, out);
        }
    } else if (prefix) {
        g_hash_table_insert(out, g_strdup(prefix), g_variant_ref(v));
    }
}

/* key -> leaf value of 'opts', without the top-level keys in 'skip'. */
static GHashTable *flatten(GVariant *opts, GHashTable *skip)
{
    GHashTable *out = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify)g_variant_unref);
    GVariantIter it;
    const char *k;
    GVariant *val;

    g_variant_iter_init(&it, opts);
    while (g_variant_iter_next(&it, "{&sv}", &k, &val)) {
        if (!skip || !g_hash_table_contains(skip, k)) {
            flatten_into(val, k, out);
        }
        g_variant_unref(val);
    }
    return out;
}

/* Whether the member 'name' of 'fields' is flagged mutable. */
static unsigned field_flags(const BdSchemaField *fields, const char *name)
{
    for (const BdSchemaField *f = fields; f && f->name; f++) {
        if (strcmp(f->name, name) == 0) {
            return f->flags;
        }
    }
    return 0;
}

static gboolean field_is_mutable(const BdSchemaField *fields, const char *name)
{
    return (field_flags(fields, name) & BD_FIELD_MUTABLE) != 0;
}

/* "cache.direct" is mutable when "cache" is. */
static gboolean key_is_mutable(const BdDriver *drv, const char *key,
                               gboolean with_common)
{
    g_autofree char *top = g_strndup(key, strcspn(key, "."));

    if (with_common && field_is_mutable(bd_node_common_fields(), top)) {
        return TRUE;
    }
    return field_is_mutable(drv->options, top);
}

/* A mutable key that may also be left out (reset to its default). */
static gboolean key_is_resettable(const BdDriver *drv, const char *key)
{
    g_autofree char *top = g_strndup(key, strcspn(key, "."));

    return key_is_mutable(drv, key, TRUE) &&
           !(field_flags(drv->options, top) & BD_FIELD_NO_RESET);
}

/* The top-level keys of a node's own options that belong to children. */
static GHashTable *child_keys(BdNode *node)
{
    GHashTable *keys = g_hash_table_new_full(g_str_hash, g_str_equal,
                                             g_free, NULL);

    g_hash_table_add(keys, g_strdup("file"));
    g_hash_table_add(keys, g_strdup("backing"));
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        g_hash_table_add(keys, g_strndup(c->name, strcspn(c->name, ".")));
    }
    return keys;
}

static GPtrArray *sorted_keys(GHashTable *h)
{
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, h);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        g_ptr_array_add(keys, k);
    }
    g_ptr_array_sort(keys, qdict_order_cmp);
    return keys;
}

/* --- the queue --- */

static ReopenEntry *queue_find(ReopenQueue *q, BdNode *node)
{
    for (guint i = 0; i < q->entries->len; i++) {
        ReopenEntry *e = q->entries->pdata[i];
        if (e->st.node == node) {
            return e;
        }
    }
    return NULL;
}

static ReopenEntry *queue_add(ReopenQueue *q, BdNode *node,
                              GVariant *options);

/* Children defined inline under 'node' whose options come again. */
static void queue_children(ReopenQueue *q, ReopenEntry *e)
{
    BdNode *node = e->st.node;

    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        g_autoptr(GVariant) v = NULL;
        GVariant *child_opts;
        ReopenEntry *ce;

        if (c->node->inherits_from != node ||
            !(v = bd_opts_lookup(e->st.options, c->name))) {
            continue;
        }
        if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
            /* The same child by name keeps its own options. */
            if (strcmp(g_variant_get_string(v, NULL),
                       c->node->node_name) != 0) {
                continue;
            }
            child_opts = c->node->explicit_options ? c->node->explicit_options
                                                   : c->node->options;
        } else if (g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
            child_opts = v;
        } else {
            continue;
        }
        g_hash_table_add(e->consumed, g_strdup(c->name));
        ce = queue_add(q, c->node,
                       bd_inherit_options_from(node->drv, e->st.options,
                                               child_opts, c->role));
        if (ce && !ce->explicit) {
            ce->explicit = g_variant_ref(child_opts);
        }
    }
}

/* Takes 'options' (floating or full); NULL if the node was queued
 * already (listed twice, directly and inline: the first set wins). */
static ReopenEntry *queue_add(ReopenQueue *q, BdNode *node,
                              GVariant *options)
{
    ReopenEntry *e;

    options = g_variant_ref_sink(options);
    if (queue_find(q, node)) {
        g_variant_unref(options);
        return NULL;
    }
    e = g_new0(ReopenEntry, 1);
    e->st.node = bd_node_ref(node);
    e->st.options = options;
    e->consumed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        NULL);
    g_ptr_array_add(q->entries, e);
    queue_children(q, e);
    return e;
}

static void entry_free(ReopenEntry *e)
{
    g_hash_table_unref(e->consumed);
    g_clear_pointer(&e->explicit, g_variant_unref);
    g_variant_unref(e->st.options);
    bd_node_unref(e->st.node);
    g_free(e);
}

/* --- edge changes made during prepare --- */

static void change_replace(ReopenQueue *q, BdChild *child, BdNode *new_node)
{
    ChildChange *ch = g_new0(ChildChange, 1);

    ch->kind = CHANGE_REPLACE;
    ch->parent = child->parent;
    ch->child = child;
    ch->old_node = child->node;          /* the edge's reference moves here */
    ch->old_node->parents = g_list_remove(ch->old_node->parents, child);
    child->node = bd_node_ref(new_node);
    new_node->parents = g_list_prepend(new_node->parents, child);
    g_ptr_array_add(q->changes, ch);
}

static void change_detach(ReopenQueue *q, BdNode *parent, BdChild *child)
{
    ChildChange *ch = g_new0(ChildChange, 1);

    ch->kind = CHANGE_DETACH;
    ch->parent = parent;
    ch->child = child;
    ch->old_node = child->node;
    ch->index = bd_child_unlink(child);
    g_ptr_array_add(q->changes, ch);
}

static void change_attach(ReopenQueue *q, BdNode *parent, BdNode *node,
                          const char *name, BdChildRole role)
{
    ChildChange *ch = g_new0(ChildChange, 1);

    ch->kind = CHANGE_ATTACH;
    ch->parent = parent;
    ch->child = bd_child_link(parent, node, name, role);
    g_ptr_array_add(q->changes, ch);
}

/* Undo one change; the edge gets back its committed permissions. */
static void change_undo(ChildChange *ch)
{
    BdChild *child = ch->child;

    switch (ch->kind) {
    case CHANGE_REPLACE:
        child->node->parents = g_list_remove(child->node->parents, child);
        bd_node_unref(child->node);
        child->node = ch->old_node;
        child->node->parents = g_list_prepend(child->node->parents, child);
        ch->old_node = NULL;
        break;
    case CHANGE_DETACH:
        bd_child_relink(child, ch->index);
        ch->old_node = NULL;
        child = NULL;
        break;
    case CHANGE_ATTACH:
        bd_child_unlink(child);
        bd_child_free(child);
        child = NULL;
        break;
    }
    if (child) {
        child->new_perm = child->perm;
        child->new_shared = child->shared;
    }
}

/* After commit: one line for an edge that changed. */
static void change_log(ChildChange *ch)
{
    const char *parent = ch->parent->node_name;
    const char *name = ch->child->name;
    const char *from = ch->kind == CHANGE_ATTACH ? ""
                       : ch->old_node->node_name;
    const char *to = ch->kind == CHANGE_DETACH ? ""
                     : ch->child->node->node_name;

    g_info("node '%s': child '%s' changed from %s to %s", parent, name,
           *from ? from : "(none)", *to ? to : "(none)");
    BD_TRACE(BD_TRACE_BDRV_CHILD_CHANGE, "parent=%s child=%s old=%s new=%s",
             parent, name, from, to);
}

/* After commit: drop what the old edges held. */
static void change_finish(ChildChange *ch)
{
    if (ch->kind == CHANGE_DETACH) {
        /* The edge's reference moves to old_node, dropped below. */
        g_free(ch->child->name);
        g_free(ch->child);
    }
    if (ch->old_node) {
        if (ch->old_node->inherits_from == ch->parent) {
            ch->old_node->inherits_from = NULL;
        }
        bd_node_unref(ch->old_node);
    }
}

/* --- prepare --- */

static gboolean prepare_common(ReopenEntry *e, GError **errp)
{
    BdNodeOptions o = { 0 };

    bd_node_options_decode(e->st.options, &o);
    e->st.read_only = o.read_only;
    e->auto_read_only = o.auto_read_only;
    e->st.cache_direct = o.cache.direct;
    e->st.cache_no_flush = o.cache.no_flush;
    e->discard_unmap = o.discard == BD_DISCARD_UNMAP;
    e->detect_zeroes = o.detect_zeroes;
    return bd_node_options_check(&o, errp);
}

/* Options set before and left out now must be mutable. */
static gboolean check_reset_allowed(ReopenEntry *e, GHashTable *old,
                                    GHashTable *new, GError **errp)
{
    g_autoptr(GPtrArray) keys = sorted_keys(old);

    for (guint i = 0; i < keys->len; i++) {
        const char *k = keys->pdata[i];
        if (!g_hash_table_contains(new, k) &&
            !key_is_resettable(e->st.node->drv, k)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Option '%s' cannot be reset to its default value",
                        k);
            return FALSE;
        }
    }
    return TRUE;
}

/* Every other option must keep its value. */
static gboolean check_unchanged(ReopenEntry *e, GHashTable *old,
                                GHashTable *new, GError **errp)
{
    g_autoptr(GPtrArray) keys = sorted_keys(new);

    for (guint i = 0; i < keys->len; i++) {
        const char *k = keys->pdata[i];
        GVariant *nv = g_hash_table_lookup(new, k);
        GVariant *ov = g_hash_table_lookup(old, k);

        if (ov && g_variant_equal(ov, nv)) {
            continue;
        }
        if (key_is_mutable(e->st.node->drv, k, TRUE) &&
            strcmp(k, "node-name") != 0) {
            continue;
        }
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot change the option '%s'", k);
        return FALSE;
    }
    return TRUE;
}

static BdNode *skip_implicit_filters(BdNode *node)
{
    while (node && node->implicit) {
        BdChild *f = bd_node_filtered_child(node);
        node = f ? f->node : NULL;
    }
    return node;
}

/* The 'backing' or 'file' option given as a node-name or null. */
static gboolean prepare_child_change(ReopenQueue *q, ReopenEntry *e,
                                     const char *name, GVariant *v,
                                     GError **errp)
{
    BdNode *node = e->st.node;
    gboolean is_backing = strcmp(name, "backing") == 0;
    BdChild *old = is_backing ? node->backing : node->file;
    BdNode *new_node = NULL;

    if (!v || g_variant_is_of_type(v, G_VARIANT_TYPE_VARDICT)) {
        return TRUE;    /* absent, or options of the current child */
    }
    g_hash_table_add(e->consumed, g_strdup(name));
    if (g_variant_is_of_type(v, G_VARIANT_TYPE_STRING)) {
        const char *ref = g_variant_get_string(v, NULL);
        new_node = bd_node_find(ref);
        if (!new_node) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot find device='' nor node-name='%s'", ref);
            return FALSE;
        }
    }
    if ((old ? old->node : NULL) == new_node) {
        return TRUE;
    }
    if (old && skip_implicit_filters(old->node) == new_node) {
        return TRUE;
    }
    if (old && old->node->implicit) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot replace implicit %s child of %s", name,
                    node->node_name);
        return FALSE;
    }
    if (old && old->frozen) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot change frozen '%s' link from '%s' to '%s'",
                    name, node->node_name, old->node->node_name);
        return FALSE;
    }
    if (new_node && bd_node_is_ancestor_of(new_node, node)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Making '%s' a %s child of '%s' would create a cycle",
                    new_node->node_name, name, node->node_name);
        return FALSE;
    }
    if (!is_backing && old && node->filename && old->node->filename &&
        strcmp(node->filename, old->node->filename) == 0) {
        e->filename_follows_file = TRUE;
    }
    if (old && new_node) {
        change_replace(q, old, new_node);
    } else if (old) {
        change_detach(q, node, old);
    } else {
        change_attach(q, node, new_node, name,
                      is_backing ? BD_CHILD_COW
                                 : BD_CHILD_PRIMARY | BD_CHILD_DATA |
                                   BD_CHILD_METADATA);
    }
    return TRUE;
}

static gboolean prepare_entry(ReopenQueue *q, ReopenEntry *e, GError **errp)
{
    BdNode *node = e->st.node;
    const BdDriver *drv = node->drv;
    g_autoptr(GHashTable) old_skip = child_keys(node);
    g_autoptr(GHashTable) old = flatten(node->options, old_skip);
    g_autoptr(GHashTable) all_new = flatten(e->st.options, NULL);
    g_autoptr(GHashTable) new = NULL;
    g_auto(BdChildRefs) refs = { 0 };
    gboolean has_default_backing;

    if (!prepare_common(e, errp)) {
        return FALSE;
    }
    if (!drv->reopen_prepare) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block format '%s' used by node '%s' does not support "
                    "reopening files", drv->name, node->node_name);
        return FALSE;
    }
    if (!check_reset_allowed(e, old, all_new, errp)) {
        return FALSE;
    }
    if (!drv->reopen_prepare(&e->st, errp)) {
        return FALSE;
    }
    e->drv_prepared = TRUE;

    has_default_backing = drv->has_default_backing &&
                          drv->has_default_backing(node);
    bd_child_refs_decode(e->st.options, &refs);
    if (!refs.has_backing && (node->backing || has_default_backing)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "backing is missing for '%s'", node->node_name);
        return FALSE;
    }
    if (!prepare_child_change(q, e, "backing", refs.backing, errp) ||
        !prepare_child_change(q, e, "file", refs.file, errp)) {
        return FALSE;
    }

    /* A child given by its current node-name is no change either. */
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        const char *ref = bd_opts_get_str(e->st.options, c->name, NULL);
        if (ref && strcmp(ref, c->node->node_name) == 0) {
            g_hash_table_add(e->consumed, g_strdup(c->name));
        }
    }
    new = flatten(e->st.options, e->consumed);
    return check_unchanged(e, old, new, errp);
}

/* --- commit and abort --- */

static void commit_entry(ReopenEntry *e)
{
    BdNode *node = e->st.node;

    g_info("node '%s' reopened%s", node->node_name,
           e->st.read_only ? " read-only" : "");
    node->read_only = e->st.read_only;
    node->auto_read_only = e->auto_read_only;
    node->cache_direct = e->st.cache_direct;
    node->cache_no_flush = e->st.cache_no_flush;
    node->discard_unmap = e->discard_unmap;
    node->detect_zeroes = e->detect_zeroes;
    g_variant_unref(node->options);
    node->options = g_variant_ref(e->st.options);
    if (e->explicit) {
        g_clear_pointer(&node->explicit_options, g_variant_unref);
        node->explicit_options = g_variant_ref(e->explicit);
    }
    if (e->filename_follows_file && node->file) {
        g_free(node->filename);
        node->filename = g_strdup(node->file->node->filename);
    }
    /* The driver sees the node with its new options and children. */
    if (node->drv->reopen_commit) {
        node->drv->reopen_commit(&e->st);
    }
}

static void abort_entry(ReopenEntry *e)
{
    if (e->drv_prepared && e->st.node->drv->reopen_abort) {
        e->st.node->drv->reopen_abort(&e->st);
    }
}

/* The nodes whose permissions may change: the reopened ones and every
 * node gaining or losing a parent. */
static GPtrArray *affected_nodes(ReopenQueue *q)
{
    GPtrArray *nodes = g_ptr_array_new();

    for (guint i = 0; i < q->entries->len; i++) {
        ReopenEntry *e = q->entries->pdata[i];
        g_ptr_array_add(nodes, e->st.node);
    }
    for (guint i = 0; i < q->changes->len; i++) {
        ChildChange *ch = q->changes->pdata[i];
        if (ch->old_node) {
            g_ptr_array_add(nodes, ch->old_node);
        }
        if (ch->kind != CHANGE_DETACH) {
            g_ptr_array_add(nodes, ch->child->node);
        }
    }
    return nodes;
}

static gboolean queue_build(ReopenQueue *q, GPtrArray *list, GError **errp)
{
    for (guint i = 0; i < list->len; i++) {
        GVariant *opts = list->pdata[i];
        BdNodeOptions o = { 0 };
        const char *name;
        BdNode *node;

        bd_node_options_decode(opts, &o);
        name = o.node_name;

        if (!name) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "node-name not specified");
            return FALSE;
        }
        node = bd_node_find(name);
        if (!node) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Failed to find node with node-name='%s'", name);
            return FALSE;
        }
        queue_add(q, node, g_variant_ref(opts));
    }
    return TRUE;
}

gboolean bd_node_reopen_multiple(GPtrArray *list, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ReopenQueue q = {
        .entries = g_ptr_array_new_with_free_func((GDestroyNotify)entry_free),
        .changes = g_ptr_array_new_with_free_func(g_free),
    };
    g_autoptr(GPtrArray) drains = g_ptr_array_new();
    g_autoptr(GPtrArray) affected = NULL;
    gboolean ok;

    ok = queue_build(&q, list, errp);

    /* Users of the reopened nodes pause; unrelated exports go on. */
    for (guint i = 0; ok && i < q.entries->len; i++) {
        ReopenEntry *e = q.entries->pdata[i];
        g_ptr_array_add(drains, bd_drained_begin(e->st.node));
    }
    for (guint i = 0; ok && i < q.entries->len; i++) {
        ReopenEntry *e = q.entries->pdata[i];
        BD_TRACE(BD_TRACE_BDRV_REOPEN_PREPARE, "node=%s",
                 e->st.node->node_name);
        ok = prepare_entry(&q, e, errp);
    }
    if (ok) {
        for (guint i = 0; i < q.entries->len; i++) {
            ReopenEntry *e = q.entries->pdata[i];
            e->st.node->reopen_pending = TRUE;
            e->st.node->reopen_read_only = e->st.read_only;
        }
        affected = affected_nodes(&q);
        ok = bd_nodes_refresh_perms(affected, errp);
        for (guint i = 0; i < q.entries->len; i++) {
            ReopenEntry *e = q.entries->pdata[i];
            e->st.node->reopen_pending = FALSE;
        }
    }

    if (ok) {
        for (guint i = 0; i < q.entries->len; i++) {
            ReopenEntry *e = q.entries->pdata[i];
            BD_TRACE(BD_TRACE_BDRV_REOPEN_COMMIT, "node=%s read_only=%d",
                     e->st.node->node_name, e->st.read_only);
            commit_entry(e);
        }
        for (guint i = 0; i < q.changes->len; i++) {
            ChildChange *ch = q.changes->pdata[i];
            BdNode *parent = ch->parent;
            change_log(ch);
            change_finish(ch);
            bd_node_refresh_limits(parent);
        }
        /* New options or children (a file now O_DIRECT) change limits. */
        for (guint i = 0; i < q.entries->len; i++) {
            ReopenEntry *e = q.entries->pdata[i];
            bd_node_refresh_limits(e->st.node);
        }
        for (guint i = 0; i < q.entries->len; i++) {
            ReopenEntry *e = q.entries->pdata[i];
            if (e->st.node->drv->reopen_commit_post) {
                e->st.node->drv->reopen_commit_post(&e->st);
            }
        }
    } else {
        const char *why = errp && *errp ? (*errp)->message : "";

        /* Every driver that staged state drops it, including the one
         * whose entry a later generic check refused. */
        for (guint i = 0; i < q.entries->len; i++) {
            ReopenEntry *e = q.entries->pdata[i];
            BD_TRACE(BD_TRACE_BDRV_REOPEN_ABORT, "node=%s error=%s",
                     e->st.node->node_name, why);
            abort_entry(e);
        }
        for (guint i = 0; i < list->len; i++) {
            BdNodeOptions o = { 0 };
            bd_node_options_decode(list->pdata[i], &o);
            g_info("node '%s' not reopened: %s",
                   o.node_name ? o.node_name : "", why);
        }
        for (guint i = q.changes->len; i > 0; i--) {
            change_undo(q.changes->pdata[i - 1]);
        }
    }

    for (guint i = drains->len; i > 0; i--) {
        bd_drained_end(drains->pdata[i - 1]);
    }
    g_ptr_array_unref(q.changes);
    g_ptr_array_unref(q.entries);
    return ok;
}

gboolean bd_reopen_prepare_fixed(BdReopenState *state, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    (void)state;
    (void)errp;
    return TRUE;
}
