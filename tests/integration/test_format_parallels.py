#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The parallels format.  Images made by qemu-img (create, and convert
from a patterned raw file) are exported over NBD or FUSE and compared
with their source; 4 KiB random writes and 1 MiB sequential writes go
through the export (libnbd, qemu-io, fio with verify) while a raw
reference gets the same; after the daemon stops, the image passes
qemu-img check, equals the reference, and qemu-io reads the patterns
back.  The in-use marker is set while open read-write and cleared at
close; an image left in use opens read-only only.  blockdev-snapshot
puts a parallels overlay over a backing node.  blockdev-create makes
images qemu-img checks and reads; probing picks the format; hostile
images (bytes patched here) are refused with a reason and the daemon
lives."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, tests_of)
from test_formats_vdi_vpc import (compare, fio_verify, fuse_writes,  # noqa: E402
                                  img_info, nbd_writes, run_create)

KiB = 1024
MiB = 1024 * KiB
SIZE = 48 * MiB
INUSE = 0x746f6e59


def check_prl(img):
    p = run(['qemu-img', 'check', '-f', 'parallels', img], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s'
                             % (img, p.returncode, p.stdout, p.stderr))
    return p.stdout


def inuse(img):
    with open(img, 'rb') as f:
        f.seek(44)
        return struct.unpack('<I', f.read(4))[0]


def patch(img, off, fmt, *vals):
    with open(img, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, *vals))


def bat(img, i):
    with open(img, 'rb') as f:
        f.seek(64 + 4 * i)
        return struct.unpack('<I', f.read(4))[0]


def make_image(d, kind):
    """A parallels image with data in it and its raw source (the
    reference); 'create': qemu-img create with 64 KiB clusters, then
    convert -n into it; 'convert': qemu-img convert -O parallels."""
    img = d.path('img.prl')
    ref = d.path('ref.raw')
    with open(ref, 'wb') as f:
        f.truncate(SIZE)
        for i, off in enumerate((0, 3 * MiB + 512, 17 * MiB, SIZE - 64 * KiB)):
            f.seek(off)
            f.write(bytes([0x41 + i]) * (64 * KiB))
    if kind == 'create':
        run(['qemu-img', 'create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k',
             img, str(SIZE)])
        run(['qemu-img', 'convert', '-n', '-f', 'raw', '-O', 'parallels', ref, img])
    else:
        run(['qemu-img', 'convert', '-f', 'raw', '-O', 'parallels', ref, img])
    compare(img, 'parallels', ref, 'raw', 'the new image')
    return img, ref


def node_args(img, node='disk'):
    return ['--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=parallels,node-name=%s,file=f0' % node]


def qemu_io_writes(uri, ref):
    """qemu-io through the export: 4 KiB at scattered offsets (inside
    and across allocated clusters) and 1 MiB sequential, mirrored into
    the reference."""
    writes = [(0x51, 5 * MiB + 4 * KiB, 4 * KiB), (0x52, 17 * MiB + 60 * KiB, 8 * KiB),
              (0x53, 9 * MiB - 2 * KiB, 4 * KiB), (0x54, 30 * MiB, MiB),
              (0x55, 31 * MiB, MiB)]
    bt.qemu_io(uri, *['write -P 0x%x %d %d' % w for w in writes])
    with open(ref, 'r+b') as r:
        for pat, off, n in writes:
            r.seek(off)
            r.write(bytes([pat]) * n)
    return writes


def roundtrip(kind, export):
    require_tool('qemu-img', 'qemu-io')
    if export == 'fuse':
        bt.require_fuse()
    else:
        bt.require_nbd()
    with Daemon() as d:
        img, ref = make_image(d, kind)
        mnt = d.path('mnt')
        d.args = node_args(img) + d.args
        writes = []
        if export == 'fuse':
            open(mnt, 'w').close()
            d.args += ['--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,'
                       'writable=on' % mnt]
            with bt.fuse_mounted(mnt, wait=False):
                d.start()
                bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
                assert_eq(inuse(img), INUSE, 'in-use marker while open read-write')
                compare(ref, 'raw', mnt, 'raw', 'export of the new image')
                fuse_writes(mnt, SIZE, ref, kind)
                compare(ref, 'raw', mnt, 'raw', 'export after the writes')
                assert_eq(d.stop(), 0, 'daemon exit status')
        else:
            d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                       '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
            d.wait = [d.nbd_sock]
            d.start()
            assert_eq(inuse(img), INUSE, 'in-use marker while open read-write')
            compare(ref, 'raw', d.uri(), 'raw', 'export of the new image')
            nbd_writes(d.uri(), SIZE, ref, kind)
            writes = qemu_io_writes(d.uri(), ref)
            fio_verify(d, d.uri(), ref, SIZE)
            compare(ref, 'raw', d.uri(), 'raw', 'export after the writes')
            assert_eq(d.stop(), 0, 'daemon exit status')
        assert_eq(inuse(img), 0, 'in-use marker cleared at close')
        check_prl(img)
        info = img_info(img, 'parallels')
        assert_eq((info['format'], info['virtual-size']), ('parallels', SIZE), 'qemu-img info')
        compare(img, 'parallels', ref, 'raw', 'image after the daemon closed it')
        if writes:
            bt.qemu_io(img, *['read -P 0x%x %d %d' % w for w in writes], fmt='parallels')


