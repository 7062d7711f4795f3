"""tests/models/make_sample_refs.py - reference token selection from Hugging Face transformers
itself, for tests/test_sample.c (runtime/sample.c follows transformers 4.46.3's semantics).

Writes two text files under tests/sample/ (committed; this script rewrites them byte for byte):

  warpers.txt  rows of logits with the candidate set transformers leaves after its logits
               processors and warpers (ids, and the softmax of what is left, f32), and greedy
               picks. Most cases run generate() itself (do_sample=True, one new token,
               output_scores=True): the scores it returns are the row after the processors and
               warpers in generate()'s own order. Cases with min_tokens_to_keep > 1 take the
               processor list from GenerationMixin._get_logits_processor configured as beam
               sampling (num_beams > 1, do_sample=True, n EOS ids: min_tokens_to_keep = n + 1),
               the only way generate() sets it, and apply it to the row.
  beams.txt    beam searches: generate(num_beams=...) on ScriptedLM, a fake causal LM whose
               logits for the next token are a fixed function of the whole prefix (seeded from a
               CRC of its ids); every (prefix, logits) row the search asked for is written, with
               the sequences and sequences_scores generate() returned.

Format (whitespace-separated, '#' comments): see the writers below; floats print as %.9g, which
reads back to the same f32.

Run with the venv the issue describes (Debian's torch 1.13 under transformers 4.46.3):
  /usr/bin/python3 -m venv --system-site-packages /tmp/tfvenv
  /tmp/tfvenv/bin/pip install transformers==4.46.3
  /tmp/tfvenv/bin/python tests/models/make_sample_refs.py
"""
import os
import sys
import zlib

import torch
from torch import nn

import transformers
import transformers.generation.utils as gen_utils
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, PretrainedConfig
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

assert transformers.__version__ == "4.46.3", transformers.__version__
# Debian's torch.distributed does not import on Python 3.11; generate() asks it about FSDP
gen_utils.is_fsdp_managed_module = lambda module: False

INF = float("inf")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sample")


class ScriptedLM(PreTrainedModel, GenerationMixin):
    """A causal LM whose next-token logits are fn(prefix): generate() drives it like a model."""
    config_class = PretrainedConfig

    def __init__(self, config, fn):
        super().__init__(config)
        self.fn = fn
        self.anchor = nn.Parameter(torch.zeros(1))  # generate() reads the device from a parameter

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}

    def forward(self, input_ids, attention_mask=None, **kwargs):
        b, s = input_ids.shape
        logits = torch.zeros(b, s, self.config.vocab_size)
        for i in range(b):
            logits[i, -1] = self.fn(tuple(input_ids[i].tolist()))
        return CausalLMOutput(logits=logits)


def make_model(vocab, fn):
    cfg = PretrainedConfig(vocab_size=vocab)
    return ScriptedLM(cfg, fn).eval()


def f32(x):
    return "%.9g" % float(x)


def ints(xs):
    return " ".join(str(int(x)) for x in xs)


def floats(xs):
    return " ".join(f32(x) for x in xs)


