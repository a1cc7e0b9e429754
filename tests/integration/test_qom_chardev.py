#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""QOM introspection (qom-list, qom-get, qom-set, qom-list-types,
qom-list-properties) over the /objects tree, iothread objects with their
QEMU checks, the exports' iothread option and x-blockdev-set-iothread,
with qemu-storage-daemon 7.2's replies and error texts.  Lists whose order
is a QEMU hash table's are compared as sets."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (assert_eq, assert_in, is_reference, make_image, main,  # noqa: E402
                         run, start_daemon, tests_of, wait_for)

# qemu-storage-daemon 7.2 aborts when an NBD client of an export with an
# iothread disconnects (nbd_blockdev_client_closed: Assertion
# `qemu_in_main_thread() && nbd_server' failed): against it, client I/O
# goes to exports without one.
IO_IOTHREAD = {} if is_reference() else {'iothread': 'io0'}

GE = 'GenericError'

TG_PROPS = ['limits'] + ['x-%s%s' % (k, s) for k in
                         ('iops-total', 'iops-read', 'iops-write',
                          'bps-total', 'bps-read', 'bps-write')
                         for s in ('', '-max', '-max-length')] + ['x-iops-size']
IOTHREAD_PROPS = ['thread-pool-min', 'aio-max-batch', 'thread-pool-max',
                  'poll-max-ns', 'poll-grow', 'poll-shrink']


def _props(lst):
    return {p['name']: p['type'] for p in lst}


def _err(q, cmd, args, desc, cls=GE):
    e = q.error(cmd, args)
    assert_eq(e, {'class': cls, 'desc': desc}, '%s %r' % (cmd, args))


def _daemon():
    return start_daemon(['--object', 'iothread,id=io0',
                         '--object', 'throttle-group,id=tg0,x-iops-total=100'])


def test_qom_list_tree():
    with _daemon() as d:
        q = d.qmp()
        root = q.execute('qom-list', {'path': '/'})
        assert_eq(_props(root), {'type': 'string', 'objects': 'child<container>',
                                 'chardevs': 'child<container>'}, 'qom-list /')
        assert_eq(root[0], {'name': 'type', 'type': 'string'}, 'type first')
        objs = q.execute('qom-list', {'path': '/objects'})
        assert_eq(_props(objs), {'type': 'string', 'io0': 'child<iothread>',
                                 'tg0': 'child<throttle-group>'}, 'qom-list /objects')
        chardevs = _props(q.execute('qom-list', {'path': '/chardevs'}))
        assert_eq(chardevs, {'type': 'string', 'qmp0': 'child<chardev-socket>'},
                  'qom-list /chardevs')
        tg = q.execute('qom-list', {'path': '/objects/tg0'})
        assert_eq(_props(tg), dict({'type': 'string', 'limits': 'ThrottleLimits'},
                                   **{p: 'int' for p in TG_PROPS[1:]}), 'throttle-group props')
        # A partial path: the one object with that name.
        assert_eq(q.execute('qom-list', {'path': 'tg0'}), tg, 'partial path')
        io = q.execute('qom-list', {'path': '/objects/io0'})
        assert_eq(_props(io), dict({'type': 'string'}, **{p: 'int' for p in IOTHREAD_PROPS}),
                  'iothread props')
        for bad in ('/nope', '/objects/nope', 'nope', '/objects/tg0/x'):
            _err(q, 'qom-list', {'path': bad}, "Device '%s' not found" % bad, 'DeviceNotFound')
        _err(q, 'qom-list', {}, "Parameter 'path' is missing")


def test_qom_path_ambiguous():
    """A partial path matching more than one object is ambiguous for
    qom-list, as in QEMU: the empty one, and an id both an object's and a
    chardev's; qom-get and qom-set do not find it (found by tests/diff)."""
    with _daemon() as d:
        q = d.qmp()
        _err(q, 'qom-list', {'path': ''}, "Path '' is ambiguous")
        q.execute('chardev-add', {'id': 'tg0', 'backend': {'type': 'ringbuf',
                                                           'data': {'size': 1024}}})
        _err(q, 'qom-list', {'path': 'tg0'}, "Path 'tg0' is ambiguous")
        _err(q, 'qom-get', {'path': 'tg0', 'property': 'limits'}, "Device 'tg0' not found",
             'DeviceNotFound')
        _err(q, 'qom-set', {'path': '', 'property': 'limits', 'value': {}},
             "Device '' not found", 'DeviceNotFound')
        assert_in('limits', _props(q.execute('qom-list', {'path': '/objects/tg0'})),
                  'the full path still resolves')
        _err(q, 'qom-list', {'path': 'nope'}, "Device 'nope' not found", 'DeviceNotFound')


