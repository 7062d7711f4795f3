"""kernc/_lib.py - the one place that knows libkernc's C API: finding and opening the shared
library, the ctypes mirrors of include/kernc.h's structs, every function's signature, the dtype
tables, and the error raised when a call fails.

The structs here must change with include/kernc.h (they are declared field by field in its
order). Where the library is looked for, in order:
  1. $KERNC_LIBRARY, a path to libkernc.so (an error when it is set but cannot be opened);
  2. the dynamic loader's path: "libkernc.so.0" (the versioned soname of kernc 0.x), then
     "libkernc.so".
"""
import ctypes as C
import os
import threading

import numpy as np

KC_MAX_RANK = 8

# enum kc_dtype, in include/kernc.h order
(KC_F32, KC_F16, KC_BF16, KC_F64, KC_I64, KC_I32, KC_I16, KC_I8, KC_U64, KC_U32, KC_U16, KC_U8,
 KC_BOOL) = range(1, 14)

NP_OF = {KC_F32: np.float32, KC_F16: np.float16, KC_F64: np.float64, KC_I64: np.int64,
         KC_I32: np.int32, KC_I16: np.int16, KC_I8: np.int8, KC_U64: np.uint64,
         KC_U32: np.uint32, KC_U16: np.uint16, KC_U8: np.uint8, KC_BOOL: np.bool_}
KC_OF = {np.dtype(v): k for k, v in NP_OF.items()}

LIBRARY_ENV = "KERNC_LIBRARY"
SONAMES = ("libkernc.so.0", "libkernc.so")


class KernCError(RuntimeError):
    """A kernc call failed. str(e) is "<call>: <status>: <kernc's message>"; e.status is the
    kc_status name ("shape error", ...) and e.message kernc's own message (kc_last_error)."""

    def __init__(self, text, status=None, message=None):
        super().__init__(text)
        self.status, self.message = status, message if message is not None else text


class LibraryNotFoundError(KernCError, OSError):
    """libkernc could not be opened (see the message for what to set)."""


# ---- structs (include/kernc.h) --------------------------------------------------------------

class kc_val(C.Structure):
    _fields_ = [("id", C.c_uint32)]


class kc_options(C.Structure):
    _fields_ = [("threads", C.c_int), ("verify_each", C.c_int), ("log_level", C.c_int),
                ("cuda_cache_dir", C.c_char_p), ("memory_limit", C.c_uint64),
                ("opt_level", C.c_int)]


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


ON_TOKEN = C.CFUNCTYPE(None, C.c_void_p, C.c_int32, C.c_int64)


class kc_generate_options(C.Structure):
    _fields_ = [("max_new", C.c_int64), ("temperature", C.c_double), ("top_k", C.c_int32),
                ("top_p", C.c_double), ("min_p", C.c_double),
                ("repetition_penalty", C.c_double), ("seed", C.c_uint64),
                ("num_beams", C.c_int32), ("length_penalty", C.c_double),
                ("early_stopping", C.c_int32), ("eos", C.POINTER(C.c_int64)),
                ("neos", C.c_int32), ("stop", C.POINTER(C.c_int64)),
                ("stop_len", C.POINTER(C.c_int32)), ("nstop", C.c_int32),
                ("on_token", ON_TOKEN), ("user", C.c_void_p)]


KC_OPTIM_ADAMW, KC_OPTIM_SGD = 0, 1
KC_CKPT_NONE, KC_CKPT_SQRT, KC_CKPT_MARKED = 0, 1, 2


class kc_train_options(C.Structure):
    _fields_ = [("target", C.c_char_p), ("threads", C.c_int), ("optimizer", C.c_int),
                ("beta1", C.c_double), ("beta2", C.c_double), ("eps", C.c_double),
                ("weight_decay", C.c_double), ("momentum", C.c_double),
                ("clip_norm", C.c_double), ("checkpoint", C.c_int),
                ("marked", C.POINTER(C.c_char_p)), ("nmarked", C.c_int)]


