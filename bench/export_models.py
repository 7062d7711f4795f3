#!/usr/bin/python3
"""bench/export_models.py - export the two transformer models that bench/ort_bench.py runs, with
random weights, from PyTorch, as Hugging Face's modules write them. Run by bench/run.sh with
Debian's Python (python3-torch 1.13 CPU); the models are written at bench time and not committed:

    /usr/bin/python3 bench/export_models.py OUT_DIR        # writes OUT_DIR/{minilm,gpt2}.onnx

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

Both have dynamic batch and seq axes. Weights: PyTorch's default init (Linear, Embedding) with
seeded RNG; LayerNorm gamma/beta randomized around (1, 0) so a dropped gamma or beta shows in the
comparison. Prints the op set, node count and size of each model.
"""
import math
import os
import sys
import time

import onnx
import torch
from torch import nn


# ---- MiniLM (BertModel) --------------------------------------------------------------------------


class MiniLMCfg:
    vocab, hidden, heads, layers, inter, max_pos, type_vocab, eps = 30522, 384, 12, 6, 1536, 512, 2, 1e-12


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden)
        self.position_embeddings = nn.Embedding(c.max_pos, c.hidden)
        self.token_type_embeddings = nn.Embedding(c.type_vocab, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.register_buffer("position_ids", torch.arange(c.max_pos).expand((1, -1)))

    def forward(self, input_ids, token_type_ids):
        position_ids = self.position_ids[:, : input_ids.size(1)]
        e = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(position_ids))
        return self.LayerNorm(e)


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_attention_heads = c.heads
        self.attention_head_size = c.hidden // c.heads
        self.all_head_size = c.hidden
        self.query = nn.Linear(c.hidden, c.hidden)
        self.key = nn.Linear(c.hidden, c.hidden)
        self.value = nn.Linear(c.hidden, c.hidden)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, h, attention_mask):
        q = self.transpose_for_scores(self.query(h))
        k = self.transpose_for_scores(self.key(h))
        v = self.transpose_for_scores(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / math.sqrt(self.attention_head_size)
        scores = scores + attention_mask
        probs = nn.functional.softmax(scores, dim=-1)
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

    def forward(self, h, mask):
        a = self.attn_ln(self.attn_out(self.attention(h, mask)) + h)
        return self.out_ln(self.output(self.act(self.intermediate(a))) + a)


class MiniLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.layers = nn.ModuleList([BertLayer(c) for _ in range(c.layers)])

    def forward(self, input_ids, attention_mask, token_type_ids):
        # BertModel.get_extended_attention_mask (transformers >= 4.21): finfo.min, not -10000
        ext = attention_mask[:, None, None, :].to(dtype=torch.float32)
        ext = (1.0 - ext) * torch.finfo(torch.float32).min
        h = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            h = layer(h, ext)
        return h


# ---- GPT-2 small (GPT2Model + tied LM head) ------------------------------------------------------


class Gpt2Cfg:
    vocab, hidden, heads, layers, n_ctx, eps = 50257, 768, 12, 12, 1024, 1e-5


class Conv1D(nn.Module):
    """transformers' Conv1D: a linear layer with the weight stored [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))
        nn.init.normal_(self.weight, std=0.02)  # GPT-2's initializer_range
        nn.init.normal_(self.bias, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class Gpt2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        n = c.n_ctx
        self.register_buffer("bias", torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n))
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
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
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


class Gpt2(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c.vocab, c.hidden)
        self.wpe = nn.Embedding(c.n_ctx, c.hidden)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)
        self.h = nn.ModuleList([Gpt2Block(c) for _ in range(c.layers)])
        self.ln_f = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, input_ids):
        position_ids = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        h = self.wte(input_ids) + self.wpe(position_ids)
        for block in self.h:
            h = block(h)
        return nn.functional.linear(self.ln_f(h), self.wte.weight)  # tied LM head


# ---- export ----------------------------------------------------------------------------------------


def randomize_norms(model, gen):
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def export(model, args, path, in_names, out_names, opset):
    t0 = time.time()
    model.eval()
    axes = {n: {0: "batch", 1: "seq"} for n in in_names + out_names}
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
    gpt2 = Gpt2(Gpt2Cfg)
    randomize_norms(gpt2, gen)
    ids = torch.randint(0, Gpt2Cfg.vocab, (1, 16), generator=gen)
    export(gpt2, (ids,), os.path.join(out, "gpt2.onnx"), ["input_ids"], ["logits"], 13)


if __name__ == "__main__":
    main()
