#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Job details as qemu-storage-daemon 7.2 shows them: query-block-jobs and
query-jobs fields after creation, while paused and after completion;
blockdev-del of nodes under jobs and their filters; a sync bitmap's
'recording' and 'busy' during a backup; job-complete in standby;
resetting the file driver's drop-cache on reopen; backing_file_depth and
the image chain through filters; jobs paused by drains.  Every test
also passes with BLOCKD_REFERENCE=1."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import Daemon, assert_eq, main, run, tests_of  # noqa: E402

MiB = 1 << 20


def file_node(name, path, **extra):
    opts = ','.join('%s=%s' % kv for kv in extra.items())
    return ['--blockdev', 'driver=file,node-name=%s,filename=%s%s'
            % (name, path, ',' + opts if opts else '')]


def qcow2_chain(d):
    """base <- mid <- top, all qcow2, with data in base and mid; the
    nodes base/mid/top over base-file/mid-file/top-file."""
    base, mid, top = d.path('base.qcow2'), d.path('mid.qcow2'), d.path('top.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '64M'])
    run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 16M', base])
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid])
    run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 2 0 8M', mid])
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top])
    return (file_node('base-file', base) +
            ['--blockdev', 'driver=qcow2,node-name=base,file=base-file'] +
            file_node('mid-file', mid) +
            ['--blockdev', 'driver=qcow2,node-name=mid,file=mid-file,backing=base'] +
            file_node('top-file', top) +
            ['--blockdev', 'driver=qcow2,node-name=top,file=top-file,backing=mid'])


def block_job(q, job):
    jobs = [j for j in q.execute('query-block-jobs') if j['device'] == job]
    assert_eq(len(jobs), 1, 'block job %s listed' % job)
    return jobs[0]


def job_info(q, job):
    jobs = [j for j in q.execute('query-jobs') if j['id'] == job]
    assert_eq(len(jobs), 1, 'job %s listed' % job)
    return jobs[0]


def check_fields(info, want, what):
    assert_eq({k: info.get(k) for k in want}, want, what)


# --- 1. query-block-jobs / query-jobs through a backup's life ---

def test_backup_fields():
    """A backup under speed=1: len at once, busy false (QEMU's backup
    waits for its block-copy call), 1 MiB copied by the first step;
    paused; pending with auto-finalize off; concluded with auto-dismiss
    off."""
    with Daemon() as d:
        src, dst = d.path('src.raw'), d.path('dst.raw')
        bt.make_image(src, 64 * MiB, pattern=0x5a)
        bt.make_image(dst, 64 * MiB)
        d.args = file_node('src', src) + file_node('dst', dst) + d.args
        d.start()
        q = d.qmp()
        q.execute('blockdev-backup', {'job-id': 'j', 'device': 'src', 'target': 'dst',
                                      'sync': 'full', 'speed': 1, 'auto-finalize': False,
                                      'auto-dismiss': False})
        info = block_job(q, 'j')
        check_fields(info, {'type': 'backup', 'len': 64 * MiB, 'busy': False, 'paused': False,
                            'speed': 1, 'ready': False, 'status': 'running',
                            'io-status': 'ok', 'auto-finalize': False,
                            'auto-dismiss': False}, 'right after creation')
        if info['offset'] not in (0, MiB):
            raise AssertionError('offset after creation: %d' % info['offset'])
        # Started with its source drained (blockdev-backup is a
        # transaction): paused until the command is done.
        assert_eq(q.wait_job_status('j', 'running') + q.wait_job_status('j', 'running'),
                  ['created', 'running', 'paused', 'running'], 'status changes')
        # The first step copies one 1 MiB chunk; the speed holds the next.
        bt.wait_for(lambda: block_job(q, 'j')['offset'] == MiB, 30, 'first chunk')
        check_fields(job_info(q, 'j'), {'type': 'backup', 'status': 'running',
                                        'current-progress': MiB,
                                        'total-progress': 64 * MiB}, 'query-jobs running')

        q.execute('job-pause', {'id': 'j'})
        q.wait_job_status('j', 'paused')
        check_fields(block_job(q, 'j'), {'status': 'paused', 'paused': True, 'busy': False,
                                         'offset': MiB, 'len': 64 * MiB, 'speed': 1},
                     'paused')
        check_fields(job_info(q, 'j'), {'status': 'paused', 'current-progress': MiB},
                     'query-jobs paused')

        q.execute('job-resume', {'id': 'j'})
        q.execute('block-job-set-speed', {'device': 'j', 'speed': 0})
        q.wait_job_status('j', 'pending', timeout=120)
        check_fields(block_job(q, 'j'), {'status': 'pending', 'paused': False, 'busy': False,
                                         'ready': False, 'offset': 64 * MiB,
                                         'len': 64 * MiB, 'speed': 0}, 'pending')
        check_fields(job_info(q, 'j'), {'status': 'pending', 'current-progress': 64 * MiB,
                                        'total-progress': 64 * MiB}, 'query-jobs pending')
        q.execute('job-finalize', {'id': 'j'})
        q.wait_job_status('j', 'concluded')
        check_fields(block_job(q, 'j'), {'status': 'concluded', 'busy': False,
                                         'offset': 64 * MiB}, 'concluded')
        assert_eq(job_info(q, 'j').get('error'), None, 'no error')
        q.execute('job-dismiss', {'id': 'j'})
        assert_eq(q.execute('query-block-jobs'), [], 'dismissed')
        d.stop()
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', src, dst])


