#!/usr/bin/python3
"""tests/models/make_shape_models.py - tiny decoders whose sizes follow from the input shapes only
through shape arithmetic in the graph, as PyTorch exports real models: for `kernc check` (JIT,
tests/test_models.c) and `kernc compile` (AOT, tests/test_aot.c), which must accept them both.

Run with Debian's Python (python3-torch 1.13 CPU, python3-onnx 1.12, numpy):

    /usr/bin/python3 tests/models/make_shape_models.py [--out DIR]

It rewrites tests/models/NAME/ (model.onnx, test_data_set_N/{input,output}_N.pb) with
make_models.py's build(): the same layout, reference rules (float64 PyTorch forward rounded to
float32; PyTorch's own float32 result asserted well within kernc check's tolerance), dynamic
batch and sequence axes and data sets (B=1, S=7 and B=2, S=12). Both models are Llama-style
(RMSNorm written out, rotate-half rotary embedding, grouped-query attention with 4 query and 2
kv heads, SwiGLU MLP, untied LM head, 2 layers, hidden 32), and differ in how they compute
positions and masks:

  rope_arange_tiny   rotary positions as transformers < 4.38 wrote them: t = torch.arange(S,
                     dtype=torch.float32) (Shape, Gather, Cast to float, Range over float
                     operands), freqs = outer(t, inv_freq) (written t[:, None] * inv_freq[None]:
                     torch.outer exports as Einsum, which kernc lacks), cos/sin of
                     cat(freqs, freqs); int positions torch.arange(S) (Range over int64) index a
                     learned position table added to the embeddings, as GPT-2's wpe; the causal
                     mask torch.full((S, S), -inf).triu(1) (ConstantOfShape, Trilu) added to the
                     scores; heads split by q.view(x.shape[0], x.shape[1], heads, -1) (Shape,
                     Gather, Unsqueeze, Concat into the Reshape target); repeat_kv expanding to
                     (b, kv, n_rep, s, d) taken from h.shape, then reshaping.
  hf_positions_tiny  Hugging Face's padding-aware positions: inputs input_ids and attention_mask
                     (int64 [B,S], 0 = padding; the second data set left-pads row 1 by 3),
                     position_ids = attention_mask.cumsum(-1) - 1, masked_fill(mask == 0, 1)
                     (CumSum, Sub, Equal, Where), rotary cos/sin from them as transformers >= 4.38
                     (inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1) @ positions);
                     the causal mask torch.ones(S, S).tril() (ConstantOfShape, Trilu upper=0)
                     times the padding mask, expanded to (B, heads, S, S) from q.shape and applied
                     with masked_fill(mask == 0, finfo(float32).min).

The weights: PyTorch's default init, norms randomized as make_models.py does. Seeds are fixed;
the script rewrites byte-identical files.
"""
import argparse
import math

import torch
from torch import nn

from hf_modules import LlamaMLP, RMSNorm, randomize_norms, rotate_half
from make_models import HERE, build


class Cfg:
    vocab, hidden, heads, kv_heads, layers, inter, eps, theta, max_pos = 64, 32, 4, 2, 2, 64, 1e-6, \
        10000.0, 32


def inv_freq(dim, base):
    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))


