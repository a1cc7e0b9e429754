/* SPDX-License-Identifier: MIT */
/* The 'quorum' driver (QEMU's): N copies of one image; reads are voted on, writes go to all.
 *
 * read-pattern=quorum (the default) reads every child and returns the
 * version at least vote-threshold children agree on, else fails with EIO;
 * with rewrite-corrupted the losers are rewritten with the winner.
 * read-pattern=fifo reads the children in order until one succeeds.
 * A write (or write-zeroes) goes to every child and succeeds when at
 * least vote-threshold children succeed; otherwise the most common error
 * is returned.  blkverify=on (two children, threshold 2): a mismatch is
 * logged and fails with EIO (QEMU exits).
 *
 * Children are named "children.0", "children.1", ... as in QEMU.
 *
 * Thread model: open/close/child_perm on the main thread; the data
 * callbacks on any thread, concurrently.  No state changes after open.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <stdio.h>
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"
#include "formats/json-filename.h"

typedef struct {
    GPtrArray *children;     /* BdChild *, in option order */
    int64_t threshold;
    gboolean is_blkverify;
    gboolean rewrite_corrupted;
    gboolean fifo;
    guint next_child_index;  /* "children.<n>" of the next added child */
} QuorumState;

typedef enum { QUORUM_READ_PATTERN_QUORUM, QUORUM_READ_PATTERN_FIFO }
    QuorumReadPattern;

static const char *const read_pattern_values[] = {
    [QUORUM_READ_PATTERN_QUORUM] = "quorum",
    [QUORUM_READ_PATTERN_FIFO] = "fifo",
    NULL };
static const BdSchemaType read_pattern_type = {
    .name = "QuorumReadPattern", .kind = BD_SCHEMA_ENUM,
    .enum_values = read_pattern_values };
static const BdSchemaType children_type = {
    .name = "[BlockdevRef]", .kind = BD_SCHEMA_LIST,
    .element = &bd_schema_blockdev_ref };

typedef struct {
    gboolean blkverify;
    GVariant *children;
    gint64 vote_threshold;
    gboolean rewrite_corrupted;
    QuorumReadPattern read_pattern;
} QuorumOptions;

/* QAPI BlockdevOptionsQuorum. */
static const BdSchemaField quorum_options[] = {
    { "blkverify", &bd_schema_bool, TRUE, BD_AT(QuorumOptions, blkverify),
      .flags = BD_FIELD_STRONG },
    { "children", &children_type, FALSE, BD_AT(QuorumOptions, children) },
    { "vote-threshold", &bd_schema_int, FALSE,
      BD_AT(QuorumOptions, vote_threshold), .flags = BD_FIELD_STRONG },
    { "rewrite-corrupted", &bd_schema_bool, TRUE,
      BD_AT(QuorumOptions, rewrite_corrupted), .flags = BD_FIELD_STRONG },
    { "read-pattern", &read_pattern_type, TRUE,
      BD_AT(QuorumOptions, read_pattern),
      .def.i = QUORUM_READ_PATTERN_QUORUM, .flags = BD_FIELD_STRONG },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(QuorumOptions, quorum_options)

static BdChild *child_at(QuorumState *s, guint i)
{
    return g_ptr_array_index(s->children, i);
}

/* QEMU's quorum_vote_error: the most common error (the first on ties). */
static int most_common_error(const int *rets, guint n)
{
    int best = -EIO, best_count = 0;

    for (guint i = 0; i < n; i++) {
        int count = 0;
        if (rets[i] >= 0) {
            continue;
        }
        for (guint j = 0; j < n; j++) {
            count += rets[j] == rets[i];
        }
        if (count > best_count) {
            best = rets[i];
            best_count = count;
        }
    }
    return best;
}

/* Vote on the successful reads in bufs[]: the index of a version held by
 * at least 'threshold' children, or -1. */
static int vote(QuorumState *s, uint8_t **bufs, const int *rets,
                uint64_t bytes, int *winner_votes)
{
    guint n = s->children->len;
    int winner = -1, best = 0;

    for (guint i = 0; i < n; i++) {
        int votes = 0;
        if (rets[i] < 0) {
            continue;
        }
        for (guint j = 0; j < n; j++) {
            votes += rets[j] >= 0 && memcmp(bufs[i], bufs[j], bytes) == 0;
        }
        if (votes > best) {
            best = votes;
            winner = (int)i;
        }
    }
    *winner_votes = best;
    return best >= s->threshold ? winner : -1;
}

static int quorum_read_fifo(QuorumState *s, uint64_t offset, uint64_t bytes,
                            void *buf, int flags)
{
    int ret = -EIO;

    for (guint i = 0; i < s->children->len; i++) {
        ret = bd_child_pread(child_at(s, i), offset, bytes, buf, flags);
        if (ret >= 0) {
            return 0;
        }
    }
    return ret;
}

static int quorum_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                        void *buf, int flags)
{
    QuorumState *s = node->opaque;
    guint n = s->children->len;
    g_autofree int *rets = g_new0(int, n);
    g_autofree uint8_t **bufs = g_new0(uint8_t *, n);
    int winner, votes, ret = 0, ok = 0;

    if (s->fifo) {
        return quorum_read_fifo(s, offset, bytes, buf, flags);
    }
    for (guint i = 0; i < n; i++) {
        bufs[i] = g_try_malloc(bytes ? bytes : 1);
        rets[i] = bufs[i] ? bd_child_pread(child_at(s, i), offset, bytes,
                                            bufs[i], flags) : -ENOMEM;
        ok += rets[i] >= 0;
    }
    if (ok < s->threshold) {
        ret = most_common_error(rets, n);
        goto out;
    }
    winner = vote(s, bufs, rets, bytes, &votes);
    if (winner < 0 || (s->is_blkverify && votes != (int)n)) {
        g_warning("node '%s': quorum: no version of offset=%" PRIu64
                  " bytes=%" PRIu64 " reaches vote-threshold %" PRId64,
                  node->node_name, offset, bytes, s->threshold);
        ret = -EIO;
        goto out;
    }
    memcpy(buf, bufs[winner], bytes);
    for (guint i = 0; s->rewrite_corrupted && i < n; i++) {
        if (rets[i] >= 0 && memcmp(bufs[i], bufs[winner], bytes) != 0) {
            /* Best effort, as QEMU: a failed rewrite is not the read's. */
            bd_child_pwrite(child_at(s, i), offset, bytes, bufs[winner], 0);
        }
    }
out:
    for (guint i = 0; i < n; i++) {
        g_free(bufs[i]);
    }
    return ret;
}

