# SPDX-License-Identifier: MIT
"""The harness of the blockdev-reopen tests, test_reopen_{options,backing,
children,users,jobs}.py: QEMU iotest 245 (blockdev-reopen) ported to a
storage daemon, every case a storage daemon can run (all but the
iothread/device ones), with the seed's exact error texts and query-named-block-nodes comparisons, and the seed's
qemu-io commands run over NBD exports of the nodes (qemu-io on nbd+unix://).

Exports hold their node through an entry handle (QEMU: a BlockBackend), so
they are added and removed around the steps where holding the node would
change what the seed expects (blockdev-del, read-only reopens under a writable
user, backing links that unshare write); where the scenario allows, one
export lives across the whole case to show that I/O keeps working across
graph changes. The stream/commit cases skip (77) when the daemon answers
CommandNotFound for block-stream/block-commit."""

import contextlib
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import Daemon, Skip, assert_eq, del_export, nbd_export, qemu_io, run  # noqa: E402

IMGFMT = 'qcow2'


class Env:
    """One daemon (the seed's VM) with hd0..hd2 created as in 245's setUp."""

    def __init__(self, d):
        self.d = d
        self.q = d.qmp()
        self.hd_path = [d.path('hd%d.img' % i) for i in range(3)]
        self.exports = {}       # node-name -> writable
        self.q.execute('nbd-server-start',
                       {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})

    def make_images(self):
        hd = self.hd_path
        run(['qemu-img', 'create', '-f', IMGFMT, hd[0], '3M'])
        run(['qemu-img', 'create', '-f', IMGFMT, '-b', hd[0], '-F', IMGFMT, hd[1]])
        run(['qemu-img', 'create', '-f', IMGFMT, hd[2], '3M'])
        qemu_io(hd[0], 'write -P 0xa0  0 1M', fmt=IMGFMT)
        qemu_io(hd[1], 'write -P 0xa1 1M 1M', fmt=IMGFMT)
        qemu_io(hd[2], 'write -P 0xa2 2M 1M', fmt=IMGFMT)

    def hd_opts(self, idx):
        return {'driver': IMGFMT,
                'node-name': 'hd%d' % idx,
                'file': {'driver': 'file',
                         'node-name': 'hd%d-file' % idx,
                         'filename': self.hd_path[idx]}}

    # --- QMP ---

    def cmd(self, name, args=None):
        """The seed's vm.cmd(): the command must succeed."""
        r = self.q.cmd(name, args or {})
        if 'error' in r:
            raise AssertionError('%s %s failed: %r' % (name, json.dumps(args), r['error']))
        return r['return']

    def qmp(self, name, args=None):
        return self.q.cmd(name, args or {})

    def assert_error(self, reply, desc, cls='GenericError', what=''):
        if 'error' not in reply:
            raise AssertionError('%s: expected error %r, got %r' % (what, desc, reply))
        assert_eq(reply['error'].get('class'), cls, '%s: error class' % what)
        assert_eq(reply['error'].get('desc'), desc, '%s: error desc' % what)

    def blockdev_add(self, opts):
        return self.cmd('blockdev-add', opts)

    def blockdev_del(self, node, errmsg=None):
        r = self.qmp('blockdev-del', {'node-name': node})
        if errmsg:
            self.assert_error(r, errmsg, what='blockdev-del %s' % node)
        else:
            assert_eq(r, {'return': {}}, 'blockdev-del %s' % node)

    def reopen_multiple(self, opts, errmsg=None):
        r = self.qmp('blockdev-reopen', {'options': opts})
        what = 'blockdev-reopen %s' % json.dumps(opts, sort_keys=True)
        if errmsg:
            self.assert_error(r, errmsg, what=what)
        else:
            assert_eq(r, {'return': {}}, what)

    def reopen(self, opts, newopts=None, errmsg=None):
        """The seed's reopen(): 'newopts' applied on a copy of 'opts'. As in
        the seed, a dotted key 'a.b.c' descends as opts[a] then opts[b]
        (the seed indexes the top-level dict at each step), kept verbatim."""
        opts = copy.deepcopy(opts)
        for key, value in (newopts or {}).items():
            subdict = opts
            while key.find('.') != -1:
                prefix, key = key.split('.', 1)
                subdict = opts[prefix]
            subdict[key] = value
        self.reopen_multiple([opts], errmsg)

    def named_nodes(self):
        return self.cmd('query-named-block-nodes')

    def get_node(self, name):
        for node in self.named_nodes():
            if node['node-name'] == name:
                return node
        return None

    def check_node_graph(self, graph):
        assert_eq(json.dumps(self.named_nodes(), sort_keys=True),
                  json.dumps(graph, sort_keys=True), 'query-named-block-nodes')

    # --- exports and I/O (the seed's hmp qemu-io) ---

    def export(self, node, writable=False):
        self.cmd('block-export-add', {'type': 'nbd', 'id': 'exp-' + node, 'node-name': node,
                                      'name': node, 'writable': writable})
        self.exports[node] = writable

    def unexport(self, node):
        # qemu-io has exited, but the server may not have noticed yet: 'hard'
        # only drops such finished connections.
        del_export(self.q, 'exp-' + node, mode='hard')
        del self.exports[node]

    @contextlib.contextmanager
    def exported(self, node, writable=False):
        with nbd_export(self.q, node, id='exp-' + node, writable=writable):
            self.exports[node] = writable
            yield
        del self.exports[node]

    def io(self, node, cmd):
        """Run one qemu-io command on the export of 'node'; pattern reads and
        writes must succeed exactly as the seed's run_qemu_io()."""
        extra = () if self.exports[node] else ('-r',)
        p = qemu_io(self.d.uri(node), cmd, extra=extra)
        words = cmd.split()
        verb = 'wrote' if words[0] == 'write' else 'read'
        if not any(line.startswith(verb + ' ') and ' bytes at offset ' in line
                   for line in p.stdout.splitlines()):
            raise AssertionError('qemu-io %r on %s: no "%s ... bytes at offset" line in %r'
                                 % (cmd, node, verb, p.stdout))

    # --- jobs ---

    def job_cmd(self, name, args):
        """Start a job; skip when the daemon does not know the command yet."""
        r = self.qmp(name, args)
        if r.get('error', {}).get('class') == 'CommandNotFound':
            raise Skip('%s not implemented (CommandNotFound)' % name)
        if 'error' in r:
            raise AssertionError('%s failed: %r' % (name, r['error']))
        return r['return']

    def wait_until_completed(self, drive):
        """The seed's wait_until_completed(): the job completes, without an
        error, having copied everything."""
        ev = self.q.run_job(drive, auto_dismiss=True).event
        assert_eq(ev['event'], 'BLOCK_JOB_COMPLETED', 'job %s end' % drive)
        assert_eq(ev['data'].get('error'), None, 'job %s error' % drive)
        assert_eq(ev['data']['offset'], ev['data']['len'], 'job %s offset == len' % drive)

    def run_job(self, job, auto_finalize=True, auto_dismiss=False):
        """The seed's vm.run_job(), which must succeed."""
        run = self.q.run_job(job, auto_finalize=auto_finalize, auto_dismiss=auto_dismiss,
                             complete=True)
        assert_eq(run.error, None, 'job %s error' % job)


