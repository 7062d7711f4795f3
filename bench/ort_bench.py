#!/usr/bin/env python3
"""bench/ort_bench.py - kernc beside ONNX Runtime (CPU provider) on transformer models, in one
process, on the same model, threads and inputs. bench/run.sh calls it after building kernc and
exporting the models (bench/export_models.py); run it by hand as

    python3 bench/ort_bench.py --lib build-bench/libkernc.so --models bench/models [--threads 2]

For each row (MiniLM encoder 1x128 and 8x128, GPT-2 decoder full forward on 1x128 tokens, the
MiniLM encoder dynamically quantized to int8 by ORT's quantize_dynamic at 1x128 and 8x128, ViT-S/16
encoder on 1 and 8 images of 224x224):
  - latency: both engines loaded in this process, taking turns by blocks: one untimed run, then
    --block-runs timed runs back to back, then a wait until the engine's worker threads are idle
    (no CPU used for --settle-ms, read from /proc/self/task/*/schedstat) before the other engine
    starts; the first engine alternates between rounds. Each engine is thus timed in its steady
    state (its own threads hot, its own data in cache) and never beside the other's threads:
    ORT's intra-op workers spin for tens of ms after a run returns, which, with fixed short
    pauses between single alternating runs (--method alternate, the old method), kept a core
    busy during kernc's runs and doubled kernc's times on 2 cores (bench/README.md). Median
    (and p10/p90) of N runs each, N from a per-row time budget (--row-budget-s) between
    --min-iters and --max-iters;
  - agreement: max |kernc - ORT| over all outputs of the last run, next to max |ORT|;
  - peak RSS: each engine alone in a child process (this script with --child), which loads and
    compiles the model, runs the row's shape a few times and reports VmHWM from /proc/self/status;
    a child that only imports numpy gives the interpreter's own share (printed as "baseline");
  - kernc compile time: kc_onnx_load and kc_compile, timed in this process (one compile per model:
    batch and seq are symbolic, so both encoder rows share it); ORT's session creation beside it.
kernc's time is kc_run alone: its outputs stay in the module's memory (kernc's API); ORT's is
InferenceSession.run, which returns fresh numpy arrays (ORT's API).

Prints every figure, then the markdown table; --markdown FILE and --json FILE write them too.
Exits 1 when an engine failed or the outputs disagree (the table is still printed).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def import_kernc(lib_path):
    """The kernc Python package (python/ of this tree unless one is installed) on libkernc at
    lib_path: the package opens $KERNC_LIBRARY at its first call."""
    os.environ["KERNC_LIBRARY"] = os.path.abspath(lib_path)
    try:
        import kernc
    except ImportError:
        sys.path.insert(0, os.path.join(HERE, "..", "python"))
        import kernc
    return kernc


# ---- rows --------------------------------------------------------------------------------------


def encoder_inputs(batch, seq, vocab=30522, seed=0):
    """Token ids, a padding mask with ragged lengths (row i keeps seq - 8*i tokens, as a padded
    batch of sentences would), token types all 0 (single sentences, as sentence-transformers)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    for i in range(batch):
        mask[i, max(1, seq - 8 * i):] = 0
    return {"input_ids": ids, "attention_mask": mask,
            "token_type_ids": np.zeros((batch, seq), np.int64)}


def decoder_inputs(batch, seq, vocab=50257, seed=1):
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64)}


def image_inputs(batch, size=224, seed=2):
    """Pixel values as a normalized image batch would have them (about N(0, 1))."""
    rng = np.random.default_rng(seed)
    return {"pixel_values": rng.standard_normal((batch, 3, size, size), dtype=np.float32)}


# name, model file, shape label, inputs
ROWS = [
    ("MiniLM-L6 encoder", "minilm.onnx", "1x128", lambda: encoder_inputs(1, 128)),
    ("MiniLM-L6 encoder", "minilm.onnx", "8x128", lambda: encoder_inputs(8, 128)),
    ("GPT-2 small decoder", "gpt2.onnx", "1x128", lambda: decoder_inputs(1, 128)),
    ("MiniLM-L6 int8 (dynamic)", "minilm_int8.onnx", "1x128", lambda: encoder_inputs(1, 128)),
    ("MiniLM-L6 int8 (dynamic)", "minilm_int8.onnx", "8x128", lambda: encoder_inputs(8, 128)),
    ("ViT-S/16 encoder", "vit_s.onnx", "1x3x224x224", lambda: image_inputs(1)),
    ("ViT-S/16 encoder", "vit_s.onnx", "8x3x224x224", lambda: image_inputs(8)),
]


