#!/usr/bin/env bash
# bench/run.sh - kernc beside ONNX Runtime on transformer models, and kernc's matmul beside
# OpenBLAS, in one command (see bench/README.md):
#   1. pip-installs onnxruntime and numpy into the python3 on PATH when missing;
#   2. builds libkernc and matmul_bench (Release) in $KERNC_BUILD (default build-bench/), which
#      is incremental: nothing is rebuilt when nothing changed;
#   3. exports the models with random weights into bench/models/ (git-ignored) with Debian's
#      Python + PyTorch (bench/export_models.py), again only when missing or when the export
#      script or tests/models/hf_modules.py changed;
#   4. runs bench/ort_bench.py: latency (median, blocks of runs), ratio, peak RSS, compile time;
#   5. runs bench/decode_bench.py: kernc's decoding session beside ORT's past_key_values loop
#      (prefill 1x128, ms per decoded token at contexts 128 and 1024, the bandwidth bound);
#   6. runs bench/train_bench.py: a GPT-2-small training step (AdamW, 4x64 tokens) in kernc's
#      trainer beside PyTorch, each engine in its own process: ms per step, peak memory, the
#      same with checkpointing (TRAIN_ARGS: extra arguments, e.g. --rounds 1);
#   7. runs matmul_bench (1 and 2 threads): kernc's matmul GFLOP/s and the ratio to OpenBLAS,
#      with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment (these machines
#      set CORETYPE=Haswell, whose kernels are half as fast here; matmul_bench then picks
#      SkylakeX and prints the core OpenBLAS loaded); it fails when kernc's product is wrong.
# Environment: THREADS (default 2), KERNC_BUILD, PYTHON (default python3), TORCH_PYTHON (default
# /usr/bin/python3), ONLY (a comma list of ort, decode, train, matmul: run only those of steps
# 4-7), DECODE_ARGS and TRAIN_ARGS (extra arguments for decode_bench.py, train_bench.py). Extra
# arguments go to ort_bench.py (e.g. --row-budget-s 20 --rows 0,1). Writes
# bench/models/results.{md,json}, decode_results.{md,json} and train_results.{md,json}. Exits
# non-zero when a step failed or kernc's outputs disagree with ORT's, after running every step
# it could.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${KERNC_BUILD:-$ROOT/build-bench}
MODELS=$ROOT/bench/models
PY=${PYTHON:-python3}
TORCH_PY=${TORCH_PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-2}
ONLY=${ONLY:-ort,decode,train,matmul}
T0=$(date +%s)
status=0

phase() { echo; echo "### $* ($(($(date +%s) - T0)) s)"; }
die() { echo "run.sh: $*" >&2; exit 1; }
wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

echo "kernc bench, $(date -u '+%Y-%m-%d %H:%M UTC'), $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "tree: $(git -C "$ROOT" log -1 --format='%h %s' 2>/dev/null | cut -c1-80)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"

phase "1/7 Python packages"
if ! "$PY" -c 'import onnxruntime, numpy' 2>/dev/null; then
  echo "pip installing onnxruntime numpy into $("$PY" -c 'import sys; print(sys.executable)')"
  "$PY" -m pip install -q onnxruntime numpy || die "pip install onnxruntime numpy failed"
fi
"$PY" -c 'import onnxruntime as o, numpy as n; print("onnxruntime", o.__version__, "numpy", n.__version__)'
if ! "$TORCH_PY" -c 'import torch, onnx' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian python3-torch python3-onnx (the models are exported with PyTorch)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
      --no-install-recommends python3-torch python3-onnx python3-numpy >/dev/null ||
      die "apt-get install python3-torch failed"
  else
    die "$TORCH_PY needs torch and onnx to export the models (Debian: apt-get install python3-torch python3-onnx)"
  fi
fi

phase "2/7 build kernc (Release, $BUILD)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null || die "cmake configure failed"
cmake --build "$BUILD" --target kernc -j"$(nproc)" >"$BUILD/bench-build.log" 2>&1 ||
  { tail -30 "$BUILD/bench-build.log"; die "building libkernc failed (log: $BUILD/bench-build.log)"; }
if ! cmake --build "$BUILD" --target matmul_bench -j"$(nproc)" >>"$BUILD/bench-build.log" 2>&1; then
  echo "matmul_bench not built (OpenBLAS missing? see $BUILD/bench-build.log); step 6 is skipped"
