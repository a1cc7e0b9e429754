/* SPDX-License-Identifier: MIT */
/* The 'authz-listfile' object (QEMU's authz/listfile.c): the rules of
 * an authz-list read from a JSON file, {"policy": "deny", "rules":
 * [{"match": "...", "policy": "allow", "format": "glob"}, ...]}, and
 * with 'refresh' (the default) read again whenever the file changes.
 *
 * QEMU drops its rules when a changed file does not load (everyone is
 * then denied); blockd keeps the rules it has and logs why the new file
 * was refused, so that a half-written file never locks clients out.
 *
 * The file's directory is watched with inotify on the main loop, as
 * QEMU does: no thread of its own.  A writer that closes the file or
 * renames a new one over it triggers the reload, so a file is never
 * read while it is half written.
 *
 * Thread model: the file is loaded on the main thread (creation and the
 * inotify callback, which the main loop runs).  Checks run on
 * any thread: each takes a reference on the current rule set under
 * 'lock', then matches without it; a reload swaps in a new set under
 * the lock.  The lock is a leaf.
 */
#include <errno.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include "graph/error.h"
#include "graph/lock.h"
#include "graph/main-thread.h"
#include "objects/authz-int.h"

typedef struct {
    BdAuthz parent;
    char *filename;
    BdMutex lock;
    BdAuthzRules *rules BD_GUARDED_BY(lock);   /* never NULL */
    /* Main thread; with 'refresh', until unparent: */
    char *basename;              /* of 'filename', in the events */
    int inotify_fd;              /* -1: not watched */
    guint watch_id;              /* its main-loop source */
} AuthzListFile;

/* AuthZListFileProperties (qapi/authz.json). */
typedef struct {
    const char *filename;
    gboolean refresh;
} ListFileProps;

static const BdSchemaField listfile_fields[] = {
    { "filename", &bd_schema_str, FALSE, BD_AT(ListFileProps, filename) },
    { "refresh", &bd_schema_bool, TRUE, BD_AT(ListFileProps, refresh),
      .def.i = TRUE },
    { NULL } };
static const BdSchemaType listfile_props_type = {
    .name = "AuthZListFileProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = listfile_fields };

/* --- the file: authz-list's properties, as QEMU's input visitor
 * reads them (and with its messages) --- */

static gboolean json_enum(JsonNode *n, const char *path, const char *name,
                          const char *const *values, int *out,
                          GError **errp)
{
    const char *s;

    if (!JSON_NODE_HOLDS_VALUE(n) ||
        json_node_get_value_type(n) != G_TYPE_STRING) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter type for '%s', expected: string",
                    path);
        return FALSE;
    }
    s = json_node_get_string(n);
    for (int i = 0; values[i]; i++) {
        if (strcmp(values[i], s) == 0) {
            *out = i;
            return TRUE;
        }
    }
    /* QEMU names enum members without their path. */
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Parameter '%s' does not accept value '%s'", name, s);
    return FALSE;
}

/* One QAuthZListRule, rules[i]: match, policy, format, then leftovers. */
static gboolean json_rule(JsonNode *n, guint i, BdAuthzRules *set,
                          GError **errp)
{
    g_autofree char *path = g_strdup_printf("rules[%u]", i);
    g_autofree char *mpath = g_strdup_printf("%s.match", path);
    g_autofree char *ppath = g_strdup_printf("%s.policy", path);
    g_autofree char *fpath = g_strdup_printf("%s.format", path);
    g_autoptr(GList) members = NULL;
    JsonObject *o;
    JsonNode *m;
    int policy, format = BD_AUTHZ_FORMAT_EXACT;

    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter type for '%s', expected: object",
                    path);
        return FALSE;
    }
    o = json_node_get_object(n);
    m = json_object_get_member(o, "match");
    if (!m) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' is missing", mpath);
        return FALSE;
    }
    if (!JSON_NODE_HOLDS_VALUE(m) ||
        json_node_get_value_type(m) != G_TYPE_STRING) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Invalid parameter type for '%s', expected: string",
                    mpath);
        return FALSE;
    }
    if (!json_object_has_member(o, "policy")) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Parameter '%s' is missing", ppath);
        return FALSE;
    }
    if (!json_enum(json_object_get_member(o, "policy"), ppath, "policy",
                   bd_authz_policy_values, &policy, errp)) {
        return FALSE;
    }
    if (json_object_has_member(o, "format") &&
        !json_enum(json_object_get_member(o, "format"), fpath, "format",
                   bd_authz_format_values, &format, errp)) {
        return FALSE;
    }
    members = json_object_get_members(o);
    for (GList *l = members; l; l = l->next) {
        if (strcmp(l->data, "match") && strcmp(l->data, "policy") &&
            strcmp(l->data, "format")) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Parameter '%s.%s' is unexpected", path,
                        (const char *)l->data);
            return FALSE;
        }
    }
    bd_authz_rules_append(set, json_node_get_string(m), policy, format);
    return TRUE;
}

