#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Authorization of NBD-over-TLS clients (issue 12): nbd-server-start /
--nbd-server tls-authz naming an authz-simple, authz-list or
authz-listfile object, matched against the client certificate's
distinguished name as gnutls gives it ('O=blockd test,CN=client1': the
attributes in the certificate's order) or the PSK username.  A denied
client loses its one connection, the daemon logs QEMU's 'TLS x509 authz
check for DN is denied', and everyone else goes on.

qemu-storage-daemon 7.2 cannot make an authz-listfile (its QAPI name and
its QOM type name differ: 'invalid object type: authz-listfile') and does
not apply tls-authz to PSK clients, so those cases are blockd-only; the
rest runs against it too."""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, assert_in, main, skip_if_reference, tests_of,  # noqa: E402
                         wait_for)
from tls_env import (BOB_KEY, CLIENT2_DN, CLIENT_DN, PSK_USER, image_opts, nbdinfo,  # noqa: E402
                     nbdinfo_refused, nbdinfo_size, psk_client_file, qemu_client_psk,
                     qemu_client_x509, qemu_io_refused, qemu_io_tls, serve_over_qmp,
                     start_tls_daemon, tls_connection, MiB)

SIZE = 4 * MiB


def _in(d, creds_dir):
    """The X.509 client of creds_dir gets in (nbdinfo)."""
    assert_eq(nbdinfo_size(d.tcp_uri(creds_dir)), SIZE, 'size for ' + creds_dir)


def _denied(d, creds_dir, dn):
    """The client of creds_dir (DN dn) is refused, and the daemon logs
    QEMU's text for it."""
    n = len(d.stderr())
    nbdinfo_refused(d.tcp_uri(creds_dir))
    text = 'TLS x509 authz check for %s is denied' % dn
    wait_for(lambda: text in d.stderr()[n:], what='%r in the log' % text)
    d.assert_alive()


def _authz_daemon(q_objects):
    """A daemon with X.509 credentials and no server yet; `q_objects` are
    object-add arguments made before serve_over_qmp."""
    d = start_tls_daemon(creds=None, server=False)
    try:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'tls0',
                                 'dir': d.pki.server, 'endpoint': 'server'})
        for o in q_objects:
            q.execute('object-add', o)
    except BaseException:
        d.cleanup()
        raise
    return d, q


def test_authz_simple_cmdline():
    """--object authz-simple (the DN's comma doubled on the command line)
    and --nbd-server tls-authz: client1 reads and writes with qemu-io and
    nbdinfo; client2 is denied, then client1 still gets in."""
    with start_tls_daemon(server_opts='tls-authz=az0',
                          objects=['authz-simple,id=az0,identity=' +
                                   CLIENT_DN.replace(',', ',,')]) as d:
        _in(d, d.pki.client)
        cli = qemu_client_x509(d.pki.client)
        qemu_io_tls(cli, image_opts(d), 'write -P 0x61 0 64k', 'read -P 0x61 0 64k')
        _denied(d, d.pki.client2, CLIENT2_DN)
        qemu_io_refused(qemu_client_x509(d.pki.client2), image_opts(d))
        qemu_io_tls(cli, image_opts(d), 'read -P 0x61 0 64k', readonly=True)
        _in(d, d.pki.client)


def test_authz_dn_order():
    """The identity is 'O=blockd test,CN=client1' (the order of the
    certificate), not 'CN=client1,O=blockd test' (the order certtool -i
    prints): an authz-simple of the latter denies client1."""
    d, q = _authz_daemon([{'qom-type': 'authz-simple', 'id': 'rev',
                           'identity': 'CN=client1,O=blockd test'},
                          {'qom-type': 'authz-simple', 'id': 'fwd', 'identity': CLIENT_DN}])
    with d:
        serve_over_qmp(d, q, 'tls0', authz='rev')
        _denied(d, d.pki.client, CLIENT_DN)
        serve_over_qmp(d, q, 'tls0', authz='fwd')
        _in(d, d.pki.client)


