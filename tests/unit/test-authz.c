/* SPDX-License-Identifier: MIT */
/* Unit tests of the authz types: authz-simple, authz-list's matching
 * (exact, glob, first match wins, default policy), the by-id errors,
 * and authz-listfile: its file's errors, its reload when the file
 * changes (in place or renamed over), the rules it keeps when the new
 * file is bad, and checks on other threads during reloads. */
#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include "graph/error.h"
#include "objects/authz-int.h"
#include "objects/secret.h"

#define LOG_DOMAIN "blockd-objects"

static void setup(void)
{
    bd_objects_register_builtin();
}

static GVariant *props_of(const char *text)
{
    return g_variant_ref_sink(g_variant_new_parsed(text));
}

static BdObject *add(const BdObjectType *type, const char *id,
                     const char *props)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GVariant) v = props_of(props);

    g_assert_true(bd_object_add(type, id, v, &err));
    g_assert_no_error(err);
    return bd_object_find(id);
}

static void expect_error(GError *err, const char *msg)
{
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, msg);
}

static gboolean allowed(BdObject *authz, const char *identity)
{
    g_autoptr(GError) err = NULL;
    gboolean ok = bd_authz_is_allowed(authz, identity, &err);

    g_assert_no_error(err);
    return ok;
}

static void drop(BdObject *obj)
{
    g_autofree char *id = g_strdup(obj->id);

    bd_object_unref(obj);
    g_assert_true(bd_object_del(id, NULL));
}

/* --- authz-simple, authz-list --- */

static void test_simple(void)
{
    BdObject *a;

    setup();
    a = add(&bd_authz_simple_type, "simple", "{'identity': <'fred'>}");
    g_assert_true(allowed(a, "fred"));
    g_assert_false(allowed(a, "Fred"));
    g_assert_false(allowed(a, "fred2"));
    g_assert_false(allowed(a, ""));
    drop(a);
}

static void test_list_default_policy(void)
{
    BdObject *deny, *allow;

    setup();
    deny = add(&bd_authz_list_type, "deny", "@a{sv} {}");
    allow = add(&bd_authz_list_type, "allow", "{'policy': <'allow'>, "
                "'rules': <@av []>}");
    g_assert_false(allowed(deny, "anyone"));
    g_assert_true(allowed(allow, "anyone"));
    drop(deny);
    drop(allow);
}

static void test_list_matching(void)
{
    BdObject *a;

    setup();
    /* First match wins: fred is denied before the glob allows him. */
    a = add(&bd_authz_list_type, "list",
            "{'policy': <'deny'>, 'rules': <["
            "<{'match': <'fred'>, 'policy': <'deny'>}>,"
            "<{'match': <'fr*'>, 'policy': <'allow'>, 'format': <'glob'>}>,"
            "<{'match': <'CN=?ob,O=Example'>, 'policy': <'allow'>, "
            "  'format': <'glob'>}>,"
            "<{'match': <'[ab]*'>, 'policy': <'allow'>, 'format': <'glob'>}>,"
            "<{'match': <'bo*'>, 'policy': <'allow'>, 'format': <'exact'>}>"
            "]>}");
    g_assert_false(allowed(a, "fred"));
    g_assert_true(allowed(a, "frank"));
    g_assert_true(allowed(a, "fr"));
    g_assert_true(allowed(a, "CN=bob,O=Example"));
    g_assert_false(allowed(a, "CN=bobb,O=Example"));
    /* Glob as GLib's g_pattern_match_simple (QEMU's): '*' and '?' only,
     * brackets are literal. */
    g_assert_false(allowed(a, "alice"));
    g_assert_true(allowed(a, "[ab]c"));
    /* An exact rule's '*' is a character like any other. */
    g_assert_false(allowed(a, "bob"));
    g_assert_true(allowed(a, "bo*"));
    /* No rule matches: the default. */
    g_assert_false(allowed(a, "mallory"));
    drop(a);
}

static void test_rules_direct(void)
{
    g_autoptr(BdAuthzRules) r = bd_authz_rules_new(BD_AUTHZ_POLICY_ALLOW);

    bd_authz_rules_append(r, "*.evil", BD_AUTHZ_POLICY_DENY,
                          BD_AUTHZ_FORMAT_GLOB);
    bd_authz_rules_append(r, "x.evil", BD_AUTHZ_POLICY_ALLOW,
                          BD_AUTHZ_FORMAT_EXACT);
    g_assert_cmpuint(bd_authz_rules_count(r), ==, 2);
    g_assert_false(bd_authz_rules_allow(r, "x.evil"));
    g_assert_true(bd_authz_rules_allow(r, "x.good"));
}

