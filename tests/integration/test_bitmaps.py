#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Dirty bitmaps: block-dirty-bitmap-* and their refusals (QEMU's texts),
dirty-bitmaps in query-named-block-nodes, writes through an NBD export
counted as QEMU counts them (count and x-debug sha256 checked against a
model of QEMU's bitmap), transactions all-or-nothing, qcow2 persistence
(qemu-img info/check, restart, SIGKILL -> inconsistent, images made by
qemu-img bitmap).  Every test also passes with BLOCKD_REFERENCE=1."""

import hashlib
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, check_image, image_bitmaps, main,  # noqa: E402
                         qcow2_image, qemu_io, require_tool, run, start_qcow2, tests_of)

MiB = 1 << 20
SIZE = 64 * MiB


class Model:
    """QEMU's HBitmap as far as QMP shows it: one bit per chunk; count is
    set bits times granularity; sha256 over the last level (64-bit LE
    words, at least one)."""

    def __init__(self, size, gran, recording=True):
        self.size, self.gran, self.recording = size, gran, recording
        self.nbits = (size + gran - 1) // gran
        self.bits = set()

    def mark(self, off, length):
        if not self.recording or length == 0 or off >= self.size:
            return
        end = min(off + length, self.size)
        self.bits.update(range(off // self.gran, (end - 1) // self.gran + 1))

    def merge(self, other):
        for b in other.bits:
            lo = b * other.gran
            hi = min(lo + other.gran, other.size)
            self.bits.update(range(lo // self.gran, (hi - 1) // self.gran + 1))

    def count(self):
        return len(self.bits) * self.gran

    def sha256(self):
        nwords = max((self.nbits + 63) // 64, 1)
        words = [0] * nwords
        for b in self.bits:
            words[b // 64] |= 1 << (b % 64)
        return hashlib.sha256(b''.join(w.to_bytes(8, 'little') for w in words)).hexdigest()


def new_daemon():
    return Daemon()


def bitmaps_of(q, node):
    for n in q.execute('query-named-block-nodes', {'flat': True}):
        if n['node-name'] == node:
            return n.get('dirty-bitmaps')
    raise AssertionError('node %s not listed' % node)


def bitmap_info(q, node, name):
    for b in bitmaps_of(q, node) or []:
        if b.get('name') == name:
            return b
    raise AssertionError('bitmap %s not on %s' % (name, node))


def sha(q, node, name):
    return q.execute('x-debug-block-dirty-bitmap-sha256', {'node': node, 'name': name})['sha256']


def check_model(q, node, name, m, what=''):
    info = bitmap_info(q, node, name)
    assert_eq(info['count'], m.count(), '%s %s count' % (what, name))
    assert_eq(info['granularity'], m.gran, '%s %s granularity' % (what, name))
    assert_eq(sha(q, node, name), m.sha256(), '%s %s sha256' % (what, name))


def err(q, cmd, args):
    return q.error(cmd, args)['desc']


def test_refusals():
    """Every refusal of the bitmap commands, with QEMU's text."""
    require_tool('qemu-img')
    with new_daemon() as d:
        img = qcow2_image(d)
        v2 = qcow2_image(d, 'v2.qcow2', opts='compat=0.10')
        raw = d.path('r.raw')
        open(raw, 'wb').truncate(SIZE)
        extra = ['--blockdev', 'driver=file,node-name=f1,filename=%s' % raw,
                 '--blockdev', 'driver=raw,node-name=r0,file=f1',
                 '--blockdev', 'driver=null-co,node-name=n0,size=1048576',
                 '--blockdev', 'driver=qcow2,node-name=v2,file.driver=file,'
                 'file.filename=%s' % v2]
        q = start_qcow2(d, img, export=False, extra=extra)
        long_name = 'x' * 1100
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b0'})
        q.execute('block-dirty-bitmap-add', {'node': 'n0', 'name': 'small'})
        cases = [
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b0'}, 'Bitmap already exists: b0'),
            ('block-dirty-bitmap-add', {'node': 'nope', 'name': ''}, 'Bitmap name cannot be empty'),
            ('block-dirty-bitmap-add', {'node': 'nope', 'name': 'b1'},
             "Cannot find device='nope' nor node-name='nope'"),
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b1', 'granularity': 1000},
             'Granularity must be power of 2 and at least 512'),
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b1', 'granularity': 256},
             'Granularity must be power of 2 and at least 512'),
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b1', 'granularity': 0},
             'Granularity must be power of 2 and at least 512'),
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b1', 'granularity': 1 << 32},
             "Parameter 'granularity' expects uint32_t"),
            ('block-dirty-bitmap-add', {'node': 'r0', 'name': 'b1', 'persistent': True},
             "Can't store persistent bitmaps to r0: Operation not supported"),
            ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b1', 'persistent': True},
             "Can't store persistent bitmaps to f0: Operation not supported"),
            ('block-dirty-bitmap-add', {'node': 'n0', 'name': 'b1', 'persistent': True},
             "Can't store persistent bitmaps to n0: Operation not supported"),
            ('block-dirty-bitmap-add', {'node': 'v2', 'name': 'b1', 'persistent': True},
             "Can't make bitmap 'b1' persistent in 'v2': Cannot store dirty bitmaps in "
             "qcow2 v2 files"),
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': long_name, 'persistent': True},
             "Can't make bitmap '%s' persistent in 'disk': Name length exceeds maximum "
             "(1023 characters)" % long_name),
            ('block-dirty-bitmap-add', {'node': 'disk', 'name': long_name},
             'Bitmap name too long: ' + long_name),
            ('block-dirty-bitmap-add', {'node': 'disk'}, "Parameter 'name' is missing"),
            ('block-dirty-bitmap-remove', {'node': 'nope', 'name': 'b0'}, "Node 'nope' not found"),
            ('block-dirty-bitmap-remove', {'node': 'disk', 'name': 'zz'},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-clear', {'node': 'disk', 'name': 'zz'},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-enable', {'node': 'disk', 'name': 'zz'},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-disable', {'node': 'nope', 'name': 'zz'},
             "Node 'nope' not found"),
            ('x-debug-block-dirty-bitmap-sha256', {'node': 'disk', 'name': 'zz'},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'zz', 'bitmaps': ['b0']},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0', 'bitmaps': ['zz']},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0',
                                          'bitmaps': [{'node': 'nope', 'name': 'zz'}]},
             "Node 'nope' not found"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0',
                                          'bitmaps': [{'node': 'r0', 'name': 'zz'}]},
             "Dirty bitmap 'zz' not found"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0',
                                          'bitmaps': [{'node': 'n0', 'name': 'small'}]},
             "Bitmaps are of different sizes (destination size is 67108864, source size is "
             "1048576) and can't be merged"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0', 'bitmaps': [1]},
             "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"),
            ('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0',
                                          'bitmaps': [{'node': 'disk'}]},
             "Parameter 'bitmaps[0].name' is missing"),
        ]
        for cmd, args, text in cases:
            assert_eq(err(q, cmd, args), text, '%s %s' % (cmd, json.dumps(args)[:80]))
        # Nothing above changed the bitmaps.
        assert_eq([b['name'] for b in bitmaps_of(q, 'disk')], ['b0'], 'bitmaps left')
        # Enabling/disabling twice is fine; merging a bitmap into itself too.
        for cmd in ['disable', 'disable', 'enable', 'enable']:
            q.execute('block-dirty-bitmap-' + cmd, {'node': 'disk', 'name': 'b0'})
        q.execute('block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b0', 'bitmaps': ['b0']})
        q.execute('block-dirty-bitmap-remove', {'node': 'disk', 'name': 'b0'})
        assert_eq(bitmaps_of(q, 'disk'), None, 'no dirty-bitmaps member once empty')


