#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The FUSE export with real clients: dd/cmp against qemu-img convert,
qemu-io patterns on the mounted file, fallocate punch-hole/zero-range seen
by qemu-img map, truncate on growable and fixed exports, SEEK_DATA/SEEK_HOLE,
read-only refusals, several mounts at once, the same node over NBD and FUSE,
deletion while a reader holds the file open, mountpoint errors, and a
SIGKILLed daemon's stale mount. Every test unmounts in its cleanup."""

import contextlib
import errno
import json
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, Skip, assert_eq, assert_in, fd_open, fuse_mounted,  # noqa: E402
                         is_mounted, is_reference, main, make_image, qemu_io,
                         require_fuse, require_tool, run, tests_of, wait_for, write_at)

MiB = 1 << 20


# --- helpers (FUSE-specific; kept here, the shared module is the test engineer's) ---

def fuse_export_arg(node, mnt, id='fuse0', writable=True, growable=None, extra=''):
    arg = 'type=fuse,id=%s,node-name=%s,mountpoint=%s,writable=%s' % (
        id, node, mnt, 'on' if writable else 'off')
    if growable is not None:
        arg += ',growable=%s' % ('on' if growable else 'off')
    return arg + extra


def raw_node_args(img, name='0', node_opts=''):
    """A file node f<name> and a raw node r<name> above it."""
    return ['--blockdev', 'driver=file,node-name=f%s,filename=%s%s' % (name, img, node_opts),
            '--blockdev', 'driver=raw,node-name=r%s,file=f%s%s' % (name, name, node_opts)]


@contextlib.contextmanager
def fuse_daemon(args, mounts, qmp=True, tmpdir=None):
    """Start a daemon with 'args' (mounting 'mounts'); always unmount."""
    with fuse_mounted(*mounts, wait=False):
        with Daemon(args, qmp=qmp, tmpdir=tmpdir) as d:
            d.start()
            for m in mounts:
                wait_for(lambda: is_mounted(m), what='FUSE mount on %s' % m)
            yield d


def scratch_dir():
    return Daemon(qmp=False)


def new_mountpoint(path):
    open(path, 'w').close()
    return path


def random_image(path, size, seed=1):
    """A raw image with pseudo-random data in some places, holes elsewhere."""
    make_image(path, size)
    rnd = __import__('random').Random(seed)
    for off in range(0, size, 4 * MiB):
        write_at(path, off, rnd.randbytes(256 * 1024))
    return path


def qemu_img_map(img):
    return json.loads(run(['qemu-img', 'map', '-f', 'raw', '--output=json', img]).stdout)


def allocated(img, start, length):
    """True if qemu-img map reports data anywhere in [start, start+length)."""
    for ext in qemu_img_map(img):
        if ext['data'] and ext['start'] < start + length and ext['start'] + ext['length'] > start:
            return True
    return False


def assert_filled(got, byte, length, what):
    """got == bytes([byte]) * length, with a short message when not."""
    if got != bytes([byte]) * length:
        first = next((i for i, b in enumerate(got) if b != byte), len(got))
        raise AssertionError('%s: expected %d bytes of 0x%02x, got %d bytes, first difference at %d '
                             '(0x%02x)' % (what, length, byte, len(got), first,
                                           got[first] if first < len(got) else -1))


# --- tests ---

def test_dd_cmp_against_qemu_img_convert():
    """The mounted file holds exactly the raw contents qemu-img converts."""
    require_fuse()
    require_tool('qemu-img', 'dd', 'cmp')
    with scratch_dir() as s:
        img = random_image(s.path('a.raw'), 16 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', img, s.path('conv.raw')])
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False)],
                         [mnt]):
            assert_eq(os.path.getsize(mnt), 16 * MiB, 'size of the mounted file')
            run(['cmp', mnt, s.path('conv.raw')])
            run(['dd', 'if=' + mnt, 'of=' + s.path('dd.raw'), 'bs=1M', 'iflag=direct'])
            run(['cmp', s.path('dd.raw'), s.path('conv.raw')])


def test_dd_write_through_mount():
    """dd writes through the mount land in the image (checked after stop)."""
    require_fuse()
    require_tool('qemu-img', 'dd', 'cmp')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 8 * MiB)
        src = random_image(s.path('src.raw'), 8 * MiB, seed=7)
        with open(src, 'r+b') as f:
            f.write(os.urandom(8 * MiB))
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)], [mnt]) as d:
            run(['dd', 'if=' + src, 'of=' + mnt, 'bs=256k', 'conv=notrunc,fsync'])
            run(['cmp', mnt, src])
            assert_eq(d.stop(), 0, 'daemon exit status')
        assert_eq(is_mounted(mnt), False, 'mounted after daemon stop')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', img, src])


