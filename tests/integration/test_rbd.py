#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The 'rbd' block driver against a real, throw-away Ceph cluster
(ceph_cluster.py: one monitor, one memstore OSD, cephx on).

Images are made and inspected with the rbd CLI, and what the daemon wrote
is compared with `qemu-img compare` against QEMU's own rbd driver
(qemu-block-extra: rbd:pool/image:conf=...:id=admin), never only read
back through the daemon.  Every test runs against qemu-storage-daemon 7.2
too (BLOCKD_REFERENCE=1), except where it says why not.

What qemu-storage-daemon 7.2 does, and the texts it gives, are the
expected values:
  - a snapshot opened read-write: "rbd snapshots are read-only";
  - a pool that does not exist: "error opening pool NAME: No such file
    or directory"; an image that does not exist: "error reading header
    from NAME: No such file or directory";
  - a wrong key: "error connecting: Permission denied";
  - a monitor nobody answers: "error connecting: Connection timed out"
    after client_mount_timeout (blockd adds "(cluster unreachable or
    credentials refused, timeout N s)": with a bare 'server' address
    and a wrong key librados does not tell the two apart).
The tests that need the cluster (@ceph) run together as one meson test,
rbd/cluster, which is SKIPPED when the cluster cannot start (the reason
is printed); the others are one meson test each and need no cluster.
"""

import atexit
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from ceph_cluster import CephCluster, CephUnavailable, free_port  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB

_cluster = None
_cluster_error = None
_seq = [0]

# The tests that need the cluster: one meson test, rbd/cluster.
ceph = bt.shared_fixture('cluster')


def cluster():
    """The file's one cluster, started on first use and stopped at exit;
    Skip (with the reason) when it cannot start."""
    global _cluster, _cluster_error
    if _cluster_error:
        raise bt.Skip(_cluster_error)
    if _cluster is None:
        try:
            _cluster = CephCluster().start()
        except CephUnavailable as e:
            _cluster_error = 'no Ceph test cluster: %s' % e
            raise bt.Skip(_cluster_error)
        atexit.register(_cluster.stop)
    return _cluster


def new_image(c, size=SIZE, opts=()):
    """A new image in pool rbd with a name of its own."""
    _seq[0] += 1
    name = 'img%d-%d' % (os.getpid(), _seq[0])
    c.rbd('create', '--size', '%dM' % (size // MiB), *opts, 'rbd/' + name)
    return name


def rbd_node(c, image, name='r0', **extra):
    opts = {'driver': 'rbd', 'node-name': name, 'pool': c.pool, 'image': image,
            'conf': c.conf}
    opts.update({k.replace('_', '-'): v for k, v in extra.items()})
    return opts


def qemu_io_rbd(c, image, *cmds):
    return bt.qemu_io(c.qemu_uri(image), *cmds)


def compare(a, b, fmt_a='raw', fmt_b='raw'):
    p = bt.run(['qemu-img', 'compare', '-f', fmt_a, '-F', fmt_b, a, b], check=False)
    bt.assert_eq(p.returncode, 0, 'qemu-img compare %s %s: %s%s' % (a, b, p.stdout, p.stderr))


def rbd_info(c, image):
    return json.loads(c.rbd('info', '--format', 'json', 'rbd/' + image).stdout)


def daemon(*args, wait_nbd=True, monitors=1):
    d = bt.Daemon(monitors=monitors)
    d.args = list(args) + ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock] + d.args
    d.wait = [d.nbd_sock] if wait_nbd else []
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def nbd_map(uri):
    """nbdinfo --map as [(offset, length, description)]."""
    out = bt.run(['nbdinfo', '--map', uri]).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        rows.append((int(f[0]), int(f[1]), ' '.join(f[3:])))
    return rows


# --- data ---

@ceph
def test_nbd_data():
    """Writes through an NBD export of an rbd node land in the image;
    data written by QEMU's driver reads back through the export."""
    c = cluster()
    img = new_image(c)
    qemu_io_rbd(c, img, 'write -P 0x11 0 1M', 'write -P 0x22 40M 512k')
    with daemon('--blockdev', json.dumps(rbd_node(c, img))) as d:
        q = d.qmp()
        with bt.nbd_export(q, 'r0', name='disk', writable=True):
            bt.qemu_io(d.uri(), 'read -P 0x11 0 1M', 'read -P 0x22 40M 512k',
                       'read -P 0 1M 1M')
            bt.qemu_io(d.uri(), 'write -P 0x33 3M 5M', 'write -P 0x44 63M 1M',
                       'write -z 40M 64k', 'discard 0 512k', 'flush')
            compare(d.uri(), c.qemu_uri(img))
        node = [n for n in q.execute('query-named-block-nodes') if n['node-name'] == 'r0'][0]
        bt.assert_eq(node['drv'], 'rbd', 'driver')
        bt.assert_eq(node['image']['virtual-size'], SIZE, 'size')
        bt.assert_eq({k: node['image'].get(k) for k in
                      ('cluster-size', 'dirty-flag', 'format-specific')},
                     {'cluster-size': 4 * MiB, 'dirty-flag': False,
                      'format-specific': {'type': 'rbd', 'data': {}}}, 'image info')
        bt.assert_eq(node['file'], 'json:{"pool": "rbd", "image": "%s", "conf": "%s", '
                     '"driver": "rbd"}' % (img, c.conf), 'file name (QEMU\'s order)')
    qemu_io_rbd(c, img, 'read -P 0x33 3M 5M', 'read -P 0x44 63M 1M', 'read -P 0 40M 64k',
                'read -P 0x22 %d 448k' % (40 * MiB + 65536))


