#!/usr/bin/env python3
"""tests/onnx/make_models.py - writes the small ONNX models tests/test_onnx.c loads.

Run from anywhere: `python3 tests/onnx/make_models.py` (needs the onnx and numpy packages).
The outputs are committed, so the C tests do not need Python. Models that are broken on
purpose are built by hand here, since onnx.helper/checker would refuse them; the truncated,
random, empty and symlink cases are made by the C test at run time in a temporary folder.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=17, ir=8, name="g"):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def save(m, name):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(m.SerializeToString())


def vi(name, dims, t=F):
    return helper.make_tensor_value_info(name, t, dims)


def external(name, arr, location, offset=0):
    """A TensorProto whose data lives in `location` at `offset` (not written here)."""
    t = numpy_helper.from_array(arr, name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)),
                 ("length", str(arr.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def ext_model(location, name="w"):
    w = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5
    init = external(name, w, location, offset=16)
    return model([helper.make_node("MatMul", ["x", name], ["y"], name="mm")],
                 [vi("x", [2, 3])], [vi("y", [2, 4])], [init]), w


def main():
    # a good model with external data: 16 bytes of padding, then w
    m, w = ext_model("weights.bin")
    save(m, "external.onnx")
    with open(os.path.join(HERE, "weights.bin"), "wb") as f:
        f.write(b"\xee" * 16 + w.tobytes())
    # external data that escapes the folder, is absolute, or is missing
    save(ext_model("../weights.bin")[0], "escape_dotdot.onnx")
    save(ext_model("sub/../../weights.bin")[0], "escape_dotdot2.onnx")
    save(ext_model("/etc/hostname")[0], "escape_absolute.onnx")
    save(ext_model("missing.bin")[0], "missing_external.onnx")
    save(ext_model("link.bin")[0], "symlink_external.onnx")  # the test makes link.bin

    # a cycle: t1 = Add(x, t2); t2 = Relu(t1)
    save(model([helper.make_node("Add", ["x", "t2"], ["t1"], name="add"),
                helper.make_node("Relu", ["t1"], ["t2"], name="relu")],
               [vi("x", [2])], [vi("t2", [2])]), "cycle.onnx")
    # an input nothing defines
    save(model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")],
               [vi("x", [2])], [vi("y", [2])]), "undefined_input.onnx")
    # raw_data of 20 bytes for a [2,3] f32 tensor
    bad = TensorProto(name="w", data_type=F, dims=[2, 3], raw_data=b"\0" * 20)
    save(model([helper.make_node("Add", ["x", "w"], ["y"], name="add_w")],
               [vi("x", [2, 3])], [vi("y", [2, 3])], [bad]), "size_mismatch.onnx")
    # float_data with 5 elements for 6
    bad = TensorProto(name="w", data_type=F, dims=[2, 3], float_data=[1, 2, 3, 4, 5])
    save(model([helper.make_node("Add", ["x", "w"], ["y"], name="add_w")],
               [vi("x", [2, 3])], [vi("y", [2, 3])], [bad]), "typed_size_mismatch.onnx")
    # a dtype kernc does not have (float8e4m3fn = 17), on an initializer and on an input
    bad = TensorProto(name="w", data_type=17, dims=[2], raw_data=b"\0\0")
    save(model([helper.make_node("Identity", ["w"], ["y"], name="id_w")],
               [], [vi("y", [2])], [bad]), "bad_dtype.onnx")
    save(model([helper.make_node("Identity", ["x"], ["y"], name="id")],
               [vi("x", [2], TensorProto.STRING)], [vi("y", [2], TensorProto.STRING)]),
         "string_input.onnx")
    # Add with one input
    save(model([helper.make_node("Add", ["x"], ["y"], name="lonely_add")],
               [vi("x", [2])], [vi("y", [2])]), "too_few_inputs.onnx")
    # unsupported ops, two kinds, one twice, plus one from another domain
    m = model([helper.make_node("Unique", ["x"], ["a"], name="uniq1"),
               helper.make_node("Relu", ["a"], ["b"], name="relu"),
               helper.make_node("Unique", ["b"], ["c"], name="uniq2"),
               helper.make_node("Det", ["c"], ["d"], name="det"),
               helper.make_node("FusedMatMul", ["d", "d"], ["e"], name="fmm",
                                domain="com.microsoft")],
              [vi("x", [2, 2])], [vi("e", [2, 2])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    save(m, "unsupported_ops.onnx")
    # a sequence input
    seq = helper.make_tensor_sequence_value_info("s", F, [2])
    save(model([helper.make_node("SequenceLength", ["s"], ["n"], name="len")],
               [seq], [vi("n", [], TensorProto.INT64)]), "sequence_input.onnx")
    save(model([helper.make_node("Identity", ["x"], ["y"], name="id")],
               [helper.make_tensor_sequence_value_info("x", F, [2])],
               [helper.make_tensor_sequence_value_info("y", F, [2])]), "sequence_io.onnx")

    # older opsets rewritten into the latest forms (opset 9 / 11)
    x = vi("x", ["N", 3, 4])
    nodes = [
        helper.make_node("Softmax", ["x"], ["sm"], name="sm", axis=1),
        helper.make_node("Clip", ["sm"], ["cl"], name="clip", min=0.1, max=0.9),
        helper.make_node("Unsqueeze", ["cl"], ["us"], name="us", axes=[0]),
        helper.make_node("Squeeze", ["us"], ["sq"], name="sq", axes=[0]),
        helper.make_node("Slice", ["sq"], ["sl"], name="sl", starts=[1], ends=[3], axes=[2]),
        helper.make_node("ReduceSum", ["sl"], ["rs"], name="rs", axes=[1], keepdims=0),
        helper.make_node("Split", ["rs"], ["s0", "s1"], name="split", axis=1, split=[1, 1]),
        helper.make_node("Dropout", ["s0"], ["d0", "mask"], name="drop", ratio=0.25),
    ]
    m = model(nodes, [x], [vi("d0", ["N", 1]), vi("mask", ["N", 1]), vi("s1", ["N", 1])],
              opset=9, ir=4)
    save(m, "old_opsets.onnx")
    # Constant forms: value_ints (small -> constant), a 100-element value (-> weight)
    big = numpy_helper.from_array(np.arange(100, dtype=np.float32).reshape(10, 10), "bigc")
    nodes = [
        helper.make_node("Constant", [], ["shape"], name="c_shape", value_ints=[5, 20]),
        helper.make_node("Constant", [], ["big"], name="c_big", value=big),
        helper.make_node("Reshape", ["big", "shape"], ["y"], name="reshape"),
    ]
    save(model(nodes, [], [vi("y", [5, 20])], opset=13), "constants.onnx")
    # typed initializer fields: int32_data for f16 bits and int8, int64_data, double_data
    inits = [
        helper.make_tensor("h", TensorProto.FLOAT16, [2], [1.5, -2.0]),  # int32_data bits
        helper.make_tensor("i8", TensorProto.INT8, [3], [-1, 2, 127]),
        helper.make_tensor("i64", TensorProto.INT64, [2], [7, -9]),
        helper.make_tensor("f64", TensorProto.DOUBLE, [1], [0.25]),
        helper.make_tensor("u32", TensorProto.UINT32, [2], [4000000000, 1]),
        helper.make_tensor("b", TensorProto.BOOL, [2], [True, False]),
    ]
    nodes = [helper.make_node("Identity", [n.name], [n.name + "_out"], name="id_" + n.name)
             for n in inits]
    outs = [vi(n.name + "_out", list(n.dims), n.data_type) for n in inits]
    save(model(nodes, [], outs, inits), "typed_fields.onnx")
    # sizes past int64: Reshape to [2^62, 2^62] and Expand to [2^32]^3 (test_verify)
    e62, e32 = 1 << 62, 1 << 32
    big = helper.make_tensor("shape", TensorProto.INT64, [2], [e62, e62])
    save(model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="huge_reshape")],
               [vi("x", [4])], [vi("y", [e62, e62])], [big], opset=13), "reshape_overflow.onnx")
    big = helper.make_tensor("shape", TensorProto.INT64, [3], [e32, e32, e32])
    save(model([helper.make_node("Expand", ["x", "shape"], ["y"], name="huge_expand")],
               [vi("x", [1])], [vi("y", [e32, e32, e32])], [big], opset=13), "expand_overflow.onnx")

    bad_attributes()

    # dim_params that are not text IR symbols (test_onnx t_dim_params): spaces, a leading digit,
    # a quote, UTF-8, and expression text; "batch_size" after "batch size" took that name; an
    # unknown dim (fresh unk0) before a dim_param "unk0"
    params = [["batch size", "1x"], ['a"b', "b\u00e4tch"], ["B*S+1", "N-1"],
              ["batch_size", "batch size"], [None, "unk0"]]
    ins = [vi(f"x{i}", p) for i, p in enumerate(params)]
    outs = [vi(f"y{i}", p) for i, p in enumerate(params)]
    save(model([helper.make_node("Relu", [f"x{i}"], [f"y{i}"], name=f"relu{i}")
                for i in range(len(params))], ins, outs), "dim_params.onnx")

    check_suite()


def bad_attributes():
    """Attributes and opset imports ONNX's checker refuses (issue 14, finding 9)."""
    def softmax_model(*attrs):
        n = helper.make_node("Softmax", ["x"], ["y"], name="sm")
        n.attribute.extend(attrs)
        return model([n], [vi("x", [2, 3])], [vi("y", [2, 3])])
    save(softmax_model(helper.make_attribute("axis", 1), helper.make_attribute("axis", 0)),
         "dup_attr.onnx")
    bad = onnx.AttributeProto(name="axis", type=onnx.AttributeProto.INT, s=b"1")
    save(softmax_model(bad), "attr_type_mismatch.onnx")
    m = softmax_model()
    m.opset_import.append(helper.make_opsetid("ai.onnx", 13))
    save(m, "dup_opset.onnx")


