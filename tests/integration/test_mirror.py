# SPDX-License-Identifier: MIT
"""blockdev-mirror (issue 7): a qcow2 node exported over NBD is mirrored to
a new qcow2 target while a client writes (qemu-io over nbd+unix://); after
ready and job-complete the export serves the target.  The target is then
compared (qemu-img compare) with a raw reference that received the same
writes, and qemu-img check must be clean.  Also sync=top/none, the
write-blocking copy mode, soft and forced cancel, the filter node,
speed, pause/resume and QEMU 7.2's refusals.
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402

MiB = 1024 * 1024
SIZE = 32 * MiB


def writes(seed, count, size=SIZE, length=64 * 1024, start=0):
    """A deterministic list of qemu-io write commands (some unaligned)
    inside [start, start + size)."""
    cmds = []
    x = seed * 7919 + 1
    for i in range(count):
        x = (x * 1103515245 + 12345) % (1 << 31)
        off = start + (x % ((size - length - 8192) // 512)) * 512 + (i % 3) * 4096
        cmds.append('write -P 0x%02x %d %d' % ((seed * 31 + i) % 250 + 1, off, length))
    return cmds


class Env:
    """A daemon exporting qcow2 node 'src' as 'disk', a qcow2 target node
    'tgt' and a raw reference file that gets every write the source got."""

    def __init__(self, backing=False, target_backing=False, prefill=True, src_errors=None):
        bt.require_tool('qemu-img', 'qemu-io')
        self.d = bt.Daemon()
        self.src = self.d.path('src.qcow2')
        self.tgt = self.d.path('tgt.qcow2')
        self.base = self.d.path('base.qcow2')
        self.ref = bt.make_image(self.d.path('ref.raw'), SIZE)
        if backing:
            bt.run(['qemu-img', 'create', '-f', 'qcow2', self.base, str(SIZE)])
            self.offline(self.base, ['write -P 0x11 0 %d' % (4 * MiB),
                                     'write -P 0x12 %d %d' % (20 * MiB, MiB)])
            bt.run(['qemu-img', 'create', '-f', 'qcow2', '-b', self.base, '-F', 'qcow2',
                    self.src])
        else:
            bt.run(['qemu-img', 'create', '-f', 'qcow2', self.src, str(SIZE)])
        if prefill:
            self.offline(self.src, ['write -P 0x21 %d %d' % (2 * MiB, 8 * MiB),
                                    'write -P 0x22 %d %d' % (24 * MiB, 3 * MiB)] +
                         writes(1, 20))
        if target_backing:
            bt.run(['qemu-img', 'create', '-f', 'qcow2', '-b', self.base, '-F', 'qcow2',
                    self.tgt])
        else:
            bt.run(['qemu-img', 'create', '-f', 'qcow2', self.tgt, str(SIZE)])
        self.d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % self.d.nbd_sock]
        self.d.wait = [self.d.nbd_sock]
        self.d.start()
        self.q = self.d.qmp()
        src_file = {'driver': 'file', 'filename': self.src}
        if src_errors:
            src_file = {'driver': 'blkdebug', 'inject-error': src_errors, 'image': src_file}
        self.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'src',
                                        'file': src_file})
        tgt = {'driver': 'qcow2', 'node-name': 'tgt',
               'file': {'driver': 'file', 'filename': self.tgt}}
        if not target_backing:
            tgt['backing'] = None
        self.q.execute('blockdev-add', tgt)
        self.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'src',
                                            'name': 'disk', 'writable': True})

    def offline(self, image, cmds):
        """Write into an image before the daemon opens it, and into ref."""
        bt.qemu_io(image, *cmds, fmt='qcow2')
        bt.qemu_io(self.ref, *cmds)

    def nbd_write(self, cmds):
        bt.qemu_io(self.d.uri(), *cmds)
        bt.qemu_io(self.ref, *cmds)

    def nbd_writer(self, cmds):
        """Start qemu-io writing through the export in the background."""
        argv = ['qemu-io', '-f', 'raw']
        for c in cmds:
            argv += ['-c', c]
        argv.append(self.d.uri())
        bt.qemu_io(self.ref, *cmds)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors='replace')

    def mirror(self, **kw):
        args = {'job-id': 'm0', 'device': 'src', 'target': 'tgt', 'sync': 'full'}
        args.update(kw)
        self.q.execute('blockdev-mirror', args)

    def job(self, jid='m0'):
        for j in self.q.execute('query-block-jobs'):
            if j['device'] == jid:
                return j
        return None

    # query-block-exports' node-name: blockd reports the node the export
    # was created on even after a pivot (control/cmd-export.c), so tests
    # check it only where it did not move and prove pivots by the data.
    def export_node(self):
        return self.q.execute('query-block-exports')[0]['node-name']

    def node_drivers(self):
        return {n['node-name']: n['drv'] for n in self.q.execute('query-named-block-nodes')}

    def check_export_reads_ref(self):
        """Every byte the export serves equals the reference."""
        p = bt.run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', self.ref, self.d.uri()],
                   check=False)
        bt.assert_eq(p.returncode, 0, 'export vs reference: ' + p.stdout + p.stderr)

    def stop_and_check(self, image):
        self.d.stop()
        p = bt.run(['qemu-img', 'compare', '-F', 'raw', image, self.ref], check=False)
        bt.assert_eq(p.returncode, 0, 'qemu-img compare %s ref: %s%s'
                     % (image, p.stdout, p.stderr))
        bt.run(['qemu-img', 'check', image])

    def close(self):
        self.d.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_job(self, name='BLOCK_JOB_COMPLETED', jid='m0'):
        """Wait for the (auto-dismissed) job to end; returns its end
        event, which must be `name`."""
        ev = self.q.run_job(jid, auto_dismiss=True).event
        bt.assert_eq(ev['event'], name, 'end of job ' + jid)
        return ev


def wait_writer(proc):
    out, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or 'failed' in out.lower():
        raise AssertionError('qemu-io writer failed: %s %s' % (out, err))


def mirror_complete_under_writes(copy_mode):
    with Env() as e:
        # Slow enough that the writer runs during the copy.
        e.mirror(speed=8 * MiB, **{'copy-mode': copy_mode})
        # Two connections at once, on disjoint halves (the reference does
        # not depend on their order).
        writers = [e.nbd_writer(writes(2, 100, SIZE // 2)),
                   e.nbd_writer(writes(20, 100, SIZE // 2, start=SIZE // 2))]
        ev = e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        bt.assert_eq(ev['data']['device'], 'm0', 'ready device')
        for w in writers:
            wait_writer(w)
        j = e.job()
        bt.assert_eq((j['status'], j['ready'], j['type']), ('ready', True, 'mirror'), 'job')
        e.q.execute('block-job-set-speed', {'device': 'm0', 'speed': 0})
        e.nbd_write(writes(3, 60))
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        bt.assert_eq(ev['data']['offset'], ev['data']['len'], 'progress at the end')
        bt.assert_eq('mirror_top' in e.node_drivers().values(), False, 'filter left behind')
        # The export now writes into the target.
        e.nbd_write(writes(4, 30))
        e.check_export_reads_ref()
        e.stop_and_check(e.tgt)
        # The source kept only what was written before the pivot.
        p = bt.run(['qemu-img', 'compare', '-F', 'raw', e.src, e.ref], check=False)
        bt.assert_eq(p.returncode, 1, 'source must miss the writes after the pivot')
        bt.run(['qemu-img', 'check', e.src])


def test_full_background_under_nbd_writes():
    """sync=full, background mode: writes during the copy and in ready
    are all in the target; the export serves the target afterwards."""
    mirror_complete_under_writes('background')


def test_full_write_blocking_under_nbd_writes():
    """The same in write-blocking mode."""
    mirror_complete_under_writes('write-blocking')


def test_sync_top():
    """sync=top copies only the top layer: the target, backed by the same
    base, reads as the source; the base's data is not in it."""
    with Env(backing=True, target_backing=True) as e:
        e.mirror(sync='top')
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(writes(5, 40))
        e.q.execute('block-job-complete', {'device': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.check_export_reads_ref()
        e.stop_and_check(e.tgt)
        # Base-only data (0x12 at 20 MiB) stayed in the base.
        p = bt.qemu_io(e.tgt, 'read -P 0x12 %d 65536' % (20 * MiB), fmt='qcow2')
        bt.assert_in('read 65536/65536', p.stdout, 'target reads the base')
        m = bt.run(['qemu-img', 'map', '--output=json', '-f', 'qcow2', e.tgt]).stdout
        bt.assert_eq('"depth": 0, "present": true, "zero": false, "data": true, '
                     '"offset": %d' % (20 * MiB) in m, False, 'base data copied')


def test_sync_none():
    """sync=none copies only what is written after the start."""
    with Env() as e:
        e.mirror(sync='none')
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(['write -P 0x5a %d %d' % (MiB, 128 * 1024)])
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.d.stop()
        bt.qemu_io(e.tgt, 'read -P 0x5a %d %d' % (MiB, 128 * 1024), fmt='qcow2')
        # Old data (0x21 from 2 MiB) was not copied.
        bt.qemu_io(e.tgt, 'read -P 0 %d %d' % (4 * MiB, MiB), fmt='qcow2')
        bt.run(['qemu-img', 'check', e.tgt])


def test_soft_cancel_in_ready():
    """block-job-cancel in ready completes without pivoting: the export
    stays on the source, the target holds the same data."""
    with Env() as e:
        e.mirror()
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(writes(6, 40))
        e.q.execute('block-job-cancel', {'device': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        bt.assert_eq(e.export_node(), 'src', 'export node')
        bt.assert_eq(e.q.execute('query-block-jobs'), [], 'jobs')
        at_cancel = e.d.path('ref-at-cancel.raw')
        shutil.copyfile(e.ref, at_cancel)
        e.nbd_write(writes(7, 5))
        e.check_export_reads_ref()
        e.q.execute('blockdev-del', {'node-name': 'tgt'})
        e.stop_and_check(e.src)
        # The target has everything up to the cancel, not the later writes.
        p = bt.run(['qemu-img', 'compare', '-F', 'raw', e.tgt, at_cancel], check=False)
        bt.assert_eq(p.returncode, 0, 'target vs the data at the cancel: ' + p.stdout)
        bt.run(['qemu-img', 'check', e.tgt])
        p = bt.run(['qemu-img', 'compare', e.src, e.tgt], check=False)
        bt.assert_eq(p.returncode, 1, 'target must miss the writes after the cancel')


def test_force_cancel():
    """job-cancel while copying: BLOCK_JOB_CANCELLED, the filter is gone,
    the export keeps serving the source."""
    with Env() as e:
        e.mirror(speed=MiB, **{'filter-node-name': 'mtop'})
        bt.assert_eq(e.node_drivers().get('mtop'), 'mirror_top', 'filter node')
        bt.assert_eq(e.job()['status'], 'running', 'status')
        e.q.execute('job-cancel', {'id': 'm0'})
        ev = e.wait_job('BLOCK_JOB_CANCELLED')
        bt.assert_eq(ev['data']['device'], 'm0', 'device')
        bt.assert_eq('mtop' in e.node_drivers(), False, 'filter left behind')
        e.nbd_write(writes(8, 20))
        e.check_export_reads_ref()
        e.stop_and_check(e.src)


def test_speed_pause_resume():
    """speed is reported and changeable; a paused job does not progress;
    resumed, it reaches ready."""
    with Env() as e:
        e.mirror(speed=MiB)
        bt.assert_eq(e.job()['speed'], MiB, 'speed')
        e.q.execute('job-pause', {'id': 'm0'})
        bt.wait_for(lambda: e.job()['status'] == 'paused', 30, 'job paused')
        bt.assert_eq(e.job()['paused'], True, 'paused')
        off = e.job()['offset']
        time.sleep(0.5)
        bt.assert_eq(e.job()['offset'], off, 'offset while paused')
        bt.assert_eq(e.job()['offset'] < e.job()['len'], True, 'not done yet')
        e.q.execute('block-job-set-speed', {'device': 'm0', 'speed': 0})
        bt.assert_eq(e.job()['speed'], 0, 'speed')
        e.q.execute('job-resume', {'id': 'm0'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        # Paused in ready: standby, and back.
        e.q.execute('job-pause', {'id': 'm0'})
        bt.wait_for(lambda: e.job()['status'] == 'standby', 30, 'standby')
        # (job-complete in standby: test_job_compat.py.)
        e.q.execute('job-resume', {'id': 'm0'})
        bt.wait_for(lambda: e.job()['status'] == 'ready', 30, 'ready again')
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.stop_and_check(e.tgt)


def test_manual_finalize():
    """auto-finalize/auto-dismiss off: pending after job-complete, the
    pivot happens at job-finalize."""
    with Env() as e:
        e.mirror(**{'auto-finalize': False, 'auto-dismiss': False})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(writes(9, 10))
        e.q.execute('job-complete', {'id': 'm0'})
        e.q.wait_event('BLOCK_JOB_PENDING', timeout=60)
        # (QEMU 7.2 does not copy writes made while pending: none here.)

        def concluded():
            jobs = e.q.execute('query-jobs')
            bt.assert_eq([(j['id'], j['status']) for j in jobs], [('m0', 'concluded')], 'jobs')
        # job-finalize at 'pending'; concluded() then job-dismiss at 'concluded'.
        ev = e.q.run_job('m0', auto_finalize=False, pre_dismiss=concluded).event
        bt.assert_eq(ev['event'], 'BLOCK_JOB_COMPLETED', 'end of job m0')
        e.check_export_reads_ref()
        e.stop_and_check(e.tgt)


def test_refusals():
    """QEMU 7.2's argument checks and texts; nothing changes after them."""
    with Env(prefill=False) as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('small.qcow2'), '2M'])
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'small',
                                     'file': {'driver': 'file', 'node-name': 'fsmall',
                                              'filename': e.d.path('small.qcow2')}})
        base = {'job-id': 'm0', 'device': 'src', 'target': 'tgt', 'sync': 'full'}
        cases = [
            ({'granularity': 256}, "Parameter 'granularity' expects a value in range [512B, 64MB]"),
            ({'granularity': 128 * MiB},
             "Parameter 'granularity' expects a value in range [512B, 64MB]"),
            ({'granularity': 3000}, "Parameter 'granularity' expects a power of 2"),
            ({'buf-size': -1}, "Invalid parameter 'buf-size'"),
            ({'speed': -1}, "Parameter 'speed' expects a non-negative value"),
            ({'target': 'src'}, "Can't mirror node into itself"),
            ({'target': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'device': 'fsmall'}, 'Need a root block node'),
            ({'replaces': 'nope'}, "Failed to find node with node-name='nope'"),
            ({'replaces': 'small'},
             "Cannot replace 'small' by a node mirrored from 'src', because it cannot be "
             "guaranteed that doing so would not lead to an abrupt change of visible data"),
            ({'sync': 'incremental'}, "Sync mode 'incremental' not supported"),
            ({'sync': 'bitmap'}, "Sync mode 'bitmap' not supported"),
            ({'job-id': '1x'}, "Invalid job ID '1x'"),
            ({'filter-node-name': 'src'}, "Duplicate nodes with node-name='src'"),
            ({'filter-node-name': '1bad'}, "Invalid node-name: '1bad'"),
            ({'copy-mode': 'bogus'}, "Parameter 'copy-mode' does not accept value 'bogus'"),
            ({'device': 'tgt', 'target': 'src'},
             "Permission conflict on node 'src': permissions 'consistent read, write' are "
             "both required by an unnamed block device (uses node 'src' as 'root' child) "
             "and unshared by an unnamed block device (uses node 'src' as 'root' child)."),
            ({'target': 'fsmall'},
             "Permission conflict on node 'fsmall': permissions 'consistent read, write, "
             "resize' are both required by node 'small' (uses node 'fsmall' as 'file' "
             "child) and unshared by an unnamed block device (uses node 'fsmall' as "
             "'root' child)."),
        ]
        for extra, text in cases:
            args = dict(base, **extra)
            err = e.q.error('blockdev-mirror', args)
            bt.assert_eq(err['desc'], text, 'blockdev-mirror %r' % extra)
        args = dict(base)
        del args['job-id']
        bt.assert_eq(e.q.error('blockdev-mirror', args)['desc'], "Invalid job ID ''", 'no id')
        del args['sync']
        bt.assert_eq(e.q.error('blockdev-mirror', args)['desc'], "Parameter 'sync' is missing",
                     'no sync')
        bt.assert_eq(e.q.execute('query-jobs'), [], 'no job left')
        bt.assert_eq('mirror_top' in e.node_drivers().values(), False, 'no filter left')
        # A target read by an export (the job does not share consistent
        # read), and an export on a target being written.
        conflict = ("Permission conflict on node 'tgt': permissions '%s' are both required "
                    "by an unnamed block device (uses node 'tgt' as 'root' child) and "
                    "unshared by an unnamed block device (uses node 'tgt' as 'root' child).")
        e.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp1', 'node-name': 'tgt',
                                         'name': 't', 'writable': False})
        bt.assert_eq(e.q.error('blockdev-mirror', base)['desc'], conflict % 'consistent read',
                     'exported target')
        e.q.execute('block-export-del', {'id': 'exp1'})
        e.q.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
        # A running mirror (data to copy, 1 byte/s): its source is no
        # root node any more.
        e.nbd_write(['write -P 0x31 0 %d' % (2 * MiB)])
        e.mirror(speed=1)
        err = e.q.error('blockdev-mirror', dict(base, **{'job-id': 'm1', 'target': 'small'}))
        bt.assert_eq(err['desc'], 'Need a root block node', 'second mirror')
        err = e.q.error('block-export-add', {'type': 'nbd', 'id': 'exp1', 'node-name': 'tgt',
                                             'name': 't', 'writable': False})
        bt.assert_eq(err['desc'], conflict % 'consistent read', 'export of the target')
        # Neither side may be resized under the job (QEMU: op blockers,
        # "Device '(null)' is in use"; blockd: a permission conflict).
        for node in ('src', 'tgt'):
            e.q.error('block_resize', {'node-name': node, 'size': 2 * SIZE})
        sizes = {n['node-name']: n['image']['virtual-size']
                 for n in e.q.execute('query-named-block-nodes')}
        bt.assert_eq((sizes['src'], sizes['tgt']), (SIZE, SIZE), 'sizes')
        err = e.q.error('job-complete', {'id': 'm0'})
        bt.assert_eq(err['desc'], "Job 'm0' in state 'running' cannot accept command verb "
                     "'complete'", 'complete before ready')
        e.q.execute('job-cancel', {'id': 'm0'})
        e.wait_job('BLOCK_JOB_CANCELLED')
        # A target of another size: the job fails.
        e.mirror(target='small')
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), 'Source and target image have different sizes',
                     'size mismatch')
        bt.assert_eq(e.export_node(), 'src', 'export node')
        e.nbd_write(['write -P 0x33 0 4096'])
        e.check_export_reads_ref()