def test_query_and_default_granularity():
    """dirty-bitmaps entries: QEMU's members, newest first, granularity
    defaulting to the cluster size clamped to 4k..64k (64k without one)."""
    require_tool('qemu-img')
    with new_daemon() as d:
        imgs = {'c512': 'cluster_size=512', 'c4k': 'cluster_size=4096',
                'c2m': 'cluster_size=2M', 'c16k': 'cluster_size=16384'}
        args = []
        for node, opts in imgs.items():
            path = qcow2_image(d, node + '.qcow2', opts=opts)
            args += ['--blockdev', 'driver=qcow2,node-name=%s,file.driver=file,'
                     'file.filename=%s' % (node, path)]
        raw = d.path('r.raw')
        open(raw, 'wb').truncate(SIZE)
        args += ['--blockdev', 'driver=file,node-name=f1,filename=%s' % raw,
                 '--blockdev', 'driver=raw,node-name=r0,file=f1',
                 '--blockdev', 'driver=null-co,node-name=n0,size=1048576']
        q = start_qcow2(d, qcow2_image(d), export=False, extra=args)
        expect = {'c512': 4096, 'c4k': 4096, 'c2m': 65536, 'c16k': 16384, 'disk': 65536,
                  'r0': 65536, 'f1': 65536, 'n0': 65536}
        for node, gran in expect.items():
            q.execute('block-dirty-bitmap-add', {'node': node, 'name': 'g'})
            assert_eq(bitmap_info(q, node, 'g')['granularity'], gran, node + ' granularity')
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'd', 'disabled': True,
                                             'granularity': 512})
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'p', 'persistent': True})
        got = bitmaps_of(q, 'disk')
        assert_eq(got, [
            {'name': 'p', 'recording': True, 'persistent': True, 'busy': False,
             'granularity': 65536, 'count': 0},
            {'name': 'd', 'recording': False, 'persistent': False, 'busy': False,
             'granularity': 512, 'count': 0},
            {'name': 'g', 'recording': True, 'persistent': False, 'busy': False,
             'granularity': 65536, 'count': 0}], 'dirty-bitmaps of disk')
        # The empty 64 MiB bitmap at 64 KiB: 16 zero words.
        assert_eq(sha(q, 'disk', 'g'), Model(SIZE, 65536).sha256(), 'empty sha256')


