#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""x-blockdev-change: adding and removing quorum children at run time.

A quorum of raw images is exported over NBD. A child added by
x-blockdev-change receives the writes made after it joined, a removed one
no longer does (checked with qemu-io on the image files after the daemon has
gone); children are named children.<n> as in QEMU, the last index given
back. QEMU's refusals with qemu-storage-daemon 7.2's texts. Every test
passes against it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, main, qemu_io,  # noqa: E402
                         require_nbd, run, tests_of)

MiB = 1024 * 1024


def start(d, n=4):
    imgs = []
    for i in range(n):
        p = d.path('q%d.raw' % i)
        run(['qemu-img', 'create', '-q', '-f', 'raw', p, str(MiB)])
        imgs.append(p)
    d.start()
    q = d.qmp()
    for i in range(n):
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'c%d' % i,
                                   'file': {'driver': 'file', 'filename': imgs[i]}})
    return q, imgs


def children(q, parent):
    g = q.execute('x-debug-query-block-graph')
    ids = {n['id']: n['name'] for n in g['nodes']}
    return sorted((e['name'], ids[e['child']]) for e in g['edges']
                  if ids[e['parent']] == parent and e['name'].startswith('children.'))


def test_add_remove_with_io():
    require_nbd()
    with Daemon() as d:
        q, imgs = start(d)
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'qu',
                                   'vote-threshold': 1, 'children': ['c0', 'c1']})
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'qu',
                                       'name': 'qu', 'writable': True})
        qemu_io(d.uri('qu'), 'write -P 0x11 0 64k')
        q.execute('x-blockdev-change', {'parent': 'qu', 'node': 'c2'})
        assert_eq(children(q, 'qu'), [('children.0', 'c0'), ('children.1', 'c1'),
                                      ('children.2', 'c2')], 'added')
        qemu_io(d.uri('qu'), 'write -P 0x22 64k 64k')
        q.execute('x-blockdev-change', {'parent': 'qu', 'child': 'children.0'})
        qemu_io(d.uri('qu'), 'write -P 0x33 128k 64k', 'read -P 0x22 64k 64k')
        q.execute('x-blockdev-change', {'parent': 'qu', 'node': 'c0'})
        assert_eq(children(q, 'qu'), [('children.1', 'c1'), ('children.2', 'c2'),
                                      ('children.3', 'c0')], 'indexes')
        q.execute('x-blockdev-change', {'parent': 'qu', 'child': 'children.3'})
        q.execute('x-blockdev-change', {'parent': 'qu', 'node': 'c3'})
        assert_eq(children(q, 'qu'), [('children.1', 'c1'), ('children.2', 'c2'),
                                      ('children.3', 'c3')], 'last index given back')
        q.execute('quit')
        d.proc.wait(30)
        qemu_io(imgs[0], 'read -P 0x11 0 64k', 'read -P 0x22 64k 64k', 'read -P 0 128k 64k')
        qemu_io(imgs[1], 'read -P 0x11 0 64k', 'read -P 0x22 64k 64k',
                'read -P 0x33 128k 64k')
        qemu_io(imgs[2], 'read -P 0 0 64k', 'read -P 0x22 64k 64k', 'read -P 0x33 128k 64k')
        qemu_io(imgs[3], 'read -P 0 0 192k')


def test_errors():
    with Daemon() as d:
        q, imgs = start(d)
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'qu',
                                   'vote-threshold': 2, 'children': ['c0', 'c1']})
        cases = [
            ({'parent': 'nope', 'node': 'c2'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'parent': 'qu'}, 'Either child or node must be specified'),
            ({'parent': 'qu', 'child': 'children.0', 'node': 'c2'},
             'The parameters child and node are in conflict'),
            ({'parent': 'qu', 'node': 'nope'}, "Node 'nope' not found"),
            ({'parent': 'qu', 'node': 'c1'}, 'The node c1 already has a parent'),
            ({'parent': 'qu', 'child': 'children.7'},
             "Node 'qu' does not have child 'children.7'"),
            ({'parent': 'qu', 'child': 'children.0'},
             'The number of children cannot be lower than the vote threshold 2'),
            ({'parent': 'c2', 'node': 'c3'}, 'The node c2 does not support adding a child'),
            ({'parent': 'c2', 'child': 'file'},
             'The node c2 does not support removing a child'),
        ]
        for args, desc in cases:
            assert_eq(q.error('x-blockdev-change', args)['desc'], desc, str(args))
        q.execute('blockdev-add', {'driver': 'quorum', 'node-name': 'bv', 'blkverify': True,
                                   'vote-threshold': 2, 'children': ['c2', 'c3']})
        img = d.path('extra.raw')
        run(['qemu-img', 'create', '-q', '-f', 'raw', img, str(MiB)])
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'x',
                                   'file': {'driver': 'file', 'filename': img}})
        assert_eq(q.error('x-blockdev-change', {'parent': 'bv', 'node': 'x'})['desc'],
                  'Cannot add a child to a quorum in blkverify mode', 'blkverify')
        assert_eq(children(q, 'qu'), [('children.0', 'c0'), ('children.1', 'c1')],
                  'unchanged')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