def test_qemu_io_patterns_on_mounted_file():
    require_fuse()
    require_tool('qemu-io')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 16 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)], [mnt]):
            qemu_io(mnt, 'write -P 0xa5 0 1M', 'write -P 0x3c 5M 64k', 'write -z 8M 1M',
                    'write -P 0x42 1 3', 'write -P 0x44 1000000 12345', 'write -P 0x77 15M 1M',
                    'flush')
            qemu_io(mnt, 'read -P 0xa5 0 1 ', 'read -P 0x42 1 3', 'read -P 0xa5 4 1020',
                    'read -P 0x44 1000000 12345', 'read -P 0x3c 5M 64k', 'read -P 0 8M 1M',
                    'read -P 0x77 15M 1M', 'read -P 0 2M 2M', extra=['-r'])
            # unaligned, O_DIRECT-free reads and writes through qemu-io's cache=none too
            qemu_io(mnt, 'write -P 0x55 3M 128k', extra=['-t', 'none'])
            qemu_io(mnt, 'read -P 0x55 3M 128k', extra=['-r', '-t', 'none'])
        qemu_io(img, 'read -P 0xa5 4 1020', 'read -P 0x3c 5M 64k', 'read -P 0 8M 1M',
                'read -P 0x77 15M 1M', 'read -P 0x55 3M 128k', extra=['-r'])


def test_fsync_and_fdatasync():
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)], [mnt]):
            with fd_open(mnt, os.O_RDWR) as fd:
                os.pwrite(fd, b'\x99' * 4096, 8192)
                os.fsync(fd)
                os.fdatasync(fd)
            with open(img, 'rb') as f:
                f.seek(8192)
                assert_eq(f.read(4096), b'\x99' * 4096, 'image contents after fsync')


def test_fallocate_punch_hole_and_zero_range():
    """punch-hole reads zero and is deallocated in the image (discard=unmap);
    zero-range reads zero; the untouched data around stays."""
    require_fuse()
    require_tool('fallocate', 'qemu-img')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 8 * MiB, pattern=0xab)
        mnt = new_mountpoint(s.path('mnt'))
        args = raw_node_args(img, node_opts=',discard=unmap') + \
            ['--export', fuse_export_arg('r0', mnt)]
        with fuse_daemon(args, [mnt]):
            assert_eq(allocated(img, 1 * MiB, 1 * MiB), True, 'allocated before punch')
            run(['fallocate', '--punch-hole', '--offset', str(1 * MiB), '--length', str(1 * MiB), mnt])
            run(['fallocate', '--zero-range', '--keep-size', '--offset', str(4 * MiB),
                 '--length', str(64 * 1024), mnt])
            with open(mnt, 'rb') as f:
                data = f.read()
            assert_eq(len(data), 8 * MiB, 'size kept')
            assert_filled(data[1 * MiB:2 * MiB], 0, MiB, 'punched range reads zero')
            assert_filled(data[4 * MiB:4 * MiB + 65536], 0, 65536, 'zeroed range reads zero')
            assert_eq(set(data[:1 * MiB]), {0xab}, 'data before the hole')
            assert_eq(set(data[2 * MiB:4 * MiB]), {0xab}, 'data after the hole')
            assert_eq(set(data[4 * MiB + 65536:]), {0xab}, 'data after the zeroed range')
            assert_eq(allocated(img, 1 * MiB, 1 * MiB), False, 'punched range deallocated (qemu-img map)')
            assert_eq(os.path.getsize(img), 8 * MiB, 'image size kept')
            qemu_io(img, 'read -P 0 1M 1M', 'read -P 0xab 0 1M', extra=['-r', '-U'])


def test_fallocate_refused_on_read_only_export():
    require_fuse()
    require_tool('fallocate')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x11)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False)],
                         [mnt]):
            p = run(['fallocate', '--punch-hole', '--offset', '0', '--length', '4096', mnt], check=False)
            assert_eq(p.returncode != 0, True, 'fallocate on a read-only export fails')
            with open(img, 'rb') as f:
                assert_eq(f.read(4096), b'\x11' * 4096, 'image untouched')


