#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""nbdkit serving blockd's graph through nbdkit-blockd-plugin.so: qcow2 with
a backing file written by qemu-io and checked by qemu-img (check, compare
against a raw image built independently, map), extents as nbdinfo sees them,
nbdkit's filters above the plugin, the blockdev parameter, read-only, trim and
fast zero, configuration errors, --dump-plugin, several writers at once, a
daemonized nbdkit, and the symbols the .so exports.

Skipped without nbdkit and against the reference daemon (BLOCKD_REFERENCE):
qemu-storage-daemon has no nbdkit plugin."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Nbdkit, assert_eq, assert_in, check_image, main,  # noqa: E402
                         nbd_errno, nbdkit_env, nbdkit_plugin, qemu_io, require_nbd,
                         require_tool, run, tests_of, wait_for)

MiB = 1 << 20
SIZE = 64 * MiB
# (qemu-io command) applied both through nbdkit and, independently, to
# the expected raw image.
WRITES = ['write -P 0x22 512k 1M', 'write -P 0x33 1000 3000', 'write -z 8M 2M',
          'write -P 0x44 20M 4097', 'write -P 0x55 63M 1M']


class TmpDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix='blockd-nbdkit-')
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)


def backed_qcow2(tmp):
    """base.raw (0x11 over its first 4 MiB and 30-31 MiB) under top.qcow2;
    returns (top, expected), expected being a raw copy of what the chain
    shows, for the caller to apply the same writes to."""
    base = os.path.join(tmp, 'base.raw')
    top = os.path.join(tmp, 'top.qcow2')
    expected = os.path.join(tmp, 'expected.raw')
    run(['qemu-img', 'create', '-f', 'raw', base, str(SIZE)])
    qemu_io(base, 'write -P 0x11 0 4M', 'write -P 0x11 30M 1M')
    run(['qemu-img', 'create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', top], cwd=tmp)
    shutil.copyfile(base, expected)
    return top, expected


def compare(image, expected, fmt='qcow2'):
    p = run(['qemu-img', 'compare', '-f', fmt, '-F', 'raw', image, expected], check=False)
    if p.returncode != 0:
        raise AssertionError('qemu-img compare %s %s: rc %d\n%s%s'
                             % (image, expected, p.returncode, p.stdout, p.stderr))


def nbdkit_run(params, options=(), check=False):
    """nbdkit run to completion (bad configurations, --dump-plugin)."""
    plugin = nbdkit_plugin()
    return subprocess.run(['nbdkit'] + list(options) + [plugin] + list(params),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          env=nbdkit_env(plugin), check=check)


def qemu_img_map(image):
    return json.loads(run(['qemu-img', 'map', '--output=json', image]).stdout)


def map_at(mapping, offset):
    for e in mapping:
        if e['start'] <= offset < e['start'] + e['length']:
            return e
    raise AssertionError('offset %d not in map %r' % (offset, mapping))


def test_qcow2_backing_writes():
    """The magic key form (nbdkit PLUGIN top.qcow2) opens the backing file;
    qemu-io writes through nbdkit; the overlay passes qemu-img check and
    equals the expected image; the backing file is untouched."""
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        base_before = open(os.path.join(tmp, 'base.raw'), 'rb').read()
        with Nbdkit(tmp, [top]) as srv:
            # The backing file's data shows through before any write.
            qemu_io(srv.uri, 'read -P 0x11 0 4M', 'read -P 0 4M 1M')
            qemu_io(srv.uri, *WRITES)
            qemu_io(srv.uri, 'read -P 0x22 512k 1M', 'read -P 0x11 2M 2M', extra=['-r'])
        qemu_io(expected, *WRITES)
        check_image(top)
        compare(top, expected)
        assert_eq(open(os.path.join(tmp, 'base.raw'), 'rb').read() == base_before, True,
                  'backing file unchanged')
        # The writes landed in the overlay, not in a copy of the chain.
        assert_eq(map_at(qemu_img_map(top), 512 * 1024)['depth'], 0, 'write in overlay')
        assert_eq(map_at(qemu_img_map(top), 3 * MiB)['depth'], 1, 'backing data below')


