#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The vhdx format (issue 19).  Images made by qemu-img (dynamic with
its default and with 1 MiB blocks, fixed) with data in them are
exported over NBD or FUSE and compared with their source; 4 KiB random
writes (many in flight) and 1 MiB sequential writes go through the
export while a raw reference gets the same; after the daemon stops,
the image passes qemu-img check, equals the reference, and
qemu-storage-daemon reads it back equal too.  A dirty image (a log
entry made here, by the specification) is replayed when opened
read-write and refused read-only in QEMU's words; a BAT update cut
short after its log entry (blkdebug) is completed by QEMU's replay and
by blockd's; differencing images
(built here: qemu-img cannot make them) read parent, own blocks and
sector bitmaps and take writes, and a self-parented one is refused;
a SIGKILL during
allocating writes leaves an image that opens and checks clean.
blockdev-create makes images qemu-img checks and reads; probing picks
the format; hostile images (bytes patched here) are refused with a
reason naming the node, and the daemon lives."""

import os
import random
import struct
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, tests_of)
from test_formats_vdi_vpc import (compare, fio_verify, fuse_writes,  # noqa: E402
                                  img_info, nbd_writes, run_create)

KiB = 1024
MiB = 1024 * KiB
SIZE = 48 * MiB
BAT_GUID = uuid.UUID('2DC27766-F623-4200-9D64-115E9BFD4A08').bytes_le
META_GUID = uuid.UUID('8B7CA206-4790-4B9A-B8FE-575F050F886E').bytes_le

KINDS = {
    'dynamic': ['-o', 'subformat=dynamic'],
    'dynamic-1m': ['-o', 'subformat=dynamic,block_size=1M,block_state_zero=off'],
    'fixed': ['-o', 'subformat=fixed,block_size=1M,block_state_zero=off'],
}


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_TABLE = _crc_table()


def crc32c(data):
    c = 0xffffffff
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >> 8)
    return c ^ 0xffffffff


def with_checksum(buf, off=4):
    buf = bytearray(buf)
    buf[off:off + 4] = bytes(4)
    buf[off:off + 4] = struct.pack('<I', crc32c(bytes(buf)))
    return bytes(buf)


def read_at(img, off, n):
    with open(img, 'rb') as f:
        f.seek(off)
        return f.read(n)


def patch(img, off, fmt, *vals):
    with open(img, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, *vals))


def write_at(img, off, data):
    with open(img, 'r+b') as f:
        f.seek(off)
        f.write(data)


def current_header(img):
    """(file offset, bytes) of the current header."""
    hs = [(off, read_at(img, off, 4096)) for off in (64 * KiB, 128 * KiB)]
    hs.sort(key=lambda h: struct.unpack_from('<Q', h[1], 8)[0])
    return hs[-1]


def log_guid(img):
    return current_header(img)[1][48:64]


def regions(img):
    """{'bat': (offset, length), 'meta': (offset, length)}."""
    t = read_at(img, 192 * KiB, 64 * KiB)
    out = {}
    for i in range(struct.unpack_from('<I', t, 8)[0]):
        e = t[16 + 32 * i:48 + 32 * i]
        off, ln = struct.unpack_from('<QI', e, 16)
        out['bat' if e[:16] == BAT_GUID else 'meta' if e[:16] == META_GUID else i] = (off, ln)
    return out


def rewrite_region_table(img, fn):
    """fn(bytearray of the table) patches it; both copies rewritten with
    a good checksum."""
    t = bytearray(read_at(img, 192 * KiB, 64 * KiB))
    fn(t)
    t = with_checksum(t)
    write_at(img, 192 * KiB, t)
    write_at(img, 256 * KiB, t)


def set_header(img, fn):
    """fn(bytearray of a header) patches both headers (checksums kept
    good)."""
    for off in (64 * KiB, 128 * KiB):
        h = bytearray(read_at(img, off, 4096))
        fn(h)
        write_at(img, off, with_checksum(h))


def bat_entry_off(img, block):
    """File offset of payload block 'block''s BAT entry (512-byte logical
    sectors, block size from the metadata)."""
    bs = block_size(img)
    chunk = (1 << 23) * 512 // bs
    return regions(img)['bat'][0] + 8 * (block + block // chunk)


def block_size(img):
    m = regions(img)['meta'][0]
    t = read_at(img, m, 64 * KiB)
    for i in range(struct.unpack_from('<H', t, 10)[0]):
        e = t[32 + 32 * i:64 + 32 * i]
        if e[:16] == uuid.UUID('CAA16737-FA36-4D43-B3B6-33F0AA44E76B').bytes_le:
            return struct.unpack('<I', read_at(img, m + struct.unpack_from('<I', e, 16)[0], 4))[0]
    raise AssertionError('no file parameters')


def check_vhdx(img):
    p = run(['qemu-img', 'check', '-f', 'vhdx', img], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s'
                             % (img, p.returncode, p.stdout, p.stderr))
    return p.stdout


def make_image(d, kind):
    img = d.path('img.vhdx')
    ref = d.path('ref.raw')
    run(['qemu-img', 'create', '-q', '-f', 'vhdx'] + KINDS[kind] + [img, str(SIZE)])
    rng = random.Random(kind)
    with open(ref, 'wb') as f:
        f.truncate(SIZE)
        for off in (0, 3 * MiB + 512, 17 * MiB, SIZE - 64 * KiB):
            f.seek(off)
            f.write(rng.randbytes(64 * KiB))
    run(['qemu-img', 'convert', '-n', '-f', 'raw', '-O', 'vhdx', ref, img])
    return img, ref


def node_args(img, node='disk', ro=False):
    return ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=vhdx,node-name=%s,file=f0%s'
            % (node, ',read-only=on' if ro else '')]


def nbd_export_args(d, writable=True):
    return ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=%s'
            % ('on' if writable else 'off')]


def read_back_in_qsd(img, ref):
    d = Daemon()
    d.exe = bt.QSD
    d.args = node_args(img) + d.args + nbd_export_args(d, writable=False)
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
        img, ref = make_image(d, kind)
        compare(img, 'vhdx', ref, 'raw', 'the new image')
        mnt = d.path('mnt')
        d.args = node_args(img) + d.args
        if export == 'fuse':
            open(mnt, 'w').close()
            d.args += ['--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,'
                       'writable=on' % mnt]
            with bt.fuse_mounted(mnt, wait=False):
                d.start()
                bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
                compare(ref, 'raw', mnt, 'raw', 'export of the new image')
                fuse_writes(mnt, SIZE, ref, kind)
                compare(ref, 'raw', mnt, 'raw', 'export after the writes')
                assert_eq(d.stop(), 0, 'daemon exit status')
        else:
            d.args += nbd_export_args(d)
            d.wait = [d.nbd_sock]
            d.start()
            compare(ref, 'raw', d.uri(), 'raw', 'export of the new image')
            nbd_writes(d.uri(), SIZE, ref, kind)
            fio_verify(d, d.uri(), ref, SIZE)
            compare(ref, 'raw', d.uri(), 'raw', 'export after the writes')
            assert_eq(d.stop(), 0, 'daemon exit status')
        assert_in('No errors were found', check_vhdx(img), 'qemu-img check')
        assert_eq(log_guid(img), bytes(16), 'log GUID clear after close')
        assert_eq(img_info(img, 'vhdx')['virtual-size'], SIZE, 'virtual size after')
        compare(img, 'vhdx', ref, 'raw', 'image after the daemon closed it')
        read_back_in_qsd(img, ref)


def test_dynamic_nbd():
    roundtrip('dynamic', 'nbd')


def test_dynamic_1m_nbd():
    roundtrip('dynamic-1m', 'nbd')


def test_fixed_nbd():
    roundtrip('fixed', 'nbd')


def test_dynamic_fuse():
    roundtrip('dynamic-1m', 'fuse')


def test_fixed_fuse():
    roundtrip('fixed', 'fuse')


# --- the log ---

def make_dirty(img, block, data_byte):
    """Appends a block filled with data_byte at the end of the file and
    writes a log entry (by MS-VHDX) that points 'block''s BAT entry at
    it, then sets a log GUID in both headers, as a crash between log
    write and BAT update leaves it.  The BAT itself is not touched."""
    bs = block_size(img)
    flen = os.path.getsize(img)
    new = (flen + MiB - 1) // MiB * MiB
    with open(img, 'r+b') as f:
        f.truncate(new + bs)
        f.seek(new)
        f.write(bytes([data_byte]) * bs)
    eoff = bat_entry_off(img, block)
    soff = eoff // 4096 * 4096
    sector = bytearray(read_at(img, soff, 4096))
    struct.pack_into('<Q', sector, eoff - soff, new | 6)
    guid = uuid.uuid4().bytes
    seq = 0x1234
    _, hdr = current_header(img)
    log_off, = struct.unpack_from('<Q', hdr, 72)
    entry = bytearray(8192)
    struct.pack_into('<4sIIIQII16sQQ', entry, 0, b'loge', 0, 8192, 0, seq, 1, 0, guid,
                     new + bs, new + bs)
    struct.pack_into('<4s4s8sQQ', entry, 64, b'desc', bytes(sector[4092:]), bytes(sector[:8]),
                     soff, seq)
    struct.pack_into('<4sI', entry, 4096, b'data', seq >> 32)
    entry[4096 + 8:4096 + 4092] = sector[8:4092]
    struct.pack_into('<I', entry, 4096 + 4092, seq & 0xffffffff)
    write_at(img, log_off, with_checksum(entry))

    def set_guid(h):
        h[48:64] = guid
    set_header(img, set_guid)
    return soff, bytes(sector)


def test_log_replay():
    """A dirty image is refused read-only (QEMU's text), and opened
    read-write the log is replayed: the BAT sector is the logged one,
    the new block's data reads, the log GUID is cleared, qemu-img check
    passes."""
    require_tool('qemu-img', 'qemu-io')
    nbd = bt.require_nbd()
    with Daemon() as d:
        img, ref = make_image(d, 'dynamic-1m')
        soff, sector = make_dirty(img, 5, 0x7e)
        d.start()
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'vhdx', 'node-name': 'ro', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': img,
                                            'read-only': True}})
        assert 'error' in r, 'dirty image opened read-only'
        assert_in('opened read-only, but contains a log that needs to be replayed',
                  r['error']['desc'], 'read-only refusal')
        assert_eq(log_guid(img) != bytes(16), True, 'still dirty')
        q.execute('blockdev-add', {'driver': 'vhdx', 'node-name': 'disk',
                                   'file': {'driver': 'file', 'filename': img}})
        assert_eq(log_guid(img), bytes(16), 'log GUID cleared by the replay')
        assert_eq(read_at(img, soff, 4096), sector, 'BAT sector replayed')
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'disk',
                                       'name': 'disk'})
        h = nbd.NBD()
        h.connect_uri(d.uri())
        assert_eq(h.pread(MiB, 5 * MiB), b'\x7e' * MiB, 'replayed block reads')
        assert_eq(h.pread(64 * KiB, 0), read_at(ref, 0, 64 * KiB), 'old data reads')
        h.shutdown()
        assert_eq(d.stop(), 0, 'daemon exit status')
        assert_in('No errors were found', check_vhdx(img), 'qemu-img check')


def test_log_entry_hostile_count():
    """A log entry whose descriptor count is huge (checksum made good) is
    not a valid entry: nothing is replayed, the image opens read-write,
    the log GUID is cleared and the block stays unallocated."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img, ref = make_image(d, 'dynamic-1m')
        make_dirty(img, 5, 0x7e)
        log = struct.unpack_from('<Q', current_header(img)[1], 72)[0]
        entry = bytearray(read_at(img, log, 8192))
        struct.pack_into('<I', entry, 24, 0xffffffff)
        write_at(img, log, with_checksum(entry))
        d.start()
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'vhdx', 'node-name': 'disk',
                                   'file': {'driver': 'file', 'filename': img}})
        if is_reference():
            return
        assert 'error' not in r, r
        assert_eq(log_guid(img), bytes(16), 'log GUID cleared')
        q.execute('blockdev-del', {'node-name': 'disk'})
        d.assert_alive()
        bt.qemu_io(img, 'read -P 0 5M 1M', fmt='vhdx')
        compare(img, 'vhdx', ref, 'raw', 'nothing replayed')


