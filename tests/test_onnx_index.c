/*
 * tests/test_onnx_index.c - TopK by value, and the index compositions' errors (GatherElements,
 * ScatterElements, ScatterND: frontend/onnx_reduce_index.c). Run as: test_onnx_index
 * KERNC_PROGRAM TESTS_DIR.
 *
 * TopK: tests/onnx/topk/cases (written by its gen.py from onnx's reference implementation, ONNX
 * Runtime agreeing where there is no nan) holds rows of 1000+ elements with k = 1 and k = n,
 * heavy ties, -0.0 against +0.0, nan, a middle axis, k = 0, integer data and a run-time k; run
 * through kc_onnx_check_dir (indices exactly, values to rtol 1e-3).
 * Index errors: the folders of tests/onnx/index_errors (gen.py, expected outputs from ONNX Runtime)
 * pass by value with negative indices within range; run again with one index out of range, the
 * error must name the ONNX node, the user's index value, its position in the user's index tensor
 * and the data axis with its size (not an offset into flattened data).
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

static char tests_dir[1024];

static int check_dir(const char *sub) {
  kc_context *ctx = kc_context_new();
  assert_non_null(ctx);
  char dir[2048], msg[1024] = "";
  snprintf(dir, sizeof dir, "%s/onnx/%s", tests_dir, sub);
  kc_check_result r = kc_onnx_check_dir(ctx, dir, msg, sizeof msg);
  if (r != KC_CHECK_PASS) fprintf(stderr, "%s: %s\n", sub, msg);
  kc_context_free(ctx);
  return r == KC_CHECK_PASS ? 0 : 1;
}

static void t_topk_cases(void **st) {
  (void)st;
  assert_int_equal(check_dir("topk/cases"), 0);
}

static void t_index_values(void **st) {
  (void)st;
  int failed = check_dir("index_errors/gather_elements") +
               check_dir("index_errors/scatter_elements") + check_dir("index_errors/scatter_nd") +
               check_dir("index_errors/gather_nd");
  assert_int_equal(failed, 0);
}

/* Run model tests/onnx/index_errors/NAME with inputs in; the run must fail with an error holding
 * every string of want. */
static void expect_error(const char *name, const kc_tensor_desc *in, int nin,
                         const char *const *want, int nwant) {
  kc_context *ctx = kc_context_new();
  assert_non_null(ctx);
  char path[2048];
  snprintf(path, sizeof path, "%s/onnx/index_errors/%s/model.onnx", tests_dir, name);
  kc_graph *g = NULL;
  kc_module *m = NULL;
  assert_int_equal(kc_onnx_load(ctx, path, &g), KC_OK);
  kc_compile_options o = {.target = "cpu"};
  assert_int_equal(kc_compile(ctx, g, &o, &m), KC_OK);
  kc_tensor_desc y;
  kc_status s = kc_run(m, in, nin, &y, 1);
  const char *err = kc_last_error(ctx);
  if (s == KC_OK) fail_msg("%s: ran without an error", name);
  for (int i = 0; i < nwant; i++)
    if (!strstr(err, want[i])) fail_msg("%s: error \"%s\" lacks \"%s\"", name, err, want[i]);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void t_gather_elements_error(void **st) {
  (void)st;
  float data[12] = {0};
  int64_t ind[15] = {0, -1, 3, -4, 2, 1, 1, 4, 0, 3, -3, 2, 0, 1, -1}; /* 4 at [1, 2] */
  kc_tensor_desc in[2] = {
      {.name = "data", .dtype = KC_F32, .rank = 2, .dims = {3, 4}, .data = data},
      {.name = "indices", .dtype = KC_I64, .rank = 2, .dims = {3, 5}, .data = ind}};
  expect_error("gather_elements", in, 2,
               (const char *const[]){"'ge'", "index 4 at position 7", "axis 1 of size 4"}, 3);
  ind[7] = 2;
  ind[14] = -5;
  expect_error("gather_elements", in, 2,
               (const char *const[]){"'ge'", "index -5 at position 14", "axis 1 of size 4"}, 3);
}

static void t_scatter_elements_error(void **st) {
  (void)st;
  float data[12] = {0}, upd[6] = {0};
  int32_t ind[6] = {-1, 0, 2, 1, -5, -1}; /* -5 at [1, 1], axis 0 of size 4 */
  kc_tensor_desc in[3] = {
      {.name = "data", .dtype = KC_F32, .rank = 2, .dims = {4, 3}, .data = data},
      {.name = "indices", .dtype = KC_I32, .rank = 2, .dims = {2, 3}, .data = ind},
      {.name = "updates", .dtype = KC_F32, .rank = 2, .dims = {2, 3}, .data = upd}};
  expect_error("scatter_elements", in, 3,
               (const char *const[]){"'se'", "index -5 at position 4", "axis 0 of size 4"}, 3);
}

static void t_scatter_nd_error(void **st) {
  (void)st;
  float data[40] = {0}, upd[6] = {0};
  int64_t ind[6] = {0, -1, -4, 5, 3, -5}; /* tuple 1's second component: axis 1 of size 5 */
  kc_tensor_desc in[3] = {
      {.name = "data", .dtype = KC_F32, .rank = 3, .dims = {4, 5, 2}, .data = data},
      {.name = "indices", .dtype = KC_I64, .rank = 2, .dims = {3, 2}, .data = ind},
      {.name = "updates", .dtype = KC_F32, .rank = 2, .dims = {3, 2}, .data = upd}};
  expect_error("scatter_nd", in, 3,
               (const char *const[]){"'snd'", "index 5 at position 3", "axis 1 of size 5"}, 3);
  ind[3] = 2;
  ind[4] = 4; /* first component: axis 0 of size 4 */
  expect_error("scatter_nd", in, 3,
               (const char *const[]){"'snd'", "index 4 at position 4", "axis 0 of size 4"}, 3);
}

/* GatherND's import computes flat offsets from the run's sizes: an index past its axis is an
 * error naming the node (its message gives the flat offset, not the user's index). */
static void t_gather_nd_error(void **st) {
  (void)st;
  float data[30] = {0};
  int64_t ind[8] = {0, 4, -1, 2, 1, -5, 5, 0}; /* 5 at [1, 2], axis 1 of size 5 */
  kc_tensor_desc in[2] = {
      {.name = "data", .dtype = KC_F32, .rank = 3, .dims = {2, 5, 3}, .data = data},
      {.name = "indices", .dtype = KC_I64, .rank = 3, .dims = {2, 4, 1}, .data = ind}};
  expect_error("gather_nd", in, 2, (const char *const[]){"'gnd'", "out of range"}, 2);
  ind[6] = -6;
  expect_error("gather_nd", in, 2, (const char *const[]){"'gnd'", "out of range"}, 2);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: test_onnx_index KERNC_PROGRAM TESTS_DIR\n");
    return 2;
  }
  snprintf(tests_dir, sizeof tests_dir, "%s", argv[2]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_topk_cases),
      cmocka_unit_test(t_index_values),
      cmocka_unit_test(t_gather_elements_error),
      cmocka_unit_test(t_scatter_elements_error),
      cmocka_unit_test(t_scatter_nd_error),
      cmocka_unit_test(t_gather_nd_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