@ceph
def test_fuse_data():
    """A FUSE-mounted rbd image: writes through the file reach Ceph."""
    bt.require_fuse()
    c = cluster()
    img = new_image(c, 16 * MiB)
    qemu_io_rbd(c, img, 'write -P 0x5a 0 2M')
    with daemon('--blockdev', json.dumps(rbd_node(c, img))) as d:
        q = d.qmp()
        mnt = d.path('disk.raw')
        with bt.fuse_export(q, 'r0', mnt, writable=True):
            bt.assert_eq(os.path.getsize(mnt), 16 * MiB, 'mounted size')
            with open(mnt, 'r+b') as f:
                bt.assert_eq(f.read(4096), b'\x5a' * 4096, 'read through FUSE')
                f.seek(5 * MiB)
                f.write(b'\xa5' * (3 * MiB))
                f.flush()
                os.fsync(f.fileno())
            compare(mnt, c.qemu_uri(img))
    qemu_io_rbd(c, img, 'read -P 0xa5 5M 3M', 'read -P 0x5a 0 2M')


@ceph
def test_holes():
    """Block status from the object map: written objects are data, the
    rest holes that read as zeroes (nbdinfo --map)."""
    c = cluster()
    # 1 MiB objects: the map's granularity.
    img = new_image(c, 32 * MiB, opts=('--object-size', '1M'))
    qemu_io_rbd(c, img, 'write -P 1 2M 1M', 'write -P 2 20M 2M')
    with daemon('--blockdev', json.dumps(rbd_node(c, img, discard='unmap'))) as d:
        q = d.qmp()
        with bt.nbd_export(q, 'r0', name='disk', writable=True):
            bt.qemu_io(d.uri(), 'write -P 3 8M 4k')
            rows = nbd_map(d.uri())
            data = [(o, n) for o, n, desc in rows if desc == 'data']
            holes = [(o, n) for o, n, desc in rows if 'hole' in desc]
            bt.assert_eq(data, [(2 * MiB, MiB), (8 * MiB, MiB), (20 * MiB, 2 * MiB)],
                         'data extents %r' % rows)
            bt.assert_eq(sum(n for o, n in holes), 28 * MiB, 'hole bytes %r' % rows)
            # Discarding whole objects makes holes again.
            bt.qemu_io(d.uri(), 'discard 20M 2M')
            rows = nbd_map(d.uri())
            bt.assert_eq([(o, n) for o, n, desc in rows if desc == 'data'],
                         [(2 * MiB, MiB), (8 * MiB, MiB)], 'after discard %r' % rows)
            compare(d.uri(), c.qemu_uri(img))


# --- create, resize, snapshots, reopen ---

@ceph
def test_create_and_resize():
    """blockdev-create makes the image (cluster-size: the object size);
    block_resize grows it."""
    c = cluster()
    _seq[0] += 1
    img = 'new%d-%d' % (os.getpid(), _seq[0])
    loc = {'pool': c.pool, 'image': img, 'conf': c.conf}
    with daemon(wait_nbd=False) as d:
        q = d.qmp()
        q.execute('blockdev-create', {'job-id': 'c0', 'options': {
            'driver': 'rbd', 'location': loc, 'size': 48 * MiB, 'cluster-size': 65536}})
        q.wait_job_status('c0', 'concluded')
        jobs = q.execute('query-jobs')
        bt.assert_eq(jobs[0].get('error'), None, 'create job error')
        q.execute('job-dismiss', {'id': 'c0'})
        info = rbd_info(c, img)
        bt.assert_eq(info['size'], 48 * MiB, 'created size')
        bt.assert_eq(info['order'], 16, 'object order')
        # A bad object size is refused before anything is created.
        q.execute('blockdev-create', {'job-id': 'c1', 'options': {
            'driver': 'rbd', 'location': dict(loc, image=img + 'x'), 'size': MiB,
            'cluster-size': 3000}})
        q.wait_job_status('c1', 'concluded')
        bt.assert_eq(q.execute('query-jobs')[0].get('error'), 'obj size needs to be power of 2',
                     'bad cluster-size')
        q.execute('job-dismiss', {'id': 'c1'})

        q.execute('blockdev-add', rbd_node(c, img))
        q.execute('block_resize', {'node-name': 'r0', 'size': 80 * MiB})
        bt.assert_eq(rbd_info(c, img)['size'], 80 * MiB, 'resized')
        node = [n for n in q.execute('query-named-block-nodes') if n['node-name'] == 'r0'][0]
        bt.assert_eq(node['image']['virtual-size'], 80 * MiB, 'node size after resize')
        q.execute('blockdev-del', {'node-name': 'r0'})


