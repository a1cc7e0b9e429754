#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Scale (issue 20): 10,000 nodes and 1,000 NBD exports are added, used by
real clients, queried and deleted, and the daemon's memory returns to
within 10% of where it started.  Command latencies are printed, not
asserted (no timing in tests; bench/ measures)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, daemon_sanitized, is_reference, main,  # noqa: E402
                         require_nbd, tests_of, wait_for)

NODES = 10000
EXPORTS = 1000
BATCH = 500


def _rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS')


def _pipelined(q, requests):
    """Run requests in batches (send a batch, read its replies); every
    one must succeed.  Returns the slowest batch's time per request."""
    worst = 0.0
    for i in range(0, len(requests), BATCH):
        batch = requests[i:i + BATCH]
        t = time.monotonic()
        for name, args in batch:
            q.send({'execute': name, 'arguments': args})
        for name, args in batch:
            r = q.reply()
            if 'error' in r:
                raise AssertionError('%s %r: %r' % (name, args, r['error']))
        worst = max(worst, (time.monotonic() - t) / len(batch))
    return worst


def test_ten_thousand_nodes_and_a_thousand_exports():
    nbd = require_nbd()
    if is_reference():
        raise Skip('a scale test of blockd; qemu-storage-daemon keeps its own memory')
    with Daemon() as d:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        # Warm-up: the first commands build one-time tables (the schema).
        _pipelined(q, [('blockdev-add', {'driver': 'null-co', 'node-name': 'w%d' % i})
                       for i in range(10)])
        _pipelined(q, [('blockdev-del', {'node-name': 'w%d' % i}) for i in range(10)])
        q.execute('query-named-block-nodes')
        time.sleep(3)
        base = _rss_kib(d.proc.pid)

        per = {}
        per['blockdev-add'] = _pipelined(q, [
            ('blockdev-add', {'driver': 'null-co', 'node-name': 'n%d' % i, 'size': 1 << 20,
                              'read-zeroes': True}) for i in range(NODES)])
        per['block-export-add'] = _pipelined(q, [
            ('block-export-add', {'type': 'nbd', 'id': 'e%d' % i, 'node-name': 'n%d' % i,
                                  'name': 'x%d' % i, 'writable': True})
            for i in range(EXPORTS)])
        peak = _rss_kib(d.proc.pid)

        # Use: real clients on exports across the range.
        for i in (0, EXPORTS // 2, EXPORTS - 1):
            h = nbd.NBD()
            h.connect_uri('nbd+unix:///x%d?socket=%s' % (i, d.nbd_sock))
            assert_eq(h.get_size(), 1 << 20, 'size of export x%d' % i)
            h.pwrite(b'\x5a' * 4096, 0)
            assert_eq(h.pread(4096, 8192), bytes(4096), 'read from export x%d' % i)
            h.shutdown()
        nodes = q.execute('query-named-block-nodes', {'flat': True})
        assert_eq(len(nodes), NODES, 'nodes listed')
        exports = q.execute('query-block-exports')
        assert_eq(len(exports), EXPORTS, 'exports listed')
        graph = q.execute('x-debug-query-block-graph')
        assert_eq(len(graph['nodes']), NODES + EXPORTS, 'graph vertices')

        per['block-export-del'] = _pipelined(q, [
            ('block-export-del', {'id': 'e%d' % i}) for i in range(EXPORTS)])
        wait_for(lambda: not q.execute('query-block-exports'), what='the exports to go')
        per['blockdev-del'] = _pipelined(q, [
            ('blockdev-del', {'node-name': 'n%d' % i}) for i in range(NODES)])
        assert_eq(q.execute('query-named-block-nodes'), [], 'no nodes left')

        for name, secs in per.items():
            print('%-18s %.3f ms per command (slowest batch of %d)' % (name, secs * 1e3, BATCH))
        print('RSS: start %d KiB, with everything %d KiB' % (base, peak))
        if daemon_sanitized():
            return    # a sanitizer's allocator keeps freed memory on purpose
        limit = base * 11 // 10 + 1024
        try:
            wait_for(lambda: _rss_kib(d.proc.pid) <= limit, timeout=15,
                     what='RSS back within 10%% of %d KiB' % base)
        finally:
            print('RSS at the end: %d KiB' % _rss_kib(d.proc.pid))


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
