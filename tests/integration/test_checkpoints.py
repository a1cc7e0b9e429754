#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checkpoints (x-blockd-checkpoint-*): a chain of persistent dirty bitmaps
in a qcow2 image.  Guest writes go through an NBD export (qemu-io); the
chain is read with x-blockd-checkpoint-list and qemu-img info, the image
checked with qemu-img check and opened by QEMU itself (qemu-io), and the
changes since a checkpoint are exported as qemu:dirty-bitmap:NAME and
read with nbdinfo --map.  Restarts are clean (SIGTERM) or SIGKILL.
blockd's own commands: no run against qemu-storage-daemon."""

import json
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, check_image, image_bitmaps,  # noqa: E402
                         main, nbd_connection, nbd_export, qcow2_image, qemu_io, require_nbd,
                         require_tool, run, skip_if_reference, start_qcow2, tests_of,
                         wait_for)

KiB, MiB = 1 << 10, 1 << 20
# Regions written between checkpoints, aligned to the default granularity
# (the 64 KiB cluster size) so that dirty bytes equal written bytes.
A = (0, 64 * KiB)
B = (1 * MiB, 128 * KiB)
C = (4 * MiB, 64 * KiB)
D = (8 * MiB, 64 * KiB)
UNUSABLE = 'BLOCKD_CHECKPOINT_UNUSABLE'


def setup():
    skip_if_reference("x-blockd-checkpoint-* are blockd's own commands")
    require_tool('qemu-img', 'qemu-io', 'nbdinfo')
    return Daemon()


def write(d, *regions):
    qemu_io(d.uri(), *['write -P 0x5a %d %d' % r for r in regions])


def nbytes(*regions):
    return sum(length for _, length in regions)


def create(q, name, node='disk', **extra):
    q.execute('x-blockd-checkpoint-create', dict(node=node, name=name, **extra))


def delete(q, name, node='disk'):
    q.execute('x-blockd-checkpoint-delete', {'node': node, 'name': name})


def checkpoints(q, node='disk'):
    return q.execute('x-blockd-checkpoint-list', {'node': node})


def chain(q, node='disk'):
    """(name, usable, active, dirty-bytes or None), oldest first."""
    return [(c['name'], c['usable'], c['active'], c.get('dirty-bytes'))
            for c in checkpoints(q, node)]


def bitmap_names(q):
    return [c['bitmap'] for c in checkpoints(q)]


def dirty_bitmaps(q, node='disk'):
    """The node's bitmaps by name, as query-named-block-nodes shows them."""
    nodes = q.execute('query-named-block-nodes', {'flat': True})
    found = [n for n in nodes if n['node-name'] == node][0]
    return {b['name']: b for b in found.get('dirty-bitmaps', []) if 'name' in b}


def err(q, cmd, args):
    return q.error(cmd, args)['desc']


def changes_since(q, d, since, target='since'):
    """The extents (offset, length) of the changes since `since`: a bitmap
    made by x-blockd-checkpoint-changes, exported read-only and read by
    nbdinfo --map, then removed."""
    q.execute('x-blockd-checkpoint-changes', {'node': 'disk', 'name': since, 'target': target})
    with nbd_export(q, 'disk', name='view', bitmaps=[target]):
        out = run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:' + target,
                   d.uri('view')]).stdout
    q.execute('block-dirty-bitmap-remove', {'node': 'disk', 'name': target})
    return [(e['offset'], e['length']) for e in json.loads(out) if e['type'] & 1]


def build_chain(q, d):
    """c1, write A, c2, write B, c3, write C."""
    for name, region in [('c1', A), ('c2', B), ('c3', C)]:
        create(q, name)
        write(d, region)


HEALTHY = [('c1', True, False, nbytes(A, B, C)),
           ('c2', True, False, nbytes(B, C)),
           ('c3', True, True, nbytes(C))]


