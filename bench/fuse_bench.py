#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""FUSE export benchmark: fio on the mounted file of blockd's FUSE export
vs qemu-storage-daemon's FUSE export of the same raw image, and the raw
image file read directly (the ceiling).

Both daemons serve the image as file (cache.direct=off, aio=threads) + raw,
writable. fio opens the mounted files with O_DIRECT, so that every request
reaches the daemon (qemu-storage-daemon's export would otherwise answer
from the kernel page cache); the raw file is read buffered from the page
cache, which is also where both daemons' file nodes read from.

Rows: psync with two jobs, and io_uring at iodepth 32, each for 4k random
read and write and 1 MiB sequential read and write.
  ./bench/fuse_bench.py                  (RUNTIME=5 SIZE=1G by default)
  BLOCKD=build/daemon/blockd RUNTIME=10 ./bench/fuse_bench.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = int(os.environ.get('RUNTIME', '5'))
SIZE = os.environ.get('SIZE', '1G')

WORKLOADS = [
    # name, unit, fio arguments
    ('psync x2  4k randread', 'IOPS', ['--ioengine=psync', '--numjobs=2', '--rw=randread', '--bs=4k']),
    ('psync x2  4k randwrite', 'IOPS', ['--ioengine=psync', '--numjobs=2', '--rw=randwrite', '--bs=4k']),
    ('psync x2  1M seq read', 'MiB/s', ['--ioengine=psync', '--numjobs=2', '--rw=read', '--bs=1M']),
    ('psync x2  1M seq write', 'MiB/s', ['--ioengine=psync', '--numjobs=2', '--rw=write', '--bs=1M']),
    ('uring qd32 4k randread', 'IOPS', ['--ioengine=io_uring', '--iodepth=32', '--rw=randread', '--bs=4k']),
    ('uring qd32 4k randwrite', 'IOPS', ['--ioengine=io_uring', '--iodepth=32', '--rw=randwrite', '--bs=4k']),
    ('uring qd32 1M seq read', 'MiB/s', ['--ioengine=io_uring', '--iodepth=32', '--rw=read', '--bs=1M']),
    ('uring qd32 1M seq write', 'MiB/s', ['--ioengine=io_uring', '--iodepth=32', '--rw=write', '--bs=1M']),
]


def size_bytes(s):
    mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def is_mounted(path):
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        return any(line.split()[4] == path for line in f)


def unmount(path):
    if is_mounted(path):
        subprocess.run(['fusermount3', '-u', '-z', path], capture_output=True)


def daemon_cmd(name, img, mnt):
    args = ['--blockdev', 'driver=file,node-name=f,filename=%s,aio=threads,cache.direct=off' % img,
            '--blockdev', 'driver=raw,node-name=r,file=f',
            '--export', 'type=fuse,id=e,node-name=r,mountpoint=%s,writable=on' % mnt]
    if name == 'blockd':
        return [os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')] + args
    return ['qemu-storage-daemon'] + args


def run_fio(path, fio_args, direct):
    # invalidate=0: fio would otherwise drop the raw file's page cache
    # before each run and measure the disk instead of the ceiling.
    cmd = ['fio', '--name=bench', '--filename=' + path, '--size=' + SIZE,
           '--direct=%d' % direct, '--invalidate=0', '--time_based', '--runtime=%d' % RUNTIME,
           '--ramp_time=1', '--group_reporting', '--output-format=json'] + fio_args
    p = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=RUNTIME + 120)
    job = json.loads(p.stdout[p.stdout.index('{'):])['jobs'][0]
    st = job['read'] if job['read']['io_bytes'] else job['write']
    if '--bs=4k' in fio_args:
        return st['iops']
    return st['bw_bytes'] / (1 << 20)


def bench_target(name, img, workdir):
    """Figures per workload for one target ('raw file' needs no daemon)."""
    results = {}
    if name == 'raw file':
        for wname, _, fio_args in WORKLOADS:
            results[wname] = run_fio(img, fio_args, direct=0)
        return results
    mnt = os.path.join(workdir, name + '.mnt')
    open(mnt, 'w').close()
    cmd = daemon_cmd(name, img, mnt)
    if not shutil.which(cmd[0]) and not os.access(cmd[0], os.X_OK):
        return {'error': '%s not available' % cmd[0]}
    errlog = open(os.path.join(workdir, name + '.stderr'), 'w')
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    try:
        end = time.monotonic() + 15
        while not is_mounted(mnt):
            if proc.poll() is not None or time.monotonic() > end:
                return {'error': 'did not mount (see %s)' % errlog.name}
            time.sleep(0.05)
        for wname, _, fio_args in WORKLOADS:
            try:
                results[wname] = run_fio(mnt, fio_args, direct=1)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as e:
                results[wname] = None
                print('  %s %s: %s' % (name, wname, str(e).splitlines()[0][:100]), flush=True)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        unmount(mnt)
        errlog.close()
    return results


def main():
    if not shutil.which('fio'):
        print('fio not installed')
        return 77
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-fuse-bench-')
    os.makedirs(workdir, exist_ok=True)
    img = os.path.join(workdir, 'bench.raw')
    if not os.path.exists(img) or os.path.getsize(img) != size_bytes(SIZE):
        with open(img, 'wb') as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size_bytes(SIZE) >> 20):
                f.write(chunk)
    print('fuse bench: %s raw image %s, fio runtime %ds, %d CPUs' %
          (SIZE, img, RUNTIME, os.cpu_count()), flush=True)
    targets = ['blockd', 'qemu-storage-daemon', 'raw file']
    res = {}
    for t in targets:
        print('running %s ...' % t, flush=True)
        res[t] = bench_target(t, img, workdir)
        if 'error' in res[t]:
            print('  %s: %s' % (t, res[t]['error']), flush=True)
    print()
    print('%-26s %6s %12s %12s %12s %9s %9s' % ('workload', 'unit', 'blockd', 'qsd-fuse', 'raw file',
                                                'vs qsd', 'vs raw'))
    for wname, unit, _ in WORKLOADS:
        row = [res[t].get(wname) for t in targets]
        cells = ['%12.0f' % v if v else '%12s' % '-' for v in row]
        b, q, r = row
        vq = '%8.2fx' % (b / q) if b and q else '%9s' % '-'
        vr = '%8.0f%%' % (100 * b / r) if b and r else '%9s' % '-'
        print('%-26s %6s %s %s %s' % (wname, unit, ' '.join(cells), vq, vr))
    return 0


if __name__ == '__main__':
    sys.exit(main())
