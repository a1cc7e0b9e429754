#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The objects behind NBD over TLS (issue 12): tls-creds-x509,
tls-creds-psk, tls-creds-anon, secret, authz-simple and authz-list made with
object-add and --object, with QEMU's error texts for every bad property
(files missing from dir, garbage files, an encrypted key without its
password, bad enums and types); nbd-server-start and --nbd-server refusing
an unknown tls-creds id, credentials of the client endpoint and objects
that are not credentials; and object-del of credentials a running server
uses (refused by blockd; QSD 7.2 allows it).  The texts are those of
qemu-storage-daemon 7.2, and every case but that last runs against it."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, run, skip_if_reference,  # noqa: E402
                         start_daemon, tests_of)
from tls_env import (PSK_KEY, PSK_USER, free_port, make_pki, make_psk, nbdinfo_refused,  # noqa: E402
                     nbdinfo_size, serve_over_qmp, start_tls_daemon, MiB)

ENOENT = 'No such file or directory'


def _copy_files(src, dst, names):
    os.makedirs(dst, exist_ok=True)
    for n in names:
        with open(os.path.join(src, n), 'rb') as f, open(os.path.join(dst, n), 'wb') as g:
            g.write(f.read())
    return dst


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def _add_error(q, props):
    """object-add that must fail; its desc (class GenericError)."""
    err = q.error('object-add', props)
    assert_eq(err['class'], 'GenericError', 'error class of %r' % props)
    return err['desc']


def _x509(id, dir, endpoint='server', **extra):
    p = {'qom-type': 'tls-creds-x509', 'id': id, 'dir': dir, 'endpoint': endpoint}
    p.update({k.replace('_', '-'): v for k, v in extra.items()})
    return p


def _daemon_with_pki():
    d = start_daemon()
    try:
        d.pki = make_pki(d.path('pki'))
    except BaseException:
        d.cleanup()
        raise
    return d


def test_x509_missing_files():
    """Each file the endpoint needs, missing: 'Unable to access credentials
    FILE: No such file or directory', ca-cert.pem first; a client
    directory has no server-cert.pem; a client needs only ca-cert.pem."""
    with _daemon_with_pki() as d:
        q = d.qmp()
        srv = d.pki.server
        empty = d.path('empty')
        os.makedirs(empty)
        no_key = _copy_files(srv, d.path('nokey'), ['ca-cert.pem', 'server-cert.pem'])
        no_cert = _copy_files(srv, d.path('nocert'), ['ca-cert.pem', 'server-key.pem'])
        for dir, endpoint, missing in (
                ('/nonexistent', 'server', '/nonexistent/ca-cert.pem'),
                (empty, 'server', empty + '/ca-cert.pem'),
                (empty, 'client', empty + '/ca-cert.pem'),
                (no_key, 'server', no_key + '/server-key.pem'),
                (no_cert, 'server', no_cert + '/server-cert.pem'),
                (d.pki.client, 'server', d.pki.client + '/server-cert.pem')):
            assert_eq(_add_error(q, _x509('x', dir, endpoint)),
                      'Unable to access credentials %s: %s' % (missing, ENOENT),
                      '%s endpoint, dir %s' % (endpoint, dir))
        # Client certificate and key are optional for a client.
        q.execute('object-add', _x509('c1', d.pki.client, 'client'))
        q.execute('object-add', _x509('c2', _copy_files(srv, d.path('caonly'), ['ca-cert.pem']),
                                      'client'))
        q.execute('object-add', _x509('s1', srv))