def test_write_blocking_writes_target_at_once():
    """write-blocking: a write acknowledged over NBD is in the target
    already; a forced cancel right after (no final copy) keeps it there.
    The job is held at 1 byte/s so that it copies nothing by itself."""
    with Env(prefill=False) as e:
        e.mirror(sync='none', speed=1, **{'copy-mode': 'write-blocking'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(['write -P 0x6b %d %d' % (5 * MiB, 256 * 1024),
                     'write -P 0x6c %d %d' % (9 * MiB + 512, 4096)])
        e.q.execute('job-cancel', {'id': 'm0'})
        e.wait_job('BLOCK_JOB_CANCELLED')
        e.q.execute('blockdev-del', {'node-name': 'tgt'})
        e.stop_and_check(e.src)
        p = bt.run(['qemu-img', 'compare', '-F', 'raw', e.tgt, e.ref], check=False)
        bt.assert_eq(p.returncode, 0, 'target vs reference: ' + p.stdout)
        bt.run(['qemu-img', 'check', e.tgt])


def test_replaces_below_a_filter():
    """device is a copy-on-read filter above 'src', replaces=src: on
    completion the filter's child becomes the target; src is free."""
    with Env() as e:
        e.q.execute('block-export-del', {'id': 'exp0'})
        e.q.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
        e.q.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor',
                                     'file': 'src'})
        e.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'cor',
                                         'name': 'disk', 'writable': True})
        e.mirror(device='cor', replaces='src')
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(writes(10, 30))
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        bt.assert_eq(e.export_node(), 'cor', 'export node')
        e.q.execute('blockdev-del', {'node-name': 'src'})
        err = e.q.error('blockdev-del', {'node-name': 'tgt'})
        bt.assert_eq(err['desc'], 'Block device tgt is in use', 'target in use')
        e.nbd_write(writes(11, 10))
        e.check_export_reads_ref()
        e.stop_and_check(e.tgt)


