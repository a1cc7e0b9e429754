#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus/NAME/).

The seeds are committed; this script says where they came from and
makes them again (qemu-img for the images of fuzz-qcow2 and
fuzz-images; GUIDs and timestamps differ on every run).  Inputs that
once crashed a target are added to its corpus by hand (crash-*) and are
not touched here."""

import json
import os
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def qmp_seeds():
    reqs = {
        'caps': [{'execute': 'qmp_capabilities', 'arguments': {'enable': ['oob']}}],
        'query-block': [{'execute': 'query-block'}, {'execute': 'query-named-block-nodes',
                                                     'arguments': {'flat': True}}],
        'blockdev-add': [{'execute': 'blockdev-add', 'arguments': {
            'driver': 'qcow2', 'node-name': 'q', 'discard': 'unmap',
            'file': {'driver': 'file', 'filename': '/nonexistent', 'aio': 'threads'},
            'backing': None, 'cache': {'direct': False, 'no-flush': True}}}],
        'transaction': [{'execute': 'transaction', 'arguments': {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'n0', 'name': 'x',
                                                          'granularity': 65536}},
            {'type': 'drive-backup', 'data': {'device': 'n0', 'target': '/x',
                                              'sync': 'full', 'format': 'qcow2'}}]},
            'id': {'a': [1, 2.5, None, True]}}],
        'export': [{'execute': 'block-export-add', 'arguments': {
            'type': 'nbd', 'id': 'e', 'node-name': 'n0', 'bitmaps': ['b0', {'node': 'n0', 'name': 'b0'}],
            'allocation-depth': True}}],
        'qom': [{'execute': 'qom-list', 'arguments': {'path': '/objects'}},
                {'execute': 'qom-get', 'arguments': {'path': '/objects/tg0', 'property': 'limits'}},
                {'execute': 'qom-list-properties', 'arguments': {'typename': 'throttle-group'}}],
        'mirror': [{'execute': 'blockdev-mirror', 'arguments': {
            'job-id': 'j', 'device': 'n0', 'target': 'n0', 'sync': 'full', 'speed': -1,
            'granularity': 3, 'buf-size': 1 << 40, 'on-source-error': 'stop'}}],
        'schema': [{'execute': 'query-qmp-schema'}, {'execute': 'query-commands'}],
    }
    for name, seq in reqs.items():
        put('qmp', name, ''.join(json.dumps(r) + '\n' for r in seq))
    put('qmp', 'reset', '{"execute": "query-status", "arguments": {"a": [\xff\n'
        '{"execute": "query-version"}\n')
    put('qmp', 'strings', '{"execute": "qom-get", "arguments": {"path": "\\u00e9\\ud83d\\ude00",'
        ' "property": "a\\tb"}, "id": 18446744073709551616}')


def keyval_seeds():
    kinds = {0: ['driver=qcow2,node-name=q,file.driver=file,file.filename=/x,backing=',
                 '{"driver": "raw", "file": {"driver": "null-co", "size": "1G"}}',
                 'driver=quorum,children.0=a,children.1.driver=file,vote-threshold=2',
                 'driver=throttle,throttle-group=g,file=n0'],
             1: ['type=nbd,id=e,node-name=n,bitmaps.0=b,allocation-depth=on',
                 'type=fuse,id=f,node-name=n,mountpoint=/m,growable=on,allow-other=auto'],
             2: ['qom-type=throttle-group,id=g,limits.iops-total=10,x-bps-read=1k',
                 'qom-type=secret,id=s,data=aGVsbG8=,format=base64',
                 'qom-type=tls-creds-x509,id=t,dir=/x,endpoint=server,verify-peer=off'],
             3: ['addr.type=inet,addr.host=127.0.0.1,addr.port=10809,max-connections=4',
                 'addr.type=unix,addr.path=/tmp/s,tls-creds=t'],
             4: ['a.b.c=1,a.b.d=2,x.0=y,x.1=z,,esc=,,', 'bare,k=v']}
    for k, items in kinds.items():
        for i, s in enumerate(items):
            put('keyval', 'k%d-%d' % (k, i), bytes([k]) + s.encode())


NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513


def opt(code, data=b''):
    return struct.pack('>QII', IHAVEOPT, code, len(data)) + data


def info_go(code, name=b'', infos=(1, 2, 3)):
    d = struct.pack('>I', len(name)) + name + struct.pack('>H', len(infos))
    d += b''.join(struct.pack('>H', i) for i in infos)
    return opt(code, d)


def meta(code, name=b'', queries=(b'base:allocation',)):
    d = struct.pack('>I', len(name)) + name + struct.pack('>I', len(queries))
    d += b''.join(struct.pack('>I', len(q)) + q for q in queries)
    return opt(code, d)


def req(flags, typ, handle, off, length, data=b''):
    return struct.pack('>IHHQQI', REQ_MAGIC, flags, typ, handle, off, length) + data


def nbd_seeds():
    flags = struct.pack('>I', 3)     # FIXED_NEWSTYLE | NO_ZEROES
    contexts = (b'base:allocation', b'qemu:dirty-bitmap:b0', b'qemu:allocation-depth')
    go = (opt(8) + meta(10, queries=contexts) + meta(9, queries=(b'qemu:',)) +
          info_go(6) + info_go(7))
    put('nbd', 'handshake-list', flags + opt(3) + opt(6, b'\0\0\0\0\0\0') + opt(2))
    put('nbd', 'export-name', flags + opt(1, b''))
    put('nbd', 'starttls', flags + opt(5) + opt(2))
    io = (req(0, 1, 1, 0, 4096, b'\x5a' * 4096) + req(0, 0, 2, 0, 4096) +
          req(1, 3, 3, 0, 0) + req(0, 4, 4, 4096, 8192) + req(2, 6, 5, 0, 65536) +
          req(0, 7, 6, 0, 1 << 20) + req(8, 7, 7, 0, 1 << 26) + req(0, 5, 8, 0, 65536) +
          req(0, 0, 9, (1 << 26) - 512, 4096) + req(0, 2, 10, 0, 0))
    put('nbd', 'go-io', flags + go + io)
    put('nbd', 'export-name-io', flags + opt(8) + opt(1, b'') + io)


def qcow2_seeds():
    with tempfile.TemporaryDirectory() as t:
        def img(name, opts, *cmds, size='1M', bitmap=None, snap=None):
            p = os.path.join(t, name)
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', opts, p, size],
                           check=True)
            for c in cmds:
                subprocess.run(['qemu-io', '-f', 'qcow2', '-c', c, p], check=True,
                               stdout=subprocess.DEVNULL)
            if bitmap:
                subprocess.run(['qemu-img', 'bitmap', '--add', p, bitmap], check=True)
            if snap:
                subprocess.run(['qemu-img', 'snapshot', '-c', snap, p], check=True)
            with open(p, 'rb') as f:
                put('qcow2', name, f.read())
        img('plain', 'cluster_size=512', 'write -P 0x11 0 4k', 'write -z 8k 4k')
        img('bitmap', 'cluster_size=512', 'write -P 0x22 0 2k', bitmap='b0')
        img('snapshot', 'cluster_size=512', 'write -P 0x33 0 2k', snap='s1')
        img('compressed', 'cluster_size=4096', 'write -c -P 0x44 0 4k')
        img('v2-lazy', 'cluster_size=512,compat=0.10', 'write -P 0x55 0 1k')
        img('lazy-refcounts', 'cluster_size=512,lazy_refcounts=on,refcount_bits=1',
            'write -P 0x66 512 1k')
        img('extended-l2', 'cluster_size=16384,extended_l2=on', 'write -P 0x77 2048 1k')


# fuzz-images: the first byte is the driver's index in fuzz-images.c's
# image_drivers[] (append only), the rest the file in pieces: runs of
# zeroes of 4 KiB and more become holes (PIECE, then the next piece's
# offset in KiB), so that megabyte-aligned formats stay small here.
IMAGES = {'vdi': 0, 'vpc': 1, 'qed': 2, 'vmdk': 3, 'vhdx': 4, 'luks': 5,
          'parallels': 6, 'bochs': 7, 'cloop': 8, 'dmg': 9}
PIECE = b'BDFZSEEK'


def pieces(data, hole=4096):
    """The file as fuzz-images reads it: KiB-aligned runs of zeroes of
    'hole' bytes and more left out (a trailing one keeps the size)."""
    assert PIECE not in data
    zero = [not any(data[i:i + 1024]) for i in range(0, len(data), 1024)]
    out, start, i = b'', 0, 0
    while i < len(zero):
        j = i
        while j < len(zero) and zero[j]:
            j += 1
        if (j - i) * 1024 >= hole and i > 0:
            end = min(j * 1024, len(data))
            out += data[start:i * 1024] + PIECE + struct.pack('<I', end // 1024)
            start = end
        i = j + 1
    return out + data[start:]


def luks1_image(payload, pw=b'fuzz', iters=1000):
    """A LUKS1 image as QEMU lays one out (aes-128-xts-plain64, sha256,
    slot 0 active), with iteration counts fixed low: qemu-img measures
    them (iter-time), and fuzz-images lowers counts above 2000."""
    import hashlib
    import random
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    rnd = random.Random(1)

    def xts(key, data, sector0=0):
        out = b''
        for i in range(0, len(data), 512):
            tweak = struct.pack('<QQ', sector0 + i // 512, 0)
            enc = Cipher(algorithms.AES(key), modes.XTS(tweak)).encryptor()
            out += enc.update(data[i:i + 512]) + enc.finalize()
        return out

    def diffuse(buf):
        out = b''
        for j in range(0, len(buf), 32):
            out += hashlib.sha256(struct.pack('>I', j // 32) + buf[j:j + 32]).digest()[:len(buf[j:j + 32])]
        return out

    key_bytes, stripes = 32, 4000
    mk = bytes(rnd.randrange(256) for _ in range(key_bytes))
    mk_salt = bytes(rnd.randrange(256) for _ in range(32))
    slot_salt = bytes(rnd.randrange(256) for _ in range(32))
    d = bytes(key_bytes)
    split = b''
    for _ in range(stripes - 1):
        blk = bytes(rnd.randrange(256) for _ in range(key_bytes))
        split += blk
        d = diffuse(bytes(a ^ b for a, b in zip(d, blk)))
    split += bytes(a ^ b for a, b in zip(d, mk))
    split += bytes(-len(split) % 512)
    slot_key = hashlib.pbkdf2_hmac('sha256', pw, slot_salt, iters, key_bytes)
    key_sectors = 8
    payload_sectors = (key_sectors + len(split) // 512 + 7) & ~7
    h = b'LUKS\xba\xbe' + struct.pack('>H', 1)
    h += b'aes'.ljust(32, b'\0') + b'xts-plain64'.ljust(32, b'\0') + b'sha256'.ljust(32, b'\0')
    h += struct.pack('>II', payload_sectors, key_bytes)
    h += hashlib.pbkdf2_hmac('sha256', mk, mk_salt, iters, 20) + mk_salt
    h += struct.pack('>I', iters) + b'00000000-0000-4000-8000-00000000f022'.ljust(40, b'\0')
    h += struct.pack('>II', 0x00AC71F3, iters) + slot_salt + struct.pack('>II', key_sectors, stripes)
    for i in range(1, 8):
        h += struct.pack('>II', 0xDEAD, 0) + bytes(32) + struct.pack('>II', key_sectors, stripes)
    h = h.ljust(key_sectors * 512, b'\0') + xts(slot_key, split)
    return h.ljust(payload_sectors * 512, b'\0') + xts(mk, payload)


def crc32c(data):
    crc = 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 & -(crc & 1))
    return crc ^ 0xffffffff


def vhdx_dirty_log(img):
    """A clean vhdx made dirty: its log GUID set in both headers and one
    log entry (a data descriptor writing 0x5a into sector 1 of block 0)
    at the start of the log, as a crash after the log flush leaves it
    (qemu-img clears the log after every update, so none is left)."""
    f = bytearray(img)

    def csum(buf, at):
        buf[at:at + 4] = bytes(4)
        buf[at:at + 4] = struct.pack('<I', crc32c(bytes(buf)))
        return buf

    guid = bytes(range(1, 17))
    for h in (0x10000, 0x20000):
        f[h + 48:h + 64] = guid
        f[h:h + 4096] = csum(bytearray(f[h:h + 4096]), 4)
    log_off, = struct.unpack('<Q', f[0x10000 + 72:0x10000 + 80])
    bat_guid = bytes.fromhex('6677c22d23f600429d64115e9bfd4a08')
    n, = struct.unpack('<I', f[0x30000 + 8:0x30000 + 12])
    bat = [struct.unpack('<Q', f[0x30000 + 32 + 32 * i:0x30000 + 40 + 32 * i])[0]
           for i in range(n) if f[0x30000 + 16 + 32 * i:0x30000 + 32 + 32 * i] == bat_guid][0]
    target = (struct.unpack('<Q', f[bat:bat + 8])[0] >> 20 << 20) + 4096
    sector = b'\x5a' * 4096
    seq = 1
    e = bytearray(4096)
    e[0:64] = (b'loge' + struct.pack('<IIIQII', 0, 8192, 0, seq, 1, 0) + guid +
               struct.pack('<QQ', len(f), len(f)))
    e[64:96] = b'desc' + sector[-4:] + sector[:8] + struct.pack('<QQ', target, seq)
    e += b'data' + struct.pack('<I', seq >> 32) + sector[8:4092] + struct.pack('<I', seq & 0xffffffff)
    f[log_off:log_off + 8192] = csum(e, 4)
    return bytes(f)


def images_seeds():
    with tempfile.TemporaryDirectory() as t:
        def img(fmt, name, opts, *cmds, size='64K', crash=False):
            p = os.path.join(t, name)
            subprocess.run(['qemu-img', 'create', '-q', '-f', fmt] + (['-o', opts] if opts else []) +
                           [p, size], check=True)
            if cmds:
                args = [a for c in cmds + (('abort',) if crash else ()) for a in ('-c', c)]
                subprocess.run(['qemu-io', '-f', fmt] + args + [p], check=not crash,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(p, 'rb') as f:
                data = f.read()
            put('images', fmt + '-' + name, bytes([IMAGES[fmt]]) + pieces(data))
            return data
        img('vdi', 'dynamic', '', 'write -P 0x11 0 4k', size='1M')
        img('vdi', 'static', 'static=on', 'write -P 0x12 8k 4k')
        img('vdi', 'empty', '', size='4G')
        img('vpc', 'fixed', 'subformat=fixed', 'write -P 0x21 0 4k')
        img('vpc', 'dynamic', 'subformat=dynamic', 'write -P 0x22 0 4k', size='3M')
        img('vpc', 'dynamic-big', 'subformat=dynamic,force_size=on', size='2G')
        img('qed', 'plain', 'cluster_size=4096', 'write -P 0x31 8k 4k', 'write -z 64k 4k', size='4M')
        img('qed', 'need-check', 'cluster_size=4096', 'write -P 0x32 0 4k', size='4M', crash=True)
        open(os.path.join(t, 'base.raw'), 'wb').truncate(65536)
        img('qed', 'backing-name', 'cluster_size=4096,backing_file=base.raw,backing_fmt=raw')
        img('vmdk', 'sparse', '', 'write -P 0x41 0 4k', size='1M')
        img('vmdk', 'stream', 'subformat=streamOptimized', 'write -P 0x42 0 64k', 'write -P 0x43 128k 64k', size='1M')
        img('vmdk', 'sparse-compat6', 'compat6=on,adapter_type=lsilogic', 'write -P 0x43 0 1k', size='1M')
        data = img('vhdx', 'dynamic', 'log_size=1M,block_size=1M', 'write -P 0x51 0 4k', size='4M')
        put('images', 'vhdx-dirty-log', bytes([IMAGES['vhdx']]) + pieces(vhdx_dirty_log(data)))
        img('vhdx', 'fixed', 'subformat=fixed,log_size=1M,block_size=1M', size='1M')
        # Descriptors whose extents are the image itself (the only file
        # the target has, named "img") or zeroes.
        desc = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                'createType="monolithicFlat"\n\n# Extent description\n'
                'RW 8 FLAT "img" 0\nRDONLY 8 ZERO\nRW 16 FLAT "img" 1\n\n'
                '# The Disk Data Base\nddb.virtualHWVersion = "4"\n'
                'ddb.geometry.cylinders = "0"\nddb.adapterType = "ide"\n')
        put('images', 'vmdk-descriptor-self', bytes([IMAGES['vmdk']]) + desc.encode())
        put('images', 'vmdk-descriptor-sparse-self', bytes([IMAGES['vmdk']]) +
            desc.replace('RW 16 FLAT "img" 1', 'RW 2048 SPARSE "img"').encode())
        put('images', 'luks-aes-xts', bytes([IMAGES['luks']]) +
            pieces(luks1_image(bytes([0x61]) * 4096 + bytes(4096))))
        # Hostile PBKDF2 counts (slot 0's, the master key digest's): hours
        # of work, refused before any of it (fuzz-images keeps counts the
        # driver refuses as they are).
        for name, off in (('luks-huge-slot-iters', 208 + 4), ('luks-huge-mk-iters', 164)):
            img = bytearray(luks1_image(bytes([0x61]) * 4096 + bytes(4096)))
            img[off:off + 4] = struct.pack('>I', 0xfffffff0)
            put('images', name, bytes([IMAGES['luks']]) + pieces(bytes(img)))
        img('parallels', 'plain', 'cluster_size=4096', 'write -P 0x71 0 4k',
            'write -P 0x72 64k 4k', size='1M')
        # bochs, cloop and dmg: qemu-img cannot write them; the integration
        # tests' fixture generators (checked there against QEMU) make them.
        import sys
        sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
        import test_format_bochs_cloop as bc
        import test_format_dmg as dmg
        raw = bc.pattern(64 * 1024, 5)
        for name, kw in (('v2', {}), ('v1', {'v1': True}),
                         ('sparse', {'present': lambda sector: sector % 3 != 0})):
            put('images', 'bochs-' + name, bytes([IMAGES['bochs']]) +
                bc.bochs_image(raw, **kw)[0])
        put('images', 'cloop-plain', bytes([IMAGES['cloop']]) +
            bc.cloop_image(raw, block=16 * 1024))
        layout = [[('raw', 8), ('zero', 16), ('zlib', 32), ('bzip2', 16)], [('zlib', 16)]]
        put('images', 'dmg-plist', bytes([IMAGES['dmg']]) + dmg.Image(layout).bytes())
        put('images', 'dmg-rsrc', bytes([IMAGES['dmg']]) + dmg.Image(layout, rsrc=True).bytes())


# fuzz-cmdline: an argv, words separated by NUL bytes (argv[0] implied).
CMDLINES = {
    'qsd-basic': ['--blockdev', 'driver=file,node-name=file0,filename=/tmp/disk.qcow2',
                  '--blockdev', 'driver=qcow2,node-name=disk,file=file0',
                  '--nbd-server', 'addr.type=unix,addr.path=/tmp/nbd.sock',
                  '--export', 'type=nbd,id=exp0,node-name=disk,name=disk,writable=on',
                  '--chardev', 'socket,id=qmp0,path=/tmp/qmp.sock,server=on,wait=off',
                  '--monitor', 'chardev=qmp0'],
    'json-forms': ['--blockdev', '{"driver": "null-co", "node-name": "n0", "size": 1048576}',
                   '--export', '{"type": "fuse", "id": "f0", "node-name": "n0", '
                   '"mountpoint": "/tmp/m", "writable": true}',
                   '--object', '{"qom-type": "secret", "id": "sec0", "data": "pw"}',
                   '--monitor', '{"chardev": "qmp0", "pretty": true}'],
    'objects': ['--object', 'secret,id=sec0,data=correct horse',
                '--object', 'throttle-group,id=tg,x-bps-write=268435456',
                '--object', 'iothread,id=io0',
                '--object', 'tls-creds-x509,id=tls0,dir=/etc/pki,endpoint=server',
                '--blockdev', 'driver=throttle,node-name=t0,file=n0,throttle-group=tg'],
    'chardev-tcp': ['--chardev', 'socket,id=c1,host=127.0.0.1,port=4444,server=on,wait=off,nodelay=on',
                    '--chardev', 'socket,id=c2,fd=qmp,server=on',
                    '--chardev', 'socket,id=c3,path=@abstract,abstract=on,tight=off,server=on',
                    '--monitor', 'c1,mode=control,pretty=off'],
    'chardev-refused': ['--chardev', 'socket,id=c,path=/x,server=off,wait=on,reconnect=5,telnet=on'],
    'hardening': ['--daemonize', '--pidfile', '/run/blockd.pid', '--sandbox',
                  'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
                  '--run-with', 'chroot=/var/empty,user=nobody', '--runas', '65534:65534',
                  '--chroot', '/'],
    'log-trace': ['--log', 'level=debug,target=stderr', '-T', 'enable=bd_node_*,file=/tmp/trace.log',
                  '--trace', 'nbd_*', '--metrics', 'addr.type=inet,addr.host=127.0.0.1,addr.port=9100'],
    'nbd-server-inet': ['--nbd-server', 'addr.type=inet,addr.host=::,addr.port=10809,tls-creds=tls0,'
                        'max-connections=16,handshake-max-seconds=5'],
    'help': ['--blockdev', 'qcow2,help', '--export', 'help', '--object', 'qom-type=help',
             '--help', 'drivers'],
    'qcow2-deep': ['--blockdev', 'driver=qcow2,node-name=q,file.driver=file,file.filename=/tmp/a.qcow2,'
                   'backing.driver=raw,backing.file.driver=file,backing.file.filename=/tmp/b.raw,'
                   'encrypt.format=luks,encrypt.key-secret=sec0,cache-size=1M,l2-cache-size=64K,'
                   'discard=unmap,detect-zeroes=on,read-only=on,auto-read-only=off,cache.direct=on,'
                   'cache.no-flush=off',
                   '--blockdev', 'driver=nbd,node-name=r,server.type=unix,server.path=/tmp/s,'
                   'export=disk,reconnect-delay=1',
                   '--export', 'type=nbd,id=e,node-name=q,bitmaps.0=b0,allocation-depth=on,'
                   'iothread=io0,fixed-iothread=on'],
    'errors': ['--blockdev', 'driver=', '--export', 'type=nbd,id=', '--monitor', 'mode=readline',
               'stray'],
    'unknown': ['--frobnicate', '-x', '--blockdev'],
}


def cmdline_seeds():
    for name, words in CMDLINES.items():
        put('cmdline', name, b'\0'.join(w.encode() for w in words))


if __name__ == '__main__':
    qmp_seeds()
    keyval_seeds()
    nbd_seeds()
    qcow2_seeds()
    images_seeds()
    cmdline_seeds()
