/*
 * tests/test_cpu_quant.c - the quantization kernels (quantize_linear, dequantize_linear,
 * dynamic_quantize_linear, matmul_integer, qlinear_matmul) on cases the ONNX node tests leave
 * out: ties rounding half to even and saturation at both ends, a negative axis, a blocked scale
 * whose last block is short, an all-zero input to dynamic quantization, per-row / per-column
 * zero points, broadcast batch dims; dynamic quantization over sizes around its vector width
 * (against ONNX's formula computed in the test).
 *
 * Expected values come from onnx.reference 1.22 (QuantizeLinear, DequantizeLinear,
 * DynamicQuantizeLinear, QLinearMatMul at opset 21/11) and, for matmul_integer with per-row
 * zero points (which onnx.reference cannot broadcast), from numpy:
 * (a - azp[:, None]) @ (b - bzp) in int32. Each graph is compiled with kc_compile (no passes)
 * and run on x, its one input; parameters are constants in the graph text.
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

/* Compile text, run it on x (dtype xt, dims xd), compare output 0 with want (nbytes). */
static void check(const char *text, kc_dtype xt, int xr, const int64_t *xd, void *x,
                  const void *want, size_t nbytes) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = th_parse(ctx, text);
  kc_module *m = th_compile(ctx, g, 1);
  kc_tensor_desc in = th_desc("x", xt, xr, xd, x), out;
  th_run(ctx, m, &in, 1, &out, 1);
  assert_int_equal(th_nbytes(&out), nbytes);
  assert_memory_equal(out.data, want, nbytes);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void t_quantize_ties(void **st) {
  (void)st;
  int64_t d[1] = {10};
  float ties[10] = {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 300, -300, 127.5f, 126.5f};
  static const int8_t want[10] = {-2, -2, 0, 0, 2, 2, 127, -128, 127, 126};
  check("# kir 1\n"
        "graph @q(%1: f32[10] \"x\") {\n"
        "  %2 = constant dense<1.0> : f32[]\n"
        "  %3 = constant dense<0> : i8[]\n"
        "  %4 = quantize_linear(%1, %2, %3) : i8[10]\n"
        "  return %4 \"y\"\n"
        "}\n",
        KC_F32, 1, d, ties, want, sizeof want);
  static const uint8_t want2[10] = {123, 125, 127, 129, 131, 133, 255, 0, 255, 255};
  check("# kir 1\n"
        "graph @q(%1: f32[10] \"x\") {\n"
        "  %2 = constant dense<0.5> : f32[]\n"
        "  %3 = constant dense<128> : u8[]\n"
        "  %4 = quantize_linear(%1, %2, %3) : u8[10]\n"
        "  return %4 \"y\"\n"
        "}\n",
        KC_F32, 1, d, ties, want2, sizeof want2);
}

/* x = arange(-5, 5).reshape(2, 5) * 1.3 */
static void x25(float *x) {
  for (int i = 0; i < 10; i++)
    x[i] = (float)(i - 5) * 1.3f;
}

static void t_quantize_axis_block(void **st) {
  (void)st;
  int64_t d[2] = {2, 5};
  float x[10];
  x25(x);
  static const uint8_t want_b[10] = {0, 0, 0, 0, 2, 250, 255, 3, 5, 130};
  check("# kir 1\n"
        "graph @q(%1: f32[2,5] \"x\") {\n"
        "  %2 = constant dense<[0.5, 1.0, 2.0, 0.25, 0.75, 3.0]> : f32[2,3]\n"
        "  %3 = constant dense<[1, 2, 3, 250, 0, 128]> : u8[2,3]\n"
        "  %4 = quantize_linear(%1, %2, %3) {block_size=2} : u8[2,5]\n"
        "  return %4 \"y\"\n"
        "}\n",
        KC_F32, 2, d, x, want_b, sizeof want_b);
  static const int8_t want_a[10] = {-16, -13, -11, -8, -6, 100, 104, 109, 113, 117};
  check("# kir 1\n"
        "graph @q(%1: f32[2,5] \"x\") {\n"
        "  %2 = constant dense<[0.5, 0.3]> : f32[2]\n"
        "  %3 = constant dense<[-3, 100]> : i8[2]\n"
        "  %4 = quantize_linear(%1, %2, %3) {axis=-2} : i8[2,5]\n"
        "  return %4 \"y\"\n"
        "}\n",
        KC_F32, 2, d, x, want_a, sizeof want_a);
}

