"""tests/install/make_data.py DIR - the install test's model and data: mlp.onnx (x: float32
[B,4] -> softmax(relu(x @ W1 + b1) @ W2 + b2): [B,5], written with onnx.helper), x.bin (float32
[3,4]) and want.bin, ONNX Runtime's output for x (raw little-endian float32)."""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
rng = np.random.default_rng(7)
w1 = rng.standard_normal((4, 8)).astype(np.float32)
b1 = rng.standard_normal(8).astype(np.float32)
w2 = rng.standard_normal((8, 5)).astype(np.float32)
b2 = rng.standard_normal(5).astype(np.float32)
nodes = [
    helper.make_node("MatMul", ["x", "W1"], ["h0"], name="fc1"),
    helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
    helper.make_node("Relu", ["h1"], ["h"], name="act"),
    helper.make_node("MatMul", ["h", "W2"], ["l0"], name="fc2"),
    helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias"),
    helper.make_node("Softmax", ["logits"], ["y"], name="probs", axis=-1),
]
graph = helper.make_graph(
    nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 5])],
    [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"))])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, f"{out}/mlp.onnx")
x = rng.standard_normal((3, 4)).astype(np.float32)
sess = ort.InferenceSession(f"{out}/mlp.onnx", providers=["CPUExecutionProvider"])
x.tofile(f"{out}/x.bin")
sess.run(None, {"x": x})[0].astype(np.float32).tofile(f"{out}/want.bin")
