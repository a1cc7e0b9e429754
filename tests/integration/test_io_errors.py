# SPDX-License-Identifier: MIT
"""I/O errors from below the daemon (issue 20): blkdebug injects read or
write errors under the source or the target of each block job (backup,
blockdev-mirror, drive-mirror, stream, intermediate and active commit),
for each error policy the job's QAPI arguments have (report, ignore, stop,
enospc).  Each case records the job's events (BLOCK_JOB_ERROR with
operation and action, JOB_STATUS_CHANGE, BLOCK_JOB_COMPLETED's error) and,
when stopped, query-block-jobs' status and io-status; a stopped job is
resumed (block-job-resume or job-resume) until it completes.  The traces
expected here are those of qemu-storage-daemon 7.2 (BLOCKD_REFERENCE=1
runs them against it).  After every case the qcow2 images pass qemu-img
check and the data is compared.

Also: NBD and FUSE exports over a failing node give each request EIO (or
ENOSPC), keep the connection and serve the other requests; and a job
copies from a flaky nbd source (nbdkit's error filter) with
on-source-error=stop, resumed until done.

IOERR_TRACE=1 prints each case's trace.
"""

import errno
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402

MiB = 1024 * 1024
SIZE = 4 * MiB
DATA = ['write -P 0x5a 0 %d' % MiB, 'write -P 0xa5 %d %d' % (2 * MiB, MiB),
        'write -P 0x33 %d 65536' % (SIZE - 65536)]


def qimg(*args):
    return bt.run(['qemu-img'] + list(args))


def offline_write(path, cmds, fmt='qcow2'):
    args = ['qemu-io', '-f', fmt]
    for c in cmds:
        args += ['-c', c]
    bt.run(args + [path])


def file_of(path, errors=None):
    f = {'driver': 'file', 'filename': path}
    if errors is None:
        return f
    return {'driver': 'blkdebug', 'inject-error': errors, 'image': f}


def rule(event, errnum=errno.EIO, once=False):
    return [{'event': event, 'errno': errnum, 'once': once}]


def add_qcow2(q, name, path, errors=None, backing=None):
    args = {'driver': 'qcow2', 'node-name': name, 'file': file_of(path, errors)}
    if backing is not False:
        args['backing'] = backing
    q.execute('blockdev-add', args)


class Case:
    """One daemon with the images of one job case, and the trace of the
    job's events."""

    def __init__(self):
        bt.require_tool('qemu-img', 'qemu-io')
        self.d = bt.Daemon()
        self.trace = []
        self.q = None

    def p(self, name):
        return self.d.path(name)

    def __enter__(self):
        self.d.start()
        self.q = self.d.qmp()
        return self

    def __exit__(self, *a):
        self.d.__exit__(*a)

    def block_job(self):
        jobs = self.q.execute('query-block-jobs')
        return jobs[0] if jobs else None

    def run(self, cmd, args, resume='job-resume', max_stops=4):
        """Start the job and follow it to its end: complete it when ready,
        resume it when an error stopped it.  Returns the trace."""
        self.q.execute(cmd, args)
        job = args['job-id']
        stops = 0
        while True:
            ev = self.q.wait_event(('BLOCK_JOB_ERROR', 'JOB_STATUS_CHANGE',
                                    'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_READY',
                                    'BLOCK_JOB_CANCELLED'), timeout=60)
            name, data = ev['event'], ev.get('data', {})
            if name == 'BLOCK_JOB_ERROR':
                entry = ('error', data['device'], data['operation'], data['action'])
                if self.trace and self.trace[-1] == entry:
                    # one event per failed request in flight: how many
                    # were in flight is not part of the contract
                    continue
                self.trace.append(('error', data['device'], data['operation'],
                                   data['action']))
            elif name == 'JOB_STATUS_CHANGE':
                st = data['status']
                if st == 'paused' and self.trace and self.trace[-1][0] == 'error' \
                        and self.trace[-1][3] == 'stop':
                    info = self.block_job()
                    self.trace.append(('paused', info['status'], info['io-status'],
                                       info['paused']))
                    stops += 1
                    if stops > max_stops:
                        self.q.execute('job-cancel', {'id': job})
                    elif resume == 'job-resume':
                        self.q.execute('job-resume', {'id': job})
                    else:
                        self.q.execute('block-job-resume', {'device': job})
                    continue
                if st == 'running' and self.trace and self.trace[-1][0] == 'paused':
                    info = self.block_job()
                    # io-status is reset by the resume (a short job may
                    # be gone already)
                    self.trace.append(('resumed', info['io-status'] if info else 'ok'))
                    continue
                if st in ('created', 'running', 'paused'):
                    continue
                self.trace.append(('status', st))
                if st == 'ready':
                    self.q.execute('job-complete', {'id': job})
                if st == 'null':
                    break
            elif name == 'BLOCK_JOB_COMPLETED':
                self.trace.append(('completed', data['type'], data.get('error')))
            elif name == 'BLOCK_JOB_CANCELLED':
                self.trace.append(('cancelled', data['type']))
        if os.environ.get('IOERR_TRACE'):
            print('TRACE %s %r' % (cmd, self.trace), file=sys.stderr)
        return self.trace

    def finish(self, *images):
        self.d.stop()
        for img in images:
            bt.check_image(img)


