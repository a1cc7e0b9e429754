/* SPDX-License-Identifier: MIT */
/* block-stream and block-commit: argument schemas and QEMU's checks in
 * QEMU's order (blockdev.c), then the jobs of jobs/stream.c and
 * jobs/commit.c.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "graph/query.h"
#include "jobs/chain.h"
#include "jobs/commit.h"
#include "jobs/stream.h"

/* --- schemas (qapi/block-core.json) --- */

/* The arguments of both commands. */
typedef struct {
    const char *job_id;
    const char *device;
    const char *base;
    const char *base_node;
    const char *top;
    const char *top_node;
    const char *backing_file;
    const char *bottom;
    gint64 speed;
    BdOnError on_error;
    const char *filter_node_name;
    gboolean auto_finalize;
    gboolean auto_dismiss;
} StreamArgs;

#define A(f) BD_AT(StreamArgs, f)
#define COMMON_TAIL                                                     \
    BD_OPT("speed", &bd_schema_int, A(speed)),                          \
    BD_OPT("on-error", &bd_ctl_schema_on_error, A(on_error),            \
           .def.i = BD_ON_ERROR_REPORT),                                \
    BD_OPT("filter-node-name", &bd_schema_str, A(filter_node_name)),    \
    BD_OPT("auto-finalize", &bd_schema_bool, A(auto_finalize),          \
           .def.i = TRUE),                                              \
    BD_OPT("auto-dismiss", &bd_schema_bool, A(auto_dismiss), .def.i = TRUE)

static const BdSchemaField stream_fields[] = {
    BD_OPT("job-id", &bd_schema_str, A(job_id)),
    BD_FIELD("device", &bd_schema_str, A(device), .def.s = ""),
    BD_OPT("base", &bd_schema_str, A(base)),
    BD_OPT("base-node", &bd_schema_str, A(base_node)),
    BD_OPT("backing-file", &bd_schema_str, A(backing_file)),
    BD_OPT("bottom", &bd_schema_str, A(bottom)),
    COMMON_TAIL,
    { NULL } };
static const BdSchemaType stream_args = {
    .name = "q_obj_block-stream-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = stream_fields };

static const BdSchemaField commit_fields[] = {
    BD_OPT("job-id", &bd_schema_str, A(job_id)),
    BD_FIELD("device", &bd_schema_str, A(device), .def.s = ""),
    BD_OPT("base-node", &bd_schema_str, A(base_node)),
    BD_OPT("base", &bd_schema_str, A(base)),
    BD_OPT("top-node", &bd_schema_str, A(top_node)),
    BD_OPT("top", &bd_schema_str, A(top)),
    BD_OPT("backing-file", &bd_schema_str, A(backing_file)),
    COMMON_TAIL,
    { NULL } };
static const BdSchemaType commit_args = {
    .name = "q_obj_block-commit-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = commit_fields };
#undef A
#undef COMMON_TAIL

static const BdSchemaType *stream_args_fn(void) { return &stream_args; }
static const BdSchemaType *commit_args_fn(void) { return &commit_args; }

/* QEMU's bdrv_lookup_bs(name, name): device names do not exist here. */
static BdNode *lookup_bs(const char *device, const char *node_name,
                         GError **errp)
{
    BdNode *node = node_name ? bd_node_find(node_name) : NULL;

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'",
                    device ? device : "", node_name ? node_name : "");
    }
    return node;
}

/* --- block-stream --- */

static gboolean stream_check_busy(BdNode *bs, BdNode *end, GError **errp)
{
    for (BdNode *n = bs; n && n != end; n = bd_chain_next(n)) {
        if (!bd_chain_check_busy(n, errp)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean block_stream(GVariant *args, JsonNode **ret, GError **errp)
{
    StreamArgs a = { 0 };
    BdNode *bs, *base_bs = NULL, *bottom_bs = NULL;
    const char *base_name = NULL;
    g_autofree char *owned_name = NULL;

    bd_schema_decode(stream_fields, args, &a);
    const char *device = a.device;
    const char *base = a.base;
    const char *base_node = a.base_node;
    const char *bottom = a.bottom;
    const char *backing_file = a.backing_file;

    if (base && base_node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'base' and 'base-node' cannot be specified at the "
                    "same time");
        return FALSE;
    }
    if (base && bottom) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'base' and 'bottom' cannot be specified at the same "
                    "time");
        return FALSE;
    }
    if (bottom && base_node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'bottom' and 'base-node' cannot be specified at the "
                    "same time");
        return FALSE;
    }
    bs = lookup_bs(device, device, errp);
    if (!bs) {
        return FALSE;
    }
    if (base) {
        base_bs = bd_chain_find_backing_image(bs, base);
        if (!base_bs) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Can't find '%s' in the backing chain", base);
            return FALSE;
        }
        base_name = base;
    }
    if (base_node) {
        base_bs = lookup_bs(NULL, base_node, errp);
        if (!base_bs) {
            return FALSE;
        }
        if (bs == base_bs || !bd_chain_contains(bs, base_bs)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' is not a backing image of '%s'",
                        base_node, device);
            return FALSE;
        }
        /* Refreshed, as QEMU's bdrv_refresh_filename here: json: where
         * the file name alone would not open the base. */
        base_name = owned_name = bd_node_query_filename(base_bs);
    }
    if (bottom) {
        bottom_bs = lookup_bs(NULL, bottom, errp);
        if (!bottom_bs) {
            return FALSE;
        }
        if (bottom_bs->drv->is_filter) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' is a filter, use a non-filter node as "
                        "'bottom'", bottom);
            return FALSE;
        }
        if (!bd_chain_contains(bs, bottom_bs)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Node '%s' is not in a chain starting from '%s'",
                        bottom, device);
            return FALSE;
        }
    }
    if (!stream_check_busy(bs, bottom_bs ? bd_chain_next(bottom_bs)
                                         : base_bs, errp)) {
        return FALSE;
    }
    if (!base_bs && backing_file) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "backing file specified, but streaming the entire "
                    "chain");
        return FALSE;
    }

    BdStreamParams p = {
        .job_id = a.job_id,
        .bs = bs,
        .base = base_bs,
        .backing_file = backing_file ? backing_file : base_name,
        .bottom = bottom_bs,
        .speed = a.speed,
        .on_error = a.on_error,
        .filter_node_name = a.filter_node_name,
        .auto_finalize = a.auto_finalize,
        .auto_dismiss = a.auto_dismiss,
    };
    return bd_stream_start(&p, errp);
}