def test_backup_max_chunk_first_step():
    """x-perf max-chunk below 1 MiB bounds the first step too."""
    with Daemon() as d:
        src, dst = d.path('src.raw'), d.path('dst.raw')
        bt.make_image(src, 8 * MiB, pattern=0x33)
        bt.make_image(dst, 8 * MiB)
        d.args = file_node('src', src) + file_node('dst', dst) + d.args
        d.start()
        q = d.qmp()
        q.execute('blockdev-backup', {'job-id': 'j', 'device': 'src', 'target': 'dst',
                                      'sync': 'full', 'speed': 1,
                                      'x-perf': {'max-chunk': 256 * 1024}})
        bt.wait_for(lambda: block_job(q, 'j')['offset'] == 256 * 1024, 30, 'first chunk')
        q.execute('job-cancel', {'id': 'j'})
        q.wait_job_status('j', 'null')


# --- 6. a mirror in ready/standby; job-complete in standby ---

def test_mirror_complete_in_standby():
    """Paused after ready: standby, ready and paused both true;
    job-complete is accepted there and takes effect at job-resume."""
    with Daemon() as d:
        src, dst = d.path('src.raw'), d.path('dst.raw')
        bt.make_image(src, 16 * MiB, pattern=0x77)
        bt.make_image(dst, 16 * MiB)
        d.args = file_node('src', src) + file_node('dst', dst) + d.args
        d.start()
        q = d.qmp()
        q.execute('blockdev-mirror', {'job-id': 'm', 'device': 'src', 'target': 'dst',
                                      'sync': 'full'})
        q.wait_job_status('m', 'ready')
        check_fields(block_job(q, 'm'), {'status': 'ready', 'ready': True, 'paused': False,
                                         'offset': 16 * MiB, 'len': 16 * MiB}, 'ready')
        q.execute('job-pause', {'id': 'm'})
        q.wait_job_status('m', 'standby')
        check_fields(block_job(q, 'm'), {'status': 'standby', 'ready': True, 'paused': True,
                                         'busy': False}, 'standby')
        e = q.error('job-finalize', {'id': 'm'})
        assert_eq(e['desc'], "Job 'm' in state 'standby' cannot accept command verb "
                  "'finalize'", 'finalize in standby')
        q.execute('job-complete', {'id': 'm'})
        # Still paused: nothing happens until the job resumes.
        assert_eq(block_job(q, 'm')['status'], 'standby', 'standby after job-complete')
        q.execute('job-resume', {'id': 'm'})
        ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        assert_eq(ev['data'].get('error'), None, 'completion error')
        q.wait_job_status('m', 'null')
        d.stop()
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', src, dst])


# --- 5. jobs paused while drained ---

