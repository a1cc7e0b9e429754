/* SPDX-License-Identifier: MIT */
/* Dirty bitmap commands: block-dirty-bitmap-add/remove/clear/enable/
 * disable/merge and x-debug-block-dirty-bitmap-sha256, with QEMU's
 * checks in QEMU's order.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/cmd-bitmap.h"
#include "graph/checkpoint.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/node.h"

/* --- schemas (qapi/block-core.json) --- */

#define A(f) BD_AT(BdCmdBitmapArgs, f)
static const BdSchemaField add_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    BD_OPT("granularity", &bd_schema_uint32, A(granularity),
           BD_HAS(BdCmdBitmapArgs, granularity)),
    BD_OPT("persistent", &bd_schema_bool, A(persistent)),
    BD_OPT("disabled", &bd_schema_bool, A(disabled)),
    { NULL } };
static const BdSchemaType add_type = {
    .name = "BlockDirtyBitmapAdd", .kind = BD_SCHEMA_OBJECT,
    .fields = add_fields };

static const BdSchemaField bitmap_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("name", &bd_schema_str, A(name), .def.s = ""),
    { NULL } };
static const BdSchemaType bitmap_type = {
    .name = "BlockDirtyBitmap", .kind = BD_SCHEMA_OBJECT,
    .fields = bitmap_fields };

static const BdSchemaType *const source_alts[] = {
    &bd_schema_str, &bitmap_type, NULL };
static const BdSchemaType source_type = {
    .name = "BlockDirtyBitmapOrStr", .kind = BD_SCHEMA_ALTERNATE,
    .alternatives = source_alts };
static const BdSchemaType source_list = {
    .name = "[BlockDirtyBitmapOrStr]", .kind = BD_SCHEMA_LIST,
    .element = &source_type };
static const BdSchemaField merge_fields[] = {
    BD_FIELD("node", &bd_schema_str, A(node), .def.s = ""),
    BD_FIELD("target", &bd_schema_str, A(target), .def.s = ""),
    BD_FIELD("bitmaps", &source_list, A(bitmaps)),
    { NULL } };
static const BdSchemaType merge_type = {
    .name = "BlockDirtyBitmapMerge", .kind = BD_SCHEMA_OBJECT,
    .fields = merge_fields };
#undef A

void bd_cmd_bitmap_args(const BdSchemaType *type, GVariant *args,
                        BdCmdBitmapArgs *out)
{
    /* Members the type lacks keep their zero value. */
    memset(out, 0, sizeof(*out));
    bd_schema_decode(type->fields, args, out);
}

void bd_cmd_bitmap_args_clear(BdCmdBitmapArgs *a)
{
    bd_schema_clear(merge_fields, a);
}

static const BdSchemaField sha256_fields[] = {
    BD_FIELD("sha256", &bd_schema_str),
    { NULL } };
static const BdSchemaType sha256_type = {
    .name = "BlockDirtyBitmapSha256", .kind = BD_SCHEMA_OBJECT,
    .fields = sha256_fields };

const BdSchemaType *bd_cmd_bitmap_add_schema(void) { return &add_type; }
const BdSchemaType *bd_cmd_bitmap_schema(void) { return &bitmap_type; }
const BdSchemaType *bd_cmd_bitmap_merge_schema(void) { return &merge_type; }
static const BdSchemaType *sha256_fn(void) { return &sha256_type; }

/* --- shared steps --- */

gboolean bd_cmd_bitmap_check_name(const char *name, GError **errp)
{
    if (g_str_has_prefix(name, BD_CHECKPOINT_BITMAP_PREFIX)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap name '%s' is reserved for checkpoints (names "
                    "starting with '" BD_CHECKPOINT_BITMAP_PREFIX "')", name);
        return FALSE;
    }
    return TRUE;
}

gboolean bd_cmd_bitmap_check_owner(const BdDirtyBitmap *bm, GError **errp)
{
    const char *checkpoint;

    if (bd_checkpoint_owns_bitmap(bm, &checkpoint)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap '%s' belongs to checkpoint '%s'; use the "
                    "x-blockd-checkpoint commands to change it",
                    bd_dirty_bitmap_name(bm), checkpoint);
        return FALSE;
    }
    return TRUE;
}

BdDirtyBitmap *bd_cmd_bitmap_lookup(const char *node, const char *name,
                                    BdNode **pnode, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *bs = bd_node_find(node);
    BdDirtyBitmap *bm;

    if (!bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node '%s' not found", node);
        return NULL;
    }
    bm = bd_dirty_bitmap_find(bs, name);
    if (!bm) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    if (pnode) {
        *pnode = bs;
    }
    return bm;
}

