# SPDX-License-Identifier: MIT
"""The manual pages, --help and meson install stay in step with the daemon.

- every page renders with man -l, without troff warnings;
- every command of query-commands and every event of query-qmp-schema has
  an entry in blockd-qmp(7); every driver of the schema a section in
  blockd-drivers(7), with each of its options;
- --help and its topics list exactly the drivers, export types and object
  types of the schema, each with a description;
- --version carries the git description when built from git;
- meson install --destdir installs the binaries, pages, examples and unit.

These check blockd's own documentation: they skip against the reference.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (REPO, Skip, assert_eq, daemon_exe, is_reference,  # noqa: E402
                         main, require_tool, run, start_daemon, tests_of)

DOC = os.path.join(REPO, 'doc')
PAGES = {'blockd.1': 1, 'blockctl.1': 1, 'blockd-qmp.7': 7, 'blockd-drivers.7': 7}
EXAMPLES = sorted(f for f in os.listdir(os.path.join(REPO, 'examples')) if f.endswith('.sh'))


def blockd_only():
    if is_reference():
        raise Skip('blockd\'s own documentation')


def build_dir():
    """The build directory of the daemon under test (BUILD/daemon/blockd)."""
    d = os.path.dirname(os.path.dirname(daemon_exe()))
    if not os.path.isdir(os.path.join(d, 'meson-private')):
        raise Skip('%s is not a meson build directory' % d)
    return d


def built_page(name):
    path = os.path.join(build_dir(), 'doc', name)
    if not os.path.exists(path):
        raise Skip('manual page %s not built (scdoc missing?)' % name)
    return path


def source(name):
    with open(os.path.join(DOC, name + '.scd')) as f:
        return f.read()


def unescape(text):
    """scdoc source to the words a reader sees: \\_ is _, \\* is *."""
    return text.replace('\\_', '_').replace('\\*', '*')


def schema_enum(schema, command, member):
    """The values of the enum 'member' of 'command''s arguments."""
    by = {e['name']: e for e in schema}
    cmd = next(e for e in schema if e['meta-type'] == 'command' and e['name'] == command)
    args = by[cmd['arg-type']]
    m = next(m for m in args['members'] if m['name'] == member)
    return list(by[m['type']]['values']), args, by


def query(q):
    return ([c['name'] for c in q.execute('query-commands')],
            q.execute('query-qmp-schema'))


def help_names(*args):
    """The first column of a help listing (lines indented by two)."""
    out = run([daemon_exe()] + list(args)).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith('  ')], out


# --- the pages render ---

def test_man_renders():
    blockd_only()
    require_tool('man')
    for name, section in PAGES.items():
        path = built_page(name)
        env = dict(os.environ, MANWIDTH='80', LC_ALL='C.UTF-8')
        p = subprocess.run(['man', '--warnings', '-l', path], capture_output=True,
                           text=True, env=env, timeout=60)
        assert_eq(p.returncode, 0, 'man -l %s: %s' % (name, p.stderr))
        assert_eq(p.stderr.strip(), '', 'troff warnings rendering %s' % name)
        title = name.rsplit('.', 1)[0]
        for needed in ('NAME', 'SEE ALSO', '%s(%d)' % (title, section)):
            if needed not in p.stdout:
                raise AssertionError('%s renders without %r' % (name, needed))
        # every page a page points to exists (or is another project's)
        for ref, sec in re.findall(r'\b(blockd[a-z-]*|blockctl)\((\d)\)', p.stdout):
            if '%s.%s' % (ref, sec) not in PAGES:
                raise AssertionError('%s refers to %s(%s), which is no page' % (name, ref, sec))


# --- the pages list what the daemon has ---

def qmp_entries():
    """Names with an entry in blockd-qmp(7): '*name*' opening a line, and
    '*a* {...}, *b* {...}' lines that group several commands."""
    names = set()
    for line in unescape(source('blockd-qmp.7')).splitlines():
        if line.startswith('*'):
            names.update(re.findall(r'(?:^|, )\*([A-Za-z0-9_-]+)\*', line))
    return names


def test_qmp_page_lists_every_command_and_event():
    blockd_only()
    with start_daemon() as d:
        q = d.qmp()
        commands, schema = query(q)
    events = [e['name'] for e in schema if e['meta-type'] == 'event']
    entries = qmp_entries()
    missing = [c for c in sorted(commands) if c not in entries]
    missing_events = [e for e in sorted(events) if e not in entries]
    if missing or missing_events:
        raise AssertionError(
            'doc/blockd-qmp.7.scd has no entry (a line starting "*name*") for\n'
            '  commands: %s\n  events: %s'
            % (' '.join(missing) or '-', ' '.join(missing_events) or '-'))


def driver_sections():
    """'## name' sections of blockd-drivers(7): name -> text."""
    text = unescape(source('blockd-drivers.7'))
    parts = re.split(r'^(#{1,2}) (.+)$', text, flags=re.M)
    sections = {}
    for i in range(1, len(parts) - 2, 3):
        if parts[i] == '##':
            sections[parts[i + 1].strip()] = parts[i + 2]
    return sections, text


