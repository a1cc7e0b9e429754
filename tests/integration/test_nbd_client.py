#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The 'nbd' block driver: the daemon as an NBD *client* (QEMU's
BlockdevOptionsNbd: server, export, tls-creds, tls-hostname,
x-dirty-bitmap, reconnect-delay, open-timeout; nbd:// and nbd+unix:// URIs,
json: and legacy 'nbd:unix:PATH:exportname=X' filenames where QEMU takes a
filename).

Terms: daemon A is the server (exports an image over NBD); daemon B is the
daemon under test, which opens A's export with blockdev-add driver=nbd and
re-exports it (NBD, FUSE) or uses it (backing file, job target).  A is
either the daemon under test too ('self') or qemu-storage-daemon ('qsd'),
so that cross-compatibility is proven both ways; test_qsd_client_reads_daemon
has the roles swapped (QEMU's own nbd driver reading from the daemon under
test).  With BLOCKD_REFERENCE=1 every daemon is qemu-storage-daemon 7.2,
which proves the tests right.

What qemu-storage-daemon 7.2 does, and the texts it gives (captured by
running it), are the expected values here:
  - connection failures: "Failed to connect to 'PATH': No such file or
    directory" (unix, no socket file), "Failed to connect to 'PATH':
    Connection refused" (unix, a socket file nobody listens on),
    "Failed to connect to '127.0.0.1:PORT': Connection refused" (inet);
    an unknown export: "Requested export not available"; all GenericError;
  - a read-write open of a read-only export: "Could not open image:
    Permission denied"; read-only=true or auto-read-only=true open it
    (ro in query-named-block-nodes);
  - query-named-block-nodes shows an nbd node's "file" as
    'nbd+unix:///EXPORT?socket=PATH' or 'nbd://HOST:PORT/EXPORT';
  - x-dirty-bitmap=qemu:dirty-bitmap:NAME makes block status report the
    bitmap instead of allocation: a DIRTY area is reported as not data
    (NBD_STATE_HOLE without ZERO through a re-export; qemu-img map
    "data": false, "present": false), a clean area as data;
  - reconnect-delay=0 (default): once the server is gone every request
    fails at once with EIO; with reconnect-delay=N requests wait for the
    server to come back (and fail with EIO when it does not within N s);
  - open-timeout=N retries the first connection for N seconds.