def test_x509_bad_files():
    """Garbage certificate, garbage key, key that is a directory, garbage
    CRL and DH parameters: gnutls's reason in QEMU's sentence."""
    with _daemon_with_pki() as d:
        q = d.qmp()
        srv = d.pki.server
        three = ['ca-cert.pem', 'server-cert.pem', 'server-key.pem']
        garbage = d.path('garbage')
        for n in three:
            _write(os.path.join(garbage, n), 'garbage\n')
        assert_eq(_add_error(q, _x509('x', garbage)),
                  'Unable to import server certificate %s/server-cert.pem: '
                  'Base64 unexpected header error.' % garbage, 'garbage files')
        badkey = _copy_files(srv, d.path('badkey'), three[:2])
        _write(os.path.join(badkey, 'server-key.pem'), 'garbage\n')
        assert_eq(_add_error(q, _x509('x', badkey)),
                  "Cannot load certificate '%s/server-cert.pem' & key '%s/server-key.pem': "
                  "The requested data were not available." % (badkey, badkey), 'garbage key')
        dirkey = _copy_files(srv, d.path('dirkey'), three[:2])
        os.makedirs(os.path.join(dirkey, 'server-key.pem'))
        assert_eq(_add_error(q, _x509('x', dirkey)),
                  "Cannot load certificate '%s/server-cert.pem' & key '%s/server-key.pem': "
                  "Error while reading file." % (dirkey, dirkey), 'key is a directory')
        badcrl = _copy_files(srv, d.path('badcrl'), three)
        _write(os.path.join(badcrl, 'ca-crl.pem'), 'junk\n')
        assert_eq(_add_error(q, _x509('x', badcrl)),
                  "Cannot load CRL '%s/ca-crl.pem': Base64 decoding error." % badcrl, 'bad CRL')
        baddh = _copy_files(srv, d.path('baddh'), three)
        _write(os.path.join(baddh, 'dh-params.pem'), 'junk\n')
        assert_eq(_add_error(q, _x509('x', baddh)),
                  'Unable to load DH parameters from %s/dh-params.pem: '
                  'Base64 unexpected header error.' % baddh, 'bad DH parameters')
        # None of the failures left an object behind: the id is free.
        q.execute('object-add', _x509('x', srv))


def test_x509_bad_properties():
    with _daemon_with_pki() as d:
        q = d.qmp()
        srv = d.pki.server
        for props, text in (
                (_x509('x', srv, 'bogus'), "Parameter 'endpoint' does not accept value 'bogus'"),
                ({'qom-type': 'tls-creds-x509', 'id': 'x', 'endpoint': 'server'},
                 "Missing 'dir' property value"),
                (_x509('x', srv, verify_peer='yes'),
                 "Invalid parameter type for 'verify-peer', expected: boolean"),
                (_x509('x', srv, passwordid='nosuch'), "No secret with id 'nosuch'"),
                (_x509('x', srv, bogus=1), "Parameter 'bogus' is unexpected"),
                (_x509('bad id!', srv), "Parameter 'id' expects an identifier"),
                ({'qom-type': 'tls-creds', 'id': 'x'},
                 "Parameter 'qom-type' does not accept value 'tls-creds'")):
            assert_eq(_add_error(q, props), text, 'object-add %r' % props)
        q.execute('object-add', _x509('x', srv))
        assert_eq(_add_error(q, _x509('x', srv)),
                  "attempt to add duplicate property 'x' to object (type 'container')",
                  'duplicate id')
        q.execute('object-add', _x509('v', srv, verify_peer=False, priority='NORMAL'))


def _only_ca(d):
    """A client directory with the CA certificate and no certificate of
    its own."""
    only_ca = d.path('only-ca')
    if not os.path.isdir(only_ca):
        os.makedirs(only_ca)
        run(['cp', os.path.join(d.pki.client, 'ca-cert.pem'), only_ca])
    return only_ca


def test_x509_properties_take_effect():
    """Properties given over QMP object-add act: verify-peer on by default
    (a client without a certificate is refused), verify-peer false lets it
    in, and a priority that allows only TLS 1.2 still serves clients.
    (Reading them back with qom-get belongs to the QOM commands.)"""
    with start_tls_daemon(creds=None, server=False) as d:
        q = d.qmp()
        q.execute('object-add', _x509('x', d.pki.server))
        q.execute('object-add', _x509('y', d.pki.server, verify_peer=False,
                                      priority='NORMAL:-VERS-TLS1.3'))
        serve_over_qmp(d, q, 'x')
        nbdinfo_refused(d.tcp_uri(_only_ca(d)))
        assert_eq(nbdinfo_size(d.tcp_uri(d.pki.client)), 4 * MiB, 'x: client1')
        serve_over_qmp(d, q, 'y')
        assert_eq(nbdinfo_size(d.tcp_uri(_only_ca(d))), 4 * MiB,
                  'y: no client certificate, verify-peer false')


