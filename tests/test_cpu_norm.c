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
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------------------- */

static kc_context *ctx; /* made in main, shared by every test */

static unsigned seed = 12345;

static float frand(void) {
  seed = seed * 1103515245u + 12345u;
  return (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/*
 * Input buffers end right before an inaccessible page, so a kernel reading past the end of an
 * input (a vector tail that is not masked) crashes the test instead of passing by luck.
 */
#define GUARDED_MAX 64
static struct {
  void *p, *base;
  size_t len;
} guarded[GUARDED_MAX];

static void *guarded_alloc(size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), body = (n + page - 1) / page * page;
  char *base = mmap(NULL, body + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(base != MAP_FAILED);
  assert_int_equal(mprotect(base + body, page, PROT_NONE), 0);
  for (int i = 0; i < GUARDED_MAX; i++)
    if (!guarded[i].p) {
      guarded[i].p = base + body - n;
      guarded[i].base = base;
      guarded[i].len = body + page;
      return guarded[i].p;
    }
  fail_msg("too many guarded buffers");
  return NULL;
}

/* free() for malloc'd and guarded buffers alike. */
static void gfree(void *p) {
  for (int i = 0; p && i < GUARDED_MAX; i++)
    if (guarded[i].p == p) {
      munmap(guarded[i].base, guarded[i].len);
      guarded[i].p = NULL;
      return;
    }
  free(p);
}

static float *rand_floats(int64_t n) {
  float *p = guarded_alloc((size_t)(n > 0 ? n : 1) * sizeof *p);
  for (int64_t i = 0; i < n; i++)
    p[i] = frand();
  return p;
}

/* Compile g with no passes and run it; outs point into the returned module (caller frees). */
static kc_module *run(kc_graph *g, const kc_tensor_desc *ins, uint32_t nin, kc_tensor_desc *outs,
                      uint32_t nout, int threads) {
  kc_module *m = th_compile(ctx, g, threads);
  th_run(ctx, m, ins, nin, outs, nout);
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

enum { K_SUM, K_MEAN, K_MAX, K_MIN, K_PROD, K_NKINDS };

/* out[kept coords] over every input element; returns the output element count. */
static int64_t ref_reduce(int kind, const float *x, int r, const int64_t *dims, const bool *red,
                          double *out) {
  int64_t nout = 1, n = th_numel(r, dims);
  for (int a = 0; a < r; a++)
    if (!red[a]) nout *= dims[a];
  int64_t *cnt = calloc((size_t)(nout ? nout : 1), sizeof *cnt);
  for (int64_t o = 0; o < nout; o++)
    out[o] = kind == K_MAX ? -INFINITY : kind == K_MIN ? INFINITY : kind == K_PROD ? 1 : 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t rem = i, o = 0, mul = 1;
    for (int a = r - 1; a >= 0; a--) {
      int64_t c = rem % dims[a];
      rem /= dims[a];
      if (!red[a]) o += c * mul, mul *= dims[a];
    }
    out[o] = kind == K_MAX    ? fmax(out[o], x[i])
             : kind == K_MIN  ? fmin(out[o], x[i])
             : kind == K_PROD ? out[o] * x[i]
                              : out[o] + x[i];
    cnt[o]++;
  }
  if (kind == K_MEAN)
    for (int64_t o = 0; o < nout; o++)
      out[o] /= (double)cnt[o];
  gfree(cnt);
  return nout;
}

static const kc_op reduce_ops[K_NKINDS] = {KC_OP_REDUCE_SUM, KC_OP_REDUCE_MEAN, KC_OP_REDUCE_MAX,
                                           KC_OP_REDUCE_MIN, KC_OP_REDUCE_PROD};

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
  } else if (kind == K_MAX) {
    y = kc_reduce_max(g, x, naxes, axes, keep);
  } else { /* reduce_min / reduce_prod have no builder function */
    kc_val in[2] = {x, naxes ? kc_const_i64s(g, naxes, axes) : (kc_val){0}};
    uint32_t ni = kc_graph_add_node(g, reduce_ops[kind], naxes ? 2 : 1, in, 1, &y);
    kc_node_set_int(g, ni, "keepdims", keep);
    assert_int_equal(kc_node_infer(g, ni), KC_OK);
  }
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_output(g, y, "y");
  int64_t n = th_numel(r, dims);
  float *xs = rand_floats(n);
  bool red[KC_MAX_RANK] = {0};
  for (int i = 0; i < naxes; i++)
    red[axes[i] < 0 ? axes[i] + r : axes[i]] = true;
  for (int a = 0; a < r && naxes == 0; a++)
    red[a] = true;
  double *want = malloc((size_t)(n + 1) * sizeof *want);
  int64_t nout = ref_reduce(kind, xs, r, dims, red, want);
  kc_tensor_desc ins[2] = {th_desc("x", KC_F32, r, dims, xs)};
  int64_t na = naxes;
  ins[1] = th_desc("axes", KC_I64, 1, &na, (void *)axes);
  kc_tensor_desc out;
  kc_module *m = run(g, ins, runtime_axes ? 2 : 1, &out, 1, threads);
  assert_int_equal(th_numel(out.rank, out.dims), nout);
  int want_rank = keep ? r : r - (naxes ? naxes : r);
  assert_int_equal(out.rank, want_rank);
  char what[128];
  snprintf(what, sizeof what, "reduce kind %d rank %d naxes %d keep %d runtime %d", kind, r, naxes,
           keep, runtime_axes);
  check_close(what, out.data, want, nout, 1e-5, 1e-5);
  kc_module_free(m);
  gfree(want);
  gfree(xs);
  kc_graph_free(g);
}

