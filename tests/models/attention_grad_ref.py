#!/usr/bin/python3
"""tests/models/attention_grad_ref.py - PyTorch autograd references for kernc's attention backward
(ir/ops.def attention_grad; tests/test_attention_grad.c reads them).

For each case: q, k, v, the mask and dy drawn from numpy's default_rng(case seed) as float32; the
attention of scaled_dot_product_attention's math computed in float64 from those values (scores
= scale q k^T, softcap c tanh(s / c), then the mask: causal bottom-right aligned, key j visible
to query i iff j <= i + T - S; padding [B, T] nonzero keeps; additive added), GQA / MQA query
head h reading kv head h // (heads / kv_heads); a row that sees no key gives y = 0 and lse = -inf
(and no gradient). y.backward(dy) gives dq, dk, dv. Written to grad_ref/attention/CASE/ as .npy
(float32): the inputs q k v [mask] dy and the results y lse dq dk dv, with case.txt holding the
attributes test_attention_grad.c builds the graph from:

    rank B S T heads kv_heads D Dv mask scale softcap     (mask: none causal padding additive;
                                                           scale 0: 1/sqrt(D); softcap 0: none)

Run with Debian's Python (torch 1.13): /usr/bin/python3 tests/models/attention_grad_ref.py
"""
import os

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (seed, rank, B, S, T, heads, kv_heads, D, Dv, mask, scale, softcap)
CASES = {
    # GQA, sequences past the CPU forward's 16-slot blocks and the CUDA kernels' tiles, not
    # multiples of them
    "causal_gqa": (1, 3, 2, 37, 37, 4, 2, 16, 16, "causal", 0.0, 0.0),
    # MQA, S > T: the first rows see no key; an explicit scale and a softcap
    "causal_softcap": (2, 3, 1, 21, 18, 2, 1, 8, 8, "causal", 0.5, 2.0),
    # the [B, heads, S, D] layout, a value head size unlike the key's, padded keys; head sizes
    # that are no multiple of the CPU kernel's 16 f32 lanes
    "padding": (3, 4, 2, 20, 45, 2, 2, 20, 12, "padding", 0.0, 0.0),
    # additive mask broadcast over heads, -inf entries and one row fully masked; MQA; D = two
    # vectors of 16 lanes
    "additive": (4, 3, 1, 33, 50, 4, 1, 32, 8, "additive", 0.0, 0.0),
}


def heads_of(x, rank, n, d):
    """[B, n, S, d] view of a rank-3 [B, S, n*d] or rank-4 [B, n, S, d] tensor."""
    if rank == 4:
        return x
    b, s, _ = x.shape
    return x.reshape(b, s, n, d).transpose(1, 2)


def attention(q, k, v, mask, c):
    _, rank, B, S, T, H, KV, D, Dv, kind, scale, softcap = c
    qh, kh, vh = heads_of(q, rank, H, D), heads_of(k, rank, KV, D), heads_of(v, rank, KV, Dv)
    g = H // KV
    kh, vh = kh.repeat_interleave(g, 1), vh.repeat_interleave(g, 1)
    s = (qh @ kh.transpose(-1, -2)) * (scale if scale else D ** -0.5)
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    vis = torch.ones(B, H, S, T, dtype=torch.bool)
    if kind == "causal":
        i = torch.arange(S)[:, None]
        j = torch.arange(T)[None, :]
        vis = vis & (j <= i + T - S)
    elif kind == "padding":
        vis = vis & (mask != 0)[:, None, None, :]
    elif kind == "additive":
        s = s + mask
        vis = vis & (mask > -np.inf)
    s = s.masked_fill(~vis, -np.inf)
    lse = torch.logsumexp(s, -1)
    seen = vis.any(-1, keepdim=True)
    p = torch.softmax(torch.where(seen, s, torch.zeros_like(s)), -1) * seen
    y = p @ vh
    y = y if rank == 4 else y.transpose(1, 2).reshape(B, S, H * Dv)
    return y, lse


def case(name, c):
    seed, rank, B, S, T, H, KV, D, Dv, kind, scale, softcap = c
    rng = np.random.default_rng(seed)

    def draw(shape):
        return rng.standard_normal(shape).astype(np.float32)

    if rank == 3:
        q, k, v = draw((B, S, H * D)), draw((B, T, KV * D)), draw((B, T, KV * Dv))
        dy = draw((B, S, H * Dv))
    else:
        q, k, v = draw((B, H, S, D)), draw((B, KV, T, D)), draw((B, KV, T, Dv))
        dy = draw((B, H, S, Dv))
    mask = None
    if kind == "padding":
        mask = (rng.random((B, T)) > 0.25).astype(np.bool_)
        mask[1, T - 7:] = False
    elif kind == "additive":
        mask = (0.5 * rng.standard_normal((1, 1, S, T))).astype(np.float32)
        mask[rng.random(mask.shape) < 0.2] = -np.inf
        mask[0, 0, 5, :] = -np.inf
    t = {n: torch.tensor(a.astype(np.float64), requires_grad=True)
         for n, a in (("q", q), ("k", k), ("v", v))}
    tm = None if mask is None else torch.tensor(mask if kind == "padding"
                                                else mask.astype(np.float64))
    y, lse = attention(t["q"], t["k"], t["v"], tm, c)
    y.backward(torch.tensor(dy.astype(np.float64)))
    out = os.path.join(HERE, "grad_ref", "attention", name)
    os.makedirs(out, exist_ok=True)
    arrays = {"q": q, "k": k, "v": v, "dy": dy, "y": y.detach().numpy(),
              "lse": lse.detach().numpy(), "dq": t["q"].grad.numpy(), "dk": t["k"].grad.numpy(),
              "dv": t["v"].grad.numpy()}
    if mask is not None:
        arrays["mask"] = mask
    for n, a in arrays.items():
        np.save(os.path.join(out, n + ".npy"), a if a.dtype == np.bool_ else a.astype(np.float32))
    with open(os.path.join(out, "case.txt"), "w") as f:
        f.write("%d %d %d %d %d %d %d %d %s %.9g %.9g\n" %
                (rank, B, S, T, H, KV, D, Dv, kind, scale, softcap))
    assert np.isfinite(arrays["dq"]).all() and np.isfinite(arrays["dk"]).all()
    print("%-15s y max %.3g, dq max %.3g, dk max %.3g, dv max %.3g, rows without keys %d" %
          (name, np.abs(arrays["y"]).max(), np.abs(arrays["dq"]).max(),
           np.abs(arrays["dk"]).max(), np.abs(arrays["dv"]).max(),
           int(np.isneginf(arrays["lse"]).sum())))


def main():
    for name, c in CASES.items():
        case(name, c)


if __name__ == "__main__":
    main()
