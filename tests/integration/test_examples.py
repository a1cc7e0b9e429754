#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The runnable examples in examples/ run as tests too."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import REPO, Skip, assert_in, daemon_exe, main, require_tool, run, tests_of  # noqa: E402


def test_nbd_export_example():
    require_tool('qemu-io', 'nbdinfo')
    exe = daemon_exe()
    env = dict(os.environ, BLOCKD=exe)
    p = run(['bash', os.path.join(REPO, 'examples', 'nbd-export.sh')], check=False, env=env, timeout=60)
    if p.returncode == 77:
        raise Skip(p.stderr.strip())
    if p.returncode != 0:
        raise AssertionError('example exited %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    assert_in('example finished: OK', p.stdout, 'example output')
    assert_in('67108864', p.stdout, 'nbdinfo --size output')


def test_fuse_mount_example():
    require_tool('qemu-io', 'qemu-img', 'nbdcopy', 'fusermount3')
    exe = daemon_exe()
    env = dict(os.environ, BLOCKD=exe)
    p = run(['bash', os.path.join(REPO, 'examples', 'fuse-mount.sh')], check=False, env=env, timeout=60)
    if p.returncode == 77:
        raise Skip(p.stderr.strip())
    if p.returncode != 0:
        raise AssertionError('example exited %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    assert_in('mounted size: 67108864', p.stdout, 'mounted file size')
    assert_in('hello from FUSE', p.stdout, 'FUSE write seen over NBD')
    assert_in('example finished: OK', p.stdout, 'example output')


def test_live_reopen_example():
    require_tool('qemu-io', 'qemu-img', 'socat')
    exe = daemon_exe()
    env = dict(os.environ, BLOCKD=exe)
    p = run(['bash', os.path.join(REPO, 'examples', 'live-reopen.sh')], check=False, env=env, timeout=60)
    if p.returncode == 77:
        raise Skip(p.stderr.strip())
    if p.returncode != 0:
        raise AssertionError('example exited %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    assert_in("cannot support read-write users", p.stdout, 'read-only refusal')
    assert_in('example finished: OK', p.stdout, 'example output')


def test_tls_export_example():
    require_tool('qemu-io', 'nbdinfo', 'certtool')
    exe = daemon_exe()
    env = dict(os.environ, BLOCKD=exe)
    p = run(['bash', os.path.join(REPO, 'examples', 'tls-export.sh')], check=False, env=env, timeout=60)
    if p.returncode == 77:
        raise Skip(p.stderr.strip())
    if p.returncode != 0:
        raise AssertionError('example exited %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    assert_in('with TLS', p.stdout, 'nbdinfo protocol line')
    assert_in('67108864', p.stdout, 'nbdinfo --size output')
    assert_in('plaintext client refused', p.stdout, 'plaintext refusal')
    assert_in('example finished: OK', p.stdout, 'example output')


def test_pull_backup_example():
    require_tool('qemu-io', 'nbdinfo', 'nbdcopy', 'nbdsh', 'socat')
    exe = daemon_exe()
    env = dict(os.environ, BLOCKD=exe)
    p = run(['bash', os.path.join(REPO, 'examples', 'pull-backup.sh')], check=False, env=env, timeout=60)
    if p.returncode == 77:
        raise Skip(p.stderr.strip())
    if p.returncode != 0:
        raise AssertionError('example exited %d\nstdout: %s\nstderr: %s' % (p.returncode, p.stdout, p.stderr))
    # Only the two 1 MiB regions written between the sessions are copied.
    assert_in('copied 2097152 bytes in 2 extents', p.stdout, 'incremental copy')
    assert_in('example finished: OK', p.stdout, 'example output')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
