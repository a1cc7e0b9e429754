#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The vdi and vpc (VHD) formats (issue 19).  For each subformat (vdi
dynamic and static, vpc dynamic, fixed and force-size) an image made by
qemu-img with data in it is exported over NBD or FUSE and compared with
its source; 4 KiB random writes (many in flight) and 1 MiB sequential
writes go through the export while a raw reference gets the same; after
the daemon stops, the image passes qemu-img check (vdi has one) and
equals the reference, and qemu-storage-daemon reads it back equal too.
fio with verify runs through NBD where fio has the nbd engine.
blockdev-create makes images that qemu-img checks and reads; probing
picks the format for drive-mirror's existing target (a target probed as
raw refusing to become a VHD is in test_drive_mirror.py); hostile images
(bytes patched here) are refused with a reason and the daemon lives."""

import json
import os
import random
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, tests_of)

KiB = 1024
MiB = 1024 * KiB
SIZE = 48 * MiB

# name: (format, qemu-img create options)
KINDS = {
    'vdi-dynamic': ('vdi', []),
    'vdi-static': ('vdi', ['-o', 'static=on']),
    'vpc-dynamic': ('vpc', ['-o', 'subformat=dynamic']),
    'vpc-fixed': ('vpc', ['-o', 'subformat=fixed']),
    'vpc-force-size': ('vpc', ['-o', 'subformat=dynamic,force_size=on']),
}


def img_info(path, fmt=None):
    cmd = ['qemu-img', 'info', '--output=json', '-U']
    if fmt:
        cmd += ['-f', fmt]
    return json.loads(run(cmd + [path]).stdout)


def check_vdi(img):
    p = run(['qemu-img', 'check', '-f', 'vdi', img], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s'
                             % (img, p.returncode, p.stdout, p.stderr))


def compare(a, fmt_a, b, fmt_b, what):
    p = run(['qemu-img', 'compare', '-U', '-f', fmt_a, '-F', fmt_b, a, b],
            check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def make_image(d, kind):
    """An image of `kind` with data in it and its raw twin (the reference
    that receives the same writes); returns (image, format, reference,
    virtual size)."""
    fmt, opts = KINDS[kind]
    img = d.path('img.' + fmt)
    ref = d.path('ref.raw')
    run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [img, str(SIZE)])
    size = img_info(img, fmt)['virtual-size']
    rng = random.Random(kind)
    with open(ref, 'wb') as f:
        f.truncate(size)
        for off in (0, 3 * MiB + 512, 17 * MiB, size - 64 * KiB):
            f.seek(off)
            f.write(rng.randbytes(64 * KiB))
    # -n: into the image as qemu-img created it (keeps the subformat).
    run(['qemu-img', 'convert', '-n', '-f', 'raw', '-O', fmt, ref, img])
    return img, fmt, ref, size


def node_args(img, fmt, node='disk'):
    return ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=%s,node-name=%s,file=f0' % (fmt, node)]


def write_patterns(size, seed, do_write):
    """200 random 4 KiB writes in the first half and 8 sequential 1 MiB
    writes after it (the last 8 MiB are fio's) through do_write(off,
    data), which may run them concurrently: no two of them overlap."""
    rng = random.Random(seed)
    for blk in rng.sample(range(size // 2 // (4 * KiB)), 200):
        do_write(blk * 4 * KiB, rng.randbytes(4 * KiB))
    start = size // 2 // MiB * MiB + rng.randrange(size // 2 // MiB - 16) * MiB
    for i in range(8):
        do_write(start + i * MiB, rng.randbytes(MiB))


def nbd_writes(uri, size, ref, seed):
    """The patterns through NBD, up to 64 writes in flight, mirrored into
    the reference file."""
    nbd = bt.require_nbd()
    h = nbd.NBD()
    h.connect_uri(uri)
    assert_eq(h.get_size(), size, 'export size')
    with open(ref, 'r+b') as r:
        def do_write(off, data):
            while h.aio_in_flight() >= 64:
                h.poll(-1)
            h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off)
            r.seek(off)
            r.write(data)
        write_patterns(size, seed, do_write)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    h.shutdown()


def fuse_writes(mnt, size, ref, seed):
    """The patterns through the FUSE mount from 8 threads, mirrored into
    the reference."""
    queues = [[] for _ in range(8)]

    def do_write(off, data):
        queues[(off // MiB) % 8].append((off, data))
    write_patterns(size, seed, do_write)
    errors = []

    def worker(q):
        try:
            fd = os.open(mnt, os.O_WRONLY)
            try:
                for off, data in q:
                    assert_eq(os.pwrite(fd, data, off), len(data), 'pwrite')
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    with open(ref, 'r+b') as r:
        for q in queues:
            for off, data in q:
                r.seek(off)
                r.write(data)


def fio_verify(d, uri, ref, size):
    """fio random writes with verify through NBD in the last 8 MiB; the
    reference then takes that region from the export (fio checked it)."""
    if not bt.fio_has_nbd():
        return
    base = size - 8 * MiB
    p = bt.fio(['--name=v', '--ioengine=nbd', '--uri=' + uri, '--rw=randwrite',
                '--bs=4k', '--offset=%d' % base, '--size=%d' % (8 * MiB),
                '--iodepth=16', '--verify=crc32c', '--do_verify=1',
                '--verify_fatal=1', '--randseed=7'], cwd=d.dir)
    if p.returncode != 0:
        raise AssertionError('fio verify failed:\n%s%s' % (p.stdout, p.stderr))
    nbd = bt.require_nbd()
    h = nbd.NBD()
    h.connect_uri(uri)
    data = h.pread(8 * MiB, base)
    h.shutdown()
    with open(ref, 'r+b') as r:
        r.seek(base)
        r.write(data)


def read_back_in_qsd(img, fmt, ref):
    """qemu-storage-daemon opens the image and serves what the reference
    holds."""
    d = Daemon()
    d.exe = bt.QSD
    d.args = node_args(img, fmt) + d.args + [
        '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
        '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
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
        img, fmt, ref, size = make_image(d, kind)
        mnt = d.path('mnt')
        d.args = node_args(img, fmt) + d.args
        if export == 'fuse':
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
            d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                       '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
            d.wait = [d.nbd_sock]
            d.start()
            compare(ref, 'raw', d.uri(), 'raw', 'export of the new image')
            nbd_writes(d.uri(), size, ref, kind)
            fio_verify(d, d.uri(), ref, size)
            compare(ref, 'raw', d.uri(), 'raw', 'export after the writes')
            assert_eq(d.stop(), 0, 'daemon exit status')
        if fmt == 'vdi':
            check_vdi(img)
        assert_eq(img_info(img, fmt)['virtual-size'], size, 'virtual size after')
        compare(img, fmt, ref, 'raw', 'image after the daemon closed it')
        read_back_in_qsd(img, fmt, ref)


def test_vdi_dynamic_nbd():
    roundtrip('vdi-dynamic', 'nbd')


def test_vdi_static_nbd():
    roundtrip('vdi-static', 'nbd')


def test_vpc_dynamic_nbd():
    roundtrip('vpc-dynamic', 'nbd')


def test_vpc_fixed_nbd():
    roundtrip('vpc-fixed', 'nbd')


def test_vpc_force_size_nbd():
    roundtrip('vpc-force-size', 'nbd')


def test_vdi_dynamic_fuse():
    roundtrip('vdi-dynamic', 'fuse')


def test_vdi_static_fuse():
    roundtrip('vdi-static', 'fuse')


def test_vpc_dynamic_fuse():
    roundtrip('vpc-dynamic', 'fuse')


def test_vpc_fixed_fuse():
    roundtrip('vpc-fixed', 'fuse')


def test_vpc_partial_bitmap():
    """A dynamic VHD whose block bitmap marks only some sectors (as
    Hyper-V writes them): unmarked sectors read as zeroes, and a write
    there marks them.  qemu-storage-daemon ignores the bitmap."""
    bt.skip_if_reference('QEMU ignores VHD sector bitmaps (reads what the block holds)')
    require_tool('qemu-img', 'qemu-io')
    nbd = bt.require_nbd()
    with Daemon() as d:
        img = d.path('a.vpc')
        run(['qemu-img', 'create', '-q', '-f', 'vpc', img, str(SIZE)])
        bt.qemu_io(img, 'write -P 0x77 0 2M', fmt='vpc')
        bat = vpc_bat(img)
        boff = bat[0] * 512
        # Sectors 0-7 marked, 8-15 not (their data 0x77 must not show).
        with open(img, 'r+b') as f:
            f.seek(boff)
            f.write(b'\xff' + b'\x00' + b'\xff' * 2 + b'\x00' * 508)
        d.args = node_args(img, 'vpc') + d.args + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        d.wait = [d.nbd_sock]
        d.start()
        h = nbd.NBD()
        h.connect_uri(d.uri())
        got = h.pread(32 * 512, 0)
        assert_eq(got[:4096], b'\x77' * 4096, 'marked sectors')
        assert_eq(got[4096:8192], bytes(4096), 'unmarked sectors')
        assert_eq(got[8192:], b'\x77' * 8192, 'marked sectors after')
        h.pwrite(b'\x11' * 1024, 4096 + 1024)
        got = h.pread(4096, 4096)
        assert_eq(got, bytes(1024) + b'\x11' * 1024 + bytes(2048), 'after a write')
        h.shutdown()
        assert_eq(d.stop(), 0, 'daemon exit status')
        with open(img, 'rb') as f:
            f.seek(boff)
            assert_eq(f.read(2), b'\xff\x30', 'bitmap marks the written sectors')


def test_zero_copy_reads():
    """NBD reads of allocated vdi blocks, of a fixed VHD and of full VHD
    blocks go out by sendfile straight from the image file (the others by
    the buffer path), and every read equals the reference."""
    from test_zero_copy import syscall_counts
    bt.require_nbd()
    for kind in ('vdi-dynamic', 'vpc-fixed', 'vpc-dynamic'):
        with Daemon() as d:
            img, fmt, ref, size = make_image(d, kind)
            d.args = node_args(img, fmt) + d.args + [
                '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
            d.wait = [d.nbd_sock]
            d.start()
            with open(ref, 'rb') as f:
                data = f.read()
            with syscall_counts(d) as counts:
                for structured in (False, True):
                    with bt.nbd_connection(d.uri(), structured=structured) as h:
                        for off, n in ((0, 4096), (0, MiB), (3 * MiB, MiB), (17 * MiB, 65536),
                                       (MiB - 4096, 8192), (8 * MiB, MiB), (0, 4096)):
                            assert_eq(h.pread(n, off), data[off:off + n],
                                      '%s read %d+%d' % (kind, off, n))
            assert counts.get('sendfile', 0) > 0, '%s: sendfile not used: %r' % (kind, counts)


def test_reopen_read_write():
    """blockdev-reopen takes a vdi and a vpc node from read-only to
    read-write (their options are all fixed); writes then land in the
    image."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        for fmt in ('vdi', 'vpc'):
            img = d.path('r.' + fmt)
            run(['qemu-img', 'create', '-q', '-f', fmt, img, str(8 * MiB)])
            opts = {'driver': fmt, 'node-name': 'r' + fmt, 'read-only': True,
                    'file': {'driver': 'file', 'node-name': 'rf' + fmt, 'filename': img}}
            q.execute('blockdev-add', opts)
            opts['read-only'] = False
            q.execute('blockdev-reopen', {'options': [opts]})
            with bt.nbd_export(q, 'r' + fmt, writable=True) as name:
                bt.qemu_io(d.uri(name), 'write -P 0x4d 1M 64k')
            q.execute('blockdev-del', {'node-name': 'r' + fmt})
            bt.qemu_io(img, 'read -P 0x4d 1M 64k', 'read -P 0 0 1M', fmt=fmt)
            if fmt == 'vdi':
                check_vdi(img)