def test_interrupted_bat_update():
    """The BAT write after a flushed log entry fails (blkdebug): the
    write errors and the image is left dirty with blockd's log entry.
    qemu-img check -r all (QEMU's replay) and blockd's replay each
    complete the update: the new block's data reads and the image
    checks clean."""
    bt.skip_if_reference('blkdebug over a vhdx write path of our own')
    require_tool('qemu-img', 'qemu-io')
    nbd = bt.require_nbd()
    with Daemon() as d:
        img = d.path('i.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx'] + KINDS['dynamic-1m'] +
            [img, str(SIZE)])
        bat = regions(img)['bat'][0]
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {
            'driver': 'blkdebug', 'node-name': 'dbg',
            'image': {'driver': 'file', 'filename': img},
            'inject-error': [{'event': 'none', 'errno': 5, 'sector': bat // 512,
                              'iotype': 'write', 'once': True}]})
        q.execute('blockdev-add', {'driver': 'vhdx', 'node-name': 'disk', 'file': 'dbg'})
        q.execute('nbd-server-start', {'addr': {'type': 'unix',
                                                'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'disk',
                                       'name': 'disk', 'writable': True})
        h = nbd.NBD()
        h.connect_uri(d.uri())
        try:
            h.pwrite(b'\x5c' * (64 * KiB), 5 * MiB)
            raise AssertionError('the write with a failing BAT update succeeded')
        except nbd.Error:
            pass
        h.shutdown()
        assert_eq(d.stop(), 0, 'daemon exit status')
        assert log_guid(img) != bytes(16), 'the image is left dirty'
        mine = d.path('mine.vhdx')
        run(['cp', '--sparse=always', img, mine])
        p = run(['qemu-img', 'check', '-f', 'vhdx', img], check=False)
        assert p.returncode != 0, 'qemu-img check opened a dirty image read-only'
        assert_in('needs to be replayed', p.stdout + p.stderr, 'QEMU wants a replay')
        run(['qemu-img', 'check', '-q', '-r', 'all', '-f', 'vhdx', img])
        assert_eq(log_guid(img), bytes(16), 'QEMU replayed the log')
        bt.qemu_io(img, 'read -P 0x5c 5M 64k', 'read -P 0 0 5M', fmt='vhdx')
        assert_in('No errors were found', check_vhdx(img), 'after QEMU replay')
        d2 = Daemon()
        d2.args = node_args(mine) + d2.args + nbd_export_args(d2, writable=True)
        d2.wait = [d2.nbd_sock]
        with d2:
            d2.start()
            h = nbd.NBD()
            h.connect_uri(d2.uri())
            assert_eq(h.pread(64 * KiB, 5 * MiB), b'\x5c' * (64 * KiB), 'blockd replay')
            h.shutdown()
            assert_eq(d2.stop(), 0, 'daemon exit status')
            assert_in('No errors were found', check_vhdx(mine), 'after blockd replay')


def test_sigkill_during_writes():
    """SIGKILL with many allocating writes in flight (1 MiB blocks, so
    many BAT updates through the log): the image opens read-write again,
    every write completed before the kill reads back, and after a clean
    close qemu-img check finds no errors."""
    require_tool('qemu-img', 'qemu-io')
    nbd = bt.require_nbd()
    with tempfile.TemporaryDirectory(prefix='blockd-vhdx-') as top:
        for sub in ('a', 'b'):
            os.mkdir(os.path.join(top, sub))
        img = os.path.join(top, 'k.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx'] + KINDS['dynamic-1m'] +
            [img, str(SIZE)])
        done = {}
        with Daemon(tmpdir=os.path.join(top, 'a')) as d:
            d.args = node_args(img) + d.args + nbd_export_args(d)
            d.wait = [d.nbd_sock]
            d.start()
            h = nbd.NBD()
            h.connect_uri(d.uri())
            rng = random.Random(5)
            blocks = rng.sample(range(SIZE // (4 * KiB)), 3000)
            for i, blk in enumerate(blocks):
                data = bytes([i % 251 + 1]) * (4 * KiB)

                def cb(err, blk=blk, data=data):
                    if err.value == 0:
                        done[blk] = data
                    return 1
                while h.aio_in_flight() >= 64:
                    h.poll(-1)
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), blk * 4 * KiB,
                             completion=cb)
                if i == 1500:
                    break
            d.signal(9)
            d.wait_exit()
            assert len(done) > 0, 'no write completed before the kill'
        with Daemon(tmpdir=os.path.join(top, 'b')) as d:
            d.args = node_args(img) + d.args + nbd_export_args(d)
            d.wait = [d.nbd_sock]
            d.start()
            h = nbd.NBD()
            h.connect_uri(d.uri())
            for blk, data in done.items():
                assert_eq(h.pread(4 * KiB, blk * 4 * KiB), data,
                          'block %d after the kill' % blk)
            h.pwrite(b'\x33' * MiB, 2 * MiB)
            h.flush()
            h.shutdown()
            assert_eq(d.stop(), 0, 'daemon exit status')
        assert_in('No errors were found', check_vhdx(img), 'qemu-img check')
        bt.qemu_io(img, 'read -P 0x33 2M 1M', fmt='vhdx')


