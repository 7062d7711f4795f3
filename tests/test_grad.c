/*
 * tests/test_grad.c - autodiff (passes/grad.c, kc_grad in kernc.h) and the GRAD column of
 * ir/ops.def.
 *
 * - Every op row with a rule has at least one case below (checked from the table itself, so a
 *   new rule without a case fails test_every_rule_has_a_case). Each case builds a small f64
 *   graph y = op(x0, x1...) (broadcasting and symbolic dims where the op has them), the test
 *   adds loss = sum(y*y + sin(y)), runs kc_grad for every input, compiles forward + backward
 *   with the default pipeline (the fusions run on both) and compares every gradient element
 *   with a central finite difference of the loss computed by running the same module (f64,
 *   h = 1e-5; two cases go through f32 values and use h = 1e-2 / 1e-3 with a 1e-4 bound: cast
 *   f64 -> f32 -> f64, and LayerNormalization's f32 mean / inv_std_dev results; the attention
 *   cases compute in f32 inside the kernels and use h = 1e-2 with a 2e-3 bound). References come
 *   from the finite differences, never from the rules.
 *   The same cases check the GRAD column's `saves` bits: no rule reads an input they omit.
 * - scatter_add (gather's adjoint): values by hand, an index out of range, an embedding gradient
 *   bitwise equal with 1 and 2 threads.
 * - kc_grad's contract: one error listing every node without a rule (also on an imported model),
 *   frozen parameters build no backward (no matmul for a frozen weight), a parameter the loss
 *   does not read gets zeros, patterns that match nothing are errors, a failure leaves the graph
 *   as it was, gradient graphs verify and print/parse back to the same text.
 * - Models against PyTorch autograd: a small MLP, a GPT-2-style block and a token embedding
 *   built with the builder (tests/models/grad_ref.py), and the imported ONNX models gpt2_tiny,
 *   llama_tiny, bert_tiny and opset23_tiny (its ONNX Attention is kernc's attention: the
 *   attention backward) (tests/models/grad_ref_models.py; also 1 vs 2 threads bitwise);
 *   the builder models again on the CUDA target (skipped without a GPU; run on the emulated
 *   driver by test_grad_cuda_emulated, tests/cuda_emu).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "harness.h"
#include "passes/grad.h"
#include "passes/passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_tests_dir = "tests";

/* ---- cases ------------------------------------------------------------------------------ */

enum { DATA_ANY = 0, DATA_POS = 1 };

static kc_val in64(kc_graph *g, const char *name, int rank, const kc_dim *dims) {
  return kc_input(g, name, KC_F64, rank, dims);
}
#define IN(name, ...)                                                                              \
  in64(g, name, (int)(sizeof((kc_dim[]){__VA_ARGS__}) / sizeof(kc_dim)), (kc_dim[]){__VA_ARGS__})

static kc_val cst64(kc_graph *g, double v) { return kc_constant(g, KC_F64, 0, NULL, &v); }

#define UNARY(fn, call)                                                                            \
  static kc_val c_##fn(kc_graph *g) { return call(g, IN("x0", 3, 4)); }
UNARY(sqrt, kc_sqrt)
UNARY(reciprocal, kc_reciprocal)
UNARY(neg, kc_neg)
UNARY(abs, kc_abs)
UNARY(exp, kc_exp)
UNARY(log, kc_log)
UNARY(erf, kc_erf)
UNARY(tanh, kc_tanh)
UNARY(sigmoid, kc_sigmoid)
UNARY(relu, kc_relu)
UNARY(sin, kc_sin)
UNARY(cos, kc_cos)
UNARY(identity, kc_identity)
UNARY(dropout, kc_dropout)

static kc_val c_gelu(kc_graph *g) { return kc_gelu(g, IN("x0", 3, 4), 0); }
static kc_val c_gelu_tanh(kc_graph *g) { return kc_gelu(g, IN("x0", 3, 4), 1); }
/* f64 -> f32 -> f64: the f32 rounding limits the check (looser bound, bigger h) */
static kc_val c_cast(kc_graph *g) { return kc_cast(g, kc_cast(g, IN("x0", 3, 4), KC_F32), KC_F64); }
static kc_val c_clip(kc_graph *g) {
  kc_val x = IN("x0", 3, 4);
  kc_val lo = in64(g, "x1", 0, NULL);
  return kc_clip(g, x, lo, in64(g, "x2", 0, NULL));
}

/* broadcasting binary ops: [2,3,4] with [3,1] */
#define BINARY(fn, call)                                                                           \
  static kc_val c_##fn(kc_graph *g) {                                                              \
    kc_val a = IN("x0", 2, 3, 4);                                                                  \
    return call(g, a, IN("x1", 3, 1));                                                             \
  }
BINARY(add, kc_add)
BINARY(sub, kc_sub)
BINARY(mul, kc_mul)
BINARY(div, kc_div)
BINARY(pow, kc_pow)
BINARY(min, kc_min)
BINARY(max, kc_max)

/* symbolic batch: [B,3] + [3] */
static kc_val c_add_sym(kc_graph *g) {
  kc_dim d[2] = {kc_sym(g, "B"), 3};
  kc_val a = in64(g, "x0", 2, d);
  return kc_mul(g, a, IN("x1", 3));
}

static kc_val c_where(kc_graph *g) {
  bool c[12] = {1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0};
  kc_val cond = kc_constant(g, KC_BOOL, 2, (int64_t[]){3, 4}, c);
  kc_val a = IN("x0", 3, 4);
  return kc_where(g, cond, a, IN("x1", 4));
}

static kc_val c_reduce_sum(kc_graph *g) {
  return kc_reduce_sum(g, IN("x0", 2, 3, 4), 1, (int64_t[]){1}, 0);
}
static kc_val c_reduce_sum_all(kc_graph *g) { return kc_reduce_sum(g, IN("x0", 3, 4), 0, NULL, 1); }
static kc_val c_reduce_mean(kc_graph *g) {
  return kc_reduce_mean(g, IN("x0", 2, 3, 4), 2, (int64_t[]){0, 2}, 1);
}
static kc_val c_reduce_mean_sym(kc_graph *g) {
  kc_dim d[2] = {kc_sym(g, "B"), 3};
  return kc_reduce_mean(g, in64(g, "x0", 2, d), 1, (int64_t[]){0}, 0);
}
static kc_val c_reduce_max(kc_graph *g) {
  return kc_reduce_max(g, IN("x0", 2, 3, 4), 1, (int64_t[]){-1}, 0);
}
static kc_val c_softmax(kc_graph *g) { return kc_softmax(g, IN("x0", 2, 3, 4), 1); }
static kc_val c_log_softmax(kc_graph *g) { return kc_log_softmax(g, IN("x0", 2, 3, 4), -1); }

static kc_val c_cumsum(kc_graph *g) {
  kc_val in[2] = {IN("x0", 3, 4), kc_const_i64(g, 1)};
  kc_val out;
  uint32_t ni = kc_graph_add_node(g, KC_OP_CUMSUM, 2, in, 1, &out);
  kc_node_set_int(g, ni, "exclusive", 1);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  return out;
}

/* softmax_xent of logits [2, 3, 5] against constant labels (one ignored): the per-position loss,
 * and with its lse result in the loss too */
static kc_val xent_node(kc_graph *g, kc_val *lse) {
  static const int64_t labels[6] = {4, 0, -100, 2, 1, 3};
  kc_val in[2] = {IN("x0", 2, 3, 5), kc_constant(g, KC_I64, 2, (int64_t[]){2, 3}, labels)}, out[2];
  uint32_t ni = kc_graph_add_node(g, KC_OP_SOFTMAX_XENT, 2, in, lse ? 2 : 1, out);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  if (lse) *lse = out[1];
  return out[0];
}
static kc_val c_softmax_xent(kc_graph *g) { return xent_node(g, NULL); }
static kc_val c_softmax_xent_lse(kc_graph *g) {
  kc_val lse, loss = xent_node(g, &lse);
  return kc_add(g, loss, kc_mul(g, lse, lse));
}

