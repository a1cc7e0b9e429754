#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""NBD robustness with libnbd and raw sockets: out-of-range and read-only
errors leave the connection usable; garbage, bad magic and disconnects
mid-request leave the daemon and every other client serving; many requests
in flight and many connections in parallel (fio's nbd engine, libnbd)."""

import errno
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (proc_status_kib, Daemon, Skip, assert_eq, daemon_sanitized, fio, fio_has_nbd,  # noqa: E402
                         is_reference, main,
                         make_image, qemu_io, require_nbd, require_tool, start_exporting,
                         tests_of, wait_for)

MiB = 1 << 20
NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3


def _recvall(s, n):
    buf = b''
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError('connection closed after %d of %d bytes' % (len(buf), n))
        buf += chunk
    return buf


def _raw_connect(d):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(d.nbd_sock)
    return s


def _raw_handshake(d, name=b'disk'):
    """Fixed newstyle + NBD_OPT_EXPORT_NAME with NO_ZEROES; simple replies."""
    s = _raw_connect(d)
    magic, opt, gflags = struct.unpack('>QQH', _recvall(s, 18))
    assert_eq((magic, opt), (NBDMAGIC, IHAVEOPT), 'server greeting magic')
    s.sendall(struct.pack('>I', 3))  # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(struct.pack('>QII', IHAVEOPT, 1, len(name)) + name)
    size, tflags = struct.unpack('>QH', _recvall(s, 10))
    return s, size, tflags


def _raw_request(s, cmd, handle, offset, length, payload=b'', flags=0):
    s.sendall(struct.pack('>IHHQQI', REQ_MAGIC, flags, cmd, handle, offset, length) + payload)


def _raw_reply(s, handle, length=0):
    magic, err, h = struct.unpack('>IIQ', _recvall(s, 16))
    assert_eq(magic, SIMPLE_REPLY_MAGIC, 'reply magic')
    assert_eq(h, handle, 'reply handle')
    data = _recvall(s, length) if err == 0 and length else b''
    return err, data


def _closed_by_server(s, timeout=10):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def _served(d, nbd, pattern=None):
    """A fresh libnbd client can connect and read."""
    d.assert_alive()
    h = nbd.NBD()
    h.connect_uri(d.uri())
    data = h.pread(4096, 0)
    if pattern is not None:
        assert_eq(data, bytes([pattern]) * 4096, 'fresh client reads the data')
    h.shutdown()


def _export(writable=True, pattern=0x3d, size=8 * MiB):
    scratch = Daemon(qmp=False)
    img = make_image(scratch.path('a.raw'), size, pattern=pattern)
    d = start_exporting(img, writable=writable)
    d._scratch = scratch
    orig = d.cleanup

    def cleanup():
        orig()
        scratch.cleanup()
    d.cleanup = cleanup
    return d


def _nbd_error(fn):
    nbd = sys.modules['nbd']
    try:
        fn()
    except nbd.Error as e:
        # the binding reports errno as its symbolic name
        return getattr(errno, e.errno, e.errno) if isinstance(e.errno, str) else e.errno
    return None


def test_read_out_of_range():
    nbd = require_nbd()
    with _export() as d:
        h = nbd.NBD()
        h.set_strict_mode(0)
        h.connect_uri(d.uri())
        size = h.get_size()
        assert_eq(_nbd_error(lambda: h.pread(4096, size - 2048)), errno.EINVAL, 'read crossing end')
        assert_eq(_nbd_error(lambda: h.pread(512, 1 << 50)), errno.EINVAL, 'read far beyond end')
        assert_eq(h.pread(4096, size - 4096), b'\x3d' * 4096, 'same connection still reads')


def test_write_out_of_range():
    nbd = require_nbd()
    with _export() as d:
        h = nbd.NBD()
        h.set_strict_mode(0)
        h.connect_uri(d.uri())
        size = h.get_size()
        for what, fn in (('write', lambda: h.pwrite(b'x' * 4096, size - 2048)),
                         ('write-zeroes', lambda: h.zero(4096, size)),
                         ('trim', lambda: h.trim(4096, size))):
            err = _nbd_error(fn)
            if err not in (errno.EINVAL, errno.ENOSPC):
                raise AssertionError('%s beyond end: expected EINVAL or ENOSPC, got %r' % (what, err))
        h.pwrite(b'\x44' * 4096, 0)
        assert_eq(h.pread(4096, 0), b'\x44' * 4096, 'same connection still writes and reads')


def test_write_to_read_only_export():
    """The NBD spec says EPERM; qemu-storage-daemon 7.2 answers EINVAL."""
    nbd = require_nbd()
    with _export(writable=False) as d:
        h = nbd.NBD()
        h.set_strict_mode(0)
        h.connect_uri(d.uri())
        assert_eq(h.is_read_only(), True, 'read-only flag')
        expected = (errno.EPERM, errno.EINVAL) if is_reference() else (errno.EPERM,)
        for what, fn in (('write', lambda: h.pwrite(b'x' * 512, 0)),
                         ('write-zeroes', lambda: h.zero(512, 0)),
                         ('trim', lambda: h.trim(512, 0))):
            err = _nbd_error(fn)
            if err not in expected:
                raise AssertionError('%s on read-only export: expected %s, got %s'
                                     % (what, '/'.join(errno.errorcode[e] for e in expected),
                                        errno.errorcode.get(err, err)))
        assert_eq(h.pread(512, 0), b'\x3d' * 512, 'connection still usable, data unchanged')


def test_garbage_instead_of_client_flags():
    nbd = require_nbd()
    with _export() as d:
        h = nbd.NBD()
        h.connect_uri(d.uri())
        s = _raw_connect(d)
        _recvall(s, 18)
        s.sendall(os.urandom(64) + b'\xff' * 64)
        assert_eq(_closed_by_server(s), True, 'server drops the garbage client')
        s.close()
        assert_eq(h.pread(4096, 0), b'\x3d' * 4096, 'other client unaffected')
        _served(d, nbd, 0x3d)


def test_bad_option_magic():
    nbd = require_nbd()
    with _export() as d:
        s = _raw_connect(d)
        _recvall(s, 18)
        s.sendall(struct.pack('>I', 1))
        s.sendall(struct.pack('>QII', 0x1122334455667788, 7, 0))
        assert_eq(_closed_by_server(s), True, 'server drops a client with bad option magic')
        s.close()
        _served(d, nbd, 0x3d)


def test_huge_option_length():
    nbd = require_nbd()
    with _export() as d:
        s = _raw_connect(d)
        _recvall(s, 18)
        s.sendall(struct.pack('>I', 1))
        s.sendall(struct.pack('>QII', IHAVEOPT, 7, 0xffffffff) + b'abc')
        s.close()
        _served(d, nbd, 0x3d)


def test_bad_request_magic():
    nbd = require_nbd()
    with _export() as d:
        other = nbd.NBD()
        other.connect_uri(d.uri())
        s, size, _ = _raw_handshake(d)
        assert_eq(size, 8 * MiB, 'size from raw handshake')
        _raw_request(s, CMD_READ, 1, 0, 512)
        err, data = _raw_reply(s, 1, 512)
        assert_eq((err, data), (0, b'\x3d' * 512), 'raw read works')
        s.sendall(struct.pack('>IHHQQI', 0xdeadbeef, 0, CMD_READ, 2, 0, 512))
        assert_eq(_closed_by_server(s), True, 'server drops a client with bad request magic')
        s.close()
        assert_eq(other.pread(512, 0), b'\x3d' * 512, 'other client unaffected')
        _served(d, nbd, 0x3d)


def test_unknown_command_type():
    nbd = require_nbd()
    with _export() as d:
        s, _, _ = _raw_handshake(d)
        _raw_request(s, 0x7f, 5, 0, 0)
        err, _ = _raw_reply(s, 5)
        assert_eq(err, errno.EINVAL, 'unknown command -> EINVAL')
        _raw_request(s, CMD_READ, 6, 4096, 512)
        assert_eq(_raw_reply(s, 6, 512), (0, b'\x3d' * 512), 'connection still usable')
        s.close()
        _served(d, nbd)


def test_disconnect_mid_write_payload():
    nbd = require_nbd()
    with _export() as d:
        other = nbd.NBD()
        other.connect_uri(d.uri())
        s, _, _ = _raw_handshake(d)
        _raw_request(s, CMD_WRITE, 9, 0, MiB, payload=b'\x01' * (MiB // 2))
        s.close()
        assert_eq(other.pread(4096, 2 * MiB), b'\x3d' * 4096, 'other client unaffected')
        _served(d, nbd)


def test_disconnect_mid_header():
    nbd = require_nbd()
    with _export() as d:
        s, _, _ = _raw_handshake(d)
        s.sendall(struct.pack('>IHH', REQ_MAGIC, 0, CMD_READ))
        s.close()
        _served(d, nbd, 0x3d)


def test_disconnect_with_reads_in_flight():
    nbd = require_nbd()
    with _export() as d:
        s, _, _ = _raw_handshake(d)
        for i in range(64):
            _raw_request(s, CMD_READ, i, (i * 65536) % (8 * MiB), 65536)
        s.shutdown(socket.SHUT_RDWR)
        s.close()
        _served(d, nbd, 0x3d)


def test_abrupt_close_during_handshake():
    nbd = require_nbd()
    with _export() as d:
        for n in (0, 4, 10):
            s = _raw_connect(d)
            _recvall(s, 18)
            s.sendall(struct.pack('>I', 1)[:min(n, 4)] + b'\0' * max(0, n - 4))
            s.close()
        _served(d, nbd, 0x3d)


def test_soft_disconnect_command():
    nbd = require_nbd()
    with _export() as d:
        s, _, _ = _raw_handshake(d)
        _raw_request(s, CMD_DISC, 1, 0, 0)
        assert_eq(_closed_by_server(s), True, 'server closes after NBD_CMD_DISC')
        s.close()
        _served(d, nbd)


def test_oversized_read_request():
    """A read longer than the maximum block size gets an error or a drop;
    the daemon goes on."""
    nbd = require_nbd()
    with _export() as d:
        s, _, _ = _raw_handshake(d)
        _raw_request(s, CMD_READ, 3, 0, 0xffffff00)
        s.settimeout(10)
        try:
            magic, err, h = struct.unpack('>IIQ', _recvall(s, 16))
            assert_eq(err != 0, True, 'oversized read fails')
        except (EOFError, ConnectionResetError):
            pass
        s.close()
        _served(d, nbd, 0x3d)


def test_many_requests_in_flight():
    """64 concurrent aio reads and writes on one connection, all complete."""
    nbd = require_nbd()
    with _export(size=16 * MiB) as d:
        h = nbd.NBD()
        h.connect_uri(d.uri())
        bufs = []
        for i in range(64):
            buf = nbd.Buffer.from_bytearray(bytearray([i]) * 65536)
            h.aio_pwrite(buf, i * 65536)
            bufs.append(buf)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        rbufs = []
        for i in range(64):
            b = nbd.Buffer(65536)
            h.aio_pread(b, i * 65536)
            rbufs.append(b)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for i, b in enumerate(rbufs):
            assert_eq(b.to_bytearray() == bytearray([i]) * 65536, True, 'aio read %d' % i)
        h.shutdown()


def test_parallel_connections_libnbd():
    """8 connections in parallel threads, each writing and verifying its region."""
    nbd = require_nbd()
    with _export(size=16 * MiB) as d:
        errors = []

        def worker(i):
            try:
                h = nbd.NBD()
                h.connect_uri(d.uri())
                base = i * 2 * MiB
                for j in range(16):
                    h.pwrite(bytes([i * 16 + j]) * 65536, base + j * 65536)
                h.flush()
                for j in range(16):
                    if h.pread(65536, base + j * 65536) != bytes([i * 16 + j]) * 65536:
                        errors.append('conn %d block %d mismatch' % (i, j))
                h.shutdown()
            except Exception as e:  # reported below
                errors.append('conn %d: %s' % (i, e))
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert_eq(errors, [], 'parallel connection errors')
        d.assert_alive()


def test_parallel_fio_verify():
    """fio's nbd engine: 4 jobs x iodepth 16 random writes with verify."""
    with _export(size=64 * MiB, pattern=None) as d:
        if fio_has_nbd():
            p = fio(['--name=par', '--ioengine=nbd', '--uri=' + d.uri(), '--rw=randwrite',
                     '--bs=4k', '--iodepth=16', '--numjobs=4', '--size=16M', '--offset_increment=16M',
                     '--verify=crc32c', '--do_verify=1', '--group_reporting', '--output-format=terse'],
                    cwd=d.dir, timeout=120)
            assert_eq(p.returncode, 0, 'fio exit status (stderr %r)' % p.stderr[-2000:])
        else:
            require_tool('qemu-io')
            procs = []
            import subprocess
            for i in range(4):
                procs.append(subprocess.Popen(
                    ['qemu-io', '-f', 'raw', '-c', 'aio_write -P %d %dM 8M' % (i + 1, i * 16),
                     '-c', 'aio_flush', d.uri()], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for p in procs:
                assert_eq(p.wait(60), 0, 'parallel qemu-io')
            for i in range(4):
                qemu_io(d.uri(), 'read -P %d %dM 8M' % (i + 1, i * 16))
        d.assert_alive()


def test_many_connections():
    nbd = require_nbd()
    with _export() as d:
        handles = []
        for _ in range(32):
            h = nbd.NBD()
            h.connect_uri(d.uri())
            handles.append(h)
        for h in handles:
            assert_eq(h.pread(512, 4096), b'\x3d' * 512, 'read on each connection')
        for h in handles:
            h.shutdown()
        _served(d, nbd, 0x3d)


def test_block_status_base_allocation():
    nbd = require_nbd()
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('s.raw'), 4 * MiB)
        with open(img, 'r+b') as f:
            f.seek(MiB)
            f.write(b'\x01' * MiB)
        with start_exporting(img, writable=False) as d:
            h = nbd.NBD()
            h.add_meta_context('base:allocation')
            h.connect_uri(d.uri())
            assert_eq(h.can_meta_context('base:allocation'), True, 'base:allocation negotiated')
            seen = []

            def cb(meta, off, entries, err):
                if meta == 'base:allocation':
                    seen.extend(entries)
                return 0
            h.block_status(4 * MiB, 0, cb)
            # entries are (length, flags) pairs
            pairs = list(zip(seen[0::2], seen[1::2]))
            assert_eq(pairs[0], (MiB, 3), 'first extent is a hole reading as zeroes')
            assert_eq(pairs[1][1], 0, 'second extent is data')
            h.shutdown()


def _free_tcp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp_listener():
    nbd = require_nbd()
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 2 * MiB, pattern=0x4b)
        port = _free_tcp_port()
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d' % port,
                  '--export', 'type=nbd,id=e,node-name=f,name=disk'] + d.args
        d.start()
        h = nbd.NBD()
        h.connect_uri('nbd://127.0.0.1:%d/disk' % port)
        assert_eq(h.get_size(), 2 * MiB, 'size over TCP')
        assert_eq(h.pread(4096, MiB), b'\x4b' * 4096, 'read over TCP')
        h.shutdown()


def test_max_connections():
    """max-connections=1: a second client is not served until the first leaves."""
    nbd = require_nbd()
    with Daemon() as d:
        img = make_image(d.path('a.raw'), MiB, pattern=0x4c)
        d.wait = [d.nbd_sock]
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--nbd-server', 'addr.type=unix,addr.path=%s,max-connections=1' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=f,name=disk'] + d.args
        d.start()
        time.sleep(0.5)  # let the daemon see the start-up probe connection close
        first = nbd.NBD()
        first.connect_uri(d.uri())
        s = _raw_connect(d)
        s.settimeout(1.0)
        try:
            got = s.recv(18)
        except socket.timeout:
            got = None
        if got:
            raise AssertionError('second client got a greeting while max-connections=1 was reached')
        if got == b'':
            raise AssertionError('second client was disconnected while max-connections=1 was reached; '
                                 'QEMU keeps it waiting and serves it once the slot is free')
        first.shutdown()
        s.settimeout(10)
        greeting = _recvall(s, 18) if got is None else b''
        assert_eq(struct.unpack('>Q', greeting[:8])[0], NBDMAGIC, 'greeting after the first left')
        s.close()


def _socket_fds(pid):
    n = 0
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            n += os.readlink('/proc/%d/fd/%s' % (pid, fd)).startswith('socket:')
        except OSError:
            pass
    return n


def test_handshake_cap():
    """600 clients that connect and never finish the handshake: the
    daemon takes at most 512 of them at once (the cap on connections in
    the handshake; the others wait in the listen backlog, not greeted),
    and handshake-max-seconds frees the places, so a real client gets in
    after them and is served."""
    if is_reference():
        raise Skip('qemu-storage-daemon 7.2 has no cap on connections in the handshake')
    nbd = require_nbd()
    cap, clients = 512, 600
    with Daemon() as d:
        img = make_image(d.path('a.raw'), MiB, pattern=0x4c)
        d.wait = [d.nbd_sock]
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--nbd-server', 'addr.type=unix,addr.path=%s,handshake-max-seconds=3'
                  % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=f,name=disk'] + d.args
        d.start()
        time.sleep(0.5)  # the start-up probe connection has gone
        before = _socket_fds(d.proc.pid)
        socks = []
        try:
            for _ in range(clients):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect(d.nbd_sock)   # the backlog (SOMAXCONN) takes them all
                socks.append(s)
            wait_for(lambda: _socket_fds(d.proc.pid) - before >= cap,
                     what='the daemon taking %d connections' % cap)
            time.sleep(0.5)  # would it take more?
            held = _socket_fds(d.proc.pid) - before
            assert_eq(held, cap, 'connections the daemon holds in the handshake')
            greeted = 0
            for s in socks:
                try:
                    greeted += len(s.recv(18)) > 0
                except BlockingIOError:
                    pass
            assert_eq(greeted, cap, 'clients greeted while %d wait' % (clients - cap))
            # The idle ones time out after 3 s; the waiting ones and this
            # client are accepted then.
            h = nbd.NBD()
            h.connect_uri(d.uri())
            assert_eq(h.pread(4096, 0), b'\x4c' * 4096, 'read after the cap freed up')
            h.shutdown()
        finally:
            for s in socks:
                s.close()
        _served(d, nbd, 0x4c)


def test_max_connections_reconnect_at_once():
    """max-connections=1: a client connecting right after the previous one
    closed is served (QEMU queues it until the slot is free)."""
    nbd = require_nbd()
    with Daemon() as d:
        img = make_image(d.path('a.raw'), MiB, pattern=0x4d)
        d.wait = [d.nbd_sock]
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--nbd-server', 'addr.type=unix,addr.path=%s,max-connections=1' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=f,name=disk'] + d.args
        d.start()
        for i in range(5):
            h = nbd.NBD()
            h.connect_uri(d.uri())
            assert_eq(h.pread(512, 0), b'\x4d' * 512, 'read on connection %d' % i)
            h.shutdown()


