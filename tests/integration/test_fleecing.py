#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Image fleecing as QEMU 7.2 has it: a copy-before-write filter (CBW) above
the source saves the old data of every region a guest overwrites into a
fleecing target, and a 'snapshot-access' node on the filter reads the
point-in-time image: overwritten regions from the target, the rest from
the source.  Scenarios of QEMU's iotests image-fleecing, copy-before-write
and 257 (pull mode), with the guest's I/O and the backup client's reads
going through NBD exports of the daemon (qemu-io, qemu-img, nbdinfo,
libnbd), every result compared with data a real client read back.

What qemu-storage-daemon 7.2 does, and the texts it gives, are the expected
values here (captured by running it):
  - reads of a region snapshot-access may not give (outside the CBW bitmap,
    discarded, or after the snapshot broke) fail with EACCES, which QEMU's
    NBD server sends as NBD_EINVAL: qemu-io prints
    'read failed: Invalid argument';
  - snapshot-access refuses writes and write-zeroes with ENOTSUP; a writable
    export of it is accepted (it is how a client discards);
  - the CBW's cluster size is max(64 KiB, the target's cluster size).
Tests marked blockd-only are skipped with BLOCKD_REFERENCE=1: there
qemu-storage-daemon 7.2 aborts or misbehaves, and blockd must do better."""

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
SIZE = 64 * MiB
CLUSTER = 64 * KiB

# The source image's data before fleecing starts (image-fleecing's four
# patterns, and 0x5a over two clusters for the guest's zero and discard
# requests).
PATTERNS = [('0x5d', 0, 64 * KiB),
            ('0xd5', 1 * MiB, 64 * KiB),
            ('0x5a', 16 * MiB, 128 * KiB),
            ('0xdc', 32 * MiB, 64 * KiB),
            ('0xcd', 0x3ff0000, 64 * KiB)]      # 64M - 64K

# What the guest does while the snapshot is exported.
OVERWRITE = [('0xab', 0, 64 * KiB),             # full overwrite
             ('0xad', 0x00f8000, 64 * KiB),     # partial-left (1M - 32K)
             ('0x1d', 0x2008000, 64 * KiB),     # partial-right (32M + 32K)
             ('0xea', 0x3fe0000, 64 * KiB)]     # adjacent-left (64M - 128K)
GUEST_ZERO = (16 * MiB, 64 * KiB)               # write-zeroes over data
GUEST_DISCARD = (16 * MiB + 64 * KiB, 64 * KiB)  # discard over data
GUEST_NEW = ('0x99', 48 * MiB, 4 * KiB)         # data where there was none

# Zeroes the snapshot must keep showing (image-fleecing's 'zeroes').
SNAP_ZEROES = [(0x00f8000, 32 * KiB), (0x2010000, 32 * KiB), (0x3fe0000, 64 * KiB),
               (48 * MiB, 64 * KiB)]
# Old data the guest did not overwrite (image-fleecing's 'remainder').
REMAINDER = [('0xd5', 0x108000, 32 * KiB), ('0xdc', 32 * MiB, 32 * KiB),
             ('0xcd', 0x3ff0000, 64 * KiB)]

# qemu-io's lines for the failures qemu-storage-daemon 7.2 gives (EACCES
# and every errno without an NBD value become NBD_EINVAL).
READ_EINVAL = 'read failed: Invalid argument'
READ_ENOTSUP = 'read failed: Operation not supported'
WRITE_ENOTSUP = 'write failed: Operation not supported'
WRITE_EIO = 'write failed: Input/output error'
# nbdinfo's line when a block-status request fails with NBD_EINVAL.
BLOCK_STATUS_EINVAL = 'block-status: command failed: Invalid argument'


def cmd(p):
    """A qemu-io command of a (pattern, offset, length) triple."""
    return 'write -P%s %d %d' % p


def rd(p):
    return 'read -P%s %d %d' % p


def rd0(offset, length):
    return 'read -P0 %d %d' % (offset, length)


def clusters(offset, length, cluster=CLUSTER):
    return set(range(offset // cluster, (offset + length - 1) // cluster + 1))


def io_file(path, *cmds, fmt='qcow2'):
    """qemu-io on an image file the daemon does not hold."""
    return bt.qemu_io(path, *cmds, fmt=fmt)


def check_image(path, allow_leaks=False):
    """qemu-img check: no corruption and no leaked cluster (QSD 7.2 leaks
    none, not even in a target whose write was made to fail); leaks
    (exit 3) only where asked, for a target whose copy was abandoned."""
    p = bt.run(['qemu-img', 'check', path], check=False)
    if p.returncode not in ((0, 3) if allow_leaks else (0,)):
        raise AssertionError('qemu-img check %s: exit %d\n%s%s'
                             % (path, p.returncode, p.stdout, p.stderr))


def compare(a, b, fmt_a='raw', fmt_b='qcow2', same=True):
    """qemu-img compare of two images (an NBD URI is 'raw')."""
    p = bt.run(['qemu-img', 'compare', '-f', fmt_a, '-F', fmt_b, a, b], check=False)
    bt.assert_eq(p.returncode, 0 if same else 1,
                 'qemu-img compare %s %s (%s%s)' % (a, b, p.stdout, p.stderr))


def io_fails(uri, command, message, readonly=True):
    """A qemu-io request over NBD that must fail with exactly `message`."""
    p = bt.qemu_io(uri, command, check=False, extra=['-r'] if readonly else [])
    if p.returncode != 1 or p.stdout.strip() != message:
        raise AssertionError('qemu-io %r on %s: expected %r, got rc %d stdout %r stderr %r'
                             % (command, uri, message, p.returncode, p.stdout, p.stderr))


def map_of(uri, context='base:allocation'):
    """nbdinfo --map as [(offset, length, type)]."""
    out = bt.run(['nbdinfo', '--json', '--map=' + context, uri]).stdout
    return [(e['offset'], e['length'], e['type']) for e in json.loads(out)]


def cluster_types(extents):
    """{cluster index: set of the extent types inside it}.  A server may
    split a cluster (a raw target's holes are finer than 64K), so a
    cluster can hold several types."""
    res = {}
    for off, length, typ in extents:
        for c in range(off // CLUSTER, (off + length + CLUSTER - 1) // CLUSTER):
            res.setdefault(c, set()).add(typ)
    return res


class Env:
    """A daemon with an NBD server and 'source', a qcow2 image of SIZE with
    PATTERNS written before the daemon started.  self.pit is a copy of the
    source as it was then (the point-in-time reference)."""

    def __init__(self, patterns=PATTERNS, source_opts=None):
        self.d = bt.Daemon()
        try:
            self.src = self.d.path('source.qcow2')
            bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', self.src, str(SIZE)])
            if patterns:
                io_file(self.src, *[cmd(p) for p in patterns])
            self.pit = self.d.path('pit.qcow2')
            shutil.copyfile(self.src, self.pit)
            self.d.start()
            self.q = self.d.qmp()
            opts = {'driver': 'qcow2', 'node-name': 'source',
                    'file': {'driver': 'file', 'filename': self.src}}
            opts.update(source_opts or {})
            self.q.execute('blockdev-add', opts)
            self.q.execute('nbd-server-start',
                           {'addr': {'type': 'unix', 'data': {'path': self.d.nbd_sock}}})
        except BaseException:
            self.d.cleanup()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.d.__exit__(*exc)

    def uri(self, name):
        return self.d.uri(name)

    def add_target(self, kind='raw', size=SIZE, node='temp', **opts):
        """The fleecing target: 'raw', 'qcow2' (no backing) or 'overlay'
        (qcow2 whose backing is the source node).  Returns its path."""
        fmt = 'raw' if kind == 'raw' else 'qcow2'
        path = self.d.path('%s.%s' % (node, fmt))
        bt.run(['qemu-img', 'create', '-q', '-f', fmt, path, str(size)])
        args = {'driver': fmt, 'node-name': node,
                'file': {'driver': 'file', 'filename': path}}
        if kind == 'overlay':
            args['backing'] = 'source'
        args.update(opts)
        self.q.execute('blockdev-add', args)
        return path

    def add_cbw(self, node='cbw', target='temp', **opts):
        args = {'driver': 'copy-before-write', 'node-name': node,
                'file': 'source', 'target': target}
        args.update({k.replace('_', '-'): v for k, v in opts.items()})
        self.q.execute('blockdev-add', args)

    def add_access(self, node='acc', file='cbw', **opts):
        args = {'driver': 'snapshot-access', 'node-name': node, 'file': file}
        args.update(opts)
        self.q.execute('blockdev-add', args)

    def export(self, node, name, writable=False, **extra):
        args = {'type': 'nbd', 'id': 'exp-' + name, 'node-name': node, 'name': name,
                'writable': writable}
        args.update(extra)
        self.q.execute('block-export-add', args)

    def unexport(self, name):
        bt.del_export(self.q, 'exp-' + name)

    def fleece(self, target='raw', **cbw_opts):
        """The fleecing graph of image-fleecing: target, CBW over the
        source, snapshot-access 'acc' on the CBW; 'fleece' exports acc
        read-only and 'guest' the CBW node writable.  Returns the
        target's path."""
        path = self.add_target(target)
        self.add_cbw(**cbw_opts)
        self.add_access()
        self.export('acc', 'fleece')
        self.export('cbw', 'guest', writable=True)
        return path

    def read_snapshot(self, *cmds, name='fleece'):
        bt.qemu_io(self.uri(name), *cmds, extra=['-r'])

    def node(self, name):
        for n in self.q.execute('query-named-block-nodes'):
            if n['node-name'] == name:
                return n
        raise AssertionError('node %s not found' % name)


# --- 1. image-fleecing ---

def image_fleecing(target):
    """image-fleecing's sequence with a snapshot-access node: the snapshot
    keeps the old data while the guest overwrites, zeroes and discards
    through the CBW filter; torn down in QEMU's order."""
    bt.require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    # discard=unmap on the CBW and the source: a guest discard reaches the
    # source (and frees its clusters) only when every node passes it on.
    with Env(source_opts={'discard': 'unmap'}) as env:
        tpath = env.fleece(target, discard='unmap')
        fleece, guest = env.uri('fleece'), env.uri('guest')
        if target == 'overlay':
            # image-fleecing's 'cbw-filter based fleecing': the overlay
            # itself is a view of the point in time too.
            env.export('temp', 'overlay')

        # Sanity check: the snapshot is the source.
        env.read_snapshot(*[rd(p) for p in PATTERNS] + [rd0(*z) for z in SNAP_ZEROES])
        before = cluster_types(map_of(fleece))
        data = set().union(*[clusters(p[1], p[2]) for p in PATTERNS])
        bt.assert_eq(sorted(c for c, t in before.items() if t == {0}), sorted(data),
                     'data clusters of the snapshot before the guest writes')
        bt.assert_eq(set().union(*[t for c, t in before.items() if c not in data]), {3},
                     'the other clusters are holes reading as zeroes')

        # The guest writes through the CBW filter.
        guest_cmds = [cmd(p) for p in OVERWRITE] + [
            'write -z %d %d' % GUEST_ZERO, 'discard %d %d' % GUEST_DISCARD, cmd(GUEST_NEW)]
        bt.qemu_io(guest, *guest_cmds)
        # The same requests applied to a copy of the point-in-time image
        # give what the guest must see (a discarded qcow2 cluster without
        # backing reads as zeroes).
        expected = env.d.path('expected.qcow2')
        shutil.copyfile(env.pit, expected)
        io_file(expected, *[c.replace('discard', 'write -z') for c in guest_cmds])

        # The snapshot still shows the old data, the guest the new.
        env.read_snapshot(*[rd(p) for p in PATTERNS] + [rd0(*z) for z in SNAP_ZEROES])
        compare(fleece, env.pit)
        if target == 'overlay':
            env.read_snapshot(*[rd(p) for p in PATTERNS], name='overlay')
            compare(env.uri('overlay'), env.pit)
        bt.qemu_io(guest, *[rd(p) for p in OVERWRITE + REMAINDER] +
                   [rd0(16 * MiB, 128 * KiB), rd(GUEST_NEW)])
        compare(guest, expected)

        # Block status through snapshot-access: untouched clusters are the
        # source's; clusters copied to the target with data in them are
        # data.  (The clusters the guest zeroed or discarded are data too,
        # but qemu-storage-daemon 7.2 reports them as holes reading as
        # zeroes: test_block_status_of_zeroed_clusters, blockd-only.)
        copied = set()
        for off, length in [p[1:] for p in OVERWRITE] + [GUEST_ZERO, GUEST_DISCARD,
                                                         GUEST_NEW[1:]]:
            copied |= clusters(off, length)
        zeroed = clusters(*GUEST_ZERO) | clusters(*GUEST_DISCARD)
        after = cluster_types(map_of(fleece))
        for c in sorted(after):
            if c not in copied:
                bt.assert_eq(after[c], before[c], 'block status of untouched cluster %d' % c)
            elif c in data and c not in zeroed:
                bt.assert_eq(after[c], {0}, 'block status of copied data cluster %d' % c)

        # Tear down in image-fleecing's order: the export of the
        # snapshot, the snapshot-access node, the guest off the filter,
        # the filter, the target.
        if target == 'overlay':
            env.unexport('overlay')
        env.unexport('fleece')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.unexport('guest')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        # The source carries the guest's writes.
        env.export('source', 'after')
        bt.qemu_io(env.uri('after'), *[rd(p) for p in OVERWRITE + REMAINDER], extra=['-r'])
        compare(env.uri('after'), expected)
        env.unexport('after')
        env.q.execute('nbd-server-stop')
        env.d.stop()

        # Confirming writes (offline), and the images are sound.
        io_file(env.src, *[rd(p) for p in OVERWRITE + REMAINDER] + [rd(GUEST_NEW)])
        compare(env.src, expected, 'qcow2')
        check_image(env.src)
        fmt = 'raw' if target == 'raw' else 'qcow2'
        if fmt == 'qcow2':
            check_image(tpath)
        # The target holds the old data of the copied clusters only: the
        # 0xcd cluster at 64M-64K was never overwritten, so never copied.
        io_file(tpath, 'read -P0x5d 0 64k', 'read -P0xd5 1M 64k', 'read -P0xdc 32M 64k',
                'read -P0x5a 16M 128k', 'read -P0 0x3ff0000 64k', fmt=fmt)


def test_image_fleecing_raw_target():
    image_fleecing('raw')


def test_image_fleecing_qcow2_target():
    image_fleecing('qcow2')


def test_image_fleecing_overlay_target():
    image_fleecing('overlay')


# --- 2. the CBW bitmap ---

DIRTY_WRITES = [('0x11', 1 * MiB, 64 * KiB),      # overwrites 0xd5
                ('0x22', 0x2008000, 4 * KiB),     # inside the 32M cluster
                ('0x33', 40 * MiB, 128 * KiB)]    # where there was nothing


def _dirty_env(env):
    """Record DIRTY_WRITES in a bitmap 'b0' of the source (granularity
    64K), written through an NBD export of the source; returns the
    point-in-time image after them."""
    env.q.execute('block-dirty-bitmap-add', {'node': 'source', 'name': 'b0',
                                             'granularity': CLUSTER})
    env.export('source', 'src', writable=True)
    bt.qemu_io(env.uri('src'), *[cmd(p) for p in DIRTY_WRITES])
    env.unexport('src')
    env.q.execute('block-dirty-bitmap-disable', {'node': 'source', 'name': 'b0'})
    pit = env.d.path('pit1.qcow2')
    shutil.copyfile(env.pit, pit)
    io_file(pit, *[cmd(p) for p in DIRTY_WRITES])
    return pit


def test_cbw_bitmap():
    """With a bitmap, the CBW copies only the bitmap's clusters and the
    snapshot reads only them; everything else fails as EACCES
    (NBD_EINVAL).  The export shows the bitmap as qemu:dirty-bitmap:b0."""
    bt.require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    bt.require_nbd()
    with Env() as env:
        pit = _dirty_env(env)
        tpath = env.add_target('raw')
        env.add_cbw(bitmap={'node': 'source', 'name': 'b0'})
        env.add_access()
        # A plain name is looked up from the exported node down its
        # filtered/backing chain; snapshot-access's 'file' is neither.
        err = env.q.error('block-export-add', {'type': 'nbd', 'id': 'x', 'node-name': 'acc',
                                               'name': 'x', 'bitmaps': ['b0']})
        bt.assert_eq(err['desc'], "Bitmap 'b0' is not found", 'plain bitmap name on acc')
        env.export('acc', 'fleece', bitmaps=[{'node': 'source', 'name': 'b0'}])
        env.export('cbw', 'guest', writable=True)
        fleece = env.uri('fleece')

        info = bt.run(['nbdinfo', '--no-content', fleece]).stdout
        bt.assert_in('qemu:dirty-bitmap:b0', info, 'contexts of the snapshot export')
        bt.assert_eq(map_of(fleece, 'qemu:dirty-bitmap:b0'),
                     [(0, 1 * MiB, 0), (1 * MiB, 64 * KiB, 1),
                      (1 * MiB + 64 * KiB, 31 * MiB - 64 * KiB, 0), (32 * MiB, 64 * KiB, 1),
                      (32 * MiB + 64 * KiB, 8 * MiB - 64 * KiB, 0), (40 * MiB, 128 * KiB, 1),
                      (40 * MiB + 128 * KiB, 24 * MiB - 128 * KiB, 0)],
                     'dirty extents seen through the snapshot export')

        # The guest overwrites dirty and clean clusters.
        bt.qemu_io(env.uri('guest'), 'write -P0x44 1M 64k', 'write -P0x55 0 64k',
                   'write -P0x66 0x2010000 64k', 'write -P0x77 40M 4k')

        # Dirty clusters: the point in time, whole clusters.
        env.read_snapshot(*[rd(p) for p in DIRTY_WRITES] +
                          ['read -P0xdc 32M 32k', 'read -P0xdc 0x2009000 28k'])
        # Clean clusters, and requests straddling a dirty and a clean one.
        for r in ('read 0 64k', 'read 0 512', 'read 0x2010000 4k', 'read 0x200f000 8k',
                  'read 1M 128k', 'read 0x3ff0000 64k'):
            io_fails(fleece, r, READ_EINVAL)
        with bt.nbd_connection(fleece) as h:
            bt.assert_eq(bt.nbd_errno(h.pread, 4096, 0), errno.EINVAL, 'libnbd read of a clean cluster')
            bt.assert_eq(h.pread(4096, 40 * MiB), b'\x33' * 4096, 'libnbd read of a dirty cluster')
        # base:allocation of a clean region fails the same way.
        p = bt.run(['nbdinfo', '--map', fleece], check=False)
        bt.assert_eq(p.returncode, 1, 'nbdinfo --map over a clean region')
        bt.assert_in(BLOCK_STATUS_EINVAL, p.stderr, 'nbdinfo --map over a clean region')

        # Each dirty extent, read by a client that follows the bitmap,
        # equals the point-in-time image.
        with bt.nbd_connection(fleece, meta_contexts=['qemu:dirty-bitmap:b0']) as h:
            for off, length in _dirty_extents(h, 'qemu:dirty-bitmap:b0'):
                got = h.pread(length, off)
                want = bt.run(['qemu-io', '-f', 'qcow2', '-c',
                               'read -v %d %d' % (off, length), pit]).stdout
                bt.assert_eq(_hexdump_bytes(want, length), got, 'dirty extent %d+%d' % (off, length))

        env.unexport('fleece')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.unexport('guest')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        # The export of the bitmap ended; the bitmap is free again.
        b0 = [b for b in env.node('source')['dirty-bitmaps'] if b.get('name') == 'b0'][0]
        bt.assert_eq((b0['busy'], b0['recording'], b0['count']), (False, False, 256 * KiB),
                     'b0 after fleecing')
        env.d.stop()
        check_image(env.src)
        # Only the bitmap's clusters were copied: the guest's writes to
        # the clean clusters 0 and 32M+64K left the target empty there.
        io_file(tpath, 'read -P0x11 1M 64k', 'read -P0x33 40M 64k', 'read -P0 0 64k',
                'read -P0 0x2010000 64k', fmt='raw')
        io_file(env.src, 'read -P0x44 1M 64k', 'read -P0x55 0 64k', 'read -P0x66 0x2010000 64k',
                'read -P0x77 40M 4k', 'read -P0x33 0x2801000 124k')


def _hexdump_bytes(out, length):
    """The bytes of qemu-io's 'read -v' hex dump."""
    res = bytearray()
    for line in out.splitlines():
        if ':' not in line or not line[:8].strip().isalnum():
            continue
        hexpart = line.split(':', 1)[1][:49]
        res += bytes(int(x, 16) for x in hexpart.split())
    if len(res) != length:
        raise AssertionError('hex dump of %d bytes, expected %d' % (len(res), length))
    return bytes(res)


def _dirty_extents(h, ctx):
    """The dirty (offset, length) extents of metadata context `ctx`,
    asked from the server in pieces, as a pull-mode backup client does."""
    size = h.get_size()
    extents = []
    pos = 0
    while pos < size:
        got = []

        def cb(meta, off, entries, err):
            if meta == ctx:
                got.extend(zip(entries[0::2], entries[1::2]))
            return 0
        h.block_status(min(size - pos, 16 * MiB), pos, cb)
        if not got:
            raise AssertionError('no extents for %s at %d' % (ctx, pos))
        for length, flags in got:
            length = min(length, size - pos)
            if flags & 1:
                if extents and extents[-1][0] + extents[-1][1] == pos:
                    extents[-1] = (extents[-1][0], extents[-1][1] + length)
                else:
                    extents.append((pos, length))
            pos += length
    return extents


# --- 3. pull-mode incremental backup ---

GROUP1 = [('0x49', 0x0000000, 64 * KiB), ('0x6c', 0x0100000, 64 * KiB),
          ('0x6f', 0x2000000, 64 * KiB), ('0x76', 0x3ff0000, 64 * KiB),
          ('0x65', 0x00f8000, 64 * KiB), ('0x77', 0x2008000, 64 * KiB),
          ('0x69', 0x3fe0000, 64 * KiB), ('0x71', 0x1234000, 200 * KiB)]


def _group2():
    """The guest's writes during the pull: over dirty and clean clusters,
    many small ones, so that some land before and some after the backup
    client reads their region."""
    w = []
    for i in range(96):
        off = (i * 0x2a5000 + (i % 7) * 0x3000) % (SIZE - 64 * KiB)
        w.append(('0x%02x' % (0x80 + i), off, (4 + (i % 5) * 12) * KiB))
    # Exactly over GROUP1's extents too.
    w += [('0xf1', 0x0000000, 16 * KiB), ('0xf2', 0x0100000 + 8 * KiB, 16 * KiB),
          ('0xf3', 0x2010000, 64 * KiB), ('0xf4', 0x1240000, 64 * KiB)]
    return w


def test_pull_incremental():
    """257's pull mode: the full backup is the source at the start; a
    bitmap records the guest's writes (GROUP1); at the point in time the
    bitmap is frozen and a new one started, a CBW with the bitmap and a
    snapshot-access node are exported, and a libnbd client pulls only the
    dirty extents into an overlay of the full backup while the guest
    keeps writing (GROUP2) through the filter.  The incremental backup,
    rebased on the full one, equals the point-in-time image."""
    bt.require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    bt.require_nbd()
    with Env() as env:
        full = env.pit                       # the full backup: the source at start
        pit = env.d.path('pit-inc.qcow2')    # the point in time of the incremental
        shutil.copyfile(full, pit)
        io_file(pit, *[cmd(p) for p in GROUP1])
        after = env.d.path('after.qcow2')    # the source once the guest is done
        shutil.copyfile(pit, after)
        group2 = _group2()
        io_file(after, *[cmd(p) for p in group2])

        env.q.execute('block-dirty-bitmap-add', {'node': 'source', 'name': 'b0',
                                                 'granularity': CLUSTER})
        env.export('source', 'guest0', writable=True)
        bt.qemu_io(env.uri('guest0'), *[cmd(p) for p in GROUP1])
        # The point in time: the guest pauses (its export goes), b0 is
        # frozen and b1 records from here on.
        env.unexport('guest0')
        env.q.execute('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-disable', 'data': {'node': 'source', 'name': 'b0'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'source', 'name': 'b1',
                                                        'granularity': CLUSTER}}]})
        env.add_target('raw')
        env.add_cbw(bitmap={'node': 'source', 'name': 'b0'})
        env.add_access()
        env.export('acc', 'fleece', bitmaps=[{'node': 'source', 'name': 'b0'}])
        env.export('cbw', 'guest', writable=True)
        # The incremental backup: an overlay of the full backup, written
        # through an export of the daemon.
        inc = env.d.path('inc.qcow2')
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', full, '-F', 'qcow2', inc])
        env.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'inc',
                                       'file': {'driver': 'file', 'filename': inc}})
        env.export('inc', 'inc', writable=True)

        want_dirty = set()
        for p in GROUP1:
            want_dirty |= clusters(p[1], p[2])
        writer = subprocess.Popen(
            ['qemu-io', '-f', 'raw'] + sum([['-c', cmd(p)] for p in group2], []) +
            [env.uri('guest')], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with bt.nbd_connection(env.uri('fleece'), ['qemu:dirty-bitmap:b0']) as src, \
                    bt.nbd_connection(env.uri('inc')) as dst:
                extents = _dirty_extents(src, 'qemu:dirty-bitmap:b0')
                got_dirty = set()
                for off, length in extents:
                    got_dirty |= clusters(off, length)
                bt.assert_eq(sorted(got_dirty), sorted(want_dirty), 'dirty clusters pulled')
                half = len(extents) // 2
                # The first half concurrently with the guest's writes ...
                for off, length in extents[:half]:
                    dst.pwrite(src.pread(length, off), off)
                out, err = writer.communicate(timeout=60)
                bt.assert_eq(writer.returncode, 0, 'guest writes (%s %s)' % (out[-500:], err))
                bt.assert_eq(out.count('wrote '), len(group2), 'guest writes done')
                # ... the rest after they all landed: the CBW's copies.
                for off, length in extents[half:]:
                    dst.pwrite(src.pread(length, off), off)
                dst.flush()
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()

        # b1 recorded the guest's writes during the backup.
        b1 = [b for b in env.node('source')['dirty-bitmaps'] if b.get('name') == 'b1'][0]
        want_b1 = set()
        for p in group2:
            want_b1 |= clusters(p[1], p[2])
        bt.assert_eq(b1['count'], len(want_b1) * CLUSTER, 'clusters recorded in b1')

        env.unexport('inc')
        env.q.execute('blockdev-del', {'node-name': 'inc'})
        env.unexport('fleece')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.unexport('guest')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        env.d.stop()
        for img in (inc, env.src):
            check_image(img)
        # The incremental backup over the full one is the point in time;
        # the source went on to the guest's later writes.
        compare(inc, pit, 'qcow2')
        compare(env.src, after, 'qcow2')
        compare(inc, env.src, 'qcow2', same=False)
        # The overlay holds the dirty clusters only.
        out = bt.run(['qemu-img', 'map', '--output=json', inc]).stdout
        own = set()
        for e in json.loads(out):
            if e['depth'] == 0 and e['data']:
                own |= clusters(e['start'], e['length'])
        bt.assert_eq(sorted(own), sorted(want_dirty), 'clusters allocated in the incremental')


# --- 4. on-cbw-error ---

def cbw_error(mode):
    """copy-before-write's iotest: the target (qcow2 over blkdebug) fails
    its first data write with EIO."""
    bt.require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    with Env() as env:
        tpath = env.d.path('temp.qcow2')
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', tpath, str(SIZE)])
        env.q.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'temp',
            'file': {'driver': 'blkdebug',
                     'image': {'driver': 'file', 'filename': tpath},
                     'inject-error': [{'event': 'write_aio', 'errno': 5,
                                       'immediately': False, 'once': True}]}})
        opts = {'on_cbw_error': mode} if mode else {}
        env.add_cbw(**opts)
        env.add_access()
        env.export('acc', 'fleece')
        env.export('cbw', 'guest', writable=True)
        fleece, guest = env.uri('fleece'), env.uri('guest')

        if mode == 'break-snapshot':
            # The guest write succeeds; the snapshot is broken for good,
            # everywhere, and later guest writes copy nothing.
            bt.qemu_io(guest, 'write -P0xab 0 64k')
            bt.qemu_io(guest, 'write -P0xac 1M 64k')
            bt.qemu_io(guest, 'read -P0xab 0 64k', 'read -P0xac 1M 64k', 'read -P0xdc 32M 64k')
            for r in ('read -P0x5d 0 64k', 'read -P0xd5 1M 64k', 'read -P0xdc 32M 64k',
                      'read 48M 4k'):
                io_fails(fleece, r, READ_EINVAL)
            p = bt.run(['nbdinfo', '--map', fleece], check=False)
            bt.assert_eq(p.returncode, 1, 'nbdinfo --map of a broken snapshot')
            bt.assert_in(BLOCK_STATUS_EINVAL, p.stderr, 'nbdinfo --map of a broken snapshot')
        else:
            # The guest write fails and changes nothing; the snapshot
            # still works, and the next copy (once: True) succeeds.
            io_fails(guest, 'write -P0xab 0 64k', WRITE_EIO, readonly=False)
            bt.qemu_io(guest, 'read -P0x5d 0 64k')
            bt.qemu_io(guest, 'write -P0xac 1M 64k')
            bt.qemu_io(guest, 'read -P0xac 1M 64k')
            env.read_snapshot('read -P0x5d 0 64k', 'read -P0xd5 1M 64k', 'read -P0xdc 32M 64k')
            compare(fleece, env.pit)
        env.unexport('fleece')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.unexport('guest')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        env.d.stop()
        check_image(env.src)
        check_image(tpath)
        if mode == 'break-snapshot':
            io_file(env.src, 'read -P0xab 0 64k', 'read -P0xac 1M 64k')
            # Nothing was copied after the failure.
            io_file(tpath, 'read -P0 1M 64k')
        else:
            io_file(env.src, 'read -P0x5d 0 64k', 'read -P0xac 1M 64k')
            io_file(tpath, 'read -P0xd5 1M 64k')


