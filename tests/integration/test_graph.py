#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Graph and export management over QMP: blockdev-del refusals with QEMU's
messages, block-export-del safe/hard with a client connected,
BLOCK_EXPORT_DELETED, query-named-block-nodes and query-block-exports."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, main, make_image, require_nbd,  # noqa: E402
                         run, start_daemon, tests_of)


def _qmp_daemon():
    return start_daemon()


def _add_raw(q, img, fmt='r', proto='f'):
    q.execute('blockdev-add', {'driver': 'file', 'node-name': proto, 'filename': img})
    q.execute('blockdev-add', {'driver': 'raw', 'node-name': fmt, 'file': proto})


def _export(q, d, node='r', id='e', name='disk', writable=True):
    q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
    q.execute('block-export-add', {'type': 'nbd', 'id': id, 'node-name': node, 'name': name,
                                   'writable': writable})


def test_blockdev_del_not_found():
    with _qmp_daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-del', {'node-name': 'zz'})
        assert_eq(e, {'class': 'GenericError', 'desc': "Failed to find node with node-name='zz'"}, 'error')


def test_blockdev_del_file_child_in_use():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        e = q.error('blockdev-del', {'node-name': 'f'})
        assert_eq(e, {'class': 'GenericError', 'desc': 'Block device f is in use'}, 'error')
        assert_eq(sorted(n['node-name'] for n in q.execute('query-named-block-nodes')), ['f', 'r'],
                  'nodes unchanged after refusal')
        assert_eq(q.execute('blockdev-del', {'node-name': 'r'}), {}, 'delete parent first')
        assert_eq(q.execute('blockdev-del', {'node-name': 'f'}), {}, 'then the child')
        assert_eq(q.execute('query-named-block-nodes'), [], 'no node left')


def test_blockdev_del_exported_node_refused():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d)
        e = q.error('blockdev-del', {'node-name': 'r'})
        assert_eq(e, {'class': 'GenericError', 'desc': 'Node r is in use'}, 'error')
        assert_eq(len(q.execute('query-block-exports')), 1, 'export still there')


def test_blockdev_del_implicit_child_refused():
    """A node created inline as a child cannot be deleted on its own."""
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': img, 'node-name': 'inl'}})
        e = q.error('blockdev-del', {'node-name': 'inl'})
        assert_eq(e['desc'], "Node inl is not owned by the monitor", 'desc')
        assert_eq(q.execute('blockdev-del', {'node-name': 'r'}), {}, 'delete owner')
        assert_eq(q.execute('query-named-block-nodes'), [], 'inline child went with its parent')


def test_export_del_then_blockdev_del():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d)
        assert_eq(q.execute('block-export-del', {'id': 'e'}), {}, 'block-export-del')
        ev = q.wait_event('BLOCK_EXPORT_DELETED')
        assert_eq(ev['data'], {'id': 'e'}, 'event data')
        assert_eq(q.execute('query-block-exports'), [], 'no export left')
        assert_eq(q.execute('blockdev-del', {'node-name': 'r'}), {}, 'blockdev-del after export gone')
        assert_eq(q.execute('blockdev-del', {'node-name': 'f'}), {}, 'blockdev-del file')


def test_export_del_not_found():
    with _qmp_daemon() as d:
        q = d.qmp()
        e = q.error('block-export-del', {'id': 'nope'})
        assert_eq(e, {'class': 'GenericError', 'desc': "Export 'nope' is not found"}, 'error')


def test_export_del_safe_with_client_refused():
    nbd = require_nbd()
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20, pattern=0x5a)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d)
        h = nbd.NBD()
        h.connect_uri(d.uri())
        e = q.error('block-export-del', {'id': 'e'})
        assert_eq(e['desc'], "export 'e' still in use", 'default mode is safe')
        e = q.error('block-export-del', {'id': 'e', 'mode': 'safe'})
        assert_eq(e['desc'], "export 'e' still in use", 'mode safe')
        assert_eq(h.pread(4096, 0), b'\x5a' * 4096, 'client still served after refused delete')
        exports = q.execute('query-block-exports')
        assert_eq([(x['id'], x['shutting-down']) for x in exports], [('e', False)], 'export intact')
        h.shutdown()


