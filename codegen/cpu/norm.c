/*
 * codegen/cpu/norm.c - kc_lower_norm: ONNX LayerNormalization (with its optional Mean and
 * InvStdDev outputs) and RMSNormalization, and kernc's fused layer_norm / rms_norm.
 *
 * A row is x[i, axis:] flattened (N elements); work unit = one row, units = numel(x[:axis]).
 * Per row, one vectorized statistics pass and one vectorized apply pass:
 *   - layer norm sums d = x - K and d*d with K the row's first element (the shifted-data
 *     variance: one pass, without the cancellation of sum(x*x) - sum(x)^2 when |mean| >> std);
 *   - rms norm sums x*x.
 * The apply pass centres as (x - K) - (mean - K), not x - mean: x - K is exact, while the mean
 * rounded to f32 is off by an ulp of |mean|, which matters when |mean| >> std.
 * Statistics are computed in f32 (f64 for f64 inputs), ONNX's stash_type=1. The statistics
 * results (one per row) are written when present: ONNX's Mean and InvStdDev (f32), layer_norm's
 * mean and rstd and rms_norm's rstd (f32, f64 for f64 x), each in its result's dtype.
 *
 * scale and bias broadcast to x[axis:]; kernc supports the forms where, after dropping leading
 * 1s, they equal the trailing dims of x (period P = their element count, so element k of the
 * row uses index k mod P). The apply pass runs t over N / P repetitions of the shortest period
 * and vectors over it, so each operand is read contiguously. Other broadcasts (a 1 inside the
 * normalized dims) are KC_ERR_UNSUPPORTED.
 */
#include "rowvec.h"

/* Independent accumulator copies of the statistics pass. */
#define UNROLL 4

typedef struct nrm {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype t, ct; /* input dtype; compute dtype (f32, or f64) */
  bool rms;
  unsigned lanes;
  int axis, rank;
  int sm, bm; /* trailing x dims the scale / bias span (-1: no bias) */
  LLVMValueRef x, y, scale, bias;
  LLVMValueRef base, shift;     /* row offset; the statistics pass's shift (splat) */
  LLVMValueRef mean, inv, d1;   /* splats for the apply pass; mean = shift + d1 */
  LLVMValueRef off, soff, boff; /* apply pass: offsets of the current period */
} nrm;

/*
 * How many trailing dims of x parameter input i spans: the largest m with the parameter's
 * leading dims all 1 and its last m dims those of x; -1 when there is none.
 */
static int param_span(const kc_cpu_emit *e, uint32_t i, int axis) {
  const kc_value *x = kc_value_of(e->g, e->n->in[0]), *p = kc_value_of(e->g, e->n->in[i]);
  for (int m = p->rank; m >= 0; m--) {
    bool ok = m <= x->rank - axis;
    for (int k = 0; ok && k < p->rank - m; k++)
      ok = p->dims[k] == 1;
    for (int k = 0; ok && k < m; k++)
      ok = p->dims[p->rank - m + k] == x->dims[x->rank - m + k];
    if (ok) return m;
  }
  return -1;
}

static LLVMValueRef cconst(nrm *R, double v) { return kc_emit_const(R->ir, R->ct, v, R->lanes); }

/* Load x as the compute type (f64 stays f64; everything else computes in f32). */
static LLVMValueRef load_x(nrm *R, LLVMValueRef ptr, kc_dtype t, LLVMValueRef idx,
                           LLVMValueRef mask, LLVMValueRef fill) {
  return kc_rv_load(R->e, t, ptr, idx, R->lanes, mask, fill);
}

static void stats_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  nrm *R = user;
  LLVMBuilderRef b = R->ir->b;
  LLVMValueRef x = load_x(R, R->x, R->t, kc_ir_add(R->ir, R->base, k), mask, R->shift);
  LLVMValueRef d = LLVMBuildFSub(b, x, R->shift, "");
  acc[0] = LLVMBuildFAdd(b, acc[0], d, "");
  acc[1] = kc_ir_fmuladd(R->ir, d, d, acc[1]);
}

