/* SPDX-License-Identifier: MIT */
/* Permissions: compute what every edge needs and shares, check all of
 * the affected graph for conflicts, then commit all or nothing.
 *
 * Thread model: main thread only, as every graph change.
 *
 * An update runs in two passes over the nodes below the changed one, in
 * topological order (every parent before its children):
 *   check:  cumulative perms from the parents' tentative edge values,
 *           pairwise conflicts between parents, the read-only rule, the
 *           protocol driver's external check (locks), then the
 *           tentative values of the node's own child edges;
 *   commit: tentative -> current, driver set_perm;  or
 *   abort:  tentative := current, driver abort_perm.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <string.h>
#include "graph/main-thread.h"
#include "graph/node.h"
#include "graph/trace.h"

char *bd_perm_names(uint64_t perm)
{
    static const struct { uint64_t bit; const char *name; } names[] = {
        { BD_PERM_CONSISTENT_READ, "consistent read" },
        { BD_PERM_WRITE, "write" },
        { BD_PERM_WRITE_UNCHANGED, "write unchanged" },
        { BD_PERM_RESIZE, "resize" },
    };
    GString *s = g_string_new(NULL);

    for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
        if (perm & names[i].bit) {
            g_string_append_printf(s, "%s%s", s->len ? ", " : "",
                                   names[i].name);
        }
    }
    return g_string_free(s, FALSE);
}

/* The read-only state that counts for the check: during a reopen, the
 * one the node is about to get. */
static gboolean node_effective_read_only(const BdNode *node)
{
    return node->reopen_pending ? node->reopen_read_only : node->read_only;
}

void bd_default_child_perm(BdNode *node, BdChild *child, BdChildRole role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared)
{
    BD_GLOBAL_STATE_CODE();

    /* Filters pass everything through, as QEMU's default. */
    uint64_t p = parent_perm & BD_PERM_ALL;
    uint64_t s = parent_shared & BD_PERM_ALL;

    if (role & BD_CHILD_COW) {
        /* Backing files are only read, consistently if the parent needs
         * it; they may change under a parent that accepts changes. */
        p &= BD_PERM_CONSISTENT_READ;
        s = (s & BD_PERM_WRITE) ? BD_PERM_WRITE | BD_PERM_RESIZE : 0;
        s |= BD_PERM_CONSISTENT_READ | BD_PERM_WRITE_UNCHANGED;
    } else if (role & (BD_CHILD_METADATA | BD_CHILD_DATA)) {
        if (role & BD_CHILD_METADATA) {
            /* A format touches metadata even when nobody writes data. */
            if (!node_effective_read_only(node)) {
                p |= BD_PERM_WRITE | BD_PERM_RESIZE;
            }
            p |= BD_PERM_CONSISTENT_READ;
            s &= ~(uint64_t)(BD_PERM_WRITE | BD_PERM_RESIZE);
        }
        if (role & BD_CHILD_DATA) {
            /* The format may rely on the size; it may write beyond EOF. */
            s &= ~(uint64_t)BD_PERM_RESIZE;
            if (p & BD_PERM_WRITE_UNCHANGED) {
                p |= BD_PERM_WRITE;
            }
            if (p & BD_PERM_WRITE) {
                p |= BD_PERM_RESIZE;
            }
        }
    }
    *perm = p;
    *shared = s;
}

/* Post-order DFS; reversed it lists parents before children. */
static void collect_post_order(BdNode *node, GHashTable *seen,
                               GPtrArray *out)
{
    if (!g_hash_table_add(seen, node)) {
        return;
    }
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        collect_post_order(c->node, seen, out);
    }
    g_ptr_array_add(out, node);
}

static gboolean check_parent_pair(BdNode *node, BdChild *a, BdChild *b,
                                  GError **errp)
{
    /* 'a' must share everything 'b' requires. */
    uint64_t conflict = b->new_perm & ~a->new_shared;
    g_autofree char *perms = NULL;
    g_autofree char *b_desc = NULL;
    g_autofree char *a_desc = NULL;

    if (!conflict) {
        return TRUE;
    }
    perms = bd_perm_names(conflict);
    b_desc = bd_child_parent_desc(b);
    a_desc = bd_child_parent_desc(a);
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Permission conflict on node '%s': permissions '%s' are "
                "both required by %s (uses node '%s' as '%s' child) and "
                "unshared by %s (uses node '%s' as '%s' child).",
                node->node_name, perms, b_desc, node->node_name, b->name,
                a_desc, node->node_name, a->name);
    return FALSE;
}

