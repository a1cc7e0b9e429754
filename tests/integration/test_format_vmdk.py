#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The vmdk format (issue 19).  For each subformat qemu-img makes
(monolithicSparse, monolithicFlat, twoGbMaxExtentSparse/Flat through a
descriptor file with several extents) an image with data in it is
exported over NBD or FUSE and compared with its source; 4 KiB random
writes (many in flight) and 1 MiB sequential writes go through the
export while a raw reference gets the same; after the daemon stops, the
image passes qemu-img check (for sparse extents) and equals the
reference, and qemu-storage-daemon reads it back equal too.
streamOptimized images (compressed grains) are read, and take new grains
as QEMU allows; a delta disk reads through to its parent
(parentFileNameHint); hostile images (bytes patched here) are refused
with a reason naming the node, and the daemon lives."""

import json
import os
import string
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, tests_of)
from test_formats_vdi_vpc import (compare, fio_verify, fuse_writes,  # noqa: E402
                                  nbd_writes)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SIZE = 48 * MiB
TWO_GB_SIZE = 2 * GiB + 48 * MiB     # two extents

# name: (qemu-img create options, size, sparse extents (qemu-img check))
KINDS = {
    'monolithicSparse': ([], SIZE, True),
    'monolithicFlat': (['-o', 'subformat=monolithicFlat'], SIZE, False),
    'twoGbMaxExtentSparse': (['-o', 'subformat=twoGbMaxExtentSparse'], TWO_GB_SIZE, True),
    'twoGbMaxExtentFlat': (['-o', 'subformat=twoGbMaxExtentFlat'], TWO_GB_SIZE, False),
}


def img_info(path, fmt='vmdk'):
    return json.loads(run(['qemu-img', 'info', '--output=json', '-U', '-f', fmt,
                           path]).stdout)


def check_vmdk(img):
    p = run(['qemu-img', 'check', '-f', 'vmdk', img], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s'
                             % (img, p.returncode, p.stdout, p.stderr))


def data_offsets(size):
    """Where make_image puts data: start, odd places, across the 2 GiB
    extent boundary when there is one, the end."""
    offs = [0, 3 * MiB + 512, 17 * MiB, size - 64 * KiB]
    if size > 2 * GiB:
        offs.append(2 * GiB - 32 * KiB)
    return offs


def make_image(d, kind):
    """An image of `kind` with data in it and its raw twin; returns
    (image, reference, size)."""
    opts, size, _ = KINDS[kind]
    img = d.path('img.vmdk')
    ref = d.path('ref.raw')
    run(['qemu-img', 'create', '-q', '-f', 'vmdk'] + opts + [img, str(size)])
    rng = random.Random(kind)
    with open(ref, 'wb') as f:
        f.truncate(size)
        for off in data_offsets(size):
            f.seek(off)
            f.write(rng.randbytes(64 * KiB))
    # --target-is-zero: the new image reads as zeroes; without it qemu-img
    # writes zeroes through the holes and allocates the flat extents whole.
    run(['qemu-img', 'convert', '-n', '--target-is-zero', '-f', 'raw', '-O', 'vmdk', ref, img],
        timeout=300)
    assert_eq(img_info(img)['virtual-size'], size, 'qemu-img made the size')
    return img, ref, size


def node_args(img, node='disk'):
    return ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=vmdk,node-name=%s,file=f0' % node]


def nbd_args(d, writable):
    return ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=%s'
            % ('on' if writable else 'off')]


def read_back_in_qsd(img, ref):
    d = Daemon()
    d.exe = bt.QSD
    d.args = node_args(img) + d.args + nbd_args(d, False)
    d.wait = [d.nbd_sock]
    with d:
        d.start()
        compare(ref, 'raw', d.uri(), 'raw', 'qemu-storage-daemon reading %s' % img)


def roundtrip(kind, export):
    require_tool('qemu-img', 'qemu-io')
    if export == 'fuse':
        bt.require_fuse()
    else:
        bt.require_nbd()
    with Daemon() as d:
        img, ref, size = make_image(d, kind)
        d.args = node_args(img) + d.args
        if export == 'fuse':
            mnt = d.path('mnt')
            open(mnt, 'w').close()
            d.args += ['--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,'
                       'writable=on' % mnt]
            with bt.fuse_mounted(mnt, wait=False):
                d.start()
                bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
                compare(ref, 'raw', mnt, 'raw', 'export of the new image')
                fuse_writes(mnt, size, ref, kind)
                compare(ref, 'raw', mnt, 'raw', 'export after the writes')
                assert_eq(d.stop(), 0, 'daemon exit status')
        else:
            d.args += nbd_args(d, True)
            d.wait = [d.nbd_sock]
            d.start()
            compare(ref, 'raw', d.uri(), 'raw', 'export of the new image')
            nbd_writes(d.uri(), size, ref, kind)
            if size > 2 * GiB:
                # A write across the extent boundary.
                data = random.Random(1).randbytes(MiB)
                bt.require_nbd()
                with bt.nbd_connection(d.uri()) as h:
                    h.pwrite(data, 2 * GiB - MiB // 2)
                with open(ref, 'r+b') as r:
                    r.seek(2 * GiB - MiB // 2)
                    r.write(data)
            fio_verify(d, d.uri(), ref, size)
            compare(ref, 'raw', d.uri(), 'raw', 'export after the writes')
            assert_eq(d.stop(), 0, 'daemon exit status')
        if KINDS[kind][2]:
            check_vmdk(img)
        assert_eq(img_info(img)['virtual-size'], size, 'virtual size after')
        compare(img, 'vmdk', ref, 'raw', 'image after the daemon closed it')
        read_back_in_qsd(img, ref)


def test_monolithic_sparse_nbd():
    roundtrip('monolithicSparse', 'nbd')


def test_monolithic_flat_nbd():
    roundtrip('monolithicFlat', 'nbd')


def test_two_gb_sparse_nbd():
    roundtrip('twoGbMaxExtentSparse', 'nbd')


def test_two_gb_flat_nbd():
    roundtrip('twoGbMaxExtentFlat', 'nbd')


def test_monolithic_sparse_fuse():
    roundtrip('monolithicSparse', 'fuse')


def test_monolithic_flat_fuse():
    roundtrip('monolithicFlat', 'fuse')


# --- streamOptimized ---

def stream_image(d):
    """A streamOptimized image converted by qemu-img from a raw file with
    data (every grain of it compressed); returns (image, reference)."""
    ref = d.path('ref.raw')
    img = d.path('s.vmdk')
    bt.make_image(ref, SIZE)
    rng = random.Random('stream')
    with open(ref, 'r+b') as f:
        for off in (0, 5 * MiB + 4096, 20 * MiB):
            f.seek(off)
            f.write(rng.randbytes(200 * KiB))
        f.seek(30 * MiB)
        f.write(b'\x5a' * MiB)         # compresses well
    run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized',
         ref, img])
    return img, ref


def test_stream_optimized():
    """A streamOptimized image reads equal to its source over NBD and
    FUSE; whole new grains written through NBD are appended compressed
    (qemu-img check clean, qemu-img and qemu-storage-daemon read them
    back); rewriting a grain fails with EIO, as in QEMU, and the daemon
    lives."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        img, ref = stream_image(d)
        d.args = node_args(img) + d.args + nbd_args(d, True)
        d.wait = [d.nbd_sock]
        d.start()
        compare(ref, 'raw', d.uri(), 'raw', 'streamOptimized export')
        rng = random.Random(3)
        with bt.nbd_connection(d.uri()) as h, open(ref, 'r+b') as r:
            for off in (10 * MiB, 12 * MiB + 64 * KiB, 40 * MiB):
                data = rng.randbytes(128 * KiB)
                h.pwrite(data, off)
                r.seek(off)
                r.write(data)
            h.flush()
            err = bt.nbd_errno(h.pwrite, b'\x01' * 4096, 10 * MiB)
            assert_eq(err != 0, True, 'rewriting a compressed grain fails')
        compare(ref, 'raw', d.uri(), 'raw', 'streamOptimized export after writes')
        assert_eq(d.stop(), 0, 'daemon exit status')
        check_vmdk(img)
        compare(img, 'vmdk', ref, 'raw', 'streamOptimized image after the writes')
        read_back_in_qsd(img, ref)


