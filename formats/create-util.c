/* SPDX-License-Identifier: MIT */
/* Helpers shared by the image formats' blockdev-create hooks.
 *
 * Thread model: bd_formats_create_find_node runs on a create job's
 * thread (or the main thread) and hands the lookup to the main loop;
 * the main thread never waits for a create job, so this cannot
 * deadlock.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include "graph/error.h"
#include "graph/main-thread.h"
#include "formats/create-util.h"

typedef struct {
    const char *name;
    BdNode *node;
    gboolean done;
    GMutex lock;
    GCond cond;
} Lookup;

static gboolean lookup_cb(gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    Lookup *l = opaque;
    BdNode *node = bd_node_find(l->name);

    g_mutex_lock(&l->lock);
    l->node = node;
    l->done = TRUE;
    g_cond_signal(&l->cond);
    g_mutex_unlock(&l->lock);
    return G_SOURCE_REMOVE;
}

BdNode *bd_formats_create_find_node(const char *name)
{
    Lookup l = { .name = name };
    GSource *src;

    if (g_main_context_is_owner(g_main_context_default())) {
        return bd_node_find(name);
    }
    g_mutex_init(&l.lock);
    g_cond_init(&l.cond);
    src = g_idle_source_new();
    g_source_set_priority(src, G_PRIORITY_DEFAULT);
    g_source_set_callback(src, lookup_cb, &l, NULL);
    g_source_attach(src, NULL);
    g_source_unref(src);
    g_mutex_lock(&l.lock);
    while (!l.done) {
        g_cond_wait(&l.cond, &l.lock);
    }
    g_mutex_unlock(&l.lock);
    g_mutex_clear(&l.lock);
    g_cond_clear(&l.cond);
    return l.node;
}

BdNode *bd_formats_create_file_node(GVariant *file, GError **errp)
{
    const char *name = "";
    BdNode *node;

    if (file && g_variant_is_of_type(file, G_VARIANT_TYPE_STRING)) {
        name = g_variant_get_string(file, NULL);
    }
    node = bd_formats_create_find_node(name);
    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", name, name);
    }
    return node;
}

void bd_formats_uuid_generate(uint8_t out[16])
{
    for (int i = 0; i < 16; i += 4) {
        guint32 r = g_random_int();
        out[i] = (uint8_t)r;
        out[i + 1] = (uint8_t)(r >> 8);
        out[i + 2] = (uint8_t)(r >> 16);
        out[i + 3] = (uint8_t)(r >> 24);
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
}
