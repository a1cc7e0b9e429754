# SPDX-License-Identifier: MIT
"""Backup jobs (issue 6): QEMU iotest 257 ported with the guest I/O going
through an NBD export of the source (qemu-io over nbd+unix://), plus full,
top, incremental, cancel, speed, transaction and drive-backup cases.

Targets are checked with qemu-img compare against point-in-time copies
(after qemu-img rebase -u, exactly as 257 does) and with qemu-img check.
"""

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402

SIZE = 64 * 1024 * 1024
GRANULARITY = 64 * 1024


class Pattern:
    def __init__(self, byte, offset, size=GRANULARITY):
        self.byte, self.offset, self.size = byte, offset, size

    def bits(self, granularity):
        lower = self.offset // granularity
        upper = (self.offset + self.size - 1) // granularity
        return set(range(lower, upper + 1))


GROUPS = [
    [Pattern('0x49', 0x0000000), Pattern('0x6c', 0x0100000),
     Pattern('0x6f', 0x2000000), Pattern('0x76', 0x3ff0000)],
    [Pattern('0x65', 0x0000000), Pattern('0x77', 0x00f8000),
     Pattern('0x72', 0x2008000), Pattern('0x69', 0x3fe0000)],
    [Pattern('0x74', 0x0010000), Pattern('0x69', 0x00e8000),
     Pattern('0x6e', 0x2018000), Pattern('0x67', 0x3fe0000, 2 * GRANULARITY)],
    [Pattern('0xaa', 0x0010000, 3 * GRANULARITY), Pattern('0xbb', 0x00d8000),
     Pattern('0xcc', 0x2028000), Pattern('0xdd', 0x3fc0000)],
]


def group_bits(n):
    res = set()
    for p in GROUPS[n]:
        res |= p.bits(GRANULARITY)
    return res


