/*
 * codegen/cpu/reduce.c - kc_lower_reduce: reduce_mean, reduce_sum, reduce_max, reduce_min and
 * reduce_prod over any set of axes, for every numeric dtype (and bool for max and min).
 *
 * Which axes are reduced is known at compile time when the axes input is absent or constant;
 * otherwise it is found at run time: with keepdims from the dims (an axis is reduced where the
 * output has 1 and the input does not), without keepdims from the axes buffer. Axes of size 1
 * count as reduced either way, since reducing them changes nothing.
 *
 * Work unit: a tile of up to 4 vectors of consecutive output elements within one row of the
 * output's last dim (OL elements; a scalar output is one row of 1), so the units function needs
 * only the output dims. Two kernel shapes, chosen at run time (folded when the dims are static):
 *   - row mode, when the input's innermost non-trivial axes are reduced: each output element
 *     sums a contiguous run of L elements with vectors (masked tail), looping over any other
 *     reduced axes around it;
 *   - column mode, otherwise: output elements of one output row are consecutive in the input
 *     too (the last output dim is then the input's innermost non-trivial axis, or OL is 1), so
 *     the tile's vectors span output elements, stay in registers, and the loop nest walks the
 *     reduced axes reading the tile's contiguous span at each step.
 * Empty reductions give the identity: sum 0, prod 1, max -inf (the type's minimum for
 * integers), min +inf (the type's maximum), mean 0/0 (nan; 0 for integers rather than a
 * division by zero). Float max and min propagate nan (llvm.maximum/minimum), as numpy's.
 */
#include "ir/shape.h"
#include "rowvec.h"

#include <math.h>

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD } rkind;

typedef struct red {
  kc_cpu_emit *e;
  kc_ir *ir;
  rkind kind;
  kc_dtype t;   /* input = output dtype */
  bool fl, uns; /* float compute; unsigned (or bool) integers */
  unsigned lanes;
  int r; /* input rank */
  LLVMValueRef x, y;
  LLVMValueRef dim[KC_MAX_RANK], stride[KC_MAX_RANK];
  LLVMValueRef keep_dim[KC_MAX_RANK]; /* dim, or 1 where reduced */
  LLVMValueRef trip_col[KC_MAX_RANK]; /* dim where reduced, else 1 */
  LLVMValueRef trip_row[KC_MAX_RANK]; /* the same without the inner run */
  LLVMValueRef run;                   /* L: the contiguous reduced run (row mode) */
} red;

/* ---- which axes ------------------------------------------------------------------------- */

/* Compile-time reduced flags when the axes are known; false when they are not. */
static kc_status static_axes(kc_cpu_emit *e, int r, bool *known, bool *flags) {
  const kc_node *n = e->n;
  bool noop = kc_node_int(n, "noop_with_empty_axes", 0) != 0;
  int64_t axes[KC_KNOWN_MAX];
  uint32_t na = 0;
  *known = true;
  if (n->nin > 1 && n->in[1].id && !kc_shp_known_ints(e->g, n->in[1], axes, KC_KNOWN_MAX, &na)) {
    if (kc_shp_len(e->g, n, 1) != 0) {
      *known = false;
      return KC_OK;
    }
    na = 0;
  }
  for (int a = 0; a < r; a++)
    flags[a] = na == 0 && !noop;
  for (uint32_t i = 0; i < na; i++) {
    int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
    if (a < 0 || a >= r)
      return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_SHAPE, "axis %lld out of range for rank %d",
                            (long long)axes[i], r);
    flags[a] = true;
  }
  return KC_OK;
}

