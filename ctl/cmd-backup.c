/* SPDX-License-Identifier: MIT */
/* blockctl backup / restore / backup-list: pull-mode backups into a
 * directory holding a qcow2 chain (a full image, then incremental
 * overlays whose backing file is the previous one) and a manifest.
 *
 *   DIR/manifest.json   {"node": N, "chain": [{"file", "kind",
 *                        "checkpoint", "since", "time", "size",
 *                        "copied", "sha256"}, ...]}
 *   DIR/0000-full.qcow2, DIR/0001-inc.qcow2, ...
 *
 * A run writes its image as DIR/.partial-*, then renames it into place
 * and replaces the manifest (write to a temporary file, rename): a
 * failure or a kill at any point leaves DIR as it was, except a
 * .partial-* file the next run removes.
 *
 * Thread model: blockctl's main thread; the copy runs on pull.c's
 * workers.
 */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl/backup.h"
#include "ctl/blockctl.h"
#include "formats/registry.h"
#include "control/input.h"

#define MANIFEST "manifest.json"

typedef struct {
    const BdCtlGlobal *g;
    gboolean tty;
    const char *label;
    gint64 last_json;   /* monotonic time of the last JSON progress line */
} Progress;

#define JSON_PROGRESS_INTERVAL (G_USEC_PER_SEC / 4)

static void show_progress(uint64_t done, uint64_t total, gpointer opaque)
{
    Progress *p = opaque;
    g_autofree char *d = bd_ctl_size((gint64)done);
    g_autofree char *t = bd_ctl_size((gint64)total);

    if (p->g->json) {
        /* Machine-readable progress: JSON lines on stderr, so stdout
         * keeps the one result document. */
        gint64 now = g_get_monotonic_time();

        if (done == total || now - p->last_json >= JSON_PROGRESS_INTERVAL) {
            p->last_json = now;
            fprintf(stderr, "{\"progress\": {\"operation\": \"%s\", "
                    "\"done\": %" G_GUINT64_FORMAT ", \"total\": %"
                    G_GUINT64_FORMAT "}}\n", p->label, done, total);
        }
        return;
    }
    if (!p->tty) {
        return;
    }
    printf("\r%s: %5.1f%% %s/%s", p->label,
           total ? 100.0 * done / total : 100.0, d, t);
    fflush(stdout);
}

static JsonNode *load_manifest(const char *dir, GError **errp)
{
    g_autofree char *path = g_build_filename(dir, MANIFEST, NULL);
    g_autoptr(JsonParser) parser = json_parser_new();

    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        return NULL;
    }
    if (!json_parser_load_from_file(parser, path, errp) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        if (errp && !*errp) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "%s is not a blockctl manifest", path);
        }
        return NULL;
    }
    return json_node_copy(json_parser_get_root(parser));
}

static gboolean save_manifest(const char *dir, JsonNode *m, GError **errp)
{
    g_autofree char *path = g_build_filename(dir, MANIFEST, NULL);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autofree char *text = NULL;

    json_generator_set_pretty(gen, TRUE);
    json_generator_set_root(gen, m);
    text = json_generator_to_data(gen, NULL);
    /* g_file_set_contents writes a temporary file, fsyncs and renames. */
    return g_file_set_contents(path, text, -1, errp);
}

/* The file's SHA-256 in hex.  GnuTLS (nettle) hashes with the CPU's
 * SHA extensions where it has them: four to five times GChecksum's
 * speed, which otherwise costs more than the copy itself. */
static char *file_sha256(const char *path, GError **errp)
{
    const size_t bufsize = 4 << 20;
    g_autofree char *buf = g_malloc(bufsize);
    unsigned char digest[32];
    gnutls_hash_hd_t hash;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "%s: %s", path, g_strerror(errno));
        return NULL;
    }
    if (gnutls_hash_init(&hash, GNUTLS_DIG_SHA256) < 0) {
        close(fd);
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "SHA-256 is not available");
        return NULL;
    }
    while ((n = read(fd, buf, bufsize)) > 0) {
        gnutls_hash(hash, buf, (size_t)n);
    }
    gnutls_hash_deinit(hash, digest);
    if (n < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "reading %s: %s", path, g_strerror(errno));
        close(fd);
        return NULL;
    }
    close(fd);
    GString *hex = g_string_sized_new(64);
    for (size_t i = 0; i < sizeof(digest); i++) {
        g_string_append_printf(hex, "%02x", digest[i]);
    }
    return g_string_free(hex, FALSE);
}

