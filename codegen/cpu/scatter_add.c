/*
 * codegen/cpu/scatter_add.c - kc_lower_scatter_add: gather's adjoint (ir/ops.def scatter_add).
 * With data viewed as [pre, len, post] and the indices flattened to n entries: out = data, then
 * out[p, idx[j], q] += upd[p, j, q] for j = 0, 1, ... in order.
 *
 * Work units: one per p (the rows before the axis); a unit copies its [len, post] block and
 * adds every index's run of post elements in index order, so each output element's sum has one
 * fixed order and no two units write the same element: results do not depend on the thread
 * count. (With axis 0, an embedding table's gradient, that is one unit: a fixed order first,
 * parallelism over post later.) Indices (i32 or i64) below zero count from the end; one outside
 * [-len, len) makes the kernel return 1 + its position (codegen/cpu/emit.h's index check).
 */
#include "codegen/cpu/index.h"

static int axis_of(const kc_cpu_emit *e) {
  int r = kc_value_of(e->g, e->n->in[0])->rank;
  int64_t axis = kc_node_int(e->n, "axis", 0);
  return (int)(axis < 0 ? axis + r : axis);
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  return kc_emit_numel(e, dims, false, 0, 0, axis_of(e));
}

kc_status kc_lower_scatter_add(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  int axis = axis_of(e), r = kc_value_of(e->g, e->n->in[0])->rank;
  kc_dtype t = kc_value_of(e->g, e->n->in[0])->dtype;
  kc_dtype it = kc_value_of(e->g, e->n->in[1])->dtype;
  if (it != KC_I64 && it != KC_I32)
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED, "%s indices",
                          kc_dtype_name(it));
  if (!kc_dtype_is_float(t))
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED, "scatter_add of %s",
                          kc_dtype_name(t));
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMTypeRef et = kc_idx_elem_type(ir, t);
  LLVMValueRef src = kc_emit_in_ptr(e, 0), ind = kc_emit_in_ptr(e, 1), upd = kc_emit_in_ptr(e, 2);
  LLVMValueRef dst = kc_emit_out_ptr(e, 0), one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);
  LLVMValueRef len = kc_emit_dim(e, e->p_dims, false, 0, axis);
  LLVMValueRef post = kc_emit_numel(e, e->p_dims, false, 0, axis + 1, r);
  LLVMValueRef n = kc_emit_numel(e, e->p_dims, false, 1, 0, kc_value_of(e->g, e->n->in[1])->rank);
  LLVMValueRef block = kc_ir_mul(ir, len, post);

  kc_loop lp;
  LLVMValueRef p = kc_loop_begin(ir, &lp, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef base = kc_ir_mul(ir, p, block);
  kc_idx_copy_run(ir, et, dst, base, src, base, one, block);
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, zero, n, one, 0, NULL);
  LLVMValueRef id = kc_emit_checked_index(e, kc_idx_load_i64(e, it, ind, j), len, j, 1, 0, axis);
  LLVMValueRef doff = kc_ir_add(ir, base, kc_ir_mul(ir, id, post));
  LLVMValueRef uoff = kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, p, n), j), post);
  kc_loop lq;
  LLVMValueRef q = kc_loop_begin(ir, &lq, zero, post, one, 0, NULL);
  LLVMValueRef di = kc_ir_add(ir, doff, q);
  LLVMValueRef a = kc_emit_load(e, t, dst, di, 1);
  LLVMValueRef b = kc_emit_load(e, t, upd, kc_ir_add(ir, uoff, q), 1);
  kc_emit_store(e, t, dst, di, LLVMBuildFAdd(ir->b, a, b, "sa"), 1);
  kc_loop_end(ir, &lq, NULL);
  kc_loop_end(ir, &lj, NULL);
  kc_loop_end(ir, &lp, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
