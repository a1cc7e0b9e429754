#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The metrics endpoint (issue 21): --metrics and x-blockd-metrics-start/
-stop serve GET /metrics in Prometheus' text format.

Scrapes are taken while fio and nbdsh read and write through NBD and
FUSE, each one checked by `promtool check metrics`; a known number of
requests gives the counters exactly; a throttled node's latency shows in
its histogram; per-client series go with their clients; bad HTTP is
refused and the daemon keeps serving.  qemu-storage-daemon has no such
endpoint: every case is blockd's own."""

import errno
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, assert_in, fio, fuse_export,  # noqa: E402
                         main, make_image, nbd_errno, nbd_export_args, require_fio_nbd, require_fuse,
                         require_nbd, require_tool, run, skip_if_reference, tests_of, wait_for)

KiB = 1024
MiB = 1024 * KiB


# --- HTTP over the metrics socket ---

def http(addr, request, timeout=10.0, tls=None):
    """Send raw request bytes to a unix path or (host, port), through the
    ssl context `tls` if given; return (status, headers dict, body bytes)
    or (None, {}, b'') when the server closed without an answer."""
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        if tls:
            s = tls.wrap_socket(s, server_hostname=addr[0])
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b''
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data:
        return None, {}, b''
    head, _, body = data.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(':')
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get(addr, path='/metrics', method='GET', extra=b'', tls=None):
    req = ('%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n'
           % (method, path)).encode() + extra + b'\r\n'
    return http(addr, req, tls=tls)


def promtool_check(text):
    p = subprocess.run(['promtool', 'check', 'metrics'], input=text, capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        raise AssertionError('promtool check metrics failed (rc %d): %s%s'
                             % (p.returncode, p.stdout.decode(), p.stderr.decode()))


def parse(text):
    """{(name, frozenset(labels.items())): value} of a scrape."""
    out = {}
    for line in text.decode().splitlines():
        if not line or line.startswith('#'):
            continue
        series, _, value = line.rpartition(' ')
        name, _, rest = series.partition('{')
        labels = {}
        rest = rest.rstrip('}')
        while rest:
            k, _, rest = rest.partition('="')
            v, _, rest = rest.partition('"')
            labels[k.lstrip(',')] = v
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())))


def series(m, name, **labels):
    """Every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {k[1]: v for k, v in m.items() if k[0] == name and want <= k[1]}


def scrape(d, check=True):
    status, headers, body = get(d.metrics)
    assert_eq(status, 200, 'GET /metrics')
    assert_eq(headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8',
              'content type')
    if check:
        promtool_check(body)
    return parse(body)


def start(extra=(), image_size=4 * MiB, raw=True, metrics=True, pattern=None):
    """A daemon exporting a raw image as 'disk' (fmt0 over file0, export
    exp0), with --metrics on a unix socket; the image sparse, or filled
    with the byte `pattern`."""
    skip_if_reference('qemu-storage-daemon has no metrics endpoint')
    require_tool('promtool')
    d = Daemon()
    d.metrics = d.path('metrics.sock')
    img = make_image(d.path('a.raw'), image_size, pattern=pattern)
    d.args = nbd_export_args(d, img) + list(extra) + d.args
    if metrics:
        d.args += ['--metrics', 'addr.type=unix,addr.path=%s' % d.metrics]
        d.wait = [d.nbd_sock, d.metrics]
    else:
        d.wait = [d.nbd_sock]
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def connect(d):
    nbd = require_nbd()
    h = nbd.NBD()
    h.connect_uri(d.uri())
    return h


def job_progress(q, job):
    return [j for j in q.execute('query-jobs') if j['id'] == job][0]['current-progress']


def assert_job_offset(d, q, job):
    """The job's offset in a scrape, query-jobs' current-progress just
    after, a scrape just after that: progress only grows, so the three
    are in order; and each scrape's counter is its offset.  Returns the
    first scrape's offset."""
    m1 = scrape(d, check=False)
    cur = job_progress(q, job)
    m2 = scrape(d, check=False)
    off1 = val(m1, 'blockd_job_offset_bytes', job=job)
    off2 = val(m2, 'blockd_job_offset_bytes', job=job)
    assert_eq(off1 is not None and off1 <= cur <= off2, True,
              'job %s offset %r <= query-jobs %r <= %r' % (job, off1, cur, off2))
    for m, off in ((m1, off1), (m2, off2)):
        assert_eq(val(m, 'blockd_job_processed_bytes_total', job=job), off,
                  'job %s counter is its offset' % job)
    return off1


# --- tests ---

