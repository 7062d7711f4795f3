/*
 * passes/grad_rules_reduce.c - gradient rules (ir/ops.def GRAD column) of the reductions and
 * row-wise ops: reduce_sum / reduce_mean / reduce_max, softmax, log_softmax, cumsum.
 *
 * A reduction's adjoint is the result's adjoint put back on the reduced axes (unsqueezed when
 * keepdims is 0) and expanded to the input's shape. The reduce axes must be known when the
 * gradient is built (a constant or inferred axes input); a mean divides by the reduced element
 * count, built from the (possibly symbolic) dims. reduce_max shares the adjoint evenly among
 * tied maxima, as PyTorch's amax.
 */
#include "passes/grad.h"

#include <stdlib.h>

#define G (c->g)
#define DY (c->dout[0])
#define X (c->n.in[0])
#define Y (c->n.out[0])

/* The reduced axes of reduce node c->n, normalized and sorted; *n = -1: identity (empty axes
 * with noop_with_empty_axes). */
static kc_status reduce_axes(kc_grad_call *c, int64_t *axes, int *n) {
  int rank = kc_value_of(G, X)->rank;
  int64_t raw[KC_MAX_RANK];
  uint32_t k = 0;
  if (c->n.nin > 1 && c->n.in[1].id) {
    if (!kc_gu_known_ints(G, c->n.in[1], raw, KC_MAX_RANK, &k))
      return kc_node_errorf(G, &G->nodes[c->node], KC_ERR_UNSUPPORTED,
                            "autodiff: the reduce axes must be known when building the gradient");
  }
  if (k == 0) {
    if (kc_node_int(&c->n, "noop_with_empty_axes", 0)) {
      *n = -1;
      return KC_OK;
    }
    for (int i = 0; i < rank; i++)
      axes[i] = i;
    *n = rank;
    return KC_OK;
  }
  bool seen[KC_MAX_RANK] = {0};
  for (uint32_t i = 0; i < k; i++)
    seen[kc_gu_axis(raw[i], rank)] = true;
  *n = 0;
  for (int i = 0; i < rank; i++)
    if (seen[i]) axes[(*n)++] = i;
  return KC_OK;
}

/* dy with the reduced axes back (size 1), so it broadcasts against x. */
static kc_val keep(kc_grad_call *c, kc_val d, const int64_t *axes, int n) {
  if (kc_node_int(&c->n, "keepdims", 1) || n == 0) return d;
  return kc_unsqueeze(G, d, n, axes);
}

/* The number of elements the reduction folds into one, as a scalar-like tensor of x's dtype. */
static kc_val count(kc_grad_call *c, const int64_t *axes, int n) {
  const kc_value *x = kc_value_of(G, X);
  kc_dim d = 1;
  for (int i = 0; i < n; i++)
    d = kc_dim_mul(G, d, x->dims[axes[i]]);
  int64_t v;
  if (kc_dim_const(G, d, &v)) return kc_gu_like(G, DY, (double)v);
  return kc_cast(G, kc_gu_shape_of_dims(G, 1, &d), kc_value_of(G, DY)->dtype);
}

kc_status kc_grad_reduce_sum(kc_grad_call *c) {
  int64_t axes[KC_MAX_RANK];
  int n;
  kc_status s = reduce_axes(c, axes, &n);
  if (s != KC_OK) return s;
  if (n < 0) {
    c->din[0] = DY;
    return KC_OK;
  }
  c->din[0] = kc_expand(G, keep(c, DY, axes, n), kc_shape(G, X));
  return KC_OK;
}

kc_status kc_grad_reduce_mean(kc_grad_call *c) {
  int64_t axes[KC_MAX_RANK];
  int n;
  kc_status s = reduce_axes(c, axes, &n);
  if (s != KC_OK) return s;
  if (n < 0) {
    c->din[0] = DY;
    return KC_OK;
  }
  kc_val d = kc_div(G, keep(c, DY, axes, n), count(c, axes, n));
  c->din[0] = kc_expand(G, d, kc_shape(G, X));
  return KC_OK;
}

kc_status kc_grad_reduce_max(kc_grad_call *c) {
  int64_t axes[KC_MAX_RANK];
  int n;
  kc_status s = reduce_axes(c, axes, &n);
  if (s != KC_OK) return s;
  if (n < 0) {
    c->din[0] = DY;
    return KC_OK;
  }
  kc_dtype t = kc_value_of(G, X)->dtype;
  kc_val mask = kc_cast(G, kc_equal(G, X, keep(c, Y, axes, n)), t);
  kc_val ties = kc_reduce_sum(G, mask, n, axes, 1);
  c->din[0] = kc_mul(G, mask, kc_div(G, keep(c, DY, axes, n), ties));
  return KC_OK;
}

/* y = softmax(x): dx = y (dy - sum(dy y)) along the axis */
kc_status kc_grad_softmax(kc_grad_call *c) {
  int axis = kc_gu_axis(kc_node_int(&c->n, "axis", -1), kc_value_of(G, X)->rank);
  kc_val s = kc_gu_sum_axis(G, kc_mul(G, DY, Y), axis);
  c->din[0] = kc_mul(G, Y, kc_sub(G, DY, s));
  return KC_OK;
}

/* y = log_softmax(x): dx = dy - exp(y) sum(dy) along the axis */
kc_status kc_grad_log_softmax(kc_grad_call *c) {
  int axis = kc_gu_axis(kc_node_int(&c->n, "axis", -1), kc_value_of(G, X)->rank);
  kc_val s = kc_gu_sum_axis(G, DY, axis);
  c->din[0] = kc_sub(G, DY, kc_mul(G, kc_exp(G, Y), s));
  return KC_OK;
}

/* cumsum's adjoint is the cumsum of dy in the other direction (exclusive stays exclusive). */
kc_status kc_grad_cumsum(kc_grad_call *c) {
  kc_val in[2] = {DY, c->n.in[1]};
  uint32_t ni = kc_gu_node(G, KC_OP_CUMSUM, 2, in, 1, NULL, &c->n);
  if (ni != UINT32_MAX) kc_node_set_int(G, ni, "reverse", !kc_node_int(&c->n, "reverse", 0));
  c->din[0] = kc_gu_finish(G, ni);
  return KC_OK;
}
