/* SPDX-License-Identifier: MIT */
/* Lists of requests in flight over byte ranges, and waiting on them:
 * the one mechanism that keeps overlapping requests apart (QEMU's
 * tracked requests and block/reqlist.c).
 *
 * Two requests in one list conflict when their ranges overlap and at
 * least one of them is serialising.  A request that enters the list
 * waits until no conflicting request that entered before it is left,
 * then runs; so conflicting requests run one at a time, in the order
 * they arrived, and waits cannot form a cycle.
 *
 * Every node keeps one list of its write requests (node->reqs, see
 * graph/io.c): a read-modify-write is serialising over its aligned
 * range, so an aligned write to the same block waits for it, and the
 * reverse.  Filters that copy data (copy-on-read) enter serialising
 * requests into their node's list too.  Users that pick their range
 * under the lock (copy-before-write picks clusters from its bitmap)
 * keep a list of their own and use the _locked functions.
 *
 * Thread model: any thread.  No I/O runs under 'lock'; the list takes
 * no other lock under it, and users of the _locked functions only the
 * dirty bitmaps' (copy-before-write picks its clusters there).  A BdReq lives on
 * its caller's stack (or in its state) from begin to end.
 */
#ifndef BD_GRAPH_REQLIST_H
#define BD_GRAPH_REQLIST_H

#include <glib.h>
#include <stdint.h>
#include "graph/lock.h"

typedef struct BdReq BdReq;
struct BdReq {
    uint64_t start, end;          /* [start, end) */
    gboolean serialising;
    BdReq *prev, *next;           /* [list lock] arrival order */
};

typedef struct {
    BdMutex lock;
    GCond cond;                   /* a request left the list */
    BdReq *head BD_GUARDED_BY(lock);   /* arrival order */
    BdReq *tail BD_GUARDED_BY(lock);
    unsigned serialising BD_GUARDED_BY(lock);  /* serialising listed */
    unsigned waiters BD_GUARDED_BY(lock);      /* asleep on cond */
} BdReqList;

void bd_reqlist_init(BdReqList *l);
/* The list must be empty (nothing in flight). */
void bd_reqlist_destroy(BdReqList *l);

/* Enter 'req' over [offset, offset + bytes) and wait until every
 * request that entered before it and conflicts with it has ended. */
void bd_req_begin(BdReqList *l, BdReq *req, uint64_t offset,
                  uint64_t bytes, gboolean serialising);
/* Leave the list; wakes the requests waiting for this one. */
void bd_req_end(BdReqList *l, BdReq *req);

/* For users that choose their range under the lock. */
void bd_reqlist_lock(BdReqList *l) BD_ACQUIRE(l->lock);
void bd_reqlist_unlock(BdReqList *l) BD_RELEASE(l->lock);
/* Any request in the list overlapping [offset, offset + bytes)? */
gboolean bd_reqlist_overlaps_locked(BdReqList *l, uint64_t offset,
                                    uint64_t bytes) BD_REQUIRES(l->lock);
/* Sleep until some request leaves the list (the lock is released
 * meanwhile and held again on return). */
void bd_reqlist_wait_locked(BdReqList *l) BD_REQUIRES(l->lock);
/* Enter or leave without waiting: the caller has checked. */
void bd_req_insert_locked(BdReqList *l, BdReq *req, uint64_t offset,
                          uint64_t bytes, gboolean serialising)
    BD_REQUIRES(l->lock);
void bd_req_remove_locked(BdReqList *l, BdReq *req) BD_REQUIRES(l->lock);

#endif