def unusable_events(q):
    """Data of the BLOCKD_CHECKPOINT_UNUSABLE events received so far."""
    return [e['data'] for e in q.events if e['event'] == UNUSABLE]


def test_chain_through_nbd():
    """Three checkpoints with writes between them: order, the active one,
    dirty bytes per checkpoint, creation times; qemu-img info sees the
    bitmaps (in use while open, only the newest recording once closed),
    qemu-img check passes, QEMU opens the image."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        t0 = int(time.time())
        build_chain(q, d)
        t1 = int(time.time())
        assert_eq(chain(q), HEALTHY, 'chain')
        infos = checkpoints(q)
        for c in infos:
            assert t0 <= c['creation-time'] <= t1, c
            assert_eq(c['bitmap'], 'blockd-checkpoint.%06d.%d.%s'
                      % (infos.index(c) + 1, c['creation-time'], c['name']), 'bitmap name')
        names = [c['bitmap'] for c in infos]
        # Written to the image at once, marked in use while open.
        assert_eq([(b['name'], sorted(b['flags'])) for b in image_bitmaps(img)],
                  [(n, ['auto', 'in-use'] if n == names[-1] else ['in-use']) for n in names],
                  'bitmaps while running')
        d.stop()
        assert_eq([(b['name'], b['flags'], b['granularity']) for b in image_bitmaps(img)],
                  [(names[0], [], 65536), (names[1], [], 65536), (names[2], ['auto'], 65536)],
                  'bitmaps after stop')
        check_image(img)
        qemu_io(img, 'read -P 0x5a %d %d' % B, fmt='qcow2')


def test_clean_restart():
    """After a clean stop the chain is back, usable, with its dirty data;
    the newest still records, and so does QEMU when it opens the image
    in between."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        build_chain(q, d)
        before = checkpoints(q)
        d.stop()
        q = start_qcow2(d, img)
        assert_eq(checkpoints(q), before, 'chain after restart')
        assert_eq(unusable_events(q), [], 'no event')
        write(d, D)
        assert_eq(chain(q), [('c1', True, False, nbytes(A, B, C, D)),
                             ('c2', True, False, nbytes(B, C, D)),
                             ('c3', True, True, nbytes(C, D))], 'recording after restart')
        assert_eq(changes_since(q, d, 'c2'), [B, C, D], 'changes since c2')
        d.stop()
        # QEMU keeps the newest bitmap recording too.
        qemu_io(img, 'write -P 0x11 16M 64k', fmt='qcow2')
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq(chain(q)[2], ('c3', True, True, nbytes(C, D) + 64 * KiB),
                  'a write by QEMU counted')
        d.stop()
        check_image(img)


