#!/usr/bin/python3
"""bench/export_models.py - export the transformer models that bench/ort_bench.py and
bench/decode_bench.py run, with random weights, from PyTorch, as Hugging Face's modules write
them. Run by bench/run.sh with Debian's Python (python3-torch 1.13 CPU); the models are written
at bench time and not committed:

    /usr/bin/python3 bench/export_models.py OUT_DIR   # writes OUT_DIR/{minilm,gpt2,gpt2_past,vit_s}.onnx

  minilm  MiniLM-L6-shaped BERT encoder (sentence-transformers/all-MiniLM-L6-v2's config): 6 layers,
          hidden 384, 12 heads, FFN 1536, vocab 30522, 512 positions, 2 token types, LayerNorm eps
          1e-12. Written as transformers' BertModel: word + token-type + position embeddings
          (position_ids a registered arange buffer sliced to the sequence), head split/merge by
          view + permute (Reshape/Transpose), scores / sqrt(32) (Div), the extended padding mask
          (1 - mask[:, None, None, :]) * finfo(float32).min added to the scores (transformers >=
          4.21), Softmax, erf GELU (nn.GELU(): Div, Erf, Add, Mul, Mul), post-LN residuals.
          Inputs input_ids, attention_mask, token_type_ids (int64 [batch, seq]); output
          last_hidden_state [batch, seq, 384]. Opset 17: LayerNorm exports as LayerNormalization.
  gpt2    GPT-2-small-shaped decoder (gpt2's config): 12 layers, hidden 768, 12 heads, FFN 3072,
          vocab 50257, 1024 positions, eps 1e-5. Written as transformers' GPT2Model + tied LM head:
          Conv1D layers (addmm: Reshape, Gemm, Reshape), fused c_attn split into q/k/v (Split),
          scores / sqrt(64) (Div by a computed scalar), causal mask from the registered
          lower-triangular bool buffer sliced to [S, S] and applied with
          torch.where(mask, scores, finfo.min) (Where), Softmax, tanh GELU (nn.GELU('tanh'), written
          out with Pow/Tanh), pre-LN, final LN, logits = h @ wte^T (MatMul with a folded transpose).
          Input input_ids (int64 [batch, seq]); output logits [batch, seq, 50257]. Opset 13, so
          LayerNorm comes out decomposed (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul,
          Add), as exporters write it below opset 17.
  gpt2_past  the same module and weights as gpt2.onnx, exported with past inputs for ONNX Runtime
          (Gpt2Past below: input_ids, past_key_values.N.key/value [B, 12, P, 64] in; logits and
          present.N.key/value [B, 12, P + S, 64] out), for bench/decode_bench.py. Its export
          comes after gpt2's and draws from the generator after it, so gpt2.onnx and minilm.onnx
          stay byte-for-byte what they were before it existed.
  vit_s   ViT-S/16-shaped encoder (DINOv2 ViT-S's width at 224x224, patch 16): 12 layers, hidden
          384, 6 heads, MLP 1536, LayerNorm eps 1e-6, written as Dinov2Model (hf_modules.VitModel):
          Conv2d patch embedding (kernel = stride = 16), class token, position embeddings for a
          14x14 grid resized bicubically to the image's grid in the graph (Resize mode=cubic),
          separate q/k/v projections, layer scale before each residual add, erf GELU. Input
          pixel_values [batch, 3, 224, 224] (dynamic batch); outputs last_hidden_state
          [batch, 197, 384] and pooler_output [batch, 384]. Opset 17. Exported last, from its own
          seed, so the other models stay byte-for-byte what they were.

The modules are tests/models/hf_modules.py's (shared with tests/models/make_models.py); the
configs are here. Both have dynamic batch and seq axes. Weights: PyTorch's default init (Linear,
Embedding) with seeded RNG; LayerNorm gamma/beta randomized around (1, 0) so a dropped gamma or
beta shows in the comparison. Prints the op set, node count and size of each model.
"""
import os
import sys
import time

import onnx
import torch

# the modules are shared with tests/models/make_models.py
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "models"))
from hf_modules import BertModel, Gpt2Model, VitModel, randomize_norms  # noqa: E402


class MiniLMCfg:
    vocab, hidden, heads, layers, inter, max_pos, type_vocab, eps = 30522, 384, 12, 6, 1536, 512, 2, 1e-12
    pooler, mask_min = False, torch.finfo(torch.float32).min  # transformers >= 4.21: finfo.min


