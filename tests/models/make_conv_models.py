#!/usr/bin/env python3
"""tests/models/make_conv_models.py - conv_tiny: the Conv forms kernc imports differently, in one
graph written with onnx.helper, with ONNX Runtime's outputs as references, for
`kernc check tests/models/conv_tiny/` (tests/test_models.c runs it).

Run with the pyenv Python (onnx 1.22, onnxruntime, numpy):

    python3 tests/models/make_conv_models.py [--out DIR]

Input x [N, 4, 10, 11] (N dynamic; data sets N = 1 and N = 2). Outputs:
  patch     Conv 3x3, strides 3, bias: windows tile the input (frontend/onnx_vision.c's patch
            path), the input cropped to 9 x 9 first;
  tokens    a ViT patch embedding: Conv 2x2 strides 2 without bias, then flatten(2) and
            transpose(1, 2) as the exporters write them (Reshape, Transpose) [N, 25, 5];
  grouped   Conv 3x3, group 2, pads 1, bias (the general im2col path, batched over groups);
  depthwise Conv 3x3, group 4, 2 filters per channel, dilations 2, pads 2, strides 2;
  conv1d    Conv over x viewed as [N, 4, 110], kernel 5 = stride 5 (the patch path in 1-D).
Weights: standard normal, seeded. Opset 17.

qconv_tiny: the integer convs on a uint8 input xq [N, 4, 9, 9] (data sets N = 1, 2):
  qlinear   QLinearConv 3x3, pads 1, int8 weights with per-channel scales and an int32 bias
            (summed before the requantization), uint8 output;
  qnobias   QLinearConv 2x2 strides 2 without bias, per-tensor uint8 weights;
  integer   ConvInteger 3x3, group 2, pads 1, uint8 weights, x and w zero points (int32 out).
"""
import argparse
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description="Export tests/models/conv_tiny with ORT references.")
    ap.add_argument("--out", default=HERE, metavar="DIR")
    out = ap.parse_args().out
    out_dir = os.path.join(out, "conv_tiny")
    rng = np.random.default_rng(15)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [w("Wp", 6, 4, 3, 3), w("Bp", 6), w("Wt", 5, 4, 2, 2), w("Wg", 6, 2, 3, 3), w("Bg", 6),
             w("Wd", 8, 1, 3, 3), w("W1", 3, 4, 5), w("B1", 3),
             numpy_helper.from_array(np.array([0, 5, -1], np.int64), "tok_shape"),
             numpy_helper.from_array(np.array([0, 4, -1], np.int64), "flat_shape")]
    nodes = [
        helper.make_node("Conv", ["x", "Wp", "Bp"], ["patch"], kernel_shape=[3, 3], strides=[3, 3]),
        helper.make_node("Conv", ["x", "Wt"], ["t_conv"], strides=[2, 2]),
        helper.make_node("Reshape", ["t_conv", "tok_shape"], ["t_flat"]),
        helper.make_node("Transpose", ["t_flat"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["x", "Wg", "Bg"], ["grouped"], group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "Wd"], ["depthwise"], group=4, dilations=[2, 2],
                         pads=[2, 2, 2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["x", "flat_shape"], ["x1d"]),
        helper.make_node("Conv", ["x1d", "W1", "B1"], ["conv1d"], strides=[5]),
    ]
    f = TensorProto.FLOAT
    outs = {"patch": (f, ["N", 6, 3, 3]), "tokens": (f, ["N", 25, 5]),
            "grouped": (f, ["N", 6, 10, 11]), "depthwise": (f, ["N", 8, 5, 6]),
            "conv1d": (f, ["N", 3, 22])}
    write_model(out_dir, nodes, ("x", f, ["N", 4, 10, 11]), outs, inits,
                lambda n: {"x": rng.standard_normal((n, 4, 10, 11)).astype(np.float32)})
    quantized(out)


def write_model(out_dir, nodes, x, outs, inits, make_inputs):
    """out_dir/model.onnx: one input x (name, type, shape), outputs {name: (type, shape)};
    then test_data_set_0 and _1 (make_inputs(N) for N = 1, 2) with ORT's outputs."""
    graph = helper.make_graph(nodes, os.path.basename(out_dir), [helper.make_tensor_value_info(*x)],
                              [helper.make_tensor_value_info(n, t, sh) for n, (t, sh) in outs.items()],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    path = os.path.join(out_dir, "model.onnx")
    onnx.save(model, path)
    names = list(outs)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for i, n in enumerate((1, 2)):
        d = os.path.join(out_dir, "test_data_set_%d" % i)
        os.makedirs(d)
        feeds = make_inputs(n)
        for j, (k, v) in enumerate(feeds.items()):
            with open(os.path.join(d, "input_%d.pb" % j), "wb") as f:
                f.write(numpy_helper.from_array(v, k).SerializeToString())
        for j, y in enumerate(sess.run(None, feeds)):
            with open(os.path.join(d, "output_%d.pb" % j), "wb") as f:
                f.write(numpy_helper.from_array(y, names[j]).SerializeToString())
            print("  %s set %d %s %s" % (os.path.basename(out_dir), i, names[j], list(y.shape)))


def quantized(out):
    out_dir = os.path.join(out, "qconv_tiny")
    rng = np.random.default_rng(16)
    A = numpy_helper.from_array

    def f32(v, name):
        return A(np.array(v, np.float32), name)

    inits = [f32(0.02, "xs"), A(np.array(120, np.uint8), "xz"),
             A(rng.integers(-60, 60, (6, 4, 3, 3)).astype(np.int8), "Wq"),
             f32(rng.uniform(0.005, 0.02, 6), "ws"), A(np.zeros(6, np.int8), "wz"),
             f32(0.05, "ys"), A(np.array(128, np.uint8), "yz"),
             A(rng.integers(-3000, 3000, 6).astype(np.int32), "Bq"),
             A(rng.integers(0, 255, (5, 4, 2, 2)).astype(np.uint8), "Wu"), f32(0.01, "wus"),
             A(np.array(130, np.uint8), "wuz"), f32(0.2, "y2s"), A(np.array(100, np.uint8), "y2z"),
             A(rng.integers(0, 255, (6, 2, 3, 3)).astype(np.uint8), "Wi"),
             A(np.array(125, np.uint8), "wiz")]
    nodes = [
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "Wq", "ws", "wz", "ys", "yz", "Bq"],
                         ["qlinear"], pads=[1, 1, 1, 1]),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "Wu", "wus", "wuz", "y2s", "y2z"],
                         ["qnobias"], strides=[2, 2]),
        helper.make_node("ConvInteger", ["xq", "Wi", "xz", "wiz"], ["integer"], group=2,
                         pads=[1, 1, 1, 1]),
    ]
    outs = {"qlinear": (TensorProto.UINT8, ["N", 6, 9, 9]),
            "qnobias": (TensorProto.UINT8, ["N", 5, 4, 4]),
            "integer": (TensorProto.INT32, ["N", 6, 9, 9])}
    write_model(out_dir, nodes, ("xq", TensorProto.UINT8, ["N", 4, 9, 9]), outs, inits,
                lambda n: {"xq": rng.integers(0, 255, (n, 4, 9, 9)).astype(np.uint8)})


if __name__ == "__main__":
    main()
