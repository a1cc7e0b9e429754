#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fleecing under a writer: blockd vs qemu-storage-daemon.

The source is a fully written qcow2 image (SIZE, 64 KiB clusters) in a
temporary directory on the same disk as the fleecing targets.  A writer
(fio nbd engine, 4k random writes at iodepth 32) writes to an NBD export
of it, and a full pull of the point-in-time view runs with
`nbdcopy URI null:` while the writer keeps writing.  Three set-ups, each
on a fresh daemon:

  blockd session  writer's export on the source node 'src'; once it runs,
                  x-blockd-backup-begin {node: src, id: b1} (automatic
                  qcow2 fleecing target, made in TMPDIR = the bench
                  directory; the writer's export moves onto the
                  copy-before-write filter), pull nbd+unix:///b1,
                  x-blockd-backup-end.
  blockd manual   QEMU 7.2's manual fleecing, the same commands as the
  qsd manual      qsd row: blockdev-add a qcow2 target (qemu-img create),
                  copy-before-write {file: src, target: fleece},
                  snapshot-access {file: cbw}; the writer's export is on
                  the cbw node (an export can't be moved in QEMU), the
                  view's read-only; pull, stop the writer, tear down.

Figures per set-up, median of ROUNDS runs (interleaved):
  IOPS alone    the writer alone on an export of the plain source
                (--seconds, RUNTIME, after 1 s of ramp), same daemon process
  IOPS pull     the writer's writes per second while nbdcopy ran (fio
                iops log, 100 ms windows).  The writer is running when
                the pull starts: in the session row it ran 1 s on the
                source before backup-begin; in the manual rows it starts
                on the cbw node after the view exists, and the pull
                starts 0.2 s after its first writes reach the source
                (so the filter has copied a little before the pull)
  pull s, MiB/s nbdcopy's wall time and SIZE / that time
  cpu s         the daemon's CPU seconds while nbdcopy ran
  set-up ms     making the view: backup-begin, or the three blockdev-add
                and two block-export-add of the manual rows
Ratios: blockd's figure / qemu-storage-daemon's (IOPS and MiB/s: > 1 is
better for blockd; pull s: < 1 is better).

  /usr/bin/python3 bench/fleecing_bench.py [--size 256M] [--seconds 5] [--rounds 3]
  SIZE=1G RUNTIME=10 ROUNDS=3 BLOCKD=path BENCH_DIR=dir ...   (the same)
Not a test; not run by scripts/test.sh.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
from blockd_test import QMP, QMPError, del_export  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (sizes, CPU accounting, sockets, fio check)

BLOCKD = os.environ.get('BLOCKD') or os.path.join(REPO, 'build', 'daemon', 'blockd')
SETUPS = [('blockd session', 'blockd', 'session'),
          ('blockd manual', 'blockd', 'manual'),
          ('qsd manual', 'qemu-storage-daemon', 'manual')]
FIO = ['--rw=randwrite', '--bs=4k', '--iodepth=32', '--numjobs=1']
LOG_MS = 100


