#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Jobs over QMP: blockdev-create of file and qcow2 images (verified with
qemu-img check/info and data written through an NBD export), the job
lifecycle as JOB_STATUS_CHANGE events, query-jobs shapes, QEMU's verb
refusals and error texts, and the job events in the schema."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, qemu_io,  # noqa: E402
                         require_tool, run, tests_of)

MiB = 1 << 20


def run_create(q, job_id, options, expect_error=None):
    """blockdev-create, wait for 'concluded', check query-jobs, dismiss.
    Returns the statuses seen."""
    q.execute('blockdev-create', {'job-id': job_id, 'options': options})
    seen = q.wait_job_status(job_id, 'concluded')
    jobs = q.execute('query-jobs')
    assert_eq(len(jobs), 1, 'jobs listed')
    info = jobs[0]
    assert_eq({k: info[k] for k in ('id', 'type', 'status', 'current-progress',
                                    'total-progress')},
              {'id': job_id, 'type': 'create', 'status': 'concluded',
               'current-progress': 1, 'total-progress': 1}, 'query-jobs')
    assert_eq(info.get('error'), expect_error, 'job error')
    # Not a block job.
    assert_eq(q.execute('query-block-jobs'), [], 'query-block-jobs')
    q.execute('job-dismiss', {'id': job_id})
    assert_eq(q.wait_job_status(job_id, 'null'), ['null'], 'dismissed')
    assert_eq(q.execute('query-jobs'), [], 'jobs after dismiss')
    return seen


def create_file(q, path, size=0, job_id='fjob', **extra):
    opts = dict({'driver': 'file', 'filename': path, 'size': size}, **extra)
    return run_create(q, job_id, opts)


def img_info(path):
    return json.loads(run(['qemu-img', 'info', '--output=json', '-U', path]).stdout)


def img_check(path):
    p = run(['qemu-img', 'check', path], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s'
                             % (path, p.returncode, p.stdout, p.stderr))


def test_create_file():
    """file: sizes and preallocation modes; events of a successful job."""
    require_tool('qemu-img')
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, size, prealloc in [('off.raw', 3 * MiB + 512, 'off'),
                                     ('falloc.raw', 2 * MiB, 'falloc'),
                                     ('full.raw', 1 * MiB, 'full'),
                                     ('zero.raw', 0, None)]:
            path = d.path(name)
            # An existing file is emptied first.
            with open(path, 'wb') as f:
                f.write(b'\x55' * 8192)
            extra = {'preallocation': prealloc} if prealloc else {}
            seen = create_file(q, path, size, **extra)
            assert_eq(seen, ['created', 'running', 'waiting', 'pending', 'concluded'],
                      'status changes')
            st = os.stat(path)
            assert_eq(st.st_size, size, name + ' size')
            if prealloc in ('falloc', 'full'):
                if st.st_blocks * 512 < size:
                    raise AssertionError('%s: only %d bytes allocated'
                                         % (name, st.st_blocks * 512))
            with open(path, 'rb') as f:
                assert_eq(f.read(8192).count(0), min(size, 8192), name + ' zeroed')
            assert_eq(img_info(path)['virtual-size'], size, name + ' info')
        create_file(q, d.path('nocow.raw'), MiB, nocow=True)
        assert_eq(os.stat(d.path('nocow.raw')).st_size, MiB, 'nocow size')


def test_create_file_errors():
    with Daemon() as d:
        d.start()
        q = d.qmp()
        run_create(q, 'e1', {'driver': 'file', 'filename': d.path('nodir/x.raw'),
                             'size': MiB},
                   "Could not create '%s': No such file or directory"
                   % d.path('nodir/x.raw'))
        run_create(q, 'e2', {'driver': 'file', 'filename': d.path('m.raw'), 'size': MiB,
                             'preallocation': 'metadata'},
                   'Unsupported preallocation mode: metadata')
        err = q.error('blockdev-create', {'job-id': 'e3', 'options': {
            'driver': 'file', 'filename': d.path('m.raw'), 'size': MiB, 'cluster-size': 512}})
        assert_eq(err['desc'], "Parameter 'options.cluster-size' is unexpected", 'unexpected')
        err = q.error('blockdev-create', {'job-id': 'e3', 'options': {'driver': 'file',
                                                                      'size': MiB}})
        assert_eq(err['desc'], "Parameter 'options.filename' is missing", 'missing')
        err = q.error('blockdev-create', {'job-id': 'e3', 'options': {'driver': 'null-co'}})
        assert_eq(err['desc'], 'Driver does not support blockdev-create', 'no create')
        assert_eq(q.execute('query-jobs'), [], 'no job left behind')