def test_export_del_hard_with_client():
    nbd = require_nbd()
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20, pattern=0x5a)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d)
        h = nbd.NBD()
        h.connect_uri(d.uri())
        assert_eq(h.pread(512, 0), b'\x5a' * 512, 'read before delete')
        assert_eq(q.execute('block-export-del', {'id': 'e', 'mode': 'hard'}), {}, 'hard delete')
        ev = q.wait_event('BLOCK_EXPORT_DELETED')
        assert_eq(ev['data'], {'id': 'e'}, 'event data')
        try:
            h.pread(512, 0)
        except nbd.Error:
            pass
        else:
            raise AssertionError('client was not disconnected by a hard delete')
        assert_eq(q.execute('query-block-exports'), [], 'no export left')
        assert_eq(q.execute('blockdev-del', {'node-name': 'r'}), {}, 'node free after hard delete')


def test_blockdev_del_while_client_connected():
    """Refused while exported with a client on it; the client keeps working."""
    nbd = require_nbd()
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20, pattern=0x11)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d)
        h = nbd.NBD()
        h.connect_uri(d.uri())
        e = q.error('blockdev-del', {'node-name': 'r'})
        assert_eq(e['desc'], 'Node r is in use', 'desc')
        h.pwrite(b'\x22' * 4096, 8192)
        assert_eq(h.pread(4096, 8192), b'\x22' * 4096, 'client I/O after refused delete')
        h.shutdown()


def test_export_name_defaults_to_node_name():
    require = require_nbd()
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'r'})
        h = require.NBD()
        h.connect_uri(d.uri('r'))
        assert_eq(h.get_size(), 1 << 20, 'export named after the node')
        h.shutdown()


def test_query_named_block_nodes_fields():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 3 << 20)
        q = d.qmp()
        _add_raw(q, img)
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        assert_eq(sorted(nodes), ['f', 'r'], 'node names')
        for name, drv, fmt in (('r', 'raw', 'raw'), ('f', 'file', 'file')):
            n = nodes[name]
            assert_eq(n['drv'], drv, '%s drv' % name)
            assert_eq(n['file'], img, '%s file' % name)
            assert_eq(n['ro'], False, '%s ro' % name)
            assert_eq(n['encrypted'], False, '%s encrypted' % name)
            assert_eq(n['backing_file_depth'], 0, '%s backing_file_depth' % name)
            assert_eq(n['detect_zeroes'], 'off', '%s detect_zeroes' % name)
            assert_eq(n['cache'], {'writeback': True, 'direct': False, 'no-flush': False},
                      '%s cache' % name)
            for k in ('iops', 'iops_rd', 'iops_wr', 'bps', 'bps_rd', 'bps_wr', 'write_threshold'):
                assert_eq(n[k], 0, '%s %s' % (name, k))
            im = n['image']
            assert_eq(im['virtual-size'], 3 << 20, '%s image.virtual-size' % name)
            assert_eq(im['filename'], img, '%s image.filename' % name)
            assert_eq(im['format'], fmt, '%s image.format' % name)
            assert_eq(isinstance(im['actual-size'], int), True, '%s image.actual-size' % name)
            assert_eq(im['dirty-flag'], False, '%s image.dirty-flag' % name)


def test_query_named_block_nodes_flat():
    """flat=true omits the nested backing-image chain; fields otherwise equal."""
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        flat = q.execute('query-named-block-nodes', {'flat': True})
        full = q.execute('query-named-block-nodes', {'flat': False})
        assert_eq(sorted(n['node-name'] for n in flat), ['f', 'r'], 'flat node names')
        for n in flat:
            assert_eq('backing-image' in n['image'], False, 'no backing-image when flat')
        assert_eq(len(full), len(flat), 'same node count')


def test_flat_backing_file_depth():
    """flat=true shows no backing images, and backing_file_depth counts
    the ones shown: 0, as QEMU (found by tests/diff)."""
    with _qmp_daemon() as d:
        base = make_image(d.path('base.raw'), 1 << 20)
        top = d.path('top.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', top, '1M'])
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        depth = {n['node-name']: n['backing_file_depth']
                 for n in q.execute('query-named-block-nodes')}
        flat = {n['node-name']: n['backing_file_depth']
                for n in q.execute('query-named-block-nodes', {'flat': True})}
        assert_eq(depth['top'], 1, 'depth of top')
        assert_eq(flat['top'], 0, 'depth of top when flat')