def test_exact_counts_and_client_series():
    """Known nbdsh requests give the export's and the nodes' counters
    exactly; the client's series exist while it is connected and vanish
    when it goes."""
    with start() as d:
        m = scrape(d)
        assert_eq(val(m, 'blockd_export_info', export='exp0', type='nbd', node='fmt0'), 1.0,
                  'export info')
        assert_eq(val(m, 'blockd_export_clients', export='exp0'), 0.0, 'no client yet')
        h = connect(d)
        h.pwrite(b'\x01' * (64 * KiB), 0)
        for i in range(10):
            h.pread(4 * KiB, i * 4 * KiB)
        h.zero(16 * KiB, 256 * KiB)
        h.trim(8 * KiB, 512 * KiB)
        h.flush()

        def counted():
            m = scrape(d, check=False)
            return val(m, 'blockd_export_requests_total', export='exp0', op='flush') == 1
        wait_for(counted, what='the flush counted')
        m = scrape(d)
        exp = {'read': (10, 40 * KiB), 'write': (2, 80 * KiB), 'discard': (1, 8 * KiB),
               'flush': (1, None)}
        for op, (n, nbytes) in exp.items():
            assert_eq(val(m, 'blockd_export_requests_total', export='exp0', op=op), float(n),
                      'export %s requests' % op)
            if nbytes is not None:
                assert_eq(val(m, 'blockd_export_bytes_total', export='exp0', op=op),
                          float(nbytes), 'export %s bytes' % op)
            assert_eq(val(m, 'blockd_export_request_duration_seconds_count', export='exp0',
                          op=op), float(n), 'export %s latency count' % op)
            assert_eq(val(m, 'blockd_export_errors_total', export='exp0', op=op), 0.0,
                      'export %s errors' % op)
        # The format node sees write zeroes apart from writes.
        assert_eq(val(m, 'blockd_node_requests_total', node='fmt0', op='read'), 10.0, 'fmt0 reads')
        assert_eq(val(m, 'blockd_node_bytes_total', node='fmt0', op='read'), 40.0 * KiB,
                  'fmt0 read bytes')
        assert_eq(val(m, 'blockd_node_requests_total', node='fmt0', op='write'), 1.0,
                  'fmt0 writes')
        assert_eq(val(m, 'blockd_node_requests_total', node='fmt0', op='zero'), 1.0, 'fmt0 zero')
        assert_eq(val(m, 'blockd_node_bytes_total', node='fmt0', op='zero'), 16.0 * KiB,
                  'fmt0 zero bytes')
        assert_eq(val(m, 'blockd_node_bytes_total', node='file0', op='read'), 40.0 * KiB,
                  'file0 read bytes')
        assert_eq(val(m, 'blockd_node_in_flight_requests', node='fmt0'), 0.0, 'idle node')
        assert_eq(val(m, 'blockd_export_in_flight_requests', export='exp0'), 0.0, 'idle export')
        # The client: one series per connected client, unix ones numbered.
        assert_eq(val(m, 'blockd_export_clients', export='exp0'), 1.0, 'one client')
        reqs = series(m, 'blockd_nbd_client_requests_total', export='exp0')
        assert_eq(len(reqs), 1, 'one client series')
        labels, n = next(iter(reqs.items()))
        assert_in('unix socket client #', dict(labels)['client'], 'client label')
        assert_eq(n, 14.0, 'client requests')
        reads = series(m, 'blockd_nbd_client_read_bytes_total', export='exp0')
        assert_eq(list(reads.values()), [40.0 * KiB], 'client read bytes')
        h2 = connect(d)
        m = scrape(d)
        assert_eq(len(series(m, 'blockd_nbd_client_requests_total')), 2, 'two clients')
        h.shutdown()
        h2.shutdown()
        wait_for(lambda: not series(scrape(d, check=False), 'blockd_nbd_client_requests_total'),
                 what='client series to vanish')
        m = scrape(d)
        assert_eq(val(m, 'blockd_export_clients', export='exp0'), 0.0, 'clients gone')
        # Totals stay: they are the export's, not the clients'.
        assert_eq(val(m, 'blockd_export_requests_total', export='exp0', op='read'), 10.0,
                  'reads kept')
        d.assert_alive()


def test_scrape_during_fio_nbd_and_fuse():
    """fio reads through NBD and writes through FUSE while the endpoint
    is scraped; every scrape passes promtool; afterwards the NBD reads
    are counted exactly (a 2 MiB randread at 4 KiB is 512 requests)."""
    require_fio_nbd()
    require_fuse()
    with start(image_size=8 * MiB) as d:
        q = d.qmp()
        mnt = d.path('fuse.img')
        with fuse_export(q, 'fmt0', mnt, id='fuse0', writable=True):
            procs = []

            def run_fio(args):
                procs.append(fio(args, cwd=d.dir))
            jobs = [
                threading.Thread(target=run_fio, args=([
                    '--name=r', '--ioengine=nbd', '--uri=' + d.uri(), '--rw=randread',
                    '--bs=4k', '--size=2M', '--iodepth=8', '--rate_iops=2000'],)),
                threading.Thread(target=run_fio, args=([
                    '--name=w', '--ioengine=psync', '--filename=' + mnt, '--rw=randwrite',
                    '--bs=4k', '--size=1M', '--offset=4M', '--direct=1',
                    '--rate_iops=2000'],)),
            ]
            for t in jobs:
                t.start()
            scrapes = 0
            while any(t.is_alive() for t in jobs) or scrapes < 3:
                scrape(d)           # promtool-checked
                scrapes += 1
            for t in jobs:
                t.join()
            for p in procs:
                assert_eq(p.returncode, 0, 'fio: %s%s' % (p.stdout, p.stderr))
            m = scrape(d)
            assert_eq(val(m, 'blockd_export_requests_total', export='exp0', op='read'), 512.0,
                      'NBD reads')
            assert_eq(val(m, 'blockd_export_bytes_total', export='exp0', op='read'),
                      2.0 * MiB, 'NBD read bytes')
            assert_eq(val(m, 'blockd_export_bytes_total', export='fuse0', op='write'),
                      1.0 * MiB, 'FUSE write bytes')
            assert_eq(val(m, 'blockd_export_info', export='fuse0', type='fuse', node='fmt0'),
                      1.0, 'FUSE export info')
            # Both exports' requests reached the node below them.
            assert_eq(val(m, 'blockd_node_bytes_total', node='fmt0', op='read') >= 2 * MiB,
                      True, 'fmt0 reads')
            assert_eq(val(m, 'blockd_node_bytes_total', node='fmt0', op='write') >= MiB,
                      True, 'fmt0 writes')
        d.assert_alive()