static kc_val c_layer_normalization(kc_graph *g) {
  kc_val x = IN("x0", 2, 3, 4);
  kc_val s = IN("x1", 3, 4);
  return kc_layer_normalization(g, x, s, IN("x2", 4), 1, 1e-5f);
}
/* with its optional results mean and inv_std_dev in the loss too */
static kc_val c_layer_normalization_stats(kc_graph *g) {
  kc_val in[3] = {IN("x0", 2, 3, 4), {0}, {0}}, out[3];
  in[1] = IN("x1", 4);
  in[2] = IN("x2", 4);
  uint32_t ni = kc_graph_add_node(g, KC_OP_LAYER_NORMALIZATION, 3, in, 3, out);
  kc_node_set_int(g, ni, "axis", -1);
  assert_int_equal(kc_node_infer(g, ni), KC_OK);
  /* mean and inv_std_dev are f32 (ONNX's stash_type): checked with h 1e-3 and a 1e-4 bound */
  kc_val m = kc_cast(g, out[1], KC_F64), r = kc_cast(g, out[2], KC_F64);
  return kc_add(g, out[0], kc_mul(g, m, kc_sqrt(g, r)));
}
static kc_val c_rms_normalization(kc_graph *g) {
  kc_val x = IN("x0", 2, 3, 4);
  return kc_rms_normalization(g, x, IN("x1", 4), -1, 1e-5f);
}
static kc_val c_layer_norm(kc_graph *g) {
  kc_val x = IN("x0", 2, 3, 5);
  kc_val s = IN("x1", 5);
  return kc_layer_norm(g, x, s, IN("x2", 5), 1e-5f);
}
static kc_val c_rms_norm(kc_graph *g) {
  kc_val x = IN("x0", 2, 3, 5);
  return kc_rms_norm(g, x, IN("x1", 5), 1e-5f);
}

static kc_val c_matmul(kc_graph *g) {
  kc_val a = IN("x0", 2, 1, 3, 4);
  return kc_matmul(g, a, IN("x1", 3, 4, 2));
}
static kc_val c_matmul_vec(kc_graph *g) {
  kc_val a = IN("x0", 4);
  kc_val b = IN("x1", 2, 4, 3);
  kc_val y = kc_matmul(g, a, b); /* [2,3] */
  return kc_matmul(g, y, IN("x2", 3));
}
static kc_val c_gemm(kc_graph *g) {
  kc_val a = IN("x0", 4, 3);
  kc_val b = IN("x1", 5, 4);
  return kc_gemm(g, a, b, IN("x2", 5), 0.5f, 2.0f, 1, 1);
}
static kc_val c_gemm_plain(kc_graph *g) {
  kc_val a = IN("x0", 3, 4);
  kc_val b = IN("x1", 4, 5);
  return kc_gemm(g, a, b, IN("x2", 3, 5), 1.0f, 1.0f, 0, 0);
}
static kc_val c_matmul_ep(kc_graph *g, kc_act act) {
  kc_val a = IN("x0", 2, 3, 4);
  kc_val b = IN("x1", 4, 5);
  kc_val bias = IN("x2", 5);
  return kc_matmul_ep(g, a, b, bias, IN("x3", 2, 3, 5), act);
}
static kc_val c_matmul_ep_relu(kc_graph *g) { return c_matmul_ep(g, KC_ACT_RELU); }
static kc_val c_matmul_ep_gelu(kc_graph *g) { return c_matmul_ep(g, KC_ACT_GELU); }
static kc_val c_matmul_ep_gelu_tanh(kc_graph *g) { return c_matmul_ep(g, KC_ACT_GELU_TANH); }
/* the layer-scale form: gelu(a @ b + bias) * scale + residual (no builder call has a scale) */
static kc_val c_matmul_ep_scale(kc_graph *g) {
  kc_val in[5], y = {0};
  in[0] = IN("x0", 2, 3, 4);
  in[1] = IN("x1", 4, 5);
  in[2] = IN("x2", 5);
  in[3] = IN("x3", 2, 3, 5);
  in[4] = IN("x4", 5);
  uint32_t ni = kc_graph_add_node(g, KC_OP_MATMUL_EP, 5, in, 1, &y);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_string(g, ni, "act", "gelu");
  return kc_node_infer(g, ni) == KC_OK ? y : (kc_val){0};
}

static kc_val c_reshape(kc_graph *g) {
  return kc_reshape(g, IN("x0", 2, 3, 4), kc_const_i64s(g, 2, (int64_t[]){4, 6}));
}
static kc_val c_flatten(kc_graph *g) { return kc_flatten(g, IN("x0", 2, 3, 4), 2); }
static kc_val c_squeeze(kc_graph *g) { return kc_squeeze(g, IN("x0", 3, 1, 4), 1, (int64_t[]){1}); }
static kc_val c_unsqueeze(kc_graph *g) {
  return kc_unsqueeze(g, IN("x0", 3, 4), 2, (int64_t[]){0, 2});
}
static kc_val c_transpose(kc_graph *g) {
  return kc_transpose(g, IN("x0", 2, 3, 4), 3, (int64_t[]){2, 0, 1});
}
static kc_val c_gather(kc_graph *g) {
  int64_t idx[4] = {0, 4, -1, 0}; /* row 0 twice: the adjoint sums */
  kc_val i = kc_constant(g, KC_I64, 2, (int64_t[]){2, 2}, idx);
  return kc_gather(g, IN("x0", 5, 3), i, 0);
}
static kc_val c_gather_axis1(kc_graph *g) {
  int64_t idx[3] = {2, 0, 2};
  kc_val i = kc_constant(g, KC_I64, 1, (int64_t[]){3}, idx);
  return kc_gather(g, IN("x0", 2, 4, 3), i, 1);
}
static kc_val c_scatter_add(kc_graph *g) {
  int64_t idx[3] = {1, -1, 1}; /* index 1 twice: the updates sum */
  kc_val x = IN("x0", 2, 4, 3);
  kc_val i = kc_constant(g, KC_I64, 1, (int64_t[]){3}, idx);
  kc_val y = kc_scatter_add(g, x, i, IN("x1", 2, 3, 3), 1);
  return kc_mul(g, y, y);
}
static kc_val c_concat(kc_graph *g) {
  kc_val xs[3] = {IN("x0", 2, 1, 3), IN("x1", 2, 2, 3), IN("x2", 2, 3, 3)};
  return kc_concat(g, 3, xs, 1);
}
static kc_val c_split(kc_graph *g) {
  kc_val outs[3];
  kc_split(g, IN("x0", 3, 6), 1, 3, (int64_t[]){1, 2, 3}, outs);
  kc_val keep[2] = {outs[2], outs[0]}; /* outs[1] unused: zeros in the adjoint */
  return kc_concat(g, 2, keep, 1);
}
static kc_val c_slice(kc_graph *g) {
  kc_val st = kc_const_i64s(g, 2, (int64_t[]){1, 0});
  kc_val en = kc_const_i64s(g, 2, (int64_t[]){3, -1});
  return kc_slice(g, IN("x0", 4, 5), st, en, kc_const_i64s(g, 2, (int64_t[]){0, 1}), (kc_val){0});
}
static kc_val c_expand(kc_graph *g) {
  return kc_expand(g, IN("x0", 3, 1), kc_const_i64s(g, 3, (int64_t[]){2, 3, 4}));
}
static kc_val c_trilu(kc_graph *g) { return kc_trilu(g, IN("x0", 4, 4), kc_const_i64(g, 1), 0); }

static kc_val c_rotary(kc_graph *g) {
  double cs[8], sn[8];
  for (int i = 0; i < 8; i++) {
    cs[i] = cos(0.3 * i + 0.1);
    sn[i] = sin(0.3 * i + 0.1);
  }
  kc_val cc = kc_constant(g, KC_F64, 2, (int64_t[]){4, 2}, cs);
  kc_val ss = kc_constant(g, KC_F64, 2, (int64_t[]){4, 2}, sn);
  int64_t pos[3] = {2, 0, 3};
  kc_val p = kc_constant(g, KC_I64, 2, (int64_t[]){1, 3}, pos);
  return kc_rotary(g, IN("x0", 1, 3, 8), cc, ss, p, 2, 0);
}

/*
 * attention (f32 arithmetic inside, see the table): GQA and MQA, rank 3 and 4, causal with rows
 * that see no key (S > S_kv), padding, additive (one row fully masked), softcap; the sequence
 * lengths pass the forward kernel's slot block (16 f32 lanes) and are not multiples of it.
 */