def test_qom_get():
    with _daemon() as d:
        q = d.qmp()
        assert_eq(q.execute('qom-get', {'path': '/objects', 'property': 'type'}),
                  'container', '/objects type')
        assert_eq(q.execute('qom-get', {'path': '/objects', 'property': 'tg0'}),
                  '/objects/tg0', 'child link')
        assert_eq(q.execute('qom-get', {'path': '/objects/tg0', 'property': 'type'}),
                  'throttle-group', 'tg type')
        assert_eq(q.execute('qom-get', {'path': '/objects/io0', 'property': 'type'}),
                  'iothread', 'iothread type')
        limits = q.execute('qom-get', {'path': '/objects/tg0', 'property': 'limits'})
        want = {p[2:]: 0 for p in TG_PROPS[1:]}
        want.update({k: 1 for k in want if k.endswith('-max-length')})
        want['iops-total'] = 100
        assert_eq(limits, want, 'limits')
        assert_eq(q.execute('qom-get', {'path': '/objects/tg0', 'property': 'x-iops-total'}),
                  100, 'x-iops-total')
        assert_eq(q.execute('qom-get', {'path': '/objects/io0', 'property': 'poll-max-ns'}),
                  32768, 'poll-max-ns default')
        assert_eq(q.execute('qom-get', {'path': '/objects/io0',
                                        'property': 'thread-pool-max'}), 64, 'pool max')
        _err(q, 'qom-get', {'path': '/objects/tg0', 'property': 'nope'},
             "Property 'throttle-group.nope' not found")
        _err(q, 'qom-get', {'path': '/objects/io0', 'property': 'thread-id'},
             "Property 'iothread.thread-id' not found")
        _err(q, 'qom-get', {'path': '/objects', 'property': 'nope'},
             "Property 'container.nope' not found")
        _err(q, 'qom-get', {'path': '/x', 'property': 'type'}, "Device '/x' not found",
             'DeviceNotFound')
        # Other objects: their creation values and QEMU's defaults.
        q.execute('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'abc'})
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'a0', 'identity': 'bob'})
        q.execute('object-add', {'qom-type': 'authz-list', 'id': 'a1'})
        q.execute('object-add', {'qom-type': 'tls-creds-anon', 'id': 't0',
                                 'endpoint': 'server'})
        for path, prop, value in (('s0', 'data', 'abc'), ('s0', 'format', 'raw'),
                                  ('s0', 'loaded', True), ('s0', 'keyid', ''),
                                  ('a0', 'identity', 'bob'), ('a1', 'policy', 'deny'),
                                  ('a1', 'rules', []), ('t0', 'endpoint', 'server'),
                                  ('t0', 'verify-peer', True), ('t0', 'dir', ''),
                                  ('t0', 'loaded', True)):
            assert_eq(q.execute('qom-get', {'path': '/objects/' + path, 'property': prop}),
                      value, '%s.%s' % (path, prop))
        for path, typ, props in (
                ('s0', 'secret', ['iv', 'keyid', 'loaded', 'format', 'file', 'data']),
                ('a0', 'authz-simple', ['identity']),
                ('a1', 'authz-list', ['policy', 'rules']),
                ('t0', 'tls-creds-anon', ['endpoint', 'dir', 'verify-peer', 'priority',
                                          'loaded'])):
            got = q.execute('qom-list', {'path': '/objects/' + path})
            assert_eq([p['name'] for p in got], ['type'] + props, path + ' props')
            assert_eq(q.execute('qom-get', {'path': path, 'property': 'type'}), typ, path)


