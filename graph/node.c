/* SPDX-License-Identifier: MIT */
/* Node lifecycle: the driver registry, opening nodes from options
 * (nested definitions and node-name references), children, reference
 * counting, the node-name registry and blockdev-del's checks.
 *
 * Thread model: everything here runs on the main thread (asserted at
 * every entry point), except what requests use while the graph holds
 * still under them: the driver look-ups (the registry is complete once
 * start-up is over), the schema (built once), bd_id_wellformed, the
 * filtered/backing child accessors and bd_node_set_size (atomic).
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <string.h>
#include "graph/trace.h"
#include "graph/node.h"
#include "graph/entry.h"
#include "graph/io.h"
#include "graph/bitmap.h"
#include "graph/checkpoint.h"
#include "graph/graph-internal.h"
#include "graph/main-thread.h"

/* Registered drivers, NULL-terminated. */
static GPtrArray *drivers;
/* Every open node, in creation order (all nodes carry a node-name). */
static GPtrArray *nodes;

void bd_driver_register(const BdDriver *drv)
{
    BD_GLOBAL_STATE_CODE();

    if (!drivers) {
        drivers = g_ptr_array_new();
        g_ptr_array_add(drivers, NULL);
    }
    g_assert(!bd_driver_find(drv->name));
    /* Keep the array NULL-terminated: replace the terminator. */
    drivers->pdata[drivers->len - 1] = (gpointer)drv;
    g_ptr_array_add(drivers, NULL);
}

const BdDriver *bd_driver_find(const char *name)
{
    for (guint i = 0; drivers && i + 1 < drivers->len; i++) {
        const BdDriver *drv = drivers->pdata[i];
        if (strcmp(drv->name, name) == 0) {
            return drv;
        }
    }
    return NULL;
}

const BdDriver *const *bd_driver_list(void)
{
    static const BdDriver *const none[] = { NULL };
    return drivers ? (const BdDriver *const *)drivers->pdata : none;
}

/* --- the BlockdevOptions schema --- */

static const char *const discard_values[] = {
    [BD_DISCARD_IGNORE] = "ignore",
    [BD_DISCARD_UNMAP] = "unmap",
    NULL };
static const char *const detect_zeroes_values[] = {
    [BD_DETECT_ZEROES_OFF] = "off",
    [BD_DETECT_ZEROES_ON] = "on",
    [BD_DETECT_ZEROES_UNMAP] = "unmap",
    NULL };

static const BdSchemaType discard_type = {
    .name = "BlockdevDiscardOptions", .kind = BD_SCHEMA_ENUM,
    .enum_values = discard_values };
static const BdSchemaType detect_zeroes_type = {
    .name = "BlockdevDetectZeroesOptions", .kind = BD_SCHEMA_ENUM,
    .enum_values = detect_zeroes_values };
static const BdSchemaField cache_fields[] = {
    { "direct", &bd_schema_bool, TRUE, BD_AT(BdCacheOptions, direct) },
    { "no-flush", &bd_schema_bool, TRUE, BD_AT(BdCacheOptions, no_flush) },
    { NULL } };
static const BdSchemaType cache_type = {
    .name = "BlockdevCacheOptions", .kind = BD_SCHEMA_OBJECT,
    .fields = cache_fields };

/* BlockdevDriver: the registered drivers' names, filled once they are
 * registered.  Decoded as a string: its values are known at run time. */
BdSchemaType bd_blockdev_driver_enum;