"""

import contextlib
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import assert_eq, assert_in, main, run, tests_of  # noqa: E402
import tls_env  # noqa: E402
from tls_env import (PSK_USER, WRONG_KEY, free_port, psk_client_file, psk_object,  # noqa: E402
                     wait_tcp, x509_object)

KiB = 1024
MiB = 1024 * KiB
SIZE = 16 * MiB
CLUSTER = 64 * KiB

# Data written into A's qcow2 before the tests (pattern, offset, length):
# cluster aligned, so that the image's allocation map is exactly these.
DATA = [(0x11, 0, 64 * KiB),
        (0x22, 1 * MiB, 192 * KiB),
        (0x33, 4 * MiB + 128 * KiB, 64 * KiB),
        (0x44, 9 * MiB, 1 * MiB),
        (0x55, SIZE - 64 * KiB, 64 * KiB)]

# The texts qemu-storage-daemon 7.2 gives (see the module docstring).
ERR_NOENT = "Failed to connect to '%s': No such file or directory"
ERR_REFUSED = "Failed to connect to '%s': Connection refused"
ERR_NO_EXPORT = 'Requested export not available'
ERR_RO_EXPORT = 'Could not open image: Permission denied'

KINDS = ('self', 'qsd')


# --- daemons: A (server) and B (the daemon under test, a client) ---

def _exe(kind):
    return bt.QSD if kind == 'qsd' else bt.daemon_exe()


def make_qcow2(path, size=SIZE, data=DATA):
    run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=%d' % CLUSTER, path, str(size)])
    if data:
        bt.qemu_io(path, *['write -P 0x%x %d %d' % d for d in data], fmt='qcow2')
    return path


def server_daemon(kind, image, fmt='qcow2', inet=False, writable=True, export=True, name='disk',
                  tmpdir=None, node_opts=''):
    """Daemon A, started: `kind` 'self' (the daemon under test) or 'qsd'
    (qemu-storage-daemon), node 'disk' (fmt over file 'f0') of `image`,
    an NBD server on its unix socket (or on 127.0.0.1:d.port with inet)
    and, with export, the export `name` of 'disk'.  d.server is the
    SocketAddress a client gives in blockdev-add, d.client_uri() the URI."""
    d = bt.Daemon(tmpdir=tmpdir)
    d.exe = _exe(kind)
    d.kind = kind
    d.image = image
    d.port = None
    try:
        args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % image]
        if fmt == 'file':
            node = 'f0'
        else:
            args += ['--blockdev', 'driver=%s,node-name=disk,file=f0%s' % (fmt, node_opts)]
            node = 'disk'
        if inet:
            d.port = free_port()
            args += ['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d' % d.port]
            d.server = {'type': 'inet', 'host': '127.0.0.1', 'port': str(d.port)}
        else:
            args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
            d.server = {'type': 'unix', 'path': d.nbd_sock}
            d.wait = [d.nbd_sock]
        if export:
            args += ['--export', 'type=nbd,id=e0,node-name=%s,name=%s,writable=%s'
                     % (node, name, 'on' if writable else 'off')]
        d.args = args + d.args
        d.start()
        if inet:
            wait_tcp(d, d.port)
    except BaseException:
        d.cleanup()
        raise
    d.client_uri = lambda n=name: (
        'nbd://127.0.0.1:%d/%s' % (d.port, n) if d.port else d.uri(n))
    return d


def client_daemon(args=(), kind='self'):
    """Daemon B, started: the daemon under test (kind 'self') with an NBD
    server on its unix socket for re-exports, and `args` before it."""
    d = bt.Daemon()
    d.exe = _exe(kind)
    try:
        d.args = list(args) + ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock] + d.args
        d.wait = [d.nbd_sock]
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def nbd_opts(a, node='rem', export='disk', **kw):
    """blockdev-add arguments of a driver=nbd node on A's export (kw with
    '_' for '-')."""
    args = {'driver': 'nbd', 'node-name': node, 'server': a.server, 'export': export}
    args.update({k.replace('_', '-'): v for k, v in kw.items()})
    return args


def add_nbd(q, a, node='rem', export='disk', **kw):
    q.execute('blockdev-add', nbd_opts(a, node, export, **kw))
    return node


def node_info(q, node):
    for n in q.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            return n
    raise AssertionError('node %s not in query-named-block-nodes' % node)


def expected_file(a, export='disk'):
    """QEMU's 'file' string of an nbd node on A's export."""
    if a.port:
        return 'nbd://127.0.0.1:%d/%s' % (a.port, export)
    return 'nbd+unix:///%s?socket=%s' % (export, a.nbd_sock)


def reads(data=DATA):
    return ['read -P 0x%x %d %d' % d for d in data]


def zero_gaps(data=DATA, size=SIZE):
    """qemu-io 'read -P 0' commands of every range outside `data`."""
    cmds, pos = [], 0
    for _, off, length in sorted(data, key=lambda d: d[1]):
        if off > pos:
            cmds.append('read -P 0 %d %d' % (pos, off - pos))
        pos = off + length
    if pos < size:
        cmds.append('read -P 0 %d %d' % (pos, size - pos))
    return cmds


def data_map(data=DATA, size=SIZE):
    """[(offset, length, is_data)] of `data` in an image of `size`, merged."""
    out, pos = [], 0
    for _, off, length in sorted(data, key=lambda d: d[1]):
        if off > pos:
            out.append((pos, off - pos, False))
        out.append((off, length, True))
        pos = off + length
    if pos < size:
        out.append((pos, size - pos, False))
    return merge(out)


def merge(extents):
    out = []
    for off, length, kind in extents:
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + length, kind)
        else:
            out.append((off, length, kind))
    return out


def nbdinfo_map(uri, context='base:allocation', args=()):
    """nbdinfo --map --json of `context`: [(offset, length, type)]."""
    p = run(['nbdinfo', '--map=' + context, '--json'] + list(args) + [uri])
    return [(e['offset'], e['length'], e['type']) for e in json.loads(p.stdout)]


def data_vs_hole(extents):
    """base:allocation extents as [(offset, length, is_data)], merged."""
    return merge([(o, n, not (t & 1)) for o, n, t in extents])


def qemu_img_map(argv_tail):
    """qemu-img map --output=json as [(start, length, data)], merged."""
    p = run(['qemu-img', 'map', '--output=json'] + list(argv_tail))
    return merge([(e['start'], e['length'], e['data']) for e in json.loads(p.stdout)])


def compare_raw_to(img, fmt, uri):
    """qemu-img compare of the export at `uri` (raw) with image `img`."""
    run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', fmt, uri, img])


def io_image(img, *cmds, fmt='qcow2'):
    """qemu-io on an image no daemon holds any more."""
    return bt.qemu_io(img, *cmds, fmt=fmt)


def expect_error(q, args, desc, cls='GenericError', cmd='blockdev-add'):
    err = q.error(cmd, args)
    assert_eq(err['class'], cls, 'error class of %s %r' % (cmd, args))
    assert_eq(err['desc'], desc, 'error text of %s %r' % (cmd, args))
    return err


# --- 1. a chain over NBD keeps data and holes ---

def _check_chain(kind, inet):
    with bt.Daemon() as scratch:
        img = make_qcow2(scratch.path('a.qcow2'))
        with server_daemon(kind, img, inet=inet, writable=False) as a, client_daemon() as b:
            q = b.qmp()
            add_nbd(q, a, read_only=True)
            n = node_info(q, 'rem')
            assert_eq((n['drv'], n['file'], n['ro']), ('nbd', expected_file(a), True),
                      'the nbd node in query-named-block-nodes')
            with bt.nbd_export(q, 'rem', name='re'):
                uri = b.uri('re')
                assert_eq(int(run(['nbdinfo', '--size', uri]).stdout), SIZE, 'size through B')
                compare_raw_to(img, 'qcow2', uri)
                bt.qemu_io(uri, *(reads() + zero_gaps()), extra=['-r'])
                want = data_map()
                got_a = data_vs_hole(nbdinfo_map(a.client_uri()))
                got_b = data_vs_hole(nbdinfo_map(uri))
                assert_eq(got_a, want, "A's export map (data vs hole)")
                assert_eq(got_b, got_a, "B's re-export map against A's")
                assert_eq(qemu_img_map(['-f', 'raw', uri]), want, 'qemu-img map over B')


def test_chain_keeps_holes_unix():
    """A exports a qcow2 with data at known offsets and holes; B opens it
    with driver=nbd over a unix socket and re-exports it: qemu-img compare
    equals, reads give the patterns and zeroes, nbdinfo --map on B's
    export gives A's data/hole extents, qemu-img map agrees; for A the
    daemon under test and for A qemu-storage-daemon."""
    for kind in KINDS:
        _check_chain(kind, inet=False)


def test_chain_keeps_holes_inet():
    """The same over TCP (127.0.0.1, a free port): server type inet."""
    for kind in KINDS:
        _check_chain(kind, inet=True)


def test_qsd_client_reads_daemon():
    """The roles swapped: A is the daemon under test, B is
    qemu-storage-daemon with its own nbd driver; B's re-export reads A's
    data, holes and writes reach A's image."""
    with bt.Daemon() as scratch:
        img = make_qcow2(scratch.path('a.qcow2'))
        with server_daemon('self', img) as a, client_daemon(kind='qsd') as b:
            q = b.qmp()
            add_nbd(q, a)
            with bt.nbd_export(q, 'rem', name='re', writable=True):
                uri = b.uri('re')
                compare_raw_to(img, 'qcow2', uri)
                assert_eq(data_vs_hole(nbdinfo_map(uri)), data_map(), "QSD's re-export map")
                bt.qemu_io(uri, 'write -P 0x77 2M 64k', 'flush')
            q.execute('blockdev-del', {'node-name': 'rem'})
            a.stop()
        io_image(img, *reads(DATA + [(0x77, 2 * MiB, 64 * KiB)]))
        bt.check_image(img)


# --- 2. FUSE re-export of the remote node ---

