/* SPDX-License-Identifier: MIT */
/* x-blockdev-amend as a job of type 'amend'.
 *
 * Thread model: main thread.
 */
#ifndef BD_JOBS_AMEND_H
#define BD_JOBS_AMEND_H

#include "jobs/job.h"

/* The BlockdevAmendOptions union (on 'driver') built from the
 * registered drivers' amend_options; drivers without them get an empty
 * branch ("Driver does not support x-blockdev-amend"). */
const BdSchemaType *bd_amend_options_schema(void);

/* Start an 'amend' job (auto-finalized, dismissed by the user, as
 * QEMU's) changing node 'node_name' with validated options. */
gboolean bd_amend_job_start(const char *job_id, const char *node_name,
                            GVariant *options, gboolean force,
                            GError **errp);

#endif
