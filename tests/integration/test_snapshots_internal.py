#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""qcow2 internal snapshots: blockdev-snapshot-internal-sync and
blockdev-snapshot-delete-internal-sync (also as transaction actions) with
QEMU's errors; snapshots made by qemu-img kept intact through writes,
zeroes, discards and resizes; snapshots made by blockd listed, applied and
deleted by qemu-img and the other way round.  Every step is followed by
qemu-img check (no errors, no leaks) and the data of every snapshot is
read back (qemu-img convert -l, qemu-img snapshot -a) and checked with
qemu-io read -P."""

import json
import os
import random
import shutil
import signal
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, is_reference, main, qemu_io,  # noqa: E402
                         require_nbd, require_tool, run, tests_of,
                         wait_for)

MiB = 1 << 20


def start(d, img, extra=(), node_opts=',discard=unmap'):
    """The daemon with qcow2 node 'disk' on 'img', exported as 'disk'."""
    d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
              '--blockdev', 'driver=qcow2,node-name=disk,file=f0%s' % node_opts,
              '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
              '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on'] \
        + list(extra) + d.args
    d.wait = [d.nbd_sock]
    d.start()
    return d.qmp()


def check(img, share=False):
    """qemu-img check: no errors and no leaks (-U while the daemon has the
    image open: only between operations, when everything is on disk)."""
    argv = ['qemu-img', 'check'] + (['-U'] if share else []) + [img]
    p = run(argv, check=False)
    if p.returncode != 0 or 'leaked' in p.stdout:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s' % (img, p.returncode, p.stdout,
                                                                  p.stderr))


def snapshot_names(img):
    info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', img]).stdout)
    return [(s['id'], s['name']) for s in info.get('snapshots', [])]


def snapshot_content(d, img, snap, reads):
    """The snapshot 'snap' of 'img' read with qemu-img convert -l, then
    each of 'reads' (qemu-io read -P commands) checked on it."""
    out = d.path('snap-%s.raw' % snap)
    run(['qemu-img', 'convert', '-U', '-l', 'snapshot.name=%s' % snap, '-O', 'raw', img, out])
    qemu_io(out, *reads)
    os.unlink(out)


def nbd_io(d, *cmds):
    return qemu_io(d.uri(), *cmds)


def txn(*actions):
    return {'actions': [{'type': t, 'data': a} for t, a in actions]}


def test_qemu_img_snapshots_survive_blockd_io():
    """Snapshots made by qemu-img (plain, zero and compressed clusters)
    stay intact while blockd writes over them, writes zeroes, discards
    and grows the image: shared clusters are copied on write, qemu-img
    check stays clean, and each snapshot still reads its own data."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '8M'])
        qemu_io(img, 'write -P 0x11 0 3M', 'write -c -P 0x22 4M 64k', 'write -z 5M 64k',
                fmt='qcow2')
        run(['qemu-img', 'snapshot', '-c', 'before', img])
        qemu_io(img, 'write -P 0x33 1M 1M', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-c', 'middle', img])
        q = start(d, img)
        nbd_io(d, 'write -P 0x44 0 8k', 'write -P 0x45 6000 10000', 'write -z 64k 64k',
               'discard 128k 64k', 'write -P 0x46 4M 4k', 'write -P 0x47 5M 4k',
               'write -P 0x48 1536k 4k', 'write -z -u 2M 256k')
        # Growing the L1 table with snapshots (not while exported: the
        # export does not share 'resize').
        q.execute('block-export-del', {'id': 'e0'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        q.execute('block_resize', {'node-name': 'disk', 'size': 16 * MiB})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'disk',
                                       'name': 'disk', 'writable': True})
        nbd_io(d, 'write -P 0x49 12M 1M')
        d.stop()
        check(img)
        snapshot_content(d, img, 'before', ['read -P 0x11 0 3M', 'read -P 0 3M 1M',
                                            'read -P 0x22 4M 64k', 'read -P 0 5M 3M'])
        snapshot_content(d, img, 'middle', ['read -P 0x11 0 1M', 'read -P 0x33 1M 1M',
                                            'read -P 0x11 2M 1M', 'read -P 0x22 4M 64k'])
        qemu_io(img, 'read -P 0x44 0 6000', 'read -P 0x45 6000 10000', 'read -P 0x11 16000 48k',
                'read -P 0 64k 128k', 'read -P 0x11 192k 832k', 'read -P 0x33 1M 512k',
                'read -P 0x48 1536k 4k', 'read -P 0 2M 256k', 'read -P 0x46 4M 4k',
                'read -P 0x22 4100k 60k', 'read -P 0x47 5M 4k', 'read -P 0x49 12M 1M',
                fmt='qcow2')
        assert_eq(snapshot_names(img), [('1', 'before'), ('2', 'middle')], 'snapshots')
        # Deleting them frees what only they used (compressed clusters
        # included): no leak, the active image unchanged.
        d.args = d.args[d.args.index('--chardev'):]
        q = start(d, img)
        q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'disk', 'name': 'before'})
        check(img, share=True)
        q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'disk', 'id': '2'})
        d.stop()
        check(img)
        assert_eq(snapshot_names(img), [], 'all deleted')
        qemu_io(img, 'read -P 0x44 0 6000', 'read -P 0x33 1M 512k', 'read -P 0x22 4100k 60k',
                'read -P 0x49 12M 1M', fmt='qcow2')


