#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Command-line behaviour: configuration in keyval and JSON forms, option
errors, clean shutdown on signals and quit, pidfile, daemonize, help."""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, assert_in, daemon_exe, is_reference, main,  # noqa: E402
                         make_image, require_tool, run, tests_of, wait_for)


def nbdinfo_json(uri):
    require_tool('nbdinfo')
    p = run(['nbdinfo', '--no-content', '--json', uri])
    return json.loads(p.stdout)['exports'][0]


def test_keyval_nested_blockdev():
    """Nested keyval (file.driver=..., file.filename=...) configures an export."""
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 8 << 20)
        d.args = ['--blockdev', 'driver=raw,node-name=r,file.driver=file,file.filename=%s' % img,
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=r,name=disk'] + d.args
        d.wait = [d.nbd_sock]
        d.start()
        info = nbdinfo_json(d.uri())
        assert_eq(info['export-size'], 8 << 20, 'export-size')
        assert_eq(info['is_read_only'], True, 'is_read_only (writable defaults to off)')


def test_json_form_options():
    """Every option in its JSON form ({"driver": ...}) works like keyval."""
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 4 << 20)
        d.args = ['--blockdev', json.dumps({'driver': 'file', 'node-name': 'f', 'filename': img}),
                  '--blockdev', json.dumps({'driver': 'raw', 'node-name': 'r', 'file': 'f'}),
                  '--nbd-server', json.dumps({'addr': {'type': 'unix', 'path': d.nbd_sock}}),
                  '--export', json.dumps({'type': 'nbd', 'id': 'e', 'node-name': 'r',
                                          'name': 'disk', 'writable': True})] + d.args
        d.wait = [d.nbd_sock]
        d.start()
        info = nbdinfo_json(d.uri())
        assert_eq(info['export-size'], 4 << 20, 'export-size')
        assert_eq(info['is_read_only'], False, 'is_read_only')
        with d.qmp() as q:
            exports = q.execute('query-block-exports')
            assert_eq([(e['id'], e['node-name'], e['type']) for e in exports],
                      [('e', 'r', 'nbd')], 'query-block-exports')


def test_json_form_nested_blockdev():
    """JSON --blockdev with an inline child definition."""
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        d.args = ['--blockdev', json.dumps({'driver': 'raw', 'node-name': 'r',
                                            'file': {'driver': 'file', 'filename': img}})] + d.args
        d.start()
        with d.qmp() as q:
            nodes = q.execute('query-named-block-nodes', {'flat': True})
            r = [n for n in nodes if n['node-name'] == 'r']
            assert_eq(len(r), 1, 'raw node present')
            assert_eq(r[0]['drv'], 'raw', 'drv')
            assert_eq(r[0]['image']['virtual-size'], 1 << 20, 'virtual-size')


def test_several_monitors():
    """Two --chardev/--monitor pairs give two independent QMP sockets."""
    with Daemon() as d:
        second = d.path('qmp2.sock')
        d.args += ['--chardev', 'socket,id=qmp1,path=%s,server=on,wait=off' % second,
                   '--monitor', 'chardev=qmp1']
        d.wait = [second]
        d.start()
        from blockd_test import QMP
        with d.qmp() as a, QMP(second) as b:
            assert_in('QMP', a.greeting, 'greeting a')
            assert_in('QMP', b.greeting, 'greeting b')
            a.execute('query-version')
            b.execute('query-version')


def _check_startup_failure(args, option, with_nbd=True):
    """Start the daemon with bad args: non-zero exit, one stderr line naming option."""
    exe = daemon_exe()
    with Daemon(qmp=False) as d:
        pidfile = d.path('pid')
        mon = d.path('mon.sock')
        nbdsock = d.nbd_sock
        full = ['--pidfile', pidfile,
                '--chardev', 'socket,id=m,path=%s,server=on,wait=off' % mon, '--monitor', 'chardev=m']
        if with_nbd:
            full += ['--nbd-server', 'addr.type=unix,addr.path=%s' % nbdsock]
        full += args
        p = run([exe] + full, check=False, cwd=d.dir, timeout=20)
        if p.returncode == 0:
            raise AssertionError('%s: expected non-zero exit, got 0' % args)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert_eq(len(lines), 1, 'number of stderr lines (%r)' % p.stderr)
        assert_in(option, lines[0], 'stderr names the option')
        assert_eq(os.path.exists(pidfile), False, 'pidfile left behind')
        if not is_reference():
            # qemu-storage-daemon 7.2 leaves already-created sockets behind;
            # blockd promises nothing half-started (issue 2).
            assert_eq(os.path.exists(mon), False, 'monitor socket left behind')
            assert_eq(os.path.exists(nbdsock), False, 'NBD socket left behind')
        return lines[0]


def test_unknown_option():
    _check_startup_failure(['--bogus'], '--bogus')


def test_missing_option_argument():
    _check_startup_failure(['--blockdev'], '--blockdev')


def test_bad_driver_value():
    line = _check_startup_failure(['--blockdev', 'driver=foo,node-name=a'], '--blockdev')
    assert_in("Parameter 'driver' does not accept value 'foo'", line, 'message')


def test_unexpected_parameter():
    with Daemon(qmp=False) as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        line = _check_startup_failure(['--blockdev', 'driver=file,node-name=a,filename=%s,bogus=1' % img],
                                      '--blockdev')
        assert_in("Parameter 'bogus' is unexpected", line, 'message')


def test_json_wrong_type():
    line = _check_startup_failure(['--blockdev', '{"driver":"file","node-name":"a","filename":5}'],
                                  '--blockdev')
    assert_in("Invalid parameter type for 'filename', expected: string", line, 'message')


def test_invalid_utf8_argument():
    """Bytes that are not UTF-8 in a keyval argument are an error, not a
    crash (found by tests/fuzz/fuzz-keyval)."""
    if is_reference():
        raise Skip('qemu-storage-daemon takes any bytes')
    line = _check_startup_failure(['--blockdev', 'driver=null-co,node-name=a\udcff'], '--blockdev')
    assert_in('Invalid UTF-8 sequence at byte 26', line, 'message')


def test_chardev_dotted_key():
    """A dotted key in --chardev (an array or object where a string
    goes) is an invalid parameter, with no GLib critical on stderr
    (found by tests/fuzz/fuzz-cmdline)."""
    if is_reference():
        raise Skip('qemu-storage-daemon words it differently')
    line = _check_startup_failure(['--chardev', 'socket,id.0=x,path=/tmp/x'], '--chardev')
    assert_in("Invalid parameter 'id'", line, 'message')


def test_nbd_server_missing_path():
    line = _check_startup_failure(['--nbd-server', 'addr.type=unix'], '--nbd-server', with_nbd=False)
    assert_in("Parameter 'addr.path' is missing", line, 'message')


def test_export_unknown_node():
    line = _check_startup_failure(['--export', 'type=nbd,id=e,node-name=zz'], '--export')
    assert_in('zz', line, 'message names the node')


def test_open_failure():
    line = _check_startup_failure(['--blockdev', 'driver=file,node-name=a,filename=/nonexistent/x.raw'],
                                  '--blockdev')
    assert_in('/nonexistent/x.raw', line, 'message names the file')


def test_bad_bool_value():
    with Daemon(qmp=False) as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        _check_startup_failure(['--blockdev', 'driver=file,node-name=a,filename=%s,read-only=maybe' % img],
                               '--blockdev')


def _start_full(d, pidfile=True):
    img = make_image(d.path('a.raw'), 1 << 20)
    d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
              '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
              '--export', 'type=nbd,id=e,node-name=f,name=disk'] + d.args
    if pidfile:
        d.args += ['--pidfile', d.path('pid')]
    d.wait = [d.nbd_sock]
    d.start()


def _assert_clean_after_exit(d, rc):
    assert_eq(rc, 0, 'exit status')
    assert_eq(os.path.exists(d.path('pid')), False, 'pidfile removed')
    assert_eq(os.path.exists(d.qmp_path), False, 'monitor socket removed')
    if not is_reference():
        # qemu-storage-daemon 7.2 leaves the NBD listening socket; blockd removes it.
        assert_eq(os.path.exists(d.nbd_sock), False, 'NBD socket removed')


def _signal_exit(sig):
    with Daemon() as d:
        _start_full(d)
        d.signal(sig)
        _assert_clean_after_exit(d, d.wait_exit())


def test_sigterm_clean_exit():
    _signal_exit(signal.SIGTERM)


def test_sigint_clean_exit():
    _signal_exit(signal.SIGINT)


def test_quit_clean_exit():
    with Daemon() as d:
        _start_full(d)
        q = d.qmp()
        assert_eq(q.execute('quit'), {}, 'quit return')
        rc = d.wait_exit()
        q.close()
        _assert_clean_after_exit(d, rc)


def test_pidfile_content():
    with Daemon() as d:
        _start_full(d)
        wait_for(lambda: os.path.exists(d.path('pid')), what='pidfile')
        with open(d.path('pid')) as f:
            content = f.read()
        assert_eq(content.strip(), str(d.proc.pid), 'pidfile content')
        assert_eq(content.endswith('\n'), True, 'pidfile ends with newline')


def test_daemonize():
    """--daemonize: the parent exits 0 once started; the daemon serves on."""
    require_tool('nbdinfo')
    exe = daemon_exe()
    with Daemon(qmp=False) as d:
        img = make_image(d.path('a.raw'), 2 << 20)
        pidfile = d.path('pid')
        args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                '--export', 'type=nbd,id=e,node-name=f,name=disk',
                '--pidfile', pidfile, '--daemonize']
        p = run([exe] + args, check=False, cwd=d.dir, timeout=20)
        pid = None
        try:
            assert_eq(p.returncode, 0, 'parent exit status (stderr %r)' % p.stderr)
            assert_eq(os.path.exists(d.nbd_sock), True, 'NBD socket ready when parent exits')
            with open(pidfile) as f:
                pid = int(f.read().strip())
            assert_eq(os.path.exists('/proc/%d' % pid), True, 'daemon process alive')
            out = run(['nbdinfo', '--size', d.uri()]).stdout.strip()
            assert_eq(out, str(2 << 20), 'size via daemonized server')
        finally:
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                wait_for(lambda: not _pid_running(pid), timeout=15, what='daemon exit')
        assert_eq(os.path.exists(pidfile), False, 'pidfile removed after SIGTERM')


def _pid_running(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def test_help():
    p = run([daemon_exe(), '--help'], check=False)
    assert_eq(p.returncode, 0, '--help exit status')
    for opt in ('--blockdev', '--nbd-server', '--export', '--chardev', '--monitor',
                '--pidfile', '--daemonize'):
        assert_in(opt, p.stdout, '--help text')
    if not is_reference():
        assert_in('blockd', p.stdout, '--help names blockd')


def test_version():
    p = run([daemon_exe(), '--version'], check=False)
    assert_eq(p.returncode, 0, '--version exit status')
    if is_reference():
        assert_in('qemu-storage-daemon version', p.stdout, '--version')
    else:
        assert_in('blockd', p.stdout, '--version names blockd')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
