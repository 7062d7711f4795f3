/*
 * tests/test_checkpoint.c - gradient checkpointing (kc_grad_ex, passes/grad_checkpoint.c).
 * argv[2]: the tests/ folder.
 *
 * The reference is kernc's own gradient without checkpointing, which tests/test_grad.c holds to
 * finite differences and PyTorch: recomputation must not change the numbers. Compiled without
 * fusion ("infer" only) the same kernels run on the same inputs, so the loss and every gradient
 * must be equal bit for bit; with the default pipeline the forward fuses differently (the
 * clones read the kept values too, so use counts, and with them fusion choices, change), and
 * the outputs are held to 1e-5 of each output's largest magnitude (the differences are printed).
 * Models: the exported gpt2_tiny and llama_tiny (2 layers: 4 block boundaries each, 2 kept) and
 * a builder model of 8 pre-norm MLP blocks (8 boundaries, 2 kept), on which the peak arena
 * (kc_module_peak_bytes) must drop with the sqrt policy; every peak is printed. Also: the
 * recomputed clones survive the default pipeline (CSE does not merge them back), the marked
 * policy, the text round trip of a checkpointed graph, and the refusals.
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

static uint32_t count_recompute(const kc_graph *g) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < g->nnodes; i++)
    n += g->nodes[i].op != KC_OP_NOP && g->nodes[i].loc &&
         strncmp(g->nodes[i].loc, "recompute:", 10) == 0;
  return n;
}

typedef struct result {
  uint32_t n;      /* outputs */
  float **data;    /* per output, malloc'd */
  size_t *count;   /* elements per output */
  char **names;    /* malloc'd */
  size_t peak;     /* kc_module_peak_bytes */
  uint32_t clones; /* recompute nodes left after the pipeline */
} result;

static void result_free(result *r) {
  for (uint32_t i = 0; i < r->n; i++) {
    free(r->data[i]);
    free(r->names[i]);
  }
  free(r->data);
  free(r->count);
  free(r->names);
}