class Env:
    """A daemon with an NBD server; drive0 (qcow2) exported as 'disk'."""

    def __init__(self, blkdebug=False):
        self.d = bt.Daemon()
        self.d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % self.d.nbd_sock]
        self.d.start()
        self.q = self.d.qmp()
        self.img = self.d.path('img.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', self.img, str(SIZE)])
        fcfg = {'driver': 'file', 'filename': self.img}
        if blkdebug:
            fcfg = {'driver': 'blkdebug', 'image': fcfg,
                    'set-state': [{'event': 'flush_to_disk', 'state': 1, 'new_state': 2},
                                  {'event': 'read_aio', 'state': 2, 'new_state': 3}],
                    'inject-error': [{'event': 'read_aio', 'errno': 5, 'state': 3,
                                      'immediately': False, 'once': True}]}
        self.q.execute('blockdev-add', {'node-name': 'drive0', 'driver': 'qcow2', 'file': fcfg})
        self.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'drive0',
                                            'name': 'disk', 'writable': True})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # A clean stop (when the test passed) lets sanitizers report.
        self.d.__exit__(*exc)

    def nbd(self):
        """A libnbd connection to the export, for a 'with' block."""
        return bt.nbd_connection(self.d.uri('disk'))

    def write_group(self, n):
        # libnbd sends no flush of its own (257's blkdebug state machine
        # counts flushes): qemu-io would flush when it closes.
        with self.nbd() as h:
            for p in GROUPS[n]:
                h.pwrite(bytes([int(p.byte, 16)]) * p.size, p.offset)

    def flush(self):
        with self.nbd() as h:
            h.flush()

    def bitmaps(self):
        for n in self.q.execute('query-named-block-nodes'):
            if n['node-name'] == 'drive0':
                return n.get('dirty-bitmaps', [])
        raise AssertionError('drive0 not found')

    def bitmap(self, name, recording=None):
        for b in self.bitmaps():
            if b.get('name', '') == name and (recording is None or b['recording'] == recording):
                return b
        raise AssertionError('bitmap %r not found in %r' % (name, self.bitmaps()))

    def check_bits(self, want, name='bitmap0', recording=None):
        b = self.bitmap(name, recording)
        bt.assert_eq(b['count'] // b['granularity'], len(want), 'dirty clusters of %r' % name)

    def create_target(self, node, path):
        bt.run(['qemu-img', 'create', '-f', 'qcow2', path, str(SIZE)])
        self.q.execute('blockdev-add', {'node-name': node, 'driver': 'qcow2',
                                        'file': {'driver': 'file', 'filename': path}})

    def backup(self, job, target, sync, **kw):
        args = {'job-id': job, 'device': 'drive0', 'target': target, 'sync': sync,
                'filter-node-name': 'backup-top', 'x-perf': {'max-workers': 1}}
        args.update({k.replace('_', '-'): v for k, v in kw.items() if v is not None})
        self.q.execute('blockdev-backup', args)

    def job_status(self, job):
        for j in self.q.execute('query-jobs'):
            if j['id'] == job:
                return j['status']
        return None

    def run_job(self, job, **kw):
        """Wait for a (auto-dismissed) backup job; returns its final
        event (BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED)."""
        return self.q.run_job(job, auto_dismiss=True, **kw).event

    def reference_backup(self, n, path):
        self.create_target('ref_target_%d' % n, path)
        self.backup('ref_backup_%d' % n, 'ref_target_%d' % n, 'full', filter_node_name=None)
        ev = self.run_job('ref_backup_%d' % n)
        bt.assert_eq(ev['event'], 'BLOCK_JOB_COMPLETED')
        assert 'error' not in ev['data'], ev


def compare(image, reference, base=None, expect_match=True):
    if base:
        bt.run(['qemu-img', 'rebase', '-u', '-b', base, '-F', 'qcow2', image])
    p = bt.run(['qemu-img', 'compare', image, reference], check=False)
    bt.assert_eq(p.returncode, 0 if expect_match else 1,
                 'qemu-img compare %s %s (%s)' % (image, reference, p.stdout))


def check_image(path):
    bt.run(['qemu-img', 'check', path])


def bitmap_sync(bsync_mode, msync_mode='bitmap', failure=None):
    with Env(blkdebug=failure == 'intermediate') as env:
        p = env.d.path
        bsync1, bsync2 = p('bsync1'), p('bsync2')
        fb0, fb1, fb2 = p('fbackup0'), p('fbackup1'), p('fbackup2')
        env.write_group(0)
        env.reference_backup(0, fb0)
        env.q.execute('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'bitmap0',
                                                'granularity': GRANULARITY})
        ebitmap = set()
        env.write_group(1)
        ebitmap |= group_bits(1)
        env.check_bits(ebitmap)
        env.reference_backup(1, fb1)

        if failure == 'intermediate':
            env.flush()   # arms the blkdebug error
        env.create_target('backup_target_1', bsync1)
        env.backup('backup_1', 'backup_target_1', msync_mode, bitmap='bitmap0',
                   bitmap_mode=bsync_mode, auto_finalize=False)

        def callback():
            nonlocal ebitmap
            env.write_group(2)              # through backup-top
            env.check_bits(ebitmap)         # the frozen bitmap
            env.check_bits(group_bits(2), name='', recording=True)  # successor
            if (bsync_mode == 'on-success' and not failure) or bsync_mode == 'always':
                ebitmap = set()
            ebitmap |= group_bits(2)

        ev = env.run_job('backup_1', auto_finalize=False, pre_finalize=callback,
                         cancel=failure == 'simulated')
        if failure == 'intermediate':
            bt.assert_eq(ev['event'], 'BLOCK_JOB_COMPLETED')
            bt.assert_eq(ev['data'].get('error'), 'Input/output error')
        elif failure == 'simulated':
            bt.assert_eq(ev['event'], 'BLOCK_JOB_CANCELLED')
        else:
            assert 'error' not in ev['data'], ev

        if bsync_mode == 'always' and failure == 'intermediate':
            if msync_mode == 'top':
                ebitmap |= group_bits(0)
            ebitmap.discard(min(ebitmap))       # one cluster copied
            if msync_mode == 'full':
                fail_bit = min(ebitmap)
                ebitmap = set(range(fail_bit, SIZE // GRANULARITY))
        env.check_bits(ebitmap)

        env.write_group(3)
        ebitmap |= group_bits(3)
        env.check_bits(ebitmap)
        env.reference_backup(2, fb2)

        env.create_target('backup_target_2', bsync2)
        env.backup('backup_2', 'backup_target_2', 'bitmap', bitmap='bitmap0',
                   bitmap_mode=bsync_mode, auto_finalize=False)
        ev = env.run_job('backup_2', auto_finalize=False)
        assert 'error' not in ev['data'], ev
        if bsync_mode != 'never':
            ebitmap = set()
        env.check_bits(ebitmap)

        env.q.execute('block-dirty-bitmap-remove', {'node': 'drive0', 'name': 'bitmap0'})
        assert not [b for b in env.bitmaps() if b.get('name') == 'bitmap0']
        env.d.stop()

        for img in (bsync1, bsync2, fb0, fb1, fb2):
            check_image(img)
        compare(bsync1, fb1, base=fb0, expect_match=failure != 'intermediate')
        base = bsync1 if (not failure or bsync_mode == 'always') else fb0
        compare(bsync2, fb2, base=base)
        compare(env.img, fb2)


def _add_sync_tests():
    g = globals()
    cases = [(b, 'bitmap', f) for b in ('never', 'on-success', 'always')
             for f in ('simulated', 'intermediate', None)]
    cases += [(b, m, f) for m in ('full', 'top') for b in ('on-success', 'always')
              for f in ('simulated', 'intermediate', None)]
    for b, m, f in cases:
        name = 'test_sync_%s_%s_%s' % (m, b.replace('-', '_'), f or 'ok')

        def t(b=b, m=m, f=f):
            bitmap_sync(b, m, f)
        t.__name__ = name
        g[name] = t


_add_sync_tests()


# 257's test_backup_api, with the texts qemu-storage-daemon 7.2 gives.
NEED_NAME = "must provide a valid bitmap name for '%s' sync mode"
NOT_FOUND = "Bitmap 'bitmap404' could not be found"
INCR_MODE = "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"
NO_MODE = 'Bitmap sync mode must be given when providing a bitmap'
NO_BITMAP = 'Cannot specify bitmap sync mode without a bitmap'
NEVER = "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '%s'"
NONE_OUT = "sync mode 'none' does not produce meaningful bitmap outputs"
API_CASES = {
    'incremental': {None: {m: NEED_NAME % 'incremental' for m in ('on-success', 'always', 'never', None)},
                    'bitmap404': {'on-success': NOT_FOUND, 'always': INCR_MODE,
                                  'never': INCR_MODE, None: NOT_FOUND},
                    'bitmap0': {'always': INCR_MODE, 'never': INCR_MODE}},
    'bitmap': {None: {m: NEED_NAME % 'bitmap' for m in ('on-success', 'always', 'never', None)},
               'bitmap404': {m: NOT_FOUND for m in ('on-success', 'always', 'never', None)},
               'bitmap0': {None: NO_MODE}},
    'full': {None: {m: NO_BITMAP for m in ('on-success', 'always', 'never')},
             'bitmap404': {m: NOT_FOUND for m in ('on-success', 'always', 'never', None)},
             'bitmap0': {'never': NEVER % 'full', None: NO_MODE}},
    'top': {None: {m: NO_BITMAP for m in ('on-success', 'always', 'never')},
            'bitmap404': {m: NOT_FOUND for m in ('on-success', 'always', 'never', None)},
            'bitmap0': {'never': NEVER % 'top', None: NO_MODE}},
    'none': {None: {m: NO_BITMAP for m in ('on-success', 'always', 'never')},
             'bitmap404': {m: NOT_FOUND for m in ('on-success', 'always', 'never', None)},
             'bitmap0': {'on-success': NONE_OUT, 'always': NONE_OUT, 'never': NONE_OUT,
                         None: NO_MODE}},
}


def test_backup_api():
    with Env() as env:
        env.create_target('backup_target', env.d.path('bsync1'))
        env.q.execute('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'bitmap0',
                                                'granularity': GRANULARITY})
        n = 0
        for sync, by_bitmap in API_CASES.items():
            for bitmap, by_mode in by_bitmap.items():
                for mode, text in by_mode.items():
                    args = {'job-id': 'api_job', 'device': 'drive0', 'target': 'backup_target',
                            'sync': sync, 'filter-node-name': 'backup-top',
                            'x-perf': {'max-workers': 1}}
                    if bitmap:
                        args['bitmap'] = bitmap
                    if mode:
                        args['bitmap-mode'] = mode
                    err = env.q.error('blockdev-backup', args)
                    bt.assert_eq((err['class'], err['desc']), ('GenericError', text), repr(args))
                    n += 1
        bt.assert_eq(n, 48, 'cases')
        base = {'device': 'drive0', 'target': 'backup_target', 'sync': 'full', 'job-id': 'j'}
        for extra, text in [
                ({'job-id': None}, "Invalid job ID ''"),
                ({'target': 'drive0'}, 'Source and target cannot be the same'),
                ({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
                ({'target': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
                ({'x-perf': {'max-workers': 0}}, 'max-workers must be between 1 and 2147483647'),
                ({'x-perf': {'max-chunk': -1}},
                 'max-chunk must be zero (which means no limit) or positive'),
                ({'x-perf': {'max-chunk': 4096}},
                 'Required max-chunk (4096) is less than backup cluster size (65536)'),
                ({'speed': -1}, "Parameter 'speed' expects a non-negative value"),
                ({'filter-node-name': 'drive0'},
                 "Could not create node: Duplicate nodes with node-name='drive0'")]:
            args = dict(base, **extra)
            args = {k: v for k, v in args.items() if v is not None}
            err = env.q.error('blockdev-backup', args)
            bt.assert_eq(err['desc'], text, repr(extra))
        # Nothing was left behind by the refusals.
        bt.assert_eq(env.q.execute('query-jobs'), [])
        names = [n['node-name'] for n in env.q.execute('query-named-block-nodes')]
        assert 'backup-top' not in names, names
        bt.assert_eq([b.get('name') for b in env.bitmaps()], ['bitmap0'])
        assert not env.bitmap('bitmap0')['busy']



# --- backups under a guest load through the export ---

def job_info(env, job):
    for j in env.q.execute('query-block-jobs'):
        if j['device'] == job:
            return j
    return None


def node_names(env):
    return {n['node-name']: n['drv'] for n in env.q.execute('query-named-block-nodes')}


def writers(env, pattern_base):
    """Two qemu-io clients writing interleaved 256 KiB pieces over the
    whole disk at once; returns the Popen objects."""
    import subprocess
    procs = []
    for k in range(2):
        cmds = []
        for off in range(k * 256 * 1024, SIZE, 512 * 1024):
            cmds += ['-c', 'write -P 0x%02x %d 256k' % (pattern_base + k, off)]
        procs.append(subprocess.Popen(['qemu-io', '-f', 'raw'] + cmds + [env.d.uri('disk')],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return procs


def snapshot(env, path):
    """A point-in-time copy of what the export shows."""
    bt.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', env.d.uri('disk'), path])


def backup_under_load(sync):
    with Env() as env:
        p = env.d.path
        # Data everywhere, so every cluster has old data worth saving.
        bt.qemu_io(env.d.uri('disk'), 'write -P 0x5a 0 %d' % SIZE)
        env.q.execute('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'bm'})
        base = None
        if sync == 'incremental':
            env.reference_backup(0, p('full0'))
            base = p('full0')
            bt.qemu_io(env.d.uri('disk'), 'write -P 0x6b 1M 3M', 'write -P 0x7c 40M 64k')
        snapshot(env, p('pit.raw'))
        env.create_target('tgt', p('tgt.qcow2'))
        args = {'speed': 1}
        if sync == 'incremental':
            args['bitmap'] = 'bm'
        env.backup('bk', 'tgt', sync, **args)
        # The filter is in the graph, the export's handle above it.
        bt.assert_eq(node_names(env).get('backup-top'), 'copy-before-write')
        info = job_info(env, 'bk')
        bt.assert_eq(info['speed'], 1)
        assert info['offset'] < info['len'], info
        procs = writers(env, 0x30)
        for pr in procs:
            _, err = pr.communicate(timeout=120)
            bt.assert_eq(pr.returncode, 0, 'writer: %s' % err)
        bt.assert_eq(env.job_status('bk'), 'running')
        env.q.execute('block-job-set-speed', device='bk', speed=0)
        ev = env.run_job('bk')
        bt.assert_eq(ev['event'], 'BLOCK_JOB_COMPLETED')
        assert 'error' not in ev['data'], ev
        assert 'backup-top' not in node_names(env)
        # The guest's writes all landed.
        bt.qemu_io(env.d.uri('disk'), 'read -P 0x30 0 256k', 'read -P 0x31 %d 256k'
                   % (SIZE - 256 * 1024))
        if sync == 'incremental':
            # Cleared of what was copied; the load dirtied everything.
            env.check_bits(set(range(SIZE // GRANULARITY)), name='bm')
        env.d.stop()
        check_image(p('tgt.qcow2'))
        compare(p('tgt.qcow2'), p('pit.raw'), base=base)


def test_full_under_load():
    backup_under_load('full')


def test_incremental_under_load():
    backup_under_load('incremental')


def test_cancel():
    with Env() as env:
        env.write_group(0)
        env.q.execute('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'bitmap0'})
        env.write_group(1)
        env.create_target('tgt', env.d.path('tgt.qcow2'))
        env.backup('bk', 'tgt', 'bitmap', bitmap='bitmap0', bitmap_mode='on-success',
                   speed=1)
        # Frozen while the job runs (QEMU shows it 'recording' through
        # its successor; the count does not move).
        assert env.bitmap('bitmap0')['busy']
        env.write_group(2)
        env.check_bits(group_bits(1))
        env.q.execute('job-cancel', id='bk')
        ev = env.run_job('bk')
        bt.assert_eq(ev['event'], 'BLOCK_JOB_CANCELLED')
        assert 'backup-top' not in node_names(env)
        # The bitmap is back, with the writes made during the job.
        b = env.bitmap('bitmap0')
        assert not b['busy'] and b['recording'], b
        env.check_bits(group_bits(1) | group_bits(2))
        bt.assert_eq(len(env.bitmaps()), 1, 'bitmaps left')
        # The export writes to drive0 directly again.
        env.write_group(3)
        env.check_bits(group_bits(1) | group_bits(2) | group_bits(3))


def test_implicit_filter_and_sync_none():
    with Env() as env:
        env.write_group(0)
        env.create_target('tgt', env.d.path('tgt.qcow2'))
        before = set(node_names(env))
        env.q.execute('blockdev-backup', {'job-id': 'bk', 'device': 'drive0',
                                          'target': 'tgt', 'sync': 'none'})
        added = {n: d for n, d in node_names(env).items() if n not in before}
        bt.assert_eq(list(added.values()), ['copy-before-write'], 'implicit filter')
        # sync=none: only what the guest overwrites reaches the target.
        env.write_group(1)
        env.q.execute('job-cancel', id='bk')
        ev = env.run_job('bk')
        bt.assert_eq(ev['event'], 'BLOCK_JOB_CANCELLED')
        bt.assert_eq(set(node_names(env)), before)
        env.d.stop()
        # The target holds group 0's data where group 1 wrote, nothing else.
        t = env.d.path('tgt.qcow2')
        bt.qemu_io(t, 'read -P 0x49 0 64k', 'read -P 0x6c 1M 64k', 'read -P 0x6f 32M 64k',
                   'read -P 0 64k 64k', 'read -P 0 %d 64k' % (SIZE - 64 * 1024),
                   fmt='qcow2')
        check_image(t)


def test_transaction_grouped():
    with Env() as env:
        env.write_group(0)
        env.create_target('tgt', env.d.path('tgt.qcow2'))
        bk = {'job-id': 'bk', 'device': 'drive0', 'target': 'tgt', 'sync': 'full'}
        # A failing action undoes the backup: no job, no filter, no bitmap.
        err = env.q.error('transaction', {'actions': [
            {'type': 'blockdev-backup', 'data': bk},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'nope', 'name': 'b'}}]})
        bt.assert_eq(err['class'], 'GenericError')
        bt.assert_eq(env.q.execute('query-jobs'), [])
        assert not [n for n, d in node_names(env).items() if d == 'copy-before-write']
        env.create_target('tgt2', env.d.path('tgt2.qcow2'))
        bk2 = dict(bk, **{'job-id': 'bk2', 'target': 'tgt2', 'sync': 'top'})
        env.q.execute('transaction', {
            'actions': [{'type': 'blockdev-backup', 'data': bk},
                        {'type': 'blockdev-backup', 'data': bk2}],
            'properties': {'completion-mode': 'grouped'}})
        ev = env.run_job('bk2')
        assert 'error' not in ev['data'], ev
        ev = env.run_job('bk')
        assert 'error' not in ev['data'], ev
        snapshot(env, env.d.path('pit.raw'))
        env.d.stop()
        compare(env.d.path('tgt.qcow2'), env.d.path('pit.raw'))
        compare(env.d.path('tgt2.qcow2'), env.d.path('pit.raw'))


def test_drive_backup():
    with Env() as env:
        env.write_group(0)
        env.write_group(1)
        snapshot(env, env.d.path('pit.raw'))
        t = env.d.path('drive.qcow2')
        env.q.execute('drive-backup', {'job-id': 'db', 'device': 'drive0', 'target': t,
                                       'sync': 'full', 'format': 'qcow2'})
        ev = env.run_job('db')
        assert 'error' not in ev['data'], ev
        env.d.stop()
        check_image(t)
        compare(t, env.d.path('pit.raw'))


def test_nodes_of_a_mirror_are_busy():
    """A backup from or to a node a mirror holds is refused with QEMU's
    op-blocker text, before the size check (found by tests/diff)."""
    with Env() as env:
        env.create_target('mtgt', env.d.path('mtgt.qcow2'))
        env.create_target('other', env.d.path('other.qcow2'))
        env.q.execute('blockdev-mirror', {'job-id': 'm', 'device': 'drive0', 'target': 'mtgt',
                                          'sync': 'full'})
        env.q.wait_event('BLOCK_JOB_READY', 60)
        busy = "Node '%s' is busy: block device is in use by block job: mirror"
        for dev, tgt, node in (('other', 'mtgt', 'mtgt'), ('mtgt', 'other', 'mtgt'),
                               ('drive0', 'other', 'drive0')):
            e = env.q.error('blockdev-backup', {'job-id': 'b', 'device': dev, 'target': tgt,
                                                'sync': 'full'})
            bt.assert_eq(e['desc'], busy % node, 'backup %s -> %s' % (dev, tgt))
        # drive-backup checks before creating its target image.
        new = env.d.path('new.qcow2')
        e = env.q.error('drive-backup', {'job-id': 'b', 'device': 'drive0', 'target': new,
                                         'format': 'qcow2', 'sync': 'full'})
        bt.assert_eq(e['desc'], busy % 'drive0', 'drive-backup of a mirror source')
        bt.assert_eq(os.path.exists(new), False, 'no target created')
        env.q.execute('block-job-cancel', {'device': 'm'})
        env.run_job('m')
        env.q.execute('blockdev-backup', {'job-id': 'b', 'device': 'drive0', 'target': 'other',
                                          'sync': 'full'})
        env.run_job('b')


def test_backup_target_is_busy():
    """A backup holds its target as QEMU's job blocker does: another job
    on it is refused until the backup is gone; its source stays free for
    a second backup (found by tests/diff)."""
    with Env() as env:
        env.create_target('t1', env.d.path('t1.qcow2'))
        env.create_target('t2', env.d.path('t2.qcow2'))
        env.q.execute('blockdev-backup', {'job-id': 'b1', 'device': 'drive0', 'target': 't1',
                                          'sync': 'full', 'auto-finalize': False})
        env.q.wait_event('BLOCK_JOB_PENDING', 60)
        busy = "Node 't1' is busy: block device is in use by block job: backup"
        e = env.q.error('blockdev-mirror', {'job-id': 'm', 'device': 't2', 'target': 't1',
                                            'sync': 'full'})
        bt.assert_eq(e['desc'], busy, 'mirror onto a backup target')
        e = env.q.error('blockdev-backup', {'job-id': 'b2', 'device': 't1', 'target': 't2',
                                            'sync': 'full'})
        bt.assert_eq(e['desc'], busy, 'backup from a backup target')
        env.q.execute('blockdev-backup', {'job-id': 'b2', 'device': 'drive0', 'target': 't2',
                                          'sync': 'full'})
        env.run_job('b2')
        env.q.execute('job-finalize', {'id': 'b1'})
        env.run_job('b1')
        env.q.execute('blockdev-backup', {'job-id': 'b3', 'device': 't1', 'target': 't2',
                                          'sync': 'full'})
        env.run_job('b3')


def test_cbw_blockdev_add():
    """A copy-before-write node added by hand (with a bitmap limiting what
    is copied) saves old data of the bitmap's clusters only."""
    with Env() as env:
        env.write_group(0)
        env.create_target('tgt', env.d.path('tgt.qcow2'))
        env.q.execute('block-dirty-bitmap-add', {'node': 'drive0', 'name': 'only0',
                                                 'disabled': True})
        # The bitmap records one write: cluster 0 only.
        env.q.execute('block-dirty-bitmap-enable', {'node': 'drive0', 'name': 'only0'})
        with env.nbd() as h:
            h.pwrite(b'\x49' * GRANULARITY, 0)
        env.q.execute('block-dirty-bitmap-disable', {'node': 'drive0', 'name': 'only0'})
        env.q.execute('block-export-del', {'id': 'exp0'})
        bt.wait_for(lambda: not env.q.execute('query-block-exports'), 10, 'export gone')
        env.q.execute('blockdev-add', {'driver': 'copy-before-write', 'node-name': 'cbw',
                                       'file': 'drive0', 'target': 'tgt',
                                       'bitmap': {'node': 'drive0', 'name': 'only0'}})
        bt.assert_eq(node_names(env).get('cbw'), 'copy-before-write')
        env.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp1', 'node-name': 'cbw',
                                           'name': 'disk', 'writable': True})
        env.write_group(1)
        env.q.execute('block-export-del', {'id': 'exp1'})
        bt.wait_for(lambda: not env.q.execute('query-block-exports'), 10, 'export gone')
        env.q.execute('blockdev-del', {'node-name': 'cbw'})
        env.d.stop()
        t = env.d.path('tgt.qcow2')
        # Cluster 0 was in the bitmap: its old data was saved; cluster 16
        # (1M) was not: the target has nothing there.
        bt.qemu_io(t, 'read -P 0x49 0 64k', 'read -P 0 1M 64k', fmt='qcow2')
        bt.qemu_io(env.img, 'read -P 0x65 0 64k', fmt='qcow2')


def test_top_with_backing():
    """sync=top copies what the top layer allocates, nothing of its
    backing file; the target over the same backing equals the source."""
    with contextlib.closing(bt.Daemon()) as d:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        base, top, tgt = d.path('base.qcow2'), d.path('top.qcow2'), d.path('tgt.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', base, str(SIZE)])
        bt.qemu_io(base, 'write -P 0x11 0 %d' % SIZE, fmt='qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top])
        bt.qemu_io(top, 'write -P 0x22 1M 1M', 'write -P 0x33 40M 64k', fmt='qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', tgt])
        pit = d.path('pit.qcow2')
        bt.run(['cp', top, pit])
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'node-name': 'drive0', 'driver': 'qcow2',
                                   'file': {'driver': 'file', 'filename': top}})
        q.execute('blockdev-add', {'node-name': 'tgt', 'driver': 'qcow2',
                                   'file': {'driver': 'file', 'filename': tgt}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'drive0',
                                       'name': 'disk', 'writable': True})
        q.execute('blockdev-backup', {'job-id': 'bk', 'device': 'drive0', 'target': 'tgt',
                                      'sync': 'top', 'speed': 1})
        # Overwrite top-allocated and backing-only data during the job.
        bt.qemu_io(d.uri('disk'), 'write -P 0x44 1M 4M', 'write -P 0x55 60M 64k')
        q.execute('block-job-set-speed', device='bk', speed=0)
        ev = q.run_job('bk', auto_dismiss=True).event
        assert 'error' not in ev['data'], ev
        d.stop()
        check_image(tgt)
        compare(tgt, pit)
        # Only the top layer's clusters were written to the target...
        m = bt.run(['qemu-img', 'map', '--output=json', tgt]).stdout
        import json
        own = sum(e['length'] for e in json.loads(m) if e['depth'] == 0 and e['data'])
        bt.assert_eq(own, 1024 * 1024 + 64 * 1024, 'bytes allocated in the target')


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
