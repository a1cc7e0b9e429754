#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""blockdev-reopen, options of one node at a time (QEMU iotest 245; the
harness is reopen_env.py): 245's parameter checks (wrong types, unknown
nodes, options that cannot change), the full reopen of a qcow2 and a raw
node (read-only, cache, detect-zeroes, ...), defaults coming back when an
option is omitted, which options each driver lets a reopen change, and
245's sections on the other drivers."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import Skip, assert_eq, main, qemu_io, run, tests_of  # noqa: E402
from reopen_env import IMGFMT, add_driver_node, object_add, supports_direct, vm  # noqa: E402


def test_incorrect_parameters_single_file():
    with vm() as v:
        hd_path = v.hd_path
        opts = v.hd_opts(0)
        v.blockdev_add(opts)
        original_graph = v.named_nodes()
        # added: one export of hd0 across every attempt below
        v.export('hd0')
        v.io('hd0', 'read -P 0xa0 0 1M')

        v.reopen(opts)
        v.reopen(opts, {'file': 'hd0-file'})

        v.reopen(opts, {'node-name': 'not-found'}, "Failed to find node with node-name='not-found'")
        v.reopen(opts, {'node-name': ''}, "Failed to find node with node-name=''")
        v.reopen(opts, {'node-name': None},
                 "Invalid parameter type for 'options[0].node-name', expected: string")
        v.reopen(opts, {'driver': 'raw'}, "Cannot change the option 'driver'")
        v.reopen(opts, {'driver': ''}, "Parameter 'driver' does not accept value ''")
        v.reopen(opts, {'driver': None},
                 "Invalid parameter type for 'options[0].driver', expected: string")
        v.reopen(opts, {'file': 'not-found'}, "Cannot find device='' nor node-name='not-found'")
        v.reopen(opts, {'file': ''}, "Cannot find device='' nor node-name=''")
        v.reopen(opts, {'file': None}, "Invalid parameter type for 'file', expected: BlockdevRef")
        v.reopen(opts, {'file.node-name': 'newname'}, "Cannot change the option 'node-name'")
        v.reopen(opts, {'file.driver': 'host_device'}, "Cannot change the option 'driver'")
        v.reopen(opts, {'file.filename': hd_path[1]}, "Cannot change the option 'filename'")
        v.reopen(opts, {'file.aio': 'native'}, "Cannot change the option 'aio'")
        v.reopen(opts, {'file.locking': 'off'}, "Cannot change the option 'locking'")
        v.reopen(opts, {'file.filename': None},
                 "Invalid parameter type for 'options[0].file.filename', expected: string")

        del opts['node-name']
        v.reopen(opts, {}, "node-name not specified")

        v.check_node_graph(original_graph)
        v.io('hd0', 'read -P 0xa0 0 1M')
        v.unexport('hd0')

        v.blockdev_del('hd0')


def test_incorrect_parameters_backing_file():
    with vm() as v:
        hd_path = v.hd_path
        opts = v.hd_opts(1)
        v.blockdev_add(opts)
        original_graph = v.named_nodes()
        v.export('hd1')     # added: read-only, reads reach the backing file

        v.reopen(opts, {}, "backing is missing for 'hd1'")

        backing_node_name = None
        for node in original_graph:
            if node['drv'] == IMGFMT and node['file'] == hd_path[0]:
                backing_node_name = node['node-name']
        v.reopen(opts, {'backing': backing_node_name})
        v.io('hd1', 'read -P 0xa0 0 1M')
        v.io('hd1', 'read -P 0xa1 1M 1M')

        v.reopen(opts, {'backing': 'not-found'}, "Cannot find device='' nor node-name='not-found'")
        v.reopen(opts, {'backing': ''}, "Cannot find device='' nor node-name=''")

        opts['backing'] = {'driver': IMGFMT,
                           'file': {'driver': 'file',
                                    'filename': hd_path[0]}}
        v.reopen(opts)

        v.reopen(opts, {'backing.node-name': 'newname'}, "Cannot change the option 'node-name'")
        v.reopen(opts, {'backing.driver': 'raw'}, "Cannot change the option 'driver'")
        v.reopen(opts, {'backing.file.node-name': 'newname'}, "Cannot change the option 'node-name'")
        v.reopen(opts, {'backing.file.driver': 'host_device'}, "Cannot change the option 'driver'")

        v.check_node_graph(original_graph)
        v.io('hd1', 'read -P 0xa0 0 1M')
        v.io('hd1', 'read -P 0xa1 1M 1M')
        v.unexport('hd1')

        v.blockdev_del('hd1')


