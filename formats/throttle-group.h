/* SPDX-License-Identifier: MIT */
/* Throttle groups: named, shared I/O limits (QEMU's throttle-group objects) with leaky-bucket accounting.
 *
 * A group holds one configuration of six leaky buckets (bytes and
 * operations, each total/read/write, with optional bursts) as QEMU's
 * util/throttle.c defines them.  Every throttle node naming the group
 * accounts its requests against the same buckets; a request over the
 * limit waits until the buckets have leaked enough.
 *
 * Thread model: the registry (create, delete, get, put) is used from the
 * main thread; bd_throttle_group_intercept() and bd_throttle_group_kick()
 * run on any thread.  Each group's buckets and wait queue are protected
 * by the group's own mutex; nothing else is locked while it is held.
 */
#ifndef BD_FORMATS_THROTTLE_GROUP_H
#define BD_FORMATS_THROTTLE_GROUP_H

#include <glib.h>
#include <stdint.h>
#include "graph/schema.h"

/* QEMU's THROTTLE_VALUE_MAX. */
#define BD_THROTTLE_VALUE_MAX 1000000000000000ULL

typedef enum {
    BD_THROTTLE_BPS_TOTAL,
    BD_THROTTLE_BPS_READ,
    BD_THROTTLE_BPS_WRITE,
    BD_THROTTLE_OPS_TOTAL,
    BD_THROTTLE_OPS_READ,
    BD_THROTTLE_OPS_WRITE,
    BD_THROTTLE_BUCKETS,
} BdThrottleBucketType;

/* Rates are unsigned as in QEMU: a negative value given by a client
 * wraps to a huge one, which the validity check refuses. */
typedef struct {
    uint64_t avg;           /* units per second; 0: no limit */
    uint64_t max;           /* burst rate (units per second); 0: none */
    double level;           /* units accounted and not yet leaked */
    double burst_level;     /* the same, for bursts longer than 1 s */
    uint64_t burst_length;  /* seconds a burst at 'max' may last */
} BdLeakyBucket;

typedef struct {
    BdLeakyBucket buckets[BD_THROTTLE_BUCKETS];
    uint64_t op_size;       /* iops-size: bytes counted as one op */
} BdThrottleConfig;

/* --- bucket arithmetic (pure; unit-tested) --- */

/* All buckets unlimited, burst length 1. */
void bd_throttle_config_init(BdThrottleConfig *cfg);
/* QEMU's throttle_is_valid(), with its messages. */
gboolean bd_throttle_config_is_valid(const BdThrottleConfig *cfg,
                                     GError **errp);
/* Prepare a valid config for use: levels zeroed. */
void bd_throttle_config_reset(BdThrottleConfig *cfg);
/* Whether any bucket has a rate. */
gboolean bd_throttle_config_enabled(const BdThrottleConfig *cfg);
/* Leak every bucket by 'delta_ns' nanoseconds' worth. */
void bd_throttle_leak(BdThrottleConfig *cfg, int64_t delta_ns);
/* Nanoseconds a read or write must wait before it may go (0: now). */
int64_t bd_throttle_compute_wait(const BdThrottleConfig *cfg,
                                 gboolean is_write);
/* Account a request of 'bytes' that has been let through. */
void bd_throttle_account(BdThrottleConfig *cfg, gboolean is_write,
                         uint64_t bytes);

/* The schema of ThrottleGroupProperties (object-add's throttle-group). */
extern const BdSchemaType bd_throttle_group_props_type;

/* ThrottleLimits (qom-get/qom-set of a group's 'limits'): its 19
 * members in schema order, by index. */
#define BD_THROTTLE_N_LIMITS 19
void bd_throttle_config_to_limits(const BdThrottleConfig *cfg,
                                  gint64 out[BD_THROTTLE_N_LIMITS]);
const char *bd_throttle_limit_name(gsize i);
const BdSchemaType *bd_throttle_limits_type(void);
/* Apply a validated ThrottleLimits dictionary over 'cfg' and check the
 * result (QEMU's messages). */
gboolean bd_throttle_config_from_limits(BdThrottleConfig *cfg,
                                        GVariant *limits, GError **errp);

/* Fill 'cfg' (initialised) from validated ThrottleGroupProperties: the
 * 'limits' dictionary (ThrottleLimits) and the legacy flat x-iops-total,
 * ... properties, in the order QEMU sets them.  Checks what QEMU's
 * property setters check, which for 'limits' includes
 * bd_throttle_config_is_valid() of what is set so far; the caller checks
 * the final combination once the id is known to be free. */
gboolean bd_throttle_config_from_props(BdThrottleConfig *cfg,
                                       GVariant *props, GError **errp);

/* --- the registry of named groups --- */

typedef struct BdThrottleGroup BdThrottleGroup;

/* A throttle node's membership: while 'disabled' > 0 (the node is
 * drained) its requests are accounted but never wait.  The rest is the
 * group's, under its lock: the member's waiting requests per direction
 * and its place in the group's round-robin.  Zero-initialise it. */
typedef struct {
    gint disabled;
    GQueue waiting[2];       /* Waiter links: [0] reads, [1] writes */
    GList turn[2];           /* link in the group's round-robin queue */
} BdThrottleMember;

/* object-add: register group 'id' with a config already validated.
 * The caller has checked that 'id' is free. */
void bd_throttle_group_create(const char *id, const BdThrottleConfig *cfg);
gboolean bd_throttle_group_exists(const char *id);
/* object-del: refused while a throttle node uses the group ("object 'X'
 * is in use, can not be deleted"). */
gboolean bd_throttle_group_delete(const char *id, GError **errp);
/* Take a user reference on group 'id' ("Throttle group 'X' does not
 * exist" when absent); bd_throttle_group_put drops it. */
BdThrottleGroup *bd_throttle_group_get(const char *id, GError **errp);
void bd_throttle_group_put(BdThrottleGroup *tg);
/* Main thread; the group 'id' must exist.  Read its limits, or replace
 * them live (levels reset, waiters woken). */
void bd_throttle_group_get_config(const char *id, BdThrottleConfig *cfg);
void bd_throttle_group_set_config(const char *id,
                                  const BdThrottleConfig *cfg);
const char *bd_throttle_group_name(const BdThrottleGroup *tg);

/* Wait until a request of 'bytes' may go, then account it.  Returns at
 * once when the group has no limits or m->disabled > 0.  As in QEMU, the
 * members with waiting requests take turns (round-robin, per direction),
 * so a busy node cannot starve the others of its group; each member's
 * own requests go in arrival order.  Any thread. */
void bd_throttle_group_intercept(BdThrottleGroup *tg, BdThrottleMember *m,
                                 gboolean is_write, uint64_t bytes);
/* Wake every waiter so that those of a now-disabled member leave. */
void bd_throttle_group_kick(BdThrottleGroup *tg);

#endif
