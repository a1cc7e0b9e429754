#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Trace points (issue 21): -T/--trace [enable=]PATTERN[,events=FILE]
[,file=FILE] as qemu-storage-daemon's, and QMP trace-event-get-state/
-set-state with QEMU's semantics and texts.

Patterns turn named points on and off: the request path (nbd_request,
fuse_request with offset, length and latency), the NBD handshake, job
state changes (also as QEMU's job_state_transition, job_apply_verb) and
graph changes (node_open/close, drained_begin/end, qmp_blockdev_add/del,
bdrv_reopen_prepare/commit/abort, bdrv_replace_child, bdrv_refresh_perms).
qemu-storage-daemon 7.2 has -T (with its own event names) but not the
QMP commands; the command-line errors are compared with it."""

import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, daemon_exe, is_reference,  # noqa: E402
                         main, make_image, nbd_export_args, require_nbd, run,
                         skip_if_reference, tests_of, wait_for)

KiB = 1024
MiB = 1024 * KiB
NBD_EVENTS = ['nbd_client_connect', 'nbd_client_disconnect', 'nbd_handshake_failed',
              'nbd_request']


def start(trace_args=(), extra=()):
    skip_if_reference('blockd trace event names')
    d = Daemon()
    img = make_image(d.path('a.raw'), 4 * MiB)
    d.args = list(trace_args) + nbd_export_args(d, img) + list(extra) + d.args
    d.wait = [d.nbd_sock]
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def lines(path, event):
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if re.match(r'\d+@\d+\.\d{6}:%s ' % event, line)]


def fields(line):
    return dict(kv.split('=', 1) for kv in line.split(' ') if '=' in kv and ':' not in kv.split('=')[0])


def test_request_path_to_file():
    """-T nbd_request,file=F: one line per request with the offset, length,
    type and latency; events the pattern does not match stay silent."""
    skip_if_reference('blockd trace event names')
    with tempfile.TemporaryDirectory(prefix='blockd-trace-') as tmp, \
            start(['-T', 'nbd_request,file=%s' % os.path.join(tmp, 'trace.log')]) as d:
        out = os.path.join(tmp, 'trace.log')
        h = require_nbd().NBD()
        h.connect_uri(d.uri())
        h.pwrite(b'\x07' * (4 * KiB), 8 * KiB)
        h.pread(12 * KiB, 64 * KiB)
        h.shutdown()
        wait_for(lambda: len(lines(out, 'nbd_request')) >= 2, what='request lines')
        reqs = [fields(x) for x in lines(out, 'nbd_request')]
        w = [r for r in reqs if r['type'] == '1']
        r = [r for r in reqs if r['type'] == '0']
        assert_eq([(x['offset'], x['length']) for x in w], [('8192', '4096')], 'the write')
        assert_eq([(x['offset'], x['length']) for x in r], [('65536', '12288')], 'the read')
        for x in w + r:
            assert_eq(x['export'], 'exp0', 'export')
            assert_eq(int(x['latency_ns']) > 0, True, 'latency')
            assert_eq(x['err'], '0', 'no error')
            assert_in('cookie', x, 'the request handle')
            assert_in('unix#', x['client'], 'the client')
        assert_eq(lines(out, 'nbd_client_connect'), [], 'connect not traced')
        assert_eq(lines(out, 'node_open'), [], 'graph not traced')
        assert_eq('nbd_request' in d.stderr(), False, 'nothing on stderr')


def test_qmp_get_set_state():
    """trace-event-get-state lists matches (disabled, enabled), set-state
    turns a pattern on and off at run time; QEMU's errors."""
    with start() as d:
        q = d.qmp()
        got = q.execute('trace-event-get-state', {'name': 'nbd_*'})
        assert_eq(sorted(e['name'] for e in got), NBD_EVENTS, 'nbd events')
        assert_eq({e['state'] for e in got}, {'disabled'}, 'all off')
        assert_eq({e['vcpu'] for e in got}, {False}, 'no vcpu events')
        assert_eq(q.execute('trace-event-get-state', {'name': 'nomatch*'}), [], 'no match')
        assert_eq(q.error('trace-event-get-state', {'name': 'nosuch'})['desc'],
                  'unknown event "nosuch"', 'unknown event')
        assert_eq(q.error('trace-event-set-state', {'name': 'nosuch', 'enable': True})['desc'],
                  'unknown event "nosuch"', 'unknown event (set)')
        assert_eq(q.error('trace-event-get-state', {'name': 'nbd_*', 'vcpu': 0})['desc'],
                  'invalid vCPU index 0', 'no vcpus')
        assert_eq(q.error('trace-event-set-state', {'name': 'nbd_request'})['desc'],
                  "Parameter 'enable' is missing", 'enable missing')
        q.execute('trace-event-set-state', {'name': 'nbd_req*', 'enable': True})
        got = {e['name']: e['state'] for e in q.execute('trace-event-get-state',
                                                         {'name': 'nbd_*'})}
        assert_eq(got['nbd_request'], 'enabled', 'turned on')
        assert_eq(got['nbd_client_connect'], 'disabled', 'others stay off')
        h = require_nbd().NBD()
        h.connect_uri(d.uri())
        h.pread(4 * KiB, 0)
        wait_for(lambda: len(lines(d.stderr_path, 'nbd_request')) == 1, what='traced read')
        q.execute('trace-event-set-state', {'name': 'nbd_request', 'enable': False})
        h.pread(4 * KiB, 4 * KiB)
        h.pread(4 * KiB, 8 * KiB)
        h.shutdown()
        q.execute('query-version')
        assert_eq(len(lines(d.stderr_path, 'nbd_request')), 1, 'off again')
        d.assert_alive()


def test_events_file_jobs_graph_handshake():
    """An events file (comments, '-' to turn off) enables job, graph and
    handshake points; each change shows as one line."""
    skip_if_reference('blockd trace event names')
    tmp = tempfile.TemporaryDirectory(prefix='blockd-trace-')
    ev = os.path.join(tmp.name, 'events')
    with open(ev, 'w') as f:
        f.write('# graph and jobs\nnode_*\njob_status_change\ndrained_*\n-drained_end\n'
                'nbd_handshake_failed\n')
    with tmp, start(['--trace', 'events=%s' % ev]) as d:
        q = d.qmp()
        err = d.stderr_path
        # The nodes of the command line were opened after -T took effect.
        opened = [fields(x)['node'] for x in lines(err, 'node_open')]
        assert_eq('fmt0' in opened and 'file0' in opened, True, 'start-up nodes: %r' % opened)
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt', 'size': 4 * MiB})
        assert_eq(len([x for x in lines(err, 'node_open') if 'node=tgt ' in x]), 1, 'node_open')
        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'fmt0', 'target': 'tgt',
                                      'sync': 'full'})
        q.wait_event('BLOCK_JOB_READY')
        q.execute('block-job-cancel', {'device': 'mj'})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'null'})
        changes = [x.split(':', 1)[1].split(' ', 1)[1] for x in lines(err, 'job_status_change')]
        assert_in('job=mj type=mirror created -> running', changes, 'job start')
        assert_in('job=mj type=mirror running -> ready', changes, 'job ready')
        assert_eq(changes[-1], 'job=mj type=mirror concluded -> null', 'job end')
        q.execute('blockdev-del', {'node-name': 'tgt'})
        assert_eq(len([x for x in lines(err, 'node_close') if 'node=tgt ' in x]), 1, 'node_close')
        assert_eq(len(lines(err, 'drained_begin')) > 0, True, 'drains traced')
        assert_eq(lines(err, 'drained_end'), [], '-drained_end turned it off')
        # A client asking for a missing export.
        nbd = require_nbd()
        h = nbd.NBD()
        try:
            h.connect_uri('nbd+unix:///nosuch?socket=%s' % d.nbd_sock)
        except nbd.Error:
            pass
        del h
        wait_for(lambda: any('reason=export-not-found' in x
                             for x in lines(err, 'nbd_handshake_failed')),
                 what='handshake failure traced')
        got = {e['name']: e['state'] for e in q.execute('trace-event-get-state', {'name': '*'})}
        assert_eq(got['drained_end'], 'disabled', 'events file state')
        assert_eq(got['job_status_change'], 'enabled', 'events file state')


