#!/usr/bin/python3
"""tests/onnx/vision/gen.py - writes the node-test-like folders test_cpu_conv.c checks, each
one ONNX model computing many cases side by side: conv_pool/ (Conv, ConvTranspose, MaxPool,
AveragePool: grouped, depthwise, dilated, strided, asymmetric pads, 1-D and 3-D, 1x1, and the
ViT patch embedding kernel = stride = 16 on 224x224) and resize/ (Resize linear, nearest,
cubic), with input and expected output TensorProtos. Expected values come from PyTorch 1.13
(Debian's /usr/bin/python3), computed in float64; the convolutions' inputs are small integers,
so every conv sum is exact in float32 and the comparison is not at the mercy of summation order.
Run from this folder: /usr/bin/python3 gen.py"""
import os
import shutil

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(15)


def ints(*shape):
    return rng.integers(-3, 4, size=shape).astype(np.float32)


CASES = []  # (name, model, inputs, outputs) of every case, merged by merge() at the end


def write(name, op, inputs, out, node_inputs=None, inits=(), **attrs):
    """inputs: list of (name, array), float32 unless int64; inits: the same as initializers;
    out: expected array. Collected in CASES; merge() writes them as one model."""
    inputs = [(n, a if a.dtype == np.int64 else a.astype(np.float32)) for n, a in inputs]
    node = helper.make_node(op, node_inputs or [n for n, _ in inputs] + [n for n, _ in inits],
                            ["y"], **attrs)
    CASES.append((name, node, inputs, list(inits), out.astype(np.float32)))


def merge(folder, names):
    """One model computing the cases names side by side (one compile instead of one per case:
    the JIT's -O3 compile of each model's matmul dominates the test's time), values renamed
    NAME_x; inputs and outputs in case order."""
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "test_data_set_0"))
    nodes, ins, outs, inits, ind, outd = [], [], [], [], [], []
    for name, node, inputs, cinits, out in CASES:
        if name not in names:
            continue
        ren = lambda n: f"{name}_{n}" if n else n
        nd = helper.make_node(node.op_type, [ren(i) for i in node.input], [ren("y")])
        nd.attribute.extend(node.attribute)
        nodes.append(nd)
        for n, a in inputs:
            ins.append(helper.make_tensor_value_info(
                ren(n), onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[a.dtype], a.shape))
            ind.append(numpy_helper.from_array(a, ren(n)))
        for n, a in cinits:
            inits.append(numpy_helper.from_array(a, ren(n)))
        outs.append(helper.make_tensor_value_info(ren("y"), TensorProto.FLOAT, out.shape))
        outd.append(numpy_helper.from_array(out, ren("y")))
    g = helper.make_graph(nodes, folder, ins, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(folder, "model.onnx"))
    for kind, ts in (("input", ind), ("output", outd)):
        for i, t in enumerate(ts):
            with open(os.path.join(folder, "test_data_set_0", f"{kind}_{i}.pb"), "wb") as f:
                f.write(t.SerializeToString())


def T(a):
    return torch.from_numpy(a.astype(np.float64))


def conv(name, x, w, b=None, stride=1, pad=(0, 0, 0, 0), dil=1, group=1, **attrs):
    """2-D conv; pad = (top, left, bottom, right) as ONNX's pads."""
    n = x.ndim - 2
    tp = []
    for i in reversed(range(n)):  # F.pad takes the last dim first
        tp += [pad[i], pad[n + i]]
    y = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n](
        F.pad(T(x), tp), T(w), None if b is None else T(b), stride=stride, dilation=dil,
        groups=group).numpy()
    ins = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
    a = dict(strides=[stride] * n, dilations=[dil] * n, group=group, pads=list(pad))
    a.update(attrs)
    write(name, "Conv", ins, y, **a)


conv("conv2d_bias_pads", ints(2, 3, 7, 6), ints(4, 3, 3, 3), ints(4), pad=(1, 1, 1, 1))
conv("conv2d_stride_dil_asym", ints(1, 2, 9, 8), ints(3, 2, 3, 2), stride=2, dil=2,
     pad=(0, 1, 2, 0))