def test_stream_optimized_fuse():
    """The same image read through a FUSE mount."""
    require_tool('qemu-img')
    bt.require_fuse()
    with Daemon() as d:
        img, ref = stream_image(d)
        mnt = d.path('mnt')
        open(mnt, 'w').close()
        d.args = node_args(img) + d.args + [
            '--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,writable=off' % mnt]
        with bt.fuse_mounted(mnt, wait=False):
            d.start()
            bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
            compare(ref, 'raw', mnt, 'raw', 'streamOptimized over FUSE')
            assert_eq(d.stop(), 0, 'daemon exit status')


# --- delta disks ---

def test_delta_disk():
    """A vmdk made with a vmdk parent (parentFileNameHint, relative):
    reads show the parent where the delta has no grain, writes of parts
    of a grain copy the rest from the parent, and the parent is not
    written.  qemu-img and qemu-storage-daemon read the result equal."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        base = d.path('base.vmdk')
        top = d.path('top.vmdk')
        ref = d.path('ref.raw')
        run(['qemu-img', 'create', '-q', '-f', 'vmdk', base, str(SIZE)])
        bt.qemu_io(base, 'write -P 0x61 0 4M', 'write -P 0x62 20M 1M', fmt='vmdk')
        run(['qemu-img', 'create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', top],
            cwd=d.dir)
        bt.qemu_io(top, 'write -P 0x71 1M 64k', fmt='vmdk')
        run(['qemu-img', 'convert', '-f', 'vmdk', '-O', 'raw', top, ref])
        run(['qemu-img', 'convert', '-f', 'vmdk', '-O', 'raw', base, d.path('base.raw')])
        d.args = node_args(top) + d.args + nbd_args(d, True)
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        compare(ref, 'raw', d.uri(), 'raw', 'delta disk export')
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(nodes['disk']['image'].get('backing-filename'), 'base.vmdk',
                  'backing-filename from parentFileNameHint')
        with bt.nbd_connection(d.uri()) as h, open(ref, 'r+b') as r:
            for off, n in ((2 * MiB + 512, 1024), (20 * MiB + 4096, 8192), (30 * MiB, 4096)):
                data = bytes([0x80 + (off >> 20) % 64]) * n
                h.pwrite(data, off)
                r.seek(off)
                r.write(data)
            h.flush()
        compare(ref, 'raw', d.uri(), 'raw', 'delta disk after writes')
        assert_eq(d.stop(), 0, 'daemon exit status')
        check_vmdk(top)
        check_vmdk(base)
        compare(top, 'vmdk', ref, 'raw', 'delta disk image')
        compare(base, 'vmdk', d.path('base.raw'), 'raw', 'parent unchanged')
        read_back_in_qsd(top, ref)


def open_error(d, img):
    """blockdev-add of img in a fresh blockd: the error text, or None."""
    with Daemon() as d2:
        d2.start()
        r = d2.qmp().cmd('blockdev-add', {'driver': 'vmdk', 'node-name': 'top',
                                          'file': {'driver': 'file', 'filename': img}})
        d2.assert_alive()
        return r['error']['desc'] if 'error' in r else None


def short_cid(img, cid):
    """Rewrite the embedded descriptor's CID line as '%x' % cid (fewer than
    8 digits), moving the rest of the text back; the area keeps its size."""
    with open(img, 'r+b') as f:
        data = bytearray(f.read(1 << 20))
        at = data.index(b'\nCID=') + 5
        end = at
        while chr(data[end]) in string.hexdigits:
            end += 1
        text_end = data.index(b'\0', end)
        new = (b'%x' % cid) + data[end:text_end]
        data[at:text_end] = new + b'\0' * (text_end - at - len(new))
        f.seek(0)
        f.write(data)


def test_delta_parent_changed():
    """A delta disk whose parent was written after it was made (the
    parent's CID is no longer the delta's parentCID) is refused at open
    with the reason (QEMU fails its reads of the parent with EINVAL).
    blockd's first write to an image renews its CID as QEMU does, so
    that QEMU then refuses the delta disk's reads too."""
    require_tool('qemu-img', 'qemu-io')
    bt.skip_if_reference('QSD 7.2 opens the delta disk and fails reads of its parent')
    bt.require_nbd()
    with Daemon() as d:
        base = d.path('base.vmdk')
        top = d.path('top.vmdk')
        run(['qemu-img', 'create', '-q', '-f', 'vmdk', base, str(SIZE)])
        bt.qemu_io(base, 'write -P 0x61 0 1M', fmt='vmdk')
        # QEMU prints the CID without leading zeroes: one in 16 images has
        # fewer than 8 digits.  Make this one so, to cover that case.
        short_cid(base, 0x0123abcd)
        run(['qemu-img', 'create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', top],
            cwd=d.dir)
        assert_in('parentCID=123abcd\n', open(top, 'rb').read().decode('latin-1'),
                  'delta disk made from the short CID')
        assert_eq(open_error(d, top), None, 'delta disk of an unchanged parent')
        # blockd writes the parent: its CID changes.
        d.args = node_args(base) + d.args + nbd_args(d, True)
        d.wait = [d.nbd_sock]
        d.start()
        with bt.nbd_connection(d.uri()) as h:
            h.pwrite(b'\x62' * 4096, 8 * MiB)
            h.flush()
        assert_eq(d.stop(), 0, 'daemon exit status')
        check_vmdk(base)
        err = open_error(d, top)
        assert_in('the parent changed since', err or '', 'parent written by blockd')
        assert_in("Node 'top'", err or '', 'names the node')
        p = run(['qemu-io', '-r', '-f', 'vmdk', '-c', 'read 4M 4k', top], check=False)
        assert_eq(p.returncode != 0 or 'failed' in p.stdout + p.stderr, True,
                  'QEMU refuses the delta disk too: %s%s' % (p.stdout, p.stderr))


