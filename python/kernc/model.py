"""kernc/model.py - kernc.compile and kernc.Model: a model compiled for a target (kc_compile), run
on numpy arrays the way ONNX Runtime's InferenceSession is (inputs and outputs as NodeArgs, run
with a feed dict), and exported ahead of time to a shared library (kc_export).

A Model owns its kc_context and kc_module. The loaded graph is freed once the module is
compiled (the module keeps its own copy); export loads the source again. Runs may come from
several threads at once (kc_run allows it): each call has its own descriptors.
"""
import ctypes as C
import os
import time

from . import _graph, _lib
from ._lib import KernCError


class Model(_lib.Owner):
    """A compiled model; make one with kernc.compile."""

    def __init__(self, model, threads=0, target=None, passes=None, opt_level=None):
        self._source, self._target, self._passes = model, target, passes
        self._ctx = _lib.Context(opt_level)
        self._mod = None
        try:
            L = self._ctx.lib
            with _graph.Loaded(self._ctx, model) as g:
                self.inputs = _graph.inputs_of(L, g)
                self.outputs = _graph.outputs_of(L, g)
                opts = _lib.kc_compile_options(_lib.enc(target), _lib.enc(passes), int(threads))
                mod = C.c_void_p()
                self._ctx.check(L.kc_compile(self._ctx.ptr, g, C.byref(opts), C.byref(mod)),
                                "kc_compile")
                self._mod = mod
        except BaseException:
            self.close()
            raise
        self._names = [o.name for o in self.outputs]

    def _live(self):
        if not self._mod:
            raise KernCError("kernc.Model: used after close()")
        return self._mod

    def run(self, feeds, copy=True):
        """Run on feeds ({input name: array}, or a list of arrays by position); returns
        {output name: numpy array} in the model's output order. The arrays are copies unless
        copy=False: then they alias the module's memory for this thread, valid until this
        thread's next run of the model. A missing input, a wrong dtype or shape raises
        KernCError with kernc's message."""
        mod = self._live()
        descs, n, keep = _lib.make_descs(feeds)
        nout = len(self._names)
        outs = (_lib.kc_tensor_desc * max(nout, 1))()
        self._ctx.check(self._ctx.lib.kc_run(mod, descs, n, outs, nout), "kc_run")
        del keep
        return {name: _lib.array_of(o, copy, name) for name, o in zip(self._names, outs)}

    def set_threads(self, n):
        """Threads the runs use (<= 0: one per core)."""
        self._ctx.check(self._ctx.lib.kc_module_set_threads(self._live(), int(n)),
                        "kc_module_set_threads")

    @property
    def peak_bytes(self):
        """Bytes of the intermediate arena at its largest so far (the memory plan's peak)."""
        return self._ctx.lib.kc_module_peak_bytes(self._live())

    def set_profile(self, on):
        """Per-kernel timing on (the counters restart at zero) or off."""
        self._ctx.check(self._ctx.lib.kc_module_set_profile(self._live(), 1 if on else 0),
                        "kc_module_set_profile")

    def profile(self):
        """[{node, value, op, loc, calls, ns, min_ns}] of every kernel, in run order: the time
        spent in each since set_profile(True)."""
        return _lib.profile_of(self._live())

    def graph_text(self):
        """The text IR of the graph the module runs (after its passes)."""
        return _lib.graph_text(self._ctx.lib.kc_module_graph(self._live()))

    def export(self, path, name=None, header=None, target=None, passes=None, cc=None,
               runtime=None, cpu=None):
        """Compile the model ahead of time into the shared library path (which needs neither
        libkernc nor LLVM) and its C header (header; None: NAME.h next to path); returns the
        header's path. target and passes default to the model's own. cc (None: $CC, else "cc")
        links the library; runtime is kernc's runtime archive (None: $KERNC_RT, else the
        library's own choice). cpu: the CPU the kernels are for (None or "native": this one;
        "x86-64-v2", "x86-64-v3", "x86-64-v4" or an LLVM CPU name; a comma list or "multi":
        kernels for each level in one library, NAME_create picking the best this CPU runs)."""
        return export(self._source, path, name=name, header=header,
                      target=target if target is not None else self._target,
                      passes=passes if passes is not None else self._passes, cc=cc,
                      runtime=runtime, cpu=cpu)

    def _release(self):
        if getattr(self, "_mod", None):
            self._ctx.lib.kc_module_free(self._mod)
            self._mod = None


def compile(model, threads=0, target="cpu", passes=None, opt_level=None):
    """Compile model (a path to an .onnx or .kir file, ONNX bytes or an onnx.ModelProto) for
    target ("cpu" or "cuda") with the target's default pass pipeline, or passes ("a,b,c"; ""
    for none); threads 0: one per core. opt_level: LLVM's for the JIT'd CPU kernels (1..3, -1
    for -O0; None: $KERNC_OPT_LEVEL, else 3). Returns a kernc.Model."""
    return Model(model, threads=threads, target=target, passes=passes, opt_level=opt_level)


def export(model, path, name=None, header=None, target=None, passes=None, cc=None, runtime=None,
           cpu=None):
    """kc_export of model (as kernc.compile takes it) to the shared library path and its header;
    returns the header's path. See Model.export."""
    ctx = _lib.Context()
    try:
        cc = cc if cc is not None else os.environ.get("CC")
        runtime = runtime if runtime is not None else os.environ.get("KERNC_RT")
        src = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        opts = _lib.kc_export_options(_lib.enc(name), _lib.enc(passes), _lib.enc(cc),
                                      _lib.enc(runtime), _lib.enc(src), _lib.enc(target), None,
                                      _lib.enc(cpu))
        t0 = time.time()
        with _graph.Loaded(ctx, model) as g:
            ctx.check(ctx.lib.kc_export(ctx.ptr, g, C.byref(opts), _lib.enc(path),
                                        _lib.enc(header)), "kc_export")
        if header is not None:
            return os.fspath(header)
        d = os.path.dirname(os.path.abspath(path))
        if name is not None:
            return os.path.join(d, name + ".h")
        # kc_export named it after the library (libNAME.so: NAME, or model_NAME when NAME itself
        # is refused as a C prefix): the candidate it wrote just now
        stem = os.path.basename(os.fspath(path)).split(".")[0]
        stem = stem[3:] if stem.startswith("lib") else stem
        for cand in (os.path.join(d, stem + ".h"), os.path.join(d, "model_" + stem + ".h")):
            if os.path.exists(cand) and os.path.getmtime(cand) >= t0 - 1:
                return cand
        return None
    finally:
        ctx.close()