def test_sigkill_makes_unusable():
    """A SIGKILL while writes go on: every checkpoint whose changes depend on
    the bitmap in use is unusable after the restart, reported once by an
    event; the changes since one are refused; a new checkpoint starts a
    usable chain; qemu-img check passes throughout."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        create(q, 'c1')
        write(d, A)
        create(q, 'c2')
        d.stop()
        # c1 and c2 were stored cleanly; c3 is taken in the session that dies.
        q = start_qcow2(d, img)
        write(d, B)
        create(q, 'c3')
        write(d, C)
        d.signal(signal.SIGKILL)
        d.wait_exit()
        check_image(img)
        assert_eq([sorted(b['flags']) for b in image_bitmaps(img)],
                  [['in-use'], ['in-use'], ['auto', 'in-use']], 'in use after the kill')
        q = start_qcow2(d, img)
        assert_eq(chain(q), [('c1', False, False, None), ('c2', False, False, None),
                             ('c3', False, False, None)], 'all unusable')
        assert_eq(unusable_events(q), [{'node': 'disk', 'checkpoints': ['c1', 'c2', 'c3']}],
                  'one event')
        checkpoints(q)
        assert_eq(len(unusable_events(q)), 1, 'reported once')
        assert_eq(err(q, 'x-blockd-checkpoint-changes',
                      {'node': 'disk', 'name': 'c2', 'target': 't'}),
                  "Checkpoint 'c2' is not usable: its bitmap was not saved cleanly; "
                  "take a full backup", 'changes since c2')
        # A fresh chain from here on.
        create(q, 'c4')
        write(d, D)
        assert_eq(chain(q)[3], ('c4', True, True, nbytes(D)), 'c4')
        assert_eq(changes_since(q, d, 'c4'), [D], 'changes since c4')
        d.stop()
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq(chain(q), [('c1', False, False, None), ('c2', False, False, None),
                             ('c3', False, False, None), ('c4', True, True, nbytes(D))],
                  'after a clean restart')
        assert_eq(unusable_events(q), [{'node': 'disk', 'checkpoints': ['c1', 'c2', 'c3']}],
                  'reported again on the next open')
        d.stop()
        check_image(img)


def test_delete_middle_merges():
    """Deleting c2 merges its bitmap into c1's: the changes since c1 are
    unchanged, c1's own bitmap now holds A and B; stored as such."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        build_chain(q, d)
        names = bitmap_names(q)
        delete(q, 'c2')
        assert_eq(chain(q), [HEALTHY[0], HEALTHY[2]], 'c2 gone, the rest unchanged')
        own = {name: b['count'] for name, b in dirty_bitmaps(q).items()}
        assert_eq(own, {names[0]: nbytes(A, B), names[2]: nbytes(C)}, 'bits of each bitmap')
        assert_eq(changes_since(q, d, 'c1'), [A, B, C], 'changes since c1')
        assert_eq([b['name'] for b in image_bitmaps(img)], [names[0], names[2]],
                  'gone from the image at once')
        d.stop()
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq(chain(q), [HEALTHY[0], HEALTHY[2]], 'after restart')
        assert_eq(changes_since(q, d, 'c1'), [A, B, C], 'changes since c1 after restart')


def test_delete_newest_and_oldest():
    """Deleting the active checkpoint makes its predecessor the active,
    recording one; deleting the oldest drops its bits; deleting the last
    leaves no bitmap in the image."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        build_chain(q, d)
        delete(q, 'c3')
        assert_eq(chain(q), [('c1', True, False, nbytes(A, B, C)),
                             ('c2', True, True, nbytes(B, C))], 'c2 active')
        write(d, D)
        assert_eq(chain(q), [('c1', True, False, nbytes(A, B, C, D)),
                             ('c2', True, True, nbytes(B, C, D))], 'c2 records')
        delete(q, 'c1')
        assert_eq(chain(q), [('c2', True, True, nbytes(B, C, D))], 'c1 gone')
        d.stop()
        assert_eq([b['flags'] for b in image_bitmaps(img)], [['auto']], 'c2 stored recording')
        q = start_qcow2(d, img)
        delete(q, 'c2')
        assert_eq(checkpoints(q), [], 'none left')
        d.stop()
        assert_eq(image_bitmaps(img), [], 'no bitmap left')
        check_image(img)


def test_changes_exported():
    """x-blockd-checkpoint-changes: a disabled bitmap of everything written
    since the checkpoint, exported over NBD: nbdinfo --map shows exactly
    the regions written since, later writes stay out of it."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        build_chain(q, d)
        for since, regions in [('c1', [A, B, C]), ('c2', [B, C]), ('c3', [C])]:
            assert_eq(changes_since(q, d, since), regions, 'changes since ' + since)
        q.execute('x-blockd-checkpoint-changes', {'node': 'disk', 'name': 'c2', 'target': 'b2'})
        write(d, D)
        with nbd_export(q, 'disk', name='view', bitmaps=['b2']):
            out = run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:b2', d.uri('view')]).stdout
        assert_eq([(e['offset'], e['length']) for e in json.loads(out) if e['type'] & 1],
                  [B, C], 'frozen when made')
        info = dirty_bitmaps(q)['b2']
        assert_eq((info['recording'], info['persistent'], info['count']),
                  (False, False, nbytes(B, C)), 'an ordinary disabled bitmap')


