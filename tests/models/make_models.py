#!/usr/bin/python3
"""tests/models/make_models.py - small transformer models exported from PyTorch, with reference
outputs, for `kernc check tests/models/*/` (tests/test_models.c runs it).

Run with Debian's Python (python3-torch 1.13 CPU, python3-onnx 1.12, numpy):

    /usr/bin/python3 tests/models/make_models.py

It rewrites tests/models/NAME/model.onnx and tests/models/NAME/test_data_set_N/{input,output}_N.pb
(ONNX backend test layout, one TensorProto per file, N in graph input/output order) for:

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
import copy
import math
import os
import shutil

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL, ATOL = 1e-3, 1e-7  # kernc check's value tolerance
MARGIN = 0.25  # how much of the tolerance PyTorch's own float32 result may use
SHAPES = [(1, 7), (2, 12)]  # (batch, seq) of test_data_set_0 and _1


def randomize_norm(model, gen):
    """Give every LayerNorm/RMSNorm non-trivial weights (and biases)."""
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (nn.LayerNorm, RMSNorm)):
            with torch.no_grad():
                w.copy_(1 + 0.1 * torch.randn(w.shape, generator=gen))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


# ---- bert_tiny ----------------------------------------------------------------------------------


class BertCfg:
    vocab, hidden, heads, layers, inter, max_pos, type_vocab, eps = 100, 64, 4, 2, 128, 64, 2, 1e-12


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden)
        self.position_embeddings = nn.Embedding(c.max_pos, c.hidden)
        self.token_type_embeddings = nn.Embedding(c.type_vocab, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("position_ids", torch.arange(c.max_pos).expand((1, -1)))

    def forward(self, input_ids, token_type_ids):
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        e = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))
        return self.dropout(self.LayerNorm(e))


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_attention_heads = c.heads
        self.attention_head_size = c.hidden // c.heads
        self.all_head_size = c.hidden
        self.query = nn.Linear(c.hidden, c.hidden)
        self.key = nn.Linear(c.hidden, c.hidden)
        self.value = nn.Linear(c.hidden, c.hidden)
        self.dropout = nn.Dropout(0.1)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        q = self.transpose_for_scores(self.query(hidden_states))
        k = self.transpose_for_scores(self.key(hidden_states))
        v = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / math.sqrt(self.attention_head_size)
        scores = scores + attention_mask
        probs = self.dropout(nn.functional.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.all_head_size,))


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertSelfAttention(c)
        self.attn_out = nn.Linear(c.hidden, c.hidden)
        self.attn_ln = nn.LayerNorm(c.hidden, eps=c.eps)
        self.intermediate = nn.Linear(c.hidden, c.inter)
        self.act = nn.GELU()
        self.output = nn.Linear(c.inter, c.hidden)
        self.out_ln = nn.LayerNorm(c.hidden, eps=c.eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, h, mask):
        a = self.attn_ln(self.dropout(self.attn_out(self.attention(h, mask))) + h)
        return self.out_ln(self.dropout(self.output(self.act(self.intermediate(a)))) + a)


class BertTiny(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.layers = nn.ModuleList([BertLayer(c) for _ in range(c.layers)])
        self.pooler = nn.Linear(c.hidden, c.hidden)

    def forward(self, input_ids, token_type_ids, attention_mask):
        # BertModel.get_extended_attention_mask, in the -10000 form of transformers < 4.21
        ext = attention_mask[:, None, None, :]
        ext = ext.to(dtype=self.pooler.weight.dtype)
        ext = (1.0 - ext) * -10000.0
        h = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            h = layer(h, ext)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return h, pooled


def bert_inputs(gen, b, s, c=BertCfg):
    ids = torch.randint(0, c.vocab, (b, s), generator=gen)
    tt = torch.zeros(b, s, dtype=torch.int64)
    tt[:, s // 2:] = 1
    mask = torch.ones(b, s, dtype=torch.int64)
    if b > 1:
        mask[1, s - 4:] = 0  # padding at the end of the second sequence
    return [ids, tt, mask]


# ---- gpt2_tiny ----------------------------------------------------------------------------------


class Gpt2Cfg:
    vocab, hidden, heads, layers, n_ctx, eps = 100, 64, 4, 2, 64, 1e-5


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: a linear layer with the weight stored [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))
        nn.init.normal_(self.weight, std=0.5 * nx ** -0.5)
        nn.init.normal_(self.bias, std=0.05)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class Gpt2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        n = c.n_ctx
        self.register_buffer(
            "bias", torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n))
        self.num_heads, self.head_dim, self.split_size = c.heads, c.hidden // c.heads, c.hidden
        self.c_attn = Conv1D(3 * c.hidden, c.hidden)
        self.c_proj = Conv1D(c.hidden, c.hidden)

    def _split_heads(self, t):
        t = t.view(t.size()[:-1] + (self.num_heads, self.head_dim))
        return t.permute(0, 2, 1, 3)

    def _merge_heads(self, t):
        t = t.permute(0, 2, 1, 3).contiguous()
        return t.view(t.size()[:-2] + (self.num_heads * self.head_dim,))

    def forward(self, h):
        q, k, v = self.c_attn(h).split(self.split_size, dim=2)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        w = torch.matmul(q, k.transpose(-1, -2))
        w = w / torch.full([], v.size(-1) ** 0.5, dtype=w.dtype, device=w.device)
        query_length, key_length = q.size(-2), k.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length:key_length, :key_length]
        mask_value = torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype, device=w.device)
        w = torch.where(causal_mask, w, mask_value)
        w = nn.functional.softmax(w, dim=-1)
        return self.c_proj(self._merge_heads(torch.matmul(w, v)))


class Gpt2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.attn = Gpt2Attention(c)
        self.ln_2 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.c_fc = Conv1D(4 * c.hidden, c.hidden)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = Conv1D(c.hidden, 4 * c.hidden)

    def forward(self, h):
        h = h + self.attn(self.ln_1(h))
        return h + self.c_proj(self.act(self.c_fc(self.ln_2(h))))


class Gpt2Tiny(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c.vocab, c.hidden)
        self.wpe = nn.Embedding(c.n_ctx, c.hidden)
        nn.init.normal_(self.wte.weight, std=0.1)
        nn.init.normal_(self.wpe.weight, std=0.2)
        self.h = nn.ModuleList([Gpt2Block(c) for _ in range(c.layers)])
        self.ln_f = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, input_ids):
        position_ids = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        h = self.wte(input_ids) + self.wpe(position_ids)
        for block in self.h:
            h = block(h)
        h = self.ln_f(h)
        return nn.functional.linear(h, self.wte.weight)  # tied lm head


def ids_inputs(gen, b, s, vocab=100):
    return [torch.randint(0, vocab, (b, s), generator=gen)]


# ---- llama_tiny ---------------------------------------------------------------------------------


class LlamaCfg:
    vocab, hidden, heads, kv_heads, layers, inter, eps, theta = 100, 64, 4, 2, 2, 128, 1e-6, 10000.0


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.variance_epsilon = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * x


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, base):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, x, position_ids):
        # transformers >= 4.38: a batched matmul, not the einsum of older versions
        dt = self.inv_freq.dtype
        inv_freq_expanded = self.inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].to(dt)
        freqs = (inv_freq_expanded @ position_ids_expanded).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(h, n_rep):
    b, kv, s, d = h.shape
    if n_rep == 1:
        return h
    h = h[:, :, None, :, :].expand(b, kv, n_rep, s, d)
    return h.reshape(b, kv * n_rep, s, d)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_heads, self.num_kv = c.heads, c.kv_heads
        self.head_dim = c.hidden // c.heads
        self.q_proj = nn.Linear(c.hidden, c.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden, c.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden, c.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(c.heads * self.head_dim, c.hidden, bias=False)
        self.rotary_emb = RotaryEmbedding(self.head_dim, c.theta)

    def forward(self, h, mask, position_ids):
        bsz, q_len, _ = h.size()
        q = self.q_proj(h).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(bsz, q_len, self.num_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(bsz, q_len, self.num_kv, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(v, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, self.num_heads // self.num_kv)
        v = repeat_kv(v, self.num_heads // self.num_kv)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        w = w + mask
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).contiguous()
        return self.o_proj(o.reshape(bsz, q_len, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden, c.inter, bias=False)
        self.up_proj = nn.Linear(c.hidden, c.inter, bias=False)
        self.down_proj = nn.Linear(c.inter, c.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden, c.eps)
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden, c.eps)
        self.mlp = LlamaMLP(c)

    def forward(self, h, mask, position_ids):
        h = h + self.self_attn(self.input_layernorm(h), mask, position_ids)
        return h + self.mlp(self.post_attention_layernorm(h))


def make_causal_mask(bsz, tgt_len, dtype):
    """transformers 4.3x's _make_causal_mask (no past): 0 on and below the diagonal, min above."""
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, dtype=dtype)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len)


