#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The luks format (LUKS1, issue 19).  Images made by qemu-img (each
AES mode QEMU offers) and by cryptsetup luksFormat --type luks1 are
filled through QEMU's own luks driver (qemu-img convert), exported from
the daemon over NBD and FUSE and compared with the plaintext; writes
through the export land in the image so that QEMU's driver reads them
back equal to a reference written in parallel (fio with verify too,
where fio has the nbd engine), and qemu-storage-daemon serves the same.  blockdev-create makes images that qemu-img, qemu-io
and cryptsetup luksDump accept; a wrong passphrase gets QEMU's error;
hostile headers (bytes patched here) are refused with a reason and the
daemon lives."""

import json
import os
import random
import select
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from blockd_test import (Daemon, assert_eq, assert_in, is_reference,  # noqa: E402
                         main, require_tool, run, tests_of)
from test_formats_vdi_vpc import fio_verify, fuse_writes, nbd_writes  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
SIZE = 40 * MiB
PASS = 'correct horse battery'
SECRET = 'secret,id=sec0,data=%s' % PASS

# name: qemu-img create -o options (besides key-secret and iter-time)
KINDS = {
    'aes256-xts': '',
    'aes128-xts': 'cipher-alg=aes-128',
    'aes128-cbc-essiv': 'cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv',
    'aes192-xts': 'cipher-alg=aes-192',
    'aes256-cbc-plain64': 'cipher-mode=cbc,ivgen-alg=plain64',
    'aes256-cbc-plain': 'cipher-mode=cbc,ivgen-alg=plain,hash-alg=sha1',
    'aes256-xts-sha512': 'hash-alg=sha512',
}


def luks_json(img, secret='sec0'):
    return 'json:' + json.dumps({'driver': 'luks', 'key-secret': secret,
                                 'file': {'driver': 'file', 'filename': img}})


def qemu_luks_io(img, *cmds):
    """qemu-io through QEMU's luks driver."""
    argv = ['qemu-io', '--object', SECRET, '--image-opts',
            'driver=luks,key-secret=sec0,file.filename=%s' % img]
    for c in cmds:
        argv += ['-c', c]
    p = run(argv, check=False)
    if p.returncode != 0 or 'verification failed' in p.stdout.lower():
        raise AssertionError('qemu-io %r on %s: rc %d\n%s%s'
                             % (cmds, img, p.returncode, p.stdout, p.stderr))


