/* SPDX-License-Identifier: MIT */
/* The common export layer: block-export-add/del/query for every export
 * type (nbd, fuse), reference counting and BLOCK_EXPORT_DELETED.
 *
 * An export holds one entry handle on its node.  Its reference count is
 * one for the user (dropped by block-export-del) plus one per client
 * connection or open file; when it reaches zero the export is destroyed
 * on the main loop and BLOCK_EXPORT_DELETED {"id"} is emitted.
 *
 * Thread model: add/del/query and the driver's create/request_shutdown/
 * destroy run on the main thread; bd_export_ref/unref from any thread.
 */
#ifndef BD_EXPORT_EXPORT_H
#define BD_EXPORT_EXPORT_H

#include "graph/entry.h"

typedef struct BdExport BdExport;
typedef struct BdExportDriver BdExportDriver;

struct BdExportDriver {
    const char *type;                /* "nbd", "fuse" */
    /* Type-specific members of BlockExportOptions<Type>; {NULL}-ended. */
    const BdSchemaField *options;
    size_t instance_size;            /* >= sizeof(BdExport), first member */
    /* Extra permissions the export needs beyond read (+write when
     * writable), e.g. BD_PERM_RESIZE for a growable FUSE export. */
    uint64_t (*extra_perm)(GVariant *options);
    /* Permissions the export refuses to share while it exists, e.g.
     * BD_PERM_RESIZE for NBD, whose clients cannot follow a resize. */
    uint64_t unshared;
    /* Start serving.  exp->entry, id, node_name, writable are set. */
    gboolean (*create)(BdExport *exp, GVariant *options, GError **errp);
    /* Stop accepting clients and disconnect the current ones; each
     * connection drops its reference as it goes. */
    void (*request_shutdown)(BdExport *exp);
    /* Free the driver's state; the common layer frees the rest. */
    void (*destroy)(BdExport *exp);
};

struct BdExport {
    const BdExportDriver *drv;
    char *id;
    char *node_name;
    BdEntry *entry;
    gboolean writable;
    gboolean writethrough;     /* every write is FUA */
    /* Atomic.  block-export-del mode=safe refuses while it is above one,
     * so a threaded export drops a request's reference before replying:
     * a client that has its answer must not look "in use". */
    gint refcount;
    gboolean user_owned;       /* not yet deleted by the user */
    gboolean shutting_down;
    /* block-export-del mode=hard waits for the clients to let go
     * (export.c's del_lock guards both). */
    gboolean main_waits;
    gboolean released;
};

void bd_export_register_driver(const BdExportDriver *drv);
const BdExportDriver *bd_export_find_driver(const char *type);
/* The BlockExportOptions union (on 'type') of the registered drivers. */
const BdSchemaType *bd_export_options_schema(void);

/* block-export-add with validated BlockExportOptions. */
BdExport *bd_export_add(GVariant *options, GError **errp);
/* block-export-del: mode "safe" refuses while clients are connected. */
gboolean bd_export_del(const char *id, gboolean hard, GError **errp);
BdExport *bd_export_find(const char *id);
/* All exports (borrowed), including those shutting down. */
GPtrArray *bd_export_list(void);
/* Request shutdown of every export (of 'type', or all when NULL). */
void bd_export_close_all(const char *type);
/* TRUE while any export still exists (shutdown waits on this). */
gboolean bd_export_any(void);

void bd_export_ref(BdExport *exp);
void bd_export_unref(BdExport *exp);

#endif
