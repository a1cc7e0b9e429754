#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""External snapshots: blockdev-snapshot and blockdev-snapshot-sync, alone
and as transaction actions, under a live NBD export.

A qcow2 image 'disk' is exported over NBD by its node name; a snapshot puts
an overlay on top of it and the export moves onto the overlay (QEMU's
bdrv_append replaces the node in all its parents), so writes after the
snapshot land in the overlay and the base keeps the data of the snapshot
time. Data is checked outside the daemon with qemu-io and qemu-img compare,
overlays with qemu-img check, the chain with qemu-img info --backing-chain.
Failed transactions leave the graph as before. Also QEMU's refusals, with
the texts of qemu-storage-daemon 7.2 (iotests 085's blockdev-snapshot cases
and 118-style snapshot-sync cases that a daemon can reach). Every test
passes against qemu-storage-daemon."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, qemu_io,  # noqa: E402
                         require_nbd, run, tests_of)

MiB = 1024 * 1024
SIZE = 4 * MiB


class Env:
    """'disk' (qcow2 on base.qcow2, 0x11 in its first MiB) exported as 'disk'."""

    def __init__(self, d, second=False):
        self.d = d
        self.base = d.path('base.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', self.base, str(SIZE)])
        qemu_io(self.base, 'write -P 0x11 0 1M', fmt='qcow2')
        if second:
            self.base2 = d.path('base2.qcow2')
            run(['qemu-img', 'create', '-q', '-f', 'qcow2', self.base2, str(SIZE)])
        d.start()
        self.q = d.qmp()
        self.q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                     'data': {'path': d.nbd_sock}}})
        self.add('disk', self.base)
        self.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'disk',
                                            'name': 'disk', 'writable': True})
        if second:
            self.add('disk2', self.base2)

    def add(self, name, path, **extra):
        o = {'driver': 'qcow2', 'node-name': name,
             'file': {'driver': 'file', 'filename': path}}
        o.update(extra)
        self.q.execute('blockdev-add', o)

    def nodes(self):
        return {n['node-name']: n for n in self.q.execute('query-named-block-nodes')}

    def export_node(self):
        return self.q.execute('query-block-exports')[0]['node-name']

    def stop(self):
        self.q.execute('quit')
        assert_eq(self.d.proc.wait(30), 0, 'exit status')


def daemon():
    require_nbd()
    return Daemon()


def chain_of(img):
    info = json.loads(run(['qemu-img', 'info', '--backing-chain', '--output=json',
                           img]).stdout)
    return [(os.path.basename(i['filename']), i.get('backing-filename-format'))
            for i in info]


def test_snapshot_sync_under_export():
    """118-style: snapshot-sync of the exported node; later writes go to
    the overlay, the base keeps the snapshot-time data."""
    with daemon() as d:
        e = Env(d)
        uri = d.uri('disk')
        qemu_io(uri, 'write -P 0x22 1M 1M')
        ov = d.path('ov.qcow2')
        e.q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': ov,
                                               'snapshot-node-name': 'ov'})
        assert_eq(e.export_node(), 'ov', 'the export moved to the overlay')
        nodes = e.nodes()
        assert_eq(nodes['ov']['backing_file'], e.base, 'overlay backing file')
        assert_eq(nodes['disk']['ro'], True, 'the old image is read-only')
        qemu_io(uri, 'write -P 0x33 0 512k', 'read -P 0x33 0 512k', 'read -P 0x11 512k 512k',
                'read -P 0x22 1M 1M', 'read -P 0 2M 2M')
        e.stop()
        assert_eq(chain_of(ov), [('ov.qcow2', 'qcow2'), ('base.qcow2', None)], 'chain')
        run(['qemu-img', 'check', '-q', ov])
        run(['qemu-img', 'check', '-q', e.base])
        qemu_io(e.base, 'read -P 0x11 0 1M', 'read -P 0x22 1M 1M', 'read -P 0 2M 2M',
                fmt='qcow2')
        qemu_io(ov, 'read -P 0x33 0 512k', 'read -P 0x11 512k 512k', fmt='qcow2')
        ref = d.path('ref.raw')
        run(['qemu-img', 'create', '-q', '-f', 'raw', ref, str(SIZE)])
        qemu_io(ref, 'write -P 0x11 0 1M', 'write -P 0x22 1M 1M', 'write -P 0x33 0 512k')
        run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', ov, ref])


