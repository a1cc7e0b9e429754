/* SPDX-License-Identifier: MIT */
/* Checkpoints: the chain read from a node's bitmap names, its
 * usability, the changes since a checkpoint, and creating and deleting
 * them in undoable steps.  The rules are in graph/checkpoint.h.
 *
 * Thread model: main thread only; guest writes record into the bitmaps
 * meanwhile (graph/bitmap.c).
 */
#define G_LOG_DOMAIN "blockd-graph"

#include <string.h>
#include "graph/checkpoint.h"
#include "graph/events.h"
#include "graph/main-thread.h"

/* Per node: the bitmaps whose checkpoints were reported unusable, so
 * that each is reported once while the node is open. */
struct BdNodeCheckpoints {
    GHashTable *reported;      /* bitmap names */
};

/* One checkpoint of the chain, as read from its bitmap. */
typedef struct {
    BdDirtyBitmap *bm;         /* borrowed */
    const char *name;          /* inside the bitmap's name */
    guint64 seq;
    gint64 created;
    /* The nearest inconsistent bitmap at or after this checkpoint: what
     * makes it unusable; NULL when usable. */
    BdDirtyBitmap *broken_by;
} Link;

void bd_checkpoint_info_free(BdCheckpointInfo *info)
{
    if (info) {
        g_free(info->name);
        g_free(info->bitmap);
        g_free(info);
    }
}

/* --- names --- */

/* "blockd-checkpoint.<seq>.<created>.<name>" -> its parts. */
static gboolean parse_bitmap_name(const char *bitmap, guint64 *seq,
                                  gint64 *created, const char **name)
{
    const char *p;
    char *end;
    guint64 time;

    if (!bitmap || !g_str_has_prefix(bitmap, BD_CHECKPOINT_BITMAP_PREFIX)) {
        return FALSE;
    }
    p = bitmap + strlen(BD_CHECKPOINT_BITMAP_PREFIX);
    if (!g_ascii_isdigit(*p)) {
        return FALSE;
    }
    *seq = g_ascii_strtoull(p, &end, 10);
    if (*end != '.' || !g_ascii_isdigit(end[1])) {
        return FALSE;
    }
    time = g_ascii_strtoull(end + 1, &end, 10);
    *created = (gint64)MIN(time, (guint64)G_MAXINT64);
    if (*end != '.' || !end[1]) {
        return FALSE;
    }
    *name = end + 1;
    return TRUE;
}

gboolean bd_checkpoint_owns_bitmap(const BdDirtyBitmap *bm,
                                   const char **checkpoint)
{
    guint64 seq;
    gint64 created;
    const char *name;

    if (!bd_dirty_bitmap_persistent(bm) ||
        !parse_bitmap_name(bd_dirty_bitmap_name(bm), &seq, &created, &name)) {
        return FALSE;
    }
    if (checkpoint) {
        *checkpoint = name;
    }
    return TRUE;
}

/* Any text a bitmap name can carry, without control characters (the
 * name shows in logs, QMP and NBD context names). */
static gboolean check_name(const char *name, GError **errp)
{
    if (!*name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Checkpoint name cannot be empty");
        return FALSE;
    }
    for (const char *p = name; *p; p++) {
        if ((guchar)*p < 0x20 || *p == 0x7f) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Checkpoint name must not contain control "
                        "characters");
            return FALSE;
        }
    }
    return TRUE;
}

/* --- the chain --- */

static int link_compare(gconstpointer pa, gconstpointer pb)
{
    const Link *a = *(Link *const *)pa, *b = *(Link *const *)pb;

    if (a->seq != b->seq) {
        return a->seq < b->seq ? -1 : 1;
    }
    if (a->created != b->created) {
        return a->created < b->created ? -1 : 1;
    }
    return strcmp(a->name, b->name);
}

/* The checkpoint bitmaps of the node, oldest first; bitmaps being
 * removed by a transaction (skip_store) are no longer part of it. */