def test_on_cbw_error_default():
    """No on-cbw-error: break-guest-write."""
    cbw_error(None)


def test_on_cbw_error_break_guest_write():
    cbw_error('break-guest-write')


def test_on_cbw_error_break_snapshot():
    cbw_error('break-snapshot')


# --- 5. cbw-timeout ---

@contextlib.contextmanager
def _timeout_env():
    """A CBW whose target is behind a throttle filter writing 4 KiB/s,
    with cbw-timeout=1 and on-cbw-error=break-snapshot; the source has
    0x5d over its first MiB."""
    with Env(patterns=[('0x5d', 0, 1 * MiB)]) as env:
        tpath = env.d.path('temp.qcow2')
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', tpath, str(SIZE)])
        env.q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg0',
                                     'limits': {'bps-write': 4096}})
        env.q.execute('blockdev-add', {
            'driver': 'throttle', 'node-name': 'temp', 'throttle-group': 'tg0',
            'file': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': tpath}}})
        env.add_cbw(on_cbw_error='break-snapshot', cbw_timeout=1)
        env.add_access()
        env.export('acc', 'fleece')
        env.export('cbw', 'guest', writable=True)
        env.read_snapshot('read -P0x5d 0 1M')
        yield env


def _timed(uri, command):
    t0 = time.monotonic()
    bt.qemu_io(uri, command)
    return time.monotonic() - t0


def _timed_out_write(env):
    """Two guest writes of 512K, as in copy-before-write's iotest: the
    copy of the first may pass the throttle at once (QSD 7.2 lets a first
    request through and makes the next wait for the 512K it let pass),
    the copy of the second cannot finish and its write completes when the
    1 s timeout broke the snapshot; later writes copy nothing."""
    guest = env.uri('guest')
    took = [_timed(guest, 'write -P0xab 0 512k'), _timed(guest, 'write -P0xac 512k 512k')]
    if max(took) < 0.5 or max(took) > 4.0 or sum(took) > 6.0:
        raise AssertionError('guest writes behind a 1 s cbw-timeout took %.2f s and %.2f s'
                             % tuple(took))
    took = _timed(guest, 'write -P0xad 2M 64k')
    if took > 2.0:
        raise AssertionError('guest write after the snapshot broke took %.2f s' % took)
    bt.qemu_io(guest, 'read -P0xab 0 512k', 'read -P0xac 512k 512k', 'read -P0xad 2M 64k')
    io_fails(env.uri('fleece'), 'read 0 1M', READ_EINVAL)
    io_fails(env.uri('fleece'), 'read 32M 4k', READ_EINVAL)


def test_cbw_timeout_values():
    """cbw-timeout is a uint32: 0 and 4294967295 are accepted."""
    with Env() as env:
        env.add_target('raw')
        for v in (0, 4294967295):
            env.add_cbw(cbw_timeout=v)
            env.q.execute('blockdev-del', {'node-name': 'cbw'})


def test_cbw_timeout_breaks_snapshot():
    """copy-before-write's iotest (timeout, break-snapshot): the guest's
    write completes after about a second, the snapshot is broken, and QMP
    keeps answering.  (blockd then stops on SIGTERM within 15 s.)"""
    bt.require_tool('qemu-img', 'qemu-io')
    with _timeout_env() as env:
        _timed_out_write(env)
        t0 = time.monotonic()
        names = [n['node-name'] for n in env.q.execute('query-named-block-nodes')]
        bt.assert_in('acc', names, 'query-named-block-nodes')
        if time.monotonic() - t0 > 2.0:
            raise AssertionError('query-named-block-nodes took %.2f s' % (time.monotonic() - t0))
        if bt.is_reference():
            # qemu-storage-daemon 7.2 holds quit and SIGTERM until the
            # timed-out copy finishes in the background (about 110 s at
            # 4 KiB/s): test_cbw_timeout_quit is blockd's test of that.
            env.d.proc.kill()
            env.d.proc.wait()


def test_cbw_timeout_quit():
    """blockd-only: QSD 7.2 freezes quit until the timed-out copy ends.
    After a copy timed out, quit is answered and the daemon exits within
    a few seconds, leaving sound images with the guest's data."""
    bt.skip_if_reference('QSD 7.2 freezes quit until the timed-out copy finishes (~110 s)')
    bt.require_tool('qemu-img', 'qemu-io')
    with _timeout_env() as env:
        _timed_out_write(env)
        env.q.execute('query-named-block-nodes')
        t0 = time.monotonic()
        bt.assert_eq(env.q.cmd('quit'), {'return': {}}, 'quit')
        env.d.wait_exit(10.0)
        took = time.monotonic() - t0
        if took > 10.0:
            raise AssertionError('quit took %.2f s' % took)
        check_image(env.src)
        # The copy that timed out may have been abandoned mid-way.
        check_image(env.d.path('temp.qcow2'), allow_leaks=True)
        io_file(env.src, 'read -P0xab 0 512k', 'read -P0xac 512k 512k', 'read -P0xad 2M 64k')


def cbw_cluster_size(cluster_size, copied):
    """The CBW copies whole clusters of max(64K, the target's cluster
    size): a 4K guest write at 72K copies 64K..128K, or 0..128K when the
    target has 128K clusters."""
    bt.require_tool('qemu-img', 'qemu-io')
    with Env(patterns=[('0x5d', 0, 64 * KiB), ('0x5e', 64 * KiB, 64 * KiB),
                       ('0x5f', 128 * KiB, 64 * KiB)]) as env:
        tpath = env.d.path('temp.qcow2')
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
                'cluster_size=%d' % cluster_size, tpath, str(SIZE)])
        env.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'temp',
                                       'file': {'driver': 'file', 'filename': tpath}})
        env.add_cbw()
        env.add_access()
        env.export('acc', 'fleece')
        env.export('cbw', 'guest', writable=True)
        bt.qemu_io(env.uri('guest'), 'write -P0xab 72k 4k')
        env.read_snapshot('read -P0x5d 0 64k', 'read -P0x5e 64k 64k', 'read -P0x5f 128k 64k')
        compare(env.uri('fleece'), env.pit)
        env.unexport('fleece')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.unexport('guest')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        env.d.stop()
        check_image(tpath)
        old = {0: '0x5d', 64 * KiB: '0x5e', 128 * KiB: '0x5f'}
        io_file(tpath, *['read -P%s %d 64k' % (old[off] if off in copied else '0', off)
                         for off in sorted(old)])