/* Reduced flags read from the axes buffer at run time (keepdims=0 with unknown axes). */
static void runtime_axes(red *R, LLVMValueRef *flags) {
  kc_ir *ir = R->ir;
  kc_cpu_emit *e = R->e;
  bool noop = kc_node_int(e->n, "noop_with_empty_axes", 0) != 0;
  LLVMValueRef ax = kc_emit_in_ptr(e, 1);
  LLVMValueRef na = kc_emit_dim(e, e->p_dims, false, 1, 0);
  LLVMValueRef zero = kc_ir_i64(ir, 0), rank = kc_ir_i64(ir, R->r);
  kc_loop l;
  LLVMValueRef j = kc_loop_begin(ir, &l, zero, na, kc_ir_i64(ir, 1), 1, &zero);
  LLVMValueRef a = kc_ir_load(ir, ir->t_i64, kc_ir_gepi64(ir, ax, j), 8);
  a = LLVMBuildSelect(ir->b, kc_ir_lt(ir, a, zero), kc_ir_add(ir, a, rank), a, "");
  /* the shape function checked the range when it could; never shift out of an i64 */
  a = LLVMBuildAnd(ir->b, a, kc_ir_i64(ir, 63), "");
  LLVMValueRef bit = LLVMBuildShl(ir->b, kc_ir_i64(ir, 1), a, "");
  LLVMValueRef next = LLVMBuildOr(ir->b, l.carry[0], bit, "");
  kc_loop_end(ir, &l, &next);
  LLVMValueRef empty = LLVMBuildICmp(ir->b, LLVMIntEQ, na, zero, "");
  LLVMValueRef bits = LLVMBuildSelect(ir->b, empty, kc_ir_i64(ir, noop ? 0 : -1), l.carry[0], "");
  for (int i = 0; i < R->r; i++) {
    LLVMValueRef b = LLVMBuildLShr(ir->b, bits, kc_ir_i64(ir, i), "");
    flags[i] = LLVMBuildTrunc(ir->b, b, ir->t_i1, "");
  }
}

/* Fill dims, strides, keep/trip dims and the run length from the reduced flags. */
static void plan(red *R, const LLVMValueRef *flags) {
  kc_ir *ir = R->ir;
  LLVMValueRef one = kc_ir_i64(ir, 1), s = one;
  for (int a = R->r - 1; a >= 0; a--) {
    R->stride[a] = s;
    s = kc_ir_mul(ir, s, R->dim[a]);
  }
  LLVMValueRef inrun = LLVMConstInt(ir->t_i1, 1, 0);
  R->run = one;
  for (int a = R->r - 1; a >= 0; a--) {
    LLVMValueRef triv = LLVMBuildICmp(ir->b, LLVMIntEQ, R->dim[a], one, "");
    LLVMValueRef rd = LLVMBuildOr(ir->b, flags[a], triv, "");
    R->keep_dim[a] = LLVMBuildSelect(ir->b, rd, one, R->dim[a], "");
    R->trip_col[a] = LLVMBuildSelect(ir->b, rd, R->dim[a], one, "");
    /* the run continues through reduced and size-1 axes, from the innermost outwards */
    inrun = LLVMBuildAnd(ir->b, inrun, rd, "");
    R->trip_row[a] = LLVMBuildSelect(ir->b, inrun, one, R->trip_col[a], "");
    R->run = kc_ir_mul(ir, R->run, LLVMBuildSelect(ir->b, inrun, R->dim[a], one, ""));
  }
}

/* Input offset of output element o (coordinates over keep_dim, innermost first). */
static LLVMValueRef decompose(red *R, LLVMValueRef o) {
  kc_ir *ir = R->ir;
  LLVMValueRef base = kc_ir_i64(ir, 0);
  for (int a = R->r - 1; a >= 0; a--) {
    LLVMValueRef c = o;
    if (a > 0) {
      c = LLVMBuildURem(ir->b, o, R->keep_dim[a], "");
      o = LLVMBuildUDiv(ir->b, o, R->keep_dim[a], "");
    }
    base = kc_ir_add(ir, base, kc_ir_mul(ir, c, R->stride[a]));
  }
  return base;
}

/* ---- arithmetic of the reduction -------------------------------------------------------- */

