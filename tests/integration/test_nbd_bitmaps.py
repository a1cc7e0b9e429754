#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Dirty bitmaps over NBD: block-export-add 'bitmaps' and the
"qemu:dirty-bitmap:NAME" metadata context, as pull-mode incremental
backup clients (nbdinfo --map, qemu-img map with x-dirty-bitmap) read them.
Every test also passes against qemu-storage-daemon (BLOCKD_REFERENCE=1)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, require_tool,  # noqa: E402
                         run, tests_of)


def _setup(d, size='4M'):
    img = d.path('a.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, size])
    d.start()
    q = d.qmp()
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'hd0',
                               'file': {'driver': 'file', 'filename': img}})
    q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
    return q, img


def _dirty_map(uri, name):
    out = run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:' + name, uri]).stdout
    return [(e['offset'], e['length'], e['type']) for e in json.loads(out)]


def test_export_refusals():
    """QEMU's texts for unknown names, pairs, enabled bitmaps on a read-only
    export, and a bitmap that is already exported (busy)."""
    require_tool('qemu-img')
    with Daemon() as d:
        q, _ = _setup(d)
        q.execute('block-dirty-bitmap-add', {'node': 'hd0', 'name': 'b0'})
        base = {'type': 'nbd', 'id': 'e', 'node-name': 'hd0', 'name': 'disk'}
        for extra, msg in [
                ({'bitmaps': ['nope']}, "Bitmap 'nope' is not found"),
                ({'bitmaps': [{'node': 'zz', 'name': 'b0'}]}, "Node 'zz' not found"),
                ({'bitmaps': [{'node': 'hd0', 'name': 'zz'}]}, "Dirty bitmap 'zz' not found"),
                ({'bitmaps': ['b0']}, "Enabled bitmap 'b0' incompatible with readonly export")]:
            err = q.error('block-export-add', dict(base, **extra))
            assert_eq(err['desc'], msg, 'block-export-add %r' % extra)
        assert_eq(q.execute('query-block-exports'), [], 'nothing exported after refusals')
        q.execute('block-export-add', dict(base, bitmaps=['b0'], writable=True))
        err = q.error('block-export-add', dict(base, id='e2', name='d2', bitmaps=['b0'], writable=True))
        assert_eq(err['desc'], "Bitmap 'b0' is currently in use by another operation and cannot be used")
        err = q.error('block-dirty-bitmap-remove', {'node': 'hd0', 'name': 'b0'})
        assert_in('in use by another operation', err['desc'])
        q.execute('block-export-del', {'id': 'e'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        q.execute('block-dirty-bitmap-remove', {'node': 'hd0', 'name': 'b0'})


def test_dirty_map_and_contexts():
    """Writes through one export are recorded; a read-only export of the
    disabled bitmap shows exactly those extents to nbdinfo and to
    qemu-img map (x-dirty-bitmap), and lists the context."""
    require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    with Daemon() as d:
        q, _ = _setup(d)
        q.execute('block-dirty-bitmap-add', {'node': 'hd0', 'name': 'b0', 'granularity': 65536})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'w', 'node-name': 'hd0',
                                       'name': 'rw', 'writable': True})
        run(['qemu-io', '-f', 'raw', '-c', 'write -P 1 0 4k', '-c', 'write -P 2 1M 128k',
             '-c', 'write -P 3 3M 1', d.uri('rw')])
        q.execute('block-dirty-bitmap-disable', {'node': 'hd0', 'name': 'b0'})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'r', 'node-name': 'hd0',
                                       'name': 'view', 'bitmaps': ['b0']})
        assert_eq(_dirty_map(d.uri('view'), 'b0'),
                  [(0, 65536, 1), (65536, 983040, 0), (1048576, 131072, 1),
                   (1179648, 1966080, 0), (3145728, 65536, 1), (3211264, 983040, 0)],
                  'dirty extents')
        # More writes after the disable are not in the view's bitmap.
        run(['qemu-io', '-f', 'raw', '-c', 'write -P 4 2M 64k', d.uri('rw')])
        assert_eq(_dirty_map(d.uri('view'), 'b0')[2], (1048576, 131072, 1), 'disabled bitmap unchanged')
        info = run(['nbdinfo', '--no-content', d.uri('view')]).stdout
        assert_in('qemu:dirty-bitmap:b0', info, 'contexts listed')
        # QEMU's own client reads dirty bitmaps as "allocation" through x-dirty-bitmap.
        opts = ('driver=nbd,server.type=unix,server.path=%s,export=view,'
                'x-dirty-bitmap=qemu:dirty-bitmap:b0' % d.nbd_sock)
        out = run(['qemu-img', 'map', '--output=json', '--image-opts', opts]).stdout
        dirty = [(e['start'], e['length']) for e in json.loads(out) if not e['data']]
        # x-dirty-bitmap reports dirty areas as holes ("data": false).
        assert_eq(dirty, [(0, 65536), (1048576, 131072), (3145728, 65536)], 'qemu-img map of the bitmap')


def test_bitmap_on_backing_node_and_pair():
    """A plain name is looked up down the backing chain; a {node, name}
    pair names the node directly; a list exports several contexts."""
    require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    with Daemon() as d:
        base = d.path('base.qcow2')
        top = d.path('top.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '2M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top])
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'file': {'driver': 'file', 'filename': top},
                                   'backing': {'driver': 'qcow2', 'node-name': 'base',
                                               'file': {'driver': 'file', 'filename': base}}})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-dirty-bitmap-add', {'node': 'base', 'name': 'bb', 'disabled': True})
        q.execute('block-dirty-bitmap-add', {'node': 'top', 'name': 'bt', 'disabled': True})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'top', 'name': 'disk',
                                       'bitmaps': ['bb', {'node': 'top', 'name': 'bt'}]})
        info = run(['nbdinfo', '--no-content', d.uri('disk')]).stdout
        assert_in('qemu:dirty-bitmap:bb', info)
        assert_in('qemu:dirty-bitmap:bt', info)
        assert_eq(_dirty_map(d.uri('disk'), 'bb'), [(0, 2097152, 0)], 'clean backing bitmap')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
