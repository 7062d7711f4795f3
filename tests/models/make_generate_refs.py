"""tests/models/make_generate_refs.py - greedy and beam-search references from Hugging Face
transformers' own generate() on two tiny causal LMs, and those same models exported to ONNX for
kernc, for tests/test_generate.c (kc_generate_batch, kc_generate_beams and `kernc generate` must
give the same tokens).

Run with the venv the issue describes (Debian's torch 1.13 under transformers 4.46.3):
  /usr/bin/python3 -m venv --system-site-packages /tmp/tfvenv
  /tmp/tfvenv/bin/pip install transformers==4.46.3
  /tmp/tfvenv/bin/python tests/models/make_generate_refs.py [--out DIR]

Models (the library's own classes, built from a config with seeded weights, eval()):
  gpt2_gen_tiny   GPT2LMHeadModel: vocab 128, 64 wide, 4 heads, 2 layers, 64 positions, tied
                  embeddings, attn_implementation="eager".
  llama_gen_tiny  LlamaForCausalLM: vocab 160, 64 wide, 4 query heads over 2 KV heads (GQA),
                  RoPE (theta 10000), SwiGLU 128, 2 layers, untied head, eager attention.
These are the library's modules, not the copies of tests/models/hf_modules.py, so the graphs are
what users export: e.g. 4.46's LlamaRotaryEmbedding multiplies cos and sin by attention_scaling
(1.0 for the default rope), its causal mask is built over seq + 1 keys from cache_position and
sliced, and GPT-2 divides by a torch.full scalar and masks with a sliced bool buffer.
Weights: transformers' own init (_init_weights, under torch.manual_seed) with initializer_range
0.2 instead of 0.02, so that the logits spread over a few units and greedy neither repeats one
token forever nor leaves near-ties; the norms' weights and biases are then randomized
(1 + 0.1 N(0,1), 0.1 N(0,1)) as tests/models/make_models.py does, so a dropped gamma shows.

Each model goes to tests/generate/NAME/: model.onnx (torch.onnx.export, opset 17, of a wrapper
taking input_ids [batch, seq] only and returning only logits [batch, seq, vocab],
use_cache=False, dynamic batch and seq axes), test_data_set_0/{input_0,output_0}.pb (B=2, S=10;
the output from the float64 copy of the model, rounded to f32, as make_models.py) and
generate.txt, the references below. Not under tests/models, on purpose: tests/test_models.c runs
`kernc check` there, whose tolerance (1e-7 + 1e-3 |want|) these models cannot meet: with weights
this large PyTorch's own f32 logits are ~4e-6 off the f64 ones, and among 2560 logits of O(5)
some are within 1e-3 of zero (kernc check happens to pass them today, with no margin to rely
on). tests/test_generate.c compares kernc's prefill logits with
test_data_set_0 at tests/test_session.c's tolerance, 1e-4 + 1e-3 |want|; the script asserts that
PyTorch's own f32 result uses under a quarter of it.

References: generate.txt, one case per line,
  key=value ... with keys
    mode    greedy | beams
    max_new max_new_tokens
    eos     eos_token_id, -1 for none
    rep     repetition_penalty (1: none)
    beams   num_beams (greedy: 1)
    lp      length_penalty
    early   early_stopping (0 false, 1 true)
    prompt  the prompt's ids, comma-separated
    tokens  the generated ids (generate()'s sequences minus the prompt; beam search: as finalize()
            writes them, an EOS that ended the hypothesis included), comma-separated
    score   sequences_scores (f32, %.9g); greedy: nan
Lines starting with '#' are comments. Each case is generate() on one prompt alone (batch 1, no
padding), do_sample=False, num_return_sequences=1, pad_token_id 0, every option given
explicitly. Cases, each on three prompts (5, 9 and 3 seeded ids): greedy with max_new 16 without
an EOS, with one, and with repetition_penalty 1.3; beam search with max_new 12 and num_beams 2
and 4, without an EOS (length_penalty 1), and with one for length_penalty 1 and 2, each with
early_stopping false and true. The EOS ids are tokens the no-EOS runs produce: greedy's stops at
least two prompts early (asserted); beam search's is the one for which early_stopping changes the
most results (at least one, asserted).

Robustness: kernc's float32 arithmetic is not torch's, so a reference whose decision hinged on a
near-tie would test rounding, not generation. The script records the smallest gap at every
decision generate() made (greedy: top-1 minus top-2 of the processed scores; beam search: the
gaps in the ranked candidates over beams x vocab that decide which become beams and which EOS
candidates finish a hypothesis, see record_beam_gaps), asserts it is at least MIN_GAP, and
reruns every case on the float64 copy of the model, which must give the same tokens.
Everything is deterministic: a rerun rewrites byte-identical files.
"""
import argparse
import copy
import math
import os
import shutil

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

