/*
 * tests/test_cpu_movement.c - the data-movement and shape-computation kernels (transpose,
 * gather, concat, split, slice, expand, trilu, shape, constant_of_shape, range) against
 * references computed here with plain C loops.
 *
 * Each test builds a small graph with the builder API and lowers only its last node, directly
 * through the emitter family (kc_cpu_ops), so the tests do not depend on the other families.
 * Every kernel runs twice: once over all its units in one call (the odometer path across
 * units) and once in ranges of a few units, last range first; both must write the same bytes
 * into outputs that start poisoned, so any split into ranges is checked to be valid.
 * Symbolic dims are bound by name; dims only known at run time are given explicitly.
 * Gather's index check: the kernel's return value for bad indices (test_gather_bad_index), and
 * through kc_compile/kc_run the cases of tests/gather_cases.h (1, 64, 65 and 10^6 indices from
 * an input, computed or constant: values right, one out of range an error naming the node).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/gather_cases.h"

/* Run the last node of g over bufs in ranges of 3 units (tests/harness.h); out_dims (may be
 * NULL) gives the outputs' dims back to back where syms cannot evaluate them. */
static void run_last(th_cpu *f, kc_graph *g, const th_sym *syms, const int64_t *out_dims,
                     void **bufs) {
  th_run_last(f, g, syms, out_dims, 3, bufs);
}

static kc_graph *new_graph(th_cpu *f) { return kc_graph_new(f->ctx, "t"); }

/* i64 / i32 scalars and vectors as constants, with their host data for the buffers */
static kc_val ci64s(kc_graph *g, int n, const int64_t *v) { return kc_const_i64s(g, n, v); }

static void fill_seq(void *p, size_t esize, int64_t n) {
  unsigned char *b = p;
  for (int64_t i = 0; i < n; i++)
    for (size_t k = 0; k < esize; k++)
      b[i * (int64_t)esize + (int64_t)k] = (unsigned char)(i * 7 + k * 13 + 1);
}

/* ---- transpose ----------------------------------------------------------------------------- */

/* Reference: out[o] = x[in offset of o's multi-index through perm], element by bytes. */
static void ref_transpose(const unsigned char *x, unsigned char *out, size_t es, int r,
                          const int64_t *d, const int64_t *perm) {
  int64_t str[KC_MAX_RANK], od[KC_MAX_RANK], n = th_numel(r, d);
  for (int k = r - 1, s = 1; k >= 0; k--) {
    str[k] = s;
    s *= (int)d[k];
  }
  for (int k = 0; k < r; k++)
    od[k] = d[perm[k]];
  for (int64_t o = 0; o < n; o++) {
    int64_t rem = o, src = 0;
    for (int k = r - 1; k >= 0; k--) {
      src += (rem % od[k]) * str[perm[k]];
      rem /= od[k];
    }
    memcpy(out + o * (int64_t)es, x + src * (int64_t)es, es);
  }
}

static void check_transpose(th_cpu *f, kc_dtype t, int r, const kc_dim *dims, const th_sym *syms,
                            const int64_t *perm) {
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", t, r, dims);
  kc_val y = kc_transpose(g, x, r, perm);
  assert_true(y.id != 0);
  int64_t d[KC_MAX_RANK];
  for (int k = 0; k < r; k++)
    assert_true(kc_dim_eval(g, dims[k], th_sym_lookup, (void *)syms, &d[k]));
  size_t es = kc_dtype_size(t), n = (size_t)th_numel(r, d);
  unsigned char *xb = malloc(n * es + 1), *yb = malloc(n * es + 1), *ref = malloc(n * es + 1);
  fill_seq(xb, es, (int64_t)n);
  ref_transpose(xb, ref, es, r, d, perm);
  void *bufs[2] = {xb, yb};
  run_last(f, g, syms, NULL, bufs);
  assert_memory_equal(yb, ref, n * es);
  free(xb);
  free(yb);
  free(ref);
  kc_graph_free(g);
}

