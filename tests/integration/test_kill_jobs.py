#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""SIGKILL in the middle of every job (issue 20, "Failure below the daemon").

Each test builds qcow2 images with distinct patterns per layer and region,
keeps a raw reference of what the guest must see (qemu-img convert of the
source before the job, plus every write acknowledged through the NBD export
meanwhile), starts a speed-limited job in the real daemon, waits until its
progress is past 0 but not done (query-jobs), and SIGKILLs the daemon.  Then:

- every image passes `qemu-img check`: no corruptions, no check errors.
  Leaked clusters are accepted: a process killed between allocating a
  cluster and linking it in leaves a leak, which is harmless (QEMU's own
  images show the same after a crash, and `qemu-img check -r leaks` frees
  them);
- the source's guest view equals the reference (qemu-img compare);
- a daemon restarted on the same images runs the same job again to its
  end, and the result is verified with qemu-img compare and check.

Persistent bitmaps: a bitmap stored in the image is flagged in-use while a
writer has the image open, so after the kill `qemu-img info` shows it
"in-use" and the restarted daemon loads it as inconsistent: incremental
backup refuses it with QEMU's error text.  A bitmap added over QMP during
the run is only written at close, so it is absent after a kill (never a
stale, consistent-looking one).

Also: SIGKILL during blockdev-create (qcow2, preallocation=full), during
blockdev-snapshot-sync and blockdev-snapshot-internal-sync (killed at
random small delays in a loop: the snapshot is there entirely or not at
all) and during blockdev-reopen (read-only <-> read-write flips, which
rewrite the bitmap directory, while a reader runs).

One exception to "checks clean", shared with qemu-storage-daemon 7.2: an
internal snapshot killed between its refcount increments and its L2 flag
updates leaves OFLAG_COPIED errors that `qemu-img check -r all` repairs
(see test_snapshot_internal).