def test_authz_list_exact_and_glob():
    """authz-list rules in order, the first match wins: client1 denied by
    an exact rule, every other 'O=blockd test,*' allowed by a glob, and the
    default policy (deny) for the rest (a rogue-CA-trusting client of
    another DN would fall there)."""
    rules = [{'match': CLIENT_DN, 'policy': 'deny', 'format': 'exact'},
             {'match': 'O=blockd test,*', 'policy': 'allow', 'format': 'glob'}]
    d, q = _authz_daemon([{'qom-type': 'authz-list', 'id': 'al', 'policy': 'deny',
                           'rules': rules}])
    with d:
        serve_over_qmp(d, q, 'tls0', authz='al')
        _denied(d, d.pki.client, CLIENT_DN)
        _in(d, d.pki.client2)


def test_authz_list_default_policy():
    """With no rule matching, the list's policy decides: 'allow' lets both
    in but for the one denied by name; an empty list (policy deny by
    default) lets nobody in."""
    d, q = _authz_daemon([
        {'qom-type': 'authz-list', 'id': 'open', 'policy': 'allow',
         'rules': [{'match': CLIENT2_DN, 'policy': 'deny'}]},
        {'qom-type': 'authz-list', 'id': 'closed'}])
    with d:
        serve_over_qmp(d, q, 'tls0', authz='open')
        _in(d, d.pki.client)
        _denied(d, d.pki.client2, CLIENT2_DN)
        serve_over_qmp(d, q, 'tls0', authz='closed')
        _denied(d, d.pki.client, CLIENT_DN)
        _denied(d, d.pki.client2, CLIENT2_DN)


def test_authz_glob_wildcards():
    """Glob rules: '*' and '?' as fnmatch."""
    d, q = _authz_daemon([{'qom-type': 'authz-list', 'id': 'g', 'policy': 'deny',
                           'rules': [{'match': '*,CN=client?', 'policy': 'allow',
                                      'format': 'glob'}]},
                          {'qom-type': 'authz-list', 'id': 'h', 'policy': 'deny',
                           'rules': [{'match': '*CN=client1', 'policy': 'allow',
                                      'format': 'glob'}]}])
    with d:
        serve_over_qmp(d, q, 'tls0', authz='g')
        _in(d, d.pki.client)
        _in(d, d.pki.client2)
        serve_over_qmp(d, q, 'tls0', authz='h')
        _in(d, d.pki.client)
        _denied(d, d.pki.client2, CLIENT2_DN)


def test_authz_unknown_id():
    """tls-authz naming no object: QEMU takes it at nbd-server-start and
    refuses every client after the TLS handshake ('Cannot find QAuthZ
    object ID nosuch'), so an authz object added later takes effect; a
    daemon refusing the id at start must name it."""
    d, q = _authz_daemon([])
    with d:
        try:
            serve_over_qmp(d, q, 'tls0', authz='nosuch')
        except Exception as e:  # noqa: BLE001
            assert_in('nosuch', str(e), 'error of nbd-server-start')
            return
        n = len(d.stderr())
        nbdinfo_refused(d.tcp_uri(d.pki.client))
        wait_for(lambda: 'Cannot find QAuthZ object ID nosuch' in d.stderr()[n:],
                 what='the missing authz in the log')
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'nosuch',
                                 'identity': CLIENT_DN})
        _in(d, d.pki.client)
        _denied(d, d.pki.client2, CLIENT2_DN)


def test_denied_client_does_not_disturb_others():
    """A libnbd client of client1 connected and busy while client2 is
    refused ten times: it goes on reading and writing."""
    d, q = _authz_daemon([{'qom-type': 'authz-simple', 'id': 'az', 'identity': CLIENT_DN}])
    with d:
        serve_over_qmp(d, q, 'tls0', authz='az')
        with tls_connection(d, d.pki.client) as h:
            for i in range(10):
                h.pwrite(bytes([i]) * 4096, i * 4096)
                nbdinfo_refused(d.tcp_uri(d.pki.client2))
                assert_eq(h.pread(4096, i * 4096), bytes([i]) * 4096, 'read back %d' % i)
        d.assert_alive()
        _in(d, d.pki.client)


# --- blockd only ---

def test_authz_psk_username():
    """With PSK credentials the identity is the username: authz-simple
    identity=alice lets alice in and refuses bob (whose key is right)."""
    skip_if_reference('QSD 7.2 does not apply tls-authz to PSK clients')
    with start_tls_daemon(creds='psk', server_opts='tls-authz=az0',
                          objects=['authz-simple,id=az0,identity=' + PSK_USER]) as d:
        alice = psk_client_file(d)
        bob = psk_client_file(d, 'bob', BOB_KEY)
        assert_eq(nbdinfo_size(d.tcp_uri(psk_file=alice, user=PSK_USER)), SIZE, 'alice')
        nbdinfo_refused(d.tcp_uri(psk_file=bob, user='bob'))
        qemu_io_refused(qemu_client_psk(d.psk_dir, 'bob'), image_opts(d))
        qemu_io_tls(qemu_client_psk(d.psk_dir, PSK_USER), image_opts(d), 'read 0 4k')
        d.assert_alive()


