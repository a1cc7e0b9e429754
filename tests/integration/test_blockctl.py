#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""blockctl driven as a user would, against a real daemon (blockd, or
qemu-storage-daemon with BLOCKD_REFERENCE=1: blockctl speaks plain QMP).
The binary comes from BLOCKCTL (meson) or build/ctl/blockctl."""

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import REPO, Skip, assert_eq, assert_in, main, tests_of  # noqa: E402


def blockctl_exe():
    exe = os.environ.get('BLOCKCTL') or os.path.join(REPO, 'build', 'ctl', 'blockctl')
    if not os.access(exe, os.X_OK):
        raise Skip('blockctl not built: %s' % exe)
    return exe


def ctl(d, *args, env_socket=False, check=None, timeout=60):
    """Run blockctl against daemon d; returns the finished process.
    check: None (any exit), or the exit code it must have."""
    cmd = [blockctl_exe()]
    env = dict(os.environ)
    if env_socket:
        env['BLOCKD_SOCKET'] = d.qmp_paths[-1]
    else:
        cmd += ['-s', d.qmp_paths[-1]]
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                       timeout=timeout)
    if check is not None and p.returncode != check:
        raise AssertionError('blockctl %s: exit %d, expected %d\nstdout: %s\nstderr: %s'
                             % (' '.join(args), p.returncode, check, p.stdout, p.stderr))
    return p


def chain_daemon():
    """A daemon with a qcow2 overlay on a qcow2 base, exported over NBD."""
    # A second monitor for blockctl: qemu-storage-daemon serves one
    # client per monitor socket, and the test holds the first.
    d = bt.Daemon(monitors=2)
    base, top = d.path('base.qcow2'), d.path('top.qcow2')
    bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '64M'])
    bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top])
    d.args += ['--blockdev', 'driver=qcow2,node-name=top,file.driver=file,file.filename=%s' % top,
               '--nbd-server', 'addr.type=unix,addr.path=%s' % d.path('nbd.sock'),
               '--export', 'type=nbd,id=e0,node-name=top,name=disk,writable=on']
    d.wait.append(d.path('nbd.sock'))
    return d


def test_qmp_keyval_typed_by_schema():
    """qmp with key=value arguments: numbers and booleans are typed from
    the daemon's schema, dotted keys nest; --args takes JSON."""
    with chain_daemon() as d:
        d.start()
        ctl(d, 'qmp', 'blockdev-add', 'driver=null-co', 'node-name=n0', 'size=1M',
            'read-zeroes=on', check=0)
        ctl(d, 'qmp', 'block-dirty-bitmap-add', 'node=top', 'name=b0',
            'granularity=131072', 'persistent=off', check=0)
        p = ctl(d, 'qmp', 'query-named-block-nodes', 'flat=true', check=0)
        nodes = {n['node-name']: n for n in json.loads(p.stdout)}
        assert_eq(nodes['n0']['image']['virtual-size'], 1 << 20, 'size typed as an int')
        bm = nodes['top']['dirty-bitmaps'][0]
        assert_eq((bm['name'], bm['granularity']), ('b0', 131072), 'bitmap made with typed args')
        ctl(d, 'qmp', 'blockdev-add', '--args',
            '{"driver": "raw", "node-name": "r0", "file": "n0"}', check=0)
        p = ctl(d, 'qmp', 'query-named-block-nodes', env_socket=True, check=0)
        assert_in('"r0"', p.stdout, 'node added with --args')


def test_errors_and_exit_codes():
    """1: the daemon's error text on stderr; 2: usage errors; no daemon."""
    with chain_daemon() as d:
        d.start()
        p = ctl(d, 'qmp', 'blockdev-del', 'node-name=nosuch', check=1)
        assert_in('nosuch', p.stderr, 'the daemon desc')
        p = ctl(d, 'qmp', 'no-such-command', check=1)
        assert_in('no-such-command', p.stderr, 'unknown command')
        ctl(d, 'frobnicate', check=2)
        ctl(d, 'qmp', check=2)
        ctl(d, 'qmp', 'query-jobs', 'notkeyval', check=2)
        ctl(d, 'graph', '--format', 'gif', check=2)
        ctl(d, 'wait', check=2)
        p = ctl(d, 'wait', 'nojob', check=1)
        assert_in("no job 'nojob'", p.stderr, 'wait on an unknown job')
    p = subprocess.run([blockctl_exe(), '-s', '/nonexistent/qmp.sock', 'status'],
                       capture_output=True, text=True)
    assert_eq(p.returncode, 1, 'exit code without a daemon')
    assert_in('cannot reach blockd at /nonexistent/qmp.sock', p.stderr, 'message')
    env = dict(os.environ)
    env.pop('BLOCKD_SOCKET', None)
    p = subprocess.run([blockctl_exe(), 'status'], capture_output=True, text=True, env=env)
    assert_eq(p.returncode, 2, 'no socket given')