def test_fallocate_allocate_mode():
    """Plain fallocate (mode 0): inside the node it leaves the range
    allocated and reading zero (glibc falls back to writing the holes);
    past the end it grows the export, growable or not (as QEMU's: iotest
    308), and allocates the new range."""
    require_fuse()
    require_tool('qemu-img')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB)
        write_at(img, 0, b'\x66' * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        mnt_g = new_mountpoint(s.path('mnt-g'))
        img_g = make_image(s.path('g.raw'), 4 * MiB)
        args = raw_node_args(img) + raw_node_args(img_g, name='1') + [
            '--export', fuse_export_arg('r0', mnt),
            '--export', fuse_export_arg('r1', mnt_g, id='g', growable=True)]
        with fuse_daemon(args, [mnt, mnt_g]):
            with fd_open(mnt, os.O_RDWR) as fd:
                os.posix_fallocate(fd, 0, MiB)            # already allocated
                os.posix_fallocate(fd, 2 * MiB, MiB)      # a hole
                assert_filled(os.pread(fd, MiB, 2 * MiB), 0, MiB, 'allocated range reads zero')
                assert_filled(os.pread(fd, MiB, 0), 0x66, MiB, 'data kept')
            assert_eq(allocated(img, 2 * MiB, MiB), True, 'hole allocated (qemu-img map)')
            assert_eq(os.path.getsize(img), 4 * MiB, 'size unchanged by fallocate inside')
            with fd_open(mnt, os.O_RDWR) as fd:
                os.posix_fallocate(fd, 4 * MiB, MiB)
                assert_filled(os.pread(fd, MiB, 4 * MiB), 0, MiB, 'grown range reads zero')
            assert_eq(os.path.getsize(mnt), 5 * MiB, 'non-growable export grown by fallocate')
            assert_eq(os.path.getsize(img), 5 * MiB, 'image grown')
            assert_eq(allocated(img, 4 * MiB, MiB), True, 'grown range allocated (qemu-img map)')
            qemu_io(img, 'read -P 0x66 0 1M', 'read -P 0 1M 4M', extra=['-r', '-U', '-f', 'raw'])
            with fd_open(mnt_g, os.O_RDWR) as fd:
                os.posix_fallocate(fd, 4 * MiB, 2 * MiB)
            assert_eq(os.path.getsize(mnt_g), 6 * MiB, 'growable export grown by fallocate')
            assert_eq(os.path.getsize(img_g), 6 * MiB, 'growable image grown')


def test_open_with_o_trunc_refused_when_not_growable():
    """Opening a fixed-size export with O_TRUNC (dd without conv=notrunc,
    shell '>') must not wipe the disk."""
    require_fuse()
    if is_reference():
        raise Skip('reference daemon resizes non-growable writable exports')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x3e)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)], [mnt]):
            try:
                os.close(os.open(mnt, os.O_WRONLY | os.O_TRUNC))
                raise AssertionError('O_TRUNC open of a fixed-size export succeeded')
            except OSError as e:
                assert_eq(e.errno, errno.EPERM, 'errno')
            assert_eq(os.path.getsize(mnt), 4 * MiB, 'size kept')
            with open(mnt, 'rb') as f:
                assert_filled(f.read(4096), 0x3e, 4096, 'data kept')


def test_truncate_growable():
    require_fuse()
    require_tool('truncate', 'qemu-img')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x33)
        mnt = new_mountpoint(s.path('mnt'))
        args = raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, growable=True)]
        with fuse_daemon(args, [mnt]):
            run(['truncate', '-s', str(6 * MiB), mnt])
            assert_eq(os.path.getsize(mnt), 6 * MiB, 'mounted file grown')
            assert_eq(os.path.getsize(img), 6 * MiB, 'image grown')
            with open(mnt, 'rb') as f:
                f.seek(4 * MiB)
                assert_eq(f.read(2 * MiB), bytes(2 * MiB), 'grown part reads zero')
            # a write past the end grows the file too
            with fd_open(mnt, os.O_WRONLY) as fd:
                assert_eq(os.pwrite(fd, b'\x44' * 4096, 7 * MiB), 4096, 'write past end')
                os.ftruncate(fd, 5 * MiB)
            assert_eq(os.path.getsize(mnt), 5 * MiB, 'shrunk by ftruncate')
            assert_eq(os.path.getsize(img), 5 * MiB, 'image shrunk')
            qemu_io(img, 'read -P 0x33 0 4M', 'read -P 0 4M 1M', extra=['-r', '-U'])


def test_truncate_not_growable():
    """truncate(2) resizes a writable export that is not growable, as
    QEMU's does (it borrows the resize permission for the call); writes
    still stop at the end."""
    require_fuse()
    require_tool('truncate', 'qemu-img')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x2d)
        mnt = new_mountpoint(s.path('mnt'))
        args = raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)]
        with fuse_daemon(args, [mnt]):
            run(['truncate', '-s', str(8 * MiB), mnt])
            assert_eq(os.path.getsize(mnt), 8 * MiB, 'mounted file grown')
            assert_eq(os.path.getsize(img), 8 * MiB, 'image grown')
            run(['truncate', '-s', str(6 * MiB), mnt])
            assert_eq(os.path.getsize(img), 6 * MiB, 'image shrunk')
            # truncating to the same size is harmless
            run(['truncate', '-s', str(6 * MiB), mnt])
            # writes stop at the (new) end: a short write, then ENOSPC
            with fd_open(mnt, os.O_WRONLY) as fd:
                assert_eq(os.pwrite(fd, b'\x01' * 8192, 6 * MiB - 4096), 4096, 'short write at the end')
                try:
                    os.pwrite(fd, b'\x01' * 4096, 6 * MiB)
                    raise AssertionError('write past the end succeeded')
                except OSError as e:
                    # QEMU 7.2 answers EIO; the disk is full, ENOSPC says so.
                    if not is_reference():
                        assert_eq(e.errno, errno.ENOSPC, 'errno of a write past the end')
            assert_eq(os.path.getsize(img), 6 * MiB, 'image size unchanged after writes')
        qemu_io(img, 'read -P 0x2d 0 4M', 'read -P 0 4M 2044k', 'read -P 1 6140k 4k',
                extra=['-r', '-f', 'raw'])


