#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Pull-backup client benchmark: `blockctl backup` against nbdcopy and
qemu-img convert on the same export, in one run.

The source is a qcow2 image of SIZE (default 1 GiB) with half of it
written with random data (every other 2 MiB extent), served by blockd
over NBD on a unix socket.  Rows:

  blockctl full     blockctl backup NODE DIR (a backup session, the
                    allocated extents pulled on WORKERS connections,
                    written as qcow2 by blockd's own driver)
  nbdcopy           nbdcopy of the export into a local raw file
  nbdcopy --flush   the same, flushed to stable storage at the end
  qemu-img convert  qemu-img convert -O qcow2 from the export
  blockctl incr     after 5% of the image was rewritten at random (64 KiB
                    writes through NBD): blockctl backup, incremental

Printed: seconds, MiB/s of the image size, and the incremental's time as
a share of the full backup's next to the share of data that changed.
Not a test: figures only.
  /usr/bin/python3 bench/backup_bench.py          (SIZE=1G WORKERS=8)
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = os.environ.get('SIZE', '1G')
WORKERS = os.environ.get('WORKERS', '8')
BLOCKD = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
BLOCKCTL = os.environ.get('BLOCKCTL') or os.path.join(REPO, 'build', 'ctl', 'blockctl')
MiB = 1 << 20


def size_bytes(s):
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def wait_socket(path, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError('no socket ' + path)


def timed(cmd, **kw):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    return time.monotonic() - t0


def main():
    nbytes = size_bytes(SIZE)
    work = tempfile.mkdtemp(prefix='blockd-backup-bench-')
    img = os.path.join(work, 'disk.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, str(nbytes)], check=True)
    # Half allocated: random data in every other 2 MiB extent.
    rnd = os.path.join(work, 'rnd')
    with open(rnd, 'wb') as f:
        f.write(os.urandom(2 * MiB))
    cmds = []
    for off in range(0, nbytes, 4 * MiB):
        cmds += ['-c', 'write -s %s %d %d' % (rnd, off, 2 * MiB)]
    subprocess.run(['qemu-io', '-f', 'qcow2'] + cmds + [img], check=True, capture_output=True)
    nbd_sock, qmp_sock = os.path.join(work, 'nbd.sock'), os.path.join(work, 'qmp.sock')
    daemon = subprocess.Popen([BLOCKD,
                               '--blockdev', 'driver=qcow2,node-name=disk,file.driver=file,'
                               'file.filename=%s' % img,
                               '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd_sock,
                               '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on',
                               '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % qmp_sock,
                               '--monitor', 'chardev=m'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_socket(nbd_sock)
        wait_socket(qmp_sock)
        uri = 'nbd+unix:///disk?socket=' + nbd_sock
        ctl = [BLOCKCTL, '-s', qmp_sock]
        bk = os.path.join(work, 'bk')
        subprocess.run(['sync'])
        # Every row reads the source from the page cache: one untimed
        # read first, so the first row does not pay for the others.
        subprocess.run(['nbdcopy', uri, 'null:'], check=True)
        full = timed(ctl + ['backup', 'disk', bk, '--workers', WORKERS, '--nbd', nbd_sock])
        rows.append(('blockctl full', full))
        rows.append(('nbdcopy', timed(['nbdcopy', uri, os.path.join(work, 'copy.raw')])))
        # The same with its data on stable storage at the end, as a
        # backup's must be (blockctl flushes its image before the
        # manifest names it).
        rows.append(('nbdcopy --flush', timed(['nbdcopy', '--flush', uri,
                                               os.path.join(work, 'copy2.raw')])))
        rows.append(('qemu-img convert', timed(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2',
                                                 uri, os.path.join(work, 'conv.qcow2')])))
        # 5% rewritten at random, 64 KiB at a time, through the export.
        rng = random.Random(5)
        chunks = nbytes // (64 * 1024)
        picks = rng.sample(range(chunks), chunks // 20)
        cmds = []
        for c in picks:
            cmds += ['-c', 'write -P %d %d 65536' % (rng.randrange(1, 256), c * 65536)]
        for i in range(0, len(cmds), 2000):
            subprocess.run(['qemu-io', '-f', 'raw'] + cmds[i:i + 2000] + [uri], check=True,
                           capture_output=True)
        incr = timed(ctl + ['backup', 'disk', bk, '--workers', WORKERS, '--nbd', nbd_sock])
        rows.append(('blockctl incr', incr))
        p = subprocess.run(ctl + ['--json', 'backup-list', bk], check=True, capture_output=True,
                           text=True)
        chain = json.loads(p.stdout)['chain']
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)

    print('backup bench: %s qcow2, half allocated; blockctl --workers %s' % (SIZE, WORKERS))
    print('%-18s %8s %10s' % ('row', 'seconds', 'MiB/s'))
    for name, secs in rows:
        print('%-18s %8.2f %10.0f' % (name, secs, nbytes / MiB / secs))
    full_s = dict(rows)['blockctl full']
    print('full backup / nbdcopy time: %.2fx (<= 1 is the target); / nbdcopy --flush: %.2fx'
          % (full_s / dict(rows)['nbdcopy'], full_s / dict(rows)['nbdcopy --flush']))
    print('incremental: %.1f%% of the full time for %.1f%% of the data copied'
          % (100 * incr / full_s, 100.0 * chain[-1]['copied'] / max(chain[0]['copied'], 1)))


if __name__ == '__main__':
    sys.exit(main())
