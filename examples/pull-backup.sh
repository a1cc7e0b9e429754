#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A pull backup while the guest writes: a full backup session that starts
# checkpoint 'mon', then an incremental one that reads only what changed
# since 'mon' (nbdinfo --map on qemu:dirty-bitmap:mon, nbdsh to copy those
# extents).  Each restored image equals the disk at its session's start.
#   examples/pull-backup.sh [path/to/blockd]
# blockd's own commands (x-blockd-*): no qemu-storage-daemon variant.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
[[ ${BLOCKD_REFERENCE:-0} == 0 ]] || { echo "blockd only" >&2; exit 77; }
daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
[[ -x $daemon ]] || { echo "daemon $daemon not built (run meson compile -C build)" >&2; exit 77; }
for tool in socat nbdcopy nbdinfo nbdsh; do
    command -v $tool >/dev/null || { echo "$tool not installed" >&2; exit 77; }
done

dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

qmp() {
    printf '{"execute": "qmp_capabilities"}\n%s\n' "$1" |
        socat -t 5 - UNIX-CONNECT:"$dir/qmp.sock" | tail -n 1
}
qmp_ok() {
    local reply
    reply=$(qmp "$1")
    echo "-> $1"
    echo "<- $reply"
    [[ $reply == '{"return": '* ]] || { echo "unexpected reply" >&2; exit 1; }
}

# 1. A 64 MiB qcow2 disk with data, served to the "guest" over NBD.
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
qemu-io -f qcow2 -c 'write -P 1 0 8M' "$dir/disk.qcow2" >/dev/null
"$daemon" \
    --blockdev driver=file,node-name=disk-file,filename="$dir/disk.qcow2" \
    --blockdev driver=qcow2,node-name=disk,file=disk-file \
    --nbd-server addr.type=unix,addr.path="$dir/nbd.sock" \
    --export type=nbd,id=guest,node-name=disk,name=guest,writable=on \
    --chardev socket,id=qmp0,path="$dir/qmp.sock",server=on,wait=off \
    --monitor chardev=qmp0 &
pid=$!
for _ in $(seq 100); do [[ -S $dir/qmp.sock && -S $dir/nbd.sock ]] && break; sleep 0.05; done
guest="nbd+unix:///guest?socket=$dir/nbd.sock"

# 2. Full backup: the view is frozen at begin; the guest's write after it
#    does not reach the backup.  Checkpoint 'mon' starts at that instant.
qmp_ok '{"execute": "x-blockd-backup-begin", "arguments": {"node": "disk", "id": "full", "new-checkpoint": "mon"}}'
qemu-io -f raw -c 'write -P 2 0 1M' "$guest" >/dev/null
nbdcopy "nbd+unix:///full?socket=$dir/nbd.sock" "$dir/full.raw"
qmp_ok '{"execute": "x-blockd-backup-end", "arguments": {"id": "full"}}'
qemu-io -f raw -c 'read -P 1 0 8M' -c 'read -P 0 8M 56M' "$dir/full.raw" >/dev/null

# 3. More guest writes, then the incremental session since 'mon'.
qemu-io -f raw -c 'write -P 3 16M 1M' "$guest" >/dev/null
qmp_ok '{"execute": "x-blockd-backup-begin", "arguments": {"node": "disk", "id": "inc", "since": "mon", "new-checkpoint": "tue"}}'
qemu-io -f raw -c 'write -P 4 16M 1M' "$guest" >/dev/null    # after begin
inc="nbd+unix:///inc?socket=$dir/nbd.sock"
nbdinfo --map=qemu:dirty-bitmap:mon "$inc"
cp "$dir/full.raw" "$dir/restored.raw"
# Copy only the dirty extents onto the full backup.
# (nbdsh runs Debian's python3, where the libnbd binding lives.)
SRC=$inc DST=$dir/restored.raw PATH=/usr/bin:$PATH nbdsh -c '
import os
ctx = "qemu:dirty-bitmap:mon"
h.add_meta_context(ctx)
h.connect_uri(os.environ["SRC"])
size, off, extents = h.get_size(), 0, []
def record(meta, start, entries, err):
    global off
    if meta != ctx:
        return
    for i in range(0, len(entries), 2):
        if entries[i + 1] & 1:              # dirty
            extents.append((off, entries[i]))
        off += entries[i]
while off < size:
    h.block_status(min(size - off, 1 << 30), off, record)
fd = os.open(os.environ["DST"], os.O_WRONLY)
for pos, length in extents:
    os.pwrite(fd, h.pread(length, pos), pos)
os.close(fd)
print("copied", sum(n for _, n in extents), "bytes in", len(extents), "extents")
'
qmp_ok '{"execute": "x-blockd-backup-end", "arguments": {"id": "inc"}}'
# The disk as it was when 'inc' began: 2 at 0, 1 up to 8M, 3 at 16M.
qemu-io -f raw -c 'read -P 2 0 1M' -c 'read -P 1 1M 7M' -c 'read -P 3 16M 1M' \
    -c 'read -P 0 17M 47M' "$dir/restored.raw" >/dev/null
qmp_ok '{"execute": "x-blockd-checkpoint-list", "arguments": {"node": "disk"}}'

kill "$pid"; wait "$pid" || true; pid=
qemu-img check -q "$dir/disk.qcow2"
echo "example finished: OK"