static GPtrArray *chain_read(BdNode *node)
{
    g_autoptr(GPtrArray) list = bd_dirty_bitmap_list(node);
    GPtrArray *chain = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; i < list->len; i++) {
        BdDirtyBitmap *bm = list->pdata[i];
        Link l = { .bm = bm };

        if (bd_dirty_bitmap_skip_store(bm) ||
            !bd_checkpoint_owns_bitmap(bm, NULL)) {
            continue;
        }
        parse_bitmap_name(bd_dirty_bitmap_name(bm), &l.seq, &l.created,
                          &l.name);
        g_ptr_array_add(chain, g_memdup2(&l, sizeof(l)));
    }
    g_ptr_array_sort(chain, link_compare);
    return chain;
}

static Link *chain_find(GPtrArray *chain, const char *name, guint *index)
{
    for (guint i = 0; i < chain->len; i++) {
        Link *l = chain->pdata[i];
        if (strcmp(l->name, name) == 0) {
            if (index) {
                *index = i;
            }
            return l;
        }
    }
    return NULL;
}

static Link *chain_newest(GPtrArray *chain)
{
    return chain->len ? chain->pdata[chain->len - 1] : NULL;
}

/* The newest bitmap must record every write: one that does not (it was
 * disabled outside blockd) has missed writes, like a crashed one. */
static void check_newest_records(BdNode *node, GPtrArray *chain)
{
    Link *newest = chain_newest(chain);

    if (newest && !bd_dirty_bitmap_inconsistent(newest->bm) &&
        !bd_dirty_bitmap_recording(newest->bm)) {
        g_warning("node '%s': checkpoint '%s': its bitmap does not record "
                  "writes (disabled outside blockd); marking it "
                  "inconsistent", node->node_name, newest->name);
        bd_dirty_bitmap_set_inconsistent(newest->bm);
    }
}

static void mark_usability(GPtrArray *chain)
{
    BdDirtyBitmap *broken = NULL;

    for (guint i = chain->len; i-- > 0;) {
        Link *l = chain->pdata[i];
        if (bd_dirty_bitmap_inconsistent(l->bm)) {
            broken = l->bm;
        }
        l->broken_by = broken;
    }
}

static struct BdNodeCheckpoints *node_state(BdNode *node)
{
    if (!node->checkpoints) {
        node->checkpoints = g_new0(struct BdNodeCheckpoints, 1);
        node->checkpoints->reported = g_hash_table_new_full(g_str_hash,
                                                            g_str_equal,
                                                            g_free, NULL);
    }
    return node->checkpoints;
}

/* BLOCKD_CHECKPOINT_UNUSABLE for the unusable ones not reported yet. */
static void report_unusable(BdNode *node, GPtrArray *chain)
{
    GHashTable *reported = node_state(node)->reported;
    g_autoptr(GString) text = g_string_new(NULL);
    GVariantBuilder names;
    GVariantBuilder data;

    g_variant_builder_init(&names, G_VARIANT_TYPE_STRING_ARRAY);
    for (guint i = 0; i < chain->len; i++) {
        Link *l = chain->pdata[i];
        const char *bitmap = bd_dirty_bitmap_name(l->bm);

        if (l->broken_by && !g_hash_table_contains(reported, bitmap)) {
            g_hash_table_add(reported, g_strdup(bitmap));
            g_variant_builder_add(&names, "s", l->name);
            g_string_append_printf(text, "%s'%s'", text->len ? ", " : "",
                                   l->name);
        }
    }
    if (!text->len) {
        g_variant_builder_clear(&names);
        return;
    }
    g_message("node '%s': checkpoints not usable (a bitmap was not saved "
              "cleanly): %s", node->node_name, text->str);
    g_variant_builder_init(&data, G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&data, "{sv}", "node",
                          g_variant_new_string(node->node_name));
    g_variant_builder_add(&data, "{sv}", "checkpoints",
                          g_variant_builder_end(&names));
    bd_event_emit(BD_CHECKPOINT_EVENT_UNUSABLE,
                  g_variant_builder_end(&data));
}