test_check_catches_corruption shows that the image check used here fails
on a damaged image and the comparison on different data.  Every test
passes against qemu-storage-daemon 7.2 (BLOCKD_REFERENCE=1)."""

import json
import os
import random
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, is_reference, main,  # noqa: E402
                         qemu_io, require_tool, run, tests_of)

MiB = 1 << 20
SIZE = 16 * MiB
SLOW = 1 * MiB            # bytes/s: a job of SIZE is far from done when killed

# Data of each layer of a chain: (pattern, offset, length)
LAYERS = {
    'base': [(0x11, 0, 4 * MiB), (0x12, 8 * MiB, 2 * MiB), (0x13, 15 * MiB, MiB)],
    'mid': [(0x21, 2 * MiB, 4 * MiB), (0x22, 9 * MiB, 2 * MiB), (0x23, 12 * MiB, 512 * 1024)],
    'top': [(0x31, 5 * MiB, MiB), (0x32, 14 * MiB, 64 * 1024), (0x33, 10 * MiB, 128 * 1024)],
}
# Written through an NBD export of the source while the job runs.
GUEST_WRITES = ['write -P 0x41 0 64k', 'write -P 0x42 3M 1M', 'write -P 0x43 9500k 300k',
                'write -z 12M 256k', 'write -P 0x44 15872k 512k']


# --- images ---

def check_img(path):
    """qemu-img check: no corruptions and no check errors; leaks are
    accepted after a kill (see the module comment).  Returns the report."""
    p = run(['qemu-img', 'check', '--output=json', path], check=False)
    try:
        rep = json.loads(p.stdout)
    except ValueError:
        raise AssertionError('qemu-img check %s: rc %d, no report\n%s%s'
                             % (path, p.returncode, p.stdout, p.stderr))
    bad = {k: rep.get(k, 0) for k in ('corruptions', 'check-errors')}
    if p.returncode not in (0, 3) or any(bad.values()):
        raise AssertionError('qemu-img check %s: rc %d %r\n%s%s'
                             % (path, p.returncode, bad, p.stdout, p.stderr))
    return rep


def compare(image, ref, fmt='qcow2'):
    """The guest view of `image` equals the raw reference."""
    p = run(['qemu-img', 'compare', '-f', fmt, '-F', 'raw', image, ref], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img compare %s %s: rc %d\n%s%s'
                             % (image, ref, p.returncode, p.stdout, p.stderr))


def info(path):
    return json.loads(run(['qemu-img', 'info', '-U', '--output=json', path]).stdout)


def create_qcow2(path, size=SIZE, backing=None):
    argv = ['qemu-img', 'create', '-q', '-f', 'qcow2']
    if backing:
        argv += ['-b', backing, '-F', 'qcow2']
    run(argv + [path, str(size)])


def fill(path, writes):
    qemu_io(path, *['write -P 0x%x %d %d' % w for w in writes], fmt='qcow2')


def reference(image, ref):
    run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', image, ref])


class Chain:
    """base <- mid <- top in the daemon's directory, and ref.raw: top's
    guest view."""

    def __init__(self, d, scale=1):
        self.img = {n: d.path(n + '.qcow2') for n in ('base', 'mid', 'top')}
        create_qcow2(self.img['base'], SIZE * scale)
        create_qcow2(self.img['mid'], SIZE * scale, backing=self.img['base'])
        create_qcow2(self.img['top'], SIZE * scale, backing=self.img['mid'])
        for name, writes in LAYERS.items():
            fill(self.img[name], [(p, o * scale, n * scale) for p, o, n in writes])
        self.ref = d.path('ref.raw')
        reference(self.img['top'], self.ref)

    def opts(self):
        def layer(name, backing):
            o = {'driver': 'qcow2', 'node-name': name,
                 'file': {'driver': 'file', 'node-name': name + '-file',
                          'filename': self.img[name]}}
            if backing is not None:
                o['backing'] = backing
            return o
        return layer('top', layer('mid', layer('base', None)))

    def check_all(self):
        for img in self.img.values():
            check_img(img)


# --- the daemon ---

def new_daemon():
    require_tool('qemu-img', 'qemu-io')
    d = Daemon()
    d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
    d.wait = [d.nbd_sock]
    return d


def kill(d):
    """SIGKILL the daemon and make sure nothing of it is left: the process
    is reaped and its sockets are gone (the restart binds them again)."""
    d.proc.kill()
    assert_eq(d.proc.wait(15), -9, 'daemon killed by SIGKILL')
    # A sanitizer finding before the kill (the restart empties stderr).
    report = d.sanitizer_report()
    if report:
        raise AssertionError('sanitizer report from the killed daemon:\n' + report)
    for q in d._qmps:
        q.close()
    d._qmps = []
    d._err.close()
    for s in d.qmp_paths + [d.nbd_sock]:
        if os.path.exists(s):
            os.unlink(s)


def restart(d):
    """Start the daemon again in the same directory; returns a QMP session."""
    d.start()
    return d.qmp()


def add_qcow2(q, node, path, backing='default'):
    o = {'driver': 'qcow2', 'node-name': node,
         'file': {'driver': 'file', 'node-name': node + '-file', 'filename': path}}
    if backing != 'default':
        o['backing'] = backing
    q.execute('blockdev-add', o)


def export(q, node, name='disk'):
    q.execute('block-export-add', {'type': 'nbd', 'id': 'exp-' + name, 'node-name': node,
                                   'name': name, 'writable': True})


def job_info(q, job):
    for j in q.execute('query-jobs'):
        if j['id'] == job:
            return j
    return None


def wait_midway(q, job, timeout=30.0):
    """Wait until the job has made progress but is not done; returns its
    query-jobs entry.  A job that finished already fails the test: the
    kill would not be in the middle of it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = job_info(q, job)
        if j is None:
            raise AssertionError('job %s is gone before the kill' % job)
        if j['status'] not in ('running', 'ready'):
            raise AssertionError('job %s done before the kill: %r' % (job, j))
        # A mirror counts target areas that are already zero while it
        # scans the source, before it knows its total (0 until then).
        if j['current-progress'] > 0 and j['total-progress'] > 0:
            if j['current-progress'] >= j['total-progress']:
                raise AssertionError('job %s done before the kill: %r' % (job, j))
            return j
        time.sleep(0.01)
    raise AssertionError('job %s made no progress' % job)


