/*
 * frontend/onnx_loss.c - ONNX SoftmaxCrossEntropyLoss (opset 12+) and NegativeLogLikelihoodLoss
 * (opset 12+) as builder compositions at import, so they need no op of their own: every piece
 * has a kernel and a gradient rule, and kc_grad differentiates the loss through them.
 *
 * x [N, C, D1..Dk] (scores; for NLL already log-probabilities), labels [N, D1..Dk], optional
 * weight [C]; classes on axis 1. For SCE lp = log_softmax(x, 1) (also output 1, log_prob, when
 * asked), for NLL lp = x. The label's entry is picked by a one-hot compare:
 *   hit  = (labels[:, None] == range(C)[:, None..]) & (labels != ignore_index)[:, None]
 *   l    = -sum_c where(hit, w_c * lp, 0)          (w_c = weight[c], or 1)    [N, D1..Dk]
 *   wsum = sum_c where(hit, w_c, 0)                (the weight of each position)
 * reduction none: l; sum: sum(l); mean (the default): sum(l) / sum(wsum), ONNX's weighted mean
 * (its reference divides by the summed weights of the labels not ignored). No softmax tensor
 * exists beside log_softmax's result. A label outside [0, C) that is not ignore_index picks
 * nothing (ONNX leaves it undefined).
 * SoftmaxCrossEntropyLoss without class weights whose log_prob output is not used builds on the
 * fused softmax_xent op instead (classes moved last by a transpose when there are spatial dims):
 * no log_softmax tensor is stored, and the backward recomputes the softmax from the saved
 * log-sum-exp. There a label outside [0, C) that is not ignore_index is a run-time error (no
 * ignore_index attribute: every label must be a class).
 */
#include "onnx_internal.h"

#include <stdint.h>
#include <string.h>

/* SCE without weights on softmax_xent: scores [N, C, D...] -> [N, D..., C]; reduction red. */
static kc_val fused(kc_graph *g, kc_val x, kc_val labels, int64_t ignore, const char *red) {
  int r = kc_value_of(g, x)->rank;
  if (r > 2) {
    int64_t perm[KC_MAX_RANK];
    perm[0] = 0;
    for (int i = 1; i < r - 1; i++)
      perm[i] = i + 1;
    perm[r - 1] = 1;
    x = kc_transpose(g, x, r, perm);
  }
  kc_val in[2] = {x, labels}, l;
  uint32_t ni = kc_graph_add_node(g, KC_OP_SOFTMAX_XENT, 2, in, 1, &l);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_int(g, ni, "ignore_index", ignore);
  kc_status s = kc_node_infer(g, ni);
  if (s != KC_OK) {
    kc_graph_fail(g, s);
    return (kc_val){0};
  }
  if (strcmp(red, "none") == 0) return l;
  kc_val y = kc_reduce_sum(g, l, 0, NULL, 0);
  if (strcmp(red, "sum") == 0) return y;
  /* mean over the positions not ignored (ONNX's weighted mean with weights 1) */
  kc_val keep = kc_not(g, kc_equal(g, labels, kc_const_i64(g, ignore)));
  kc_dtype t = kc_value_of(g, l)->dtype;
  return kc_div(g, y, kc_reduce_sum(g, kc_cast(g, keep, t), 0, NULL, 0));
}

/* Append the loss of np onto im->g; binds its outputs. */
static kc_status build(onnx_imp *im, const Onnx__NodeProto *np, bool softmax) {
  kc_graph *g = im->g;
  uint32_t first = g->nnodes;
  kc_val x = kc_onnx_input(im, np, 0), labels = kc_onnx_input(im, np, 1);
  kc_val weight = np->n_input > 2 ? kc_onnx_input(im, np, 2) : (kc_val){0};
  if (!x.id || !labels.id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs the scores and the labels");
  const kc_value *xv = kc_value_of(g, x), *lv = kc_value_of(g, labels);
  int r = xv->rank;
  kc_dtype t = xv->dtype;
  if (!kc_dtype_is_float(t) || r < 2 || r > KC_MAX_RANK)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "scores must be float of rank >= 2, got %s rank %d",
                     kc_dtype_name(t), r);
  if (!kc_dtype_is_int(lv->dtype) || lv->rank != r - 1)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "labels must be integers of rank %d, got %s rank %d",
                     r - 1, kc_dtype_name(lv->dtype), lv->rank);
  const Onnx__AttributeProto *ra = kc_onnx_attr(np, "reduction");
  char red[16] = "mean";
  if (ra) snprintf(red, sizeof red, "%.*s", (int)ra->s.len, (const char *)ra->s.data);
  if (strcmp(red, "mean") != 0 && strcmp(red, "sum") != 0 && strcmp(red, "none") != 0)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "unknown reduction '%s'", red);
  const Onnx__AttributeProto *ia = kc_onnx_attr(np, "ignore_index");

  if (lv->dtype != KC_I64) labels = kc_cast(g, labels, KC_I64);
  bool log_prob = np->n_output > 1 && np->output[1] && *np->output[1];
  if (softmax && !weight.id && !log_prob)
    return kc_onnx_finish(im, np, first, fused(g, x, labels, ia ? ia->i : INT64_MIN, red));
  kc_val lp = softmax ? kc_log_softmax(g, x, 1) : x;
  /* range(C) shaped [C, 1, .., 1] (k ones), against labels [N, 1, D1..Dk] */
  kc_val ncls = kc_gather(g, kc_shape(g, x), kc_const_i64(g, 1), 0);
  kc_val cls = kc_range(g, kc_const_i64(g, 0), ncls, kc_const_i64(g, 1));
  int64_t axes[KC_MAX_RANK], one = 1;
  for (int i = 0; i < r - 2; i++)
    axes[i] = i + 1;
  if (r > 2) cls = kc_unsqueeze(g, cls, r - 2, axes);
  kc_val hit = kc_equal(g, kc_unsqueeze(g, labels, 1, &one), cls);
  if (ia) {
    kc_val keep = kc_not(g, kc_equal(g, labels, kc_const_i64(g, ia->i)));
    hit = kc_and(g, hit, kc_unsqueeze(g, keep, 1, &one));
  }
  kc_val zero = kc_const_f32(g, 0), w = {0};
  if (t != KC_F32) zero = kc_cast(g, zero, t);
  if (weight.id) {
    w = weight;
    if (r > 2) w = kc_unsqueeze(g, w, r - 2, axes);
  }
  kc_val picked = kc_where(g, hit, w.id ? kc_mul(g, lp, w) : lp, zero);
  kc_val l = kc_neg(g, kc_reduce_sum(g, picked, 1, &one, 0));
  kc_val y = l;
  if (strcmp(red, "none") != 0) y = kc_reduce_sum(g, l, 0, NULL, 0);
  if (strcmp(red, "mean") == 0) {
    kc_val den;
    if (w.id) {
      den = kc_reduce_sum(g, kc_where(g, hit, w, zero), 0, NULL, 0);
    } else {
      den = kc_reduce_sum(g, kc_cast(g, hit, t), 0, NULL, 0);
    }
    y = kc_div(g, y, den);
  }
  kc_status s = kc_onnx_finish(im, np, first, y);
  if (s == KC_OK && softmax && log_prob) s = kc_onnx_bind(im, np, 1, lp);
  return s;
}

kc_status kc_onnx_import_sce_loss(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  return build(im, np, true);
}

kc_status kc_onnx_import_nll_loss(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  return build(im, np, false);
}