def test_reopen():
    with vm() as v:
        hd_path = v.hd_path
        direct = supports_direct(hd_path[0])

        opts = v.hd_opts(1)
        opts['backing'] = v.hd_opts(0)
        v.blockdev_add(opts)
        original_graph = v.named_nodes()
        # added: a read-only export of hd1 lives until the blockdev-del steps
        v.export('hd1')
        v.io('hd1', 'read -P 0xa0 0 1M')

        v.reopen(opts)

        assert_eq(v.get_node('hd1')['ro'], False, 'hd1 ro')
        v.reopen(opts, {'read-only': True})
        assert_eq(v.get_node('hd1')['ro'], True, 'hd1 ro')
        v.io('hd1', 'read -P 0xa1 1M 1M')
        v.reopen(opts)
        assert_eq(v.get_node('hd1')['ro'], False, 'hd1 ro')

        def cache():
            return v.get_node('hd1')['cache']
        assert_eq(cache(), {'writeback': True, 'direct': False, 'no-flush': False}, 'hd1 cache')
        v.reopen(opts, {'cache': {'direct': direct, 'no-flush': True}})
        assert_eq(cache(), {'writeback': True, 'direct': direct, 'no-flush': True}, 'hd1 cache')
        v.io('hd1', 'read -P 0xa0 0 1M')
        v.reopen(opts)
        assert_eq(cache(), {'writeback': True, 'direct': False, 'no-flush': False}, 'hd1 cache')

        def dz():
            return v.get_node('hd1')['detect_zeroes']
        assert_eq(dz(), 'off', 'detect_zeroes')
        v.reopen(opts, {'detect-zeroes': 'on'})
        assert_eq(dz(), 'on', 'detect_zeroes')
        v.reopen(opts, {'detect-zeroes': 'unmap'},
                 "setting detect-zeroes to unmap is not allowed " +
                 "without setting discard operation to unmap")
        assert_eq(dz(), 'on', 'detect_zeroes')
        v.reopen(opts, {'detect-zeroes': 'unmap', 'discard': 'unmap'})
        assert_eq(dz(), 'unmap', 'detect_zeroes')
        v.reopen(opts)
        assert_eq(dz(), 'off', 'detect_zeroes')

        v.reopen(opts, {'force-share': True}, "Cannot change the option 'force-share'")

        v.reopen(opts, {'l2-cache-entry-size': 128 * 1024},
                 "L2 cache entry size must be a power of two " +
                 "between 512 and the cluster size (65536)")
        v.reopen(opts, {'l2-cache-size': 1024 * 1024, 'cache-size': 512 * 1024},
                 "l2-cache-size may not exceed cache-size")
        v.reopen(opts, {'l2-cache-size': 4 * 1024 * 1024,
                        'refcount-cache-size': 4 * 1024 * 1024,
                        'l2-cache-entry-size': 32 * 1024})
        v.reopen(opts, {'pass-discard-request': True})

        v.check_node_graph(original_graph)

        del opts['file']['node-name']
        del opts['backing']['node-name']
        del opts['backing']['file']['node-name']
        v.reopen(opts)
        v.check_node_graph(original_graph)

        v.reopen(opts, {'backing': None})
        assert_eq('backing-image' in v.get_node('hd1')['image'], False, 'hd1 backing-image absent')
        v.io('hd1', 'read -P 0 0 1M')           # added: no backing file any more
        v.io('hd1', 'read -P 0xa1 1M 1M')

        v.blockdev_add(v.hd_opts(0))

        v.reopen(opts, {'backing': 'hd0'})
        assert_eq(v.get_node('hd1')['image']['backing-image']['filename'], hd_path[0],
                  'hd1 image/backing-image/filename')
        v.io('hd1', 'read -P 0xa0 0 1M')        # added: hd0 is the backing file again

        v.reopen(v.hd_opts(0), {'read-only': True})
        v.check_node_graph(original_graph)

        v.reopen(opts, {}, "Cannot change the option 'backing.driver'")

        v.unexport('hd1')
        v.blockdev_del('hd0', "Node 'hd0' is busy: node is used as backing hd of 'hd1'")

        v.blockdev_del('hd1')
        v.blockdev_del('hd0')


def test_reopen_raw():
    with vm() as v:
        hd_path = v.hd_path
        opts = {'driver': 'raw', 'node-name': 'hd0',
                'file': {'driver': 'file',
                         'filename': hd_path[0],
                         'node-name': 'hd0-file'}}

        run(['qemu-img', 'create', '-f', 'raw', hd_path[0], '2M'])
        qemu_io(hd_path[0], 'write -P 0xa0  0 1M')
        qemu_io(hd_path[0], 'write -P 0xa1 1M 1M')

        v.blockdev_add(opts)
        v.export('hd0')         # one export across both reopens

        v.io('hd0', 'read -P 0xa0  0 1M')

        v.reopen(opts, {'offset': 1024 * 1024})
        v.io('hd0', 'read -P 0xa1  0 1M')

        v.reopen(opts)
        v.io('hd0', 'read -P 0xa0  0 1M')

        v.unexport('hd0')
        v.blockdev_del('hd0')


