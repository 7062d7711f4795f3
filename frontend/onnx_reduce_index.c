/*
 * frontend/onnx_reduce_index.c - ONNX reductions and index ops that kernc builds at import from
 * IR ops it has (reductions, elementwise ops, gather, scatter_add, reshape, transpose), so they
 * need no kernel of their own and run on every target:
 *   ReduceL1 = sum(|x|), ReduceL2 = sqrt(sum(x*x)), ReduceSumSquare = sum(x*x),
 *   ReduceLogSum = log(sum(x)), ReduceLogSumExp = log(sum(exp(x - m))) + m with m = max(x)
 *   (the stable max-shifted form; an empty reduction gives -inf as log(0) + -inf);
 *   ArgMax/ArgMin = min (max for select_last_index) over the axis of where(x == max(x), i, d)
 *   with i the index along the axis (d, -1 where x is not the extreme), so ties go to the first
 *   (last) index; Hardmax = cast(i == argmax(x)); LpNormalization = x / sum(|x|) or
 *   x / sqrt(sum(x*x)) (0 where the norm is 0); DepthToSpace/SpaceToDepth = reshape ->
 *   transpose -> reshape; GatherElements = gather from the flattened data at constant base
 *   offsets + index * stride; EyeLike = a constant; OneHot = where(index == range(depth), on,
 *   off); Pad = a gather per axis at indices computed from the (run-time) pads, then
 *   where(mask, y, value);
 *   GatherND / ScatterND / ScatterElements (and Scatter) = gather / scatter_add on the data
 *   viewed with the addressed positions flattened onto axis 0, at offsets computed from the
 *   indices (reduction none clears the written positions first; add adds; mul/max/min and
 *   non-float data are unsupported, scatter_add being float only); Einsum = transposes and
 *   unsqueezes onto one letter order, mul, reduce_sum over the summed letters.
 *   Index ops check every index at run time. GatherElements, ScatterElements and ScatterND
 *   check the user's indices themselves (checked_index: a gather from range(size) along the
 *   data axis), so the error names the ONNX node, the index, its position in the user's index
 *   tensor and the axis; GatherND's out-of-range tuple becomes an offset past the flattened
 *   data, which its gather rejects naming the node (the message gives that flat offset).
 *
 * Invariants:
 *   - Axes follow the reduce ops' ONNX forms: an `axes` attribute before row->newer (18; 13 for
 *     the sums), the optional second input from it on; keepdims and noop_with_empty_axes are
 *     passed to every reduction of the composition, so an empty axes list means what it means
 *     in ONNX.
 *   - ArgMax/ArgMin/Hardmax need the reduced axis' size known when importing (the index
 *     constant has it), the index and movement ops every dim of their data and indices; a
 *     symbolic one is unsupported, never guessed. A nan in x is not an extreme (equal(nan,
 *     nan) is false): such a row gives index d (-1 for the last index), where numpy would give
 *     the nan's index.
 *   - Every node built answers to the ONNX node's name in messages (kc_onnx_add names them).
 */
#include "ir/shape.h" /* kc_shp_known_ints: Pad's axes */
#include "onnx_internal.h"

#include <string.h>

/* Number of entries of a name list up to the last non-empty one. */
static uint32_t count_of(char **names, size_t n) {
  while (n > 0 && (!names[n - 1] || !names[n - 1][0]))
    n--;
  return (uint32_t)n;
}

/* The node's inputs in[0..n), all present and no more: KC_OK, else the arity error. */
static kc_status exact_inputs(onnx_imp *im, const Onnx__NodeProto *np, uint32_t n, kc_val *in) {
  static const char *const words[] = {"no inputs", "one input", "two inputs", "three inputs"};
  bool ok = count_of(np->input, np->n_input) == n;
  for (uint32_t i = 0; i < n; i++)
    ok = (in[i] = kc_onnx_input(im, np, i)).id && ok;
  return ok ? KC_OK : kc_errorf(im->ctx, KC_ERR_VERIFY, "takes exactly %s", words[n]);
}

static int64_t int_attr(const Onnx__NodeProto *np, const char *name, int64_t dflt) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  return a ? a->i : dflt;
}

/* op(in...) with up to two int attributes (name NULL: none), inferred; {0} with *st set. */
static kc_val node2(onnx_imp *im, kc_op op, uint32_t nin, const kc_val *in, const char *a1,
                    int64_t v1, const char *a2, int64_t v2, kc_status *st) {
  uint32_t ni = kc_onnx_add(im, op, nin, in, 1, NULL);
  if (ni == UINT32_MAX) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  if (a1) kc_node_set_int(im->g, ni, a1, v1);
  if (a2) kc_node_set_int(im->g, ni, a2, v2);
  *st = kc_onnx_infer(im, ni);
  return *st == KC_OK ? im->g->nodes[ni].out[0] : (kc_val){0};
}

static kc_val emit(onnx_imp *im, kc_op op, kc_val a, kc_val b, kc_status *st) {
  if (*st != KC_OK) return (kc_val){0};
  kc_val in[2] = {a, b};
  return node2(im, op, b.id ? 2 : 1, in, NULL, 0, NULL, 0, st);
}

/* The reduction arguments of an ONNX Reduce* node. */
typedef struct red_args {
  kc_val axes; /* {0}: none given */
  int64_t keep, noop;
} red_args;

static kc_status red_args_of(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row,
                             red_args *ra) {
  uint32_t nin = count_of(np->input, np->n_input);
  ra->keep = int_attr(np, "keepdims", 1);
  ra->noop = int_attr(np, "noop_with_empty_axes", 0);
  ra->axes = (kc_val){0};
  if (nin < 1 || !kc_onnx_input(im, np, 0).id)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "required input 0 is missing");
  if (im->opset >= row->newer) {
    if (nin > 2) return kc_errorf(im->ctx, KC_ERR_VERIFY, "has %u inputs; takes 1 or 2", nin);
    if (nin == 2) ra->axes = kc_onnx_input(im, np, 1);
    return KC_OK;
  }
  if (nin != 1)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes one input at opset %lld", (long long)im->opset);
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "axes");
  if (!a) return KC_OK;
  kc_status s;
  ra->axes = kc_onnx_const_i64s(im, (uint32_t)a->n_ints, a->ints, &s);
  return s;
}

static kc_val reduce(onnx_imp *im, kc_op op, kc_val x, const red_args *ra, int64_t keep,
                     kc_status *st) {
  if (*st != KC_OK) return (kc_val){0};
  kc_val in[2] = {x, ra->axes};
  return node2(im, op, ra->axes.id ? 2 : 1, in, "keepdims", keep, "noop_with_empty_axes", ra->noop,
               st);
}

static kc_val scalar_i64(onnx_imp *im, int64_t v, kc_status *st) {
  return *st == KC_OK ? kc_onnx_const_scalar(im, KC_I64, (double)v, st) : (kc_val){0};
}

static kc_val where3(onnx_imp *im, kc_val c, kc_val a, kc_val b, kc_status *st) {
  return *st == KC_OK ? node2(im, KC_OP_WHERE, 3, (kc_val[]){c, a, b}, NULL, 0, NULL, 0, st)
                      : (kc_val){0};
}

typedef enum { RK_L1, RK_L2, RK_SUM_SQUARE, RK_LOG_SUM, RK_LOG_SUM_EXP } red_kind;

