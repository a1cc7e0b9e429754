#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""qcow2 NBD benchmark: blockd vs qemu-storage-daemon and qemu-nbd serving
the same qcow2 image over a unix socket (fio nbd engine, as bench/bench.py),
plus blockd serving the raw file the qcow2 was converted from.

Rows: 4k randread/randwrite at iodepth 32 on a fully allocated image and on
an empty one (allocation cost: every server starts from its own fresh copy
of the empty image for each row), 1 MiB sequential read/write at iodepth 8
on the allocated image.  Each server runs with writeback cache and
thread-pool AIO.  Printed: figure, ratio to qemu-storage-daemon, ratio to
blockd raw (allocated rows), the server's CPU seconds per GiB, and fio's
own CPU use in % of one core (near 100%: the row is bound by the client,
which shares the machine's cores with the server).

  /usr/bin/python3 bench/qcow2_bench.py
  SERVERS="blockd qemu-storage-daemon" RUNTIME=10 SIZE=1G BLOCKD=path ...
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py: fio runner, CPU accounting, sockets)

SIZE = bench.SIZE
GiB = bench.GiB

ROWS = [
    # name, image kind, fio args
    ('4k randread qd32 allocated', 'alloc', ['--rw=randread', '--bs=4k', '--iodepth=32']),
    ('4k randwrite qd32 allocated', 'alloc', ['--rw=randwrite', '--bs=4k', '--iodepth=32']),
    ('4k randread qd32 empty', 'empty', ['--rw=randread', '--bs=4k', '--iodepth=32']),
    ('4k randwrite qd32 empty', 'empty', ['--rw=randwrite', '--bs=4k', '--iodepth=32']),
    ('1M seq read qd8 allocated', 'alloc', ['--rw=read', '--bs=1M', '--iodepth=8']),
    ('1M seq write qd8 allocated', 'alloc', ['--rw=write', '--bs=1M', '--iodepth=8']),
]


def server_cmd(name, fmt, img, sock):
    file_opts = 'driver=file,node-name=f,filename=%s,aio=threads,cache.direct=off' % img
    qsd_style = ['--blockdev', file_opts,
                 '--blockdev', 'driver=%s,node-name=fmt,file=f' % fmt,
                 '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                 '--export', 'type=nbd,id=e,node-name=fmt,name=disk,writable=on']
    if name == 'blockd':
        exe = os.environ.get('BLOCKD') or os.path.join(bench.REPO, 'build', 'daemon', 'blockd')
        return [exe] + qsd_style
    if name == 'qemu-storage-daemon':
        return ['qemu-storage-daemon'] + qsd_style
    if name == 'qemu-nbd':
        return ['qemu-nbd', '-f', fmt, '-k', sock, '-x', 'disk', '--cache=writeback',
                '--aio=threads', '-e', '16', '-t', img]
    raise ValueError(name)


def run_row(name, fmt, img, workdir, fio_args):
    sock = os.path.join(workdir, name + '.sock')
    return bench.run_nbd_row(name, server_cmd(name, fmt, img, sock), img, sock, workdir,
                             fio_args)


def prepare(workdir):
    raw = os.path.join(workdir, 'bench.raw')
    alloc = os.path.join(workdir, 'alloc.qcow2')
    empty = os.path.join(workdir, 'empty.qcow2')
    if not os.path.exists(raw) or os.path.getsize(raw) != bench.size_bytes(SIZE):
        bench.make_image(raw)
    if not os.path.exists(alloc):
        subprocess.run(['qemu-img', 'convert', '-O', 'qcow2', raw, alloc], check=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', empty, SIZE], check=True)
    os.sync()
    return raw, alloc, empty


def main():
    servers = os.environ.get('SERVERS', 'blockd qemu-storage-daemon qemu-nbd').split()
    if not bench.fio_has_nbd():
        print('qcow2 bench: fio with the nbd engine is required')
        return 1
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-qcow2-bench-')
    os.makedirs(workdir, exist_ok=True)
    raw, alloc, empty = prepare(workdir)
    print('qcow2 bench: %s image (64k clusters) in %s, unix socket, fio runtime %ds' %
          (SIZE, workdir, bench.RUNTIME), flush=True)
    res = {}
    scratch = os.path.join(workdir, 'scratch.qcow2')
    for row, kind, fio_args in ROWS:
        for s in servers:
            if kind == 'empty':
                shutil.copyfile(empty, scratch)
                img = scratch
            else:
                img = alloc
            res[(row, s)] = run_row(s, 'qcow2', img, workdir, fio_args)
        if kind == 'alloc' and 'blockd' in servers:
            res[(row, 'blockd raw')] = run_row('blockd', 'raw', raw, workdir, fio_args)
        print('  %s done' % row, flush=True)

    print()
    print('%-28s %-20s %10s %6s %8s %8s %9s %7s' % ('workload', 'server', 'figure', 'unit',
                                                     'vs qsd', 'vs raw', 'CPU s/GiB', 'fio CPU'))
    for row, kind, fio_args in ROWS:
        unit = 'IOPS' if '4k' in row else 'MiB/s'
        qsd = res.get((row, 'qemu-storage-daemon'), {}).get('figure')
        rawfig = res.get((row, 'blockd raw'), {}).get('figure')
        names = servers + (['blockd raw'] if (row, 'blockd raw') in res else [])
        for s in names:
            r = res[(row, s)]
            if 'figure' not in r:
                print('%-28s %-20s %10s %6s %8s %8s %s' % (row, s, 'n/a', unit, '-', '-',
                                                           r['error']))
                continue
            vq = '%.2fx' % (r['figure'] / qsd) if qsd and s != 'blockd raw' else '-'
            vr = '%.0f%%' % (100 * r['figure'] / rawfig) if rawfig and s == 'blockd' else '-'
            print('%-28s %-20s %10.0f %6s %8s %8s %9.2f %6.0f%%' % (
                row, s, r['figure'], unit, vq, vr, r['cpu_per_gib'], r['client_cpu']))
    if not os.environ.get('BENCH_DIR'):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
