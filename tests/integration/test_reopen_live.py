#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Exports across live graph changes (issue 5): an NBD connection (python
nbd) and an open fd on a FUSE export of the node are held across each graph
change of 245's test_io_with_graph_changes, test_replace_file, a throttle
filter insert/remove and the two-node file swap, while a thread keeps a
read/write load on the node. After every step the held connection and fd read
exactly what the new graph holds; neither ever sees an error or a disconnect.
An NBD export of an unrelated node serves a load of its own throughout and
must see no error (its "no pause" is not measurable without timing).

The load writes a fresh pattern to a block of a load region outside the
seed's regions and reads it back through NBD and FUSE. When no graph change
overlapped the round trip the read must match exactly; when one did, the
write may have reached the old or the new graph, so the block must only read
as one uniform pattern.

qemu-storage-daemon 7.2 (BLOCKD_REFERENCE=1) keeps a page cache for FUSE
files and its writable FUSE export takes the resize permission its NBD
export unshares: the FUSE file is opened with O_DIRECT everywhere, and
against the reference the FUSE export is read-only (the load then writes
through NBD only)."""

import contextlib
import json
import mmap
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, force_unmount, is_mounted,  # noqa: E402
                         is_reference, main, qemu_io, require_fuse, require_nbd, run,
                         tests_of, wait_for)
from test_fuse import new_mountpoint  # noqa: E402

MiB = 1 << 20
BLOCK = 64 * 1024
FUSE_WRITABLE = not is_reference()


class Graph:
    """A sequence counter, odd while a graph change is under way."""

    def __init__(self):
        self.seq = 0
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def changing(self):
        with self.lock:
            self.seq += 1
        try:
            yield
        finally:
            with self.lock:
                self.seq += 1


def aligned(n):
    return mmap.mmap(-1, n)


def fuse_read(fd, off, n):
    buf = aligned(n)
    got = os.preadv(fd, [buf], off)
    if got != n:
        raise AssertionError('short FUSE read at %d: %d of %d' % (off, got, n))
    return bytes(buf)


def fuse_write(fd, off, data):
    buf = aligned(len(data))
    buf.write(data)
    got = os.pwritev(fd, [buf], off)
    if got != len(data):
        raise AssertionError('short FUSE write at %d: %d of %d' % (off, got, len(data)))


def uniform(data):
    return data.count(data[:1]) == len(data)


class Load(threading.Thread):
    """Write/read-back rounds on [off, off+length) of one export."""

    def __init__(self, name, h, fd, off, length, graph=None, fuse_writable=False, seed=1):
        super().__init__(name=name, daemon=True)
        self.h, self.fd, self.off, self.length = h, fd, off, length
        self.graph = graph or Graph()
        self.fuse_writable = fuse_writable
        self.seed = seed
        self.read_only_byte = None      # set: a read-only load expecting that byte
        self.ops = 0
        self.strict = 0
        self.error = None
        self.stop_flag = False
        self.cond = threading.Condition()

    def round(self, i):
        blk = self.off + (i * 7 % (self.length // BLOCK)) * BLOCK
        if self.read_only_byte is not None:
            want = bytes([self.read_only_byte]) * BLOCK
            reads = [('nbd', self.h.pread(BLOCK, blk))]
            if self.fd is not None:
                reads.append(('fuse', fuse_read(self.fd, blk, BLOCK)))
            for how, got in reads:
                if got != want:
                    raise AssertionError('%s: round %d: %s read at %d: expected 0x%02x, got %s'
                                         % (self.name, i, how, blk, self.read_only_byte,
                                            describe(got)))
            self.strict += 1
            return
        pat = 1 + (i * 31 + self.seed) % 254
        data = bytes([pat]) * BLOCK
        c1 = self.graph.seq
        if self.fd is not None and self.fuse_writable and i % 2:
            fuse_write(self.fd, blk, data)
        else:
            self.h.pwrite(data, blk)
        reads = [('nbd', self.h.pread(BLOCK, blk))]
        if self.fd is not None:
            reads.append(('fuse', fuse_read(self.fd, blk, BLOCK)))
        c2 = self.graph.seq
        for how, got in reads:
            if c1 == c2 and c1 % 2 == 0:
                if got != data:
                    raise AssertionError('%s: round %d: %s read at %d after writing 0x%02x got '
                                         '0x%02x...' % (self.name, i, how, blk, pat, got[0]))
            elif not uniform(got):
                raise AssertionError('%s: round %d: %s read at %d across a graph change is not '
                                     'one pattern' % (self.name, i, how, blk))
        if c1 == c2 and c1 % 2 == 0:
            self.strict += 1

    def run(self):
        i = 0
        try:
            while not self.stop_flag:
                self.round(i)
                i += 1
                with self.cond:
                    self.ops += 1
                    self.cond.notify_all()
        except BaseException as e:     # reported by check()
            self.error = '%s: %r' % (self.name, e)
        with self.cond:
            self.stop_flag = True
            self.cond.notify_all()

    def wait_more(self, n=3):
        """Block until n more rounds finished (or the load died)."""
        with self.cond:
            target = self.ops + n
            self.cond.wait_for(lambda: self.ops >= target or self.stop_flag, timeout=120)
        self.check()

    def check(self):
        if self.error:
            raise AssertionError('load failed: ' + self.error)

    def finish(self):
        self.stop_flag = True
        self.join(120)
        assert_eq(self.is_alive(), False, '%s stopped' % self.name)
        self.check()
        print('%s: %d rounds, %d checked exactly' % (self.name, self.ops, self.strict))
        if self.strict == 0:
            raise AssertionError('%s: no round was checked exactly' % self.name)


class Live:
    """A daemon with an NBD server, held NBD handles and FUSE fds, loads."""

    def __init__(self, d):
        self.d = d
        self.q = d.qmp()
        self.nbd = require_nbd()
        self.graph = Graph()
        self.handles = {}
        self.fds = {}
        self.mounts = []
        self.loads = []
        self.q.execute('nbd-server-start',
                       {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})

    def cmd(self, name, args=None):
        r = self.q.cmd(name, args or {})
        if 'error' in r:
            if r['error'].get('class') == 'CommandNotFound':
                raise Skip('%s not implemented' % name)
            raise AssertionError('%s %s failed: %r' % (name, json.dumps(args), r['error']))
        return r['return']

    def add(self, opts):
        r = self.q.cmd('blockdev-add', opts)
        if r.get('error', {}).get('desc') == "Parameter 'driver' does not accept value '%s'" % (
                opts['driver']):
            raise Skip('driver %s not implemented' % opts['driver'])
        assert_eq(r, {'return': {}}, 'blockdev-add %s' % json.dumps(opts))

    def reopen(self, opts, errmsg=None):
        """blockdev-reopen of a list of nodes, marked as a graph change."""
        with self.graph.changing():
            r = self.q.cmd('blockdev-reopen', {'options': opts})
        if errmsg:
            assert_eq(r.get('error'), {'class': 'GenericError', 'desc': errmsg},
                      'blockdev-reopen %s' % json.dumps(opts))
        else:
            assert_eq(r, {'return': {}}, 'blockdev-reopen %s' % json.dumps(opts))

    def serve(self, node, fuse=True, writable=True):
        """NBD and FUSE exports of node, with a held handle and fd."""
        self.cmd('block-export-add', {'type': 'nbd', 'id': 'nbd-' + node, 'node-name': node,
                                      'name': node, 'writable': writable})
        h = self.nbd.NBD()
        h.connect_uri(self.d.uri(node))
        self.handles[node] = h
        if fuse:
            mnt = new_mountpoint(self.d.path('mnt-' + node))
            self.mounts.append(mnt)
            fuse_writable = FUSE_WRITABLE and writable
            self.cmd('block-export-add', {'type': 'fuse', 'id': 'fuse-' + node, 'node-name': node,
                                          'mountpoint': mnt, 'writable': fuse_writable})
            wait_for(lambda: is_mounted(mnt), what='FUSE mount of ' + node)
            self.fds[node] = os.open(mnt, (os.O_RDWR if fuse_writable else os.O_RDONLY)
                                     | os.O_DIRECT)

    def start_read_load(self, node, off, length, byte):
        """A read-only load: every read of [off, off+length) gives 'byte'."""
        load = Load('read-%s-%d' % (node, len(self.loads)), self.handles[node],
                    self.fds.get(node), off, length, graph=self.graph)
        load.read_only_byte = byte
        load.start()
        self.loads.append(load)
        return load

    def start_load(self, node, off, length, unrelated=False, own_connection=False):
        """A load through the held handle and fd, or (own_connection) through
        a second NBD connection of its own (more requests in flight)."""
        if own_connection:
            h = self.nbd.NBD()
            h.connect_uri(self.d.uri(node))
            self.handles['%s#%d' % (node, len(self.loads))] = h
            fd = None
        else:
            h, fd = self.handles[node], self.fds.get(node)
        load = Load('load-%s-%d' % (node, len(self.loads)), h, fd, off, length,
                    graph=None if unrelated else self.graph,
                    fuse_writable=FUSE_WRITABLE, seed=len(self.loads) * 97)
        load.start()
        self.loads.append(load)
        return load

    def step(self, change):
        """A graph change with every load running before, during and after it."""
        for load in self.loads:
            load.wait_more()
        change()
        for load in self.loads:
            load.wait_more()

    def expect(self, node, regions, what):
        """The held handle and fd read exactly 'regions' [(off, len, byte)]."""
        for off, length, byte in regions:
            want = bytes([byte]) * length
            got = self.handles[node].pread(length, off)
            if got != want:
                raise AssertionError('%s: NBD read of %s at %d+%d: expected 0x%02x, got %s'
                                     % (what, node, off, length, byte, describe(got)))
            if node in self.fds:
                got = fuse_read(self.fds[node], off, length)
                if got != want:
                    raise AssertionError('%s: FUSE read of %s at %d+%d: expected 0x%02x, got %s'
                                         % (what, node, off, length, byte, describe(got)))

    def finish(self):
        for load in self.loads:
            load.finish()
        self.loads = []
        for node, h in self.handles.items():
            assert_eq(len(h.pread(512, 0)), 512, 'held NBD connection of %s still serves' % node)
            h.shutdown()
        self.handles = {}
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def cleanup(self):
        for load in self.loads:
            load.stop_flag = True
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        for mnt in self.mounts:
            force_unmount(mnt)


def describe(data):
    if uniform(data):
        return 'all 0x%02x' % data[0]
    first = next(i for i, b in enumerate(data) if b != data[0])
    return '0x%02x then 0x%02x at +%d' % (data[0], data[first], first)


@contextlib.contextmanager
def live(unrelated=True):
    """The daemon; with unrelated=True also a raw node 'other' exported over
    NBD with a strict load of its own for the whole test."""
    require_fuse()
    require_nbd()
    with Daemon() as d:
        d.start()
        lv = Live(d)
        try:
            if unrelated:
                img = d.path('other.raw')
                with open(img, 'wb') as f:
                    f.truncate(4 * MiB)
                lv.add({'driver': 'raw', 'node-name': 'other',
                        'file': {'driver': 'file', 'filename': img}})
                lv.serve('other', fuse=False)
            yield lv
            lv.finish()
        finally:
            lv.cleanup()


def qcow2(path, size, *writes, backing=None):
    argv = ['qemu-img', 'create', '-f', 'qcow2']
    if backing:
        argv += ['-b', backing, '-F', 'qcow2']
    run(argv + [path, size])
    for w in writes:
        qemu_io(path, w, fmt='qcow2')
    return path


def hd_opts(path, idx):
    return {'driver': 'qcow2', 'node-name': 'hd%d' % idx,
            'file': {'driver': 'file', 'node-name': 'hd%d-file' % idx, 'filename': path}}


# --- the tests ---

def test_io_with_graph_changes():
    """245's sequence of backing changes with hd0 exported and loaded; after
    each step hd0 reads what its backing chain holds now. The images are 4M
    (the seed's 3M plus a 1M load region only hd0 writes, so its own data)."""
    with live() as lv:
        d = lv.d
        hd = [d.path('hd%d.img' % i) for i in range(3)]
        qcow2(hd[0], '4M', 'write -P 0xa0 0 1M')
        qcow2(hd[1], '4M', 'write -P 0xa1 1M 1M', backing=hd[0])
        qcow2(hd[2], '4M', 'write -P 0xa2 2M 1M')
        own = {0: {0: 0xa0}, 1: {1: 0xa1}, 2: {2: 0xa2}}     # image -> MiB -> byte
        backing = {0: None, 1: None, 2: None}
        opts = []
        for i in range(3):
            opts.append(hd_opts(hd[i], i))
            opts[i]['backing'] = None
            lv.add(opts[i])
        lv.serve('hd0')
        lv.start_load('other', 0, 4 * MiB, unrelated=True)
        lv.start_load('hd0', 3 * MiB, MiB // 2)
        lv.start_load('hd0', 3 * MiB + MiB // 2, MiB // 2, own_connection=True)

        def view(what):
            regions = []
            for mb in range(3):
                node, byte = 0, 0
                while node is not None:
                    if mb in own[node]:
                        byte = own[node][mb]
                        break
                    node = backing[node]
                regions.append((mb * MiB, MiB, byte))
            lv.expect('hd0', regions, what)

        def set_backing(i, b, errmsg=None):
            o = dict(opts[i], backing='hd%d' % b if b is not None else None)
            lv.step(lambda: lv.reopen([o], errmsg))
            if errmsg is None:
                backing[i] = b
            view('after hd%d backing=%s' % (i, b))

        view('start')
        set_backing(0, 1)                       # hd1 <- hd0
        set_backing(2, 1)                       # hd1 <- hd0, hd1 <- hd2
        set_backing(0, 2)                       # hd1 <- hd2 <- hd0
        set_backing(2, None)                    # hd2 <- hd0
        set_backing(1, 2)                       # hd2 <- hd1 <- hd0
        set_backing(0, 1)
        set_backing(2, 1, "Making 'hd1' a backing child of 'hd2' would create a cycle")
        set_backing(0, 2)                       # hd2 <- hd0, hd2 <- hd1
        set_backing(2, 1, "Making 'hd1' a backing child of 'hd2' would create a cycle")
        lv.step(lambda: lv.reopen(
            [dict(opts[2], backing=None, file='hd0-file')],
            "Permission conflict on node 'hd0-file': permissions 'write, resize' are both "
            "required by node 'hd0' (uses node 'hd0-file' as 'file' child) and unshared "
            "by node 'hd2' (uses node 'hd0-file' as 'file' child)."))
        view('after the refused file change')
        set_backing(1, None)
        o = dict(opts[1])
        del o['backing']
        lv.step(lambda: lv.reopen([o], "backing is missing for 'hd1'"))
        set_backing(0, None)                    # added: hd0 alone again
        set_backing(0, 1)                       # and once more on a chain


def test_replace_file():
    """245's test_replace_file with 4M raw files: the held connection and fd
    see the new file after each swap, and the writes of each phase."""
    with live() as lv:
        d = lv.d
        for i in range(2):
            with open(d.path('hd%d.img' % i), 'wb') as f:
                f.truncate(4 * MiB)
            lv.add({'driver': 'file', 'node-name': 'hd%d-file' % i,
                    'filename': d.path('hd%d.img' % i)})
        opts = {'driver': 'raw', 'node-name': 'hd', 'file': 'hd0-file'}
        lv.add(opts)
        lv.serve('hd')
        lv.start_load('other', 0, 4 * MiB, unrelated=True)
        lv.start_load('hd', 2 * MiB, MiB)
        lv.start_load('hd', 3 * MiB, MiB, own_connection=True)
        h = lv.handles['hd']

        lv.expect('hd', [(0, MiB, 0)], 'hd0-file fresh')
        h.pwrite(b'\xa0' * MiB, 0)
        lv.expect('hd', [(0, MiB, 0xa0)], 'hd0-file written')

        lv.step(lambda: lv.reopen([dict(opts, file='hd1-file')]))
        lv.expect('hd', [(0, MiB, 0)], 'hd1-file fresh')
        h.pwrite(b'\xa1' * MiB, 0)
        lv.expect('hd', [(0, MiB, 0xa1)], 'hd1-file written')

        lv.step(lambda: lv.reopen([dict(opts, file='hd0-file')]))
        lv.expect('hd', [(0, MiB, 0xa0)], 'back on hd0-file')

        lv.step(lambda: lv.reopen([dict(opts, file='hd1-file')]))
        lv.expect('hd', [(0, MiB, 0xa1)], 'back on hd1-file')

        # The writes went to the files the graph said: read them directly.
        lv.finish()
        for i, byte in ((0, 0xa0), (1, 0xa1)):
            with open(d.path('hd%d.img' % i), 'rb') as f:
                assert_eq(f.read(MiB), bytes([byte]) * MiB, 'hd%d.img first MiB' % i)


def test_throttle_insert_remove():
    """A throttle filter inserted between hd0 and hd0-file and removed again,
    twice, under load; data written in each phase reads back in the next."""
    with live() as lv:
        d = lv.d
        # Every cluster allocated before throttle0 opens: qemu-storage-daemon
        # 7.2 fixes a filter's length at open, so a filter over a file that
        # grew afterwards reads zeros past that length (see
        # test_filter_over_grown_file, blockd only).
        img = qcow2(d.path('hd0.img'), '4M', 'write -P 0xa0 0 1M', 'write -P 0 1M 3M')
        hd0 = hd_opts(img, 0)
        lv.add(hd0)
        lv.cmd('object-add', {'qom-type': 'throttle-group', 'id': 'group0',
                              'limits': {'iops-total': 1000}})
        lv.add({'driver': 'throttle', 'node-name': 'throttle0',
                'throttle-group': 'group0', 'file': 'hd0-file'})
        lv.serve('hd0')
        lv.start_load('other', 0, 4 * MiB, unrelated=True)
        lv.start_load('hd0', 3 * MiB, MiB // 2)
        lv.start_load('hd0', 3 * MiB + MiB // 2, MiB // 2, own_connection=True)
        h = lv.handles['hd0']

        lv.expect('hd0', [(0, MiB, 0xa0), (MiB, MiB, 0)], 'start')
        for rnd in range(5):
            h.pwrite(bytes([0xb0 + rnd]) * MiB, MiB)
            lv.step(lambda: lv.reopen([dict(hd0, file='throttle0')]))
            lv.expect('hd0', [(0, MiB, 0xa0), (MiB, MiB, 0xb0 + rnd)], 'filter inserted')
            h.pwrite(bytes([0xc0 + rnd]) * MiB, MiB)
            lv.step(lambda: lv.reopen([dict(hd0, file='hd0-file')]))
            lv.expect('hd0', [(0, MiB, 0xa0), (MiB, MiB, 0xc0 + rnd)], 'filter removed')
        lv.finish()
        lv.q.execute('query-named-block-nodes')


def test_filter_over_grown_file():
    """A throttle filter opened over hd0-file before hd0 allocates clusters
    (the file grows), then inserted under hd0: reads through it give the
    new clusters' data. qemu-storage-daemon 7.2 reads zeros there: the
    filter keeps the length its file had at open (until a write through it
    goes past that length), and what lies past a node's end counts as zeros
    (checked by running this test against it: the read of 1M..2M right after
    the insertion gives zeros, every time; after the removal the data is
    back). So this runs against blockd only."""
    if is_reference():
        raise Skip('reference daemon: a filter keeps the length its file had at open')
    with live() as lv:
        d = lv.d
        # The load region is allocated beforehand: only the test's own writes
        # grow the file (a write through the filter past its length would
        # make QEMU's filter learn the new length).
        img = qcow2(d.path('hd0.img'), '4M', 'write -P 0xa0 0 1M', 'write -P 0 3M 1M')
        hd0 = hd_opts(img, 0)
        lv.add(hd0)
        lv.cmd('object-add', {'qom-type': 'throttle-group', 'id': 'group0',
                              'limits': {'iops-total': 1000}})
        lv.add({'driver': 'throttle', 'node-name': 'throttle0',
                'throttle-group': 'group0', 'file': 'hd0-file'})
        lv.serve('hd0')
        lv.start_load('hd0', 3 * MiB, MiB // 2)
        h = lv.handles['hd0']
        size = os.path.getsize(img)
        h.pwrite(b'\xb0' * MiB, MiB)
        assert_eq(os.path.getsize(img) > size, True, 'hd0.img grew')
        lv.step(lambda: lv.reopen([dict(hd0, file='throttle0')]))
        lv.expect('hd0', [(0, MiB, 0xa0), (MiB, MiB, 0xb0), (2 * MiB, MiB, 0)],
                  'filter inserted over the grown file')
        h.pwrite(b'\xb1' * MiB, 2 * MiB)     # grows the file under the filter
        lv.expect('hd0', [(MiB, MiB, 0xb0), (2 * MiB, MiB, 0xb1)], 'grown under the filter')
        lv.step(lambda: lv.reopen([dict(hd0, file='hd0-file')]))
        lv.expect('hd0', [(0, MiB, 0xa0), (MiB, MiB, 0xb0), (2 * MiB, MiB, 0xb1)],
                  'filter removed')


def test_swap_files():
    """245's two-node file swap (one reopen of both) with both nodes
    exported and loaded: after each swap each node reads the other image.
    Both images are fully allocated in the same order (the qcow2 nodes keep
    their L1 tables across the swap, as in the seed, where layouts match)."""
    with live() as lv:
        d = lv.d
        img0 = qcow2(d.path('hd0.img'), '4M', 'write -P 0xa0 0 3M', 'write -P 0 3M 1M')
        img2 = qcow2(d.path('hd2.img'), '4M', 'write -P 0xa2 0 3M', 'write -P 0 3M 1M')
        opts0, opts2 = hd_opts(img0, 0), hd_opts(img2, 2)
        lv.add(opts0)
        lv.add(opts2)
        lv.serve('hd0')
        lv.serve('hd2')
        lv.start_load('other', 0, 4 * MiB, unrelated=True)
        lv.start_load('hd0', 3 * MiB, MiB // 4)
        lv.start_load('hd2', 3 * MiB + MiB // 4, MiB // 4)
        lv.start_load('hd0', 3 * MiB + MiB // 2, MiB // 4, own_connection=True)
        lv.start_load('hd2', 3 * MiB + 3 * MiB // 4, MiB // 4, own_connection=True)

        lv.expect('hd0', [(0, 3 * MiB, 0xa0)], 'start')
        lv.expect('hd2', [(0, 3 * MiB, 0xa2)], 'start')
        lv.step(lambda: lv.reopen([dict(opts0, file='hd2-file')],
                                  "Permission conflict on node 'hd2-file': permissions "
                                  "'write, resize' are both required by node 'hd2' (uses "
                                  "node 'hd2-file' as 'file' child) and unshared by node "
                                  "'hd0' (uses node 'hd2-file' as 'file' child)."))
        lv.expect('hd0', [(0, 3 * MiB, 0xa0)], 'after the refused half swap')
        for rnd in range(10):
            lv.step(lambda: lv.reopen([dict(opts0, file='hd2-file'),
                                       dict(opts2, file='hd0-file')]))
            lv.expect('hd0', [(0, 3 * MiB, 0xa2)], 'swapped (round %d)' % rnd)
            lv.expect('hd2', [(0, 3 * MiB, 0xa0)], 'swapped (round %d)' % rnd)
            lv.step(lambda: lv.reopen([dict(opts0, file='hd0-file'),
                                       dict(opts2, file='hd2-file')]))
            lv.expect('hd0', [(0, 3 * MiB, 0xa0)], 'swapped back (round %d)' % rnd)
            lv.expect('hd2', [(0, 3 * MiB, 0xa2)], 'swapped back (round %d)' % rnd)


def test_option_changes_under_readers():
    """Option-only reopens of a node read over NBD and FUSE (read-only
    exports) by a reader thread: read-only both ways, cache, detect-zeroes,
    discard and qcow2 cache sizes, each several times; every read must give
    the image's data, and a refused reopen changes nothing either."""
    with live() as lv:
        d = lv.d
        img = qcow2(d.path('hd0.img'), '4M', 'write -P 0xa0 0 2M')
        o0 = hd_opts(img, 0)
        lv.add(o0)
        lv.serve('hd0', writable=False)
        lv.start_load('other', 0, 4 * MiB, unrelated=True)
        lv.start_read_load('hd0', 0, 2 * MiB, 0xa0)
        changes = [({'read-only': True}, None),
                   ({}, None),
                   ({'cache': {'no-flush': True}}, None),
                   ({'detect-zeroes': 'on'}, None),
                   ({'discard': 'unmap', 'detect-zeroes': 'unmap'}, None),
                   # 'discard' given: qemu-storage-daemon 7.2 keeps an omitted
                   # 'discard' on reopen (blockd resets it, as the issue says)
                   ({'detect-zeroes': 'unmap', 'discard': 'ignore'},
                    'setting detect-zeroes to unmap is not allowed without setting discard '
                    'operation to unmap'),
                   ({'l2-cache-size': 65536, 'read-only': True}, None),
                   ({'force-share': True}, "Cannot change the option 'force-share'"),
                   ({}, None)]
        for rnd in range(3):
            for extra, errmsg in changes:
                lv.step(lambda: lv.reopen([dict(o0, **extra)], errmsg))
                lv.expect('hd0', [(0, 2 * MiB, 0xa0), (2 * MiB, 2 * MiB, 0)],
                          'after %s (round %d)' % (json.dumps(extra), rnd))
        r = lv.q.execute('query-named-block-nodes')
        node = [n for n in r if n['node-name'] == 'hd0'][0]
        assert_eq((node['ro'], node['detect_zeroes'], node['cache']['no-flush']),
                  (False, 'off', False), 'hd0 back to its defaults')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
