/*
 * tests/test_cpu_elementwise.c - the elementwise kernels (kc_lower_elementwise with every
 * kc_scalar_*), vmath's accuracy, dropout and the no-kernel families, against references
 * computed here in double with libm (never by kernc).
 *
 * Each test builds a small graph with the builder API and lowers only its last node through
 * kc_cpu_ops, so it depends on no other family and no pass. Every kernel runs twice: once over
 * all its units in one call and once in small ranges, last range first, into outputs that start
 * poisoned; both runs must write the same bytes, so any split into ranges is valid and every
 * element is written. Covered: numpy broadcasting (with static and symbolic dims, and a
 * symbolic dim that is 1 at run time), every dtype class, integer division and comparisons
 * on unsigned values, a matrix of casts, variadic min/max, where with 3-way broadcasting,
 * clip with absent bounds, mod's two conventions, bit shifts past the width, is_inf/is_nan,
 * sign, special values (inf, nan, subnormals), and an accuracy sweep of
 * exp/log/tanh/sigmoid/erf/gelu whose maximum errors are printed.
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

/* Run the last node of g over bufs in ranges of a fifth of its units (tests/harness.h). */
static void run_last(th_cpu *f, kc_graph *g, const th_sym *syms, void **bufs) {
  th_run_last(f, g, syms, NULL, 0, bufs);
}

static uint32_t rng_next(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/* Uniform floats in [lo, hi). */
static void fill_uniform(float *p, int64_t n, float lo, float hi, uint32_t seed) {
  for (int64_t i = 0; i < n; i++)
    p[i] = lo + (hi - lo) * (float)rng_next(&seed) / 16777216.0f;
}

/* ---- broadcasting binary ops (f32) ----------------------------------------------------------- */

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV } binop;

static double ref_bin(binop op, double a, double b) {
  switch (op) {
  case B_ADD: return a + b;
  case B_SUB: return a - b;
  case B_MUL: return a * b;
  default: return a / b;
  }
}

/* out = a op b for a [ra dims da] and b [rb dims db] (static), f32, against a reference walk. */
static void check_bcast(th_cpu *f, binop op, int ra, const int64_t *da, int rb, const int64_t *db) {
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_dim ka[KC_MAX_RANK], kb[KC_MAX_RANK];
  for (int i = 0; i < ra; i++)
    ka[i] = da[i];
  for (int i = 0; i < rb; i++)
    kb[i] = db[i];
  kc_val a = kc_input(g, "a", KC_F32, ra, ka), b = kc_input(g, "b", KC_F32, rb, kb);
  kc_val (*fn[4])(kc_graph *, kc_val, kc_val) = {kc_add, kc_sub, kc_mul, kc_div};
  kc_val y = fn[op](g, a, b);
  assert_true(y.id != 0);
  int r = kc_val_rank(g, y);
  int64_t od[KC_MAX_RANK];
  for (int i = 0; i < r; i++) {
    int64_t x = i - (r - ra) >= 0 ? da[i - (r - ra)] : 1,
            z = i - (r - rb) >= 0 ? db[i - (r - rb)] : 1;
    od[i] = x > z ? x : z;
  }
  int64_t na = th_numel(ra, da), nb = th_numel(rb, db), no = th_numel(r, od);
  float *pa = malloc((size_t)na * 4 + 4), *pb = malloc((size_t)nb * 4 + 4);
  float *po = malloc((size_t)no * 4 + 4);
  fill_uniform(pa, na, -2, 2, 1);
  fill_uniform(pb, nb, 0.5f, 3, 2);
  void *bufs[3] = {pa, pb, po};
  run_last(f, g, NULL, bufs);
  for (int64_t o = 0; o < no; o++) {
    int64_t rem = o, ia = 0, ib = 0, sa = 1, sb = 1;
    for (int i = r - 1; i >= 0; i--) {
      int64_t c = rem % od[i];
      rem /= od[i];
      int ja = i - (r - ra), jb = i - (r - rb);
      if (ja >= 0) {
        if (da[ja] != 1) ia += c * sa;
        sa *= da[ja];
      }
      if (jb >= 0) {
        if (db[jb] != 1) ib += c * sb;
        sb *= db[jb];
      }
    }
    float want = (float)ref_bin(op, pa[ia], pb[ib]);
    if (po[o] != want) fail_msg("op %d element %lld: %g, want %g", op, (long long)o, po[o], want);
  }
  free(pa);
  free(pb);
  free(po);
  kc_graph_free(g);
}

static void test_broadcast(void **state) {
  th_cpu *f = *state;
  for (binop op = B_ADD; op <= B_DIV; op++) {
    check_bcast(f, op, 3, (int64_t[]){2, 3, 4}, 2, (int64_t[]){3, 1});
    check_bcast(f, op, 1, (int64_t[]){1}, 1, (int64_t[]){5});
    check_bcast(f, op, 0, NULL, 2, (int64_t[]){4, 5});
    check_bcast(f, op, 3, (int64_t[]){3, 4, 5}, 1, (int64_t[]){5});
    check_bcast(f, op, 4, (int64_t[]){1, 4, 1, 6}, 4, (int64_t[]){3, 1, 5, 6});
  }
  check_bcast(f, B_ADD, 3, (int64_t[]){3, 4, 5}, 3, (int64_t[]){3, 4, 5});
  check_bcast(f, B_ADD, 2, (int64_t[]){37, 1000}, 1, (int64_t[]){1000}); /* rows + tail */
  check_bcast(f, B_MUL, 1, (int64_t[]){100003}, 1, (int64_t[]){100003}); /* flat, many units */
  check_bcast(f, B_SUB, 2, (int64_t[]){300, 1}, 2, (int64_t[]){1, 301}); /* outer product */
  check_bcast(f, B_DIV, 0, NULL, 0, NULL);
}

/* [B, S, 7] + [S, 1] with symbolic B and S; then [N] + [M] where M is 1 or N at run time. */
static void test_symbolic(void **state) {
  th_cpu *f = *state;
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_dim B = kc_sym(g, "B"), S = kc_sym(g, "S");
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){B, S, 7});
  kc_val b = kc_input(g, "b", KC_F32, 2, (kc_dim[]){S, 1});
  kc_add(g, x, b);
  th_sym syms[] = {{"B", 3}, {"S", 5}, {NULL, 0}};
  float px[105], pb[5], po[105];
  fill_uniform(px, 105, -1, 1, 3);
  fill_uniform(pb, 5, -1, 1, 4);
  run_last(f, g, syms, (void *[]){px, pb, po});
  for (int i = 0; i < 105; i++)
    assert_true(po[i] == px[i] + pb[(i / 7) % 5]);
  kc_graph_free(g);

  for (int m1 = 0; m1 < 2; m1++) {
    g = kc_graph_new(f->ctx, "t");
    kc_dim N = kc_sym(g, "N"), M = kc_sym(g, "M");
    x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){3, N});
    b = kc_input(g, "b", KC_F32, 1, (kc_dim[]){M});
    kc_mul(g, x, b);
    th_sym s2[] = {{"N", 21}, {"M", m1 ? 1 : 21}, {NULL, 0}};
    float qx[63], qb[21], qo[63];
    fill_uniform(qx, 63, -1, 1, 5);
    fill_uniform(qb, 21, -1, 1, 6);
    run_last(f, g, s2, (void *[]){qx, qb, qo});
    for (int i = 0; i < 63; i++)
      assert_true(qo[i] == qx[i] * qb[m1 ? 0 : i % 21]);
    kc_graph_free(g);
  }
}