static BdAuthzRules *rules_from_json(JsonObject *root, GError **errp)
{
    g_autoptr(GList) members = json_object_get_members(root);
    JsonNode *rules = NULL;
    int policy = BD_AUTHZ_POLICY_DENY;
    g_autoptr(BdAuthzRules) set = NULL;

    /* Each member is a property of an authz-list. */
    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *n = json_object_get_member(root, key);

        if (strcmp(key, "policy") == 0) {
            if (!json_enum(n, "policy", "policy", bd_authz_policy_values,
                           &policy, errp)) {
                return NULL;
            }
        } else if (strcmp(key, "rules") == 0) {
            if (!JSON_NODE_HOLDS_ARRAY(n)) {
                g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                            "Invalid parameter type for 'rules', "
                            "expected: array");
                return NULL;
            }
            rules = n;
        } else {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Property 'authz-list.%s' not found", key);
            return NULL;
        }
    }
    set = bd_authz_rules_new(policy);
    if (rules) {
        JsonArray *arr = json_node_get_array(rules);

        for (guint i = 0; i < json_array_get_length(arr); i++) {
            if (!json_rule(json_array_get_element(arr, i), i, set, errp)) {
                return NULL;
            }
        }
    }
    return g_steal_pointer(&set);
}

/* QEMU's qauthz_list_file_load(), with its messages. */
static BdAuthzRules *listfile_load(const char *filename, GError **errp)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autofree char *content = NULL;
    gsize len;
    JsonNode *root;

    if (!g_file_get_contents(filename, &content, &len, &err)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to read '%s': %s", filename, err->message);
        return NULL;
    }
    if (!json_parser_load_from_data(parser, content, len, &err)) {
        /* json-glib names the text "<data>": name the file instead. */
        const char *msg = err->message;

        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "JSON parse error, %s%s",
                    g_str_has_prefix(msg, "<data>:") ? filename : "",
                    g_str_has_prefix(msg, "<data>:") ? msg + 6 : msg);
        return NULL;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "File '%s' must contain a JSON object", filename);
        return NULL;
    }
    return rules_from_json(json_node_get_object(root), errp);
}

/* --- the object --- */

static gboolean listfile_is_allowed(BdAuthz *authz, const char *identity,
                                    GError **errp)
{
    AuthzListFile *lf = (AuthzListFile *)authz;
    g_autoptr(BdAuthzRules) rules = NULL;

    bd_mutex_lock(&lf->lock);
    rules = bd_authz_rules_ref(lf->rules);
    bd_mutex_unlock(&lf->lock);
    return bd_authz_rules_allow(rules, identity);
}

static void listfile_reload(AuthzListFile *lf)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(GError) err = NULL;
    g_autoptr(BdAuthzRules) rules = listfile_load(lf->filename, &err);

    if (!rules) {
        g_warning("authz-listfile '%s': keeping the previous rules, %s "
                  "does not load: %s", lf->parent.parent.id, lf->filename,
                  err->message);
        return;
    }
    g_info("authz-listfile '%s': %u rules loaded from %s",
           lf->parent.parent.id, bd_authz_rules_count(rules), lf->filename);
    bd_mutex_lock(&lf->lock);
    /* The old set goes with 'rules' (checks in flight hold their own). */
    BdAuthzRules *old = lf->rules;
    lf->rules = g_steal_pointer(&rules);
    rules = old;
    bd_mutex_unlock(&lf->lock);
}

/* Main loop: events of the file's directory.  A writer's close and a
 * rename into place end a change; an overflow may hide one. */