def test_fuse_reexport():
    """B exports the nbd node over FUSE, writable: reads give A's data,
    writes (pwrite, fsync) through the FUSE file reach A's qcow2, which
    passes qemu-img check once both daemons stopped."""
    bt.require_fuse()
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = make_qcow2(scratch.path('a.qcow2'))
            with server_daemon(kind, img) as a, client_daemon() as b:
                q = b.qmp()
                add_nbd(q, a)
                mnt = b.path('mnt')
                with bt.fuse_export(q, 'rem', mnt, writable=True):
                    assert_eq(os.path.getsize(mnt), SIZE, 'FUSE file size')
                    with bt.fd_open(mnt, os.O_RDWR) as fd:
                        for pat, off, length in DATA:
                            assert_eq(os.pread(fd, length, off), bytes([pat]) * length,
                                      'read at %d through FUSE' % off)
                        assert_eq(os.pread(fd, 4096, 2 * MiB), b'\0' * 4096, 'a hole')
                        os.pwrite(fd, b'\x66' * (128 * KiB), 6 * MiB)
                        os.pwrite(fd, b'\x67' * 4096, 8 * KiB)
                        os.fsync(fd)
                        assert_eq(os.pread(fd, 4096, 8 * KiB), b'\x67' * 4096, 'read back')
                q.execute('blockdev-del', {'node-name': 'rem'})
                a.stop()
            bt.check_image(img)
            io_image(img, 'read -P 0x66 %d %d' % (6 * MiB, 128 * KiB),
                     'read -P 0x11 0 %d' % (8 * KiB), 'read -P 0x67 %d 4096' % (8 * KiB),
                     'read -P 0x11 %d %d' % (12 * KiB, 52 * KiB), *reads(DATA[1:]))


# --- 3. every kind of write through B ---

def test_writes_through_client():
    """Through B's re-export with libnbd: write, write with FUA,
    write-zeroes (punching and NO_HOLE), fast zero (cluster aligned: done;
    not aligned: ENOTSUP, as qcow2 cannot without a fallback, and the data
    stays), trim (B's node has discard=unmap), flush.  A's qcow2 (discard=unmap) then holds exactly
    that: qemu-io read -P and qemu-img map after A stopped."""
    nbd = bt.require_nbd()
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = make_qcow2(scratch.path('a.qcow2'), data=[(0x11, 0, 8 * MiB)])
            with server_daemon(kind, img, node_opts=',discard=unmap') as a, client_daemon() as b:
                q = b.qmp()
                # discard=unmap: by default (ignore) B would drop the trim
                add_nbd(q, a, discard='unmap')
                with bt.nbd_export(q, 'rem', name='re', writable=True):
                    with bt.nbd_connection(b.uri('re')) as h:
                        assert_eq((h.can_fua(), h.can_trim(), h.can_zero(), h.can_fast_zero()),
                                  (True, True, True, True), 'B advertises FUA/trim/zero/fast-zero')
                        h.pwrite(b'\xa1' * (64 * KiB), 10 * MiB)
                        h.pwrite(b'\xa2' * (64 * KiB), 10 * MiB + 64 * KiB, nbd.CMD_FLAG_FUA)
                        h.zero(128 * KiB, 1 * MiB)
                        h.zero(128 * KiB, 2 * MiB, nbd.CMD_FLAG_NO_HOLE)
                        h.zero(64 * KiB, 3 * MiB, nbd.CMD_FLAG_FAST_ZERO)
                        assert_eq(bt.nbd_errno(h.zero, 64 * KiB, 4 * MiB + 4 * KiB,
                                               nbd.CMD_FLAG_FAST_ZERO),
                                  errno.ENOTSUP, 'unaligned fast zero on qcow2')
                        h.trim(256 * KiB, 5 * MiB)
                        h.flush()
                        assert_eq(h.pread(4096, 10 * MiB + 64 * KiB), b'\xa2' * 4096, 'read back')
                q.execute('blockdev-del', {'node-name': 'rem'})
                a.stop()
            bt.check_image(img)
            io_image(img, 'read -P 0xa1 %d %d' % (10 * MiB, 64 * KiB),
                     'read -P 0xa2 %d %d' % (10 * MiB + 64 * KiB, 64 * KiB),
                     'read -P 0 %d %d' % (1 * MiB, 128 * KiB),
                     'read -P 0 %d %d' % (2 * MiB, 128 * KiB),
                     'read -P 0 %d %d' % (3 * MiB, 64 * KiB),
                     'read -P 0x11 %d %d' % (4 * MiB, 64 * KiB),
                     'read -P 0x11 %d %d' % (4 * MiB + 64 * KiB, 64 * KiB),
                     'read -P 0 %d %d' % (5 * MiB, 256 * KiB),
                     'read -P 0x11 %d %d' % (5 * MiB + 256 * KiB, 64 * KiB),
                     'read -P 0 %d %d' % (12 * MiB, 4 * MiB))
            m = json.loads(run(['qemu-img', 'map', '--output=json', '-f', 'qcow2', img]).stdout)

            def at(off):
                for e in m:
                    if e['start'] <= off < e['start'] + e['length']:
                        return e['data'], e['zero']
                raise AssertionError('offset %d not in the map' % off)
            assert_eq(at(1 * MiB), (False, True), 'write-zeroes: a zero cluster')
            assert_eq(at(3 * MiB), (False, True), 'fast zero: a zero cluster')
            assert_eq(at(5 * MiB), (False, True), 'trim: discarded')
            assert_eq(at(4 * MiB), (True, False), 'refused fast zero left data')
            assert_eq(at(10 * MiB), (True, False), 'written data')


# --- 4. x-dirty-bitmap ---

DIRTY = [(0x61, 1 * MiB, 64 * KiB), (0x62, 4 * MiB, 192 * KiB), (0x63, 12 * MiB, 64 * KiB)]


def _contexts(uri, *contexts):
    """block_status over the whole export: {context: [(offset, length, flags)]}."""
    out = {}
    with bt.nbd_connection(uri, contexts) as h:
        size = h.get_size()
        pos = 0
        while pos < size:
            got = {}

            def cb(ctx, off, ents, err):
                got[ctx] = [(ents[i], ents[i + 1]) for i in range(0, len(ents), 2)]
                return 0
            h.block_status(min(size - pos, 1 << 30), pos, cb)
            step = min(sum(n for n, _ in got[c]) for c in contexts)
            for c in contexts:
                o = pos
                for n, flags in got[c]:
                    if o >= pos + step:
                        break
                    n = min(n, pos + step - o)
                    out.setdefault(c, []).append((o, n, flags))
                    o += n
            pos += step
    return {c: merge(v) for c, v in out.items()}


