#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A full disk below the daemon (issue 20): a qcow2 image on a small
tmpfs is filled through NBD and through FUSE.  Clients get ENOSPC (not
EIO, not a dropped connection), reads keep working, writes work again
once space is freed, and afterwards qemu-img check finds nothing wrong
and every acknowledged write reads back with qemu-io."""

import contextlib
import errno
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, fuse_export, main, qemu_io,  # noqa: E402
                         require_fuse, require_nbd, require_tool, run, tests_of)

MiB = 1 << 20
FS_SIZE = 24 * MiB
FILLER = 8 * MiB


@contextlib.contextmanager
def small_fs(path):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d' % FS_SIZE, 'blockd-test', path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise Skip('cannot mount a small tmpfs: ' + p.stderr.strip())
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', path])


def _prepare(d):
    fs = d.path('small')
    ctx = small_fs(fs)
    ctx.__enter__()
    img = os.path.join(fs, 'disk.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M'])
    filler = os.path.join(fs, 'filler')
    with open(filler, 'wb') as f:
        f.write(b'\0' * FILLER)
    return ctx, img, filler


def _check_image(img, acked):
    run(['qemu-img', 'check', '-q', img])
    cmds = ['read -P %d %dM 1M' % (pat, off) for off, pat in acked]
    for i in range(0, len(cmds), 16):
        qemu_io(img, *cmds[i:i + 16], fmt='qcow2', extra=['-r'])


def test_nbd_client_gets_enospc_and_recovers():
    nbd = require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        ctx, img, filler = _prepare(d)
        try:
            d.args += ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                       '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
                       '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                       '--export', 'type=nbd,id=e0,node-name=q0,name=disk,writable=on']
            d.wait = [d.nbd_sock]
            d.start()
            h = nbd.NBD()
            h.connect_uri(d.uri())
            acked, failed = [], None
            for i in range(64):
                try:
                    h.pwrite(bytes([i + 1]) * MiB, i * MiB)
                    acked.append((i, i + 1))
                except nbd.Error as e:
                    failed = i
                    assert_eq(e.errno, 'ENOSPC', 'errno of a write to a full disk')
                    break
            if failed is None:
                raise AssertionError('64 MiB fitted on a %d MiB file system' % (FS_SIZE // MiB))
            # The connection is still there: reads work, another write too fails cleanly.
            assert_eq(h.pread(MiB, 0), bytes([1]) * MiB, 'read after ENOSPC')
            try:
                h.pwrite(b'\x77' * MiB, (failed + 1) * MiB)
                raise AssertionError('a second write to the full disk succeeded')
            except nbd.Error as e:
                assert_eq(e.errno, 'ENOSPC', 'errno of the second write')
            h.flush()
            # Space comes back: the write that failed now works.
            os.unlink(filler)
            h.pwrite(bytes([failed + 1]) * MiB, failed * MiB)
            acked.append((failed, failed + 1))
            h.flush()
            h.shutdown()
            d.stop()
            _check_image(img, acked)
        finally:
            ctx.__exit__(None, None, None)


def test_fuse_writer_gets_enospc_and_recovers():
    require_fuse()
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        ctx, img, filler = _prepare(d)
        try:
            d.args += ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                       '--blockdev', 'driver=qcow2,node-name=q0,file=f0']
            d.start()
            q = d.qmp()
            acked, failed = [], None
            with fuse_export(q, 'q0', d.path('mnt'), writable=True) as mnt:
                fd = os.open(mnt, os.O_RDWR)
                try:
                    for i in range(64):
                        try:
                            n = os.pwrite(fd, bytes([i + 1]) * MiB, i * MiB)
                            assert_eq(n, MiB, 'write length')
                            acked.append((i, i + 1))
                        except OSError as e:
                            failed = i
                            assert_eq(e.errno, errno.ENOSPC, 'errno of a write to a full disk')
                            break
                    if failed is None:
                        raise AssertionError('64 MiB fitted on a %d MiB file system'
                                             % (FS_SIZE // MiB))
                    assert_eq(os.pread(fd, MiB, 0), bytes([1]) * MiB, 'read after ENOSPC')
                    os.fsync(fd)
                    os.unlink(filler)
                    assert_eq(os.pwrite(fd, bytes([failed + 1]) * MiB, failed * MiB), MiB,
                              'write after space came back')
                    acked.append((failed, failed + 1))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            d.stop()
            _check_image(img, acked)
        finally:
            ctx.__exit__(None, None, None)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