def compare_luks(img, ref, what):
    """The plaintext of the LUKS image, read by QEMU, equals 'ref'."""
    p = run(['qemu-img', 'compare', '-U', '--object', SECRET, '-F', 'raw',
             luks_json(img), ref], check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def compare_raw(a, b, what):
    p = run(['qemu-img', 'compare', '-U', '-f', 'raw', '-F', 'raw', a, b],
            check=False, timeout=120)
    if p.returncode != 0:
        raise AssertionError('%s: qemu-img compare rc %d\n%s%s'
                             % (what, p.returncode, p.stdout, p.stderr))


def fill(img, ref, size, seed):
    """A random plaintext 'ref' of 'size' bytes, written into the LUKS
    image by QEMU's driver (the whole payload: a fresh LUKS image reads
    as noise, not zeroes)."""
    rng = random.Random(seed)
    with open(ref, 'wb') as f:
        for _ in range(size // MiB):
            f.write(rng.randbytes(MiB))
    run(['qemu-img', 'convert', '-n', '--object', SECRET, '-f', 'raw', ref,
         '--target-image-opts', 'driver=luks,key-secret=sec0,file.filename=%s' % img],
        timeout=120)


def qemu_img_create(img, opts, size, fmt='luks', iter_time=10):
    """qemu-img create -f luks (or fmt qcow2 with opts encrypt.*); tried
    again when QEMU's PBKDF2 benchmark measured too little time ("Unable
    to get accurate CPU usage": its first round took less than a tick of
    the thread's CPU clock, which happens on a fast or busy machine
    whatever iter-time says)."""
    prefix = 'encrypt.' if fmt == 'qcow2' else ''
    for _ in range(40):
        p = run(['qemu-img', 'create', '-q', '-f', fmt, '--object', SECRET, '-o',
                 '%skey-secret=sec0,%siter-time=%d' % (prefix, prefix, iter_time)
                 + (',' + opts if opts else ''),
                 img, str(size)], check=False, timeout=120)
        if p.returncode == 0:
            return img
        if 'accurate CPU usage' not in p.stderr:
            raise AssertionError('qemu-img create %s: %s' % (img, p.stderr))
    raise bt.Skip("qemu-img's PBKDF2 benchmark keeps failing here: %s" % p.stderr.strip())


def qemu_img_image(d, kind, size=SIZE):
    return qemu_img_create(d.path('%s.luks' % kind), KINDS[kind], size)


def require_cryptsetup():
    if not shutil.which('cryptsetup'):
        raise bt.Skip('cryptsetup is not installed')


def cryptsetup_image(d, cipher, key_size, hash_='sha256', size=SIZE):
    """cryptsetup luksFormat --type luks1 on a plain file (no device
    needed: it only writes the header and key material)."""
    require_cryptsetup()
    img = d.path('cs-%s.luks' % cipher)
    with open(img, 'wb') as f:
        f.truncate(size + 2 * MiB)
    run(['cryptsetup', 'luksFormat', '--type', 'luks1', '-q', '--key-file=-',
         '--pbkdf-force-iterations', '1000', '--cipher', cipher,
         '--key-size', str(key_size), '--hash', hash_, img], input=PASS,
        timeout=120)
    return img


def luks_node_args(img, node='disk', secret_data=PASS):
    return ['--object', 'secret,id=sec0,data=%s' % secret_data,
            '--blockdev', 'driver=file,node-name=f0,filename=%s' % img,
            '--blockdev', 'driver=luks,node-name=%s,file=f0,key-secret=sec0' % node]


def read_back_in_qsd(img, ref):
    d = Daemon()
    d.exe = bt.QSD
    d.args = luks_node_args(img) + d.args + [
        '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
        '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=off']
    d.wait = [d.nbd_sock]
    with d:
        d.start()
        compare_raw(ref, d.uri(), 'qemu-storage-daemon reading %s' % img)


def roundtrip(img, export, seed):
    require_tool('qemu-img', 'qemu-io')
    if export == 'fuse':
        bt.require_fuse()
    else:
        bt.require_nbd()
    d = Daemon()
    with d:
        ref = d.path('ref.raw')
        size = json.loads(run(['qemu-img', 'info', '--output=json', '--object', SECRET,
                               luks_json(img)]).stdout)['virtual-size']
        fill(img, ref, size, seed)
        d.args = luks_node_args(img) + d.args
        if export == 'fuse':
            mnt = d.path('mnt')
            open(mnt, 'w').close()
            d.args += ['--export', 'type=fuse,id=e0,node-name=disk,mountpoint=%s,'
                       'writable=on' % mnt]
            with bt.fuse_mounted(mnt, wait=False):
                d.start()
                bt.wait_for(lambda: bt.is_mounted(mnt), what='FUSE mount')
                assert_eq(os.path.getsize(mnt), size, 'export size')
                compare_raw(ref, mnt, 'export of the image')
                fuse_writes(mnt, size, ref, seed)
                compare_raw(ref, mnt, 'export after the writes')
                assert_eq(d.stop(), 0, 'daemon exit status')
        else:
            d.args += ['--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
                       '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
            d.wait = [d.nbd_sock]
            d.start()
            compare_raw(ref, d.uri(), 'export of the image')
            nbd_writes(d.uri(), size, ref, seed)
            fio_verify(d, d.uri(), ref, size)
            compare_raw(ref, d.uri(), 'export after the writes')
            assert_eq(d.stop(), 0, 'daemon exit status')
        compare_luks(img, ref, 'image read by QEMU after the daemon closed it')
        read_back_in_qsd(img, ref)


def qemu_img_roundtrip(kind, export):
    with Daemon() as d:
        img = qemu_img_image(d, kind)
        roundtrip(img, export, kind)


def test_qemu_img_xts_nbd():
    qemu_img_roundtrip('aes256-xts', 'nbd')


def test_qemu_img_xts_fuse():
    qemu_img_roundtrip('aes256-xts', 'fuse')


def _mode_test(kind, first):
    def test():
        if bt.daemon_tsan() and not first:
            # The modes differ in the cipher, not in the threads; the
            # other builds run them all.
            raise bt.Skip('ThreadSanitizer: one mode covers the threads')
        qemu_img_roundtrip(kind, 'nbd')
    test.__doc__ = "QEMU's luks mode %s, over NBD." % kind
    return test


# One test per AES mode and hash QEMU's luks offers (each a few seconds
# of qemu-img's PBKDF2 benchmarks, so apart, not one long test).
for _i, _kind in enumerate(k for k in KINDS if k != 'aes256-xts'):
    globals()['test_qemu_img_' + _kind.replace('-', '_')] = _mode_test(_kind, _i == 0)


def cryptsetup_roundtrip(cipher, key_size, hash_, export):
    with Daemon() as d:
        img = cryptsetup_image(d, cipher, key_size, hash_)
        roundtrip(img, export, cipher)


def test_cryptsetup_xts_nbd():
    cryptsetup_roundtrip('aes-xts-plain64', 512, 'sha256', 'nbd')


def test_cryptsetup_xts_fuse():
    cryptsetup_roundtrip('aes-xts-plain64', 256, 'sha1', 'fuse')


def test_cryptsetup_cbc_essiv():
    cryptsetup_roundtrip('aes-cbc-essiv:sha256', 256, 'sha512', 'nbd')


def test_qemu_io_reads_blockd_writes():
    """Small writes through blockd (sub-sector ones too: blockd does the
    read-modify-write) read back by qemu-io through QEMU's driver."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        img = qemu_img_image(d, 'aes256-xts', 8 * MiB)
        d.args = luks_node_args(img) + d.args + [
            '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock,
            '--export', 'type=nbd,id=e0,node-name=disk,name=disk,writable=on']
        d.wait = [d.nbd_sock]
        d.start()
        bt.qemu_io(d.uri(), 'write -P 0x41 0 64k', 'write -P 0x42 1000 100',
                   'write -z 2M 1M', 'write -P 0x43 7M 1M')
        assert_eq(d.stop(), 0, 'daemon exit status')
        qemu_luks_io(img, 'read -P 0x41 0 1000', 'read -P 0x42 1000 100',
                     'read -P 0x41 1100 64436', 'read -P 0 2M 1M', 'read -P 0x43 7M 1M')


# --- blockdev-create ---

def run_create(q, job, options):
    q.execute('blockdev-create', {'job-id': job, 'options': options})
    return bt.run_job(q, job).error


def create(q, d, name, luks_opts):
    """blockdev-create of a luks image 'name'; tried again when QEMU's
    PBKDF2 benchmark (reference runs) measured too little time."""
    for i in range(40):
        path, err = create_once(q, d, name, luks_opts, i)
        if 'accurate CPU usage' not in (err or ''):
            break
    return path, err


def create_once(q, d, name, luks_opts, attempt):
    path = d.path(name)
    name = '%s-%d' % (name, attempt)
    assert_eq(run_create(q, 'f-' + name, {'driver': 'file', 'filename': path,
                                           'size': 0}), None, 'file create')
    q.execute('blockdev-add', {'driver': 'file', 'node-name': 'n-' + name,
                               'filename': path})
    try:
        err = run_create(q, 'c-' + name, dict({'driver': 'luks', 'file': 'n-' + name},
                                               **luks_opts))
    finally:
        q.execute('blockdev-del', {'node-name': 'n-' + name})
    return path, err


CREATE_CASES = [
    ('default.luks', {}, 'aes', 'xts-plain64', 'sha256', 512),
    ('aes128cbc.luks', {'cipher-alg': 'aes-128', 'cipher-mode': 'cbc', 'ivgen-alg': 'essiv',
                        'ivgen-hash-alg': 'sha256', 'hash-alg': 'sha1'},
     'aes', 'cbc-essiv:sha256', 'sha1', 128),
    ('aes192plain.luks', {'cipher-alg': 'aes-192', 'cipher-mode': 'xts',
                          'ivgen-alg': 'plain64', 'hash-alg': 'sha512'},
     'aes', 'xts-plain64', 'sha512', 384),
    ('aes256cbc.luks', {'cipher-mode': 'cbc', 'ivgen-alg': 'plain64'},
     'aes', 'cbc-plain64', 'sha256', 256),
    ('aes256plain.luks', {'cipher-alg': 'aes-256', 'cipher-mode': 'xts', 'ivgen-alg': 'plain'},
     'aes', 'xts-plain', 'sha256', 512),
]


def test_create():
    """blockdev-create of each mode: qemu-img info sees a luks image of
    the size asked, cryptsetup luksDump reads its header, and QEMU's
    driver opens it with the passphrase and keeps data.  Refusals get
    QEMU's texts."""
    require_tool('qemu-img', 'qemu-io')
    with Daemon() as d:
        d.args += ['--object', SECRET]
        d.start()
        q = d.qmp()
        for name, opts, cname, cmode, hash_, bits in CREATE_CASES:
            path, err = create(q, d, name, dict({'size': 24 * MiB, 'key-secret': 'sec0',
                                                 'iter-time': 10}, **opts))
            assert_eq(err, None, 'create %s' % name)
            info = json.loads(run(['qemu-img', 'info', '--output=json', '--object', SECRET,
                                   luks_json(path)]).stdout)
            assert_eq((info['format'], info['virtual-size']), ('luks', 24 * MiB), name)
            plain = json.loads(run(['qemu-img', 'info', '--output=json', path]).stdout)
            assert_eq(plain['format'], 'luks', name + ': probed as luks')
            if shutil.which('cryptsetup'):
                dump = run(['cryptsetup', 'luksDump', path]).stdout
                for want in ('Version:       \t1', 'Cipher name:   \t' + cname,
                             'Cipher mode:   \t' + cmode, 'Hash spec:     \t' + hash_,
                             'MK bits:       \t%d' % bits, 'Key Slot 0: ENABLED',
                             'Key Slot 1: DISABLED'):
                    assert_in(want, dump, name + ': luksDump')
            qemu_luks_io(path, 'write -P 0x3c 1M 3M', 'read -P 0x3c 1M 3M')
            if shutil.which('cryptsetup'):
                # cryptsetup unlocks a key slot in user space where the
                # kernel's crypto API offers the cipher, else only through
                # device-mapper, which a test machine may lack.
                p = run(['cryptsetup', 'luksOpen', '--test-passphrase', '--key-file=-', path],
                        input=PASS, check=False)
                if p.returncode != 0 and 'device-mapper' not in p.stderr:
                    raise AssertionError('%s: cryptsetup rejects the passphrase: %s'
                                         % (name, p.stderr))
        # A size that is not a multiple of 512: the file holds it exactly,
        # the image shows it rounded up to a sector, as QEMU.
        path, err = create(q, d, 'odd.luks', {'size': 1000, 'key-secret': 'sec0',
                                              'iter-time': 10})
        assert_eq(err, None, 'create odd size')
        info = json.loads(run(['qemu-img', 'info', '--output=json', '--object', SECRET,
                               luks_json(path)]).stdout)
        assert_eq(info['virtual-size'], 1024, 'odd size rounded up')
        assert_eq(os.path.getsize(path), 4040 * 512 + 1000, 'odd size file')
        # Refusals.
        _, err = create(q, d, 'nokey.luks', {'size': MiB})
        assert_eq(err, "Parameter 'key-secret' is required for cipher", 'no key-secret')
        _, err = create(q, d, 'nosecret.luks', {'size': MiB, 'key-secret': 'nope'})
        assert_eq(err, "No secret with id 'nope'", 'missing secret')
        d.assert_alive()


# --- passphrases ---

def test_wrong_passphrase():
    """A wrong passphrase, a missing key-secret and a secret that does
    not exist are refused with QEMU's texts; the right one opens."""
    require_tool('qemu-img')
    with Daemon() as d:
        img = qemu_img_image(d, 'aes256-xts', 4 * MiB)
        d.args += ['--object', 'secret,id=bad,data=not the passphrase',
                   '--object', 'secret,id=sec0,data=%s' % PASS]
        d.start()
        q = d.qmp()
        f = {'driver': 'file', 'filename': img}
        for opts, text in (({'key-secret': 'bad'}, 'Invalid password, cannot unlock any keyslot'),
                           ({}, "Parameter 'key-secret' is required for cipher"),
                           ({'key-secret': 'nope'}, "No secret with id 'nope'")):
            r = q.cmd('blockdev-add', dict({'driver': 'luks', 'node-name': 'l0',
                                            'file': f}, **opts))
            assert_in('error', r, 'opened with %r' % opts)
            assert_eq(r['error']['desc'], text, 'error for %r' % opts)
        q.execute('blockdev-add', {'driver': 'luks', 'node-name': 'l0', 'file': f,
                                   'key-secret': 'sec0'})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        n = nodes['l0']
        assert_eq(n['image']['virtual-size'], 4 * MiB, 'virtual size')
        assert_eq((n['encrypted'], n['image']['encrypted']), (True, True), 'encrypted')
        assert_eq(n['file'], 'json:{"driver": "luks", "file": {"driver": "file", '
                  '"filename": "%s"}, "key-secret": "sec0"}' % img, 'json file name')
        spec = n['image']['format-specific']
        data = spec['data']
        assert_eq((spec['type'], data['cipher-alg'], data['cipher-mode'], data['ivgen-alg'],
                   data['hash-alg'], data['payload-offset'], len(data['slots']),
                   data['slots'][0]['active'], data['slots'][0]['stripes'],
                   data['slots'][1]['active']),
                  ('luks', 'aes-256', 'xts', 'plain64', 'sha256', 4040 * 512, 8, True, 4000,
                   False), 'format-specific')
        q.execute('blockdev-del', {'node-name': 'l0'})
        d.assert_alive()


def test_reopen_read_write_resize():
    """blockdev-reopen takes a luks node from read-only to read-write
    (its options are all fixed); writes then land in the image, and
    block_resize grows it."""
    require_tool('qemu-img', 'qemu-io')
    bt.require_nbd()
    with Daemon() as d:
        img = qemu_img_image(d, 'aes256-xts', 4 * MiB)
        d.args += ['--object', SECRET,
                   '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        q = d.qmp()
        opts = {'driver': 'luks', 'node-name': 'r0', 'read-only': True, 'key-secret': 'sec0',
                'file': {'driver': 'file', 'node-name': 'rf0', 'filename': img}}
        q.execute('blockdev-add', opts)
        opts['read-only'] = False
        q.execute('blockdev-reopen', {'options': [opts]})
        with bt.nbd_export(q, 'r0', writable=True) as name:
            bt.qemu_io(d.uri(name), 'write -P 0x4d 1M 64k')
        # block_resize grows the payload; the new sectors take data.
        q.execute('block_resize', {'node-name': 'r0', 'size': 6 * MiB})
        with bt.nbd_export(q, 'r0', writable=True) as name:
            bt.qemu_io(d.uri(name), 'write -P 0x4e 5M 1M')
        q.execute('blockdev-del', {'node-name': 'r0'})
        qemu_luks_io(img, 'read -P 0x4d 1M 64k', 'read -P 0x4e 5M 1M')
        info = json.loads(run(['qemu-img', 'info', '--output=json', '--object', SECRET,
                               luks_json(img)]).stdout)
        assert_eq(info['virtual-size'], 6 * MiB, 'size after block_resize')


# --- hostile headers ---

def patch(img, off, fmt, *vals):
    with open(img, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, *vals))


def slot(i, field):
    return 208 + 48 * i + {'active': 0, 'iter': 4, 'offset': 40, 'stripes': 44}[field]


def truncate_to(n):
    def fn(img):
        with open(img, 'r+b') as f:
            f.truncate(n)
    return fn


# name: (patch(img), blockd's error text, qsd)
#   qsd: True when qemu-storage-daemon 7.2 refuses it too (any text),
#   else why the case is skipped against it.
HOSTILE = {
    'truncated-header': (truncate_to(300), 'too short for a LUKS header', True),
    'bad-magic': (lambda i: patch(i, 0, '6s', b'LUKS\0\0'), 'Volume is not in LUKS format',
                  True),
    'version': (lambda i: patch(i, 6, '>H', 2), 'LUKS version 2 is not supported', True),
    'cipher': (lambda i: patch(i, 8, '32s', b'rot13'),
               "Cipher name 'rot13' with key size 64 bytes not supported", True),
    'key-bytes': (lambda i: patch(i, 108, '>I', 1 << 30), 'with key size 1073741824 bytes',
                  True),
    'mode': (lambda i: patch(i, 40, '32s', b'xtsplain64'),
             'Unexpected cipher mode string format xtsplain64', True),
    'hash': (lambda i: patch(i, 72, '32s', b'whirlpool'), "'whirlpool' not supported", True),
    'stripes': (lambda i: patch(i, slot(0, 'stripes'), '>I', 0x7fffffff),
                'Keyslot 0 is corrupted (stripes 2147483647 != 4000)', True),
    'slot-offset-huge': (lambda i: patch(i, slot(0, 'offset'), '>I', 0xfffffff0),
                         'Keyslot 0 is overlapping with the encrypted payload', True),
    'slot-over-header': (lambda i: patch(i, slot(0, 'offset'), '>I', 0),
                         'Keyslot 0 is overlapping with the LUKS header', True),
    'slot-state': (lambda i: patch(i, slot(3, 'active'), '>I', 0x12345678),
                   'Keyslot 3 state (active/disable) is corrupted', True),
    'payload-past-eof': (lambda i: patch(i, 104, '>I', 0x7fffffff),
                         'is beyond the end of the file', True),
    'truncated-key-material': (truncate_to(4096 + 1000), 'is beyond the end of the file',
                               True),
    'zero-iterations': (lambda i: patch(i, 164, '>I', 0), 'LUKS key iteration count is zero',
                        True),
    'zero-slot-iterations': (lambda i: patch(i, slot(0, 'iter'), '>I', 0),
                             'Keyslot 0 iteration count is zero', True),
    'slots-overlap': (lambda i: (patch(i, slot(1, 'active'), '>I', 0x00ac71f3),
                                 patch(i, slot(1, 'iter'), '>I', 1000),
                                 patch(i, slot(1, 'offset'), '>I', 8 + 100)),
                      'Keyslots 0 and 1 are overlapping in the header', True),
}


def test_hostile():
    require_tool('qemu-img')
    skipped = []
    with Daemon() as d:
        d.args += ['--object', SECRET]
        d.start()
        q = d.qmp()
        # qemu-img create -f luks takes seconds whatever iter-time says
        # (its PBKDF2 benchmarks): one image, copied for each case.
        template = qemu_img_create(d.path('template.luks'), '', 4 * MiB)
        for name, (fn, text, qsd) in HOSTILE.items():
            img = d.path('h-%s.luks' % name)
            shutil.copyfile(template, img)
            fn(img)
            if is_reference() and qsd is not True:
                skipped.append('%s (%s)' % (name, qsd))
                continue
            node = 'h-' + name
            r = q.cmd('blockdev-add', {'driver': 'luks', 'node-name': node, 'key-secret': 'sec0',
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


# --- PBKDF2 work limits (blockd only: QEMU takes any count) ---

# blockd's limits (formats/luks/luks.h): a slot's PBKDF2 iterations
# times output blocks, the master key digest's iterations, all slots.
SLOT_WORK = 1 << 28
MK_ITERS = 1 << 26

# name: (patch(img) of a qemu-img aes-256-xts sha256 image (64-byte key,
# 2 sha256 blocks), blockd's error text)
PBKDF2_HOSTILE = {
    'slot-iterations': (lambda i: patch(i, slot(0, 'iter'), '>I', 0xfffffff0),
                        "key slot 0 has 4294967280 PBKDF2 iterations, more than blockd's "
                        "limit of %d for sha256 with a 64-byte key" % (SLOT_WORK // 2)),
    'slot-just-over': (lambda i: patch(i, slot(0, 'iter'), '>I', SLOT_WORK // 2 + 1),
                       "key slot 0 has %d PBKDF2 iterations" % (SLOT_WORK // 2 + 1)),
    'inactive-slot-then-huge': (lambda i: (patch(i, slot(5, 'active'), '>I', 0x00ac71f3),
                                           patch(i, slot(5, 'iter'), '>I', 0xffffffff)),
                                "key slot 5 has 4294967295 PBKDF2 iterations"),
    'mk-iterations': (lambda i: patch(i, 164, '>I', 0xffffffff),
                      "the master key digest has 4294967295 PBKDF2 iterations, more than "
                      "blockd's limit of %d" % MK_ITERS),
    # Eight slots each under its own limit, too much together.
    'all-slots': (lambda i: [(patch(i, slot(n, 'active'), '>I', 0x00ac71f3),
                              patch(i, slot(n, 'iter'), '>I', SLOT_WORK // 2))
                             for n in range(8)],
                  "the key slots together need"),
}


def test_pbkdf2_limit_open():
    """A header asking for more PBKDF2 work than any real image has (up
    to 2^32 - 1 iterations a slot: hours on the main thread) is refused
    at once, naming the node, the slot and the limit, and QMP keeps
    answering; the same image with its own counts opens."""
    bt.skip_if_reference('qemu-storage-daemon spends hours in such a header')
    require_tool('qemu-img')
    with Daemon() as d:
        d.args += ['--object', SECRET]
        d.start()
        q = d.qmp()
        template = qemu_img_create(d.path('template.luks'), '', 4 * MiB)
        for name, (fn, text) in PBKDF2_HOSTILE.items():
            img = d.path('p-%s.luks' % name)
            shutil.copyfile(template, img)
            fn(img)
            node = 'p-' + name
            t0 = time.monotonic()
            r = q.cmd('blockdev-add', {'driver': 'luks', 'node-name': node, 'key-secret': 'sec0',
                                       'file': {'driver': 'file', 'filename': img}})
            took = time.monotonic() - t0
            if 'error' not in r:
                q.execute('blockdev-del', {'node-name': node})
                raise AssertionError('%s: hostile image opened' % name)
            desc = r['error']['desc']
            assert_in(text, desc, name)
            assert_in("Node '%s': luks:" % node, desc, name + ': names the node')
            # Refused before any PBKDF2 runs: milliseconds, not seconds.
            assert took < 2, '%s: refused after %.1f s' % (name, took)
            t0 = time.monotonic()
            q.execute('query-version')
            assert time.monotonic() - t0 < 1, '%s: QMP slow after the refusal' % name
        q.execute('blockdev-add', {'driver': 'luks', 'node-name': 'ok', 'key-secret': 'sec0',
                                   'file': {'driver': 'file', 'filename': template}})
        q.execute('blockdev-del', {'node-name': 'ok'})
        d.assert_alive()


def test_pbkdf2_limit_create():
    """blockdev-create with an iter-time whose iteration count blockd
    would refuse to open fails with the reason, and makes no image."""
    bt.skip_if_reference('QEMU creates it (and spends that long opening it)')
    with Daemon() as d:
        d.args += ['--object', SECRET]
        d.start()
        q = d.qmp()
        _, err = create_once(q, d, 'slow.luks', {'key-secret': 'sec0', 'size': MiB,
                                                 'iter-time': 10 ** 9}, 0)
        assert_in("Parameter 'iter-time' of 1000000000 ms gives", err or '', 'create error')
        assert_in('more than blockd opens (%d)' % (SLOT_WORK // 2), err, 'create error')
        d.assert_alive()


# --- a long unlock runs off the main loop ---

SLOW_ITER_TIME = 1000   # ms of PBKDF2 per key slot, as qemu-img measures it


def pending(q):
    """Whether a reply or event from the monitor session 'q' is waiting."""
    return b'\n' in q.buf or bool(select.select([q.sock], [], [], 0)[0])


def test_slow_unlock_keeps_qmp_answering():
    """Images whose key slots take about a second of PBKDF2 each
    (qemu-img's iter-time 1000, what a real image has): blockdev-add
    unlocks them off the main loop.  While it does, another monitor's
    commands are answered, and the node is not in the graph; the add
    then succeeds and the plaintext (written by QEMU's driver) reads back
    equal through an NBD export.  The same for a qcow2 image with LUKS
    encryption, a wrong passphrase (QEMU's error), and a quorum over
    one of each (two unlocks in one add)."""
    require_tool('qemu-img')
    with Daemon(monitors=2) as d:
        ref = d.path('plain.ref')
        luks = qemu_img_create(d.path('slow.luks'), '', 4 * MiB, iter_time=SLOW_ITER_TIME)
        qcow2 = qemu_img_create(d.path('slow.qcow2'), 'encrypt.format=luks', 4 * MiB,
                                fmt='qcow2', iter_time=SLOW_ITER_TIME)
        fill(luks, ref, 4 * MiB, 19)
        run(['qemu-img', 'convert', '-n', '--object', SECRET, '-f', 'raw', ref,
             '--target-image-opts', 'driver=qcow2,encrypt.key-secret=sec0,file.filename=%s'
             % qcow2], timeout=120)
        d.args += ['--object', SECRET, '--object', 'secret,id=bad,data=not the passphrase',
                   '--nbd-server', 'addr.type=unix,addr.path=%s' % d.nbd_sock]
        d.start()
        qa, qb = d.qmp(monitor=0), d.qmp(monitor=1)

        def luks_node(name, img, secret='sec0', ro=False):
            return {'driver': 'luks', 'node-name': name, 'key-secret': secret,
                    'read-only': ro, 'file': {'driver': 'file', 'filename': img}}

        def qcow2_node(name, img, ro=False):
            return {'driver': 'qcow2', 'node-name': name, 'read-only': ro,
                    'encrypt': {'format': 'luks', 'key-secret': 'sec0'},
                    'file': {'driver': 'file', 'filename': img}}

        def add_while_other_monitor_works(args):
            qa.send({'execute': 'blockdev-add', 'arguments': args, 'id': 'slow'})
            assert_eq(qb.execute('query-version')['qemu']['major'] >= 0, True, 'version')
            names = [n['node-name'] for n in qb.execute('query-named-block-nodes')]
            if not is_reference():
                # qemu-storage-daemon unlocks on its main loop: qb waits.
                assert args['node-name'] not in names, 'node in the graph while unlocking'
                assert not pending(qa), 'the add answered before the other monitor'
            return qa.reply()

        def check_export(node):
            qa.execute('block-export-add', {'type': 'nbd', 'id': 'e-' + node,
                                            'node-name': node, 'name': node})
            compare_raw(d.uri(node), ref, node + ' over NBD')
            qa.execute('block-export-del', {'id': 'e-' + node})
            bt.wait_for(lambda: not any(e['id'] == 'e-' + node
                                        for e in qa.execute('query-block-exports')),
                        what='export gone')

        r = add_while_other_monitor_works(luks_node('l0', luks, ro=True))
        assert_eq(r.get('return'), {}, 'luks add: %r' % r)
        check_export('l0')
        qa.execute('blockdev-del', {'node-name': 'l0'})

        r = add_while_other_monitor_works(luks_node('bad0', luks, secret='bad'))
        assert_eq(r.get('error', {}).get('desc'), 'Invalid password, cannot unlock any keyslot',
                  'wrong passphrase: %r' % r)

        r = add_while_other_monitor_works(qcow2_node('q0', qcow2, ro=True))
        assert_eq(r.get('return'), {}, 'qcow2 add: %r' % r)
        check_export('q0')
        qa.execute('blockdev-del', {'node-name': 'q0'})

        # Two unlocks in one add: the second attempt finds the first's
        # result and queues the second; the third opens both.
        r = add_while_other_monitor_works({
            'driver': 'quorum', 'node-name': 'qr', 'vote-threshold': 2, 'read-only': True,
            'children': [luks_node('ql', luks, ro=True),
                         qcow2_node('qq', qcow2, ro=True)]})
        assert_eq(r.get('return'), {}, 'quorum add: %r' % r)
        check_export('qr')
        qa.execute('blockdev-del', {'node-name': 'qr'})

        # Writes through a slow-unlocked node land where QEMU reads them.
        qa.execute('blockdev-add', luks_node('lw', luks))
        qa.execute('block-export-add', {'type': 'nbd', 'id': 'e-lw', 'node-name': 'lw',
                                        'name': 'lw', 'writable': True})
        bt.qemu_io(d.uri('lw'), 'write -P 0x5a 1M 64k')
        qa.execute('block-export-del', {'id': 'e-lw'})
        bt.wait_for(lambda: not qa.execute('query-block-exports'), what='export gone')
        qa.execute('blockdev-del', {'node-name': 'lw'})
        qemu_luks_io(luks, 'read -P 0x5a 1M 64k')
        d.assert_alive()


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
