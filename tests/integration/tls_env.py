# SPDX-License-Identifier: MIT
"""Helpers for the NBD-over-TLS tests: X.509 certificates and PSK files made
in the test with certtool (gnutls-bin), a free TCP port, a daemon with a
TLS NBD server, the TLS URIs and --object options of the real clients
(nbdinfo, nbdcopy, qemu-io, qemu-img), and (from raw_nbd) RawNBD, a
minimal client of the fixed-newstyle handshake.

Layout of a credentials tree made by make_pki(base):
  base/ca/            ca-cert.pem ca-key.pem          (the CA)
  base/server/        ca-cert.pem server-cert.pem server-key.pem
  base/client/        ca-cert.pem client-cert.pem client-key.pem
                      (DN "O=blockd test,CN=client1")
  base/client2/       the same for CN=client2 (for the authz cases)
  base/rogue-ca/      a second CA, unrelated to the first
  base/rogue-client/  ca-cert.pem (the first CA, so the client trusts the
                      server) with a client cert the rogue CA signed
  base/rogue-trust/   ca-cert.pem (the rogue CA) with client1's cert: a
                      client that does not trust the server's CA
The directories hold QEMU's file names, which libnbd's tls-certificates=
reads too.
"""

import contextlib
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import Daemon, require_tool, run  # noqa: E402

MiB = 1 << 20

from raw_nbd import RawNBD  # noqa: E402

CLIENT_DN = 'O=blockd test,CN=client1'
CLIENT2_DN = 'O=blockd test,CN=client2'
PSK_USER = 'alice'
PSK_KEY = '9f3a0c5e1b7d2468ace013579bdf2468'
BOB_KEY = 'b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0'
WRONG_KEY = '0123456789abcdef0123456789abcdef'


