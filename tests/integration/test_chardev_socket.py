#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Socket chardevs at runtime and on the command line: chardev-add of unix
and TCP servers and clients, query-chardev's filename and frontend-open as
peers come and go, 'reconnect', chardev-remove, chardev-change between
ringbuf and socket, and QEMU's refusals with qemu-storage-daemon 7.2's
texts.  The peers are plain sockets of this test."""

import os
import re
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (QMP, Daemon, assert_eq, assert_in, is_reference, main,  # noqa: E402
                         start_daemon, tests_of, wait_for)

GE = 'GenericError'


def _err(q, cmd, args, desc, cls=GE):
    assert_eq(q.error(cmd, args), {'class': cls, 'desc': desc}, '%s %r' % (cmd, args))


def _unix(path, **kw):
    data = {'addr': {'type': 'unix', 'data': {'path': path}}}
    data.update(kw)
    return {'type': 'socket', 'data': data}


def _inet(host, port, **kw):
    data = {'addr': {'type': 'inet', 'data': {'host': host, 'port': str(port)}}}
    data.update(kw)
    return {'type': 'socket', 'data': data}


def _add(q, id, backend):
    return q.execute('chardev-add', {'id': id, 'backend': backend})


def _info(q, label):
    for c in q.execute('query-chardev'):
        if c['label'] == label:
            return c
    return None


def _filename(q, label):
    info = _info(q, label)
    return info and info['filename']


def test_unix_server_peers():
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('s1.sock')
        assert_eq(_add(q, 's1', _unix(path, server=True, wait=False)), {}, 'add')
        assert_eq(_info(q, 's1'), {'label': 's1', 'frontend-open': False,
                                   'filename': 'disconnected:unix:%s,server=on' % path},
                  'listening')
        # 'server' defaults to true in QMP.
        path2 = d.path('s2.sock')
        _add(q, 's2', _unix(path2))
        assert_eq(_filename(q, 's2'), 'disconnected:unix:%s,server=on' % path2, 's2')
        peer = socket.socket(socket.AF_UNIX)
        peer.connect(path)
        wait_for(lambda: _filename(q, 's1') == 'unix:%s,server=on' % path, what='connected')
        peer.sendall(b'dropped, nobody reads a chardev without a frontend\n')
        peer.close()
        wait_for(lambda: _filename(q, 's1') == 'disconnected:unix:%s,server=on' % path,
                 what='disconnected again')
        # One peer at a time, then the next.
        again = socket.socket(socket.AF_UNIX)
        again.connect(path)
        wait_for(lambda: _filename(q, 's1') == 'unix:%s,server=on' % path, what='next peer')
        again.close()
        q.execute('chardev-remove', {'id': 's1'})
        assert_eq(_info(q, 's1'), None, 'removed')
        _err(q, 'chardev-remove', {'id': 's1'}, "Chardev 's1' not found")
        _err(q, 'chardev-add', {'id': 's2', 'backend': _unix(d.path('x.sock'))},
             "Chardev with id 's2' already exists")
        d.assert_alive()


def test_unix_client():
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('s1.sock')
        _add(q, 's1', _unix(path, server=True, wait=False))
        _add(q, 'c1', _unix(path, server=False))
        assert_eq(_info(q, 'c1'), {'label': 'c1', 'frontend-open': False, 'filename': 'unix:'},
                  'client connected')
        wait_for(lambda: _filename(q, 's1') == 'unix:%s,server=on' % path, what='server side')
        q.execute('chardev-remove', {'id': 'c1'})
        wait_for(lambda: _filename(q, 's1') == 'disconnected:unix:%s,server=on' % path,
                 what='server sees the client go')
        # The server goes: a client without 'reconnect' stays disconnected.
        _add(q, 'c2', _unix(path, server=False))
        q.execute('chardev-remove', {'id': 's1'})
        wait_for(lambda: _filename(q, 'c2') == 'disconnected:unix:%s' % path,
                 what='client disconnected')


def test_tcp_server_and_client():
    with start_daemon() as d:
        q = d.qmp()
        _add(q, 't1', _inet('127.0.0.1', 0, server=True, wait=False))
        m = re.fullmatch(r'disconnected:tcp:127\.0\.0\.1:(\d+),server=on', _filename(q, 't1'))
        assert m, _filename(q, 't1')
        port = int(m.group(1))
        assert port > 0, 'a real port'
        _add(q, 't2', _inet('localhost', 0, server=True, wait=False))
        assert re.fullmatch(r'disconnected:tcp:127\.0\.0\.1:\d+,server=on',
                            _filename(q, 't2')), _filename(q, 't2')
        _add(q, 'c1', _inet('127.0.0.1', port, server=False, nodelay=True))
        m = re.fullmatch(r'tcp:127\.0\.0\.1:(\d+) <-> 127\.0\.0\.1:%d' % port, _filename(q, 'c1'))
        assert m, _filename(q, 'c1')
        wait_for(lambda: _filename(q, 't1') == 'tcp:127.0.0.1:%d,server=on <-> 127.0.0.1:%s'
                 % (port, m.group(1)), what='server side of the TCP connection')
        q.execute('chardev-remove', {'id': 'c1'})
        if not is_reference():
            # qemu-storage-daemon 7.2 does not notice this hang-up (it
            # does on unix sockets): blockd does on both.
            wait_for(lambda: _filename(q, 't1').startswith('disconnected:'),
                     what='TCP peer gone')
        _err(q, 'chardev-add', {'id': 'c2', 'backend': _inet('127.0.0.1', 0, server=False)},
             "Failed to add chardev 'c2': Failed to connect to '127.0.0.1:0': "
             "Connection refused")


def test_reconnect():
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('late.sock')
        _add(q, 'c1', _unix(path, server=False, reconnect=1))
        assert_eq(_info(q, 'c1'), {'label': 'c1', 'frontend-open': False,
                                   'filename': 'disconnected:unix:%s' % path},
                  'not connected yet')
        _add(q, 's1', _unix(path, server=True, wait=False))
        wait_for(lambda: _filename(q, 'c1') == 'unix:', what='reconnected')
        wait_for(lambda: _filename(q, 's1') == 'unix:%s,server=on' % path, what='server side')
        # The server goes and comes back: the client finds it again.
        q.execute('chardev-remove', {'id': 's1'})
        wait_for(lambda: _filename(q, 'c1') == 'disconnected:unix:%s' % path,
                 what='client lost the server')
        _add(q, 's1', _unix(path, server=True, wait=False))
        wait_for(lambda: _filename(q, 'c1') == 'unix:', what='reconnected again')
        d.assert_alive()


def test_socket_errors():
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('e.sock')
        missing = d.path('missing.sock')
        for id, backend, desc in (
                ('e1', _unix(missing, server=False),
                 "Failed to connect to '%s': No such file or directory" % missing),
                ('e2', _unix(path, server=True, wait=False, reconnect=1),
                 "'reconnect' option is incompatible with socket in server listen mode"),
                ('e3', _unix(path, reconnect=0),
                 "'reconnect' option is incompatible with socket in server listen mode"),
                ('e4', _unix(path, server=False, wait=False),
                 "'wait' option is incompatible with socket in client connect mode"),
                ('e5', _unix(path, server=False, websocket=True),
                 'Websocket client is not implemented'),
                ('e6', _unix(path, server=True, wait=False, **{'tls-creds': 'nope'}),
                 "No TLS credentials with id 'nope'"),
                ('e7', _unix(path, server=True, wait=False, **{'tls-authz': 'x'}),
                 "'tls_authz' option requires 'tls_creds' option"),
                ('e8', _unix('/nonexistent-dir/x.sock', server=True, wait=False),
                 'Failed to bind socket to /nonexistent-dir/x.sock: No such file or directory'),
                ('e9', {'type': 'socket', 'data': {'addr': {'type': 'fd', 'data': {'str': '3'}}}},
                 # qemu-storage-daemon has no named descriptors at all;
                 # blockd looks among those it inherited (none here).
                 'only QEMU supports file descriptor passing' if is_reference()
                 else "File descriptor '3' is not a socket")):
            _err(q, 'chardev-add', {'id': id, 'backend': backend},
                 "Failed to add chardev '%s': %s" % (id, desc))
        _err(q, 'chardev-add', {'id': 'x', 'backend': {'type': 'socket', 'data': {}}},
             "Parameter 'backend.data.addr' is missing")
        _err(q, 'chardev-add', {'id': 'x', 'backend': _unix(path, server='yes')},
             "Invalid parameter type for 'backend.data.server', expected: boolean")
        if not is_reference():
            # qemu-storage-daemon 7.2 accepts these; blockd refuses them.
            for id, backend, desc in (
                    ('b1', _unix(path, server=True, wait=True),
                     "'wait' for a client would block the monitor: blockd refuses it at "
                     "runtime (use wait=false)"),
                    ('b2', _unix(path, server=True, wait=False, telnet=True),
                     "socket option 'telnet' is not supported by blockd"),
                    ('b3', _unix(path, server=True, wait=False, websocket=True),
                     "socket option 'websocket' is not supported by blockd"),
                    ('b4', {'type': 'socket', 'data': {'addr': {
                        'type': 'vsock', 'data': {'cid': '3', 'port': '4'}}}},
                     'vsock chardevs are not supported by blockd')):
                _err(q, 'chardev-add', {'id': id, 'backend': backend},
                     "Failed to add chardev '%s': %s" % (id, desc))
        assert_eq(sorted(c['label'] for c in q.execute('query-chardev')), ['qmp0'],
                  'nothing added')


def test_qom_get_socket_properties():
    """chardev-socket's 'connected' and 'addr' through qom-get."""
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('s.sock')
        _add(q, 's1', _unix(path, wait=False))
        _add(q, 't1', _inet('127.0.0.1', 0, wait=False))
        port = _filename(q, 't1').split(':')[-1].split(',')[0]

        def get(id, prop):
            return q.execute('qom-get', {'path': '/chardevs/' + id, 'property': prop})
        assert_eq(get('s1', 'connected'), False, 's1 alone')
        _add(q, 'c1', _unix(path, server=False))
        wait_for(lambda: get('s1', 'connected'), what='s1 connected')
        assert_eq(get('c1', 'connected'), True, 'c1')
        assert_eq(get('s1', 'addr'), {'type': 'unix', 'path': path}, 's1 addr')
        assert_eq(get('c1', 'addr'), {'type': 'unix', 'path': path}, 'c1 addr')
        assert_eq(get('t1', 'addr'), {'type': 'inet', 'host': '127.0.0.1', 'port': port,
                                      'ipv4': True}, 't1 addr')
        assert_eq(get('qmp0', 'connected'), True, 'the monitor')
        q.execute('chardev-add', {'id': 'r1', 'backend': {'type': 'ringbuf', 'data': {}}})
        _err(q, 'qom-get', {'path': '/chardevs/r1', 'property': 'connected'},
             "Property 'chardev-ringbuf.connected' not found")


