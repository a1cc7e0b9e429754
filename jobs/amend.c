/* SPDX-License-Identifier: MIT */
/* The 'amend' job: x-blockdev-amend runs a driver's amend() on a job
 * thread (QEMU's blockdev_amend_run), with QEMU's checks before.
 *
 * Thread model: everything runs on the main thread except amend_run,
 * which runs on the job thread and calls only the driver's amend(); the
 * node is held by a reference until the job is freed.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <string.h>
#include "graph/error.h"
#include "graph/main-thread.h"
#include "jobs/amend.h"
#include "jobs/create.h"

typedef struct {
    BdJob common;
    BdNode *node;             /* a reference */
    GVariant *options;
    gboolean force;
} BdAmendJob;

/* --- schema --- */

typedef struct {
    const char *driver;
} AmendBase;

static BdSchemaType driver_enum;
static const BdSchemaField base_fields[] = {
    { "driver", &driver_enum, FALSE, BD_AT(AmendBase, driver), .def.s = "" },
    { NULL } };

const BdSchemaType *bd_amend_options_schema(void)
{
    static BdSchemaType union_type;
    static gsize done;

    if (g_once_init_enter(&done)) {
        bd_driver_options_union(&union_type, &driver_enum, base_fields,
                                "BlockdevAmendOptions",
                                G_STRUCT_OFFSET(BdDriver, amend_options));
        g_once_init_leave(&done, 1);
    }
    return &union_type;
}

/* --- the job --- */

static int amend_run(BdJob *job, GError **errp)
{
    BdAmendJob *s = (BdAmendJob *)job;
    gboolean ok;

    bd_job_progress_set_remaining(job, 1);
    ok = s->node->drv->amend(s->node, s->options, s->force, errp);
    bd_job_progress_update(job, 1);
    return ok ? 0 : -EIO;
}

static void amend_free(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdAmendJob *s = (BdAmendJob *)job;

    g_clear_pointer(&s->node, bd_node_unref);
    g_clear_pointer(&s->options, g_variant_unref);
}

static const BdJobDriver amend_job_driver = {
    .type = "amend",
    .instance_size = sizeof(BdAmendJob),
    .run = amend_run,
    .free = amend_free,
};

gboolean bd_amend_job_start(const char *job_id, const char *node_name,
                            GVariant *options, gboolean force,
                            GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    AmendBase base = { 0 };
    BdNode *node = bd_node_find(node_name);
    BdAmendJob *s;

    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Cannot find device='' nor node-name='%s'", node_name);
        return FALSE;
    }
    if (!node->drv->amend) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Driver does not support x-blockdev-amend");
        return FALSE;
    }
    bd_schema_decode(base_fields, options, &base);
    if (strcmp(base.driver, node->drv->name) != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "x-blockdev-amend doesn't support changing the block "
                    "driver");
        return FALSE;
    }
    s = (BdAmendJob *)bd_job_create(&amend_job_driver, job_id, TRUE, FALSE,
                                    NULL, errp);
    if (!s) {
        return FALSE;
    }
    s->node = bd_node_ref(node);
    s->options = g_variant_ref(options);
    s->force = force;
    bd_job_start(&s->common);
    return TRUE;
}
