#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The qcow2 driver against images made by qemu-img/qemu-io: reads of every
cluster size, compat 0.10, compressed and zero clusters, 3-level backing
chains; writes checked with qemu-img check and compare; query output; a
SIGKILL crash test; corrupt and hostile images refused with clear errors."""

import json
import os
import random
import signal
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, fio, main, qemu_io,  # noqa: E402
                         require_fio_nbd, require_nbd, require_tool, run,
                         skip_if_reference, tests_of)

MiB = 1 << 20
WRITES = ['write -P 0x11 0 1M', 'write -P 0x22 5M 100k', 'write -P 0x33 1000 3000',
          'write -P 0x44 70000 200000', 'write -z 10M 1M', 'write -P 0x55 31M 1M',
          'write -z 5100k 10k', 'write -P 0x66 20M 4097']


def qcow2_daemon(d, image, node_opts='', extra=()):
    d.args = ['--blockdev', 'driver=qcow2,node-name=q,discard=unmap%s,file.driver=file,'
              'file.filename=%s' % (node_opts, image),
              '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
              '--export', 'type=nbd,id=e,node-name=q,name=disk,writable=on'] + list(extra) + d.args
    d.wait = [d.nbd_sock]
    return d.start()


def check_clean(image, allow_leaks=False):
    p = run(['qemu-img', 'check', image], check=False)
    ok = (0, 3) if allow_leaks else (0,)
    if p.returncode not in ok:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s' % (image, p.returncode, p.stdout,
                                                                  p.stderr))


def test_read_write_cluster_sizes():
    """Every cluster size and refcount width: writes through blockd equal
    the same writes on a raw file, and qemu-img check is clean."""
    require_tool('qemu-img', 'qemu-io')
    for opts in ['cluster_size=512,refcount_bits=1', 'cluster_size=512,refcount_bits=64',
                 'cluster_size=1024,refcount_bits=4',
                 'cluster_size=4096,refcount_bits=8', 'cluster_size=65536',
                 'cluster_size=2M,refcount_bits=64', 'compat=0.10',
                 'lazy_refcounts=on,refcount_bits=32']:
        with Daemon() as d:
            img, ref = d.path('a.qcow2'), d.path('ref.raw')
            run(['qemu-img', 'create', '-f', 'qcow2', '-o', opts, img, '32M'])
            # Pre-existing data written by qemu-io must read back too.
            qemu_io(img, 'write -P 0x77 4M 300k', fmt='qcow2')
            run(['qemu-img', 'convert', '-O', 'raw', img, ref])
            qcow2_daemon(d, img)
            qemu_io(d.uri(), 'read -P 0x77 4M 300k')
            qemu_io(d.uri(), *WRITES)
            qemu_io(ref, *WRITES)
            run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri(), ref])
            assert_eq(d.stop(), 0, 'exit status')
            check_clean(img)
            run(['qemu-img', 'compare', img, ref])


def test_compressed_and_zero_clusters():
    """An image from qemu-img convert -c reads exactly; overwriting parts of
    compressed clusters keeps the rest; check clean."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        raw, img = d.path('r.raw'), d.path('c.qcow2')
        with open(raw, 'wb') as f:
            f.write(random.Random(1).randbytes(4 * MiB) + b'A' * (2 * MiB) + bytes(2 * MiB))
        run(['qemu-img', 'convert', '-c', '-O', 'qcow2', raw, img])
        qemu_io(img, 'write -z 1M 128k', fmt='qcow2')
        qemu_io(raw, 'write -z 1M 128k')
        qcow2_daemon(d, img)
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri(), raw])
        cmds = ['write -P 0xdd 100 5000', 'write -P 0xee 4M 70000', 'discard 2M 128k']
        qemu_io(d.uri(), *cmds)
        qemu_io(raw, 'write -P 0xdd 100 5000', 'write -P 0xee 4M 70000', 'write -z 2M 128k')
        assert_eq(d.stop(), 0, 'exit status')
        check_clean(img)
        run(['qemu-img', 'compare', img, raw])