def compare(a, b, match=True, fa='qcow2', fb='qcow2'):
    p = bt.run(['qemu-img', 'compare', '-f', fa, '-F', fb, a, b], check=False)
    if (p.returncode == 0) != match:
        raise AssertionError('qemu-img compare %s %s: rc %d (%s), want %s'
                             % (a, b, p.returncode, p.stdout.strip(),
                                'identical' if match else 'different'))


def reference(c):
    """A raw image holding DATA: what a finished copy reads."""
    ref = c.p('ref.raw')
    qimg('create', '-f', 'raw', ref, str(SIZE))
    offline_write(ref, DATA, 'raw')
    return ref


# --- expected traces (qemu-storage-daemon 7.2) ---

def t_ok(kind, mirror=False):
    out = [('status', 'ready')] if mirror else []
    return out + [('status', 'waiting'), ('status', 'pending'),
                  ('completed', kind, None), ('status', 'concluded'), ('status', 'null')]


def t_fail(kind, op, action='report', err='Input/output error'):
    return [('error', 'j', op, action), ('status', 'aborting'),
            ('completed', kind, err), ('status', 'concluded'), ('status', 'null')]


def t_stop(kind, op, iostatus='failed', mirror=False):
    return [('error', 'j', op, 'stop'), ('paused', 'paused', iostatus, True),
            ('resumed', 'ok')] + t_ok(kind, mirror)


def t_ignore(kind, op, mirror=False):
    return [('error', 'j', op, 'ignore')] + t_ok(kind, mirror)


# stream goes on past an ignored error but ends with it, keeping the
# backing file
T_STREAM_IGNORE = [('error', 'j', 'read', 'ignore'), ('status', 'aborting'),
                   ('completed', 'stream', 'Input/output error'), ('status', 'concluded'),
                   ('status', 'null')]


def check_trace(got, want):
    bt.assert_eq(got, want, 'job trace')


# --- backup ---

def backup_case(where, policy, errnum=errno.EIO, once=None, resume='job-resume'):
    """blockdev-backup src -> tgt with an error under 'where' ('source':
    read_aio on src's file, 'target': write_aio on tgt's file)."""
    if once is None:
        once = policy != 'report'
    with Case() as c:
        src, tgt = c.p('src.qcow2'), c.p('tgt.qcow2')
        qimg('create', '-f', 'qcow2', src, str(SIZE))
        qimg('create', '-f', 'qcow2', tgt, str(SIZE))
        offline_write(src, DATA)
        add_qcow2(c.q, 'src', src, rule('read_aio', errnum, once) if where == 'source' else None)
        add_qcow2(c.q, 'tgt', tgt, rule('write_aio', errnum, once) if where == 'target' else None)
        key = 'on-source-error' if where == 'source' else 'on-target-error'
        tr = c.run('blockdev-backup', {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                                       'sync': 'full', key: policy}, resume=resume)
        c.finish(src, tgt)
        ok = tr[-3] == ('completed', 'backup', None)
        compare(src, tgt, match=ok)
        return tr


def test_backup_source_report():
    check_trace(backup_case('source', 'report'), t_fail('backup', 'read'))


def test_backup_target_report():
    check_trace(backup_case('target', 'report'), t_fail('backup', 'write'))


def test_backup_source_stop():
    check_trace(backup_case('source', 'stop'), t_stop('backup', 'read'))


def test_backup_target_stop_block_job_resume():
    check_trace(backup_case('target', 'stop', resume='block-job-resume'),
                t_stop('backup', 'write'))