#define MUTABLE .flags = BD_FIELD_MUTABLE
static const BdSchemaField common_fields[] = {
    { "driver", &bd_blockdev_driver_enum, FALSE,
      BD_AT(BdNodeOptions, driver) },
    { "node-name", &bd_schema_str, TRUE, BD_AT(BdNodeOptions, node_name),
      MUTABLE },
    { "discard", &discard_type, TRUE, BD_AT(BdNodeOptions, discard),
      .def.i = BD_DISCARD_IGNORE, MUTABLE },
    { "cache", &cache_type, TRUE, BD_AT(BdNodeOptions, cache), MUTABLE },
    { "read-only", &bd_schema_bool, TRUE, BD_AT(BdNodeOptions, read_only),
      MUTABLE },
    { "auto-read-only", &bd_schema_bool, TRUE,
      BD_AT(BdNodeOptions, auto_read_only), MUTABLE },
    { "force-share", &bd_schema_bool, TRUE,
      BD_AT(BdNodeOptions, force_share) },
    { "detect-zeroes", &detect_zeroes_type, TRUE,
      BD_AT(BdNodeOptions, detect_zeroes), .def.i = BD_DETECT_ZEROES_OFF,
      MUTABLE },
    { NULL } };
#undef MUTABLE

const BdSchemaField *bd_node_common_fields(void)
{
    return common_fields;
}

void bd_node_options_decode(GVariant *options, BdNodeOptions *out)
{
    bd_schema_decode(common_fields, options, out);
}

/* 'file' and 'backing' as the drivers that have them declare them. */
static const BdSchemaField child_ref_fields[] = {
    { "file", &bd_schema_blockdev_ref, TRUE, BD_AT(BdChildRefs, file),
      BD_HAS(BdChildRefs, file) },
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE,
      BD_AT(BdChildRefs, backing), BD_HAS(BdChildRefs, backing) },
    { NULL } };

void bd_child_refs_decode(GVariant *options, BdChildRefs *out)
{
    bd_schema_decode(child_ref_fields, options, out);
}

void bd_child_refs_clear(BdChildRefs *refs)
{
    bd_schema_clear(child_ref_fields, refs);
}

const BdSchemaType *bd_blockdev_options_schema(void)
{
    static BdSchemaType union_type;
    static gsize done;

    /* Built once, after start-up registration, from the driver table. */
    if (g_once_init_enter(&done)) {
        const BdDriver *const *list = bd_driver_list();
        guint n = 0;
        while (list[n]) {
            n++;
        }
        const char **names = g_new0(const char *, n + 1);
        BdSchemaVariant *variants = g_new0(BdSchemaVariant, n + 1);
        for (guint i = 0; i < n; i++) {
            BdSchemaType *t = g_new0(BdSchemaType, 1);
            static const BdSchemaField no_fields[] = { { NULL } };
            names[i] = list[i]->name;
            t->name = g_strdup_printf("BlockdevOptions-%s", list[i]->name);
            t->kind = BD_SCHEMA_OBJECT;
            t->fields = list[i]->options ? list[i]->options : no_fields;
            variants[i].value = list[i]->name;
            variants[i].type = t;
        }
        bd_blockdev_driver_enum = (BdSchemaType) {
            .name = "BlockdevDriver", .kind = BD_SCHEMA_ENUM,
            .enum_values = names };
        union_type = (BdSchemaType) {
            .name = "BlockdevOptions", .kind = BD_SCHEMA_UNION,
            .fields = common_fields, .discriminator = "driver",
            .variants = variants };
        g_once_init_leave(&done, 1);
    }
    return &union_type;
}

/* --- names --- */

BdNode *bd_node_find(const char *node_name)
{
    BD_GLOBAL_STATE_CODE();

    for (guint i = 0; nodes && i < nodes->len; i++) {
        BdNode *node = nodes->pdata[i];
        if (strcmp(node->node_name, node_name) == 0) {
            return node;
        }
    }
    return NULL;
}

GPtrArray *bd_node_list(void)
{
    BD_GLOBAL_STATE_CODE();

    if (!nodes) {
        nodes = g_ptr_array_new();
    }
    return nodes;
}

gboolean bd_id_wellformed(const char *name)
{
    if (!g_ascii_isalpha(name[0])) {
        return FALSE;
    }
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p)) {
            return FALSE;
        }
    }
    return TRUE;
}