static kc_val c_attention_causal(kc_graph *g) {
  kc_attention_desc d = {.heads = 4, .kv_heads = 2, .mask = KC_MASK_CAUSAL};
  return kc_attention(g, IN("x0", 1, 19, 12), IN("x1", 1, 17, 6), IN("x2", 1, 17, 6), (kc_val){0},
                      &d);
}
static kc_val c_attention_padding(kc_graph *g) {
  uint8_t keep[2 * 21];
  for (int i = 0; i < 2 * 21; i++)
    keep[i] = i % 21 != 3 && i % 21 != 17 && i != 21 + 20;
  kc_val m = kc_constant(g, KC_BOOL, 2, (int64_t[]){2, 21}, keep);
  kc_attention_desc d = {.heads = 2, .kv_heads = 2, .mask = KC_MASK_PADDING};
  return kc_attention(g, IN("x0", 2, 2, 5, 4), IN("x1", 2, 2, 21, 4), IN("x2", 2, 2, 21, 3), m, &d);
}
static kc_val c_attention_additive(kc_graph *g) {
  double add[7 * 18];
  for (int i = 0; i < 7 * 18; i++)
    add[i] = i / 18 == 2 ? -INFINITY : (i % 5 == 0 ? -INFINITY : 0.1 * (i % 7) - 0.3);
  kc_val m = kc_constant(g, KC_F64, 4, (int64_t[]){1, 1, 7, 18}, add);
  kc_attention_desc d = {.heads = 2, .kv_heads = 1, .mask = KC_MASK_ADDITIVE};
  return kc_attention(g, IN("x0", 1, 7, 8), IN("x1", 1, 18, 4), IN("x2", 1, 18, 4), m, &d);
}
static kc_val c_attention_softcap(kc_graph *g) {
  kc_attention_desc d = {.heads = 2, .mask = KC_MASK_CAUSAL, .scale = 1.5};
  kc_val y =
      kc_attention(g, IN("x0", 1, 6, 6), IN("x1", 1, 6, 6), IN("x2", 1, 6, 6), (kc_val){0}, &d);
  if (kc_graph_status(g) == KC_OK) kc_node_set_float(g, g->vals[y.id].def - 1, "softcap", 0.8);
  return y;
}

/* an elementwise chain that fuse-elementwise turns into one fused node (prepass) */
static kc_val c_fused(kc_graph *g) {
  kc_val a = IN("x0", 3, 4);
  kc_val b = IN("x1", 4);
  kc_val t = kc_mul(g, kc_tanh(g, kc_add(g, a, b)), kc_sub(g, a, cst64(g, 0.25)));
  return kc_exp(g, kc_mul(g, t, b));
}

/* symbolic dims (S is 3 when the test runs, every other symbol 2) */
static kc_val c_concat_sym(kc_graph *g) {
  kc_dim d0[2] = {kc_sym(g, "B"), 3}, d1[2] = {kc_sym(g, "S"), 3};
  kc_val xs[2];
  xs[0] = in64(g, "x0", 2, d0);
  xs[1] = in64(g, "x1", 2, d1);
  return kc_concat(g, 2, xs, 0); /* [B+S, 3]: split back at B */
}
static kc_val c_slice_sym(kc_graph *g) {
  kc_dim d[2] = {3, kc_sym(g, "S")};
  kc_val x = in64(g, "x0", 2, d);
  kc_val st = kc_const_i64s(g, 1, (int64_t[]){1});
  kc_val en = kc_const_i64s(g, 1, (int64_t[]){INT64_MAX});
  return kc_slice(g, x, st, en, kc_const_i64s(g, 1, (int64_t[]){1}), (kc_val){0});
}
static kc_val c_layer_norm_sym(kc_graph *g) {
  kc_dim d[3] = {kc_sym(g, "B"), kc_sym(g, "S"), 4};
  kc_val x = in64(g, "x0", 3, d);
  kc_val s = IN("x1", 4);
  return kc_layer_norm(g, x, s, IN("x2", 4), 1e-5f);
}
static kc_val c_matmul_sym(kc_graph *g) {
  kc_dim d[3] = {kc_sym(g, "B"), kc_sym(g, "S"), 4};
  kc_val x = in64(g, "x0", 3, d);
  kc_val w = IN("x1", 4, 3);
  return kc_softmax(g, kc_add(g, kc_matmul(g, x, w), IN("x2", 3)), -1);
}
static kc_val c_gather_sym(kc_graph *g) {
  kc_dim d[2] = {kc_sym(g, "B"), 3};
  kc_val x = in64(g, "x0", 2, d);
  kc_val i = kc_constant(g, KC_I64, 1, (int64_t[]){3}, (int64_t[]){1, 0, 1});
  return kc_gather(g, x, i, 0);
}

typedef struct gcase {
  kc_op op;
  const char *name;
  kc_val (*build)(kc_graph *g);
  int data;
  double tol;          /* 0: 1e-6 */
  double h;            /* 0: 1e-5 */
  const char *prepass; /* passes run before kc_grad (NULL: none) */
} gcase;

static const gcase cases[] = {
    {KC_OP_SQRT, "sqrt", c_sqrt, DATA_POS, 0, 0, NULL},
    {KC_OP_RECIPROCAL, "reciprocal", c_reciprocal, DATA_POS, 0, 0, NULL},
    {KC_OP_NEG, "neg", c_neg, DATA_ANY, 0, 0, NULL},
    {KC_OP_ABS, "abs", c_abs, DATA_ANY, 0, 0, NULL},
    {KC_OP_EXP, "exp", c_exp, DATA_ANY, 0, 0, NULL},
    {KC_OP_LOG, "log", c_log, DATA_POS, 0, 0, NULL},
    {KC_OP_ERF, "erf", c_erf, DATA_ANY, 0, 0, NULL},
    {KC_OP_TANH, "tanh", c_tanh, DATA_ANY, 0, 0, NULL},
    {KC_OP_SIGMOID, "sigmoid", c_sigmoid, DATA_ANY, 0, 0, NULL},
    {KC_OP_RELU, "relu", c_relu, DATA_ANY, 0, 0, NULL},
    {KC_OP_SIN, "sin", c_sin, DATA_ANY, 0, 0, NULL},
    {KC_OP_COS, "cos", c_cos, DATA_ANY, 0, 0, NULL},
    {KC_OP_IDENTITY, "identity", c_identity, DATA_ANY, 0, 0, NULL},
    {KC_OP_DROPOUT, "dropout", c_dropout, DATA_ANY, 0, 0, NULL},
    {KC_OP_GELU, "gelu", c_gelu, DATA_ANY, 0, 0, NULL},
    {KC_OP_GELU, "gelu_tanh", c_gelu_tanh, DATA_ANY, 0, 0, NULL},
    {KC_OP_CAST, "cast", c_cast, DATA_ANY, 1e-4, 1e-2, NULL},
    {KC_OP_CLIP, "clip", c_clip, DATA_ANY, 0, 0, NULL},
    {KC_OP_ADD, "add", c_add, DATA_ANY, 0, 0, NULL},
    {KC_OP_MUL, "mul_sym", c_add_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_SUB, "sub", c_sub, DATA_ANY, 0, 0, NULL},
    {KC_OP_MUL, "mul", c_mul, DATA_ANY, 0, 0, NULL},
    {KC_OP_DIV, "div", c_div, DATA_POS, 0, 0, NULL},
    {KC_OP_POW, "pow", c_pow, DATA_POS, 0, 0, NULL},
    {KC_OP_MIN, "min", c_min, DATA_ANY, 0, 0, NULL},
    {KC_OP_MAX, "max", c_max, DATA_ANY, 0, 0, NULL},
    {KC_OP_WHERE, "where", c_where, DATA_ANY, 0, 0, NULL},
    {KC_OP_REDUCE_SUM, "reduce_sum", c_reduce_sum, DATA_ANY, 0, 0, NULL},
    {KC_OP_REDUCE_SUM, "reduce_sum_all", c_reduce_sum_all, DATA_ANY, 0, 0, NULL},
    {KC_OP_REDUCE_MEAN, "reduce_mean", c_reduce_mean, DATA_ANY, 0, 0, NULL},
    {KC_OP_REDUCE_MEAN, "reduce_mean_sym", c_reduce_mean_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_REDUCE_MAX, "reduce_max", c_reduce_max, DATA_ANY, 0, 0, NULL},
    {KC_OP_SOFTMAX, "softmax", c_softmax, DATA_ANY, 0, 0, NULL},
    {KC_OP_LOG_SOFTMAX, "log_softmax", c_log_softmax, DATA_ANY, 0, 0, NULL},
    {KC_OP_CUMSUM, "cumsum", c_cumsum, DATA_ANY, 0, 0, NULL},
    {KC_OP_SOFTMAX_XENT, "softmax_xent", c_softmax_xent, DATA_ANY, 0, 0, NULL},
    {KC_OP_SOFTMAX_XENT, "softmax_xent_lse", c_softmax_xent_lse, DATA_ANY, 0, 0, NULL},
    {KC_OP_LAYER_NORMALIZATION, "layer_normalization", c_layer_normalization, DATA_ANY, 0, 0, NULL},
    {KC_OP_LAYER_NORMALIZATION, "layer_normalization_stats", c_layer_normalization_stats, DATA_ANY,
     1e-4, 1e-3, NULL},
    {KC_OP_RMS_NORMALIZATION, "rms_normalization", c_rms_normalization, DATA_ANY, 0, 0, NULL},
    {KC_OP_LAYER_NORM, "layer_norm", c_layer_norm, DATA_ANY, 0, 0, NULL},
    {KC_OP_RMS_NORM, "rms_norm", c_rms_norm, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL, "matmul", c_matmul, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL, "matmul_vec", c_matmul_vec, DATA_ANY, 0, 0, NULL},
    {KC_OP_GEMM, "gemm", c_gemm, DATA_ANY, 0, 0, NULL},
    {KC_OP_GEMM, "gemm_plain", c_gemm_plain, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL_EP, "matmul_ep_relu", c_matmul_ep_relu, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL_EP, "matmul_ep_gelu", c_matmul_ep_gelu, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL_EP, "matmul_ep_gelu_tanh", c_matmul_ep_gelu_tanh, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL_EP, "matmul_ep_scale", c_matmul_ep_scale, DATA_ANY, 0, 0, NULL},
    {KC_OP_RESHAPE, "reshape", c_reshape, DATA_ANY, 0, 0, NULL},
    {KC_OP_FLATTEN, "flatten", c_flatten, DATA_ANY, 0, 0, NULL},
    {KC_OP_SQUEEZE, "squeeze", c_squeeze, DATA_ANY, 0, 0, NULL},
    {KC_OP_UNSQUEEZE, "unsqueeze", c_unsqueeze, DATA_ANY, 0, 0, NULL},
    {KC_OP_TRANSPOSE, "transpose", c_transpose, DATA_ANY, 0, 0, NULL},
    {KC_OP_GATHER, "gather", c_gather, DATA_ANY, 0, 0, NULL},
    {KC_OP_GATHER, "gather_axis1", c_gather_axis1, DATA_ANY, 0, 0, NULL},
    {KC_OP_SCATTER_ADD, "scatter_add", c_scatter_add, DATA_ANY, 0, 0, NULL},
    {KC_OP_CONCAT, "concat", c_concat, DATA_ANY, 0, 0, NULL},
    {KC_OP_CONCAT, "concat_sym", c_concat_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_SLICE, "slice_sym", c_slice_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_LAYER_NORM, "layer_norm_sym", c_layer_norm_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_MATMUL, "matmul_sym", c_matmul_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_GATHER, "gather_sym", c_gather_sym, DATA_ANY, 0, 0, NULL},
    {KC_OP_SPLIT, "split", c_split, DATA_ANY, 0, 0, NULL},
    {KC_OP_SLICE, "slice", c_slice, DATA_ANY, 0, 0, NULL},
    {KC_OP_EXPAND, "expand", c_expand, DATA_ANY, 0, 0, NULL},
    {KC_OP_TRILU, "trilu", c_trilu, DATA_ANY, 0, 0, NULL},
    {KC_OP_ROTARY, "rotary", c_rotary, DATA_ANY, 0, 0, NULL},
    {KC_OP_FUSED, "fused", c_fused, DATA_ANY, 0, 0, "infer,fuse-elementwise"},
    {KC_OP_ATTENTION, "attention_causal", c_attention_causal, DATA_ANY, 2e-3, 1e-2, NULL},
    {KC_OP_ATTENTION, "attention_padding", c_attention_padding, DATA_ANY, 2e-3, 1e-2, NULL},
    {KC_OP_ATTENTION, "attention_additive", c_attention_additive, DATA_ANY, 2e-3, 1e-2, NULL},
    {KC_OP_ATTENTION, "attention_softcap", c_attention_softcap, DATA_ANY, 2e-3, 1e-2, NULL},
};
#define NCASES (sizeof cases / sizeof *cases)

