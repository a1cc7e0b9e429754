#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Throttle groups and the throttle filter: object-add/object-del and
--object with QEMU's messages, throttle nodes over qcow2 exported over NBD
(data intact, limits enforced, a group shared by its nodes), group
switching by blockdev-reopen, and drains that release throttled requests
instead of waiting for them."""

import contextlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, assert_in, fd_open, fuse_mounted,  # noqa: E402
                         main, make_image, nbd_connection, qemu_io, require_fuse,
                         require_nbd, require_tool, run, skip_if_reference,
                         start_daemon, tests_of)

GE = 'GenericError'


def _daemon(args=()):
    return start_daemon(args=args)


def _group(q, gid, **limits):
    q.execute('object-add', {'qom-type': 'throttle-group', 'id': gid, 'limits': limits})


def _qcow2(d, name='hd0.qcow2', size='4M', pattern=0xa0, length='1M'):
    require_tool('qemu-img', 'qemu-io')
    path = d.path(name)
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, size])
    qemu_io(path, 'write -P 0x%x 0 %s' % (pattern, length), fmt='qcow2')
    return path


def _throttle_over_qcow2(q, path, group, node='throttle0', fmt_node='hd0'):
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': fmt_node,
                               'file': {'driver': 'file', 'node-name': fmt_node + '-file',
                                        'filename': path}})
    q.execute('blockdev-add', {'driver': 'throttle', 'node-name': node,
                               'throttle-group': group, 'file': fmt_node})


def _nbd_start(q, d):
    q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})


def _export(q, node, name, writable=True, id=None):
    q.execute('block-export-add', {'type': 'nbd', 'id': id or name, 'node-name': node,
                                   'name': name, 'writable': writable})


def _export_del(q, id, mode='hard'):
    """Delete an export and wait until it is gone (hard: a client that
    just disconnected may not have been seen yet)."""
    q.execute('block-export-del', {'id': id, 'mode': mode})
    end = time.monotonic() + 20
    while True:
        ev = q.wait_event('BLOCK_EXPORT_DELETED', timeout=max(end - time.monotonic(), 0.1))
        if ev['data']['id'] == id:
            return


def _timed_reads(uri, count, size=4096):
    """Seconds taken by `count` sequential reads of `size` bytes."""
    with nbd_connection(uri) as h:
        start = time.monotonic()
        for i in range(count):
            h.pread(size, (i * size) % (1 << 20))
        return time.monotonic() - start


def test_object_add_del():
    with _daemon() as d:
        q = d.qmp()
        _group(q, 'group0', **{'iops-total': 1000})
        e = q.error('object-add', {'qom-type': 'throttle-group', 'id': 'group0'})
        assert_eq(e, {'class': GE, 'desc': "attempt to add duplicate property 'group0' to object "
                                           "(type 'container')"}, 'duplicate id')
        # The legacy flat properties of QEMU 7.2 are accepted too.
        q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'legacy',
                                 'x-iops-total': 100, 'x-bps-total': 1 << 20})
        assert_eq(q.execute('object-del', {'id': 'legacy'}), {}, 'legacy group deleted')
        e = q.error('object-del', {'id': 'legacy'})
        assert_eq(e, {'class': GE, 'desc': "object 'legacy' not found"}, 'deleted twice')
        e = q.error('object-del', {})
        assert_eq(e['desc'], "Parameter 'id' is missing", 'object-del without id')
        assert_eq(q.execute('object-del', {'id': 'group0'}), {}, 'unused group deleted')
        # Its id is free again.
        _group(q, 'group0')


def test_object_add_errors():
    cases = [
        ({'qom-type': 'foo', 'id': 'g'}, "Parameter 'qom-type' does not accept value 'foo'"),
        ({'id': 'g'}, "Parameter 'qom-type' is missing"),
        ({'qom-type': 'throttle-group'}, "Parameter 'id' is missing"),
        ({'qom-type': 'throttle-group', 'id': '1bad'}, "Parameter 'id' expects an identifier"),
        ({'qom-type': 'throttle-group', 'id': 'g', 'bogus': 1}, "Parameter 'bogus' is unexpected"),
        ({'qom-type': 'throttle-group', 'id': 'g', 'limits': {'bogus': 1}},
         "Parameter 'limits.bogus' is unexpected"),
        ({'qom-type': 'throttle-group', 'id': 'g', 'limits': {'iops-total': 'x'}},
         "Invalid parameter type for 'limits.iops-total', expected: integer"),
        ({'qom-type': 'throttle-group', 'id': 'g', 'x-iops-total': -5},
         'Property values cannot be negative'),
        ({'qom-type': 'throttle-group', 'id': 'g', 'x-iops-total-max-length': 1 << 33},
         'x-iops-total-max-length value must be in therange [0, 4294967295]'),
        ({'qom-type': 'throttle-group', 'id': 'g', 'limits': {'bps-read-max-length': 1 << 33}},
         'bps-read-max-length value must be in the range [0, 4294967295]'),
    ]
    bad_limits = [
        ({'iops-total': 10, 'iops-read': 5},
         'bps/iops/max total values and read/write values cannot be used at the same time'),
        ({'bps-total': 10, 'bps-write': 5},
         'bps/iops/max total values and read/write values cannot be used at the same time'),
        ({'iops-total': 10, 'iops-total-max': 20, 'iops-write': 5, 'iops-write-max': 20},
         'bps/iops/max total values and read/write values cannot be used at the same time'),
        ({'iops-total-max': 10}, 'bps_max/iops_max require corresponding bps/iops values'),
        ({'iops-total': 10, 'iops-total-max-length': 0}, 'the burst length cannot be 0'),
        ({'iops-total': 10, 'iops-total-max-length': 5}, 'burst length set without burst rate'),
        ({'bps-write': 10, 'bps-write-max': 5}, 'bps_max/iops_max cannot be lower than bps/iops'),
        ({'iops-total': 10 ** 16}, 'bps/iops/max values must be within [0, 1000000000000000]'),
        ({'bps-read': -1}, 'bps/iops/max values must be within [0, 1000000000000000]'),
        ({'iops-size': 4096}, 'iops size requires an iops value to be set'),
        # Negative values wrap to huge unsigned ones, as in QEMU.
        ({'iops-total': 5, 'iops-total-max': 10, 'iops-total-max-length': -1},
         'burst length too high for this burst rate'),
        ({'iops-total': 5, 'iops-total-max-length': -4294967296},
         'burst length set without burst rate'),
        ({'bps-total': 10, 'bps-total-max': 10 ** 15, 'bps-total-max-length': 2},
         'burst length too high for this burst rate'),
    ]
    cases += [({'qom-type': 'throttle-group', 'id': 'g', 'limits': lim}, msg)
              for lim, msg in bad_limits]
    # Flat and nested properties combine into one configuration.
    cases.append(({'qom-type': 'throttle-group', 'id': 'g', 'x-iops-total': 100,
                   'limits': {'iops-read': 5}},
                  'bps/iops/max total values and read/write values cannot be used at the same time'))
    with _daemon() as d:
        q = d.qmp()
        for args, msg in cases:
            e = q.error('object-add', args)
            assert_eq(e, {'class': GE, 'desc': msg}, 'object-add %r' % args)
        # 'limits' is checked as it is set, before the id is.
        _group(q, 'taken')
        e = q.error('object-add', {'qom-type': 'throttle-group', 'id': 'taken',
                                   'limits': {'iops-total': 5, 'iops-read': 3}})
        assert_eq(e['desc'], 'bps/iops/max total values and read/write values cannot be used '
                             'at the same time', 'bad limits for a taken id')
        # QEMU sets the properties in its QDict's order, checking 'limits'
        # as a whole when it is set: an x-* value set after it is checked
        # only after the id (found by tests/diff).
        bad = 'bps/iops/max values must be within [0, 1000000000000000]'
        taken = "attempt to add duplicate property 'taken' to object (type 'container')"
        for prop, msg in (('x-bps-read', taken), ('x-iops-total-max', taken),
                          ('x-iops-total', bad)):
            value = 5 if prop == 'x-bps-read' else 10 ** 16
            e = q.error('object-add', {'qom-type': 'throttle-group', 'id': 'taken',
                                       'limits': {'bps-total': 1000}, prop: value})
            assert_eq(e['desc'], msg,
                      '%s with limits for a taken id' % prop)
        e = q.error('object-add', {'qom-type': 'throttle-group', 'id': 'g',
                                   'limits': {'bps-total': 1000}, 'x-iops-total-max': 10 ** 16})
        assert_eq(e['desc'], bad, 'x-* out of range, id free')
        # Nothing half-created: the id is still free, and a valid full
        # configuration with bursts and iops-size is accepted.
        _group(q, 'g', **{'iops-total': 100, 'iops-total-max': 200, 'iops-total-max-length': 3,
                          'bps-read': 5000000, 'bps-write': 1000000, 'bps-write-max': 2000000,
                          'iops-size': 4096})
        d.assert_alive()


def test_cmdline_object():
    require_tool('qemu-img')
    d = Daemon()
    img = make_image(d.path('a.raw'), 1 << 20)
    d.args = ['--object', 'throttle-group,id=group0,limits.iops-total=1000',
              '--object', '{"qom-type": "throttle-group", "id": "group1", '
                          '"limits": {"bps-total": 1048576}}',
              '--object', 'qom-type=throttle-group,id=group2,x-iops-read=10',
              '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
              '--blockdev', 'driver=throttle,node-name=t0,throttle-group=group0,file=f0'] + d.args
    with d:
        d.start()
        q = d.qmp()
        nodes = {n['node-name']: n['drv'] for n in q.execute('query-named-block-nodes')}
        assert_eq(nodes, {'t0': 'throttle', 'f0': 'file'}, 'nodes')
        e = q.error('object-del', {'id': 'group0'})
        assert_eq(e, {'class': GE, 'desc': "object 'group0' is in use, can not be deleted"},
                  'group used by t0')
        assert_eq(q.execute('object-del', {'id': 'group1'}), {}, 'JSON-form group deleted')
        assert_eq(q.execute('object-del', {'id': 'group2'}), {}, 'qom-type= form deleted')
        e = q.error('object-add', {'qom-type': 'throttle-group', 'id': 'group0'})
        assert_in("duplicate property 'group0'", e['desc'], 'command-line id taken')


def test_cmdline_object_errors():
    cases = [
        ('throttle-group,id=g,limits.iops-total=10,limits.iops-read=5',
         'bps/iops/max total values and read/write values cannot be used at the same time'),
        ('throttle-group,id=g,limits.iops-total=abc',
         "Parameter 'limits.iops-total' expects integer"),
        ('foo,id=x', "Parameter 'qom-type' does not accept value 'foo'"),
        ('throttle-group', "Parameter 'id' is missing"),
    ]
    for arg, msg in cases:
        d = Daemon(qmp=False)
        with d:
            d.args = ['--object', arg]
            d.start()
            rc = d.wait_exit()
            assert rc != 0, '--object %s: exit code %d' % (arg, rc)
            assert_in('--object %s: %s' % (arg, msg), d.stderr(), 'stderr')


def test_throttle_node_errors():
    with _daemon() as d:
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n0'})
        e = q.error('blockdev-add', {'driver': 'throttle', 'node-name': 't0', 'file': 'n0',
                                     'throttle-group': 'nf'})
        assert_eq(e, {'class': GE, 'desc': "Throttle group 'nf' does not exist"}, 'unknown group')
        e = q.error('blockdev-add', {'driver': 'throttle', 'node-name': 't0', 'file': 'n0'})
        assert_eq(e['desc'], "Parameter 'throttle-group' is missing", 'no group')
        e = q.error('blockdev-add', {'driver': 'throttle', 'node-name': 't0',
                                     'throttle-group': 'nf'})
        assert_eq(e['desc'], "Parameter 'file' is missing", 'no file')
        _group(q, 'g0', **{'iops-total': 100})
        # Two nodes share the group; it stays in use until both are gone.
        for t in ('t0', 't1'):
            q.execute('blockdev-add', {'driver': 'throttle', 'node-name': t, 'file': 'n0',
                                       'throttle-group': 'g0'})
        info = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(info['t0']['drv'], 'throttle', 'driver')
        assert_eq(info['t0']['image']['virtual-size'], 1 << 30, 'size of the filtered node')
        assert_eq(info['t0']['file'], 'json:{"throttle-group": "g0", "driver": "throttle", '
                                      '"file": {"driver": "null-co"}}',
                  'filename')
        for t in ('t0', 't1'):
            e = q.error('object-del', {'id': 'g0'})
            assert_eq(e, {'class': GE, 'desc': "object 'g0' is in use, can not be deleted"},
                      'in use before deleting ' + t)
            q.execute('blockdev-del', {'node-name': t})
        assert_eq(q.execute('object-del', {'id': 'g0'}), {}, 'free once the nodes are gone')
        # A failed open does not keep the group in use.
        _group(q, 'g1')
        e = q.error('blockdev-add', {'driver': 'throttle', 'node-name': 't2', 'file': 'missing',
                                     'throttle-group': 'g1'})
        assert_in('missing', e['desc'], 'bad file reference')
        assert_eq(q.execute('object-del', {'id': 'g1'}), {}, 'g1 free after a failed open')


def test_data_through_filter():
    """qcow2 -> throttle -> NBD: reads see the image, writes land in it."""
    with _daemon() as d:
        path = _qcow2(d)
        q = d.qmp()
        _group(q, 'group0', **{'iops-total': 1000, 'bps-total': 64 << 20})
        _throttle_over_qcow2(q, path, 'group0')
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk')
        uri = d.uri('disk')
        qemu_io(uri, 'read -P 0xa0 0 1M', 'read -P 0 1M 3M')
        qemu_io(uri, 'write -P 0xb1 64k 64k', 'write -z 2M 64k', 'read -P 0xb1 64k 64k',
                'read -P 0xa0 0 64k', 'read -P 0xa0 128k 896k')
        qemu_io(uri, 'discard 3M 64k', 'flush')
        require_tool('nbdinfo')
        out = run(['nbdinfo', '--map', uri]).stdout
        assert_in('data', out, 'block status passes through the filter')
        assert_in('hole,zero', out, 'unallocated space seen through the filter')


def test_data_persisted_in_image():
    with _daemon() as d:
        path = _qcow2(d)
        q = d.qmp()
        _group(q, 'group0', **{'bps-write': 4 << 20})
        _throttle_over_qcow2(q, path, 'group0')
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk')
        qemu_io(d.uri('disk'), 'write -P 0xc3 1536k 256k')
        _export_del(q, 'disk')
        q.execute('blockdev-del', {'node-name': 'throttle0'})
        q.execute('blockdev-del', {'node-name': 'hd0'})
        qemu_io(path, 'read -P 0xa0 0 1M', 'read -P 0xc3 1536k 256k', fmt='qcow2')
        run(['qemu-img', 'check', '-q', path])


def test_iops_limit_enforced():
    """100 reads of 4k at iops-total=50 take clearly longer than without."""
    with _daemon() as d:
        path = _qcow2(d)
        q = d.qmp()
        _group(q, 'slow', **{'iops-total': 50})
        _group(q, 'free')
        _throttle_over_qcow2(q, path, 'slow')
        q.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'fast0',
                                   'throttle-group': 'free', 'file': 'hd0'})
        _nbd_start(q, d)
        _export(q, 'throttle0', 'slow', writable=False)
        _export(q, 'fast0', 'fast', writable=False)
        fast = _timed_reads(d.uri('fast'), 100)
        slow = _timed_reads(d.uri('slow'), 100)
        print('100 reads: %.3fs unthrottled, %.3fs at 50 iops (ratio %.1f)'
              % (fast, slow, slow / max(fast, 1e-6)))
        # 100 ops at 50/s, minus a 0.1 s burst allowance: about 1.9 s.
        assert slow >= 1.0, 'iops-total=50 not enforced: 100 reads in %.3fs' % slow
        assert slow > fast, 'throttled reads not slower than unthrottled ones'


def test_bps_and_write_limits_enforced():
    with _daemon() as d:
        path = _qcow2(d)
        q = d.qmp()
        _group(q, 'bw', **{'bps-read': 1 << 20, 'iops-write': 20})
        _throttle_over_qcow2(q, path, 'bw')
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk')
        start = time.monotonic()
        # Data reads only: an NBD server may answer a read of a hole from
        # block status without reading (and without accounting) it.
        qemu_io(d.uri('disk'), 'read -P 0xa0 0 1M', 'read -P 0xa0 0 1M', 'read -P 0xa0 0 1M')
        reads = time.monotonic() - start
        start = time.monotonic()
        qemu_io(d.uri('disk'), *['write -P 0x11 %dk 4k' % (i * 4) for i in range(40)])
        writes = time.monotonic() - start
        print('3 MiB at 1 MiB/s: %.2fs; 40 writes at 20 iops: %.2fs' % (reads, writes))
        assert reads >= 1.2, 'bps-read=1M not enforced: 3 MiB read in %.2fs' % reads
        assert writes >= 1.2, 'iops-write=20 not enforced: 40 writes in %.2fs' % writes
        qemu_io(d.uri('disk'), 'read -P 0x11 0 160k')


def test_group_shared_by_nodes():
    """Two throttle nodes in one group share its budget."""
    with _daemon() as d:
        path0 = _qcow2(d, 'a.qcow2')
        path1 = _qcow2(d, 'b.qcow2', pattern=0xb0)
        q = d.qmp()
        _group(q, 'shared', **{'iops-total': 40})
        _throttle_over_qcow2(q, path0, 'shared', 't0', 'hd0')
        _throttle_over_qcow2(q, path1, 'shared', 't1', 'hd1')
        _nbd_start(q, d)
        _export(q, 't0', 'a', writable=False)
        _export(q, 't1', 'b', writable=False)
        times = {}

        def reader(name):
            times[name] = _timed_reads(d.uri(name), 40)
        threads = [threading.Thread(target=reader, args=(n,)) for n in ('a', 'b')]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.monotonic() - start
        print('80 reads over two nodes of one 40-iops group: %.2fs (%r)' % (total, times))
        # 80 ops at 40/s shared: about 2 s; each node alone would take 1 s.
        assert total >= 1.5, 'group budget not shared: 80 reads in %.2fs' % total
        qemu_io(d.uri('a'), 'read -P 0xa0 0 64k', extra=('-r',))
        qemu_io(d.uri('b'), 'read -P 0xb0 0 64k', extra=('-r',))


def test_reopen_switches_group():
    """245's throttle part of test_misc_drivers, on a raw image."""
    with _daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20, pattern=0xa0)
        q = d.qmp()
        _group(q, 'group0', **{'iops-total': 1000})
        _group(q, 'group1', **{'iops-total': 2000})
        opts = {'driver': 'throttle', 'node-name': 'throttle0', 'throttle-group': 'group0',
                'file': {'driver': 'raw', 'node-name': 'hd0',
                         'file': {'driver': 'file', 'node-name': 'hd0-file', 'filename': img}}}
        q.execute('blockdev-add', opts)
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk')
        if 'blockdev-reopen' not in [c['name'] for c in q.execute('query-commands')]:
            raise Skip('blockdev-reopen not available')

        def reopen(o, err=None):
            r = q.cmd('blockdev-reopen', {'options': [o]})
            if err is None:
                assert_eq(r, {'return': {}}, 'reopen %r' % o)
            else:
                assert_eq(r.get('error'), {'class': GE, 'desc': err}, 'reopen %r' % o)

        reopen(opts)
        ref = dict(opts, file='hd0')
        reopen(ref)
        reopen(dict(ref, **{'throttle-group': 'notfound'}), "Throttle group 'notfound' does not exist")
        reopen(dict(ref, **{'throttle-group': 'group1'}))
        qemu_io(d.uri('disk'), 'read -P 0xa0 0 1M', 'write -P 0xa1 0 64k')
        e = q.error('object-del', {'id': 'group1'})
        assert_eq(e, {'class': GE, 'desc': "object 'group1' is in use, can not be deleted"}, 'g1')
        reopen(ref)
        e = q.error('object-del', {'id': 'group0'})
        assert_eq(e, {'class': GE, 'desc': "object 'group0' is in use, can not be deleted"}, 'g0')
        assert_eq(q.execute('object-del', {'id': 'group1'}), {}, 'group1 free again')
        qemu_io(d.uri('disk'), 'read -P 0xa1 0 64k', 'read -P 0xa0 64k 960k')
        _export_del(q, 'disk')
        q.execute('blockdev-del', {'node-name': 'throttle0'})
        assert_eq(q.execute('object-del', {'id': 'group0'}), {}, 'group0 free at last')


