#!/usr/bin/env bash
# scripts/main.sh - the main job: set up, build kernc, compile the example GPT-2-style model
# (examples/gpt2_tiny.onnx) into a shared library, build examples/next_token.c against its header
# and run it on examples/prompt.txt, then show how one layer changes through the passes. Every
# command it runs is printed with a leading '$'. All it writes goes under the build folder
# (build/, or $KERNC_BUILD), so it is safe to run again; a second run rebuilds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }
exec 3>&1 # the terminal: show's echo is seen even when a command's output is redirected
show() {   # print a command, then run it
  printf '$ %s\n' "$*" >&3
  "$@"
}
b=${KERNC_BUILD:-build}
out=$b/example

step "1. build kernc (cmake, RelWithDebInfo, in $b/; some 10 s on two cores the first time)"
show cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
show cmake --build "$b" -j"$(nproc)" --target kernc_tool example_mlp example_lora_finetune >/dev/null

step "2. compile the example model ahead of time: a shared library and its C header"
echo "   examples/gpt2_tiny.onnx: GPT-2-style decoder, 2 layers, width 64, 4 heads, vocabulary 100"
echo "   (random weights, no tokenizer: prompts are token ids). input_ids i64[batch,seq] -> logits"
mkdir -p "$out"
show "$b/kernc" compile examples/gpt2_tiny.onnx -o "$out/libgpt2.so"
wc -c "$out/libgpt2.so" "$out/gpt2.h" | awk '$2 != "total" {printf "   %8d bytes  %s\n", $1, $2}'
grep -E '^(gpt2_t|int|const char|void) .*gpt2_' "$out/gpt2.h" | sed 's/^/   /'

step "3. build a C program against the header (no kernc, no LLVM at run time) and run it"
echo "   greedy decoding twice: the whole sequence re-run per token (gpt2_run), then with the KV"
echo "   cache of the library's session (gpt2_session_new, gpt2_decode); ms per token for each"
# shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader: next_token finds the .so beside it
show "${CC:-cc}" -std=c11 -O2 -Wall -Wextra -I"$out" examples/next_token.c -o "$out/next_token" \
  -L"$out" -lgpt2 -Wl,-rpath,'$ORIGIN' -lm
show "$out/next_token" examples/prompt.txt 8

step "3b. the same greedy continuation by kernc generate (JIT, KV cache), and on the library"
echo "   kernc generate: the prompt prefilled once, then one token per step over the cache"
prompt=$(grep -v '^#' examples/prompt.txt | tr '\n' ' ')
show "$b/kernc" generate examples/gpt2_tiny.onnx --prompt "$prompt" --max-new 8 2>&1 | sed 's/^/   /'
show "$b/kernc" generate "$out/libgpt2.so" --prompt "$prompt" --max-new 8 2>&1 | sed 's/^/   /'

step "4. how layer 0 (ONNX names /h.0/...) changes through the passes"
# the IR after each pass that changed it, then the pipeline's result (its header has no after=)
show "$b/kernc" dump examples/gpt2_tiny.onnx --print-changed >"$out/changed.kir"
awk -v layer=0 -f examples/one_layer.awk "$out/changed.kir" >"$out/layer0.kir"
echo "   (whole model: $out/changed.kir; layer 0 by examples/one_layer.awk: $out/layer0.kir)"
echo "   layer 0's ops after each pass that changed the graph:"
sed -nE 's/^# kir 1  after=([^ ]+) \(([0-9/]+)\)  \[layer 0: ([0-9]+) ops\]/\1 \2 \3/p' \
  "$out/layer0.kir" | awk '{printf "     %-16s %-6s %4d ops\n", $1, $2, $3}'
echo "   its attention entering fuse-attention (after fuse-gelu; loc(...) dropped):"
awk '/^# kir/ {on = /after=fuse-gelu/; next}
  on && /\/h\.0\/attn\/Split"/ {p = 1}
  p {print; if (done) exit; if (/\/h\.0\/attn\/Transpose_4"/) done = 1}' "$out/layer0.kir" |
  sed -E 's/ loc\("[^"]*"\)$//; s/^/   /'
echo "   layer 0 at the end, what the code generator gets: those ops are one attention; bias,"
echo "   GELU and residual adds ride in matmul epilogues (matmul_ep); LayerNorm is layer_norm:"
awk '/^# kir/ {on = !/after=/; next} on' "$out/layer0.kir" |
  sed -E 's/ loc\("[^"]*"\)$//; s/^/   /'

step "5. examples/mlp.c: a two-layer MLP built with the C builder API, printed as kernc IR"
"$b/example_mlp" | tee "$b/mlp.kir" | sed 's/^/   /'
"$b/kernc" opt "$b/mlp.kir" --passes= | diff -u "$b/mlp.kir" - &&
  echo "   (parsed and printed back by kernc opt: identical)"

step "6. training: fine-tune the example model with LoRA (examples/lora_finetune.c, C API, JIT)"
echo "   next-token cross-entropy on one short sequence; rank-8 adapters on every projection,"
echo "   base weights frozen; AdamW steps; the adapters saved as safetensors"
show "$b/example_lora_finetune" examples/gpt2_tiny.onnx 30 "$out/adapters.safetensors" | sed 's/^/   /'
echo "   the same from the command line, trained weights merged and written back as ONNX:"
python3 - "$out/train" <<'PY'
import os, sys
import numpy as np
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
seq = np.array([(7 * i + 3) % 23 + 40 for i in range(25)], dtype=np.int64)
np.save(os.path.join(d, "input_ids.npy"), seq[None, :-1])
np.save(os.path.join(d, "labels.npy"), seq[None, 1:])
PY
show "$b/kernc" train examples/gpt2_tiny.onnx --data "$out/train" --loss xent:logits:labels \
  --lr 1e-2 --steps 10 --lora r=8,alpha=16,targets='h.*.c_*.weight' \
  --export-onnx "$out/gpt2_tiny_lora.onnx" | sed 's/^/   /'