def test_psk_object_errors():
    with start_daemon() as d:
        q = d.qmp()
        psk = d.path('psk')
        make_psk(psk, [(PSK_USER, PSK_KEY)])
        empty = d.path('empty')
        os.makedirs(empty)

        def props(id, dir, endpoint, **extra):
            p = {'qom-type': 'tls-creds-psk', 'id': id, 'dir': dir, 'endpoint': endpoint}
            p.update(extra)
            return p
        for p, text in (
                (props('p', empty, 'server'),
                 'Unable to access credentials %s/keys.psk: %s' % (empty, ENOENT)),
                (props('p', '/nonexistent', 'server'),
                 'Unable to access credentials /nonexistent/keys.psk: %s' % ENOENT),
                (props('p', empty, 'client', username=PSK_USER),
                 'Unable to access credentials %s/keys.psk: %s' % (empty, ENOENT)),
                (props('p', psk, 'client'),
                 'Username qemu not found in PSK file %s/keys.psk' % psk),
                (props('p', psk, 'client', username='bob'),
                 'Username bob not found in PSK file %s/keys.psk' % psk),
                ({'qom-type': 'tls-creds-psk', 'id': 'p', 'endpoint': 'server'},
                 "Missing 'dir' property value")):
            assert_eq(_add_error(q, p), text, 'object-add %r' % p)
        q.execute('object-add', props('p', psk, 'server'))
        q.execute('object-add', props('c', psk, 'client', username=PSK_USER))


def test_anon_object():
    with start_daemon() as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-anon', 'id': 'a1', 'endpoint': 'server'})
        q.execute('object-add', {'qom-type': 'tls-creds-anon', 'id': 'a2', 'endpoint': 'client'})
        assert_eq(_add_error(q, {'qom-type': 'tls-creds-anon', 'id': 'a3', 'endpoint': 'x'}),
                  "Parameter 'endpoint' does not accept value 'x'", 'bad endpoint')


def test_secret_object_errors():
    with start_daemon() as d:
        q = d.qmp()
        f = _write(d.path('pw.txt'), 'hunter2')
        for p, text in (
                ({'qom-type': 'secret', 'id': 's'}, "Either 'file' or 'data' must be provided"),
                ({'qom-type': 'secret', 'id': 's', 'data': 'x', 'file': f},
                 "'file' and 'data' are mutually exclusive"),
                ({'qom-type': 'secret', 'id': 's', 'file': '/nonexistent'},
                 'Unable to read /nonexistent: Failed to open file \u201c/nonexistent\u201d: '
                 'No such file or directory'),
                ({'qom-type': 'secret', 'id': 's', 'data': '!!!', 'format': 'base64'},
                 'Base64 data contains invalid characters'),
                ({'qom-type': 'secret', 'id': 's', 'data': 'x', 'format': 'hex'},
                 "Parameter 'format' does not accept value 'hex'")):
            assert_eq(_add_error(q, p), text, 'object-add %r' % p)
        q.execute('object-add', {'qom-type': 'secret', 'id': 's1', 'data': 'hunter2'})
        q.execute('object-add', {'qom-type': 'secret', 'id': 's2', 'file': f})
        q.execute('object-add', {'qom-type': 'secret', 'id': 's3', 'data': 'aHVudGVyMg==',
                                 'format': 'base64'})
        q.execute('object-add', {'qom-type': 'secret', 'id': 's4', 'data': 'x', 'format': 'raw'})


