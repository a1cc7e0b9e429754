# SPDX-License-Identifier: MIT
"""Overlapping writes on a node that needs 4 KiB alignment lose nothing.

A 512-byte write inside a 4 KiB block and a 4 KiB write of the whole block
are sent at once, for 20,000 blocks, through NBD (one connection, many
requests in flight) or FUSE (O_DIRECT, many threads).  The 512-byte write
is a read-modify-write below; any serial order of the pair is correct:
  4 KiB first, then 512: the block is A with B at the 512-byte spot;
  512 first, then 4 KiB: the block is all A.
The old data around the 512 bytes must never come back.  The result is
read after the daemon exited, with qemu-io pattern reads.

The image sits on blkdebug with align=4096, standing in for a 4K-native
disk opened with cache.direct=on.
"""

import os
import random
import re
import subprocess
import sys
import threading
import mmap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, main, require_nbd, require_tool, run,  # noqa: E402
                         tests_of)

BLOCK = 4096
SECTOR = 512
NBLOCKS = 20000
OLD = 0xEE


def pattern_a(i):
    return 1 + i % 120


def pattern_b(i):
    return 128 + i % 120


def plan(seed):
    """For each block: the 512-byte offset inside it, and which write goes
    first; then the submission order (pairs kept adjacent, blocks shuffled)."""
    rnd = random.Random(seed)
    spots = [rnd.randrange(BLOCK // SECTOR) * SECTOR for _ in range(NBLOCKS)]
    order = []
    blocks = list(range(NBLOCKS))
    rnd.shuffle(blocks)
    for i in blocks:
        pair = [('whole', i), ('part', i)]
        if rnd.random() < 0.5:
            pair.reverse()
        order += pair
    return spots, order


def write_args(kind, i, spots):
    if kind == 'whole':
        return i * BLOCK, bytes([pattern_a(i)]) * BLOCK
    return i * BLOCK + spots[i], bytes([pattern_b(i)]) * SECTOR


def make_disk(d, fmt):
    """The image (pre-filled with OLD, allocated everywhere) and the
    blockdev options of the node to export: fmt over blkdebug over file."""
    img = d.path('disk.' + fmt)
    size = NBLOCKS * BLOCK
    run(['qemu-img', 'create', '-q', '-f', fmt, img, str(size)])
    run(['qemu-io', '-f', fmt, '-c', 'write -P 0x%x 0 %d' % (OLD, size), img])
    return img, [
        '--blockdev', 'driver=file,node-name=file0,filename=%s' % img,
        '--blockdev', 'driver=blkdebug,node-name=dbg0,align=4096,image=file0',
        '--blockdev', 'driver=%s,node-name=fmt0,file=dbg0' % fmt,
    ]


def run_nbd(d, spots, order):
    nbd = require_nbd()
    h = nbd.NBD()
    h.connect_uri(d.uri())
    cookies = []
    for kind, i in order:
        off, data = write_args(kind, i, spots)
        cookies.append(h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off))
        while h.aio_in_flight() >= 128:
            h.poll(-1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        h.aio_command_completed(c)   # raises on an error reply
    h.flush()
    h.shutdown()


def run_fuse(path, spots, order, nthreads=16):
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    lock = threading.Lock()
    todo = list(order)
    errors = []

    def worker():
        buf = mmap.mmap(-1, BLOCK)       # page-aligned, as O_DIRECT wants
        while True:
            with lock:
                if not todo:
                    return
                kind, i = todo.pop()
            off, data = write_args(kind, i, spots)
            buf.seek(0)
            buf.write(data)
            try:
                n = os.pwritev(fd, [memoryview(buf)[:len(data)]], off)
                if n != len(data):
                    errors.append('short write at %d: %d' % (off, n))
            except OSError as e:
                errors.append('write at %d: %s' % (off, e))

    threads = [threading.Thread(target=worker) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.fsync(fd)
    os.close(fd)
    if errors:
        raise AssertionError('%d writes failed, first: %s' % (len(errors), errors[0]))


def qemu_io_failures(img, fmt, cmds):
    """Run pattern reads through qemu-io's command prompt; return the
    offsets at which verification failed."""
    p = subprocess.run(['qemu-io', '-f', fmt, img], input='\n'.join(cmds) + '\nquit\n',
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       errors='replace', timeout=600)
    failed = {int(m) for m in
              re.findall(r'Pattern verification failed at offset (\d+)', p.stdout)}
    if p.returncode != 0 and not failed:
        raise AssertionError('qemu-io exited %d: %s' % (p.returncode, p.stderr))
    reads = p.stdout.count('read ')
    if reads < len(cmds):
        raise AssertionError('qemu-io ran %d of %d reads: %s' % (reads, len(cmds), p.stderr))
    return failed


def verify(img, fmt, spots):
    """Each block must hold one of the two serial outcomes."""
    around = []
    middle = []
    for i in range(NBLOCKS):
        base, spot = i * BLOCK, spots[i]
        if spot:
            around.append('read -P 0x%x %d %d' % (pattern_a(i), base, spot))
        if spot + SECTOR < BLOCK:
            around.append('read -P 0x%x %d %d' % (pattern_a(i), base + spot + SECTOR,
                                                  BLOCK - spot - SECTOR))
        middle.append('read -P 0x%x %d %d' % (pattern_b(i), base + spot, SECTOR))
    lost = qemu_io_failures(img, fmt, around)
    not_b = qemu_io_failures(img, fmt, middle)
    # Where the 512 bytes are not B, the 4 KiB write came last: they are A.
    again = ['read -P 0x%x %d %d' % (pattern_a(o // BLOCK), o, SECTOR)
             for o in sorted(not_b)]
    lost_mid = qemu_io_failures(img, fmt, again) if again else set()
    bad = {o // BLOCK for o in lost | lost_mid}
    if bad:
        raise AssertionError('%d of %d blocks hold neither serial outcome (first: block %d)'
                             % (len(bad), NBLOCKS, min(bad)))
    if fmt == 'qcow2':
        run(['qemu-img', 'check', img])


def overlap_through_nbd(fmt, seed):
    require_tool('qemu-img', 'qemu-io')
    require_nbd()
    spots, order = plan(seed)
    with Daemon() as d:
        img, args = make_disk(d, fmt)
        d.args = args + ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                         '--export', 'type=nbd,id=exp0,node-name=fmt0,name=disk,writable=on'] \
            + d.args
        d.wait = [d.nbd_sock]
        d.start()
        run_nbd(d, spots, order)
        d.qmp().execute('quit')
        d.wait_exit()
        verify(img, fmt, spots)


def overlap_through_fuse(fmt, seed):
    require_tool('qemu-img', 'qemu-io', 'fusermount3')
    if not os.path.exists('/dev/fuse'):
        raise Skip('no /dev/fuse')
    spots, order = plan(seed)
    with Daemon() as d:
        img, args = make_disk(d, fmt)
        mnt = d.path('mnt.raw')
        open(mnt, 'w').close()
        d.args = args + ['--export', 'type=fuse,id=exp0,node-name=fmt0,mountpoint=%s,'
                         'writable=on' % mnt] + d.args
        d.start()
        try:
            run_fuse(mnt, spots, order)
        finally:
            d.qmp().execute('quit')
            d.wait_exit()
        verify(img, fmt, spots)


def test_nbd_raw():
    overlap_through_nbd('raw', 1)


def test_nbd_qcow2():
    overlap_through_nbd('qcow2', 2)


def test_fuse_raw():
    overlap_through_fuse('raw', 3)


def test_fuse_qcow2():
    overlap_through_fuse('qcow2', 4)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
