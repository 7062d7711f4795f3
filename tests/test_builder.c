/*
 * tests/test_builder.c - the C builder API (ir/builder.c).
 *
 * Builds a two-layer MLP and a LayerNorm graph (decomposed, and the fused kc_layer_norm), checks
 * the types of what comes out, then prints the graph, parses it back, checks the re-printed text
 * is identical and that both graphs verify. Also: attributes the builder sets, the sticky error,
 * sources (weights, constants, inputs) rejecting bad arguments, and values whose element count or
 * byte size overflows int64 refused by the call that makes them (and by the verifier).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "tests/harness.h"

#include <stdlib.h>
#include <string.h>

static kc_context *ctx; /* made in main, shared by every test */

/* A weight of zeros. */
static kc_val zeros(kc_graph *g, const char *name, int rank, const int64_t *dims) {
  size_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= (size_t)dims[i];
  float *data = calloc(n, sizeof *data);
  kc_val w = kc_weight(g, name, KC_F32, rank, dims, data);
  free(data);
  return w;
}

/* print -> parse -> print gives the same text, and both graphs verify. */
static void round_trip(kc_graph *g) {
  assert_int_equal(kc_graph_verify(g), KC_OK);
  char *text = kc_graph_print_str(g);
  assert_non_null(text);
  kc_graph *back = NULL;
  kc_status s = kc_graph_parse(ctx, text, "builder.kir", &back);
  if (s != KC_OK) fprintf(stderr, "%s\n--\n%s\n", text, kc_last_error(ctx));
  assert_int_equal(s, KC_OK);
  char *again = kc_graph_print_str(back);
  assert_non_null(again);
  assert_string_equal(again, text);
  assert_int_equal(kc_graph_verify(back), KC_OK);
  free(again);
  free(text);
  kc_graph_free(back);
}

static void t_mlp(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "mlp");
  kc_dim B = kc_sym(g, "B");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){B, 784});
  kc_val w1 = zeros(g, "fc1.weight", 2, (int64_t[]){784, 256});
  kc_val b1 = zeros(g, "fc1.bias", 1, (int64_t[]){256});
  kc_val w2 = zeros(g, "fc2.weight", 2, (int64_t[]){256, 10});
  kc_val b2 = zeros(g, "fc2.bias", 1, (int64_t[]){10});
  assert_string_equal(th_type_str(g, w1), "f32[784,256]");
  kc_val h = kc_relu(g, kc_add(g, kc_matmul(g, x, w1), b1));
  assert_string_equal(th_type_str(g, h), "f32[B,256]");
  kc_val logits = kc_add(g, kc_matmul(g, h, w2), b2);
  kc_val y = kc_softmax(g, logits, -1);
  kc_output(g, y, "probs");
  assert_int_equal(kc_graph_status(g), KC_OK);
  assert_string_equal(th_type_str(g, logits), "f32[B,10]");
  assert_string_equal(th_type_str(g, y), "f32[B,10]");
  assert_int_equal(kc_graph_num_outputs(g), 1);
  assert_string_equal(kc_graph_output_name(g, 0), "probs");
  /* the weight's data was copied into the graph */
  const kc_tensor *t = &g->tensors[0];
  assert_string_equal(t->name, "fc1.weight");
  assert_int_equal(t->nbytes, 784 * 256 * 4);
  assert_non_null(t->data);
  round_trip(g);
  kc_graph_free(g);
}

static kc_val layer_norm_decomposed(kc_graph *g, kc_val x, kc_val gamma, kc_val beta) {
  int64_t last[1] = {-1};
  kc_val mean = kc_reduce_mean(g, x, 1, last, 1);
  kc_val d = kc_sub(g, x, mean);
  kc_val var = kc_reduce_mean(g, kc_mul(g, d, d), 1, last, 1);
  kc_val sd = kc_sqrt(g, kc_add(g, var, kc_const_f32(g, 1e-5f)));
  return kc_add(g, kc_mul(g, kc_div(g, d, sd), gamma), beta);
}

static void t_layer_norm(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "layer_norm");
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){kc_sym(g, "B"), kc_sym(g, "S"), 768});
  kc_val gamma = zeros(g, "ln.gamma", 1, (int64_t[]){768});
  kc_val beta = zeros(g, "ln.beta", 1, (int64_t[]){768});
  kc_val y1 = layer_norm_decomposed(g, x, gamma, beta);
  kc_val y2 = kc_layer_norm(g, x, gamma, beta, 1e-5f);
  kc_val y3 = kc_layer_normalization(g, x, gamma, beta, -1, 1e-5f);
  kc_output(g, y1, "decomposed");
  kc_output(g, y2, "fused");
  kc_output(g, y3, "onnx");
  assert_int_equal(kc_graph_status(g), KC_OK);
  assert_string_equal(th_type_str(g, y1), "f32[B,S,768]");
  assert_string_equal(th_type_str(g, y2), "f32[B,S,768]");
  assert_string_equal(th_type_str(g, y3), "f32[B,S,768]");
  /* eps is stored as the double the float means, so it prints as 1e-05 */
  const kc_node *ln = &g->nodes[kc_value_of(g, y2)->def - 1];
  assert_int_equal(ln->op, KC_OP_LAYER_NORM);
  assert_true(kc_node_float(ln, "eps", 0) == 1e-5);
  round_trip(g);
  kc_graph_free(g);
}