def test_backup_source_ignore():
    check_trace(backup_case('source', 'ignore'), t_ignore('backup', 'read'))


def test_backup_target_ignore():
    check_trace(backup_case('target', 'ignore'), t_ignore('backup', 'write'))


def test_backup_target_enospc():
    check_trace(backup_case('target', 'enospc', errno.ENOSPC),
                t_stop('backup', 'write', 'nospace'))
    check_trace(backup_case('target', 'enospc', errno.EIO, once=False),
                t_fail('backup', 'write'))


def test_backup_target_enospc_report():
    check_trace(backup_case('target', 'report', errno.ENOSPC),
                t_fail('backup', 'write', err='No space left on device'))


# --- mirror ---

def mirror_case(where, policy, errnum=errno.EIO, once=None, drive=False):
    if once is None:
        once = policy != 'report'
    with Case() as c:
        src, tgt = c.p('src.qcow2'), c.p('tgt.qcow2')
        qimg('create', '-f', 'qcow2', src, str(SIZE))
        qimg('create', '-f', 'qcow2', tgt, str(SIZE))
        offline_write(src, DATA)
        add_qcow2(c.q, 'src', src, rule('read_aio', errnum, once) if where == 'source' else None)
        key = 'on-source-error' if where == 'source' else 'on-target-error'
        if drive:
            target = tgt
            if where == 'target':
                target = 'json:' + __import__('json').dumps(
                    {'driver': 'blkdebug', 'inject-error': rule('write_aio', errnum, once),
                     'image': {'driver': 'file', 'filename': tgt}})
                # the rule fires on qcow2's data writes: the format
                # is qcow2 above blkdebug
            args = {'job-id': 'j', 'device': 'src', 'target': target, 'format': 'qcow2',
                    'mode': 'existing', 'sync': 'full', key: policy}
            cmd = 'drive-mirror'
        else:
            add_qcow2(c.q, 'tgt', tgt,
                      rule('write_aio', errnum, once) if where == 'target' else None)
            args = {'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                    key: policy}
            cmd = 'blockdev-mirror'
        tr = c.run(cmd, args)
        c.finish(src, tgt)
        ok = tr[-3] == ('completed', 'mirror', None)
        compare(src, tgt, match=ok)
        return tr


def test_mirror_source_report():
    check_trace(mirror_case('source', 'report'), t_fail('mirror', 'read'))


def test_mirror_target_report():
    check_trace(mirror_case('target', 'report'), t_fail('mirror', 'write'))


def test_mirror_source_stop():
    check_trace(mirror_case('source', 'stop'), t_stop('mirror', 'read', mirror=True))


def test_mirror_target_stop():
    check_trace(mirror_case('target', 'stop'), t_stop('mirror', 'write', mirror=True))


def test_mirror_source_ignore():
    check_trace(mirror_case('source', 'ignore'), t_ignore('mirror', 'read', mirror=True))


def test_mirror_target_ignore():
    check_trace(mirror_case('target', 'ignore'), t_ignore('mirror', 'write', mirror=True))


def test_mirror_target_enospc():
    check_trace(mirror_case('target', 'enospc', errno.ENOSPC),
                t_stop('mirror', 'write', 'nospace', mirror=True))


def test_drive_mirror_source_stop():
    check_trace(mirror_case('source', 'stop', drive=True),
                t_stop('mirror', 'read', mirror=True))


def test_drive_mirror_source_report():
    check_trace(mirror_case('source', 'report', drive=True), t_fail('mirror', 'read'))


# --- stream and commit ---

def chain_case(kind, where, policy, errnum=errno.EIO, once=None):
    """kind 'stream': base (data) <- top, block-stream into top, errors
    reading base.  'commit': base <- mid (data) <- top, mid committed into
    base; 'active': base <- top (data), top committed into base.  where:
    'source' (read_aio on the node read) or 'target' (write_aio on base)."""
    if once is None:
        once = policy != 'report'
    with Case() as c:
        base, mid, top = c.p('base.qcow2'), c.p('mid.qcow2'), c.p('top.qcow2')
        ref = reference(c)
        qimg('create', '-f', 'qcow2', base, str(SIZE))
        chain = [base, top] if kind in ('stream', 'active') else [base, mid, top]
        for lower, upper in zip(chain, chain[1:]):
            qimg('create', '-f', 'qcow2', '-b', lower, '-F', 'qcow2', upper)
        data_in = {'stream': base, 'active': top, 'commit': mid}[kind]
        offline_write(data_in, DATA)
        read_rule = rule('read_aio', errnum, once) if where == 'source' else None
        write_rule = rule('write_aio', errnum, once) if where == 'target' else None
        add_qcow2(c.q, 'base', base, read_rule if data_in == base else write_rule, None)
        if kind == 'commit':
            add_qcow2(c.q, 'mid', mid, read_rule, 'base')
            add_qcow2(c.q, 'top', top, None, 'mid')
        else:
            add_qcow2(c.q, 'top', top, read_rule if data_in == top else None, 'base')
        if kind == 'stream':
            cmd, args = 'block-stream', {'job-id': 'j', 'device': 'top'}
        elif kind == 'commit':
            cmd, args = 'block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid',
                                         'base-node': 'base'}
        else:
            cmd, args = 'block-commit', {'job-id': 'j', 'device': 'top'}
        args['on-error'] = policy
        tr = c.run(cmd, args)
        c.finish(*chain)
        # whatever happened, the top of the chain reads the data
        compare(top, ref, fb='raw')
        ok = tr[-3][2] is None
        if kind != 'stream' and ok:
            compare(base, ref, fb='raw')
        return tr


