#!/usr/bin/env bash
# scripts/main.sh - the main job: set up, build kernc, and show it at work on the example graph.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

echo "== examples/mlp.c: a two-layer MLP built with the C builder API, printed as kernc IR"
build/example_mlp | tee build/mlp.kir
echo
echo "== kernc opt: the same text parsed, verified and printed back (identical)"
build/kernc opt build/mlp.kir --passes= | diff -u build/mlp.kir - && echo "(round trip: identical)"