def test_reset_default_values():
    with vm() as v:
        opts = {'driver': 'qcow2', 'node-name': 'hd0',
                'file': {'driver': 'file',
                         'filename': v.hd_path[0],
                         'x-check-cache-dropped': True,   # this one can be changed
                         'locking': 'off',                # this one can NOT be changed
                         'node-name': 'hd0-file'}}
        v.blockdev_add(opts)
        v.export('hd0', writable=True)      # added: writes across the reopens

        v.reopen(opts, {'file.x-check-cache-dropped': False})
        v.io('hd0', 'write -P 0xb0 0 64k')
        del opts['file']['x-check-cache-dropped']
        v.reopen(opts)
        v.io('hd0', 'read -P 0xb0 0 64k')

        v.reopen(opts, {'file.locking': 'on'}, "Cannot change the option 'locking'")
        del opts['file']['locking']
        v.reopen(opts, {}, "Option 'locking' cannot be reset to its default value")
        v.reopen(opts, {'file.locking': 'off'})
        v.io('hd0', 'read -P 0xb0 0 64k')
        v.io('hd0', 'read -P 0xa0 64k 960k')

        v.unexport('hd0')
        v.blockdev_del('hd0')


def test_driver_options():
    """Added (not in 245): which options qcow2, raw, null-co and file let a
    reopen change, and the texts when they do not; each answer as
    qemu-storage-daemon 7.2 gives it. Every option set is given alone (an
    option once set must be repeated or it is reset)."""
    with vm() as v:
        direct = supports_direct(v.hd_path[0])
        o0 = v.hd_opts(0)
        v.blockdev_add(o0)
        v.export('hd0')
        for extra, errmsg in (
                ({'lazy-refcounts': True}, None),
                ({'pass-discard-other': True}, None),
                ({'overlap-check': 'none'}, None),
                ({'overlap-check': {'template': 'all'}}, None),
                ({'cache-clean-interval': 10}, None),
                ({'l2-cache-size': 7}, None),
                ({'refcount-cache-size': -1},
                 "Parameter 'refcount-cache-size' expects a non-negative number below 2^64"),
                ({'data-file': 'x'}, "Cannot change the option 'data-file'"),
                ({'auto-read-only': True}, None),
                ({'read-only': True, 'auto-read-only': True}, None),
                ({'cache': {'direct': direct}}, None),
                ({'discard': 'ignore'}, None),
                ({'file': dict(o0['file'], aio='threads')}, "Cannot change the option 'aio'"),
                ({'file': dict(o0['file'], locking='auto')}, "Cannot change the option 'locking'"),
                ({'bogus': 1}, "Parameter 'options[0].bogus' is unexpected")):
            v.reopen(o0, extra, errmsg)
            v.io('hd0', 'read -P 0xa0 0 1M')

        raw = {'driver': 'raw', 'node-name': 'r',
               'file': {'driver': 'file', 'filename': v.hd_path[2], 'node-name': 'rf'}}
        v.blockdev_add(raw)
        file_size = os.path.getsize(v.hd_path[2])
        for extra, errmsg in (
                ({'offset': 512, 'size': 1024}, None),
                ({'size': 1000}, 'Specified size is not multiple of 512'),
                ({'offset': 100}, None),
                ({'offset': 1 << 40}, 'Offset (1099511627776) cannot be greater than size of '
                                      'the containing file (%d)' % file_size),
                ({'size': 1 << 40}, 'The sum of offset (0) and size (1099511627776) has to be '
                                    'smaller or equal to the  actual size of the containing '
                                    'file (%d)' % file_size)):
            v.reopen(raw, extra, errmsg)
        v.reopen(raw, {'offset': 512, 'size': 1024})
        assert_eq(v.get_node('r')['image']['virtual-size'], 1024, 'raw size after reopen')
        v.reopen(raw)
        assert_eq(v.get_node('r')['image']['virtual-size'], file_size, 'raw size reset')

        nul = {'driver': 'null-co', 'node-name': 'n', 'size': 4096, 'latency-ns': 5}
        v.blockdev_add(nul)
        v.reopen(nul)
        v.reopen(nul, {'latency-ns': 0}, "Cannot change the option 'latency-ns'")
        v.reopen(nul, {'read-zeroes': True}, "Cannot change the option 'read-zeroes'")


