#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The read-only bochs and cloop formats.  qemu-img cannot create either,
so the images are written here from a patterned raw byte string: a
Bochs growing image (v2 and v1 headers, extents missing from the
catalog, sectors missing from the bitmaps, slots in another order than
the extents) and a cloop image (each block zlib-compressed).  QEMU's
qemu-img reads each image equal to what it should be; then the same
image exported by the daemon over NBD and FUSE reads the same: qemu-img
compare and convert, qemu-io pattern reads, concurrent NBD reads and
FUSE reads from threads.  Both open read-only only (QEMU's 'Image is
read-only', auto-read-only, no reopen); probing finds them as a backing
file; hostile images are refused with QEMU's texts or, where QEMU 7.2
opens them anyway, a reason naming the node; a corrupt zlib block fails
its reads with EIO while the rest of the image stays readable."""

import errno
import os
import random
import struct
import sys
import threading
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, tests_of)

KiB = 1024
MiB = 1024 * KiB
SIZE = 2 * MiB
# (offset, length, byte): constant runs in the raw data, for read -P
FILLS = [(0x10000, 0x4000, 0x5a), (0x123000, 0x2000, 0xa5), (0x1f0000, 0x10000, 0x3c)]
CLOOP_MAGIC = (b'#!/bin/sh\n#V2.0 Format\n'
               b'modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')


def pattern(size, seed):
    """Random 4 KiB chunks, constant ones and zero ones, plus FILLS."""
    rng = random.Random(seed)
    out = bytearray(size)
    for off in range(0, size, 4 * KiB):
        k = rng.randrange(4)
        if k == 1:
            out[off:off + 4 * KiB] = bytes([rng.randrange(1, 256)]) * (4 * KiB)
        elif k >= 2:
            out[off:off + 4 * KiB] = rng.randbytes(4 * KiB)
    for off, n, b in FILLS:
        if off + n <= size:
            out[off:off + n] = bytes([b]) * n
    return bytes(out)


def in_fill(off):
    return any(o <= off < o + n for o, n, _ in FILLS)


# --- Bochs growing images ---

def bochs_present(extent):
    """Which sectors a Bochs image stores: whole extents are missing
    (every fourth), and two sectors of every eight of the others; the
    FILLS are always there."""
    def present(sector):
        off = sector * 512
        return in_fill(off) or not ((off // extent) % 4 == 1 or sector % 8 in (3, 4))
    return present


def bochs_image(raw, extent=4 * KiB, v1=False, present=None):
    """A Bochs growing image of `raw` storing the sectors present(sector)
    says (all by default); returns (image bytes, what it reads as).
    Extents get their slots in reverse order, so that slot != extent;
    absent sectors hold 0xee, which a reader must not show."""
    bitmap = max(extent // 512 // 8, 1)          # bytes, as bximage
    bitmap_blocks = (bitmap + 511) // 512
    extent_blocks = (extent + 511) // 512
    n_ext = (len(raw) + extent - 1) // extent
    catalog = [0xffffffff] * n_ext
    slots = []
    expect = bytearray(len(raw))
    for e in reversed(range(n_ext)):
        bm = bytearray(bitmap_blocks * 512)
        data = bytearray(b'\xee' * (extent_blocks * 512))
        stored = False
        for i in range(extent // 512):
            s = e * (extent // 512) + i
            if s * 512 >= len(raw) or (present and not present(s)):
                continue
            bm[i // 8] |= 1 << (i % 8)
            data[i * 512:(i + 1) * 512] = raw[s * 512:(s + 1) * 512]
            expect[s * 512:(s + 1) * 512] = raw[s * 512:(s + 1) * 512]
            stored = True
        if stored:
            catalog[e] = len(slots)
            slots.append(bytes(bm) + bytes(data))
    h = bytearray(512)
    h[0:22] = b'Bochs Virtual HD Image'
    h[32:39] = b'Redolog'
    h[48:55] = b'Growing'
    struct.pack_into('<IIIII', h, 64, 0x00010000 if v1 else 0x00020000, 512,
                     n_ext, bitmap, extent)
    struct.pack_into('<Q', h, 84 if v1 else 88, len(raw))
    img = bytes(h) + struct.pack('<%dI' % n_ext, *catalog) + b''.join(slots)
    return img, bytes(expect)


# --- cloop images ---

def cloop_image(raw, block=64 * KiB):
    """A cloop V2.0 image of `raw` (a whole number of blocks)."""
    n = len(raw) // block
    blocks = [zlib.compress(raw[i * block:(i + 1) * block]) for i in range(n)]
    offs = [128 + 8 + (n + 1) * 8]
    for b in blocks:
        offs.append(offs[-1] + len(b))
    return (CLOOP_MAGIC.ljust(128, b'\0') + struct.pack('>II', block, n)
            + struct.pack('>%dQ' % (n + 1), *offs) + b''.join(blocks))


def cloop_offsets(img_bytes):
    n = struct.unpack_from('>I', img_bytes, 132)[0]
    return list(struct.unpack_from('>%dQ' % (n + 1), img_bytes, 136))


def write(d, name, data):
    path = d.path(name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


# --- helpers ---

def compare(a, fmt_a, b, fmt_b, what):
    p = run(['qemu-img', 'compare', '-U', '-f', fmt_a, '-F', fmt_b, a, b], check=False)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def node_args(img, fmt, extra=''):
    return ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=%s,node-name=disk,file=f0,read-only=on%s' % (fmt, extra)]


def start_nbd(d, img, fmt):
    d.args = node_args(img, fmt) + d.args + [
        '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
        '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
    d.wait = [d.nbd_sock]
    d.start()


def pattern_reads(uri, expect):
    """qemu-io read -P over the export: the FILLS, and a zero run."""
    cmds = ['read -P 0x%02x %d %d' % (b, off, n) for off, n, b in FILLS
            if off + n <= len(expect)]
    zero = next(off for off in range(0, len(expect), 4 * KiB)
                if expect[off:off + 4 * KiB] == bytes(4 * KiB))
    cmds.append('read -P 0 %d 4k' % zero)
    bt.qemu_io(uri, *cmds, extra=('-r',))


def check_nbd_export(d, img, fmt, expect):
    """The daemon's NBD export of `img` reads as `expect`, and as QEMU
    reads the image: compare, convert byte for byte, pattern reads."""
    raw = write(d, 'expect.raw', expect)
    uri = d.uri()
    compare(img, fmt, raw, 'raw', 'qemu-img reading the image')
    by_qemu, by_export = d.path('qemu.raw'), d.path('export.raw')
    run(['qemu-img', 'convert', '-U', '-f', fmt, '-O', 'raw', img, by_qemu])
    run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', uri, by_export])
    with open(by_qemu, 'rb') as a, open(by_export, 'rb') as b:
        assert a.read() == b.read(), 'qemu-img convert: QEMU and the export differ'
    pattern_reads(uri, expect)


def nbd_random_reads(uri, expect, count=200, seed=7):
    """Many reads in flight at random offsets and lengths (512-aligned),
    each checked."""
    nbd = bt.require_nbd()
    h = nbd.NBD()
    h.connect_uri(uri)
    assert_eq(h.get_size(), len(expect), 'export size')
    rng = random.Random(seed)
    pending = []
    for _ in range(count):
        off = rng.randrange(len(expect) // 512) * 512
        n = min(rng.choice((512, 4 * KiB, 60 * KiB, 200 * KiB)), len(expect) - off)
        buf = nbd.Buffer(n)
        h.aio_pread(buf, off)
        pending.append((off, n, buf))
        while h.aio_in_flight() >= 32:
            h.poll(-1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for off, n, buf in pending:
        assert buf.to_bytearray() == expect[off:off + n], 'NBD read at %d+%d' % (off, n)
    h.shutdown()


def fuse_reads(mnt, expect):
    """The mount reads whole as `expect`, and from 4 threads at random."""
    with open(mnt, 'rb') as f:
        assert f.read() == expect, 'FUSE: whole file differs'
    errors = []

    def worker(seed):
        try:
            rng = random.Random(seed)
            fd = os.open(mnt, os.O_RDONLY)
            try:
                for _ in range(100):
                    off = rng.randrange(len(expect))
                    n = rng.randrange(1, 70 * KiB)
                    assert os.pread(fd, n, off) == expect[off:off + n], \
                        'FUSE pread at %d+%d' % (off, n)
            finally:
                os.close(fd)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def roundtrip_nbd(fmt, img_bytes, expect):
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        img = write(d, 'img.' + fmt, img_bytes)
        start_nbd(d, img, fmt)
        check_nbd_export(d, img, fmt, expect)
        nbd_random_reads(d.uri(), expect)
        assert_eq(d.stop(), 0, 'daemon exit status')


def roundtrip_fuse(fmt, img_bytes, expect):
    bt.require_fuse()
    with Daemon() as d:
        img = write(d, 'img.' + fmt, img_bytes)
        mnt = d.path('mnt')
        open(mnt, 'w').close()
        d.args = node_args(img, fmt) + d.args + [
            '--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,writable=off' % mnt]
        with bt.fuse_mounted(mnt, wait=False):
            d.start()
            bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
            assert_eq(os.path.getsize(mnt), len(expect), 'FUSE file size')
            fuse_reads(mnt, expect)
            assert_eq(d.stop(), 0, 'daemon exit status')


# --- reads ---

def test_bochs_nbd():
    raw = pattern(SIZE, 'bochs')
    roundtrip_nbd('bochs', *bochs_image(raw, present=bochs_present(4 * KiB)))


def test_bochs_v1_large_extents_nbd():
    raw = pattern(SIZE + 3 * 512, 'bochs-v1')      # a partial last extent
    roundtrip_nbd('bochs', *bochs_image(raw, extent=64 * KiB, v1=True,
                                        present=bochs_present(64 * KiB)))


def test_bochs_fuse():
    raw = pattern(SIZE, 'bochs-fuse')
    roundtrip_fuse('bochs', *bochs_image(raw, present=bochs_present(4 * KiB)))


def test_cloop_nbd():
    raw = pattern(SIZE, 'cloop')
    roundtrip_nbd('cloop', cloop_image(raw), raw)


def test_cloop_large_blocks_nbd():
    raw = pattern(SIZE, 'cloop-256k')
    roundtrip_nbd('cloop', cloop_image(raw, block=256 * KiB), raw)


def test_cloop_fuse():
    raw = pattern(SIZE, 'cloop-fuse')
    roundtrip_fuse('cloop', cloop_image(raw, block=32 * KiB), raw)


def test_block_status():
    """bochs: missing extents and sectors are holes reading as zeroes,
    the rest data; cloop: all data.  QEMU 7.2 reports all of a bochs
    image as data."""
    bt.skip_if_reference('QEMU 7.2 has no block status for bochs')
    nbd = bt.require_nbd()
    raw = pattern(SIZE, 'status')
    img_bytes, expect = bochs_image(raw, present=bochs_present(4 * KiB))
    present = bochs_present(4 * KiB)
    with Daemon() as d:
        img = write(d, 'img.bochs', img_bytes)
        start_nbd(d, img, 'bochs')
        h = nbd.NBD()
        h.add_meta_context('base:allocation')
        h.connect_uri(d.uri())
        got = []
        h.block_status(SIZE, 0, lambda ctx, off, ents, err: got.extend(
            (ents[i], ents[i + 1]) for i in range(0, len(ents), 2)))
        off = 0
        for length, flags in got:
            for s in range(off // 512, (off + length) // 512):
                want = 0 if present(s) else nbd.STATE_HOLE | nbd.STATE_ZERO
                assert_eq(flags, want, 'status of sector %d' % s)
            off += length
        assert off > 0
        h.shutdown()


# --- read-only, probing ---

def test_read_only():
    """As QEMU: read-only=off fails, auto-read-only makes the node
    read-only, reopening is not supported, a writable export is refused."""
    raw = pattern(256 * KiB, 'ro')
    with Daemon() as d:
        images = {'bochs': write(d, 'img.bochs', bochs_image(raw)[0]),
                  'cloop': write(d, 'img.cloop', cloop_image(raw))}
        d.start()
        q = d.qmp()
        for fmt, img in images.items():
            q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f-' + fmt,
                                       'filename': img})
            r = q.cmd('blockdev-add', {'driver': fmt, 'node-name': 'rw-' + fmt,
                                       'file': 'f-' + fmt})
            assert_eq(r.get('error', {}).get('desc'), 'Image is read-only', fmt + ' read-write')
            q.execute('blockdev-add', {'driver': fmt, 'node-name': fmt,
                                       'file': 'f-' + fmt, 'auto-read-only': True})
            nodes = {n['node-name']: n for n in
                     q.execute('query-named-block-nodes', {'flat': True})}
            assert_eq(nodes[fmt]['ro'], True, fmt + ' read-only')
            assert_eq(nodes[fmt]['drv'], fmt, 'driver')
            assert_eq(nodes[fmt]['image']['virtual-size'], len(raw), fmt + ' size')
            r = q.cmd('blockdev-reopen', {'options': [
                {'driver': fmt, 'node-name': fmt, 'file': 'f-' + fmt, 'read-only': False}]})
            assert_eq(r.get('error', {}).get('desc'),
                      "Block format '%s' used by node '%s' does not support reopening files"
                      % (fmt, fmt), fmt + ' reopen')
            r = q.cmd('block-export-add', {'type': 'nbd', 'id': 'w-' + fmt, 'node-name': fmt,
                                           'writable': True})
            assert 'error' in r, '%s: writable export accepted' % fmt
        d.assert_alive()


def qcow2_over(d, backing, size):
    """A qcow2 overlay of `backing` that names no backing format (the
    format extension's type overwritten), so the backing is probed."""
    top = d.path('top.qcow2')
    run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', os.path.basename(backing),
         '-F', 'raw', top, str(size)], cwd=d.dir)
    with open(top, 'r+b') as f:
        head = bytearray(f.read(64 * KiB))
        i = head.find(struct.pack('>I', 0xe2792aca))
        assert i > 0, 'no backing format extension'
        struct.pack_into('>I', head, i, 0x12345678)
        f.seek(0)
        f.write(head)
    return top


