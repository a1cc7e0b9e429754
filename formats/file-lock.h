/* SPDX-License-Identifier: MIT */
/* QEMU-compatible image locking with OFD byte-range locks (file driver).
 *
 * Byte layout, shared with QEMU and qemu-img so that each sees the other:
 *   100 + bit  read lock while this opener holds permission 'bit'
 *   200 + bit  read lock while this opener does NOT share 'bit'
 * where 'bit' is the index of a BD_PERM_* flag (consistent read = 0,
 * write = 1, write unchanged = 2, resize = 3).  A conflict is found by
 * testing for a write lock (F_OFD_GETLK) on the opposite byte: wanting
 * 'write' tests 201, refusing to share 'write' tests 101.  Our own OFD
 * locks never conflict with our own tests (same open file description).
 *
 * Thread model: a BdFileLock has no shared state: it is used by one
 * thread at a time, the file driver's on the main thread (permission
 * updates) and blockdev-create's own one on the create job's thread
 * (formats/file-create.c).
 */
#ifndef BD_FORMATS_FILE_LOCK_H
#define BD_FORMATS_FILE_LOCK_H

#include <glib.h>
#include <stdint.h>

typedef struct {
    int fd;                  /* borrowed from the file driver */
    gboolean enabled;        /* locking=on, or auto where OFD locks work */
    uint64_t perm, shared;   /* last committed permissions */
    uint64_t locked_perm;    /* bits whose byte 100+bit we hold */
    uint64_t locked_unshared;/* bits whose byte 200+bit we hold */
} BdFileLock;

/* TRUE when the kernel and file system behind 'fd' support OFD locks. */
gboolean bd_file_lock_supported(int fd);

void bd_file_lock_init(BdFileLock *lk, int fd, gboolean enabled);

/* Prepare a permission change: take the locks the union of old and new
 * needs, then test the new permissions against other processes.  On
 * failure the locks are back to the committed state and *errp says
 * "Failed to get \"write\" lock" (QEMU's text) with the hint naming
 * 'filename'. */
gboolean bd_file_lock_prepare(BdFileLock *lk, uint64_t perm, uint64_t shared,
                              const char *filename, GError **errp);
/* Keep exactly what perm/shared need and record them as committed. */
void bd_file_lock_commit(BdFileLock *lk, uint64_t perm, uint64_t shared);
/* Return to the committed state. */
void bd_file_lock_abort(BdFileLock *lk);

#endif