static void apply_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *carry) {
  nrm *R = user;
  kc_ir *ir = R->ir;
  LLVMValueRef idx = kc_ir_add(ir, R->off, k);
  LLVMValueRef x = load_x(R, R->x, R->t, idx, mask, NULL);
  /* (x - K) - d1 rather than x - mean: x - K is exact, and mean = K + d1 rounded is not */
  LLVMValueRef c =
      R->rms ? x : LLVMBuildFSub(ir->b, LLVMBuildFSub(ir->b, x, R->shift, ""), R->d1, "");
  LLVMValueRef v = LLVMBuildFMul(ir->b, c, R->inv, "");
  LLVMValueRef s = load_x(R, R->scale, R->t, kc_ir_add(ir, R->soff, k), mask, NULL);
  if (R->bias) {
    LLVMValueRef bv = load_x(R, R->bias, R->t, kc_ir_add(ir, R->boff, k), mask, NULL);
    v = kc_ir_fmuladd(ir, v, s, bv);
  } else {
    v = LLVMBuildFMul(ir->b, v, s, "");
  }
  kc_rv_store(R->e, R->t, R->y, idx, v, R->lanes, mask);
}

/* Statistics of the row at R->base (n elements): sets R->mean and R->inv (splats). */
static void statistics(nrm *R, LLVMValueRef n, double eps) {
  kc_ir *ir = R->ir;
  LLVMValueRef zero = kc_ir_i64(ir, 0);
  LLVMTypeRef et = kc_emit_compute_type(ir, R->ct);
  if (R->rms) {
    R->shift = cconst(R, 0);
  } else {
    /* the row's first element, read only when the row is not empty */
    LLVMValueRef m2 = kc_ir_lane_mask(ir, 2, 0, kc_ir_min(ir, n, kc_ir_i64(ir, 1)));
    LLVMValueRef two = kc_rv_load(R->e, R->t, R->x, R->base, 2, m2, NULL);
    R->shift = kc_ir_splat(ir, LLVMBuildExtractElement(ir->b, two, kc_ir_i32(ir, 0), ""), R->lanes);
  }
  /* UNROLL copies of (sum, sum of squares): independent fadd chains */
  LLVMValueRef acc[2 * UNROLL];
  for (unsigned k = 0; k < 2 * UNROLL; k++)
    acc[k] = cconst(R, 0);
  kc_rv_for_unrolled(R->e, zero, n, R->lanes, UNROLL, 2, acc, stats_body, R);
  for (unsigned k = 1; k < UNROLL; k++) {
    acc[0] = LLVMBuildFAdd(ir->b, acc[0], acc[2 * k], "");
    acc[1] = LLVMBuildFAdd(ir->b, acc[1], acc[2 * k + 1], "");
  }
  LLVMValueRef nf = LLVMBuildSIToFP(ir->b, n, et, "");
  LLVMValueRef d1 = LLVMBuildFDiv(ir->b, kc_rv_hsum(ir, acc[0]), nf, "");
  LLVMValueRef var = LLVMBuildFDiv(ir->b, kc_rv_hsum(ir, acc[1]), nf, "");
  LLVMValueRef mean = LLVMConstReal(et, 0);
  if (!R->rms) {
    var = LLVMBuildFSub(ir->b, var, LLVMBuildFMul(ir->b, d1, d1, ""), "");
    /* rounding can leave a tiny negative variance */
    LLVMValueRef neg = LLVMBuildFCmp(ir->b, LLVMRealOLT, var, LLVMConstReal(et, 0), "");
    var = LLVMBuildSelect(ir->b, neg, LLVMConstReal(et, 0), var, "");
    mean = LLVMBuildFAdd(ir->b, LLVMBuildExtractElement(ir->b, R->shift, kc_ir_i32(ir, 0), ""), d1,
                         "mean");
  }
  LLVMValueRef sd = kc_rv_sqrt(ir, LLVMBuildFAdd(ir->b, var, LLVMConstReal(et, eps), ""));
  LLVMValueRef inv = LLVMBuildFDiv(ir->b, LLVMConstReal(et, 1), sd, "inv");
  R->mean = kc_ir_splat(ir, mean, R->lanes);
  R->d1 = kc_ir_splat(ir, d1, R->lanes);
  R->inv = kc_ir_splat(ir, inv, R->lanes);
}

