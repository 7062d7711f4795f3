/*
 * tests/test_grad_norm.c - the norms' statistics results and the grad rules that read them
 * (passes/grad_rules_fused.c, issue 13): layer_norm (mean, rstd), rms_norm (rstd) and ONNX's
 * layer_normalization (mean, inv_std_dev) in f32, rows of 37 (odd, past any vector width).
 *
 * - forward: y and the statistics against a plain C reference in double;
 * - backward: loss = sum(y*y + sin(y)); the gradients of x, scale and bias against central
 *   finite differences of the same loss computed in double by the C reference (independent of
 *   kernc), and the compiled module holds one norm node (the grad rule's copy with statistics
 *   merged into the forward one by cse), which has the statistics results;
 * - the same on the CUDA target (skipped where it is unavailable; tests/cuda_emu runs it on the
 *   emulated driver), and 1 vs 2 threads bitwise on the CPU.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROWS = 4, N = 37 };

typedef enum { LN, RMS, ONNX_LN } kind;
static const char *kind_name[] = {"layer_norm", "rms_norm", "layer_normalization"};

/* The norm of one row in double: y, mean, rstd (rms: mean 0). */
static void ref_row(kind k, const double *x, const double *s, const double *b, double *y,
                    double *mean, double *rstd) {
  double m = 0, v = 0;
  if (k != RMS) {
    for (int j = 0; j < N; j++)
      m += x[j];
    m /= N;
  }
  for (int j = 0; j < N; j++)
    v += (x[j] - m) * (x[j] - m);
  v /= N;
  double r = 1 / sqrt(v + 1e-5);
  for (int j = 0; j < N; j++)
    y[j] = (x[j] - m) * r * s[j] + (k == RMS ? 0 : b[j]);
  *mean = m;
  *rstd = r;
}

static double ref_loss(kind k, const double *x, const double *s, const double *b) {
  double l = 0, y[N], m, r;
  for (int i = 0; i < ROWS; i++) {
    ref_row(k, x + i * N, s, b, y, &m, &r);
    for (int j = 0; j < N; j++)
      l += y[j] * y[j] + sin(y[j]);
  }
  return l;
}

static uint32_t count_op(const kc_graph *g, const char *op, uint32_t *nout) {
  char *text = kc_graph_print_str(g);
  uint32_t c = 0;
  char pat[64];
  snprintf(pat, sizeof pat, " = %s(", op);
  for (const char *p = strstr(text, pat); p; p = strstr(p + 1, pat)) {
    c++;
    /* results before " = ": count the commas on the line */
    const char *ls = p;
    while (ls > text && ls[-1] != '\n')
      ls--;
    *nout = 1;
    for (const char *q = ls; q < p; q++)
      *nout += *q == ',';
  }
  free(text);
  return c;
}

/* x [ROWS, N], scale [N], bias [N] (not for rms) as graph inputs; the norm node with nout
 * results (1: the plain op through the builder). */
static void build(kc_graph *g, kind k, uint32_t nout, kc_val *out) {
  kc_val in[3] = {kc_input(g, "x", KC_F32, 2, (kc_dim[]){ROWS, N}),
                  kc_input(g, "s", KC_F32, 1, (kc_dim[]){N}),
                  {0}};
  if (k != RMS) in[2] = kc_input(g, "b", KC_F32, 1, (kc_dim[]){N});
  kc_op op = k == LN ? KC_OP_LAYER_NORM : k == RMS ? KC_OP_RMS_NORM : KC_OP_LAYER_NORMALIZATION;
  uint32_t ni = kc_graph_add_node(g, op, k == RMS ? 2 : 3, in, nout, out);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
}

static void data(float *x, float *s, float *b) {
  for (int i = 0; i < ROWS * N; i++)
    x[i] = 3.0f + sinf(0.7f * (float)i) * (1.0f + 0.3f * (float)(i / N)); /* mean far from 0 */
  for (int j = 0; j < N; j++) {
    s[j] = 0.5f + 0.02f * (float)j;
    b[j] = 0.1f * cosf((float)j);
  }
}

