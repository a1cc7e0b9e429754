#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Benchmark blockd side by side with qemu-storage-daemon, qemu-nbd and
# nbdkit's file plugin on one 1 GiB raw image over a unix socket.
#   bench/run.sh                      all four servers
#   SERVERS="blockd nbdkit" bench/run.sh
#   RUNTIME=10 SIZE=1G BENCH_DIR=/tmp/blockd-bench BLOCKD=path bench/run.sh
# Not a test: it prints figures, ratios to the best peer and CPU s/GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/bench.py "$@"
