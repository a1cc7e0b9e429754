/* SPDX-License-Identifier: MIT */
/* blockdev-create as a job of type 'create'.
 *
 * Thread model: main thread.
 */
#ifndef BD_JOBS_CREATE_H
#define BD_JOBS_CREATE_H

#include "jobs/job.h"

/* The BlockdevCreateOptions union (on 'driver') built from the
 * registered drivers' create_options; drivers without them get an empty
 * branch (and "Driver does not support blockdev-create"). */
const BdSchemaType *bd_create_options_schema(void);

/* Start a 'create' job for validated BlockdevCreateOptions.  Node
 * references (BlockdevRef members) are resolved here, on the main
 * thread, when the job starts: each referenced node is kept open
 * through an entry handle needing write and resize permission, and the
 * driver's create() sees the reference as that node's name (nested
 * definitions are opened first and named "#blockNNN").  A reference
 * that cannot be resolved fails the job, as in QEMU. */
gboolean bd_create_job_start(const char *job_id, GVariant *options,
                             GError **errp);

#endif
