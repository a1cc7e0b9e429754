/* SPDX-License-Identifier: MIT */
/* Image file names as QEMU reads them where a command or an image
 * header gives a name rather than options: a path ("file:" optional), a
 * protocol URI (nbd://, nbd+unix://, QEMU's nbd:unix:...), or json:{...}. */
#ifndef BD_FORMATS_FILENAME_H
#define BD_FORMATS_FILENAME_H

#include "graph/node.h"

/* The options of the protocol node 'filename' names: {"driver": "file",
 * "filename": PATH} or the nbd driver's.  Not for json: names.  A new
 * floating GVariant, or NULL with QEMU's messages.  Any thread. */
GVariant *bd_formats_protocol_options(const char *filename, GError **errp);

/* TRUE for a name that is not a local path: a protocol prefix the
 * drivers know ("nbd:", "nbd+unix:", ...) or json:. */
gboolean bd_formats_filename_is_remote(const char *filename);

/* The options of the node a backing file name (or json: name) gives,
 * with format 'fmt' (NULL: "raw" for a remote name, else probed from
 * the file).  'relative_to': the directory a relative path is taken
 * from, or NULL.  Validated options, a new full reference.  Main
 * thread. */
GVariant *bd_formats_image_options(const char *filename, const char *fmt,
                                   const char *relative_to, GError **errp);

/* json:{...} names are BlockdevOptions in JSON, validated by control/
 * against the schema, which formats/ may not call: control installs the
 * parser at start-up (it returns a full reference).  Without one, json:
 * names are refused. */
/* 'default_driver' goes in as "driver" when the JSON has none (QEMU
 * puts the image's backing format there). */
typedef GVariant *(*BdJsonOptionsParser)(const char *json,
                                         const char *default_driver,
                                         GError **errp);
void bd_formats_set_json_parser(BdJsonOptionsParser parser);

#endif
