# SPDX-License-Identifier: MIT
"""The jobs' copy engine (issue 17): backup, mirror, stream and commit of
a sparse source give targets equal to the source that hold no data where
the source holds none; copy_file_range is used between plain files; a
backup with many workers keeps its point in time under concurrent guest
writes; mirror's buf-size bounds the daemon's memory.

Data is checked with qemu-img compare and qemu-img check, allocation with
qemu-img map; the daemon's own reads prove nothing here.
"""

import json
import os
import random
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402

MiB = 1024 * 1024
SIZE = 256 * MiB
EXTENT = MiB
BLOCK = 64 * 1024          # granularity of the allocation comparison


def sparse_writes(seed, fraction=0.10, size=SIZE):
    """qemu-io commands filling `fraction` of the image in scattered 1 MiB
    extents (with a non-zero pattern each)."""
    rng = random.Random(seed)
    slots = rng.sample(range(size // EXTENT), int(size // EXTENT * fraction))
    return ['write -P 0x%02x %d %d' % (i % 250 + 1, s * EXTENT, EXTENT)
            for i, s in enumerate(sorted(slots))]


def qcow2(path, size=SIZE, backing=None, writes=()):
    args = ['qemu-img', 'create', '-f', 'qcow2']
    if backing:
        args += ['-b', backing, '-F', 'qcow2']
    bt.run(args + [path, str(size)])
    if writes:
        bt.qemu_io(path, *writes, fmt='qcow2')
    return path


def data_blocks(path, fmt=None):
    """The BLOCK-sized blocks `qemu-img map` reports as data (any depth)."""
    args = ['qemu-img', 'map', '-U', '--output=json']
    if fmt:
        args += ['-f', fmt]
    blocks = set()
    for ext in json.loads(bt.run(args + [path]).stdout):
        if ext.get('data'):
            first = ext['start'] // BLOCK
            last = (ext['start'] + ext['length'] - 1) // BLOCK
            blocks.update(range(first, last + 1))
    return blocks


def check_target(target, source, tfmt='qcow2', sfmt='qcow2', source_data=None):
    """Same data as the source, no data where the source has none, and a
    clean image."""
    p = bt.run(['qemu-img', 'compare', '-U', '-f', sfmt, '-F', tfmt, source, target],
               check=False)
    bt.assert_eq(p.returncode, 0, 'qemu-img compare %s %s: %s%s'
                 % (source, target, p.stdout, p.stderr))
    if source_data is None:
        source_data = data_blocks(source, sfmt)
    extra = data_blocks(target, tfmt) - source_data
    bt.assert_eq(sorted(extra)[:8], [], 'data blocks of the target the source lacks')
    if tfmt == 'qcow2':
        bt.check_image(target)


class Env:
    """A daemon with a 256 MiB qcow2 source 'src' (10% allocated)."""

    def __init__(self, nbd=False):
        bt.require_tool('qemu-img', 'qemu-io')
        self.d = bt.Daemon()
        if nbd:
            self.d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % self.d.nbd_sock]
            self.d.wait = [self.d.nbd_sock]
        self.src = qcow2(self.d.path('src.qcow2'), writes=sparse_writes(17))

    def __enter__(self):
        self.d.__enter__()
        self.d.start()
        self.q = self.d.qmp()
        return self

    def __exit__(self, *a):
        return self.d.__exit__(*a)

    def add(self, node, path, fmt='qcow2', **extra):
        opts = {'node-name': node, 'driver': fmt,
                'file': {'driver': 'file', 'filename': path}}
        opts.update(extra)
        self.q.execute('blockdev-add', opts)

    def run(self, cmd, args, job, complete=False):
        self.q.execute(cmd, args)
        r = self.q.run_job(job, auto_dismiss=True, complete=complete, wait=120)
        bt.assert_eq(r.error, None, '%s error' % job)


def backup_to(fmt):
    with Env() as e:
        tgt = e.d.path('tgt.' + fmt)
        bt.run(['qemu-img', 'create', '-f', fmt, tgt, str(SIZE)])
        e.add('src', e.src)
        e.add('tgt', tgt, fmt)
        e.run('blockdev-backup', {'job-id': 'b0', 'device': 'src', 'target': 'tgt',
                                  'sync': 'full'}, 'b0')
        e.d.stop()
        check_target(tgt, e.src, tfmt=fmt)


def test_backup_sparse_to_qcow2():
    backup_to('qcow2')


def test_backup_sparse_to_raw():
    backup_to('raw')


def test_mirror_sparse():
    with Env() as e:
        tgt = qcow2(e.d.path('tgt.qcow2'))
        e.add('src', e.src)
        e.add('tgt', tgt, backing=None)
        e.run('blockdev-mirror', {'job-id': 'm0', 'device': 'src', 'target': 'tgt',
                                  'sync': 'full'}, 'm0', complete=True)
        e.d.stop()
        check_target(tgt, e.src)


def chain_reference(d, top):
    """The guest-visible content of a chain, as a raw file."""
    ref = d.path('ref.raw')
    bt.run(['qemu-img', 'convert', '-U', '-O', 'raw', top, ref])
    return ref


def test_stream_sparse():
    """base (10% in 1 MiB extents) <- top (a few writes): streamed into
    top, which then holds the same data and no more than the chain."""
    with Env() as e:
        base = e.src
        top = qcow2(e.d.path('top.qcow2'), backing=base,
                    writes=['write -P 0xee %d %d' % (i * 37 * MiB, 64 * 1024)
                            for i in range(6)])
        ref = chain_reference(e.d, top)
        chain_data = data_blocks(top)
        e.add('base', base)
        e.add('top', top, backing='base')
        e.run('block-stream', {'job-id': 's0', 'device': 'top'}, 's0')
        e.d.stop()
        info = json.loads(bt.run(['qemu-img', 'info', '-U', '--output=json', top]).stdout)
        bt.assert_eq(info.get('backing-filename'), None, 'backing file after stream')
        check_target(top, ref, sfmt='raw', source_data=chain_data)


def test_commit_sparse():
    """base (empty) <- mid (10%) <- top: mid committed into base."""
    with Env() as e:
        base = qcow2(e.d.path('base.qcow2'))
        mid = e.d.path('mid.qcow2')
        os.rename(e.src, mid)
        bt.run(['qemu-img', 'rebase', '-u', '-b', base, '-F', 'qcow2', mid])
        top = qcow2(e.d.path('top.qcow2'), backing=mid,
                    writes=['write -P 0xdd %d %d' % (i * 41 * MiB, 64 * 1024)
                            for i in range(6)])
        mid_ref = chain_reference(e.d, mid)
        mid_data = data_blocks(mid)
        e.add('base', base)
        e.add('mid', mid, backing='base')
        e.add('top', top, backing='mid')
        e.run('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                               'base-node': 'base'}, 'c0')
        e.d.stop()
        check_target(base, mid_ref, sfmt='raw', source_data=mid_data)


def test_copy_file_range_used():
    """A raw-on-file to raw-on-file backup on one file system copies with
    copy_file_range (the daemon runs under strace -c)."""
    bt.require_tool('strace', 'qemu-img', 'qemu-io')
    d = bt.Daemon()
    with d:
        src = d.path('src.raw')
        tgt = d.path('tgt.raw')
        bt.run(['qemu-img', 'create', '-f', 'raw', src, str(64 * MiB)])
        bt.qemu_io(src, *sparse_writes(5, 0.25, 64 * MiB))
        bt.run(['qemu-img', 'create', '-f', 'raw', tgt, str(64 * MiB)])
        trace = d.path('strace.out')
        d.args = ['-f', '-c', '-e', 'trace=copy_file_range', '-o', trace, d.exe] + d.args
        d.exe = shutil.which('strace')
        d.start()
        q = d.qmp()
        for node, path in (('src', src), ('tgt', tgt)):
            q.execute('blockdev-add', {'node-name': node, 'driver': 'raw',
                                       'file': {'driver': 'file', 'filename': path}})
        q.execute('blockdev-backup', {'job-id': 'b0', 'device': 'src', 'target': 'tgt',
                                      'sync': 'full', 'x-perf': {'use-copy-range': True}})
        r = q.run_job('b0', auto_dismiss=True)
        bt.assert_eq(r.error, None, 'backup error')
        q.execute('quit')
        d.wait_exit()
        calls = 0
        with open(trace) as f:
            for line in f:
                cols = line.split()
                if cols and cols[-1] == 'copy_file_range':
                    calls = int(cols[3])   # % time, seconds, usecs/call, calls
        assert calls > 0, 'no copy_file_range call:\n' + open(trace).read()
        print('copy_file_range calls: %d' % calls)
        check_target(tgt, src, tfmt='raw', sfmt='raw')


class Writer(threading.Thread):
    """Random writes through NBD (libnbd), pausable."""

    def __init__(self, uri, size):
        super().__init__(daemon=True)
        import nbd
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.size = size
        self.go = threading.Event()
        self.stop = threading.Event()
        self.idle = threading.Event()
        self.writes = 0
        self.error = None

    def run(self):
        rng = random.Random(3)
        try:
            while not self.stop.is_set():
                if not self.go.is_set():
                    self.idle.set()
                    self.go.wait(0.05)
                    continue
                self.idle.clear()
                n = rng.choice((4096, 65536, 3 * 65536 + 512))
                off = rng.randrange(0, self.size - n) // 512 * 512
                self.h.pwrite(bytes([rng.randrange(1, 256)]) * n, off)
                self.writes += 1
        except Exception as ex:   # reported by the test
            self.error = ex
        finally:
            self.idle.set()

    def pause(self):
        self.go.clear()
        self.idle.wait(10)


def test_backup_point_in_time_under_writes():
    """Random guest writes during a full backup with 64 workers and no
    speed limit: the target is the source as it was at the start."""
    bt.require_nbd()
    with Env(nbd=True) as e:
        tgt = qcow2(e.d.path('tgt.qcow2'))
        # More data than the sparse default, so the job lasts a while.
        bt.qemu_io(e.src, 'write -P 0x5a %d %d' % (64 * MiB, 96 * MiB), fmt='qcow2')
        e.add('src', e.src)
        e.add('tgt', tgt)
        e.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'src',
                                         'name': 'disk', 'writable': True})
        w = Writer(e.d.uri(), SIZE)
        w.start()
        w.go.set()
        time.sleep(0.3)             # writes before the backup...
        w.pause()
        snap = e.d.path('snap.raw')  # ...are in the point-in-time image
        bt.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', e.d.uri(), snap])
        e.q.execute('blockdev-backup', {'job-id': 'b0', 'device': 'src', 'target': 'tgt',
                                        'sync': 'full', 'x-perf': {'max-workers': 64}})
        before = w.writes
        w.go.set()
        r = e.q.run_job('b0', auto_dismiss=True, wait=120)
        w.stop.set()
        w.join(10)
        bt.assert_eq(r.error, None, 'backup error')
        bt.assert_eq(w.error, None, 'writer error')
        assert w.writes > before, 'no write during the backup'
        print('writes during the backup: %d' % (w.writes - before))
        e.d.stop()
        p = bt.run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'qcow2', snap, tgt],
                   check=False)
        bt.assert_eq(p.returncode, 0, 'target vs point in time: ' + p.stdout + p.stderr)
        bt.check_image(tgt)


