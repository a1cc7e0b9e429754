#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""nbdkit plugin benchmark: nbdkit with blockd's plugin serving a fully
allocated qcow2 image, side by side in one run with nbdkit's own qcow2
reader (--filter=qcow2dec over the file plugin, read-only; nbdkit >= 1.34
only: a 1.32 nbdkit says so in the row), qemu-nbd, and blockd's daemon
(the same graph without nbdkit in between), all over a unix socket.

Rows: 4k random read at iodepth 32 and 1 MiB sequential read at iodepth
8 (fio's nbd engine, as bench/bench.py; nbdcopy to null: for the
sequential row when fio lacks the nbd engine).  Every server serves the
image read-only, with the host page cache (writeback, thread-pool AIO).
Printed: figure, ratio to qemu-nbd, ratio to blockd's daemon, the
server's CPU seconds per GiB, and fio's own CPU use in % of one core.

  /usr/bin/python3 bench/nbdkit_plugin_bench.py
  SERVERS="nbdkit-blockd qemu-nbd" RUNTIME=10 SIZE=1G PLUGIN=path BLOCKD=path ...
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
FILTERS = '/usr/lib/x86_64-linux-gnu/nbdkit/filters'

ROWS = [
    ('4k randread qd32', ['--rw=randread', '--bs=4k', '--iodepth=32']),
    ('1M seq read qd8', ['--rw=read', '--bs=1M', '--iodepth=8']),
]
SERVERS = ['nbdkit-blockd', 'nbdkit-qcow2dec', 'qemu-nbd', 'blockd']


def plugin_path():
    return os.environ.get('PLUGIN') or os.path.join(
        bench.REPO, 'build', 'nbdkit-plugin', 'nbdkit-blockd-plugin.so')


def has_qcow2dec():
    """nbdkit's qcow2dec filter appeared in nbdkit 1.34."""
    if os.path.exists(os.path.join(FILTERS, 'nbdkit-qcow2dec-filter.so')):
        return True
    p = subprocess.run(['nbdkit', '--filter=qcow2dec', 'null', '--dump-plugin'],
                       capture_output=True, text=True)
    return p.returncode == 0


def nbdkit_version():
    p = subprocess.run(['nbdkit', '--version'], capture_output=True, text=True)
    return p.stdout.strip() or 'nbdkit'


def server_cmd(name, img, sock):
    """The command line, or a string saying why the server cannot run."""
    if name == 'nbdkit-blockd':
        if not os.path.exists(plugin_path()):
            return 'plugin %s not built' % plugin_path()
        return ['nbdkit', '-f', '-r', '-U', sock, plugin_path(), 'image=' + img]
    if name == 'nbdkit-qcow2dec':
        if not has_qcow2dec():
            return '%s has no qcow2dec filter (nbdkit >= 1.34)' % nbdkit_version()
        return ['nbdkit', '-f', '-r', '-U', sock, '--filter=qcow2dec', 'file', img]
    if name == 'qemu-nbd':
        return ['qemu-nbd', '-r', '-f', 'qcow2', '-k', sock, '-x', 'disk',
                '--cache=writeback', '--aio=threads', '-e', '16', '-t', img]
    if name == 'blockd':
        exe = os.environ.get('BLOCKD') or os.path.join(bench.REPO, 'build', 'daemon', 'blockd')
        return [exe, '--blockdev', 'driver=file,node-name=f,filename=%s,aio=threads,'
                'cache.direct=off,read-only=on' % img,
                '--blockdev', 'driver=qcow2,node-name=q,file=f,read-only=on',
                '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                '--export', 'type=nbd,id=e,node-name=q,name=disk']
    raise ValueError(name)


def warm(path):
    """The same page-cache state for every server: the image read in."""
    os.sync()
    with open(path, 'rb') as f:
        while f.read(1 << 24):
            pass


def run_row(name, img, workdir, fio_args):
    cmd = server_cmd(name, img, os.path.join(workdir, name + '.sock'))
    if isinstance(cmd, str):
        return {'error': cmd}
    if not shutil.which(cmd[0]) and not os.access(cmd[0], os.X_OK):
        return {'error': '%s not available' % cmd[0]}
    warm(img)
    sock = os.path.join(workdir, name + '.sock')
    if os.path.exists(sock):
        os.unlink(sock)
    errlog = open(os.path.join(workdir, name + '.stderr'), 'a')
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    try:
        if not bench.wait_socket(sock, proc):
            return {'error': 'did not start (see %s)' % errlog.name}
        c0 = bench.cpu_seconds(proc.pid)
        try:
            fig, moved, client_cpu = bench.run_workload_cpu(
                'nbd+unix:///disk?socket=%s' % sock, fio_args)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as e:
            return {'error': str(e).splitlines()[0][:60]}
        cpu = bench.cpu_seconds(proc.pid) - c0
        return {'figure': fig, 'cpu_per_gib': cpu / (moved / GiB) if moved else 0,
                'client_cpu': client_cpu}
    finally:
        bench.stop_server(proc)
        errlog.close()


def main():
    servers = os.environ.get('SERVERS', ' '.join(SERVERS)).split()
    use_fio = bench.fio_has_nbd()
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-nbdkit-bench-')
    os.makedirs(workdir, exist_ok=True)
    raw = os.path.join(workdir, 'bench.raw')
    img = os.path.join(workdir, 'alloc.qcow2')
    if not os.path.exists(raw) or os.path.getsize(raw) != bench.size_bytes(SIZE):
        bench.make_image(raw)
    if not os.path.exists(img):
        subprocess.run(['qemu-img', 'convert', '-O', 'qcow2', raw, img], check=True)
    os.sync()
    print('nbdkit plugin bench: %s qcow2 (64k clusters, fully allocated) in %s, '
          'unix socket, %s, %s' % (SIZE, workdir, nbdkit_version(),
                                   'fio runtime %ds' % bench.RUNTIME if use_fio
                                   else 'no fio nbd engine: nbdcopy, sequential row only'),
          flush=True)
    res = {}
    for row, fio_args in ROWS:
        if not use_fio and '4k' in row:
            continue
        for s in servers:
            res[(row, s)] = run_row(s, img, workdir, fio_args if use_fio else None)
        print('  %s done' % row, flush=True)

    print()
    print('%-18s %-16s %10s %6s %11s %9s %9s %7s' % ('workload', 'server', 'figure', 'unit',
                                                    'vs qemu-nbd', 'vs blockd', 'CPU s/GiB',
                                                    'fio CPU'))
    for row, _ in ROWS:
        if (row, servers[0]) not in res:
            continue
        unit = 'IOPS' if '4k' in row else 'MiB/s'
        qn = res.get((row, 'qemu-nbd'), {}).get('figure')
        bd = res.get((row, 'blockd'), {}).get('figure')
        for s in servers:
            r = res[(row, s)]
            if 'figure' not in r:
                print('%-18s %-16s %10s %6s %11s %9s  %s' % (row, s, 'n/a', unit, '-', '-',
                                                           r['error']))
                continue
            vq = '%.2fx' % (r['figure'] / qn) if qn and s != 'qemu-nbd' else '-'
            vb = '%.2fx' % (r['figure'] / bd) if bd and s != 'blockd' else '-'
            ccpu = '%6.0f%%' % r['client_cpu'] if r['client_cpu'] is not None else '      -'
            print('%-18s %-16s %10.0f %6s %11s %9s %9.2f %s' % (
                row, s, r['figure'], unit, vq, vb, r['cpu_per_gib'], ccpu))
    if not os.environ.get('BENCH_DIR'):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