class _Backlog:
    """One NBD connection with `count` reads queued at once; `done`
    counts the replies received (libnbd completion callbacks)."""

    def __init__(self, uri, count, size=4096):
        nbd = require_nbd()
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.count = count
        self.done = 0
        for i in range(count):
            self.h.aio_pread(nbd.Buffer(size), i * size, completion=self._complete)

    def _complete(self, error):
        self.done += 1
        return 1

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.h.poll(0)
            time.sleep(0.01)

    def close(self):
        self.h.shutdown()


def test_drain_releases_throttled_requests():
    """At 1 byte/s, queued 4k reads would wait for more than an hour; a
    drain of the throttle node (here by blockdev-reopen) must let them go
    instead of waiting for them (a stalled drain never answers).  Eight
    reads: blockd serves at least 8 requests of a connection at once."""
    with _daemon() as d:
        path = _qcow2(d)
        q = d.qmp()
        _group(q, 'crawl', **{'bps-total': 1})
        _throttle_over_qcow2(q, path, 'crawl')
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk', writable=False)
        if 'blockdev-reopen' not in [c['name'] for c in q.execute('query-commands')]:
            raise Skip('blockdev-reopen not available')
        b = _Backlog(d.uri('disk'), 8)
        b.pump(0.5)
        before = b.done
        # Reopen with the same options: drains throttle0, changes nothing.
        q.execute('blockdev-reopen', {'options': [
            {'driver': 'throttle', 'node-name': 'throttle0', 'throttle-group': 'crawl',
             'file': 'hd0'}]})
        b.pump(0.5)
        after = b.done
        print('completed before the drain: %d, after: %d of %d' % (before, after, b.count))
        assert before <= 1, 'limit not in force before the drain (%d done)' % before
        assert_eq(after, b.count, 'reads completed once the drain released them')
        b.close()