def test_cbw_cluster_size_small_target_clusters():
    """A qcow2 target with 4K clusters: the CBW still copies 64K."""
    cbw_cluster_size(4 * KiB, (64 * KiB,))


def test_cbw_cluster_size_large_target_clusters():
    """A qcow2 target with 128K clusters: the CBW copies 128K."""
    cbw_cluster_size(128 * KiB, (0, 64 * KiB))


# --- 6. refusals, with qemu-storage-daemon 7.2's texts ---

CBW_REFUSALS = [
    ({'cbw-timeout': -1}, "Parameter 'cbw-timeout' expects uint32_t"),
    ({'cbw-timeout': 4294967296}, "Parameter 'cbw-timeout' expects uint32_t"),
    ({'cbw-timeout': '1'}, "Parameter 'cbw-timeout' expects uint64"),
    ({'cbw-timeout': 1.5}, "Parameter 'cbw-timeout' expects uint64"),
    ({'on-cbw-error': 'bogus'}, "Parameter 'on-cbw-error' does not accept value 'bogus'"),
    ({'on-cbw-error': 1}, "Invalid parameter type for 'on-cbw-error', expected: string"),
    ({'bitmap': {'node': 'source', 'name': 'nope'}}, "Dirty bitmap 'nope' not found"),
    ({'bitmap': {'node': 'nonode', 'name': 'b0'}}, "Node 'nonode' not found"),
    ({'bitmap': 'b0'}, "Invalid parameter type for 'bitmap', expected: object"),
    ({'bitmap': {'name': 'b0'}}, "Parameter 'bitmap.node' is missing"),
    ({'bogus': 1}, "Parameter 'bogus' is unexpected"),
    ({'target': 'nonode'}, "Cannot find device='nonode' nor node-name='nonode'"),
]