/* QEMU's generated names: "#block" + counter + two random digits. */
static char *node_name_generate(void)
{
    static guint64 counter;
    return g_strdup_printf("#block%" G_GUINT64_FORMAT "%02d", counter++,
                           g_random_int_range(0, 100));
}

/* The common options as the node keeps them; shared with reopen. */
gboolean bd_node_options_check(const BdNodeOptions *o, GError **errp)
{
    if (o->detect_zeroes == BD_DETECT_ZEROES_UNMAP &&
        o->discard != BD_DISCARD_UNMAP) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "setting detect-zeroes to unmap is not allowed "
                    "without setting discard operation to unmap");
        return FALSE;
    }
    return TRUE;
}

static gboolean node_apply_common_options(BdNode *node,
                                          const BdNodeOptions *o,
                                          GError **errp)
{
    node->read_only = o->read_only;
    node->auto_read_only = o->auto_read_only;
    node->force_share = o->force_share;
    node->cache_direct = o->cache.direct;
    node->cache_no_flush = o->cache.no_flush;
    node->discard_unmap = o->discard == BD_DISCARD_UNMAP;
    node->detect_zeroes = o->detect_zeroes;

    if (node->force_share && !node->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "force-share=on can only be used with read-only images");
        return FALSE;
    }
    return bd_node_options_check(o, errp);
}

static void node_free(BdNode *node)
{
    g_info("node '%s' (%s) closed", node->node_name,
           node->drv ? node->drv->name : "");
    BD_TRACE(BD_TRACE_NODE_CLOSE, "node=%s driver=%s", node->node_name,
             node->drv ? node->drv->name : "");
    node->opened = FALSE;
    if (node->drv && node->drv->close) {
        node->drv->close(node);
    }
    /* The driver's close stored what it keeps (qcow2 bitmaps). */
    bd_dirty_bitmaps_node_closing(node);
    bd_checkpoints_node_closing(node);
    /* Children last: a driver's close may still flush through them. */
    while (node->children->len) {
        BdChild *child = g_ptr_array_index(node->children,
                                           node->children->len - 1);
        bd_node_detach_child(node, child);
    }
    if (nodes) {
        g_ptr_array_remove(nodes, node);
    }
    g_ptr_array_unref(node->children);
    g_list_free(node->parents);
    g_clear_pointer(&node->options, g_variant_unref);
    g_clear_pointer(&node->explicit_options, g_variant_unref);
    g_free(node->filename);
    g_free(node->node_name);
    g_clear_pointer(&node->pool, bd_worker_pool_unref);
    bd_reqlist_destroy(&node->reqs);
    bd_io_stats_destroy(&node->stats);
    g_ptr_array_unref(node->bitmaps);
    bd_rwlock_destroy(&node->bitmaps_lock);
    g_free(node);
}

BdNode *bd_node_open(GVariant *options, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNodeOptions o = { 0 };
    const char *driver;
    const BdDriver *drv;

    bd_node_options_decode(options, &o);
    driver = o.driver;

    if (!driver) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'driver' is missing");
        return NULL;
    }
    drv = bd_driver_find(driver);
    if (!drv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown driver '%s'", driver);
        return NULL;
    }
    return bd_node_open_driver(drv, options, errp);
}

