#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Side-by-side NBD server benchmark: blockd vs qemu-storage-daemon, qemu-nbd
and nbdkit (file plugin), same raw image, same unix-socket transport, each
server with its defaults made comparable (writeback cache, thread-pool AIO).

Workloads: fio nbd engine 4k randread/randwrite at iodepth 32, 1 MiB
sequential read/write, and nbdcopy of the whole image to null:. For each:
the figure, the ratio to the best peer (blockd is never its own peer), and
the server's CPU seconds (utime+stime from /proc/PID/stat) per GiB moved.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = int(os.environ.get('RUNTIME', '10'))
SIZE = os.environ.get('SIZE', '1G')
CLK_TCK = os.sysconf('SC_CLK_TCK')
GiB = 1 << 30


def size_bytes(s):
    mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)


def stop_server(proc):
    """Terminate a server started by the bench, killing it after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    # fields[0] is state (field 3); utime/stime are fields 14/15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_socket(path, proc, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return True
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    return False


def server_cmd(name, img, sock):
    qsd_style = ['--blockdev', 'driver=file,node-name=f,filename=%s,aio=threads,cache.direct=off' % img,
                 '--blockdev', 'driver=raw,node-name=r,file=f',
                 '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                 '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=on']
    if name == 'blockd':
        exe = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
        return [exe] + qsd_style
    if name == 'qemu-storage-daemon':
        return ['qemu-storage-daemon'] + qsd_style
    if name == 'qemu-nbd':
        return ['qemu-nbd', '-f', 'raw', '-k', sock, '-x', 'disk', '--cache=writeback',
                '--aio=threads', '-e', '16', '-t', img]
    if name == 'nbdkit':
        return ['nbdkit', '-f', '-U', sock, '--exportname=disk', 'file', 'file=%s' % img]
    raise ValueError(name)


WORKLOADS = [
    # name, unit, fio args (None = nbdcopy)
    ('4k randread qd32', 'IOPS', ['--rw=randread', '--bs=4k', '--iodepth=32']),
    ('4k randwrite qd32', 'IOPS', ['--rw=randwrite', '--bs=4k', '--iodepth=32']),
    ('1M seq read qd8', 'MiB/s', ['--rw=read', '--bs=1M', '--iodepth=8']),
    ('1M seq write qd8', 'MiB/s', ['--rw=write', '--bs=1M', '--iodepth=8']),
    ('nbdcopy to null:', 'MiB/s', None),
]


def fio_has_nbd():
    if not shutil.which('fio'):
        return False
    p = subprocess.run(['fio', '--enghelp=nbd'], capture_output=True, text=True)
    return p.returncode == 0 and 'uri' in p.stdout


def run_workload(uri, fio_args):
    """Returns (figure, bytes moved)."""
    fig, moved, _ = run_workload_cpu(uri, fio_args)
    return fig, moved


def run_workload_cpu(uri, fio_args):
    """Returns (figure, bytes moved, client CPU in % of one core): the
    client's share shows when a row is bound by the client, not the
    server (nbdcopy's is not measured: None)."""
    if fio_args is None:
        t0 = time.monotonic()
        subprocess.run(['nbdcopy', uri, 'null:'], check=True, capture_output=True)
        dt = time.monotonic() - t0
        total = size_bytes(SIZE)
        return total / dt / (1 << 20), total, None
    cmd = ['fio', '--name=bench', '--ioengine=nbd', '--uri=' + uri, '--size=' + SIZE,
           '--time_based', '--runtime=%d' % RUNTIME, '--ramp_time=1', '--numjobs=1',
           '--output-format=json'] + fio_args
    p = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=RUNTIME + 120)
    job = json.loads(p.stdout[p.stdout.index('{'):])['jobs'][0]
    rw = 'read' if job['read']['io_bytes'] else 'write'
    st = job[rw]
    cpu = job['usr_cpu'] + job['sys_cpu']
    if '4k' in fio_args[1]:
        return st['iops'], st['io_bytes'], cpu
    return st['bw_bytes'] / (1 << 20), st['io_bytes'], cpu


def warm(path):
    """Same page-cache state for every server: the image read in first,
    and no write-back of an earlier row's dirty pages still under way
    (it would slow whichever server runs next)."""
    os.sync()
    with open(path, 'rb') as f:
        while f.read(1 << 24):
            pass


