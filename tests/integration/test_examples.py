#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The runnable examples in examples/ run as tests too."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import REPO, Skip, assert_in, daemon_exe, main, require_tool, run, tests_of  # noqa: E402


def run_example(script):
    """Run examples/SCRIPT against the daemon under test; skip on exit 77,
    fail on any other non-zero exit.  Returns the finished process."""
    env = dict(os.environ, BLOCKD=daemon_exe())
    blockctl = os.environ.get('BLOCKCTL') or os.path.join(REPO, 'build', 'ctl', 'blockctl')
    env['BLOCKCTL'] = blockctl
    p = run(['bash', os.path.join(REPO, 'examples', script)], check=False, env=env, timeout=60)
    if p.returncode == 77:
        raise Skip(p.stderr.strip())
    if p.returncode != 0:
        raise AssertionError('example exited %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    return p


def test_nbd_export_example():
    require_tool('qemu-io', 'nbdinfo')
    p = run_example('nbd-export.sh')
    assert_in('example finished: OK', p.stdout, 'example output')
    assert_in('67108864', p.stdout, 'nbdinfo --size output')


def test_fuse_mount_example():
    require_tool('qemu-io', 'qemu-img', 'nbdcopy', 'fusermount3')
    p = run_example('fuse-mount.sh')
    assert_in('mounted size: 67108864', p.stdout, 'mounted file size')
    assert_in('hello from FUSE', p.stdout, 'FUSE write seen over NBD')
    assert_in('example finished: OK', p.stdout, 'example output')


def test_live_reopen_example():
    require_tool('qemu-io', 'qemu-img', 'socat')
    p = run_example('live-reopen.sh')
    assert_in("cannot support read-write users", p.stdout, 'read-only refusal')
    assert_in('example finished: OK', p.stdout, 'example output')


def test_tls_export_example():
    require_tool('qemu-io', 'nbdinfo', 'certtool')
    p = run_example('tls-export.sh')
    assert_in('with TLS', p.stdout, 'nbdinfo protocol line')
    assert_in('67108864', p.stdout, 'nbdinfo --size output')
    assert_in('plaintext client refused', p.stdout, 'plaintext refusal')
    assert_in('example finished: OK', p.stdout, 'example output')


def test_chain_daemons_example():
    require_tool('qemu-io', 'qemu-img', 'nbdinfo', 'fusermount3')
    p = run_example('chain-daemons.sh')
    assert_in('example finished: OK', p.stdout, 'example output')
    assert_in("read A's data through B", p.stdout, 'example output')


def test_blockctl_backup_example():
    require_tool('qemu-io', 'qemu-img')
    p = run_example('backup.sh')
    assert_in('example finished: OK', p.stdout, 'example output')
    assert_in('incremental backup of', p.stdout, 'example output')


def test_pull_backup_example():
    require_tool('qemu-io', 'nbdinfo', 'nbdcopy', 'nbdsh', 'socat')
    p = run_example('pull-backup.sh')
    # Only the two 1 MiB regions written between the sessions are copied.
    assert_in('copied 2097152 bytes in 2 extents', p.stdout, 'incremental copy')
    assert_in('example finished: OK', p.stdout, 'example output')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