@ceph
def test_snapshot_read_only():
    """A snapshot opens read-only only, shows the data of its time, and
    cannot be reopened read-write."""
    c = cluster()
    img = new_image(c, 16 * MiB)
    qemu_io_rbd(c, img, 'write -P 0x61 0 4M')
    c.rbd('snap', 'create', 'rbd/%s@s1' % img)
    qemu_io_rbd(c, img, 'write -P 0x62 0 1M')
    with daemon() as d:
        q = d.qmp()
        err = q.error('blockdev-add', rbd_node(c, img, 'snap', snapshot='s1'))
        bt.assert_eq(err['desc'], 'rbd snapshots are read-only', 'read-write snapshot')
        q.execute('blockdev-add', rbd_node(c, img, 'snap', snapshot='s1', read_only=True))
        with bt.nbd_export(q, 'snap', name='snap'):
            bt.qemu_io(d.uri('snap'), 'read -P 0x61 0 4M', extra=('-r',))
            compare(d.uri('snap'), c.qemu_uri(img, snap='s1'))
        opts = rbd_node(c, img, 'snap', snapshot='s1', read_only=False)
        err = q.error('blockdev-reopen', {'options': [opts]})
        bt.assert_in('RBD snapshot', err['desc'], 'reopen read-write')
        q.execute('blockdev-del', {'node-name': 'snap'})
        # The head, auto-read-only, stays read-write.
        q.execute('blockdev-add', rbd_node(c, img, 'head', auto_read_only=True))
        ro = [n['ro'] for n in q.execute('query-named-block-nodes') if n['node-name'] == 'head']
        bt.assert_eq(ro, [False], 'head read-write')


@ceph
def test_internal_snapshots():
    """blockdev-snapshot-internal-sync and -delete-internal-sync make and
    remove RBD snapshots (the name is the id); the snapshot keeps the data
    of its time; query-named-block-nodes lists them."""
    c = cluster()
    img = new_image(c, 8 * MiB)
    qemu_io_rbd(c, img, 'write -P 0x21 0 1M')
    with daemon('--blockdev', json.dumps(rbd_node(c, img))) as d:
        q = d.qmp()
        q.execute('blockdev-snapshot-internal-sync', {'device': 'r0', 'name': 'sn1'})
        snaps = json.loads(c.rbd('snap', 'ls', '--format', 'json', 'rbd/' + img).stdout)
        bt.assert_eq([s['name'] for s in snaps], ['sn1'], 'rbd snap ls')
        node = [n for n in q.execute('query-named-block-nodes') if n['node-name'] == 'r0'][0]
        # librbd keeps no dates: QEMU shows zeroes (icount too).
        info = {'id': 'sn1', 'name': 'sn1', 'vm-state-size': 8 * MiB, 'date-sec': 0,
                'date-nsec': 0, 'vm-clock-sec': 0, 'vm-clock-nsec': 0, 'icount': 0}
        bt.assert_eq(node['image']['snapshots'], [info], 'listed snapshots')
        err = q.error('blockdev-snapshot-internal-sync', {'device': 'r0', 'name': 'sn1'})
        bt.assert_eq(err['desc'], "Snapshot with name 'sn1' already exists on device 'r0'",
                     'duplicate')
        with bt.nbd_export(q, 'r0', name='disk', writable=True):
            bt.qemu_io(d.uri(), 'write -P 0x22 0 1M')
        bt.qemu_io(c.qemu_uri(img, snap='sn1'), 'read -P 0x21 0 1M', extra=('-r',))
        ret = q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'r0',
                                                                    'name': 'sn1'})
        bt.assert_eq(ret, info, 'deleted snapshot')
        snaps = json.loads(c.rbd('snap', 'ls', '--format', 'json', 'rbd/' + img).stdout)
        bt.assert_eq(snaps, [], 'no snapshot left')
    qemu_io_rbd(c, img, 'read -P 0x22 0 1M')


@ceph
def test_reopen_read_only_and_back():
    """blockdev-reopen read-only=true refuses writes; read-only=false
    writes again."""
    c = cluster()
    img = new_image(c, 8 * MiB)
    with daemon() as d:
        q = d.qmp()
        q.execute('blockdev-add', rbd_node(c, img))
        q.execute('blockdev-reopen', {'options': [rbd_node(c, img, read_only=True)]})
        err = q.error('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'r0',
                                           'name': 'disk', 'writable': True})
        bt.assert_in('read-only', err['desc'].lower(), 'writable export of a read-only node')
        q.execute('blockdev-reopen', {'options': [rbd_node(c, img, read_only=False)]})
        with bt.nbd_export(q, 'r0', name='disk', writable=True):
            bt.qemu_io(d.uri(), 'write -P 7 0 1M')
            compare(d.uri(), c.qemu_uri(img))
    qemu_io_rbd(c, img, 'read -P 7 0 1M')


@ceph
def test_key_secret_and_servers():
    """No conf file: the monitor from 'server', the key from a secret
    object (base64, as `ceph auth get-key` prints it), cephx required."""
    c = cluster()
    img = new_image(c, 8 * MiB)
    qemu_io_rbd(c, img, 'write -P 0x77 0 1M')
    with daemon('--object', 'secret,id=k0,format=base64,data=%s' % c.key()) as d:
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'rbd', 'node-name': 'r0', 'pool': c.pool,
                                   'image': img, 'user': 'admin', 'key-secret': 'k0',
                                   'auth-client-required': ['cephx'],
                                   'server': [{'host': '127.0.0.1', 'port': str(c.port)}]})
        with bt.nbd_export(q, 'r0', name='disk'):
            bt.qemu_io(d.uri(), 'read -P 0x77 0 1M', extra=('-r',))


