/* SPDX-License-Identifier: MIT */
/* Backup images written and read with blockd's own drivers (formats/
 * linked into blockctl): create a qcow2 (optionally over a backing
 * file), open an image or a chain through an entry handle.
 *
 * Thread model: create/open/close on blockctl's main thread (the graph's
 * main thread, claimed at start); the entry's data calls from the copy
 * workers.
 */
#include <string.h>

#include "ctl/backup.h"
#include "formats/registry.h"
#include "graph/main-thread.h"

void bd_ctl_graph_init(void)
{
    static gboolean done;

    if (!done) {
        bd_main_thread_claim();
        /* The graph's main thread owns the default context: drivers that
         * look things up "on the main thread" (qcow2's create) do it
         * directly here, with no loop running. */
        g_main_context_acquire(NULL);
        bd_formats_register_all();
        done = TRUE;
    }
}

static gboolean run_create(const char *driver, GVariant *opts, GError **errp)
{
    const BdDriver *drv = bd_driver_find(driver);
    g_autoptr(GVariant) ref = g_variant_ref_sink(opts);

    return drv->create(ref, errp);
}

gboolean bd_ctl_qcow2_create(const char *path, uint64_t size,
                             const char *backing, GError **errp)
{
    g_autofree char *name = g_strdup_printf("blockctl-create-%u",
                                            g_random_int());
    GVariantDict d;
    g_autoptr(BdNode) file = NULL;

    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", path);
    g_variant_dict_insert(&d, "size", "t", (guint64)0);
    if (!run_create("file", g_variant_dict_end(&d), errp)) {
        return FALSE;
    }
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "file");
    g_variant_dict_insert(&d, "filename", "s", path);
    g_variant_dict_insert(&d, "node-name", "s", name);
    g_autoptr(GVariant) fopts = g_variant_ref_sink(g_variant_dict_end(&d));
    file = bd_node_open(fopts, errp);
    if (!file) {
        return FALSE;
    }
    file->monitor_owned = TRUE;
    /* The format writes its metadata through a handle that may grow
     * the file (as the daemon's image creation does). */
    g_autoptr(BdEntry) writer = bd_entry_new(file, NULL,
                                             BD_PERM_WRITE | BD_PERM_RESIZE,
                                             BD_PERM_ALL, errp);
    if (!writer) {
        file->monitor_owned = FALSE;
        return FALSE;
    }
    bd_entry_set_allow_beyond_eof(writer, TRUE);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", "qcow2");
    g_variant_dict_insert(&d, "file", "s", name);
    g_variant_dict_insert(&d, "size", "t", (guint64)size);
    if (backing) {
        g_variant_dict_insert(&d, "backing-file", "s", backing);
        g_variant_dict_insert(&d, "backing-fmt", "s", "qcow2");
    }
    gboolean ok = run_create("qcow2", g_variant_dict_end(&d), errp);
    file->monitor_owned = FALSE;
    return ok;
}

BdEntry *bd_ctl_image_open(const char *path, gboolean writable,
                           gboolean with_backing, GError **errp)
{
    const char *fmt = bd_formats_probe_file(path);
    GVariantDict d, f;
    g_autoptr(BdNode) node = NULL;

    g_variant_dict_init(&f, NULL);
    g_variant_dict_insert(&f, "driver", "s", "file");
    g_variant_dict_insert(&f, "filename", "s", path);
    g_variant_dict_init(&d, NULL);
    g_variant_dict_insert(&d, "driver", "s", fmt);
    g_variant_dict_insert_value(&d, "file", g_variant_dict_end(&f));
    g_variant_dict_insert(&d, "read-only", "b", !writable);
    if (!with_backing && !strcmp(fmt, "qcow2")) {
        /* Writing an overlay: its backing file is not read. */
        g_variant_dict_insert_value(&d, "backing", bd_variant_null());
    }
    g_autoptr(GVariant) opts = g_variant_ref_sink(g_variant_dict_end(&d));
    node = bd_node_open(opts, errp);
    if (!node) {
        return NULL;
    }
    return bd_entry_new(node, "blockctl",
                        BD_PERM_CONSISTENT_READ |
                        (writable ? BD_PERM_WRITE : 0),
                        BD_PERM_ALL, errp);
}

void bd_ctl_image_close(BdEntry *entry)
{
    g_autoptr(BdNode) node = NULL;

    if (!entry) {
        return;
    }
    node = bd_node_ref(bd_entry_node(entry));
    bd_entry_free(entry);
}
