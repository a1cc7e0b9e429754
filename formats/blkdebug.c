/* SPDX-License-Identifier: MIT */
/* The 'blkdebug' filter driver (QEMU's): passes I/O to 'image' and injects errors by rules.
 *
 * Parents announce debug events (graph/debug-event.h) on their edge to
 * this node; the rules (blkdebug-rules.c) turn them into state changes
 * and errors for the following requests.  Also overrides the limits the
 * node reports (align, max-transfer, ...), as QEMU does to exercise the
 * generic layer's alignment handling.
 *
 * Thread model: open/close/child_perm on the main thread; the data
 * callbacks and debug_event on any thread.  The rule set has its own
 * lock; everything else is fixed after open.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/blkdebug-rules.h"
#include "formats/json-filename.h"

typedef struct {
    BdChild *image;
    BdBlkdebugRules *rules;
    uint64_t take_perms;      /* take-child-perms */
    uint32_t align;           /* 'align', 0: not given */
    uint64_t max_transfer;    /* 'max-transfer', 0: not given */
    uint64_t unshare_perms;   /* unshare-child-perms */
} BlkdebugState;

/* QEMU's BlockPermission, in bit order (BD_PERM_*). */
static const char *const perm_values[] = {
    "consistent-read", "write", "write-unchanged", "resize", NULL };
static const BdSchemaType perm_type = {
    .name = "BlockPermission", .kind = BD_SCHEMA_ENUM,
    .enum_values = perm_values };
static const BdSchemaType perm_list = {
    .name = "[BlockPermission]", .kind = BD_SCHEMA_LIST,
    .element = &perm_type };

/* The limit options, in the order QEMU checks them. */
enum { L_ALIGN, L_MAX_TRANSFER, L_OPT_WZ, L_MAX_WZ, L_OPT_DISCARD,
       L_MAX_DISCARD, L__MAX };

typedef struct {
    GVariant *image;
    const char *config;
    gint64 limit[L__MAX];
    gboolean has_limit[L__MAX];
    GVariant *inject_error;
    GVariant *set_state;
    GVariant *take_child_perms;
    GVariant *unshare_child_perms;
} BlkdebugOptions;

#define LIMIT(i, n) \
    { n, &bd_schema_int, TRUE, BD_AT(BlkdebugOptions, limit[i]), \
      BD_HAS(BlkdebugOptions, limit[i]) }

