#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Backup sessions (x-blockd-backup-begin/-end, x-blockd-query-backups): a
pull backup's fleecing graph made and torn down as one thing.  Guests write
through a writable NBD export 'guest' (libnbd) and a FUSE export of the same
qcow2 node while backups are pulled with nbdcopy (full) and libnbd
(block_status on qemu:dirty-bitmap:<since>, then pread of the dirty ranges,
written into a qcow2 overlay with qemu-io).  Every restored point is checked
with qemu-img compare against an image the test built itself from the writes
it knows were done before the session began.  blockd's own commands: no run
against qemu-storage-daemon."""

import contextlib
import glob
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, check_image, force_unmount,  # noqa: E402
                         is_mounted, main, make_image, nbd_connection, qcow2_image, qemu_io,
                         require_fuse, require_nbd, require_tool, run, skip_if_reference,
                         start_qcow2, tests_of, wait_for)

KiB, MiB = 1 << 10, 1 << 20
SIZE = 64 * MiB
CL = 64 * KiB


def setup():
    skip_if_reference("x-blockd-backup-* are blockd's own commands")
    require_tool('qemu-img', 'qemu-io', 'nbdcopy')
    require_nbd()
    d = Daemon()
    # The daemon's $TMPDIR (where automatic fleecing targets go) is its
    # own: tests running in parallel must not see each other's files.
    os.makedirs(d.path('tmp'))
    os.environ['TMPDIR'] = d.path('tmp')
    return d


def backup_dirs():
    """Whatever is in the daemon's $TMPDIR (blockd-backup-XXXXXX
    directories while a begin is under way)."""
    return set(glob.glob(os.path.join(os.environ['TMPDIR'], '*')))


def start(d, img, nbd=True, guest=True):
    """The daemon with qcow2 node 'disk' (on f0), the NBD server and a
    writable export 'guest' of 'disk'; returns a QMP client."""
    q = start_qcow2(d, img, export=False)
    if nbd:
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
    if nbd and guest:
        q.execute('block-export-add', {'type': 'nbd', 'id': 'guest', 'node-name': 'disk',
                                       'name': 'guest', 'writable': True})
    return q


def begin(q, id, **kw):
    args = {'node': 'disk', 'id': id}
    args.update({k.replace('_', '-'): v for k, v in kw.items()})
    q.execute('x-blockd-backup-begin', args)


def sessions(q):
    return q.execute('x-blockd-query-backups')


def node_names(q):
    return [n['node-name'] for n in q.execute('query-named-block-nodes', {'flat': True})]


def export_ids(q):
    return sorted(e['id'] for e in q.execute('query-block-exports'))


def chain(q):
    return [(c['name'], c['usable']) for c in q.execute('x-blockd-checkpoint-list',
                                                         {'node': 'disk'})]


def assert_clean(q, exports=('guest',), what=''):
    """No session, no backup-* node, only `exports` left, nothing in the
    daemon's $TMPDIR."""
    assert_eq(sessions(q), [], what + ': query-backups')
    assert_eq([n for n in node_names(q) if n.startswith('backup-')], [], what + ': backup nodes')
    assert_eq(export_ids(q), sorted(exports), what + ': exports')
    assert_eq(backup_dirs(), set(), what + ': files in $TMPDIR')


def pattern_data(pat, length):
    return bytes([pat]) * length


