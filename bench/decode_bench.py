#!/usr/bin/env python3
"""bench/decode_bench.py - token-by-token decoding: kernc's session (the KV cache kernc derives
from the plain causal gpt2.onnx) beside ONNX Runtime on the same weights exported with past
inputs (gpt2_past.onnx, bench/export_models.py), in one process, same threads. bench/run.sh
calls it after ort_bench.py; by hand:

    python3 bench/decode_bench.py --lib build-bench/libkernc.so --models bench/models \\
        --stream build-bench/bench/stream_read [--threads 2] [--profile]

Steps, in order:
  1. export check (ORT only): ORT on gpt2_past.onnx decodes the same logits as ORT on gpt2.onnx
     (the full forward of --check-len tokens) at every position: the prefill of the first
     L - K tokens (P = 0) and then K single-token steps feeding present back as past, and K
     single-token steps from an empty past; the same for kernc's session (prefill, then steps);
  2. bandwidth: stream_read (bench/stream_read.c, a read of a 1 GiB buffer with 1 and THREADS
     threads, median of 9), before the rows and again after each;
  3. rows: prefill 1x128 (kernc: kc_session_decode of 128 tokens into an empty sequence; ORT:
     gpt2_past.onnx with P = 0), and decode at each --contexts C. Both engines take turns by
     blocks as ort_bench.py does (its settle(), CpuMeter and wait_quiet() are reused): a block
     resets the engine's cache to C - B - 1 tokens (kernc: kc_session_seq_truncate of a sequence
     prefilled once; ORT: the presents of its own prefill, kept), runs one untimed step, then B
     (--block-runs) timed single-token steps, each feeding the previous step's cache (ORT: the
     usual loop, present.N -> past_key_values.N). So the timed steps find C - B .. C - 1 tokens
     cached, and the last one attends over exactly C keys (GPT-2 has 1024 positions, so C = 1024
     is the longest possible). The tokens of a block's steps are the same in every block, so both
     engines compute the same logits: max |kernc - ORT| over the last block's steps;
  4. the bound: weight bytes read per token / bandwidth (THREADS threads; the largest of the
     medians: the bandwidth the machine showed it has), and each engine's fraction of it (bound
     ms / engine ms per token);
  5. --profile: kernc's per-kernel times over --profile-steps decode steps at each context
     (through the session's module: kc_session_module, kc_module_set_profile /
     kc_module_profile), grouped by what they compute,
     with the weight bytes each group's matmuls read and the GB/s they read them at.
Prints the table (markdown); --markdown and --json write it too. Exits 1 when a check or an
engine failed or the logits disagree.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ort_bench as OB  # noqa: E402  (settle, CpuMeter, wait_quiet, machine, pct, import_kernc)


def log(msg):
    print(msg, flush=True)


def ort_session(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# ---- the two engines, one row at a time ----------------------------------------------------------
# An engine row has begin_block() (untimed: reset the cache), prep(j) (untimed, before step j) and
# step(j) (step 0 of a block untimed, 1..B timed), and logits(j): the last token's logits of step
# j of the latest block.


class KerncRow:
    def __init__(self, sess, ids, steps, cached0, prefill):
        """prefill: the row times prefills of ids (a fresh sequence each step); otherwise the
        sequence holds ids[:cached0] and step j decodes steps[j]."""
        self.s, self.prefill = sess, prefill
        self.seq = sess.seq_new()
        v = sess.vocab
        self.out = np.zeros((len(steps), v), np.float32)
        if prefill:
            self.ids = np.ascontiguousarray(ids, np.int64)
            self.entries = [sess.entry(self.seq, self.ids, self.out[j]) for j in range(len(steps))]
        else:
            self.cached0 = cached0
            sess.decode(self.seq, ids[:cached0], logits=False)
            self.toks = [np.array([t], np.int64) for t in steps]
            self.entries = [sess.entry(self.seq, self.toks[j], self.out[j])
                            for j in range(len(steps))]

    def begin_block(self):
        if not self.prefill:
            self.s.truncate(self.seq, self.cached0)

    def prep(self, j):
        if self.prefill:
            self.s.truncate(self.seq, 0)

    def step(self, j):
        self.s.decode_entry(self.entries[j])

    def logits(self, j):
        return self.out[j]

    def close(self):
        self.s.seq_free(self.seq)


class OrtRow:
    def __init__(self, sess, ids, steps, cached0, prefill):
        self.sess, self.prefill = sess, prefill
        self.past_names = [i.name for i in sess.get_inputs()][1:]
        self.out_names = [o.name for o in sess.get_outputs()]
        shape = sess.get_inputs()[1].shape  # [batch, heads, past_seq, head_dim]
        empty = [np.zeros((1, shape[1], 0, shape[3]), np.float32) for _ in self.past_names]
        self.out = [None] * len(steps)
        if prefill:
            self.feed = dict(zip(self.past_names, empty))
            self.feed["input_ids"] = np.ascontiguousarray(ids, np.int64).reshape(1, -1)
        else:
            feed = dict(zip(self.past_names, empty))
            feed["input_ids"] = np.ascontiguousarray(ids[:cached0], np.int64).reshape(1, -1)
            self.past0 = sess.run(self.out_names, feed)[1:]
            self.toks = [np.array([[t]], np.int64) for t in steps]

    def begin_block(self):
        if not self.prefill:
            self.past = self.past0

    def prep(self, j):
        pass

    def step(self, j):
        if self.prefill:
            self.out[j] = self.sess.run(self.out_names, self.feed)[0]
            return
        feed = dict(zip(self.past_names, self.past))
        feed["input_ids"] = self.toks[j]
        o = self.sess.run(self.out_names, feed)
        self.out[j], self.past = o[0], o[1:]

    def logits(self, j):
        return self.out[j][0, -1]

    def close(self):
        self.past0 = self.past = None


def measure_blocks(rows, args):
    """rows: [(name, row)]. ort_bench.py's block method with a reset per block: each engine in
    turn runs begin_block, one untimed step, --block-runs timed steps, then settles (its threads
    idle) before the other starts; the first engine alternates. Returns ({name: [s]}, {name:
    [ms busy after its blocks]})."""
    B = args.block_runs

    def block(row, times=None):
        row.begin_block()
        for j in range(B + 1):
            row.prep(j)
            t = time.perf_counter()
            row.step(j)
            if times is not None and j > 0:
                times.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    for _, row in rows:  # warm-up, each engine alone
        for _ in range(args.warmup_blocks):
            block(row)
        OB.settle(args)
    per_step = (time.perf_counter() - t0) / (len(rows) * args.warmup_blocks * (B + 1))
    n = int(min(args.max_iters, max(args.min_iters, args.row_budget_s / (len(rows) * per_step))))
    nblocks = max(1, -(-n // B))
    log("    blocks: %d per engine of 1 untimed + %d timed steps (%d timed each, ~%.1f ms per "
        "step), engines idle between blocks" % (nblocks, B, nblocks * B, per_step * 1e3))
    times = {name: [] for name, _ in rows}
    busy = {name: [] for name, _ in rows}
    OB.settle(args)
    for b in range(nblocks):
        for name, row in (rows if b % 2 == 0 else rows[::-1]):
            block(row, times[name])
            busy[name].append(OB.settle(args))
    return times, busy


# ---- checks ------------------------------------------------------------------------------------


def check_sequence(args, ort_past, kernc_sess, ids):
    """Step 1: full-forward logits of ORT on gpt2.onnx at every position of ids, against ORT on
    gpt2_past.onnx and kernc's session, each as a prefill of the first L - K tokens and K
    single-token steps, and K single-token steps from nothing. Returns (ok, {what: diff})."""
    L, K = len(ids), args.check_steps
    full = ort_session(os.path.join(args.models, "gpt2.onnx"), args.threads)
    ref = full.run(None, {"input_ids": ids.reshape(1, -1)})[0][0]
    del full
    tol = 1e-3 * max(1.0, float(np.abs(ref).max()))
    res = {}

    def ort_decode(pre, upto):
        r = OrtRow(ort_past, ids[:pre], [], 0, True)
        o = ort_past.run(r.out_names, r.feed)
        got, past = [o[0][0]], o[1:]
        for p in range(pre, upto):
            feed = dict(zip(r.past_names, past))
            feed["input_ids"] = ids[p:p + 1].reshape(1, 1)
            o = ort_past.run(r.out_names, feed)
            got.append(o[0][0])
            past = o[1:]
        return np.concatenate(got)

    def kernc_decode(pre, upto):
        v = kernc_sess.vocab
        got = np.zeros((upto, v), np.float32)
        seq = kernc_sess.seq_new()
        try:
            kernc_sess.decode(seq, ids[:pre], got[:pre].reshape(-1), all=True)
            for p in range(pre, upto):
                kernc_sess.decode(seq, ids[p:p + 1], got[p])
        finally:
            kernc_sess.seq_free(seq)
        return got

    for name, fn in (("ORT past", ort_decode), ("kernc session", kernc_decode)):
        t0 = time.perf_counter()
        a = fn(L - K, L)  # positions 0..L-K-1 by the prefill, L-K..L-1 one at a time
        b = fn(1, K)  # position 0 by a 1-token prefill, 1..K-1 one at a time
        d = max(float(np.abs(a - ref).max()), float(np.abs(b - ref[:K]).max()))
        res[name] = d
        log("  %-13s vs ORT gpt2.onnx, all %d positions (prefill %d then %d steps; prefill 1 "
            "then %d steps): max |diff| %.3g (max |ref| %.3g, tolerance %.3g) %s (%.1f s)"
            % (name, L, L - K, K, K - 1, d, float(np.abs(ref).max()), tol,
               "OK" if d <= tol else "MISMATCH", time.perf_counter() - t0))
    return all(d <= tol for d in res.values()), res


def stream_bandwidth(args):
    """{threads: median GB/s} from stream_read (None when it is missing or failed)."""
    if not args.stream or not os.access(args.stream, os.X_OK):
        log("  stream_read not found (%s): no bound" % args.stream)
        return None
    threads = "1,%d" % args.threads if args.threads != 1 else "1"
    p = subprocess.run([args.stream, "--mib", str(args.stream_mib), "--threads", threads,
                        "--reps", str(args.stream_reps)], capture_output=True, text=True)
    res = {}
    for line in p.stdout.splitlines():
        m = re.match(r"STREAM threads=(\d+) median_gbs=([\d.]+)", line)
        if m:
            res[int(m.group(1))] = float(m.group(2))
        else:
            log("  " + line)
    if p.returncode != 0 or args.threads not in res:
        log("  stream_read failed: %s" % (p.stderr.strip() or p.returncode))
        return None
    return res


def weight_bytes(path):
    """Bytes of weights one decoded token reads, from the ONNX file: every floating-point
    initializer once, except the tables read through Gather (wte, wpe), of which a token reads
    one row. The tied LM head counts once: the export holds it as its own initializer (wte
    transposed by the exporter's constant folding), which the head's MatMul reads whole, while
    wte itself is only gathered. Other initializers (GPT-2's bool causal-mask buffers, 1 MB) are
    no weights and left out. Returns (bytes, details)."""
    import onnx
    m = onnx.load(path, load_external_data=False)
    size, other = {}, 0
    for t in m.graph.initializer:
        dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        if np.issubdtype(dt, np.floating):
            size[t.name] = (n * dt.itemsize, list(t.dims))
        else:
            other += n * dt.itemsize
    gathered = {n.input[0] for n in m.graph.node if n.op_type == "Gather" and n.input[0] in size}
    total = sum(b for b, _ in size.values())
    rows = sum(size[g][0] // size[g][1][0] for g in gathered if size[g][1])
    tables = sum(size[g][0] for g in gathered)
    detail = {"float_initializers": total, "gathered_tables": tables, "gathered_rows": rows,
              "gathered": sorted(gathered), "other_initializers": other}
    return total - tables + rows, detail


def param_count():
    """GPT-2 small's parameters (the PyTorch module's, wte counted once): 124,439,808."""
    V, H, F, L, P = 50257, 768, 3072, 12, 1024
    layer = 2 * 2 * H + (H * 3 * H + 3 * H) + (H * H + H) + (H * F + F) + (F * H + H)
    return V * H + P * H + L * layer + 2 * H


# ---- kernc's profile ---------------------------------------------------------------------------


def weights_of_kernels(graph_text):
    """{value id: (op, weight bytes it reads, result type, loc)} from the text IR."""
    wsize = {}
    for m in re.finditer(r"^\s*%(\d+) = weight \"[^\"]*\" : f32\[([\d,]*)\]", graph_text, re.M):
        dims = [int(x) for x in m.group(2).split(",") if x]
        wsize[m.group(1)] = 4 * int(np.prod(dims)) if dims else 4
    out = {}
    node = re.compile(r"^\s*%(\d+)(?:, %\d+)* = ([a-z_]+)\(([^)]*)\)[^:]*: ([^ ]+)"
                      r"(?: loc\(\"([^\"]*)\"\))?", re.M)
    for m in node.finditer(graph_text):
        args = re.findall(r"%(\d+)", m.group(3))
        # weights a matmul reads whole; a gather reads one row of its table, counted as none
        wb = sum(wsize.get(a, 0) for a in args) if m.group(2).startswith("matmul") else 0
        out[int(m.group(1))] = (m.group(2), wb, m.group(4), m.group(5) or "")
    return out


def profile_decode(sess, ids, C, steps, args):
    """kernc's kernels over `steps` decode steps whose caches hold C - steps .. C - 1 tokens."""
    seq = sess.seq_new()
    out = np.zeros(sess.vocab, np.float32)
    try:
        sess.decode(seq, ids[:C - steps - 1], logits=False)
        sess.decode(seq, ids[C - steps - 1:C - steps], out)
        sess.set_profile(True)
        t = []
        for p in range(C - steps, C):
            t0 = time.perf_counter()
            sess.decode(seq, ids[p:p + 1], out)
            t.append(time.perf_counter() - t0)
        prof = sess.profile()
        sess.set_profile(False)
    finally:
        sess.seq_free(seq)
    text = sess.graph_text()
    info = weights_of_kernels(text)
    step_ms = float(np.mean(t)) * 1e3
    kern_ms = sum(x["ns"] for x in prof) / steps / 1e6
    log("\n== kernc profile: %d decode steps, caches %d..%d tokens, %d threads: step mean %.2f "
        "ms (with the profile on), kernels %.2f ms, outside kernels %.2f ms"
        % (steps, C - steps, C - 1, args.threads, step_ms, kern_ms, step_ms - kern_ms))
    groups = {}
    for x in prof:
        op, wb, ty, loc = info.get(x["value"], (x["op"], 0, "?", x["loc"] or ""))
        what = op
        if op.startswith("matmul"):
            if "c_attn" in loc:
                what = "QKV projection (c_attn)"
            elif "/act/" in loc:
                what = "FFN up (c_fc + GELU)"
            elif re.search(r"/h\.\d+/Add_1$", loc):
                what = "FFN down (c_proj + residual)"
            elif re.search(r"/h\.\d+/Add$", loc):
                what = "attention out (c_proj + residual)"
            elif loc == "/MatMul":
                what = "LM head (h @ wte^T)"
        g = groups.setdefault(what, {"ns": 0, "n": 0, "bytes": 0})
        g["ns"] += x["ns"]
        g["n"] += 1
        g["bytes"] += wb
    log("  %-36s %8s %6s %9s %12s %9s" % ("kernels", "kernels", "share", "ms/token",
                                          "weight MB", "GB/s"))
    log("  (weight MB: the weights the group's matmuls read whole per token; GB/s: that over "
        "their time)")
    for what, g in sorted(groups.items(), key=lambda kv: -kv[1]["ns"]):
        ms = g["ns"] / steps / 1e6
        gbs = "%.1f" % (g["bytes"] / (ms * 1e-3) / 1e9) if g["bytes"] and ms > 0 else "-"
        log("  %-36s %8d %5.1f%% %9.3f %12.1f %9s" % (what, g["n"], 100 * ms / kern_ms, ms,
                                                     g["bytes"] / 1e6, gbs))
    return {"steps": steps, "context": C, "step_ms": step_ms, "kernel_ms": kern_ms,
            "groups": {k: {"ms": v["ns"] / steps / 1e6, "kernels": v["n"],
                           "weight_bytes": v["bytes"]} for k, v in groups.items()}}


# ---- main --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description="kernc's decoding session beside ONNX Runtime's "
                                 "past_key_values loop (bench/README.md)")
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "build-bench", "libkernc.so"))
    ap.add_argument("--models", default=os.path.join(HERE, "models"))
    ap.add_argument("--stream", default=os.path.join(HERE, "..", "build-bench", "bench",
                                                     "stream_read"),
                    help="the stream_read program (bench/stream_read.c)")
    ap.add_argument("--stream-mib", type=int, default=1024)
    ap.add_argument("--stream-reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--contexts", default="128,1024", help="decode rows: tokens the last timed "
                    "step attends over (cache C-1 + the new token)")
    ap.add_argument("--prefill", type=int, default=128, help="prefill row: tokens (0: none)")
    ap.add_argument("--block-runs", type=int, default=5, help="timed steps per block")
    ap.add_argument("--warmup-blocks", type=int, default=2)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--max-iters", type=int, default=200)
    ap.add_argument("--row-budget-s", type=float, default=30.0)
    ap.add_argument("--settle-ms", type=float, default=20.0)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--quiet-cores", type=float, default=0.25)
    ap.add_argument("--check-len", type=int, default=1024, help="export check: sequence length "
                    "(0: no check)")
    ap.add_argument("--check-steps", type=int, default=128,
                    help="export check: single-token steps at each end of the sequence")
    ap.add_argument("--profile", action="store_true",
                    help="kernc's per-kernel times over decode steps at each context")
    ap.add_argument("--profile-steps", type=int, default=30)
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    args = ap.parse_args()

    import onnxruntime as ort
    contexts = [int(x) for x in args.contexts.split(",") if x]
    B = args.block_runs
    load0 = os.getloadavg()
    git = subprocess.run(["git", "-C", HERE, "log", "-1", "--format=%h"], capture_output=True,
                         text=True).stdout.strip()
    versions = "onnxruntime %s, numpy %s, Python %s, kernc %s" % (
        ort.__version__, np.__version__, platform.python_version(), git or "?")
    log("kernc decode vs ONNX Runtime (CPUExecutionProvider, ORT_ENABLE_ALL, intra_op %d, "
        "inter_op 1); kernc session threads %d" % (args.threads, args.threads))
    log("machine: %s; %s" % (OB.machine(), versions))
    log("load average at start: %.2f %.2f %.2f" % load0)
    failed = False
    rng = np.random.default_rng(3)
    vocab = 50257
    n_ctx = 1024
    ids = rng.integers(0, vocab, n_ctx, dtype=np.int64)  # the context every row draws from
    steps = rng.integers(0, vocab, B + 1, dtype=np.int64)  # a block's step tokens

    t0 = time.perf_counter()
    ort_past = ort_session(os.path.join(args.models, "gpt2_past.onnx"), args.threads)
    ort_init = time.perf_counter() - t0
    kernc = OB.import_kernc(args.lib)
    kernc.library_path()  # open the library outside the timed session creation
    t0 = time.perf_counter()
    most = max(contexts + [args.prefill, args.check_len])
    kern = kernc.Session(os.path.join(args.models, "gpt2.onnx"), threads=args.threads,
                         max_len=most, max_seqs=2)
    kern_init = time.perf_counter() - t0
    log("ORT session (gpt2_past.onnx) %.2f s; kernc load + session (gpt2.onnx, contiguous cache "
        "of %d tokens x 2 sequences, %d bytes per token) %.2f s"
        % (ort_init, most, kern.cache_bytes_per_token, kern_init))

    res = {"machine": OB.machine(), "versions": versions, "threads": args.threads,
           "block_runs": B, "loadavg_start": load0, "rows": []}
    if args.check_len:
        log("\n== 1. export check: logits position by position")
        ok, diffs = check_sequence(args, ort_past, kern, ids[:args.check_len])
        res["check"] = {"ok": ok, "max_abs_diff": diffs, "len": args.check_len}
        failed |= not ok

    log("\n== 2. memory read bandwidth (stream_read; again after each row)")
    OB.wait_quiet(args, log)
    bws = [stream_bandwidth(args)]
    wbytes, wdetail = weight_bytes(os.path.join(args.models, "gpt2.onnx"))
    params = param_count()
    log("  weights read per token: %.2f MB (f32 initializers of gpt2.onnx %.2f MB, less the "
        "gathered tables %s of %.2f MB, of which a token reads one row each; %.2f MB of non-float "
        "initializers left out); the module has %d parameters (%.2f MB), the tied wte / LM head "
        "counted once" % (wbytes / 1e6, wdetail["float_initializers"] / 1e6,
                          "+".join(wdetail["gathered"]), wdetail["gathered_tables"] / 1e6,
                          wdetail["other_initializers"] / 1e6, params, 4 * params / 1e6))
    res.update({"weight_bytes": wbytes, "weight_detail": wdetail, "params": params})

    rows = ([("prefill", args.prefill)] if args.prefill else []) + [("decode", c) for c in contexts]
    for kind, C in rows:
        label = "prefill 1x%d" % C if kind == "prefill" else "decode, context %d" % C
        log("\n== 3. %s" % label)
        if kind == "decode" and C - B - 1 < 1:
            log("  skipped: context %d leaves no prefill before %d steps" % (C, B + 1))
            continue
        r = {"row": label, "kind": kind, "context": C}
        live = []
        for name, cls, sess in (("kernc", KerncRow, kern), ("ORT", OrtRow, ort_past)):
            try:
                if kind == "prefill":
                    live.append((name, cls(sess, ids[:C], steps, 0, True)))
                else:
                    live.append((name, cls(sess, ids, steps, C - B - 1, False)))
            except Exception as e:
                r.setdefault("errors", {})[name] = "%s: %s" % (type(e).__name__, e)
                log("  %s FAILED: %s" % (name, r["errors"][name]))
                failed = True
        if len(live) < 2:
            res["rows"].append(r)
            continue
        OB.wait_quiet(args, log)
        meter = OB.CpuMeter()
        times, busy = measure_blocks(live, args)
        r["other_cores"] = meter.other_cores()
        log("    other work on the machine while timing: %.2f cores" % r["other_cores"])
        for name, ts in times.items():
            ms = [t * 1e3 for t in ts]
            ok = [x for x in busy[name] if x is not None]
            r[name] = {"median_ms": float(np.median(ms)), "p10_ms": OB.pct(ms, 10),
                       "p90_ms": OB.pct(ms, 90), "n": len(ms),
                       "busy_after_ms": float(np.median(ok)) if ok else None}
            log("    %-5s median %8.2f ms  p10 %8.2f  p90 %8.2f  (n=%d%s)"
                % (name, r[name]["median_ms"], r[name]["p10_ms"], r[name]["p90_ms"], len(ms),
                   "; threads busy after its blocks: median %.1f ms" % np.median(ok) if ok
                   else ""))
        r["ratio"] = r["kernc"]["median_ms"] / r["ORT"]["median_ms"]
        r["ratio_p10"] = r["kernc"]["p10_ms"] / r["ORT"]["p10_ms"]
        rows_d = dict(live)
        d = max(float(np.abs(rows_d["kernc"].logits(j) - rows_d["ORT"].logits(j)).max())
                for j in range(B + 1))
        ref = max(float(np.abs(rows_d["ORT"].logits(j)).max()) for j in range(B + 1))
        tol = 1e-3 * max(1.0, ref)
        r["max_abs_diff"], r["max_abs_ref"], r["agree"] = d, ref, d <= tol
        failed |= d > tol
        log("    ratio kernc/ORT %.2f (at p10 %.2f); next-token logits of the block's %d steps: "
            "max |kernc - ORT| %.3g (max |ORT| %.3g, tolerance %.3g) %s"
            % (r["ratio"], r["ratio_p10"], B + 1, d, ref, tol, "OK" if d <= tol else "MISMATCH"))
        for _, row in live:
            row.close()
        res["rows"].append(r)
        log("    memory read bandwidth after the row:")
        bws.append(stream_bandwidth(args))

    got = [b[args.threads] for b in bws if b]
    bw = max(got) if got else None
    res["bandwidth_gbs"] = {"measurements": bws, "used": bw}
    if bw:
        bound_ms = wbytes / (bw * 1e9) * 1e3
        res["bound_ms"] = bound_ms
        log("\n== 4. bound: %.1f MB / %.1f GB/s (%d threads: the largest of the %d medians %s) = "
            "%.2f ms per token" % (wbytes / 1e6, bw, args.threads, len(got),
                                   " ".join("%.1f" % x for x in got), bound_ms))
        for r in res["rows"]:
            if r["kind"] == "decode" and "kernc" in r:
                r["kernc_fraction"] = bound_ms / r["kernc"]["median_ms"]
                r["ORT_fraction"] = bound_ms / r["ORT"]["median_ms"]
                kv = kern.cache_bytes_per_token * r["context"]
                r["bound_with_cache_ms"] = (wbytes + kv) / (bw * 1e9) * 1e3
                log("  %s: kernc at %.2f of the bound, ORT at %.2f (with the KV cache's %.1f MB "
                    "read too, the bound is %.2f ms)" % (r["row"], r["kernc_fraction"],
                                                         r["ORT_fraction"], kv / 1e6,
                                                         r["bound_with_cache_ms"]))

    if args.profile:
        res["profile"] = [profile_decode(kern, ids, C, args.profile_steps, args)
                          for C in contexts if C - args.profile_steps - 1 >= 1]

    # ---- the table
    load1 = os.getloadavg()
    res["loadavg_end"] = load1
    head = ("| row | kernc ms (median) | ORT ms (median) | kernc/ORT | kernc p10 | ORT p10 | "
            "kernc/ORT at p10 | bound ms | kernc / bound | ORT / bound | max abs diff | "
            "other load (cores) |")
    lines = [head, "|" + "---|" * 12]
    for r in res["rows"]:
        k, o = r.get("kernc", {}), r.get("ORT", {})

        def f(d, key, fmt="%.2f"):
            return fmt % d[key] if key in d and d[key] is not None else "-"
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["row"], f(k, "median_ms"), f(o, "median_ms"), f(r, "ratio"), f(k, "p10_ms"),
            f(o, "p10_ms"), f(r, "ratio_p10"),
            f(res, "bound_ms") if r["kind"] == "decode" else "-",
            f(r, "kernc_fraction"), f(r, "ORT_fraction"), f(r, "max_abs_diff", "%.2g"),
            f(r, "other_cores")))
    notes = ["", "threads %d (both engines); blocks of %d timed steps per engine, each started "
             "with the other's threads idle; decode row C: the timed steps find C-%d..C-1 tokens "
             "cached; bound = %.1f MB of weights per token / %s GB/s (stream_read, %d threads); "
             "1-min load average %.2f at start, %.2f at end; %s"
             % (args.threads, B, B, wbytes / 1e6, "%.1f" % bw if bw else "?", args.threads,
                load0[0], load1[0], versions)]
    if "check" in res:
        diffs = ", ".join("%s %.2g" % kv for kv in res["check"]["max_abs_diff"].items())
        notes.append("export check (%d positions): max |diff| vs ORT on gpt2.onnx: %s"
                     % (res["check"]["len"], diffs))
    for r in res["rows"]:
        for w, e in r.get("errors", {}).items():
            notes.append("%s: %s FAILED: %s" % (r["row"], w, e.splitlines()[0][:400]))
    table = "\n".join(lines + notes)
    log("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    kern.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