def test_x_dirty_bitmap():
    """A has a dirty bitmap b0 on its node and writes after it was made,
    exported with bitmaps: [b0]; B opens with x-dirty-bitmap=
    qemu:dirty-bitmap:b0 and re-exports.  As in QEMU (iotest 223), B's
    block status is the bitmap: the areas libnbd reads dirty from A's
    bitmap context are NOT data (NBD_STATE_HOLE, no ZERO, on B's
    re-export; qemu-img map "data": false), clean areas are data; reads
    still give the image's bytes."""
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = make_qcow2(scratch.path('a.qcow2'))
            with server_daemon(kind, img, export=False) as a, client_daemon() as b:
                qa = a.qmp()
                qa.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b0'})
                qa.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'disk',
                                                'name': 'disk', 'writable': True,
                                                'bitmaps': ['b0']})
                bt.qemu_io(a.uri(), *['write -P 0x%x %d %d' % d for d in DIRTY])
                ctx = _contexts(a.uri(), 'qemu:dirty-bitmap:b0')['qemu:dirty-bitmap:b0']
                dirty = [(o, n) for o, n, f in ctx if f & 1]
                assert_eq(dirty, [(o, n) for _, o, n in DIRTY], "A's bitmap context: dirty areas")
                q = b.qmp()
                add_nbd(q, a, read_only=True, x_dirty_bitmap='qemu:dirty-bitmap:b0')
                with bt.nbd_export(q, 'rem', name='re'):
                    uri = b.uri('re')
                    want = merge([(o, n, 1 if f & 1 else 0) for o, n, f in ctx])
                    assert_eq(nbdinfo_map(uri), want,
                              "B's base:allocation with x-dirty-bitmap: dirty=hole(1), clean=data(0)")
                    assert_eq(qemu_img_map(['-f', 'raw', uri]),
                              merge([(o, n, not (f & 1)) for o, n, f in ctx]),
                              'qemu-img map over B: dirty areas are not data')
                    bt.qemu_io(uri, *(reads(DIRTY) + ['read -P 0x11 0 64k']), extra=['-r'])
                # qemu-img's own nbd driver with x-dirty-bitmap, straight on A
                opts = 'driver=nbd,server.type=unix,server.path=%s,export=disk,' \
                       'x-dirty-bitmap=qemu:dirty-bitmap:b0' % a.nbd_sock
                assert_eq(qemu_img_map(['--image-opts', opts]),
                          merge([(o, n, not (f & 1)) for o, n, f in ctx]),
                          'qemu-img map --image-opts x-dirty-bitmap on A')


# --- 5. a read-only export ---

def test_read_only_export():
    """A exports writable=off: B's read-write open fails with QEMU's
    'Could not open image: Permission denied' (also under a raw node);
    read-only=true opens it; auto-read-only=true opens it read-only (ro
    in query-named-block-nodes), and reads give the data; a writable
    export of the read-only node is refused ('Cannot export read-only
    node as writable')."""
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = make_qcow2(scratch.path('a.qcow2'))
            with server_daemon(kind, img, writable=False) as a, client_daemon() as b:
                q = b.qmp()
                expect_error(q, nbd_opts(a, 'rw'), ERR_RO_EXPORT)
                expect_error(q, {'driver': 'raw', 'node-name': 'rw2',
                                 'file': nbd_opts(a, 'rw2-file')}, ERR_RO_EXPORT)
                add_nbd(q, a, 'ro', read_only=True)
                add_nbd(q, a, 'aro', auto_read_only=True)
                assert_eq(node_info(q, 'ro')['ro'], True, 'read-only=true node ro')
                assert_eq(node_info(q, 'aro')['ro'], True, 'auto-read-only node ro')
                names = [n['node-name'] for n in q.execute('query-named-block-nodes')]
                assert_eq('rw' in names or 'rw2' in names, False, 'failed opens left no node')
                with bt.nbd_export(q, 'aro', name='re'):
                    bt.qemu_io(b.uri('re'), *reads(), extra=['-r'])
                expect_error(q, {'type': 'nbd', 'id': 'w', 'node-name': 'ro', 'name': 'w',
                                 'writable': True}, 'Cannot export read-only node as writable',
                             cmd='block-export-add')


# --- 6. connection errors and open-timeout ---

def test_connect_errors():
    """Nothing at a unix path, a socket file nobody listens on, a closed
    TCP port, and an export the server does not have: blockdev-add fails
    with QEMU's GenericError texts and leaves no node; the daemon goes
    on."""
    with client_daemon() as b, bt.Daemon() as scratch:
        q = b.qmp()
        missing = scratch.path('none.sock')
        expect_error(q, {'driver': 'nbd', 'node-name': 'n', 'export': 'disk',
                         'server': {'type': 'unix', 'path': missing}}, ERR_NOENT % missing)
        stale = scratch.path('stale.sock')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        expect_error(q, {'driver': 'nbd', 'node-name': 'n', 'export': 'disk',
                         'server': {'type': 'unix', 'path': stale}}, ERR_REFUSED % stale)
        port = free_port()
        expect_error(q, {'driver': 'nbd', 'node-name': 'n', 'export': 'disk',
                         'server': {'type': 'inet', 'host': '127.0.0.1', 'port': str(port)}},
                     ERR_REFUSED % ('127.0.0.1:%d' % port))
        for kind in KINDS:
            for inet in (False, True):
                img = make_qcow2(scratch.path('a.qcow2'), data=())
                with server_daemon(kind, img, inet=inet) as a:
                    expect_error(q, nbd_opts(a, 'n', export='nope'), ERR_NO_EXPORT)
                    # no export name is the empty name, which A lacks too
                    args = nbd_opts(a, 'n')
                    del args['export']
                    expect_error(q, args, ERR_NO_EXPORT)
                    add_nbd(q, a, 'ok')
                    q.execute('blockdev-del', {'node-name': 'ok'})
        assert_eq([n['node-name'] for n in q.execute('query-named-block-nodes')], [],
                  'no node left behind')


