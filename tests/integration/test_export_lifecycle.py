#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The life of an export around its clients: block-export-del refused in
mode safe while a client is connected, mode hard disconnecting busy
clients at once, BLOCK_EXPORT_DELETED only once the last request is done
and the node is free, QMP answering while a deletion is pending,
nbd-server-stop, quit and SIGTERM with busy clients, and a FUSE export
deleted while a program keeps the file open.  Images written by clients
that were cut off pass qemu-img check and hold every acknowledged write.
Every test runs against qemu-storage-daemon too, or says why not."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, force_unmount, is_mounted, main,  # noqa: E402
                         make_image, qemu_io, require_fuse, require_nbd, require_tool, run,
                         skip_if_reference, tests_of, wait_for)

MiB = 1 << 20
BLOCK = 64 * 1024
# Each writer owns a region of this many blocks.
REGION_BLOCKS = 64


# --- helpers (kept here: the shared module is being reworked) ---

def _daemon(monitors=1):
    d = Daemon(monitors=monitors)
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def _nbd_start(q, d):
    q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})


def _export(q, node, id='e', name='disk', writable=True):
    q.execute('block-export-add', {'type': 'nbd', 'id': id, 'node-name': node,
                                   'name': name, 'writable': writable})


def _qcow2(q, d, node='hd0', size='32M'):
    """A new qcow2 image attached as 'node' (its file node inline)."""
    img = d.path(node + '.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, size])
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': node,
                               'file': {'driver': 'file', 'filename': img}})
    return img


def _slow_node(q, node='slow', seconds=5):
    """A null-co node whose every request takes 'seconds'."""
    q.execute('blockdev-add', {'driver': 'null-co', 'node-name': node, 'size': MiB,
                               'read-zeroes': True, 'latency-ns': int(seconds * 1e9)})


def _deleted_ids(q):
    return [ev['data']['id'] for ev in q.events if ev['event'] == 'BLOCK_EXPORT_DELETED']


class _Writer(threading.Thread):
    """One NBD connection writing its own region block after block, round
    and round, until the connection fails or stop() is called.  'acked'
    counts the writes the server acknowledged."""

    def __init__(self, uri, index):
        super().__init__(daemon=True)
        self.nbd = require_nbd()
        self.h = self.nbd.NBD()
        self.h.connect_uri(uri)
        self.index = index
        self.pattern = 0x40 + index
        self.base = index * REGION_BLOCKS * BLOCK
        self.acked = 0
        self.error = None
        self.stopping = False
        self.cond = threading.Condition()

    def run(self):
        data = bytes([self.pattern]) * BLOCK
        while not self.stopping:
            off = self.base + (self.acked % REGION_BLOCKS) * BLOCK
            try:
                self.h.pwrite(data, off)
            except self.nbd.Error as e:
                with self.cond:
                    self.error = e
                    self.cond.notify_all()
                return
            with self.cond:
                self.acked += 1
                self.cond.notify_all()

    def wait_acked(self, n, timeout=20):
        with self.cond:
            if not self.cond.wait_for(lambda: self.acked >= n or self.error, timeout):
                raise AssertionError('writer %d: %d writes acknowledged in %ss'
                                     % (self.index, self.acked, timeout))
            if self.error:
                raise AssertionError('writer %d failed early: %s' % (self.index, self.error))

    def wait_cut_off(self, timeout=20):
        """The connection was closed under the writer: its write failed,
        and the handle stays unusable."""
        self.join(timeout)
        assert_eq(self.is_alive(), False, 'writer %d still writing' % self.index)
        if self.error is None:
            raise AssertionError('writer %d never saw its connection closed' % self.index)
        try:
            self.h.pread(512, self.base)
        except self.nbd.Error:
            pass
        else:
            raise AssertionError('writer %d: a read still works after the disconnect'
                                 % self.index)

    def verify(self, img, fmt='qcow2'):
        """Every block this writer had acknowledged holds its pattern."""
        blocks = min(self.acked, REGION_BLOCKS)
        if blocks:
            qemu_io(img, 'read -P %d %d %d' % (self.pattern, self.base, blocks * BLOCK),
                    fmt=fmt)


def _busy_writers(d, count=3, name='disk'):
    writers = [_Writer(d.uri(name), i) for i in range(count)]
    for w in writers:
        w.start()
    for w in writers:
        w.wait_acked(4)
    return writers


def _check_image(img, writers):
    run(['qemu-img', 'check', '-q', img])
    for w in writers:
        w.verify(img)