static kc_status import_reduce(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row,
                               red_kind k) {
  red_args ra;
  kc_status s = red_args_of(im, np, row, &ra);
  if (s != KC_OK) return s;
  kc_val x = kc_onnx_input(im, np, 0), y;
  switch (k) {
  case RK_L1:
    y = reduce(im, KC_OP_REDUCE_SUM, emit(im, KC_OP_ABS, x, (kc_val){0}, &s), &ra, ra.keep, &s);
    break;
  case RK_L2:
  case RK_SUM_SQUARE:
    y = reduce(im, KC_OP_REDUCE_SUM, emit(im, KC_OP_MUL, x, x, &s), &ra, ra.keep, &s);
    if (k == RK_L2) y = emit(im, KC_OP_SQRT, y, (kc_val){0}, &s);
    break;
  case RK_LOG_SUM:
    y = emit(im, KC_OP_LOG, reduce(im, KC_OP_REDUCE_SUM, x, &ra, ra.keep, &s), (kc_val){0}, &s);
    break;
  default: {
    /* log(sum(exp(x - m))) + m: exp never overflows; m kept for the broadcast */
    kc_val m = reduce(im, KC_OP_REDUCE_MAX, x, &ra, 1, &s);
    kc_val e = emit(im, KC_OP_EXP, emit(im, KC_OP_SUB, x, m, &s), (kc_val){0}, &s);
    kc_val l =
        emit(im, KC_OP_LOG, reduce(im, KC_OP_REDUCE_SUM, e, &ra, ra.keep, &s), (kc_val){0}, &s);
    if (!ra.keep) m = reduce(im, KC_OP_REDUCE_MAX, x, &ra, 0, &s);
    y = emit(im, KC_OP_ADD, l, m, &s);
  }
  }
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

kc_status kc_onnx_import_reduce_l1(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  return import_reduce(im, np, row, RK_L1);
}
kc_status kc_onnx_import_reduce_l2(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  return import_reduce(im, np, row, RK_L2);
}
kc_status kc_onnx_import_reduce_sum_square(onnx_imp *im, const Onnx__NodeProto *np,
                                           const onnx_op *row) {
  return import_reduce(im, np, row, RK_SUM_SQUARE);
}
kc_status kc_onnx_import_reduce_log_sum(onnx_imp *im, const Onnx__NodeProto *np,
                                        const onnx_op *row) {
  return import_reduce(im, np, row, RK_LOG_SUM);
}
kc_status kc_onnx_import_reduce_log_sum_exp(onnx_imp *im, const Onnx__NodeProto *np,
                                            const onnx_op *row) {
  return import_reduce(im, np, row, RK_LOG_SUM_EXP);
}

/* ---- ArgMax / ArgMin / Hardmax ---------------------------------------------------------- */

/* The normalized axis of x (rank r) and its known size, or an error. */
static kc_status axis_of(onnx_imp *im, kc_val x, int64_t axis, int64_t *a, int64_t *d) {
  const kc_value *xv = kc_value_of(im->g, x);
  int r = xv->rank;
  if (axis < -r || axis >= r || r == 0)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d",
                     (long long)axis, r);
  *a = axis < 0 ? axis + r : axis;
  *d = xv->dims[*a];
  if (*d < 0)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "axis %lld has a symbolic size (its index constant needs the size)",
                     (long long)axis);
  return KC_OK;
}

/* i64 [d, 1, ...] (rank r - a) holding 0..d-1: the index along axis a, broadcastable to x. */
static kc_val index_along(onnx_imp *im, int r, int64_t a, int64_t d, kc_status *st) {
  int64_t dims[KC_MAX_RANK];
  int rank = r - (int)a;
  dims[0] = d;
  for (int i = 1; i < rank; i++)
    dims[i] = 1;
  int64_t *v = kc_arena_alloc(&im->g->arena, (size_t)(d ? d : 1) * sizeof *v);
  if (!v) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  for (int64_t i = 0; i < d; i++)
    v[i] = i;
  return kc_onnx_const(im, KC_I64, rank, dims, v, st);
}

/* The index of the extreme (max: row op REDUCE_MAX) of x along axis a, kept as size 1. */
static kc_val arg_keep(onnx_imp *im, kc_op op, kc_val x, int64_t a, int64_t d, bool last,
                       kc_status *st) {
  int r = kc_value_of(im->g, x)->rank;
  kc_val ax = kc_onnx_const_i64s(im, 1, &a, st);
  if (*st != KC_OK) return (kc_val){0};
  red_args ra = {.axes = ax, .keep = 1, .noop = 0};
  kc_val m = reduce(im, op, x, &ra, 1, st);
  kc_val hit = emit(im, KC_OP_EQUAL, x, m, st);
  kc_val idx = *st == KC_OK ? index_along(im, r, a, d, st) : (kc_val){0};
  kc_val other =
      *st == KC_OK ? kc_onnx_const_scalar(im, KC_I64, last ? -1.0 : (double)d, st) : (kc_val){0};
  kc_val in[3] = {hit, idx, other};
  kc_val w = *st == KC_OK ? node2(im, KC_OP_WHERE, 3, in, NULL, 0, NULL, 0, st) : (kc_val){0};
  return reduce(im, last ? KC_OP_REDUCE_MAX : KC_OP_REDUCE_MIN, w, &ra, 1, st);
}

