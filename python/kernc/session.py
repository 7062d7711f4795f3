"""kernc/session.py - kernc.Session: autoregressive decoding of a causal model (kc_session_*): the
decode step kernc derives from a plain model (token ids in, logits out) with a KV cache, the
sequences it holds, and generation on top (kc_generate_batch / kc_generate_beams: greedy,
sampling, beam search).

One thread at a time uses a session (kernc.h). Sequences are ints; decode() appends tokens to
one and runs them (prefill: many, decode: one). For timed loops, entry() builds a step's
kc_decode_entry once and decode_entry() runs it without converting arguments again.
"""
import ctypes as C

import numpy as np

from . import _graph, _lib

I64P = C.POINTER(C.c_int64)


class Session(_lib.Owner):
    """A decoding session over the causal model at model (a path, as kernc.compile takes).
    Contiguous cache (paged=False): max_len tokens for each of max_seqs sequences; paged: a pool
    of max_tokens tokens in blocks of block_size. 0 means kernc's default."""

    def __init__(self, model, threads=0, max_len=0, paged=False, max_seqs=0, max_tokens=0,
                 block_size=0, target=None, opt_level=None):
        self._ctx = _lib.Context(opt_level)
        self._s = None
        try:
            L = self._ctx.lib
            with _graph.Loaded(self._ctx, model) as g:
                opts = _lib.kc_session_options(_lib.enc(target), int(threads), 1 if paged else 0,
                                               block_size, max_tokens, max_len, max_seqs)
                s = C.c_void_p()
                self._ctx.check(L.kc_session_new(self._ctx.ptr, g, C.byref(opts), C.byref(s)),
                                "kc_session_new")
                self._s = s
        except BaseException:
            self.close()
            raise

    def _check(self, status, what):
        self._ctx.check(status, what)

    @property
    def _lib(self):
        return self._ctx.lib

    @property
    def vocab(self):
        """Logits per token."""
        return self._lib.kc_session_vocab(self._s)

    @property
    def cache_bytes_per_token(self):
        """Cache bytes one token takes (all layers, K and V)."""
        return self._lib.kc_session_cache_bytes_per_token(self._s)

    def seq_new(self):
        """A new empty sequence."""
        seq = C.c_int32()
        self._check(self._lib.kc_session_seq_new(self._s, C.byref(seq)), "kc_session_seq_new")
        return seq.value

    def seq_fork(self, src):
        """A new sequence sharing src's cache (nothing copied)."""
        seq = C.c_int32()
        self._check(self._lib.kc_session_seq_fork(self._s, src, C.byref(seq)),
                    "kc_session_seq_fork")
        return seq.value

    def seq_free(self, seq):
        self._lib.kc_session_seq_free(self._s, seq)

    def seq_len(self, seq):
        """Tokens in seq (-1: no such sequence)."""
        return self._lib.kc_session_seq_len(self._s, seq)

    def truncate(self, seq, n):
        """Keep the first n tokens of seq."""
        self._check(self._lib.kc_session_seq_truncate(self._s, seq, n), "kc_session_seq_truncate")

    def entry(self, seq, tokens, out=None, all=False):
        """A kc_decode_entry for decode_entry(): tokens a contiguous int64 array and out None or
        a contiguous float32 array of vocab floats (ntokens * vocab when all), both kept alive
        by the caller."""
        if tokens.dtype != np.int64 or not tokens.flags.c_contiguous:
            raise ValueError("tokens must be a contiguous int64 array")
        e = _lib.kc_decode_entry(seq, tokens.size, tokens.ctypes.data_as(I64P), None,
                                 1 if all else 0)
        if out is not None:
            need = (tokens.size if all else 1) * self.vocab
            if out.dtype != np.float32 or not out.flags.c_contiguous or out.size < need:
                raise ValueError("out must be a contiguous float32 array of %d floats" % need)
            e.logits = out.ctypes.data_as(C.POINTER(C.c_float))
        return e

    def decode_entry(self, e):
        """kc_session_decode of one prepared entry."""
        self._check(self._lib.kc_session_decode(self._s, C.byref(e), 1), "kc_session_decode")

    def decode(self, seq, tokens, out=None, all=False, logits=True):
        """Append tokens to seq and run them; returns the logits of the last token (float32
        [vocab]), or of every new token when all ([ntokens, vocab]), written into out when
        given; logits=False asks for none (returns None)."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64).reshape(-1)
        if logits and out is None:
            out = np.empty((tokens.size, self.vocab) if all else (self.vocab,), np.float32)
        self.decode_entry(self.entry(seq, tokens, out if logits else None, all))
        return out if logits else None

    def generate(self, prompt_ids, max_new=32, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                 repetition_penalty=1.0, seed=0, eos=None, num_beams=1, length_penalty=1.0,
                 early_stopping=False):
        """The tokens generated after prompt_ids (a list of ids; or a list of such lists, which
        run as one batch and give a list of lists). Greedy when temperature is 0, else sampling
        with the filters given (as Hugging Face transformers' generate(); prompt i of a batch
        draws with seed + i); beam search when num_beams > 1 (one prompt). eos: an id or ids
        that end a sequence (kept in its output)."""
        batch = len(prompt_ids) > 0 and np.ndim(prompt_ids[0]) > 0
        prompts = [np.ascontiguousarray(p, dtype=np.int64).reshape(-1)
                   for p in (prompt_ids if batch else [prompt_ids])]
        o = _lib.kc_generate_options()
        self._lib.kc_generate_defaults(C.byref(o))
        o.max_new, o.temperature, o.top_k, o.top_p = max_new, temperature, top_k, top_p
        o.min_p, o.repetition_penalty, o.seed = min_p, repetition_penalty, seed
        o.num_beams, o.length_penalty = num_beams, length_penalty
        o.early_stopping = {False: 0, True: 1, "never": 2}[early_stopping]
        eos_ids = np.array([] if eos is None else np.ravel(eos), np.int64)
        if eos_ids.size:
            o.eos, o.neos = eos_ids.ctypes.data_as(I64P), eos_ids.size
        if num_beams > 1:
            if len(prompts) != 1:
                raise ValueError("beam search takes one prompt")
            out = np.zeros(max_new + 1, np.int64)
            n, score = C.c_int64(), C.c_double()
            self._check(self._lib.kc_generate_beams(
                self._s, prompts[0].ctypes.data_as(I64P), prompts[0].size, C.byref(o),
                out.ctypes.data_as(I64P), C.byref(n), C.byref(score)), "kc_generate_beams")
            res = [out[: n.value].tolist()]
        else:
            outs = [np.zeros(max(max_new, 1), np.int64) for _ in prompts]
            pp = (I64P * len(prompts))(*[p.ctypes.data_as(I64P) for p in prompts])
            npp = (C.c_int64 * len(prompts))(*[p.size for p in prompts])
            op = (I64P * len(prompts))(*[a.ctypes.data_as(I64P) for a in outs])
            nout = (C.c_int64 * len(prompts))()
            self._check(self._lib.kc_generate_batch(self._s, len(prompts), pp, npp, C.byref(o),
                                                    op, nout), "kc_generate_batch")
            res = [a[: nout[i]].tolist() for i, a in enumerate(outs)]
        return res if batch else res[0]

    def _module(self):
        return self._lib.kc_session_module(self._s)

    def set_profile(self, on):
        """Per-kernel timing of the decode step on (counters restart at zero) or off."""
        self._check(self._lib.kc_module_set_profile(self._module(), 1 if on else 0),
                    "kc_module_set_profile")

    def profile(self):
        """The decode step's per-kernel times (as Model.profile)."""
        return _lib.profile_of(self._module())

    def graph_text(self):
        """The text IR of the compiled decode step."""
        return _lib.graph_text(self._lib.kc_module_graph(self._module()))

    def _release(self):
        if getattr(self, "_s", None):
            self._lib.kc_session_free(self._s)
            self._s = None
