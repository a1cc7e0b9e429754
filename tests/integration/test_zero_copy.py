#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The zero-copy data path (bd_entry_pread_to_fd / pwrite_from_fd): NBD
reads sent with sendfile from raw-on-file and file nodes, in simple and
structured replies, and every buffered path it falls back to (qcow2,
filters, TLS, detect-zeroes), checked against the image file with qemu-io
and qemu-img compare; dirty bitmaps, read-only exports and out-of-range
requests behave as on the buffered path.  Whether sendfile/splice ran is
counted with strace attached to the daemon."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, fd_open, fuse_export, main,  # noqa: E402
                         make_image, nbd_connection, nbd_errno, qemu_io, require_fuse,
                         require_nbd, require_tool, run, skip_if_reference, start_daemon,
                         start_exporting, tests_of, wait_for, write_at)

MiB = 1 << 20
ZERO_COPY_CALLS = ('sendfile', 'splice')


def _strace_summary(path):
    """{syscall: calls} from strace -c output."""
    counts = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[-1] in ZERO_COPY_CALLS and fields[3].isdigit():
                counts[fields[-1]] = int(fields[3])
    return counts


def _traced(pid):
    with open('/proc/%d/status' % pid) as f:
        m = re.search(r'^TracerPid:\s+(\d+)', f.read(), re.M)
    return m and m.group(1) != '0'