static void t_reduce_axes(void **st) {
  (void)st;
  static const int64_t d3[3] = {3, 4, 5}, big[3] = {5, 37, 41};
  static const int64_t sets[][3] = {{2}, {1}, {0}, {0, 2}, {1, 2}, {-1, -3}, {0, 1, 2}};
  static const int nsets[] = {1, 1, 1, 2, 2, 2, 3};
  for (int kind = 0; kind < K_NKINDS; kind++)
    for (int s = 0; s < 7; s++)
      for (int keep = 0; keep < 2; keep++)
        for (int rt = 0; rt < 2; rt++) {
          /* min and prod share max's and sum's code paths: half the cases keep compile time low */
          if (kind >= K_MIN && rt != keep) continue;
          one_reduce(kind, 3, d3, nsets[s], sets[s], keep, rt, 1);
          one_reduce(kind, 3, big, nsets[s], sets[s], keep, rt, 2);
        }
  /* all axes by default (no axes), and a 4-D reduce over the middle */
  static const int64_t d4[4] = {2, 3, 17, 19}, mid[2] = {1, 2};
  for (int kind = 0; kind < K_NKINDS; kind++) {
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
  /* an empty reduced axis: sum 0, mean nan, max -inf, min +inf, prod 1 */
  static const int64_t d0[3] = {2, 0, 4}, ax1 = 1;
  static const double empty_want[K_NKINDS] = {0, NAN, -INFINITY, INFINITY, 1};
  for (int kind = 0; kind < K_NKINDS; kind++) {
    kc_graph *g = kc_graph_new(ctx, "empty");
    kc_val x = kc_input(g, "x", KC_F32, 3, (const kc_dim[]){2, 0, 4});
    kc_output(g, reduce_node(g, reduce_ops[kind], x, kc_const_i64s(g, 1, &ax1), 1, 0), "y");
    float dummy = 0;
    kc_tensor_desc in = th_desc("x", KC_F32, 3, d0, &dummy), out;
    kc_module *m = run(g, &in, 1, &out, 1, 2);
    assert_int_equal(th_numel(out.rank, out.dims), 8);
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
      kc_tensor_desc in[2] = {th_desc("x", KC_F32, 2, d2, xs),
                              th_desc("axes", KC_I64, 1, &zero, &dummy)},
                     out;
      kc_module *m = run(g, in, 2, &out, 1, 1);
      double want[5 * 23];
      bool red[2] = {!noop, !noop};
      int64_t nout = ref_reduce(K_SUM, xs, 2, d2, red, want);
      assert_int_equal(th_numel(out.rank, out.dims), nout);
      assert_int_equal(out.rank, keep || noop ? 2 : 0);
      check_close("empty axes", out.data, want, nout, 1e-5, 1e-5);
      kc_module_free(m);
      kc_graph_free(g);
    }
  gfree(xs);
  /*
   * bool max (any) and min (all), integer sum / mean (mean truncates), min and prod over the
   * last axis
   */
  static const int64_t db[2] = {4, 19};
  uint8_t bx[4 * 19] = {0};
  bx[3] = 1, bx[2 * 19 + 18] = 1, bx[3 * 19] = 1;
  int32_t ix[4 * 19];
  for (int i = 0; i < 4 * 19; i++)
    ix[i] = (i * 37) % 23 - 11;
  uint8_t ball[4 * 19];
  for (int i = 0; i < 4 * 19; i++) /* rows 0 and 2 all true, 1 and 3 one false each */
    ball[i] = !(i == 19 + 7 || i == 3 * 19 + 18);
  static const kc_op iops[6] = {KC_OP_REDUCE_MAX, KC_OP_REDUCE_SUM, KC_OP_REDUCE_MEAN,
                                KC_OP_REDUCE_MIN, KC_OP_REDUCE_MIN, KC_OP_REDUCE_PROD};
  int32_t px[4 * 19];
  for (int i = 0; i < 4 * 19; i++) /* small factors: the products fit an i32 */
    px[i] = i % 5 == 0 ? -1 : i % 7 == 0 ? 2 : 1;
  for (int c = 0; c < 6; c++) {
    kc_dtype t = c == 0 || c == 3 ? KC_BOOL : KC_I32;
    kc_op op = iops[c];
    const void *xd = c == 0 ? (void *)bx : c == 3 ? (void *)ball : c == 5 ? (void *)px : (void *)ix;
    kc_graph *g = kc_graph_new(ctx, "ints");
    kc_val x = kc_input(g, "x", t, 2, (const kc_dim[]){4, 19});
    int64_t last = -1;
    kc_output(g, reduce_node(g, op, x, kc_const_i64s(g, 1, &last), 0, 0), "y");
    kc_tensor_desc in = th_desc("x", t, 2, db, (void *)xd), out;
    kc_module *m = run(g, &in, 1, &out, 1, 2);
    assert_int_equal(out.dtype, t);
    for (int r = 0; r < 4; r++) {
      int64_t want = c == 3 ? 1 : c == 4 ? INT32_MAX : c == 5 ? 1 : 0, got;
      for (int k = 0; k < 19; k++) {
        int64_t v = ix[r * 19 + k];
        want = c == 0   ? (want | bx[r * 19 + k])
               : c == 3 ? (want & ball[r * 19 + k])
               : c == 4 ? (v < want ? v : want)
               : c == 5 ? want * px[r * 19 + k]
                        : want + v;
      }
      if (c == 2) want /= 19;
      got = t == KC_BOOL ? ((uint8_t *)out.data)[r] : ((int32_t *)out.data)[r];
      assert_int_equal(got, want);
    }
    kc_module_free(m);
    kc_graph_free(g);
  }
  /*
   * i64 max and min down the columns (column mode): all negative (positive for min), so the
   * identities must be INT64_MIN and INT64_MAX
   */
  for (int mn = 0; mn < 2; mn++) {
    int64_t lx[5 * 19], first = 0;
    for (int i = 0; i < 5 * 19; i++)
      lx[i] = (mn ? 1 : -1) * (1000000000000LL + (i * 7919) % 1013);
    kc_graph *g = kc_graph_new(ctx, "i64");
    kc_val x = kc_input(g, "x", KC_I64, 2, (const kc_dim[]){5, 19});
    kc_output(g,
              reduce_node(g, mn ? KC_OP_REDUCE_MIN : KC_OP_REDUCE_MAX, x,
                          kc_const_i64s(g, 1, &first), 1, 0),
              "y");
    int64_t dl[2] = {5, 19};
    kc_tensor_desc in = th_desc("x", KC_I64, 2, dl, lx), out;
    kc_module *m = run(g, &in, 1, &out, 1, 1);
    for (int k = 0; k < 19; k++) {
      int64_t want = mn ? INT64_MAX : INT64_MIN;
      for (int r = 0; r < 5; r++) {
        int64_t v = lx[r * 19 + k];
        want = (mn ? v < want : v > want) ? v : want;
      }
      assert_int_equal(((int64_t *)out.data)[k], want);
    }
    kc_module_free(m);
    kc_graph_free(g);
  }
}

/* ---- softmax ------------------------------------------------------------------------------- */

static void ref_softmax(bool lg, const float *x, int r, const int64_t *dims, int axis, double *y) {
  int64_t outer = th_numel(axis, dims), len = dims[axis],
          inner = th_numel(r - axis - 1, dims + axis + 1);
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
  int64_t n = th_numel(r, dims);
  float *xs = rand_floats(n);
  for (int64_t i = 0; i < n; i++)
    xs[i] = xs[i] * 8 + bias;
  double *want = malloc((size_t)n * sizeof *want);
  ref_softmax(log, xs, r, dims, (int)(axis < 0 ? axis + r : axis), want);
  kc_tensor_desc in = th_desc("x", KC_F32, r, dims, xs), out;
  kc_module *m = run(g, &in, 1, &out, 1, threads);
  char what[96];
  snprintf(what, sizeof what, "%s rank %d axis %lld", log ? "log_softmax" : "softmax", r,
           (long long)axis);
  check_close(what, out.data, want, n, 1e-5, 1e-6);
  kc_module_free(m);
  gfree(want);
  gfree(xs);
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
 * Reference normalization of x[rows, n] (row-major, n = th_numel(x[axis:])): scale/bias indexed
 * by k mod their element count (they span trailing dims). mean/inv (may be NULL) per row.
 */
static void ref_norm(bool rms, const float *x, int64_t rows, int64_t n, const float *scale,
                     int64_t ns, const float *bias, int64_t nb, double eps, double *y, double *mean,
                     double *inv) {
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
  int64_t n = th_numel(r, dims), rows = th_numel(axis, dims), len = n / (rows ? rows : 1);
  int64_t ns = th_numel(sspan, dims + r - sspan),
          nb = bspan >= 0 ? th_numel(bspan, dims + r - bspan) : 1;
  float *xs = rand_floats(n), *ss = rand_floats(ns), *bs = rand_floats(nb);
  for (int64_t i = 0; i < n; i++)
    xs[i] += offset;
  double *want = malloc((size_t)(n + 2 * rows) * sizeof *want);
  ref_norm(rms, xs, rows, len, ss, ns, bspan >= 0 ? bs : NULL, nb, eps, want, want + n,
           want + n + rows);
  kc_tensor_desc ins[3] = {th_desc("x", KC_F32, r, dims, xs),
                           th_desc("scale", KC_F32, sspan, dims + r - sspan, ss),
                           th_desc("bias", KC_F32, bspan, dims + r - (bspan > 0 ? bspan : 0), bs)},
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
  gfree(want);
  gfree(xs);
  gfree(ss);
  gfree(bs);
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

/* ---- rotary -------------------------------------------------------------------------------- */

/* Rotate the head vector x[0, d) (stride 1) in place: pairs by `half` per ONNX RotaryEmbedding. */
static void ref_rotate(double *x, int64_t d, int64_t half, const float *c, const float *s,
                       bool interleaved) {
  (void)d;
  for (int64_t i = 0; i < half; i++) {
    int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    double x1 = x[a], x2 = x[b];
    x[a] = x1 * c[i] - x2 * s[i];
    x[b] = x1 * s[i] + x2 * c[i];
  }
}

/*
 * RotaryEmbedding on x [B,H,S,D] (rank 4) or [B,S,H*D] (rank 3); caches [maxpos, cw] with
 * position ids, else [B, S, cw]; rdim 0 rotates 2*cw.
 */
static void one_rotary(int rank, int64_t B, int64_t H, int64_t S, int64_t D, int64_t cw, bool pos,
                       bool interleaved, int64_t rdim) {
  kc_graph *g = kc_graph_new(ctx, "rotary");
  int64_t xd4[4] = {B, H, S, D}, xd3[3] = {B, S, H * D}, maxpos = 29;
  const int64_t *xd = rank == 4 ? xd4 : xd3;
  kc_dim xk[4];
  for (int i = 0; i < rank; i++)
    xk[i] = xd[i];
  int64_t cd[3] = {B, S, cw}, cp[2] = {maxpos, cw};
  const int64_t *cdims = pos ? cp : cd;
  int crank = pos ? 2 : 3;
  kc_dim ck[3];
  for (int i = 0; i < crank; i++)
    ck[i] = cdims[i];
  kc_val x = kc_input(g, "x", KC_F32, rank, xk);
  kc_val c = kc_input(g, "cos", KC_F32, crank, ck), sn = kc_input(g, "sin", KC_F32, crank, ck);
  kc_val p = pos ? kc_input(g, "pos", KC_I64, 2, (const kc_dim[]){B, S}) : (kc_val){0};
  kc_val in[4] = {x, c, sn, p}, y;
  uint32_t ni = kc_graph_add_node(g, KC_OP_ROTARY, pos ? 4 : 3, in, 1, &y);
  kc_node_set_int(g, ni, "interleaved", interleaved);
  if (rank == 3) kc_node_set_int(g, ni, "num_heads", H);
  if (rdim) kc_node_set_int(g, ni, "rotary_embedding_dim", rdim);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  kc_output(g, y, "y");
  int64_t n = B * H * S * D, nc = th_numel(crank, cdims);
  float *xs = rand_floats(n), *cs = rand_floats(nc), *ss = rand_floats(nc);
  int64_t *ps = malloc((size_t)(B * S) * sizeof *ps);
  for (int64_t i = 0; i < B * S; i++)
    ps[i] = (i * 7 + 3) % maxpos;
  double *want = malloc((size_t)n * sizeof *want);
  int64_t half = rdim ? rdim / 2 : cw;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t si = 0; si < S; si++) {
        int64_t off = rank == 4 ? ((b * H + h) * S + si) * D : ((b * S + si) * H + h) * D;
        int64_t row = pos ? ps[b * S + si] * cw : (b * S + si) * cw;
        double v[64];
        for (int64_t k = 0; k < D; k++)
          v[k] = xs[off + k];
        ref_rotate(v, D, half, cs + row, ss + row, interleaved);
        for (int64_t k = 0; k < D; k++)
          want[off + k] = v[k];
      }
  int64_t pd[2] = {B, S};
  kc_tensor_desc ins[4] = {th_desc("x", KC_F32, rank, xd, xs),
                           th_desc("cos", KC_F32, crank, cdims, cs),
                           th_desc("sin", KC_F32, crank, cdims, ss),
                           th_desc("pos", KC_I64, 2, pd, ps)},
                 out;
  kc_module *m = run(g, ins, pos ? 4 : 3, &out, 1, 2);
  char what[96];
  snprintf(what, sizeof what, "rotary rank %d pos %d interleaved %d rdim %lld", rank, pos,
           interleaved, (long long)rdim);
  check_close(what, out.data, want, n, 1e-5, 1e-6);
  kc_module_free(m);
  gfree(want);
  gfree(ps);
  gfree(xs);
  gfree(cs);
  gfree(ss);
  kc_graph_free(g);
}

static void t_rotary(void **st) {
  (void)st;
  for (int il = 0; il < 2; il++)
    for (int pos = 0; pos < 2; pos++) {
      one_rotary(4, 2, 3, 5, 40, 20, pos, il, 0);
      one_rotary(3, 2, 3, 5, 40, 20, pos, il, 0);
      one_rotary(4, 2, 3, 5, 40, 6, pos, il, 12); /* partial: dims 12.. are copied */
      one_rotary(3, 1, 4, 3, 8, 4, pos, il, 0);
    }
}

/* ---- attention ----------------------------------------------------------------------------- */

typedef struct attn_case {
  int rank; /* 3: [B,S,H*D]; 4: [B,H,S,D] */
  int64_t B, S, Skv, P, H, KVH, D, Dv;
  kc_mask_kind mask;
  int mask_rank;   /* additive: 2..4 (dims [B|1, H|1, S, T] right-aligned) */
  bool mask_heads; /* additive rank >= 3: a heads dim of H (else 1) */
  bool mask_keys;  /* additive: a query dim of 1 (with no heads dim: one value per key, splat) */
  bool bool_pad;   /* padding mask as bool (else i64) */
  bool rotary, interleaved;
  int64_t cw;   /* rotary cache width (R/2) */
  double scale; /* 0: default */
  bool present;
  bool sym; /* B, S and S_kv symbolic (no mask input, no past) */
} attn_case;

/* Element (b, h, s, d) offset of a [B,S,H*dh] (rank 3) or [B,H,S,dh] tensor. */
static int64_t at(int rank, int64_t H, int64_t S, int64_t dh, int64_t b, int64_t h, int64_t s,
                  int64_t d) {
  return rank == 3 ? ((b * S + s) * H + h) * dh + d : ((b * H + h) * S + s) * dh + d;
}

static void dims_of(int rank, int64_t B, int64_t H, int64_t S, int64_t dh, int64_t *out) {
  if (rank == 3) {
    out[0] = B, out[1] = S, out[2] = H * dh;
  } else {
    out[0] = B, out[1] = H, out[2] = S, out[3] = dh;
  }
}

static void one_attention(const attn_case *c) {
  int64_t B = c->B, S = c->S, Skv = c->Skv, P = c->P, H = c->H, KVH = c->KVH, D = c->D;
  int64_t Dv = c->Dv, T = P + Skv, maxpos = T + 3;
  kc_graph *g = kc_graph_new(ctx, "attention");
  int64_t qd[4], kd[4], vd[4], pkd[4] = {B, KVH, P, D}, pvd[4] = {B, KVH, P, Dv};
  dims_of(c->rank, B, H, S, D, qd);
  dims_of(c->rank, B, KVH, Skv, D, kd);
  dims_of(c->rank, B, KVH, Skv, Dv, vd);
  int64_t md[4], mr = 0;
  if (c->mask == KC_MASK_PADDING) {
    md[0] = B, md[1] = T, mr = 2;
  } else if (c->mask == KC_MASK_ADDITIVE) {
    int64_t full[4] = {B, c->mask_heads ? H : 1, c->mask_keys ? 1 : S, T};
    mr = c->mask_rank;
    for (int i = 0; i < mr; i++)
      md[i] = full[4 - mr + i];
  }
  int64_t cd[2] = {maxpos, c->cw};
  kc_dim k4[4];
#define INPUT(name, t, r, d)                                                                       \
  (k4[0] = (d)[0], k4[1] = (d)[1], k4[2] = (r) > 2 ? (d)[2] : 0, k4[3] = (r) > 3 ? (d)[3] : 0,     \
   kc_input(g, name, t, r, k4))
  kc_dtype mt = c->mask == KC_MASK_PADDING ? (c->bool_pad ? KC_BOOL : KC_I64) : KC_F32;
  /* q, k, v: static dims, or batch and sequence lengths bound at run time */
  kc_dim dq[4], dk[4], dv[4];
  for (int i = 0; i < c->rank; i++)
    dq[i] = qd[i], dk[i] = kd[i], dv[i] = vd[i];
  if (c->sym) {
    int si = c->rank == 3 ? 1 : 2;
    dq[0] = dk[0] = dv[0] = kc_sym(g, "B");
    dq[si] = kc_sym(g, "S");
    dk[si] = dv[si] = kc_sym(g, "Skv");
  }
  kc_val in[8] = {kc_input(g, "q", KC_F32, c->rank, dq), kc_input(g, "k", KC_F32, c->rank, dk),
                  kc_input(g, "v", KC_F32, c->rank, dv)};
  if (mr) in[3] = INPUT("mask", mt, (int)mr, md);
  if (P) in[4] = INPUT("past_k", KC_F32, 4, pkd), in[5] = INPUT("past_v", KC_F32, 4, pvd);
  if (c->rotary) in[6] = INPUT("cos", KC_F32, 2, cd), in[7] = INPUT("sin", KC_F32, 2, cd);
#undef INPUT
  uint32_t nin = c->rotary ? 8 : P ? 6 : mr ? 4 : 3;
  kc_val outs[3];
  uint32_t ni = kc_graph_add_node(g, KC_OP_ATTENTION, nin, in, c->present ? 3 : 1, outs);
  static const char *const kinds[] = {"none", "causal", "padding", "additive"};
  kc_node_set_int(g, ni, "heads", H);
  kc_node_set_int(g, ni, "kv_heads", KVH);
  kc_node_set_string(g, ni, "mask", kinds[c->mask]);
  if (c->scale != 0) kc_node_set_float(g, ni, "scale", c->scale);
  if (c->interleaved) kc_node_set_int(g, ni, "rotary_interleaved", 1);
  if (kc_node_infer(g, ni) != KC_OK) fail_msg("attention: %s", kc_last_error(ctx));
  kc_output(g, outs[0], "y");
  if (c->present) kc_output(g, outs[1], "present_k"), kc_output(g, outs[2], "present_v");

  int64_t nq = B * H * S * D, nk = B * KVH * Skv * D, nv = B * KVH * Skv * Dv;
  float *q = rand_floats(nq), *k = rand_floats(nk), *v = rand_floats(nv);
  float *pk = rand_floats(B * KVH * P * D), *pv = rand_floats(B * KVH * P * Dv);
  float *cs = rand_floats(maxpos * c->cw), *sn = rand_floats(maxpos * c->cw);
  int64_t nm = mr ? th_numel((int)mr, md) : 1;
  float *am = rand_floats(nm);
  int64_t *pm = malloc((size_t)nm * sizeof *pm);
  uint8_t *bm = malloc((size_t)nm);
  for (int64_t i = 0; i < nm; i++) {
    pm[i] = (i * 5) % 3 != 0;
    bm[i] = (uint8_t)pm[i];
    am[i] = (i * 7) % 5 == 0 ? -INFINITY : am[i] * 2;
  }
  if (c->mask == KC_MASK_PADDING)
    for (int64_t j = 0; j < T; j++) /* batch 0 sees nothing: its rows must come out 0 */
      pm[j] = bm[j] = 0;

  /* reference: keys K[b][hk][j] (rotated where new), queries rotated at P + i */
  double scale = c->scale != 0 ? c->scale : 1 / sqrt((double)D);
  int64_t half = c->cw;
  double *Kr = malloc((size_t)(B * KVH * T * D) * sizeof *Kr);
  double *Vr = malloc((size_t)(B * KVH * T * Dv) * sizeof *Vr);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < KVH; h++)
      for (int64_t j = 0; j < T; j++) {
        double *kr = Kr + ((b * KVH + h) * T + j) * D, *vr = Vr + ((b * KVH + h) * T + j) * Dv;
        for (int64_t d = 0; d < D; d++)
          kr[d] = j < P ? pk[((b * KVH + h) * P + j) * D + d]
                        : k[at(c->rank, KVH, Skv, D, b, h, j - P, d)];
        for (int64_t d = 0; d < Dv; d++)
          vr[d] = j < P ? pv[((b * KVH + h) * P + j) * Dv + d]
                        : v[at(c->rank, KVH, Skv, Dv, b, h, j - P, d)];
        if (c->rotary && j >= P)
          ref_rotate(kr, D, half, cs + j * c->cw, sn + j * c->cw, c->interleaved);
      }
  double *want = calloc((size_t)(B * H * S * Dv), sizeof *want);
  double *sc = malloc((size_t)T * sizeof *sc);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < S; i++) {
        double qv[256];
        int64_t hk = h / (H / KVH);
        for (int64_t d = 0; d < D; d++)
          qv[d] = q[at(c->rank, H, S, D, b, h, i, d)];
        if (c->rotary)
          ref_rotate(qv, D, half, cs + (P + i) * c->cw, sn + (P + i) * c->cw, c->interleaved);
        double m = -INFINITY;
        for (int64_t j = 0; j < T; j++) {
          const double *kr = Kr + ((b * KVH + hk) * T + j) * D;
          double s = 0;
          for (int64_t d = 0; d < D; d++)
            s += qv[d] * kr[d];
          s *= scale;
          /* causal aligns at the bottom right: the last query sees every key */
          if (c->mask == KC_MASK_CAUSAL && j > i + T - S) s = -INFINITY;
          if (c->mask == KC_MASK_PADDING && !pm[b * T + j]) s = -INFINITY;
          if (c->mask == KC_MASK_ADDITIVE) {
            int64_t full[4] = {b, h, i, j}, idx = 0;
            for (int a = 0; a < mr; a++) {
              int64_t dim = md[a], coord = dim == 1 ? 0 : full[4 - mr + a];
              idx = idx * dim + coord;
            }
            s += am[idx];
          }
          sc[j] = s;
          m = fmax(m, s);
        }
        if (m == -INFINITY) continue; /* nothing visible: 0 */
        double sum = 0;
        for (int64_t j = 0; j < T; j++)
          sum += sc[j] = exp(sc[j] - m);
        for (int64_t j = 0; j < T; j++)
          for (int64_t d = 0; d < Dv; d++)
            want[at(c->rank, H, S, Dv, b, h, i, d)] +=
                sc[j] / sum * Vr[((b * KVH + hk) * T + j) * Dv + d];
      }

  kc_tensor_desc ins[8] = {th_desc("q", KC_F32, c->rank, qd, q),
                           th_desc("k", KC_F32, c->rank, kd, k),
                           th_desc("v", KC_F32, c->rank, vd, v)};
  uint32_t n_in = 3;
  void *mdata = mt == KC_BOOL ? (void *)bm : mt == KC_I64 ? (void *)pm : (void *)am;
  if (mr) ins[n_in++] = th_desc("mask", mt, (int)mr, md, mdata);
  if (P) {
    ins[n_in++] = th_desc("past_k", KC_F32, 4, pkd, pk);
    ins[n_in++] = th_desc("past_v", KC_F32, 4, pvd, pv);
  }
  if (c->rotary) {
    ins[n_in++] = th_desc("cos", KC_F32, 2, cd, cs);
    ins[n_in++] = th_desc("sin", KC_F32, 2, cd, sn);
  }
  kc_tensor_desc out[3];
  kc_module *mod = run(g, ins, n_in, out, c->present ? 3 : 1, 2);
  char what[160];
  snprintf(what, sizeof what,
           "attention rank %d B %lld S %lld Skv %lld P %lld H %lld/%lld D %lld/%lld mask %d "
           "rotary %d/%d",
           c->rank, (long long)B, (long long)S, (long long)Skv, (long long)P, (long long)H,
           (long long)KVH, (long long)D, (long long)Dv, c->mask, c->rotary, c->interleaved);
  check_close(what, out[0].data, want, B * H * S * Dv, 1e-4, 1e-5);
  if (c->present) {
    check_close("present_k", out[1].data, Kr, B * KVH * T * D, 1e-5, 1e-6);
    check_close("present_v", out[2].data, Vr, B * KVH * T * Dv, 0, 0);
  }
  kc_module_free(mod);
  gfree(sc);
  gfree(want);
  gfree(Kr);
  gfree(Vr);
  gfree(q), gfree(k), gfree(v), gfree(pk), gfree(pv), gfree(cs), gfree(sn), gfree(am), gfree(pm),
      gfree(bm);
  kc_graph_free(g);
}

