#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The block jobs on the copy engine: blockd vs qemu-storage-daemon, with
qemu-img convert and cp --reflink=never as the ceiling.

Every row starts each daemon on its own fresh copy of the same images
(copied from templates made once, page cache warmed), runs one job with
speed 0 and the daemon's default tuning, and measures from the command to
BLOCK_JOB_COMPLETED (mirror and active commit: to BLOCK_JOB_READY, then
job-complete, to COMPLETED).  Two sources: fully allocated ('full') and
10% allocated in scattered 1 MiB extents ('10%').

  full backup    blockdev-backup sync=full to an empty qcow2
  incr backup    10% random 64 KiB writes recorded in a persistent
                 bitmap, then sync=incremental to an empty qcow2
  mirror         blockdev-mirror sync=full to an empty qcow2, completed
  stream         base (the source) <- top (empty); block-stream top
  commit         base (empty) <- mid (the source) <- top; top-node=mid
  active commit  base (empty) <- top (the source); block-commit top
  convert        qemu-img convert -O qcow2 of the source (no daemon)
  cp             cp --reflink=never of the source file (no daemon)

Printed: seconds, MiB/s of the image size, the daemon's CPU seconds per
GiB (utime+stime from /proc/PID/stat) and the speed-up over
qemu-storage-daemon (> 1: blockd is faster).  Not a test.

  /usr/bin/python3 bench/jobs_bench.py
  SIZE=256M RUNS=3 BLOCKD=build/daemon/blockd BENCH_DIR=/tmp/x ...
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
from blockd_test import QMP  # noqa: E402


def parse_size(s):
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


SIZE = parse_size(os.environ.get('SIZE', '1G'))
RUNS = int(os.environ.get('RUNS', '1'))
BLOCKD = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
DAEMONS = [('blockd', BLOCKD), ('qemu-storage-daemon', 'qemu-storage-daemon')]
MiB = 1 << 20
JOBS = ('full backup', 'incr backup', 'mirror', 'stream', 'commit', 'active commit')
# ONLY='active commit,mirror' runs those rows (and the ceilings) alone.
ONLY = [j.strip() for j in os.environ.get('ONLY', '').split(',') if j.strip()]


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def qemu_io(path, cmds):
    # Batches: one qemu-io per few hundred commands keeps argv short.
    for i in range(0, len(cmds), 400):
        sh('qemu-io', '-f', 'qcow2', *sum((['-c', c] for c in cmds[i:i + 400]), []), path)