def test_probe_as_backing():
    """A backing file without a format is probed: bochs and cloop by
    their headers."""
    require_tool('qemu-img')
    raw = pattern(256 * KiB, 'probe')
    with Daemon() as d:
        for fmt, (img_bytes, expect) in (('bochs', bochs_image(raw)),
                                         ('cloop', (cloop_image(raw), raw))):
            img = write(d, 'base.' + fmt, img_bytes)
            top = qcow2_over(d, img, len(expect))
            want = write(d, 'want.raw', expect)
            compare(top, 'qcow2', want, 'raw', 'qemu-img probing ' + fmt)
            mnt = d.path('mnt-' + fmt)
            if not d.alive():
                d.start()
                q = d.qmp()
            q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top-' + fmt,
                                       'read-only': True,
                                       'file': {'driver': 'file', 'filename': top}})
            nodes = {n['node-name']: n for n in
                     q.execute('query-named-block-nodes', {'flat': False})}
            chain = nodes['top-' + fmt]['image'].get('backing-image', {})
            assert_eq(chain.get('format'), fmt, 'probed backing format')
            if os.path.exists('/dev/fuse'):
                with bt.fuse_export(q, 'top-' + fmt, mnt, id='fx-' + fmt):
                    with open(mnt, 'rb') as f:
                        assert f.read() == expect, 'reads through the probed ' + fmt
            q.execute('blockdev-del', {'node-name': 'top-' + fmt})
        d.assert_alive()


