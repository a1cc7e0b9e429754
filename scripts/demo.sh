#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build blockd, create a sample qcow2 image with a pattern, and serve it at
# once as a FUSE-mounted raw file and as an NBD export on a unix socket;
# stay in the foreground (Ctrl-C stops it cleanly and unmounts).
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
img=$dir/sample.qcow2
mnt=$dir/sample.raw
sock=$dir/nbd.sock
qmp=$dir/qmp.sock
fusermount3 -u "$mnt" 2>/dev/null || true
rm -f "$sock" "$qmp" "$img"

# A 256 MiB qcow2 image: 1 MiB of 0x5a at 0, 4 MiB of 0xa5 at 64 MiB.
qemu-img create -q -f qcow2 "$img" 256M
qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' -c 'write -P 0xa5 64M 4M' "$img" >/dev/null
touch "$mnt"    # a FUSE export mounts over an existing regular file

uri="nbd+unix:///sample?socket=$sock"
cat <<MSG
blockd demo
  image:   $img (qcow2, 256 MiB, 0x5a at 0..1M, 0xa5 at 64M..68M, the rest unallocated)
  FUSE:    $mnt (the image's raw content as a plain file)
  NBD:     $uri
  QMP:     $qmp

Try, from another terminal:
  ls -l '$mnt'; cmp -n 1M '$mnt' <(head -c 1M /dev/zero | tr '\\0' '\\132') && echo pattern ok
  qemu-io -f raw -c 'read -P 0xa5 64M 4M' -c 'write -P 0x11 128M 1M' '$mnt'
  nbdinfo '$uri'
  nbdinfo --map '$uri'
  qemu-io -f raw -c 'read -P 0x11 128M 1M' '$uri'     # the FUSE write, seen over NBD
  nbdcopy '$uri' $dir/copy.raw && cmp $dir/copy.raw '$mnt'
  echo '{"execute":"qmp_capabilities"} {"execute":"query-block-exports"}' | socat - UNIX-CONNECT:$qmp

Press Ctrl-C to stop (then: qemu-img check '$img').
MSG

exec "$blockd" \
    --blockdev driver=file,node-name=sample-file,filename="$img" \
    --blockdev driver=qcow2,node-name=sample,file=sample-file \
    --export type=fuse,id=sample-fuse,node-name=sample,mountpoint="$mnt",writable=on \
    --nbd-server addr.type=unix,addr.path="$sock" \
    --export type=nbd,id=sample,node-name=sample,name=sample,writable=on \
    --chardev socket,id=qmp0,path="$qmp",server=on,wait=off --monitor chardev=qmp0
