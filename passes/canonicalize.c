/*
 * passes/canonicalize.c - rewrite the many spellings exporters use for the same math into one
 * form, so later passes (folding, fusion) match few patterns: constant divisors become
 * multipliers, squares become products, view chains become one reshape with a constant shape,
 * one-element weights become constants,
 * shape computations whose result is known become constants, no-ops disappear.
 *
 * Every rule is a declarative pattern run by the matcher (passes/match.h) to a fixpoint, so the
 * matcher's rules hold: an interior node has one use and is not a graph output. The driver
 * rejects any replacement whose type differs from the value it replaces, so a rule may try a
 * rewrite and let the types decide (pow with a broadcasting exponent, a shape that does not
 * encode).
 * Invariants: no rule undoes another (the driver stops with an error if rules ping-pong); only
 * float constants are inverted or negated (integer division truncates, -INT_MIN overflows);
 * a reciprocal that is not a normal number is not used (x / 1e-40 is not x * inf).
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Capture slots. */
enum { X, C, S };

/* ---- helpers -------------------------------------------------------------------------------- */

static kc_status replace_root(kc_rewriter *rw, const kc_match *m, kc_val with) {
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), with);
  return KC_OK;
}

/* A constant like t whose element i is f(element i); declines when f gives a non-normal float. */
static kc_val map_const(kc_rewriter *rw, const kc_tensor *t, double (*f)(double), bool normal) {
  size_t n = kc_tensor_numel(t), es = kc_dtype_size(t->dtype);
  void *buf = malloc(n * es + 1);
  if (!buf) {
    kc_errorf(kc_rw_graph(rw)->ctx, KC_ERR_NOMEM, "out of memory in canonicalize");
    return (kc_val){0};
  }
  kc_tensor out = *t;
  out.data = buf;
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++) {
    kc_tensor_put(t->dtype, buf, i, f(kc_tensor_get(t, i)));
    double back = kc_tensor_get(&out, i);
    ok = !normal || isnormal(back);
  }
  kc_val v = ok ? kc_rw_const(rw, t->dtype, t->rank, t->dims, buf) : (kc_val){0};
  free(buf);
  return v;
}

static double reciprocal(double x) { return 1.0 / x; }
static double negate(double x) { return -x; }

static bool same_type(const kc_graph *g, kc_val a, kc_val b) {
  const kc_value *x = kc_value_of(g, a), *y = kc_value_of(g, b);
  if (x->dtype != y->dtype || x->rank != y->rank) return false;
  for (int i = 0; i < x->rank; i++)
    if (!kc_dim_same(g, x->dims[i], y->dims[i])) return false;
  return true;
}

/*
 * The constant shape that reshapes x into y's type: integers as they are, a symbolic size that
 * x has at the same index as 0 (copy), at most one other symbolic size as -1 (inferred).
 * False when y has a 0 size (0 would mean "copy") or two sizes only the run knows.
 */
static bool encode_reshape(const kc_graph *g, kc_val x, kc_val y, int64_t *shape) {
  const kc_value *vx = kc_value_of(g, x), *vy = kc_value_of(g, y);
  bool inferred = false;
  for (int j = 0; j < vy->rank; j++) {
    kc_dim d = vy->dims[j];
    int64_t v;
    if (!KC_DIM_IS_SYM(d) || kc_dim_const(g, d, &v)) {
      v = KC_DIM_IS_SYM(d) ? v : d;
      if (v <= 0) return false;
      shape[j] = v;
    } else if (j < vx->rank && kc_dim_same(g, vx->dims[j], d)) {
      shape[j] = 0;
    } else if (!inferred) {
      shape[j] = -1;
      inferred = true;
    } else {
      return false;
    }
  }
  return true;
}