static void test_by_id(void)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GError) err2 = NULL;
    g_autoptr(GVariant) sp = props_of("{'data': <'pw'>}");
    BdObject *a;

    setup();
    a = add(&bd_authz_simple_type, "byid", "{'identity': <'fred'>}");
    g_assert_true(bd_authz_is_allowed_by_id("byid", "fred", NULL));
    g_assert_false(bd_authz_is_allowed_by_id("byid", "bob", NULL));
    g_assert_false(bd_authz_is_allowed_by_id("nope", "fred", &err));
    expect_error(err, "Cannot find QAuthZ object ID nope");
    g_assert_true(bd_object_add(&bd_secret_type, "sec", sp, NULL));
    g_assert_false(bd_authz_is_allowed_by_id("sec", "fred", &err2));
    expect_error(err2, "Object 'sec' is not a QAuthZ subclass");
    g_assert_true(bd_object_del("sec", NULL));
    drop(a);
}

/* --- authz-listfile --- */

static const char allow_fred[] =
    "{\"policy\": \"deny\", \"rules\": [{\"match\": \"fred\", "
    "\"policy\": \"allow\"}]}";
static const char deny_fred[] =
    "{\"policy\": \"allow\", \"rules\": [{\"match\": \"fr?d\", "
    "\"policy\": \"deny\", \"format\": \"glob\"}]}";

static char *tmp_dir(void)
{
    g_autoptr(GError) err = NULL;
    char *dir = g_dir_make_tmp("blockd-authz-XXXXXX", &err);

    g_assert_no_error(err);
    return dir;
}