ACCESS_REFUSALS = [
    ({'file': None}, "Parameter 'file' is missing"),
    ({'file': 'nonode'}, "Cannot find device='nonode' nor node-name='nonode'"),
    ({'bogus': 1}, "Parameter 'bogus' is unexpected"),
]


def test_refusals():
    """blockdev-add of copy-before-write and snapshot-access with bad
    options: qemu-storage-daemon 7.2's texts, and nothing is left."""
    with Env() as env:
        env.add_target('raw')
        env.q.execute('block-dirty-bitmap-add', {'node': 'source', 'name': 'b0'})
        nodes = sorted(n['node-name'] for n in env.q.execute('query-named-block-nodes'))
        base = {'driver': 'copy-before-write', 'node-name': 'cbw', 'file': 'source',
                'target': 'temp'}
        for extra, text in CBW_REFUSALS:
            err = env.q.error('blockdev-add', dict(base, **extra))
            bt.assert_eq((err['class'], err['desc']), ('GenericError', text), 'cbw %r' % extra)
        base = {'driver': 'snapshot-access', 'node-name': 'acc', 'file': 'source'}
        for extra, text in ACCESS_REFUSALS:
            args = {k: v for k, v in dict(base, **extra).items() if v is not None}
            err = env.q.error('blockdev-add', args)
            bt.assert_eq((err['class'], err['desc']), ('GenericError', text),
                         'snapshot-access %r' % extra)
        bt.assert_eq(sorted(n['node-name'] for n in env.q.execute('query-named-block-nodes')),
                     nodes, 'nodes after the refusals')


