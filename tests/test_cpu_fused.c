/*
 * tests/test_cpu_fused.c - fused regions on the CPU (kc_lower_fused): graphs written in text IR,
 * compiled with kc_compile and run with kc_run, each next to the same computation written
 * without `fused` (which must give the very same bytes: fused and unfused graphs compute the
 * same numbers) and checked against values computed here in double with libm.
 *
 * Covered: bias + gelu + residual with two outputs and a body constant, broadcasting [B,S,768]
 * with [768]; SwiGLU silu(a) * b in f32 and f16 (f16 intermediates rounded as a store would)
 * with masked tails and several work chunks; 4-way broadcasting over symbolic dims (a [S,1]
 * column, a scalar input, a [B,1,D] row) at several run-time sizes, S = 1 among them; outputs of
 * different dtypes (where, greater, clip, cast to i32, identity); f16/f32/f64 mixed in one body;
 * regions kernc cannot emit refused with the body op named (softmax, a constant of 8 elements,
 * outputs of different shapes; exp on integers, which the body's shape functions refuse);
 * `kernc run` and `kernc opt` on the golden fused_region.kir (argv[1] the program, argv[2] the
 * tests folder). Fused graphs run on 2 threads and unfused ones on 1, so identical bytes also
 * show that any split of the work is valid.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/runtime.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OUT 8

/* A fused graph and its unfused twin, compiled. */
typedef struct pair {
  kc_context *ctx;
  kc_graph *gf, *gu;
  kc_module *mf, *mu;
} pair;

static int setup(void **st) {
  pair *p = calloc(1, sizeof *p);
  p->ctx = kc_context_new();
  *st = p;
  return 0;
}

static int teardown(void **st) {
  pair *p = *st;
  kc_module_free(p->mf);
  kc_module_free(p->mu);
  kc_graph_free(p->gf);
  kc_graph_free(p->gu);
  kc_context_free(p->ctx);
  free(p);
  return 0;
}

static void pair_compile(pair *p, const char *fused, const char *unfused) {
  p->gf = th_parse(p->ctx, fused);
  p->gu = th_parse(p->ctx, unfused);
  assert_true(strstr(fused, "fused(") != NULL && strstr(unfused, "fused(") == NULL);
  p->mf = th_compile(p->ctx, p->gf, 2);
  p->mu = th_compile(p->ctx, p->gu, 1);
}

/* Run both; their outputs must be the same bytes. out: the fused graph's (valid until the next
 * run). */
static void pair_run(pair *p, const kc_tensor_desc *in, uint32_t nin, kc_tensor_desc *out,
                     uint32_t nout) {
  kc_tensor_desc uo[MAX_OUT];
  assert_true(nout <= MAX_OUT && nout == kc_graph_num_outputs(p->gf));
  th_run(p->ctx, p->mf, in, nin, out, nout);
  th_run(p->ctx, p->mu, in, nin, uo, nout);
  for (uint32_t k = 0; k < nout; k++) {
    assert_string_equal(out[k].name, uo[k].name);
    assert_int_equal(out[k].dtype, uo[k].dtype);
    assert_int_equal(out[k].rank, uo[k].rank);
    for (int d = 0; d < out[k].rank; d++)
      assert_int_equal(out[k].dims[d], uo[k].dims[d]);
    assert_memory_equal(out[k].data, uo[k].data, th_nbytes(&out[k]));
  }
}

/* Deterministic values in [lo, hi). */
static float *rnd(size_t n, float lo, float hi, uint32_t seed) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1664525u + 1013904223u;
    p[i] = lo + (hi - lo) * (float)(x >> 8) / 16777216.0f;
  }
  return p;
}

/* |got - want| within rel * max(1, |want|). */
static void near(double got, double want, double rel, const char *what, size_t i) {
  double tol = rel * (fabs(want) > 1 ? fabs(want) : 1);
  if (!(fabs(got - want) <= tol)) {
    print_error("%s[%zu] = %.9g, want %.9g\n", what, i, got, want);
    fail();
  }
}