/* ---- finite-difference check --------------------------------------------------------------- */

/* Deterministic data: |v| in [0.1, 1] (kinks at 0 stay far), or [0.5, 2] for DATA_POS; distinct
 * values so min/max/reduce_max have no ties. */
static double datum(int data, uint32_t *state, int k) {
  *state = *state * 1664525u + 1013904223u;
  double u = (double)(*state >> 8) / (double)(1u << 24);
  if (data == DATA_POS) return 0.5 + 1.5 * u + 1e-4 * k;
  double v = 0.1 + 0.9 * u + 1e-4 * k;
  return (*state & 1) ? v : -v;
}

/* Concrete dims of graph input i (symbol S is 3, every other 2). */
static int input_dims(kc_graph *g, uint32_t i, int64_t *dims) {
  kc_val v = kc_graph_input(g, i);
  int r = kc_val_rank(g, v);
  kc_dim d[KC_MAX_RANK];
  kc_val_dims(g, v, d);
  for (int k = 0; k < r; k++) {
    char buf[64];
    dims[k] = d[k] >= 0 ? d[k] : strcmp(kc_dim_str(g, d[k], buf, sizeof buf), "S") == 0 ? 3 : 2;
  }
  return r;
}

/* loss = sum(y*y + sin(y)) as output "loss"; dtype of y. */
static void add_loss(kc_graph *g, kc_val y) {
  kc_val l = kc_add(g, kc_mul(g, y, y), kc_sin(g, y));
  kc_output(g, kc_reduce_sum(g, l, 0, NULL, 0), "loss");
}

/*
 * The GRAD column's `saves` bits against what the rule read: a graph input read by exactly one
 * forward node, of the case's op, is read by the backward (nodes from `first` on; shape reads
 * do not count) only through that node's rule, which must then list the input.
 */
static void check_saves(const kc_graph *g, const gcase *gc, uint32_t first) {
  /* live nodes: those a graph output needs (a recomputed forward piece whose result only
   * seeds an adjoint is dead code, dropped by dce) */
  bool *live = calloc(g->nvals, sizeof *live), *lnode = calloc(g->nnodes + 1, sizeof *lnode);
  for (uint32_t o = 0; o < g->noutputs; o++)
    live[g->outputs[o].v.id] = true;
  for (uint32_t i = g->nnodes; i-- > 0;) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nout && !lnode[i]; j++)
      lnode[i] = n->out[j].id && live[n->out[j].id];
    for (uint32_t j = 0; lnode[i] && j < n->nin; j++)
      if (n->in[j].id) live[n->in[j].id] = true;
  }
  for (uint32_t k = 0; k < g->ninputs; k++) {
    kc_val x = g->inputs[k];
    int readers = 0;
    uint32_t node = 0;
    for (uint32_t i = 0; i < first; i++)
      for (uint32_t j = 0; j < g->nodes[i].nin; j++)
        if (g->nodes[i].in[j].id == x.id) readers++, node = i;
    if (readers != 1 || g->nodes[node].op != gc->op) continue;
    bool read = false;
    for (uint32_t i = first; i < g->nnodes; i++)
      for (uint32_t j = 0; j < g->nodes[i].nin; j++)
        read = read || (lnode[i] && g->nodes[i].in[j].id == x.id && g->nodes[i].op != KC_OP_SHAPE);
    if (!read) continue;
    const kc_node *n = &g->nodes[node];
    unsigned saves = kc_grad_table[n->op].saves;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id == x.id && !(saves & KC_GS_IN(j)))
        fail_msg("%s: the rule of %s reads input %u, its `saves` bits do not list it", gc->name,
                 kc_ops[n->op].name, j);
  }
  free(live);
  free(lnode);
}