# --- differencing images (qemu-img cannot make them: built here) ---

LOCATOR_TYPE = uuid.UUID('B04AEFB7-D19E-4A81-B789-25B8E9445913').bytes_le
PARENT_LOCATOR = uuid.UUID('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C').bytes_le


def locator(entries):
    """A VHDX parent locator with the (key, value) entries."""
    head = LOCATOR_TYPE + struct.pack('<HH', 0, len(entries))
    table, blob = b'', b''
    base = len(head) + 12 * len(entries)
    for k, v in entries:
        k, v = k.encode('utf-16-le'), v.encode('utf-16-le')
        table += struct.pack('<IIHH', base + len(blob), base + len(blob) + len(k), len(k), len(v))
        blob += k + v
    return head + table + blob


def make_differencing(img, parent_rel, chunk_blocks=None):
    """Turns the fresh dynamic image 'img' (1 MiB blocks, nothing
    allocated) into a child of 'parent_rel': has-parent set, a parent
    locator; block 0 fully present (0xa0), block 1 partially present
    (0xb0 in its first 64 KiB and sector 1000 by the sector bitmap),
    block 3 zero.  Returns the expected content as {offset: bytes}
    over the parent."""
    m = regions(img)['meta'][0]
    t = bytearray(read_at(img, m, 64 * KiB))
    n = struct.unpack_from('<H', t, 10)[0]
    loc = locator([('parent_linkage', '{%s}' % uuid.uuid4()),
                   ('relative_path', '.\\' + parent_rel)])
    t[32 + 32 * n:64 + 32 * n] = PARENT_LOCATOR + struct.pack('<IIII', 65536 + 4096, len(loc),
                                                              4, 0)
    struct.pack_into('<H', t, 10, n + 1)
    write_at(img, m, bytes(t))
    write_at(img, m + 65536 + 4096, loc)
    for i in range(n):
        e = t[32 + 32 * i:64 + 32 * i]
        if e[:16] == uuid.UUID(FILE_PARAMS).bytes_le:
            off = m + struct.unpack_from('<I', e, 16)[0]
            bs, flags = struct.unpack('<II', read_at(img, off, 8))
            write_at(img, off, struct.pack('<II', bs, flags | 2))
    bat = regions(img)['bat'][0]
    end = (os.path.getsize(img) + MiB - 1) // MiB * MiB
    b0, b1, bm = end, end + MiB, end + 2 * MiB
    with open(img, 'r+b') as f:
        f.truncate(end + 3 * MiB)
        f.seek(b0)
        f.write(b'\xa0' * MiB)
        f.seek(b1)
        f.write(b'\xb0' * MiB)
        bits = bytearray(MiB)
        for sec in list(range(2048, 2048 + 128)) + [2048 + 1000]:
            bits[sec // 8] |= 1 << (sec % 8)
        f.seek(bm)
        f.write(bits)
    patch(img, bat + 0, '<Q', b0 | 6)
    patch(img, bat + 8, '<Q', b1 | 7)
    patch(img, bat + 24, '<Q', 2)
    patch(img, bat + 8 * 4096, '<Q', bm | 6)
    return {0: b'\xa0' * MiB, MiB: b'\xb0' * (64 * KiB),
            MiB + 1000 * 512: b'\xb0' * 512, 3 * MiB: bytes(MiB)}


def test_differencing():
    """A differencing image reads the parent where its blocks are not
    present, its own sectors where the sector bitmap says, zeroes for a
    zero block; writes through NBD (4 KiB random, 1 MiB sequential) land
    in the child only (the parent is unchanged), and survive a reopen."""
    bt.skip_if_reference('QSD 7.2 refuses differencing VHDX images')
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        parent = d.path('parent.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', parent,
             str(SIZE)])
        bt.qemu_io(parent, 'write -P 0x11 0 24M', 'write -P 0x22 24M 24M', fmt='vhdx')
        pref = d.path('parent.raw')
        run(['qemu-img', 'convert', '-f', 'vhdx', '-O', 'raw', parent, pref])
        img = d.path('child.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx', '-o',
             'block_size=1M,block_state_zero=off', img, str(SIZE)])
        ref = d.path('ref.raw')
        run(['cp', pref, ref])
        for off, data in make_differencing(img, 'parent.vhdx').items():
            write_at(ref, off, data)
        d.args = node_args(img) + d.args + nbd_export_args(d)
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(nodes['disk']['image'].get('backing-image', {}).get('format'), 'vhdx',
                  'the parent is the backing node')
        compare(ref, 'raw', d.uri(), 'raw', 'differencing image')
        nbd_writes(d.uri(), SIZE, ref, 'diff')
        compare(ref, 'raw', d.uri(), 'raw', 'differencing image after writes')
        assert_eq(d.stop(), 0, 'daemon exit status')
        compare(pref, 'raw', parent, 'vhdx', 'parent unchanged')
        assert_in('No errors were found', check_vhdx(parent), 'parent checks')
        assert_eq(log_guid(img), bytes(16), 'child clean after close')
        d2 = Daemon()
        d2.args = node_args(img) + d2.args + nbd_export_args(d2, writable=False)
        d2.wait = [d2.nbd_sock]
        with d2:
            d2.start()
            compare(ref, 'raw', d2.uri(), 'raw', 'differencing image reopened')


