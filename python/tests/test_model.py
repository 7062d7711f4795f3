"""python/tests/test_model.py - kernc.compile / Model: inputs and outputs (symbolic dims), runs
against ONNX Runtime and numpy, models given as a path, bytes, an onnx.ModelProto and .kir text,
errors as KernCError with kernc's message, threads, profile, peak memory, finding the library."""
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kernc
from conftest import GPT2_TINY, ROOT, ort_run


def mlp_model():
    """y = relu(x @ W + b) with x f32[N, 4] (N symbolic), W [4, 3], b [3]."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, w, b


def test_metadata_symbolic_dims(gpt2_tiny):
    (i,), (o,) = gpt2_tiny.inputs, gpt2_tiny.outputs
    assert (i.name, i.dtype, i.shape) == ("input_ids", np.dtype(np.int64), ["batch", "seq"])
    assert (o.name, o.dtype, o.shape) == ("logits", np.dtype(np.float32), ["batch", "seq", 100])
    assert "input_ids" in repr(i)


def test_run_matches_onnxruntime(gpt2_tiny, rng):
    ids = rng.integers(0, 100, (2, 7), dtype=np.int64)
    got = gpt2_tiny.run({"input_ids": ids})
    ref = ort_run(GPT2_TINY, {"input_ids": ids})
    assert list(got) == ["logits"]
    assert got["logits"].shape == (2, 7, 100) and got["logits"].dtype == np.float32
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=1e-4, atol=1e-4)
    # by position, another shape, a non-contiguous array
    ids2 = rng.integers(0, 100, (3, 10), dtype=np.int64)[:, ::2]
    got2 = gpt2_tiny.run([ids2])
    ref2 = ort_run(GPT2_TINY, {"input_ids": np.ascontiguousarray(ids2)})
    np.testing.assert_allclose(got2["logits"], ref2["logits"], rtol=1e-4, atol=1e-4)


def test_outputs_are_copies_unless_asked(gpt2_tiny):
    a = gpt2_tiny.run({"input_ids": np.array([[1, 2]], np.int64)})["logits"]
    keep = a.copy()
    gpt2_tiny.run({"input_ids": np.array([[5, 6]], np.int64)})
    np.testing.assert_array_equal(a, keep)
    b = gpt2_tiny.run({"input_ids": np.array([[1, 2]], np.int64)}, copy=False)["logits"]
    np.testing.assert_allclose(b, keep, rtol=1e-6)


def test_model_from_proto_bytes_and_path(tmp_path, rng):
    proto, w, b = mlp_model()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    want = np.maximum(x @ w + b, 0)
    path = tmp_path / "mlp.onnx"
    onnx.save(proto, str(path))
    for src in (proto, proto.SerializeToString(), str(path), path):
        m = kernc.compile(src, threads=1)
        assert m.inputs[0].shape == ["N", 4] and m.outputs[0].shape == ["N", 3]
        np.testing.assert_allclose(m.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
        m.close()


def test_kir_text_model(tmp_path, rng):
    path = tmp_path / "g.kir"
    path.write_text("# kir 1\n"
                    "graph @g(%1: f32[B,8] \"x\", %2: f32[B,8] \"y\") {\n"
                    "  %3 = mul(%1, %2) : f32[B,8]\n"
                    "  %4 = tanh(%3) : f32[B,8]\n"
                    "  return %4 \"z\", %3\n"
                    "}\n")
    with kernc.compile(str(path), passes="") as m:
        assert [i.name for i in m.inputs] == ["x", "y"]
        assert [o.name for o in m.outputs] == ["z", "output1"]
        assert m.inputs[0].shape == ["B", 8]
        x, y = rng.standard_normal((2, 3, 8)).astype(np.float32)
        out = m.run({"x": x, "y": y})
        np.testing.assert_allclose(out["z"], np.tanh(x * y), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["output1"], x * y, rtol=1e-6)


def test_errors_carry_kernc_message(gpt2_tiny, tmp_path):
    with pytest.raises(kernc.KernCError, match="input_ids"):
        gpt2_tiny.run({})
    with pytest.raises(kernc.KernCError) as e:
        gpt2_tiny.run({"input_ids": np.zeros((1, 3), np.float32)})
    assert "kc_run" in str(e.value) and e.value.message and e.value.message in str(e.value)
    with pytest.raises(kernc.KernCError, match="input ids: dtype object"):
        gpt2_tiny.run({"ids": np.array([None])})
    missing = str(tmp_path / "nope.onnx")
    with pytest.raises(kernc.KernCError, match="nope.onnx"):
        kernc.compile(missing)
    with pytest.raises(kernc.KernCError, match="no-such-pass"):
        kernc.compile(GPT2_TINY, passes="infer,no-such-pass")
    with pytest.raises(kernc.KernCError) as e:
        kernc.compile(GPT2_TINY, target="tpu")
    assert e.value.status == "unsupported"
    assert "tpu" in e.value.message


def test_threads_profile_peak(gpt2_tiny):
    gpt2_tiny.set_threads(1)
    gpt2_tiny.set_profile(True)
    ids = np.array([[3, 1, 4, 1, 5]], np.int64)
    gpt2_tiny.run({"input_ids": ids})
    gpt2_tiny.run({"input_ids": ids})
    prof = gpt2_tiny.profile()
    gpt2_tiny.set_profile(False)
    gpt2_tiny.set_threads(2)
    assert prof and all(p["calls"] == 2 for p in prof)
    assert {"matmul", "attention"} <= {p["op"] for p in prof}
    assert sum(p["ns"] for p in prof) > 0
    assert gpt2_tiny.peak_bytes > 0
    with pytest.raises(kernc.KernCError, match="threads"):
        gpt2_tiny.set_threads(100000)
    assert "attention(" in gpt2_tiny.graph_text()


def test_closed_model_raises():
    proto, _, _ = mlp_model()
    m = kernc.compile(proto)
    m.close()
    with pytest.raises(kernc.KernCError, match="close"):
        m.run({"x": np.zeros((1, 4), np.float32)})


def test_versions():
    assert kernc.__version__ == "0.1.0"
    v = kernc.library_version()
    assert v is None or re.fullmatch(r"\d+\.\d+\.\d+", v)


def _import_in_child(env):
    code = "import kernc; kernc.library_path()"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=os.path.join(ROOT, "python"))


def test_library_not_found_says_what_to_set(tmp_path):
    env = dict(os.environ, KERNC_LIBRARY=str(tmp_path / "libkernc.so"))
    p = _import_in_child(env)
    assert p.returncode != 0
    assert "LibraryNotFoundError" in p.stderr and "KERNC_LIBRARY" in p.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("KERNC_LIBRARY", "LD_LIBRARY_PATH")}
    p = _import_in_child(env)  # found only where kernc is installed for the loader
    assert p.returncode == 0 or ("KERNC_LIBRARY" in p.stderr and "libkernc.so.0" in p.stderr)


def test_runs_from_many_threads(gpt2_tiny, rng):
    from concurrent.futures import ThreadPoolExecutor
    feeds = [rng.integers(0, 100, (1, 3 + i), dtype=np.int64) for i in range(4)]
    want = [gpt2_tiny.run({"input_ids": f})["logits"] for f in feeds]
    with ThreadPoolExecutor(4) as ex:
        for _ in range(3):
            got = list(ex.map(lambda f: gpt2_tiny.run({"input_ids": f})["logits"], feeds))
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