/* ---- integers ------------------------------------------------------------------------------- */

/* A binary op on dtype t over the values a[i], b[i] (given as int64, stored as t); the output
 * (dtype ot) goes to out as int64. */
static void run_int_binary(th_cpu *f, kc_val (*op)(kc_graph *, kc_val, kc_val), kc_dtype t, int n,
                           const int64_t *a, const int64_t *b, int64_t *out) {
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_val x = kc_input(g, "a", t, 1, (kc_dim[]){n}), y = kc_input(g, "b", t, 1, (kc_dim[]){n});
  kc_val z = op(g, x, y);
  kc_dtype ot = kc_val_dtype(g, z);
  size_t es = kc_dtype_size(t), os = kc_dtype_size(ot);
  unsigned char *pa = malloc((size_t)n * es), *pb = malloc((size_t)n * es),
                *po = malloc((size_t)n * os);
  for (int i = 0; i < n; i++) { /* little-endian: the low bytes of the int64 */
    memcpy(pa + i * es, &a[i], es);
    memcpy(pb + i * es, &b[i], es);
  }
  run_last(f, g, NULL, (void *[]){pa, pb, po});
  bool sgn = t == KC_I8 || t == KC_I16 || t == KC_I32 || t == KC_I64;
  for (int i = 0; i < n; i++) {
    uint64_t u = 0;
    memcpy(&u, po + i * os, os);
    if (ot == t && sgn && os < 8 && (u >> (os * 8 - 1)) & 1) u |= ~0ull << (os * 8);
    out[i] = (int64_t)u;
  }
  free(pa);
  free(pb);
  free(po);
  kc_graph_free(g);
}

static void test_integers(void **state) {
  th_cpu *f = *state;
  int64_t out[8];
  /* division truncates toward zero; x / 0 is 0, INT_MIN / -1 wraps */
  int64_t a[8] = {7, -7, 7, -7, 5, 0, INT32_MIN, 100};
  int64_t b[8] = {2, 2, -2, -2, 0, 3, -1, 7};
  run_int_binary(f, kc_div, KC_I32, 8, a, b, out);
  int64_t want_div[8] = {3, -3, -3, 3, 0, 0, INT32_MIN, 14};
  assert_memory_equal(out, want_div, sizeof want_div);
  /* unsigned: values above the signed range */
  int64_t ua[4] = {250, 200, 255, 3}, ub[4] = {7, 201, 1, 0};
  run_int_binary(f, kc_div, KC_U8, 4, ua, ub, out);
  assert_true(out[0] == 35 && out[1] == 0 && out[2] == 255 && out[3] == 0);
  run_int_binary(f, kc_less, KC_U8, 4, ua, ub, out);
  assert_true(out[0] == 0 && out[1] == 1 && out[2] == 0 && out[3] == 0);
  run_int_binary(f, kc_greater, KC_U32, 4, (int64_t[]){0xF0000000ll, 1, 5, 5},
                 (int64_t[]){1, 0xF0000000ll, 5, 4}, out);
  assert_true(out[0] == 1 && out[1] == 0 && out[2] == 0 && out[3] == 1);
  run_int_binary(f, kc_max, KC_U16, 4, (int64_t[]){65000, 1, 7, 0}, (int64_t[]){2, 65001, 7, 1},
                 out);
  assert_true(out[0] == 65000 && out[1] == 65001 && out[2] == 7 && out[3] == 1);
  run_int_binary(f, kc_min, KC_U64, 2, (int64_t[]){-1, 5}, (int64_t[]){3, -2}, out);
  assert_true(out[0] == 3 && out[1] == 5);
  run_int_binary(f, kc_min, KC_I8, 4, (int64_t[]){-128, 127, -1, 0}, (int64_t[]){0, -128, 1, 0},
                 out);
  assert_true(out[0] == -128 && out[1] == -128 && out[2] == -1 && out[3] == 0);
  /* wrapping add/mul, subtraction */
  run_int_binary(f, kc_add, KC_I8, 2, (int64_t[]){127, -100}, (int64_t[]){1, -100}, out);
  assert_true(out[0] == -128 && out[1] == 56);
  run_int_binary(f, kc_sub, KC_U16, 2, (int64_t[]){0, 9}, (int64_t[]){1, 4}, out);
  assert_true(out[0] == 65535 && out[1] == 5);
  run_int_binary(f, kc_mul, KC_I64, 2, (int64_t[]){INT64_C(3000000000), -4},
                 (int64_t[]){INT64_C(3000000000), 5}, out);
  assert_true(out[0] == INT64_C(9000000000000000000) && out[1] == -20);
  run_int_binary(f, kc_equal, KC_I16, 3, (int64_t[]){-5, 4, 0}, (int64_t[]){-5, -4, 0}, out);
  assert_true(out[0] == 1 && out[1] == 0 && out[2] == 1);
  /* integer pow: exact, negative exponents truncate, +-1 bases any exponent */
  run_int_binary(f, kc_pow, KC_I64, 8, (int64_t[]){3, 2, -3, 2, 1, -1, -1, 0},
                 (int64_t[]){6, 62, 3, -1, -5, 1001, 100, 0}, out);
  int64_t want_pow[8] = {729, INT64_C(1) << 62, -27, 0, 1, -1, 1, 1};
  assert_memory_equal(out, want_pow, sizeof want_pow);
  run_int_binary(f, kc_pow, KC_I32, 3, (int64_t[]){1, 2, 3}, (int64_t[]){4, 5, 6}, out);
  assert_true(out[0] == 1 && out[1] == 32 && out[2] == 729);
}