def test_backing_chain_three_levels():
    """raw <- qcow2 <- qcow2 (relative names, backing format honoured):
    reads fall through, partial writes copy the rest from the backing."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        base, mid, top, ref = (d.path(n) for n in ('base.raw', 'mid.qcow2', 'top.qcow2',
                                                   'ref.raw'))
        run(['qemu-img', 'create', '-f', 'raw', base, '16M'])
        qemu_io(base, 'write -P 0xaa 0 16M')
        run(['qemu-img', 'create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', mid], cwd=d.dir)
        qemu_io(mid, 'write -P 0xbb 1M 1M', fmt='qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top],
            cwd=d.dir)
        qemu_io(top, 'write -P 0xcc 3M 1000', 'write -z 4M 64k', fmt='qcow2')
        run(['qemu-img', 'convert', '-O', 'raw', top, ref])
        qcow2_daemon(d, top)
        run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', d.uri(), ref])
        cmds = ['write -P 0xdd 8M 5000', 'write -P 0xee 1M 512', 'write -P 0xf0 3M 10']
        qemu_io(d.uri(), *cmds)
        qemu_io(ref, *cmds)
        q = d.qmp()
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        image = nodes['q']['image']
        assert_eq(image['backing-filename'], 'mid.qcow2', 'backing-filename')
        assert_eq(image['format-specific']['type'], 'qcow2', 'format-specific type')
        assert_eq(image['format-specific']['data']['compat'], '1.1', 'compat')
        assert_eq(image['backing-image']['backing-filename'], 'base.raw', 'nested backing')
        assert_eq(d.stop(), 0, 'exit status')
        check_clean(top)
        run(['qemu-img', 'compare', top, ref])


def test_create_backing_fmt_is_a_driver():
    """blockdev-create's qcow2 backing-fmt is a BlockdevDriver, checked
    when the command is given, as QEMU's (found by tests/diff)."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        base = d.path('base.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'])
        img = d.path('new.qcow2')
        open(img, 'w').close()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img})
        opts = {'driver': 'qcow2', 'file': 'f', 'size': MiB, 'backing-file': base,
                'backing-fmt': 'nope'}
        e = q.error('blockdev-create', {'job-id': 'c', 'options': opts})
        assert_eq(e['desc'], "Parameter 'backing-fmt' does not accept value 'nope'", 'bad fmt')
        assert_eq(q.execute('query-jobs'), [], 'no job made')
        opts['backing-fmt'] = 'qcow2'
        q.execute('blockdev-create', {'job-id': 'c', 'options': opts})
        run_ = q.run_job('c')
        assert_eq(run_.error, None, 'created')
        info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', img]).stdout)
        assert_eq(info.get('backing-filename-format'), 'qcow2', 'backing format written')


