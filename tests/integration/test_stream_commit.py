#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""block-stream and block-commit under a live NBD export.

A three-image qcow2 chain base <- mid <- top is opened by the daemon and top is
exported writable over NBD. Each job runs while qemu-io writes through the
export; the writes happen while the job is throttled (speed), so they always
overlap it. A raw reference file gets the same writes; afterwards the images
are compared with it by qemu-img (outside the daemon) and pass qemu-img check.
Also: cancel, pause/resume, speed, error paths (blkdebug inject-error),
QEMU's argument refusals. Every test passes against qemu-storage-daemon."""

import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, fio, main, qemu_io,  # noqa: E402
                         require_fio_nbd, require_nbd, run, tests_of)

MiB = 1024 * 1024
SIZE = 16 * MiB
SLOW = 64 * 1024          # bytes/s: far from done while the writes run

# Data of each layer: (pattern, offset, length)
LAYERS = {
    'base': [(0x11, 0, 4 * MiB), (0x12, 8 * MiB, 2 * MiB), (0x13, 15 * MiB, MiB)],
    'mid': [(0x21, 2 * MiB, 4 * MiB), (0x22, 9 * MiB, 2 * MiB), (0x23, 12 * MiB, 512 * 1024)],
    'top': [(0x31, 5 * MiB, MiB), (0x32, 14 * MiB, 64 * 1024)],
}
# Written through the export while a job runs.
GUEST_WRITES = ['write -P 0x41 0 64k', 'write -P 0x42 3M 1M', 'write -P 0x43 9500k 300k',
                'write -z 12M 256k', 'write -P 0x44 15872k 512k', 'write -P 0x45 7M 64k']


class Chain:
    def __init__(self, d):
        self.d = d
        self.img = {n: d.path(n + '.qcow2') for n in ('base', 'mid', 'top')}
        self.ref = d.path('ref.raw')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', self.img['base'], str(SIZE)])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', self.img['base'], '-F', 'qcow2',
             self.img['mid']])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', self.img['mid'], '-F', 'qcow2',
             self.img['top']])
        for name, writes in LAYERS.items():
            qemu_io(self.img[name], *['write -P 0x%x %d %d' % w for w in writes], fmt='qcow2')
        # The guest's view before the job, as a raw reference.
        run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', self.img['top'], self.ref])

    def opts(self, mid_file=None):
        def layer(name, backing):
            o = {'driver': 'qcow2', 'node-name': name,
                 'file': {'driver': 'file', 'node-name': name + '-file',
                          'filename': self.img[name]}}
            if backing is not None:
                o['backing'] = backing
            return o
        base = layer('base', None)
        mid = layer('mid', base)
        if mid_file:
            mid['file'] = mid_file
        return layer('top', mid)

    def guest_writes(self, q):
        """The writes, through the export and into the reference."""
        qemu_io(self.d.uri('top'), *GUEST_WRITES)
        qemu_io(self.ref, *GUEST_WRITES)

    def compare(self, image, ref=None):
        run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', image, ref or self.ref])

    def check_all(self):
        for img in self.img.values():
            run(['qemu-img', 'check', '-q', img])

    def backing_of(self, name):
        info = json.loads(run(['qemu-img', 'info', '-U', '--output=json',
                               self.img[name]]).stdout)
        return info.get('backing-filename')