def test_resize_needs_the_permission():
    """A writable export borrows the resize permission only if no other
    user of the node forbids it: refused (EPERM) then, nothing changed.
    (QSD 7.2 holds the permission for the export's life instead, so that
    a mirror of the node is refused while the export exists.)"""
    require_fuse()
    require_tool('truncate', 'qemu-img')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x2d)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)],
                         [mnt]) as d:
            q = d.qmp()
            # A mirror job's source may not change size under it.
            q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt',
                                       'size': 4 * MiB})
            if is_reference():
                # QSD 7.2's writable FUSE exports hold the resize
                # permission for good: the mirror itself is refused.
                q.error('blockdev-mirror', {'job-id': 'm', 'device': 'r0',
                                            'target': 'tgt', 'sync': 'full'})
                raise Skip('reference refuses a mirror under a writable FUSE export')
            q.execute('blockdev-mirror', {'job-id': 'm', 'device': 'r0',
                                          'target': 'tgt', 'sync': 'full'})
            q.wait_event('BLOCK_JOB_READY')
            try:
                os.truncate(mnt, 8 * MiB)
                raise AssertionError('truncate under a mirror job succeeded')
            except OSError as e:
                assert_eq(e.errno, errno.EPERM, 'errno')
            assert_eq(os.path.getsize(img), 4 * MiB, 'image size unchanged')
            q.execute('block-job-cancel', {'device': 'm'})
            q.wait_event('BLOCK_JOB_COMPLETED')
            run(['truncate', '-s', str(8 * MiB), mnt])
            assert_eq(os.path.getsize(img), 8 * MiB, 'grown once the other user left')


def test_iotest308_resizing_exports():
    """iotest 308's "Resizing exports" on a qcow2 image's protocol node:
    a non-growable export refuses writes past the end but grows by
    fallocate (and its disk usage with it); a growable one grows by
    writes; truncate shrinks it back; the format layer stays intact."""
    require_fuse()
    require_tool('qemu-img', 'fallocate', 'dd')
    with scratch_dir() as s:
        img = s.path('t.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M'])
        qemu_io(img, 'write -P 0x5c 0 1M', extra=['-f', 'qcow2'])
        mnt = new_mountpoint(s.path('t.fuse'))
        args = ['--blockdev', 'driver=file,node-name=node-protocol,filename=%s' % img]
        with fuse_daemon(args, []) as d:
            q = d.qmp()
            q.execute('block-export-add', {'type': 'fuse', 'id': 'export-mp',
                                          'node-name': 'node-protocol',
                                          'mountpoint': mnt, 'writable': True})
            orig_len = os.path.getsize(mnt)
            assert_eq(orig_len, os.path.getsize(img), 'export and file lengths')
            orig_blocks = os.stat(img).st_blocks
            p = run(['dd', 'if=/dev/zero', 'of=' + mnt, 'bs=1', 'count=64k',
                     'seek=%d' % orig_len], check=False)
            assert_eq(p.returncode != 0, True, 'dd past the end of a non-growable export fails')
            assert_eq(os.path.getsize(img), orig_len, 'size after refused dd')
            run(['fallocate', '-o', str(orig_len), '-l', '64k', mnt])
            assert_eq(os.path.getsize(mnt), orig_len + 65536, 'post-fallocate export size')
            assert_eq(os.path.getsize(img), orig_len + 65536, 'post-fallocate file size')
            assert_eq(os.stat(img).st_blocks > orig_blocks, True, 'disk usage grew with fallocate')
            q.execute('block-export-del', {'id': 'export-mp'})
            q.wait_event('BLOCK_EXPORT_DELETED')
            q.execute('block-export-add', {'type': 'fuse', 'id': 'export-mp',
                                          'node-name': 'node-protocol',
                                          'mountpoint': mnt, 'writable': True,
                                          'growable': True})
            run(['dd', 'if=/dev/zero', 'of=' + mnt, 'bs=1', 'count=64k',
                 'seek=%d' % (orig_len + 65536)])
            assert_eq(os.path.getsize(mnt), orig_len + 131072, 'post-grow export size')
            run(['truncate', '-s', str(orig_len), mnt])
            assert_eq(os.path.getsize(mnt), orig_len, 'post-truncate export size')
            assert_eq(os.path.getsize(img), orig_len, 'post-truncate file size')
            q.execute('block-export-del', {'id': 'export-mp'})
            q.wait_event('BLOCK_EXPORT_DELETED')
        run(['qemu-img', 'check', '-q', img])
        qemu_io(img, 'read -P 0x5c 0 1M', extra=['-r', '-f', 'qcow2'])