/* ArgMax (row op REDUCE_MAX) / ArgMin (REDUCE_MIN): axis, keepdims, select_last_index. */
kc_status kc_onnx_import_arg(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_val x;
  kc_status s = exact_inputs(im, np, 1, &x);
  if (s != KC_OK) return s;
  int64_t a = 0, d = 0;
  s = axis_of(im, x, int_attr(np, "axis", 0), &a, &d);
  if (s != KC_OK) return s;
  bool last = int_attr(np, "select_last_index", 0) != 0;
  kc_val y = arg_keep(im, row->op, x, a, d, last, &s);
  if (s == KC_OK && !int_attr(np, "keepdims", 1)) {
    kc_val ax = kc_onnx_const_i64s(im, 1, &a, &s);
    y = emit(im, KC_OP_SQUEEZE, y, ax, &s);
  }
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/*
 * Hardmax: 1 at the first maximum along axis (default -1), 0 elsewhere. Before opset 13 the
 * input is coerced to 2-D at axis (default 1): flatten -> hardmax(-1) -> reshape, as Softmax.
 */
kc_status kc_onnx_import_hardmax(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_val x;
  kc_status s = exact_inputs(im, np, 1, &x);
  if (s != KC_OK) return s;
  bool old = im->opset < row->newer;
  int64_t axis = int_attr(np, "axis", old ? 1 : -1);
  kc_val src = x;
  int r = kc_value_of(im->g, x)->rank;
  if (old) {
    if (axis < -r || axis > r)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d",
                       (long long)axis, r);
    src = node2(im, KC_OP_FLATTEN, 1, &x, "axis", axis < 0 ? axis + r : axis, NULL, 0, &s);
    axis = -1;
  }
  int64_t a = 0, d = 0;
  if (s == KC_OK) s = axis_of(im, src, axis, &a, &d);
  if (s != KC_OK) return s;
  kc_val am = arg_keep(im, KC_OP_REDUCE_MAX, src, a, d, false, &s);
  kc_val idx = s == KC_OK ? index_along(im, kc_value_of(im->g, src)->rank, a, d, &s) : (kc_val){0};
  kc_val hit = emit(im, KC_OP_EQUAL, idx, am, &s);
  kc_val y = {0};
  if (s == KC_OK) {
    uint32_t ci = kc_onnx_add(im, KC_OP_CAST, 1, &hit, 1, NULL);
    if (ci == UINT32_MAX) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    kc_node_set_dtype(im->g, ci, "to", kc_value_of(im->g, x)->dtype);
    if ((s = kc_onnx_infer(im, ci)) != KC_OK) return s;
    y = im->g->nodes[ci].out[0];
  }
  if (old && s == KC_OK)
    y = emit(im, KC_OP_RESHAPE, y, emit(im, KC_OP_SHAPE, x, (kc_val){0}, &s), &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/* LpNormalization: x / ||x||_p along axis (0 where the norm is 0) (default -1), p 1 or 2 (default
 * 2). */
kc_status kc_onnx_import_lp_norm(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val x;
  kc_status s = exact_inputs(im, np, 1, &x);
  if (s != KC_OK) return s;
  int64_t p = int_attr(np, "p", 2), axis = int_attr(np, "axis", -1);
  if (p != 1 && p != 2) return kc_errorf(im->ctx, KC_ERR_VERIFY, "p is %lld; 1 or 2", (long long)p);
  int r = kc_value_of(im->g, x)->rank;
  if (axis < -r || axis >= r)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d",
                     (long long)axis, r);
  red_args ra = {.axes = kc_onnx_const_i64s(im, 1, &axis, &s), .keep = 1, .noop = 0};
  if (s != KC_OK) return s;
  kc_val n;
  if (p == 1)
    n = reduce(im, KC_OP_REDUCE_SUM, emit(im, KC_OP_ABS, x, (kc_val){0}, &s), &ra, 1, &s);
  else
    n = emit(im, KC_OP_SQRT,
             reduce(im, KC_OP_REDUCE_SUM, emit(im, KC_OP_MUL, x, x, &s), &ra, 1, &s), (kc_val){0},
             &s);
  /* a zero norm gives 0, as ONNX's reference (x / 0 would be nan) */
  kc_val z =
      s == KC_OK ? kc_onnx_const_scalar(im, kc_value_of(im->g, x)->dtype, 0, &s) : (kc_val){0};
  kc_val y = where3(im, emit(im, KC_OP_EQUAL, n, z, &s), z, emit(im, KC_OP_DIV, x, n, &s), &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/* ---- index and movement ops ----------------------------------------------------------- */

/* The known dims of v (every one an integer), or an error naming what. */
static kc_status static_dims(onnx_imp *im, kc_val v, const char *what, int *r, int64_t *dims) {
  const kc_value *xv = kc_value_of(im->g, v);
  *r = xv->rank;
  for (int i = 0; i < xv->rank; i++) {
    if (xv->dims[i] < 0)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "%s has a symbolic dim %d (needs its size)",
                       what, i);
    dims[i] = xv->dims[i];
  }
  return KC_OK;
}

static kc_val const_i64(onnx_imp *im, int rank, const int64_t *dims, const int64_t *v,
                        kc_status *st) {
  return *st == KC_OK ? kc_onnx_const(im, KC_I64, rank, dims, v, st) : (kc_val){0};
}

static kc_val reshape_to(onnx_imp *im, kc_val x, int n, const int64_t *shape, kc_status *st) {
  int64_t d = n;
  return emit(im, KC_OP_RESHAPE, x, const_i64(im, 1, &d, shape, st), st);
}

static kc_val transpose(onnx_imp *im, kc_val x, int n, const int64_t *perm, kc_status *st) {
  if (*st != KC_OK) return (kc_val){0};
  uint32_t ni = kc_onnx_add(im, KC_OP_TRANSPOSE, 1, &x, 1, NULL);
  if (ni == UINT32_MAX) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  kc_node_set_ints(im->g, ni, "perm", n, perm);
  *st = kc_onnx_infer(im, ni);
  return *st == KC_OK ? im->g->nodes[ni].out[0] : (kc_val){0};
}

static kc_val cast_to(onnx_imp *im, kc_val x, kc_dtype t, kc_status *st) {
  if (*st != KC_OK) return (kc_val){0};
  if (kc_value_of(im->g, x)->dtype == t) return x;
  uint32_t ci = kc_onnx_add(im, KC_OP_CAST, 1, &x, 1, NULL);
  if (ci == UINT32_MAX) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  kc_node_set_dtype(im->g, ci, "to", t);
  *st = kc_onnx_infer(im, ci);
  return *st == KC_OK ? im->g->nodes[ci].out[0] : (kc_val){0};
}

static int64_t *i64_buf(onnx_imp *im, int64_t n, kc_status *st) {
  int64_t *v = kc_arena_alloc(&im->g->arena, (size_t)(n > 0 ? n : 1) * sizeof *v);
  if (!v) *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  return v;
}

/*
 * Indices ind (any integer dtype and shape) checked against size d and made non-negative, as
 * the user wrote them: a gather along `axis` from range(d) laid out as [1, ..., 1, d] at the
 * flattened indices. An index outside [-d, d) fails there at run time, and the error names the
 * ONNX node, the index's value, its position in the user's index tensor, the data axis and its
 * size (runtime/index_error.c), where a check on computed offsets could only give an offset.
 * Gives i64 of ind's shape. The gather node answers to the ONNX node's name, or to its op type
 * when the node has none.
 */
static kc_val checked_index(onnx_imp *im, const Onnx__NodeProto *np, kc_val ind, int64_t d,
                            int axis, kc_status *st) {
  if (*st != KC_OK) return (kc_val){0};
  const kc_value *iv = kc_value_of(im->g, ind);
  int r = iv->rank;
  int64_t id[KC_MAX_RANK], n = 1, zd[KC_MAX_RANK];
  for (int i = 0; i < r; i++)
    n *= id[i] = iv->dims[i];
  for (int i = 0; i < axis; i++)
    zd[i] = 1;
  zd[axis] = d;
  kc_val zero = scalar_i64(im, 0, st), one = scalar_i64(im, 1, st), dv = scalar_i64(im, d, st);
  kc_val rg = *st == KC_OK
                  ? node2(im, KC_OP_RANGE, 3, (kc_val[]){zero, dv, one}, NULL, 0, NULL, 0, st)
                  : (kc_val){0};
  kc_val z = reshape_to(im, rg, axis + 1, zd, st), flat = reshape_to(im, ind, 1, &n, st);
  if (*st != KC_OK) return (kc_val){0};
  uint32_t ni = kc_onnx_add(im, KC_OP_GATHER, 2, (kc_val[]){z, flat}, 1, NULL);
  if (ni == UINT32_MAX) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  kc_node_set_int(im->g, ni, "axis", axis);
  if (!im->g->nodes[ni].loc) im->g->nodes[ni].loc = kc_arena_strdup(&im->g->arena, np->op_type);
  if ((*st = kc_onnx_infer(im, ni)) != KC_OK) return (kc_val){0};
  return reshape_to(im, im->g->nodes[ni].out[0], r, id, st);
}

/*
 * The flat offsets into data x that GatherElements and ScatterElements (data, indices) {axis}
 * address: base[j] + checked(indices[j]) * stride, base (a constant) the offset of j's other
 * coordinates. Writes data's rank and dims; *st set on error.
 */
static kc_val element_offsets(onnx_imp *im, const Onnx__NodeProto *np, kc_val x, kc_val ind, int *r,
                              int64_t *xd, kc_status *st) {
  int ri;
  int64_t id[KC_MAX_RANK], stride[KC_MAX_RANK];
  if ((*st = static_dims(im, x, "data", r, xd)) != KC_OK ||
      (*st = static_dims(im, ind, "indices", &ri, id)) != KC_OK)
    return (kc_val){0};
  if (ri != *r || ri == 0) {
    *st = kc_errorf(im->ctx, KC_ERR_SHAPE, "indices have rank %d, data %d", ri, *r);
    return (kc_val){0};
  }
  int64_t axis = int_attr(np, "axis", 0);
  if (axis < -ri || axis >= ri) {
    *st = kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d", (long long)axis,
                    ri);
    return (kc_val){0};
  }
  int a = (int)(axis < 0 ? axis + ri : axis);
  int64_t numel = 1, ni = 1;
  for (int k = ri - 1; k >= 0; k--) {
    if (k != a && id[k] > xd[k]) {
      *st = kc_errorf(im->ctx, KC_ERR_SHAPE, "indices dim %d is %lld, data's %lld", k,
                      (long long)id[k], (long long)xd[k]);
      return (kc_val){0};
    }
    stride[k] = numel;
    numel *= xd[k];
    ni *= id[k];
  }
  int64_t *base = i64_buf(im, ni, st);
  if (*st != KC_OK) return (kc_val){0};
  for (int64_t j = 0; j < ni; j++) {
    int64_t rem = j, off = 0;
    for (int k = ri - 1; k >= 0; k--) {
      if (k != a) off += (rem % id[k]) * stride[k];
      rem /= id[k];
    }
    base[j] = off;
  }
  kc_val i = checked_index(im, np, ind, xd[a], a, st);
  return emit(im, KC_OP_ADD, const_i64(im, ri, id, base, st),
              emit(im, KC_OP_MUL, i, scalar_i64(im, stride[a], st), st), st);
}

/* GatherElements(data, indices, axis): y[j] = data[j with its axis coordinate replaced by
 * indices[j]], one gather from the flattened data at element_offsets. */
kc_status kc_onnx_import_gather_elements(onnx_imp *im, const Onnx__NodeProto *np,
                                         const onnx_op *row) {
  (void)row;
  kc_val in[2];
  kc_status s = exact_inputs(im, np, 2, in);
  if (s != KC_OK) return s;
  kc_val x = in[0], ind = in[1];
  int r;
  int64_t xd[KC_MAX_RANK], numel = 1;
  kc_val flat = element_offsets(im, np, x, ind, &r, xd, &s);
  for (int k = 0; s == KC_OK && k < r; k++)
    numel *= xd[k];
  kc_val xf = reshape_to(im, x, 1, &numel, &s);
  kc_val y = s == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){xf, flat}, "axis", 0, NULL, 0, &s)
                        : (kc_val){0};
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/*
 * DepthToSpace (row op RESHAPE) and SpaceToDepth (TRANSPOSE) on [N, C, H, W] with blocksize b:
 * DCR: [N, b, b, C/b², H, W] -> (0, 3, 4, 1, 5, 2); CRD: [N, C/b², b, b, H, W] ->
 * (0, 1, 4, 2, 5, 3); SpaceToDepth: [N, C, H/b, b, W/b, b] -> (0, 3, 5, 1, 2, 4); then the
 * result's shape.
 */