class Env:
    def __init__(self, d, mid_file=None, export=True):
        self.d = d
        self.c = Chain(d)
        self.q = d.qmp()
        opts = self.c.opts(mid_file)
        if mid_file:
            # QEMU would add the header's backing name as 'filename' to an
            # inline mid whose file is not a plain file node: add mid first.
            self.q.execute('blockdev-add', opts['backing'])
            opts['backing'] = 'mid'
        self.q.execute('blockdev-add', opts)
        self.q.execute('nbd-server-start',
                       {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        if export:
            self.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'top',
                                                'name': 'top', 'writable': True})

    def nodes(self):
        return [n['node-name'] for n in self.q.execute('query-named-block-nodes')]

    def job(self, job_id):
        for j in self.q.execute('query-block-jobs'):
            if j['device'] == job_id:
                return j
        return None

    def wait_status(self, job_id, status):
        self.q.wait_job_status(job_id, status)

    def wait_end(self, job_id, name='BLOCK_JOB_COMPLETED'):
        """Wait for the (auto-dismissed) job to end; returns the data of
        its end event, which must be `name`."""
        ev = self.q.run_job(job_id, auto_dismiss=True, wait=120).event
        assert_eq(ev['event'], name, 'end of job ' + job_id)
        return ev['data']

    def finish_fast(self, job_id):
        # The job may have finished already (then it is gone).
        r = self.q.cmd('block-job-set-speed', {'device': job_id, 'speed': 0})
        if 'error' in r:
            assert_eq(r['error']['class'], 'DeviceNotActive', 'set-speed: %r' % r)

    def stop_daemon(self):
        self.q.execute('block-export-del', {'id': 'exp0', 'mode': 'hard'}) \
            if self.has_export() else None
        self.d.stop()

    def has_export(self):
        return any(e['id'] == 'exp0' for e in self.q.execute('query-block-exports'))


def daemon():
    return Daemon()


def random_writes(seed, count=1500):
    """A deterministic mix of small writes and zero writes (no discards:
    what a discarded range of an overlay reads back is not defined)."""
    rng = random.Random(seed)
    cmds = []
    for _ in range(count):
        length = rng.choice([512, 4096, 65536, 3 * 4096 + 512])
        offset = rng.randrange(0, SIZE - length) & ~511
        kind = rng.random()
        if kind < 0.85:
            cmds.append('write -P 0x%x %d %d' % (rng.randrange(1, 256), offset, length))
        else:
            cmds.append('write -z %d %d' % (offset, length))
    return cmds


def run_racing_writes(e, seed):
    """Random writes through the export while the job copies at a speed
    that lets it run through them; then the same writes on the reference."""
    cmds = random_writes(seed)
    p = subprocess.run(['qemu-io', '-f', 'raw', e.d.uri('top')], input='\n'.join(cmds) + '\n',
                       capture_output=True, text=True, errors='replace', timeout=300)
    assert_eq((p.returncode, 'error' in p.stdout.lower()), (0, False),
              'racing writes: %s' % p.stdout[-300:])
    qemu_io(e.c.ref, *cmds)


# --- stream ---

