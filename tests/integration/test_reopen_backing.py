#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""blockdev-reopen of backing links (QEMU iotest 245; the harness is
reopen_env.py): chains rebuilt while exports read through them, cycles
refused, a backing omitted or given by reference."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import assert_eq, main, tests_of  # noqa: E402
from reopen_env import IMGFMT, add_driver_node, vm  # noqa: E402


def test_io_with_graph_changes():
    with vm() as v:
        opts = []
        for i in range(3):
            opts.append(v.hd_opts(i))
            opts[i]['backing'] = None
            v.blockdev_add(opts[i])
        # Read-only exports: a writable user of a node would conflict with the
        # backing links (they unshare write) the case creates. hd0's export
        # lives across every graph change of the case.
        for i in range(3):
            v.export('hd%d' % i)

        v.io('hd0', 'read -P 0xa0  0 1M')
        v.io('hd0', 'read -P 0    1M 1M')
        v.io('hd0', 'read -P 0    2M 1M')

        # hd1 <- hd0
        v.reopen(opts[0], {'backing': 'hd1'})
        v.io('hd0', 'read -P 0xa0  0 1M')
        v.io('hd0', 'read -P 0xa1 1M 1M')
        v.io('hd0', 'read -P 0    2M 1M')

        # hd1 <- hd0 , hd1 <- hd2
        v.reopen(opts[2], {'backing': 'hd1'})
        v.io('hd2', 'read -P 0     0 1M')
        v.io('hd2', 'read -P 0xa1 1M 1M')
        v.io('hd2', 'read -P 0xa2 2M 1M')

        # hd1 <- hd2 <- hd0
        v.reopen(opts[0], {'backing': 'hd2'})
        v.io('hd0', 'read -P 0xa0  0 1M')
        v.io('hd0', 'read -P 0xa1 1M 1M')
        v.io('hd0', 'read -P 0xa2 2M 1M')

        # hd2 <- hd0
        v.reopen(opts[2], {'backing': None})
        v.io('hd0', 'read -P 0xa0  0 1M')
        v.io('hd0', 'read -P 0    1M 1M')
        v.io('hd0', 'read -P 0xa2 2M 1M')

        # hd2 <- hd1 <- hd0
        v.reopen(opts[1], {'backing': 'hd2'})
        v.reopen(opts[0], {'backing': 'hd1'})
        v.io('hd0', 'read -P 0xa0  0 1M')
        v.io('hd0', 'read -P 0xa1 1M 1M')
        v.io('hd0', 'read -P 0xa2 2M 1M')

        v.reopen(opts[2], {'backing': 'hd1'},
                 "Making 'hd1' a backing child of 'hd2' would create a cycle")

        # hd2 <- hd0, hd2 <- hd1
        v.reopen(opts[0], {'backing': 'hd2'})
        v.io('hd1', 'read -P 0     0 1M')
        v.io('hd1', 'read -P 0xa1 1M 1M')
        v.io('hd1', 'read -P 0xa2 2M 1M')

        v.reopen(opts[2], {'backing': 'hd1'},
                 "Making 'hd1' a backing child of 'hd2' would create a cycle")
        v.reopen(opts[2], {'file': 'hd0-file'},
                 "Permission conflict on node 'hd0-file': permissions 'write, resize' are both "
                 "required by node 'hd0' (uses node 'hd0-file' as 'file' child) and unshared "
                 "by node 'hd2' (uses node 'hd0-file' as 'file' child).")

        v.unexport('hd2')       # the seed's blockdev-del sees no other user
        v.blockdev_del('hd2', "Node 'hd2' is busy: node is used as backing hd of 'hd0'")

        v.reopen(opts[1], {'backing': None})
        v.io('hd1', 'read -P 0     0 1M')
        v.io('hd1', 'read -P 0xa1 1M 1M')
        v.io('hd1', 'read -P 0    2M 1M')

        del opts[1]['backing']
        v.reopen(opts[1], {}, "backing is missing for 'hd1'")
        v.io('hd1', 'read -P 0     0 1M')
        v.io('hd1', 'read -P 0xa1 1M 1M')
        v.io('hd1', 'read -P 0    2M 1M')
        v.io('hd0', 'read -P 0xa0  0 1M')       # added: hd0's export served throughout
        v.io('hd0', 'read -P 0xa2 2M 1M')