def test_unix_address_forms():
    """Abstract names (tight and padded), a made-up path for an empty one,
    and a path too long for a socket."""
    with start_daemon() as d:
        q = d.qmp()
        name = 'blockd-test-abstract-%d' % os.getpid()
        _add(q, 'a1', _unix(name, wait=False))
        q.execute('chardev-remove', {'id': 'a1'})
        abstract = {'type': 'socket', 'data': {'addr': {'type': 'unix', 'data': {
            'path': name, 'abstract': True}}, 'wait': False}}
        _add(q, 'a1', abstract)
        assert_eq(_filename(q, 'a1'), 'disconnected:unix:%s,abstract=on,tight=on,server=on'
                  % name, 'abstract, tight')
        client = {'type': 'socket', 'data': {'addr': {'type': 'unix', 'data': {
            'path': name, 'abstract': True}}, 'server': False}}
        _add(q, 'a2', client)
        assert_eq(_filename(q, 'a2'), 'unix:', 'abstract client')
        # sun_path of an abstract address starts with a NUL: QEMU shows nothing.
        wait_for(lambda: _filename(q, 'a1') == 'unix:,server=on', what='abstract server')
        padded = {'type': 'socket', 'data': {'addr': {'type': 'unix', 'data': {
            'path': name + 'p', 'abstract': True, 'tight': False}}, 'wait': False}}
        _add(q, 'a3', padded)
        assert_eq(_filename(q, 'a3'), 'disconnected:unix:%sp,abstract=on,server=on' % name,
                  'abstract, padded')
        _add(q, 'a4', _unix('', wait=False))
        made_up = _filename(q, 'a4')
        assert re.fullmatch(r'disconnected:unix:/.+,server=on', made_up), made_up
        long_path = d.path('x' * 120)
        _err(q, 'chardev-add', {'id': 'a5', 'backend': _unix(long_path, wait=False)},
             "Failed to add chardev 'a5': UNIX socket path '%s' is too long" % long_path)


