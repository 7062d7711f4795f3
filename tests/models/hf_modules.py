"""tests/models/hf_modules.py - transformer blocks written the way Hugging Face's transformers
writes them (BertModel, GPT2Model, LlamaModel), in plain PyTorch, so that torch.onnx.export
produces the op spellings real exported models have. One source for the two scripts that export
them: tests/models/make_models.py (tiny models with reference outputs for tests/test_models.c)
and bench/export_models.py (MiniLM- and GPT-2-small-sized models for bench/ort_bench.py).

Sizes and initialization come from a config class each script defines (the attributes each
model reads are listed on it); nothing here draws random numbers except PyTorch's own module
initializers, in construction order, so a script that seeds torch before building a model gets
the same weights every time. Dropout modules are kept where transformers has them: they are
identity in eval(), export to nothing and consume no random numbers.

Run with Debian's Python (python3-torch 1.13 CPU).
"""
import math

import torch
from torch import nn


def randomize_norms(model, gen):
    """Give every LayerNorm/RMSNorm non-trivial weights (and biases), so that a dropped or
    swapped gamma/beta shows: weight 1 + 0.1 N(0,1), bias 0.1 N(0,1), drawn from gen."""
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(m, (nn.LayerNorm, RMSNorm)):
            with torch.no_grad():
                w.copy_(1 + 0.1 * torch.randn(w.shape, generator=gen))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


# ---- BERT (BertModel) ---------------------------------------------------------------------------
# config: vocab, hidden, heads, layers, inter, max_pos, type_vocab, eps (LayerNorm), pooler (bool),
# mask_min (what a padded position adds to the scores: -10000.0 before transformers 4.21,
# finfo(float32).min since)


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


class BertModel(nn.Module):
    """Embeddings, post-LN layers and, when c.pooler, the pooler (first token -> dense -> tanh).
    Returns last_hidden_state, or (last_hidden_state, pooler_output)."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.layers = nn.ModuleList([BertLayer(c) for _ in range(c.layers)])
        self.pooler = nn.Linear(c.hidden, c.hidden) if c.pooler else None
        self.mask_min = c.mask_min

    def forward(self, input_ids, token_type_ids, attention_mask):
        # BertModel.get_extended_attention_mask: (1 - m[:, None, None, :]) * min, in the weights'
        # dtype
        ext = attention_mask[:, None, None, :]
        ext = ext.to(dtype=self.embeddings.word_embeddings.weight.dtype)
        ext = (1.0 - ext) * self.mask_min
        h = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            h = layer(h, ext)
        if self.pooler is None:
            return h
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return h, pooled


# ---- GPT-2 (GPT2Model + tied LM head) -----------------------------------------------------------
# config: vocab, hidden, heads, layers, n_ctx, eps, wte_std, wpe_std (embedding init),
# conv_std(fan_in) and conv_bias_std (Conv1D init)


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: a linear layer with the weight stored [in, out]."""

    def __init__(self, nf, nx, c):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))
        nn.init.normal_(self.weight, std=c.conv_std(nx))
        nn.init.normal_(self.bias, std=c.conv_bias_std)

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
        self.c_attn = Conv1D(3 * c.hidden, c.hidden, c)
        self.c_proj = Conv1D(c.hidden, c.hidden, c)

    def _split_heads(self, t):
        t = t.view(t.size()[:-1] + (self.num_heads, self.head_dim))
        return t.permute(0, 2, 1, 3)

    def _merge_heads(self, t):
        t = t.permute(0, 2, 1, 3).contiguous()
        return t.view(t.size()[:-2] + (self.num_heads * self.head_dim,))

    def forward(self, h, layer_past=None):
        q, k, v = self.c_attn(h).split(self.split_size, dim=2)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        if layer_past is not None:  # transformers' GPT2Attention with use_cache
            k = torch.cat((layer_past[0], k), dim=-2)
            v = torch.cat((layer_past[1], v), dim=-2)
        w = torch.matmul(q, k.transpose(-1, -2))
        w = w / torch.full([], v.size(-1) ** 0.5, dtype=w.dtype, device=w.device)
        query_length, key_length = q.size(-2), k.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length:key_length, :key_length]
        mask_value = torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype, device=w.device)
        w = torch.where(causal_mask, w, mask_value)
        w = nn.functional.softmax(w, dim=-1)
        out = self.c_proj(self._merge_heads(torch.matmul(w, v)))
        return out if layer_past is None else (out, (k, v))