def test_backing_info_through_filters_and_explicit_backing():
    """QEMU's view: the backing file name as the header records it (with
    the full name beside it) whatever backing node is attached, none for
    a filter; a filter's filtered child counts as a backing image and
    shows the image's cluster size (found by tests/diff)."""
    with _qmp_daemon() as d:
        base = d.path('base.qcow2')
        top = d.path('top.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
             top, '1M'])
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                                   'file': {'driver': 'file', 'filename': base}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'base',
                                   'file': {'driver': 'file', 'filename': top}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'alone', 'backing': None,
                                   'read-only': True,
                                   'file': {'driver': 'file', 'filename': top,
                                            'locking': 'off'}})
        q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg'})
        q.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'thr',
                                   'throttle-group': 'tg', 'file': 'top'})
        nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
        for name in ('top', 'alone'):
            image = nodes[name]['image']
            assert_eq(image['backing-filename'], 'base.qcow2', '%s backing-filename' % name)
            assert_eq(image['full-backing-filename'], base, '%s full-backing-filename' % name)
        assert_eq(nodes['top']['backing_file'], base, 'backing_file of top')
        assert_eq('backing_file' in nodes['alone'], False, 'no backing node, no backing_file')
        thr = nodes['thr']
        assert_eq(thr['backing_file_depth'], 2, 'depth through the filter')
        assert_eq('backing_file' in thr, False, 'a filter has no backing file')
        assert_eq('backing-filename' in thr['image'], False, 'nor a backing-filename')
        assert_eq(thr['image']['cluster-size'], 65536, "the filtered image's cluster size")
        assert_eq(thr['image']['backing-image']['format'], 'qcow2', 'the filtered image below')
        assert_eq(thr['image']['backing-image']['backing-image']['filename'], base,
                  'then its backing image')


def test_keyval_empty_backing_means_none():
    """--blockdev ...,backing= (an empty string: all keyval can say) opens
    no backing node, as qemu-storage-daemon does (with its deprecation
    warning); it is not a reference to a node named ''."""
    d = Daemon()
    with d:
        base = d.path('base.qcow2')
        top = d.path('top.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
             top, '1M'])
        d.args += ['--blockdev', 'driver=qcow2,node-name=top,backing=,file.driver=file,'
                   'file.filename=%s' % top]
        d.start()
        nodes = {n['node-name']: n for n in d.qmp().execute('query-named-block-nodes')}
        assert_eq(nodes['top']['backing_file_depth'], 0, 'no backing node')
        assert_eq(len(nodes), 2, 'nodes: the image and its file')
        assert_in('use "backing": null instead', d.stderr(), 'the warning')


def test_in_use_and_root_checks():
    """QEMU's op blockers and root checks (found by tests/diff):
    block_resize of a backing node or of a node a job holds is refused
    ('Device ... is in use', "(null)" when only node-name is given);
    change-backing-file and internal snapshots want a root node, which a
    node under another node or held by a job is not."""
    with _qmp_daemon() as d:
        base = d.path('base.qcow2')
        top = d.path('top.qcow2')
        tgt = d.path('tgt.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', tgt, '1M'])
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                                   'file': {'driver': 'file', 'filename': base}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'base',
                                   'file': {'driver': 'file', 'node-name': 'top-file',
                                            'filename': top}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                                   'file': {'driver': 'file', 'filename': tgt}})
        e = q.error('block_resize', {'node-name': 'base', 'size': 2 << 20})
        assert_eq(e['desc'], "Device '(null)' is in use", 'resize of a backing node')
        e = q.error('change-backing-file', {'device': 'top-file', 'image-node-name': 'top',
                                            'backing-file': 'x'})
        assert_eq(e['desc'], 'Need a root block node', 'change-backing-file under a node')
        q.execute('blockdev-mirror', {'job-id': 'm', 'device': 'top', 'target': 'tgt',
                                      'sync': 'top'})
        q.wait_event('BLOCK_JOB_READY', 60)
        e = q.error('block_resize', {'node-name': 'tgt', 'size': 2 << 20})
        assert_eq(e['desc'], "Device '(null)' is in use", 'resize of a mirror target')
        for cmd, args in (('blockdev-snapshot-internal-sync', {'device': 'tgt', 'name': 's'}),
                          ('blockdev-snapshot-delete-internal-sync',
                           {'device': 'tgt', 'name': 's'}),
                          ('change-backing-file', {'device': 'top', 'image-node-name': 'top',
                                                   'backing-file': 'x'}),
                          ('blockdev-mirror', {'job-id': 'm2', 'device': 'tgt',
                                               'target': 'base', 'sync': 'full'})):
            e = q.error(cmd, args)
            assert_eq(e['desc'], 'Need a root block node', '%s under a job' % cmd)
        q.execute('block-job-cancel', {'device': 'm'})
        q.wait_event('BLOCK_JOB_COMPLETED', 60)
        q.execute('blockdev-snapshot-internal-sync', {'device': 'tgt', 'name': 's'})