def still_midway(q, job):
    j = job_info(q, job)
    if j is None or j['status'] not in ('running', 'ready') or \
            (j['status'] == 'running' and j['current-progress'] >= j['total-progress']):
        raise AssertionError('job %s no longer in the middle before the kill: %r' % (job, j))


def guest_writes(d, ref, name='disk'):
    """A few writes through the export, acknowledged before the kill, and
    the same on the reference."""
    qemu_io(d.uri(name), *GUEST_WRITES)
    qemu_io(ref, *GUEST_WRITES)


def run_to_end(q, job, complete=False):
    r = q.run_job(job, auto_dismiss=True, complete=complete, wait=120)
    assert_eq(r.error, None, 'job %s error' % job)
    assert_eq(r.event['event'], 'BLOCK_JOB_COMPLETED', 'job %s end' % job)
    return r


# --- the check itself can fail ---

def test_check_catches_corruption():
    """check_img fails on an image whose refcount block was zeroed (every
    used cluster then has refcount 0 but is referenced: corruptions), and
    compare fails on one changed byte."""
    with new_daemon() as d:
        img, ref = d.path('a.qcow2'), d.path('a.raw')
        create_qcow2(img)
        fill(img, LAYERS['base'])
        reference(img, ref)
        check_img(img)
        compare(img, ref)
        with open(img, 'r+b') as f:
            hdr = f.read(72)
            cluster = 1 << struct.unpack('>I', hdr[20:24])[0]
            rt_off = struct.unpack('>Q', hdr[48:56])[0]
            f.seek(rt_off)
            rb_off = struct.unpack('>Q', f.read(8))[0]
            f.seek(rb_off)
            f.write(b'\0' * cluster)
        try:
            check_img(img)
        except AssertionError as e:
            assert_in('corruptions', str(e), 'the failure names the corruptions')
        else:
            raise AssertionError('check_img passed a damaged image')
        img2 = d.path('b.qcow2')
        create_qcow2(img2)
        fill(img2, LAYERS['base'])
        qemu_io(img2, 'write -P 0x99 %d 512' % (4 * MiB - 512), fmt='qcow2')
        try:
            compare(img2, ref)
        except AssertionError:
            pass
        else:
            raise AssertionError('compare passed different data')


# --- backup ---