def _pending_hard_delete(d, q, nbd):
    """A client with three 5-second reads running on export 'e' of node
    'slow', then block-export-del mode=hard; returns the client handle and
    the time the deletion was asked for."""
    _slow_node(q)
    _nbd_start(q, d)
    _export(q, 'slow', writable=False)
    h = nbd.NBD()
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
    h.connect_uri(d.uri())
    for i in range(3):
        h.aio_pread(nbd.Buffer(4096), i * 4096)
    # Sent after the slow reads, answered at once (out of range): when its
    # error is here, the server has read the slow ones and runs them.
    try:
        h.pread(512, 2 * MiB)
    except nbd.Error:
        pass
    else:
        raise AssertionError('read past the end succeeded')
    assert_eq(h.aio_in_flight(), 3, 'slow reads in flight')
    start = time.monotonic()
    assert_eq(q.execute('block-export-del', {'id': 'e', 'mode': 'hard'}), {}, 'hard delete')
    return h, start


def _drain_client(h, nbd, timeout=30):
    """Let the client see its in-flight reads end (failed: the server
    disconnected it)."""
    end = time.monotonic() + timeout
    while h.aio_in_flight() > 0 and time.monotonic() < end:
        try:
            h.poll(1)
        except nbd.Error:
            break


# --- block-export-del, mode safe ---

def test_safe_del_refused_while_client_connected():
    """Without 'mode' (= safe) and with mode=safe, a connected client makes
    block-export-del fail with QEMU's text (its hint, "Use mode='hard' to
    force client disconnect", is not part of a QMP error); the client is
    still served.  Once the client has left, the same command deletes."""
    nbd = require_nbd()
    with _daemon() as d:
        q = d.qmp()
        img = make_image(d.path('a.raw'), MiB, pattern=0x5a)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': img}})
        _nbd_start(q, d)
        _export(q, 'r')
        h = nbd.NBD()
        h.connect_uri(d.uri())
        for args in ({'id': 'e'}, {'id': 'e', 'mode': 'safe'}):
            e = q.error('block-export-del', args)
            assert_eq(e, {'class': 'GenericError', 'desc': "export 'e' still in use"},
                      'block-export-del %r' % args)
        assert_eq(h.pread(4096, 0), b'\x5a' * 4096, 'client served after the refusals')
        assert_eq([(x['id'], x['shutting-down']) for x in q.execute('query-block-exports')],
                  [('e', False)], 'export intact')
        assert_eq(_deleted_ids(q), [], 'no BLOCK_EXPORT_DELETED after a refusal')
        h.shutdown()
        assert_eq(q.execute('block-export-del', {'id': 'e'}), {},
                  'safe delete once the client left')
        assert_eq(q.wait_event('BLOCK_EXPORT_DELETED')['data'], {'id': 'e'}, 'event')
        assert_eq(q.execute('query-block-exports'), [], 'no export left')
        assert_eq(q.execute('blockdev-del', {'node-name': 'r'}), {}, 'node free')


def test_safe_del_refused_while_client_busy():
    """A client in the middle of writes keeps the export in use; it keeps
    writing through the refusals."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with _daemon() as d:
        q = d.qmp()
        img = _qcow2(q, d)
        _nbd_start(q, d)
        _export(q, 'hd0')
        writers = _busy_writers(d, count=2)
        for _ in range(3):
            e = q.error('block-export-del', {'id': 'e'})
            assert_eq(e['desc'], "export 'e' still in use", 'safe delete of a busy export')
        before = [w.acked for w in writers]
        for w, n in zip(writers, before):
            w.wait_acked(n + 2)
        for w in writers:
            w.stopping = True
            w.join(20)
            w.h.shutdown()
        q.execute('block-export-del', {'id': 'e'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        q.execute('blockdev-del', {'node-name': 'hd0'})
        _check_image(img, writers)


def _hang_up_client(path, name='disk'):
    """A client that negotiates (NBD_OPT_GO) over a raw socket and, once
    in transmission, hangs up without NBD_CMD_DISC -- as a client process
    that dies does.  Returns when the socket is closed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)

    def recv_exactly(n):
        data = b''
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise AssertionError('server closed the connection in the handshake')
            data += chunk
        return data
    recv_exactly(18)                                   # NBDMAGIC, IHAVEOPT, flags
    s.sendall(struct.pack('>I', 3))                    # FIXED_NEWSTYLE | NO_ZEROES
    data = struct.pack('>I', len(name)) + name.encode() + struct.pack('>H', 0)
    s.sendall(b'IHAVEOPT' + struct.pack('>II', 7, len(data)) + data)   # NBD_OPT_GO
    while True:
        _, _, rep, length = struct.unpack('>QIII', recv_exactly(20))
        recv_exactly(length)
        if rep == 1:                                   # NBD_REP_ACK: in transmission
            break
        if rep & 0x80000000:
            raise AssertionError('NBD_OPT_GO refused (0x%x)' % rep)
    s.close()


