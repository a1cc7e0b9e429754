#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build blockd, create a sample image with a pattern, export it over NBD on a
# unix socket and stay in the foreground (Ctrl-C stops it cleanly).
#   DEMO_DIR=/some/dir scripts/demo.sh    (default: a new temporary directory)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
scripts/deps.sh

if [[ ! -f build/build.ninja ]]; then
    meson setup build "$root" >/dev/null
fi
meson compile -C build >/dev/null
blockd=$root/build/daemon/blockd

dir=${DEMO_DIR:-$(mktemp -d /tmp/blockd-demo.XXXXXX)}
mkdir -p "$dir"
img=$dir/sample.raw
sock=$dir/nbd.sock
qmp=$dir/qmp.sock
rm -f "$sock" "$qmp"

# A 256 MiB sparse image: 1 MiB of 0x5a at 0, 4 MiB of 0xa5 at 64 MiB.
truncate -s 256M "$img"
qemu-io -f raw -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 64M 4M' "$img" >/dev/null

uri="nbd+unix:///sample?socket=$sock"
cat <<MSG
blockd demo
  image:   $img (256 MiB, 0x5a at 0..1M, 0xa5 at 64M..68M, the rest a hole)
  export:  $uri
  QMP:     $qmp

Try, from another terminal:
  nbdinfo '$uri'
  nbdinfo --map '$uri'
  qemu-io -f raw -c 'read -P 0x5a 0 1M' -c 'read -P 0xa5 64M 4M' '$uri'
  qemu-io -f raw -c 'write -P 0x11 128M 1M' '$uri'
  qemu-img compare -U -f raw -F raw '$uri' '$img'
  nbdcopy '$uri' /tmp/copy.raw
  echo '{"execute":"qmp_capabilities"} {"execute":"query-block-exports"}' | socat - UNIX-CONNECT:$qmp

Press Ctrl-C to stop.
MSG

exec "$blockd" \
    --blockdev driver=file,node-name=sample-file,filename="$img" \
    --blockdev driver=raw,node-name=sample,file=sample-file \
    --nbd-server addr.type=unix,addr.path="$sock" \
    --export type=nbd,id=sample,node-name=sample,name=sample,writable=on \
    --chardev socket,id=qmp0,path="$qmp",server=on,wait=off --monitor chardev=qmp0
