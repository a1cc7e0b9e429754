#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""qcow2 with LUKS encryption inside (encrypt.format=luks, issue 19).
Images made by qemu-img create / convert with --object secret are
opened with encrypt.key-secret (QMP and the keyval form), exported over
NBD and FUSE and compared with the plaintext; writes through the export
(partial clusters too, whose COW parts must be encrypted as well) read
back equal in qemu-img/qemu-io through QEMU's own driver, the image
passes qemu-img check, and qemu-storage-daemon serves the same.  Wrong
or missing secrets and mismatched encryption options get QEMU's texts;
queries show the encrypt format-specific data as QEMU does."""

import json
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, main, require_tool,  # noqa: E402
                         run, tests_of)
from test_formats_vdi_vpc import fio_verify, fuse_writes, nbd_writes  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
SIZE = 40 * MiB
PASS = 'correct horse battery'
SECRET = 'secret,id=sec0,data=%s' % PASS


def image_opts(img, secret='sec0'):
    return 'driver=qcow2,file.filename=%s,encrypt.format=luks,encrypt.key-secret=%s' % (
        img, secret)


def qemu_img_create(img, size, extra=''):
    """qemu-img create -f qcow2 -o encrypt.format=luks; tried again when
    QEMU's PBKDF2 benchmark measured too little time."""
    for _ in range(40):
        p = run(['qemu-img', 'create', '-q', '-f', 'qcow2', '--object', SECRET, '-o',
                 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10' + extra,
                 img, str(size)], check=False)
        if p.returncode == 0:
            return img
        if 'accurate CPU usage' not in p.stderr:
            raise AssertionError('qemu-img create %s: %s' % (img, p.stderr))
    raise bt.Skip("qemu-img's PBKDF2 benchmark keeps failing here: %s" % p.stderr.strip())