def _misc_quorum(v):
    for i in range(3):
        opts = v.hd_opts(i)
        opts['backing'] = None
        v.blockdev_add(opts)

    opts = {'driver': 'quorum',
            'node-name': 'quorum0',
            'children': ['hd0', 'hd1', 'hd2'],
            'vote-threshold': 2}
    add_driver_node(v, opts)

    v.reopen(opts, {}, "Block format 'quorum' used by node 'quorum0'" +
             " does not support reopening files")

    v.reopen(v.hd_opts(0), {'backing': 'quorum0'},
             "Making 'quorum0' a backing child of 'hd0' would create a cycle")

    v.blockdev_del('quorum0')
    for i in range(3):
        v.blockdev_del('hd%d' % i)


def _misc_blkdebug(v):
    opts = {'driver': 'blkdebug',
            'node-name': 'bd',
            'config': '/dev/null',
            'image': v.hd_opts(0)}
    add_driver_node(v, opts)

    v.reopen(opts)

    v.reopen(opts, {'image': 'hd1'}, "Cannot change the option 'image'")
    v.reopen(opts, {'align': 33554432}, "Cannot change the option 'align'")
    v.reopen(opts, {'config': '/non/existent'}, "Cannot change the option 'config'")
    del opts['config']
    v.reopen(opts, {}, "Option 'config' cannot be reset to its default value")

    v.blockdev_del('bd')


def _misc_null(v):
    opts = {'driver': 'null-co', 'node-name': 'root', 'size': 1024}
    v.blockdev_add(opts)

    v.reopen(opts, {'size': (1 << 30)}, "Cannot change the option 'size'")

    del opts['size']
    v.reopen(opts, {}, "Option 'size' cannot be reset to its default value")

    v.blockdev_del('root')


def _misc_file(v):
    opts = v.hd_opts(0)
    opts['file']['locking'] = 'on'
    v.blockdev_add(opts)

    del opts['file']['locking']
    v.reopen(opts, {'file.locking': 'on'})
    v.reopen(opts, {'file.locking': 'off'}, "Cannot change the option 'locking'")
    v.reopen(opts, {}, "Option 'locking' cannot be reset to its default value")

    opts = opts['file']
    v.reopen(opts, {'locking': 'on'})
    v.reopen(opts, {'locking': 'off'}, "Cannot change the option 'locking'")
    v.reopen(opts, {}, "Option 'locking' cannot be reset to its default value")

    v.blockdev_del('hd0')


def _misc_throttle(v):
    object_add(v, {'qom-type': 'throttle-group', 'id': 'group0', 'limits': {'iops-total': 1000}})
    object_add(v, {'qom-type': 'throttle-group', 'id': 'group1', 'limits': {'iops-total': 2000}})

    opts = {'driver': 'throttle', 'node-name': 'throttle0',
            'throttle-group': 'group0', 'file': v.hd_opts(0)}
    add_driver_node(v, opts)
    v.export('throttle0')       # added: reads through the filter across group changes

    v.reopen(opts)
    v.reopen(opts, {'file': 'hd0'})
    v.io('throttle0', 'read -P 0xa0 0 1M')

    v.reopen(opts, {'throttle-group': 'notfound'}, "Throttle group 'notfound' does not exist")

    v.reopen(opts, {'throttle-group': 'group1'})
    v.io('throttle0', 'read -P 0xa0 0 1M')

    r = v.qmp('object-del', {'id': 'group1'})
    v.assert_error(r, "object 'group1' is in use, can not be deleted", what='object-del group1')

    v.reopen(opts)
    v.io('throttle0', 'read -P 0xa0 0 1M')

    r = v.qmp('object-del', {'id': 'group0'})
    v.assert_error(r, "object 'group0' is in use, can not be deleted", what='object-del group0')

    v.cmd('object-del', {'id': 'group1'})

    v.unexport('throttle0')
    v.blockdev_del('throttle0')

    v.cmd('object-del', {'id': 'group0'})


def test_misc_drivers():
    """The seed's five sections in one daemon. A section whose driver or
    object does not exist yet is skipped (the seed skips the whole case
    without quorum or throttle); the others still run and must pass, and
    the case then reports a skip naming the missing sections."""
    sections = [_misc_quorum, _misc_blkdebug, _misc_null, _misc_file, _misc_throttle]
    skipped = []
    while sections:
        with vm() as v:
            while sections:
                section = sections.pop(0)
                try:
                    section(v)
                except Skip as e:
                    # Go on with the other sections in a fresh daemon (this
                    # one holds the skipped section's nodes).
                    skipped.append('%s: %s' % (section.__name__, e))
                    break
    if skipped:
        raise Skip('; '.join(skipped))


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
