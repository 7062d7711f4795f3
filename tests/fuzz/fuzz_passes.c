/*
 * tests/fuzz/fuzz_passes.c - libFuzzer target: text IR -> the CPU pass pipeline (verifier after
 * every pass) -> the CPU code generator, and for some inputs on to LLVM's machine code and one
 * kc_run.
 *
 * Every input that parses, verifies and is small goes through the CPU target's pipeline (fold
 * without an evaluator) and kc_cpu_lower_module, whose LLVM IR must pass LLVM's verifier: that
 * is all of kernc's own code between a graph and the IR it hands LLVM, at well under a
 * millisecond an input. One input in JIT_EVERY (picked by a hash of its bytes, so a rerun
 * picks the same) also goes through kc_compile (fold with the JIT evaluator, O3, machine code)
 * and one kc_run, which costs 10-20 ms: LLVM's own passes would otherwise take the whole budget.
 * Only small graphs are taken: at most MAX_NODES nodes and MAX_TENSORS constants, and with every
 * symbol bound to SYM_VALUE each value and constant has at most MAX_ELEMS elements; anything else
 * is skipped (return 0, not a finding). Run inputs get deterministic pseudo-random data derived
 * from the input bytes.
 * Invariants checked (a violation is __builtin_trap(), i.e. a finding):
 *   - a graph that parses and verifies still verifies after each pass (verify_each: the pass
 *     manager reports "verifier failed after pass ..." otherwise);
 *   - the lowered module passes LLVM's verifier;
 *   - passes, lowering, compile and run either succeed or fail with a message; no crash, leak
 *     or sanitizer report.
 */
#include "codegen/codegen.h"
#include "codegen/cpu/cpu.h"
#include "ir/internal.h"
#include "kernc.h"
#include "passes/passes.h"
#include "tests/fuzz/fuzz_util.h"

#include <llvm-c/Analysis.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 48
#define MAX_TENSORS 16
#define MAX_ELEMS 4096
#define SYM_VALUE 2
#define JIT_EVERY 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void finding(const char *what, const char *msg) {
  fprintf(stderr, "fuzz_passes: %s: %s\n", what, msg ? msg : "");
  __builtin_trap();
}

static bool bind_small(void *user, const char *name, int64_t *v) {
  (void)user;
  (void)name;
  *v = SYM_VALUE;
  return true;
}

/* Element count of dims with symbols bound small, when it is at most MAX_ELEMS. */
static bool small_dims(const kc_graph *g, int rank, const kc_dim *dims, int64_t *shape) {
  if (rank < 0 || rank > KC_MAX_RANK) return false;
  int64_t n = 1;
  for (int i = 0; i < rank; i++) {
    int64_t v;
    if (!kc_dim_eval(g, dims[i], bind_small, NULL, &v) || v < 0 || v > MAX_ELEMS) return false;
    n *= v;
    if (n > MAX_ELEMS) return false;
    if (shape) shape[i] = v;
  }
  return true;
}

/* Is graph g (and every body in it) small enough to compile and run cheaply? */
static bool small_graph(const kc_graph *g, int depth) {
  if (depth > 4 || g->nnodes > MAX_NODES || g->ntensors > MAX_TENSORS) return false;
  for (uint32_t i = 1; i < g->nvals; i++) {
    const kc_value *v = &g->vals[i];
    if (v->dtype != KC_DT_NONE && !small_dims(g, v->rank, v->dims, NULL)) return false;
  }
  for (uint32_t i = 0; i < g->ntensors; i++) {
    int64_t n = 1;
    for (int d = 0; d < g->tensors[i].rank; d++)
      if (__builtin_mul_overflow(n, g->tensors[i].dims[d], &n) || n > MAX_ELEMS) return false;
  }
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].body && !small_graph(g->nodes[i].body, depth + 1)) return false;
  return true;
}

static uint64_t next(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 33;
}

/* Small values: floats in [-2, 2), integers in [0, 3) (valid as most indices and axes), bools;
 * f16/bf16 are left zero. */
static void fill(kc_dtype t, void *p, int64_t n, uint64_t *s) {
  for (int64_t i = 0; i < n; i++) {
    int64_t r = (int64_t)(next(s) % 3);
    switch (t) {
    case KC_F32: ((float *)p)[i] = (float)(next(s) % 4096) / 1024.0f - 2.0f; break;
    case KC_F64: ((double *)p)[i] = (double)(next(s) % 4096) / 1024.0 - 2.0; break;
    case KC_I64: ((int64_t *)p)[i] = r; break;
    case KC_I32: ((int32_t *)p)[i] = (int32_t)r; break;
    case KC_BOOL: ((uint8_t *)p)[i] = (uint8_t)(r & 1); break;
    case KC_I8:
    case KC_U8: ((uint8_t *)p)[i] = (uint8_t)r; break;
    default: break;
    }
  }
}

