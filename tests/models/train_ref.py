#!/usr/bin/python3
"""tests/models/train_ref.py - PyTorch references for kernc's training runtime (tests/test_train.c).

The model is gpt2_tiny (tests/models/gpt2_tiny/model.onnx), as grad_ref_models.py builds its
PyTorch twin (hf_modules.py, make_models.py's seeds), in float64. kernc trains every float
initializer of the ONNX file, and the exporter wrote GPT-2's tied LM head as a second, transposed
initializer (onnx::MatMul_645 = wte^T), which kernc updates on its own. So the twin here unties
it: the LM head is its own parameter, initialized to that initializer, and logits = h @ head.
Every other initializer is the parameter of the same name (checked value by value).

Data: ids [4, 8] int64 (seeded), labels = ids shifted left by one with the last position -100
(as transformers' causal LM loss), loss = F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1))
(mean over the labels not -100).

Runs, each from the initial weights, full batch per step, torch.optim in float64:
  adamw: AdamW(lr 1e-2, betas 0.9/0.999, eps 1e-8, weight_decay 0.01), 10 steps;
  sgd:   SGD(lr 0.1, momentum 0.9, weight_decay 0.01), 6 steps;
  clip:  AdamW as above with clip_grad_norm_(params, 0.5) before each step, 6 steps.
Written to train_ref/: ids.npy, labels.npy, <run>_losses.npy (float64, the loss of each step
before its update), clip_norms.npy (the norm clip_grad_norm_ returned per step), and
<run>/<INITIALIZER>.npy (final values, float32, ':' in names written as '_'), and
<run>_f32dev.txt: per initializer, the largest difference between the final values of the same
run in float32 and these (PyTorch's own f32 rounding after the run: Adam amplifies the rounding
of gradients near zero, so test_train.c scales its tolerance per tensor by it).

Run with Debian's Python (torch 1.13, onnx 1.12): /usr/bin/python3 tests/models/train_ref.py
"""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from grad_ref_models import built_models  # noqa: E402

HEAD = "onnx::MatMul_645"
OUT = os.path.join(HERE, "train_ref")


class Untied(torch.nn.Module):
    def __init__(self, gpt2, head):
        super().__init__()
        self.m = gpt2
        self.head = torch.nn.Parameter(head)

    def forward(self, ids):
        m = self.m
        pos = torch.arange(0, ids.size(-1), dtype=torch.long).unsqueeze(0)
        h = m.wte(ids) + m.wpe(pos)
        for block in m.h:
            h = block(h)
        return m.ln_f(h) @ self.head


def fresh(inits, dtype=torch.float64):
    gpt2 = built_models()["gpt2_tiny"].to(dtype).eval()
    model = Untied(gpt2, torch.tensor(inits[HEAD], dtype=dtype))
    params = {}
    for name, p in gpt2.named_parameters():
        assert np.array_equal(p.detach().numpy().astype(np.float32), inits[name]), name
        params[name] = p
    params[HEAD] = model.head
    assert sorted(params) == sorted(inits), "initializers and parameters differ"
    return model, params


def train(inits, ids, labels, kind, steps, dtype):
    model, params = fresh(inits, dtype)
    plist = [params[n] for n in sorted(params)]
    if kind == "sgd":
        opt = torch.optim.SGD(plist, lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        opt = torch.optim.AdamW(plist, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
        loss.backward()
        if kind == "clip":
            norms.append(torch.nn.utils.clip_grad_norm_(plist, 0.5).item())
        opt.step()
        losses.append(loss.item())
    return params, losses, norms


def run(inits, ids, labels, kind, steps):
    params, losses, norms = train(inits, ids, labels, kind, steps, torch.float64)
    p32, _, _ = train(inits, ids, labels, kind, steps, torch.float32)
    with open(os.path.join(OUT, kind + "_f32dev.txt"), "w") as f:
        for n in sorted(params):
            dev = np.max(np.abs(p32[n].detach().numpy().astype(np.float64) -
                                params[n].detach().numpy()))
            f.write("%s %.6g\n" % (n, dev))
    np.save(os.path.join(OUT, kind + "_losses.npy"), np.array(losses, dtype=np.float64))
    if norms:
        np.save(os.path.join(OUT, kind + "_norms.npy"), np.array(norms, dtype=np.float64))
    d = os.path.join(OUT, kind)
    os.makedirs(d, exist_ok=True)
    for n, p in params.items():
        np.save(os.path.join(d, n.replace(":", "_") + ".npy"),
                p.detach().numpy().astype(np.float32))
    print("%s: losses %s%s" % (kind, " ".join("%.5f" % v for v in losses),
                               "; norms " + " ".join("%.3f" % v for v in norms) if norms else ""))


def main():
    m = onnx.load(os.path.join(HERE, "gpt2_tiny", "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer
             if i.data_type == onnx.TensorProto.FLOAT}
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(29)
    ids = torch.randint(0, 100, (4, 8), generator=gen)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    np.save(os.path.join(OUT, "ids.npy"), ids.numpy())
    np.save(os.path.join(OUT, "labels.npy"), labels.numpy())
    run(inits, ids, labels, "adamw", 10)
    run(inits, ids, labels, "sgd", 6)
    run(inits, ids, labels, "clip", 6)


if __name__ == "__main__":
    main()