static void test_transpose(void **state) {
  th_cpu *f = *state;
  int64_t p2[] = {1, 0};
  check_transpose(f, KC_F32, 2, (kc_dim[]){5, 37}, NULL, p2);
  check_transpose(f, KC_I16, 2, (kc_dim[]){67, 1030}, NULL, p2); /* tiles and tails */
  check_transpose(f, KC_I8, 2, (kc_dim[]){3, 5000}, NULL, p2);
  check_transpose(f, KC_F64, 2, (kc_dim[]){1, 9}, NULL, p2);
  /* full in-register tiles of every element size, with partial tiles at the edges */
  check_transpose(f, KC_F32, 2, (kc_dim[]){40, 35}, NULL, p2);
  check_transpose(f, KC_I8, 2, (kc_dim[]){33, 50}, NULL, p2);
  check_transpose(f, KC_F64, 2, (kc_dim[]){17, 19}, NULL, p2);
  check_transpose(f, KC_F32, 2, (kc_dim[]){300, 260}, NULL, p2); /* several bands */
  int64_t p4e[] = {0, 3, 2, 1};
  check_transpose(f, KC_F32, 4, (kc_dim[]){2, 20, 3, 18}, NULL, p4e);
  int64_t p3a[] = {1, 0, 2}, p3b[] = {2, 0, 1}, p3c[] = {0, 2, 1};
  check_transpose(f, KC_F32, 3, (kc_dim[]){2, 3, 4}, NULL, p3a);
  check_transpose(f, KC_BOOL, 3, (kc_dim[]){2, 3, 4}, NULL, p3b);
  check_transpose(f, KC_F16, 3, (kc_dim[]){4, 9, 17}, NULL, p3c);
  int64_t p4a[] = {0, 2, 1, 3}, p4b[] = {3, 1, 2, 0}, p4c[] = {0, 2, 3, 1}, p4d[] = {2, 3, 0, 1};
  check_transpose(f, KC_F32, 4, (kc_dim[]){2, 3, 4, 5}, NULL, p4a);
  check_transpose(f, KC_I64, 4, (kc_dim[]){2, 3, 4, 5}, NULL, p4b);
  check_transpose(f, KC_I32, 4, (kc_dim[]){2, 3, 4, 5}, NULL, p4c);
  check_transpose(f, KC_F32, 4, (kc_dim[]){1, 6, 1, 4}, NULL, p4d); /* 1-dims dropped */
  check_transpose(f, KC_F32, 4, (kc_dim[]){1, 1, 1, 1}, NULL, p4b);
  check_transpose(f, KC_F32, 2, (kc_dim[]){0, 3}, NULL, p2);

  /* symbolic dims, default (reversed) perm too */
  kc_graph *g;
  th_sym syms[] = {{"B", 3}, {"S", 21}, {NULL, 0}};
  for (int c = 0; c < 3; c++) {
    g = new_graph(f);
    kc_dim d[3] = {kc_sym(g, "B"), kc_sym(g, "S"), 8};
    const int64_t *perm = c == 0 ? p3a : c == 1 ? p3c : p3b;
    kc_val x = kc_input(g, "x", KC_F32, 3, d);
    kc_transpose(g, x, 3, perm);
    int64_t dd[3] = {3, 21, 8};
    size_t n = 3 * 21 * 8;
    float *xb = malloc(n * 4), *yb = malloc(n * 4), *ref = malloc(n * 4);
    fill_seq(xb, 4, (int64_t)n);
    ref_transpose((unsigned char *)xb, (unsigned char *)ref, 4, 3, dd, perm);
    void *bufs[2] = {xb, yb};
    run_last(f, g, syms, NULL, bufs);
    assert_memory_equal(yb, ref, n * 4);
    free(xb);
    free(yb);
    free(ref);
    kc_graph_free(g);
  }
  g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_I32, 2, (kc_dim[]){kc_sym(g, "S"), 5});
  kc_transpose(g, x, 2, NULL);
  int32_t xb[21 * 5], yb[21 * 5];
  for (int i = 0; i < 21 * 5; i++)
    xb[i] = i;
  void *bufs[2] = {xb, yb};
  run_last(f, g, syms, NULL, bufs);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 21; j++)
      assert_int_equal(yb[i * 21 + j], xb[j * 5 + i]);
  kc_graph_free(g);
}

/* ---- gather ---------------------------------------------------------------------------------- */