/* The chain with its usability, reporting what became unusable. */
static GPtrArray *chain_load(BdNode *node, GError **errp)
{
    GPtrArray *chain;

    if (!bd_dirty_bitmap_store_supported(node)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s' cannot hold checkpoints: its driver '%s' "
                    "does not store persistent dirty bitmaps (use a qcow2 "
                    "node)", node->node_name, node->drv->name);
        return NULL;
    }
    chain = chain_read(node);
    check_newest_records(node, chain);
    mark_usability(chain);
    report_unusable(node, chain);
    return chain;
}

static gboolean check_usable(GPtrArray *chain, const Link *l, GError **errp)
{
    const Link *culprit = l;

    if (!l->broken_by) {
        return TRUE;
    }
    for (guint i = 0; i < chain->len; i++) {
        const Link *c = chain->pdata[i];
        if (c->bm == l->broken_by) {
            culprit = c;
        }
    }
    if (culprit == l) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Checkpoint '%s' is not usable: its bitmap was not "
                    "saved cleanly; take a full backup", l->name);
    } else {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Checkpoint '%s' is not usable: the bitmap of the later "
                    "checkpoint '%s' was not saved cleanly; take a full "
                    "backup", l->name, culprit->name);
    }
    return FALSE;
}

/* --- changes since --- */

/* The union is counted at the chain's finest granularity, so that
 * every member's dirty chunks count exactly once. */
static uint32_t chain_granularity(GPtrArray *chain)
{
    uint32_t gran = G_MAXUINT32;

    for (guint i = 0; i < chain->len; i++) {
        Link *l = chain->pdata[i];
        gran = MIN(gran, bd_dirty_bitmap_granularity(l->bm));
    }
    return gran;
}

/* dst |= what 'l' recorded, including what a job's successor records
 * for it meanwhile (graph/bitmap.h). */
static void merge_link(BdDirtyBitmap *dst, const Link *l)
{
    BdDirtyBitmap *succ = bd_dirty_bitmap_successor(l->bm);

    bd_dirty_bitmap_merge_internal(dst, l->bm);
    if (succ) {
        bd_dirty_bitmap_merge_internal(dst, succ);
    }
}

/* A new disabled bitmap for a union of the chain's bitmaps.  Writes
 * recorded before the disable are in the active bitmap too. */
static BdDirtyBitmap *union_new(BdNode *node, GPtrArray *chain,
                                const char *name, GError **errp)
{
    BdDirtyBitmap *out = bd_dirty_bitmap_create(node,
                                                chain_granularity(chain),
                                                name, errp);

    if (out) {
        bd_dirty_bitmap_set_enabled(out, FALSE);
    }
    return out;
}

GPtrArray *bd_checkpoint_list(BdNode *node, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) chain = chain_load(node, errp);
    g_autoptr(GPtrArray) out = NULL;
    BdDirtyBitmap *acc = NULL;

    if (!chain) {
        return NULL;
    }
    if (chain->len && !(acc = union_new(node, chain, NULL, errp))) {
        return NULL;
    }
    out = g_ptr_array_new_full(chain->len,
                               (GDestroyNotify)bd_checkpoint_info_free);
    g_ptr_array_set_size(out, chain->len);
    /* Newest first: each one's union is the previous one's plus its own
     * bitmap, one merge per checkpoint. */
    for (guint i = chain->len; i-- > 0;) {
        Link *l = chain->pdata[i];
        BdCheckpointInfo *info = g_new0(BdCheckpointInfo, 1);

        if (!bd_dirty_bitmap_inconsistent(l->bm)) {
            merge_link(acc, l);
        }
        info->name = g_strdup(l->name);
        info->bitmap = g_strdup(bd_dirty_bitmap_name(l->bm));
        info->creation_time = l->created;
        info->usable = !l->broken_by;
        info->active = i == chain->len - 1 &&
                       bd_dirty_bitmap_recording(l->bm);
        info->dirty_bytes = info->usable ? bd_dirty_bitmap_count(acc) : 0;
        out->pdata[i] = info;
    }
    bd_dirty_bitmap_release(acc);
    return g_steal_pointer(&out);
}