def test_open_timeout():
    """open-timeout=5: A's socket appears 1 s after blockdev-add was sent
    and the open succeeds (without open-timeout the same open fails at
    once); with nothing ever listening it fails with the connect error,
    within a generous bound.  QEMU retries the first connection after 1,
    2, 4, ... s (attempts at about 0, 1, 3, 7 s), so an A that is up
    after ~1.2 s is reached at ~3 s: a timeout of 3 would race with that
    attempt."""
    with client_daemon() as b, bt.Daemon() as adir:
        q = b.qmp()
        img = make_qcow2(adir.path('a.qcow2'))
        server = {'type': 'unix', 'path': adir.nbd_sock}
        expect_error(q, {'driver': 'nbd', 'node-name': 'n0', 'export': 'disk', 'server': server},
                     ERR_NOENT % adir.nbd_sock)
        started, failed = [], []

        def start_a():
            time.sleep(1.0)
            try:
                started.append(server_daemon('self', img, tmpdir=adir.dir))
            except BaseException as e:  # noqa: BLE001
                failed.append(e)
        t = threading.Thread(target=start_a)
        t.start()
        try:
            r = q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'n1', 'export': 'disk',
                                       'server': server, 'open-timeout': 5})
        finally:
            t.join()
        try:
            if failed:
                raise AssertionError('A did not start: %s' % failed[0])
            assert_eq(r, {'return': {}}, 'open with open-timeout while A starts')
            with bt.nbd_export(q, 'n1', name='re'):
                bt.qemu_io(b.uri('re'), *reads(), extra=['-r'])
            q.execute('blockdev-del', {'node-name': 'n1'})
        finally:
            for a in started:
                a.stop()
                a.cleanup()
        never = adir.path('never.sock')
        t0 = time.monotonic()
        expect_error(q, {'driver': 'nbd', 'node-name': 'n2', 'export': 'disk',
                         'server': {'type': 'unix', 'path': never}, 'open-timeout': 2},
                     ERR_NOENT % never)
        assert time.monotonic() - t0 < 30, 'open-timeout=2 took over 30 s'
        port = free_port()
        expect_error(q, {'driver': 'nbd', 'node-name': 'n3', 'export': 'disk', 'open-timeout': 1,
                         'server': {'type': 'inet', 'host': '127.0.0.1', 'port': str(port)}},
                     ERR_REFUSED % ('127.0.0.1:%d' % port))


# --- 7. reconnect-delay ---

CHUNK = 64 * KiB


def test_reconnect_delay():
    """reconnect-delay=5: a libnbd writer (64 KiB patterns, each flushed)
    through B's re-export goes on while A is stopped (SIGTERM) and
    restarted on the same socket with the same image ~1 s later; no
    request fails, writes are acknowledged after the restart, and every
    acknowledged write is on A's image afterwards (qemu-io read -P per
    chunk)."""
    bt.require_nbd()
    for kind in KINDS:
        with bt.Daemon() as adir:
            img = make_qcow2(adir.path('a.qcow2'), data=())
            a = server_daemon(kind, img, tmpdir=adir.dir)
            restarted = []
            try:
                with client_daemon() as b:
                    q = b.qmp()
                    add_nbd(q, a, reconnect_delay=5)
                    last = {}
                    with bt.nbd_export(q, 'rem', name='re', writable=True):
                        with bt.nbd_connection(b.uri('re')) as h:
                            bounce = threading.Event()

                            def restart():
                                time.sleep(0.3)
                                a.stop()
                                bounce.set()
                                time.sleep(1.0)
                                for f in ('nbd.sock', 'qmp.sock'):     # if A left them
                                    if os.path.exists(adir.path(f)):
                                        os.unlink(adir.path(f))
                                restarted.append(server_daemon(kind, img, tmpdir=adir.dir))
                            t = threading.Thread(target=restart)
                            t.start()
                            i = after = 0
                            try:
                                while after < 20 and i < 5000:
                                    off = (i * CHUNK) % SIZE
                                    pat = i % 250 + 1
                                    h.pwrite(bytes([pat]) * CHUNK, off)
                                    h.flush()
                                    last[off] = pat
                                    i += 1
                                    if restarted:
                                        after += 1
                            finally:
                                t.join()
                            assert bounce.is_set(), 'A was not stopped during the writes'
                            assert_eq(after, 20, 'writes acknowledged after the restart')
                    q.execute('blockdev-del', {'node-name': 'rem'})
                for r in restarted:
                    r.stop()
            finally:
                a.cleanup()
                for r in restarted:
                    r.cleanup()
            bt.check_image(img)
            io_image(img, *['read -P %d %d %d' % (p, o, CHUNK) for o, p in sorted(last.items())])


def test_no_reconnect_fails_fast():
    """Without reconnect-delay (0) requests fail with EIO once A is gone,
    at once (no hang); with reconnect-delay=1 and A never back, they fail
    with EIO too; B goes on and blockdev-del works."""
    bt.require_nbd()
    for delay in (0, 1):
        with bt.Daemon() as scratch:
            img = make_qcow2(scratch.path('a.qcow2'))
            with server_daemon('qsd' if delay else 'self', img) as a, client_daemon() as b:
                q = b.qmp()
                add_nbd(q, a, reconnect_delay=delay)
                with bt.nbd_export(q, 'rem', name='re', writable=True):
                    with bt.nbd_connection(b.uri('re')) as h:
                        assert_eq(h.pread(4096, 0), b'\x11' * 4096, 'read before')
                        a.stop()
                        assert_eq(bt.nbd_errno(h.pwrite, b'\x01' * 4096, 0), errno.EIO,
                                  'write after A died (reconnect-delay %d)' % delay)
                    # simple replies: QEMU's server drops a structured-reply
                    # client whose read fails before the data (its block status)
                    with bt.nbd_connection(b.uri('re'), structured=False) as h:
                        assert_eq(bt.nbd_errno(h.pread, 4096, 0), errno.EIO,
                                  'read after A died (reconnect-delay %d)' % delay)
                        assert_eq(bt.nbd_errno(h.flush), errno.EIO,
                                  'flush after A died (reconnect-delay %d)' % delay)
                    p = bt.qemu_io(b.uri('re'), 'write -P 1 0 4k', check=False)
                    assert_in('write failed: Input/output error', p.stdout, 'qemu-io through B')
                b.assert_alive()
                q.execute('blockdev-del', {'node-name': 'rem'})


# --- 8. backing files over NBD ---

