#!/usr/bin/python3
"""tests/models/xent_ref.py - PyTorch references for the fused softmax cross-entropy
(softmax_xent, kc_cross_entropy; tests/test_xent.c).

Per case, logits (float32, seeded) and labels (int64, some equal to the case's ignore_index),
written to xent_ref/<case>_logits.npy and <case>_labels.npy; from the logits taken as float64:
<case>_loss.npy, F.cross_entropy(..., reduction='none') per position; <case>_mean.npy, the mean
over positions not ignored (reduction='mean'); <case>_grad.npy, d mean / d logits. Cases:
  - c37: logits [3, 5, 37] (C odd and past any vector width), ignore_index -100 on 3 positions;
  - c3: logits [4, 3], ignore_index 2 (a real class), on 1 position;
  - c1000: logits [2, 1000], large logits (|x| up to 60: the log-sum-exp must shift by the max).

Run with Debian's Python (torch 1.13): /usr/bin/python3 tests/models/xent_ref.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xent_ref")


def case(name, shape, ignore, ignored, scale, seed):
    g = torch.Generator().manual_seed(seed)
    c = shape[-1]
    logits = (torch.randn(*shape, generator=g) * scale).float()
    labels = torch.randint(0, c, shape[:-1], generator=g)
    flat = labels.reshape(-1)
    for p in ignored:
        flat[p] = ignore
    x = logits.double().requires_grad_(True)
    loss = F.cross_entropy(x.reshape(-1, c), labels.reshape(-1), ignore_index=ignore,
                           reduction="none").reshape(shape[:-1])
    mean = F.cross_entropy(x.reshape(-1, c), labels.reshape(-1), ignore_index=ignore)
    (grad,) = torch.autograd.grad(mean, x)
    np.save(os.path.join(OUT, name + "_logits.npy"), logits.numpy())
    np.save(os.path.join(OUT, name + "_labels.npy"), labels.numpy())
    np.save(os.path.join(OUT, name + "_loss.npy"), loss.detach().numpy())
    np.save(os.path.join(OUT, name + "_mean.npy"), mean.detach().numpy())
    np.save(os.path.join(OUT, name + "_grad.npy"), grad.numpy())


def main():
    os.makedirs(OUT, exist_ok=True)
    case("c37", (3, 5, 37), -100, [1, 7, 14], 2.0, 1)
    case("c3", (4, 3), 2, [1], 1.0, 2)
    case("c1000", (2, 1000), -100, [], 20.0, 3)


if __name__ == "__main__":
    main()
