#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Structured logs (issue 21): --log [level=]error|warning|info|debug
[,target=auto|stderr|journald] through GLib's structured logging.  At
info level every client connect and disconnect (and why a handshake
failed), every node opened, reopened or closed, every export added or
deleted and every job state change gives one line; without --log the
daemon says nothing of them (as before, and as qemu-storage-daemon).
blockd's own option: qemu-storage-daemon has none."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, Skip, assert_eq, assert_in, daemon_exe, main,  # noqa: E402
                         make_image, nbd_export_args, require_nbd, require_tool, run,
                         skip_if_reference, tests_of, wait_for)

MiB = 1 << 20


def start(log_args=()):
    skip_if_reference('--log is blockd\'s own option')
    d = Daemon()
    img = make_image(d.path('a.raw'), 4 * MiB)
    d.args = list(log_args) + nbd_export_args(d, img) + d.args
    d.wait = [d.nbd_sock]
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise
    return d


def activity(d):
    """A client, a failed handshake, a node added and deleted, a job."""
    q = d.qmp()
    nbd = require_nbd()
    h = nbd.NBD()
    h.connect_uri(d.uri())
    h.pread(4096, 0)
    h.shutdown()
    h = nbd.NBD()
    try:
        h.connect_uri('nbd+unix:///nosuch?socket=%s' % d.nbd_sock)
    except nbd.Error:
        pass
    del h
    q.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'tgt', 'size': 4 * MiB})
    q.execute('blockdev-mirror', {'job-id': 'mj', 'device': 'fmt0', 'target': 'tgt',
                                  'sync': 'full'})
    q.wait_event('BLOCK_JOB_READY')
    q.execute('block-job-cancel', {'device': 'mj'})
    q.wait_event('JOB_STATUS_CHANGE', match={'id': 'mj', 'status': 'null'})
    q.execute('blockdev-del', {'node-name': 'tgt'})
    q.execute('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'fmt0'})
    q.execute('block-export-del', {'id': 'e2'})
    q.wait_event('BLOCK_EXPORT_DELETED', match={'id': 'e2'})


WANT = [
    "node 'file0' (file, ",
    "node 'fmt0' (raw, ",
    "export 'exp0': nbd export of node 'fmt0' added, writable",
    "export 'exp0': NBD client unix#",
    "disconnected after 1 requests",
    ": handshake failed (export-not-found)",
    "node 'tgt' (null-co, json:",
    "job 'mj' (mirror): created -> running",
    "job 'mj' (mirror): running -> ready",
    "job 'mj' (mirror): concluded -> null",
    "node 'tgt' (null-co) closed",
    "export 'e2': deleted",
]


def test_info_lines():
    """--log level=info,target=stderr: one line for each change."""
    with start(['--log', 'level=info,target=stderr']) as d:
        activity(d)
        wait_for(lambda: all(w in d.stderr() for w in WANT), what='every line')
        err = d.stderr()
        for w in WANT:
            assert_in(w, err, 'log line')
        assert_eq(err.count(' connected'), err.count('disconnected after'), 'paired lines')
        assert_in('blockd-nbd-INFO', err, 'domain and level')


def test_graph_change_lines():
    """Every graph change a command makes gives one info line, a refused
    one with the reason: blockdev-add/-del, reopen, a backing edge."""
    from test_trace import graph_changes
    with start(['--log', 'level=info,target=stderr']) as d:
        dup, refused, missing = graph_changes(d, d.qmp())
        want = [
            "blockdev-add of 'n1' done",
            "blockdev-add of 'n1' failed: %s" % dup,
            "node 'n1' reopened read-only",
            "node 'n1' not reopened: %s" % refused,
            "node 'ov': child 'backing' changed from (none) to n1",
            "node 'ov': child 'backing' changed from n1 to (none)",
            "blockdev-del of 'ov' done",
            "blockdev-del of 'n1' failed: %s" % missing,
        ]
        err = d.stderr()
        for w in want:
            assert_eq(err.count(w), 1, 'one line %r' % w)


def test_quiet_by_default_and_at_warning():
    """No --log (and --log warning): none of those lines."""
    for args in ([], ['--log', 'warning']):
        with start(args) as d:
            activity(d)
            d.qmp().execute('query-version')
            err = d.stderr()
            for w in WANT:
                assert_eq(w in err, False, '%r with %r' % (w, args))


def test_journald_target_falls_back():
    """target=journald with no journal to write to: stderr, not nothing."""
    if os.path.exists('/run/systemd/journal/socket'):
        skip_if_reference('n/a')
        from blockd_test import Skip
        raise Skip('a journal runs here: the lines would go there')
    with start(['--log', 'info,target=journald']) as d:
        wait_for(lambda: "export 'exp0': nbd export" in d.stderr(), what='fallback line')


def test_journald_stream_detected():
    """Run as systemd runs a service (stderr a stream socket whose peer
    is /run/systemd/journal/stdout, which g_log_writer_is_journald looks
    for) with the default target=auto: the info lines go to the journal
    socket as native-protocol datagrams with their fields (MESSAGE,
    PRIORITY, GLIB_DOMAIN), not to the stream.  journal_sink.py stands
    in for journald in a private mount namespace (a tmpfs over /run
    there), so the machine's own journal, if any, is left alone."""
    skip_if_reference('--log is blockd\'s own option')
    require_tool('unshare', 'mount')
    if os.geteuid() != 0:
        raise Skip('a mount namespace needs root')
    p = run(['unshare', '-m', '--propagation', 'private', 'true'], check=False)
    if p.returncode != 0:
        raise Skip('no private mount namespace here: %s' % p.stderr.strip())
    sink = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'journal_sink.py')
    d = Daemon()
    journal = d.path('journal.jsonl')
    img = make_image(d.path('a.raw'), 4 * MiB)
    d.args = ['--log', 'info'] + nbd_export_args(d, img) + d.args
    d.wait = [d.nbd_sock]
    d.wrapper = ['unshare', '-m', '--propagation', 'private', sys.executable, sink, journal,
                 '--']
    try:
        d.start()
    except BaseException:
        d.cleanup()
        raise

    def entries():
        if not os.path.exists(journal):
            return []
        with open(journal) as f:
            return [json.loads(line) for line in f if line.endswith('\n')]

    def find(text):
        return [e for e in entries() if text in e.get('MESSAGE', '')]

    with d:
        nbd = require_nbd()
        h = nbd.NBD()
        h.connect_uri(d.uri())
        h.pread(4096, 0)
        h.shutdown()
        wait_for(lambda: find('disconnected after 1 requests'), what='the disconnect line')
        connects = [e for e in find("export 'exp0': NBD client unix#")
                    if e['MESSAGE'].endswith(' connected')]
        assert_eq(len(connects), 1, 'one connect line: %r' % entries())
        e = connects[0]
        assert_eq(e.get('PRIORITY'), '6', 'PRIORITY (info)')
        assert_eq(e.get('GLIB_DOMAIN'), 'blockd-nbd', 'GLIB_DOMAIN')
        added = find("export 'exp0': nbd export of node 'fmt0' added")
        assert_eq([x.get('GLIB_DOMAIN') for x in added], ['blockd-export'], 'export line')
        assert_eq(' connected' in d.stderr(), False, 'nothing on the stream: %r' % d.stderr())
        d.qmp().execute('quit')
        assert_eq(d.wait_exit(), 0, 'clean exit')


def test_option_errors():
    """Bad --log values stop the start-up with the reason."""
    skip_if_reference('--log is blockd\'s own option')
    for arg, text in (('level=loud', "Parameter 'level' does not accept value 'loud'"),
                      ('info,target=syslog', "Parameter 'target' does not accept value "
                                             "'syslog'"),
                      ('info,colour=on', "Invalid parameter 'colour'")):
        p = run([daemon_exe(), '--log', arg], check=False)
        assert_eq(p.returncode, 1, 'exit status for --log %s' % arg)
        assert_in('--log %s: %s' % (arg, text), p.stderr, 'message')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