/* Attributes set as ops.def names them, and only where the builder says. */
static void t_attributes(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "attrs");
  kc_dim B = kc_sym(g, "B"), S = kc_sym(g, "S");
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){B, S, 768});
  kc_val w = zeros(g, "w", 2, (int64_t[]){768, 768});
  kc_attention_desc d = {.heads = 12, .mask = KC_MASK_CAUSAL};
  kc_val a = kc_attention(g, x, x, x, (kc_val){0}, &d);
  const kc_node *n = &g->nodes[kc_value_of(g, a)->def - 1];
  assert_int_equal(n->nin, 3);
  assert_int_equal(kc_node_int(n, "heads", 0), 12);
  assert_null(kc_node_attr(n, "kv_heads"));
  assert_null(kc_node_attr(n, "scale"));
  assert_string_equal(kc_node_string(n, "mask", ""), "causal");
  kc_attention_desc d2 = {.heads = 12, .kv_heads = 12, .scale = 0.125f};
  n = &g->nodes[kc_value_of(g, kc_attention(g, x, x, x, (kc_val){0}, &d2))->def - 1];
  assert_int_equal(kc_node_int(n, "kv_heads", 0), 12);
  assert_true(kc_node_float(n, "scale", 0) == 0.125);
  assert_string_equal(kc_node_string(n, "mask", ""), "none");
  kc_val g1 = kc_gelu(g, x, 0), g2 = kc_gelu(g, x, 1);
  assert_null(kc_node_attr(&g->nodes[kc_value_of(g, g1)->def - 1], "approximate"));
  assert_string_equal(kc_node_string(&g->nodes[kc_value_of(g, g2)->def - 1], "approximate", ""),
                      "tanh");
  kc_val m = kc_matmul_ep(g, x, w, (kc_val){0}, x, KC_ACT_GELU_TANH);
  n = &g->nodes[kc_value_of(g, m)->def - 1];
  assert_string_equal(kc_node_string(n, "act", ""), "gelu_tanh");
  assert_int_equal(n->nin, 4);
  assert_int_equal(n->in[2].id, 0);
  kc_val parts[2];
  assert_int_equal(kc_split(g, x, -1, 2, NULL, parts), KC_OK);
  n = &g->nodes[kc_value_of(g, parts[0])->def - 1];
  assert_int_equal(kc_node_int(n, "num_outputs", 0), 2);
  assert_int_equal(n->nout, 2);
  assert_string_equal(th_type_str(g, parts[1]), "f32[B,S,384]");
  kc_val c = kc_cast(g, x, KC_F16);
  assert_string_equal(th_type_str(g, c), "f16[B,S,768]");
  kc_val t = kc_transpose(g, x, 3, (int64_t[]){1, 0, 2});
  assert_string_equal(th_type_str(g, t), "f32[S,B,768]");
  kc_val fill = kc_constant_of_shape(g, kc_shape(g, x), kc_const_f32(g, 1.0f));
  assert_string_equal(th_type_str(g, fill), "f32[B,S,768]");
  kc_val lo = kc_const_f32(g, -1.0f);
  assert_string_equal(th_type_str(g, kc_clip(g, x, lo, (kc_val){0})), "f32[B,S,768]");
  kc_output(g, a, NULL);
  kc_output(g, m, NULL);
  kc_output(g, t, NULL);
  assert_int_equal(kc_graph_status(g), KC_OK);
  round_trip(g);
  kc_graph_free(g);
}

static void t_sources(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "src");
  kc_val k = kc_const_i64s(g, 3, (int64_t[]){1, -1, 4});
  assert_string_equal(th_type_str(g, k), "i64[3]");
  uint32_t n;
  const kc_dim *kn = kc_value_known(g, k, &n);
  assert_non_null(kn);
  assert_int_equal(n, 3);
  int64_t v;
  assert_true(kc_dim_const(g, kn[1], &v));
  assert_int_equal(v, -1);
  assert_string_equal(th_type_str(g, kc_const_f32(g, 2.5f)), "f32[]");
  assert_string_equal(th_type_str(g, kc_const_i64(g, 7)), "i64[]");
  uint8_t bytes[6] = {0};
  assert_string_equal(th_type_str(g, kc_constant(g, KC_U8, 2, (int64_t[]){2, 3}, bytes)),
                      "u8[2,3]");
  assert_int_equal(kc_graph_status(g), KC_OK);
  /* a weight name used twice */
  assert_int_equal(zeros(g, "w", 1, (int64_t[]){4}).id != 0, 1);
  assert_int_equal(zeros(g, "w", 1, (int64_t[]){4}).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_INVALID_ARG);
  kc_graph_free(g);

  g = kc_graph_new(ctx, "src");
  assert_int_equal(kc_weight(g, "w", KC_F32, 1, (int64_t[]){-3}, NULL).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_INVALID_ARG);
  kc_graph_free(g);
  g = kc_graph_new(ctx, "src");
  assert_int_equal(kc_input(g, "x", KC_F32, 9, (kc_dim[9]){0}).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_INVALID_ARG);
  kc_graph_free(g);
  /* a required input that is none, with no earlier failure to explain it */
  g = kc_graph_new(ctx, "src");
  assert_int_equal(kc_relu(g, (kc_val){0}).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "relu"));
  kc_graph_free(g);
}