static double gelu(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double sigm(double x) { return 1 / (1 + exp(-x)); }
static double h16(double x) { return kc_f16_to_f32(kc_f32_to_f16((float)x)); }

/* ---- bias + gelu + residual ------------------------------------------------------------------ */

static const char *bgr_fused =
    "graph @bgr(%1: f32[B,S,768] \"x\", %2: f32[768] \"bias\", %3: f32[B,S,768] \"residual\") {\n"
    "  %4, %5 = fused(%1, %2, %3) : f32[B,S,768], f32[B,S,768] graph @body(%1: f32[B,S,768], "
    "%2: f32[768], %3: f32[B,S,768]) {\n"
    "    %4 = add(%1, %2) : f32[B,S,768]\n"
    "    %5 = gelu(%4) : f32[B,S,768]\n"
    "    %6 = add(%5, %3) : f32[B,S,768]\n"
    "    %7 = constant dense<0.5> : f32[]\n"
    "    %8 = mul(%6, %7) : f32[B,S,768]\n"
    "    return %6, %8\n"
    "  }\n"
    "  return %4 \"sum\", %5 \"half\"\n"
    "}\n";

static const char *bgr_unfused =
    "graph @bgr(%1: f32[B,S,768] \"x\", %2: f32[768] \"bias\", %3: f32[B,S,768] \"residual\") {\n"
    "  %4 = add(%1, %2) : f32[B,S,768]\n"
    "  %5 = gelu(%4) : f32[B,S,768]\n"
    "  %6 = add(%5, %3) : f32[B,S,768]\n"
    "  %7 = constant dense<0.5> : f32[]\n"
    "  %8 = mul(%6, %7) : f32[B,S,768]\n"
    "  return %6 \"sum\", %8 \"half\"\n"
    "}\n";

static void t_bias_gelu_residual(void **st) {
  pair *p = *st;
  pair_compile(p, bgr_fused, bgr_unfused);
  const int64_t sizes[][2] = {{2, 3}, {1, 1}, {4, 33}};
  for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
    int64_t B = sizes[c][0], S = sizes[c][1], n = B * S * 768;
    float *x = rnd((size_t)n, -4, 4, 1), *b = rnd(768, -1, 1, 2), *r = rnd((size_t)n, -2, 2, 3);
    kc_tensor_desc in[3] = {th_desc("x", KC_F32, 3, (int64_t[]){B, S, 768}, x),
                            th_desc("bias", KC_F32, 1, (int64_t[]){768}, b),
                            th_desc("residual", KC_F32, 3, (int64_t[]){B, S, 768}, r)};
    kc_tensor_desc out[2];
    pair_run(p, in, 3, out, 2);
    assert_int_equal(out[0].dims[0], B);
    assert_int_equal(out[0].dims[1], S);
    const float *sum = out[0].data, *half = out[1].data;
    for (int64_t i = 0; i < n; i++) {
      double s = gelu((double)x[i] + b[i % 768]) + r[i];
      near(sum[i], s, 1e-5, "sum", (size_t)i);
      near(half[i], 0.5 * s, 1e-5, "half", (size_t)i);
    }
    free(x);
    free(b);
    free(r);
  }
}

/* ---- SwiGLU ------------------------------------------------------------------------------------
 */

static void swiglu_texts(const char *t, char *fused, char *unfused, size_t size) {
  snprintf(fused, size,
           "graph @swiglu(%%1: %s[B,S,N] \"a\", %%2: %s[B,S,N] \"b\") {\n"
           "  %%3 = fused(%%1, %%2) : %s[B,S,N] graph @body(%%1: %s[B,S,N], %%2: %s[B,S,N]) {\n"
           "    %%3 = sigmoid(%%1) : %s[B,S,N]\n"
           "    %%4 = mul(%%1, %%3) : %s[B,S,N]\n"
           "    %%5 = mul(%%4, %%2) : %s[B,S,N]\n"
           "    return %%5\n"
           "  }\n"
           "  return %%3 \"y\"\n"
           "}\n",
           t, t, t, t, t, t, t, t);
  snprintf(unfused, size,
           "graph @swiglu(%%1: %s[B,S,N] \"a\", %%2: %s[B,S,N] \"b\") {\n"
           "  %%3 = sigmoid(%%1) : %s[B,S,N]\n"
           "  %%4 = mul(%%1, %%3) : %s[B,S,N]\n"
           "  %%5 = mul(%%4, %%2) : %s[B,S,N]\n"
           "  return %%5 \"y\"\n"
           "}\n",
           t, t, t, t, t);
}

