"""kernc/_graph.py - loading a model into a kc_graph (an ONNX file, a .kir text IR file, ONNX
bytes or an onnx.ModelProto) and reading its inputs and outputs as NodeArgs (ONNX Runtime's
name / type / shape triple, with numpy dtypes and symbolic dims as strings).
"""
import ctypes as C
import os
import tempfile

from . import _lib
from ._lib import KernCError


class NodeArg:
    """A graph input or output: .name, .dtype (a numpy dtype; None for bf16, which numpy lacks),
    .shape (ints, and strings for symbolic dims: ['batch', 'seq', 768]) and .type (kernc's
    dtype name, "f32")."""

    def __init__(self, name, dtype, shape, type_name):
        self.name, self.dtype, self.shape, self.type = name, dtype, shape, type_name

    def __repr__(self):
        return "NodeArg(name=%r, dtype=%s, shape=%r)" % (self.name, self.dtype, self.shape)


def load(ctx, model):
    """A new kc_graph (a c_void_p the caller frees with kc_graph_free) of model: a path to an
    .onnx or .kir file, ONNX bytes, or an onnx.ModelProto (written to a temporary file, so its
    external data, if any, must be absolute or inlined)."""
    L = ctx.lib
    g = C.c_void_p()
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        with tempfile.TemporaryDirectory(prefix="kernc-") as d:
            path = os.path.join(d, "model.onnx")
            with open(path, "wb") as f:
                f.write(model)
            ctx.check(L.kc_onnx_load(ctx.ptr, _lib.enc(path), C.byref(g)), "kc_onnx_load")
        return g
    path = os.fspath(model)
    if path.endswith(".kir"):
        ctx.check(L.kc_graph_parse_file(ctx.ptr, _lib.enc(path), C.byref(g)),
                  "kc_graph_parse_file")
    else:
        ctx.check(L.kc_onnx_load(ctx.ptr, _lib.enc(path), C.byref(g)), "kc_onnx_load")
    return g


def node_arg(L, g, v, name):
    """The NodeArg of value v of kc_graph g."""
    rank = L.kc_val_rank(g, v)
    dims = (C.c_int64 * max(rank, 1))()
    L.kc_val_dims(g, v, dims)
    buf = C.create_string_buffer(256)
    shape = [int(d) if d >= 0 else L.kc_dim_str(g, d, buf, 256).decode() for d in dims[:rank]]
    kc = L.kc_val_dtype(g, v)
    return NodeArg(name, _lib.np_dtype(kc), shape, L.kc_dtype_name(kc).decode())


def inputs_of(L, g):
    return [node_arg(L, g, L.kc_graph_input(g, i), L.kc_graph_input_name(g, i).decode())
            for i in range(L.kc_graph_num_inputs(g))]


def outputs_of(L, g):
    """The outputs' NodeArgs; an unnamed output (text IR allows them) is called "output<i>"."""
    return [node_arg(L, g, L.kc_graph_output(g, i),
                     L.kc_graph_output_name(g, i).decode() or "output%d" % i)
            for i in range(L.kc_graph_num_outputs(g))]


class Loaded:
    """A loaded graph for the length of a with-block: `with Loaded(ctx, model) as g:`."""

    def __init__(self, ctx, model):
        self.ctx, self.g = ctx, load(ctx, model)

    def __enter__(self):
        return self.g

    def __exit__(self, *exc):
        self.ctx.lib.kc_graph_free(self.g)
        self.g = None


def dump(model, passes=None, after_all=False, format="kir", target=None):
    """The IR text of model (a path, ONNX bytes or an onnx.ModelProto) after the pass pipeline:
    target's default one (the CPU's unless target says otherwise) or passes ("a,b,c"; "" for
    none); after_all puts the IR after every pass ahead of the result (`kernc dump
    --print-after-all`); format "kir" (text IR) or "dot" (graphviz)."""
    if format not in ("kir", "text", "dot"):
        raise ValueError("format must be 'kir' or 'dot', not %r" % (format,))
    ctx = _lib.Context()
    try:
        if not _lib.has("kc_graph_dump"):
            raise KernCError("kernc.dump: %s has no kc_graph_dump (an older libkernc)"
                             % _lib.library_path())
        with Loaded(ctx, model) as g:
            out = C.c_void_p()
            ctx.check(ctx.lib.kc_graph_dump(g, _lib.enc(target), _lib.enc(passes),
                                            1 if after_all else 0, 1 if format == "dot" else 0,
                                            C.byref(out)), "kc_graph_dump")
            return _lib.take_string(out.value)
    finally:
        ctx.close()
