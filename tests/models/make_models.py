#!/usr/bin/python3
"""tests/models/make_models.py - small transformer models exported from PyTorch, with reference
outputs, for `kernc check tests/models/*/` (tests/test_models.c runs it).

Run with Debian's Python (python3-torch 1.13 CPU, python3-onnx 1.12, numpy):

    /usr/bin/python3 tests/models/make_models.py [--out DIR]

It rewrites tests/models/NAME/model.onnx and tests/models/NAME/test_data_set_N/{input,output}_N.pb
(ONNX backend test layout, one TensorProto per file, N in graph input/output order; --out DIR
writes DIR/NAME/ instead, to compare with the committed files) for the models below. Their
modules are in tests/models/hf_modules.py (shared with bench/export_models.py); the configs, seeds
and inputs are here.

  bert_tiny   BERT-style encoder, written as Hugging Face's BertModel: word + token-type +
              position embeddings (position_ids a registered arange buffer sliced to the
              sequence), LayerNorm (eps 1e-12), the extended padding mask
              (1 - m[:, None, None, :]) * -10000 built from an int64 [B,S] mask (Unsqueeze, Cast,
              Sub, Mul) and added to Q.K^T / sqrt(d), softmax, .V, head split/merge by view +
              permute, erf GELU (nn.GELU()), post-LN residuals, 2 layers, pooler (first token ->
              dense -> tanh). Inputs input_ids, token_type_ids, attention_mask (int64 [B,S]);
              outputs last_hidden_state [B,S,64], pooler_output [B,64]. Opset 17, so LayerNorm
              exports as LayerNormalization.
  gpt2_tiny   GPT-2-style decoder, written as Hugging Face's GPT2Model: Conv1D layers (addmm on
              the flattened input, so Gemm + Reshape), fused c_attn split into q/k/v (Split),
              causal mask from a registered lower-triangular bool buffer sliced to [S,S] and
              applied with torch.where(mask, w, finfo.min), scores divided by sqrt(d), tanh GELU
              (nn.GELU(approximate='tanh'), exported as its formula with Tanh), pre-LN, final LN,
              tied embeddings (logits = h @ wte^T), position_ids from torch.arange (Range), 2
              layers. Input input_ids; output logits [B,S,vocab]. Exported at opset 13 on
              purpose, so LayerNorm comes out decomposed (ReduceMean, Sub, Pow, Add, Sqrt, Div)
              as older exporters write it: a second spelling of the same math for the
              canonicalizer.
  llama_tiny  Llama-style decoder, written as Hugging Face's LlamaModel: RMSNorm written out
              (x * rsqrt(mean(x^2) + eps) * w), rotary embedding in rotate-half form (Slice, Neg,
              Concat) with cos/sin computed in the graph from position_ids = arange(S) as
              transformers >= 4.38 does (inv_freq buffer expanded, MatMul with the positions,
              Transpose, Concat, Cos, Sin), grouped-query attention (4 query heads, 2 kv heads;
              k/v repeated with expand + reshape as repeat_kv), additive causal mask built as
              transformers 4.3x's _make_causal_mask (full(finfo.min), arange comparison,
              masked_fill -> Where) added to the scores, SwiGLU MLP (down(silu(gate(x)) * up(x)),
              silu exported as x * Sigmoid(x)), untied lm head, 2 layers. Input input_ids; output
              logits [B,S,vocab]. Opset 17.

Every model has dynamic batch and sequence axes (dynamic_axes) and two data sets: B=1, S=7 and
B=2, S=12; bert's second set has padding in row 1 of its attention mask (the last 4 positions).
Weights: PyTorch's default init, except LayerNorm/RMSNorm weights and biases, randomized
(1 + 0.1 N(0,1), 0.1 N(0,1)) so that a dropped or swapped gamma/beta shows, and GPT-2's Conv1D
(N(0, 0.25/fan_in)) and embeddings (wte std 0.1, wpe std 0.2). Seeds are fixed (torch.manual_seed
per model, torch.Generator for inputs); the script rewrites byte-identical files.

Reference outputs: the PyTorch forward pass (eval(), no_grad()) of the same module in float64
(model.double(), the float32 weights exactly), rounded to float32. kernc check compares each
element with |got - want| <= 1e-7 + 1e-3 |want|; float32 code run on O(1) activations has
absolute errors of a few 1e-7 on every output, so an element within ~1e-4 of zero can fail any
float32 implementation. The script therefore also runs the float32 model and asserts that
PyTorch's own float32 result uses under a quarter of that tolerance against the references
(printed per output, with the output magnitudes); the weight scales above and the seeds were
picked so that it holds (e.g. GPT-2's tied logits at wte std 0.5 reached 20 in magnitude and
PyTorch's float32 result 1.7x the tolerance). Tolerances are never loosened here.

Export: torch.onnx.export with constant folding (the default), checked with onnx.checker.
Not covered: Einsum (transformers < 4.38 computed the rotary frequencies with
torch.einsum("i,j->ij"); kernc has no Einsum, so the newer matmul form is used).
The opset-23 model is made by tests/models/make_opset23.py (needs the PyPI onnx 1.22).
"""
import argparse
import copy
import os
import shutil

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from hf_modules import BertModel, Gpt2Model, LlamaModel, randomize_norms

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL, ATOL = 1e-3, 1e-7  # kernc check's value tolerance
MARGIN = 0.25  # how much of the tolerance PyTorch's own float32 result may use
SHAPES = [(1, 7), (2, 12)]  # (batch, seq) of test_data_set_0 and _1


