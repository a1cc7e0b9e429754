#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A stand-in for systemd's journal, for one command (test_logs.py).

  unshare -m --propagation private journal_sink.py JOURNAL -- COMMAND...

Run in a private mount namespace (as root), it mounts a tmpfs over /run
there, so that nothing outside sees it, and listens where journald does:

  /run/systemd/journal/socket   datagrams in journald's native protocol,
                                what GLib's g_log_writer_journald sends;
  /run/systemd/journal/stdout   the stream a service's stdout and stderr
                                are connected to (g_log_writer_is_journald
                                knows the journal by this peer address).

COMMAND runs with stdout and stderr connected to the stream, and
JOURNAL_STREAM set to that socket's device:inode as systemd sets it.
Each datagram is appended to JOURNAL as one JSON object of its fields
(flushed at once, so a test can poll it); what comes on the stream is
copied to this script's stderr (the daemon's usual stderr file).
SIGTERM and SIGINT are passed on; the exit status is the command's.
"""

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys

JOURNAL_DIR = '/run/systemd/journal'


def fields(data):
    """journald's native protocol: 'KEY=value\\n', or for a value with a
    newline 'KEY\\n', its length (64-bit little endian), the value, '\\n'."""
    out = {}
    i = 0
    while i < len(data):
        nl = data.find(b'\n', i)
        if nl < 0:
            raise ValueError('field without an end at %d' % i)
        line = data[i:nl]
        if b'=' in line:
            key, _, value = line.partition(b'=')
            i = nl + 1
        else:
            key = line
            (n,) = struct.unpack('<Q', data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + n]
            if data[nl + 9 + n:nl + 10 + n] != b'\n':
                raise ValueError('binary field %r without its newline' % key)
            i = nl + 10 + n
        out[key.decode()] = value.decode(errors='replace')
    return out


def main(argv):
    if len(argv) < 4 or argv[2] != '--':
        print(__doc__, file=sys.stderr)
        return 2
    journal_path, cmd = argv[1], argv[3:]
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run'], check=True)
    os.makedirs(JOURNAL_DIR)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(os.path.join(JOURNAL_DIR, 'socket'))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(JOURNAL_DIR, 'stdout'))
    listener.listen(1)
    out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out.connect(os.path.join(JOURNAL_DIR, 'stdout'))
    stream, _ = listener.accept()
    listener.close()
    st = os.fstat(out.fileno())
    env = dict(os.environ, JOURNAL_STREAM='%d:%d' % (st.st_dev, st.st_ino))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out.fileno(),
                            stderr=out.fileno(), env=env)
    out.close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: proc.send_signal(s))

    sel = selectors.DefaultSelector()
    sel.register(dgram, selectors.EVENT_READ)
    sel.register(stream, selectors.EVENT_READ)
    with open(journal_path, 'a') as journal:
        stream_open = True
        while True:
            done = proc.poll() is not None
            # After the exit, read what is left without waiting.
            events = sel.select(timeout=0 if done else 0.2)
            if done and not events:
                break
            for key, _ in events:
                if key.fileobj is dgram:
                    data, anc, _, _ = dgram.recvmsg(1 << 20, socket.CMSG_SPACE(64))
                    # A message too big for a datagram comes as a memfd.
                    entry = fields(data) if data else {'_MEMFD': str(len(anc))}
                    journal.write(json.dumps(entry) + '\n')
                    journal.flush()
                elif stream_open:
                    data = stream.recv(65536)
                    if not data:
                        sel.unregister(stream)
                        stream_open = False
                    else:
                        sys.stderr.buffer.write(data)
                        sys.stderr.flush()
    return proc.returncode


if __name__ == '__main__':
    sys.exit(main(sys.argv))
