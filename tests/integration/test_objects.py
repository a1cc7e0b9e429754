#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""User-creatable objects other than throttle groups: secret, authz-simple,
authz-list and authz-listfile through object-add/object-del and --object,
with QEMU's messages for bad input, one id namespace shared with throttle
groups, and the types in query-qmp-schema.

The authz objects only act on TLS connections; here they are created,
refused and deleted (the unit test test-authz checks their matching).
qemu-storage-daemon 7.2 cannot create an authz-listfile (its QOM type is
'authz-list-file' while QAPI says 'authz-listfile'), so those tests run
against blockd only."""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, assert_in, is_reference, main,  # noqa: E402
                         skip_if_reference, start_daemon, tests_of)

GE = 'GenericError'

# AES-256-CBC test vectors (key bytes 0..31, IV bytes 100..115): QEMU
# decrypts CT_PASSWORD to "password123".
KEY_B64 = base64.b64encode(bytes(range(32))).decode()
IV_B64 = base64.b64encode(bytes(range(100, 116))).decode()
CT_PASSWORD = 'Pup2r6kyHNfgg9eWEyQyAw=='
CT_PASSWORD_RAW = bytes.fromhex('3eea76afa9321cd7e083d79613243203')
X16_B64 = base64.b64encode(b'x' * 16).decode()


def _secret(**props):
    return dict({'qom-type': 'secret'}, **props)


def _expect_errors(q, cases):
    """object-add of each dict fails with GenericError and the text."""
    for args, desc in cases:
        e = q.error('object-add', args)
        assert_eq(e, {'class': GE, 'desc': desc}, 'object-add %r' % (args,))
        q.execute('query-version')      # the session goes on


def test_secret_add_del():
    with start_daemon() as d:
        q = d.qmp()
        path = d.path('pw.txt')
        with open(path, 'w') as f:
            f.write('from a file\n')
        assert_eq(q.execute('object-add', _secret(id='s0', data='pw')), {}, 'inline secret')
        q.execute('object-add', _secret(id='s1', file=path))
        q.execute('object-add', _secret(id='s2', data='cGFzc3dvcmQ=', format='base64'))
        q.execute('object-add', _secret(id='s3', data='', format='raw'))
        # An iv without a keyid is not looked at (QEMU's behaviour).
        q.execute('object-add', _secret(id='s4', data='x', iv='!!'))
        e = q.error('object-add', _secret(id='s0', data='other'))
        assert_eq(e, {'class': GE, 'desc': "attempt to add duplicate property 's0' to object "
                                           "(type 'container')"}, 'duplicate id')
        # The duplicate id is reported before the object's own checks.
        e = q.error('object-add', _secret(id='s0'))
        assert_in('duplicate property', e['desc'], 'id checked before data')
        for i in ('s0', 's1', 's2', 's3', 's4'):
            assert_eq(q.execute('object-del', {'id': i}), {}, 'object-del ' + i)
        e = q.error('object-del', {'id': 's0'})
        assert_eq(e, {'class': GE, 'desc': "object 's0' not found"}, 'deleted twice')
        q.execute('object-add', _secret(id='s0', data='again'))


def test_secret_errors():
    with start_daemon() as d:
        q = d.qmp()
        nul = d.path('nul.b64')
        with open(nul, 'wb') as f:
            f.write(b'YWJj\0YWJj')
        _expect_errors(q, [
            (_secret(id='s'), "Either 'file' or 'data' must be provided"),
            (_secret(id='s', data='x', file=nul), "'file' and 'data' are mutually exclusive"),
            (_secret(id='s', file='/nonexistent/pw'),
             'Unable to read /nonexistent/pw: Failed to open file \u201c/nonexistent/pw\u201d: '
             'No such file or directory'),
            (_secret(id='s', file=d.dir),
             'Unable to read %s: Error reading file \u201c%s\u201d: Is a directory' % (d.dir, d.dir)),
            (_secret(id='s', data='!!!', format='base64'), 'Base64 data contains invalid characters'),
            (_secret(id='s', data='YW Jj', format='base64'),
             'Base64 data contains invalid characters'),
            (_secret(id='s', file=nul, format='base64'),
             'Base64 data contains embedded NUL characters'),
            (_secret(id='s', data='x', format='hex'), "Parameter 'format' does not accept value 'hex'"),
            (_secret(id='s', data=1), "Invalid parameter type for 'data', expected: string"),
            (_secret(id='s', data='x', loaded=True), "Property 'secret.loaded' is not writable"),
            (_secret(id='s', data='x', loaded=False), "Property 'secret.loaded' is not writable"),
            (_secret(id='s', data='x', bogus=1), "Parameter 'bogus' is unexpected"),
            (_secret(id='1s', data='x'), "Parameter 'id' expects an identifier"),
            (_secret(data='x'), "Parameter 'id' is missing"),
        ])


def test_secret_encrypted():
    with start_daemon() as d:
        q = d.qmp()
        raw = d.path('ct.bin')
        with open(raw, 'wb') as f:
            f.write(CT_PASSWORD_RAW)
        q.execute('object-add', _secret(id='key', data=KEY_B64, format='base64'))
        q.execute('object-add', _secret(id='short', data='pw'))
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'az', 'identity': 'x'})
        q.execute('object-add', _secret(id='pw0', data=CT_PASSWORD, format='base64',
                                        keyid='key', iv=IV_B64))
        q.execute('object-add', _secret(id='pw1', file=raw, keyid='key', iv=IV_B64))
        enc = dict(keyid='key', iv=IV_B64)
        _expect_errors(q, [
            (_secret(id='s', data='x', keyid='nokey'), "No secret with id 'nokey'"),
            (_secret(id='s', data='x', keyid=''), "No secret with id ''"),
            (_secret(id='s', data='x', keyid='az'), "Object with id 'az' is not a secret"),
            (_secret(id='s', data='x', keyid='short'), 'Key should be 32 bytes in length'),
            (_secret(id='s', data='x', keyid='key'), 'IV is required to decrypt secret'),
            (_secret(id='s', data='x', keyid='key', iv='!!'),
             'Base64 data contains invalid characters'),
            (_secret(id='s', data='x', keyid='key', iv=base64.b64encode(b'x' * 15).decode()),
             'IV should be 16 bytes in length not 15'),
            (_secret(id='s', data='x', **enc), 'Length 1 must be a multiple of block size 16'),
            (_secret(id='s', data='x' * 16, format='base64', **enc),
             'Length 12 must be a multiple of block size 16'),
            # The key's first byte decides what garbage decrypts to.
            (_secret(id='s', data=X16_B64, format='base64', keyid='key', iv=X16_B64),
             'Incorrect number of padding bytes (27) found on decrypted data'),
        ])
        for i in ('pw0', 'pw1', 'key', 'short', 'az'):
            q.execute('object-del', {'id': i})


def test_authz_add_del():
    with start_daemon() as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'a0', 'identity': 'CN=fred'})
        q.execute('object-add', {'qom-type': 'authz-simple', 'id': 'a1', 'identity': ''})
        q.execute('object-add', {'qom-type': 'authz-list', 'id': 'l0'})
        q.execute('object-add', {'qom-type': 'authz-list', 'id': 'l1', 'rules': []})
        q.execute('object-add', {
            'qom-type': 'authz-list', 'id': 'l2', 'policy': 'allow',
            'rules': [{'match': 'fred', 'policy': 'deny'},
                      {'match': '*', 'policy': 'allow', 'format': 'glob'},
                      {'match': 'bob', 'policy': 'deny', 'format': 'exact'}]})
        e = q.error('object-add', {'qom-type': 'authz-list', 'id': 'a0'})
        assert_in("duplicate property 'a0'", e['desc'], 'ids shared by every type')
        for i in ('a0', 'a1', 'l0', 'l1', 'l2'):
            assert_eq(q.execute('object-del', {'id': i}), {}, 'object-del ' + i)


def test_authz_errors():
    with start_daemon() as d:
        q = d.qmp()
        _expect_errors(q, [
            ({'qom-type': 'authz-simple', 'id': 'a'}, "Parameter 'identity' is missing"),
            ({'qom-type': 'authz-simple', 'id': 'a', 'identity': 1},
             "Invalid parameter type for 'identity', expected: string"),
            ({'qom-type': 'authz-simple', 'id': 'a', 'identity': 'x', 'bogus': 1},
             "Parameter 'bogus' is unexpected"),
            ({'qom-type': 'authz-list', 'id': 'l', 'policy': 'maybe'},
             "Parameter 'policy' does not accept value 'maybe'"),
            ({'qom-type': 'authz-list', 'id': 'l', 'rules': [{'match': 'fred'}]},
             "Parameter 'rules[0].policy' is missing"),
            ({'qom-type': 'authz-list', 'id': 'l', 'rules': [{'policy': 'allow'}]},
             "Parameter 'rules[0].match' is missing"),
            ({'qom-type': 'authz-list', 'id': 'l',
              'rules': [{'match': 'a', 'policy': 'allow', 'format': 'regex'}]},
             "Parameter 'format' does not accept value 'regex'"),
            ({'qom-type': 'authz-list', 'id': 'l',
              'rules': [{'match': 'a', 'policy': 'allow', 'bogus': 1}]},
             "Parameter 'rules[0].bogus' is unexpected"),
            ({'qom-type': 'authz-list', 'id': 'l', 'rules': {'match': 'a', 'policy': 'allow'}},
             "Invalid parameter type for 'rules', expected: array"),
            ({'qom-type': 'authz-listfile', 'id': 'f'}, "Parameter 'filename' is missing"),
            ({'qom-type': 'authz-listfile', 'id': 'f', 'filename': '/x', 'refresh': 'no'},
             "Invalid parameter type for 'refresh', expected: boolean"),
        ])


def _write_json(path, value):
    with open(path, 'w') as f:
        if isinstance(value, str):
            f.write(value)
        else:
            json.dump(value, f)
    return path


def test_authz_listfile():
    skip_if_reference('QSD 7.2 has no authz-listfile ("invalid object type")')
    with start_daemon() as d:
        q = d.qmp()
        acl = _write_json(d.path('acl.json'), {
            'policy': 'deny',
            'rules': [{'match': 'CN=fred*', 'policy': 'allow', 'format': 'glob'}]})
        q.execute('object-add', {'qom-type': 'authz-listfile', 'id': 'f0', 'filename': acl})
        q.execute('object-add', {'qom-type': 'authz-listfile', 'id': 'f1', 'filename': acl,
                                 'refresh': False})
        # The watched file changes: a bad version is refused with a
        # warning in the log, and the daemon goes on.
        _write_json(acl, 'not json')
        q.execute('query-version')
        _write_json(acl, {'policy': 'allow'})
        d.assert_alive()
        for i in ('f0', 'f1'):
            assert_eq(q.execute('object-del', {'id': i}), {}, 'object-del ' + i)
        # The file may change after the object is gone.
        _write_json(acl, {'policy': 'deny'})
        q.execute('query-version')


def test_authz_listfile_errors():
    skip_if_reference('QSD 7.2 has no authz-listfile ("invalid object type")')
    with start_daemon() as d:
        q = d.qmp()

        def bad(name, content):
            return _write_json(d.path(name), content)

        cases = [
            ('/nonexistent/acl.json',
             "Unable to read '/nonexistent/acl.json': Failed to open file "
             "\u201c/nonexistent/acl.json\u201d: No such file or directory"),
            (bad('array.json', [1]), "File '%s' must contain a JSON object" % d.path('array.json')),
            (bad('policy.json', {'policy': 'maybe'}),
             "Parameter 'policy' does not accept value 'maybe'"),
            (bad('member.json', {'bogus': 1}), "Property 'authz-list.bogus' not found"),
            (bad('rules.json', {'rules': {}}), "Invalid parameter type for 'rules', expected: array"),
            (bad('match.json', {'rules': [{'policy': 'allow'}]}),
             "Parameter 'rules[0].match' is missing"),
            (bad('rpolicy.json', {'rules': [{'match': 'a', 'policy': 'x'}]}),
             "Parameter 'policy' does not accept value 'x'"),
            (bad('extra.json', {'rules': [{'match': 'a', 'policy': 'allow', 'y': 1}]}),
             "Parameter 'rules[0].y' is unexpected"),
            # Watched files need an absolute path; the daemon's working
            # directory is the test's.
            (os.path.basename(bad('relative.json', {})), 'Filename must be an absolute path'),
        ]
        for filename, desc in cases:
            e = q.error('object-add', {'qom-type': 'authz-listfile', 'id': 'f',
                                       'filename': filename})
            assert_eq(e, {'class': GE, 'desc': desc}, 'authz-listfile %s' % filename)
        e = q.error('object-add', {'qom-type': 'authz-listfile', 'id': 'f',
                                   'filename': bad('syntax.json', 'not json')})
        assert_in('JSON parse error', e['desc'], 'syntax error')
        # Without refresh a relative path is fine.
        q.execute('object-add', {'qom-type': 'authz-listfile', 'id': 'f',
                                 'filename': 'relative.json', 'refresh': False})


def test_one_namespace_with_throttle_groups():
    with start_daemon() as d:
        q = d.qmp()
        q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg'})
        q.execute('object-add', _secret(id='sec', data='x'))
        dup = "attempt to add duplicate property '%s' to object (type 'container')"
        _expect_errors(q, [
            (_secret(id='tg', data='x'), dup % 'tg'),
            ({'qom-type': 'authz-simple', 'id': 'tg', 'identity': 'x'}, dup % 'tg'),
            ({'qom-type': 'throttle-group', 'id': 'sec'}, dup % 'sec'),
            ({'qom-type': 'no-such-type', 'id': 'x'},
             "Parameter 'qom-type' does not accept value 'no-such-type'"),
        ])
        assert_eq(q.execute('object-del', {'id': 'tg'}), {}, 'throttle group deleted')
        assert_eq(q.execute('object-del', {'id': 'sec'}), {}, 'secret deleted')
        q.execute('object-add', _secret(id='tg', data='x'))
        q.execute('object-add', {'qom-type': 'throttle-group', 'id': 'sec'})


def test_cmdline_objects():
    d = Daemon()
    pw = d.path('pw.txt')
    with open(pw, 'w') as f:
        f.write('pw\n')
    d.args = ['--object', 'secret,id=s0,data=abc',
              '--object', 'secret,id=s1,file=%s,format=raw' % pw,
              '--object', 'secret,id=key,data=%s,format=base64' % KEY_B64,
              '--object', 'secret,id=s2,data=%s,format=base64,keyid=key,iv=%s'
                          % (CT_PASSWORD, IV_B64),
              '--object', '{"qom-type": "secret", "id": "s3", "data": "a,b"}',
              '--object', 'secret,id=s4,data=a,,b',
              '--object', 'authz-simple,id=a0,identity=CN=fred',
              '--object', 'authz-list,id=l0,policy=allow,rules.0.match=fred,rules.0.policy=deny,'
                          'rules.1.match=*,rules.1.policy=allow,rules.1.format=glob',
              '--object', '{"qom-type": "authz-list", "id": "l1", '
                          '"rules": [{"match": "bob", "policy": "allow"}]}'] + d.args
    with d:
        d.start()
        q = d.qmp()
        for i in ('s0', 's1', 'key', 's2', 's3', 's4', 'a0', 'l0', 'l1'):
            e = q.error('object-add', _secret(id=i, data='x'))
            assert_in("duplicate property '%s'" % i, e['desc'], 'command-line object ' + i)
        for i in ('s0', 's1', 's2', 's3', 's4', 'key', 'a0', 'l0', 'l1'):
            assert_eq(q.execute('object-del', {'id': i}), {}, 'object-del ' + i)


def test_cmdline_listfile():
    skip_if_reference('QSD 7.2 has no authz-listfile ("invalid object type")')
    d = Daemon()
    acl = _write_json(d.path('acl.json'), {'policy': 'allow'})
    d.args = ['--object', 'authz-listfile,id=f0,filename=%s' % acl,
              '--object', 'authz-listfile,id=f1,filename=%s,refresh=off' % acl,
              '--object', 'authz-listfile,id=f2,filename=acl.json,refresh=no'] + d.args
    with d:
        d.start()
        q = d.qmp()
        for i in ('f0', 'f1', 'f2'):
            assert_eq(q.execute('object-del', {'id': i}), {}, 'object-del ' + i)


def test_cmdline_object_errors():
    cases = [
        ('secret,id=s0', "Either 'file' or 'data' must be provided"),
        ('secret,id=s0,data=a,,b,format=base64', 'Base64 data contains invalid characters'),
        ('secret,id=s0,data=x,loaded=on', "Property 'secret.loaded' is not writable"),
        ('secret,id=s0,data=x,loaded=maybe', "Parameter 'loaded' expects 'on' or 'off'"),
        ('secret,id=s0,file=/nonexistent',
         'Unable to read /nonexistent: Failed to open file \u201c/nonexistent\u201d: '
         'No such file or directory'),
        ('authz-simple,id=a0', "Parameter 'identity' is missing"),
        ('authz-list,id=l0,rules.0.match=fred', "Parameter 'rules.0.policy' is missing"),
        ('authz-list,id=l0,rules.0.match=fred,rules.0.policy=x',
         "Parameter 'policy' does not accept value 'x'"),
        ('authz-listfile,id=f,filename=/x,refresh=maybe',
         "Parameter 'refresh' expects 'on' or 'off'"),
    ]
    for arg, msg in cases:
        d = Daemon(qmp=False)
        with d:
            d.args = ['--object', arg]
            d.start()
            rc = d.wait_exit()
            assert rc != 0, '--object %s: exit code %d' % (arg, rc)
            assert_in('--object %s: %s' % (arg, msg), d.stderr(), 'stderr')


def test_schema():
    """ObjectOptions in query-qmp-schema lists the types with QEMU's
    members (blockd: exactly the types it implements)."""
    expected = {
        'secret': ['loaded', 'format', 'keyid', 'iv', 'data', 'file'],
        'authz-simple': ['identity'],
        'iothread': ['aio-max-batch', 'thread-pool-min', 'thread-pool-max',
                     'poll-max-ns', 'poll-grow', 'poll-shrink'],
        'authz-list': ['policy', 'rules'],
        'authz-listfile': ['filename', 'refresh'],
        'tls-creds-anon': ['verify-peer', 'dir', 'endpoint', 'priority', 'loaded'],
        'tls-creds-psk': ['verify-peer', 'dir', 'endpoint', 'priority', 'loaded', 'username'],
        'tls-creds-x509': ['verify-peer', 'dir', 'endpoint', 'priority', 'loaded',
                           'sanity-check', 'passwordid'],
    }
    with start_daemon() as d:
        q = d.qmp()
        schema = q.execute('query-qmp-schema')
        types = {t['name']: t for t in schema}
        add = [t for t in schema if t['name'] == 'object-add'][0]
        options = types[add['arg-type']]
        assert_eq(options['tag'], 'qom-type', 'ObjectOptions discriminator')
        variants = {v['case']: types[v['type']] for v in options['variants']}
        qom_type = types[[m for m in options['members'] if m['name'] == 'qom-type'][0]['type']]
        for name, members in expected.items():
            assert_in(name, qom_type['values'], 'ObjectType values')
            assert_eq([m['name'] for m in variants[name]['members']], members,
                      '%s members' % name)
        rules = types[[m for m in variants['authz-list']['members']
                       if m['name'] == 'rules'][0]['type']]
        rule = types[rules['element-type']]
        assert_eq([(m['name'], 'default' in m) for m in rule['members']],
                  [('match', False), ('policy', False), ('format', True)], 'QAuthZListRule')
        fmt = types[[m for m in variants['secret']['members'] if m['name'] == 'format'][0]['type']]
        assert_eq(fmt['values'], ['raw', 'base64'], 'QCryptoSecretFormat')
        if not is_reference():          # QSD lists many more types
            assert_eq(qom_type['values'], sorted(list(expected) + ['throttle-group']),
                      'ObjectType: exactly what blockd implements')


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