static void remove_partials(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        if (g_str_has_prefix(name, ".partial-")) {
            g_autofree char *p = g_build_filename(dir, name, NULL);
            unlink(p);
        }
    }
}

/* Write the pulled image: create, copy, flush. */
static gboolean write_image(const char *path, uint64_t size,
                            const char *backing, const char *uri,
                            GArray *extents, int workers, gboolean compress,
                            Progress *prog, GError **errp)
{
    BdEntry *entry;
    gboolean ok;
    int ret;

    if (!bd_ctl_qcow2_create(path, size, backing, errp)) {
        return FALSE;
    }
    entry = bd_ctl_image_open(path, TRUE, FALSE, errp);
    if (!entry) {
        return FALSE;
    }
    ok = bd_ctl_pull(uri, extents, entry, workers, compress, show_progress,
                     prog, errp);
    if (ok && (ret = bd_entry_flush(entry)) < 0) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "flushing %s: %s", path, g_strerror(-ret));
        ok = FALSE;
    }
    bd_ctl_image_close(entry);
    return ok;
}

/* Where to pull the session's export from: --nbd (a unix socket path,
 * or an NBD URI to which the export name is appended), else the URI the
 * daemon reports for its own NBD server. */
static char *session_uri(JsonNode *info, const char *id, const char *nbd,
                         GError **errp)
{
    JsonObject *o = JSON_NODE_HOLDS_OBJECT(info)
                    ? json_node_get_object(info) : NULL;

    if (nbd && strstr(nbd, "://")) {
        return g_strdup_printf("%s%s%s", nbd,
                               g_str_has_suffix(nbd, "/") ? "" : "/", id);
    }
    if (nbd) {
        return g_strdup_printf("nbd+unix:///%s?socket=%s", id, nbd);
    }
    if (o && json_object_has_member(o, "nbd-uri")) {
        return g_strdup(json_object_get_string_member(o, "nbd-uri"));
    }
    g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                "the daemon runs no NBD server (start one with "
                "nbd-server-start, or give --nbd SOCKET|URI)");
    return NULL;
}

typedef struct {
    const char *node, *dir, *nbd;
    gboolean full, incremental, differential, compress;
    int workers;
} BackupArgs;

static int parse_backup_args(int argc, char **argv, BackupArgs *a)
{
    a->workers = 8;
    a->nbd = g_getenv("BLOCKD_NBD_SOCKET");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--full")) {
            a->full = TRUE;
        } else if (!strcmp(argv[i], "--incremental")) {
            a->incremental = TRUE;
        } else if (!strcmp(argv[i], "--differential")) {
            a->differential = TRUE;
        } else if (!strcmp(argv[i], "--compress")) {
            a->compress = TRUE;
        } else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
            a->workers = atoi(argv[++i]);
            if (a->workers < 1 || a->workers > 64) {
                return bd_ctl_usage("backup: --workers is 1 to 64");
            }
        } else if (!strcmp(argv[i], "--nbd") && i + 1 < argc) {
            a->nbd = argv[++i];
        } else if (argv[i][0] == '-') {
            return bd_ctl_usage("backup: unknown option '%s'", argv[i]);
        } else if (!a->node) {
            a->node = argv[i];
        } else if (!a->dir) {
            a->dir = argv[i];
        } else {
            return bd_ctl_usage("backup: unexpected argument '%s'", argv[i]);
        }
    }
    if (!a->node || !a->dir) {
        return bd_ctl_usage("backup NODE DIR [--full|--incremental|"
                            "--differential] [--compress] [--workers N] "
                            "[--nbd SOCKET|URI]");
    }
    if (a->full + a->incremental + a->differential > 1) {
        return bd_ctl_usage("backup: one of --full, --incremental and "
                            "--differential");
    }
    return BD_CTL_OK;
}