def test_stream_report():
    check_trace(chain_case('stream', 'source', 'report'), t_fail('stream', 'read'))


def test_stream_stop():
    check_trace(chain_case('stream', 'source', 'stop'), t_stop('stream', 'read'))


def test_stream_ignore():
    check_trace(chain_case('stream', 'source', 'ignore'), T_STREAM_IGNORE)


def test_stream_enospc():
    check_trace(chain_case('stream', 'source', 'enospc', errno.ENOSPC),
                t_stop('stream', 'read', 'nospace'))
    check_trace(chain_case('stream', 'source', 'enospc'), t_fail('stream', 'read'))


def test_stream_base_over_blkdebug():
    """The new backing file name of a stream's top names a base whose file
    is blkdebug with rules: json: of the whole base (not of its file
    child), so the image opens again (qemu-img check)."""
    with Case() as c:
        base, mid, top = c.p('base.qcow2'), c.p('mid.qcow2'), c.p('top.qcow2')
        ref = reference(c)
        qimg('create', '-f', 'qcow2', base, str(SIZE))
        qimg('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid)
        qimg('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top)
        offline_write(mid, DATA)
        add_qcow2(c.q, 'base', base, rule('write_aio'), None)
        add_qcow2(c.q, 'mid', mid, None, 'base')
        add_qcow2(c.q, 'top', top, None, 'mid')
        check_trace(c.run('block-stream', {'job-id': 'j', 'device': 'top',
                                           'base-node': 'base'}), t_ok('stream'))
        c.finish(base, top)
        info = bt.run(['qemu-img', 'info', '--output=json', top]).stdout
        bt.assert_in('blkdebug', info, 'backing file name')
        compare(top, ref, fb='raw')


def test_commit_source_report():
    check_trace(chain_case('commit', 'source', 'report'), t_fail('commit', 'read'))


def test_commit_target_report():
    check_trace(chain_case('commit', 'target', 'report'), t_fail('commit', 'write'))


def test_commit_source_stop():
    check_trace(chain_case('commit', 'source', 'stop'), t_stop('commit', 'read'))


def test_commit_target_stop():
    check_trace(chain_case('commit', 'target', 'stop'), t_stop('commit', 'write'))


def test_commit_ignore():
    check_trace(chain_case('commit', 'source', 'ignore'), t_ignore('commit', 'read'))
    check_trace(chain_case('commit', 'target', 'ignore'), t_ignore('commit', 'write'))


def test_commit_target_enospc():
    check_trace(chain_case('commit', 'target', 'enospc', errno.ENOSPC),
                t_stop('commit', 'write', 'nospace'))


def test_active_commit_source_report():
    check_trace(chain_case('active', 'source', 'report'), t_fail('commit', 'read'))


def test_active_commit_target_report():
    check_trace(chain_case('active', 'target', 'report'), t_fail('commit', 'write'))


def test_active_commit_source_stop():
    check_trace(chain_case('active', 'source', 'stop'), t_stop('commit', 'read', mirror=True))


def test_active_commit_target_stop():
    check_trace(chain_case('active', 'target', 'stop'), t_stop('commit', 'write', mirror=True))


def test_active_commit_ignore():
    check_trace(chain_case('active', 'source', 'ignore'),
                t_ignore('commit', 'read', mirror=True))
    check_trace(chain_case('active', 'target', 'ignore'),
                t_ignore('commit', 'write', mirror=True))


def test_active_commit_target_enospc():
    check_trace(chain_case('active', 'target', 'enospc', errno.ENOSPC),
                t_stop('commit', 'write', 'nospace', mirror=True))


# --- exports over a failing node ---

BAD_READ = 1 * MiB       # reads touching this offset fail with EIO
BAD_WRITE = 2 * MiB      # writes touching this one with ENOSPC
BAD_WRITE_EIO = 3 * MiB  # and these with EIO


def failing_node(c):
    """A raw node 'dbg' over blkdebug failing reads and writes that touch
    one sector each, every time; everything else works.  Returns the
    image's path."""
    img = bt.make_image(c.p('a.raw'), SIZE, pattern=0x3c)
    rules = [{'event': 'none', 'iotype': 'read', 'errno': errno.EIO,
              'sector': BAD_READ // 512, 'immediately': True, 'once': False},
             {'event': 'none', 'iotype': 'write', 'errno': errno.ENOSPC,
              'sector': BAD_WRITE // 512, 'immediately': True, 'once': False},
             {'event': 'none', 'iotype': 'write', 'errno': errno.EIO,
              'sector': BAD_WRITE_EIO // 512, 'immediately': True, 'once': False}]
    c.q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'dbg',
                                 'file': {'driver': 'blkdebug', 'inject-error': rules,
                                          'image': {'driver': 'file', 'filename': img}}})
    return img


def no_io_error_events(c):
    """QEMU's exports have no werror/rerror: only guest devices send
    BLOCK_IO_ERROR, so qemu-storage-daemon sends none for an export's
    failed requests, and neither does blockd."""
    c.q.execute('query-version')   # pick up what was sent so far
    got = [e['event'] for e in c.q.events]
    bt.assert_eq('BLOCK_IO_ERROR' in got, False, 'BLOCK_IO_ERROR for an export (%r)' % got)


def nbd_requests(c, structured):
    nbd = bt.require_nbd()
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(c.d.uri())
    for _ in range(2):
        bt.assert_eq(h.pread(4096, 0), b'\x3c' * 4096, 'good read')
        if not structured or not bt.is_reference():
            # qemu-storage-daemon 7.2 drops a client whose structured
            # read fails (see test_nbd_errno); blockd sends the error
            bt.assert_eq(bt.nbd_errno(h.pread, 4096, BAD_READ), errno.EIO, 'bad read')
        bt.assert_eq(bt.nbd_errno(h.pwrite, b'\x11' * 4096, BAD_WRITE), errno.ENOSPC,
                     'write at ENOSPC')
        bt.assert_eq(bt.nbd_errno(h.pwrite, b'\x11' * 4096, BAD_WRITE_EIO), errno.EIO,
                     'write at EIO')
        h.pwrite(b'\x22' * 4096, 8192)
        bt.assert_eq(h.pread(4096, 8192), b'\x22' * 4096, 'good write read back')
        if not structured or not bt.is_reference():
            # a request spanning the bad sector fails as a whole
            bt.assert_eq(bt.nbd_errno(h.pread, 65536, BAD_READ - 8192), errno.EIO,
                         'read across the bad sector')
    h.flush()
    h.shutdown()


def test_nbd_export_errors():
    """An NBD export over a failing node: each failing request gets EIO or
    ENOSPC, the connection stays, other requests are served."""
    with Case() as c:
        img = failing_node(c)
        c.q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                  'data': {'path': c.d.nbd_sock}}})
        c.q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'dbg',
                                         'name': 'disk', 'writable': True})
        nbd_requests(c, False)
        nbd_requests(c, True)
        no_io_error_events(c)
        c.q.execute('block-export-del', {'id': 'e0'})
        c.finish()
        bt.run(['qemu-io', '-f', 'raw', '-c', 'read -P 0x22 8192 4096',
                '-c', 'read -P 0x3c %d 4096' % BAD_WRITE,
                '-c', 'read -P 0x3c %d 4096' % BAD_WRITE_EIO, img])


