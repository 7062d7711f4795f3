/*
 * codegen/cpu/trilu.c - kc_lower_trilu: keep the upper (j - i >= k) or lower (j - i <= k)
 * triangle of the last two dims [N, M], zeroing the rest; leading dims are a batch.
 *
 * Row i of a matrix splits at c = clamp(i + k (+1 for lower), 0, M): upper zeroes [0, c) and
 * copies [c, M), lower copies [0, c) and zeroes [c, M). Zero is all-zero bits in every dtype
 * (+0.0, false), so the fill is a memset-like integer store of the element size. k (an i64
 * scalar input, 0 when absent) is clamped to +-2^40 first so i + k cannot overflow.
 *
 * Work units: output rows (batch * N).
 */
#include "codegen/cpu/index.h"

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int r = kc_value_of(e->g, e->n->out[0])->rank;
  return kc_emit_numel(e, dims, true, 0, 0, r - 1);
}

kc_status kc_lower_trilu(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  bool upper = kc_node_int(e->n, "upper", 1) != 0;
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMTypeRef et = kc_idx_elem_type(ir, x->dtype);
  LLVMValueRef src = kc_emit_in_ptr(e, 0), dst = kc_emit_out_ptr(e, 0);
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1), lim = kc_ir_i64(ir, 1LL << 40);
  LLVMValueRef k = zero;
  if (e->n->nin > 1 && kc_val_ok(e->n->in[1])) {
    k = kc_idx_load_i64(e, kc_value_of(e->g, e->n->in[1])->dtype, kc_emit_in_ptr(e, 1), zero);
    k = kc_ir_max(ir, kc_ir_min(ir, k, lim), kc_ir_sub(ir, zero, lim));
  }
  if (!upper) k = kc_ir_add(ir, k, one);
  LLVMValueRef rows = kc_emit_dim(e, e->p_dims, false, 0, x->rank - 2);
  LLVMValueRef cols = kc_emit_dim(e, e->p_dims, false, 0, x->rank - 1);

  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef i = LLVMBuildURem(ir->b, u, kc_ir_max(ir, rows, one), "");
  LLVMValueRef c = kc_ir_min(ir, kc_ir_max(ir, kc_ir_add(ir, i, k), zero), cols);
  LLVMValueRef row = kc_ir_mul(ir, u, cols), rest = kc_ir_sub(ir, cols, c);
  LLVMValueRef split = kc_ir_add(ir, row, c);
  if (upper) {
    kc_idx_fill_run(ir, dst, row, LLVMConstNull(et), c);
    kc_idx_copy_run(ir, et, dst, split, src, split, one, rest);
  } else {
    kc_idx_copy_run(ir, et, dst, row, src, row, one, c);
    kc_idx_fill_run(ir, dst, split, LLVMConstNull(et), rest);
  }
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
