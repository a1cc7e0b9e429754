#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Mount a qcow2 image as a flat raw file with blockd's FUSE export, use it
# with ordinary tools, export the same node over NBD at once, and check the
# image with qemu-img afterwards.
#   examples/fuse-mount.sh [path/to/blockd]
# BLOCKD=path selects the daemon.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BLOCKD_REFERENCE:-0} != 0 ]]; then
    # Its writable FUSE export takes resize, which its NBD export unshares.
    echo "qemu-storage-daemon 7.2 cannot export one node over FUSE and NBD at once" >&2
    exit 77
fi
daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
[[ -x $daemon ]] || { echo "daemon $daemon not built (run meson compile -C build)" >&2; exit 77; }
[[ -c /dev/fuse ]] || { echo "no /dev/fuse here" >&2; exit 77; }

dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    fusermount3 -u "$dir/disk.raw" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# 1. A 64 MiB qcow2 image with 1 MiB of 0x5a at offset 0.
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
qemu-io -f qcow2 -c 'write -q -P 0x5a 0 1M' "$dir/disk.qcow2"

# 2. The daemon: the qcow2 node, mounted over an (existing, empty) regular
#    file, and exported over NBD too.  Both views see every write at once.
touch "$dir/disk.raw"
"$daemon" \
    --blockdev driver=qcow2,node-name=disk,file.driver=file,file.filename="$dir/disk.qcow2" \
    --export type=fuse,id=fuse0,node-name=disk,mountpoint="$dir/disk.raw",writable=on \
    --nbd-server addr.type=unix,addr.path="$dir/nbd.sock" \
    --export type=nbd,id=nbd0,node-name=disk,name=disk,writable=on &
pid=$!
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "blockd exited" >&2; exit 1; }
    [[ -S $dir/nbd.sock ]] && [[ $(stat -c %s "$dir/disk.raw" 2>/dev/null) == 67108864 ]] && break
    sleep 0.1
done

# 3. The mounted file is the image's raw content: any tool can use it.
echo "mounted size: $(stat -c %s "$dir/disk.raw")"
cmp -n 1048576 "$dir/disk.raw" <(head -c 1048576 /dev/zero | tr '\0' '\132')
printf 'hello from FUSE' | dd of="$dir/disk.raw" bs=1 seek=8M conv=notrunc status=none
sync "$dir/disk.raw"

# 4. The same bytes over NBD, at once.
qemu-io -f raw -c 'read -q -P 0x5a 0 1M' "nbd+unix:///disk?socket=$dir/nbd.sock"
nbdcopy "nbd+unix:///disk?socket=$dir/nbd.sock" "$dir/copy.raw"
dd if="$dir/copy.raw" bs=1 skip=8M count=15 status=none; echo
cmp "$dir/copy.raw" "$dir/disk.raw" && echo "NBD copy equals the mounted file"

# 5. Stop the daemon (unmounts), then check the image with qemu-img.
kill "$pid"; wait "$pid" || true; pid=
qemu-img check -q "$dir/disk.qcow2"
qemu-io -f qcow2 -c 'read -q -P 0x5a 0 1M' "$dir/disk.qcow2"
echo "example finished: OK"
