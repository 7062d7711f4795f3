/*
 * tests/test_lower.c - graph lowering (codegen/cpu/lower.c): one module per graph, one kernel
 * per node with the dims layout of codegen.h, driven through the harness tests share
 * (tests/harness.h):
 *
 *   kc_graph *g = ...builder calls...;        // inputs only, or whatever families exist
 *   th_lowered l;                             // kc_cpu_new + kc_cpu_compile_graph:
 *   th_lower_graph(&l, ctx, g);               // fails the test when lowering fails
 *   void *bufs[] = {in0, ..., out0, ...};     // inputs then outputs (absent inputs: NULL)
 *   int64_t dims[] = {...};                   // their concrete dims back to back
 *   th_run_node(&l, node_index, bufs, dims);  // every work unit, one thread
 *   th_lowered_free(&l);
 *
 * Checked here: a transpose kernel run directly (static and symbolic dims), the layout of dims
 * (absent optional inputs contribute none), NOP nodes getting no kernel, and an emitter's error
 * stopping lowering with a message that names the node.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codegen/codegen.h"
#include "ir/internal.h"
#include "tests/harness.h"

#include <stdlib.h>
#include <string.h>

/* ---- tests --------------------------------------------------------------------------------- */

static void test_transpose_static(void **state) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "t");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){2, 3});
  kc_output(g, kc_transpose(g, x, 0, NULL), "y");
  th_lowered l;
  th_lower_graph(&l, ctx, g);
  float xs[6] = {1, 2, 3, 4, 5, 6}, ys[6] = {0};
  th_run_node(&l, 0, (void *[]){xs, ys}, (int64_t[]){2, 3, 3, 2});
  float want[6] = {1, 4, 2, 5, 3, 6};
  assert_memory_equal(ys, want, sizeof want);
  th_lowered_free(&l);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Symbolic dims are read from the dims array at the offsets of codegen.h's layout. */
static void test_transpose_symbolic(void **state) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "t");
  kc_val x = kc_input(g, "x", KC_I32, 3, (kc_dim[]){kc_sym(g, "B"), 2, kc_sym(g, "S")});
  kc_output(g, kc_transpose(g, x, 3, (int64_t[]){2, 0, 1}), "y");
  th_lowered l;
  th_lower_graph(&l, ctx, g);
  enum { B = 3, S = 4 };
  int32_t xs[B][2][S], ys[S][B][2];
  for (int b = 0; b < B; b++)
    for (int i = 0; i < 2; i++)
      for (int s = 0; s < S; s++)
        xs[b][i][s] = b * 100 + i * 10 + s;
  memset(ys, 0xff, sizeof ys);
  th_run_node(&l, 0, (void *[]){xs, ys}, (int64_t[]){B, 2, S, S, B, 2});
  for (int s = 0; s < S; s++)
    for (int b = 0; b < B; b++)
      for (int i = 0; i < 2; i++)
        assert_int_equal(ys[s][b][i], xs[b][i][s]);
  th_lowered_free(&l);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Two nodes in one module; a NOP node (deleted) gets no kernel and no symbol. */
static void test_module_and_nop(void **state) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "t");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){2, 3});
  kc_val t = kc_transpose(g, x, 0, NULL);
  kc_val dead = kc_transpose(g, x, 0, NULL);
  kc_output(g, kc_transpose(g, t, 0, NULL), "y");
  g->nodes[kc_value_of(g, dead)->def - 1].op = KC_OP_NOP;
  th_lowered l;
  th_lower_graph(&l, ctx, g);
  assert_false(l.k[0].no_kernel);
  assert_true(l.k[1].no_kernel);
  assert_null(l.k[1].fn);
  assert_false(l.k[2].no_kernel);
  float xs[6] = {1, 2, 3, 4, 5, 6}, ts[6], ys[6];
  th_run_node(&l, 0, (void *[]){xs, ts}, (int64_t[]){2, 3, 3, 2});
  th_run_node(&l, 2, (void *[]){ts, ys}, (int64_t[]){3, 2, 2, 3});
  assert_memory_equal(xs, ys, sizeof xs);
  th_lowered_free(&l);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* An untyped operand stops lowering before any emitter runs, naming the node. */
static void test_error_names_node(void **state) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "t");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){2, 3});
  kc_val y = kc_transpose(g, x, 0, NULL);
  kc_output(g, y, "y");
  g->nodes[0].loc = "the_transpose";
  kc_value_of(g, y)->rank = -1;
  kc_cpu *cpu;
  assert_int_equal(kc_cpu_new(ctx, &cpu), KC_OK);
  kc_cpu_kernel k[1];
  assert_int_not_equal(kc_cpu_compile_graph(cpu, g, k), KC_OK);
  assert_non_null(strstr(kc_last_error(ctx), "the_transpose"));
  kc_cpu_free(cpu);
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transpose_static),
      cmocka_unit_test(test_transpose_symbolic),
      cmocka_unit_test(test_module_and_nop),
      cmocka_unit_test(test_error_names_node),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