def test_stream_live_writes():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': SLOW})
        e.c.guest_writes(e.q)
        assert_eq(e.job('s0')['status'], 'running', 'still streaming during the writes')
        # Through the filter: data and block status (holes) as the reference.
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.finish_fast('s0')
        ev = e.wait_end('s0')
        assert_eq(ev.get('error'), None, 'stream error')
        assert_eq(ev['offset'], ev['len'], 'offset == len')
        assert_eq(ev['len'], SIZE, 'len')
        nodes = e.nodes()
        for gone in ('mid', 'base', 'mid-file', 'base-file'):
            assert_eq(gone in nodes, False, '%s dropped' % gone)
        # Still served: the export reads the streamed image.
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), None, 'no backing file in the header')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_racing_writes():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': 8 * MiB})
        run_racing_writes(e, 1)
        e.finish_fast('s0')
        assert_eq(e.wait_end('s0').get('error'), None, 'stream error')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.stop_daemon()
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_base_node():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'base-node': 'base',
                                     'speed': SLOW, 'filter-node-name': 'cor0'})
        assert_in('cor0', e.nodes(), 'named copy-on-read filter')
        e.c.guest_writes(e.q)
        e.finish_fast('s0')
        ev = e.wait_end('s0')
        assert_eq(ev.get('error'), None, 'stream error')
        nodes = e.nodes()
        assert_eq('mid' in nodes or 'cor0' in nodes, False, 'mid and filter gone')
        assert_in('base', nodes, 'base kept')
        top = [n for n in e.q.execute('query-named-block-nodes') if n['node-name'] == 'top'][0]
        assert_eq(top['backing_file_depth'], 1, 'top backing depth')
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), e.c.img['base'], 'header names base')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_bottom():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'bottom': 'mid',
                                     'speed': SLOW})
        e.c.guest_writes(e.q)
        e.finish_fast('s0')
        assert_eq(e.wait_end('s0').get('error'), None, 'stream error')
        nodes = e.nodes()
        assert_eq(('mid' in nodes, 'base' in nodes), (False, True), 'mid dropped, base kept')
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), e.c.img['base'], 'header names base')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_cancel():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': SLOW})
        e.c.guest_writes(e.q)
        e.q.execute('block-job-cancel', {'device': 's0'})
        ev = e.wait_end('s0', 'BLOCK_JOB_CANCELLED')
        assert_eq(ev['device'], 's0', 'cancelled event')
        assert_eq(e.job('s0'), None, 'job gone (auto-dismiss)')
        nodes = e.nodes()
        assert_in('mid', nodes, 'chain kept')
        assert_in('base', nodes, 'chain kept')
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), e.c.img['mid'], 'header unchanged')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_pause_resume():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': SLOW})
        e.q.execute('block-job-pause', {'device': 's0'})
        e.wait_status('s0', 'paused')
        j = e.job('s0')
        assert_eq((j['paused'], j['status']), (True, 'paused'), 'paused job')
        err = e.q.error('block-job-cancel', {'device': 's0'})
        assert_eq(err['desc'], "The block job for device 's0' is currently paused",
                  'soft cancel of a paused job')
        e.c.guest_writes(e.q)
        e.q.execute('block-job-resume', {'device': 's0'})
        e.wait_status('s0', 'running')
        e.finish_fast('s0')
        ev = e.wait_end('s0')
        assert_eq(ev.get('error'), None, 'stream error')
        e.stop_daemon()
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_speed():
    with daemon() as d:
        d.start()
        e = Env(d, export=False)
        err = e.q.error('block-stream', {'job-id': 's0', 'device': 'top', 'speed': -1})
        assert_eq(err['desc'], "Parameter 'speed' expects a non-negative value", 'speed < 0')
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'speed': SLOW})
        assert_eq(e.job('s0')['speed'], SLOW, 'speed shown')
        err = e.q.error('block-job-set-speed', {'device': 's0', 'speed': -5})
        assert_eq(err['desc'], "Parameter 'speed' expects a non-negative value",
                  'set-speed < 0')
        e.q.execute('block-job-set-speed', {'device': 's0', 'speed': 2 * SLOW})
        assert_eq(e.job('s0')['speed'], 2 * SLOW, 'new speed shown')
        e.finish_fast('s0')
        assert_eq(e.wait_end('s0').get('error'), None, 'stream error')


def _blkdebug_mid(env_dir, once):
    return {'driver': 'blkdebug', 'node-name': 'mid-dbg',
            'inject-error': [{'event': 'read_aio', 'errno': 5, 'once': once}],
            'image': {'driver': 'file', 'node-name': 'mid-file',
                      'filename': os.path.join(env_dir, 'mid.qcow2')}}