static void t_attention(void **st) {
  (void)st;
  /* sizes cross the 16-row query blocks and 16-key blocks with tails */
  attn_case base = {.rank = 3, .B = 2, .S = 19, .Skv = 37, .H = 3, .KVH = 3, .D = 8, .Dv = 8};
  attn_case c = base;
  one_attention(&c);
  c.scale = 0.3;
  one_attention(&c);
  c = base, c.Skv = 19, c.mask = KC_MASK_CAUSAL;
  one_attention(&c);
  c.P = 7, c.present = true;
  one_attention(&c);
  c = base, c.mask = KC_MASK_PADDING;
  one_attention(&c);
  c.bool_pad = true, c.P = 5;
  one_attention(&c);
  for (int r = 2; r <= 4; r++) {
    c = base, c.mask = KC_MASK_ADDITIVE, c.mask_rank = r;
    one_attention(&c);
    c.mask_heads = true, c.P = 3;
    one_attention(&c);
    if (r < 3) continue;
    c = base, c.mask = KC_MASK_ADDITIVE, c.mask_rank = r, c.mask_keys = true; /* [B, 1, 1, T] */
    one_attention(&c);
    c.P = 3, c.S = 40, c.Skv = 40;
    one_attention(&c);
  }
  /* GQA, with past and present; MQA; a value head size of its own */
  c = base, c.H = 6, c.KVH = 2, c.P = 12, c.present = true, c.mask = KC_MASK_CAUSAL;
  one_attention(&c);
  c = base, c.H = 4, c.KVH = 1, c.D = 64, c.Dv = 64, c.S = 33, c.Skv = 50;
  one_attention(&c);
  c = base, c.Dv = 12, c.P = 4, c.present = true, c.mask = KC_MASK_ADDITIVE, c.mask_rank = 2;
  one_attention(&c);
  /* 4-D layouts */
  c = base, c.rank = 4, c.H = 6, c.KVH = 3, c.mask = KC_MASK_CAUSAL, c.S = 17, c.Skv = 17;
  one_attention(&c);
  c.P = 6, c.present = true, c.Dv = 5;
  one_attention(&c);
  /* rotary on q and the new keys, both pairings, with past keys already rotated */
  for (int il = 0; il < 2; il++) {
    c = base, c.rotary = true, c.interleaved = il, c.cw = 4, c.mask = KC_MASK_CAUSAL;
    c.S = c.Skv = 21;
    one_attention(&c);
    c.P = 9, c.present = true, c.cw = 3; /* partial: dims 6.. unrotated */
    one_attention(&c);
  }
  /* symbolic batch and lengths */
  c = base, c.sym = true, c.mask = KC_MASK_CAUSAL, c.S = c.Skv = 23;
  one_attention(&c);
  c.rank = 4, c.mask = KC_MASK_NONE, c.Skv = 40;
  one_attention(&c);
  /* one query (decoding step) against a long cache */
  c = base, c.S = 1, c.Skv = 1, c.P = 70, c.present = true, c.mask = KC_MASK_CAUSAL, c.H = 4;
  c.KVH = 2, c.D = 32, c.Dv = 32;
  one_attention(&c);
}