def test_new_image_with_backing_needs_a_format_for_it():
    """drive-backup/drive-mirror sync=top create their target with the
    source's backing file: a raw target is refused before any file is
    made, with QEMU's bdrv_img_create text (found by tests/diff)."""
    with _qmp_daemon() as d:
        base = d.path('base.qcow2')
        top = d.path('top.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '1M'])
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        for cmd in ('drive-backup', 'drive-mirror'):
            target = d.path('%s.raw' % cmd)
            e = q.error(cmd, {'job-id': 'j', 'device': 'top', 'target': target,
                              'format': 'raw', 'sync': 'top'})
            assert_eq(e['desc'], "Backing file not supported for file format 'raw'", cmd)
            assert_eq(os.path.exists(target), False, '%s: no target left' % cmd)


def test_change_backing_file_under_backup_filter():
    """change-backing-file while a backup's copy-before-write filter sits
    between the image and its backing node writes the backing image's
    format, not the filter's name, which would leave a header QEMU cannot
    open (found by tests/diff)."""
    with _qmp_daemon() as d:
        base = d.path('base.qcow2')
        top = d.path('top.qcow2')
        tgt = d.path('tgt.qcow2')
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', base, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '1M'])
        run(['qemu-img', 'create', '-q', '-f', 'qcow2', tgt, '1M'])
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                                   'file': {'driver': 'file', 'filename': base}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'base',
                                   'file': {'driver': 'file', 'filename': top}})
        q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                                   'file': {'driver': 'file', 'filename': tgt}})
        q.execute('blockdev-backup', {'job-id': 'b', 'device': 'base', 'target': 'tgt',
                                      'sync': 'full', 'auto-finalize': False})
        q.wait_event('BLOCK_JOB_PENDING', 60)
        q.execute('change-backing-file', {'device': 'top', 'image-node-name': 'top',
                                          'backing-file': base})
        q.execute('job-finalize', {'id': 'b'})
        q.wait_event('BLOCK_JOB_COMPLETED', 60)
        q.execute('blockdev-del', {'node-name': 'top'})
        info = json.loads(run(['qemu-img', 'info', '-U', '--output=json', top]).stdout)
        assert_eq(info.get('backing-filename-format'), 'qcow2', 'backing format written')
        assert_eq(info.get('backing-filename'), base, 'backing file written')


def test_file_empty_filename():
    """An empty file name is refused as QEMU's file driver refuses it."""
    with _qmp_daemon() as d:
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': ''})
        assert_eq(e['desc'], "The 'file' block driver requires a file name", 'empty filename')
        d.assert_alive()


def test_resize_beyond_max_length():
    """block_resize past QEMU's largest image size (INT64_MAX aligned down
    to 1 GiB) is refused with QEMU's text before touching the file."""
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        for size in ((1 << 63) - 1, (1 << 63) - (1 << 30) + 1):
            e = q.error('block_resize', {'node-name': 'r', 'size': size})
            assert_eq(e['desc'], 'offset(%d) exceeds maximum(9223372035781033984)' % size,
                      'resize to %d' % size)
        q.execute('block_resize', {'node-name': 'r', 'size': 2 << 20})
        assert_eq(os.path.getsize(img), 2 << 20, 'resized')
        # The resize permission comes first, then read-only (QEMU's order;
        # found by tests/diff): a read-only node whose file another user
        # keeps from resizing reports that conflict.
        _export(q, d, node='f', writable=False)
        q.execute('blockdev-reopen', {'options': [{'driver': 'raw', 'node-name': 'r',
                                                   'file': 'f', 'read-only': True}]})
        e = q.error('block_resize', {'node-name': 'r', 'size': 4 << 20})
        assert_eq(e['desc'], "Permission conflict on node 'f': permissions 'resize' are both "
                             "required by node 'r' (uses node 'f' as 'file' child) and "
                             "unshared by an unnamed block device (uses node 'f' as 'root' "
                             "child).", 'conflict before read-only')
        q.execute('block-export-del', {'id': 'e'})
        q.wait_event('BLOCK_EXPORT_DELETED')
        e = q.error('block_resize', {'node-name': 'r', 'size': 4 << 20})
        assert_eq(e['desc'], 'Image is read-only', 'then read-only')