static void check_case(kc_context *ctx, const gcase *gc) {
  kc_graph *g = kc_graph_new(ctx, gc->name);
  kc_val y = gc->build(g);
  assert_int_equal(kc_graph_status(g), KC_OK);
  add_loss(g, y);
  if (gc->prepass) {
    kc_pipeline p;
    kc_pass_options po = {0};
    assert_int_equal(kc_pipeline_parse(ctx, gc->prepass, &p), KC_OK);
    if (kc_pipeline_run(&p, g, &po) != KC_OK) fail_msg("%s: %s", gc->name, kc_last_error(ctx));
  }
  bool has = false;
  for (uint32_t i = 0; i < g->nnodes; i++)
    has = has || g->nodes[i].op == gc->op;
  if (!has) fail_msg("case %s has no %s node", gc->name, kc_ops[gc->op].name);
  const char *pat = "x*";
  uint32_t first = g->nnodes;
  if (kc_grad(g, "loss", 1, &pat) != KC_OK)
    fail_msg("kc_grad(%s): %s", gc->name, kc_last_error(ctx));
  check_saves(g, gc, first);
  kc_module *m = NULL;
  if (kc_compile(ctx, g, NULL, &m) != KC_OK)
    fail_msg("compile %s: %s", gc->name, kc_last_error(ctx));

  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  assert_int_equal(nout, nin + 1);
  kc_tensor_desc in[8], out[9];
  double *buf[8];
  uint32_t state = 12345u;
  for (uint32_t i = 0; i < nin; i++) {
    int64_t dims[KC_MAX_RANK];
    int r = input_dims(g, i, dims);
    int64_t n = th_numel(r, dims);
    buf[i] = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t k = 0; k < n; k++)
      buf[i][k] = datum(gc->data, &state, (int)k);
    in[i] = th_desc(kc_graph_input_name(g, i), KC_F64, r, dims, buf[i]);
  }
  if (strcmp(gc->name, "clip") == 0) { /* bounds inside the data's range */
    buf[1][0] = -0.5;
    buf[2][0] = 0.6;
  }
  th_run(ctx, m, in, nin, out, nout);
  double *an[8];
  for (uint32_t i = 0; i < nin; i++) {
    assert_int_equal(out[i + 1].dtype, KC_F64);
    assert_int_equal(th_numel(out[i + 1].rank, out[i + 1].dims), th_numel(in[i].rank, in[i].dims));
    size_t nb = th_nbytes(&out[i + 1]);
    an[i] = malloc(nb ? nb : 1);
    memcpy(an[i], out[i + 1].data, nb);
  }
  double h = gc->h ? gc->h : 1e-5, tol = gc->tol ? gc->tol : 1e-6;
  for (uint32_t i = 0; i < nin; i++) {
    int64_t n = th_numel(in[i].rank, in[i].dims);
    for (int64_t k = 0; k < n; k++) {
      double x0 = buf[i][k];
      buf[i][k] = x0 + h;
      th_run(ctx, m, in, nin, out, nout);
      double lp = *(double *)out[0].data;
      buf[i][k] = x0 - h;
      th_run(ctx, m, in, nin, out, nout);
      double lm = *(double *)out[0].data;
      buf[i][k] = x0;
      double fd = (lp - lm) / (2 * h), a = an[i][k];
      if (!(fabs(a - fd) <= tol * (1 + fabs(fd))))
        fail_msg("%s: d loss / d %s[%lld] = %.12g, finite difference %.12g", gc->name,
                 kc_graph_input_name(g, i), (long long)k, a, fd);
    }
  }
  print_message("%-22s %u inputs checked against finite differences\n", gc->name, nin);
  for (uint32_t i = 0; i < nin; i++) {
    free(buf[i]);
    free(an[i]);
  }
  kc_module_free(m);
  kc_graph_free(g);
}

static void test_every_rule_has_a_case(void **state) {
  (void)state;
  int missing = 0;
  for (int op = 1; op < KC_OP_COUNT; op++) {
    kc_grad_rule fn = kc_grad_table[op].fn;
    assert_non_null(fn); /* every row names a rule, none and todo included */
    if (fn == kc_grad_none || fn == kc_grad_todo) continue;
    bool found = false;
    for (size_t k = 0; k < NCASES; k++)
      found = found || cases[k].op == (kc_op)op;
    if (!found) {
      print_error("op %s has gradient rule '%s' but no finite-difference case\n", kc_ops[op].name,
                  kc_grad_table[op].name);
      missing++;
    }
  }
  assert_int_equal(missing, 0);
}

static void test_finite_differences(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_context_options(ctx)->threads = 1;
  const char *only = getenv("GRAD_CASE");
  for (size_t k = 0; k < NCASES; k++)
    if (!only || strcmp(only, cases[k].name) == 0) check_case(ctx, &cases[k]);
  kc_context_free(ctx);
}

/* ---- scatter_add's kernel ---------------------------------------------------------------- */

/* Values by hand (repeated, negative and i32 indices, axis 1), an index out of range, and an
 * embedding gradient bitwise equal with 1 and 2 threads. */
static void test_scatter_add_values(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "scatter");
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){2, 3, 2});
  kc_val u = kc_input(g, "u", KC_F32, 3, (kc_dim[]){2, 4, 2});
  int32_t idx[4] = {2, 0, -1, 2};
  kc_val i = kc_constant(g, KC_I32, 1, (int64_t[]){4}, idx);
  kc_output(g, kc_scatter_add(g, x, i, u, 1), "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_module *m = th_compile(ctx, g, 2);
  float xv[12], uv[16], want[12];
  for (int k = 0; k < 12; k++)
    want[k] = xv[k] = (float)k;
  for (int k = 0; k < 16; k++)
    uv[k] = 100.0f * (float)(k + 1);
  for (int p = 0; p < 2; p++)
    for (int j = 0; j < 4; j++) {
      int n = idx[j] < 0 ? idx[j] + 3 : idx[j];
      for (int q = 0; q < 2; q++)
        want[(p * 3 + n) * 2 + q] += uv[(p * 4 + j) * 2 + q];
    }
  kc_tensor_desc in[2] = {th_desc("x", KC_F32, 3, (int64_t[]){2, 3, 2}, xv),
                          th_desc("u", KC_F32, 3, (int64_t[]){2, 4, 2}, uv)},
                 out;
  th_run(ctx, m, in, 2, &out, 1);
  assert_memory_equal(out.data, want, sizeof want);
  kc_module_free(m);
  kc_graph_free(g);

  /* an index out of range is a run-time error naming the op */
  g = kc_graph_new(ctx, "scatter_bad");
  x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){3});
  kc_val ii = kc_input(g, "i", KC_I64, 1, (kc_dim[]){2});
  u = kc_input(g, "u", KC_F32, 1, (kc_dim[]){2});
  kc_output(g, kc_scatter_add(g, x, ii, u, 0), "y");
  m = th_compile(ctx, g, 1);
  int64_t bad[2] = {0, 3};
  float x3[3] = {0}, u2[2] = {1, 2};
  kc_tensor_desc in3[3] = {th_desc("x", KC_F32, 1, (int64_t[]){3}, x3),
                           th_desc("i", KC_I64, 1, (int64_t[]){2}, bad),
                           th_desc("u", KC_F32, 1, (int64_t[]){2}, u2)};
  assert_int_not_equal(kc_run(m, in3, 3, &out, 1), KC_OK);
  assert_non_null(strstr(kc_last_error(ctx), "scatter_add"));
  kc_module_free(m);
  kc_graph_free(g);

  /* embedding gradient (gather's adjoint), 1 vs 2 threads */
  g = kc_graph_new(ctx, "embed");
  float *w = malloc(50 * 16 * sizeof *w);
  for (int k = 0; k < 50 * 16; k++)
    w[k] = sinf(0.37f * (float)k);
  kc_val wte = kc_weight(g, "wte", KC_F32, 2, (int64_t[]){50, 16}, w);
  free(w);
  kc_val ids = kc_input(g, "ids", KC_I64, 2, (kc_dim[]){4, 32});
  kc_val e = kc_gather(g, wte, ids, 0);
  kc_output(g, kc_reduce_sum(g, kc_mul(g, kc_sin(g, e), e), 0, NULL, 0), "loss");
  const char *p = "wte";
  assert_int_equal(kc_grad(g, "loss", 1, &p), KC_OK);
  int64_t idv[128];
  for (int k = 0; k < 128; k++)
    idv[k] = (k * 7) % 13; /* many repeats */
  kc_tensor_desc ind = th_desc("ids", KC_I64, 2, (int64_t[]){4, 32}, idv), o1[2], o2[2];
  float *g1 = malloc(50 * 16 * sizeof *g1);
  kc_module *m1 = NULL, *m2 = NULL;
  kc_compile_options co = {.threads = 1};
  assert_int_equal(kc_compile(ctx, g, &co, &m1), KC_OK);
  co.threads = 2;
  assert_int_equal(kc_compile(ctx, g, &co, &m2), KC_OK);
  th_run(ctx, m1, &ind, 1, o1, 2);
  memcpy(g1, o1[1].data, 50 * 16 * sizeof *g1);
  th_run(ctx, m2, &ind, 1, o2, 2);
  assert_memory_equal(g1, o2[1].data, 50 * 16 * sizeof *g1);
  free(g1);
  kc_module_free(m1);
  kc_module_free(m2);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* ---- kc_grad's contract ------------------------------------------------------------------ */