def test_throttled_histogram():
    """Reads through a throttle node limited to 20 IOPS wait for the
    throttle: the node's histogram puts most of them above 16 ms, the
    node below (unthrottled) not; an export histogram takes the buckets
    of block-latency-histogram-set."""
    extra = ['--object', 'throttle-group,id=tg,limits.iops-total=20',
             '--blockdev', 'throttle,node-name=thr,throttle-group=tg,file=fmt0']
    with start(extra=extra) as d:
        q = d.qmp()
        q.execute('block-export-add', {'type': 'nbd', 'id': 'slow', 'node-name': 'thr',
                                       'name': 'slow'})
        q.execute('block-latency-histogram-set', {'id': 'slow',
                                                  'boundaries-read': [1000000, 10000000]})
        nbd = require_nbd()
        h = nbd.NBD()
        h.connect_uri(d.uri('slow'))
        n = 30
        for i in range(n):
            h.pread(4 * KiB, i * 4 * KiB)
        h.shutdown()
        wait_for(lambda: val(scrape(d, check=False), 'blockd_export_request_duration_seconds_count',
                             export='slow', op='read') == n, what='reads counted')
        m = scrape(d)
        le = '0.016384'     # 2^14 us
        fast_thr = val(m, 'blockd_node_request_duration_seconds_bucket', node='thr', op='read',
                       le=le)
        assert_eq(val(m, 'blockd_node_request_duration_seconds_count', node='thr', op='read'),
                  float(n), 'throttle node count')
        # 20 IOPS: after the burst the throttle spaces requests 50 ms apart.
        assert_eq(fast_thr <= n / 3, True, 'throttled reads under 16 ms: %r of %d' % (fast_thr, n))
        below = val(m, 'blockd_node_request_duration_seconds_count', node='fmt0', op='read')
        assert_eq(below, float(n), 'fmt0 count')
        # The export's histogram has the QMP boundaries (1 ms, 10 ms).
        buckets = series(m, 'blockd_export_request_duration_seconds_bucket', export='slow',
                         op='read')
        les = sorted(dict(k)['le'] for k in buckets)
        assert_eq(les, ['+Inf', '0.001', '0.01'], 'export buckets')
        over = n - val(m, 'blockd_export_request_duration_seconds_bucket', export='slow',
                       op='read', le='0.01')
        assert_eq(over >= 2 * n / 3, True, 'export reads over 10 ms: %r of %d' % (over, n))
        # The same numbers in query-blockstats' histogram.
        st = [s for s in q.execute('query-blockstats') if s.get('qdev') == 'slow'][0]
        bins = st['stats']['rd_latency_histogram']['bins']
        assert_eq(float(bins[2]), over, 'query-blockstats agrees')


def test_bad_requests_refused():
    """Wrong path 404, wrong method 405 (with Allow), a garbage request
    line and huge headers refused by libsoup; the daemon keeps serving
    scrapes, QMP and NBD."""
    with start() as d:
        status, _, body = get(d.metrics, '/')
        assert_eq(status, 404, 'GET /')
        status, _, _ = get(d.metrics, '/metrics/x')
        assert_eq(status, 404, 'GET /metrics/x')
        status, _, _ = get(d.metrics, '/metricsx')
        assert_eq(status, 404, 'GET /metricsx')
        for method in ('POST', 'PUT', 'DELETE'):
            status, headers, _ = get(d.metrics, method=method)
            assert_eq(status, 405, method)
            assert_eq(headers.get('allow'), 'GET, HEAD', 'Allow for %s' % method)
        status, headers, body = get(d.metrics, method='HEAD')
        assert_eq(status, 200, 'HEAD')
        status, _, _ = http(d.metrics, b'\x00\xff garbage\r\n\r\n')
        assert_eq(status in (None, 400), True, 'garbage: %r' % status)
        status, _, _ = http(d.metrics, b'GET /metrics HTTP/9.9\r\n\r\n')
        assert_eq(status in (None, 400, 505), True, 'bad version: %r' % status)
        # 1 MiB of headers: refused, or the connection dropped.
        huge = b''.join(b'X-Pad-%d: %s\r\n' % (i, b'a' * 1000) for i in range(1024))
        status, _, _ = get(d.metrics, extra=huge)
        assert_eq(status in (None, 400, 413, 431), True, 'huge headers: %r' % status)
        one = b'X-Big: ' + b'b' * (2 * MiB) + b'\r\n'
        status, _, _ = get(d.metrics, extra=one)
        assert_eq(status in (None, 400, 413, 431), True, 'one huge header: %r' % status)
        # A client that connects and says nothing does not block others.
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(d.metrics)
        try:
            scrape(d)
        finally:
            idle.close()
        d.assert_alive()
        q = d.qmp()
        q.execute('query-version')
        h = connect(d)
        h.pread(4 * KiB, 0)
        h.shutdown()
        scrape(d)


