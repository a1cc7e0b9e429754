/* SPDX-License-Identifier: MIT */
/* crypto/: TLS sessions end to end over a socketpair, server and client
 * both ours: PSK (identity, wrong key), anonymous, gathered sends of
 * replies larger than a record, and credential errors in QEMU's words.
 * x509 runs in the integration tests, with certtool's certificates. */
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "crypto/tls.h"

#define PSK_KEY "9d6f3c3f8b6c1a5e0f2a4b6c8d0e1f2a"

typedef struct {
    char *dir;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    g_autofree char *file = NULL;

    f->dir = g_dir_make_tmp("blockd-tls-XXXXXX", NULL);
    g_assert_nonnull(f->dir);
    file = g_build_filename(f->dir, "keys.psk", NULL);
    g_assert_true(g_file_set_contents(file, "alice:" PSK_KEY "\n"
                                      "bob:00112233445566778899aabbccddeeff\n",
                                      -1, NULL));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    g_autofree char *file = g_build_filename(f->dir, "keys.psk", NULL);

    g_unlink(file);
    g_rmdir(f->dir);
    g_free(f->dir);
}

static BdTlsCreds *make_creds(BdTlsCredsKind kind, BdTlsEndpoint ep,
                              const char *dir, const char *user)
{
    BdTlsCredsConfig cfg = {
        .kind = kind, .endpoint = ep, .dir = dir, .verify_peer = TRUE,
        .username = user,
    };
    g_autoptr(GError) err = NULL;
    BdTlsCreds *c = bd_tls_creds_new(&cfg, &err);

    g_assert_no_error(err);
    return c;
}

typedef struct {
    BdTlsCreds *creds;
    int fd;
    gboolean ok;
    char *identity;
    char *error;
    size_t echo;                /* bytes to read, then send back */
} Peer;

/* The server end, on its own thread: handshake, then echo. */
static gpointer server_main(gpointer data)
{
    Peer *p = data;
    g_autoptr(GError) err = NULL;
    g_autoptr(BdTlsSession) s = bd_tls_session_new(p->creds, p->fd, NULL,
                                                   &err);

    if (!s || !bd_tls_session_handshake(s, &err)) {
        p->error = g_strdup(err->message);
        close(p->fd);           /* the client sees the end */
        return NULL;
    }
    p->ok = TRUE;
    p->identity = g_strdup(bd_tls_session_identity(s));
    if (p->echo) {
        g_autofree uint8_t *buf = g_malloc(p->echo);
        size_t got = 0;
        struct iovec iov[2];

        while (got < p->echo) {
            ssize_t n = bd_tls_session_recv(s, buf + got, p->echo - got);
            g_assert_cmpint(n, >, 0);
            got += n;
        }
        /* Two pieces, like a reply header and its payload. */
        iov[0] = (struct iovec){ .iov_base = buf, .iov_len = 16 };
        iov[1] = (struct iovec){ .iov_base = buf + 16,
                                 .iov_len = p->echo - 16 };
        g_assert_cmpint(bd_tls_session_sendv(s, iov, 2), ==, 0);
    }
    bd_tls_session_bye(s);
    return NULL;
}

/* Connect a client with 'client' to a server with 'server'; echo 'len'
 * bytes when the handshake works.  Returns whether it did (both ends). */
static gboolean run_pair(BdTlsCreds *server, BdTlsCreds *client, size_t len,
                         Peer *sp)
{
    int fds[2];
    GThread *t;
    g_autoptr(GError) err = NULL;
    g_autoptr(BdTlsSession) s = NULL;
    gboolean ok;

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
    sp->creds = server;
    sp->fd = fds[0];
    sp->echo = len;
    t = g_thread_new("tls-server", server_main, sp);

    s = bd_tls_session_new(client, fds[1], NULL, &err);
    g_assert_no_error(err);
    ok = bd_tls_session_handshake(s, &err);
    if (ok && len) {
        g_autofree uint8_t *out = g_malloc(len), *in = g_malloc(len);
        struct iovec iov = { .iov_base = out, .iov_len = len };
        size_t got = 0;

        for (size_t i = 0; i < len; i++) {
            out[i] = (uint8_t)(i * 7 + 3);
        }
        g_assert_cmpint(bd_tls_session_sendv(s, &iov, 1), ==, 0);
        while (got < len) {
            ssize_t n = bd_tls_session_recv(s, in + got, len - got);
            g_assert_cmpint(n, >, 0);
            got += n;
        }
        g_assert_cmpmem(in, len, out, len);
        /* Then the server's close_notify: a clean end. */
        g_assert_cmpint(bd_tls_session_recv(s, in, 1), ==, 0);
    }
    g_clear_pointer(&s, bd_tls_session_free);
    close(fds[1]);
    g_thread_join(t);
    if (sp->ok) {
        close(fds[0]);
    }
    return ok && sp->ok;
}