def sh(*argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def make_source(path, size):
    """A qcow2 image with every cluster written (64 MiB chunks, varying
    patterns, none zero)."""
    sh('qemu-img', 'create', '-q', '-f', 'qcow2', path, str(size))
    chunk = 64 << 20
    cmds = []
    for i, off in enumerate(range(0, size, chunk)):
        cmds += ['-c', 'write -q -P 0x%x %d %d' % (0x11 + i % 0xe0, off, min(chunk, size - off))]
    sh('qemu-io', '-f', 'qcow2', *cmds, path)
    os.sync()


class Daemon:
    def __init__(self, exe, src, d):
        self.d = d
        self.sock = os.path.join(d, 'nbd.sock')
        self.qmp_sock = os.path.join(d, 'qmp.sock')
        for p in (self.sock, self.qmp_sock):
            if os.path.exists(p):
                os.unlink(p)
        blk = {'driver': 'qcow2', 'node-name': 'src',
               'file': {'driver': 'file', 'node-name': 'src-file', 'filename': src,
                        'aio': 'threads'}}
        cmd = [exe, '--blockdev', json.dumps(blk),
               '--nbd-server', 'addr.type=unix,addr.path=%s' % self.sock,
               '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % self.qmp_sock,
               '--monitor', 'chardev=m']
        self.errlog = open(os.path.join(d, 'daemon.stderr'), 'w')
        env = dict(os.environ, TMPDIR=d)    # blockd's automatic target: same disk
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.errlog,
                                     stderr=self.errlog, env=env)
        if not (bench.wait_socket(self.sock, self.proc)
                and bench.wait_socket(self.qmp_sock, self.proc)):
            raise RuntimeError('did not start: %s' % self.stderr())
        self.q = QMP(self.qmp_sock, timeout=120)

    def stderr(self):
        self.errlog.flush()
        with open(self.errlog.name) as f:
            lines = f.read().strip().splitlines()
        return lines[-1] if lines else 'no output'

    def uri(self, name):
        return 'nbd+unix:///%s?socket=%s' % (name, self.sock)

    def export(self, id, node, name, writable):
        self.q.execute('block-export-add', {'type': 'nbd', 'id': id, 'node-name': node,
                                            'name': name, 'writable': writable})

    def cpu(self):
        return bench.cpu_seconds(self.proc.pid)

    def stop(self):
        try:
            self.q.execute('quit')
            self.proc.wait(30)
        except (QMPError, OSError, EOFError, subprocess.TimeoutExpired):
            pass
        self.q.close()
        bench.stop_server(self.proc)
        self.errlog.close()


def fio_alone(uri, size, seconds):
    cmd = ['fio', '--name=w', '--ioengine=nbd', '--uri=' + uri, '--size=%d' % size,
           '--time_based', '--runtime=%d' % seconds, '--ramp_time=1',
           '--output-format=json'] + FIO
    p = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 120)
    return json.loads(p.stdout[p.stdout.index('{'):])['jobs'][0]['write']['iops']


