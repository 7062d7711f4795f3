"""kernc/trainer.py - kernc.Trainer: training steps (kc_trainer_*) on a model whose loss is one of
its scalar outputs, or a cross-entropy kernc adds: loss="xent:LOGITS:LABELS" makes an i64 input
LABELS shaped like output LOGITS without its last axis and minimizes the mean cross-entropy of
LOGITS against it (kc_cross_entropy, labels equal to ignore_index skipped); labels_shape fixes
LABELS' shape (ints) instead.

The trainer owns the parameters (the float weights matching `params`), their gradient sums and
the optimizer state; step() is one forward + backward + update. One thread at a time uses it.
"""
import ctypes as C

from . import _graph, _lib
from ._lib import KernCError

_OPTIMIZERS = {"adamw": _lib.KC_OPTIM_ADAMW, "sgd": _lib.KC_OPTIM_SGD}
_CHECKPOINTS = {"none": _lib.KC_CKPT_NONE, "sqrt": _lib.KC_CKPT_SQRT}


def _add_xent(L, g, spec, ignore_index, labels_shape):
    """Add labels input and "loss" output to g for loss spec "xent:LOGITS:LABELS"; the loss's
    output name. The labels are shaped labels_shape, or None: as LOGITS without its last axis."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError("loss %r: expected an output name or 'xent:LOGITS:LABELS'" % spec)
    _, logits_name, labels_name = parts
    names = [L.kc_graph_output_name(g, i).decode() for i in range(L.kc_graph_num_outputs(g))]
    if logits_name not in names:
        raise KernCError("loss %r: the model has no output %r (outputs: %s)"
                         % (spec, logits_name, ", ".join(names)))
    logits = L.kc_graph_output(g, names.index(logits_name))
    if labels_shape is None:
        rank = L.kc_val_rank(g, logits) - 1
        dims = (C.c_int64 * (rank + 1))()
        L.kc_val_dims(g, logits, dims)
    else:
        rank = len(labels_shape)
        dims = (C.c_int64 * max(rank, 1))(*labels_shape)
    labels = L.kc_input(g, labels_name.encode(), _lib.KC_I64, rank, dims)
    loss = "loss" if "loss" not in names else "xent_loss"
    L.kc_output(g, L.kc_cross_entropy(g, logits, labels, ignore_index), loss.encode())
    return loss


class Trainer(_lib.Owner):
    """Train model (a path, as kernc.compile takes) to minimize loss (a scalar output's name, or
    "xent:LOGITS:LABELS") over the float weights matching the fnmatch globs params (default:
    all). optimizer "adamw" (betas, eps, weight_decay as torch.optim.AdamW; kernc's defaults
    0.9/0.999, 1e-8, 0.01) or "sgd" (momentum, weight_decay as torch.optim.SGD); lr the
    learning rate of step(); clip_norm > 0 clips by the global gradient norm; checkpoint "none"
    or "sqrt" (gradient checkpointing). labels_shape: the shape of the labels input "xent:"
    adds (None: LOGITS' without its last axis, symbolic dims included)."""

    def __init__(self, model, loss, params=("*",), optimizer="adamw", lr=1e-3, threads=0,
                 betas=None, eps=None, weight_decay=None, momentum=0.0, clip_norm=0.0,
                 checkpoint="none", ignore_index=-100, labels_shape=None, target=None,
                 opt_level=None):
        if isinstance(params, str):
            params = (params,)
        if optimizer not in _OPTIMIZERS:
            raise ValueError("optimizer must be one of %s" % ", ".join(_OPTIMIZERS))
        if checkpoint not in _CHECKPOINTS:
            raise ValueError("checkpoint must be one of %s" % ", ".join(_CHECKPOINTS))
        self.lr = lr
        self._ctx = _lib.Context(opt_level)
        self._t = None
        try:
            L = self._ctx.lib
            o = _lib.kc_train_options()
            L.kc_train_defaults(C.byref(o))
            o.target, o.threads, o.optimizer = _lib.enc(target), threads, _OPTIMIZERS[optimizer]
            o.checkpoint, o.momentum, o.clip_norm = _CHECKPOINTS[checkpoint], momentum, clip_norm
            if betas is not None:
                o.beta1, o.beta2 = betas
            if eps is not None:
                o.eps = eps
            if weight_decay is not None:
                o.weight_decay = weight_decay
            pats = (C.c_char_p * len(params))(*[p.encode() for p in params])
            with _graph.Loaded(self._ctx, model) as g:
                name = (_add_xent(L, g, loss, ignore_index, labels_shape)
                        if loss.startswith("xent:") else loss)
                self._ctx.check(L.kc_graph_status(g), "loss %r" % loss)
                t = C.c_void_p()
                self._ctx.check(L.kc_trainer_new(self._ctx.ptr, g, name.encode(), len(params),
                                                 pats, C.byref(o), C.byref(t)), "kc_trainer_new")
                self._t = t
        except BaseException:
            self.close()
            raise

    @property
    def _lib(self):
        return self._ctx.lib

    def step(self, feeds, lr=None):
        """One training step on feeds ({input name: array}): forward, backward, optimizer
        update (step number: steps + 1); returns the batch's loss (before the update)."""
        descs, n, keep = _lib.make_descs(feeds)
        loss = C.c_double()
        self._ctx.check(self._lib.kc_trainer_step(
            self._t, descs, n, self.lr if lr is None else lr, self.steps + 1, C.byref(loss)),
            "kc_trainer_step")
        del keep
        return loss.value

    def accumulate(self, feeds):
        """Forward and backward of one micro-batch, gradients added to the sums; its loss."""
        descs, n, keep = _lib.make_descs(feeds)
        loss = C.c_double()
        self._ctx.check(self._lib.kc_trainer_accumulate(self._t, descs, n, C.byref(loss)),
                        "kc_trainer_accumulate")
        del keep
        return loss.value

    def apply(self, lr=None):
        """The optimizer update with the averaged gradient sums since the last apply."""
        self._ctx.check(self._lib.kc_trainer_apply(self._t, self.lr if lr is None else lr,
                                                   self.steps + 1), "kc_trainer_apply")

    @property
    def steps(self):
        """Updates applied so far (or recorded by a loaded checkpoint)."""
        return self._lib.kc_trainer_steps(self._t)

    @property
    def grad_norm(self):
        """Global L2 norm of the gradients at the last update, before clipping."""
        return self._lib.kc_trainer_grad_norm(self._t)

    def params(self):
        """{name: numpy array}: copies of the parameters' current values."""
        res = {}
        for i in range(self._lib.kc_trainer_num_params(self._t)):
            d = _lib.kc_tensor_desc()
            self._ctx.check(self._lib.kc_trainer_param(self._t, i, C.byref(d)), "kc_trainer_param")
            name = d.name.decode()
            res[name] = _lib.array_of(d, True, name)
        return res

    def save(self, path):
        """Checkpoint (safetensors): parameters, optimizer state, step count."""
        self._ctx.check(self._lib.kc_trainer_save(self._t, _lib.enc(path)), "kc_trainer_save")

    def load(self, path):
        """Read a checkpoint written by save() into this trainer."""
        self._ctx.check(self._lib.kc_trainer_load(self._t, _lib.enc(path)), "kc_trainer_load")

    @property
    def peak_bytes(self):
        """The step's intermediate arena at its largest so far."""
        return self._lib.kc_module_peak_bytes(self._lib.kc_trainer_module(self._t))

    def _release(self):
        if getattr(self, "_t", None):
            self._lib.kc_trainer_free(self._t)
            self._t = None