class kc_export_options(C.Structure):
    _fields_ = [("name", C.c_char_p), ("passes", C.c_char_p), ("cc", C.c_char_p),
                ("runtime", C.c_char_p), ("source", C.c_char_p), ("target", C.c_char_p),
                ("cuda_archs", C.c_char_p), ("cpu", C.c_char_p)]


# ---- functions ------------------------------------------------------------------------------

P, I, U32, I32, I64, S = C.c_void_p, C.c_int, C.c_uint32, C.c_int32, C.c_int64, C.c_char_p
PP = C.POINTER(C.c_void_p)
DESCS = C.POINTER(kc_tensor_desc)
STRS = C.POINTER(C.c_char_p)
SIGNATURES = {
    "kc_status_str": (S, [I]),
    "kc_context_new": (P, []),
    "kc_context_free": (None, [P]),
    "kc_context_options": (C.POINTER(kc_options), [P]),
    "kc_last_error": (S, [P]),
    "kc_graph_free": (None, [P]),
    "kc_graph_num_inputs": (U32, [P]),
    "kc_graph_num_outputs": (U32, [P]),
    "kc_graph_input": (kc_val, [P, U32]),
    "kc_graph_output": (kc_val, [P, U32]),
    "kc_graph_input_name": (S, [P, U32]),
    "kc_graph_output_name": (S, [P, U32]),
    "kc_val_dtype": (I, [P, kc_val]),
    "kc_val_rank": (I, [P, kc_val]),
    "kc_val_dims": (None, [P, kc_val, C.POINTER(C.c_int64)]),
    "kc_dim_str": (S, [P, I64, C.c_char_p, C.c_size_t]),
    "kc_dtype_name": (S, [I]),
    "kc_input": (kc_val, [P, S, I, I, C.POINTER(C.c_int64)]),
    "kc_output": (None, [P, kc_val, S]),
    "kc_cross_entropy": (kc_val, [P, kc_val, kc_val, I64]),
    "kc_graph_status": (I, [P]),
    "kc_graph_print_str": (P, [P]),  # malloc'd char *: a void * so that it can be freed
    "kc_graph_parse_file": (I, [P, S, PP]),
    "kc_onnx_load": (I, [P, S, PP]),
    "kc_compile": (I, [P, P, C.POINTER(kc_compile_options), PP]),
    "kc_run": (I, [P, DESCS, U32, DESCS, U32]),
    "kc_module_free": (None, [P]),
    "kc_module_graph": (P, [P]),
    "kc_module_set_threads": (I, [P, I]),
    "kc_module_peak_bytes": (C.c_size_t, [P]),
    "kc_module_set_profile": (I, [P, I]),
    "kc_module_profile": (U32, [P, C.POINTER(kc_node_profile), U32]),
    "kc_export": (I, [P, P, C.POINTER(kc_export_options), S, S]),
    "kc_session_new": (I, [P, P, C.POINTER(kc_session_options), PP]),
    "kc_session_free": (None, [P]),
    "kc_session_seq_new": (I, [P, C.POINTER(I32)]),
    "kc_session_seq_fork": (I, [P, I32, C.POINTER(I32)]),
    "kc_session_seq_free": (None, [P, I32]),
    "kc_session_seq_len": (I64, [P, I32]),
    "kc_session_seq_truncate": (I, [P, I32, I64]),
    "kc_session_decode": (I, [P, C.POINTER(kc_decode_entry), I32]),
    "kc_session_vocab": (I64, [P]),
    "kc_session_cache_bytes_per_token": (I64, [P]),
    "kc_session_module": (P, [P]),
    "kc_generate_defaults": (None, [C.POINTER(kc_generate_options)]),
    "kc_generate_batch": (I, [P, I32, C.POINTER(C.POINTER(C.c_int64)), C.POINTER(C.c_int64),
                              C.POINTER(kc_generate_options), C.POINTER(C.POINTER(C.c_int64)),
                              C.POINTER(C.c_int64)]),
    "kc_generate_beams": (I, [P, C.POINTER(C.c_int64), I64, C.POINTER(kc_generate_options),
                              C.POINTER(C.c_int64), C.POINTER(C.c_int64),
                              C.POINTER(C.c_double)]),
    "kc_train_defaults": (None, [C.POINTER(kc_train_options)]),
    "kc_trainer_new": (I, [P, P, S, I, STRS, C.POINTER(kc_train_options), PP]),
    "kc_trainer_free": (None, [P]),
    "kc_trainer_accumulate": (I, [P, DESCS, U32, C.POINTER(C.c_double)]),
    "kc_trainer_apply": (I, [P, C.c_double, I64]),
    "kc_trainer_step": (I, [P, DESCS, U32, C.c_double, I64, C.POINTER(C.c_double)]),
    "kc_trainer_num_params": (U32, [P]),
    "kc_trainer_param": (I, [P, U32, C.POINTER(kc_tensor_desc)]),
    "kc_trainer_grad_norm": (C.c_double, [P]),
    "kc_trainer_steps": (I64, [P]),
    "kc_trainer_save": (I, [P, S]),
    "kc_trainer_load": (I, [P, S]),
    "kc_trainer_module": (P, [P]),
}
# Declared when the library has them (newer than some builds this package may meet).
OPTIONAL = {
    "kc_version": (S, []),
    "kc_graph_dump": (I, [P, S, S, I, I, C.POINTER(C.c_void_p)]),
}