def test_writes_through_nbd_counted():
    """Writes, zero writes and discards through an NBD export dirty the
    bitmaps of the exported node exactly as in QEMU."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        q = start_qcow2(d, qcow2_image(d))
        models = {'g64k': Model(SIZE, 65536), 'g512': Model(SIZE, 512),
                  'g4k': Model(SIZE, 4096), 'g1m': Model(SIZE, MiB),
                  'off': Model(SIZE, 65536, recording=False)}
        for name, m in models.items():
            q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': name,
                                                 'granularity': m.gran,
                                                 'disabled': not m.recording})
        ops = [('write -P 0x11 0 4k', 0, 4096), ('write -P 0x22 100000 1000', 100000, 1000),
               ('write -P 0x33 5M 1M', 5 * MiB, MiB), ('write -z 20M 64k', 20 * MiB, 65536),
               ('write -z 30001 70000', 30001, 70000), ('discard 40M 1M', 40 * MiB, MiB),
               ('write -P 0x44 65536000 1048576', 65536000, 1048576),
               ('write -P 0x55 33554431 2', 33554431, 2)]
        for cmd, off, length in ops:
            qemu_io(d.uri(), cmd)
            for m in models.values():
                m.mark(off, length)
            for name, m in models.items():
                check_model(q, 'disk', name, m, 'after %r:' % cmd)
        # Reads do not dirty anything.
        qemu_io(d.uri(), 'read 0 10M')
        for name, m in models.items():
            check_model(q, 'disk', name, m, 'after reads:')
        # Not recording: nothing; enabled again: records.
        q.execute('block-dirty-bitmap-enable', {'node': 'disk', 'name': 'off'})
        models['off'].recording = True
        qemu_io(d.uri(), 'write 50M 3')
        for m in models.values():
            m.mark(50 * MiB, 3)
        check_model(q, 'disk', 'off', models['off'], 'enabled:')
        # Clear empties; the bitmap then records again.
        q.execute('block-dirty-bitmap-clear', {'node': 'disk', 'name': 'g512'})
        models['g512'].bits.clear()
        check_model(q, 'disk', 'g512', models['g512'], 'cleared:')


def test_merge():
    """Merge from names and {node, name} sources, across granularities and
    nodes; the target keeps its own granularity."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        other = qcow2_image(d, 'b.qcow2')
        q = start_qcow2(d, qcow2_image(d), extra=[
            '--blockdev', 'driver=qcow2,node-name=other,file.driver=file,'
            'file.filename=%s' % other])
        a, b, t = Model(SIZE, 512), Model(SIZE, MiB), Model(SIZE, 65536, recording=False)
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'a', 'granularity': 512})
        q.execute('block-dirty-bitmap-add', {'node': 'other', 'name': 'b',
                                             'granularity': MiB})
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 't', 'disabled': True})
        qemu_io(d.uri(), 'write 1000 10', 'write 7M 70k')
        a.mark(1000, 10)
        a.mark(7 * MiB, 70 * 1024)
        # 'other' gets writes through the monitor-less way: merge a into b.
        q.execute('block-dirty-bitmap-merge', {'node': 'other', 'target': 'b',
                                               'bitmaps': [{'node': 'disk', 'name': 'a'}]})
        b.merge(a)
        check_model(q, 'other', 'b', b, 'b<-a')
        q.execute('block-dirty-bitmap-merge', {'node': 'disk', 'target': 't',
                                               'bitmaps': ['a', {'node': 'other', 'name': 'b'}]})
        t.merge(a)
        t.merge(b)
        check_model(q, 'disk', 't', t, 't<-a,b')
        # A failing source leaves the target unchanged.
        before = sha(q, 'disk', 't')
        assert_eq(err(q, 'block-dirty-bitmap-merge',
                      {'node': 'disk', 'target': 't', 'bitmaps': ['a', 'missing']}),
                  "Dirty bitmap 'missing' not found", 'bad source')
        assert_eq(sha(q, 'disk', 't'), before, 'target unchanged')