static void swiglu(pair *p, kc_dtype t) {
  char f[2048], u[2048];
  swiglu_texts(kc_dtype_name(t), f, u, sizeof f);
  pair_compile(p, f, u);
  /* 100 and 1000 leave masked tails; [2,64,1000] is several chunks of rows for the threads */
  const int64_t sizes[][3] = {{1, 3, 100}, {2, 64, 1000}, {1, 1, 7}};
  for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
    int64_t B = sizes[c][0], S = sizes[c][1], N = sizes[c][2], n = B * S * N;
    float *a = rnd((size_t)n, -6, 6, 4), *b = rnd((size_t)n, -3, 3, 5);
    uint16_t *a16 = malloc((size_t)n * 2), *b16 = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
      a16[i] = kc_f32_to_f16(a[i]);
      b16[i] = kc_f32_to_f16(b[i]);
      if (t == KC_F16) a[i] = kc_f16_to_f32(a16[i]), b[i] = kc_f16_to_f32(b16[i]);
    }
    bool half = t == KC_F16;
    int64_t dims[3] = {B, S, N};
    kc_tensor_desc in[2] = {th_desc("a", t, 3, dims, half ? (void *)a16 : a),
                            th_desc("b", t, 3, dims, half ? (void *)b16 : b)};
    kc_tensor_desc out;
    pair_run(p, in, 2, &out, 1);
    for (int64_t i = 0; i < n; i++) {
      if (half) { /* each op's result is an f16 value, as unfused */
        double sg = h16(sigm(a[i])), silu = h16(a[i] * sg), want = h16(silu * b[i]);
        double got = kc_f16_to_f32(((const uint16_t *)out.data)[i]);
        near(got, want, 4e-3, "y16", (size_t)i);
      } else {
        near(((const float *)out.data)[i], a[i] * sigm(a[i]) * b[i], 1e-5, "y", (size_t)i);
      }
    }
    free(a);
    free(b);
    free(a16);
    free(b16);
  }
}

static void t_swiglu_f32(void **st) { swiglu(*st, KC_F32); }
static void t_swiglu_f16(void **st) { swiglu(*st, KC_F16); }

/* ---- broadcasting over symbolic dims -------------------------------------------------------- */

static void t_broadcast_symbolic(void **st) {
  pair *p = *st;
  pair_compile(p,
               "graph @bc(%1: f32[B,S,D] \"x\", %2: f32[S,1] \"col\", %3: f32[] \"s\", "
               "%4: f32[B,1,D] \"y\") {\n"
               "  %5 = fused(%1, %2, %3, %4) : f32[B,S,D] graph @body(%1: f32[B,S,D], "
               "%2: f32[S,1], %3: f32[], %4: f32[B,1,D]) {\n"
               "    %5 = sub(%1, %2) : f32[B,S,D]\n"
               "    %6 = mul(%5, %3) : f32[B,S,D]\n"
               "    %7 = add(%6, %4) : f32[B,S,D]\n"
               "    return %7\n"
               "  }\n"
               "  return %5 \"z\"\n"
               "}\n",
               "graph @bc(%1: f32[B,S,D] \"x\", %2: f32[S,1] \"col\", %3: f32[] \"s\", "
               "%4: f32[B,1,D] \"y\") {\n"
               "  %5 = sub(%1, %2) : f32[B,S,D]\n"
               "  %6 = mul(%5, %3) : f32[B,S,D]\n"
               "  %7 = add(%6, %4) : f32[B,S,D]\n"
               "  return %7 \"z\"\n"
               "}\n");
  const int64_t sizes[][3] = {{2, 3, 5}, {1, 7, 33}, {3, 1, 16}, {2, 5, 1}};
  for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
    int64_t B = sizes[c][0], S = sizes[c][1], D = sizes[c][2];
    float *x = rnd((size_t)(B * S * D), -2, 2, 6), *col = rnd((size_t)S, -1, 1, 7);
    float *y = rnd((size_t)(B * D), -1, 1, 8), s = 1.5f;
    kc_tensor_desc in[4] = {th_desc("x", KC_F32, 3, (int64_t[]){B, S, D}, x),
                            th_desc("col", KC_F32, 2, (int64_t[]){S, 1}, col),
                            th_desc("s", KC_F32, 0, NULL, &s),
                            th_desc("y", KC_F32, 3, (int64_t[]){B, 1, D}, y)};
    kc_tensor_desc out;
    pair_run(p, in, 4, &out, 1);
    const float *z = out.data;
    for (int64_t b = 0; b < B; b++)
      for (int64_t i = 0; i < S; i++)
        for (int64_t d = 0; d < D; d++) {
          int64_t k = (b * S + i) * D + d;
          near(z[k], ((double)x[k] - col[i]) * s + y[b * D + d], 1e-6, "z", (size_t)k);
        }
    free(x);
    free(col);
    free(y);
  }
}

