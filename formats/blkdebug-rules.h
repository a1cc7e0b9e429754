/* SPDX-License-Identifier: MIT */
/* blkdebug's rule engine: rules from a config file and from options, states, and the error check.
 *
 * Thread model: rules are built on the main thread at open; afterwards
 * bd_blkdebug_rules_event() and bd_blkdebug_rules_check() run on any
 * thread and take the set's own lock (a leaf lock: nothing is called
 * while it is held).
 */
#ifndef BD_FORMATS_BLKDEBUG_RULES_H
#define BD_FORMATS_BLKDEBUG_RULES_H

#include <glib.h>
#include <stdint.h>
#include "graph/debug-event.h"
#include "graph/schema.h"

/* QEMU's BlkdebugIOType, in QAPI order. */
typedef enum {
    BD_BLKDEBUG_IO_READ,
    BD_BLKDEBUG_IO_WRITE,
    BD_BLKDEBUG_IO_WRITE_ZEROES,
    BD_BLKDEBUG_IO_DISCARD,
    BD_BLKDEBUG_IO_FLUSH,
    BD_BLKDEBUG_IO_BLOCK_STATUS,
    BD_BLKDEBUG_IO__MAX,
} BdBlkdebugIOType;

extern const char *const bd_blkdebug_iotype_names[];

/* The option lists' schemas: [BlkdebugInjectErrorOptions] and
 * [BlkdebugSetStateOptions], whose elements are a config file's
 * sections too. */
extern const BdSchemaType bd_blkdebug_inject_error_list;
extern const BdSchemaType bd_blkdebug_set_state_list;

typedef struct BdBlkdebugRules BdBlkdebugRules;

/* The rules of 'config' (a file name, or NULL) followed by those of the
 * validated 'inject-error' and 'set-state' option lists (av, or NULL).
 * The state starts at 1.  NULL with *errp set (QEMU's messages). */
BdBlkdebugRules *bd_blkdebug_rules_new(const char *config,
                                       GVariant *inject_error,
                                       GVariant *set_state, GError **errp);
void bd_blkdebug_rules_free(BdBlkdebugRules *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdBlkdebugRules, bd_blkdebug_rules_free)

/* An event happened: rules for it in the current state fire (errors
 * become active for the next requests, the state may change). */
void bd_blkdebug_rules_event(BdBlkdebugRules *r, int event);
/* A request [offset, offset+bytes) of type 'iotype' is about to be
 * made: 0, or the -errno an active rule injects ('once' rules are then
 * dropped). */
int bd_blkdebug_rules_check(BdBlkdebugRules *r, uint64_t offset,
                            uint64_t bytes, BdBlkdebugIOType iotype);
/* The current state (tests). */
int64_t bd_blkdebug_rules_state(BdBlkdebugRules *r);

#endif
