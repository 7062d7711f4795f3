/*
 * codegen/cpu/xent.c - kc_lower_xent: the fused softmax cross-entropy (softmax_xent) and its
 * backward (softmax_xent_grad), ir/ops.def.
 *
 * A row is logits[i, :] (C contiguous elements); work unit = one row, units = numel(labels).
 * Per row, the label is checked first: a label outside [0, C) that is not ignore_index returns
 * 1 + the row (its position in labels) from the kernel, the index error of emit.h's ABI, before
 * any memory is addressed through it.
 *   - softmax_xent: a vectorized max pass and a vectorized sum of exp(x - max) pass (UNROLL
 *     independent chains, horizontal reductions at the end, as softmax.c's row mode); lse =
 *     max + log(sum) in the compute type; loss = lse - x[label], 0 on an ignored row; lse is
 *     stored when the node has that result.
 *   - softmax_xent_grad: one vectorized pass, dx = (exp(x - lse) - [k == label]) * dloss (the
 *     one-hot by a lane compare, so the label's element is written once); zeros on an ignored
 *     row. The softmax is never stored.
 * Arithmetic in f32 (f64 for f64 logits); f16/bf16 load into f32 and store rounded once.
 * Invariants: each row is reduced in a fixed order whatever the thread split, so results are
 * bitwise the same with any number of threads.
 */
#include "rowvec.h"

#include "codegen/cpu/index.h"

#include <math.h>

#define UNROLL 4

typedef struct xent {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype t; /* logits' dtype */
  unsigned lanes;
  LLVMValueRef x, y, base;      /* logits; dlogits (grad); row offset */
  LLVMValueRef max, lse, dloss; /* splats */
  LLVMValueRef label, iota;     /* grad: the label (i64 splat) and <0, 1, ..., lanes-1> */
} xent;

static LLVMValueRef fast_max(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(ir->b, LLVMBuildFCmp(ir->b, LLVMRealOGT, a, b, ""), a, b, "");
}

static LLVMValueRef load(xent *X, LLVMValueRef k, LLVMValueRef mask, double fill) {
  LLVMValueRef fv = kc_emit_const(X->ir, X->t, fill, X->lanes);
  return kc_rv_load(X->e, X->t, X->x, kc_ir_add(X->ir, X->base, k), X->lanes, mask, fv);
}

static void max_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  xent *X = user;
  acc[0] = fast_max(X->ir, acc[0], load(X, k, mask, -INFINITY));
}

static void sum_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  xent *X = user;
  kc_ir *ir = X->ir;
  /* masked-off lanes load -inf: their exp adds 0 */
  LLVMValueRef ex = kc_rv_exp(ir, LLVMBuildFSub(ir->b, load(X, k, mask, -INFINITY), X->max, ""));
  acc[0] = LLVMBuildFAdd(ir->b, acc[0], ex, "");
}

static void grad_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  (void)acc;
  xent *X = user;
  kc_ir *ir = X->ir;
  LLVMValueRef p = kc_rv_exp(ir, LLVMBuildFSub(ir->b, load(X, k, mask, 0), X->lse, ""));
  LLVMValueRef pos = LLVMBuildAdd(ir->b, kc_ir_splat(ir, k, X->lanes), X->iota, "");
  LLVMValueRef hot = LLVMBuildICmp(ir->b, LLVMIntEQ, pos, X->label, "");
  LLVMValueRef one = kc_emit_const(ir, X->t, 1, X->lanes),
               zero = kc_emit_const(ir, X->t, 0, X->lanes);
  p = LLVMBuildFSub(ir->b, p, LLVMBuildSelect(ir->b, hot, one, zero, ""), "");
  kc_rv_store(X->e, X->t, X->y, kc_ir_add(ir, X->base, k), LLVMBuildFMul(ir->b, p, X->dloss, ""),
              X->lanes, mask);
}

static void zero_body(void *user, LLVMValueRef k, LLVMValueRef mask, LLVMValueRef *acc) {
  (void)acc;
  xent *X = user;
  kc_rv_store(X->e, X->t, X->y, kc_ir_add(X->ir, X->base, k),
              kc_emit_const(X->ir, X->t, 0, X->lanes), X->lanes, mask);
}

/* Sets X->max (splat) and returns lse (scalar, compute type) of the row at X->base. */
static LLVMValueRef row_lse(xent *X, LLVMValueRef C) {
  kc_ir *ir = X->ir;
  LLVMValueRef zero = kc_ir_i64(ir, 0), acc[UNROLL];
  for (unsigned u = 0; u < UNROLL; u++)
    acc[u] = kc_emit_const(ir, X->t, -INFINITY, X->lanes);
  kc_rv_for_unrolled(X->e, zero, C, X->lanes, UNROLL, 1, acc, max_body, X);
  for (unsigned u = 1; u < UNROLL; u++)
    acc[0] = fast_max(ir, acc[0], acc[u]);
  LLVMValueRef m = kc_rv_hmax(ir, acc[0]);
  X->max = kc_ir_splat(ir, m, X->lanes);
  for (unsigned u = 0; u < UNROLL; u++)
    acc[u] = kc_emit_const(ir, X->t, 0, X->lanes);
  kc_rv_for_unrolled(X->e, zero, C, X->lanes, UNROLL, 1, acc, sum_body, X);
  for (unsigned u = 1; u < UNROLL; u++)
    acc[0] = LLVMBuildFAdd(ir->b, acc[0], acc[u], "");
  return LLVMBuildFAdd(ir->b, m, kc_rv_log(ir, kc_rv_hsum(ir, acc[0])), "lse");
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int r = kc_value_of(e->g, e->n->in[0])->rank;
  return kc_emit_numel(e, dims, false, 0, 0, r - 1);
}

