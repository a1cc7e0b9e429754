#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Running hardened: listening sockets passed by systemd (LISTEN_FDS,
LISTEN_FDNAMES) or by a script (addr.type=fd, --chardev socket,fd=N),
readiness on NOTIFY_SOCKET (also with --daemonize), the --sandbox seccomp
filter under real workloads, and --runas/--chroot."""

import os
import pwd
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, QMP, Skip, assert_eq, assert_in, check_image, daemon_exe,  # noqa: E402
                         fuse_export, is_reference, main, make_image,
                         nbd_export, qemu_io, require_fuse, require_tool, run,
                         skip_if_reference, tests_of, wait_for)

MiB = 1 << 20
SANDBOX_ALL = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'


def listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    return s


def notify_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return s


def notifications(ns, timeout):
    """The datagrams the daemon sent so far (waiting up to `timeout` for
    the first one), as a list of {key: value} dicts."""
    out = []
    ns.settimeout(timeout)
    while True:
        try:
            data = ns.recv(4096)
        except (socket.timeout, BlockingIOError):
            return out
        out.append(dict(line.split('=', 1) for line in data.decode().splitlines() if '=' in line))
        ns.settimeout(0)


class PassedFds(Daemon):
    """A Daemon whose start() hands it listening sockets as descriptors
    3, 4, ... (the systemd ABI) and the environment given: LISTEN_PID is
    set to the daemon's own PID in the child, as systemd does."""

    def __init__(self, socks, env=None, activation=True, **kw):
        super().__init__(qmp=False, **kw)
        self.socks = socks
        self.env = env or {}
        self.activation = activation

    def start(self, timeout=15.0):
        self._err = open(self.stderr_path, 'w')
        fds = [s.fileno() for s in self.socks]
        env = dict(self.env)
        activation = self.activation

        def child():
            # Descriptors 3.. in order; os.dup2 clears close-on-exec.
            tmp = [os.dup(fd) for fd in fds]
            for i, fd in enumerate(tmp):
                os.dup2(fd, 3 + i)
            for fd in tmp:
                if fd >= 3 + len(tmp):
                    os.close(fd)
            for k, v in env.items():
                os.environ[k] = v
            if activation:
                os.environ['LISTEN_PID'] = str(os.getpid())
                os.environ['LISTEN_FDS'] = str(len(fds))

        self.proc = subprocess.Popen([self.exe] + self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._err, stderr=self._err, cwd=self.dir,
                                     preexec_fn=child, close_fds=False)
        return self


def qmp_on(d, path, timeout=15.0):
    end = time.monotonic() + timeout
    while True:
        try:
            q = QMP(path)
            d._qmps.append(q)
            return q
        except (OSError, EOFError):
            d.assert_alive()
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def qcow2(path, size='16M'):
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, size])
    return path


# --- socket activation ---

