/*
 * tests/test_check_compare.c - kc_check_compare (tools/check/onnx_compare.c), the comparison
 * behind `kernc check`, the ONNX suites and the model tests, on its own: integers compare exactly
 * (int64 and uint64 values 1 apart above 2^53, where doubles cannot tell them apart, differ; bool
 * by truth), floats by |got - want| <= atol + rtol |want| with NaN equal to NaN only and
 * infinities equal to the same infinity only, -0 equal to +0; the tolerance's edge passes and the
 * next representable value fails; f16 and bf16 by their values (bf16 expected data stored as u16
 * accepted); a dtype, rank or dim that differs fails naming both shapes, and a value mismatch
 * names the output, the count and the first index. Every expected verdict is worked out by hand
 * from the rule in the comments beside it, not taken from kernc.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tools/check/check.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* got and want of dtype t, shape [n], compared with rtol/atol; msg gets the message. */
static bool cmp1(kc_dtype t, size_t n, const void *got, const void *want, double rtol, double atol,
                 char *msg, size_t size) {
  kc_tensor_desc g = {
      .name = "y", .dtype = t, .rank = 1, .dims = {(int64_t)n}, .data = (void *)got};
  kc_tensor w = {.name = "y",
                 .dtype = t,
                 .rank = 1,
                 .dims = {(int64_t)n},
                 .data = want,
                 .nbytes = n * kc_dtype_size(t)};
  msg[0] = 0;
  return kc_check_compare("y", &g, &w, rtol, atol, msg, size);
}

/* One element of dtype t with the default tolerances. */
static bool same1(kc_dtype t, const void *got, const void *want) {
  char msg[512];
  return cmp1(t, 1, got, want, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg);
}

static bool same_f32(float g, float w) { return same1(KC_F32, &g, &w); }
static bool same_f64(double g, double w) { return same1(KC_F64, &g, &w); }

static void integers_exact(void **st) {
  (void)st;
  /* 2^53 + 1 and 2^53 round to the same double: only an exact comparison tells them apart */
  int64_t a = ((int64_t)1 << 53) + 1, b = (int64_t)1 << 53;
  assert_true((double)a == (double)b); /* the premise */
  assert_false(same1(KC_I64, &a, &b));
  assert_true(same1(KC_I64, &a, &a));
  int64_t big = INT64_MAX, big1 = INT64_MAX - 1;
  assert_false(same1(KC_I64, &big, &big1));
  uint64_t u = UINT64_MAX, u1 = UINT64_MAX - 1;
  assert_false(same1(KC_U64, &u, &u1));
  assert_true(same1(KC_U64, &u, &u));
  /* no tolerance for integers, however large rtol and atol are */
  int32_t i = 1000, j = 1001;
  char msg[512];
  assert_false(cmp1(KC_I32, 1, &i, &j, 0.5, 10, msg, sizeof msg));
  int8_t c = -128, d = 127;
  assert_false(same1(KC_I8, &c, &d));
  uint8_t x = 255, y = 255;
  assert_true(same1(KC_U8, &x, &y));
  /* bool by truth: 2 and 1 are both true; 0 is false */
  uint8_t t2 = 2, t1 = 1, f0 = 0;
  assert_true(same1(KC_BOOL, &t2, &t1));
  assert_false(same1(KC_BOOL, &f0, &t1));
}

static void nan_inf_zero(void **st) {
  (void)st;
  assert_true(same_f32(NAN, NAN));
  assert_true(same_f32(-NAN, NAN)); /* any NaN equals any NaN */
  assert_false(same_f32(NAN, 1.0f));
  assert_false(same_f32(1.0f, NAN));
  assert_false(same_f32(NAN, INFINITY));
  assert_false(same_f32(0.0f, NAN)); /* 0 is within atol of anything near 0, never of NaN */
  assert_true(same_f32(INFINITY, INFINITY));
  assert_true(same_f32(-INFINITY, -INFINITY));
  assert_false(same_f32(INFINITY, -INFINITY));
  assert_false(same_f32(-INFINITY, INFINITY));
  assert_false(same_f32(FLT_MAX, INFINITY)); /* no finite value is close to an infinity */
  assert_false(same_f32(INFINITY, FLT_MAX));
  assert_true(same_f32(-0.0f, 0.0f));
  assert_true(same_f32(0.0f, -0.0f));
  assert_true(same_f64(NAN, NAN));
  assert_false(same_f64(DBL_MAX, INFINITY));
  assert_false(same_f64(INFINITY, -INFINITY));
  assert_true(same_f64(-0.0, 0.0));
}