def test_create_then_qemu_img_lists_and_applies():
    """A snapshot taken with blockdev-snapshot-internal-sync while the
    image is exported: later writes do not reach it; qemu-img lists it,
    reads it and applies it (snapshot -a), and deletes it, with qemu-img
    check clean after every step."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '4M'])
        q = start(d, img)
        nbd_io(d, 'write -P 0x61 0 1M', 'write -P 0x62 3M 64k')
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': 'snap1'})
        check(img, share=True)
        nbd_io(d, 'write -P 0x63 512k 1M', 'write -z 3M 64k')
        info = q.execute('query-named-block-nodes', {'flat': True})
        disk = [n for n in info if n['node-name'] == 'disk'][0]
        snaps = disk['image']['snapshots']
        assert_eq([(s['id'], s['name'], s['vm-state-size']) for s in snaps],
                  [('1', 'snap1', 0)], 'snapshots in query-named-block-nodes')
        assert_eq('icount' in snaps[0], False, 'no icount')
        d.stop()
        check(img)
        assert_eq(snapshot_names(img), [('1', 'snap1')], 'qemu-img sees the snapshot')
        snapshot_content(d, img, 'snap1', ['read -P 0x61 0 1M', 'read -P 0 1M 2M',
                                           'read -P 0x62 3M 64k'])
        qemu_io(img, 'read -P 0x61 0 512k', 'read -P 0x63 512k 1M', 'read -P 0 3M 64k',
                fmt='qcow2')
        run(['qemu-img', 'snapshot', '-a', 'snap1', img])
        check(img)
        qemu_io(img, 'read -P 0x61 0 1M', 'read -P 0x62 3M 64k', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-d', 'snap1', img])
        check(img)
        qemu_io(img, 'read -P 0x61 0 1M', 'read -P 0x62 3M 64k', fmt='qcow2')
        assert_eq(snapshot_names(img), [], 'no snapshots left')


def test_delete_qemu_img_snapshots():
    """Snapshots made by qemu-img deleted by blockd (by name, by id, by
    both): the reply is the deleted SnapshotInfo, the other snapshots
    and the active image keep their data, and qemu-img check finds no
    leak (the clusters only the deleted snapshot used are freed)."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '4M'])
        for i, pat in enumerate((0x71, 0x72, 0x73)):
            qemu_io(img, 'write -P %#x %dk 256k' % (pat, i * 512), 'write -P %#x 2M 64k' % pat,
                    fmt='qcow2')
            run(['qemu-img', 'snapshot', '-c', 's%d' % i, img])
        qemu_io(img, 'write -P 0x74 2M 64k', fmt='qcow2')
        q = start(d, img)
        r = q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'disk', 'name': 's1'})
        assert_eq((r['id'], r['name'], r['vm-state-size']), ('2', 's1', 0), 'deleted info')
        assert_in('date-sec', r)
        assert_in('vm-clock-nsec', r)
        check(img, share=True)
        nbd_io(d, 'write -P 0x75 0 64k')
        r = q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'disk', 'id': '3'})
        assert_eq(r['name'], 's2', 'deleted by id')
        check(img, share=True)
        err = q.error('blockdev-snapshot-delete-internal-sync',
                      {'device': 'disk', 'id': '2', 'name': 's1'})
        assert_eq(err['desc'], "Snapshot with id '2' and name 's1' does not exist on "
                  "device 'disk'", 'error')
        d.stop()
        check(img)
        assert_eq(snapshot_names(img), [('1', 's0')], 'left')
        snapshot_content(d, img, 's0', ['read -P 0x71 0 256k', 'read -P 0 256k 1792k',
                                        'read -P 0x71 2M 64k'])
        qemu_io(img, 'read -P 0x75 0 64k', 'read -P 0x71 64k 192k', 'read -P 0x72 512k 256k',
                'read -P 0x73 1M 256k', 'read -P 0x74 2M 64k', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-d', 's0', img])
        check(img)


def test_random_writes_between_snapshots():
    """Random writes, zeroes and discards over NBD, with snapshots taken
    and deleted in between (a small cluster size: several L2 tables,
    shared and copied): at the end every remaining snapshot reads as the
    model of the image when it was taken, and the image as the model."""
    require_tool('qemu-img', 'qemu-io')
    require_nbd()
    import nbd
    size = 4 * MiB
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=1024', img, str(size)])
        q = start(d, img)
        h = nbd.NBD()
        h.connect_uri(d.uri())
        rnd = random.Random(18)
        model = bytearray(size)
        taken = {}
        for step in range(12):
            for _ in range(40):
                off = rnd.randrange(0, size - 1) & ~511
                n = min(size - off, rnd.choice((512, 1024, 3000, 8192, 70000)))
                kind = rnd.random()
                if kind < 0.7:
                    data = bytes([rnd.randrange(1, 256)]) * n
                    h.pwrite(data, off)
                    model[off:off + n] = data
                elif kind < 0.85:
                    h.zero(n, off)
                    model[off:off + n] = bytes(n)
                else:
                    # Whole clusters only: a partial one keeps its data.
                    off &= ~1023
                    n = max(1024, n & ~1023)
                    h.trim(n, off)
                    model[off:off + n] = bytes(n)
            name = 'sn%d' % step
            q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': name})
            taken[name] = bytes(model)
            if step % 3 == 2:
                victim = rnd.choice(sorted(taken))
                q.execute('blockdev-snapshot-delete-internal-sync',
                          {'device': 'disk', 'name': victim})
                del taken[victim]
            if not is_reference():
                # blockd has everything on disk after a snapshot command;
                # qemu-storage-daemon may keep freed refcounts cached.
                check(img, share=True)
        h.shutdown()
        d.stop()
        check(img)
        assert_eq(sorted(n for _, n in snapshot_names(img)), sorted(taken), 'snapshots')
        for name, content in taken.items():
            out = d.path('%s.raw' % name)
            run(['qemu-img', 'convert', '-l', 'snapshot.name=%s' % name, '-O', 'raw', img, out])
            with open(out, 'rb') as f:
                got = f.read()
            if got != content:
                bad = [i for i in range(0, size, 512) if got[i:i + 512] != content[i:i + 512]]
                raise AssertionError('snapshot %s differs from its model at %d sectors, '
                                     'first at %#x' % (name, len(bad), bad[0] * 1))
        out = d.path('active.raw')
        run(['qemu-img', 'convert', '-O', 'raw', img, out])
        with open(out, 'rb') as f:
            assert_eq(f.read() == model, True, 'active image equals the model')


def test_snapshots_during_writes():
    """Snapshots taken while a client writes: a writer fills 4 KiB blocks
    in order, each with its own pattern, while snapshots are taken; each
    snapshot is a point in time (the blocks written form a prefix, each
    whole), and qemu-img check is clean."""
    require_tool('qemu-img')
    require_nbd()
    import nbd
    import threading
    blocks = 512
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '2M'])
        q = start(d, img)
        stop = threading.Event()
        errors = []
        progress = [0]

        def pattern(i):
            return bytes([(i % 254) + 1]) * 4096

        def writer():
            try:
                h = nbd.NBD()
                h.connect_uri(d.uri())
                for i in range(blocks):
                    h.pwrite(pattern(i), i * 4096)
                    progress[0] = i + 1
                    if stop.is_set():
                        break
                h.shutdown()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        names = []
        for k in range(8):
            name = 'w%d' % k
            # Spread over the writer's run (a snapshot waits for no
            # particular number of blocks: any prefix is right).
            wait_for(lambda: progress[0] >= (k + 1) * blocks // 10 or errors or not t.is_alive(),
                     timeout=60, what='writer progress')
            q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': name})
            names.append(name)
        t.join(60)
        stop.set()
        assert_eq(errors, [], 'writer errors')
        d.stop()
        check(img)
        for name in names:
            out = d.path('%s.raw' % name)
            run(['qemu-img', 'convert', '-l', 'snapshot.name=%s' % name, '-O', 'raw', img, out])
            with open(out, 'rb') as f:
                data = f.read()
            n = 0
            while n < blocks and data[n * 4096:(n + 1) * 4096] == pattern(n):
                n += 1
            if data[n * 4096:] != bytes(len(data) - n * 4096):
                raise AssertionError('snapshot %s: blocks 0..%d written, then not all zero'
                                     % (name, n - 1))