def rand_logits(seed, vocab, scale=2.0, grid=None, neg_inf=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(vocab, generator=g) * scale
    if grid:  # values on a coarse grid: many exact ties
        x = torch.round(x / grid) * grid
    for i in neg_inf:
        x[i] = -float("inf")
    return x


# ---- warpers ----------------------------------------------------------------------------------

def sample_scores(logits, seen, temperature, top_k, top_p, min_p, rep):
    """The row generate(do_sample=True) samples from: output_scores of one new token."""
    vocab = logits.shape[0]
    model = make_model(vocab, lambda prefix: logits)
    out = model.generate(
        torch.tensor([seen]), attention_mask=torch.ones(1, len(seen), dtype=torch.long),
        do_sample=True, max_new_tokens=1, num_beams=1, temperature=temperature, top_k=top_k,
        top_p=top_p, min_p=min_p if min_p > 0 else None, repetition_penalty=rep,
        pad_token_id=0, eos_token_id=None, use_cache=False, output_scores=True,
        return_dict_in_generate=True)
    return out.scores[0][0]


def greedy_token(logits, seen, rep):
    vocab = logits.shape[0]
    model = make_model(vocab, lambda prefix: logits)
    out = model.generate(
        torch.tensor([seen]), attention_mask=torch.ones(1, len(seen), dtype=torch.long),
        do_sample=False, max_new_tokens=1, num_beams=1, repetition_penalty=rep, pad_token_id=0,
        eos_token_id=None, use_cache=False)
    return int(out[0, -1])


def beam_sample_scores(logits, seen, temperature, top_k, top_p, min_p, rep, neos):
    """The processors generate() builds for beam sampling with neos EOS ids (min_tokens_to_keep
    = neos + 1), applied to the row."""
    vocab = logits.shape[0]
    model = make_model(vocab, lambda prefix: logits)
    gc = GenerationConfig(do_sample=True, num_beams=3, temperature=temperature, top_k=top_k,
                          top_p=top_p, min_p=min_p if min_p > 0 else None,
                          repetition_penalty=rep, eos_token_id=list(range(neos)), pad_token_id=0)
    model._prepare_special_tokens(gc, True, device="cpu")
    ids = torch.tensor([seen])
    procs = model._get_logits_processor(
        generation_config=gc, input_ids_seq_length=len(seen), encoder_input_ids=ids,
        prefix_allowed_tokens_fn=None, logits_processor=LogitsProcessorList(), device="cpu")
    return procs(ids, logits[None].clone())[0]


def warper_cases():
    """(name, logits, seen, temperature, top_k, top_p, min_p, rep, neos): neos 0 runs
    generate() with one beam, neos > 0 the beam-sampling processor list."""
    c = []
    add = lambda *a: c.append(a)
    add("plain", rand_logits(1, 100), [3], 1.0, 0, 1.0, 0.0, 1.0, 0)
    add("temp_0.7", rand_logits(2, 100), [3], 0.7, 0, 1.0, 0.0, 1.0, 0)
    add("temp_1.5", rand_logits(3, 100), [3], 1.5, 0, 1.0, 0.0, 1.0, 0)
    add("topk_10", rand_logits(4, 100), [3], 1.0, 10, 1.0, 0.0, 1.0, 0)
    add("topk_1", rand_logits(5, 100), [3], 1.0, 1, 1.0, 0.0, 1.0, 0)
    add("topk_over_vocab", rand_logits(6, 300), [3], 1.0, 500, 1.0, 0.0, 1.0, 0)
    add("topp_0.9", rand_logits(7, 300), [3], 1.0, 0, 0.9, 0.0, 1.0, 0)
    add("topp_0.5_temp_0.8", rand_logits(8, 300), [3], 0.8, 0, 0.5, 0.0, 1.0, 0)
    add("topp_0", rand_logits(9, 100), [3], 1.0, 0, 0.0, 0.0, 1.0, 0)
    add("minp_0.05", rand_logits(10, 300), [3], 1.0, 0, 1.0, 0.05, 1.0, 0)
    add("minp_0.2_temp_1.3", rand_logits(11, 300), [3], 1.3, 0, 1.0, 0.2, 1.0, 0)
    add("rep_1.3_topk_20", rand_logits(12, 100), [5, 7, 5, 11, 40, 41, 42, 7, 99], 1.0, 20,
        1.0, 0.0, 1.3, 0)
    add("rep_1.5_repeats", rand_logits(29, 60), [5, 5, 5, 9, 9, 30, 31, 5], 1.0, 0, 1.0, 0.0,
        1.5, 0)
    add("rep_0.8", rand_logits(13, 100), [1, 2, 3, 50, 60, 70, 80, 90], 1.0, 0, 1.0, 0.0, 0.8, 0)
    add("all", rand_logits(14, 1000, scale=3.0), [1, 10, 100, 500, 999, 10], 0.9, 40, 0.92, 0.03,
        1.2, 0)
    add("topp_0.95_big", rand_logits(15, 2000, scale=3.0), [0], 1.0, 0, 0.95, 0.0, 1.0, 0)
    add("ties_topk", rand_logits(16, 200, grid=0.5), [3], 1.0, 10, 1.0, 0.0, 1.0, 0)
    add("ties_topp", rand_logits(17, 16, grid=1.0), [3], 1.0, 0, 0.6, 0.0, 1.0, 0)
    add("ties_topp_0", rand_logits(18, 16, grid=2.0), [3], 1.0, 0, 0.0, 0.0, 1.0, 0)
    add("ties_minp", rand_logits(19, 64, grid=0.5), [3], 1.0, 0, 1.0, 0.3, 1.0, 0)
    add("neg_inf_topk", rand_logits(20, 50, neg_inf=range(0, 50, 3)), [3], 1.0, 40, 1.0, 0.0,
        1.0, 0)
    add("neg_inf_topp", rand_logits(21, 50, neg_inf=range(1, 50, 2)), [3], 1.0, 0, 0.8, 0.0, 1.0,
        0)
    add("chi", rand_logits(22, 50, scale=1.0), [3], 2.0, 12, 1.0, 0.0, 1.0, 0)
    add("keep2_topk_1", rand_logits(23, 100), [3], 1.0, 1, 1.0, 0.0, 1.0, 1)
    add("keep3_topp_0.01", rand_logits(24, 100), [3], 1.0, 0, 0.01, 0.0, 1.0, 2)
    add("keep3_minp_0.9", rand_logits(25, 100, scale=4.0), [3], 1.0, 0, 1.0, 0.9, 1.0, 2)
    add("keep4_ties_minp", rand_logits(26, 16, grid=2.0), [3], 1.0, 0, 1.0, 0.9, 1.0, 3)
    add("keep3_ties_topp", rand_logits(27, 16, grid=2.0), [3], 1.0, 0, 0.05, 0.0, 1.0, 2)
    add("keep2_all", rand_logits(28, 300), [4, 5, 6], 0.6, 30, 0.7, 0.1, 1.4, 1)
    # exact binary probabilities: cumulative sums land on 1 - top_p exactly (<= drops them)
    add("exact_topp_0.5", torch.zeros(4), [3], 1.0, 0, 0.5, 0.0, 1.0, 0)
    add("exact_topp_0.75", torch.zeros(8), [3], 1.0, 0, 0.75, 0.0, 1.0, 0)
    # min_tokens_to_keep = 4 cuts through the three tied zeros: the lowest id is kept
    add("keep4_minp_cut", torch.tensor([0.0, 2, 0, 2, 0, 0, 1, 0]), [3], 1.0, 0, 1.0, 0.9, 1.0, 3)
    return c


def greedy_cases():
    c = []
    x = rand_logits(30, 40)
    c.append(("greedy_plain", x, [0], 1.0))
    x = rand_logits(31, 40)
    x[7] = x[30] = x.max() + 1.0  # a tie at the top: torch.argmax takes the first
    c.append(("greedy_tie", x, [0], 1.0))
    x = rand_logits(32, 40)
    top = int(torch.argmax(x))
    c.append(("greedy_rep", x, [top, 1, top], 3.0))  # the penalty moves the argmax
    x = rand_logits(33, 40) - 20.0  # all negative: the penalty multiplies
    top = int(torch.argmax(x))
    c.append(("greedy_rep_neg", x, [top], 1.5))
    return c


def write_warpers(path):
    lines = ["# candidate sets after transformers 4.46.3's processors and warpers (written by",
             "# tests/models/make_sample_refs.py; do not edit). Per case:",
             "#   case NAME vocab V temperature T top_k K top_p P min_p M rep R min_keep MK",
             "#   seen N ids / logits V floats / cand N then N 'id prob' pairs",
             "#   greedy cases: 'token ID' instead of cand (temperature 0)"]
    for name, logits, seen, t, k, p, m, r, neos in warper_cases():
        if neos:
            scores = beam_sample_scores(logits, seen, t, k, p, m, r, neos)
        else:
            scores = sample_scores(logits, seen, t, k, p, m, r)
        probs = torch.softmax(scores, dim=-1)
        keep = [i for i in range(len(scores)) if scores[i] != -float("inf")]
        lines.append("case %s vocab %d temperature %r top_k %d top_p %r min_p %r rep %r "
                     "min_keep %d" % (name, len(logits), t, k, p, m, r, neos + 1))
        lines.append("seen %d %s" % (len(seen), ints(seen)))
        lines.append("logits " + floats(logits))
        lines.append("cand %d %s" % (len(keep), " ".join("%d %s" % (i, f32(probs[i]))
                                                          for i in keep)))
    for name, logits, seen, r in greedy_cases():
        tok = greedy_token(logits, seen, r)
        lines.append("case %s vocab %d temperature 0.0 top_k 0 top_p 1.0 min_p 0.0 rep %r "
                     "min_keep 1" % (name, len(logits), r))
        lines.append("seen %d %s" % (len(seen), ints(seen)))
        lines.append("logits " + floats(logits))
        lines.append("token %d" % tok)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ---- beam search ------------------------------------------------------------------------------

def beam_cases():
    """(name, vocab, prompt, num_beams, length_penalty, early_stopping, max_new, eos ids,
    num_return, repetition_penalty, scale, eos_bias (one for all EOS ids, or one each), seed,
    and optionally the model's rows as a dict prefix -> logits instead of seeded ones)"""
    return [
        ("default", 20, [1, 4, 9], 3, 1.0, False, 8, [2], 1, 1.0, 2.0, 1.0, 100),
        ("lp2_true", 20, [5], 4, 2.0, True, 8, [2], 1, 1.0, 2.0, 1.5, 101),
        ("lp0_false", 20, [5, 6], 3, 0.0, False, 10, [2], 1, 1.0, 2.0, 1.0, 102),
        ("lpneg_false", 20, [7], 3, -1.0, False, 8, [2], 1, 1.0, 2.0, 1.0, 103),
        ("never_lp1.5", 20, [8, 3], 3, 1.5, "never", 8, [2], 1, 1.0, 2.0, 1.0, 104),
        ("never_lpneg", 20, [8, 3], 3, -0.5, "never", 8, [2], 1, 1.0, 2.0, 1.5, 105),
        ("two_eos_ret2", 24, [9], 2, 1.0, False, 9, [2, 5], 2, 1.0, 2.0, 1.0, 106),
        ("ret3_true", 20, [10, 11], 4, 1.0, True, 7, [3], 3, 1.0, 1.5, 2.0, 107),
        ("no_eos", 16, [1], 3, 1.0, False, 6, [], 2, 1.0, 2.0, 0.0, 108),
        ("rep_1.5", 20, [4, 4, 12], 3, 1.0, False, 8, [2], 1, 1.5, 2.0, 0.5, 109),
        # only the second EOS id is likely: finalize() still appends eos_token_id[0]
        ("eos_second", 20, [6], 3, 1.0, False, 8, [2, 5], 2, 1.0, 2.0, (0.0, 2.5), 110),
        # likely EOS ids (found by trying seeds): EOS candidates ranked at and past num_beams
        # (skipped), the heuristic and "never" deciding when to stop, hypotheses replaced
        ("eos_rank_skip", 20, [6, 1], 4, 2.0, True, 10, [2, 5], 1, 1.0, 2.0, 2.0, 200),
        ("eos_heavy_false", 20, [6, 1], 3, 2.0, False, 6, [2, 5], 1, 1.0, 2.0, 4.0, 219),
        ("eos_heavy_never", 20, [6, 1], 2, 2.0, "never", 8, [2, 5], 1, 1.0, 2.0, 4.0, 220),
        ("eos_heavy_lp1.5", 20, [6, 1], 4, 1.5, False, 8, [2, 5], 1, 1.0, 2.0, 3.0, 255),
        # two finished hypotheses with exactly equal scores (length_penalty 0, a step whose
        # only finite logit is the EOS): finalize() returns the later one first
        ("tied_hyps", 4, [1], 2, 0.0, True, 4, [3], 2, 1.0, 0.0, 0.0, 0, {
            (1,): [1.0, 0.5, 0.0, 1.0],
            (1, 0): [-INF, -INF, -INF, 0.0],
            (1, 1): [0.0, 0.0, 0.0, -INF]}),
    ]


def prefix_fn(vocab, eos, scale, eos_bias, seed, table):
    def fn(prefix):
        if prefix not in table:
            h = zlib.crc32(torch.tensor(prefix, dtype=torch.int32).numpy().tobytes()) ^ seed
            x = rand_logits(h, vocab, scale=scale)
            biases = eos_bias if isinstance(eos_bias, tuple) else (eos_bias,) * len(eos)
            for e, bias in zip(eos, biases):
                x[e] += bias
            table[prefix] = x
        return table[prefix]
    return fn


def write_beams(path):
    lines = ["# beam searches of transformers 4.46.3's generate() over a scripted model (written",
             "# by tests/models/make_sample_refs.py; do not edit). Per case:",
             "#   case NAME vocab V beams B length_penalty L early_stopping true|false|never",
             "#        max_new N num_return R rep P pad ID",
             "#   eos N ids / prompt N ids",
             "#   rows N, then N lines: 'row LEN prefix ids logits V floats' (the next-token",
             "#        logits the model gave for that prefix, prompt included)",
             "#   result R, then R lines: 'seq LEN ids score S' (the generated part of",
             "#        sequences, pad included, and sequences_scores)"]
    for (name, vocab, prompt, nb, lp, es, max_new, eos, nret, rep, scale, eos_bias, seed,
         *fixed) in beam_cases():
        table = {}
        if fixed:
            def fn(prefix, rows=fixed[0], table=table):
                table[prefix] = torch.tensor(rows[prefix])
                return table[prefix]
        else:
            fn = prefix_fn(vocab, eos, scale, eos_bias, seed, table)
        model = make_model(vocab, fn)
        pad = vocab - 1
        out = model.generate(
            torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False, num_beams=nb, length_penalty=lp, early_stopping=es,
            max_new_tokens=max_new, eos_token_id=eos if eos else None, pad_token_id=pad,
            num_return_sequences=nret, repetition_penalty=rep, use_cache=False,
            output_scores=True, return_dict_in_generate=True)
        es_s = {True: "true", False: "false", "never": "never"}[es]
        lines.append("case %s vocab %d beams %d length_penalty %r early_stopping %s max_new %d "
                     "num_return %d rep %r pad %d" % (name, vocab, nb, lp, es_s, max_new, nret,
                                                      rep, pad))
        lines.append("eos %d %s" % (len(eos), ints(eos)))
        lines.append("prompt %d %s" % (len(prompt), ints(prompt)))
        lines.append("rows %d" % len(table))
        for prefix in sorted(table, key=lambda p: (len(p), p)):
            lines.append("row %d %s %s" % (len(prefix), ints(prefix), floats(table[prefix])))
        lines.append("result %d" % nret)
        for i in range(nret):
            gen = out.sequences[i, len(prompt):].tolist()
            lines.append("seq %d %s score %s" % (len(gen), ints(gen),
                                                   f32(out.sequences_scores[i])))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    write_warpers(os.path.join(OUT, "warpers.txt"))
    write_beams(os.path.join(OUT, "beams.txt"))
    for n in ("warpers.txt", "beams.txt"):
        print(n, os.path.getsize(os.path.join(OUT, n)), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