int bd_ctl_cmd_backup(const BdCtlGlobal *g, int argc, char **argv)
{
    BackupArgs a = { 0 };
    g_autoptr(BdQmpClient) c = NULL;
    g_autoptr(JsonNode) manifest = NULL, ret = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(GArray) extents = NULL;
    g_autofree char *id = NULL, *checkpoint = NULL, *uri = NULL;
    g_autofree char *name = NULL, *partial = NULL, *final = NULL;
    g_autofree char *bitmap_ctx = NULL, *sha = NULL;
    const char *since = NULL, *backing = NULL;
    JsonArray *chain;
    JsonObject *m, *args, *entry;
    uint64_t size = 0, copied = 0;
    Progress prog = { g, isatty(STDOUT_FILENO), "backup" };
    int code = parse_backup_args(argc, argv, &a);

    if (code != BD_CTL_OK) {
        return code;
    }
    if (g_mkdir_with_parents(a.dir, 0755) < 0) {
        fprintf(stderr, "blockctl: backup: %s: %s\n", a.dir,
                g_strerror(errno));
        return BD_CTL_FAILED;
    }
    remove_partials(a.dir);
    manifest = load_manifest(a.dir, &err);
    if (err) {
        fprintf(stderr, "blockctl: backup: %s\n", err->message);
        return BD_CTL_FAILED;
    }
    if (!manifest) {
        m = json_object_new();
        json_object_set_string_member(m, "node", a.node);
        json_object_set_array_member(m, "chain", json_array_new());
        manifest = bd_json_node_take_object(m);
    }
    m = json_node_get_object(manifest);
    chain = json_object_get_array_member(m, "chain");
    if (strcmp(json_object_get_string_member(m, "node"), a.node)) {
        fprintf(stderr, "blockctl: backup: %s holds backups of node '%s'\n",
                a.dir, json_object_get_string_member(m, "node"));
        return BD_CTL_FAILED;
    }
    if ((a.incremental || a.differential) && !json_array_get_length(chain)) {
        fprintf(stderr, "blockctl: backup: no full backup in %s to build "
                "an %s one on\n", a.dir,
                a.incremental ? "incremental" : "differential");
        return BD_CTL_FAILED;
    }
    if (!a.full && json_array_get_length(chain)) {
        /* Incremental: the changes since the last backup, over it.
         * Differential: the changes since the full one, over it. */
        JsonObject *base = json_array_get_object_element(
            chain, a.differential ? 0 : json_array_get_length(chain) - 1);
        since = json_object_get_string_member(base, "checkpoint");
        backing = json_object_get_string_member(base, "file");
    }
    const char *kind = !since ? "full"
                       : a.differential ? "differential" : "incremental";

    c = bd_ctl_connect(g);
    if (!c) {
        return BD_CTL_FAILED;
    }
    guint n = json_array_get_length(chain);
    id = g_strdup_printf("blockctl-%d", (int)getpid());
    checkpoint = g_strdup_printf("blockctl-%" G_GINT64_FORMAT "-%d-%u",
                                 g_get_real_time() / G_USEC_PER_SEC,
                                 (int)getpid(), n);
    args = json_object_new();
    json_object_set_string_member(args, "node", a.node);
    json_object_set_string_member(args, "id", id);
    json_object_set_string_member(args, "new-checkpoint", checkpoint);
    json_object_set_int_member(args, "lease-seconds", 300);
    if (since) {
        json_object_set_string_member(args, "since", since);
    }
    g_autoptr(JsonNode) argn = bd_json_node_take_object(args);
    ret = bd_ctl_execute(c, "x-blockd-backup-begin", argn);
    if (!ret) {
        return BD_CTL_FAILED;
    }

    uri = session_uri(ret, id, a.nbd, &err);
    bitmap_ctx = since ? g_strdup_printf("qemu:dirty-bitmap:%s", since)
                       : NULL;
    name = g_strdup_printf("%04u-%s.qcow2", n, !since ? "full"
                           : a.differential ? "diff" : "inc");
    partial = g_strdup_printf("%s/.partial-%s", a.dir, name);
    final = g_build_filename(a.dir, name, NULL);
    extents = uri ? bd_ctl_pull_extents(uri, bitmap_ctx, &size, &err)
                  : NULL;
    if (extents) {
        for (guint i = 0; i < extents->len; i++) {
            copied += g_array_index(extents, BdCtlExtent, i).length;
        }
        bd_ctl_graph_init();
        if (write_image(partial, size, backing, uri, extents, a.workers,
                        a.compress, &prog, &err) &&
            rename(partial, final) < 0) {
            g_set_error(&err, G_FILE_ERROR, g_file_error_from_errno(errno),
                        "%s: %s", final, g_strerror(errno));
        }
    }
    if (prog.tty && !g->json) {
        printf("\n");
    }
    /* The session ends whatever happened. */
    JsonObject *end = json_object_new();
    json_object_set_string_member(end, "id", id);
    g_autoptr(JsonNode) endn = bd_json_node_take_object(end);
    g_autoptr(JsonNode) endret = bd_qmp_client_execute(c,
                                                       "x-blockd-backup-end",
                                                       endn, NULL, NULL);
    (void)endret;    /* best effort: the result does not depend on it */
    if (!err) {
        sha = file_sha256(final, &err);
    }
    if (err) {
        /* The checkpoint this run started marks nothing kept: drop it,
         * so the next incremental starts from the manifest's last. */
        JsonObject *del = json_object_new();
        json_object_set_string_member(del, "node", a.node);
        json_object_set_string_member(del, "name", checkpoint);
        g_autoptr(JsonNode) deln = bd_json_node_take_object(del);
        g_autoptr(JsonNode) delret = bd_qmp_client_execute(
            c, "x-blockd-checkpoint-delete", deln, NULL, NULL);
        (void)delret;
        unlink(partial);
        fprintf(stderr, "blockctl: backup failed, %s unchanged: %s\n",
                a.dir, err->message);
        return BD_CTL_FAILED;
    }
    entry = json_object_new();
    json_object_set_string_member(entry, "file", name);
    json_object_set_string_member(entry, "kind", kind);
    json_object_set_boolean_member(entry, "compressed", a.compress);
    json_object_set_string_member(entry, "checkpoint", checkpoint);
    if (since) {
        json_object_set_string_member(entry, "since", since);
    } else {
        json_object_set_null_member(entry, "since");
    }
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *iso = g_date_time_format_iso8601(now);
    json_object_set_string_member(entry, "time", iso);
    json_object_set_int_member(entry, "size", (gint64)size);
    json_object_set_int_member(entry, "copied", (gint64)copied);
    json_object_set_string_member(entry, "sha256", sha);
    if (!since) {
        /* A full backup starts a new chain. */
        json_object_set_array_member(m, "chain", json_array_new());
        chain = json_object_get_array_member(m, "chain");
    }
    json_array_add_object_element(chain, entry);
    if (!save_manifest(a.dir, manifest, &err)) {
        unlink(final);
        fprintf(stderr, "blockctl: backup failed: %s\n", err->message);
        return BD_CTL_FAILED;
    }
    if (g->json) {
        bd_ctl_print_json(json_array_get_element(chain,
                              json_array_get_length(chain) - 1));
    } else {
        g_autofree char *cs = bd_ctl_size((gint64)copied);
        printf("%s backup of '%s' in %s: %s copied, checkpoint %s\n",
               kind, a.node, final, cs, checkpoint);
    }
    return BD_CTL_OK;
}

