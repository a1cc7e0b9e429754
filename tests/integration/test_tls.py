#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""NBD over TLS (issue 12): the data path with real clients (qemu-io,
nbdinfo, nbdcopy, libnbd) over X.509, PSK and anonymous credentials, on
TCP and on a unix socket; the refusals (plaintext clients, a client
certificate of another CA, a client that does not trust the server, no
client certificate while verify-peer is on, a revoked certificate, a wrong
PSK) each end one connection while the daemon and the other clients go on;
and the fixed-newstyle handshake in FORCEDTLS mode spoken by a raw client
(NBD_REP_ERR_TLS_REQD before STARTTLS, NBD_OPT_EXPORT_NAME closing the
connection, no export list before TLS, a second STARTTLS refused).
Certificates are made with certtool in each test (tls_env).  Every case
runs against qemu-storage-daemon 7.2 too."""

import os
import ssl
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, assert_in, main, run, tests_of, wait_for)  # noqa: E402
from raw_nbd import (OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT,  # noqa: E402
                     OPT_SET_META_CONTEXT, OPT_STARTTLS, OPT_STRUCTURED_REPLY, REP_ACK,
                     REP_ERR_INVALID, REP_ERR_TLS_REQD, REP_INFO, REP_SERVER, rep_name,
                     HandshakeClosed)
from tls_env import (BOB_KEY, PSK_USER, WRONG_KEY, image_opts, nbdinfo, nbdinfo_refused,  # noqa: E402
                     nbdinfo_size, psk_client_file, qemu_client_anon, qemu_client_psk,
                     qemu_client_x509, qemu_io_refused, qemu_io_tls, serve_over_qmp,
                     start_tls_daemon, tls_connection, MiB)

SIZE = 4 * MiB


def _works(d, creds_dir=None):
    """A real TLS client still gets in and reads: the daemon went on."""
    d.assert_alive()
    if d.port:
        assert_eq(nbdinfo_size(d.tcp_uri(creds_dir or d.pki.client)), SIZE, 'size over TLS')
    else:
        assert_eq(nbdinfo_size(d.unix_uri(creds_dir or d.pki.client)), SIZE, 'size over TLS')


def _new_log(d, before):
    return d.stderr()[before:]


# --- the data path ---

def test_x509_data_both_ways():
    """qemu-io writes patterns over TLS (X.509, TCP) and reads them back;
    nbdcopy copies the whole export out over nbds:// and the copy equals
    the image; nbdinfo reports TLS."""
    with start_tls_daemon() as d:
        cli = qemu_client_x509(d.pki.client)
        qemu_io_tls(cli, image_opts(d), 'write -P 0x5a 0 1M', 'write -P 0xa5 3M 64k')
        qemu_io_tls(cli, image_opts(d), 'read -P 0x5a 0 1M', 'read -P 0xa5 3M 64k',
                    'read -P 0 1M 1M', readonly=True)
        out = d.path('copy.raw')
        run(['nbdcopy', d.tcp_uri(d.pki.client), out])
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', out, d.image])
        p = nbdinfo(d.tcp_uri(d.pki.client))
        assert_in('with TLS', p.stdout, 'nbdinfo protocol line')
        assert_in('export-size: %d' % SIZE, p.stdout, 'nbdinfo')


def test_nbdcopy_in_over_tls():
    """nbdcopy writes a file into the export over TLS; the image then
    holds it byte for byte."""
    with start_tls_daemon() as d:
        src = d.path('src.raw')
        with open(src, 'wb') as f:
            for i in range(SIZE // 65536):
                f.write(bytes([i & 0xff]) * 65536)
        run(['nbdcopy', src, d.tcp_uri(d.pki.client)])
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', src, d.image])


def test_libnbd_x509():
    """libnbd with TLS required: writes and reads at several offsets."""
    with start_tls_daemon() as d:
        with tls_connection(d, d.pki.client) as h:
            assert_eq(h.get_size(), SIZE, 'size')
            h.pwrite(b'\x11' * 65536, 0)
            h.pwrite(b'\x22' * 4096, SIZE - 4096)
            assert_eq(h.pread(65536, 0), b'\x11' * 65536, 'read back')
            assert_eq(h.pread(4096, SIZE - 4096), b'\x22' * 4096, 'read back at the end')
            h.flush()


def test_x509_unix_socket():
    """TLS over the unix socket: nbds+unix:// with nbdinfo and nbdcopy,
    and qemu-io (tls-hostname=localhost: the certificate names it)."""
    with start_tls_daemon(unix=True) as d:
        cli = qemu_client_x509(d.pki.client)
        opts = image_opts(d, unix=True, hostname='localhost')
        qemu_io_tls(cli, opts, 'write -P 0x6b 512k 128k')
        qemu_io_tls(cli, opts, 'read -P 0x6b 512k 128k', readonly=True)
        assert_eq(nbdinfo_size(d.unix_uri(d.pki.client)), SIZE, 'nbds+unix size')
        out = d.path('copy.raw')
        run(['nbdcopy', d.unix_uri(d.pki.client), out])
        run(['cmp', out, d.image])
        nbdinfo_refused(d.unix_uri(tls=False))


def test_psk_data_both_ways():
    """PSK credentials (keys.psk of username:hexkey lines): qemu-io with
    tls-creds-psk writes and reads; nbdinfo and nbdcopy with tls-psk-file
    and the username in the URI; a second user of the file works too."""
    with start_tls_daemon(creds='psk') as d:
        cli = qemu_client_psk(d.psk_dir, PSK_USER)
        qemu_io_tls(cli, image_opts(d), 'write -P 0x3c 0 256k')
        qemu_io_tls(cli, image_opts(d), 'read -P 0x3c 0 256k', readonly=True)
        f = psk_client_file(d)
        assert_eq(nbdinfo_size(d.tcp_uri(psk_file=f, user=PSK_USER)), SIZE, 'PSK size')
        out = d.path('copy.raw')
        run(['nbdcopy', d.tcp_uri(psk_file=f, user=PSK_USER), out])
        run(['cmp', out, d.image])
        bob = psk_client_file(d, 'bob', BOB_KEY)
        assert_eq(nbdinfo_size(d.tcp_uri(psk_file=bob, user='bob')), SIZE, 'second PSK user')
        with tls_connection(d, psk_file=f, user=PSK_USER) as h:
            assert_eq(h.pread(4096, 0), b'\x3c' * 4096, 'libnbd PSK read')


def test_psk_unix_socket():
    with start_tls_daemon(creds='psk', unix=True) as d:
        f = psk_client_file(d)
        assert_eq(nbdinfo_size(d.unix_uri(psk_file=f, user=PSK_USER)), SIZE, 'PSK over unix')
        qemu_io_tls(qemu_client_psk(d.psk_dir, PSK_USER), image_opts(d, unix=True),
                    'write -P 0x17 0 64k', 'read -P 0x17 0 64k')


def test_anon_creds():
    """tls-creds-anon: an anonymous TLS client (qemu-io) gets in; an X.509
    client (libnbd has no anonymous mode) is refused."""
    with start_tls_daemon(creds='anon') as d:
        qemu_io_tls(qemu_client_anon(), image_opts(d), 'write -P 0x44 0 64k', 'read -P 0x44 0 64k')
        nbdinfo_refused(d.tcp_uri(d.pki.client))
        nbdinfo_refused(d.tcp_uri(tls=False))
        qemu_io_tls(qemu_client_anon(), image_opts(d), 'read -P 0x44 0 64k', readonly=True)


def test_encrypted_key_with_passwordid():
    """A server key encrypted with a password, the password in a secret
    object named by passwordid (data raw, base64, or in a file)."""
    with start_tls_daemon(creds=None, server=False) as d:
        enc = d.path('enc')
        os.makedirs(enc)
        for f in ('ca-cert.pem', 'server-cert.pem'):
            run(['cp', os.path.join(d.pki.server, f), enc])
        run(['certtool', '--load-privkey', os.path.join(d.pki.server, 'server-key.pem'),
             '--to-p8', '--password=hunter2', '--outfile', os.path.join(enc, 'server-key.pem')])
        with open(d.path('pw.txt'), 'w') as f:
            f.write('hunter2')
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'secret', 'id': 'pw', 'data': 'hunter2'})
        q.execute('object-add', {'qom-type': 'secret', 'id': 'pw64', 'data': 'aHVudGVyMg==',
                                 'format': 'base64'})
        q.execute('object-add', {'qom-type': 'secret', 'id': 'pwfile', 'file': d.path('pw.txt')})
        q.execute('object-add', {'qom-type': 'secret', 'id': 'bad', 'data': 'wrong'})
        text = ("Cannot load certificate '%s/server-cert.pem' & key '%s/server-key.pem': "
                "Decryption has failed." % (enc, enc))
        for extra in ({}, {'passwordid': 'bad'}):
            err = q.error('object-add', dict({'qom-type': 'tls-creds-x509', 'id': 'x',
                                              'dir': enc, 'endpoint': 'server'}, **extra))
            assert_eq(err['desc'], text, 'encrypted key, passwordid %r' % extra)
        for i, pw in enumerate(('pw', 'pw64', 'pwfile')):
            q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'enc%d' % i,
                                     'dir': enc, 'endpoint': 'server', 'passwordid': pw})
            serve_over_qmp(d, q, 'enc%d' % i)
            assert_eq(nbdinfo_size(d.tcp_uri(d.pki.client)), SIZE, 'size, key unlocked by ' + pw)


def test_dh_params_and_priority():
    """dh-params.pem in the directory is loaded (the server works); a
    priority string restricting the versions (TLS 1.2 only) works."""
    with start_tls_daemon(creds=None, server=False) as d:
        srv = d.path('dh')
        os.makedirs(srv)
        for f in ('ca-cert.pem', 'server-cert.pem', 'server-key.pem'):
            run(['cp', os.path.join(d.pki.server, f), srv])
        run(['certtool', '--get-dh-params', '--outfile', os.path.join(srv, 'dh-params.pem')])
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'dh', 'dir': srv,
                                 'endpoint': 'server'})
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'v12',
                                 'dir': d.pki.server, 'endpoint': 'server',
                                 'priority': 'NORMAL:-VERS-ALL:+VERS-TLS1.2'})
        for creds in ('dh', 'v12'):
            serve_over_qmp(d, q, creds)
            assert_eq(nbdinfo_size(d.tcp_uri(d.pki.client)), SIZE, 'size with ' + creds)


def test_bad_priority_fails_the_handshake_only():
    """priority=BOGUS: QEMU takes it at object-add and each handshake then
    fails (QEMU logs 'Cannot set default TLS session priority BOGUS: The
    request is invalid.'); a daemon that checks it at object-add is fine too.  Either
    way the daemon lives on."""
    with start_tls_daemon(creds=None, server=False) as d:
        q = d.qmp()
        r = q.cmd('object-add', {'qom-type': 'tls-creds-x509', 'id': 'bogus',
                                 'dir': d.pki.server, 'endpoint': 'server', 'priority': 'BOGUS'})
        if 'error' in r:
            assert_in('BOGUS', r['error']['desc'], 'priority error')
            return
        serve_over_qmp(d, q, 'bogus')
        nbdinfo_refused(d.tcp_uri(d.pki.client))
        # QEMU logs 'Cannot set default TLS session priority BOGUS: The
        # request is invalid.'; the log's wording around gnutls's is free.
        wait_for(lambda: 'priority BOGUS: The request is invalid.' in d.stderr(),
                 what='the priority error in the log')
        d.assert_alive()


# --- refusals: each ends one connection ---

def test_plaintext_clients_refused():
    """Without TLS: nbdinfo nbd:// is refused at NBD_OPT_GO
    (NBD_REP_ERR_TLS_REQD), qemu-io without tls-creds too, with QEMU's
    text relayed ('Option 0x7 not permitted before TLS'); a TLS client
    connected all along keeps working, and new ones get in."""
    with start_tls_daemon() as d:
        with tls_connection(d, d.pki.client) as h:
            h.pwrite(b'\x55' * 4096, 0)
            nbdinfo_refused(d.tcp_uri(tls=False))
            err = qemu_io_refused([], image_opts(d, creds_id=None))
            assert_in('TLS negotiation required before option 7 (go)', err, 'qemu-io error')
            assert_in('server reported: Option 0x7 not permitted before TLS', err, 'server text')
            p = nbdinfo(d.tcp_uri(tls=False).replace('/disk', '/'), '--list', check=False)
            assert_eq(p.returncode != 0, True, 'nbdinfo --list without TLS fails')
            assert_eq('disk' in p.stdout, False, 'export listed without TLS')
            assert_eq(h.pread(4096, 0), b'\x55' * 4096, 'established client still served')
        _works(d)


def test_client_cert_of_another_ca_refused():
    """A client certificate the server's CA did not sign (the rogue CA's),
    from nbdinfo and from qemu-io (sanity-check=off to send it anyway): the
    connection is refused; the daemon goes on."""
    with start_tls_daemon() as d:
        nbdinfo_refused(d.tcp_uri(d.pki.rogue_client))
        qemu_io_refused(qemu_client_x509(d.pki.rogue_client, sanity_check='off'), image_opts(d))
        _works(d)


def test_client_not_trusting_server_ca():
    """A client whose ca-cert.pem is another CA refuses the server's
    certificate (the client's check; the server logs a failed handshake
    and goes on)."""
    with start_tls_daemon() as d:
        err = nbdinfo_refused(d.tcp_uri(d.pki.rogue_trust))
        assert_in('certificate verification', err, 'nbdinfo error')
        _works(d)


def test_no_client_cert_with_verify_peer():
    """verify-peer defaults to on: a client with only ca-cert.pem (no
    client certificate) is refused, and QEMU logs 'Verify failed: No
    certificate was found.'; with verify-peer=off the same client gets in."""
    with start_tls_daemon() as d:
        only_ca = d.path('only-ca')
        os.makedirs(only_ca)
        run(['cp', os.path.join(d.pki.client, 'ca-cert.pem'), only_ca])
        n = len(d.stderr())
        nbdinfo_refused(d.tcp_uri(only_ca))
        wait_for(lambda: 'No certificate was found' in _new_log(d, n),
                 what="'No certificate was found' in the daemon's log")
        _works(d)
    with start_tls_daemon(creds_opts=',verify-peer=off') as d:
        only_ca = d.path('only-ca')
        os.makedirs(only_ca)
        run(['cp', os.path.join(d.pki.client, 'ca-cert.pem'), only_ca])
        assert_eq(nbdinfo_size(d.tcp_uri(only_ca)), SIZE, 'size, verify-peer=off')
        assert_eq(nbdinfo_size(d.tcp_uri(d.pki.rogue_client)), SIZE,
                  'size, verify-peer=off, rogue client cert not checked')