static void test_gather(void **state) {
  th_cpu *f = *state;
  /* axis 0, i64 indices [2, 3] with negatives down to -len */
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){5, 4});
  kc_val idx = kc_input(g, "i", KC_I64, 2, (kc_dim[]){2, 3});
  kc_gather(g, x, idx, 0);
  float xb[20], yb[24];
  for (int i = 0; i < 20; i++)
    xb[i] = (float)i;
  int64_t ib[6] = {0, -1, 3, -5, 2, 4};
  int64_t want_row[6] = {0, 4, 3, 0, 2, 4};
  void *bufs[3] = {xb, ib, yb};
  run_last(f, g, NULL, NULL, bufs);
  for (int j = 0; j < 6; j++)
    for (int c = 0; c < 4; c++)
      assert_true(yb[j * 4 + c] == xb[want_row[j] * 4 + c]);
  kc_graph_free(g);

  /* axis 1 of [3, 5, 2] (i16), i32 indices [4]; symbolic leading dim */
  g = new_graph(f);
  x = kc_input(g, "x", KC_I16, 3, (kc_dim[]){kc_sym(g, "B"), 5, 2});
  idx = kc_input(g, "i", KC_I32, 1, (kc_dim[]){4});
  kc_gather(g, x, idx, -2);
  int16_t xs[30], ys[24];
  for (int i = 0; i < 30; i++)
    xs[i] = (int16_t)(i * 3);
  int32_t is[4] = {4, -1, -5, 1};
  int want[4] = {4, 4, 0, 1};
  th_sym syms[] = {{"B", 3}, {NULL, 0}};
  void *b2[3] = {xs, is, ys};
  run_last(f, g, syms, NULL, b2);
  for (int p = 0; p < 3; p++)
    for (int j = 0; j < 4; j++)
      for (int q = 0; q < 2; q++)
        assert_int_equal(ys[(p * 4 + j) * 2 + q], xs[(p * 5 + want[j]) * 2 + q]);
  kc_graph_free(g);

  /* scalar index along the last axis: [3, 4] -> [3] */
  g = new_graph(f);
  x = kc_input(g, "x", KC_U8, 2, (kc_dim[]){3, 4});
  idx = kc_input(g, "i", KC_I64, 0, NULL);
  kc_gather(g, x, idx, 1);
  uint8_t xu[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, yu[3];
  int64_t i1 = -2;
  void *b3[3] = {xu, &i1, yu};
  run_last(f, g, NULL, NULL, b3);
  assert_int_equal(yu[0], 2);
  assert_int_equal(yu[1], 6);
  assert_int_equal(yu[2], 10);
  kc_graph_free(g);
}

/*
 * Out-of-range indices: the kernel returns 1 + the position of the first bad index of its range
 * (in its own order) and reads nothing through it. x is [N, 4096] (N = 5, then 0, bound in the
 * dims) so each index is a unit of its own and ranges can hold one bad index, both, or none; x
 * lies in a buffer of exactly its size, so a read through a bad index would be out of bounds
 * (ASan).
 */