/* QAPI BlockdevOptionsBlkdebug. */
static const BdSchemaField blkdebug_options[] = {
    { "image", &bd_schema_blockdev_ref, FALSE,
      BD_AT(BlkdebugOptions, image) },
    { "config", &bd_schema_str, TRUE, BD_AT(BlkdebugOptions, config) },
    LIMIT(L_ALIGN, "align"),
    LIMIT(L_MAX_TRANSFER, "max-transfer"),
    LIMIT(L_OPT_WZ, "opt-write-zero"),
    LIMIT(L_MAX_WZ, "max-write-zero"),
    LIMIT(L_OPT_DISCARD, "opt-discard"),
    LIMIT(L_MAX_DISCARD, "max-discard"),
    { "inject-error", &bd_blkdebug_inject_error_list, TRUE,
      BD_AT(BlkdebugOptions, inject_error) },
    { "set-state", &bd_blkdebug_set_state_list, TRUE,
      BD_AT(BlkdebugOptions, set_state) },
    { "take-child-perms", &perm_list, TRUE,
      BD_AT(BlkdebugOptions, take_child_perms) },
    { "unshare-child-perms", &perm_list, TRUE,
      BD_AT(BlkdebugOptions, unshare_child_perms) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(BlkdebugOptions, blkdebug_options)

/* The name of limit 'i' (messages, json: filenames), from the table. */
static const char *limit_name(int i)
{
    size_t at = offsetof(BlkdebugOptions, limit) + 1 +
                (size_t)i * sizeof(gint64);

    for (const BdSchemaField *f = blkdebug_options; f->name; f++) {
        if (f->at == at) {
            return f->name;
        }
    }
    g_assert_not_reached();
}

/* --- data path --- */

/* A write past the end grew the image (a format below us allocating):
 * follow its size, as QEMU's getlength asks the image each time. */
static int blkdebug_follow_size(BdNode *node, BlkdebugState *s, int ret)
{
    uint64_t want = bd_node_getlength(s->image->node);
    uint64_t cur = __atomic_load_n(&node->size, __ATOMIC_ACQUIRE);

    while (ret >= 0 && want > cur &&
           !__atomic_compare_exchange_n(&node->size, &cur, want, FALSE,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        /* cur was reloaded; retry while we would still grow it */
    }
    return ret;
}

static int blkdebug_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                          void *buf, int flags)
{
    BlkdebugState *s = node->opaque;
    int ret = bd_blkdebug_rules_check(s->rules, offset, bytes,
                                      BD_BLKDEBUG_IO_READ);

    return ret < 0 ? ret : bd_child_pread(s->image, offset, bytes, buf, flags);
}

static int blkdebug_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                           const void *buf, int flags)
{
    BlkdebugState *s = node->opaque;
    int ret = bd_blkdebug_rules_check(s->rules, offset, bytes,
                                      BD_BLKDEBUG_IO_WRITE);

    if (ret == 0) {
        ret = bd_child_pwrite(s->image, offset, bytes, buf, flags);
    }
    return blkdebug_follow_size(node, s, ret);
}

static int blkdebug_pwrite_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, int flags)
{
    BlkdebugState *s = node->opaque;
    int ret = bd_blkdebug_rules_check(s->rules, offset, bytes,
                                      BD_BLKDEBUG_IO_WRITE_ZEROES);

    if (ret == 0) {
        ret = bd_child_pwrite_zeroes(s->image, offset, bytes, flags);
    }
    return blkdebug_follow_size(node, s, ret);
}

static int blkdebug_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    BlkdebugState *s = node->opaque;
    int ret = bd_blkdebug_rules_check(s->rules, offset, bytes,
                                      BD_BLKDEBUG_IO_DISCARD);

    return ret < 0 ? ret : bd_child_pdiscard(s->image, offset, bytes);
}

/* The graph flushes the image afterwards (bd_node_flush recurses). */
static int blkdebug_flush(BdNode *node)
{
    BlkdebugState *s = node->opaque;

    return bd_blkdebug_rules_check(s->rules, 0, 0, BD_BLKDEBUG_IO_FLUSH);
}

static int blkdebug_block_status(BdNode *node, uint64_t offset,
                                 uint64_t bytes, uint64_t *pnum,
                                 uint64_t *map, BdNode **file)
{
    BlkdebugState *s = node->opaque;
    int ret = bd_blkdebug_rules_check(s->rules, offset, bytes,
                                      BD_BLKDEBUG_IO_BLOCK_STATUS);

    if (ret < 0) {
        return ret;
    }
    *pnum = bytes;
    *map = offset;
    *file = s->image->node;
    return BD_BLOCK_RAW | BD_BLOCK_OFFSET_VALID;
}

static void blkdebug_debug_event(BdNode *node, int event)
{
    BlkdebugState *s = node->opaque;

    if (s && s->rules) {
        bd_blkdebug_rules_event(s->rules, event);
    }
}

/* --- permissions --- */

static uint64_t perm_list_bits(GVariant *list)
{
    GVariantIter it;
    GVariant *elem;
    uint64_t bits = 0;

    if (!list) {
        return 0;
    }
    g_variant_iter_init(&it, list);
    while ((elem = g_variant_iter_next_value(&it))) {
        g_autoptr(GVariant) v = g_variant_get_variant(elem);
        for (int i = 0; perm_values[i]; i++) {
            if (!strcmp(perm_values[i], g_variant_get_string(v, NULL))) {
                bits |= 1ull << i;
            }
        }
        g_variant_unref(elem);
    }
    return bits;
}