def mirror_memory(buf_size):
    """VmHWM growth (KiB) of the daemon over a mirror of a fully
    allocated 128 MiB source with the given buf-size."""
    with Env() as e:
        bt.qemu_io(e.src, 'write -P 0x3c 0 %d' % (128 * MiB), fmt='qcow2')
        tgt = qcow2(e.d.path('tgt.qcow2'))
        e.add('src', e.src)
        e.add('tgt', tgt, backing=None)
        base = bt.proc_status_kib(e.d.proc.pid, 'VmRSS')
        e.run('blockdev-mirror', {'job-id': 'm0', 'device': 'src', 'target': 'tgt',
                                  'sync': 'full', 'buf-size': buf_size}, 'm0',
              complete=True)
        return bt.proc_status_kib(e.d.proc.pid, 'VmHWM') - base


def test_mirror_buf_size_bounds_memory():
    """A 1 MiB buf-size keeps the daemon's peak memory small; a 64 MiB
    one may use more.  Bounds are generous: no timing, no exact sizes."""
    small = mirror_memory(MiB)
    large = mirror_memory(64 * MiB)
    print('VmHWM growth: buf-size 1 MiB %d KiB, 64 MiB %d KiB' % (small, large))
    assert small <= 48 * 1024, 'VmHWM grew %d KiB with buf-size 1 MiB' % small
    assert small <= large + 16 * 1024, \
        'buf-size 1 MiB grew %d KiB, 64 MiB grew %d KiB' % (small, large)


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