def graph_changes(d, q):
    """blockdev-add (good, duplicate), a reopen read-only, a refused
    reopen, a backing edge set by reopen, blockdev-del (good, missing)."""
    q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n1', 'size': 4 * MiB})
    dup = q.error('blockdev-add', {'driver': 'null-co', 'node-name': 'n1'})['desc']
    q.execute('blockdev-reopen', {'options': [{'driver': 'null-co', 'node-name': 'n1',
                                               'size': 4 * MiB, 'read-only': True}]})
    refused = q.error('blockdev-reopen', {'options': [{'driver': 'null-co', 'node-name': 'n1',
                                                       'size': 8 * MiB}]})['desc']
    ov = d.path('ov.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', ov, '4M'])
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov', 'backing': None,
                               'file': {'driver': 'file', 'filename': ov,
                                        'node-name': 'ovf'}})
    q.execute('blockdev-reopen', {'options': [{'driver': 'qcow2', 'node-name': 'ov',
                                               'file': 'ovf', 'backing': 'n1'}]})
    q.execute('blockdev-reopen', {'options': [{'driver': 'qcow2', 'node-name': 'ov',
                                               'file': 'ovf', 'backing': None}]})
    q.execute('blockdev-del', {'node-name': 'ov'})
    q.execute('blockdev-del', {'node-name': 'n1'})
    missing = q.error('blockdev-del', {'node-name': 'n1'})['desc']
    return dup, refused, missing