def test_in_use_refusals():
    """blockdev-del in the wrong order is refused, with QSD 7.2's texts,
    and the snapshot keeps working."""
    with Env() as env:
        env.fleece('raw')
        for node, text in (('acc', 'Node acc is in use'),      # exported
                           ('cbw', 'Node cbw is in use'),      # exported (guest)
                           ('temp', 'Block device temp is in use'),   # the CBW's target
                           ('source', 'Block device source is in use')):  # the CBW's file
            err = env.q.error('blockdev-del', {'node-name': node})
            bt.assert_eq((err['class'], err['desc']), ('GenericError', text), 'blockdev-del ' + node)
        env.unexport('guest')
        env.unexport('fleece')
        err = env.q.error('blockdev-del', {'node-name': 'cbw'})
        bt.assert_eq(err['desc'], 'Block device cbw is in use', 'blockdev-del cbw under acc')
        env.export('acc', 'fleece')
        env.read_snapshot(*[rd(p) for p in PATTERNS])


def test_snapshot_access_on_other_nodes():
    """snapshot-access over a node that is no CBW filter is accepted;
    its reads and block status fail with ENOTSUP (QSD 7.2)."""
    bt.require_tool('qemu-io', 'nbdinfo')
    with Env() as env:
        env.add_target('raw')
        env.add_access('acc0', file='source')
        env.add_access('acc1', file='temp')
        for node in ('acc0', 'acc1'):
            env.export(node, node)
            io_fails(env.uri(node), 'read 0 64k', READ_ENOTSUP)
            p = bt.run(['nbdinfo', '--map', env.uri(node)], check=False)
            bt.assert_eq(p.returncode, 1, 'nbdinfo --map of ' + node)
            bt.assert_in('block-status: command failed: Operation not supported', p.stderr,
                         'nbdinfo --map of ' + node)
            env.unexport(node)
        # The source itself reads fine.
        env.export('source', 'src')
        bt.qemu_io(env.uri('src'), *[rd(p) for p in PATTERNS], extra=['-r'])