def _check_map(srv):
    """nbdinfo --map sees data, a zero range and holes."""
    out = run(['nbdinfo', '--map', '--json', srv.uri]).stdout
    extents = json.loads(out)
    covered = sum(e['length'] for e in extents)
    assert_eq(covered, SIZE, 'extents cover the disk')

    def type_at(off):
        for e in extents:
            if e['offset'] <= off < e['offset'] + e['length']:
                return e['type']
        raise AssertionError('no extent at %d: %r' % (off, extents))
    assert_eq(type_at(0), 0, 'data (overlay) at 0')
    assert_eq(type_at(3 * MiB), 0, 'data (backing) at 3M')
    assert_eq(type_at(9 * MiB) & 2, 2, 'zero flag at 9M (write -z)')
    assert_eq(type_at(40 * MiB), 3, 'hole+zero at 40M (nowhere allocated)')


def _map_test(filters=(), params=()):
    require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    with TmpDir() as tmp:
        top, _ = backed_qcow2(tmp)
        qemu_io(top, 'write -P 0x22 0 1M', 'write -z 8M 2M', fmt='qcow2')
        with Nbdkit(tmp, ['image=' + top] + list(params), filters=filters) as srv:
            _check_map(srv)
            # Data through the filter too.
            qemu_io(srv.uri, 'read -P 0x22 0 1M', 'read -P 0x11 1M 3M', 'read -P 0 8M 2M')


def test_map_plain():
    _map_test()


def test_map_under_rate_filter():
    """nbdkit's rate filter above the plugin: extents and data pass."""
    _map_test(filters=['rate'], params=['rate=200M'])


def test_rate_filter_limits_writes():
    """The rate filter really sits above blockd's graph: 4 MiB at 8 Mbit/s
    takes seconds, and lands in the qcow2."""
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        with Nbdkit(tmp, ['image=' + top, 'rate=8M'], filters=['rate']) as srv:
            t0 = time.monotonic()
            qemu_io(srv.uri, 'write -P 0x66 40M 4M')
            elapsed = time.monotonic() - t0
        qemu_io(expected, 'write -P 0x66 40M 4M')
        check_image(top)
        compare(top, expected)
        if elapsed < 2.0:
            raise AssertionError('4 MiB at 8 Mbit/s took only %.2f s' % elapsed)


def test_blockdev_json_raw_over_file():
    """blockdev='{json}': raw over file, written and compared."""
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        img = os.path.join(tmp, 'disk.raw')
        expected = os.path.join(tmp, 'expected.raw')
        run(['qemu-img', 'create', '-f', 'raw', img, str(SIZE)])
        shutil.copyfile(img, expected)
        bd = json.dumps({'driver': 'raw', 'node-name': 'disk',
                         'file': {'driver': 'file', 'filename': img}})
        with Nbdkit(tmp, ['blockdev=' + bd]) as srv:
            qemu_io(srv.uri, *WRITES)
        qemu_io(expected, *WRITES)
        compare(img, expected, fmt='raw')


def test_blockdev_json_qcow2_explicit_backing():
    """blockdev JSON with the backing node spelled out (qcow2 over file,
    backing raw over file), and the keyval form of --blockdev."""
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        base = os.path.join(tmp, 'base.raw')
        bd = json.dumps({'driver': 'qcow2', 'file': {'driver': 'file', 'filename': top},
                         'backing': {'driver': 'raw',
                                     'file': {'driver': 'file', 'filename': base}}})
        with Nbdkit(tmp, ['blockdev=' + bd]) as srv:
            qemu_io(srv.uri, 'read -P 0x11 0 4M', *WRITES)
        qemu_io(expected, *WRITES)
        check_image(top)
        compare(top, expected)
        kv = 'driver=qcow2,file.driver=file,file.filename=%s' % top
        with Nbdkit(tmp, ['blockdev=' + kv], options=['-r']) as srv:
            qemu_io(srv.uri, 'read -P 0x22 512k 1M', 'read -P 0x11 2M 2M', extra=['-r'])