static void test_missing_rules_listed(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  /* attention over a KV cache has no rule yet (decoding, not training) */
  static const char text[] =
      "graph @dec(%1: f32[1,2,64] \"x\", %2: f32[2,2,2,2,16,32] \"cache\", %3: i32[1,2] "
      "\"table\", %4: i64[1] \"past\", %5: i64[1] \"lens\") {\n"
      "  %6 = attention_cache(%1, %2, %3, %4, %5) {heads=2, layer=0} : f32[1,2,64] "
      "loc(\"l0.attn\")\n"
      "  %7 = attention_cache(%6, %2, %3, %4, %5) {heads=2, layer=1} : f32[1,2,64] "
      "loc(\"l1.attn\")\n"
      "  %8 = reduce_sum(%7) {keepdims=0} : f32[]\n"
      "  return %8 \"loss\"\n"
      "}\n";
  kc_graph *g = NULL;
  if (kc_graph_parse(ctx, text, "dec.kir", &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  const char *p = "x";
  assert_int_equal(kc_grad(g, "loss", 1, &p), KC_ERR_UNSUPPORTED);
  const char *msg = kc_last_error(ctx);
  /* both nodes, one error, by their loc (the ONNX node names of an imported model) */
  assert_non_null(strstr(msg, "node 'l0.attn' (attention_cache"));
  assert_non_null(strstr(msg, "node 'l1.attn' (attention_cache"));
  assert_non_null(strstr(msg, "without a gradient rule"));
  /* nothing was appended */
  assert_int_equal(kc_graph_num_outputs(g), 1);
  const char *none = "nope*";
  assert_int_equal(kc_grad(g, "loss", 1, &none), KC_ERR_INVALID_ARG);
  assert_int_equal(kc_grad(g, "nothing", 1, &p), KC_ERR_INVALID_ARG);
  kc_graph_free(g);

  /* a rule failing half-way (slice bounds known only at run time): g is left as it was */
  g = kc_graph_new(ctx, "rollback");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){3, 4});
  kc_val st = kc_input(g, "st", KC_I64, 1, (kc_dim[]){1});
  kc_val sl =
      kc_slice(g, kc_exp(g, x), st, kc_const_i64s(g, 1, (int64_t[]){3}), (kc_val){0}, (kc_val){0});
  kc_output(g, kc_reduce_sum(g, kc_mul(g, sl, sl), 0, NULL, 0), "loss");
  char *before = kc_graph_print_str(g);
  assert_int_equal(kc_grad(g, "loss", 1, &p), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "slice"));
  assert_int_equal(kc_graph_status(g), KC_OK);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  char *after = kc_graph_print_str(g);
  assert_string_equal(before, after);
  free(before);
  free(after);
  kc_graph_free(g);

  /* attention forms the attention rule refuses, each error naming the node */
  g = kc_graph_new(ctx, "attn_refused");
  x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){1, 4, 8});
  kc_val mk = kc_input(g, "mk", KC_F32, 4, (kc_dim[]){1, 1, 4, 4});
  kc_attention_desc d = {.heads = 2, .mask = KC_MASK_ADDITIVE};
  kc_val a = kc_attention(g, x, x, x, mk, &d);
  kc_output(g, kc_reduce_sum(g, a, 0, NULL, 0), "loss");
  const char *both[] = {"x", "mk"};
  assert_int_equal(kc_grad(g, "loss", 2, both), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "mask gets no gradient"));
  assert_int_equal(kc_grad(g, "loss", 1, &p), KC_OK); /* the mask frozen: fine */
  kc_graph_free(g);
  kc_context_free(ctx);
}

static uint32_t count_op(const kc_graph *g, kc_op op, uint32_t from) {
  uint32_t n = 0;
  for (uint32_t i = from; i < g->nnodes; i++)
    n += g->nodes[i].op == op;
  return n;
}

static void test_frozen_and_unused(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "frozen");
  float w1[12] = {0}, w2[12] = {0}, w3[3] = {1, 2, 3};
  for (int i = 0; i < 12; i++) {
    w1[i] = 0.1f * (float)i - 0.5f;
    w2[i] = 0.05f * (float)(i % 5) - 0.1f;
  }
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){2, 4});
  kc_val W1 = kc_weight(g, "l1.weight", KC_F32, 2, (int64_t[]){4, 3}, w1);
  kc_val W2 = kc_weight(g, "l2.weight", KC_F32, 2, (int64_t[]){3, 4}, w2);
  kc_weight(g, "unused.weight", KC_F32, 1, (int64_t[]){3}, w3);
  kc_val h = kc_relu(g, kc_matmul(g, x, W1));
  kc_val y = kc_matmul(g, h, W2);
  kc_output(g, kc_reduce_sum(g, y, 0, NULL, 0), "loss");
  uint32_t before = g->nnodes;
  const char *p[2] = {"l2.*", "unused.weight"};
  assert_int_equal(kc_grad(g, "loss", 2, p), KC_OK);
  /* only dW2 = h^T dy: no matmul for x's, W1's or h's adjoint */
  assert_int_equal(count_op(g, KC_OP_MATMUL, before), 1);
  assert_int_equal(kc_graph_num_outputs(g), 3);
  assert_string_equal(kc_graph_output_name(g, 1), "l2.weight.grad");
  assert_string_equal(kc_graph_output_name(g, 2), "unused.weight.grad");
  kc_module *m = NULL;
  if (kc_compile(ctx, g, NULL, &m) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  float xv[8] = {1, -2, 0.5f, 3, -1, 0.25f, 2, -0.5f};
  kc_tensor_desc in = th_desc("x", KC_F32, 2, (int64_t[]){2, 4}, xv), out[3];
  th_run(ctx, m, &in, 1, out, 3);
  /* dW2[j,k] = sum_b h[b,j], by hand */
  float hv[2][3];
  for (int b = 0; b < 2; b++)
    for (int j = 0; j < 3; j++) {
      float s = 0;
      for (int i = 0; i < 4; i++)
        s += xv[b * 4 + i] * w1[i * 3 + j];
      hv[b][j] = s > 0 ? s : 0;
    }
  const float *dw2 = out[1].data, *du = out[2].data;
  for (int j = 0; j < 3; j++)
    for (int k = 0; k < 4; k++)
      assert_float_equal(dw2[j * 4 + k], hv[0][j] + hv[1][j], 1e-5);
  for (int j = 0; j < 3; j++)
    assert_float_equal(du[j], 0.0f, 0);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* ---- models against PyTorch autograd (tests/models/grad_ref.py) -------------------------- */

/* The weights of grad_ref.py's param(p, shape, scale, offset), as f32. */
static kc_val wparam(kc_graph *g, const char *name, int p, int rank, const int64_t *dims,
                     double scale, double offset) {
  int64_t n = th_numel(rank, dims);
  float *w = malloc((size_t)n * sizeof *w);
  for (int64_t i = 0; i < n; i++)
    w[i] = (float)(offset + scale * sin(1.7 * p + 0.37 * (double)i + 0.1));
  kc_val v = kc_weight(g, name, KC_F32, rank, dims, w);
  free(w);
  return v;
}
#define W(name, p, scale, offset, ...)                                                             \
  wparam(g, name, p, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),                    \
         (int64_t[]){__VA_ARGS__}, scale, offset)

/* grad_ref.py's inputs(shape) */
static float *model_input(int64_t n) {
  float *x = malloc((size_t)n * sizeof *x);
  for (int64_t i = 0; i < n; i++)
    x[i] = (float)(1.5 * sin(0.11 * (double)i + 0.5));
  return x;
}

/* Mean cross-entropy of logits [N, C] against labels (3i + 1) % C, as output "loss". */
static void xent_loss(kc_graph *g, kc_val logits, int64_t n, int64_t c) {
  float *oh = calloc((size_t)(n * c), sizeof *oh);
  for (int64_t i = 0; i < n; i++)
    oh[i * c + (3 * i + 1) % c] = 1.0f;
  kc_val lab = kc_constant(g, KC_F32, 2, (int64_t[]){n, c}, oh);
  free(oh);
  kc_val l2 = kc_reshape(g, logits, kc_const_i64s(g, 2, (int64_t[]){n, c}));
  kc_val nll = kc_reduce_sum(g, kc_mul(g, kc_log_softmax(g, l2, -1), lab), 0, NULL, 0);
  kc_output(g, kc_mul(g, nll, kc_const_f32(g, -1.0f / (float)n)), "loss");
}

static kc_val linear(kc_graph *g, kc_val x, kc_val w, kc_val b) {
  kc_val y = kc_matmul(g, x, w);
  return b.id ? kc_add(g, y, b) : y;
}

