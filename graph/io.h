/* SPDX-License-Identifier: MIT */
/* The node-level I/O wrappers drivers use to reach their children.
 *
 * Every request to a node passes through these: they check permissions
 * and read-only state, align requests to the node's request_alignment
 * (bounce buffers and read-modify-write), apply detect-zeroes and
 * discard policy, split at max_transfer, and call the driver.
 * Any thread.  0 (or a value) or -errno.
 */
#ifndef BD_GRAPH_IO_H
#define BD_GRAPH_IO_H

#include "graph/node.h"

int bd_node_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
                  int flags);
int bd_node_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                   const void *buf, int flags);
int bd_node_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                          int flags);
int bd_node_pdiscard(BdNode *node, uint64_t offset, uint64_t bytes);
/* Zero-copy read and write (BdDriver.pread_to_fd/pwrite_from_fd):
 * the same checks as pread/pwrite, and -ENOTSUP (nothing done) where
 * the node chain cannot, or the request needs the data in memory
 * (alignment, detect-zeroes): the caller falls back to a buffer. */
int bd_node_pread_to_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                        BdFdSink *sink, int flags);
int bd_node_pwrite_from_fd(BdNode *node, uint64_t offset, uint64_t bytes,
                           int in_fd, int flags);
int bd_node_flush(BdNode *node);
int bd_node_truncate(BdNode *node, uint64_t size);
int64_t bd_node_getlength(BdNode *node);
/* One step of block status of this node alone (no backing fall-through),
 * following BD_BLOCK_RAW and filters down to where the data lives. */
int bd_node_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                         uint64_t *pnum, uint64_t *map, BdNode **file);
/* Block status through the backing chain starting at 'node'; *depth (if
 * not NULL) gets the allocation depth (0 = nowhere). */
int bd_node_block_status_above(BdNode *node, uint64_t offset,
                               uint64_t bytes, uint64_t *pnum, int *depth);

/* Whether 'node' reads zeroes over [offset, offset + *pnum) by itself
 * (its zero clusters or holes, not a backing node's current data):
 * *pnum gets the length of the run the answer holds for, at most
 * 'bytes'.  FALSE on an error too (the caller then writes). */
gboolean bd_node_reads_own_zeroes(BdNode *node, uint64_t offset,
                                  uint64_t bytes, uint64_t *pnum);

/* Copy offload: [offset, offset + bytes) of 'src' to the same range of
 * 'dst' by the kernel (copy_file_range), without a buffer.  It applies
 * where block status maps the source's data to a host file (a file
 * node, raw over one, a format's data cluster) through drivers whose
 * reads pass through unchanged, and where 'dst' offers copy_range_from
 * with detect-zeroes off.  The write gets dst's bookkeeping
 * (permissions, request list, dirty bitmaps) as bd_node_pwrite gives
 * it.  Returns the bytes copied (> 0, perhaps fewer than asked), or
 * -ENOTSUP when no offload applies or the kernel refuses (the caller
 * reads and writes instead), or another -errno from the copy. */
int64_t bd_node_copy_range(BdNode *src, BdNode *dst, uint64_t offset,
                           uint64_t bytes);
/* The write half, for drivers whose copy_range_from writes into a child
 * (raw, qcow2): [offset, offset + bytes) of 'dst' from host fd 'fd' at
 * 'fd_offset'.  Same returns. */
int64_t bd_node_copy_range_from_fd(BdNode *dst, uint64_t offset,
                                   uint64_t bytes, int fd,
                                   uint64_t fd_offset);

/* The snapshot-access API of a node (see BdDriver's *_snapshot): its
 * frozen point-in-time view.  -ENOTSUP when the node has none. */
int bd_node_pread_snapshot(BdNode *node, uint64_t offset, uint64_t bytes,
                           void *buf);
int bd_node_block_status_snapshot(BdNode *node, uint64_t offset,
                                  uint64_t bytes, uint64_t *pnum,
                                  uint64_t *map, BdNode **file);
int bd_node_pdiscard_snapshot(BdNode *node, uint64_t offset,
                              uint64_t bytes);

/* The same through a child edge, as drivers call them. */
static inline int bd_child_pread(BdChild *c, uint64_t off, uint64_t n,
                                 void *buf, int flags)
{ return bd_node_pread(c->node, off, n, buf, flags); }
static inline int bd_child_pwrite(BdChild *c, uint64_t off, uint64_t n,
                                  const void *buf, int flags)
{ return bd_node_pwrite(c->node, off, n, buf, flags); }
static inline int bd_child_pwrite_zeroes(BdChild *c, uint64_t off,
                                         uint64_t n, int flags)
{ return bd_node_pwrite_zeroes(c->node, off, n, flags); }
static inline int bd_child_pdiscard(BdChild *c, uint64_t off, uint64_t n)
{ return bd_node_pdiscard(c->node, off, n); }
static inline int bd_child_pread_to_fd(BdChild *c, uint64_t off, uint64_t n,
                                       BdFdSink *sink, int flags)
{ return bd_node_pread_to_fd(c->node, off, n, sink, flags); }
static inline int bd_child_pwrite_from_fd(BdChild *c, uint64_t off,
                                          uint64_t n, int in_fd, int flags)
{ return bd_node_pwrite_from_fd(c->node, off, n, in_fd, flags); }
static inline int bd_child_flush(BdChild *c)
{ return bd_node_flush(c->node); }

/* TRUE when the buffer is all zero bytes. */
gboolean bd_buffer_is_zero(const void *buf, size_t len);

#endif