def test_safe_del_right_after_client_exit():
    """A client that has just hung up is no user: block-export-del in mode
    safe succeeds at once, even before the server has read the end of the
    connection (under CPU load the command often comes first)."""
    require_tool('qemu-io', 'nbdinfo')
    with _daemon() as d:
        q = d.qmp()
        img = make_image(d.path('a.raw'), MiB, pattern=0x33)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': img}})
        _nbd_start(q, d)
        for i in range(24):
            _export(q, 'r')
            if i == 20:
                qemu_io(d.uri(), 'read -P 0x33 0 64k')
            elif i == 22:
                run(['nbdinfo', '--size', d.uri()])
            else:
                _hang_up_client(d.nbd_sock)
            assert_eq(q.execute('block-export-del', {'id': 'e'}), {}, 'delete %d' % i)
            assert_eq(q.wait_event('BLOCK_EXPORT_DELETED')['data'], {'id': 'e'}, 'event %d' % i)


# --- block-export-del, mode hard ---

def test_hard_del_with_busy_clients():
    """mode=hard with three clients writing: the command returns, the
    event follows, each client sees its connection closed, the node is
    free, and the image is consistent with every acknowledged write."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with _daemon() as d:
        q = d.qmp()
        img = _qcow2(q, d)
        _nbd_start(q, d)
        _export(q, 'hd0')
        writers = _busy_writers(d)
        assert_eq(q.execute('block-export-del', {'id': 'e', 'mode': 'hard'}), {}, 'hard delete')
        assert_eq(q.wait_event('BLOCK_EXPORT_DELETED')['data'], {'id': 'e'}, 'event')
        for w in writers:
            w.wait_cut_off()
        assert_eq(q.execute('query-block-exports'), [], 'no export left')
        assert_eq(q.execute('blockdev-del', {'node-name': 'hd0'}), {}, 'node free after the event')
        d.stop()
        _check_image(img, writers)


def test_deletion_pending_until_last_request_done():
    """mode=hard while a client's reads are still running: the command
    returns at once; until the reads are done the export stays listed as
    shutting down, a second delete is refused with QEMU's text and the
    node is in use; BLOCK_EXPORT_DELETED comes after, and then the node
    is free."""
    skip_if_reference("qemu-storage-daemon 7.2 drops a client's export reference as soon "
                      "as it disconnects it and deletes the export before serving QMP "
                      "again, so a pending deletion is never visible there")
    nbd = require_nbd()
    with _daemon() as d:
        q = d.qmp()
        h, start = _pending_hard_delete(d, q, nbd)
        assert_eq(q.execute('query-block-exports'),
                  [{'id': 'e', 'type': 'nbd', 'node-name': 'slow', 'shutting-down': True}],
                  'listed while shutting down')
        for args in ({'id': 'e'}, {'id': 'e', 'mode': 'hard'}):
            e = q.error('block-export-del', args)
            assert_eq(e['desc'], "Export 'e' is already shutting down", 'second delete %r' % args)
        e = q.error('blockdev-del', {'node-name': 'slow'})
        assert_in('in use', e['desc'], 'node of a pending export')
        e = q.error('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'slow'})
        assert_eq(e['desc'], "Block export id 'e' is already in use", 'id still taken')
        assert_eq(_deleted_ids(q), [], 'event before the reads are done')
        # All of the above happened while the 5-second reads ran.
        assert time.monotonic() - start < 4, 'QMP was held up by the deletion'
        ev = q.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
        assert_eq(ev['data'], {'id': 'e'}, 'event data')
        assert_eq(q.execute('query-block-exports'), [], 'gone after the event')
        assert_eq(q.execute('blockdev-del', {'node-name': 'slow'}), {}, 'node free after the event')
        _drain_client(h, nbd)


def test_qmp_responsive_while_deletion_pending():
    """While a deletion waits for running requests, every monitor answers
    at once, and each gets the event when the export is gone."""
    skip_if_reference("qemu-storage-daemon 7.2 never leaves a deletion pending (see "
                      "deletion_pending_until_last_request_done)")
    nbd = require_nbd()
    with _daemon(monitors=2) as d:
        q = d.qmp()
        q2 = d.qmp(monitor=1)
        h, start = _pending_hard_delete(d, q, nbd)
        for _ in range(5):
            for m in (q, q2):
                m.execute('query-named-block-nodes')
                m.execute('query-block-exports')
                m.execute('query-version')
        took = time.monotonic() - start
        assert took < 4, 'queries took %.1fs while the deletion was pending' % took
        assert_eq(_deleted_ids(q) + _deleted_ids(q2), [], 'deleted before the reads ended')
        for m in (q, q2):
            assert_eq(m.wait_event('BLOCK_EXPORT_DELETED', timeout=30)['data'], {'id': 'e'},
                      'event on every monitor')
        _drain_client(h, nbd)
        q.execute('blockdev-del', {'node-name': 'slow'})   # no 5-second flush at exit


# --- nbd-server-stop, quit, SIGTERM ---

def test_nbd_server_stop_with_busy_clients():
    """nbd-server-stop with clients writing to two exports: when it
    returns (as with QEMU) both exports are deleted, their events were
    sent, and the nodes are free; the clients were disconnected."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with _daemon() as d:
        q = d.qmp()
        imgs = [_qcow2(q, d, 'hd%d' % i) for i in range(2)]
        _nbd_start(q, d)
        for i in range(2):
            _export(q, 'hd%d' % i, id='e%d' % i, name='disk%d' % i)
        writers = [_busy_writers(d, count=2, name='disk%d' % i) for i in range(2)]
        assert_eq(q.execute('nbd-server-stop'), {}, 'nbd-server-stop')
        assert_eq(sorted(_deleted_ids(q)), ['e0', 'e1'], 'events before the reply')
        assert_eq(q.execute('query-block-exports'), [], 'exports after nbd-server-stop')
        for i in range(2):
            q.execute('blockdev-del', {'node-name': 'hd%d' % i})
        for ws in writers:
            for w in ws:
                w.wait_cut_off()
        # The server starts again and serves a new export.
        _nbd_start(q, d)
        img = make_image(d.path('b.raw'), MiB, pattern=0x71)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': img}})
        _export(q, 'r', id='e0', name='disk0')
        qemu_io(d.uri('disk0'), 'read -P 0x71 0 64k')
        d.stop()
        for img, ws in zip(imgs, writers):
            _check_image(img, ws)


