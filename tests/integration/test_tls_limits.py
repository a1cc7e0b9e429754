#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Limits on NBD handshakes (issue 12): a client that does not finish its
handshake within handshake-max-seconds (nbd-server-start and --nbd-server,
default 10 s, 0 = no limit, as QEMU 9.1) is disconnected, idle or
talking, before or after STARTTLS, while a client that got through is never
timed out; and sockets that connect and say nothing do not starve real
clients, even past max-connections (connections still in the handshake
count apart from it).

qemu-storage-daemon 7.2 has no handshake limit and counts handshakes in
max-connections, so those cases are blockd-only; 200 idle sockets without
max-connections not starving a TLS client runs against it too."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, is_reference, main, skip_if_reference, tests_of)  # noqa: E402
from raw_nbd import (OPT_LIST, OPT_STARTTLS, REP_ACK, REP_ERR_TLS_REQD, idle_sockets)  # noqa: E402
from tls_env import (image_opts, nbdinfo_size, qemu_client_x509, qemu_io_tls, serve_over_qmp,  # noqa: E402
                     start_tls_daemon, tls_connection, MiB)

SIZE = 4 * MiB
IDLE = 200


def _closed_between(c, not_before, by):
    """The server closes RawNBD c later than `not_before` seconds and no
    later than `by` seconds from now."""
    t0 = time.monotonic()
    if not_before:
        assert_eq(c.closed_by_server(not_before), False,
                  'connection closed within %ss' % not_before)
    closed = c.closed_by_server(by - (time.monotonic() - t0))
    assert_eq(closed, True, 'connection closed within %ss' % by)
    return time.monotonic() - t0


def _real_clients_work(d):
    """nbdinfo and qemu-io over TLS get in and do I/O."""
    assert_eq(nbdinfo_size(d.tcp_uri(d.pki.client)), SIZE, 'nbdinfo over TLS')
    cli = qemu_client_x509(d.pki.client)
    qemu_io_tls(cli, image_opts(d), 'write -P 0x42 0 64k', 'read -P 0x42 0 64k')


# --- handshake-max-seconds (blockd only) ---

def test_handshake_timeout_idle():
    """handshake-max-seconds=2 on nbd-server-start: a socket that reads
    the greeting and says nothing is closed after about 2 s (not at
    once); so is one that stops after its client flags."""
    skip_if_reference('QSD 7.2 has no handshake-max-seconds')
    with start_tls_daemon(creds=None, server=False) as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'tls0',
                                 'dir': d.pki.server, 'endpoint': 'server'})
        serve_over_qmp(d, q, 'tls0', **{'handshake-max-seconds': 2})
        with d.raw() as c:
            _closed_between(c, 0.5, 8)
        with d.raw() as c:
            _closed_between(c, 0.5, 8)
        d.assert_alive()
        _real_clients_work(d)


def test_handshake_timeout_talking():
    """The limit is on the whole handshake: a client that keeps sending
    options (answered with ERR_TLS_REQD) but never finishes, and one that
    got its STARTTLS ACK and never starts the TLS handshake, are closed
    after handshake-max-seconds too."""
    skip_if_reference('QSD 7.2 has no handshake-max-seconds')
    with start_tls_daemon(server_opts='handshake-max-seconds=2') as d:
        with d.raw(timeout=2) as c:
            t0 = time.monotonic()
            closed = False
            while time.monotonic() - t0 < 10:
                try:
                    assert_eq(c.option_reply(OPT_LIST), REP_ERR_TLS_REQD, 'LIST before TLS')
                except Exception:  # noqa: BLE001 - the server hung up
                    closed = True
                    break
                time.sleep(0.3)
            assert_eq(closed, True, 'talking client closed within 10 s')
            took = time.monotonic() - t0
            assert_eq(1.0 < took < 8, True, 'closed after %.1fs, limit 2 s' % took)
        with d.raw() as c:
            assert_eq(c.option_reply(OPT_STARTTLS), REP_ACK, 'STARTTLS')
            _closed_between(c, 0.5, 8)
        _real_clients_work(d)


def test_handshake_timeout_default_10s():
    """Without handshake-max-seconds the limit is 10 s: a socket idle
    after the greeting, one idle after its client flags and one that got
    its STARTTLS ACK and never starts TLS are all still open after 6 s and
    closed by 16 s.  (Debian's QSD 7.2.22 has this 10 s limit too, from
    the CVE-2024-7409 fix, without the parameter.)"""
    with start_tls_daemon() as d:
        with d.raw(send_flags=False) as a, d.raw() as b, d.raw() as c:
            assert_eq(c.option_reply(OPT_STARTTLS), REP_ACK, 'STARTTLS')
            t0 = time.monotonic()
            for s in (a, b, c):
                assert_eq(s.closed_by_server(max(0.01, 6 - (time.monotonic() - t0))), False,
                          'a handshake closed within 6 s')
            for s in (a, b, c):
                assert_eq(s.closed_by_server(max(0.01, 16 - (time.monotonic() - t0))), True,
                          'a handshake still open after 16 s')
        _real_clients_work(d)


