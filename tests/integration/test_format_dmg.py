#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The dmg format (Apple UDIF), read-only.  qemu-img cannot make dmg
images, so the images are made here: a patterned raw byte string cut
into zero, raw, ignore, zlib and bzip2 chunks, described by mish blocks
in an XML property list (base64, as hdiutil writes them) or in a
resource fork, with the "koly" trailer at the end.  QEMU reads the
images (qemu-img info, qemu-img convert equals the source; QEMU 7.2 on
Debian has no bzip2 module, so those images are checked against blockd
only); blockd's NBD and FUSE exports equal the source (qemu-img compare,
nbdcopy, qemu-io read -P).  Block status shows the zero chunks.  The
node is read-only (auto-read-only or read-only=on), probing goes by the
.dmg name.  Hostile images are refused with a reason; chunks that cannot
be read (corrupt zlib, lzfse, unknown types, sectors no chunk holds)
fail with EIO while the rest of the image reads and the daemon lives."""

import base64
import bz2
import json
import os
import random
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, skip_if_reference, tests_of)

SECTOR = 512
TYPES = {'zero': 0, 'raw': 1, 'ignore': 2, 'adc': 0x80000004, 'zlib': 0x80000005,
         'bzip2': 0x80000006, 'lzfse': 0x80000007}
COMMENT, LAST = 0x7ffffffe, 0xffffffff

# Two partitions (two blkx entries), every kind QEMU 7.2 reads.
LAYOUT = [[('raw', 256), ('zero', 300), ('zlib', 2048), ('ignore', 64)],
          [('zlib', 1000), ('raw', 17), ('zero', 4096), ('zlib', 129)]]
# Small, for the hostile images (each case builds its own).
LAYOUT_SMALL = [[('raw', 8), ('zero', 16), ('zlib', 32), ('raw', 8)], [('zlib', 16)]]
# With bzip2 chunks (not readable by Debian's QEMU 7.2).
LAYOUT_BZ2 = [[('raw', 128), ('bzip2', 2048), ('zero', 100)],
              [('zlib', 512), ('bzip2', 333), ('raw', 8)]]


def chunk_source(kind, index, nsec, rng):
    """A chunk's guest bytes: half a byte pattern (0x41 + index, for
    qemu-io read -P), half random; zeroes for the zero kinds."""
    n = nsec * SECTOR
    if kind in ('zero', 'ignore'):
        return bytes(n)
    half = (n // 2) & ~511
    return bytes([0x41 + index]) * half + rng.randbytes(n - half)


def encode(kind, src):
    return {'zero': lambda s: b'', 'ignore': lambda s: b'', 'raw': lambda s: s,
            'zlib': zlib.compress, 'bzip2': bz2.compress,
            'lzfse': lambda s: b'bvx2' + bytes(60), 'adc': lambda s: b'\x80' * 64}[kind](src)


def entry(kind_or_type, first, count, off, length):
    t = TYPES[kind_or_type] if isinstance(kind_or_type, str) else kind_or_type
    return struct.pack('>IIQQQQ', t, 0, first, count, off, length)


def mish(first, nsec, data_off, entries):
    return (struct.pack('>4sIQQQII24s', b'mish', 1, first, nsec, data_off, 0, 0, bytes(24))
            + bytes(136) + struct.pack('>I', len(entries)) + b''.join(entries))


def plist(blocks):
    items = []
    for i, b in enumerate(blocks):
        text = base64.b64encode(b).decode()
        lines = '\n'.join('\t\t\t\t' + text[j:j + 52] for j in range(0, len(text), 52))
        items.append('\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050'
                     '</string>\n\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n%s\n\t\t\t\t</data>\n'
                     '\t\t\t\t<key>ID</key>\n\t\t\t\t<string>%d</string>\n\t\t\t\t<key>Name'
                     '</key>\n\t\t\t\t<string>part %d</string>\n\t\t\t</dict>\n' % (lines, i, i))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD '
            'PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
            '<plist version="1.0">\n<dict>\n\t<key>resource-fork</key>\n\t<dict>\n'
            '\t\t<key>blkx</key>\n\t\t<array>\n%s\t\t</array>\n\t</dict>\n</dict>\n'
            '</plist>\n' % ''.join(items)).encode()


def resource_fork(blocks):
    """A resource fork: header (data offset, map offset, data length, map
    length), padding to 256, then each resource as a length and bytes."""
    data = b''.join(struct.pack('>I', len(b)) + b for b in blocks)
    head = struct.pack('>IIII', 256, 256 + len(data), len(data), 0)
    return head + bytes(256 - len(head)) + data


def koly(data_len, rsrc_off, rsrc_len, xml_off, xml_len, sectors):
    k = bytearray(512)
    struct.pack_into('>4sIII', k, 0, b'koly', 4, 512, 1)
    struct.pack_into('>QQQQQ', k, 0x10, 0, 0, data_len, rsrc_off, rsrc_len)
    struct.pack_into('>II', k, 0x38, 1, 1)
    struct.pack_into('>QQ', k, 0xd8, xml_off, xml_len)
    struct.pack_into('>IQ', k, 0x1e8, 1, sectors)
    return k


class Image:
    """A dmg built from a layout (partitions of (kind, sectors)); keeps
    the source bytes, every chunk's place and the trailer's offset."""

    def __init__(self, layout, seed='dmg', rsrc=False, extra_entries=None):
        rng = random.Random(seed)
        data, self.source, blocks, self.chunks = bytearray(), bytearray(), [], []
        sector = 0
        for p in layout:
            first, data_off, entries = sector, len(data), []
            entries.append(entry(COMMENT, 0, 0, 0, 0))
            for kind, nsec in p:
                src = chunk_source(kind, len(self.chunks), nsec, rng)
                blob = encode(kind, src)
                entries.append(entry(kind, sector - first, nsec, len(data) - data_off, len(blob)))
                self.chunks.append({'kind': kind, 'offset': sector * SECTOR,
                                    'length': nsec * SECTOR, 'file': len(data),
                                    'file_length': len(blob), 'pattern': 0x41 + len(self.chunks)})
                data += blob
                self.source += src
                sector += nsec
            entries += (extra_entries or [])
            entries.append(entry(LAST, sector - first, 0, len(data) - data_off, 0))
            blocks.append(mish(first, sector - first, data_off, entries))
        self.sectors = sector
        self.data = bytes(data)
        self.blocks = blocks
        self.rsrc = rsrc

    def bytes(self, sectors=None):
        tables = resource_fork(self.blocks) if self.rsrc else plist(self.blocks)
        off = len(self.data)
        k = koly(len(self.data), off if self.rsrc else 0, len(tables) if self.rsrc else 0,
                 0 if self.rsrc else off, 0 if self.rsrc else len(tables),
                 self.sectors if sectors is None else sectors)
        self.koly = off + len(tables)
        return self.data + tables + bytes(k)

    def write(self, path, **kw):
        with open(path, 'wb') as f:
            f.write(self.bytes(**kw))
        return path

    def write_source(self, path):
        with open(path, 'wb') as f:
            f.write(self.source)
        return path


def node_args(img, node='disk', ro='read-only=on'):
    return ['--blockdev', 'driver=file,node-name=f0,filename=%s,read-only=on' % img,
            '--blockdev', 'driver=dmg,node-name=%s,file=f0,%s' % (node, ro)]


def nbd_daemon(d, img, **kw):
    d.args = node_args(img, **kw) + d.args + [
        '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
        '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
    d.wait = [d.nbd_sock]
    d.start()


def compare(a, fmt_a, b, fmt_b, what):
    p = run(['qemu-img', 'compare', '-U', '-f', fmt_a, '-F', fmt_b, a, b], check=False)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def pattern_reads(im):
    """qemu-io commands checking each chunk's pattern half and zeroes."""
    cmds = []
    for c in im.chunks:
        if c['kind'] in ('zero', 'ignore'):
            cmds.append('read -P 0 %d %d' % (c['offset'], c['length']))
        elif c['length'] >= 1024:
            cmds.append('read -P 0x%02x %d %d' % (c['pattern'], c['offset'],
                                                   (c['length'] // 2) & ~511))
    return cmds


def test_qemu_reads_fixture():
    """The fixture is a dmg QEMU reads: qemu-img info and convert."""
    require_tool('qemu-img')
    with Daemon(qmp=False) as d:
        for rsrc in (False, True):
            im = Image(LAYOUT, rsrc=rsrc)
            img = im.write(d.path('img%d.dmg' % rsrc))
            src = im.write_source(d.path('src.raw'))
            info = json.loads(run(['qemu-img', 'info', '--output=json', '-f', 'dmg',
                                   img]).stdout)
            assert_eq(info['format'], 'dmg', 'qemu-img info format')
            assert_eq(info['virtual-size'], len(im.source), 'virtual size')
            out = d.path('out.raw')
            run(['qemu-img', 'convert', '-f', 'dmg', '-O', 'raw', img, out])
            with open(out, 'rb') as f:
                assert_eq(f.read() == im.source, True, 'qemu-img convert equals the source')
            compare(img, 'dmg', src, 'raw', 'qemu-img reading the dmg')


def nbd_reads(layout, rsrc=False):
    require_tool('qemu-img', 'qemu-io', 'nbdcopy')
    with Daemon() as d:
        im = Image(layout, rsrc=rsrc)
        img = im.write(d.path('img.dmg'))
        src = im.write_source(d.path('src.raw'))
        nbd_daemon(d, img)
        compare(src, 'raw', d.uri(), 'raw', 'NBD export of the dmg')
        bt.qemu_io(d.uri(), *pattern_reads(im), extra=('-r',))
        out = d.path('copy.raw')
        run(['nbdcopy', '--connections=4', '--requests=16', d.uri(), out])
        with open(out, 'rb') as f:
            assert_eq(f.read() == im.source, True, 'nbdcopy of the export equals the source')
        # Unaligned reads are whole sectors below; still the right bytes.
        c = next(c for c in im.chunks if c['kind'] in ('zlib', 'bzip2'))
        bt.qemu_io(d.uri(), 'read -P 0x%02x %d 100' % (c['pattern'], c['offset'] + 7),
                   extra=('-r',))
        q = d.qmp()
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(nodes['disk']['drv'], 'dmg', 'driver')
        assert_eq(nodes['disk']['ro'], True, 'read-only')
        assert_eq(nodes['disk']['image']['virtual-size'], len(im.source), 'size')
        assert_eq(d.stop(), 0, 'daemon exit status')


def test_nbd_plist():
    nbd_reads(LAYOUT)


def test_nbd_resource_fork():
    nbd_reads(LAYOUT, rsrc=True)


def test_nbd_bzip2():
    """bzip2 chunks: blockd (with libbz2) reads them; QEMU 7.2 on Debian
    has no dmg-bz2 module and fails them with EIO."""
    skip_if_reference('QEMU 7.2 on Debian is built without the dmg-bz2 module')
    nbd_reads(LAYOUT_BZ2)


def test_fuse_read():
    require_tool('qemu-img')
    bt.require_fuse()
    with Daemon() as d:
        im = Image(LAYOUT)
        img = im.write(d.path('img.dmg'))
        mnt = d.path('mnt')
        open(mnt, 'w').close()
        d.args = node_args(img) + d.args + [
            '--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s' % mnt]
        with bt.fuse_mounted(mnt, wait=False):
            d.start()
            bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
            with open(mnt, 'rb') as f:
                assert_eq(f.read() == im.source, True, 'FUSE file equals the source')
                c = im.chunks[6]      # zero chunk in the second partition
                f.seek(c['offset'] + 1000)
                assert_eq(f.read(5000), bytes(5000), 'zero chunk through FUSE')
            assert_eq(d.stop(), 0, 'daemon exit status')


def test_block_status():
    """Zero chunks show as holes/zeroes, data chunks as data (QEMU's dmg
    has no block status: all data)."""
    skip_if_reference('QEMU 7.2 dmg reports every range as data')
    require_tool('nbdinfo')
    with Daemon() as d:
        im = Image(LAYOUT)
        img = im.write(d.path('img.dmg'))
        nbd_daemon(d, img)
        out = run(['nbdinfo', '--json', '--map', d.uri()]).stdout
        zero = [(e['offset'], e['offset'] + e['length']) for e in json.loads(out)
                if e['type'] & 2]
        want = []
        for c in im.chunks:
            if c['kind'] in ('zero', 'ignore'):
                rng = (c['offset'], c['offset'] + c['length'])
                if want and want[-1][1] == rng[0]:
                    rng = (want.pop()[0], rng[1])
                want.append(rng)
        assert_eq(zero, want, 'zero extents')


def test_read_only():
    """dmg is read-only: refused without read-only=on unless
    auto-read-only=on; reopen is refused."""
    with Daemon() as d:
        im = Image(LAYOUT)
        img = im.write(d.path('img.dmg'))
        d.start()
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f0', 'filename': img,
                                   'read-only': True})
        err = q.error('blockdev-add', {'driver': 'dmg', 'node-name': 'rw', 'file': 'f0'})
        assert_eq(err['desc'], 'Image is read-only', 'dmg opened read-write')
        q.execute('blockdev-add', {'driver': 'dmg', 'node-name': 'auto', 'file': 'f0',
                                   'auto-read-only': True})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(nodes['auto']['ro'], True, 'auto-read-only made it read-only')
        err = q.error('blockdev-reopen', {'options': [
            {'driver': 'dmg', 'node-name': 'auto', 'file': 'f0', 'read-only': True}]})
        assert_in('does not support reopening files', err['desc'], 'reopen')
        q.execute('blockdev-del', {'node-name': 'auto'})


def failing_reads(d):
    """An NBD connection for reads that fail: structured replies with
    blockd; simple ones with QSD 7.2, which drops a structured-reply
    client whose read fails ("Failed to send reply")."""
    return bt.nbd_connection(d.uri(), structured=not is_reference())


def test_unreadable_chunks():
    """Corrupt zlib, lzfse, an unknown chunk type and sectors no chunk
    holds fail with EIO; every other chunk reads; the daemon lives."""
    require_tool('qemu-io')
    bt.require_nbd()
    layout = [[('raw', 64), ('zlib', 256), ('lzfse', 64), ('adc', 64), ('zlib', 128)]]
    with Daemon() as d:
        im = Image(layout)
        raw = bytearray(im.bytes())
        bad = im.chunks[1]        # corrupt the first zlib stream
        raw[bad['file'] + 10:bad['file'] + 40] = b'\xff' * 30
        img = d.path('img.dmg')
        with open(img, 'wb') as f:
            f.write(raw)
        nbd_daemon(d, img)
        with failing_reads(d) as h:
            for i in (1, 2, 3):
                c = im.chunks[i]
                for _ in range(2):      # the failure is not cached
                    code = bt.nbd_errno(h.pread, 4096, c['offset'])
                    assert_eq(code, 5, 'read of the %s chunk: EIO' % c['kind'])
            for i in (0, 4):
                c = im.chunks[i]
                assert_eq(h.pread(c['length'], c['offset']),
                          bytes(im.source[c['offset']:c['offset'] + c['length']]),
                          'chunk %d reads' % i)
        d.assert_alive()
        if not is_reference():
            err = d.stderr()
            assert_in('lzfse-compressed, which blockd cannot decompress', err, 'lzfse log')
            assert_in('cannot decompress chunk 1 (zlib', err, 'zlib log')
            assert_in('Image contains chunks of unknown type 80000004', err, 'unknown type')
        assert_eq(d.stop(), 0, 'daemon exit status')


def test_gap():
    """Sectors past the last chunk (the trailer's size is larger) fail
    with EIO; the rest reads."""
    bt.require_nbd()
    with Daemon() as d:
        im = Image([[('raw', 64)]])
        img = im.write(d.path('img.dmg'), sectors=128)
        nbd_daemon(d, img)
        with failing_reads(d) as h:
            assert_eq(h.get_size(), 128 * SECTOR, 'size from the trailer')
            assert_eq(h.pread(SECTOR, 0), bytes(im.source[:SECTOR]), 'first sector')
            assert_eq(bt.nbd_errno(h.pread, SECTOR, 100 * SECTOR), 5, 'gap reads EIO')
        d.assert_alive()


def test_absurd_zero_chunk():
    """A zero chunk of 2^60 sectors (QEMU bounds only the chunks it must
    decompress) under a disk of 64 sectors reads as zeroes."""
    bt.require_nbd()
    with Daemon() as d:
        im = Image([[('raw', 8), ('zero', 8)]])
        img = d.path('img.dmg')
        patch_entry(1, 3, 1 << 60)(im, img)
        with open(img, 'r+b') as f:      # the disk: 64 sectors
            f.seek(im.koly + 0x1ec)
            f.write(struct.pack('>Q', 64))
        nbd_daemon(d, img)
        with bt.nbd_connection(d.uri()) as h:
            assert_eq(h.get_size(), 64 * SECTOR, 'size from the trailer')
            assert_eq(h.pread(64 * SECTOR, 0), bytes(im.source[:8 * SECTOR]) + bytes(56 * SECTOR),
                      'data then zeroes')
        if not is_reference() and bt.shutil.which('nbdinfo'):
            out = run(['nbdinfo', '--json', '--map', d.uri()]).stdout
            assert_eq([(e['offset'], e['length'], e['type'] & 2) for e in json.loads(out)],
                      [(0, 8 * SECTOR, 0), (8 * SECTOR, 56 * SECTOR, 2)], 'map')
        d.assert_alive()


def test_probe_backing():
    """A backing file without a format named *.dmg is probed as dmg
    (QEMU's probe goes by the name); the overlay reads through it."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        im = Image(LAYOUT)
        im.write(d.path('base.dmg'))
        ov = d.path('ov.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.dmg', '-F', 'raw', ov,
             str(len(im.source))], cwd=d.dir)
        # qemu-img insists on a backing format: turn its header extension
        # (0xe2792aca) into an unknown one, which readers skip.
        with open(ov, 'r+b') as f:
            head = f.read(4096)
            f.seek(head.index(bytes.fromhex('e2792aca')))
            f.write(bytes.fromhex('12345678'))
        src = im.write_source(d.path('src.raw'))
        d.args = ['--blockdev', 'driver=qcow2,node-name=disk,read-only=on,'
                  'file.driver=file,file.filename=%s' % ov] + d.args + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        drivers = {n['node-name']: n['drv'] for n in q.execute('query-named-block-nodes')}
        assert_in('dmg', drivers.values(), 'the backing node is dmg')
        compare(src, 'raw', d.uri(), 'raw', 'overlay over the probed dmg')
        assert_eq(d.stop(), 0, 'daemon exit status')


def patch_koly(off, fmt, *vals):
    def fn(im, path):
        raw = bytearray(im.bytes())
        struct.pack_into(fmt, raw, im.koly + off, *vals)
        with open(path, 'wb') as f:
            f.write(raw)
    return fn


def patch_entry(chunk, field, value):
    """Chunk entry `chunk` (of the first partition, after the comment)
    gets `value` in field 0..5 (type, comment, sector, count, offset,
    length)."""
    def fn(im, path):
        blk = bytearray(im.blocks[0])
        off = 204 + 40 * (chunk + 1)
        vals = list(struct.unpack_from('>IIQQQQ', blk, off))
        vals[field] = value
        struct.pack_into('>IIQQQQ', blk, off, *vals)
        im.blocks[0] = bytes(blk)
        im.write(path)
    return fn


def write_bytes(data):
    def fn(im, path):
        with open(path, 'wb') as f:
            f.write(data)
    return fn


def truncated(n):
    def fn(im, path):
        with open(path, 'wb') as f:
            f.write(im.bytes()[:n])
    return fn


def broken_xml(im, path):
    raw = im.bytes().replace(b'</data>', b'</dat_>')
    with open(path, 'wb') as f:
        f.write(raw)


def resource_too_long(im, path):
    im.rsrc = True
    raw = bytearray(im.bytes())
    rsrc = len(im.data)
    struct.pack_into('>I', raw, rsrc + 256, 1 << 30)
    with open(path, 'wb') as f:
        f.write(raw)


# name: (patch(image, path), blockd's text, qsd)
#   qsd: True when qemu-storage-daemon 7.2 refuses it too (its text on
#   stderr or as "Invalid argument"), else why it is skipped there.
HOSTILE = {
    'empty-file': (write_bytes(b''), 'dmg file must be at least 512 bytes long', True),
    'no-trailer': (write_bytes(b'x' * 4000), 'Could not locate UDIF trailer in dmg file', True),
    'truncated': (truncated(3000), 'Could not locate UDIF trailer in dmg file', True),
    'plist-past-eof': (patch_koly(0xd8, '>Q', 1 << 40), 'XML property list (0x10000000000', True),
    'plist-too-long': (patch_koly(0xe0, '>Q', 1 << 60), 'does not lie before the UDIF trailer',
                       True),
    'data-fork-past-trailer': (patch_koly(0x18, '>Q', 1 << 50),
                               'data fork offset 0x4000000000000 lies beyond', True),
    'no-tables': (patch_koly(0xe0, '>Q', 0), 'names neither a resource fork', True),
    'huge-disk': (patch_koly(0x1ec, '>Q', 1 << 62), 'sectors is too large',
                  'QSD 7.2 opens it'),
    'sector-count-max': (patch_entry(2, 3, 200000),
                         'sector count 200000 for chunk 2 is larger than max (131072)', True),
    'length-max': (patch_entry(2, 5, 1 << 30),
                   'length 1073741824 for chunk 2 is larger than max (67108864)', True),
    'chunk-past-eof': (patch_entry(2, 4, 1 << 40), 'beyond the end of the file',
                       'QSD 7.2 opens it; reads of the chunk fail'),
    'chunk-overlap': (patch_entry(1, 2, 4), 'overlaps chunk',
                      'QSD 7.2 opens it and serves wrong data'),
    'broken-xml': (broken_xml, '<data> without </data>', True),
    'resource-too-long': (resource_too_long, 'does not fit in the resource data', True),
}


# Cases whose text is QEMU's own (in the error, or for the chunk limits
# on QSD's stderr, its error saying only "Invalid argument").
QEMU_TEXTS = ('empty-file', 'no-trailer', 'truncated', 'sector-count-max', 'length-max')


def test_hostile():
    skipped = []
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, (patch, text, qsd) in HOSTILE.items():
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            img = d.path('h-%s.dmg' % name)
            patch(Image(LAYOUT_SMALL), img)
            node = 'h-' + name
            r = q.cmd('blockdev-add', {'driver': 'dmg', 'node-name': node, 'read-only': True,
                                       'file': {'driver': 'file', 'filename': img}})
            if 'error' not in r:
                q.execute('blockdev-del', {'node-name': node})
                raise AssertionError('%s: hostile image opened' % name)
            desc = r['error']['desc']
            if is_reference():
                if name in QEMU_TEXTS:
                    assert_in(text, desc + d.stderr(), name)
            else:
                assert_in(text, desc, name)
                if 'Node ' in desc:
                    assert_in("'%s'" % node, desc, name + ': names the node')
            d.assert_alive()
        q.execute('query-version')
    if skipped:
        print('reference: skipped hostile cases: ' + ', '.join(skipped))


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