BdNode *bd_node_open_driver(const BdDriver *drv, GVariant *options,
                            GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNodeOptions o = { 0 };
    const char *name;
    BdNode *node;

    bd_node_options_decode(options, &o);
    name = o.node_name;

    if (name) {
        if (!bd_id_wellformed(name)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Invalid node-name: '%s'", name);
            return NULL;
        }
        if (bd_node_find(name)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Duplicate nodes with node-name='%s'", name);
            return NULL;
        }
    }

    node = g_new0(BdNode, 1);
    node->drv = drv;
    node->refcnt = 1;
    node->children = g_ptr_array_new();
    node->request_alignment = 1;
    node->cum_shared = BD_PERM_ALL;
    node->options = g_variant_ref_sink(options);
    bd_reqlist_init(&node->reqs);
    bd_io_stats_init(&node->stats);
    bd_rwlock_init(&node->bitmaps_lock);
    node->bitmaps = g_ptr_array_new();
    if (name) {
        node->node_name = g_strdup(name);
    } else {
        node->node_name = node_name_generate();
        node->auto_named = TRUE;
    }
    g_ptr_array_add(bd_node_list(), node);

    if (!node_apply_common_options(node, &o, errp) ||
        !drv->open(node, options, errp)) {
        /* A driver that failed half-way releases what it set up through
         * its close callback, called only when it left state behind. */
        if (drv->close && node->opaque) {
            drv->close(node);
        }
        node->drv = NULL;
        node_free(node);
        return NULL;
    }
    if (!node->filename) {
        node->filename = g_strdup(node->file ? node->file->node->filename
                                             : drv->name);
    }
    node->opened = TRUE;
    bd_node_refresh_limits(node);
    g_info("node '%s' (%s, %s) opened%s", node->node_name, drv->name,
           node->filename, node->read_only ? " read-only" : "");
    BD_TRACE(BD_TRACE_NODE_OPEN, "node=%s driver=%s filename=%s",
             node->node_name, drv->name, node->filename);
    return node;
}

BdNode *bd_node_ref(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    node->refcnt++;
    return node;
}

void bd_node_unref(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    if (node && --node->refcnt == 0) {
        node_free(node);
    }
}

/* A node may not become its own descendant. */
gboolean bd_node_is_ancestor_of(BdNode *ancestor, BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    if (ancestor == node) {
        return TRUE;
    }
    for (guint i = 0; i < ancestor->children->len; i++) {
        BdChild *c = g_ptr_array_index(ancestor->children, i);
        if (bd_node_is_ancestor_of(c->node, node)) {
            return TRUE;
        }
    }
    return FALSE;
}

void bd_child_relink(BdChild *child, guint index)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *parent = child->parent;

    g_ptr_array_insert(parent->children, (gint)index, child);
    /* Newest parent first, as QEMU lists them: conflicts name the
     * existing user as the one requiring and the new one as unsharing. */
    child->node->parents = g_list_prepend(child->node->parents, child);
    if (strcmp(child->name, "file") == 0) {
        parent->file = child;
    } else if (strcmp(child->name, "backing") == 0) {
        parent->backing = child;
    }
}

BdChild *bd_child_link(BdNode *parent, BdNode *node, const char *name,
                       BdChildRole role)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *child = g_new0(BdChild, 1);

    child->name = g_strdup(name);
    child->parent = parent;
    child->node = bd_node_ref(node);
    child->role = role;
    child->shared = child->new_shared = BD_PERM_ALL;
    bd_child_relink(child, parent->children->len);
    return child;
}

guint bd_child_unlink(BdChild *child)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *parent = child->parent;
    guint index = 0;

    if (parent->file == child) {
        parent->file = NULL;
    }
    if (parent->backing == child) {
        parent->backing = NULL;
    }
    g_ptr_array_find(parent->children, child, &index);
    g_ptr_array_remove_index(parent->children, index);
    child->node->parents = g_list_remove(child->node->parents, child);
    return index;
}

void bd_child_free(BdChild *child)
{
    BD_GLOBAL_STATE_CODE();

    bd_node_unref(child->node);
    g_free(child->name);
    g_free(child);
}

BdChild *bd_node_attach_child(BdNode *parent, BdNode *child_node,
                              const char *name, BdChildRole role,
                              GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdChild *child;

    if (bd_node_is_ancestor_of(child_node, parent)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Making '%s' a %s child of '%s' would create a cycle",
                    child_node->node_name, name, parent->node_name);
        return NULL;
    }
    child = bd_child_link(parent, child_node, name, role);
    if (!bd_node_refresh_perms(parent, errp)) {
        bd_child_unlink(child);
        bd_child_free(child);
        return NULL;
    }
    if (parent->opened) {
        bd_node_refresh_limits(parent);
    }
    return child;
}

