# SPDX-License-Identifier: MIT
"""Shared helpers for blockd's integration tests: start the daemon under test,
talk QMP to it, skip when a tool is missing, and always clean up.  Tests wait
for jobs with QMP.run_job (QEMU iotests' VM.run_job) and hold what must be
undone in 'with' blocks: nbd_export, nbd_connection, fuse_export,
fuse_mounted, fd_open, start_daemon / start_exporting (Daemon objects).

nbdkit serving blockd's plugin: Nbdkit (a 'with' block), nbdkit_plugin().

The daemon under test is chosen by the environment:
  BLOCKD_REFERENCE=1  -> /usr/bin/qemu-storage-daemon (proves the test is right)
  BLOCKD=/path        -> that binary (meson passes the built blockd)
  otherwise           -> <repo>/build/daemon/blockd
  BLOCKD_SANDBOX=ARGS -> every Daemon also gets --sandbox ARGS (blockd only),
                         to run a suite inside the seccomp filter
Exit code 77 means "skipped" (meson's convention).
"""

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QSD = '/usr/bin/qemu-storage-daemon'


class Skip(Exception):
    """Raised to skip a test with a reason."""


def is_reference():
    return os.environ.get('BLOCKD_REFERENCE', '') not in ('', '0')


def daemon_exe():
    if is_reference():
        return QSD
    # Absolute: the daemon starts in its temporary directory.
    exe = os.path.abspath(os.environ.get('BLOCKD') or
                          os.path.join(REPO, 'build', 'daemon', 'blockd'))
    if not os.access(exe, os.X_OK):
        raise Skip('daemon binary %s not built' % exe)
    return exe


def daemon_sanitized():
    """Whether the daemon under test is an ASan or TSan build: their
    allocators keep freed memory (quarantine), so its RSS says nothing
    about what blockd holds."""
    if is_reference():
        return False
    with open(daemon_exe(), 'rb') as f:
        data = f.read()
    return b'__asan_init' in data or b'__tsan_init' in data


def daemon_tsan():
    """Whether the daemon under test is a ThreadSanitizer build."""
    if is_reference():
        return False
    with open(daemon_exe(), 'rb') as f:
        return b'__tsan_init' in f.read()


def proc_status_kib(pid, field):
    """A KiB figure of /proc/PID/status (VmHWM, VmRSS, ...)."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise AssertionError('no %s in /proc/%d/status' % (field, pid))


def sandbox_args(exe=None):
    """--sandbox ARGS when BLOCKD_SANDBOX asks for it (never for
    qemu-storage-daemon, the reference or a peer a test starts beside
    blockd: it has no --sandbox)."""
    arg = os.environ.get('BLOCKD_SANDBOX', '')
    if not arg or is_reference() or (exe and os.path.realpath(exe) == os.path.realpath(QSD)):
        return []
    return ['--sandbox', arg]


def require_tool(*names):
    for name in names:
        if shutil.which(name) is None:
            raise Skip('tool %s not installed' % name)


def skip_if_reference(reason):
    if is_reference():
        raise Skip('reference daemon: ' + reason)


def require_nbd():
    try:
        import nbd  # noqa: F401
    except ImportError:
        raise Skip('python module nbd (libnbd binding) missing; run with /usr/bin/python3')
    return sys.modules['nbd']


def nbd_errno(fn, *args):
    """Run a libnbd call that must fail; return the errno the client read
    (a number)."""
    nbd = require_nbd()
    try:
        fn(*args)
    except nbd.Error as e:
        code = e.errno
        if isinstance(code, str):
            code = getattr(errno, code, code)
        return code
    raise AssertionError('NBD request %s%r succeeded, expected an error' % (fn.__name__, args))


def run(cmd, check=True, timeout=60, **kw):
    """Run a command, capture text output, and fail loudly if asked.

    Bytes that are not UTF-8 (a tool printing part of an image, say) come
    out as U+FFFD instead of failing the test with a UnicodeDecodeError."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, errors='replace', timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError('%s exited %d\nstdout: %s\nstderr: %s'
                             % (' '.join(cmd), p.returncode, p.stdout, p.stderr))
    return p