/* A write's per-child results: success with vote-threshold successes. */
static int write_result(QuorumState *s, const int *rets)
{
    guint n = s->children->len;
    int ok = 0;

    for (guint i = 0; i < n; i++) {
        ok += rets[i] >= 0;
    }
    return ok >= s->threshold ? 0 : most_common_error(rets, n);
}

static int quorum_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                         const void *buf, int flags)
{
    QuorumState *s = node->opaque;
    g_autofree int *rets = g_new0(int, s->children->len);

    for (guint i = 0; i < s->children->len; i++) {
        rets[i] = bd_child_pwrite(child_at(s, i), offset, bytes, buf, flags);
    }
    return write_result(s, rets);
}

static int quorum_pwrite_zeroes(BdNode *node, uint64_t offset,
                                uint64_t bytes, int flags)
{
    QuorumState *s = node->opaque;
    g_autofree int *rets = g_new0(int, s->children->len);

    for (guint i = 0; i < s->children->len; i++) {
        rets[i] = bd_child_pwrite_zeroes(child_at(s, i), offset, bytes,
                                         flags);
    }
    return write_result(s, rets);
}

/* The graph flushes every written child after this. */
static int quorum_flush(BdNode *node)
{
    return 0;
}

/* QEMU's quorum_child_perm: the children must stay identical, so
 * nobody else may write or resize them. */
static void quorum_child_perm(BdNode *node, BdChild *child, BdChildRole role,
                              uint64_t parent_perm, uint64_t parent_shared,
                              uint64_t *perm, uint64_t *shared)
{
    QuorumState *s = node->opaque;

    *perm = parent_perm & BD_PERM_ALL;
    if (s && s->rewrite_corrupted) {
        *perm |= BD_PERM_WRITE;
    }
    *shared = (parent_shared & (BD_PERM_CONSISTENT_READ |
                                BD_PERM_WRITE_UNCHANGED)) |
              BD_PERM_CONSISTENT_READ | BD_PERM_WRITE_UNCHANGED;
}

static gboolean quorum_check_options(QuorumState *s, guint n_children,
                                     GError **errp)
{
    if (n_children < 1) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Number of provided children must be 1 or more");
        return FALSE;
    }
    if (s->threshold < 1) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'vote-threshold' expects a value >= 1");
        return FALSE;
    }
    if (s->threshold > (int64_t)n_children) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "threshold may not exceed children count");
        return FALSE;
    }
    if (s->is_blkverify && (n_children != 2 || s->threshold != 2)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "blkverify=on can only be set if there are exactly two "
                    "files and vote-threshold is 2");
        return FALSE;
    }
    if (s->rewrite_corrupted && s->is_blkverify) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "rewrite-corrupted=on cannot be used with blkverify=on");
        return FALSE;
    }
    return TRUE;
}

/* Attach element 'i' of the 'children' list as child "children.<i>". */
static BdChild *quorum_open_child(BdNode *node, GVariant *ref, guint i,
                                  GError **errp)
{
    g_autofree char *name = g_strdup_printf("children.%u", i);

    return bd_node_open_child(node, ref, name, BD_CHILD_DATA, FALSE, errp);
}

/* QEMU's full_open_options: driver, the children as a list, and the
 * strong options as given. */
