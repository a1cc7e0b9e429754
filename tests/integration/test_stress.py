# SPDX-License-Identifier: MIT
"""Concurrency stress: 4 NBD connections send mixed requests at once
(aligned and unaligned writes and reads, write-zeroes, trims) over a small
region, so that many of them overlap; afterwards every 512-byte sector must
hold what some serial order of the requests would leave there.

Each written sector carries the id of the request that wrote it.  A
sector's final content is accepted when it comes from a request that
touched it and that no other request touching it followed in real time
(one submitted after it had completed); zeroes are accepted from
write-zeroes and trims (a trim may also leave the data it found).  The
image is read after the daemon exits, by qemu-img, and a qcow2 image must
pass qemu-img check.

Set-ups: raw over blkdebug align=4096 (read-modify-write below), qcow2
with 4 KiB clusters (allocation under load), and a filter chain:
throttle over copy-on-read over a qcow2 overlay whose data still lives in
its backing file (reads copy up while writes land).
"""

import os
import random
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import Daemon, main, require_nbd, require_tool, run, tests_of  # noqa: E402

SECTOR = 512
REGION = 16 << 20                # 4096 blocks of 4 KiB, a few requests each
NSECT = REGION // SECTOR
CONNECTIONS = 4
OPS_PER_CONN = 5000
DEPTH = 32
MAGIC = 0x5354524553530000        # 'STRESS'

INITIAL = 1                       # the id of the data the image starts with


def sector_data(op_id, sector):
    head = struct.pack('<QQ', MAGIC | op_id, sector)
    return head + bytes([op_id & 0xff]) * (SECTOR - len(head))


def decode(buf, sector):
    """The request id a sector's content names, 0 for zeroes, None for
    anything else (torn or stale content)."""
    if buf == bytes(SECTOR):
        return 0
    magic_id, idx = struct.unpack_from('<QQ', buf)
    op_id = magic_id & 0xffff
    if magic_id & ~0xffff != MAGIC or idx != sector or buf != sector_data(op_id, sector):
        return None
    return op_id


class Clock:
    """A global counter: submissions and completions get increasing ticks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0

    def tick(self):
        with self.lock:
            self.now += 1
            return self.now


class Op:
    def __init__(self, op_id, kind, first, count):
        self.id, self.kind, self.first, self.count = op_id, kind, first, count
        self.submitted = self.completed = None


def plan_ops(rnd, conn, trims):
    """One connection's requests: (kind, first sector, sector count).
    Often a few requests in a row aim at the same 4 KiB block, so that
    the server receives them together and runs them at once."""
    ops = []
    next_id = [2 + conn * OPS_PER_CONN]              # ids 0 and 1 are taken

    def add(kind, first, count):
        count = max(1, min(count, NSECT - first))
        ops.append(Op(next_id[0], kind, first, count))
        next_id[0] += 1

    while len(ops) < OPS_PER_CONN:
        r = rnd.random()
        block = 8 * rnd.randrange(NSECT // 8)
        if r < 0.35:
            # A burst on one block: the whole block, and pieces of it.
            pieces = [('write', block, 8)]
            for _ in range(rnd.randint(1, 3)):
                kind = rnd.choice(['write', 'write', 'zero', 'trim' if trims else 'write'])
                first = block + rnd.randrange(8)
                pieces.append((kind, first, rnd.randint(1, block + 8 - first)))
            rnd.shuffle(pieces)
            for piece in pieces:
                add(*piece)
        elif r < 0.55:   # aligned to 4 KiB, as a 4K-native disk wants
            add('write', block, 8 * rnd.randint(1, 4))
        elif r < 0.75:   # 512-byte granular, across block boundaries too
            first = rnd.randrange(NSECT)
            add('write', first, rnd.randint(1, 12))
        elif r < 0.82:
            add('zero', rnd.randrange(NSECT), rnd.randint(1, 24))
        elif r < 0.88 and trims:
            add('trim', rnd.randrange(NSECT), rnd.randint(1, 32))
        else:
            add('read', rnd.randrange(NSECT), rnd.randint(1, 16))
    return ops[:OPS_PER_CONN]


def drive(nbd, uri, ops, clock, errors):
    """Send one connection's requests, DEPTH in flight, stamping each."""
    h = nbd.NBD()
    h.connect_uri(uri)
    pending = list(reversed(ops))
    bufs = {}

    def done(op, error):
        op.completed = clock.tick()
        if error.value:
            errors.append('%s %d+%d: errno %d' % (op.kind, op.first, op.count, error.value))
        bufs.pop(op.id, None)
        return 1

    try:
        while pending or h.aio_in_flight():
            while pending and h.aio_in_flight() < DEPTH:
                op = pending.pop()
                off, n = op.first * SECTOR, op.count * SECTOR
                cb = (lambda o: lambda err: done(o, err))(op)
                op.submitted = clock.tick()
                if op.kind == 'write':
                    data = b''.join(sector_data(op.id, op.first + i) for i in range(op.count))
                    bufs[op.id] = nbd.Buffer.from_bytearray(bytearray(data))
                    h.aio_pwrite(bufs[op.id], off, completion=cb)
                elif op.kind == 'zero':
                    h.aio_zero(n, off, completion=cb)
                elif op.kind == 'trim':
                    h.aio_trim(n, off, completion=cb)
                else:
                    # Unaligned at the byte level too: reads never conflict.
                    start = off + random.randrange(SECTOR)
                    bufs[op.id] = nbd.Buffer(n - (start - off))
                    h.aio_pread(bufs[op.id], start, completion=cb)
            h.poll(-1)
        h.flush()
    finally:
        h.shutdown()


