#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""difftest: run the same QMP commands and NBD I/O against blockd and
qemu-storage-daemon and compare what comes back.

What runs (each "sequence" starts both daemons fresh, over copies of the
same images, and builds the same small graph through QMP first):
  schema     the two query-qmp-schema answers, command by command and
             event by event, resolved to structure (member names, optional
             or not, types, enum values)
  commands   per command in both schemas: invalid calls (each mandatory
             member missing, each member of the wrong type, an unknown
             member, each enum given a bad value, nested objects too),
             boundary values (integers at -1, 0, INT64_MAX, UINT64_MAX,
             2^64; empty strings), then its valid calls
  random     --count sequences of --steps steps from --seed: valid calls
             over the graph with nodes picked at random, some invalid
             calls, NBD reads/writes/zeroes/trims on the export

Each step compares the reply class (return or error), the error class and
text, the normalized return value, and the events the step caused; each
sequence ends comparing the images (qemu-img compare, and the bitmaps and
snapshots qemu-img info lists).  Normalized: timestamps, #blockNNN node
names, version numbers, each daemon's directory, the order of lists in
query answers.

Differences are matched against tests/diff/accepted.json (each entry:
command glob, kind, regex over the detail, reason).  Exit 1 when a
difference is not accepted, 77 when qemu-storage-daemon is missing.

  tests/diff/difftest.py                       all commands + 20 random
  tests/diff/difftest.py --ci                  the bounded CI slice
  tests/diff/difftest.py --seed 7 --count 50   more random sequences
  tests/diff/difftest.py --only block_resize -v
"""

import argparse
import copy
import fnmatch
import hashlib
import json
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
import blockd_test as bt  # noqa: E402

SKIP = 77

# The graph and the valid calls over it.
from calls import (EMPTY_FILES, IMAGES, IMG_SIZE, NODE_KEYS, NODES,  # noqa: E402
                   RANDOM_EXCLUDE, SETUP, VALID)


# --- helpers -----------------------------------------------------------------


def subst(obj, d):
    """Arguments for one daemon: $DIR becomes its directory."""
    if isinstance(obj, str):
        return obj.replace('$DIR', d)
    if isinstance(obj, list):
        return [subst(x, d) for x in obj]
    if isinstance(obj, dict):
        return {k: subst(v, d) for k, v in obj.items()}
    return obj


def canon(obj):
    return json.dumps(obj, sort_keys=True)


def short(obj, n=160):
    s = obj if isinstance(obj, str) else canon(obj)
    return s if len(s) <= n else s[:n] + '...'


# Clock readings.
TIME_KEYS = ('date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec', 'idle_time_ns')


def block_graph(g):
    """x-debug-query-block-graph with its arbitrary numeric ids replaced
    by the nodes' names."""
    names = {}
    for n in g.get('nodes', []):
        names[n['id']] = '%s:%s' % (n.get('type'), n.get('name'))
    nodes = [dict(n, id=names[n['id']]) for n in g.get('nodes', [])]
    edges = [dict(e, parent=names.get(e['parent'], e['parent']),
                  child=names.get(e['child'], e['child'])) for e in g.get('edges', [])]
    return {'nodes': nodes, 'edges': edges}


SORTED_RETURNS = ('query-', 'qom-list', 'x-debug-query', 'x-query', 'qom-get')


class Normalizer:
    def __init__(self, dirs):
        # Longest first: a real path and its symlinked form.
        self.dirs = sorted(set(dirs), key=len, reverse=True)

    def text(self, s):
        for d in self.dirs:
            s = s.replace(d, '$DIR')
        s = re.sub(r'#block\d+', '#blockN', s)
        return s

    def value(self, v, sort_lists=False):
        if isinstance(v, dict) and ('date-sec' in v or 'idle_time_ns' in v):
            v = {k: ('<time>' if k in TIME_KEYS else x) for k, x in v.items()}
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            out = [self.value(x, sort_lists) for x in v]
            if sort_lists:
                out.sort(key=canon)
            return out
        if isinstance(v, dict):
            return {self.text(k): self.value(x, sort_lists) for k, x in v.items()}
        return v

    def ret(self, cmd, v):
        if cmd == 'query-qmp-schema':
            return '<schema: compared by the schema sequence>'
        if cmd == 'query-version':
            v = copy.deepcopy(v)
            v.get('qemu', {})['micro'] = 'N'
            v['package'] = '<package>'
        if cmd == 'query-commands':
            return sorted(c['name'] for c in v)
        if cmd == 'x-debug-query-block-graph':
            v = block_graph(v)
        if cmd == 'query-named-block-nodes' and isinstance(v, list):
            # Generated names say which driver, to tell such nodes apart.
            v = [dict(n, **{'node-name': '%s:%s' % (n['node-name'], n.get('drv'))})
                 if re.match(r'#block\d+$', n.get('node-name', '')) else n for n in v]
        return self.value(v, sort_lists=cmd.startswith(SORTED_RETURNS))

    def event(self, ev):
        return {'event': ev.get('event'), 'data': self.value(ev.get('data', {}))}


def ev_name(e):
    """An event's name, with the status of a JOB_STATUS_CHANGE."""
    if e['event'] == 'JOB_STATUS_CHANGE':
        return '%s(%s)' % (e['event'], e['data'].get('status'))
    return e['event']


