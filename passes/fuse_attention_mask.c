/*
 * passes/fuse_attention_mask.c - what a mask on attention scores means, for fuse-attention:
 * causal (no tensor at all), padding (the [B, T] keep mask it is built from) or additive (the
 * tensor as it is).
 *
 * A mask is evaluated abstractly as a function with two values, value = pred ? on : off, where
 * pred is one of
 *   TRI  "key j is at or before query i + k": the value's last two axes are (i, j); k is a dim,
 *        0 for a triangle from the top-left corner, P for the rows [P, P + S) of one (GPT-2's
 *        bias buffer sliced after a past of P tokens) or for [S, P] keep columns before an
 *        [S, S] triangle (transformers' causal mask with a past);
 *   PAD  "pad[b, j] != 0" for an int/bool pad [B, T]: the value is pad itself ([B, T]) or has
 *        it in axes 0 and 3 ([B, ., ., T], broadcast over heads and queries).
 * Leaves: constant (or weight) data checked element by element, trilu of a uniform value,
 * comparisons of two index ramps (range(c, n, 1) plus a constant, viewed along an axis), and the
 * pad tensor itself. Elementwise ops, where, casts, views that keep the indexed axes, slices from
 * column 0 (from row k), and a concat of keep columns before a triangle carry the two values
 * through. Anything else is "unknown", which the caller turns into an additive mask (an added
 * tensor) or no fusion (a where condition).
 * mask=padding needs its pad proven 0/1: a bool [B, T] value (a bool graph input, or a bool the
 * rules above cannot look through: a comparison of the tokenizer's mask with a constant, a
 * not/and of such), or cast(m, bool) of an integer m [B, T], which is m != 0 exactly. An integer
 * [B, T] read as a number is a pad whose two values are only ASSUMED (tv.assumed): (1 - cast(m))
 * * -10000 adds +10000 where m = 2 and -20000 where m = 3, which mask=padding (nonzero = keep)
 * would not, so BERT's int64 attention_mask stays an additive mask, the graph's exact numbers.
 * Where m comes from a bool (cast(m_bool) or where(m_bool, 1, 0)) the same form evaluates to PAD
 * with on 0, off -10000, i.e. mask=padding on the bool. An assumed pad still proves a layout: a
 * condition over [B, ., ., T] that kc_fa_mask_causal_and keeps in the graph (its values are the
 * graph's own) only needs that.
 * The fused kernel gives a row whose keys are all masked an output of 0, where the exported graph
 * (-10000 added, not -inf) would average its values: the one place where padding and the graph
 * differ, kept on purpose (such a row belongs to a sequence that is padding only).
 * Invariants: reads the graph only; a TRI value's last two dims and a PAD value's axes 0 and 3
 * are those of every value it was computed from (no broadcast along an indexed axis), checked at
 * each step.
 */
#include "passes/fuse_attention.h"

#include <math.h>
#include <string.h>

/* index ramps: the longest chain of ops looked through */
#define MAX_DEPTH 32
/* masks: the most values one evaluation visits (a shared value counts each time) */
#define BUDGET 256

enum { U_UNIFORM, U_TRI, U_PAD };

/* value = pred ? on : off (U_UNIFORM: on == off everywhere) */
typedef struct tv {
  int base;
  kc_val pad; /* U_PAD: the [B, T] tensor */
  double on, off;
  kc_dim k;     /* U_TRI: the diagonal, j <= i + k */
  bool assumed; /* U_PAD: on/off hold only where the pad is 0 or 1 (an integer pad) */
} tv;

/* value = index along axis `axis` (counted from the end, 1 = last) + off */
typedef struct ramp {
  int axis;
  int64_t off;
} ramp;

static bool eval(const kc_graph *g, kc_val v, int *left, tv *out);

static const kc_value *val(const kc_graph *g, kc_val v) { return kc_value_of(g, v); }

static bool same(const kc_graph *g, kc_dim a, kc_dim b) { return kc_dim_same(g, a, b); }

