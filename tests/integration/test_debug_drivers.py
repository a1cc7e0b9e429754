#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The debugging drivers blkdebug, quorum and blkverify: blockdev-add errors
with QEMU's messages, data through NBD exports, blkdebug error injection
(events, states, once, sector, iotype, config files; the seed 257 pattern of
a qcow2 image over blkdebug), quorum voting over corrupted children and
blkverify mismatches. Every case runs against qemu-storage-daemon too."""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, is_reference, main, make_image, nbd_errno, require_nbd,  # noqa: E402
                         require_tool, run, start_daemon, tests_of, wait_for, write_at)

MiB = 1024 * 1024


def _daemon():
    return start_daemon()


def _export(q, d, node, writable=True, name='disk'):
    q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
    q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': node, 'name': name,
                                   'writable': writable})


def _connect(d, name='disk'):
    """A libnbd handle with simple replies: qemu-storage-daemon 7.2 drops a
    client whose structured (sparse) read fails, instead of replying with
    the error; simple replies carry the errno on both daemons."""
    nbd = require_nbd()
    h = nbd.NBD()
    h.set_request_structured_replies(False)
    h.connect_uri(d.uri(name))
    return h


def _file(path, name=None, ro=False):
    o = {'driver': 'file', 'filename': path}
    if name:
        o['node-name'] = name
    if ro:
        o['read-only'] = True
    return o


def _patterned(d, name, size, pattern):
    return make_image(d.path(name), size, pattern)


# --- blockdev-add errors (QEMU's texts, checked against qsd 7.2) ---

def test_blkdebug_add_errors():
    with _daemon() as d:
        q = d.qmp()
        img = _patterned(d, 'a.img', MiB, 0)
        cfgs = {
            'nogroup': 'event = "read_aio"\n',
            'badgroup': '[foo]\nx = "1"\n',
            'noevent': '[inject-error]\nerrno = "5"\n',
            'badevent': '[inject-error]\nevent = "nope"\n',
            'unknown': '[inject-error]\nevent = "read_aio"\nfoo = "1"\n',
            'number': '[inject-error]\nevent = "read_aio"\nerrno = "x"\n',
            'bool': '[inject-error]\nevent = "read_aio"\nonce = "maybe"\n',
            'iotype': '[inject-error]\nevent = "read_aio"\niotype = "nah"\n',
        }
        for k, text in cfgs.items():
            with open(d.path(k + '.cfg'), 'w') as f:
                f.write(text)
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        cases = [
            ({'config': d.path('none.cfg')},
             'Could not read blkdebug config file: No such file or directory'),
            ({'config': d.dir}, 'Cannot read config file: Is a directory'),
            ({'config': d.path('nogroup.cfg')}, 'no group defined'),
            ({'config': d.path('badgroup.cfg')}, "There is no option group 'foo'"),
            ({'config': d.path('noevent.cfg')}, 'Missing event name for rule'),
            ({'config': d.path('badevent.cfg')}, 'invalid parameter value: nope'),
            ({'config': d.path('unknown.cfg')}, "Invalid parameter 'foo'"),
            ({'config': d.path('number.cfg')}, "Parameter 'errno' expects a number"),
            ({'config': d.path('bool.cfg')}, "Parameter 'once' expects 'on' or 'off'"),
            ({'config': d.path('iotype.cfg')}, 'invalid parameter value: nah'),
            ({'align': 3}, 'Cannot meet constraints with align 3'),
            ({'align': -1}, "Parameter 'align' expects a non-negative number below 2^64"),
            ({'align': 512, 'max-transfer': 1000}, 'Cannot meet constraints with max-transfer 1000'),
            ({'opt-write-zero': 4096, 'max-write-zero': 6144},
             'Cannot meet constraints with max-write-zero 6144'),
            ({'align': 4096, 'opt-discard': 512}, 'Cannot meet constraints with opt-discard 512'),
            ({'inject-error': [{'event': 'foo'}]}, "Parameter 'event' does not accept value 'foo'"),
            ({'inject-error': [{'event': 'read_aio', 'iotype': 'bad'}]},
             "Parameter 'iotype' does not accept value 'bad'"),
            ({'set-state': [{'event': 'read_aio'}]}, "Parameter 'set-state[0].new_state' is missing"),
            ({}, "Parameter 'image' is missing"),
        ]
        for extra, desc in cases:
            opts = dict({'driver': 'blkdebug', 'node-name': 'bd', 'image': 'f'}, **extra)
            if not extra:
                del opts['image']
            e = q.error('blockdev-add', opts)
            assert_eq(e['desc'], desc, 'blockdev-add blkdebug %r' % extra)
        # Nothing was left behind: the name is free and the file usable.
        q.execute('blockdev-add', {'driver': 'blkdebug', 'node-name': 'bd', 'image': 'f',
                                   'config': '/dev/null'})
        d.assert_alive()


def test_quorum_blkverify_add_errors():
    with _daemon() as d:
        q = d.qmp()
        for n, size in (('a', MiB), ('b', MiB), ('c', 2 * MiB)):
            img = _patterned(d, n + '.img', size, 0)
            q.execute('blockdev-add', _file(img, 'f' + n, ro=True))
        cases = [
            ({'vote-threshold': 2, 'children': []}, 'Number of provided children must be 1 or more'),
            ({'vote-threshold': 0, 'children': ['fa']},
             "Parameter 'vote-threshold' expects a value >= 1"),
            ({'vote-threshold': 3, 'children': ['fa', 'fb']}, 'threshold may not exceed children count'),
            ({'vote-threshold': 1, 'blkverify': True, 'children': ['fa', 'fb']},
             'blkverify=on can only be set if there are exactly two files and vote-threshold is 2'),
            ({'vote-threshold': 2, 'blkverify': True, 'rewrite-corrupted': True,
              'children': ['fa', 'fb']}, 'rewrite-corrupted=on cannot be used with blkverify=on'),
            ({'vote-threshold': 1, 'children': ['fa', 'fc']},
             'Could not refresh total sector count: Input/output error'),
            ({'vote-threshold': 1, 'read-pattern': 'bogus', 'children': ['fa']},
             "Parameter 'read-pattern' does not accept value 'bogus'"),
            ({'children': ['fa']}, "Parameter 'vote-threshold' is missing"),
        ]
        for extra, desc in cases:
            e = q.error('blockdev-add', dict({'driver': 'quorum', 'node-name': 'q'}, **extra))
            assert_eq(e['desc'], desc, 'blockdev-add quorum %r' % extra)
        e = q.error('blockdev-add', {'driver': 'blkverify', 'node-name': 'v', 'test': 'fa'})
        assert_eq(e['desc'], "Parameter 'raw' is missing", 'blkverify without raw')
        # The same child twice, and children of different kinds, are fine.
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'q', 'vote-threshold': 1,
                                   'children': ['fa', 'fa']})
        q.execute('blockdev-add', {'driver': 'blkverify', 'node-name': 'v', 'test': 'fa',
                                   'raw': 'fc'})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes', {'flat': True})}
        assert_eq(nodes['v']['drv'], 'blkverify', 'blkverify drv')
        assert_eq(nodes['v']['image']['virtual-size'], MiB, 'blkverify size is the test size')
        assert_eq(nodes['v']['file'], 'blkverify:%s:%s' % (d.path('c.img'), d.path('a.img')),
                  'blkverify file name')
        assert_eq(nodes['q']['drv'], 'quorum', 'quorum drv')
        # quorum's children cannot be written by others (it unshares write).
        img = _patterned(d, 'w.img', MiB, 0)
        q.execute('blockdev-add', _file(img, 'fw'))
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'q2', 'vote-threshold': 1,
                                   'children': ['fw']})
        e = q.error('blockdev-add', {'driver': 'blkdebug', 'node-name': 'w', 'image': 'fw',
                                     'take-child-perms': ['write']})
        assert_eq(e['desc'], "Permission conflict on node 'fw': permissions 'write' are both "
                  "required by node 'w' (uses node 'fw' as 'image' child) and unshared by node "
                  "'q2' (uses node 'fw' as 'children.0' child).", 'writer below quorum')
        q.execute('blockdev-add', {'driver': 'blkdebug', 'node-name': 'w', 'image': 'fw',
                                   'unshare-child-perms': ['consistent-read']})


def test_blkdebug_filenames():
    with _daemon() as d:
        q = d.qmp()
        img = _patterned(d, 'a.img', MiB, 0)
        q.execute('blockdev-add', {'driver': 'blkdebug', 'node-name': 'b0', 'image': _file(img)})
        q.execute('blockdev-add', {'driver': 'blkdebug', 'node-name': 'b1', 'config': '/dev/null',
                                   'image': 'b0'})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes', {'flat': True})}
        assert_eq(nodes['b0']['file'], 'blkdebug::' + img, 'b0 file name')
        assert_eq(nodes['b1']['file'], 'blkdebug:/dev/null:blkdebug::' + img, 'b1 file name')
        assert_eq(nodes['b0']['drv'], 'blkdebug', 'drv')
        assert_eq(nodes['b0']['image']['virtual-size'], MiB, 'size')
        # Strong options make it a json: name (QEMU's key order).
        q.execute('blockdev-add', {'driver': 'blkdebug', 'node-name': 'b2', 'align': 4096,
                                   'inject-error': [{'event': 'read_aio'}], 'image': _file(img)})
        q.execute('blockdev-add', _file(img, 'ro', ro=True))
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'q1', 'vote-threshold': 1,
                                   'children': ['ro', 'ro']})
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'q2', 'vote-threshold': 1,
                                   'children': ['ro'], 'read-pattern': 'fifo',
                                   'rewrite-corrupted': False})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes', {'flat': True})}
        f = '{"driver": "file", "filename": "%s"}' % img
        assert_eq(nodes['b2']['file'], 'json:{"image": %s, "driver": "blkdebug", '
                  '"inject-error.0.event": "read_aio", "align": 4096}' % f, 'b2 file name')
        assert_eq(nodes['q1']['file'], 'json:{"children": [%s, %s], "driver": "quorum", '
                  '"vote-threshold": 1}' % (f, f), 'q1 file name')
        assert_eq(nodes['q2']['file'], 'json:{"read-pattern": "fifo", "children": [%s], '
                  '"driver": "quorum", "rewrite-corrupted": false, "vote-threshold": 1}' % f,
                  'q2 file name')


# --- blkdebug error injection through NBD ---

def _raw_over_blkdebug(d, q, img, **blkdebug):
    opts = dict({'driver': 'blkdebug', 'node-name': 'dbg', 'image': _file(img)}, **blkdebug)
    q.execute('blockdev-add', opts)
    q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'fmt', 'file': 'dbg'})
    _export(q, d, 'fmt')
    return _connect(d)


def test_blkdebug_inject_once_sector():
    """raw emits read_aio on its file: the rule fails the one read covering
    sector 8, once; other reads and later reads succeed with the data."""
    with _daemon() as d:
        q = d.qmp()
        img = _patterned(d, 'a.img', MiB, 0x5a)
        h = _raw_over_blkdebug(d, q, img, **{'inject-error': [
            {'event': 'read_aio', 'errno': 5, 'sector': 8, 'once': True}]})
        assert_eq(h.pread(4096, 0), b'\x5a' * 4096, 'read before sector 8')
        assert_eq(h.pread(4096, 8192), b'\x5a' * 4096, 'read after sector 8')
        assert_eq(nbd_errno(h.pread, 4096, 4096), errno.EIO, 'read covering sector 8')
        assert_eq(h.pread(4096, 4096), b'\x5a' * 4096, 'same read again (once)')
        h.shutdown()


def test_blkdebug_inject_sticky_iotype_errno():
    """A rule without 'once' stays active; iotype=write fails only writes, with
    the given errno (28 = ENOSPC reaches the NBD client as ENOSPC)."""
    with _daemon() as d:
        q = d.qmp()
        img = _patterned(d, 'a.img', MiB, 0x11)
        h = _raw_over_blkdebug(d, q, img, **{'inject-error': [
            {'event': 'write_aio', 'errno': 28, 'iotype': 'write'}]})
        assert_eq(nbd_errno(h.pwrite, b'\x22' * 4096, 0), errno.ENOSPC, 'first write')
        assert_eq(h.pread(4096, 0), b'\x11' * 4096, 'reads pass')
        assert_eq(nbd_errno(h.pwrite, b'\x22' * 4096, 65536), errno.ENOSPC, 'second write')
        h.shutdown()
        with open(img, 'rb') as f:
            assert_eq(f.read(), b'\x11' * MiB, 'image unchanged')


def test_blkdebug_event_none_and_config_file():
    """Rules for the event 'none' fire at open; rules come from a config file
    as well as from options (both apply)."""
    with _daemon() as d:
        q = d.qmp()
        img = _patterned(d, 'a.img', MiB, 0x33)
        cfg = d.path('rules.cfg')
        with open(cfg, 'w') as f:
            f.write('# fail every read from the start\n\n[inject-error]\n'
                    'event = "none"\nerrno = "5"\niotype = "read"\nonce = "on"\n')
        h = _raw_over_blkdebug(d, q, img, config=cfg, **{'inject-error': [
            {'event': 'none', 'errno': 1, 'iotype': 'flush'}]})
        assert_eq(nbd_errno(h.pread, 512, 0), errno.EIO, 'first read after open')
        assert_eq(h.pread(512, 0), b'\x33' * 512, 'second read (once)')
        h.pwrite(b'\x44' * 512, 0)
        assert_eq(nbd_errno(h.flush), errno.EPERM, 'flush (errno 1)')
        assert_eq(h.pread(512, 0), b'\x44' * 512, 'data written')
        h.shutdown()


def test_blkdebug_state_machine_qcow2():
    """Seed 257's fault: blkdebug as the file of a qcow2 node; flush moves
    state 1 -> 2, the next data read 2 -> 3, and the read after that fails
    once with EIO. Without the flush nothing fails."""
    require_tool('qemu-img')
    with _daemon() as d:
        q = d.qmp()
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '4M'])
        q.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'drive0',
            'file': {'driver': 'blkdebug', 'image': _file(img),
                     'set-state': [{'event': 'flush_to_disk', 'state': 1, 'new_state': 2},
                                   {'event': 'read_aio', 'state': 2, 'new_state': 3}],
                     'inject-error': [{'event': 'read_aio', 'errno': 5, 'state': 3,
                                       'immediately': False, 'once': True}]}})
        _export(q, d, 'drive0')
        h = _connect(d)
        h.pwrite(b'\x6b' * 65536, 0)
        for i in range(3):
            assert_eq(h.pread(4096, 4096 * i), b'\x6b' * 4096, 'read %d before the flush' % i)
        h.flush()
        assert_eq(h.pread(4096, 0), b'\x6b' * 4096, 'first read after the flush')
        assert_eq(nbd_errno(h.pread, 4096, 4096), errno.EIO, 'second read after the flush')
        for i in range(3):
            assert_eq(h.pread(4096, 4096 * i), b'\x6b' * 4096, 'read %d after the failure' % i)
        h.shutdown()
        q.execute('block-export-del', {'id': 'e0'})
        q.execute('blockdev-del', {'node-name': 'drive0'})
        run(['qemu-img', 'check', '-q', img])


def test_blkdebug_align_rmw():
    """align=4096: unaligned client writes go through read-modify-write in
    the generic layer; the image gets exactly the client's bytes."""
    require_tool('qemu-io')
    with _daemon() as d:
        q = d.qmp()
        img = _patterned(d, 'a.img', MiB, 0x01)
        q.execute('blockdev-add', {'driver': 'blkdebug', 'node-name': 'dbg', 'align': 4096,
                                   'max-transfer': 65536, 'image': _file(img)})
        _export(q, d, 'dbg')
        uri = d.uri()
        run(['qemu-io', '-f', 'raw', '-c', 'write -P 0xab 1000 300000',
             '-c', 'read -P 0xab 1000 300000', '-c', 'read -P 0x01 0 1000', uri])
        with open(img, 'rb') as f:
            data = f.read()
        assert_eq(data[:1000], b'\x01' * 1000, 'head')
        assert_eq(data[1000:301000], b'\xab' * 300000, 'written range')
        assert_eq(data[301000:], b'\x01' * (MiB - 301000), 'tail')