/* The constant target shape of expand(x, ...) giving y: integers, 1 where x has the size. */
static bool encode_expand(const kc_graph *g, kc_val x, kc_val y, int64_t *shape) {
  const kc_value *vx = kc_value_of(g, x), *vy = kc_value_of(g, y);
  int off = vy->rank - vx->rank;
  if (off < 0) return false;
  for (int j = 0; j < vy->rank; j++) {
    kc_dim d = vy->dims[j];
    if (!KC_DIM_IS_SYM(d))
      shape[j] = d;
    else if (j >= off && kc_dim_same(g, vx->dims[j - off], d))
      shape[j] = 1;
    else
      return false;
  }
  return true;
}

/* perm of a transpose node (absent: reversed axes); false when malformed. */
static bool get_perm(const kc_graph *g, const kc_node *n, int64_t *perm, int *rank) {
  int r = kc_value_of(g, n->in[0])->rank;
  const kc_attr *a = kc_node_attr(n, "perm");
  if (r < 0 || r > KC_MAX_RANK) return false;
  *rank = r;
  if (!a) {
    for (int i = 0; i < r; i++)
      perm[i] = r - 1 - i;
    return true;
  }
  if (a->kind != KC_ATTR_INTS || a->u.ints.n != (uint32_t)r) return false;
  for (int i = 0; i < r; i++) {
    perm[i] = a->u.ints.v[i];
    if (perm[i] < 0 || perm[i] >= r) return false;
  }
  return true;
}

static bool is_identity_perm(const int64_t *perm, int rank) {
  for (int i = 0; i < rank; i++)
    if (perm[i] != i) return false;
  return true;
}

/* ---- known shapes ------------------------------------------------------------------------- */

/* The node's only result is a small integer tensor whose contents inference knows exactly. */
static bool known_ints(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  if (kc_ops[n->op].cls == KC_CLASS_SOURCE || n->nout != 1 || !n->out[0].id) return false;
  const kc_value *v = kc_value_of(g, n->out[0]);
  uint32_t cnt;
  const kc_dim *k = kc_value_known(g, n->out[0], &cnt);
  if (!k || (v->dtype != KC_I64 && v->dtype != KC_I32) || kc_value_numel(g, n->out[0]) != cnt)
    return false;
  for (uint32_t i = 0; i < cnt; i++) {
    int64_t x;
    if (KC_DIM_IS_SYM(k[i]) && !kc_dim_const(g, k[i], &x)) {
      snprintf(why, size, "element %u is only known at run time", i);
      return false;
    }
  }
  return true;
}

/* shape(x), gather(...), concat(...)... with known integer contents  ->  constant */
static const kc_pat known_const[] = {
    P_ANYOP(known_ints, P_REST),
};

static kc_status make_known_const(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  kc_val y = kc_rw_out(rw, m, 0, 0);
  const kc_value *v = kc_value_of(g, y);
  uint32_t cnt;
  const kc_dim *k = kc_value_known(g, y, &cnt);
  int64_t vals[64];
  int32_t vals32[64];
  int64_t dims[KC_MAX_RANK];
  if (cnt > 64) return kc_rw_decline(rw, "more than 64 elements");
  for (uint32_t i = 0; i < cnt; i++) {
    if (!KC_DIM_IS_SYM(k[i]))
      vals[i] = k[i];
    else
      kc_dim_const(g, k[i], &vals[i]);
    vals32[i] = (int32_t)vals[i];
  }
  for (int i = 0; i < v->rank; i++)
    dims[i] = v->dims[i];
  const void *data = v->dtype == KC_I64 ? (const void *)vals : (const void *)vals32;
  return replace_root(rw, m, kc_rw_const(rw, v->dtype, v->rank, dims, data));
}

/* ---- no-ops --------------------------------------------------------------------------------- */

/* identity(x)  ->  x */
static const kc_pat identity[] = {
    P_OP(IDENTITY, P_CAP(X)),
};

static kc_status to_x(kc_rewriter *rw, const kc_match *m) { return replace_root(rw, m, m->cap[X]); }