def test_revoked_cert_refused():
    """ca-crl.pem in the server's directory revoking client2: client2 is
    refused ('The certificate has been revoked'), client1 gets in."""
    with start_tls_daemon(creds=None, server=False) as d:
        srv = d.path('crl')
        os.makedirs(srv)
        for f in ('ca-cert.pem', 'server-cert.pem', 'server-key.pem'):
            run(['cp', os.path.join(d.pki.server, f), srv])
        tpl = d.path('crl.tpl')
        with open(tpl, 'w') as f:
            f.write('crl_next_update = 3650\ncrl_number = 1\n')
        run(['certtool', '--generate-crl', '--template', tpl,
             '--load-ca-privkey', os.path.join(d.pki.ca, 'ca-key.pem'),
             '--load-ca-certificate', os.path.join(d.pki.ca, 'ca-cert.pem'),
             '--load-certificate', os.path.join(d.pki.client2, 'client-cert.pem'),
             '--outfile', os.path.join(srv, 'ca-crl.pem')])
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'crl', 'dir': srv,
                                 'endpoint': 'server'})
        serve_over_qmp(d, q, 'crl')
        n = len(d.stderr())
        nbdinfo_refused(d.tcp_uri(d.pki.client2))
        wait_for(lambda: 'The certificate has been revoked' in _new_log(d, n),
                 what='the revocation in the log')
        _works(d)