def test_differencing_loop():
    """A differencing image that names itself as its parent is refused
    with a reason; the daemon lives."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = d.path('self.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx', '-o',
             'block_size=1M,block_state_zero=off', img, str(16 * MiB)])
        make_differencing(img, 'self.vhdx')
        d.start()
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'vhdx', 'node-name': 'loop', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': img}})
        assert 'error' in r, 'a self-parented image opened'
        if not is_reference():
            assert_in('Could not open backing file', r['error']['desc'], 'loop refused')
        d.assert_alive()


# --- blockdev-create ---

def create(q, d, name, fmt_opts):
    path = d.path(name)
    assert_eq(run_create(q, 'f-' + name, {'driver': 'file', 'filename': path,
                                           'size': 0}), None, 'file create')
    q.execute('blockdev-add', {'driver': 'file', 'node-name': 'n-' + name,
                               'filename': path})
    try:
        err = run_create(q, 'c-' + name, dict({'driver': 'vhdx', 'file': 'n-' + name},
                                              **fmt_opts))
    finally:
        q.execute('blockdev-del', {'node-name': 'n-' + name})
    return path, err


def test_create():
    """blockdev-create of both subformats and with each option:
    qemu-img info sees format, size and block size, qemu-img check
    passes, and the image takes data qemu-io reads back.  Refused
    options give QEMU's errors."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        d.start()
        q = d.qmp()
        cases = [
            ('dyn.vhdx', {'size': 40 * MiB}, 8 * MiB),
            ('fixed.vhdx', {'size': 40 * MiB, 'subformat': 'fixed'}, 8 * MiB),
            ('opts.vhdx', {'size': 40 * MiB + 512, 'block-size': MiB, 'log-size': 4 * MiB,
                           'block-state-zero': False}, MiB),
        ]
        for name, opts, bs in cases:
            path, err = create(q, d, name, opts)
            assert_eq(err, None, 'create %s' % name)
            info = img_info(path, 'vhdx')
            assert_eq((info['format'], info['virtual-size'], info['cluster-size']),
                      ('vhdx', opts['size'], bs), name)
            check_vhdx(path)
            bt.qemu_io(path, 'write -P 0x3c 1M 3M', 'read -P 0x3c 1M 3M',
                       'read -P 0 0 1M', 'read -P 0 20M 1M', fmt='vhdx')
            assert_in('No errors were found', check_vhdx(path), name)
        for opts, text in (
                ({'size': MiB, 'log-size': 1000}, 'Log size must be a multiple of 1 MB'),
                ({'size': MiB, 'block-size': 1000}, 'Block size must be a multiple of 1 MB'),
                ({'size': MiB, 'block-size': 3 * MiB}, 'Block size must be a power of two'),
                ({'size': MiB, 'block-size': 512 * MiB},
                 'Block size must not exceed 268435456'),
                ({'size': 1 << 47}, 'Image size too large; max of 64TB')):
            _, err = create(q, d, 'bad.vhdx', opts)
            assert_eq(err, text, 'refused %r' % opts)
        d.assert_alive()


