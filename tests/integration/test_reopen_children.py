#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""blockdev-reopen of file children (QEMU iotest 245; the harness is
reopen_env.py): a file replaced, throttle and compress filters inserted
above a file and removed again, the files of two nodes swapped in one
transaction."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import main, qemu_io, run, tests_of  # noqa: E402
from reopen_env import add_driver_node, object_add, vm  # noqa: E402


def test_replace_file():
    with vm(images=False) as v:
        hd_path = v.hd_path
        run(['qemu-img', 'create', '-f', 'raw', hd_path[0], '10k'])
        run(['qemu-img', 'create', '-f', 'raw', hd_path[1], '10k'])

        hd0_opts = {'driver': 'file', 'node-name': 'hd0-file', 'filename': hd_path[0]}
        hd1_opts = {'driver': 'file', 'node-name': 'hd1-file', 'filename': hd_path[1]}
        v.blockdev_add(hd0_opts)
        v.blockdev_add(hd1_opts)

        opts = {'driver': 'raw', 'node-name': 'hd', 'file': 'hd0-file'}
        v.blockdev_add(opts)
        v.export('hd', writable=True)       # one export across the three file swaps

        v.io('hd', 'read  -P 0 0 10k')
        v.io('hd', 'write -P 0xa0 0 10k')

        v.reopen(opts, {'file': 'hd1-file'})
        v.io('hd', 'read  -P 0 0 10k')
        v.io('hd', 'write -P 0xa1 0 10k')

        v.reopen(opts, {'file': 'hd0-file'})
        v.io('hd', 'read  -P 0xa0 0 10k')

        v.reopen(opts, {'file': 'hd1-file'})
        v.io('hd', 'read  -P 0xa1 0 10k')


def test_insert_throttle_filter():
    with vm() as v:
        hd0_opts = v.hd_opts(0)
        v.blockdev_add(hd0_opts)
        v.export('hd0', writable=True)      # added: I/O before, inside and after the filter

        object_add(v, {'qom-type': 'throttle-group', 'id': 'group0',
                       'limits': {'iops-total': 1000}})

        opts = {'driver': 'throttle', 'node-name': 'throttle0',
                'throttle-group': 'group0', 'file': 'hd0-file'}
        add_driver_node(v, opts)
        v.io('hd0', 'write -P 0xb1 0 64k')

        v.reopen(hd0_opts, {'file': 'throttle0'})
        v.io('hd0', 'read -P 0xb1 0 64k')
        v.io('hd0', 'write -P 0xb2 64k 64k')

        v.reopen(hd0_opts, {'file': 'hd0-file'})
        v.io('hd0', 'read -P 0xb2 64k 64k')


def test_insert_compress_filter():
    with vm() as v:
        opts = {'driver': 'raw', 'node-name': 'hd', 'file': v.hd_opts(0), 'discard': 'unmap'}
        v.blockdev_add(opts)

        filter_opts = {'driver': 'compress',
                       'node-name': 'compress0',
                       'file': 'hd0'}
        add_driver_node(v, filter_opts)
        v.export('hd', writable=True)       # one export across insert and removal

        v.io('hd', 'write -z -u 0 128k')
        v.io('hd', 'write -P 0xa0 0 64k')

        v.reopen(opts, {'file': 'compress0'})
        v.io('hd', 'write -P 0xa1 64k 64k')

        v.reopen(opts, {'file': 'hd0'})
        v.io('hd', 'write -P 0xa2 128k 64k')

        v.io('hd', 'read -P 0xa0    0 64k')
        v.io('hd', 'read -P 0xa1  64k 64k')
        v.io('hd', 'read -P 0xa2 128k 64k')

        v.unexport('hd')
        v.d.stop()

        # The first byte of the first three L2 entries: the second cluster is
        # compressed (0x40), the others are not (0x80).
        qemu_io(v.hd_path[0], 'read -P 0x80 0x40000 1', 'read -P 0x40 0x40008 1',
                'read -P 0x80 0x40010 1')


def test_swap_files():
    with vm() as v:
        opts0 = v.hd_opts(0)
        v.blockdev_add(opts0)
        opts2 = v.hd_opts(2)
        v.blockdev_add(opts2)
        # Both exports live across the swaps: their nodes keep their users.
        v.export('hd0', writable=True)
        v.export('hd2', writable=True)

        v.io('hd0', 'write -P 0xa0 0 1k')
        v.io('hd2', 'write -P 0xa2 0 1k')

        v.io('hd0', 'read  -P 0xa0 0 1k')
        v.io('hd2', 'read  -P 0xa2 0 1k')

        v.reopen(opts0, {'file': 'hd2-file'},
                 "Permission conflict on node 'hd2-file': permissions "
                 "'write, resize' are both required by node 'hd2' (uses "
                 "node 'hd2-file' as 'file' child) and unshared by node "
                 "'hd0' (uses node 'hd2-file' as 'file' child).")
        v.reopen(opts2, {'file': 'hd0-file'},
                 "Permission conflict on node 'hd0-file': permissions "
                 "'write, resize' are both required by node 'hd0' (uses "
                 "node 'hd0-file' as 'file' child) and unshared by node "
                 "'hd2' (uses node 'hd0-file' as 'file' child).")

        opts0['file'] = 'hd2-file'
        opts2['file'] = 'hd0-file'
        v.reopen_multiple([opts0, opts2])
        v.io('hd0', 'read  -P 0xa2 0 1k')
        v.io('hd2', 'read  -P 0xa0 0 1k')

        opts0['file'] = 'hd0-file'
        opts2['file'] = 'hd2-file'
        v.reopen_multiple([opts0, opts2])
        v.io('hd0', 'read  -P 0xa0 0 1k')
        v.io('hd2', 'read  -P 0xa2 0 1k')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