class Gpt2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.attn = Gpt2Attention(c)
        self.ln_2 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.c_fc = Conv1D(4 * c.hidden, c.hidden, c)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = Conv1D(c.hidden, 4 * c.hidden, c)

    def forward(self, h, layer_past=None):
        if layer_past is None:
            h = h + self.attn(self.ln_1(h))
            return h + self.c_proj(self.act(self.c_fc(self.ln_2(h))))
        a, present = self.attn(self.ln_1(h), layer_past)
        h = h + a
        return h + self.c_proj(self.act(self.c_fc(self.ln_2(h)))), present


class Gpt2Model(nn.Module):
    """Returns the logits of the LM head tied to the token embeddings (h @ wte^T). With past (a
    list of (key, value) [B, heads, P, head_dim] per layer, P may be 0), as transformers'
    GPT2LMHeadModel with use_cache: positions start at P, each layer's keys and values are the
    past's followed by the new tokens', and it returns (logits, presents), presents [B, heads,
    P + S, head_dim] per layer. Without past the graph is the one exported before past existed
    (the branches keep that path's ops as they were)."""

    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c.vocab, c.hidden)
        self.wpe = nn.Embedding(c.n_ctx, c.hidden)
        nn.init.normal_(self.wte.weight, std=c.wte_std)
        nn.init.normal_(self.wpe.weight, std=c.wpe_std)
        self.h = nn.ModuleList([Gpt2Block(c) for _ in range(c.layers)])
        self.ln_f = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, input_ids, past=None):
        if past is not None:
            return self._forward_past(input_ids, past)
        position_ids = torch.arange(0, input_ids.size(-1), dtype=torch.long).unsqueeze(0)
        h = self.wte(input_ids) + self.wpe(position_ids)
        for block in self.h:
            h = block(h)
        h = self.ln_f(h)
        return nn.functional.linear(h, self.wte.weight)  # tied lm head

    def _forward_past(self, input_ids, past):
        past_length = past[0][0].size(-2)
        position_ids = torch.arange(past_length, input_ids.size(-1) + past_length,
                                    dtype=torch.long).unsqueeze(0)
        h = self.wte(input_ids) + self.wpe(position_ids)
        presents = []
        for block, layer_past in zip(self.h, past):
            h, present = block(h, layer_past)
            presents.append(present)
        h = self.ln_f(h)
        return nn.functional.linear(h, self.wte.weight), presents


# ---- Llama (LlamaModel + LM head) ---------------------------------------------------------------
# config: vocab, hidden, heads, kv_heads, layers, inter, eps (RMSNorm), theta (rotary base)


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

    def forward(self, h, mask, position_ids, layer_past=None):
        bsz, q_len, _ = h.size()
        q = self.q_proj(h).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(bsz, q_len, self.num_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(bsz, q_len, self.num_kv, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(v, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if layer_past is not None:  # transformers' cache: keys after rotary, before repeat_kv
            k = torch.cat((layer_past[0], k), dim=-2)
            v = torch.cat((layer_past[1], v), dim=-2)
            present = (k, v)
        k = repeat_kv(k, self.num_heads // self.num_kv)
        v = repeat_kv(v, self.num_heads // self.num_kv)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        w = w + mask
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).contiguous()
        out = self.o_proj(o.reshape(bsz, q_len, self.num_heads * self.head_dim))
        return out if layer_past is None else (out, present)


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

    def forward(self, h, mask, position_ids, layer_past=None):
        if layer_past is None:
            h = h + self.self_attn(self.input_layernorm(h), mask, position_ids)
            return h + self.mlp(self.post_attention_layernorm(h))
        a, present = self.self_attn(self.input_layernorm(h), mask, position_ids, layer_past)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), present


def make_causal_mask(bsz, tgt_len, dtype):
    """transformers 4.3x's _make_causal_mask (no past): 0 on and below the diagonal, min above."""
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, dtype=dtype)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len)


def prepare_4d_causal_mask_past(attention_mask, bsz, tgt_len, past_len, dtype):
    """transformers 4.36's _prepare_4d_causal_attention_mask (AttentionMaskConverter.to_4d) with
    a past: _make_causal_mask with past_key_values_length (zeros [S, P] concatenated before the
    [S, S] triangle), then the padding of attention_mask [B, P + S] (_expand_mask: 1 - m, where
    nonzero -> min) filled into it."""
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min, dtype=dtype)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    if past_len > 0:
        mask = torch.cat([torch.zeros(tgt_len, past_len, dtype=dtype), mask], dim=-1)
    causal = mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_len)
    src_len = attention_mask.size(1)
    expanded = attention_mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted = 1.0 - expanded
    inverted = inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min)
    return causal.masked_fill(inverted.bool(), torch.finfo(dtype).min)