# --- hostile images ---

def bochs_patch(img_bytes, off, fmt, *vals):
    b = bytearray(img_bytes)
    struct.pack_into(fmt, b, off, *vals)
    return bytes(b)


def open_errors(cases, fmt):
    """blockdev-add each (name, image bytes, expected text, qemu_same)
    case; the error must contain the text (QEMU's where qemu_same, then
    checked against the reference as well).  The daemon lives."""
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, data, text, qemu_same in cases:
            if is_reference() and not qemu_same:
                continue
            img = write(d, name, data)
            r = q.cmd('blockdev-add', {'driver': fmt, 'node-name': 'n', 'read-only': True,
                                       'file': {'driver': 'file', 'filename': img}})
            assert 'error' in r, '%s: hostile image %s opened' % (fmt, name)
            assert_in(text, r['error']['desc'], '%s: %s' % (fmt, name))
            if not qemu_same:
                assert_in("'n'", r['error']['desc'], '%s names the node' % name)
            d.assert_alive()
        assert_eq(d.stop(), 0, 'daemon exit status')


def test_hostile_bochs():
    raw = pattern(64 * KiB, 'hostile')
    good, _ = bochs_image(raw)
    p = bochs_patch
    cases = [
        ('magic', p(good, 0, '5s', b'Botch'), 'Image not in Bochs format', True),
        ('subtype', p(good, 48, '8s', b'Undoable'), 'Image not in Bochs format', True),
        ('version', p(good, 64, '<I', 0x00030000), 'Image not in Bochs format', True),
        ('catalog-huge', p(good, 72, '<I', 0x100001), 'Catalog size is too large', True),
        ('extent-small', p(good, 80, '<I', 256), 'Extent size must be at least 512', True),
        ('extent-odd', p(good, 80, '<I', 3000), 'Extent size 3000 is not a power of two',
         True),
        ('extent-huge', p(good, 80, '<I', 16 * MiB), 'Extent size 16777216 is too large',
         True),
        ('disk-huge', p(good, 88, '<Q', 1 << 62), 'Catalog size is too small for this disk size',
         True),
        # beyond QEMU 7.2, which opens these (reading zeroes)
        # (a file's length shows rounded up to 512 bytes, as in QEMU:
        # a short header reads zero-padded)
        ('header-short', good[:100], 'catalog (16 entries at 0x200) extends beyond the end',
         False),
        ('catalog-eof', p(good, 68, '<I', len(good) + 1024), 'extends beyond the end of the file',
         False),
        ('entry-eof', p(good, 512 + 4 * 3, '<I', 1000), 'catalog entry 3 names extent data',
         False),
        ('bitmap-small', p(p(p(good, 80, '<I', 8 * MiB), 76, '<I', 1), 88, '<Q', 8 * MiB),
         'bitmap (512 bytes) is too small', False),
    ]
    open_errors(cases, 'bochs')


