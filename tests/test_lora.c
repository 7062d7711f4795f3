/*
 * tests/test_lora.c - kc_lora and kc_lora_merge (passes/lora.c). argv[2]: the tests/ folder.
 *
 * References are computed here, never by kernc: one layer y = x @ W + s * (x @ A) @ B in double
 * loops over the test's own A and B, for the three ways a weight reaches a matmul (directly,
 * through a transpose, gemm transB); on the exported models (gpt2_tiny, llama_tiny) the base
 * model's own outputs are the reference at step 0 (B = 0 adds exact zeros), and the merged graph
 * must give the unmerged one's outputs within rounding. The gradient test counts the backward
 * nodes that would produce a base-weight gradient: none with "*.lora_*" as the parameters, some
 * with "*" (so the count can see them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_tests = "tests";

static kc_tensor *tensor_named(kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

static uint32_t count_weights_suffix(const kc_graph *g, const char *suffix) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *nd = &g->nodes[i];
    if (nd->op != KC_OP_WEIGHT) continue;
    const char *nm = kc_node_string(nd, "name", "");
    size_t a = strlen(nm), b = strlen(suffix);
    n += a >= b && strcmp(nm + a - b, suffix) == 0;
  }
  return n;
}

/* A deterministic value in [-1, 1) for index i (the test's own numbers). */
static float test_value(uint32_t i, uint32_t salt) {
  uint32_t x = i * 2654435761u + salt * 40503u + 12345u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return (float)((double)(x % 20000u) / 10000.0 - 1.0);
}