def _exit_with_busy_clients(how):
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with _daemon() as d:
        q = d.qmp()
        img = _qcow2(q, d)
        _nbd_start(q, d)
        _export(q, 'hd0')
        writers = _busy_writers(d)
        if how == 'quit':
            assert_eq(q.execute('quit'), {}, 'quit')
        else:
            d.signal(signal.SIGTERM)
        assert_eq(d.wait_exit(timeout=20), 0, 'exit status after %s' % how)
        for w in writers:
            w.wait_cut_off()
        _check_image(img, writers)


def test_quit_with_busy_clients():
    """quit while clients write: the daemon exits cleanly, the clients are
    disconnected, the image is consistent and holds every acknowledged
    write."""
    _exit_with_busy_clients('quit')


def test_sigterm_with_busy_clients():
    _exit_with_busy_clients('sigterm')


def test_sigterm_during_pending_deletion():
    """SIGTERM while a hard deletion waits for running requests: the
    daemon still exits cleanly."""
    skip_if_reference("qemu-storage-daemon 7.2 never leaves a deletion pending (see "
                      "deletion_pending_until_last_request_done)")
    nbd = require_nbd()
    with _daemon() as d:
        q = d.qmp()
        h, start = _pending_hard_delete(d, q, nbd)
        d.signal(signal.SIGTERM)
        assert_eq(d.wait_exit(timeout=20), 0, 'exit status')
        _drain_client(h, nbd)


# --- FUSE ---