def test_socket_activation_named():
    """LISTEN_FDS with LISTEN_FDNAMES: the monitor and the NBD server take
    the passed sockets by name; READY=1 arrives once the export is up;
    the server can be stopped and started again on the same socket;
    STOPPING=1 at the end."""
    skip_if_reference('qemu-storage-daemon has no LISTEN_FDNAMES names')
    with Daemon(qmp=False) as scratch:
        img = qcow2(scratch.path('a.qcow2'))
        ref = make_image(scratch.path('ref.raw'), 16 * MiB)
        qmp_l = listener(scratch.path('qmp.sock'))
        nbd_l = listener(scratch.path('nbd.sock'))
        ns = notify_socket(scratch.path('notify'))
        d = PassedFds([qmp_l, nbd_l], tmpdir=scratch.dir,
                      env={'LISTEN_FDNAMES': 'qmp:nbd', 'NOTIFY_SOCKET': scratch.path('notify')})
        d.args = ['--chardev', 'socket,id=m,fd=qmp,server=on,wait=off', '--monitor', 'chardev=m',
                  '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                  '--blockdev', 'driver=qcow2,node-name=disk,file=f0',
                  '--nbd-server', 'addr.type=fd,addr.str=nbd',
                  '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        with d:
            d.start()
            msgs = notifications(ns, 15)
            assert_eq([m.get('READY') for m in msgs], ['1'], 'READY=1 once (%s)' % d.stderr())
            assert_eq(msgs[0].get('MAINPID'), str(d.proc.pid), 'MAINPID')
            # Our copies of the sockets close: the daemon holds its own.
            qmp_l.close()
            nbd_l.close()
            uri = 'nbd+unix:///disk?socket=%s' % scratch.path('nbd.sock')
            qemu_io(uri, 'write -P 0x5a 1M 2M')
            qemu_io(ref, 'write -P 0x5a 1M 2M')
            q = qmp_on(d, scratch.path('qmp.sock'))
            assert_eq([c['frontend-open'] for c in q.execute('query-chardev')
                       if c['label'] == 'm'], [True], 'monitor chardev open')
            # Stopped and started again: the passed socket is still there.
            q.execute('nbd-server-stop')
            q.execute('nbd-server-start', {'addr': {'type': 'fd', 'data': {'str': 'nbd'}}})
            q.execute('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'disk',
                                           'name': 'disk', 'writable': True})
            qemu_io(uri, 'write -P 0xa5 8M 1M', 'read -P 0x5a 1M 2M')
            qemu_io(ref, 'write -P 0xa5 8M 1M')
            # An unknown name is refused with a clear error, nothing dies.
            q.execute('nbd-server-stop')
            err = q.error('nbd-server-start', {'addr': {'type': 'fd', 'data': {'str': 'nope'}}})
            assert_in("'nope'", err['desc'], 'unknown name')
            assert_eq(d.stop(), 0, 'exit status')
            msgs = notifications(ns, 5)
            assert_eq([m.get('STOPPING') for m in msgs], ['1'], 'STOPPING=1')
        run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', img, ref])
        check_image(img)


def test_socket_activation_unused_warned():
    """A passed socket no option takes would leave its clients waiting:
    the daemon says so at start-up, and serves the one it takes (by
    number, as systemd passes them in order)."""
    skip_if_reference('qemu-storage-daemon does not read LISTEN_FDS')
    with Daemon(qmp=False) as scratch:
        qmp_l = listener(scratch.path('qmp.sock'))
        nbd_l = listener(scratch.path('nbd.sock'))
        d = PassedFds([qmp_l, nbd_l], tmpdir=scratch.dir, env={'LISTEN_FDNAMES': 'qmp:nbd'})
        d.args = ['--chardev', 'socket,id=m,fd=3,server=on,wait=off', '--monitor', 'chardev=m']
        with d:
            d.start()
            q = qmp_on(d, scratch.path('qmp.sock'))
            assert_eq(q.execute('query-block-exports'), [], 'monitor works')
            assert_in('no option takes the passed socket(s) 4 (nbd)', d.stderr(), 'warning')
            assert_eq('(qmp)' in d.stderr(), False, 'the taken one is not listed')


def test_fd_numbers():
    """--chardev socket,fd=N and --nbd-server addr.type=fd,addr.str=N
    with descriptors a script passed (no LISTEN_FDS), as
    qemu-storage-daemon takes them."""
    require_tool('nbdinfo')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        qmp_l = listener(scratch.path('qmp.sock'))
        nbd_l = listener(scratch.path('nbd.sock'))
        d = PassedFds([qmp_l, nbd_l], tmpdir=scratch.dir, activation=False)
        d.args = ['--chardev', 'socket,id=m,fd=3,server=on,wait=off', '--monitor', 'chardev=m',
                  '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                  '--nbd-server', 'addr.type=fd,addr.str=4',
                  '--export', 'type=nbd,id=e0,node-name=f0,name=disk,writable=on']
        with d:
            d.start()
            q = qmp_on(d, scratch.path('qmp.sock'))
            assert_eq(q.execute('query-block-exports')[0]['id'], 'e0', 'export')
            uri = 'nbd+unix:///disk?socket=%s' % scratch.path('nbd.sock')
            assert_eq(run(['nbdinfo', '--size', uri]).stdout.strip(), str(4 * MiB), 'size')
            qemu_io(uri, 'write -P 0x11 0 64k')
        qemu_io(img, 'read -P 0x11 0 64k')


