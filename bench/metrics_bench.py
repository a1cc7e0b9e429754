#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Cost of the metrics (issue 21): NBD 4k random read (fio's nbd engine,
QD 32, the row of bench/run.sh) on blockd with the metrics endpoint off
and on, in one run, rounds interleaved so that the machine's drift hits
both alike.

  off      blockd without --metrics.  The counters of the I/O path are
           always kept (a few relaxed atomic adds per request and node),
           so this row already pays for the counting;
  on       blockd with --metrics on a unix socket, scraped every SCRAPE
           seconds during the run (a busy Prometheus scrapes every 15 s;
           the default 1 s makes the scrape cost visible);
  baseline (only with BLOCKD_BASELINE=path) a build from before the
           counters, or one with graph/stats.c's bd_io_stats_now,
           _begin, _end, _done and _invalid made to return at once, so
           that the counting itself shows: off vs baseline;
  profiled (only with PERF=1) off under perf: the share of the server's
           CPU samples spent counting, which the machine's drift hides
           less than IOPS (perf's own cost shows against off).

Prints IOPS (median and best of ROUNDS) and the server's CPU seconds per
GiB for each row, and the overhead of on (and off) against the reference
row.  The issue's target: under 2% on this row.
  bench/metrics_bench.py                            (RUNTIME=10 SIZE=1G ROUNDS=3)
  RUNTIME=2 SIZE=64M ROUNDS=1 bench/metrics_bench.py    (a smoke run)
  BLOCKD_BASELINE=/path/to/old/blockd bench/metrics_bench.py
  PERF=1 bench/metrics_bench.py     (also the counting's share of the server's
                                     CPU in a perf profile of an "off" server)
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'bench'))
from bench import (GiB, SIZE, cpu_seconds, fio_has_nbd, make_image,  # noqa: E402
                   run_workload_cpu, server_cmd, stop_server, wait_socket)

ROUNDS = int(os.environ.get('ROUNDS', '3'))
# PERF=1: one more row, "profiled": "off" under perf (counting_share); a
# row of its own, as the profiler slows the server it samples.
PERF = os.environ.get('PERF') == '1'
COUNTING = []
SCRAPE = float(os.environ.get('SCRAPE', '1'))
FIO_ARGS = ['--rw=randread', '--bs=4k', '--iodepth=32']