def test_blockdev_throttle_group():
    """object=throttle-group defines a group for a throttle node of the
    blockdev graph: four 1 MiB writes at 1 MiB/s take about 3 s (the
    first goes at once), and land in the qcow2 below."""
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        bd = json.dumps({'driver': 'throttle', 'throttle-group': 'tg0',
                         'file': {'driver': 'qcow2',
                                  'file': {'driver': 'file', 'filename': top}}})
        writes = ['write -P 0x%x %dM 1M' % (0x70 + i, 40 + i) for i in range(4)]
        with Nbdkit(tmp, ['object=throttle-group,id=tg0,limits.bps-write=1048576',
                          'blockdev=' + bd]) as srv:
            t0 = time.monotonic()
            qemu_io(srv.uri, *writes)
            elapsed = time.monotonic() - t0
            # Reads are not limited.
            t0 = time.monotonic()
            qemu_io(srv.uri, 'read -P 0x11 0 4M', 'read -P 0x70 40M 1M')
            read_time = time.monotonic() - t0
        qemu_io(expected, *writes)
        check_image(top)
        compare(top, expected)
        if elapsed < 2.5:
            raise AssertionError('4 x 1 MiB at 1 MiB/s took only %.2f s' % elapsed)
        if read_time > 2.0:
            raise AssertionError('unthrottled reads took %.2f s' % read_time)


def test_readonly_refuses_writes():
    """nbdkit -r: the client sees a read-only export, and writes, zeroes
    and trims sent anyway fail with EPERM/EROFS; the image is unchanged."""
    nbd = require_nbd()
    require_tool('qemu-img')
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        before = open(top, 'rb').read()
        with Nbdkit(tmp, [top], options=['-r']) as srv:
            h = nbd.NBD()
            h.connect_uri(srv.uri)
            try:
                assert_eq(h.is_read_only(), True, 'read-only flag')
                assert_eq(h.pread(4096, 0), b'\x11' * 4096, 'read')
                h.set_strict_mode(0)   # send them; let the server refuse
                for fn, args in ((h.pwrite, (b'x' * 4096, 0)), (h.zero, (4096, 0)),
                                 (h.trim, (4096, 0))):
                    err = nbd_errno(fn, *args)
                    if err not in (1, 30):   # EPERM, EROFS
                        raise AssertionError('%s: errno %r' % (fn.__name__, err))
            finally:
                h.shutdown()
        assert_eq(open(top, 'rb').read() == before, True, 'image unchanged')
        compare(top, expected)