/* ---- outputs of several dtypes ------------------------------------------------------------- */

static void t_mixed_outputs(void **st) {
  pair *p = *st;
  pair_compile(p,
               "graph @mo(%1: f32[N] \"x\") {\n"
               "  %2, %3, %4, %5, %6 = fused(%1) : f32[N], bool[N], f32[N], i32[N], f32[N] "
               "graph @body(%1: f32[N]) {\n"
               "    %2 = constant dense<0.0> : f32[]\n"
               "    %3 = greater(%1, %2) : bool[N]\n"
               "    %4 = constant dense<0.01> : f32[]\n"
               "    %5 = mul(%1, %4) : f32[N]\n"
               "    %6 = where(%3, %1, %5) : f32[N]\n"
               "    %7 = constant dense<-0.5> : f32[]\n"
               "    %8 = constant dense<0.75> : f32[]\n"
               "    %9 = clip(%1, %7, %8) : f32[N]\n"
               "    %10 = constant dense<10.0> : f32[]\n"
               "    %11 = mul(%1, %10) : f32[N]\n"
               "    %12 = cast(%11) {to=i32} : i32[N]\n"
               "    %13 = identity(%1) : f32[N]\n"
               "    return %6, %3, %9, %12, %13\n"
               "  }\n"
               "  return %2 \"leaky\", %3 \"pos\", %4 \"clipped\", %5 \"tenfold\", %6 \"same\"\n"
               "}\n",
               "graph @mo(%1: f32[N] \"x\") {\n"
               "  %2 = constant dense<0.0> : f32[]\n"
               "  %3 = greater(%1, %2) : bool[N]\n"
               "  %4 = constant dense<0.01> : f32[]\n"
               "  %5 = mul(%1, %4) : f32[N]\n"
               "  %6 = where(%3, %1, %5) : f32[N]\n"
               "  %7 = constant dense<-0.5> : f32[]\n"
               "  %8 = constant dense<0.75> : f32[]\n"
               "  %9 = clip(%1, %7, %8) : f32[N]\n"
               "  %10 = constant dense<10.0> : f32[]\n"
               "  %11 = mul(%1, %10) : f32[N]\n"
               "  %12 = cast(%11) {to=i32} : i32[N]\n"
               "  %13 = identity(%1) : f32[N]\n"
               "  return %6 \"leaky\", %3 \"pos\", %9 \"clipped\", %12 \"tenfold\", %13 \"same\"\n"
               "}\n");
  const int64_t sizes[] = {37, 1, 20000};
  for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
    int64_t n = sizes[c];
    float *x = rnd((size_t)n, -3, 3, 9);
    x[0] = 0.0f;
    kc_tensor_desc in = th_desc("x", KC_F32, 1, &n, x), out[5];
    pair_run(p, &in, 1, out, 5);
    assert_int_equal(out[1].dtype, KC_BOOL);
    assert_int_equal(out[3].dtype, KC_I32);
    for (int64_t i = 0; i < n; i++) {
      double v = x[i];
      near(((const float *)out[0].data)[i], v > 0 ? v : v * (double)0.01f, 1e-6, "leaky",
           (size_t)i);
      assert_int_equal(((const uint8_t *)out[1].data)[i], v > 0);
      near(((const float *)out[2].data)[i],
           v < -0.5   ? -0.5
           : v > 0.75 ? 0.75
                      : v,
           0, "clip", (size_t)i);
      assert_int_equal(((const int32_t *)out[3].data)[i], (int32_t)(x[i] * 10.0f));
      assert_true(((const float *)out[4].data)[i] == x[i]);
    }
    free(x);
  }
}

