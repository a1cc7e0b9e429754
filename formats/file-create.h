/* SPDX-License-Identifier: MIT */
/* blockdev-create for the 'file' driver (BlockdevCreateOptionsFile). */
#ifndef BD_FORMATS_FILE_CREATE_H
#define BD_FORMATS_FILE_CREATE_H

#include "graph/node.h"

extern const BdSchemaField bd_file_create_options[];
gboolean bd_file_create(GVariant *options, GError **errp);

#endif