def test_zero_size():
    """A vhdx of size 0 (qemu-img create makes them, QEMU opens them):
    from qemu-img and from blockdev-create, it opens, exports 0 bytes and
    checks clean after the daemon closed it."""
    require_tool('qemu-img')
    bt.require_nbd()
    with Daemon() as d:
        img = d.path('zero.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx', img, '0'])
        d.args = node_args(img) + d.args + nbd_export_args(d)
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        size = run(['nbdinfo', '--size', d.uri()]).stdout.strip()
        assert_eq(size, '0', 'export size')
        path, err = create(q, d, 'created.vhdx', {'size': 0})
        assert_eq(err, None, 'blockdev-create of size 0')
        q.execute('blockdev-add', {'driver': 'vhdx', 'node-name': 'z2',
                                   'file': {'driver': 'file', 'filename': path}})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(nodes['z2']['image']['virtual-size'], 0, 'created image size')
        q.execute('blockdev-del', {'node-name': 'z2'})
        assert_eq(d.stop(), 0, 'daemon exit status')
        for p in (img, path):
            assert_in('No errors were found', check_vhdx(p), 'qemu-img check %s' % p)
            assert_eq(img_info(p, 'vhdx')['virtual-size'], 0, 'virtual size of %s' % p)


def test_probe_mirror_target():
    """drive-mirror mode=existing without a format probes a vhdx target
    by its file identifier, so the mirror writes through the format."""
    require_tool('qemu-img')
    with Daemon() as d:
        src = d.path('src.raw')
        bt.make_image(src, 8 * MiB)
        bt.qemu_io(src, 'write -P 0x42 1M 2M')
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % src,
                  '--blockdev', 'driver=raw,node-name=src,file=f0'] + d.args
        d.start()
        q = d.qmp()
        tgt = d.path('tgt.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx', tgt, str(8 * MiB)])
        q.execute('drive-mirror', {'job-id': 'm', 'device': 'src', 'target': tgt,
                                   'sync': 'full', 'mode': 'existing'})
        r = bt.run_job(q, 'm', complete=True, auto_dismiss=True)
        assert_eq(r.error, None, 'mirror to vhdx')
        assert_eq(img_info(tgt)['format'], 'vhdx', 'target still vhdx')
        check_vhdx(tgt)
        compare(src, 'raw', tgt, 'vhdx', 'mirror target')