def require_tls_tools():
    require_tool('certtool')


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on now (the kernel's pick;
    a daemon started right after binds it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


# --- certificates (certtool) ---

def _certtool(args, template=None, cwd=None):
    argv = ['certtool'] + list(args)
    if template is not None:
        tpl = os.path.join(cwd, 'template.%d' % os.getpid())
        with open(tpl, 'w') as f:
            f.write(template)
        argv += ['--template', tpl]
    try:
        return run(argv, cwd=cwd)
    finally:
        if template is not None:
            os.unlink(tpl)


def _key(path):
    # ECDSA keys are quick to make (RSA 2048 takes a while on a slow box).
    _certtool(['--generate-privkey', '--key-type=ecdsa', '--outfile', path])
    os.chmod(path, 0o600)
    return path


def make_ca(dir, cn):
    """A self-signed CA in dir: ca-cert.pem and ca-key.pem."""
    os.makedirs(dir, exist_ok=True)
    key = _key(os.path.join(dir, 'ca-key.pem'))
    cert = os.path.join(dir, 'ca-cert.pem')
    _certtool(['--generate-self-signed', '--load-privkey', key, '--outfile', cert],
              'cn = "%s"\nca\ncert_signing_key\ncrl_signing_key\nexpiration_days = 3650\n' % cn,
              cwd=dir)
    return dir


def _signed(ca_dir, key, cert, template):
    _certtool(['--generate-certificate', '--load-privkey', key,
               '--load-ca-certificate', os.path.join(ca_dir, 'ca-cert.pem'),
               '--load-ca-privkey', os.path.join(ca_dir, 'ca-key.pem'),
               '--outfile', cert], template, cwd=os.path.dirname(cert))


def _copy(src, dst):
    with open(src, 'rb') as f, open(dst, 'wb') as g:
        g.write(f.read())


def make_server_cert(ca_dir, dir, cn='localhost'):
    """server-cert.pem/server-key.pem for 127.0.0.1 and localhost, with the
    key purposes of a TLS server, and the CA's ca-cert.pem, in dir."""
    os.makedirs(dir, exist_ok=True)
    _copy(os.path.join(ca_dir, 'ca-cert.pem'), os.path.join(dir, 'ca-cert.pem'))
    key = _key(os.path.join(dir, 'server-key.pem'))
    _signed(ca_dir, key, os.path.join(dir, 'server-cert.pem'),
            'organization = "blockd test"\ncn = "%s"\ndns_name = "localhost"\n'
            'ip_address = "127.0.0.1"\ntls_www_server\nencryption_key\nsigning_key\n'
            'expiration_days = 3650\n' % cn)
    return dir


def make_client_cert(ca_dir, dir, cn='client1', trust_ca_dir=None):
    """client-cert.pem/client-key.pem (DN O=blockd test,CN=cn) signed by
    ca_dir's CA, with ca-cert.pem of trust_ca_dir (default the same CA)."""
    os.makedirs(dir, exist_ok=True)
    _copy(os.path.join(trust_ca_dir or ca_dir, 'ca-cert.pem'), os.path.join(dir, 'ca-cert.pem'))
    key = _key(os.path.join(dir, 'client-key.pem'))
    _signed(ca_dir, key, os.path.join(dir, 'client-cert.pem'),
            'organization = "blockd test"\ncn = "%s"\ntls_www_client\nencryption_key\n'
            'signing_key\nexpiration_days = 3650\n' % cn)
    return dir


class PKI:
    def __init__(self, base):
        self.base = base
        self.ca = os.path.join(base, 'ca')
        self.server = os.path.join(base, 'server')
        self.client = os.path.join(base, 'client')
        self.client2 = os.path.join(base, 'client2')
        self.rogue_ca = os.path.join(base, 'rogue-ca')
        self.rogue_client = os.path.join(base, 'rogue-client')
        self.rogue_trust = os.path.join(base, 'rogue-trust')


def make_pki(base, rogue=True):
    """The credentials tree of the module docstring under base."""
    require_tls_tools()
    p = PKI(base)
    make_ca(p.ca, 'blockd test CA')
    make_server_cert(p.ca, p.server)
    make_client_cert(p.ca, p.client, 'client1')
    make_client_cert(p.ca, p.client2, 'client2')
    if rogue:
        make_ca(p.rogue_ca, 'rogue CA')
        make_client_cert(p.rogue_ca, p.rogue_client, 'client1', trust_ca_dir=p.ca)
        os.makedirs(p.rogue_trust, exist_ok=True)
        _copy(os.path.join(p.rogue_ca, 'ca-cert.pem'), os.path.join(p.rogue_trust, 'ca-cert.pem'))
        for f in ('client-cert.pem', 'client-key.pem'):
            _copy(os.path.join(p.client, f), os.path.join(p.rogue_trust, f))
    return p


def make_psk(dir, entries):
    """dir/keys.psk with 'username:hexkey' lines; entries: [(user, hexkey)]."""
    os.makedirs(dir, exist_ok=True)
    path = os.path.join(dir, 'keys.psk')
    with open(path, 'w') as f:
        for user, key in entries:
            f.write('%s:%s\n' % (user, key))
    os.chmod(path, 0o600)
    return path


# --- the daemon with a TLS NBD server ---

def x509_object(id, dir, endpoint='server', **props):
    """--object value of a tls-creds-x509 object."""
    s = 'tls-creds-x509,id=%s,dir=%s,endpoint=%s' % (id, dir, endpoint)
    return s + ''.join(',%s=%s' % (k.replace('_', '-'), v) for k, v in props.items())


def psk_object(id, dir, endpoint='server', **props):
    s = 'tls-creds-psk,id=%s,dir=%s,endpoint=%s' % (id, dir, endpoint)
    return s + ''.join(',%s=%s' % (k.replace('_', '-'), v) for k, v in props.items())


class TLSDaemon(Daemon):
    """A Daemon whose NBD server listens on 127.0.0.1:port (or its unix
    socket) with TLS; the export 'disk' of image a.raw is writable."""

    port = None

    def tcp_uri(self, creds_dir=None, psk_file=None, user=None, name='disk', tls=True):
        """nbds:// URI (nbd:// with tls=False) of the export.  libnbd 1.14
        takes the TLS username from the URI's authority (user@host), not
        from a tls-username= query parameter."""
        u = '%s://%s127.0.0.1:%d/%s' % ('nbds' if tls else 'nbd', user + '@' if user else '',
                                        self.port, name)
        return u + _tls_query(creds_dir, psk_file, '?')

    def unix_uri(self, creds_dir=None, psk_file=None, user=None, name='disk', tls=True):
        u = '%s://%s/%s?socket=%s' % ('nbds+unix' if tls else 'nbd+unix', user + '@' if user else '',
                                      name, self.nbd_sock)
        return u + _tls_query(creds_dir, psk_file, '&')


    def raw(self, timeout=10.0, **kw):
        """A RawNBD client of the server (its TCP port, else its socket)."""
        if self.port:
            return RawNBD(port=self.port, timeout=timeout, **kw)
        return RawNBD(path=self.nbd_sock, timeout=timeout, **kw)


def _tls_query(creds_dir, psk_file, sep):
    q = []
    if creds_dir:
        q.append('tls-certificates=' + creds_dir)
    if psk_file:
        q.append('tls-psk-file=' + psk_file)
    return (sep + '&'.join(q)) if q else ''


def start_tls_daemon(creds='x509', server_opts='', objects=(), unix=False, image_size=4 * MiB,
                     pattern=None, export=True, extra_args=(), creds_opts='', server=True):
    """A started TLSDaemon exporting its a.raw (image_size bytes, filled
    with `pattern` if given) as the writable export 'disk' on an NBD server
    at 127.0.0.1:d.port, or on d.nbd_sock with unix=True.

    Its directory holds a credentials tree d.pki (make_pki) and a server
    PSK directory d.psk_dir whose keys.psk knows PSK_USER and 'bob'.
    creds: 'x509', 'psk' or 'anon' makes the server's credentials object
    'tls0' (creds_opts appended to it) and adds tls-creds=tls0 to
    --nbd-server; None starts a plaintext server.  server_opts: more
    --nbd-server options ('tls-authz=az0,max-connections=1').  objects: more
    --object values, where {pki} and {dir} stand for d.pki.base and d.dir.
    server=False: no NBD server (nor export), for serve_over_qmp."""
    d = TLSDaemon()
    try:
        d.pki = make_pki(d.path('pki'))
        d.psk_dir = d.path('psk')
        make_psk(d.psk_dir, [(PSK_USER, PSK_KEY), ('bob', BOB_KEY)])
        img = d.path('a.raw')
        with open(img, 'wb') as f:
            f.truncate(image_size)
            if pattern is not None:
                f.write(bytes([pattern]) * image_size)
        d.image = img
        objs = [o.format(pki=d.pki.base, dir=d.dir) for o in objects]
        opts = [server_opts] if server_opts else []
        if creds == 'x509':
            objs.insert(0, x509_object('tls0', d.pki.server) + creds_opts)
        elif creds == 'psk':
            objs.insert(0, psk_object('tls0', d.psk_dir) + creds_opts)
        elif creds == 'anon':
            objs.insert(0, 'tls-creds-anon,id=tls0,endpoint=server' + creds_opts)
        if creds:
            opts.insert(0, 'tls-creds=tls0')
        args = []
        for o in objs:
            args += ['--object', o]
        if unix:
            addr = 'addr.type=unix,addr.path=%s' % d.nbd_sock
            d.wait = [d.nbd_sock]
        else:
            d.port = free_port()
            addr = 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d' % d.port
        if server:
            args += ['--blockdev', 'driver=file,node-name=file0,filename=%s' % img,
                     '--blockdev', 'driver=raw,node-name=fmt0,file=file0',
                     '--nbd-server', ','.join([addr] + opts)]
        else:
            d.wait = []
        if export and server:
            args += ['--export', 'type=nbd,id=exp0,node-name=fmt0,name=disk,writable=on']
        d.args = args + list(extra_args) + d.args
        d.start()
        if server and not unix:
            wait_tcp(d, d.port)
    except BaseException:
        d.cleanup()
        raise
    return d


def serve_over_qmp(d, q, creds, authz=None, **server):
    """nbd-server-start on a new 127.0.0.1 port (d.port) with tls-creds
    `creds` (and tls-authz `authz`, more arguments in server), exporting the
    daemon's image as 'disk' (its node 'r' made on the first call).  Stops
    a server running before."""
    if not getattr(d, '_r_node', False):
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': d.image}})
        d._r_node = True
    if getattr(d, '_qmp_server', False):
        q.execute('nbd-server-stop')
        d._qmp_server = False
    d.port = free_port()
    args = {'addr': {'type': 'inet', 'data': {'host': '127.0.0.1', 'port': str(d.port)}}}
    if creds:
        args['tls-creds'] = creds
    if authz:
        args['tls-authz'] = authz
    args.update(server)
    q.execute('nbd-server-start', args)
    d._qmp_server = True
    q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'r', 'name': 'disk',
                                   'writable': True})