void bd_node_detach_child(BdNode *parent, BdChild *child)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *child_node = bd_node_ref(child->node);

    if (child_node->inherits_from == parent) {
        child_node->inherits_from = NULL;
    }
    bd_child_unlink(child);
    /* Fewer users can only relax permissions; a failure here would mean
     * a protocol driver could not drop a lock, which it logs itself. */
    bd_node_refresh_perms(child_node, NULL);
    bd_child_free(child);
    bd_node_unref(child_node);
    if (parent->opened) {
        bd_node_refresh_limits(parent);
    }
}

/* Children opened from options are opened inside the open of their parent
 * (nested, on the main thread).  An image whose header names itself or an
 * ancestor as its backing file would nest without end, each level holding
 * its caches: the depth bounds it, far above any real chain. */
#define BD_NESTED_OPEN_MAX 256
static int nested_opens;

BdChild *bd_node_open_child(BdNode *parent, GVariant *ref, const char *name,
                            BdChildRole role, gboolean allow_none,
                            GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(BdNode) child_node = NULL;
    BdChild *child;

    if (!ref || bd_variant_is_null(ref)) {
        if (!allow_none) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "A block device must be specified for \"%s\"", name);
        }
        return NULL;
    }
    if (g_variant_is_of_type(ref, G_VARIANT_TYPE_STRING)) {
        const char *ref_name = g_variant_get_string(ref, NULL);

        if (allow_none && role == BD_CHILD_COW && !*ref_name) {
            /* What keyval's 'backing=' gives; QEMU takes it as null. */
            g_warning("Use of \"%s\": \"\" is deprecated; use \"%s\": "
                      "null instead", name, name);
            return NULL;
        }
        BdNode *found = bd_node_find(ref_name);
        if (!found) {
            /* QEMU looks the reference up as a device name too. */
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot find device='%s' nor node-name='%s'", ref_name,
                        ref_name);
            return NULL;
        }
        child_node = bd_node_ref(found);
    } else {
        if (nested_opens >= BD_NESTED_OPEN_MAX) {
            const char *file = NULL;

            if (g_variant_is_of_type(ref, G_VARIANT_TYPE_VARDICT)) {
                g_variant_lookup(ref, "filename", "&s", &file);
            }
            g_set_error(errp, BD_ERROR, BD_ERROR_CHAIN_LOOP,
                        "A chain of more than %d images, each opened by "
                        "the one before (the last one '%s'): its backing "
                        "files loop or it is too long", BD_NESTED_OPEN_MAX,
                        file ? file : name);
            return NULL;
        }
        nested_opens++;
        child_node = bd_node_open(bd_child_inherit_options(parent, ref, role),
                                  errp);
        nested_opens--;
        if (!child_node) {
            return NULL;
        }
        child_node->inherits_from = parent;
        child_node->explicit_options = g_variant_ref(ref);
    }
    child = bd_node_attach_child(parent, child_node, name, role, errp);
    return child;
}

/* Point the edge 'c' from 'from' at 'to' (references: the caller). */
static void move_edge(BdChild *c, BdNode *from, BdNode *to)
{
    from->parents = g_list_remove(from->parents, c);
    c->node = to;
    to->parents = g_list_prepend(to->parents, c);
}

