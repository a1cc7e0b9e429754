#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Soak test (issue 20): long mixed load on a qcow2 image with graph
changes, jobs and SIGKILLs, checked against a reference.  Not in CI.

    tests/soak/soak.py [--minutes 30] [--kill-every 180] [--seed N]

One daemon (BLOCKD, default build/daemon/blockd) exports a 256 MiB qcow2
node over NBD and FUSE.  Two writers run all the time: one through NBD
(libnbd), one through the FUSE-mounted file, each on its own half of the
disk, each write followed by a flush.  A write counts once its flush
returned: then it goes into an in-memory reference of the disk.  Every
few writes each writer reads a written range back and compares it with
the reference.

A controller meanwhile, every few seconds, does one of:
- blockdev-reopen of the qcow2 node (discard=unmap <-> ignore);
- bitmap operations (add, clear, disable/enable, merge, remove);
- a full backup, or an incremental one on the 'inc' bitmap into an
  overlay of the previous backup (writers paused at the start, so that
  the point in time is known; the finished backup is compared with the
  reference as it was then, and checked with qemu-img check);
- a mirror to a new image, then either cancelled when ready (the target
  compared with the reference at the cancel) or completed, so that the
  exports go on on the new image;
- every --kill-every seconds, a SIGKILL of the daemon (sometimes in the
  middle of a backup or mirror), and a restart on the current image.
  A write in flight at the kill may have landed or not: each 4 KiB of
  it must read back as the old or the new data.  Persistent bitmaps
  come back inconsistent and are removed; the next backup is full.

At the end: the daemon stops cleanly, qemu-img check on the image, and
qemu-img compare with the reference.  RSS is sampled every 5 s; the
summary shows it per daemon lifetime.  Exit status 0 only with zero data
differences and clean checks.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
import blockd_test as bt  # noqa: E402
import nbd  # noqa: E402

MiB = 1 << 20
SIZE = 256 * MiB
SECTOR = 4096


class Failure(Exception):
    pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.differences = []
        self.rss = []           # per lifetime: [(t, kib), ...]

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def difference(self, what):
        with self.lock:
            self.differences.append(what)
        print('DIFFERENCE:', what, flush=True)


class Gate:
    """Lets the controller stop the writers between two writes."""

    def __init__(self, writers):
        self.cond = threading.Condition()
        self.paused = False
        self.idle = 0
        self.writers = writers

    def checkpoint(self):
        with self.cond:
            if not self.paused:
                return
            self.idle += 1
            self.cond.notify_all()
            while self.paused:
                self.cond.wait()
            self.idle -= 1

    def pause(self):
        with self.cond:
            self.paused = True
            while self.idle < self.writers:
                self.cond.wait(0.5)

    def resume(self):
        with self.cond:
            self.paused = False
            self.cond.notify_all()