/* The op of a wrapper below applied to a and b with one attribute (name NULL: none), inferred. */
static kc_val node2(kc_graph *g, kc_op op, kc_val a, kc_val b, const char *name, int64_t i,
                    const char *str) {
  kc_val out;
  uint32_t ni = kc_graph_add_node(g, op, 2, (kc_val[]){a, b}, 1, &out);
  if (name && str) kc_node_set_string(g, ni, name, str);
  if (name && !str) kc_node_set_int(g, ni, name, i);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  return out;
}
static kc_val mod_py(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_MOD, a, b, NULL, 0, NULL);
}
static kc_val mod_c(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_MOD, a, b, "fmod", 1, NULL);
}
static kc_val shl(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_BIT_SHIFT, a, b, "direction", 0, "LEFT");
}
static kc_val shr(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_BIT_SHIFT, a, b, "direction", 0, "RIGHT");
}
static kc_val ge(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_GREATER_EQUAL, a, b, NULL, 0, NULL);
}
static kc_val le(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_LESS_EQUAL, a, b, NULL, 0, NULL);
}
static kc_val bxor(kc_graph *g, kc_val a, kc_val b) {
  return node2(g, KC_OP_BITWISE_XOR, a, b, NULL, 0, NULL);
}

/*
 * Mod's two conventions against int64 arithmetic here (Python's remainder is ((a % b) + b) % b,
 * C's is a % b), with x mod 0 = 0 and INT_MIN mod -1 = 0 (no trap); bit shifts by the width or
 * more give 0; the unsigned comparisons; bitwise xor on i64.
 */
static void test_mod_bits(void **state) {
  th_cpu *f = *state;
  int64_t out[10];
  int64_t a[10] = {7, -7, 7, -7, 5, INT32_MIN, INT32_MIN, 0, INT32_MAX, -1};
  int64_t b[10] = {3, 3, -3, -3, 0, -1, 3, 5, -7, INT32_MIN};
  for (int c = 0; c < 2; c++) {
    run_int_binary(f, c ? mod_c : mod_py, KC_I32, 10, a, b, out);
    for (int i = 0; i < 10; i++) {
      int64_t want = b[i] == 0 ? 0 : c ? a[i] % b[i] : ((a[i] % b[i]) + b[i]) % b[i];
      assert_int_equal(out[i], want);
    }
  }
  run_int_binary(f, mod_py, KC_I8, 3, (int64_t[]){-128, -128, 100}, (int64_t[]){-1, 3, -128}, out);
  assert_true(out[0] == 0 && out[1] == 1 && out[2] == -28);
  run_int_binary(f, mod_py, KC_U8, 3, (int64_t[]){250, 200, 7}, (int64_t[]){7, 0, 255}, out);
  assert_true(out[0] == 5 && out[1] == 0 && out[2] == 7);
  run_int_binary(f, mod_c, KC_I64, 2, (int64_t[]){INT64_MIN, -9}, (int64_t[]){-1, 4}, out);
  assert_true(out[0] == 0 && out[1] == -1);

  run_int_binary(f, shl, KC_U8, 5, (int64_t[]){1, 255, 3, 1, 5}, (int64_t[]){3, 1, 8, 9, 0}, out);
  assert_true(out[0] == 8 && out[1] == 254 && out[2] == 0 && out[3] == 0 && out[4] == 5);
  run_int_binary(f, shr, KC_U32, 4, (int64_t[]){0x80000000ll, 255, 7, 0xFFFFFFFFll},
                 (int64_t[]){31, 4, 32, 0xFFFFFFFFll}, out);
  assert_true(out[0] == 1 && out[1] == 15 && out[2] == 0 && out[3] == 0);
  run_int_binary(f, shl, KC_U64, 2, (int64_t[]){3, 1}, (int64_t[]){62, 64}, out);
  assert_true((uint64_t)out[0] == 0xC000000000000000ull && out[1] == 0);

  int64_t ua[4] = {250, 200, 255, 3}, ub[4] = {7, 201, 255, 0};
  run_int_binary(f, ge, KC_U8, 4, ua, ub, out);
  assert_true(out[0] == 1 && out[1] == 0 && out[2] == 1 && out[3] == 1);
  run_int_binary(f, le, KC_U8, 4, ua, ub, out);
  assert_true(out[0] == 0 && out[1] == 1 && out[2] == 1 && out[3] == 0);
  run_int_binary(f, bxor, KC_I64, 2, (int64_t[]){-1, 0x0F0F}, (int64_t[]){5, 0xFF}, out);
  assert_true(out[0] == ~INT64_C(5) && out[1] == 0x0FF0);
}

/* is_inf with each pair of detect flags, is_nan, and sign on floats (nan stays nan) and ints. */
static void test_classify_sign(void **state) {
  th_cpu *f = *state;
  float x[5] = {INFINITY, -INFINITY, NAN, 0.0f, -3.5f};
  for (int m = 0; m < 5; m++) {
    kc_graph *g = kc_graph_new(f->ctx, "t");
    kc_val xv = kc_input(g, "x", KC_F32, 1, (kc_dim[]){5});
    uint32_t ni = kc_graph_add_node(g, m == 4 ? KC_OP_IS_NAN : KC_OP_IS_INF, 1, &xv, 1, NULL);
    if (m < 4) {
      kc_node_set_int(g, ni, "detect_positive", m & 1);
      kc_node_set_int(g, ni, "detect_negative", (m >> 1) & 1);
    }
    assert_int_equal(kc_node_infer(g, ni), KC_OK);
    uint8_t o[5];
    run_last(f, g, NULL, (void *[]){x, o});
    for (int i = 0; i < 5; i++) {
      bool want =
          m == 4 ? isnan(x[i]) : (isinf(x[i]) && ((x[i] > 0 && (m & 1)) || (x[i] < 0 && (m & 2))));
      assert_int_equal(o[i], want);
    }
    kc_graph_free(g);
  }
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_val xv = kc_input(g, "x", KC_F32, 1, (kc_dim[]){5});
  uint32_t ni = kc_graph_add_node(g, KC_OP_SIGN, 1, &xv, 1, NULL);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  float y[5];
  run_last(f, g, NULL, (void *[]){x, y});
  assert_true(y[0] == 1 && y[1] == -1 && isnan(y[2]) && y[3] == 0 && y[4] == -1);
  kc_graph_free(g);
  g = kc_graph_new(f->ctx, "t");
  xv = kc_input(g, "x", KC_I16, 1, (kc_dim[]){4});
  ni = kc_graph_add_node(g, KC_OP_SIGN, 1, &xv, 1, NULL);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  int16_t ix[4] = {-32768, 0, 9, -1}, iy[4];
  run_last(f, g, NULL, (void *[]){ix, iy});
  assert_true(iy[0] == -1 && iy[1] == 0 && iy[2] == 1 && iy[3] == -1);
  kc_graph_free(g);
}