def test_trim_and_fast_zero():
    """trim and write-zeroes (FAST_ZERO, with and without MAY_TRIM) show in
    qemu-img map as unallocated or zero clusters, and the data matches."""
    nbd = require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        img = os.path.join(tmp, 'disk.qcow2')
        expected = os.path.join(tmp, 'expected.raw')
        run(['qemu-img', 'create', '-f', 'qcow2', img, str(SIZE)])
        qemu_io(img, 'write -P 0x77 0 16M', fmt='qcow2')
        run(['qemu-img', 'create', '-f', 'raw', expected, str(SIZE)])
        qemu_io(expected, 'write -P 0x77 0 16M', 'write -z 2M 1M', 'write -z 4M 1M',
                'write -z 6M 1M')
        with Nbdkit(tmp, [img]) as srv:
            h = nbd.NBD()
            h.connect_uri(srv.uri)
            try:
                assert_eq((h.can_trim(), h.can_zero(), h.can_fast_zero(), h.can_fua(),
                           h.can_multi_conn(), h.can_cache(), h.can_flush()),
                          (True,) * 7, 'flags')
                h.trim(MiB, 2 * MiB)
                h.zero(MiB, 4 * MiB, nbd.CMD_FLAG_FAST_ZERO)
                h.zero(MiB, 6 * MiB, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
                h.cache(MiB, 0)
                h.flush()
            finally:
                h.shutdown()
        check_image(img)
        compare(img, expected)
        m = qemu_img_map(img)
        assert_eq(map_at(m, 2 * MiB)['data'], False, 'trimmed range not data')
        assert_eq(map_at(m, 2 * MiB)['zero'], True, 'trimmed range reads zero')
        for off in (4 * MiB, 6 * MiB):
            assert_eq((map_at(m, off)['data'], map_at(m, off)['zero']), (False, True),
                      'zeroed range at %d' % off)
        assert_eq(map_at(m, 5 * MiB)['data'], True, 'data between stays data')


def test_fast_zero_unsupported_fails_fast():
    """A qcow2 v2 (compat=0.10) image has no zero clusters: FAST_ZERO fails
    at once with ENOTSUP and leaves the data, while a zero without it
    falls back to writing zeroes."""
    nbd = require_nbd()
    require_tool('qemu-img', 'qemu-io')
    with TmpDir() as tmp:
        img = os.path.join(tmp, 'v2.qcow2')
        run(['qemu-img', 'create', '-f', 'qcow2', '-o', 'compat=0.10', img, str(SIZE)])
        qemu_io(img, 'write -P 0x99 0 4M', fmt='qcow2')
        with Nbdkit(tmp, [img]) as srv:
            h = nbd.NBD()
            h.connect_uri(srv.uri)
            try:
                assert_eq(h.can_fast_zero(), True, 'fast zero offered')
                err = nbd_errno(h.zero, MiB, MiB, nbd.CMD_FLAG_FAST_ZERO)
                assert_in(err, (95,), 'fast zero errno (EOPNOTSUPP)')
                assert_eq(h.pread(MiB, MiB), b'\x99' * MiB, 'untouched after ENOTSUP')
                h.zero(MiB, MiB)
                assert_eq(h.pread(MiB, MiB), bytes(MiB), 'zeroed by the fallback')
                assert_eq(h.pread(MiB, 2 * MiB), b'\x99' * MiB, 'next MiB kept')
            finally:
                h.shutdown()
        check_image(img)


def test_bad_config():
    """Configuration errors: nbdkit's own error lines, nonzero exit."""
    with TmpDir() as tmp:
        raw = os.path.join(tmp, 'disk.raw')
        with open(raw, 'wb') as f:
            f.truncate(MiB)
        cases = [
            ([], 'blockd: image or blockdev parameter is required'),
            (['blockdev={"driver": "raw", "file": {'], 'blockd: blockdev: JSON parse error'),
            (['blockdev={"driver": "nope"}'],
             "blockd: blockdev: Parameter 'driver' does not accept value 'nope'"),
            (['blockdev={"driver": "raw"}'], "blockd: blockdev: Parameter 'file' is missing"),
            (['blockdev={"driver": "raw", "file": {"driver": "file", "filename": "%s"}, '
              '"bogus": 1}' % raw], "blockd: blockdev: Parameter 'bogus' is unexpected"),
            (['image=' + os.path.join(tmp, 'missing.qcow2')],
             "blockd: Could not open '%s'" % os.path.join(tmp, 'missing.qcow2')),
            (['image=' + raw, 'format=nope'],
             "blockd: image: Parameter 'driver' does not accept value 'nope'"),
            (['image=' + raw, 'blockdev={"driver": "raw"}'],
             'blockd: give either image or blockdev, not both'),
            (['image=' + raw, 'colour=blue'], "blockd: unknown parameter 'colour'"),
            (['image=' + raw, 'image=' + raw], "blockd: parameter 'image' given more than once"),
            (['blockdev={"driver": "throttle", "throttle-group": "nope", "file": {'
              '"driver": "file", "filename": "%s"}}' % raw],
             "blockd: Throttle group 'nope' does not exist"),
            (['object=secret,id=s0,data=x', 'image=' + raw],
             "object type 'secret' is not supported here (only throttle-group)"),
            (['object=throttle-group,id=t,limits.iops-total=x', 'image=' + raw],
             "blockd: object 'throttle-group,id=t,limits.iops-total=x': "
             "Parameter 'limits.iops-total' expects integer"),
        ]
        for params, msg in cases:
            p = nbdkit_run(params, options=['-U', os.path.join(tmp, 'never.sock'), '-f'])
            if p.returncode == 0:
                raise AssertionError('nbdkit %r exited 0' % params)
            assert_in(msg, p.stderr, 'stderr of %r' % params)
            assert_in('error', p.stderr, 'nbdkit error line for %r' % params)


def test_dump_plugin():
    """nbdkit --dump-plugin shows the plugin's fields."""
    p = nbdkit_run([], options=['--dump-plugin'], check=True)
    fields = dict(line.split('=', 1) for line in p.stdout.splitlines() if '=' in line)
    for key, val in (('name', 'blockd'), ('thread_model', 'parallel'),
                     ('max_thread_model', 'parallel'), ('magic_config_key', 'image'),
                     ('has_extents', '1'), ('has_can_fast_zero', '1'),
                     ('has_can_multi_conn', '1'), ('has_after_fork', '1'),
                     ('has_cache', '1')):
        assert_eq(fields.get(key), val, key)
    assert_in('qcow2', fields.get('blockd_drivers', '').split(','), 'drivers listed')


def test_concurrent_writers():
    """nbdcopy with 4 connections and 8 requests each, then four libnbd
    writers at once on separate connections: the qcow2 overlay equals the
    expected image and passes qemu-img check."""
    nbd = require_nbd()
    require_tool('nbdcopy', 'qemu-img')
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        src = os.path.join(tmp, 'src.raw')
        rnd = random.Random(15)
        data = bytearray(rnd.randbytes(SIZE // 2))
        data[MiB:3 * MiB] = bytes(2 * MiB)   # a zero run nbdcopy may zero
        with open(src, 'wb') as f:
            f.write(data)
        with open(expected, 'r+b') as f:
            f.write(data)
        chunks = []
        with Nbdkit(tmp, [top]) as srv:
            run(['nbdcopy', '--connections=4', '--requests=8', '--request-size=65536',
                 src, srv.uri], timeout=120)
            # Then writers on their own connections, interleaved 64 KiB
            # stripes of the second half, with FUA on some.
            import threading
            errors = []

            def writer(i):
                try:
                    h = nbd.NBD()
                    h.connect_uri(srv.uri)
                    r = random.Random(i)
                    for k in range(i, 256, 4):
                        off = SIZE // 2 + k * 128 * 1024
                        buf = r.randbytes(128 * 1024)
                        h.pwrite(buf, off, nbd.CMD_FLAG_FUA if k % 3 == 0 else 0)
                        chunks.append((off, buf))
                    h.flush()
                    h.shutdown()
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
            threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        with open(expected, 'r+b') as f:
            for off, buf in chunks:
                f.seek(off)
                f.write(buf)
        check_image(top)
        compare(top, expected)


def test_daemonized():
    """Without -f nbdkit forks into the background after the graph is open
    (errors before that reach the caller): the forked server serves and
    writes; the pidfile's process ends on SIGTERM with the image clean."""
    require_tool('qemu-img', 'qemu-io')
    plugin = nbdkit_plugin()
    with TmpDir() as tmp:
        top, expected = backed_qcow2(tmp)
        sock = os.path.join(tmp, 'd.sock')
        pidfile = os.path.join(tmp, 'nbdkit.pid')
        subprocess.run(['nbdkit', '-U', sock, '-P', pidfile, plugin, top], check=True,
                       timeout=30, env=nbdkit_env(plugin))
        wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                 what='pidfile')
        pid = int(open(pidfile).read())
        try:
            qemu_io('nbd+unix:///?socket=' + sock, *WRITES)
        finally:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not os.path.exists('/proc/%d' % pid), timeout=30,
                     what='nbdkit exit')
        qemu_io(expected, *WRITES)
        check_image(top)
        compare(top, expected)


def _processes_naming(word):
    """The pids whose command line has 'word' in an argument."""
    pids = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % d, 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if any(word.encode() in a for a in args):
            pids.append(int(d))
    return pids


def test_nbd_node_through_the_plugin():
    """blockd's nbd driver inside nbdkit -f: another daemon's export served
    again, writes landing on its image.  Without -f the forked server
    refuses to serve (the driver's connection threads stay in the
    parent) and says why (seen with -v, which keeps its stderr)."""
    import blockd_test as bt
    require_tool('qemu-img', 'qemu-io')
    plugin = nbdkit_plugin()
    with TmpDir() as tmp:
        img = os.path.join(tmp, 'remote.raw')
        run(['qemu-img', 'create', '-f', 'raw', img, str(16 * MiB)])
        d = bt.start_exporting(img, writable=True)
        try:
            bd = json.dumps({'driver': 'nbd', 'node-name': 'remote', 'export': 'disk',
                             'server': {'type': 'unix', 'path': d.nbd_sock}})
            with Nbdkit(tmp, ['blockdev=' + bd]) as srv:
                qemu_io(srv.uri, 'write -P 0x42 1M 1M', 'read -P 0x42 1M 1M')
            log = os.path.join(tmp, 'bg.log')
            sock = os.path.join(tmp, 'bg.sock')
            with open(log, 'w') as f:
                subprocess.run(['nbdkit', '-v', '--log=stderr', '-U', sock, plugin,
                                'blockdev=' + bd],
                               stdout=f, stderr=f, timeout=30, env=nbdkit_env(plugin))
            wait_for(lambda: 'cannot go to the background' in open(log).read(),
                     what='the forked server\'s refusal')
            # The refusing server exits.  Under ASan it can hang in exit:
            # the fork kept the sanitizer allocator's lock as a parent
            # thread held it, and librados' static destructors free.
            if os.environ.get('BLOCKD_ASAN_PRELOAD_SHIM'):
                for pid in _processes_naming(sock):
                    os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _processes_naming(sock), timeout=30,
                     what='the refusing server to exit')
        finally:
            d.stop()
            d.cleanup()
        qemu_io(img, 'read -P 0x42 1M 1M', 'read -P 0 0 1M')