def test_backup():
    """blockdev-backup sync=full, killed mid-way with a persistent bitmap in
    the source image (b0, stored before the daemon opened it) and one added
    over QMP (b1)."""
    with new_daemon() as d:
        src, tgt, ref = d.path('src.qcow2'), d.path('tgt.qcow2'), d.path('ref.raw')
        create_qcow2(src)
        fill(src, LAYERS['base'] + LAYERS['top'])
        run(['qemu-img', 'bitmap', '--add', src, 'b0'])
        reference(src, ref)
        create_qcow2(tgt)
        d.start()
        q = d.qmp()
        add_qcow2(q, 'src', src)
        add_qcow2(q, 'tgt', tgt)
        export(q, 'src')
        q.execute('block-dirty-bitmap-add', {'node': 'src', 'name': 'b1', 'persistent': True})
        # Open read-write: b0 is in use in the image now.
        flags = {b['name']: b['flags'] for b in
                 info(src)['format-specific']['data'].get('bitmaps', [])}
        assert_eq(flags.get('b0'), ['in-use', 'auto'], 'b0 in use while open')
        q.execute('blockdev-backup', {'job-id': 'bk', 'device': 'src', 'target': 'tgt',
                                      'sync': 'full', 'speed': SLOW})
        wait_midway(q, 'bk')
        guest_writes(d, ref)
        still_midway(q, 'bk')
        kill(d)

        check_img(src)
        check_img(tgt)
        compare(src, ref)
        bitmaps = {b['name']: b for b in
                   info(src)['format-specific']['data'].get('bitmaps', [])}
        # In use (inconsistent), never silently consistent; b1 was never
        # stored (QEMU writes new persistent bitmaps at close).
        assert_eq(sorted(bitmaps), ['b0'], 'bitmaps in the image after the kill')
        assert_in('in-use', bitmaps['b0']['flags'], 'b0 flags after the kill')

        q = restart(d)
        add_qcow2(q, 'src', src)
        add_qcow2(q, 'tgt', tgt)
        node = [n for n in q.execute('query-named-block-nodes') if n['node-name'] == 'src'][0]
        loaded = {b['name']: b for b in node.get('dirty-bitmaps', [])}
        assert_eq(sorted(loaded), ['b0'], 'bitmaps loaded')
        assert_eq(loaded['b0'].get('inconsistent'), True, 'b0 loaded as inconsistent')
        err = q.error('blockdev-backup', {'job-id': 'bk', 'device': 'src', 'target': 'tgt',
                                          'sync': 'incremental', 'bitmap': 'b0'})
        assert_eq((err['class'], err['desc']),
                  ('GenericError', "Bitmap 'b0' is inconsistent and cannot be used"),
                  'incremental backup from an inconsistent bitmap')
        q.execute('blockdev-backup', {'job-id': 'bk', 'device': 'src', 'target': 'tgt',
                                      'sync': 'full'})
        run_to_end(q, 'bk')
        # The only way on with an inconsistent bitmap: remove it.
        q.execute('block-dirty-bitmap-remove', {'node': 'src', 'name': 'b0'})
        d.stop()
        compare(tgt, ref)
        compare(src, ref)
        check_img(src)
        check_img(tgt)
        assert_eq(info(src)['format-specific']['data'].get('bitmaps', []), [],
                  'b0 removed from the image')


# --- mirror ---

def test_mirror():
    """blockdev-mirror sync=full with writes through the source's export,
    killed mid-way; after the restart mirror again, job-complete, and the
    target equals the source."""
    with new_daemon() as d:
        src, tgt, ref = d.path('src.qcow2'), d.path('tgt.qcow2'), d.path('ref.raw')
        create_qcow2(src)
        fill(src, LAYERS['base'] + LAYERS['mid'])
        reference(src, ref)
        create_qcow2(tgt)
        d.start()
        q = d.qmp()
        add_qcow2(q, 'src', src)
        add_qcow2(q, 'tgt', tgt, backing=None)
        export(q, 'src')
        q.execute('blockdev-mirror', {'job-id': 'm0', 'device': 'src', 'target': 'tgt',
                                      'sync': 'full', 'speed': SLOW, 'buf-size': 256 * 1024})
        wait_midway(q, 'm0')
        guest_writes(d, ref)
        still_midway(q, 'm0')
        kill(d)

        check_img(src)
        check_img(tgt)
        compare(src, ref)

        q = restart(d)
        add_qcow2(q, 'src', src)
        add_qcow2(q, 'tgt', tgt, backing=None)
        export(q, 'src')
        q.execute('blockdev-mirror', {'job-id': 'm0', 'device': 'src', 'target': 'tgt',
                                      'sync': 'full'})
        run_to_end(q, 'm0', complete=True)
        # After the pivot the export serves the target.
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri(), ref])
        d.stop()
        compare(tgt, ref)
        compare(src, ref)
        check_img(src)
        check_img(tgt)


# --- stream ---