/* neg/abs/relu on i32 and i8; relu and abs on u8 are identities. */
static void test_int_unary(void **state) {
  th_cpu *f = *state;
  kc_val (*ops[3])(kc_graph *, kc_val) = {kc_neg, kc_abs, kc_relu};
  int32_t x[5] = {-5, 0, 7, INT32_MIN, INT32_MAX}, y[5];
  int32_t want[3][5] = {
      {5, 0, -7, INT32_MIN, -INT32_MAX}, {5, 0, 7, INT32_MIN, INT32_MAX}, {0, 0, 7, 0, INT32_MAX}};
  for (int k = 0; k < 3; k++) {
    kc_graph *g = kc_graph_new(f->ctx, "t");
    ops[k](g, kc_input(g, "x", KC_I32, 1, (kc_dim[]){5}));
    run_last(f, g, NULL, (void *[]){x, y});
    assert_memory_equal(y, want[k], sizeof y);
    kc_graph_free(g);
  }
  int8_t bx[3] = {-128, -3, 4}, by[3];
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_abs(g, kc_input(g, "x", KC_I8, 1, (kc_dim[]){3}));
  run_last(f, g, NULL, (void *[]){bx, by});
  assert_true(by[0] == -128 && by[1] == 3 && by[2] == 4);
  kc_graph_free(g);
}

/* ---- float unary ops, f32 and f64 ------------------------------------------------------------ */

typedef kc_val (*unary_fn)(kc_graph *, kc_val);

static kc_val gelu_none(kc_graph *g, kc_val x) { return kc_gelu(g, x, 0); }
static kc_val gelu_tanh(kc_graph *g, kc_val x) { return kc_gelu(g, x, 1); }

static double ref_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double ref_relu(double x) { return x > 0 ? x : 0; }
static double ref_neg(double x) { return -x; }
static double ref_recip(double x) { return 1 / x; }
static double ref_gelu_none(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }
/* 1 + tanh(u) = 2 / (1 + e^(-2u)): the same value without double's own cancellation */
static double ref_gelu_tanh(double x) {
  double u = sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x);
  return x / (1 + exp(-2 * u));
}

typedef struct unary_case {
  const char *name;
  unary_fn op;
  double (*ref)(double);
  double lo, hi;
  double tol; /* relative, f32 */
} unary_case;

static const unary_case unary_cases[] = {
    {"sqrt", kc_sqrt, sqrt, 0, 100, 1e-7},
    {"reciprocal", kc_reciprocal, ref_recip, 0.01, 10, 1e-7},
    {"neg", kc_neg, ref_neg, -10, 10, 0},
    {"abs", kc_abs, fabs, -10, 10, 0},
    {"relu", kc_relu, ref_relu, -10, 10, 0},
    {"exp", kc_exp, exp, -80, 80, 3e-7},
    {"log", kc_log, log, 1e-30, 1e30, 3e-7},
    {"tanh", kc_tanh, tanh, -12, 12, 3e-7},
    {"sigmoid", kc_sigmoid, ref_sigmoid, -40, 40, 4e-7},
    {"erf", kc_erf, erf, -5, 5, 3e-7},
    {"sin", kc_sin, sin, -10, 10, 2e-7},
    {"cos", kc_cos, cos, -10, 10, 2e-7},
    {"gelu", gelu_none, ref_gelu_none, -12, 8, 1e-6},
    /* e^(-2u) inherits u's f32 rounding times |2u| (87 at x = -10): inherent to the formula */
    {"gelu_tanh", gelu_tanh, ref_gelu_tanh, -12, 8, 2e-5},
};

/* |got - want| relative to |want|, with an absolute floor for results near 0 (sin, cos). */
static double rel_err(double got, double want) {
  double d = fabs(got - want), m = fabs(want);
  return m > 1e-30 ? d / m : d;
}

static void test_float_unary(void **state) {
  th_cpu *f = *state;
  enum { N = 2000 };
  for (size_t c = 0; c < sizeof unary_cases / sizeof *unary_cases; c++) {
    const unary_case *uc = &unary_cases[c];
    for (int t64 = 0; t64 < 2; t64++) {
      kc_graph *g = kc_graph_new(f->ctx, "t");
      uc->op(g, kc_input(g, "x", t64 ? KC_F64 : KC_F32, 1, (kc_dim[]){N}));
      double *xd = malloc(N * sizeof *xd), *yd = malloc(N * sizeof *yd);
      float *xf = malloc(N * sizeof *xf), *yf = malloc(N * sizeof *yf);
      bool logspace = strcmp(uc->name, "log") == 0;
      for (int i = 0; i < N; i++) {
        double u = (double)i / (N - 1);
        double v = logspace ? exp(log(uc->lo) + u * (log(uc->hi) - log(uc->lo)))
                            : uc->lo + u * (uc->hi - uc->lo);
        xf[i] = (float)v;
        xd[i] = t64 ? v : xf[i];
      }
      run_last(f, g, NULL, t64 ? (void *[]){xd, yd} : (void *[]){xf, yf});
      double worst = 0;
      for (int i = 0; i < N; i++) {
        double want = uc->ref(xd[i]), got = t64 ? yd[i] : yf[i];
        double e = rel_err(got, want);
        /* results below f32's normal range carry absolute, not relative, precision */
        if (!t64 && fabs(want) < 1e-37) e = fabs(got - want) < 1e-44 ? 0 : e;
        if (e > worst) worst = e;
      }
      /* f64 is libm; its own rounding of x/sqrt2 costs gelu 2 z^2 ulp in the tail */
      double tol = t64 ? 1e-13 : uc->tol;
      if (worst > tol)
        fail_msg("%s %s: max relative error %.3g > %.3g", uc->name, t64 ? "f64" : "f32", worst,
                 tol);
      free(xd);
      free(yd);
      free(xf);
      free(yf);
      kc_graph_free(g);
    }
  }
}

/* ---- vmath accuracy sweep (f32) and special values ------------------------------------------ */

/* ulp of a float-rounded reference value */
static double ulp_of(double want) {
  float w = fabsf((float)want);
  if (!isfinite(w)) return INFINITY;
  return (double)nextafterf(w, INFINITY) - (double)w;
}

typedef struct sweep {
  const char *name;
  unary_fn op;
  double (*ref)(double);
  double lo, hi;
  bool logspace;
  double max_ulp;
} sweep;