def test_drivers_page_lists_every_driver_and_option():
    blockd_only()
    with start_daemon() as d:
        q = d.qmp()
        _, schema = query(q)
    drivers, args, by = schema_enum(schema, 'blockdev-add', 'driver')
    sections, text = driver_sections()
    missing = [drv for drv in drivers if drv not in sections]
    options_missing = []
    variants = {v['case']: by[v['type']] for v in args['variants']}
    for drv in drivers:
        body = sections.get(drv, '')
        for m in variants[drv].get('members', []):
            if '*%s*' % m['name'] not in body:
                options_missing.append('%s.%s' % (drv, m['name']))
    mutable = re.search(r'^# MUTABLE OPTIONS$(.*?)^# ', text, flags=re.M | re.S)
    if mutable is None:
        raise AssertionError('doc/blockd-drivers.7.scd has no MUTABLE OPTIONS section')
    not_in_mutable = [drv for drv in drivers if '*%s*' % drv not in mutable.group(1)]
    if missing or options_missing or not_in_mutable:
        raise AssertionError(
            'doc/blockd-drivers.7.scd is behind the schema:\n'
            '  drivers without a "## name" section: %s\n'
            '  options not described in their driver\'s section: %s\n'
            '  drivers missing from MUTABLE OPTIONS: %s'
            % (' '.join(missing) or '-', ' '.join(options_missing) or '-',
               ' '.join(not_in_mutable) or '-'))


# --- --help is the schema ---

def test_help_matches_schema():
    blockd_only()
    with start_daemon() as d:
        q = d.qmp()
        _, schema = query(q)
    drivers, bd_args, by = schema_enum(schema, 'blockdev-add', 'driver')
    exports, _, _ = schema_enum(schema, 'block-export-add', 'type')
    objects, _, _ = schema_enum(schema, 'object-add', 'qom-type')

    for args, want in ((['--help', 'drivers'], drivers),
                       (['--blockdev', 'help'], drivers),
                       (['--help', 'exports'], exports),
                       (['--export', 'help'], exports),
                       (['--help', 'objects'], objects),
                       (['--object', 'help'], objects)):
        names, out = help_names(*args)
        assert_eq(sorted(names), sorted(want), 'blockd %s against the schema' % ' '.join(args))
        if '(no description)' in out:
            raise AssertionError('blockd %s: a name without a description (daemon/help.c):\n%s'
                                 % (' '.join(args), out))

    # the main text names them all too, in its "(drivers: ...)" lists
    out = run([daemon_exe(), '--help']).stdout
    for what, want in (('drivers', drivers), ('export types', exports),
                       ('object types', objects)):
        m = re.search(r'\(%s: ([^)]*)\)' % what, out)
        if m is None:
            raise AssertionError('--help has no "(%s: ...)" list:\n%s' % (what, out))
        got = [n.strip() for n in m.group(1).replace('\n', ' ').split(',')]
        assert_eq(sorted(got), sorted(want), '--help\'s %s' % what)

    # --blockdev DRIVER,help: the driver's own members, mutable ones marked
    variants = {v['case']: by[v['type']] for v in bd_args['variants']}
    for drv in drivers:
        out = run([daemon_exe(), '--blockdev', '%s,help' % drv]).stdout
        listed = re.findall(r'^  ([a-z0-9-]+)=<', out, flags=re.M)
        want = [m['name'] for m in variants[drv].get('members', [])]
        assert_eq(listed, want, '--blockdev %s,help options' % drv)
        for line in out.splitlines():
            if line.startswith('  ') and ('=<' in line) and \
                    line.split('=')[0].strip() not in want:
                raise AssertionError('unknown option in: %s' % line)
    p = run([daemon_exe(), '--blockdev', 'nosuch,help'], check=False)
    assert_eq(p.returncode, 1, '--blockdev nosuch,help fails')
    assert_eq("Parameter 'driver' does not accept value 'nosuch'" in p.stderr, True,
              'its message: %r' % p.stderr)
    p = run([daemon_exe(), '--help', 'nosuch'], check=False)
    assert_eq(p.returncode, 1, '--help nosuch fails')


def test_version_git_description():
    blockd_only()
    out = run([daemon_exe(), '--version']).stdout
    m = re.match(r'blockd version (\S+)\n', out)
    if m is None:
        raise AssertionError('--version: %r' % out)
    version = m.group(1)
    if not re.fullmatch(r'\d+\.\d+\.\d+(-\d+-g[0-9a-f]{4,})?(-dirty)?', version):
        raise AssertionError('--version %r is not VERSION[-N-gHASH][-dirty]' % version)
    git = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'],
                         capture_output=True, text=True)
    if git.returncode != 0:
        return  # not built from git: the plain version is right
    exact = subprocess.run(['git', '-C', REPO, 'describe', '--tags', '--exact-match',
                            '--match', 'v[0-9]*'], capture_output=True, text=True)
    if exact.returncode != 0 and '-g' not in version:
        raise AssertionError('built from git, but --version %r has no git description'
                             % version)