static void test_gather_bad_index(void **state) {
  th_cpu *f = *state;
  for (int it = 0; it < 2; it++) {
    kc_graph *g = new_graph(f);
    kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){kc_sym(g, "N"), 4096});
    kc_val idx = kc_input(g, "i", it ? KC_I32 : KC_I64, 2, (kc_dim[]){2, 3});
    kc_gather(g, x, idx, 0);
    assert_int_equal(kc_graph_status(g), KC_OK);
    th_kernel k;
    assert_int_equal(th_lower_node(f, g, g->nnodes - 1, &k), KC_OK);
    float *xb = malloc(5 * 4096 * sizeof *xb), *yb = malloc(6 * 4096 * sizeof *yb);
    for (int i = 0; i < 5 * 4096; i++)
      xb[i] = (float)i;
    /* positions 3 (-6) and 5 (5) are out of range for a size of 5 */
    int64_t i64s[6] = {0, -5, 4, -6, 2, 5};
    int32_t i32s[6] = {0, -5, 4, -6, 2, 5};
    void *bufs[3] = {xb, it ? (void *)i32s : (void *)i64s, yb};
    int64_t dims[7] = {5, 4096, 2, 3, 2, 3, 4096};
    int64_t units = k.units(dims);
    assert_int_equal(units, 6);
    assert_int_equal(k.fn(bufs, dims, NULL, 0, units), 4);
    assert_int_equal(k.fn(bufs, dims, NULL, 4, 6), 6);
    assert_int_equal(k.fn(bufs, dims, NULL, 5, 6), 6);
    assert_int_equal(k.fn(bufs, dims, NULL, 0, 3), 0);
    /* the good rows of a range are right: rows 0, 0 (-5), 4 */
    for (int j = 0; j < 3; j++)
      assert_true(yb[j * 4096 + 7] == xb[(j == 2 ? 4 : 0) * 4096 + 7]);
    /* all in range now */
    i64s[3] = i32s[3] = -1, i64s[5] = i32s[5] = 3;
    assert_int_equal(k.fn(bufs, dims, NULL, 0, units), 0);
    assert_true(yb[3 * 4096 + 9] == xb[4 * 4096 + 9] && yb[5 * 4096] == xb[3 * 4096]);
    /* an empty axis: every index is out of range */
    int64_t dims0[7] = {0, 4096, 2, 3, 2, 3, 4096};
    i64s[0] = i32s[0] = 0;
    assert_int_equal(k.fn(bufs, dims0, NULL, 0, units), 1);
    free(xb);
    free(yb);
    kc_graph_free(g);
  }
}

static void test_gather_run(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  assert_int_equal(gc_jit_all(ctx, "cpu"), 0);
  kc_context_free(ctx);
}

/* ---- concat and split --------------------------------------------------------------------------
 */

static void test_concat(void **state) {
  th_cpu *f = *state;
  for (int c = 0; c < 2; c++) {
    int axis = c == 0 ? 1 : -3; /* -3 is axis 0 */
    kc_graph *g = new_graph(f);
    int a = axis < 0 ? axis + 3 : axis;
    kc_dim d0[3] = {2, 3, 2}, d1[3] = {2, 0, 2}, d2[3] = {2, 4, 2};
    if (a == 0) d0[0] = 3, d0[1] = 2, d1[0] = 0, d1[1] = 2, d2[0] = 4, d2[1] = 2;
    kc_val xs[3] = {kc_input(g, "a", KC_I64, 3, d0), kc_input(g, "b", KC_I64, 3, d1),
                    kc_input(g, "c", KC_I64, 3, d2)};
    kc_concat(g, 3, xs, axis);
    int64_t b0[12], b2[16], b1[1], out[28];
    for (int i = 0; i < 12; i++)
      b0[i] = 100 + i;
    for (int i = 0; i < 16; i++)
      b2[i] = 200 + i;
    void *bufs[4] = {b0, b1, b2, out};
    run_last(f, g, NULL, NULL, bufs);
    /* reference: walk the output [pre, 7, post] */
    int64_t pre = a == 0 ? 1 : 2, post = a == 0 ? 4 : 2, len[3] = {3, 0, 4};
    int64_t *src[3] = {b0, b1, b2};
    int64_t o = 0;
    for (int64_t p = 0; p < pre; p++)
      for (int k = 0; k < 3; k++)
        for (int64_t j = 0; j < len[k] * post; j++)
          assert_int_equal(out[o++], src[k][p * len[k] * post + j]);
    assert_int_equal(o, 28);
    kc_graph_free(g);
  }
}

