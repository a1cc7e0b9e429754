#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The metrics endpoint over HTTPS (issue 21): tls-creds names a
tls-creds-x509 server object; with verify-peer a client certificate of
its CA is required.

Apart from test_metrics.py because the TLS handshakes run on GLib's
thread pool inside GIO's TLS module (glib-networking), whose hand-offs
go through uninstrumented libglib locks: ThreadSanitizer reports them
from those libraries alone, so this file is not in the TSan list."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, skip_if_reference,  # noqa: E402
                         tests_of, wait_for)
from test_metrics import get, promtool_check, start  # noqa: E402


def test_https_and_client_certificates():
    """tls-creds: HTTPS with the x509 object's server certificate; with
    verify-peer a client certificate of its CA is required; the object is
    in use while the endpoint runs; wrong credentials are refused."""
    import ssl
    skip_if_reference('qemu-storage-daemon has no metrics endpoint')
    from tls_env import free_port, make_pki, psk_object, make_psk, x509_object
    with start(metrics=False) as d:
        pki = make_pki(d.path('pki'))
        q = d.qmp()
        for spec in (x509_object('tls0', pki.server, verify_peer='off'),
                     x509_object('tlsv', pki.server),
                     x509_object('tlsc', pki.client, endpoint='client'),
                     psk_object('psk0', os.path.dirname(make_psk(d.path('psk'),
                                                                 [('u', 'ab' * 16)])))):
            kv = dict(x.split('=', 1) for x in spec.split(',')[1:])
            kv = {k: {'on': True, 'off': False}.get(v, v) for k, v in kv.items()}
            q.execute('object-add', dict(kv, **{'qom-type': spec.split(',')[0]}))
        port = free_port()
        addr = {'type': 'inet', 'host': '127.0.0.1', 'port': str(port)}
        for creds, text in (('nosuch', "No TLS credentials with id 'nosuch'"),
                            ('tlsc', 'Expected TLS credentials for a server endpoint'),
                            ('psk0', "Metrics server: TLS credentials 'psk0' must be "
                                     "tls-creds-x509 with a 'dir'")):
            assert_eq(q.error('x-blockd-metrics-stop')['desc'], 'Metrics server not running',
                      'nothing started')
            desc = q.error('x-blockd-metrics-start', {'addr': addr, 'tls-creds': creds})['desc']
            assert_eq(desc, text, 'tls-creds %s' % creds)
        ctx = ssl.create_default_context(cafile=os.path.join(pki.ca, 'ca-cert.pem'))
        # verify-peer off: any client that trusts the server's CA.
        q.execute('x-blockd-metrics-start', {'addr': addr, 'tls-creds': 'tls0'})
        status, headers, body = get(('127.0.0.1', port), tls=ctx)
        assert_eq(status, 200, 'HTTPS scrape')
        promtool_check(body)
        status, _, _ = get(('127.0.0.1', port))
        assert_eq(status, None, 'plain HTTP to the HTTPS port gets no answer')
        err = q.error('object-del', {'id': 'tls0'})
        assert_in('tls0', err['desc'], 'object in use')
        q.execute('x-blockd-metrics-stop')
        q.execute('object-del', {'id': 'tls0'})
        # verify-peer on (the default): a client certificate of the CA.
        q.execute('x-blockd-metrics-start', {'addr': addr, 'tls-creds': 'tlsv'})
        try:
            status, _, _ = get(('127.0.0.1', port), tls=ctx)
        except (ssl.SSLError, OSError):
            status = None
        assert_eq(status, None, 'no client certificate refused')
        rogue = ssl.create_default_context(cafile=os.path.join(pki.ca, 'ca-cert.pem'))
        rogue.load_cert_chain(os.path.join(pki.rogue_client, 'client-cert.pem'),
                              os.path.join(pki.rogue_client, 'client-key.pem'))
        try:
            status, _, _ = get(('127.0.0.1', port), tls=rogue)
        except (ssl.SSLError, OSError):
            status = None
        assert_eq(status, None, 'a certificate of another CA refused')
        ctx.load_cert_chain(os.path.join(pki.client, 'client-cert.pem'),
                            os.path.join(pki.client, 'client-key.pem'))
        status, _, body = get(('127.0.0.1', port), tls=ctx)
        assert_eq(status, 200, 'scrape with a client certificate')
        q.execute('x-blockd-metrics-stop')
        d.assert_alive()
    # --metrics with tls-creds on the command line (objects come first).
    port = free_port()
    d3 = Daemon()
    pki3 = make_pki(d3.path('pki'), rogue=False)
    d3.args += ['--object', x509_object('tls0', pki3.server, verify_peer='off'),
                '--metrics', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d,tls-creds=tls0'
                % port]
    with d3:
        d3.start()
        wait_for(lambda: get_or_none(('127.0.0.1', port), ssl.create_default_context(
            cafile=os.path.join(pki3.ca, 'ca-cert.pem'))) == 200, what='HTTPS from --metrics')


def get_or_none(addr, ctx):
    try:
        return get(addr, tls=ctx)[0]
    except OSError:
        return None



def test_https_idle_timeout():
    """A client that opens a TCP connection to the HTTPS endpoint and never
    starts TLS is closed after idle-timeout as a plain one is."""
    import socket
    skip_if_reference('qemu-storage-daemon has no metrics endpoint')
    from tls_env import free_port, make_pki, x509_object
    with start(metrics=False) as d:
        pki = make_pki(d.path('pki'))
        q = d.qmp()
        spec = x509_object('tls0', pki.server, verify_peer='off')
        kv = dict(x.split('=', 1) for x in spec.split(',')[1:])
        kv = {k: {'on': True, 'off': False}.get(v, v) for k, v in kv.items()}
        q.execute('object-add', dict(kv, **{'qom-type': spec.split(',')[0]}))
        port = free_port()
        q.execute('x-blockd-metrics-start', {'addr': {'type': 'inet', 'host': '127.0.0.1',
                                                      'port': str(port)},
                                             'tls-creds': 'tls0', 'idle-timeout': 1})
        s = socket.create_connection(('127.0.0.1', port))
        s.settimeout(20)
        try:
            assert_eq(s.recv(16), b'', 'a silent client is closed')
        finally:
            s.close()
        d.assert_alive()


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