def make_templates(d):
    """Per allocation: the source, the source with a bitmap and 10% random
    writes recorded in it; and one empty image."""
    empty = os.path.join(d, 'tpl-empty.qcow2')
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', empty, str(SIZE))
    tpl = {'empty': empty}
    rng = random.Random(7)
    for alloc in ('full', '10%'):
        src = os.path.join(d, 'tpl-%s.qcow2' % alloc.rstrip('%'))
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', src, str(SIZE))
        if alloc == 'full':
            step = SIZE // 4    # four patterns: no range is all zeroes
            qemu_io(src, ['write -P 0x%x %d %d' % (0x5a + i, i * step, step)
                          for i in range(4)])
        else:
            n = SIZE // MiB
            slots = sorted(rng.sample(range(n), max(1, n // 10)))
            qemu_io(src, ['write -P 0x%x %d %d' % (0x20 + i % 200, s * MiB, MiB)
                          for i, s in enumerate(slots)])
        incr = os.path.join(d, 'tpl-%s-incr.qcow2' % alloc.rstrip('%'))
        shutil.copyfile(src, incr)
        sh('qemu-img', 'bitmap', '--add', incr, 'b0')
        clusters = SIZE // 65536
        picks = rng.sample(range(clusters), clusters // 10)
        qemu_io(incr, ['write -P 0xa5 %d 65536' % (c * 65536) for c in picks])
        tpl[alloc] = src
        tpl[alloc + ' incr'] = incr
    return tpl


def warm(paths):
    for p in paths:
        with open(p, 'rb') as f:        # same page-cache state for both
            while f.read(1 << 20):
                pass
    os.sync()       # the copies' writeback must not land in the job


def node(name, path, backing=None):
    o = {'driver': 'qcow2', 'node-name': name,
         'file': {'driver': 'file', 'node-name': name + '-file', 'filename': path,
                  'aio': 'threads'}}
    if backing is not None:
        o['backing'] = backing
    return o


def setup(d, tpl, alloc, kind):
    """Fresh images for one run: (the blockdev-add option sets, the job
    command and its arguments, whether it goes through 'ready')."""
    paths = {}

    def copy(src, name):
        paths[name] = os.path.join(d, name + '.qcow2')
        shutil.copyfile(src, paths[name])

    def rebase(name, backing):
        sh('qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', paths[backing], '-F', 'qcow2',
           paths[name])

    def overlay(name, backing):
        paths[name] = os.path.join(d, name + '.qcow2')
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', paths[backing], '-F', 'qcow2',
           paths[name])

    if kind in ('full backup', 'incr backup', 'mirror'):
        copy(tpl[alloc + (' incr' if kind == 'incr backup' else '')], 'src')
        copy(tpl['empty'], 'tgt')
        adds = [node('src', paths['src']), node('tgt', paths['tgt'], backing=None)]
        if kind == 'mirror':
            cmd = ('blockdev-mirror', {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                                       'sync': 'full'}, True)
        else:
            args = {'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': 'full'}
            if kind == 'incr backup':
                args.update({'sync': 'incremental', 'bitmap': 'b0'})
            cmd = ('blockdev-backup', args, False)
    elif kind == 'stream':
        copy(tpl[alloc], 'base')
        overlay('top', 'base')
        adds = [node('top', paths['top'], node('base', paths['base']))]
        cmd = ('block-stream', {'job-id': 'j', 'device': 'top'}, False)
    elif kind == 'commit':
        copy(tpl['empty'], 'base')
        copy(tpl[alloc], 'mid')
        rebase('mid', 'base')
        overlay('top', 'mid')
        adds = [node('top', paths['top'], node('mid', paths['mid'],
                                              node('base', paths['base'])))]
        cmd = ('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid'}, False)
    else:
        copy(tpl['empty'], 'base')
        copy(tpl[alloc], 'top')
        rebase('top', 'base')
        adds = [node('top', paths['top'], node('base', paths['base']))]
        cmd = ('block-commit', {'job-id': 'j', 'device': 'top'}, True)
    warm(paths.values())
    return adds, cmd


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def wait_job(q, name, job):
    while True:
        ev = q.wait_event(name, timeout=3600)
        if ev['data'].get('device') == job:
            return ev['data']


def run_one(exe, d, tpl, alloc, kind):
    sock = os.path.join(d, 'qmp.sock')
    adds, (cmd, args, ready) = setup(d, tpl, alloc, kind)
    p = subprocess.Popen([exe, '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % sock,
                          '--monitor', 'chardev=m'], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.01)
        time.sleep(0.05)
        q = QMP(sock)
        for o in adds:
            q.execute('blockdev-add', o)
        cpu0, t0 = cpu_seconds(p.pid), time.monotonic()
        q.execute(cmd, args)
        if ready:
            wait_job(q, 'BLOCK_JOB_READY', 'j')
            q.execute('block-job-complete', {'device': 'j'})
        ev = wait_job(q, 'BLOCK_JOB_COMPLETED', 'j')
        t1, cpu1 = time.monotonic(), cpu_seconds(p.pid)
        if ev.get('error'):
            raise RuntimeError('%s %s %s: %s' % (exe, alloc, kind, ev['error']))
        q.execute('quit')
        q.close()
        p.wait(60)
        return t1 - t0, cpu1 - cpu0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def run_tool(d, tpl, alloc, kind):
    src = os.path.join(d, 'src.qcow2')
    dst = os.path.join(d, 'dst.qcow2')
    shutil.copyfile(tpl[alloc], src)
    warm([src])
    for p in (dst,):
        if os.path.exists(p):
            os.unlink(p)
    t0 = time.monotonic()
    if kind == 'convert':
        sh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'qcow2', src, dst)
    else:
        sh('cp', '--reflink=never', src, dst)
    return time.monotonic() - t0, None


def main():
    base_dir = os.environ.get('BENCH_DIR')
    d = tempfile.mkdtemp(prefix='blockd-jobsbench-', dir=base_dir)
    gib = SIZE / (1 << 30)
    mib = SIZE / MiB
    try:
        tpl = make_templates(d)
        print('%-5s %-14s %-20s %8s %8s %9s %8s' % ('src', 'job', 'daemon', 'seconds',
                                                   'MiB/s', 'cpu s/GiB', 'speedup'))
        for alloc in ('full', '10%'):
            for kind in JOBS:
                if ONLY and kind not in ONLY:
                    continue
                best = {}
                for name, exe in DAEMONS:
                    best[name] = min(run_one(exe, d, tpl, alloc, kind) for _ in range(RUNS))
                for name, _ in DAEMONS:
                    secs, cpu = best[name]
                    print('%-5s %-14s %-20s %8.2f %8.0f %9.2f %8.2f'
                          % (alloc, kind, name, secs, mib / secs, cpu / gib,
                             best['qemu-storage-daemon'][0] / secs))
                sys.stdout.flush()
            for kind in ('convert', 'cp'):
                secs = min(run_tool(d, tpl, alloc, kind)[0] for _ in range(RUNS))
                print('%-5s %-14s %-20s %8.2f %8.0f %9s %8s'
                      % (alloc, kind, '-', secs, mib / secs, '-', '-'))
                sys.stdout.flush()
        print('size %d MiB, best of %d run(s); speedup = qemu-storage-daemon time / time'
              % (mib, RUNS))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
