#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the Debian packages blockd needs to build, test, bench and demo,
# only when some are missing (one apt-get update, then one apt-get install).
# Runs as root (a fresh chroot or container has no sudo) or through sudo.
set -euo pipefail

# Every program the build, tests/, examples/, bench/ and scripts/ run, by
# the Debian 12 package that ships it. Installed without recommends, so
# each one is named here even when another package would recommend it.
pkgs=(
    # build: compilers, the C library headers (gcc only recommends them),
    # meson + ninja, and the libraries' -dev packages
    gcc libc6-dev clang meson ninja-build pkg-config
    libglib2.0-dev libjson-glib-dev libfuse3-dev libnbd-dev zlib1g-dev
    nbdkit-plugin-dev libgnutls28-dev nettle-dev
    # bzip2 chunks of dmg images (formats/dmg/; optional at build time)
    libbz2-dev
    # --sandbox's seccomp filter (daemon/harden.c; optional at build time)
    libseccomp-dev
    # systemd-socket-activate: test_hardened starts blockd with it
    systemd
    # the metrics endpoint's HTTP server (metrics/)
    libsoup-3.0-dev
    # librbd, librados: the rbd driver (built only when they are found)
    librbd-dev librados-dev
    # tests: /usr/bin/python3 with the libnbd binding (also nbdsh)
    python3 python3-libnbd
    # qemu-img, qemu-io, qemu-nbd; qemu-storage-daemon (the reference)
    qemu-utils qemu-system-common
    # qemu-img's and qemu-storage-daemon's rbd driver (tests compare with it)
    qemu-block-extra
    # the rbd tests' throw-away cluster (tests/integration/ceph_cluster.py):
    # ceph-mon, ceph-osd; ceph, rbd, ceph-authtool, monmaptool
    ceph-mon ceph-osd ceph-common
    # nbdinfo, nbdcopy; nbdkit (bench); file (nbdinfo probes content with it)
    libnbd-bin nbdkit file
    # fusermount3; fio (its nbd engine); socat (QMP from examples and demo)
    fuse3 fio socat
    # strace: the copy engine's test counts copy_file_range calls
    strace
    # certtool: the certificates of the NBD-over-TLS tests, example and bench
    gnutls-bin
    # promtool: test_metrics checks every scrape with it; the OpenMetrics
    # parser (prometheus_client.openmetrics) checks the OpenMetrics answer
    prometheus python3-prometheus-client
    # cryptsetup: LUKS1 images made outside qemu-img (luks format test)
    cryptsetup-bin
    # dot: blockctl graph --format svg|png
    graphviz
    # scdoc: the manual pages (doc/*.scd); man (man-db): tests render them
    scdoc man-db
    # strace: tests count the zero-copy system calls (sendfile, splice)
    strace
    # cmp; fallocate; umount; dd, truncate, stat, mktemp (in a minimal
    # system already, named so that nothing here is taken for granted)
    diffutils util-linux mount coreutils
)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
as_root=()
if [[ $(id -u) != 0 ]]; then
    if ! command -v sudo >/dev/null; then
        echo "deps.sh: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    as_root=(sudo)
fi
# env, not export: sudo does not pass the caller's environment on.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
