#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""NBD client benchmark: the 'nbd' block driver of blockd vs
qemu-storage-daemon's, side by side in one run against the same server.

  A  one server: qemu-storage-daemon exporting a fully allocated raw image
     (SIZE, default 1 GiB, random data) read-only on a unix socket;
  B  the re-exporting daemon, one at a time: blockd, then
     qemu-storage-daemon, each opening A's export with driver=nbd
     (read-only) and exporting that node over NBD on a unix socket of its
     own.

fio's nbd engine measures B's export: 4k random read at queue depth 32
(IOPS) and 1 MiB sequential read at queue depth 8 (MiB/s), RUNTIME
seconds each.  For each row: the figure, B's CPU seconds per GiB moved
(A's CPU is the same server for both and not counted), and at the end the
ratio blockd/QSD.  A daemon that cannot do it (blockd before its nbd
driver lands, or BLOCKD_REFERENCE=1) shows 'not available' and the
reason; the other still runs.
  bench/nbd_client_bench.py                      (RUNTIME=5 SIZE=1G)
  SERVERS=qemu-storage-daemon RUNTIME=3 BLOCKD=path bench/nbd_client_bench.py
"""

import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'bench'))
import bench  # noqa: E402
from bench import GiB, cpu_seconds, make_image, size_bytes, stop_server, wait_socket  # noqa: E402

RUNTIME = int(os.environ.get('RUNTIME', '5'))
SIZE = os.environ.get('SIZE', '1G')
QSD = 'qemu-storage-daemon'

WORKLOADS = [
    # name, unit, fio arguments
    ('4k randread qd32', 'IOPS', ['--rw=randread', '--bs=4k', '--iodepth=32']),
    ('1M seq read qd8', 'MiB/s', ['--rw=read', '--bs=1M', '--iodepth=8']),
]


def blockd_exe():
    if os.environ.get('BLOCKD_REFERENCE', '') not in ('', '0'):
        return None
    exe = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
    return exe if os.access(exe, os.X_OK) else None


def server_a(img, sock, errlog):
    """A: qemu-storage-daemon exporting img read-only as 'disk'."""
    cmd = [QSD,
           '--blockdev', 'driver=file,node-name=f,filename=%s,aio=threads,cache.direct=off' % img,
           '--blockdev', 'driver=raw,node-name=r,file=f',
           '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
           '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=off']
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)


def client_cmd(exe, a_sock, sock):
    """B: driver=nbd on A's export, re-exported as 'disk'."""
    return [exe,
            '--blockdev', 'driver=nbd,node-name=rem,server.type=unix,server.path=%s,'
                          'export=disk,read-only=on' % a_sock,
            '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
            '--export', 'type=nbd,id=e,node-name=rem,name=disk,writable=off']


def first_line(path):
    with open(path, errors='replace') as f:
        lines = f.read().strip().splitlines()
    return lines[0] if lines else 'no output'


def bench_client(name, exe, a_sock, workdir):
    if exe is None:
        return {'error': 'not available (%s)' % (
            'reference mode' if name == 'blockd' and os.environ.get('BLOCKD_REFERENCE', '') not in ('', '0')
            else 'not built')}
    sock = os.path.join(workdir, 'b-%s.sock' % name)
    errpath = os.path.join(workdir, 'b-%s.stderr' % name)
    errlog = open(errpath, 'w')
    proc = subprocess.Popen(client_cmd(exe, a_sock, sock), stdin=subprocess.DEVNULL,
                            stdout=errlog, stderr=errlog)
    results = {}
    try:
        if not wait_socket(sock, proc):
            errlog.flush()
            # the reason is the end of the daemon's first line
            return {'error': 'not available: %s' % first_line(errpath).rsplit(': ', 1)[-1][:70]}
        uri = 'nbd+unix:///disk?socket=%s' % sock
        for wname, unit, fio_args in WORKLOADS:
            c0 = cpu_seconds(proc.pid)
            try:
                fig, moved = bench.run_workload(uri, fio_args)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as e:
                results[wname] = {'error': str(e).splitlines()[0][:70]}
                if proc.poll() is not None:
                    break
                continue
            cpu = cpu_seconds(proc.pid) - c0
            results[wname] = {'figure': fig, 'cpu_per_gib': cpu / (moved / GiB) if moved else 0}
    finally:
        stop_server(proc)
        errlog.close()
    return results


def main():
    if not bench.fio_has_nbd():
        print('nbd_client_bench: fio with the nbd engine is needed')
        return 1
    if not shutil.which(QSD):
        print('nbd_client_bench: %s is needed (server A)' % QSD)
        return 1
    bench.RUNTIME = RUNTIME
    bench.SIZE = SIZE
    names = os.environ.get('SERVERS', 'blockd %s' % QSD).split()
    exes = {'blockd': blockd_exe(), QSD: shutil.which(QSD)}
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-nbd-client-bench-')
    os.makedirs(workdir, exist_ok=True)
    img = os.path.join(workdir, 'bench.raw')
    print('nbd client bench: A = %s exporting a %s raw image (%s) on a unix socket; '
          'B = driver=nbd re-exported on a unix socket; fio nbd engine, %ds per workload'
          % (QSD, SIZE, img, RUNTIME))
    if not os.path.exists(img) or os.path.getsize(img) != size_bytes(SIZE):
        make_image(img)
    a_sock = os.path.join(workdir, 'a.sock')
    a_err = open(os.path.join(workdir, 'a.stderr'), 'w')
    a = server_a(img, a_sock, a_err)
    results = {}
    try:
        if not wait_socket(a_sock, a):
            a_err.flush()
            print('server A did not start: %s' % first_line(a_err.name))
            return 1
        for n in names:
            print('running B = %s ...' % n, flush=True)
            results[n] = bench_client(n, exes.get(n), a_sock, workdir)
            if 'error' in results[n]:
                print('  %s: %s' % (n, results[n]['error']), flush=True)
    finally:
        stop_server(a)
        a_err.close()

    print()
    fmt = '%-18s %-22s %12s %6s %10s'
    print(fmt % ('workload', 'B (nbd client)', 'figure', 'unit', 'CPU s/GiB'))
    for wname, unit, _ in WORKLOADS:
        for n in names:
            r = results[n].get(wname) or {'error': results[n].get('error', 'not run')}
            if 'figure' in r:
                print('%-18s %-22s %12.0f %6s %10.2f' % (wname, n, r['figure'], unit,
                                                          r['cpu_per_gib']))
            else:
                print(fmt % (wname, n, 'n/a', unit, '-') + '  ' + r['error'].split(':')[0])
    print()
    print('blockd / QSD')
    for wname, unit, _ in WORKLOADS:
        b = results.get('blockd', {}).get(wname, {}).get('figure')
        q = results.get(QSD, {}).get(wname, {}).get('figure')
        print('%-18s %12s' % (wname, '%.2fx' % (b / q) if b and q else 'not available'))
    if not os.environ.get('BENCH_DIR'):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