/* training_mode absent or a constant false: dropout is the identity */
static bool dropout_inference(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  if (n->nin < 3 || !n->in[2].id) return true;
  const kc_tensor *t = kc_const_tensor(g, n->in[2]);
  bool off = t && kc_tensor_numel(t) == 1 && kc_tensor_get(t, 0) == 0;
  if (!off) snprintf(why, size, "training_mode %%%u is not a constant false", n->in[2].id);
  return off;
}

/* dropout(x, ratio?, training_mode=false?)  ->  x, when its mask is not read */
static const kc_pat dropout[] = {
    P_OPIF(DROPOUT, dropout_inference, P_CAP(X), P_ANY, P_ANY),
};

static kc_status drop_dropout(kc_rewriter *rw, const kc_match *m) {
  kc_val mask = kc_rw_out(rw, m, 0, 1);
  if (mask.id && kc_rw_uses(rw, mask)) return kc_rw_decline(rw, "its mask %%%u is used", mask.id);
  return replace_root(rw, m, m->cap[X]);
}

static bool cast_noop(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  kc_dtype from = kc_value_of(g, n->in[0])->dtype, to = kc_value_of(g, n->out[0])->dtype;
  if (from != to) snprintf(why, size, "casts %s to %s", kc_dtype_name(from), kc_dtype_name(to));
  return from == to;
}

/* cast(x) {to=T}  ->  x, when x is already T */
static const kc_pat cast_same[] = {
    P_OPIF(CAST, cast_noop, P_CAP(X)),
};

/* ---- arithmetic ----------------------------------------------------------------------------- */

/* div(x, c)  ->  mul(x, 1/c), c a float constant with normal reciprocals */
static const kc_pat div_const[] = {
    P_OP(DIV, P_CAP(X), P_CONST_FLOAT(C)),
};

static kc_status div_to_mul(kc_rewriter *rw, const kc_match *m) {
  const kc_tensor *t = kc_const_tensor(kc_rw_graph(rw), m->cap[C]);
  kc_val r = map_const(rw, t, reciprocal, true);
  if (!r.id) return kc_rw_decline(rw, "a reciprocal of %%%u is not a normal number", m->cap[C].id);
  kc_val in[2] = {m->cap[X], r};
  return replace_root(rw, m, kc_rw_op(rw, KC_OP_MUL, 2, in));
}

/* pow(x, 2)  ->  mul(x, x) */
static const kc_pat pow_two[] = {
    P_OP(POW, P_CAP(X), P_CONST_EQ(C, 2.0)),
};

static kc_status square(kc_rewriter *rw, const kc_match *m) {
  kc_val in[2] = {m->cap[X], m->cap[X]};
  return replace_root(rw, m, kc_rw_op(rw, KC_OP_MUL, 2, in));
}

/* pow(x, 0.5)  ->  sqrt(x) */
static const kc_pat pow_half[] = {
    P_OP(POW, P_CAP(X), P_CONST_EQ(C, 0.5)),
};

static kc_status to_sqrt(kc_rewriter *rw, const kc_match *m) {
  return replace_root(rw, m, kc_rw_op(rw, KC_OP_SQRT, 1, &m->cap[X]));
}

/* pow(x, 1)  ->  x */
static const kc_pat pow_one[] = {
    P_OP(POW, P_CAP(X), P_CONST_EQ(C, 1.0)),
};

/* mul(x, 1)  ->  x (transformers >= 4.45's rotary embedding scales cos and sin by
 * attention_scaling, 1.0 for the default rope; x * 1 is x exactly, NaN and -0 included) */
static const kc_pat mul_one[] = {
    P_OP(MUL, P_CAP(X), P_CONST_EQ(C, 1.0)),
};

/* sub(0, x)  ->  neg(x) */
static const kc_pat sub_from_zero[] = {
    P_OP(SUB, P_CONST_EQ(C, 0.0), P_CAP(X)),
};

static kc_status to_neg(kc_rewriter *rw, const kc_match *m) {
  return replace_root(rw, m, kc_rw_op(rw, KC_OP_NEG, 1, &m->cap[X]));
}

