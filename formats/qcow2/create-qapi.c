/* SPDX-License-Identifier: MIT */
/* blockdev-create for qcow2: the BlockdevCreateOptionsQcow2 members,
 * QEMU's option checks in QEMU's order, then bd_qcow2_create() on the
 * node named by 'file' and, if asked, preallocation (prealloc.c).
 *
 * Thread model: bd_qcow2_create_hook runs on the create job's thread.
 * The job has resolved 'file' on the main thread, holds the node and an
 * entry handle with write and resize permission on it, and passes the
 * node's name; the node pointer is looked up on the main thread again
 * (bd_node_find is main-thread only) while this thread waits.  The main
 * thread never waits for a create job, so this cannot deadlock.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <string.h>
#include "graph/error.h"
#include "formats/qcow2/create-qapi.h"
#include "formats/qcow2/qcow2.h"

static const char *const version_values[] = { "v2", "v3", NULL };
static const BdSchemaType version_type = {
    .name = "BlockdevQcow2Version", .kind = BD_SCHEMA_ENUM,
    .enum_values = version_values };
static const char *const prealloc_values[] = { "off", "metadata", "falloc",
                                               "full", NULL };
static const BdSchemaType prealloc_type = {
    .name = "PreallocMode", .kind = BD_SCHEMA_ENUM,
    .enum_values = prealloc_values };
static const char *const compression_values[] = { "zlib", NULL };
static const BdSchemaType compression_type = {
    .name = "Qcow2CompressionType", .kind = BD_SCHEMA_ENUM,
    .enum_values = compression_values };

const BdSchemaField bd_qcow2_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE },
    { "data-file", &bd_schema_blockdev_ref, TRUE },
    { "data-file-raw", &bd_schema_bool, TRUE },
    { "extended-l2", &bd_schema_bool, TRUE },
    { "size", &bd_schema_size, FALSE },
    { "version", &version_type, TRUE },
    { "backing-file", &bd_schema_str, TRUE },
    { "backing-fmt", &bd_schema_str, TRUE },
    { "encrypt", &bd_schema_any, TRUE },
    { "cluster-size", &bd_schema_size, TRUE },
    { "preallocation", &prealloc_type, TRUE },
    { "lazy-refcounts", &bd_schema_bool, TRUE },
    { "refcount-bits", &bd_schema_int, TRUE },
    { "compression-type", &compression_type, TRUE },
    { NULL } };

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

/* --- node lookup on the main thread --- */

typedef struct {
    const char *name;
    BdNode *node;
    gboolean done;
    GMutex lock;
    GCond cond;
} Lookup;

static gboolean lookup_cb(gpointer opaque)
{
    Lookup *l = opaque;
    BdNode *node = bd_node_find(l->name);

    g_mutex_lock(&l->lock);
    l->node = node;
    l->done = TRUE;
    g_cond_signal(&l->cond);
    g_mutex_unlock(&l->lock);
    return G_SOURCE_REMOVE;
}

static BdNode *find_node(const char *name)
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

/* --- options --- */

static gboolean check_options(GVariant *options, Qcow2CreateOptions *o,
                              GError **errp)
{
    const char *prealloc = bd_opts_get_str(options, "preallocation", "off");
    gint64 rbits = bd_opts_get_int(options, "refcount-bits", 16);
    guint64 cs = bd_opts_get_uint(options, "cluster-size", 65536);
    gboolean has_backing = bd_opts_has(options, "backing-file");

    o->size = bd_opts_get_uint(options, "size", 0);
    o->version = strcmp(bd_opts_get_str(options, "version", "v3"), "v2")
                 ? 3 : 2;
    o->lazy_refcounts = bd_opts_get_bool(options, "lazy-refcounts", FALSE);
    o->backing_file = bd_opts_get_str(options, "backing-file", NULL);
    o->backing_format = bd_opts_get_str(options, "backing-fmt", NULL);

    if (o->size % 512) {
        FAIL("Image size must be a multiple of 512 bytes");
    }
    if (bd_opts_get_bool(options, "extended-l2", FALSE)) {
        if (o->version < 3) {
            FAIL("Extended L2 entries are only supported with compatibility "
                 "level 1.1 and above (use version=v3 or greater)");
        }
        FAIL("Extended L2 entries are not supported by this server");
    }
    if (cs < 512 || cs > (1u << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
        FAIL("Cluster size must be a power of two between 512 and 2048k");
    }
    if (has_backing && strcmp(prealloc, "off") != 0) {
        FAIL("Backing file and preallocation can only be used at the same "
             "time if extended_l2 is on");
    }
    if (o->backing_format && !has_backing) {
        FAIL("Backing format cannot be used without backing file");
    }
    if (o->version < 3 && o->lazy_refcounts) {
        FAIL("Lazy refcounts only supported with compatibility level 1.1 "
             "and above (use version=v3 or greater)");
    }
    if (rbits <= 0 || rbits > 64 || (rbits & (rbits - 1))) {
        FAIL("Refcount width must be a power of two and may not exceed 64 "
             "bits");
    }
    if (o->version < 3 && rbits != 16) {
        FAIL("Different refcount widths than 16 bits require compatibility "
             "level 1.1 or above (use version=v3 or greater)");
    }
    if (bd_opts_get_bool(options, "data-file-raw", FALSE) &&
        !bd_opts_has(options, "data-file")) {
        FAIL("data-file-raw requires data-file");
    }
    if (bd_opts_has(options, "data-file")) {
        if (o->version < 3) {
            FAIL("External data files are only supported with compatibility "
                 "level 1.1 and above (use version=v3 or greater)");
        }
        FAIL("External data files are not supported by this server");
    }
    if (bd_opts_has(options, "encrypt")) {
        FAIL("Encrypted images are not supported by this server");
    }
    o->cluster_size = (uint32_t)cs;
    o->refcount_bits = (uint32_t)rbits;
    return TRUE;
}

gboolean bd_qcow2_create_hook(GVariant *options, GError **errp)
{
    const char *file_name = bd_opts_get_str(options, "file", "");
    const char *prealloc = bd_opts_get_str(options, "preallocation", "off");
    Qcow2CreateOptions o = { 0 };
    BdNode *file;

    file = find_node(file_name);
    if (!file) {
        FAIL("Cannot find device='%s' nor node-name='%s'", file_name,
             file_name);
    }
    if (!check_options(options, &o, errp) ||
        !bd_qcow2_create(file, &o, errp)) {
        return FALSE;
    }
    if (strcmp(prealloc, "off") != 0) {
        return bd_qcow2_preallocate(file, o.size, prealloc, errp);
    }
    return TRUE;
}