def test_stream_read_error_report():
    with daemon() as d:
        d.start()
        e = Env(d, mid_file=_blkdebug_mid(d.dir, False), export=False)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top'})
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        assert_eq((ev['data']['device'], ev['data']['operation'], ev['data']['action']),
                  ('s0', 'read', 'report'), 'error event')
        ev = e.wait_end('s0')
        assert_eq(ev.get('error'), 'Input/output error', 'job error')
        assert_in('mid', e.nodes(), 'chain kept after the failure')
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), e.c.img['mid'], 'header unchanged')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_read_error_stop():
    with daemon() as d:
        d.start()
        e = Env(d, mid_file=_blkdebug_mid(d.dir, True), export=False)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'on-error': 'stop'})
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        assert_eq(ev['data']['action'], 'stop', 'error action')
        e.wait_status('s0', 'paused')
        j = e.job('s0')
        assert_eq((j['io-status'], j['paused']), ('failed', True), 'stopped job')
        e.q.execute('block-job-resume', {'device': 's0'})
        ev = e.wait_end('s0')
        assert_eq(ev.get('error'), None, 'completes after resume (error was once)')
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), None, 'streamed')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_stream_refusals():
    with daemon() as d:
        d.start()
        e = Env(d, export=False)
        cases = [
            ({'device': 'top', 'base': 'x', 'base-node': 'base'},
             "'base' and 'base-node' cannot be specified at the same time"),
            ({'device': 'top', 'base': 'x', 'bottom': 'mid'},
             "'base' and 'bottom' cannot be specified at the same time"),
            ({'device': 'top', 'bottom': 'mid', 'base-node': 'base'},
             "'bottom' and 'base-node' cannot be specified at the same time"),
            ({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
            ({'device': 'top', 'base': 'nope'}, "Can't find 'nope' in the backing chain"),
            ({'device': 'top', 'base-node': 'top'},
             "Node 'top' is not a backing image of 'top'"),
            ({'device': 'mid', 'base-node': 'top'},
             "Node 'top' is not a backing image of 'mid'"),
            ({'device': 'top', 'backing-file': 'x'},
             'backing file specified, but streaming the entire chain'),
            ({'device': 'mid', 'bottom': 'top'},
             "Node 'top' is not in a chain starting from 'mid'"),
        ]
        err = e.q.error('block-stream', {'device': 'top'})
        assert_eq(err['desc'], "Invalid job ID ''", 'no job-id on a node')
        for internal in ('commit_top', 'mirror_top'):
            err = e.q.error('blockdev-add', {'driver': internal, 'node-name': 'x',
                                             'backing': 'top'})
            assert_eq(err['desc'], "Parameter 'driver' does not accept value '%s'" % internal,
                      'internal filter')
        # Nor are they in the schema's BlockdevDriver, as in QEMU.
        schema = e.q.execute('query-qmp-schema')
        by_name = {t['name']: t for t in schema}
        drivers = [t for t in schema if t.get('meta-type') == 'object' and
                   any(m['name'] == 'driver' for m in t.get('members', []))
                   and t.get('tag') == 'driver']
        assert drivers, 'BlockdevOptions in the schema'
        enum_name = [m['type'] for m in drivers[0]['members'] if m['name'] == 'driver'][0]
        values = by_name[enum_name]['values']
        assert_in('copy-before-write', values, 'BlockdevDriver')
        for internal in ('commit_top', 'mirror_top'):
            assert internal not in values, (internal, values)
        for args, desc in cases:
            args = dict(args, **{'job-id': 's0'})
            assert_eq(e.q.error('block-stream', args)['desc'], desc, json.dumps(args))
        assert_eq(e.q.execute('query-block-jobs'), [], 'no job left behind')
        assert_eq(sorted(e.nodes()), sorted(['top', 'top-file', 'mid', 'mid-file', 'base',
                                             'base-file']), 'graph unchanged')
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top', 'base': e.c.img['base'],
                                     'backing-file': 'named-by-user.qcow2', 'speed': SLOW})
        err = e.q.error('block-stream', {'job-id': 's1', 'device': 'top'})
        assert_eq(err['desc'], "Node 'top' is busy: block device is in use by block job: "
                  'stream', 'second job on the chain')
        e.finish_fast('s0')
        assert_eq(e.wait_end('s0').get('error'), None, 'stream to a base given by file name')
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), 'named-by-user.qcow2', "header holds 'backing-file'")


# --- commit ---

def test_commit_intermediate_live_writes():
    with daemon() as d:
        d.start()
        e = Env(d)
        mid_view = d.path('mid-view.raw')
        run(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O', 'raw', e.c.img['mid'],
             mid_view])
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                                     'speed': SLOW})
        e.c.guest_writes(e.q)
        assert_eq(e.job('c0')['status'], 'running', 'still committing during the writes')
        e.finish_fast('c0')
        ev = e.wait_end('c0')
        assert_eq(ev.get('error'), None, 'commit error')
        assert_eq(ev['offset'], ev['len'], 'offset == len')
        nodes = e.nodes()
        assert_eq('mid' in nodes, False, 'mid dropped')
        ro = {n['node-name']: n['ro'] for n in e.q.execute('query-named-block-nodes')}
        assert_eq((ro['top'], ro['base']), (False, True), 'base read-only again')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.stop_daemon()
        assert_eq(e.c.backing_of('top'), e.c.img['base'], 'header names base')
        e.c.compare(e.c.img['top'])
        e.c.compare(e.c.img['base'], mid_view)
        e.c.check_all()


