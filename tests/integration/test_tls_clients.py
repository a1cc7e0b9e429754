#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""x-query-nbd-clients (issue 12, blockd only: QEMU has no such command):
one entry per connected NBD client with its export ('export'), its peer
address ('address'), whether TLS is on ('tls'), its TLS identity
('tls-identity': the certificate DN or the PSK username, absent without
one) and the bytes of data it read from and wrote to the export
('bytes-read', 'bytes-written', from the server's point of view).  Checked
with libnbd connections held open after moving a known amount of data.
Against qemu-storage-daemon only the absence of the command is checked."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Skip, assert_eq, assert_in, is_reference, main, require_nbd,  # noqa: E402
                         skip_if_reference, tests_of, wait_for)
from raw_nbd import (idle_sockets)  # noqa: E402
from tls_env import (CLIENT2_DN, CLIENT_DN, PSK_USER, psk_client_file, start_tls_daemon,  # noqa: E402
                     tls_connection, tls_handle)

KiB = 1024
MEMBERS = {'export', 'address', 'tls', 'tls-identity', 'bytes-read', 'bytes-written'}


def _clients(q):
    got = q.execute('x-query-nbd-clients')
    for c in got:
        extra = set(c) - MEMBERS
        assert_eq(extra, set(), 'unknown members in %r' % c)
        for k in ('export', 'address'):
            assert_eq(isinstance(c[k], str), True, '%s is a string in %r' % (k, c))
        assert_eq(isinstance(c['tls'], bool), True, 'tls is a bool in %r' % c)
        for k in ('bytes-read', 'bytes-written'):
            assert_eq(isinstance(c[k], int), True, '%s is an int in %r' % (k, c))
    return got


def _move(h, writes, reads, chunk=64 * KiB):
    """`writes` writes then `reads` reads of `chunk` bytes each."""
    for i in range(writes):
        h.pwrite(bytes([i + 1]) * chunk, i * chunk)
    for i in range(reads):
        h.pread(chunk, i * chunk)
    return writes * chunk, reads * chunk


def _wait_counts(q, pred, what):
    """Wait until the list of clients satisfies pred; returns it."""
    seen = []

    def ok():
        seen[:] = [_clients(q)]
        return pred(seen[0])
    try:
        wait_for(ok, timeout=10, what=what)
    except AssertionError:
        raise AssertionError('%s; last x-query-nbd-clients: %r' % (what, seen[0] if seen else None))
    return seen[0]


def test_reference_has_no_command():
    """QEMU 7.2 does not know the command (CommandNotFound)."""
    if not is_reference():
        raise Skip('checks the reference daemon only')
    with start_tls_daemon() as d:
        err = d.qmp().error('x-query-nbd-clients')
        assert_eq(err['class'], 'CommandNotFound', 'error class')


def test_x509_clients():
    """Two X.509 clients held open: each entry has export 'disk', a
    127.0.0.1 address, tls true, its DN and exactly its own byte counts;
    entries go away when the clients disconnect."""
    skip_if_reference('x-query-nbd-clients is blockd-only')
    with start_tls_daemon() as d:
        q = d.qmp()
        assert_eq(_clients(q), [], 'clients before any connection')
        with tls_connection(d, d.pki.client) as h1, tls_connection(d, d.pki.client2) as h2:
            w1, r1 = _move(h1, writes=3, reads=5)
            w2, r2 = _move(h2, writes=1, reads=0, chunk=4 * KiB)
            h2.pread(512, 0)
            r2 = 512
            want = {CLIENT_DN: (r1, w1), CLIENT2_DN: (r2, w2)}

            def right(cs):
                return sorted((c.get('tls-identity'), c['bytes-read'], c['bytes-written'])
                              for c in cs) == sorted((k, v[0], v[1]) for k, v in want.items())
            cs = _wait_counts(q, right, 'byte counts of both clients')
            for c in cs:
                assert_eq(c['export'], 'disk', 'export')
                assert_eq(c['tls'], True, 'tls')
                assert_in('127.0.0.1', c['address'], 'address')
            addrs = [c['address'] for c in cs]
            assert_eq(len(set(addrs)), 2, 'two different addresses %r' % addrs)
        _wait_counts(q, lambda cs: cs == [], 'no clients after both left')


def test_psk_client_identity():
    """A PSK client's identity is its username."""
    skip_if_reference('x-query-nbd-clients is blockd-only')
    with start_tls_daemon(creds='psk') as d:
        q = d.qmp()
        with tls_connection(d, psk_file=psk_client_file(d), user=PSK_USER) as h:
            w, r = _move(h, writes=2, reads=1)
            cs = _wait_counts(q, lambda cs: len(cs) == 1 and cs[0]['bytes-written'] == w,
                              'PSK client counted')
            assert_eq(cs[0]['tls'], True, 'tls')
            assert_eq(cs[0]['tls-identity'], PSK_USER, 'PSK identity')
            assert_eq(cs[0]['bytes-read'], r, 'bytes-read')


def test_plaintext_client():
    """Without TLS: tls false and no tls-identity member."""
    skip_if_reference('x-query-nbd-clients is blockd-only')
    with start_tls_daemon(creds=None) as d:
        q = d.qmp()
        nbd = require_nbd()
        h = nbd.NBD()
        h.connect_uri(d.tcp_uri(tls=False))
        try:
            w, r = _move(h, writes=1, reads=2, chunk=8 * KiB)
            cs = _wait_counts(q, lambda cs: len(cs) == 1 and cs[0]['bytes-read'] == r,
                              'plaintext client counted')
            assert_eq(cs[0]['tls'], False, 'tls')
            assert_eq('tls-identity' in cs[0], False, 'tls-identity present: %r' % cs[0])
            assert_eq(cs[0]['bytes-written'], w, 'bytes-written')
            assert_eq(cs[0]['export'], 'disk', 'export')
        finally:
            h.shutdown()


def test_unix_socket_client():
    """A client over the unix socket: TLS on, its DN, an address string."""
    skip_if_reference('x-query-nbd-clients is blockd-only')
    with start_tls_daemon(unix=True) as d:
        q = d.qmp()
        h = tls_handle(d.pki.client)
        h.set_export_name('disk')
        h.connect_unix(d.nbd_sock)
        try:
            h.pwrite(b'\x01' * 4096, 0)
            cs = _wait_counts(q, lambda cs: len(cs) == 1 and cs[0]['bytes-written'] == 4096,
                              'unix client counted')
            assert_eq(cs[0]['tls-identity'], CLIENT_DN, 'identity')
        finally:
            h.shutdown()


def test_handshaking_sockets_not_listed_as_exports():
    """Sockets still in the handshake are not clients of an export: with
    20 idle ones and one real client, exactly one entry names 'disk'."""
    skip_if_reference('x-query-nbd-clients is blockd-only')
    with start_tls_daemon() as d:
        q = d.qmp()
        with idle_sockets(d.port, 20):
            with tls_connection(d, d.pki.client) as h:
                h.pread(4096, 0)
                cs = _wait_counts(q, lambda cs: sum(c['bytes-read'] for c in cs) == 4096,
                                  'one read counted')
                assert_eq([c['export'] for c in cs if c['export'] == 'disk'], ['disk'],
                          'clients of disk in %r' % cs)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