def _listfile(path, policy, rules):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump({'policy': policy, 'rules': rules}, f)
    os.rename(tmp, path)


def _rewrite_in_place(path, policy, rules):
    with open(path, 'w') as f:
        json.dump({'policy': policy, 'rules': rules}, f)


def _allowed(d, creds_dir):
    return nbdinfo(d.tcp_uri(creds_dir), '--size', check=False).returncode == 0


def test_authz_listfile_refresh():
    """authz-listfile (refresh on by default): client2 is denied, the file
    is rewritten to allow it (in place, then replaced by a rename), and
    within a few seconds client2 gets in and client1 no longer does."""
    skip_if_reference('QSD 7.2 cannot create authz-listfile objects')
    with start_tls_daemon(creds=None, server=False) as d:
        lf = d.path('authz.json')
        _listfile(lf, 'deny', [{'match': CLIENT_DN, 'policy': 'allow', 'format': 'exact'}])
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 'tls0',
                                 'dir': d.pki.server, 'endpoint': 'server'})
        q.execute('object-add', {'qom-type': 'authz-listfile', 'id': 'lf', 'filename': lf})
        serve_over_qmp(d, q, 'tls0', authz='lf')
        _in(d, d.pki.client)
        _denied(d, d.pki.client2, CLIENT2_DN)
        _rewrite_in_place(lf, 'deny', [{'match': '*CN=client2', 'policy': 'allow',
                                        'format': 'glob'}])
        wait_for(lambda: _allowed(d, d.pki.client2), timeout=10,
                 what='client2 let in after the rewrite')
        _denied(d, d.pki.client, CLIENT_DN)
        _listfile(lf, 'allow', [])
        wait_for(lambda: _allowed(d, d.pki.client), timeout=10,
                 what='client1 let in after the rename')
        _in(d, d.pki.client2)


def test_authz_listfile_cmdline_no_refresh():
    """--object authz-listfile with refresh=off: the rules read at start
    stay in force whatever happens to the file."""
    skip_if_reference('QSD 7.2 cannot create authz-listfile objects')
    # The file must exist before the daemon starts.
    with tempfile.TemporaryDirectory(prefix='blockd-test-') as tmp:
        lf = os.path.join(tmp, 'authz.json')
        _listfile(lf, 'deny', [{'match': CLIENT_DN, 'policy': 'allow'}])
        with start_tls_daemon(server_opts='tls-authz=lf',
                              objects=['authz-listfile,id=lf,filename=%s,refresh=off' % lf]) as d:
            _in(d, d.pki.client)
            _denied(d, d.pki.client2, CLIENT2_DN)
            _listfile(lf, 'allow', [])
            time.sleep(2)
            _denied(d, d.pki.client2, CLIENT2_DN)
            _in(d, d.pki.client)


def test_authz_listfile_errors():
    """QEMU's texts (authz/listfile.c) for a file that cannot be read and
    for a file that is not a JSON object."""
    skip_if_reference('QSD 7.2 cannot create authz-listfile objects')
    with start_tls_daemon(creds=None, server=False) as d:
        q = d.qmp()
        err = q.error('object-add', {'qom-type': 'authz-listfile', 'id': 'a',
                                     'filename': '/nonexistent/authz.json'})
        assert_eq(err['desc'], "Unable to read '/nonexistent/authz.json': Failed to open file "
                  "\u201c/nonexistent/authz.json\u201d: No such file or directory", 'missing file')
        arr = d.path('array.json')
        with open(arr, 'w') as f:
            f.write('[1, 2]\n')
        err = q.error('object-add', {'qom-type': 'authz-listfile', 'id': 'a', 'filename': arr})
        assert_eq(err['desc'], "File '%s' must contain a JSON object" % arr, 'not an object')
        ok = d.path('ok.json')
        _listfile(ok, 'deny', [])
        q.execute('object-add', {'qom-type': 'authz-listfile', 'id': 'a', 'filename': ok})


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