def test_snapshot_access_writes():
    """A read-only export of snapshot-access refuses writes (EPERM; QSD 7.2
    answers EINVAL); a writable export is accepted (QSD 7.2) but writes and
    write-zeroes fail with ENOTSUP and change nothing; flush works."""
    bt.require_tool('qemu-io')
    nbd = bt.require_nbd()
    with Env() as env:
        env.fleece('raw')
        env.export('acc', 'fleecew', writable=True)
        ro_errnos = (errno.EPERM, errno.EINVAL) if bt.is_reference() else (errno.EPERM,)
        h = nbd.NBD()
        h.set_strict_mode(0)        # send what the server did not offer
        h.connect_uri(env.uri('fleece'))
        bt.assert_eq(h.is_read_only(), True, 'snapshot export read-only')
        for what, fn, args in (('write', h.pwrite, (b'\x01' * 4096, 0)),
                               ('write-zeroes', h.zero, (4096, 0)),
                               ('trim', h.trim, (CLUSTER, 0))):
            got = bt.nbd_errno(fn, *args)
            if got not in ro_errnos:
                raise AssertionError('%s on the read-only snapshot export: errno %s'
                                     % (what, errno.errorcode.get(got, got)))
        h.shutdown()
        w = env.uri('fleecew')
        io_fails(w, 'write -P0x01 0 4k', WRITE_ENOTSUP, readonly=False)
        io_fails(w, 'write -z 0 4k', WRITE_ENOTSUP, readonly=False)
        io_fails(w, 'write -z 1M 64k', WRITE_ENOTSUP, readonly=False)
        with bt.nbd_connection(w) as h:
            bt.assert_eq(bt.nbd_errno(h.pwrite, b'\x01' * 4096, 16 * MiB), errno.ENOTSUP,
                         'libnbd write to snapshot-access')
            h.flush()
        env.read_snapshot(*[rd(p) for p in PATTERNS])
        bt.qemu_io(env.uri('guest'), *[rd(p) for p in PATTERNS])
        compare(env.uri('fleece'), env.pit)