/* Compile g (passes: NULL the default pipeline) and run it; every output is kept. */
static result run_passes(kc_context *ctx, const kc_graph *g, const kc_tensor_desc *in, uint32_t nin,
                         const char *passes) {
  result r = {0};
  kc_module *m = NULL;
  kc_compile_options co = {.passes = passes};
  if (kc_compile(ctx, g, &co, &m) != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  r.n = kc_graph_num_outputs(g);
  kc_tensor_desc *outs = calloc(r.n, sizeof *outs);
  r.data = calloc(r.n, sizeof *r.data);
  r.count = calloc(r.n, sizeof *r.count);
  r.names = calloc(r.n, sizeof *r.names);
  assert_true(outs && r.data && r.count && r.names);
  th_run(ctx, m, in, nin, outs, r.n);
  for (uint32_t i = 0; i < r.n; i++) {
    assert_int_equal(outs[i].dtype, KC_F32);
    r.count[i] = (size_t)th_numel(outs[i].rank, outs[i].dims);
    r.data[i] = malloc(r.count[i] * sizeof(float) + 1);
    memcpy(r.data[i], outs[i].data, r.count[i] * sizeof(float));
    r.names[i] = strdup(kc_graph_output_name(g, i));
  }
  r.peak = kc_module_peak_bytes(m);
  r.clones = count_recompute(kc_module_graph(m));
  free(outs);
  kc_module_free(m);
  return r;
}

static result run_all(kc_context *ctx, const kc_graph *g, const kc_tensor_desc *in, uint32_t nin) {
  return run_passes(ctx, g, in, nin, NULL);
}

/* Same outputs by name; returns how many differ in bits (all within 1e-5 relative). */
static uint32_t compare(const result *a, const result *b, const char *what) {
  assert_int_equal(a->n, b->n);
  uint32_t nbits = 0;
  double worst = 0;
  for (uint32_t i = 0; i < a->n; i++) {
    uint32_t j = 0;
    while (j < b->n && strcmp(a->names[i], b->names[j]) != 0)
      j++;
    assert_true(j < b->n);
    assert_int_equal(a->count[i], b->count[j]);
    if (memcmp(a->data[i], b->data[j], a->count[i] * sizeof(float)) == 0) continue;
    nbits++;
    double scale = 0;
    for (size_t k = 0; k < a->count[i]; k++)
      scale = fmax(scale, fabs(a->data[i][k]));
    for (size_t k = 0; k < a->count[i]; k++) {
      double d = fabs(a->data[i][k] - b->data[j][k]) / (scale + 1e-30);
      worst = fmax(worst, d);
      if (d > 1e-5)
        fail_msg("%s: %s[%zu] = %.9g with, %.9g without checkpointing", what, a->names[i], k,
                 b->data[j][k], a->data[i][k]);
    }
  }
  print_message("%s: %u of %u outputs differ in bits (worst %.3g of the output's max)\n", what,
                nbits, a->n, worst);
  return nbits;
}

/* loss = mean(y * y) of output 0 as output "loss". */
static void add_loss(kc_graph *g) {
  kc_val y = kc_graph_output(g, 0);
  kc_output(g, kc_reduce_mean(g, kc_mul(g, y, y), 0, NULL, 0), "loss");
}

static kc_graph *load_model(kc_context *ctx, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/models/%s/model.onnx", g_tests, name);
  kc_graph *g = NULL;
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s: %s", path, kc_last_error(ctx));
  add_loss(g);
  return g;
}

static void roundtrip(kc_context *ctx, const kc_graph *g) {
  char *t1 = kc_graph_print_str(g);
  kc_graph *p = th_parse(ctx, t1);
  char *t2 = kc_graph_print_str(p);
  assert_string_equal(t1, t2);
  free(t1);
  free(t2);
  kc_graph_free(p);
}

static int64_t g_ids[4 * 64];

/* fused: also compare under the default pipeline (the unfused, bitwise comparison always runs). */
static void model_case(const char *name, const kc_grad_options *o, const char *what, bool fused) {
  kc_context *ctx = kc_context_new();
  kc_graph *g0 = load_model(ctx, name), *g1 = load_model(ctx, name);
  const char *all[] = {"*"};
  if (kc_grad_ex(g0, "loss", 1, all, NULL) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  if (kc_grad_ex(g1, "loss", 1, all, o) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  assert_int_equal(kc_graph_verify(g1), KC_OK);
  assert_int_equal(count_recompute(g0), 0);
  assert_true(count_recompute(g1) > 0);
  roundtrip(ctx, g1);
  for (int i = 0; i < 4 * 64; i++)
    g_ids[i] = (i * 13 + 5) % 100;
  kc_tensor_desc in = th_desc("input_ids", KC_I64, 2, (int64_t[]){4, 64}, g_ids);
  char label[128], l2[160];
  snprintf(label, sizeof label, "%s %s", name, what);
  snprintf(l2, sizeof l2, "%s unfused", label);
  result u0 = run_passes(ctx, g0, &in, 1, "infer"), u1 = run_passes(ctx, g1, &in, 1, "infer");
  assert_int_equal(compare(&u0, &u1, l2), 0);
  result_free(&u0);
  result_free(&u1);
  if (fused) {
    result r0 = run_all(ctx, g0, &in, 1), r1 = run_all(ctx, g1, &in, 1);
    compare(&r0, &r1, label);
    print_message("%s: peak arena %zu bytes without, %zu with checkpointing (%u recomputed "
                  "nodes after the pipeline)\n",
                  label, r0.peak, r1.peak, r1.clones);
    assert_true(r1.clones > 0); /* CSE did not fold them back */
    result_free(&r0);
    result_free(&r1);
  }
  kc_graph_free(g0);
  kc_graph_free(g1);
  kc_context_free(ctx);
}

static void test_gpt2_sqrt(void **state) {
  (void)state;
  kc_grad_options o = {KC_CKPT_SQRT, 0, NULL};
  model_case("gpt2_tiny", &o, "sqrt", true);
}

static void test_llama_sqrt(void **state) {
  (void)state;
  kc_grad_options o = {KC_CKPT_SQRT, 0, NULL};
  model_case("llama_tiny", &o, "sqrt", true);
}

static void test_gpt2_marked(void **state) {
  (void)state;
  const char *marked[] = {"/h.?/Add_1"}; /* each block's output */
  kc_grad_options o = {KC_CKPT_MARKED, 1, marked};
  model_case("gpt2_tiny", &o, "marked", false);
}

/* ---- a deeper builder model: the peak must drop ------------------------------------------ */

enum { BLOCKS = 8, ROWS = 512, D = 64, H = 256 };

static float *g_weights[2 * BLOCKS + 2];

/* x [ROWS, D] -> BLOCKS pre-norm MLP blocks h += W2 relu(W1 rmsnorm(h)) -> loss mean(h*h). */
static kc_graph *deep_model(kc_context *ctx) {
  kc_graph *g = kc_graph_new(ctx, "deep");
  kc_val h = kc_input(g, "x", KC_F32, 2, (kc_dim[]){ROWS, D});
  uint32_t seed = 1;
  for (int b = 0; b < BLOCKS; b++) {
    char n1[32], n2[32], ng[32];
    snprintf(n1, sizeof n1, "b%d.w1", b);
    snprintf(n2, sizeof n2, "b%d.w2", b);
    snprintf(ng, sizeof ng, "b%d.gamma", b);
    float *w1 = g_weights[2 * b], *w2 = g_weights[2 * b + 1];
    for (int i = 0; i < D * H; i++) {
      seed = seed * 1103515245u + 12345u;
      w1[i] = ((float)(seed >> 16 & 0x7fff) / 32768.0f - 0.5f) * 0.25f;
      seed = seed * 1103515245u + 12345u;
      w2[i] = ((float)(seed >> 16 & 0x7fff) / 32768.0f - 0.5f) * 0.12f;
    }
    float gamma[D];
    for (int i = 0; i < D; i++)
      gamma[i] = 1.0f + 0.01f * (float)i;
    kc_val gm = kc_weight(g, ng, KC_F32, 1, (int64_t[]){D}, gamma);
    kc_val x = kc_rms_norm(g, h, gm, 1e-5f);
    kc_val a = kc_relu(g, kc_matmul(g, x, kc_weight(g, n1, KC_F32, 2, (int64_t[]){D, H}, w1)));
    h = kc_add(g, h, kc_matmul(g, a, kc_weight(g, n2, KC_F32, 2, (int64_t[]){H, D}, w2)));
  }
  kc_output(g, h, "y");
  add_loss(g);
  assert_int_equal(kc_graph_status(g), KC_OK);
  return g;
}

static void test_deep_peak(void **state) {
  (void)state;
  for (int i = 0; i < 2 * BLOCKS; i++)
    g_weights[i] = malloc(sizeof(float) * D * H);
  kc_context *ctx = kc_context_new();
  kc_graph *g0 = deep_model(ctx), *g1 = deep_model(ctx);
  const char *all[] = {"*"};
  kc_grad_options o = {KC_CKPT_SQRT, 0, NULL};
  assert_int_equal(kc_grad_ex(g0, "loss", 1, all, NULL), KC_OK);
  if (kc_grad_ex(g1, "loss", 1, all, &o) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  roundtrip(ctx, g1);
  float *x = malloc(sizeof(float) * ROWS * D);
  for (int i = 0; i < ROWS * D; i++)
    x[i] = sinf(0.37f * (float)i);
  kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){ROWS, D}, x);
  result r0 = run_all(ctx, g0, &in, 1), r1 = run_all(ctx, g1, &in, 1);
  compare(&r0, &r1, "deep sqrt");
  print_message("deep (%d blocks, %d x %d): peak arena %zu bytes without, %zu with sqrt "
                "checkpointing (%u recomputed nodes after the pipeline)\n",
                BLOCKS, ROWS, D, r0.peak, r1.peak, r1.clones);
  assert_true(r1.peak < r0.peak);
  result_free(&r0);
  result_free(&r1);
  free(x);
  kc_graph_free(g0);
  kc_graph_free(g1);
  kc_context_free(ctx);
  for (int i = 0; i < 2 * BLOCKS; i++)
    free(g_weights[i]);
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void test_errors(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = load_model(ctx, "gpt2_tiny");
  char *before = kc_graph_print_str(g);
  const char *all[] = {"*"}, *none[] = {"no such node*"};
  kc_grad_options o = {KC_CKPT_MARKED, 1, none};
  assert_int_equal(kc_grad_ex(g, "loss", 1, all, &o), KC_ERR_INVALID_ARG);
  o.nmarked = 0;
  assert_int_equal(kc_grad_ex(g, "loss", 1, all, &o), KC_ERR_INVALID_ARG);
  o.checkpoint = (kc_checkpoint)7;
  assert_int_equal(kc_grad_ex(g, "loss", 1, all, &o), KC_ERR_INVALID_ARG);
  char *after = kc_graph_print_str(g);
  assert_string_equal(before, after);
  free(before);
  free(after);
  kc_graph_free(g);
  /* no block boundary: a plain MLP */
  g = kc_graph_new(ctx, "mlp");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){4, 3});
  float w[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  kc_val y = kc_relu(g, kc_matmul(g, x, kc_weight(g, "w", KC_F32, 2, (int64_t[]){3, 3}, w)));
  kc_output(g, kc_reduce_sum(g, y, 0, NULL, 0), "loss");
  o = (kc_grad_options){KC_CKPT_SQRT, 0, NULL};
  assert_int_equal(kc_grad_ex(g, "loss", 1, all, &o), KC_ERR_INVALID_ARG);
  kc_graph_free(g);
  /* dropout inside a recomputed piece is refused, naming it */
  g = kc_graph_new(ctx, "drop");
  kc_val h = kc_input(g, "x", KC_F32, 2, (kc_dim[]){4, 3});
  float gm[3] = {1, 1, 1};
  for (int b = 0; b < 4; b++) {
    char nw[16], ng[16];
    snprintf(nw, sizeof nw, "w%d", b);
    snprintf(ng, sizeof ng, "g%d", b);
    kc_val n = kc_rms_norm(g, h, kc_weight(g, ng, KC_F32, 1, (int64_t[]){3}, gm), 1e-5f);
    kc_val d = kc_dropout(g, kc_matmul(g, n, kc_weight(g, nw, KC_F32, 2, (int64_t[]){3, 3}, w)));
    h = kc_add(g, h, d);
  }
  kc_output(g, kc_reduce_sum(g, h, 0, NULL, 0), "loss");
  assert_int_equal(kc_graph_status(g), KC_OK);
  assert_int_equal(kc_grad_ex(g, "loss", 1, all, &o), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "dropout"));
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc > 2) g_tests = argv[2];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errors),     cmocka_unit_test(test_gpt2_sqrt),
      cmocka_unit_test(test_llama_sqrt), cmocka_unit_test(test_gpt2_marked),
      cmocka_unit_test(test_deep_peak),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
