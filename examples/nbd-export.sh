#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Export a raw image over NBD on a unix socket with blockd, then write and
# read it with qemu-io over nbd+unix://, and look at it with nbdinfo.
#   examples/nbd-export.sh [path/to/blockd]
# BLOCKD=path or BLOCKD_REFERENCE=1 (qemu-storage-daemon) select the daemon.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BLOCKD_REFERENCE:-0} != 0 ]]; then
    daemon=/usr/bin/qemu-storage-daemon
else
    daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
fi
[[ -x $daemon ]] || { echo "daemon $daemon not built (run meson compile -C build)" >&2; exit 77; }

dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# 1. A 64 MiB sparse raw image.
truncate -s 64M "$dir/disk.raw"

# 2. The daemon: a file node, a raw node on it, an NBD server, a writable export.
"$daemon" \
    --blockdev driver=file,node-name=disk-file,filename="$dir/disk.raw" \
    --blockdev driver=raw,node-name=disk,file=disk-file \
    --nbd-server addr.type=unix,addr.path="$dir/nbd.sock" \
    --export type=nbd,id=export0,node-name=disk,name=disk,writable=on \
    --pidfile "$dir/blockd.pid" &
pid=$!
for _ in $(seq 100); do [[ -S $dir/nbd.sock ]] && break; sleep 0.05; done
[[ -S $dir/nbd.sock ]] || { echo "daemon did not start" >&2; exit 1; }

uri="nbd+unix:///disk?socket=$dir/nbd.sock"
echo "exported $dir/disk.raw as $uri"

# 3. Write a pattern through NBD and read it back with a second client.
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 32M 4k' "$uri"
qemu-io -f raw -c 'read -P 0x5a 0 1M' -c 'read -P 0xa5 32M 4k' -c 'read -P 0 1M 1M' "$uri"

# 4. What a client sees: size and allocation map.
nbdinfo --size "$uri"
nbdinfo --map "$uri"

# 5. Stop the daemon; the data is in the file.
kill "$pid"; wait "$pid" || true; pid=
qemu-io -f raw -c 'read -P 0x5a 0 1M' "$dir/disk.raw"
echo "example finished: OK"