def test_status_and_graph():
    """status shows the chain as a tree with drivers, files, sizes,
    read-only and bitmaps, the export and the jobs; graph text, dot and
    svg; --json is machine-readable."""
    with chain_daemon() as d:
        d.start()
        ctl(d, 'qmp', 'block-dirty-bitmap-add', 'node=top', 'name=b0', check=0)
        p = ctl(d, 'status', check=0)
        out = p.stdout
        for needle in ('root: top (qcow2', 'top.qcow2, 64 MiB', 'bitmaps: b0',
                       'backing: ', 'base.qcow2, 64 MiB, read-only', 'e0: nbd export of node',
                       'Jobs: none'):
            assert_in(needle, out.replace('64.0 MiB', '64 MiB'), 'status output')
        # The backing node is below the top, indented deeper.
        lines = out.splitlines()
        top = [l for l in lines if 'root: top' in l][0]
        back = [l for l in lines if 'backing:' in l][0]
        assert len(back) - len(back.lstrip()) > len(top) - len(top.lstrip()), out
        p = ctl(d, '--json', 'status', check=0)
        st = json.loads(p.stdout)
        assert_eq(sorted(st), ['clients', 'exports', 'graph', 'jobs', 'nodes'], 'status --json keys')
        assert_eq(st['exports'][0]['id'], 'e0', 'export in --json')
        p = ctl(d, 'graph', check=0)
        assert_in('`-- backing: ', p.stdout, 'graph text')
        p = ctl(d, 'graph', '--format', 'dot', check=0)
        assert p.stdout.startswith('digraph blockd {'), p.stdout
        assert_in('label="backing"', p.stdout, 'dot edge role')
        assert_in('label="top\\nqcow2, 64', p.stdout, 'dot node label')
        edges = [l for l in p.stdout.splitlines() if '->' in l]
        assert len(edges) >= 4, p.stdout
        if shutil.which('dot'):
            svg = d.path('g.svg')
            ctl(d, 'graph', '--format', 'svg', '-o', svg, check=0)
            assert_in('<svg', open(svg).read(), 'svg from dot')
        p = ctl(d, 'graph', '--json', check=0)
        g = json.loads(p.stdout)
        assert_eq(sorted(g), ['edges', 'nodes'], 'graph --json')


def test_wait_and_watch_a_job():
    """wait follows a backup to its end (exit 0); jobs --watch ends when
    no job is left; a failing job makes wait exit 1 with its error."""
    with chain_daemon() as d:
        d.start()
        bt.qemu_io(d.uri('disk'), 'write -P 0x5a 0 8M')
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n0', 'size': 64 << 20})
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'tgt', 'file': 'n0'})
        q.execute('blockdev-backup', {'job-id': 'j0', 'device': 'top', 'target': 'tgt',
                                      'sync': 'full', 'speed': 32 << 20, 'auto-dismiss': False})
        p = ctl(d, 'wait', 'j0', check=0)
        assert_in('j0', p.stdout, 'progress lines name the job')
        assert_in('concluded', p.stdout, 'the job ended')
        p = ctl(d, 'jobs', check=0)
        assert_in('concluded', p.stdout, 'jobs lists it')
        q.execute('job-dismiss', {'id': 'j0'})
        q.execute('blockdev-backup', {'job-id': 'j1', 'device': 'top', 'target': 'tgt',
                                      'sync': 'full', 'speed': 64 << 20})
        p = ctl(d, 'jobs', '--watch', check=0, timeout=60)
        assert_in('j1', p.stdout, 'watch shows the job')
        # A target whose writes fail (blkdebug injecting EIO): wait
        # exits 1 and says why.
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', d.path('bad.qcow2'), '64M'])
        q.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'bad',
            'file': {'driver': 'blkdebug',
                     'inject-error': [{'event': 'write_aio', 'errno': 5}],
                     'image': {'driver': 'file', 'filename': d.path('bad.qcow2')}}})
        q.execute('blockdev-backup', {'job-id': 'j2', 'device': 'top', 'target': 'bad',
                                      'sync': 'full', 'auto-dismiss': False})
        p = ctl(d, 'wait', 'j2', check=1)
        assert_in('job j2 failed: ', p.stderr, 'the job error')
        assert_in('Input/output error', p.stderr, 'the errno text')