# --- blockdev-create ---

def run_create(q, job, options):
    q.execute('blockdev-create', {'job-id': job, 'options': options})
    return bt.run_job(q, job).error


def create(q, d, name, fmt_opts):
    path = d.path(name)
    assert_eq(run_create(q, 'f-' + name, {'driver': 'file', 'filename': path,
                                           'size': 0}), None, 'file create')
    q.execute('blockdev-add', {'driver': 'file', 'node-name': 'n-' + name,
                               'filename': path})
    try:
        err = run_create(q, 'c-' + name, dict({'file': 'n-' + name}, **fmt_opts))
    finally:
        q.execute('blockdev-del', {'node-name': 'n-' + name})
    return path, err


def test_create():
    """blockdev-create of monolithicSparse (plain, zeroed-grain, SCSI
    adapter) and streamOptimized: qemu-img info sees the format, size
    and subformat, qemu-img check passes, qemu-io writes and reads data
    in it, and blockd reads what qemu-io wrote.  The layout equals
    qemu-img create's (same header and file size)."""
    require_tool('qemu-img', 'qemu-io')
    cases = [
        ('sparse.vmdk', {'size': 40 * MiB}, 'monolithicSparse', []),
        ('odd.vmdk', {'size': 40 * MiB + 512}, 'monolithicSparse', []),
        ('zg.vmdk', {'size': 40 * MiB, 'zeroed-grain': True}, 'monolithicSparse',
         ['-o', 'zeroed_grain=on']),
        ('scsi.vmdk', {'size': 40 * MiB, 'adapter-type': 'lsilogic', 'hwversion': '6'},
         'monolithicSparse', ['-o', 'adapter_type=lsilogic,hwversion=6']),
        ('stream.vmdk', {'size': 40 * MiB, 'subformat': 'streamOptimized'},
         'streamOptimized', ['-o', 'subformat=streamOptimized']),
        ('big.vmdk', {'size': 300 * GiB}, 'monolithicSparse', []),
    ]
    with Daemon() as d:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        for name, opts, sub, qopts in cases:
            path, err = create(q, d, name, dict({'driver': 'vmdk'}, **opts))
            assert_eq(err, None, 'create %s' % name)
            info = img_info(path)
            assert_eq((info['format'], info['virtual-size']), ('vmdk', opts['size']), name)
            assert_eq(info['format-specific']['data']['create-type'], sub, name + ' subformat')
            check_vmdk(path)
            twin = d.path('qemu-img-' + name)
            run(['qemu-img', 'create', '-q', '-f', 'vmdk'] + qopts + [twin, str(opts['size'])])
            assert_eq(os.path.getsize(path), os.path.getsize(twin), name + ' file size')
            with open(path, 'rb') as a, open(twin, 'rb') as b:
                assert_eq(a.read(79), b.read(79), name + ' header as qemu-img makes it')
            if opts['size'] < GiB:
                bt.qemu_io(path, 'write -P 0x3c 1M 3M', 'read -P 0x3c 1M 3M',
                           'read -P 0 0 1M', fmt='vmdk')
                check_vmdk(path)
                q.execute('blockdev-add', {'driver': 'vmdk', 'node-name': 'r-' + name,
                                           'read-only': True,
                                           'file': {'driver': 'file', 'filename': path}})
                with bt.nbd_export(q, 'r-' + name) as exp:
                    bt.qemu_io(d.uri(exp), 'read -P 0x3c 1M 3M', 'read -P 0 4M 1M',
                               extra=('-r',))
                q.execute('blockdev-del', {'node-name': 'r-' + name})
        # Refusals (blockd's texts; QSD refuses flat without extents too,
        # with "Extent [0] not specified").
        _, err = create(q, d, 'flat.vmdk', {'driver': 'vmdk', 'size': MiB,
                                             'subformat': 'monolithicFlat'})
        assert_eq(err is not None, True, 'flat without extents refused')
        if not is_reference():
            assert_in('monolithicSparse and streamOptimized only', err, 'flat refused')
            _, err = create(q, d, 'huge.vmdk', {'driver': 'vmdk', 'size': 3 << 40})
            assert_in("larger than a sparse extent's 2 TiB", err or '', 'huge refused')
        d.assert_alive()