def test_stream():
    """block-stream of base <- mid <- top into top, killed mid-way."""
    with new_daemon() as d:
        c = Chain(d)
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', c.opts())
        q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': SLOW})
        wait_midway(q, 's0')
        kill(d)

        c.check_all()
        compare(c.img['top'], c.ref)
        # Partly streamed, still on its backing chain.
        assert_eq(info(c.img['top']).get('backing-filename'), c.img['mid'], 'top backing')

        q = restart(d)
        q.execute('blockdev-add', c.opts())
        q.execute('block-stream', {'job-id': 's0', 'device': 'top'})
        run_to_end(q, 's0')
        d.stop()
        assert_eq(info(c.img['top']).get('backing-filename'), None, 'top streamed')
        compare(c.img['top'], c.ref)
        c.check_all()


# --- commit ---

def test_commit_intermediate():
    """block-commit of mid into base (top stays), killed mid-way: base is
    half written, which changes nothing top can see.  base has a
    persistent bitmap: the commit reopens base read-write, which flags it
    in use before the first write, so it comes back in use."""
    with new_daemon() as d:
        c = Chain(d)
        run(['qemu-img', 'bitmap', '--add', c.img['base'], 'b0'])
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', c.opts())
        export(q, 'top', 'top')
        q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                                   'base-node': 'base', 'speed': SLOW})
        wait_midway(q, 'c0')
        kill(d)

        c.check_all()
        compare(c.img['top'], c.ref)
        bms = info(c.img['base'])['format-specific']['data']['bitmaps']
        assert_eq([(b['name'], 'in-use' in b['flags']) for b in bms], [('b0', True)],
                  'base bitmap after the kill')

        q = restart(d)
        q.execute('blockdev-add', c.opts())
        export(q, 'top', 'top')
        q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                                   'base-node': 'base'})
        run_to_end(q, 'c0')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), c.ref])
        d.stop()
        assert_eq(info(c.img['top']).get('backing-filename'), c.img['base'],
                  'top now on base')
        compare(c.img['top'], c.ref)
        c.check_all()
        # base holds mid's data: base + top's own clusters = the guest view.
        check_img(c.img['base'])


def test_commit_active():
    """block-commit of the active layer top into base with writes through
    top's export, killed mid-way; after the restart commit again,
    job-complete, and base holds everything."""
    with new_daemon() as d:
        # Larger: QEMU copies up to 16 MiB (its buffer) before the speed
        # limit holds an active commit back.
        c = Chain(d, scale=4)
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', c.opts())
        export(q, 'top', 'top')
        q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'base-node': 'base',
                                   'speed': SLOW})
        wait_midway(q, 'c0')
        guest_writes(d, c.ref, 'top')
        still_midway(q, 'c0')
        kill(d)

        c.check_all()
        compare(c.img['top'], c.ref)

        q = restart(d)
        q.execute('blockdev-add', c.opts())
        export(q, 'top', 'top')
        q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'base-node': 'base'})
        run_to_end(q, 'c0', complete=True)
        # The export now serves base.
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), c.ref])
        d.stop()
        compare(c.img['base'], c.ref)
        compare(c.img['top'], c.ref)
        c.check_all()


# --- blockdev-create ---

CREATE_SIZE = 1024 * MiB