static LLVMValueRef identity(red *R, unsigned lanes) {
  if (R->kind == R_PROD) return kc_emit_const(R->ir, R->t, 1, lanes);
  if (R->kind != R_MAX && R->kind != R_MIN) return kc_emit_const(R->ir, R->t, 0, lanes);
  bool mx = R->kind == R_MAX;
  if (R->fl) return kc_emit_const(R->ir, R->t, mx ? -INFINITY : INFINITY, lanes);
  LLVMTypeRef st = kc_emit_compute_type(R->ir, R->t);
  unsigned bits = LLVMGetIntTypeWidth(st);
  LLVMValueRef c;
  if (R->uns) /* 0, or the unsigned maximum (true for bool) */
    c = mx ? LLVMConstNull(st) : R->t == KC_BOOL ? LLVMConstInt(st, 1, 0) : LLVMConstAllOnes(st);
  else /* the signed minimum, or maximum */
    c = LLVMConstInt(st, mx ? 1ULL << (bits - 1) : (1ULL << (bits - 1)) - 1, 0);
  return lanes > 1 ? kc_ir_splat(R->ir, c, lanes) : c;
}

static LLVMValueRef fcall2(red *R, const char *name, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[2] = {a, b};
  return kc_ir_intrinsic(R->ir, name, &t, 1, args, 2);
}

static LLVMValueRef combine(red *R, LLVMValueRef a, LLVMValueRef b) {
  LLVMBuilderRef bd = R->ir->b;
  switch (R->kind) {
  case R_SUM:
  case R_MEAN: return R->fl ? LLVMBuildFAdd(bd, a, b, "") : LLVMBuildAdd(bd, a, b, "");
  case R_PROD: return R->fl ? LLVMBuildFMul(bd, a, b, "") : LLVMBuildMul(bd, a, b, "");
  default: break;
  }
  bool mx = R->kind == R_MAX;
  if (R->fl) return mx ? kc_rv_fmax(R->ir, a, b) : fcall2(R, "llvm.minimum", a, b);
  if (R->t == KC_BOOL) return mx ? LLVMBuildOr(bd, a, b, "") : LLVMBuildAnd(bd, a, b, "");
  LLVMIntPredicate p = mx ? (R->uns ? LLVMIntUGT : LLVMIntSGT) : (R->uns ? LLVMIntULT : LLVMIntSLT);
  LLVMValueRef gt = LLVMBuildICmp(bd, p, a, b, "");
  return LLVMBuildSelect(bd, gt, a, b, "");
}

static LLVMValueRef hcombine(red *R, LLVMValueRef v) {
  if (R->kind == R_SUM || R->kind == R_MEAN) return kc_rv_hsum(R->ir, v);
  if (R->kind == R_MAX && R->fl) return kc_rv_hmax(R->ir, v);
  LLVMTypeRef t = LLVMTypeOf(v);
  if (R->kind == R_PROD) {
    if (!R->fl) return kc_ir_intrinsic(R->ir, "llvm.vector.reduce.mul", &t, 1, &v, 1);
    /* a serial chain in lane order from 1 (no reassoc flag) */
    LLVMValueRef args[2] = {kc_emit_const(R->ir, R->t, 1, 1), v};
    return kc_ir_intrinsic(R->ir, "llvm.vector.reduce.fmul", &t, 1, args, 2);
  }
  bool mx = R->kind == R_MAX;
  const char *name = R->fl             ? "llvm.vector.reduce.fminimum"
                     : R->t == KC_BOOL ? (mx ? "llvm.vector.reduce.or" : "llvm.vector.reduce.and")
                     : R->uns ? (mx ? "llvm.vector.reduce.umax" : "llvm.vector.reduce.umin")
                              : (mx ? "llvm.vector.reduce.smax" : "llvm.vector.reduce.smin");
  return kc_ir_intrinsic(R->ir, name, &t, 1, &v, 1);
}