class Disk:
    """What the test knows of the source: a reference copy in memory that
    the test's own writes are replayed into, in order."""

    def __init__(self):
        self.ref = bytearray(SIZE)
        self.lock = threading.Lock()
        self.written = set()    # clusters written since the last mark()

    def apply(self, off, data):
        with self.lock:
            self.ref[off:off + len(data)] = data
            for c in range(off // CL, (off + len(data) - 1) // CL + 1):
                self.written.add(c)

    def mark(self):
        """Clusters written since the previous mark()."""
        with self.lock:
            w, self.written = self.written, set()
        return w

    def save(self, path):
        with self.lock, open(path, 'wb') as f:
            f.write(self.ref)
        return path


def random_writes(rng, n, pat_base):
    """n writes of whole clusters or odd pieces at random places."""
    out = []
    for i in range(n):
        off = rng.randrange(0, SIZE // CL) * CL + rng.choice([0, 0, 512, 4096])
        length = rng.choice([4096, CL, 3 * CL, 100 * KiB])
        length = min(length, SIZE - off)
        out.append((off, pattern_data((pat_base + i) % 255 + 1, length)))
    return out


class Writers:
    """Two writers on 'disk' at once: libnbd on the 'guest' NBD export and
    pwrite on the FUSE mount.  Each applies its writes to `disk` once done
    (the regions of the two never overlap: NBD the lower half, FUSE the
    upper half, so the order between them does not matter)."""

    def __init__(self, d, disk, mnt, rng, n, pat_base):
        self.errors = []
        ws = random_writes(rng, 2 * n, pat_base)
        self.nbd_writes = [(o % (SIZE // 2 - 2 * MiB), b) for o, b in ws[:n]]
        self.fuse_writes = [(SIZE // 2 + o % (SIZE // 2 - 2 * MiB), b) for o, b in ws[n:]]
        self.threads = [threading.Thread(target=self._nbd, args=(d, disk)),
                        threading.Thread(target=self._fuse, args=(mnt, disk))]

    def _nbd(self, d, disk):
        try:
            with nbd_connection(d.uri('guest')) as h:
                for off, data in self.nbd_writes:
                    h.pwrite(data, off)
                    disk.apply(off, data)
                    time.sleep(0.005)
                h.flush()
        except Exception as e:  # noqa: BLE001
            self.errors.append('nbd writer: %r' % e)

    def _fuse(self, mnt, disk):
        try:
            fd = os.open(mnt, os.O_RDWR)
            try:
                for off, data in self.fuse_writes:
                    assert_eq(os.pwrite(fd, data, off), len(data), 'fuse pwrite')
                    disk.apply(off, data)
                    time.sleep(0.005)
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception as e:  # noqa: BLE001
            self.errors.append('fuse writer: %r' % e)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        for t in self.threads:
            t.join(60)
        if a[0] is None and self.errors:
            raise AssertionError('; '.join(self.errors))


def write_known(d, disk, writes):
    """Writes through the 'guest' export, done before the caller goes on."""
    with nbd_connection(d.uri('guest')) as h:
        for off, data in writes:
            h.pwrite(data, off)
            disk.apply(off, data)
        h.flush()


def dirty_extents(h, ctx):
    """(offset, length) of the dirty extents of meta context `ctx`."""
    out = []
    off = 0
    while off < SIZE:
        got = []

        def cb(metacontext, offset, entries, err):
            if metacontext == ctx:
                got.append(list(entries))
            return 0
        h.block_status(min(SIZE - off, 1 << 30), off, cb)
        entries = got[0]
        pos = off
        for i in range(0, len(entries), 2):
            length, flags = entries[i], entries[i + 1]
            if flags & 1:
                if out and out[-1][0] + out[-1][1] == pos:
                    out[-1] = (out[-1][0], out[-1][1] + length)
                else:
                    out.append((pos, length))
            pos += length
        off = pos
    return out


def pull_incremental(d, export, since, backing, overlay, backing_fmt):
    """Read the dirty ranges of the session's export with libnbd and write
    them into a new qcow2 overlay of `backing` with qemu-io; returns the
    extents."""
    ctx = 'qemu:dirty-bitmap:' + since
    run(['qemu-img', 'create', '-f', 'qcow2', '-b', backing, '-F', backing_fmt, overlay,
         str(SIZE)])
    cmds = []
    with nbd_connection(d.uri(export), meta_contexts=[ctx]) as h:
        assert h.can_meta_context(ctx), 'export %s lacks %s' % (export, ctx)
        extents = dirty_extents(h, ctx)
        for i, (off, length) in enumerate(extents):
            buf = h.pread(length, off)
            piece = d.path('%s.piece%d' % (export, i))
            with open(piece, 'wb') as f:
                f.write(buf)
            cmds.append('write -s %s %d %d' % (piece, off, length))
    for i in range(0, len(cmds), 200):
        qemu_io(overlay, *cmds[i:i + 200], fmt='qcow2')
    for i in range(len(cmds)):
        os.unlink(d.path('%s.piece%d' % (export, i)))
    return extents


def clusters_of(extents):
    out = set()
    for off, length in extents:
        out.update(range(off // CL, (off + length - 1) // CL + 1))
    return out


def compare(a, fmt_a, b, fmt_b, what):
    p = run(['qemu-img', 'compare', '-f', fmt_a, '-F', fmt_b, a, b], check=False)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare %s %s: rc %d\n%s%s'
                             % (what, a, b, p.returncode, p.stdout, p.stderr))


def verify_view(d, export, expected):
    """The whole point-in-time view, copied by nbdcopy, equals the
    image the test expects."""
    out = d.path('view-%s.raw' % export)
    run(['nbdcopy', d.uri(export), out], timeout=60)
    compare(out, 'raw', expected, 'raw', 'view of %s after the writers' % export)
    os.unlink(out)


def deleted_fleece_fds(pid):
    """The daemon's open files that are unlinked automatic targets."""
    out = []
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            t = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        except OSError:
            continue
        if t.startswith(os.path.join(os.environ['TMPDIR'], 'blockd-backup-')) and \
                t.endswith('/fleece.qcow2 (deleted)'):
            out.append(t)
    return out


@contextlib.contextmanager
def fuse_on_disk(q, d, id='fuse0'):
    mnt = d.path('fuse.img')
    open(mnt, 'w').close()
    q.execute('block-export-add', {'type': 'fuse', 'id': id, 'node-name': 'disk',
                                   'mountpoint': mnt, 'writable': True})
    try:
        wait_for(lambda: is_mounted(mnt), what='FUSE mount')
        yield mnt
    finally:
        force_unmount(mnt)


# --- 1, 2: full and incremental backups while the guest writes ---

def test_full_and_incrementals_with_writers():
    """s1 (full, new c1), s2 (since c1, new c2), s3 (since c2): each pulled
    while an NBD and a FUSE writer write; the restored chain's points equal
    the images the test built from the writes done before each begin.
    Then 'since c1' while c2 exists is the union of both increments."""
    with setup() as d:
        require_fuse()
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        rng = random.Random(1234)
        disk = Disk()
        with fuse_on_disk(q, d) as mnt:
            assert_eq(export_ids(q), ['fuse0', 'guest'], 'exports')
            write_known(d, disk, random_writes(rng, 60, 1))
            disk.mark()
            expected = [disk.save(d.path('expect0.raw'))]

            # s1: full backup, pulled by nbdcopy while both exports write.
            begin(q, 's1', new_checkpoint='c1')
            assert_eq(sessions(q)[0]['dirty-bytes'], SIZE, 'full: dirty-bytes')
            with Writers(d, disk, mnt, rng, 40, 70):
                run(['nbdcopy', d.uri('s1'), d.path('full.raw')], timeout=60)
            # Every write of the writers is done now: the view must not
            # show one of them.
            verify_view(d, 's1', expected[0])
            assert_eq(chain(q), [('c1', True)], 'c1 made')
            q.execute('x-blockd-backup-end', {'id': 's1'})
            q.wait_event('BLOCKD_BACKUP_END', match={'id': 's1', 'reason': 'ended'})
            compare(d.path('full.raw'), 'raw', expected[0], 'raw', 'full backup s1')
            assert_clean(q, ('fuse0', 'guest'), 'after s1')

            # Between sessions: more writes (known), then s2 since c1.
            write_known(d, disk, random_writes(rng, 30, 130))
            changed_c1_c2 = disk.mark()
            expected.append(disk.save(d.path('expect1.raw')))
            begin(q, 's2', since='c1', new_checkpoint='c2')
            inc1 = d.path('inc1.qcow2')
            with Writers(d, disk, mnt, rng, 40, 170):
                ext = pull_incremental(d, 's2', 'c1', d.path('full.raw'), inc1, 'raw')
            verify_view(d, 's2', expected[1])
            during_s2 = disk.mark()
            # Exactly what was written between c1 and s2's begin; what the
            # writers wrote during the pull belongs to c2.
            assert_eq(sorted(clusters_of(ext)), sorted(changed_c1_c2), 'dirty clusters since c1')
            info = sessions(q)[0]
            assert_eq(info['dirty-bytes'], sum(n for _, n in ext), 's2 dirty-bytes = bitmap count')
            q.execute('x-blockd-backup-end', {'id': 's2'})
            compare(inc1, 'qcow2', expected[1], 'raw', 'incremental s2 (since c1)')
            assert_eq(chain(q), [('c1', True), ('c2', True)], 'c2 made')

            # s3 since c2 gets exactly what was written during s2's pull
            # plus what is written now.
            write_known(d, disk, random_writes(rng, 10, 220))
            changed_c2 = during_s2 | disk.mark()
            expected.append(disk.save(d.path('expect2.raw')))
            begin(q, 's3', since='c2')
            inc2 = d.path('inc2.qcow2')
            with Writers(d, disk, mnt, rng, 20, 240):
                ext = pull_incremental(d, 's3', 'c2', inc1, inc2, 'qcow2')
            verify_view(d, 's3', expected[2])
            assert_eq(sorted(clusters_of(ext)), sorted(changed_c2), 'dirty clusters since c2')
            q.execute('x-blockd-backup-end', {'id': 's3'})
            compare(inc2, 'qcow2', expected[2], 'raw', 'incremental s3 (since c2)')
            # The middle point of the chain is still right.
            compare(inc1, 'qcow2', expected[1], 'raw', 'incremental s2 after s3')

            # 2: since c1 while c2 exists: the union, on top of full.raw.
            during_s3 = disk.mark()
            expected.append(disk.save(d.path('expect3.raw')))
            begin(q, 's4', since='c1')
            union = d.path('union.qcow2')
            ext = pull_incremental(d, 's4', 'c1', d.path('full.raw'), union, 'raw')
            assert_eq(sorted(clusters_of(ext)), sorted(changed_c1_c2 | changed_c2 | during_s3),
                      'dirty clusters since c1 with c2 present: the union')
            q.execute('x-blockd-backup-end', {'id': 's4'})
            compare(union, 'qcow2', expected[3], 'raw', 'since c1 with c2 present')
            q.execute('block-export-del', {'id': 'fuse0', 'mode': 'hard'})
            q.wait_event('BLOCK_EXPORT_DELETED', match={'id': 'fuse0'})
        assert_clean(q, ('guest',), 'end')
        assert_eq(d.stop(), 0, 'exit status')
        check_image(img)
        for p in (inc1, inc2, union):
            check_image(p)
        compare(img, 'qcow2', expected[3], 'raw', 'source after stop')


# --- 3, 4, 5: the ways a session ends ---

def test_lease_expiry():
    """lease-seconds 2 with no client: lease-expired within ~5 s, nothing
    left; the guest export still writes to the source.  A connected client
    keeps a session past its lease; after it leaves the lease runs out."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        t0 = time.monotonic()
        begin(q, 'l1', lease_seconds=2)
        info = sessions(q)[0]
        assert_eq((info['lease-seconds'], info['clients']), (2, False), 'query')
        ev = q.wait_event('BLOCKD_BACKUP_END', timeout=6, match={'id': 'l1'})
        took = time.monotonic() - t0
        assert_eq(ev['data']['reason'], 'lease-expired', 'reason')
        assert 1.5 <= took <= 5.5, 'lease of 2 s expired after %.1f s' % took
        assert_clean(q, ('guest',), 'after lease expiry')
        qemu_io(d.uri('guest'), 'write -P 0x3c 1M 64k')
        qemu_io(d.uri('guest'), 'read -P 0x3c 1M 64k')

        begin(q, 'l2', lease_seconds=1)
        with nbd_connection(d.uri('l2')) as h:
            time.sleep(3.5)
            assert_eq([s['id'] for s in sessions(q)], ['l2'], 'client keeps the session')
            assert_eq(sessions(q)[0]['clients'], True, 'clients')
            assert_eq(h.pread(64 * KiB, 1 * MiB), pattern_data(0x3c, 64 * KiB), 'view data')
            assert not [e for e in q.events if e['event'] == 'BLOCKD_BACKUP_END'], q.events
        t1 = time.monotonic()
        ev = q.wait_event('BLOCKD_BACKUP_END', timeout=6, match={'id': 'l2'})
        assert_eq(ev['data']['reason'], 'lease-expired', 'reason after disconnect')
        assert_eq(ev['data']['bytes-read'], 64 * KiB, 'bytes-read in the end event')
        assert time.monotonic() - t1 <= 4.5, 'expired late'
        assert_clean(q, ('guest',), 'after second lease')
        assert_eq(d.stop(), 0, 'exit')
        qemu_io(img, 'read -P 0x3c 1M 64k', fmt='qcow2')
        check_image(img)


def test_end_with_client_connected():
    """backup-end while a client reads: the client is cut off, everything
    is gone, the guest export keeps working."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        qemu_io(d.uri('guest'), 'write -P 0x11 0 1M')
        begin(q, 'e1', new_checkpoint='c1')
        nbd = require_nbd()
        h = nbd.NBD()
        h.connect_uri(d.uri('e1'))
        try:
            assert_eq(h.pread(4096, 0), pattern_data(0x11, 4096), 'view before end')
            wait_for(lambda: sessions(q)[0]['clients'], what='clients true')
            q.execute('x-blockd-backup-end', {'id': 'e1'})
            ev = q.wait_event('BLOCKD_BACKUP_END', match={'id': 'e1'})
            assert_eq((ev['data']['reason'], ev['data']['bytes-read']), ('ended', 4096), 'event')
            try:
                h.pread(4096, 0)
            except nbd.Error:
                pass
            else:
                raise AssertionError('read through an ended session succeeded')
        finally:
            del h
        assert_clean(q, ('guest',), 'after end')
        assert_eq(chain(q), [('c1', True)], 'checkpoint stays')
        qemu_io(d.uri('guest'), 'write -P 0x22 0 64k', 'read -P 0x22 0 64k',
                'read -P 0x11 64k 960k')
        e = q.error('x-blockd-backup-end', {'id': 'e1'})
        assert_eq(e['desc'], "Backup session 'e1' not found", 'end twice')
        assert_eq(d.stop(), 0, 'exit')
        check_image(img)


def test_export_deleted_by_hand():
    """block-export-del of the session's export ends the session
    (export-deleted) and cleans up."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        begin(q, 's1', export_name='other-name')
        assert_eq(sessions(q)[0]['export-name'], 'other-name', 'export-name')
        qemu_io(d.uri('other-name'), 'read -P 0 0 64k', extra=['-r'])
        q.execute('block-export-del', {'id': 's1', 'mode': 'hard'})
        ev = q.wait_event('BLOCKD_BACKUP_END', timeout=5, match={'id': 's1'})
        assert_eq(ev['data']['reason'], 'export-deleted', 'reason')
        assert_clean(q, ('guest',), 'after export-del')
        qemu_io(d.uri('guest'), 'write -P 0x44 0 64k', 'read -P 0x44 0 64k')
        # The id is free again.
        begin(q, 's1')
        q.execute('x-blockd-backup-end', {'id': 's1'})
        assert_clean(q, ('guest',), 'after reuse')
        assert_eq(d.stop(), 0, 'exit')
        check_image(img)


# --- 6: quit and crash ---

def test_quit_and_sigkill():
    """quit with a session: exit 0, BLOCKD_BACKUP_END shutdown, no temporary
    directory left.  SIGKILL with a session: no temporary file either;
    after the restart the chain is unusable, 'since' is refused and a full
    session works."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        qemu_io(d.uri('guest'), 'write -P 0x55 0 2M')
        begin(q, 'q1', new_checkpoint='c1')
        assert_eq(backup_dirs(), set(), 'temp dir unlinked at once')
        assert_eq(len(deleted_fleece_fds(d.proc.pid)), 1, 'the open, unlinked target')
        assert_in('backup-q1-fleece', node_names(q), 'auto target node')
        q.execute('quit')
        ev = q.wait_event('BLOCKD_BACKUP_END', timeout=10, match={'id': 'q1'})
        assert_eq(ev['data']['reason'], 'shutdown', 'reason')
        assert_eq(d.wait_exit(), 0, 'exit status after quit')
        assert_eq(backup_dirs(), set(), 'no $TMPDIR/blockd-backup-* after quit')
        check_image(img)

        q = start(d, img)
        assert_eq(chain(q), [('c1', True)], 'chain after clean quit')
        qemu_io(d.uri('guest'), 'write -P 0x66 4M 64k')
        begin(q, 'k1', since='c1', new_checkpoint='c2')
        with nbd_connection(d.uri('k1'), meta_contexts=['qemu:dirty-bitmap:c1']) as h:
            assert_eq(dirty_extents(h, 'qemu:dirty-bitmap:c1'), [(4 * MiB, 64 * KiB)], 'dirty')
        qemu_io(d.uri('guest'), 'write -P 0x77 8M 64k')
        assert_eq(len(deleted_fleece_fds(d.proc.pid)), 1, 'the open, unlinked target')
        d.signal(signal.SIGKILL)
        d.wait_exit()
        assert_eq(backup_dirs(), set(), 'no $TMPDIR/blockd-backup-* after SIGKILL')
        check_image(img)

        q = start(d, img)
        assert_eq(chain(q), [('c1', False), ('c2', False)], 'chain unusable after crash')
        e = q.error('x-blockd-backup-begin', {'node': 'disk', 'id': 'k2', 'since': 'c2'})
        assert_in('not usable', e['desc'], 'since after crash')
        assert_in('take a full backup', e['desc'], 'since after crash')
        assert_clean(q, ('guest',), 'after refused since')
        begin(q, 'k2', new_checkpoint='c3')
        run(['nbdcopy', d.uri('k2'), d.path('full.raw')])
        q.execute('x-blockd-backup-end', {'id': 'k2'})
        qemu_io(d.path('full.raw'), 'read -P 0x55 0 2M', 'read -P 0x66 4M 64k',
                'read -P 0x77 8M 64k', 'read -P 0 9M 1M')
        assert_eq(chain(q), [('c1', False), ('c2', False), ('c3', True)], 'fresh chain')
        assert_eq(d.stop(), 0, 'exit')
        assert_eq(backup_dirs(), set(), 'no $TMPDIR/blockd-backup-* at the end')
        check_image(img)


# --- 7: progress ---

def test_progress_and_query():
    """Reading through the export: BLOCKD_BACKUP_PROGRESS with growing
    bytes-read; query-backups' bytes-read and dirty-bytes (bitmap count for
    an incremental, the node size for a full one)."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        begin(q, 'p1', new_checkpoint='c1')
        info = sessions(q)[0]
        assert_eq({k: info[k] for k in ('id', 'node', 'export-name', 'new-checkpoint',
                                         'fleecing-target', 'dirty-bytes', 'bytes-read',
                                         'clients')},
                  {'id': 'p1', 'node': 'disk', 'export-name': 'p1', 'new-checkpoint': 'c1',
                   'fleecing-target': 'backup-p1-fleece', 'dirty-bytes': SIZE,
                   'bytes-read': 0, 'clients': False}, 'query full')
        assert 'since' not in info and 'lease-seconds' not in info, info
        with nbd_connection(d.uri('p1')) as h:
            seen = []
            for i in range(3):
                h.pread(1 * MiB, i * MiB)
                ev = q.wait_event('BLOCKD_BACKUP_PROGRESS', timeout=4, match={'id': 'p1'})
                seen.append(ev['data']['bytes-read'])
                assert_eq(ev['data']['dirty-bytes'], SIZE, 'progress dirty-bytes')
            assert_eq(seen, [1 * MiB, 2 * MiB, 3 * MiB], 'progress bytes-read')
            assert_eq(sessions(q)[0]['bytes-read'], 3 * MiB, 'query bytes-read')
        time.sleep(1.5)
        assert not [e for e in q.events if e['event'] == 'BLOCKD_BACKUP_PROGRESS'], \
            'progress without reads: %r' % q.events
        q.execute('x-blockd-backup-end', {'id': 'p1'})
        ev = q.wait_event('BLOCKD_BACKUP_END', match={'id': 'p1'})
        assert_eq(ev['data'], {'id': 'p1', 'reason': 'ended', 'dirty-bytes': SIZE,
                               'bytes-read': 3 * MiB}, 'end event')

        qemu_io(d.uri('guest'), 'write -P 1 0 64k', 'write -P 2 10M 192k')
        begin(q, 'p2', since='c1')
        info = sessions(q)[0]
        assert_eq((info['since'], info['dirty-bytes']), ('c1', 256 * KiB), 'query incremental')
        assert_eq([c['dirty-bytes'] for c in q.execute('x-blockd-checkpoint-list',
                                                      {'node': 'disk'})],
                  [256 * KiB], 'checkpoint-list agrees')
        q.execute('x-blockd-backup-end', {'id': 'p2'})
        assert_eq(d.stop(), 0, 'exit')
        check_image(img)


# --- 8: refusals ---

def test_refusals():
    """Every refusal, each leaving nothing behind."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img, nbd=False)
        q.execute('x-blockd-checkpoint-create', {'node': 'disk', 'name': 'c1'})
        base = chain(q)

        def refused(args, text, exports=()):
            e = q.error('x-blockd-backup-begin', args)
            assert_in(text, e['desc'], 'begin %r' % args)
            assert_clean(q, exports, 'after %r' % args)
            assert_eq(chain(q), base, 'checkpoints after %r' % args)
            return e

        refused({'node': 'disk', 'id': 'x'}, 'NBD server not running')
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        refused({'node': 'disk', 'id': ''}, "Parameter 'id' must not be empty")
        refused({'node': 'nope', 'id': 'x'}, "Cannot find device='nope' nor node-name='nope'")
        refused({'node': 'disk', 'id': 'x', 'since': 'zz'},
                "Checkpoint 'zz' not found on node 'disk'")
        refused({'node': 'disk', 'id': 'x', 'fleecing-target': 'nope'},
                "Cannot find device='nope' nor node-name='nope'")
        refused({'node': 'disk', 'id': 'x', 'new-checkpoint': 'c1'},
                "Checkpoint 'c1' already exists on node 'disk'")
        # A node that cannot hold checkpoints: the new checkpoint fails
        # last, after the filter, the view and the export are in; all go.
        make_image(d.path('r.raw'), SIZE)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r1',
                                   'file': {'driver': 'file', 'filename': d.path('r.raw')}})
        no_cp = ("Node 'r1' cannot hold checkpoints: its driver 'raw' does not store "
                 "persistent dirty bitmaps (use a qcow2 node)")
        refused({'node': 'r1', 'id': 'x', 'new-checkpoint': 'c9'}, no_cp)
        refused({'node': 'r1', 'id': 'x', 'since': 'c9'}, no_cp)
        q.execute('blockdev-del', {'node-name': 'r1'})
        refused({'node': 'disk', 'id': 'x', 'new-checkpoint': ''},
                'Checkpoint name cannot be empty')
        # As QEMU's input visitor: a non-integer fails the uint64 visit, a
        # negative one wraps and fails the uint32_t range.
        for v, text in [('x', "Parameter 'lease-seconds' expects uint64"),
                        (1.5, "Parameter 'lease-seconds' expects uint64"),
                        (-1, "Parameter 'lease-seconds' expects uint32_t"),
                        (1 << 32, "Parameter 'lease-seconds' expects uint32_t")]:
            e = q.error('x-blockd-backup-begin', {'node': 'disk', 'id': 'x', 'lease-seconds': v})
            assert_eq(e['desc'], text, 'lease-seconds %r' % (v,))
        e = q.error('x-blockd-backup-begin', {'node': 'disk'})
        assert_eq(e['desc'], "Parameter 'id' is missing", 'missing id')
        e = q.error('x-blockd-backup-begin', {'node': 'disk', 'id': 'x', 'bogus': 1})
        assert_in('bogus', e['desc'], 'unknown member')
        assert_clean(q, (), 'after type errors')

        # A fleecing target smaller than the source.
        small = d.path('small.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', small, '1M'])
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'small',
                                   'file': {'driver': 'file', 'filename': small}})
        refused({'node': 'disk', 'id': 'x', 'fleecing-target': 'small'}, 'smaller than its source')
        q.execute('blockdev-del', {'node-name': 'small'})

        # Export id taken by another export.
        q.execute('block-export-add', {'type': 'nbd', 'id': 'taken', 'node-name': 'disk',
                                       'name': 'taken'})
        refused({'node': 'disk', 'id': 'taken'}, "Block export id 'taken' is already in use",
                exports=('taken',))
        # Export name taken: the export fails after the filter is in.
        refused({'node': 'disk', 'id': 'y', 'export-name': 'taken'}, 'taken', exports=('taken',))
        q.execute('block-export-del', {'id': 'taken'})
        q.wait_event('BLOCK_EXPORT_DELETED', match={'id': 'taken'})

        begin(q, 's1')
        e = q.error('x-blockd-backup-begin', {'node': 'disk', 'id': 's1'})
        assert_eq(e['desc'], "Backup session 's1' already exists", 'duplicate')
        assert_eq([s['id'] for s in sessions(q)], ['s1'], 'one session')
        q.execute('x-blockd-backup-end', {'id': 's1'})
        e = q.error('x-blockd-backup-end', {'id': 'nope'})
        assert_eq(e['desc'], "Backup session 'nope' not found", 'end unknown')
        assert_clean(q, (), 'end')
        assert_eq(backup_dirs(), set(), 'no temp dir after refusals')
        assert_eq(d.stop(), 0, 'exit')
        check_image(img)


def test_two_sessions_on_one_node():
    """Two sessions of one node at once (two filters stacked): each view
    keeps its own point in time; ending the older one leaves the newer
    one's view and the guest export right."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        qemu_io(d.uri('guest'), 'write -P 0x10 0 1M')
        begin(q, 'a')
        qemu_io(d.uri('guest'), 'write -P 0x20 0 512k')
        begin(q, 'b')
        qemu_io(d.uri('guest'), 'write -P 0x30 256k 512k')
        qemu_io(d.uri('a'), 'read -P 0x10 0 1M', extra=['-r'])
        q.execute('x-blockd-backup-end', {'id': 'a'})
        qemu_io(d.uri('guest'), 'write -P 0x40 0 64k')
        qemu_io(d.uri('b'), 'read -P 0x20 0 512k', 'read -P 0x10 512k 512k', extra=['-r'])
        q.execute('x-blockd-backup-end', {'id': 'b'})
        assert_clean(q, ('guest',), 'after both')
        qemu_io(d.uri('guest'), 'read -P 0x40 0 64k', 'read -P 0x20 64k 192k',
                'read -P 0x30 256k 512k', 'read -P 0x10 768k 256k')
        assert_eq(d.stop(), 0, 'exit')
        check_image(img)


# --- 9: a fleecing target of the user's ---

def test_user_fleecing_target():
    """A qcow2 overlay of the source added by the user as the fleecing
    target: the backup sees the point in time while the guest overwrites,
    and the node stays after backup-end."""
    with setup() as d:
        img = qcow2_image(d, 'src.qcow2', str(SIZE))
        q = start(d, img)
        qemu_io(d.uri('guest'), 'write -P 0xa1 0 4M')
        tgt = d.path('fleece.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-b', img, '-F', 'qcow2', tgt, str(SIZE)])
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt', 'backing': 'disk',
                                   'file': {'driver': 'file', 'filename': tgt}})
        begin(q, 'u1', fleecing_target='tgt')
        assert_eq(sessions(q)[0]['fleecing-target'], 'tgt', 'query')
        assert 'backup-u1-fleece' not in node_names(q), 'no auto target'
        qemu_io(d.uri('guest'), 'write -P 0xb2 1M 1M')
        run(['nbdcopy', d.uri('u1'), d.path('full.raw')])
        qemu_io(d.path('full.raw'), 'read -P 0xa1 0 4M', 'read -P 0 4M 60M')
        q.execute('x-blockd-backup-end', {'id': 'u1'})
        assert_in('tgt', node_names(q), 'user target stays')
        assert_clean(q, ('guest',), 'after end')
        qemu_io(d.uri('guest'), 'read -P 0xb2 1M 1M', 'read -P 0xa1 0 1M')
        q.execute('blockdev-del', {'node-name': 'tgt'})
        assert_eq(d.stop(), 0, 'exit')
        check_image(img)
        check_image(tgt)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