def test_create_nbd():
    roundtrip('create', 'nbd')


def test_convert_fuse():
    roundtrip('convert', 'fuse')


def test_in_use_image():
    """An image left in use (a crash) is refused read-write with QEMU's
    text, opens read-only and reads right; qemu-img check -r all
    repairs it and it opens read-write again."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('u.prl')
        run(['qemu-img', 'create', '-q', '-f', 'parallels', img, str(8 * MiB)])
        bt.qemu_io(img, 'write -P 0x61 1M 1M', fmt='parallels')
        patch(img, 44, '<I', INUSE)
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'parallels', 'node-name': 'rw',
                                   'file': {'driver': 'file', 'filename': img}})
        assert_in('parallels: Image was not closed correctly; cannot be opened read/write',
                  r.get('error', {}).get('desc', ''), 'read-write refusal')
        q.execute('blockdev-add', {'driver': 'parallels', 'node-name': 'ro', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': img}})
        with bt.nbd_export(q, 'ro') as name:
            bt.qemu_io(d.uri(name), 'read -P 0 0 1M', 'read -P 0x61 1M 1M',
                       'read -P 0 2M 6M', extra=('-r',))
        # No reopen, as in QEMU 7.2 (its marker would need one).
        r = q.cmd('blockdev-reopen', {'options': [{
            'driver': 'parallels', 'node-name': 'ro', 'read-only': False,
            'file': {'driver': 'file', 'filename': img}}]})
        assert_in("Block format 'parallels' used by node 'ro' does not support reopening "
                  "files", r.get('error', {}).get('desc', ''), 'reopen')
        q.execute('blockdev-del', {'node-name': 'ro'})
        assert_eq(inuse(img), INUSE, 'read-only open leaves the marker')
        run(['qemu-img', 'check', '-q', '-r', 'all', '-f', 'parallels', img], check=False)
        assert_eq(inuse(img), 0, 'repaired by qemu-img check -r')
        q.execute('blockdev-add', {'driver': 'parallels', 'node-name': 'rw2',
                                   'file': {'driver': 'file', 'filename': img}})
        q.execute('blockdev-del', {'node-name': 'rw2'})
        d.assert_alive()
        check_prl(img)


def test_old_magic():
    """An image with the old magic (BAT entries count sectors): writes
    through NBD allocate clusters whose entries name sectors, and
    qemu-img and qemu-io read them back."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        img = d.path('old.prl')
        run(['qemu-img', 'create', '-q', '-f', 'parallels', img, str(8 * MiB)])
        patch(img, 0, '16s', b'WithoutFreeSpace')
        d.args = node_args(img) + d.args + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        d.wait = [d.nbd_sock]
        d.start()
        bt.qemu_io(d.uri(), 'write -P 0x71 5M 4k', 'write -P 0x72 1020k 8k')
        assert_eq(d.stop(), 0, 'daemon exit status')
        # data_off is 1 MiB: the first cluster allocated starts there.
        assert_eq([bat(img, i) for i in range(8)], [4096, 6144, 0, 0, 0, 2048, 0, 0],
                  'BAT entries in sectors')
        check_prl(img)
        bt.qemu_io(img, 'read -P 0 0 1020k', 'read -P 0x72 1020k 8k', 'read -P 0 1028k 4092k',
                   'read -P 0x71 5M 4k', 'read -P 0 5124k 3068k', fmt='parallels')


