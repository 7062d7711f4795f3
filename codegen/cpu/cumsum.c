/*
 * codegen/cpu/cumsum.c - kc_lower_cumsum: running sums (cumsum, ONNX CumSum) or products
 * (cumprod, ONNX CumProd) along one axis, inclusive or exclusive (element k combines those
 * before it; an exclusive product starts from 1), forwards or reversed (from the end).
 *
 * x is viewed as [outer, L, inner] around the axis; a line is one (outer index, inner index),
 * summed in order in its compute type: integers wrap, f16/bf16 sum in f32 and round each stored
 * element (the CUDA kernel does the same).
 * Work units: with the axis known when compiling (kc_cumsum_axis; exporters write a constant)
 * one line each, units = outer * inner. An axis read from its tensor at run time (ONNX's node
 * tests pass it as a graph input) is normalized and clamped into [0, rank), the check being the
 * shape function's where the value is known, and then one unit runs every line, since the units
 * function sees only dims.
 */
#include "codegen/cpu/index.h"

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int axis, r = kc_value_of(e->g, e->n->in[0])->rank;
  if (!kc_cumsum_axis(e->g, e->n, &axis)) return kc_ir_i64(e->ir, 1);
  return kc_ir_mul(e->ir, kc_emit_numel(e, dims, false, 0, 0, axis),
                   kc_emit_numel(e, dims, false, 0, axis + 1, r));
}

/* L and inner around an axis known only at run time (a, already in [0, r)). */
static void around(kc_cpu_emit *e, int r, LLVMValueRef a, LLVMValueRef *len, LLVMValueRef *inner) {
  kc_ir *ir = e->ir;
  LLVMValueRef one = kc_ir_i64(ir, 1);
  *len = one;
  *inner = one;
  for (int k = 0; k < r; k++) {
    LLVMValueRef d = kc_emit_dim(e, e->p_dims, false, 0, k), kk = kc_ir_i64(ir, k);
    *len = LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, kk, a, ""), d, *len, "");
    *inner = kc_ir_mul(ir, *inner, LLVMBuildSelect(ir->b, kc_ir_lt(ir, a, kk), d, one, ""));
  }
}

kc_status kc_lower_cumsum(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  kc_dtype t = x->dtype;
  int r = x->rank, axis;
  bool known = kc_cumsum_axis(e->g, e->n, &axis);
  bool excl = kc_node_int(e->n, "exclusive", 0) != 0, rev = kc_node_int(e->n, "reverse", 0) != 0;
  bool fl = kc_dtype_is_float(t), prod = e->n->op == KC_OP_CUMPROD;
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMValueRef one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);
  LLVMValueRef len, inner, first = e->p_begin, last = e->p_end;
  if (known) {
    len = kc_emit_dim(e, e->p_dims, false, 0, axis);
    inner = kc_emit_numel(e, e->p_dims, false, 0, axis + 1, r);
  } else {
    kc_dtype at = kc_value_of(e->g, e->n->in[1])->dtype;
    LLVMValueRef a = kc_idx_load_i64(e, at, kc_emit_in_ptr(e, 1), zero), rk = kc_ir_i64(ir, r);
    a = LLVMBuildSelect(ir->b, kc_ir_lt(ir, a, zero), kc_ir_add(ir, a, rk), a, "");
    a = kc_ir_min(ir, kc_ir_max(ir, a, zero), kc_ir_i64(ir, r - 1));
    around(e, r, a, &len, &inner);
    /* the one unit runs every line: numel / L of them (none when L or inner is 0) */
    LLVMValueRef numel = kc_emit_numel(e, e->p_dims, false, 0, 0, r);
    LLVMValueRef lines =
        LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, len, zero, ""), zero,
                        LLVMBuildUDiv(ir->b, numel, kc_ir_max(ir, len, one), ""), "");
    first = zero;
    last = LLVMBuildSelect(ir->b, kc_ir_lt(ir, e->p_begin, e->p_end), lines, zero, "");
  }
  LLVMValueRef src = kc_emit_in_ptr(e, 0), dst = kc_emit_out_ptr(e, 0);
  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, first, last, one, 0, NULL);
  /* lines exist only when inner > 0, so the division is defined */
  LLVMValueRef o = LLVMBuildUDiv(ir->b, u, inner, ""), c = LLVMBuildURem(ir->b, u, inner, "");
  LLVMValueRef base = kc_ir_add(ir, kc_ir_mul(ir, kc_ir_mul(ir, o, len), inner), c);
  LLVMValueRef acc0 = kc_emit_const(ir, t, prod ? 1 : 0, 1);
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, zero, len, one, 1, &acc0);
  LLVMValueRef k = rev ? kc_ir_sub(ir, kc_ir_sub(ir, len, one), j) : j;
  LLVMValueRef idx = kc_ir_add(ir, base, kc_ir_mul(ir, k, inner));
  LLVMValueRef v = kc_emit_load(e, t, src, idx, 1), acc = lj.carry[0];
  LLVMValueRef next =
      prod ? (fl ? LLVMBuildFMul(ir->b, acc, v, "") : LLVMBuildMul(ir->b, acc, v, ""))
           : (fl ? LLVMBuildFAdd(ir->b, acc, v, "") : LLVMBuildAdd(ir->b, acc, v, ""));
  kc_emit_store(e, t, dst, idx, excl ? acc : next, 1);
  kc_loop_end(ir, &lj, &next);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
