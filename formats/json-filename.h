/* SPDX-License-Identifier: MIT */
/* QEMU-style "json:{...}" node filenames. */
#ifndef BD_FORMATS_JSON_FILENAME_H
#define BD_FORMATS_JSON_FILENAME_H

#include "graph/node.h"

/* Add to 'd' the members of 'fields' marked BD_FIELD_STRONG (QEMU's
 * strong_runtime_opts: what changes the data a node shows) that
 * 'options' gives, as given. */
void bd_formats_add_strong(GVariantDict *d, const BdSchemaField *fields,
                           GVariant *options);
/* The node's driver, its strong options as given and, recursively, its
 * children's: QEMU's full_open_options (floating a{sv}). */
GVariant *bd_formats_full_options(BdNode *node);
/* "json:" + that dictionary in QEMU's key order and JSON formatting. */
char *bd_formats_json_filename(BdNode *node);
/* "json:" + a dictionary a driver built itself (drivers whose full
 * options are not the generic ones: blkdebug, quorum); sinks 'dict'. */
char *bd_formats_json_of(GVariant *dict);
/* Whether a format node may show its file child's name as its own:
 * only over a node QEMU opens by file name (a protocol, or blkdebug,
 * blkverify, quorum) whose own name is not json:, as QEMU's
 * bdrv_refresh_filename; else json:. */
gboolean bd_formats_child_name_passes(BdNode *child);

#endif