/* Compile g (default pipeline) and run it on in; returns a malloc'd copy of output 0. */
static float *run_graph(kc_context *ctx, const kc_graph *g, const kc_tensor_desc *in, uint32_t nin,
                        size_t *count) {
  kc_module *m = NULL;
  if (kc_compile(ctx, g, NULL, &m) != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  kc_tensor_desc out = {0};
  th_run(ctx, m, in, nin, &out, 1);
  size_t n = (size_t)th_numel(out.rank, out.dims);
  float *copy = malloc(n * sizeof *copy);
  assert_non_null(copy);
  memcpy(copy, out.data, n * sizeof *copy);
  kc_module_free(m);
  *count = n;
  return copy;
}

/* Distance in units in the last place between two floats of the same sign (else a large
 * number unless both are zero). */
static int64_t ulps(float a, float b) {
  int32_t ia, ib;
  memcpy(&ia, &a, 4);
  memcpy(&ib, &b, 4);
  if ((ia < 0) != (ib < 0)) return a == b ? 0 : INT64_MAX;
  return llabs((long long)ia - (long long)ib);
}

static kc_graph *load_model(kc_context *ctx, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/models/%s/model.onnx", g_tests, name);
  kc_graph *g = NULL;
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s: %s", path, kc_last_error(ctx));
  return g;
}

static int64_t g_ids[2 * 7];
static kc_tensor_desc ids_input(void) {
  for (int i = 0; i < 14; i++)
    g_ids[i] = (i * 37 + 11) % 100;
  return th_desc("input_ids", KC_I64, 2, (int64_t[]){2, 7}, g_ids);
}

/* ---- step 0 equals the base model ---------------------------------------------------------- */

static void step0_equal(const char *model, const char *glob, uint32_t want_adapters) {
  kc_context *ctx = kc_context_new();
  kc_graph *base = load_model(ctx, model), *g = load_model(ctx, model);
  if (kc_lora(g, glob, 4, 8.0, 7) != KC_OK) fail_msg("kc_lora: %s", kc_last_error(ctx));
  assert_int_equal(kc_graph_verify(g), KC_OK);
  assert_int_equal(count_weights_suffix(g, ".lora_A"), want_adapters);
  assert_int_equal(count_weights_suffix(g, ".lora_B"), want_adapters);
  kc_tensor_desc in = ids_input();
  size_t n0, n1;
  float *y0 = run_graph(ctx, base, &in, 1, &n0), *y1 = run_graph(ctx, g, &in, 1, &n1);
  assert_int_equal(n0, n1);
  int64_t worst = 0;
  for (size_t i = 0; i < n0; i++)
    worst = ulps(y0[i], y1[i]) > worst ? ulps(y0[i], y1[i]) : worst;
  if (worst > 1) fail_msg("%s: outputs differ by %lld ulp at step 0", model, (long long)worst);
  /* the text form of the adapted graph round-trips */
  char *t1 = kc_graph_print_str(g);
  kc_graph *p = th_parse(ctx, t1);
  char *t2 = kc_graph_print_str(p);
  assert_string_equal(t1, t2);
  free(t1);
  free(t2);
  kc_graph_free(p);
  free(y0);
  free(y1);
  kc_graph_free(base);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void test_gpt2_step0(void **state) {
  (void)state;
  step0_equal("gpt2_tiny", "h.*.attn.c_*.weight", 4); /* c_attn, c_proj of 2 layers */
}

static void test_llama_step0(void **state) {
  (void)state;
  step0_equal("llama_tiny", "*_proj/MatMul", 14); /* q k v o gate up down, 2 layers: by loc */
}

/* ---- one layer against loops --------------------------------------------------------------- */

enum { BATCH = 3, IN = 5, OUT = 4, RANK = 2 };

/* y = x @ W  with W reached as `how`: 0 directly [IN,OUT], 1 transpose(W[OUT,IN]), 2 gemm transB
 * (W[OUT,IN]) with alpha 0.5 and a bias. w holds W in its layout. */
static kc_graph *one_layer(kc_context *ctx, int how, const float *w, const float *bias) {
  kc_graph *g = kc_graph_new(ctx, "layer");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){BATCH, IN});
  int64_t wd[2] = {how ? OUT : IN, how ? IN : OUT};
  kc_val wv = kc_weight(g, "W", KC_F32, 2, wd, w), y;
  if (how == 0)
    y = kc_matmul(g, x, wv);
  else if (how == 1)
    y = kc_matmul(g, x, kc_transpose(g, wv, 2, (int64_t[]){1, 0}));
  else
    y = kc_gemm(g, x, wv, kc_weight(g, "bias", KC_F32, 1, (int64_t[]){OUT}, bias), 0.5f, 1.0f, 0,
                1);
  kc_output(g, kc_relu(g, y), "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  return g;
}

static void one_layer_case(int how) {
  kc_context *ctx = kc_context_new();
  float w[IN * OUT], bias[OUT], x[BATCH * IN], a[IN * RANK], b[RANK * OUT];
  for (int i = 0; i < IN * OUT; i++)
    w[i] = test_value(i, 1);
  for (int i = 0; i < OUT; i++)
    bias[i] = test_value(i, 2);
  for (int i = 0; i < BATCH * IN; i++)
    x[i] = test_value(i, 3);
  for (int i = 0; i < IN * RANK; i++)
    a[i] = test_value(i, 4);
  for (int i = 0; i < RANK * OUT; i++)
    b[i] = test_value(i, 5);
  kc_graph *g = one_layer(ctx, how, w, bias);
  const double alpha = 3.0, s = alpha / RANK, galpha = how == 2 ? 0.5 : 1.0;
  assert_int_equal(kc_lora(g, "W", RANK, alpha, 42), KC_OK);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  kc_tensor *ta = tensor_named(g, "W.lora_A"), *tb = tensor_named(g, "W.lora_B");
  assert_non_null(ta);
  assert_non_null(tb);
  assert_int_equal(ta->dims[0], IN);
  assert_int_equal(ta->dims[1], RANK);
  assert_int_equal(tb->dims[0], RANK);
  assert_int_equal(tb->dims[1], OUT);
  /* init: A uniform within 1/sqrt(in), not constant; B zeros */
  const float *ai = ta->data, *bi = tb->data;
  double bound = 1.0 / sqrt((double)IN);
  bool varied = false;
  for (int i = 0; i < IN * RANK; i++) {
    assert_true(fabs(ai[i]) <= bound);
    varied = varied || ai[i] != ai[0];
  }
  assert_true(varied);
  for (int i = 0; i < RANK * OUT; i++)
    assert_true(bi[i] == 0.0f);
  /* same seed, same A; another seed, another A */
  kc_graph *g2 = one_layer(ctx, how, w, bias), *g3 = one_layer(ctx, how, w, bias);
  assert_int_equal(kc_lora(g2, "W", RANK, alpha, 42), KC_OK);
  assert_int_equal(kc_lora(g3, "W", RANK, alpha, 43), KC_OK);
  assert_memory_equal(tensor_named(g2, "W.lora_A")->data, ai, sizeof a);
  assert_memory_not_equal(tensor_named(g3, "W.lora_A")->data, ai, sizeof a);
  kc_graph_free(g2);
  kc_graph_free(g3);
  /* the test's own A and B */
  ta->data = a;
  tb->data = b;
  double ref[BATCH * OUT];
  for (int i = 0; i < BATCH; i++)
    for (int j = 0; j < OUT; j++) {
      double base = 0, lo = 0;
      for (int k = 0; k < IN; k++)
        base += (double)x[i * IN + k] * (how ? w[j * IN + k] : w[k * OUT + j]);
      for (int r = 0; r < RANK; r++) {
        double xa = 0;
        for (int k = 0; k < IN; k++)
          xa += (double)x[i * IN + k] * a[k * RANK + r];
        lo += xa * b[r * OUT + j];
      }
      double y = galpha * base + (how == 2 ? bias[j] : 0.0) + s * lo;
      ref[i * OUT + j] = y > 0 ? y : 0;
    }
  kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){BATCH, IN}, x);
  size_t n;
  float *y = run_graph(ctx, g, &in, 1, &n);
  assert_int_equal(n, BATCH * OUT);
  for (size_t i = 0; i < n; i++)
    if (fabs(y[i] - ref[i]) > 1e-5 * (1 + fabs(ref[i])))
      fail_msg("how %d: y[%zu] = %.9g, reference %.9g", how, i, y[i], ref[i]);
  /* merged: same numbers, no adapters left, W changed in its own layout */
  assert_int_equal(kc_lora_merge(g), KC_OK);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  assert_int_equal(count_weights_suffix(g, ".lora_A") + count_weights_suffix(g, ".lora_B"), 0);
  const float *wm = tensor_named(g, "W")->data;
  for (int i = 0; i < IN; i++)
    for (int j = 0; j < OUT; j++) {
      double ab = 0;
      for (int r = 0; r < RANK; r++)
        ab += (double)a[i * RANK + r] * b[r * OUT + j];
      int at = how ? j * IN + i : i * OUT + j;
      assert_true(fabs(wm[at] - (w[at] + s / galpha * ab)) < 1e-6);
    }
  float *ym = run_graph(ctx, g, &in, 1, &n);
  for (size_t i = 0; i < n; i++)
    if (fabs(ym[i] - ref[i]) > 1e-5 * (1 + fabs(ref[i])))
      fail_msg("merged, how %d: y[%zu] = %.9g, reference %.9g", how, i, ym[i], ref[i]);
  assert_int_equal(kc_lora_merge(g), KC_ERR_INVALID_ARG); /* nothing left to merge */
  /* the names are free again */
  assert_int_equal(kc_lora(g, "W", RANK, alpha, 1), KC_OK);
  free(y);
  free(ym);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void test_one_layer_direct(void **state) {
  (void)state;
  one_layer_case(0);
}
static void test_one_layer_transposed(void **state) {
  (void)state;
  one_layer_case(1);
}
static void test_one_layer_gemm(void **state) {
  (void)state;
  one_layer_case(2);
}

