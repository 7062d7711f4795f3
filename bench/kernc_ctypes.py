"""bench/kernc_ctypes.py - a small ctypes binding to libkernc.so for the benchmarks: load an ONNX
model, compile it for the CPU, run it on numpy arrays, read the memory plan's peak.

The structs mirror include/kernc.h (kc_tensor_desc, kc_compile_options) and must change with it;
only the calls the benchmarks need are bound. Outputs of kc_run point into memory the module owns
(valid until the next run), so Module.run copies them unless asked not to.

    lib = load("build-bench/libkernc.so")
    with Module.from_onnx(lib, "model.onnx", threads=2) as m:
        outs = m.run({"input_ids": ids})          # list of numpy arrays, graph output order
"""
import ctypes as C
import os

import numpy as np

KC_MAX_RANK = 8

# enum kc_dtype, in include/kernc.h order
KC_F32, KC_F16, KC_BF16, KC_F64, KC_I64, KC_I32, KC_I16, KC_I8 = range(1, 9)
KC_U64, KC_U32, KC_U16, KC_U8, KC_BOOL = range(9, 14)

_NP_OF = {KC_F32: np.float32, KC_F16: np.float16, KC_F64: np.float64, KC_I64: np.int64,
          KC_I32: np.int32, KC_I16: np.int16, KC_I8: np.int8, KC_U64: np.uint64,
          KC_U32: np.uint32, KC_U16: np.uint16, KC_U8: np.uint8, KC_BOOL: np.bool_}
_KC_OF = {np.dtype(v): k for k, v in _NP_OF.items()}


class kc_tensor_desc(C.Structure):
    _fields_ = [("name", C.c_char_p), ("dtype", C.c_int), ("rank", C.c_int),
                ("dims", C.c_int64 * KC_MAX_RANK), ("data", C.c_void_p)]


class kc_compile_options(C.Structure):
    _fields_ = [("target", C.c_char_p), ("passes", C.c_char_p), ("threads", C.c_int)]


class kc_node_profile(C.Structure):
    _fields_ = [("node", C.c_uint32), ("value", C.c_uint32), ("op", C.c_char_p),
                ("loc", C.c_char_p), ("calls", C.c_uint64), ("ns", C.c_uint64),
                ("min_ns", C.c_uint64)]


_libc = C.CDLL(None)
_libc.free.argtypes = [C.c_void_p]
_libc.free.restype = None


class KerncError(RuntimeError):
    pass