@contextlib.contextmanager
def syscall_counts(d):
    """strace -f -c attached to daemon d for the block; yields a dict that
    holds {syscall: calls} of sendfile and splice once the block ends."""
    skip_if_reference('counts blockd system calls')
    require_tool('strace')
    out = tempfile.NamedTemporaryFile(prefix='blockd-strace-', delete=False)
    out.close()
    p = subprocess.Popen(['strace', '-f', '-c', '-q', '-e', 'trace=' + ','.join(ZERO_COPY_CALLS),
                          '-o', out.name, '-p', str(d.proc.pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    counts = {}
    try:
        end = time.monotonic() + 10
        while not _traced(d.proc.pid):
            if p.poll() is not None:
                raise Skip('strace cannot attach: %s' % p.stderr.read().decode(errors='replace'))
            if time.monotonic() > end:
                raise AssertionError('strace did not attach')
            time.sleep(0.02)
        yield counts
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)   # detach and print the summary
            p.wait(30)
        counts.update(_strace_summary(out.name))
        os.unlink(out.name)


def _pattern_image(path, size=16 * MiB):
    """Data, holes and data again, with distinct bytes per MiB."""
    make_image(path, size)
    for i in (i for i in (0, 1, 2, 3, 8, 9, 15) if i * MiB < size):
        write_at(path, i * MiB, bytes([0x10 + i]) * MiB)
    with open(path, 'rb') as f:
        return f.read()


def _check_reads(h, data, structured):
    nbd = require_nbd()
    cases = [(0, MiB), (MiB - 4096, 3 * MiB), (12345, 100000), (3 * MiB, 6 * MiB),
             (0, len(data)), (5 * MiB, 64 * 1024), (15 * MiB, MiB), (7, 4096)]
    for off, n in cases:
        assert_eq(h.pread(n, off), data[off:off + n], 'pread %d+%d' % (off, n))
        if structured:
            got = h.pread_structured(n, off, lambda *a: 0, nbd.CMD_FLAG_DF)
            assert_eq(bytes(got), data[off:off + n], 'pread DF %d+%d' % (off, n))


def test_nbd_reads_raw_on_file():
    """Reads with simple and structured replies (with and without DF)
    equal the image, and went out by sendfile; qemu-io sees the patterns."""
    require_nbd()
    with Daemon(qmp=False) as scratch:
        data = _pattern_image(scratch.path('a.raw'))
        with contextlib.closing(start_exporting(scratch.path('a.raw'))) as d:
            with syscall_counts(d) as counts:
                for structured in (False, True):
                    with nbd_connection(d.uri(), structured=structured) as h:
                        assert_eq(h.get_structured_replies_negotiated(), structured)
                        _check_reads(h, data, structured)
                qemu_io(d.uri(), 'read -P 0x10 0 1M', 'read -P 0x13 3M 1M',
                        'read -P 0 4M 4M', 'read -P 0x19 9M 1M')
            assert counts.get('sendfile', 0) > 0, 'sendfile not used: %r' % counts


def test_nbd_reads_file_node():
    """An export of the file node itself reads by sendfile too."""
    require_tool('qemu-img')
    with Daemon(qmp=False) as scratch:
        img = scratch.path('a.raw')
        _pattern_image(img)
        with start_daemon(['--blockdev', 'driver=file,node-name=file0,filename=%s' % img,
                           '--nbd-server', 'addr.type=unix,addr.path=%s' % scratch.nbd_sock,
                           '--export', 'type=nbd,id=e,node-name=file0,name=disk'],
                          qmp=False, wait=[scratch.nbd_sock]) as d:
            uri = scratch.uri()
            with syscall_counts(d) as counts:
                run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', img, uri])
            assert counts.get('sendfile', 0) > 0, 'sendfile not used: %r' % counts


def test_nbd_writes_raw_on_file():
    """Large and small writes over NBD (both reply kinds) land in the image:
    qemu-io read -P on the file after the daemon stopped, qemu-img compare."""
    require_nbd()
    require_tool('qemu-io', 'qemu-img')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 16 * MiB)
        ref = make_image(scratch.path('ref.raw'), 16 * MiB)
        with contextlib.closing(start_exporting(img)) as d:
            for structured, (off, n, byte) in [(False, (0, MiB, 0x51)), (True, (3 * MiB, 2 * MiB, 0x52)),
                                               (False, (7 * MiB + 512, 100000, 0x53)),
                                               (True, (12 * MiB, 4096, 0x54))]:
                with nbd_connection(d.uri(), structured=structured) as h:
                    h.pwrite(bytes([byte]) * n, off)
                    h.flush()
                write_at(ref, off, bytes([byte]) * n)
            qemu_io(d.uri(), 'write -P 0x55 13M 1M', 'write -P 0x56 14M 64k')
            write_at(ref, 13 * MiB, b'\x55' * MiB)
            write_at(ref, 14 * MiB, b'\x56' * 65536)
            assert_eq(d.stop(), 0, 'daemon exit status')
        qemu_io(img, 'read -P 0x51 0 1M', 'read -P 0x52 3M 2M', 'read -P 0x54 12M 4k',
                'read -P 0x55 13M 1M', 'read -P 0 1M 2M')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', img, ref])


def test_eof_inside_the_node():
    """The image file shrinks under the daemon (another program truncates
    it): reads past its end still return zeroes, the stream stays intact
    (the sendfile path pads what the file no longer has)."""
    require_nbd()
    with Daemon(qmp=False) as scratch:
        data = _pattern_image(scratch.path('a.raw'), 8 * MiB)
        with contextlib.closing(start_exporting(scratch.path('a.raw'), file_opts=',locking=off')) as d:
            os.truncate(scratch.path('a.raw'), 2 * MiB + 4096)
            want = data[:2 * MiB + 4096] + bytes(8 * MiB - 2 * MiB - 4096)
            for structured in (False, True):
                with nbd_connection(d.uri(), structured=structured) as h:
                    for off, n in [(MiB, 2 * MiB), (2 * MiB, MiB), (0, 8 * MiB)]:
                        assert_eq(h.pread(n, off), want[off:off + n], 'pread %d+%d' % (off, n))
                    assert_eq(h.pread(4096, 0), data[:4096], 'connection intact')


def test_not_used_on_qcow2_filters_and_detect_zeroes():
    """qcow2, a throttle filter and a raw node with detect-zeroes keep the
    buffer path (no sendfile, no splice) and still read and write right."""
    require_nbd()
    require_tool('qemu-img')
    with Daemon() as d:
        raw = make_image(d.path('a.raw'), 8 * MiB)
        write_at(raw, 0, b'\x61' * (2 * MiB))
        qc = d.path('b.qcow2')
        run(['qemu-img', 'convert', '-O', 'qcow2', raw, qc])
        d.start()
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg',
                                 'limits': {'iops-total': 100000}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'qc',
                                   'file': {'driver': 'file', 'filename': qc}})
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': raw}})
        q.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'th',
                                   'throttle-group': 'tg', 'file': 'r'})
        dz = make_image(d.path('c.raw'), 8 * MiB)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'dz', 'detect-zeroes': 'on',
                                   'file': {'driver': 'file', 'filename': dz,
                                            'detect-zeroes': 'on'}})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        for node in ('qc', 'th', 'dz'):
            q.execute('block-export-add', {'type': 'nbd', 'id': 'e-' + node, 'node-name': node,
                                           'name': node, 'writable': True})
        with syscall_counts(d) as counts:
            for node in ('qc', 'th'):
                for structured in (False, True):
                    with nbd_connection(d.uri(node), structured=structured) as h:
                        assert_eq(h.pread(2 * MiB, 0), b'\x61' * (2 * MiB), node)
                        assert_eq(h.pread(MiB, 4 * MiB), bytes(MiB), node)
            with nbd_connection(d.uri('dz')) as h:
                h.pwrite(b'\x62' * MiB, 0)
                h.pwrite(bytes(MiB), MiB)
                h.flush()
        assert_eq(counts, {}, 'zero-copy calls on the buffered chains')
        d.stop()
        qemu_io(dz, 'read -P 0x62 0 1M', 'read -P 0 1M 1M')