def test_commit_active_live_writes():
    nbd = require_nbd()
    with daemon() as d:
        d.start()
        e = Env(d)
        # One connection held across the filter insertion and the pivot.
        h = nbd.NBD()
        h.connect_uri(d.uri('top'))
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'speed': SLOW})
        e.c.guest_writes(e.q)
        h.pwrite(b'\x61' * 65536, 10 * MiB)
        qemu_io(e.c.ref, 'write -P 0x61 10M 64k')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.finish_fast('c0')
        ev = e.q.wait_event('BLOCK_JOB_READY', timeout=120)
        assert_eq((ev['data']['device'], ev['data']['type']), ('c0', 'commit'), 'ready')
        assert_eq(e.job('c0')['ready'], True, 'ready shown')
        # Writes after 'ready' are mirrored too.
        more = ['write -P 0x51 1M 128k', 'write -P 0x52 13M 64k']
        qemu_io(d.uri('top'), *more)
        qemu_io(e.c.ref, *more)
        e.q.execute('block-job-complete', {'device': 'c0'})
        ev = e.wait_end('c0')
        assert_eq(ev.get('error'), None, 'commit error')
        assert_eq(ev['offset'], ev['len'], 'offset == len')
        # The export now serves the base, which holds everything; the held
        # connection writes and reads it.
        h.pwrite(b'\x62' * 65536, 11 * MiB)
        qemu_io(e.c.ref, 'write -P 0x62 11M 64k')
        assert_eq(h.pread(65536, 10 * MiB), b'\x61' * 65536, 'held connection read')
        h.shutdown()
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        more = ['write -P 0x53 2M 64k']
        qemu_io(d.uri('top'), *more)
        qemu_io(e.c.ref, *more)
        e.stop_daemon()
        e.c.compare(e.c.img['base'])
        e.c.check_all()


def test_commit_active_racing_writes():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'speed': 8 * MiB})
        run_racing_writes(e, 2)
        e.finish_fast('c0')
        e.q.wait_event('BLOCK_JOB_READY', timeout=120)
        run_racing_writes(e, 3)
        e.q.execute('block-job-complete', {'device': 'c0'})
        assert_eq(e.wait_end('c0').get('error'), None, 'commit error')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.stop_daemon()
        e.c.compare(e.c.img['base'])
        e.c.check_all()


def test_commit_active_complete_under_load():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=120)
        cmds = random_writes(5, count=4000)
        writer = subprocess.Popen(['qemu-io', '-f', 'raw', d.uri('top')],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, errors='replace')
        # The writer sends its first requests before job-complete.
        writer.stdin.write('\n'.join(cmds[:10]) + '\n')
        writer.stdin.flush()
        e.q.execute('block-job-complete', {'device': 'c0'})
        # Completes (converges) while the writes go on, across the pivot.
        out, err = writer.communicate('\n'.join(cmds[10:]) + '\n', timeout=300)
        assert_eq((writer.returncode, 'error' in out.lower()), (0, False),
                  'writer: %s %s' % (out[-300:], err[-300:]))
        assert_eq(e.wait_end('c0').get('error'), None, 'commit error')
        qemu_io(e.c.ref, *cmds)
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
        e.stop_daemon()
        e.c.compare(e.c.img['base'])
        e.c.check_all()