def test_transaction():
    """transaction: all or nothing, QEMU's per-action undo, abort action,
    completion-mode grouped refused for bitmap actions."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        q = start_qcow2(d, qcow2_image(d))
        for name, dis in [('b0', False), ('b1', False), ('b2', True), ('b3', False)]:
            q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': name, 'disabled': dis})
        qemu_io(d.uri(), 'write 0 1M', 'write 10M 64k')

        def act(t, **data):
            return {'type': t, 'data': dict({'node': 'disk'}, **data)}

        def state():
            return (bitmaps_of(q, 'disk'), {n['name']: sha(q, 'disk', n['name'])
                                            for n in bitmaps_of(q, 'disk')})

        before = state()
        failing = [
            ([act('block-dirty-bitmap-add', name='t1'), act('block-dirty-bitmap-clear', name='b0'),
              act('block-dirty-bitmap-disable', name='b1'),
              act('block-dirty-bitmap-enable', name='b2'),
              act('block-dirty-bitmap-merge', target='b3', bitmaps=['b0']),
              act('block-dirty-bitmap-remove', name='b3'),
              {'type': 'abort', 'data': {}}], 'Transaction aborted using Abort action'),
            ([act('block-dirty-bitmap-clear', name='b0'), act('block-dirty-bitmap-add', name='b0')],
             'Bitmap already exists: b0'),
            ([act('block-dirty-bitmap-remove', name='b1'),
              act('block-dirty-bitmap-clear', name='b1')],
             "Bitmap 'b1' is currently in use by another operation and cannot be used"),
            ([act('block-dirty-bitmap-add', name='t2'), act('block-dirty-bitmap-remove', name='zz')],
             "Dirty bitmap 'zz' not found"),
        ]
        for actions, text in failing:
            assert_eq(err(q, 'transaction', {'actions': actions}), text, 'failed transaction')
            assert_eq(state(), before, 'nothing changed after %r' % text)
        assert_eq(err(q, 'transaction', {
            'actions': [act('block-dirty-bitmap-clear', name='b0')],
            'properties': {'completion-mode': 'grouped'}}),
            "Action 'block-dirty-bitmap-clear' does not support Transaction property "
            "completion-mode = grouped", 'grouped')
        assert_eq(err(q, 'transaction', {'actions': [{'type': 'abort'}]}),
                  "Parameter 'actions[0].data' is missing", 'abort without data')
        q.execute('transaction', {'actions': []})
        # A successful one: every action applied.
        q.execute('transaction', {'actions': [
            act('block-dirty-bitmap-add', name='t1', granularity=4096),
            act('block-dirty-bitmap-merge', target='t1', bitmaps=['b0']),
            act('block-dirty-bitmap-clear', name='b0'),
            act('block-dirty-bitmap-disable', name='b1'),
            act('block-dirty-bitmap-enable', name='b2'),
            act('block-dirty-bitmap-remove', name='b3')]})
        info = {b['name']: b for b in bitmaps_of(q, 'disk')}
        assert_eq(sorted(info), ['b0', 'b1', 'b2', 't1'], 'bitmaps after commit')
        assert_eq(info['b0']['count'], 0, 'b0 cleared')
        assert_eq(info['t1']['count'], MiB + 65536, 't1 got b0 bits')
        assert_eq((info['b1']['recording'], info['b2']['recording']), (False, True), 'flags')


def test_persistence_round_trip():
    """Persistent bitmaps are stored on clean shutdown (qemu-img info shows
    them, qemu-img check is clean) and come back with the same bits."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        img = qcow2_image(d, opts='cluster_size=4096')
        q = start_qcow2(d, img)
        models = {'p1': Model(SIZE, 4096), 'p2': Model(SIZE, 512),
                  'p3': Model(SIZE, 65536, recording=False)}
        for name, m in models.items():
            q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': name, 'persistent': True,
                                                 'granularity': m.gran,
                                                 'disabled': not m.recording})
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'temp'})
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'huge', 'persistent': True,
                                             'granularity': 1 << 31})
        models['huge'] = Model(SIZE, 1 << 31)
        for off, length in [(0, 4096), (123456, 7890), (40 * MiB, 3 * MiB), (SIZE - 1, 1)]:
            qemu_io(d.uri(), 'write %d %d' % (off, length))
            for m in models.values():
                m.mark(off, length)
        sums = {n: sha(q, 'disk', n) for n in models}
        for name, m in models.items():
            check_model(q, 'disk', name, m, 'before stop:')
        d.stop()
        got = {b['name']: b for b in image_bitmaps(img)}
        assert_eq(sorted(got), ['huge', 'p1', 'p2', 'p3'], 'bitmaps in the image')
        for name, m in models.items():
            assert_eq(got[name]['granularity'], m.gran, name + ' granularity in image')
            assert_eq(got[name]['flags'], ['auto'] if m.recording else [], name + ' flags')
        check_image(img)
        # Back again: same bits, and recording state kept.
        q = start_qcow2(d, img)
        for name, m in models.items():
            check_model(q, 'disk', name, m, 'after restart:')
            assert_eq(sha(q, 'disk', name), sums[name], name + ' sha256 after restart')
            info = bitmap_info(q, 'disk', name)
            assert_eq((info['recording'], info['persistent']), (m.recording, True), name)
        assert_eq(sorted(b['name'] for b in bitmaps_of(q, 'disk')), ['huge', 'p1', 'p2', 'p3'],
                  'non-persistent bitmap gone')
        # While open read-write the image marks them in use.
        assert_eq(sorted(sorted(b['flags']) for b in image_bitmaps(img)),
                  [['auto', 'in-use'], ['auto', 'in-use'], ['auto', 'in-use'], ['in-use']],
                  'in use while open')
        # Removing one and changing another is stored too.
        q.execute('block-dirty-bitmap-remove', {'node': 'disk', 'name': 'p2'})
        q.execute('block-dirty-bitmap-clear', {'node': 'disk', 'name': 'p1'})
        d.stop()
        got = {b['name']: b for b in image_bitmaps(img)}
        assert_eq(sorted(got), ['huge', 'p1', 'p3'], 'after remove')
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq(bitmap_info(q, 'disk', 'p1')['count'], 0, 'p1 cleared')
        assert_eq(sha(q, 'disk', 'p3'), sums['p3'], 'p3 kept')
        d.stop()
        check_image(img)