class MiniLM(BertModel):
    """BertModel with the inputs in this model's order: ids, attention_mask, token_type_ids."""

    def forward(self, input_ids, attention_mask, token_type_ids):
        return super().forward(input_ids, token_type_ids, attention_mask)


class Gpt2Cfg:
    vocab, hidden, heads, layers, n_ctx, eps = 50257, 768, 12, 12, 1024, 1e-5
    wte_std, wpe_std, conv_bias_std = 0.02, 0.01, 0.02  # GPT-2's initializer_range

    @staticmethod
    def conv_std(nx):
        return 0.02


class VitSCfg:
    image, patch, channels, hidden, heads, layers, inter, eps = 224, 16, 3, 384, 6, 12, 1536, 1e-6
    native_grid, layer_scale_init = 14, 1.0


class Gpt2Past(torch.nn.Module):
    """gpt2 with the past_key_values interface optimum and ORT GenAI export (the decoder
    "with past"): inputs input_ids [B, S] and past_key_values.N.key / .value [B, 12, P, 64] for
    N < 12 (P may be 0: the prefill); outputs logits [B, S, vocab] and present.N.key / .value
    [B, 12, P + S, 64]. No attention_mask input: the benchmark decodes unpadded sequences, and
    the causal mask is sliced from the bias buffer at [P, P + S) as transformers does."""

    def __init__(self, gpt2):
        super().__init__()
        self.gpt2 = gpt2  # the same module, so the same weights as gpt2.onnx

    def forward(self, input_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.gpt2(input_ids, past)
        return (logits,) + tuple(t for kv in presents for t in kv)


def export(model, args, path, in_names, out_names, opset, axes=None):
    t0 = time.time()
    model.eval()
    axes = axes or {n: {0: "batch", 1: "seq"} for n in in_names + out_names}
    with torch.no_grad():
        torch.onnx.export(model, args, path, input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=opset)
    m = onnx.load(path, load_external_data=False)
    ops = sorted({n.op_type for n in m.graph.node})
    params = sum(p.numel() for p in model.parameters())
    print("  %s: opset %d, %.1fM params, %d nodes, %.0f MiB, %.1f s; ops %s"
          % (os.path.basename(path), opset, params / 1e6, len(m.graph.node),
             os.path.getsize(path) / 2**20, time.time() - t0, " ".join(ops)), flush=True)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: export_models.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)

    torch.manual_seed(1)
    minilm = MiniLM(MiniLMCfg)
    randomize_norms(minilm, gen)
    ids = torch.randint(0, MiniLMCfg.vocab, (2, 16), generator=gen)
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 12:] = 0
    export(minilm, (ids, mask, torch.zeros(2, 16, dtype=torch.int64)), os.path.join(out, "minilm.onnx"),
           ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state"], 17)

    torch.manual_seed(2)
    gpt2 = Gpt2Model(Gpt2Cfg)
    randomize_norms(gpt2, gen)
    ids = torch.randint(0, Gpt2Cfg.vocab, (1, 16), generator=gen)
    export(gpt2, (ids,), os.path.join(out, "gpt2.onnx"), ["input_ids"], ["logits"], 13)

    # the same module once more, with past inputs (traced at P = 5, S = 3; both axes dynamic)
    L, H, D = Gpt2Cfg.layers, Gpt2Cfg.heads, Gpt2Cfg.hidden // Gpt2Cfg.heads
    kv = ["%s.%d.%s" % (pre, i, t) for pre in ("past_key_values", "present") for i in range(L)
          for t in ("key", "value")]
    past_names, present_names = kv[:2 * L], kv[2 * L:]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 2: "past_seq"} for n in past_names})
    axes.update({n: {0: "batch", 2: "total_seq"} for n in present_names})
    past = tuple(0.1 * torch.randn(1, H, 5, D, generator=gen) for _ in past_names)
    export(Gpt2Past(gpt2), (ids[:, :3],) + past, os.path.join(out, "gpt2_past.onnx"),
           ["input_ids"] + past_names, ["logits"] + present_names, 13, axes)

    torch.manual_seed(3)
    vit = VitModel(VitSCfg)
    randomize_norms(vit, gen)
    pixels = torch.randn(1, 3, VitSCfg.image, VitSCfg.image, generator=gen)
    axes = {n: {0: "batch"} for n in ("pixel_values", "last_hidden_state", "pooler_output")}
    export(vit, (pixels,), os.path.join(out, "vit_s.onnx"), ["pixel_values"],
           ["last_hidden_state", "pooler_output"], 17, axes)


if __name__ == "__main__":
    main()
