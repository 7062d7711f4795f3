#!/usr/bin/env python3
"""tests/onnx/index_errors/gen.py - writes the node-test-like folders test_onnx_index.c runs:
gather_elements/ (GatherElements 'ge', axis 1, data f32[3, 4], indices i64[3, 5]),
scatter_elements/ (ScatterElements 'se', axis 0, data f32[4, 3], indices i32[2, 3]) and
scatter_nd/ (ScatterND 'snd', data f32[4, 5, 2], indices i64[3, 2], updates f32[3, 2]) and
gather_nd/ (GatherND 'gnd', batch_dims 1, data f32[B, N, 3], indices i64[B, 4, 1]), each with
indices that include negative ones within range, and the expected outputs from ONNX Runtime
(onnx's reference implementation must agree). The C test then runs the same models with one
index out of range and checks the error names the node, the index, its position and the axis.
Run from this folder with the pyenv python3 (onnx 1.22, onnxruntime): python3 gen.py"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

T = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
     np.dtype(np.int32): TensorProto.INT32}


def write(folder, op, name, inputs, out_shape, dims=None, **attrs):
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "test_data_set_0"))
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], name=name, **attrs)
    graph = helper.make_graph(
        [node], folder, [helper.make_tensor_value_info(n, T[a.dtype], (dims or {}).get(n, a.shape))
                         for n, a in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    feeds = dict(inputs)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(want, ReferenceEvaluator(model).run(None, feeds)[0]), folder
    onnx.save(model, os.path.join(folder, "model.onnx"))
    d = os.path.join(folder, "test_data_set_0")
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())
    with open(os.path.join(d, "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(want, "y").SerializeToString())


def main():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    ind = np.array([[0, -1, 3, -4, 2], [1, 1, -2, 0, 3], [-3, 2, 0, 1, -1]], np.int64)
    write("gather_elements", "GatherElements", "ge", [("data", data), ("indices", ind)], [3, 5],
          axis=1)
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    ind = np.array([[-1, 0, 2], [1, -3, -1]], np.int32)
    upd = np.array([[100, 101, 102], [103, 104, 105]], np.float32)
    write("scatter_elements", "ScatterElements", "se",
          [("data", data), ("indices", ind), ("updates", upd)], [4, 3], axis=0)
    data = np.arange(40, dtype=np.float32).reshape(4, 5, 2)
    ind = np.array([[0, -1], [-4, 2], [3, -5]], np.int64)
    upd = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    write("scatter_nd", "ScatterND", "snd", [("data", data), ("indices", ind), ("updates", upd)],
          [4, 5, 2])
    # GatherND with batch_dims 1 on symbolic dims: the import reads sizes from Shape(data)
    data = np.arange(30, dtype=np.float32).reshape(2, 5, 3)
    ind = np.array([[[0], [4], [-1], [2]], [[1], [-5], [3], [0]]], np.int64)
    write("gather_nd", "GatherND", "gnd", [("data", data), ("indices", ind)], ["B", 4, 3],
          dims={"data": ["B", "N", 3], "indices": ["B", 4, 1]}, batch_dims=1)


if __name__ == "__main__":
    main()
