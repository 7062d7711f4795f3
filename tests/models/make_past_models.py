#!/usr/bin/python3
"""tests/models/make_past_models.py - the tiny decoders of make_models.py exported "with past",
the layout optimum and ONNX Runtime GenAI use, for tests/test_session_past.c (kernc derives the
decode step from them, mapping the past onto its own KV cache) and tests/test_models.c.

Run with Debian's Python (python3-torch 1.13 CPU, python3-onnx 1.12, numpy):

    /usr/bin/python3 tests/models/make_past_models.py [--out DIR]

It rewrites tests/models/NAME/model.onnx and test_data_set_N/{input,output}_N.pb (as
make_models.py; --out DIR writes DIR/NAME/ instead) for

  gpt2_past_tiny   gpt2_tiny's module and weights (hf_modules.Gpt2Model with past): inputs
                   input_ids [B, S], past_key_values.N.key / .value [B, 4, P, 16] for the 2 layers
                   N; outputs logits [B, S, 100], present.N.key / .value [B, 4, P + S, 16] =
                   Concat(past, new) per layer. Positions are Range(P, P + S) with P from the
                   past's Shape; the causal mask is the bool `bias` buffer sliced at [P, P + S).
                   No attention_mask (as bench/export_models.py's gpt2_past). Opset 13.
  llama_past_tiny  llama_tiny's module and weights (hf_modules.LlamaModel with past): inputs
                   input_ids [B, S], attention_mask [B, P + S] (int64), position_ids [B, S]
                   (int64), past_key_values.N.key / .value [B, 2, P, 16] (the kv heads, keys
                   after rotary); outputs logits, present.N.key / .value [B, 2, P + S, 16]. The
                   mask is transformers 4.36's 4-d causal mask with a past (zeros [S, P] before
                   the triangle) with the padding of attention_mask filled in. Opset 17.

and, for the refusal tests, gpt2_past_tiny/past_bshd.onnx: a 1-layer GPT-2 (hidden 16, 2 heads,
vocab 16, seeded weights of its own; no data sets) whose past inputs are [B, P, heads, head_dim]
(transposed to the module's layout inside) and whose presents are [B, P + S, heads, head_dim]:
a layout derive-decode does not map, so it must refuse naming the input.

The weights are those of gpt2_tiny and llama_tiny: the models are built in make_models.py's
order with its seeds (the norms' random numbers come from one generator shared by the three
models), and the script asserts that every exported weight equals the committed no-past model's
initializer (as it is, or transposed). Both are traced at P = 3, S = 4 with dynamic batch, sequence and
past axes.

Data sets (references: the float64 forward of the same module, rounded to float32, as
make_models.py; past tensors are what the float64 model returned for the earlier tokens, rounded
to float32): set 0, B = 1, P = 4, S = 3; set 1, B = 2, P = 7, S = 5 (ids from a seeded generator,
llama's position_ids P..P+S-1 and attention_mask all ones).

tests/test_session_past.c decodes the no-past models' test_data_set_1 ids (2 rows of 12) with the
past models and compares with those sets' logits; so the script also checks, in PyTorch, that the
past path gives those logits: both rows prefilled (5 and 9 tokens) and then decoded one token at
a time through the past, every position within the test's tolerance of the committed reference.
"""
import argparse
import copy
import os
import shutil

import numpy as np
import onnx
import torch
from onnx import numpy_helper

import make_models as mm
from hf_modules import BertModel, Gpt2Model, LlamaModel, randomize_norms

HERE = os.path.dirname(os.path.abspath(__file__))
TRACE_P, TRACE_S = 3, 4
SETS = [(1, 4, 3), (2, 7, 5)]  # (batch, past, seq) of test_data_set_0 and _1


class Gpt2Past(torch.nn.Module):
    """input_ids, past_key_values.N.key/value... -> logits, present.N.key/value..."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.m(input_ids, past)
        return (logits,) + tuple(t for kv in presents for t in kv)


class LlamaPast(torch.nn.Module):
    """input_ids, attention_mask, position_ids, past_key_values.N.key/value... -> logits,
    present.N.key/value..."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(len(past_flat) // 2)]
        logits, presents = self.m(input_ids, attention_mask, position_ids, past)
        return (logits,) + tuple(t for kv in presents for t in kv)