def test_sparse_read_uses_offset_hole():
    """Structured read of an unallocated range answers with OFFSET_HOLE chunks."""
    nbd = require_nbd()
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('s.raw'), 4 * MiB)
        with open(img, 'r+b') as f:
            f.seek(MiB)
            f.write(b'\x07' * MiB)
        with start_exporting(img, writable=False) as d:
            h = nbd.NBD()
            h.connect_uri(d.uri())
            assert_eq(h.get_structured_replies_negotiated(), True, 'structured replies')
            kinds = []

            def chunk(subbuf, offset, status, err):
                kinds.append((status, offset, len(subbuf)))
                return 0
            buf = h.pread_structured(4 * MiB, 0, chunk)
            assert_eq(buf[MiB:2 * MiB] == b'\x07' * MiB, True, 'data range content')
            assert_eq(buf[:MiB] == b'\0' * MiB and buf[2 * MiB:] == b'\0' * (2 * MiB), True,
                      'hole ranges read as zeroes')
            holes = [k for k in kinds if k[0] == nbd.READ_HOLE]
            assert_eq(len(holes) > 0, True, 'at least one OFFSET_HOLE chunk (chunks: %r)' % kinds)
            h.shutdown()


def test_small_reads_of_zeroes_use_offset_hole():
    """A 4k structured read of unallocated qcow2 space is one OFFSET_HOLE
    chunk, as QEMU sends it; data comes as OFFSET_DATA; with the DF flag
    the zeroes come as one OFFSET_DATA chunk."""
    nbd = require_nbd()
    with Daemon(qmp=False) as scratch:
        img = scratch.path('s.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '4M'], check=True)
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 64k 64k', img],
                       check=True, capture_output=True)
        with Daemon() as d:
            d.wait = [d.nbd_sock]
            d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                      '--blockdev', 'driver=qcow2,node-name=q,file=f',
                      '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                      '--export', 'type=nbd,id=e,node-name=q,name=disk'] + d.args
            d.start()
            h = nbd.NBD()
            h.connect_uri(d.uri())
            assert_eq(h.get_structured_replies_negotiated(), True, 'structured replies')

            def read(offset, flags=0):
                kinds = []

                def chunk(subbuf, off, status, err):
                    kinds.append((status, off, len(subbuf)))
                    return 0
                buf = h.pread_structured(4096, offset, chunk, flags=flags)
                return buf, kinds

            buf, kinds = read(1 * MiB)
            assert_eq(buf, b'\0' * 4096, 'unallocated range reads as zeroes')
            assert_eq(kinds, [(nbd.READ_HOLE, 1 * MiB, 4096)], 'chunks of an unallocated 4k read')
            buf, kinds = read(64 * 1024 + 4096)
            assert_eq(buf, b'\x5a' * 4096, 'data')
            assert_eq(kinds, [(nbd.READ_DATA, 64 * 1024 + 4096, 4096)], 'chunks of a data read')
            buf, kinds = read(2 * MiB, nbd.CMD_FLAG_DF)
            assert_eq(buf, b'\0' * 4096, 'unallocated range with DF')
            assert_eq(kinds, [(nbd.READ_DATA, 2 * MiB, 4096)], 'chunks with DF')
            h.shutdown()