static gboolean find_checkpoint(BdNode *node, GPtrArray *chain,
                                const char *name, guint *index,
                                GError **errp)
{
    if (!chain_find(chain, name, index)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Checkpoint '%s' not found on node '%s'", name,
                    node->node_name);
        return FALSE;
    }
    return TRUE;
}

BdDirtyBitmap *bd_checkpoint_changes_since(BdNode *node, const char *name,
                                           const char *target,
                                           GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) chain = chain_load(node, errp);
    BdDirtyBitmap *out;
    guint first;

    if (!chain || !find_checkpoint(node, chain, name, &first, errp) ||
        !check_usable(chain, chain->pdata[first], errp)) {
        return NULL;
    }
    out = union_new(node, chain, target, errp);
    for (guint i = first; out && i < chain->len; i++) {
        merge_link(out, chain->pdata[i]);
    }
    return out;
}

/* --- create and delete --- */

struct BdCheckpointChange {
    BdNode *node;              /* a reference */
    BdDirtyBitmap *bm;         /* the new bitmap, or the one deleted */
    /* create: the frozen active bitmap; delete: the predecessor */
    BdDirtyBitmap *pred;
    gboolean pred_was_enabled;
    BdDirtyBitmapBackup *pred_bits;   /* delete: before the merge */
    gboolean pred_poisoned;    /* delete: made inconsistent */
    gboolean is_delete;
};

static void change_free(BdCheckpointChange *c)
{
    bd_dirty_bitmap_backup_free(c->pred_bits);
    bd_node_unref(c->node);
    g_free(c);
}

/* After an undo the image should hold the old set again; if that fails
 * the close stores it anyway, and a crash before would leave only
 * inconsistent bitmaps behind. */
static void sync_after_undo(BdNode *node)
{
    g_autoptr(GError) err = NULL;

    if (!bd_dirty_bitmap_store_sync(node, &err)) {
        g_warning("node '%s': checkpoints: %s", node->node_name,
                  err->message);
    }
}

static gboolean check_writable(BdNode *node, const char *verb,
                               const char *name, GError **errp)
{
    if (node->read_only) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot %s checkpoint '%s' on node '%s': the node is "
                    "read-only", verb, name, node->node_name);
        return FALSE;
    }
    return TRUE;
}

static gboolean check_not_busy(BdNode *node, BdDirtyBitmap *bm,
                               const char *verb, const char *name,
                               GError **errp)
{
    if (!bd_dirty_bitmap_check(bm, BD_BITMAP_BUSY, errp)) {
        g_prefix_error(errp, "Cannot %s checkpoint '%s' on node '%s': ",
                       verb, name, node->node_name);
        return FALSE;
    }
    return TRUE;
}

/* After every checkpoint bitmap of the node, including one that a
 * pending transaction removes: a name it still holds is not reused. */
static guint64 next_seq(BdNode *node)
{
    g_autoptr(GPtrArray) list = bd_dirty_bitmap_list(node);
    guint64 max = 0, seq;
    gint64 created;
    const char *name;

    for (guint i = 0; i < list->len; i++) {
        if (bd_checkpoint_owns_bitmap(list->pdata[i], NULL) &&
            parse_bitmap_name(bd_dirty_bitmap_name(list->pdata[i]), &seq,
                              &created, &name)) {
            max = MAX(max, seq);
        }
    }
    return max + 1;
}

