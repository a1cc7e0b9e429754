#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Iothreads as worker pools: an export with 'iothread' runs its threads
in that iothread's pool (named "IO <id>", bounded by thread-pool-max) for
NBD and FUSE, follows its node through x-blockdev-set-iothread unless
fixed, QEMU's refusals and texts for moves and exports that cannot
follow, and object-del of an iothread in use.  Data is checked with
qemu-io patterns on the image.

qemu-storage-daemon 7.2 aborts when an NBD client of an export in an
iothread disconnects, and crashes after object-del of an iothread in use:
against it only the QMP replies are compared, without client I/O."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, fuse_export, is_reference, main, make_image,  # noqa: E402
                         nbd_connection, qemu_io, require_fuse, require_nbd, skip_if_reference,
                         start_daemon, tests_of, wait_for)

GE = 'GenericError'
BUSY = 'Cannot change iothread of active block backend'
MiB = 1 << 20


def _err(q, cmd, args, desc, cls=GE):
    assert_eq(q.error(cmd, args), {'class': cls, 'desc': desc}, '%s %r' % (cmd, args))


def _daemon(extra=()):
    return start_daemon(['--object', 'iothread,id=io0', '--object', 'iothread,id=io1']
                        + list(extra))


def _graph(q, d, size=MiB):
    img = d.path('a.img')
    make_image(img, size)
    q.execute('blockdev-add', {'driver': 'file', 'filename': img, 'node-name': 'f0'})
    q.execute('blockdev-add', {'driver': 'raw', 'file': 'f0', 'node-name': 'r0'})
    return img


def _nbd_server(q, d):
    q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})


def _thread_names(d):
    names = []
    task = '/proc/%d/task' % d.proc.pid
    for tid in os.listdir(task):
        try:
            with open(os.path.join(task, tid, 'comm')) as f:
                names.append(f.read().strip())
        except OSError:
            pass                # the thread has just gone
    return names


def _count(d, name):
    return _thread_names(d).count(name)


def test_fixed_iothread_rules():
    """QEMU's rules for moving a node whose export is fixed, and for new
    exports that cannot move the node (compared with qemu-storage-daemon)."""
    with _daemon() as d:
        q = d.qmp()
        _graph(q, d)
        _nbd_server(q, d)
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'r0',
                                       'iothread': 'io0', 'fixed-iothread': True})
        # The whole connected graph moves: the file child too.
        for node, io, force in (('r0', 'io1', True), ('f0', 'io1', True), ('f0', 'io1', False),
                                ('r0', None, True)):
            args = {'node-name': node, 'iothread': io}
            if force:
                args['force'] = True
            _err(q, 'x-blockdev-set-iothread', args, BUSY)
        q.execute('x-blockdev-set-iothread', {'node-name': 'r0', 'iothread': 'io0',
                                              'force': True})
        exp = {'type': 'nbd', 'node-name': 'r0'}
        _err(q, 'block-export-add', dict(exp, id='e1', name='x1', iothread='io1',
                                         **{'fixed-iothread': True}), BUSY)
        # Not fixed: it runs where the node is.
        q.execute('block-export-add', dict(exp, id='e2', name='x2', iothread='io1',
                                           **{'fixed-iothread': False}))
        q.execute('block-export-add', dict(exp, id='e3', name='x3'))
        q.execute('block-export-add', dict(exp, id='e4', name='x4', iothread='io0'))
        assert_eq(sorted(e['id'] for e in q.execute('query-block-exports')),
                  ['e0', 'e2', 'e3', 'e4'], 'exports')
        q.execute('block-export-del', {'id': 'e0'})
        wait_for(lambda: 'e0' not in [e['id'] for e in q.execute('query-block-exports')],
                 what='e0 gone')
        # Now nothing is fixed: the graph and its exports move.
        q.execute('x-blockdev-set-iothread', {'node-name': 'r0', 'iothread': 'io1',
                                              'force': True})
        q.execute('object-del', {'id': 'io0'})
        if not is_reference():
            # qemu-storage-daemon 7.2 deletes it and crashes on the next
            # request; blockd refuses with QEMU's in-use text.
            _err(q, 'object-del', {'id': 'io1'}, "object 'io1' is in use, can not be deleted")
            for e in ('e2', 'e3', 'e4'):
                q.execute('block-export-del', {'id': e})
            wait_for(lambda: q.execute('query-block-exports') == [], what='exports gone')
            _err(q, 'object-del', {'id': 'io1'}, "object 'io1' is in use, can not be deleted")
            q.execute('x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': None})
            q.execute('object-del', {'id': 'io1'})