# --- meson install ---

def test_meson_install():
    blockd_only()
    require_tool('meson')
    build = build_dir()
    with tempfile.TemporaryDirectory(prefix='blockd-install-') as dest:
        p = subprocess.run(['meson', 'install', '-C', build, '--no-rebuild', '--destdir', dest],
                           capture_output=True, text=True, timeout=300)
        assert_eq(p.returncode, 0, 'meson install: %s%s' % (p.stdout[-2000:], p.stderr[-2000:]))
        installed = sorted(os.path.relpath(os.path.join(r, f), dest)
                           for r, _, fs in os.walk(dest) for f in fs)
        print('installed:\n  ' + '\n  '.join(installed))
        intro = subprocess.run(['meson', 'introspect', build, '--buildoptions'],
                               capture_output=True, text=True, check=True).stdout
        import json
        opts = {o['name']: o['value'] for o in json.loads(intro)}
        prefix = opts['prefix'].lstrip('/')
        bindir = os.path.join(prefix, opts['bindir'])
        mandir = os.path.join(prefix, opts['mandir'])
        docdir = os.path.join(prefix, opts['datadir'], 'doc', 'blockd')

        want = [os.path.join(bindir, 'blockd'), os.path.join(bindir, 'blockctl'),
                os.path.join(docdir, 'systemd', 'blockd@.service'),
                os.path.join(docdir, 'systemd', 'blockd.conf.example'),
                os.path.join(docdir, 'README.md')]
        want += [os.path.join(docdir, 'examples', e) for e in EXAMPLES]
        if os.path.exists(os.path.join(build, 'doc', 'blockd.1')):
            want += [os.path.join(mandir, 'man%d' % s, n) for n, s in PAGES.items()]
        plugin = os.path.join(build, 'nbdkit-plugin', 'nbdkit-blockd-plugin.so')
        missing = [w for w in want if w not in installed]
        if os.path.exists(plugin) and \
                not any(i.endswith('/nbdkit/plugins/nbdkit-blockd-plugin.so') for i in installed):
            missing.append('nbdkit/plugins/nbdkit-blockd-plugin.so')
        if missing:
            raise AssertionError('meson install did not install:\n  %s' % '\n  '.join(missing))
        for e in EXAMPLES:
            mode = os.stat(os.path.join(dest, docdir, 'examples', e)).st_mode
            assert_eq(bool(mode & 0o111), True, 'examples/%s executable' % e)
        for exe in ('blockd', 'blockctl'):
            mode = os.stat(os.path.join(dest, bindir, exe)).st_mode
            assert_eq(bool(mode & 0o111), True, '%s executable' % exe)
        with open(os.path.join(dest, docdir, 'systemd', 'blockd@.service')) as f:
            unit = f.read()
        exec_start = '/' + os.path.join(bindir, 'blockd') + ' $BLOCKD_OPTIONS'
        if 'ExecStart=' + exec_start not in unit:
            raise AssertionError('blockd@.service does not run %s:\n%s' % (exec_start, unit))
        # systemd accepts the unit (an instance of it, running the
        # installed binary)
        if shutil.which('systemd-analyze'):
            inst = os.path.join(dest, 'blockd@test.service')
            with open(inst, 'w') as f:
                f.write(unit.replace(exec_start, os.path.join(dest, bindir, 'blockd')
                                     + ' $BLOCKD_OPTIONS'))
            p = subprocess.run(['systemd-analyze', 'verify', '--man=no', inst],
                               capture_output=True, text=True, timeout=60)
            assert_eq((p.returncode, p.stderr.strip()), (0, ''),
                      'systemd-analyze verify blockd@.service')
        # the installed daemon runs
        out = run([os.path.join(dest, bindir, 'blockd'), '--version']).stdout
        assert_eq(out.startswith('blockd version'), True, 'installed blockd --version')


def test_example_units():
    """examples/blockd.socket and blockd.service (socket activation) are
    units systemd accepts: systemd-analyze verify, with ExecStart on the
    built daemon, says nothing (it warns, with status 0, about what it
    ignores, so silence is the check)."""
    if is_reference():
        raise Skip('checks blockd\'s example files')
    if not shutil.which('systemd-analyze'):
        raise Skip('systemd-analyze is not installed')
    with tempfile.TemporaryDirectory() as t:
        for name in ('blockd.socket', 'blockd.service'):
            with open(os.path.join(REPO, 'examples', name)) as f:
                text = f.read()
            if name == 'blockd.service':
                assert_eq('ExecStart=/usr/bin/blockd ' in text, True,
                          'blockd.service runs /usr/bin/blockd')
                text = text.replace('/usr/bin/blockd', daemon_exe())
            with open(os.path.join(t, name), 'w') as f:
                f.write(text)
        p = subprocess.run(['systemd-analyze', 'verify', '--man=no', 'blockd.socket',
                            'blockd.service'], cwd=t, capture_output=True, text=True,
                           timeout=60)
        assert_eq((p.returncode, p.stderr.strip()), (0, ''),
                  'systemd-analyze verify examples/blockd.socket blockd.service')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
