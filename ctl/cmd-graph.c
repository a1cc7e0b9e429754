/* SPDX-License-Identifier: MIT */
/* blockctl graph [--format text|dot|svg|png] [-o FILE]: the block graph
 * as a tree of text, as Graphviz source, or drawn by Graphviz's dot.
 * Nodes show driver, name and size; edges their role; edges whose
 * parent writes are solid, read-only ones dashed; filters are boxes
 * with rounded corners, users (exports, jobs) ellipses. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ctl/blockctl.h"
#include "ctl/graph-model.h"

static const char *const filter_drivers[] = {
    "throttle", "copy-before-write", "copy-on-read", "compress",
    "blkdebug", "snapshot-access", "commit_top", "mirror_top", NULL,
};

static gboolean is_filter(BdCtlVertex *v)
{
    const char *drv = v->info ? json_object_get_string_member_with_default(
                                    v->info, "drv", "") : "";
    return g_strv_contains(filter_drivers, drv);
}

static void dot_escape(GString *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            g_string_append_c(out, '\\');
        }
        g_string_append_c(out, *s);
    }
}

static char *to_dot(BdCtlGraph *g)
{
    GString *out = g_string_new("digraph blockd {\n"
                                "  rankdir=TB;\n"
                                "  node [fontname=\"monospace\"];\n");

    for (guint i = 0; i < g->vertices->len; i++) {
        BdCtlVertex *v = g->vertices->pdata[i];
        gboolean user = strcmp(v->type, "block-driver") != 0;

        g_string_append_printf(out, "  n%" G_GINT64_FORMAT " [label=\"", v->id);
        dot_escape(out, v->name);
        if (v->info) {
            JsonObject *img = json_object_get_object_member(v->info, "image");
            g_autofree char *size = bd_ctl_size(
                json_object_get_int_member_with_default(img, "virtual-size",
                                                        0));
            g_string_append(out, "\\n");
            dot_escape(out, json_object_get_string_member_with_default(
                                v->info, "drv", "?"));
            g_string_append_printf(out, ", %s", size);
        } else if (user) {
            g_string_append(out, "\\n");
            dot_escape(out, v->type);
        }
        g_string_append_printf(out, "\", shape=%s%s];\n",
                               user ? "ellipse" : "box",
                               is_filter(v) ? ", style=rounded" : "");
    }
    for (guint i = 0; i < g->edges->len; i++) {
        BdCtlEdge *e = g->edges->pdata[i];

        g_string_append_printf(out, "  n%" G_GINT64_FORMAT " -> n%"
                               G_GINT64_FORMAT " [label=\"", e->parent->id,
                               e->child->id);
        dot_escape(out, e->name);
        g_string_append_printf(out, "\"%s];\n",
                               e->writes ? "" : ", style=dashed");
    }
    g_string_append(out, "}\n");
    return g_string_free(out, FALSE);
}

static void text_tree(BdCtlGraph *g, BdCtlVertex *v, const char *role,
                      const char *prefix, gboolean last, GString *out,
                      GHashTable *seen)
{
    g_autofree char *line = bd_ctl_graph_describe(g, v);
    g_autofree char *next = g_strconcat(prefix, last ? "    " : "|   ", NULL);

    g_string_append_printf(out, "%s%s%s%s%s%s\n", prefix,
                           *prefix || role ? (last ? "`-- " : "|-- ") : "",
                           role ? role : "", role ? ": " : "", line,
                           g_hash_table_contains(seen, v) ? " (above)" : "");
    if (g_hash_table_contains(seen, v)) {
        return;
    }
    g_hash_table_add(seen, v);
    for (guint i = 0; i < v->children->len; i++) {
        BdCtlEdge *e = v->children->pdata[i];
        text_tree(g, e->child, e->name, next, i + 1 == v->children->len,
                  out, seen);
    }
}

static char *to_text(BdCtlGraph *g)
{
    GString *out = g_string_new(NULL);
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);

    for (guint i = 0; i < g->vertices->len; i++) {
        BdCtlVertex *v = g->vertices->pdata[i];
        if (!v->parents) {
            text_tree(g, v, NULL, "", TRUE, out, seen);
        }
    }
    return g_string_free(out, FALSE);
}

/* Run dot -T<fmt> on 'source' into 'file' (NULL: stdout). */
static int run_dot(const char *source, const char *fmt, const char *file)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *tflag = g_strdup_printf("-T%s", fmt);
    g_autofree char *oflag = file ? g_strdup_printf("-o%s", file) : NULL;
    const char *argv[] = { "dot", tflag, oflag, NULL };
    g_autoptr(GSubprocess) p = NULL;
    g_autoptr(GBytes) in = g_bytes_new(source, strlen(source));
    g_autoptr(GBytes) out = NULL, errout = NULL;

    p = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDIN_PIPE |
                          G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                          G_SUBPROCESS_FLAGS_STDERR_PIPE, &err);
    if (!p) {
        fprintf(stderr, "blockctl: graph: --format %s needs Graphviz's dot "
                "(apt-get install graphviz): %s\n", fmt, err->message);
        return BD_CTL_FAILED;
    }
    if (!g_subprocess_communicate(p, in, NULL, &out, &errout, &err) ||
        !g_subprocess_get_successful(p)) {
        fprintf(stderr, "blockctl: graph: dot failed: %s\n",
                err ? err->message
                    : (const char *)g_bytes_get_data(errout, NULL));
        return BD_CTL_FAILED;
    }
    if (!file) {
        gsize len;
        const void *data = g_bytes_get_data(out, &len);
        fwrite(data, 1, len, stdout);
    }
    return BD_CTL_OK;
}

int bd_ctl_cmd_graph(const BdCtlGlobal *g, int argc, char **argv)
{
    const char *format = "text", *file = NULL;
    g_autoptr(BdQmpClient) c = NULL;
    g_autoptr(BdCtlGraph) gr = NULL;
    g_autofree char *text = NULL;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--format") && i + 1 < argc) {
            format = argv[++i];
        } else if (g_str_has_prefix(argv[i], "--format=")) {
            format = argv[i] + strlen("--format=");
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            file = argv[++i];
        } else {
            return bd_ctl_usage("graph: unexpected argument '%s'", argv[i]);
        }
    }
    if (strcmp(format, "text") && strcmp(format, "dot") &&
        strcmp(format, "svg") && strcmp(format, "png")) {
        return bd_ctl_usage("graph: --format is text, dot, svg or png, "
                            "not '%s'", format);
    }
    c = bd_ctl_connect(g);
    if (!c) {
        return BD_CTL_FAILED;
    }
    gr = bd_ctl_graph_load(c);
    if (!gr) {
        return BD_CTL_FAILED;
    }
    if (g->json) {
        bd_ctl_print_json(gr->raw);
        return BD_CTL_OK;
    }
    if (!strcmp(format, "svg") || !strcmp(format, "png")) {
        g_autofree char *dot = to_dot(gr);
        return run_dot(dot, format, file);
    }
    text = !strcmp(format, "dot") ? to_dot(gr) : to_text(gr);
    if (file) {
        g_autoptr(GError) err = NULL;
        if (!g_file_set_contents(file, text, -1, &err)) {
            fprintf(stderr, "blockctl: graph: %s\n", err->message);
            return BD_CTL_FAILED;
        }
        return BD_CTL_OK;
    }
    fputs(text, stdout);
    return BD_CTL_OK;
}
