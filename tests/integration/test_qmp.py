#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""QMP behaviour: greeting, negotiation, replies and ids, every malformed-input
case (each followed by a check that the daemon still serves), configuration
from QMP, and several simultaneous sessions."""

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, assert_in, is_reference, main,  # noqa: E402
                         make_image, require_tool, run, skip_if_reference, start_daemon,
                         tests_of, wait_for)


def _daemon(monitors=1):
    return start_daemon(monitors=monitors)


def _still_serves(d, q=None):
    """The daemon is alive, the session goes on, and a new session works.

    A QEMU monitor serves one client at a time, so the new session is
    opened after closing the old one."""
    d.assert_alive()
    if q is not None:
        v = q.execute('query-version')
        assert_in('qemu', v, 'query-version on the same session')
        q.close()
    with d.qmp() as q2:
        v = q2.execute('query-version')
        for k in ('major', 'minor', 'micro'):
            assert_eq(isinstance(v['qemu'][k], int), True, 'query-version qemu.%s is int' % k)


def test_greeting_shape():
    with _daemon() as d:
        q = d.qmp(negotiate=False)
        g = q.greeting
        assert_eq(list(g.keys()), ['QMP'], 'greeting keys')
        v = g['QMP']['version']
        for k in ('major', 'minor', 'micro'):
            assert_eq(isinstance(v['qemu'][k], int), True, 'version.qemu.%s is int' % k)
        assert_eq(isinstance(v['package'], str), True, 'version.package is str')
        assert_eq(isinstance(g['QMP']['capabilities'], list), True, 'capabilities is a list')


def test_command_before_negotiation_refused():
    with _daemon() as d:
        q = d.qmp(negotiate=False)
        r = q.cmd('query-version')
        assert_eq(r.get('error', {}).get('class'), 'CommandNotFound', 'error class')
        assert_eq(r['error']['desc'], "Expecting capabilities negotiation with 'qmp_capabilities'", 'desc')
        assert_eq(q.cmd('qmp_capabilities'), {'return': {}}, 'negotiation after refusal')
        _still_serves(d, q)


def test_negotiation_twice_refused():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('qmp_capabilities')
        assert_eq(e['class'], 'CommandNotFound', 'class')
        assert_eq(e['desc'], 'Capabilities negotiation is already complete, command ignored', 'desc')
        _still_serves(d, q)


def test_id_echoed():
    with _daemon() as d:
        q = d.qmp(negotiate=False)
        r = q.cmd('qmp_capabilities', id='neg-1')
        assert_eq(r, {'return': {}, 'id': 'neg-1'}, 'negotiation reply')
        r = q.cmd('query-version', id={'a': [1, 2]})
        assert_eq(r.get('id'), {'a': [1, 2]}, 'structured id echoed')
        r = q.cmd('no-such-command', id=42)
        assert_eq(r.get('id'), 42, 'id echoed on error')
        assert_in('error', r, 'error reply')


def test_malformed_json():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{garbage}\n')
        r = q.reply()
        assert_eq(r['error']['class'], 'GenericError', 'class')
        assert_in('JSON parse error', r['error']['desc'], 'desc')
        _still_serves(d, q)


def test_json_not_an_object():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('[1, 2]\n')
        r = q.reply()
        assert_eq(r['error'], {'class': 'GenericError', 'desc': 'QMP input must be a JSON object'}, 'error')
        _still_serves(d, q)


def test_unexpected_member():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": "query-version", "foo": 1}\n')
        r = q.reply()
        assert_eq(r['error'], {'class': 'GenericError', 'desc': "QMP input member 'foo' is unexpected"},
                  'error')
        _still_serves(d, q)


def test_request_split_across_writes():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": ')
        q.send_raw('"query-version"}')
        q.send_raw('\n')
        assert_in('return', q.reply(), 'reply')


def test_oversized_input():
    """A huge string argument gets an error (or is handled); the daemon goes on."""
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": "query-version", "arguments": {"x": "%s"}}\n' % ('A' * (1 << 20)))
        try:
            r = q.reply()
            assert_in('error', r, 'reply to oversized input')
            _still_serves(d, q)
        except EOFError:
            q.close()  # dropping the session is allowed; the daemon must live on
            _still_serves(d)


def test_token_size_limit():
    """A command past the 64 MiB token limit (QEMU's MAX_TOKEN_SIZE) gets
    QEMU's error, the parser starts afresh, and the session goes on: the
    daemon never buffers more than the limit for one command."""
    skip_if_reference('qemu-storage-daemon 7.2 lexes a 64 MiB token for minutes')
    with _daemon() as d:
        q = d.qmp()
        big = 'A' * ((64 << 20) + 4096)
        q.send_raw('{"execute": "query-version", "arguments": {"x": "%s"}}\n' % big)
        del big
        r = q.reply()
        assert_eq(r.get('error', {}).get('desc'), 'JSON token size limit exceeded',
                  'reply to a 64 MiB command')
        assert_eq(r['error']['class'], 'GenericError', 'error class')
        _still_serves(d, q)


def test_deep_nesting():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": "query-version", "arguments": {"x": %s1%s}}\n' % ('[' * 5000, ']' * 5000))
        try:
            r = q.reply()
            while 'error' in r and 'id' not in r:
                q.send({'execute': 'query-version', 'id': 'sync'})
                r = q.reply()
                if r.get('id') == 'sync':
                    break
            _still_serves(d, q)
        except EOFError:
            q.close()
            _still_serves(d)


def test_unknown_command():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('no-such-command')
        assert_eq(e, {'class': 'CommandNotFound', 'desc': 'The command no-such-command has not been found'},
                  'error')
        _still_serves(d, q)


def test_invalid_parameter_type():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'raw', 'node-name': 'a',
                                     'file': {'driver': 'file', 'filename': 5}})
        assert_eq(e, {'class': 'GenericError',
                      'desc': "Invalid parameter type for 'file.filename', expected: string"}, 'error')
        _still_serves(d, q)


def test_invalid_top_level_type():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'file', 'node-name': 'a', 'filename': 'x',
                                     'read-only': 'yes'})
        assert_eq(e['desc'], "Invalid parameter type for 'read-only', expected: boolean", 'desc')
        _still_serves(d, q)


def test_missing_parameter():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'raw', 'node-name': 'a'})
        assert_eq(e, {'class': 'GenericError', 'desc': "Parameter 'file' is missing"}, 'error')
        e = q.error('blockdev-add', {'node-name': 'a'})
        assert_eq(e['desc'], "Parameter 'driver' is missing", 'desc (driver)')
        _still_serves(d, q)


def test_unexpected_parameter():
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'file', 'node-name': 'a', 'filename': img, 'bogus': 1})
        assert_eq(e, {'class': 'GenericError', 'desc': "Parameter 'bogus' is unexpected"}, 'error')
        _still_serves(d, q)


def test_bad_enum_value():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'foo', 'node-name': 'a'})
        assert_eq(e, {'class': 'GenericError', 'desc': "Parameter 'driver' does not accept value 'foo'"},
                  'error')
        _still_serves(d, q)


def test_arguments_not_object():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": "query-version", "arguments": [1]}\n')
        r = q.reply()
        assert_eq(r['error']['class'], 'GenericError', 'class')
        assert_eq(r['error']['desc'], "QMP input member 'arguments' must be an object", 'desc')
        _still_serves(d, q)


def test_execute_not_string():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": 5}\n')
        r = q.reply()
        assert_eq(r['error'], {'class': 'GenericError',
                               'desc': "QMP input member 'execute' must be a string"}, 'error')
        _still_serves(d, q)


def test_garbage_bytes_then_command():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw(b'\x00\xff\xfe}}]]\n')
        # QEMU answers with one or more parse errors; drain them with a sync command
        q.send({'execute': 'query-version', 'id': 'sync'})
        for _ in range(20):
            r = q.reply()
            if r.get('id') == 'sync':
                break
            assert_in('error', r, 'reply to garbage')
        else:
            raise AssertionError('no reply to the command after garbage')
        assert_in('return', r, 'command after garbage succeeds')
        _still_serves(d, q)


def test_control_byte_resets_parser():
    """The QMP specification's known-good state: after an incomplete
    request, a 0xFF byte or an ASCII control character makes the parser
    drop what it had, with one error naming the stray token (QEMU's
    text), and the next request is answered."""
    cases = [
        (b'{"execute": "query-version"', b'\xff', "JSON parse error, stray '\ufffd'"),
        (b'{"execute": "query-', b'\x01', "JSON parse error, stray '\"query-\x01'"),
        (b'{"execute": [1, {"a": ', b'\x1b', "JSON parse error, stray '\x1b'"),
        (b'', b'\xff', "JSON parse error, stray '\ufffd'"),
    ]
    with _daemon() as d:
        q = d.qmp()
        for partial, byte, desc in cases:
            q.send_raw(partial)
            time.sleep(0.1)
            q.send_raw(byte)
            r = q.reply()
            assert_eq(r.get('error', {}).get('desc'), desc, 'error for %r + %r' % (partial, byte))
            q.send({'execute': 'query-version', 'id': 'after'})
            r = q.reply()
            assert_eq((r.get('id'), 'return' in r), ('after', True),
                      'the request after %r + %r' % (partial, byte))
        _still_serves(d, q)


def test_invalid_unicode_in_strings():
    """Invalid UTF-8 inside a string and an escaped lone surrogate are
    parse errors with QEMU's texts (a lone surrogate once crashed the
    daemon: found by tests/fuzz/fuzz-qmp); a valid surrogate pair is a
    character, echoed back as QEMU escapes it."""
    cases = [
        (b'{"execute": "qom-get", "arguments": {"path": "a\xc3(b", "property": "x"}}\n',
         'JSON parse error, invalid UTF-8 sequence in string'),
        (b'{"execute": "qom-get", "arguments": {"path": "\\ud800x", "property": "x"}}\n',
         'JSON parse error, \\ud800 is not a valid Unicode character'),
        (b'{"execute": "qom-get", "arguments": {"\\udc00": 1}}\n',
         'JSON parse error, \\udc00 is not a valid Unicode character'),
        (b'{"execute": "blockdev-del", "arguments": {"node-name": "\\ud83d\\ude00"}}\n',
         "Failed to find node with node-name='\U0001f600'"),
        # json-glib decodes non-hex digits after \u to some code point,
        # a lone surrogate here, which crashed the daemon (CI's fuzz-qmp).
        (b'{"execute": "blockdev-del", "arguments": {"node-name": "\\ud8g0"}}\n',
         'JSON parse error, \\ud8g0 is not a valid Unicode character'),
        (b'{"execute": "blockdev-del", "arguments": {"node-name": "\\u00eg"}}\n',
         'JSON parse error, \\u00eg is not a valid Unicode character'),
        (b'{"execute": "blockdev-del", "arguments": {"node-name": "\\u00e"}}\n',
         'JSON parse error, \\u00e" is not a valid Unicode character'),
    ]
    with _daemon() as d:
        q = d.qmp()
        for raw, desc in cases:
            q.send_raw(raw)
            r = q.reply()
            assert_eq(r.get('error', {}).get('desc'), desc, 'error for %r' % raw)
        _still_serves(d, q)


def test_events_dropped_for_a_client_that_does_not_read():
    """A session that never reads loses events past a backlog of 1 MiB
    (logged) instead of growing the daemon's memory, and keeps working;
    the other sessions get every event."""
    if is_reference():
        raise Skip('qemu-storage-daemon 7.2 queues events without a bound')
    with _daemon(monitors=2) as d:
        slow = d.qmp(monitor=0)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        fast = d.qmp(monitor=1)
        fast.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                   'data': {'path': d.path('n.sock')}}})
        fast.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n0'})
        rounds, per_round = 30, 500
        for _ in range(rounds):
            for i in range(per_round):
                fast.send({'execute': 'block-export-add',
                           'arguments': {'type': 'nbd', 'id': 'e', 'node-name': 'n0'}})
                fast.send({'execute': 'block-export-del', 'arguments': {'id': 'e'}})
            for i in range(2 * per_round):
                r = fast.reply()
                assert_eq('return' in r, True, 'reply %r' % r)
        total = rounds * per_round
        got_fast = sum(1 for e in fast.events if e['event'] == 'BLOCK_EXPORT_DELETED')
        while got_fast < total:
            fast.wait_event('BLOCK_EXPORT_DELETED')
            got_fast += 1
        wait_for(lambda: 'dropping events' in d.stderr(), what='the log line')
        # The slow session reads at last: its session is intact, with
        # the events up to the limit and none of the rest.
        slow.execute('query-version')
        got_slow = sum(1 for e in slow.events if e['event'] == 'BLOCK_EXPORT_DELETED')
        if not 0 < got_slow < total:
            raise AssertionError('slow session got %d of %d events' % (got_slow, total))
        slow.send({'execute': 'block-export-add',
                   'arguments': {'type': 'nbd', 'id': 'e', 'node-name': 'n0'}})
        slow.send({'execute': 'block-export-del', 'arguments': {'id': 'e'}})
        slow.reply()
        slow.reply()
        slow.wait_event('BLOCK_EXPORT_DELETED')
        wait_for(lambda: 'events were dropped' in d.stderr(), what='the catch-up log line')
        _still_serves(d, slow)


def test_client_disconnect_mid_command():
    with _daemon() as d:
        q = d.qmp()
        q.send_raw('{"execute": "blockdev-add", "arguments": {"driver": ')
        q.close()
        _still_serves(d)


def test_several_sessions():
    """Several simultaneous sessions (one per monitor, as QEMU serves one
    client per socket chardev); commands interleave; events reach all."""
    with _daemon(monitors=4) as d:
        sessions = [d.qmp(monitor=i) for i in range(4)]
        for i, q in enumerate(sessions):
            q.send({'execute': 'query-version', 'id': i})
        for i, q in enumerate(sessions):
            assert_eq(q.reply().get('id'), i, 'reply on session %d' % i)
        img = make_image(d.path('a.raw'), 1 << 20)
        sessions[0].execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        nodes = sessions[3].execute('query-named-block-nodes')
        assert_eq([n['node-name'] for n in nodes], ['f'], 'node visible from another session')
        sessions[1].execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        sessions[1].execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f'})
        sessions[2].execute('block-export-del', {'id': 'e'})
        for i, q in enumerate(sessions):
            ev = q.wait_event('BLOCK_EXPORT_DELETED')
            assert_eq(ev['data'], {'id': 'e'}, 'event data on session %d' % i)


def test_event_timestamp_shape():
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f'})
        q.execute('block-export-del', {'id': 'e'})
        ev = q.wait_event('BLOCK_EXPORT_DELETED')
        assert_eq(sorted(ev.keys()), ['data', 'event', 'timestamp'], 'event keys')
        assert_eq(sorted(ev['timestamp'].keys()), ['microseconds', 'seconds'], 'timestamp keys')
        assert_eq(isinstance(ev['timestamp']['seconds'], int), True, 'seconds is int')
        assert_eq(0 <= ev['timestamp']['microseconds'] < 1000000, True, 'microseconds range')


def test_configure_from_qmp():
    """blockdev-add + nbd-server-start (SocketAddressLegacy) + block-export-add."""
    require_tool('nbdinfo')
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 16 << 20)
        q = d.qmp()
        assert_eq(q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img}), {},
                  'blockdev-add file')
        assert_eq(q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r', 'file': 'f'}), {},
                  'blockdev-add raw')
        assert_eq(q.execute('nbd-server-start',
                            {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}}), {},
                  'nbd-server-start')
        assert_eq(q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'r',
                                                 'name': 'disk', 'writable': True}), {},
                  'block-export-add')
        info = json.loads(run(['nbdinfo', '--no-content', '--json', d.uri()]).stdout)['exports'][0]
        assert_eq(info['export-size'], 16 << 20, 'export-size')
        assert_eq(info['is_read_only'], False, 'is_read_only')
        exports = q.execute('query-block-exports')
        assert_eq(exports, [{'id': 'e', 'type': 'nbd', 'node-name': 'r', 'shutting-down': False}],
                  'query-block-exports')


def test_nbd_server_start_twice():
    with _daemon() as d:
        q = d.qmp()
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        e = q.error('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('b.sock')}}})
        assert_eq(e['desc'], 'NBD server already running', 'desc')
        q.execute('nbd-server-stop')
        e = q.error('nbd-server-stop')
        assert_eq(e['desc'], 'NBD server not running', 'desc')
        _still_serves(d, q)


def test_export_without_nbd_server():
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        e = q.error('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f'})
        assert_eq(e['desc'], 'NBD server not running', 'desc')
        _still_serves(d, q)


def test_duplicate_export_id():
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f'})
        e = q.error('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f', 'name': 'other'})
        assert_eq(e['desc'], "Block export id 'e' is already in use", 'desc')


def test_duplicate_node_name():
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        e = q.error('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img,
                                     'locking': 'off'})
        assert_eq(e['desc'], "Duplicate nodes with node-name='f'", 'desc')


def test_open_failure_message():
    with _daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'file', 'node-name': 'f',
                                     'filename': d.path('missing.raw')})
        assert_eq(e, {'class': 'GenericError',
                      'desc': "Could not open '%s': No such file or directory" % d.path('missing.raw')},
                  'error')
        assert_eq(q.execute('query-named-block-nodes'), [], 'no node left after failed add')


def test_uint64_range():
    """Integers up to UINT64_MAX reach uint64 members exactly as QEMU's
    parser keeps them; 2^64 is out of range, and a uint32 member names
    its own type (found by tests/diff)."""
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        q.execute('block-set-write-threshold', {'node-name': 'f',
                                                'write-threshold': (1 << 64) - 1})
        q.execute('block-set-write-threshold', {'node-name': 'f',
                                                'write-threshold': (1 << 63) + 1})
        e = q.error('block-set-write-threshold', {'node-name': 'f', 'write-threshold': 1 << 64})
        assert_eq(e['desc'], "Parameter 'write-threshold' expects uint64", '2^64')
        e = q.error('block-set-write-threshold', {'node-name': 'f',
                                                  'write-threshold': (1 << 64) + 1})
        assert_eq(e['desc'], "Parameter 'write-threshold' expects uint64", '2^64 + 1')
        for g in ((1 << 64) - 1, 1 << 63, 1 << 33, -1):
            e = q.error('block-dirty-bitmap-add', {'node': 'f', 'name': 'b', 'granularity': g})
            assert_eq(e['desc'], "Parameter 'granularity' expects uint32_t", 'granularity %d' % g)
        _still_serves(d, q)


def test_query_commands_lists_implemented():
    with _daemon() as d:
        q = d.qmp()
        names = {c['name'] for c in q.execute('query-commands')}
        for n in ('qmp_capabilities', 'query-version', 'query-commands', 'quit', 'blockdev-add',
                  'blockdev-del', 'query-named-block-nodes', 'nbd-server-start', 'nbd-server-stop',
                  'block-export-add', 'block-export-del', 'query-block-exports'):
            assert_in(n, names, 'query-commands')


def test_query_qmp_schema():
    with _daemon() as d:
        q = d.qmp()
        schema = q.execute('query-qmp-schema')
        cmds = {e['name'] for e in schema if e.get('meta-type') == 'command'}
        for n in ('blockdev-add', 'block-export-add', 'query-named-block-nodes'):
            assert_in(n, cmds, 'schema commands')
        events = {e['name'] for e in schema if e.get('meta-type') == 'event'}
        assert_in('BLOCK_EXPORT_DELETED', events, 'schema events')
        # Command features as QEMU 7.2's (found by tests/diff).
        features = {e['name']: e.get('features') for e in schema
                    if e.get('meta-type') == 'command'}
        for name, want in (('x-blockdev-amend', ['unstable']),
                           ('x-debug-query-block-graph', ['unstable']),
                           ('drive-backup', ['deprecated']),
                           ('nbd-server-add', ['deprecated']),
                           ('blockdev-snapshot', ['allow-write-only-overlay']),
                           ('blockdev-add', None)):
            assert_eq(features[name], want, 'features of %s' % name)
        # query-named-block-nodes' return type lists what it returns.
        types = {e['name']: e for e in schema}
        ret = types[types[[e for e in schema if e.get('name') == 'query-named-block-nodes']
                          [0]['ret-type']]['element-type']]
        members = {m['name']: m['type'] for m in ret['members']}
        assert_in('dirty-bitmaps', members, 'BlockDeviceInfo members')
        image = {m['name'] for m in types[members['image']]['members']}
        for m in ('cluster-size', 'dirty-flag', 'backing-image', 'full-backing-filename',
                  'backing-filename-format'):
            assert_in(m, image, 'ImageInfo members')
        if not is_reference():
            names = {c['name'] for c in q.execute('query-commands')}
            assert_eq(cmds, names, 'schema describes exactly the implemented commands')


def test_query_block_is_empty():
    """query-block lists named or device-attached backends: a storage
    daemon has none, even with nodes and exports (as qemu-storage-daemon)."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n0'})
        assert_eq(q.execute('query-block'), [], 'query-block')
        assert_eq(q.error('query-block', {'x': 1})['desc'], "Parameter 'x' is unexpected")


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