/* Element counts or byte sizes past int64 fail the call that makes them, naming it. */
static void expect_big(kc_graph *g, kc_val v, const char *who) {
  assert_int_equal(v.id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  if (!strstr(kc_last_error(ctx), "overflows int64") || !strstr(kc_last_error(ctx), who))
    fail_msg("message \"%s\" lacks \"%s\" or the overflow", kc_last_error(ctx), who);
  assert_int_equal(kc_graph_verify(g), KC_ERR_SHAPE);
  kc_graph_free(g);
}

static void t_overflow(void **st) {
  (void)st;
  const int64_t e62 = INT64_C(1) << 62, e32 = INT64_C(1) << 32, e61 = INT64_C(1) << 61;
  kc_graph *g = kc_graph_new(ctx, "big");
  kc_val x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){4});
  expect_big(g, kc_reshape(g, x, kc_const_i64s(g, 2, (int64_t[]){e62, e62})), "(reshape)");
  g = kc_graph_new(ctx, "big");
  x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){1});
  expect_big(g, kc_expand(g, x, kc_const_i64s(g, 3, (int64_t[]){e32, e32, e32})), "(expand)");
  /* 2^61 floats: the count fits, the bytes do not */
  g = kc_graph_new(ctx, "big");
  x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){1});
  expect_big(g, kc_expand(g, x, kc_const_i64s(g, 1, (int64_t[]){e61})), "(expand)");
  g = kc_graph_new(ctx, "big");
  kc_val shape = kc_const_i64s(g, 2, (int64_t[]){e62, e62});
  expect_big(g, kc_constant_of_shape(g, shape, (kc_val){0}), "(constant_of_shape)");
  g = kc_graph_new(ctx, "big");
  expect_big(g, kc_input(g, "x", KC_F32, 2, (kc_dim[]){e62, 4}), "input 'x'");
  g = kc_graph_new(ctx, "big");
  expect_big(g, kc_input(g, "x", KC_I8, 3, (kc_dim[]){kc_sym(g, "B"), e62, 4}), "input 'x'");
  g = kc_graph_new(ctx, "big");
  expect_big(g, kc_weight(g, "w", KC_F32, 2, (int64_t[]){e62, 4}, NULL), "weight");
  /* at the edge, and empty tensors of huge dims, are fine */
  g = kc_graph_new(ctx, "big");
  x = kc_input(g, "x", KC_I8, 1, (kc_dim[]){1});
  kc_val edge = kc_expand(g, x, kc_const_i64s(g, 1, (int64_t[]){INT64_MAX}));
  kc_val empty = kc_input(g, "e", KC_F64, 3, (kc_dim[]){0, e62, e62});
  kc_val none = kc_expand(g, kc_input(g, "y", KC_F32, 1, (kc_dim[]){1}),
                          kc_const_i64s(g, 3, (int64_t[]){e32, 0, e32}));
  assert_int_equal(kc_graph_status(g), KC_OK);
  assert_true(edge.id && empty.id && none.id);
  kc_output(g, edge, "edge");
  kc_output(g, empty, "empty");
  kc_output(g, none, "none");
  assert_int_equal(kc_graph_verify(g), KC_OK);
  kc_graph_free(g);
}

/* A failed call leaves the graph well formed: the failed node is dropped. */
static void t_sticky(void **st) {
  (void)st;
  kc_graph *g = kc_graph_new(ctx, "sticky");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){4, 5});
  kc_val bad = kc_matmul(g, x, x);
  assert_int_equal(bad.id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  assert_int_equal(kc_softmax(g, kc_relu(g, bad), -1).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  /* later valid calls still work; the first error stays */
  kc_val ok = kc_relu(g, x);
  assert_int_not_equal(ok.id, 0);
  assert_int_equal(kc_softmax(g, x, 7).id, 0);
  assert_int_equal(kc_graph_status(g), KC_ERR_SHAPE);
  kc_output(g, ok, "y");
  /* the verifier reports the sticky error; without it the graph (failed nodes are NOPs) is fine */
  assert_int_equal(kc_graph_verify(g), KC_ERR_SHAPE);
  g->sticky = KC_OK;
  assert_int_equal(kc_graph_verify(g), KC_OK);
  /* dropping the failed nodes leaves a graph that still verifies */
  kc_graph_compact(g);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  kc_graph_free(g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_mlp),     cmocka_unit_test(t_layer_norm), cmocka_unit_test(t_attributes),
      cmocka_unit_test(t_sources), cmocka_unit_test(t_sticky),     cmocka_unit_test(t_overflow),
  };
  ctx = kc_context_new();
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  kc_context_free(ctx);
  return rc;
}