@ceph
def test_qcow2_on_rbd():
    """A qcow2 image stored in RBD: the rbd node nested under qcow2 in
    one blockdev-add; qemu-img checks the image through its own driver."""
    c = cluster()
    _seq[0] += 1
    img = 'q%d-%d' % (os.getpid(), _seq[0])
    bt.run(['qemu-img', 'create', '-f', 'qcow2', c.qemu_uri(img), str(32 * MiB)])
    with daemon() as d:
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                   'file': rbd_node(c, img, 'disk-file')})
        with bt.nbd_export(q, 'disk', name='disk', writable=True):
            bt.qemu_io(d.uri(), 'write -P 0x3c 1M 3M', 'write -z 8M 1M', 'flush')
            compare(d.uri(), c.qemu_uri(img), fmt_b='qcow2')
        q.execute('blockdev-del', {'node-name': 'disk'})
    bt.check_image(c.qemu_uri(img))
    bt.qemu_io(c.qemu_uri(img), 'read -P 0x3c 1M 3M', fmt='qcow2')


# --- jobs ---

@ceph
def test_backup_with_bitmap():
    """A full backup of an rbd node to a local qcow2 with a bitmap made
    at the same time, then an incremental one of what changed."""
    c = cluster()
    img = new_image(c, 32 * MiB)
    qemu_io_rbd(c, img, 'write -P 1 0 8M', 'write -P 2 20M 1M')
    with daemon('--blockdev', json.dumps(rbd_node(c, img))) as d:
        q = d.qmp()
        full = d.path('full.qcow2')
        inc = d.path('inc.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', full, str(32 * MiB)])
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'full',
                                   'file': {'driver': 'file', 'filename': full}})
        q.execute('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'r0', 'name': 'b0'}},
            {'type': 'blockdev-backup', 'data': {'job-id': 'bk0', 'device': 'r0',
                                                 'target': 'full', 'sync': 'full'}}]})
        run = bt.run_job(q, 'bk0', auto_dismiss=True)
        bt.assert_eq(run.error, None, 'full backup')
        q.execute('blockdev-del', {'node-name': 'full'})
        compare(full, c.qemu_uri(img), fmt_a='qcow2')
        with bt.nbd_export(q, 'r0', name='disk', writable=True):
            bt.qemu_io(d.uri(), 'write -P 3 4M 64k', 'write -P 4 30M 1M')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', '-b', full, '-F', 'qcow2', inc])
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'inc',
                                   'file': {'driver': 'file', 'filename': inc}})
        q.execute('blockdev-backup', {'job-id': 'bk1', 'device': 'r0', 'target': 'inc',
                                      'sync': 'bitmap', 'bitmap': 'b0',
                                      'bitmap-mode': 'on-success'})
        run = bt.run_job(q, 'bk1', auto_dismiss=True)
        bt.assert_eq(run.error, None, 'incremental backup')
        q.execute('blockdev-del', {'node-name': 'inc'})
        bm = [b for n in q.execute('query-named-block-nodes') if n['node-name'] == 'r0'
              for b in n.get('dirty-bitmaps', [])]
        bt.assert_eq([b['count'] for b in bm], [0], 'bitmap cleared after the backup')
        bt.check_image(inc)
        compare(inc, c.qemu_uri(img), fmt_a='qcow2')
        # Only the changed clusters went into the incremental image.
        m = json.loads(bt.run(['qemu-img', 'map', '--output=json', '-f', 'qcow2',
                               inc]).stdout)
        top = sum(e['length'] for e in m if e['depth'] == 0 and e['data'])
        if top > 4 * MiB:
            raise AssertionError('incremental backup holds %d bytes' % top)


@ceph
def test_mirror_local_into_rbd_with_pivot():
    """A local qcow2 exported over NBD is mirrored into an rbd image under
    a running writer and pivoted to it; the export then serves Ceph."""
    c = cluster()
    img = new_image(c, SIZE)
    with daemon() as d:
        q = d.qmp()
        src = d.path('src.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', src, str(SIZE)])
        bt.qemu_io(src, 'write -P 0x10 0 16M', 'write -P 0x20 50M 3M', fmt='qcow2')
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'src',
                                   'file': {'driver': 'file', 'filename': src}})
        q.execute('blockdev-add', rbd_node(c, img, 'tgt'))
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'src',
                                       'name': 'disk', 'writable': True})
        q.execute('blockdev-mirror', {'job-id': 'm0', 'device': 'src', 'target': 'tgt',
                                      'sync': 'full'})
        q.wait_event('BLOCK_JOB_READY', timeout=120, match={'device': 'm0'})
        bt.qemu_io(d.uri(), 'write -P 0x30 8M 2M', 'write -P 0x40 60M 1M')
        q.execute('block-job-complete', {'device': 'm0'})
        q.wait_event('BLOCK_JOB_COMPLETED', timeout=120, match={'device': 'm0'})
        # After the pivot the export writes straight into Ceph.
        bt.qemu_io(d.uri(), 'write -P 0x50 30M 1M')
        compare(d.uri(), c.qemu_uri(img))
        q.execute('block-export-del', {'id': 'e0'})
        q.wait_event('BLOCK_EXPORT_DELETED')
    qemu_io_rbd(c, img, 'read -P 0x10 0 8M', 'read -P 0x30 8M 2M', 'read -P 0x50 30M 1M',
                'read -P 0x20 50M 3M', 'read -P 0x40 60M 1M')