# --- blockdev-create ---

def run_create(q, job, options):
    """blockdev-create to the end; returns the job's error (None: ok)."""
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
    """blockdev-create of every subformat: qemu-img info sees the format,
    size and subformat, qemu-img check (vdi) passes, and the image takes
    data that qemu-io reads back.  Refused options give QEMU's errors."""
    require_tool('qemu-img', 'qemu-io')
    chs_size = 963 * 8 * 17 * 512        # a size CHS represents exactly
    cases = [
        ('dyn.vdi', {'driver': 'vdi', 'size': 40 * MiB}, 'vdi', 40 * MiB),
        ('static.vdi', {'driver': 'vdi', 'size': 40 * MiB, 'preallocation': 'metadata'},
         'vdi', 40 * MiB),
        ('dyn.vhd', {'driver': 'vpc', 'size': chs_size}, 'vpc', chs_size),
        ('fixed.vhd', {'driver': 'vpc', 'size': chs_size, 'subformat': 'fixed'},
         'vpc', chs_size),
        ('force.vhd', {'driver': 'vpc', 'size': 40 * MiB, 'force-size': True},
         'vpc', 40 * MiB),
        ('forcefixed.vhd', {'driver': 'vpc', 'size': 40 * MiB, 'subformat': 'fixed',
                            'force-size': True}, 'vpc', 40 * MiB),
    ]
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, opts, fmt, size in cases:
            path, err = create(q, d, name, opts)
            assert_eq(err, None, 'create %s' % name)
            info = img_info(path, fmt)
            assert_eq((info['format'], info['virtual-size']), (fmt, size), name)
            if fmt == 'vdi':
                check_vdi(path)
            if name.startswith('static'):
                assert_eq(os.path.getsize(path) >= size, True, 'static image is full size')
            if 'fixed' in name:
                assert_eq(os.path.getsize(path), size + 512, 'fixed image size')
            bt.qemu_io(path, 'write -P 0x3c 1M 3M', 'read -P 0x3c 1M 3M',
                       'read -P 0 0 1M', fmt=fmt)
            if fmt == 'vdi':
                check_vdi(path)
        # Refusals (QEMU's texts).
        _, err = create(q, d, 'bad1.vhd', {'driver': 'vpc', 'size': 40 * MiB})
        assert_in('The requested image size cannot be represented in CHS geometry',
                  err or '', 'unrepresentable size')
        _, err = create(q, d, 'bad2.vdi', {'driver': 'vdi', 'size': 40 * MiB,
                                            'preallocation': 'full'})
        assert_eq(err, 'Preallocation mode not supported for vdi', 'vdi preallocation')
        _, err = create(q, d, 'bad3.vhd', {'driver': 'vpc', 'size': 3 << 40,
                                            'force-size': True})
        assert_eq(err, 'Disk size is too large, max size is 2040 GiB', 'huge vhd')
        d.assert_alive()


