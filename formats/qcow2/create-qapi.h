/* SPDX-License-Identifier: MIT */
/* blockdev-create for qcow2: BlockdevCreateOptionsQcow2 and the driver's
 * create hook (create-qapi.c). */
#ifndef BD_FORMATS_QCOW2_CREATE_QAPI_H
#define BD_FORMATS_QCOW2_CREATE_QAPI_H

#include "graph/node.h"

extern const BdSchemaField bd_qcow2_create_options[];
gboolean bd_qcow2_create_hook(GVariant *options, GError **errp);

#endif
