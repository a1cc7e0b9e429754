/* SPDX-License-Identifier: MIT */
/* blockdev-create for qcow2: BlockdevCreateOptionsQcow2 and the driver's
 * create hook (create-qapi.c). */
#ifndef BD_FORMATS_QCOW2_CREATE_QAPI_H
#define BD_FORMATS_QCOW2_CREATE_QAPI_H

#include "graph/node.h"

/* PreallocMode, in QAPI order. */
typedef enum {
    QCOW2_PREALLOC_OFF,
    QCOW2_PREALLOC_METADATA,
    QCOW2_PREALLOC_FALLOC,
    QCOW2_PREALLOC_FULL,
} Qcow2Prealloc;

extern const BdSchemaField bd_qcow2_create_options[];
gboolean bd_qcow2_create_hook(GVariant *options, GError **errp);
/* Preallocate a freshly created empty image on 'file' of guest size
 * 'size': "metadata" (L2 tables and data clusters mapped), "falloc"
 * (and the data area allocated), "full" (and zeroes written). */
gboolean bd_qcow2_preallocate(BdNode *file, uint64_t size,
                              Qcow2Prealloc mode, GError **errp);

#endif