def test_create():
    """blockdev-create of a qcow2 image with preallocation=full (it writes
    the whole size), killed while it writes; after the restart the same
    create completes and the image checks clean."""
    with new_daemon() as d:
        path = d.path('new.qcow2')
        d.start()
        q = d.qmp()
        create = {'driver': 'qcow2', 'file': 'f0', 'size': CREATE_SIZE,
                  'preallocation': 'full'}

        def create_file_node(q):
            q.execute('blockdev-create', {'job-id': 'cf', 'options': {
                'driver': 'file', 'filename': path, 'size': 0}})
            q.run_job('cf', wait=60)
            q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f0', 'filename': path})

        create_file_node(q)
        q.execute('blockdev-create', {'job-id': 'c0', 'options': create})
        end = time.monotonic() + 30
        # Mid-way: some of the preallocation written, the job not concluded.
        while os.stat(path).st_blocks * 512 < 16 * MiB:
            if time.monotonic() > end:
                raise AssertionError('create wrote nothing: %r' % job_info(q, 'c0'))
            time.sleep(0.005)
        j = job_info(q, 'c0')
        if j['status'] != 'running':
            raise AssertionError('create done before the kill (%r): raise CREATE_SIZE' % j)
        kill(d)
        # What is left is no finished image; what matters is that create
        # can be run again.
        q = restart(d)
        create_file_node(q)
        q.execute('blockdev-create', {'job-id': 'c0', 'options': create})
        r = q.run_job('c0', wait=120)
        assert_eq(r.error, None, 'create error')
        d.stop()
        rep = check_img(path)
        assert_eq(rep.get('leaks', 0), 0, 'leaks in a freshly created image')
        i = info(path)
        assert_eq((i['format'], i['virtual-size']), ('qcow2', CREATE_SIZE), 'created image')
        if os.stat(path).st_blocks * 512 < CREATE_SIZE:
            raise AssertionError('preallocation=full did not allocate the image')


# --- snapshots ---

def killed_during(d, cmd, args, rng, node_opts):
    """Start the daemon on the node(s), send one command and SIGKILL the
    daemon after a random small delay (before or after it answers)."""
    q = restart(d)
    for o in node_opts:
        q.execute('blockdev-add', o)
    q.send({'execute': cmd, 'arguments': args})
    time.sleep(rng.uniform(0, 0.006))
    kill(d)


def test_snapshot_external():
    """blockdev-snapshot-sync killed at random points: the base image is
    untouched (checks clean, same guest view) and the overlay is either
    missing or unfinished junk that is no qcow2 image, or a whole qcow2
    image on the base with nothing of its own."""
    rng = random.Random(20)
    outcomes = {'none': 0, 'partial': 0, 'whole': 0}
    with new_daemon() as d:
        img, ref = d.path('base.qcow2'), d.path('ref.raw')
        create_qcow2(img)
        fill(img, LAYERS['base'] + LAYERS['mid'])
        reference(img, ref)
        for i in range(8):
            snap = d.path('snap%d.qcow2' % i)
            killed_during(d, 'blockdev-snapshot-sync',
                          {'node-name': 'disk', 'snapshot-file': snap,
                           'snapshot-node-name': 'snap', 'format': 'qcow2'}, rng,
                          [{'driver': 'qcow2', 'node-name': 'disk',
                            'file': {'driver': 'file', 'filename': img}}])
            check_img(img)
            compare(img, ref)
            if not os.path.exists(snap):
                outcomes['none'] += 1
                continue
            p = run(['qemu-img', 'info', '--output=json', snap], check=False)
            if p.returncode != 0 or json.loads(p.stdout)['format'] != 'qcow2':
                outcomes['partial'] += 1
                continue
            # A qcow2 image with its backing file set is the whole overlay
            # (QEMU writes the backing name last); without, it is a file
            # that was being formatted, which nothing refers to.
            if json.loads(p.stdout).get('backing-filename') is None:
                outcomes['partial'] += 1
                continue
            check_img(snap)
            outcomes['whole'] += 1
            assert_eq(json.loads(p.stdout).get('backing-filename'), img, 'overlay backing')
            compare(snap, ref)
        # The snapshot can still be taken and used.
        q = restart(d)
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                   'file': {'driver': 'file', 'filename': img}})
        snap = d.path('final.qcow2')
        # The export moves up onto the overlay with the snapshot.
        export(q, 'disk')
        q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': snap,
                                             'snapshot-node-name': 'snap', 'format': 'qcow2'})
        guest_writes(d, ref)
        d.stop()
        compare(snap, ref)
        check_img(snap)
        check_img(img)
        print('external snapshot outcomes: %r' % outcomes)