QCOW2_CASES = [
    # (options, expected qemu-img info format-specific data subset, virtual size)
    ({'size': 64 * MiB}, {'compat': '1.1', 'lazy-refcounts': False, 'refcount-bits': 16},
     65536),
    ({'size': 10 * MiB, 'version': 'v2'}, {'compat': '0.10', 'refcount-bits': 16}, 65536),
    ({'size': 32 * MiB, 'cluster-size': 512, 'refcount-bits': 1},
     {'compat': '1.1', 'refcount-bits': 1}, 512),
    ({'size': 32 * MiB, 'cluster-size': 4096, 'refcount-bits': 64, 'lazy-refcounts': True},
     {'lazy-refcounts': True, 'refcount-bits': 64}, 4096),
    ({'size': 100 * MiB, 'cluster-size': 2 * MiB, 'refcount-bits': 8},
     {'refcount-bits': 8}, 2 * MiB),
    ({'size': 5 * MiB + 512, 'compression-type': 'zlib', 'version': 'v3'},
     {'compression-type': 'zlib'}, 65536),
]


def add_file_node(q, name, path):
    q.execute('blockdev-add', {'driver': 'file', 'node-name': name, 'filename': path})


def test_create_qcow2_options():
    """qcow2 with many options: qemu-img check is clean and qemu-img info
    shows what was asked for."""
    require_tool('qemu-img')
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for i, (opts, fmt_data, cluster) in enumerate(QCOW2_CASES):
            path = d.path('img%d.qcow2' % i)
            create_file(q, path)
            add_file_node(q, 'f%d' % i, path)
            seen = run_create(q, 'q%d' % i, dict(opts, driver='qcow2', file='f%d' % i))
            assert_eq(seen, ['created', 'running', 'waiting', 'pending', 'concluded'],
                      'status changes')
            q.execute('blockdev-del', {'node-name': 'f%d' % i})
            img_check(path)
            info = img_info(path)
            assert_eq(info['format'], 'qcow2', 'format')
            assert_eq(info['virtual-size'], opts['size'], 'virtual size')
            assert_eq(info['cluster-size'], cluster, 'cluster size %r' % opts)
            data = info['format-specific']['data']
            for k, v in fmt_data.items():
                assert_eq(data.get(k), v, '%s of %r' % (k, opts))


def test_create_qcow2_preallocation():
    """preallocation=metadata/falloc/full: every guest cluster is mapped
    (qemu-img map), reads return zeroes, check is clean, and writes
    afterwards land in the preallocated clusters."""
    require_tool('qemu-img', 'qemu-io')
    cases = [('metadata', {}), ('metadata', {'cluster-size': 512, 'refcount-bits': 1}),
             ('metadata', {'version': 'v2', 'cluster-size': 4096}),
             ('falloc', {'cluster-size': 65536}), ('full', {'refcount-bits': 64}),
             ('metadata', {'cluster-size': 2 * MiB, 'lazy-refcounts': True})]
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for i, (mode, extra) in enumerate(cases):
            size = 24 * MiB + 4096 if extra.get('cluster-size', 0) != 2 * MiB else 9 * MiB
            path = d.path('p%d.qcow2' % i)
            create_file(q, path)
            add_file_node(q, 'f', path)
            run_create(q, 'p', dict(extra, driver='qcow2', file='f', size=size,
                                    preallocation=mode))
            q.execute('blockdev-del', {'node-name': 'f'})
            img_check(path)
            mapping = json.loads(run(['qemu-img', 'map', '--output=json', path]).stdout)
            assert_eq(sum(m['length'] for m in mapping if m['data']), size,
                      '%s %r: mapped bytes' % (mode, extra))
            if mode != 'metadata' and os.stat(path).st_blocks * 512 < size:
                raise AssertionError('%s: data area not allocated' % mode)
            before = os.path.getsize(path)
            qemu_io(path, 'read -P 0 0 %d' % size, 'write -P 0x6b 1M 64k',
                    'write -P 0x6c %d 4096' % (size - 4096), fmt='qcow2')
            assert_eq(os.path.getsize(path), before, '%s: no growth on write' % mode)
            img_check(path)
            qemu_io(path, 'read -P 0x6b 1M 64k', 'read -P 0 0 1M', fmt='qcow2')