def test_qom_set_throttle_limits():
    with _daemon() as d:
        q = d.qmp()
        tg = {'path': '/objects/tg0'}
        assert_eq(q.execute('qom-set', dict(tg, property='limits',
                                            value={'iops-total': 50, 'bps-read': 4096})),
                  {}, 'set limits')
        limits = q.execute('qom-get', dict(tg, property='limits'))
        assert_eq((limits['iops-total'], limits['bps-read'], limits['iops-total-max']),
                  (50, 4096, 0), 'limits changed')
        # Members not given keep their values (QEMU starts from the current ones).
        q.execute('qom-set', dict(tg, property='limits', value={'iops-total-max': 80}))
        limits = q.execute('qom-get', dict(tg, property='limits'))
        assert_eq((limits['iops-total'], limits['iops-total-max']), (50, 80), 'merged')
        assert_eq(q.execute('qom-get', dict(tg, property='x-bps-read')), 4096, 'x-bps-read')
        for prop, value, desc in (
                ('x-iops-total', 70, 'Property cannot be set after initialization'),
                ('limits', {'iops-total': -1},
                 'bps/iops/max values must be within [0, 1000000000000000]'),
                ('limits', {'iops-total': 10, 'iops-read': 5},
                 'bps/iops/max total values and read/write values cannot be used at '
                 'the same time'),
                ('limits', {'bogus': 1}, "Parameter 'limits.bogus' is unexpected"),
                ('limits', {'iops-total': 'x'},
                 "Invalid parameter type for 'limits.iops-total', expected: integer"),
                ('type', 'x', "Property 'throttle-group.type' is not writable"),
                ('nope', 1, "Property 'throttle-group.nope' not found")):
            _err(q, 'qom-set', dict(tg, property=prop, value=value), desc)
        limits2 = q.execute('qom-get', dict(tg, property='limits'))
        assert_eq(limits2, limits, 'refused sets change nothing')
        _err(q, 'qom-set', {'path': '/objects/tg0', 'property': 'limits'},
             "Parameter 'value' is missing")


def test_throttle_live_change_io():
    """A throttle node keeps serving I/O across a live limit change, and
    the group reports the new limits (no timing asserted)."""
    with _daemon() as d:
        q = d.qmp()
        img = d.path('t.img')
        make_image(img, 1 << 20, pattern=0x5a)
        q.execute('blockdev-add', {'driver': 'file', 'filename': img, 'node-name': 'f0'})
        q.execute('blockdev-add', {'driver': 'throttle', 'throttle-group': 'tg0',
                                   'file': 'f0', 'node-name': 'thr'})
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'thr',
                                       'name': 'disk', 'writable': True,
                                       **IO_IOTHREAD})
        run(['qemu-io', '-f', 'raw', '-c', 'read -P 0x5a 0 64k', d.uri()])
        q.execute('qom-set', {'path': 'tg0', 'property': 'limits',
                              'value': {'iops-total': 100000, 'bps-total': 1 << 30}})
        run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x33 0 64k',
             '-c', 'read -P 0x33 0 64k', d.uri()])
        limits = q.execute('qom-get', {'path': 'tg0', 'property': 'limits'})
        assert_eq((limits['iops-total'], limits['bps-total']), (100000, 1 << 30), 'live')
        q.execute('block-export-del', {'id': 'e0'})
        run(['qemu-io', '-r', '-U', '-f', 'raw', '-c', 'read -P 0x33 0 64k', img])


def test_qom_set_stored_properties():
    """Secrets and TLS credentials take a new value that qom-get shows
    (used by nothing once created, as in QEMU); 'loaded' is read-only."""
    with start_daemon() as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'abc'})
        q.execute('object-add', {'qom-type': 'tls-creds-anon', 'id': 't0',
                                 'endpoint': 'server'})
        for path, prop, value in (('s0', 'data', 'x'), ('t0', 'endpoint', 'client'),
                                  ('t0', 'verify-peer', False)):
            q.execute('qom-set', {'path': '/objects/' + path, 'property': prop, 'value': value})
            assert_eq(q.execute('qom-get', {'path': path, 'property': prop}), value, prop)
        for path, prop, value, desc in (
                ('s0', 'data', 1, "Invalid parameter type for 'data', expected: string"),
                ('s0', 'format', 'nope', "Parameter 'format' does not accept value 'nope'"),
                ('s0', 'loaded', False, "Property 'secret.loaded' is not writable"),
                ('t0', 'endpoint', 'x', "Parameter 'endpoint' does not accept value 'x'")):
            _err(q, 'qom-set', {'path': '/objects/' + path, 'property': prop, 'value': value},
                 desc)