def quantize_minilm(models):
    """minilm_int8.onnx: minilm.onnx through ONNX Runtime's own quantize_dynamic (int8 weights per
    tensor, MatMuls by weights only: DynamicQuantizeLinear, MatMulInteger, Cast, Mul, Add), what
    one call gives ORT's users; made again when minilm.onnx is newer."""
    src, dst = os.path.join(models, "minilm.onnx"), os.path.join(models, "minilm_int8.onnx")
    if os.path.exists(dst) and os.path.getmtime(dst) >= os.path.getmtime(src):
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(src, dst + ".tmp", weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    os.replace(dst + ".tmp", dst)


# models made here from an exported one, before the rows that need them run
DERIVED = {"minilm_int8.onnx": quantize_minilm}

# Agreement with ORT, relative to max(1, max |ORT output|); 1e-3 unless listed. int8: a float
# difference of 1e-6 that moves one activation across a quantization step changes its product
# by a whole step, and six layers amplify it: ORT itself, ORT_ENABLE_ALL (its fused int8
# kernels) against ORT_DISABLE_ALL, differs by 0.005 (1x128) and 0.036 (8x128) on this model,
# up to 0.5% of the largest output.
TOLERANCE = {"minilm_int8.onnx": 1e-2}


# ---- engines -----------------------------------------------------------------------------------


class Kernc:
    name = "kernc"

    def __init__(self, lib_path, model, threads):
        kernc = import_kernc(lib_path)
        kernc.library_path()  # open the library outside the timed compile
        t0 = time.perf_counter()
        self.mod = kernc.compile(model, threads=threads)
        self.init_s = time.perf_counter() - t0
        self.mod.set_threads(threads)

    def bind(self, inputs):
        return lambda: self.mod.run(inputs, copy=False)

    def outputs(self, inputs):
        return list(self.mod.run(inputs).values())

    def close(self):
        self.mod.close()


class Ort:
    name = "ORT"

    def __init__(self, model, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        self.sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.init_s = time.perf_counter() - t0
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def bind(self, inputs):
        return lambda: self.sess.run(self.out_names, inputs)

    def outputs(self, inputs):
        return self.sess.run(self.out_names, inputs)

    def close(self):
        self.sess = None


def make_engine(which, args, model):
    return Kernc(args.lib, model, args.threads) if which == "kernc" else Ort(model, args.threads)


# ---- peak RSS in a child process -----------------------------------------------------------------


def vm_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child_main(args):
    """--child ENGINE ROW: load, compile, run the row a few times; print VmHWM as JSON."""
    res = {"engine": args.child[0]}
    try:
        if args.child[0] != "none":
            name, model, shape, make = ROWS[int(args.child[1])]
            inputs = make()
            eng = make_engine(args.child[0], args, os.path.join(args.models, model))
            res["rss_init_kib"], res["hwm_init_kib"] = vm_kib("VmRSS"), vm_kib("VmHWM")
            run = eng.bind(inputs)
            for _ in range(args.rss_runs):
                run()
            res["rss_run_kib"] = vm_kib("VmRSS")
            res["init_s"] = eng.init_s
            if args.child[0] == "kernc":
                res["arena_bytes"] = eng.mod.peak_bytes
        res["hwm_kib"] = vm_kib("VmHWM")
    except Exception as e:  # reported by the parent with the row
        res["error"] = "%s: %s" % (type(e).__name__, e)
    print("RSS-JSON " + json.dumps(res), flush=True)
    return 0


def child_rss(args, engine, row_index):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, str(row_index),
           "--lib", args.lib, "--models", args.models, "--threads", str(args.threads),
           "--rss-runs", str(args.rss_runs)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("RSS-JSON "):
            return json.loads(line[9:])
    how = "killed by signal %d" % -p.returncode if p.returncode < 0 else "exited %d" % p.returncode
    tail = (p.stderr or p.stdout).strip()[-2000:]
    return {"error": "child process %s%s" % (how, ": " + tail if tail else ""), "crashed": True}


def op_summary(text):
    """'N kernels-or-views: op count, ...' from the text IR (sources: inputs, weights, constants
    left out), so the log shows which fusions fired."""
    import collections
    import re
    ops = collections.Counter(m.group(1) for m in re.finditer(r"^\s*%[^=]*=\s*([A-Za-z_][\w.]*)",
                                                              text, re.M))
    for src in ("weight", "const", "constant", "input"):
        ops.pop(src, None)
    return "%d nodes; %s" % (sum(ops.values()), ", ".join("%s %d" % kv for kv in ops.most_common()))


# ---- timing ------------------------------------------------------------------------------------


def pct(v, q):
    return float(np.percentile(np.array(v), q))


class CpuMeter:
    """CPU time the rest of the machine uses, in cores: all CPUs' busy time from /proc/stat minus
    this process's own (its threads included), over wall time. Other work on these 2-core
    machines is what makes timings move, so the log says how much there was."""

    HZ = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / CpuMeter.HZ  # all but idle and iowait

    def __init__(self):
        t = os.times()
        self.t0, self.b0, self.own0 = time.monotonic(), self._busy(), t.user + t.system

    def other_cores(self):
        t = os.times()
        wall = time.monotonic() - self.t0
        other = (self._busy() - self.b0) - (t.user + t.system - self.own0)
        return max(0.0, other / wall) if wall > 0 else 0.0


def wait_quiet(args, log):
    """Wait up to --quiet-wait seconds for the rest of the machine to use < --quiet-cores."""
    t0 = time.monotonic()
    while True:
        m = CpuMeter()
        time.sleep(0.5)
        other = m.other_cores()
        waited = time.monotonic() - t0
        if other < args.quiet_cores or waited >= args.quiet_wait:
            if waited > 0.6:
                log("    waited %.0f s for a quieter machine (other work now %.2f cores)" % (waited, other))
            return


def other_threads_ns():
    """CPU time (ns) of every thread of this process but the main one: the engines' worker
    threads (and numpy's, which stay asleep). From /proc/self/task/*/schedstat."""
    main, total = str(os.getpid()), 0
    for tid in os.listdir("/proc/self/task"):
        if tid == main:
            continue
        try:
            with open("/proc/self/task/%s/schedstat" % tid) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total


def settle(args):
    """Sleep until no thread of this process but the main one has used more than 5% of a core
    for --settle-ms (worker threads that spin after a run have gone to sleep), at most 2 s.
    Returns how long they were still busy, in ms (None when they never stopped)."""
    step, need = 0.001, args.settle_ms / 1000.0
    t0 = time.perf_counter()
    last_cpu, last_t, quiet_since = other_threads_ns(), t0, t0
    while True:
        time.sleep(step)
        c, t = other_threads_ns(), time.perf_counter()
        if (c - last_cpu) > 0.05 * (t - last_t) * 1e9:
            quiet_since = t
        last_cpu, last_t = c, t
        if t - quiet_since >= need:
            return (quiet_since - t0) * 1e3
        if t - t0 > 2.0:
            return None


def measure_blocks(runs, args, log):
    """runs: [(name, fn)]. Engines take turns by blocks: one untimed run, then --block-runs
    timed runs back to back (the engine's steady state: its own threads hot, its own data in
    cache), then settle() so that its worker threads are idle before the other engine starts.
    Returns ({name: [s]}, {name: [ms its threads stayed busy after a block]})."""
    for _, fn in runs:  # warm-up, each engine alone
        for _ in range(args.warmup):
            fn()
        settle(args)
    t0 = time.perf_counter()
    for _, fn in runs:  # one more block-sized round to size N
        for _ in range(args.block_runs + 1):
            fn()
    per_run = (time.perf_counter() - t0) / (len(runs) * (args.block_runs + 1))
    n = int(min(args.max_iters, max(args.min_iters, args.row_budget_s / (len(runs) * per_run))))
    nblocks = max(1, -(-n // args.block_runs))
    log("    blocks: %d per engine of 1 untimed + %d timed runs (%d timed runs each, ~%.1f ms "
        "per run), engines idle between blocks" % (nblocks, args.block_runs,
                                                   nblocks * args.block_runs, per_run * 1e3))
    times = {name: [] for name, _ in runs}
    busy = {name: [] for name, _ in runs}
    settle(args)
    for b in range(nblocks):
        order = runs if b % 2 == 0 else runs[::-1]  # each engine goes first in half the rounds
        for name, fn in order:
            fn()
            for _ in range(args.block_runs):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            busy[name].append(settle(args))
    return times, busy


def measure_alternate(runs, args, log):
    """The old method, kept to show the interference (bench/README.md): after warm-up, single
    runs alternate strictly with a fixed --gap-ms pause, so one engine's spinning threads may
    still run during the other's run. Returns ({name: [s]}, {})."""
    gap = args.gap_ms / 1000.0
    for _ in range(args.warmup):
        for _, fn in runs:
            fn()
            time.sleep(gap)
    t0 = time.perf_counter()
    for _, fn in runs:  # one more round to size N
        fn()
        time.sleep(gap)
    per_round = time.perf_counter() - t0
    n = int(min(args.max_iters, max(args.min_iters, args.row_budget_s / per_round)))
    log("    alternate: %d warm-up runs each; ~%.0f ms per round -> %d timed runs each, %.0f ms "
        "gaps" % (args.warmup + 1, per_round * 1e3, n, args.gap_ms))
    times = {name: [] for name, _ in runs}
    for _ in range(n):
        for name, fn in runs:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            time.sleep(gap)
    return times, {}


def compare(a_outs, b_outs):
    """max |a - b| and max |b| over all outputs (NaN when shapes differ)."""
    diff, ref = 0.0, 0.0
    for a, b in zip(a_outs, b_outs):
        if a.shape != b.shape:
            return float("nan"), float("nan"), "shape %s vs %s" % (a.shape, b.shape)
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
        diff = max(diff, float(np.nanmax(d)) if not np.isnan(d).any() else float("inf"))
        ref = max(ref, float(np.abs(b).max()))
    return diff, ref, None


# ---- main --------------------------------------------------------------------------------------


def fmt_mib(kib):
    return "%.0f MiB" % (kib / 1024.0) if kib else "-"


def machine():
    name, cores = platform.processor() or "?", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "%s, %d cores" % (name, cores)


def main():
    ap = argparse.ArgumentParser(description="kernc beside ONNX Runtime on transformer models (bench/README.md)")
    ap.add_argument("--lib", default=os.path.join(HERE, "..", "build-bench", "libkernc.so"))
    ap.add_argument("--models", default=os.path.join(HERE, "models"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--max-iters", type=int, default=200)
    ap.add_argument("--row-budget-s", type=float, default=45.0,
                    help="time for the timed runs of one row")
    ap.add_argument("--method", choices=("blocks", "alternate"), default="blocks",
                    help="blocks: engines take turns by blocks of runs, each starting when the "
                    "other's threads are idle (default); alternate: single runs alternate with "
                    "--gap-ms pauses (the old method; lets ORT's spinning threads overlap kernc's "
                    "runs, see bench/README.md)")
    ap.add_argument("--block-runs", type=int, default=5, help="timed runs per block")
    ap.add_argument("--settle-ms", type=float, default=20.0,
                    help="blocks: an engine's threads count as idle after this long without "
                    "using CPU")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="alternate: pause between runs")
    ap.add_argument("--rss-runs", type=int, default=3)
    ap.add_argument("--quiet-wait", type=float, default=60.0,
                    help="before timing a row, wait up to this many seconds for other work on "
                    "the machine to drop below --quiet-cores (0: do not wait)")
    ap.add_argument("--quiet-cores", type=float, default=0.25)
    ap.add_argument("--rows", default="", help="comma-separated row indices (default: all)")
    ap.add_argument("--markdown", help="write the table here too")
    ap.add_argument("--json", help="write all figures here as JSON")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)

    def log(msg):
        print(msg, flush=True)

    import onnxruntime as ort
    rows = [int(x) for x in args.rows.split(",")] if args.rows else list(range(len(ROWS)))
    log("kernc vs ONNX Runtime %s (CPUExecutionProvider, ORT_ENABLE_ALL, intra_op %d, inter_op 1)"
        % (ort.__version__, args.threads))
    log("machine: %s; kernc threads %d; lib %s" % (machine(), args.threads, args.lib))
    load0 = os.getloadavg()
    log("load average at start: %.2f %.2f %.2f (other work on the machine skews timings)" % load0)
    base = child_rss(args, "none", 0)
    log("RSS baseline (python3 + numpy, nothing loaded): %s" % fmt_mib(base.get("hwm_kib", 0)))

    results, failed = [], False
    by_model = {}
    for i in rows:
        by_model.setdefault(ROWS[i][1], []).append(i)
    for model, idxs in by_model.items():
        path = os.path.join(args.models, model)
        if model in DERIVED:
            DERIVED[model](args.models)
        log("\n== %s (%s, %.0f MiB)" % (ROWS[idxs[0]][0], path, os.path.getsize(path) / 2**20))
        # Peak RSS first, each engine alone in a child process; this also shows whether an
        # engine crashes on the model (a kernc bug must not take the timing process down).
        rss, errors = {}, {}
        for i in idxs:
            for w in ("kernc", "ORT"):
                rss[i, w] = child_rss(args, w, i)
                if rss[i, w].get("crashed"):
                    errors[w] = "%s %s: %s" % (ROWS[i][0], ROWS[i][2], rss[i, w]["error"])
                    log("  %s crashed on %s %s in its RSS child: %s" % (w, ROWS[i][0], ROWS[i][2],
                                                                       rss[i, w]["error"]))
                    failed = True
        engines = {}
        for which in ("kernc", "ORT"):
            if which in errors:
                continue
            try:
                engines[which] = make_engine(which, args, path)
                log("  %s: %s %.2f s" % (which, "load + compile" if which == "kernc" else
                                         "session creation", engines[which].init_s))
                if which == "kernc":
                    log("  kernc graph after its passes: %s" % op_summary(engines[which].mod.graph_text()))
            except Exception as e:
                errors[which] = "%s: %s" % (type(e).__name__, e)
                log("  %s FAILED to load/compile: %s" % (which, errors[which]))
                failed = True
        for i in idxs:
            name, _, shape, make = ROWS[i]
            log("  -- %s %s" % (name, shape))
            inputs = make()
            r = {"model": name, "shape": shape, "file": model, "errors": dict(errors)}
            for which, e in engines.items():
                try:
                    t = time.perf_counter()
                    r[which + "_outputs"] = e.outputs(inputs)
                    r[which + "_first_ms"] = (time.perf_counter() - t) * 1e3
                except Exception as ex:
                    r["errors"][which] = "%s: %s" % (type(ex).__name__, ex)
                    log("    %s FAILED to run: %s" % (which, r["errors"][which]))
                    failed = True
            live = [(w, engines[w].bind(inputs)) for w in engines if w not in r["errors"]]
            if live:
                wait_quiet(args, log)
                meter = CpuMeter()
                measure = measure_blocks if args.method == "blocks" else measure_alternate
                times, busy = measure(live, args, log)
                r["other_cores"] = meter.other_cores()
                log("    other work on the machine while timing: %.2f cores" % r["other_cores"])
                for w, ts in times.items():
                    ms = [t * 1e3 for t in ts]
                    r[w] = {"median_ms": float(np.median(ms)), "p10_ms": pct(ms, 10),
                            "p90_ms": pct(ms, 90), "n": len(ms), "init_s": engines[w].init_s,
                            "first_ms": r[w + "_first_ms"]}
                    spun = ""
                    if busy.get(w):
                        ok = [x for x in busy[w] if x is not None]
                        r[w]["busy_after_ms"] = float(np.median(ok)) if ok else None
                        spun = ("; threads busy after its blocks: median %.1f ms" % np.median(ok)
                                if ok else "; threads still busy 2 s after its blocks")
                    log("    %-5s median %8.2f ms  p10 %8.2f  p90 %8.2f  (n=%d, first run %.1f ms%s)"
                        % (w, r[w]["median_ms"], r[w]["p10_ms"], r[w]["p90_ms"], len(ms),
                           r[w]["first_ms"], spun))
                if "kernc" in r and "ORT" in r:
                    r["ratio"] = r["kernc"]["median_ms"] / r["ORT"]["median_ms"]
                    r["ratio_p10"] = r["kernc"]["p10_ms"] / r["ORT"]["p10_ms"]
                    d, ref, why = compare(r["kernc_outputs"], r["ORT_outputs"])
                    r["max_abs_diff"], r["max_abs_ref"] = d, ref
                    tol = TOLERANCE.get(model, 1e-3) * max(1.0, ref)
                    r["agree"] = why is None and d <= tol
                    log("    ratio kernc/ORT %.2f; outputs: max |kernc - ORT| %.3g (max |ORT| %.3g,"
                        " tolerance %.3g) %s" % (r["ratio"], d, ref, tol,
                                                 "OK" if r["agree"] else "MISMATCH " + (why or "")))
                    failed |= not r["agree"]
            for w in ("kernc", "ORT"):
                r.pop(w + "_outputs", None)
                if w in r["errors"]:
                    continue
                rs = rss[i, w]
                if "error" in rs:
                    log("    %s RSS child failed: %s" % (w, rs["error"]))
                    continue
                r.setdefault(w, {})["peak_rss_kib"] = rs["hwm_kib"]
                extra = ", plan arena %.1f MiB" % (rs["arena_bytes"] / 2**20) if "arena_bytes" in rs else ""
                log("    %-5s peak RSS %s (own process: RSS %s and peak %s after %s, RSS %s after "
                    "%d runs%s)" % (w, fmt_mib(rs["hwm_kib"]), fmt_mib(rs["rss_init_kib"]),
                                    fmt_mib(rs["hwm_init_kib"]),
                                    "load + compile" if w == "kernc" else "session creation",
                                    fmt_mib(rs["rss_run_kib"]), args.rss_runs, extra))
                r[w]["rss_detail_kib"] = {k: rs[k] for k in ("rss_init_kib", "hwm_init_kib", "rss_run_kib")}
                if "arena_bytes" in rs:
                    r[w]["arena_bytes"] = rs["arena_bytes"]
            results.append(r)
        for e in engines.values():
            e.close()

    # ---- the table
    head = ("| model | shape (batch x seq) | kernc ms (median) | ORT ms (median) | kernc/ORT | "
            "kernc peak RSS | ORT peak RSS | kernc compile s | ORT session s | max abs diff | "
            "kernc/ORT at p10 | other load (cores) |")
    lines = [head, "|" + "---|" * 12]
    for r in results:
        k, o = r.get("kernc", {}), r.get("ORT", {})

        def ms(d):
            return "%.2f" % d["median_ms"] if "median_ms" in d else "-"
        kcell = ms(k) if "kernc" not in r["errors"] else "FAILED"
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["model"], r["shape"], kcell, ms(o),
            "%.2f" % r["ratio"] if "ratio" in r else "-",
            fmt_mib(k.get("peak_rss_kib", 0)), fmt_mib(o.get("peak_rss_kib", 0)),
            "%.2f" % k["init_s"] if "init_s" in k else "-",
            "%.2f" % o["init_s"] if "init_s" in o else "-",
            "%.2g" % r["max_abs_diff"] if "max_abs_diff" in r else "-",
            "%.2f" % r["ratio_p10"] if "ratio_p10" in r else "-",
            "%.2f" % r["other_cores"] if "other_cores" in r else "-"))
    load1 = os.getloadavg()
    notes = ["", "threads %d (both); timing: %s; peak RSS of each engine in its own process, including the "
             "python3 + numpy baseline of %s; 1-min load average %.2f at start, %.2f at end"
             % (args.threads, "blocks of %d runs per engine, each started with the other's "
                "threads idle" % args.block_runs if args.method == "blocks" else
                "single runs alternating with %.0f ms pauses" % args.gap_ms,
                fmt_mib(base.get("hwm_kib", 0)), load0[0], load1[0])]
    for r in results:
        for w, e in r["errors"].items():
            notes.append("%s %s: %s FAILED: %s" % (r["model"], r["shape"], w, e.splitlines()[0][:400]))
    table = "\n".join(lines + notes)
    log("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "threads": args.threads, "ort": ort.__version__,
                       "method": args.method, "block_runs": args.block_runs,
                       "rss_baseline_kib": base.get("hwm_kib"), "loadavg": [load0, load1],
                       "rows": results}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
