/*
 * tests/test_cpu_norm.c - the CPU kernels of the row-wise families (reduce, softmax, norm,
 * rotary, attention), run through kc_compile/kc_run and compared with naive references written
 * here in double precision (not by kernc).
 *
 * Covers: reductions over several axis sets with and without keepdims, with axes known at
 * compile time and given at run time, empty axes (all / noop), empty reductions, bool and int
 * inputs; softmax and log_softmax on every axis; layer/rms normalization over trailing axes
 * with their optional outputs, and kernc's layer_norm / rms_norm; rotary in both pairings,
 * 3-D and 4-D, with and without position ids and a partial rotary dim; attention with each
 * mask kind, GQA, past K/V with present outputs, a value head size of its own, rotary inputs
 * and 4-D layouts. Sizes are odd so vector tails, multiple units and threads all run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static kc_context *ctx;

static int setup(void **st) {
  (void)st;
  ctx = kc_context_new();
  return ctx ? 0 : -1;
}

static int teardown(void **st) {
  (void)st;
  kc_context_free(ctx);
  return 0;
}

static int64_t numel(int rank, const int64_t *dims) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= dims[i];
  return n;
}

static unsigned seed = 12345;

static float frand(void) {
  seed = seed * 1103515245u + 12345u;
  return (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float *rand_floats(int64_t n) {
  float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  for (int64_t i = 0; i < n; i++)
    p[i] = frand();
  return p;
}

static kc_tensor_desc tensor(const char *name, kc_dtype t, int rank, const int64_t *dims,
                             void *data) {
  kc_tensor_desc d = {.name = name, .dtype = t, .rank = rank, .data = data};
  for (int i = 0; i < rank; i++)
    d.dims[i] = dims[i];
  return d;
}

/* Compile g with no passes and run it; outs point into the returned module (caller frees). */
static kc_module *run(kc_graph *g, const kc_tensor_desc *ins, uint32_t nin, kc_tensor_desc *outs,
                      uint32_t nout, int threads) {
  kc_module *m = NULL;
  kc_compile_options o = {.target = "cpu", .passes = "", .threads = threads};
  kc_status s = kc_compile(ctx, g, &o, &m);
  if (s != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  s = kc_run(m, ins, nin, outs, nout);
  if (s != KC_OK) fail_msg("run: %s", kc_last_error(ctx));
  return m;
}

/* got (n floats) against want within atol + rtol * |want| (nan matches nan, inf matches inf). */
static void check_close(const char *what, const float *got, const double *want, int64_t n,
                        double rtol, double atol) {
  for (int64_t i = 0; i < n; i++) {
    double g = got[i], w = want[i];
    if (isnan(w) && isnan(g)) continue;
    if (isinf(w) && g == w) continue;
    if (!(fabs(g - w) <= atol + rtol * fabs(w)))
      fail_msg("%s: element %lld is %.9g, expected %.9g", what, (long long)i, g, w);
  }
}

/* ---- reductions ---------------------------------------------------------------------------- */

enum { K_SUM, K_MEAN, K_MAX };

/* out[kept coords] over every input element; returns the output element count. */
static int64_t ref_reduce(int kind, const float *x, int r, const int64_t *dims, const bool *red,
                          double *out) {
  int64_t nout = 1, n = numel(r, dims);
  for (int a = 0; a < r; a++)
    if (!red[a]) nout *= dims[a];
  int64_t *cnt = calloc((size_t)(nout ? nout : 1), sizeof *cnt);
  for (int64_t o = 0; o < nout; o++)
    out[o] = kind == K_MAX ? -INFINITY : 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, o = 0, mul = 1;
    for (int a = r - 1; a >= 0; a--) {
      int64_t c = rem % dims[a];
      rem /= dims[a];
      if (!red[a]) o += c * mul, mul *= dims[a];
    }
    out[o] = kind == K_MAX ? fmax(out[o], x[i]) : out[o] + x[i];
    cnt[o]++;
  }
  if (kind == K_MEAN)
    for (int64_t o = 0; o < nout; o++)
      out[o] /= (double)cnt[o];
  free(cnt);
  return nout;
}

static const kc_op reduce_ops[3] = {KC_OP_REDUCE_SUM, KC_OP_REDUCE_MEAN, KC_OP_REDUCE_MAX};

/*
 * One reduction of a random x[dims] over axes (naxes; negative axes allowed). runtime_axes:
 * the axes are a graph input, unknown when compiling.
 */
