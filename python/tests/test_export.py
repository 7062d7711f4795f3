"""python/tests/test_export.py - Model.export / kernc.export: the .so and header are written, and
the .so, loaded with ctypes through the entry points its header declares (NAME_create, NAME_run,
NAME_error, NAME_free), computes what ONNX Runtime does."""
import ctypes as C
import os

import numpy as np

import kernc
from conftest import GPT2_TINY, ort_run


class tensor(C.Structure):  # kc_model_tensor of the generated header
    _fields_ = [("name", C.c_char_p), ("dtype", C.c_int), ("rank", C.c_int),
                ("dims", C.c_int64 * 8), ("data", C.c_void_p)]


def test_export_so_runs_through_its_header(gpt2_tiny, tmp_path):
    so = str(tmp_path / "libtiny.so")
    header = gpt2_tiny.export(so)
    assert os.path.exists(so)
    assert header == str(tmp_path / "tiny.h") and os.path.exists(header)
    text = open(header).read()
    for decl in ("tiny_t *tiny_create(int threads);", "int tiny_run(", "void tiny_free(",
                 "input_ids", "logits"):
        assert decl in text, decl

    lib = C.CDLL(so)
    lib.tiny_create.restype = C.c_void_p
    lib.tiny_create.argtypes = [C.c_int]
    lib.tiny_run.restype = C.c_int
    lib.tiny_run.argtypes = [C.c_void_p, C.POINTER(tensor), C.POINTER(tensor)]
    lib.tiny_error.restype = C.c_char_p
    lib.tiny_error.argtypes = [C.c_void_p]
    lib.tiny_free.argtypes = [C.c_void_p]
    m = lib.tiny_create(1)
    assert m, lib.tiny_error(None)
    try:
        ids = np.array([[5, 17, 42, 9]], np.int64)
        inp = tensor(b"input_ids", 5, 2, (C.c_int64 * 8)(1, 4), ids.ctypes.data)  # 5: i64
        out = tensor()
        assert lib.tiny_run(m, C.byref(inp), C.byref(out)) == 0, lib.tiny_error(m)
        assert (out.dtype, out.rank, tuple(out.dims[:3])) == (1, 3, (1, 4, 100))
        got = np.ctypeslib.as_array(C.cast(out.data, C.POINTER(C.c_float)), (1, 4, 100)).copy()
        np.testing.assert_allclose(got, ort_run(GPT2_TINY, {"input_ids": ids})["logits"],
                                   rtol=1e-4, atol=1e-4)
        bad = tensor(b"input_ids", 1, 2, (C.c_int64 * 8)(1, 4), ids.ctypes.data)  # f32: wrong
        assert lib.tiny_run(m, C.byref(bad), C.byref(out)) != 0
        assert b"input_ids" in lib.tiny_error(m)
    finally:
        lib.tiny_free(m)


def test_export_named_with_header_path(tmp_path):
    so, h = str(tmp_path / "m.so"), str(tmp_path / "inc" / "my_model.h")
    os.mkdir(tmp_path / "inc")
    assert kernc.export(GPT2_TINY, so, name="my_model", header=h) == h
    assert os.path.exists(so) and "my_model_run(" in open(h).read()


def test_export_multi_cpu_picks_a_level(tmp_path):
    """cpu="multi": kernels for x86-64-v2, -v3 and -v4 in one library; NAME_target names the one
    NAME_create picked (one this CPU runs), and the outputs are ONNX Runtime's."""
    so = str(tmp_path / "libmulti.so")
    kernc.export(GPT2_TINY, so, cpu="multi")
    lib = C.CDLL(so)
    lib.multi_target.restype = C.c_char_p
    lib.multi_create.restype = C.c_void_p
    lib.multi_create.argtypes = [C.c_int]
    lib.multi_run.argtypes = [C.c_void_p, C.POINTER(tensor), C.POINTER(tensor)]
    lib.multi_free.argtypes = [C.c_void_p]
    m = lib.multi_create(1)
    assert m
    try:
        assert lib.multi_target().decode() in ("x86-64-v2", "x86-64-v3", "x86-64-v4")
        ids = np.array([[3, 1, 4, 1, 5]], np.int64)
        inp = tensor(b"input_ids", 5, 2, (C.c_int64 * 8)(1, 5), ids.ctypes.data)
        out = tensor()
        assert lib.multi_run(m, C.byref(inp), C.byref(out)) == 0
        got = np.ctypeslib.as_array(C.cast(out.data, C.POINTER(C.c_float)), (1, 5, 100)).copy()
        np.testing.assert_allclose(got, ort_run(GPT2_TINY, {"input_ids": ids})["logits"],
                                   rtol=1e-4, atol=1e-4)
    finally:
        lib.multi_free(m)


def test_export_unknown_cpu_is_an_error(tmp_path):
    try:
        kernc.export(GPT2_TINY, str(tmp_path / "libx.so"), cpu="pentium-9000")
    except kernc.KernCError as e:
        assert "pentium-9000" in str(e)
    else:
        raise AssertionError("an unknown cpu name was accepted")