def test_drained_jobs_pause():
    """QEMU pauses the jobs linked to a drained node and shows it:
    'paused' (or 'standby' after ready), then back.  A transaction (and
    blockdev-backup, which is one) drains everything first; a backup
    starts with its source drained; a reopen drains its node; a job the
    user paused shows nothing more."""
    with Daemon() as d:
        for n in ('src', 'dst', 'b', 'c', 'u'):
            bt.make_image(d.path(n + '.raw'), 16 * MiB, pattern=1 if n in ('src', 'b') else None)
        for n in ('src', 'dst', 'b', 'c', 'u'):
            d.args += file_node(n, d.path(n + '.raw'))
        d.start()
        q = d.qmp()
        seen = {'mj': [], 'bk': []}

        def follow(job, *statuses):
            for st in statuses:
                ev = q.wait_event('JOB_STATUS_CHANGE', 30, match={'id': job})
                seen[job].append(ev['data']['status'])

        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'src', 'target': 'dst',
                                      'sync': 'full'})
        follow('mj', 'created', 'running', 'ready')
        q.execute('blockdev-backup', {'job-id': 'bk', 'device': 'b', 'target': 'c',
                                      'sync': 'full', 'speed': 1})
        follow('mj', 'standby', 'ready')
        follow('bk', 'created', 'running', 'paused', 'running')
        q.execute('transaction', {'actions': [{'type': 'block-dirty-bitmap-add',
                                               'data': {'node': 'b', 'name': 'x'}}]})
        follow('mj', 'standby', 'ready')
        follow('bk', 'paused', 'running')
        q.execute('blockdev-reopen', {'options': [{'driver': 'file', 'node-name': 'src',
                                                   'filename': d.path('src.raw')}]})
        follow('mj', 'standby', 'ready')
        q.execute('blockdev-reopen', {'options': [{'driver': 'file', 'node-name': 'u',
                                                   'filename': d.path('u.raw')}]})
        q.execute('job-pause', {'id': 'bk'})
        follow('bk', 'paused')
        q.execute('transaction', {'actions': [{'type': 'block-dirty-bitmap-add',
                                               'data': {'node': 'b', 'name': 'y'}}]})
        follow('mj', 'standby', 'ready')
        assert_eq(block_job(q, 'bk')['status'], 'paused', 'still paused by the user')
        q.execute('job-resume', {'id': 'bk'})
        follow('bk', 'running')
        q.execute('job-cancel', {'id': 'bk'})
        q.execute('job-cancel', {'id': 'mj'})
        seen['bk'] += q.wait_job_status('bk', 'null')
        seen['mj'] += q.wait_job_status('mj', 'null')
        # Nothing else happened on the way (the reopen of 'u' paused no job).
        assert_eq(seen, {
            'mj': ['created', 'running', 'ready', 'standby', 'ready', 'standby', 'ready',
                   'standby', 'ready', 'standby', 'ready', 'aborting', 'concluded', 'null'],
            'bk': ['created', 'running', 'paused', 'running', 'paused', 'running', 'paused',
                   'running', 'aborting', 'concluded', 'null']}, 'status changes')


# --- 2. blockdev-del under jobs ---

def del_errors(q, names):
    return {n: q.error('blockdev-del', {'node-name': n})['desc'] for n in names}


def busy(node, job):
    return "Node '%s' is busy: block device is in use by block job: %s" % (node, job)