_lock = threading.Lock()
_lib = None
_path = None


def _open():
    env = os.environ.get(LIBRARY_ENV)
    if env:
        try:
            return C.CDLL(os.path.abspath(env)), os.path.abspath(env)
        except OSError as e:
            raise LibraryNotFoundError(
                "kernc: cannot open %s=%s: %s" % (LIBRARY_ENV, env, e)) from None
    errs = []
    for name in SONAMES:
        try:
            return C.CDLL(name), name
        except OSError as e:
            errs.append(str(e))
    raise LibraryNotFoundError(
        "kernc: libkernc not found (tried %s on the loader's path: %s). Set %s to the path of "
        "libkernc.so (a build tree's build/libkernc.so, or an installed prefix's "
        "lib/libkernc.so.0), or install kernc where the dynamic loader finds it (cmake --install, "
        "then ldconfig or LD_LIBRARY_PATH)." % (", ".join(SONAMES), "; ".join(errs), LIBRARY_ENV))


def lib():
    """The opened libkernc with every signature declared (opened on first use)."""
    global _lib, _path
    with _lock:
        if _lib is None:
            handle, path = _open()
            for name, (res, args) in SIGNATURES.items():
                try:
                    f = getattr(handle, name)
                except AttributeError:
                    raise LibraryNotFoundError(
                        "kernc: %s has no %s: it is not a libkernc this package can use"
                        % (path, name)) from None
                f.restype, f.argtypes = res, args
            for name, (res, args) in OPTIONAL.items():
                f = getattr(handle, name, None)
                if f is not None:
                    f.restype, f.argtypes = res, args
            _lib, _path = handle, path
        return _lib


def library_path():
    """What the library was opened as: the path from $KERNC_LIBRARY or the soname found."""
    lib()
    return _path


def has(name):
    """Whether the opened library exports the optional function name."""
    return getattr(lib(), name, None) is not None


_libc = C.CDLL(None)
_libc.free.argtypes = [C.c_void_p]
_libc.free.restype = None


def take_string(p):
    """The text of a malloc'd char * from the library, freed."""
    try:
        return C.string_at(p).decode()
    finally:
        _libc.free(C.c_void_p(p))


def enc(s):
    """A str (or path-like) as the bytes a const char * takes; None stays NULL."""
    return None if s is None else os.fsencode(s)


