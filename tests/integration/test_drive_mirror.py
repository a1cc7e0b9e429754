# SPDX-License-Identifier: MIT
"""drive-mirror (issue 7): the target image is created by the command (the
source's format and size; with sync=top/none its header names the source's
backing file / the source, attached as its backing node at the pivot) or
opened (mode=existing).  Built on test_mirror's Env: a qcow2 source exported
over NBD, a raw reference of every write, qemu-img compare and check.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blockd_test as bt  # noqa: E402
from test_mirror import Env, SIZE, writes  # noqa: E402


def drive_mirror_case(sync, backing):
    """drive-mirror to a new image (format and size from the source);
    after the pivot the export serves it, with the source's backing
    node (top) or the source itself (none) as its backing file."""
    with Env(backing=backing) as e:
        new = e.d.path('new.qcow2')
        e.q.execute('drive-mirror', {'job-id': 'm0', 'device': 'src', 'target': new,
                                     'sync': sync, 'node-name': 'new'})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.nbd_write(writes(16, 30))
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.nbd_write(writes(17, 10))
        e.check_export_reads_ref()
        nodes = {n['node-name']: n for n in e.q.execute('query-named-block-nodes')}
        bt.assert_eq(nodes['new']['drv'], 'qcow2', 'target format')
        e.d.stop()
        info = json.loads(bt.run(['qemu-img', 'info', '--output=json', new]).stdout)
        expected = {'full': None, 'top': e.base if backing else None, 'none': e.src}[sync]
        bt.assert_eq(info.get('backing-filename'), expected, 'backing file of the target')
        bt.assert_eq(info['virtual-size'], SIZE, 'size')
        p = bt.run(['qemu-img', 'compare', '-F', 'raw', new, e.ref], check=False)
        bt.assert_eq(p.returncode, 0, 'qemu-img compare: ' + p.stdout + p.stderr)
        bt.run(['qemu-img', 'check', new])


def test_drive_mirror_full():
    drive_mirror_case('full', False)


def test_drive_mirror_top():
    drive_mirror_case('top', True)


def test_drive_mirror_none():
    drive_mirror_case('none', False)


def test_drive_mirror_existing_and_refusals():
    """mode=existing opens the given image (format probed); QEMU's
    drive-mirror refusals."""
    with Env() as e:
        err = e.q.error('drive-mirror', {'device': 'src', 'target': e.d.path('x.qcow2'),
                                         'sync': 'full', 'replaces': 'src'})
        bt.assert_eq(err['desc'], 'a node-name must be provided when replacing a named node '
                     'of the graph', 'replaces without node-name')
        err = e.q.error('drive-mirror', {'device': 'nope', 'target': e.d.path('x.qcow2'),
                                         'sync': 'full'})
        bt.assert_eq(err['desc'], "Cannot find device='nope' nor node-name='nope'", 'device')
        bt.assert_eq(os.path.exists(e.d.path('x.qcow2')), False, 'no image created')
        dm = {'job-id': 'm0', 'device': 'src', 'sync': 'full'}
        for target, extra in ((e.src, {}), (e.tgt, {}), (e.tgt, {'mode': 'existing'})):
            err = e.q.error('drive-mirror', dict(dm, target=target, **extra))
            # QEMU's hint ("Is another process using...") is for the command
            # line only, not QMP (found by tests/diff).
            bt.assert_eq(err['desc'], 'Failed to get "write" lock', 'image in use')
        err = e.q.error('drive-mirror', dict(dm, target='/nonexistent/x'))
        bt.assert_eq(err['desc'], "Could not create '/nonexistent/x': No such file or directory",
                     'no directory')
        err = e.q.error('drive-mirror', dict(dm, target=e.d.path('n.img'), format='bogus'))
        bt.assert_eq(err['desc'], "Unknown file format 'bogus'", 'format')
        err = e.q.error('drive-mirror', dict(dm, target=e.d.path('n2.img'), mode='existing'))
        bt.assert_eq(err['desc'], "Could not open '%s': No such file or directory"
                     % e.d.path('n2.img'), 'existing image missing')
        e.check_export_reads_ref()
        bt.assert_eq(e.q.execute('query-jobs'), [], 'no job')
        ex = e.d.path('existing.qcow2')
        bt.run(['qemu-img', 'create', '-f', 'qcow2', ex, str(SIZE)])
        e.q.execute('drive-mirror', {'job-id': 'm0', 'device': 'src', 'target': ex,
                                     'sync': 'full', 'mode': 'existing', 'unmap': False})
        e.q.wait_event('BLOCK_JOB_READY', timeout=60)
        e.q.execute('job-complete', {'id': 'm0'})
        ev = e.wait_job()
        bt.assert_eq(ev['data'].get('error'), None, 'completion error')
        e.nbd_write(writes(18, 10))
        e.check_export_reads_ref()
        e.stop_and_check(ex)



def test_drive_mirror_probed_raw_keeps_its_format():
    """A mode=existing target without a format, probed as raw, refuses a
    write that would give it another format's header (QEMU's rule for
    probed raw images): the mirror of a disk whose first sector looks like
    a VHD fails with EPERM and the target still probes as raw; with
    format=raw named, the same mirror works."""
    bt.require_tool('qemu-img')
    MiB = 1 << 20
    with bt.Daemon() as d:
        src = d.path('src.raw')
        bt.make_image(src, 4 * MiB)
        bt.write_at(src, 0, b'conectix' + bytes(504))
        bt.write_at(src, MiB, b'\x5a' * 4096)
        d.args = ['--blockdev', 'driver=file,node-name=f0,filename=%s' % src,
                  '--blockdev', 'driver=raw,node-name=src,file=f0'] + d.args
        d.start()
        q = d.qmp()
        tgt = d.path('tgt.raw')
        bt.make_image(tgt, 4 * MiB)
        q.execute('drive-mirror', {'job-id': 'm1', 'device': 'src', 'target': tgt,
                                   'sync': 'full', 'mode': 'existing'})
        r = bt.run_job(q, 'm1', complete=True, auto_dismiss=True)
        bt.assert_in('Operation not permitted', r.error or '', 'mirror into a probed raw target')
        info = json.loads(bt.run(['qemu-img', 'info', '--output=json', tgt]).stdout)
        bt.assert_eq(info['format'], 'raw', 'target still probes as raw')
        q.execute('drive-mirror', {'job-id': 'm2', 'device': 'src', 'target': tgt,
                                   'sync': 'full', 'mode': 'existing', 'format': 'raw'})
        r = bt.run_job(q, 'm2', complete=True, auto_dismiss=True)
        bt.assert_eq(r.error, None, 'mirror with format=raw')
        bt.run(['qemu-img', 'compare', '-f', 'raw', '-F', 'raw', src, tgt])


if __name__ == '__main__':
    sys.exit(bt.main(bt.tests_of(globals())))