def test_export_add_error_order():
    """The iothread is looked up where QEMU does: after the id, the node
    and the read-only check."""
    with _daemon() as d:
        q = d.qmp()
        img = d.path('a.img')
        make_image(img, MiB)
        q.execute('blockdev-add', {'driver': 'file', 'filename': img, 'node-name': 'f0',
                                   'read-only': True})
        _nbd_server(q, d)
        exp = {'type': 'nbd', 'id': 'e0', 'node-name': 'f0', 'iothread': 'nope'}
        for extra, desc in (({'id': '0bad'}, 'Invalid block export id'),
                            ({'node-name': 'nope'}, "Cannot find device='' nor node-name='nope'"),
                            ({'writable': True}, 'Cannot export read-only node as writable'),
                            ({}, 'iothread "nope" not found'),
                            ({'iothread': 'io0', 'writable': True},
                             'Cannot export read-only node as writable')):
            _err(q, 'block-export-add', dict(exp, **extra), desc)
        # fixed-iothread without an iothread: fixed where the node is.
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'f0',
                                       'fixed-iothread': True})
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'io0', 'force': True},
             BUSY)


def test_graph_joined_later():
    """A node added above a node in an iothread starts outside it (QEMU 7.2
    crashes on that blockdev-add); moving either moves the whole graph."""
    skip_if_reference('qemu-storage-daemon 7.2 crashes on this blockdev-add')
    with _daemon() as d:
        q = d.qmp()
        img = d.path('a.img')
        make_image(img, MiB)
        q.execute('blockdev-add', {'driver': 'file', 'filename': img, 'node-name': 'f0'})
        q.execute('x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'io0'})
        q.execute('blockdev-add', {'driver': 'raw', 'file': 'f0', 'node-name': 'r1'})
        _nbd_server(q, d)
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'r1',
                                       'fixed-iothread': True})
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'r1', 'iothread': 'io0',
                                            'force': True}, BUSY)
        # Out of io0 is where the export is fixed: f0 comes along.
        q.execute('x-blockdev-set-iothread', {'node-name': 'r1', 'iothread': None,
                                              'force': True})
        q.execute('object-del', {'id': 'io0'})


def test_nbd_export_runs_in_its_iothread():
    skip_if_reference('qemu-storage-daemon 7.2 aborts when a client of an iothread '
                      'export disconnects')
    with _daemon() as d:
        q = d.qmp()
        img = _graph(q, d)
        _nbd_server(q, d)
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'r0',
                                       'name': 'disk', 'writable': True, 'iothread': 'io0'})
        assert_eq(_count(d, 'IO io0'), 0, 'no worker before a client')
        with nbd_connection(d.uri()) as h:
            h.pwrite(b'\x5a' * 65536, 0)
            assert_eq(h.pread(65536, 0), b'\x5a' * 65536, 'read back')
            assert_eq(_count(d, 'IO io0') >= 1, True, 'the connection runs in io0: %r'
                      % _thread_names(d))
            assert_eq(_count(d, 'IO io1'), 0, 'nothing in io1')
            # The node moves (the export is not fixed): the workers follow
            # on their next request.
            q.execute('x-blockdev-set-iothread', {'node-name': 'r0', 'iothread': 'io1',
                                                  'force': True})
            h.pwrite(b'\xa5' * 4096, 65536)
            wait_for(lambda: _count(d, 'IO io1') >= 1, what='a worker in io1')
            # Out of any iothread: back to blockd's own names.
            q.execute('x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': None,
                                                  'force': True})
            h.pread(4096, 65536)
            wait_for(lambda: 'nbd-worker' in _thread_names(d), what='a worker out of io1')
            h.flush()
        wait_for(lambda: _count(d, 'IO io0') + _count(d, 'IO io1') == 0,
                 what='workers gone with the client')
        qemu_io(img, 'read -P 0x5a 0 64k', 'read -P 0xa5 64k 4k')