@ceph
def test_drive_mirror_to_legacy_name():
    """QEMU's legacy rbd:pool/image:conf=...:id=... names where a command
    takes a file name (drive-mirror mode=existing)."""
    c = cluster()
    img = new_image(c, 16 * MiB)
    with daemon() as d:
        q = d.qmp()
        src = d.path('src.raw')
        bt.make_image(src, 16 * MiB)
        bt.qemu_io(src, 'write -P 0x66 1M 3M')
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                   'file': {'driver': 'file', 'filename': src}})
        q.execute('drive-mirror', {'job-id': 'm0', 'device': 'src', 'target': c.qemu_uri(img),
                                   'format': 'raw', 'mode': 'existing', 'sync': 'full'})
        q.wait_event('BLOCK_JOB_READY', timeout=120, match={'device': 'm0'})
        q.execute('block-job-cancel', {'device': 'm0'})
        q.wait_event('BLOCK_JOB_COMPLETED', timeout=60, match={'device': 'm0'})
        compare(src, c.qemu_uri(img))


@ceph
def test_snapshot_sync_onto_rbd_overlay():
    """blockdev-snapshot-sync mode=existing onto a qcow2 overlay kept in
    RBD and named rbd:... (qemu-img formats it there, on the local
    base): guest writes through the export go to the overlay in Ceph, and
    QEMU reads the base's data plus those writes through it."""
    c = cluster()
    _seq[0] += 1
    img = 'ov%d-%d' % (os.getpid(), _seq[0])     # qemu-img creates it
    with daemon() as d:
        base = d.path('base.qcow2')
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, str(16 * MiB)])
        bt.qemu_io(base, 'write -P 0x21 0 4M', fmt='qcow2')
        overlay = c.qemu_uri(img)
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2',
                overlay, str(16 * MiB)])
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                   'file': {'driver': 'file', 'filename': base}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'disk',
                                       'name': 'disk', 'writable': True})
        q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': overlay,
                                             'snapshot-node-name': 'ov', 'format': 'qcow2',
                                             'mode': 'existing'})
        bt.qemu_io(d.uri('disk'), 'write -P 0x42 1M 1M', fmt='raw')
        q.execute('block-export-del', {'id': 'e0'})
        d.stop()
        bt.qemu_io(base, 'read -P 0x21 0 4M', fmt='qcow2')
        bt.qemu_io(overlay, 'read -P 0x21 0 1M', 'read -P 0x42 1M 1M',
                   'read -P 0x21 2M 2M', fmt='qcow2')
        bt.check_image(overlay)


def _mirror_error(q, target):
    """drive-mirror of node 'src' into 'target' (a file name) refused:
    the error's text."""
    return q.error('drive-mirror', {'job-id': 'm1', 'device': 'src', 'target': target,
                                    'format': 'raw', 'mode': 'existing',
                                    'sync': 'full'})['desc']


def _raw_source(d, q, size):
    src = d.path('src.raw')
    bt.make_image(src, size)
    bt.qemu_io(src, 'write -P 0x66 1M 3M')
    q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                               'file': {'driver': 'file', 'filename': src}})
    return src


@ceph
def test_legacy_name_options():
    """A legacy name's keys besides conf and id go to librados, in order
    (QEMU's keyvalue-pairs): a Ceph option opens, a key librados does
    not know fails with QEMU's text; image@snap opens read-only (as a
    backing file) and a read-write open of it is refused."""
    c = cluster()
    img = new_image(c, 16 * MiB)
    qemu_io_rbd(c, img, 'write -P 0x61 0 4M')
    c.rbd('snap', 'create', 'rbd/%s@s1' % img)
    qemu_io_rbd(c, img, 'write -P 0x62 0 1M')
    name = 'rbd:%s/%s:rados_mon_op_timeout=7:conf=%s:id=admin' % (c.pool, img, c.conf)
    snap = ('rbd:%s/%s@s1:rados_mon_op_timeout=7:client_mount_timeout=20:conf=%s'
            % (c.pool, img, c.conf))
    with daemon() as d:
        q = d.qmp()
        src = _raw_source(d, q, 16 * MiB)
        q.execute('drive-mirror', {'job-id': 'm0', 'device': 'src', 'target': name,
                                   'format': 'raw', 'mode': 'existing', 'sync': 'full'})
        q.wait_event('BLOCK_JOB_READY', timeout=120, match={'device': 'm0'})
        q.execute('block-job-cancel', {'device': 'm0'})
        q.wait_event('BLOCK_JOB_COMPLETED', timeout=60, match={'device': 'm0'})
        compare(src, c.qemu_uri(img))
        bt.assert_in('invalid conf option bogus_key: No such file or directory',
                     _mirror_error(q, 'rbd:%s/%s:bogus_key=1:conf=%s' % (c.pool, img, c.conf)),
                     'a key librados refuses')
        bt.assert_in('invalid conf option rados_osd_op_timeout: Invalid argument',
                     _mirror_error(q, 'rbd:%s/%s:conf=%s:rados_osd_op_timeout=soon'
                                   % (c.pool, img, c.conf)),
                     'a value librados refuses')
        bt.assert_in('rbd snapshots are read-only', _mirror_error(q, snap),
                     'a snapshot opened read-write')
        # The snapshot as a backing file: read-only, the data of its time.
        top = d.path('top.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', '-u', '-b', snap, '-F', 'raw', top,
                str(16 * MiB)])
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        nodes = q.execute('query-named-block-nodes')
        rbd_ro = [n['ro'] for n in nodes if n['drv'] == 'rbd']
        bt.assert_eq(rbd_ro, [True], 'the snapshot node read-only')
        with bt.nbd_export(q, 'top', name='top', writable=True):
            bt.qemu_io(d.uri('top'), 'read -P 0x61 0 4M', 'write -P 0x71 0 64k',
                       'read -P 0x71 0 64k')
        q.execute('blockdev-del', {'node-name': 'top'})
    bt.qemu_io(c.qemu_uri(img, snap='s1'), 'read -P 0x61 0 4M', extra=('-r',))