def test_snapshot_discard():
    """An aligned discard through snapshot-access (discard=unmap) makes the
    region unreadable, frees the target's copy (a qcow2 target with
    discard=unmap) and stops copying there; the rest of the snapshot is
    intact."""
    bt.require_tool('qemu-img', 'qemu-io')
    with Env() as env:
        tpath = env.add_target('qcow2', discard='unmap')
        env.add_cbw()
        env.add_access(discard='unmap')
        env.export('acc', 'fleece')
        env.export('acc', 'fleecew', writable=True)
        env.export('cbw', 'guest', writable=True)
        fleece, guest = env.uri('fleece'), env.uri('guest')
        bt.qemu_io(guest, 'write -P0xab 0 64k', 'write -P0xac 32M 64k')
        env.read_snapshot('read -P0x5d 0 64k', 'read -P0xdc 32M 64k')
        # A copied cluster and one never copied (the 0x5a data at 16M).
        bt.qemu_io(env.uri('fleecew'), 'discard 0 64k', 'discard 16M 64k')
        for r in ('read 0 64k', 'read 0 4k', 'read 60k 8k', 'read 16M 64k', 'read 0x100f000 4k'):
            io_fails(fleece, r, READ_EINVAL)
        env.read_snapshot('read -P0xd5 1M 64k', 'read -P0x5a 0x1010000 64k',
                          'read -P0xdc 32M 64k', 'read -P0xcd 0x3ff0000 64k')
        # The guest's later writes over the discarded clusters copy nothing.
        bt.qemu_io(guest, 'write -P0xad 16M 64k', 'write -P0xae 0 4k')
        bt.qemu_io(guest, 'read -P0xad 16M 64k', 'read -P0xae 0 4k', 'read -P0xab 4k 60k')
        env.unexport('fleece')
        env.unexport('fleecew')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.unexport('guest')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        env.d.stop()
        check_image(tpath)
        check_image(env.src)
        out = bt.run(['qemu-img', 'map', '--output=json', tpath]).stdout
        own = set()
        for e in json.loads(out):
            if e['data']:
                own |= clusters(e['start'], e['length'])
        bt.assert_eq(sorted(own), sorted(clusters(32 * MiB, 64 * KiB)),
                     'clusters holding data in the target')
        io_file(tpath, 'read -P0xdc 32M 64k', 'read -P0 0 64k', 'read -P0 16M 64k')