static gboolean on_inotify(int fd, GIOCondition cond, gpointer opaque)
{
    BD_GLOBAL_STATE_CODE();

    AuthzListFile *lf = opaque;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    gboolean changed = FALSE;
    ssize_t len;

    while ((len = read(fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + len;) {
            const struct inotify_event *ev = (const void *)p;

            if ((ev->mask & IN_Q_OVERFLOW) ||
                (ev->len && strcmp(ev->name, lf->basename) == 0)) {
                changed = TRUE;
            }
            if (ev->mask & IN_IGNORED) {
                g_warning("authz-listfile '%s': the directory of %s went "
                          "away, no longer watching it",
                          lf->parent.parent.id, lf->filename);
            }
            p += sizeof(*ev) + ev->len;
        }
    }
    if (len < 0 && errno != EAGAIN && errno != EINTR) {
        g_warning("authz-listfile '%s': no longer watching %s: %s",
                  lf->parent.parent.id, lf->filename, g_strerror(errno));
        lf->watch_id = 0;
        return G_SOURCE_REMOVE;
    }
    if (changed) {
        listfile_reload(lf);
    }
    return G_SOURCE_CONTINUE;
}

/* QEMU's checks before it watches the file, then the watch. */
static gboolean listfile_watch(AuthzListFile *lf, GError **errp)
{
    g_autofree char *dir = g_path_get_dirname(lf->filename);
    int err;

    lf->basename = g_path_get_basename(lf->filename);
    if (strcmp(dir, ".") == 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Filename must be an absolute path");
        return FALSE;
    }
    if (strcmp(lf->basename, ".") == 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Path has no trailing filename component");
        return FALSE;
    }
    lf->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (lf->inotify_fd < 0) {
        err = errno;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to initialize inotify: %s", g_strerror(err));
        return FALSE;
    }
    if (inotify_add_watch(lf->inotify_fd, dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
        err = errno;
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Unable to watch '%s': %s", dir, g_strerror(err));
        return FALSE;
    }
    lf->watch_id = g_unix_fd_add(lf->inotify_fd, G_IO_IN, on_inotify, lf);
    return TRUE;
}

static void listfile_unparent(BdObject *obj)
{
    BD_GLOBAL_STATE_CODE();

    AuthzListFile *lf = (AuthzListFile *)obj;

    if (lf->watch_id) {
        g_source_remove(lf->watch_id);
        lf->watch_id = 0;
    }
    if (lf->inotify_fd >= 0) {
        close(lf->inotify_fd);
        lf->inotify_fd = -1;
    }
}

static void listfile_free(BdObject *obj)
{
    AuthzListFile *lf = (AuthzListFile *)obj;

    g_assert(!lf->watch_id && lf->inotify_fd < 0);
    /* The last reference: nobody else takes the lock any more. */
    bd_mutex_lock(&lf->lock);
    g_clear_pointer(&lf->rules, bd_authz_rules_unref);
    bd_mutex_unlock(&lf->lock);
    bd_mutex_destroy(&lf->lock);
    g_free(lf->basename);
    g_free(lf->filename);
    bd_object_finalize(obj);
    g_free(lf);
}

static BdObject *listfile_create(const char *id, GVariant *props,
                                 GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    ListFileProps p = { 0 };
    g_autoptr(BdAuthzRules) rules = NULL;
    AuthzListFile *lf;

    bd_schema_decode(listfile_fields, props, &p);
    rules = listfile_load(p.filename, errp);
    if (!rules) {
        return NULL;
    }
    lf = g_new0(AuthzListFile, 1);
    bd_object_init(&lf->parent.parent, &bd_authz_listfile_type, id);
    lf->parent.is_allowed = listfile_is_allowed;
    lf->filename = g_strdup(p.filename);
    lf->inotify_fd = -1;
    bd_mutex_init(&lf->lock);
    bd_mutex_lock(&lf->lock);
    lf->rules = g_steal_pointer(&rules);
    bd_mutex_unlock(&lf->lock);
    if (p.refresh && !listfile_watch(lf, errp)) {
        listfile_unparent(&lf->parent.parent);
        bd_object_unref(&lf->parent.parent);
        return NULL;
    }
    return &lf->parent.parent;
}

static const char *const authz_kinds[] = { BD_AUTHZ_KIND, NULL };

const BdObjectType bd_authz_listfile_type = {
    .name = "authz-listfile",
    .props = &listfile_props_type,
    .kinds = authz_kinds,
    .create = listfile_create,
    .unparent = listfile_unparent,
    .free = listfile_free,
};