kc_status kc_lower_xent(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  const kc_value *xv = kc_value_of(e->g, n->in[0]);
  if (!kc_dtype_is_float(xv->dtype) || xv->rank < 1)
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED, "logits of type %s, rank %d",
                          kc_dtype_name(xv->dtype), xv->rank);
  kc_ir *ir = e->ir;
  bool grad = n->op == KC_OP_SOFTMAX_XENT_GRAD;
  int r = xv->rank;
  xent X = {.e = e, .ir = ir, .t = xv->dtype, .lanes = kc_rv_lanes(e, xv->dtype)};
  kc_dtype ct = X.t == KC_F64 ? KC_F64 : KC_F32;
  int64_t ignore = kc_node_int(n, "ignore_index", -100);
  e->grain = 0;
  e->ws_bytes = 0;
  kc_emit_kernel_begin(e);
  X.x = kc_emit_in_ptr(e, 0);
  LLVMValueRef labels = kc_emit_in_ptr(e, 1);
  LLVMValueRef C = kc_emit_dim(e, e->p_dims, false, 0, r - 1);
  LLVMValueRef one = kc_ir_i64(ir, 1);
  kc_loop l;
  LLVMValueRef row = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
  X.base = kc_ir_mul(ir, row, C);
  /* the label: ignore_index, or in [0, C) (one unsigned compare), else the index error */
  LLVMValueRef label = kc_idx_load_i64(e, KC_I64, labels, row);
  LLVMValueRef ign = LLVMBuildICmp(ir->b, LLVMIntEQ, label, kc_ir_i64(ir, ignore), "ignored");
  LLVMValueRef out = LLVMBuildICmp(ir->b, LLVMIntUGE, label, C, "");
  LLVMValueRef bad = LLVMBuildAnd(ir->b, out, LLVMBuildNot(ir->b, ign, ""), "");
  e->check_in = 1;
  e->check_dim = e->in_dims[0] + r - 1;
  LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "bad_label");
  LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(ir->ctx, ir->fn, "label_ok");
  LLVMBuildCondBr(ir->b, bad, fail, ok);
  LLVMPositionBuilderAtEnd(ir->b, fail);
  LLVMBuildRet(ir->b, LLVMBuildAdd(ir->b, row, one, ""));
  LLVMPositionBuilderAtEnd(ir->b, ok);
  kc_if c;
  if (!grad) {
    LLVMValueRef lse = row_lse(&X, C);
    if (n->nout > 1 && n->out[1].id) {
      kc_dtype st = kc_value_of(e->g, n->out[1])->dtype;
      kc_emit_store(e, st, kc_emit_out_ptr(e, 1), row, kc_emit_convert(ir, lse, ct, st), 1);
    }
    LLVMValueRef y = kc_emit_out_ptr(e, 0);
    kc_if_begin(ir, &c, ign);
    kc_emit_store(e, X.t, y, row, kc_emit_const(ir, X.t, 0, 1), 1);
    kc_if_else(ir, &c);
    LLVMValueRef xl = kc_emit_load(e, X.t, X.x, kc_ir_add(ir, X.base, label), 1);
    kc_emit_store(e, X.t, y, row, LLVMBuildFSub(ir->b, lse, xl, "loss"), 1);
    kc_if_end(ir, &c);
  } else {
    X.y = kc_emit_out_ptr(e, 0);
    LLVMValueRef zero = kc_ir_i64(ir, 0);
    kc_if_begin(ir, &c, ign);
    kc_rv_for(e, zero, C, X.lanes, 0, NULL, zero_body, &X);
    kc_if_else(ir, &c);
    kc_dtype st = kc_value_of(e->g, n->in[2])->dtype;
    LLVMValueRef lse = kc_emit_load(e, st, kc_emit_in_ptr(e, 2), row, 1);
    X.lse = kc_ir_splat(ir, kc_emit_convert(ir, lse, st, ct), X.lanes);
    X.dloss = kc_ir_splat(ir, kc_emit_load(e, X.t, kc_emit_in_ptr(e, 3), row, 1), X.lanes);
    X.label = kc_ir_splat(ir, label, X.lanes);
    LLVMValueRef lanes[64];
    for (unsigned k = 0; k < X.lanes && k < 64; k++)
      lanes[k] = kc_ir_i64(ir, k);
    X.iota = X.lanes == 1 ? lanes[0] : LLVMConstVector(lanes, X.lanes);
    kc_rv_for(e, zero, C, X.lanes, 0, NULL, grad_body, &X);
    kc_if_end(ir, &c);
  }
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  kc_emit_units_custom(e, units);
  return KC_OK;
}