def test_wrong_psk_refused():
    """A wrong key for a known user, and a user the file does not know,
    are refused (nbdinfo and qemu-io); the right key still gets in; an
    X.509 client of a PSK server is refused."""
    with start_tls_daemon(creds='psk') as d:
        bad = psk_client_file(d, PSK_USER, WRONG_KEY)
        nbdinfo_refused(d.tcp_uri(psk_file=bad, user=PSK_USER))
        carol = psk_client_file(d, 'carol', WRONG_KEY)
        nbdinfo_refused(d.tcp_uri(psk_file=carol, user='carol'))
        qemu_io_refused(qemu_client_psk(os.path.dirname(bad), PSK_USER), image_opts(d))
        nbdinfo_refused(d.tcp_uri(d.pki.client))
        nbdinfo_refused(d.tcp_uri(tls=False))
        good = psk_client_file(d)
        assert_eq(nbdinfo_size(d.tcp_uri(psk_file=good, user=PSK_USER)), SIZE, 'right key')
    with start_tls_daemon() as d:
        qemu_io_refused(qemu_client_psk(d.psk_dir, PSK_USER), image_opts(d))
        _works(d)


def test_failed_handshakes_leave_others_running():
    """While one TLS client holds its connection: garbage instead of a TLS
    ClientHello, a TLS handshake cut in the middle, and a refused client;
    the held connection still reads and writes, and a new client gets in."""
    with start_tls_daemon() as d:
        with tls_connection(d, d.pki.client) as h:
            h.pwrite(b'\x77' * 8192, 8192)
            with d.raw() as c:
                assert_eq(c.option_reply(OPT_STARTTLS), REP_ACK, 'STARTTLS')
                c.sock.sendall(b'this is no TLS record\r\n' * 10)
                assert_eq(c.closed_by_server(), True, 'garbage handshake closed')
            with d.raw() as c:
                assert_eq(c.option_reply(OPT_STARTTLS), REP_ACK, 'STARTTLS')
                # The start of a TLS record header, then nothing more.
                c.sock.sendall(b'\x16\x03\x01\x00')
            nbdinfo_refused(d.tcp_uri(d.pki.rogue_client))
            assert_eq(h.pread(8192, 8192), b'\x77' * 8192, 'held client reads')
            h.pwrite(b'\x78' * 4096, 0)
            _works(d)
        d.assert_alive()