def random_ref(ref, size, seed, holes=True):
    """A random plaintext with zero stretches (unallocated clusters)."""
    rng = random.Random(seed)
    with open(ref, 'wb') as f:
        for i in range(size // MiB):
            f.write(bytes(MiB) if holes and i % 4 == 3 else rng.randbytes(MiB))


def fill(img, ref):
    run(['qemu-img', 'convert', '-n', '--object', SECRET, '-f', 'raw', ref,
         '--target-image-opts', image_opts(img)], timeout=120)


def qemu_io_enc(img, *cmds):
    argv = ['qemu-io', '--object', SECRET, '--image-opts', image_opts(img)]
    for c in cmds:
        argv += ['-c', c]
    p = run(argv, check=False)
    if p.returncode != 0 or 'verification failed' in p.stdout.lower():
        raise AssertionError('qemu-io %r on %s: rc %d\n%s%s'
                             % (cmds, img, p.returncode, p.stdout, p.stderr))


def compare_enc(img, ref, what):
    """QEMU's plaintext of the encrypted image equals the raw 'ref'."""
    p = run(['qemu-img', 'compare', '-U', '--object', SECRET, '--image-opts',
             image_opts(img), 'driver=raw,file.filename=%s' % ref], check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def compare_raw(a, b, what):
    p = run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', a, b],
            check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def check(img):
    p = run(['qemu-img', 'check', '--object', SECRET, '--image-opts', image_opts(img)],
            check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError('qemu-img check %s: rc %d\n%s%s'
                             % (img, p.returncode, p.stdout, p.stderr))


def node_args(img, node='disk'):
    """The keyval form, as on QEMU's command line."""
    return ['--object', SECRET,
            '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=qcow2,node-name=%s,file=f0,encrypt.format=luks,'
            'encrypt.key-secret=sec0' % node]


def read_back_in_qsd(img, ref):
    d = Daemon()
    d.exe = bt.QSD
    d.args = node_args(img) + d.args + [
        '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
        '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
    d.wait = [d.nbd_sock]
    with d:
        d.start()
        compare_raw(ref, d.uri(), 'qemu-storage-daemon reading %s' % img)


def roundtrip(make, export, seed):
    require_tool('qemu-img', 'qemu-io')
    if export == 'fuse':
        bt.require_fuse()
    else:
        bt.require_nbd()
    d = Daemon()
    with d:
        ref = d.path('ref.raw')
        img = d.path('enc.qcow2')
        random_ref(ref, SIZE, seed)
        make(img, ref)
        compare_enc(img, ref, 'image made by QEMU')
        d.args = node_args(img) + d.args
        if export == 'fuse':
            mnt = d.path('mnt')
            open(mnt, 'w').close()
            d.args += ['--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,'
                       'writable=on' % mnt]
            with bt.fuse_mounted(mnt, wait=False):
                d.start()
                bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
                assert_eq(os.path.getsize(mnt), SIZE, 'export size')
                compare_raw(ref, mnt, 'export of the image')
                fuse_writes(mnt, SIZE, ref, seed)
                compare_raw(ref, mnt, 'export after the writes')
                assert_eq(d.stop(), 0, 'daemon exit status')
        else:
            d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                       '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
            d.wait = [d.nbd_sock]
            d.start()
            compare_raw(ref, d.uri(), 'export of the image')
            nbd_writes(d.uri(), SIZE, ref, seed)
            fio_verify(d, d.uri(), ref, SIZE)
            compare_raw(ref, d.uri(), 'export after the writes')
            assert_eq(d.stop(), 0, 'daemon exit status')
        check(img)
        compare_enc(img, ref, 'image read by QEMU after the daemon closed it')
        read_back_in_qsd(img, ref)


def made_by_create(img, ref):
    qemu_img_create(img, SIZE)
    fill(img, ref)


def made_by_convert(img, ref):
    run(['qemu-img', 'convert', '--object', SECRET, '-f', 'raw', '-O', 'qcow2', '-o',
         'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=4096',
         ref, img], timeout=120)


def test_create_nbd():
    roundtrip(made_by_create, 'nbd', 'create-nbd')


def test_create_fuse():
    roundtrip(made_by_create, 'fuse', 'create-fuse')


def test_convert_nbd():
    roundtrip(made_by_convert, 'nbd', 'convert-nbd')


def test_partial_writes():
    """Sub-cluster and sub-sector writes into unallocated, allocated and
    zero clusters: the COW parts are written encrypted too, so QEMU reads
    the untouched bytes of each cluster back as they were."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        img = qemu_img_create(d.path('p.qcow2'), 8 * MiB)
        qemu_io_enc(img, 'write -P 0x11 0 192k', 'write -z 1M 128k')
        d.args = node_args(img) + d.args + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        d.wait = [d.nbd_sock]
        d.start()
        bt.qemu_io(d.uri(), 'write -P 0x22 70000 1000',   # allocated cluster
                   'write -P 0x33 3M 512',                 # unallocated, head
                   'write -P 0x44 3200k 100',              # unallocated, sub-sector
                   'write -P 0x55 1088k 4k',               # zero cluster
                   'write -P 0x66 7M 1M',                  # whole clusters
                   'read -P 0x11 0 70000', 'read -P 0x22 70000 1000',
                   'read -P 0 3145216 512', 'read -P 0x33 3M 512', 'read -P 0 3146240 64k')
        assert_eq(d.stop(), 0, 'daemon exit status')
        check(img)
        qemu_io_enc(img, 'read -P 0x11 0 70000', 'read -P 0x22 70000 1000',
                    'read -P 0x11 71000 125608', 'read -P 0 1M 64k',
                    'read -P 0x55 1088k 4k', 'read -P 0 1092k 60k',
                    'read -P 0x33 3M 512', 'read -P 0 3146240 130560',
                    'read -P 0x44 3200k 100', 'read -P 0 3276900 65436',
                    'read -P 0x66 7M 1M')


def test_errors_and_queries():
    """QEMU's texts for a missing, wrong or unknown secret, a format that
    does not match the header, encryption options on a plain image;
    then the query data of an opened node."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = qemu_img_create(d.path('q.qcow2'), 4 * MiB)
        plain = d.path('plain.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', plain, '1M'])
        d.args += ['--object', 'secret,id=bad,data=not the passphrase', '--object', SECRET]
        d.start()
        q = d.qmp()
        f = {'driver': 'file', 'filename': img}
        cases = (
            (None, "Parameter 'encrypt.key-secret' is required for cipher"),
            ({'format': 'luks'}, "Parameter 'encrypt.key-secret' is required for cipher"),
            ({'format': 'luks', 'key-secret': 'bad'},
             'Invalid password, cannot unlock any keyslot'),
            ({'format': 'luks', 'key-secret': 'nope'}, "No secret with id 'nope'"),
            ({'format': 'aes', 'key-secret': 'sec0'},
             "Header reported 'luks' encryption format but options specify 'aes'"),
            ({'key-secret': 'sec0'}, "Parameter 'encrypt.format' is missing"),
            ({'format': 'luks', 'key-secret': 'sec0', 'foo': 1},
             "Parameter 'encrypt.foo' is unexpected"),
        )
        for enc, text in cases:
            args = {'driver': 'qcow2', 'node-name': 'n0', 'file': f}
            if enc is not None:
                args['encrypt'] = enc
            r = q.cmd('blockdev-add', args)
            assert_in('error', r, 'opened with %r' % enc)
            assert_eq(r['error']['desc'], text, 'error for %r' % enc)
        r = q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'n0',
                                   'file': {'driver': 'file', 'filename': plain},
                                   'encrypt': {'format': 'luks', 'key-secret': 'sec0'}})
        assert_eq(r['error']['desc'], "No encryption in image header, but options "
                  "specified format 'luks'", 'plain image')
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'n0', 'file': f,
                                   'encrypt': {'format': 'luks', 'key-secret': 'sec0'}})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        n = nodes['n0']
        assert_eq((n['encrypted'], n['image']['encrypted']), (True, True), 'encrypted')
        assert_eq(n['file'], 'json:{"encrypt.key-secret": "sec0", "driver": "qcow2", '
                  '"file": {"driver": "file", "filename": "%s"}}' % img, 'json file name')
        assert_eq(n['image']['virtual-size'], 4 * MiB, 'virtual size')
        enc = n['image']['format-specific']['data']['encrypt']
        info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', img]).stdout)
        want = info['format-specific']['data']['encrypt']
        assert_eq(enc, want, 'encrypt data as qemu-img info shows it')
        assert_eq((enc['format'], enc['cipher-alg'], enc['cipher-mode'], enc['ivgen-alg'],
                   enc['hash-alg'], len(enc['slots'])),
                  ('luks', 'aes-256', 'xts', 'plain64', 'sha256', 8), 'encrypt data')
        q.execute('blockdev-del', {'node-name': 'n0'})
        d.assert_alive()