def test_backing_null_option():
    """backing=null opens the image alone: unallocated clusters read zero."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        base, top = d.path('base.raw'), d.path('top.qcow2')
        run(['qemu-img', 'create', '-f', 'raw', base, '4M'])
        qemu_io(base, 'write -P 0xaa 0 4M')
        run(['qemu-img', 'create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top], cwd=d.dir)
        d.args = ['--blockdev', json.dumps({
            'driver': 'qcow2', 'node-name': 'q', 'backing': None,
            'file': {'driver': 'file', 'filename': top}}),
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e,node-name=q,name=disk'] + d.args
        d.wait = [d.nbd_sock]
        d.start()
        qemu_io(d.uri(), 'read -P 0 0 4M', extra=('-r',))


def _write_header_field(path, offset, fmt, value):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def _open_error(d, img, node_opts=''):
    q = d.qmp()
    opts = {'driver': 'qcow2', 'node-name': 'x',
            'file': {'driver': 'file', 'filename': img}}
    if node_opts:
        opts['read-only'] = True
    return q.error('blockdev-add', opts)['desc']


def test_cache_options_messages():
    """Cache options: QEMU's messages (texts checked against
    qemu-storage-daemon 7.2 with the same options) and valid combinations
    accepted."""
    require_tool('qemu-img')
    cases = [
        ({'l2-cache-entry-size': 1000}, 'L2 cache entry size must be a power of two between '
                                        '512 and the cluster size (65536)'),
        ({'l2-cache-entry-size': 131072}, 'L2 cache entry size must be a power of two between '
                                          '512 and the cluster size (65536)'),
        ({'cache-size': 1048576, 'l2-cache-size': 2097152},
         'l2-cache-size may not exceed cache-size'),
        ({'cache-size': 1048576, 'refcount-cache-size': 2097152},
         'refcount-cache-size may not exceed cache-size'),
        ({'cache-size': 1048576, 'l2-cache-size': 524288, 'refcount-cache-size': 524288},
         'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time'),
        ({'cache-clean-interval': 4294967296}, 'Cache clean interval too big'),
        ({'cache-clean-interval': -1}, 'Cache clean interval too big'),
        ({'refcount-cache-size': -1},
         "Parameter 'refcount-cache-size' expects a non-negative number below 2^64"),
        ({'l2-cache-size': -1},
         "Parameter 'l2-cache-size' expects a non-negative number below 2^64"),
    ]
    with Daemon() as d:
        img = d.path('c.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '64M'])
        d.start()
        q = d.qmp()
        for extra, msg in cases:
            opts = {'driver': 'qcow2', 'node-name': 'x',
                    'file': {'driver': 'file', 'filename': img}}
            opts.update(extra)
            assert_eq(q.error('blockdev-add', opts)['desc'], msg, repr(extra))
        for i, extra in enumerate([{'cache-size': 1048576}, {'l2-cache-size': 65536},
                                   {'l2-cache-entry-size': 4096, 'cache-clean-interval': 1},
                                   {'overlap-check': 'all'}, {'overlap-check': 'none'},
                                   {'overlap-check': {'template': 'constant',
                                                      'active-l2': True}}]):
            opts = {'driver': 'qcow2', 'node-name': 'ok%d' % i,
                    'file': {'driver': 'file', 'filename': img}, 'read-only': True}
            opts.update(extra)
            q.execute('blockdev-add', opts)
            q.execute('blockdev-del', {'node-name': 'ok%d' % i})


def test_corrupt_and_hostile_images():
    """Corrupt bit: refused read/write, fine read-only; unknown incompatible
    feature, L1 beyond EOF, absurd sizes: clear errors, daemon alive."""
    require_tool('qemu-img')
    with Daemon() as d:
        d.start()
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '16M'])
        _write_header_field(img, 72, '>Q', 2)               # corrupt bit
        assert_in('Image is corrupt; cannot be opened read/write', _open_error(d, img))
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ro', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': img}})
        q.execute('blockdev-del', {'node-name': 'ro'})
        _write_header_field(img, 72, '>Q', 1 << 40)         # unknown feature
        assert_in('Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000',
                  _open_error(d, img))
        run(['qemu-img', 'create', '-f', 'qcow2', img, '16M'])
        _write_header_field(img, 40, '>Q', 1 << 40)         # L1 beyond EOF
        assert_in('L1 table offset 0x10000000000 beyond end of file', _open_error(d, img))
        run(['qemu-img', 'create', '-f', 'qcow2', img, '16M'])
        _write_header_field(img, 36, '>I', 0x7fffffff)      # absurd L1 size
        assert_in('Active L1 table too large', _open_error(d, img))
        run(['qemu-img', 'create', '-f', 'qcow2', img, '16M'])
        _write_header_field(img, 20, '>I', 40)              # cluster bits
        assert_in('Unsupported cluster size: 2^40', _open_error(d, img))
        with open(img, 'wb') as f:
            f.write(b'QFI\xfb' + bytes(100))
        assert_in('Unsupported qcow2 version 0', _open_error(d, img))
        d.assert_alive()


def test_hostile_l2_offset():
    """An L1 entry pointing beyond the end of the file: reads fail with EIO,
    the daemon survives and names the node in its log."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '16M'])
        qemu_io(img, 'write -P 0x11 0 64k', fmt='qcow2')
        with open(img, 'rb') as f:
            f.seek(40)
            l1 = struct.unpack('>Q', f.read(8))[0]
        _write_header_field(img, l1, '>Q', (1 << 63) | (1 << 40))
        d.args = ['--blockdev', 'driver=qcow2,node-name=q,read-only=on,file.driver=file,'
                  'file.filename=%s' % img,
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=q,name=disk'] + d.args
        d.wait = [d.nbd_sock]
        d.start()
        p = qemu_io(d.uri(), 'read 0 4k', check=False, extra=('-r',))
        assert_in('error', (p.stdout + p.stderr).lower())
        d.assert_alive()
        assert_in("node 'q'", d.stderr())


def test_overlap_check_protects_metadata():
    """An L2 entry pointing a guest cluster at the refcount table (a
    corrupted image): the data write over it is refused with EIO, the
    table keeps its bytes, and the image is marked corrupt, as QEMU's
    overlap check does; with overlap-check=none the write goes through."""
    require_tool('qemu-img', 'qemu-io')
    for mode in ('cached', 'none'):
        with Daemon() as d:
            img = d.path('a.qcow2')
            run(['qemu-img', 'create', '-f', 'qcow2', img, '16M'])
            qemu_io(img, 'write -P 0x11 0 64k', fmt='qcow2')
            with open(img, 'rb') as f:
                hdr = f.read(104)
            l1 = struct.unpack('>Q', hdr[40:48])[0]
            reftable = struct.unpack('>Q', hdr[48:56])[0]
            with open(img, 'rb') as f:
                f.seek(l1)
                l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
                f.seek(reftable)
                reftable_before = f.read(4096)
            # Guest cluster 0 now "lives" on the refcount table.
            _write_header_field(img, l2, '>Q', (1 << 63) | reftable)
            d.args = ['--blockdev', 'driver=qcow2,node-name=q,overlap-check=%s,file.driver=file,'
                      'file.filename=%s' % (mode, img),
                      '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                      '--export', 'type=nbd,id=e,node-name=q,name=disk,writable=on'] + d.args
            d.wait = [d.nbd_sock]
            d.start()
            p = qemu_io(d.uri(), 'write -P 0x66 0 4k', check=False)
            out = (p.stdout + p.stderr).lower()
            d.assert_alive()
            d.stop()
            with open(img, 'rb') as f:
                f.seek(reftable)
                reftable_after = f.read(4096)
                f.seek(72)
                incompatible = struct.unpack('>Q', f.read(8))[0]
            if mode == 'cached':
                assert_in('error', out, 'write over metadata')
                assert_eq(reftable_after, reftable_before, 'refcount table bytes')
                assert_eq(incompatible & 2, 2, 'corrupt bit set')
                assert_in('Preventing invalid write on metadata', d.stderr())
                p = run(['qemu-img', 'check', img], check=False)
                assert_in('corrupt', (p.stdout + p.stderr).lower())
            else:
                assert_eq('error' in out, False, 'write without overlap checks: ' + out)
                assert_eq(reftable_after[:4096], b'\x66' * 4096, 'unchecked write landed')


def test_change_backing_file():
    """change-backing-file rewrites the name in the image header (a
    read-only image is made writable for it and back), with QEMU's
    refusals; the graph is unchanged and qemu-img sees the new name."""
    require_tool('qemu-img')
    with Daemon() as d:
        base, mid, top = d.path('b.qcow2'), d.path('m.qcow2'), d.path('t.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '4M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top])
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top},
                                   'backing': {'driver': 'qcow2', 'node-name': 'mid',
                                               'file': {'driver': 'file', 'filename': mid}}})
        for args, msg in [
                ({'device': 'nope', 'image-node-name': 'top'}, "Cannot find device='nope' nor node-name='nope'"),
                ({'device': 'top', 'image-node-name': 'nope'}, "Cannot find device='' nor node-name='nope'")]:
            err = q.error('change-backing-file', dict(args, **{'backing-file': 'x'}))
            assert_eq(err['desc'], msg)
        names = [n['node-name'] for n in q.execute('query-named-block-nodes')
                 if n['drv'] == 'qcow2' and n['node-name'] not in ('top', 'mid')]
        err = q.error('change-backing-file', {'device': 'top', 'image-node-name': names[0],
                                              'backing-file': 'x'})
        assert_eq(err['desc'], 'not allowing backing file change on an image without a backing file')
        before = q.execute('query-named-block-nodes')
        # 'mid' is a read-only backing node: reopened writable for the change.
        q.execute('change-backing-file', {'device': 'top', 'image-node-name': 'mid',
                                          'backing-file': 'renamed-base.qcow2'})
        q.execute('change-backing-file', {'device': 'top', 'image-node-name': 'top',
                                          'backing-file': mid})
        after = q.execute('query-named-block-nodes')
        assert_eq([n['node-name'] for n in after], [n['node-name'] for n in before], 'same nodes')
        assert_eq([n['ro'] for n in after], [n['ro'] for n in before], 'same read-only states')
        d.stop()
        os.rename(base, d.path('renamed-base.qcow2'))   # where mid now points
        info = json.loads(run(['qemu-img', 'info', '--output=json', '-U', mid]).stdout)
        assert_eq(info.get('backing-filename'), 'renamed-base.qcow2', 'mid header')
        assert_eq(info.get('backing-filename-format'), 'qcow2', 'mid backing format')
        check_clean(mid)
        check_clean(top)