def load(path):
    """Open libkernc.so at path and declare the functions used here."""
    lib = C.CDLL(os.path.abspath(path))
    P = C.c_void_p
    sigs = {
        "kc_context_new": (P, []),
        "kc_context_free": (None, [P]),
        "kc_last_error": (C.c_char_p, [P]),
        "kc_status_str": (C.c_char_p, [C.c_int]),
        "kc_onnx_load": (C.c_int, [P, C.c_char_p, C.POINTER(P)]),
        "kc_graph_free": (None, [P]),
        "kc_graph_num_outputs": (C.c_uint32, [P]),
        "kc_compile": (C.c_int, [P, P, C.POINTER(kc_compile_options), C.POINTER(P)]),
        "kc_run": (C.c_int, [P, C.POINTER(kc_tensor_desc), C.c_uint32,
                             C.POINTER(kc_tensor_desc), C.c_uint32]),
        "kc_module_free": (None, [P]),
        "kc_module_graph": (P, [P]),
        "kc_module_set_threads": (C.c_int, [P, C.c_int]),
        "kc_module_peak_bytes": (C.c_size_t, [P]),
        "kc_graph_print_str": (P, [P]),  # malloc'd char *: a void * so that it can be freed
        "kc_module_set_profile": (C.c_int, [P, C.c_int]),
        "kc_module_profile": (C.c_uint32, [P, C.POINTER(kc_node_profile), C.c_uint32]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


class Module:
    """A compiled model: kc_context + kc_module (the loaded graph is freed after compiling)."""

    def __init__(self, lib, ctx, mod, nout):
        self.lib, self.ctx, self.mod, self.nout = lib, ctx, mod, nout
        self._outs = (kc_tensor_desc * nout)()

    def _check(self, status, what):
        if status != 0:
            msg = self.lib.kc_last_error(self.ctx).decode(errors="replace")
            raise KerncError("%s: %s: %s" % (what, self.lib.kc_status_str(status).decode(), msg))

    @classmethod
    def from_onnx(cls, lib, path, threads=0, passes=None, target=None):
        """kc_onnx_load + kc_compile. Raises KerncError with kernc's message on failure."""
        ctx = lib.kc_context_new()
        if not ctx:
            raise KerncError("kc_context_new: out of memory")
        self = cls(lib, ctx, None, 0)
        g = C.c_void_p()
        try:
            self._check(lib.kc_onnx_load(ctx, os.fsencode(path), C.byref(g)), "kc_onnx_load")
            opts = kc_compile_options(target.encode() if target else None,
                                      passes.encode() if passes is not None else None, threads)
            mod = C.c_void_p()
            self._check(lib.kc_compile(ctx, g, C.byref(opts), C.byref(mod)), "kc_compile")
            self.mod = mod
            self.nout = lib.kc_graph_num_outputs(lib.kc_module_graph(mod))
            self._outs = (kc_tensor_desc * self.nout)()
        except BaseException:
            self.close()
            raise
        finally:
            lib.kc_graph_free(g)
        return self

    def set_threads(self, n):
        self._check(self.lib.kc_module_set_threads(self.mod, n), "kc_module_set_threads")

    def graph_text(self):
        """The text IR of the graph the module runs (after its passes)."""
        p = self.lib.kc_graph_print_str(self.lib.kc_module_graph(self.mod))
        if not p:
            raise KerncError("kc_graph_print_str failed")
        try:
            return C.string_at(p).decode()
        finally:
            _libc.free(C.c_void_p(p))

    def peak_bytes(self):
        return self.lib.kc_module_peak_bytes(self.mod)

    def set_profile(self, on):
        """Per-kernel timing on (counters restart at zero) or off (kc_module_set_profile)."""
        self._check(self.lib.kc_module_set_profile(self.mod, 1 if on else 0),
                    "kc_module_set_profile")

    def profile(self):
        """[{node, value, op, loc, calls, ns, min_ns}] of every kernel (kc_module_profile)."""
        n = self.lib.kc_module_profile(self.mod, None, 0)
        buf = (kc_node_profile * max(n, 1))()
        n = self.lib.kc_module_profile(self.mod, buf, n)
        return [{"node": p.node, "value": p.value, "op": p.op.decode(),
                 "loc": p.loc.decode(errors="replace") if p.loc else None, "calls": p.calls,
                 "ns": p.ns, "min_ns": p.min_ns} for p in buf[:n]]

    def run(self, inputs, copy=True):
        """Run on {name: array} (or a list, by position); returns the outputs as numpy arrays,
        copied unless copy=False (then they alias the module's memory until the next run)."""
        items = list(inputs.items()) if isinstance(inputs, dict) else [(None, a) for a in inputs]
        arrs = [np.ascontiguousarray(a) for _, a in items]
        descs = (kc_tensor_desc * len(arrs))()
        for d, (name, _), a in zip(descs, items, arrs):
            if a.dtype not in _KC_OF or a.ndim > KC_MAX_RANK:
                raise KerncError("input %s: dtype %s / rank %d not supported" % (name, a.dtype, a.ndim))
            d.name = name.encode() if name else None
            d.dtype, d.rank = _KC_OF[a.dtype], a.ndim
            for i, n in enumerate(a.shape):
                d.dims[i] = n
            d.data = a.ctypes.data
        self._check(self.lib.kc_run(self.mod, descs, len(arrs), self._outs, self.nout), "kc_run")
        res = []
        for o in self._outs:
            shape = tuple(o.dims[: o.rank])
            dt = np.dtype(_NP_OF[o.dtype])
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            buf = (C.c_char * n).from_address(o.data) if n else bytearray()
            a = np.frombuffer(buf, dtype=dt).reshape(shape)
            res.append(a.copy() if copy else a)
        return res

    def close(self):
        if self.mod:
            self.lib.kc_module_free(self.mod)
            self.mod = None
        if self.ctx:
            self.lib.kc_context_free(self.ctx)
            self.ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: ctypes or the library may be gone already
            pass
