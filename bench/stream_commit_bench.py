#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""block-stream and block-commit of 1 GiB: blockd vs qemu-storage-daemon.

Each row starts every daemon on its own fresh copy of the same qcow2 chain
(files copied from templates made once, page cache warmed), runs one job
with speed 0 and measures from the command to BLOCK_JOB_COMPLETED (for the
active commit: to BLOCK_JOB_READY, then job-complete, to COMPLETED).

  stream        base (1 GiB of data) <- top (empty);  block-stream top
  commit        base (empty) <- mid (1 GiB) <- top;   block-commit top-node=mid
  active commit base (empty) <- top (1 GiB);          block-commit device=top

Printed: seconds, MiB/s, daemon CPU seconds, and blockd's time as a ratio
of qemu-storage-daemon's (< 1: blockd is faster).  Not a test.

  /usr/bin/python3 bench/stream_commit_bench.py
  SIZE=256M RUNS=3 BLOCKD=build/daemon/blockd BENCH_DIR=/tmp/x ...
"""

import os
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


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def make_templates(d):
    """base-data: SIZE of data; empty: no data; overlays made per run."""
    data = os.path.join(d, 'tpl-data.qcow2')
    empty = os.path.join(d, 'tpl-empty.qcow2')
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', empty, str(SIZE))
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', data, str(SIZE))
    # Four patterns, so that no range is all zeroes.
    step = SIZE // 4
    sh('qemu-io', '-f', 'qcow2', *sum((['-c', 'write -P 0x%x %d %d' % (0x5a + i, i * step,
                                                                      step)]
                                       for i in range(4)), []), data)
    return data, empty


def chain(d, tpl, kind):
    """Fresh images for one run; returns the blockdev-add options."""
    data, empty = tpl
    paths = {}

    def copy(src, name):
        paths[name] = os.path.join(d, name + '.qcow2')
        shutil.copyfile(src, paths[name])

    def overlay(name, backing):
        paths[name] = os.path.join(d, name + '.qcow2')
        sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', paths[backing], '-F', 'qcow2',
           paths[name])

    if kind == 'stream':
        copy(data, 'base')
        overlay('top', 'base')
        names = ['top', 'base']
    elif kind == 'commit':
        copy(empty, 'base')
        copy(data, 'mid')
        sh('qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', paths['base'], '-F', 'qcow2',
           paths['mid'])
        overlay('top', 'mid')
        names = ['top', 'mid', 'base']
    else:
        copy(empty, 'base')
        copy(data, 'top')
        sh('qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', paths['base'], '-F', 'qcow2',
           paths['top'])
        names = ['top', 'base']
    for p in paths.values():
        with open(p, 'rb') as f:        # same page-cache state for both
            while f.read(1 << 20):
                pass
    opts = None
    for n in reversed(names):
        o = {'driver': 'qcow2', 'node-name': n,
             'file': {'driver': 'file', 'node-name': n + '-file', 'filename': paths[n],
                      'aio': 'threads'}}
        if opts is not None:
            o['backing'] = opts
        opts = o
    return opts


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def wait_job(q, name, job):
    while True:
        ev = q.wait_event(name, timeout=3600)
        if ev['data'].get('device') == job:
            return ev['data']


def run_one(exe, d, tpl, kind):
    sock = os.path.join(d, 'qmp.sock')
    opts = chain(d, tpl, kind)
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
        q.execute('blockdev-add', opts)
        cpu0, t0 = cpu_seconds(p.pid), time.monotonic()
        if kind == 'stream':
            q.execute('block-stream', {'job-id': 'j', 'device': 'top'})
        elif kind == 'commit':
            q.execute('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid'})
        else:
            q.execute('block-commit', {'job-id': 'j', 'device': 'top'})
            wait_job(q, 'BLOCK_JOB_READY', 'j')
            q.execute('block-job-complete', {'device': 'j'})
        ev = wait_job(q, 'BLOCK_JOB_COMPLETED', 'j')
        t1, cpu1 = time.monotonic(), cpu_seconds(p.pid)
        if ev.get('error'):
            raise RuntimeError('%s %s: %s' % (exe, kind, ev['error']))
        q.execute('quit')
        q.close()
        p.wait(60)
        return t1 - t0, cpu1 - cpu0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main():
    base_dir = os.environ.get('BENCH_DIR')
    d = tempfile.mkdtemp(prefix='blockd-scbench-', dir=base_dir)
    try:
        tpl = make_templates(d)
        mib = SIZE / (1 << 20)
        print('%-14s %-20s %8s %9s %8s %7s' % ('job', 'daemon', 'seconds', 'MiB/s', 'cpu s',
                                               'ratio'))
        for kind in ('stream', 'commit', 'active commit'):
            best = {}
            for name, exe in DAEMONS:
                times = [run_one(exe, d, tpl, kind) for _ in range(RUNS)]
                best[name] = min(times)
            for name, _ in DAEMONS:
                secs, cpu = best[name]
                ratio = secs / best['qemu-storage-daemon'][0]
                print('%-14s %-20s %8.2f %9.0f %8.2f %7.2f' % (kind, name, secs, mib / secs,
                                                               cpu, ratio))
        print('size %d MiB, best of %d run(s); ratio = time / qemu-storage-daemon time'
              % (mib, RUNS))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