# --- probing ---

def test_probe_mirror_target():
    """drive-mirror mode=existing without a format probes the target as
    QEMU does: a vdi and a dynamic VHD by their headers, so the mirror
    writes through the format (the result reads equal to the source)."""
    require_tool('qemu-img')
    with Daemon() as d:
        src = d.path('src.raw')
        bt.make_image(src, 8 * MiB)
        bt.qemu_io(src, 'write -P 0x42 1M 2M')
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % src,
                  '--blockdev', 'driver=raw,node-name=src,file=f0'] + d.args
        d.start()
        q = d.qmp()
        for fmt, opts in (('vdi', []), ('vpc', ['-o', 'force_size=on'])):
            tgt = d.path('tgt.' + fmt)
            run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [tgt, str(8 * MiB)])
            job = 'm-' + fmt
            q.execute('drive-mirror', {'job-id': job, 'device': 'src', 'target': tgt,
                                       'sync': 'full', 'mode': 'existing'})
            r = bt.run_job(q, job, complete=True, auto_dismiss=True)
            assert_eq(r.error, None, 'mirror to %s' % fmt)
            assert_eq(img_info(tgt)['format'], fmt, 'target still %s' % fmt)
            compare(src, 'raw', tgt, fmt, 'mirror target ' + fmt)