int bd_ctl_cmd_backup_list(const BdCtlGlobal *g, int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) manifest = NULL;
    JsonArray *chain;

    if (argc != 2) {
        return bd_ctl_usage("backup-list DIR");
    }
    manifest = load_manifest(argv[1], &err);
    if (!manifest) {
        fprintf(stderr, "blockctl: backup-list: %s\n",
                err ? err->message : "no backups in this directory");
        return BD_CTL_FAILED;
    }
    if (g->json) {
        bd_ctl_print_json(manifest);
        return BD_CTL_OK;
    }
    chain = json_object_get_array_member(json_node_get_object(manifest),
                                         "chain");
    printf("Backups of node '%s':\n", json_object_get_string_member(
               json_node_get_object(manifest), "node"));
    for (guint i = 0; i < json_array_get_length(chain); i++) {
        JsonObject *e = json_array_get_object_element(chain, i);
        g_autofree char *sz = bd_ctl_size(
            json_object_get_int_member(e, "size"));
        g_autofree char *cp = bd_ctl_size(
            json_object_get_int_member(e, "copied"));
        printf("  %u  %-16s %-11s %s  size %s, copied %s, checkpoint %s\n",
               i, json_object_get_string_member(e, "file"),
               json_object_get_string_member(e, "kind"),
               json_object_get_string_member(e, "time"), sz, cp,
               json_object_get_string_member(e, "checkpoint"));
    }
    return BD_CTL_OK;
}

/* --- restore --- */