def test_authz_object_errors():
    with start_daemon() as d:
        q = d.qmp()
        for p, text in (
                ({'qom-type': 'authz-simple', 'id': 'z'}, "Parameter 'identity' is missing"),
                ({'qom-type': 'authz-list', 'id': 'z', 'policy': 'maybe'},
                 "Parameter 'policy' does not accept value 'maybe'"),
                ({'qom-type': 'authz-list', 'id': 'z', 'rules': [{'match': 'x'}]},
                 "Parameter 'rules[0].policy' is missing"),
                ({'qom-type': 'authz-list', 'id': 'z', 'rules': [{'policy': 'allow'}]},
                 "Parameter 'rules[0].match' is missing"),
                ({'qom-type': 'authz-list', 'id': 'z',
                  'rules': [{'match': 'x', 'policy': 'allow', 'format': 'regex'}]},
                 "Parameter 'format' does not accept value 'regex'"),
                ({'qom-type': 'authz-listfile', 'id': 'z'}, "Parameter 'filename' is missing")):
            assert_eq(_add_error(q, p), text, 'object-add %r' % p)
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'z1',
                                 'identity': 'O=blockd test,CN=client1'})
        q.execute('object-add', {'qom-type': 'authz-list', 'id': 'z2'})
        q.execute('object-add', {'qom-type': 'authz-list', 'id': 'z3', 'policy': 'deny',
                                 'rules': [{'match': '*CN=client1*', 'policy': 'allow',
                                            'format': 'glob'},
                                           {'match': 'alice', 'policy': 'allow',
                                            'format': 'exact'}]})


def test_nbd_server_start_tls_errors():
    """nbd-server-start: an unknown tls-creds id, credentials of the client
    endpoint, and a tls-creds naming an object of another kind."""
    with _daemon_with_pki() as d:
        q = d.qmp()
        q.execute('object-add', _x509('cli', d.pki.client, 'client'))
        q.execute('object-add', {'qom-type': 'tls-creds-psk', 'id': 'pskc', 'endpoint': 'client',
                                 'dir': os.path.dirname(make_psk(d.path('psk'),
                                                                 [(PSK_USER, PSK_KEY)])),
                                 'username': PSK_USER})
        q.execute('object-add', {'qom-type': 'secret', 'id': 'sec', 'data': 'x'})
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'az', 'identity': 'x'})
        for addr in ({'type': 'inet', 'data': {'host': '127.0.0.1', 'port': str(free_port())}},
                     {'type': 'unix', 'data': {'path': d.nbd_sock}}):
            for creds, text in (('nosuch', "No TLS credentials with id 'nosuch'"),
                                ('cli', 'Expected TLS credentials for a server endpoint'),
                                ('pskc', 'Expected TLS credentials for a server endpoint'),
                                ('sec', "Object with id 'sec' is not TLS credentials"),
                                ('az', "Object with id 'az' is not TLS credentials")):
                err = q.error('nbd-server-start', {'addr': addr, 'tls-creds': creds})
                assert_eq(err['desc'], text, 'nbd-server-start tls-creds=%s' % creds)
        # Nothing was left running by the failures.
        q.execute('object-add', _x509('srv', d.pki.server))
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}},
                                       'tls-creds': 'srv'})
        assert_eq(q.error('nbd-server-start', {'addr': {'type': 'unix', 'data': {
            'path': d.path('other.sock')}}, 'tls-creds': 'srv'})['desc'],
            'NBD server already running', 'second start')


def _cmdline_error(args):
    """The daemon started with `args` must exit 1 at once; its stderr."""
    d = Daemon(args, qmp=False)
    try:
        d.start()
        rc = d.wait_exit(15)
        assert_eq(rc, 1, 'exit status of %r' % args)
        return d.stderr()
    finally:
        d.cleanup()


