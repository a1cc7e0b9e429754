#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""QEMU-compatible image locking between the daemon and qemu-img, qemu-io
and qemu-storage-daemon. What QEMU 7.2 enforces: an NBD export shares
write with other users (qemu-io may still write) but unshares resize, so a
resize by another process is refused; and a process holding the resize
permission makes the daemon's export fail to start."""

import contextlib
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (QSD, Daemon, Skip, assert_eq, assert_in, daemon_exe, main,  # noqa: E402
                         make_image, qemu_io, require_tool, run, start_exporting, tests_of)

MiB = 1 << 20


def test_qemu_img_resize_refused_while_exported():
    require_tool('qemu-img')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with start_exporting(img) as d:
            p = run(['qemu-img', 'resize', '-f', 'raw', img, '8M'], check=False)
            assert_eq(p.returncode, 1, 'qemu-img resize exit status')
            assert_in('Failed to get "resize" lock', p.stderr, 'qemu-img message')
            assert_eq(os.path.getsize(img), 4 * MiB, 'image size unchanged')
            d.assert_alive()


def test_qemu_io_truncate_refused_while_exported():
    require_tool('qemu-io')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with start_exporting(img, writable=False):
            p = qemu_io(img, 'truncate 8M', check=False)
            assert_eq(p.returncode, 1, 'qemu-io exit status')
            assert_in('Failed to get "resize" lock', p.stderr, 'qemu-io message')
            assert_eq(os.path.getsize(img), 4 * MiB, 'image size unchanged')


def test_qemu_io_write_shared_with_export():
    """QEMU's exports share the write permission: qemu-io may write."""
    require_tool('qemu-io')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with start_exporting(img) as d:
            qemu_io(img, 'write -P 0x61 0 64k')
            qemu_io(d.uri(), 'read -P 0x61 0 64k')


def test_qemu_img_info_while_exported():
    require_tool('qemu-img')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with start_exporting(img):
            p = run(['qemu-img', 'info', '-f', 'raw', img])
            assert_in('virtual size: 4 MiB', p.stdout, 'qemu-img info')


def test_locks_released_after_exit():
    require_tool('qemu-img')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with contextlib.closing(start_exporting(img)) as d:
            assert_eq(d.stop(), 0, 'daemon exit status')
        run(['qemu-img', 'resize', '-f', 'raw', img, '8M'])
        assert_eq(os.path.getsize(img), 8 * MiB, 'resized after the daemon exited')


def test_locks_released_after_export_and_node_deleted():
    require_tool('qemu-img')
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 4 * MiB)
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--blockdev', 'driver=raw,node-name=r,file=f',
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=on'] + d.args
        d.start()
        q = d.qmp()
        q.execute('block-export-del', {'id': 'e'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        q.execute('blockdev-del', {'node-name': 'r'})
        q.execute('blockdev-del', {'node-name': 'f'})
        run(['qemu-img', 'resize', '-f', 'raw', img, '8M'])


class _ResizeHolder:
    """qemu-storage-daemon holding the resize permission on an image
    (a growable FUSE export), as another QEMU process would."""

    def __init__(self, img, workdir):
        if not os.path.exists('/dev/fuse') or not os.path.exists(QSD):
            raise Skip('needs /dev/fuse and qemu-storage-daemon to hold a resize lock')
        self.mnt = os.path.join(workdir, 'holder-mnt')
        open(self.mnt, 'w').close()
        self.qmp = os.path.join(workdir, 'holder-qmp.sock')
        self.proc = subprocess.Popen(
            [QSD, '--blockdev', 'driver=file,node-name=hf,filename=%s' % img,
             '--export', 'type=fuse,id=he,node-name=hf,mountpoint=%s,growable=on,writable=on' % self.mnt,
             '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % self.qmp, '--monitor', 'chardev=m'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            errors='replace')
        end = time.monotonic() + 10
        while not os.path.exists(self.qmp):
            if self.proc.poll() is not None:
                raise Skip('cannot start FUSE lock holder: %s' % self.proc.stderr.read().strip())
            if time.monotonic() > end:
                self.close()
                raise AssertionError('lock holder did not start')
            time.sleep(0.02)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_daemon_refuses_image_held_by_other_process():
    """Another process holds the resize permission: the export (or blockdev)
    fails, the daemon exits non-zero naming the option, nothing left behind."""
    exe = daemon_exe()
    with Daemon(qmp=False) as d:
        img = make_image(d.path('a.raw'), 4 * MiB)
        with _ResizeHolder(img, d.dir):
            pidfile = d.path('pid')
            argv = [exe, '--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                    '--blockdev', 'driver=raw,node-name=r,file=f',
                    '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                    '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=on',
                    '--pidfile', pidfile]
            try:
                p = run(argv, check=False, cwd=d.dir, timeout=8)
            except subprocess.TimeoutExpired:
                raise AssertionError('daemon started and served although another process holds '
                                     'the resize permission on the image (expected a lock error)')
            assert_eq(p.returncode != 0, True, 'non-zero exit (got %d)' % p.returncode)
            first = p.stderr.splitlines()[0] if p.stderr else ''
            named = '--export' in first or '--blockdev' in first
            assert_eq(named, True, 'first stderr line names the option: %r' % first)
            assert_in('lock', first, 'message mentions the lock')
            assert_eq(os.path.exists(pidfile), False, 'no pidfile left')


def test_locking_off_ignores_other_holder():
    require_tool('nbdinfo')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with _ResizeHolder(img, scratch.dir):
            with start_exporting(img, file_opts=',locking=off') as d:
                assert_eq(run(['nbdinfo', '--size', d.uri()]).stdout.strip(), str(4 * MiB), 'size')


def test_qemu_img_shrink_refused_with_read_only_export():
    """A read-only export still unshares resize: qemu-img resize --shrink refused."""
    require_tool('qemu-img')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with start_exporting(img, writable=False):
            p = run(['qemu-img', 'resize', '-f', 'raw', '--shrink', img, '2M'], check=False)
            assert_eq(p.returncode, 1, 'qemu-img resize --shrink refused')
            assert_eq(os.path.getsize(img), 4 * MiB, 'size unchanged')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
