/*
 * tests/test_xent.c - the fused softmax cross-entropy: softmax_xent / softmax_xent_grad
 * (codegen/cpu/xent.c, codegen/cuda/xent.c), its grad rule (passes/grad_rules_xent.c) and
 * kc_cross_entropy (ir/builder.c).
 *
 * - Against PyTorch (tests/models/xent_ref.py, refs in tests/models/xent_ref/): the per-position
 *   loss, kc_cross_entropy's mean and d mean / d logits for C = 37 (odd, past the vector width),
 *   3 (ignore_index a real class) and 1000 (large logits); the compiled module holds one
 *   softmax_xent (the grad rule's copy with lse merged by cse) and one softmax_xent_grad; 1 vs 2
 *   threads give the same bits;
 * - f16 logits against the formulas in double (loss f16, lse f32, gradient f16);
 * - every position ignored: the mean is nan (PyTorch's 0 / 0);
 * - a label out of [0, C) (C itself, and a negative one that is not ignore_index) is a run-time
 *   error naming the op and the label, never a number;
 * - the same on the CUDA target (skipped where unavailable; tests/cuda_emu runs it emulated).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "runtime/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_tests_dir = "tests";

static void npy(kc_context *ctx, const char *c, const char *what, kc_tensor_desc *d) {
  char path[512];
  snprintf(path, sizeof path, "%s/models/xent_ref/%s_%s.npy", g_tests_dir, c, what);
  if (kc_npy_read(ctx, path, d) != KC_OK) fail_msg("%s: %s", path, kc_last_error(ctx));
}

static uint32_t count_op(const kc_graph *g, const char *op) {
  char *text = kc_graph_print_str(g);
  char pat[64];
  snprintf(pat, sizeof pat, " = %s(", op);
  uint32_t c = 0;
  for (const char *p = strstr(text, pat); p; p = strstr(p + 1, pat))
    c++;
  free(text);
  return c;
}

/* logits [dims] f32 and labels [dims[:-1]] i64 inputs; outputs: "loss" (per position, the op
 * itself), "mean" (kc_cross_entropy), and with grad "logits.grad". */
static kc_graph *build(kc_context *ctx, int rank, const int64_t *dims, int64_t ignore, bool grad) {
  kc_graph *g = kc_graph_new(ctx, "xent");
  kc_dim d[KC_MAX_RANK];
  for (int i = 0; i < rank; i++)
    d[i] = dims[i];
  kc_val in[2] = {kc_input(g, "logits", KC_F32, rank, d),
                  kc_input(g, "labels", KC_I64, rank - 1, d)};
  kc_val loss;
  uint32_t ni = kc_graph_add_node(g, KC_OP_SOFTMAX_XENT, 2, in, 1, &loss);
  kc_node_set_int(g, ni, "ignore_index", ignore);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  kc_output(g, loss, "loss");
  kc_output(g, kc_cross_entropy(g, in[0], in[1], ignore), "mean");
  assert_int_equal(kc_graph_status(g), KC_OK);
  if (grad) {
    const char *p = "logits";
    if (kc_grad(g, "mean", 1, &p) != KC_OK) fail_msg("kc_grad: %s", kc_last_error(ctx));
  }
  return g;
}

