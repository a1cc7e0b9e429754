#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Pull-mode backups with blockctl: a full backup of a running disk, an
# incremental one after the guest wrote, both restored and checked.
#   examples/backup.sh [path/to/blockd]
# BLOCKD=path selects the daemon, BLOCKCTL=path the client.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BLOCKD_REFERENCE:-0} != 0 ]]; then
    echo "backup sessions are blockd's own" >&2; exit 77
fi
daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
blockctl=${BLOCKCTL:-$here/build/ctl/blockctl}
[[ -x $daemon && -x $blockctl ]] || { echo "blockd/blockctl not built (run meson compile -C build)" >&2; exit 77; }

dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# 1. A disk with some data, served over NBD with a QMP monitor.
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
qemu-io -f qcow2 -c 'write -P 0x11 0 4M' "$dir/disk.qcow2" >/dev/null
"$daemon" \
    --blockdev driver=qcow2,node-name=disk,file.driver=file,file.filename="$dir/disk.qcow2" \
    --nbd-server addr.type=unix,addr.path="$dir/nbd.sock" \
    --export type=nbd,id=e0,node-name=disk,name=disk,writable=on \
    --chardev socket,id=qmp0,path="$dir/qmp.sock",server=on,wait=off \
    --monitor chardev=qmp0 &
pid=$!
for _ in $(seq 100); do [[ -S $dir/qmp.sock && -S $dir/nbd.sock ]] && break; sleep 0.05; done
export BLOCKD_SOCKET=$dir/qmp.sock   # blockctl finds the NBD server through it
uri="nbd+unix:///disk?socket=$dir/nbd.sock"

# 2. A full backup into backups/ (a qcow2 image and a manifest).
qemu-img convert -U -f raw -O raw "$uri" "$dir/monday.raw"     # what it should hold
"$blockctl" backup disk "$dir/backups"

# 3. The guest writes; an incremental backup copies only the change.
qemu-io -f raw -c 'write -P 0x22 1M 1M' -c 'write -P 0x33 40M 64k' "$uri" >/dev/null
qemu-img convert -U -f raw -O raw "$uri" "$dir/tuesday.raw"
"$blockctl" backup disk "$dir/backups"
"$blockctl" backup-list "$dir/backups"

# 4. Restore both points and compare them with what the disk held.
"$blockctl" restore "$dir/backups" --at 0 --verify "$dir/restored0.raw"
"$blockctl" restore "$dir/backups" --at 1 --verify "$dir/restored1.qcow2"
qemu-img compare -q -f raw -F raw "$dir/restored0.raw" "$dir/monday.raw"
qemu-img compare -q -F raw "$dir/restored1.qcow2" "$dir/tuesday.raw"
qemu-img check -q "$dir/restored1.qcow2"
for f in "$dir"/backups/*.qcow2; do qemu-img check -q "$f"; done
echo "example finished: OK"
