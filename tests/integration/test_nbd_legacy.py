#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""nbd-server-add and nbd-server-remove, the legacy NBD export commands.

The export name and id default to the device; 'description' and 'bitmap'
reach the client (nbdinfo); a read-only node is exported read-only even
with writable=true; data written through the export is checked with qemu-io
on the image after the daemon has gone; an export that the legacy command
added moves onto a snapshot overlay like any other. QEMU's refusals with
qemu-storage-daemon 7.2's texts. Every test passes against it."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, qemu_io,  # noqa: E402
                         require_nbd, require_tool, run, tests_of)

MiB = 1024 * 1024


def start(d):
    img = d.path('a.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, str(4 * MiB)])
    qemu_io(img, 'write -P 0x11 0 1M', fmt='qcow2')
    d.start()
    q = d.qmp()
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                               'file': {'driver': 'file', 'filename': img}})
    return q, img


def nbdinfo(d, name, *extra):
    out = run(['nbdinfo', '--json'] + list(extra) + [d.uri(name)]).stdout
    return json.loads(out)['exports'][0]


def test_add_defaults_and_io():
    require_nbd()
    require_tool('nbdinfo')
    with Daemon() as d:
        q, img = start(d)
        err = q.error('nbd-server-add', {'device': 'disk'})
        assert_eq(err['desc'], 'NBD server not running', 'without a server')
        # The device is looked up first, as QEMU (found by tests/diff).
        err = q.error('nbd-server-add', {'device': 'nope'})
        assert_eq(err['desc'], "Cannot find device='nope' nor node-name='nope'",
                  'unknown device without a server')
        # The node is taken (sharing everything) before the server is
        # checked; a conflict is the one QEMU names first.
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f2', 'filename': img,
                                   'locking': 'off'})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'q2', 'file': 'f2',
                                   'read-only': True})
        err = q.error('nbd-server-add', {'device': 'f2'})
        assert_eq(err['desc'], 'NBD server not running', 'read-only export of a file node')
        err = q.error('nbd-server-add', {'device': 'f2', 'writable': True})
        assert_eq(err['desc'], "Permission conflict on node 'f2': permissions 'write' are "
                               "both required by an unnamed block device (uses node 'f2' as "
                               "'root' child) and unshared by node 'q2' (uses node 'f2' as "
                               "'file' child).", 'writable export under a format node')
        q.execute('blockdev-del', {'node-name': 'q2'})
        q.execute('blockdev-del', {'node-name': 'f2'})
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'b0'})
        q.execute('nbd-server-add', {'device': 'disk', 'writable': True,
                                     'description': 'the disk', 'bitmap': 'b0'})
        exps = q.execute('query-block-exports')
        assert_eq([(e['id'], e['node-name'], e['type']) for e in exps],
                  [('disk', 'disk', 'nbd')], 'id defaults to the device')
        info = nbdinfo(d, 'disk', '--list')
        assert_eq(info['export-name'], 'disk', 'name defaults to the device')
        assert_eq(info.get('description'), 'the disk', 'description')
        assert_eq(info['is_read_only'], False, 'writable')
        assert_in('qemu:dirty-bitmap:b0', info['contexts'], 'bitmap context')
        qemu_io(d.uri('disk'), 'write -P 0x22 1M 64k', 'read -P 0x11 0 1M')
        err = q.error('nbd-server-add', {'device': 'disk'})
        assert_eq(err['desc'], "Block export id 'disk' is already in use", 'same id')
        q.execute('nbd-server-add', {'device': 'disk', 'name': 'second'})
        assert_eq(nbdinfo(d, 'second')['is_read_only'], True, 'read-only by default')
        q.execute('nbd-server-remove', {'name': 'second'})
        q.wait_event('BLOCK_EXPORT_DELETED', match={'id': 'second'})
        q.execute('nbd-server-remove', {'name': 'disk', 'mode': 'hard'})
        q.wait_event('BLOCK_EXPORT_DELETED', match={'id': 'disk'})
        assert_eq(q.execute('query-block-exports'), [], 'all removed')
        q.execute('quit')
        d.proc.wait(30)
        qemu_io(img, 'read -P 0x22 1M 64k', fmt='qcow2')
        run(['qemu-img', 'check', '-q', img])


def test_read_only_node_downgrades():
    require_nbd()
    require_tool('nbdinfo')
    with Daemon() as d:
        img = d.path('ro.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, str(MiB)])
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ro', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': img}})
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('nbd-server-add', {'device': 'ro', 'name': 'x', 'writable': True})
        assert_eq(nbdinfo(d, 'x')['is_read_only'], True, 'downgraded to read-only')
        p = qemu_io(d.uri('x'), 'write -P 1 0 4k', check=False)
        assert p.returncode != 0 or 'failed' in p.stdout.lower(), 'write refused'


def test_errors():
    require_nbd()
    with Daemon() as d:
        q, _ = start(d)
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        cases = [
            ({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'device': 'disk', 'bitmap': 'nob'}, "Bitmap 'nob' is not found"),
            ({'device': 'disk', 'name': ''}, 'Invalid block export id'),
        ]
        for args, desc in cases:
            assert_eq(q.error('nbd-server-add', args)['desc'], desc, str(args))
        assert_eq(q.error('nbd-server-add', {})['desc'], "Parameter 'device' is missing",
                  'no device')
        assert_eq(q.error('nbd-server-remove', {'name': 'nope'})['desc'],
                  "Export 'nope' is not found", 'unknown export')
        assert_eq(q.error('nbd-server-remove', {'name': 'x', 'mode': 'bogus'})['desc'],
                  "Parameter 'mode' does not accept value 'bogus'", 'bad mode')
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'disk',
                                       'name': 'e1name'})
        # nbd-server-remove takes the export id, not its NBD name.
        assert_eq(q.error('nbd-server-remove', {'name': 'e1name'})['desc'],
                  "Export 'e1name' is not found", 'by NBD name')
        q.execute('nbd-server-remove', {'name': 'e1'})
        q.wait_event('BLOCK_EXPORT_DELETED', match={'id': 'e1'})


def test_export_follows_snapshot():
    """An export added the legacy way moves onto a snapshot overlay."""
    require_nbd()
    with Daemon() as d:
        q, img = start(d)
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('nbd-server-add', {'device': 'disk', 'writable': True})
        ov = d.path('ov.qcow2')
        q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': ov,
                                             'snapshot-node-name': 'ov'})
        assert_eq(q.execute('query-block-exports')[0]['node-name'], 'ov', 'moved')
        qemu_io(d.uri('disk'), 'write -P 0x33 0 64k', 'read -P 0x11 64k 64k')
        q.execute('quit')
        d.proc.wait(30)
        qemu_io(img, 'read -P 0x11 0 1M', fmt='qcow2')
        qemu_io(ov, 'read -P 0x33 0 64k', fmt='qcow2')
        run(['qemu-img', 'check', '-q', ov])


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