kc_status kc_onnx_import_space_depth(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_val x;
  kc_status s = exact_inputs(im, np, 1, &x);
  if (s != KC_OK) return s;
  int r;
  int64_t d[KC_MAX_RANK];
  s = static_dims(im, x, "the input", &r, d);
  if (s != KC_OK) return s;
  if (r != 4) return kc_errorf(im->ctx, KC_ERR_SHAPE, "input has rank %d; needs 4", r);
  int64_t b = int_attr(np, "blocksize", 0);
  if (b <= 0) return kc_errorf(im->ctx, KC_ERR_VERIFY, "blocksize %lld", (long long)b);
  int64_t n = d[0], c = d[1], h = d[2], w = d[3];
  int64_t s6[6], out[4];
  const int64_t *perm;
  static const int64_t dcr[6] = {0, 3, 4, 1, 5, 2}, crd[6] = {0, 1, 4, 2, 5, 3},
                       s2d[6] = {0, 3, 5, 1, 2, 4};
  if (row->op == KC_OP_RESHAPE) { /* DepthToSpace */
    if (c % (b * b))
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "channels %lld not divisible by blocksize² %lld",
                       (long long)c, (long long)(b * b));
    const Onnx__AttributeProto *m = kc_onnx_attr(np, "mode");
    bool is_crd = m && m->s.len == 3 && memcmp(m->s.data, "CRD", 3) == 0;
    if (m && !is_crd && !(m->s.len == 3 && memcmp(m->s.data, "DCR", 3) == 0))
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "mode is neither DCR nor CRD");
    int64_t cc = c / (b * b);
    if (is_crd) {
      int64_t t[6] = {n, cc, b, b, h, w};
      memcpy(s6, t, sizeof t);
    } else {
      int64_t t[6] = {n, b, b, cc, h, w};
      memcpy(s6, t, sizeof t);
    }
    perm = is_crd ? crd : dcr;
    int64_t o[4] = {n, cc, h * b, w * b};
    memcpy(out, o, sizeof o);
  } else {
    if (h % b || w % b)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "H %lld, W %lld not divisible by blocksize %lld",
                       (long long)h, (long long)w, (long long)b);
    int64_t t[6] = {n, c, h / b, b, w / b, b}, o[4] = {n, c * b * b, h / b, w / b};
    memcpy(s6, t, sizeof t);
    memcpy(out, o, sizeof o);
    perm = s2d;
  }
  kc_val y = reshape_to(im, transpose(im, reshape_to(im, x, 6, s6, &s), 6, perm, &s), 4, out, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/*
 * OneHot(indices, depth, values) {axis=-1}: where(i == range(depth), on, off) with i the
 * indices (cast to i64, negative ones counted from depth) unsqueezed at axis and range(depth)
 * shaped [depth, 1, ...] to broadcast against the axes after it; depth may be a run-time
 * scalar. An index outside [-depth, depth) gives a row of off values, as ONNX specifies.
 */
kc_status kc_onnx_import_one_hot(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val in[3];
  kc_status s = exact_inputs(im, np, 3, in);
  if (s != KC_OK) return s;
  kc_val ind = in[0], depth = in[1], vals = in[2];
  int r = kc_value_of(im->g, ind)->rank;
  int64_t axis = int_attr(np, "axis", -1);
  if (axis < -(r + 1) || axis > r)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d",
                     (long long)axis, r + 1);
  int64_t a = axis < 0 ? axis + r + 1 : axis;
  /* depth: a scalar or one element, of any numeric type */
  int64_t one = 1;
  kc_val dep = reshape_to(im, cast_to(im, depth, KC_I64, &s), 0, &one, &s);
  kc_val zero = s == KC_OK ? kc_onnx_const_scalar(im, KC_I64, 0, &s) : (kc_val){0};
  kc_val step = s == KC_OK ? kc_onnx_const_scalar(im, KC_I64, 1, &s) : (kc_val){0};
  kc_val rng = s == KC_OK
                   ? node2(im, KC_OP_RANGE, 3, (kc_val[]){zero, dep, step}, NULL, 0, NULL, 0, &s)
                   : (kc_val){0};
  int64_t tail[KC_MAX_RANK];
  int nt = (int)(r - a);
  for (int i = 0; i < nt; i++)
    tail[i] = i + 1;
  if (nt > 0) {
    int64_t nd = nt;
    rng = emit(im, KC_OP_UNSQUEEZE, rng, const_i64(im, 1, &nd, tail, &s), &s);
  }
  kc_val i = cast_to(im, ind, KC_I64, &s);
  kc_val neg = emit(im, KC_OP_LESS, i, zero, &s);
  if (s == KC_OK)
    i = node2(im, KC_OP_WHERE, 3, (kc_val[]){neg, emit(im, KC_OP_ADD, i, dep, &s), i}, NULL, 0,
              NULL, 0, &s);
  i = emit(im, KC_OP_UNSQUEEZE, i, const_i64(im, 1, &one, &a, &s), &s);
  kc_val hit = emit(im, KC_OP_EQUAL, i, rng, &s);
  kc_val k0 = zero, k1 = step;
  kc_val off = s == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){vals, k0}, "axis", 0, NULL, 0, &s)
                          : (kc_val){0};
  kc_val on = s == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){vals, k1}, "axis", 0, NULL, 0, &s)
                         : (kc_val){0};
  kc_val y = s == KC_OK ? node2(im, KC_OP_WHERE, 3, (kc_val[]){hit, on, off}, NULL, 0, NULL, 0, &s)
                        : (kc_val){0};
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/* EyeLike(x) {dtype?, k}: ones on diagonal k of x's 2-D shape, a constant cast to dtype. */
kc_status kc_onnx_import_eye_like(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val x;
  kc_status s = exact_inputs(im, np, 1, &x);
  if (s != KC_OK) return s;
  int r;
  int64_t d[KC_MAX_RANK];
  s = static_dims(im, x, "the input", &r, d);
  if (s != KC_OK) return s;
  if (r != 2) return kc_errorf(im->ctx, KC_ERR_SHAPE, "input has rank %d; needs 2", r);
  kc_dtype t = kc_value_of(im->g, x)->dtype;
  const Onnx__AttributeProto *dt = kc_onnx_attr(np, "dtype");
  if (dt && (t = kc_onnx_dtype(dt->i)) == KC_DT_NONE)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "dtype %s", kc_onnx_dtype_name(dt->i));
  int64_t k = int_attr(np, "k", 0);
  int64_t *v = i64_buf(im, d[0] * d[1], &s);
  if (s != KC_OK) return s;
  for (int64_t i = 0; i < d[0]; i++)
    for (int64_t j = 0; j < d[1]; j++)
      v[i * d[1] + j] = j - i == k;
  kc_val y = cast_to(im, const_i64(im, 2, d, v, &s), t, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/* ---- Pad -------------------------------------------------------------------------------- */

/*
 * Pad(x, pads, constant_value?, axes?) {mode}: per padded axis a of size d with pads (b, e),
 * possibly known only at run time, y = gather(y, src, a) with src = range(d + b + e) - b mapped
 * into [0, d) by the mode: edge clamps, reflect folds (d-1 - |d-1 - |s||, right while the pads
 * are under d), wrap adds or subtracts d (right while they are at most d); constant clamps and
 * keeps the mask 0 <= s < d, and the value goes where any axis' mask is false. Negative pads
 * crop. Before opset 11 pads and value were attributes. axes must be known when compiling.
 */
kc_status kc_onnx_import_pad(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  kc_val x = kc_onnx_input(im, np, 0), pads = {0}, cv = {0};
  if (!x.id) return kc_errorf(im->ctx, KC_ERR_VERIFY, "required input 0 is missing");
  int r = kc_value_of(im->g, x)->rank;
  kc_dtype t = kc_value_of(im->g, x)->dtype;
  kc_status s = KC_OK;
  uint32_t nin = count_of(np->input, np->n_input);
  int64_t axes[KC_MAX_RANK];
  uint32_t na = (uint32_t)r;
  for (int i = 0; i < r; i++)
    axes[i] = i;
  if (im->opset < row->newer) {
    const Onnx__AttributeProto *p = kc_onnx_attr(np, "pads");
    if (!p) p = kc_onnx_attr(np, "paddings");
    if (!p || nin != 1) return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs one input and 'pads'");
    pads = kc_onnx_const_i64s(im, (uint32_t)p->n_ints, p->ints, &s);
    const Onnx__AttributeProto *v = kc_onnx_attr(np, "value");
    if (v && s == KC_OK) cv = kc_onnx_const_scalar(im, t, v->f, &s);
  } else {
    pads = kc_onnx_input(im, np, 1);
    if (!pads.id || nin > 4)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes 2 to 4 inputs, pads required");
    cv = kc_onnx_input(im, np, 2);
    kc_val ax = kc_onnx_input(im, np, 3);
    if (ax.id && !kc_shp_known_ints(im->g, ax, axes, KC_MAX_RANK, &na))
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "axes are not known when compiling");
  }
  if (s != KC_OK) return s;
  const kc_value *pv = kc_value_of(im->g, pads);
  if (pv->rank != 1 || pv->dims[0] != 2 * (int64_t)na)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "pads should hold %u values", 2 * na);
  if (cv.id && kc_value_of(im->g, cv)->dtype != t)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "constant_value's dtype differs from x's");
  const Onnx__AttributeProto *m = kc_onnx_attr(np, "mode");
  const char *mode = "constant";
  char buf[16];
  if (m) {
    size_t len = m->s.len < sizeof buf - 1 ? m->s.len : sizeof buf - 1;
    memcpy(buf, m->s.data, len);
    buf[len] = 0;
    mode = buf;
  }
  int md = strcmp(mode, "constant") == 0  ? 0
           : strcmp(mode, "edge") == 0    ? 1
           : strcmp(mode, "reflect") == 0 ? 2
           : strcmp(mode, "wrap") == 0    ? 3
                                          : -1;
  if (md < 0) return kc_errorf(im->ctx, KC_ERR_VERIFY, "mode '%s'", mode);
  kc_val pi = cast_to(im, pads, KC_I64, &s), y = x, mask = {0};
  kc_val zero = scalar_i64(im, 0, &s), one = scalar_i64(im, 1, &s);
  for (uint32_t k = 0; k < na && s == KC_OK; k++) {
    int64_t a = axes[k] < 0 ? axes[k] + r : axes[k];
    if (a < 0 || a >= r)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "axis %lld is out of range for rank %d",
                       (long long)axes[k], r);
    int64_t d = kc_value_of(im->g, x)->dims[a];
    if (d < 0)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "axis %lld has a symbolic size", (long long)a);
    if (md != 0 && d == 0)
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "mode '%s' pads an empty axis %lld", mode,
                       (long long)a);
    kc_val b = emit(im, KC_OP_GATHER, pi, scalar_i64(im, (int64_t)k, &s), &s);
    kc_val e = emit(im, KC_OP_GATHER, pi, scalar_i64(im, (int64_t)(k + na), &s), &s);
    kc_val dv = scalar_i64(im, d, &s), dm1 = scalar_i64(im, d - 1, &s);
    kc_val len = emit(im, KC_OP_ADD, emit(im, KC_OP_ADD, dv, b, &s), e, &s);
    len = emit(im, KC_OP_MAX, len, zero, &s);
    kc_val rg = s == KC_OK
                    ? node2(im, KC_OP_RANGE, 3, (kc_val[]){zero, len, one}, NULL, 0, NULL, 0, &s)
                    : (kc_val){0};
    kc_val src = emit(im, KC_OP_SUB, rg, b, &s), in_lo = {0}, in_hi = {0};
    if (md == 0) {
      in_lo = emit(im, KC_OP_NOT, emit(im, KC_OP_LESS, src, zero, &s), (kc_val){0}, &s);
      in_hi = emit(im, KC_OP_LESS, src, dv, &s);
    }
    if (md <= 1) { /* clamp */
      src = emit(im, KC_OP_MIN, emit(im, KC_OP_MAX, src, zero, &s), dm1, &s);
    } else if (md == 2) { /* fold */
      kc_val in = emit(im, KC_OP_ABS, src, (kc_val){0}, &s);
      in = emit(im, KC_OP_ABS, emit(im, KC_OP_SUB, dm1, in, &s), (kc_val){0}, &s);
      src = emit(im, KC_OP_SUB, dm1, in, &s);
    } else { /* wrap */
      kc_val lo = emit(im, KC_OP_LESS, src, zero, &s), hi = emit(im, KC_OP_LESS, src, dv, &s);
      kc_val inner = where3(im, hi, src, emit(im, KC_OP_SUB, src, dv, &s), &s);
      src = where3(im, lo, emit(im, KC_OP_ADD, src, dv, &s), inner, &s);
    }
    y = s == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){y, src}, "axis", a, NULL, 0, &s) : y;
    if (md == 0) {
      kc_val ma = emit(im, KC_OP_AND, in_lo, in_hi, &s);
      int64_t tail[KC_MAX_RANK], nt = r - 1 - a;
      for (int i = 0; i < nt; i++)
        tail[i] = i + 1;
      if (nt > 0) ma = emit(im, KC_OP_UNSQUEEZE, ma, const_i64(im, 1, &nt, tail, &s), &s);
      mask = mask.id ? emit(im, KC_OP_AND, mask, ma, &s) : ma;
    }
  }
  if (md == 0 && mask.id && s == KC_OK) {
    if (!cv.id) cv = kc_onnx_const_scalar(im, t, 0, &s);
    y = where3(im, mask, y, cv, &s);
  }
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/* ---- GatherND / ScatterND / ScatterElements ---------------------------------------------- */