def test_commit_intermediate_racing_writes():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                                     'speed': 8 * MiB})
        run_racing_writes(e, 4)
        e.finish_fast('c0')
        assert_eq(e.wait_end('c0').get('error'), None, 'commit error')
        e.stop_daemon()
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_commit_active_cancel():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'speed': SLOW})
        e.c.guest_writes(e.q)
        e.q.execute('block-job-cancel', {'device': 'c0'})
        e.wait_end('c0', 'BLOCK_JOB_CANCELLED')
        # As QEMU 7.2, an active commit leaves the base read-write.
        ro = {n['node-name']: n['ro'] for n in e.q.execute('query-named-block-nodes')}
        assert_eq(ro['base'], False, 'base stays read-write')
        assert_eq(sorted(e.nodes()), sorted(['top', 'top-file', 'mid', 'mid-file', 'base',
                                             'base-file']), 'filter gone, chain kept')
        more = ['write -P 0x54 6M 64k']
        qemu_io(d.uri('top'), *more)       # the export still writes 'top'
        qemu_io(e.c.ref, *more)
        e.stop_daemon()
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_commit_ready_soft_cancel():
    with daemon() as d:
        d.start()
        e = Env(d, export=False)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.q.execute('block-job-cancel', {'device': 'c0'})
        ev = e.wait_end('c0')
        assert_eq(ev.get('error'), None, 'soft cancel after ready completes')
        assert_in('mid', e.nodes(), 'no pivot: chain kept')
        e.stop_daemon()
        # The base holds the whole view, the chain is unchanged.
        e.c.compare(e.c.img['base'])
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_commit_pause_resume():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                                     'speed': SLOW, 'auto-finalize': False,
                                     'auto-dismiss': False, 'filter-node-name': 'ct'})
        ct = [n for n in e.q.execute('query-named-block-nodes') if n['node-name'] == 'ct'][0]
        assert_eq((ct['drv'], ct['ro']), ('commit_top', True), 'the commit filter')
        e.q.execute('job-pause', {'id': 'c0'})
        e.wait_status('c0', 'paused')
        e.c.guest_writes(e.q)
        e.q.execute('job-resume', {'id': 'c0'})
        e.wait_status('c0', 'running')
        e.finish_fast('c0')
        e.wait_status('c0', 'pending')
        assert_in('mid', e.nodes(), 'mid kept until finalize')
        e.q.execute('job-finalize', {'id': 'c0'})
        e.wait_status('c0', 'concluded')
        e.q.execute('job-dismiss', {'id': 'c0'})
        assert_eq('mid' in e.nodes(), False, 'mid dropped')
        e.stop_daemon()
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_commit_read_error():
    with daemon() as d:
        d.start()
        e = Env(d, mid_file=_blkdebug_mid(d.dir, False), export=False)
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid'})
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        assert_eq((ev['data']['operation'], ev['data']['action']), ('read', 'report'),
                  'error event')
        ev = e.wait_end('c0')
        assert_eq(ev.get('error'), 'Input/output error', 'job error')
        nodes = e.nodes()
        assert_in('mid', nodes, 'chain kept after the failure')
        ro = {n['node-name']: n['ro'] for n in e.q.execute('query-named-block-nodes')}
        assert_eq(ro['base'], True, 'base read-only again')
        e.stop_daemon()
        e.c.compare(e.c.img['top'])
        e.c.check_all()


def test_commit_refusals():
    with daemon() as d:
        d.start()
        e = Env(d, export=False)
        cases = [
            ({'device': 'nope'}, 'DeviceNotFound', "Device 'nope' not found"),
            ({'device': 'mid'}, 'GenericError', 'Need a root block node'),
            ({'device': 'top', 'top': 'x', 'top-node': 'mid'}, 'GenericError',
             "'top-node' and 'top' are mutually exclusive"),
            ({'device': 'top', 'top-node': 'nope'}, 'GenericError',
             "Cannot find device='' nor node-name='nope'"),
            ({'device': 'top', 'top': 'nope'}, 'GenericError', 'Top image file nope not found'),
            ({'device': 'top', 'base': 'x', 'base-node': 'base'}, 'GenericError',
             "'base-node' and 'base' are mutually exclusive"),
            ({'device': 'top', 'top-node': 'base', 'base-node': 'mid'}, 'GenericError',
             "'mid' is not in this backing file chain"),
            ({'device': 'top', 'base': 'nope'}, 'GenericError',
             "Can't find 'nope' in the backing chain"),
            ({'device': 'top', 'top-node': 'mid', 'base-node': 'mid'}, 'GenericError',
             'cannot commit an image into itself'),
            ({'device': 'top', 'backing-file': 'x'}, 'GenericError',
             "'backing-file' specified, but 'top' is the active layer"),
        ]
        for args, cls, desc in cases:
            args = dict(args, **{'job-id': 'c0'})
            err = e.q.error('block-commit', args)
            assert_eq((err['class'], err['desc']), (cls, desc), json.dumps(args))
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', d.path('lone.qcow2'), '1M'])
        e.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'lone',
                                     'file': {'driver': 'file', 'filename': d.path('lone.qcow2')}})
        err = e.q.error('block-commit', {'job-id': 'c0', 'device': 'lone'})
        assert_eq(err['desc'], 'cannot commit an image into itself', 'no backing node')
        assert_eq(e.q.execute('query-block-jobs'), [], 'no job left behind')
        ro = {n['node-name']: n['ro'] for n in e.q.execute('query-named-block-nodes')}
        assert_eq(ro['base'], True, 'base untouched')
        # The deprecated file-name forms still select the images.
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top': e.c.img['mid'],
                                     'base': e.c.img['base']})
        assert_eq(e.wait_end('c0').get('error'), None, 'commit by file names')
        assert_eq('mid' in e.nodes(), False, 'mid merged and dropped')