def candidates(ops):
    """For each sector: the requests that may have written it last."""
    touching = [[] for _ in range(NSECT)]
    for op in ops:
        if op.kind != 'read':
            for s in range(op.first, op.first + op.count):
                touching[s].append(op)
    result = []
    for s in range(NSECT):
        ts = touching[s]
        # The latest submission of a request that surely changes the
        # data; a trim may leave it as it was, so it never rules out.
        latest = max((o.submitted for o in ts if o.kind != 'trim'), default=0)
        ok = {INITIAL} if latest == 0 else set()
        for o in ts:
            # Last in some order: nothing that changes the data was
            # submitted after it completed.
            if o.kind == 'trim':
                if o.completed > latest:
                    ok.add(0)
            elif o.completed > latest or o.submitted == latest:
                ok.add(0 if o.kind == 'zero' else o.id)
        result.append(ok)
    return result


def check(raw_path, ops):
    cand = candidates(ops)
    bad = []
    with open(raw_path, 'rb') as f:
        data = f.read(REGION)
    for s in range(NSECT):
        got = decode(data[s * SECTOR:(s + 1) * SECTOR], s)
        if got not in cand[s]:
            bad.append((s, got, sorted(cand[s])[:6]))
    if bad:
        raise AssertionError('%d of %d sectors hold what no serial order leaves; first: '
                             'sector %d holds %r, expected one of %r'
                             % (len(bad), NSECT, *bad[0]))


def fill_initial(path, fmt):
    """The region starts with request INITIAL's data, everywhere."""
    data = b''.join(sector_data(INITIAL, s) for s in range(NSECT))
    raw = path + '.init'
    with open(raw, 'wb') as f:
        f.write(data)
    run(['qemu-img', 'convert', '-f', 'raw', '-O', fmt] +
        (['-o', 'cluster_size=4096'] if fmt == 'qcow2' else []) + [raw, path])
    os.unlink(raw)


def stress(setup, seed):
    require_tool('qemu-img')
    nbd = require_nbd()
    with Daemon() as d:
        if setup == 'raw':
            img = d.path('disk.raw')
            fill_initial(img, 'raw')
            nodes = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                     '--blockdev', 'driver=blkdebug,node-name=dbg,align=4096,image=f0',
                     '--blockdev', 'driver=raw,node-name=top,file=dbg,discard=unmap']
        elif setup == 'qcow2':
            img = d.path('disk.qcow2')
            fill_initial(img, 'qcow2')
            nodes = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                     '--blockdev', 'driver=qcow2,node-name=top,file=f0,discard=unmap']
        else:
            base = d.path('base.qcow2')
            fill_initial(base, 'qcow2')
            img = d.path('top.qcow2')
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096',
                 '-b', base, '-F', 'qcow2', img])
            nodes = ['--object', 'throttle-group,id=tg0,x-iops-total=1000000',
                     '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                     '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
                     '--blockdev', 'driver=copy-on-read,node-name=cor,file=q0',
                     '--blockdev', 'driver=throttle,node-name=top,throttle-group=tg0,file=cor']
        d.args = nodes + ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                          '--export', 'type=nbd,id=e0,node-name=top,name=disk,writable=on'] \
            + d.args
        d.wait = [d.nbd_sock]
        d.start()
        clock = Clock()
        errors = []
        rnd = random.Random(seed)
        plans = [plan_ops(rnd, c, trims=setup != 'chain') for c in range(CONNECTIONS)]
        threads = [threading.Thread(target=drive, args=(nbd, d.uri(), p, clock, errors))
                   for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise AssertionError('%d requests failed, first: %s' % (len(errors), errors[0]))
        d.qmp().execute('quit')
        d.wait_exit()
        fmt = 'raw' if setup == 'raw' else 'qcow2'
        if fmt == 'qcow2':
            run(['qemu-img', 'check', img])
        out = d.path('final.raw')
        run(['qemu-img', 'convert', '-f', fmt, '-O', 'raw', img, out])
        check(out, [op for p in plans for op in p])


def test_raw_align4k():
    stress('raw', 11)


def test_qcow2():
    stress('qcow2', 12)


def test_filter_chain():
    stress('chain', 13)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
