"""tests/cli_opts_data.py OUT - the data of tests/test_cli_opts.c, written with onnx.helper and
numpy (expected values from numpy, never from kernc):

  OUT/data/node/test_add/          Add, expected exact                     (passes by default)
  OUT/data/node/test_add_off/      Add, expected off by 1% relative        (fails by default)
  OUT/data/model/test_whole/       Add, one small element off by 1e-3      (relative passes)
  OUT/s.npz, OUT/c.npz             x [3,4] f32 (0..11) and y i64 [1,2]: np.savez, np.savez_compressed
  OUT/t.npz, OUT/bad.npz           c.npz truncated to half; c.npz with its first entry's deflate
                                   data overwritten
  OUT/lin.onnx                     y = x * W + c (W an initializer [4], c a Constant 2.0)
  OUT/lin_x.npy, OUT/lin_want3.txt x, and x * W + 3.0 printed as kernc run prints f32 values
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]


def add_test(path, a, b, want):
    os.makedirs(os.path.join(path, "test_data_set_0"), exist_ok=True)
    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a.shape))
    y = helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b.shape))
    z = helper.make_tensor_value_info("c", TensorProto.FLOAT, list(want.shape))
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"], name="add0")], "g", [x, y], [z])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, os.path.join(path, "model.onnx"))
    for i, t in enumerate([a, b]):
        with open(os.path.join(path, "test_data_set_0", f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(t).SerializeToString())
    with open(os.path.join(path, "test_data_set_0", "output_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(want).SerializeToString())


a = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
b = np.full((2, 3), 0.5, dtype=np.float32)
add_test(os.path.join(out, "data/node/test_add"), a, b, a + b)
add_test(os.path.join(out, "data/node/test_add_off"), a, b, (a + b) * np.float32(1.01))
big = np.array([1000.0, 1.0e-3], dtype=np.float32)
zero = np.zeros(2, dtype=np.float32)
add_test(os.path.join(out, "data/model/test_whole"), big, zero, np.array([1000.0, 2.0e-3], np.float32))

x = np.arange(12, dtype=np.float32).reshape(3, 4)
y = np.array([1, 2], dtype=np.int64)
np.savez(os.path.join(out, "s.npz"), x=x, y=y)
np.savez_compressed(os.path.join(out, "c.npz"), x=x, y=y)
with open(os.path.join(out, "c.npz"), "rb") as f:
    data = f.read()
with open(os.path.join(out, "t.npz"), "wb") as f:
    f.write(data[: len(data) // 2])
assert data[:4] == b"PK\x03\x04"
start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
bad = bytearray(data)
bad[start:start + 16] = b"\xff" * 16
with open(os.path.join(out, "bad.npz"), "wb") as f:
    f.write(bytes(bad))

w = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
nodes = [
    helper.make_node("Constant", [], ["c"], name="const_c",
                     value=numpy_helper.from_array(np.array(2.0, dtype=np.float32))),
    helper.make_node("Mul", ["x", "W"], ["xw"], name="mul0"),
    helper.make_node("Add", ["xw", "c"], ["y"], name="add0"),
]
g = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
                      initializer=[numpy_helper.from_array(w, "W")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, os.path.join(out, "lin.onnx"))
np.save(os.path.join(out, "lin_x.npy"), x)
want = x * w + np.float32(3.0)
with open(os.path.join(out, "lin_want3.txt"), "w") as f:
    f.write("y: f32[3,4] = " + " ".join("%.9g" % v for v in want.ravel()) + "\n")