def run_nbd_row(name, cmd, img, sock, workdir, fio_args):
    """Start server `name` as `cmd` (serving export 'disk' on unix socket
    `sock`) on a warmed `img`, run fio's nbd engine with `fio_args`, stop
    it.  Returns {'figure', 'cpu_per_gib', 'client_cpu'} or {'error'}."""
    warm(img)
    if os.path.exists(sock):
        os.unlink(sock)
    if not shutil.which(cmd[0]) and not os.access(cmd[0], os.X_OK):
        return {'error': '%s not available' % cmd[0]}
    errlog = open(os.path.join(workdir, name + '.stderr'), 'a')
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    try:
        if not wait_socket(sock, proc):
            return {'error': 'did not start (see %s)' % errlog.name}
        c0 = cpu_seconds(proc.pid)
        try:
            fig, moved, client_cpu = run_workload_cpu(
                'nbd+unix:///disk?socket=%s' % sock, fio_args)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as e:
            return {'error': str(e).splitlines()[0][:60]}
        cpu = cpu_seconds(proc.pid) - c0
        return {'figure': fig, 'cpu_per_gib': cpu / (moved / GiB) if moved else 0,
                'client_cpu': client_cpu}
    finally:
        stop_server(proc)
        errlog.close()


def make_image(path):
    n = size_bytes(SIZE)
    with open(path, 'wb') as f:
        chunk = os.urandom(1 << 20)
        for _ in range(n >> 20):
            f.write(chunk)
    os.sync()


def bench_server(name, img, workdir, use_fio):
    sock = os.path.join(workdir, name + '.sock')
    if os.path.exists(sock):
        os.unlink(sock)    # left by an earlier run in BENCH_DIR (nbdkit refuses it)
    cmd = server_cmd(name, img, sock)
    if not shutil.which(cmd[0]) and not os.access(cmd[0], os.X_OK):
        return {'error': '%s not available' % cmd[0]}
    errlog = open(os.path.join(workdir, name + '.stderr'), 'w')
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    results = {}
    try:
        if not wait_socket(sock, proc):
            errlog.flush()
            with open(errlog.name) as f:
                msg = f.read().strip().splitlines()
            return {'error': 'did not start: %s' % (msg[0] if msg else 'no output')}
        uri = 'nbd+unix:///disk?socket=%s' % sock
        for wname, unit, fio_args in WORKLOADS:
            if fio_args is not None and not use_fio:
                continue
            c0 = cpu_seconds(proc.pid)
            try:
                fig, moved = run_workload(uri, fio_args)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError) as e:
                results[wname] = {'error': str(e).splitlines()[0][:80]}
                if proc.poll() is not None:
                    break
                continue
            cpu = cpu_seconds(proc.pid) - c0
            results[wname] = {'figure': fig, 'cpu_per_gib': cpu / (moved / GiB) if moved else 0}
    finally:
        stop_server(proc)
        errlog.close()
    return results


def main():
    servers = os.environ.get('SERVERS', 'blockd qemu-storage-daemon qemu-nbd nbdkit').split()
    use_fio = fio_has_nbd()
    workdir = os.environ.get('BENCH_DIR') or tempfile.mkdtemp(prefix='blockd-bench-')
    os.makedirs(workdir, exist_ok=True)
    img = os.path.join(workdir, 'bench.raw')
    print('bench: %s raw image %s, unix socket, fio runtime %ds%s' %
          (SIZE, img, RUNTIME, '' if use_fio else ' (fio nbd engine absent: nbdcopy only)'))
    if not os.path.exists(img) or os.path.getsize(img) != size_bytes(SIZE):
        make_image(img)
    all_results = {}
    for s in servers:
        print('running %s ...' % s, flush=True)
        all_results[s] = bench_server(s, img, workdir, use_fio)
        if 'error' in all_results[s]:
            print('  %s: %s' % (s, all_results[s]['error']), flush=True)

    print()
    print('%-20s %-22s %12s %6s %12s %10s' % ('workload', 'server', 'figure', 'unit', 'vs best peer',
                                               'CPU s/GiB'))
    for wname, unit, fio_args in WORKLOADS:
        if fio_args is not None and not use_fio:
            continue
        peers = [all_results[s][wname]['figure'] for s in servers
                 if s != 'blockd' and 'figure' in all_results[s].get(wname, {})]
        best = max(peers) if peers else None
        for s in servers:
            r = all_results[s].get(wname) or {'error': all_results[s].get('error', 'not run')}
            if 'figure' not in r:
                print('%-20s %-22s %12s %6s %12s %10s' % (wname, s, 'n/a', unit, '-',
                                                          r.get('error', '')[:40]))
                continue
            ratio = '%.2fx' % (r['figure'] / best) if best else '-'
            print('%-20s %-22s %12.0f %6s %12s %10.2f' % (wname, s, r['figure'], unit, ratio,
                                                          r['cpu_per_gib']))
    if not os.environ.get('BENCH_DIR'):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