def test_fd_errors():
    """Bad descriptors: QEMU's texts, and the daemon exits cleanly."""
    with Daemon(qmp=False) as scratch:
        sp = socket.socketpair()
        dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cases = [
            (['--nbd-server', 'addr.type=fd,addr.str=x'], [], 'Unable to parse FD number x'),
            (['--nbd-server', 'addr.type=fd,addr.str=1'], [], "File descriptor '1' is not a socket"),
            (['--nbd-server', 'addr.type=fd,addr.str=9'], [], "File descriptor '9' is not a socket"),
            (['--chardev', 'socket,id=m,fd=9,server=on,wait=off'], [],
             "File descriptor '9' is not a socket"),
        ]
        if not is_reference():
            cases += [
                (['--nbd-server', 'addr.type=fd,addr.str=3'], [sp[0]],
                 "File descriptor '3' is not a listening socket"),
                (['--nbd-server', 'addr.type=fd,addr.str=3'], [dg],
                 "File descriptor '3' is not a stream socket"),
                (['--chardev', 'socket,id=m,fd=3'], [sp[0]],
                 'a file descriptor chardev must be a server'),
            ]
        for args, socks, msg in cases:
            d = PassedFds(socks, tmpdir=scratch.dir, activation=False)
            d.args = args
            with d:
                d.start()
                assert_eq(d.wait_exit() != 0, True, 'fails: %s' % args)
                assert_in(msg, d.stderr(), 'message for %s' % args)
                assert_eq(d.sanitizer_report(), None, 'sanitizer')


def test_systemd_socket_activate():
    """systemd-socket-activate (systemd's own test tool) listens, starts
    blockd on the first connection and passes both named sockets."""
    skip_if_reference('qemu-storage-daemon has no LISTEN_FDNAMES names')
    require_tool('systemd-socket-activate', 'nbdinfo')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        qsock, nsock = scratch.path('qmp.sock'), scratch.path('nbd.sock')
        cmd = ['systemd-socket-activate', '-l', qsock, '-l', nsock, '--fdname=qmp:nbd',
               daemon_exe(), '--chardev', 'socket,id=m,fd=qmp,server=on,wait=off',
               '--monitor', 'chardev=m',
               '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
               '--nbd-server', 'addr.type=fd,addr.str=nbd',
               '--export', 'type=nbd,id=e0,node-name=f0,name=disk,writable=on']
        with open(scratch.path('activate.log'), 'w') as log:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_for(lambda: os.path.exists(qsock) and os.path.exists(nsock),
                     what='systemd-socket-activate listening')
            # The first connection starts the daemon (exec: same PID).
            q = QMP(qsock)
            try:
                assert_eq(q.execute('query-block-exports')[0]['node-name'], 'f0', 'export')
                uri = 'nbd+unix:///disk?socket=%s' % nsock
                qemu_io(uri, 'write -P 0x77 1M 1M')
                q.execute('quit')
            finally:
                q.close()
            assert_eq(p.wait(15), 0, 'exit status')
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        with open(scratch.path('activate.log')) as f:
            log = f.read()
        assert_eq('ERROR: AddressSanitizer' in log or 'runtime error:' in log, False,
                  'sanitizer: ' + log[-2000:])
        qemu_io(img, 'read -P 0x77 1M 1M')


# --- readiness with --daemonize ---

