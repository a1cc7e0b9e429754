# SPDX-License-Identifier: MIT
"""A throw-away single-host Ceph cluster for the rbd tests, from Debian's
packages (ceph-mon, ceph-osd, ceph-common; no manager: RBD needs none).

  one monitor 'a' on v2:127.0.0.1:<free port> (msgr2 only),
  one OSD with the memstore object store (memstore device bytes, 2 GiB),
  pool size 1, cephx on, one keyring with mon., client.admin and osd.0,
  everything (data, logs, admin sockets, pid files) under one temporary
  directory, removed by stop().

In a test:

    with CephCluster() as c:          # raises CephUnavailable when it fails
        c.rbd('create', '--size', '64M', 'rbd/img')
        c.qemu_uri('img')             # rbd:rbd/img:conf=...:id=admin

From a shell, start one and keep it until Enter (or Ctrl-C):

    /usr/bin/python3 tests/integration/ceph_cluster.py
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

TOOLS = ('ceph-mon', 'ceph-osd', 'ceph', 'ceph-authtool', 'monmaptool', 'rbd')


class CephUnavailable(Exception):
    """The cluster could not start; the message says why."""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {dir}/keyring
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
pid file = {dir}/run/$name.pid
log file = {dir}/log/$name.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0

[mon]
mon data = {dir}/mon/$cluster-$id
mon initial members = a

[osd]
osd data = {dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {osd_bytes}
osd op num shards = 1
# memstore writes its objects to the OSD's directory on unmount, which
# the fast shutdown skips: stop_osd()/start_osd() keep the data.
osd fast shutdown = false
osd op num threads per shard = 2
"""


class CephCluster:
    """Start with start() (or `with`), stop with stop(): the OSD first,
    then the monitor, then the directory goes."""

    def __init__(self, base=None, pool='rbd', osd_bytes=2 << 30, timeout=60):
        self.base = base
        self.pool = pool
        self.osd_bytes = osd_bytes
        self.timeout = timeout
        self.dir = None
        self.port = None
        self.mon = None
        self.osd = None

    # --- paths and clients ---

    @property
    def conf(self):
        return os.path.join(self.dir, 'ceph.conf')

    @property
    def keyring(self):
        return os.path.join(self.dir, 'keyring')

    @property
    def mon_addr(self):
        return '127.0.0.1:%d' % self.port

    def _run(self, cmd, timeout=None, check=True):
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, errors='replace',
                           timeout=timeout or self.timeout)
        if check and p.returncode != 0:
            raise CephUnavailable('%s exited %d: %s%s'
                                  % (' '.join(cmd), p.returncode, p.stdout, p.stderr))
        return p

    def ceph(self, *args, **kw):
        return self._run(['ceph', '-c', self.conf, '--connect-timeout', '30']
                         + list(args), **kw)

    def rbd(self, *args, **kw):
        return self._run(['rbd', '-c', self.conf] + list(args), **kw)

    def key(self, name='client.admin'):
        """The base64 key, as `ceph auth get-key` prints it."""
        return self.ceph('auth', 'get-key', name).stdout.strip()

    def qemu_uri(self, image, pool=None, snap=None):
        """The image as qemu-img names it (QEMU's legacy rbd: filename)."""
        s = 'rbd:%s/%s' % (pool or self.pool, image)
        if snap:
            s += '@' + snap
        return s + ':conf=%s:id=admin' % self.conf

    def log(self, name):
        try:
            with open(os.path.join(self.dir, 'log', name + '.log'),
                      errors='replace') as f:
                return f.read()[-4000:]
        except OSError:
            return ''

    # --- lifecycle ---

    def start(self):
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise CephUnavailable('not installed: %s (scripts/deps.sh)'
                                  % ' '.join(missing))
        self.dir = tempfile.mkdtemp(prefix='blockd-ceph-', dir=self.base)
        try:
            self._bootstrap()
        except BaseException as e:
            msg = str(e)
            self.stop()
            if isinstance(e, (CephUnavailable, subprocess.TimeoutExpired, OSError)):
                raise CephUnavailable('ceph test cluster: ' + msg) from None
            raise
        return self

    def _bootstrap(self):
        d = self.dir
        for sub in ('run', 'log', 'mon', 'osd'):
            os.mkdir(os.path.join(d, sub))
        fsid = str(uuid.uuid4())
        self.port = free_port()
        with open(self.conf, 'w') as f:
            f.write(CONF.format(fsid=fsid, port=self.port, dir=d,
                                osd_bytes=self.osd_bytes))
        kr = self.keyring
        self._run(['ceph-authtool', '--create-keyring', kr, '--gen-key',
                   '-n', 'mon.', '--cap', 'mon', 'allow *'])
        self._run(['ceph-authtool', kr, '--gen-key', '-n', 'client.admin',
                   '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *',
                   '--cap', 'mgr', 'allow *'])
        self._run(['ceph-authtool', kr, '--gen-key', '-n', 'osd.0',
                   '--cap', 'mon', 'allow profile osd',
                   '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow profile osd'])
        monmap = os.path.join(d, 'monmap')
        self._run(['monmaptool', '--create', '--fsid', fsid,
                   '--addv', 'a', '[v2:%s]' % self.mon_addr, monmap])
        self._run(['ceph-mon', '-c', self.conf, '--mkfs', '-i', 'a',
                   '--monmap', monmap, '--keyring', kr])
        self.mon = self._spawn(['ceph-mon', '-c', self.conf, '-f', '-i', 'a'])
        # The monitor answers once it has formed its quorum of one.
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph('osd', 'new', osd_uuid).stdout.strip()
        if osd_id != '0':
            raise CephUnavailable('ceph osd new gave id %r, expected 0' % osd_id)
        os.mkdir(os.path.join(d, 'osd', 'ceph-0'))
        self._run(['ceph-osd', '-c', self.conf, '-i', '0', '--mkfs',
                   '--osd-uuid', osd_uuid])
        self.osd = self._spawn(['ceph-osd', '-c', self.conf, '-f', '-i', '0'])
        self.ceph('osd', 'pool', 'create', self.pool, '8', '8')
        # Writes the pool's first object: returns once the OSD is up and
        # the placement groups are active.
        self.rbd('pool', 'init', self.pool)

    def _spawn(self, cmd):
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(0.05)
        if p.poll() is not None:
            raise CephUnavailable('%s exited %d at once' % (' '.join(cmd), p.returncode))
        return p

    def stop_osd(self):
        self.osd = self._stop(self.osd)

    def start_osd(self):
        """Start the OSD again after stop_osd() (memstore saves its
        objects to the OSD's directory when it stops)."""
        self.osd = self._spawn(['ceph-osd', '-c', self.conf, '-f', '-i', '0'])

    @staticmethod
    def _stop(p):
        if p is None or p.poll() is not None:
            return None
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        return None

    def stop(self):
        self.osd = self._stop(self.osd)
        self.mon = self._stop(self.mon)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    c = CephCluster()
    t = time.monotonic()
    try:
        c.start()
    except CephUnavailable as e:
        print(e, file=sys.stderr)
        return 1
    try:
        print('ceph cluster up in %.1f s' % (time.monotonic() - t))
        print('CEPH_CONF=%s' % c.conf)
        print('mon: v2:%s  pool: %s' % (c.mon_addr, c.pool))
        print('admin key: %s' % c.key())
        if sys.stdin.isatty():
            input('Enter stops it. ')
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        c.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