def test_sigkill_leaves_inconsistent():
    """A bitmap in use when the daemon is killed is inconsistent on the
    next open: recorded nothing, refused by clear/merge/enable, removable."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b', 'persistent': True})
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'keep', 'persistent': True})
        d.stop()
        q = start_qcow2(d, img)
        qemu_io(d.uri(), 'write 0 1M')
        d.signal(signal.SIGKILL)
        d.wait_exit()
        assert_eq(sorted(sorted(b['flags']) for b in image_bitmaps(img)),
                  [['auto', 'in-use'], ['auto', 'in-use']], 'flags after kill')
        q = start_qcow2(d, img)
        info = bitmap_info(q, 'disk', 'b')
        assert_eq(info, {'name': 'b', 'recording': False, 'persistent': True, 'busy': False,
                         'granularity': 65536, 'count': 0, 'inconsistent': True},
                  'inconsistent bitmap')
        text = "Bitmap 'b' is inconsistent and cannot be used"
        assert_eq(err(q, 'block-dirty-bitmap-clear', {'node': 'disk', 'name': 'b'}), text, 'clear')
        assert_eq(err(q, 'block-dirty-bitmap-enable', {'node': 'disk', 'name': 'b'}), text,
                  'enable')
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'n'})
        assert_eq(err(q, 'block-dirty-bitmap-merge', {'node': 'disk', 'target': 'n',
                                                      'bitmaps': ['b']}), text, 'merge source')
        assert_eq(err(q, 'block-dirty-bitmap-merge', {'node': 'disk', 'target': 'b',
                                                      'bitmaps': ['n']}), text, 'merge target')
        qemu_io(d.uri(), 'write 2M 1M')
        assert_eq(bitmap_info(q, 'disk', 'b')['count'], 0, 'inconsistent does not record')
        d.stop()
        # Still inconsistent in the image; 'keep' too (it was in use).
        assert_eq(sorted(sorted(b['flags']) for b in image_bitmaps(img)),
                  [['auto', 'in-use'], ['auto', 'in-use']], 'kept in use')
        check_image(img)
        q = start_qcow2(d, img)
        q.execute('block-dirty-bitmap-remove', {'node': 'disk', 'name': 'b'})
        d.stop()
        assert_eq([b['name'] for b in image_bitmaps(img)], ['keep'], 'removed from image')
        check_image(img)


def test_lazy_refcounts_crash_keeps_bitmap_clusters():
    """After a crash with lazy refcounts the refcounts are rebuilt on open;
    the bitmap directory, tables and data keep their references."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        img = qcow2_image(d, opts='cluster_size=4096,lazy_refcounts=on')
        q = start_qcow2(d, img)
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b', 'persistent': True,
                                             'granularity': 512})
        qemu_io(d.uri(), 'write 0 8M')
        d.stop()
        check_image(img)
        q = start_qcow2(d, img)
        qemu_io(d.uri(), 'write 16M 4M')
        d.signal(signal.SIGKILL)
        d.wait_exit()
        q = start_qcow2(d, img)
        assert_eq(bitmap_info(q, 'disk', 'b')['inconsistent'], True, 'inconsistent')
        qemu_io(d.uri(), 'write 32M 8M')
        d.stop()
        check_image(img)
        assert_eq([b['name'] for b in image_bitmaps(img)], ['b'], 'still stored')


