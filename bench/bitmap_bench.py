#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Dirty bitmaps on the write path: NBD 4k random writes (fio nbd engine,
iodepth 32) to an exported raw image, side by side for blockd and
qemu-storage-daemon, in three set-ups of the same server:

  none          no dirty bitmap anywhere
  8 elsewhere   8 bitmaps on 8 other nodes (null-co), none on the export:
                a write should not pay for bitmaps it does not touch
  8 on export   8 bitmaps on the exported node itself (each write sets
                bits in all of them)

The exported node is a null-co node by default (BACKEND=null): writes
cost no disk time, so what is measured is the server's own write path,
which is where bitmaps cost; with BACKEND=file it is raw over a file in
the page cache (and its write-back noise).  Each set-up runs ROUNDS times
(default 3), interleaved between servers and set-ups; the median counts.

Printed: IOPS, the ratio to the same server's 'none' row, the ratio to
qemu-storage-daemon's figure for the same row, and the server's CPU
seconds per GiB written.

  /usr/bin/python3 bench/bitmap_bench.py
  SERVERS="blockd" RUNTIME=10 SIZE=1G ROUNDS=3 BACKEND=null BLOCKD=path ...
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (fio runner, CPU accounting, sockets)

SETUPS = ['none', '8 elsewhere', '8 on export']
BACKEND = os.environ.get('BACKEND', 'null')
ROUNDS = int(os.environ.get('ROUNDS', '3'))


def server_cmd(name, img, sock):
    cmd = bench.server_cmd(name, img, sock)
    if BACKEND != 'null':
        return cmd
    # The same command with the file and raw nodes replaced by one
    # null-co node named 'r', as the export expects.
    null = 'driver=null-co,node-name=r,size=%d' % bench.size_bytes(bench.SIZE)
    out, skip = [], 0
    for i, a in enumerate(cmd):
        if skip:
            skip -= 1
            continue
        if a == '--blockdev':
            if 'node-name=r,' in cmd[i + 1]:
                out += ['--blockdev', null]
            skip = 1
            continue
        out.append(a)
    return out
FIO = ['--rw=randwrite', '--bs=4k', '--iodepth=32']


def qmp(path, cmds):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile('rw')
    f.readline()
    for c in [{'execute': 'qmp_capabilities'}] + cmds:
        f.write(json.dumps(c) + '\n')
        f.flush()
        while True:
            r = json.loads(f.readline())
            if 'event' not in r:
                break
        if 'error' in r:
            raise RuntimeError('%s: %s' % (c['execute'], r['error']['desc']))
    s.close()


def setup_cmds(setup):
    cmds = []
    if setup == '8 elsewhere':
        for i in range(8):
            cmds.append({'execute': 'blockdev-add', 'arguments': {
                'driver': 'null-co', 'node-name': 'other%d' % i, 'size': 1 << 30}})
            cmds.append({'execute': 'block-dirty-bitmap-add', 'arguments': {
                'node': 'other%d' % i, 'name': 'b%d' % i}})
    elif setup == '8 on export':
        for i in range(8):
            cmds.append({'execute': 'block-dirty-bitmap-add', 'arguments': {
                'node': 'r', 'name': 'b%d' % i}})
    return cmds


def run_one(name, setup, img, workdir):
    sock = os.path.join(workdir, 'nbd.sock')
    qmp_sock = os.path.join(workdir, 'qmp.sock')
    for p in (sock, qmp_sock):
        if os.path.exists(p):
            os.unlink(p)
    cmd = server_cmd(name, img, sock) + [
        '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % qmp_sock,
        '--monitor', 'chardev=m']
    os.sync()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        if not bench.wait_socket(sock, proc) or not bench.wait_socket(qmp_sock, proc):
            return {'error': 'did not start'}
        qmp(qmp_sock, setup_cmds(setup))
        c0 = bench.cpu_seconds(proc.pid)
        fig, moved = bench.run_workload('nbd+unix:///disk?socket=%s' % sock, FIO)
        cpu = bench.cpu_seconds(proc.pid) - c0
        return {'figure': fig, 'cpu_per_gib': cpu / (moved / bench.GiB) if moved else 0}
    except (subprocess.CalledProcessError, RuntimeError, OSError) as e:
        return {'error': str(e).splitlines()[0][:60]}
    finally:
        bench.stop_server(proc)


def main():
    servers = os.environ.get('SERVERS', 'blockd qemu-storage-daemon').split()
    if not bench.fio_has_nbd():
        print('bitmap_bench: fio with the nbd engine is needed')
        return 1
    workdir = tempfile.mkdtemp(prefix='blockd-bitmap-bench-')
    img = os.path.join(workdir, 'bench.raw')
    if BACKEND != 'null':
        bench.make_image(img)
    print('bitmap bench: %s %s, 4k randwrite qd32, fio runtime %ds, median of %d'
          % (bench.SIZE, 'null-co node' if BACKEND == 'null' else 'raw image',
             bench.RUNTIME, ROUNDS))
    runs = {}
    for rnd in range(ROUNDS):
        for setup in SETUPS:
            for s in servers:
                print('round %d: %s, %s ...' % (rnd + 1, s, setup), flush=True)
                runs.setdefault((s, setup), []).append(run_one(s, setup, img, workdir))
    res = {}
    for key, rs in runs.items():
        good = sorted((r for r in rs if 'figure' in r), key=lambda r: r['figure'])
        res[key] = good[len(good) // 2] if good else rs[0]
    print()
    print('%-14s %-22s %10s %12s %12s %10s' % ('bitmaps', 'server', 'IOPS', 'vs none',
                                               'vs qsd', 'CPU s/GiB'))
    for setup in SETUPS:
        for s in servers:
            r = res[(s, setup)]
            if 'figure' not in r:
                print('%-14s %-22s %10s %s' % (setup, s, 'n/a', r.get('error')))
                continue
            base = res[(s, 'none')].get('figure')
            qsd = res.get(('qemu-storage-daemon', setup), {}).get('figure')
            print('%-14s %-22s %10.0f %12s %12s %10.2f' % (
                setup, s, r['figure'], '%.3fx' % (r['figure'] / base) if base else '-',
                '%.2fx' % (r['figure'] / qsd) if qsd else '-', r['cpu_per_gib']))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