/* Does x index the predicate's axes exactly as y, its consumer's result, does? */
static bool aligned(const kc_graph *g, kc_val x, kc_val y, const tv *t) {
  const kc_value *a = val(g, x), *b = val(g, y);
  switch (t->base) {
  case U_TRI:
    return a->rank >= 2 && b->rank >= 2 && same(g, a->dims[a->rank - 2], b->dims[b->rank - 2]) &&
           same(g, a->dims[a->rank - 1], b->dims[b->rank - 1]);
  case U_PAD:
    if (a->rank != b->rank) return false;
    if (a->rank == 2) return same(g, a->dims[0], b->dims[0]) && same(g, a->dims[1], b->dims[1]);
    return a->rank == 4 && same(g, a->dims[0], b->dims[0]) && same(g, a->dims[3], b->dims[3]);
  default: return true;
  }
}

static tv uniform(double c) { return (tv){U_UNIFORM, {0}, c, c, 0, false}; }

/* Constant data: uniform, or lower-triangular over its last two axes (the same in every
 * leading slice). */
static bool eval_data(const kc_tensor *t, tv *out) {
  size_t n = kc_tensor_numel(t);
  if (!n) return false;
  double v0 = kc_tensor_get(t, 0);
  bool flat = true;
  for (size_t i = 1; i < n && flat; i++)
    flat = kc_tensor_get(t, i) == v0;
  if (flat) {
    *out = uniform(v0);
    return true;
  }
  if (t->rank < 2) return false;
  int64_t rows = t->dims[t->rank - 2], cols = t->dims[t->rank - 1];
  if (rows < 2 || cols < 2) return false;
  double on = v0, off = kc_tensor_get(t, 1);
  for (size_t k = 0; k < n; k++) {
    int64_t j = (int64_t)(k % (size_t)cols), i = (int64_t)(k / (size_t)cols) % rows;
    if (kc_tensor_get(t, k) != (j <= i ? on : off)) return false;
  }
  *out = (tv){U_TRI, {0}, on, off, 0, false};
  return true;
}

/* ---- index ramps -------------------------------------------------------------------------- */

static bool integral(double x) { return x == floor(x) && fabs(x) < 9007199254740992.0; }

static bool ramp_of(const kc_graph *g, kc_val v, int depth, ramp *r) {
  if (!v.id || depth > MAX_DEPTH) return false;
  const kc_tensor *t = kc_fa_data(g, v);
  if (t) { /* [c, c+1, c+2, ...] */
    size_t n = kc_tensor_numel(t);
    if (t->rank != 1 || n < 2) return false;
    double c = kc_tensor_get(t, 0);
    for (size_t i = 1; i < n; i++)
      if (kc_tensor_get(t, i) != c + (double)i) return false;
    if (!integral(c)) return false;
    *r = (ramp){1, (int64_t)c};
    return true;
  }
  const kc_node *n = kc_fa_def(g, v);
  if (!n) return false;
  double c, step;
  switch (n->op) {
  case KC_OP_RANGE:
    if (!kc_fa_scalar(g, n->in[0], &c) || !integral(c) || !kc_fa_scalar(g, n->in[2], &step) ||
        step != 1)
      return false;
    *r = (ramp){1, (int64_t)c};
    return true;
  case KC_OP_ADD:
  case KC_OP_SUB:
    for (int k = 0; k < 2; k++) {
      if (n->op == KC_OP_SUB && k == 0) continue; /* c - ramp runs backwards */
      if (!kc_fa_scalar(g, n->in[k], &c) || !integral(c) || !ramp_of(g, n->in[1 - k], depth + 1, r))
        continue;
      r->off += n->op == KC_OP_SUB ? -(int64_t)c : (int64_t)c;
      return true;
    }
    return false;
  case KC_OP_CAST: return ramp_of(g, n->in[0], depth + 1, r);
  case KC_OP_EXPAND:
  case KC_OP_RESHAPE:
  case KC_OP_UNSQUEEZE:
  case KC_OP_SQUEEZE: {
    ramp in;
    if (!ramp_of(g, n->in[0], depth + 1, &in)) return false;
    const kc_value *a = val(g, n->in[0]), *b = val(g, n->out[0]);
    if (in.axis > a->rank) return false;
    kc_dim d = a->dims[a->rank - in.axis];
    if (d == 1) return false;
    if (n->op == KC_OP_EXPAND) { /* broadcast: the ramp's axis keeps its place from the end */
      if (b->rank < a->rank || !same(g, b->dims[b->rank - in.axis], d)) return false;
      *r = in;
      return true;
    }
    for (int i = 0; i < a->rank; i++) /* a view of a ramp: only unit axes come and go */
      if (i != a->rank - in.axis && a->dims[i] != 1) return false;
    int found = -1;
    for (int i = 0; i < b->rank; i++) {
      if (b->dims[i] == 1) continue;
      if (found >= 0 || !same(g, b->dims[i], d)) return false;
      found = i;
    }
    if (found < 0) return false;
    *r = (ramp){b->rank - found, in.off};
    return true;
  }
  default: return false;
  }
}