def test_graph_cycles():
    with vm() as v:
        opts = []
        for i in range(3):
            opts.append(v.hd_opts(i))
            opts[i]['backing'] = None
            v.blockdev_add(opts[i])
        v.export('hd2')         # added: read-only, follows hd2's backing changes

        # hd1 <- hd0, hd1 <- hd2
        v.reopen(opts[0], {'backing': 'hd1'})
        v.reopen(opts[2], {'backing': 'hd1'})
        v.io('hd2', 'read -P 0 0 1M')
        v.io('hd2', 'read -P 0xa1 1M 1M')

        v.reopen(opts[1], {'backing': 'hd2'},
                 "Making 'hd2' a backing child of 'hd1' would create a cycle")

        # hd1 <- hd0 <- hd2
        v.reopen(opts[2], {'backing': 'hd0'})
        v.io('hd2', 'read -P 0xa0 0 1M')
        v.io('hd2', 'read -P 0xa1 1M 1M')
        v.io('hd2', 'read -P 0xa2 2M 1M')

        v.reopen(opts[1], {'backing': 'hd2'},
                 "Making 'hd2' a backing child of 'hd1' would create a cycle")
        v.reopen(opts[1], {'backing': 'hd1'},
                 "Making 'hd1' a backing child of 'hd1' would create a cycle")

        v.reopen(opts[0])
        v.reopen(opts[2])
        v.io('hd2', 'read -P 0 0 2M')
        v.io('hd2', 'read -P 0xa2 2M 1M')

        bvopts = {'driver': 'blkverify',
                  'node-name': 'bv',
                  'test': 'hd0',
                  'raw': 'hd1'}
        add_driver_node(v, bvopts)

        v.reopen(bvopts, {}, "Block format 'blkverify' used by node 'bv'" +
                 " does not support reopening files")

        v.reopen(opts[0], {'backing': 'bv'},
                 "Making 'bv' a backing child of 'hd0' would create a cycle")

        v.blockdev_del('bv')


def test_missing_backing_options_1():
    with vm() as v:
        opts = v.hd_opts(2)
        v.blockdev_add(opts)

        opts = v.hd_opts(0)
        v.blockdev_add(opts)
        v.export('hd0', writable=True)      # added: hd0 stays writable throughout
        v.io('hd0', 'read -P 0 2M 1M')

        v.reopen(opts)

        # hd2 <- hd0
        v.reopen(opts, {'backing': 'hd2'})
        v.io('hd0', 'read -P 0xa2 2M 1M')

        v.reopen(opts, {}, "backing is missing for 'hd0'")

        v.blockdev_del('hd2', "Node 'hd2' is busy: node is used as backing hd of 'hd0'")

        v.reopen(opts, {'backing': None})
        v.io('hd0', 'read -P 0 2M 1M')
        v.io('hd0', 'write -P 0xb0 2M 64k')

        v.reopen(opts)
        v.io('hd0', 'read -P 0xb0 2M 64k')

        v.unexport('hd0')
        v.blockdev_del('hd0')
        v.blockdev_del('hd2')


def test_missing_backing_options_2():
    with vm() as v:
        # hd0 <- hd1 (hd0 is hd1's default backing file)
        opts = v.hd_opts(1)
        v.blockdev_add(opts)
        v.export('hd1')         # added
        v.io('hd1', 'read -P 0xa0 0 1M')

        v.reopen(opts, {}, "backing is missing for 'hd1'")

        v.reopen(opts, {'backing': None})
        v.io('hd1', 'read -P 0 0 1M')

        v.reopen(opts, {}, "backing is missing for 'hd1'")
        v.io('hd1', 'read -P 0xa1 1M 1M')

        v.unexport('hd1')
        v.blockdev_del('hd1')


def test_backing_reference():
    with vm() as v:
        # hd2 <- hd1 <- hd0
        opts = v.hd_opts(0)
        opts['backing'] = v.hd_opts(1)
        opts['backing']['backing'] = v.hd_opts(2)
        opts['detect-zeroes'] = 'on'
        opts['backing']['detect-zeroes'] = 'on'
        opts['backing']['backing']['detect-zeroes'] = 'on'
        v.blockdev_add(opts)
        v.export('hd0')         # added

        opts = {'driver': IMGFMT,
                'node-name': 'hd0',
                'file': 'hd0-file',
                'backing': 'hd1'}
        v.reopen(opts)

        assert_eq(v.get_node('hd0')['detect_zeroes'], 'off', 'hd0 detect_zeroes')
        assert_eq(v.get_node('hd1')['detect_zeroes'], 'on', 'hd1 detect_zeroes')
        assert_eq(v.get_node('hd2')['detect_zeroes'], 'on', 'hd2 detect_zeroes')
        v.io('hd0', 'read -P 0xa0 0 1M')
        v.io('hd0', 'read -P 0xa1 1M 1M')
        v.io('hd0', 'read -P 0xa2 2M 1M')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
