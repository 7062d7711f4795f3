#!/usr/bin/python3
"""bench/train_bench.py - one training step (forward, cross-entropy loss, backward, AdamW update)
of the GPT-2-small-shaped model (bench/models/gpt2.onnx, bench/export_models.py) at batch 4 x 64
tokens, the setting of llm.c's CPU reference: kernc's trainer (kc_trainer_*, through the kernc
package of python/) beside PyTorch CPU (Debian's torch 1.13, the same module and weights the ONNX
file was exported from, hf_modules.Gpt2Model) on the same threads. bench/run.sh calls it; by hand:

    /usr/bin/python3 bench/train_bench.py --lib build-bench/libkernc.so --models bench/models \\
        [--threads 2] [--steps 8] [--rounds 2]

Each engine runs in a child process of its own (so peak memory, VmHWM, is the engine's alone):
it builds its model and optimizer, runs --warmup untimed steps and --steps timed ones, and
reports the step times, the losses and its peak memory. Rounds alternate the engines (PyTorch,
kernc, kernc with checkpointing) so drifting load hits all of them; the table gives the median
step over all rounds, the ratio kernc / PyTorch, peak memory, and the fraction of the machine's
fp32 peak (6 x matmul parameters x tokens FLOP per step over DESIGN.md's measured ~530 GFLOP/s
on 2 cores). The other work on the machine during each child (cores busy beyond the child's
own) is printed beside it. The losses of step 1 must agree (same weights, same tokens); the
script exits 1 when they do not or an engine fails.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "models"))

PEAK_GFLOPS = {1: 270.0, 2: 530.0}  # DESIGN.md: fp32 FMA ceiling of these cores


def vm_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def batch(args, vocab):
    import numpy as np
    rng = np.random.default_rng(7)
    ids = rng.integers(0, vocab, size=(args.batch, args.seq + 1), dtype=np.int64)
    return ids[:, :-1].copy(), ids[:, 1:].copy()  # next-token labels


def torch_engine(args):
    import torch
    import torch.nn.functional as F
    import export_models as EM
    from hf_modules import randomize_norms
    torch.set_num_threads(args.threads)
    # the construction order of export_models.main, so the weights are gpt2.onnx's
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    randomize_norms(EM.MiniLM(EM.MiniLMCfg), gen)
    torch.randint(0, EM.MiniLMCfg.vocab, (2, 16), generator=gen)
    torch.manual_seed(2)
    model = EM.Gpt2Model(EM.Gpt2Cfg)
    randomize_norms(model, gen)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    ids, labels = batch(args, EM.Gpt2Cfg.vocab)
    ids, labels = torch.from_numpy(ids), torch.from_numpy(labels)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        opt.step()
        return float(loss)
    return step, {}


def kernc_engine(args, checkpoint):
    import ort_bench as OB
    kernc = OB.import_kernc(args.lib)
    t = kernc.Trainer(os.path.join(args.models, "gpt2.onnx"), loss="xent:logits:labels",
                      labels_shape=(args.batch, args.seq), params="*", lr=args.lr,
                      threads=args.threads, weight_decay=0.01,
                      checkpoint="sqrt" if checkpoint else "none")
    ids, lab = batch(args, 50257)
    feeds = {"input_ids": ids, "labels": lab}

    def step():
        return t.step(feeds)

    def extra():
        return {"arena_bytes": t.peak_bytes}
    return step, {"extra": extra, "keep": t}


def child_main(args):
    import ort_bench as OB
    res = {"engine": args.child}
    try:
        t0 = time.perf_counter()
        if args.child == "pytorch":
            step, aux = torch_engine(args)
        else:
            step, aux = kernc_engine(args, args.child == "kernc-sqrt")
        res["init_s"] = time.perf_counter() - t0
        losses, ms = [], []
        for _ in range(args.warmup):
            losses.append(step())
        meter = OB.CpuMeter()
        for _ in range(args.steps):
            t = time.perf_counter()
            losses.append(step())
            ms.append((time.perf_counter() - t) * 1e3)
        res.update(ms=ms, losses=losses, other_cores=meter.other_cores(), hwm_kib=vm_kib("VmHWM"))
        if "extra" in aux:
            res.update(aux["extra"]())
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    print("TRAIN-JSON " + json.dumps(res), flush=True)
    return 0


def run_child(args, engine):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, "--lib", args.lib,
           "--models", args.models, "--threads", str(args.threads), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--seq", str(args.seq),
           "--lr", str(args.lr)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("TRAIN-JSON "):
            return json.loads(line[11:])
    how = "killed by signal %d" % -p.returncode if p.returncode < 0 else "exited %d" % p.returncode
    return {"engine": engine, "error": "child %s: %s" % (how, (p.stderr or p.stdout)[-1500:])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", default="build-bench/libkernc.so")
    ap.add_argument("--models", default="bench/models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-checkpoint", action="store_true", help="skip the kernc sqrt row")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        return child_main(args)
    engines = ["pytorch", "kernc"] + ([] if args.no_checkpoint else ["kernc-sqrt"])
    runs = {e: [] for e in engines}
    for r in range(args.rounds):
        for e in engines:
            res = run_child(args, e)
            runs[e].append(res)
            if "error" in res:
                print("round %d %s: %s" % (r + 1, e, res["error"]), flush=True)
            else:
                print("round %d %-10s median %8.1f ms/step  hwm %6.0f MiB  other work %.2f cores"
                      "  losses %s" % (r + 1, e, statistics.median(res["ms"]), res["hwm_kib"] / 1024,
                                       res["other_cores"], " ".join("%.4f" % x for x in res["losses"][:4])),
                      flush=True)
    fail = False
    rows = {}
    for e in engines:
        ok = [x for x in runs[e] if "error" not in x]
        if not ok:
            fail = True
            continue
        rows[e] = {"ms": statistics.median([m for x in ok for m in x["ms"]]),
                   "hwm_mib": max(x["hwm_kib"] for x in ok) / 1024,
                   "other": max(x["other_cores"] for x in ok),
                   "loss1": ok[0]["losses"][0],
                   "arena_mib": ok[0].get("arena_bytes", 0) / 2**20}
    flop = 6.0 * 123.65e6 * args.batch * args.seq  # matmul parameters (LM head included) x tokens
    peak = PEAK_GFLOPS.get(args.threads, 265.0 * args.threads)
    lines = ["| engine | ms/step (median) | kernc/PyTorch | peak memory (VmHWM) | kernc arena | "
             "fraction of fp32 peak | loss at step 1 | other work (cores) |",
             "|---|---|---|---|---|---|---|---|"]
    base = rows.get("pytorch")
    for e, r in rows.items():
        ratio = "%.2f" % (r["ms"] / base["ms"]) if base and e != "pytorch" else "-"
        arena = "%.0f MiB" % r["arena_mib"] if r["arena_mib"] else "-"
        lines.append("| %s | %.1f | %s | %.0f MiB | %s | %.0f%% | %.4f | %.2f |"
                     % (e, r["ms"], ratio, r["hwm_mib"], arena,
                        100 * flop / (r["ms"] * 1e-3) / (peak * 1e9), r["loss1"], r["other"]))
    if base and "kernc" in rows and abs(rows["kernc"]["loss1"] - base["loss1"]) > 1e-3 * abs(base["loss1"]):
        print("loss at step 1 differs: kernc %.6f, PyTorch %.6f" % (rows["kernc"]["loss1"], base["loss1"]))
        fail = True
    table = "\n".join(lines)
    print("\nGPT-2 small shaped, batch %d x %d tokens, AdamW, %d threads, %d timed steps x %d rounds\n"
          % (args.batch, args.seq, args.threads, args.steps, args.rounds))
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "runs": runs}, f, indent=1)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