bool kc_fa_is_positions(const kc_graph *g, kc_val v) {
  ramp r;
  return ramp_of(g, v, 0, &r) && r.axis == 1 && r.off == 0;
}

/* less/greater of a ramp along the keys (j) and one along the queries (i): TRI when it says
 * exactly j <= i (1 on, 0 off) or j > i (0 on, 1 off). */
static bool eval_ramps(const kc_graph *g, const kc_node *n, tv *out) {
  ramp a, b;
  if (!ramp_of(g, n->in[0], 0, &a) || !ramp_of(g, n->in[1], 0, &b)) return false;
  if (a.axis == b.axis || a.axis > 2 || b.axis > 2) return false;
  bool less = n->op == KC_OP_LESS;
  /* as "j - i < k" (lt) or "j - i > k" */
  int64_t k = a.axis == 1 ? b.off - a.off : a.off - b.off;
  bool lt = a.axis == 1 ? less : !less;
  if (lt && k == 1)
    *out = (tv){U_TRI, {0}, 1, 0, 0, false};
  else if (!lt && k == 0)
    *out = (tv){U_TRI, {0}, 0, 1, 0, false};
  else
    return false;
  return true;
}

/* A comparison of an index ramp with a constant that holds (or fails) for every index: the
 * ramp's least value off decides it (key >= 0, the dynamo exporter's bidirectional term). */
static bool eval_ramp_bound(const kc_graph *g, const kc_node *n, tv *out) {
  ramp r;
  double c;
  for (int k = 0; k < 2; k++) {
    if (!kc_fa_scalar(g, n->in[1 - k], &c) || !ramp_of(g, n->in[k], 0, &r)) continue;
    kc_op op = n->op; /* as "ramp op c" */
    if (k == 1)
      op = op == KC_OP_LESS            ? KC_OP_GREATER
           : op == KC_OP_GREATER       ? KC_OP_LESS
           : op == KC_OP_LESS_EQUAL    ? KC_OP_GREATER_EQUAL
           : op == KC_OP_GREATER_EQUAL ? KC_OP_LESS_EQUAL
                                       : op;
    double lo = (double)r.off;
    switch (op) {
    case KC_OP_GREATER_EQUAL:
      if (lo >= c) {
        *out = uniform(1);
        return true;
      }
      break;
    case KC_OP_GREATER:
      if (lo > c) {
        *out = uniform(1);
        return true;
      }
      break;
    case KC_OP_LESS:
      if (lo >= c) {
        *out = uniform(0);
        return true;
      }
      break;
    case KC_OP_LESS_EQUAL:
      if (lo > c) {
        *out = uniform(0);
        return true;
      }
      break;
    default: break;
    }
  }
  return false;
}

/* ---- ops ---------------------------------------------------------------------------------- */

/* Combine operands' two-valued functions: the same predicate (or a uniform value), aligned. */
static bool join(const kc_graph *g, const kc_node *n, const tv *ops, int nops, tv *out) {
  *out = uniform(0);
  for (int k = 0; k < nops; k++) {
    if (ops[k].base == U_UNIFORM) continue;
    out->assumed |= ops[k].assumed;
    if (out->base != U_UNIFORM &&
        (out->base != ops[k].base || out->pad.id != ops[k].pad.id || !same(g, out->k, ops[k].k)))
      return false;
    if (!aligned(g, n->in[k], n->out[0], &ops[k])) return false;
    out->base = ops[k].base;
    out->pad = ops[k].pad;
    out->k = ops[k].k;
  }
  return true;
}

static double apply2(kc_op op, double a, double b) {
  switch (op) {
  case KC_OP_ADD: return a + b;
  case KC_OP_SUB: return a - b;
  /* 0 * -inf is taken as 0: (1 - m) * -inf means "masked where m is 0" */
  case KC_OP_MUL: return a == 0 || b == 0 ? 0 : a * b;
  case KC_OP_AND: return a != 0 && b != 0;
  case KC_OP_EQUAL: return a == b;
  case KC_OP_LESS: return a < b;
  case KC_OP_GREATER: return a > b;
  case KC_OP_LESS_EQUAL: return a <= b;
  case KC_OP_GREATER_EQUAL: return a >= b;
  default: return NAN;
  }
}