import transformers
import transformers.generation.utils as gen_utils
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers import LogitsProcessor, LogitsProcessorList

assert transformers.__version__ == "4.46.3", transformers.__version__
# Debian's torch.distributed does not import on Python 3.11; generate() asks it about FSDP
gen_utils.is_fsdp_managed_module = lambda module: False

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL, ATOL = 1e-3, 1e-4  # tests/test_generate.c's logits tolerance (test_session.c's)
MARGIN = 0.25  # how much of it PyTorch's own float32 logits may use
MIN_GAP = 2e-4  # smallest score gap allowed at a decision (f32 logits of O(1-10))
DATA_SHAPE = (2, 10)  # test_data_set_0's input_ids
TOPK = torch.topk  # run_generate wraps it during beam searches


# ---- models -------------------------------------------------------------------------------------


def randomize_norms(model, gen):
    for mod in model.modules():
        name = type(mod).__name__
        if name in ("LayerNorm", "LlamaRMSNorm"):
            with torch.no_grad():
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=gen))


def make_gpt2():
    cfg = GPT2Config(vocab_size=128, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2,
                     bos_token_id=None, eos_token_id=None, pad_token_id=None,
                     attn_implementation="eager")
    torch.manual_seed(16)
    m = GPT2LMHeadModel(cfg)
    randomize_norms(m, torch.Generator().manual_seed(12))
    return m.eval()


def make_llama():
    cfg = LlamaConfig(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-6, rope_theta=10000.0, initializer_range=0.2,
                      tie_word_embeddings=False, attention_dropout=0.0,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None,
                      attn_implementation="eager")
    torch.manual_seed(21)
    m = LlamaForCausalLM(cfg)
    randomize_norms(m, torch.Generator().manual_seed(22))
    return m.eval()


class LogitsOnly(nn.Module):
    """input_ids -> logits, no cache: the plain causal model kernc derives its decode step from."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


# ---- export -------------------------------------------------------------------------------------


def write_pb(arr, path):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(np.ascontiguousarray(arr)).SerializeToString())


def in_tolerance(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - want) / (ATOL + RTOL * np.abs(want))))


def export(out, name, model):
    out_dir = os.path.join(out, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, DATA_SHAPE, generator=torch.Generator().manual_seed(1234))
    wrapper = LogitsOnly(model).eval()  # torch 1.13's export puts the wrapper's mode back
    path = os.path.join(out_dir, "model.onnx")
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids,), path, input_names=["input_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "logits": {0: "batch", 1: "seq"}},
                          opset_version=17)
    assert not wrapper.training and not model.training
    m = onnx.load(path)
    onnx.checker.check_model(m)
    w64 = LogitsOnly(copy.deepcopy(model).double()).eval()
    d = os.path.join(out_dir, "test_data_set_0")
    os.makedirs(d)
    with torch.no_grad():
        y32 = wrapper(ids).numpy()
        y = w64(ids).numpy().astype(np.float32)
    write_pb(ids.numpy(), os.path.join(d, "input_0.pb"))
    write_pb(y, os.path.join(d, "output_0.pb"))
    margin = in_tolerance(y32, y)
    ops = sorted({n.op_type for n in m.graph.node})
    params = sum(p.numel() for p in model.parameters())
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out_dir) for f in fs)
    print("%s: %d params, %d nodes, %d bytes; logits |y| max %.3g; torch f32 at %.3f of the "
          "tolerance; ops %s" % (name, params, len(m.graph.node), size, np.abs(y).max(), margin,
                                 " ".join(ops)))
    assert margin < MARGIN, "PyTorch's own float32 result is not well within tolerance"


# ---- generate() with its decisions' gaps recorded ------------------------------------------------


class Gaps:
    """The smallest gap seen at a decision in the current generate() call."""

    def __init__(self):
        self.min = math.inf


class GreedyGap(LogitsProcessor):
    """Last in the processor list: sees the scores greedy's argmax is taken over."""

    def __init__(self, gaps):
        self.gaps = gaps

    def __call__(self, input_ids, scores):
        top = torch.topk(scores.double(), 2, dim=-1).values
        self.gaps.min = min(self.gaps.min, float((top[:, 0] - top[:, 1]).min()))
        return scores