def scrape(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(path)
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        n = 0
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return n
            n += len(chunk)
    finally:
        s.close()


def one_run(row, img, workdir):
    """(IOPS, server CPU s/GiB, scrapes) of one fio run against a fresh
    server for `row`."""
    sock = os.path.join(workdir, 'nbd.sock')
    msock = os.path.join(workdir, 'metrics.sock')
    for p in (sock, msock):
        if os.path.exists(p):
            os.unlink(p)
    cmd = server_cmd('blockd', img, sock)
    if row == 'baseline':
        cmd[0] = os.environ['BLOCKD_BASELINE']
    if row == 'on':
        cmd += ['--metrics', 'addr.type=unix,addr.path=%s' % msock]
    with open(os.path.join(workdir, row + '.stderr'), 'w') as errlog:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    stop = threading.Event()
    scrapes = []

    def scraper():
        while not stop.wait(SCRAPE):
            scrapes.append(scrape(msock))
    try:
        if not wait_socket(sock, proc) or (row == 'on' and not wait_socket(msock, proc)):
            raise RuntimeError('%s did not start (see %s.stderr)' % (row, row))
        t = threading.Thread(target=scraper) if row == 'on' else None
        if t:
            t.start()
        c0 = cpu_seconds(proc.pid)
        perf = None
        if row == 'profiled':
            perf = subprocess.Popen(['perf', 'record', '-q', '-e', 'cpu-clock', '-F', '999',
                                     '-p', str(proc.pid), '-o',
                                     os.path.join(workdir, 'perf.data')],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            iops, moved, _ = run_workload_cpu('nbd+unix:///disk?socket=%s' % sock, FIO_ARGS)
        finally:
            stop.set()
            if t:
                t.join()
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait()
                counting_share(os.path.join(workdir, 'perf.data'))
        cpu = cpu_seconds(proc.pid) - c0
    finally:
        stop_server(proc)
    return iops, cpu / (moved / GiB) if moved else 0.0, len(scrapes)


def counting_share(data):
    """The part of the server's CPU samples (perf, cpu-clock) spent
    counting: graph/stats.c's functions and the clock reads (the vDSO's
    clock_gettime and its libc entry; nothing else reads the clock per
    request).  Less exposed to a shared machine's drift than IOPS."""
    p = subprocess.run(['perf', 'report', '-i', data, '--stdio', '--sort', 'dso,symbol'],
                       capture_output=True, text=True)
    stats = clock = 0.0
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) < 4 or not f[0].endswith('%') or line.lstrip().startswith('#'):
            continue
        pct = float(f[0].rstrip('%'))
        if f[3].startswith('bd_io_stats_'):
            stats += pct
        elif f[1] == '[vdso]' or f[3].startswith('clock_gettime'):
            clock += pct
    COUNTING.append((stats, clock))


def main():
    if not fio_has_nbd():
        print('metrics_bench: fio with the nbd engine is needed', file=sys.stderr)
        return 1
    rows = ['off', 'on'] + (['profiled'] if PERF else [])
    if os.environ.get('BLOCKD_BASELINE'):
        rows.insert(0, 'baseline')
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-metrics-bench-')
    os.makedirs(workdir, exist_ok=True)
    img = os.path.join(workdir, 'disk.raw')
    if not os.path.exists(img) or os.path.getsize(img) != _size():
        make_image(img)
    print('metrics_bench: %s raw image, unix socket, fio 4k randread QD32, %d round(s), '
          'scrape every %gs in row "on"' % (SIZE, ROUNDS, SCRAPE))
    res = {r: [] for r in rows}
    for _ in range(ROUNDS):
        for r in rows:
            res[r].append(one_run(r, img, workdir))
    ref = 'baseline' if 'baseline' in rows else 'off'
    ref_iops = statistics.median(x[0] for x in res[ref])
    print('%-9s %12s %12s %12s %8s %10s' % ('row', 'IOPS median', 'IOPS best', 'CPU s/GiB',
                                           'scrapes', 'vs ' + ref))
    for r in rows:
        iops = [x[0] for x in res[r]]
        med = statistics.median(iops)
        print('%-9s %12.0f %12.0f %12.2f %8d %+9.1f%%' % (
            r, med, max(iops), statistics.median(x[1] for x in res[r]),
            sum(x[2] for x in res[r]), (med / ref_iops - 1) * 100))
    # On a shared machine the load drifts between rounds more than the
    # rows differ: each row against the reference of its own round, and
    # the median of those ratios, cancel the drift that medians of whole
    # rows keep.
    print('per round (IOPS): ' + '; '.join(
        '%s %s' % (r, ' '.join('%.0f' % x[0] for x in res[r])) for r in rows))
    for r in rows:
        if r == ref:
            continue
        iops = [a[0] / b[0] - 1 for a, b in zip(res[r], res[ref]) if b[0]]
        cpu = [a[1] / b[1] - 1 for a, b in zip(res[r], res[ref]) if b[1]]
        print('%s vs %s, paired by round: IOPS %+.1f%% (median; min %+.1f%%, max %+.1f%%), '
              'CPU s/GiB %+.1f%%' % (r, ref, statistics.median(iops) * 100, min(iops) * 100,
                                     max(iops) * 100, statistics.median(cpu) * 100))
    if COUNTING:
        tot = [a + b for a, b in COUNTING]
        print('profiled: counting is %.2f%% of the server CPU samples (median of %d; '
              'bd_io_stats_* %.2f%%, clock reads %.2f%%)'
              % (statistics.median(tot), len(tot), statistics.median(a for a, _ in COUNTING),
                 statistics.median(b for _, b in COUNTING)))
    return 0


def _size():
    from bench import size_bytes
    return size_bytes(SIZE)


if __name__ == '__main__':
    sys.exit(main())
