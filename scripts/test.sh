#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build blockd four ways and run the tests: every suite in an ASan/UBSan
# build (build-asan/); in the normal build (build/) the unit tests, the
# differential test against qemu-storage-daemon and suite 'plain' (the
# checks a sanitizer's allocator would blunt: memory bounds); then the
# ThreadSanitizer suite (build-tsan/) and the fuzz targets (build-fuzz/).
# Every test thus runs once at least, with the sanitizers where they
# apply.  Ends with one line "N passed, N failed, N skipped" over all
# runs, and exits non-zero if anything failed.
#   BLOCKD_REFERENCE=1 scripts/test.sh   runs the integration tests against
#                                        qemu-storage-daemon instead of blockd.
#   SKIP_ASAN=1 scripts/test.sh          only the normal build, every suite.
#   FULL=1 scripts/test.sh               every suite in the normal build too.
#   (likewise SKIP_TSAN=1, SKIP_FUZZ=1 for the ThreadSanitizer and fuzz builds)
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
scripts/deps.sh || { echo "scripts/deps.sh failed" >&2; exit 1; }

passed=0 failed=0 skipped=0 broken=0

# count_results BUILDDIR: add meson's per-test results from testlog.json
count_results() {
    local log=$1/meson-logs/testlog.json
    [[ -f $log ]] || { broken=$((broken + 1)); return; }
    local counts
    counts=$(/usr/bin/python3 - "$log" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line).get('result')
    if r in ('OK', 'EXPECTEDFAIL'):
        p += 1
    elif r == 'SKIP':
        s += 1
    else:
        f += 1
print(p, f, s)
PY
)
    read -r p f s <<<"$counts"
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

# Which tests run_suite runs: meson test options (none: all of them).
test_select=()

# run_suite BUILDDIR [meson setup options...]
run_suite() {
    local dir=$1; shift
    echo "=== $dir: configure and build" >&2
    if [[ ! -f $dir/build.ninja ]]; then
        meson setup "$dir" "$root" "$@" || { broken=$((broken + 1)); return; }
    else
        meson configure "$dir" "$@" >/dev/null || true
    fi
    if ! meson compile -C "$dir"; then
        broken=$((broken + 1)); return
    fi
    echo "=== $dir: meson test" >&2
    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --print-errorlogs --num-processes "${TEST_JOBS:-2}" \
        "${test_select[@]}"
    count_results "$dir"
}

# Warnings are errors here (CI runs this script); a plain meson setup
# keeps them warnings, so a new compiler's warning does not stop a user.
# deps.sh installed librbd: the rbd driver must be built and tested.
# When the ASan build runs every suite, the normal build runs what the
# ASan build cannot check as well (or at all: the differential test).
if [[ ${SKIP_ASAN:-0} == 0 && ${FULL:-0} == 0 && -z ${BLOCKD_REFERENCE:-} ]]; then
    test_select=(--suite unit --suite plain --suite diff)
fi
run_suite build -Dwerror=true -Drbd=enabled
test_select=()
if [[ ${SKIP_ASAN:-0} == 0 ]]; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    run_suite build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
        -Drbd=enabled
fi

# A ThreadSanitizer build (build-tsan/) runs the unit tests and the
# integration suite 'tsan' (jobs, NBD and FUSE workers at once): the only
# tests that build defines.  tests/meson.build sets TSAN_OPTIONS (the
# third-party suppressions) and G_SLICE for them.  SKIP_TSAN=1 leaves it out.
if [[ ${SKIP_TSAN:-0} == 0 ]]; then
    run_suite build-tsan -Db_sanitize=thread -Db_lundef=false -Dwerror=true -Drbd=enabled
fi

# A libFuzzer build (build-fuzz/, clang) runs each fuzz target of
# tests/fuzz/ over its seed corpus and then for FUZZ_SECONDS (25 here) of
# new inputs from a fixed seed; a crash, leak or hang fails.  SKIP_FUZZ=1 leaves it out.
if [[ ${SKIP_FUZZ:-0} == 0 ]]; then
    export FUZZ_SECONDS=${FUZZ_SECONDS:-25}
    # Start from the seed corpus alone, as a clean checkout does, so
    # that a run here tries what CI tries (run-fuzz.sh fixes the seed).
    rm -rf build-fuzz/tests/fuzz/work
    CC=clang run_suite build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dwerror=true
fi

failed=$((failed + broken))
echo "$passed passed, $failed failed, $skipped skipped"
if ((failed > 0)); then
    exit 1
fi
exit 0
