"""python/tests/conftest.py - shared fixtures of the kernc package's tests: the repository's
models, and defaults for running from a checkout (KERNC_LIBRARY: the build tree's
build/libkernc.so when it exists and neither KERNC_LIBRARY nor the loader path gives one; KERNC_OPT_LEVEL=0: -O0 JIT, which
compiles much faster and is exact enough for the tolerances here).

Expected values come from ONNX Runtime or numpy, never from kernc.
"""
import ctypes
import os

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_built = os.path.join(ROOT, "build", "libkernc.so")


def _on_loader_path():
    try:
        ctypes.CDLL("libkernc.so.0")
        return True
    except OSError:
        return False


# an installed kernc on the loader path (test.sh: LD_LIBRARY_PATH=PREFIX/lib) is used as is
if "KERNC_LIBRARY" not in os.environ and not _on_loader_path() and os.path.exists(_built):
    os.environ["KERNC_LIBRARY"] = _built
os.environ.setdefault("KERNC_OPT_LEVEL", "0")

GPT2_TINY = os.path.join(ROOT, "examples", "gpt2_tiny.onnx")


def ort_run(model_path, feeds):
    """ONNX Runtime's outputs of model_path on feeds, {name: array}."""
    import onnxruntime as ort
    s = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feeds)))


@pytest.fixture(scope="session")
def gpt2_tiny():
    """The tiny GPT-2 of examples/ compiled once for the tests that only run it."""
    import kernc
    m = kernc.compile(GPT2_TINY, threads=2)
    yield m
    m.close()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
