#!/usr/bin/env bash
# scripts/setup.sh - install what kernc needs on Debian 12, as root; does nothing when all is
# there already, so it is safe to run any number of times. Sourced by main.sh and test.sh.
set -euo pipefail

# g++: tests/cuda_emu compiles the CUDA target's kernels as host C++ where no GPU is
# valgrind: test_models runs the pass pipeline under memcheck
KERNC_DEBS=(cmake make gcc g++ valgrind pkg-config llvm-19-dev libprotobuf-c-dev protobuf-c-compiler
  libonnx-dev libonnx-testdata libcmocka-dev graphviz zlib1g-dev libopenblas-dev clang-format clang-19 libclang-rt-19-dev
  python3-onnx python3-numpy)

missing=()
for p in "${KERNC_DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
fi

# The ONNX backend node tests of opset <= 23 ship only in the onnx 1.22 wheel (1.23+ has none).
PY=${PYTHON:-python3}
if ! "$PY" -c 'import onnx, numpy, sys; sys.exit(0 if onnx.__version__.startswith("1.22.") else 1)' 2>/dev/null; then
  echo "setup: pip installing onnx==1.22.* numpy"
  "$PY" -m pip install -q "onnx==1.22.*" numpy
fi

# pytest: the Python package's tests (python/tests, run by test.sh in a venv that sees these);
# wheel: pip install --no-build-isolation ./python in that venv builds a wheel with the venv's
# setuptools 65 (Python 3.11's), which needs the wheel package's bdist_wheel (gone from 0.45 on)
if ! "$PY" -c 'import pytest, wheel' 2>/dev/null; then
  echo "setup: pip installing pytest wheel<0.45"
  "$PY" -m pip install -q pytest "wheel<0.45"
fi
