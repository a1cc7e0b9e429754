/* SPDX-License-Identifier: MIT */
/* The 'create' job: blockdev-create runs a driver's create() on a job
 * thread, with the nodes its options name resolved and held open by
 * the job.
 *
 * Thread model: everything runs on the main thread except create_run,
 * which runs on the job thread and touches only the job's own options
 * and the driver's create().  The nodes and entry handles the job holds
 * are taken before the thread starts and released in create_clean
 * (main thread) after it has been joined.
 */
#define G_LOG_DOMAIN "blockd-jobs"

#include <errno.h>
#include <string.h>
#include "graph/entry.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "jobs/create.h"

typedef struct {
    BdJob common;
    const BdDriver *drv;
    GVariant *options;        /* what create() gets (refs as names) */
    GPtrArray *entries;       /* BdEntry *: referenced nodes held open */
    GError *resolve_err;      /* a reference failed: the job fails */
} BdCreateJob;

/* --- schema --- */

/* BlockdevCreateOptions' base: the driver, whose names are known once
 * the drivers are registered (read as a string). */
typedef struct {
    const char *driver;
} CreateBase;

static BdSchemaType driver_enum;
static const BdSchemaField base_fields[] = {
    { "driver", &driver_enum, FALSE, BD_AT(CreateBase, driver),
      .def.s = "" },
    { NULL } };

void bd_driver_options_union(BdSchemaType *union_type,
                             BdSchemaType *names_enum,
                             const BdSchemaField *base,
                             const char *name, size_t options_offset)
{
    const BdDriver *const *list = bd_driver_list();
    static const BdSchemaField no_fields[] = { { NULL } };
    guint n = 0;

    while (list[n]) {
        n++;
    }
    const char **names = g_new0(const char *, n + 1);
    BdSchemaVariant *variants = g_new0(BdSchemaVariant, n + 1);
    for (guint i = 0; i < n; i++) {
        BdSchemaType *t = g_new0(BdSchemaType, 1);
        const BdSchemaField *fields = G_STRUCT_MEMBER(
            const BdSchemaField *, list[i], options_offset);

        names[i] = list[i]->name;
        t->name = g_strdup_printf("%s-%s", name, list[i]->name);
        t->kind = BD_SCHEMA_OBJECT;
        t->fields = fields ? fields : no_fields;
        variants[i].value = list[i]->name;
        variants[i].type = t;
    }
    *names_enum = (BdSchemaType) {
        .name = "BlockdevDriver", .kind = BD_SCHEMA_ENUM,
        .enum_values = names };
    *union_type = (BdSchemaType) {
        .name = name, .kind = BD_SCHEMA_UNION,
        .fields = base, .discriminator = "driver",
        .variants = variants };
}

const BdSchemaType *bd_create_options_schema(void)
{
    static BdSchemaType union_type;
    static gsize done;

    if (g_once_init_enter(&done)) {
        /* Fills BlockdevDriver, which qcow2's backing-fmt uses. */
        bd_blockdev_options_schema();
        bd_driver_options_union(&union_type, &driver_enum, base_fields,
                                "BlockdevCreateOptions",
                                G_STRUCT_OFFSET(BdDriver, create_options));
        g_once_init_leave(&done, 1);
    }
    return &union_type;
}

/* --- the job --- */

static int create_run(BdJob *job, GError **errp)
{
    BdCreateJob *s = (BdCreateJob *)job;

    gboolean ok = FALSE;

    bd_job_progress_set_remaining(job, 1);
    if (s->resolve_err) {
        /* QEMU resolves inside the job: the same failure, seen late. */
        g_propagate_error(errp, g_steal_pointer(&s->resolve_err));
    } else {
        ok = s->drv->create(s->options, errp);
    }
    bd_job_progress_update(job, 1);
    return ok ? 0 : -EIO;
}