def test_create_write_export():
    """An image blockdev-create made takes writes through an NBD export
    of the same daemon; qemu-img check and compare agree afterwards."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        path, err = create(q, d, 'w.vmdk', {'driver': 'vmdk', 'size': SIZE})
        assert_eq(err, None, 'create')
        ref = d.path('ref.raw')
        bt.make_image(ref, SIZE)
        q.execute('blockdev-add', {'driver': 'vmdk', 'node-name': 'w',
                                   'file': {'driver': 'file', 'filename': path}})
        with bt.nbd_export(q, 'w', writable=True) as exp:
            nbd_writes(d.uri(exp), SIZE, ref, 'create')
        q.execute('blockdev-del', {'node-name': 'w'})
        check_vmdk(path)
        compare(path, 'vmdk', ref, 'raw', 'created image after writes')


def test_delta_loop():
    """Delta disks whose parentFileNameHint names themselves, or each
    other, are refused with the reason; the daemon neither hangs nor
    grows."""
    require_tool('qemu-img')
    bt.skip_if_reference('not run against QSD 7.2: its open of a loop may not end')
    with Daemon() as d:
        base = d.path('base.vmdk')
        run(['qemu-img', 'create', '-q', '-f', 'vmdk', base, str(SIZE)])
        for name in ('a.vmdk', 'b.vmdk'):
            run(['qemu-img', 'create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk',
                 d.path(name)], cwd=d.dir)

        def point(img, parent):
            with open(img, 'r+b') as f:
                data = f.read(4096)
                f.seek(0)
                f.write(data.replace(b'parentFileNameHint="base.vmdk"',
                                     b'parentFileNameHint="%s"' % parent.encode()))
        point(d.path('a.vmdk'), 'a.vmdk')
        d.start()
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'vmdk', 'node-name': 'self', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': d.path('a.vmdk'),
                                            'read-only': True}})
        assert_in('loops or is too long', r.get('error', {}).get('desc', ''), 'self loop')
        point(d.path('a.vmdk'), 'b.vmdk')
        point(d.path('b.vmdk'), 'a.vmdk')
        r = q.cmd('blockdev-add', {'driver': 'vmdk', 'node-name': 'pair', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': d.path('a.vmdk'),
                                            'read-only': True}})
        assert_in('loops or is too long', r.get('error', {}).get('desc', ''), 'loop of two')
        d.assert_alive()


# --- probing ---

def test_probe_mirror_target():
    """drive-mirror mode=existing without a format probes a vmdk target
    (KDMV header) and a descriptor file, and writes through the format."""
    require_tool('qemu-img')
    bt.skip_if_reference('QSD 7.2 does not offer drive-mirror without a drive')
    with Daemon() as d:
        src = d.path('src.raw')
        bt.make_image(src, 8 * MiB)
        bt.qemu_io(src, 'write -P 0x42 1M 2M')
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % src,
                  '--blockdev', 'driver=raw,node-name=src,file=f0'] + d.args
        d.start()
        q = d.qmp()
        for name, opts in (('sparse', []), ('flat', ['-o', 'subformat=monolithicFlat'])):
            tgt = d.path('tgt-%s.vmdk' % name)
            run(['qemu-img', 'create', '-q', '-f', 'vmdk'] + opts + [tgt, str(8 * MiB)])
            job = 'm-' + name
            q.execute('drive-mirror', {'job-id': job, 'device': 'src', 'target': tgt,
                                       'sync': 'full', 'mode': 'existing'})
            r = bt.run_job(q, job, complete=True, auto_dismiss=True)
            assert_eq(r.error, None, 'mirror to %s' % name)
            assert_eq(img_info(tgt)['format'], 'vmdk', 'target still vmdk')
            compare(src, 'raw', tgt, 'vmdk', 'mirror target ' + name)


# --- hostile images ---

HDR = {'version': (4, '<I'), 'flags': (8, '<I'), 'capacity': (12, '<Q'),
       'granularity': (20, '<Q'), 'num_gtes': (44, '<I'), 'rgd': (48, '<Q'),
       'gd': (56, '<Q'), 'grain_offset': (64, '<Q')}


def hdr_get(img, field):
    off, fmt = HDR[field]
    with open(img, 'rb') as f:
        return struct.unpack_from(fmt, f.read(512), off)[0]


def patch(img, off, fmt, *vals):
    with open(img, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, *vals))


def hdr_set(field, value):
    def fn(img):
        off, fmt = HDR[field]
        patch(img, off, fmt, value)
    return fn


def gd_entry(which, index, value):
    def fn(img):
        patch(img, hdr_get(img, which) * 512 + 4 * index, '<I', value)
    return fn


def truncate_to(n):
    def fn(img):
        with open(img, 'r+b') as f:
            f.truncate(n)
    return fn


def desc_file(text):
    """Replace the image by a descriptor file with this text; a file
    'junk.bin' of 64 KiB of non-vmdk bytes lies next to it."""
    def fn(img):
        with open(os.path.join(os.path.dirname(img), 'junk.bin'), 'wb') as f:
            f.write(b'\xab' * 64 * KiB)
        with open(img, 'w') as f:
            f.write('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                    + text)
    return fn


# name: (patch(img), blockd's error text, qsd)
#   qsd: True when qemu-storage-daemon 7.2 refuses it too (any text),
#   else why the case is skipped against it.
CASES = {
    'truncated-header': (truncate_to(300), 'File truncated, expecting at least', True),
    'version': (hdr_set('version', 4), 'Unsupported VMDK version 4', True),
    'gt-size': (hdr_set('num_gtes', 4096), 'L2 table size too big', True),
    'granularity-zero': (hdr_set('granularity', 0), 'L1 entry size is invalid', True),
    'huge-capacity': (hdr_set('capacity', 1 << 62), 'is too large',
                      'QSD 7.2 opens it'),
    'l1-too-big': (hdr_set('capacity', 1 << 50), 'L1 size too big', 'QSD 7.2 opens it'),
    'gd-past-eof': (hdr_set('gd', 1 << 30), 'grain directory (',
                    'QSD 7.2 opens it as an empty disk'),
    'rgd-past-eof': (hdr_set('rgd', 1 << 30), 'redundant grain directory (',
                     'QSD 7.2 opens it'),
    'gt-past-eof': (gd_entry('gd', 0, 0x7fffffff), 'names a grain table at offset',
                    'QSD 7.2 opens it'),
    'footer-missing': (hdr_set('gd', (1 << 64) - 1), 'invalid footer',
                       'QSD 7.2 reads garbage as the footer'),
    'grain-offset-past-eof': (hdr_set('grain_offset', 1 << 40), 'File truncated', True),
    'desc-no-extents': (desc_file('createType="monolithicFlat"\n'), 'names no extents',
                        'QSD 7.2 opens an empty disk'),
    'desc-bad-extent-line': (desc_file('createType="monolithicFlat"\nRW 100 FLAT\n'),
                             'Invalid extent line', 'QSD 7.2 skips the line'),
    'desc-missing-extent': (desc_file('createType="monolithicFlat"\nRW 100 FLAT "nope.raw" 0\n'),
                            'Could not open extent file', True),
    'desc-huge-extent': (desc_file('createType="monolithicFlat"\n'
                                   'RW 36028797018963967 FLAT "junk.bin" 0\n'
                                   'RW 36028797018963967 FLAT "junk.bin" 0\n'),
                         'add up to more than the largest size', 'QSD 7.2 differs'),
    'desc-empty-extents': (desc_file('createType="monolithicFlat"\nRW 0 FLAT "junk.bin" 0\n'
                                     'RW 0 ZERO\n'),
                           'extents are all empty', 'QSD 7.2 opens an empty disk'),
    'desc-extent-type': (desc_file('createType="monolithicFlat"\nRW 100 FOO "x" 0\n'),
                         "unsupported extent type 'FOO'", True),
    'desc-no-create-type': (desc_file('RW 100 FLAT "junk.bin" 0\n'),
                            'invalid VMDK image descriptor', True),
    'desc-sparse-not-kdmv': (desc_file('createType="twoGbMaxExtentSparse"\n'
                                       'RW 100 SPARSE "junk.bin"\n'),
                             'is not a VMDK sparse extent', True),
}


def test_hostile():
    require_tool('qemu-img', 'qemu-io')
    skipped = []
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, (fn, text, qsd) in CASES.items():
            sub = d.path(name)
            os.mkdir(sub)
            img = os.path.join(sub, 'img.vmdk')
            run(['qemu-img', 'create', '-q', '-f', 'vmdk', img, str(16 * MiB)])
            bt.qemu_io(img, 'write -P 0x61 0 1M', 'write -P 0x62 4M 1M', fmt='vmdk')
            fn(img)
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            node = 'h-' + name
            r = q.cmd('blockdev-add', {'driver': 'vmdk', 'node-name': node,
                                       'file': {'driver': 'file', 'filename': img}})
            if 'error' not in r:
                q.execute('blockdev-del', {'node-name': node})
                raise AssertionError('%s: hostile image opened' % name)
            desc = r['error']['desc']
            if not is_reference():
                assert_in(text, desc, name)
                if 'Node ' in desc:
                    assert_in("'%s'" % node, desc, name + ': names the node')
            d.assert_alive()
        q.execute('query-version')
    if skipped:
        print('reference: skipped hostile cases: ' + ', '.join(skipped))


def test_hostile_grain_entry():
    """A grain table entry past the end of the file, and one into the
    image's descriptor: the image opens (the grain tables are read when
    used), reads of those grains fail with EIO and a warning naming the
    node, the rest reads, the daemon lives."""
    require_tool('qemu-img', 'qemu-io')
    bt.skip_if_reference('QSD 7.2 reads beyond the end of the file as zeroes')
    bt.require_nbd()
    with Daemon() as d:
        img = d.path('g.vmdk')
        run(['qemu-img', 'create', '-q', '-f', 'vmdk', img, str(16 * MiB)])
        bt.qemu_io(img, 'write -P 0x61 0 1M', fmt='vmdk')
        gt = None
        with open(img, 'rb') as f:
            f.seek(hdr_get(img, 'gd') * 512)
            gt = struct.unpack('<I', f.read(4))[0]
        patch(img, gt * 512 + 4 * 3, '<I', 0x7fff0000)      # grain 3: 192k..256k
        patch(img, gt * 512 + 4 * 5, '<I', 2)               # grain 5: the descriptor
        patch(img, hdr_get(img, 'rgd') * 512, '<I', gt)     # both tables the same
        d.args = node_args(img) + d.args + nbd_args(d, False)
        d.wait = [d.nbd_sock]
        d.start()
        with bt.nbd_connection(d.uri()) as h:
            assert_eq(h.pread(64 * KiB, 0), b'\x61' * 64 * KiB, 'a good grain')
            err = bt.nbd_errno(h.pread, 4096, 192 * KiB)
            assert_eq(err != 0, True, 'reading the bad grain fails')
            assert_eq(h.pread(64 * KiB, 256 * KiB), b'\x61' * 64 * KiB, 'the next grain')
            err = bt.nbd_errno(h.pread, 4096, 320 * KiB)
            assert_eq(err != 0, True, 'reading a grain in the metadata fails')
        with bt.nbd_connection(d.uri()) as h:
            assert_eq(h.pread(64 * KiB, 256 * KiB), b'\x61' * 64 * KiB, 'still serving')
        d.assert_alive()
        assert_in("Node 'disk': vmdk: the grain table entry", d.stderr(), 'warning')



# --- VMware 3 sparse extents (COWD, the vmfsSparse subformat) ---
#
# No tool makes these: write_cowd lays one out from a raw byte string
# (header, one grain directory, grain tables of 4096 entries, grains
# for the non-zero ones), and cowd_images checks that QEMU reads it as
# intended before blockd is asked to.

COWD_SIZE = 5 * MiB
COWD_GRAN = 1                        # sectors: 512-byte grains (as ESX's), 2 MiB a table
COWD_GRAIN = COWD_GRAN * 512
# (offset, length, byte): the patterned parts of the disk; grain table 1
# (2..4 MiB) holds nothing and is absent from the directory.
COWD_DATA = [(0, 64 * KiB, 0x11), (MiB + 4096, 8192, 0x12), (4 * MiB + 1000, 2000, 0x22),
             (COWD_SIZE - 4096, 4096, 0x33)]
COWD_NO_TABLE = 2 * MiB + 512 * KiB
COWD_HDR = {'granularity': (16, '<I'), 'l1dir_offset': (20, '<I'),
            'l1dir_size': (24, '<I'), 'disk_sectors': (12, '<I')}


def cowd_raw():
    raw = bytearray(COWD_SIZE)
    for off, n, byte in COWD_DATA:
        raw[off:off + n] = bytes([byte]) * n
    return raw


def write_cowd(path, raw, granularity=COWD_GRAN, cid_text=True):
    """A COWD file holding `raw`; returns the allocated grains' guest
    offsets.  cid_text: QEMU opens a COWD file standing alone only with
    descriptor-like CID text at byte 512 (in the header's unused
    parent-name field): put it there."""
    grain = granularity * 512
    cover = 4096 * grain
    l1 = (len(raw) + cover - 1) // cover
    gd_sector = 4                    # after the 2048-byte header
    nxt = gd_sector + (l1 * 4 + 511) // 512
    gd, gts, grains = [0] * l1, {}, []
    for i in range(l1):
        if any(raw[i * cover:(i + 1) * cover]):
            gd[i] = nxt
            gts[i] = [0] * 4096
            nxt += 32                # 16 KiB a table
    for i in gts:
        for j in range(4096):
            off = i * cover + j * grain
            if any(raw[off:off + grain]):
                gts[i][j] = nxt
                grains.append((nxt, off))
                nxt += granularity
    out = bytearray(nxt * 512)
    struct.pack_into('<4s10I', out, 0, b'COWD', 1, 3, len(raw) // 512, granularity,
                     gd_sector, l1, nxt, 0, 0, 0)
    if cid_text:
        t = b'CID=12345678\nparentCID=ffffffff\n'
        out[512:512 + len(t)] = t
    struct.pack_into('<%dI' % l1, out, gd_sector * 512, *gd)
    for i, t in gts.items():
        struct.pack_into('<4096I', out, gd[i] * 512, *t)
    for sector, off in grains:
        out[sector * 512:sector * 512 + grain] = raw[off:off + grain]
    with open(path, 'wb') as f:
        f.write(out)
    return [off for _, off in grains]


def write_vmfs_sparse(where, raw, name='v.vmdk', extent='v-delta.vmdk'):
    """A vmfsSparse descriptor and its VMFSSPARSE extent in the folder
    `where` (no CID text in the extent: the descriptor has it); returns
    (descriptor, extent)."""
    write_cowd(os.path.join(where, extent), raw, cid_text=False)
    desc = os.path.join(where, name)
    with open(desc, 'w') as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                'createType="vmfsSparse"\n\n# Extent description\n'
                'RW %d VMFSSPARSE "%s"\n\n# The Disk Data Base\n#DDB\n\n'
                'ddb.virtualHWVersion = "4"\n' % (len(raw) // 512, extent))
    return desc, os.path.join(where, extent)


def cowd_images(d):
    """ref.raw, the standalone a.cowd and the vmfsSparse v.vmdk, all of
    the same data, checked against QEMU; returns (ref, images, grains)."""
    raw = cowd_raw()
    ref = d.path('ref.raw')
    with open(ref, 'wb') as f:
        f.write(raw)
    grains = write_cowd(d.path('a.cowd'), raw)
    vmfs, _ = write_vmfs_sparse(d.dir, raw)
    for img in (d.path('a.cowd'), vmfs):
        assert_eq(img_info(img)['virtual-size'], COWD_SIZE, 'QEMU reads the size of ' + img)
        compare(img, 'vmdk', ref, 'raw', 'QEMU reads the fixture ' + img)
    return ref, [d.path('a.cowd'), vmfs], grains


def cowd_node_args(imgs):
    args = []
    for i, img in enumerate(imgs):
        args += ['--blockdev', 'driver=file,node-name=f%d,filename=%s' % (i, img),
                 '--blockdev', 'driver=vmdk,node-name=n%d,file=f%d' % (i, i)]
    return args


def check_holes(uri, grains, what):
    """base:allocation: data where a grain is, a hole elsewhere."""
    require_tool('nbdinfo')
    m = json.loads(run(['nbdinfo', '--json', '--map', uri]).stdout)
    holes = [(e['offset'], e['offset'] + e['length']) for e in m if e['type'] & 1]
    assert_eq(sum(e['length'] for e in m), COWD_SIZE, what + ': the map covers the disk')
    assert_eq(holes != [], True, what + ': holes reported')
    for g in grains:
        for a, b in holes:
            if a < g + COWD_GRAIN and g < b:
                raise AssertionError('%s: grain at 0x%x in hole %r' % (what, g, (a, b)))
    covered = sum(b - a for a, b in holes)
    assert_eq(covered, COWD_SIZE - len(grains) * COWD_GRAIN, what + ': hole bytes')


def pattern_reads(target, fmt, data):
    cmds = ['read -P 0x%x %d %d' % (byte, off, n) for off, n, byte in data]
    cmds.append('read -P 0 %d %d' % (COWD_NO_TABLE, 256 * KiB))
    bt.qemu_io(target, *cmds, fmt=fmt)


def test_cowd_nbd():
    """A standalone COWD file and a vmfsSparse descriptor with a
    VMFSSPARSE extent, exported over NBD: equal to their source
    (qemu-img compare, qemu-io patterns), holes where no grain is;
    writes in place, into new grains (whole and partial) land where QEMU
    reads them after the daemon exits; qemu-img check is clean."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        ref, imgs, grains = cowd_images(d)
        d.args = cowd_node_args(imgs) + d.args + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        for i in range(len(imgs)):
            d.args += ['--export', 'type=nbd,id=e%d,node-name=n%d,name=n%d,writable=on'
                       % (i, i, i)]
        d.wait = [d.nbd_sock]
        d.start()
        new = 4 * MiB + 8192
        writes = [(4096, 4096, 0x41),                   # in place
                  (1536 * KiB, 2 * COWD_GRAIN, 0x42),    # two new grains
                  (new + 100, 300, 0x43)]                # part of a new grain
        for i, img in enumerate(imgs):
            uri = d.uri('n%d' % i)
            compare(ref, 'raw', uri, 'raw', 'export of ' + img)
            pattern_reads(uri, 'raw', COWD_DATA)
            check_holes(uri, grains, img)
            bt.qemu_io(uri, *['write -P 0x%x %d %d' % (b, o, n) for o, n, b in writes])
        assert_eq(d.stop(), 0, 'daemon exit status')
        for img in imgs:
            pattern_reads(img, 'vmdk', [(0, 4096, 0x11), (8192, 56 * KiB, 0x11)] + writes
                          + COWD_DATA[1:])
            bt.qemu_io(img, 'read -P 0 %d %d' % (1536 * KiB + 2 * COWD_GRAIN, COWD_GRAIN),
                       'read -P 0 %d 100' % new, fmt='vmdk')
            check_vmdk(img)