def test_qom_set_authz():
    """authz-simple's identity and authz-list's policy and rules change
    live (test_tls_authz checks what they allow); members compared as
    dicts, QEMU's order being its QDict's."""
    with start_daemon() as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'a0', 'identity': 'bob'})
        q.execute('object-add', {'qom-type': 'authz-list', 'id': 'a1',
                                 'rules': [{'match': 'x', 'policy': 'allow'}]})
        q.execute('qom-set', {'path': 'a0', 'property': 'identity', 'value': 'alice'})
        assert_eq(q.execute('qom-get', {'path': 'a0', 'property': 'identity'}), 'alice', 'id')
        q.execute('qom-set', {'path': 'a1', 'property': 'policy', 'value': 'allow'})
        assert_eq(q.execute('qom-get', {'path': 'a1', 'property': 'policy'}), 'allow', 'policy')
        assert_eq(q.execute('qom-get', {'path': 'a1', 'property': 'rules'}),
                  [{'match': 'x', 'policy': 'allow'}], 'rules kept')
        new = [{'match': 'y*', 'policy': 'deny', 'format': 'glob'}]
        q.execute('qom-set', {'path': 'a1', 'property': 'rules', 'value': new})
        assert_eq(q.execute('qom-get', {'path': 'a1', 'property': 'rules'}), new, 'rules')
        for path, prop, value, desc in (
                ('a0', 'identity', 5, "Invalid parameter type for 'identity', expected: string"),
                ('a1', 'rules', [{'match': 'y*'}], "Parameter 'rules[0].policy' is missing"),
                ('a1', 'policy', 'maybe', "Parameter 'policy' does not accept value 'maybe'")):
            _err(q, 'qom-set', {'path': path, 'property': prop, 'value': value}, desc)
        # QEMU's setter frees the old rules before it reads the new ones, so a
        # refused value leaves none; blockd keeps them (an accepted difference).
        assert_eq(q.execute('qom-get', {'path': 'a1', 'property': 'rules'}),
                  [] if is_reference() else new, 'after a refused set')


def test_iothread_objects():
    with _daemon() as d:
        q = d.qmp()
        it = {'qom-type': 'iothread', 'id': 'io1'}
        for extra, desc in (
                ({'poll-max-ns': -1}, 'poll-max-ns value must be in range [0, 9223372036854775807]'),
                ({'poll-grow': -1}, 'poll-grow value must be in range [0, 9223372036854775807]'),
                ({'aio-max-batch': -1},
                 'aio-max-batch value must be in range [0, 9223372036854775807]'),
                ({'thread-pool-min': 10, 'thread-pool-max': 5},
                 'bad thread-pool-min/thread-pool-max values'),
                ({'bogus': 1}, "Parameter 'bogus' is unexpected"),
                ({'poll-grow': 'x'}, "Invalid parameter type for 'poll-grow', expected: integer")):
            _err(q, 'object-add', dict(it, **extra), desc)
        q.execute('object-add', dict(it, **{'poll-max-ns': 1, 'poll-grow': 2,
                                            'poll-shrink': 3, 'aio-max-batch': 4}))
        for prop, value in (('poll-max-ns', 1), ('poll-grow', 2), ('poll-shrink', 3),
                            ('aio-max-batch', 4), ('thread-pool-min', 0)):
            assert_eq(q.execute('qom-get', {'path': '/objects/io1', 'property': prop}),
                      value, prop)
        _err(q, 'object-add', it, "attempt to add duplicate property 'io1' to object "
                                  "(type 'container')")
        _err(q, 'object-add', dict(it, id='tg0'), "attempt to add duplicate property 'tg0' "
                                                  "to object (type 'container')")
        # Live changes, with the setters' checks.
        io = {'path': '/objects/io1'}
        q.execute('qom-set', dict(io, property='poll-max-ns', value=5))
        assert_eq(q.execute('qom-get', dict(io, property='poll-max-ns')), 5, 'set')
        _err(q, 'qom-set', dict(io, property='poll-max-ns', value=-5),
             'poll-max-ns value must be in range [0, 9223372036854775807]')
        _err(q, 'qom-set', dict(io, property='poll-grow', value='x'),
             "Invalid parameter type for 'poll-grow', expected: integer")
        assert_eq(q.execute('qom-get', dict(io, property='poll-max-ns')), 5, 'unchanged')
        q.execute('object-del', {'id': 'io1'})
        _err(q, 'qom-get', dict(io, property='type'), "Device '/objects/io1' not found",
             'DeviceNotFound')