def test_refusals_around_jobs():
    with daemon() as d:
        d.start()
        e = Env(d, export=False)

        def ro():
            return {n['node-name']: n['ro'] for n in e.q.execute('query-named-block-nodes')}
        err = e.q.error('block-stream', {'job-id': 's0', 'device': 'mid',
                                         'filter-node-name': 'base'})
        assert_eq(err['desc'], "Could not create node: Duplicate nodes with node-name='base'",
                  'filter name taken')
        assert_eq(ro()['mid'], True, 'mid read-only again')
        err = e.q.error('block-commit', {'job-id': 'c0', 'device': 'top',
                                         'filter-node-name': 'mid'})
        assert_eq(err['desc'], "Duplicate nodes with node-name='mid'", 'commit filter name')
        assert_eq(ro()['base'], True, 'base read-only again')
        err = e.q.error('block-stream', {'job-id': 's0', 'device': 'top-file'})
        assert_eq(err['desc'].startswith("Permission conflict on node '") and
                  "permissions 'resize' are both required by node 'top'" in err['desc'],
                  True, 'the job does not share resize: %r' % err['desc'])
        assert_eq(e.q.execute('query-jobs'), [], 'no job left behind')
        # A concluded job keeps its nodes until dismissed.
        e.q.execute('block-commit', {'job-id': 'c0', 'device': 'top', 'top-node': 'mid',
                                     'auto-dismiss': False})
        e.wait_status('c0', 'concluded')
        err = e.q.error('block-stream', {'job-id': 's0', 'device': 'top'})
        assert_eq(err['desc'], "Node 'top' is busy: block device is in use by block job: "
                  'commit', 'stream over a concluded commit')
        err = e.q.error('block-commit', {'job-id': 'c1', 'device': 'top'})
        assert_eq(err['desc'], 'Need a root block node', 'commit over a concluded commit')
        e.q.execute('job-dismiss', {'id': 'c0'})
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'top'})
        assert_eq(e.wait_end('s0').get('error'), None, 'stream after dismiss')


def _top_depths(c):
    """{offset: depth} of every mapping qemu-img reports for top."""
    out = run(['qemu-img', 'map', '-U', '--output=json', c.img['top']]).stdout
    return [(m['start'], m['length'], m['depth'], m['data']) for m in json.loads(out)]


def _allocated_in_top(c, offset, length):
    """Whether every byte of the range is allocated in top itself."""
    covered = 0
    for start, n, depth, data in _top_depths(c):
        lo, hi = max(start, offset), min(start + n, offset + length)
        if lo < hi and depth == 0:
            covered += hi - lo
    return covered == length