def test_transaction():
    """Checkpoint actions in a transaction: create + changes-since in one
    step; an aborted transaction leaves the chain, the recording and the
    image as they were."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        create(q, 'c1')
        write(d, A)
        q.execute('transaction', {'actions': [
            {'type': 'x-blockd-checkpoint-create', 'data': {'node': 'disk', 'name': 'c2'}},
            {'type': 'x-blockd-checkpoint-changes',
             'data': {'node': 'disk', 'name': 'c1', 'target': 'since-c1'}}]})
        write(d, B)
        assert_eq(chain(q), [('c1', True, False, nbytes(A, B)), ('c2', True, True, nbytes(B))],
                  'after the transaction')
        assert_eq(dirty_bitmaps(q)['since-c1']['count'], nbytes(A),
                  'changes since c1 at the checkpoint')
        before = (checkpoints(q), image_bitmaps(img))
        for actions in (
                [{'type': 'x-blockd-checkpoint-create', 'data': {'node': 'disk', 'name': 'c3'}},
                 {'type': 'x-blockd-checkpoint-changes',
                  'data': {'node': 'disk', 'name': 'c1', 'target': 'since-c1b'}},
                 {'type': 'abort', 'data': {}}],
                [{'type': 'x-blockd-checkpoint-delete', 'data': {'node': 'disk', 'name': 'c2'}},
                 {'type': 'x-blockd-checkpoint-delete', 'data': {'node': 'disk', 'name': 'c1'}},
                 {'type': 'abort', 'data': {}}]):
            assert_eq(err(q, 'transaction', {'actions': actions}),
                      'Transaction aborted using Abort action', 'aborted')
            assert_eq((checkpoints(q), image_bitmaps(img)), before, 'nothing changed')
        write(d, C)
        assert_eq(chain(q), [('c1', True, False, nbytes(A, B, C)),
                             ('c2', True, True, nbytes(B, C))], 'c2 still records')
        d.stop()
        check_image(img)


def test_disabled_outside_is_unusable():
    """The newest bitmap disabled by another program (qemu-img bitmap
    --disable) missed writes: it and every earlier checkpoint are unusable.
    Deleting it keeps its predecessor unusable, in the image too."""
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        build_chain(q, d)
        names = bitmap_names(q)
        d.stop()
        run(['qemu-img', 'bitmap', '--disable', img, names[2]])
        qemu_io(img, 'write -P 0x22 16M 64k', fmt='qcow2')     # not recorded
        q = start_qcow2(d, img)
        assert_eq(chain(q), [('c1', False, False, None), ('c2', False, False, None),
                             ('c3', False, False, None)], 'all unusable')
        assert_eq(unusable_events(q), [{'node': 'disk', 'checkpoints': ['c1', 'c2', 'c3']}],
                  'event')
        create(q, 'c4')
        delete(q, 'c3')
        assert_eq(chain(q), [('c1', False, False, None), ('c2', False, False, None),
                             ('c4', True, True, 0)], 'c2 stays unusable')
        assert_eq(err(q, 'x-blockd-checkpoint-changes',
                      {'node': 'disk', 'name': 'c1', 'target': 't'}),
                  "Checkpoint 'c1' is not usable: the bitmap of the later checkpoint 'c2' was "
                  "not saved cleanly; take a full backup", 'changes since c1')
        d.stop()
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq([c[:2] for c in chain(q)], [('c1', False), ('c2', False), ('c4', True)],
                  'after restart')


class Writer:
    """A libnbd client writing 4 KiB at random 64 KiB-aligned offsets of
    the export until stopped; remembers the 64 KiB chunks it wrote."""

    def __init__(self, uri):
        self.uri, self.chunks, self.writes, self.error = uri, set(), 0, None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        try:
            with nbd_connection(self.uri) as h:
                rng = random.Random(7)
                while not self.stopping.is_set():
                    chunk = rng.randrange(64 * MiB // (64 * KiB))
                    h.pwrite(b'\x5a' * 4096, chunk * 64 * KiB)
                    self.chunks.add(chunk)
                    self.writes += 1
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e

    def wrote_more(self, n):
        """Wait until n more writes have landed (the test interleaves)."""
        target = self.writes + n
        wait_for(lambda: self.writes >= target or self.error, what='writes')


def test_concurrent_writes():
    """Creating and deleting checkpoints while a client keeps writing: no
    write is lost from the changes since the first checkpoint, the image
    stays sound, and the result survives a restart."""
    require_nbd()
    with setup() as d:
        img = qcow2_image(d)
        q = start_qcow2(d, img)
        create(q, 'c1')
        w = Writer(d.uri())
        w.thread.start()
        try:
            for step in [('create', 'c2'), ('create', 'c3'), ('delete', 'c2'),
                         ('create', 'c4'), ('delete', 'c4'), ('create', 'c5'),
                         ('create', 'c6'), ('delete', 'c5')]:
                w.wrote_more(50)
                (create if step[0] == 'create' else delete)(q, step[1])
            w.wrote_more(50)
        finally:
            w.stopping.set()
            w.thread.join()
        assert w.error is None, w.error
        written = len(w.chunks) * 64 * KiB
        assert_eq([c[:3] for c in chain(q)], [('c1', True, False), ('c3', True, False),
                                              ('c6', True, True)], 'chain')
        assert_eq(chain(q)[0][3], written, 'changes since c1 = every chunk written')
        d.stop()
        check_image(img)
        q = start_qcow2(d, img)
        assert_eq(chain(q)[0][3], written, 'after restart')


def test_refusals():
    """Every refusal with its text; none of them changes the chain or the
    image."""
    with setup() as d:
        img = qcow2_image(d)
        v2 = qcow2_image(d, 'v2.qcow2', opts='compat=0.10')
        q = start_qcow2(d, img, extra=[
            '--blockdev', 'driver=file,node-name=v2f,filename=%s' % v2,
            '--blockdev', 'driver=qcow2,node-name=v2,file=v2f',
            '--blockdev', 'driver=null-co,node-name=null0,size=67108864'])
        build_chain(q, d)
        names = bitmap_names(q)
        before = (checkpoints(q), image_bitmaps(img))
        no_node = "Cannot find device='nope' nor node-name='nope'"
        long_name = 'x' * 1000
        for cmd, args, text in [
                ('x-blockd-checkpoint-create', {'node': 'nope', 'name': 'x'}, no_node),
                ('x-blockd-checkpoint-list', {'node': 'nope'}, no_node),
                ('x-blockd-checkpoint-delete', {'node': 'nope', 'name': 'c1'}, no_node),
                ('x-blockd-checkpoint-changes', {'node': 'nope', 'name': 'c1', 'target': 't'},
                 no_node),
                ('x-blockd-checkpoint-create', {'node': 'f0', 'name': 'x'},
                 "Node 'f0' cannot hold checkpoints: its driver 'file' does not store "
                 "persistent dirty bitmaps (use a qcow2 node)"),
                ('x-blockd-checkpoint-list', {'node': 'null0'},
                 "Node 'null0' cannot hold checkpoints: its driver 'null-co' does not store "
                 "persistent dirty bitmaps (use a qcow2 node)"),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': 'c2'},
                 "Checkpoint 'c2' already exists on node 'disk'"),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': ''},
                 'Checkpoint name cannot be empty'),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': 'a\nb'},
                 'Checkpoint name must not contain control characters'),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': long_name},
                 'Checkpoint name too long: at most %d bytes'
                 % (1023 - len('blockd-checkpoint.000004.%d.' % int(time.time())))),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': 'x', 'granularity': 1000},
                 'Granularity must be power of 2 and at least 512'),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': 'x', 'granularity': 256},
                 'Granularity must be power of 2 and at least 512'),
                ('x-blockd-checkpoint-create',
                 {'node': 'disk', 'name': 'x', 'granularity': 1 << 32},
                 "Parameter 'granularity' expects uint32_t"),
                ('x-blockd-checkpoint-create', {'node': 'disk'}, "Parameter 'name' is missing"),
                ('x-blockd-checkpoint-create', {'name': 'x'}, "Parameter 'node' is missing"),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': 5},
                 "Invalid parameter type for 'name', expected: string"),
                ('x-blockd-checkpoint-create', {'node': 'disk', 'name': 'x', 'bogus': 1},
                 "Parameter 'bogus' is unexpected"),
                ('x-blockd-checkpoint-list', {}, "Parameter 'node' is missing"),
                ('x-blockd-checkpoint-delete', {'node': 'disk', 'name': 'zz'},
                 "Checkpoint 'zz' not found on node 'disk'"),
                ('x-blockd-checkpoint-changes', {'node': 'disk', 'name': 'zz', 'target': 't'},
                 "Checkpoint 'zz' not found on node 'disk'"),
                ('x-blockd-checkpoint-changes', {'node': 'disk', 'name': 'c1', 'target': ''},
                 'Bitmap name cannot be empty'),
                ('x-blockd-checkpoint-changes', {'node': 'disk', 'name': 'c1', 'target': names[0]},
                 "Bitmap name '%s' is reserved for checkpoints (names starting with "
                 "'blockd-checkpoint.')" % names[0]),
                # A checkpoint's bitmap changes only through the checkpoint commands.
                ('block-dirty-bitmap-add', {'node': 'disk', 'name': 'blockd-checkpoint.9.9.x'},
                 "Bitmap name 'blockd-checkpoint.9.9.x' is reserved for checkpoints (names "
                 "starting with 'blockd-checkpoint.')"),
                ('block-dirty-bitmap-remove', {'node': 'disk', 'name': names[1]},
                 "Bitmap '%s' belongs to checkpoint 'c2'; use the x-blockd-checkpoint commands "
                 "to change it" % names[1]),
                ('block-dirty-bitmap-clear', {'node': 'disk', 'name': names[0]},
                 "Bitmap '%s' belongs to checkpoint 'c1'; use the x-blockd-checkpoint commands "
                 "to change it" % names[0]),
                ('block-dirty-bitmap-disable', {'node': 'disk', 'name': names[2]},
                 "Bitmap '%s' belongs to checkpoint 'c3'; use the x-blockd-checkpoint commands "
                 "to change it" % names[2]),
                ('block-dirty-bitmap-enable', {'node': 'disk', 'name': names[0]},
                 "Bitmap '%s' belongs to checkpoint 'c1'; use the x-blockd-checkpoint commands "
                 "to change it" % names[0]),
                ('block-dirty-bitmap-merge', {'node': 'disk', 'target': names[0], 'bitmaps': []},
                 "Bitmap '%s' belongs to checkpoint 'c1'; use the x-blockd-checkpoint commands "
                 "to change it" % names[0]),
                ('transaction', {'actions': [{'type': 'block-dirty-bitmap-clear',
                                              'data': {'node': 'disk', 'name': names[1]}}]},
                 "Bitmap '%s' belongs to checkpoint 'c2'; use the x-blockd-checkpoint commands "
                 "to change it" % names[1]),
                ('blockdev-backup', {'device': 'disk', 'target': 'null0', 'sync': 'bitmap',
                                     'bitmap': names[0], 'bitmap-mode': 'on-success'},
                 "Bitmap '%s' belongs to checkpoint 'c1'; use the x-blockd-checkpoint commands "
                 "to change it" % names[0])]:
            assert_eq(err(q, cmd, args), text, '%s %r' % (cmd, args))
        v2_err = err(q, 'x-blockd-checkpoint-create', {'node': 'v2', 'name': 'c'})
        assert v2_err.startswith("Cannot create checkpoint 'c' on node 'v2': Can't make bitmap "
                                 "'blockd-checkpoint.000001."), v2_err
        assert v2_err.endswith("' persistent in 'v2': Cannot store dirty bitmaps in qcow2 v2 "
                               "files"), v2_err
        # The active bitmap exported (busy) cannot be frozen; a frozen one
        # exported can be neither deleted nor merged into.
        with nbd_export(q, 'disk', name='live', writable=True, bitmaps=[names[2]]):
            assert_eq(err(q, 'x-blockd-checkpoint-create', {'node': 'disk', 'name': 'c4'}),
                      "Cannot create checkpoint 'c4' on node 'disk': Bitmap '%s' is currently "
                      "in use by another operation and cannot be used" % names[2], 'busy active')
        with nbd_export(q, 'disk', name='view', bitmaps=[names[1]]):
            for name in ('c2', 'c3'):
                assert_eq(err(q, 'x-blockd-checkpoint-delete', {'node': 'disk', 'name': name}),
                          "Cannot delete checkpoint '%s' on node 'disk': Bitmap '%s' is "
                          "currently in use by another operation and cannot be used"
                          % (name, names[1]), 'busy ' + name)
        assert_eq((checkpoints(q), image_bitmaps(img)), before, 'nothing changed')
        d.stop()
        check_image(img)
        # A read-only node lists its checkpoints but changes none.
        q = start_qcow2(d, img, node_opts=',read-only=on', export=False)
        assert_eq([c[:2] for c in chain(q)], [('c1', True), ('c2', True), ('c3', True)],
                  'read-only list')
        assert_eq(err(q, 'x-blockd-checkpoint-create', {'node': 'disk', 'name': 'c4'}),
                  "Cannot create checkpoint 'c4' on node 'disk': the node is read-only", 'ro')
        assert_eq(err(q, 'x-blockd-checkpoint-delete', {'node': 'disk', 'name': 'c1'}),
                  "Cannot delete checkpoint 'c1' on node 'disk': the node is read-only", 'ro')
        d.stop()
        assert_eq([(b['name'], b['flags']) for b in image_bitmaps(img)],
                  [(names[0], []), (names[1], []), (names[2], ['auto'])], 'image untouched')


def test_schema():
    """query-qmp-schema lists the commands with typed arguments and the
    event."""
    with setup() as d:
        d.start()
        q = d.qmp()
        schema = q.execute('query-qmp-schema')
        by_name = {e['name']: e for e in schema}
        for cmd in ('x-blockd-checkpoint-create', 'x-blockd-checkpoint-delete',
                    'x-blockd-checkpoint-list', 'x-blockd-checkpoint-changes'):
            assert_in(cmd, by_name, 'command')
        args = by_name[by_name['x-blockd-checkpoint-create']['arg-type']]
        assert_eq([(m['name'], by_name[m['type']]['name'] if m['type'] in by_name else m['type'],
                    'default' in m) for m in args['members']],
                  [('node', 'str', False), ('name', 'str', False), ('granularity', 'int', True)],
                  'create arguments')
        ret = by_name[by_name['x-blockd-checkpoint-list']['ret-type']]
        element = by_name[ret['element-type']]
        assert_eq([m['name'] for m in element['members']],
                  ['name', 'creation-time', 'bitmap', 'dirty-bytes', 'usable', 'active'],
                  'list members')
        assert_in(UNUSABLE, by_name, 'event')
        commands = [c['name'] for c in q.execute('query-commands')]
        assert_in('x-blockd-checkpoint-changes', commands, 'query-commands')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
