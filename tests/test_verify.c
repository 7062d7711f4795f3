/*
 * tests/test_verify.c - the verifier: graphs broken on purpose, built through ir/internal.h, must
 * fail with the right status and a message naming the node; malformed graphs (ids out of range,
 * NULL arrays, bad op codes) must not crash it; every tests/kir/invalid/verify-*.kir must parse
 * and then fail verification with its `# expect:` text. Also covers kc_graph_dot on the same
 * graphs (it must not crash either). Sizes past int64: the verify-overflow-*.kir files, and the
 * ONNX models tests/onnx/{reshape,expand}_overflow.onnx (Reshape to [2^62, 2^62], Expand to
 * [2^32]^3) refused at import naming the node, where they used to fail only at run time.
 * argv[2] is the tests/ folder (given by tests/CMakeLists.txt).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fixture {
  kc_context *ctx;
  kc_graph *g;
  kc_val x; /* input f32[2,3] */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->ctx = kc_context_new();
  f->g = kc_graph_new(f->ctx, "g");
  kc_dim d[2] = {2, 3};
  f->x = kc_graph_add_input(f->g, "x", KC_F32, 2, d);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  kc_graph_free(f->g);
  kc_context_free(f->ctx);
  free(f);
  return 0;
}

/* Give v the type dt[2,3]. */
static void type23(kc_graph *g, kc_val v, kc_dtype dt) {
  kc_value *val = kc_value_of(g, v);
  val->dtype = dt;
  val->rank = 2;
  val->dims[0] = 2;
  val->dims[1] = 3;
}

/* A node op(in...) with one result typed f32[2,3]; returns the node index. */
static uint32_t node1(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, kc_val *out) {
  kc_val o;
  uint32_t ni = kc_graph_add_node(g, op, nin, in, 1, &o);
  type23(g, o, KC_F32);
  if (out) *out = o;
  return ni;
}

/* Verify g and check status and that the message holds want. */
static void expect_fail(kc_graph *g, kc_status want_status, const char *want) {
  kc_clear_error(g->ctx);
  kc_status s = kc_graph_verify(g);
  const char *msg = kc_last_error(g->ctx);
  if (s != want_status || !strstr(msg, want))
    fail_msg("verify gave %s \"%s\"; wanted %s with \"%s\"", kc_status_str(s), msg,
             kc_status_str(want_status), want);
  /* the dot writer must cope with whatever the verifier rejects */
  FILE *devnull = fopen("/dev/null", "w");
  kc_graph_dot(g, devnull);
  fclose(devnull);
}

static void t_valid(void **state) {
  fixture *f = *state;
  kc_val r, n;
  node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  kc_val in[2] = {r, f->x};
  node1(f->g, KC_OP_ADD, 2, in, &n);
  kc_output(f->g, n, "y");
  kc_status s = kc_graph_verify(f->g);
  assert_int_equal(s, KC_OK);
  /* verifying leaves the recorded types alone */
  assert_int_equal(kc_value_of(f->g, n)->rank, 2);
  assert_int_equal(kc_value_of(f->g, n)->dims[1], 3);
}

static void t_use_before_def(void **state) {
  fixture *f = *state;
  kc_val later = kc_graph_new_value(f->g), r;
  kc_val in[2] = {f->x, later};
  node1(f->g, KC_OP_ADD, 2, in, &r);
  kc_graph_add_node_with_outputs(f->g, KC_OP_RELU, 1, &f->x, 1, &later);
  type23(f->g, later, KC_F32);
  kc_output(f->g, r, NULL);
  char want[64];
  snprintf(want, sizeof want, "uses %%%u before its definition", later.id);
  expect_fail(f->g, KC_ERR_VERIFY, want);
  assert_non_null(strstr(kc_last_error(f->ctx), "(add)"));
}

static void t_never_defined(void **state) {
  fixture *f = *state;
  kc_val ghost = kc_graph_new_value(f->g), r;
  node1(f->g, KC_OP_RELU, 1, &ghost, &r);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "which is never defined");
}