def test_graph_reopen_perms_and_job_verbs():
    """qmp_blockdev_add/del, bdrv_reopen_prepare/commit/abort,
    bdrv_replace_child, bdrv_refresh_perms, job_state_transition and
    job_apply_verb: a line for each change, errors with their reason;
    turned off again by trace-event-set-state, they say nothing."""
    with start(['-T', 'qmp_blockdev_*', '-T', 'bdrv_*']) as d:
        q = d.qmp()
        err = d.stderr_path
        dup, refused, missing = graph_changes(d, q)
        adds = [x.split(':', 1)[1] for x in lines(err, 'qmp_blockdev_add')]
        assert_in('qmp_blockdev_add node=n1 ok', adds, 'add')
        assert_in('qmp_blockdev_add node=n1 error=%s' % dup, adds, 'duplicate add')
        dels = [x.split(':', 1)[1] for x in lines(err, 'qmp_blockdev_del')]
        assert_in('qmp_blockdev_del node=n1 ok', dels, 'del')
        assert_in('qmp_blockdev_del node=n1 error=%s' % missing, dels, 'missing del')
        assert_eq(len([x for x in lines(err, 'bdrv_reopen_prepare') if 'node=n1' in x]), 2,
                  'two reopens of n1 prepared')
        assert_eq(len([x for x in lines(err, 'bdrv_reopen_commit') if 'node=n1 ' in x]), 1,
                  'one committed')
        aborts = [x for x in lines(err, 'bdrv_reopen_abort') if 'node=n1 ' in x]
        assert_eq(len(aborts), 1, 'one aborted')
        assert_in('error=%s' % refused, aborts[0], 'the abort says why')
        edges = [x.split(':', 1)[1] for x in lines(err, 'bdrv_replace_child')]
        assert_eq(edges, ['bdrv_replace_child parent=ov child=backing old= new=n1',
                          'bdrv_replace_child parent=ov child=backing old=n1 new='],
                  'backing edge set and removed')
        assert_eq(len(lines(err, 'bdrv_refresh_perms')) > 0, True, 'permission updates')
        assert_eq(all(x.endswith(' ok') or ' error=' in x
                      for x in lines(err, 'bdrv_refresh_perms')), True, 'perm results')
        # Off again: graph changes say nothing more; jobs on.
        q.execute('trace-event-set-state', {'name': 'bdrv_*', 'enable': False})
        q.execute('trace-event-set-state', {'name': 'qmp_blockdev_*', 'enable': False})
        q.execute('trace-event-set-state', {'name': 'job_state_transition', 'enable': True})
        q.execute('trace-event-set-state', {'name': 'job_apply_verb', 'enable': True})
        before = {e: len(lines(err, e)) for e in ('qmp_blockdev_add', 'bdrv_reopen_prepare',
                                                  'bdrv_refresh_perms')}
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt', 'size': 4 * MiB})
        q.execute('blockdev-reopen', {'options': [{'driver': 'null-co', 'node-name': 'tgt',
                                                   'size': 4 * MiB, 'read-only': False}]})
        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'fmt0', 'target': 'tgt',
                                      'sync': 'full'})
        q.wait_event('BLOCK_JOB_READY')
        q.execute('block-job-cancel', {'device': 'mj'})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'null'})
        assert_eq({e: len(lines(err, e)) for e in before}, before, 'nothing while off')
        tr = [x.split(':', 1)[1] for x in lines(err, 'job_state_transition')]
        assert_in('job_state_transition job=mj ret=0 created -> running', tr, 'transition')
        assert_eq(tr[-1], 'job_state_transition job=mj ret=0 concluded -> null', 'last')
        verbs = [x.split(':', 1)[1] for x in lines(err, 'job_apply_verb')]
        assert_in('job_apply_verb job=mj state=ready verb=cancel allowed', verbs, 'cancel verb')
        d.assert_alive()


def test_option_errors():
    """-T errors stop the start-up with QEMU's texts (compared with
    qemu-storage-daemon's, whose prefix is its own name)."""
    cases = [
        ('foo=bar', "-T foo=bar: Invalid parameter 'foo'"),
        ('file=/nonexistent/dir/t.log,enable=nbd*',
         '-T file=/nonexistent/dir/t.log,enable=nbd*: Error opening logfile '
         '/nonexistent/dir/t.log: No such file or directory'),
    ]
    for arg, text in cases:
        p = run([daemon_exe(), '-T', arg], check=False)
        assert_in(text, p.stderr, '-T %s' % arg)
        if not is_reference():
            assert_eq(p.returncode, 1, 'exit status for -T %s' % arg)
    if not is_reference():
        p = run([daemon_exe(), '-T', 'events=/nonexistent/events'], check=False)
        assert_eq(p.returncode, 1, 'missing events file')
        assert_in('/nonexistent/events: No such file or directory', p.stderr, 'events file')
        p = run([daemon_exe(), '--help'], check=False)
        assert_in('--trace', p.stdout, '--help lists --trace')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