def top_allocated(image):
    """Bytes the image's own layer holds (qemu-img map, shared)."""
    m = json.loads(bt.run(['qemu-img', 'map', '-U', '--output=json', '-f', 'qcow2',
                           image]).stdout)
    return sum(x['length'] for x in m if x['depth'] == 0 and x['data'])


def test_progress():
    """len/offset as QEMU counts them: sync=full counts the whole disk
    (its zeroing of the target), top what the top layer holds, none
    nothing; a write in ready adds its size."""
    for sync, kw in (('full', {}), ('top', {'backing': True, 'target_backing': True}),
                     ('none', {})):
        with Env(**kw) as e:
            at_ready = {'full': SIZE, 'top': top_allocated(e.src), 'none': 0}[sync]
            e.mirror(sync=sync)
            ev = e.q.wait_event('BLOCK_JOB_READY', timeout=60)
            bt.assert_eq((ev['data']['len'], ev['data']['offset']), (at_ready, at_ready),
                         sync + ': progress at ready')
            e.nbd_write(['write -P 0x44 0 1M'])
            bt.wait_for(lambda: e.job()['offset'] == at_ready + MiB, 30, 'write copied')
            bt.assert_eq(e.job()['len'], at_ready + MiB, sync + ': len')
            e.q.execute('job-complete', {'id': 'm0'})
            ev = e.wait_job()
            bt.assert_eq((ev['data']['len'], ev['data']['offset']),
                         (at_ready + MiB, at_ready + MiB), sync + ': progress at the end')