static void t_self_cycle(void **state) {
  fixture *f = *state;
  kc_val v = kc_graph_new_value(f->g);
  kc_graph_add_node_with_outputs(f->g, KC_OP_RELU, 1, &v, 1, &v);
  type23(f->g, v, KC_F32);
  kc_output(f->g, v, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "cycle: input 0 reads its own result");
}

static void t_cycle(void **state) {
  fixture *f = *state;
  kc_val b = kc_graph_new_value(f->g), a;
  kc_val in[2] = {f->x, b};
  node1(f->g, KC_OP_ADD, 2, in, &a);
  kc_graph_add_node_with_outputs(f->g, KC_OP_NEG, 1, &a, 1, &b);
  type23(f->g, b, KC_F32);
  kc_output(f->g, b, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "which depends on this node");
}

static void t_arity(void **state) {
  fixture *f = *state;
  kc_val r;
  node1(f->g, KC_OP_ADD, 1, &f->x, &r);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "takes 2 input(s), has 1");
}

static void t_arity_variadic(void **state) {
  fixture *f = *state;
  kc_val r;
  node1(f->g, KC_OP_CONCAT, 0, NULL, &r);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "takes at least 1 input(s), has 0");
}

static void t_arity_results(void **state) {
  fixture *f = *state;
  kc_val o[2];
  kc_graph_add_node(f->g, KC_OP_RELU, 1, &f->x, 2, o);
  type23(f->g, o[0], KC_F32);
  type23(f->g, o[1], KC_F32);
  kc_output(f->g, o[0], NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "gives 1 result(s), has 2");
}

static void t_missing_required_input(void **state) {
  fixture *f = *state;
  kc_val in[2] = {f->x, {0}}, r;
  node1(f->g, KC_OP_MUL, 2, in, &r);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "required input 1 is missing");
}

static void t_duplicate(void **state) {
  fixture *f = *state;
  kc_val r;
  node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  kc_graph_add_node_with_outputs(f->g, KC_OP_NEG, 1, &f->x, 1, &r);
  kc_output(f->g, r, NULL);
  char want[64];
  snprintf(want, sizeof want, "%%%u is defined more than once", r.id);
  expect_fail(f->g, KC_ERR_VERIFY, want);
}

static void t_redefines_input(void **state) {
  fixture *f = *state;
  kc_graph_add_node_with_outputs(f->g, KC_OP_RELU, 1, &f->x, 1, &f->x);
  kc_output(f->g, f->x, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "defined more than once (also a graph input)");
}

static void t_dangling_result(void **state) {
  fixture *f = *state;
  kc_val r;
  uint32_t ni = node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  kc_output(f->g, r, NULL);
  f->g->nodes[ni].out[0].id = 9999;
  expect_fail(f->g, KC_ERR_VERIFY, "%9999, which does not exist");
}

static void t_dangling_def(void **state) {
  fixture *f = *state;
  kc_val r, q;
  node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  node1(f->g, KC_OP_NEG, 1, &r, &q);
  kc_output(f->g, q, NULL);
  kc_value_of(f->g, r)->def = 2; /* claims the neg node */
  expect_fail(f->g, KC_ERR_VERIFY, "dangling def");
}

static void t_dangling_input_def(void **state) {
  fixture *f = *state;
  kc_val r;
  node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  kc_output(f->g, r, NULL);
  kc_value_of(f->g, f->x)->def = 1; /* claims the relu node */
  expect_fail(f->g, KC_ERR_VERIFY, "dangling def: input %1");
}

static void t_output_undefined(void **state) {
  fixture *f = *state;
  kc_val r;
  node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  kc_val ghost = kc_graph_new_value(f->g);
  kc_output(f->g, ghost, NULL);
  char want[64];
  snprintf(want, sizeof want, "output 0 (%%%u) is never defined", ghost.id);
  expect_fail(f->g, KC_ERR_VERIFY, want);
}

static void t_no_outputs(void **state) {
  fixture *f = *state;
  node1(f->g, KC_OP_RELU, 1, &f->x, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "has no outputs");
}

