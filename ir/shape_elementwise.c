/*
 * ir/shape_elementwise.c - shape functions of elementwise ops: unary math, cast, clip, the
 * broadcasting binary ops, comparisons, logic, bitwise ops, is_nan/is_inf, where and dropout.
 *
 * Outputs have the broadcast shape of the inputs. Known contents flow through the ops shape
 * computations use (identity, neg, cast, add/sub/mul/div/mod/min/max, the comparisons,
 * not/and/or/xor, where) when every operand is known, at most 1-D and small, so exporters'
 * arithmetic on Shape outputs (S-1, B*S, where(equal(shape, -1), 1, shape), Cast(S) to float and
 * back) resolves to dims. Each result is computed exactly and then fitted to the output dtype
 * (kc_shp_fit: integers wrap, floats round as their kernels do). A result is left unknown rather
 * than guessed: integer Div truncates, which floor division equals only for a numerator provably >=
 * 0 (or an exact quotient); float Div must divide exactly; min/max and comparisons of symbolic
 * values need the sign of their difference to be provable (kc_dim_lower: symbols are sizes, >= 0).
 */
#include "shape.h"

#include <string.h>

/* Element i of a known operand broadcast to cnt elements (one element repeats). */
static kc_dim at(const kc_dim *k, uint32_t nk, uint32_t i) { return nk == 1 ? k[0] : k[i]; }

/*
 * Known contents of the (at most 1-D) output of n from its known inputs through f, which gives
 * the exact result of one element (fitted to the output dtype here) or false when it cannot be
 * computed (a symbol compared with a symbol, say).
 */
typedef bool (*known_fn)(kc_graph *g, const kc_node *n, const kc_dim *x, kc_dim *out);

static void propagate(kc_graph *g, const kc_node *n, known_fn f) {
  const kc_value *o = n->nout && n->out[0].id ? kc_value_of(g, n->out[0]) : NULL;
  if (!o || o->rank > 1 || !kc_shp_tracked(o->dtype)) return;
  kc_dtype t = o->dtype;
  const kc_dim *k[3];
  uint32_t nk[3], cnt = 1;
  KC_ASSERT(n->nin <= 3);
  for (uint32_t i = 0; i < n->nin; i++) {
    const kc_value *v = kc_shp_in(g, n, i);
    if (!v || v->rank > 1 || !(k[i] = kc_value_known(g, n->in[i], &nk[i]))) return;
    if (nk[i] != 1) {
      if (cnt != 1 && cnt != nk[i]) return;
      cnt = nk[i];
    }
  }
  kc_dim out[KC_KNOWN_MAX];
  if (cnt > KC_KNOWN_MAX) return;
  for (uint32_t e = 0; e < cnt; e++) {
    kc_dim x[3];
    for (uint32_t i = 0; i < n->nin; i++)
      x[i] = at(k[i], nk[i], e);
    if (!f(g, n, x, &out[e]) || !kc_shp_fit(g, t, out[e], &out[e])) return;
  }
  kc_shp_set_known(g, n, 0, cnt, out);
}

static bool known_unary(kc_graph *g, const kc_node *n, const kc_dim *x, kc_dim *out) {
  *out = n->op == KC_OP_NEG ? kc_dim_mul(g, kc_dim_int(g, -1), x[0]) : x[0];
  return true;
}

/* The sign of a - b when provable: 1 (a > b), 0 (a == b), -1 (a < b); 2 when not known. */
static int compare(kc_graph *g, kc_dim a, kc_dim b) {
  kc_dim d = kc_dim_sub(g, a, b);
  int64_t lo;
  if (kc_dim_const(g, d, &lo)) return lo > 0 ? 1 : lo < 0 ? -1 : 0;
  if (kc_dim_lower(g, d, &lo) && lo >= 1) return 1;
  if (kc_dim_lower(g, kc_dim_sub(g, b, a), &lo) && lo >= 1) return -1;
  return 2;
}