# --- quorum ---

def _quorum(d, q, patterns, corrupt=(), **opts):
    """Three (or more) children with the given fill bytes, then the
    (offset, bytes) writes of `corrupt` into child files before opening."""
    children = []
    for i, p in enumerate(patterns):
        img = _patterned(d, 'q%d.img' % i, MiB, p)
        children.append(img)
    for i, off, data in corrupt:
        write_at(children[i], off, data)
    q.execute('blockdev-add', dict({'driver': 'quorum', 'node-name': 'quorum0',
                                    'vote-threshold': 2,
                                    'children': [_file(c) for c in children]}, **opts))
    return children


def test_quorum_majority_read():
    with _daemon() as d:
        q = d.qmp()
        _quorum(d, q, [0x11, 0x11, 0x11],
                corrupt=[(2, 0, b'\x99' * 4096),                              # one bad copy
                         (0, 65536, b'\x22' * 4096), (1, 65536, b'\x33' * 4096),  # no majority
                         (0, 131072, b'\x44' * 4096), (2, 131072, b'\x44' * 4096)])  # 2 of 3
        _export(q, d, 'quorum0')
        h = _connect(d)
        assert_eq(h.pread(4096, 0), b'\x11' * 4096, 'one corrupted child is outvoted')
        assert_eq(nbd_errno(h.pread, 4096, 65536), errno.EIO, 'three different versions')
        assert_eq(h.pread(4096, 131072), b'\x44' * 4096, 'majority of two')
        assert_eq(h.pread(4096, 8192), b'\x11' * 4096, 'agreeing children')
        h.shutdown()