def test_backing_node_reference():
    """A local qcow2 overlay on B whose backing is a driver=nbd node
    (blockdev-add backing: node reference): reads give A's data through
    the overlay, writes stay in the overlay, A's image is untouched."""
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = make_qcow2(scratch.path('a.qcow2'))
            with server_daemon(kind, img, writable=False) as a, client_daemon() as b:
                q = b.qmp()
                add_nbd(q, a, read_only=True)
                ov = b.path('ov.qcow2')
                run(['qemu-img', 'create', '-f', 'qcow2', ov, str(SIZE)])
                q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov', 'backing': 'rem',
                                           'file': {'driver': 'file', 'filename': ov}})
                with bt.nbd_export(q, 'ov', name='ov', writable=True):
                    uri = b.uri('ov')
                    compare_raw_to(img, 'qcow2', uri)
                    bt.qemu_io(uri, 'write -P 0x99 0 64k', 'read -P 0x99 0 64k',
                               *reads(DATA[1:]))
                q.execute('blockdev-del', {'node-name': 'ov'})
                q.execute('blockdev-del', {'node-name': 'rem'})
                io_image(ov, 'read -P 0x99 0 64k', 'read -P 0 1M 64k')
                bt.check_image(ov)
            io_image(img, *reads())


def test_backing_file_names():
    """qcow2 overlays whose backing file name is an NBD filename, opened by
    B with just file+qcow2 (the backing resolved from the name, format
    raw): 'nbd+unix:///disk?socket=PATH', a json: filename with
    file.driver=nbd, the legacy 'nbd:unix:PATH:exportname=disk', and
    'nbd://127.0.0.1:PORT/disk'.  Reads give A's data; the overlay's
    backing_file and the nbd node's 'file' are QEMU's canonical nbd
    strings, also for the json: name."""
    with bt.Daemon() as scratch:
        img = make_qcow2(scratch.path('a.qcow2'))
        img2 = scratch.path('a2.qcow2')     # the TCP server's copy (the image locks)
        run(['cp', img, img2])
        for kind in KINDS:
            with server_daemon(kind, img, writable=False) as a, \
                    server_daemon(kind, img2, writable=False, inet=True) as ai, \
                    client_daemon() as b:
                q = b.qmp()
                js = 'json:' + json.dumps({'file': {'driver': 'nbd', 'export': 'disk',
                                                    'server': a.server}})
                names = [a.uri(), js, 'nbd:unix:%s:exportname=disk' % a.nbd_sock,
                         'nbd://127.0.0.1:%d/disk' % ai.port]
                for i, name in enumerate(names):
                    ov = b.path('ov%d.qcow2' % i)
                    run(['qemu-img', 'create', '-f', 'qcow2', '-u', '-b', name, '-F', 'raw', ov,
                         str(SIZE)])
                    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov%d' % i,
                                               'read-only': True,
                                               'file': {'driver': 'file', 'filename': ov}})
                    with bt.nbd_export(q, 'ov%d' % i, name='ov%d' % i):
                        uri = b.uri('ov%d' % i)
                        compare_raw_to(img, 'qcow2', uri)
                    nodes = q.execute('query-named-block-nodes')
                    want = expected_file(ai if i == 3 else a)
                    top = [n for n in nodes if n['node-name'] == 'ov%d' % i][0]
                    assert_eq(top['backing_file'], want,
                              'backing_file of overlay %d (%s)' % (i, name))
                    nbd_nodes = [n for n in nodes if n['drv'] == 'nbd']
                    assert_eq([n['file'] for n in nbd_nodes], [want],
                              'the nbd node of overlay %d' % i)
                    q.execute('blockdev-del', {'node-name': 'ov%d' % i})


# --- 9. backup and mirror to a remote daemon ---

def _src(b, pattern_base=0x30):
    src = b.path('src.raw')
    bt.make_image(src, SIZE)
    bt.qemu_io(src, *['write -P 0x%x %d %d' % (pattern_base + i, i * MiB + (i % 3) * 4 * KiB, 300 * KiB)
                      for i in range(0, 16, 3)])
    return src


def test_backup_to_remote():
    """B's local source; a driver=nbd node on A's writable export (raw
    file on A); blockdev-backup sync=full to it; then A's image equals
    the source (qemu-img compare)."""
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = bt.make_image(scratch.path('a.raw'), SIZE, pattern=0xee)
            with server_daemon(kind, img, fmt='raw') as a, client_daemon() as b:
                q = b.qmp()
                src = _src(b)
                q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                           'file': {'driver': 'file', 'filename': src}})
                add_nbd(q, a, 'tgt')
                q.execute('blockdev-backup', {'device': 'src', 'target': 'tgt', 'sync': 'full',
                                              'job-id': 'bk'})
                assert_eq(q.run_job('bk', auto_dismiss=True).error, None, 'backup error')
                q.execute('blockdev-del', {'node-name': 'tgt'})
                a.stop()
                run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', src, img])


def test_mirror_to_remote():
    """blockdev-mirror sync=full to a driver=nbd node; the job gets ready,
    is completed, and A's image equals the source."""
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = bt.make_image(scratch.path('a.raw'), SIZE, pattern=0xee)
            with server_daemon(kind, img, fmt='raw') as a, client_daemon() as b:
                q = b.qmp()
                src = _src(b, 0x40)
                q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                           'file': {'driver': 'file', 'filename': src}})
                add_nbd(q, a, 'tgt')
                q.execute('blockdev-mirror', {'device': 'src', 'target': 'tgt', 'sync': 'full',
                                              'job-id': 'mi'})
                run_ = q.run_job('mi', complete=True, auto_dismiss=True)
                assert_eq(run_.error, None, 'mirror error')
                assert_in('ready', run_.statuses, 'mirror statuses')
                q.execute('blockdev-del', {'node-name': 'tgt'})
                a.stop()
                run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', src, img])