def data_set(folder, inputs, outputs):
    """test_data_set_0 with input_N.pb / output_N.pb, as ONNX backend tests have."""
    d = os.path.join(folder, "test_data_set_0")
    os.makedirs(d, exist_ok=True)
    for kind, arrs in (("input", inputs), ("output", outputs)):
        for i, a in enumerate(arrs):
            with open(os.path.join(d, "%s_%d.pb" % (kind, i)), "wb") as f:
                f.write(numpy_helper.from_array(a).SerializeToString())


def check_suite():
    """check_suite/: one test that passes, one whose expected output is wrong, one to skip."""
    root = os.path.join(HERE, "check_suite")
    x = np.ones((2, 3), np.float32)
    for name, expect in (("test_pass", np.ones((2, 3), np.float32)),
                         ("test_fail", np.ones((3, 2), np.float32))):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        save_to = os.path.join("check_suite", name, "model.onnx")
        save(model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                   [vi("x", ["B", 3])], [vi("y", ["B", 3])]), save_to)
        data_set(folder, [x], [expect])
    folder = os.path.join(root, "test_skip")
    os.makedirs(folder, exist_ok=True)
    save(model([helper.make_node("Unique", ["x"], ["y"], name="uniq")],
               [vi("x", [2, 3])], [vi("y", [2, 3])]),
         os.path.join("check_suite", "test_skip", "model.onnx"))
    data_set(folder, [x], [x])


if __name__ == "__main__":
    main()