/* mean = sum / count; integers divide (truncating, as ONNX's reference casts) unless empty. */
static LLVMValueRef finish(red *R, LLVMValueRef v) {
  if (R->kind != R_MEAN) return v;
  kc_ir *ir = R->ir;
  LLVMValueRef cnt = kc_ir_i64(ir, 1);
  for (int a = 0; a < R->r; a++)
    cnt = kc_ir_mul(ir, cnt, R->trip_col[a]);
  LLVMTypeRef vt = LLVMTypeOf(v);
  bool vec = LLVMGetTypeKind(vt) == LLVMVectorTypeKind;
  unsigned lanes = vec ? LLVMGetVectorSize(vt) : 1;
  LLVMTypeRef et = vec ? LLVMGetElementType(vt) : vt;
  if (R->fl) {
    LLVMValueRef c = LLVMBuildSIToFP(ir->b, cnt, et, "");
    return LLVMBuildFDiv(ir->b, v, lanes > 1 ? kc_ir_splat(ir, c, lanes) : c, "mean");
  }
  /* divide in i64: the count need not fit the element type */
  LLVMValueRef zero = kc_ir_i64(ir, 0);
  LLVMValueRef empty = LLVMBuildICmp(ir->b, LLVMIntEQ, cnt, zero, "");
  LLVMValueRef c = LLVMBuildSelect(ir->b, empty, kc_ir_i64(ir, 1), cnt, "");
  LLVMTypeRef wt = kc_emit_vec_type(ir->t_i64, lanes);
  if (lanes > 1) c = kc_ir_splat(ir, c, lanes);
  LLVMValueRef w = LLVMBuildIntCast2(ir->b, v, wt, !R->uns, "");
  w = R->uns ? LLVMBuildUDiv(ir->b, w, c, "") : LLVMBuildSDiv(ir->b, w, c, "");
  LLVMValueRef q = LLVMBuildIntCast2(ir->b, w, vt, !R->uns, "");
  return LLVMBuildSelect(ir->b, empty, LLVMConstNull(vt), q, "");
}

/* ---- loop nest over the reduced axes -------------------------------------------------- */

/* Column mode keeps this many vectors of output elements in registers per unit. */
#define COL_VECS 4

typedef void (*leaf_fn)(red *R, LLVMValueRef off, void *user, LLVMValueRef *acc);

static bool is_one(LLVMValueRef v) {
  return LLVMIsAConstantInt(v) && LLVMConstIntGetSExtValue(v) == 1;
}

/* for each index over trip[a..r): leaf(offset); acc[nacc] is carried through every level. */
static void nest(red *R, int a, const LLVMValueRef *trip, LLVMValueRef off, unsigned nacc,
                 LLVMValueRef *acc, leaf_fn leaf, void *user) {
  if (a == R->r) {
    leaf(R, off, user, acc);
    return;
  }
  if (is_one(trip[a])) {
    nest(R, a + 1, trip, off, nacc, acc, leaf, user);
    return;
  }
  kc_ir *ir = R->ir;
  kc_loop l;
  LLVMValueRef i = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), trip[a], kc_ir_i64(ir, 1), nacc, acc);
  LLVMValueRef cur[COL_VECS];
  for (unsigned k = 0; k < nacc; k++)
    cur[k] = l.carry[k];
  nest(R, a + 1, trip, kc_ir_add(ir, off, kc_ir_mul(ir, i, R->stride[a])), nacc, cur, leaf, user);
  kc_loop_end(ir, &l, cur);
  for (unsigned k = 0; k < nacc; k++)
    acc[k] = l.carry[k];
}

typedef struct {
  red *R;
  LLVMValueRef off;
} run_ctx;