/* ---- f16 / f32 / f64 in one body ------------------------------------------------------------ */

static void t_mixed_precision(void **st) {
  pair *p = *st;
  pair_compile(p,
               "graph @mp(%1: f16[B,64] \"x\", %2: f32[64] \"y\") {\n"
               "  %3, %4 = fused(%1, %2) : f16[B,64], f64[B,64] graph @body(%1: f16[B,64], "
               "%2: f32[64]) {\n"
               "    %3 = cast(%1) {to=f64} : f64[B,64]\n"
               "    %4 = cast(%2) {to=f64} : f64[64]\n"
               "    %5 = mul(%3, %4) : f64[B,64]\n"
               "    %6 = exp(%5) : f64[B,64]\n"
               "    %7 = cast(%6) {to=f16} : f16[B,64]\n"
               "    %8 = mul(%7, %1) : f16[B,64]\n"
               "    return %8, %5\n"
               "  }\n"
               "  return %3 \"h\", %4 \"p\"\n"
               "}\n",
               "graph @mp(%1: f16[B,64] \"x\", %2: f32[64] \"y\") {\n"
               "  %3 = cast(%1) {to=f64} : f64[B,64]\n"
               "  %4 = cast(%2) {to=f64} : f64[64]\n"
               "  %5 = mul(%3, %4) : f64[B,64]\n"
               "  %6 = exp(%5) : f64[B,64]\n"
               "  %7 = cast(%6) {to=f16} : f16[B,64]\n"
               "  %8 = mul(%7, %1) : f16[B,64]\n"
               "  return %8 \"h\", %5 \"p\"\n"
               "}\n");
  int64_t B = 5, n = B * 64;
  float *xf = rnd((size_t)n, -2, 2, 10), *y = rnd(64, -1, 1, 11);
  uint16_t *x = malloc((size_t)n * 2);
  for (int64_t i = 0; i < n; i++)
    x[i] = kc_f32_to_f16(xf[i]);
  kc_tensor_desc in[2] = {th_desc("x", KC_F16, 2, (int64_t[]){B, 64}, x),
                          th_desc("y", KC_F32, 1, (int64_t[]){64}, y)},
                 out[2];
  pair_run(p, in, 2, out, 2);
  for (int64_t i = 0; i < n; i++) {
    double xv = kc_f16_to_f32(x[i]), pv = xv * y[i % 64]; /* exact in double */
    assert_true(((const double *)out[1].data)[i] == pv);
    double want = h16(h16(exp(pv)) * xv);
    near(kc_f16_to_f32(((const uint16_t *)out[0].data)[i]), want, 1e-3, "h", (size_t)i);
  }
  free(xf);
  free(y);
  free(x);
}

/* ---- vector code ------------------------------------------------------------------------------
 */

/* Text of the optimized LLVM IR of the fused node of bgr_fused (or f16 SwiGLU), lowered alone. */
static char *lower_dump(pair *p, const char *text) {
  th_cpu f = {.ctx = p->ctx};
  assert_int_equal(kc_cpu_new(p->ctx, &f.cpu), KC_OK);
  char dir[64], path[160];
  assert_true(th_mkdtemp(dir, sizeof dir, "fusedll"));
  assert_int_equal(kc_cpu_set_dump_dir(f.cpu, dir), KC_OK);
  p->gf = th_parse(p->ctx, text);
  assert_int_equal(p->gf->nodes[0].op, KC_OP_FUSED);
  th_kernel k;
  assert_int_equal(th_lower_node(&f, p->gf, 0, &k), KC_OK);
  assert_false(k.no_kernel);
  snprintf(path, sizeof path, "%s/%s.ll", dir, k.name);
  char *buf = th_read_file(path, NULL);
  assert_non_null(buf);
  assert_true(th_rmtree(dir));
  kc_graph_free(p->gf);
  p->gf = NULL;
  kc_cpu_free(f.cpu);
  return buf;
}