def test_truncate_refused_on_read_only_export():
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        args = raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False, growable=True)]
        with fuse_daemon(args, [mnt]):
            try:
                os.truncate(mnt, 8 * MiB)
                raise AssertionError('truncate of a read-only export succeeded')
            except OSError as e:
                assert_in(e.errno, (errno.EACCES, errno.EROFS, errno.EPERM), 'errno')
            assert_eq(os.path.getsize(img), 4 * MiB, 'image size unchanged')


def test_seek_data_and_hole():
    """SEEK_DATA/SEEK_HOLE follow the sparse image's allocation."""
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 16 * MiB)
        write_at(img, 2 * MiB, b'\x01' * (1 * MiB))
        write_at(img, 10 * MiB, b'\x02' * (64 * 1024))
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False)],
                         [mnt]):
            with fd_open(mnt, os.O_RDONLY) as fd:
                assert_eq(os.lseek(fd, 0, os.SEEK_DATA), 2 * MiB, 'first data')
                assert_eq(os.lseek(fd, 0, os.SEEK_HOLE), 0, 'hole at 0')
                assert_eq(os.lseek(fd, 2 * MiB, os.SEEK_HOLE), 3 * MiB, 'hole after first data')
                assert_eq(os.lseek(fd, 2 * MiB + 5, os.SEEK_DATA), 2 * MiB + 5, 'inside data')
                assert_eq(os.lseek(fd, 3 * MiB, os.SEEK_DATA), 10 * MiB, 'second data')
                assert_eq(os.lseek(fd, 10 * MiB, os.SEEK_HOLE), 10 * MiB + 65536, 'hole after second')
                assert_eq(os.lseek(fd, 11 * MiB, os.SEEK_HOLE), 11 * MiB, 'hole in hole')
                try:
                    os.lseek(fd, 11 * MiB, os.SEEK_DATA)
                    raise AssertionError('SEEK_DATA past the last data succeeded')
                except OSError as e:
                    assert_eq(e.errno, errno.ENXIO, 'SEEK_DATA in the trailing hole')
                # Linux file systems say ENXIO at the end (QEMU 7.2 returns the end)
                try:
                    got = os.lseek(fd, 16 * MiB, os.SEEK_HOLE)
                    if not is_reference():
                        raise AssertionError('SEEK_HOLE at the end returned %d' % got)
                except OSError as e:
                    assert_eq(e.errno, errno.ENXIO, 'SEEK_HOLE at EOF')


def test_qcow2_seek_hole_convert_and_write():
    """A sparse qcow2 through FUSE: SEEK_DATA/SEEK_HOLE follow its clusters,
    the mounted file equals qemu-img convert -O raw, and qemu-io writes on
    the mount leave an image that qemu-img check accepts."""
    require_fuse()
    require_tool('qemu-img', 'qemu-io', 'cmp')
    with scratch_dir() as s:
        img = s.path('a.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '16M'])
        qemu_io(img, 'write -P 1 2M 1M', 'write -P 2 10M 64k', fmt='qcow2')
        run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', img, s.path('conv.raw')])
        mnt = new_mountpoint(s.path('mnt'))
        args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
                '--export', fuse_export_arg('q0', mnt)]
        with fuse_daemon(args, [mnt]) as d:
            with fd_open(mnt, os.O_RDONLY) as fd:
                assert_eq(os.lseek(fd, 0, os.SEEK_DATA), 2 * MiB, 'first data')
                assert_eq(os.lseek(fd, 2 * MiB, os.SEEK_HOLE), 3 * MiB, 'hole after first data')
                assert_eq(os.lseek(fd, 3 * MiB, os.SEEK_DATA), 10 * MiB, 'second data')
                assert_eq(os.lseek(fd, 10 * MiB, os.SEEK_HOLE), 10 * MiB + 65536, 'hole after second')
            run(['cmp', mnt, s.path('conv.raw')])
            qemu_io(mnt, 'write -P 3 5M 128k', 'write -P 4 15M 4k')
            with open(mnt, 'rb') as f:
                assert_eq(os.lseek(f.fileno(), 4 * MiB, os.SEEK_DATA), 5 * MiB,
                          'new data seen by SEEK_DATA')
            assert_eq(d.stop(), 0, 'daemon exit status')
        run(['qemu-img', 'check', '-q', '-f', 'qcow2', img])
        qemu_io(img, 'read -P 1 2M 1M', 'read -P 2 10M 64k', 'read -P 3 5M 128k',
                'read -P 4 15M 4k', 'read -P 0 0 2M', fmt='qcow2', extra=['-r'])


