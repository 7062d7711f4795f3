#!/usr/bin/python3
"""tests/models/grad_ref.py - PyTorch autograd references for tests/test_grad.c.

Three small models, built the same way in test_grad.c with kernc's builder: an MLP (gemm-free
matmul + bias, gelu, cross-entropy) and a GPT-2-style transformer block (layer norm, fused
QKV projection, causal softmax attention written out in primitives, residuals, tanh-gelu MLP,
a vocabulary projection and cross-entropy), and a token embedding (gather, repeated ids). Weights, inputs and labels come from closed
formulas (param(p, n, scale, offset) below; test_grad.c has the same), so only the reference
gradients are files: grad_ref/<model>/<param>.bin, float64 little-endian, row-major, and
grad_ref/<model>/loss.bin (the model input x is differentiated too: x.bin). Computed in float64; kernc's f32 run is compared with a relative
bound.

Run with Debian's Python (torch 1.13): /usr/bin/python3 tests/models/grad_ref.py
"""
import math
import os

import torch

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))


def param(p, shape, scale=0.3, offset=0.0):
    """w[i] = offset + scale * sin(1.7 p + 0.37 i + 0.1), i the row-major index."""
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.float64)
    w = offset + scale * torch.sin(1.7 * p + 0.37 * i + 0.1)
    return w.reshape(shape).clone().requires_grad_(True)


def inputs(shape):
    n = math.prod(shape)
    x = 1.5 * torch.sin(0.11 * torch.arange(n, dtype=torch.float64) + 0.5)
    return x.reshape(shape).clone().requires_grad_(True)


def labels(n, classes):
    return torch.tensor([(3 * i + 1) % classes for i in range(n)])


def xent(logits, lab):
    c = logits.shape[-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, c), lab)


def write(model, loss, params):
    d = os.path.join(HERE, "grad_ref", model)
    os.makedirs(d, exist_ok=True)
    loss.backward()
    with open(os.path.join(d, "loss.bin"), "wb") as f:
        f.write(loss.detach().numpy().astype("<f8").tobytes())
    for name, t in params.items():
        with open(os.path.join(d, name + ".bin"), "wb") as f:
            f.write(t.grad.detach().numpy().astype("<f8").tobytes())


def mlp():
    x = inputs((4, 8))
    p = {
        "x": x,
        "fc1.weight": param(0, (8, 16)),
        "fc1.bias": param(1, (16,), 0.1),
        "fc2.weight": param(2, (16, 5)),
        "fc2.bias": param(3, (5,), 0.1),
    }
    h = torch.nn.functional.gelu(x @ p["fc1.weight"] + p["fc1.bias"])
    logits = h @ p["fc2.weight"] + p["fc2.bias"]
    write("mlp", xent(logits, labels(4, 5)), p)


def block():
    B, S, D, H, F, V = 2, 4, 8, 2, 32, 10
    hd = D // H
    x = inputs((B, S, D))
    p = {
        "x": x,
        "ln1.weight": param(0, (D,), 0.1, 1.0),
        "ln1.bias": param(1, (D,), 0.1),
        "attn.qkv.weight": param(2, (D, 3 * D)),
        "attn.qkv.bias": param(3, (3 * D,), 0.1),
        "attn.proj.weight": param(4, (D, D)),
        "attn.proj.bias": param(5, (D,), 0.1),
        "ln2.weight": param(6, (D,), 0.1, 1.0),
        "ln2.bias": param(7, (D,), 0.1),
        "mlp.fc.weight": param(8, (D, F)),
        "mlp.fc.bias": param(9, (F,), 0.1),
        "mlp.proj.weight": param(10, (F, D)),
        "mlp.proj.bias": param(11, (D,), 0.1),
        "head.weight": param(12, (D, V)),
    }
    ln = torch.nn.functional.layer_norm
    h = ln(x, (D,), p["ln1.weight"], p["ln1.bias"], 1e-5)
    qkv = h @ p["attn.qkv.weight"] + p["attn.qkv.bias"]
    q, k, v = qkv.split(D, dim=-1)

    def heads(t):
        return t.reshape(B, S, H, hd).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    mask = torch.triu(torch.full((S, S), -1e9), 1)
    att = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(hd)) + mask, dim=-1)
    o = (att @ v).transpose(1, 2).reshape(B, S, D)
    x2 = x + o @ p["attn.proj.weight"] + p["attn.proj.bias"]
    h2 = ln(x2, (D,), p["ln2.weight"], p["ln2.bias"], 1e-5)
    m = torch.nn.functional.gelu(h2 @ p["mlp.fc.weight"] + p["mlp.fc.bias"], approximate="tanh")
    y = x2 + m @ p["mlp.proj.weight"] + p["mlp.proj.bias"]
    logits = y @ p["head.weight"]
    write("block", xent(logits, labels(B * S, V)), p)


def embed():
    """token embedding (gather; its gradient is kernc's scatter_add) with repeated ids."""
    B, S, V, D = 2, 5, 7, 6
    ids = torch.tensor([[(3 * i + 1) % V for i in range(b * S, (b + 1) * S)] for b in range(B)])
    ids[1, 4] = ids[0, 0]
    p = {"wte": param(0, (V, D)), "head.weight": param(1, (D, V))}
    h = torch.tanh(p["wte"][ids])
    write("embed", xent(h @ p["head.weight"], labels(B * S, V)), p)


if __name__ == "__main__":
    mlp()
    block()
    embed()