/* sub(x, c)  ->  add(x, -c), c a float constant (add commutes, so fusions match one form) */
static const kc_pat sub_const[] = {
    P_OP(SUB, P_CAP(X), P_CONST_FLOAT(C)),
};

static kc_status sub_to_add(kc_rewriter *rw, const kc_match *m) {
  kc_val n = map_const(rw, kc_const_tensor(kc_rw_graph(rw), m->cap[C]), negate, false);
  kc_val in[2] = {m->cap[X], n};
  return replace_root(rw, m, n.id ? kc_rw_op(rw, KC_OP_ADD, 2, in) : n);
}

/* ---- data movement -------------------------------------------------------------------------- */

static bool identity_transpose(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  int64_t perm[KC_MAX_RANK];
  int rank;
  return get_perm(g, n, perm, &rank) && is_identity_perm(perm, rank);
}

/* transpose(x) {perm=[0, 1, ...]}  ->  x */
static const kc_pat transpose_id[] = {
    P_OPIF(TRANSPOSE, identity_transpose, P_CAP(X)),
};

/* transpose(transpose(x, p1), p2)  ->  transpose(x, p1[p2]), or x when that is the identity */
static const kc_pat transpose_pair[] = {
    P_OP(TRANSPOSE, P_SUB(1)),
    P_OP(TRANSPOSE, P_CAP(X)),
};

static kc_status compose_transposes(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  int64_t p1[KC_MAX_RANK], p2[KC_MAX_RANK], perm[KC_MAX_RANK];
  int r1, r2;
  if (!get_perm(g, &g->nodes[m->node[1]], p1, &r1) ||
      !get_perm(g, &g->nodes[m->node[0]], p2, &r2) || r1 != r2)
    return kc_rw_decline(rw, "malformed perm");
  for (int i = 0; i < r1; i++)
    perm[i] = p1[p2[i]];
  if (is_identity_perm(perm, r1)) return replace_root(rw, m, m->cap[X]);
  kc_val out;
  uint32_t ni = kc_rw_node(rw, KC_OP_TRANSPOSE, 1, &m->cap[X], 1, &out);
  if (ni == UINT32_MAX) return KC_OK;
  kc_node_set_ints(g, ni, "perm", (uint32_t)r1, perm);
  return replace_root(rw, m, out);
}

/* reshape(x, shape) or squeeze/unsqueeze/flatten(x) as one reshape with a constant shape */
static kc_status to_reshape(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  kc_val x = m->cap[X], y = kc_rw_out(rw, m, 0, 0);
  if (same_type(g, x, y)) return replace_root(rw, m, x);
  int64_t shape[KC_MAX_RANK];
  char a[256], b[256];
  if (!encode_reshape(g, x, y, shape))
    return kc_rw_decline(rw, "%s from %s needs a shape computed at run time",
                         kc_type_str(g, y, a, sizeof a), kc_type_str(g, x, b, sizeof b));
  kc_val in[2] = {x, kc_rw_const_i64s(rw, kc_value_of(g, y)->rank, shape)};
  return replace_root(rw, m, in[1].id ? kc_rw_op(rw, KC_OP_RESHAPE, 2, in) : in[1]);
}

/* reshape|squeeze|unsqueeze|flatten(reshape|squeeze|unsqueeze|flatten(x))  ->  reshape(x, c) */
static const kc_pat view_pair[] = {
    P_OP4(RESHAPE, SQUEEZE, UNSQUEEZE, FLATTEN, P_SUB(1), P_REST),
    P_OP4(RESHAPE, SQUEEZE, UNSQUEEZE, FLATTEN, P_CAP(X), P_REST),
};

/* Not yet a reshape by a constant shape, or one that changes nothing. */
static bool view_not_canonical(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  if (n->op != KC_OP_RESHAPE || !kc_const_tensor(g, n->in[1])) return true;
  return same_type(g, n->in[0], n->out[0]);
}

