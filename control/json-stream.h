/* SPDX-License-Identifier: MIT */
/* Splitting a QMP byte stream into top-level JSON values (json-stream.c). */
#ifndef BD_CONTROL_JSON_STREAM_H
#define BD_CONTROL_JSON_STREAM_H

#include <glib.h>

typedef struct BdJsonStream BdJsonStream;

/* Called once per complete value: 'text' (NUL-terminated, 'len' bytes)
 * and error NULL, or text NULL/with an error message (QEMU's wording)
 * when the value was malformed.  The callback may not free the stream. */
typedef void (*BdJsonStreamFunc)(const char *text, gsize len,
                                 const char *error, gpointer opaque);

BdJsonStream *bd_json_stream_new(gsize max_size, BdJsonStreamFunc fn,
                                 gpointer opaque);
void bd_json_stream_feed(BdJsonStream *s, const char *data, gsize len);
void bd_json_stream_free(BdJsonStream *s);

#endif