def record_beam_gaps(x, num_beams, eos, gaps):
    """The gaps a beam step's outcome hinges on, from its candidate scores x [1, beams * vocab]
    (BeamSearchScorer.process walks them best first: an EOS ranked below num_beams finishes a
    hypothesis, the first num_beams others become the beams): between the num_beams-th and the
    next non-EOS candidate, and around rank num_beams when an EOS sits there. Candidates of the
    beams that start at -1e9 are no choice."""
    vocab = x.shape[1] // num_beams
    v, i = TOPK(x.double(), min(2 * num_beams + 1, x.shape[1]), dim=1)
    v, i = v[0].tolist(), i[0].tolist()
    is_eos = [t % vocab == eos for t in i]
    other = [s for s, e in zip(v, is_eos) if not e]
    pairs = [(other[num_beams - 1], other[num_beams])] if len(other) > num_beams else []
    if is_eos[num_beams - 1] or is_eos[num_beams]:
        pairs.append((v[num_beams - 1], v[num_beams]))
    for a, b in pairs:
        if b > -1e8:
            gaps.min = min(gaps.min, a - b)


def run_generate(model, prompt, case, gaps):
    """generate() on one prompt; the generated tokens and the beam score (None for greedy)."""
    ids = torch.tensor([prompt], dtype=torch.int64)
    kw = dict(max_new_tokens=case["max_new"], do_sample=False, num_beams=case["beams"],
              num_return_sequences=1, repetition_penalty=case["rep"], pad_token_id=0,
              eos_token_id=case["eos"] if case["eos"] >= 0 else None,
              attention_mask=torch.ones_like(ids), return_dict_in_generate=True,
              output_scores=True, use_cache=True)
    if case["beams"] > 1:
        kw.update(length_penalty=case["lp"], early_stopping=bool(case["early"]))

        def recording_topk(x, k, dim=-1, largest=True, sorted=True):
            record_beam_gaps(x, case["beams"], case["eos"], gaps)
            return TOPK(x, k, dim=dim, largest=largest, sorted=sorted)

        torch.topk = recording_topk
    else:
        kw["logits_processor"] = LogitsProcessorList([GreedyGap(gaps)])
    try:
        with torch.no_grad():
            out = model.generate(ids, **kw)
    finally:
        torch.topk = TOPK
    tokens = out.sequences[0, len(prompt):].tolist()
    if case["beams"] > 1:
        # finalize() pads with pad_token_id after the EOS it writes only when several sequences
        # differ in length; with one returned sequence there is no padding
        return tokens, float(out.sequences_scores[0])
    return tokens, None


# ---- cases ---------------------------------------------------------------------------------------


def prompts_for(vocab, seed, lengths):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]


def case(mode, max_new, eos=-1, rep=1.0, beams=1, lp=1.0, early=0):
    return dict(mode=mode, max_new=max_new, eos=eos, rep=rep, beams=beams, lp=lp, early=early)