def test_create_errors():
    """blockdev-snapshot-internal-sync refuses, with QEMU's texts: an
    unknown device, a node that is not a root, a format without internal
    snapshots, a read-only device, an empty name, a name already taken
    (by qemu-img)."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = d.path('a.qcow2')
        raw = d.path('r.raw')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '1M'])
        run(['qemu-img', 'snapshot', '-c', 'old', img])
        run(['qemu-img', 'create', '-f', 'raw', raw, '1M'])
        ro = d.path('ro.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', ro, '1M'])
        q = start(d, img, extra=[
            '--blockdev', 'driver=file,node-name=rf,filename=%s' % raw,
            '--blockdev', 'driver=raw,node-name=r,file=rf',
            '--blockdev', 'driver=file,node-name=rof,filename=%s,read-only=on' % ro,
            '--blockdev', 'driver=qcow2,node-name=ro,file=rof,read-only=on'])
        cases = [
            ({'device': 'nope', 'name': 'x'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'device': 'f0', 'name': 'x'}, 'Need a root block node'),
            ({'device': 'r', 'name': 'x'},
             "Block format 'raw' used by device 'r' does not support internal snapshots"),
            ({'device': 'ro', 'name': 'x'}, "Device 'ro' is read only"),
            ({'device': 'disk', 'name': ''}, 'Name is empty'),
            ({'device': 'disk', 'name': 'old'},
             "Snapshot with name 'old' already exists on device 'disk'"),
        ]
        for args, desc in cases:
            err = q.error('blockdev-snapshot-internal-sync', args)
            assert_eq((err['class'], err['desc']), ('GenericError', desc), repr(args))
        err = q.error('blockdev-snapshot-internal-sync', {'device': 'disk'})
        assert_eq(err['desc'], "Parameter 'name' is missing", 'missing name')
        # A name that looks like an id is a name: it gets the next id.
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': '1'})
        d.stop()
        check(img)
        assert_eq(snapshot_names(img), [('1', 'old'), ('2', '1')], 'snapshots')


def test_delete_errors():
    """blockdev-snapshot-delete-internal-sync refuses, with QEMU's texts:
    neither id nor name, an unknown snapshot (named 'null' where not
    given), id and name of different snapshots, a format without
    snapshots; on a read-only node the table cannot be rewritten."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = d.path('a.qcow2')
        raw = d.path('r.raw')
        ro = d.path('ro.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '1M'])
        run(['qemu-img', 'snapshot', '-c', 'a', img])
        run(['qemu-img', 'snapshot', '-c', 'b', img])
        run(['qemu-img', 'create', '-f', 'raw', raw, '1M'])
        run(['qemu-img', 'create', '-f', 'qcow2', ro, '1M'])
        run(['qemu-img', 'snapshot', '-c', 'a', ro])
        q = start(d, img, extra=[
            '--blockdev', 'driver=file,node-name=rf,filename=%s' % raw,
            '--blockdev', 'driver=raw,node-name=r,file=rf',
            '--blockdev', 'driver=file,node-name=rof,filename=%s,read-only=on' % ro,
            '--blockdev', 'driver=qcow2,node-name=ro,file=rof,read-only=on'])
        cases = [
            ({'device': 'disk'}, 'Name or id must be provided'),
            ({'device': 'disk', 'id': '9'},
             "Snapshot with id '9' and name 'null' does not exist on device 'disk'"),
            ({'device': 'disk', 'name': 'zz'},
             "Snapshot with id 'null' and name 'zz' does not exist on device 'disk'"),
            ({'device': 'disk', 'id': '1', 'name': 'b'},
             "Snapshot with id '1' and name 'b' does not exist on device 'disk'"),
            ({'device': 'r', 'name': 'a'},
             'Failed to get a snapshot list: Operation not supported'),
            ({'device': 'f0', 'name': 'a'}, 'Need a root block node'),
            ({'device': 'ro', 'name': 'a'},
             'Failed to remove snapshot from snapshot list: Operation not permitted'),
        ]
        for args, desc in cases:
            err = q.error('blockdev-snapshot-delete-internal-sync', args)
            assert_eq((err['class'], err['desc']), ('GenericError', desc), repr(args))
        d.stop()
        check(img)
        check(ro)
        assert_eq(snapshot_names(img), [('1', 'a'), ('2', 'b')], 'nothing deleted')
        assert_eq(snapshot_names(ro), [('1', 'a')], 'nothing deleted (read-only)')


def test_transaction_actions():
    """blockdev-snapshot-internal-sync as a transaction action: two
    devices at once; with an 'abort' action or a failing action after
    it, the snapshots already taken are deleted again (no leak)."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        img2 = d.path('b.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '1M'])
        run(['qemu-img', 'create', '-f', 'qcow2', img2, '1M'])
        qemu_io(img, 'write -P 0x81 0 64k', fmt='qcow2')
        q = start(d, img, extra=[
            '--blockdev', 'driver=file,node-name=f1,filename=%s' % img2,
            '--blockdev', 'driver=qcow2,node-name=disk2,file=f1'])
        snap = 'blockdev-snapshot-internal-sync'
        err = q.error('transaction', txn((snap, {'device': 'disk', 'name': 't1'}),
                                         ('abort', {})))
        assert_eq(err['desc'], 'Transaction aborted using Abort action', 'abort')
        err = q.error('transaction', txn((snap, {'device': 'disk', 'name': 't1'}),
                                         (snap, {'device': 'disk2', 'name': 't1'}),
                                         (snap, {'device': 'disk', 'name': 't1'})))
        assert_eq(err['desc'], "Snapshot with name 't1' already exists on device 'disk'",
                  'second snapshot of the same name')
        check(img, share=True)
        check(img2, share=True)
        assert_eq(snapshot_names(img), [], 'rolled back')
        assert_eq(snapshot_names(img2), [], 'rolled back (second device)')
        err = q.error('transaction', {'actions': [
            {'type': snap, 'data': {'device': 'disk', 'name': 'g'}}],
            'properties': {'completion-mode': 'grouped'}})
        assert_eq(err['desc'], "Action 'blockdev-snapshot-internal-sync' does not support "
                  "Transaction property completion-mode = grouped", 'grouped')
        q.execute('transaction', txn((snap, {'device': 'disk', 'name': 't2'}),
                                     (snap, {'device': 'disk2', 'name': 't2'})))
        nbd_io(d, 'write -P 0x82 0 64k')
        d.stop()
        check(img)
        check(img2)
        assert_eq(snapshot_names(img), [('1', 't2')], 'committed')
        assert_eq(snapshot_names(img2), [('1', 't2')], 'committed (second device)')
        snapshot_content(d, img, 't2', ['read -P 0x81 0 64k'])
        qemu_io(img, 'read -P 0x82 0 64k', fmt='qcow2')


def test_snapshots_with_bitmaps_and_reopen():
    """A persistent dirty bitmap, a snapshot, writes, then delete: the
    bitmap and the snapshot table live side by side (qemu-img check
    clean, the bitmap stored on close, the snapshot data intact)."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '4M'])
        qemu_io(img, 'write -P 0x91 0 1M', fmt='qcow2')
        q = start(d, img)
        q.execute('block-dirty-bitmap-add', {'node': 'disk', 'name': 'bm', 'persistent': True})
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': 'a'})
        nbd_io(d, 'write -P 0x92 64k 64k')
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': 'b'})
        nbd_io(d, 'write -P 0x93 128k 64k')
        q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'disk', 'name': 'a'})
        d.stop()
        check(img)
        info = json.loads(run(['qemu-img', 'info', '--output=json', img]).stdout)
        bitmaps = info['format-specific']['data'].get('bitmaps', [])
        assert_eq([b['name'] for b in bitmaps], ['bm'], 'bitmap stored')
        assert_eq(snapshot_names(img), [('2', 'b')], 'snapshots')
        snapshot_content(d, img, 'b', ['read -P 0x91 0 64k', 'read -P 0x92 64k 64k',
                                       'read -P 0x91 128k 896k'])