static void test_split(void **state) {
  th_cpu *f = *state;
  /* unequal sizes along axis 1 of [2, 7] */
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){2, 7});
  kc_val outs[3];
  assert_int_equal(kc_split(g, x, 1, 3, (int64_t[]){2, 0, 5}, outs), KC_OK);
  float xb[14], o0[4], o1[1], o2[10];
  for (int i = 0; i < 14; i++)
    xb[i] = (float)i;
  int64_t sizes[3] = {2, 0, 5};
  void *bufs[5] = {xb, sizes, o0, o1, o2};
  run_last(f, g, NULL, NULL, bufs);
  for (int r = 0; r < 2; r++) {
    for (int j = 0; j < 2; j++)
      assert_true(o0[r * 2 + j] == xb[r * 7 + j]);
    for (int j = 0; j < 5; j++)
      assert_true(o2[r * 5 + j] == xb[r * 7 + 2 + j]);
  }
  kc_graph_free(g);

  /* equal parts of a symbolic axis 0: [S, 3] with S = 8 into 3 parts (3, 3, 2) */
  g = new_graph(f);
  x = kc_input(g, "x", KC_U8, 2, (kc_dim[]){kc_sym(g, "S"), 3});
  assert_int_equal(kc_split(g, x, 0, 3, NULL, outs), KC_OK);
  uint8_t xu[24], p0[9], p1[9], p2[6];
  for (int i = 0; i < 24; i++)
    xu[i] = (uint8_t)i;
  th_sym syms[] = {{"S", 8}, {NULL, 0}};
  void *b2[4] = {xu, p0, p1, p2};
  run_last(f, g, syms, NULL, b2);
  assert_memory_equal(p0, xu, 9);
  assert_memory_equal(p1, xu + 9, 9);
  assert_memory_equal(p2, xu + 18, 6);
  kc_graph_free(g);
}

/* ---- slice ------------------------------------------------------------------------------------
 */

/* Reference slice of a [rows, cols] f32 matrix with per-axis first index and step. */
static void ref_slice2(const float *x, int64_t cols, const int64_t *first, const int64_t *step,
                       const int64_t *od, float *out) {
  for (int64_t i = 0; i < od[0]; i++)
    for (int64_t j = 0; j < od[1]; j++)
      out[i * od[1] + j] = x[(first[0] + i * step[0]) * cols + first[1] + j * step[1]];
}

static void test_slice(void **state) {
  th_cpu *f = *state;
  float xb[40], yb[40], ref[40];
  for (int i = 0; i < 40; i++)
    xb[i] = (float)i;
  /* constants: rows 1..3, cols 8 down to 0 by -3 (end -100 clamps), axes [0, -1] */
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){4, 10});
  int64_t st[2] = {1, 8}, en[2] = {3, -100}, ax[2] = {0, -1}, sp[2] = {1, -3};
  kc_val y = kc_slice(g, x, ci64s(g, 2, st), ci64s(g, 2, en), ci64s(g, 2, ax), ci64s(g, 2, sp));
  assert_int_equal(kc_val_rank(g, y), 2);
  void *bufs[6] = {xb, st, en, ax, sp, yb};
  run_last(f, g, NULL, NULL, bufs);
  ref_slice2(xb, 10, (int64_t[]){1, 8}, (int64_t[]){1, -3}, (int64_t[]){2, 3}, ref);
  assert_memory_equal(yb, ref, 6 * sizeof(float));
  kc_graph_free(g);

  /* run-time values (graph inputs, i32): start 100 on a step -1 axis clamps to 9; axis 0 by
   * -2 from -1 (= 3) to the front; output dims given explicitly */
  g = new_graph(f);
  x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){4, 10});
  kc_val vs = kc_input(g, "s", KC_I32, 1, (kc_dim[]){2});
  kc_val ve = kc_input(g, "e", KC_I32, 1, (kc_dim[]){2});
  kc_val va = kc_input(g, "a", KC_I32, 1, (kc_dim[]){2});
  kc_val vp = kc_input(g, "p", KC_I32, 1, (kc_dim[]){2});
  kc_slice(g, x, vs, ve, va, vp);
  int32_t s32[2] = {100, -1}, e32[2] = {5, -100}, a32[2] = {1, 0}, p32[2] = {-1, -2};
  int64_t od[2] = {2, 4}; /* rows 3, 1; cols 9, 8, 7, 6 */
  void *b2[6] = {xb, s32, e32, a32, p32, yb};
  run_last(f, g, NULL, od, b2);
  ref_slice2(xb, 10, (int64_t[]){3, 9}, (int64_t[]){-2, -1}, od, ref);
  assert_memory_equal(yb, ref, 8 * sizeof(float));
  kc_graph_free(g);

  /* no axes/steps, symbolic rows, a 1-D i64 slice past the end */
  g = new_graph(f);
  x = kc_input(g, "x", KC_I64, 2, (kc_dim[]){kc_sym(g, "R"), 5});
  int64_t st1[2] = {1, -3}, en1[2] = {INT64_MAX, INT64_MAX};
  kc_slice(g, x, ci64s(g, 2, st1), ci64s(g, 2, en1), (kc_val){0}, (kc_val){0});
  int64_t xi[20], yi[20];
  for (int i = 0; i < 20; i++)
    xi[i] = i * 11;
  th_sym syms[] = {{"R", 4}, {NULL, 0}};
  int64_t od2[2] = {3, 3};
  void *b3[4] = {xi, st1, en1, yi};
  run_last(f, g, syms, od2, b3);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      assert_int_equal(yi[i * 3 + j], xi[(1 + i) * 5 + 2 + j]);
  kc_graph_free(g);
}