def test_quorum_write_all_and_rewrite():
    with _daemon() as d:
        q = d.qmp()
        children = _quorum(d, q, [0x11, 0x11, 0x11], corrupt=[(1, 0, b'\x99' * 512)],
                           **{'rewrite-corrupted': True})
        _export(q, d, 'quorum0')
        h = _connect(d)
        h.pwrite(b'\x55' * 8192, 65536)
        assert_eq(h.pread(512, 0), b'\x11' * 512, 'read outvotes the bad child')
        h.flush()
        h.shutdown()
        for i, c in enumerate(children):
            with open(c, 'rb') as f:
                data = f.read()
            assert_eq(data[65536:65536 + 8192], b'\x55' * 8192, 'child %d got the write' % i)
            assert_eq(data[:512], b'\x11' * 512, 'child %d after rewrite-corrupted' % i)


def test_quorum_fifo():
    with _daemon() as d:
        q = d.qmp()
        _quorum(d, q, [0x11, 0x22, 0x33], **{'read-pattern': 'fifo', 'vote-threshold': 1})
        _export(q, d, 'quorum0')
        h = _connect(d)
        assert_eq(h.pread(4096, 0), b'\x11' * 4096, 'fifo reads the first child')
        h.shutdown()


# --- blkverify ---

def test_blkverify_match_and_mismatch():
    """Matching children: reads and writes pass (both files get writes). A
    mismatch is an I/O error in blockd; QEMU prints it and exits."""
    with _daemon() as d:
        q = d.qmp()
        test_img = _patterned(d, 't.img', MiB, 0x21)
        raw_img = _patterned(d, 'r.img', MiB, 0x21)
        write_at(test_img, 65536, b'\x7e' * 512)
        q.execute('blockdev-add', {'driver': 'blkverify', 'node-name': 'bv',
                                   'test': _file(test_img), 'raw': _file(raw_img)})
        _export(q, d, 'bv')
        h = _connect(d)
        assert_eq(h.pread(4096, 0), b'\x21' * 4096, 'matching read')
        h.pwrite(b'\x42' * 4096, 8192)
        assert_eq(h.pread(4096, 8192), b'\x42' * 4096, 'read back')
        for img in (test_img, raw_img):
            with open(img, 'rb') as f:
                f.seek(8192)
                assert_eq(f.read(4096), b'\x42' * 4096, 'write reached %s' % img)
        if is_reference():
            nbd = require_nbd()
            try:
                h.pread(4096, 65536)
            except nbd.Error:
                pass
            wait_for(lambda: not d.alive(), what='qemu-storage-daemon to exit on mismatch')
            return
        assert_eq(nbd_errno(h.pread, 4096, 65536), errno.EIO, 'mismatching read')
        assert_eq(h.pread(4096, 0), b'\x21' * 4096, 'later reads work')
        h.shutdown()
        d.assert_alive()


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