def test_fuse_export_errors():
    """A FUSE export over a failing node: pread/pwrite get EIO or ENOSPC,
    the mount stays and serves the rest."""
    bt.require_fuse()
    with Case() as c:
        img = failing_node(c)
        mnt = c.p('mnt')
        with bt.fuse_export(c.q, 'dbg', mnt, writable=True):
            with bt.fd_open(mnt, os.O_RDWR) as fd:
                for _ in range(2):
                    bt.assert_eq(os.pread(fd, 4096, 0), b'\x3c' * 4096, 'good read')
                    for off, data, want in ((BAD_READ, None, errno.EIO),
                                            (BAD_WRITE, b'\x11' * 4096, errno.ENOSPC),
                                            (BAD_WRITE_EIO, b'\x11' * 4096, errno.EIO)):
                        try:
                            if data is None:
                                os.pread(fd, 4096, off)
                            else:
                                os.pwrite(fd, data, off)
                            got = 0
                        except OSError as ex:
                            got = ex.errno
                        bt.assert_eq(errno.errorcode.get(got, got), errno.errorcode[want],
                                     'errno at %d' % off)
                    os.pwrite(fd, b'\x22' * 4096, 8192)
                    bt.assert_eq(os.pread(fd, 4096, 8192), b'\x22' * 4096, 'read back')
                os.fsync(fd)
            no_io_error_events(c)
        c.finish()
        bt.run(['qemu-io', '-f', 'raw', '-c', 'read -P 0x22 8192 4096',
                '-c', 'read -P 0x3c %d 4096' % BAD_WRITE, img])