def psk_client_file(d, user=PSK_USER, key=PSK_KEY, name=None):
    """A client's keys.psk (in a directory of its own, as QEMU's client
    tls-creds-psk wants) with the one line user:key; returns the file."""
    dir = d.path(name or 'psk-client-%s-%s' % (user, key[:6]))
    return make_psk(dir, [(user, key)])


def wait_tcp(d, port, timeout=15.0):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        d.assert_alive()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(('127.0.0.1', port))
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise AssertionError('nothing listens on 127.0.0.1:%d' % port)


# --- real clients ---

def qemu_client_x509(dir, id='tls0', **props):
    """qemu-io/qemu-img --object arguments of X.509 client credentials
    (props such as sanity_check='off' appended)."""
    return ['--object', x509_object(id, dir, 'client', **props)]


def qemu_client_psk(dir, user, id='tls0'):
    return ['--object', psk_object(id, dir, 'client', username=user)]


def qemu_client_anon(id='tls0'):
    return ['--object', 'tls-creds-anon,id=%s,endpoint=client' % id]


def image_opts(d, creds_id='tls0', export='disk', unix=False, hostname=None):
    """--image-opts string of the daemon's NBD export, over TLS with the
    client credentials creds_id (None: plaintext).  Over a unix socket an
    X.509 client needs the name to check the server's certificate against:
    hostname='localhost'."""
    if unix:
        server = 'server.type=unix,server.path=%s' % d.nbd_sock
    else:
        server = 'server.type=inet,server.host=127.0.0.1,server.port=%d' % d.port
    s = 'driver=nbd,%s,export=%s' % (server, export)
    if creds_id:
        s += ',tls-creds=' + creds_id
    if hostname:
        s += ',tls-hostname=' + hostname
    return s