class Writer(threading.Thread):
    """Writes 64 KiB patterns at random through an NBD export until
    stopped; pause() returns once no write is in flight."""

    def __init__(self, uri):
        super().__init__(daemon=True)
        self.nbd = bt.require_nbd()
        self.h = self.nbd.NBD()
        self.h.connect_uri(uri)
        self.size = self.h.get_size()
        self.gate = threading.Lock()
        self.stop_flag = False
        self.count = 0
        self.rng = random.Random(7)

    def run(self):
        while not self.stop_flag:
            with self.gate:
                off = self.rng.randrange(self.size // 65536) * 65536
                self.h.pwrite(bytes([self.rng.randrange(1, 256)]) * 65536, off)
                self.count += 1
            time.sleep(0.002)

    def pause(self):
        self.gate.acquire()

    def resume(self):
        self.gate.release()

    def finish(self):
        self.stop_flag = True
        self.join()
        self.h.flush()
        self.h.shutdown()


def backup_daemon():
    """A daemon with a 64 MiB qcow2 (some data) exported writable."""
    skip_if_reference = bt.skip_if_reference
    skip_if_reference('backup sessions are blockd\'s own (x-blockd-backup-begin)')
    d = bt.Daemon(monitors=2)
    img = d.path('disk.qcow2')
    bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M'])
    bt.run(['qemu-io', '-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x22 32M 2M', img])
    d.args += ['--blockdev', 'driver=qcow2,node-name=disk,file.driver=file,file.filename=%s' % img,
               '--nbd-server', 'addr.type=unix,addr.path=%s' % d.path('nbd.sock'),
               '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
    d.wait.append(d.path('nbd.sock'))
    return d


def test_backup_chain_and_restore():
    """A full backup, then three incrementals while a writer changes the
    image through NBD; each point restored (to a raw file, and one to an
    NBD export) equals the image at its session's start (qemu-img
    compare), every file of the chain passes qemu-img check, and each
    incremental copied about what changed."""
    bt.require_tool('qemu-img')
    with backup_daemon() as d:
        d.start()
        q = d.qmp()
        bk = d.path('bk')
        w = Writer(d.uri('disk'))
        w.start()
        expected = []
        for n in range(4):
            time.sleep(0.3)
            w.pause()
            exp = d.path('expected%d.raw' % n)
            bt.run(['qemu-img', 'convert', '-U', '-f', 'raw', '-O', 'raw', d.uri('disk'), exp])
            expected.append(exp)
            p = subprocess.Popen([blockctl_exe(), '-s', d.qmp_paths[-1], 'backup', 'disk', bk,
                                  '--workers', '4', '--nbd', d.path('nbd.sock')],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # The point in time is the session's start: resume the
                # writer once it exists.
                bt.wait_for(lambda: q.execute('x-blockd-query-backups') or p.poll() is not None,
                            what='the backup session')
            finally:
                w.resume()
            out, err = p.communicate(timeout=120)
            assert_eq(p.returncode, 0, 'backup %d: %s %s' % (n, out, err))
            assert_in('full backup' if n == 0 else 'incremental backup', out, 'backup output')
        w.finish()
        assert w.count > 20, 'the writer wrote during the backups'
        p = ctl(d, '--json', 'backup-list', bk, check=0)
        chain = json.loads(p.stdout)['chain']
        assert_eq([e['kind'] for e in chain], ['full'] + ['incremental'] * 3, 'chain kinds')
        for e in chain[1:]:
            assert e['copied'] < 24 << 20, 'an incremental copies what changed: %r' % e
        for e in chain:
            bt.run(['qemu-img', 'check', '-q', os.path.join(bk, e['file'])])
        for n in range(4):
            out = d.path('restored%d.raw' % n)
            ctl(d, 'restore', bk, '--at', str(n), '--verify', out, check=0)
            bt.run(['qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'raw', out, expected[n]])
        # Restore into a live NBD export: a second daemon serving a blank image.
        target = d.path('target.raw')
        bt.run(['qemu-img', 'create', '-q', '-f', 'raw', target, '64M'])
        with bt.start_exporting(target, writable=True) as t:
            ctl(d, 'restore', bk, '--at', '2', t.uri('disk'), check=0)
        bt.run(['qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'raw', target, expected[2]])


def test_differential_and_compressed():
    """--compress writes compressed clusters (qemu-img check counts
    them); --differential copies everything since the full backup, over
    it; each point restores to the image at its start."""
    with backup_daemon() as d:
        d.start()
        bk, uri = d.path('bk'), d.uri('disk')
        expected = []

        def point(*args):
            exp = d.path('expected%d.raw' % len(expected))
            bt.run(['qemu-img', 'convert', '-U', '-f', 'raw', '-O', 'raw', uri, exp])
            expected.append(exp)
            return ctl(d, 'backup', 'disk', bk, '--nbd', d.path('nbd.sock'), *args, check=0)

        point('--compress')
        bt.qemu_io(uri, 'write -P 0x33 1M 1M')
        point()
        bt.qemu_io(uri, 'write -P 0x44 40M 1M')
        p = point('--differential')
        assert_in('differential backup of', p.stdout, 'differential output')
        chain = json.loads(ctl(d, '--json', 'backup-list', bk, check=0).stdout)['chain']
        assert_eq([e['kind'] for e in chain], ['full', 'incremental', 'differential'], 'kinds')
        assert chain[2]['copied'] >= 2 << 20, 'the differential has both changes: %r' % chain[2]
        info = bt.run(['qemu-img', 'info', '--output=json', os.path.join(bk, chain[2]['file'])])
        assert_eq(json.loads(info.stdout)['backing-filename'], chain[0]['file'],
                  'the differential sits on the full backup')
        check = bt.run(['qemu-img', 'check', os.path.join(bk, chain[0]['file'])])
        assert_in('100.00% compressed clusters', check.stdout, 'qemu-img check of --compress')
        for n in range(3):
            out = d.path('restored%d.raw' % n)
            ctl(d, 'restore', bk, '--at', str(n), '--verify', out, check=0)
            bt.run(['qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'raw', out, expected[n]])


def test_backup_failure_leaves_dir_unchanged():
    """A backup that fails part-way (its export unreachable) leaves the
    directory as it was; the next run works; bad arguments and an
    unknown node are refused; a corrupted file fails --verify."""
    with backup_daemon() as d:
        d.start()
        bk = d.path('bk')
        ctl(d, 'backup', 'disk', bk, '--nbd', d.path('nbd.sock'), check=0)
        before = sorted(os.listdir(bk)), open(os.path.join(bk, 'manifest.json')).read()
        p = ctl(d, 'backup', 'disk', bk, '--nbd', d.path('nowhere.sock'), check=1)
        assert_in('unchanged', p.stderr, 'failure message')
        assert_eq((sorted(os.listdir(bk)), open(os.path.join(bk, 'manifest.json')).read()),
                  before, 'the directory after a failed run')
        ctl(d, 'backup', 'disk', bk, '--nbd', d.path('nbd.sock'), check=0)
        assert_eq(len(json.loads(ctl(d, '--json', 'backup-list', bk).stdout)['chain']), 2,
                  'the chain after the next run')
        p = ctl(d, 'backup', 'nosuch', d.path('bk2'), '--nbd', d.path('nbd.sock'), check=1)
        assert_in('nosuch', p.stderr, 'unknown node')
        ctl(d, 'backup', 'disk', check=2)
        ctl(d, 'backup', 'disk', bk, '--full', '--incremental', check=2)
        ctl(d, 'restore', bk, check=2)
        ctl(d, 'restore', d.path('empty'), d.path('x.raw'), check=1)
        ctl(d, 'restore', bk, '--at', '9', d.path('x.raw'), check=1)
        with open(os.path.join(bk, '0000-full.qcow2'), 'r+b') as f:
            f.seek(1 << 20)
            f.write(b'corrupt')
        p = ctl(d, 'restore', bk, '--verify', d.path('x.raw'), check=1)
        assert_in('does not match its checksum', p.stderr, '--verify')


def test_backup_address_from_daemon_and_qcow2_restore():
    """Without --nbd, blockctl pulls from the address the daemon reports
    (x-blockd-backup-begin's nbd-uri), over a unix or a TCP listener;
    restore writes a qcow2 target (by name or --format) that passes
    qemu-img check and compares equal; --json progress comes as JSON
    lines on stderr with the result alone on stdout."""
    bt.require_tool('qemu-img')
    with backup_daemon() as d:
        d.start()
        q = d.qmp()
        info = q.execute('x-blockd-backup-begin', {'node': 'disk', 'id': 'probe'})
        assert_eq(info['nbd-uri'], 'nbd+unix:///probe?socket=%s' % d.path('nbd.sock'),
                  'the session reports its export address')
        assert_eq(q.execute('x-blockd-query-backups')[0]['nbd-uri'], info['nbd-uri'],
                  'nbd-uri in x-blockd-query-backups')
        q.execute('x-blockd-backup-end', {'id': 'probe'})
        bk = d.path('bk')
        exp = d.path('expected.raw')
        bt.run(['qemu-img', 'convert', '-U', '-f', 'raw', '-O', 'raw', d.uri('disk'), exp])
        p = ctl(d, '--json', 'backup', 'disk', bk, check=0)
        entry = json.loads(p.stdout)
        assert_eq(entry['kind'], 'full', 'the --json result')
        lines = [json.loads(line) for line in p.stderr.splitlines() if line.strip()]
        assert lines and all('progress' in x for x in lines), 'JSON progress lines: %r' % p.stderr
        last = lines[-1]['progress']
        assert_eq((last['operation'], last['done']), ('backup', last['total']), 'progress ends at the total')
        for target, args in (('r1.qcow2', []), ('r2.img', ['--format', 'qcow2'])):
            out = d.path(target)
            ctl(d, 'restore', bk, *args, out, check=0)
            info = json.loads(bt.run(['qemu-img', 'info', '--output=json', out]).stdout)
            assert_eq(info['format'], 'qcow2', 'restored format of %s' % target)
            bt.run(['qemu-img', 'check', '-q', out])
            bt.run(['qemu-img', 'compare', '-q', '-F', 'raw', out, exp])
            assert info['actual-size'] < 24 << 20, 'holes stay holes in the qcow2: %r' % info
        # No NBD server: a clear error, the directory untouched.
        q.execute('nbd-server-stop')
        before = sorted(os.listdir(bk))
        p = ctl(d, 'backup', 'disk', bk, check=1)
        assert_in('NBD server not running', p.stderr, 'backup without a server')
        assert_eq(sorted(os.listdir(bk)), before, 'the directory after the failed run')
        # A TCP listener on port 0: the URI carries the port it bound.
        q.execute('nbd-server-start', {'addr': {'type': 'inet', 'data': {'host': '127.0.0.1',
                                                                          'port': '0'}}})
        info = q.execute('x-blockd-backup-begin', {'node': 'disk', 'id': 'tcp'})
        assert info['nbd-uri'].startswith('nbd://127.0.0.1:') and \
            not info['nbd-uri'].startswith('nbd://127.0.0.1:0/'), info['nbd-uri']
        q.execute('x-blockd-backup-end', {'id': 'tcp'})
        ctl(d, 'backup', 'disk', bk, check=0)
        assert_eq(len(json.loads(ctl(d, '--json', 'backup-list', bk).stdout)['chain']), 2,
                  'an incremental over TCP')


def test_backup_killed_midway():
    """SIGKILL of blockctl in the middle of the copy: the manifest and the
    chain stay as they were and restore; the next run cleans up the
    leftover and completes; the daemon's session is ended by its lease
    or by the next run's own session."""
    bt.require_tool('qemu-img')
    d = bt.Daemon(monitors=2)
    with d:
        img = d.path('disk.qcow2')
        bt.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '512M'])
        bt.run(['qemu-io', '-c', 'write -P 0x5a 0 384M', img])
        d.args += ['--blockdev', 'driver=qcow2,node-name=disk,file.driver=file,file.filename=%s' % img,
                   '--nbd-server', 'addr.type=unix,addr.path=%s' % d.path('nbd.sock')]
        d.wait.append(d.path('nbd.sock'))
        d.start()
        bk = d.path('bk')
        ctl(d, 'backup', 'disk', bk, check=0)
        before = open(os.path.join(bk, 'manifest.json')).read()
        full = os.path.join(bk, '0000-full.qcow2')
        full_sum = bt.run(['sha256sum', full]).stdout
        # Change most of the image so that the incremental runs a while.
        q = d.qmp()
        q.execute('block-export-add', {'type': 'nbd', 'id': 'w', 'node-name': 'disk',
                                       'name': 'w', 'writable': True})
        bt.qemu_io(d.uri('w'), 'write -P 0x6b 0 384M')
        q.execute('block-export-del', {'id': 'w'})
        p = subprocess.Popen([blockctl_exe(), '-s', d.qmp_paths[-1], '--json', 'backup', 'disk', bk,
                              '--workers', '2'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Kill it once it has copied something but not everything.
        killed = False
        for line in p.stderr:
            prog = json.loads(line).get('progress', {})
            if 0 < prog.get('done', 0) < prog.get('total', 0):
                p.kill()
                killed = True
                break
        p.wait()
        if not killed:
            raise Skip('the incremental finished before it could be killed')
        assert_eq(open(os.path.join(bk, 'manifest.json')).read(), before, 'the manifest after the kill')
        assert_eq(bt.run(['sha256sum', full]).stdout, full_sum, 'the full backup after the kill')
        assert_eq(sorted(f for f in os.listdir(bk) if not f.startswith('.partial')),
                  ['0000-full.qcow2', 'manifest.json'], 'the chain after the kill')
        ctl(d, 'restore', bk, '--verify', d.path('r0.raw'), check=0)
        bt.run(['qemu-io', '-f', 'raw', '-c', 'read -P 0x5a 0 384M', d.path('r0.raw')])
        # The next run: the dead run's session ends, the leftover goes.
        for s in q.execute('x-blockd-query-backups'):
            q.execute('x-blockd-backup-end', {'id': s['id']})
        ctl(d, 'backup', 'disk', bk, check=0)
        files = sorted(os.listdir(bk))
        assert not [f for f in files if f.startswith('.partial')], 'leftover removed: %r' % files
        ctl(d, 'restore', bk, '--verify', d.path('r1.raw'), check=0)
        bt.run(['qemu-io', '-f', 'raw', '-c', 'read -P 0x6b 0 384M', d.path('r1.raw')])
        for f in files:
            if f.endswith('.qcow2'):
                bt.run(['qemu-img', 'check', '-q', os.path.join(bk, f)])


def test_backup_full_disk():
    """A backup directory on a file system too small for the backup: the
    run fails with the reason (no space), leaves the directory as it
    was, and the daemon keeps serving."""
    if os.geteuid() != 0:
        raise Skip('mounting a small tmpfs needs root')
    with backup_daemon() as d:
        d.start()
        mnt = d.path('small')
        os.mkdir(mnt)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3M', 'tmpfs', mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip('cannot mount a tmpfs: %s' % r.stderr)
        try:
            bk = os.path.join(mnt, 'bk')
            p = ctl(d, 'backup', 'disk', bk, check=1)
            assert_in('No space left on device', p.stderr, 'the reason')
            assert_in('unchanged', p.stderr, 'the directory is unchanged')
            assert_eq(sorted(os.listdir(bk)), [], 'nothing left in the directory')
            assert_eq(d.qmp().execute('x-blockd-query-backups'), [], 'the session ended')
            bt.qemu_io(d.uri('disk'), 'read -P 0x11 0 4M')
        finally:
            subprocess.run(['umount', '-l', mnt])


if __name__ == '__main__':
    main(tests_of(globals()))