IDENT_KEYS = ('node-name', 'id', 'name', 'device', 'qdev', 'label', 'type')


def ident_of(xs):
    """The key that names every element of a list of objects uniquely."""
    if not xs or not all(isinstance(x, dict) for x in xs):
        return None
    for k in IDENT_KEYS:
        vals = [canon(x.get(k)) for x in xs]
        if all(k in x for x in xs) and len(set(vals)) == len(vals):
            return k
    return None


def diff_unmatched(ua, ub, path):
    """Differences between the objects left unmatched on each side: pairs
    with the same name are compared member by member."""
    out = []
    for keys in [(k,) for k in IDENT_KEYS] + [('drv', 'file')]:
        if not all(isinstance(x, dict) and all(k in x for k in keys) for x in ua + ub):
            continue
        named = lambda x: ','.join(str(x[k]) for k in keys)  # noqa: E731
        for name in sorted({named(x) for x in ua + ub}):
            xa = [x for x in ua if named(x) == name]
            xb = [x for x in ub if named(x) == name]
            if len(xa) == len(xb) == 1:
                out += diff_values(xa[0], xb[0], '%s[%s=%s]' % (path, ','.join(keys), name))
                ua = [x for x in ua if x is not xa[0]]
                ub = [x for x in ub if x is not xb[0]]
    if ua or ub:
        out.append((path, 'only blockd: %s; only qsd: %s'
                    % (short([canon(x) for x in ua], 300), short([canon(x) for x in ub], 300))))
    return out


def diff_values(a, b, path=''):
    """Paths where a (blockd) and b (qsd) differ: [(path, detail)]."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = '%s.%s' % (path, k) if path else k
            if k not in a:
                out.append((p, 'missing in blockd (qsd: %s)' % short(b[k], 80)))
            elif k not in b:
                out.append((p, 'extra in blockd: %s' % short(a[k], 80)))
            else:
                out += diff_values(a[k], b[k], p)
    elif isinstance(a, list) and isinstance(b, list):
        k = ident_of(a) if ident_of(a) == ident_of(b) else None
        if k is not None:
            ma = {canon(x[k]): x for x in a}
            mb = {canon(x[k]): x for x in b}
            for key in sorted(set(ma) | set(mb)):
                p = '%s[%s=%s]' % (path, k, key.strip('"'))
                if key not in ma:
                    out.append((p, 'missing in blockd'))
                elif key not in mb:
                    out.append((p, 'extra in blockd'))
                else:
                    out += diff_values(ma[key], mb[key], p)
        elif len(a) != len(b):
            ka = [canon(x) for x in a]
            kb = [canon(x) for x in b]
            out.append((path, 'list length blockd=%d qsd=%d; only blockd: %s; only qsd: %s'
                        % (len(a), len(b), short([x for x in ka if x not in kb], 300),
                           short([x for x in kb if x not in ka], 300))))
        elif any(isinstance(x, dict) for x in a + b):
            # Objects without a unique naming key (two #blockN nodes):
            # compare as multisets, pairing what is left by name.
            kb = [canon(x) for x in b]
            ua, ub = [], list(b)
            for x in a:
                if canon(x) in kb:
                    i = kb.index(canon(x))
                    del kb[i], ub[i]
                else:
                    ua.append(x)
            out += diff_unmatched(ua, ub, path)
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                out += diff_values(x, y, '%s[%d]' % (path, i))
    elif a != b or type(a) != type(b):
        out.append((path, 'blockd=%s qsd=%s' % (short(a, 100), short(b, 100))))
    return out


# --- the schema ----------------------------------------------------------------


class Schema:
    def __init__(self, info):
        self.t = {x['name']: x for x in info}
        self.commands = {x['name']: x for x in info if x['meta-type'] == 'command'}
        self.events = {x['name']: x for x in info if x['meta-type'] == 'event'}

    def members(self, tname, value=None):
        """name -> member of an object type, with the variant chosen by
        value's tag (when value is given)."""
        t = self.t[tname]
        out = {m['name']: m for m in t.get('members', [])}
        if t.get('tag') and isinstance(value, dict) and value.get(t['tag']) is not None:
            for v in t.get('variants', []):
                if v['case'] == value[t['tag']]:
                    out.update(self.members(v['type'], value))
        return out

    def meta(self, tname):
        t = self.t[tname]
        return t['name'] if t['meta-type'] == 'builtin' else t['meta-type']