def repeat_kv(h, n_rep):
    """transformers' repeat_kv: expand to a shape computed from h.shape, then reshape."""
    b, kv, s, d = h.shape
    h = h[:, :, None, :, :].expand(b, kv, n_rep, s, d)
    return h.reshape(b, kv * n_rep, s, d)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.heads, c.kv_heads, c.hidden // c.heads
        self.q_proj = nn.Linear(c.hidden, c.hidden, bias=False)
        self.k_proj = nn.Linear(c.hidden, c.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden, c.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(c.hidden, c.hidden, bias=False)

    def forward(self, x, cos, sin, mask, masked_fill):
        # head split with a reshape target computed from x.shape (Shape, Gather, Concat)
        q = self.q_proj(x).view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)
        k = self.k_proj(x).view(x.shape[0], x.shape[1], self.kv_heads, -1).transpose(1, 2)
        v = self.v_proj(x).view(x.shape[0], x.shape[1], self.kv_heads, -1).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, self.heads // self.kv_heads)
        v = repeat_kv(v, self.heads // self.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        if masked_fill:
            # the mask expanded to the scores' shape, computed from q and k
            m = mask.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            w = w.masked_fill(m == 0, torch.finfo(torch.float32).min)
        else:
            w = w + mask
        w = nn.functional.softmax(w, dim=-1)
        o = torch.matmul(w, v).transpose(1, 2).contiguous()
        return self.o_proj(o.reshape(x.shape[0], x.shape[1], -1))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden, c.eps)
        self.mlp = LlamaMLP(c)

    def forward(self, h, cos, sin, mask, masked_fill):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, masked_fill)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.hidden, c.eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
        self.register_buffer("inv_freq", inv_freq(c.hidden // c.heads, c.theta))

    def head(self, h, cos, sin, mask, masked_fill):
        for layer in self.layers:
            h = layer(h, cos, sin, mask, masked_fill)
        return self.lm_head(self.norm(h))


class RopeArange(Decoder):
    """Float arange positions for the rotary embedding, int arange for a learned position
    table, and the causal mask full(-inf).triu(1)."""

    def __init__(self, c):
        super().__init__(c)
        self.embed_positions = nn.Embedding(c.max_pos, c.hidden)
        nn.init.normal_(self.embed_positions.weight, std=0.1)

    def forward(self, input_ids):
        seq = input_ids.shape[1]
        pos = torch.arange(seq)  # int64 positions: Range over int64
        h = self.embed_tokens(input_ids) + self.embed_positions(pos)[None]
        t = torch.arange(seq, dtype=torch.float32)  # Cast(S) to float: Range over float
        # torch.outer (exported as Einsum, which kernc lacks) written as a broadcast product
        freqs = t.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
        mask = torch.full((seq, seq), float("-inf")).triu(1).to(h.dtype)
        return self.head(h, cos, sin, mask, False)


class HfPositions(Decoder):
    """Padding-aware positions from the attention mask's cumulative sum, rotary cos/sin from
    them, the causal mask ones(S, S).tril() times the padding mask."""

    def forward(self, input_ids, attention_mask):
        h = self.embed_tokens(input_ids)
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids = position_ids.masked_fill(attention_mask == 0, 1)
        # transformers writes .float(); the weights' dtype keeps the float64 reference in float64
        dt = self.inv_freq.dtype
        inv = self.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
        freqs = (inv @ position_ids[:, None, :].to(dt)).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None].to(h.dtype), emb.sin()[:, None].to(h.dtype)
        seq = input_ids.shape[1]
        causal = torch.ones(seq, seq).tril().to(h.dtype)
        mask = causal[None, None, :, :] * attention_mask[:, None, None, :].to(causal.dtype)
        return self.head(h, cos, sin, mask, True)


def ids_inputs(gen, b, s, c=Cfg):
    return [torch.randint(0, c.vocab, (b, s), generator=gen)]


def padded_inputs(gen, b, s, c=Cfg):
    ids = torch.randint(0, c.vocab, (b, s), generator=gen)
    mask = torch.ones(b, s, dtype=torch.int64)
    if b > 1:
        mask[1, :3] = 0  # left padding: row 1's positions start at 0 after the pad
    return [ids, mask]


def main():
    ap = argparse.ArgumentParser(description="Export tests/models/{rope_arange,hf_positions}_tiny "
                                 "with reference outputs.")
    ap.add_argument("--out", default=HERE, metavar="DIR",
                    help="folder to write NAME/ into (default: tests/models, the committed models)")
    out = ap.parse_args().out
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(4)
    m = RopeArange(Cfg)
    randomize_norms(m, gen)
    build(out, "rope_arange_tiny", m, ["input_ids"], ["logits"], ids_inputs, 17)

    torch.manual_seed(10)
    m = HfPositions(Cfg)
    randomize_norms(m, gen)
    build(out, "hf_positions_tiny", m, ["input_ids", "attention_mask"], ["logits"], padded_inputs,
          17)


if __name__ == "__main__":
    main()