static void one_reduce(int kind, int r, const int64_t *dims, int naxes, const int64_t *axes,
                       int keep, bool runtime_axes, int threads) {
  kc_graph *g = kc_graph_new(ctx, "reduce");
  kc_dim xd[KC_MAX_RANK];
  for (int a = 0; a < r; a++)
    xd[a] = dims[a];
  kc_val x = kc_input(g, "x", KC_F32, r, xd), y;
  if (runtime_axes) {
    kc_dim na = naxes;
    kc_val in[2] = {x, kc_input(g, "axes", KC_I64, 1, &na)};
    kc_val out;
    uint32_t ni = kc_graph_add_node(g, reduce_ops[kind], 2, in, 1, &out);
    kc_node_set_int(g, ni, "keepdims", keep);
    assert_int_equal(kc_node_infer(g, ni), KC_OK);
    y = out;
  } else if (kind == K_SUM) {
    y = kc_reduce_sum(g, x, naxes, axes, keep);
  } else if (kind == K_MEAN) {
    y = kc_reduce_mean(g, x, naxes, axes, keep);
  } else {
    y = kc_reduce_max(g, x, naxes, axes, keep);
  }
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_output(g, y, "y");
  int64_t n = numel(r, dims);
  float *xs = rand_floats(n);
  bool red[KC_MAX_RANK] = {0};
  for (int i = 0; i < naxes; i++)
    red[axes[i] < 0 ? axes[i] + r : axes[i]] = true;
  for (int a = 0; a < r && naxes == 0; a++)
    red[a] = true;
  double *want = malloc((size_t)(n + 1) * sizeof *want);
  int64_t nout = ref_reduce(kind, xs, r, dims, red, want);
  kc_tensor_desc ins[2] = {tensor("x", KC_F32, r, dims, xs)};
  int64_t na = naxes;
  ins[1] = tensor("axes", KC_I64, 1, &na, (void *)axes);
  kc_tensor_desc out;
  kc_module *m = run(g, ins, runtime_axes ? 2 : 1, &out, 1, threads);
  assert_int_equal(numel(out.rank, out.dims), nout);
  int want_rank = keep ? r : r - (naxes ? naxes : r);
  assert_int_equal(out.rank, want_rank);
  char what[128];
  snprintf(what, sizeof what, "reduce kind %d rank %d naxes %d keep %d runtime %d", kind, r, naxes,
           keep, runtime_axes);
  check_close(what, out.data, want, nout, 1e-5, 1e-5);
  kc_module_free(m);
  free(want);
  free(xs);
  kc_graph_free(g);
}

static void t_reduce_axes(void **st) {
  (void)st;
  static const int64_t d3[3] = {3, 4, 5}, big[3] = {5, 37, 41};
  static const int64_t sets[][3] = {{2}, {1}, {0}, {0, 2}, {1, 2}, {-1, -3}, {0, 1, 2}};
  static const int nsets[] = {1, 1, 1, 2, 2, 2, 3};
  for (int kind = 0; kind < 3; kind++)
    for (int s = 0; s < 7; s++)
      for (int keep = 0; keep < 2; keep++)
        for (int rt = 0; rt < 2; rt++) {
          one_reduce(kind, 3, d3, nsets[s], sets[s], keep, rt, 1);
          one_reduce(kind, 3, big, nsets[s], sets[s], keep, rt, 2);
        }
  /* all axes by default (no axes), and a 4-D reduce over the middle */
  static const int64_t d4[4] = {2, 3, 17, 19}, mid[2] = {1, 2};
  for (int kind = 0; kind < 3; kind++) {
    one_reduce(kind, 3, big, 0, NULL, 1, false, 2);
    one_reduce(kind, 3, big, 0, NULL, 0, false, 2);
    one_reduce(kind, 4, d4, 2, mid, 1, true, 2);
    one_reduce(kind, 4, d4, 2, mid, 0, false, 2);
  }
}

/* A reduce node over x with an optional axes value; returns its output. */
static kc_val reduce_node(kc_graph *g, kc_op op, kc_val x, kc_val axes, int keep, int noop) {
  kc_val in[2] = {x, axes}, out;
  uint32_t ni = kc_graph_add_node(g, op, axes.id ? 2 : 1, in, 1, &out);
  kc_node_set_int(g, ni, "keepdims", keep);
  if (noop) kc_node_set_int(g, ni, "noop_with_empty_axes", 1);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  return out;
}

