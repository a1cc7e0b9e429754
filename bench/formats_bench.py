#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Image formats over NBD: blockd vs qemu-storage-daemon serving the same
image of each format that qemu-img can write (vmdk, vhdx, vpc, vdi, qed,
parallels, luks, qcow2 with LUKS inside, and qcow2 as the yardstick), converted from
one patterned raw file, so every image is fully allocated.

Rows per format: 4k random read at iodepth 32 and 1 MiB sequential read at
iodepth 8 (fio's nbd engine over a unix socket, as bench/bench.py).  Both
servers open the image read-only with writeback cache and thread-pool
AIO.  Printed: figure, ratio to qemu-storage-daemon, the server's CPU
seconds per GiB, and fio's own CPU in % of one core (near 100%: the row
is bound by the client, which shares the machine's cores).

  /usr/bin/python3 bench/formats_bench.py
  FORMATS="vmdk vhdx" SERVERS="blockd qemu-storage-daemon" RUNTIME=10 \
      SIZE=1G BLOCKD=path /usr/bin/python3 bench/formats_bench.py
"""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (bench.py: fio runner, CPU accounting, sockets)

GiB = bench.GiB
SECRET = 'blockd-bench-passphrase'

ROWS = [
    ('4k randread qd32', ['--rw=randread', '--bs=4k', '--iodepth=32']),
    ('1M seq read qd8', ['--rw=read', '--bs=1M', '--iodepth=8']),
]

# name: (qemu-img convert options, blockdev options of the format node)
FORMATS = {
    'qcow2': (['-O', 'qcow2'], 'driver=qcow2'),
    'vmdk': (['-O', 'vmdk', '-o', 'subformat=monolithicSparse'], 'driver=vmdk'),
    'vhdx': (['-O', 'vhdx', '-o', 'subformat=dynamic'], 'driver=vhdx'),
    'vpc': (['-O', 'vpc', '-o', 'subformat=dynamic,force_size=on'], 'driver=vpc'),
    'vdi': (['-O', 'vdi'], 'driver=vdi'),
    'qed': (['-O', 'qed'], 'driver=qed'),
    'parallels': (['-O', 'parallels'], 'driver=parallels'),
    'luks': (['--object', 'secret,id=sec0,data=' + SECRET, '-O', 'luks',
              '-o', 'key-secret=sec0,iter-time=100'],
             'driver=luks,key-secret=sec0'),
    'qcow2-luks': (['--object', 'secret,id=sec0,data=' + SECRET, '-O', 'qcow2',
                    '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,'
                          'encrypt.iter-time=100'],
                   'driver=qcow2,encrypt.format=luks,encrypt.key-secret=sec0'),
}


def server_cmd(name, fmt_opts, img, sock):
    args = ['--object', 'secret,id=sec0,data=' + SECRET,
            '--blockdev', 'driver=file,node-name=f,filename=%s,aio=threads,'
                          'cache.direct=off,read-only=on' % img,
            '--blockdev', '%s,node-name=fmt,file=f,read-only=on' % fmt_opts,
            '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
            '--export', 'type=nbd,id=e,node-name=fmt,name=disk']
    if name == 'blockd':
        exe = os.environ.get('BLOCKD') or os.path.join(bench.REPO, 'build', 'daemon', 'blockd')
        return [exe] + args
    if name == 'qemu-storage-daemon':
        return ['qemu-storage-daemon'] + args
    raise ValueError(name)


def run_row(name, fmt_opts, img, workdir, fio_args):
    sock = os.path.join(workdir, name + '.sock')
    return bench.run_nbd_row(name, server_cmd(name, fmt_opts, img, sock), img, sock,
                             workdir, fio_args)


def main():
    servers = os.environ.get('SERVERS', 'blockd qemu-storage-daemon').split()
    formats = os.environ.get('FORMATS', ' '.join(FORMATS)).split()
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        print('formats bench: unknown format(s) %s; known: %s' %
              (' '.join(unknown), ' '.join(FORMATS)))
        return 1
    if not bench.fio_has_nbd():
        print('formats bench: fio with the nbd engine is required')
        return 1
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-formats-bench-')
    os.makedirs(workdir, exist_ok=True)
    raw = os.path.join(workdir, 'bench.raw')
    if not os.path.exists(raw) or os.path.getsize(raw) != bench.size_bytes(bench.SIZE):
        bench.make_image(raw)
    print('formats bench: %s images in %s, read-only exports, unix socket, '
          'fio runtime %ds' % (bench.SIZE, workdir, bench.RUNTIME), flush=True)
    res = {}
    for fmt in formats:
        convert, fmt_opts = FORMATS[fmt]
        img = os.path.join(workdir, 'image.' + fmt)
        subprocess.run(['qemu-img', 'convert', '-f', 'raw'] + convert + [raw, img],
                       check=True)
        for row, fio_args in ROWS:
            for s in servers:
                res[(fmt, row, s)] = run_row(s, fmt_opts, img, workdir, fio_args)
        os.unlink(img)
        print('  %s done' % fmt, flush=True)

    print()
    print('%-11s %-17s %-20s %10s %6s %8s %9s %7s' % (
        'format', 'workload', 'server', 'figure', 'unit', 'vs qsd', 'CPU s/GiB', 'fio CPU'))
    for fmt in formats:
        for row, _ in ROWS:
            unit = 'IOPS' if '4k' in row else 'MiB/s'
            qsd = res.get((fmt, row, 'qemu-storage-daemon'), {}).get('figure')
            for s in servers:
                r = res[(fmt, row, s)]
                if 'figure' not in r:
                    print('%-11s %-17s %-20s %10s %6s %8s %s' % (fmt, row, s, 'n/a', unit,
                                                                  '-', r['error']))
                    continue
                vq = '%.2fx' % (r['figure'] / qsd) if qsd else '-'
                print('%-11s %-17s %-20s %10.0f %6s %8s %9.2f %6.0f%%' % (
                    fmt, row, s, r['figure'], unit, vq, r['cpu_per_gib'], r['client_cpu']))
    if not os.environ.get('BENCH_DIR'):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
