/*
 * tests/install/consumer.c - a program of kernc's users, built against an installed copy only
 * (tests/install/run.sh builds it once with find_package(kernc) and once with pkg-config): the
 * version macros and kc_version agree, a graph built with the builder API JITs and gives values
 * worked out by hand, and an ONNX model JITs and matches ONNX Runtime's outputs.
 *
 * Usage: consumer DIR, where DIR holds mlp.onnx, x.bin (float32 [3,4]) and want.bin (float32
 * [3,5], ONNX Runtime's output), written by run.sh.
 */
#include <kernc.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const char *dir;

static void read_floats(const char *name, float *out, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fread(out, sizeof *out, n, f), n);
  fclose(f);
}

static void t_version(void **state) {
  (void)state;
  char want[64];
  snprintf(want, sizeof want, "%d.%d.%d", KC_VERSION_MAJOR, KC_VERSION_MINOR, KC_VERSION_PATCH);
  assert_string_equal(kc_version(), want);
  assert_int_equal(kc_version_number(), KC_VERSION);
}

/* y = relu(x @ w + b) with x [2,3], w [3,2]: the numbers below are worked out by hand */
static void t_builder_jit(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "tiny");
  static const float w[6] = {1, -1, 2, 0, -1, 3}, b[2] = {0.5f, -4};
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){kc_sym(g, "B"), 3});
  kc_val mm = kc_matmul(g, x, kc_weight(g, "w", KC_F32, 2, (int64_t[]){3, 2}, w));
  kc_val y = kc_relu(g, kc_add(g, mm, kc_weight(g, "b", KC_F32, 1, (int64_t[]){2}, b)));
  kc_output(g, y, "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_module *m = NULL;
  kc_compile_options o = {.target = "cpu", .threads = 1};
  assert_int_equal(kc_compile(ctx, g, &o, &m), KC_OK);
  float xs[6] = {1, 2, 3, -1, 0, 1};
  /* row 0: [1-0+(-3)... ] = [1*1+2*2+3*-1, 1*-1+2*0+3*3] = [2, 8] + b = [2.5, 4]
   * row 1: [-1+0-1, 1+0+3] = [-2, 4] + b = [-1.5, 0] -> relu [0, 0] */
  const float want[4] = {2.5f, 4.0f, 0.0f, 0.0f};
  kc_tensor_desc in = {.name = "x", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = xs};
  kc_tensor_desc out = {0};
  assert_int_equal(kc_run(m, &in, 1, &out, 1), KC_OK);
  assert_int_equal(out.rank, 2);
  assert_int_equal(out.dims[0], 2);
  assert_int_equal(out.dims[1], 2);
  for (int i = 0; i < 4; i++)
    assert_float_equal(((float *)out.data)[i], want[i], 1e-6);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void t_onnx_jit(void **state) {
  (void)state;
  char path[4096];
  snprintf(path, sizeof path, "%s/mlp.onnx", dir);
  kc_context *ctx = kc_context_new();
  kc_graph *g = NULL;
  assert_int_equal(kc_onnx_load(ctx, path, &g), KC_OK);
  kc_module *m = NULL;
  assert_int_equal(kc_compile(ctx, g, &(kc_compile_options){.threads = 2}, &m), KC_OK);
  float x[12], want[15];
  read_floats("x.bin", x, 12);
  read_floats("want.bin", want, 15);
  kc_tensor_desc in = {.name = "x", .dtype = KC_F32, .rank = 2, .dims = {3, 4}, .data = x};
  kc_tensor_desc out = {0};
  kc_status s = kc_run(m, &in, 1, &out, 1);
  if (s != KC_OK) fail_msg("kc_run: %s", kc_last_error(ctx));
  assert_int_equal(out.dims[0], 3);
  assert_int_equal(out.dims[1], 5);
  for (int i = 0; i < 15; i++)
    assert_true(fabsf(((float *)out.data)[i] - want[i]) <= 1e-5f + 1e-5f * fabsf(want[i]));
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_version),
      cmocka_unit_test(t_builder_jit),
      cmocka_unit_test(t_onnx_jit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