def test_create_qcow2_backing():
    """backing-file and backing-fmt land in the header; qemu-img reads
    through to the backing image."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        base = d.path('base.raw')
        run(['qemu-img', 'create', '-f', 'raw', base, '4M'])
        qemu_io(base, 'write -P 0x3c 0 1M')
        d.start()
        q = d.qmp()
        for ver in ('v2', 'v3'):
            path = d.path('top-%s.qcow2' % ver)
            create_file(q, path)
            add_file_node(q, 'f', path)
            run_create(q, 'c', {'driver': 'qcow2', 'file': 'f', 'size': 4 * MiB,
                                'version': ver, 'backing-file': base, 'backing-fmt': 'raw'})
            q.execute('blockdev-del', {'node-name': 'f'})
            img_check(path)
            info = img_info(path)
            assert_eq(info.get('backing-filename'), base, 'backing file')
            assert_eq(info.get('backing-filename-format'), 'raw', 'backing format')
            qemu_io(path, 'read -P 0x3c 0 1M', 'read -P 0 1M 3M', fmt='qcow2',
                    extra=['-r', '-U'])


def test_create_qcow2_errors():
    """QEMU's refusals of bad qcow2 options, as the job's error."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        path = d.path('e.qcow2')
        create_file(q, path)
        add_file_node(q, 'f', path)
        cases = [
            ({'size': 1000}, 'Image size must be a multiple of 512 bytes'),
            ({'size': MiB, 'cluster-size': 1000},
             'Cluster size must be a power of two between 512 and 2048k'),
            ({'size': MiB, 'cluster-size': 256},
             'Cluster size must be a power of two between 512 and 2048k'),
            ({'size': MiB, 'cluster-size': 4 * MiB},
             'Cluster size must be a power of two between 512 and 2048k'),
            ({'size': MiB, 'refcount-bits': 3},
             'Refcount width must be a power of two and may not exceed 64 bits'),
            ({'size': MiB, 'refcount-bits': 128},
             'Refcount width must be a power of two and may not exceed 64 bits'),
            ({'size': MiB, 'version': 'v2', 'refcount-bits': 8},
             'Different refcount widths than 16 bits require compatibility level 1.1 '
             'or above (use version=v3 or greater)'),
            ({'size': MiB, 'version': 'v2', 'lazy-refcounts': True},
             'Lazy refcounts only supported with compatibility level 1.1 and above '
             '(use version=v3 or greater)'),
            ({'size': MiB, 'backing-fmt': 'raw'},
             'Backing format cannot be used without backing file'),
            ({'size': MiB, 'backing-file': 'b.raw', 'preallocation': 'metadata'},
             'Backing file and preallocation can only be used at the same time if '
             'extended_l2 is on'),
            ({'size': MiB, 'data-file-raw': True}, 'data-file-raw requires data-file'),
            ({'size': 1000, 'cluster-size': 1000}, 'Image size must be a multiple of 512 bytes'),
        ]
        for i, (opts, msg) in enumerate(cases):
            seen = run_create(q, 'c%d' % i, dict(opts, driver='qcow2', file='f'), msg)
            assert_eq(seen, ['created', 'running', 'aborting', 'concluded'], 'failed job')
        err = q.error('blockdev-create', {'job-id': 'x', 'options': {
            'driver': 'qcow2', 'file': 'f', 'size': MiB, 'version': 'v4'}})
        assert_eq(err['desc'], "Parameter 'version' does not accept value 'v4'", 'enum')
        err = q.error('blockdev-create', {'job-id': 'x', 'options': {
            'driver': 'qcow2', 'file': 'f'}})
        assert_eq(err['desc'], "Parameter 'options.size' is missing", 'size missing')
        # The file node is untouched by the failures and still usable.
        q.execute('blockdev-del', {'node-name': 'f'})
        assert_eq(os.path.getsize(path), 0, 'file untouched')