/* The body runs on full registers (gelu's polynomial, no scalar libm calls); f16 values load as
 * whole vectors. */
static void t_vectorized(void **st) {
  pair *p = *st;
  kc_cpu *cpu;
  assert_int_equal(kc_cpu_new(p->ctx, &cpu), KC_OK);
  int lanes = kc_cpu_host(cpu)->f32_lanes;
  kc_cpu_free(cpu);
  char want[64];
  char *ll = lower_dump(p, bgr_fused);
  snprintf(want, sizeof want, "fmul <%d x float>", lanes);
  assert_non_null(strstr(ll, want));
  snprintf(want, sizeof want, "fadd <%d x float>", lanes);
  assert_non_null(strstr(ll, want));
  assert_null(strstr(ll, "@erff"));
  assert_null(strstr(ll, "@expf"));
  free(ll);
  char f[2048], u[2048];
  swiglu_texts("f16", f, u, sizeof f);
  ll = lower_dump(p, f);
  snprintf(want, sizeof want, "fpext <%d x half>", lanes);
  assert_non_null(strstr(ll, want));
  free(ll);
}

/* ---- refused regions ------------------------------------------------------------------------ */

/* Compiling text must fail with status s and a message holding word. */
static void refused(pair *p, const char *text, kc_status s, const char *word) {
  p->gf = th_parse(p->ctx, text);
  kc_compile_options o = {.target = "cpu", .passes = ""};
  kc_status got = kc_compile(p->ctx, p->gf, &o, &p->mf);
  const char *msg = kc_last_error(p->ctx);
  if (got != s || !strstr(msg, word)) print_error("status %d, message: %s\n", got, msg);
  assert_int_equal(got, s);
  assert_non_null(strstr(msg, word));
  kc_graph_free(p->gf);
  p->gf = NULL;
}

static void t_refused(void **st) {
  pair *p = *st;
  refused(p,
          "graph @e(%1: f32[B,8] \"x\") {\n"
          "  %2 = fused(%1) : f32[B,8] graph @body(%1: f32[B,8]) {\n"
          "    %2 = softmax(%1) {axis=-1} : f32[B,8]\n"
          "    %3 = exp(%2) : f32[B,8]\n"
          "    return %3\n"
          "  }\n"
          "  return %2\n"
          "}\n",
          KC_ERR_UNSUPPORTED, "softmax");
  refused(p,
          "graph @e(%1: f32[B,8] \"x\") {\n"
          "  %2 = fused(%1) : f32[B,8] graph @body(%1: f32[B,8]) {\n"
          "    %2 = constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : f32[8]\n"
          "    %3 = add(%1, %2) : f32[B,8]\n"
          "    return %3\n"
          "  }\n"
          "  return %2\n"
          "}\n",
          KC_ERR_UNSUPPORTED, "constant %2");
  refused(p,
          "graph @e(%1: f32[B,8] \"x\", %2: f32[8] \"b\") {\n"
          "  %3, %4 = fused(%1, %2) : f32[B,8], f32[8] graph @body(%1: f32[B,8], %2: f32[8]) {\n"
          "    %3 = add(%1, %2) : f32[B,8]\n"
          "    %4 = exp(%2) : f32[8]\n"
          "    return %3, %4\n"
          "  }\n"
          "  return %3, %4\n"
          "}\n",
          KC_ERR_SHAPE, "differ in shape");
  refused(p,
          "graph @e(%1: i32[4] \"x\") {\n"
          "  %2 = fused(%1) : i32[4] graph @body(%1: i32[4]) {\n"
          "    %2 = neg(%1) : i32[4]\n"
          "    %3 = exp(%2) : i32[4]\n"
          "    return %3\n"
          "  }\n"
          "  return %2\n"
          "}\n",
          KC_ERR_TYPE, "(exp)"); /* the body's own shape functions refuse it first */
}