/* ---- expand -----------------------------------------------------------------------------------
 */

static void test_expand(void **state) {
  th_cpu *f = *state;
  /* [3, 1] -> [2, 3, 4] */
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){3, 1});
  int64_t shp[3] = {2, 1, 4};
  kc_val y = kc_expand(g, x, ci64s(g, 3, shp));
  assert_int_equal(kc_val_rank(g, y), 3);
  float xb[3] = {1, 2, 3}, yb[24];
  void *bufs[3] = {xb, shp, yb};
  run_last(f, g, NULL, NULL, bufs);
  for (int b = 0; b < 2; b++)
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 4; j++)
        assert_true(yb[(b * 3 + i) * 4 + j] == xb[i]);
  kc_graph_free(g);

  /* [4] -> [3, 4] (rows are copies) and a scalar -> [2, 2] */
  g = new_graph(f);
  x = kc_input(g, "x", KC_I32, 1, (kc_dim[]){4});
  int64_t s2[2] = {3, 4};
  kc_expand(g, x, ci64s(g, 2, s2));
  int32_t xi[4] = {5, 6, 7, 8}, yi[12];
  void *b2[3] = {xi, s2, yi};
  run_last(f, g, NULL, NULL, b2);
  for (int i = 0; i < 12; i++)
    assert_int_equal(yi[i], xi[i % 4]);
  kc_graph_free(g);

  g = new_graph(f);
  x = kc_input(g, "x", KC_BOOL, 0, NULL);
  int64_t s3[2] = {2, 2};
  kc_expand(g, x, ci64s(g, 2, s3));
  uint8_t xt = 1, yt[4];
  void *b3[3] = {&xt, s3, yt};
  run_last(f, g, NULL, NULL, b3);
  for (int i = 0; i < 4; i++)
    assert_int_equal(yt[i], 1);
  kc_graph_free(g);

  /* symbolic input dims, shape known only at run time: [1, S] -> [B, S] and [B, 1] -> [B, S] */
  for (int c = 0; c < 2; c++) {
    g = new_graph(f);
    kc_dim d[2] = {1, kc_sym(g, "S")};
    if (c) d[0] = kc_sym(g, "S"), d[1] = 1;
    x = kc_input(g, "x", KC_F32, 2, d);
    kc_val shape = kc_input(g, "shape", KC_I64, 1, (kc_dim[]){2});
    kc_expand(g, x, shape);
    th_sym syms[] = {{"S", 5}, {NULL, 0}};
    int64_t od[2] = {3, 5}, sb[2] = {3, 5};
    float xf[5] = {1, 2, 3, 4, 5}, yf[15];
    if (c) od[0] = 5, od[1] = 3, sb[0] = 5, sb[1] = 3;
    void *b4[3] = {xf, sb, yf};
    run_last(f, g, syms, od, b4);
    for (int i = 0; i < 15; i++)
      assert_true(yf[i] == (c ? xf[i / 3] : xf[i % 5]));
    kc_graph_free(g);
  }
}

/* ---- trilu ------------------------------------------------------------------------------------
 */

static void check_trilu(th_cpu *f, int upper, bool has_k, int64_t k) {
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){2, 4, 5});
  kc_val kv = has_k ? kc_input(g, "k", KC_I64, 0, NULL) : (kc_val){0};
  kc_trilu(g, x, kv, upper);
  float xb[40], yb[40];
  for (int i = 0; i < 40; i++)
    xb[i] = (float)(i + 1);
  void *bufs[3] = {xb, &k, yb};
  if (!has_k) bufs[1] = yb;
  run_last(f, g, NULL, NULL, bufs);
  int64_t kk = has_k ? k : 0;
  for (int b = 0; b < 2; b++)
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 5; j++) {
        bool keep = upper ? j - i >= kk : j - i <= kk;
        int at = (b * 4 + i) * 5 + j;
        assert_true(yb[at] == (keep ? xb[at] : 0.0f));
      }
  kc_graph_free(g);
}