gboolean bd_cmd_bitmap_add(const BdCmdBitmapArgs *a, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    const char *node = a->node;
    const char *name = a->name;
    gboolean persistent = a->persistent;
    uint64_t granularity;
    BdDirtyBitmap *bm;
    BdNode *bs;

    if (!*name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Bitmap name cannot be empty");
        return FALSE;
    }
    if (!bd_cmd_bitmap_check_name(name, errp)) {
        return FALSE;
    }
    bs = bd_ctl_lookup_node(node, errp);
    if (!bs) {
        return FALSE;
    }
    if (a->has_granularity) {
        granularity = a->granularity;
        if (granularity < 512 || (granularity & (granularity - 1))) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Granularity must be power of 2 and at least 512");
            return FALSE;
        }
    } else {
        granularity = bd_dirty_bitmap_default_granularity(bs);
    }
    if (persistent &&
        !bd_dirty_bitmap_can_store(bs, name, (uint32_t)granularity, errp)) {
        return FALSE;
    }
    bm = bd_dirty_bitmap_create(bs, (uint32_t)granularity, name, errp);
    if (!bm) {
        return FALSE;
    }
    if (a->disabled) {
        bd_dirty_bitmap_set_enabled(bm, FALSE);
    }
    bd_dirty_bitmap_set_persistent(bm, persistent);
    return TRUE;
}

BdDirtyBitmap *bd_cmd_bitmap_remove(const char *node, const char *name,
                                    gboolean release, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *bs;
    BdDirtyBitmap *bm = bd_cmd_bitmap_lookup(node, name, &bs, errp);

    if (!bm ||
        !bd_dirty_bitmap_check(bm, BD_BITMAP_BUSY | BD_BITMAP_RO, errp) ||
        !bd_cmd_bitmap_check_owner(bm, errp)) {
        return NULL;
    }
    if (bd_dirty_bitmap_persistent(bm) &&
        !bd_dirty_bitmap_remove_persistent(bs, name, errp)) {
        return NULL;
    }
    if (release) {
        bd_dirty_bitmap_release(bm);
        return NULL;
    }
    return bm;
}

/* One merge source: a name on the target's node or {node, name}. */
static BdDirtyBitmap *merge_source(BdNode *bs, GVariant *src, GError **errp)
{
    if (g_variant_is_of_type(src, G_VARIANT_TYPE_STRING)) {
        const char *name = g_variant_get_string(src, NULL);
        BdDirtyBitmap *bm = bd_dirty_bitmap_find(bs, name);
        if (!bm) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Dirty bitmap '%s' not found", name);
        }
        return bm;
    }
    g_auto(BdCmdBitmapArgs) b = { 0 };
    bd_cmd_bitmap_args(&bitmap_type, src, &b);
    return bd_cmd_bitmap_lookup(b.node, b.name, NULL, errp);
}

BdDirtyBitmap *bd_cmd_bitmap_merge(const char *node, const char *target,
                                   GVariant *sources,
                                   BdDirtyBitmapBackup **backup,
                                   GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    BdNode *bs;
    BdDirtyBitmap *dst = bd_cmd_bitmap_lookup(node, target, &bs, errp);
    BdDirtyBitmap *anon;
    gsize n = sources ? g_variant_n_children(sources) : 0;

    if (!dst || !bd_cmd_bitmap_check_owner(dst, errp)) {
        return NULL;
    }
    /* As QEMU: the sources meet in an anonymous bitmap first, so the
     * target is untouched when any source is refused. */
    anon = bd_dirty_bitmap_create(bs, bd_dirty_bitmap_granularity(dst), NULL,
                                  errp);
    if (!anon) {
        return NULL;
    }
    for (gsize i = 0; i < n && dst; i++) {
        g_autoptr(GVariant) boxed = g_variant_get_child_value(sources, i);
        g_autoptr(GVariant) src = g_variant_get_variant(boxed);
        BdDirtyBitmap *bm = merge_source(bs, src, errp);
        if (!bm || !bd_dirty_bitmap_merge(anon, bm, NULL, errp)) {
            dst = NULL;
        }
    }
    if (dst && !bd_dirty_bitmap_merge(dst, anon, backup, errp)) {
        dst = NULL;
    }
    bd_dirty_bitmap_release(anon);
    return dst;
}