# --- memory bounds (issue 20): large requests' buffers are budgeted ---

def _null_export(extra_node=''):
    d = Daemon()
    d.args += ['--blockdev', 'driver=null-co,node-name=n0,size=%d,read-zeroes=on' % (1 << 30),
               '--blockdev', 'driver=throttle,node-name=t0,file=n0,throttle-group=tg'
               if extra_node else 'driver=raw,node-name=t0,file=n0',
               '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
               '--export', 'type=nbd,id=e,node-name=t0,name=disk,writable=on']
    if extra_node:
        d.args = ['--object', extra_node] + d.args
    d.wait = [d.nbd_sock]
    d.start()
    return d


def _bytes_of_client(q, key):
    clients = q.execute('x-query-nbd-clients')
    return sum(c[key] for c in clients)


def _assert_bounded_growth(d, base_kib, what):
    if daemon_sanitized():
        return    # the sanitizer's quarantine holds freed buffers
    grown = (proc_status_kib(d.proc.pid, 'VmHWM') - base_kib) // 1024
    # The connection's budget (128 MiB) and the buffers not counted
    # (4 MiB per worker) with room for the allocator; without the budget
    # the workers hold 8..16 x 32 MiB.
    if grown > 200:
        raise AssertionError('%s: the daemon grew by %d MiB' % (what, grown))