/* i64 [n] holding v, broadcast: expand(scalar v, shape). */
static kc_val filled(onnx_imp *im, kc_dtype t, double v, int rank, const int64_t *dims,
                     kc_status *st) {
  kc_val c = *st == KC_OK ? kc_onnx_const_scalar(im, t, v, st) : (kc_val){0};
  int64_t n = rank;
  return emit(im, KC_OP_EXPAND, c, const_i64(im, 1, &n, dims, st), st);
}

/* ---- GatherND (sizes as run-time values: symbolic dims work) ---- */

/* Elements idx of the 1-D i64 shape value sh ([n] with n > 0); {0} with *st set on error. */
static kc_val shape_part(onnx_imp *im, kc_val sh, int n, const int64_t *idx, kc_status *st) {
  int64_t nn = n;
  kc_val iv = const_i64(im, 1, &nn, idx, st);
  return *st == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){sh, iv}, "axis", 0, NULL, 0, st)
                      : (kc_val){0};
}

/* Element i of the shape value sh as an i64 scalar (a number or a symbol's expression). */
static kc_val shape_dim(onnx_imp *im, kc_val sh, int64_t i, kc_status *st) {
  kc_val iv = scalar_i64(im, i, st);
  return *st == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){sh, iv}, "axis", 0, NULL, 0, st)
                      : (kc_val){0};
}

/* a * b, where a {0} stands for 1 (the empty product). */
static kc_val times(onnx_imp *im, kc_val a, kc_val b, kc_status *st) {
  return a.id ? emit(im, KC_OP_MUL, a, b, st) : b;
}

/* Concatenation of 1-D i64 values parts[0..n) (n > 0). */
static kc_val concat_1d(onnx_imp *im, int n, const kc_val *parts, kc_status *st) {
  return *st == KC_OK ? node2(im, KC_OP_CONCAT, (uint32_t)n, parts, "axis", 0, NULL, 0, st)
                      : (kc_val){0};
}

/* ---- GatherND at a full index grid: a view of the data ---- */

static const kc_node *producer(const kc_graph *g, kc_val v) {
  uint32_t d = v.id && v.id < g->nvals ? g->vals[v.id].def : 0;
  return d ? &g->nodes[d - 1] : NULL;
}

static bool known1(const kc_graph *g, kc_val v, int64_t *x) {
  uint32_t n;
  return v.id && kc_shp_known_ints(g, v, x, 1, &n) && n == 1;
}

/*
 * Is v the ramp 0, 1, ..., n-1 along one axis, the same along the others? True with that axis
 * counted from the end (1 = last) in *axis and n in *n: Range(0, n, 1), seen through integer
 * casts, unsqueezes, reshapes and squeezes of a tensor whose other axes are all 1, and expands
 * that keep the ramp's axis.
 */