static bool eval_cast(kc_dtype to, tv *t) {
  double *v[2] = {&t->on, &t->off};
  for (int k = 0; k < 2; k++) {
    if (to == KC_BOOL)
      *v[k] = *v[k] != 0;
    else if (kc_dtype_is_int(to)) {
      if (!integral(*v[k])) return false;
    } else if (!kc_dtype_is_float(to)) {
      return false;
    }
  }
  return true;
}

static bool eval_view(const kc_graph *g, const kc_node *n, int *left, tv *out) {
  if (!eval(g, n->in[0], left, out)) return false;
  const kc_value *a = val(g, n->in[0]), *b = val(g, n->out[0]);
  switch (out->base) {
  case U_TRI: return aligned(g, n->in[0], n->out[0], out);
  case U_PAD:
    if (a->rank == 2 && b->rank == 4 && n->op != KC_OP_EXPAND) /* [B, T] -> [B, 1, 1, T] */
      return same(g, a->dims[0], b->dims[0]) && same(g, a->dims[1], b->dims[3]) &&
             b->dims[1] == 1 && b->dims[2] == 1;
    if (a->rank == 4 && n->op == KC_OP_EXPAND) return aligned(g, n->in[0], n->out[0], out);
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
      if (!same(g, a->dims[i], b->dims[i])) return false;
    return true;
  default: return true;
  }
}

/* Element e of the 1-D integer operand v as a dim (*d) or an integer (*x, d NULL): constant
 * data (a negative element only as an integer), else what shape inference knows of v. */
static bool elem(const kc_graph *g, kc_val v, uint32_t e, kc_dim *d, int64_t *x) {
  const kc_tensor *t = kc_fa_data(g, v);
  uint32_t n;
  const kc_dim *k = t ? NULL : kc_value_known(g, v, &n);
  if (t) {
    if (e >= kc_tensor_numel(t)) return false;
    double c = kc_tensor_get(t, e);
    if (!integral(c) || (d && c < 0)) return false;
    if (d)
      *d = (kc_dim)c;
    else
      *x = (int64_t)c;
    return true;
  }
  if (!k || e >= n) return false;
  if (d) *d = k[e];
  return d || kc_dim_const(g, k[e], x);
}

/* Elements of the 1-D operand v (constant data, or known to shape inference), or -1. */
static int64_t count(const kc_graph *g, kc_val v) {
  const kc_tensor *t = kc_fa_data(g, v);
  uint32_t n;
  if (t) return t->rank == 1 ? (int64_t)kc_tensor_numel(t) : -1;
  return kc_value_known(g, v, &n) ? (int64_t)n : -1;
}

/* A slice of a TRI value from column 0 (step 1 on the last two axes): from row r it is TRI
 * with diagonal k + r (one of them 0; r a size, constant or symbolic, known to be >= 0). */
static bool eval_slice(const kc_graph *g, const kc_node *n, int *left, tv *out) {
  if (!eval(g, n->in[0], left, out)) return false;
  if (out->base == U_UNIFORM) return true;
  if (out->base != U_TRI) return false;
  int r = val(g, n->in[0])->rank;
  kc_val ax = n->nin > 3 ? n->in[3] : (kc_val){0}, sp = n->nin > 4 ? n->in[4] : (kc_val){0};
  int64_t nst = count(g, n->in[1]);
  if (nst < 0 || (ax.id && count(g, ax) != nst) || (sp.id && count(g, sp) != nst)) return false;
  for (uint32_t e = 0; e < (uint32_t)nst; e++) {
    int64_t axis = e, step = 1, lo;
    kc_dim st;
    if ((ax.id && !elem(g, ax, e, NULL, &axis)) || (sp.id && !elem(g, sp, e, NULL, &step)))
      return false;
    if (axis < 0) axis += r;
    if (axis < r - 2) continue;
    if (step != 1 || !elem(g, n->in[1], e, &st, NULL) || !kc_dim_lower(g, st, &lo) || lo < 0)
      return false;
    if (st == 0) continue;
    if (axis == r - 1 || out->k != 0) return false; /* a column offset, or two row offsets */
    out->k = st;
  }
  return true;
}