def test_stat_size_mode_owner():
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 5 * MiB + 4096)
        mnt_rw = new_mountpoint(s.path('rw'))
        mnt_ro = new_mountpoint(s.path('ro'))
        os.chmod(mnt_rw, 0o640)
        os.chmod(mnt_ro, 0o644)
        args = raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt_rw, id='rw'),
                                     '--export', fuse_export_arg('r0', mnt_ro, id='ro', writable=False)]
        with fuse_daemon(args, [mnt_rw, mnt_ro]):
            for m in (mnt_rw, mnt_ro):
                st = os.stat(m)
                assert_eq(st.st_size, 5 * MiB + 4096, 'st_size of ' + m)
                assert_eq(st.st_uid, os.getuid(), 'st_uid')
                assert_eq(bool(st.st_mode & 0o100000), True, 'regular file')
            # QEMU's modes, whatever the mountpoint's (iotest 308).
            assert_eq(os.stat(mnt_rw).st_mode & 0o7777, 0o600, 'mode of a writable export')
            assert_eq(os.stat(mnt_ro).st_mode & 0o7777, 0o400, 'mode of a read-only export')


def test_read_only_refuses_writes():
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x5a)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False)],
                         [mnt]):
            # blockd refuses at open (root passes mode checks); QEMU at write
            try:
                with fd_open(mnt, os.O_RDWR) as fd:
                    os.pwrite(fd, b'x' * 512, 0)
                raise AssertionError('write to a read-only export succeeded')
            except OSError as e:
                assert_in(e.errno, (errno.EACCES, errno.EROFS, errno.EPERM), 'errno')
            with open(mnt, 'rb') as f:
                assert_eq(f.read(512), b'\x5a' * 512, 'contents unchanged')
            p = qemu_io(mnt, 'write -P 1 0 4k', check=False)
            assert_eq(p.returncode != 0 or 'failed' in p.stdout.lower() or 'denied' in p.stdout.lower(),
                      True, 'qemu-io write refused')
        with open(img, 'rb') as f:
            assert_eq(f.read(4096), b'\x5a' * 4096, 'image unchanged')


def test_several_exports_at_once():
    """Three images on three mounts, written in parallel, each verified."""
    require_fuse()
    require_tool('qemu-io')
    with scratch_dir() as s:
        imgs = [make_image(s.path('i%d.raw' % i), 8 * MiB) for i in range(3)]
        mnts = [new_mountpoint(s.path('m%d' % i)) for i in range(3)]
        args = []
        for i in range(3):
            args += raw_node_args(imgs[i], name=str(i))
            args += ['--export', fuse_export_arg('r%d' % i, mnts[i], id='e%d' % i)]
        with fuse_daemon(args, mnts) as d:
            errors = []

            def writer(i):
                try:
                    qemu_io(mnts[i], 'write -P %d 0 8M' % (0x10 + i))
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
            ts = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            if errors:
                raise errors[0]
            q = d.qmp()
            exps = q.execute('query-block-exports')
            assert_eq(sorted(e['id'] for e in exps), ['e0', 'e1', 'e2'], 'export ids')
            assert_eq({e['type'] for e in exps}, {'fuse'}, 'export types')
        for i in range(3):
            qemu_io(imgs[i], 'read -P %d 0 8M' % (0x10 + i), extra=['-r'])


def test_parallel_readers_and_writers():
    """Many threads on one open file at once, each on its own region."""
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 32 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt)], [mnt]):
            errors = []
            with fd_open(mnt, os.O_RDWR) as fd:

                def worker(i):
                    try:
                        base = i * 2 * MiB
                        for k in range(32):
                            blk = bytes([(i * 32 + k) & 0xff]) * 65536
                            os.pwrite(fd, blk, base + k * 65536)
                        for k in range(32):
                            got = os.pread(fd, 65536, base + k * 65536)
                            if got != bytes([(i * 32 + k) & 0xff]) * 65536:
                                errors.append('thread %d block %d differs' % (i, k))
                    except OSError as e:
                        errors.append(e)
                ts = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
            assert_eq(errors, [], 'errors')


def test_same_node_over_nbd_and_fuse():
    """A write through one export is visible through the other at once,
    with the FUSE file held open the whole time (no stale page cache)."""
    require_fuse()
    require_tool('qemu-io')
    if is_reference():
        # Its writable FUSE export takes the resize permission, which its NBD
        # export unshares; and it keeps a page cache, so an open file reads
        # stale data after an NBD write (checked by hand: it does).
        raise Skip('reference daemon: FUSE export not coherent with NBD (page cache)')
    fuse_writable = True
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 8 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        nbd_sock = s.path('nbd.sock')
        args = raw_node_args(img) + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd_sock,
            '--export', 'type=nbd,id=n0,node-name=r0,name=disk,writable=on',
            '--export', fuse_export_arg('r0', mnt, writable=fuse_writable)]
        uri = 'nbd+unix:///disk?socket=%s' % nbd_sock
        with fuse_daemon(args, [mnt]):
            with fd_open(mnt, os.O_RDWR if fuse_writable else os.O_RDONLY) as fd:
                assert_eq(os.pread(fd, 4096, 1 * MiB), bytes(4096), 'zero before')
                for rnd in range(3):
                    pat = 0x20 + rnd
                    qemu_io(uri, 'write -P %d 1M 64k' % pat)
                    assert_filled(os.pread(fd, 65536, 1 * MiB), pat, 65536,
                                  'NBD write seen through the open FUSE file (round %d)' % rnd)
                    if fuse_writable:
                        os.pwrite(fd, bytes([pat + 0x40]) * 65536, 3 * MiB)
                        qemu_io(uri, 'read -P %d 3M 64k' % (pat + 0x40))