# --- 7. blockd-only: qemu-storage-daemon 7.2 aborts or misbehaves ---

def test_small_target_refused():
    """blockd-only: a fleecing target smaller than the source is refused
    when the CBW filter is created (QSD 7.2 accepts it, then aborts on the
    first guest write past the target's end)."""
    bt.skip_if_reference('QSD 7.2 accepts a smaller target and aborts on a write past its end')
    with Env() as env:
        env.add_target('raw', size=32 * MiB)
        err = env.q.error('blockdev-add', {'driver': 'copy-before-write', 'node-name': 'cbw',
                                           'file': 'source', 'target': 'temp'})
        bt.assert_eq(err['class'], 'GenericError', 'error class')
        desc = err['desc'].lower()
        for word in ('target', 'size'):
            bt.assert_in(word, desc, 'refusal of a small target')
        names = [n['node-name'] for n in env.q.execute('query-named-block-nodes')]
        if 'cbw' in names:
            raise AssertionError('cbw left behind: %r' % names)
        # Same size is fine.
        env.q.execute('blockdev-del', {'node-name': 'temp'})
        env.fleece('raw')
        bt.qemu_io(env.uri('guest'), 'write -P0xab 48M 64k')
        env.read_snapshot('read -P0 48M 64k')


def test_unaligned_snapshot_discard():
    """blockd-only: discards through snapshot-access that do not cover a
    whole cluster (QSD 7.2 aborts on them in hbitmap_reset) succeed or
    fail but leave the daemon serving; a discard is aligned inward, so a
    cluster it covers only in part stays readable, and one it covers
    wholly becomes unreadable when the discard succeeded."""
    bt.skip_if_reference('QSD 7.2 aborts (hbitmap_reset assertion) on an unaligned snapshot discard')
    bt.require_tool('qemu-io')
    with Env() as env:
        env.add_target('raw')
        env.add_cbw()
        env.add_access(discard='unmap')
        env.export('acc', 'fleece')
        env.export('acc', 'fleecew', writable=True)
        # (request, the clusters it covers wholly, reads that must still work)
        cases = [('discard 1024 512', (), ['read -P0x5d 0 64k']),
                 ('discard 0x3ff8000 32k', (), ['read -P0xcd 0x3ff0000 64k']),
                 ('discard 1M 100k', (1 * MiB,), ['read -P0 0x110000 64k']),
                 ('discard 0x1008000 128k', (16 * MiB + 64 * KiB,),
                  ['read -P0x5a 16M 64k', 'read -P0 0x1020000 64k'])]
        for req, gone, keep in cases:
            p = bt.qemu_io(env.uri('fleecew'), req, check=False)
            ok = p.returncode == 0 and p.stdout.startswith('discard ')
            failed = p.returncode == 1 and p.stdout.startswith('discard failed')
            if not (ok or failed):
                raise AssertionError('qemu-io %r: rc %d %r %r' % (req, p.returncode, p.stdout, p.stderr))
            env.d.assert_alive()
            env.read_snapshot(*keep)
            if ok:
                for off in gone:
                    io_fails(env.uri('fleece'), 'read %d 64k' % off, READ_EINVAL)
                    io_fails(env.uri('fleece'), 'read %d 4k' % (off + 60 * KiB), READ_EINVAL)
        env.read_snapshot('read -P0xdc 32M 64k')
        env.unexport('fleecew')
        env.unexport('fleece')
        env.q.execute('blockdev-del', {'node-name': 'acc'})
        env.q.execute('blockdev-del', {'node-name': 'cbw'})


def test_block_status_of_zeroed_clusters():
    """blockd-only: a cluster whose old data was copied before the guest
    zeroed or discarded it is data in the snapshot's block status, so that
    nbdcopy and qemu-img convert of the snapshot give the point in time.
    (QSD 7.2 reports the source's current status for copied clusters:
    holes reading as zeroes there, and both copies lose the old data.)"""
    bt.skip_if_reference('QSD 7.2 reports copied clusters the guest zeroed as zero holes')
    bt.require_tool('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy')
    with Env(source_opts={'discard': 'unmap'}) as env:
        env.fleece('raw', discard='unmap')
        fleece = env.uri('fleece')
        bt.qemu_io(env.uri('guest'), 'write -z 16M 64k', 'discard 0x1010000 64k',
                   'write -P0x11 20M 64k', 'write -z 24M 64k', 'write -P0x12 32M 64k')
        bt.qemu_io(env.uri('guest'), 'read -P0 16M 128k', 'read -P0x11 20M 64k')
        env.read_snapshot('read -P0x5a 16M 128k', 'read -P0 20M 64k', 'read -P0 24M 64k',
                          'read -P0xdc 32M 64k')
        types = cluster_types(map_of(fleece))
        for c in sorted(clusters(16 * MiB, 128 * KiB) | clusters(32 * MiB, 64 * KiB)):
            bt.assert_eq(types[c], {0}, 'block status of copied data cluster %d' % c)
        data = set().union(*[clusters(p[1], p[2]) for p in PATTERNS])
        for c in sorted(types):
            if c not in data and c not in clusters(20 * MiB, 64 * KiB) | clusters(24 * MiB, 64 * KiB):
                bt.assert_eq(types[c], {3}, 'block status of untouched cluster %d' % c)
        out = env.d.path('copy.raw')
        bt.run(['nbdcopy', fleece, out])
        compare(out, env.pit)
        conv = env.d.path('copy.qcow2')
        bt.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', fleece, conv])
        check_image(conv)
        compare(conv, env.pit, 'qcow2')


def test_bitmap_pair_readonly_export():
    """blockd-only: a recording bitmap named by {node, name} in a read-only
    export's 'bitmaps' is refused exactly as the plain name is (QSD 7.2
    refuses the name but exports the pair)."""
    bt.skip_if_reference('QSD 7.2 exports a recording bitmap given as {node, name} read-only')
    with Env() as env:
        env.q.execute('block-dirty-bitmap-add', {'node': 'source', 'name': 'b0'})
        text = "Enabled bitmap 'b0' incompatible with readonly export"
        for bitmap in ('b0', {'node': 'source', 'name': 'b0'}):
            err = env.q.error('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'source',
                                                   'name': 'disk', 'bitmaps': [bitmap]})
            bt.assert_eq((err['class'], err['desc']), ('GenericError', text), 'bitmaps %r' % bitmap)
        bt.assert_eq(env.q.execute('query-block-exports'), [], 'nothing exported')
        b0 = [b for b in env.node('source')['dirty-bitmaps'] if b.get('name') == 'b0'][0]
        bt.assert_eq((b0['busy'], b0['recording']), (False, True), 'b0 untouched')


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