# --- the handshake, FORCEDTLS mode ---

def test_options_before_starttls_get_tls_reqd():
    """Before STARTTLS every option (LIST, INFO, GO, STRUCTURED_REPLY,
    LIST/SET_META_CONTEXT, an unknown one) gets NBD_REP_ERR_TLS_REQD, with
    no export shown, and the client may go on; then STARTTLS, the TLS
    handshake, LIST shows the export, GO enters transmission."""
    with start_tls_daemon() as d:
        with d.raw() as c:
            info = c.info_data('disk')
            for opt, data in ((OPT_LIST, b''), (OPT_INFO, info), (OPT_GO, info),
                              (OPT_STRUCTURED_REPLY, b''), (OPT_LIST_META_CONTEXT, info),
                              (OPT_SET_META_CONTEXT, info), (99, b'')):
                replies = c.option(opt, data)
                assert_eq([rep_name(t) for t, _ in replies], ['ERR_TLS_REQD'],
                          'replies to option %d before TLS' % opt)
                assert_eq(replies[0][1].decode(),
                          'Option 0x%x not permitted before TLS' % opt, 'QEMU text')
            assert_eq(rep_name(c.starttls(d.pki.client)), 'ACK', 'STARTTLS')
            replies = c.option(OPT_LIST)
            assert_eq([rep_name(t) for t, _ in replies], ['SERVER', 'ACK'], 'LIST over TLS')
            (length,) = struct.unpack('>I', replies[0][1][:4])
            assert_eq(replies[0][1][4:4 + length], b'disk', 'listed export')
            replies = c.option(OPT_GO, info)
            assert_eq(replies[-1][0], REP_ACK, 'GO over TLS')
            assert_eq(REP_INFO in [t for t, _ in replies], True, 'GO sent NBD_REP_INFO')
        _works(d)