def test_daemonize_notify():
    """--daemonize: READY=1 (with the daemon's PID) has been sent by the
    time the parent exits 0; a failed start-up sends nothing and the
    parent fails."""
    skip_if_reference('qemu-storage-daemon 7.2 does not notify systemd')
    require_tool('nbdinfo')
    with Daemon(qmp=False) as scratch:
        img = make_image(scratch.path('a.raw'), 2 * MiB)
        ns = notify_socket(scratch.path('notify'))
        env = dict(os.environ, NOTIFY_SOCKET=scratch.path('notify'))
        pidfile = scratch.path('pid')
        base = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                '--nbd-server', 'addr.type=unix,addr.path=%s' % scratch.nbd_sock]
        p = run([daemon_exe()] + base + ['--export', 'type=nbd,id=e,node-name=nope',
                                          '--daemonize'], check=False, env=env, cwd=scratch.dir)
        assert_eq(p.returncode != 0, True, 'failed start-up fails the parent')
        assert_in("nope", p.stderr, 'reason')
        assert_eq(notifications(ns, 0.5), [], 'no READY after a failed start-up')

        p = run([daemon_exe()] + base + ['--export', 'type=nbd,id=e,node-name=f,name=disk',
                                          '--pidfile', pidfile, '--daemonize'],
                check=False, env=env, cwd=scratch.dir)
        pid = None
        try:
            assert_eq(p.returncode, 0, 'parent exit status (%s)' % p.stderr)
            with open(pidfile) as f:
                pid = int(f.read())
            ns.setblocking(False)
            msgs = notifications(ns, 0)
            assert_eq([m.get('READY') for m in msgs], ['1'], 'READY=1 sent before the parent exits')
            assert_eq(msgs[0].get('MAINPID'), str(pid), 'MAINPID is the daemon')
            assert_eq(run(['nbdinfo', '--size', scratch.uri()]).stdout.strip(), str(2 * MiB), 'size')
        finally:
            if pid:
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not os.path.exists('/proc/%d' % pid) or
                         open('/proc/%d/stat' % pid).read().split(')')[-1].split()[0] == 'Z',
                         timeout=15, what='daemon exit')
        assert_eq([m.get('STOPPING') for m in notifications(ns, 5)], ['1'], 'STOPPING=1')


# --- --sandbox ---

SHIM = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[4096];

static void put(const char *s)
{
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, s, strlen(s)) < 0) {
        }
        close(fd);
    }
}

/* SIGUSR1: try to start a process and to change the group. */
static void on_usr1(int sig)
{
    char buf[128];
    int fork_err = 0, setgid_err = 0;
    pid_t pid = fork();

    if (pid == 0) {
        _exit(0);
    }
    if (pid < 0) {
        fork_err = errno;
    } else {
        waitpid(pid, NULL, 0);
    }
    if (setgid(getgid()) < 0) {
        setgid_err = errno;
    }
    snprintf(buf, sizeof(buf), "fork=%d setgid=%d\n", fork_err, setgid_err);
    put(buf);
}

/* SIGUSR2: reboot(2) with a bad magic: EINVAL, or killed by the filter. */
static void on_usr2(int sig)
{
    char buf[64];
    long r = syscall(SYS_reboot, 0, 0, 0, NULL);
    snprintf(buf, sizeof(buf), "reboot=%ld errno=%d\n", r, errno);
    put(buf);
}