def test_drive_mirror_nbd_filenames():
    """drive-mirror (mode=existing, format=raw) to the legacy filename
    'nbd:unix:PATH:exportname=disk' and to the nbd+unix URI, and
    drive-backup to the URI: each time A's image equals the source.  A
    plain driver=file node refuses the legacy string (it is a filename
    only for QEMU's filename parsing)."""
    for kind in KINDS:
        with bt.Daemon() as scratch:
            img = bt.make_image(scratch.path('a.raw'), SIZE, pattern=0xee)
            with server_daemon(kind, img, fmt='raw') as a, client_daemon() as b:
                q = b.qmp()
                cmds = [c['name'] for c in q.execute('query-commands')]
                if 'drive-mirror' not in cmds:
                    raise bt.Skip('no drive-mirror in query-commands')
                src = b.path('src.raw')
                bt.make_image(src, SIZE)
                q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                           'file': {'driver': 'file', 'filename': src}})
                jobs = [('drive-mirror', 'nbd:unix:%s:exportname=disk' % a.nbd_sock, 0x51),
                        ('drive-mirror', a.uri(), 0x52)]
                if 'drive-backup' in cmds:
                    jobs.append(('drive-backup', a.uri(), 0x53))
                for i, (cmd, target, pat) in enumerate(jobs):
                    with bt.nbd_export(q, 'src', name='s', writable=True):
                        bt.qemu_io(b.uri('s'), 'write -P 0x%x %d %d' % (pat, i * MiB, 256 * KiB))
                    q.execute(cmd, {'device': 'src', 'job-id': 'j%d' % i, 'target': target,
                                    'mode': 'existing', 'format': 'raw', 'sync': 'full'})
                    r = q.run_job('j%d' % i, complete=cmd == 'drive-mirror', auto_dismiss=True)
                    assert_eq(r.error, None, '%s to %s' % (cmd, target))
                    run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', src, img])
                err = q.error('blockdev-add', {'driver': 'raw', 'node-name': 'bad', 'file': {
                    'driver': 'file', 'filename': 'nbd:unix:%s:exportname=disk' % a.nbd_sock}})
                assert_eq(err['desc'], "Could not open 'nbd:unix:%s:exportname=disk': "
                          "No such file or directory" % a.nbd_sock, 'driver=file on a legacy string')


# --- 10. TLS ---

@contextlib.contextmanager
def tls_server(kind, **kw):
    """tls_env.start_tls_daemon(**kw) with A of `kind`: 'qsd' makes its
    TLSDaemon run qemu-storage-daemon."""
    cls = tls_env.TLSDaemon
    if kind == 'qsd':
        class QSDTLSDaemon(cls):
            def start(self, timeout=15.0):
                self.exe = bt.QSD
                return super().start(timeout)
        tls_env.TLSDaemon = QSDTLSDaemon
    try:
        d = tls_env.start_tls_daemon(**kw)
    finally:
        tls_env.TLSDaemon = cls
    with d:
        yield d


def _tls_x509_case(a):
    with client_daemon(['--object', x509_object('tls0', a.pki.client, 'client'),
                        '--object', x509_object('rogue', a.pki.rogue_trust, 'client',
                                                sanity_check='off')]) as b:
        q = b.qmp()
        server = {'type': 'inet', 'host': '127.0.0.1', 'port': str(a.port)}
        base = {'driver': 'nbd', 'export': 'disk', 'server': server}
        q.execute('blockdev-add', dict(base, **{'node-name': 'rem', 'tls-creds': 'tls0'}))
        with bt.nbd_export(q, 'rem', name='re', writable=True):
            compare_raw_to(a.image, 'raw', b.uri('re'))
            bt.qemu_io(b.uri('re'), 'write -P 0x4d 1M 64k', 'read -P 0x4d 1M 64k')
        q.execute('blockdev-del', {'node-name': 'rem'})
        bt.qemu_io(a.image, 'read -P 0x4d 1M 64k', 'read -P 0x3c 0 1M', extra=['-U', '-r'])
        expect_error(q, dict(base, **{'node-name': 'n'}),
                     'TLS negotiation required before option 7 (go)')
        expect_error(q, dict(base, **{'node-name': 'n', 'tls-creds': 'rogue'}),
                     "The certificate hasn't got a known issuer")
        expect_error(q, dict(base, **{'node-name': 'n', 'tls-creds': 'tls0',
                                      'tls-hostname': 'wronghost'}),
                     'Certificate does not match the hostname wronghost')
        expect_error(q, dict(base, **{'node-name': 'n', 'tls-creds': 'nope'}),
                     "No TLS credentials with id 'nope'")
        q.execute('blockdev-add', dict(base, **{'node-name': 'again', 'tls-creds': 'tls0',
                                                'tls-hostname': '127.0.0.1'}))
        a.assert_alive()


def test_tls_x509():
    """A (the daemon under test, then QSD) serves with tls-creds-x509 on TCP; B has
    client credentials (--object tls-creds-x509,endpoint=client) and opens
    with tls-creds: data compare.  Refused, each with QEMU's text: no
    tls-creds ('TLS negotiation required before option 7 (go)'), a client
    trusting another CA ("The certificate hasn't got a known issuer"), a
    wrong tls-hostname ('Certificate does not match the hostname X'), and
    unknown credentials ("No TLS credentials with id 'X'")."""
    for kind in KINDS:
        with tls_server(kind, pattern=0x3c, image_size=SIZE) as a:
            _tls_x509_case(a)


def test_tls_x509_unix():
    """TLS over a unix socket: without tls-hostname QEMU has no name to
    check the server's certificate against ('No hostname for certificate
    validation'); with tls-hostname=localhost it opens, and reads equal."""
    with tls_server('qsd', unix=True, pattern=0x2b, image_size=SIZE) as a:
        with client_daemon(['--object', x509_object('tls0', a.pki.client, 'client')]) as b:
            q = b.qmp()
            base = {'driver': 'nbd', 'export': 'disk', 'tls-creds': 'tls0',
                    'server': {'type': 'unix', 'path': a.nbd_sock}}
            expect_error(q, dict(base, **{'node-name': 'n'}),
                         'No hostname for certificate validation')
            q.execute('blockdev-add', dict(base, **{'node-name': 'rem',
                                                    'tls-hostname': 'localhost'}))
            assert_eq(node_info(q, 'rem')['file'],
                      'nbd+unix:///disk?socket=%s' % a.nbd_sock, 'file string over TLS')
            with bt.nbd_export(q, 'rem', name='re'):
                compare_raw_to(a.image, 'raw', b.uri('re'))


def test_tls_psk():
    """PSK: A serves with tls-creds-psk; B's client tls-creds-psk
    (username=alice, the right key) opens and reads; a wrong key fails the
    TLS handshake ('TLS handshake failed: ...'); X.509-only... no creds:
    'TLS negotiation required before option 7 (go)'."""
    with tls_server('self', creds='psk', pattern=0x5e, image_size=SIZE) as a:
        good = os.path.dirname(psk_client_file(a))
        bad = os.path.dirname(psk_client_file(a, key=WRONG_KEY))
        with client_daemon(['--object', psk_object('psk0', good, 'client', username=PSK_USER),
                            '--object', psk_object('psk1', bad, 'client', username=PSK_USER)]) as b:
            q = b.qmp()
            base = {'driver': 'nbd', 'export': 'disk',
                    'server': {'type': 'inet', 'host': '127.0.0.1', 'port': str(a.port)}}
            q.execute('blockdev-add', dict(base, **{'node-name': 'rem', 'tls-creds': 'psk0'}))
            with bt.nbd_export(q, 'rem', name='re'):
                compare_raw_to(a.image, 'raw', b.uri('re'))
            err = q.error('blockdev-add', dict(base, **{'node-name': 'n', 'tls-creds': 'psk1'}))
            assert_eq(err['class'], 'GenericError', 'wrong PSK: class')
            assert err['desc'].startswith('TLS handshake failed: '), err
            expect_error(q, dict(base, **{'node-name': 'n'}),
                         'TLS negotiation required before option 7 (go)')
            a.assert_alive()