static void t_dequantize_axis(void **st) {
  (void)st;
  int64_t d[2] = {2, 5};
  int8_t x[10] = {-128, -1, 0, 1, 127, 5, 6, 7, 8, 9};
  static const float want[10] = {-62.5f,
                                 1.0f,
                                 1.5f,
                                 2.0f,
                                 65.0f,
                                 -28.500001907348633f,
                                 -28.200000762939453f,
                                 -27.900001525878906f,
                                 -27.600000381469727f,
                                 -27.30000114440918f};
  check("# kir 1\n"
        "graph @q(%1: i8[2,5] \"x\") {\n"
        "  %2 = constant dense<[0.5, 0.3]> : f32[2]\n"
        "  %3 = constant dense<[-3, 100]> : i8[2]\n"
        "  %4 = dequantize_linear(%1, %2, %3) {axis=0} : f32[2,5]\n"
        "  return %4 \"y\"\n"
        "}\n",
        KC_I8, 2, d, x, want, sizeof want);
}

/* dynamic_quantize_linear returning result r (2: y, 3: scale, 4: zero point) */
static void dyn_text(char *buf, size_t size, int r) {
  snprintf(buf, size,
           "# kir 1\n"
           "graph @q(%%1: f32[4] \"x\") {\n"
           "  %%2, %%3, %%4 = dynamic_quantize_linear(%%1) : u8[4], f32[], u8[]\n"
           "  return %%%d \"y\"\n"
           "}\n",
           r);
}

static void t_dynamic_zeros(void **st) {
  (void)st;
  int64_t d[1] = {4};
  float x[4] = {0, 0, 0, 0};
  char text[512];
  static const uint8_t want[4] = {0, 0, 0, 0};
  dyn_text(text, sizeof text, 2);
  check(text, KC_F32, 1, d, x, want, sizeof want);
  /* the scale is 1/255 when max == min (onnx.reference: 0.003921568859368563) */
  float sc = 1.0f / 255.0f;
  dyn_text(text, sizeof text, 3);
  check(text, KC_F32, 1, d, x, &sc, sizeof sc);
  uint8_t zp = 0;
  dyn_text(text, sizeof text, 4);
  check(text, KC_F32, 1, d, x, &zp, sizeof zp);
}

/*
 * dynamic_quantize_linear over sizes around its 16-wide vectors (1, 15, 16, 17, 1000, 4099),
 * the min or the max anywhere (in the vector part or the scalar tail), against ONNX's formula
 * computed here one float step at a time.
 */
static void t_dynamic_sizes(void **st) {
  (void)st;
  static const int64_t sizes[] = {1, 15, 16, 17, 1000, 4099};
  uint32_t seed = 7;
  for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
    int64_t n = sizes[c];
    float *x = malloc((size_t)n * 4);
    uint8_t *want = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
      seed = seed * 1664525u + 1013904223u;
      x[i] = ((float)(seed >> 9) / 8388608.0f - 0.3f) * 7.0f;
    }
    x[(c * 7919) % (size_t)n] = -9.5f; /* the min, somewhere */
    x[n - 1] = 11.25f;                 /* the max in the last element (the tail when n % 16) */
    float mn = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
      mn = x[i] < mn ? x[i] : mn;
      mx = x[i] > mx ? x[i] : mx;
    }
    volatile float scale = (mx - mn) / 255.0f;
    volatile float zq = 0.0f - mn / scale;
    float zp = rintf(zq < 0 ? 0 : zq > 255 ? 255 : zq);
    for (int64_t i = 0; i < n; i++) {
      volatile float q = x[i] / scale;
      q = rintf(q) + zp;
      want[i] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
    char text[512];
    snprintf(text, sizeof text,
             "# kir 1\ngraph @q(%%1: f32[%lld] \"x\") {\n"
             "  %%2, %%3, %%4 = dynamic_quantize_linear(%%1) : u8[%lld], f32[], u8[]\n"
             "  return %%2 \"y\"\n}\n",
             (long long)n, (long long)n);
    check(text, KC_F32, 1, &n, x, want, (size_t)n);
    float sc = scale;
    snprintf(text, sizeof text,
             "# kir 1\ngraph @q(%%1: f32[%lld] \"x\") {\n"
             "  %%2, %%3, %%4 = dynamic_quantize_linear(%%1) : u8[%lld], f32[], u8[]\n"
             "  return %%3 \"y\"\n}\n",
             (long long)n, (long long)n);
    check(text, KC_F32, 1, &n, x, &sc, sizeof sc);
    free(x);
    free(want);
  }
}