def test_cowd_fuse():
    """The vmfsSparse image read through a FUSE mount, and a vmfsSparse
    delta disk with no grains whose parent (parentFileNameHint) is the
    standalone COWD file, opened with its format probed."""
    require_tool('qemu-img')
    bt.require_fuse()
    with Daemon() as d:
        ref, imgs, _ = cowd_images(d)
        top, _ = write_vmfs_sparse(d.dir, bytes(COWD_SIZE), name='top.vmdk',
                                   extent='top-delta.vmdk')
        with open(top) as f:
            text = f.read().replace('parentCID=ffffffff', 'parentCID=12345678')
        with open(top, 'w') as f:
            f.write(text + 'parentFileNameHint="a.cowd"\n')
        compare(top, 'vmdk', ref, 'raw', 'QEMU reads the delta disk')
        mnt, mnt2 = d.path('mnt'), d.path('mnt2')
        for m in (mnt, mnt2):
            open(m, 'w').close()
        d.args = cowd_node_args([imgs[1], top]) + d.args + [
            '--export', 'type=fuse,id=e0,node-name=n0,mountpoint=%s,writable=off' % mnt,
            '--export', 'type=fuse,id=e1,node-name=n1,mountpoint=%s,writable=off' % mnt2]
        with bt.fuse_mounted(mnt, mnt2, wait=False):
            d.start()
            bt.wait_for(lambda: bt.is_mounted(mnt) and bt.is_mounted(mnt2),
                        what='FUSE mounts')
            compare(ref, 'raw', mnt, 'raw', 'vmfsSparse over FUSE')
            compare(ref, 'raw', mnt2, 'raw', 'delta disk over a COWD parent, over FUSE')
            assert_eq(d.stop(), 0, 'daemon exit status')