/* concat(c [.., S, P], TRI [.., S, N]) on the last axis, c uniformly the triangle's keep value
 * and its diagonal 0: TRI with diagonal P (the keys before the triangle are all visible). */
static bool eval_concat(const kc_graph *g, const kc_node *n, int *left, tv *out) {
  if (n->nin != 2) return false;
  const kc_value *a = val(g, n->in[0]), *b = val(g, n->in[1]), *y = val(g, n->out[0]);
  int64_t axis = kc_node_int(n, "axis", 0);
  tv c, t;
  if (a->rank < 2 || a->rank != b->rank || (axis < 0 ? axis + a->rank : axis) != a->rank - 1 ||
      !eval(g, n->in[0], left, &c) || c.base != U_UNIFORM || !eval(g, n->in[1], left, &t) ||
      t.base != U_TRI || t.k != 0 || c.on != t.on ||
      !same(g, a->dims[a->rank - 2], b->dims[b->rank - 2]) ||
      !same(g, y->dims[y->rank - 2], b->dims[b->rank - 2]))
    return false;
  *out = t;
  out->k = a->dims[a->rank - 1];
  return true;
}

/* trilu(c everywhere): lower with the diagonal (upper=0, k=0) or strictly upper (upper=1, k=1). */
static bool eval_trilu(const kc_graph *g, const kc_node *n, int *left, tv *out) {
  tv in;
  if (!eval(g, n->in[0], left, &in) || in.base != U_UNIFORM) return false;
  int64_t k = 0;
  if (n->nin > 1 && n->in[1].id && !kc_fa_int1(g, n->in[1], &k)) return false;
  bool upper = kc_node_int(n, "upper", 1) != 0;
  if (val(g, n->in[0])->rank < 2) return false;
  if (!upper && k == 0)
    *out = (tv){U_TRI, {0}, in.on, 0, 0, false};
  else if (upper && k == 1)
    *out = (tv){U_TRI, {0}, 0, in.on, 0, false};
  else
    return false;
  return true;
}

static bool eval_binary(const kc_graph *g, const kc_node *n, int *left, tv *out) {
  tv ops[2];
  if (!eval(g, n->in[0], left, &ops[0]) || !eval(g, n->in[1], left, &ops[1]) ||
      !join(g, n, ops, 2, out))
    return false;
  out->on = apply2(n->op, ops[0].on, ops[1].on);
  out->off = apply2(n->op, ops[0].off, ops[1].off);
  return true;
}

/* The two values of v by its producer; false when they cannot be read (v's producer alone). */
static bool eval_node(const kc_graph *g, kc_val v, int *left, tv *out) {
  const kc_node *n = kc_fa_def(g, v);
  const kc_value *x = val(g, v);
  tv ops[3];
  if (!n || n->nout != 1) return false;
  switch (n->op) {
  case KC_OP_CONSTANT_OF_SHAPE: {
    const kc_attr *a = kc_node_attr(n, "value");
    if (!a) {
      *out = uniform(0);
      return true;
    }
    if (a->kind != KC_ATTR_TENSOR || a->u.tensor >= g->ntensors) return false;
    const kc_tensor *c = &g->tensors[a->u.tensor];
    if (!c->data || kc_tensor_numel(c) != 1) return false;
    *out = uniform(kc_tensor_get(c, 0));
    return true;
  }
  case KC_OP_IDENTITY:
  case KC_OP_RESHAPE:
  case KC_OP_UNSQUEEZE:
  case KC_OP_SQUEEZE:
  case KC_OP_FLATTEN:
  case KC_OP_EXPAND: return eval_view(g, n, left, out);
  case KC_OP_SLICE: return eval_slice(g, n, left, out);
  case KC_OP_CONCAT: return eval_concat(g, n, left, out);
  case KC_OP_TRILU: return eval_trilu(g, n, left, out);
  case KC_OP_CAST: {
    const kc_value *a = val(g, n->in[0]);
    bool ok = eval(g, n->in[0], left, out) && aligned(g, n->in[0], n->out[0], out) &&
              eval_cast(x->dtype, out);
    if (ok && !(out->base == U_PAD && out->assumed)) return true;
    /* cast(p, bool) of an integer p [B, T] is p != 0 exactly: the pad p, whatever its values */
    if (x->dtype != KC_BOOL || a->rank != 2 || !kc_dtype_is_int(a->dtype)) return ok;
    *out = (tv){U_PAD, n->in[0], 1, 0, 0, false};
    return true;
  }
  case KC_OP_NOT:
  case KC_OP_NEG:
    if (!eval(g, n->in[0], left, out) || !aligned(g, n->in[0], v, out)) return false;
    out->on = n->op == KC_OP_NOT ? out->on == 0 : -out->on;
    out->off = n->op == KC_OP_NOT ? out->off == 0 : -out->off;
    return true;
  case KC_OP_LESS:
  case KC_OP_GREATER: /* index ramps, else masks compared with values */
    return eval_ramps(g, n, out) || eval_ramp_bound(g, n, out) || eval_binary(g, n, left, out);
  case KC_OP_LESS_EQUAL:
  case KC_OP_GREATER_EQUAL: return eval_ramp_bound(g, n, out) || eval_binary(g, n, left, out);
  case KC_OP_ADD:
  case KC_OP_SUB:
  case KC_OP_MUL:
  case KC_OP_AND:
  case KC_OP_EQUAL: return eval_binary(g, n, left, out);
  case KC_OP_WHERE:
    for (int k = 0; k < 3; k++)
      if (!eval(g, n->in[k], left, &ops[k])) return false;
    if (!join(g, n, ops, 3, out)) return false;
    out->on = ops[0].on != 0 ? ops[1].on : ops[2].on;
    out->off = ops[0].off != 0 ? ops[1].off : ops[2].off;
    return true;
  default: return false;
  }
}