# A program that holds the mounted file open: it writes its blocks (all of
# them, or until told to stop on stdin when 'busy'), reports how many were
# acknowledged, waits for a line on stdin, then tries one more write and
# read and reports how they failed.
HOLDER = r'''
import errno, json, os, select, sys
path, pattern, blocks, busy = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1'
fd = os.open(path, os.O_RDWR)
data = bytes([pattern]) * 65536
acked, err = 0, None
print('open', flush=True)
while True:
    if busy and select.select([sys.stdin], [], [], 0)[0]:
        break
    if not busy and acked == blocks:
        break
    try:
        os.pwrite(fd, data, (acked % blocks) * 65536)
    except OSError as e:
        err = e.errno
        break
    acked += 1
print(json.dumps({'acked': acked, 'errno': err}), flush=True)
sys.stdin.readline()
after = {}
for what, fn in (('write', lambda: os.pwrite(fd, data, 0)),
                 ('read', lambda: os.pread(fd, 4096, 0))):
    try:
        fn()
        after[what] = 0
    except OSError as e:
        after[what] = errno.errorcode.get(e.errno, e.errno)
print(json.dumps(after), flush=True)
try:
    os.close(fd)
except OSError:
    pass
'''


class _Holder:
    def __init__(self, path, pattern, blocks, busy):
        self.p = subprocess.Popen([sys.executable, '-c', HOLDER, path, str(pattern), str(blocks),
                                   '1' if busy else '0'], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert_eq(self.p.stdout.readline().strip(), 'open', 'holder opened the file')

    def tell(self):
        self.p.stdin.write('go\n')
        self.p.stdin.flush()

    def report(self):
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError('holder exited early (%s)' % self.p.poll())
        return json.loads(line)

    def finish(self, timeout=20):
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError('the program holding the file hangs')
        assert_eq(self.p.returncode, 0, 'holder exit status')


def _fuse_setup(d, q, writable=True):
    img = _qcow2(q, d, size='8M')
    mnt = d.path('mnt')
    open(mnt, 'w').close()
    q.execute('block-export-add', {'type': 'fuse', 'id': 'f', 'node-name': 'hd0',
                                   'mountpoint': mnt, 'writable': writable})
    wait_for(lambda: is_mounted(mnt), what='FUSE mount')
    return img, mnt


def test_fuse_del_while_program_keeps_file_open():
    """A program keeps the mounted file open after writing: an open file
    is no user (as QEMU), so block-export-del in mode safe succeeds; the
    event arrives, the mount is gone, the program's next write fails
    without hanging, and the image holds its writes."""
    require_fuse()
    require_tool('qemu-img', 'qemu-io')
    with _daemon() as d:
        q = d.qmp()
        img, mnt = _fuse_setup(d, q)
        try:
            holder = _Holder(mnt, 0x6d, 16, busy=False)
            assert_eq(holder.report(), {'acked': 16, 'errno': None}, 'writes through the mount')
            assert_eq(q.execute('block-export-del', {'id': 'f'}), {}, 'safe delete, file open')
            assert_eq(q.wait_event('BLOCK_EXPORT_DELETED')['data'], {'id': 'f'}, 'event')
            wait_for(lambda: not is_mounted(mnt), what='unmount')
            holder.tell()
            after = holder.report()
            assert after['write'] != 0, 'write through a deleted export succeeded: %r' % after
            holder.finish()
            assert_eq(os.path.getsize(mnt), 0, 'the mountpoint is the plain file again')
            q.execute('blockdev-del', {'node-name': 'hd0'})
            d.stop()
            run(['qemu-img', 'check', '-q', img])
            qemu_io(img, 'read -P 0x6d 0 1M', fmt='qcow2')
        finally:
            force_unmount(mnt)


def test_fuse_hard_del_while_program_writes():
    """A program writing through the mount when block-export-del
    mode=hard comes: it returns, the event arrives, the program's writes
    fail from then on (no hang), and the image is consistent with every
    write it got acknowledged."""
    require_fuse()
    require_tool('qemu-img', 'qemu-io')
    with _daemon() as d:
        q = d.qmp()
        img, mnt = _fuse_setup(d, q)
        try:
            holder = _Holder(mnt, 0x2e, 64, busy=True)
            assert_eq(q.execute('block-export-del', {'id': 'f', 'mode': 'hard'}), {},
                      'hard delete while writing')
            assert_eq(q.wait_event('BLOCK_EXPORT_DELETED')['data'], {'id': 'f'}, 'event')
            wait_for(lambda: not is_mounted(mnt), what='unmount')
            holder.tell()
            first = holder.report()
            after = holder.report()
            assert after['write'] != 0, 'write after the deletion succeeded: %r' % after
            holder.finish()
            q.execute('blockdev-del', {'node-name': 'hd0'})
            d.stop()
            run(['qemu-img', 'check', '-q', img])
            blocks = min(first['acked'], 64)
            if blocks:
                qemu_io(img, 'read -P 0x2e 0 %d' % (blocks * BLOCK), fmt='qcow2')
        finally:
            force_unmount(mnt)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