def test_connection_limits():
    """max-connections: a connection over the limit is closed at once;
    idle-timeout: a silent client, one that sends half a request, and an
    idle kept-alive connection are closed after it; the endpoint counts
    both, and serves again once they are gone."""
    with start(metrics=False) as d:
        q = d.qmp()
        q.execute('x-blockd-metrics-start', {'addr': {'type': 'unix', 'path': d.path('m.sock')},
                                             'max-connections': 3, 'idle-timeout': 1})
        d.metrics = d.path('m.sock')

        def closed(s, timeout=20.0):
            s.settimeout(timeout)
            try:
                return s.recv(65536) == b''
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False

        silent = []
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.metrics)
            silent.append(s)
        half = socket.socket(socket.AF_UNIX)
        half.connect(d.metrics)
        half.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n')
        over = socket.socket(socket.AF_UNIX)
        over.connect(d.metrics)
        assert_eq(closed(over, 10.0), True, 'a fourth connection is closed')
        over.close()
        for s in silent + [half]:
            assert_eq(closed(s), True, 'an idle connection is closed after idle-timeout')
            s.close()
        # A kept-alive connection: two requests, then idle until closed.
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.metrics)
        s.settimeout(10)
        data = b''
        for _ in range(2):
            s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
            while b'\r\n\r\n' not in data:
                data += s.recv(65536)
            head, _, data = data.partition(b'\r\n\r\n')
            assert_in(b' 200 ', head, 'a kept-alive request')
            length = int(head.lower().split(b'content-length:')[1].split(b'\r\n')[0])
            while len(data) < length:
                data += s.recv(65536)
            data = data[length:]
        assert_eq(closed(s), True, 'a kept-alive connection is closed when idle')
        s.close()
        m = scrape(d)
        assert_eq(val(m, 'blockd_metrics_http_connections_closed_total',
                      reason='max-connections'), 1.0, 'closed over the limit')
        assert_eq(val(m, 'blockd_metrics_http_connections_closed_total',
                      reason='idle-timeout'), 4.0, 'closed when idle')
        assert_eq(val(m, 'blockd_metrics_http_connections'), 1.0, 'only the scrape open')
        for args, text in [({'max-connections': -1},
                            "Parameter 'max-connections' expects uint32_t"),
                           ({'idle-timeout': 'x'}, "Parameter 'idle-timeout' expects uint64")]:
            args['addr'] = {'type': 'unix', 'path': d.path('m2.sock')}
            q.execute('x-blockd-metrics-stop')
            assert_eq(q.error('x-blockd-metrics-start', args)['desc'], text, repr(args))
            q.execute('x-blockd-metrics-start', {'addr': {'type': 'unix',
                                                          'path': d.metrics}})
        # Defaults (16, 30 s): many silent clients are fine, scrapes go on.
        many = []
        for _ in range(8):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.metrics)
            many.append(s)
        assert_eq(val(scrape(d), 'blockd_metrics_http_connections'), 9.0, 'nine open')
        for s in many:
            s.close()
        d.assert_alive()


def test_qmp_start_stop_and_errors():
    """x-blockd-metrics-start/-stop: TCP and unix, errors clear (already
    running, not running, bad address), the unix socket removed on stop;
    --metrics errors at start-up."""
    with start(metrics=False) as d:
        q = d.qmp()
        assert_eq(q.error('x-blockd-metrics-stop')['desc'], 'Metrics server not running',
                  'stop when not running')
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
        s.close()
        q.execute('x-blockd-metrics-start', {'addr': {'type': 'inet', 'host': '127.0.0.1',
                                                      'port': str(port)}})
        d.metrics = ('127.0.0.1', port)
        m = scrape(d)
        assert_eq(val(m, 'blockd_export_clients', export='exp0'), 0.0, 'scrape over TCP')
        assert_eq(q.error('x-blockd-metrics-start',
                          {'addr': {'type': 'unix', 'path': d.path('m2.sock')}})['desc'],
                  'Metrics server already running', 'second start')
        q.execute('x-blockd-metrics-stop')
        status, _, _ = (None, None, None)
        try:
            status, _, _ = get(d.metrics)
        except OSError:
            pass
        assert_eq(status, None, 'nothing listens after stop')
        errors = [
            ({'addr': {'type': 'unix', 'path': d.path('no/such/dir/m.sock')}},
             'Metrics server: Failed to bind socket to %s: No such file or directory'
             % d.path('no/such/dir/m.sock')),
            ({'addr': {'type': 'inet', 'host': '127.0.0.1', 'port': 'http-nonsense'}}, None),
            ({'addr': {'type': 'vsock', 'cid': '2', 'port': '1'}},
             "Metrics server: unsupported address type 'vsock'"),
            ({'addr': {'type': 'unix'}}, "Parameter 'addr.path' is missing"),
            ({}, "Parameter 'addr' is missing"),
            ({'addr': {'type': 'unix', 'path': 'x'}, 'bogus': 1},
             "Parameter 'bogus' is unexpected"),
        ]
        for args, text in errors:
            desc = q.error('x-blockd-metrics-start', args)['desc']
            if text is None:
                assert_in('Metrics server: address resolution failed', desc, 'bad port')
            else:
                assert_eq(desc, text, 'x-blockd-metrics-start %r' % args)
        q.execute('x-blockd-metrics-start', {'addr': {'type': 'unix',
                                                      'path': d.path('m.sock')}})
        d.metrics = d.path('m.sock')
        scrape(d)
        q.execute('x-blockd-metrics-stop')
        assert_eq(os.path.exists(d.path('m.sock')), False, 'unix socket removed')
        d.assert_alive()
    # --metrics with a bad address stops the start-up with the reason.
    p = run([d.exe, '--metrics', 'addr.type=unix,addr.path=/nonexistent/dir/m.sock'],
            check=False)
    assert_eq(p.returncode, 1, '--metrics bad path exit status')
    assert_in('--metrics addr.type=unix,addr.path=/nonexistent/dir/m.sock: Metrics server: '
              'Failed to bind socket to /nonexistent/dir/m.sock', p.stderr, 'start-up error')
    p = run([d.exe, '--metrics', 'addr.type=unix'], check=False)
    assert_eq(p.returncode, 1, '--metrics without path')
    assert_in("Parameter 'addr.path' is missing", p.stderr, 'missing path')


