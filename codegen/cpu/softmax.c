/*
 * codegen/cpu/softmax.c - kc_lower_softmax: softmax and log_softmax over one axis.
 *
 * The input is viewed as [outer, L, inner] around the axis. Work unit: one (outer index,
 * chunk of one vector of inner positions); units = outer * ceil(inner / lanes), so with
 * inner == 1 a unit is a row. Two kernel shapes, chosen at run time (folded when static):
 *   - inner == 1: the row is contiguous; vectors run along it (masked tail) and the maximum
 *     and sum are horizontal reductions;
 *   - inner > 1: vectors span inner positions (masked to the chunk) and loop over L with
 *     stride inner, so every lane is its own softmax.
 * Three passes per row: max; sum of exp(x - max) (softmax stores the exps when the output
 * computes in its own type, and scales them in the third pass; otherwise it recomputes them so
 * f16/bf16 outputs are rounded once); log_softmax writes x - max - log(sum).
 * A row of all -inf gives nan, as ONNX's reference does (-inf - -inf).
 */
#include "rowvec.h"

#include <math.h>

/* Independent accumulators of a row pass (the fadd/max latency would bound a single one). */
#define UNROLL 4

typedef struct sm {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype t;
  bool log, reuse; /* log_softmax; pass 2 stores exps that pass 3 rescales */
  unsigned lanes;
  LLVMValueRef x, y, base, stride; /* element k of the row is at base + k * stride */
  LLVMValueRef max, sum;           /* splat, for the later passes */
  LLVMValueRef fixed_mask;         /* column mode: the chunk's lanes */
} sm;

/* Maximum as vmaxps does it: a nan input still poisons the sum, so the result is nan anyway. */
static LLVMValueRef fast_max(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(ir->b, LLVMBuildFCmp(ir->b, LLVMRealOGT, a, b, ""), a, b, "");
}

static LLVMValueRef idx_of(sm *S, LLVMValueRef k) {
  return kc_ir_add(S->ir, S->base, kc_ir_mul(S->ir, k, S->stride));
}

static LLVMValueRef mask_of(sm *S, LLVMValueRef mask) { return mask ? mask : S->fixed_mask; }

static LLVMValueRef load(sm *S, LLVMValueRef k, LLVMValueRef mask, double fill) {
  LLVMValueRef fv = kc_emit_const(S->ir, S->t, fill, S->lanes);
  return kc_rv_load(S->e, S->t, S->x, idx_of(S, k), S->lanes, mask_of(S, mask), fv);
}

static void max_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  sm *S = user;
  acc[0] = fast_max(S->ir, acc[0], load(S, k, mask, -INFINITY));
}

static void sum_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  sm *S = user;
  kc_ir *ir = S->ir;
  /* masked-off lanes load -inf so their exp adds 0 */
  LLVMValueRef ex = kc_rv_exp(ir, LLVMBuildFSub(ir->b, load(S, k, mask, -INFINITY), S->max, ""));
  if (S->reuse) kc_rv_store(S->e, S->t, S->y, idx_of(S, k), ex, S->lanes, mask_of(S, mask));
  acc[0] = LLVMBuildFAdd(ir->b, acc[0], ex, "");
}

static void out_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  sm *S = user;
  kc_ir *ir = S->ir;
  LLVMValueRef v;
  if (S->log) {
    v = LLVMBuildFSub(ir->b, LLVMBuildFSub(ir->b, load(S, k, mask, 0), S->max, ""), S->sum, "");
  } else {
    LLVMValueRef ex =
        S->reuse ? kc_rv_load(S->e, S->t, S->y, idx_of(S, k), S->lanes, mask_of(S, mask), NULL)
                 : kc_rv_exp(ir, LLVMBuildFSub(ir->b, load(S, k, mask, 0), S->max, ""));
    v = LLVMBuildFMul(ir->b, ex, S->sum, "");
  }
  kc_rv_store(S->e, S->t, S->y, idx_of(S, k), v, S->lanes, mask_of(S, mask));
}

/*
 * The three passes over k in [0, len). Row mode steps by vectors and reduces horizontally at
 * the end of a pass; column mode steps one position at a time (the vector spans the chunk).
 */