gboolean bd_node_replace(BdNode *from, BdNode *to, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) moved = g_ptr_array_new();
    g_autoptr(GPtrArray) starts = g_ptr_array_new();
    BdDrainSection *drain;
    gboolean ok;

    for (GList *l = from->parents; l; l = l->next) {
        BdChild *c = l->data;
        /* Edges from 'to' and from below it stay (QEMU's
         * should_update_child): a fleecing target whose backing is the
         * source keeps reading it directly, or 'to' would become its own
         * descendant. */
        if (c->parent && bd_node_is_ancestor_of(to, c->parent)) {
            continue;
        }
        if (c->frozen) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot change frozen '%s' link from '%s' to '%s'",
                        c->name, c->parent ? c->parent->node_name : "",
                        from->node_name);
            return FALSE;
        }
        g_ptr_array_add(moved, c);
    }
    bd_node_ref(from);
    drain = bd_drained_begin(from);
    for (guint i = 0; i < moved->len; i++) {
        move_edge(moved->pdata[i], from, to);
    }
    g_ptr_array_add(starts, to);
    g_ptr_array_add(starts, from);
    ok = bd_nodes_refresh_perms(starts, errp);
    if (ok) {
        for (guint i = 0; i < moved->len; i++) {
            BdChild *c = moved->pdata[i];
            bd_node_ref(to);
            bd_node_unref(from);
            if (c->parent) {
                bd_node_refresh_limits(c->parent);
            }
        }
    } else {
        for (guint i = 0; i < moved->len; i++) {
            move_edge(moved->pdata[i], to, from);
        }
        bd_nodes_refresh_perms(starts, NULL);
    }
    bd_drained_end(drain);
    bd_node_unref(from);
    return ok;
}

gboolean bd_node_append(BdNode *top, BdNode *base, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) moved = g_ptr_array_new();
    g_autoptr(GPtrArray) starts = g_ptr_array_new();
    BdDrainSection *drain;
    BdChild *backing;
    gboolean ok;

    if (bd_node_is_ancestor_of(base, top)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Making '%s' a backing child of '%s' would create a "
                    "cycle", base->node_name, top->node_name);
        return FALSE;
    }
    for (GList *l = base->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent == top) {
            continue;
        }
        if (c->frozen) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot change frozen '%s' link from '%s' to '%s'",
                        c->name, c->parent ? c->parent->node_name : "",
                        base->node_name);
            return FALSE;
        }
        g_ptr_array_add(moved, c);
    }
    bd_node_ref(base);
    drain = bd_drained_begin(base);
    /* One permission update for the new backing edge and the moved
     * parents: the writers of 'base' become writers of 'top' at the same
     * time as 'top' starts to need 'base' unchanged. */
    backing = bd_child_link(top, base, "backing", BD_CHILD_COW);
    for (guint i = 0; i < moved->len; i++) {
        move_edge(moved->pdata[i], base, top);
    }
    g_ptr_array_add(starts, top);
    g_ptr_array_add(starts, base);
    ok = bd_nodes_refresh_perms(starts, errp);
    if (ok) {
        for (guint i = 0; i < moved->len; i++) {
            BdChild *c = moved->pdata[i];
            bd_node_ref(top);
            bd_node_unref(base);
            if (c->parent) {
                bd_node_refresh_limits(c->parent);
            }
        }
        if (top->opened) {
            bd_node_refresh_limits(top);
        }
    } else {
        for (guint i = 0; i < moved->len; i++) {
            move_edge(moved->pdata[i], top, base);
        }
        bd_child_unlink(backing);
        bd_child_free(backing);
        bd_nodes_refresh_perms(starts, NULL);
    }
    bd_drained_end(drain);
    bd_node_unref(base);
    return ok;
}

BdChild *bd_node_filtered_child(BdNode *node)
{
    if (!node->drv || !node->drv->is_filter) {
        return NULL;
    }
    if (node->file || node->backing) {
        return node->file ? node->file : node->backing;
    }
    /* Filters whose child has another name (blkdebug's 'image'). */
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (c->role & BD_CHILD_FILTERED) {
            return c;
        }
    }
    return NULL;
}

BdNode *bd_node_backing(BdNode *node)
{
    return node->backing ? node->backing->node : NULL;
}

void bd_node_set_size(BdNode *node, uint64_t size)
{
    __atomic_store_n(&node->size, size, __ATOMIC_RELEASE);
}

char *bd_child_parent_desc(const BdChild *child)
{
    BD_GLOBAL_STATE_CODE();

    if (child->parent) {
        return g_strdup_printf("node '%s'", child->parent->node_name);
    }
    return bd_entry_owner_desc(child->entry);
}

/* --- blockdev-del --- */