def compare_schema(sa, sb, report):
    """Structural comparison of the commands and events both have."""
    seen = set()

    def cmp(ta, tb, where, path):
        if ta is None or tb is None:
            if (ta is None) != (tb is None):
                report.add('schema', where, 'schema', '%s: %s' % (
                    path, 'missing in blockd' if ta is None else 'extra in blockd'))
            return
        key = (ta, tb)
        if key in seen:
            return
        seen.add(key)
        a, b = sa.t[ta], sb.t[tb]
        ma, mb = sa.meta(ta), sb.meta(tb)
        if ma != mb:
            report.add('schema', where, 'schema', '%s: type blockd=%s qsd=%s' % (path, ma, mb))
            return
        if ma == 'enum':
            va, vb = set(a.get('values', [])), set(b.get('values', []))
            if va != vb:
                report.add('schema', where, 'schema', '%s: enum only blockd %s, only qsd %s'
                           % (path, sorted(va - vb), sorted(vb - va)))
        elif ma == 'array':
            cmp(a['element-type'], b['element-type'], where, path + '[]')
        elif ma == 'alternate':
            la = sorted(sa.meta(m['type']) for m in a['members'])
            lb = sorted(sb.meta(m['type']) for m in b['members'])
            if la != lb:
                report.add('schema', where, 'schema', '%s: alternate blockd=%s qsd=%s'
                           % (path, la, lb))
            for m in a['members']:
                for n in b['members']:
                    if sa.meta(m['type']) == sb.meta(n['type']):
                        cmp(m['type'], n['type'], where, path + '|' + sa.meta(m['type']))
        elif ma == 'object':
            mema = {m['name']: m for m in a.get('members', [])}
            memb = {m['name']: m for m in b.get('members', [])}
            for k in sorted(set(mema) | set(memb)):
                p = '%s.%s' % (path, k) if path else k
                if k not in mema:
                    report.add('schema', where, 'schema', '%s: member missing in blockd' % p)
                elif k not in memb:
                    report.add('schema', where, 'schema', '%s: member extra in blockd' % p)
                else:
                    if ('default' in mema[k]) != ('default' in memb[k]):
                        report.add('schema', where, 'schema', '%s: optional blockd=%s qsd=%s'
                                   % (p, 'default' in mema[k], 'default' in memb[k]))
                    cmp(mema[k]['type'], memb[k]['type'], where, p)
            if a.get('tag') != b.get('tag'):
                report.add('schema', where, 'schema', '%s: tag blockd=%s qsd=%s'
                           % (path, a.get('tag'), b.get('tag')))
            va = {v['case']: v['type'] for v in a.get('variants', [])}
            vb = {v['case']: v['type'] for v in b.get('variants', [])}
            for c in sorted(set(va) | set(vb)):
                p = '%s{%s}' % (path, c)
                cmp(va.get(c), vb.get(c), where, p)

    for name in sorted(set(sa.commands) & set(sb.commands)):
        a, b = sa.commands[name], sb.commands[name]
        seen.clear()
        cmp(a['arg-type'], b['arg-type'], name, 'arguments')
        cmp(a['ret-type'], b['ret-type'], name, 'return')
        for flag in ('allow-oob', 'features'):
            if a.get(flag) != b.get(flag):
                report.add('schema', name, 'schema', '%s blockd=%s qsd=%s'
                           % (flag, a.get(flag), b.get(flag)))
    for name in sorted(set(sa.events) & set(sb.events)):
        seen.clear()
        cmp(sa.events[name]['arg-type'], sb.events[name]['arg-type'], name, 'data')
    for name in sorted(set(sb.commands) - set(sa.commands)):
        report.add('schema', name, 'schema', 'command missing in blockd')
    for name in sorted(set(sa.commands) - set(sb.commands)):
        report.add('schema', name, 'schema', 'command extra in blockd')
    for name in sorted(set(sb.events) - set(sa.events)):
        report.add('schema', name, 'schema', 'event missing in blockd')
    for name in sorted(set(sa.events) - set(sb.events)):
        report.add('schema', name, 'schema', 'event extra in blockd')


# --- invalid and boundary calls from the schema -------------------------------

WRONG = {'str': 123, 'int': 'x', 'number': 'x', 'bool': 'x', 'null': 'x', 'enum': 7,
         'object': 'x', 'array': 'x'}
BOUNDARY_INTS = [-1, 0, (1 << 63) - 1, (1 << 64) - 1, 1 << 64, -(1 << 63)]


def invalid_calls(schema, cmd, args):
    """(label, arguments) of invalid calls derived from valid `args`."""
    out = []

    def walk(tname, value, path, setter):
        members = schema.members(tname, value)
        for name, m in members.items():
            mt = schema.meta(m['type'])
            label = '.'.join(path + [name])
            if 'default' not in m and name in value:
                v = copy.deepcopy(value)
                del v[name]
                out.append(('missing ' + label, setter(v)))
            if name in value and mt in WRONG:
                v = copy.deepcopy(value)
                v[name] = WRONG[mt]
                out.append(('wrong type ' + label, setter(v)))
            if mt == 'enum':
                v = copy.deepcopy(value)
                v[name] = 'no-such-value'
                out.append(('bad enum ' + label, setter(v)))
            if mt == 'object' and isinstance(value.get(name), dict) and len(path) < 3:
                def sub(nv, name=name, value=value):
                    v = copy.deepcopy(value)
                    v[name] = nv
                    return setter(v)
                walk(m['type'], value[name], path + [name], sub)
        v = copy.deepcopy(value)
        v['no-such-member'] = 1
        out.append(('unknown member ' + '.'.join(path + ['no-such-member']), setter(v)))

    walk(schema.commands[cmd]['arg-type'], args, [], lambda v: v)
    return out