# --- hostile images ---

def truncate_to(n):
    def fn(img):
        with open(img, 'r+b') as f:
            f.truncate(n)
    return fn


def region_field(name, fmt, field_off, value):
    """Sets a field of the BAT or metadata region entry."""
    def fn(img):
        guid = BAT_GUID if name == 'bat' else META_GUID

        def p(t):
            for i in range(struct.unpack_from('<I', t, 8)[0]):
                if bytes(t[16 + 32 * i:32 + 32 * i]) == guid:
                    struct.pack_into(fmt, t, 16 + 32 * i + field_off, value)
        rewrite_region_table(img, p)
    return fn


def bat_set(block, value):
    def fn(img):
        patch(img, bat_entry_off(img, block), '<Q', value)
    return fn


def header_field(fmt, off, value):
    def fn(img):
        set_header(img, lambda h: struct.pack_into(fmt, h, off, value))
    return fn


def meta_item(guid, fmt, value):
    def fn(img):
        m = regions(img)['meta'][0]
        t = read_at(img, m, 64 * KiB)
        for i in range(struct.unpack_from('<H', t, 10)[0]):
            e = t[32 + 32 * i:64 + 32 * i]
            if e[:16] == uuid.UUID(guid).bytes_le:
                patch(img, m + struct.unpack_from('<I', e, 16)[0], fmt, value)
    return fn


