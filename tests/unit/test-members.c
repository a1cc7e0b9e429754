/* SPDX-License-Identifier: MIT */
/* Every member of every input schema is read through its table: each
 * registered driver's options and create options, the jobs' internal
 * filters, every QMP command's arguments and the command-line option
 * types either say where the member goes in a C struct (.at, with a C
 * type that fits) or are marked as accepted-and-unused or read by the
 * graph's generic code.  A new member that nobody decodes fails here,
 * as does a type reachable only through members nobody reads.
 *
 * Return types and events are output: not walked. */
#include <string.h>
#include "control/qmp-int.h"
#include "export/export.h"
#include "export-fuse/fuse-export.h"
#include "export-nbd/nbd-server.h"
#include "formats/registry.h"
#include "jobs/commit-int.h"
#include "jobs/create.h"
#include "jobs/mirror.h"
#include "objects/object.h"

typedef struct {
    GHashTable *seen;        /* const BdSchemaType * already walked */
    GString *problems;
    guint members;           /* members checked */
    guint decoded;           /* of which with .at */
} Walk;

static void walk_type(Walk *w, const char *where, const BdSchemaType *t);

static void problem(Walk *w, const char *where, const BdSchemaField *f,
                    const char *what)
{
    g_string_append_printf(w->problems, "  %s: member '%s' %s\n", where,
                           f->name, what);
}

static void walk_fields(Walk *w, const char *where,
                        const BdSchemaField *fields)
{
    for (const BdSchemaField *f = fields; f && f->name; f++) {
        g_autofree char *path = g_strdup_printf("%s.%s", where, f->name);

        w->members++;
        if (!f->type) {
            problem(w, where, f, "has no type");
            continue;
        }
        if (f->at) {
            w->decoded++;
            if (!bd_schema_ctype_fits(f->type, f->ctype)) {
                problem(w, where, f, "is decoded into a C type that does "
                        "not fit its schema type");
            }
        } else if (f->flags & (BD_FIELD_IGNORED | BD_FIELD_GENERIC)) {
            if (f->has_at) {
                problem(w, where, f, "has .has_at but no .at");
            }
            if (f->flags & BD_FIELD_IGNORED) {
                continue;      /* nothing below it is read either */
            }
        } else {
            problem(w, where, f, "is neither decoded (.at) nor marked as "
                    "unused (BD_FIELD_IGNORED) or read generically "
                    "(BD_FIELD_GENERIC)");
        }
        if (f->has_at && !f->optional) {
            problem(w, where, f, "is required but has a has_ flag");
        }
        walk_type(w, path, f->type);
    }
}

static void walk_type(Walk *w, const char *where, const BdSchemaType *t)
{
    if (!t || g_hash_table_contains(w->seen, t)) {
        return;
    }
    g_hash_table_add(w->seen, (gpointer)t);
    switch (t->kind) {
    case BD_SCHEMA_OBJECT:
        walk_fields(w, where, t->fields);
        break;
    case BD_SCHEMA_UNION:
        walk_fields(w, where, t->fields);
        for (const BdSchemaVariant *v = t->variants; v && v->value; v++) {
            g_autofree char *path = g_strdup_printf("%s[%s=%s]", where,
                                                    t->discriminator,
                                                    v->value);
            walk_type(w, path, v->type);
        }
        break;
    case BD_SCHEMA_LIST:
        walk_type(w, where, t->element);
        break;
    case BD_SCHEMA_ALTERNATE:
        for (guint i = 0; t->alternatives && t->alternatives[i]; i++) {
            walk_type(w, where, t->alternatives[i]);
        }
        break;
    default:
        /* Scalars and enums have no members; a BlockdevRef's nested
         * definition is BlockdevOptions, walked as blockdev-add's. */
        break;
    }
}

static void walk_driver(Walk *w, const BdDriver *drv)
{
    g_autofree char *opts = g_strdup_printf("driver '%s' options", drv->name);
    g_autofree char *create = g_strdup_printf("driver '%s' create options",
                                              drv->name);

    walk_fields(w, opts, drv->options);
    walk_fields(w, create, drv->create_options);
}

static void setup(void)
{
    static gboolean done;

    if (!done) {
        done = TRUE;
        bd_formats_register_all();
        bd_objects_register_builtin();
        bd_export_register_driver(&bd_nbd_export_driver);
        bd_export_register_driver(&bd_fuse_export_driver);
        bd_control_init();
    }
}

static void test_every_member_is_read(void)
{
    Walk w = { .seen = g_hash_table_new(NULL, NULL),
               .problems = g_string_new(NULL) };
    GPtrArray *cmds;

    setup();
    for (const BdDriver *const *d = bd_driver_list(); *d; d++) {
        walk_driver(&w, *d);
    }
    /* Internal filters, opened by the jobs and in no registry. */
    walk_driver(&w, &bd_commit_top_driver);
    walk_driver(&w, &bd_mirror_top_driver);

    cmds = bd_qmp_commands();
    for (guint i = 0; i < cmds->len; i++) {
        const BdQmpCommand *c = cmds->pdata[i];
        g_autofree char *where = g_strdup_printf("command '%s'", c->name);

        if (c->args) {
            walk_type(&w, where, c->args());
        }
    }
    /* The command-line forms that have no QMP twin of the same type. */
    walk_type(&w, "--nbd-server", bd_cmd_nbd_server_options_schema());
    walk_type(&w, "--monitor", bd_cmd_monitor_options_schema());
    walk_type(&w, "--object", bd_cmd_object_options_schema());
    walk_type(&w, "--export", bd_export_options_schema());
    walk_type(&w, "--blockdev", bd_blockdev_options_schema());

    if (w.problems->len) {
        g_test_message("members nobody reads:\n%s", w.problems->str);
    }
    g_test_message("%u members checked, %u decoded into structs", w.members,
                   w.decoded);
    g_assert_cmpstr(w.problems->str, ==, "");
    /* The walk reached the tables at all. */
    g_assert_cmpuint(w.members, >, 300);
    g_string_free(w.problems, TRUE);
    g_hash_table_unref(w.seen);
}

/* The walk itself catches what it is for. */
typedef struct {
    gint64 used;
    gboolean flag;
} Probe;

static void test_walk_catches(void)
{
    static const BdSchemaField bad[] = {
        { "used", &bd_schema_int, TRUE, BD_AT(Probe, used) },
        { "forgotten", &bd_schema_int, TRUE },
        { "ignored", &bd_schema_str, TRUE, .flags = BD_FIELD_IGNORED },
        /* A bool decoded into an int64: the C type does not fit. */
        { "mistyped", &bd_schema_bool, TRUE, BD_AT(Probe, used) },
        { NULL } };
    Walk w = { .seen = g_hash_table_new(NULL, NULL),
               .problems = g_string_new(NULL) };

    walk_fields(&w, "probe", bad);
    g_assert_nonnull(strstr(w.problems->str, "'forgotten' is neither"));
    g_assert_nonnull(strstr(w.problems->str, "'mistyped' is decoded into"));
    g_assert_null(strstr(w.problems->str, "'used'"));
    g_assert_null(strstr(w.problems->str, "'ignored'"));
    g_string_free(w.problems, TRUE);
    g_hash_table_unref(w.seen);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/members/every-member-is-read",
                    test_every_member_is_read);
    g_test_add_func("/members/walk-catches", test_walk_catches);
    return g_test_run();
}
