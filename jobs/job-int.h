/* SPDX-License-Identifier: MIT */
/* Internal interfaces between the main-thread (job.c) and job-thread
 * (job-thread.c) halves of the job framework.
 *
 * Thread model: as marked on each function.
 */
#ifndef BD_JOBS_JOB_INT_H
#define BD_JOBS_JOB_INT_H

#include "jobs/job.h"

/* Time slice of the rate limiter (QEMU's BLOCK_JOB_SLICE_TIME). */
#define BD_JOB_SLICE_NS (100 * 1000 * 1000ll)

/* Main thread.  A transition the table does not allow aborts, in every
 * build (g_error: "job 'x': invalid state transition a -> b"). */
void bd_job_transition(BdJob *job, BdJobStatus to);
void bd_job_emit_block_event(BdJob *job, const char *name,
                             const char *error);
/* Idle callback: the work function returned. */
gboolean bd_job_exit(gpointer opaque);

/* The job thread's entry point. */
gpointer bd_job_thread_main(gpointer opaque);

#endif