def test_create_node_refs():
    """'file' by missing name, read-only node, and nested definition."""
    require_tool('qemu-img')
    with Daemon() as d:
        d.start()
        q = d.qmp()
        path = d.path('n.qcow2')
        create_file(q, path)
        seen = run_create(q, 'm', {'driver': 'qcow2', 'file': 'nosuch', 'size': MiB},
                          "Cannot find device='nosuch' nor node-name='nosuch'")
        assert_eq(seen, ['created', 'running', 'aborting', 'concluded'], 'missing node')
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'ro', 'filename': path,
                                   'read-only': True})
        run_create(q, 'r', {'driver': 'qcow2', 'file': 'ro', 'size': MiB},
                   'Block node is read-only')
        q.execute('blockdev-del', {'node-name': 'ro'})
        run_create(q, 'n', {'driver': 'qcow2', 'size': 8 * MiB,
                            'file': {'driver': 'file', 'filename': path}})
        # The nested node lived only for the job.
        assert_eq(q.execute('query-named-block-nodes'), [], 'nodes after nested create')
        img_check(path)
        assert_eq(img_info(path)['virtual-size'], 8 * MiB, 'nested create size')
        missing = d.path('nodir/y')
        run_create(q, 'n2', {'driver': 'qcow2', 'size': MiB,
                             'file': {'driver': 'file', 'filename': missing}},
                   "Could not open '%s': No such file or directory" % missing)
        # A node whose file is in use by a qcow2 node cannot be rewritten.
        add_file_node(q, 'f', path)
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'q', 'file': 'f'})
        run_create(q, 'busy', {'driver': 'qcow2', 'file': 'f', 'size': MiB},
                   "Permission conflict on node 'f': permissions 'write, resize' are both "
                   "required by an unnamed block device (uses node 'f' as 'root' child) and "
                   "unshared by node 'q' (uses node 'f' as 'file' child).")
        q.execute('blockdev-del', {'node-name': 'q'})
        q.execute('blockdev-del', {'node-name': 'f'})
        img_check(path)
        assert_eq(img_info(path)['virtual-size'], 8 * MiB, 'image untouched')
        err = q.error('blockdev-create', {'job-id': 'x', 'options': {
            'driver': 'qcow2', 'file': 123, 'size': MiB}})
        assert_eq(err['desc'], "Invalid parameter type for 'file', expected: BlockdevRef",
                  'bad ref type')


def test_verb_refusals():
    """A concluded create job refuses the verbs with QEMU's texts; the
    block-job-* commands do not see it; ids are checked."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        path = d.path('v.raw')
        q.execute('blockdev-create', {'job-id': 'j', 'options': {
            'driver': 'file', 'filename': path, 'size': MiB}})
        q.wait_job_status('j', 'concluded')
        for cmd, verb in [('job-finalize', 'finalize'), ('job-complete', 'complete'),
                          ('job-pause', 'pause'), ('job-cancel', 'cancel')]:
            err = q.error(cmd, {'id': 'j'})
            assert_eq(err, {'class': 'GenericError',
                            'desc': "Job 'j' in state 'concluded' cannot accept command "
                                    "verb '%s'" % verb}, cmd)
        err = q.error('job-resume', {'id': 'j'})
        assert_eq(err['desc'], "Can't resume a job that was not paused", 'resume')
        for cmd, key in [('block-job-cancel', 'device'), ('block-job-pause', 'device'),
                         ('block-job-resume', 'device'), ('block-job-complete', 'device'),
                         ('block-job-finalize', 'id'), ('block-job-dismiss', 'id')]:
            err = q.error(cmd, {key: 'j'})
            assert_eq(err, {'class': 'DeviceNotActive', 'desc': "Block job 'j' not found"}, cmd)
        err = q.error('block-job-set-speed', {'device': 'j', 'speed': 1})
        assert_eq(err['class'], 'DeviceNotActive', 'set-speed')
        err = q.error('blockdev-create', {'job-id': 'j', 'options': {
            'driver': 'file', 'filename': path, 'size': MiB}})
        assert_eq(err['desc'], "Job ID 'j' already in use", 'duplicate')
        for bad in ['', '1j', 'a b', '#x']:
            err = q.error('blockdev-create', {'job-id': bad, 'options': {
                'driver': 'file', 'filename': path, 'size': MiB}})
            assert_eq(err['desc'], "Invalid job ID '%s'" % bad, 'invalid id')
        for cmd in ['job-dismiss', 'job-cancel', 'job-pause', 'job-resume', 'job-complete',
                    'job-finalize']:
            err = q.error(cmd, {'id': 'nope'})
            assert_eq(err, {'class': 'GenericError', 'desc': 'Job not found'}, cmd)
        err = q.error('job-dismiss', {})
        assert_eq(err['desc'], "Parameter 'id' is missing", 'missing id')
        q.execute('job-dismiss', {'id': 'j'})
        err = q.error('job-dismiss', {'id': 'j'})
        assert_eq(err['desc'], 'Job not found', 'dismissed twice')


def test_257_create_target_and_export():
    """Seed 257's create_target: an empty file, then a qcow2 on it, added
    and exported; data written over NBD is in the image afterwards."""
    require_tool('qemu-img', 'qemu-io')
    d = Daemon()
    d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
    d.wait = [d.nbd_sock]
    with d:
        d.start()
        q = d.qmp()
        path = d.path('target.qcow2')
        create_file(q, path, job_id='bdc-file-job')
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'file_target',
                                   'filename': path})
        run_create(q, 'bdc-fmt-job', {'driver': 'qcow2', 'file': 'file_target',
                                      'size': 64 * MiB})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'target',
                                   'file': 'file_target'})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'target',
                                       'name': 'disk', 'writable': True})
        qemu_io(d.uri(), 'write -P 0xa5 0 3M', 'write -P 0x5a 40M 64k')
        q.execute('block-export-del', {'id': 'e'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        q.execute('blockdev-del', {'node-name': 'target'})
        q.execute('blockdev-del', {'node-name': 'file_target'})
        img_check(path)
        qemu_io(path, 'read -P 0xa5 0 3M', 'read -P 0x5a 40M 64k', 'read -P 0 3M 37M',
                fmt='qcow2')


def test_query_jobs_order():
    """query-jobs lists the newest job first; failed jobs carry 'error'."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for j in ['a', 'b', 'c']:
            q.execute('blockdev-create', {'job-id': j, 'options': {
                'driver': 'file', 'filename': d.path(j), 'size': 0}})
            q.wait_job_status(j, 'concluded')
        q.execute('blockdev-create', {'job-id': 'x', 'options': {
            'driver': 'file', 'filename': d.path('x'), 'size': 1,
            'extent-size-hint': 1 << 33}})
        q.wait_job_status('x', 'aborting')
        q.wait_job_status('x', 'concluded')
        jobs = q.execute('query-jobs')
        assert_eq([j['id'] for j in jobs], ['x', 'c', 'b', 'a'], 'order')
        assert_eq(jobs[0].get('error'), 'Extent size hint is too large', 'error')
        assert_eq(['error' in j for j in jobs], [True, False, False, False], 'error keys')
        assert_eq(os.path.exists(d.path('x')), False, 'nothing created')