conv("conv2d_group2", ints(2, 4, 6, 6), ints(6, 2, 3, 3), ints(6), pad=(1, 0, 1, 0), group=2)
conv("conv2d_depthwise", ints(1, 5, 8, 7), ints(5, 1, 3, 3), ints(5), pad=(1, 1, 1, 1), group=5)
conv("conv1d_stride", ints(2, 3, 11), ints(2, 3, 4), stride=3, pad=(2, 1))
conv("conv3d_pads", ints(1, 2, 4, 5, 3), ints(3, 2, 2, 3, 2), ints(3), pad=(1, 0, 1, 0, 1, 1))
conv("conv2d_1x1", ints(2, 8, 5, 5), ints(16, 8, 1, 1), ints(16))
# ViT-B/16's patch embedding, with fewer channels: kernel = stride = 16 on 224x224
conv("conv2d_vit_patch", ints(1, 3, 224, 224), ints(8, 3, 16, 16), ints(8), stride=16)

# ConvTranspose: stride, pads, output_padding, group, dilation
x, w, b = ints(1, 4, 4, 5), ints(4, 3, 3, 3), ints(6)
y = F.conv_transpose2d(T(x), T(w), T(b), stride=2, padding=1, output_padding=1, groups=2,
                       dilation=1).numpy()
write("convtranspose2d_group_stride", "ConvTranspose", [("x", x), ("w", w), ("b", b)], y,
      strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1], group=2)
x, w = ints(2, 2, 6), ints(2, 3, 3)
y = F.conv_transpose1d(T(x), T(w), stride=3, padding=2, dilation=2).numpy()
write("convtranspose1d_dil", "ConvTranspose", [("x", x), ("w", w)], y, strides=[3], pads=[2, 2],
      dilations=[2])

# pooling (x: non-integer values are fine here; the results are a max or a short average)
x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
y = F.max_pool2d(T(x), 3, stride=2, padding=1, dilation=2, ceil_mode=True).numpy()
write("maxpool2d_dil_ceil", "MaxPool", [("x", x)], y, kernel_shape=[3, 3], strides=[2, 2],
      pads=[1, 1, 1, 1], dilations=[2, 2], ceil_mode=1)
y = F.avg_pool2d(T(x), (3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False).numpy()
write("avgpool2d_exclude_pad", "AveragePool", [("x", x)], y, kernel_shape=[3, 2],
      strides=[2, 1], pads=[1, 1, 1, 1], count_include_pad=0)
y = F.avg_pool2d(T(x), 3, stride=2, padding=1, count_include_pad=True).numpy()
write("avgpool2d_include_pad", "AveragePool", [("x", x)], y, kernel_shape=[3, 3],
      strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)

# Resize, sizes and scales as initializers (the node tests pass them at run time): PyTorch's bilinear and
# bicubic (A = -0.75, taps clamped at the edges) are ONNX's linear / cubic with half_pixel, or
# align_corners; its nearest with a scale factor is asymmetric + floor.
x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
y = F.interpolate(T(x), size=(8, 11), mode="bilinear", align_corners=False).numpy()
write("resize_linear_sizes", "Resize", [("x", x)], y, node_inputs=["x", "", "", "sizes"],
      inits=[("sizes", np.array([1, 2, 8, 11]))], mode="linear")
x = rng.standard_normal((1, 1, 4, 6)).astype(np.float32)
y = F.interpolate(T(x), scale_factor=(2.0, 1.5), mode="nearest").numpy()
write("resize_nearest_scales", "Resize", [("x", x)], y, node_inputs=["x", "", "scales"],
      inits=[("scales", np.array([1, 1, 2, 1.5], np.float32))], mode="nearest",
      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
x = rng.standard_normal((1, 1, 4, 5)).astype(np.float32)
y = F.interpolate(T(x), size=(7, 9), mode="bicubic", align_corners=True).numpy()
write("resize_cubic_align_corners", "Resize", [("x", x)], y, node_inputs=["x", "", "", "sizes"],
      inits=[("sizes", np.array([1, 1, 7, 9]))], mode="cubic",
      coordinate_transformation_mode="align_corners")

merge("conv_pool", [c[0] for c in CASES if not c[0].startswith("resize")])
merge("resize", [c[0] for c in CASES if c[0].startswith("resize")])