static void tolerance_edges(void **st) {
  (void)st;
  char msg[512];
  /* rtol 0.5, atol 0.25, want 1: the bound is 0.75, exact in binary; 1.75 and 0.25 are on it,
   * 2^-52 beyond either is out (the differences 0.75 + 2^-52 and 0.75 + 2^-53 are exact) */
  double w = 1.0, on = 1.75, past = 1.75 + 0x1p-52, below = 0.25, under = 0.25 - 0x1p-53;
  assert_true(cmp1(KC_F64, 1, &on, &w, 0.5, 0.25, msg, sizeof msg));
  assert_false(cmp1(KC_F64, 1, &past, &w, 0.5, 0.25, msg, sizeof msg));
  assert_true(cmp1(KC_F64, 1, &below, &w, 0.5, 0.25, msg, sizeof msg));
  assert_false(cmp1(KC_F64, 1, &under, &w, 0.5, 0.25, msg, sizeof msg));
  /* the bound uses |want|: want -2 gives 0.25 + 1; -0.75 + 2^-52 is 1.25 + 2^-52 away */
  double wn = -2.0, g1 = -0.75, g2 = -0.75 + 0x1p-52;
  assert_true(cmp1(KC_F64, 1, &g1, &wn, 0.5, 0.25, msg, sizeof msg));
  assert_false(cmp1(KC_F64, 1, &g2, &wn, 0.5, 0.25, msg, sizeof msg));
  /* and not |got|: got 2, want 1 with rtol 0.5 is 1 > 0.5 (|got| would allow it) */
  double two = 2.0;
  assert_false(cmp1(KC_F64, 1, &two, &w, 0.5, 0, msg, sizeof msg));
  /* atol alone near zero; rtol 0, atol 0 is exact */
  double z = 0.0, tiny = 0.25;
  assert_true(cmp1(KC_F64, 1, &tiny, &z, 0, 0.25, msg, sizeof msg));
  assert_false(cmp1(KC_F64, 1, &tiny, &z, 0, nextafter(0.25, 0), msg, sizeof msg));
  assert_false(cmp1(KC_F64, 1, &on, &w, 0, 0, msg, sizeof msg));
  assert_true(cmp1(KC_F64, 1, &w, &w, 0, 0, msg, sizeof msg));
  /* the defaults (rtol 1e-3, atol 1e-7) on f32: want 1000 allows 1 + 1e-7; 1001 is in (1001 is
   * exact in f32), the next f32 above it (1001 + 2^-14) is not */
  assert_true(same_f32(1001.0f, 1000.0f));
  assert_true(same_f32(999.0f, 1000.0f));
  assert_false(same_f32(nextafterf(1001.0f, 2000.0f), 1000.0f));
  assert_false(same_f32(nextafterf(999.0f, 0.0f), 1000.0f));
  /* want 0: atol 1e-7 alone */
  assert_true(same_f32(9e-8f, 0.0f));
  assert_false(same_f32(1.1e-7f, 0.0f));
}