class LlamaTiny(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList([LlamaLayer(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.hidden, c.eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)

    def forward(self, input_ids):
        bsz, seq = input_ids.shape
        h = self.embed_tokens(input_ids)
        mask = make_causal_mask(bsz, seq, h.dtype)
        position_ids = torch.arange(seq).unsqueeze(0)
        for layer in self.layers:
            h = layer(h, mask, position_ids)
        return self.lm_head(self.norm(h))


# ---- export -------------------------------------------------------------------------------------


def write_pb(arr, path):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr)).SerializeToString())


def in_tolerance(got, want):
    """Largest |got - want| / (ATOL + RTOL |want|): below 1 passes kernc check's comparison."""
    return float(np.max(np.abs(got.astype(np.float64) - want) / (ATOL + RTOL * np.abs(want))))


def build(name, model, in_names, out_names, make_inputs, opset):
    gen = torch.Generator().manual_seed(1234)
    model.eval()
    out_dir = os.path.join(HERE, name)
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
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(0)
    bert = BertTiny(BertCfg)
    randomize_norm(bert, gen)
    build("bert_tiny", bert, ["input_ids", "token_type_ids", "attention_mask"],
          ["last_hidden_state", "pooler_output"], bert_inputs, 17)

    torch.manual_seed(1)
    gpt2 = Gpt2Tiny(Gpt2Cfg)
    randomize_norm(gpt2, gen)
    build("gpt2_tiny", gpt2, ["input_ids"], ["logits"], ids_inputs, 13)

    torch.manual_seed(2)
    llama = LlamaTiny(LlamaCfg)
    randomize_norm(llama, gen)
    build("llama_tiny", llama, ["input_ids"], ["logits"], ids_inputs, 17)


if __name__ == "__main__":
    main()