static void test_trilu(void **state) {
  th_cpu *f = *state;
  for (int upper = 0; upper < 2; upper++) {
    check_trilu(f, upper, false, 0);
    check_trilu(f, upper, true, 2);
    check_trilu(f, upper, true, -1);
    check_trilu(f, upper, true, 7);
    check_trilu(f, upper, true, -9);
    check_trilu(f, upper, true, INT64_MIN);
  }
  /* bool, symbolic rows */
  kc_graph *g = new_graph(f);
  kc_val x = kc_input(g, "x", KC_BOOL, 2, (kc_dim[]){kc_sym(g, "N"), 3});
  kc_trilu(g, x, (kc_val){0}, 0);
  uint8_t xb[12], yb[12];
  memset(xb, 1, sizeof xb);
  th_sym syms[] = {{"N", 4}, {NULL, 0}};
  void *bufs[2] = {xb, yb};
  run_last(f, g, syms, NULL, bufs);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 3; j++)
      assert_int_equal(yb[i * 3 + j], j <= i);
  kc_graph_free(g);
}

/* ---- shape, constant_of_shape, range -----------------------------------------------------------
 */

static void test_shape(void **state) {
  th_cpu *f = *state;
  th_sym syms[] = {{"B", 6}, {"S", 11}, {NULL, 0}};
  int64_t cases[][2] = {{0, 3}, {1, 3}, {-2, -1}, {-10, 10}, {2, 1}};
  for (int c = 0; c < 5; c++) {
    kc_graph *g = new_graph(f);
    kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){kc_sym(g, "B"), 3, kc_sym(g, "S")});
    kc_val y;
    uint32_t ni = kc_graph_add_node(g, KC_OP_SHAPE, 1, &x, 1, &y);
    if (c > 0) {
      kc_node_set_int(g, ni, "start", cases[c][0]);
      kc_node_set_int(g, ni, "end", cases[c][1]);
    }
    assert_int_equal(kc_node_infer(g, ni), KC_OK);
    int64_t full[3] = {6, 3, 11}, out[3] = {-1, -1, -1};
    int64_t lo = cases[c][0] < 0 ? cases[c][0] + 3 : cases[c][0];
    int64_t hi = cases[c][1] < 0 ? cases[c][1] + 3 : cases[c][1];
    lo = lo < 0 ? 0 : lo > 3 ? 3 : lo;
    hi = hi < 0 ? 0 : hi > 3 ? 3 : hi;
    float dummy;
    void *bufs[2] = {&dummy, out};
    run_last(f, g, syms, NULL, bufs);
    for (int64_t i = lo; i < hi; i++)
      assert_int_equal(out[i - lo], full[i]);
    kc_graph_free(g);
  }
}

static void test_constant_of_shape(void **state) {
  th_cpu *f = *state;
  /* i32 7 over [2, 3] */
  kc_graph *g = new_graph(f);
  int64_t shp[2] = {2, 3};
  int32_t seven = 7;
  kc_val v = kc_constant(g, KC_I32, 1, (int64_t[]){1}, &seven);
  kc_constant_of_shape(g, ci64s(g, 2, shp), v);
  int32_t yi[6];
  void *bufs[2] = {shp, yi};
  run_last(f, g, NULL, NULL, bufs);
  for (int i = 0; i < 6; i++)
    assert_int_equal(yi[i], 7);
  kc_graph_free(g);

  /* default f32 0, shape known only at run time, more than one chunk */
  g = new_graph(f);
  kc_val s = kc_input(g, "s", KC_I64, 1, (kc_dim[]){1});
  kc_constant_of_shape(g, s, (kc_val){0});
  int64_t n = 10000, od[1] = {10000};
  float *yf = malloc((size_t)n * sizeof *yf);
  void *b2[2] = {&n, yf};
  run_last(f, g, NULL, od, b2);
  for (int64_t i = 0; i < n; i++)
    assert_true(yf[i] == 0.0f);
  free(yf);
  kc_graph_free(g);

  /* f16 1.5 (0x3E00) as a scalar output */
  g = new_graph(f);
  uint16_t h = 0x3E00;
  v = kc_constant(g, KC_F16, 1, (int64_t[]){1}, &h);
  kc_constant_of_shape(g, ci64s(g, 0, NULL), v);
  uint16_t yh = 0;
  int64_t none = 0;
  void *b3[2] = {&none, &yh};
  run_last(f, g, NULL, NULL, b3);
  assert_int_equal(yh, 0x3E00);
  kc_graph_free(g);
}