def test_unread_large_reads_bounded():
    """A client that asks for many 32 MiB reads and never reads the
    replies holds at most its connection's budget of buffers; another
    client is served meanwhile."""
    nbd = require_nbd()
    if is_reference():
        raise Skip('qemu-storage-daemon 7.2 has no such bound')
    with _null_export() as d:
        q = d.qmp()
        base = proc_status_kib(d.proc.pid, 'VmRSS')
        s, _, _ = _raw_handshake(d)
        for i in range(24):
            _raw_request(s, CMD_READ, i, i * 32 * MiB, 32 * MiB)
        wait_for(lambda: _bytes_of_client(q, 'bytes-read') >= 3 * 32 * MiB,
                 what='the first large reads')
        time.sleep(1)     # room for more, were they not bounded
        _assert_bounded_growth(d, base, 'unread 32 MiB reads')
        h = nbd.NBD()
        h.connect_uri(d.uri())
        for i in range(100):
            assert_eq(h.pread(4096, i * MiB), bytes(4096), 'the other client reads')
        h.shutdown()
        s.close()
        _served(d, nbd, 0)


def test_flood_of_large_writes_bounded():
    """32 MiB writes sent as fast as the socket takes them to a slow
    (throttled) node: the reader stops reading past the budget, so the
    daemon holds a bounded amount, and every write completes."""
    nbd = require_nbd()
    if is_reference():
        raise Skip('qemu-storage-daemon 7.2 has no such bound')
    with _null_export('throttle-group,id=tg,x-bps-write=268435456') as d:
        q = d.qmp()
        base = proc_status_kib(d.proc.pid, 'VmRSS')
        s, _, _ = _raw_handshake(d)
        payload = b'\x5a' * (32 * MiB)
        n = 20
        sender = threading.Thread(target=lambda: [
            _raw_request(s, CMD_WRITE, i, i * 32 * MiB, 32 * MiB, payload) for i in range(n)])
        sender.start()
        for i in range(n):
            magic, err, h = struct.unpack('>IIQ', _recvall(s, 16))
            assert_eq((magic, err), (SIMPLE_REPLY_MAGIC, 0), 'write reply')
        sender.join()
        assert_eq(_bytes_of_client(q, 'bytes-written'), n * 32 * MiB, 'bytes written')
        _assert_bounded_growth(d, base, 'a flood of 32 MiB writes')
        s.close()
        _served(d, nbd, 0)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