class LlamaModel(nn.Module):
    """Returns the logits of an untied LM head. With past (a list of (key, value) [B, kv_heads,
    P, head_dim] per layer, after rotary, P may be 0), attention_mask [B, P + S] and position_ids
    [B, S] (the inputs optimum exports for the decoder "with past"), as transformers'
    LlamaForCausalLM with use_cache: each layer's keys and values are the past's followed by the
    new tokens', the mask is prepare_4d_causal_mask_past's, and it returns (logits, presents),
    presents [B, kv_heads, P + S, head_dim] per layer. Without past the graph is the one
    exported before past existed."""

    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList([LlamaLayer(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.hidden, c.eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past=None):
        if past is not None:
            return self._forward_past(input_ids, attention_mask, position_ids, past)
        bsz, seq = input_ids.shape
        h = self.embed_tokens(input_ids)
        mask = make_causal_mask(bsz, seq, h.dtype)
        position_ids = torch.arange(seq).unsqueeze(0)
        for layer in self.layers:
            h = layer(h, mask, position_ids)
        return self.lm_head(self.norm(h))

    def _forward_past(self, input_ids, attention_mask, position_ids, past):
        bsz, seq = input_ids.shape
        h = self.embed_tokens(input_ids)
        mask = prepare_4d_causal_mask_past(attention_mask, bsz, seq, past[0][0].size(-2), h.dtype)
        presents = []
        for layer, layer_past in zip(self.layers, past):
            h, present = layer(h, mask, position_ids, layer_past)
            presents.append(present)
        return self.lm_head(self.norm(h)), presents


# ---- ViT (Dinov2Model) ------------------------------------------------------------------------
# cfg: image, patch, channels, hidden, heads, layers, inter, eps, native_grid (the position
# embeddings' grid, interpolated to the image's), layer_scale_init


class VitEmbeddings(nn.Module):
    """Conv patch embedding, a class token, and position embeddings for a native_grid^2 grid
    resized bicubically to the image's patch grid, as Dinov2Embeddings.interpolate_pos_encoding
    does (F.interpolate, align_corners=False)."""

    def __init__(self, c):
        super().__init__()
        self.patch = nn.Conv2d(c.channels, c.hidden, kernel_size=c.patch, stride=c.patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, c.hidden))
        self.position_embeddings = nn.Parameter(0.02 * torch.randn(1, 1 + c.native_grid ** 2, c.hidden))
        self.c = c

    def forward(self, pixel_values):
        b, _, h, w = pixel_values.shape
        x = self.patch(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        gh, gw, n0 = h // self.c.patch, w // self.c.patch, self.c.native_grid
        cls_pos = self.position_embeddings[:, :1]
        grid = self.position_embeddings[:, 1:].reshape(1, n0, n0, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return x + torch.cat((cls_pos, grid), dim=1)


class LayerScale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.lambda1 = nn.Parameter(c.layer_scale_init * torch.ones(c.hidden))

    def forward(self, x):
        return x * self.lambda1


class VitAttention(nn.Module):
    """Separate query / key / value projections of one input, as Dinov2SelfAttention."""

    def __init__(self, c):
        super().__init__()
        self.heads, self.d = c.heads, c.hidden // c.heads
        self.query = nn.Linear(c.hidden, c.hidden)
        self.key = nn.Linear(c.hidden, c.hidden)
        self.value = nn.Linear(c.hidden, c.hidden)
        self.out = nn.Linear(c.hidden, c.hidden)

    def split(self, x):
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.d).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
        y = torch.matmul(nn.functional.softmax(w, dim=-1), v)
        b, _, s, _ = y.shape
        return self.out(y.permute(0, 2, 1, 3).reshape(b, s, -1))


class VitLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.attention = VitAttention(c)
        self.ls1 = LayerScale(c)
        self.norm2 = nn.LayerNorm(c.hidden, eps=c.eps)
        self.fc1, self.act, self.fc2 = nn.Linear(c.hidden, c.inter), nn.GELU(), nn.Linear(c.inter, c.hidden)
        self.ls2 = LayerScale(c)

    def forward(self, x):
        x = x + self.ls1(self.attention(self.norm1(x)))
        return x + self.ls2(self.fc2(self.act(self.fc1(self.norm2(x)))))


class VitModel(nn.Module):
    """Pre-LN encoder with layer scale; outputs last_hidden_state (after the final LayerNorm)
    and pooler_output (its class token), as Dinov2Model."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = VitEmbeddings(c)
        self.layers = nn.ModuleList([VitLayer(c) for _ in range(c.layers)])
        self.layernorm = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, pixel_values):
        x = self.embeddings(pixel_values)
        for layer in self.layers:
            x = layer(x)
        x = self.layernorm(x)
        return x, x[:, 0]