def test_query_named_block_nodes_read_only_and_options():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img,
                                   'read-only': True, 'cache': {'direct': False, 'no-flush': True},
                                   'detect-zeroes': 'on'})
        n = q.execute('query-named-block-nodes')[0]
        assert_eq(n['ro'], True, 'ro')
        assert_eq(n['cache']['no-flush'], True, 'cache.no-flush')
        assert_eq(n['detect_zeroes'], 'on', 'detect_zeroes')


def test_detect_zeroes_unmap_needs_discard_unmap():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        e = q.error('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img,
                                     'detect-zeroes': 'unmap'})
        assert_eq(e['desc'], 'setting detect-zeroes to unmap is not allowed without setting '
                             'discard operation to unmap', 'desc')
        q.execute('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img,
                                   'detect-zeroes': 'unmap', 'discard': 'unmap'})
        assert_eq(q.execute('query-named-block-nodes')[0]['detect_zeroes'], 'unmap', 'detect_zeroes')


def test_generated_node_names():
    """Unnamed inline children get generated names ('#block' + number)."""
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                   'file': {'driver': 'file', 'filename': img}})
        names = [n['node-name'] for n in q.execute('query-named-block-nodes')]
        assert_in('r', names, 'names')
        others = [n for n in names if n != 'r']
        assert_eq(len(others), 1, 'one generated node')
        assert_eq(others[0].startswith('#block'), True, 'generated name %r' % others[0])


def test_query_block_exports_shape():
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d, writable=False)
        assert_eq(q.execute('query-block-exports'),
                  [{'type': 'nbd', 'id': 'e', 'node-name': 'r', 'shutting-down': False}], 'exports')


def test_two_exports_one_node():
    nbd = require_nbd()
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 1 << 20, pattern=0x33)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d, writable=False)
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'r', 'name': 'disk2'})
        for name in ('disk', 'disk2'):
            h = nbd.NBD()
            h.connect_uri(d.uri(name))
            assert_eq(h.pread(512, 0), b'\x33' * 512, 'read via %s' % name)
            h.shutdown()
        e = q.error('block-export-add', {'type': 'nbd', 'id': 'e3', 'node-name': 'r', 'name': 'disk'})
        assert_in('disk', e['desc'], 'duplicate export name refused')


def test_graph_changes_during_io():
    """Clients keep doing verified I/O on one export while other nodes and
    exports are added and deleted 20 times."""
    nbd = require_nbd()
    import threading
    import time
    with _qmp_daemon() as d:
        img = make_image(d.path('a.raw'), 8 << 20)
        other = make_image(d.path('b.raw'), 1 << 20)
        q = d.qmp()
        _add_raw(q, img)
        _export(q, d)
        stop = threading.Event()
        errors = []
        count = [0]

        def io():
            try:
                h = nbd.NBD()
                h.connect_uri(d.uri())
                i = 0
                while not stop.is_set():
                    off = (i % 128) * 65536
                    data = bytes([i % 251]) * 65536
                    h.pwrite(data, off)
                    if h.pread(65536, off) != data:
                        errors.append('mismatch at %d' % off)
                    i += 1
                count[0] = i
                h.shutdown()
            except Exception as e:  # reported below
                errors.append(str(e))
        t = threading.Thread(target=io)
        t.start()
        try:
            for i in range(20):
                q.execute('blockdev-add', {'driver': 'file', 'node-name': 'o%d' % i, 'filename': other})
                q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'or%d' % i, 'file': 'o%d' % i})
                q.execute('block-export-add', {'type': 'nbd', 'id': 'x%d' % i, 'node-name': 'or%d' % i})
                q.execute('block-export-del', {'id': 'x%d' % i})
                q.wait_event('BLOCK_EXPORT_DELETED')
                q.execute('blockdev-del', {'node-name': 'or%d' % i})
                q.execute('blockdev-del', {'node-name': 'o%d' % i})
            time.sleep(0.2)
        finally:
            stop.set()
            t.join(30)
        assert_eq(errors, [], 'I/O errors during graph changes')
        assert_eq(count[0] > 0, True, 'I/O made progress')
        assert_eq(sorted(n['node-name'] for n in q.execute('query-named-block-nodes')), ['f', 'r'],
                  'nodes after the churn')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