/* Row mode, innermost: fold the contiguous run at off into the vector accumulator. */
static void run_body(void *user, LLVMValueRef i, LLVMValueRef mask, LLVMValueRef *acc) {
  run_ctx *c = user;
  red *R = c->R;
  LLVMValueRef idx = kc_ir_add(R->ir, c->off, i);
  LLVMValueRef x = kc_rv_load(R->e, R->t, R->x, idx, R->lanes, mask, identity(R, R->lanes));
  acc[0] = combine(R, acc[0], x);
}

static void row_leaf(red *R, LLVMValueRef off, void *user, LLVMValueRef *acc) {
  run_ctx c = {R, off};
  /* COL_VECS independent chains, so the combine's latency does not bound the loop */
  LLVMValueRef accs[COL_VECS];
  accs[0] = acc[0];
  for (unsigned k = 1; k < COL_VECS; k++)
    accs[k] = identity(R, R->lanes);
  kc_rv_for_unrolled(R->e, kc_ir_i64(R->ir, 0), R->run, R->lanes, COL_VECS, 1, accs, run_body, &c);
  for (unsigned k = 1; k < COL_VECS; k++)
    accs[0] = combine(R, accs[0], accs[k]);
  acc[0] = accs[0];
}

/* Column mode, innermost: COL_VECS masked vectors of consecutive output elements. */
static void col_leaf(red *R, LLVMValueRef off, void *user, LLVMValueRef *acc) {
  const LLVMValueRef *masks = user;
  for (unsigned k = 0; k < COL_VECS; k++) {
    LLVMValueRef idx = kc_ir_add(R->ir, off, kc_ir_i64(R->ir, (int64_t)(k * R->lanes)));
    LLVMValueRef x = kc_rv_load(R->e, R->t, R->x, idx, R->lanes, masks[k], identity(R, R->lanes));
    acc[k] = combine(R, acc[k], x);
  }
}

/* ---- the kernel ----------------------------------------------------------------------- */

/* Output elements a unit owns at most: COL_VECS vectors of one output row. */
static int64_t tile_of(const kc_cpu_emit *e) {
  return COL_VECS * (int64_t)kc_rv_lanes(e, kc_value_of(e->g, e->n->in[0])->dtype);
}

/* Units: tiles of the output's last dim, times the other output dims. */
static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int ro = kc_value_of(e->g, e->n->out[0])->rank;
  if (ro == 0) return kc_ir_i64(e->ir, 1);
  LLVMValueRef rows = kc_emit_numel(e, dims, true, 0, 0, ro - 1);
  LLVMValueRef ol = kc_emit_dim(e, dims, true, 0, ro - 1);
  return kc_ir_mul(e->ir, rows, kc_ir_cdiv(e->ir, ol, kc_ir_i64(e->ir, tile_of(e))));
}

/* Unit u: output elements [o0, o0 + cnt) of one output row. */
static void emit_unit(red *R, LLVMValueRef u, LLVMValueRef ol, LLVMValueRef rowmode) {
  kc_ir *ir = R->ir;
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1);
  LLVMValueRef tile = kc_ir_i64(ir, tile_of(R->e));
  LLVMValueRef nt = kc_ir_cdiv(ir, ol, tile);
  LLVMValueRef first = kc_ir_mul(ir, LLVMBuildSRem(ir->b, u, nt, ""), tile);
  LLVMValueRef o0 = kc_ir_add(ir, kc_ir_mul(ir, LLVMBuildSDiv(ir->b, u, nt, ""), ol), first);
  LLVMValueRef cnt = kc_ir_min(ir, tile, kc_ir_sub(ir, ol, first));
  kc_if c;
  kc_if_begin(ir, &c, rowmode);
  {
    kc_loop l;
    LLVMValueRef k = kc_loop_begin(ir, &l, zero, cnt, one, 0, NULL);
    LLVMValueRef o = kc_ir_add(ir, o0, k);
    LLVMValueRef acc = identity(R, R->lanes);
    nest(R, 0, R->trip_row, decompose(R, o), 1, &acc, row_leaf, NULL);
    kc_emit_store(R->e, R->t, R->y, o, finish(R, hcombine(R, acc)), 1);
    kc_loop_end(ir, &l, NULL);
  }
  kc_if_else(ir, &c);
  {
    /* the unit's output elements are consecutive in the input too (see the header) */
    LLVMValueRef masks[COL_VECS], acc[COL_VECS];
    for (unsigned k = 0; k < COL_VECS; k++) {
      masks[k] = kc_ir_lane_mask(ir, R->lanes, (int64_t)(k * R->lanes), cnt);
      acc[k] = identity(R, R->lanes);
    }
    nest(R, 0, R->trip_col, decompose(R, o0), COL_VECS, acc, col_leaf, masks);
    for (unsigned k = 0; k < COL_VECS; k++) {
      LLVMValueRef at = kc_ir_add(ir, o0, kc_ir_i64(ir, (int64_t)(k * R->lanes)));
      kc_rv_store(R->e, R->t, R->y, at, finish(R, acc[k]), R->lanes, masks[k]);
    }
  }
  kc_if_end(ir, &c);
}

