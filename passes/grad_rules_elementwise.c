/*
 * passes/grad_rules_elementwise.c - gradient rules (ir/ops.def GRAD column) of the elementwise
 * ops: one-input math, cast, clip, the broadcasting binary ops, min/max, where, dropout.
 *
 * Conventions of every rule here (passes/grad.h): dy is the adjoint of result 0, an input's
 * adjoint is built only when c->want asks for it, and a broadcasting op's adjoints are summed
 * back to each input's shape (kc_gu_unbroadcast). Ties of min/max (and reduce_max elsewhere)
 * share the adjoint evenly, as PyTorch does for maximum/minimum/amax.
 */
#include "passes/grad.h"

#include <math.h>

#define PI 3.14159265358979323846
#define SQRT1_2 0.70710678118654752440

#define G (c->g)
#define DY (c->dout[0])
#define X (c->n.in[0])
#define Y (c->n.out[0])

static kc_val k(kc_grad_call *c, double v) { return kc_gu_like(G, DY, v); }

kc_status kc_grad_identity(kc_grad_call *c) {
  c->din[0] = DY;
  return KC_OK;
}

kc_status kc_grad_dropout(kc_grad_call *c) {
  /* inference semantics only (y = x); a training-mode dropout would need its mask */
  c->din[0] = DY;
  return KC_OK;
}

kc_status kc_grad_neg(kc_grad_call *c) {
  c->din[0] = kc_neg(G, DY);
  return KC_OK;
}

/* d sqrt(x) = dy / (2 y) */
kc_status kc_grad_sqrt(kc_grad_call *c) {
  c->din[0] = kc_div(G, kc_mul(G, DY, k(c, 0.5)), Y);
  return KC_OK;
}

/* d (1/x) = -dy y^2 */
kc_status kc_grad_reciprocal(kc_grad_call *c) {
  c->din[0] = kc_neg(G, kc_mul(G, DY, kc_mul(G, Y, Y)));
  return KC_OK;
}

/* d |x| = dy sign(x), 0 at 0 */
kc_status kc_grad_abs(kc_grad_call *c) {
  kc_val z = k(c, 0.0);
  kc_val pos = kc_where(G, kc_greater(G, X, z), DY, z);
  c->din[0] = kc_where(G, kc_less(G, X, z), kc_neg(G, DY), pos);
  return KC_OK;
}

kc_status kc_grad_exp(kc_grad_call *c) {
  c->din[0] = kc_mul(G, DY, Y);
  return KC_OK;
}

kc_status kc_grad_log(kc_grad_call *c) {
  c->din[0] = kc_div(G, DY, X);
  return KC_OK;
}

/* d erf(x) = dy 2/sqrt(pi) exp(-x^2) */
kc_status kc_grad_erf(kc_grad_call *c) {
  kc_val e = kc_exp(G, kc_neg(G, kc_mul(G, X, X)));
  c->din[0] = kc_mul(G, DY, kc_mul(G, e, k(c, 2.0 / sqrt(PI))));
  return KC_OK;
}

/* d tanh(x) = dy (1 - y^2) */
kc_status kc_grad_tanh(kc_grad_call *c) {
  c->din[0] = kc_mul(G, DY, kc_sub(G, k(c, 1.0), kc_mul(G, Y, Y)));
  return KC_OK;
}

/* d sigmoid(x) = dy y (1 - y) */
kc_status kc_grad_sigmoid(kc_grad_call *c) {
  c->din[0] = kc_mul(G, DY, kc_mul(G, Y, kc_sub(G, k(c, 1.0), Y)));
  return KC_OK;
}

/* d relu(x) = dy where y > 0 (0 at 0, as PyTorch) */
kc_status kc_grad_relu(kc_grad_call *c) {
  kc_val z = k(c, 0.0);
  c->din[0] = kc_where(G, kc_greater(G, Y, z), DY, z);
  return KC_OK;
}

kc_status kc_grad_sin(kc_grad_call *c) {
  c->din[0] = kc_mul(G, DY, kc_cos(G, X));
  return KC_OK;
}

kc_status kc_grad_cos(kc_grad_call *c) {
  c->din[0] = kc_neg(G, kc_mul(G, DY, kc_sin(G, X)));
  return KC_OK;
}

/*
 * gelu, erf form: d/dx x Phi(x) = Phi(x) + x phi(x), Phi(x) = (1 + erf(x/sqrt2))/2,
 * phi(x) = exp(-x^2/2)/sqrt(2 pi). tanh form: u = sqrt(2/pi) (x + 0.044715 x^3), t = tanh(u),
 * d/dx = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2).
 */
kc_status kc_grad_gelu(kc_grad_call *c) {
  const char *ap = kc_node_string(&c->n, "approximate", "none");
  kc_val x = X, x2 = kc_mul(G, x, x), d;
  if (ap[0] == 't') {
    double s = sqrt(2.0 / PI);
    kc_val inner = kc_add(G, x, kc_mul(G, k(c, 0.044715), kc_mul(G, x2, x)));
    kc_val t = kc_tanh(G, kc_mul(G, k(c, s), inner));
    kc_val a = kc_mul(G, k(c, 0.5), kc_add(G, k(c, 1.0), t));
    kc_val dt = kc_sub(G, k(c, 1.0), kc_mul(G, t, t));
    kc_val du = kc_mul(G, k(c, s), kc_add(G, k(c, 1.0), kc_mul(G, k(c, 3 * 0.044715), x2)));
    d = kc_add(G, a, kc_mul(G, kc_mul(G, k(c, 0.5), x), kc_mul(G, dt, du)));
  } else {
    kc_val cdf = kc_mul(G, k(c, 0.5), kc_add(G, k(c, 1.0), kc_erf(G, kc_mul(G, x, k(c, SQRT1_2)))));
    kc_val pdf = kc_mul(G, kc_exp(G, kc_mul(G, x2, k(c, -0.5))), k(c, 1.0 / sqrt(2 * PI)));
    d = kc_add(G, cdf, kc_mul(G, x, pdf));
  }
  c->din[0] = kc_mul(G, DY, d);
  return KC_OK;
}

