#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""NBD over TLS benchmark (issue 12): blockd vs qemu-storage-daemon vs
nbdkit (file plugin), side by side in one run, on the same raw image over
TCP 127.0.0.1 with X.509 TLS (client certificates required by all three:
verify-peer is on by default in QEMU's credentials, nbdkit gets
--tls-verify-peer), plus the same workloads in plaintext over TCP, so that
each server's TLS cost shows as a ratio; the issue's target is blockd's
TLS sequential read within 70% of its plaintext one.

Workloads and why these clients:
  4k random read, QD 32: a libnbd (Python binding) client keeping 32
      aio_pread requests in flight for RUNTIME seconds.  fio's nbd engine
      cannot be used: it takes a URI, and libnbd refuses URIs naming local
      files (tls-certificates=, tls-psk-file=) unless the program allows
      them, which fio does not.  qemu-img bench can do TLS but only reads
      sequentially (a fixed step).  The Python loop costs the client CPU,
      so its share is printed (client CPU %) next to the figure: when it
      nears 100% of a core the row measures the client, not the server;
      it is the same client for every server, so the side-by-side stays fair.
  1 MiB sequential read, QD 8: nbdcopy (C, libnbd) of the whole image to
      null: over one connection (--connections=1 --request-size=1M
      --requests=8), repeated for RUNTIME seconds; nbdcopy takes the TLS
      certificates from the nbds:// URI.

For each row: the figure, the ratio to the best peer (blockd is never its
own peer), the TLS/plaintext ratio of that server, and the server's CPU
seconds per GiB moved.  A server that cannot do TLS (blockd before issue 12
lands) shows its error in its rows; the others still run.
  bench/tls_bench.py                   (RUNTIME=5 SIZE=1G by default)
  SERVERS="qemu-storage-daemon nbdkit" RUNTIME=10 BLOCKD=path bench/tls_bench.py