def test_export_iothread_and_set_iothread():
    with _daemon() as d:
        q = d.qmp()
        img = d.path('a.img')
        make_image(img, 1 << 20)
        q.execute('blockdev-add', {'driver': 'file', 'filename': img, 'node-name': 'f0'})
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        exp = {'type': 'nbd', 'id': 'e0', 'node-name': 'f0', 'name': 'disk', 'writable': True}
        _err(q, 'block-export-add', dict(exp, iothread='nope'), 'iothread "nope" not found')
        _err(q, 'block-export-add', dict(exp, iothread='tg0'), 'iothread "tg0" not found')
        q.execute('block-export-add', dict(exp, iothread='io0', **{'fixed-iothread': True}))
        assert_eq([e['id'] for e in q.execute('query-block-exports')], ['e0'], 'exports')
        if not is_reference():
            run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x11 0 4k', d.uri()])
        busy = ('Node f0 is associated with a BlockBackend and could be in use '
                '(use force=true to override this check)')
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'io0'}, busy)
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': None}, busy)
        q.execute('x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'io0',
                                              'force': True})
        q.execute('block-export-del', {'id': 'e0'})
        # The export goes once the server has seen its last client hang
        # up (asynchronously, in both daemons): only then is f0 free.
        wait_for(lambda: q.execute('query-block-exports') == [], what='the export gone')
        q.execute('x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'io0'})
        q.execute('x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': None})
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'nope', 'iothread': None},
             "Failed to find node with node-name='nope'")
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'nope'},
             'Cannot find iothread nope')
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'f0', 'iothread': 'tg0'},
             'Cannot find iothread tg0')
        _err(q, 'x-blockdev-set-iothread', {'node-name': 'f0'},
             "Parameter 'iothread' is missing")
        if not is_reference():
            run(['qemu-io', '-r', '-U', '-f', 'raw', '-c', 'read -P 0x11 0 4k', img])


def test_qom_list_types_and_properties():
    with _daemon() as d:
        q = d.qmp()
        authz = q.execute('qom-list-types', {'implements': 'authz'})
        assert_eq(sorted(t['name'] for t in authz),
                  ['authz-list', 'authz-list-file', 'authz-simple'], 'authz types')
        for t in authz:
            assert_eq(t['parent'], 'authz', t['name'])
        with_abstract = q.execute('qom-list-types', {'implements': 'authz', 'abstract': True})
        assert_in({'abstract': True, 'name': 'authz', 'parent': 'object'}, with_abstract,
                  'abstract authz')
        assert_eq(q.execute('qom-list-types', {'implements': 'nope'}), [], 'none')
        names = {t['name']: t['parent'] for t in q.execute('qom-list-types')}
        for name, parent in (('iothread', 'event-loop-base'), ('container', 'object'),
                             ('secret', 'secret_common'), ('tls-creds-x509', 'tls-creds'),
                             ('chardev-socket', 'chardev')):
            assert_eq(names.get(name), parent, 'qom-list-types ' + name)
        assert_eq('authz' in names, False, 'abstract types hidden by default')
        for typename, props in (
                ('iothread', IOTHREAD_PROPS),
                ('authz-simple', ['identity']),
                ('authz-list-file', ['filename', 'refresh']),
                ('tls-creds-x509', ['endpoint', 'dir', 'verify-peer', 'priority',
                                    'sanity-check', 'passwordid', 'loaded']),
                ('authz', [])):
            got = q.execute('qom-list-properties', {'typename': typename})
            assert_eq([p['name'] for p in got], ['type'] + props, typename)
        got = q.execute('qom-list-properties', {'typename': 'throttle-group'})
        assert_eq(sorted(p['name'] for p in got), sorted(['type'] + TG_PROPS), 'tg props')
        _err(q, 'qom-list-properties', {'typename': 'nope'}, "Class 'nope' not found",
             'DeviceNotFound')


