#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Render the main panels of examples/grafana-dashboard.json to a PNG
without Grafana or Prometheus: start blockd with an NBD export and the
metrics endpoint, put fio load on the export (4k random reads and writes)
and a speed-limited mirror job beside it, scrape /metrics every second,
and compute what the dashboard's queries would show (rate() of the
counters, histogram_quantile() of the latency buckets, the job's offset
over its length), drawn with matplotlib.

  scripts/render-dashboard.py [OUT.png]      (default doc/grafana-dashboard.png)
  DURATION=12 BLOCKD=build/daemon/blockd scripts/render-dashboard.py

Needs fio with the nbd engine and python3-matplotlib (apt-get install
python3-matplotlib: not in scripts/deps.sh, which CI runs, because only
this maintainer's script uses it)."""

import math
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(os.environ.get('DURATION', '12'))
MiB = 1 << 20


def get_metrics(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    out = {}
    for line in data.partition(b'\r\n\r\n')[2].decode().splitlines():
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


def pick(m, name, **labels):
    want = set(labels.items())
    return {k[1]: v for k, v in m.items() if k[0] == name and want <= k[1]}


def one(m, name, **labels):
    return sum(pick(m, name, **labels).values())


def quantile(q, buckets):
    """Prometheus' histogram_quantile over {le: cumulative count}."""
    bs = sorted(buckets.items(), key=lambda kv: float(kv[0]))
    total = bs[-1][1] if bs else 0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in bs:
        le = float(le)
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le


def wait_path(path, proc):
    for _ in range(150):
        if proc.poll() is not None:
            raise SystemExit('blockd exited: see its stderr')
        if os.path.exists(path):
            return
        time.sleep(0.1)
    raise SystemExit('%s never appeared' % path)


def collect(tmp):
    exe = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
    img = os.path.join(tmp, 'disk.raw')
    with open(img, 'wb') as f:
        f.truncate(256 * MiB)
    nbd, msock, qmp = (os.path.join(tmp, n) for n in ('nbd.sock', 'metrics.sock', 'qmp.sock'))
    cmd = [exe, '--blockdev', 'driver=file,node-name=file0,filename=%s' % img,
           '--blockdev', 'driver=raw,node-name=disk,file=file0',
           '--blockdev', 'driver=null-co,node-name=target,size=%d' % (256 * MiB),
           '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd,
           '--export', 'type=nbd,id=disk,node-name=disk,name=disk,writable=on',
           '--metrics', 'addr.type=unix,addr.path=%s' % msock,
           '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % qmp, '--monitor', 'chardev=m']
    errlog = open(os.path.join(tmp, 'blockd.stderr'), 'w')
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    fio = None
    try:
        for p in (nbd, msock, qmp):
            wait_path(p, proc)
        q = socket.socket(socket.AF_UNIX)
        q.connect(qmp)
        q.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "blockdev-backup", '
                  b'"arguments": {"job-id": "backup0", "device": "disk", "target": "target", '
                  b'"sync": "full", "speed": %d}}\n' % (256 * MiB // (DURATION + 4)))
        fio = subprocess.Popen(
            ['fio', '--name=load', '--ioengine=nbd', '--uri=nbd+unix:///disk?socket=%s' % nbd,
             '--rw=randrw', '--rwmixread=70', '--bs=4k', '--iodepth=8', '--time_based',
             '--runtime=%d' % (DURATION + 2), '--rate_iops=4000,1500'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        for _ in range(DURATION + 1):
            samples.append((time.monotonic(), get_metrics(msock)))
            time.sleep(1)
        q.close()
        return samples
    finally:
        if fio:
            fio.kill()
            fio.wait()
        proc.terminate()
        proc.wait(timeout=30)


def panels(samples):
    t0 = samples[0][0]
    xs, thr, iops, lat, job = [], {}, {}, {}, []
    for (ta, a), (tb, b) in zip(samples, samples[1:]):
        dt = tb - ta
        xs.append(tb - t0)
        for op in ('read', 'write'):
            thr.setdefault(op, []).append(
                (one(b, 'blockd_export_bytes_total', op=op) -
                 one(a, 'blockd_export_bytes_total', op=op)) / dt / MiB)
            iops.setdefault(op, []).append(
                (one(b, 'blockd_export_requests_total', op=op) -
                 one(a, 'blockd_export_requests_total', op=op)) / dt)
        name = 'blockd_export_request_duration_seconds_bucket'
        ba = {dict(k)['le']: v for k, v in pick(a, name, op='read').items()}
        bb = {dict(k)['le']: v for k, v in pick(b, name, op='read').items()}
        delta = {le: bb[le] - ba.get(le, 0) for le in bb}
        for qv in (0.5, 0.9, 0.99):
            lat.setdefault(qv, []).append(quantile(qv, delta) * 1e6)
        off = one(b, 'blockd_job_offset_bytes')
        length = one(b, 'blockd_job_length_bytes')
        job.append(100.0 * off / max(length, 1) if length else math.nan)
    return xs, thr, iops, lat, job


def render(data, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    xs, thr, iops, lat, job = data
    fig, ax = plt.subplots(2, 2, figsize=(10, 6), dpi=80)
    fig.suptitle('blockd - examples/grafana-dashboard.json (rendered from live scrapes)')
    for op, ys in thr.items():
        ax[0][0].plot(xs, ys, label='disk %s' % op)
    ax[0][0].set_title('Throughput per export (MiB/s)')
    for op, ys in iops.items():
        ax[0][1].plot(xs, ys, label='disk %s' % op)
    ax[0][1].set_title('IOPS per export')
    for qv, ys in lat.items():
        ax[1][0].plot(xs, ys, label='p%g' % (qv * 100))
    ax[1][0].set_title('Read latency percentiles per export (us)')
    ax[1][1].plot(xs, job, label='backup0')
    ax[1][1].set_ylim(0, 100)
    ax[1][1].set_title('Job progress (%)')
    for a in ax.flat:
        a.legend(loc='best', fontsize='small')
        a.grid(True, alpha=0.3)
        a.set_xlabel('seconds')
        a.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out)
    print('wrote %s' % out)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, 'doc',
                                                             'grafana-dashboard.png')
    with tempfile.TemporaryDirectory(prefix='blockd-dash-') as tmp:
        samples = collect(tmp)
    render(panels(samples), out)


if __name__ == '__main__':
    main()