static gboolean verify_chain(const char *dir, JsonArray *chain, guint upto,
                             GError **errp)
{
    for (guint i = 0; i <= upto; i++) {
        JsonObject *e = json_array_get_object_element(chain, i);
        g_autofree char *path = g_build_filename(
            dir, json_object_get_string_member(e, "file"), NULL);
        g_autofree char *sha = file_sha256(path, errp);

        if (!sha) {
            return FALSE;
        }
        if (strcmp(sha, json_object_get_string_member(e, "sha256"))) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "%s does not match its checksum in the manifest",
                        path);
            return FALSE;
        }
    }
    return TRUE;
}

/* Copy every non-zero chunk of 'src' to 'write' at the same offset. */
static gboolean copy_out(BdEntry *src, uint64_t size,
                         gboolean (*write)(gpointer, uint64_t, uint64_t,
                                           const void *, GError **),
                         gpointer opaque, Progress *prog, GError **errp)
{
    const uint64_t chunk = 4 << 20;
    g_autofree char *buf = g_malloc(chunk);

    for (uint64_t off = 0; off < size; off += chunk) {
        uint64_t n = MIN(chunk, size - off);
        int ret = bd_entry_pread(src, off, n, buf, 0);

        if (ret < 0) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "reading the backup at %" G_GUINT64_FORMAT ": %s",
                        off, g_strerror(-ret));
            return FALSE;
        }
        /* The target starts out zeroed: zero chunks stay holes. */
        gboolean zero = TRUE;
        for (uint64_t k = 0; k < n && zero; k += 8) {
            zero = *(uint64_t *)(buf + k) == 0;
        }
        if (!zero && !write(opaque, off, n, buf, errp)) {
            return FALSE;
        }
        show_progress(off + n, size, prog);
    }
    return TRUE;
}

static gboolean write_fd(gpointer opaque, uint64_t off, uint64_t n,
                         const void *buf, GError **errp)
{
    int fd = GPOINTER_TO_INT(opaque);

    if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "writing the restored image: %s", g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

static gboolean write_nbd(gpointer opaque, uint64_t off, uint64_t n,
                          const void *buf, GError **errp)
{
    if (nbd_pwrite(opaque, buf, n, off, 0) < 0) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "writing to the NBD target: %s", nbd_get_error());
        return FALSE;
    }
    return TRUE;
}

static gboolean write_entry(gpointer opaque, uint64_t off, uint64_t n,
                            const void *buf, GError **errp)
{
    int ret = bd_entry_pwrite(opaque, off, n, buf, 0);

    if (ret < 0) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "writing the restored image: %s", g_strerror(-ret));
        return FALSE;
    }
    return TRUE;
}

/* The restore target's format: --format, else qcow2 for an existing
 * qcow2 file or a new file named *.qcow2, else raw. */
static const char *restore_format(const char *target, const char *format)
{
    if (format) {
        return format;
    }
    if (g_file_test(target, G_FILE_TEST_IS_REGULAR)) {
        return strcmp(bd_formats_probe_file(target), "qcow2") ? "raw"
                                                               : "qcow2";
    }
    return g_str_has_suffix(target, ".qcow2") ? "qcow2" : "raw";
}

/* Restore into a new qcow2 image at 'target' (replacing the file):
 * written with blockd's own driver, zero chunks left unallocated. */
static gboolean restore_qcow2(BdEntry *src, uint64_t size, const char *target,
                              Progress *prog, GError **errp)
{
    BdEntry *dst;
    gboolean ok;
    int ret;

    if (unlink(target) < 0 && errno != ENOENT) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(errno),
                    "%s: %s", target, g_strerror(errno));
        return FALSE;
    }
    if (!bd_ctl_qcow2_create(target, size, NULL, errp)) {
        return FALSE;
    }
    dst = bd_ctl_image_open(target, TRUE, FALSE, errp);
    if (!dst) {
        return FALSE;
    }
    ok = copy_out(src, size, write_entry, dst, prog, errp);
    if (ok && (ret = bd_entry_flush(dst)) < 0) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "flushing %s: %s", target, g_strerror(-ret));
        ok = FALSE;
    }
    bd_ctl_image_close(dst);
    return ok;
}

