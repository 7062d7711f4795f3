#!/usr/bin/env bash
# scripts/test.sh - the whole test suite: set-up, then a plain build and a sanitizer build
# (AddressSanitizer + UndefinedBehaviorSanitizer, with clang-19, plus the fuzz targets' smoke
# runs), each running the cmocka tests through CTest
# (the host-code unit tests also under valgrind memcheck in the plain build) and the ONNX backend
# node test suites through `kernc check`; a build with the CUDA toolkit hidden, running the unit
# tests (the CPU target must not need CUDA); and a ThreadSanitizer build running the concurrency
# tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

jobs=$(nproc)
status=0
rm -f build*.ctest.log build*.suites.log build*.pytest.log

run_suite() { # build dir, cmake flags...; SUITES=0 skips the ONNX node test suites; ONLY=REGEX
  # runs only those tests, EXCEPT=REGEX all but those
  local dir=$1 targets=() only=()
  shift
  [ -n "${ONLY:-}" ] && targets=(--target kernc_tool $(echo "$ONLY" | tr '|' ' ')) && only=(-R "^($ONLY)\$")
  [ -n "${EXCEPT:-}" ] && only=(-E "^($EXCEPT)\$")
  echo "=== $dir: configure and build (at ${SECONDS} s)"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" "${targets[@]}" >/dev/null 2>"$dir.build.log" || {
    cat "$dir.build.log"
    return 1
  }
  echo "=== $dir: unit tests (cmocka via ctest, at ${SECONDS} s)"
  local rc=0
  ctest --test-dir "$dir" -V -j"$jobs" "${only[@]}" >"$dir.ctest.log" 2>&1 || rc=1
  # each test's cmocka summary, then ctest's own
  grep -E '^[0-9]+: (\[=+\] [0-9]+ test|\[  (PASSED|FAILED|SKIPPED) +\])|^[0-9]+: Test command|tests passed' \
    "$dir.ctest.log" | sed -E 's/^[0-9]+: Test command: ([^ ]+).*/--- \1/'
  if ((rc)); then
    ctest --test-dir "$dir" --rerun-failed --output-on-failure || true
    return 1
  fi
  if [ "${SUITES:-1}" = 1 ] && [ -e tests/onnx_suites.sh ]; then # not -x: a lost run bit fails
    echo "=== $dir: ONNX backend node tests (at ${SECONDS} s)"
    tests/onnx_suites.sh "$dir/kernc" | tee "$dir.suites.log"
    ((PIPESTATUS[0] == 0)) || return 1
  fi
}

run_suite build || status=1

# The Python package (python/) as its users get it: kernc installed into a prefix
# (cmake --install), the package pip-installed into a fresh venv that sees the interpreter's
# numpy, onnx, onnxruntime and pytest, and libkernc found through the loader path
# (LD_LIBRARY_PATH=PREFIX/lib, no KERNC_LIBRARY). pytest's summary line goes to build.pytest.log.
run_python() { # build dir
  local dir=$1 venv=$PWD/$1/pyvenv prefix=$PWD/$1/py-prefix rc=0
  echo "=== $dir: Python package (install, pip install ./python, pytest, at ${SECONDS} s)"
  rm -rf "$venv" "$prefix"
  local env=(env -u KERNC_LIBRARY LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  cmake --install "$dir" --prefix "$prefix" >"$dir.python.log" 2>&1 &&
    "$PY" -m venv --system-site-packages "$venv" &&
    "$venv/bin/python" -m pip install -q --no-build-isolation --no-index ./python >>"$dir.python.log" 2>&1 &&
    (cd /tmp && "${env[@]}" "$venv/bin/python" -c "import kernc; print('kernc', kernc.__version__, 'library', kernc.library_path(), kernc.library_version()); assert kernc.library_path() == 'libkernc.so.0'") ||
    {
      cat "$dir.python.log"
      echo "pytest: 1 error (install, pip install ./python or import kernc failed)" | tee "$dir.pytest.log"
      return 1
    }
  "${env[@]}" KERNC_OPT_LEVEL=0 "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests >>"$dir.python.log" 2>&1 || rc=1
  grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped)|^(=+ )?no tests ran' "$dir.python.log" | tail -1 |
    sed -E 's/^=* */pytest: /; s/ *=*$//' | tee "$dir.pytest.log"
  ((rc == 0)) || tail -n 60 "$dir.python.log"
  return $rc
}
run_python build || status=1
# The builds below JIT at LLVM -O0 (KERNC_OPT_LEVEL=0, many times faster to compile): they test
# kernc's own code (the sanitizers watch it, not the JIT'd kernels; the no-CUDA build checks the
# build and the target choice), and the plain build above tests the -O3 kernels users get.
# the CPU build must not depend on the CUDA toolkit: configure with it hidden, run the unit tests
# but the long ones that exercise only CPU code the plain and ASan builds already ran (models,
# training, gradients, big-kernel sweeps): what differs without CUDA is the build, the target
# choice, the AOT export and the CLI, and those tests all run here
KERNC_OPT_LEVEL=0 SUITES=0 \
  EXCEPT="test_models|test_checkpoint|test_grad|test_grad_cli|test_train|test_train_cli|test_lora|test_kv_attention|test_cpu_gemm|test_cpu_norm|test_matmul_small" \
  run_suite build-nocuda -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON -DKERNC_VALGRIND=OFF || status=1
# the sanitizer build is clang-19's: with it come the libFuzzer targets of tests/fuzz, whose
# smoke runs (a fixed number of inputs each, plus every regression input) are ctest entries there
KERNC_OPT_LEVEL=0 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  run_suite build-asan -DCMAKE_C_COMPILER=clang-19 -DKERNC_SANITIZE=ON -DKERNC_FUZZ=ON || status=1
# under ThreadSanitizer: the concurrency tests (one module from many threads, the thread pool)
# and the tests of what kernels must refuse (index checks, causal past, size overflow)
KERNC_OPT_LEVEL=0 TSAN_OPTIONS=halt_on_error=1 SUITES=0 \
  ONLY="test_threads|test_runtime|test_attention|test_kv_attention|test_cpu_movement|test_verify|test_builder" \
  run_suite build-tsan -DKERNC_TSAN=ON || status=1

# one closing line over every build: cmocka test cases, ONNX node tests and the Python tests
sum() { # extended regex with one number group, files...
  local re=$1
  shift
  cat "$@" 2>/dev/null | sed -nE "s/.*$re.*/\1/p" | awk '{ n += $1 } END { print n + 0 }'
}
logs=(build*.ctest.log)
suites=(build*.suites.log)
pytests=(build*.pytest.log)
passed=$(($(sum '\[  PASSED  \] ([0-9]+) test' "${logs[@]}") + $(sum ': ([0-9]+) passed,' "${suites[@]}") +
  $(sum ' ([0-9]+) passed' "${pytests[@]}")))
failed=$(($(sum '\[  FAILED  \] ([0-9]+) test' "${logs[@]}") + $(sum ' ([0-9]+) failed,' "${suites[@]}") +
  $(sum ' ([0-9]+) failed' "${pytests[@]}") + $(sum ' ([0-9]+) errors?' "${pytests[@]}")))
skipped=$(($(sum '\[  SKIPPED \] ([0-9]+) test' "${logs[@]}") + $(sum ' ([0-9]+) skipped' "${suites[@]}") +
  $(sum ' ([0-9]+) skipped' "${pytests[@]}")))
if ((status)); then echo "test.sh: FAILED"; else echo "test.sh: all passed"; fi
echo "total: $passed passed, $failed failed, $skipped skipped (test.sh took ${SECONDS} s)"
exit $status