static bool ramp_axis(const kc_graph *g, kc_val v, int depth, int *axis, kc_dim *n) {
  const kc_node *nd = producer(g, v);
  if (!nd || depth > 16) return false;
  const kc_value *y = kc_value_of(g, v);
  int64_t c;
  switch (nd->op) {
  case KC_OP_RANGE:
    if (!known1(g, nd->in[0], &c) || c != 0 || !known1(g, nd->in[2], &c) || c != 1) return false;
    *axis = 1;
    *n = y->dims[0];
    return true;
  case KC_OP_CAST: return kc_dtype_is_int(y->dtype) && ramp_axis(g, nd->in[0], depth + 1, axis, n);
  case KC_OP_EXPAND:
    return ramp_axis(g, nd->in[0], depth + 1, axis, n) && y->rank >= *axis &&
           y->dims[y->rank - *axis] == *n;
  case KC_OP_UNSQUEEZE: { /* the ramp's axis moves past the unit axes inserted before it */
    int64_t ax[KC_MAX_RANK];
    uint32_t na;
    if (!ramp_axis(g, nd->in[0], depth + 1, axis, n) || nd->nin < 2 ||
        !kc_shp_known_ints(g, nd->in[1], ax, KC_MAX_RANK, &na))
      return false;
    bool ins[KC_MAX_RANK] = {false};
    for (uint32_t i = 0; i < na; i++) {
      int64_t a = ax[i] < 0 ? ax[i] + y->rank : ax[i];
      if (a < 0 || a >= y->rank) return false;
      ins[a] = true;
    }
    int src = kc_value_of(g, nd->in[0])->rank - *axis, seen = 0;
    for (int i = 0; i < y->rank; i++)
      if (!ins[i] && seen++ == src) {
        *axis = y->rank - i;
        return true;
      }
    return false;
  }
  case KC_OP_RESHAPE:
  case KC_OP_SQUEEZE: {
    const kc_value *x = kc_value_of(g, nd->in[0]);
    if (!ramp_axis(g, nd->in[0], depth + 1, axis, n)) return false;
    for (int i = 0; i < x->rank; i++)
      if (i != x->rank - *axis && x->dims[i] != 1) return false;
    int found = -1;
    for (int i = 0; i < y->rank; i++) {
      if (y->dims[i] == 1) continue;
      if (found >= 0 || y->dims[i] != *n) return false;
      found = i;
    }
    if (found < 0) return false;
    *axis = y->rank - found;
    return true;
  }
  default: return false;
  }
}

/*
 * GatherND(data [d0.., rest...], indices [q..., k]) with batch_dims 0 where component j of the
 * index tuples is the ramp 0..d_j-1 along its own axis p_j of q (indices built from Range,
 * Expand and Concat: the dynamo exporter's padding_mask[batch_idx, kv_idx]): the result is
 * data[t_p0, t_p1, ...] at each position t, i.e. data with axes 0..k-1 in the order of their
 * p_j, unit axes inserted at the other positions of q, and expanded to q. Every index is in
 * range by construction, so no check is needed. *done is false when the indices are no such grid.
 */
static kc_status gather_nd_grid(onnx_imp *im, const Onnx__NodeProto *np, kc_val x, kc_val ind,
                                int k, bool *done) {
  const kc_graph *g = im->g;
  const kc_value *xv = kc_value_of(g, x), *iv = kc_value_of(g, ind);
  int r = xv->rank, q = iv->rank, pos[KC_MAX_RANK];
  kc_val part[KC_MAX_RANK];
  *done = false;
  const kc_node *cat = producer(g, ind);
  if (k == 1) {
    part[0] = ind;
  } else {
    if (!cat || cat->op != KC_OP_CONCAT || cat->nin != (uint32_t)k) return KC_OK;
    int64_t ax = kc_node_int(cat, "axis", 0);
    if ((ax < 0 ? ax + q : ax) != q - 1) return KC_OK;
    for (int j = 0; j < k; j++)
      part[j] = cat->in[j];
  }
  bool used[KC_MAX_RANK] = {false};
  for (int j = 0; j < k; j++) {
    const kc_value *pv = kc_value_of(g, part[j]);
    int axis;
    kc_dim n;
    if (pv->rank != q || pv->dims[q - 1] != 1 || !ramp_axis(g, part[j], 0, &axis, &n) || axis < 2 ||
        n != xv->dims[j])
      return KC_OK;
    pos[j] = q - axis; /* among the indices' q - 1 leading axes */
    if (used[pos[j]]) return KC_OK;
    used[pos[j]] = true;
  }
  kc_status s = KC_OK;
  /* data's first k axes in the order of their positions */
  int64_t perm[KC_MAX_RANK];
  bool moved = false;
  int np_ = 0;
  for (int p = 0; p < q - 1; p++)
    for (int j = 0; j < k; j++)
      if (pos[j] == p) {
        moved |= np_ != j;
        perm[np_++] = j;
      }
  for (int i = k; i < r; i++)
    perm[i] = i;
  kc_val y = moved ? transpose(im, x, r, perm, &s) : x;
  int64_t ua[KC_MAX_RANK], nu = 0;
  bool expand = false;
  for (int p = 0; p < q - 1; p++)
    if (!used[p]) {
      ua[nu++] = p;
      expand |= iv->dims[p] != 1;
    }
  if (nu > 0) y = emit(im, KC_OP_UNSQUEEZE, y, const_i64(im, 1, &nu, ua, &s), &s);
  if (expand && s == KC_OK) {
    int64_t lead[KC_MAX_RANK], ones[KC_MAX_RANK], nr = r - k;
    for (int p = 0; p < q - 1; p++)
      lead[p] = p;
    for (int i = 0; i < nr; i++)
      ones[i] = 1;
    kc_val parts[2] = {shape_part(im, emit(im, KC_OP_SHAPE, ind, (kc_val){0}, &s), q - 1, lead, &s),
                       nr > 0 ? const_i64(im, 1, &nr, ones, &s) : (kc_val){0}};
    y = emit(im, KC_OP_EXPAND, y, concat_1d(im, nr > 0 ? 2 : 1, parts, &s), &s);
  }
  if (s != KC_OK) return s;
  *done = true;
  return kc_onnx_bind(im, np, 0, y);
}

/*
 * GatherND(data, indices [q..., k]) {batch_dims b}, with data's dims d: data viewed as
 * [nb * m, d[b+k]...] (nb = d[0] * ... * d[b-1], m = d[b] * ... * d[b+k-1]) and gathered on
 * axis 0 at each tuple's row-major offset (Horner: ((i0 * d[b+1] + i1) * d[b+2] + i2)...) plus
 * its batch row times m. The sizes are values read from Shape(data), so symbolic dims (the
 * dynamo exporter's padding_mask[batch_idx, kv_idx]) work as well as numbers; a tuple with a
 * component outside [-d, d) gets offset nb * m, which the gather rejects as an index error.
 */
kc_status kc_onnx_import_gather_nd(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val x = kc_onnx_input(im, np, 0), ind = kc_onnx_input(im, np, 1);
  if (!x.id || !ind.id || count_of(np->input, np->n_input) != 2)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "takes exactly two inputs");
  const kc_value *xv = kc_value_of(im->g, x), *iv = kc_value_of(im->g, ind);
  int r = xv->rank, q = iv->rank;
  int64_t b = int_attr(np, "batch_dims", 0);
  if (q < 1 || b < 0 || b >= q || b >= r)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "batch_dims %lld for ranks %d and %d", (long long)b, r,
                     q);
  if (iv->dims[q - 1] < 0)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                     "indices has a symbolic last dim (needs its size)");
  int k = (int)iv->dims[q - 1];
  if (k < 1 || b + k > r)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "index tuples of %d for rank %d", k, r);
  for (int i = 0; i < b; i++)
    if (xv->dims[i] >= 0 && iv->dims[i] >= 0 && xv->dims[i] != iv->dims[i])
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "batch dim %d differs", i);
  bool done = false;
  kc_status s = b == 0 ? gather_nd_grid(im, np, x, ind, k, &done) : KC_OK;
  if (s != KC_OK || done) return s;
  kc_val sh = emit(im, KC_OP_SHAPE, x, (kc_val){0}, &s);
  kc_val idx = cast_to(im, ind, KC_I64, &s), zero = scalar_i64(im, 0, &s);
  kc_val off = {0}, ok = {0}, m = {0}, nb = {0};
  for (int j = 0; j < k && s == KC_OK; j++) {
    kc_val dj = shape_dim(im, sh, b + j, &s), jv = scalar_i64(im, j, &s);
    kc_val ij = s == KC_OK
                    ? node2(im, KC_OP_GATHER, 2, (kc_val[]){idx, jv}, "axis", q - 1, NULL, 0, &s)
                    : (kc_val){0};
    ij = where3(im, emit(im, KC_OP_LESS, ij, zero, &s), emit(im, KC_OP_ADD, ij, dj, &s), ij, &s);
    kc_val in = emit(im, KC_OP_AND,
                     emit(im, KC_OP_NOT, emit(im, KC_OP_LESS, ij, zero, &s), (kc_val){0}, &s),
                     emit(im, KC_OP_LESS, ij, dj, &s), &s);
    ok = ok.id ? emit(im, KC_OP_AND, ok, in, &s) : in;
    off = off.id ? emit(im, KC_OP_ADD, emit(im, KC_OP_MUL, off, dj, &s), ij, &s) : ij;
    m = times(im, m, dj, &s);
  }
  for (int i = 0; i < b && s == KC_OK; i++)
    nb = times(im, nb, shape_dim(im, sh, i, &s), &s);
  kc_val rows = nb.id ? emit(im, KC_OP_MUL, nb, m, &s) : m;
  if (b > 0 && s == KC_OK) {
    /* the batch row times m, as [indices' batch dims..., 1 ...] (rank q - 1) */
    kc_val one = scalar_i64(im, 1, &s);
    kc_val ramp = s == KC_OK
                      ? node2(im, KC_OP_RANGE, 3, (kc_val[]){zero, nb, one}, NULL, 0, NULL, 0, &s)
                      : (kc_val){0};
    int64_t bi[KC_MAX_RANK], ones[KC_MAX_RANK], no = q - 1 - b;
    for (int i = 0; i < b; i++)
      bi[i] = i;
    for (int i = 0; i < no; i++)
      ones[i] = 1;
    kc_val parts[2] = {shape_part(im, emit(im, KC_OP_SHAPE, ind, (kc_val){0}, &s), (int)b, bi, &s),
                       no > 0 ? const_i64(im, 1, &no, ones, &s) : (kc_val){0}};
    kc_val bshape = concat_1d(im, no > 0 ? 2 : 1, parts, &s);
    kc_val base = emit(im, KC_OP_RESHAPE, emit(im, KC_OP_MUL, ramp, m, &s), bshape, &s);
    off = emit(im, KC_OP_ADD, off, base, &s);
  }
  off = where3(im, ok, off, rows, &s);
  /* data viewed as [rows, d[b+k]...] */
  int64_t one1 = 1, ti[KC_MAX_RANK];
  int nt = 0;
  for (int i = (int)b + k; i < r; i++)
    ti[nt++] = i;
  kc_val vparts[2] = {emit(im, KC_OP_RESHAPE, rows, const_i64(im, 1, &one1, &one1, &s), &s),
                      nt > 0 ? shape_part(im, sh, nt, ti, &s) : (kc_val){0}};
  kc_val xr = emit(im, KC_OP_RESHAPE, x, concat_1d(im, nt > 0 ? 2 : 1, vparts, &s), &s);
  kc_val y = s == KC_OK ? node2(im, KC_OP_GATHER, 2, (kc_val[]){xr, off}, "axis", 0, NULL, 0, &s)
                        : (kc_val){0};
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/*
 * reduction none / add: 0 / 1; anything else, or data that is not float (scatter_add's
 * dtypes), is unsupported (-1 with the error set).
 */