def cowd_set(field, value):
    def fn(img):
        off, fmt = COWD_HDR[field]
        patch(img, off, fmt, value)
    return fn


def cowd_gd_entry(index, value):
    def fn(img):
        patch(img, 4 * 512 + 4 * index, '<I', value)
    return fn


# name: (patch(img), blockd's error text, qsd) as in CASES
COWD_CASES = {
    'truncated-header': (truncate_to(1000), 'ends inside its COWD header',
                         'QSD 7.2 opens it as an empty disk'),
    'l1dir-past-eof': (cowd_set('l1dir_offset', 1 << 24), 'grain directory (',
                       'QSD 7.2 opens it as an empty disk'),
    'l1dir-size-huge': (cowd_set('l1dir_size', 0x7fffffff), 'L1 size too big', True),
    'l1dir-size-past-eof': (cowd_set('l1dir_size', 1 << 24), 'grain directory (',
                            'QSD 7.2 opens it'),
    'granularity-zero': (cowd_set('granularity', 0), 'invalid granularity 0',
                         'QSD 7.2 opens it and divides by zero on a read'),
    'granularity-huge': (cowd_set('granularity', 0x200001), 'invalid granularity', True),
    'gt-past-eof': (cowd_gd_entry(0, 0x7fffffff), 'names a grain table at offset',
                    'QSD 7.2 opens it'),
}