def boundary_calls(schema, cmd, args):
    out = []
    for name, m in schema.members(schema.commands[cmd]['arg-type'], args).items():
        mt = schema.meta(m['type'])
        if mt == 'int':
            for n in BOUNDARY_INTS:
                out.append(('%s=%d' % (name, n), dict(args, **{name: n})))
        elif mt == 'str' and name in args:
            out.append(('%s=""' % name, dict(args, **{name: ''})))
    return out


def fallback_args(schema, cmd):
    """Valid-looking arguments for a command without a VALID entry: the
    mandatory members, strings from the graph by member name."""
    def gen(tname, name, depth):
        mt = schema.meta(tname)
        t = schema.t[tname]
        if mt == 'str':
            if name in NODE_KEYS:
                return 'qc0'
            return {'name': 'bm0', 'id': 'job0', 'job-id': 'job0'}.get(name, 'x')
        if mt == 'int':
            return 0
        if mt == 'number':
            return 0.0
        if mt == 'bool':
            return False
        if mt == 'null':
            return None
        if mt == 'enum':
            return t['values'][0]
        if mt == 'array':
            return [gen(t['element-type'], name, depth + 1)] if depth < 4 else []
        if mt == 'alternate':
            return gen(t['members'][0]['type'], name, depth + 1)
        if mt == 'object':
            v = {}
            for m in t.get('members', []):
                if 'default' not in m and depth < 4:
                    v[m['name']] = gen(m['type'], m['name'], depth + 1)
            if t.get('tag') and t.get('variants'):
                v[t['tag']] = t['variants'][0]['case']
                for m in schema.members(tname, v).values():
                    if 'default' not in m and m['name'] not in v and depth < 4:
                        v[m['name']] = gen(m['type'], m['name'], depth + 1)
            return v
        return {}
    return gen(schema.commands[cmd]['arg-type'], '', 0)


# --- report --------------------------------------------------------------------


class Report:
    def __init__(self, accepted, verbose=False):
        self.accepted = accepted
        for a in accepted:
            a['count'] = 0
            a['_re'] = re.compile(a.get('match', ''))
        self.verbose = verbose
        self.groups = {}        # key -> [count, first repro]
        self.acc_groups = {}
        self.sequences = 0
        self.calls = 0
        self.nbd_ops = 0
        self.image_checks = 0
        self.data_skipped = 0

    def match(self, cmd, kind, detail):
        for a in self.accepted:
            if fnmatch.fnmatchcase(cmd, a['command']) and \
                    fnmatch.fnmatchcase(kind, a.get('kind', '*')) and a['_re'].search(detail):
                return a
        return None

    def add(self, where, cmd, kind, detail, repro=None):
        a = self.match(cmd, kind, detail)
        key = (cmd, kind, detail)
        groups = self.groups if a is None else self.acc_groups
        if a is not None:
            a['count'] += 1
        g = groups.setdefault(key, [0, '%s%s' % (where, (': ' + repro) if repro else '')])
        g[0] += 1
        if self.verbose:
            print('  %s %s %s %s: %s' % ('accepted' if a else 'DIFF', where, cmd, kind, detail))

    def print(self):
        print('difftest: %d sequences, %d calls compared, %d NBD operations, %d image checks'
              ' (%d data comparisons skipped: a job running at the end, the daemons diverged,'
              ' or an overlay of a protocol node)'
              % (self.sequences, self.calls, self.nbd_ops, self.image_checks,
                 self.data_skipped))
        print('accepted differences: %d (%d kinds)' % (
            sum(g[0] for g in self.acc_groups.values()), len(self.acc_groups)))
        for a in self.accepted:
            if a['count'] and self.verbose:
                print('  %5d  %s %s /%s/: %s' % (a['count'], a['command'], a.get('kind', '*'),
                                                 a.get('match', ''), a['reason']))
        unused = [a for a in self.accepted if not a['count']]
        if unused:
            # Not an error (a slice need not meet every entry), but the
            # fixed ones should leave the file.
            print('accepted entries that matched nothing this run: %d' % len(unused))
            for a in unused:
                print('  %s %s /%s/: %s' % (a['command'], a.get('kind', '*'),
                                           a.get('match', ''), a['reason'][:100]))
        print('unaccepted differences: %d (%d kinds)' % (
            sum(g[0] for g in self.groups.values()), len(self.groups)))
        for (cmd, kind, detail), (n, repro) in sorted(self.groups.items()):
            print('  [%s] %s (%dx): %s\n      first at %s' % (kind, cmd, n, detail, repro))
        return 1 if self.groups else 0


# --- the two daemons -------------------------------------------------------------


class Side:
    """One daemon of a sequence."""

    def __init__(self, name, exe, root, images):
        self.name = name
        self.dir = os.path.join(root, name)
        os.mkdir(self.dir)
        for f in os.listdir(images):
            shutil.copy2(os.path.join(images, f), self.dir)
        # Backing file names inside images point at the master copies:
        # make them relative (the same bytes for both sides).
        self.d = bt.Daemon([], tmpdir=self.dir)
        self.d.exe = exe
        self.q = None
        self.dead = False

    def start(self):
        """Start the daemon and open its monitor; tried again when the
        machine is too busy for the monitor to answer in time."""
        for attempt in range(3):
            try:
                self.d.start()
                self.q = self.d.qmp()
                self.dead = False
                return
            except (OSError, EOFError, AssertionError):
                if attempt == 2:
                    raise
                if self.d.proc is not None and self.d.proc.poll() is None:
                    self.d.proc.kill()
                    self.d.proc.wait()
                for f in ('qmp.sock',):
                    try:
                        os.unlink(os.path.join(self.dir, f))
                    except OSError:
                        pass
                time.sleep(1)

    def stop(self):
        if self.d.proc is not None and self.d.proc.poll() is None:
            try:
                self.d.stop(timeout=10)
            except AssertionError:
                pass
        self.d.cleanup()

    def crashed(self):
        p = self.d.proc
        return p is not None and p.poll() is not None and p.returncode not in (0, None)