def test_soft_cancel_before_ready_is_forced():
    """block-job-cancel before ready cancels (BLOCK_JOB_CANCELLED)."""
    with Env() as e:
        e.mirror(speed=MiB)
        e.q.execute('block-job-cancel', {'device': 'm0'})
        ev = e.wait_job('BLOCK_JOB_CANCELLED')
        bt.assert_eq(ev['data']['device'], 'm0', 'device')
        bt.assert_eq(e.q.execute('query-jobs'), [], 'jobs')
        e.nbd_write(writes(14, 5))
        e.check_export_reads_ref()
        e.stop_and_check(e.src)


def test_shutdown_with_jobs():
    """SIGTERM with one mirror copying and one ready: the daemon exits
    cleanly, every image checks clean, the source holds all writes."""
    with Env(backing=True, target_backing=True) as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('t2.qcow2'), str(SIZE)])
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('s2.qcow2'), str(SIZE)])
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 's2',
                                     'file': {'driver': 'file',
                                              'filename': e.d.path('s2.qcow2')}})
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't2',
                                     'file': {'driver': 'file',
                                              'filename': e.d.path('t2.qcow2')}})
        e.mirror(sync='top')
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.mirror(**{'job-id': 'm1', 'device': 's2', 'target': 't2', 'speed': 1})
        e.nbd_write(writes(15, 20))
        bt.assert_eq(e.d.stop(), 0, 'exit code')
        for img in (e.src, e.tgt, e.d.path('s2.qcow2'), e.d.path('t2.qcow2')):
            bt.run(['qemu-img', 'check', img])
        p = bt.run(['qemu-img', 'compare', '-F', 'raw', e.src, e.ref], check=False)
        bt.assert_eq(p.returncode, 0, 'source vs reference: ' + p.stdout)