/* The bitmap name of a new checkpoint, the newest of the chain. */
static char *new_bitmap_name(BdNode *node, const char *name, GError **errp)
{
    guint64 seq = next_seq(node);
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    g_autofree char *bitmap = g_strdup_printf(
        BD_CHECKPOINT_BITMAP_PREFIX "%06" G_GUINT64_FORMAT ".%" G_GINT64_FORMAT
        ".%s", seq, now, name);

    if (strlen(bitmap) > BD_BITMAP_MAX_NAME) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Checkpoint name too long: at most %zu bytes",
                    BD_BITMAP_MAX_NAME - (strlen(bitmap) - strlen(name)));
        return NULL;
    }
    return g_steal_pointer(&bitmap);
}

static gboolean create_checks(BdNode *node, GPtrArray *chain,
                              const char *name, GError **errp)
{
    Link *newest = chain_newest(chain);

    if (!check_writable(node, "create", name, errp)) {
        return FALSE;
    }
    if (chain_find(chain, name, NULL)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Checkpoint '%s' already exists on node '%s'", name,
                    node->node_name);
        return FALSE;
    }
    return !newest || check_not_busy(node, newest->bm, "create", name, errp);
}

BdCheckpointChange *bd_checkpoint_create_prepare(BdNode *node,
                                                 const char *name,
                                                 uint32_t granularity,
                                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) chain = NULL;
    g_autofree char *bitmap = NULL;
    Link *newest;
    BdCheckpointChange *c;

    if (!check_name(name, errp) || !(chain = chain_load(node, errp)) ||
        !create_checks(node, chain, name, errp) ||
        !(bitmap = new_bitmap_name(node, name, errp))) {
        return NULL;
    }
    if (!granularity) {
        granularity = bd_dirty_bitmap_default_granularity(node);
    }
    if (!bd_dirty_bitmap_can_store(node, bitmap, granularity, errp)) {
        g_prefix_error(errp, "Cannot create checkpoint '%s' on node '%s': ",
                       name, node->node_name);
        return NULL;
    }
    c = g_new0(BdCheckpointChange, 1);
    c->node = bd_node_ref(node);
    /* Created enabled: from here on every write is recorded in it, so
     * the old one can stop. */
    c->bm = bd_dirty_bitmap_create(node, granularity, bitmap, errp);
    if (!c->bm) {
        change_free(c);
        return NULL;
    }
    bd_dirty_bitmap_set_persistent(c->bm, TRUE);
    newest = chain_newest(chain);
    if (newest) {
        c->pred = newest->bm;
        c->pred_was_enabled = bd_dirty_bitmap_enabled(c->pred);
        bd_dirty_bitmap_set_enabled(c->pred, FALSE);
    }
    if (!bd_dirty_bitmap_store_sync(node, errp)) {
        g_prefix_error(errp, "Cannot create checkpoint '%s' on node '%s': ",
                       name, node->node_name);
        bd_checkpoint_change_abort(c);
        return NULL;
    }
    return c;
}

/* Delete: the predecessor takes over the deleted bitmap's bits (or its
 * inconsistency), and its recording when the deleted one was active. */
static void delete_into_predecessor(BdCheckpointChange *c, gboolean active)
{
    BdDirtyBitmap *pred = c->pred;

    c->pred_was_enabled = bd_dirty_bitmap_enabled(pred);
    if (bd_dirty_bitmap_inconsistent(pred)) {
        return;                /* unusable already; nothing to keep */
    }
    if (bd_dirty_bitmap_inconsistent(c->bm)) {
        bd_dirty_bitmap_set_inconsistent(pred);
        c->pred_poisoned = TRUE;
        return;
    }
    /* Recording first, then the bits: a write in between lands in both. */
    if (active) {
        bd_dirty_bitmap_set_enabled(pred, TRUE);
    }
    c->pred_bits = bd_dirty_bitmap_backup(pred);
    bd_dirty_bitmap_merge_internal(pred, c->bm);
}