"""

import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'bench'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
from bench import GiB, cpu_seconds, make_image, size_bytes, stop_server  # noqa: E402
from tls_env import free_port, make_pki  # noqa: E402

RUNTIME = int(os.environ.get('RUNTIME', '5'))
SIZE = os.environ.get('SIZE', '1G')
QD_4K = 32
QD_SEQ = 8

WORKLOADS = [
    # name, unit
    ('4k randread qd32', 'IOPS'),
    ('1M seq read qd8', 'MiB/s'),
]


def server_cmd(name, img, port, pki, tls):
    addr = 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d' % port
    qsd_style = ['--blockdev', 'driver=file,node-name=f,filename=%s,aio=threads,cache.direct=off' % img,
                 '--blockdev', 'driver=raw,node-name=r,file=f',
                 '--nbd-server', addr + (',tls-creds=tls0' if tls else ''),
                 '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=off']
    if tls:
        qsd_style = ['--object', 'tls-creds-x509,id=tls0,dir=%s,endpoint=server' % pki.server] + qsd_style
    if name == 'blockd':
        exe = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
        return [exe] + qsd_style
    if name == 'qemu-storage-daemon':
        return ['qemu-storage-daemon'] + qsd_style
    if name == 'nbdkit':
        cmd = ['nbdkit', '-f', '-r', '-i', '127.0.0.1', '-p', str(port), '--exportname=disk']
        if tls:
            cmd += ['--tls=require', '--tls-certificates=%s' % pki.server, '--tls-verify-peer']
        return cmd + ['file', 'file=%s' % img]
    raise ValueError(name)


def wait_port(port, proc, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        s = socket.socket()
        try:
            s.connect(('127.0.0.1', port))
            return True
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    return False


def uri(port, pki, tls):
    if tls:
        return 'nbds://127.0.0.1:%d/disk?tls-certificates=%s' % (port, pki.client)
    return 'nbd://127.0.0.1:%d/disk' % port


def randread(port, pki, tls, size):
    """4k random reads at QD_4K for RUNTIME s: (IOPS, bytes, client CPU %)."""
    import nbd
    h = nbd.NBD()
    if tls:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_certificates(pki.client)
    h.set_export_name('disk')
    h.connect_tcp('127.0.0.1', str(port))
    bs = 4096
    blocks = size // bs
    rng = random.Random(12)
    state = {'done': 0, 'inflight': 0, 'errors': 0}

    def completed(err):
        state['done'] += 1
        state['inflight'] -= 1
        if err and (err.value if hasattr(err, 'value') else err):
            state['errors'] += 1
        return 1
    bufs = [nbd.Buffer(bs) for _ in range(QD_4K)]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    end = t0 + RUNTIME
    i = 0
    try:
        while True:
            now = time.monotonic()
            if now < end:
                while state['inflight'] < QD_4K:
                    h.aio_pread(bufs[i % QD_4K], rng.randrange(blocks) * bs, completion=completed)
                    state['inflight'] += 1
                    i += 1
            elif state['inflight'] == 0:
                break
            h.poll(-1)
    finally:
        dt = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        h.shutdown()
    if state['errors']:
        raise ValueError('%d reads failed' % state['errors'])
    cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / dt * 100
    return state['done'] / dt, state['done'] * bs, cpu


def seqread(port, pki, tls, size):
    """nbdcopy to null: until RUNTIME s have passed: (MiB/s, bytes, None)."""
    t0 = time.monotonic()
    moved = 0
    while True:
        subprocess.run(['nbdcopy', '--connections=1', '--request-size=%d' % (1 << 20),
                        '--requests=%d' % QD_SEQ, uri(port, pki, tls), 'null:'],
                       check=True, capture_output=True, timeout=RUNTIME + 300)
        moved += size
        if time.monotonic() - t0 >= RUNTIME:
            break
    dt = time.monotonic() - t0
    return moved / dt / (1 << 20), moved, None


RUNNERS = {'4k randread qd32': randread, '1M seq read qd8': seqread}


def bench_server(name, img, workdir, pki, tls):
    port = free_port()
    cmd = server_cmd(name, img, port, pki, tls)
    if not shutil.which(cmd[0]) and not os.access(cmd[0], os.X_OK):
        return {'error': '%s not available' % cmd[0]}
    log = os.path.join(workdir, '%s-%s.stderr' % (name, 'tls' if tls else 'plain'))
    errlog = open(log, 'w')
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    results = {}
    size = size_bytes(SIZE)
    try:
        if not wait_port(port, proc):
            errlog.flush()
            with open(log) as f:
                msg = f.read().strip().splitlines()
            return {'error': 'did not start: %s' % (msg[0] if msg else 'no output')}
        for wname, _ in WORKLOADS:
            c0 = cpu_seconds(proc.pid)
            try:
                fig, moved, ccpu = RUNNERS[wname](port, pki, tls, size)
            except Exception as e:  # noqa: BLE001 - a server without TLS, a dead server
                results[wname] = {'error': (str(e).splitlines() or [type(e).__name__])[0][:80]}
                if proc.poll() is not None:
                    break
                continue
            cpu = cpu_seconds(proc.pid) - c0
            results[wname] = {'figure': fig, 'cpu_per_gib': cpu / (moved / GiB) if moved else 0,
                              'client_cpu': ccpu}
    finally:
        stop_server(proc)
        errlog.close()
    return results


def main():
    servers = os.environ.get('SERVERS', 'blockd qemu-storage-daemon nbdkit').split()
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-tls-bench-')
    os.makedirs(workdir, exist_ok=True)
    img = os.path.join(workdir, 'bench.raw')
    print('tls bench: %s raw image %s, TCP 127.0.0.1, X.509 TLS with client certificates, '
          'runtime %ds per row' % (SIZE, img, RUNTIME))
    if not os.path.exists(img) or os.path.getsize(img) != size_bytes(SIZE):
        make_image(img)
    pki_dir = os.path.join(workdir, 'pki')
    shutil.rmtree(pki_dir, ignore_errors=True)
    pki = make_pki(pki_dir, rogue=False)
    res = {}
    for s in servers:
        for tls in (True, False):
            print('running %s %s ...' % (s, 'TLS' if tls else 'plaintext'), flush=True)
            r = bench_server(s, img, workdir, pki, tls)
            res[(s, tls)] = r
            if 'error' in r:
                print('  %s: %s' % (s, r['error']), flush=True)

    def row(s, tls, wname):
        r = res.get((s, tls), {})
        return r.get(wname) or {'error': r.get('error', 'not run')}

    print()
    print('%-18s %-20s %-5s %11s %6s %10s %10s %10s %10s' % (
        'workload', 'server', 'mode', 'figure', 'unit', 'vs best', 'TLS/plain', 'CPU s/GiB',
        'client CPU'))
    for wname, unit in WORKLOADS:
        for tls in (True, False):
            peers = [row(s, tls, wname)['figure'] for s in servers
                     if s != 'blockd' and 'figure' in row(s, tls, wname)]
            best = max(peers) if peers else None
            for s in servers:
                r = row(s, tls, wname)
                mode = 'TLS' if tls else 'plain'
                if 'figure' not in r:
                    print('%-18s %-20s %-5s %11s %6s %10s %10s  %s' % (
                        wname, s, mode, 'n/a', unit, '-', '-', r.get('error', '')[:60]))
                    continue
                vs = '%.2fx' % (r['figure'] / best) if best else '-'
                plain = row(s, False, wname)
                ratio = '%.0f%%' % (100 * r['figure'] / plain['figure']) \
                    if tls and 'figure' in plain and plain['figure'] else '-'
                ccpu = '%.0f%%' % r['client_cpu'] if r['client_cpu'] is not None else '-'
                print('%-18s %-20s %-5s %11.0f %6s %10s %10s %10.2f %10s' % (
                    wname, s, mode, r['figure'], unit, vs, ratio, r['cpu_per_gib'], ccpu))
    b_tls, b_plain = row('blockd', True, '1M seq read qd8'), row('blockd', False, '1M seq read qd8')
    if 'blockd' in servers:
        if 'figure' in b_tls and 'figure' in b_plain and b_plain['figure']:
            pct = 100 * b_tls['figure'] / b_plain['figure']
            print('\nblockd TLS sequential read: %.0f%% of plaintext (target: at least 70%%): %s'
                  % (pct, 'OK' if pct >= 70 else 'BELOW TARGET'))
        else:
            print('\nblockd TLS sequential read: not measured (%s)'
                  % b_tls.get('error', b_plain.get('error', '?')))
    if not os.environ.get('BENCH_DIR'):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