def test_cmdline_errors():
    """The same texts on the command line, after 'PROG: --OPTION VALUE: '."""
    with tempfile.TemporaryDirectory(prefix='blockd-test-') as tmp:
        pki = make_pki(os.path.join(tmp, 'pki'), rogue=False)
        pki_dir = pki.server
        port = free_port()
        for args, text in (
                (['--object', 'tls-creds-x509,id=s,dir=/nonexistent,endpoint=server'],
                 '--object tls-creds-x509,id=s,dir=/nonexistent,endpoint=server: '
                 'Unable to access credentials /nonexistent/ca-cert.pem: No such file or directory'),
                (['--object', 'tls-creds-x509,id=s,dir=%s,endpoint=server,verify-peer=maybe'
                  % pki_dir],
                 "Parameter 'verify-peer' expects 'on' or 'off'"),
                (['--object', 'secret,id=s'], "--object secret,id=s: Either 'file' or 'data' "
                 'must be provided'),
                (['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d,'
                  'tls-creds=nosuch' % port],
                 "--nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=%d,tls-creds=nosuch: "
                 "No TLS credentials with id 'nosuch'" % port),
                (['--object', 'tls-creds-x509,id=c,dir=%s,endpoint=client' % pki.client,
                  '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d,tls-creds=c'
                  % port], 'tls-creds=c: Expected TLS credentials for a server endpoint'),
                # Options are taken in order: the object must come first.
                (['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d,tls-creds=s'
                  % port, '--object', 'tls-creds-x509,id=s,dir=%s,endpoint=server' % pki_dir],
                 "tls-creds=s: No TLS credentials with id 's'")):
            err = _cmdline_error(args)
            assert_in(text, err, 'stderr of %r' % args)
    # verify-peer takes yes/no as well as on/off, as QEMU's keyval: with
    # verify-peer=no a client without a certificate gets in.
    with start_tls_daemon(creds_opts=',verify-peer=no') as d:
        assert_eq(nbdinfo_size(d.tcp_uri(_only_ca(d))), 4 * MiB, 'verify-peer=no')


def test_object_add_then_server_over_qmp():
    """Credentials and server both made over QMP serve a TLS client."""
    with start_tls_daemon(creds=None, server=False) as d:
        q = d.qmp()
        q.execute('object-add', _x509('srv', d.pki.server))
        serve_over_qmp(d, q, 'srv')
        assert_eq(nbdinfo_size(d.tcp_uri(d.pki.client)), 4 * MiB, 'size')


def test_object_del_creds_in_use_refused():
    """object-del of the credentials (or authz) a running NBD server uses
    is refused and TLS clients are still served; once the server has
    stopped, the same object-del works.  qemu-storage-daemon 7.2 lets the
    deletion through (the server keeps its own reference)."""
    skip_if_reference('QSD 7.2 lets object-del remove credentials in use')
    with start_tls_daemon(server_opts='tls-authz=az0',
                          objects=['authz-simple,id=az0,identity=O=blockd test,,CN=client1']) as d:
        q = d.qmp()
        for id in ('tls0', 'az0'):
            err = q.error('object-del', {'id': id})
            assert_eq(err['class'], 'GenericError', 'error class')
            assert_in(id, err['desc'], 'error names the object')
        assert_eq(nbdinfo_size(d.tcp_uri(d.pki.client)), 4 * MiB, 'still served')
        q.execute('nbd-server-stop')
        q.execute('object-del', {'id': 'tls0'})
        q.execute('object-del', {'id': 'az0'})
        assert_eq(q.error('object-del', {'id': 'tls0'})['desc'], "object 'tls0' not found",
                  'deleted twice')


def test_object_del_unused():
    """Objects no server uses can be deleted (and the id reused)."""
    with _daemon_with_pki() as d:
        q = d.qmp()
        q.execute('object-add', _x509('x', d.pki.server))
        q.execute('object-add', {'qom-type': 'secret', 'id': 's', 'data': 'x'})
        q.execute('object-del', {'id': 'x'})
        q.execute('object-del', {'id': 's'})
        q.execute('object-add', _x509('x', d.pki.server))
        assert_eq(q.error('object-del', {'id': 'nosuch'})['desc'], "object 'nosuch' not found",
                  'unknown id')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