def test_lazy_refcounts_crash_with_snapshots():
    """lazy-refcounts=on, a snapshot taken and writes over it, then
    SIGKILL: the image is left dirty; the next open rebuilds the
    refcounts counting the snapshots' tables too (and COPIED), after
    which qemu-img check is clean and both the snapshot and the active
    image read their data."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'lazy_refcounts=on,cluster_size=4096',
             img, '4M'])
        qemu_io(img, 'write -P 0xa1 0 1M', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-c', 'old', img])
        q = start(d, img)
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': 'new'})
        nbd_io(d, 'write -P 0xa2 0 64k', 'write -P 0xa3 2M 64k', 'write -z 512k 64k')
        d.signal(signal.SIGKILL)
        d.wait_exit()
        d.proc = None
        info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', img]).stdout)
        assert_eq(info['dirty-flag'], True, 'left dirty')
        d.args = d.args[d.args.index('--chardev'):]
        start(d, img)
        d.stop()
        check(img)
        assert_eq(snapshot_names(img), [('1', 'old'), ('2', 'new')], 'snapshots')
        snapshot_content(d, img, 'old', ['read -P 0xa1 0 1M', 'read -P 0 1M 3M'])
        snapshot_content(d, img, 'new', ['read -P 0xa1 0 1M', 'read -P 0 1M 3M'])
        qemu_io(img, 'read -P 0xa2 0 64k', 'read -P 0xa1 64k 448k', 'read -P 0 512k 64k',
                'read -P 0xa3 2M 64k', fmt='qcow2')


def test_v2_image_with_snapshots():
    """A compat=0.10 image: snapshots are taken and deleted (no extra
    data needed to read them back), and block_resize is refused with
    QEMU's text while it has snapshots."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('v2.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=0.10', img, '1M'])
        qemu_io(img, 'write -P 0xb1 0 64k', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-c', 'old', img])
        q = start(d, img, node_opts='')
        # Without the export, which does not share 'resize'.
        q.execute('block-export-del', {'id': 'e0'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        err = q.error('block_resize', {'node-name': 'disk', 'size': 2 * MiB})
        assert_eq(err['desc'], "Can't resize a v2 image which has snapshots", 'resize')
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'disk',
                                       'name': 'disk', 'writable': True})
        q.execute('blockdev-snapshot-internal-sync', {'device': 'disk', 'name': 'new'})
        nbd_io(d, 'write -P 0xb2 0 4k')
        q.execute('blockdev-snapshot-delete-internal-sync', {'device': 'disk', 'name': 'old'})
        d.stop()
        check(img)
        assert_eq(snapshot_names(img), [('2', 'new')], 'snapshots')
        snapshot_content(d, img, 'new', ['read -P 0xb1 0 64k'])
        qemu_io(img, 'read -P 0xb2 0 4k', 'read -P 0xb1 4k 60k', fmt='qcow2')


def _corrupt(d, name, edit):
    """A copy of a one-snapshot image with 'edit(buf, table_offset)'
    applied to its bytes."""
    base = d.path('base.qcow2')
    if not os.path.exists(base):
        run(['qemu-img', 'create', '-f', 'qcow2', base, '1M'])
        run(['qemu-img', 'snapshot', '-c', 's1', base])
    path = d.path(name)
    shutil.copy(base, path)
    with open(path, 'r+b') as f:
        buf = bytearray(f.read())
        off = struct.unpack('>Q', buf[64:72])[0]
        edit(buf, off)
        f.seek(0)
        f.write(buf)
    return path


def test_corrupt_snapshot_tables():
    """Corrupt snapshot tables: opening refuses an unaligned table, too
    many snapshots and too much extra data with QEMU's texts; a broken
    snapshot L1 table is refused when the snapshot is deleted.  The
    daemon stays up."""
    require_tool('qemu-img')
    with Daemon() as d:
        d.start()
        q = d.qmp()
        opens = [
            ('unal.qcow2', lambda b, o: b.__setitem__(slice(64, 72), struct.pack('>Q', o + 8)),
             'Snapshot table offset invalid'),
            ('many.qcow2', lambda b, o: b.__setitem__(slice(60, 64), struct.pack('>I', 70000)),
             'Snapshot table too large'),
            ('extra.qcow2',
             lambda b, o: b.__setitem__(slice(o + 36, o + 40), struct.pack('>I', 2000)),
             'Too much extra metadata in snapshot table entry 0'),
        ]
        for name, edit, desc in opens:
            path = _corrupt(d, name, edit)
            err = q.error('blockdev-add', {'driver': 'qcow2', 'node-name': 'n',
                                           'file': {'driver': 'file', 'filename': path}})
            assert_in(desc, err['desc'], name)
        deletes = [
            ('l1.qcow2', lambda b, o: b.__setitem__(slice(o, o + 8), struct.pack('>Q', 0x30008)),
             'Snapshot L1 table offset invalid'),
            ('l1big.qcow2',
             lambda b, o: b.__setitem__(slice(o + 8, o + 12), struct.pack('>I', 0x10000000)),
             'Snapshot L1 table too large'),
        ]
        for i, (name, edit, desc) in enumerate(deletes):
            path = _corrupt(d, name, edit)
            node = 'c%d' % i
            q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': node,
                                       'file': {'driver': 'file', 'filename': path}})
            err = q.error('blockdev-snapshot-delete-internal-sync',
                          {'device': node, 'name': 's1'})
            assert_eq(err['desc'], desc, name)
            q.execute('blockdev-del', {'node-name': node})
        d.assert_alive()


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