/* ---- symbolic dims and half precision ----------------------------------------------------- */

/* Kernels compiled with symbolic dims run on sizes bound at run time (two different ones). */
static void t_symbolic(void **st) {
  (void)st;
  for (int rep = 0; rep < 2; rep++) {
    int64_t B = rep ? 3 : 2, S = rep ? 21 : 17, N = rep ? 45 : 300;
    kc_graph *g = kc_graph_new(ctx, "sym");
    kc_dim xd[3] = {kc_sym(g, "B"), kc_sym(g, "S"), kc_sym(g, "N")};
    kc_val x = kc_input(g, "x", KC_F32, 3, xd);
    kc_val gm = kc_input(g, "g", KC_F32, 1, xd + 2);
    int64_t ax[2] = {0, 2};
    kc_output(g, kc_softmax(g, x, 1), "sm");
    kc_output(g, kc_rms_norm(g, x, gm, 1e-5f), "rn");
    kc_output(g, kc_reduce_mean(g, x, 2, ax, 0), "rm");
    assert_int_equal(kc_graph_status(g), KC_OK);
    int64_t dims[3] = {B, S, N}, n = B * S * N;
    float *xs = rand_floats(n), *gs = rand_floats(N);
    kc_tensor_desc ins[2] = {th_desc("x", KC_F32, 3, dims, xs), th_desc("g", KC_F32, 1, &N, gs)},
                   out[3];
    kc_module *m = run(g, ins, 2, out, 3, 2);
    double *want = malloc((size_t)n * sizeof *want);
    ref_softmax(false, xs, 3, dims, 1, want);
    check_close("symbolic softmax", out[0].data, want, n, 1e-5, 1e-6);
    ref_norm(true, xs, B * S, N, gs, N, NULL, 1, 1e-5, want, NULL, NULL);
    check_close("symbolic rms_norm", out[1].data, want, n, 1e-4, 1e-5);
    bool red[3] = {true, false, true};
    int64_t nout = ref_reduce(K_MEAN, xs, 3, dims, red, want);
    assert_int_equal(th_numel(out[2].rank, out[2].dims), nout);
    check_close("symbolic reduce_mean", out[2].data, want, nout, 1e-5, 1e-6);
    kc_module_free(m);
    gfree(want);
    gfree(xs);
    gfree(gs);
    kc_graph_free(g);
  }
}