def test_handshake_timeout_zero_is_no_limit():
    """handshake-max-seconds=0: no limit (an idle socket is still open
    after 4 s)."""
    skip_if_reference('QSD 7.2 has no handshake-max-seconds')
    with start_tls_daemon(server_opts='handshake-max-seconds=0') as d:
        with d.raw() as c:
            assert_eq(c.closed_by_server(4), False, 'idle socket closed without a limit')
        _real_clients_work(d)


def test_established_client_not_timed_out():
    """A client that got through is never timed out: idle past the
    handshake limit (handshake-max-seconds=1 and 3 s; against QSD, its
    fixed 10 s and 11 s) it still reads and writes."""
    opts, idle = 'handshake-max-seconds=1', 3
    if is_reference():
        opts, idle = '', 11
    with start_tls_daemon(server_opts=opts) as d:
        with tls_connection(d, d.pki.client) as h:
            h.pwrite(b'\x31' * 4096, 0)
            time.sleep(idle)
            assert_eq(h.pread(4096, 0), b'\x31' * 4096, 'read after %d s idle' % idle)
            h.pwrite(b'\x32' * 4096, 4096)
        d.assert_alive()


def test_handshake_timeout_refuses_bad_values():
    """A negative handshake-max-seconds is refused by nbd-server-start
    (QMP's integer type for the value, or the daemon's range check)."""
    skip_if_reference('QSD 7.2 has no handshake-max-seconds')
    with start_tls_daemon(creds=None, server=False) as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'tls0',
                                 'dir': d.pki.server, 'endpoint': 'server'})
        for bad in (-1, 'ten'):
            err = q.error('nbd-server-start', {
                'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}},
                'tls-creds': 'tls0', 'handshake-max-seconds': bad})
            assert_eq(err['class'], 'GenericError', 'error class for %r' % bad)


# --- idle sockets ---

def _prompt_real_clients(d, within=8.0):
    """_real_clients_work, done within `within` seconds."""
    t0 = time.monotonic()
    _real_clients_work(d)
    took = time.monotonic() - t0
    assert_eq(took < within, True, 'real clients took %.1fs (limit %ss)' % (took, within))


def test_idle_sockets_do_not_starve():
    """200 TCP connections that never say a word, with room for them in
    max-connections (300): nbdinfo and qemu-io over TLS still connect and
    work at once, and a libnbd client connected before keeps working."""
    with start_tls_daemon(server_opts='max-connections=300') as d:
        with tls_connection(d, d.pki.client) as h:
            with idle_sockets(d.port, IDLE):
                _prompt_real_clients(d)
                assert_eq(h.pread(65536, 0), b'\x42' * 65536, 'held client reads')
            d.assert_alive()
        _real_clients_work(d)


def test_idle_sockets_default_limits():
    """The same with the server's defaults: handshakes do not count in
    max-connections, so 200 idle sockets do not hold a real client back.
    (QSD 7.2's default max-connections is 100 and counts them: the real
    client waits in the accept queue until its 10 s handshake limit has
    dropped idle sockets, about 20 s.)"""
    skip_if_reference('QSD 7.2 counts handshaking connections in max-connections')
    with start_tls_daemon() as d:
        with idle_sockets(d.port, IDLE):
            _prompt_real_clients(d)
        d.assert_alive()


def test_idle_sockets_beyond_max_connections():
    """max-connections=1 and 200 idle sockets in the handshake: handshakes
    count apart from max-connections, so a real client (nbdinfo, qemu-io
    over TLS) still gets in, again and again."""
    skip_if_reference('QSD 7.2 counts handshaking connections in max-connections')
    with start_tls_daemon(server_opts='max-connections=1') as d:
        with idle_sockets(d.port, IDLE):
            for _ in range(3):
                _prompt_real_clients(d)
        d.assert_alive()


def test_idle_sockets_time_out():
    """200 idle sockets with handshake-max-seconds=2 are all closed by the
    server within a few seconds, and the daemon serves on."""
    skip_if_reference('QSD 7.2 has no handshake-max-seconds')
    with start_tls_daemon(server_opts='handshake-max-seconds=2,max-connections=2') as d:
        with idle_sockets(d.port, IDLE) as socks:
            _real_clients_work(d)
            end = time.monotonic() + 15
            open_ = list(socks)
            while open_ and time.monotonic() < end:
                still = []
                for s in open_:
                    s.settimeout(0.01)
                    try:
                        if s.recv(4096):
                            still.append(s)  # the greeting; read on
                    except socket.timeout:
                        still.append(s)
                    except OSError:
                        pass  # reset: closed
                open_ = still
                time.sleep(0.1)
            assert_eq(len(open_), 0, 'idle sockets still open after 15 s')
        _real_clients_work(d)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