def test_thread_pool_max_bounds_workers():
    skip_if_reference('qemu-storage-daemon 7.2 aborts when a client of an iothread '
                      'export disconnects')
    with start_daemon(['--object', 'iothread,id=io0,thread-pool-max=1']) as d:
        q = d.qmp()
        img = _graph(q, d, 8 * MiB)
        _nbd_server(q, d)
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'r0',
                                       'name': 'disk', 'writable': True, 'iothread': 'io0'})
        assert_eq(q.execute('qom-get', {'path': '/objects/io0',
                                        'property': 'thread-pool-max'}), 1, 'max')
        with nbd_connection(d.uri()) as h:
            # Many requests at once: a connection without a bound would
            # start more workers; this one stays on its one thread.
            bufs = []
            for i in range(64):
                buf = h.aio_pwrite(bytes([i]) * 65536, i * 65536)
                bufs.append(buf)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            assert_eq(_count(d, 'IO io0'), 1, 'one worker: %r' % _thread_names(d))
            for i in range(64):
                assert_eq(h.pread(65536, i * 65536), bytes([i]) * 65536, 'block %d' % i)
            # A larger bound applies to workers started from now on.
            q.execute('qom-set', {'path': '/objects/io0', 'property': 'thread-pool-max',
                                  'value': 4})
            nbd = require_nbd()
            rbufs = [nbd.Buffer(65536) for _ in range(64)]
            for i in range(64):
                h.aio_pread(rbufs[i], i * 65536)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            assert_eq(_count(d, 'IO io0') <= 4, True, 'bounded: %r' % _thread_names(d))
            for i in range(64):
                assert_eq(rbufs[i].to_bytearray(), bytearray([i]) * 65536, 'aio %d' % i)
        qemu_io(img, 'read -P 0 0 64k', 'read -P 63 %d 64k' % (63 * 65536))


def test_fuse_export_in_iothread():
    skip_if_reference('thread names are blockd\'s')
    require_fuse()
    with start_daemon(['--object', 'iothread,id=io0,thread-pool-max=2']) as d:
        q = d.qmp()
        img = _graph(q, d)
        mnt = d.path('mnt')
        with fuse_export(q, 'r0', mnt, writable=True, iothread='io0'):
            # Two workers (the pool's bound), named as they start.
            wait_for(lambda: _count(d, 'IO io0') == 2,
                     what='two FUSE workers in io0: %r' % _thread_names(d))
            with open(mnt, 'r+b') as f:
                f.write(b'\x77' * 8192)
                f.flush()
                os.fsync(f.fileno())
            _err(q, 'object-del', {'id': 'io0'}, "object 'io0' is in use, can not be deleted")
            # Out of the iothread: the workers leave the pool as they
            # take their next requests.
            q.execute('x-blockdev-set-iothread', {'node-name': 'r0', 'iothread': None,
                                                  'force': True})
            for _ in range(16):
                with open(mnt, 'rb') as f:
                    assert_eq(f.read(8192), b'\x77' * 8192, 'read back')
            q.execute('object-del', {'id': 'io0'})
        wait_for(lambda: _count(d, 'IO io0') == 0, what='FUSE workers gone')
        qemu_io(img, 'read -P 0x77 0 8k')


if __name__ == '__main__':
    main(tests_of(globals()))