static int reduction_of(onnx_imp *im, const Onnx__NodeProto *np, kc_val x, kc_status *st) {
  kc_dtype t = kc_value_of(im->g, x)->dtype;
  if (!kc_dtype_is_float(t)) {
    *st = kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "data of %s (float types are)", kc_dtype_name(t));
    return -1;
  }
  const Onnx__AttributeProto *a = kc_onnx_attr(np, "reduction");
  if (!a || (a->s.len == 4 && memcmp(a->s.data, "none", 4) == 0)) return 0;
  if (a->s.len == 3 && memcmp(a->s.data, "add", 3) == 0) return 1;
  *st = kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "reduction '%.*s' (none and add are)", (int)a->s.len,
                  (const char *)a->s.data);
  return -1;
}

/*
 * Scatter into xv [M, P...] (data viewed with the scattered positions on axis 0) at offsets
 * off [q...] of updates [q..., P...]: add, or (none) clear the positions written first, by a
 * scatter_add of ones into a count of writes per position.
 */
static kc_val scatter_rows(onnx_imp *im, kc_val xv, kc_val off, kc_val upd, bool add, int64_t m,
                           int q, const int64_t *qd, kc_status *st) {
  if (!add) {
    /* f32 counts (scatter_add is float only): exact far beyond any real count */
    kc_val cnt = filled(im, KC_F32, 0, 1, &m, st), ones = filled(im, KC_F32, 1, q, qd, st);
    kc_val c = *st == KC_OK ? node2(im, KC_OP_SCATTER_ADD, 3, (kc_val[]){cnt, off, ones}, "axis", 0,
                                    NULL, 0, st)
                            : (kc_val){0};
    kc_val z0 = *st == KC_OK ? kc_onnx_const_scalar(im, KC_F32, 0, st) : (kc_val){0};
    kc_val hit = emit(im, KC_OP_GREATER, c, z0, st);
    int rv = *st == KC_OK ? kc_value_of(im->g, xv)->rank : 1;
    int64_t tail[KC_MAX_RANK], nt = rv - 1;
    for (int i = 0; i < nt; i++)
      tail[i] = i + 1;
    if (nt > 0) hit = emit(im, KC_OP_UNSQUEEZE, hit, const_i64(im, 1, &nt, tail, st), st);
    kc_dtype t = *st == KC_OK ? kc_value_of(im->g, xv)->dtype : KC_F32;
    kc_val z = *st == KC_OK ? kc_onnx_const_scalar(im, t, 0, st) : (kc_val){0};
    xv = where3(im, hit, z, xv, st);
  }
  return *st == KC_OK
             ? node2(im, KC_OP_SCATTER_ADD, 3, (kc_val[]){xv, off, upd}, "axis", 0, NULL, 0, st)
             : (kc_val){0};
}

/*
 * The flat offsets of index tuples ind [q..., k] into the first k dims d of the data (row
 * major): component j is checked against d[j] as data axis j by checked_index on the whole
 * index tensor with the other components zeroed, so an error gives the user's value and its
 * position in the user's tensor. i64 [q...].
 */
static kc_val checked_tuple_offsets(onnx_imp *im, const Onnx__NodeProto *np, kc_val ind, int k,
                                    const int64_t *d, kc_status *st) {
  int64_t stride[KC_MAX_RANK], acc = 1, kk = k, last = -1;
  for (int j = k - 1; j >= 0; j--) {
    stride[j] = acc;
    acc *= d[j];
  }
  kc_dtype it = *st == KC_OK ? kc_value_of(im->g, ind)->dtype : KC_I64;
  kc_val zero = *st == KC_OK ? kc_onnx_const_scalar(im, it, 0, st) : (kc_val){0}, norm = {0};
  for (int j = 0; j < k && *st == KC_OK; j++) {
    bool *pick = kc_arena_alloc(&im->g->arena, (size_t)k);
    if (!pick) {
      *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
      return (kc_val){0};
    }
    for (int c = 0; c < k; c++)
      pick[c] = c == j;
    kc_val mask = kc_onnx_const(im, KC_BOOL, 1, &kk, pick, st);
    kc_val cj = checked_index(im, np, where3(im, mask, ind, zero, st), d[j], j, st);
    norm = norm.id ? emit(im, KC_OP_ADD, norm, cj, st) : cj;
  }
  red_args ra = {.axes = const_i64(im, 1, (int64_t[]){1}, &last, st), .keep = 0, .noop = 0};
  return reduce(im, KC_OP_REDUCE_SUM,
                emit(im, KC_OP_MUL, norm, const_i64(im, 1, &kk, stride, st), st), &ra, 0, st);
}