class Runner:
    def __init__(self, args, report, schema_q, schema_b):
        self.args = args
        self.report = report
        self.sq = schema_q          # qsd's schema drives generation
        self.sb = schema_b
        self.root = tempfile.mkdtemp(prefix='difftest-')
        self.images = os.path.join(self.root, 'images')
        os.mkdir(self.images)
        self.make_images()
        self.seq_no = 0
        self.steps = []

    def make_images(self):
        for name, (fmt, opts, writes, backing) in IMAGES.items():
            p = os.path.join(self.images, name)
            cmd = ['qemu-img', 'create', '-q', '-f', fmt]
            if backing:
                cmd += ['-b', backing, '-F', IMAGES[backing][0]]
            if opts:
                cmd += ['-o', opts]
            bt.run(cmd + [p, str(IMG_SIZE)], cwd=self.images)
            for w in writes:
                bt.run(['qemu-io', '-f', fmt, '-c', w, p], cwd=self.images)
        for name in EMPTY_FILES:
            open(os.path.join(self.images, name), 'w').close()

    def cleanup(self):
        """Stop the daemons of an unfinished sequence (an interrupted
        run) and remove every file."""
        for side in getattr(self, 'sides', []):
            try:
                side.stop()
            except Exception:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    # A sequence: both daemons fresh, setup, steps, image comparison.
    def open_sequence(self, label):
        self.seq_no += 1
        self.report.sequences += 1
        d = os.path.join(self.root, 'seq%d' % self.seq_no)
        os.mkdir(d)
        self.label = label
        self.sides = [Side('blockd', self.args.blockd, d, self.images),
                      Side('qsd', self.args.qsd, d, self.images)]
        dirs = []
        for s in self.sides:
            dirs += [s.dir, os.path.realpath(s.dir)]
        self.norm = Normalizer(dirs)
        self.steps = []
        self.diverged = False
        for s in self.sides:
            s.start()
        for cmd, a in SETUP:
            self.step(cmd, a, 'setup')
            for s in self.sides:
                if 'return' not in self.last[s.name]:
                    raise RuntimeError('setup step %s %s failed on %s: %s'
                                       % (cmd, a, s.name, self.last[s.name]))

    def restart(self):
        """Fresh daemons mid-sequence after the two diverged."""
        self.close_sequence(check_images=False)
        self.report.sequences -= 1
        self.open_sequence(self.label)

    def close_sequence(self, check_images=True):
        # A job still copying when the daemons stop leaves its target as
        # far as it got: timing, not behaviour; its data is not compared.
        # Jobs are brought to their end first, the same way on both
        # sides: paused ones resumed, pending ones finalized, a mirror in
        # sync ('ready') cancelled (its target is then a complete copy).
        self.jobs_running = False
        verbs = {'ready': 'job-cancel', 'pending': 'job-finalize',
                 'paused': 'job-resume', 'standby': 'job-resume'}
        for s in self.sides:
            jobs = []
            end = time.monotonic() + 10
            try:
                while not s.dead and time.monotonic() < end:
                    jobs = s.q.cmd('query-jobs').get('return', [])
                    if all(j['status'] in ('concluded', 'null') for j in jobs):
                        break
                    for j in jobs:
                        if j['status'] in verbs:
                            s.q.cmd(verbs[j['status']], {'id': j['id']})
                    time.sleep(0.02)
            except (EOFError, OSError):
                jobs = []
            if any(j['status'] not in ('concluded', 'null') for j in jobs):
                self.jobs_running = True
        for s in self.sides:
            s.stop()
            report = s.d.sanitizer_report() if s.name == 'blockd' else None
            if report:
                self.report.add(self.label, 'blockd', 'sanitizer', report[:300], self.repro())
        if check_images and self.diverged:
            # After one daemon failed what the other did, the images
            # differ as a consequence; the reply was reported.
            self.report.data_skipped += 1
        elif check_images:
            self.compare_images()
        shutil.rmtree(os.path.dirname(self.sides[0].dir), ignore_errors=True)

    def where(self):
        return '%s step %d' % (self.label, len(self.steps))

    def repro(self):
        return ' ; '.join('%s %s' % (c, short(a, 120)) for c, a in self.steps[-6:])

    def send(self, side, cmd, args):
        if side.dead:
            return {'dead': True}, []
        try:
            r = side.q.cmd(cmd, subst(args, side.dir) if args is not None else None)
        except (EOFError, ConnectionError, OSError) as e:
            side.dead = True
            return {'dead': True, 'why': str(e)}, self.drain(side)
        evs = self.settle(side, cmd)
        return r, evs

    def settle(self, side, cmd):
        """Wait (a bounded time) until the daemon's jobs stop moving and no
        more events come, then take the events queued so far."""
        if cmd == 'quit':
            return self.drain(side, until_eof=True)
        end = time.monotonic() + 5.0
        last = None
        quiet = 0
        try:
            while time.monotonic() < end:
                r = side.q.cmd('query-jobs')
                jobs = r.get('return', [])
                state = (len(side.q.events), canon([(j['id'], j['status']) for j in jobs]))
                moving = any(j['status'] not in ('ready', 'concluded', 'paused', 'pending',
                                                 'standby', 'null') for j in jobs)
                if not jobs and not side.q.events:
                    break           # nothing to wait for (most calls)
                if state == last and not moving:
                    quiet += 1
                    if quiet >= 3:
                        break
                else:
                    quiet = 0
                last = state
                time.sleep(0.02)
        except (EOFError, ConnectionError, OSError):
            side.dead = True
        evs, side.q.events = side.q.events, []
        return evs

    def drain(self, side, until_eof=False):
        evs, side.q.events = side.q.events, []
        if until_eof:
            side.q.sock.settimeout(5)
            try:
                while True:
                    m = side.q.recv()
                    if 'event' in m:
                        evs.append(m)
            except (EOFError, OSError, socket.timeout, ValueError):
                pass
            side.dead = True
        return evs

    def step(self, cmd, args, kind='call'):
        """One compared call; returns False when the daemons diverged."""
        self.steps.append((cmd, args))
        if self.args.verbose:
            print('    %d: %s %s' % (len(self.steps), cmd, short(args, 200)))
        self.report.calls += 1
        (rb, eb), (rq, eq) = [self.send(s, cmd, args) for s in self.sides]
        self.last = {'blockd': rb, 'qsd': rq}
        w, rp = self.where(), self.repro()
        ok = True
        for s in self.sides:
            if s.crashed():
                self.report.add(w, cmd, 'crash', '%s exited %d: %s' % (
                    s.name, s.d.proc.returncode, s.d.stderr()[-300:]), rp)
                ok = False
        cb = 'dead' if 'dead' in rb else 'error' if 'error' in rb else 'return'
        cq = 'dead' if 'dead' in rq else 'error' if 'error' in rq else 'return'
        if cb != cq:
            self.diverged = True
            detail = 'blockd %s%s, qsd %s%s' % (
                cb, (' ' + short(self.norm.value(rb.get('error', rb.get('return'))), 200)),
                cq, (' ' + short(self.norm.value(rq.get('error', rq.get('return'))), 200)))
            self.report.add(w, cmd, 'reply-class', detail, rp)
            ok = False
        elif cb == 'error':
            ea, eb2 = rb['error'], rq['error']
            if ea.get('class') != eb2.get('class'):
                self.report.add(w, cmd, 'error-class', 'blockd=%s qsd=%s (qsd: %s)' % (
                    ea.get('class'), eb2.get('class'), self.norm.text(eb2.get('desc', ''))), rp)
            da, db = self.norm.text(ea.get('desc', '')), self.norm.text(eb2.get('desc', ''))
            if da != db:
                self.report.add(w, cmd, 'error-desc', 'blockd=%r qsd=%r' % (da, db), rp)
        elif cb == 'return':
            va, vb = self.norm.ret(cmd, rb['return']), self.norm.ret(cmd, rq['return'])
            for path, detail in diff_values(va, vb):
                self.report.add(w, cmd, 'return', '%s: %s' % (path or '.', detail), rp)
        if cb == cq:
            # After different replies the events only follow from them.
            self.compare_events(cmd, eb, eq, w, rp)
        if cmd == 'quit' or any(s.dead for s in self.sides):
            ok = False
        return ok

    def compare_events(self, cmd, eb, eq, w, rp):
        la = [self.norm.event(e) for e in eb]
        lb = [self.norm.event(e) for e in eq]
        if la == lb:
            return
        if sorted(map(canon, la)) == sorted(map(canon, lb)):
            self.report.add(w, cmd, 'event-order', 'blockd=%s qsd=%s' % (
                [ev_name(e) for e in la], [ev_name(e) for e in lb]), rp)
            return
        na = [ev_name(e) for e in la]
        nb = [ev_name(e) for e in lb]
        if na != nb:
            self.report.add(w, cmd, 'events', 'names blockd=%s qsd=%s' % (na, nb), rp)
            return
        for i, (x, y) in enumerate(zip(la, lb)):
            for path, detail in diff_values(x['data'], y['data']):
                self.report.add(w, cmd, 'event-data', '%s %s: %s' % (x['event'], path, detail),
                                rp)

    def nbd_step(self, rng):
        """An NBD operation on the export 'raw0' of both daemons."""
        import nbd
        op = rng.choice(['pwrite', 'pwrite', 'zero', 'trim', 'pread', 'flush'])
        off = rng.randrange(0, IMG_SIZE // 4096) * 4096 + rng.choice([0, 0, 512])
        ln = rng.choice([512, 4096, 65536, 200000])
        byte = rng.randrange(256)
        self.steps.append(('nbd-' + op, {'offset': off, 'length': ln}))
        if self.args.verbose:
            print('    %d: nbd-%s offset %d length %d' % (len(self.steps), op, off, ln))
        self.report.nbd_ops += 1
        res = []
        for s in self.sides:
            h = nbd.NBD()
            try:
                h.set_export_name('raw0')
                h.connect_unix(os.path.join(s.dir, 'nbd.sock'))
                size = h.get_size()
                if op == 'pwrite':
                    h.pwrite(bytes([byte]) * ln, off)
                    r = 'ok'
                elif op == 'zero':
                    h.zero(ln, off)
                    r = 'ok'
                elif op == 'trim':
                    h.trim(ln, off)
                    r = 'ok'
                elif op == 'flush':
                    h.flush()
                    r = 'ok'
                else:
                    r = 'data %s' % hashlib.sha256(h.pread(ln, off)).hexdigest()[:16]
                res.append('size %d %s' % (size, r))
            except nbd.Error as e:
                res.append('error %s' % (e.errno if e.errno else 'connect'))
            finally:
                try:
                    h.shutdown()
                except nbd.Error:
                    pass
                del h
        if res[0] != res[1]:
            self.report.add(self.where(), 'nbd-' + op, 'nbd', 'blockd=%s qsd=%s'
                            % (res[0], res[1]), self.repro())
        # Events (BLOCK_WRITE_THRESHOLD, export deletion) the I/O caused.
        evs = [self.settle(s, 'nbd') if not s.dead else [] for s in self.sides]
        self.compare_events('nbd-' + op, evs[0], evs[1], self.where(), self.repro())

    def compare_images(self):
        a, b = self.sides[0].dir, self.sides[1].dir
        fa = {f for f in os.listdir(a) if not f.endswith(('.sock', '.stderr'))}
        fb = {f for f in os.listdir(b) if not f.endswith(('.sock', '.stderr'))}
        w = self.label + ' images'
        if fa != fb:
            self.report.add(w, 'images', 'files', 'only blockd %s, only qsd %s'
                            % (sorted(fa - fb), sorted(fb - fa)), self.repro())
        infos = {f: (self.info(os.path.join(a, f)), self.info(os.path.join(b, f)))
                 for f in sorted(fa & fb)}
        # An overlay taken of a protocol node (backing format 'file') holds
        # part of another image's metadata: the files' bytes then depend
        # on each daemon's own cluster layout; no data comparison.
        layered = any((i or {}).get('backing-format') == 'file'
                      for pair in infos.values() for i in pair)
        for f in sorted(fa & fb):
            self.report.image_checks += 1
            ia, ib = infos[f]
            if ia is None or ib is None:
                if (ia is None) != (ib is None):
                    self.report.add(w, 'images', 'image-info', '%s: unreadable on %s'
                                    % (f, 'blockd' if ia is None else 'qsd'), self.repro())
                continue
            for path, detail in diff_values(ia, ib):
                self.report.add(w, 'images', 'image-info', '%s %s: %s' % (f, path, detail),
                                self.repro())
            if ia.get('format') != ib.get('format'):
                continue
            if self.jobs_running or layered:
                self.report.data_skipped += 1
                continue
            p = bt.run(['qemu-img', 'compare', '-q', '-f', ia['format'], '-F', ib['format'],
                        os.path.join(a, f), os.path.join(b, f)], check=False)
            if p.returncode != 0:
                self.report.add(w, 'images', 'data', '%s: qemu-img compare exit %d %s'
                                % (f, p.returncode, self.norm.text(p.stderr.strip())[:200]),
                                self.repro())

    def info(self, path):
        p = bt.run(['qemu-img', 'info', '-U', '--output=json', path], check=False)
        if p.returncode != 0:
            if self.args.verbose:
                print('  qemu-img info %s: %s' % (path, p.stderr.strip()))
            return None
        i = json.loads(p.stdout)
        out = {'format': i.get('format'), 'virtual-size': i.get('virtual-size'),
               'backing-filename': self.norm.text(i.get('backing-filename', '')),
               'backing-format': i.get('backing-filename-format'),
               'snapshots': sorted(s['name'] for s in i.get('snapshots', []))}
        data = i.get('format-specific', {}).get('data', {})
        if 'bitmaps' in data:
            out['bitmaps'] = sorted((bm['name'], bm['granularity'], sorted(bm['flags']))
                                    for bm in data['bitmaps'])
        for k in ('compat', 'lazy-refcounts', 'refcount-bits', 'corrupt'):
            if k in data:
                out[k] = data[k]
        return out

    def guarded(self, what, fn, *a):
        """Run one sequence; a failure of the tool itself (a daemon that
        would not start, a timeout) is reported as a difference of kind
        'tool-error' and the next sequence goes on."""
        try:
            fn(*a)
        except Exception as e:
            self.report.add(getattr(self, 'label', what), what, 'tool-error',
                            '%s: %s' % (type(e).__name__, str(e)[:300]), self.repro())
            for side in getattr(self, 'sides', []):
                try:
                    side.stop()
                except Exception:
                    pass

    # --- the sequences ---

    def run_schema(self):
        self.report.sequences += 1
        compare_schema(self.sb, self.sq, self.report)

    def run_command(self, cmd):
        entries = VALID.get(cmd) or [fallback_args(self.sq, cmd)]
        first = entries[0]
        base = first if isinstance(first, dict) else first[-1][1]
        calls = []
        for label, a in invalid_calls(self.sq, cmd, base):
            calls.append([(cmd, a)])
        for label, a in boundary_calls(self.sq, cmd, base):
            calls.append([(cmd, a)])
        for e in entries:
            calls.append([(cmd, e)] if isinstance(e, dict) else list(e))
        if cmd != 'query-qmp-schema':
            calls.append([(cmd, None)])      # no 'arguments' at all
        self.open_sequence('command %s' % cmd)
        for steps in calls:
            for c, a in steps:
                if not self.step(c, a):
                    self.restart()
                    break
        self.close_sequence()

    def random_args(self, rng, cmd):
        entries = VALID.get(cmd) or [fallback_args(self.sq, cmd)]
        e = rng.choice(entries)
        steps = [(cmd, e)] if isinstance(e, dict) else list(e)
        out = []
        for c, a in steps:
            a = copy.deepcopy(a)
            for k in list(a or {}):
                if k in NODE_KEYS and isinstance(a[k], str) and rng.random() < 0.5:
                    a[k] = rng.choice(NODES)
                if k in ('job-id', 'id', 'device') and isinstance(a[k], str) and \
                        a[k].startswith('job'):
                    a[k] = 'job%d' % rng.randrange(2)
            out.append((c, a))
        if rng.random() < 0.15:
            c, a = out[-1]
            inv = invalid_calls(self.sq, c, a or {})
            if inv:
                out[-1] = (c, rng.choice(inv)[1])
        return out

    def run_random(self, seed, n):
        rng = random.Random('%d/%d' % (seed, n))
        cmds = sorted(c for c in set(self.sq.commands) & set(self.sb.commands)
                      if c not in RANDOM_EXCLUDE)
        self.open_sequence('random seed %d sequence %d' % (seed, n))
        for i in range(self.args.steps):
            if rng.random() < 0.3:
                self.nbd_step(rng)
                continue
            for c, a in self.random_args(rng, rng.choice(cmds)):
                if not self.step(c, a):
                    break
            else:
                continue
            break
        self.close_sequence()


def fetch_schema(exe):
    d = bt.Daemon([])
    d.exe = exe
    try:
        d.start()
        return d.qmp().execute('query-qmp-schema')
    finally:
        d.stop()
        d.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--blockd', default=os.environ.get('BLOCKD') or
                    os.path.join(REPO, 'build', 'daemon', 'blockd'))
    ap.add_argument('--qsd', default=shutil.which('qemu-storage-daemon') or bt.QSD)
    ap.add_argument('--accepted', default=os.path.join(HERE, 'accepted.json'))
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--count', type=int, default=20, help='random sequences')
    ap.add_argument('--steps', type=int, default=25, help='steps per random sequence')
    ap.add_argument('--only', action='append', help='command (glob) to run; repeatable')
    ap.add_argument('--no-commands', action='store_true')
    ap.add_argument('--sequence', type=int, action='append',
                    help='only random sequence N of --seed (repeatable; implies --no-commands)')
    ap.add_argument('--ci', action='store_true', help='the bounded slice meson runs')
    ap.add_argument('-v', '--verbose', action='store_true')
    args = ap.parse_args()
    if args.ci:
        args.seed, args.count, args.steps = 1, 4, 20
    if not os.access(args.qsd, os.X_OK):
        print('SKIP: qemu-storage-daemon not installed')
        return SKIP
    if not os.access(args.blockd, os.X_OK):
        print('SKIP: blockd not built at %s' % args.blockd)
        return SKIP
    for tool in ('qemu-img', 'qemu-io'):
        if shutil.which(tool) is None:
            print('SKIP: %s not installed' % tool)
            return SKIP
    try:
        import nbd  # noqa: F401
    except ImportError:
        print('SKIP: python module nbd missing; run with /usr/bin/python3')
        return SKIP
    args.blockd = os.path.abspath(args.blockd)
    os.environ['BLOCKD'] = args.blockd   # blockd_test.Daemon checks it exists
    with open(args.accepted) as f:
        accepted = json.load(f)
    report = Report(accepted, args.verbose)
    sq = Schema(fetch_schema(args.qsd))
    sb = Schema(fetch_schema(args.blockd))
    runner = Runner(args, report, sq, sb)
    t0 = time.monotonic()
    try:
        runner.run_schema()
        if not args.no_commands and not args.sequence:
            for cmd in sorted(set(sq.commands) & set(sb.commands)):
                if args.only and not any(fnmatch.fnmatchcase(cmd, o) for o in args.only):
                    continue
                if args.verbose:
                    print('command %s' % cmd)
                runner.guarded(cmd, runner.run_command, cmd)
        for n in (args.sequence or range(args.count)):
            if args.verbose:
                print('random %d/%d' % (args.seed, n))
            runner.guarded('random', runner.run_random, args.seed, n)
    finally:
        runner.cleanup()
    rc = report.print()
    print('(%.1fs)' % (time.monotonic() - t0))
    return rc


if __name__ == '__main__':
    sys.exit(main())