def cloop_patch_offset(img_bytes, i, value):
    b = bytearray(img_bytes)
    struct.pack_into('>Q', b, 136 + 8 * i, value)
    return bytes(b)


def test_hostile_cloop():
    raw = pattern(256 * KiB, 'hostile')
    good = cloop_image(raw)                        # 4 blocks
    offs = cloop_offsets(good)

    def hdr(bs, n):
        return good[:128] + struct.pack('>II', bs, n) + good[136:]
    cases = [
        ('bs-odd', hdr(1000, 4), 'block_size 1000 must be a multiple of 512', True),
        ('bs-zero', hdr(0, 4), 'block_size cannot be zero', True),
        ('bs-huge', hdr(128 * MiB, 4), 'block_size 134217728 must be 64 MB or less', True),
        ('n-huge', hdr(64 * KiB, 0xffffffff), 'n_blocks 4294967295 must be 536870911 or less',
         True),
        ('n-many', hdr(64 * KiB, 0x10000000),
         'image requires too many offsets, try increasing block size', True),
        ('not-monotonic', cloop_patch_offset(good, 2, offs[1] - 1),
         'offsets not monotonically increasing at index 2, image file is corrupt', True),
        ('block-huge', cloop_patch_offset(cloop_patch_offset(good, 1, offs[0] + (1 << 28) + 1),
                                          2, offs[0] + (1 << 28) + 2),
         'invalid compressed block size at index 1, image file is corrupt', True),
        # beyond QEMU 7.2, which opens these and fails reads
        ('header-short', good[:100], 'block_size cannot be zero', True),
        ('table-eof', hdr(64 * KiB, 100000), 'offsets table (100001 entries at 136) extends',
         False),
        ('data-eof', good[:offs[3] + 10], 'block 3 (compressed data at', False),
    ]
    open_errors(cases, 'cloop')