def test_change_between_ringbuf_and_socket():
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('r1.sock')
        _add(q, 'r1', {'type': 'ringbuf', 'data': {}})
        q.execute('chardev-change', {'id': 'r1', 'backend': _unix(path, server=True,
                                                                    wait=False)})
        assert_eq(_info(q, 'r1'), {'label': 'r1', 'frontend-open': False,
                                   'filename': 'disconnected:unix:%s,server=on' % path},
                  'now a socket')
        _err(q, 'ringbuf-write', {'device': 'r1', 'data': 'x'}, 'r1 is not a ringbuf device')
        # Socket to socket on the same path: the new one listens there.
        q.execute('chardev-change', {'id': 'r1', 'backend': _unix(path, server=True,
                                                                    wait=False)})
        peer = socket.socket(socket.AF_UNIX)
        peer.connect(path)
        wait_for(lambda: _filename(q, 'r1') == 'unix:%s,server=on' % path,
                 what='the new socket serves the path')
        peer.close()
        q.execute('chardev-change', {'id': 'r1', 'backend': {'type': 'ringbuf',
                                                             'data': {'size': 8}}})
        assert_eq(_info(q, 'r1'), {'label': 'r1', 'frontend-open': False,
                                   'filename': 'ringbuf'}, 'a ringbuf again')
        q.execute('ringbuf-write', {'device': 'r1', 'data': 'abc'})
        assert_eq(q.execute('ringbuf-read', {'device': 'r1', 'size': 8}), 'abc', 'ring')
        _err(q, 'chardev-change', {'id': 'nope', 'backend': {'type': 'ringbuf', 'data': {}}},
             "Chardev 'nope' does not exist")
        _err(q, 'chardev-change', {'id': 'qmp0', 'backend': {'type': 'ringbuf', 'data': {}}},
             'Chardev user does not support chardev hotswap')
        _err(q, 'chardev-change', {'id': 'r1', 'backend': _unix('/nonexistent-dir/x',
                                                                server=True, wait=False)},
             "Failed to add chardev 'r1': Failed to bind socket to /nonexistent-dir/x: "
             "No such file or directory")
        if not is_reference():
            # qemu-storage-daemon 7.2 loses the chardev on a failed change.
            assert_eq(_filename(q, 'r1'), 'ringbuf', 'kept after a failed change')


