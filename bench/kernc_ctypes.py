"""bench/kernc_ctypes.py - a small ctypes binding to libkernc.so for the benchmarks: load an ONNX
model, compile it for the CPU, run it on numpy arrays, read the memory plan's peak; and decoding
sessions (kc_session_*: the decode step with a KV cache kernc derives from a plain causal model).

The structs mirror include/kernc.h (kc_tensor_desc, kc_compile_options, kc_node_profile,
kc_session_options, kc_decode_entry) and must change with it; only the calls the benchmarks need
are bound. Outputs of kc_run point into memory the module owns (valid until the next run), so
Module.run copies them unless asked not to.

    lib = load("build-bench/libkernc.so")
    with Module.from_onnx(lib, "model.onnx", threads=2) as m:
        outs = m.run({"input_ids": ids})          # list of numpy arrays, graph output order
    with Session.from_onnx(lib, "gpt2.onnx", threads=2, max_len=1024) as s:
        seq = s.seq_new()
        s.decode(seq, prompt_ids, logits)         # prefill; logits: float32 [vocab] (last token)
        s.decode(seq, [tok], logits)              # one decode step
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


class kc_session_options(C.Structure):
    _fields_ = [("target", C.c_char_p), ("threads", C.c_int), ("paged", C.c_int),
                ("block_size", C.c_int64), ("max_tokens", C.c_int64), ("max_len", C.c_int64),
                ("max_seqs", C.c_int32)]


class kc_decode_entry(C.Structure):
    _fields_ = [("seq", C.c_int32), ("ntokens", C.c_int32), ("tokens", C.POINTER(C.c_int64)),
                ("logits", C.POINTER(C.c_float)), ("all", C.c_int)]


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
        "kc_session_new": (C.c_int, [P, P, C.POINTER(kc_session_options), C.POINTER(P)]),
        "kc_session_free": (None, [P]),
        "kc_session_seq_new": (C.c_int, [P, C.POINTER(C.c_int32)]),
        "kc_session_seq_free": (None, [P, C.c_int32]),
        "kc_session_seq_len": (C.c_int64, [P, C.c_int32]),
        "kc_session_seq_truncate": (C.c_int, [P, C.c_int32, C.c_int64]),
        "kc_session_decode": (C.c_int, [P, C.POINTER(kc_decode_entry), C.c_int32]),
        "kc_session_vocab": (C.c_int64, [P]),
        "kc_session_cache_bytes_per_token": (C.c_int64, [P]),
        "kc_session_module": (P, [P]),
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
        return _profile_of(self.lib, self.mod)

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


def _profile_of(lib, mod):
    n = lib.kc_module_profile(mod, None, 0)
    buf = (kc_node_profile * max(n, 1))()
    n = lib.kc_module_profile(mod, buf, n)
    return [{"node": p.node, "value": p.value, "op": p.op.decode(),
             "loc": p.loc.decode(errors="replace") if p.loc else None, "calls": p.calls,
             "ns": p.ns, "min_ns": p.min_ns} for p in buf[:n]]


class Session:
    """A decoding session (kc_session): kc_onnx_load + kc_session_new, the graph freed after.
    One thread at a time (as kernc.h says). Sequences are ints; decode() appends tokens to one
    sequence and runs them (prefill: many, decode: one)."""

    def __init__(self, lib, ctx):
        self.lib, self.ctx, self.s = lib, ctx, None
        self._entry = kc_decode_entry()
        self._tok = np.zeros(1, np.int64)

    def _check(self, status, what):
        if status != 0:
            msg = self.lib.kc_last_error(self.ctx).decode(errors="replace")
            raise KerncError("%s: %s: %s" % (what, self.lib.kc_status_str(status).decode(), msg))

    @classmethod
    def from_onnx(cls, lib, path, threads=0, paged=False, max_len=0, max_seqs=0, max_tokens=0,
                  block_size=0, target=None):
        ctx = lib.kc_context_new()
        if not ctx:
            raise KerncError("kc_context_new: out of memory")
        self = cls(lib, ctx)
        g = C.c_void_p()
        try:
            self._check(lib.kc_onnx_load(ctx, os.fsencode(path), C.byref(g)), "kc_onnx_load")
            opts = kc_session_options(target.encode() if target else None, threads,
                                      1 if paged else 0, block_size, max_tokens, max_len, max_seqs)
            s = C.c_void_p()
            self._check(lib.kc_session_new(ctx, g, C.byref(opts), C.byref(s)), "kc_session_new")
            self.s = s
        except BaseException:
            self.close()
            raise
        finally:
            lib.kc_graph_free(g)
        return self

    def vocab(self):
        return self.lib.kc_session_vocab(self.s)

    def cache_bytes_per_token(self):
        return self.lib.kc_session_cache_bytes_per_token(self.s)

    def seq_new(self):
        seq = C.c_int32()
        self._check(self.lib.kc_session_seq_new(self.s, C.byref(seq)), "kc_session_seq_new")
        return seq.value

    def seq_free(self, seq):
        self.lib.kc_session_seq_free(self.s, seq)

    def seq_len(self, seq):
        return self.lib.kc_session_seq_len(self.s, seq)

    def truncate(self, seq, n):
        self._check(self.lib.kc_session_seq_truncate(self.s, seq, n), "kc_session_seq_truncate")

    def entry(self, seq, tokens, logits=None, all=False):
        """A kc_decode_entry for decode_entry(): tokens an int64 array (kept alive by the
        caller), logits None or a float32 array of vocab (or ntokens * vocab when all) floats.
        Building it once keeps ctypes' argument conversion out of timed steps."""
        assert tokens.dtype == np.int64 and tokens.flags.c_contiguous
        e = kc_decode_entry(seq, tokens.size, tokens.ctypes.data_as(C.POINTER(C.c_int64)), None,
                            1 if all else 0)
        if logits is not None:
            need = (tokens.size if all else 1) * self.vocab()
            assert logits.dtype == np.float32 and logits.flags.c_contiguous and logits.size >= need
            e.logits = logits.ctypes.data_as(C.POINTER(C.c_float))
        return e

    def decode_entry(self, e):
        """kc_session_decode on one prepared entry."""
        self._check(self.lib.kc_session_decode(self.s, C.byref(e), 1), "kc_session_decode")

    def decode(self, seq, tokens, logits=None, all=False):
        tokens = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1)
        self.decode_entry(self.entry(seq, tokens, logits, all))

    def module(self):
        """The session's compiled decode step (kc_session_module), for profiling."""
        return C.c_void_p(self.lib.kc_session_module(self.s))

    def set_profile(self, on):
        m = self.module()
        self._check(self.lib.kc_module_set_profile(m, 1 if on else 0), "kc_module_set_profile")

    def profile(self):
        return _profile_of(self.lib, self.module())

    def close(self):
        if self.s:
            self.lib.kc_session_free(self.s)
            self.s = None
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
        except Exception:  # interpreter shutdown
            pass
