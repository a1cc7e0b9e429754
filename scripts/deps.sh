#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the Debian packages blockd needs to build, test and demo, only
# when some are missing (one apt-get update, then one apt-get install).
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc clang libglib2.0-dev libjson-glib-dev
      libfuse3-dev fuse3 libnbd-dev libnbd-bin python3-libnbd nbdkit nbdkit-plugin-dev
      zlib1g-dev qemu-utils qemu-system-common fio socat)

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
sudo=
if [[ $(id -u) != 0 ]]; then sudo=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >&2
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
