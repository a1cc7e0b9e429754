/* SPDX-License-Identifier: MIT */
/* blockdev-mirror and drive-mirror: the argument schemas and QEMU's
 * checks in QEMU's order (qmp_blockdev_mirror, qmp_drive_mirror,
 * blockdev_mirror_common, mirror_start), then the job of jobs/mirror.c.
 * drive-mirror creates (or opens) its target image itself.  Also
 * registers the mirror_top filter driver.
 *
 * Thread model: main thread only.
 */
#include <stdio.h>
#include <string.h>
#include "control/qmp-int.h"
#include "formats/filename.h"
#include "formats/registry.h"
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"
#include "jobs/chain.h"
#include "jobs/mirror.h"

/* --- schema (qapi/block-core.json) --- */

static const char *const copy_mode_values[] = {
    [BD_MIRROR_COPY_BACKGROUND] = "background",
    [BD_MIRROR_COPY_WRITE_BLOCKING] = "write-blocking",
    NULL };
static const BdSchemaType copy_mode_type = {
    .name = "MirrorCopyMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = copy_mode_values };

/* blockdev-mirror's arguments and DriveMirror (format, node-name, mode,
 * unmap). */
typedef struct {
    const char *job_id;
    const char *device;
    const char *target;
    const char *format;
    const char *node_name;
    const char *replaces;
    BdCtlSyncMode sync;
    BdCtlNewImageMode mode;
    gint64 speed;
    guint64 granularity;
    gint64 buf_size;
    BdOnError on_source_error;
    BdOnError on_target_error;
    const char *filter_node_name;
    gboolean unmap;
    BdMirrorCopyMode copy_mode;
    gboolean auto_finalize;
    gboolean auto_dismiss;
} MirrorArgs;

#define M(f) BD_AT(MirrorArgs, f)
static const BdSchemaField mirror_fields[] = {
    BD_OPT("job-id", &bd_schema_str, M(job_id), .def.s = ""),
    BD_FIELD("device", &bd_schema_str, M(device), .def.s = ""),
    BD_FIELD("target", &bd_schema_str, M(target), .def.s = ""),
    BD_OPT("replaces", &bd_schema_str, M(replaces)),
    BD_FIELD("sync", &bd_ctl_schema_sync_mode, M(sync),
             .def.i = BD_CTL_SYNC_FULL),
    BD_OPT("speed", &bd_schema_int, M(speed)),
    BD_OPT("granularity", &bd_schema_uint32, M(granularity)),
    BD_OPT("buf-size", &bd_schema_int, M(buf_size)),
    BD_OPT("on-source-error", &bd_ctl_schema_on_error, M(on_source_error),
           .def.i = BD_ON_ERROR_REPORT),
    BD_OPT("on-target-error", &bd_ctl_schema_on_error, M(on_target_error),
           .def.i = BD_ON_ERROR_REPORT),
    BD_OPT("filter-node-name", &bd_schema_str, M(filter_node_name)),
    BD_OPT("copy-mode", &copy_mode_type, M(copy_mode),
           .def.i = BD_MIRROR_COPY_BACKGROUND),
    BD_OPT("auto-finalize", &bd_schema_bool, M(auto_finalize),
           .def.i = TRUE),
    BD_OPT("auto-dismiss", &bd_schema_bool, M(auto_dismiss), .def.i = TRUE),
    { NULL } };
static const BdSchemaType mirror_args = {
    .name = "q_obj_blockdev-mirror-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = mirror_fields };

static const BdSchemaType *mirror_args_fn(void)
{
    return &mirror_args;
}

/* --- checks --- */


/* QEMU's qmp_get_root_bs: only entry handles above the node (a job
 * holding a node is a parent of it in QEMU). */
static BdNode *lookup_root_node(const char *name, GError **errp)
{
    BdNode *node = bd_ctl_lookup_node(name, errp);

    if (!node) {
        return NULL;
    }
    if (!bd_chain_check_busy(node, NULL)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Need a root block node");
        return NULL;
    }
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Need a root block node");
            return NULL;
        }
    }
    return node;
}

/* QEMU blocks mirroring into a node that is some image's backing file
 * (its op blocker on backing nodes). */
static gboolean check_not_backing(BdNode *node, GError **errp)
{
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent && c->parent->backing == c) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' is busy: node is used as backing hd of "
                        "'%s'", node->node_name, c->parent->node_name);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean check_granularity(guint64 g, uint32_t *granularity,
                                  GError **errp)
{
    *granularity = (uint32_t)g;
    if (g != 0 && (g < 512 || g > 64 * 1024 * 1024)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'granularity' expects a value in range "
                    "[512B, 64MB]");
        return FALSE;
    }
    if (g & (g - 1)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter 'granularity' expects a power of 2");
        return FALSE;
    }
    return TRUE;
}