static void test_vmath_accuracy(void **state) {
  th_cpu *f = *state;
  static const sweep sw[] = {
      {"exp", kc_exp, exp, -103, 88.7, false, 2},
      {"log", kc_log, log, 1e-44, 3e38, true, 2},
      {"log near 1", kc_log, log, 0.5, 2, false, 2},
      {"tanh", kc_tanh, tanh, -10, 10, false, 3},
      {"sigmoid", kc_sigmoid, ref_sigmoid, -100, 40, false, 3},
      {"erf", kc_erf, erf, -4.5, 4.5, false, 3},
      {"gelu", gelu_none, ref_gelu_none, -13, 10, false, 6},
      {"gelu_tanh", gelu_tanh, ref_gelu_tanh, -5, 10, false, 40},
  };
  enum { N = 1 << 20 };
  float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  for (size_t c = 0; c < sizeof sw / sizeof *sw; c++) {
    const sweep *s = &sw[c];
    kc_graph *g = kc_graph_new(f->ctx, "t");
    s->op(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){N}));
    for (int i = 0; i < N; i++) {
      double u = (double)i / (N - 1);
      x[i] = (float)(s->logspace ? exp(log(s->lo) + u * (log(s->hi) - log(s->lo)))
                                 : s->lo + u * (s->hi - s->lo));
    }
    run_last(f, g, NULL, (void *[]){x, y});
    double worst_ulp = 0, worst_rel = 0, at = 0;
    for (int i = 0; i < N; i++) {
      double want = s->ref(x[i]);
      double eu = fabs((double)y[i] - want) / ulp_of(want);
      if (eu > worst_ulp) {
        worst_ulp = eu;
        at = x[i];
      }
      if (fabs(want) >= 1.1754943508222875e-38 && rel_err(y[i], want) > worst_rel)
        worst_rel = rel_err(y[i], want);
    }
    printf("  vmath f32 %-10s over [%g, %g]: max %.2f ulp (at %.9g), max rel %.3g\n", s->name,
           s->lo, s->hi, worst_ulp, at, worst_rel);
    if (worst_ulp > s->max_ulp)
      fail_msg("%s: %.2f ulp > %.2f at x = %.9g", s->name, worst_ulp, s->max_ulp, at);
    kc_graph_free(g);
  }
  free(x);
  free(y);
}

/* Run op on the f32 values x[0..n) into y. */
static void run_f32(th_cpu *f, unary_fn op, int n, const float *x, float *y) {
  kc_graph *g = kc_graph_new(f->ctx, "t");
  op(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){n}));
  run_last(f, g, NULL, (void *[]){(void *)x, y});
  kc_graph_free(g);
}

static void test_special_values(void **state) {
  th_cpu *f = *state;
  const float inf = INFINITY, nan = NAN;
  float y[8];
  run_f32(f, kc_exp, 6, (float[]){-inf, inf, nan, 0, 89, -104}, y);
  assert_true(y[0] == 0 && y[1] == inf && isnan(y[2]) && y[3] == 1 && y[4] == inf && y[5] == 0);
  run_f32(f, kc_exp, 3, (float[]){-87.5f, -100, 88.7f}, y);
  assert_true(fabs(y[0] - expf(-87.5f)) <= 2 * 1.4e-45 && y[1] == expf(-100) &&
              fabs(y[2] / exp(88.7f) - 1) < 3e-7);
  run_f32(f, kc_log, 8, (float[]){0, -0.0f, -1, inf, nan, 1, 1e-45f, -inf}, y);
  assert_true(y[0] == -inf && y[1] == -inf && isnan(y[2]) && y[3] == inf && isnan(y[4]) &&
              y[5] == 0 && fabs(y[6] - log(1e-45f)) < 1e-5 && isnan(y[7]));
  run_f32(f, kc_tanh, 5, (float[]){inf, -inf, nan, 0, -0.0f}, y);
  assert_true(y[0] == 1 && y[1] == -1 && isnan(y[2]) && y[3] == 0 && signbit(y[4]));
  run_f32(f, kc_sigmoid, 4, (float[]){inf, -inf, nan, 0}, y);
  assert_true(y[0] == 1 && y[1] == 0 && isnan(y[2]) && y[3] == 0.5f);
  run_f32(f, kc_erf, 5, (float[]){inf, -inf, nan, 0, 30}, y);
  assert_true(y[0] == 1 && y[1] == -1 && isnan(y[2]) && y[3] == 0 && y[4] == 1);
  run_f32(f, gelu_none, 4, (float[]){-inf, inf, nan, -30}, y);
  assert_true(isnan(y[0]) || y[0] == 0); /* -inf * 0: either is defensible */
  assert_true(y[1] == inf && isnan(y[2]) && y[3] == 0);
  run_f32(f, kc_relu, 3, (float[]){nan, -inf, inf}, y);
  assert_true(isnan(y[0]) && y[1] == 0 && y[2] == inf);
  run_f32(f, kc_sqrt, 3, (float[]){-1, inf, 0}, y);
  assert_true(isnan(y[0]) && y[1] == inf && y[2] == 0);
}

/* ---- f16 / bf16 ----------------------------------------------------------------------------- */

static void test_half(void **state) {
  th_cpu *f = *state;
  for (int bf = 0; bf < 2; bf++) {
    kc_dtype t = bf ? KC_BF16 : KC_F16;
    uint16_t (*to)(float) = bf ? kc_f32_to_bf16 : kc_f32_to_f16;
    float (*from)(uint16_t) = bf ? kc_bf16_to_f32 : kc_f16_to_f32;
    enum { N = 50 };
    uint16_t a[N], b[N], o[N];
    for (int i = 0; i < N; i++) {
      a[i] = to(-3.0f + 0.13f * (float)i);
      b[i] = to(0.7f + 0.05f * (float)i);
    }
    kc_graph *g = kc_graph_new(f->ctx, "t");
    kc_val x = kc_input(g, "a", t, 1, (kc_dim[]){N}), y = kc_input(g, "b", t, 1, (kc_dim[]){N});
    kc_max(g, kc_mul(g, x, y), x);
    /* lower only max (last); feed it a*b computed here */
    uint16_t ab[N];
    for (int i = 0; i < N; i++)
      ab[i] = to(from(a[i]) * from(b[i]));
    run_last(f, g, NULL, (void *[]){ab, a, o});
    for (int i = 0; i < N; i++)
      assert_true(from(o[i]) == fmaxf(from(ab[i]), from(a[i])));
    kc_graph_free(g);

    g = kc_graph_new(f->ctx, "t");
    kc_exp(g, kc_input(g, "x", t, 1, (kc_dim[]){N}));
    run_last(f, g, NULL, (void *[]){a, o});
    for (int i = 0; i < N; i++) {
      float want = from(to(expf(from(a[i]))));
      assert_true(fabsf(from(o[i]) - want) <= fabsf(want) * (bf ? 8e-3f : 1e-3f));
    }
    kc_graph_free(g);
  }
}

/* ---- cast --------------------------------------------------------------------------------- */

static const kc_dtype all_types[] = {KC_F32, KC_F16, KC_BF16, KC_F64, KC_I64, KC_I32, KC_I16,
                                     KC_I8,  KC_U64, KC_U32,  KC_U16, KC_U8,  KC_BOOL};