static void half_types(void **st) {
  (void)st;
  /* f16: 1.0 is 0x3C00, the next value 1 + 2^-10 (0x3C01, 9.8e-4 away: in), 1 + 2^-9 (out) */
  uint16_t one = 0x3C00, n1 = 0x3C01, n2 = 0x3C02, inf = 0x7C00, ninf = 0xFC00, nan = 0x7E00;
  assert_true(same1(KC_F16, &n1, &one));
  assert_false(same1(KC_F16, &n2, &one));
  assert_true(same1(KC_F16, &inf, &inf));
  assert_false(same1(KC_F16, &inf, &ninf));
  assert_true(same1(KC_F16, &nan, &nan));
  assert_false(same1(KC_F16, &nan, &one));
  /* bf16: 1.0 is 0x3F80, the next value 1 + 2^-7 is out */
  uint16_t b1 = 0x3F80, b2 = 0x3F81;
  assert_false(same1(KC_BF16, &b2, &b1));
  assert_true(same1(KC_BF16, &b1, &b1));
  /* bf16 output against expected data stored as u16 (older generators): read as bf16 bits, so
   * 1 + 2^-7 against 1 fails by value, and 0x8000 (-0) equals 0x0000 (+0) though the bits differ */
  char msg[512];
  kc_tensor_desc g = {.name = "y", .dtype = KC_BF16, .rank = 1, .dims = {1}, .data = &b1};
  kc_tensor w = {.name = "y", .dtype = KC_U16, .rank = 1, .dims = {1}, .data = &b1, .nbytes = 2};
  assert_true(kc_check_compare("y", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  w.data = &b2;
  assert_false(kc_check_compare("y", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  uint16_t nz = 0x8000, pz = 0x0000;
  g.data = &nz;
  w.data = &pz;
  assert_true(kc_check_compare("y", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  /* but u16 output against u16 data is an integer comparison: bits */
  g.dtype = KC_U16;
  assert_false(kc_check_compare("y", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
}

static void shape_and_dtype(void **st) {
  (void)st;
  char msg[512];
  float a[6] = {0};
  double d[6] = {0};
  kc_tensor_desc g = {.name = "y", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = a};
  kc_tensor w = {.name = "y", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = a, .nbytes = 24};
  assert_true(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  /* dtype: f32 against f64 of equal values */
  w.dtype = KC_F64;
  w.data = d;
  assert_false(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  assert_non_null(strstr(msg, "output 'out': expected f64[2,3], computed f32[2,3]"));
  /* i32 against i64: integers too */
  int32_t i32[6] = {0};
  int64_t i64[6] = {0};
  g = (kc_tensor_desc){.name = "y", .dtype = KC_I32, .rank = 2, .dims = {2, 3}, .data = i32};
  w = (kc_tensor){.name = "y", .dtype = KC_I64, .rank = 2, .dims = {2, 3}, .data = i64};
  assert_false(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  /* dims: [3,2] against [2,3] (same count), rank: [6] and [1,2,3] against [2,3] */
  g = (kc_tensor_desc){.name = "y", .dtype = KC_F32, .rank = 2, .dims = {3, 2}, .data = a};
  w = (kc_tensor){.name = "y", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = a};
  assert_false(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  assert_non_null(strstr(msg, "expected f32[2,3], computed f32[3,2]"));
  g.rank = 1;
  g.dims[0] = 6;
  assert_false(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  g = (kc_tensor_desc){.name = "y", .dtype = KC_F32, .rank = 3, .dims = {1, 2, 3}, .data = a};
  assert_false(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  /* scalars (rank 0) compare their one value; an empty tensor has nothing to differ */
  float s1 = 1, s2 = 2;
  g = (kc_tensor_desc){.name = "y", .dtype = KC_F32, .rank = 0, .data = &s1};
  w = (kc_tensor){.name = "y", .dtype = KC_F32, .rank = 0, .data = &s2};
  assert_false(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  w.data = &s1;
  assert_true(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  g = (kc_tensor_desc){.name = "y", .dtype = KC_F32, .rank = 2, .dims = {0, 3}, .data = &s1};
  w = (kc_tensor){.name = "y", .dtype = KC_F32, .rank = 2, .dims = {0, 3}, .data = &s2};
  assert_true(kc_check_compare("out", &g, &w, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
}

/* A mismatch's message: output name, how many differ, the first index with both values; every
 * element is compared (a mismatch in the last one is found). */
static void message_and_every_element(void **st) {
  (void)st;
  char msg[512];
  float g[2][3] = {{0, 1, 2}, {3, 4, 5}}, w[2][3] = {{0, 1, 2}, {3, 4, 5}};
  kc_tensor_desc gd = {.name = "y", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = g};
  kc_tensor wd = {.name = "y", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = w};
  assert_true(kc_check_compare("logits", &gd, &wd, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  g[1][2] = 5.5f;
  assert_false(kc_check_compare("logits", &gd, &wd, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  assert_non_null(strstr(msg, "output 'logits': 1 of 6 values differ"));
  assert_non_null(strstr(msg, "first at [1,2]: computed 5.5, expected 5"));
  g[0][1] = NAN;
  assert_false(kc_check_compare("logits", &gd, &wd, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  assert_non_null(strstr(msg, "2 of 6 values differ"));
  assert_non_null(strstr(msg, "first at [0,1]: computed nan, expected 1"));
  /* integers print whole, past float precision */
  int64_t a = ((int64_t)1 << 53) + 1, b = (int64_t)1 << 53;
  assert_false(cmp1(KC_I64, 1, &a, &b, KC_CHECK_RTOL, KC_CHECK_ATOL, msg, sizeof msg));
  assert_non_null(strstr(msg, "computed 9007199254740993, expected 9007199254740992"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(integers_exact),  cmocka_unit_test(nan_inf_zero),
      cmocka_unit_test(tolerance_edges), cmocka_unit_test(half_types),
      cmocka_unit_test(shape_and_dtype), cmocka_unit_test(message_and_every_element),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