# --- 10b. requests in flight over a slow server ---

def _worker_threads(d):
    """The daemon's NBD worker threads (their names, from /proc)."""
    n = 0
    task = '/proc/%d/task' % d.proc.pid
    for tid in os.listdir(task):
        try:
            with open(os.path.join(task, tid, 'comm')) as f:
                n += f.read().strip() == 'nbd-worker'
        except FileNotFoundError:
            pass
    return n


def _parallel_reads(uri, count, expect):
    """`count` 4 KiB reads sent at once over one connection (libnbd aio);
    each must return `expect(offset)`."""
    nbd = bt.require_nbd()
    h = nbd.NBD()
    h.connect_uri(uri)
    bufs = []
    for i in range(count):
        buf = nbd.Buffer(4096)
        h.aio_pread(buf, i * 64 * KiB)
        bufs.append((i * 64 * KiB, buf))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for off, buf in bufs:
        assert_eq(buf.to_bytearray(), expect(off), 'read at %d' % off)
    return h


def test_slow_server_many_in_flight():
    """A client's queue depth reaches a slow remote server: 48 reads sent
    at once through B's export of an nbd node whose server (nbdkit, delay
    filter) answers each read after a second all start on B's side, each
    on its own worker (more than the 4 per CPU, 8 to 16, that a local
    node gets: the node is latency-bound), and all read the right data.
    An export of a local node, its reads held by a throttle, still stops
    at that limit."""
    bt.skip_if_reference('the worker count is blockd\'s')
    bt.require_tool('nbdkit')
    with bt.Daemon() as scratch:
        sock = scratch.path('slow.sock')
        slow = subprocess.Popen(['nbdkit', '-f', '-t', '64', '-U', sock, '--filter=delay',
                                 'pattern', 'size=%d' % SIZE, 'rdelay=1'])
        try:
            bt.wait_for(lambda: os.path.exists(sock), 10, 'nbdkit socket')
            with client_daemon() as b:
                q = b.qmp()
                q.execute('blockdev-add', {'driver': 'nbd', 'node-name': 'rem',
                                           'read-only': True,
                                           'server': {'type': 'unix', 'path': sock}})
                q.execute('block-export-add', {'type': 'nbd', 'id': 'e-rem',
                                               'node-name': 'rem'})
                # nbdkit's pattern plugin: each 8-byte word is its offset (BE).
                h = _parallel_reads(b.uri('rem'), 48, lambda off: b''.join(
                    struct.pack('>Q', off + i) for i in range(0, 4096, 8)))
                workers = _worker_threads(b)
                h.shutdown()
                if workers < 40:
                    raise AssertionError('%d workers for 48 reads on a latency-bound node'
                                         % workers)

                # A local node: reads wait in a throttle, not on the network.
                img = b.path('local.raw')
                with open(img, 'wb') as f:
                    f.truncate(SIZE)
                q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg',
                                         'limits': {'iops-total': 50}})
                q.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'thr',
                                           'throttle-group': 'tg', 'file': {
                                               'driver': 'file', 'filename': img}})
                q.execute('block-export-add', {'type': 'nbd', 'id': 'e-thr',
                                               'node-name': 'thr'})
                bt.wait_for(lambda: _worker_threads(b) == 0, 30,
                            'the first connection\'s workers to leave')
                h = _parallel_reads(b.uri('thr'), 48, lambda off: bytearray(4096))
                local = _worker_threads(b)
                h.shutdown()
                print('NBD workers: %d for the remote node, %d for the local one'
                      % (workers, local))
                if local > 16:
                    raise AssertionError('%d workers on a local node (at most 16)' % local)
        finally:
            slow.terminate()
            slow.wait()


# --- 11. bad arguments ---

def test_bad_arguments():
    """Argument errors (GenericError, QEMU's texts), none leaving a node:
    server missing, of a wrong type, an unknown SocketAddress type, a
    missing path, an integer port, export not a string, negative
    reconnect-delay / open-timeout, a string reconnect-delay, an unknown
    option."""
    with bt.Daemon() as scratch:
        img = make_qcow2(scratch.path('a.qcow2'), data=())
        with server_daemon('qsd', img) as a, client_daemon() as b:
            q = b.qmp()
            unix = {'type': 'unix', 'path': a.nbd_sock}
            cases = [
                ({}, "Parameter 'server' is missing"),
                ({'server': 'foo'}, "Invalid parameter type for 'server', expected: object"),
                ({'server': {'type': 'bogus', 'path': 'x'}},
                 "Parameter 'type' does not accept value 'bogus'"),
                ({'server': {'type': 'unix'}}, "Parameter 'server.path' is missing"),
                ({'server': {'type': 'inet', 'host': '127.0.0.1', 'port': 10809}},
                 "Invalid parameter type for 'server.port', expected: string"),
                ({'server': unix, 'export': 5}, "Invalid parameter type for 'export', expected: string"),
                ({'server': unix, 'export': 'disk', 'reconnect-delay': -1},
                 "Parameter 'reconnect-delay' expects uint32_t"),
                ({'server': unix, 'export': 'disk', 'reconnect-delay': 'x'},
                 "Parameter 'reconnect-delay' expects uint64"),
                ({'server': unix, 'export': 'disk', 'open-timeout': -1},
                 "Parameter 'open-timeout' expects uint32_t"),
                ({'server': unix, 'export': 'disk', 'bogus': 1}, "Parameter 'bogus' is unexpected"),
            ]
            for extra, desc in cases:
                expect_error(q, dict({'driver': 'nbd', 'node-name': 'n'}, **extra), desc)
            assert_eq(q.execute('query-named-block-nodes'), [], 'no node left behind')
            add_nbd(q, a, 'n')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