kc_status kc_lower_reduce(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  const kc_value *xv = kc_value_of(e->g, n->in[0]), *yv = kc_value_of(e->g, n->out[0]);
  red R = {.e = e, .ir = e->ir, .t = xv->dtype, .r = xv->rank};
  R.kind = n->op == KC_OP_REDUCE_MAX    ? R_MAX
           : n->op == KC_OP_REDUCE_MIN  ? R_MIN
           : n->op == KC_OP_REDUCE_PROD ? R_PROD
           : n->op == KC_OP_REDUCE_MEAN ? R_MEAN
                                        : R_SUM;
  R.fl = kc_dtype_is_float(R.t);
  R.uns = R.t == KC_BOOL || R.t == KC_U8 || R.t == KC_U16 || R.t == KC_U32 || R.t == KC_U64;
  R.lanes = kc_rv_lanes(e, R.t);
  if (R.t == KC_BOOL && R.kind != R_MAX && R.kind != R_MIN)
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED,
                          "bool input to a sum, product or mean");
  bool known, flags_c[KC_MAX_RANK];
  kc_status s = static_axes(e, R.r, &known, flags_c);
  if (s != KC_OK) return s;
  bool keep = kc_node_int(n, "keepdims", 1) != 0;
  int ro = yv->rank;
  if (keep && ro != R.r)
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_INTERNAL, "keepdims output of rank %d", ro);
  e->grain = 0;
  e->ws_bytes = 0;

  kc_ir *ir = e->ir;
  kc_emit_kernel_begin(e);
  R.x = kc_emit_in_ptr(e, 0);
  R.y = kc_emit_out_ptr(e, 0);
  LLVMValueRef flags[KC_MAX_RANK];
  for (int a = 0; a < R.r; a++)
    R.dim[a] = kc_emit_dim(e, e->p_dims, false, 0, a);
  if (known) {
    for (int a = 0; a < R.r; a++)
      flags[a] = LLVMConstInt(ir->t_i1, flags_c[a], 0);
  } else if (keep) {
    for (int a = 0; a < R.r; a++)
      flags[a] =
          LLVMBuildICmp(ir->b, LLVMIntNE, kc_emit_dim(e, e->p_dims, true, 0, a), R.dim[a], "");
  } else {
    runtime_axes(&R, flags);
  }
  plan(&R, flags);
  LLVMValueRef ol = ro > 0 ? kc_emit_dim(e, e->p_dims, true, 0, ro - 1) : kc_ir_i64(ir, 1);
  LLVMValueRef rowmode = LLVMBuildICmp(ir->b, LLVMIntNE, R.run, kc_ir_i64(ir, 1), "rowmode");
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, kc_ir_i64(ir, 1), 0, NULL);
  emit_unit(&R, u, ol, rowmode);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, units);
  return KC_OK;
}