static bool eval(const kc_graph *g, kc_val v, int *left, tv *out) {
  if (!v.id || --*left < 0) return false;
  const kc_tensor *t = kc_fa_data(g, v);
  if (t) return eval_data(t, out);
  bool ok = eval_node(g, v, left, out);
  const kc_value *x = val(g, v);
  /* a bool [B, T] read as it is: the pad, 0/1 by its dtype (an input, a comparison of the
   * tokenizer's mask), also in place of what it computes from an assumed pad or of the negation
   * of a pad (not(m == 0) keeps where m != 0: the kernel needs nonzero = keep); an integer
   * [B, T] is a pad whose 0/1 is only assumed (its 2 is not a 1) */
  bool flip = ok && out->base == U_PAD && (out->assumed || (out->on == 0 && out->off == 1));
  if (ok && !(flip && x->rank == 2 && x->dtype == KC_BOOL)) return true;
  if (x->rank == 2 && (x->dtype == KC_BOOL || (!ok && kc_dtype_is_int(x->dtype)))) {
    *out = (tv){U_PAD, v, 1, 0, 0, x->dtype != KC_BOOL};
    return true;
  }
  return ok;
}

/* ---- classification ------------------------------------------------------------------------ */

/* A TRI mask m (key j visible to query i iff j <= i + k) covers the scores [B, H, S, T] exactly
 * in its last two axes, and k = T - S: mask=causal is aligned at the bottom right (j <= i + T -
 * S), so a triangle from the top left (k = 0) is causal only over square scores, and one with a
 * diagonal of P only over T = P + S keys; any other stays the tensor it is. */
static bool fits_tri(const kc_graph *g, kc_val m, const kc_fa_scores *sc, const tv *t) {
  const kc_value *x = val(g, m);
  return x->rank >= 2 && x->rank <= 4 && same(g, x->dims[x->rank - 2], sc->s) &&
         same(g, x->dims[x->rank - 1], sc->t) && same(g, t->k, sc->off);
}

/* A PAD mask m is [B, ., ., T] over the scores [B, H, S, T], from a pad [B, T]. */
static bool fits_pad(const kc_graph *g, kc_val m, kc_val pad, const kc_fa_scores *sc) {
  const kc_value *x = val(g, m), *p = val(g, pad);
  return x->rank == 4 && p->rank == 2 && same(g, p->dims[0], sc->b) && same(g, p->dims[1], sc->t);
}

