#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""blockdev-reopen around stream and commit jobs (QEMU iotest 245; the
harness is reopen_env.py): the backing links a job freezes cannot change,
the others can; afterwards the data is where the job put it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import assert_eq, main, tests_of  # noqa: E402
from reopen_env import vm  # noqa: E402


def _chain(v):
    # hd2 <- hd1 <- hd0
    opts = v.hd_opts(0)
    opts['backing'] = v.hd_opts(1)
    opts['backing']['backing'] = v.hd_opts(2)
    v.blockdev_add(opts)
    return opts


def test_block_stream_1():
    with vm() as v:
        # hd1 <- hd0
        opts = v.hd_opts(0)
        opts['backing'] = v.hd_opts(1)
        opts['backing']['backing'] = None
        v.blockdev_add(opts)

        v.job_cmd('block-stream', {'job-id': 'stream0', 'device': 'hd0'})
        v.wait_until_completed(drive='stream0')

        assert_eq(v.get_node('hd1'), None, 'hd1 gone')

        v.reopen(opts, {}, "Cannot change the option 'backing.driver'")

        del opts['backing']
        v.reopen(opts)

        v.reopen(opts, {'backing': None})
        # added: the streamed data is hd0's own now
        with v.exported('hd0'):
            v.io('hd0', 'read -P 0xa0 0 1M')
            v.io('hd0', 'read -P 0xa1 1M 1M')
            v.io('hd0', 'read -P 0 2M 1M')

        v.blockdev_del('hd0')


def test_block_stream_2():
    with vm() as v:
        opts = _chain(v)

        v.job_cmd('block-stream', {'job-id': 'stream0', 'device': 'hd0', 'base-node': 'hd2'})
        v.wait_until_completed(drive='stream0')

        assert_eq(v.get_node('hd1'), None, 'hd1 gone')

        v.reopen(opts, {}, "Cannot change the option 'backing.driver'")

        opts['backing'] = opts['backing']['backing']
        v.reopen(opts)

        v.reopen(opts, {'backing': 'hd2'})
        with v.exported('hd0'):     # added
            v.io('hd0', 'read -P 0xa0 0 1M')
            v.io('hd0', 'read -P 0xa1 1M 1M')
            v.io('hd0', 'read -P 0xa2 2M 1M')

        del opts['backing']
        v.reopen(opts, {}, "backing is missing for 'hd0'")

        v.blockdev_del('hd0')
        assert_eq(v.get_node('hd2'), None, 'hd2 gone with hd0')


def test_block_stream_3():
    with vm() as v:
        opts = _chain(v)

        # hd2 <- hd0
        v.job_cmd('block-stream', {'job-id': 'stream0', 'device': 'hd0', 'base-node': 'hd2',
                                   'auto-finalize': False})

        opts['backing']['backing'] = None
        v.reopen(opts, {})

        opts['backing'] = None
        v.reopen(opts, {}, "Cannot change frozen 'backing' link from 'hd0' to 'hd1'")

        v.run_job('stream0', auto_finalize=False, auto_dismiss=True)
        with v.exported('hd0'):     # added: hd1's data streamed into hd0
            v.io('hd0', 'read -P 0xa0 0 1M')
            v.io('hd0', 'read -P 0xa1 1M 1M')
            v.io('hd0', 'read -P 0 2M 1M')


def test_block_stream_4():
    with vm() as v:
        opts = _chain(v)

        # hd1 <- hd0
        v.job_cmd('block-stream', {'job-id': 'stream0', 'device': 'hd1',
                                   'filter-node-name': 'cor', 'auto-finalize': False})

        v.reopen(opts, {}, "Cannot change the option 'backing.backing.file.node-name'")

        v.reopen(opts['backing'], {'read-only': True},
                 "Read-only block node 'hd1' cannot support read-write users")

        opts['backing']['backing'] = None
        v.reopen(opts['backing'], {'read-only': False},
                 "Cannot change frozen 'backing' link from 'hd1' to 'hd2'")

        opts['backing'] = None
        v.reopen(opts)

        v.run_job('stream0', auto_finalize=False, auto_dismiss=True)


def test_block_commit_1():
    with vm() as v:
        opts = _chain(v)

        v.job_cmd('block-commit', {'job-id': 'commit0', 'device': 'hd0'})

        opts['backing']['backing'] = None
        v.reopen(opts, {}, "Cannot change frozen 'backing' link from 'hd1' to 'hd2'")

        opts['backing'] = None
        v.reopen(opts, {}, "Cannot change frozen 'backing' link from 'hd0' to 'hd1'")

        event = v.q.wait_event('BLOCK_JOB_READY', timeout=60)
        assert_eq(event['data']['device'], 'commit0', 'event device')
        assert_eq(event['data']['type'], 'commit', 'event type')
        assert_eq('error' in event['data'], False, 'event has no error')

        v.cmd('block-job-complete', {'device': 'commit0'})

        v.wait_until_completed(drive='commit0')
        with v.exported('hd2'):     # added: everything was committed into hd2
            v.io('hd2', 'read -P 0xa0 0 1M')
            v.io('hd2', 'read -P 0xa1 1M 1M')
            v.io('hd2', 'read -P 0xa2 2M 1M')


def test_block_commit_2():
    with vm() as v:
        opts = _chain(v)

        v.job_cmd('block-commit', {'job-id': 'commit0', 'device': 'hd0', 'top-node': 'hd1',
                                   'auto-finalize': False})

        opts['backing']['backing'] = None
        v.reopen(opts, {}, "Cannot change the option 'backing.driver'")

        opts['backing'] = None
        v.reopen(opts, {}, "Cannot replace implicit backing child of hd0")

        # hd2 <- hd0
        v.run_job('commit0', auto_finalize=False, auto_dismiss=True)

        assert_eq(v.get_node('hd0')['ro'], False, 'hd0 ro')
        assert_eq(v.get_node('hd1'), None, 'hd1 gone')
        assert_eq(v.get_node('hd2')['ro'], True, 'hd2 ro')
        with v.exported('hd0'):     # added: hd1's data is in hd2 now
            v.io('hd0', 'read -P 0xa0 0 1M')
            v.io('hd0', 'read -P 0xa1 1M 1M')
            v.io('hd0', 'read -P 0xa2 2M 1M')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
