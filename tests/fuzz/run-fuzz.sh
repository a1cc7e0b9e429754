#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run-fuzz.sh TARGET SEEDS WORKDIR [LIBFUZZER-OPTION...]: run one libFuzzer target over its
# seed corpus, then for FUZZ_SECONDS (default 45) of new inputs.  New
# corpus entries go to WORKDIR/corpus (not the source tree), a crashing
# input to WORKDIR/crash-*; copy one into SEEDS to keep it as a
# regression.  Exit status: libFuzzer's (non-zero on a crash, a leak, a
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
exec "$target" -max_total_time="${FUZZ_SECONDS:-45}" -timeout=25 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$work/" "${dict[@]}" "$@" "$work/corpus" "$seeds"