def test_snapshot_sync_chain_of_three():
    """Two snapshots in a row: base <- s1 <- s2, each with its own data."""
    with daemon() as d:
        e = Env(d)
        uri = d.uri('disk')
        s1, s2 = d.path('s1.qcow2'), d.path('s2.qcow2')
        e.q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': s1,
                                               'snapshot-node-name': 's1', 'format': 'qcow2'})
        qemu_io(uri, 'write -P 0x44 1M 64k')
        e.q.execute('blockdev-snapshot-sync', {'node-name': 's1', 'snapshot-file': s2,
                                               'snapshot-node-name': 's2',
                                               'mode': 'absolute-paths'})
        qemu_io(uri, 'write -P 0x55 2M 64k')
        assert_eq(e.export_node(), 's2', 'export node')
        e.stop()
        assert_eq([c[0] for c in chain_of(s2)], ['s2.qcow2', 's1.qcow2', 'base.qcow2'],
                  'chain')
        for img in (s1, s2):
            run(['qemu-img', 'check', '-q', img])
        qemu_io(s1, 'read -P 0x44 1M 64k', 'read -P 0 2M 64k', fmt='qcow2')
        qemu_io(s2, 'read -P 0x11 0 1M', 'read -P 0x44 1M 64k', 'read -P 0x55 2M 64k',
                fmt='qcow2')


def test_snapshot_sync_existing():
    """mode=existing opens an image the user made (backing named inside)."""
    with daemon() as d:
        e = Env(d)
        ov = d.path('ov.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', e.base, '-F', 'qcow2', ov])
        e.q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': ov,
                                               'snapshot-node-name': 'ov',
                                               'mode': 'existing'})
        qemu_io(d.uri('disk'), 'write -P 0x66 0 64k', 'read -P 0x11 64k 64k')
        e.stop()
        run(['qemu-img', 'check', '-q', ov])
        qemu_io(e.base, 'read -P 0x11 0 1M', fmt='qcow2')
        qemu_io(ov, 'read -P 0x66 0 64k', 'read -P 0x11 64k 64k', fmt='qcow2')


def test_blockdev_snapshot_under_export():
    """085: blockdev-snapshot with an overlay added without backing."""
    with daemon() as d:
        e = Env(d)
        ov = d.path('ov.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', e.base, '-F', 'qcow2', ov])
        e.add('ov', ov, backing=None)
        e.q.execute('blockdev-snapshot', {'node': 'disk', 'overlay': 'ov'})
        assert_eq(e.export_node(), 'ov', 'export node')
        assert_eq(e.nodes()['ov']['backing_file'], e.base, 'backing')
        err = e.q.error('blockdev-snapshot', {'node': 'disk', 'overlay': 'ov'})
        assert_eq(err['desc'], "Node 'disk' is busy: node is used as backing hd of 'ov'",
                  'snapshot of a backing node')
        qemu_io(d.uri('disk'), 'write -P 0x77 3M 64k', 'read -P 0x11 0 1M')
        e.stop()
        run(['qemu-img', 'check', '-q', ov])
        qemu_io(ov, 'read -P 0x77 3M 64k', 'read -P 0x11 0 1M', fmt='qcow2')
        qemu_io(e.base, 'read -P 0 3M 64k', fmt='qcow2')


