/* SPDX-License-Identifier: MIT */
/* Between the commit job (commit.c) and its filter (commit-top.c).
 *
 * Thread model: the notify callback runs on the writing thread.
 */
#ifndef BD_JOBS_COMMIT_INT_H
#define BD_JOBS_COMMIT_INT_H

#include "graph/node.h"

typedef void (*BdCommitTopNotify)(void *opaque, uint64_t offset,
                                  uint64_t bytes);
/* Active commit: report every write through the filter 'node'. */
void bd_commit_top_set_notify(BdNode *node, BdCommitTopNotify fn,
                              void *opaque);

/* The 'commit_top' filter driver the jobs insert: internal, opened by
 * driver pointer (bd_node_open_driver), never registered. */
extern const BdDriver bd_commit_top_driver;

#endif