static void test_psk(Fixture *f, gconstpointer data)
{
    g_autoptr(BdTlsCreds) server = make_creds(BD_TLS_CREDS_PSK,
                                              BD_TLS_ENDPOINT_SERVER,
                                              f->dir, NULL);
    g_autoptr(BdTlsCreds) client = make_creds(BD_TLS_CREDS_PSK,
                                              BD_TLS_ENDPOINT_CLIENT,
                                              f->dir, "alice");
    Peer sp = { 0 };

    /* 1 MiB + a bit: many records each way. */
    g_assert_true(run_pair(server, client, (1 << 20) + 123, &sp));
    g_assert_cmpstr(sp.identity, ==, "alice");
    g_free(sp.identity);
}

static void test_psk_wrong_key(Fixture *f, gconstpointer data)
{
    g_autoptr(BdTlsCreds) server = make_creds(BD_TLS_CREDS_PSK,
                                              BD_TLS_ENDPOINT_SERVER,
                                              f->dir, NULL);
    g_autoptr(BdTlsCreds) client = NULL;
    g_autofree char *other = g_dir_make_tmp("blockd-tls-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(other, "keys.psk", NULL);
    Peer sp = { 0 };

    /* alice, with a key the server does not know. */
    g_assert_true(g_file_set_contents(file, "alice:"
                                      "ffffffffffffffffffffffffffffffff\n",
                                      -1, NULL));
    client = make_creds(BD_TLS_CREDS_PSK, BD_TLS_ENDPOINT_CLIENT, other,
                        "alice");
    g_assert_false(run_pair(server, client, 0, &sp));
    g_assert_nonnull(sp.error);
    g_assert_true(g_str_has_prefix(sp.error, "TLS handshake failed: "));
    g_free(sp.error);
    g_unlink(file);
    g_rmdir(other);
}

static void test_anon(Fixture *f, gconstpointer data)
{
    g_autoptr(BdTlsCreds) server = make_creds(BD_TLS_CREDS_ANON,
                                              BD_TLS_ENDPOINT_SERVER, NULL,
                                              NULL);
    g_autoptr(BdTlsCreds) client = make_creds(BD_TLS_CREDS_ANON,
                                              BD_TLS_ENDPOINT_CLIENT, NULL,
                                              NULL);
    Peer sp = { 0 };

    g_assert_true(run_pair(server, client, 4096, &sp));
    g_assert_null(sp.identity);
}

static void expect_error(const BdTlsCredsConfig *cfg, const char *msg)
{
    g_autoptr(GError) err = NULL;
    BdTlsCreds *c = bd_tls_creds_new(cfg, &err);

    g_assert_null(c);
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, msg);
}

static void test_errors(Fixture *f, gconstpointer data)
{
    g_autofree char *psk = g_build_filename(f->dir, "keys.psk", NULL);
    g_autofree char *ca = g_build_filename(f->dir, "ca-cert.pem", NULL);
    g_autofree char *msg = NULL;
    BdTlsCredsConfig cfg = { .kind = BD_TLS_CREDS_X509,
                             .endpoint = BD_TLS_ENDPOINT_SERVER };

    expect_error(&cfg, "Missing 'dir' property value");
    cfg.dir = f->dir;
    msg = g_strdup_printf("Unable to access credentials %s: No such file "
                          "or directory", ca);
    expect_error(&cfg, msg);

    cfg.kind = BD_TLS_CREDS_PSK;
    cfg.username = "alice";
    expect_error(&cfg, "username should not be set when endpoint=server");
    cfg.endpoint = BD_TLS_ENDPOINT_CLIENT;
    cfg.username = NULL;
    g_free(msg);
    msg = g_strdup_printf("Username qemu not found in PSK file %s", psk);
    expect_error(&cfg, msg);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add("/tls/psk", Fixture, NULL, fixture_setup, test_psk,
               fixture_teardown);
    g_test_add("/tls/psk-wrong-key", Fixture, NULL, fixture_setup,
               test_psk_wrong_key, fixture_teardown);
    g_test_add("/tls/anon", Fixture, NULL, fixture_setup, test_anon,
               fixture_teardown);
    g_test_add("/tls/errors", Fixture, NULL, fixture_setup, test_errors,
               fixture_teardown);
    return g_test_run();
}