/* --- block-commit --- */

/* QEMU's qmp_get_root_bs(): a node no other node uses (a job using a
 * node is a parent of it in QEMU). */
static BdNode *get_root_bs(const char *device, GError **errp)
{
    BdNode *bs = bd_node_find(device);

    if (!bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", device);
        return NULL;
    }
    if (!bd_chain_check_busy(bs, NULL)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Need a root block node");
        return NULL;
    }
    for (GList *l = bs->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->parent) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Need a root block node");
            return NULL;
        }
    }
    return bs;
}

static BdNode *commit_find_top(const StreamArgs *a, BdNode *bs,
                               GError **errp)
{
    const char *top = a->top;
    const char *top_node = a->top_node;
    BdNode *top_bs = bs;

    if (top_node && top) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'top-node' and 'top' are mutually exclusive");
        return NULL;
    }
    if (top_node) {
        top_bs = lookup_bs(NULL, top_node, errp);
        if (!top_bs) {
            return NULL;
        }
        if (!bd_chain_contains(bs, top_bs)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "'%s' is not in this backing file chain", top_node);
            return NULL;
        }
    } else if (top && strcmp(bs->filename, top) != 0) {
        top_bs = bd_chain_find_backing_image(bs, top);
    }
    if (!top_bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Top image file %s not found", top ? top : "NULL");
    }
    return top_bs;
}

static BdNode *commit_find_base(const StreamArgs *a, BdNode *top_bs,
                                GError **errp)
{
    const char *base = a->base;
    const char *base_node = a->base_node;
    BdNode *base_bs = NULL;

    if (base_node && base) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "'base-node' and 'base' are mutually exclusive");
        return NULL;
    }
    if (base_node) {
        base_bs = lookup_bs(NULL, base_node, errp);
        if (base_bs && !bd_chain_contains(top_bs, base_bs)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "'%s' is not in this backing file chain", base_node);
            return NULL;
        }
        return base_bs;
    }
    if (base) {
        base_bs = bd_chain_find_backing_image(top_bs, base);
        if (!base_bs) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Can't find '%s' in the backing chain", base);
        }
        return base_bs;
    }
    /* The bottom of the chain (QEMU's bdrv_find_base: top itself when
     * it has no backing node). */
    for (BdNode *n = top_bs; n; n = bd_chain_next(n)) {
        if (!bd_chain_next(n)) {
            base_bs = n;
        }
    }
    if (!base_bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "There is no backimg image");
        return NULL;
    }
    return base_bs;
}

/* Someone holds write permission on the top: a guest writes there. */
static gboolean has_writer(BdNode *node)
{
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (c->perm & BD_PERM_WRITE) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean block_commit(GVariant *args, JsonNode **ret, GError **errp)
{
    StreamArgs a = { 0 };
    const char *backing_file;
    BdNode *bs, *top_bs, *base_bs;
    gboolean active;

    bd_schema_decode(commit_fields, args, &a);
    backing_file = a.backing_file;
    bs = get_root_bs(a.device, errp);
    if (!bs) {
        return FALSE;
    }
    top_bs = commit_find_top(&a, bs, errp);
    if (!top_bs) {
        return FALSE;
    }
    base_bs = commit_find_base(&a, top_bs, errp);
    if (!base_bs) {
        return FALSE;
    }
    for (BdNode *n = top_bs; n && n != bd_chain_next(base_bs);
         n = bd_chain_next(n)) {
        if (!bd_chain_check_busy(n, errp)) {
            return FALSE;
        }
    }
    if (top_bs == base_bs) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "cannot commit an image into itself");
        return FALSE;
    }
    active = bd_chain_skip_filters(top_bs) == bd_chain_skip_filters(bs);
    if ((active || has_writer(top_bs)) && backing_file) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, active
                    ? "'backing-file' specified, but 'top' is the active "
                      "layer"
                    : "'backing-file' specified, but 'top' has a writer "
                      "on it");
        return FALSE;
    }

    BdCommitParams p = {
        .job_id = a.job_id,
        .bs = bs,
        .top = top_bs,
        .base = base_bs,
        .backing_file = backing_file,
        .speed = a.speed,
        .on_error = a.on_error,
        .filter_node_name = a.filter_node_name,
        .auto_finalize = a.auto_finalize,
        .auto_dismiss = a.auto_dismiss,
    };
    if (active || has_writer(top_bs)) {
        return bd_commit_active_start(&p, errp);
    }
    if (!bd_chain_check_busy(bd_chain_find_overlay(bs, top_bs), errp)) {
        return FALSE;
    }
    return bd_commit_start(&p, errp);
}

static const BdQmpCommand stream_commands[] = {
    { "block-stream", stream_args_fn, FALSE, NULL, block_stream },
    { "block-commit", commit_args_fn, FALSE, NULL, block_commit },
    { NULL } };

void bd_cmd_stream_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(stream_commands);
}