/* A float-to-float cast passes the adjoint back in the input's dtype (integer inputs get none:
 * the engine never asks for them). */
kc_status kc_grad_cast(kc_grad_call *c) {
  c->din[0] = kc_cast(G, DY, kc_value_of(G, X)->dtype);
  return KC_OK;
}

/* clip(x, lo, hi) with lo <= hi: x's adjoint where lo <= x <= hi; a bound gets the adjoint where
 * it clipped (summed to its shape). */
kc_status kc_grad_clip(kc_grad_call *c) {
  kc_val lo = c->n.nin > 1 ? c->n.in[1] : (kc_val){0};
  kc_val hi = c->n.nin > 2 ? c->n.in[2] : (kc_val){0};
  kc_val z = k(c, 0.0), d = DY;
  if (lo.id) {
    kc_val below = kc_less(G, X, lo);
    if (c->want[1]) c->din[1] = kc_gu_unbroadcast(G, kc_where(G, below, DY, z), lo);
    d = kc_where(G, below, z, d);
  }
  if (hi.id) {
    kc_val above = kc_greater(G, X, hi);
    if (c->want[2]) c->din[2] = kc_gu_unbroadcast(G, kc_where(G, above, DY, z), hi);
    d = kc_where(G, above, z, d);
  }
  c->din[0] = d;
  return KC_OK;
}

kc_status kc_grad_add(kc_grad_call *c) {
  for (int i = 0; i < 2; i++)
    if (c->want[i]) c->din[i] = kc_gu_unbroadcast(G, DY, c->n.in[i]);
  return KC_OK;
}

kc_status kc_grad_sub(kc_grad_call *c) {
  if (c->want[0]) c->din[0] = kc_gu_unbroadcast(G, DY, c->n.in[0]);
  if (c->want[1]) c->din[1] = kc_gu_unbroadcast(G, kc_neg(G, DY), c->n.in[1]);
  return KC_OK;
}

kc_status kc_grad_mul(kc_grad_call *c) {
  kc_val a = c->n.in[0], b = c->n.in[1];
  if (c->want[0]) c->din[0] = kc_gu_unbroadcast(G, kc_mul(G, DY, b), a);
  if (c->want[1]) c->din[1] = kc_gu_unbroadcast(G, kc_mul(G, DY, a), b);
  return KC_OK;
}

/* y = a / b: da = dy / b, db = -dy y / b */
kc_status kc_grad_div(kc_grad_call *c) {
  kc_val a = c->n.in[0], b = c->n.in[1];
  kc_val q = kc_div(G, DY, b);
  if (c->want[0]) c->din[0] = kc_gu_unbroadcast(G, q, a);
  if (c->want[1]) c->din[1] = kc_gu_unbroadcast(G, kc_neg(G, kc_mul(G, q, Y)), b);
  return KC_OK;
}

/* y = a^b: da = dy b a^(b-1); db = dy y log(a), 0 where a == 0 and b >= 0 (PyTorch's rule). An
 * integer exponent gets no adjoint. */
kc_status kc_grad_pow(kc_grad_call *c) {
  kc_val a = c->n.in[0], b = c->n.in[1];
  kc_dtype ta = kc_value_of(G, a)->dtype;
  kc_val bf = kc_value_of(G, b)->dtype == ta ? b : kc_cast(G, b, ta);
  if (c->want[0]) {
    kc_val p = kc_pow(G, a, kc_sub(G, bf, k(c, 1.0)));
    c->din[0] = kc_gu_unbroadcast(G, kc_mul(G, DY, kc_mul(G, bf, p)), a);
  }
  if (c->want[1]) {
    kc_val z = k(c, 0.0);
    kc_val skip = kc_and(G, kc_equal(G, a, z), kc_not(G, kc_less(G, bf, z)));
    kc_val t = kc_where(G, skip, z, kc_mul(G, Y, kc_log(G, a)));
    c->din[1] = kc_gu_unbroadcast(G, kc_mul(G, DY, t), b);
  }
  return KC_OK;
}

/* min/max of n inputs: each input equal to the result gets dy / (number of such inputs). */
kc_status kc_grad_minmax(kc_grad_call *c) {
  kc_dtype t = kc_value_of(G, Y)->dtype;
  kc_val mask[KC_GRAD_MAX_IO], count = {0};
  for (uint32_t i = 0; i < c->n.nin; i++) {
    mask[i] = kc_cast(G, kc_equal(G, c->n.in[i], Y), t);
    count = kc_gu_accum(G, count, mask[i]);
  }
  kc_val share = kc_div(G, DY, count);
  for (uint32_t i = 0; i < c->n.nin; i++)
    if (c->want[i]) c->din[i] = kc_gu_unbroadcast(G, kc_mul(G, share, mask[i]), c->n.in[i]);
  return KC_OK;
}

/* where(cond, a, b): a gets dy where cond, b elsewhere; cond gets none. */
kc_status kc_grad_where(kc_grad_call *c) {
  kc_val cond = c->n.in[0], z = k(c, 0.0);
  if (c->want[1]) c->din[1] = kc_gu_unbroadcast(G, kc_where(G, cond, DY, z), c->n.in[1]);
  if (c->want[2]) c->din[2] = kc_gu_unbroadcast(G, kc_where(G, cond, z, DY), c->n.in[2]);
  return KC_OK;
}