def test_blockdev_del_under_jobs():
    """QEMU's texts: a job's BlockBackend ('in use'), its links and filter
    (the job's op blocker), backing links, other references."""
    with Daemon() as d:
        for n in ('src', 'dst', 'm'):
            bt.make_image(d.path(n + '.raw'), 64 * MiB, pattern=1 if n == 'src' else None)
        d.args = (file_node('src-file', d.path('src.raw')) +
                  ['--blockdev', 'driver=raw,node-name=src,file=src-file'] +
                  file_node('dst', d.path('dst.raw')) + file_node('m', d.path('m.raw')) +
                  qcow2_chain(d) + d.args)
        d.start()
        q = d.qmp()

        def cancel(job, force=False):
            q.execute('block-job-cancel', {'device': job, 'force': force})
            q.wait_job_status(job, 'null')

        q.execute('blockdev-backup', {'job-id': 'b', 'device': 'src', 'target': 'dst',
                                      'sync': 'full', 'speed': 1, 'filter-node-name': 'bf'})
        assert_eq(del_errors(q, ['src', 'src-file', 'dst', 'bf']), {
            'src': 'Block device src is in use',
            'src-file': 'Block device src-file is in use',
            'dst': busy('dst', 'backup'),
            'bf': busy('bf', 'backup')}, 'backup')
        cancel('b')

        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'src', 'target': 'm',
                                      'sync': 'full', 'speed': 1, 'filter-node-name': 'mf'})
        assert_eq(del_errors(q, ['src', 'src-file', 'm', 'mf']), {
            'src': busy('src', 'mirror'),
            'src-file': 'Block device src-file is in use',
            'm': 'Node m is in use',
            'mf': busy('mf', 'mirror')}, 'mirror')
        # Another job's nodes are refused as backup source or target.
        e = q.error('blockdev-backup', {'job-id': 'b2', 'device': 'dst', 'target': 'm',
                                        'sync': 'full'})
        assert_eq(e['desc'], busy('m', 'mirror'), 'backup to a mirror target')
        cancel('mj', force=True)

        q.execute('block-stream', {'job-id': 'sj', 'device': 'top', 'base-node': 'base',
                                   'speed': 1, 'filter-node-name': 'sf'})
        assert_eq(del_errors(q, ['top', 'top-file', 'mid', 'base', 'sf']), {
            'top': busy('top', 'stream'),
            'top-file': 'Block device top-file is in use',
            'mid': busy('mid', 'stream'),
            'base': "Node 'base' is busy: node is used as backing hd of 'mid'",
            'sf': 'Node sf is in use'}, 'stream')
        cancel('sj')

        q.execute('block-commit', {'job-id': 'cj', 'device': 'top', 'top-node': 'mid',
                                   'base-node': 'base', 'speed': 1,
                                   'filter-node-name': 'cf'})
        assert_eq(del_errors(q, ['top', 'mid', 'base', 'cf']), {
            'top': busy('top', 'commit'),
            'mid': 'Node mid is in use',
            'base': 'Node base is in use',
            'cf': "Node 'cf' is busy: node is used as backing hd of 'top'"}, 'commit')
        cancel('cj')

        q.execute('block-commit', {'job-id': 'aj', 'device': 'top', 'speed': 1,
                                   'filter-node-name': 'af'})
        assert_eq(del_errors(q, ['top', 'mid', 'base', 'af']), {
            'top': busy('top', 'commit'),
            'mid': busy('mid', 'commit'),
            'base': 'Node base is in use',
            'af': busy('af', 'commit')}, 'active commit')
        cancel('aj', force=True)
        # With the jobs gone, the nodes can go.
        for n in ('bf', 'mf', 'sf', 'cf', 'af'):
            assert_eq(q.error('blockdev-del', {'node-name': n})['desc'],
                      "Failed to find node with node-name='%s'" % n, n + ' gone')
        q.execute('blockdev-del', {'node-name': 'dst'})
        q.execute('blockdev-del', {'node-name': 'm'})


# --- 3. a sync bitmap during a backup ---

def bitmap_of(q, node, name):
    for n in q.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            for b in n.get('dirty-bitmaps', []):
                if b.get('name') == name:
                    return b
    raise AssertionError('bitmap %s not on %s' % (name, node))


def anonymous_bitmaps(q, node):
    for n in q.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            return [(b['recording'], b['busy'], b['count'])
                    for b in n.get('dirty-bitmaps', []) if 'name' not in b]
    raise AssertionError('no node ' + node)