def copied_flag_errors_only(img):
    """Whether every error qemu-img check reports is an OFLAG_COPIED
    mismatch (an L2 or L1 entry's "not shared" flag disagreeing with its
    cluster's refcount)."""
    p = run(['qemu-img', 'check', img], check=False)
    errors = [l for l in (p.stdout + p.stderr).splitlines() if l.startswith('ERROR')]
    return bool(errors) and all('OFLAG_COPIED' in l for l in errors)


def test_snapshot_internal():
    """blockdev-snapshot-internal-sync killed at random points: the image
    keeps its data, and the snapshot is listed with the data of the
    moment it was taken, or not listed at all.

    The image checks clean, but for one state that no write order avoids
    (qemu-storage-daemon 7.2 leaves the same): killed after the
    refcounts of the active clusters went up for the snapshot and before
    their L2 entries lost the "not shared" flag and the snapshot table
    was written, qemu-img check reports OFLAG_COPIED errors (refcount 2
    with the flag still set) and leaks.  No data is at risk (no snapshot
    refers to the clusters, so writing them in place is right), and
    `qemu-img check -r all` makes the image clean: the test accepts
    exactly that, repairs, and checks again."""
    rng = random.Random(21)
    seen = {'present': 0, 'absent': 0, 'repaired': 0}
    with new_daemon() as d:
        img, ref = d.path('img.qcow2'), d.path('ref.raw')
        create_qcow2(img)
        fill(img, LAYERS['base'] + LAYERS['top'])
        reference(img, ref)
        opts = {'driver': 'qcow2', 'node-name': 'disk',
                'file': {'driver': 'file', 'filename': img}}
        for i in range(8):
            name = 'sn%d' % i
            killed_during(d, 'blockdev-snapshot-internal-sync',
                          {'device': 'disk', 'name': name}, rng, [opts])
            compare(img, ref)
            try:
                check_img(img)
            except AssertionError:
                if not copied_flag_errors_only(img):
                    raise
                # Served as it is, it takes writes without losing any.
                q = restart(d)
                q.execute('blockdev-add', opts)
                export(q, 'disk')
                guest_writes(d, ref)
                d.stop()
                compare(img, ref)
                run(['qemu-img', 'check', '-q', '-r', 'all', img])
                rep = check_img(img)
                assert_eq(rep.get('leaks', 0), 0, 'leaks after the repair')
                compare(img, ref)
                seen['repaired'] += 1
            snaps = [s['name'] for s in info(img).get('snapshots', [])]
            if name not in snaps:
                seen['absent'] += 1
                continue
            seen['present'] += 1
            out = d.path('snap.raw')
            run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-l',
                 'snapshot.name=' + name, img, out])
            run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', out, ref])
            os.unlink(out)
        # Writes and a snapshot work on the image after all that.
        q = restart(d)
        q.execute('blockdev-add', opts)
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': 'last'})
        export(q, 'disk')
        before = d.path('before.raw')
        run(['cp', ref, before])
        guest_writes(d, ref)
        d.stop()
        check_img(img)
        compare(img, ref)
        assert_in('last', [s['name'] for s in info(img).get('snapshots', [])], 'snapshots')
        out = d.path('snap.raw')
        run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-l', 'snapshot.name=last',
             img, out])
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', out, before])
        print('internal snapshot outcomes: %r' % seen)


# --- reopen ---