def test_backing_by_snapshot():
    """No 'backing' option (as QEMU's schema); blockdev-snapshot puts a
    parallels overlay over a raw node: unallocated clusters read the
    backing data, a partial write copies the rest of its cluster from
    the backing node, and the image alone then holds that cluster."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        base = d.path('base.raw')
        bt.make_image(base, 8 * MiB)
        bt.qemu_io(base, 'write -P 0x21 0 8M')
        top = d.path('top.prl')
        run(['qemu-img', 'create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', top,
             str(8 * MiB)])
        bt.qemu_io(top, 'write -P 0x22 1M 64k', fmt='parallels')
        d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                   '--blockdev', 'driver=file,node-name=bf,filename=%s' % base,
                   '--blockdev', 'driver=raw,node-name=base,file=bf']
        d.start()
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'parallels', 'node-name': 'x', 'backing': 'base',
                                   'file': {'driver': 'file', 'filename': top}})
        assert_in("Parameter 'backing' is unexpected", r.get('error', {}).get('desc', ''),
                  'backing option')
        q.execute('blockdev-add', {'driver': 'parallels', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        q.execute('blockdev-snapshot', {'node': 'base', 'overlay': 'top'})
        with bt.nbd_export(q, 'top', writable=True) as name:
            bt.qemu_io(d.uri(name), 'read -P 0x21 0 1M', 'read -P 0x22 1M 64k',
                       'read -P 0x21 1088k 7104k', 'write -P 0x23 3M 4k',
                       'read -P 0x21 3068k 4k', 'read -P 0x23 3M 4k', 'read -P 0x21 3076k 60k')
        q.execute('blockdev-del', {'node-name': 'top'})
        d.assert_alive()
        check_prl(top)
        # Alone: the copied cluster holds the backing data around the write.
        bt.qemu_io(top, 'read -P 0 0 1M', 'read -P 0x22 1M 64k', 'read -P 0x23 3M 4k',
                   'read -P 0x21 3076k 60k', 'read -P 0 3136k 4k', fmt='parallels')


# --- blockdev-create ---

def create(q, d, name, fmt_opts):
    path = d.path(name)
    assert_eq(run_create(q, 'f-' + name, {'driver': 'file', 'filename': path,
                                           'size': 0}), None, 'file create')
    q.execute('blockdev-add', {'driver': 'file', 'node-name': 'n-' + name,
                               'filename': path})
    try:
        err = run_create(q, 'c-' + name, dict({'file': 'n-' + name,
                                               'driver': 'parallels'}, **fmt_opts))
    finally:
        q.execute('blockdev-del', {'node-name': 'n-' + name})
    return path, err


def test_create():
    """blockdev-create: qemu-img info sees the format and size, qemu-img
    check passes, the header is qemu-img's, and the image takes data
    that qemu-io reads back.  Refused options give QEMU's errors."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, opts, cs in (('def.prl', {'size': 40 * MiB}, MiB),
                               ('small.prl', {'size': 40 * MiB + 512,
                                              'cluster-size': 64 * KiB}, 64 * KiB)):
            path, err = create(q, d, name, opts)
            assert_eq(err, None, 'create %s' % name)
            info = img_info(path, 'parallels')
            assert_eq((info['format'], info['virtual-size']), ('parallels', opts['size']),
                      name)
            with open(path, 'rb') as f:
                h = f.read(64)
            assert_eq(h[:16], b'WithouFreSpacExt', name + ' magic')
            assert_eq(struct.unpack_from('<I', h, 28)[0] * 512, cs, name + ' cluster size')
            check_prl(path)
            ref = d.path('ref-' + name)
            run(['qemu-img', 'create', '-q', '-f', 'parallels', '-o',
                 'cluster_size=%d' % cs, ref, str(opts['size'])])
            with open(ref, 'rb') as f:
                want = f.read(64)
            # Equal to qemu-img's header but for the cylinders' rounding.
            assert_eq(h[:24] + h[28:], want[:24] + want[28:], name + ' header')
            assert_eq(os.path.getsize(path), os.path.getsize(ref), name + ' file size')
            bt.qemu_io(path, 'write -P 0x3c 1M 3M', 'read -P 0x3c 1M 3M',
                       'read -P 0 0 1M', fmt='parallels')
            check_prl(path)
        for opts, text in (
                ({'size': MiB + 1}, 'Image size must be a multiple of 512 bytes'),
                ({'size': MiB, 'cluster-size': 1000},
                 'Cluster size must be a multiple of 512 bytes'),
                ({'size': 1 << 50, 'cluster-size': 512},
                 'Image size is too large for this cluster size'),
                ({'size': MiB, 'cluster-size': 1 << 40}, 'Cluster size is too large')):
            _, err = create(q, d, 'bad.prl', opts)
            assert_in(text, err or '', 'refusal %r' % opts)
        if not is_reference():
            # QEMU 7.2 divides by the cluster size 0 and dies.
            _, err = create(q, d, 'zero.prl', {'size': MiB, 'cluster-size': 0})
            assert_in('cluster size must not be 0', err or '', 'cluster size 0')
        d.assert_alive()


# --- probing ---

