/* SPDX-License-Identifier: MIT */
/* Request lists: overlapping requests kept apart (see reqlist.h).
 *
 * Thread model: any thread; 'lock' is a leaf lock.  A request waits
 * only for requests that entered before it, so the waits follow the
 * arrival order and cannot form a cycle.
 */
#define G_LOG_DOMAIN "blockd-graph"

#include "graph/reqlist.h"

void bd_reqlist_init(BdReqList *l)
{
    bd_mutex_init(&l->lock);
    g_cond_init(&l->cond);
    l->head = l->tail = NULL;
    l->serialising = 0;
    l->waiters = 0;
}

void bd_reqlist_destroy(BdReqList *l) BD_NO_THREAD_SAFETY
{
    g_assert(l->head == NULL);
    g_cond_clear(&l->cond);
    bd_mutex_destroy(&l->lock);
}

void bd_reqlist_lock(BdReqList *l)
{
    bd_mutex_lock(&l->lock);
}

void bd_reqlist_unlock(BdReqList *l)
{
    bd_mutex_unlock(&l->lock);
}

static inline gboolean overlaps(const BdReq *r, uint64_t start, uint64_t end)
{
    return r->start < end && start < r->end;
}

gboolean bd_reqlist_overlaps_locked(BdReqList *l, uint64_t offset,
                                    uint64_t bytes)
{
    uint64_t end = offset + bytes < offset ? UINT64_MAX : offset + bytes;

    bd_mutex_assert_held(&l->lock);
    for (BdReq *r = l->head; r; r = r->next) {
        if (overlaps(r, offset, end)) {
            return TRUE;
        }
    }
    return FALSE;
}

void bd_reqlist_wait_locked(BdReqList *l)
{
    bd_mutex_assert_held(&l->lock);
    l->waiters++;
    bd_cond_wait(&l->cond, &l->lock);
    l->waiters--;
}

void bd_req_insert_locked(BdReqList *l, BdReq *req, uint64_t offset,
                          uint64_t bytes, gboolean serialising)
{
    bd_mutex_assert_held(&l->lock);
    req->start = offset;
    req->end = offset + bytes < offset ? UINT64_MAX : offset + bytes;
    req->serialising = serialising;
    req->next = NULL;
    req->prev = l->tail;
    if (l->tail) {
        l->tail->next = req;
    } else {
        l->head = req;
    }
    l->tail = req;
    if (serialising) {
        l->serialising++;
    }
}

void bd_req_remove_locked(BdReqList *l, BdReq *req)
{
    bd_mutex_assert_held(&l->lock);
    if (req->prev) {
        req->prev->next = req->next;
    } else {
        l->head = req->next;
    }
    if (req->next) {
        req->next->prev = req->prev;
    } else {
        l->tail = req->prev;
    }
    req->prev = req->next = NULL;
    if (req->serialising) {
        l->serialising--;
    }
    if (l->waiters) {
        g_cond_broadcast(&l->cond);
    }
}

/* A request that entered before 'req' and conflicts with it. */
static BdReq *earlier_conflict(BdReqList *l, BdReq *req)
    BD_REQUIRES(l->lock)
{
    if (!req->serialising && l->serialising == 0) {
        return NULL;
    }
    for (BdReq *r = l->head; r != req; r = r->next) {
        if ((r->serialising || req->serialising) &&
            overlaps(r, req->start, req->end)) {
            return r;
        }
    }
    return NULL;
}

void bd_req_begin(BdReqList *l, BdReq *req, uint64_t offset,
                  uint64_t bytes, gboolean serialising)
{
    bd_mutex_lock(&l->lock);
    bd_req_insert_locked(l, req, offset, bytes, serialising);
    while (earlier_conflict(l, req)) {
        bd_reqlist_wait_locked(l);
    }
    bd_mutex_unlock(&l->lock);
}

void bd_req_end(BdReqList *l, BdReq *req)
{
    bd_mutex_lock(&l->lock);
    bd_req_remove_locked(l, req);
    bd_mutex_unlock(&l->lock);
}