static void t_unknown_attr(void **state) {
  fixture *f = *state;
  kc_val r;
  uint32_t ni = node1(f->g, KC_OP_SOFTMAX, 1, &f->x, &r);
  kc_node_set_int(f->g, ni, "axes", 1);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "unknown attribute 'axes' (known: axis)");
}

static void t_missing_attr(void **state) {
  fixture *f = *state;
  kc_val r, in[2] = {f->x, f->x};
  node1(f->g, KC_OP_CONCAT, 2, in, &r);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "missing required attribute 'axis'");
}

static void t_attr_kind(void **state) {
  fixture *f = *state;
  kc_val r;
  uint32_t ni = node1(f->g, KC_OP_SOFTMAX, 1, &f->x, &r);
  kc_node_set_string(f->g, ni, "axis", "last");
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_TYPE, "attribute 'axis' must be an int, not a string");
}

static void t_attr_int_for_float(void **state) {
  fixture *f = *state;
  kc_val r, in[2] = {f->x, f->x};
  uint32_t ni = node1(f->g, KC_OP_RMS_NORM, 2, in, &r);
  kc_node_set_int(f->g, ni, "eps", 1);
  kc_output(f->g, r, NULL);
  kc_clear_error(f->ctx);
  kc_graph_verify(f->g);
  /* whatever the shape function says, the int is acceptable for the float attribute */
  assert_null(strstr(kc_last_error(f->ctx), "attribute"));
}

static void t_attr_bad_tensor(void **state) {
  fixture *f = *state;
  kc_val r;
  uint32_t ni = node1(f->g, KC_OP_CONSTANT, 0, NULL, &r);
  kc_node_set_tensor(f->g, ni, "value", 42);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "refers to tensor 42");
}

static void t_untyped_weight(void **state) {
  fixture *f = *state;
  kc_val w;
  uint32_t ni = kc_graph_add_node(f->g, KC_OP_WEIGHT, 0, NULL, 1, &w);
  kc_node_set_string(f->g, ni, "name", "w");
  kc_output(f->g, w, NULL);
  expect_fail(f->g, KC_ERR_TYPE, "source %");
}

static void t_dtype_mismatch(void **state) {
  fixture *f = *state;
  kc_val r;
  node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  type23(f->g, r, KC_I32);
  kc_output(f->g, r, NULL);
  char want[80];
  snprintf(want, sizeof want, "result %%%u: printed i32[2,3] but inferred f32[2,3]", r.id);
  expect_fail(f->g, KC_ERR_TYPE, want);
}

static void t_shape_mismatch(void **state) {
  fixture *f = *state;
  kc_dim d[2] = {kc_sym(f->g, "B"), 768};
  kc_val x = kc_graph_add_input(f->g, "h", KC_F32, 2, d);
  kc_val r;
  kc_graph_add_node(f->g, KC_OP_TANH, 1, &x, 1, &r);
  kc_value *v = kc_value_of(f->g, r);
  v->dtype = KC_F32;
  v->rank = 2;
  v->dims[0] = d[0];
  v->dims[1] = 384;
  kc_output(f->g, r, NULL);
  char want[80];
  snprintf(want, sizeof want, "result %%%u: printed f32[B,384] but inferred f32[B,768]", r.id);
  expect_fail(f->g, KC_ERR_SHAPE, want);
}

