/*
 * passes/fuse_norm.c - the fuse-norm pass: normalizations over the last axis written out as
 * reductions and arithmetic (opset < 17 LayerNorm, RMSNorm as x * rsqrt(mean(x^2) + eps)), and
 * the ONNX LayerNormalization / RMSNormalization ops, become kernc's layer_norm / rms_norm.
 *
 * The rules build the fused op in steps, each a small declarative pattern run to a fixpoint:
 *   1. the core  d / sqrt(mean(d*d) + eps)  (or d * reciprocal(sqrt(..)), d * (1 / sqrt(..)),
 *      d * pow(.., -0.5)) becomes rms_norm(d, 1); when d is x - mean(x), read by nothing else,
 *      it becomes layer_norm(x, 1) instead;
 *   2. mul(norm(x, 1), gamma) takes gamma in as the scale;
 *   3. add(layer_norm(x, gamma), beta) takes beta in as the bias.
 * So every optional part is optional without a pattern per combination, and the driver's order
 * (program order, core first) does not matter. Squares written as pow(d, 2) and divisions by
 * constants are canonicalize's job, which runs first; the patterns see mul(d, d).
 * A model that casts to f32 around the norm (Llama's f16 exports) keeps its casts: the core
 * matches the f32 part and the norm computes in f32 as the unfused graph did.
 *
 * Invariants: only a reduction over the last axis alone, with keepdims, matches; eps is a
 * one-element float constant; the centred value d of a layer norm has no reader outside the
 * pattern (the matcher's one-use rule cannot see it, d is read three times, so the rewrite
 * checks); the scale and bias must broadcast to the last axis, else the new node does not type
 * and the driver undoes the rewrite.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Capture slots. */
enum { X, D, EPS, ONE, HALF, G, B };

/* ---- predicates ----------------------------------------------------------------------------- */

/* Does reduce_mean node n reduce the last axis of its input, and only it, keeping it? */
static bool mean_over_last(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  if (kc_node_int(n, "keepdims", 1) == 0) {
    snprintf(why, size, "keepdims=0");
    return false;
  }
  const kc_tensor *t = n->nin > 1 && n->in[1].id ? kc_const_tensor(g, n->in[1]) : NULL;
  if (!t || kc_tensor_numel(t) != 1) {
    snprintf(why, size, "axes are not one constant axis");
    return false;
  }
  int rank = kc_value_of(g, n->in[0])->rank;
  double a = kc_tensor_get(t, 0);
  if (a < 0) a += rank;
  if (rank < 1 || a != rank - 1) {
    snprintf(why, size, "reduces axis %g of a rank-%d tensor, not the last", kc_tensor_get(t, 0),
             rank);
    return false;
  }
  return true;
}

/* ONNX layer_normalization / rms_normalization normalizing the last axis alone. */
static bool onnx_last_axis(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  int rank = kc_value_of(g, n->in[0])->rank;
  int64_t axis = kc_node_int(n, "axis", -1);
  if (axis < 0) axis += rank;
  if (rank >= 1 && axis == rank - 1) return true;
  snprintf(why, size, "axis %lld of a rank-%d tensor is not the last",
           (long long)kc_node_int(n, "axis", -1), rank);
  return false;
}

/* ---- the core ------------------------------------------------------------------------------- */

/* The reduction rows every core form ends with: sqrt(mean(d * d) + eps) from row r. */
#define P_VARIANCE(r)                                                                              \
  P_OP(ADD, P_SUB((r) + 1), P_CONST_SCALAR(EPS)),                                                  \
      P_OPIF(REDUCE_MEAN, mean_over_last, P_SUB((r) + 2), P_ANY), P_OP(MUL, P_CAP(D), P_CAP(D))

/* div(d, sqrt(mean(d * d) + eps))  ->  rms_norm(d, 1) or layer_norm(x, 1) */
static const kc_pat core_div[] = {
    P_OP(DIV, P_CAP(D), P_SUB(1)),
    P_OP(SQRT, P_SUB(2)),
    P_VARIANCE(2),
};

/* mul(d, reciprocal(sqrt(mean(d * d) + eps)))  ->  rms_norm(d, 1) or layer_norm(x, 1) */
static const kc_pat core_recip[] = {
    P_OP(MUL, P_CAP(D), P_SUB(1)),
    P_OP(RECIPROCAL, P_SUB(2)),
    P_OP(SQRT, P_SUB(3)),
    P_VARIANCE(3),
};