def both_bad_checksums(img):
    patch(img, 64 * KiB + 4, '<I', 1)
    patch(img, 128 * KiB + 4, '<I', 1)


def regions_overlap(img):
    def p(t):
        bat = struct.unpack_from('<Q', t, 32)[0]
        struct.pack_into('<Q', t, 64, bat)
    rewrite_region_table(img, p)


FILE_PARAMS = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B'
DISK_SIZE = '2FA54224-CD1B-4876-B211-5DBED83BF4B8'
LSS = '8141BF1D-A96F-4709-BA47-F233A8FAAB5F'

# name: (patch(img), blockd's error text, qsd)
#   qsd: True when qemu-storage-daemon 7.2 refuses it too (any text),
#   else why the case is skipped against it.
CASES = {
    'truncated': (truncate_to(100 * KiB), 'too short for the headers', True),
    'not-vhdx': (lambda i: patch(i, 0, '8s', b'vhdxfilx'), 'not a VHDX image', True),
    'bad-header-checksums': (both_bad_checksums, 'both headers are invalid', True),
    'header-version': (header_field('<H', 66, 2), 'unsupported header version 2', True),
    'log-past-eof': (header_field('<Q', 72, 1 << 40), 'past the end of the file',
                     'QSD 7.2 opens it'),
    'bad-region-tables': (lambda i: (patch(i, 192 * KiB + 4, '<I', 1),
                                     patch(i, 256 * KiB + 4, '<I', 1)),
                          'both region tables are invalid', True),
    'bat-region-past-eof': (region_field('bat', '<Q', 16, 1 << 40),
                            'region 0 (BAT) at 0x10000000000 (0x100000 bytes) is past the '
                            'end of the file', 'QSD 7.2 opens it as an empty disk'),
    'bat-region-wraps': (region_field('bat', '<Q', 16, (1 << 64) - MiB),
                         'is past the end of the file', True),
    'log-wraps': (header_field('<Q', 72, (1 << 64) - MiB), 'past the end of the file',
                  'QSD 7.2 opens it'),
    'regions-overlap': (regions_overlap, 'overlap', True),
    'region-over-log': (region_field('meta', '<Q', 16, MiB), 'overlaps the log', True),
    'block-size-odd': (meta_item(FILE_PARAMS, '<I', 3 * MiB), 'invalid block size', True),
    'size-huge': (meta_item(DISK_SIZE, '<Q', 1 << 60), 'invalid virtual disk size', True),
    'sector-size-odd': (meta_item(LSS, '<I', 1024), 'invalid logical sector size', True),
    'has-parent-no-locator': (meta_item(FILE_PARAMS, '<Q', (2 << 32) | MiB),
                              'differencing image without a parent locator', True),
    'bat-entry-past-eof': (bat_set(1, (1 << 40) | 6), 'past the end of the file',
                           True),
    'bat-entry-wraps': (bat_set(1, ((1 << 64) - MiB) | 6), 'past the end of the file', True),
    'bat-entry-on-metadata': (lambda i: bat_set(1, regions(i)['meta'][0] | 6)(i),
                              'overlaps the image\'s metadata', True),
    'bat-entry-bad-state': (bat_set(1, 4), 'invalid state 4', 'QSD 7.2 opens it'),
    'bat-entries-shared': (lambda i: patch(i, bat_entry_off(i, 2), '<Q',
                                           struct.unpack('<Q', read_at(i, bat_entry_off(i, 4),
                                                                       8))[0]),
                           'two BAT entries name overlapping blocks', 'QSD 7.2 opens it'),
    'diff-partial-without-bitmap': (lambda i: (make_differencing(i, 'p.vhdx'),
                                               patch(i, bat_entry_off(i, 0) + 8 * 4096, '<Q',
                                                     0)),
                                    'partially present without a sector bitmap', True),
    'diff-bitmap-past-eof': (lambda i: (make_differencing(i, 'p.vhdx'),
                                        patch(i, bat_entry_off(i, 0) + 8 * 4096, '<Q',
                                              (1 << 40) | 6)),
                             'sector bitmap 0 at 0x10000000000 is past the end', True),
    'diff-locator-outside': (lambda i: (make_differencing(i, 'p.vhdx'),
                                        patch(i, regions(i)['meta'][0] + 65536 + 4096 + 20,
                                              '<I', 1 << 30)),
                             'parent locator entry 0 is outside the locator', True),
}