# --- hostile images ---

def vdi_header(img):
    with open(img, 'rb') as f:
        return bytearray(f.read(512))


def vdi_patch(img, off, fmt, *vals):
    with open(img, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, *vals))


def vdi_bmap_offset(img):
    return struct.unpack_from('<I', vdi_header(img), 0x154)[0]


def vpc_bat(img):
    with open(img, 'rb') as f:
        footer = f.read(512)
        hoff = struct.unpack_from('>Q', footer, 16)[0]
        f.seek(hoff)
        h = f.read(1024)
        table, entries = struct.unpack_from('>Q', h, 16)[0], struct.unpack_from('>I', h, 28)[0]
        f.seek(table)
        return list(struct.unpack('>%dI' % entries, f.read(entries * 4)))


def vpc_fix_checksum(buf):
    struct.pack_into('>I', buf, 64, 0)
    struct.pack_into('>I', buf, 64, (~sum(buf)) & 0xffffffff)


def vpc_patch_footer(img, fn, fixed=False):
    """Apply fn(footer bytearray), then fix its checksum."""
    size = os.path.getsize(img)
    off = size - 512 if fixed else 0
    with open(img, 'r+b') as f:
        f.seek(off)
        buf = bytearray(f.read(512))
        fn(buf)
        vpc_fix_checksum(buf)
        f.seek(off)
        f.write(buf)