def test_legacy_name_options_reach_librados():
    """No cluster needed: a legacy name's mon_host (':' escaped) and
    client_mount_timeout reach librados, so a monitor nobody answers
    fails the open after those 2 s."""
    name = ('rbd:rbd/x:mon_host=v2\\:127.0.0.1\\:%d:client_mount_timeout=2:'
            'auth_client_required=none:conf=/dev/null' % free_port())
    with daemon() as d:
        q = d.qmp()
        _raw_source(d, q, 16 * MiB)
        err = _mirror_error(q, name)
        bt.assert_in('error connecting: Connection timed out', err, 'unreachable')
        if not bt.is_reference():
            bt.assert_in('timeout 2 s)', err, "the name's client_mount_timeout")
        d.assert_alive()


# --- failures ---

def _patient_conf(d, c):
    """The cluster's conf with an OSD op timeout far past an OSD restart
    (blockd's default is 30 s; librados' own, QSD's, is for ever)."""
    path = d.path('patient.conf')
    shutil.copy(c.conf, path)
    with open(path, 'a') as f:
        f.write('\n[client]\nrados osd op timeout = 600\n')
    return path


def _wait_all(h, what, timeout=300):
    """Drive the handle until nothing is in flight (a deadline for a hang,
    not a speed check)."""
    end = time.monotonic() + timeout
    while h.aio_in_flight() > 0:
        if time.monotonic() > end:
            raise AssertionError('%s: %d requests still in flight after %d s'
                                 % (what, h.aio_in_flight(), timeout))
        h.poll(1000)


@ceph
def test_osd_restart_under_load():
    """The OSD stops while a client has written some data and has more
    writes and a flush in flight through the export: they wait (no
    error, no reply) while QMP answers, then complete once the OSD is
    back; QEMU's driver reads every write in the image."""
    nbd = bt.require_nbd()
    c = cluster()
    img = new_image(c, 16 * MiB)
    qemu_io_rbd(c, img, 'write -P 0x01 0 16M')
    with daemon() as d:
        q = d.qmp()
        q.execute('blockdev-add', rbd_node(c, img, conf=_patient_conf(d, c)))
        with bt.nbd_export(q, 'r0', name='disk', writable=True), \
                bt.nbd_connection(d.uri()) as h:
            chunk = bytearray(b'\x5c' * MiB)
            # Writes 0-3 complete, flushed, while the OSD is up.
            for i in range(4):
                h.pwrite(chunk, 2 * i * MiB)
                h.flush()
            c.stop_osd()
            try:
                cookies = [h.aio_pwrite(nbd.Buffer.from_bytearray(chunk), 2 * i * MiB)
                           for i in range(4, 8)]
                flush = h.aio_flush()
                # QMP answers while they wait (qemu-storage-daemon 7.2's
                # query-named-block-nodes waits for the OSD, on its main loop).
                if not bt.is_reference():
                    names = [n['node-name'] for n in q.execute('query-named-block-nodes')]
                    bt.assert_in('r0', names, 'QMP while the OSD is down')
                bt.assert_eq('qemu' in q.execute('query-version'), True, 'QMP alive')
                # With the OSD stopped the flush cannot end (librbd's
                # cache may acknowledge the writes themselves): the
                # client is mid-flight, neither answered nor failed.
                for _ in range(20):
                    h.poll(100)
                bt.assert_eq(h.aio_command_completed(flush), False,
                             'the flush waits for the OSD')
                bt.assert_eq(h.aio_in_flight() >= 1, True, 'requests in flight')
            finally:
                c.start_osd()
            _wait_all(h, 'after the OSD restart')
            # Each raises nbd.Error if its request failed.
            for cookie in cookies + [flush]:
                bt.assert_eq(h.aio_command_completed(cookie), True, 'request %d' % cookie)
        c.rbd('ls', c.pool)        # the OSD is back
        for i in range(8):
            qemu_io_rbd(c, img, 'read -P 0x5c %dM 1M' % (2 * i),
                        'read -P 0x01 %dM 1M' % (2 * i + 1))
        with bt.nbd_export(q, 'r0', name='disk'):
            compare(d.uri(), c.qemu_uri(img))
        d.assert_alive()