def test_copy_on_read_driver():
    for bottom in (None, 'mid'):
        with daemon() as d:
            d.start()
            e = Env(d, export=False)
            opts = {'driver': 'copy-on-read', 'node-name': 'cor', 'file': 'top'}
            if bottom:
                opts['bottom'] = bottom
            e.q.execute('blockdev-add', opts)
            e.q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'cor',
                                             'name': 'top', 'writable': True})
            # Read everything once through the filter (and write a little).
            qemu_io(d.uri('top'), 'write -P 0x66 6M 64k')
            qemu_io(e.c.ref, 'write -P 0x66 6M 64k')
            run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri('top'), e.c.ref])
            e.q.execute('block-export-del', {'id': 'exp0', 'mode': 'hard'})
            e.q.wait_event('BLOCK_EXPORT_DELETED')
            e.q.execute('blockdev-del', {'node-name': 'cor'})
            e.stop_daemon()
            e.c.check_all()
            e.c.compare(e.c.img['top'])
            # mid's data was copied up; base's only without 'bottom'.
            assert_eq(_allocated_in_top(e.c, 2 * MiB, 4 * MiB), True, 'mid data in top')
            assert_eq(_allocated_in_top(e.c, 0, 2 * MiB), bottom is None,
                      'base data in top (bottom=%s)' % bottom)
            err = None
        with daemon() as d:
            d.start()
            e = Env(d, export=False)
            err = e.q.error('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor',
                                             'file': 'top', 'bottom': 'nope'})
            assert_eq(err['desc'], "Bottom node 'nope' not found", 'bottom missing')
            e.q.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor',
                                         'file': 'top', 'bottom': 'mid'})
            err = e.q.error('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor2',
                                             'file': 'top', 'bottom': 'base'})
            assert_eq(err['desc'], "Cannot change 'backing' link from 'top' to 'mid'",
                      'links frozen by the first filter')
            err = e.q.error('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor2',
                                             'file': 'top', 'bottom': 'cor'})
            assert_eq(err['desc'], "Bottom node 'cor' is a filter", 'filter as bottom')
            err = e.q.error('blockdev-reopen', {'options': [
                {'driver': 'copy-on-read', 'node-name': 'cor', 'file': 'top', 'bottom': 'mid'}]})
            assert_eq(err['desc'], "Block format 'copy-on-read' used by node 'cor' does not "
                      'support reopening files', 'reopen')
            e.q.execute('blockdev-del', {'node-name': 'cor'})
            # Unfrozen again: the second filter may take the links now.
            e.q.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor2',
                                         'file': 'top', 'bottom': 'base'})


FIO_JOB = ['--name=rand', '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=%d' % SIZE,
           '--randseed=77', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
           '--output-format=terse']


def _fio(args, cwd):
    require_fio_nbd()
    p = fio(args, cwd=cwd)
    assert_eq(p.returncode, 0, 'fio %s (stderr %r)' % (' '.join(args[:3]), p.stderr[-2000:]))


def _fio_during(job_args, finish):
    """fio (16 requests in flight, verified) through the export while the
    job runs; the data is verified again through the export after the
    job, and offline in a raw copy of the resulting image."""
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute(*job_args)
        _fio(['--ioengine=nbd', '--uri=' + d.uri('top')] + FIO_JOB, d.dir)
        image = finish(e)
        _fio(['--ioengine=nbd', '--uri=' + d.uri('top'), '--verify_only'] + FIO_JOB, d.dir)
        e.stop_daemon()
        e.c.check_all()
        raw = d.path('out.raw')
        run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', e.c.img[image], raw])
        _fio(['--ioengine=psync', '--filename=' + raw, '--verify_only'] + FIO_JOB, d.dir)


def test_stream_fio_verify():
    def finish(e):
        e.finish_fast('s0')
        assert_eq(e.wait_end('s0').get('error'), None, 'stream error')
        return 'top'
    _fio_during(('block-stream', {'job-id': 's0', 'device': 'top', 'speed': 4 * MiB}), finish)


def test_commit_active_fio_verify():
    def finish(e):
        e.finish_fast('c0')
        e.q.wait_event('BLOCK_JOB_READY', timeout=120)
        e.q.execute('block-job-complete', {'device': 'c0'})
        assert_eq(e.wait_end('c0').get('error'), None, 'commit error')
        return 'base'
    _fio_during(('block-commit', {'job-id': 'c0', 'device': 'top', 'speed': 4 * MiB}), finish)


def test_quit_during_jobs():
    with daemon() as d:
        d.start()
        e = Env(d)
        e.q.execute('block-stream', {'job-id': 's0', 'device': 'mid', 'speed': SLOW})
        cor = [n['node-name'] for n in e.q.execute('query-named-block-nodes')
               if n['drv'] == 'copy-on-read']
        assert_eq(len(cor), 1, 'one implicit copy-on-read filter')
        err = e.q.error('block-commit', {'job-id': 'c0', 'device': 'top'})
        assert_eq(err['desc'], "Node '%s' is busy: block device is in use by block job: "
                  'stream' % cor[0], 'commit over a streamed node')
        e.c.guest_writes(e.q)
        e.q.execute('quit')
        assert_eq(d.proc.wait(30), 0, 'exit status')
        e.c.compare(e.c.img['top'])
        e.c.check_all()


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