class Context:
    """A kc_context, owned: the error messages of the objects made with it go there."""

    def __init__(self, opt_level=None):
        self.lib = lib()
        self.ptr = self.lib.kc_context_new()
        if not self.ptr:
            raise KernCError("kc_context_new: out of memory")
        if opt_level is not None:
            self.lib.kc_context_options(self.ptr).contents.opt_level = int(opt_level)

    def check(self, status, what):
        """Raise KernCError with kernc's message when status is not KC_OK."""
        if status != 0:
            name = self.lib.kc_status_str(status).decode()
            msg = self.lib.kc_last_error(self.ptr).decode(errors="replace")
            raise KernCError("%s: %s: %s" % (what, name, msg), name, msg)

    def close(self):
        if self.ptr:
            self.lib.kc_context_free(self.ptr)
            self.ptr = None


class Owner:
    """Base of Model, Session and Trainer: each owns a Context (self._ctx) and one kernc handle,
    freed by its _release(). close(), leaving a with block or garbage collection frees the
    handle, then the context; closing twice is fine."""
    _ctx = None

    def _release(self):
        raise NotImplementedError

    def close(self):
        self._release()
        if self._ctx:
            self._ctx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: ctypes or the library may be gone already
            pass


def np_dtype(kc):
    """The numpy dtype of a kc_dtype code; None where numpy has none (bf16)."""
    t = NP_OF.get(kc)
    return np.dtype(t) if t is not None else None


def fill_desc(d, name, a):
    """Point kc_tensor_desc d at the contiguous numpy array a (kept alive by the caller)."""
    kc = KC_OF.get(a.dtype)
    if kc is None or a.ndim > KC_MAX_RANK:
        raise KernCError("input %s: dtype %s of rank %d is not one kernc takes"
                         % (name if name is not None else "?", a.dtype, a.ndim))
    d.name = enc(name)
    d.dtype, d.rank = kc, a.ndim
    for i, n in enumerate(a.shape):
        d.dims[i] = n
    d.data = a.ctypes.data


def make_descs(feeds):
    """kc_tensor_desc array of feeds ({name: array} or a list by position), and the contiguous
    arrays it points into (keep them alive while the descriptors are used)."""
    items = list(feeds.items()) if isinstance(feeds, dict) else [(None, a) for a in feeds]
    arrs = [np.ascontiguousarray(a) for _, a in items]
    descs = (kc_tensor_desc * max(len(arrs), 1))()
    for d, (name, _), a in zip(descs, items, arrs):
        fill_desc(d, name, a)
    return descs, len(arrs), arrs


def array_of(d, copy=True, name=None):
    """A numpy array of the tensor kc_tensor_desc d describes (a copy unless copy=False, then
    it aliases the library's memory)."""
    dt = np_dtype(d.dtype)
    if dt is None:
        raise KernCError("%s: numpy has no dtype for kernc's %s"
                         % (name or "output", lib().kc_dtype_name(d.dtype).decode()))
    shape = tuple(d.dims[: d.rank])
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = (C.c_char * n).from_address(d.data) if n else bytearray()
    a = np.frombuffer(buf, dtype=dt).reshape(shape)
    return a.copy() if copy else a


def profile_of(mod):
    """[{node, value, op, loc, calls, ns, min_ns}] of every kernel of kc_module mod."""
    L = lib()
    n = L.kc_module_profile(mod, None, 0)
    buf = (kc_node_profile * max(n, 1))()
    n = L.kc_module_profile(mod, buf, n)
    return [{"node": p.node, "value": p.value, "op": p.op.decode(),
             "loc": p.loc.decode(errors="replace") if p.loc else None, "calls": p.calls,
             "ns": p.ns, "min_ns": p.min_ns} for p in buf[:n]]


def graph_text(g):
    """The text IR of kc_graph g."""
    p = lib().kc_graph_print_str(g)
    if not p:
        raise KernCError("kc_graph_print_str: cannot print the graph")
    return take_string(p)