def test_hostile():
    require_tool('qemu-img', 'qemu-io')
    skipped = []
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, (fn, text, qsd) in CASES.items():
            img = d.path('h-%s.vhdx' % name)
            run(['qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img,
                 str(16 * MiB)])
            bt.qemu_io(img, 'write -P 0x61 0 1M', 'write -P 0x62 4M 1M', fmt='vhdx')
            fn(img)
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            node = 'h-' + name
            r = q.cmd('blockdev-add', {'driver': 'vhdx', 'node-name': node,
                                       'file': {'driver': 'file', 'filename': img}})
            if 'error' not in r:
                q.execute('blockdev-del', {'node-name': node})
                raise AssertionError('%s: hostile image opened' % name)
            desc = r['error']['desc']
            if not is_reference():
                assert_in(text, desc, name)
                assert_in("Node '%s'" % node, desc, name + ': names the node')
            d.assert_alive()
        q.execute('query-version')
    if skipped:
        print('reference: skipped hostile cases: ' + ', '.join(skipped))


def damage(buf, rng, spots, resum):
    """1-3 random bytes of 'spots' changed; the checksums of the
    structures in 'resum' ((offset, length, checksum offset)) made good
    again, so the damage reaches the parsers behind them."""
    for _ in range(rng.randrange(1, 4)):
        buf[rng.choice(spots)] = rng.randrange(256)
    for off, ln, csum in resum:
        buf[off:off + ln] = with_checksum(bytes(buf[off:off + ln]), csum)


def corruption_round(d, q, nbd, rng, orig, spots, resum, tag):
    opened = 0
    for i in range(40):
        buf = bytearray(orig)
        damage(buf, rng, spots, resum)
        img = d.path('%s%d.vhdx' % (tag, i))
        with open(img, 'wb') as f:
            f.write(buf)
        node = '%s%d' % (tag, i)
        r = q.cmd('blockdev-add', {'driver': 'vhdx', 'node-name': node,
                                   'file': {'driver': 'file', 'filename': img}})
        if 'error' in r:
            d.assert_alive()
            continue
        opened += 1
        with bt.nbd_export(q, node, writable=True) as name:
            h = nbd.NBD()
            h.connect_uri(d.uri(name))
            size = h.get_size()
            for off in range(0, min(size, 4 * MiB), MiB):
                try:
                    h.pread(min(MiB, size - off), off)
                    h.pwrite(b'\x7e' * 512, off)
                except nbd.Error:
                    pass
            try:
                h.shutdown()
            except nbd.Error:
                pass  # QSD 7.2 drops a client whose read failed
        q.execute('blockdev-del', {'node-name': node})
        d.assert_alive()
    return opened


def test_random_corruption():
    """Seeded random damage to headers, region table, metadata, BAT and
    a log entry (their checksums made good again, so the damage gets
    past them): every image either is refused with an error or opens,
    reads and takes writes; the daemon lives throughout (and ASan
    builds see no memory error)."""
    require_tool('qemu-img', 'qemu-io')
    nbd = bt.require_nbd()
    rng = random.Random(19)
    with Daemon() as d:
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        good = d.path('good.vhdx')
        run(['qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', good,
             str(4 * MiB)])
        bt.qemu_io(good, 'write -P 0x61 0 64k', 'write -P 0x62 1M 8k', fmt='vhdx')
        with open(good, 'rb') as f:
            orig = f.read()
        regs = regions(good)
        meta, bat = regs['meta'][0], regs['bat'][0]
        spots = (list(range(64 * KiB, 64 * KiB + 80)) + list(range(128 * KiB, 128 * KiB + 80)) +
                 list(range(192 * KiB, 192 * KiB + 80)) + list(range(meta, meta + 200)) +
                 list(range(meta + 64 * KiB, meta + 64 * KiB + 40)) +
                 list(range(bat, bat + 64)))
        resum = [(64 * KiB, 4096, 4), (128 * KiB, 4096, 4), (192 * KiB, 64 * KiB, 4)]
        opened = corruption_round(d, q, nbd, rng, orig, spots, resum, 'c')
        assert opened > 0, 'no damaged image opened at all'
        dirty = d.path('dirty.vhdx')
        with open(dirty, 'wb') as f:
            f.write(orig)
        make_dirty(dirty, 2, 0x55)
        with open(dirty, 'rb') as f:
            orig = f.read()
        log = struct.unpack_from('<Q', current_header(dirty)[1], 72)[0]
        spots = list(range(log, log + 128)) + [log + 4096 + i for i in (0, 4, 5, 4092)]
        corruption_round(d, q, nbd, rng, orig, spots, [(log, 8192, 4)], 'l')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
