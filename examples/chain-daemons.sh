#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Chain two daemons: A serves a qcow2 image over NBD; B opens A's export
# with the nbd driver (blockd as an NBD client), re-exports it over NBD,
# mounts it as a file over FUSE, and keeps a local qcow2 overlay on top
# of it, so writes stay on B while reads of untouched data come from A.
#   examples/chain-daemons.sh [path/to/blockd]
# BLOCKD=path or BLOCKD_REFERENCE=1 (qemu-storage-daemon) select the daemon.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BLOCKD_REFERENCE:-0} != 0 ]]; then
    daemon=/usr/bin/qemu-storage-daemon
else
    daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
fi
[[ -x $daemon ]] || { echo "daemon $daemon not built (run meson compile -C build)" >&2; exit 77; }
command -v fusermount3 >/dev/null && [[ -c /dev/fuse ]] ||
    { echo "FUSE not available" >&2; exit 77; }

dir=$(mktemp -d)
pid_a= pid_b=
cleanup() {
    for p in $pid_b $pid_a; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    fusermount3 -u "$dir/view.raw" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

wait_socket() {
    for _ in $(seq 100); do [[ -S $1 ]] && return 0; sleep 0.05; done
    echo "no socket $1: daemon did not start" >&2; exit 1
}

# 1. Daemon A: a qcow2 image with some data, exported as "base".
qemu-img create -q -f qcow2 "$dir/base.qcow2" 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 16M 1M' "$dir/base.qcow2" >/dev/null
"$daemon" \
    --blockdev driver=qcow2,node-name=base,file.driver=file,file.filename="$dir/base.qcow2" \
    --nbd-server addr.type=unix,addr.path="$dir/a.sock" \
    --export type=nbd,id=e0,node-name=base,name=base &
pid_a=$!
wait_socket "$dir/a.sock"
base_uri="nbd+unix:///base?socket=$dir/a.sock"

# 2. A local overlay whose backing file is A's export (an NBD URI in the
#    qcow2 header, as QEMU writes it).
qemu-img create -q -f qcow2 -b "$base_uri" -F raw "$dir/overlay.qcow2"

# 3. Daemon B: the remote node (reconnect-delay: requests wait up to 5 s
#    for A to come back), the overlay on its own backing file name, an
#    NBD re-export of the remote node and a FUSE mount of the overlay.
touch "$dir/view.raw"
"$daemon" \
    --blockdev driver=nbd,node-name=remote,server.type=unix,server.path="$dir/a.sock",export=base,reconnect-delay=5,read-only=on \
    --blockdev driver=qcow2,node-name=overlay,file.driver=file,file.filename="$dir/overlay.qcow2" \
    --nbd-server addr.type=unix,addr.path="$dir/b.sock" \
    --export type=nbd,id=e1,node-name=remote,name=remote \
    --export type=fuse,id=f0,node-name=overlay,mountpoint="$dir/view.raw",writable=on &
pid_b=$!
wait_socket "$dir/b.sock"
for _ in $(seq 100); do [[ $(stat -c %s "$dir/view.raw") == 67108864 ]] && break; sleep 0.05; done

# 4. B's re-export shows A's data and A's holes.
qemu-img compare -q -U -f raw -F qcow2 "nbd+unix:///remote?socket=$dir/b.sock" "$dir/base.qcow2"
nbdinfo --map "nbd+unix:///remote?socket=$dir/b.sock"

# 5. Through the mounted overlay: A's data, then a local write.
qemu-io -f raw -c 'read -P 0x11 0 1M' -c 'read -P 0x22 16M 1M' "$dir/view.raw" >/dev/null
qemu-io -f raw -c 'write -P 0x33 0 64k' "$dir/view.raw" >/dev/null
echo "read A's data through B, wrote 64 KiB into B's overlay"

# 6. Stop B: the write is in the overlay (whose backing A still serves),
#    and A's image is untouched.
kill "$pid_b"; wait "$pid_b" || true; pid_b=
qemu-img check -q "$dir/overlay.qcow2"
qemu-io -f qcow2 -c 'read -P 0x33 0 64k' -c 'read -P 0x11 64k 960k' "$dir/overlay.qcow2" >/dev/null
qemu-io -r -f raw -c 'read -P 0x11 0 1M' "$base_uri" >/dev/null
kill "$pid_a"; wait "$pid_a" || true; pid_a=
echo "example finished: OK"