def vpc_patch_dyn(img, off, fmt, *vals):
    with open(img, 'rb') as f:
        hoff = struct.unpack_from('>Q', f.read(512), 16)[0]
    vdi_patch(img, hoff + off, fmt, *vals)


def vpc_patch_bat(img, index, value):
    with open(img, 'rb') as f:
        hoff = struct.unpack_from('>Q', f.read(512), 16)[0]
        f.seek(hoff + 16)
        table = struct.unpack('>Q', f.read(8))[0]
    vdi_patch(img, table + 4 * index, '>I', value)


def truncate_to(n):
    def fn(img):
        with open(img, 'r+b') as f:
            f.truncate(n)
    return fn


# name: (format, patch(img), blockd's error text, qsd)
#   qsd: True when qemu-storage-daemon 7.2 refuses it too (any text),
#   else why the case is skipped against it.
VDI_CASES = {
    # The file node counts whole 512-byte sectors (as QEMU): the header's
    # missing tail reads as zeroes, and the header check says so.
    'truncated-header': ('vdi', truncate_to(200),
                         'unsupported VDI image (sector size 0 is not 512)', True),
    'bad-signature': ('vdi', lambda i: vdi_patch(i, 0x40, '<I', 0x12345678),
                      'Image not in VDI format (bad signature 12345678)', True),
    'huge-disk-size': ('vdi', lambda i: vdi_patch(i, 0x170, '<Q', 1 << 62),
                       'Unsupported VDI image size', True),
    'block-size': ('vdi', lambda i: vdi_patch(i, 0x178, '<I', 4096),
                   'unsupported VDI image (block size 4096 is not 1048576)', True),
    'map-entry-past-eof': ('vdi', lambda i: vdi_patch(i, vdi_bmap_offset(i) + 4 * 5, '<I', 9),
                           'beyond the end of the file', 'QSD 7.2 opens it and serves wrong data'),
    'map-entry-past-blocks': ('vdi', lambda i: vdi_patch(i, vdi_bmap_offset(i) + 4 * 5, '<I',
                                                         100000),
                              'beyond the 16 blocks of the image', 'QSD 7.2 opens it'),
    'map-entries-shared': ('vdi', lambda i: vdi_patch(i, vdi_bmap_offset(i) + 4 * 5, '<I', 0),
                           'which an earlier entry uses too', 'QSD 7.2 opens it'),
    'map-over-header': ('vdi', lambda i: vdi_patch(i, 0x154, '<I', 0),
                        'overlaps the header', 'QSD 7.2 opens it'),
    'map-past-eof': ('vdi', lambda i: vdi_patch(i, 0x180, '<I', 0x1fffff00),
                     'extends beyond the end of the file',
                     'QSD 7.2 opens it, the map read past the end of the file'),
}
VPC_CASES = {
    # 100 bytes count as one sector (see truncated-header): the footer
    # copy at the start still parses, and what it points to is missing.
    'truncated-file': ('vpc', truncate_to(100),
                       'dynamic disk header offset 0x200 is outside the file', True),
    'bad-checksum': ('vpc', lambda i: vdi_patch(i, 64, '>I', 1), 'Incorrect header checksum', True),
    'bad-cookie': ('vpc', lambda i: vdi_patch(i, 0, '8s', b'notavhd!'),
                   'the copy at the start of the file is missing', True),
    'no-footer': ('vpc', lambda i: (vdi_patch(i, 0, '8s', b'notavhd!'),
                                    vdi_patch(i, os.path.getsize(i) - 512, '8s', b'notavhd!')),
                  'invalid VPC image', True),
    'dyn-header-past-eof': ('vpc', lambda i: vpc_patch_footer(
        i, lambda b: struct.pack_into('>Q', b, 16, 1 << 40)), 'outside the file', True),
    'dyn-header-magic': ('vpc', lambda i: vpc_patch_dyn(i, 0, '8s', b'xxxxxxxx'),
                         'Invalid header magic', True),
    'block-size': ('vpc', lambda i: vpc_patch_dyn(i, 32, '>I', 3000), 'Invalid block size 3000',
                   True),
    'bat-entry-past-eof': ('vpc', lambda i: vpc_patch_bat(i, 3, 0x100000),
                           'ends beyond the end of the file', True),
    'bat-entry-into-headers': ('vpc', lambda i: vpc_patch_bat(i, 3, 1),
                               'points into the image headers', 'QSD 7.2 opens it'),
    'bat-entries-overlap': ('vpc', lambda i: vpc_patch_bat(i, 3, vpc_bat(i)[0] + 8),
                            'share or overlap', 'QSD 7.2 opens it'),
    'bat-past-eof': ('vpc', lambda i: vpc_patch_dyn(i, 28, '>I', 0x1fffff00),
                     'extends beyond the end of the file', True),
    'differencing': ('vpc', lambda i: vpc_patch_footer(
        i, lambda b: struct.pack_into('>I', b, 60, 4)), 'differencing VHD images',
        'QSD 7.2 opens it without its parent'),
    'huge-size': ('vpc', lambda i: vpc_patch_footer(i, lambda b: (
        b.__setitem__(slice(28, 32), b'win '), struct.pack_into('>Q', b, 48, 1 << 50))),
        'larger than the VHD maximum', True),
    'fixed-truncated': ('vpc-fixed', lambda i: cut_fixed(i, 4096), 'does not fit in the file',
                        'QSD 7.2 opens it'),
}


def cut_fixed(img, n):
    """A fixed VHD missing n bytes of data, its footer still at the end."""
    with open(img, 'r+b') as f:
        f.seek(-512, 2)
        footer = f.read()
        size = f.tell()
        f.truncate(size - n)
        f.seek(size - n - 512)
        f.write(footer)


def hostile(cases):
    require_tool('qemu-img', 'qemu-io')
    skipped = []
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, (kind, patch, text, qsd) in cases.items():
            fmt = 'vpc' if kind.startswith('vpc') else 'vdi'
            img = d.path('%s-%s.%s' % (fmt, name, fmt))
            opts = ['-o', 'subformat=fixed'] if kind == 'vpc-fixed' else []
            run(['qemu-img', 'create', '-q', '-f', fmt] + opts + [img, str(16 * MiB)])
            bt.qemu_io(img, 'write -P 0x61 0 1M', 'write -P 0x62 4M 1M',
                       'write -P 0x63 9M 1M', fmt=fmt)
            patch(img)
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            node = 'h-' + name
            r = q.cmd('blockdev-add', {'driver': fmt, 'node-name': node,
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


def test_hostile_vdi():
    hostile(VDI_CASES)


def test_hostile_vpc():
    hostile(VPC_CASES)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
