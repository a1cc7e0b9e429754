#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run-fuzz.sh TARGET SEEDS WORKDIR [LIBFUZZER-OPTION...]: run one libFuzzer target over its
# seed corpus, then for FUZZ_SECONDS (default 45) of new inputs.  New
# corpus entries go to WORKDIR/corpus (not the source tree), a crashing
# input to WORKDIR/crash-*; copy one into SEEDS to keep it as a
# regression.  The seed is fixed (FUZZ_SEED, default 1; 0 is random),
# so that the CI slice walks the same inputs on every machine, a faster
# one only further along: a run here of a few times CI's length covers
# what CI will try, and a finding in CI reproduces.  Long runs should
# set FUZZ_SEED=0.  Exit status: libFuzzer's (non-zero on a crash, a leak, a
# timeout of one input or memory past the limit).
set -euo pipefail
target=$1 seeds=$2 work=$3
shift 3
mkdir -p "$work/corpus"
dict=()
if [[ -f $seeds.dict ]]; then
    dict=(-dict="$seeds.dict")
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$target" -seed="${FUZZ_SEED:-1}" -max_total_time="${FUZZ_SECONDS:-45}" -timeout=25 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$work/" "${dict[@]}" "$@" "$work/corpus" "$seeds"