/* mul(d, div(1, sqrt(mean(d * d) + eps)))  ->  rms_norm(d, 1) or layer_norm(x, 1)
 * (torch exports rsqrt as 1 / sqrt) */
static const kc_pat core_div1[] = {
    P_OP(MUL, P_CAP(D), P_SUB(1)),
    P_OP(DIV, P_CONST_EQ(ONE, 1.0), P_SUB(2)),
    P_OP(SQRT, P_SUB(3)),
    P_VARIANCE(3),
};

/* mul(d, pow(mean(d * d) + eps, -0.5))  ->  rms_norm(d, 1) or layer_norm(x, 1) */
static const kc_pat core_pow[] = {
    P_OP(MUL, P_CAP(D), P_SUB(1)),
    P_OP(POW, P_SUB(2), P_CONST_EQ(HALF, -0.5)),
    P_VARIANCE(2),
};

/* eps as the attribute: the shortest decimal of the f32 value for f32 inputs, so it prints as
 * exported (1e-05) and rounds back to the same f32 in the kernel. */
static bool eps_value(const kc_graph *g, kc_val c, double *eps) {
  const kc_tensor *t = kc_const_tensor(g, c);
  if (!t || !kc_dtype_is_float(t->dtype) || kc_tensor_numel(t) != 1) return false;
  double e = kc_tensor_get(t, 0);
  if (!isfinite(e) || e < 0) return false;
  if (t->dtype != KC_F64) {
    char buf[64];
    kc_fmt_float(buf, sizeof buf, (float)e);
    e = strtod(buf, NULL);
  }
  *eps = e;
  return true;
}

/*
 * x when d is sub(x, reduce_mean(x)) over the last axis and nothing outside the core reads d
 * (three reads: mul(d, d) and the normalizing node) or the mean; else {0}.
 */
static kc_val centred_input(kc_rewriter *rw, kc_val d) {
  const kc_graph *g = kc_rw_graph(rw);
  uint32_t def = g->vals[d.id].def;
  if (!def || kc_rw_uses(rw, d) != 3 || kc_rw_is_output(rw, d)) return (kc_val){0};
  const kc_node *sub = &g->nodes[def - 1];
  if (sub->op != KC_OP_SUB || sub->nin != 2) return (kc_val){0};
  kc_val x = sub->in[0], mean = sub->in[1];
  uint32_t mdef = g->vals[mean.id].def;
  if (!mdef || kc_rw_uses(rw, mean) != 1 || kc_rw_is_output(rw, mean)) return (kc_val){0};
  const kc_node *rm = &g->nodes[mdef - 1];
  char why[128];
  if (rm->op != KC_OP_REDUCE_MEAN || rm->in[0].id != x.id ||
      !mean_over_last(g, rm, why, sizeof why))
    return (kc_val){0};
  return x;
}

/* A scalar 1 of dtype t: the scale of a norm that has none (yet). */
static kc_val one_of(kc_rewriter *rw, kc_dtype t) {
  unsigned char buf[16] = {0};
  kc_tensor_put(t, buf, 0, 1.0);
  return kc_rw_const(rw, t, 0, NULL, buf);
}

static kc_val make_norm(kc_rewriter *rw, kc_op op, kc_val x, kc_val scale, kc_val bias,
                        double eps) {
  kc_graph *g = kc_rw_graph(rw);
  kc_val in[3] = {x, scale, bias}, out;
  uint32_t ni = kc_rw_node(rw, op, bias.id ? 3 : 2, in, 1, &out);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_int(g, ni, "axis", -1);
  kc_node_set_float(g, ni, "eps", eps);
  return out;
}

static kc_status fuse_core(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  double eps;
  if (!eps_value(g, m->cap[EPS], &eps))
    return kc_rw_decline(rw, "eps %%%u is not a finite, non-negative float", m->cap[EPS].id);
  kc_val d = m->cap[D], x = centred_input(rw, d);
  kc_dtype t = kc_value_of(g, d)->dtype;
  if (!kc_dtype_is_float(t)) return kc_rw_decline(rw, "%%%u is not a float", d.id);
  kc_val one = one_of(rw, t);
  kc_val y = x.id ? make_norm(rw, KC_OP_LAYER_NORM, x, one, (kc_val){0}, eps)
                  : make_norm(rw, KC_OP_RMS_NORM, d, one, (kc_val){0}, eps);
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), y);
  return KC_OK;
}