__attribute__((constructor)) static void init(void)
{
    const char *p = getenv("SHIM_OUT");
    if (!p) {
        return;
    }
    snprintf(out, sizeof(out), "%s", p);
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
}
'''


def build_shim(d):
    require_tool('cc')
    src = d.path('shim.c')
    with open(src, 'w') as f:
        f.write(SHIM)
    so = d.path('shim.so')
    run(['cc', '-shared', '-fPIC', '-O2', '-o', so, src])
    return so


def shim_env(d, so):
    env = {'LD_PRELOAD': so, 'SHIM_OUT': d.path('shim.out')}
    # A sanitized daemon: its runtime need not come first.
    asan = os.environ.get('ASAN_OPTIONS', '')
    env['ASAN_OPTIONS'] = (asan + ':' if asan else '') + 'verify_asan_link_order=0'
    return env


def poke(d, sig):
    out = d.path('shim.out')
    if os.path.exists(out):
        os.unlink(out)
    d.signal(sig)
    # A deadline for a lost signal, not a speed check: a loaded machine
    # (two suites and four builds at once) once gave no answer in 10 s.
    wait_for(lambda: os.path.exists(out) and open(out).read().endswith('\n') or not d.alive(),
             timeout=60, what='shim answer')
    return open(out).read().strip() if os.path.exists(out) else None


def seccomp_mode(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('Seccomp:'):
                return int(line.split()[1])
    return None


def sandboxed_daemon(scratch, sandbox, env=None, extra=()):
    d = PassedFds([], tmpdir=scratch.dir, activation=False, env=env)
    d.qmp_path = scratch.path('qmp.sock')
    d.args = ['--chardev', 'socket,id=m,path=%s,server=on,wait=off' % d.qmp_path,
              '--monitor', 'chardev=m'] + list(extra)
    if sandbox:
        d.args += ['--sandbox', sandbox]
    return d


def test_sandbox_blocks_syscalls():
    """The filter is in the running daemon: with spawn and
    elevateprivileges denied, fork and setgid fail with EPERM (and work
    without the sandbox); a kernel-administration call (reboot) kills
    the daemon with SIGSYS, as QEMU's filter does."""
    skip_if_reference('qemu-storage-daemon has no --sandbox')
    with Daemon(qmp=False) as scratch:
        so = build_shim(scratch)
        env = shim_env(scratch, so)
        with sandboxed_daemon(scratch, None, env) as d:
            d.start()
            qmp_on(d, d.qmp_path)
            assert_eq(seccomp_mode(d.proc.pid), 0, 'no filter without --sandbox')
            assert_eq(poke(d, signal.SIGUSR1), 'fork=0 setgid=0', 'without the sandbox')
            assert_eq(poke(d, signal.SIGUSR2), 'reboot=-1 errno=22', 'reboot: EINVAL')
        with sandboxed_daemon(scratch, SANDBOX_ALL, env) as d:
            d.start()
            qmp_on(d, d.qmp_path)
            assert_eq(seccomp_mode(d.proc.pid), 2, 'filter installed')
            assert_eq(poke(d, signal.SIGUSR1), 'fork=1 setgid=1', 'EPERM in the sandbox')
            d.assert_alive()
            assert_eq(poke(d, signal.SIGUSR2), None, 'reboot does not return')
            rc = d.wait_exit()
            assert_eq(rc, -signal.SIGSYS, 'killed by SIGSYS')
        with sandboxed_daemon(scratch, 'on', env) as d:
            d.start()
            qmp_on(d, d.qmp_path)
            assert_eq(poke(d, signal.SIGUSR1), 'fork=0 setgid=0', 'plain "on" allows spawn')


def test_sandbox_workloads():
    """Real work under --sandbox with every set denied: NBD reads and
    writes (qemu-io, qemu-img), blockdev-add of a qcow2 image, a FUSE
    export, a backup job; data and images checked afterwards."""
    skip_if_reference('qemu-storage-daemon has no --sandbox')
    with Daemon(qmp=False) as scratch:
        img = qcow2(scratch.path('a.qcow2'))
        img2 = qcow2(scratch.path('b.qcow2'))
        tgt = qcow2(scratch.path('target.qcow2'))
        ref = make_image(scratch.path('ref.raw'), 16 * MiB)
        nbd = scratch.path('nbd.sock')
        d = sandboxed_daemon(scratch, SANDBOX_ALL, extra=[
            '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=qcow2,node-name=disk,file=f0',
            '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on'])
        with d:
            d.start()
            q = qmp_on(d, d.qmp_path)
            assert_eq(seccomp_mode(d.proc.pid), 2, 'filter installed')
            uri = 'nbd+unix:///disk?socket=%s' % nbd
            qemu_io(uri, 'write -P 0x61 0 4M', 'write -z 6M 1M', 'write -P 0x62 12M 64k')
            for cmd in ('write -P 0x61 0 4M', 'write -P 0x62 12M 64k'):
                qemu_io(ref, cmd)
            run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', ref,
                 'nbd+unix:///disk?socket=%s' % nbd])
            # blockdev-add of a second qcow2 image at run time, exported.
            q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk2',
                                       'file': {'driver': 'file', 'filename': img2}})
            with nbd_export(q, 'disk2', writable=True):
                qemu_io('nbd+unix:///disk2?socket=%s' % nbd, 'write -P 0x63 1M 1M')
            # A FUSE export (mount(2) stays allowed).
            try:
                require_fuse()
                fuse = True
            except Skip:
                fuse = False
            if fuse:
                mnt = scratch.path('mnt')
                with fuse_export(q, 'disk2', mnt, writable=True):
                    with open(mnt, 'r+b') as f:
                        f.seek(4 * MiB)
                        f.write(b'\x64' * 65536)
                        f.flush()
                        os.fsync(f.fileno())
                        f.seek(1 * MiB)
                        assert_eq(f.read(4096), b'\x63' * 4096, 'FUSE read')
            # A backup job, from the exported node to a qcow2 target.
            q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                                       'file': {'driver': 'file', 'filename': tgt}})
            q.execute('blockdev-backup', {'job-id': 'bk', 'device': 'disk', 'target': 'tgt',
                                          'sync': 'full'})
            q.wait_event('BLOCK_JOB_COMPLETED', 60, match={'device': 'bk'})
            q.execute('blockdev-del', {'node-name': 'tgt'})
            q.execute('blockdev-del', {'node-name': 'disk2'})
            d.assert_alive()
            assert_eq(d.stop(), 0, 'clean exit')
        run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', img, ref])
        run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2', img, tgt])
        qemu_io(img2, 'read -P 0x63 1M 1M', fmt='qcow2')
        if fuse:
            qemu_io(img2, 'read -P 0x64 4M 64k', fmt='qcow2')
        for i in (img, img2, tgt):
            check_image(i)


def test_sandbox_option_errors():
    skip_if_reference('qemu-storage-daemon has no --sandbox')
    for arg, msg in (('maybe', "Parameter 'enable' expects 'on' or 'off'"),
                     ('on,spawn=maybe', 'invalid argument for spawn'),
                     ('on,bogus=deny', "Invalid parameter 'bogus'"),
                     ('on,elevateprivileges=children', 'invalid argument for elevateprivileges')):
        p = run([daemon_exe(), '--sandbox', arg], check=False)
        assert_eq(p.returncode, 1, 'exit status for %s' % arg)
        assert_in('--sandbox %s: %s' % (arg, msg), p.stderr, 'message')
    p = run([daemon_exe(), '--runas', 'no-such-user-here'], check=False)
    assert_eq(p.returncode, 1, 'unknown user')
    assert_in('User "no-such-user-here" doesn\'t exist', p.stderr, 'message')
    p = run([daemon_exe(), '--run-with', 'user=nobody,async-teardown=on'], check=False)
    assert_in("Invalid parameter 'async-teardown'", p.stderr, '--run-with key')


# --- --runas, --chroot ---

def nobody():
    try:
        pw = pwd.getpwnam('nobody')
    except KeyError:
        raise Skip('no user nobody')
    if os.getuid() != 0:
        raise Skip('needs root to drop privileges')
    return pw


def no_leak_check():
    """The environment of a daemon that drops privileges: LeakSanitizer
    needs /proc/PID/task, which a non-dumpable process (after setuid) or
    one in a chroot cannot read, so a sanitized build checks no leaks."""
    asan = os.environ.get('ASAN_OPTIONS', '')
    return {'ASAN_OPTIONS': (asan + ':' if asan else '') + 'detect_leaks=0'}


def proc_ids(pid):
    ids = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('Uid', 'Gid', 'Groups'):
                ids[k] = v.split()
    return ids


def test_runas_nobody():
    """--runas nobody (and UID:GID): the daemon serves images it opened at
    start-up and those nobody may open; a root-only file is refused with
    a clear error; with the sandbox on too."""
    skip_if_reference('qemu-storage-daemon has no --runas')
    pw = nobody()
    with Daemon(qmp=False) as scratch:
        os.chmod(scratch.dir, 0o755)
        img = qcow2(scratch.path('a.qcow2'))
        mine = qcow2(scratch.path('nobody.qcow2'))
        secret = qcow2(scratch.path('root.qcow2'))
        os.chown(mine, pw.pw_uid, pw.pw_gid)
        os.chmod(secret, 0o600)
        # The monitor's directory must be nobody's for its socket's removal.
        rundir = scratch.path('run')
        os.mkdir(rundir)
        os.chown(rundir, pw.pw_uid, pw.pw_gid)
        for who, spec in (('name', 'nobody'), ('uid:gid', '%d:%d' % (pw.pw_uid, pw.pw_gid))):
            nbd = os.path.join(rundir, 'nbd.sock')
            d = sandboxed_daemon(scratch, SANDBOX_ALL, env=no_leak_check(), extra=[
                '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                '--blockdev', 'driver=qcow2,node-name=disk,file=f0',
                '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd,
                '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on',
                '--runas', spec])
            d.qmp_path = os.path.join(rundir, 'qmp.sock')
            d.args[1] = 'socket,id=m,path=%s,server=on,wait=off' % d.qmp_path
            with d:
                d.start()
                q = qmp_on(d, d.qmp_path)
                ids = proc_ids(d.proc.pid)
                assert_eq(ids['Uid'], [str(pw.pw_uid)] * 4, 'uids (%s)' % who)
                assert_eq(ids['Gid'], [str(pw.pw_gid)] * 4, 'gids (%s)' % who)
                assert_eq(str(0) in ids['Groups'], False, 'no root group')
                qemu_io('nbd+unix:///disk?socket=%s' % nbd, 'write -P 0x41 0 1M')
                q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'n2',
                                           'file': {'driver': 'file', 'filename': mine}})
                with nbd_export(q, 'n2', writable=True):
                    qemu_io('nbd+unix:///n2?socket=%s' % nbd, 'write -P 0x42 0 1M')
                q.execute('blockdev-del', {'node-name': 'n2'})
                err = q.error('blockdev-add', {'driver': 'file', 'node-name': 'n3',
                                               'filename': secret})
                assert_in('Permission denied', err['desc'], 'root-only file')
                assert_eq(d.stop(), 0, 'clean exit')
        qemu_io(img, 'read -P 0x41 0 1M', fmt='qcow2')
        qemu_io(mine, 'read -P 0x42 0 1M', fmt='qcow2')
        for i in (img, mine):
            check_image(i)


def test_chroot():
    """--run-with chroot=DIR,user=nobody: images opened at start-up keep
    working; a path at run time is looked up inside DIR."""
    skip_if_reference('qemu-storage-daemon 7.2 has no --run-with')
    pw = nobody()
    with Daemon(qmp=False) as scratch:
        os.chmod(scratch.dir, 0o755)
        img = qcow2(scratch.path('outside.qcow2'))
        jail = scratch.path('jail')
        os.mkdir(jail)
        inside = qcow2(os.path.join(jail, 'inside.qcow2'))
        os.chown(inside, pw.pw_uid, pw.pw_gid)
        qmp = scratch.path('qmp.sock')
        nbd = scratch.path('nbd.sock')
        d = sandboxed_daemon(scratch, 'on', env=no_leak_check(), extra=[
            '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=qcow2,node-name=disk,file=f0',
            '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on',
            '--run-with', 'chroot=%s,user=nobody' % jail])
        with d:
            d.start()
            q = qmp_on(d, qmp)
            assert_eq(os.readlink('/proc/%d/root' % d.proc.pid), jail, 'root directory')
            qemu_io('nbd+unix:///disk?socket=%s' % nbd, 'write -P 0x51 0 1M')
            q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'n2',
                                       'file': {'driver': 'file', 'filename': '/inside.qcow2'}})
            with nbd_export(q, 'n2', writable=True):
                qemu_io('nbd+unix:///n2?socket=%s' % nbd, 'write -P 0x52 0 1M')
            q.execute('blockdev-del', {'node-name': 'n2'})
            err = q.error('blockdev-add', {'driver': 'file', 'node-name': 'n3', 'filename': img})
            assert_in('No such file or directory', err['desc'], 'outside the chroot')
            # The sockets are outside the chroot: the daemon cannot remove
            # them at exit, and says nothing bad about it.
            assert_eq(d.stop(), 0, 'clean exit')
        qemu_io(img, 'read -P 0x51 0 1M', fmt='qcow2')
        qemu_io(inside, 'read -P 0x52 0 1M', fmt='qcow2')
        check_image(img)
        check_image(inside)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