def test_handshake_failures_jobs_bitmaps_process():
    """Handshake failures by reason, a running job's progress and status,
    a bitmap's dirty bytes, and the process figures."""
    with start() as d:
        q = d.qmp()
        nbd = require_nbd()
        h = nbd.NBD()
        try:
            h.connect_uri('nbd+unix:///nosuch?socket=%s' % d.nbd_sock)
        except nbd.Error:
            pass
        del h
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.nbd_sock)
        s.recv(18)                          # the greeting
        s.sendall(b'\x00\x00\x00\x03' + b'\x00' * 16)   # flags, then a bad option magic
        s.close()
        wait_for(lambda: val(scrape(d, check=False), 'blockd_nbd_handshake_failures_total',
                             reason='protocol') == 1, what='the protocol failure counted')
        m = scrape(d)
        assert_eq(val(m, 'blockd_nbd_handshake_failures_total', reason='export-not-found'), 1.0,
                  'export not found')
        q.execute('block-dirty-bitmap-add', {'node': 'fmt0', 'name': 'b0', 'granularity': 65536})
        h = connect(d)
        h.pwrite(b'\x05' * 4096, 3 * 65536 + 100)
        h.pwrite(b'\x05' * 4096, 0)
        h.shutdown()
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt', 'size': 4 * MiB})
        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'fmt0', 'target': 'tgt',
                                      'sync': 'full', 'speed': 64 * KiB})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'running'})
        # The job learns its length once running: as query-jobs shows it.
        wait_for(lambda: val(scrape(d, check=False), 'blockd_job_length_bytes', job='mj')
                 == 4 * MiB, what='the job length')
        m = scrape(d)
        assert_eq(val(m, 'blockd_dirty_bitmap_dirty_bytes', node='fmt0', bitmap='b0'),
                  2.0 * 65536, 'dirty bytes')
        st = series(m, 'blockd_job_status', job='mj', type='mirror')
        assert_eq(len(st), 1, 'one status series: %r' % st)
        assert_in(dict(next(iter(st)))['status'], ('running', 'ready'), 'job status')
        assert_eq(val(m, 'blockd_job_length_bytes', job='mj'), 4.0 * MiB, 'job len')
        assert_eq(val(m, 'blockd_job_speed_limit_bytes', job='mj'), 64.0 * KiB, 'job speed')
        assert_job_offset(d, q, 'mj')
        q.execute('block-job-cancel', {'device': 'mj', 'force': True})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'null'})
        m = scrape(d)
        assert_eq(series(m, 'blockd_job_status'), {}, 'job gone')
        assert_eq(val(m, 'blockd_process_threads') >= 1, True, 'threads')
        assert_eq(val(m, 'blockd_process_resident_memory_bytes') > MiB, True, 'rss')
        assert_eq(val(m, 'blockd_uptime_seconds') > 0, True, 'uptime')
        assert_eq(len(series(m, 'blockd_build_info')), 1, 'build info')


def test_job_rate():
    """A mirror of 4 MiB of data limited to 1 MiB/s runs for seconds:
    blockd_job_processed_bytes_total grows between two scrapes at about
    the limit (what rate() shows), agrees with query-jobs, and ends at
    the job's len when it is ready; gone with the job."""
    speed = MiB
    with start(pattern=0x5a) as d:      # data everywhere: no zero skipped
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt', 'size': 4 * MiB})
        # buf-size: progress in steps of 256 KiB, several a second.
        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'fmt0', 'target': 'tgt',
                                      'sync': 'full', 'speed': speed, 'buf-size': 256 * KiB})
        wait_for(lambda: job_progress(q, 'mj') > 0, what='the job started copying')
        m = scrape(d)
        assert_eq(val(m, 'blockd_job_speed_limit_bytes', job='mj'), float(speed), 'speed')
        t1 = time.monotonic()
        c1 = assert_job_offset(d, q, 'mj')
        time.sleep(1.0)
        t2 = time.monotonic()
        c2 = assert_job_offset(d, q, 'mj')
        rate = (c2 - c1) / (t2 - t1)
        assert_eq(0 < rate <= 3 * speed, True, 'rate %r B/s under a %d B/s limit' % (rate, speed))
        assert_eq(c2 < 4 * MiB, True, 'still copying after a second: %r' % c2)
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'ready'}, timeout=30)
        m = scrape(d)
        assert_eq(val(m, 'blockd_job_processed_bytes_total', job='mj'), 4.0 * MiB,
                  'processed bytes at ready')
        assert_eq(val(m, 'blockd_job_length_bytes', job='mj'), 4.0 * MiB, 'len at ready')
        assert_eq(job_progress(q, 'mj'), 4 * MiB, 'query-jobs at ready')
        q.execute('block-job-cancel', {'device': 'mj'})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'null'})
        m = scrape(d)
        assert_eq(series(m, 'blockd_job_processed_bytes_total'), {}, 'counter gone with the job')
        d.assert_alive()


