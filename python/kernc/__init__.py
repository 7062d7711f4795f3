"""kernc - Python bindings of kernc, a compiler for model graphs (ONNX in, CPU/CUDA kernels out),
over ctypes: no compiled extension, the package opens libkernc (see kernc._lib for where it looks:
$KERNC_LIBRARY, then the loader's path).

    import kernc
    m = kernc.compile("model.onnx", threads=2)       # like onnxruntime.InferenceSession
    print(m.inputs, m.outputs)                       # NodeArgs: name, dtype, shape
    out = m.run({"input_ids": ids})                  # {output name: numpy array}
    m.export("libmodel.so")                          # AOT: .so + model.h, no kernc needed to run
    print(kernc.dump("model.onnx", after_all=True))  # the IR after every pass
"""
from ._graph import NodeArg, dump
from ._lib import KernCError, LibraryNotFoundError, library_path
from .model import Model, compile, export
from .session import Session
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = ["compile", "export", "dump", "Model", "NodeArg", "Session", "Trainer", "KernCError",
           "LibraryNotFoundError", "library_path", "library_version", "__version__"]


def library_version():
    """The version of the libkernc that was opened ("0.1.0"), or None when it is older than
    kc_version."""
    from . import _lib
    return _lib.lib().kc_version().decode() if _lib.has("kc_version") else None