def test_quit_with_jobs_left():
    """A concluded job that was never dismissed does not hold up quit."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        q.execute('blockdev-create', {'job-id': 'left', 'options': {
            'driver': 'file', 'filename': d.path('l.raw'), 'size': MiB}})
        q.wait_job_status('left', 'concluded')
        q.execute('quit')
        assert_eq(d.wait_exit(), 0, 'exit code')


def test_schema_and_commands():
    """The job commands are listed and the job events are in the schema."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        names = {c['name'] for c in q.execute('query-commands')}
        for cmd in ['blockdev-create', 'query-jobs', 'query-block-jobs', 'job-pause',
                    'job-resume', 'job-cancel', 'job-complete', 'job-finalize', 'job-dismiss',
                    'block-job-pause', 'block-job-resume', 'block-job-cancel',
                    'block-job-complete', 'block-job-finalize', 'block-job-dismiss',
                    'block-job-set-speed']:
            assert_in(cmd, names, 'query-commands')
        schema = q.execute('query-qmp-schema')
        events = {e['name'] for e in schema if e['meta-type'] == 'event'}
        for ev in ['JOB_STATUS_CHANGE', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED',
                   'BLOCK_JOB_ERROR', 'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING']:
            assert_in(ev, events, 'schema events')
        commands = {e['name']: e for e in schema if e['meta-type'] == 'command'}
        types = {e['name']: e for e in schema}
        # JOB_STATUS_CHANGE carries id and status (JobStatus enum).
        ev = [e for e in schema if e.get('name') == 'JOB_STATUS_CHANGE'][0]
        members = {m['name']: m['type'] for m in types[ev['arg-type']]['members']}
        assert_eq(sorted(members), ['id', 'status'], 'JOB_STATUS_CHANGE members')
        assert_in('concluded', types[members['status']]['values'], 'JobStatus values')
        ret = types[commands['query-jobs']['ret-type']]
        info = types[ret['element-type']]
        assert_eq(sorted(m['name'] for m in info['members']),
                  ['current-progress', 'error', 'id', 'status', 'total-progress', 'type'],
                  'JobInfo members')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