/* squeeze|unsqueeze|flatten(x), reshape(x, computed shape)  ->  reshape(x, constant shape) */
static const kc_pat view_one[] = {
    P_OP4IF(RESHAPE, SQUEEZE, UNSQUEEZE, FLATTEN, view_not_canonical, P_CAP(X), P_REST),
};

static bool expand_not_canonical(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  return !kc_const_tensor(g, n->in[1]) || same_type(g, n->in[0], n->out[0]);
}

/* expand(x, computed shape)  ->  expand(x, constant shape); expand(x, s)  ->  x when a no-op */
static const kc_pat expand_shape[] = {
    P_OPIF(EXPAND, expand_not_canonical, P_CAP(X), P_CAP(S)),
};

static kc_status const_expand(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  kc_val x = m->cap[X], y = kc_rw_out(rw, m, 0, 0);
  if (same_type(g, x, y)) return replace_root(rw, m, x);
  int64_t shape[KC_MAX_RANK];
  if (!encode_expand(g, x, y, shape))
    return kc_rw_decline(rw, "the target shape is only known at run time");
  kc_val in[2] = {x, kc_rw_const_i64s(rw, kc_value_of(g, y)->rank, shape)};
  return replace_root(rw, m, in[1].id ? kc_rw_op(rw, KC_OP_EXPAND, 2, in) : in[1]);
}

/* weight w holding one element  ->  constant: exporters that keep their scalars as initializers
 * (PyTorch 2's dynamo exporter: GELU's sqrt(2), 0.5, 1) then match the rules that read constants,
 * as those that write Constant nodes do. (Weights a training step varies are graph inputs by
 * then, kc_graph_weights_to_inputs; fold reads any weight with data as a constant already.) */
static bool scalar_weight(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  const kc_tensor *t = kc_source_tensor(g, n->out[0]);
  if (t && kc_tensor_numel(t) == 1) return true;
  snprintf(why, size, "%s", t ? "more than one element" : "no data");
  return false;
}

static const kc_pat weight_scalar[] = {
    P_OPIF(WEIGHT, scalar_weight),
};

static kc_status weight_to_const(kc_rewriter *rw, const kc_match *m) {
  kc_graph *g = kc_rw_graph(rw);
  kc_val y = kc_rw_out(rw, m, 0, 0);
  const kc_tensor *t = kc_source_tensor(g, y);
  const kc_value *v = kc_value_of(g, y);
  int64_t dims[KC_MAX_RANK];
  for (int i = 0; i < v->rank; i++)
    dims[i] = v->dims[i];
  kc_val c = kc_rw_const(rw, v->dtype, v->rank, dims, t->data);
  return c.id ? replace_root(rw, m, c) : KC_OK;
}

static const kc_rule rules[] = {
    KC_RULE("scalar-weight", weight_scalar, weight_to_const),
    KC_RULE("known-shape", known_const, make_known_const),
    KC_RULE("identity", identity, to_x),
    KC_RULE("dropout-inference", dropout, drop_dropout),
    KC_RULE("cast-same-dtype", cast_same, to_x),
    KC_RULE("div-const", div_const, div_to_mul),
    KC_RULE("pow-2", pow_two, square),
    KC_RULE("pow-0.5", pow_half, to_sqrt),
    KC_RULE("pow-1", pow_one, to_x),
    KC_RULE("mul-1", mul_one, to_x),
    KC_RULE("sub-from-0", sub_from_zero, to_neg),
    KC_RULE("sub-const", sub_const, sub_to_add),
    KC_RULE("transpose-identity", transpose_id, to_x),
    KC_RULE("transpose-transpose", transpose_pair, compose_transposes),
    KC_RULE("view-view", view_pair, to_reshape),
    KC_RULE("view-to-reshape", view_one, to_reshape),
    KC_RULE("expand-shape", expand_shape, const_expand),
};

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  return kc_rules_run(g, pc, rules, KC_LEN(rules), false);
}

const kc_pass kc_pass_canonicalize = {
    "canonicalize", run,
    "one form per computation: div by constant, pow, sub, views, known shapes, no-ops"};