static bool compile(kc_context *ctx, kc_graph *g, const char *target, int threads, kc_module **m) {
  kc_compile_options co = {.target = target, .threads = threads};
  kc_status s = kc_compile(ctx, g, &co, m);
  if (s == KC_ERR_UNSUPPORTED && target) {
    print_message("%s: %s\n", target, kc_last_error(ctx));
    return false;
  }
  if (s != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  return true;
}

/* Forward: y and the statistics results against ref_row. */
static bool check_forward(kind k, const char *target) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "fwd");
  uint32_t nout = k == RMS ? 2 : 3;
  kc_val out[3];
  build(g, k, nout, out);
  const char *names[3] = {"y", "a", "c"};
  for (uint32_t j = 0; j < nout; j++)
    kc_output(g, out[j], names[j]);
  kc_module *m = NULL;
  if (!compile(ctx, g, target, 1, &m)) {
    kc_graph_free(g);
    kc_context_free(ctx);
    return false;
  }
  float x[ROWS * N], s[N], b[N];
  data(x, s, b);
  kc_tensor_desc in[3] = {th_desc("x", KC_F32, 2, (int64_t[]){ROWS, N}, x),
                          th_desc("s", KC_F32, 1, (int64_t[]){N}, s),
                          th_desc("b", KC_F32, 1, (int64_t[]){N}, b)},
                 o[3];
  th_run(ctx, m, in, k == RMS ? 2 : 3, o, nout);
  for (int i = 0; i < ROWS; i++) {
    double xd[N], sd[N], bd[N], y[N], mean, rstd;
    for (int j = 0; j < N; j++)
      xd[j] = x[i * N + j], sd[j] = s[j], bd[j] = b[j];
    ref_row(k, xd, sd, bd, y, &mean, &rstd);
    for (int j = 0; j < N; j++)
      assert_true(fabs(((float *)o[0].data)[i * N + j] - y[j]) <= 1e-4 * (1 + fabs(y[j])));
    assert_int_equal(o[1].dtype, KC_F32);
    assert_int_equal(o[1].rank, 2);
    assert_int_equal(o[1].dims[1], 1);
    if (k == RMS) {
      assert_true(fabs(((float *)o[1].data)[i] - rstd) <= 1e-5 * rstd);
    } else {
      assert_true(fabs(((float *)o[1].data)[i] - mean) <= 1e-5 * (1 + fabs(mean)));
      assert_true(fabs(((float *)o[2].data)[i] - rstd) <= 1e-5 * rstd);
    }
  }
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
  return true;
}

/* Backward: gradients against finite differences of ref_loss; one norm node after the pipeline;
 * with two modules (threads 1 and 2) on the CPU, the same bits. */
static bool check_backward(kind k, const char *target) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "bwd");
  kc_val y;
  build(g, k, 1, &y);
  kc_output(g, kc_reduce_sum(g, kc_add(g, kc_mul(g, y, y), kc_sin(g, y)), 0, NULL, 0), "loss");
  const char *all = "*";
  if (kc_grad(g, "loss", 1, &all) != KC_OK) fail_msg("kc_grad: %s", kc_last_error(ctx));
  kc_module *m = NULL;
  if (!compile(ctx, g, target, 1, &m)) {
    kc_graph_free(g);
    kc_context_free(ctx);
    return false;
  }
  uint32_t nout = 0;
  /* the ONNX op stays itself: its statistics are read, so fuse-norm leaves it */
  const char *opname = kind_name[k];
  assert_int_equal(count_op(kc_module_graph(m), opname, &nout), 1);
  assert_int_equal(nout, k == RMS ? 2 : 3); /* y and the statistics, computed once */
  float x[ROWS * N], s[N], b[N];
  data(x, s, b);
  uint32_t nin = k == RMS ? 2 : 3;
  kc_tensor_desc in[3] = {th_desc("x", KC_F32, 2, (int64_t[]){ROWS, N}, x),
                          th_desc("s", KC_F32, 1, (int64_t[]){N}, s),
                          th_desc("b", KC_F32, 1, (int64_t[]){N}, b)},
                 o[4];
  th_run(ctx, m, in, nin, o, nin + 1);
  double xd[ROWS * N], sd[N], bd[N];
  for (int i = 0; i < ROWS * N; i++)
    xd[i] = x[i];
  for (int j = 0; j < N; j++)
    sd[j] = s[j], bd[j] = b[j];
  double *vars[3] = {xd, sd, bd};
  int sizes[3] = {ROWS * N, N, N};
  const double h = 1e-5;
  for (uint32_t v = 0; v < nin; v++) {
    const float *an = o[v + 1].data;
    for (int e = 0; e < sizes[v]; e++) {
      double x0 = vars[v][e];
      vars[v][e] = x0 + h;
      double lp = ref_loss(k, xd, sd, bd);
      vars[v][e] = x0 - h;
      double lm = ref_loss(k, xd, sd, bd);
      vars[v][e] = x0;
      double fd = (lp - lm) / (2 * h);
      if (!(fabs(an[e] - fd) <= 2e-3 * (1 + fabs(fd))))
        fail_msg("%s on %s: d loss / d %s[%d] = %.8g, finite difference %.8g", kind_name[k],
                 target ? target : "cpu", in[v].name, e, an[e], fd);
    }
  }
  if (!target) { /* 1 vs 2 threads: the same bits */
    float *g1 = malloc(ROWS * N * sizeof *g1);
    memcpy(g1, o[1].data, ROWS * N * sizeof *g1);
    kc_module *m2 = NULL;
    assert_true(compile(ctx, g, NULL, 2, &m2));
    th_run(ctx, m2, in, nin, o, nin + 1);
    assert_memory_equal(g1, o[1].data, ROWS * N * sizeof *g1);
    free(g1);
    kc_module_free(m2);
  }
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
  return true;
}

static void test_cpu(void **state) {
  (void)state;
  for (int k = LN; k <= ONNX_LN; k++) {
    check_forward((kind)k, NULL);
    check_backward((kind)k, NULL);
  }
}

static void test_cuda(void **state) {
  (void)state;
  for (int k = LN; k <= ONNX_LN; k++)
    if (!check_forward((kind)k, "cuda") || !check_backward((kind)k, "cuda")) skip();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_cpu), cmocka_unit_test(test_cuda)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