@contextlib.contextmanager
def vm(images=True):
    with Daemon() as d:
        d.start()
        env = Env(d)
        if images:
            env.make_images()
        yield env
        for node in list(env.exports):
            env.unexport(node)


def add_driver_node(v, opts):
    """blockdev-add of a node whose driver may not exist yet in the daemon:
    the seed's skip_if_unsupported([driver])."""
    r = v.qmp('blockdev-add', opts)
    if r.get('error', {}).get('desc') == "Parameter 'driver' does not accept value '%s'" % (
            opts['driver']):
        raise Skip('driver %s not implemented' % opts['driver'])
    assert_eq(r, {'return': {}}, 'blockdev-add %s' % json.dumps(opts))


def supports_direct(path):
    p = qemu_io(path, 'quit', extra=('-t', 'none'), check=False)
    if p.returncode == 0:
        return True
    if 'O_DIRECT' in p.stdout + p.stderr:
        return False
    raise AssertionError('qemu-io -t none: %s %s' % (p.stdout, p.stderr))


def object_add(v, args):
    r = v.qmp('object-add', args)
    if r.get('error', {}).get('class') == 'CommandNotFound':
        raise Skip('object-add not implemented')
    assert_eq(r, {'return': {}}, 'object-add %s' % json.dumps(args))