def fio_has_nbd():
    """Whether fio is installed with its nbd engine (fio >= 3.18 built
    with libnbd)."""
    if shutil.which('fio') is None:
        return False
    p = run(['fio', '--enghelp=nbd'], check=False)
    return p.returncode == 0 and 'uri' in p.stdout


def require_fio_nbd():
    if not fio_has_nbd():
        raise Skip('fio with the nbd engine not installed')


def fio(args, cwd, timeout=300):
    """Run fio in `cwd` (the test's temporary directory) and return the
    process; the caller checks the exit status.  Verify jobs would save
    their state files (local-JOB-N-verify.state) in the working directory
    at exit: verify_state_save=0 turns that off, and cwd keeps anything
    else fio writes out of the source tree."""
    return run(['fio'] + list(args) + ['--verify_state_save=0'], check=False,
               timeout=timeout, cwd=cwd)


def assert_eq(got, expected, what=''):
    if got != expected:
        raise AssertionError('%s: expected %r, got %r' % (what or 'value', expected, got))


def assert_in(needle, hay, what=''):
    if needle not in hay:
        raise AssertionError('%s: expected %r in %r' % (what or 'value', needle, hay))


def wait_for(pred, timeout=10.0, what='condition'):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError('timed out waiting for ' + what)


def make_image(path, size, pattern=None):
    """Create a sparse raw image, optionally filled with a byte pattern."""
    with open(path, 'wb') as f:
        f.truncate(size)
        if pattern is not None:
            f.write(bytes([pattern]) * size)
    return path


