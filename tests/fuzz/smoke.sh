#!/usr/bin/env bash
# tests/fuzz/smoke.sh BIN TESTS_DIR WORK_DIR RUNS - ctest's fuzz_NAME_smoke: run fuzz target BIN
# (fuzz_NAME) on every regression input in tests/fuzz/regressions/NAME/ (crash inputs found
# before, kept forever), then on its seed corpus plus RUNS inputs in all (-runs, -seed=1: the
# same inputs every time). WORK_DIR is emptied first; new corpus entries and any crash input go
# there, never into the source tree. Exits non-zero on any crash, leak or sanitizer report.
set -euo pipefail
bin=$1 tests=$2 work=$3 runs=$4
name=$(basename "$bin")
name=${name#fuzz_}
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work/corpus" "$work/seeds" "$work/crashes"
cd "$work"
# the library's own limits (1 GiB per constant) must not count as an out-of-memory finding
opts=(-rss_limit_mb=3072 -malloc_limit_mb=2048 -timeout=60 -print_final_stats=1)
reg="$here/regressions/$name"
if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
  echo "== $name: regression inputs in $reg"
  "$bin" "${opts[@]}" -runs=1 "$reg"/*
fi
"$here/seeds.sh" "$name" "$tests" "$work/seeds"
echo "== $name: seeds plus $runs runs, -seed=1"
"$bin" "${opts[@]}" -runs="$runs" -seed=1 -artifact_prefix="$work/crashes/" \
  "$work/corpus" "$work/seeds"