static void create_clean(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdCreateJob *s = (BdCreateJob *)job;

    /* Entries go first: a nested node dies with its last handle. */
    g_clear_pointer(&s->entries, g_ptr_array_unref);
}

static void create_free(BdJob *job)
{
    BD_GLOBAL_STATE_CODE();

    BdCreateJob *s = (BdCreateJob *)job;

    g_clear_pointer(&s->entries, g_ptr_array_unref);
    g_clear_pointer(&s->options, g_variant_unref);
    g_clear_error(&s->resolve_err);
}

static const BdJobDriver create_job_driver = {
    .type = "create",
    .instance_size = sizeof(BdCreateJob),
    .run = create_run,
    .clean = create_clean,
    .free = create_free,
};

/* Resolve one BlockdevRef: a node-name, or a nested definition opened
 * now.  Returns the node's name for create(), or NULL with *errp. */
static char *resolve_ref(BdCreateJob *s, GVariant *ref, GError **errp)
{
    g_autoptr(BdNode) opened = NULL;
    BdNode *node;

    if (g_variant_is_of_type(ref, G_VARIANT_TYPE_STRING)) {
        const char *name = g_variant_get_string(ref, NULL);
        node = bd_node_find(name);
        if (!node) {
            g_set_error(errp, BD_ERROR, BD_ERROR_DEVICE_NOT_FOUND,
                        "Cannot find device='%s' nor node-name='%s'",
                        name, name);
            return NULL;
        }
    } else {
        opened = bd_node_open(ref, errp);
        if (!opened) {
            return NULL;
        }
        node = opened;
    }
    BdEntry *entry = bd_entry_new(node, NULL, BD_PERM_WRITE | BD_PERM_RESIZE,
                                  BD_PERM_ALL, errp);
    if (!entry) {
        return NULL;
    }
    bd_entry_set_allow_beyond_eof(entry, TRUE);
    g_ptr_array_add(s->entries, entry);
    return g_strdup(node->node_name);
}

/* Copy the options with every BlockdevRef member replaced by the name of
 * the node it resolves to, for whichever driver: a walk of its table.
 * The first failure is kept for the job. */
static GVariant *resolve_refs(BdCreateJob *s, GVariant *options)
{
    const BdSchemaField *fields = s->drv->create_options;
    GVariantDict d;

    g_variant_dict_init(&d, options);
    for (guint i = 0; fields[i].name; i++) {
        BdSchemaKind kind = fields[i].type->kind;
        if (kind != BD_SCHEMA_BLOCKDEV_REF &&
            kind != BD_SCHEMA_BLOCKDEV_REF_OR_NULL) {
            continue;
        }
        g_autoptr(GVariant) ref = bd_schema_member(options, &fields[i]);
        if (!ref || bd_variant_is_null(ref) || s->resolve_err) {
            continue;
        }
        g_autofree char *name = resolve_ref(s, ref, &s->resolve_err);
        if (name) {
            g_variant_dict_insert(&d, fields[i].name, "s", name);
        }
    }
    return g_variant_ref_sink(g_variant_dict_end(&d));
}

gboolean bd_create_job_start(const char *job_id, GVariant *options,
                             GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CreateBase base = { 0 };
    const char *fmt;
    const BdDriver *drv;

    bd_schema_decode(base_fields, options, &base);
    fmt = base.driver;
    drv = bd_driver_find(fmt);

    if (!drv) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Block driver '%s' not found or not supported", fmt);
        return FALSE;
    }
    if (!drv->create || !drv->create_options) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Driver does not support blockdev-create");
        return FALSE;
    }
    BdCreateJob *s = (BdCreateJob *)bd_job_create(&create_job_driver, job_id,
                                                  TRUE, FALSE, NULL, errp);
    if (!s) {
        return FALSE;
    }
    s->drv = drv;
    s->entries = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bd_entry_free);
    s->options = resolve_refs(s, options);
    bd_job_start(&s->common);
    return TRUE;
}