static void blkdebug_child_perm(BdNode *node, BdChild *child,
                                BdChildRole role, uint64_t parent_perm,
                                uint64_t parent_shared, uint64_t *perm,
                                uint64_t *shared)
{
    BlkdebugState *s = node->opaque;

    bd_default_child_perm(node, child, role, parent_perm, parent_shared,
                          perm, shared);
    if (s) {
        *perm |= s->take_perms;
        *shared &= ~s->unshare_perms;
    }
}

/* --- open --- */

/* QEMU's checks of align, max-transfer, opt/max-write-zero and
 * opt/max-discard, in its order.  'file_align' is the image's. */
static gboolean blkdebug_check_limits(const BlkdebugOptions *o,
                                      uint32_t file_align, uint64_t *limits,
                                      GError **errp)
{
    uint64_t align;

    for (int i = 0; i < L__MAX; i++) {
        limits[i] = (uint64_t)o->limit[i];
    }
    if (limits[L_ALIGN] && (limits[L_ALIGN] >= G_MAXINT ||
                            (limits[L_ALIGN] & (limits[L_ALIGN] - 1)))) {
        goto bad_align;
    }
    align = MAX(limits[L_ALIGN], file_align);
    for (int i = L_MAX_TRANSFER; i < L__MAX; i++) {
        /* The max- limits must also be multiples of their opt- partner. */
        uint64_t unit = (i == L_MAX_WZ || i == L_MAX_DISCARD)
                        ? MAX(limits[i - 1], align) : align;
        if (limits[i] && (limits[i] >= G_MAXINT || limits[i] % unit)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot meet constraints with %s %" PRIu64,
                        limit_name(i), limits[i]);
            return FALSE;
        }
    }
    return TRUE;

bad_align:
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Cannot meet constraints with align %" PRIu64,
                limits[L_ALIGN]);
    return FALSE;
}

/* Sizes are unsigned in QEMU's option parser: negative values fail
 * before anything else. */
static gboolean blkdebug_check_sizes(const BlkdebugOptions *o,
                                     GError **errp)
{
    for (int i = 0; i < L__MAX; i++) {
        if (o->limit[i] < 0) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameter '%s' expects a non-negative number "
                        "below 2^64", limit_name(i));
            return FALSE;
        }
    }
    return TRUE;
}

/* Append list option 'key' flattened as QEMU's options are:
 * "inject-error.0.event", "inject-error.0.errno", ...  (Where such keys
 * share a hash bucket their order may differ from QEMU's.) */
static void add_flattened(GVariantDict *d, const char *key, GVariant *list)
{
    for (gsize i = 0; list && i < g_variant_n_children(list); i++) {
        g_autoptr(GVariant) elem = g_variant_get_child_value(list, i);
        g_autoptr(GVariant) dict = g_variant_get_variant(elem);
        GVariantIter it;
        const char *member;
        GVariant *val;

        g_variant_iter_init(&it, dict);
        while (g_variant_iter_next(&it, "{&sv}", &member, &val)) {
            g_autofree char *flat = g_strdup_printf("%s.%zu.%s", key, i,
                                                    member);
            g_variant_dict_insert_value(d, flat, val);
            g_variant_unref(val);
        }
    }
}

/* QEMU's full_open_options: driver, image, the strong options given. */
static GVariant *blkdebug_full_options(BdNode *node,
                                       const BlkdebugOptions *o)
{
    BlkdebugState *s = node->opaque;
    g_auto(GVariantDict) d = G_VARIANT_DICT_INIT(NULL);

    g_variant_dict_insert(&d, "driver", "s", "blkdebug");
    g_variant_dict_insert_value(&d, "image",
                                bd_formats_full_options(s->image->node));
    if (o->config) {
        g_variant_dict_insert(&d, "config", "s", o->config);
    }
    for (int i = 0; i < L__MAX; i++) {
        if (o->has_limit[i]) {
            g_variant_dict_insert(&d, limit_name(i), "x", o->limit[i]);
        }
    }
    add_flattened(&d, "inject-error", o->inject_error);
    add_flattened(&d, "set-state", o->set_state);
    return g_variant_dict_end(&d);
}