/* Provably a <= b (-1) or a >= b (1), equality included; 0 when not known. */
static int order(kc_graph *g, kc_dim a, kc_dim b) {
  int64_t lo;
  if (a == b || (kc_dim_lower(g, kc_dim_sub(g, b, a), &lo) && lo >= 0)) return -1;
  if (kc_dim_lower(g, kc_dim_sub(g, a, b), &lo) && lo >= 0) return 1;
  return 0;
}

/* a / b as ONNX Div computes it on the output dtype: integers truncate, floats divide. */
static bool known_div(kc_graph *g, kc_dtype t, kc_dim a, kc_dim b, kc_dim *out) {
  int64_t va, vb, lo;
  bool ca = kc_dim_const(g, a, &va), cb = kc_dim_const(g, b, &vb);
  if (cb && vb == 0) return false;
  bool fl = kc_dtype_is_float(t);
  if (ca && cb) {
    if ((vb == -1 && va == INT64_MIN) || (fl && va % vb != 0)) return false;
    *out = kc_dim_int(g, va / vb); /* C division truncates, as integer Div does */
    return true;
  }
  if (kc_dim_div_exact(g, a, b, out)) return true; /* exact: every rounding agrees */
  if (fl) return false;
  /* truncation equals floor division for a >= 0 and b >= 1 */
  if (!kc_dim_lower(g, a, &lo) || lo < 0 || !kc_dim_lower(g, b, &lo) || lo < 1) return false;
  *out = kc_dim_div(g, a, b);
  return true;
}

static bool known_arith(kc_graph *g, const kc_node *n, const kc_dim *x, kc_dim *out) {
  int64_t a, b;
  switch (n->op) {
  case KC_OP_ADD: *out = kc_dim_add(g, x[0], x[1]); return true;
  case KC_OP_SUB: *out = kc_dim_sub(g, x[0], x[1]); return true;
  case KC_OP_MUL: *out = kc_dim_mul(g, x[0], x[1]); return true;
  case KC_OP_DIV: return known_div(g, kc_value_of(g, n->out[0])->dtype, x[0], x[1], out);
  case KC_OP_MIN:
  case KC_OP_MAX: {
    if (kc_dim_const(g, x[0], &a) && kc_dim_const(g, x[1], &b)) {
      *out = kc_dim_int(g, (n->op == KC_OP_MIN) == (a < b) ? a : b);
      return true;
    }
    int o = order(g, x[0], x[1]); /* -1: x0 <= x1 */
    if (!o) return false;
    *out = (n->op == KC_OP_MIN) == (o < 0) ? x[0] : x[1];
    return true;
  }
  case KC_OP_MOD: {
    /* constants only; x mod 0 is left to the kernel, INT64_MIN mod -1 is 0 */
    if (!kc_dim_const(g, x[0], &a) || !kc_dim_const(g, x[1], &b) || b == 0) return false;
    int64_t r = b == -1 ? 0 : a % b;
    if (!kc_node_int(n, "fmod", 0) && r != 0 && (r < 0) != (b < 0)) r += b;
    *out = kc_dim_int(g, r);
    return true;
  }
  default: return false;
  }
}

static bool known_compare(kc_graph *g, const kc_node *n, const kc_dim *x, kc_dim *out) {
  int c = compare(g, x[0], x[1]);
  if (n->op == KC_OP_EQUAL) {
    /* a provable difference of at least 1 is never 0: S+1 != 0, so S never equals -1 */
    if (c == 2) return false;
    *out = c == 0;
    return true;
  }
  switch (n->op) {
  case KC_OP_LESS:
    if (c != 2) *out = c < 0;
    break;
  case KC_OP_GREATER:
    if (c != 2) *out = c > 0;
    break;
  case KC_OP_LESS_EQUAL:
    if (c != 2) *out = c <= 0;
    break;
  case KC_OP_GREATER_EQUAL:
    if (c != 2) *out = c >= 0;
    break;
  default: return false;
  }
  if (c != 2) return true;
  /* x0 <= x1 decides greater (false) and less_equal (true), x0 >= x1 less and greater_equal */
  int o = order(g, x[0], x[1]);
  if ((n->op == KC_OP_LESS && o > 0) || (n->op == KC_OP_GREATER && o < 0)) {
    *out = 0;
    return true;
  }
  if ((n->op == KC_OP_LESS_EQUAL && o < 0) || (n->op == KC_OP_GREATER_EQUAL && o > 0)) {
    *out = 1;
    return true;
  }
  return false;
}