def test_ringbuf_round_trip():
    with start_daemon() as d:
        q = d.qmp()
        rb = {'type': 'ringbuf', 'data': {'size': 8}}
        assert_eq(q.execute('chardev-add', {'id': 'r0', 'backend': rb}), {}, 'chardev-add')
        info = {c['label']: c for c in q.execute('query-chardev')}
        assert_eq(info['r0'], {'label': 'r0', 'filename': 'ringbuf', 'frontend-open': False},
                  'query-chardev ringbuf')
        assert_eq(info['qmp0']['filename'], 'unix:%s,server=on' % d.qmp_path,
                  'query-chardev socket')
        assert_eq(info['qmp0']['frontend-open'], True, 'monitor attached')
        # The ring keeps the newest 8 bytes.
        q.execute('ringbuf-write', {'device': 'r0', 'data': 'hello world'})
        assert_eq(q.execute('ringbuf-read', {'device': 'r0', 'size': 100}), 'lo world',
                  'utf8 round trip')
        assert_eq(q.execute('ringbuf-read', {'device': 'r0', 'size': 100}), '', 'drained')
        q.execute('ringbuf-write', {'device': 'r0', 'data': 'aGk=', 'format': 'base64'})
        assert_eq(q.execute('ringbuf-read', {'device': 'r0', 'size': 1, 'format': 'base64'}),
                  'aA==', 'base64, partial read')
        assert_eq(q.execute('ringbuf-read', {'device': 'r0', 'size': 5}), 'i', 'rest')
        q.execute('ringbuf-write', {'device': 'r0', 'data': 'h\u00e9'})
        assert_eq(q.execute('ringbuf-read', {'device': 'r0', 'size': 8, 'format': 'base64'}),
                  'aMOp', 'utf8 bytes')
        chardevs = _props(q.execute('qom-list', {'path': '/chardevs'}))
        assert_eq(chardevs['r0'], 'child<chardev-ringbuf>', 'qom-list /chardevs')
        assert_eq(q.execute('qom-get', {'path': '/chardevs/r0', 'property': 'type'}),
                  'chardev-ringbuf', 'ringbuf type')
        q.execute('chardev-send-break', {'id': 'r0'})
        q.execute('chardev-send-break', {'id': 'qmp0'})
        for cmd, args, desc in (
                ('chardev-add', {'id': 'r1', 'backend': {'type': 'ringbuf', 'data': {'size': 6}}},
                 "Failed to add chardev 'r1': size of ringbuf chardev must be power of two"),
                ('chardev-add', {'id': 'r0', 'backend': rb}, "Chardev with id 'r0' already exists"),
                ('chardev-add', {'id': 'qmp0', 'backend': rb},
                 "Chardev with id 'qmp0' already exists"),
                ('chardev-add', {'id': 'r2', 'backend': {'type': 'nope', 'data': {}}},
                 "Parameter 'type' does not accept value 'nope'"),
                ('ringbuf-write', {'device': 'r0', 'data': '!!', 'format': 'base64'},
                 'Base64 data contains invalid characters'),
                ('ringbuf-read', {'device': 'r0', 'size': 0}, 'size must be greater than zero'),
                ('ringbuf-read', {'device': 'nope', 'size': 1}, "Device 'nope' not found"),
                ('ringbuf-read', {'device': 'qmp0', 'size': 1}, 'qmp0 is not a ringbuf device'),
                ('ringbuf-write', {'device': 'qmp0', 'data': 'x'},
                 'qmp0 is not a ringbuf device'),
                ('chardev-send-break', {'id': 'nope'}, "Chardev 'nope' not found"),
                ('chardev-change', {'id': 'nope', 'backend': rb}, "Chardev 'nope' does not exist"),
                ('chardev-change', {'id': 'qmp0', 'backend': rb},
                 'Chardev user does not support chardev hotswap'),
                ('chardev-remove', {'id': 'qmp0'}, "Chardev 'qmp0' is busy")):
            _err(q, cmd, args, desc)
        q.execute('chardev-remove', {'id': 'r0'})
        _err(q, 'chardev-remove', {'id': 'r0'}, "Chardev 'r0' not found")
        assert_eq([c['label'] for c in q.execute('query-chardev')], ['qmp0'], 'removed')
        names = [b['name'] for b in q.execute('query-chardev-backends')]
        for b in ('ringbuf', 'socket'):
            assert_in(b, names, 'query-chardev-backends')


def test_commands_listed():
    with _daemon() as d:
        q = d.qmp()
        names = {c['name'] for c in q.execute('query-commands')}
        for c in ('qom-list', 'qom-get', 'qom-set', 'qom-list-types',
                  'qom-list-properties', 'x-blockdev-set-iothread', 'chardev-add',
                  'chardev-remove', 'chardev-change', 'chardev-send-break', 'query-chardev',
                  'query-chardev-backends', 'ringbuf-read', 'ringbuf-write'):
            assert_in(c, names, 'query-commands')
        schema = {e['name']: e for e in q.execute('query-qmp-schema')}
        for c in ('qom-list', 'qom-get', 'qom-set', 'x-blockdev-set-iothread'):
            assert_in(c, schema, 'query-qmp-schema')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