static void t_malformed(void **state) {
  fixture *f = *state;
  kc_val r;
  uint32_t ni = node1(f->g, KC_OP_RELU, 1, &f->x, &r);
  kc_output(f->g, r, NULL);
  kc_node *n = &f->g->nodes[ni];

  n->op = (kc_op)9999;
  expect_fail(f->g, KC_ERR_VERIFY, "invalid op code 9999");
  n->op = KC_OP_RELU;

  n->in[0].id = 12345;
  expect_fail(f->g, KC_ERR_VERIFY, "%12345, which does not exist");
  n->in[0] = f->x;

  kc_val *in = n->in;
  n->in = NULL;
  expect_fail(f->g, KC_ERR_VERIFY, "missing operand or attribute array");
  n->in = in;

  n->nattr = 1; /* attrs still NULL */
  expect_fail(f->g, KC_ERR_VERIFY, "missing operand or attribute array");
  n->nattr = 0;

  f->g->inputs[0].id = 777;
  expect_fail(f->g, KC_ERR_VERIFY, "input 0 refers to %777");
  f->g->inputs[0] = f->x;

  f->g->outputs[0].v.id = 0;
  expect_fail(f->g, KC_ERR_VERIFY, "output 0 is %0");
  f->g->outputs[0].v = r;

  assert_int_equal(kc_graph_verify(NULL), KC_ERR_INVALID_ARG);
}

/* fused(x, x) whose body takes two inputs of type btype. */
static kc_graph *fused_graph(fixture *f, kc_dtype btype) {
  kc_val in[2] = {f->x, f->x}, r;
  uint32_t ni = node1(f->g, KC_OP_FUSED, 2, in, &r);
  kc_graph *b = kc_graph_new_body(f->g, "fused0");
  kc_dim d[2] = {2, 3};
  kc_val a = kc_graph_add_input(b, NULL, btype, 2, d);
  kc_val c = kc_graph_add_input(b, NULL, btype, 2, d);
  kc_val bin[2] = {a, c}, s;
  kc_graph_add_node(b, KC_OP_ADD, 2, bin, 1, &s);
  type23(b, s, btype);
  kc_output(b, s, NULL);
  f->g->nodes[ni].body = b;
  kc_output(f->g, r, NULL);
  return b;
}

static void t_fused_input_type(void **state) {
  fixture *f = *state;
  fused_graph(f, KC_F16);
  expect_fail(f->g, KC_ERR_TYPE, "is f32[2,3] but the body takes f16[2,3]");
}

static void t_fused_broken_body(void **state) {
  fixture *f = *state;
  kc_graph *b = fused_graph(f, KC_F32);
  b->outputs[0].v = kc_graph_new_value(b);
  expect_fail(f->g, KC_ERR_VERIFY, "in body: graph @fused0: output 0");
}

static void t_fused_without_body(void **state) {
  fixture *f = *state;
  kc_val in[2] = {f->x, f->x}, r;
  node1(f->g, KC_OP_FUSED, 2, in, &r);
  kc_output(f->g, r, NULL);
  expect_fail(f->g, KC_ERR_VERIFY, "has no body graph");
}

/* Dims no tensor can have, made through the API (the text reader refuses them itself; see
 * tests/kir/invalid/parse-dim-*.kir): a negative size, a division by 0, a product past int64. */
static void t_bad_dims(void **state) {
  fixture *f = *state;
  kc_graph *g = f->g;
  kc_dim b = kc_sym(g, "B");
  kc_dim neg[2] = {2, kc_dim_int(g, -3)};
  kc_val x = kc_graph_add_input(g, "neg", KC_F32, 2, neg);
  kc_output(g, x, "y");
  expect_fail(g, KC_ERR_SHAPE, "input %2 is f32[2,-3]: dim 1 is negative");
  kc_value_of(g, x)->dims[1] = kc_dim_div(g, b, 0);
  expect_fail(g, KC_ERR_SHAPE, "input %2 is f32[2,B/0]: dim 1 divides by zero");
  kc_value_of(g, x)->dims[1] = kc_dim_mod(g, b, 0);
  expect_fail(g, KC_ERR_SHAPE, "dim 1 divides by zero");
  /* 2^62 * B * 4: past int64 for every B >= 1 (raw: the coefficient overflows) */
  kc_dim big = kc_dim_mul(g, kc_dim_mul(g, (kc_dim)1 << 62, b), 4);
  kc_value_of(g, x)->dims[1] = big;
  expect_fail(g, KC_ERR_SHAPE, "dim 1 overflows int64");
  /* a result: relu of a good input recorded with a negative dim */
  kc_value_of(g, x)->dims[1] = 3;
  kc_val r;
  node1(g, KC_OP_RELU, 1, &x, &r);
  kc_value_of(g, r)->dims[1] = kc_dim_int(g, -1);
  kc_output(g, r, "z");
  expect_fail(g, KC_ERR_SHAPE, "is f32[2,-1]: dim 1 is negative");
}