static void build_mlp(kc_graph *g) {
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){4, 8});
  kc_val w1 = W("fc1.weight", 0, 0.3, 0, 8, 16), b1 = W("fc1.bias", 1, 0.1, 0, 16);
  kc_val w2 = W("fc2.weight", 2, 0.3, 0, 16, 5), b2 = W("fc2.bias", 3, 0.1, 0, 5);
  kc_val h = kc_gelu(g, linear(g, x, w1, b1), 0);
  xent_loss(g, linear(g, h, w2, b2), 4, 5);
}

/* GPT-2-style block, B=2 S=4 D=8 H=2, as grad_ref.py's block() */
static void build_block(kc_graph *g) {
  const int64_t B = 2, S = 4, D = 8, H = 2, F = 32, V = 10, hd = D / H;
  kc_val x = kc_input(g, "x", KC_F32, 3, (kc_dim[]){B, S, D});
  kc_val ln1w = W("ln1.weight", 0, 0.1, 1.0, D), ln1b = W("ln1.bias", 1, 0.1, 0, D);
  kc_val qkvw = W("attn.qkv.weight", 2, 0.3, 0, D, 3 * D);
  kc_val qkvb = W("attn.qkv.bias", 3, 0.1, 0, 3 * D);
  kc_val pw = W("attn.proj.weight", 4, 0.3, 0, D, D), pb = W("attn.proj.bias", 5, 0.1, 0, D);
  kc_val ln2w = W("ln2.weight", 6, 0.1, 1.0, D), ln2b = W("ln2.bias", 7, 0.1, 0, D);
  kc_val fw = W("mlp.fc.weight", 8, 0.3, 0, D, F), fb = W("mlp.fc.bias", 9, 0.1, 0, F);
  kc_val mw = W("mlp.proj.weight", 10, 0.3, 0, F, D), mb = W("mlp.proj.bias", 11, 0.1, 0, D);
  kc_val hw = W("head.weight", 12, 0.3, 0, D, V);

  kc_val h = kc_layer_norm(g, x, ln1w, ln1b, 1e-5f); /* the fused op */
  kc_val qkv = linear(g, h, qkvw, qkvb), parts[3];
  kc_split(g, qkv, -1, 3, NULL, parts);
  kc_val hs = kc_const_i64s(g, 4, (int64_t[]){B, S, H, hd});
  kc_val q = kc_transpose(g, kc_reshape(g, parts[0], hs), 4, (int64_t[]){0, 2, 1, 3});
  kc_val k = kc_transpose(g, kc_reshape(g, parts[1], hs), 4, (int64_t[]){0, 2, 3, 1});
  kc_val v = kc_transpose(g, kc_reshape(g, parts[2], hs), 4, (int64_t[]){0, 2, 1, 3});
  float mask[16];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++)
      mask[i * 4 + j] = j > i ? -1e9f : 0.0f;
  kc_val m = kc_constant(g, KC_F32, 2, (int64_t[]){S, S}, mask);
  kc_val sc = kc_add(g, kc_mul(g, kc_matmul(g, q, k), kc_const_f32(g, 0.5f)), m);
  kc_val o = kc_matmul(g, kc_softmax(g, sc, -1), v);
  o = kc_reshape(g, kc_transpose(g, o, 4, (int64_t[]){0, 2, 1, 3}),
                 kc_const_i64s(g, 3, (int64_t[]){B, S, D}));
  kc_val x2 = kc_add(g, x, linear(g, o, pw, pb));
  kc_val h2 = kc_layer_normalization(g, x2, ln2w, ln2b, -1, 1e-5f); /* the ONNX op */
  kc_val mm = kc_gelu(g, linear(g, h2, fw, fb), 1);
  kc_val y = kc_add(g, x2, linear(g, mm, mw, mb));
  xent_loss(g, kc_matmul(g, y, hw), B * S, V);
}

/* token embedding with repeated ids, as grad_ref.py's embed() */
static void build_embed(kc_graph *g) {
  kc_val ids = kc_input(g, "ids", KC_I64, 2, (kc_dim[]){2, 5});
  kc_val wte = W("wte", 0, 0.3, 0, 7, 6), hw = W("head.weight", 1, 0.3, 0, 6, 7);
  kc_val h = kc_tanh(g, kc_gather(g, wte, ids, 0));
  xent_loss(g, kc_matmul(g, h, hw), 10, 7);
}

static void check_model(const char *model, void (*build)(kc_graph *), int64_t xn,
                        const char *target) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, model);
  build(g);
  assert_int_equal(kc_graph_status(g), KC_OK);
  const char *all = "*";
  if (kc_grad(g, "loss", 1, &all) != KC_OK) fail_msg("kc_grad(%s): %s", model, kc_last_error(ctx));
  /* the gradient graph prints and parses back to the same text */
  char *text = kc_graph_print_str(g);
  kc_graph *back = NULL;
  assert_int_equal(kc_graph_parse(ctx, text, model, &back), KC_OK);
  char *text2 = kc_graph_print_str(back);
  assert_string_equal(text, text2);
  assert_int_equal(kc_graph_verify(g), KC_OK);
  free(text);
  free(text2);
  kc_graph_free(back);
  kc_module *m = NULL;
  kc_compile_options co = {.target = target};
  kc_status cs = kc_compile(ctx, g, &co, &m);
  if (cs == KC_ERR_UNSUPPORTED && target) { /* no GPU (or no emulation) here */
    print_message("%s on %s: %s\n", model, target, kc_last_error(ctx));
    kc_graph_free(g);
    kc_context_free(ctx);
    skip();
    return;
  }
  if (cs != KC_OK) fail_msg("%s: %s", model, kc_last_error(ctx));
  /* the pipeline fused forward and backward together: count what it made */
  const kc_graph *cg = kc_module_graph(m);
  uint32_t fused = 0, ep = 0, nodes = 0;
  for (uint32_t i = 0; i < cg->nnodes; i++) {
    fused += cg->nodes[i].op == KC_OP_FUSED;
    ep += cg->nodes[i].op == KC_OP_MATMUL_EP;
    nodes += cg->nodes[i].op != KC_OP_NOP;
  }
  print_message("%s: %u nodes after the pipeline, %u fused regions, %u matmul_ep\n", model, nodes,
                fused, ep);
  assert_true(fused > 0);
  /* the one input: x (grad_ref.py's inputs()) or token ids (its embed()) */
  kc_val xv = kc_graph_input(g, 0);
  int64_t dims[KC_MAX_RANK];
  kc_dim d[KC_MAX_RANK];
  int r = kc_val_rank(g, xv);
  kc_val_dims(g, xv, d);
  for (int i = 0; i < r; i++)
    dims[i] = d[i];
  float *x = model_input(xn);
  int64_t ids[10] = {1, 4, 0, 3, 6, 2, 5, 1, 4, 1};
  bool tok = kc_val_dtype(g, xv) == KC_I64;
  kc_tensor_desc in = tok ? th_desc("ids", KC_I64, r, dims, ids) : th_desc("x", KC_F32, r, dims, x);
  uint32_t nout = kc_graph_num_outputs(g);
  kc_tensor_desc out[32];
  assert_true(nout <= 32);
  th_run(ctx, m, &in, 1, out, nout);
  for (uint32_t o = 0; o < nout; o++) {
    const char *name = kc_graph_output_name(g, o);
    char path[512], base[256];
    snprintf(base, sizeof base, "%s", name);
    char *dot = strstr(base, ".grad");
    if (dot) *dot = 0;
    snprintf(path, sizeof path, "%s/models/grad_ref/%s/%s.bin", g_tests_dir, model, base);
    size_t len = 0;
    double *ref = (double *)th_read_file(path, &len);
    if (!ref) fail_msg("cannot read %s", path);
    int64_t n = th_numel(out[o].rank, out[o].dims);
    assert_int_equal(out[o].dtype, KC_F32);
    assert_int_equal((int64_t)len, n * 8);
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < n; i++)
      mx = fmax(mx, fabs(ref[i]));
    const float *a = out[o].data;
    for (int64_t i = 0; i < n; i++)
      worst = fmax(worst, fabs(a[i] - ref[i]));
    print_message("%s %s %-22s max |ref| %.3g, max |kernc - torch| %.3g\n", target ? target : "cpu",
                  model, name, mx, worst);
    if (!(worst <= 1e-4 * mx + 1e-6))
      fail_msg("%s: %s differs from PyTorch by %g (max |ref| %g)", model, name, worst, mx);
    free(ref);
  }
  free(x);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void test_mlp_vs_torch(void **state) {
  (void)state;
  check_model("mlp", build_mlp, 4 * 8, NULL);
}

static void test_block_vs_torch(void **state) {
  (void)state;
  check_model("block", build_block, 2 * 4 * 8, NULL);
}