def run_create(q, job, options):
    q.execute('blockdev-create', {'job-id': job, 'options': options})
    return bt.run_job(q, job).error


CREATE_CASES = [
    # name, encrypt options besides format/key-secret/iter-time, cluster size,
    # expected cipher-alg, cipher-mode, ivgen-alg, hash-alg
    ('default', {}, 65536, 'aes-256', 'xts', 'plain64', 'sha256'),
    ('cbc-essiv', {'cipher-alg': 'aes-128', 'cipher-mode': 'cbc', 'ivgen-alg': 'essiv',
                   'ivgen-hash-alg': 'sha256', 'hash-alg': 'sha1'}, 4096,
     'aes-128', 'cbc', 'essiv', 'sha1'),
]


def test_blockdev_create():
    """blockdev-create with encrypt (QCryptoBlockCreateOptionsLUKS, QEMU's
    defaults): qemu-img info and check accept the image, QEMU's driver
    keeps data written into it, and the daemon reads that back."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        d.args += ['--object', SECRET,
                   '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        for name, opts, cs, alg, mode, ivgen, hash_ in CREATE_CASES:
            path = d.path(name + '.qcow2')
            assert_eq(run_create(q, 'f-' + name, {'driver': 'file', 'filename': path,
                                                   'size': 0}), None, 'file create')
            q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f-' + name,
                                       'filename': path})
            enc = dict({'format': 'luks', 'key-secret': 'sec0', 'iter-time': 10}, **opts)
            err = None
            for i in range(40):
                err = run_create(q, 'c-%s-%d' % (name, i),
                                 {'driver': 'qcow2', 'file': 'f-' + name, 'size': 8 * MiB,
                                  'cluster-size': cs, 'encrypt': enc})
                if 'accurate CPU usage' not in (err or ''):
                    break
            assert_eq(err, None, 'create %s' % name)
            q.execute('blockdev-del', {'node-name': 'f-' + name})
            info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', path]).stdout)
            assert_eq((info['format'], info['virtual-size'], info['encrypted']),
                      ('qcow2', 8 * MiB, True), name)
            e = info['format-specific']['data']['encrypt']
            assert_eq((e['format'], e['cipher-alg'], e['cipher-mode'], e['ivgen-alg'],
                       e['hash-alg']), ('luks', alg, mode, ivgen, hash_), name + ' encrypt')
            check(path)
            qemu_io_enc(path, 'write -P 0x3c 1M 3M', 'read -P 0x3c 1M 3M', 'read -P 0 0 1M')
            check(path)
            q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'n-' + name,
                                       'file': {'driver': 'file', 'filename': path},
                                       'encrypt': {'format': 'luks', 'key-secret': 'sec0'}})
            with bt.nbd_export(q, 'n-' + name, name=name, writable=True):
                bt.qemu_io(d.uri(name), 'read -P 0x3c 1M 3M', 'read -P 0 0 1M',
                           'read -P 0 4M 4M')
            q.execute('blockdev-del', {'node-name': 'n-' + name})
        path = d.path('bad.qcow2')
        assert_eq(run_create(q, 'f-bad', {'driver': 'file', 'filename': path, 'size': 0}),
                  None, 'file create')
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f-bad', 'filename': path})
        err = run_create(q, 'c-nosecret', {'driver': 'qcow2', 'file': 'f-bad', 'size': MiB,
                                           'encrypt': {'format': 'luks', 'key-secret': 'nope'}})
        assert_eq(err, "No secret with id 'nope'", 'missing secret')
        d.assert_alive()


def test_aes():
    """Old AES-CBC images (crypt_method 1): qemu-storage-daemon 7.2 opens
    them read-write (only QEMU's system emulators refuse them), and so
    does the daemon; QEMU reads back what it wrote and the reverse."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        img = d.path('aes.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '--object', SECRET, '-o',
             'encrypt.format=aes,encrypt.key-secret=sec0', img, str(4 * MiB)])
        opts = 'driver=qcow2,file.filename=%s,encrypt.format=aes,encrypt.key-secret=sec0' % img

        def qio(*cmds):
            argv = ['qemu-io', '--object', SECRET, '--image-opts', opts]
            for c in cmds:
                argv += ['-c', c]
            p = run(argv, check=False)
            if p.returncode != 0 or 'verification failed' in p.stdout.lower():
                raise AssertionError('qemu-io %r: %s%s' % (cmds, p.stdout, p.stderr))
        qio('write -P 0x5a 0 64k', 'write -P 0x33 70000 1000')
        d.args += ['--object', SECRET,
                   '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
                   '--blockdev', 'driver=qcow2,node-name=disk,file=f0,encrypt.format=aes,'
                   'encrypt.key-secret=sec0',
                   '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                   '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        d.wait = [d.nbd_sock]
        d.start()
        q = d.qmp()
        n = {n['node-name']: n for n in q.execute('query-named-block-nodes')}['disk']
        assert_eq((n['encrypted'], n['image']['format-specific']['data']['encrypt']),
                  (True, {'format': 'aes'}), 'query')
        bt.qemu_io(d.uri(), 'read -P 0x5a 0 64k', 'read -P 0x33 70000 1000',
                   'write -P 0x77 300000 5000', 'write -P 0x78 2M 64k')
        assert_eq(d.stop(), 0, 'daemon exit status')
        p = run(['qemu-img', 'check', '--object', SECRET, '--image-opts', opts], check=False)
        assert_eq(p.returncode, 0, 'qemu-img check: %s' % p.stdout)
        qio('read -P 0x5a 0 64k', 'read -P 0x33 70000 1000', 'read -P 0x77 300000 5000',
            'read -P 0 305000 1000', 'read -P 0x78 2M 64k')


def test_hostile():
    """A full disk encryption header extension pointing past the end of
    the file, at an unaligned offset or at something that is no LUKS
    header is refused with the reason; the daemon lives.  (QEMU's texts
    differ: blockd's own checks.)"""
    bt.skip_if_reference('blockd checks of its own')
    require_tool('qemu-img')
    with Daemon() as d:
        good = qemu_img_create(d.path('good.qcow2'), 4 * MiB)
        with open(good, 'rb') as f:
            data = f.read()
        ext = data.index(b'\x05\x37\xbe\x77', 0, 4096)
        off, length = struct.unpack('>QQ', data[ext + 8:ext + 24])
        cases = {
            'huge': (ext + 16, struct.pack('>Q', 1 << 50), 'beyond the end of the file'),
            'unaligned': (ext + 8, struct.pack('>Q', off + 512), 'not cluster aligned'),
            'magic': (off, b'XXXX', 'Volume is not in LUKS format'),
            'ext-len': (ext + 4, struct.pack('>I', 8), 'Invalid encryption header length'),
            # Hours of PBKDF2 on the main thread: refused before any
            # (formats/luks/luks.h), naming the node and the slot.
            'slot-iterations': (off + 208 + 4, struct.pack('>I', 0xffffffff),
                                "Node 'h': luks: key slot 0 has 4294967295 PBKDF2 iterations"),
        }
        d.args += ['--object', SECRET]
        d.start()
        q = d.qmp()
        for name, (at, patch, text) in cases.items():
            img = d.path(name + '.qcow2')
            with open(img, 'wb') as f:
                f.write(data[:at] + patch + data[at + len(patch):])
            r = q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'h',
                                       'file': {'driver': 'file', 'filename': img},
                                       'encrypt': {'format': 'luks', 'key-secret': 'sec0'}})
            assert_in('error', r, name)
            assert_in(text, r['error']['desc'], name)
        d.assert_alive()


if __name__ == '__main__':
    main(tests_of(globals()))