static void write_file(const char *path, const char *text)
{
    /* In place, as an editor that rewrites the file does. */
    FILE *f = fopen(path, "w");
    g_assert_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void rename_over(const char *path, const char *text)
{
    g_autofree char *tmp = g_strconcat(path, ".new", NULL);

    write_file(tmp, text);
    g_assert_cmpint(g_rename(tmp, path), ==, 0);
}

static BdObject *add_listfile(const char *id, const char *path,
                              gboolean refresh)
{
    g_autofree char *props = g_strdup_printf(
        "{'filename': <'%s'>, 'refresh': <%s>}", path,
        refresh ? "true" : "false");

    return add(&bd_authz_listfile_type, id, props);
}

static gboolean timed_out_cb(gpointer opaque)
{
    *(gboolean *)opaque = TRUE;
    return G_SOURCE_REMOVE;
}

/* Run the main loop (the file monitor's) until 'authz' answers
 * 'want' for 'identity'. */
static void wait_allowed(BdObject *authz, const char *identity,
                         gboolean want)
{
    gboolean timed_out = FALSE;
    guint t = g_timeout_add_seconds(10, timed_out_cb, &timed_out);

    while (allowed(authz, identity) != want) {
        g_assert_false(timed_out);
        g_main_context_iteration(NULL, TRUE);
    }
    g_source_remove(t);
}

static gint refused_reloads;

/* The warning a bad file causes is counted, any other fails the test
 * (warnings are not fatal here: see main()). */
static void on_warning(const char *domain, GLogLevelFlags level,
                       const char *message, gpointer opaque)
{
    if (strstr(message, "keeping the previous rules")) {
        g_atomic_int_inc(&refused_reloads);
        g_test_message("expected warning: %s", message);
        return;
    }
    g_test_message("unexpected warning: %s", message);
    g_test_fail();
}

static void wait_refused(gint before)
{
    gboolean timed_out = FALSE;
    guint t = g_timeout_add_seconds(10, timed_out_cb, &timed_out);

    while (g_atomic_int_get(&refused_reloads) == before) {
        g_assert_false(timed_out);
        g_main_context_iteration(NULL, TRUE);
    }
    g_source_remove(t);
}

static void test_listfile_reload(void)
{
    g_autofree char *dir = tmp_dir();
    g_autofree char *path = g_build_filename(dir, "acl.json", NULL);
    BdObject *a;
    gint before;

    setup();
    write_file(path, allow_fred);
    a = add_listfile("lf", path, TRUE);
    g_assert_true(allowed(a, "fred"));
    g_assert_false(allowed(a, "bob"));

    write_file(path, deny_fred);
    wait_allowed(a, "fred", FALSE);
    g_assert_true(allowed(a, "bob"));
    g_assert_false(allowed(a, "frid"));

    rename_over(path, allow_fred);
    wait_allowed(a, "fred", TRUE);
    g_assert_false(allowed(a, "bob"));

    /* A bad file: the rules stay, with a warning saying why. */
    before = g_atomic_int_get(&refused_reloads);
    write_file(path, "{\"policy\": \"allow\", \"rules\": [{\"match\": 1}]}");
    wait_refused(before);
    g_assert_true(allowed(a, "fred"));
    g_assert_false(allowed(a, "bob"));
    write_file(path, deny_fred);
    wait_allowed(a, "fred", FALSE);

    drop(a);
    /* Deleted: a change no longer reaches it. */
    write_file(path, allow_fred);
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    g_unlink(path);
    g_rmdir(dir);
}

static void test_listfile_no_refresh(void)
{
    g_autofree char *dir = tmp_dir();
    g_autofree char *path = g_build_filename(dir, "acl.json", NULL);
    g_autofree char *canary = g_build_filename(dir, "canary.json", NULL);
    BdObject *a, *c;

    setup();
    write_file(path, allow_fred);
    write_file(canary, allow_fred);
    a = add_listfile("static", path, FALSE);
    c = add_listfile("canary", canary, TRUE);
    write_file(path, deny_fred);
    write_file(canary, deny_fred);
    /* Once the watched file's change is in, the other one's was
     * seen too, had it been watched. */
    wait_allowed(c, "fred", FALSE);
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    g_assert_true(allowed(a, "fred"));
    drop(a);
    drop(c);
    g_unlink(path);
    g_unlink(canary);
    g_rmdir(dir);
}

static void expect_listfile_error(const char *dir, const char *content,
                                  const char *msg)
{
    g_autofree char *path = g_build_filename(dir, "bad.json", NULL);
    g_autofree char *props = g_strdup_printf("{'filename': <'%s'>}", path);
    g_auto(GStrv) parts = g_strsplit(msg, "FILE", -1);
    g_autofree char *want = g_strjoinv(path, parts);
    g_autoptr(GVariant) v = props_of(props);
    g_autoptr(GError) err = NULL;

    write_file(path, content);
    g_assert_false(bd_object_add(&bd_authz_listfile_type, "bad", v, &err));
    expect_error(err, want);
    g_assert_false(bd_object_exists("bad"));
    g_unlink(path);
}

static void test_listfile_errors(void)
{
    g_autofree char *dir = tmp_dir();
    g_autoptr(GVariant) missing = props_of(
        "{'filename': <'/nonexistent/acl.json'>}");
    g_autoptr(GVariant) relative = props_of(
        "{'filename': <'acl-relative.json'>}");
    g_autoptr(GError) err = NULL;
    g_autoptr(GError) err2 = NULL;
    g_autofree char *cwd = NULL;

    setup();
    g_assert_false(bd_object_add(&bd_authz_listfile_type, "bad", missing,
                                 &err));
    expect_error(err, "Unable to read '/nonexistent/acl.json': Failed to "
                      "open file \u201c/nonexistent/acl.json\u201d: No such "
                      "file or directory");
    expect_listfile_error(dir, "[1]", "File 'FILE' must contain a JSON object");
    expect_listfile_error(dir, "", "File 'FILE' must contain a JSON object");
    expect_listfile_error(dir, "{\"policy\": \"maybe\"}",
                          "Parameter 'policy' does not accept value 'maybe'");
    expect_listfile_error(dir, "{\"policy\": 1}",
                          "Invalid parameter type for 'policy', expected: "
                          "string");
    expect_listfile_error(dir, "{\"bogus\": 1}",
                          "Property 'authz-list.bogus' not found");
    expect_listfile_error(dir, "{\"rules\": {}}",
                          "Invalid parameter type for 'rules', expected: "
                          "array");
    expect_listfile_error(dir, "{\"rules\": [1]}",
                          "Invalid parameter type for 'rules[0]', expected: "
                          "object");
    expect_listfile_error(dir, "{\"rules\": [{\"policy\": \"allow\"}]}",
                          "Parameter 'rules[0].match' is missing");
    expect_listfile_error(dir, "{\"rules\": [{\"match\": \"a\"}]}",
                          "Parameter 'rules[0].policy' is missing");
    expect_listfile_error(dir, "{\"rules\": [{\"match\": \"a\", \"policy\": "
                          "\"allow\"}, {\"match\": \"b\", \"policy\": "
                          "\"allow\", \"format\": \"regex\"}]}",
                          "Parameter 'format' does not accept value "
                          "'regex'");
    expect_listfile_error(dir, "{\"rules\": [{\"match\": \"a\", \"policy\": "
                          "\"allow\", \"x\": 1}]}",
                          "Parameter 'rules[0].x' is unexpected");
    /* The syntax error's text is json-glib's; it names the file. */
    {
        g_autofree char *path = g_build_filename(dir, "syntax.json", NULL);
        g_autofree char *props = g_strdup_printf("{'filename': <'%s'>}",
                                                 path);
        g_autofree char *prefix = g_strdup_printf("JSON parse error, %s:1:",
                                                  path);
        g_autoptr(GVariant) v = props_of(props);
        g_autoptr(GError) err3 = NULL;

        write_file(path, "not json");
        g_assert_false(bd_object_add(&bd_authz_listfile_type, "bad", v,
                                     &err3));
        g_assert_nonnull(err3);
        g_assert_true(g_str_has_prefix(err3->message, prefix));
        g_unlink(path);
    }
    /* QEMU watches only absolute paths (the file loads first). */
    cwd = g_get_current_dir();
    g_assert_cmpint(g_chdir(dir), ==, 0);
    write_file("acl-relative.json", allow_fred);
    g_assert_false(bd_object_add(&bd_authz_listfile_type, "bad", relative,
                                 &err2));
    expect_error(err2, "Filename must be an absolute path");
    g_unlink("acl-relative.json");
    g_assert_cmpint(g_chdir(cwd), ==, 0);
    g_rmdir(dir);
}

/* Checks on other threads while the main thread swaps rule sets (for
 * ASan and TSan: a set is freed only when no check holds it). */
static gint stop_checkers;

static gpointer checker_thread(gpointer opaque)
{
    BdObject *a = opaque;
    guint n = 0;

    /* At least one check each, however late the thread starts: on a
     * loaded machine the swaps may all be done before it runs. */
    do {
        g_autoptr(GError) err = NULL;

        bd_authz_is_allowed(a, "fred", &err);
        g_assert_no_error(err);
        n++;
    } while (!g_atomic_int_get(&stop_checkers));
    return GUINT_TO_POINTER(n);
}

static void test_listfile_concurrent_checks(void)
{
    g_autofree char *dir = tmp_dir();
    g_autofree char *path = g_build_filename(dir, "acl.json", NULL);
    GThread *threads[4];
    BdObject *a;

    setup();
    write_file(path, allow_fred);
    a = add_listfile("busy", path, TRUE);
    g_atomic_int_set(&stop_checkers, 0);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
        threads[i] = g_thread_new("checker", checker_thread,
                                  bd_object_ref(a));
    }
    for (guint i = 0; i < 10; i++) {
        rename_over(path, i % 2 ? allow_fred : deny_fred);
        wait_allowed(a, "fred", i % 2);
    }
    g_atomic_int_set(&stop_checkers, 1);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
        g_assert_cmpuint(GPOINTER_TO_UINT(g_thread_join(threads[i])), >, 0);
        bd_object_unref(a);
    }
    drop(a);
    g_unlink(path);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* A bad listfile warns and the test waits for that warning. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
    g_log_set_handler(LOG_DOMAIN, G_LOG_LEVEL_WARNING, on_warning, NULL);
    g_test_add_func("/authz/simple", test_simple);
    g_test_add_func("/authz/list/default-policy", test_list_default_policy);
    g_test_add_func("/authz/list/matching", test_list_matching);
    g_test_add_func("/authz/list/rules", test_rules_direct);
    g_test_add_func("/authz/by-id", test_by_id);
    g_test_add_func("/authz/listfile/reload", test_listfile_reload);
    g_test_add_func("/authz/listfile/no-refresh", test_listfile_no_refresh);
    g_test_add_func("/authz/listfile/errors", test_listfile_errors);
    g_test_add_func("/authz/listfile/concurrent-checks",
                    test_listfile_concurrent_checks);
    return g_test_run();
}
