/*
 * tests/fuzz/fuzz_passes.c - libFuzzer target: text IR -> the default pass pipeline (verifier
 * after every pass) -> the CPU code generator (kc_compile) -> one kc_run.
 *
 * Only small graphs are taken, so one input costs milliseconds, not seconds: at most MAX_NODES
 * nodes and MAX_TENSORS constants, and with every symbol bound to SYM_VALUE each value and
 * constant has at most MAX_ELEMS elements; anything else is skipped (return 0, not a finding).
 * Inputs get deterministic pseudo-random data derived from the input bytes.
 * Invariants checked (a violation is __builtin_trap(), i.e. a finding):
 *   - a graph that parses and verifies still verifies after each pass (ctx verify_each: the pass
 *     manager reports "verifier failed after pass ..." otherwise);
 *   - compile and run either succeed or fail with a message; no crash, leak or sanitizer report.
 */
#include "ir/internal.h"
#include "kernc.h"
#include "tests/fuzz/fuzz_util.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 48
#define MAX_TENSORS 16
#define MAX_ELEMS 4096
#define SYM_VALUE 2

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
    compile_and_run(ctx, g, seed);
  }
  kc_graph_free(g);
  kc_context_free(ctx);
  free(src);
  return 0;
}