def test_target_in_the_source_chain():
    """A backing node, or a filter above a node of the source's chain,
    is refused as target."""
    with Env(prefill=False) as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.base, str(SIZE)])
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('top.qcow2'), str(SIZE)])
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                                     'file': {'driver': 'file', 'filename': e.base}})
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'base',
                                     'file': {'driver': 'file',
                                              'filename': e.d.path('top.qcow2')}})
        args = {'job-id': 'm0', 'device': 'top', 'target': 'base', 'sync': 'full'}
        err = e.q.error('blockdev-mirror', args)
        bt.assert_eq(err['desc'], "Node 'base' is busy: node is used as backing hd of 'top'",
                     'backing node as target')
        e.q.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor',
                                     'file': 'base'})
        err = e.q.error('blockdev-mirror', dict(args, target='cor'))
        bt.assert_eq(err['desc'], "Cannot mirror to a filter on top of a node in the "
                     "source's backing chain", 'filter above the chain as target')
        bt.assert_eq(e.q.execute('query-jobs'), [], 'jobs')
        bt.assert_eq('mirror_top' in e.node_drivers().values(), False, 'no filter left')


def nbd_load(e, seed, rounds, per_round=16, slot=128 * 1024):
    """Rounds of many writes in flight at once on one libnbd connection
    (distinct slots within a round, so their order does not matter);
    applied to the reference file too."""
    nbd = bt.require_nbd()
    import random
    rnd = random.Random(seed)
    ref = bytearray(open(e.ref, 'rb').read())
    with bt.nbd_connection(e.d.uri()) as h:
        for r in range(rounds):
            bufs = []    # alive until the writes complete
            for s in rnd.sample(range(SIZE // slot), per_round):
                length = rnd.randrange(1, slot // 512) * 512
                off = s * slot + rnd.randrange(0, (slot - length) // 512 + 1) * 512
                data = bytes([rnd.randrange(1, 256)]) * length
                ref[off:off + length] = data
                bufs.append(nbd.Buffer.from_bytearray(bytearray(data)))
                h.aio_pwrite(bufs[-1], off)
            while h.aio_in_flight() > 0:
                h.poll(-1)
        h.flush()
    with open(e.ref, 'wb') as f:
        f.write(ref)


def test_many_writes_in_flight():
    """libnbd keeps 16 writes in flight while the mirror copies and in
    ready, in both copy modes; nothing is lost."""
    for mode in ('background', 'write-blocking'):
        with Env() as e:
            e.mirror(speed=16 * MiB, **{'copy-mode': mode})
            nbd_load(e, 1, 40)
            e.q.wait_event('BLOCK_JOB_READY', timeout=60)
            nbd_load(e, 2, 40)
            e.q.execute('job-complete', {'id': 'm0'})
            ev = e.wait_job()
            bt.assert_eq(ev['data'].get('error'), None, mode + ': completion error')
            nbd_load(e, 3, 5)
            e.check_export_reads_ref()
            e.stop_and_check(e.tgt)


def test_complete_while_writing():
    """job-complete while a client keeps writing: the job converges, the
    pivot happens under the writer's connection, nothing is lost."""
    for mode in ('background', 'write-blocking'):
        with Env() as e:
            e.mirror(**{'copy-mode': mode})
            e.q.wait_event('BLOCK_JOB_READY', timeout=60)
            writer = e.nbd_writer(writes(21, 400))
            e.q.execute('job-complete', {'id': 'm0'})
            ev = e.wait_job()
            bt.assert_eq(ev['data'].get('error'), None, mode + ': completion error')
            wait_writer(writer)
            e.check_export_reads_ref()
            e.stop_and_check(e.tgt)


def test_fuse_export_across_the_pivot():
    """The source is exported over FUSE (only: QEMU's NBD export does not
    share the resize permission a writable FUSE export takes); a file
    descriptor on the mount stays open across the copy and the pivot and
    writes into the target afterwards.  Deliberate difference: QEMU 7.2
    refuses the mirror (its job does not share the resize permission the
    FUSE export holds); blockd's mirror_top filter does not pass resize
    down and refuses resizes itself while the job runs."""
    bt.require_fuse()
    with Env() as e:
        mnt = e.d.path('disk.raw')
        open(mnt, 'w').close()
        e.q.execute('block-export-del', {'id': 'exp0'})
        e.q.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
        e.q.execute('block-export-add', {'type': 'fuse', 'id': 'fuse0', 'node-name': 'src',
                                         'mountpoint': mnt, 'writable': True})
        with bt.fuse_mounted(mnt):
            with bt.fd_open(mnt, os.O_RDWR) as fd:
                ref = bytearray(open(e.ref, 'rb').read())

                def fuse_write(seed, n):
                    for i in range(n):
                        off = ((seed * 7717 + i * 104729) % (SIZE // 4096 - 16)) * 4096
                        data = bytes([(seed + i) % 250 + 1]) * (8192 + 512 * (i % 5))
                        bt.assert_eq(os.pwrite(fd, data, off), len(data), 'pwrite')
                        ref[off:off + len(data)] = data

                if bt.is_reference():
                    err = e.q.error('blockdev-mirror', {'job-id': 'm0', 'device': 'src',
                                                        'target': 'tgt', 'sync': 'full'})
                    bt.assert_in("permissions 'resize' are both required", err['desc'],
                                 'refusal')
                    return
                e.mirror(speed=16 * MiB)
                fuse_write(1, 50)
                e.q.wait_event('BLOCK_JOB_READY', timeout=60)
                fuse_write(2, 50)
                os.fsync(fd)
                e.q.execute('job-complete', {'id': 'm0'})
                ev = e.wait_job()
                bt.assert_eq(ev['data'].get('error'), None, 'completion error')
                fuse_write(3, 20)
                os.fsync(fd)
                with open(e.ref, 'wb') as f:
                    f.write(ref)
                got = os.pread(fd, SIZE, 0)
                bt.assert_eq(got == bytes(ref), True, 'FUSE view vs reference')
            e.q.execute('block-export-del', {'id': 'fuse0'})
            e.q.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
            e.stop_and_check(e.tgt)


def test_other_operations_during_mirror():
    """While a mirror runs: the source's own backing link is not frozen
    (QEMU 7.2 freezes only filter -> source), stream and commit on the
    source are refused, its backing node cannot be deleted."""
    with Env(prefill=False) as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.base, str(SIZE)])
        top = e.d.path('top.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', top, str(SIZE)])
        bt.qemu_io(top, 'write -P 0x41 0 %d' % (2 * MiB), fmt='qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('t2.qcow2'), str(SIZE)])
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                                     'file': {'driver': 'file', 'filename': e.base}})
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'base',
                                     'file': {'driver': 'file', 'node-name': 'ftop',
                                              'filename': top}})
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't2',
                                     'file': {'driver': 'file',
                                              'filename': e.d.path('t2.qcow2')}})
        e.mirror(device='top', target='t2', speed=1)
        reopen = {'driver': 'qcow2', 'node-name': 'top', 'file': 'ftop'}
        e.q.execute('blockdev-reopen', {'options': [dict(reopen, backing=None)]})
        e.q.execute('blockdev-reopen', {'options': [dict(reopen, backing='base')]})
        err = e.q.error('block-stream', {'job-id': 's0', 'device': 'top'})
        bt.assert_eq(err['desc'], "Node 'top' is busy: block device is in use by block job: "
                     "mirror", 'stream')
        err = e.q.error('block-commit', {'job-id': 'c0', 'device': 'top'})
        bt.assert_eq(err['desc'], 'Need a root block node', 'commit')
        err = e.q.error('blockdev-del', {'node-name': 'base'})
        bt.assert_eq(err['desc'], "Node 'base' is busy: node is used as backing hd of 'top'",
                     'blockdev-del')
        e.q.execute('job-cancel', {'id': 'm0'})
        e.wait_job('BLOCK_JOB_CANCELLED')
        # Afterwards the source takes jobs again.
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top'})
        ev = e.wait_job(jid='s0')
        bt.assert_eq(ev['data'].get('error'), None, 'stream after the mirror')