/* not / and / or / xor of known bools (0 or 1). */
static bool known_logical(kc_graph *g, const kc_node *n, const kc_dim *x, kc_dim *out) {
  int64_t a, b = 0;
  if (!kc_dim_const(g, x[0], &a) || (n->nin > 1 && !kc_dim_const(g, x[1], &b))) return false;
  switch (n->op) {
  case KC_OP_NOT: *out = kc_dim_int(g, !a); return true;
  case KC_OP_AND: *out = kc_dim_int(g, a && b); return true;
  case KC_OP_OR: *out = kc_dim_int(g, a || b); return true;
  case KC_OP_XOR: *out = kc_dim_int(g, !a != !b); return true;
  default: return false;
  }
}

static bool known_where(kc_graph *g, const kc_node *n, const kc_dim *x, kc_dim *out) {
  (void)n;
  int64_t c;
  if (!kc_dim_const(g, x[0], &c)) return false;
  *out = c ? x[1] : x[2];
  return true;
}

/* Broadcast the shapes of inputs [0, nin) into (rank, dims); absent inputs are skipped. */
static kc_status bcast_all(kc_graph *g, const kc_node *n, int *rank, kc_dim *dims) {
  *rank = 0;
  for (uint32_t i = 0; i < n->nin; i++) {
    const kc_value *v = kc_shp_in(g, n, i);
    if (!v) continue;
    kc_status s = kc_shp_bcast(g, n, *rank, dims, v->rank, v->dims, rank, dims);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

/* Same dtype on every present input, checked against input 0. */
static kc_status same_dtypes(kc_graph *g, const kc_node *n, uint32_t from) {
  for (uint32_t i = from + 1; i < n->nin; i++) {
    kc_status s = kc_shp_same_dtype(g, n, from, i);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

kc_status shape_unary(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  switch (n->op) {
  case KC_OP_IDENTITY: break;
  case KC_OP_NEG:
  case KC_OP_ABS:
  case KC_OP_SIGN:
  case KC_OP_RELU: s = kc_shp_need_numeric(g, n, 0); break;
  default: s = kc_shp_need_float(g, n, 0); break;
  }
  if (s != KC_OK) return s;
  if (n->op == KC_OP_GELU) {
    const char *ap = kc_node_string(n, "approximate", "none");
    if (strcmp(ap, "none") != 0 && strcmp(ap, "tanh") != 0)
      return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "approximate=\"%s\", expected none or tanh",
                            ap);
  }
  kc_shp_set_like(g, n, 0, n->in[0]);
  if (n->op == KC_OP_IDENTITY || n->op == KC_OP_NEG) propagate(g, n, known_unary);
  return KC_OK;
}

kc_status shape_logical(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  for (uint32_t i = 0; s == KC_OK && i < n->nin; i++)
    s = kc_shp_need_dtype(g, n, i, KC_BOOL);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = bcast_all(g, n, &rank, dims);
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, KC_BOOL, rank, dims);
  propagate(g, n, known_logical);
  return KC_OK;
}

kc_status shape_cast(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s != KC_OK) return s;
  const kc_attr *to = kc_node_attr(n, "to");
  if (!to || to->kind != KC_ATTR_DTYPE)
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "attribute 'to' (a dtype) is missing");
  if (to->u.t <= KC_DT_NONE || to->u.t >= KC_DT_COUNT)
    return kc_node_errorf(g, n, KC_ERR_TYPE, "cast to an invalid dtype");
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_dtype from = x->dtype;
  kc_shp_set(g, n, 0, to->u.t, x->rank, x->dims);
  if (kc_shp_tracked(from)) propagate(g, n, known_unary); /* fitted to the target dtype */
  return KC_OK;
}