def write_at(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


class QMPError(Exception):
    def __init__(self, reply):
        err = reply.get('error', {})
        super().__init__('%s: %s' % (err.get('class'), err.get('desc')))
        self.reply = reply
        self.cls = err.get('class')
        self.desc = err.get('desc')


class QMP:
    """A minimal QMP client: greeting, negotiation, execute(), events."""

    def __init__(self, path, negotiate=True, timeout=20.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b''
        self.events = []
        self.greeting = self.recv()
        if negotiate:
            self.execute('qmp_capabilities')

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send(self, obj):
        self.send_raw(json.dumps(obj) + '\n')

    def recv(self):
        """Next JSON message (reply or event), as received."""
        while b'\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError('QMP connection closed')
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        line = line.strip()
        if not line:
            return self.recv()
        return json.loads(line)

    def reply(self):
        """Next non-event message; events are queued in self.events."""
        while True:
            msg = self.recv()
            if 'event' in msg:
                self.events.append(msg)
                continue
            return msg

    def cmd(self, name, args=None, id=None):
        """Send a command and return the raw reply dict."""
        req = {'execute': name}
        if args is not None:
            req['arguments'] = args
        if id is not None:
            req['id'] = id
        self.send(req)
        return self.reply()

    def execute(self, name, args=None, **kw):
        """Execute and return 'return'; raise QMPError on an error reply."""
        if kw:
            args = dict(args or {}, **kw)
        r = self.cmd(name, args)
        if 'error' in r:
            raise QMPError(r)
        if 'return' not in r:
            raise AssertionError('unexpected reply %r' % r)
        return r['return']

    def error(self, name, args=None):
        """Execute a command that must fail; return its error dict."""
        r = self.cmd(name, args)
        if 'error' not in r:
            raise AssertionError('%s %r: expected an error, got %r' % (name, args, r))
        return r['error']

    def wait_event(self, name, timeout=10.0, match=None):
        """The next event called `name` (or any of a tuple of names) whose
        data holds every key/value of the dict `match`; other events stay
        queued for later waits."""
        names = (name,) if isinstance(name, str) else tuple(name)

        def pred(ev):
            if ev['event'] not in names:
                return False
            data = ev.get('data', {})
            return all(data.get(k) == v for k, v in (match or {}).items())
        return self._wait(pred, timeout, 'event %s%s' % ('/'.join(names),
                                                         ' %r' % match if match else ''))

    def _wait(self, pred, timeout, what):
        """Pop the first queued event for which pred(ev) holds, reading
        more from the socket until one comes or `timeout` passes."""
        end = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if pred(ev):
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError('timed out waiting for ' + what)
            self.sock.settimeout(left)
            try:
                msg = self.recv()
            except socket.timeout:
                continue
            finally:
                self.sock.settimeout(20.0)
            if 'event' in msg:
                self.events.append(msg)
            else:
                raise AssertionError('unexpected reply while waiting for %s: %r' % (what, msg))

    def wait_job_status(self, job, status, timeout=60.0):
        """Follow JOB_STATUS_CHANGE of `job` up to `status`; returns the
        statuses passed on the way, `status` last."""
        seen = []
        while not seen or seen[-1] != status:
            ev = self.wait_event('JOB_STATUS_CHANGE', timeout, match={'id': job})
            seen.append(ev['data']['status'])
        return seen

    def run_job(self, job, auto_finalize=True, auto_dismiss=False, pre_finalize=None,
                cancel=False, complete=False, pre_dismiss=None, wait=60.0):
        """Take a started job through to its end, as QEMU iotests' VM.run_job:
        follow its JOB_STATUS_CHANGE events to 'null'; on 'aborting' read its
        error from query-jobs; on 'ready' send job-complete if `complete`;
        on 'pending' (auto_finalize=False) call pre_finalize() then
        job-finalize, or job-cancel if `cancel`; on 'concluded'
        (auto_dismiss=False) call pre_dismiss() then job-dismiss.  The flags
        say how the job was started (QMP's defaults for block jobs are
        auto-finalize and auto-dismiss on; blockdev-create dismisses by hand).
        `wait` bounds the wait for each event.  Returns a JobRun: .error
        (None on success), .statuses, .events and .event (the job's
        BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED)."""
        run = JobRun(job)
        self._forget_earlier_runs(job)
        while True:
            ev = self._wait(lambda e: e['event'] in JOB_EVENTS and _job_of(e) == job,
                            wait, 'events of job %s (statuses so far %r)' % (job, run.statuses))
            if ev['event'] != 'JOB_STATUS_CHANGE':
                run.events.append(ev)
                continue
            status = ev['data']['status']
            run.statuses.append(status)
            if status == 'aborting':
                for j in self.execute('query-jobs'):
                    if j['id'] == job:
                        run.error = j.get('error')
            elif status == 'ready' and complete:
                self.execute('job-complete', id=job)
            elif status == 'pending' and not auto_finalize:
                if pre_finalize:
                    pre_finalize()
                self.execute('job-cancel' if cancel else 'job-finalize', id=job)
            elif status == 'concluded' and not auto_dismiss:
                if pre_dismiss:
                    pre_dismiss()
                self.execute('job-dismiss', id=job)
            elif status == 'null':
                # Anything of the job's still queued was sent before 'null'.
                for e in [e for e in self.events if e['event'] in JOB_EVENTS and
                          _job_of(e) == job]:
                    self.events.remove(e)
                    run.events.append(e)
                if run.error is None and run.completed_event():
                    run.error = run.completed_event()['data'].get('error')
                return run

    def _forget_earlier_runs(self, job):
        """Drop queued events of an earlier job of the same id (one that a
        test waited for by a single event): its 'null' must not end this
        run.  The job being run has been created (its start command was
        answered), so the last queued 'created' of the id starts it."""
        mine = [i for i, e in enumerate(self.events)
                if e['event'] in JOB_EVENTS and _job_of(e) == job]
        created = [i for i in mine if self.events[i]['event'] == 'JOB_STATUS_CHANGE' and
                   self.events[i]['data']['status'] == 'created']
        if created:
            stale = set(i for i in mine if i < created[-1])
            self.events = [e for i, e in enumerate(self.events) if i not in stale]


# The events run_job follows; block job events name the job 'device'.
JOB_EVENTS = ('JOB_STATUS_CHANGE', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED',
              'BLOCK_JOB_ERROR', 'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING')


def _job_of(ev):
    data = ev.get('data', {})
    return data.get('id', data.get('device'))


class JobRun:
    """What QMP.run_job saw of one job."""

    def __init__(self, job):
        self.job = job
        self.error = None       # the job's error; None when it succeeded
        self.statuses = []      # its JOB_STATUS_CHANGE statuses, in order
        self.events = []        # its BLOCK_JOB_* events, in order

    def completed_event(self):
        for ev in reversed(self.events):
            if ev['event'] in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED'):
                return ev
        return None

    @property
    def event(self):
        """The job's BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED event."""
        ev = self.completed_event()
        if ev is None:
            raise AssertionError('job %s ended without BLOCK_JOB_COMPLETED/CANCELLED; '
                                 'statuses %r, events %r' % (self.job, self.statuses, self.events))
        return ev


def run_job(q, job, **kw):
    """QMP.run_job on the session q."""
    return q.run_job(job, **kw)


class Daemon:
    """The daemon under test, started in a private temporary directory.

    Daemon(args) builds the command line; with qmp=True (default) a monitor
    socket is added. start() waits for every socket given in `wait` (plus the
    monitor) to accept connections. stop()/kill() always leave nothing behind.
    """

    def __init__(self, args=(), qmp=True, tmpdir=None, wait=(), monitors=1):
        self.owns_dir = tmpdir is None
        self.dir = tmpdir or tempfile.mkdtemp(prefix='blockd-test-')
        self.exe = daemon_exe()
        self.qmp_path = self.path('qmp.sock') if qmp else None
        self.args = list(args)
        # A QEMU socket chardev serves one client at a time: simultaneous
        # sessions need one monitor each (qmp.sock, qmp1.sock, ...).
        self.qmp_paths = []
        for i in range(monitors if qmp else 0):
            p = self.qmp_path if i == 0 else self.path('qmp%d.sock' % i)
            self.qmp_paths.append(p)
            self.args += ['--chardev', 'socket,id=qmp%d,path=%s,server=on,wait=off' % (i, p),
                          '--monitor', 'chardev=qmp%d' % i]
        self.wait = list(wait)
        # A command the daemon runs under (it ends with the daemon's
        # argv), e.g. one that prepares a namespace and passes signals on.
        self.wrapper = []
        self.proc = None
        self.stderr_path = self.path('daemon.stderr')
        self._qmps = []

    def path(self, name):
        return os.path.join(self.dir, name)

    @property
    def nbd_sock(self):
        return self.path('nbd.sock')

    def uri(self, name='disk'):
        return 'nbd+unix:///%s?socket=%s' % (name, self.nbd_sock)

    def start(self, timeout=15.0):
        self._err = open(self.stderr_path, 'w')
        self.proc = subprocess.Popen(self.wrapper + [self.exe] + self.args +
                                     sandbox_args(self.exe),
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err, cwd=self.dir)
        socks = self.qmp_paths + self.wait
        end = time.monotonic() + timeout
        for s in socks:
            while not self._can_connect(s):
                if self.proc.poll() is not None:
                    raise AssertionError('daemon exited with %d before %s appeared; stderr: %s'
                                         % (self.proc.returncode, s, self.stderr()))
                if time.monotonic() > end:
                    raise AssertionError('daemon socket %s did not appear; stderr: %s'
                                         % (s, self.stderr()))
                time.sleep(0.02)
        return self

    @staticmethod
    def _can_connect(path):
        if not os.path.exists(path):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stderr(self):
        try:
            with open(self.stderr_path, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def qmp(self, negotiate=True, monitor=0):
        """A QMP session on a monitor.  Tried again when the monitor drops
        the connection before its greeting: qemu-storage-daemon's socket
        chardev, still busy with start()'s probe connection, sometimes
        closes the next one at once (an EOF, or a reset when the probe's
        close races with the new connection), or refuses it while it
        re-arms its listener."""
        for attempt in range(5):
            try:
                q = QMP(self.qmp_paths[monitor], negotiate=negotiate)
                break
            except (EOFError, ConnectionResetError, ConnectionRefusedError):
                if attempt == 4:
                    raise
                time.sleep(0.2)
        self._qmps.append(q)
        return q

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        if not self.alive():
            raise AssertionError('daemon died (exit %s); stderr: %s'
                                 % (self.proc.returncode if self.proc else None, self.stderr()))

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('daemon did not exit within %ss' % timeout)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit code."""
        for q in self._qmps:
            q.close()
        self._qmps = []
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError('daemon ignored SIGTERM for %ss' % timeout)
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        for q in self._qmps:
            q.close()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, '_err', None):
            self._err.close()
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # contextlib.closing(Daemon(...)): cleanup only, without the clean
    # stop and the sanitizer check of 'with Daemon(...)'.
    close = cleanup

    def sanitizer_report(self):
        """ASan/UBSan/LSan/TSan findings in the daemon's stderr, if any."""
        err = self.stderr()
        for marker in ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
                       'WARNING: ThreadSanitizer'):
            if marker in err:
                return err[err.index(marker):][:4000]
        return None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.proc is not None and self.proc.poll() is None and exc_type is None:
            self.stop()  # a clean stop lets LeakSanitizer report
        report = self.sanitizer_report() if self.proc is not None else None
        if exc_type is not None and self.proc is not None:
            print('--- daemon stderr ---\n%s' % self.stderr()[-4000:])
        self.cleanup()
        if report and exc_type is None:
            raise AssertionError('sanitizer report from the daemon:\n' + report)


def nbd_export_args(d, image, name='disk', writable=True, fmt='raw', extra_export='', node_opts='',
                    file_opts=''):
    """Command-line arguments exporting `image` (raw over file) as `name`.
    node_opts go to both nodes, file_opts to the file node only."""
    args = ['--blockdev', 'driver=file,node-name=file0,filename=%s%s%s' % (image, node_opts, file_opts)]
    node = 'file0'
    if fmt == 'raw':
        args += ['--blockdev', 'driver=raw,node-name=fmt0,file=file0%s' % node_opts]
        node = 'fmt0'
    args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
             '--export', 'type=nbd,id=exp0,node-name=%s,name=%s,writable=%s%s'
             % (node, name, 'on' if writable else 'off', extra_export)]
    return args


def start_daemon(*args, **kw):
    """Daemon(*args, **kw), started; cleaned up if it fails to start.  For
    'with start_daemon(...) as d:'."""
    d = Daemon(*args, **kw)
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def start_exporting(image, writable=True, name='disk', qmp=True, extra_export='', node_opts='',
                    file_opts=''):
    """Start a daemon exporting `image` over NBD on a unix socket."""
    d = Daemon(qmp=qmp)
    try:
        d.args = nbd_export_args(d, image, name, writable, extra_export=extra_export,
                                 node_opts=node_opts, file_opts=file_opts) + d.args
        d.wait = [d.nbd_sock]
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def qemu_io(uri_or_file, *cmds, fmt='raw', check=True, extra=()):
    argv = ['qemu-io', '-f', fmt] + list(extra)
    for c in cmds:
        argv += ['-c', c]
    argv.append(uri_or_file)
    p = run(argv, check=False)
    if check:
        bad = p.returncode != 0 or 'Pattern verification failed' in p.stdout \
            or 'failed' in p.stdout.lower()
        if bad:
            raise AssertionError('qemu-io %s failed (rc %d)\nstdout: %s\nstderr: %s'
                                 % (' '.join(cmds), p.returncode, p.stdout, p.stderr))
    return p


# --- qcow2 images with persistent bitmaps ---

def qcow2_image(d, name='a.qcow2', size='64M', opts='cluster_size=65536'):
    """A new qcow2 image in the daemon's directory."""
    img = d.path(name)
    run(['qemu-img', 'create', '-f', 'qcow2', '-o', opts, img, size])
    return img


def start_qcow2(d, img, node_opts=',discard=unmap', export=True, extra=()):
    """(Re)start the daemon with 'disk' (qcow2 on file node f0) plus
    'extra' options, exported over NBD when asked; returns a QMP client."""
    if not hasattr(d, 'monitor_args'):
        d.monitor_args = list(d.args)
    d.args = list(extra) + [
        '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
        '--blockdev', 'driver=qcow2,node-name=disk,file=f0%s' % node_opts]
    d.wait = []
    if export:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                   '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        d.wait = [d.nbd_sock]
    d.args += d.monitor_args
    d.start()
    return d.qmp()


def image_bitmaps(img):
    """The persistent bitmaps qemu-img info sees in a qcow2 image (-U: the
    daemon may hold it open)."""
    info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', img]).stdout)
    return info.get('format-specific', {}).get('data', {}).get('bitmaps', [])


def check_image(img):
    """qemu-img check passes (no errors, no leaks)."""
    p = run(['qemu-img', 'check', img], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img check: rc %d\n%s%s' % (p.returncode, p.stdout, p.stderr))


# --- exports, connections and mounts that clean up after themselves ---

@contextlib.contextmanager
def _cleanup_on_exit(undo):
    """Run undo() when the block ends; if the block failed, undo() failing
    too (a dead daemon, say) must not hide the first error."""
    try:
        yield
    except BaseException:
        try:
            undo()
        except Exception:  # noqa: BLE001
            pass
        raise
    undo()


def del_export(q, id, mode='hard', timeout=30.0):
    """block-export-del and wait for its BLOCK_EXPORT_DELETED.  'hard'
    because a client that has exited may not have been noticed yet."""
    q.execute('block-export-del', {'id': id, 'mode': mode})
    q.wait_event('BLOCK_EXPORT_DELETED', timeout, match={'id': id})


@contextlib.contextmanager
def nbd_export(q, node, name=None, id=None, writable=False, mode='hard', **extra):
    """An NBD export of `node` (named `name`, default the node's name) on
    the running NBD server, deleted when the block ends; yields its name.
    extra: more block-export-add arguments (description=..., bitmaps=[...],
    with '_' for '-')."""
    name = name or node
    id = id or 'exp-' + name
    args = {'type': 'nbd', 'id': id, 'node-name': node, 'name': name, 'writable': writable}
    args.update({k.replace('_', '-'): v for k, v in extra.items()})
    q.execute('block-export-add', args)
    with _cleanup_on_exit(lambda: del_export(q, id, mode)):
        yield name


@contextlib.contextmanager
def nbd_connection(uri, meta_contexts=(), structured=True):
    """A libnbd handle connected to `uri` (after requesting meta_contexts),
    shut down when the block ends; yields the handle."""
    nbd = require_nbd()
    h = nbd.NBD()
    if not structured:
        h.set_request_structured_replies(False)
    for ctx in meta_contexts:
        h.add_meta_context(ctx)
    h.connect_uri(uri)
    with _cleanup_on_exit(h.shutdown):
        yield h


def is_mounted(path):
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        for line in f:
            fields = line.split()
            # the mount point field escapes blanks as \040
            if fields[4].replace('\\040', ' ') == path:
                return True
    return False


def force_unmount(path):
    """Best-effort: leave no mount behind whatever happened."""
    for _ in range(5):
        if not is_mounted(path):
            return
        subprocess.run(['fusermount3', '-u', '-z', path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if is_mounted(path):
            subprocess.run(['umount', '-l', path], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def require_fuse():
    if not os.path.exists('/dev/fuse'):
        raise Skip('/dev/fuse missing')
    require_tool('fusermount3')


@contextlib.contextmanager
def fuse_mounted(*mountpoints, wait=True):
    """Wait until every mountpoint is mounted (a daemon started with FUSE
    exports; wait=False: a block that will mount them); whatever happens,
    none is left mounted after the block."""
    try:
        for m in mountpoints if wait else ():
            wait_for(lambda: is_mounted(m), what='FUSE mount on %s' % m)
        yield
    finally:
        for m in mountpoints:
            force_unmount(m)


@contextlib.contextmanager
def fuse_export(q, node, mountpoint, id='fuse0', writable=False, **extra):
    """A FUSE export of `node` over `mountpoint` (created as an empty file
    when missing), deleted and unmounted when the block ends; yields the
    mountpoint.  extra: more block-export-add arguments ('_' for '-')."""
    if not os.path.exists(mountpoint):
        open(mountpoint, 'w').close()
    args = {'type': 'fuse', 'id': id, 'node-name': node, 'mountpoint': mountpoint,
            'writable': writable}
    args.update({k.replace('_', '-'): v for k, v in extra.items()})
    q.execute('block-export-add', args)
    with fuse_mounted(mountpoint):
        with _cleanup_on_exit(lambda: del_export(q, id)):
            yield mountpoint


@contextlib.contextmanager
def fd_open(path, flags, mode=0o644, quiet_close=False):
    """os.open(path) for the block; the descriptor is closed at its end.
    quiet_close: ignore an error of that close (the export behind the file
    is gone and close reports the dead connection)."""
    fd = os.open(path, flags, mode)

    def close():
        try:
            os.close(fd)
        except OSError:
            if not quiet_close:
                raise
    with _cleanup_on_exit(close):
        yield fd


# --- nbdkit serving blockd's graph (nbdkit-plugin/) ---

def nbdkit_plugin():
    """The plugin under test: $BLOCKD_NBDKIT_PLUGIN (meson passes the built
    one), else <repo>/build/nbdkit-plugin/nbdkit-blockd-plugin.so.  Skips
    when nbdkit or the plugin is missing, and against the reference daemon
    (qemu-storage-daemon has no nbdkit plugin)."""
    skip_if_reference('the nbdkit plugin is blockd only')
    require_tool('nbdkit')
    so = os.path.abspath(os.environ.get('BLOCKD_NBDKIT_PLUGIN') or
                         os.path.join(REPO, 'build', 'nbdkit-plugin', 'nbdkit-blockd-plugin.so'))
    if not os.path.exists(so):
        raise Skip('nbdkit plugin %s not built' % so)
    return so


def nbdkit_env(plugin):
    """The environment nbdkit needs to load `plugin`.  An ASan build of the
    plugin needs the ASan runtime loaded first (nbdkit itself is not
    instrumented): LD_PRELOAD the libasan the plugin links, and the shim
    meson builds next to it ($BLOCKD_ASAN_PRELOAD_SHIM,
    tests/integration/asan-preload-shim.c) without which nbdkit hangs at
    exit, and LeakSanitizer suppressions for nbdkit's own allocations."""
    env = dict(os.environ)
    p = run(['ldd', plugin], check=False)
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].startswith('libasan.so') and len(parts) >= 3:
            shim = os.environ.get('BLOCKD_ASAN_PRELOAD_SHIM')
            if not shim:
                raise Skip('an ASan plugin in nbdkit needs BLOCKD_ASAN_PRELOAD_SHIM '
                           '(meson test sets it)')
            env['LD_PRELOAD'] = parts[2] + ' ' + shim
            # nbdkit's own and its filters' allocations at exit are not
            # ours to judge (see the suppressions file); NBDKIT_VALGRIND
            # keeps filters mapped so that their frames have a name.
            supp = os.path.join(REPO, 'tests', 'integration', 'lsan-nbdkit.supp')
            opts = env.get('LSAN_OPTIONS', '')
            env['LSAN_OPTIONS'] = (opts + ':' if opts else '') + 'suppressions=' + supp
            env['NBDKIT_VALGRIND'] = '1'
    return env


class Nbdkit:
    """nbdkit in the foreground (-f) serving blockd's plugin on a unix
    socket in `tmpdir`: args are nbdkit options and plugin parameters
    after the plugin (filters go in `filters`).  start() waits for the
    socket; stop() sends SIGTERM and returns the exit status; a sanitizer
    report in its stderr fails the test."""

    def __init__(self, tmpdir, params=(), filters=(), options=(), sock='nbdkit.sock'):
        self.plugin = nbdkit_plugin()
        self.sock = os.path.join(tmpdir, sock)
        self.stderr_path = os.path.join(tmpdir, sock + '.stderr')
        self.cmd = (['nbdkit', '-f', '-U', self.sock] + list(options) +
                    ['--filter=' + f for f in filters] + [self.plugin] + list(params))
        self.dir = tmpdir
        self.proc = None

    @property
    def uri(self):
        return 'nbd+unix:///?socket=' + self.sock

    def start(self, timeout=15.0):
        self._err = open(self.stderr_path, 'w')
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=self._err, cwd=self.dir,
                                     env=nbdkit_env(self.plugin))
        end = time.monotonic() + timeout
        while not Daemon._can_connect(self.sock):
            if self.proc.poll() is not None:
                raise AssertionError('nbdkit exited with %d; stderr: %s'
                                     % (self.proc.returncode, self.stderr()))
            if time.monotonic() > end:
                raise AssertionError('nbdkit socket did not appear; stderr: %s' % self.stderr())
            time.sleep(0.02)
        return self

    def stderr(self):
        with open(self.stderr_path, errors='replace') as f:
            return f.read()

    def stop(self, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError('nbdkit did not exit on SIGTERM; stderr: %s'
                                     % self.stderr())
        self._err.close()
        rc, self.proc = self.proc.returncode, None
        # nbdkit leaves its socket file behind; the next server there
        # would find the address in use.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock)
        err = self.stderr()
        for bad in ('ERROR: AddressSanitizer', 'runtime error:', 'ERROR: LeakSanitizer'):
            if bad in err:
                raise AssertionError('nbdkit stderr has a sanitizer report:\n' + err)
        return rc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        if exc[0] is None and rc not in (0, None):
            raise AssertionError('nbdkit exited with %d; stderr: %s' % (rc, self.stderr()))


def shared_fixture(group):
    """Mark a test as one of 'group': tests that share an expensive
    fixture (test_rbd.py's Ceph cluster) and so run together, in one
    process, as one meson test named after the group.  The group's test
    exits 77 (meson: SKIPPED) when every one of them skips, as when the
    fixture cannot start; tests without a group stay one meson test each."""
    def mark(fn):
        fn.shared_fixture = group
        return fn
    return mark


def test_groups(tests):
    """{group: [test names]} of the tests marked with shared_fixture."""
    groups = {}
    for n, fn in tests.items():
        g = getattr(fn, 'shared_fixture', None)
        if g:
            groups.setdefault(g, []).append(n)
    return groups


def main(tests):
    """Run the named tests or groups (argv[1:]) or all of them; --list
    lists the meson tests: each test outside a group, and each group.

    tests: dict name -> function. Each function takes no argument and owns
    its temporary resources. Exit 0 pass, 1 fail, 77 all skipped.
    """
    names = sys.argv[1:]
    groups = test_groups(tests)
    clash = set(groups) & set(tests)
    if clash:
        print('group names clash with test names: %s' % ' '.join(sorted(clash)),
              file=sys.stderr)
        return 2
    if names == ['--list']:
        grouped = {n for members in groups.values() for n in members}
        print('\n'.join([n for n in tests if n not in grouped] + list(groups)))
        return 0
    if not names:
        names = list(tests)
    names = [m for n in names for m in groups.get(n, [n])]
    failed = skipped = passed = 0
    for n in names:
        if n not in tests:
            print('unknown test %s' % n, file=sys.stderr)
            return 2
        try:
            tests[n]()
        except Skip as e:
            skipped += 1
            print('SKIP %s: %s' % (n, e))
        except Exception:
            failed += 1
            print('FAIL %s' % n)
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print('PASS %s' % n)
        sys.stdout.flush()
    if failed:
        return 1
    if skipped and not passed:
        return SKIP
    return 0


def tests_of(module_globals):
    """Collect test_* functions of a module in definition order."""
    return {k[5:]: v for k, v in module_globals.items()
            if k.startswith('test_') and callable(v)}
