#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The NBD error a client reads for each errno the graph fails with, as
QEMU's server maps them (nbd/server.c): EPERM and EROFS are NBD_EPERM,
EDQUOT and EFBIG NBD_ENOSPC (as the protocol asks), ENOTSUP NBD_ENOTSUP on
any command, the protocol's own values pass through, and every other errno
(ENOENT, EBADF, EACCES, EAGAIN, ...) is NBD_EINVAL.  The errors are
injected by blkdebug under an NBD export and read back with libnbd.  Every
case runs against qemu-storage-daemon too."""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockd_test import (Daemon, assert_eq, main, make_image, nbd_errno, require_nbd, tests_of)  # noqa: E402

MiB = 1 << 20
# blkdebug iotypes and the libnbd calls that reach them.
IOTYPES = ('read', 'write', 'write-zeroes', 'flush')


def _daemon_failing_with(errnum):
    """A daemon exporting a raw image (filled with data, so that reads
    really read) under blkdebug failing every request with 'errnum'."""
    d = Daemon()
    try:
        d.start()
        img = make_image(d.path('a.raw'), MiB, pattern=0x3c)
        q = d.qmp()
        q.execute('blockdev-add', {
            'driver': 'blkdebug', 'node-name': 'dbg',
            'image': {'driver': 'file', 'filename': img},
            'inject-error': [{'event': 'none', 'iotype': t, 'errno': errnum,
                              'immediately': True, 'once': False} for t in IOTYPES]})
        q.execute('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.nbd_sock}}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'dbg',
                                       'name': 'disk', 'writable': True})
    except BaseException:
        d.cleanup()
        raise
    return d


def _client_errnos(d, structured):
    """The errno of a failing read, write, write-zeroes (plain and
    FAST_ZERO) and flush, as {command: errno}."""
    nbd = require_nbd()
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.connect_uri(d.uri())
    got = {
        'write': nbd_errno(h.pwrite, b'\x11' * 4096, 0),
        'zero': nbd_errno(h.zero, 4096, 0),
        'fast-zero': nbd_errno(h.zero, 4096, 0, nbd.CMD_FLAG_FAST_ZERO),
        'flush': nbd_errno(h.flush),
    }
    # qemu-storage-daemon 7.2 drops a client whose structured read fails
    # instead of sending the error chunk: reads with simple replies only,
    # where both daemons send the error.
    if not structured:
        got['read'] = nbd_errno(h.pread, 4096, 0)
    h.shutdown()
    return got


def _check(errnum, expected):
    """Every command fails with 'expected' (an errno) over both reply
    kinds when blkdebug injects 'errnum'."""
    with _daemon_failing_with(errnum) as d:
        for structured in (False, True):
            got = _client_errnos(d, structured)
            want = {cmd: expected for cmd in got}
            assert_eq(got, want, 'errno %s (%s replies)'
                      % (errno.errorcode[errnum], 'structured' if structured else 'simple'))


def test_erofs_is_eperm():
    """A read-only failure (EROFS) reaches the client as NBD_EPERM."""
    _check(errno.EROFS, errno.EPERM)


def test_eperm_is_eperm():
    _check(errno.EPERM, errno.EPERM)


def test_enotsup_is_enotsup():
    """ENOTSUP reaches the client as NBD_ENOTSUP on every command, as with
    QEMU (the protocol reserves it for FAST_ZERO, but leaves a server free
    to send it: a client treats an unexpected value as NBD_EINVAL)."""
    _check(errno.ENOTSUP, errno.ENOTSUP)


def test_enoent_is_einval():
    """An errno the protocol does not list (ENOENT) is NBD_EINVAL, as QEMU,
    not NBD_EIO."""
    _check(errno.ENOENT, errno.EINVAL)


def test_ebadf_eacces_eagain_are_einval():
    for errnum in (errno.EBADF, errno.EACCES, errno.EAGAIN):
        _check(errnum, errno.EINVAL)


def test_edquot_efbig_are_enospc():
    """The protocol asks EDQUOT and EFBIG to be sent as NBD_ENOSPC."""
    for errnum in (errno.EDQUOT, errno.EFBIG):
        _check(errnum, errno.ENOSPC)


def test_protocol_values_pass_through():
    """EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW and ESHUTDOWN have NBD values
    of their own."""
    for errnum in (errno.EIO, errno.ENOMEM, errno.EINVAL, errno.ENOSPC, errno.EOVERFLOW,
                   errno.ESHUTDOWN):
        _check(errnum, errnum)


if __name__ == '__main__':
    sys.exit(main(tests_of(globals())))