def test_export_deleted_while_file_open():
    """block-export-del while a reader holds the file: the mount goes away,
    BLOCK_EXPORT_DELETED arrives, further reads fail at once (no hang)."""
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x7e)
        mnt = new_mountpoint(s.path('mnt'))
        args = raw_node_args(img)
        with fuse_daemon(args, []) as d, fuse_mounted(mnt, wait=False):
            q = d.qmp()
            q.execute('block-export-add', {'type': 'fuse', 'id': 'e0', 'node-name': 'r0',
                                           'mountpoint': mnt, 'writable': False})
            wait_for(lambda: is_mounted(mnt), what='mount')
            with fd_open(mnt, os.O_RDONLY, quiet_close=True) as fd:
                assert_eq(os.pread(fd, 4096, 0), b'\x7e' * 4096, 'read before delete')
                q.execute('block-export-del', {'id': 'e0'})
                ev = q.wait_event('BLOCK_EXPORT_DELETED')
                assert_eq(ev['data']['id'], 'e0', 'deleted export id')
                wait_for(lambda: not is_mounted(mnt), what='unmount')
                result = {}

                def reader():
                    try:
                        result['data'] = os.pread(fd, 4096, 0)
                    except OSError as e:
                        result['errno'] = e.errno
                t = threading.Thread(target=reader, daemon=True)
                t.start()
                t.join(10)
                assert_eq(t.is_alive(), False, 'read after delete hangs')
                # QEMU 7.2 caches pages and may still answer from the cache
                if not is_reference():
                    assert_in('errno', list(result), 'read after delete fails')
            assert_eq(q.execute('query-block-exports'), [], 'exports after delete')
            # the node is free again: a new export on the same mountpoint works
            q.execute('block-export-add', {'type': 'fuse', 'id': 'e1', 'node-name': 'r0',
                                           'mountpoint': mnt, 'writable': False})
            wait_for(lambda: is_mounted(mnt), what='mount again')
            with open(mnt, 'rb') as f:
                assert_eq(f.read(4096), b'\x7e' * 4096, 'read after re-export')


def test_qmp_add_del_and_mountpoint_errors():
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        os.mkdir(s.path('dir'))
        with fuse_daemon(raw_node_args(img), []) as d, fuse_mounted(mnt, wait=False):
            q = d.qmp()
            base = {'type': 'fuse', 'node-name': 'r0', 'writable': False}
            err = q.error('block-export-add', dict(base, id='x', mountpoint=s.path('missing')))
            assert_eq(err['desc'], "Failed to stat '%s': No such file or directory"
                      % s.path('missing'), 'missing mountpoint')
            err = q.error('block-export-add', dict(base, id='x', mountpoint=s.path('dir')))
            assert_eq(err['desc'], "'%s' is not a regular file" % s.path('dir'), 'directory')
            q.execute('block-export-add', dict(base, id='e0', mountpoint=mnt))
            wait_for(lambda: is_mounted(mnt), what='mount')
            err = q.error('block-export-add', dict(base, id='e1', mountpoint=mnt))
            assert_eq(err['desc'], "There already is a FUSE export on '%s'" % mnt, 'duplicate')
            err = q.error('block-export-add', dict(base, id='e1', mountpoint=mnt,
                                                   **{'allow-other': 'maybe'}))
            assert_in("allow-other", err['desc'], 'bad allow-other')
            exps = q.execute('query-block-exports')
            assert_eq([(e['id'], e['type'], e['node-name']) for e in exps],
                      [('e0', 'fuse', 'r0')], 'query-block-exports')
            q.execute('block-export-del', {'id': 'e0'})
            q.wait_event('BLOCK_EXPORT_DELETED')
            wait_for(lambda: not is_mounted(mnt), what='unmount')
            # allow-other=off mounts without allow_other
            q.execute('block-export-add', dict(base, id='e3', mountpoint=mnt,
                                               **{'allow-other': 'off'}))
            wait_for(lambda: is_mounted(mnt), what='mount (allow-other=off)')
            with open(mnt, 'rb') as f:
                assert_eq(len(f.read()), 4 * MiB, 'readable')


def test_daemon_shutdown_unmounts():
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB)
        mnts = [new_mountpoint(s.path('m%d' % i)) for i in range(2)]
        args = raw_node_args(img) + ['--export', fuse_export_arg('r0', mnts[0], id='a', writable=False),
                                     '--export', fuse_export_arg('r0', mnts[1], id='b', writable=False)]
        with fuse_daemon(args, mnts) as d:
            # an open file must not block shutdown
            with fd_open(mnts[0], os.O_RDONLY, quiet_close=True):
                q = d.qmp()
                q.execute('quit')
                assert_eq(d.wait_exit(), 0, 'exit status after quit')
                for m in mnts:
                    assert_eq(is_mounted(m), False, 'mounted after quit: ' + m)