def test_not_used_over_tls():
    """A TLS connection keeps its buffers: no sendfile, data still right."""
    skip_if_reference('counts blockd system calls')
    try:
        from tls_env import qemu_client_x509, qemu_io_tls, image_opts, start_tls_daemon
    except ImportError as e:
        raise Skip('tls helpers: %s' % e)
    require_tool('certtool', 'qemu-io')
    with start_tls_daemon() as d:
        cli = qemu_client_x509(d.pki.client)
        with syscall_counts(d) as counts:
            qemu_io_tls(cli, image_opts(d), 'write -P 0x5a 0 1M')
            qemu_io_tls(cli, image_opts(d), 'read -P 0x5a 0 1M', 'read -P 0 1M 1M',
                        readonly=True)
        assert_eq(counts, {}, 'zero-copy calls on TLS')


def test_dirty_bitmap_records_writes():
    """A bitmap on the raw node records NBD writes of every size, as on the
    buffered path (query-block's dirty count)."""
    require_nbd()
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 16 * MiB)
        d.args = ['--blockdev', 'driver=file,node-name=file0,filename=%s' % img,
                  '--blockdev', 'driver=raw,node-name=fmt0,file=file0',
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=exp0,node-name=fmt0,name=disk,writable=on'] + d.args
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        q.execute('block-dirty-bitmap-add', {'node': 'fmt0', 'name': 'b0', 'granularity': 65536})
        q.execute('block-dirty-bitmap-add', {'node': 'file0', 'name': 'b1', 'granularity': 65536})
        with nbd_connection(d.uri()) as h:
            h.pwrite(b'\x71' * (2 * MiB), 4 * MiB)
            h.pwrite(b'\x72' * 4096, 10 * MiB)

        def dirty(node, name):
            for dev in q.execute('query-named-block-nodes'):
                if dev['node-name'] == node:
                    for b in dev.get('dirty-bitmaps', []):
                        if b['name'] == name:
                            return b['count']
            raise AssertionError('bitmap %s/%s not found' % (node, name))
        assert_eq(dirty('fmt0', 'b0'), 2 * MiB + 65536, 'raw node bitmap')
        assert_eq(dirty('file0', 'b1'), 2 * MiB + 65536, 'file node bitmap')


def test_read_only_and_out_of_range():
    """A read-only export refuses writes; reads and writes beyond the end
    fail with the buffered path's errors, and the connection goes on."""
    nbd = require_nbd()
    import errno
    with Daemon(qmp=False) as scratch:
        data = _pattern_image(scratch.path('a.raw'), 4 * MiB)
        with contextlib.closing(start_exporting(scratch.path('a.raw'), writable=False)) as d:
            with nbd_connection(d.uri()) as h:
                h.set_strict_mode(0)
                assert_eq(nbd_errno(h.pwrite, b'x' * MiB, 0), errno.EPERM, 'write read-only')
                assert_eq(nbd_errno(h.pread, 2 * MiB, 3 * MiB), errno.EINVAL, 'read past the end')
                assert_eq(nbd_errno(h.pread, MiB, 4 * MiB), errno.EINVAL, 'read at the end')
                assert_eq(h.pread(MiB, 3 * MiB), data[3 * MiB:], 'connection intact')
        with contextlib.closing(start_exporting(scratch.path('a.raw'))) as d:
            with nbd_connection(d.uri(), structured=False) as h:
                h.set_strict_mode(0)
                assert_eq(nbd_errno(h.pwrite, b'x' * MiB, 3 * MiB + 4096), errno.ENOSPC,
                          'write past the end')
                assert_eq(h.pread(MiB, 3 * MiB), data[3 * MiB:], 'connection intact')
    del nbd


def test_fuse_writes_raw_on_file():
    """1 MiB, 4 KiB and unaligned O_DIRECT writes through a FUSE export of
    raw-on-file, checked on the image with qemu-io and qemu-img compare."""
    require_fuse()
    require_tool('qemu-io', 'qemu-img')
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 16 * MiB)
        ref = make_image(d.path('ref.raw'), 16 * MiB)
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': img}})
        with fuse_export(q, 'r', d.path('mnt'), writable=True) as mnt:
            import mmap
            buf = mmap.mmap(-1, 2 * MiB)
            with fd_open(mnt, os.O_WRONLY | os.O_DIRECT) as fd:
                for off, n, byte in [(0, 2 * MiB, 0x81), (4 * MiB, 4096, 0x82),
                                     (6 * MiB, MiB, 0x83)]:
                    buf[:n] = bytes([byte]) * n
                    assert_eq(os.pwrite(fd, memoryview(buf)[:n], off), n)
                    write_at(ref, off, bytes([byte]) * n)
            with fd_open(mnt, os.O_WRONLY) as fd:
                assert_eq(os.pwrite(fd, b'\x84' * 100001, 9 * MiB + 3), 100001)
                write_at(ref, 9 * MiB + 3, b'\x84' * 100001)
        qemu_io(img, 'read -P 0x81 0 2M', 'read -P 0x82 4M 4k', 'read -P 0x83 6M 1M')
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', img, ref])


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