static void t_reduce_edge(void **st) {
  (void)st;
  /* an empty reduced axis: sum 0, max -inf, mean nan */
  static const int64_t d0[3] = {2, 0, 4}, ax1 = 1;
  static const double empty_want[3] = {0, NAN, -INFINITY};
  for (int kind = 0; kind < 3; kind++) {
    kc_graph *g = kc_graph_new(ctx, "empty");
    kc_val x = kc_input(g, "x", KC_F32, 3, (const kc_dim[]){2, 0, 4});
    kc_output(g, reduce_node(g, reduce_ops[kind], x, kc_const_i64s(g, 1, &ax1), 1, 0), "y");
    float dummy = 0;
    kc_tensor_desc in = tensor("x", KC_F32, 3, d0, &dummy), out;
    kc_module *m = run(g, &in, 1, &out, 1, 2);
    assert_int_equal(numel(out.rank, out.dims), 8);
    double want[8];
    for (int i = 0; i < 8; i++)
      want[i] = empty_want[kind];
    check_close("empty reduction", out.data, want, 8, 0, 0);
    kc_module_free(m);
    kc_graph_free(g);
  }
  /* axes given at run time but empty: all axes, or none with noop_with_empty_axes */
  static const int64_t d2[2] = {5, 23}, zero = 0;
  float *xs = rand_floats(5 * 23);
  for (int noop = 0; noop < 2; noop++)
    for (int keep = 0; keep < 2; keep++) {
      kc_graph *g = kc_graph_new(ctx, "noop");
      kc_val x = kc_input(g, "x", KC_F32, 2, (const kc_dim[]){5, 23});
      /* without keepdims the output rank needs the axes count: a static 0 */
      kc_dim na = keep ? kc_sym(g, "n") : 0;
      kc_val ax = kc_input(g, "axes", KC_I64, 1, &na);
      kc_output(g, reduce_node(g, KC_OP_REDUCE_SUM, x, ax, keep, noop), "y");
      int64_t dummy = 0;
      kc_tensor_desc in[2] = {tensor("x", KC_F32, 2, d2, xs),
                              tensor("axes", KC_I64, 1, &zero, &dummy)},
                     out;
      kc_module *m = run(g, in, 2, &out, 1, 1);
      double want[5 * 23];
      bool red[2] = {!noop, !noop};
      int64_t nout = ref_reduce(K_SUM, xs, 2, d2, red, want);
      assert_int_equal(numel(out.rank, out.dims), nout);
      assert_int_equal(out.rank, keep || noop ? 2 : 0);
      check_close("empty axes", out.data, want, nout, 1e-5, 1e-5);
      kc_module_free(m);
      kc_graph_free(g);
    }
  free(xs);
  /* bool max (any) and integer sum / mean (mean truncates) over the last axis */
  static const int64_t db[2] = {4, 19};
  uint8_t bx[4 * 19] = {0};
  bx[3] = 1, bx[2 * 19 + 18] = 1, bx[3 * 19] = 1;
  int32_t ix[4 * 19];
  for (int i = 0; i < 4 * 19; i++)
    ix[i] = (i * 37) % 23 - 11;
  for (int c = 0; c < 3; c++) {
    kc_dtype t = c == 0 ? KC_BOOL : KC_I32;
    kc_op op = c == 0 ? KC_OP_REDUCE_MAX : c == 1 ? KC_OP_REDUCE_SUM : KC_OP_REDUCE_MEAN;
    kc_graph *g = kc_graph_new(ctx, "ints");
    kc_val x = kc_input(g, "x", t, 2, (const kc_dim[]){4, 19});
    int64_t last = -1;
    kc_output(g, reduce_node(g, op, x, kc_const_i64s(g, 1, &last), 0, 0), "y");
    kc_tensor_desc in = tensor("x", t, 2, db, c == 0 ? (void *)bx : (void *)ix), out;
    kc_module *m = run(g, &in, 1, &out, 1, 2);
    assert_int_equal(out.dtype, t);
    for (int r = 0; r < 4; r++) {
      int64_t want = 0, got;
      for (int k = 0; k < 19; k++)
        want = c == 0 ? (want | bx[r * 19 + k]) : want + ix[r * 19 + k];
      if (c == 2) want /= 19;
      got = c == 0 ? ((uint8_t *)out.data)[r] : ((int32_t *)out.data)[r];
      assert_int_equal(got, want);
    }
    kc_module_free(m);
    kc_graph_free(g);
  }
}

/* ---- softmax ------------------------------------------------------------------------------- */