def test_sync_bitmap_recording():
    """The bitmap of an incremental backup is busy and still 'recording'
    (through its successor); user operations on it are refused; after the
    job it records again, with the writes made meanwhile."""
    with Daemon() as d:
        src, dst = d.path('src.raw'), d.path('dst.raw')
        bt.make_image(src, 64 * MiB, pattern=1)
        bt.make_image(dst, 64 * MiB)
        d.args = (file_node('src', src) + file_node('dst', dst) +
                  ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                   '--export', 'type=nbd,id=e,node-name=src,name=disk,writable=on'] + d.args)
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        q.execute('block-dirty-bitmap-add', {'node': 'src', 'name': 'b0'})
        q.execute('block-dirty-bitmap-add', {'node': 'src', 'name': 'off',
                                             'disabled': True})
        run(['qemu-io', '-f', 'raw', '-c', 'write -P 7 0 8M', d.uri()])
        check_fields(bitmap_of(q, 'src', 'b0'), {'busy': False, 'recording': True,
                                                 'count': 8 * MiB}, 'before')
        q.execute('blockdev-backup', {'job-id': 'j', 'device': 'src', 'target': 'dst',
                                      'sync': 'incremental', 'bitmap': 'b0', 'speed': 1,
                                      'filter-node-name': 'bf'})
        check_fields(bitmap_of(q, 'src', 'b0'), {'busy': True, 'recording': True,
                                                 'count': 8 * MiB}, 'during')
        # The job's own bitmaps, newest first: on the source the copy
        # bitmap (what is left of the 8 MiB) and the successor; on the
        # filter the snapshot view's (all readable, nothing done yet).
        copy, succ = anonymous_bitmaps(q, 'src')
        assert_eq((copy[:2], succ), ((False, False), (True, False, 0)), 'source bitmaps')
        if copy[2] not in (8 * MiB, 7 * MiB):
            raise AssertionError('copy bitmap count %d' % copy[2])
        assert_eq(anonymous_bitmaps(q, 'bf'), [(False, False, 64 * MiB), (False, False, 0)],
                  'filter bitmaps')
        check_fields(bitmap_of(q, 'src', 'off'), {'busy': False, 'recording': False},
                     'other bitmap')
        run(['qemu-io', '-f', 'raw', '-c', 'write -P 8 32M 1M', d.uri()])
        # The frozen bitmap does not change; its successor takes the write,
        # after the filter copied the old data (done).
        assert_eq(bitmap_of(q, 'src', 'b0')['count'], 8 * MiB, 'frozen count')
        assert_eq(anonymous_bitmaps(q, 'src')[1], (True, False, MiB), 'successor')
        assert_eq(anonymous_bitmaps(q, 'bf'), [(False, False, 64 * MiB), (False, False, MiB)],
                  'filter bitmaps after a write')
        in_use = "Bitmap 'b0' is currently in use by another operation and cannot be used"
        for cmd, args in [('block-dirty-bitmap-disable', {'node': 'src', 'name': 'b0'}),
                          ('block-dirty-bitmap-clear', {'node': 'src', 'name': 'b0'}),
                          ('block-dirty-bitmap-remove', {'node': 'src', 'name': 'b0'}),
                          ('block-dirty-bitmap-merge', {'node': 'src', 'target': 'b0',
                                                        'bitmaps': ['off']}),
                          ('blockdev-backup', {'job-id': 'j2', 'device': 'src',
                                               'target': 'dst', 'sync': 'incremental',
                                               'bitmap': 'b0'})]:
            assert_eq(q.error(cmd, args)['desc'], in_use, cmd)
        q.execute('job-cancel', {'id': 'j'})
        q.wait_job_status('j', 'null')
        check_fields(bitmap_of(q, 'src', 'b0'), {'busy': False, 'recording': True,
                                                 'count': 9 * MiB}, 'after')
        assert_eq(anonymous_bitmaps(q, 'src'), [], 'no bitmap of the job left')


# --- 7. drop-cache on reopen ---

