#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""query-blockstats, block-set-write-threshold and BLOCK_WRITE_THRESHOLD.

Device counters are kept per export (one operation per NBD command or
FUSE request) and listed without query-nodes, the export id as "qdev";
qemu-storage-daemon 7.2 counts nothing for its exports and lists none
there, so those cases check blockd's numbers and, against the reference,
that it lists nothing.  With query-nodes the shape and the node-level
numbers (wr_highest_offset) are QEMU's and are checked against both.  The
write-threshold cases follow QEMU's iotests 191 and write-threshold: the
event fires once, with the amount past the threshold, and disarms it."""

import ctypes
import mmap
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, fio, is_reference, main, make_image, nbd_errno,  # noqa: E402
                         nbd_export_args, require_fio_nbd, require_nbd, skip_if_reference,
                         start_daemon, tests_of,
                         wait_for)

KiB = 1024
MiB = 1024 * KiB

# BlockDeviceStats members qemu-storage-daemon 7.2 always sends.
STATS_KEYS = {
    'rd_bytes', 'wr_bytes', 'unmap_bytes', 'rd_operations', 'wr_operations',
    'flush_operations', 'unmap_operations', 'rd_total_time_ns', 'wr_total_time_ns',
    'flush_total_time_ns', 'unmap_total_time_ns', 'wr_highest_offset', 'rd_merged',
    'wr_merged', 'unmap_merged', 'failed_rd_operations', 'failed_wr_operations',
    'failed_flush_operations', 'failed_unmap_operations', 'invalid_rd_operations',
    'invalid_wr_operations', 'invalid_flush_operations', 'invalid_unmap_operations',
    'account_invalid', 'account_failed', 'timed_stats'}


def _start(size=MiB, node_opts=''):
    """A daemon exporting a raw image (fmt0 over file0) as 'disk'."""
    from blockd_test import Daemon
    d = Daemon()
    img = make_image(d.path('a.raw'), size)
    d.args = nbd_export_args(d, img, node_opts=node_opts) + d.args
    d.wait = [d.nbd_sock]
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def _connect(d, strict=True):
    nbd = require_nbd()
    h = nbd.NBD()
    if not strict:
        h.set_strict_mode(0)     # let the server judge bad requests
    h.connect_uri(d.uri())
    return h


def _export_stats(q, qdev='exp0'):
    for s in q.execute('query-blockstats'):
        if s.get('qdev') == qdev:
            return s
    raise AssertionError('no BlockStats for export %s' % qdev)


def _wait_counts(q, want, qdev='exp0'):
    """The export's stats once they hold every key/value of `want`: an
    export counts a request as it finishes, right after its reply."""
    got = {}

    def ok():
        got.update(_export_stats(q, qdev)['stats'])
        return all(got.get(k) == v for k, v in want.items())
    try:
        wait_for(ok, timeout=5.0, what='counters %r' % want)
    except AssertionError:
        raise AssertionError('stats %r, wanted %r' % (got, want))
    return got


def test_query_nodes_shape_and_highest_offset():
    """query-nodes: every named node, QEMU's members, device counters 0,
    wr_highest_offset the end of the furthest write; the file child under
    'parent'.  Identical on both daemons."""
    with _start(node_opts=',discard=unmap') as d:
        q = d.qmp()
        h = _connect(d)
        h.pwrite(b'\x01' * (64 * KiB), 0)
        h.zero(4 * KiB, 128 * KiB)
        h.pread(4 * KiB, 0)
        h.trim(8 * KiB, 32 * KiB)
        h.shutdown()
        stats = q.execute('query-blockstats', {'query-nodes': True})
        byname = {s['node-name']: s for s in stats}
        assert_eq(sorted(byname), ['file0', 'fmt0'], 'nodes')
        for name, s in byname.items():
            assert_eq(STATS_KEYS - set(s['stats']), set(), 'members of %s' % name)
            assert_eq(s['stats']['wr_highest_offset'], 132 * KiB, '%s wr_highest_offset' % name)
            for k in ('rd_bytes', 'wr_bytes', 'wr_operations', 'rd_operations'):
                assert_eq(s['stats'][k], 0, '%s %s at node level' % (name, k))
            assert_eq('backing' in s, False, 'no backing at node level')
        assert_eq(byname['fmt0']['parent']['node-name'], 'file0', 'parent of fmt0')
        # The file driver's own counters (QEMU's BlockStatsSpecificFile).
        assert_eq(byname['file0'].get('driver-specific'),
                  {'driver': 'file', 'discard-nb-ok': 1, 'discard-nb-failed': 0,
                   'discard-bytes-ok': 8 * KiB}, 'file0 driver-specific')
        assert_eq('driver-specific' in byname['fmt0'], False, 'raw has none')
        assert_eq(q.error('query-blockstats', {'query-nodes': 'x'})['desc'],
                  "Invalid parameter type for 'query-nodes', expected: boolean", 'bad arg')


def test_export_counters_nbd():
    """Known nbdsh requests give exact bytes and operations on the export."""
    with _start() as d:
        q = d.qmp()
        if is_reference():
            assert_eq(q.execute('query-blockstats'), [], 'QSD lists no export backends')
            return
        s = _export_stats(q)
        assert_eq(s['node-name'], 'fmt0', 'node-name')
        assert_eq(s['parent']['node-name'], 'file0', 'parent')
        assert_eq('idle_time_ns' in s['stats'], False, 'no idle time before any I/O')
        h = _connect(d)
        h.pwrite(b'\x02' * (64 * KiB), 0)
        h.pread(4 * KiB, 0)
        h.pread(8 * KiB, 64 * KiB)
        h.zero(16 * KiB, 256 * KiB)
        h.trim(4 * KiB, 512 * KiB)
        h.flush()
        got = _wait_counts(q, {
            'wr_bytes': 64 * KiB + 16 * KiB, 'wr_operations': 2,
            'rd_bytes': 12 * KiB, 'rd_operations': 2,
            'unmap_bytes': 4 * KiB, 'unmap_operations': 1,
            'flush_operations': 1,
            'failed_rd_operations': 0, 'failed_wr_operations': 0,
            'invalid_rd_operations': 0, 'invalid_wr_operations': 0,
            'wr_highest_offset': 272 * KiB,
            'rd_merged': 0, 'wr_merged': 0, 'unmap_merged': 0,
            'account_invalid': True, 'account_failed': True, 'timed_stats': []})
        assert_eq(got['wr_total_time_ns'] > 0, True, 'write time counted')
        assert_eq('idle_time_ns' in got, True, 'idle time after I/O')
        # A 64 KiB write is one operation of 65536 bytes.
        h.pwrite(b'\x03' * (64 * KiB), MiB - 64 * KiB)
        _wait_counts(q, {'wr_bytes': 144 * KiB, 'wr_operations': 3,
                         'wr_highest_offset': MiB})
        h.shutdown()


def test_concurrent_counts_fio():
    """fio's 4 KiB random reads from two jobs at queue depth 16: the
    counters, added from several threads without a lock, are exact."""
    skip_if_reference('counts nothing for exports')
    require_fio_nbd()
    with _start(size=16 * MiB) as d:
        q = d.qmp()
        p = fio(['--name=r', '--ioengine=nbd', '--uri=' + d.uri(), '--rw=randread',
                 '--bs=4k', '--iodepth=16', '--numjobs=2', '--size=16M'], cwd=d.dir)
        assert_eq(p.returncode, 0, 'fio: %s' % p.stderr)
        _wait_counts(q, {'rd_operations': 2 * 4096, 'rd_bytes': 2 * 16 * MiB,
                         'failed_rd_operations': 0})


def test_export_invalid_requests():
    """Requests the server refuses (past the end) count as invalid, not as
    operations."""
    with _start() as d:
        q = d.qmp()
        if is_reference():
            return
        h = _connect(d, strict=False)
        nbd_errno(h.pread, 4096, MiB)
        nbd_errno(lambda: h.pwrite(b'\0' * 4096, MiB))
        nbd_errno(h.trim, 4096, MiB)
        _wait_counts(q, {'invalid_rd_operations': 1, 'invalid_wr_operations': 1,
                         'invalid_unmap_operations': 1, 'rd_operations': 0,
                         'wr_operations': 0, 'rd_bytes': 0})
        h.shutdown()


def test_failed_requests_blkdebug():
    """blkdebug fails the second write: one failed write, no bytes for it."""
    with start_daemon() as d:
        q = d.qmp()
        img = make_image(d.path('b.raw'), MiB)
        q.execute('blockdev-add', {
            'driver': 'raw', 'node-name': 'dbg',
            'file': {'driver': 'blkdebug', 'node-name': 'bd0',
                     'inject-error': [{'event': 'write_aio', 'errno': 5, 'once': True}],
                     'image': {'driver': 'file', 'filename': img}}})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'dbg',
                                       'name': 'disk', 'writable': True})
        h = _connect(d)
        nbd_errno(lambda: h.pwrite(b'\x04' * 4096, 0))
        h.pwrite(b'\x05' * 4096, 8192)
        h.pread(4096, 8192)
        if is_reference():
            h.shutdown()
            return
        _wait_counts(q, {'failed_wr_operations': 1, 'wr_operations': 1, 'wr_bytes': 4096,
                         'rd_operations': 1, 'failed_rd_operations': 0})
        h.shutdown()


def test_fuse_counters():
    """A FUSE export counts its reads, writes (a punched hole is a
    zeroing write, as NBD's write zeroes) and fsyncs."""
    skip_if_reference('counts nothing for exports')
    with start_daemon() as d:
        q = d.qmp()
        img = make_image(d.path('c.raw'), MiB)
        mnt = make_image(d.path('mnt'), 0)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'f',
                                   'file': {'driver': 'file', 'filename': img}})
        q.execute('block-export-add', {'type': 'fuse', 'id': 'fx', 'node-name': 'f',
                                       'mountpoint': mnt, 'writable': True})
        try:
            fd = os.open(mnt, os.O_RDWR | os.O_DIRECT)
            try:
                buf = bytearray(os.pread(fd, 4096, 0))
                m = mmap.mmap(-1, 8192)
                m.write(b'\x06' * 8192)
                os.pwritev(fd, [m], 0)
                os.fsync(fd)
                libc = ctypes.CDLL(None, use_errno=True)
                # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE = 3
                assert_eq(libc.fallocate(fd, 3, ctypes.c_long(65536), ctypes.c_long(16384)), 0,
                          'punch hole')
            finally:
                os.close(fd)
            assert_eq(len(buf), 4096, 'read')
            got = _wait_counts(q, {'wr_bytes': 8192 + 16384, 'wr_operations': 2,
                                   'rd_bytes': 4096, 'rd_operations': 1}, qdev='fx')
            assert_eq(got['flush_operations'] >= 1, True, 'fsync counted')
        finally:
            q.execute('block-export-del', {'id': 'fx'})
            q.wait_event('BLOCK_EXPORT_DELETED')