fi
cmake --build "$BUILD" --target stream_read -j"$(nproc)" >>"$BUILD/bench-build.log" 2>&1 ||
  echo "stream_read not built (see $BUILD/bench-build.log): step 5 prints no bandwidth bound"
echo "built $BUILD/libkernc.so"

phase "3/7 export models into $MODELS"
if ! wanted ort && ! wanted decode && ! wanted train; then
  echo "skipped (ONLY=$ONLY: no step needs the models)"
else
  mkdir -p "$MODELS"
  stamp=$(cat "$ROOT/bench/export_models.py" "$ROOT/tests/models/hf_modules.py" | sha256sum | cut -c1-16)
  if [ -f "$MODELS/minilm.onnx" ] && [ -f "$MODELS/gpt2.onnx" ] && [ -f "$MODELS/gpt2_past.onnx" ] &&
     [ -f "$MODELS/vit_s.onnx" ] && [ "$(cat "$MODELS/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "models up to date (delete $MODELS to export again)"
  else
    rm -f "$MODELS/.stamp"
    "$TORCH_PY" -W ignore "$ROOT/bench/export_models.py" "$MODELS" 2>&1 | grep -v -i warn ||
      true
    [ -f "$MODELS/minilm.onnx" ] && [ -f "$MODELS/gpt2.onnx" ] && [ -f "$MODELS/gpt2_past.onnx" ] &&
      [ -f "$MODELS/vit_s.onnx" ] ||
      die "exporting the models failed"
    echo "$stamp" >"$MODELS/.stamp"
  fi
fi

phase "4/7 kernc vs ONNX Runtime ($THREADS threads)"
if wanted ort; then
  "$PY" "$ROOT/bench/ort_bench.py" --lib "$BUILD/libkernc.so" --models "$MODELS" \
    --threads "$THREADS" --markdown "$MODELS/results.md" --json "$MODELS/results.json" "$@" ||
    status=1
else
  echo "skipped (ONLY=$ONLY)"
fi

phase "5/7 decoding: kernc's session vs ORT's past_key_values loop ($THREADS threads)"
if wanted decode; then
  # shellcheck disable=SC2086  # DECODE_ARGS is a list of arguments
  "$PY" "$ROOT/bench/decode_bench.py" --lib "$BUILD/libkernc.so" --models "$MODELS" \
    --stream "$BUILD/bench/stream_read" --threads "$THREADS" --profile \
    --markdown "$MODELS/decode_results.md" --json "$MODELS/decode_results.json" \
    ${DECODE_ARGS:-} || status=1
else
  echo "skipped (ONLY=$ONLY)"
fi

phase "6/7 training: kernc's trainer vs PyTorch (GPT-2 small, 4x64, AdamW, $THREADS threads)"
if wanted train; then
  # separate processes per engine (peak memory is each one's own); Debian's torch 1.13
  "$TORCH_PY" "$ROOT/bench/train_bench.py" --lib "$BUILD/libkernc.so" --models "$MODELS" \
    --threads "$THREADS" --markdown "$MODELS/train_results.md" --json "$MODELS/train_results.json" \
    ${TRAIN_ARGS:-} || status=1
else
  echo "skipped (ONLY=$ONLY)"
fi

phase "7/7 matmul: kernc vs OpenBLAS (GFLOP/s, 1 and 2 threads)"
if ! wanted matmul; then
  echo "skipped (ONLY=$ONLY)"
elif [ -x "$BUILD/bench/matmul_bench" ]; then
  # OpenBLAS's own choice of kernels (matmul_bench sets SkylakeX when CORETYPE is unset), not
  # the environment's; this step only
  echo "environment: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-unset}, OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-unset} (unset for matmul_bench); load: $(uptime | sed 's/.*load average/load average/')"
  blas=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
  "${blas[@]}" "$BUILD/bench/matmul_bench" --size 1024 --threads 1,2 || status=1
  echo
  # the shape of GPT-2's c_fc on 128 tokens: where the transformer rows spend most of their time
  "${blas[@]}" "$BUILD/bench/matmul_bench" --mnk 128,3072,768 --threads 1,2 || status=1
  echo "load after: $(uptime | sed 's/.*load average/load average/')"
else
  echo "skipped: $BUILD/bench/matmul_bench was not built"
  status=1
fi

phase "done: status $status"
exit $status