def test_probe_mirror_target():
    """drive-mirror mode=existing without a format probes the target as
    QEMU does: a parallels image by its magic, so the mirror writes
    through the format."""
    require_tool('qemu-img')
    with Daemon() as d:
        src = d.path('src.raw')
        bt.make_image(src, 8 * MiB)
        bt.qemu_io(src, 'write -P 0x42 1M 2M')
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % src,
                  '--blockdev', 'driver=raw,node-name=src,file=f0'] + d.args
        d.start()
        q = d.qmp()
        tgt = d.path('tgt.prl')
        run(['qemu-img', 'create', '-q', '-f', 'parallels', tgt, str(8 * MiB)])
        q.execute('drive-mirror', {'job-id': 'm', 'device': 'src', 'target': tgt,
                                   'sync': 'full', 'mode': 'existing'})
        r = bt.run_job(q, 'm', complete=True, auto_dismiss=True)
        assert_eq(r.error, None, 'mirror to parallels')
        assert_eq(img_info(tgt)['format'], 'parallels', 'target still parallels')
        compare(src, 'raw', tgt, 'parallels', 'mirror target')
        check_prl(tgt)


# --- hostile images ---

def truncate_to(n):
    def fn(img):
        with open(img, 'r+b') as f:
            f.truncate(n)
    return fn


def entries_in_sectors(img):
    """The old magic (BAT entries count sectors) and a BAT of 300
    entries: the entries 1, 2, 3 now name sectors inside the BAT."""
    patch(img, 0, '16s', b'WithoutFreeSpace')
    patch(img, 32, '<I', 300)


# name: (patch(img), blockd's error text, qsd)
#   qsd: True when qemu-storage-daemon 7.2 refuses it too (any text),
#   else why the case is skipped against it.  The image: 16 MiB, 1 MiB
#   clusters, clusters 0, 4 and 9 allocated (BAT entries 1, 2, 3).
HOSTILE = {
    'empty-file': (truncate_to(0), 'too short for a Parallels header', True),
    # The file node counts whole 512-byte sectors (as QEMU): the header's
    # missing tail reads as zeroes, and the header check says so.
    'truncated-header': (truncate_to(28), 'Invalid image: Zero sectors per track', True),
    'bad-magic': (lambda i: patch(i, 0, '16s', b'WithoutFreeSpacX'),
                  'Image not in Parallels format', True),
    'bad-version': (lambda i: patch(i, 16, '<I', 3), 'Image not in Parallels format', True),
    'zero-cluster': (lambda i: patch(i, 28, '<I', 0), 'Invalid image: Zero sectors per track',
                     True),
    'huge-cluster': (lambda i: patch(i, 28, '<I', 0x7fffffff), 'Invalid image: Too big cluster',
                     True),
    'huge-catalog': (lambda i: patch(i, 32, '<I', 0xfffffff0), 'Catalog too large', True),
    'bat-past-eof': (lambda i: patch(i, 32, '<I', 0x1000000),
                     'extends beyond the end of the file', 'QSD 7.2 opens it'),
    'big-nb-sectors': (lambda i: patch(i, 36, '<Q', 1 << 40),
                       'is larger than its BAT covers', 'QSD 7.2 opens it'),
    'huge-nb-sectors': (lambda i: patch(i, 36, '<Q', 1 << 60), 'is too large',
                        'QSD 7.2 opens it'),
    'entry-past-eof': (lambda i: patch(i, 64 + 4 * 4, '<I', 1000),
                       'beyond the end of the file', 'QSD 7.2 opens it and reads zeroes'),
    'entry-into-bat': (entries_in_sectors, 'inside the header or BAT', 'QSD 7.2 opens it'),
    'entries-overlap': (lambda i: patch(i, 64 + 4 * 4, '<I', 1),
                        'name overlapping data', 'QSD 7.2 opens it'),
}


def test_hostile():
    require_tool('qemu-img', 'qemu-io')
    skipped = []
    with Daemon() as d:
        d.start()
        q = d.qmp()
        for name, (fn, text, qsd) in HOSTILE.items():
            img = d.path('h-%s.prl' % name)
            run(['qemu-img', 'create', '-q', '-f', 'parallels', img, str(16 * MiB)])
            bt.qemu_io(img, 'write -P 0x61 0 1M', 'write -P 0x62 4M 1M',
                       'write -P 0x63 9M 1M', fmt='parallels')
            fn(img)
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            node = 'h-' + name
            r = q.cmd('blockdev-add', {'driver': 'parallels', 'node-name': node,
                                       'read-only': True,
                                       'file': {'driver': 'file', 'filename': img}})
            if 'error' not in r:
                q.execute('blockdev-del', {'node-name': node})
                raise AssertionError('%s: hostile image opened' % name)
            desc = r['error']['desc']
            if not is_reference():
                assert_in(text, desc, name)
                if 'Node ' in desc:
                    assert_in("'%s'" % node, desc, name + ': names the node')
                    assert_in('parallels', desc, name + ': names the format')
            d.assert_alive()
        q.execute('query-version')
    if skipped:
        print('reference: skipped hostile cases: ' + ', '.join(skipped))


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