static void ref_softmax(bool lg, const float *x, int r, const int64_t *dims, int axis,
                        double *y) {
  int64_t outer = numel(axis, dims), len = dims[axis], inner = numel(r - axis - 1, dims + axis + 1);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t c = 0; c < inner; c++) {
      const float *p = x + o * len * inner + c;
      double m = -INFINITY, s = 0;
      for (int64_t k = 0; k < len; k++)
        m = fmax(m, p[k * inner]);
      for (int64_t k = 0; k < len; k++)
        s += exp(p[k * inner] - m);
      for (int64_t k = 0; k < len; k++) {
        double v = p[k * inner] - m;
        y[o * len * inner + c + k * inner] = lg ? v - log(s) : exp(v) / s;
      }
    }
}

static void one_softmax(bool log, int r, const int64_t *dims, int64_t axis, float bias,
                        int threads) {
  kc_graph *g = kc_graph_new(ctx, "softmax");
  kc_dim xd[KC_MAX_RANK];
  for (int a = 0; a < r; a++)
    xd[a] = dims[a];
  kc_val x = kc_input(g, "x", KC_F32, r, xd);
  kc_output(g, log ? kc_log_softmax(g, x, axis) : kc_softmax(g, x, axis), "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  int64_t n = numel(r, dims);
  float *xs = rand_floats(n);
  for (int64_t i = 0; i < n; i++)
    xs[i] = xs[i] * 8 + bias;
  double *want = malloc((size_t)n * sizeof *want);
  ref_softmax(log, xs, r, dims, (int)(axis < 0 ? axis + r : axis), want);
  kc_tensor_desc in = tensor("x", KC_F32, r, dims, xs), out;
  kc_module *m = run(g, &in, 1, &out, 1, threads);
  char what[96];
  snprintf(what, sizeof what, "%s rank %d axis %lld", log ? "log_softmax" : "softmax", r,
           (long long)axis);
  check_close(what, out.data, want, n, 1e-5, 1e-6);
  kc_module_free(m);
  free(want);
  free(xs);
  kc_graph_free(g);
}

static void t_softmax(void **st) {
  (void)st;
  static const int64_t d3[3] = {3, 4, 5}, big[3] = {7, 33, 19}, row[2] = {3, 1000}, one[1] = {37};
  for (int log = 0; log < 2; log++) {
    for (int64_t axis = -1; axis < 3; axis++) {
      one_softmax(log, 3, d3, axis, 0, 1);
      one_softmax(log, 3, big, axis, 0, 2);
    }
    one_softmax(log, 2, row, 1, 1000, 2); /* large values: needs the max subtraction */
    one_softmax(log, 1, one, 0, -50, 1);
  }
}

/* ---- layer / rms normalization ------------------------------------------------------------- */

/*
 * Reference normalization of x[rows, n] (row-major, n = numel(x[axis:])): scale/bias indexed
 * by k mod their element count (they span trailing dims). mean/inv (may be NULL) per row.
 */
static void ref_norm(bool rms, const float *x, int64_t rows, int64_t n, const float *scale,
                     int64_t ns, const float *bias, int64_t nb, double eps, double *y,
                     double *mean, double *inv) {
  for (int64_t r = 0; r < rows; r++) {
    const float *p = x + r * n;
    double mu = 0, var = 0;
    if (!rms) {
      for (int64_t k = 0; k < n; k++)
        mu += p[k];
      mu /= (double)n;
    }
    for (int64_t k = 0; k < n; k++)
      var += (p[k] - mu) * (p[k] - mu);
    var /= (double)n;
    double iv = 1 / sqrt(var + eps);
    if (mean) mean[r] = mu;
    if (inv) inv[r] = iv;
    for (int64_t k = 0; k < n; k++)
      y[r * n + k] = (p[k] - mu) * iv * scale[k % ns] + (bias ? bias[k % nb] : 0);
  }
}

/*
 * One normalization node: op over x[dims] at axis, scale spanning the last `sspan` dims of x,
 * bias the last `bspan` (-1: none); ONNX layer_normalization also returns Mean and InvStdDev.
 */
static void one_norm(kc_op op, int r, const int64_t *dims, int axis, int sspan, int bspan,
                     float offset, double eps) {
  kc_graph *g = kc_graph_new(ctx, "norm");
  kc_dim xd[KC_MAX_RANK];
  for (int a = 0; a < r; a++)
    xd[a] = dims[a];
  kc_val x = kc_input(g, "x", KC_F32, r, xd);
  kc_val sc = kc_input(g, "scale", KC_F32, sspan, xd + r - sspan);
  kc_val bi = bspan >= 0 ? kc_input(g, "bias", KC_F32, bspan, xd + r - bspan) : (kc_val){0};
  bool onnx = op == KC_OP_LAYER_NORMALIZATION || op == KC_OP_RMS_NORMALIZATION;
  bool stats = op == KC_OP_LAYER_NORMALIZATION;
  bool rms = op == KC_OP_RMS_NORMALIZATION || op == KC_OP_RMS_NORM;
  kc_val in[3] = {x, sc, bi}, outs[3];
  uint32_t ni = kc_graph_add_node(g, op, bi.id ? 3 : 2, in, stats ? 3 : 1, outs);
  kc_node_set_int(g, ni, "axis", axis);
  kc_node_set_float(g, ni, onnx ? "epsilon" : "eps", eps);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  for (int i = 0; i < (stats ? 3 : 1); i++)
    kc_output(g, outs[i], i == 0 ? "y" : i == 1 ? "mean" : "inv");
  int64_t n = numel(r, dims), rows = numel(axis, dims), len = n / (rows ? rows : 1);
  int64_t ns = numel(sspan, dims + r - sspan), nb = bspan >= 0 ? numel(bspan, dims + r - bspan) : 1;
  float *xs = rand_floats(n), *ss = rand_floats(ns), *bs = rand_floats(nb);
  for (int64_t i = 0; i < n; i++)
    xs[i] += offset;
  double *want = malloc((size_t)(n + 2 * rows) * sizeof *want);
  ref_norm(rms, xs, rows, len, ss, ns, bspan >= 0 ? bs : NULL, nb, eps, want, want + n,
           want + n + rows);
  kc_tensor_desc ins[3] = {tensor("x", KC_F32, r, dims, xs),
                           tensor("scale", KC_F32, sspan, dims + r - sspan, ss),
                           tensor("bias", KC_F32, bspan, dims + r - (bspan > 0 ? bspan : 0), bs)},
                 out[3];
  kc_module *m = run(g, ins, bspan >= 0 ? 3 : 2, out, stats ? 3 : 1, 2);
  char what[96];
  snprintf(what, sizeof what, "%s axis %d spans %d/%d", kc_ops[op].name, axis, sspan, bspan);
  check_close(what, out[0].data, want, n, 1e-4, 1e-5);
  if (stats) {
    check_close("mean", out[1].data, want + n, rows, 1e-5, 1e-5);
    check_close("inv_std_dev", out[2].data, want + n + rows, rows, 1e-4, 1e-5);
  }
  kc_module_free(m);
  free(want);
  free(xs);
  free(ss);
  free(bs);
  kc_graph_free(g);
}

static void t_norm(void **st) {
  (void)st;
  static const int64_t d4[4] = {2, 3, 7, 37}, d2[2] = {5, 300};
  for (int axis = 0; axis < 4; axis++) {
    int span = 4 - axis;
    one_norm(KC_OP_LAYER_NORMALIZATION, 4, d4, axis, span, span, 0, 1e-5);
    one_norm(KC_OP_LAYER_NORMALIZATION, 4, d4, axis, span, -1, 0, 1e-5);
    one_norm(KC_OP_RMS_NORMALIZATION, 4, d4, axis, span, -1, 0, 0.1);
  }
  /* scale over the last dim only, bias over the last two: periods shorter than the row */
  one_norm(KC_OP_LAYER_NORMALIZATION, 4, d4, 1, 1, 2, 0, 1e-5);
  one_norm(KC_OP_RMS_NORMALIZATION, 4, d4, 2, 1, -1, 0, 1e-5);
  /* kernc's own ops over the last axis */
  one_norm(KC_OP_LAYER_NORM, 2, d2, 1, 1, 1, 0, 1e-5);
  one_norm(KC_OP_LAYER_NORM, 2, d2, 1, 1, -1, 0, 1e-5);
  one_norm(KC_OP_RMS_NORM, 2, d2, 1, 1, -1, 0, 1e-6);
  /* a mean far from zero: the shifted one-pass variance keeps its precision */
  one_norm(KC_OP_LAYER_NORM, 2, d2, 1, 1, 1, 1000, 1e-5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_reduce_axes),
      cmocka_unit_test(t_reduce_edge),
      cmocka_unit_test(t_softmax),
      cmocka_unit_test(t_norm),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