/* The value held at p as a double (exact for every sample used below). */
static double get_as_double(kc_dtype t, const void *p) {
  switch (t) {
  case KC_F32: return *(const float *)p;
  case KC_F64: return *(const double *)p;
  case KC_F16: return kc_f16_to_f32(*(const uint16_t *)p);
  case KC_BF16: return kc_bf16_to_f32(*(const uint16_t *)p);
  case KC_I64: return (double)*(const int64_t *)p;
  case KC_I32: return *(const int32_t *)p;
  case KC_I16: return *(const int16_t *)p;
  case KC_I8: return *(const int8_t *)p;
  case KC_U64: return (double)*(const uint64_t *)p;
  case KC_U32: return *(const uint32_t *)p;
  case KC_U16: return *(const uint16_t *)p;
  case KC_U8: return *(const uint8_t *)p;
  case KC_BOOL: return *(const uint8_t *)p;
  default: return NAN;
  }
}

static void put_double(kc_dtype t, void *p, double v) {
  switch (t) {
  case KC_F32: *(float *)p = (float)v; break;
  case KC_F64: *(double *)p = v; break;
  case KC_F16: *(uint16_t *)p = kc_f32_to_f16((float)v); break;
  case KC_BF16: *(uint16_t *)p = kc_f32_to_bf16((float)v); break;
  case KC_I64: *(int64_t *)p = (int64_t)v; break;
  case KC_I32: *(int32_t *)p = (int32_t)v; break;
  case KC_I16: *(int16_t *)p = (int16_t)v; break;
  case KC_I8: *(int8_t *)p = (int8_t)v; break;
  case KC_U64: *(uint64_t *)p = (uint64_t)v; break;
  case KC_U32: *(uint32_t *)p = (uint32_t)v; break;
  case KC_U16: *(uint16_t *)p = (uint16_t)v; break;
  case KC_U8: *(uint8_t *)p = (uint8_t)v; break;
  case KC_BOOL: *(uint8_t *)p = v != 0; break;
  default: break;
  }
}

/* Samples every type holds exactly (after rounding for halves), negative ones when signed. */
static int samples(kc_dtype t, double *v) {
  static const double pos[] = {0, 1, 2, 3, 7, 100, 127};
  static const double neg[] = {-1, -2, -100, -128};
  static const double frac[] = {0.5, 2.75, -2.75, -0.25, 1e-3, 65504};
  int n = 0;
  for (size_t i = 0; i < sizeof pos / sizeof *pos; i++)
    v[n++] = t == KC_BOOL ? (pos[i] != 0) : pos[i];
  if (t == KC_BOOL) return n;
  bool sgn = kc_dtype_is_float(t) || t == KC_I8 || t == KC_I16 || t == KC_I32 || t == KC_I64;
  if (sgn)
    for (size_t i = 0; i < sizeof neg / sizeof *neg; i++)
      v[n++] = neg[i];
  if (kc_dtype_is_float(t))
    for (size_t i = 0; i < sizeof frac / sizeof *frac; i++)
      v[n++] = frac[i];
  return n;
}

/* The expected result of casting v (exact in `from`) to `to`, as a double. */
static double ref_cast(double v, kc_dtype from, kc_dtype to) {
  if (to == KC_BOOL) return v != 0;
  if (!kc_dtype_is_float(from) && !kc_dtype_is_float(to)) { /* two's complement, as C */
    unsigned char buf[8];
    int64_t i = (int64_t)v;
    memcpy(buf, &i, 8);
    return get_as_double(to, buf);
  }
  if (kc_dtype_is_float(to)) {
    unsigned char buf[8];
    put_double(to, buf, v);
    return get_as_double(to, buf);
  }
  double t = trunc(v);
  /* wrap into the target width, as the saturate-to-i64-then-truncate rule does */
  size_t bits = kc_dtype_size(to) * 8;
  if (bits < 64) {
    int64_t i = (int64_t)t;
    uint64_t m = (1ull << bits) - 1, u = (uint64_t)i & m;
    bool sgn = to == KC_I8 || to == KC_I16 || to == KC_I32;
    if (sgn && (u >> (bits - 1))) return (double)(int64_t)(u | ~m);
    return (double)u;
  }
  if (to == KC_U64 && t < 0) return 0; /* saturating */
  return t;
}

static void test_cast_matrix(void **state) {
  th_cpu *f = *state;
  size_t nt = sizeof all_types / sizeof *all_types;
  for (size_t i = 0; i < nt; i++) {
    for (size_t j = 0; j < nt; j++) {
      kc_dtype from = all_types[i], to = all_types[j];
      double v[32];
      int n = samples(from, v);
      kc_graph *g = kc_graph_new(f->ctx, "t");
      kc_cast(g, kc_input(g, "x", from, 1, (kc_dim[]){n}), to);
      unsigned char in[32 * 8], out[32 * 8];
      for (int k = 0; k < n; k++)
        put_double(from, in + k * kc_dtype_size(from), v[k]);
      run_last(f, g, NULL, (void *[]){in, out});
      for (int k = 0; k < n; k++) {
        double x = get_as_double(from, in + k * kc_dtype_size(from));
        double got = get_as_double(to, out + k * kc_dtype_size(to)), want = ref_cast(x, from, to);
        if (got != want)
          fail_msg("cast %s -> %s of %g: %g, want %g", kc_dtype_name(from), kc_dtype_name(to), x,
                   got, want);
      }
      kc_graph_free(g);
    }
  }
  /* float -> f16 rounds once from the source; nan -> bool is true; -0.0 -> bool is false */
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_cast(g, kc_input(g, "x", KC_F64, 1, (kc_dim[]){2}), KC_F16);
  double d[2] = {1.0 + 1.0 / 2048 + 1e-12, 70000};
  uint16_t h[2];
  run_last(f, g, NULL, (void *[]){d, h});
  assert_true(kc_f16_to_f32(h[0]) == 1.0f + 1.0f / 1024 && isinf(kc_f16_to_f32(h[1])));
  kc_graph_free(g);
  g = kc_graph_new(f->ctx, "t");
  kc_cast(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){3}), KC_BOOL);
  float fx[3] = {NAN, -0.0f, 1e-30f};
  uint8_t b[3];
  run_last(f, g, NULL, (void *[]){fx, b});
  assert_true(b[0] == 1 && b[1] == 0 && b[2] == 1);
  kc_graph_free(g);
}

/* ---- where, clip, variadic min/max, comparisons and logic ------------------------------------ */