class BertCfg:
    vocab, hidden, heads, layers, inter, max_pos, type_vocab, eps = 100, 64, 4, 2, 128, 64, 2, 1e-12
    pooler, mask_min = True, -10000.0  # the -10000 mask of transformers < 4.21


def bert_inputs(gen, b, s, c=BertCfg):
    ids = torch.randint(0, c.vocab, (b, s), generator=gen)
    tt = torch.zeros(b, s, dtype=torch.int64)
    tt[:, s // 2:] = 1
    mask = torch.ones(b, s, dtype=torch.int64)
    if b > 1:
        mask[1, s - 4:] = 0  # padding at the end of the second sequence
    return [ids, tt, mask]


class Gpt2Cfg:
    vocab, hidden, heads, layers, n_ctx, eps = 100, 64, 4, 2, 64, 1e-5
    wte_std, wpe_std, conv_bias_std = 0.1, 0.2, 0.05

    @staticmethod
    def conv_std(nx):
        return 0.5 * nx ** -0.5


def ids_inputs(gen, b, s, vocab=100):
    return [torch.randint(0, vocab, (b, s), generator=gen)]


class LlamaCfg:
    vocab, hidden, heads, kv_heads, layers, inter, eps, theta = 100, 64, 4, 2, 2, 128, 1e-6, 10000.0


# ---- export -------------------------------------------------------------------------------------


def write_pb(arr, path):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr)).SerializeToString())


def in_tolerance(got, want):
    """Largest |got - want| / (ATOL + RTOL |want|): below 1 passes kernc check's comparison."""
    return float(np.max(np.abs(got.astype(np.float64) - want) / (ATOL + RTOL * np.abs(want))))


def build(out, name, model, in_names, out_names, make_inputs, opset):
    gen = torch.Generator().manual_seed(1234)
    model.eval()
    out_dir = os.path.join(out, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    axes = {n: {0: "batch", 1: "seq"} for n in in_names}
    for n in out_names:
        axes[n] = {0: "batch"} if n == "pooler_output" else {0: "batch", 1: "seq"}
    sets = [make_inputs(gen, b, s) for b, s in SHAPES]
    path = os.path.join(out_dir, "model.onnx")
    with torch.no_grad():
        torch.onnx.export(model, tuple(sets[1]), path, input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, opset_version=opset)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    m64 = copy.deepcopy(model).double()
    for i, inputs in enumerate(sets):
        d = os.path.join(out_dir, "test_data_set_%d" % i)
        os.makedirs(d)
        with torch.no_grad():
            outs = model(*inputs)
            outs64 = m64(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        outs64 = outs64 if isinstance(outs64, tuple) else (outs64,)
        for j, x in enumerate(inputs):
            write_pb(x.numpy(), os.path.join(d, "input_%d.pb" % j))
        for j, (y32, y64) in enumerate(zip(outs, outs64)):
            y = y64.numpy().astype(np.float32)
            write_pb(y, os.path.join(d, "output_%d.pb" % j))
            margin = in_tolerance(y32.numpy(), y)
            print("  %s set %d %s %s: |y| max %.3g, min %.3g; torch f32 at %.3f of the "
                  "tolerance" % (name, i, out_names[j], list(y.shape), np.abs(y).max(),
                                 np.abs(y).min(), margin))
            assert margin < MARGIN, "PyTorch's own float32 result is not well within tolerance"
    ops = sorted({n.op_type for n in m.graph.node})
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out_dir) for f in fs)
    params = sum(p.numel() for p in model.parameters())
    print("%s: opset %d, %d params, %d nodes, %d bytes, ops %s"
          % (name, opset, params, len(m.graph.node), size, " ".join(ops)))


def main():
    ap = argparse.ArgumentParser(description="Export tests/models/{bert,gpt2,llama}_tiny with "
                                 "reference outputs.")
    ap.add_argument("--out", default=HERE, metavar="DIR",
                    help="folder to write NAME/ into (default: tests/models, the committed models)")
    out = ap.parse_args().out
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(0)
    bert = BertModel(BertCfg)
    randomize_norms(bert, gen)
    build(out, "bert_tiny", bert, ["input_ids", "token_type_ids", "attention_mask"],
          ["last_hidden_state", "pooler_output"], bert_inputs, 17)

    torch.manual_seed(1)
    gpt2 = Gpt2Model(Gpt2Cfg)
    randomize_norms(gpt2, gen)
    build(out, "gpt2_tiny", gpt2, ["input_ids"], ["logits"], ids_inputs, 13)

    torch.manual_seed(2)
    llama = LlamaModel(LlamaCfg)
    randomize_norms(llama, gen)
    build(out, "llama_tiny", llama, ["input_ids"], ["logits"], ids_inputs, 17)


if __name__ == "__main__":
    main()