@ceph
def test_missing_pool_and_image():
    c = cluster()
    with daemon() as d:
        q = d.qmp()
        err = q.error('blockdev-add', dict(rbd_node(c, 'x'), pool='nopool'))
        bt.assert_eq(err['desc'], 'error opening pool nopool: No such file or directory',
                     'missing pool')
        err = q.error('blockdev-add', rbd_node(c, 'noimage'))
        bt.assert_eq(err['desc'], 'error reading header from noimage: No such file or directory',
                     'missing image')
        err = q.error('blockdev-add', rbd_node(c, 'x', conf=d.path('nonexistent.conf')))
        bt.assert_in('error reading conf file', err['desc'], 'missing conf file')
        bt.assert_eq(q.execute('query-named-block-nodes'), [], 'nothing left behind')


def _client_conf(d, c, extra=''):
    """A conf file for a client without the cluster's keyring: its
    monitor (a v2 address) and 'extra' lines."""
    path = d.path('client.conf')
    with open(path, 'w') as f:
        f.write('[global]\nmon host = v2:%s\n%s' % (c.mon_addr, extra))
    return path


@ceph
def test_bad_credentials():
    """A wrong key is refused with cephx's reason."""
    c = cluster()
    img = new_image(c, 8 * MiB)
    wrong = 'AQBVU2RaAAAAABAAwNyrdEq6w10TULLaLYyvdw=='
    with daemon('--object', 'secret,id=bad,format=base64,data=%s' % wrong) as d:
        q = d.qmp()
        base = {'driver': 'rbd', 'node-name': 'r0', 'pool': c.pool, 'image': img,
                'conf': _client_conf(d, c, 'client mount timeout = 5\n')}
        err = q.error('blockdev-add', dict(base, **{'key-secret': 'bad'}))
        bt.assert_eq(err['desc'], 'error connecting: Permission denied', 'wrong key')
        err = q.error('blockdev-add', dict(base, **{'key-secret': 'nosuch'}))
        bt.assert_eq(err['desc'], "No secret with id 'nosuch'", 'missing secret object')
        # A bare 'server' address (as QEMU writes mon_host) and a wrong
        # key: librados hunts for a monitor until the mount timeout.
        err = q.error('blockdev-add', dict(base, **{
            'key-secret': 'bad', 'server': [{'host': '127.0.0.1', 'port': str(c.port)}]}))
        bt.assert_in('error connecting: Connection timed out', err['desc'], 'wrong key, server')
        bt.assert_eq(q.execute('query-named-block-nodes'), [], 'nothing left behind')
        d.assert_alive()


def _silent_monitor_conf(d, timeout):
    """A conf file whose monitor is a port nobody answers on."""
    path = d.path('silent.conf')
    with open(path, 'w') as f:
        f.write('[global]\nmon host = v2:127.0.0.1:%d\nauth client required = none\n'
                '%s' % (free_port(), 'client mount timeout = %d\n' % timeout if timeout else ''))
    return path


def test_unreachable_monitor():
    """A monitor that does not answer fails blockdev-add after the
    conf's client_mount_timeout; the daemon and QMP carry on."""
    with daemon() as d:
        q = d.qmp()
        conf = _silent_monitor_conf(d, 3)
        err = q.error('blockdev-add', {'driver': 'rbd', 'node-name': 'r0', 'pool': 'rbd',
                                       'image': 'x', 'conf': conf})
        bt.assert_in('error connecting: Connection timed out', err['desc'], 'unreachable')
        bt.assert_eq(q.execute('query-named-block-nodes'), [], 'nothing left behind')
        d.assert_alive()


def test_replies_stay_in_order():
    """Requests sent behind a blockdev-add that waits for a silent
    monitor are answered after it, in order, with their ids; a client
    that hangs up while one waits leaves the daemon well."""
    with daemon(monitors=2) as d:
        q = d.qmp()
        conf = _silent_monitor_conf(d, 2)
        add = {'execute': 'blockdev-add', 'id': 1,
               'arguments': {'driver': 'rbd', 'node-name': 'r0', 'pool': 'rbd',
                             'image': 'x', 'conf': conf}}
        q.send_raw(json.dumps(add) + json.dumps({'execute': 'query-version', 'id': 2}) +
                   '{"execute": "bogus", "id": 3}\n' + '{]\n')
        r1, r2, r3, r4 = q.reply(), q.reply(), q.reply(), q.reply()
        bt.assert_eq(r1.get('id'), 1, 'first reply: %r' % r1)
        bt.assert_in('error connecting', r1['error']['desc'], 'blockdev-add')
        bt.assert_eq((r2.get('id'), 'return' in r2), (2, True), 'second reply: %r' % r2)
        bt.assert_eq((r3.get('id'), r3['error']['class']), (3, 'CommandNotFound'),
                     'third reply: %r' % r3)
        bt.assert_eq('error' in r4, True, 'a lexical error, last: %r' % r4)
        # Hang up while the command waits; the daemon carries on.
        q2 = d.qmp(monitor=1)
        q2.send(add)
        q2.close()
        bt.assert_eq('qemu' in q.execute('query-version'), True, 'QMP after the hang-up')
        # One more wait for the silent monitor, begun after the orphan's:
        # the orphan's reply has found its session gone by its end.
        err = q.error('blockdev-add', dict(add['arguments'], **{'node-name': 'r1'}))
        bt.assert_in('error connecting', err['desc'], 'second add')
        d.assert_alive()
        bt.assert_eq(q.execute('query-named-block-nodes'), [], 'nothing left behind')