def test_node_errors():
    """A read that blkdebug fails counts in blockd_node_errors_total at
    the blkdebug node and at the raw node above it (not at the file
    below, never reached), and at the export; good requests count no
    error."""
    with start() as d:
        q = d.qmp()
        img = make_image(d.path('b.raw'), MiB, pattern=0x3c)
        rules = [{'event': 'none', 'iotype': 'read', 'errno': errno.EIO,
                  'sector': 8, 'immediately': True, 'once': False}]
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'dbg',
                                   'file': {'driver': 'blkdebug', 'node-name': 'dbgf',
                                            'inject-error': rules,
                                            'image': {'driver': 'file', 'node-name': 'dbgimg',
                                                      'filename': img}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'bad', 'node-name': 'dbg',
                                       'name': 'bad', 'writable': True})
        m = scrape(d)
        for node in ('dbg', 'dbgf', 'dbgimg'):
            assert_eq(val(m, 'blockd_node_errors_total', node=node, op='read'), 0.0,
                      '%s errors before' % node)
        nbd = require_nbd()
        h = nbd.NBD()
        h.connect_uri(d.uri('bad'))
        assert_eq(h.pread(4 * KiB, 0), b'\x3c' * 4 * KiB, 'good read')
        assert_eq(nbd_errno(h.pread, 4 * KiB, 4 * KiB), errno.EIO, 'bad read')
        h.pwrite(b'\x11' * 4 * KiB, 64 * KiB)
        h.shutdown()
        wait_for(lambda: val(scrape(d, check=False), 'blockd_export_errors_total', export='bad',
                             op='read') == 1, what='the failed read counted')
        m = scrape(d)
        for node, n in (('dbg', 1), ('dbgf', 1), ('dbgimg', 0)):
            assert_eq(val(m, 'blockd_node_errors_total', node=node, op='read'), float(n),
                      '%s read errors' % node)
            assert_eq(val(m, 'blockd_node_errors_total', node=node, op='write'), 0.0,
                      '%s write errors' % node)
        assert_eq(val(m, 'blockd_node_requests_total', node='dbg', op='read'), 1.0,
                  'dbg: the good read completed')
        assert_eq(val(m, 'blockd_export_requests_total', export='bad', op='read'), 1.0,
                  'export: the good read completed')
        d.assert_alive()


def test_handshake_timeout_and_listing():
    """A client that never finishes its handshake counts as a timeout; a
    listing (nbdinfo --list: LIST then ABORT) counts as no failure."""
    with start() as d:
        q = d.qmp()
        # The harness' check that the NBD socket accepts (connect, close)
        # is a handshake that ended with nothing said: 'disconnected'.
        wait_for(lambda: val(scrape(d, check=False), 'blockd_nbd_handshake_failures_total',
                             reason='disconnected') == 1, what='the start-up probe counted')
        q.execute('nbd-server-stop')
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}},
                                       'handshake-max-seconds': 1})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'exp0', 'node-name': 'fmt0',
                                       'name': 'disk'})
        p = run(['nbdinfo', '--list', 'nbd+unix://?socket=%s' % d.nbd_sock], check=False)
        assert_eq(p.returncode, 0, 'nbdinfo --list: %s' % p.stderr)
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.nbd_sock)
        try:
            s.recv(18)                  # greeting, then silence
            wait_for(lambda: val(scrape(d, check=False), 'blockd_nbd_handshake_failures_total',
                                 reason='timeout') == 1, what='the timeout counted')
        finally:
            s.close()
        m = scrape(d)
        fails = series(m, 'blockd_nbd_handshake_failures_total')
        assert_eq(sum(fails.values()), 2.0, 'only the probe and the timeout: %r' % fails)
        d.assert_alive()


def test_export_handshake_failures():
    """Handshake failures counted at the export the client named, by
    reason: nbdinfo of a missing export and garbage count server-wide
    only; an INFO then a hang-up, a bad GO, and a GO for 'disk' before
    STARTTLS count at exp0 too.  Unknown names make no series."""
    import raw_nbd
    with start() as d:
        def fails(**labels):
            return series(scrape(d, check=False), 'blockd_export_handshake_failures_total',
                          **labels)
        m = scrape(d)
        init = series(m, 'blockd_export_handshake_failures_total', export='exp0')
        assert_eq(sorted(dict(k)['reason'] for k in init),
                  ['disconnected', 'protocol', 'timeout', 'tls', 'tls-required'],
                  'the reasons of an export')
        assert_eq(sum(init.values()), 0.0, 'nothing failed yet')
        p = run(['nbdinfo', 'nbd+unix:///nosuch?socket=%s' % d.nbd_sock], check=False)
        assert_eq(p.returncode != 0, True, 'nbdinfo of a missing export fails')
        with raw_nbd.RawNBD(path=d.nbd_sock) as c:   # garbage after the flags
            c.sock.sendall(b'\xde\xad' * 64)
            assert_eq(c.closed_by_server(), True, 'garbage drops the connection')
        wait_for(lambda: val(scrape(d, check=False), 'blockd_nbd_handshake_failures_total',
                             reason='protocol') == 1, what='garbage counted')
        assert_eq(val(scrape(d), 'blockd_nbd_handshake_failures_total',
                      reason='export-not-found'), 1.0, 'missing export counted')
        assert_eq(sum(fails().values()), 0.0, 'neither counts at an export')
        with raw_nbd.RawNBD(path=d.nbd_sock) as c:   # INFO of disk, then gone
            assert_eq(c.option_reply(raw_nbd.OPT_INFO, c.info_data('disk')), raw_nbd.REP_ACK,
                      'INFO disk')
        wait_for(lambda: val(scrape(d, check=False), 'blockd_export_handshake_failures_total',
                             export='exp0', reason='disconnected') == 1,
                 what='hang-up after INFO counted at exp0')
        with raw_nbd.RawNBD(path=d.nbd_sock) as c:   # GO with a bad length
            assert_eq(c.option_reply(raw_nbd.OPT_GO, c.info_data('disk') + b'\0'),
                      raw_nbd.REP_ERR_INVALID, 'GO with a bad length')
        wait_for(lambda: val(scrape(d, check=False), 'blockd_export_handshake_failures_total',
                             export='exp0', reason='protocol') == 1,
                 what='bad GO counted at exp0')
        with raw_nbd.RawNBD(path=d.nbd_sock) as c:   # a name that does not exist
            assert_eq(c.option_reply(raw_nbd.OPT_INFO, c.info_data('nosuch')),
                      raw_nbd.REP_ERR_UNKNOWN, 'INFO nosuch')
        wait_for(lambda: val(scrape(d, check=False), 'blockd_nbd_handshake_failures_total',
                             reason='export-not-found') == 2, what='second unknown export')
        m = scrape(d)
        assert_eq({dict(k)['export'] for k in series(m, 'blockd_export_handshake_failures_total')},
                  {'exp0'}, 'no series for made-up names')
        assert_eq(sum(series(m, 'blockd_export_handshake_failures_total').values()), 2.0,
                  'two at exp0')
        # A client in transmission counts nothing.
        h = connect(d)
        h.pread(4 * KiB, 0)
        h.shutdown()
        assert_eq(sum(fails().values()), 2.0, 'a good client is no failure')
        d.assert_alive()


