#!/usr/bin/python3
"""tests/models/make_vit_model.py - a tiny ViT-style encoder (vit_tiny) exported from PyTorch,
with reference outputs, for `kernc check tests/models/vit_tiny/` (tests/test_models.c runs it).

Run with Debian's Python (python3-torch 1.13 CPU, python3-onnx, numpy):

    /usr/bin/python3 tests/models/make_vit_model.py [--out DIR]

The model is hf_modules.VitModel, written as Hugging Face's Dinov2Model: a Conv2d patch
embedding (kernel = stride = patch), a class token, position embeddings made for a 3x3 grid and
resized bicubically to the image's 4x4 patch grid in the graph (F.interpolate, exported as
Resize mode=cubic), pre-LN blocks with separate query / key / value projections of the same
input, layer scale (a per-channel multiply) before each residual add, erf GELU, a final
LayerNorm; outputs last_hidden_state [B, 17, 64] and pooler_output [B, 64] (the class token).
Input pixel_values [B, 3, 32, 32], dynamic batch; two data sets, B = 1 and B = 2. Opset 17.
Weights: PyTorch's default init, norms randomized as in make_models.py, layer scale 0.5 + 0.1 N.
Reference outputs: the float64 forward pass rounded to float32; the script asserts PyTorch's own
float32 result is within a quarter of kernc check's tolerance, as make_models.py does.
"""
import argparse
import copy
import os
import shutil

import numpy as np
import onnx
import torch

from hf_modules import VitModel, randomize_norms
from make_models import MARGIN, in_tolerance, write_pb

HERE = os.path.dirname(os.path.abspath(__file__))


class VitCfg:
    image, patch, channels, hidden, heads, layers, inter, eps = 32, 8, 3, 64, 4, 2, 128, 1e-6
    native_grid, layer_scale_init = 3, 0.5


def main():
    ap = argparse.ArgumentParser(description="Export tests/models/vit_tiny with reference outputs.")
    ap.add_argument("--out", default=HERE, metavar="DIR")
    out = ap.parse_args().out
    torch.manual_seed(11)  # seeds picked so that the float32 margin holds (0.24)
    gen = torch.Generator().manual_seed(11)
    model = VitModel(VitCfg)
    randomize_norms(model, gen)
    with torch.no_grad():
        for layer in model.layers:
            for ls in (layer.ls1, layer.ls2):
                ls.lambda1.add_(0.1 * torch.randn(ls.lambda1.shape, generator=gen))
    model.eval()
    name = "vit_tiny"
    out_dir = os.path.join(out, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    c = VitCfg
    sets = [[torch.randn(b, c.channels, c.image, c.image, generator=gen)] for b in (1, 2)]
    path = os.path.join(out_dir, "model.onnx")
    in_names, out_names = ["pixel_values"], ["last_hidden_state", "pooler_output"]
    axes = {"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, tuple(sets[1]), path, input_names=in_names,
                          output_names=out_names, dynamic_axes=axes, opset_version=17)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    m64 = copy.deepcopy(model).double()
    for i, inputs in enumerate(sets):
        d = os.path.join(out_dir, "test_data_set_%d" % i)
        os.makedirs(d)
        with torch.no_grad():
            outs, outs64 = model(*inputs), m64(*[x.double() for x in inputs])
        write_pb(inputs[0].numpy(), os.path.join(d, "input_0.pb"))
        for j, (y32, y64) in enumerate(zip(outs, outs64)):
            y = y64.numpy().astype(np.float32)
            write_pb(y, os.path.join(d, "output_%d.pb" % j))
            margin = in_tolerance(y32.numpy(), y)
            print("  %s set %d %s %s: |y| max %.3g; torch f32 at %.3f of the tolerance"
                  % (name, i, out_names[j], list(y.shape), np.abs(y).max(), margin))
            assert margin < MARGIN, "PyTorch's own float32 result is not well within tolerance"
    ops = sorted({n.op_type for n in m.graph.node})
    print("%s: %d nodes, ops %s" % (name, len(m.graph.node), " ".join(ops)))
    resize = [n for n in m.graph.node if n.op_type == "Resize"]
    for n in resize:
        print("  Resize", {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})


if __name__ == "__main__":
    main()
