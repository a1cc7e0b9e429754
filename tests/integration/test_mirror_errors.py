# SPDX-License-Identifier: MIT
"""blockdev-mirror error paths (issue 7): read errors on the source and
write errors on the target injected with blkdebug, under on-source-error /
on-target-error report and stop (then job-resume); the export keeps
serving and nothing is lost (qemu-img compare against a raw reference,
qemu-img check), built on test_mirror's Env.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from test_mirror import Env, SIZE, writes  # noqa: E402


def blkdebug_target(e, once):
    e.q.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'btgt', 'backing': None,
        'file': {'driver': 'blkdebug', 'node-name': 'dbg',
                 'inject-error': [{'event': 'write_aio', 'errno': 5, 'once': once}],
                 'image': {'driver': 'file', 'filename': e.d.path('btgt.qcow2')}}})


def test_target_error_report():
    """A write error on the target with on-target-error=report fails the
    job (BLOCK_JOB_ERROR, then the error in BLOCK_JOB_COMPLETED); the
    export stays on the source."""
    with Env() as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('btgt.qcow2'), str(SIZE)])
        blkdebug_target(e, False)
        e.mirror(target='btgt')
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        bt.assert_eq((ev['data']['operation'], ev['data']['action']), ('write', 'report'),
                     'error event')
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), 'Input/output error', 'job error')
        bt.assert_eq(e.export_node(), 'src', 'export node')
        bt.assert_eq('mirror_top' in e.node_drivers().values(), False, 'filter left behind')
        e.nbd_write(writes(12, 10))
        e.check_export_reads_ref()
        e.stop_and_check(e.src)


def test_target_error_stop_resume():
    """on-target-error=stop: the job pauses with io-status failed; resumed
    (the error was a one-off) it reaches ready and completes."""
    with Env() as e:
        bt.run(['qemu-img', 'create', '-f', 'qcow2', e.d.path('btgt.qcow2'), str(SIZE)])
        blkdebug_target(e, True)
        e.mirror(target='btgt', **{'on-target-error': 'stop'})
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        bt.assert_eq((ev['data']['operation'], ev['data']['action']), ('write', 'stop'),
                     'error event')
        bt.wait_for(lambda: e.job()['status'] == 'paused', 30, 'job paused')
        bt.assert_eq(e.job()['io-status'], 'failed', 'io-status')
        e.q.execute('job-resume', {'id': 'm0'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(writes(13, 20))
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.check_export_reads_ref()
        e.stop_and_check(e.d.path('btgt.qcow2'))


def test_source_error_stop_resume():
    """A read error on the source with on-source-error=stop pauses the job
    (BLOCK_JOB_ERROR 'read'); resumed, it completes and nothing is lost."""
    with Env(src_errors=[{'event': 'read_aio', 'errno': 5, 'once': True}]) as e:
        e.mirror(**{'on-source-error': 'stop'})
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        bt.assert_eq((ev['data']['operation'], ev['data']['action']), ('read', 'stop'),
                     'error event')
        bt.wait_for(lambda: e.job()['status'] == 'paused', 30, 'job paused')
        bt.assert_eq(e.job()['io-status'], 'failed', 'io-status')
        e.nbd_write(writes(19, 10))
        e.q.execute('job-resume', {'id': 'm0'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.check_export_reads_ref()
        e.stop_and_check(e.tgt)


def test_source_error_report():
    """on-source-error=report: the job fails with the read error."""
    with Env(src_errors=[{'event': 'read_aio', 'errno': 5}]) as e:
        e.mirror()
        ev = e.q.wait_event('BLOCK_JOB_ERROR', timeout=60)
        bt.assert_eq((ev['data']['operation'], ev['data']['action']), ('read', 'report'),
                     'error event')
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), 'Input/output error', 'job error')
        bt.assert_eq('mirror_top' in e.node_drivers().values(), False, 'filter left behind')


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
