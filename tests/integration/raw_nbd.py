# SPDX-License-Identifier: MIT
"""A minimal client of the NBD fixed-newstyle handshake for the TLS tests:
RawNBD reads the greeting, sends the client flags, then options and their
replies, and after NBD_OPT_STARTTLS runs the TLS handshake with Python's
ssl (X.509 only: the ssl module has no PSK here); idle_sockets opens
connections that never say a word.  The constants are doc/proto.md's."""

import contextlib
import os
import socket
import ssl
import struct
import time

# NBD handshake constants (doc/proto.md).
NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3e889045565a9
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FLAG_FIXED_NEWSTYLE = 1 << 0
CLIENT_FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR = 1 << 31
REP_ERR_UNSUP = REP_ERR + 1
REP_ERR_POLICY = REP_ERR + 2
REP_ERR_INVALID = REP_ERR + 3
REP_ERR_PLATFORM = REP_ERR + 4
REP_ERR_TLS_REQD = REP_ERR + 5
REP_ERR_UNKNOWN = REP_ERR + 6
REP_ERR_SHUTDOWN = REP_ERR + 7
REP_ERR_BLOCK_SIZE_REQD = REP_ERR + 8

REP_NAMES = {
    REP_ACK: 'ACK', REP_SERVER: 'SERVER', REP_INFO: 'INFO', REP_META_CONTEXT: 'META_CONTEXT',
    REP_ERR_UNSUP: 'ERR_UNSUP', REP_ERR_POLICY: 'ERR_POLICY', REP_ERR_INVALID: 'ERR_INVALID',
    REP_ERR_PLATFORM: 'ERR_PLATFORM', REP_ERR_TLS_REQD: 'ERR_TLS_REQD',
    REP_ERR_UNKNOWN: 'ERR_UNKNOWN', REP_ERR_SHUTDOWN: 'ERR_SHUTDOWN',
    REP_ERR_BLOCK_SIZE_REQD: 'ERR_BLOCK_SIZE_REQD',
}


class HandshakeClosed(Exception):
    """The server closed the connection during the handshake."""


class RawNBD:
    """One fixed-newstyle handshake over TCP or a unix socket: greeting,
    client flags, then options and their replies.  starttls() sends
    NBD_OPT_STARTTLS and, on its ACK, runs the TLS handshake with Python's
    ssl (X.509 only: the ssl module has no PSK here)."""

    def __init__(self, port=None, path=None, timeout=10.0, flags=None, send_flags=True):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            addr = path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = ('127.0.0.1', port)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        magic, opt, self.server_flags = struct.unpack('>QQH', self.recv_exact(18))
        if magic != NBDMAGIC or opt != IHAVEOPT:
            raise AssertionError('bad greeting %x %x' % (magic, opt))
        if flags is None:
            flags = CLIENT_FLAG_FIXED_NEWSTYLE | (self.server_flags & FLAG_NO_ZEROES)
        if send_flags:  # False: stay silent after the greeting
            self.sock.sendall(struct.pack('>I', flags))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def recv_exact(self, n):
        buf = b''
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                chunk = b''
            if not chunk:
                raise HandshakeClosed('server closed the connection after %d of %d bytes'
                                      % (len(buf), n))
            buf += chunk
        return buf

    def send_option(self, opt, data=b''):
        self.sock.sendall(struct.pack('>QII', IHAVEOPT, opt, len(data)) + data)

    def read_reply(self, opt=None):
        """(reply type, data) of the next option reply."""
        magic, ropt, rtype, length = struct.unpack('>QIII', self.recv_exact(20))
        if magic != REPLY_MAGIC:
            raise AssertionError('bad option reply magic %x' % magic)
        if opt is not None and ropt != opt:
            raise AssertionError('reply to option %d, expected %d' % (ropt, opt))
        data = self.recv_exact(length) if length else b''
        return rtype, data

    def option(self, opt, data=b''):
        """Send an option; the list of its replies, up to the final one
        (an ACK or an error)."""
        self.send_option(opt, data)
        replies = []
        while True:
            rtype, rdata = self.read_reply(opt)
            replies.append((rtype, rdata))
            if rtype == REP_ACK or rtype & REP_ERR:
                return replies

    def option_reply(self, opt, data=b''):
        """The type of the final reply of an option."""
        return self.option(opt, data)[-1][0]

    def info_data(self, name='disk', infos=()):
        n = name.encode()
        return struct.pack('>I', len(n)) + n + struct.pack('>H', len(infos)) + \
            b''.join(struct.pack('>H', i) for i in infos)

    def starttls(self, creds_dir, server_hostname='localhost'):
        """NBD_OPT_STARTTLS and the TLS handshake with client-cert.pem (when
        creds_dir has one) against ca-cert.pem.  Returns the reply type;
        on an ACK the socket is the TLS one (or ssl.SSLError is raised)."""
        rtype = self.option_reply(OPT_STARTTLS)
        if rtype != REP_ACK:
            return rtype
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(os.path.join(creds_dir, 'ca-cert.pem'))
        cert = os.path.join(creds_dir, 'client-cert.pem')
        if os.path.exists(cert):
            ctx.load_cert_chain(cert, os.path.join(creds_dir, 'client-key.pem'))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        return rtype

    def closed_by_server(self, timeout=5.0):
        """Whether the server closes the connection (EOF or reset) within
        timeout, reading and dropping anything it sends first."""
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self.sock.settimeout(max(0.01, end - time.monotonic()))
                if not self.sock.recv(4096):
                    return True
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            return True
        return False


def rep_name(rtype):
    return REP_NAMES.get(rtype, hex(rtype))


@contextlib.contextmanager
def idle_sockets(port, count):
    """`count` TCP connections to 127.0.0.1:port that never say anything;
    all closed when the block ends.  Yields the list."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(('127.0.0.1', port))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()
