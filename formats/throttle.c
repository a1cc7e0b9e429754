/* SPDX-License-Identifier: MIT */
/* The 'throttle' filter driver (QEMU's): requests are held to the limits of a throttle group, then passed to 'file'.
 *
 * Thread model: open, close, reopen and the drain hooks run on the main
 * thread; data callbacks on any thread.  The group pointer changes only
 * in reopen_commit, which runs with the node drained (no request in
 * flight), so data callbacks read it without a lock.  'member.disabled'
 * is atomic: while the node is drained its requests pass unthrottled
 * and those already waiting are released (bd_throttle_group_kick), so a
 * drain never waits for a throttle timer.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <string.h>
#include "graph/error.h"
#include "graph/node.h"
#include "graph/io.h"
#include "formats/json-filename.h"
#include "formats/throttle-group.h"

typedef struct {
    BdChild *file;
    BdThrottleGroup *group;   /* holds a user reference */
    BdThrottleMember member;
} ThrottleState;

typedef struct {
    const char *throttle_group;
    GVariant *file;
} ThrottleOptions;

/* QAPI BlockdevOptionsThrottle. */
static const BdSchemaField throttle_options[] = {
    { "throttle-group", &bd_schema_str, FALSE,
      BD_AT(ThrottleOptions, throttle_group), .def.s = "",
      .flags = BD_FIELD_STRONG | BD_FIELD_MUTABLE },
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(ThrottleOptions, file) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(ThrottleOptions, throttle_options)

static gboolean throttle_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(ThrottleOptions) o = { 0 };
    ThrottleState *s;
    BdChild *file;
    BdThrottleGroup *tg;

    bd_schema_decode(throttle_options, options, &o);
    /* As QEMU: the child first, then the group. */
    file = bd_node_open_child(node, o.file, "file",
                              BD_CHILD_FILTERED | BD_CHILD_PRIMARY, FALSE,
                              errp);
    if (!file) {
        return FALSE;
    }
    tg = bd_throttle_group_get(o.throttle_group, errp);
    if (!tg) {
        return FALSE;
    }
    s = g_new0(ThrottleState, 1);
    s->file = file;
    s->group = tg;
    node->opaque = s;
    g_free(node->filename);
    node->filename = bd_formats_json_filename(node);
    bd_node_set_size(node, (uint64_t)bd_node_getlength(file->node));
    return TRUE;
}

static void throttle_close(BdNode *node)
{
    ThrottleState *s = node->opaque;

    if (s) {
        bd_throttle_group_put(s->group);
        g_free(s);
        node->opaque = NULL;
    }
}

static BdChild *throttle_io(BdNode *node, gboolean is_write, uint64_t bytes)
{
    ThrottleState *s = node->opaque;

    bd_throttle_group_intercept(s->group, &s->member, is_write, bytes);
    return s->file;
}

static int throttle_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                          void *buf, int flags)
{
    return bd_child_pread(throttle_io(node, FALSE, bytes), offset, bytes,
                          buf, flags);
}

static int throttle_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                           const void *buf, int flags)
{
    return bd_child_pwrite(throttle_io(node, TRUE, bytes), offset, bytes,
                           buf, flags);
}

static int throttle_pwrite_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, int flags)
{
    return bd_child_pwrite_zeroes(throttle_io(node, TRUE, bytes), offset,
                                  bytes, flags);
}

static int throttle_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes)
{
    return bd_child_pdiscard(throttle_io(node, TRUE, bytes), offset, bytes);
}

static int throttle_flush(BdNode *node)
{
    ThrottleState *s = node->opaque;

    /* Flushes are not throttled (QEMU's filter neither). */
    return bd_child_flush(s->file);
}

static void throttle_drained_begin(BdNode *node)
{
    ThrottleState *s = node->opaque;

    if (s && g_atomic_int_add(&s->member.disabled, 1) == 0) {
        bd_throttle_group_kick(s->group);
    }
}

static void throttle_drained_end(BdNode *node)
{
    ThrottleState *s = node->opaque;

    if (s && g_atomic_int_get(&s->member.disabled) > 0) {
        g_atomic_int_dec_and_test(&s->member.disabled);
    }
}

/* Stage a user reference on the new group (unknown: QEMU's message). */
static gboolean throttle_reopen_prepare(BdReopenState *state, GError **errp)
{
    g_auto(ThrottleOptions) o = { 0 };
    BdThrottleGroup *tg;

    bd_schema_decode(throttle_options, state->options, &o);
    tg = bd_throttle_group_get(o.throttle_group, errp);

    state->opaque = tg;
    return tg != NULL;
}

static void throttle_reopen_commit(BdReopenState *state)
{
    ThrottleState *s = state->node->opaque;
    BdThrottleGroup *old = s->group;

    s->group = state->opaque;
    state->opaque = NULL;
    bd_throttle_group_put(old);
}

static void throttle_reopen_abort(BdReopenState *state)
{
    bd_throttle_group_put(state->opaque);
    state->opaque = NULL;
}

const BdDriver bd_throttle_driver = {
    .name = "throttle",
    .options = throttle_options,
    .is_filter = TRUE,
    .open = throttle_open,
    .close = throttle_close,
    .pread = throttle_pread,
    .pwrite = throttle_pwrite,
    .pwrite_zeroes = throttle_pwrite_zeroes,
    .pdiscard = throttle_pdiscard,
    .flush = throttle_flush,
    .drained_begin = throttle_drained_begin,
    .drained_end = throttle_drained_end,
    .reopen_prepare = throttle_reopen_prepare,
    .reopen_commit = throttle_reopen_commit,
    .reopen_abort = throttle_reopen_abort,
};