static void test_embed_vs_torch(void **state) {
  (void)state;
  check_model("embed", build_embed, 0, NULL);
}

/* The same on the CUDA target: skipped without a GPU; runs under tests/cuda_emu's emulated
 * driver (LD_LIBRARY_PATH=build/tests/cuda_emu/lib, see the report of that folder). */
static void test_models_cuda(void **state) {
  (void)state;
  check_model("mlp", build_mlp, 4 * 8, "cuda");
  check_model("block", build_block, 2 * 4 * 8, "cuda");
  check_model("embed", build_embed, 0, "cuda");
}

/*
 * kc_grad on an imported ONNX test model (tests/models/NAME/model.onnx): loss = sum(y * y) of
 * its first output, gradients for every float initializer, compared per PyTorch parameter with
 * tests/models/grad_ref_models.py's (map.txt: which initializers hold a parameter, transposed
 * or not; a tied parameter sums its initializers' gradients). Runs with 2 threads and 1: the
 * same bits (fixed summation orders).
 */
static void check_onnx_model(const char *name, uint32_t npat, const char **pats) {
  kc_context *ctx = kc_context_new();
  kc_context_options(ctx)->threads = 2;
  char path[512];
  snprintf(path, sizeof path, "%s/models/%s/model.onnx", g_tests_dir, name);
  kc_graph *g = NULL;
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_val y = kc_graph_output(g, 0);
  kc_output(g, kc_reduce_sum(g, kc_mul(g, y, y), 0, NULL, 0), "loss");
  uint32_t nfwd = kc_graph_num_outputs(g);
  if (kc_grad(g, "loss", npat, pats) != KC_OK)
    fail_msg("kc_grad(%s): %s", name, kc_last_error(ctx));
  kc_module *m = NULL;
  if (kc_compile(ctx, g, NULL, &m) != KC_OK) fail_msg("%s: %s", name, kc_last_error(ctx));
  uint32_t nin = kc_graph_num_inputs(g), nout = kc_graph_num_outputs(g);
  int64_t *ids[4];
  kc_tensor_desc in[4], *out = calloc(nout, sizeof *out);
  assert_true(nin <= 4);
  for (uint32_t j = 0; j < nin; j++) {
    snprintf(path, sizeof path, "%s/models/grad_ref/%s/input_%u.bin", g_tests_dir, name, j);
    size_t len = 0;
    ids[j] = (int64_t *)th_read_file(path, &len);
    if (!ids[j] || len != 7 * 8) fail_msg("cannot read %s", path);
    in[j] = th_desc(kc_graph_input_name(g, j), KC_I64, 2, (int64_t[]){1, 7}, ids[j]);
  }
  th_run(ctx, m, in, nin, out, nout);
  /* the same bits with one thread (the module above runs two) */
  kc_module *m1 = NULL;
  kc_compile_options one = {.threads = 1};
  if (kc_compile(ctx, g, &one, &m1) != KC_OK) fail_msg("%s: %s", name, kc_last_error(ctx));
  kc_tensor_desc *out1 = calloc(nout, sizeof *out1);
  th_run(ctx, m1, in, nin, out1, nout);
  for (uint32_t o = 0; o < nout; o++)
    if (memcmp(out[o].data, out1[o].data, th_nbytes(&out[o])) != 0)
      fail_msg("%s: output %s differs between 1 and 2 threads", name, kc_graph_output_name(g, o));
  free(out1);
  kc_module_free(m1);
  snprintf(path, sizeof path, "%s/models/grad_ref/%s/loss.bin", g_tests_dir, name);
  double *rl = (double *)th_read_file(path, NULL);
  if (!rl) fail_msg("cannot read %s", path);
  double lk = *(const float *)out[nfwd - 1].data;
  print_message("%s loss %.7g, PyTorch %.7g\n", name, lk, *rl);
  assert_true(fabs(lk - *rl) <= 1e-5 * fabs(*rl));
  free(rl);
  snprintf(path, sizeof path, "%s/models/grad_ref/%s/map.txt", g_tests_dir, name);
  char *map = th_read_file(path, NULL);
  if (!map) fail_msg("cannot read %s", path);
  /* one parameter at a time: sum its initializers' gradients, compare */
  int params = 0;
  double ratio = 0; /* the largest max |kernc - torch| / max |torch| of a parameter */
  for (char *line = map; *line;) {
    char iname[256], pname[256];
    int t, used;
    if (sscanf(line, "%255s %255s %d%n", iname, pname, &t, &used) != 3) break;
    char *next = strchr(line, '\n');
    next = next ? next + 1 : line + strlen(line);
    bool first = true; /* the first line naming pname does the comparison */
    for (char *l2 = map; l2 < line; l2 = strchr(l2, '\n') + 1) {
      char a[256], b[256];
      int tt;
      if (sscanf(l2, "%255s %255s %d", a, b, &tt) == 3 && strcmp(b, pname) == 0) first = false;
    }
    line = next;
    if (!first) continue;
    snprintf(path, sizeof path, "%s/models/grad_ref/%s/%s.bin", g_tests_dir, name, pname);
    size_t len = 0;
    float *ref = (float *)th_read_file(path, &len);
    if (!ref) fail_msg("cannot read %s", path);
    size_t n = len / 4;
    double *sum = calloc(n, sizeof *sum);
    for (char *l2 = map; *l2; l2 = strchr(l2, '\n') + 1) {
      char a[256], b[256], gname[300];
      int tt;
      if (sscanf(l2, "%255s %255s %d", a, b, &tt) != 3 || strcmp(b, pname) != 0) continue;
      snprintf(gname, sizeof gname, "%s.grad", a);
      uint32_t o = 0;
      while (o < nout && strcmp(kc_graph_output_name(g, o), gname) != 0)
        o++;
      if (o == nout) fail_msg("%s: no output %s", name, gname);
      const float *d = out[o].data;
      assert_int_equal((size_t)th_numel(out[o].rank, out[o].dims), n);
      int64_t rows = out[o].rank == 2 ? out[o].dims[0] : 1, cols = (int64_t)n / rows;
      for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
          sum[tt ? c * rows + r : r * cols + c] += d[r * cols + c];
    }
    double mx = 0, worst = 0;
    for (size_t k = 0; k < n; k++) {
      mx = fmax(mx, fabs(ref[k]));
      worst = fmax(worst, fabs(sum[k] - ref[k]));
    }
    if (!(worst <= 2e-4 * mx + 1e-6))
      fail_msg("%s: gradient of %s differs from PyTorch by %g (max |ref| %g)", name, pname, worst,
               mx);
    if (mx > 1e-3) ratio = fmax(ratio, worst / mx); /* else: a gradient of ~0 (unused) */
    if (mx <= 1e-3)
      print_message("%s: %s has max |grad| %.3g, kernc off by %.3g\n", name, pname, mx, worst);
    params++;
    free(sum);
    free(ref);
  }
  print_message(
      "%s: %d parameter gradients equal PyTorch's (max |kernc - torch| / max |torch| of a "
      "parameter at most %.2g)\n",
      name, params, ratio);
  assert_true(params > 10);
  free(map);
  for (uint32_t j = 0; j < nin; j++)
    free(ids[j]);
  free(out);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void test_onnx_models_vs_torch(void **state) {
  (void)state;
  const char *all = "*";
  check_onnx_model("gpt2_tiny", 1, &all);
  check_onnx_model("llama_tiny", 1, &all);
  check_onnx_model("bert_tiny", 1, &all);
  /* ONNX Attention-23 imported as kernc's attention (causal GQA; scale and a causal + padding
   * mask in layer 1): the attention backward; the rotary caches are constants */
  const char *params[] = {"l*", "wte"};
  check_onnx_model("opset23_tiny", 2, params);
}

int main(int argc, char **argv) {
  if (argc > 2) g_tests_dir = argv[2];
  /* --cuda-only: the CUDA group alone (test_grad_cuda_emulated; the plain run has the rest) */
  if (argc > 3 && strcmp(argv[3], "--cuda-only") == 0) cmocka_set_test_filter("test_models_cuda");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_rule_has_a_case), cmocka_unit_test(test_scatter_add_values),
      cmocka_unit_test(test_missing_rules_listed),  cmocka_unit_test(test_frozen_and_unused),
      cmocka_unit_test(test_finite_differences),    cmocka_unit_test(test_mlp_vs_torch),
      cmocka_unit_test(test_block_vs_torch),        cmocka_unit_test(test_embed_vs_torch),
      cmocka_unit_test(test_models_cuda),           cmocka_unit_test(test_onnx_models_vs_torch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