static char *quorum_filename(BdNode *node, GVariant *options)
{
    QuorumState *s = node->opaque;
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(NULL);
    g_auto(GVariantBuilder) children = G_VARIANT_BUILDER_INIT(
        G_VARIANT_TYPE("av"));

    for (guint i = 0; i < s->children->len; i++) {
        g_variant_builder_add(&children, "v",
                              bd_formats_full_options(child_at(s, i)->node));
    }
    g_variant_dict_insert(&d, "driver", "s", "quorum");
    g_variant_dict_insert_value(&d, "children",
                                g_variant_builder_end(&children));
    bd_formats_add_strong(&d, quorum_options, options);
    return bd_formats_json_of(g_variant_dict_end(&d));
}

static void quorum_close(BdNode *node)
{
    QuorumState *s = node->opaque;

    if (!s) {
        return;
    }
    /* The graph detaches the children; only our list goes. */
    g_ptr_array_unref(s->children);
    g_free(s);
    node->opaque = NULL;
}

static gboolean quorum_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(QuorumOptions) o = { 0 };
    GVariant *list;
    QuorumState *s = g_new0(QuorumState, 1);
    guint n;
    uint64_t size = 0;

    bd_schema_decode(quorum_options, options, &o);
    list = o.children;
    n = list ? (guint)g_variant_n_children(list) : 0;
    node->opaque = s;
    s->children = g_ptr_array_new();
    s->threshold = o.vote_threshold;
    s->is_blkverify = o.blkverify;
    s->rewrite_corrupted = o.rewrite_corrupted;
    s->fifo = o.read_pattern == QUORUM_READ_PATTERN_FIFO;
    if (!quorum_check_options(s, n, errp)) {
        goto fail;
    }
    for (guint i = 0; i < n; i++) {
        g_autoptr(GVariant) elem = g_variant_get_child_value(list, i);
        g_autoptr(GVariant) ref = g_variant_get_variant(elem);
        BdChild *c = quorum_open_child(node, ref, i, errp);

        if (!c) {
            goto fail;
        }
        g_ptr_array_add(s->children, c);
        /* As QEMU's quorum_getlength: the children must agree. */
        if (i && (uint64_t)bd_node_getlength(c->node) != size) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Could not refresh total sector count: %s",
                        g_strerror(EIO));
            goto fail;
        }
        size = (uint64_t)bd_node_getlength(c->node);
    }
    s->next_child_index = n;
    bd_node_set_size(node, size);
    node->filename = quorum_filename(node, options);
    return TRUE;

fail:
    quorum_close(node);
    return FALSE;
}

/* x-blockdev-change: QEMU's quorum_add_child / quorum_del_child.  The
 * children list changes only while the node is drained, so no request
 * sees it half-updated. */
static void quorum_refresh_filename(BdNode *node)
{
    g_free(node->filename);
    node->filename = quorum_filename(node, node->options);
}

static gboolean quorum_add_child(BdNode *node, BdNode *child_node,
                                 GError **errp)
{
    QuorumState *s = node->opaque;
    g_autofree char *name = NULL;
    BdDrainSection *drain;
    BdChild *c;

    if (s->is_blkverify) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot add a child to a quorum in blkverify mode");
        return FALSE;
    }
    if (s->next_child_index == G_MAXUINT) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, "Too many children");
        return FALSE;
    }
    name = g_strdup_printf("children.%u", s->next_child_index);
    drain = bd_drained_begin(node);
    c = bd_node_attach_child(node, child_node, name, BD_CHILD_DATA, errp);
    if (c) {
        s->next_child_index++;
        g_ptr_array_add(s->children, c);
        quorum_refresh_filename(node);
    }
    bd_drained_end(drain);
    return c != NULL;
}

static gboolean quorum_del_child(BdNode *node, BdChild *child,
                                 GError **errp)
{
    QuorumState *s = node->opaque;
    BdDrainSection *drain;
    guint index;

    if ((int64_t)s->children->len <= s->threshold) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "The number of children cannot be lower than the vote "
                    "threshold %" PRId64, s->threshold);
        return FALSE;
    }
    /* The last index added is given out again (QEMU does the same). */
    if (sscanf(child->name, "children.%u", &index) == 1 &&
        index + 1 == s->next_child_index) {
        s->next_child_index--;
    }
    drain = bd_drained_begin(node);
    g_ptr_array_remove(s->children, child);
    bd_node_detach_child(node, child);
    quorum_refresh_filename(node);
    bd_drained_end(drain);
    return TRUE;
}

const BdDriver bd_quorum_driver = {
    .name = "quorum",
    .options = quorum_options,
    .open = quorum_open,
    .close = quorum_close,
    .child_perm = quorum_child_perm,
    .pread = quorum_pread,
    .pwrite = quorum_pwrite,
    .pwrite_zeroes = quorum_pwrite_zeroes,
    .flush = quorum_flush,
    .add_child = quorum_add_child,
    .del_child = quorum_del_child,
};