class Writer(threading.Thread):
    """Writes, flushes and verifies one half of the disk through one
    client.  After a kill it waits for the controller's restart and
    settles the write that was in flight."""

    def __init__(self, soak, name, start, end, rng):
        super().__init__(name=name, daemon=True)
        self.soak, self.start_off, self.end_off, self.rng = soak, start, end, rng
        self.pending = None          # (offset, new data) of the write in flight
        self.written = []            # ranges written at least once
        self.error = None

    # the client: connect/write/flush/read/close
    def run(self):
        try:
            self.loop()
        except Exception as e:          # reported by the controller
            self.error = e
            self.soak.stop.set()

    def loop(self):
        s = self.soak
        generation = -1
        while not s.stop.is_set():
            s.gate.checkpoint()
            if generation != s.generation:
                generation = s.generation
                self.close()
                self.connect()
                if self.pending:
                    self.settle()
            if self.pending:
                # The daemon died under this write: wait for the restart
                # (the controller pauses us) before anything else.
                time.sleep(0.05)
                continue
            off = self.start_off + self.rng.randrange(
                (self.end_off - self.start_off) // SECTOR - 64) * SECTOR
            length = self.rng.choice([1, 1, 2, 4, 16, 64]) * SECTOR
            data = os.urandom(length)
            self.pending = (off, data)
            try:
                self.write(off, data)
                self.flush()
            except (OSError, nbd.Error):
                if not s.killing.is_set():
                    raise
                continue
            s.ref[off:off + length] = data
            self.pending = None
            self.written.append((off, length))
            s.stats.add(self.name + ' writes')
            if len(self.written) % 16 == 0:
                self.verify_some()

    def verify_some(self):
        s = self.soak
        off, length = self.rng.choice(self.written)
        try:
            got = self.read(off, length)
        except (OSError, nbd.Error):
            if not s.killing.is_set():
                raise
            return
        if got != bytes(s.ref[off:off + length]):
            s.stats.difference('%s: read-back at %d+%d differs from the reference'
                               % (self.name, off, length))
        s.stats.add(self.name + ' verified')

    def settle(self):
        """Each sector of the write in flight at the kill: old or new."""
        s = self.soak
        off, data = self.pending
        got = self.read(off, len(data))
        for i in range(0, len(data), SECTOR):
            sec = got[i:i + SECTOR]
            if sec == data[i:i + SECTOR]:
                s.ref[off + i:off + i + SECTOR] = sec
                s.stats.add('in-flight sectors landed')
            elif sec != bytes(s.ref[off + i:off + i + SECTOR]):
                s.stats.difference('%s: sector %d of the write in flight at the kill '
                                   'is neither old nor new' % (self.name, off + i))
            else:
                s.stats.add('in-flight sectors lost')
        self.pending = None


class NbdWriter(Writer):
    h = None

    def connect(self):
        self.h = nbd.NBD()
        self.h.connect_uri(self.soak.d.uri('disk'))

    def close(self):
        if self.h:
            try:
                self.h.shutdown()
            except nbd.Error:
                pass
            self.h = None

    def write(self, off, data):
        self.h.pwrite(data, off)

    def flush(self):
        self.h.flush()

    def read(self, off, length):
        return self.h.pread(length, off)


class FuseWriter(Writer):
    fd = None

    def connect(self):
        self.fd = os.open(self.soak.mountpoint, os.O_RDWR)

    def close(self):
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def write(self, off, data):
        if os.pwrite(self.fd, data, off) != len(data):
            raise OSError('short write')

    def flush(self):
        os.fsync(self.fd)

    def read(self, off, length):
        return os.pread(self.fd, length, off)


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = tempfile.mkdtemp(prefix='blockd-soak-')
        self.mountpoint = os.path.join(self.dir, 'fuse.img')
        open(self.mountpoint, 'w').close()
        self.ref = bytearray(SIZE)
        self.stats = Stats()
        self.stop = threading.Event()
        self.killing = threading.Event()
        self.generation = 0
        self.serial = 0
        self.gate = Gate(2)
        self.image = self.new_image('disk0.qcow2')
        self.node = 'disk'
        self.backups = []            # chain of the last full + incrementals
        self.inc_ok = False          # 'inc' tracks everything since backups[-1]
        self.bitmaps = set()
        self.d = None

    def path(self, name):
        return os.path.join(self.dir, name)

    def new_image(self, name, backing=None):
        p = self.path(name)
        args = ['qemu-img', 'create', '-q', '-f', 'qcow2']
        if backing:
            args += ['-b', backing, '-F', 'qcow2']
        bt.run(args + [p, str(SIZE)])
        return p

    def name(self, prefix):
        self.serial += 1
        return '%s%d' % (prefix, self.serial)

    # --- the daemon ---
    def start_daemon(self):
        d = bt.Daemon(tmpdir=self.dir, args=[
            '--blockdev', 'driver=file,node-name=%s-file,filename=%s' % (self.node, self.image),
            '--blockdev', 'driver=qcow2,node-name=%s,file=%s-file,discard=unmap'
            % (self.node, self.node),
            '--nbd-server', 'addr.type=unix,addr.path=%s' % self.path('nbd.sock'),
            '--export', 'type=nbd,id=nbd0,node-name=%s,name=disk,writable=on' % self.node,
            '--export', 'type=fuse,id=fuse0,node-name=%s,mountpoint=%s,writable=on'
            % (self.node, self.mountpoint),
        ], wait=[self.path('nbd.sock')])
        d.stderr_path = self.path('daemon-%d.stderr' % self.generation)
        d.start()
        bt.wait_for(lambda: bt.is_mounted(self.mountpoint), what='FUSE mount')
        self.d = d
        self.q = d.qmp()
        self.stats.rss.append([])
        self.lifetime_start = time.monotonic()

    def sample_rss(self):
        try:
            with open('/proc/%d/status' % self.d.proc.pid) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        self.stats.rss[-1].append(
                            (round(time.monotonic() - self.lifetime_start), int(line.split()[1])))
        except OSError:
            pass

    def kill_and_restart(self, during=None):
        self.killing.set()
        self.d.signal(signal.SIGKILL)
        self.d.proc.wait(30)
        bt.force_unmount(self.mountpoint)
        self.q.close()
        self.stats.add('kills' + (' during ' + during if during else ''))
        for p in ('qmp.sock', 'nbd.sock'):
            if os.path.exists(self.path(p)):
                os.unlink(self.path(p))
        # Both writers must have noticed before the restart.
        self.gate.pause()
        self.generation += 1
        self.start_daemon()
        self.killing.clear()
        self.gate.resume()
        # Persistent bitmaps come back inconsistent after a kill.
        for b in self.query_bitmaps():
            if not b.get('inconsistent'):
                raise Failure('bitmap %s consistent after a SIGKILL' % b['name'])
            self.q.execute('block-dirty-bitmap-remove', {'node': self.node, 'name': b['name']})
        self.bitmaps.clear()
        self.inc_ok = False

    def query_bitmaps(self):
        for n in self.q.execute('query-named-block-nodes', {'flat': True}):
            if n['node-name'] == self.node:
                return n.get('dirty-bitmaps', [])
        return []

    # --- checks ---
    def snapshot_ref(self, name):
        p = self.path(name)
        with open(p, 'wb') as f:
            f.write(self.ref)
        return p

    def compare(self, image, ref, what):
        p = bt.run(['qemu-img', 'compare', '-U', '-F', 'raw', image, ref], check=False,
                   timeout=300)
        if p.returncode != 0:
            self.stats.difference('%s: qemu-img compare: %s %s' % (what, p.stdout, p.stderr))
        p = bt.run(['qemu-img', 'check', '-U', image], check=False, timeout=300)
        if p.returncode != 0:
            self.stats.difference('%s: qemu-img check: %s %s' % (what, p.stdout, p.stderr))

    # --- the controller's operations ---
    def op_reopen(self):
        self.discard = 'ignore' if getattr(self, 'discard', 'unmap') == 'unmap' else 'unmap'
        self.q.execute('blockdev-reopen', {'options': [{
            'driver': 'qcow2', 'node-name': self.node, 'file': self.node + '-file',
            'discard': self.discard}]})
        self.stats.add('reopens')

    def op_bitmaps(self):
        choice = self.rng.choice(['add', 'clear', 'toggle', 'merge', 'remove'])
        others = sorted(self.bitmaps - {'inc'})
        if choice == 'add' or not others:
            name = self.name('b')
            self.q.execute('block-dirty-bitmap-add', {'node': self.node, 'name': name,
                                                      'persistent': self.rng.random() < 0.5})
            self.bitmaps.add(name)
        elif choice == 'clear':
            self.q.execute('block-dirty-bitmap-clear', {'node': self.node,
                                                        'name': self.rng.choice(others)})
        elif choice == 'toggle':
            b = self.rng.choice(others)
            self.q.execute('block-dirty-bitmap-disable', {'node': self.node, 'name': b})
            self.q.execute('block-dirty-bitmap-enable', {'node': self.node, 'name': b})
        elif choice == 'merge' and 'inc' in self.bitmaps:
            self.q.execute('block-dirty-bitmap-merge', {'node': self.node,
                                                        'target': self.rng.choice(others),
                                                        'bitmaps': ['inc']})
        else:
            b = self.rng.choice(others)
            self.q.execute('block-dirty-bitmap-remove', {'node': self.node, 'name': b})
            self.bitmaps.discard(b)
        self.stats.add('bitmap ' + choice)

    def op_backup(self, kill=False):
        incremental = self.inc_ok and self.backups and self.rng.random() < 0.6
        tname = self.name('bk')
        target = self.new_image(tname + '.qcow2',
                                backing=self.backups[-1] if incremental else None)
        self.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': tname, 'backing': None,
                                        'file': {'driver': 'file', 'filename': target}})
        self.gate.pause()
        try:
            ref = self.snapshot_ref(tname + '.ref')
            actions = []
            if incremental:
                actions.append({'type': 'blockdev-backup', 'data': {
                    'job-id': tname, 'device': self.node, 'target': tname,
                    'sync': 'incremental', 'bitmap': 'inc'}})
            else:
                if 'inc' in self.bitmaps:
                    actions.append({'type': 'block-dirty-bitmap-clear',
                                    'data': {'node': self.node, 'name': 'inc'}})
                else:
                    actions.append({'type': 'block-dirty-bitmap-add', 'data': {
                        'node': self.node, 'name': 'inc', 'persistent': True}})
                actions.append({'type': 'blockdev-backup', 'data': {
                    'job-id': tname, 'device': self.node, 'target': tname, 'sync': 'full'}})
            self.q.execute('transaction', {'actions': actions})
            self.bitmaps.add('inc')
        finally:
            self.gate.resume()
        if kill:
            time.sleep(self.rng.random() * 0.5)
            self.kill_and_restart('backup')
            os.unlink(target)
            return
        r = self.q.run_job(tname, auto_dismiss=True, wait=300)
        if r.error:
            raise Failure('backup %s: %s' % (tname, r.error))
        self.q.execute('blockdev-del', {'node-name': tname})
        self.compare(target, ref, 'backup ' + tname)
        os.unlink(ref)
        if not incremental:
            for old in self.backups:     # a new chain starts: the old one goes
                os.unlink(old)
        self.backups = self.backups + [target] if incremental else [target]
        self.inc_ok = True
        self.stats.add('backups incremental' if incremental else 'backups full')

    def op_mirror(self, kill=False):
        tname = self.name('m')
        target = self.new_image(tname + '.qcow2')
        self.q.execute('blockdev-add', {'driver': 'file', 'node-name': tname + '-file',
                                        'filename': target})
        self.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': tname,
                                        'file': tname + '-file', 'discard': 'unmap'})
        self.q.execute('blockdev-mirror', {'job-id': tname, 'device': self.node,
                                           'target': tname, 'sync': 'full',
                                           'auto-dismiss': False})
        if kill:
            time.sleep(self.rng.random() * 0.5)
            self.kill_and_restart('mirror')
            os.unlink(target)
            return
        self.q.wait_job_status(tname, 'ready', timeout=300)
        if self.rng.random() < 0.5:
            self.gate.pause()
            try:
                self.q.execute('block-job-cancel', {'device': tname})
                self.q.wait_job_status(tname, 'concluded', timeout=120)
                ref = self.snapshot_ref(tname + '.ref')
            finally:
                self.gate.resume()
            self.q.execute('job-dismiss', {'id': tname})
            self.q.execute('blockdev-del', {'node-name': tname})
            self.q.execute('blockdev-del', {'node-name': tname + '-file'})
            self.compare(target, ref, 'mirror ' + tname)
            os.unlink(ref)
            os.unlink(target)
            self.stats.add('mirrors cancelled')
            return
        self.q.execute('block-job-complete', {'device': tname})
        self.q.wait_job_status(tname, 'concluded', timeout=120)
        self.q.execute('job-dismiss', {'id': tname})
        old_node, old_image = self.node, self.image
        self.node, self.image = tname, target
        self.q.execute('blockdev-del', {'node-name': old_node})
        self.q.execute('blockdev-del', {'node-name': old_node + '-file'})
        os.unlink(old_image)
        # Bitmaps stay with the old node: the next backup is full.
        self.bitmaps.clear()
        self.inc_ok = False
        self.stats.add('mirrors completed')

    # --- the run ---
    def run(self):
        self.start_daemon()
        half = SIZE // 2
        self.writers = [NbdWriter(self, 'nbd', 0, half, random.Random(self.rng.random())),
                        FuseWriter(self, 'fuse', half, SIZE, random.Random(self.rng.random()))]
        for w in self.writers:
            w.start()
        end = time.monotonic() + self.args.minutes * 60
        next_kill = time.monotonic() + self.args.kill_every if self.args.kill_every else None
        next_rss = 0
        ops = [self.op_reopen, self.op_bitmaps, self.op_bitmaps, self.op_backup,
               self.op_mirror]
        try:
            while time.monotonic() < end and not self.stop.is_set():
                now = time.monotonic()
                if now >= next_rss:
                    self.sample_rss()
                    next_rss = now + 5
                if next_kill and now >= next_kill:
                    which = self.rng.choice([None, 'backup', 'mirror'])
                    if which == 'backup':
                        self.op_backup(kill=True)
                    elif which == 'mirror':
                        self.op_mirror(kill=True)
                    else:
                        self.kill_and_restart()
                    next_kill = time.monotonic() + self.args.kill_every
                    continue
                self.rng.choice(ops)()
                self.stop.wait(self.rng.uniform(1, 4))
        finally:
            self.stop.set()
            self.gate.resume()
            for w in self.writers:
                w.join(60)
                w.close()
        for w in self.writers:
            if w.error:
                raise w.error
        self.d.stop(timeout=60)
        bt.force_unmount(self.mountpoint)
        if self.args.inject_difference:
            self.ref[SIZE // 3] ^= 0xff     # the check must see it
        self.compare(self.image, self.snapshot_ref('final.ref'), 'final image')

    def summary(self):
        rss = []
        for life in self.stats.rss:
            if life:
                kib = [k for _, k in life]
                rss.append({'seconds': life[-1][0], 'first_kib': kib[0],
                            'after_60s_kib': next((k for t, k in life if t >= 60), kib[-1]),
                            'max_kib': max(kib), 'last_kib': kib[-1],
                            # one sample a minute, to see a trend
                            'per_minute_kib': [k for t, k in life[::12]]})
        return {'minutes': self.args.minutes, 'kill_every': self.args.kill_every,
                'seed': self.args.seed, 'counts': self.stats.counts,
                'differences': len(self.stats.differences), 'rss_per_lifetime': rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--minutes', type=float, default=30)
    ap.add_argument('--kill-every', type=float, default=180,
                    help='seconds between SIGKILLs (0: none)')
    ap.add_argument('--seed', type=int, default=int(time.time()))
    ap.add_argument('--inject-difference', action='store_true',
                    help='change one byte of the reference at the end: must FAIL')
    ap.add_argument('--keep', action='store_true', help='keep the work directory')
    args = ap.parse_args()
    os.environ.setdefault('BLOCKD', os.path.join(HERE, '..', '..', 'build', 'daemon', 'blockd'))
    bt.require_tool('qemu-img')
    s = Soak(args)
    ok = False
    try:
        s.run()
        ok = not s.stats.differences
    except Exception as e:
        print('FAILED: %r' % e, flush=True)
        if s.d:
            print(s.d.stderr()[-4000:])
    finally:
        if s.d and s.d.alive():
            s.d.signal(signal.SIGKILL)
        bt.force_unmount(s.mountpoint)
        print(json.dumps(s.summary(), indent=1))
        if args.keep:
            print('work directory:', s.dir)
        else:
            shutil.rmtree(s.dir, ignore_errors=True)
    print('PASS' if ok else 'FAIL')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