def test_cloop_corrupt_block_eio():
    """A block whose zlib stream is corrupt, and one that inflates short,
    fail their reads with EIO (as QEMU); the others still read, the
    connection and the daemon live (qemu-storage-daemon 7.2 drops the
    NBD connection on a failed read)."""
    nbd = bt.require_nbd()
    block = 64 * KiB
    raw = pattern(8 * block, 'corrupt')
    img = bytearray(cloop_image(raw, block))
    offs = cloop_offsets(bytes(img))
    mid = (offs[3] + offs[4]) // 2
    img[mid:mid + 16] = bytes(b ^ 0xff for b in img[mid:mid + 16])
    # block 5: a valid stream of half a block (same compressed size room)
    short = zlib.compress(raw[5 * block:5 * block + block // 2])
    head, tail = bytes(img[:offs[5]]), bytes(img[offs[6]:])
    delta = len(short) - (offs[6] - offs[5])
    img = bytearray(head + short + tail)
    for i in range(6, len(offs)):
        struct.pack_into('>Q', img, 136 + 8 * i, offs[i] + delta)
    with Daemon() as d:
        path = write(d, 'img.cloop', bytes(img))
        start_nbd(d, path, 'cloop')

        def connect():
            h = nbd.NBD()
            h.connect_uri(d.uri())
            return h

        def read_fails(h, n, off, what):
            code = bt.nbd_errno(h.pread, n, off)
            if is_reference():
                # qemu-storage-daemon 7.2 drops the connection instead
                # ("Failed to send reply: reading from file failed").
                return connect()
            assert_eq(code, errno.EIO, what)
            return h
        h = connect()
        for bad in (3, 5):
            for _ in range(2):
                h = read_fails(h, 4 * KiB, bad * block + 8 * KiB,
                               'read of corrupt block %d' % bad)
        for good in (0, 2, 4, 6, 7):
            assert h.pread(block, good * block) == raw[good * block:(good + 1) * block], \
                'block %d' % good
        # a read across a good and a bad block fails whole
        h = read_fails(h, block, 2 * block + block // 2, 'read spanning the bad block')
        assert h.pread(512, 0) == raw[:512], 'the connection serves on'
        h.shutdown()
        d.assert_alive()
        assert_eq(d.stop(), 0, 'daemon exit status')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
