/* SPDX-License-Identifier: MIT */
/* blockdev-reopen: several nodes get new options and children as one
 * transaction (prepare all, then commit all or abort all). */
#define G_LOG_DOMAIN "blockd-graph"

#include "graph/node.h"

gboolean bd_reopen_prepare_fixed(BdReopenState *state, GError **errp)
{
    (void)state;
    (void)errp;
    return TRUE;
}