def test_list_hidden_before_tls():
    """NBD_OPT_LIST before TLS shows nothing: ERR_TLS_REQD, no
    NBD_REP_SERVER; nor does NBD_OPT_INFO of the export."""
    with start_tls_daemon() as d:
        with d.raw() as c:
            replies = c.option(OPT_LIST)
            assert_eq(REP_SERVER in [t for t, _ in replies], False, 'export listed before TLS')
            assert_eq(replies[-1][0], REP_ERR_TLS_REQD, 'LIST reply')
            assert_eq(b'disk' in b''.join(x for _, x in replies), False, 'name leaked')
            replies = c.option(OPT_INFO, c.info_data('disk'))
            assert_eq([t for t, _ in replies], [REP_ERR_TLS_REQD], 'INFO before TLS')


def test_export_name_before_tls_closes():
    """NBD_OPT_EXPORT_NAME cannot be answered with an error: before TLS the
    server closes the connection without sending anything."""
    with start_tls_daemon() as d:
        with d.raw() as c:
            c.send_option(OPT_EXPORT_NAME, b'disk')
            try:
                data = c.sock.recv(4096)
            except (ConnectionResetError, OSError):
                data = b''
            assert_eq(data, b'', 'bytes sent after EXPORT_NAME before TLS')
            assert_eq(c.closed_by_server(), True, 'connection closed')
        _works(d)