def test_exports_only_plugin_init():
    """Two copies of the .so in one process must not interpose each other's
    globals: the only dynamic symbol it defines is plugin_init."""
    require_tool('nm')
    plugin = nbdkit_plugin()
    out = run(['nm', '-D', '--defined-only', plugin]).stdout.split()
    names = [w for w in out if not all(c in '0123456789abcdef' for c in w) and len(w) > 1]
    assert_eq(names, ['plugin_init'], 'defined dynamic symbols')


TWO_COPIES = r"""
import ctypes, os, sys
RTLD_LAZY, RTLD_GLOBAL = 1, 0x100
ptrs = []
for so in sys.argv[1:]:
    # As nbdkit loads plugins: global scope (nbdkit uses RTLD_GLOBAL), and
    # lazily here because nbdkit's own functions are not in this process.
    lib = ctypes.CDLL(so, mode=RTLD_LAZY | RTLD_GLOBAL)
    lib.plugin_init.restype = ctypes.c_void_p
    p = lib.plugin_init()
    # struct nbdkit_plugin: u64 size, int api, int model, 4 strings, then load.
    load = ctypes.CFUNCTYPE(None).from_address(p + 48)
    config = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p,
                              ctypes.c_char_p).from_address(p + 64)
    name = ctypes.c_char_p.from_address(p + 16).value
    load()      # claims the main thread and registers the drivers
    # Each copy has its own configuration: were this copy's symbols bound
    # to the first copy's, 'format' would be given twice and the error
    # path would call nbdkit_error, which this process lacks.
    assert config(b'format', b'raw') == 0, 'config failed'
    ptrs.append(p)
    print(name.decode(), hex(p))
assert ptrs[0] != ptrs[1], 'both copies returned the same plugin struct'
print('ok')
"""


def test_two_copies_in_one_process():
    """Two copies of the .so loaded with global scope into one process each
    keep their own state: each copy's .load registers the drivers in its
    own registry, and each takes its own 'format' parameter (were the
    second copy's symbols bound to the first copy's, it would find
    'format' already given)."""
    plugin = nbdkit_plugin()
    with TmpDir() as tmp:
        copies = [os.path.join(tmp, n) for n in ('a.so', 'b.so')]
        for c in copies:
            shutil.copyfile(plugin, c)
        env = nbdkit_env(plugin)
        if 'LD_PRELOAD' in env:
            # ASan build: what Python leaves allocated at exit is not ours.
            env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + ':detect_leaks=0'
        p = subprocess.run(['/usr/bin/python3', '-c', TWO_COPIES] + copies,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60, env=env)
        if p.returncode != 0 or not p.stdout.endswith('ok\n'):
            raise AssertionError('two copies: rc %d\n%s%s' % (p.returncode, p.stdout, p.stderr))


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
