/*
 * tests/test_cpu_conv.c - Conv, ConvTranspose, MaxPool and AveragePool (frontend/onnx_vision.c:
 * im2col by gather, then the packed matmul core or a reduction) on the CPU, by value, on cases
 * the ONNX node tests leave thin: grouped, depthwise, dilated and strided convolutions with
 * asymmetric pads, 1-D and 3-D, 1x1, the ViT patch embedding (kernel = stride = 16 on
 * 224x224), grouped ConvTranspose with output_padding, pooling with dilations, ceil_mode and
 * count_include_pad, and Resize (frontend/onnx_resize.c) against PyTorch's bilinear, bicubic
 * (align_corners) and nearest with run-time sizes / scales. Run as: test_cpu_conv KERNC_PROGRAM
 * TESTS_DIR.
 *
 * The cases are two node-test-like folders under tests/onnx/vision/ (one model computing every
 * case side by side, its inputs, the expected outputs) written by tests/onnx/vision/gen.py from
 * PyTorch 1.13's conv / pool / interpolate in float64 (committed; the inputs of the
 * convolutions are small integers, so their sums are exact in float32). The folders run through
 * kc_onnx_check_dir (every output's values compared, rtol 1e-3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tests/harness.h"
#include "tools/check/check.h"

#include <stdio.h>
#include <string.h>

static char cases[1024]; /* tests/onnx/vision */

/* the cases, merged into two models (one JIT compile each; tests/onnx/vision/gen.py) */
static const char *const names[] = {"conv_pool", "resize"};

static void t_cases(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  assert_non_null(ctx);
  int failed = 0;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char dir[2048], msg[1024] = "";
    snprintf(dir, sizeof dir, "%s/%s", cases, names[i]);
    kc_check_result r = kc_onnx_check_dir(ctx, dir, msg, sizeof msg);
    if (r != KC_CHECK_PASS) {
      fprintf(stderr, "%s: %s\n", names[i], msg);
      failed++;
    }
  }
  kc_context_free(ctx);
  assert_int_equal(failed, 0);
}

/* Convolutions lower onto matmul (the packed core), windows onto one gather: no op of their own. */
static void t_conv_is_matmul(void **st) {
  (void)st;
  kc_context *ctx = kc_context_new();
  assert_non_null(ctx);
  char path[2048];
  snprintf(path, sizeof path, "%s/conv_pool/model.onnx", cases);
  kc_graph *g = NULL;
  assert_int_equal(kc_onnx_load(ctx, path, &g), KC_OK);
  /* 10 convolutions (2 transposed) and 3 pools: a matmul per convolution and a gather (the
   * im2col) each, except the 2 whose windows tile the input (stride = kernel, no padding: a
   * reshape + transpose im2col and a gemm by the weights) */
  int matmuls = 0, gemms = 0, gathers = 0;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_op op = g->nodes[i].op;
    matmuls += op == KC_OP_MATMUL;
    gemms += op == KC_OP_GEMM;
    gathers += op == KC_OP_GATHER;
  }
  assert_int_equal(matmuls, 8);
  assert_int_equal(gemms, 2);
  assert_int_equal(gathers, 11);
  /* conv2d_group2's output keeps ONNX's shape: [2, 6, 6, 4] (pads 1 on H only) */
  const kc_value *y = kc_value_of(g, kc_graph_output(g, 2));
  int64_t d;
  assert_int_equal(y->rank, 4);
  const int64_t want[4] = {2, 6, 6, 4};
  for (int i = 0; i < 4; i++) {
    assert_true(kc_dim_const(g, y->dims[i], &d));
    assert_int_equal(d, want[i]);
  }
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_cpu_conv KERNC_PROGRAM TESTS_DIR\n");
    return 2;
  }
  snprintf(cases, sizeof cases, "%s/onnx/vision", argv[2]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_cases),
      cmocka_unit_test(t_conv_is_matmul),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