class Gpt2PastBshd(torch.nn.Module):
    """Gpt2Past with the past and presents laid out [B, P, heads, head_dim]."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, *past_flat):
        past = [(past_flat[2 * i].transpose(1, 2), past_flat[2 * i + 1].transpose(1, 2))
                for i in range(len(past_flat) // 2)]
        logits, presents = self.m(input_ids, past)
        return (logits,) + tuple(t.transpose(1, 2) for kv in presents for t in kv)


class BshdCfg(mm.Gpt2Cfg):
    vocab, hidden, heads, layers, n_ctx = 16, 16, 2, 1, 16


def build_bshd(out):
    """gpt2_past_tiny/past_bshd.onnx (after build() made the folder)."""
    torch.manual_seed(7)
    model = Gpt2PastBshd(Gpt2Model(BshdCfg)).eval()
    c = BshdCfg
    names = ["%s.0.%s" % (pre, t) for pre in ("past_key_values", "present") for t in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    axes.update({n: {0: "batch", 1: "past_seq"} for n in names[:2]})
    axes.update({n: {0: "batch", 1: "total_seq"} for n in names[2:]})
    ids = torch.zeros(1, TRACE_S, dtype=torch.int64)
    past = [torch.zeros(1, TRACE_P, c.heads, c.hidden // c.heads) for _ in range(2)]
    path = os.path.join(out, "gpt2_past_tiny", "past_bshd.onnx")
    with torch.no_grad():
        torch.onnx.export(model, tuple([ids] + past), path, input_names=["input_ids"] + names[:2],
                          output_names=["logits"] + names[2:], dynamic_axes=axes,
                          opset_version=13)
    onnx.checker.check_model(onnx.load(path))
    print("gpt2_past_tiny/past_bshd.onnx: %d bytes" % os.path.getsize(path))


def models():
    """gpt2_tiny's and llama_tiny's modules with their weights (make_models.main's order)."""
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(0)
    randomize_norms(BertModel(mm.BertCfg), gen)
    torch.manual_seed(1)
    gpt2 = Gpt2Model(mm.Gpt2Cfg)
    randomize_norms(gpt2, gen)
    torch.manual_seed(2)
    llama = LlamaModel(mm.LlamaCfg)
    randomize_norms(llama, gen)
    return gpt2.eval(), llama.eval()


def extra_inputs(llama, ids, past_len):
    """attention_mask and position_ids for llama (none for gpt2)."""
    if not llama:
        return []
    b, s = ids.shape
    return [torch.ones(b, past_len + s, dtype=torch.int64),
            torch.arange(past_len, past_len + s).unsqueeze(0).expand(b, s).contiguous()]


def run(wrapper, llama, ids, past):
    """logits, flat presents of wrapper on ids after past (a flat list of tensors)."""
    p = past[0].shape[2]
    with torch.no_grad():
        outs = wrapper(ids, *extra_inputs(llama, ids, p), *past)
    return outs[0], list(outs[1:])


def empty_past(c, b, dtype):
    kvh = getattr(c, "kv_heads", c.heads)
    return [torch.zeros(b, kvh, 0, c.hidden // c.heads, dtype=dtype) for _ in range(2 * c.layers)]


def check_weights(model, no_past):
    """Every parameter of model is an initializer of the committed no-past model at no_past (as
    it is, or transposed: a Linear's weight exports as the MatMul's [in, out])."""
    have = {}
    for t in onnx.load(no_past).graph.initializer:
        a = numpy_helper.to_array(t)
        have.setdefault(a.shape, []).append(a)
    n = 0
    for name, p in model.named_parameters():
        w = p.detach().numpy()
        found = any(np.array_equal(w, a) for a in have.get(w.shape, []))
        found = found or any(np.array_equal(w.T, a) for a in have.get(w.T.shape, []))
        assert found, "%s differs from %s's weights" % (name, no_past)
        n += 1
    return n


def check_decode(name, wrapper64, llama, c, ref_dir):
    """The past path, prefill 5 / 9 then one token at a time, gives test_data_set_1's logits."""
    ids = numpy_helper.to_array(onnx.load_tensor(os.path.join(ref_dir, "input_0.pb")))
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(ref_dir, "output_0.pb")))
    worst = 0.0
    for row, pre in ((0, 5), (1, 9)):
        r = torch.from_numpy(ids[row:row + 1].copy())
        past = empty_past(c, 1, torch.float64)
        pos = 0
        for n in [pre] + [1] * (12 - pre):
            logits, past = run(wrapper64, llama, r[:, pos:pos + n], past)
            w = want[row, pos:pos + n]
            err = np.abs(logits[0].numpy() - w) / (1e-4 + 1e-3 * np.abs(w))
            worst = max(worst, float(err.max()))
            pos += n
    print("  %s: decoding with past reproduces %s at %.3f of test_session's tolerance"
          % (name, os.path.relpath(ref_dir, HERE), worst))
    assert worst < mm.MARGIN


def build(out, name, model, llama, c, opset):
    gen = torch.Generator().manual_seed(4321)
    L = c.layers
    kvh, d = getattr(c, "kv_heads", c.heads), c.hidden // c.heads
    wrapper = (LlamaPast if llama else Gpt2Past)(model).eval()
    wrapper64 = copy.deepcopy(wrapper).double()
    kv = ["%s.%d.%s" % (pre, i, t) for pre in ("past_key_values", "present") for i in range(L)
          for t in ("key", "value")]
    past_names, present_names = kv[:2 * L], kv[2 * L:]
    in_names = ["input_ids"] + (["attention_mask", "position_ids"] if llama else []) + past_names
    out_names = ["logits"] + present_names
    axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    if llama:
        axes["attention_mask"] = {0: "batch", 1: "total_seq"}
        axes["position_ids"] = {0: "batch", 1: "seq"}
    axes.update({n: {0: "batch", 2: "past_seq"} for n in past_names})
    axes.update({n: {0: "batch", 2: "total_seq"} for n in present_names})

    out_dir = os.path.join(out, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    path = os.path.join(out_dir, "model.onnx")
    ids = torch.randint(0, c.vocab, (1, TRACE_S), generator=gen)
    past = [0.1 * torch.randn(1, kvh, TRACE_P, d, generator=gen) for _ in past_names]
    with torch.no_grad():
        torch.onnx.export(wrapper, tuple([ids] + extra_inputs(llama, ids, TRACE_P) + past), path,
                          input_names=in_names, output_names=out_names, dynamic_axes=axes,
                          opset_version=opset)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    no_past = os.path.join(HERE, name.replace("_past", ""))
    shared = check_weights(model, os.path.join(no_past, "model.onnx"))

    for i, (b, p, s) in enumerate(SETS):
        d_out = os.path.join(out_dir, "test_data_set_%d" % i)
        os.makedirs(d_out)
        prior = torch.randint(0, c.vocab, (b, p), generator=gen)
        ids = torch.randint(0, c.vocab, (b, s), generator=gen)
        _, past64 = run(wrapper64, llama, prior, empty_past(c, b, torch.float64))
        past32 = [t.float() for t in past64]  # the past as a float32 model receives it
        inputs = [ids] + extra_inputs(llama, ids, p) + past32
        outs = run(wrapper, llama, ids, past32)
        outs64 = run(wrapper64, llama, ids, [t.double() for t in past32])
        for j, x in enumerate(inputs):
            mm.write_pb(x.numpy(), os.path.join(d_out, "input_%d.pb" % j))
        for j, (y32, y64) in enumerate(zip([outs[0]] + outs[1], [outs64[0]] + outs64[1])):
            y = y64.numpy().astype(np.float32)
            mm.write_pb(y, os.path.join(d_out, "output_%d.pb" % j))
            margin = mm.in_tolerance(y32.numpy(), y)
            assert margin < mm.MARGIN, "%s set %d %s: PyTorch's own float32 result at %.3f" % (
                name, i, out_names[j], margin)
        print("  %s set %d: B=%d P=%d S=%d" % (name, i, b, p, s))
    check_decode(name, wrapper64, llama, c, os.path.join(no_past, "test_data_set_1"))
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out_dir) for f in fs)
    ops = sorted({n.op_type for n in m.graph.node})
    print("%s: opset %d, %d weights equal to %s's, %d nodes, %d bytes, ops %s"
          % (name, opset, shared, os.path.basename(no_past), len(m.graph.node), size,
             " ".join(ops)))


def main():
    ap = argparse.ArgumentParser(description="Export tests/models/{gpt2,llama}_past_tiny.")
    ap.add_argument("--out", default=HERE, metavar="DIR",
                    help="folder to write NAME/ into (default: tests/models, the committed models)")
    out = ap.parse_args().out
    gpt2, llama = models()
    build(out, "gpt2_past_tiny", gpt2, False, mm.Gpt2Cfg, 13)
    build_bshd(out)
    build(out, "llama_past_tiny", llama, True, mm.LlamaCfg, 17)


if __name__ == "__main__":
    main()