/* ---- scale and bias ------------------------------------------------------------------------- */

/* mul(layer_norm|rms_norm(x, 1), gamma)  ->  layer_norm|rms_norm(x, gamma) */
static const kc_pat scale[] = {
    P_OP(MUL, P_SUB(1), P_CAP(G)),
    P_OP2(LAYER_NORM, RMS_NORM, P_CAP(X), P_CONST_EQ(ONE, 1.0)),
};

static kc_status take_scale(kc_rewriter *rw, const kc_match *m) {
  const kc_node *n = &kc_rw_graph(rw)->nodes[m->node[1]];
  kc_op op = n->op;
  double eps = kc_node_float(n, "eps", 1e-5);
  kc_val y = make_norm(rw, op, m->cap[X], m->cap[G], (kc_val){0}, eps);
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), y);
  return KC_OK;
}

/* add(layer_norm(x, gamma), beta)  ->  layer_norm(x, gamma, beta) */
static const kc_pat bias[] = {
    P_OP(ADD, P_SUB(1), P_CAP(B)),
    P_OP(LAYER_NORM, P_CAP(X), P_CAP(G)),
};

static kc_status take_bias(kc_rewriter *rw, const kc_match *m) {
  double eps = kc_node_float(&kc_rw_graph(rw)->nodes[m->node[1]], "eps", 1e-5);
  kc_val y = make_norm(rw, KC_OP_LAYER_NORM, m->cap[X], m->cap[G], m->cap[B], eps);
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), y);
  return KC_OK;
}

/* ---- the ONNX ops --------------------------------------------------------------------------- */

/* layer_normalization(x, scale, bias?) {axis=last}, mean and inv_std_dev unread
 *   ->  layer_norm(x, scale, bias?) {eps=epsilon} */
static const kc_pat onnx_ln[] = {
    P_OPIF(LAYER_NORMALIZATION, onnx_last_axis, P_CAP(X), P_CAP(G), P_ANY),
};

/* rms_normalization(x, scale) {axis=last}  ->  rms_norm(x, scale) {eps=epsilon} */
static const kc_pat onnx_rms[] = {
    P_OPIF(RMS_NORMALIZATION, onnx_last_axis, P_CAP(X), P_CAP(G)),
};

static kc_status from_onnx(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  const kc_node *n = &g->nodes[m->node[0]];
  for (uint32_t j = 1; j < n->nout; j++)
    if (n->out[j].id && kc_rw_uses(rw, n->out[j]))
      return kc_rw_decline(rw, "its %s output %%%u is used", j == 1 ? "mean" : "inv_std_dev",
                           n->out[j].id);
  kc_op op = n->op == KC_OP_LAYER_NORMALIZATION ? KC_OP_LAYER_NORM : KC_OP_RMS_NORM;
  kc_val b = n->nin > 2 ? n->in[2] : (kc_val){0};
  /* the attribute is a float: as an f32 value, print it as one */
  double eps = kc_node_float(n, "epsilon", 1e-5);
  char buf[64];
  kc_fmt_float(buf, sizeof buf, (float)eps);
  if (kc_value_of(g, m->cap[X])->dtype != KC_F64) eps = strtod(buf, NULL);
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), make_norm(rw, op, m->cap[X], m->cap[G], b, eps));
  return KC_OK;
}

static const kc_rule rules[] = {
    KC_RULE("norm-onnx-layer", onnx_ln, from_onnx),
    KC_RULE("norm-onnx-rms", onnx_rms, from_onnx),
    KC_RULE("norm-div", core_div, fuse_core),
    KC_RULE("norm-reciprocal", core_recip, fuse_core),
    KC_RULE("norm-div1", core_div1, fuse_core),
    KC_RULE("norm-pow", core_pow, fuse_core),
    KC_RULE("norm-scale", scale, take_scale),
    KC_RULE("norm-bias", bias, take_bias),
};

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  return kc_rules_run(g, pc, rules, KC_LEN(rules), true);
}

const kc_pass kc_pass_fuse_norm = {
    "fuse-norm", run,
    "layer_norm / rms_norm from their decomposed forms and the ONNX normalization ops"};