/* QEMU's refresh_filename: "blkdebug:CONFIG:IMAGE" while only config
 * and image are given and the image has a plain name, else json:. */
static char *blkdebug_filename(BdNode *node, const BlkdebugOptions *o)
{
    BlkdebugState *s = node->opaque;
    const char *image = s->image->node->filename;
    gboolean plain = !g_str_has_prefix(image, "json:") &&
                     !o->inject_error && !o->set_state;

    for (int i = 0; plain && i < L__MAX; i++) {
        plain = !o->has_limit[i];
    }
    if (plain) {
        return g_strdup_printf("blkdebug:%s:%s", o->config ? o->config : "",
                               image);
    }
    return bd_formats_json_of(blkdebug_full_options(node, o));
}

static void blkdebug_close(BdNode *node)
{
    BlkdebugState *s = node->opaque;

    if (!s) {
        return;
    }
    bd_blkdebug_rules_free(s->rules);
    g_free(s);
    node->opaque = NULL;
}

/* The limits given as options stand in for a device's. */
static void blkdebug_refresh_limits(BdNode *node)
{
    BlkdebugState *s = node->opaque;

    if (s->align) {
        node->request_alignment = s->align;
    }
    if (s->max_transfer) {
        node->max_transfer = s->max_transfer;
    }
}

static gboolean blkdebug_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(BlkdebugOptions) o = { 0 };
    BlkdebugState *s;
    uint64_t limits[L__MAX];

    bd_schema_decode(blkdebug_options, options, &o);
    if (!blkdebug_check_sizes(&o, errp)) {
        return FALSE;
    }
    s = g_new0(BlkdebugState, 1);
    node->opaque = s;
    s->rules = bd_blkdebug_rules_new(o.config, o.inject_error, o.set_state,
                                     errp);
    if (!s->rules) {
        goto fail;
    }
    s->take_perms = perm_list_bits(o.take_child_perms);
    s->unshare_perms = perm_list_bits(o.unshare_child_perms);
    s->image = bd_node_open_child(node, o.image, "image",
                                  BD_CHILD_FILTERED | BD_CHILD_PRIMARY,
                                  FALSE, errp);
    if (!s->image) {
        goto fail;
    }
    if (!blkdebug_check_limits(&o, s->image->node->request_alignment,
                               limits, errp)) {
        goto fail;
    }
    s->align = (uint32_t)limits[L_ALIGN];
    s->max_transfer = limits[L_MAX_TRANSFER];
    bd_node_set_size(node, (uint64_t)bd_node_getlength(s->image->node));
    node->filename = blkdebug_filename(node, &o);
    /* As QEMU: rules for the event 'none' fire at open. */
    bd_blkdebug_rules_event(s->rules, BD_DEBUG_EVENT_NONE);
    return TRUE;

fail:
    blkdebug_close(node);
    return FALSE;
}

static GVariant *blkdebug_node_full_options(BdNode *node)
{
    g_auto(BlkdebugOptions) o = { 0 };

    bd_schema_decode(blkdebug_options, node->options, &o);
    return blkdebug_full_options(node, &o);
}

static void blkdebug_query_image_info(BdNode *node, GVariantDict *image)
{
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
}

static int64_t blkdebug_allocated_size(BdNode *node)
{
    return -ENOTSUP;    /* QEMU shows no actual-size for blkdebug */
}

const BdDriver bd_blkdebug_driver = {
    .name = "blkdebug",
    .options = blkdebug_options,
    .is_filter = TRUE,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .refresh_limits = blkdebug_refresh_limits,
    .child_perm = blkdebug_child_perm,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .pwrite_zeroes = blkdebug_pwrite_zeroes,
    .pdiscard = blkdebug_pdiscard,
    .flush = blkdebug_flush,
    .block_status = blkdebug_block_status,
    .allocated_size = blkdebug_allocated_size,
    .full_options = blkdebug_node_full_options,
    .debug_event = blkdebug_debug_event,
    .query_image_info = blkdebug_query_image_info,
    .reopen_prepare = bd_reopen_prepare_fixed,
};