def test_qemu_img_bitmaps_load():
    """Images whose bitmaps qemu-img/qemu-io made load with their bits and
    flags; a read-only node's persistent bitmaps are read-only."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        img = qcow2_image(d, opts='cluster_size=16384')
        run(['qemu-img', 'bitmap', '--add', '-g', '4096', img, 'b1'])
        run(['qemu-img', 'bitmap', '--add', img, 'b2'])
        qemu_io(img, 'write 0 64k', 'write 1M 4k', 'write 60M 100', fmt='qcow2')
        run(['qemu-img', 'bitmap', '--disable', img, 'b2'])
        run(['qemu-img', 'bitmap', '--add', '--disable', '-g', '1M', img, 'b3'])
        run(['qemu-img', 'bitmap', '--merge', 'b1', img, 'b3'])
        b1, b2, b3 = Model(SIZE, 4096), Model(SIZE, 16384), Model(SIZE, MiB)
        for off, length in [(0, 65536), (MiB, 4096), (60 * MiB, 100)]:
            b1.mark(off, length)
            b2.mark(off, length)
        b3.merge(b1)
        q = start_qcow2(d, img)
        for name, m in [('b1', b1), ('b2', b2), ('b3', b3)]:
            check_model(q, 'disk', name, m, 'qemu-img made:')
        assert_eq([(b['name'], b['recording']) for b in bitmaps_of(q, 'disk')],
                  [('b3', False), ('b2', False), ('b1', True)], 'order and recording')
        d.stop()
        check_image(img)
        # Read-only: persistent bitmaps load read-only.
        q = start_qcow2(d, img, node_opts=',read-only=on', export=False)
        check_model(q, 'disk', 'b1', b1, 'read-only:')
        assert_eq(err(q, 'block-dirty-bitmap-clear', {'node': 'disk', 'name': 'b1'}),
                  "Bitmap 'b1' is readonly and cannot be modified", 'clear read-only')
        assert_eq(err(q, 'block-dirty-bitmap-remove', {'node': 'disk', 'name': 'b1'}),
                  "Bitmap 'b1' is readonly and cannot be modified", 'remove read-only')
        q.execute('block-dirty-bitmap-disable', {'node': 'disk', 'name': 'b1'})
        d.stop()
        assert_eq(sorted(b['name'] for b in image_bitmaps(img)), ['b1', 'b2', 'b3'], 'untouched')
        check_image(img)


def test_reopen_read_only_stores():
    """blockdev-reopen to read-only stores the bitmaps (no longer in use on
    disk, read-only in memory); back to read-write marks them in use."""
    require_tool('qemu-img', 'qemu-io')
    with new_daemon() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'p', 'persistent': True})
        qemu_io(d.uri(), 'write 1M 64k')
        m = Model(SIZE, 65536)
        m.mark(MiB, 65536)
        q.execute('block-export-del', {'id': 'e0'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        opts = {'driver': 'qcow2', 'node-name': 'disk', 'file': 'f0', 'discard': 'unmap'}
        q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': True})]})
        assert_eq([b['flags'] for b in image_bitmaps(img)], [['auto']], 'stored on reopen')
        check_model(q, 'disk', 'p', m, 'read-only:')
        assert_eq(err(q, 'block-dirty-bitmap-clear', {'node': 'disk', 'name': 'p'}),
                  "Bitmap 'p' is readonly and cannot be modified", 'read-only after reopen')
        q.execute('blockdev-reopen', {'options': [dict(opts, **{'read-only': False})]})
        assert_eq(sorted(sorted(b['flags']) for b in image_bitmaps(img)), [['auto', 'in-use']],
                  'in use again')
        q.execute('block-dirty-bitmap-clear', {'node': 'disk', 'name': 'p'})
        d.stop()
        assert_eq([b['flags'] for b in image_bitmaps(img)], [['auto']], 'stored on close')
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq(bitmap_info(q, 'disk', 'p')['count'], 0, 'cleared bitmap stored')


def _patch_foreign_bitmaps_ext(img, dir_offset, dir_size):
    """As left by a program without bitmap support: the autoclear bit
    cleared, and (here) the extension's directory pointing elsewhere."""
    import struct
    with open(img, 'r+b') as f:
        hdr = f.read(4096)
        autoclear = struct.unpack('>Q', hdr[88:96])[0]
        f.seek(88)
        f.write(struct.pack('>Q', autoclear & ~1))
        off = struct.unpack('>I', hdr[100:104])[0]
        while off + 8 <= len(hdr):
            magic, length = struct.unpack('>II', hdr[off:off + 8])
            if magic == 0:
                raise AssertionError('no bitmaps extension in %s' % img)
            if magic == 0x23852875:
                f.seek(off + 8 + 8)
                f.write(struct.pack('>QQ', dir_size, dir_offset))
                return
            off += 8 + (length + 7) // 8 * 8
    raise AssertionError('no bitmaps extension in %s' % img)


