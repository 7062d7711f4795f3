#!/usr/bin/env bash
# scripts/fuzz.sh TARGET SECONDS [BUILD_DIR] - a long libFuzzer campaign on one target of
# tests/fuzz (onnx, kir, npy, passes; "fuzz_" may be written in front).
# Builds BUILD_DIR (default build-fuzz: clang-19, ASan+UBSan, -DKERNC_FUZZ=ON) when the target
# is missing, collects the seed corpus from tests/ (tests/fuzz/seeds.sh) into
# BUILD_DIR/fuzz/NAME/seeds, keeps the growing corpus in BUILD_DIR/fuzz/NAME/corpus (reused by
# later campaigns) and writes crash, leak and timeout inputs to BUILD_DIR/fuzz/NAME/crashes/.
# JOBS (default 1) processes run in -fork mode; on the 2-core machine one is the polite choice.
# MAX_LEN, when set, is passed as -max_len.
# Prints the number of inputs executed and the crash count; exits 1 when anything crashed.
# A crash input found becomes a regression: copy it to tests/fuzz/regressions/NAME/ with the fix.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: scripts/fuzz.sh TARGET SECONDS [BUILD_DIR]   (TARGET: onnx kir npy passes)" >&2
  exit 2
fi
name=${1#fuzz_} secs=$2
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${3:-$root/build-fuzz}") # absolute: the fuzzer runs in its work folder
jobs=${JOBS:-1}
bin=$build/tests/fuzz/fuzz_$name
if [ ! -x "$bin" ]; then
  if [ ! -f "$build/CMakeCache.txt" ]; then
    CC=${CC:-clang-19} cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DKERNC_SANITIZE=ON -DKERNC_FUZZ=ON -DKERNC_WERROR=ON
  fi
  cmake --build "$build" -j"$(nproc)" --target "fuzz_$name"
fi
[ -x "$bin" ] || { echo "fuzz.sh: no fuzz_$name in $build (is KERNC_FUZZ on, clang >= 14?)" >&2; exit 1; }
work=$build/fuzz/$name
mkdir -p "$work/corpus" "$work/crashes"
rm -rf "$work/seeds"
"$root/tests/fuzz/seeds.sh" "$name" "$root/tests" "$work/seeds"
log=$work/campaign-$(date +%Y%m%d-%H%M%S).log
opts=(-max_total_time="$secs" -rss_limit_mb=3072 -malloc_limit_mb=2048 -timeout=60
  -print_final_stats=1 -artifact_prefix="$work/crashes/")
# MAX_LEN: the largest input tried (default: libFuzzer's, from the largest seed; the ONNX
# seeds reach 50 KB, and -max_len=4096 runs several times more inputs per second)
if [ -n "${MAX_LEN:-}" ]; then
  opts+=(-max_len="$MAX_LEN")
fi
if [ "$jobs" -gt 1 ]; then
  opts+=(-fork="$jobs" -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
fi
echo "fuzz.sh: fuzz_$name for ${secs}s, $jobs process(es), log $log"
start=$(date +%s)
set +e
(cd "$work" && "$bin" "${opts[@]}" "$work/corpus" "$work/seeds") >"$log" 2>&1
rc=$?
set -e
end=$(date +%s)
# single process: the final stats; fork mode: the last "#N" status line counts all processes
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
[ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
# slow-unit-* files are reports (an input over 10 s), not failures
crashes=$(find "$work/crashes" -type f ! -name 'slow-unit-*' | wc -l)
slow=$(find "$work/crashes" -type f -name 'slow-unit-*' | wc -l)
echo "fuzz.sh: fuzz_$name executed ${execs:-?} inputs in $((end - start)) s; rc $rc;" \
  "$crashes crash/leak/timeout/oom and $slow slow-unit file(s) in $work/crashes"
tail -n 5 "$log"
[ "$rc" -eq 0 ] && [ "$crashes" -eq 0 ]