static BdChild *node_backing_parent(BdNode *node)
{
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent && c->parent->backing == c) {
            return c;
        }
    }
    return NULL;
}

gboolean bd_node_monitor_del(const char *node_name, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *node = bd_node_find(node_name);
    BdChild *backing_parent;

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to find node with node-name='%s'", node_name);
        return FALSE;
    }
    /* QEMU's order: a BlockBackend, then the op blockers (a job's,
     * added last, shadows a backing link's), then ownership and
     * references. */
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (!c->parent && !bd_entry_is_job_link(c->entry)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node %s is in use", node_name);
            return FALSE;
        }
    }
    if (node->claimed_by) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s' is busy: block device is in use by block "
                    "job: %s", node_name, node->claimed_by);
        return FALSE;
    }
    backing_parent = node_backing_parent(node);
    if (backing_parent) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s' is busy: node is used as backing hd of '%s'",
                    node_name, backing_parent->parent->node_name);
        return FALSE;
    }
    if (!node->monitor_owned) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node %s is not owned by the monitor", node_name);
        return FALSE;
    }
    if (node->refcnt > 1) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block device %s is in use", node_name);
        return FALSE;
    }
    node->monitor_owned = FALSE;
    bd_node_unref(node);
    return TRUE;
}

/* The largest image size, as QEMU's BDRV_MAX_LENGTH: INT64_MAX aligned
 * down to 1 GiB. */
#define BD_MAX_LENGTH ((gint64)(G_MAXINT64 - ((1 << 30) - 1)))

gboolean bd_node_resize(BdNode *node, uint64_t size, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdDrainSection *drained;
    BdEntry *entry;
    GError *err = NULL;
    int ret;

    /* In QEMU's order: the handle's resize permission first (a conflict
     * with the node's users), then the size, the node's read-only
     * state and the driver's own checks.  Exports see the new size on
     * their next request, never mid-way; our own handle, attached
     * inside the section, is not quiesced. */
    drained = bd_drained_begin(node);
    entry = bd_entry_new(node, NULL, BD_PERM_RESIZE, BD_PERM_ALL, errp);
    if (!entry) {
        bd_drained_end(drained);
        return FALSE;
    }
    if (size > BD_MAX_LENGTH) {
        g_set_error(&err, BD_ERROR, BD_ERROR_GENERIC,
                    "offset(%" G_GINT64_FORMAT ") exceeds maximum(%"
                    G_GINT64_FORMAT ")", (gint64)size, BD_MAX_LENGTH);
    } else if (node->read_only) {
        g_set_error(&err, BD_ERROR, BD_ERROR_GENERIC, "Image is read-only");
    } else if (!node->drv->truncate) {
        g_set_error(&err, BD_ERROR, BD_ERROR_GENERIC,
                    "Image format driver does not support resize");
    } else if (node->drv->resize_check) {
        node->drv->resize_check(node, size, &err);
    }
    ret = err ? 0 : bd_entry_truncate(entry, size);
    bd_entry_free(entry);
    bd_drained_end(drained);
    if (err) {
        g_propagate_error(errp, err);
        return FALSE;
    }
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not resize node '%s': %s", node->node_name,
                    g_strerror(-ret));
        return FALSE;
    }
    return TRUE;
}

void bd_node_close_all(void)
{
    BD_GLOBAL_STATE_CODE();

    /* Drop monitor references newest first, so that users go before the
     * nodes they use; a node still referenced goes with its last user. */
    for (gint i = nodes ? (gint)nodes->len - 1 : -1; i >= 0; i--) {
        if (i >= (gint)nodes->len) {
            continue;
        }
        BdNode *node = nodes->pdata[i];
        if (node->monitor_owned) {
            node->monitor_owned = FALSE;
            bd_node_flush(node);
            bd_node_unref(node);
        }
    }
}

void bd_snapshot_info_free(BdSnapshotInfo *sn)
{
    if (sn) {
        g_free(sn->id);
        g_free(sn->name);
        g_free(sn);
    }
}