kc_status kc_lower_norm(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  const kc_value *xv = kc_value_of(e->g, n->in[0]);
  kc_ir *ir = e->ir;
  nrm R = {.e = e, .ir = ir, .t = xv->dtype, .rank = xv->rank};
  R.rms = n->op == KC_OP_RMS_NORMALIZATION || n->op == KC_OP_RMS_NORM;
  bool onnx = n->op == KC_OP_LAYER_NORMALIZATION || n->op == KC_OP_RMS_NORMALIZATION;
  double eps = kc_node_float(n, onnx ? "epsilon" : "eps", 1e-5);
  if (!kc_dtype_is_float(R.t) || R.rank == 0)
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED, "input of type %s, rank %d",
                          kc_dtype_name(R.t), R.rank);
  R.ct = R.t == KC_F64 ? KC_F64 : KC_F32;
  R.lanes = kc_rv_lanes(e, R.t);
  int64_t axis = kc_node_int(n, "axis", -1);
  R.axis = (int)(axis < 0 ? axis + R.rank : axis);
  bool has_bias = !R.rms && n->nin > 2 && n->in[2].id;
  R.sm = param_span(e, 1, R.axis);
  R.bm = has_bias ? param_span(e, 2, R.axis) : -1;
  if (R.sm < 0 || (has_bias && R.bm < 0))
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED,
                          "scale or bias broadcasts with a 1 inside the normalized dims");
  e->grain = 0;
  e->ws_bytes = 0;

  kc_emit_kernel_begin(e);
  R.x = kc_emit_in_ptr(e, 0);
  R.scale = kc_emit_in_ptr(e, 1);
  R.bias = has_bias ? kc_emit_in_ptr(e, 2) : NULL;
  R.y = kc_emit_out_ptr(e, 0);
  LLVMValueRef N = kc_emit_numel(e, e->p_dims, false, 0, R.axis, R.rank);
  /* periods: element counts of the trailing dims each parameter spans */
  LLVMValueRef ps = kc_emit_numel(e, e->p_dims, false, 0, R.rank - R.sm, R.rank);
  LLVMValueRef pb = has_bias ? kc_emit_numel(e, e->p_dims, false, 0, R.rank - R.bm, R.rank) : ps;
  LLVMValueRef p = kc_ir_min(ir, ps, pb);
  LLVMValueRef one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);
  /* N / P repetitions; P is never 0 when N is not */
  LLVMValueRef reps = LLVMBuildSDiv(ir->b, N, kc_ir_max(ir, p, one), "");
  kc_loop l;
  LLVMValueRef row = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
  R.base = kc_ir_mul(ir, row, N);
  statistics(&R, N, eps);
  for (uint32_t o = 1; o < n->nout && o < 3; o++) {
    if (!n->out[o].id) continue;
    /* layer norms: result 1 mean, 2 1/std; rms_norm: result 1 1/rms */
    LLVMValueRef st = o == 1 && !R.rms ? R.mean : R.inv;
    LLVMValueRef v = LLVMBuildExtractElement(ir->b, st, kc_ir_i32(ir, 0), "");
    kc_dtype ot = kc_value_of(e->g, n->out[o])->dtype;
    kc_emit_store(e, ot, kc_emit_out_ptr(e, o), row, kc_emit_convert(ir, v, R.ct, ot), 1);
  }
  kc_loop t;
  LLVMValueRef ti = kc_loop_begin(ir, &t, zero, reps, one, 0, NULL);
  LLVMValueRef start = kc_ir_mul(ir, ti, p);
  R.off = kc_ir_add(ir, R.base, start);
  R.soff = LLVMBuildSRem(ir->b, start, kc_ir_max(ir, ps, one), "");
  R.boff = LLVMBuildSRem(ir->b, start, kc_ir_max(ir, pb, one), "");
  kc_rv_for(e, zero, p, R.lanes, 0, NULL, apply_body, &R);
  kc_loop_end(ir, &t, NULL);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_outer(e, 0, 0, R.axis);
  return KC_OK;
}