def test_command_line_chardevs():
    with start_daemon(monitors=2) as d:
        path = d.path('spare.sock')
        d.stop()
        d.args += ['--chardev', 'socket,id=spare,path=%s,server=on,wait=off' % path]
        d.start()
        q = d.qmp()
        # Monitors are frontends (open even without a client); a chardev
        # nobody uses is not.
        assert_eq(_info(q, 'qmp0'), {'label': 'qmp0', 'frontend-open': True,
                                     'filename': 'unix:%s,server=on' % d.qmp_path},
                  'the monitor in use')
        assert_eq(_info(q, 'qmp1'), {'label': 'qmp1', 'frontend-open': True,
                                     'filename': 'disconnected:unix:%s,server=on'
                                     % d.path('qmp1.sock')}, 'a monitor without client')
        assert_eq(_info(q, 'spare'), {'label': 'spare', 'frontend-open': False,
                                      'filename': 'disconnected:unix:%s,server=on' % path},
                  'unused')
        q2 = d.qmp(monitor=1)
        wait_for(lambda: _filename(q, 'qmp1') == 'unix:%s,server=on' % d.path('qmp1.sock'),
                 what='second monitor connected')
        q2.close()
        wait_for(lambda: _filename(q, 'qmp1').startswith('disconnected:'),
                 what='second monitor disconnected')
        # A command-line chardev without a monitor can be changed and removed.
        _err(q, 'chardev-remove', {'id': 'qmp1'}, "Chardev 'qmp1' is busy")
        q.execute('chardev-change', {'id': 'spare', 'backend': {'type': 'ringbuf',
                                                                'data': {}}})
        assert_eq(_filename(q, 'spare'), 'ringbuf', 'changed')
        q.execute('chardev-remove', {'id': 'spare'})
        assert_in('qmp0', [c['label'] for c in q.execute('query-chardev')], 'monitor kept')


def test_command_line_wait_on():
    """wait=on: start-up waits for the first client, which the monitor
    then serves; later clients too."""
    with Daemon(qmp=False) as d:
        path = d.path('m.sock')
        d.args += ['--chardev', 'socket,id=m,path=%s,server=on' % path, '--monitor', 'chardev=m']
        d.wait = [path]           # its probe connection is the first client
        d.start()
        for _ in range(2):
            with QMP(path) as q:
                assert_eq(_info(q, 'm'), {'label': 'm', 'frontend-open': True,
                                          'filename': 'unix:%s,server=on' % path}, 'monitor')
        assert_in('waiting for connection on: disconnected:unix:%s,server=on' % path,
                  d.stderr(), 'the wait is announced')


if __name__ == '__main__':
    main(tests_of(globals()))
