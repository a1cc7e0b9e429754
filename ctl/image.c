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
#include "formats/image-create.h"
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

gboolean bd_ctl_qcow2_create(const char *path, uint64_t size,
                             const char *backing, GError **errp)
{
    return bd_formats_image_create(path, "qcow2", size, backing,
                                   backing ? "qcow2" : NULL, errp);
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