static void test_where(void **state) {
  th_cpu *f = *state;
  /* cond [2,1,4], a [3,1], b [] -> out [2,3,4] */
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_val c = kc_input(g, "c", KC_BOOL, 3, (kc_dim[]){2, 1, 4});
  kc_val a = kc_input(g, "a", KC_I64, 2, (kc_dim[]){3, 1});
  kc_val b = kc_input(g, "b", KC_I64, 0, NULL);
  kc_where(g, c, a, b);
  uint8_t pc[8] = {1, 0, 1, 1, 0, 0, 1, 0};
  int64_t pa[3] = {10, 20, 30}, pb = -7, po[24];
  run_last(f, g, NULL, (void *[]){pc, pa, &pb, po});
  for (int i = 0; i < 24; i++) {
    int i0 = i / 12, i1 = (i / 4) % 3, i2 = i % 4;
    assert_true(po[i] == (pc[i0 * 4 + i2] ? pa[i1] : pb));
  }
  kc_graph_free(g);
}

static void test_clip(void **state) {
  th_cpu *f = *state;
  float x[7] = {-3, -1, 0, 0.5f, 2, 9, NAN}, lo = -1, hi = 2, y[7];
  for (int mode = 0; mode < 4; mode++) { /* both, min only, max only, lo > hi */
    kc_graph *g = kc_graph_new(f->ctx, "t");
    kc_val xv = kc_input(g, "x", KC_F32, 1, (kc_dim[]){7});
    kc_val lv = mode == 2 ? (kc_val){0} : kc_input(g, "lo", KC_F32, 0, NULL);
    kc_val hv = mode == 1 ? (kc_val){0} : kc_input(g, "hi", KC_F32, 0, NULL);
    kc_clip(g, xv, lv, hv);
    float l = mode == 3 ? 5 : lo;
    /* trailing absent inputs are dropped by the builder: min only has 2 inputs */
    if (mode == 1)
      run_last(f, g, NULL, (void *[]){x, &l, y});
    else
      run_last(f, g, NULL, (void *[]){x, mode == 2 ? NULL : &l, &hi, y});
    for (int i = 0; i < 6; i++) {
      float w = x[i];
      if (mode != 2 && w < l) w = l;
      if (mode != 1 && w > hi) w = hi;
      assert_true(y[i] == w);
    }
    assert_true(isnan(y[6]));
    kc_graph_free(g);
  }
  /* u8 with a constant bound baked in */
  kc_graph *g = kc_graph_new(f->ctx, "t");
  uint8_t hb = 200;
  kc_val xv = kc_input(g, "x", KC_U8, 1, (kc_dim[]){3});
  kc_clip(g, xv, (kc_val){0}, kc_constant(g, KC_U8, 0, NULL, &hb));
  uint8_t ux[3] = {0, 199, 250}, uy[3], dummy = 0;
  run_last(f, g, NULL, (void *[]){ux, NULL, &dummy, uy});
  assert_true(uy[0] == 0 && uy[1] == 199 && uy[2] == 200);
  kc_graph_free(g);
}

/* min/max over 1 and 3 inputs with broadcasting; nan propagates. */
static void test_variadic(void **state) {
  th_cpu *f = *state;
  for (int is_max = 0; is_max < 2; is_max++) {
    kc_graph *g = kc_graph_new(f->ctx, "t");
    kc_val in[3] = {kc_input(g, "a", KC_F32, 2, (kc_dim[]){2, 3}),
                    kc_input(g, "b", KC_F32, 1, (kc_dim[]){3}), kc_input(g, "c", KC_F32, 0, NULL)};
    uint32_t ni = kc_graph_add_node(g, is_max ? KC_OP_MAX : KC_OP_MIN, 3, in, 1, NULL);
    assert_int_equal(kc_node_infer(g, ni), KC_OK);
    float a[6] = {1, 5, -2, NAN, 0, 3}, b[3] = {2, 2, 2}, c = 1.5f, o[6];
    run_last(f, g, NULL, (void *[]){a, b, &c, o});
    for (int i = 0; i < 6; i++) {
      if (isnan(a[i])) {
        assert_true(isnan(o[i]));
        continue;
      }
      float w = is_max ? fmaxf(fmaxf(a[i], b[i % 3]), c) : fminf(fminf(a[i], b[i % 3]), c);
      assert_true(o[i] == w);
    }
    kc_graph_free(g);

    g = kc_graph_new(f->ctx, "t");
    kc_val one = kc_input(g, "a", KC_I32, 1, (kc_dim[]){3});
    ni = kc_graph_add_node(g, is_max ? KC_OP_MAX : KC_OP_MIN, 1, &one, 1, NULL);
    assert_int_equal(kc_node_infer(g, ni), KC_OK);
    int32_t ia[3] = {4, -5, 6}, io[3];
    run_last(f, g, NULL, (void *[]){ia, io});
    assert_memory_equal(ia, io, sizeof ia);
    kc_graph_free(g);
  }
}

static void test_compare_logic(void **state) {
  th_cpu *f = *state;
  float a[5] = {1, 2, NAN, -0.0f, 3}, b[5] = {1, 1, NAN, 0, 4};
  kc_val (*ops[3])(kc_graph *, kc_val, kc_val) = {kc_equal, kc_less, kc_greater};
  uint8_t want[3][5] = {{1, 0, 0, 1, 0}, {0, 0, 0, 0, 1}, {0, 1, 0, 0, 0}};
  for (int k = 0; k < 3; k++) {
    kc_graph *g = kc_graph_new(f->ctx, "t");
    ops[k](g, kc_input(g, "a", KC_F32, 1, (kc_dim[]){5}),
           kc_input(g, "b", KC_F32, 1, (kc_dim[]){5}));
    uint8_t o[5];
    run_last(f, g, NULL, (void *[]){a, b, o});
    assert_memory_equal(o, want[k], 5);
    kc_graph_free(g);
  }
  /* and with broadcasting over 70 lanes (a full vector and a tail), not */
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_and(g, kc_input(g, "a", KC_BOOL, 2, (kc_dim[]){2, 70}),
         kc_input(g, "b", KC_BOOL, 1, (kc_dim[]){70}));
  uint8_t pa[140], pb[70], po[140];
  for (int i = 0; i < 140; i++)
    pa[i] = (uint8_t)(i % 3 == 0);
  for (int i = 0; i < 70; i++)
    pb[i] = (uint8_t)(i % 2 == 0);
  run_last(f, g, NULL, (void *[]){pa, pb, po});
  for (int i = 0; i < 140; i++)
    assert_int_equal(po[i], pa[i] && pb[i % 70]);
  kc_graph_free(g);
  g = kc_graph_new(f->ctx, "t");
  kc_not(g, kc_input(g, "a", KC_BOOL, 1, (kc_dim[]){70}));
  run_last(f, g, NULL, (void *[]){pb, po});
  for (int i = 0; i < 70; i++)
    assert_int_equal(po[i], !pb[i]);
  kc_graph_free(g);
}

