/* SPDX-License-Identifier: MIT */
/* Between the commit job (commit.c) and its filter (commit-top.c).
 *
 * Thread model: see commit-top.c.
 */
#ifndef BD_JOBS_COMMIT_INT_H
#define BD_JOBS_COMMIT_INT_H

#include "graph/node.h"

/* The 'commit_top' filter driver the jobs insert: internal, opened by
 * driver pointer (bd_node_open_driver), never registered. */
extern const BdDriver bd_commit_top_driver;

#endif