BdCheckpointChange *bd_checkpoint_delete_prepare(BdNode *node,
                                                 const char *name,
                                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GPtrArray) chain = chain_load(node, errp);
    BdCheckpointChange *c;
    Link *l;
    guint i;

    if (!chain || !find_checkpoint(node, chain, name, &i, errp) ||
        !check_writable(node, "delete", name, errp)) {
        return NULL;
    }
    l = chain->pdata[i];
    if (!check_not_busy(node, l->bm, "delete", name, errp) ||
        (i > 0 && !check_not_busy(node, ((Link *)chain->pdata[i - 1])->bm,
                                  "delete", name, errp)) ||
        !bd_dirty_bitmap_remove_persistent(node, bd_dirty_bitmap_name(l->bm),
                                           errp)) {
        return NULL;
    }
    c = g_new0(BdCheckpointChange, 1);
    c->node = bd_node_ref(node);
    c->is_delete = TRUE;
    c->bm = l->bm;
    if (i > 0) {
        c->pred = ((Link *)chain->pdata[i - 1])->bm;
        delete_into_predecessor(c, i == chain->len - 1 &&
                                   bd_dirty_bitmap_enabled(l->bm));
    }
    /* Gone from the chain and the image; freed at commit. */
    bd_dirty_bitmap_set_skip_store(c->bm, TRUE);
    bd_dirty_bitmap_set_busy(c->bm, TRUE);
    if (!bd_dirty_bitmap_store_sync(node, errp)) {
        g_prefix_error(errp, "Cannot delete checkpoint '%s' on node '%s': ",
                       name, node->node_name);
        bd_checkpoint_change_abort(c);
        return NULL;
    }
    return c;
}

void bd_checkpoint_change_commit(BdCheckpointChange *c)
{
    BD_GLOBAL_STATE_CODE();

    if (c->is_delete) {
        GHashTable *reported = node_state(c->node)->reported;

        g_hash_table_remove(reported, bd_dirty_bitmap_name(c->bm));
        bd_dirty_bitmap_set_busy(c->bm, FALSE);
        bd_dirty_bitmap_release(c->bm);
    }
    change_free(c);
}

static void create_abort(BdCheckpointChange *c)
{
    if (c->pred) {
        /* What was written meanwhile went to the new bitmap only. */
        bd_dirty_bitmap_set_enabled(c->pred, c->pred_was_enabled);
        if (c->pred_was_enabled) {
            bd_dirty_bitmap_merge_internal(c->pred, c->bm);
        }
    }
    bd_dirty_bitmap_release(c->bm);
}

static void delete_abort(BdCheckpointChange *c)
{
    if (c->pred) {
        if (c->pred_poisoned) {
            bd_dirty_bitmap_clear_inconsistent(c->pred);
        }
        /* Writes meanwhile are in the deleted bitmap too, which stays. */
        if (c->pred_bits) {
            bd_dirty_bitmap_restore(c->pred, c->pred_bits);
        }
        bd_dirty_bitmap_set_enabled(c->pred, c->pred_was_enabled);
    }
    bd_dirty_bitmap_set_skip_store(c->bm, FALSE);
    bd_dirty_bitmap_set_busy(c->bm, FALSE);
}

void bd_checkpoint_change_abort(BdCheckpointChange *c)
{
    BD_GLOBAL_STATE_CODE();

    if (c->is_delete) {
        delete_abort(c);
    } else {
        create_abort(c);
    }
    sync_after_undo(c->node);
    change_free(c);
}

void bd_checkpoints_node_closing(BdNode *node)
{
    BD_GLOBAL_STATE_CODE();

    if (node->checkpoints) {
        g_hash_table_unref(node->checkpoints->reported);
        g_clear_pointer(&node->checkpoints, g_free);
    }
}