class Writer:
    """fio running until stopped, logging IOPS every LOG_MS with Unix
    timestamps, so that the writes of any interval can be counted."""

    def __init__(self, uri, size, d):
        self.prefix = os.path.join(d, 'wlog')
        self.out = os.path.join(d, 'fio.json')
        cmd = ['fio', '--name=w', '--ioengine=nbd', '--uri=' + uri, '--size=%d' % size,
               '--time_based', '--runtime=3600', '--output-format=json',
               '--output=' + self.out, '--write_iops_log=' + self.prefix,
               '--log_avg_msec=%d' % LOG_MS, '--log_unix_epoch=1'] + FIO
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def stop(self):
        """Stop fio (SIGINT: it ends the job and writes its logs); returns
        [(unix ms at the window's end, IOPS in the window)]."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise RuntimeError('fio did not stop')
        log = self.prefix + '_iops.1.log'
        if not os.path.exists(log):
            raise RuntimeError('fio failed: %s' % (err.strip().splitlines() or ['?'])[-1])
        entries = []
        with open(log) as f:
            for line in f:
                parts = [x.strip() for x in line.split(',')]
                if len(parts) >= 2 and parts[0].isdigit():
                    entries.append((int(parts[0]), float(parts[1])))
        os.unlink(log)
        return entries

    def wait_running(self, watch, timeout=20):
        """Until the writer's writes reach the file `watch` (its mtime
        changes): fio takes a few hundred ms to start."""
        m0 = os.stat(watch).st_mtime_ns
        end = time.monotonic() + timeout
        while os.stat(watch).st_mtime_ns == m0:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError('fio did not start writing: %s'
                                   % (self.proc.stderr.read() if self.proc.poll() is not None
                                      else 'timeout').strip()[-80:])
            time.sleep(0.01)


def iops_between(entries, t0, t1):
    """Writes whose window ends in (t0, t1] (Unix seconds), per second of
    the part of [t0, t1] the writer was running."""
    a, b = t0 * 1000, t1 * 1000
    first = min((t for t, _ in entries), default=None)
    if first is None:
        return None
    a = max(a, first - LOG_MS)          # the writer started later than t0
    writes = sum(v * LOG_MS / 1000 for t, v in entries if a < t <= b)
    return writes / ((b - a) / 1000) if b > a else None


def pull(uri):
    t0 = time.monotonic()
    p = subprocess.run(['nbdcopy', uri, 'null:'], capture_output=True, text=True, timeout=3600)
    if p.returncode:
        raise RuntimeError('nbdcopy: %s' % (p.stderr.strip().splitlines() or ['?'])[-1])
    return time.monotonic() - t0


def run_one(exe, mode, src, d, size, seconds):
    step = 'start'
    dm = None
    res = {}
    try:
        dm = Daemon(exe, src, d)
        step = 'writer alone'
        dm.export('w', 'src', 'w', True)
        res['alone'] = fio_alone(dm.uri('w'), size, seconds)
        if mode == 'session':
            # The writer runs on the source; the session starts under it.
            w = Writer(dm.uri('w'), size, d)
            w.wait_running(src)
            time.sleep(1)
            step = 'x-blockd-backup-begin'
            ts = time.monotonic()
            dm.q.execute('x-blockd-backup-begin', {'node': 'src', 'id': 'b1'})
            setup = time.monotonic() - ts
            step = 'pull'
            c0, t0 = dm.cpu(), time.time()
            secs = pull(dm.uri('b1'))
            t1, c1 = time.time(), dm.cpu()
            entries = w.stop()
            step = 'x-blockd-backup-end'
            dm.q.execute('x-blockd-backup-end', {'id': 'b1'})
        else:
            del_export(dm.q, 'w')
            step = 'qemu-img create (target)'
            tgt = os.path.join(d, 'fleece.qcow2')
            sh('qemu-img', 'create', '-q', '-f', 'qcow2', tgt, str(size))
            step = 'blockdev-add qcow2 target'
            ts = time.monotonic()
            dm.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'fleece',
                                          'file': {'driver': 'file', 'filename': tgt}})
            step = 'blockdev-add copy-before-write'
            dm.q.execute('blockdev-add', {'driver': 'copy-before-write', 'node-name': 'cbw',
                                          'file': 'src', 'target': 'fleece'})
            step = 'blockdev-add snapshot-access'
            dm.q.execute('blockdev-add', {'driver': 'snapshot-access', 'node-name': 'acc',
                                          'file': 'cbw'})
            step = 'block-export-add'
            dm.export('w2', 'cbw', 'w2', True)
            dm.export('snap', 'acc', 'snap', False)
            setup = time.monotonic() - ts
            w = Writer(dm.uri('w2'), size, d)
            w.wait_running(src)
            time.sleep(0.2)
            step = 'pull'
            c0, t0 = dm.cpu(), time.time()
            secs = pull(dm.uri('snap'))
            t1, c1 = time.time(), dm.cpu()
            entries = w.stop()
            step = 'tear down'
            del_export(dm.q, 'snap')
            del_export(dm.q, 'w2')
            for n in ('acc', 'cbw', 'fleece'):
                dm.q.execute('blockdev-del', {'node-name': n})
            os.unlink(tgt)
        res.update({'pull_s': secs, 'during': iops_between(entries, t0, t1),
                    'cpu': c1 - c0, 'setup_ms': setup * 1000})
        return res
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError,
            QMPError, OSError, EOFError, AssertionError) as e:
        msg = str(e).strip().splitlines()
        res['error'] = '%s: %s' % (step, msg[0][:100] if msg else type(e).__name__)
        if dm is not None and dm.proc.poll() is not None:
            res['error'] += ' (daemon exited %s: %s)' % (dm.proc.returncode, dm.stderr())
        return res
    finally:
        if dm is not None:
            dm.stop()


def med(rs, key):
    v = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(v) if v else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default=os.environ.get('SIZE', '1G'))
    ap.add_argument('--seconds', type=int, default=int(os.environ.get('RUNTIME', '10')))
    ap.add_argument('--rounds', type=int, default=int(os.environ.get('ROUNDS', '3')))
    args = ap.parse_args()
    size = bench.size_bytes(args.size)
    if not bench.fio_has_nbd():
        print('fleecing_bench: fio with the nbd engine is needed')
        return 1
    for tool in ('nbdcopy', 'qemu-img', 'qemu-io', 'qemu-storage-daemon'):
        if not shutil.which(tool):
            print('fleecing_bench: %s is needed' % tool)
            return 1
    d = tempfile.mkdtemp(prefix='blockd-fleecebench-', dir=os.environ.get('BENCH_DIR'))
    try:
        src = os.path.join(d, 'src.qcow2')
        make_source(src, size)
        print('fleecing bench: %s qcow2 source (fully written) in %s; writer 4k randwrite '
              'qd32 (fio nbd), alone %d s; pull nbdcopy to null:; median of %d runs'
              % (args.size, d, args.seconds, args.rounds), flush=True)
        runs = {}
        for rnd in range(args.rounds):
            for label, daemon, mode in SETUPS:
                exe = BLOCKD if daemon == 'blockd' else daemon
                print('round %d: %s ...' % (rnd + 1, label), flush=True)
                r = run_one(exe, mode, src, d, size, args.seconds)
                if 'error' in r:
                    print('  %s: %s' % (label, r['error']), flush=True)
                runs.setdefault(label, []).append(r)
        mib = size / (1 << 20)
        res = {}
        for label, _, _ in SETUPS:
            rs = runs[label]
            ok = [r for r in rs if 'error' not in r]
            pull_s = med(ok, 'pull_s')
            res[label] = {'alone': med(rs, 'alone'), 'during': med(ok, 'during'),
                          'pull_s': pull_s, 'mibs': mib / pull_s if pull_s else None,
                          'cpu': med(ok, 'cpu'), 'setup_ms': med(ok, 'setup_ms'),
                          'n': len(ok),
                          'error': next((r['error'] for r in rs if 'error' in r), None)}
        fmt = '%-15s %10s %10s %10s %8s %8s %8s %9s %5s'
        print()
        print(fmt % ('set-up', 'IOPS alone', 'IOPS pull', 'pull/alone', 'pull s', 'MiB/s',
                     'cpu s', 'set-up ms', 'runs'))

        def f(v, spec):
            return spec % v if v is not None else 'n/a'
        for label, _, _ in SETUPS:
            r = res[label]
            ratio = r['during'] / r['alone'] if r['during'] and r['alone'] else None
            print(fmt % (label, f(r['alone'], '%.0f'), f(r['during'], '%.0f'),
                         f(ratio, '%.2f'), f(r['pull_s'], '%.2f'), f(r['mibs'], '%.0f'),
                         f(r['cpu'], '%.2f'), f(r['setup_ms'], '%.1f'),
                         '%d/%d' % (r['n'], args.rounds)))
        q = res['qsd manual']
        print()
        print('blockd / qsd    %10s %10s %10s %8s %8s' % ('IOPS alone', 'IOPS pull', '',
                                                          'pull s', 'MiB/s'))
        for label in ('blockd session', 'blockd manual'):
            r = res[label]

            def rat(k):
                return f(r[k] / q[k] if r[k] and q[k] else None, '%.2fx')
            print('%-15s %10s %10s %10s %8s %8s' % (label, rat('alone'), rat('during'), '',
                                                   rat('pull_s'), rat('mibs')))
        print()
        print('medians of %d runs per set-up, rounds interleaved (other jobs may share the '
              'machine); IOPS pull: the writer\'s writes per second while nbdcopy ran' % args.rounds)
        for label, _, _ in SETUPS:
            if res[label]['error']:
                print('%s failed: %s' % (label, res[label]['error']))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
