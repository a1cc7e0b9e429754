#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""x-blockdev-amend as a job of type 'amend', as qemu-storage-daemon 7.2
has it: for qcow2 only 'encrypt' (refcount-bits, lazy-refcounts and the
compat level are qemu-img amend's, not QMP's); QEMU's errors; the job
concludes and waits to be dismissed; the image stays clean."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import Daemon, assert_eq, main, require_tool, run, tests_of  # noqa: E402


def test_amend_qcow2():
    """A qcow2 amend with no change concludes without error; 'encrypt'
    on an image without encryption concludes with QEMU's error; both
    are dismissed by the user; qemu-img check is clean."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '1M'])
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                  '--blockdev', 'driver=qcow2,node-name=disk,file=f0'] + d.args
        d.start()
        q = d.qmp()
        q.execute('x-blockdev-amend', {'job-id': 'a1', 'node-name': 'disk',
                                       'options': {'driver': 'qcow2'}})
        q.wait_job_status('a1', 'concluded')
        q.execute('x-blockdev-amend', {'job-id': 'a2', 'node-name': 'disk', 'options': {
            'driver': 'qcow2', 'encrypt': {'format': 'luks', 'state': 'active',
                                           'new-secret': 'sec0'}}})
        q.wait_job_status('a2', 'concluded')
        jobs = {j['id']: j for j in q.execute('query-jobs')}
        assert_eq((jobs['a1']['type'], jobs['a1']['status'], jobs['a1'].get('error'),
                   jobs['a1']['current-progress'], jobs['a1']['total-progress']),
                  ('amend', 'concluded', None, 1, 1), 'a1')
        assert_eq(jobs['a2'].get('error'), "image is not encrypted, can't amend", 'a2')
        q.execute('job-dismiss', {'id': 'a1'})
        q.execute('job-dismiss', {'id': 'a2'})
        assert_eq(q.execute('query-jobs'), [], 'dismissed')
        d.stop()
        run(['qemu-img', 'check', img])


def test_amend_errors():
    """QEMU's refusals: an unknown node, a driver without amend, another
    driver in the options, an option QMP does not have, a job id in
    use."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '1M'])
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                  '--blockdev', 'driver=qcow2,node-name=disk,file=f0'] + d.args
        d.start()
        q = d.qmp()
        q.execute('x-blockdev-amend', {'job-id': 'j1', 'node-name': 'disk',
                                       'options': {'driver': 'qcow2'}})
        cases = [
            ({'job-id': 'j2', 'node-name': 'nope', 'options': {'driver': 'qcow2'}},
             "Cannot find device='' nor node-name='nope'"),
            ({'job-id': 'j2', 'node-name': 'f0', 'options': {'driver': 'file'}},
             'Driver does not support x-blockdev-amend'),
            ({'job-id': 'j2', 'node-name': 'disk', 'options': {'driver': 'raw'}},
             "x-blockdev-amend doesn't support changing the block driver"),
            ({'job-id': 'j2', 'node-name': 'disk',
              'options': {'driver': 'qcow2', 'refcount-bits': 8}},
             "Parameter 'options.refcount-bits' is unexpected"),
            ({'job-id': 'j1', 'node-name': 'disk', 'options': {'driver': 'qcow2'}},
             "Job ID 'j1' already in use"),
        ]
        for args, desc in cases:
            err = q.error('x-blockdev-amend', args)
            assert_eq((err['class'], err['desc']), ('GenericError', desc), repr(args))
        q.wait_job_status('j1', 'concluded')
        q.execute('job-dismiss', {'id': 'j1'})


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