def test_graph_changes_while_throttled_client_runs():
    """Unrelated graph changes and export churn while a throttled NBD
    client works and another one has reads stuck at 1 byte/s: every
    command answers (none waits for the stuck reads) and the working
    client's data is right."""
    nbd = require_nbd()
    with _daemon() as d:
        path = _qcow2(d)
        stuck_img = _qcow2(d, 'stuck.qcow2')
        q = d.qmp()
        _group(q, 'g', **{'iops-total': 20})
        _group(q, 'crawl', **{'bps-total': 1})
        _throttle_over_qcow2(q, path, 'g')
        _throttle_over_qcow2(q, stuck_img, 'crawl', 'stuck0', 'hd1')
        other = make_image(d.path('other.raw'), 1 << 20, pattern=0x55)
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk', writable=False)
        _export(q, 'stuck0', 'stuck', writable=False)
        stuck = _Backlog(d.uri('stuck'), 4)
        stuck.pump(0.2)
        errors = []
        stop = threading.Event()
        reads = [0]

        def client():
            try:
                h = nbd.NBD()
                h.connect_uri(d.uri('disk'))
                while not stop.is_set():
                    buf = h.pread(4096, (reads[0] % 256) * 4096)
                    if buf != b'\xa0' * 4096:
                        errors.append('bad data at read %d' % reads[0])
                        break
                    reads[0] += 1
                h.shutdown()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        t = threading.Thread(target=client)
        t.start()
        try:
            for i in range(3):
                q.execute('blockdev-add', {'driver': 'file', 'node-name': 'o%d' % i,
                                           'filename': other})
                q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r%d' % i,
                                           'file': 'o%d' % i})
                _export(q, 'r%d' % i, 'other%d' % i)
                qemu_io(d.uri('other%d' % i), 'read -P 0x55 0 64k')
                _export_del(q, 'other%d' % i)
                q.execute('blockdev-del', {'node-name': 'r%d' % i})
                q.execute('blockdev-del', {'node-name': 'o%d' % i})
                # A second export of the throttled node comes and goes.
                _export(q, 'throttle0', 'again', writable=False)
                _export_del(q, 'again', 'safe')
        finally:
            stop.set()
            t.join(60)
        assert not t.is_alive(), 'throttled client stuck'
        assert_eq(errors, [], 'client errors')
        assert reads[0] > 0, 'client made no progress'
        assert stuck.done <= 1, 'the 1 byte/s limit was not in force'
        # Release the stuck reads by a drain (qemu-storage-daemon would
        # otherwise wait for them at exit), then they complete.
        q.execute('blockdev-reopen', {'options': [
            {'driver': 'throttle', 'node-name': 'stuck0', 'throttle-group': 'crawl',
             'file': 'hd1'}]})
        stuck.pump(0.5)
        assert_eq(stuck.done, stuck.count, 'stuck reads released by the drain')
        stuck.close()
        d.assert_alive()