def test_cowd_hostile():
    """COWD files with broken headers and directories are refused with
    the reason and the node's name, as extents of a vmfsSparse
    descriptor and standing alone; the daemon lives."""
    require_tool('qemu-img')
    skipped = []
    raw = bytearray(4 * MiB)
    raw[0:MiB] = b'\x61' * MiB
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, (fn, text, qsd) in COWD_CASES.items():
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            for kind in ('alone', 'vmfsSparse'):
                sub = d.path(name + '-' + kind)
                os.mkdir(sub)
                if kind == 'alone':
                    img = ext = os.path.join(sub, 'a.cowd')
                    write_cowd(img, raw)
                else:
                    img, ext = write_vmfs_sparse(sub, raw)
                fn(ext)
                node = 'h-%s-%s' % (name, kind)
                r = q.cmd('blockdev-add', {'driver': 'vmdk', 'node-name': node,
                                           'file': {'driver': 'file', 'filename': img}})
                if 'error' not in r:
                    q.execute('blockdev-del', {'node-name': node})
                    raise AssertionError('%s: hostile image opened' % node)
                desc = r['error']['desc']
                if not is_reference():
                    assert_in(text, desc, node)
                    if 'Node ' in desc:
                        assert_in("'%s'" % node, desc, node + ': names the node')
                d.assert_alive()
        q.execute('query-version')
    if skipped:
        print('reference: skipped hostile cases: ' + ', '.join(skipped))


