/* SPDX-License-Identifier: MIT */
/* The 'commit' block job (block-commit): merge the images from 'top'
 * down to just above 'base' into 'base'.  An intermediate commit ends
 * by itself; an active commit (top is the active layer) mirrors new
 * writes, reaches 'ready' and pivots to the base on job-complete.
 *
 * Thread model: main thread.
 */
#ifndef BD_JOBS_COMMIT_H
#define BD_JOBS_COMMIT_H

#include "jobs/job.h"

typedef struct {
    const char *job_id;          /* NULL: the device's name */
    BdNode *bs;                  /* the device (root of the chain) */
    BdNode *top;                 /* first image merged */
    BdNode *base;                /* the image merged into */
    const char *backing_file;    /* name stored in the overlay's header */
    int64_t speed;
    BdOnError on_error;
    const char *filter_node_name;
    gboolean auto_finalize, auto_dismiss;
} BdCommitParams;

gboolean bd_commit_start(const BdCommitParams *p, GError **errp);
gboolean bd_commit_active_start(const BdCommitParams *p, GError **errp);

#endif
