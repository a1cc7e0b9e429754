#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Data path with real clients: qemu-io pattern writes and reads over
nbd+unix:// URIs, nbdinfo (size, read-only, --list, --map), qemu-img compare,
nbdcopy, and null-co / raw offset+size nodes exported and read."""

import contextlib
import filecmp
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, make_image, qemu_io,  # noqa: E402
                         require_nbd, require_tool, run, start_exporting, tests_of, write_at)

MiB = 1 << 20


def _tmp_daemon_dir():
    return Daemon(qmp=False)


def test_qemu_io_pattern_write_read():
    """Pattern writes via one client, verified by a second client and by
    reading the image file with qemu-io after the daemon stopped."""
    require_tool('qemu-io')
    with _tmp_daemon_dir() as scratch:
        img = make_image(scratch.path('a.raw'), 16 * MiB)
        with contextlib.closing(start_exporting(img)) as d:
            qemu_io(d.uri(), 'write -P 0xa5 0 1M', 'write -P 0x3c 5M 64k', 'write -z 8M 1M',
                    'write -P 0x77 15M 1M')
            # a second, independent client sees the data
            qemu_io(d.uri(), 'read -P 0xa5 0 1M', 'read -P 0x3c 5M 64k', 'read -P 0 8M 1M',
                    'read -P 0x77 15M 1M', 'read -P 0 1M 4M')
            assert_eq(d.stop(), 0, 'daemon exit status')
        qemu_io(img, 'read -P 0xa5 0 1M', 'read -P 0x3c 5M 64k', 'read -P 0 8M 1M',
                'read -P 0x77 15M 1M', 'read -P 0 1M 4M')


def test_qemu_io_unaligned_io():
    require_tool('qemu-io')
    with _tmp_daemon_dir() as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB)
        with start_exporting(img) as d:
            qemu_io(d.uri(), 'write -P 0x42 1 3', 'write -P 0x43 4095 2', 'write -P 0x44 1000000 12345')
            qemu_io(d.uri(), 'read -P 0 0 1', 'read -P 0x42 1 3', 'read -P 0x43 4095 2',
                    'read -P 0x44 1000000 12345', 'read -P 0 1012345 100')


def test_qemu_io_fua_flush_discard():
    require_tool('qemu-io')
    with _tmp_daemon_dir() as scratch:
        img = make_image(scratch.path('a.raw'), 4 * MiB, pattern=0xee)
        with start_exporting(img, node_opts=',discard=unmap') as d:
            qemu_io(d.uri(), 'write -f -P 0x12 0 64k', 'flush', 'discard 1M 1M', 'write -z -u 2M 64k')
            qemu_io(d.uri(), 'read -P 0x12 0 64k', 'read -P 0 2M 64k', 'read -P 0xee 3M 64k')


def test_nbdinfo_size_and_flags():
    require_tool('nbdinfo')
    with _tmp_daemon_dir() as scratch:
        img = make_image(scratch.path('a.raw'), 5 * MiB + 4096)
        with start_exporting(img, writable=False) as d:
            info = json.loads(run(['nbdinfo', '--no-content', '--json', d.uri()]).stdout)
            e = info['exports'][0]
            assert_eq(info['protocol'], 'newstyle-fixed', 'protocol')
            assert_eq(info['structured'], True, 'structured replies')
            assert_eq(e['export-name'], 'disk', 'export-name')
            assert_eq(e['export-size'], 5 * MiB + 4096, 'export-size')
            assert_eq(e['is_read_only'], True, 'is_read_only')
            assert_eq(e['can_trim'], False, 'can_trim on read-only')
            assert_eq(e['can_zero'], False, 'can_zero on read-only')
            assert_in('base:allocation', e['contexts'], 'contexts')
            assert_eq(run(['nbdinfo', '--size', d.uri()]).stdout.strip(), str(5 * MiB + 4096), '--size')
            assert_eq(run(['nbdinfo', '--is', 'read-only', d.uri()], check=False).returncode, 0,
                      '--is read-only')


def test_nbdinfo_writable_flags():
    require_tool('nbdinfo')
    with _tmp_daemon_dir() as scratch:
        img = make_image(scratch.path('a.raw'), MiB)
        with start_exporting(img, writable=True) as d:
            e = json.loads(run(['nbdinfo', '--no-content', '--json', d.uri()]).stdout)['exports'][0]
            assert_eq(e['is_read_only'], False, 'is_read_only')
            for k in ('can_flush', 'can_fua', 'can_trim', 'can_zero'):
                assert_eq(e[k], True, k)


def test_nbdinfo_list():
    require_tool('nbdinfo')
    with Daemon() as d:
        a = make_image(d.path('a.raw'), MiB)
        b = make_image(d.path('b.raw'), 2 * MiB)
        d.wait = [d.nbd_sock]
        d.args = ['--blockdev', 'driver=file,node-name=fa,filename=%s' % a,
                  '--blockdev', 'driver=file,node-name=fb,filename=%s' % b,
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=ea,node-name=fa,name=alpha',
                  '--export', 'type=nbd,id=eb,node-name=fb,name=beta,description=second disk'] + d.args
        d.start()
        info = json.loads(run(['nbdinfo', '--list', '--json',
                               'nbd+unix:///?socket=%s' % d.nbd_sock]).stdout)
        ex = {e['export-name']: e for e in info['exports']}
        assert_eq(sorted(ex), ['alpha', 'beta'], 'listed export names')
        assert_eq(ex['alpha']['export-size'], MiB, 'alpha size')
        assert_eq(ex['beta']['export-size'], 2 * MiB, 'beta size')
        assert_eq(ex['beta'].get('description'), 'second disk', 'beta description')


def _sparse_image(path):
    make_image(path, 8 * MiB)
    write_at(path, 1 * MiB, b'\xab' * (64 * 1024))
    write_at(path, 3 * MiB, os.urandom(192 * 1024))
    write_at(path, 8 * MiB - 4096, b'\x01' * 4096)
    return [(0, MiB, 3), (MiB, 64 * 1024, 0), (MiB + 64 * 1024, 2 * MiB - 64 * 1024, 3),
            (3 * MiB, 192 * 1024, 0), (3 * MiB + 192 * 1024, 5 * MiB - 192 * 1024 - 4096, 3),
            (8 * MiB - 4096, 4096, 0)]


def _map(uri, context=None):
    arg = '--map' if context is None else '--map=' + context
    out = json.loads(run(['nbdinfo', arg, '--json', uri]).stdout)
    return [(e['offset'], e['length'], e['type']) for e in out]


def _merge(extents):
    out = []
    for off, ln, ty in extents:
        if out and out[-1][2] == ty and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + ln, ty)
        else:
            out.append((off, ln, ty))
    return out


def test_nbdinfo_map_sparse_raw():
    """base:allocation of a sparse raw file: holes and data exact."""
    require_tool('nbdinfo')
    with _tmp_daemon_dir() as scratch:
        img = scratch.path('s.raw')
        expected = _sparse_image(img)
        with start_exporting(img, writable=False) as d:
            assert_eq(_merge(_map(d.uri())), expected, 'base:allocation map')


def test_nbdinfo_map_after_writes():
    """Extents follow writes and discards made over NBD (discard=unmap)."""
    require_tool('nbdinfo', 'qemu-io')
    with _tmp_daemon_dir() as scratch:
        img = make_image(scratch.path('s.raw'), 4 * MiB)
        with start_exporting(img, node_opts=',discard=unmap') as d:
            qemu_io(d.uri(), 'write -P 0x11 0 2M', 'discard 1M 512k')
            m = _merge(_map(d.uri()))
            assert_eq(m, [(0, MiB, 0), (MiB, 512 * 1024, 3), (MiB + 512 * 1024, 512 * 1024, 0),
                          (2 * MiB, 2 * MiB, 3)], 'map after writes and discard')


def test_nbdinfo_map_allocation_depth():
    """qemu:allocation-depth on a raw-over-file export: one 'local' extent."""
    require_tool('nbdinfo')
    with _tmp_daemon_dir() as scratch:
        img = scratch.path('s.raw')
        _sparse_image(img)
        with start_exporting(img, writable=False, extra_export=',allocation-depth=on') as d:
            e = json.loads(run(['nbdinfo', '--no-content', '--json', d.uri()]).stdout)['exports'][0]
            assert_in('qemu:allocation-depth', e['contexts'], 'contexts')
            out = json.loads(run(['nbdinfo', '--map=qemu:allocation-depth', '--json',
                                  d.uri()]).stdout)
            merged = _merge([(x['offset'], x['length'], x['type']) for x in out])
            assert_eq(merged, [(0, 8 * MiB, 1)], 'allocation-depth map')
            assert_eq(out[0]['description'], 'local', 'description')


def test_qemu_img_compare_export_vs_file():
    require_tool('qemu-img')
    with _tmp_daemon_dir() as scratch:
        img = scratch.path('s.raw')
        _sparse_image(img)
        with start_exporting(img, writable=False) as d:
            p = run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', d.uri(), img], check=False)
            assert_eq(p.returncode, 0, 'qemu-img compare exit (%s %s)' % (p.stdout, p.stderr))
            assert_in('Images are identical', p.stdout, 'compare output')


def test_qemu_img_compare_detects_difference():
    require_tool('qemu-img', 'qemu-io')
    with _tmp_daemon_dir() as scratch:
        img = scratch.path('s.raw')
        _sparse_image(img)
        other = scratch.path('o.raw')
        with open(img, 'rb') as f, open(other, 'wb') as g:
            g.write(f.read())
        write_at(other, 5 * MiB, b'\x99')
        with start_exporting(img, writable=False) as d:
            p = run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', d.uri(), other], check=False)
            assert_eq(p.returncode, 1, 'qemu-img compare exit status on mismatch')
            assert_in('Content mismatch at offset 5242880', p.stdout, 'mismatch offset')


def test_nbdcopy_whole_export():
    require_tool('nbdcopy')
    with _tmp_daemon_dir() as scratch:
        img = scratch.path('s.raw')
        _sparse_image(img)
        write_at(img, 6 * MiB, os.urandom(MiB))
        out = scratch.path('copy.raw')
        with start_exporting(img, writable=False) as d:
            run(['nbdcopy', d.uri(), out])
        assert_eq(os.path.getsize(out), os.path.getsize(img), 'copy size')
        assert_eq(filecmp.cmp(img, out, shallow=False), True, 'copy identical (cmp)')


def test_nbdcopy_into_export():
    require_tool('nbdcopy')
    with _tmp_daemon_dir() as scratch:
        src = make_image(scratch.path('src.raw'), 4 * MiB)
        write_at(src, 0, os.urandom(3 * MiB))
        img = make_image(scratch.path('dst.raw'), 4 * MiB, pattern=0xff)
        with contextlib.closing(start_exporting(img)) as d:
            run(['nbdcopy', '--flush', src, d.uri()])
            assert_eq(d.stop(), 0, 'daemon exit')
        assert_eq(filecmp.cmp(src, img, shallow=False), True, 'image equals source')


def test_null_co_export():
    nbd = require_nbd()
    with Daemon() as d:
        d.wait = [d.nbd_sock]
        d.args = ['--blockdev', 'driver=null-co,node-name=n,size=%d,read-zeroes=on' % (64 * MiB),
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=n,name=disk,writable=on'] + d.args
        d.start()
        h = nbd.NBD()
        h.connect_uri(d.uri())
        assert_eq(h.get_size(), 64 * MiB, 'size')
        assert_eq(h.pread(MiB, 10 * MiB), b'\0' * MiB, 'reads zeroes')
        h.pwrite(b'\x55' * 4096, 0)
        assert_eq(h.pread(4096, 0), b'\0' * 4096, 'writes are discarded')
        h.shutdown()
        with d.qmp() as q:
            n = q.execute('query-named-block-nodes')[0]
            assert_eq(n['drv'], 'null-co', 'drv')
            assert_eq(n['image']['virtual-size'], 64 * MiB, 'virtual-size')


def test_null_co_default_size():
    """null-co without size is 1 GiB, as in QEMU."""
    with Daemon() as d:
        d.start()
        with d.qmp() as q:
            q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n'})
            n = q.execute('query-named-block-nodes')[0]
            assert_eq(n['image']['virtual-size'], 1 << 30, 'default null-co size')


def test_raw_offset_size_export():
    """A raw node with offset/size exports exactly that window of its file."""
    nbd = require_nbd()
    require_tool('qemu-io')
    with Daemon() as d:
        img = make_image(d.path('a.raw'), 8 * MiB)
        write_at(img, MiB - 512, b'\x01' * 512)
        write_at(img, MiB, b'\x02' * MiB)
        write_at(img, 2 * MiB, b'\x03' * 512)
        d.wait = [d.nbd_sock]
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--blockdev', 'driver=raw,node-name=w,file=f,offset=%d,size=%d' % (MiB, MiB),
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=w,name=disk,writable=on'] + d.args
        d.start()
        h = nbd.NBD()
        h.connect_uri(d.uri())
        assert_eq(h.get_size(), MiB, 'window size')
        assert_eq(h.pread(MiB, 0), b'\x02' * MiB, 'window content')
        h.pwrite(b'\x04' * 4096, MiB - 4096)
        h.flush()
        h.shutdown()
        with d.qmp() as q:
            n = {x['node-name']: x for x in q.execute('query-named-block-nodes')}
            assert_eq(n['w']['image']['virtual-size'], MiB, 'raw node virtual-size')
        d.stop()
        with open(img, 'rb') as f:
            data = f.read()
        assert_eq(data[MiB - 512:MiB], b'\x01' * 512, 'byte before window untouched')
        assert_eq(data[2 * MiB - 4096:2 * MiB], b'\x04' * 4096, 'write landed at offset+pos')
        assert_eq(data[2 * MiB:2 * MiB + 512], b'\x03' * 512, 'byte after window untouched')


def test_raw_offset_beyond_file_refused():
    with Daemon() as d:
        img = make_image(d.path('a.raw'), MiB)
        d.start()
        with d.qmp() as q:
            q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
            e = q.error('blockdev-add', {'driver': 'raw', 'node-name': 'w', 'file': 'f',
                                         'offset': 512 * 1024, 'size': MiB})
            assert_eq(e['desc'], 'The sum of offset (524288) and size (1048576) has to be smaller '
                                 'or equal to the  actual size of the containing file (1048576)', 'desc')


def test_block_status_through_filter_over_overlay():
    """A throttle filter above a qcow2 overlay: base:allocation and
    qemu:allocation-depth see the backing file's data through the filter
    (exact maps, as qemu-storage-daemon 7.2 gives them)."""
    require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    with Daemon() as d:
        base, top = d.path('b.qcow2'), d.path('t.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '4M'])
        run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 1M', base])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top])
        run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 2 2M 1M', top])
        d.start()
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'g', 'limits': {}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        q.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'th', 'throttle-group': 'g',
                                   'file': 'top'})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'th', 'name': 'disk',
                                       'allocation-depth': True})

        def extents(ctx):
            out = run(['nbdinfo', '--json', '--map=' + ctx, d.uri('disk')]).stdout
            return [(e['offset'], e['length'], e['type']) for e in json.loads(out)]
        M = 1 << 20
        assert_eq(extents('base:allocation'),
                  [(0, M, 0), (M, M, 3), (2 * M, M, 0), (3 * M, M, 3)], 'base:allocation')
        assert_eq(extents('qemu:allocation-depth'),
                  [(0, M, 3), (M, M, 0), (2 * M, M, 1), (3 * M, M, 0)], 'allocation depth')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