static bool compile(kc_context *ctx, const kc_graph *g, const char *target, int threads,
                    kc_module **m) {
  kc_compile_options co = {.target = target, .threads = threads};
  kc_status s = kc_compile(ctx, g, &co, m);
  if (s == KC_ERR_UNSUPPORTED && target) {
    print_message("%s: %s\n", target, kc_last_error(ctx));
    return false;
  }
  if (s != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  return true;
}

static void close_to(const char *what, const float *got, const double *want, int64_t n,
                     double tol) {
  for (int64_t k = 0; k < n; k++)
    if (!(fabs(got[k] - want[k]) <= tol * (1 + fabs(want[k]))))
      fail_msg("%s[%lld] = %.9g, PyTorch %.9g", what, (long long)k, got[k], want[k]);
}

static bool check_case(const char *c, int64_t ignore, const char *target) {
  kc_context *ctx = kc_context_new();
  kc_tensor_desc x, l, loss, mean, grad;
  npy(ctx, c, "logits", &x);
  npy(ctx, c, "labels", &l);
  npy(ctx, c, "loss", &loss);
  npy(ctx, c, "mean", &mean);
  npy(ctx, c, "grad", &grad);
  kc_graph *g = build(ctx, x.rank, x.dims, ignore, true);
  kc_module *m = NULL;
  if (!compile(ctx, g, target, 1, &m)) {
    kc_graph_free(g);
    kc_npy_free(&x), kc_npy_free(&l), kc_npy_free(&loss), kc_npy_free(&mean), kc_npy_free(&grad);
    kc_context_free(ctx);
    return false;
  }
  /* the statistics once: the rule's copy merged into the forward node */
  assert_int_equal(count_op(kc_module_graph(m), "softmax_xent"), 1);
  assert_int_equal(count_op(kc_module_graph(m), "softmax_xent_grad"), 1);
  x.name = "logits";
  l.name = "labels";
  kc_tensor_desc in[2] = {x, l}, o[3];
  th_run(ctx, m, in, 2, o, 3);
  int64_t rows = th_numel(l.rank, l.dims), n = th_numel(x.rank, x.dims);
  close_to("loss", o[0].data, loss.data, rows, 1e-5);
  close_to("mean", o[1].data, mean.data, 1, 1e-5);
  close_to("grad", o[2].data, grad.data, n, 1e-5);
  for (int64_t k = 0; k < rows; k++) /* ignored positions: exactly 0 */
    if (((int64_t *)l.data)[k] == ignore) assert_true(((float *)o[0].data)[k] == 0.0f);
  if (!target) { /* 1 vs 2 threads: the same bits */
    float *g1 = malloc((size_t)n * sizeof *g1), *l1 = malloc((size_t)rows * sizeof *l1);
    memcpy(g1, o[2].data, (size_t)n * sizeof *g1);
    memcpy(l1, o[0].data, (size_t)rows * sizeof *l1);
    kc_module *m2 = NULL;
    assert_true(compile(ctx, g, NULL, 2, &m2));
    th_run(ctx, m2, in, 2, o, 3);
    assert_memory_equal(g1, o[2].data, (size_t)n * sizeof *g1);
    assert_memory_equal(l1, o[0].data, (size_t)rows * sizeof *l1);
    free(g1);
    free(l1);
    kc_module_free(m2);
  }
  print_message("%s on %s: loss, mean and gradient match PyTorch\n", c, target ? target : "cpu");
  kc_module_free(m);
  kc_graph_free(g);
  kc_npy_free(&x), kc_npy_free(&l), kc_npy_free(&loss), kc_npy_free(&mean), kc_npy_free(&grad);
  kc_context_free(ctx);
  return true;
}

/* Every position ignored: mean nan; a bad label: an error naming the op and the label. */
static bool check_edges(const char *target) {
  kc_context *ctx = kc_context_new();
  int64_t dims[2] = {3, 5};
  kc_graph *g = build(ctx, 2, dims, -100, false);
  kc_module *m = NULL;
  if (!compile(ctx, g, target, 2, &m)) {
    kc_graph_free(g);
    kc_context_free(ctx);
    return false;
  }
  float x[15];
  for (int k = 0; k < 15; k++)
    x[k] = sinf((float)k);
  int64_t all[3] = {-100, -100, -100};
  kc_tensor_desc in[2] = {th_desc("logits", KC_F32, 2, dims, x),
                          th_desc("labels", KC_I64, 1, dims, all)},
                 o[2];
  th_run(ctx, m, in, 2, o, 2);
  assert_true(isnan(*(float *)o[1].data));
  for (int k = 0; k < 3; k++)
    assert_true(((float *)o[0].data)[k] == 0.0f);
  int64_t bad[2][3] = {{0, 5, 1}, {-1, 2, 3}};
  const char *want[2] = {"index 5 at position 1", "index -1 at position 0"};
  for (int b = 0; b < 2; b++) {
    in[1].data = bad[b];
    assert_int_not_equal(kc_run(m, in, 2, o, 2), KC_OK);
    const char *err = kc_last_error(ctx);
    if (!strstr(err, "softmax_xent") || !strstr(err, want[b]))
      fail_msg("label error on %s: %s", target ? target : "cpu", err);
  }
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
  return true;
}

/*
 * f16 logits [5, 37] (one position ignored): the loss (f16), lse (f32) and d mean / d logits
 * (f16) against the formulas in double on the f16 values: lse = log sum exp(x), loss = lse -
 * x[label], grad = (softmax - onehot(label)) / count.
 */
static bool check_f16(const char *target) {
  enum { R = 5, C = 37 };
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "xent_f16");
  kc_val in[2] = {kc_input(g, "logits", KC_F16, 2, (kc_dim[]){R, C}),
                  kc_input(g, "labels", KC_I64, 1, (kc_dim[]){R})},
         out[2];
  uint32_t ni = kc_graph_add_node(g, KC_OP_SOFTMAX_XENT, 2, in, 2, out);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  kc_output(g, out[0], "loss");
  kc_output(g, out[1], "lse");
  kc_output(g, kc_cross_entropy(g, in[0], in[1], -100), "mean");
  const char *p = "logits";
  if (kc_grad(g, "mean", 1, &p) != KC_OK) fail_msg("kc_grad: %s", kc_last_error(ctx));
  kc_module *m = NULL;
  if (!compile(ctx, g, target, 2, &m)) {
    kc_graph_free(g);
    kc_context_free(ctx);
    return false;
  }
  uint16_t xh[R * C];
  double xd[R * C];
  for (int k = 0; k < R * C; k++) {
    xh[k] = kc_f32_to_f16(3.0f * sinf(0.37f * (float)k + 1.0f));
    xd[k] = kc_f16_to_f32(xh[k]);
  }
  int64_t labels[R] = {36, 0, -100, 17, 5}, dims[2] = {R, C};
  kc_tensor_desc ins[2] = {th_desc("logits", KC_F16, 2, dims, xh),
                           th_desc("labels", KC_I64, 1, dims, labels)},
                 o[4];
  th_run(ctx, m, ins, 2, o, 4);
  assert_int_equal(o[0].dtype, KC_F16);
  assert_int_equal(o[1].dtype, KC_F32);
  assert_int_equal(o[3].dtype, KC_F16);
  double sum = 0;
  for (int r = 0; r < R; r++) {
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < C; c++)
      mx = fmax(mx, xd[r * C + c]);
    for (int c = 0; c < C; c++)
      s += exp(xd[r * C + c] - mx);
    double lse = mx + log(s), loss = labels[r] == -100 ? 0 : lse - xd[r * C + labels[r]];
    sum += loss;
    double got = kc_f16_to_f32(((uint16_t *)o[0].data)[r]);
    if (!(fabs(got - loss) <= 1e-3 * (1 + fabs(loss))))
      fail_msg("f16 loss[%d] = %.6g, want %.6g", r, got, loss);
    assert_true(fabs(((float *)o[1].data)[r] - lse) <= 1e-5 * (1 + fabs(lse)));
    for (int c = 0; c < C; c++) {
      double want =
          labels[r] == -100 ? 0 : (exp(xd[r * C + c] - lse) - (c == labels[r] ? 1 : 0)) / (R - 1);
      double gg = kc_f16_to_f32(((uint16_t *)o[3].data)[r * C + c]);
      if (!(fabs(gg - want) <= 1e-4 + 2e-3 * fabs(want)))
        fail_msg("f16 grad[%d, %d] = %.6g, want %.6g", r, c, gg, want);
    }
  }
  double mean = kc_f16_to_f32(*(uint16_t *)o[2].data);
  assert_true(fabs(mean - sum / (R - 1)) <= 1e-3 * (1 + sum / (R - 1)));
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
  return true;
}

static void test_cpu(void **state) {
  (void)state;
  check_case("c37", -100, NULL);
  check_case("c3", 2, NULL);
  check_case("c1000", -100, NULL);
  check_edges(NULL);
  check_f16(NULL);
}

static void test_cuda(void **state) {
  (void)state;
  if (!check_case("c37", -100, "cuda")) skip();
  check_case("c3", 2, "cuda");
  check_case("c1000", -100, "cuda");
  check_edges("cuda");
  check_f16("cuda");
}

int main(int argc, char **argv) {
  if (argc > 2) g_tests_dir = argv[2];
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_cpu), cmocka_unit_test(test_cuda)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