/* QEMU's check_to_replace_node: the source itself, or a node below it
 * through filters only (its data is the source's data). */
static BdNode *check_replaces(BdNode *bs, const char *name, GError **errp)
{
    BdNode *node = bd_node_find(name);

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to find node with node-name='%s'", name);
        return NULL;
    }
    if (!bd_chain_check_busy(node, errp)) {
        return NULL;
    }
    for (BdNode *n = bs; n; ) {
        BdChild *f;
        if (n == node) {
            return node;
        }
        f = bd_node_filtered_child(n);
        n = f ? f->node : NULL;
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Cannot replace '%s' by a node mirrored from '%s', because "
                "it cannot be guaranteed that doing so would not lead to an "
                "abrupt change of visible data", name, bs->node_name);
    return NULL;
}

static gboolean parse_sync(BdCtlSyncMode s, BdNode *bs, BdMirrorSync *sync,
                           GError **errp)
{
    switch (s) {
    case BD_CTL_SYNC_TOP:
        /* No backing file: top is full (blockdev_mirror_common). */
        *sync = bd_chain_next(bd_chain_skip_filters(bs))
                ? BD_MIRROR_SYNC_TOP : BD_MIRROR_SYNC_FULL;
        return TRUE;
    case BD_CTL_SYNC_NONE:
        *sync = BD_MIRROR_SYNC_NONE;
        return TRUE;
    case BD_CTL_SYNC_FULL:
        *sync = BD_MIRROR_SYNC_FULL;
        return TRUE;
    default:
        /* mirror_start, after the replaces checks: see the caller. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Sync mode '%s' not supported", bd_ctl_sync_mode_name(s));
        return FALSE;
    }
}

/* --- the command --- */

/* blockdev_mirror_common: the checks shared by both commands, then the
 * job.  p->bs and p->target are set. */
static gboolean mirror_common(const MirrorArgs *a, BdMirrorParams *p,
                              GError **errp)
{
    const char *replaces = a->replaces;
    g_autoptr(GError) sync_err = NULL;

    if (!bd_chain_check_busy(p->bs, errp) ||
        !bd_chain_check_busy(p->target, errp) ||
        !check_not_backing(p->target, errp) ||
        !check_granularity(a->granularity, &p->granularity, errp)) {
        return FALSE;
    }
    /* The sync mode is refused after the replaces checks, as QEMU. */
    gboolean sync_ok = parse_sync(a->sync, p->bs, &p->sync, &sync_err);
    if (replaces) {
        p->replaces = check_replaces(p->bs, replaces, errp);
        if (!p->replaces) {
            return FALSE;
        }
    }
    if (!sync_ok) {
        g_propagate_error(errp, g_steal_pointer(&sync_err));
        return FALSE;
    }
    p->job_id = a->job_id;
    p->speed = a->speed;
    p->buf_size = a->buf_size;
    p->on_source_error = a->on_source_error;
    p->on_target_error = a->on_target_error;
    p->filter_node_name = a->filter_node_name;
    p->copy_mode = a->copy_mode;
    p->auto_finalize = a->auto_finalize;
    p->auto_dismiss = a->auto_dismiss;
    return bd_mirror_start(p, errp);
}

static gboolean blockdev_mirror(GVariant *args, JsonNode **ret,
                                GError **errp)
{
    BdMirrorParams p = { 0 };
    MirrorArgs a = { 0 };

    (void)ret;
    bd_schema_decode(mirror_fields, args, &a);
    p.bs = lookup_root_node(a.device, errp);
    if (!p.bs) {
        return FALSE;
    }
    p.target = bd_ctl_lookup_node(a.target, errp);
    if (!p.target) {
        return FALSE;
    }
    return mirror_common(&a, &p, errp);
}

/* --- drive-mirror: the target is a new (or existing) image file --- */


static const BdSchemaField drive_mirror_fields[] = {
    BD_OPT("job-id", &bd_schema_str, M(job_id), .def.s = ""),
    BD_FIELD("device", &bd_schema_str, M(device), .def.s = ""),
    BD_FIELD("target", &bd_schema_str, M(target), .def.s = ""),
    BD_OPT("format", &bd_schema_str, M(format)),
    BD_OPT("node-name", &bd_schema_str, M(node_name)),
    BD_OPT("replaces", &bd_schema_str, M(replaces)),
    BD_FIELD("sync", &bd_ctl_schema_sync_mode, M(sync),
             .def.i = BD_CTL_SYNC_FULL),
    BD_OPT("mode", &bd_ctl_schema_new_image_mode, M(mode),
           .def.i = BD_CTL_NEW_IMAGE_ABSOLUTE_PATHS),
    BD_OPT("speed", &bd_schema_int, M(speed)),
    BD_OPT("granularity", &bd_schema_uint32, M(granularity)),
    BD_OPT("buf-size", &bd_schema_int, M(buf_size)),
    BD_OPT("on-source-error", &bd_ctl_schema_on_error, M(on_source_error),
           .def.i = BD_ON_ERROR_REPORT),
    BD_OPT("on-target-error", &bd_ctl_schema_on_error, M(on_target_error),
           .def.i = BD_ON_ERROR_REPORT),
    BD_OPT("unmap", &bd_schema_bool, M(unmap), .def.i = TRUE),
    BD_OPT("copy-mode", &copy_mode_type, M(copy_mode),
           .def.i = BD_MIRROR_COPY_BACKGROUND),
    BD_OPT("auto-finalize", &bd_schema_bool, M(auto_finalize),
           .def.i = TRUE),
    BD_OPT("auto-dismiss", &bd_schema_bool, M(auto_dismiss), .def.i = TRUE),
    { NULL } };
#undef M
static const BdSchemaType drive_mirror_args = {
    .name = "DriveMirror", .kind = BD_SCHEMA_OBJECT,
    .fields = drive_mirror_fields };

static const BdSchemaType *drive_mirror_args_fn(void)
{
    return &drive_mirror_args;
}

/* Open the target image; without a format, qcow2 is recognised by its
 * magic.  A new image's backing file is not opened: the job attaches
 * the source's node at the pivot instead. */
static BdNode *open_target(const char *filename, const char *fmt,
                           const char *node_name, gboolean no_backing,
                           GError **errp)
{
    const BdDriver *drv;
    GVariantDict d;
    GVariant *file;

    gboolean probed = !fmt && !bd_formats_filename_is_remote(filename);

    if (!fmt) {
        fmt = probed ? bd_formats_probe_file(filename) : "raw";
    }
    drv = bd_driver_find(fmt);
    if (!drv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unknown driver '%s'", fmt);
        return NULL;
    }
    /* A path, or a remote target such as QEMU's nbd:unix:PATH:... */
    file = bd_formats_protocol_options(filename, errp);
    if (!file) {
        return NULL;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    if (node_name) {
        g_variant_dict_insert(&d, "node-name", "s", node_name);
    }
    if (no_backing && drv->has_default_backing) {
        g_variant_dict_insert_value(&d, "backing", bd_variant_null());
    }
    g_variant_dict_insert_value(&d, "file", file);
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    BdNode *node = bd_node_open(opts, errp);

    if (node && probed) {
        bd_formats_raw_set_probed(node);
    }
    return node;
}

static gboolean drive_mirror(GVariant *args, JsonNode **ret, GError **errp)
{
    BdMirrorParams p = { 0 };
    MirrorArgs a = { 0 };
    const char *filename;
    gboolean existing;
    const char *node_name;
    BdNode *backing;
    gboolean full;

    (void)ret;
    bd_schema_decode(drive_mirror_fields, args, &a);
    filename = a.target;
    existing = a.mode == BD_CTL_NEW_IMAGE_EXISTING;
    node_name = a.node_name;
    p.bs = lookup_root_node(a.device, errp);
    if (!p.bs || !bd_chain_check_busy(p.bs, errp)) {
        return FALSE;
    }
    const char *fmt = a.format ? a.format
                               : existing ? NULL : p.bs->drv->name;
    backing = bd_chain_next(bd_chain_skip_filters(p.bs));
    full = a.sync == BD_CTL_SYNC_FULL ||
           (a.sync == BD_CTL_SYNC_TOP && !backing);
    if (a.sync == BD_CTL_SYNC_NONE) {
        backing = p.bs;
    }
    if (a.replaces && !node_name) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "a node-name must be provided when replacing a named "
                    "node of the graph");
        return FALSE;
    }
    if (!existing &&
        !bd_ctl_image_create(filename, fmt, (uint64_t)bd_node_getlength(p.bs),
                             full ? NULL : backing, errp)) {
        return FALSE;
    }
    g_autoptr(BdNode) target = open_target(filename, fmt, node_name,
                                           !existing, errp);
    if (!target) {
        return FALSE;
    }
    p.target = target;
    p.no_unmap = !a.unmap;
    p.target_backing = existing || full ? NULL : backing;
    return mirror_common(&a, &p, errp);
}

/* A target on a remote cluster connects off the main thread first. */
static gboolean drive_mirror_async(GVariant *args, BdQmpPending *p)
{
    return bd_ctl_open_by_name_async(args, p, "target", drive_mirror);
}

static const BdQmpCommand mirror_commands[] = {
    { "blockdev-mirror", mirror_args_fn, FALSE, NULL, blockdev_mirror },
    { "drive-mirror", drive_mirror_args_fn, FALSE, NULL, drive_mirror,
      drive_mirror_async },
    { NULL } };

void bd_cmd_mirror_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(mirror_commands);
}