def pick_eos(model, prompts, max_new):
    """An EOS id for greedy: a token of the first prompt's no-EOS greedy output, not its first,
    that also occurs after another prompt, so two prompts stop early at different steps."""
    outs = [run_generate(model, p, case("greedy", max_new), Gaps())[0] for p in prompts]
    for t in outs[0][2:]:
        if any(t in o for o in outs[1:]) and t not in outs[0][:2]:
            return t
    return outs[0][len(outs[0]) // 2]


def pick_beam_eos(model, prompts, max_new, lps):
    """An EOS id for beam search that makes early_stopping matter: among the tokens the no-EOS
    beam searches produce, the one for which early_stopping True and False give different
    results in the most (prompt, num_beams, length_penalty) combinations (ties: the lowest id)."""
    combos = [(p, b, lp) for p in prompts for b in (2, 4) for lp in lps]
    seen = sorted({t for p, b, _ in combos
                   for t in run_generate(model, p, case("beams", max_new, beams=b), Gaps())[0]})
    best, most = None, 0
    for t in seen:
        n = 0
        for p, b, lp in combos:
            r = [run_generate(model, p, case("beams", max_new, eos=t, beams=b, lp=lp, early=e),
                              Gaps()) for e in (0, 1)]
            n += r[0] != r[1]
        if n > most:
            best, most = t, n
    assert best is not None, "no EOS id makes early_stopping matter"
    print("beam EOS %d: early_stopping changes %d of %d searches" % (best, most, len(combos)))
    return best


def fmt_ids(xs):
    return ",".join(str(int(x)) for x in xs)


def write_refs(path, name, model, prompts, cases):
    m64 = copy.deepcopy(model).double().eval()
    lines = ["# %s: transformers %s generate() references (tests/models/make_generate_refs.py)"
             % (name, transformers.__version__)]
    worst = math.inf
    for c in cases:
        for p in prompts:
            gaps = Gaps()
            tokens, score = run_generate(model, p, c, gaps)
            tokens64, _ = run_generate(m64, p, c, Gaps())
            assert tokens == tokens64, "%s %s: f32 %s, f64 %s" % (name, c, tokens, tokens64)
            assert gaps.min >= MIN_GAP, "%s %s prompt %s: a decision within %.3g" % (
                name, c, p, gaps.min)
            worst = min(worst, gaps.min)
            lines.append("mode=%s max_new=%d eos=%d rep=%.9g beams=%d lp=%.9g early=%d prompt=%s "
                         "tokens=%s score=%s" % (c["mode"], c["max_new"], c["eos"], c["rep"],
                                                 c["beams"], c["lp"], c["early"], fmt_ids(p),
                                                 fmt_ids(tokens),
                                                 "nan" if score is None else "%.9g" % score))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%s: %d cases, smallest decision gap %.3g" % (path, len(lines) - 1, worst))
    return lines[1:]


def refs_for(out, name, model, prompt_seed):
    vocab = model.config.vocab_size
    prompts = prompts_for(vocab, prompt_seed, (5, 9, 3))
    max_new = 16
    eos = pick_eos(model, prompts, max_new)
    lps = (1.0, 2.0)
    beam_eos = pick_beam_eos(model, prompts, 12, lps)
    cases = [case("greedy", max_new), case("greedy", max_new, eos=eos),
             case("greedy", max_new, rep=1.3)]
    for beams in (2, 4):
        cases.append(case("beams", 12, beams=beams))
        for lp in lps:
            for early in (0, 1):
                cases.append(case("beams", 12, eos=beam_eos, beams=beams, lp=lp, early=early))
    lines = write_refs(os.path.join(out, name, "generate.txt"), name, model, prompts, cases)
    # the references must exercise what they claim to
    greedy = [l for l in lines if "mode=greedy" in l]
    stopped = [l for l in greedy if "eos=%d " % eos in l and l.count(",", l.index("tokens="))
               < max_new - 1]
    assert len(stopped) >= 2, "the greedy EOS stops fewer than two prompts early"
    for l in greedy:
        if "eos=-1 " not in l:
            continue
        toks = l.split("tokens=")[1].split()[0].split(",")
        assert len(set(toks)) >= 4, "greedy output is degenerate: %s" % l


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..", "generate")),
                    metavar="DIR", help="folder to write NAME/ into (default: tests/generate)")
    out = ap.parse_args().out
    torch.set_num_threads(1)  # reductions in one fixed order
    for name, make, seed in (("gpt2_gen_tiny", make_gpt2, 31), ("llama_gen_tiny", make_llama, 32)):
        model = make()
        export(out, name, model)
        refs_for(out, name, model, seed)


if __name__ == "__main__":
    main()