/* ---- kernc run / kernc opt on the golden file ------------------------------------------------ */

typedef struct cli {
  const char *kernc, *tests;
  char dir[64];
} cli;

static void write_npy(kc_context *ctx, const char *dir, const char *name, kc_tensor_desc t) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s.npy", dir, name);
  assert_int_equal(kc_npy_write(ctx, path, &t), KC_OK);
}

/* fused_region.kir: half = (gelu(x + bias) + residual) * 0.5, output_1 = exp(-(... + residual)) */
static void t_cli_golden(void **st) {
  cli *c = *st;
  if (!c->kernc || !c->tests) skip();
  kc_context *ctx = kc_context_new();
  const char *d = c->dir;
  int64_t B = 2, S = 3, n = B * S * 768;
  float *x = rnd((size_t)n, -3, 3, 12), *b = rnd(768, -1, 1, 13), *r = rnd((size_t)n, -1, 1, 14);
  write_npy(ctx, d, "x", th_desc(NULL, KC_F32, 3, (int64_t[]){B, S, 768}, x));
  write_npy(ctx, d, "b", th_desc(NULL, KC_F32, 1, (int64_t[]){768}, b));
  write_npy(ctx, d, "r", th_desc(NULL, KC_F32, 3, (int64_t[]){B, S, 768}, r));
  assert_int_equal(
      th_sh("'%s' run '%s/kir/golden/fused_region.kir' -i x='%s/x.npy' -i bias='%s/b.npy' "
            "-i residual='%s/r.npy' -o '%s/out' --threads 2 >/dev/null",
            c->kernc, c->tests, d, d, d, d),
      0);
  kc_tensor_desc half, e;
  char path[256];
  snprintf(path, sizeof path, "%s/out/half.npy", d);
  assert_int_equal(kc_npy_read(ctx, path, &half), KC_OK);
  snprintf(path, sizeof path, "%s/out/output_1.npy", d);
  assert_int_equal(kc_npy_read(ctx, path, &e), KC_OK);
  assert_true(half.dtype == KC_F32 && half.rank == 3 && half.dims[1] == S);
  assert_true(e.dtype == KC_F32 && e.rank == 3 && e.dims[2] == 768);
  for (int64_t i = 0; i < n; i++) {
    double s = gelu((double)x[i] + b[i % 768]) + r[i];
    near(((const float *)half.data)[i], 0.5 * s, 1e-5, "half", (size_t)i);
    near(((const float *)e.data)[i], exp(-s), 1e-5, "exp", (size_t)i);
  }
  kc_npy_free(&half);
  kc_npy_free(&e);
  /* kernc opt with no passes prints the graph back unchanged */
  assert_int_equal(th_sh("'%s' opt --passes= '%s/kir/golden/fused_region.kir' -o '%s/o.kir' && "
                         "cmp -s '%s/kir/golden/fused_region.kir' '%s/o.kir'",
                         c->kernc, c->tests, d, c->tests, d),
                   0);
  assert_int_equal(th_sh("rm -rf '%s/out' '%s'/*.npy '%s/o.kir'", d, d, d), 0);
  free(x);
  free(b);
  free(r);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  cli c = {.kernc = argc > 1 ? argv[1] : NULL, .tests = argc > 2 ? argv[2] : NULL};
  if (c.kernc && !th_mkdtemp(c.dir, sizeof c.dir, "fused")) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(t_bias_gelu_residual, setup, teardown),
      cmocka_unit_test_setup_teardown(t_swiglu_f32, setup, teardown),
      cmocka_unit_test_setup_teardown(t_swiglu_f16, setup, teardown),
      cmocka_unit_test_setup_teardown(t_broadcast_symbolic, setup, teardown),
      cmocka_unit_test_setup_teardown(t_mixed_outputs, setup, teardown),
      cmocka_unit_test_setup_teardown(t_mixed_precision, setup, teardown),
      cmocka_unit_test_setup_teardown(t_vectorized, setup, teardown),
      cmocka_unit_test_setup_teardown(t_refused, setup, teardown),
      cmocka_unit_test_prestate(t_cli_golden, &c),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  if (c.kernc) th_rmtree(c.dir);
  return failed;
}