def test_reopen_drop_cache():
    """drop-cache may change on reopen but, once given, not be left out;
    x-check-cache-dropped may be left out; other file options neither
    change nor reset."""
    cases = [
        ({'drop-cache': False}, {}, "Option 'drop-cache' cannot be reset to its default value"),
        ({'drop-cache': True}, {}, "Option 'drop-cache' cannot be reset to its default value"),
        ({'drop-cache': False}, {'drop-cache': True}, None),
        ({'drop-cache': False}, {'drop-cache': False}, None),
        ({}, {'drop-cache': False}, None),
        ({}, {}, None),
        ({'x-check-cache-dropped': True}, {}, None),
        ({'x-check-cache-dropped': True}, {'x-check-cache-dropped': False}, None),
        ({'aio': 'threads'}, {}, "Option 'aio' cannot be reset to its default value"),
        ({}, {'aio': 'threads'}, "Cannot change the option 'aio'"),
        ({'aio-max-batch': 3}, {}, "Option 'aio-max-batch' cannot be reset to its default value"),
        ({'locking': 'off'}, {'locking': 'on'}, "Cannot change the option 'locking'"),
    ]
    with Daemon() as d:
        img = d.path('a.raw')
        bt.make_image(img, 16 * MiB, pattern=3)
        d.start()
        q = d.qmp()
        for i, (old, new, want) in enumerate(cases):
            n = 'n%d' % i
            q.execute('blockdev-add', dict({'driver': 'file', 'node-name': n,
                                            'filename': img, 'locking': 'off'}, **old))
            args = {'options': [dict({'driver': 'file', 'node-name': n, 'filename': img,
                                      'locking': 'off'}, **new)]}
            if want is None:
                q.execute('blockdev-reopen', args)
            else:
                assert_eq(q.error('blockdev-reopen', args)['desc'], want, '%s -> %s' % (old, new))
            q.execute('blockdev-del', {'node-name': n})
        # A bad value is refused by the schema.
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'x', 'filename': img,
                                   'drop-cache': False})
        e = q.error('blockdev-reopen', {'options': [{'driver': 'file', 'node-name': 'x',
                                                     'filename': img, 'drop-cache': 'no'}]})
        assert_eq(e['desc'], "Invalid parameter type for 'options[0].drop-cache', "
                  "expected: boolean", 'bad drop-cache')


# --- 8. backing_file_depth through filters ---

def test_backing_depth_through_filters():
    """QEMU counts every layer below a node, filters included, and shows
    them as the backing-image chain; flat output counts nothing."""
    with Daemon() as d:
        tgt = d.path('t.raw')
        bt.make_image(tgt, 64 * MiB)
        d.args = (['--object', 'throttle-group,id=tg,x-bps-total=100000000'] +
                  qcow2_chain(d) +
                  ['--blockdev', 'driver=throttle,node-name=thr,file=top,throttle-group=tg',
                   '--blockdev', 'driver=copy-on-read,node-name=cor,file=thr'] +
                  file_node('tgt', tgt) +
                  ['--blockdev', 'driver=copy-before-write,node-name=cbw,file=cor,target=tgt',
                   '--blockdev', 'driver=raw,node-name=rawtop,file=cbw'] + d.args)
        d.start()
        q = d.qmp()
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        want = {'rawtop': (0, ['raw']),
                'cbw': (5, ['copy-before-write', 'copy-on-read', 'throttle', 'qcow2', 'qcow2',
                            'qcow2']),
                'cor': (4, ['copy-on-read', 'throttle', 'qcow2', 'qcow2', 'qcow2']),
                'thr': (3, ['throttle', 'qcow2', 'qcow2', 'qcow2']),
                'top': (2, ['qcow2', 'qcow2', 'qcow2']),
                'mid': (1, ['qcow2', 'qcow2']),
                'base': (0, ['qcow2']),
                'tgt': (0, ['file'])}
        for name, (depth, chain) in want.items():
            n = nodes[name]
            formats, img = [], n['image']
            while img:
                formats.append(img['format'])
                img = img.get('backing-image')
            assert_eq((n['backing_file_depth'], formats), (depth, chain), name)
        # backing_file: the backing's file name, filters have none.
        assert_eq(nodes['top'].get('backing_file'), d.path('mid.qcow2'), 'top backing_file')
        for name in ('thr', 'cor', 'cbw', 'rawtop'):
            assert_eq(nodes[name].get('backing_file'), None, name + ' backing_file')
        # The image chain names the layers' files.
        img = nodes['cbw']['image']
        for _ in range(3):
            img = img['backing-image']
        assert_eq((img['filename'], img['backing-filename'], img['full-backing-filename']),
                  (d.path('top.qcow2'), d.path('mid.qcow2'), d.path('mid.qcow2')),
                  'top in the chain of cbw')
        for n in q.execute('query-named-block-nodes', {'flat': True}):
            assert_eq((n['backing_file_depth'], 'backing-image' in n['image']), (0, False),
                      n['node-name'] + ' flat')
        # File names: the qcow2's backing is the one its header names, so
        # it stays out of the filters' json:; raw over a filter (no
        # protocol) shows json: of its own.
        top_json = ('{"driver": "qcow2", "file": {"driver": "file", "filename": "%s"}}'
                    % d.path('top.qcow2'))
        thr_json = '{"throttle-group": "tg", "driver": "throttle", "file": %s}' % top_json
        cor_json = '{"driver": "copy-on-read", "file": %s}' % thr_json
        assert_eq({n: nodes[n]['file'] for n in ('top', 'thr', 'cor', 'cbw', 'rawtop')}, {
            'top': d.path('top.qcow2'),
            'thr': 'json:' + thr_json,
            'cor': 'json:' + cor_json,
            'cbw': 'json:' + cor_json,
            'rawtop': 'json:{"driver": "raw", "file": {"driver": "copy-before-write", '
                      '"file": %s, "target": {"driver": "file", "filename": "%s"}}}'
                      % (cor_json, tgt)}, 'file names')