def test_shutdown_with_stuck_reads():
    """SIGTERM while a connected client has reads stuck at 1 byte/s: the
    daemon releases them and exits.  (qemu-storage-daemon 7.2 waits for
    them at exit, so this is checked for blockd only.)"""
    skip_if_reference('waits for throttled requests at exit')
    with _daemon() as d:
        path = _qcow2(d)
        q = d.qmp()
        _group(q, 'crawl', **{'bps-total': 1})
        _throttle_over_qcow2(q, path, 'crawl')
        _nbd_start(q, d)
        _export(q, 'throttle0', 'disk', writable=False)
        stuck = _Backlog(d.uri('disk'), 4)
        stuck.pump(0.3)
        assert stuck.done <= 1, 'the 1 byte/s limit was not in force'
        assert_eq(d.stop(), 0, 'exit code with reads stuck in the throttle')



def test_fuse_throttled_readers():
    """A throttle node mounted over FUSE: concurrent readers (served by
    several FUSE worker threads) share the limit and read the right data;
    a write through the mount lands in the qcow2 image."""
    from test_fuse import fuse_daemon, new_mountpoint
    require_fuse()
    require_tool('qemu-img', 'qemu-io')
    with contextlib.closing(Daemon(qmp=False)) as s, fuse_mounted(s.path('mnt'), wait=False):
        img = _qcow2(s, 'hd0.qcow2', size='4M', length='3M')
        mnt = new_mountpoint(s.path('mnt'))
        args = ['--object', 'throttle-group,id=g,limits.bps-read=1048576',
                '--blockdev', 'driver=qcow2,node-name=hd0,file.driver=file,file.filename=%s' % img,
                '--blockdev', 'driver=throttle,node-name=t0,throttle-group=g,file=hd0',
                '--export', 'type=fuse,id=fuse0,node-name=t0,mountpoint=%s,writable=on' % mnt]
        with fuse_daemon(args, [mnt], tmpdir=s.dir):
            results = {}

            def reader(i):
                with fd_open(mnt, os.O_RDONLY) as fd:
                    results[i] = os.pread(fd, 768 << 10, i * (768 << 10))
            threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            took = time.monotonic() - start
            print('3 MiB by 4 FUSE readers at 1 MiB/s: %.2fs' % took)
            for i in range(4):
                assert_eq(results[i], b'\xa0' * (768 << 10), 'data read by reader %d' % i)
            assert took >= 1.2, 'bps-read=1M not enforced over FUSE: 3 MiB in %.2fs' % took
            with fd_open(mnt, os.O_WRONLY) as fd:
                os.pwrite(fd, b'\x5c' * 65536, 3 << 20)
                os.fsync(fd)
        qemu_io(img, 'read -P 0xa0 0 3M', 'read -P 0x5c 3M 64k', fmt='qcow2')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