static void test_range(void **state) {
  th_cpu *f = *state;
  /* floats from constants: 1, 1.5, ..., 5 (9 values below 5.5) */
  kc_graph *g = new_graph(f);
  float s = 1.0f, l = 5.5f, d = 0.5f;
  kc_val y = kc_range(g, kc_const_f32(g, s), kc_const_f32(g, l), kc_const_f32(g, d));
  kc_dim len;
  kc_val_dims(g, y, &len);
  assert_int_equal(len, 9);
  float yf[9];
  void *bufs[4] = {&s, &l, &d, yf};
  run_last(f, g, NULL, NULL, bufs);
  for (int i = 0; i < 9; i++)
    assert_true(yf[i] == 1.0f + (float)i * 0.5f);
  kc_graph_free(g);

  /* i64 10 down to 0 by -3: 10, 7, 4, 1 */
  g = new_graph(f);
  int64_t a = 10, b = 0, c = -3;
  kc_range(g, kc_const_i64(g, a), kc_const_i64(g, b), kc_const_i64(g, c));
  int64_t yi[4];
  void *b2[4] = {&a, &b, &c, yi};
  run_last(f, g, NULL, NULL, b2);
  for (int i = 0; i < 4; i++)
    assert_int_equal(yi[i], 10 - 3 * i);
  kc_graph_free(g);

  /* i32 from run-time scalars, long enough for several chunks */
  g = new_graph(f);
  kc_val vs = kc_input(g, "s", KC_I32, 0, NULL), vl = kc_input(g, "l", KC_I32, 0, NULL);
  kc_val vd = kc_input(g, "d", KC_I32, 0, NULL);
  kc_range(g, vs, vl, vd);
  int32_t s32 = -5, l32 = 20000, d32 = 2;
  int64_t od[1] = {(20000 + 5 + 1) / 2};
  int32_t *y32 = malloc((size_t)od[0] * sizeof *y32);
  void *b3[4] = {&s32, &l32, &d32, y32};
  run_last(f, g, NULL, od, b3);
  for (int64_t i = 0; i < od[0]; i++)
    assert_int_equal(y32[i], -5 + 2 * i);
  free(y32);
  kc_graph_free(g);

  /* f64 */
  g = new_graph(f);
  kc_val d0 = kc_input(g, "s", KC_F64, 0, NULL), d1 = kc_input(g, "l", KC_F64, 0, NULL);
  kc_val d2 = kc_input(g, "d", KC_F64, 0, NULL);
  kc_range(g, d0, d1, d2);
  double ds = 0.25, dl = -1.0, dd = -0.5, yd[3];
  int64_t od3[1] = {3};
  void *b4[4] = {&ds, &dl, &dd, yd};
  run_last(f, g, NULL, od3, b4);
  for (int i = 0; i < 3; i++)
    assert_true(yd[i] == 0.25 - 0.5 * i);
  kc_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transpose),
      cmocka_unit_test(test_gather),
      cmocka_unit_test(test_gather_bad_index),
      cmocka_unit_test(test_gather_run),
      cmocka_unit_test(test_concat),
      cmocka_unit_test(test_split),
      cmocka_unit_test(test_slice),
      cmocka_unit_test(test_expand),
      cmocka_unit_test(test_trilu),
      cmocka_unit_test(test_shape),
      cmocka_unit_test(test_constant_of_shape),
      cmocka_unit_test(test_range),
  };
  return cmocka_run_group_tests(tests, th_cpu_setup, th_cpu_teardown);
}