def qemu_io_tls(client_object, opts, *cmds, check=True, timeout=60, readonly=False):
    """qemu-io with --object client_object (a list from qemu_client_*)
    --image-opts opts; with check, fails unless every command succeeded."""
    argv = ['qemu-io'] + (['-r'] if readonly else []) + list(client_object) + ['--image-opts']
    for c in cmds:
        argv += ['-c', c]
    argv.append(opts)
    p = run(argv, check=False, timeout=timeout)
    if check and (p.returncode != 0 or 'Pattern verification failed' in p.stdout
                  or 'failed' in p.stdout.lower()):
        raise AssertionError('qemu-io %s failed (rc %d)\nstdout: %s\nstderr: %s'
                             % (' '.join(cmds), p.returncode, p.stdout, p.stderr))
    return p


def qemu_io_refused(client_object, opts):
    """qemu-io over `opts` must fail to open the export; returns its
    stderr."""
    p = qemu_io_tls(client_object, opts, 'read 0 4k', check=False, readonly=True)
    if p.returncode == 0:
        raise AssertionError('qemu-io was let in: %s' % p.stdout)
    return p.stderr


def nbdinfo(uri, *args, check=True, timeout=30):
    return run(['nbdinfo'] + list(args) + [uri], check=check, timeout=timeout)


def nbdinfo_size(uri):
    return int(nbdinfo(uri, '--size').stdout.strip())


def nbdinfo_refused(uri):
    """nbdinfo on `uri` must fail; returns its stderr."""
    p = nbdinfo(uri, '--size', check=False)
    if p.returncode == 0:
        raise AssertionError('nbdinfo %s was let in: %s' % (uri, p.stdout))
    return p.stderr


def tls_handle(creds_dir=None, psk_file=None, user=None):
    """A libnbd handle that requires TLS with X.509 certificates from
    creds_dir or the PSK file (and username); connect it yourself."""
    from blockd_test import require_nbd
    nbd = require_nbd()
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    if creds_dir:
        h.set_tls_certificates(creds_dir)
    if psk_file:
        h.set_tls_psk_file(psk_file)
    if user:
        h.set_tls_username(user)
    return h


@contextlib.contextmanager
def tls_connection(d, creds_dir=None, psk_file=None, user=None):
    """A libnbd connection to the daemon's export 'disk' over TCP with TLS,
    shut down when the block ends; yields the handle."""
    h = tls_handle(creds_dir, psk_file, user)
    h.set_export_name('disk')
    h.connect_tcp('127.0.0.1', str(d.port))
    try:
        yield h
    finally:
        try:
            h.shutdown()
        except Exception:  # noqa: BLE001
            pass