int bd_ctl_cmd_restore(const BdCtlGlobal *g, int argc, char **argv)
{
    const char *dir = NULL, *target = NULL, *format = NULL;
    gboolean verify = FALSE;
    int at = -1;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) manifest = NULL;
    g_autofree char *path = NULL;
    BdEntry *src;
    JsonArray *chain;
    Progress prog = { g, isatty(STDOUT_FILENO), "restore" };
    gboolean ok;
    int64_t size;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--at") && i + 1 < argc) {
            at = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--verify")) {
            verify = TRUE;
        } else if ((!strcmp(argv[i], "--format") || !strcmp(argv[i], "-f"))
                   && i + 1 < argc) {
            format = argv[++i];
            if (strcmp(format, "raw") && strcmp(format, "qcow2")) {
                return bd_ctl_usage("restore: --format is raw or qcow2");
            }
        } else if (argv[i][0] == '-') {
            return bd_ctl_usage("restore: unknown option '%s'", argv[i]);
        } else if (!dir) {
            dir = argv[i];
        } else if (!target) {
            target = argv[i];
        } else {
            return bd_ctl_usage("restore: unexpected argument '%s'", argv[i]);
        }
    }
    if (!dir || !target) {
        return bd_ctl_usage("restore DIR [--at N] [--verify] "
                            "[--format raw|qcow2] TARGET (a file or an "
                            "NBD URI)");
    }
    manifest = load_manifest(dir, &err);
    if (!manifest) {
        fprintf(stderr, "blockctl: restore: %s\n",
                err ? err->message : "no backups in this directory");
        return BD_CTL_FAILED;
    }
    chain = json_object_get_array_member(json_node_get_object(manifest),
                                         "chain");
    if (at < 0) {
        at = (int)json_array_get_length(chain) - 1;
    }
    if (at < 0 || (guint)at >= json_array_get_length(chain)) {
        fprintf(stderr, "blockctl: restore: no backup %d in %s\n", at, dir);
        return BD_CTL_FAILED;
    }
    if (verify && !verify_chain(dir, chain, (guint)at, &err)) {
        fprintf(stderr, "blockctl: restore: %s\n", err->message);
        return BD_CTL_FAILED;
    }
    bd_ctl_graph_init();
    path = g_build_filename(dir, json_object_get_string_member(
        json_array_get_object_element(chain, (guint)at), "file"), NULL);
    src = bd_ctl_image_open(path, FALSE, TRUE, &err);
    if (!src) {
        fprintf(stderr, "blockctl: restore: %s\n", err->message);
        return BD_CTL_FAILED;
    }
    size = bd_entry_getlength(src);
    if (g_str_has_prefix(target, "nbd")) {
        struct nbd_handle *h = nbd_create();
        ok = h && nbd_connect_uri(h, target) == 0;
        if (!ok) {
            g_set_error(&err, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "%s: %s", target, nbd_get_error());
        } else if (nbd_get_size(h) < size) {
            g_set_error(&err, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "%s is smaller than the backup", target);
            ok = FALSE;
        } else {
            /* The target is not known to read as zeroes: zero it. */
            for (int64_t o = 0; ok && o < size; o += 1 << 30) {
                ok = nbd_zero(h, MIN(size - o, 1 << 30), o, 0) == 0;
            }
            ok = ok && copy_out(src, size, write_nbd, h, &prog, &err) &&
                 nbd_flush(h, 0) == 0;
            if (!ok && !err) {
                g_set_error(&err, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                            "%s: %s", target, nbd_get_error());
            }
        }
        if (h) {
            nbd_shutdown(h, 0);
            nbd_close(h);
        }
    } else if (!strcmp(restore_format(target, format), "qcow2")) {
        ok = restore_qcow2(src, (uint64_t)size, target, &prog, &err);
    } else {
        int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ok = fd >= 0 && ftruncate(fd, size) == 0;
        if (!ok) {
            g_set_error(&err, G_FILE_ERROR, g_file_error_from_errno(errno),
                        "%s: %s", target, g_strerror(errno));
        } else {
            ok = copy_out(src, size, write_fd, GINT_TO_POINTER(fd), &prog,
                          &err) && fsync(fd) == 0;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    bd_ctl_image_close(src);
    if (prog.tty && !g->json) {
        printf("\n");
    }
    if (!ok) {
        fprintf(stderr, "blockctl: restore failed: %s\n",
                err ? err->message : "unknown error");
        return BD_CTL_FAILED;
    }
    if (!g->json) {
        printf("restored backup %d of %s to %s\n", at, dir, target);
    }
    return BD_CTL_OK;
}