def test_image_header_backing_names():
    """ImageInfo's backing-filename is the image header's name and
    full-backing-filename where it leads from the image's directory,
    whichever backing node is attached (or none); an image without one
    in its header shows none even with a backing node."""
    with Daemon() as d:
        base, other, top = d.path('base.qcow2'), d.path('other.qcow2'), d.path('top.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '16M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', other, '16M'])
        # A relative name in the header.
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
             top])
        d.args = (file_node('base-file', base, locking='off') +
                  ['--blockdev', 'driver=qcow2,node-name=base,file=base-file'] +
                  file_node('other-file', other, locking='off') +
                  ['--blockdev', 'driver=qcow2,node-name=other,file=other-file'] + d.args)
        d.start()
        q = d.qmp()
        tf = {'driver': 'file', 'filename': top, 'locking': 'off'}
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't1', 'file': tf})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't2', 'file': tf,
                                   'backing': 'base'})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't3', 'file': tf,
                                   'backing': 'other'})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't4', 'file': tf,
                                   'backing': None})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'o2',
                                   'file': {'driver': 'file', 'filename': other,
                                            'locking': 'off'},
                                   'backing': 'base'})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        header = ('base.qcow2', base, 'qcow2')
        for name, backing_file, depth, names in [('t1', base, 1, header),
                                                 ('t2', base, 1, header),
                                                 ('t3', other, 1, header),
                                                 ('t4', None, 0, header),
                                                 ('o2', base, 1, (None, None, None))]:
            n = nodes[name]
            img = n['image']
            assert_eq((n.get('backing_file'), n['backing_file_depth'],
                       (img.get('backing-filename'), img.get('full-backing-filename'),
                        img.get('backing-filename-format'))),
                      (backing_file, depth, names), name)
        # A backing other than the header's (here: named relatively)
        # makes the node a json: with its backing, or 'null' for none.
        tfile = '"file": {"driver": "file", "filename": "%s"}' % top
        qb = ('{"driver": "qcow2", "file": {"driver": "file", "filename": "%s"}}' % base)
        qo = ('{"driver": "qcow2", "file": {"driver": "file", "filename": "%s"}}' % other)
        assert_eq({n: nodes[n]['file'] for n in ('t1', 't2', 't3', 't4', 'o2')}, {
            't1': top,
            't2': 'json:{"backing": %s, "driver": "qcow2", %s}' % (qb, tfile),
            't3': 'json:{"backing": %s, "driver": "qcow2", %s}' % (qo, tfile),
            't4': 'json:{"backing": null, "driver": "qcow2", %s}' % tfile,
            'o2': 'json:{"backing": %s, "driver": "qcow2", "file": {"driver": "file", '
                  '"filename": "%s"}}' % (qb, other)}, 'file names')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