def test_blockdev_snapshot_errors():
    """085's refusals and QEMU's texts."""
    with daemon() as d:
        e = Env(d)
        ov = d.path('ov.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', ov, str(SIZE)])
        e.add('ov', ov, file={'driver': 'file', 'node-name': 'ov-file', 'filename': ov})
        raw = d.path('r.raw')
        run(['qemu-img', 'create', '-q', '-f', 'raw', raw, str(SIZE)])
        e.q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                     'file': {'driver': 'file', 'filename': raw}})
        e.q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg'})
        ov3 = d.path('ov3.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', ov3, str(SIZE)])
        e.q.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'thr',
                                     'throttle-group': 'tg',
                                     'file': {'driver': 'qcow2', 'node-name': 'ov3',
                                              'file': {'driver': 'file', 'filename': ov3}}})
        cases = [
            ({'node': 'nope', 'overlay': 'ov'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'node': 'disk', 'overlay': 'nope'},
             "Cannot find device='nope' nor node-name='nope'"),
            ({'node': 'disk', 'overlay': 'disk'}, "The overlay is already in use"),
            ({'node': 'ov', 'overlay': 'ov'},
             "Making 'ov' a backing child of 'ov' would create a cycle"),
            ({'node': 'ov', 'overlay': 'r'}, 'The overlay does not support backing images'),
            # Read as an image by its qcow2 parent (QEMU 7.2 looks at the
            # parents' consistent-read permission; found by tests/diff).
            ({'node': 'ov', 'overlay': 'ov-file'}, 'The overlay is already in use'),
            ({'node': 'ov', 'overlay': 'thr'}, 'Filters cannot be used as overlays'),
        ]
        for args, desc in cases:
            assert_eq(e.q.error('blockdev-snapshot', args)['desc'], desc, str(args))
        err = e.q.error('blockdev-snapshot', {'node': 'disk'})
        assert_eq(err['desc'], "Parameter 'overlay' is missing", 'missing overlay')
        # An overlay that already has a backing image (iotest 085).
        ov2 = d.path('ov2.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', ov2, str(SIZE)])
        e.add('ov2', ov2, backing='r')
        err = e.q.error('blockdev-snapshot', {'node': 'ov', 'overlay': 'ov2'})
        assert_eq(err['desc'], 'The overlay already has a backing image', 'backing present')
        assert_eq(e.export_node(), 'disk', 'nothing changed')
        assert_eq(e.nodes()['disk']['ro'], False, 'still writable')
        qemu_io(d.uri('disk'), 'write -P 0x12 0 64k')
        e.stop()
        qemu_io(e.base, 'read -P 0x12 0 64k', fmt='qcow2')


def test_snapshot_sync_errors():
    """blockdev-snapshot-sync's refusals, as qemu-storage-daemon answers."""
    with daemon() as d:
        e = Env(d)
        f = d.path('s.qcow2')
        before = sorted(e.nodes())
        cases = [
            ({'snapshot-file': f}, "Cannot find device='' nor node-name=''"),
            ({'device': 'nope', 'snapshot-file': f},
             "Cannot find device='nope' nor node-name=''"),
            # No named block backends in a storage daemon.
            ({'device': 'disk', 'snapshot-file': f},
             "Cannot find device='disk' nor node-name=''"),
            ({'node-name': 'disk', 'snapshot-file': f}, 'New overlay node-name missing'),
            ({'node-name': 'disk', 'snapshot-file': f, 'snapshot-node-name': 'disk'},
             'New overlay node-name already in use'),
            ({'node-name': 'disk', 'snapshot-file': f, 'snapshot-node-name': 'x',
              'format': 'bogus'}, "Unknown file format 'bogus'"),
            ({'node-name': 'disk', 'snapshot-file': d.path('none.qcow2'),
              'snapshot-node-name': 'x', 'mode': 'existing'},
             "Could not open '%s': No such file or directory" % d.path('none.qcow2')),
            ({'node-name': 'disk', 'snapshot-file': '/nonexistent/s.qcow2',
              'snapshot-node-name': 'x'},
             "Could not create '/nonexistent/s.qcow2': No such file or directory"),
        ]
        for args, desc in cases:
            assert_eq(e.q.error('blockdev-snapshot-sync', args)['desc'], desc, str(args))
        err = e.q.error('blockdev-snapshot-sync', {'node-name': 'disk',
                                                   'snapshot-node-name': 'x'})
        assert_eq(err['desc'], "Parameter 'snapshot-file' is missing", 'missing file')
        err = e.q.error('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': f,
                                                   'snapshot-node-name': 'x',
                                                   'mode': 'relative'})
        assert_in("'mode'", err['desc'], 'bad mode')
        assert_eq(e.export_node(), 'disk', 'nothing changed')
        assert_eq(sorted(e.nodes()), before, 'no new nodes')
        e.stop()