/* f16 in and out: computed in f32, rounded once on store. */
static void t_half(void **st) {
  (void)st;
  int64_t dims[2] = {7, 77}, n = 7 * 77;
  kc_graph *g = kc_graph_new(ctx, "half");
  kc_val x = kc_input(g, "x", KC_F16, 2, (const kc_dim[]){7, 77});
  kc_val gm = kc_input(g, "g", KC_F16, 1, (const kc_dim[]){77});
  int64_t last = 1;
  kc_output(g, kc_softmax(g, x, 0), "sm");
  kc_output(g, kc_layer_norm(g, x, gm, (kc_val){0}, 1e-5f), "ln");
  kc_output(g, kc_reduce_sum(g, x, 1, &last, 1), "rs");
  assert_int_equal(kc_graph_status(g), KC_OK);
  float *xf = rand_floats(n), *gf = rand_floats(77);
  uint16_t xh[7 * 77], gh[77];
  for (int64_t i = 0; i < n; i++)
    xh[i] = kc_f32_to_f16(xf[i]), xf[i] = kc_f16_to_f32(xh[i]);
  for (int i = 0; i < 77; i++)
    gh[i] = kc_f32_to_f16(gf[i]), gf[i] = kc_f16_to_f32(gh[i]);
  int64_t gd = 77;
  kc_tensor_desc ins[2] = {th_desc("x", KC_F16, 2, dims, xh), th_desc("g", KC_F16, 1, &gd, gh)},
                 out[3];
  kc_module *m = run(g, ins, 2, out, 3, 1);
  double want[7 * 77];
  float got[7 * 77];
  for (int o = 0; o < 3; o++) {
    int64_t cnt = th_numel(out[o].rank, out[o].dims);
    assert_int_equal(out[o].dtype, KC_F16);
    for (int64_t i = 0; i < cnt; i++)
      got[i] = kc_f16_to_f32(((const uint16_t *)out[o].data)[i]);
    bool red[2] = {false, true};
    if (o == 0) ref_softmax(false, xf, 2, dims, 0, want);
    if (o == 1) ref_norm(false, xf, 7, 77, gf, 77, NULL, 1, 1e-5, want, NULL, NULL);
    if (o == 2) ref_reduce(K_SUM, xf, 2, dims, red, want);
    check_close(o == 0   ? "f16 softmax"
                : o == 1 ? "f16 layer_norm"
                         : "f16 reduce_sum",
                got, want, cnt, 1e-3, 1e-3);
  }
  kc_module_free(m);
  gfree(xf);
  gfree(gf);
  kc_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_reduce_axes), cmocka_unit_test(t_reduce_edge),
      cmocka_unit_test(t_softmax),     cmocka_unit_test(t_norm),
      cmocka_unit_test(t_rotary),      cmocka_unit_test(t_attention),
      cmocka_unit_test(t_symbolic),    cmocka_unit_test(t_half),
  };
  ctx = kc_context_new();
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  kc_context_free(ctx);
  return rc;
}