def test_cowd_bad_entries():
    """A COWD grain table entry past the end of the file, a directory
    that does not cover the whole disk, and a write where the directory
    names no grain table: those requests fail (EIO; QEMU would not make
    a table), with a warning naming the node; the rest reads and the
    daemon lives."""
    require_tool('qemu-img')
    bt.skip_if_reference('QSD 7.2 reads beyond the end of the file as zeroes, and writes '
                         'where no grain table is over the extent header')
    bt.require_nbd()
    with Daemon() as d:
        raw = cowd_raw()
        img = d.path('b.cowd')
        write_cowd(img, raw)
        gt0 = 4 + 1                            # the first table, after the directory
        patch(img, gt0 * 512 + 4 * 3, '<I', 0x7fff0000)     # grain 3
        patch(img, COWD_HDR['l1dir_size'][0], '<I', 2)     # the last table cut off
        d.args = node_args(img) + d.args + nbd_args(d, True)
        d.wait = [d.nbd_sock]
        d.start()
        with bt.nbd_connection(d.uri()) as h:
            assert_eq(h.pread(COWD_GRAIN, 0), b'\x11' * COWD_GRAIN, 'a good grain')
            assert_eq(bt.nbd_errno(h.pread, COWD_GRAIN, 3 * COWD_GRAIN) != 0, True,
                      'reading the grain past the end fails')
            assert_eq(bt.nbd_errno(h.pread, 4096, 4 * MiB) != 0, True,
                      'reading beyond the directory fails')
            assert_eq(bt.nbd_errno(h.pwrite, b'\x01' * 4096, COWD_NO_TABLE) != 0, True,
                      'writing where no grain table is fails')
            assert_eq(h.pread(4096, COWD_NO_TABLE), bytes(4096), 'that part still reads')
            assert_eq(h.pread(4096, 16 * KiB), b'\x11' * 4096, 'still serving')
        d.assert_alive()
        assert_in("Node 'disk': vmdk: the grain table entry", d.stderr(), 'warning')
        assert_in('beyond its grain directory', d.stderr(), 'warning')

if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