static gboolean check_node(BdNode *node, uint64_t *cum_perm,
                           uint64_t *cum_shared, GError **errp)
{
    uint64_t perm = 0, shared = BD_PERM_ALL;

    for (GList *a = node->parents; a; a = a->next) {
        BdChild *ca = a->data;
        perm |= ca->new_perm;
        shared &= ca->new_shared;
        for (GList *b = node->parents; b; b = b->next) {
            if (a != b && !check_parent_pair(node, ca, b->data, errp)) {
                return FALSE;
            }
        }
    }
    if ((perm & (BD_PERM_WRITE | BD_PERM_WRITE_UNCHANGED)) &&
        node_effective_read_only(node)) {
        if (node->read_only) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Block node is read-only");
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Read-only block node '%s' cannot support "
                        "read-write users", node->node_name);
        }
        return FALSE;
    }
    *cum_perm = perm;
    *cum_shared = shared;
    return TRUE;
}

static void compute_child_edges(BdNode *node, uint64_t perm, uint64_t shared)
{
    for (guint i = 0; i < node->children->len; i++) {
        BdChild *c = g_ptr_array_index(node->children, i);
        if (node->drv && node->drv->child_perm) {
            node->drv->child_perm(node, c, c->role, perm, shared,
                                  &c->new_perm, &c->new_shared);
        } else {
            bd_default_child_perm(node, c, c->role, perm, shared,
                                  &c->new_perm, &c->new_shared);
        }
        if (node->force_share) {
            c->new_shared = BD_PERM_ALL;
        }
    }
}

gboolean bd_node_refresh_perms(BdNode *start, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) starts = g_ptr_array_new();

    g_ptr_array_add(starts, start);
    return bd_nodes_refresh_perms(starts, errp);
}

gboolean bd_nodes_refresh_perms(GPtrArray *starts, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    g_autoptr(GPtrArray) post = g_ptr_array_new();
    g_autofree uint64_t *perm = NULL;
    g_autofree uint64_t *shared = NULL;
    guint n, checked = 0;
    gboolean ok = TRUE;

    /* One DFS over all starts: the reversed post-order of the union is
     * still parents before children. */
    for (guint i = 0; i < starts->len; i++) {
        collect_post_order(starts->pdata[i], seen, post);
    }
    n = post->len;
    perm = g_new0(uint64_t, n);
    shared = g_new0(uint64_t, n);

    /* Check pass, parents first. */
    for (guint k = 0; k < n && ok; k++) {
        BdNode *node = g_ptr_array_index(post, n - 1 - k);
        ok = check_node(node, &perm[k], &shared[k], errp);
        if (ok && node->drv && node->drv->check_perm) {
            uint64_t ext_shared = node->force_share ? BD_PERM_ALL : shared[k];
            ok = node->drv->check_perm(node, perm[k], ext_shared, errp);
        }
        if (ok) {
            checked++;
            compute_child_edges(node, perm[k], shared[k]);
        }
    }

    for (guint k = 0; k < n; k++) {
        BdNode *node = g_ptr_array_index(post, n - 1 - k);
        if (ok) {
            bd_perm_store(&node->cum_perm, perm[k]);
            bd_perm_store(&node->cum_shared, shared[k]);
            if (node->drv && node->drv->set_perm) {
                node->drv->set_perm(node, perm[k], node->force_share ?
                                    BD_PERM_ALL : shared[k]);
            }
        } else if (k < checked && node->drv && node->drv->abort_perm) {
            node->drv->abort_perm(node);
        }
        for (guint i = 0; i < node->children->len; i++) {
            BdChild *c = g_ptr_array_index(node->children, i);
            if (ok) {
                bd_perm_store(&c->perm, c->new_perm);
                bd_perm_store(&c->shared, c->new_shared);
            } else {
                c->new_perm = c->perm;
                c->new_shared = c->shared;
            }
        }
    }
    /* QEMU's bdrv_refresh_perms: the nodes looked at, and the refusal. */
    BD_TRACE(BD_TRACE_BDRV_REFRESH_PERMS, "start=%s nodes=%u %s%s",
             starts->len ? ((BdNode *)starts->pdata[0])->node_name : "",
             n, ok ? "ok" : "error=",
             ok ? "" : errp && *errp ? (*errp)->message : "");
    /* Edges from entries into the start node are the caller's: it set
     * their tentative values and resets them when we fail. */
    return ok;
}
