#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""rbd benchmark: one RBD image on the throw-away test cluster
(tests/integration/ceph_cluster.py: one memstore OSD), exported over NBD
on a unix socket by blockd and by qemu-storage-daemon (its rbd driver,
qemu-block-extra), measured with fio's nbd engine, and `rbd bench` (librbd
with no NBD hop) as the ceiling, in one run.

Rows: 4k random read and write at queue depth 32, 1 MiB sequential read at
depth 8.  The image is written in full first, so reads find data.
Printed: figure, ratio to qemu-storage-daemon, ratio to `rbd bench`, and
the server's CPU seconds per GiB.  Targets (issue 16): >= 1.5x
qemu-storage-daemon and >= 0.8x `rbd bench` on every row.

  /usr/bin/python3 bench/rbd_bench.py
  SERVERS="blockd qemu-storage-daemon" RUNTIME=10 SIZE=256M BLOCKD=path ...

Memstore keeps the objects in the OSD's memory: SIZE stays well under
the cluster's 2 GiB (default 256M).
"""

import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests', 'integration'))
os.environ.setdefault('SIZE', '256M')
import bench  # noqa: E402  (fio runner, CPU accounting, sockets)
from ceph_cluster import CephCluster, CephUnavailable  # noqa: E402

GiB = bench.GiB if hasattr(bench, 'GiB') else 1 << 30
SIZE = bench.SIZE
IMAGE = 'bench'

ROWS = [
    # name, fio args, rbd bench args
    ('4k randread qd32', ['--rw=randread', '--bs=4k', '--iodepth=32'],
     ['--io-type', 'read', '--io-size', '4096', '--io-threads', '32',
      '--io-pattern', 'rand']),
    ('4k randwrite qd32', ['--rw=randwrite', '--bs=4k', '--iodepth=32'],
     ['--io-type', 'write', '--io-size', '4096', '--io-threads', '32',
      '--io-pattern', 'rand']),
    ('1M seq read qd8', ['--rw=read', '--bs=1M', '--iodepth=8'],
     ['--io-type', 'read', '--io-size', str(1 << 20), '--io-threads', '8',
      '--io-pattern', 'seq']),
]


def server_cmd(name, c, sock):
    node = ('{"driver": "rbd", "node-name": "r", "pool": "%s", "image": "%s", '
            '"conf": "%s", "cache": {"direct": false}}' % (c.pool, IMAGE, c.conf))
    args = ['--blockdev', node,
            '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
            '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=on']
    if name == 'blockd':
        exe = os.environ.get('BLOCKD') or os.path.join(bench.REPO, 'build', 'daemon', 'blockd')
        return [exe] + args
    if name == 'qemu-storage-daemon':
        return ['qemu-storage-daemon'] + args
    raise ValueError(name)


def run_server_row(name, c, workdir, fio_args):
    sock = os.path.join(workdir, name + '.sock')
    if os.path.exists(sock):
        os.unlink(sock)
    cmd = server_cmd(name, c, sock)
    errlog = open(os.path.join(workdir, name + '.stderr'), 'a')
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    except OSError as e:
        errlog.close()
        return {'error': str(e)}
    try:
        if not bench.wait_socket(sock, proc, timeout=60):
            return {'error': 'did not start (see %s)' % errlog.name}
        c0 = bench.cpu_seconds(proc.pid)
        try:
            fig, moved, _ = bench.run_workload_cpu('nbd+unix:///disk?socket=%s' % sock,
                                                   fio_args)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as e:
            return {'error': str(e).splitlines()[0][:60]}
        cpu = bench.cpu_seconds(proc.pid) - c0
        return {'figure': fig, 'cpu_per_gib': cpu / (moved / GiB) if moved else 0}
    finally:
        bench.stop_server(proc)
        errlog.close()


def run_rbd_bench(c, row, rbd_args):
    """`rbd bench`: a fixed amount of I/O (it has no runtime option),
    about what the fio row moves at the same rate."""
    total = bench.size_bytes(SIZE) if '1M' in row else min(bench.size_bytes(SIZE), 64 << 20)
    p = c.rbd('bench', *rbd_args, '--io-total', str(total), '%s/%s' % (c.pool, IMAGE),
              check=False)
    m = re.search(r'elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops/sec:\s*([\d.]+)\s+'
                  r'bytes/sec:\s*([\d.]+)\s*(\w+)?', p.stdout)
    if p.returncode != 0 or not m:
        return {'error': (p.stderr or p.stdout).strip().splitlines()[-1][:60]
                if (p.stderr or p.stdout).strip() else 'rbd bench failed'}
    if '4k' in row:
        return {'figure': float(m.group(3))}
    rate = float(m.group(4))
    unit = (m.group(5) or '').lower()
    scale = {'kib': 1 << 10, 'mib': 1 << 20, 'gib': 1 << 30}.get(unit, 1)
    return {'figure': rate * scale / (1 << 20)}


def main():
    servers = os.environ.get('SERVERS', 'blockd qemu-storage-daemon').split()
    if not bench.fio_has_nbd():
        print('rbd bench: fio with the nbd engine is required')
        return 1
    workdir = tempfile.mkdtemp(prefix='blockd-rbd-bench-')
    try:
        c = CephCluster().start()
    except CephUnavailable as e:
        print('rbd bench: %s' % e)
        return 1
    try:
        size = bench.size_bytes(SIZE)
        c.rbd('create', '--size', '%dM' % (size >> 20), '%s/%s' % (c.pool, IMAGE))
        c.rbd('bench', '--io-type', 'write', '--io-size', str(4 << 20), '--io-threads', '4',
              '--io-pattern', 'seq', '--io-total', str(size), '%s/%s' % (c.pool, IMAGE),
              timeout=600)
        print('rbd bench: %s image on a one-OSD memstore cluster, unix socket, fio runtime %ds'
              % (SIZE, bench.RUNTIME), flush=True)
        res = {}
        for row, fio_args, rbd_args in ROWS:
            for s in servers:
                res[(row, s)] = run_server_row(s, c, workdir, fio_args)
            res[(row, 'rbd bench')] = run_rbd_bench(c, row, rbd_args)
            print('  %s done' % row, flush=True)
    finally:
        c.stop()

    print()
    print('%-20s %-20s %10s %6s %8s %8s %9s' % ('workload', 'server', 'figure', 'unit',
                                               'vs qsd', 'vs rbd', 'CPU s/GiB'))
    for row, _, _ in ROWS:
        unit = 'IOPS' if '4k' in row else 'MiB/s'
        qsd = res.get((row, 'qemu-storage-daemon'), {}).get('figure')
        ceiling = res.get((row, 'rbd bench'), {}).get('figure')
        for s in servers + ['rbd bench']:
            r = res[(row, s)]
            if 'figure' not in r:
                print('%-20s %-20s %10s %6s %8s %8s %s' % (row, s, 'n/a', unit, '-', '-',
                                                           r['error']))
                continue
            vq = '%.2fx' % (r['figure'] / qsd) if qsd and s == 'blockd' else '-'
            vr = ('%.2fx' % (r['figure'] / ceiling)
                  if ceiling and s != 'rbd bench' else '-')
            cpu = '%9.2f' % r['cpu_per_gib'] if 'cpu_per_gib' in r else '%9s' % '-'
            print('%-20s %-20s %10.0f %6s %8s %8s %s' % (row, s, r['figure'], unit, vq, vr,
                                                         cpu))
    return 0


if __name__ == '__main__':
    sys.exit(main())
