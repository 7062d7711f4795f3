#!/usr/bin/env bash
# tests/fuzz/seeds.sh NAME TESTS_DIR OUT_DIR - collect the seed corpus of fuzz target NAME
# (onnx, kir, npy, npz, passes) from the tests into OUT_DIR (copies, so the fuzzer can never write
# into tests/). Seeds are collected at run time rather than committed: they follow the tests.
#   kir:    every tests/kir/**/*.kir (golden, invalid, passes)
#   passes: tests/kir/golden and tests/kir/passes (the target skips graphs that are too big)
#   npy:    tests/**/*.npy up to 16 KiB
#   npz:    small archives written here by numpy (np.savez, np.savez_compressed), when python3
#           has numpy: tests/ holds no .npz files
#   onnx:   tests/onnx/*.onnx, tests/models/*/*.onnx up to 64 KiB, and the node-suite models of
#           Debian's libonnx-testdata up to 2 KiB (the first 400 in name order)
set -euo pipefail
name=$1 tests=$2 out=$3
mkdir -p "$out"
n=0
add() { # copy each file given, under a unique name
  for f in "$@"; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    cp "$f" "$out/seed$n-$(basename "$f")"
  done
}
case $name in
kir) add $(find "$tests/kir" -name '*.kir' | sort) ;;
passes) add $(find "$tests/kir/golden" "$tests/kir/passes" -name '*.kir' | sort) ;;
npy) add $(find "$tests" -name '*.npy' -size -17k | sort) ;;
npz)
  python3 - "$out" <<'PY' || echo "seeds.sh: no numpy: npz starts from an empty corpus" >&2
import sys, numpy as np
d = sys.argv[1]
a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.array([1, 2], np.int64)}
np.savez(d + "/seed-stored.npz", **a)
np.savez_compressed(d + "/seed-deflated.npz", **a)
PY
  n=$(ls "$out" | wc -l)
  ;;
onnx)
  add "$tests"/onnx/*.onnx $(find "$tests/models" -maxdepth 2 -name '*.onnx' -size -65k | sort)
  node=/usr/share/libonnx-testdata/data/node
  if [ -d "$node" ]; then
    add $(find "$node" -name model.onnx -size -3k | sort | head -n 400)
  fi
  ;;
*)
  echo "seeds.sh: unknown target '$name' (onnx, kir, npy, npz, passes)" >&2
  exit 2
  ;;
esac
echo "seeds.sh: $n seed(s) for $name in $out"