static void compile_and_run(kc_context *ctx, const kc_graph *g, uint64_t seed) {
  kc_compile_options o = {.target = "cpu", .passes = NULL, .threads = 1};
  kc_module *m = NULL;
  kc_status s = kc_compile(ctx, g, &o, &m);
  if (s != KC_OK) {
    const char *msg = kc_last_error(ctx);
    if (strstr(msg, "verifier failed after pass")) finding("a pass broke the graph", msg);
    if (!msg[0]) finding("compile failed without a message", "");
    kc_module_free(m);
    return;
  }
  kc_tensor_desc in[64], out[64];
  void *bufs[64] = {0};
  uint32_t nin = g->ninputs, nout = g->noutputs;
  bool ok = nin <= 64 && nout <= 64 && nout > 0;
  for (uint32_t i = 0; ok && i < nin; i++) {
    const kc_value *v = &g->vals[g->inputs[i].id];
    memset(&in[i], 0, sizeof in[i]);
    in[i].dtype = v->dtype;
    in[i].rank = v->rank;
    ok = small_dims(g, v->rank, v->dims, in[i].dims);
    int64_t n = 1;
    for (int d = 0; ok && d < v->rank; d++)
      n *= in[i].dims[d];
    bufs[i] = ok ? calloc((size_t)n + 1, kc_dtype_size(v->dtype)) : NULL;
    if (!bufs[i]) ok = false;
    if (ok) fill(v->dtype, bufs[i], n, &seed);
    in[i].data = bufs[i];
  }
  if (ok) {
    memset(out, 0, sizeof out);
    s = kc_run(m, in, nin, out, nout);
    if (s != KC_OK && !kc_last_error(ctx)[0]) finding("run failed without a message", "");
  }
  for (uint32_t i = 0; i < nin && i < 64; i++)
    free(bufs[i]);
  kc_module_free(m);
}

/* The pipeline and the lowering, on g in place. The kc_cpu (its LLJIT is never used here) is
 * made once per process: a fresh one per input would cost more than the input. */
static void lower_only(kc_context *ctx, kc_graph *g) {
  static kc_context *cpu_ctx;
  static kc_cpu *cpu;
  if (!cpu && (!(cpu_ctx = kc_context_new()) || kc_cpu_new(cpu_ctx, &cpu) != KC_OK))
    finding("cannot make the CPU target", cpu_ctx ? kc_last_error(cpu_ctx) : "");
  kc_pipeline p;
  if (kc_pipeline_for_target(ctx, "cpu", &p) != KC_OK) finding("no cpu pipeline", "");
  kc_pass_options po = {.no_print_on_fail = true};
  kc_status s = kc_pipeline_run(&p, g, &po);
  if (s == KC_OK) s = kc_graph_verify(g);
  if (s != KC_OK) {
    const char *msg = kc_last_error(ctx);
    if (strstr(msg, "verifier failed after pass")) finding("a pass broke the graph", msg);
    if (!msg[0]) finding("the pipeline failed without a message", "");
    return;
  }
  kc_cpu_kernel *k = calloc(g->nnodes + 1, sizeof *k);
  LLVMModuleRef mod = NULL;
  if (!k) return;
  kc_clear_error(ctx);
  kc_clear_error(cpu_ctx);
  s = kc_cpu_lower_module(cpu, g, k, &mod);
  free(k);
  if (s != KC_OK) {
    if (!kc_last_error(ctx)[0] && !kc_last_error(cpu_ctx)[0])
      finding("lowering failed without a message", "");
    return;
  }
  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) finding("invalid LLVM IR", msg);
  LLVMDisposeMessage(msg);
  LLVMDisposeModule(mod);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384) return 0;
  char *src = malloc(size + 1);
  kc_context *ctx = kc_context_new();
  if (!src || !ctx) {
    free(src);
    kc_context_free(ctx);
    return 0;
  }
  memcpy(src, data, size);
  src[size] = 0;
  kc_context_options(ctx)->verify_each = 1;
  kc_context_options(ctx)->threads = 1;
  kc_graph *g = NULL;
  if (!big_dense(src) && kc_graph_parse(ctx, src, "fuzz.kir", &g) == KC_OK &&
      kc_graph_verify(g) == KC_OK && small_graph(g, 0)) {
    uint64_t seed = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
      seed = (seed ^ data[i]) * 1099511628211ull;
    if (seed % JIT_EVERY == 0)
      compile_and_run(ctx, g, seed);
    else
      lower_only(ctx, g);
  }
  kc_graph_free(g);
  kc_context_free(ctx);
  free(src);
  return 0;
}