/* ---- merged model equals unmerged --------------------------------------------------------- */

static void set_adapters(kc_graph *g, float **keep, int *nkeep) {
  for (uint32_t i = 0; i < g->ntensors; i++) {
    kc_tensor *t = &g->tensors[i];
    if (!t->name || !strstr(t->name, ".lora_")) continue;
    size_t n = t->nbytes / sizeof(float);
    float *d = malloc(t->nbytes);
    assert_non_null(d);
    for (size_t k = 0; k < n; k++)
      d[k] = 0.2f * test_value((uint32_t)k, i);
    t->data = d;
    keep[(*nkeep)++] = d;
  }
}

static void merge_model(const char *model, const char *glob) {
  kc_context *ctx = kc_context_new();
  kc_graph *base = load_model(ctx, model), *g = load_model(ctx, model);
  assert_int_equal(kc_lora(g, glob, 4, 16.0, 3), KC_OK);
  float *keep[64];
  int nkeep = 0;
  set_adapters(g, keep, &nkeep);
  assert_true(nkeep > 0);
  kc_tensor_desc in = ids_input();
  size_t n0, n1, n2;
  float *y0 = run_graph(ctx, base, &in, 1, &n0), *y1 = run_graph(ctx, g, &in, 1, &n1);
  double diff = 0;
  for (size_t i = 0; i < n0; i++)
    diff = fmax(diff, fabs(y0[i] - y1[i]));
  assert_true(diff > 1e-3); /* the adapters do change the outputs */
  assert_int_equal(kc_lora_merge(g), KC_OK);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  float *y2 = run_graph(ctx, g, &in, 1, &n2);
  assert_int_equal(n1, n2);
  for (size_t i = 0; i < n1; i++)
    if (fabs(y1[i] - y2[i]) > 1e-4 * (1 + fabs(y1[i])))
      fail_msg("%s: merged %.9g, unmerged %.9g at %zu", model, y2[i], y1[i], i);
  for (int k = 0; k < nkeep; k++)
    free(keep[k]);
  free(y0);
  free(y1);
  free(y2);
  kc_graph_free(base);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void test_gpt2_merge(void **state) {
  (void)state;
  merge_model("gpt2_tiny", "*");
}
static void test_llama_merge(void **state) {
  (void)state;
  merge_model("llama_tiny", "*_proj/MatMul");
}

/* ---- gradients: no base-weight gradient is built --------------------------------------------- */

/* Backward nodes (index >= from) not reading a weight whose result has the static 2-D shape of
 * a targeted base weight (either orientation): what a base-weight gradient (a matmul, or a sum
 * of batched ones) would be. */
static uint32_t base_grad_matmuls(const kc_graph *g, uint32_t from) {
  uint32_t n = 0;
  for (uint32_t i = from; i < g->nnodes; i++) {
    const kc_node *nd = &g->nodes[i];
    const kc_value *v = kc_value_of(g, nd->out[0]);
    if (v->rank != 2 || nd->nout != 1) continue;
    bool reads_weight = false; /* transpose(W) for the input's adjoint is no weight gradient */
    for (uint32_t j = 0; j < nd->nin; j++) {
      uint32_t d = nd->in[j].id ? kc_value_of(g, nd->in[j])->def : 0;
      reads_weight = reads_weight || (d && g->nodes[d - 1].op == KC_OP_WEIGHT);
    }
    if (reads_weight) continue;
    for (uint32_t w = 0; w < g->nnodes; w++) {
      const kc_node *wn = &g->nodes[w];
      if (wn->op != KC_OP_WEIGHT) continue;
      char an[512];
      snprintf(an, sizeof an, "%s.lora_A", kc_node_string(wn, "name", ""));
      bool adapted = false;
      for (uint32_t k = 0; k < g->nnodes && !adapted; k++)
        adapted = g->nodes[k].op == KC_OP_WEIGHT &&
                  strcmp(kc_node_string(&g->nodes[k], "name", ""), an) == 0;
      const kc_value *wv = kc_value_of(g, wn->out[0]);
      if (adapted && wv->rank == 2 &&
          ((v->dims[0] == wv->dims[0] && v->dims[1] == wv->dims[1]) ||
           (v->dims[0] == wv->dims[1] && v->dims[1] == wv->dims[0]))) {
        n++;
        break;
      }
    }
  }
  return n;
}

static void grad_case(const char *model, const char *glob) {
  kc_context *ctx = kc_context_new();
  kc_graph *gs[2];
  uint32_t counts[2], hi[2];
  for (int k = 0; k < 2; k++) {
    kc_graph *g = gs[k] = load_model(ctx, model);
    assert_int_equal(kc_lora(g, glob, 4, 8.0, 1), KC_OK);
    kc_val y = kc_graph_output(g, 0);
    kc_output(g, kc_reduce_sum(g, kc_mul(g, y, y), 0, NULL, 0), "loss");
    hi[k] = g->nnodes;
    const char *lora[] = {"*.lora_A", "*.lora_B"}, *all[] = {"*"};
    kc_status s = k == 0 ? kc_grad(g, "loss", 2, lora) : kc_grad(g, "loss", 1, all);
    if (s != KC_OK) fail_msg("kc_grad: %s", kc_last_error(ctx));
    counts[k] = base_grad_matmuls(g, hi[k]);
  }
  print_message("%s: base-weight-shaped backward matmuls: %u with *.lora_*, %u with *\n", model,
                counts[0], counts[1]);
  assert_int_equal(counts[0], 0);
  assert_true(counts[1] > 0);
  /* the adapter gradients are there and run */
  kc_tensor_desc in = ids_input();
  kc_module *m = NULL;
  if (kc_compile(ctx, gs[0], NULL, &m) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  uint32_t nout = kc_graph_num_outputs(gs[0]);
  kc_tensor_desc *outs = calloc(nout, sizeof *outs);
  th_run(ctx, m, &in, 1, outs, nout);
  uint32_t ngrads = 0;
  for (uint32_t i = 0; i < nout; i++)
    ngrads += strstr(kc_graph_output_name(gs[0], i), ".lora_") != NULL;
  assert_int_equal(ngrads, 2 * count_weights_suffix(gs[0], ".lora_A"));
  free(outs);
  kc_module_free(m);
  kc_graph_free(gs[0]);
  kc_graph_free(gs[1]);
  kc_context_free(ctx);
}

static void test_gpt2_grad(void **state) {
  (void)state;
  grad_case("gpt2_tiny", "*");
}
static void test_llama_grad(void **state) {
  (void)state;
  grad_case("llama_tiny", "*_proj/MatMul");
}

/* ---- errors ---------------------------------------------------------------------------------- */

static void test_errors(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  float w[IN * OUT] = {0}, bias[OUT] = {0};
  kc_graph *g = one_layer(ctx, 0, w, bias);
  char *before = kc_graph_print_str(g);
  assert_int_equal(kc_lora(g, "nothing*", 2, 1.0, 0), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "nothing*"));
  assert_int_equal(kc_lora(g, "W", 0, 1.0, 0), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_lora(g, "W", -3, 1.0, 0), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_lora(g, NULL, 2, 1.0, 0), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_lora(g, "W", 2, NAN, 0), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_lora(g, "bias", 2, 1.0, 0), KC_ERR_INVALID_ARG); /* not a matmul weight */
  char *after = kc_graph_print_str(g);
  assert_string_equal(before, after);
  assert_int_equal(kc_lora_merge(g), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_lora(g, "W", 2, 1.0, 0), KC_OK);
  assert_int_equal(kc_lora(g, "W", 2, 1.0, 0), KC_ERR_INVALID_ARG); /* adapters already */
  free(before);
  free(after);
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc > 2) g_tests = argv[2];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_layer_direct), cmocka_unit_test(test_one_layer_transposed),
      cmocka_unit_test(test_one_layer_gemm),   cmocka_unit_test(test_errors),
      cmocka_unit_test(test_gpt2_step0),       cmocka_unit_test(test_llama_step0),
      cmocka_unit_test(test_gpt2_merge),       cmocka_unit_test(test_llama_merge),
      cmocka_unit_test(test_gpt2_grad),        cmocka_unit_test(test_llama_grad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