/* --- handlers --- */

static gboolean cmd_add(GVariant *args, JsonNode **ret, GError **errp)
{
    g_auto(BdCmdBitmapArgs) a = { 0 };

    bd_cmd_bitmap_args(&add_type, args, &a);
    return bd_cmd_bitmap_add(&a, errp);
}

static gboolean cmd_remove(GVariant *args, JsonNode **ret, GError **errp)
{
    g_auto(BdCmdBitmapArgs) a = { 0 };
    GError *err = NULL;

    bd_cmd_bitmap_args(&bitmap_type, args, &a);
    bd_cmd_bitmap_remove(a.node, a.name, TRUE, &err);
    if (err) {
        g_propagate_error(errp, err);
        return FALSE;
    }
    return TRUE;
}

static BdDirtyBitmap *lookup_checked(GVariant *args, int flags,
                                     GError **errp)
{
    g_auto(BdCmdBitmapArgs) a = { 0 };
    BdDirtyBitmap *bm;

    bd_cmd_bitmap_args(&bitmap_type, args, &a);
    bm = bd_cmd_bitmap_lookup(a.node, a.name, NULL, errp);
    return bm && bd_dirty_bitmap_check(bm, flags, errp) &&
           bd_cmd_bitmap_check_owner(bm, errp) ? bm : NULL;
}

static gboolean cmd_clear(GVariant *args, JsonNode **ret, GError **errp)
{
    BdDirtyBitmap *bm = lookup_checked(args, BD_BITMAP_DEFAULT, errp);

    if (bm) {
        bd_dirty_bitmap_clear(bm);
    }
    return bm != NULL;
}

static gboolean cmd_enable(GVariant *args, JsonNode **ret, GError **errp)
{
    BdDirtyBitmap *bm = lookup_checked(args, BD_BITMAP_ALLOW_RO, errp);

    if (bm) {
        bd_dirty_bitmap_set_enabled(bm, TRUE);
    }
    return bm != NULL;
}

static gboolean cmd_disable(GVariant *args, JsonNode **ret, GError **errp)
{
    BdDirtyBitmap *bm = lookup_checked(args, BD_BITMAP_ALLOW_RO, errp);

    if (bm) {
        bd_dirty_bitmap_set_enabled(bm, FALSE);
    }
    return bm != NULL;
}

static gboolean cmd_merge(GVariant *args, JsonNode **ret, GError **errp)
{
    g_auto(BdCmdBitmapArgs) a = { 0 };

    bd_cmd_bitmap_args(&merge_type, args, &a);
    return bd_cmd_bitmap_merge(a.node, a.target, a.bitmaps, NULL,
                               errp) != NULL;
}

static gboolean cmd_sha256(GVariant *args, JsonNode **ret, GError **errp)
{
    g_auto(BdCmdBitmapArgs) a = { 0 };
    BdDirtyBitmap *bm;
    g_autofree char *hex = NULL;
    JsonObject *obj;

    bd_cmd_bitmap_args(&bitmap_type, args, &a);
    bm = bd_cmd_bitmap_lookup(a.node, a.name, NULL, errp);
    if (!bm) {
        return FALSE;
    }
    hex = bd_dirty_bitmap_sha256(bm);
    obj = json_object_new();
    json_object_set_string_member(obj, "sha256", hex);
    *ret = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(*ret, obj);
    return TRUE;
}

static const BdQmpCommand bitmap_commands[] = {
    { "block-dirty-bitmap-add", bd_cmd_bitmap_add_schema, FALSE, NULL,
      cmd_add },
    { "block-dirty-bitmap-remove", bd_cmd_bitmap_schema, FALSE, NULL,
      cmd_remove },
    { "block-dirty-bitmap-clear", bd_cmd_bitmap_schema, FALSE, NULL,
      cmd_clear },
    { "block-dirty-bitmap-enable", bd_cmd_bitmap_schema, FALSE, NULL,
      cmd_enable },
    { "block-dirty-bitmap-disable", bd_cmd_bitmap_schema, FALSE, NULL,
      cmd_disable },
    { "block-dirty-bitmap-merge", bd_cmd_bitmap_merge_schema, FALSE, NULL,
      cmd_merge },
    { "x-debug-block-dirty-bitmap-sha256", bd_cmd_bitmap_schema, FALSE,
      sha256_fn, cmd_sha256 },
    { NULL } };

void bd_cmd_bitmap_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(bitmap_commands);
}