def test_transaction_two_snapshots():
    """Both kinds in one transaction, each on its own disk."""
    with daemon() as d:
        e = Env(d, second=True)
        s1 = d.path('s1.qcow2')
        ov2 = d.path('ov2.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', e.base2, '-F', 'qcow2', ov2])
        e.add('ov2', ov2, backing=None)
        e.q.execute('transaction', {'actions': [
            {'type': 'blockdev-snapshot-sync',
             'data': {'node-name': 'disk', 'snapshot-file': s1, 'snapshot-node-name': 's1'}},
            {'type': 'blockdev-snapshot', 'data': {'node': 'disk2', 'overlay': 'ov2'}},
        ]})
        assert_eq(e.export_node(), 's1', 'export node')
        nodes = e.nodes()
        assert_eq(nodes['ov2']['backing_file'], e.base2, 'disk2 overlay')
        assert_eq(nodes['disk']['ro'], True, 'disk read-only')
        assert_eq(nodes['disk2']['ro'], True, 'disk2 read-only')
        qemu_io(d.uri('disk'), 'write -P 0x21 0 64k')
        e.stop()
        run(['qemu-img', 'check', '-q', s1])
        run(['qemu-img', 'check', '-q', ov2])
        qemu_io(e.base, 'read -P 0x11 0 64k', fmt='qcow2')
        qemu_io(s1, 'read -P 0x21 0 64k', fmt='qcow2')


def test_transaction_rollback():
    """A later failing action undoes the snapshots already prepared: the
    export stays on 'disk', the overlay node is gone, writes reach base."""
    with daemon() as d:
        e = Env(d, second=True)
        s1 = d.path('s1.qcow2')
        ov2 = d.path('ov2.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', ov2, str(SIZE)])
        e.add('ov2', ov2, backing=None)
        before = sorted(e.nodes())
        for failing, desc in [
                ({'type': 'blockdev-snapshot', 'data': {'node': 'nope', 'overlay': 'x'}},
                 "Cannot find device='nope' nor node-name='nope'"),
                ({'type': 'block-dirty-bitmap-add', 'data': {'node': 'disk', 'name': 'b',
                                                             'granularity': 3}},
                 'Granularity must be power of 2 and at least 512'),
                ({'type': 'blockdev-backup', 'data': {'device': 'disk2', 'target': 'nope',
                                                      'sync': 'full'}},
                 "Cannot find device='nope' nor node-name='nope'")]:
            err = e.q.error('transaction', {'actions': [
                {'type': 'blockdev-snapshot-sync',
                 'data': {'node-name': 'disk', 'snapshot-file': s1,
                          'snapshot-node-name': 's1'}},
                {'type': 'blockdev-snapshot', 'data': {'node': 'disk2', 'overlay': 'ov2'}},
                failing]})
            assert_eq(err['desc'], desc, 'failing action')
            assert_eq(e.export_node(), 'disk', 'export back on disk')
            nodes = e.nodes()
            assert_eq(sorted(nodes), before, 'graph as before')
            assert_eq(nodes['ov2'].get('backing_file'), None, 'ov2 without backing again')
            assert_eq(nodes['disk']['ro'], False, 'disk writable')
            assert_eq(nodes['disk2']['ro'], False, 'disk2 writable')
        err = e.q.error('transaction', {'actions': [
            {'type': 'blockdev-snapshot-sync',
             'data': {'node-name': 'disk', 'snapshot-file': s1, 'snapshot-node-name': 's1'}}],
            'properties': {'completion-mode': 'grouped'}})
        assert_eq(err['desc'], "Action 'blockdev-snapshot-sync' does not support "
                  'Transaction property completion-mode = grouped', 'grouped')
        qemu_io(d.uri('disk'), 'write -P 0x13 0 64k')
        # The overlay can be used once the failed attempts are over.
        e.q.execute('blockdev-snapshot', {'node': 'disk2', 'overlay': 'ov2'})
        e.stop()
        qemu_io(e.base, 'read -P 0x13 0 64k', fmt='qcow2')
        run(['qemu-img', 'check', '-q', e.base])


def test_transaction_with_backup():
    """blockdev-backup of the point in time together with a snapshot: the
    backup copies the base as it was, the guest writes to the overlay."""
    with daemon() as d:
        e = Env(d)
        tgt = d.path('backup.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', tgt, str(SIZE)])
        e.add('tgt', tgt)
        s1 = d.path('s1.qcow2')
        e.q.execute('transaction', {'actions': [
            {'type': 'blockdev-backup', 'data': {'job-id': 'b0', 'device': 'disk',
                                                 'target': 'tgt', 'sync': 'full'}},
            {'type': 'blockdev-snapshot-sync',
             'data': {'node-name': 'disk', 'snapshot-file': s1,
                      'snapshot-node-name': 's1'}}]})
        e.q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        qemu_io(d.uri('disk'), 'write -P 0x99 0 64k')
        e.stop()
        run(['qemu-img', 'compare', tgt, e.base])
        qemu_io(s1, 'read -P 0x99 0 64k', fmt='qcow2')


