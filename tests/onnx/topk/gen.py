#!/usr/bin/env python3
"""tests/onnx/topk/gen.py - writes cases/, the node-test-like folder test_onnx_index.c checks:
one ONNX model (opset 11) computing many TopK cases side by side past the sizes the node tests
use: rows of 1000+ elements with k = 1 and k = n, heavy ties (integer-valued floats, int64,
int32), -0.0 against +0.0, nan (largest and smallest), a middle axis (inner stride > 1), k = 0,
f64, and k given as a run-time input. Expected values come from onnx's reference implementation
(onnx.reference, numpy's stable lexsort: ties to the lower index, nan above every number);
ONNX Runtime must agree on every case without nan (checked here, so the two oracles agree).
Run from this folder with the pyenv python3 (onnx 1.22, onnxruntime): python3 gen.py"""
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

rng = np.random.default_rng(15)
CASES = []  # (name, x, k, axis, largest, k_is_input)


def case(name, x, k, axis=-1, largest=1, k_input=False):
    CASES.append((name, x, k, axis, largest, k_input))


case("long_k1", rng.standard_normal((3, 1500)).astype(np.float32), 1)
case("long_kn_smallest", rng.standard_normal((2, 1200)).astype(np.float32), 1200, largest=0)
ties = rng.integers(0, 5, size=(4, 1100)).astype(np.float32)
case("ties_largest", ties, 37)
case("ties_smallest", ties, 300, largest=0)
z = np.zeros((2, 1024), np.float32)
z[:, 1::2] = -0.0
z[:, ::7] = -1.0
z[1, 500] = 2.0
case("signed_zeros", z, 9)
case("signed_zeros_smallest", -z, 600, largest=0)
nx = rng.standard_normal((2, 1000)).astype(np.float32)
nx[0, [3, 50, 999]] = np.nan
nx[1, [0, 1]] = np.nan
case("nan_largest", nx, 10)
case("nan_smallest_all", nx, 1000, largest=0)
case("middle_axis", rng.standard_normal((5, 1030, 3)).astype(np.float32), 16, axis=1)
case("axis0", rng.integers(-4, 4, size=(1200, 2)).astype(np.int64), 1200, axis=0)
case("int32_smallest", rng.integers(-50, 50, size=(3, 1001)).astype(np.int32), 64, largest=0)
case("k0", rng.standard_normal((3, 5)).astype(np.float32), 0)
case("f64_k_input", rng.standard_normal((4, 1003)), 100, k_input=True)


def build():
    nodes, ins, outs, inits, ind, outd = [], [], [], [], [], []
    for name, x, k, axis, largest, k_input in CASES:
        kk = np.array([k], np.int64)
        xt = onnx.helper.np_dtype_to_tensor_dtype(x.dtype)
        nodes.append(helper.make_node("TopK", [f"{name}_x", f"{name}_k"],
                                      [f"{name}_v", f"{name}_i"], axis=axis, largest=largest))
        ins.append(helper.make_tensor_value_info(f"{name}_x", xt, x.shape))
        ind.append(numpy_helper.from_array(x, f"{name}_x"))
        if k_input:
            ins.append(helper.make_tensor_value_info(f"{name}_k", TensorProto.INT64, [1]))
            ind.append(numpy_helper.from_array(kk, f"{name}_k"))
        else:
            inits.append(numpy_helper.from_array(kk, f"{name}_k"))
        oshape = list(x.shape)
        oshape[axis] = k
        outs.append(helper.make_tensor_value_info(f"{name}_v", xt, oshape))
        outs.append(helper.make_tensor_value_info(f"{name}_i", TensorProto.INT64, oshape))
    graph = helper.make_graph(nodes, "topk_cases", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    feeds = {t.name: numpy_helper.to_array(t) for t in ind}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, feeds)
    for (name, x, *_), j in zip(CASES, range(0, 2 * len(CASES), 2)):
        if np.isnan(x.astype(np.float64)).any():
            continue
        assert np.array_equal(want[j], got[j]), name
        assert np.array_equal(want[j + 1], got[j + 1]), name
    return model, ind, [numpy_helper.from_array(a, o.name) for a, o in zip(want, outs)]


def main():
    folder = "cases"
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(os.path.join(folder, "test_data_set_0"))
    model, ins, outs = build()
    onnx.save(model, os.path.join(folder, "model.onnx"))
    for kind, ts in (("input", ins), ("output", outs)):
        for i, t in enumerate(ts):
            with open(os.path.join(folder, "test_data_set_0", f"{kind}_{i}.pb"), "wb") as f:
                f.write(t.SerializeToString())


if __name__ == "__main__":
    main()