bool kc_fa_mask_added(const kc_graph *g, kc_val m, const kc_fa_scores *sc, kc_fa_mask *out,
                      char *why, size_t size) {
  const kc_value *x = val(g, m);
  if (x->dtype != sc->dtype || x->rank > 4) {
    snprintf(why, size, "added mask %%%u is not a %s tensor of rank 4 or less", m.id,
             kc_dtype_name(sc->dtype));
    return false;
  }
  *out = (kc_fa_mask){false, KC_FA_IN_ADDITIVE, m, {0}, false};
  tv t;
  int left = BUDGET;
  if (!eval(g, m, &left, &t)) return true;
  out->nonpos = !(t.base == U_PAD && t.assumed) && t.on <= 0 && t.off <= 0;
  if (t.on != 0 || !(t.off <= KC_FA_NEG_BIG)) return true;
  if (t.base == U_TRI && fits_tri(g, m, sc, &t))
    *out = (kc_fa_mask){true, KC_FA_IN_NONE, {0}, {0}, true};
  if (t.base == U_PAD && !t.assumed && fits_pad(g, m, t.pad, sc))
    *out = (kc_fa_mask){false, KC_FA_IN_PADDING, t.pad, m, true};
  return true;
}

bool kc_fa_mask_where(const kc_graph *g, kc_val c, bool keep, const kc_fa_scores *sc,
                      kc_fa_mask *out, char *why, size_t size) {
  tv t;
  int left = BUDGET;
  if (!eval(g, c, &left, &t) || t.base == U_UNIFORM) {
    snprintf(why, size, "where condition %%%u is neither a causal nor a padding mask", c.id);
    return false;
  }
  bool ok = keep ? t.on != 0 && t.off == 0 : t.on == 0 && t.off != 0;
  if (ok && t.base == U_TRI && fits_tri(g, c, sc, &t)) {
    *out = (kc_fa_mask){true, KC_FA_IN_NONE, {0}, {0}, false};
    return true;
  }
  if (ok && t.base == U_PAD && !t.assumed && fits_pad(g, c, t.pad, sc)) {
    *out = (kc_fa_mask){false, KC_FA_IN_PADDING, t.pad, {0}, false};
    return true;
  }
  snprintf(why, size, "where condition %%%u %s", c.id,
           t.base == U_TRI
               ? (ok ? (same(g, t.k, sc->off)
                            ? "is causal but not over the scores' last two axes"
                            : "is causal with a diagonal other than keys - queries (mask=causal "
                              "aligns at the bottom right)")
                     : "is triangular but not causal (which keys it keeps)")
           : !ok       ? "keeps the padded keys"
           : t.assumed ? "is a padding mask only where the integer mask it reads is 0/1"
                       : "is a padding mask not laid out as [B, 1, 1, T]");
  return false;
}

bool kc_fa_mask_causal_and(const kc_graph *g, kc_val m, const kc_fa_scores *sc, kc_val w[3]) {
  const kc_node *n = kc_fa_def(g, m);
  double z, f;
  if (!n || n->op != KC_OP_WHERE) return false;
  tv tc, tp; /* tp may be assumed: the padding condition stays in the graph, only its layout
              * (a function of b and j alone) is used */
  int left = BUDGET;
  if (kc_fa_scalar(g, n->in[1], &f) && f <= KC_FA_NEG_BIG) { /* where(masked, fill, causal) */
    if (eval(g, n->in[2], &left, &tc) && tc.base == U_TRI && tc.on == 0 &&
        tc.off <= KC_FA_NEG_BIG && fits_tri(g, n->in[2], sc, &tc) &&
        eval(g, n->in[0], &left, &tp) && tp.base == U_PAD && tp.on == 0 && tp.off != 0 &&
        val(g, n->in[0])->rank == 4 && same(g, val(g, n->in[0])->dims[0], sc->b)) {
      w[0] = n->in[0], w[1] = n->in[1], w[2] = (kc_val){0};
      return true;
    }
    return false;
  }
  if (!kc_fa_scalar(g, n->in[1], &z) || z != 0 || !kc_fa_scalar(g, n->in[2], &f) ||
      !(f <= KC_FA_NEG_BIG))
    return false;
  const kc_node *a = kc_fa_def(g, n->in[0]);
  if (!a || a->op != KC_OP_AND) return false;
  for (int k = 0; k < 2; k++) {
    kc_val c = a->in[k], p = a->in[1 - k];
    left = BUDGET;
    if (eval(g, c, &left, &tc) && tc.base == U_TRI && tc.on != 0 && tc.off == 0 &&
        fits_tri(g, c, sc, &tc) && eval(g, p, &left, &tp) && tp.base == U_PAD && tp.on != 0 &&
        tp.off == 0 && fits_pad(g, p, tp.pad, sc)) {
      w[0] = p, w[1] = n->in[1], w[2] = n->in[2];
      return true;
    }
  }
  return false;
}