def test_connection_stays_across_snapshot():
    """One NBD connection open across the snapshot: its requests after the
    snapshot are served by the overlay, nothing is lost or refused."""
    import nbd
    with daemon() as d:
        e = Env(d)
        h = nbd.NBD()
        h.connect_uri(d.uri('disk'))
        h.pwrite(b'\x44' * 65536, 0)
        h.flush()
        ov = d.path('ov.qcow2')
        e.q.execute('blockdev-snapshot-sync', {'node-name': 'disk', 'snapshot-file': ov,
                                               'snapshot-node-name': 'ov'})
        h.pwrite(b'\x55' * 65536, 65536)
        assert_eq(h.pread(65536, 0), b'\x44' * 65536, 'old data through the overlay')
        assert_eq(h.pread(65536, 65536), b'\x55' * 65536, 'new data')
        h.flush()
        h.shutdown()
        e.stop()
        qemu_io(e.base, 'read -P 0x44 0 64k', 'read -P 0x11 64k 64k', fmt='qcow2')
        qemu_io(ov, 'read -P 0x44 0 64k', 'read -P 0x55 64k 64k', fmt='qcow2')
        run(['qemu-img', 'check', '-q', ov])


def test_snapshot_of_node_under_job():
    """A node a stream job works on refuses a snapshot (QEMU's op blocker)."""
    with daemon() as d:
        base, top = d.path('b.qcow2'), d.path('t.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, str(SIZE)])
        qemu_io(base, 'write -P 0x11 0 4M', fmt='qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top])
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': 1024})
        err = q.error('blockdev-snapshot-sync', {'node-name': 'top', 'snapshot-node-name': 's',
                                                 'snapshot-file': d.path('s.qcow2')})
        assert_eq(err['desc'], "Node 'top' is busy: block device is in use by block job: "
                  'stream', 'snapshot under a job')
        q.execute('block-job-cancel', {'device': 's0'})
        q.wait_event('BLOCK_JOB_CANCELLED')
        q.execute('blockdev-snapshot-sync', {'node-name': 'top', 'snapshot-node-name': 's',
                                             'snapshot-file': d.path('s.qcow2')})


def test_transaction_with_drive_backup():
    """drive-backup and a snapshot in one transaction; then the same with a
    failing third action: no job is left and the graph is as before."""
    with daemon() as d:
        e = Env(d)
        tgt, s1 = d.path('backup.qcow2'), d.path('s1.qcow2')
        before = sorted(e.nodes())
        err = e.q.error('transaction', {'actions': [
            {'type': 'drive-backup', 'data': {'job-id': 'b0', 'device': 'disk',
                                              'target': tgt, 'sync': 'full'}},
            {'type': 'blockdev-snapshot-sync',
             'data': {'node-name': 'disk', 'snapshot-file': s1, 'snapshot-node-name': 's1'}},
            {'type': 'blockdev-snapshot', 'data': {'node': 'nope', 'overlay': 'x'}}]})
        assert_eq(err['desc'], "Cannot find device='nope' nor node-name='nope'", 'failed')
        assert_eq(e.export_node(), 'disk', 'export on disk')
        assert_eq(sorted(e.nodes()), before, 'graph as before')
        assert_eq(e.q.execute('query-block-jobs'), [], 'no job left')
        e.q.execute('transaction', {'actions': [
            {'type': 'drive-backup', 'data': {'job-id': 'b1', 'device': 'disk',
                                              'target': tgt, 'sync': 'full'}},
            {'type': 'blockdev-snapshot-sync',
             'data': {'node-name': 'disk', 'snapshot-file': s1, 'snapshot-node-name': 's1'}}]})
        e.q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        qemu_io(d.uri('disk'), 'write -P 0x98 0 64k')
        e.stop()
        run(['qemu-img', 'check', '-q', tgt])
        run(['qemu-img', 'compare', tgt, e.base])
        qemu_io(s1, 'read -P 0x98 0 64k', 'read -P 0x11 64k 64k', fmt='qcow2')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
