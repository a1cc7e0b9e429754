#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""blockdev-reopen and the users of a node (added to QEMU iotest 245; the
harness is reopen_env.py): an export is a user with permissions that a
reopen must respect, and a multi-node reopen that fails anywhere leaves
every node as it was."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import assert_eq, is_reference, main, tests_of  # noqa: E402
from reopen_env import vm  # noqa: E402


def test_exports_as_users():
    """Added (not in 245): an export is a user of its node with permissions.
    Texts checked against qemu-storage-daemon 7.2."""
    with vm() as v:
        o0, o2 = v.hd_opts(0), v.hd_opts(2)
        v.blockdev_add(o0)
        v.blockdev_add(o2)
        v.export('hd0', writable=True)
        v.reopen(o0, {'read-only': True},
                 "Read-only block node 'hd0' cannot support read-write users")
        assert_eq(v.get_node('hd0')['ro'], False, 'hd0 ro after the refused reopen')
        v.io('hd0', 'write -P 0xc0 0 64k')
        # a writable export shares write: its node may become a backing file
        v.reopen(o2, {'backing': 'hd0'})
        v.export('hd2')
        v.io('hd2', 'read -P 0xc0 0 64k')
        v.io('hd2', 'read -P 0xa0 64k 960k')
        v.io('hd2', 'read -P 0xa2 2M 1M')
        # a read-only export does not keep its node read-write
        v.reopen(o2, {'backing': 'hd0', 'read-only': True})
        assert_eq(v.get_node('hd2')['ro'], True, 'hd2 ro')
        v.io('hd2', 'read -P 0xc0 0 64k')
        v.reopen(o0, {'backing': 'hd2'},
                 "Making 'hd2' a backing child of 'hd0' would create a cycle")
        v.blockdev_del('hd2', 'Node hd2 is in use')
        v.reopen(o2, {'backing': None})
        v.io('hd2', 'read -P 0 0 1M')
        v.blockdev_del('hd2', 'Node hd2 is in use')
        v.unexport('hd2')
        v.blockdev_del('hd2')
        v.io('hd0', 'read -P 0xc0 0 64k')


def test_transaction_abort():
    """Added (not in 245): a multi-node reopen that fails in any node leaves
    every node as it was (options, children, data seen through an export)."""
    with vm() as v:
        o0, o1, o2 = v.hd_opts(0), v.hd_opts(1), v.hd_opts(2)
        o1['backing'] = None
        for o in (o0, o1, o2):
            v.blockdev_add(o)
        graph = v.named_nodes()
        v.export('hd0')

        def unchanged(what):
            assert_eq(json.dumps(v.named_nodes(), sort_keys=True),
                      json.dumps(graph, sort_keys=True), 'query-named-block-nodes ' + what)
            v.io('hd0', 'read -P 0xa0 0 1M')
            v.io('hd0', 'read -P 0 1M 2M')

        v.reopen_multiple([dict(o0, backing='hd2', **{'detect-zeroes': 'on', 'read-only': True}),
                           dict(o2, file='hd0-file')],
                          "Permission conflict on node 'hd0-file': permissions 'write, resize' "
                          "are both required by node 'hd2' (uses node 'hd0-file' as 'file' "
                          "child) and unshared by node 'hd0' (uses node 'hd0-file' as 'file' "
                          "child).")
        unchanged('after a permission conflict')
        v.reopen_multiple([dict(o0, backing='hd2'), dict(o2, backing='hd0')],
                          "Making 'hd0' a backing child of 'hd2' would create a cycle")
        unchanged('after a cycle')
        v.reopen_multiple([dict(o0, backing='hd2'), dict(o1, backing='hd1')],
                          "Making 'hd1' a backing child of 'hd1' would create a cycle")
        unchanged('after a self-cycle')
        v.reopen_multiple([dict(o0, backing='hd2'), dict(o2, backing=None),
                           dict(o1, backing='hd2', cache={'direct': False, 'no-flush': True},
                                **{'l2-cache-entry-size': 1000})],
                          'L2 cache entry size must be a power of two between 512 and the '
                          'cluster size (65536)')
        unchanged('after a bad option in the last node')
        v.reopen_multiple([dict(o0, backing='hd2'), dict(o1, backing='hd2')])
        v.io('hd0', 'read -P 0xa2 2M 1M')
        if not is_reference():
            # qemu-storage-daemon 7.2 aborts on an empty list (assertion
            # 'bs_queue != NULL' in bdrv_reopen_multiple); a daemon must not.
            # Either answer is fine (QEMU defines none); the reply must come.
            r = v.qmp('blockdev-reopen', {'options': []})
            v.d.assert_alive()
            assert_eq('return' in r or 'error' in r, True, 'reply to an empty list: %r' % r)
            v.io('hd0', 'read -P 0xa2 2M 1M')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