static void passes(sm *S, LLVMValueRef len, bool row) {
  kc_ir *ir = S->ir;
  LLVMValueRef zero = kc_ir_i64(ir, 0);
  LLVMValueRef acc = kc_emit_const(ir, S->t, -INFINITY, S->lanes);
  if (row) {
    LLVMValueRef accs[UNROLL];
    for (unsigned u = 0; u < UNROLL; u++)
      accs[u] = acc;
    kc_rv_for_unrolled(S->e, zero, len, S->lanes, UNROLL, 1, accs, max_body, S);
    for (unsigned u = 1; u < UNROLL; u++)
      accs[0] = fast_max(ir, accs[0], accs[u]);
    acc = kc_ir_splat(ir, kc_rv_hmax(ir, accs[0]), S->lanes);
  } else {
    kc_loop l;
    LLVMValueRef k = kc_loop_begin(ir, &l, zero, len, kc_ir_i64(ir, 1), 1, &acc);
    LLVMValueRef cur = l.carry[0];
    max_body(S, k, NULL, &cur);
    kc_loop_end(ir, &l, &cur);
    acc = l.carry[0];
  }
  S->max = acc;
  acc = kc_emit_const(ir, S->t, 0, S->lanes);
  if (row) {
    LLVMValueRef accs[UNROLL];
    for (unsigned u = 0; u < UNROLL; u++)
      accs[u] = acc;
    kc_rv_for_unrolled(S->e, zero, len, S->lanes, UNROLL, 1, accs, sum_body, S);
    for (unsigned u = 1; u < UNROLL; u++)
      accs[0] = LLVMBuildFAdd(ir->b, accs[0], accs[u], "");
    acc = kc_ir_splat(ir, kc_rv_hsum(ir, accs[0]), S->lanes);
  } else {
    kc_loop l;
    LLVMValueRef k = kc_loop_begin(ir, &l, zero, len, kc_ir_i64(ir, 1), 1, &acc);
    LLVMValueRef cur = l.carry[0];
    sum_body(S, k, NULL, &cur);
    kc_loop_end(ir, &l, &cur);
    acc = l.carry[0];
  }
  S->sum = S->log ? kc_rv_log(ir, acc)
                  : LLVMBuildFDiv(ir->b, kc_emit_const(ir, S->t, 1, S->lanes), acc, "rcp");
  if (row) {
    kc_rv_for(S->e, zero, len, S->lanes, 0, NULL, out_body, S);
  } else {
    kc_loop l;
    LLVMValueRef k = kc_loop_begin(ir, &l, zero, len, kc_ir_i64(ir, 1), 0, NULL);
    out_body(S, k, NULL, NULL);
    kc_loop_end(ir, &l, NULL);
  }
}

/* outer, L, inner of the input (from the kernel's or the units function's dims). */
static void view(kc_cpu_emit *e, LLVMValueRef dims, LLVMValueRef *outer, LLVMValueRef *len,
                 LLVMValueRef *inner, int axis, int rank) {
  *outer = kc_emit_numel(e, dims, false, 0, 0, axis);
  *len = kc_emit_dim(e, dims, false, 0, axis);
  *inner = kc_emit_numel(e, dims, false, 0, axis + 1, rank);
}

static int axis_of(const kc_cpu_emit *e) {
  int rank = kc_value_of(e->g, e->n->in[0])->rank;
  int64_t axis = kc_node_int(e->n, "axis", -1);
  if (rank == 0) return 0;
  return (int)(axis < 0 ? axis + rank : axis);
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int rank = kc_value_of(e->g, e->n->in[0])->rank;
  if (rank == 0) return kc_ir_i64(e->ir, 1);
  LLVMValueRef outer, len, inner;
  view(e, dims, &outer, &len, &inner, axis_of(e), rank);
  unsigned lanes = kc_rv_lanes(e, kc_value_of(e->g, e->n->in[0])->dtype);
  return kc_ir_mul(e->ir, outer, kc_ir_cdiv(e->ir, inner, kc_ir_i64(e->ir, lanes)));
}

kc_status kc_lower_softmax(kc_cpu_emit *e) {
  const kc_value *xv = kc_value_of(e->g, e->n->in[0]);
  if (!kc_dtype_is_float(xv->dtype))
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED, "%s input",
                          kc_dtype_name(xv->dtype));
  kc_ir *ir = e->ir;
  sm S = {.e = e, .ir = ir, .t = xv->dtype, .log = e->n->op == KC_OP_LOG_SOFTMAX};
  S.reuse = S.t == KC_F32 || S.t == KC_F64;
  S.lanes = kc_rv_lanes(e, S.t);
  e->grain = 0;
  e->ws_bytes = 0;
  kc_emit_kernel_begin(e);
  S.x = kc_emit_in_ptr(e, 0);
  S.y = kc_emit_out_ptr(e, 0);
  LLVMValueRef outer, len, inner, one = kc_ir_i64(ir, 1);
  len = inner = one; /* a scalar is a row of one */
  if (xv->rank > 0) view(e, e->p_dims, &outer, &len, &inner, axis_of(e), xv->rank);
  LLVMValueRef nch = kc_ir_cdiv(ir, inner, kc_ir_i64(ir, S.lanes));
  LLVMValueRef rowmode = LLVMBuildICmp(ir->b, LLVMIntEQ, inner, one, "rowmode");
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef o = LLVMBuildSDiv(ir->b, u, nch, "");
  LLVMValueRef c0 = kc_ir_mul(ir, LLVMBuildSRem(ir->b, u, nch, ""), kc_ir_i64(ir, S.lanes));
  kc_if c;
  kc_if_begin(ir, &c, rowmode);
  S.base = kc_ir_mul(ir, o, len);
  S.stride = one;
  S.fixed_mask = NULL;
  passes(&S, len, true);
  kc_if_else(ir, &c);
  S.base = kc_ir_add(ir, kc_ir_mul(ir, kc_ir_mul(ir, o, len), inner), c0);
  S.stride = inner;
  S.fixed_mask = kc_ir_lane_mask(ir, S.lanes, 0, kc_ir_sub(ir, inner, c0));
  passes(&S, len, false);
  kc_if_end(ir, &c);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, units);
  return KC_OK;
}