def test_bitmaps_extension_of_a_program_without_bitmap_support():
    """The extension of an image whose autoclear bit was cleared is
    dropped, as QEMU does, and nothing it names is freed: a directory
    that (now) points at guest data must leave that data alone when new
    bitmaps are stored (found by tests/fuzz/fuzz-qcow2: it freed the
    range the header named, however large)."""
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '4M'])
        qemu_io(img, 'write -P 0x33 0 4M', fmt='qcow2')
        run(['qemu-img', 'bitmap', '--add', img, 'old'])
        data_off = [e for e in json.loads(run(['qemu-img', 'map', '--output=json', img]).stdout)
                    if e['data']][0]['offset']
        _patch_foreign_bitmaps_ext(img, data_off, 4 * 65536)
        d.args += ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                   '--blockdev', 'driver=qcow2,node-name=q0,file=f0']
        d.start()
        q = d.qmp()
        q.execute('block-dirty-bitmap-add', {'node': 'q0', 'name': 'new', 'persistent': True})
        q.execute('blockdev-del', {'node-name': 'q0'})
        q.execute('blockdev-del', {'node-name': 'f0'})
        d.stop()
        report = json.loads(run(['qemu-img', 'check', '--output=json', img], check=False).stdout)
        assert_eq(report.get('corruptions', 0), 0, 'corruptions (%r)' % report)
        qemu_io(img, 'read -P 0x33 0 4M', fmt='qcow2', extra=['-r'])
        assert_eq([b['name'] for b in image_bitmaps(img)], ['new'], 'bitmaps in the image')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
