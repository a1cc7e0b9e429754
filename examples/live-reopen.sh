#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Reconfigure a live disk with blockdev-reopen while an NBD client uses it:
# slip a throttle filter under the qcow2 format node, take it out again,
# switch the node read-only and back.  The export stays connected through
# every change; each step checks the data with qemu-io over nbd+unix://.
#   examples/live-reopen.sh [path/to/blockd]
# BLOCKD=path or BLOCKD_REFERENCE=1 (qemu-storage-daemon) select the daemon.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
if [[ ${BLOCKD_REFERENCE:-0} != 0 ]]; then
    daemon=/usr/bin/qemu-storage-daemon
else
    daemon=${1:-${BLOCKD:-$here/build/daemon/blockd}}
fi
[[ -x $daemon ]] || { echo "daemon $daemon not built (run meson compile -C build)" >&2; exit 77; }
command -v socat >/dev/null || { echo "socat not installed" >&2; exit 77; }

dir=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# One QMP command per connection: negotiate, send, print the reply.
qmp() {
    printf '{"execute": "qmp_capabilities"}\n%s\n' "$1" |
        socat -t 5 - UNIX-CONNECT:"$dir/qmp.sock" | tail -n 1
}
# Fail unless the reply is a success.
qmp_ok() {
    local reply
    reply=$(qmp "$1")
    echo "-> $1"
    echo "<- $reply"
    [[ $reply == '{"return": {}}'* ]] || { echo "unexpected reply" >&2; exit 1; }
}

# 1. A 64 MiB qcow2 image, a throttle group, the daemon with an NBD export.
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
hd0='"driver": "qcow2", "node-name": "hd0"'
"$daemon" \
    --object throttle-group,id=group0,limits.iops-total=1000 \
    --blockdev driver=file,node-name=hd0-file,filename="$dir/disk.qcow2" \
    --blockdev driver=qcow2,node-name=hd0,file=hd0-file \
    --nbd-server addr.type=unix,addr.path="$dir/nbd.sock" \
    --export type=nbd,id=export0,node-name=hd0,name=disk,writable=on \
    --chardev socket,id=qmp0,path="$dir/qmp.sock",server=on,wait=off \
    --monitor chardev=qmp0 &
pid=$!
for _ in $(seq 100); do [[ -S $dir/qmp.sock && -S $dir/nbd.sock ]] && break; sleep 0.05; done
[[ -S $dir/nbd.sock ]] || { echo "daemon did not start" >&2; exit 1; }
uri="nbd+unix:///disk?socket=$dir/nbd.sock"
qemu-io -f raw -c 'write -P 0xa0 0 1M' "$uri"

# 2. A throttle filter over the protocol node, then under hd0: the
#    export keeps running; its requests now pass the throttle.
qmp_ok '{"execute": "blockdev-add", "arguments": {"driver": "throttle", "node-name": "throttle0", "throttle-group": "group0", "file": "hd0-file"}}'
qmp_ok '{"execute": "blockdev-reopen", "arguments": {"options": [{'"$hd0"', "file": "throttle0"}]}}'
qemu-io -f raw -c 'read -P 0xa0 0 1M' -c 'write -P 0xa1 1M 1M' "$uri"

# 3. Out again, and the filter is deleted.
qmp_ok '{"execute": "blockdev-reopen", "arguments": {"options": [{'"$hd0"', "file": "hd0-file"}]}}'
qmp_ok '{"execute": "blockdev-del", "arguments": {"node-name": "throttle0"}}'
qemu-io -f raw -c 'read -P 0xa0 0 1M' -c 'read -P 0xa1 1M 1M' "$uri"

# 4. Read-only is refused while the writable export needs write access.
reply=$(qmp '{"execute": "blockdev-reopen", "arguments": {"options": [{'"$hd0"', "file": "hd0-file", "read-only": true}]}}')
echo "read-only while exported writable: $reply"
[[ $reply == *"cannot support read-write users"* ]] || { echo "expected a refusal" >&2; exit 1; }

# 5. Stop; the image is consistent and holds what was written.
kill "$pid"; wait "$pid" || true; pid=
qemu-img check -q "$dir/disk.qcow2"
qemu-io -f qcow2 -c 'read -P 0xa0 0 1M' -c 'read -P 0xa1 1M 1M' "$dir/disk.qcow2"
echo "example finished: OK"