def test_abort_before_tls():
    """NBD_OPT_ABORT before TLS ends the connection (QEMU answers it with
    ERR_TLS_REQD first; an ACK would do too); the daemon goes on."""
    with start_tls_daemon() as d:
        with d.raw() as c:
            c.send_option(OPT_ABORT)
            try:
                rtype, _ = c.read_reply(OPT_ABORT)
                assert_in(rep_name(rtype), ('ACK', 'ERR_TLS_REQD'), 'reply to ABORT')
            except HandshakeClosed:
                pass
            assert_eq(c.closed_by_server(), True, 'closed after ABORT')
        _works(d)


def test_second_starttls_refused():
    """STARTTLS once TLS is on gets NBD_REP_ERR_INVALID and the session goes
    on over TLS; STARTTLS with a payload gets ERR_INVALID too."""
    with start_tls_daemon() as d:
        with d.raw() as c:
            assert_eq(rep_name(c.starttls(d.pki.client)), 'ACK', 'first STARTTLS')
            replies = c.option(OPT_STARTTLS)
            assert_eq([t for t, _ in replies], [REP_ERR_INVALID], 'second STARTTLS')
            assert_eq(isinstance(c.sock, ssl.SSLSocket), True, 'still TLS')
            assert_eq(c.option(OPT_LIST)[-1][0], REP_ACK, 'LIST after the second STARTTLS')
        with d.raw() as c:
            assert_eq(c.option(OPT_STARTTLS, b'xx')[-1][0], REP_ERR_INVALID,
                      'STARTTLS with data')
        _works(d)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