/* ScatterND(data, indices [..., k], updates) {reduction none/add}. */
kc_status kc_onnx_import_scatter_nd(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val in[3];
  kc_status s = exact_inputs(im, np, 3, in);
  if (s != KC_OK) return s;
  kc_val x = in[0], ind = in[1], upd = in[2];
  int r, q;
  int64_t d[KC_MAX_RANK], id[KC_MAX_RANK];
  s = static_dims(im, x, "data", &r, d);
  if (s == KC_OK) s = static_dims(im, ind, "indices", &q, id);
  int red = s == KC_OK ? reduction_of(im, np, x, &s) : -1;
  if (s != KC_OK) return s;
  int k = q >= 1 ? (int)id[q - 1] : 0;
  if (k < 1 || k > r)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "index tuples of %d for rank %d", k, r);
  int64_t m = 1, vd[KC_MAX_RANK], ud[KC_MAX_RANK];
  for (int j = 0; j < k; j++)
    m *= d[j];
  int nv = 0, nu = 0;
  vd[nv++] = m;
  for (int i = 0; i < q - 1; i++)
    ud[nu++] = id[i];
  for (int i = k; i < r; i++)
    vd[nv++] = d[i], ud[nu++] = d[i];
  kc_val off = checked_tuple_offsets(im, np, ind, k, d, &s);
  kc_val xv = reshape_to(im, x, nv, vd, &s), uv = reshape_to(im, upd, nu, ud, &s);
  kc_val y = scatter_rows(im, xv, off, uv, red == 1, m, q - 1, id, &s);
  y = reshape_to(im, y, r, d, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/*
 * ScatterElements (and Scatter before 11) (data, indices, updates) {axis, reduction
 * none/add}: the flat offsets of GatherElements, scattered into the flattened data.
 */
kc_status kc_onnx_import_scatter_elements(onnx_imp *im, const Onnx__NodeProto *np,
                                          const onnx_op *row) {
  (void)row;
  kc_val in[3];
  kc_status s = exact_inputs(im, np, 3, in);
  if (s != KC_OK) return s;
  kc_val x = in[0], ind = in[1], upd = in[2];
  int red = reduction_of(im, np, x, &s), r;
  int64_t xd[KC_MAX_RANK], numel = 1;
  kc_val flat = s == KC_OK ? element_offsets(im, np, x, ind, &r, xd, &s) : (kc_val){0};
  if (s != KC_OK) return s;
  const kc_value *iv = kc_value_of(im->g, ind);
  int64_t id[KC_MAX_RANK];
  for (int k = 0; k < r; k++) {
    numel *= xd[k];
    id[k] = iv->dims[k];
  }
  kc_val xf = reshape_to(im, x, 1, &numel, &s);
  kc_val y = scatter_rows(im, xf, flat, upd, red == 1, numel, r, id, &s);
  y = reshape_to(im, y, r, xd, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}

/* ---- Einsum ----------------------------------------------------------------------------- */

/*
 * Einsum(inputs...) {equation}: each operand is transposed into the order its letters take in
 * U (the output's letters, then the summed ones, in order of appearance) and unsqueezed where
 * it lacks one, so all broadcast over U; their product is summed over the letters the output
 * lacks. Without "->" the output is the letters used once, alphabetically. Ellipses and a
 * letter repeated within one operand (diagonals) are unsupported.
 */
kc_status kc_onnx_import_einsum(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  const Onnx__AttributeProto *eq = kc_onnx_attr(np, "equation");
  uint32_t nin = count_of(np->input, np->n_input);
  if (!eq || nin < 1 || nin > 8)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "needs an equation and 1 to 8 inputs");
  char terms[9][KC_MAX_RANK + 1], out[KC_MAX_RANK + 1] = {0};
  int nt = 0, len = 0, cnt[128] = {0};
  bool arrow = false;
  memset(terms, 0, sizeof terms);
  for (size_t i = 0; i < eq->s.len; i++) {
    char c = (char)eq->s.data[i];
    if (c == ' ') continue;
    if (c == '.') return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "ellipsis in the equation");
    if (c == ',' || (c == '-' && i + 1 < eq->s.len && eq->s.data[i + 1] == '>')) {
      if (arrow || nt >= 8) return kc_errorf(im->ctx, KC_ERR_VERIFY, "malformed equation");
      nt++, len = 0;
      if (c == '-') arrow = true, i++;
      continue;
    }
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!letter || len >= KC_MAX_RANK)
      return kc_errorf(im->ctx, KC_ERR_VERIFY, "malformed equation");
    char *dst = arrow ? out : terms[nt];
    if (strchr(dst, c))
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "letter '%c' repeated in one term", c);
    dst[len++] = c;
    if (!arrow) cnt[(int)c]++;
  }
  int nops = arrow ? nt : nt + 1;
  if ((uint32_t)nops != nin)
    return kc_errorf(im->ctx, KC_ERR_VERIFY, "%d terms for %u inputs", nops, nin);
  if (!arrow) { /* implicit: the letters used once, alphabetically */
    int n = 0;
    for (int c = 'A'; c <= 'z'; c++)
      if (cnt[c] == 1 && n < KC_MAX_RANK) out[n++] = (char)c;
  }
  char u[2 * KC_MAX_RANK + 1] = {0};
  int nu = (int)strlen(out);
  memcpy(u, out, (size_t)nu);
  for (int k = 0; k < nops; k++)
    for (const char *p = terms[k]; *p; p++) {
      if (!strchr(u, *p)) {
        if (nu >= KC_MAX_RANK) return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "over 8 letters");
        u[nu++] = *p;
      }
    }
  for (const char *p = out; *p; p++)
    if (!cnt[(int)*p]) return kc_errorf(im->ctx, KC_ERR_VERIFY, "output letter '%c' unused", *p);
  kc_status s = KC_OK;
  kc_val prod = {0};
  for (int k = 0; k < nops && s == KC_OK; k++) {
    kc_val x = kc_onnx_input(im, np, (size_t)k);
    int r = x.id ? kc_value_of(im->g, x)->rank : -1;
    if (r != (int)strlen(terms[k]))
      return kc_errorf(im->ctx, KC_ERR_SHAPE, "input %d has rank %d for term '%s'", k, r, terms[k]);
    /* its letters in U's order, then the missing ones as new axes of size 1 */
    int64_t perm[KC_MAX_RANK], miss[KC_MAX_RANK];
    int np_ = 0, nm = 0;
    for (int j = 0; j < nu; j++) {
      const char *at = strchr(terms[k], u[j]);
      if (at)
        perm[np_++] = at - terms[k];
      else
        miss[nm++] = j;
    }
    bool ident = true;
    for (int j = 0; j < np_; j++)
      ident = ident && perm[j] == j;
    if (!ident) x = transpose(im, x, np_, perm, &s);
    if (nm > 0) {
      int64_t n = nm;
      x = emit(im, KC_OP_UNSQUEEZE, x, const_i64(im, 1, &n, miss, &s), &s);
    }
    prod = prod.id ? emit(im, KC_OP_MUL, prod, x, &s) : x;
  }
  int no = (int)strlen(out);
  if (s == KC_OK && nu > no) {
    int64_t ax[KC_MAX_RANK], n = nu - no;
    for (int j = no; j < nu; j++)
      ax[j - no] = j;
    red_args ra = {.axes = const_i64(im, 1, &n, ax, &s), .keep = 0, .noop = 0};
    prod = reduce(im, KC_OP_REDUCE_SUM, prod, &ra, 0, &s);
  } else if (s == KC_OK && nops == 1) {
    prod = emit(im, KC_OP_IDENTITY, prod, (kc_val){0}, &s);
  }
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, prod);
}

/*
 * Tile(x, repeats): x [d0, ..., dn-1] reshaped to [1, d0, 1, d1, ...], expanded to [r0, d0, r1,
 * d1, ...] and reshaped to [r0*d0, r1*d1, ...]. x's dims must be known; repeats (i64 [n]) may
 * be computed at run time (then the last reshape's shape is, and the output views the expand's
 * result, sized a stage earlier).
 */
kc_status kc_onnx_import_tile(onnx_imp *im, const Onnx__NodeProto *np, const onnx_op *row) {
  (void)row;
  kc_val in[2];
  kc_status s = exact_inputs(im, np, 2, in);
  if (s != KC_OK) return s;
  kc_val x = in[0], rep = in[1];
  int r;
  int64_t d[KC_MAX_RANK];
  s = static_dims(im, x, "the input", &r, d);
  if (s != KC_OK) return s;
  if (2 * r > KC_MAX_RANK)
    return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "input of rank %d: tiling goes through rank %d",
                     r, 2 * r);
  const kc_value *rv = kc_value_of(im->g, rep);
  if (rv->rank != 1 || rv->dims[0] != r)
    return kc_errorf(im->ctx, KC_ERR_SHAPE, "repeats must be 1-D with %d elements", r);
  int64_t split[2 * KC_MAX_RANK], rd[2] = {r, 1}, two_r = 2 * r;
  for (int i = 0; i < r; i++)
    split[2 * i] = 1, split[2 * i + 1] = d[i];
  kc_val y = reshape_to(im, x, 2 * r, split, &s);
  kc_val reps = cast_to(im, rep, KC_I64, &s);
  kc_val col =
      emit(im, KC_OP_UNSQUEEZE, reps, const_i64(im, 1, (int64_t[]){1}, (int64_t[]){1}, &s), &s);
  kc_val pairs = s == KC_OK
                     ? node2(im, KC_OP_CONCAT, 2, (kc_val[]){col, const_i64(im, 2, rd, d, &s)},
                             "axis", 1, NULL, 0, &s)
                     : (kc_val){0};
  y = emit(im, KC_OP_EXPAND, y,
           emit(im, KC_OP_RESHAPE, pairs, const_i64(im, 1, (int64_t[]){1}, &two_r, &s), &s), &s);
  kc_val shape = emit(im, KC_OP_MUL, reps, const_i64(im, 1, (int64_t[]){r}, d, &s), &s);
  y = emit(im, KC_OP_RESHAPE, y, shape, &s);
  return s != KC_OK ? s : kc_onnx_bind(im, np, 0, y);
}