def test_grafana_dashboard_queries():
    """examples/grafana-dashboard.json: every query parses (promtool check
    rules) and names only series a scrape of a busy daemon has."""
    import json
    import re
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'examples',
                       'grafana-dashboard.json')
    with open(src) as f:
        dash = json.load(f)
    exprs = [t['expr'] for p in dash['panels'] for t in p['targets']]
    assert_eq(len(exprs) >= 8, True, 'queries in the dashboard')
    with start() as d:
        rules = d.path('rules.yml')
        with open(rules, 'w') as f:
            f.write('groups:\n- name: dashboard\n  rules:\n')
            for i, e in enumerate(exprs):
                e = e.replace('$__rate_interval', '1m').replace('$export', '.*')
                f.write('  - record: dashboard:q%d\n    expr: %s\n' % (i, json.dumps(e)))
        p = run(['promtool', 'check', 'rules', rules], check=False)
        assert_eq(p.returncode, 0, 'promtool check rules: %s%s' % (p.stdout, p.stderr))
        q = d.qmp()
        q.execute('block-dirty-bitmap-add', {'node': 'fmt0', 'name': 'b0'})
        h = connect(d)
        h.pwrite(b'\x01' * 4096, 0)
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt', 'size': 4 * MiB})
        q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'fmt0', 'target': 'tgt',
                                      'sync': 'full', 'speed': 64 * KiB})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'running'})
        names = {k[0] for k in scrape(d)}
        h.shutdown()
        q.execute('block-job-cancel', {'device': 'mj', 'force': True})
        q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'null'})
        used = set()
        for e in exprs:
            used |= set(re.findall(r'\bblockd_[a-z_]+', e))
        assert_eq(sorted(used - names), [], 'dashboard series missing from a scrape')



def test_node_histogram_buckets():
    """block-latency-histogram-set with a node name as id sets that
    node's histograms in /metrics (QEMU's argument rules and errors;
    write zeroes take the write boundaries, discards keep the default
    buckets); an id naming an export and a node sets both.  Boundaries
    of 1 ns and 10^15 ns put every request in the middle bin, so the
    bucket counts are exact."""
    big = 10 ** 15
    with start() as d:
        q = d.qmp()
        q.execute('block-latency-histogram-set',
                  {'id': 'fmt0', 'boundaries': [1, big], 'boundaries-write': [big]})
        h = connect(d)
        for i in range(3):
            h.pread(4 * KiB, i * 4 * KiB)
        h.pwrite(b'\x02' * (8 * KiB), 0)
        h.pwrite(b'\x03' * (4 * KiB), 64 * KiB)
        h.zero(16 * KiB, 128 * KiB)
        h.trim(4 * KiB, 256 * KiB)
        h.flush()
        wait_for(lambda: val(scrape(d, check=False), 'blockd_node_requests_total', node='fmt0',
                             op='flush') == 1, what='the flush counted')
        m = scrape(d)
        name = 'blockd_node_request_duration_seconds'
        want = {'read': (['1e-09', '1000000', '+Inf'], [0, 3, 3]),
                'write': (['1000000', '+Inf'], [2, 2]),
                'zero': (['1000000', '+Inf'], [1, 1]),
                'flush': (['1e-09', '1000000', '+Inf'], [0, 1, 1])}
        for op, (les, counts) in want.items():
            got = {dict(k)['le']: v
                   for k, v in series(m, name + '_bucket', node='fmt0', op=op).items()}
            assert_eq(sorted(got, key=lambda le: float(le)), les, 'fmt0 %s buckets' % op)
            assert_eq([got[le] for le in les], [float(c) for c in counts],
                      'fmt0 %s bucket counts' % op)
            assert_eq(val(m, name + '_count', node='fmt0', op=op), float(counts[-1]),
                      'fmt0 %s count' % op)
            total = val(m, name + '_sum', node='fmt0', op=op)
            assert_eq(0 < total < 60 * counts[-1], True, 'fmt0 %s sum %r' % (op, total))
        # Not set: the default buckets (discard at fmt0, file0, the export).
        for labels in ({'node': 'fmt0', 'op': 'discard'}, {'node': 'file0', 'op': 'read'}):
            assert_eq(len(series(m, name + '_bucket', **labels)), 27, 'default %r' % labels)
        assert_eq(len(series(m, 'blockd_export_request_duration_seconds_bucket', export='exp0',
                             op='read')), 27, 'export exp0 untouched')
        assert_eq(val(m, name + '_count', node='file0', op='read'), 3.0, 'file0 reads')
        # QEMU's errors, naming the node as the device.
        assert_eq(q.error('block-latency-histogram-set',
                          {'id': 'fmt0', 'boundaries-read': [5, 5]})['desc'],
                  "Device 'fmt0' set read boundaries fail", 'not increasing')
        assert_eq(q.error('block-latency-histogram-set',
                          {'id': 'fmt0', 'boundaries': [7], 'boundaries-zap': [0]})['desc'],
                  "Device 'fmt0' set append write boundaries fail", 'zap checked')
        assert_eq(q.error('block-latency-histogram-set', {'id': 'nope', 'boundaries': [1]}),
                  {'class': 'DeviceNotFound', 'desc': "Device 'nope' not found"}, 'unknown id')
        # The read and write lists before the bad zap list were taken.
        m = scrape(d)
        les = sorted(dict(k)['le'] for k in series(m, name + '_bucket', node='fmt0', op='read'))
        assert_eq(les, ['+Inf', '7e-09'], 'kinds before the error kept')
        # An export and a node of one name: both take the boundaries.
        q.execute('block-export-add', {'type': 'nbd', 'id': 'file0', 'node-name': 'fmt0',
                                       'name': 'again'})
        q.execute('block-latency-histogram-set', {'id': 'file0', 'boundaries-read': [big]})
        m = scrape(d)
        for metric, labels in (('blockd_node_request_duration_seconds_bucket', {'node': 'file0'}),
                               ('blockd_export_request_duration_seconds_bucket',
                                {'export': 'file0'})):
            les = sorted(dict(k)['le'] for k in series(m, metric, op='read', **labels))
            assert_eq(les, ['+Inf', '1000000'], '%r buckets' % labels)
        # Absent boundaries (boundaries-zap alone counts as none, as in
        # QEMU) remove the histograms: the default buckets again.
        q.execute('block-latency-histogram-set', {'id': 'fmt0', 'boundaries-zap': [1]})
        m = scrape(d)
        for op in ('read', 'write', 'zero', 'flush'):
            assert_eq(len(series(m, name + '_bucket', node='fmt0', op=op)), 27,
                      'fmt0 %s cleared' % op)
        h.shutdown()
        d.assert_alive()