def test_latency_histograms():
    """block-latency-histogram-set on an export (its id as the device id):
    QEMU's argument rules and errors; each request falls in one bin.
    qemu-storage-daemon 7.2 has no such command (it is the system
    emulator's)."""
    with _start() as d:
        q = d.qmp()
        if is_reference():
            assert_eq(q.error('block-latency-histogram-set', {'id': 'exp0'})['class'],
                      'CommandNotFound', 'QSD 7.2')
            return
        assert_eq(q.error('block-latency-histogram-set', {'id': 'nope', 'boundaries': [10]}),
                  {'class': 'DeviceNotFound', 'desc': "Device 'nope' not found"}, 'unknown id')
        assert_eq(q.error('block-latency-histogram-set',
                          {'id': 'exp0', 'boundaries': [10, 10]})['desc'],
                  "Device 'exp0' set read boundaries fail", 'not increasing')
        assert_eq(q.error('block-latency-histogram-set',
                          {'id': 'exp0', 'boundaries-write': [0, 5]})['desc'],
                  "Device 'exp0' set write boundaries fail", 'zero boundary')
        assert_eq(q.error('block-latency-histogram-set',
                          {'id': 'exp0', 'boundaries-flush': []})['desc'],
                  "Device 'exp0' set flush boundaries fail", 'empty list')
        q.execute('block-latency-histogram-set', {'id': 'exp0'})   # clears: fine
        big = 10 ** 15
        q.execute('block-latency-histogram-set',
                  {'id': 'exp0', 'boundaries': [1, big], 'boundaries-write': [big]})
        stats = _export_stats(q)['stats']
        assert_eq(stats['rd_latency_histogram'], {'boundaries': [1, big], 'bins': [0, 0, 0]},
                  'read histogram')
        assert_eq(stats['wr_latency_histogram'], {'boundaries': [big], 'bins': [0, 0]},
                  'write histogram')
        assert_eq(stats['flush_latency_histogram']['boundaries'], [1, big], 'flush')
        h = _connect(d)
        h.pread(4096, 0)
        h.pread(4096, 4096)
        h.pwrite(b'\x09' * 4096, 0)
        got = _wait_counts(q, {'rd_operations': 2, 'wr_operations': 1})
        assert_eq(got['rd_latency_histogram']['bins'], [0, 2, 0], 'read bins')
        assert_eq(got['wr_latency_histogram']['bins'], [1, 0], 'write bins')
        h.shutdown()
        q.execute('block-latency-histogram-set', {'id': 'exp0'})
        stats = _export_stats(q)['stats']
        assert_eq([k for k in stats if k.endswith('_histogram')], [], 'cleared')


