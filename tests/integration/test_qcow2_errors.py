#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""qcow2 after metadata I/O errors (issue 22): one EIO injected with blkdebug
(event=..., once=on) under a qcow2 node with 4 KiB clusters (512 bytes where
the refcount table must grow), for every debug event the qcow2 driver emits.  The client retries what failed, writes the
neighbouring regions, flushes and quits; then qemu-img check must be clean
and every acknowledged write must be in the file (a bytearray model of the
guest disk, compared with the image converted to raw).  Mirror and backup
to a qcow2 target that hits such an error with on-target-error=stop must,
after job-resume, leave a target equal to the source."""

import functools
import json
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
CS = 4096                      # cluster size of every image here
SIZE = 16 * MiB
L2_SPAN = CS // 8 * CS         # guest bytes one L2 table maps (2 MiB)
RETRIES = 3


def first_difference(a, b):
    for i in range(0, min(len(a), len(b)), CS):
        if a[i:i + CS] != b[i:i + CS]:
            j = next(k for k in range(i, i + CS) if a[k:k + 1] != b[k:k + 1])
            return j
    return min(len(a), len(b)) if len(a) != len(b) else None


def check_image(img, model, what='image'):
    """qemu-img check is clean and the guest content equals the model."""
    problems = []
    raw = img + '.raw'
    bt.run(['qemu-img', 'convert', '-O', 'raw', img, raw])
    with open(raw, 'rb') as f:
        got = f.read()
    os.unlink(raw)
    diff = first_difference(got, bytes(model))
    if diff is not None:
        problems.append('%s differs from the acknowledged writes at offset %d (0x%x)'
                        % (what, diff, diff))
    p = bt.run(['qemu-img', 'check', img], check=False)
    if p.returncode != 0:
        problems.append('qemu-img check %s: rc %d\n%s%s'
                        % (what, p.returncode, p.stdout[:3000], p.stderr))
    if problems:
        raise AssertionError('\n'.join(problems))


class ErrImage:
    """A daemon with qcow2 node 'q' over blkdebug over a file, exported
    over NBD as 'disk'; one EIO injected at the first `event`.  `model`
    holds what the guest must read: the prefill, then every write that
    was acknowledged.  Every NBD request that fails is retried."""

    def __init__(self, event, prefill=(), backing=False, size=SIZE, create_opts='',
                 qcow2_opts=None, cluster_size=CS, snapshot=False, bitmap=False):
        bt.require_tool('qemu-img', 'qemu-io')
        self.nbd = bt.require_nbd()
        self.event = event
        self.size = size
        self.rng = random.Random(event)
        self.errors = []
        self.last = (0, CS)
        self.neighbours_done = False
        self.cluster_size = cluster_size
        self.snapshot = snapshot
        self.d = bt.Daemon()
        try:
            self._setup(prefill, backing, create_opts, qcow2_opts or {}, bitmap)
        except BaseException:
            self.d.cleanup()
            raise

    def _setup(self, prefill, backing, create_opts, qcow2_opts, bitmap):
        d = self.d
        self.img = d.path('a.qcow2')
        cmd = ['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d%s'
               % (self.cluster_size, create_opts)]
        if backing:
            base = d.path('base.qcow2')
            bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % CS,
                    base, str(self.size)])
            bt.qemu_io(base, 'write -P 0x5b 0 %d' % self.size, fmt='qcow2')
            cmd += ['-b', base, '-F', 'qcow2']
        bt.run(cmd + [self.img, str(self.size)])
        if prefill:
            bt.qemu_io(self.img, *prefill, fmt='qcow2')
        if bitmap:
            bt.run(['qemu-img', 'bitmap', '--add', self.img, 'b0'])
        if self.snapshot:
            # Every table and cluster so far is shared with the snapshot.
            bt.run(['qemu-img', 'snapshot', '-c', 'snap', self.img])
        bt.run(['qemu-img', 'convert', '-O', 'raw', self.img, d.path('model.raw')])
        with open(d.path('model.raw'), 'rb') as f:
            self.model = bytearray(f.read())
        os.unlink(d.path('model.raw'))
        d.start()
        self.q = d.qmp()
        opts = {'driver': 'qcow2', 'node-name': 'q', 'discard': 'unmap',
                'file': {'driver': 'blkdebug', 'node-name': 'dbg',
                         'inject-error': [{'event': self.event, 'errno': 5, 'once': True}],
                         'image': {'driver': 'file', 'filename': self.img}}}
        opts.update(qcow2_opts)
        self.q.execute('blockdev-add', opts)
        self.q.execute('nbd-server-start',
                       {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        self.q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'q',
                                            'name': 'disk', 'writable': True})
        self.connect()

    def connect(self):
        self.h = self.nbd.NBD()
        # qemu-storage-daemon 7.2 drops a client whose structured read
        # fails; simple replies carry the errno on both daemons.
        self.h.set_request_structured_replies(False)
        self.h.connect_uri(self.d.uri())
        bt.assert_eq(self.h.get_size(), self.size, 'export size')

    # --- requests, each retried until it succeeds ---

    def _retry(self, what, fn, *args):
        for attempt in range(RETRIES + 1):
            try:
                return fn(*args)
            except self.nbd.Error as e:
                self.errors.append((what, e.errno))
                if attempt == RETRIES:
                    raise AssertionError('%s still fails after %d retries: %s'
                                         % (what, RETRIES, e))

    def _after(self, n_errors):
        """After the first failure was retried: the neighbours of the
        region it hit."""
        if len(self.errors) > n_errors and not self.neighbours_done:
            self.neighbours_done = True
            self.neighbours(*self.last)

    def write(self, off, length, data=None):
        data = data if data is not None else self.rng.randbytes(length)
        n = len(self.errors)
        self._retry('write %d+%d' % (off, length), self.h.pwrite, data, off)
        self.model[off:off + length] = data
        self.last = (off, length)
        self._after(n)

    def zero(self, off, length):
        n = len(self.errors)
        self._retry('zero %d+%d' % (off, length), self.h.zero, length, off)
        self.model[off:off + length] = bytes(length)
        self.last = (off, length)
        self._after(n)

    def read(self, off, length):
        n = len(self.errors)
        got = self._retry('read %d+%d' % (off, length), self.h.pread, length, off)
        want = bytes(self.model[off:off + length])
        if got != want:
            raise AssertionError('read %d+%d: differs from the model at +%d'
                                 % (off, length, first_difference(got, want)))
        self._after(n)

    def flush(self):
        n = len(self.errors)
        self._retry('flush', self.h.flush)
        self._after(n)

    def resize(self, size):
        """block_resize (retried) without the export, whose users would
        not share 'resize' on qemu-storage-daemon; then the export again
        and a new connection, which sees the new size."""
        self.h.shutdown()
        self.q.execute('block-export-del', {'id': 'e0'})
        self.q.wait_event('BLOCK_EXPORT_DELETED')
        for attempt in range(RETRIES + 1):
            r = self.q.cmd('block_resize', {'node-name': 'q', 'size': size})
            if 'error' not in r:
                break
            self.errors.append(('block_resize', r['error']['desc']))
            if attempt == RETRIES:
                raise AssertionError('block_resize still fails: %r' % r)
        self.model += bytes(size - self.size)
        self.size = size
        self.q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'q',
                                            'name': 'disk', 'writable': True})
        self.connect()

    def neighbours(self, off, length):
        """Partial writes right before and after [off, off+length), the
        next cluster, a far cluster of the same L2 table and one in the
        next L2 table."""
        end = off + length
        if off >= 512:
            self.write(off - 512, 512)
        if end + 512 <= self.size:
            self.write(end, 512)
        nxt = (end + 2 * CS - 1) // CS * CS
        if nxt + CS <= self.size:
            self.write(nxt, CS)
        table = off // L2_SPAN * L2_SPAN
        far = table + L2_SPAN - 3 * CS
        if far >= end:
            self.write(far, CS + 700)
        if table + L2_SPAN + 2 * CS <= self.size:
            self.write(table + L2_SPAN + CS, CS)

    def verify_online(self):
        for off in range(0, self.size, MiB):
            self.read(off, MiB)

    def quit_and_check(self):
        """Flush, shut down with 'quit', then check the file."""
        self.flush()
        self.verify_online()
        self.h.shutdown()
        self.q.execute('quit')
        bt.assert_eq(self.d.wait_exit(), 0, 'daemon exit status')
        report = self.d.sanitizer_report()
        if report:
            raise AssertionError('sanitizer report:\n' + report)
        check_image(self.img, self.model)

    def close(self):
        if self.d.alive():
            print('--- daemon stderr ---\n%s' % self.d.stderr()[-4000:])
        self.d.cleanup()


# Written with qemu-io before the daemon opens the image: L2 tables 0-2
# exist on disk (loaded on first use), with a compressed and a zero range.
PREFILL = ['write -P 0x11 0 256k', 'write -P 0x12 2M 64k',
           'write -c -P 0x13 4M 64k', 'write -z 4224k 64k', 'write -P 0x14 4352k 32k']


def script(t):
    """Reads and writes touching every kind of metadata update: L2 loads
    on the read and write paths, new L2 tables (L1 updates), cluster
    allocation with and without COW, COW from compressed clusters, zero
    clusters (freeing), flushes (cache write-back)."""
    t.read(0, 64 * KiB)
    t.read(4 * MiB, 64 * KiB)
    t.write(6 * MiB + 4 * KiB, 8 * KiB)                 # new L2 table 3
    t.write(6 * MiB + 20 * KiB + 100, 3000)             # COW, same table
    t.write(2 * MiB + 8 * KiB, 4 * KiB)                 # rewrite, table 1
    t.write(2 * MiB + 200 * KiB + 17, 5000)             # COW over two clusters
    t.write(4 * MiB + 4 * KiB + 512, 1024)              # COW from compressed
    t.zero(64 * KiB, 64 * KiB)                          # frees clusters
    t.flush()
    t.write(8 * MiB, 2 * CS)                            # new L2 table 4
    t.write(10 * MiB + 1000, 9000)                      # new L2 table 5, COW
    t.write(4 * MiB + 40 * KiB, 8 * KiB)                # over compressed, whole
    t.write(0, 300 * KiB)                               # rewrite, table 0
    t.flush()
    t.write(12 * MiB + 3 * CS, CS)                      # new L2 table 6
    t.zero(2 * MiB, 64 * KiB)
    t.write(13 * MiB + 512, 5 * MiB // 2)               # new refcount blocks
    t.flush()
    t.write(SIZE - 3 * CS - 100, 3 * CS + 100)          # last cluster


# Images the script runs on: empty (every table is new), prefilled by
# qemu-io (tables loaded from disk, compressed and zero clusters), that
# over a backing file (COW from the backing file), that with an internal
# snapshot (every table and cluster shared: COW of L2 tables), 64-bit
# refcounts (a refcount block covers 2 MiB of file: the script's writes
# need new blocks) and 512-byte clusters with 64-bit refcounts (the
# refcount table covers 2 MiB of file: it must grow), and lazy refcounts
# (L2 tables written before refcounts, the dirty bit in the header).
VARIANTS = {
    'empty': {},
    'prefilled': {'prefill': PREFILL},
    'backing': {'prefill': PREFILL, 'backing': True},
    'snapshot': {'prefill': PREFILL, 'snapshot': True},
    'refcount64': {'create_opts': ',refcount_bits=64'},
    'small_clusters': {'cluster_size': 512, 'create_opts': ',refcount_bits=64'},
    'lazy': {'prefill': PREFILL, 'create_opts': ',lazy_refcounts=on'},
}

# The debug events blockd's qcow2 driver emits, with the images on which
# the script reaches them.
ALL = tuple(VARIANTS)
DATA = ('prefilled', 'backing', 'snapshot')
EVENTS = {
    'l1_update': ALL,
    'l2_load': DATA,                        # new tables are never loaded
    'l2_update': ALL,
    'l2_alloc_write': ALL,
    'l2_alloc_cow_read': ('snapshot',),
    'refblock_load': ALL,
    'refblock_update_part': ALL,
    'refblock_alloc': ('refcount64', 'small_clusters'),
    'refblock_alloc_write': ('refcount64', 'small_clusters'),
    'refblock_alloc_hookup': ('refcount64', 'small_clusters'),
    'reftable_grow': ('small_clusters',),
    'refblock_alloc_write_blocks': ('small_clusters',),
    'refblock_alloc_write_table': ('small_clusters',),
    'refblock_alloc_switch_table': ('small_clusters',),
    'cluster_alloc': ALL,
    'cluster_alloc_space': ('empty', 'prefilled', 'refcount64', 'small_clusters', 'lazy'),
    'cluster_free': DATA,
    'cow_read': DATA,
    'read_aio': DATA,
    'write_aio': ALL,
    'read_compressed': DATA,
    'read_backing_aio': ('backing',),
}

# Where no request of the script fails on qemu-storage-daemon.  After
# cluster_free the next request QEMU sends to the file here is one whose
# failure it ignores (with iotype=read the rule is seen to be active and
# fails the next read): nothing to retry, nothing to check beyond the
# image, which is checked all the same.
_IGNORED = "QEMU ignores the failure of the request after 'cluster_free'"
REFERENCE_UNREACHED = {
    ('cluster_free', 'prefilled'): _IGNORED,
    ('cluster_free', 'backing'): _IGNORED,
}


def run_event(event, variant):
    t = ErrImage(event, **VARIANTS[variant])
    try:
        script(t)
        t.quit_and_check()
        if not t.errors:
            if bt.is_reference() and (event, variant) in REFERENCE_UNREACHED:
                raise bt.Skip('reference daemon: ' + REFERENCE_UNREACHED[(event, variant)])
            raise AssertionError('no error was injected at %s' % event)
    finally:
        t.close()


for _ev, _variants in EVENTS.items():
    for _v in _variants:
        globals()['test_%s_%s' % (_ev, _v)] = functools.partial(run_event, _ev, _v)


# --- growing the L1 table (block_resize) ---

RESIZE_EVENTS = ('l1_grow_alloc_table', 'l1_grow_write_table', 'l1_grow_activate_table',
                 'cluster_alloc', 'refblock_update_part')


def run_resize(event):
    """block_resize to 4 times the size grows the L1 table; the first
    writes go before, the rest into the new part of the disk."""
    t = ErrImage(event, prefill=PREFILL)
    try:
        t.write(6 * MiB, 3 * CS)
        t.write(CS, 100)
        t.resize(4 * SIZE)
        t.write(3 * SIZE + 5000, 3 * CS)
        t.write(6 * MiB + 2 * CS, 2 * CS)
        t.neighbours(3 * SIZE + 5000, 3 * CS)
        t.write(SIZE - CS, 2 * CS)
        t.quit_and_check()
        if not t.errors:
            raise AssertionError('no error was injected at %s' % event)
    finally:
        t.close()


for _ev in RESIZE_EVENTS:
    globals()['test_resize_' + _ev] = functools.partial(run_resize, _ev)


# --- persistent bitmaps stored at close ---

# Whether the store succeeds despite the error at that event: an error
# while allocating or writing the new bitmaps fails it (the image keeps
# b0, in use, and has no b1: what QEMU leaves); one while releasing the
# old bitmaps' clusters comes after the header points to the new ones.
BITMAP_EVENTS = {'cluster_alloc': False, 'refblock_update_part': False, 'cluster_free': True}


def bitmap_info(img):
    info = json.loads(bt.run(['qemu-img', 'info', '--output=json', '-U', img]).stdout)
    bms = info.get('format-specific', {}).get('data', {}).get('bitmaps', [])
    return {b['name']: sorted(b['flags']) for b in bms}


def run_bitmap_store(event):
    """An image with a stored bitmap (b0) gets a second one (b1) over
    QMP; the client only overwrites allocated clusters, so the first
    allocation is the store of the bitmaps at 'quit', which hits the
    error.  The image must be clean and hold every write, and the
    bitmaps must be stored, or left as they were, as BITMAP_EVENTS says."""
    if event == 'cluster_free':
        bt.skip_if_reference('QEMU leaks a cluster whose release failed '
                             '(qcow2_free_clusters only prints the error)')
    t = ErrImage(event, prefill=PREFILL, bitmap=True)
    try:
        t.q.execute('block-dirty-bitmap-add', {'node': 'q', 'name': 'b1', 'persistent': True})
        t.write(8 * KiB, 16 * KiB)
        t.write(2 * MiB + 100, 5000)
        t.write(4352 * KiB, 32 * KiB)
        t.quit_and_check()
        bt.assert_eq(t.errors, [], 'errors seen by the client')
        if BITMAP_EVENTS[event]:
            want = {'b0': ['auto'], 'b1': ['auto']}
        else:
            want = {'b0': ['auto', 'in-use']}
        bt.assert_eq(bitmap_info(t.img), want, 'bitmaps in the image')
    finally:
        t.close()


for _ev in BITMAP_EVENTS:
    globals()['test_bitmap_store_' + _ev] = functools.partial(run_bitmap_store, _ev)


# --- jobs whose qcow2 target hits the error (on-target-error=stop) ---

def next_event(q, names, timeout=60.0):
    """The next event with one of `names`, in the order they came."""
    end = time.monotonic() + timeout
    while True:
        for i, ev in enumerate(q.events):
            if ev['event'] in names:
                return q.events.pop(i)
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError('timed out waiting for one of %s' % sorted(names))
        q.sock.settimeout(left)
        try:
            msg = q.recv()
        except socket.timeout:
            continue
        finally:
            q.sock.settimeout(20.0)
        if 'event' not in msg:
            raise AssertionError('unexpected reply while waiting for events: %r' % msg)
        q.events.append(msg)


class JobImage:
    """Source 'src' (qcow2, prefilled, exported as 'disk') and an empty
    qcow2 target 'tgt' over blkdebug with one EIO at the first `event`."""

    def __init__(self, event):
        bt.require_tool('qemu-img', 'qemu-io')
        self.event = event
        self.errors = 0
        self.d = bt.Daemon()
        try:
            self._setup()
        except BaseException:
            self.d.cleanup()
            raise

    def _setup(self):
        d = self.d
        self.src, self.tgt = d.path('src.qcow2'), d.path('tgt.qcow2')
        for img in (self.src, self.tgt):
            bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % CS,
                    img, str(SIZE)])
        rng = random.Random(event_seed(self.event))
        cmds = PREFILL + ['write -P 0x%02x %d %d' % (rng.randrange(1, 255),
                                                     rng.randrange(0, SIZE // 512 - 300) * 512,
                                                     rng.randrange(1, 300) * 512)
                          for _ in range(40)]
        bt.qemu_io(self.src, *cmds, fmt='qcow2')
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.wait = [d.nbd_sock]
        d.start()
        self.q = d.qmp()
        self.q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'src',
                                        'file': {'driver': 'file', 'filename': self.src}})
        self.q.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'tgt', 'backing': None,
            'file': {'driver': 'blkdebug', 'node-name': 'dbg',
                     'inject-error': [{'event': self.event, 'errno': 5, 'once': True}],
                     'image': {'driver': 'file', 'filename': self.tgt}}})
        self.q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'src',
                                            'name': 'disk', 'writable': True})

    def job_status(self):
        for j in self.q.execute('query-jobs'):
            if j['id'] == 'j0':
                return j['status']
        return None

    def run(self, on_ready=None):
        """Resume after every error, complete when ready; the job must
        succeed."""
        while True:
            ev = next_event(self.q, {'BLOCK_JOB_ERROR', 'BLOCK_JOB_READY',
                                     'BLOCK_JOB_COMPLETED'})
            if ev['event'] == 'BLOCK_JOB_ERROR':
                bt.assert_eq(ev['data']['action'], 'stop', 'error action')
                self.errors += 1
                if self.errors > RETRIES:
                    raise AssertionError('the job fails again and again: %r' % ev)
                bt.wait_for(lambda: self.job_status() == 'paused', 30, 'job paused')
                self.q.execute('job-resume', {'id': 'j0'})
            elif ev['event'] == 'BLOCK_JOB_READY':
                if on_ready:
                    on_ready()
                self.q.execute('job-complete', {'id': 'j0'})
            else:
                bt.assert_eq(ev['data'].get('error'), None, 'job error')
                return

    def quit_and_check(self):
        self.q.execute('quit')
        bt.assert_eq(self.d.wait_exit(), 0, 'daemon exit status')
        report = self.d.sanitizer_report()
        if report:
            raise AssertionError('sanitizer report:\n' + report)
        p = bt.run(['qemu-img', 'compare', self.src, self.tgt], check=False)
        problems = []
        if p.returncode != 0:
            problems.append('qemu-img compare src tgt: rc %d\n%s%s'
                            % (p.returncode, p.stdout, p.stderr))
        p = bt.run(['qemu-img', 'check', self.tgt], check=False)
        if p.returncode != 0:
            problems.append('qemu-img check tgt: rc %d\n%s%s'
                            % (p.returncode, p.stdout[:3000], p.stderr))
        if problems:
            raise AssertionError('\n'.join(problems))
        if not self.errors:
            raise AssertionError('no error was injected at %s' % self.event)

    def close(self):
        if self.d.alive():
            print('--- daemon stderr ---\n%s' % self.d.stderr()[-4000:])
        self.d.cleanup()


def event_seed(event):
    return sum(event.encode())


JOB_EVENTS = ('l1_update', 'l2_alloc_write', 'l2_update', 'refblock_load',
              'refblock_update_part', 'cluster_alloc', 'write_aio')


def run_mirror(event):
    """blockdev-mirror sync=full; once ready, the client writes more
    (mirrored by the job); then job-complete."""
    t = JobImage(event)
    try:
        t.q.execute('blockdev-mirror', {'job-id': 'j0', 'device': 'src', 'target': 'tgt',
                                        'sync': 'full', 'on-target-error': 'stop'})
        t.run(on_ready=lambda: bt.qemu_io(t.d.uri(), 'write -P 0x3c 1M 64k',
                                          'write -P 0x3d 9M 4k', 'write -P 0x3e 3000 9000'))
        t.quit_and_check()
    finally:
        t.close()


# qemu-storage-daemon 7.2 fails every retried compressed write after an
# error at these events: the job stops again after each job-resume.
REFERENCE_COMPRESSED_STUCK = ('cluster_alloc_bytes', 'write_compressed', 'l2_update_compressed')


def run_backup(event, compress=False):
    """blockdev-backup sync=full of an idle source."""
    if compress and event in REFERENCE_COMPRESSED_STUCK:
        bt.skip_if_reference('compressed writes keep failing after an error at ' + event)
    t = JobImage(event)
    try:
        args = {'job-id': 'j0', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                'on-target-error': 'stop'}
        if compress:
            args['compress'] = True
        t.q.execute('blockdev-backup', args)
        t.run()
        t.quit_and_check()
    finally:
        t.close()


for _ev in JOB_EVENTS:
    globals()['test_mirror_' + _ev] = functools.partial(run_mirror, _ev)
    globals()['test_backup_' + _ev] = functools.partial(run_backup, _ev)
# Compressed clusters are written by jobs only.
for _ev in ('l1_update', 'cluster_alloc_bytes', 'write_compressed', 'l2_update_compressed',
            'refblock_update_part'):
    globals()['test_backup_compressed_' + _ev] = functools.partial(run_backup, _ev, True)


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