# --- OpenMetrics ---

OPENMETRICS_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8'
# What Prometheus 2.42 sends.
PROMETHEUS_ACCEPT = ('application/openmetrics-text;version=1.0.0,'
                     'application/openmetrics-text;version=0.0.1;q=0.75,'
                     'text/plain;version=0.0.4;q=0.5,*/*;q=0.1')


def openmetrics_parser():
    try:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    except ImportError:
        raise Skip('python3-prometheus-client (scripts/deps.sh) is needed')
    return text_string_to_metric_families


def get_accept(d, accept):
    status, headers, body = get(d.metrics, extra=('Accept: %s\r\n' % accept).encode())
    assert_eq(status, 200, 'GET /metrics (Accept: %s)' % accept)
    assert_eq(headers.get('vary'), 'Accept', 'Vary')
    return headers.get('content-type'), body


def test_openmetrics_negotiation():
    """Accept: application/openmetrics-text; version=1.0.0 (alone, or as
    Prometheus sends it) gets OpenMetrics 1.0.0, which the reference
    parser of prometheus_client accepts: counter families named without
    _total, their samples with it, units, # EOF last; and the same
    samples as the text format.  text/plain first, an OpenMetrics
    version blockd does not speak, or no Accept header: the text format,
    which promtool accepts."""
    parse_om = openmetrics_parser()
    with start() as d:
        h = connect(d)
        for i in range(5):
            h.pread(4 * KiB, i * 4 * KiB)
        h.pwrite(b'\x04' * 4096, 0)
        h.flush()
        wait_for(lambda: val(scrape(d, check=False), 'blockd_export_requests_total',
                             export='exp0', op='flush') == 1, what='the flush counted')
        for accept in ('application/openmetrics-text; version=1.0.0', PROMETHEUS_ACCEPT,
                       'application/openmetrics-text'):
            ctype, body = get_accept(d, accept)
            assert_eq(ctype, OPENMETRICS_TYPE, 'content type for %r' % accept)
        text = body.decode()
        assert_eq(text.endswith('\n# EOF\n'), True, '# EOF last')
        fams = {f.name: f for f in parse_om(text)}
        reqs = fams['blockd_export_requests']
        assert_eq((reqs.type, reqs.unit), ('counter', ''), 'counter family')
        assert_eq({s.name for s in reqs.samples}, {'blockd_export_requests_total'},
                  'counter samples keep _total')
        reads = [s.value for s in reqs.samples
                 if s.labels == {'export': 'exp0', 'op': 'read'}]
        assert_eq(reads, [5.0], 'export reads')
        lat = fams['blockd_node_request_duration_seconds']
        assert_eq((lat.type, lat.unit), ('histogram', 'seconds'), 'histogram family')
        assert_eq(fams['blockd_node_bytes'].unit, 'bytes', 'bytes unit')
        assert_eq('blockd_node_requests_total' in fams, False, 'no _total family')
        # The same series as the text format, with the same values (the
        # process and endpoint figures move between scrapes).
        ctype, plain = get_accept(d, 'text/plain')
        assert_eq(ctype, 'text/plain; version=0.0.4; charset=utf-8', 'text/plain')
        promtool_check(plain)
        moving = ('blockd_process_', 'blockd_uptime_', 'blockd_metrics_http_')
        om = {(s.name, frozenset(s.labels.items())): float(s.value)
              for f in fams.values() for s in f.samples if not s.name.startswith(moving)}
        tm = {k: v for k, v in parse(plain).items() if not k[0].startswith(moving)}
        assert_eq(sorted(set(om) ^ set(tm)), [], 'same series')
        diff = {k: (om[k], tm[k]) for k in om if abs(om[k] - tm[k]) > 1e-9 * max(1, tm[k])}
        assert_eq(diff, {}, 'same values')
        # Prometheus' text format wherever OpenMetrics 1.0.0 is not first.
        for accept in ('text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5',
                       'application/openmetrics-text;version=0.0.1', 'application/json',
                       '*/*'):
            ctype, body = get_accept(d, accept)
            assert_eq(ctype, 'text/plain; version=0.0.4; charset=utf-8',
                      'content type for %r' % accept)
            promtool_check(body)
        h.shutdown()
        d.assert_alive()


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