def test_grow_via_qmp_resize():
    """block_resize grows the image (L1 growth); data stays; check clean."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=512', img, '1M'])
        qemu_io(img, 'write -P 0x11 0 1M', fmt='qcow2')
        qcow2_daemon(d, img)
        q = d.qmp()
        # An NBD export does not share resize (as QEMU): refused while exported.
        r = q.cmd('block_resize', {'node-name': 'q', 'size': 64 * MiB})
        assert_in('Permission conflict', r.get('error', {}).get('desc', ''))
        r = q.cmd('block-export-del', {'id': 'e'})
        assert_eq(r, {'return': {}}, 'block-export-del')
        r = q.cmd('block_resize', {'node-name': 'q', 'size': 64 * MiB})
        if 'error' in r:
            raise AssertionError('block_resize: %s' % r)
        r = q.cmd('query-named-block-nodes')
        sizes = {n['node-name']: n['image']['virtual-size'] for n in r['return']}
        assert_eq(sizes['q'], 64 * MiB, 'virtual-size after block_resize')
        assert_eq(d.stop(), 0, 'exit status')
        check_clean(img)
        qemu_io(img, 'read -P 0x11 0 1M', 'write -P 0x22 60M 1M', 'read -P 0x22 60M 1M',
                fmt='qcow2')
        check_clean(img)


def _image_end(img):
    out = run(['qemu-img', 'check', '--output=json', img]).stdout
    return json.loads(out)['image-end-offset']


def test_shrink_via_qmp_resize():
    """block_resize shrinks a qcow2 image as QEMU 7.2 does: the clusters
    past the end and the L2 tables wholly past it are freed, the file is
    cut after its last cluster in use (the same end as qemu-img resize
    --shrink gives), the data before the end stays, the check is clean,
    and an internal snapshot keeps its own size and data."""
    require_tool('qemu-img', 'qemu-io')
    new_size = 300 * MiB + 64 * 1024 + 4096      # not cluster-aligned
    with Daemon() as d:
        img, ref = d.path('a.qcow2'), d.path('ref.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', img, '1G'])
        qemu_io(img, 'write -P 0x11 0 1M', 'write -P 0x22 299M 2M', 'write -P 0x33 600M 1M',
                'write -P 0x44 1000M 1M', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-c', 'before', img])
        qemu_io(img, 'write -P 0x55 0 64k', fmt='qcow2')
        run(['cp', img, ref])
        run(['qemu-img', 'resize', '-q', '--shrink', ref, str(new_size)])
        d.args += ['--blockdev', 'driver=qcow2,node-name=q,file.driver=file,'
                   'file.filename=%s' % img]
        d.start()
        q = d.qmp()
        q.execute('block_resize', {'node-name': 'q', 'size': new_size})
        sizes = {n['node-name']: n['image']['virtual-size']
                 for n in q.execute('query-named-block-nodes')}
        assert_eq(sizes['q'], new_size, 'virtual-size after the shrink')
        assert_eq(d.stop(), 0, 'exit status')
        check_clean(img)
        assert_eq(_image_end(img), _image_end(ref), 'image end offset, as qemu-img shrinks')
        p = run(['qemu-img', 'compare', img, ref], check=False)
        assert_eq(p.returncode, 0, 'compare with qemu-img --shrink: %s' % p.stdout)
        qemu_io(img, 'read -P 0x55 0 64k', 'read -P 0x22 299M 1M', fmt='qcow2')
        # Grown again, the cut part reads as zeroes, not the old data.
        run(['qemu-img', 'resize', '-q', img, '1G'])
        qemu_io(img, 'read -P 0 600M 1M', 'read -P 0 1000M 1M', fmt='qcow2')
        run(['qemu-img', 'snapshot', '-a', 'before', img])
        check_clean(img)
        qemu_io(img, 'read -P 0x11 0 1M', 'read -P 0x33 600M 1M', 'read -P 0x44 1000M 1M',
                fmt='qcow2')


def test_preallocated_metadata_block_status():
    """A qcow2 image made with preallocation=metadata has every cluster
    allocated onto holes of its file.  Block status over NBD asks the file
    as QEMU does: the data written shows as data, the rest as zeroes
    (so that copies skip it), run by run, as qemu-storage-daemon answers."""
    require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    require_nbd()
    with Daemon() as d:
        img = d.path('pm.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata',
             img, '8M'])
        qemu_io(img, 'write -P 0x55 0 64k', 'write -P 0x66 4M 128k', fmt='qcow2')
        d.args += ['--blockdev', 'driver=qcow2,node-name=q,file.driver=file,'
                   'file.filename=%s' % img,
                   '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                   '--export', 'type=nbd,id=e0,node-name=q,name=q']
        d.wait = [d.nbd_sock]
        d.start()
        extents = json.loads(run(['nbdinfo', '--json', '--map', d.uri('q')]).stdout)
        got = [(e['offset'], e['length'], e['type']) for e in extents]
        assert_eq(got, [(0, 64 * 1024, 0), (64 * 1024, 4 * MiB - 64 * 1024, 2),
                        (4 * MiB, 128 * 1024, 0), (4 * MiB + 128 * 1024, 4 * MiB - 128 * 1024, 2)],
                  'base:allocation extents')
        p = run(['qemu-img', 'compare', '-U', '-f', 'qcow2', '-F', 'raw', img, d.uri('q')],
                check=False)
        assert_eq(p.returncode, 0, 'export equal to the image: %s' % p.stdout)


def test_compress_filter():
    """compress -> qcow2 -> file through NBD: qemu-io patterns (aligned,
    unaligned, overwrites) land as compressed clusters, incompressible data
    as normal ones; check clean; everything reads back through qemu-io."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    import nbd
    with Daemon() as d:
        img = d.path('c.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '8M'])
        d.args = ['--blockdev', 'driver=file,node-name=f,filename=%s' % img,
                  '--blockdev', 'driver=qcow2,node-name=q,file=f',
                  '--blockdev', 'driver=compress,node-name=c,file=q',
                  '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                  '--export', 'type=nbd,id=e,node-name=c,name=disk,writable=on'] + d.args
        d.wait = [d.nbd_sock]
        d.start()
        cmds = ['write -P 0x11 0 1M', 'write -P 0x22 1M 100k', 'write -P 0x33 3000 5000',
                'write -P 0x44 1M 64k']
        qemu_io(d.uri(), *cmds)
        noise = random.Random(3).randbytes(65536)
        h = nbd.NBD()
        h.connect_uri(d.uri())
        h.pwrite(noise, 2 * MiB)
        h.flush()
        h.shutdown()
        checks = ['read -P 0x11 0 3000', 'read -P 0x33 3000 5000', 'read -P 0x11 8000 1040576',
                  'read -P 0x44 1M 64k', 'read -P 0x22 1114112 36864']
        qemu_io(d.uri(), *checks)
        assert_eq(d.stop(), 0, 'exit status')
        p = run(['qemu-img', 'check', img])
        assert_in('compressed clusters', p.stdout)
        assert_eq(p.stdout.split('% compressed')[0].split()[-1] != '0.00', True,
                  'compressed share in %r' % p.stdout)
        qemu_io(img, *checks, fmt='qcow2')
        with open(img, 'rb') as f:
            assert_eq(os.path.getsize(img) < 2 * MiB, True, 'image compressed')
        m = json.loads(run(['qemu-img', 'map', '--output=json', img]).stdout)
        # Compressed data has no plain host offset; the noise cluster has.
        first = next(e for e in m if e['start'] == 0)
        assert_eq('offset' in first, False, 'compressed cluster at 0: %r' % first)
        noisy = next(e for e in m if e['start'] <= 2 * MiB < e['start'] + e['length'])
        assert_eq('offset' in noisy, True, 'incompressible cluster: %r' % noisy)
        out = d.path('out.raw')
        run(['qemu-img', 'convert', '-O', 'raw', img, out])
        with open(out, 'rb') as f:
            f.seek(2 * MiB)
            assert_eq(f.read(65536) == noise, True, 'incompressible data')


def _crash_batch(rnd, size):
    """Up to 16 non-overlapping random writes, sent concurrently."""
    batch = []
    for _ in range(rnd.randint(1, 16)):
        n = rnd.choice([512, 4096, 65536, 100000])
        off = rnd.randrange(0, size - n)
        if all(off + n <= o or o + m <= off for o, m, _ in batch):
            batch.append((off, n, bytes([rnd.randrange(1, 256)]) * n))
    return batch


def _crash_round(d, img, rnd, size, flush_prob=1.0):
    import nbd
    model = bytearray(size)
    with open(img + '.model', 'rb') as f:
        model[:] = f.read()
    h = nbd.NBD()
    h.connect_uri(d.uri())
    dirty = []
    stop = threading.Event()
    sig = getattr(signal, os.environ.get('SIG', 'SIGKILL'))
    killer = threading.Timer(rnd.uniform(0.05, 0.4), lambda: (stop.set(), d.signal(sig)))
    killer.start()
    try:
        while not stop.is_set():
            # Concurrent allocating writes (several in flight at once),
            # then a flush: everything before the flush must survive.
            for off, n, data in _crash_batch(rnd, size):
                dirty.append((off, n))
                model[off:off + n] = data
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            if flush_prob >= 1.0 or rnd.random() < flush_prob:
                h.flush()
                dirty = []
    except nbd.Error:
        pass
    killer.join()
    d.wait_exit()
    return model, dirty


def test_crash_sigkill_under_write_load():
    """SIGKILL during concurrent random writes, many times: qemu-img check
    reports no corruption and every write flushed before the kill reads
    back; writes not flushed may or may not have landed."""
    require_nbd()
    require_tool('qemu-img')
    skip_if_reference('kills the daemon')
    size = 16 * MiB
    with Daemon(qmp=False) as scratch:
        img = scratch.path('a.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, str(size)])
        with open(img + '.model', 'wb') as f:
            f.write(bytes(size))
        rnd = random.Random(int(os.environ.get('BLOCKD_CRASH_SEED', '42')))
        for _ in range(int(os.environ.get('BLOCKD_CRASH_ROUNDS', '12'))):
            d = Daemon(qmp=False, tmpdir=scratch.dir)
            if os.path.exists(d.nbd_sock):
                os.unlink(d.nbd_sock)
            qcow2_daemon(d, img)
            model, dirty = _crash_round(d, img, rnd, size)
            check_clean(img, allow_leaks=True)
            if rnd.random() < 0.3:
                run(['qemu-img', 'check', '-r', 'leaks', img])
            raw = _read_all(img, size, scratch)
            data = bytearray(raw)
            for off, n in dirty:
                data[off:off + n] = model[off:off + n]
            if data != model:
                bad = next(i for i in range(size) if data[i] != model[i])
                end = next(i for i in range(bad, size + 1)
                           if i == size or data[i] == model[i])
                raise AssertionError('flushed data lost at offset %d..%d (read %r, expected %r)'
                                     % (bad, end, bytes(data[bad:bad + 4]),
                                        bytes(model[bad:bad + 4])))
            # The next round starts from what is on disk: an unflushed
            # write may or may not have landed.  (Saving the model with the
            # unflushed writes applied was the "lost cluster" bug: a write
            # that never landed was then expected in later rounds.)
            with open(img + '.model', 'wb') as f:
                f.write(raw)


def _header_dirty(img):
    with open(img, 'rb') as f:
        f.seek(72)
        return struct.unpack('>Q', f.read(8))[0] & 1


def test_lazy_refcounts_dirty_repair():
    """lazy-refcounts=on, SIGKILL during concurrent writes: the image is
    left dirty (refcounts behind the L2 tables); blockd repairs it on the
    next writable open as QEMU does (refcounts rebuilt, dirty bit cleared),
    then qemu-img check is clean (no leaks either) and flushed data reads
    back."""
    require_nbd()
    require_tool('qemu-img')
    skip_if_reference('kills the daemon')
    size = 16 * MiB
    with Daemon(qmp=False) as scratch:
        img = scratch.path('lazy.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, str(size)])
        with open(img + '.model', 'wb') as f:
            f.write(bytes(size))
        rnd = random.Random(int(os.environ.get('BLOCKD_CRASH_SEED', '7')))
        seen_dirty = seen_errors = 0
        for _ in range(int(os.environ.get('BLOCKD_CRASH_ROUNDS', '6'))):
            d = Daemon(qmp=False, tmpdir=scratch.dir)
            if os.path.exists(d.nbd_sock):
                os.unlink(d.nbd_sock)
            qcow2_daemon(d, img, ',lazy-refcounts=on,l2-cache-entry-size=512,l2-cache-size=1024')
            model, dirty = _crash_round(d, img, rnd, size, flush_prob=0.2)
            if _header_dirty(img):
                seen_dirty += 1
                p = run(['qemu-img', 'check', img], check=False)
                seen_errors += p.returncode == 2
            # Reopen writable in blockd: the repair runs at open.
            d = Daemon(qmp=False, tmpdir=scratch.dir)
            os.unlink(d.nbd_sock)
            qcow2_daemon(d, img)
            assert_eq(d.stop(), 0, 'clean exit after repair')
            assert_eq(_header_dirty(img), 0, 'dirty bit after repair')
            check_clean(img)
            raw = _read_all(img, size, scratch)
            data = bytearray(raw)
            for off, n in dirty:
                data[off:off + n] = model[off:off + n]
            assert_eq(data == model, True, 'flushed data after repair')
            with open(img + '.model', 'wb') as f:
                f.write(raw)
        assert_eq(seen_dirty > 0, True, 'some kill left the image dirty')
        print('dirty after %d kills, refcount errors before repair in %d' %
              (seen_dirty, seen_errors))


def test_lazy_refcounts_qemu_dirty_image():
    """An image QEMU left dirty (qemu-io, lazy refcounts, SIGKILL right
    after a write: qemu-img check reports refcount errors) is repaired by
    blockd on a writable open; a read-only open leaves it as it is."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with Daemon(qmp=False) as d:
        img = d.path('dirty.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '8M'])
        run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 512',
             '-c', 'write -P 0x6b 3M 70k', '-c', 'sigraise 9', img], check=False)
        assert_eq(_header_dirty(img), 1, 'dirty bit after the kill')
        p = run(['qemu-img', 'check', img], check=False)
        assert_eq(p.returncode, 2, 'qemu-img check before repair (errors)')
        ro = Daemon(tmpdir=d.dir, args=['--blockdev', 'driver=qcow2,node-name=q,read-only=on,'
                                              'file.driver=file,file.filename=%s' % img])
        ro.start()
        ro.qmp().execute('query-named-block-nodes')
        assert_eq(ro.stop(), 0, 'read-only exit code')
        assert_eq(_header_dirty(img), 1, 'dirty bit after a read-only open')
        d2 = Daemon(qmp=False, tmpdir=d.dir)
        qcow2_daemon(d2, img)
        qemu_io(d2.uri(), 'read -P 0x5a 0 512', 'read -P 0x6b 3M 70k', 'read -P 0 1M 1M')
        assert_eq(d2.stop(), 0, 'exit code')
        assert_eq(_header_dirty(img), 0, 'dirty bit after repair')
        check_clean(img)
        qemu_io(img, 'read -P 0x5a 0 512', 'read -P 0x6b 3M 70k', fmt='qcow2')


def test_lazy_refcounts_clean_close():
    """lazy-refcounts=on: writes set the dirty bit; a clean shutdown writes
    the refcounts back and clears it."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with Daemon(qmp=False) as d:
        img = d.path('lazy.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '8M'])
        qcow2_daemon(d, img)
        qemu_io(d.uri(), 'write -P 0x5a 0 1M', 'flush')
        assert_eq(_header_dirty(img), 1, 'dirty bit while writing')
        assert_eq(d.stop(), 0, 'exit code')
        assert_eq(_header_dirty(img), 0, 'dirty bit after close')
        check_clean(img)
        qemu_io(img, 'read -P 0x5a 0 1M', fmt='qcow2')


# fio jobs for the write loads: 4k random writes at queue depth 16 over the
# first 32 MiB, then 1 MiB sequential writes over the next 32 MiB; each
# verified (crc32c headers) right after writing.  Fixed seeds, so a later
# --verify_only run regenerates the same offsets and checks the same data.
FIO_JOBS = [
    ['--name=rand', '--rw=randwrite', '--bs=4k', '--iodepth=16', '--offset=0',
     '--size=32M', '--randseed=1234'],
    ['--name=seq', '--rw=write', '--bs=1M', '--iodepth=4', '--offset=32M', '--size=32M'],
]
FIO_COMMON = ['--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--output-format=terse']


def test_fio_verify_write_loads():
    """fio with verify (4k random qd16, 1 MiB sequential) through the NBD
    export of a qcow2; then qemu-img check is clean and the image equals a
    raw reference.  fio's verify headers hold the wall-clock time of each
    write, so replaying the job on a raw file would not give the same bytes:
    the raw reference is instead read back through a second blockd session,
    compared with what QEMU reads from the qcow2 (qemu-img compare), and
    fio --verify_only of the same jobs on that raw file proves it holds
    exactly the data fio wrote (not, say, zeroes on both sides)."""
    require_tool('qemu-img')
    require_fio_nbd()
    with Daemon(qmp=False) as d:
        img, ref = d.path('f.qcow2'), d.path('ref.raw')
        run(['qemu-img', 'create', '-f', 'qcow2', img, '64M'])
        qcow2_daemon(d, img)
        for job in FIO_JOBS:
            p = fio(['--ioengine=nbd', '--uri=' + d.uri()] + job + FIO_COMMON, cwd=d.dir)
            assert_eq(p.returncode, 0, 'fio %s through blockd (stderr %r)'
                      % (job[0], p.stderr[-2000:]))
        assert_eq(d.stop(), 0, 'exit status')
        check_clean(img)
        # Second session: blockd reads the image back into a raw file.
        d2 = Daemon(qmp=False, tmpdir=d.dir)
        if os.path.exists(d2.nbd_sock):
            os.unlink(d2.nbd_sock)
        qcow2_daemon(d2, img)
        run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', d2.uri(), ref])
        assert_eq(d2.stop(), 0, 'exit status (read-back session)')
        run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', img, ref])
        for job in FIO_JOBS:
            p = fio(['--ioengine=psync', '--filename=' + ref, '--verify_only'] + job +
                    FIO_COMMON, cwd=d.dir)
            assert_eq(p.returncode, 0, 'fio --verify_only %s on the raw copy (stderr %r)'
                      % (job[0], p.stderr[-2000:]))
        check_clean(img)


def _reftable_clusters(img):
    with open(img, 'rb') as f:
        f.seek(56)
        return struct.unpack('>I', f.read(4))[0]


def test_refcount_table_growth():
    """cluster_size=512: one refcount table cluster covers 64 refcount
    blocks (8 MiB of file at 16 bits, 2 MiB at 64 bits); writing more than
    that through blockd grows the refcount table (moved to new clusters).
    qemu-img check is clean and qemu-io reads every pattern back."""
    require_tool('qemu-img', 'qemu-io')
    for bits, total in ((16, 12), (64, 5)):
        with Daemon(qmp=False) as d:
            img = d.path('r.qcow2')
            run(['qemu-img', 'create', '-f', 'qcow2', '-o',
                 'cluster_size=512,refcount_bits=%d' % bits, img, '16M'])
            before = _reftable_clusters(img)
            qcow2_daemon(d, img)
            # Out of order and with partial clusters: allocation interleaves
            # data, L2 tables and refcount blocks.
            cmds = ['write -P %d %dk 1M' % (0x10 + i, i * 1024)
                    for i in reversed(range(0, total, 2))]
            cmds += ['write -P %d %dk 1M' % (0x10 + i, i * 1024) for i in range(1, total, 2)]
            cmds += ['write -P 0x99 %d 3333' % (total * MiB + 700)]
            qemu_io(d.uri(), *cmds)
            assert_eq(d.stop(), 0, 'exit status')
            after = _reftable_clusters(img)
            assert_eq(after > before, True, 'refcount table clusters %d -> %d (%d bits)'
                      % (before, after, bits))
            check_clean(img)
            reads = ['read -P %d %dk 1M' % (0x10 + i, i * 1024) for i in range(total)]
            reads += ['read -P 0 %d 700' % (total * MiB),
                      'read -P 0x99 %d 3333' % (total * MiB + 700),
                      'read -P 0 %d 100000' % (total * MiB + 4033)]
            qemu_io(img, *reads, fmt='qcow2')


def test_small_l2_cache_concurrent_reads_writes():
    """A 2-slice L2 cache (every lookup misses: readers load L2 slices
    without the lock, writers evict dirty ones): batches of concurrent
    reads and allocating writes to disjoint ranges; every read returns
    what the model holds; qemu-img check clean; the image equals the
    model."""
    require_nbd()
    require_tool('qemu-img', 'qemu-io')
    import nbd
    size = 16 * MiB
    with Daemon(qmp=False) as d:
        img = d.path('s.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'cluster_size=4096', img, str(size)])
        qemu_io(img, 'write -P 0x5a 0 4M', 'write -P 0xa5 8M 4M', fmt='qcow2')
        model = bytearray(size)
        model[0:4 * MiB] = b'\x5a' * (4 * MiB)
        model[8 * MiB:12 * MiB] = b'\xa5' * (4 * MiB)
        qcow2_daemon(d, img, ',l2-cache-entry-size=512,l2-cache-size=1024')
        h = nbd.NBD()
        h.connect_uri(d.uri())
        rnd = random.Random(5)
        for _ in range(60):
            batch = []
            for off, n, data in _crash_batch(rnd, size) + _crash_batch(rnd, size):
                if all(off + n <= o or o + m <= off for o, m, _ in batch):
                    batch.append((off, n, data))
            reads = []
            for i, (off, n, data) in enumerate(batch):
                if i % 2:
                    buf = nbd.Buffer(n)
                    h.aio_pread(buf, off)
                    reads.append((off, n, buf))
                else:
                    h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for off, n, buf in reads:
                got = buf.to_bytearray()
                if got != model[off:off + n]:
                    raise AssertionError('read %d+%d differs from the model' % (off, n))
            for i, (off, n, data) in enumerate(batch):
                if not i % 2:
                    model[off:off + n] = data
        h.shutdown()
        assert_eq(d.stop(), 0, 'exit status')
        check_clean(img)
        assert_eq(_read_all(img, size, d) == model, True, 'image equals the model')


def _read_all(img, size, scratch):
    out = scratch.path('out.raw')
    run(['qemu-img', 'convert', '-O', 'raw', img, out])
    with open(out, 'rb') as f:
        return f.read()


def test_names_that_are_not_utf8():
    """A header's backing file name, a snapshot name and a bitmap name
    that are not UTF-8 (a Latin-1 path, say) are shown with U+FFFD where
    the bytes are invalid, as QEMU's JSON writer does, instead of
    failing the query with a GLib assertion (found by tests/fuzz/
    fuzz-qcow2 in CI).  The image is opened without its backing file:
    blockd cannot open a backing path that is not UTF-8 yet (QEMU can)."""
    with Daemon() as d:
        back = os.fsencode(d.path('b')) + b'\xe9.raw'
        with open(back, 'wb') as f:
            f.truncate(MiB)
        top = d.path('top.qcow2')
        run([b'qemu-img', b'create', b'-q', b'-f', b'qcow2', b'-b', back, b'-F', b'raw',
             os.fsencode(top)])
        run([b'qemu-img', b'snapshot', b'-c', b'snap\xff', os.fsencode(top)])
        run([b'qemu-img', b'bitmap', b'--add', os.fsencode(top), b'bm\xfe'])
        d.args += ['--blockdev', json.dumps({'driver': 'qcow2', 'node-name': 'q0', 'backing': None,
                                             'file': {'driver': 'file', 'filename': top}})]
        d.start()
        q = d.qmp()
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        img = nodes['q0']['image']
        if 'backing-filename' in img:
            assert_eq(img['backing-filename'], d.path('b') + '\ufffd.raw', 'backing-filename')
        snaps = img.get('snapshots', [])
        assert_eq([s['name'] for s in snaps], ['snap\ufffd'], 'snapshot names')
        assert_eq([b['name'] for b in nodes['q0'].get('dirty-bitmaps', [])], ['bm\ufffd'],
                  'bitmap names')
        q.execute('query-block')
        d.assert_alive()

if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