# --- a flaky device: nbdkit's error filter behind the nbd driver ---

def flaky_source(cmd):
    """'cmd' (blockdev-backup or blockdev-mirror) from an nbd node whose server (nbdkit memory + error filter)
    fails 30% of reads with EIO: on-source-error=stop pauses the job at
    each failure (BLOCK_JOB_ERROR read/stop, io-status failed); resumed
    each time, it ends and the copy equals what was written."""
    bt.require_tool('nbdkit', 'qemu-img', 'qemu-io')
    with Case() as c:
        sock = c.p('flaky.sock')
        uri = 'nbd+unix:///?socket=' + sock
        log = open(c.p('nbdkit.log'), 'w')
        kit = subprocess.Popen(['nbdkit', '-f', '-U', sock, '--filter=error', 'memory',
                                '64M', 'error=EIO', 'error-pread-rate=30%'],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            bt.wait_for(lambda: os.path.exists(sock), 15, 'nbdkit socket')
            # the data (writes never fail): enough reads for many failures
            data = DATA + ['write -P 0x77 %d %d' % (8 * MiB, 16 * MiB)]
            bt.run(['qemu-io', '-f', 'raw'] + sum((['-c', w] for w in data), []) + [uri])
            ref = c.p('ref.raw')
            qimg('create', '-f', 'raw', ref, '64M')
            offline_write(ref, data, 'raw')
            tgt = c.p('tgt.qcow2')
            qimg('create', '-f', 'qcow2', tgt, '64M')
            c.q.execute('blockdev-add', {'driver': 'nbd', 'node-name': 'src',
                                         'server': {'type': 'unix', 'path': sock}})
            add_qcow2(c.q, 'tgt', tgt)
            tr = c.run(cmd, {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                             'sync': 'full', 'on-source-error': 'stop'}, max_stops=1000)
            want_end = t_ok('backup') if cmd == 'blockdev-backup' else t_ok('mirror', True)
            stops = [t for t in tr if t[0] == 'paused']
            for i, t in enumerate(tr):
                if t == ('resumed', 'failed'):
                    # the resumed job failed again before the query (it
                    # pauses at its next pause point), as QEMU's would
                    bt.assert_eq(tr[i + 1][:4], ('error', 'j', 'read', 'stop'), 'next')
                    tr[i] = ('resumed', 'ok')
            if os.environ.get('IOERR_TRACE'):
                print('stops: %d' % len(stops), file=sys.stderr)
            bt.assert_eq(tr[-len(want_end):], want_end, 'end of the trace')
            bt.assert_eq(set(tr[:-len(want_end)]), {('error', 'j', 'read', 'stop'),
                                        ('paused', 'paused', 'failed', True),
                                        ('resumed', 'ok')} if stops else set(),
                         'events before the end')
            c.q.execute('blockdev-del', {'node-name': 'src'})
            c.finish(tgt)
            compare(tgt, ref, fb='raw')
        finally:
            kit.kill()
            kit.wait(30)
            log.close()


def test_flaky_nbd_source_backup():
    flaky_source('blockdev-backup')


def test_flaky_nbd_source_mirror():
    flaky_source('blockdev-mirror')


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
