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
/* Fill 'union_type' (named 'name', discriminated by "driver" over
 * 'base') with one variant per registered driver, whose members
 * are the BdDriver field at 'options_offset' (create_options,
 * amend_options); 'names_enum' gets the driver names.  Once, after the
 * drivers are registered (x-blockdev-amend shares it with create). */
void bd_driver_options_union(BdSchemaType *union_type,
                             BdSchemaType *names_enum,
                             const BdSchemaField *base,
                             const char *name, size_t options_offset);

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