def test_granularity_bitmap():
    """The job's anonymous bitmap on the source, as QEMU lists it: the
    target's cluster size by default, or 'granularity'; gone after."""
    with Env() as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096',
                e.d.path('t4k.qcow2'), str(SIZE)])
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't4k',
                                     'file': {'driver': 'file',
                                              'filename': e.d.path('t4k.qcow2')}})
        for target, gran, expected in (('tgt', None, 65536), ('tgt', 1024, 1024),
                                       ('t4k', None, 4096), ('tgt', 8 * MiB, 8 * MiB)):
            args = {'target': target, 'speed': 1}
            if gran:
                args['granularity'] = gran
            e.mirror(**args)
            bms = [n.get('dirty-bitmaps') for n in e.q.execute('query-named-block-nodes')
                   if n['node-name'] == 'src'][0]
            bt.assert_eq([(b.get('name'), b['granularity'], b['busy'], b['persistent'],
                           b['recording']) for b in bms],
                         [(None, expected, False, False, True)], 'bitmaps %r' % args)
            e.q.execute('job-cancel', {'id': 'm0'})
            e.wait_job('BLOCK_JOB_CANCELLED')
            bms = [n.get('dirty-bitmaps') for n in e.q.execute('query-named-block-nodes')
                   if n['node-name'] == 'src'][0]
            bt.assert_eq(bms, None, 'bitmaps after the job')


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