def test_write_threshold_fires_once():
    """191's pattern: a threshold on the format node; the first write past
    it sends BLOCK_WRITE_THRESHOLD with the amount exceeded and resets it
    to 0 (query-named-block-nodes shows it); later writes send nothing."""
    with _start() as d:
        q = d.qmp()
        q.execute('block-set-write-threshold', {'node-name': 'fmt0', 'write-threshold': 64 * KiB})

        def thresholds():
            return {n['node-name']: n['write_threshold']
                    for n in q.execute('query-named-block-nodes')}
        assert_eq(thresholds()['fmt0'], 64 * KiB, 'armed')
        h = _connect(d)
        h.pwrite(b'\x07' * 4096, 0)             # below: nothing
        h.pwrite(b'\x07' * (8 * KiB), 60 * KiB)  # ends at 68 KiB
        ev = q.wait_event('BLOCK_WRITE_THRESHOLD')
        assert_eq(ev['data'], {'node-name': 'fmt0', 'write-threshold': 64 * KiB,
                               'amount-exceeded': 4 * KiB}, 'event')
        assert_eq(thresholds()['fmt0'], 0, 'disarmed')
        h.pwrite(b'\x07' * (8 * KiB), 128 * KiB)
        # Arm the file node and pass it: its event must be the next one,
        # so the format node sent no second event meanwhile.
        q.execute('block-set-write-threshold', {'node-name': 'file0', 'write-threshold': 10000})
        h.zero(8 * KiB, 8 * KiB)
        ev = q.wait_event(('BLOCK_WRITE_THRESHOLD',))
        assert_eq(ev['data'], {'node-name': 'file0', 'write-threshold': 10000,
                               'amount-exceeded': 16384 - 10000}, 'write zeroes event')
        assert_eq([e for e in q.events if e['event'] == 'BLOCK_WRITE_THRESHOLD'], [],
                  'one event each')
        h.shutdown()