def test_sigkill_leaves_mount_that_fusermount_clears():
    """After SIGKILL the stale mount gives ENOTCONN; the next start says what
    to run; after fusermount3 -u the same command line works again."""
    require_fuse()
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB, pattern=0x21)
        mnt = new_mountpoint(s.path('mnt'))
        args = raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False)]
        with fuse_mounted(mnt, wait=False):
            d = Daemon(args, qmp=True)
            with d:
                d.start()
                wait_for(lambda: is_mounted(mnt), what='mount')
                d.signal(signal.SIGKILL)
                d.wait_exit()
            assert_eq(is_mounted(mnt), True, 'stale mount left by SIGKILL')

            def stale():
                # (QEMU's attributes stay cached for a second)
                try:
                    os.stat(mnt)
                    return False
                except OSError as e:
                    assert_eq(e.errno, errno.ENOTCONN, 'errno on the stale mount')
                    return True
            wait_for(stale, timeout=5, what='ENOTCONN from the stale mount')
            d2 = Daemon(args, qmp=False)
            with d2:
                d2.start()
                code = d2.wait_exit()
                assert_eq(code != 0, True, 'start on a stale mount fails')
                assert_in("Failed to stat '%s'" % mnt, d2.stderr(), 'message')
                if not is_reference():
                    assert_in("fusermount3 -u '%s'" % mnt, d2.stderr(), 'remedy in the message')
            run(['fusermount3', '-u', mnt])
            with fuse_daemon(args, [mnt]):
                with open(mnt, 'rb') as f:
                    assert_eq(f.read(4096), b'\x21' * 4096, 'read after restart')


def test_mountpoint_already_mounted_elsewhere():
    """A mountpoint another daemon has mounted is refused with a remedy."""
    require_fuse()
    if is_reference():
        raise Skip('QEMU mounts over an existing mount')
    with scratch_dir() as s:
        img = make_image(s.path('a.raw'), 4 * MiB)
        img2 = make_image(s.path('b.raw'), 4 * MiB)
        mnt = new_mountpoint(s.path('mnt'))
        with fuse_daemon(raw_node_args(img) + ['--export', fuse_export_arg('r0', mnt, writable=False)],
                         [mnt]):
            d2 = Daemon(raw_node_args(img2) + ['--export', fuse_export_arg('r0', mnt, writable=False)],
                        qmp=False)
            with d2:
                d2.start()
                assert_eq(d2.wait_exit() != 0, True, 'second daemon fails')
                assert_in("is already a mount point", d2.stderr(), 'message')


# --- memory bound (issue 20) ---

def test_parallel_large_writes_memory_bounded():
    """Sixteen fio jobs with 4 MiB direct writes, 8 in flight each, on a
    slow (throttled) node: the export's request memory is bounded by its
    workers (3 MiB each, doc/blockd-qmp.7.scd), not by the writers, and
    every write completes."""
    require_fuse()
    require_tool('fio')
    if is_reference():
        raise Skip('qemu-storage-daemon 7.2: no documented bound to check')
    with scratch_dir() as s:
        mnt = new_mountpoint(s.path('mnt'))
        args = ['--object', 'throttle-group,id=tg,x-bps-write=268435456',
                '--blockdev', 'driver=null-co,node-name=n0,size=%d' % (1 << 30),
                '--blockdev', 'driver=throttle,node-name=t0,file=n0,throttle-group=tg',
                '--export', fuse_export_arg('t0', mnt)]
        with fuse_daemon(args, [mnt]) as d:
            base = bt.proc_status_kib(d.proc.pid, 'VmRSS')
            p = run(['fio', '--name=flood', '--filename=' + mnt, '--rw=write', '--bs=4M',
                     '--direct=1', '--ioengine=libaio', '--iodepth=8', '--numjobs=16',
                     '--size=64M', '--offset_increment=64M', '--group_reporting',
                     '--output-format=json'], timeout=300)
            job = json.loads(p.stdout[p.stdout.index('{'):])['jobs'][0]
            assert_eq((job['error'], job['write']['io_bytes']), (0, 1 << 30), 'fio writes')
            d.assert_alive()
            if bt.daemon_sanitized():
                return    # the sanitizer's quarantine holds freed buffers
            workers = min(max(4 * len(os.sched_getaffinity(0)), 8), 32)
            grown = (bt.proc_status_kib(d.proc.pid, 'VmHWM') - base) // 1024
            # The documented bound, and room for the allocator's arenas
            # and the worker threads' stacks.
            bound = 3 * workers + 16
            print('FUSE flood: VmHWM grew by %d MiB (bound %d MiB, %d workers)'
                  % (grown, bound, workers))
            if grown > bound:
                raise AssertionError('the daemon grew by %d MiB, more than %d MiB'
                                     % (grown, bound))


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