static void t_matmul_integer_rows_cols(void **st) {
  (void)st;
  int64_t d[4] = {2, 1, 3, 4};
  uint8_t a[24];
  for (int i = 0; i < 24; i++)
    a[i] = (uint8_t)(i * 37 % 256);
  static const int32_t want[36] = {
      23462, -34194, -6962,  32902, 32406, -51458, 31862, -35266, -49410, 46518, 44966, -48370,
      22086, -17394, -31954, 13542, 32694, -26338, 22598, -62770, -16786, 43494, 6710,  -56738,
      40598, -54242, -27106, 23702, 51398, -21522, 57830, -26770, -25650, 22854, 23126, -32898};
  check("# kir 1\n"
        "graph @q(%1: u8[2,1,3,4] \"x\") {\n"
        "  %2 = constant dense<[0, 53, 106, 159, 212, 9, 62, 115, 168, 221, 18, 71, 124, 177, "
        "230, 27, 80, 133, 186, 239, 36, 89, 142, 195]> : u8[3,4,2]\n"
        "  %3 = constant dense<[3, 200, 17]> : u8[3]\n"
        "  %4 = constant dense<[9, 250]> : u8[2]\n"
        "  %5 = matmul_integer(%1, %2, %3, %4) : i32[2,3,3,2]\n"
        "  return %5 \"y\"\n"
        "}\n",
        KC_U8, 4, d, a, want, sizeof want);
}

static void t_qlinear_matmul_broadcast(void **st) {
  (void)st;
  int64_t d[3] = {2, 3, 4};
  int8_t a[24];
  for (int i = 0; i < 24; i++)
    a[i] = (int8_t)(i * 29 % 256 - 128);
  static const int8_t want[12] = {8, 6, 5, -5, -14, -8, 6, -3, -22, -8, 6, 0};
  check("# kir 1\n"
        "graph @q(%1: i8[2,3,4] \"x\") {\n"
        "  %2 = constant dense<0.02> : f32[]\n"
        "  %3 = constant dense<-5> : i8[]\n"
        "  %4 = constant dense<[-128, -87, -46, -5, 36, 77, 118, -97]> : i8[4,2]\n"
        "  %5 = constant dense<0.03> : f32[]\n"
        "  %6 = constant dense<7> : i8[]\n"
        "  %7 = constant dense<0.9> : f32[]\n"
        "  %8 = constant dense<-2> : i8[]\n"
        "  %9 = qlinear_matmul(%1, %2, %3, %4, %5, %6, %7, %8) : i8[2,3,2]\n"
        "  return %9 \"y\"\n"
        "}\n",
        KC_I8, 3, d, a, want, sizeof want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_quantize_ties),
      cmocka_unit_test(t_quantize_axis_block),
      cmocka_unit_test(t_dequantize_axis),
      cmocka_unit_test(t_dynamic_zeros),
      cmocka_unit_test(t_dynamic_sizes),
      cmocka_unit_test(t_matmul_integer_rows_cols),
      cmocka_unit_test(t_qlinear_matmul_broadcast),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