def test_reopen_rw_marks_bitmaps():
    """A node reopened read-only (its bitmap stored, consistent) and then
    read-write again flags the bitmap in use before it accepts a write:
    killed after a write, the bitmap must not come back consistent and
    without that write.  (blockd wrote the flag before the file node had
    its writable descriptor back, failed with EPERM, and left it clear.)"""
    with new_daemon() as d:
        img, ref = d.path('img.qcow2'), d.path('ref.raw')
        create_qcow2(img)
        fill(img, LAYERS['base'])
        run(['qemu-img', 'bitmap', '--add', img, 'b0'])
        reference(img, ref)
        opts = {'driver': 'qcow2', 'node-name': 'disk', 'read-only': False,
                'file': {'driver': 'file', 'node-name': 'disk-file', 'filename': img}}
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', opts)
        q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': True})]})
        flags = info(img)['format-specific']['data']['bitmaps'][0]['flags']
        assert_eq(flags, ['auto'], 'b0 stored on the reopen to read-only')
        q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': False})]})
        export(q, 'disk')
        guest_writes(d, ref)
        kill(d)
        check_img(img)
        compare(img, ref)
        flags = info(img)['format-specific']['data']['bitmaps'][0]['flags']
        assert_in('in-use', flags, 'b0 after a write and the kill')
        assert_eq('warning' in d.stderr().lower(), False, 'daemon warnings: ' + d.stderr())
        q = restart(d)
        q.execute('blockdev-add', opts)
        node = [n for n in q.execute('query-named-block-nodes') if n['node-name'] == 'disk'][0]
        assert_eq([(b['name'], b.get('inconsistent')) for b in node['dirty-bitmaps']],
                  [('b0', True)], 'b0 loaded as inconsistent')
        d.stop()


def test_reopen():
    """blockdev-reopen flipping a qcow2 node between read-only and
    read-write (which stores its persistent bitmap and marks it in use
    again, header writes both) while a client reads, killed at random
    points: the image checks clean, keeps its data, and its bitmap is
    either consistent or flagged in use."""
    rng = random.Random(22)
    with new_daemon() as d:
        img, ref = d.path('img.qcow2'), d.path('ref.raw')
        create_qcow2(img)
        fill(img, LAYERS['base'] + LAYERS['mid'])
        run(['qemu-img', 'bitmap', '--add', img, 'b0'])
        reference(img, ref)
        opts = {'driver': 'qcow2', 'node-name': 'disk', 'read-only': False,
                'file': {'driver': 'file', 'node-name': 'disk-file', 'filename': img}}
        flags_seen = set()
        for i in range(6):
            q = restart(d)
            q.execute('blockdev-add', opts)
            q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'disk',
                                           'name': 'disk', 'writable': False})
            reader = subprocess.Popen(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw',
                                       d.uri(), ref], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + rng.uniform(0.05, 0.3)
            ro = False
            try:
                while time.monotonic() < deadline:
                    ro = not ro
                    q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': ro})]})
                ro = not ro
                q.send({'execute': 'blockdev-reopen',
                        'arguments': {'options': [dict(opts, **{'read-only': ro})]}})
                time.sleep(rng.uniform(0, 0.002))
                kill(d)
            finally:
                reader.kill()
                reader.wait()
            check_img(img)
            compare(img, ref)
            bms = info(img)['format-specific']['data'].get('bitmaps', [])
            # b0 is consistent or in use (then never used again): never a
            # consistent bitmap with wrong contents.  qemu-storage-daemon
            # 7.2 loses it at some points (gone is not wrong, but blockd
            # writes the new directory before the header points to it,
            # so it must keep it).
            allowed = (['b0'], []) if is_reference() else (['b0'],)
            assert_eq([b['name'] for b in bms] in allowed, True,
                      'bitmaps after the kill: %r' % bms)
            flags_seen.add(tuple(bms[0]['flags']) if bms else ('gone',))
            if not bms:
                run(['qemu-img', 'bitmap', '--add', img, 'b0'])
            elif 'in-use' in bms[0]['flags']:
                # The next open must not use it: drop it and add it again.
                run(['qemu-img', 'bitmap', '--remove', img, 'b0'])
                run(['qemu-img', 'bitmap', '--add', img, 'b0'])
        print('bitmap flags after the kills: %r' % sorted(flags_seen))
        q = restart(d)
        q.execute('blockdev-add', opts)
        q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': True})]})
        q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': False})]})
        d.stop()
        check_img(img)
        compare(img, ref)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