/* pow: f32 with f32, i32 and i64 exponents; i32 base with an f32 exponent; a constant 2. */
static void test_pow(void **state) {
  th_cpu *f = *state;
  float x[4] = {2, -3, 0.5f, 9}, y[4];
  float ef[4] = {3, 2, -1, 0.5f};
  int32_t ei[4] = {3, 2, -1, 0};
  int64_t el[4] = {10, 3, 2, 1};
  kc_dtype et[3] = {KC_F32, KC_I32, KC_I64};
  void *ep[3] = {ef, ei, el};
  for (int k = 0; k < 3; k++) {
    kc_graph *g = kc_graph_new(f->ctx, "t");
    kc_pow(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){4}),
           kc_input(g, "e", et[k], 1, (kc_dim[]){4}));
    run_last(f, g, NULL, (void *[]){x, ep[k], y});
    for (int i = 0; i < 4; i++) {
      double e = k == 0 ? ef[i] : k == 1 ? ei[i] : (double)el[i];
      assert_true(fabs(y[i] - pow(x[i], e)) <= 1e-6 * fabs(pow(x[i], e)));
    }
    kc_graph_free(g);
  }
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_pow(g, kc_input(g, "x", KC_I32, 1, (kc_dim[]){3}), kc_input(g, "e", KC_F32, 1, (kc_dim[]){3}));
  int32_t ix[3] = {1, 2, 3}, iy[3];
  float fe[3] = {4, 5, 6};
  run_last(f, g, NULL, (void *[]){ix, fe, iy});
  assert_true(iy[0] == 1 && iy[1] == 32 && iy[2] == 729);
  kc_graph_free(g);
  g = kc_graph_new(f->ctx, "t");
  kc_pow(g, kc_input(g, "x", KC_F32, 1, (kc_dim[]){4}), kc_const_f32(g, 2));
  float dummy = 0;
  run_last(f, g, NULL, (void *[]){x, &dummy, y});
  for (int i = 0; i < 4; i++)
    assert_true(y[i] == x[i] * x[i]);
  kc_graph_free(g);
}

/* ---- dropout, views, sources ----------------------------------------------------------------- */

static void test_dropout(void **state) {
  th_cpu *f = *state;
  enum { N = 40000 };
  float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  uint8_t *m = malloc(N);
  fill_uniform(x, N, 1, 2, 9);
  /* inference: y = x, mask all true */
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_val xv = kc_input(g, "x", KC_F32, 2, (kc_dim[]){200, 200});
  kc_val ratio = kc_input(g, "r", KC_F32, 0, NULL), train = kc_input(g, "t", KC_BOOL, 0, NULL);
  kc_val outs[2];
  uint32_t ni = kc_graph_add_node(g, KC_OP_DROPOUT, 3, (kc_val[]){xv, ratio, train}, 2, outs);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  for (int mode = 0; mode < 3; mode++) { /* off; on with ratio 0; on with ratio 0.25 */
    float r = mode == 2 ? 0.25f : 0;
    uint8_t on = mode > 0;
    run_last(f, g, NULL, (void *[]){x, &r, &on, y, m});
    int64_t kept = 0;
    for (int i = 0; i < N; i++) {
      if (mode < 2) {
        assert_true(y[i] == x[i] && m[i] == 1);
        continue;
      }
      assert_true(m[i] ? y[i] == x[i] * (1 / 0.75f) : y[i] == 0);
      kept += m[i];
    }
    if (mode == 2) assert_true(kept > N * 0.73 && kept < N * 0.77);
  }
  kc_graph_free(g);
  free(x);
  free(y);
  free(m);
}

static void test_no_kernel(void **state) {
  th_cpu *f = *state;
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_val x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){4});
  kc_identity(g, x);
  th_kernel k;
  assert_int_equal(th_lower_node(f, g, g->nnodes - 1, &k), KC_OK);
  assert_true(k.no_kernel);
  kc_const_f32(g, 1);
  assert_int_equal(th_lower_node(f, g, g->nnodes - 1, &k), KC_OK);
  assert_true(k.no_kernel);
  kc_graph_free(g);
}

/* The inner loop of a plain f32 add is vectorized: the dumped optimized IR has 16-lane (or the
 * host's width) float vector adds. */
static void test_vectorized(void **state) {
  th_cpu *f = *state;
  char dir[64];
  assert_true(th_mkdtemp(dir, sizeof dir, "ew"));
  assert_int_equal(kc_cpu_set_dump_dir(f->cpu, dir), KC_OK);
  kc_graph *g = kc_graph_new(f->ctx, "t");
  kc_dim B = kc_sym(g, "B");
  kc_val a = kc_input(g, "a", KC_F32, 2, (kc_dim[]){B, 768});
  kc_gelu(g, kc_add(g, a, kc_input(g, "b", KC_F32, 1, (kc_dim[]){768})), 0);
  th_kernel k[2];
  assert_int_equal(th_lower_node(f, g, g->nnodes - 2, &k[0]), KC_OK);
  assert_int_equal(th_lower_node(f, g, g->nnodes - 1, &k[1]), KC_OK);
  assert_int_equal(kc_cpu_set_dump_dir(f->cpu, NULL), KC_OK);
  char want[32];
  snprintf(want, sizeof want, "<%d x float>", kc_cpu_host(f->cpu)->f32_lanes);
  for (int i = 0; i < 2; i++) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.ll", dir, k[i].name);
    char *text = th_read_file(path, NULL);
    assert_non_null(text);
    char fadd[48];
    snprintf(fadd, sizeof fadd, "fadd %s", want);
    assert_non_null(strstr(text, i == 0 ? fadd : want));
    /* no scalar libm calls in the vector body (erf/exp are polynomial) */
    assert_null(strstr(text, "@expf"));
    assert_null(strstr(text, "@erff"));
    free(text);
  }
  assert_true(th_rmtree(dir));
  kc_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_broadcast),      cmocka_unit_test(test_symbolic),
      cmocka_unit_test(test_integers),       cmocka_unit_test(test_int_unary),
      cmocka_unit_test(test_float_unary),    cmocka_unit_test(test_vmath_accuracy),
      cmocka_unit_test(test_special_values), cmocka_unit_test(test_half),
      cmocka_unit_test(test_cast_matrix),    cmocka_unit_test(test_where),
      cmocka_unit_test(test_clip),           cmocka_unit_test(test_variadic),
      cmocka_unit_test(test_compare_logic),  cmocka_unit_test(test_pow),
      cmocka_unit_test(test_dropout),        cmocka_unit_test(test_no_kernel),
      cmocka_unit_test(test_vectorized),     cmocka_unit_test(test_mod_bits),
      cmocka_unit_test(test_classify_sign),
  };
  return cmocka_run_group_tests(tests, th_cpu_setup, th_cpu_teardown);
}