def test_unreachable_monitor_command_line():
    """--blockdev with a monitor nobody answers: the daemon exits with
    the reason after the conf's client_mount_timeout."""
    with bt.Daemon(qmp=False) as d:
        conf = _silent_monitor_conf(d, 2)
        d.args = ['--blockdev', 'driver=rbd,node-name=r0,pool=rbd,image=x,conf=' + conf]
        d.start()
        bt.assert_eq(d.wait_exit(timeout=60), 1, 'exit status')
        bt.assert_in('error connecting: Connection timed out', d.stderr(), 'message')


def _error_while_other_answers(q, other, cmd, args):
    """Send `cmd` on monitor `q` (it must fail after waiting for a silent
    monitor) and check that monitor `other` is answered while it waits.
    The half second is how long the command is given to reach its wait:
    what is checked is an absence (no reply yet), which nothing signals.
    Returns the command's error."""
    result = {}
    t = threading.Thread(target=lambda: result.update(err=q.error(cmd, args)))
    t.start()
    try:
        time.sleep(0.5)
        bt.assert_eq('qemu' in other.execute('query-version'), True, 'query-version')
        bt.assert_eq(t.is_alive(), True, 'another monitor answered while %s connects' % cmd)
    finally:
        t.join(60)
    return result['err']


def test_unreachable_monitor_default_timeout():
    """Without a timeout in the conf, blockd gives up after its own
    default (10 s), not librados' 300 s; other QMP clients are answered
    meanwhile (qemu-storage-daemon 7.2 blocks its main loop for 300 s)."""
    bt.skip_if_reference('waits 300 s for the monitor with its main loop blocked')
    with daemon(monitors=2) as d:
        q = d.qmp()
        other = d.qmp(monitor=1)
        conf = _silent_monitor_conf(d, None)
        err = _error_while_other_answers(q, other, 'blockdev-add', {
            'driver': 'rbd', 'node-name': 'r0', 'pool': 'rbd', 'image': 'x', 'conf': conf})
        bt.assert_in('timeout 10 s)', err['desc'], 'default timeout')
        d.assert_alive()



def test_unreachable_monitor_by_file_name():
    """drive-mirror, drive-backup, blockdev-snapshot-sync and a
    transaction's drive-backup onto an existing image named rbd:...
    whose monitor nobody answers: each
    fails with librados' reason after the name's client_mount_timeout,
    and other QMP clients are answered while it waits (the connection
    is made off the main thread, as for blockdev-add; qemu-storage-daemon
    7.2 blocks its main loop).  A device that does not exist is still
    reported first, as QEMU checks it before it opens the target."""
    bt.skip_if_reference('blocks its main loop while librados connects')
    name = ('rbd:rbd/x:mon_host=v2\\:127.0.0.1\\:%d:client_mount_timeout=3:'
            'auth_client_required=none:conf=/dev/null' % free_port())
    calls = [
        ('drive-mirror', {'job-id': 'm1', 'device': 'src', 'target': name,
                          'format': 'raw', 'mode': 'existing', 'sync': 'full'}),
        ('drive-backup', {'job-id': 'b1', 'device': 'src', 'target': name,
                          'format': 'raw', 'mode': 'existing', 'sync': 'full'}),
        ('blockdev-snapshot-sync', {'node-name': 'src', 'snapshot-file': name,
                                    'snapshot-node-name': 'ov', 'format': 'raw',
                                    'mode': 'existing'}),
        ('transaction', {'actions': [
            {'type': 'drive-backup', 'data': {'job-id': 'b2', 'device': 'src',
                                              'target': name, 'format': 'raw',
                                              'mode': 'existing', 'sync': 'full'}}]}),
    ]
    with daemon(monitors=2) as d:
        q = d.qmp()
        other = d.qmp(monitor=1)
        _raw_source(d, q, 16 * MiB)
        for cmd, args in calls:
            err = _error_while_other_answers(q, other, cmd, args)
            bt.assert_in('error connecting: Connection timed out', err['desc'], cmd)
            bt.assert_in('timeout 3 s)', err['desc'], cmd)
            bad = json.loads(json.dumps(args))
            target = bad['actions'][0]['data'] if cmd == 'transaction' else bad
            target['node-name' if cmd == 'blockdev-snapshot-sync' else 'device'] = 'nope'
            err = q.error(cmd, bad)
            bt.assert_eq(err['class'], 'GenericError', cmd + ' on a missing device')
            bt.assert_in('nope', err['desc'], cmd + ' on a missing device')
        bt.assert_eq([n['node-name'] for n in q.execute('query-named-block-nodes')
                      if not n['node-name'].startswith('#')], ['src'], 'nodes left')
        # Creating the image by name (QEMU would connect and create it):
        # refused at once, with what to do instead.
        err = q.error('drive-mirror', dict(calls[0][1], mode='absolute-paths'))
        bt.assert_in('Creating an rbd: image by file name is not supported', err['desc'],
                     'drive-mirror creating an rbd: image')
        bt.assert_eq(q.execute('query-jobs'), [], 'no job left behind')
        d.assert_alive()


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