kc_status shape_clip(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  for (uint32_t i = 1; s == KC_OK && i < n->nin; i++) {
    const kc_value *b = kc_shp_in(g, n, i);
    if (!b) continue;
    s = kc_shp_same_dtype(g, n, 0, i);
    if (s == KC_OK && !(b->rank == 0 || (b->rank == 1 && b->dims[0] == 1)))
      s = kc_node_errorf(g, n, KC_ERR_SHAPE, "bound %u (%%%u) must be a scalar", i, n->in[i].id);
  }
  if (s != KC_OK) return s;
  kc_shp_set_like(g, n, 0, n->in[0]);
  return KC_OK;
}

kc_status shape_bcast(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = same_dtypes(g, n, 0);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = bcast_all(g, n, &rank, dims);
  if (s != KC_OK) return s;
  kc_dtype t = kc_value_of(g, n->in[0])->dtype;
  kc_shp_set(g, n, 0, t, rank, dims);
  if (kc_shp_tracked(t) && n->nin == 2) propagate(g, n, known_arith);
  return KC_OK;
}

kc_status shape_pow(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 1);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = bcast_all(g, n, &rank, dims);
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, kc_value_of(g, n->in[0])->dtype, rank, dims);
  return KC_OK;
}

kc_status shape_compare(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK && n->op != KC_OP_EQUAL) s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 1);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = bcast_all(g, n, &rank, dims);
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, KC_BOOL, rank, dims);
  propagate(g, n, known_compare);
  return KC_OK;
}

/* is_nan, is_inf: a float input, a bool result of its shape. */
kc_status shape_isclass(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_shp_set(g, n, 0, KC_BOOL, x->rank, x->dims);
  return KC_OK;
}

/* bitwise_and/or/xor/not, bit_shift: integer inputs of one dtype, broadcast. */
kc_status shape_bitwise(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  for (uint32_t i = 0; s == KC_OK && i < n->nin; i++)
    if (!kc_dtype_is_int(kc_value_of(g, n->in[i])->dtype))
      s = kc_node_errorf(g, n, KC_ERR_TYPE, "input %u (%%%u) is %s; %s takes integers", i,
                         n->in[i].id, kc_dtype_name(kc_value_of(g, n->in[i])->dtype),
                         kc_ops[n->op].name);
  if (s == KC_OK) s = same_dtypes(g, n, 0);
  if (s == KC_OK && n->op == KC_OP_BIT_SHIFT) {
    const char *d = kc_node_string(n, "direction", "");
    if (strcmp(d, "LEFT") != 0 && strcmp(d, "RIGHT") != 0)
      s = kc_node_errorf(g, n, KC_ERR_VERIFY, "direction=\"%s\", expected LEFT or RIGHT", d);
  }
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = bcast_all(g, n, &rank, dims);
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, kc_value_of(g, n->in[0])->dtype, rank, dims);
  return KC_OK;
}

kc_status shape_where(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 0, KC_BOOL);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 1, 2);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = bcast_all(g, n, &rank, dims);
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, kc_value_of(g, n->in[1])->dtype, rank, dims);
  propagate(g, n, known_where);
  return KC_OK;
}

kc_status shape_dropout(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 0);
  if (s == KC_OK) s = kc_shp_need_float(g, n, 1);
  if (s == KC_OK) s = kc_shp_need_dtype(g, n, 2, KC_BOOL);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 0, 0);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 2, 0, 0);
  if (s != KC_OK) return s;
  const kc_value *x = kc_value_of(g, n->in[0]);
  kc_shp_set_like(g, n, 0, n->in[0]);
  kc_shp_set(g, n, 1, KC_BOOL, x->rank, x->dims);
  return KC_OK;
}
