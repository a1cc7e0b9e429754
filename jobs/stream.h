/* SPDX-License-Identifier: MIT */
/* The 'stream' block job (block-stream): copy the data of the images
 * between a node and its base into the node, then drop them.
 *
 * Thread model: bd_stream_start on the main thread.
 */
#ifndef BD_JOBS_STREAM_H
#define BD_JOBS_STREAM_H

#include "jobs/job.h"

typedef struct {
    const char *job_id;          /* NULL: the device's name */
    BdNode *bs;                  /* the node streamed into */
    BdNode *base;                /* the new backing node, NULL: none */
    const char *backing_file;    /* name stored in the image header */
    BdNode *bottom;              /* lowest node copied from, or NULL */
    int64_t speed;
    BdOnError on_error;
    const char *filter_node_name;
    gboolean auto_finalize, auto_dismiss;
} BdStreamParams;

/* Checks, graph set-up (copy-on-read filter, frozen links) and start.
 * The caller has validated the arguments (control/cmd-stream.c). */
gboolean bd_stream_start(const BdStreamParams *p, GError **errp);

#endif