/* ---- the .kir files ------------------------------------------------------------------------ */

static void t_kir_files(void **state) {
  const char *tests = *state;
  int n;
  char **files = th_kir_files(tests, "invalid", "verify-", &n);
  if (n < 8) fail_msg("only %d verify-*.kir files in %s/kir/invalid", n, tests);
  for (int i = 0; i < n; i++) {
    const char *path = files[i];
    char want[512];
    if (!th_read_expect(path, want, sizeof want)) fail_msg("%s: no '# expect: ' first line", path);
    kc_context *ctx = kc_context_new();
    kc_graph *g = NULL;
    kc_status s = kc_graph_parse_file(ctx, path, &g);
    if (s != KC_OK) fail_msg("%s: should parse, got: %s", path, kc_last_error(ctx));
    s = kc_graph_verify(g);
    if (s == KC_OK) fail_msg("%s: verified, expected \"%s\"", path, want);
    if (!strstr(kc_last_error(ctx), want))
      fail_msg("%s: message \"%s\" lacks \"%s\"", path, kc_last_error(ctx), want);
    if (!strstr(kc_last_error(ctx), "node ") && !strstr(kc_last_error(ctx), "graph @"))
      fail_msg("%s: message \"%s\" names no node", path, kc_last_error(ctx));
    kc_graph_free(g);
    kc_context_free(ctx);
  }
  th_free_list(files, n);
}

/* ---- sizes past int64 in ONNX models ----------------------------------------------------- */

static void t_onnx_overflow(void **state) {
  const char *tests = *state;
  static const char *const models[][2] = {
      {"reshape_overflow.onnx", "node 'huge_reshape'"},
      {"expand_overflow.onnx", "node 'huge_expand'"},
  };
  for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/onnx/%s", tests, models[i][0]);
    kc_context *ctx = kc_context_new();
    kc_graph *g = NULL;
    kc_status s = kc_onnx_load(ctx, path, &g);
    const char *msg = kc_last_error(ctx);
    print_message("%s: %s\n", models[i][0], msg);
    assert_int_equal(s, KC_ERR_SHAPE);
    assert_null(g);
    if (!strstr(msg, models[i][1]) || !strstr(msg, "element count or byte size overflows int64"))
      fail_msg("%s: message \"%s\" lacks \"%s\" or the overflow", path, msg, models[i][1]);
    kc_context_free(ctx);
  }
}

int main(int argc, char **argv) {
  void *tests = argc > 2 ? argv[2] : (void *)"../../tests";
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest t[] = {
      T(t_valid),
      T(t_use_before_def),
      T(t_never_defined),
      T(t_self_cycle),
      T(t_cycle),
      T(t_arity),
      T(t_arity_variadic),
      T(t_arity_results),
      T(t_missing_required_input),
      T(t_duplicate),
      T(t_redefines_input),
      T(t_dangling_result),
      T(t_dangling_def),
      T(t_dangling_input_def),
      T(t_output_undefined),
      T(t_no_outputs),
      T(t_unknown_attr),
      T(t_missing_attr),
      T(t_attr_kind),
      T(t_attr_int_for_float),
      T(t_attr_bad_tensor),
      T(t_untyped_weight),
      T(t_dtype_mismatch),
      T(t_shape_mismatch),
      T(t_malformed),
      T(t_fused_input_type),
      T(t_fused_broken_body),
      T(t_fused_without_body),
      T(t_bad_dims),
      cmocka_unit_test_prestate(t_kir_files, tests),
      cmocka_unit_test_prestate(t_onnx_overflow, tests),
  };
#undef T
  return cmocka_run_group_tests(t, NULL, NULL);
}