def test_write_threshold_args():
    """Errors and values as QEMU: unknown node, missing or bad threshold;
    0 disarms; a negative value wraps and is shown as QEMU shows it."""
    with _start() as d:
        q = d.qmp()
        assert_eq(q.error('block-set-write-threshold',
                          {'node-name': 'nope', 'write-threshold': 5}),
                  {'class': 'GenericError', 'desc': "Device 'nope' not found"}, 'unknown node')
        assert_eq(q.error('block-set-write-threshold', {'node-name': 'fmt0'})['desc'],
                  "Parameter 'write-threshold' is missing", 'missing')
        assert_eq(q.error('block-set-write-threshold',
                          {'node-name': 'fmt0', 'write-threshold': 'x'})['desc'],
                  "Parameter 'write-threshold' expects uint64", 'string')
        q.execute('block-set-write-threshold', {'node-name': 'fmt0', 'write-threshold': -5})
        wt = {n['node-name']: n['write_threshold'] for n in q.execute('query-named-block-nodes')}
        assert_eq(wt['fmt0'], -5, 'wrapped value as QEMU prints it')
        q.execute('block-set-write-threshold', {'node-name': 'fmt0', 'write-threshold': 4096})
        q.execute('block-set-write-threshold', {'node-name': 'fmt0', 'write-threshold': 0})
        h = _connect(d)
        h.pwrite(b'\x08' * 8192, 0)
        h.shutdown()
        q.execute('query-version')
        assert_eq([e for e in q.events if e['event'] == 'BLOCK_WRITE_THRESHOLD'], [],
                  'disarmed by 0')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
