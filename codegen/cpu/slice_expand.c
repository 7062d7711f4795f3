/*
 * codegen/cpu/slice_expand.c - kc_lower_slice and kc_lower_expand, both one index map
 * (index.h) over the output: slice scales the input's strides by the steps and starts at the
 * clamped starts; expand gives broadcast axes (absent or of size 1 in the input) stride 0.
 *
 * Slice's starts/axes/steps are tensors whose values are in general only known at run time:
 * the kernel reads them, normalizes negative axes and starts, and clamps starts as ONNX does
 * (to [0, d] for positive steps, [0, d-1] for negative ones). Ends are not read: the output's
 * concrete dims already give the element count along every axis (shape inference applied the
 * same clamping). The number of entries must be static (it always is for exported models).
 * Entries are matched to axes by selects, since an axis value is data.
 *
 * Work units: those of kc_idx_map_copy over the output.
 */
#include "codegen/cpu/index.h"

/* ---- slice ---------------------------------------------------------------------------------- */

static LLVMValueRef map_units(kc_cpu_emit *e, LLVMValueRef dims) {
  LLVMValueRef ext[KC_MAX_RANK];
  int r = kc_idx_dims(e, dims, true, 0, ext);
  return kc_idx_map_units(e->ir, r, ext);
}

/* Entry i's axis (normalized), start (as given) and step, read from the buffers. */
static void slice_entry(kc_cpu_emit *e, uint32_t i, int rank, LLVMValueRef *axis,
                        LLVMValueRef *start, LLVMValueRef *step) {
  kc_ir *ir = e->ir;
  const kc_node *n = e->n;
  LLVMValueRef ii = kc_ir_i64(ir, i);
  *start = kc_idx_load_i64(e, kc_value_of(e->g, n->in[1])->dtype, kc_emit_in_ptr(e, 1), ii);
  *axis = ii;
  *step = kc_ir_i64(ir, 1);
  if (n->nin > 3 && kc_val_ok(n->in[3])) {
    LLVMValueRef a =
        kc_idx_load_i64(e, kc_value_of(e->g, n->in[3])->dtype, kc_emit_in_ptr(e, 3), ii);
    LLVMValueRef neg = kc_ir_lt(ir, a, kc_ir_i64(ir, 0));
    *axis = LLVMBuildSelect(ir->b, neg, kc_ir_add(ir, a, kc_ir_i64(ir, rank)), a, "");
  }
  if (n->nin > 4 && kc_val_ok(n->in[4]))
    *step = kc_idx_load_i64(e, kc_value_of(e->g, n->in[4])->dtype, kc_emit_in_ptr(e, 4), ii);
}

/* Start s on a dim of size d, normalized and clamped per the step's sign. */
static LLVMValueRef clamp_start(kc_ir *ir, LLVMValueRef s, LLVMValueRef d, LLVMValueRef step) {
  LLVMValueRef zero = kc_ir_i64(ir, 0);
  s = LLVMBuildSelect(ir->b, kc_ir_lt(ir, s, zero), LLVMBuildAdd(ir->b, s, d, ""), s, "");
  LLVMValueRef hi =
      LLVMBuildSelect(ir->b, kc_ir_lt(ir, zero, step), d, kc_ir_sub(ir, d, kc_ir_i64(ir, 1)), "");
  return kc_ir_min(ir, kc_ir_max(ir, s, zero), hi);
}

kc_status kc_lower_slice(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]), *st = kc_value_of(e->g, e->n->in[1]);
  if (st->rank != 1 || KC_DIM_IS_SYM(st->dims[0]))
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED,
                          "slice with a run-time number of starts");
  uint32_t nent = (uint32_t)st->dims[0];
  kc_emit_units_custom(e, map_units);
  kc_emit_kernel_begin(e);
  LLVMValueRef in_ext[KC_MAX_RANK], in_str[KC_MAX_RANK], start[KC_MAX_RANK], step[KC_MAX_RANK];
  int r = kc_idx_dims(e, e->p_dims, false, 0, in_ext);
  kc_idx_strides(ir, r, in_ext, in_str);
  for (int k = 0; k < r; k++) {
    start[k] = kc_ir_i64(ir, 0);
    step[k] = kc_ir_i64(ir, 1);
  }
  for (uint32_t i = 0; i < nent && x->rank > 0; i++) {
    LLVMValueRef ax, s, sp;
    slice_entry(e, i, x->rank, &ax, &s, &sp);
    for (int k = 0; k < r; k++) {
      LLVMValueRef hit = LLVMBuildICmp(ir->b, LLVMIntEQ, ax, kc_ir_i64(ir, k), "");
      start[k] = LLVMBuildSelect(ir->b, hit, clamp_start(ir, s, in_ext[k], sp), start[k], "");
      step[k] = LLVMBuildSelect(ir->b, hit, sp, step[k], "");
    }
  }
  kc_idx_map m = {.rank = r, .base = kc_ir_i64(ir, 0)};
  kc_idx_dims(e, e->p_dims, true, 0, m.dim);
  for (int k = 0; k < r; k++) {
    m.stride[k] = kc_ir_mul(ir, in_str[k], step[k]);
    m.base = kc_ir_add(ir, m.base, kc_ir_mul(ir, start[k], in_str[k]));
  }
  LLVMTypeRef et = kc_idx_elem_type(ir, x->dtype);
  kc_idx_map_copy(e, et, kc_emit_in_ptr(e, 0), kc_emit_out_ptr(e, 0), &m);
  kc_emit_kernel_end(e);
  return KC_OK;
}

/* ---- expand --------------------------------------------------------------------------------- */

kc_status kc_lower_expand(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  kc_emit_units_custom(e, map_units);
  kc_emit_kernel_begin(e);
  kc_idx_map m = {.base = kc_ir_i64(ir, 0)};
  m.rank = kc_idx_dims(e, e->p_dims, true, 0, m.dim);
  LLVMValueRef in_ext[KC_MAX_RANK], in_str[KC_MAX_RANK];
  int r = kc_idx_dims(e, e->p_dims, false, 0, in_ext);
  kc_idx_strides(ir, r, in_ext, in_str);
  int lead = m.rank - x->rank; /* output axes the input does not have */
  for (int k = 0; k < m.rank; k++) {
    int j = k - lead;
    if (j < 0 || x->rank == 0 || x->dims[j] == 1) {
      m.stride[k] = kc_ir_i64(ir, 0);
    } else if (!KC_DIM_IS_SYM(x->dims[j])) {
      m.stride[k] = in_str[j];
    } else {
      LLVMValueRef bcast = LLVMBuildICmp(ir->b, LLVMIntEQ, in_ext[j], kc_ir_i64(ir, 1), "");
      m.stride[k] = LLVMBuildSelect(ir->b, bcast, kc_ir_i64(ir, 0), in_str[j], "");
    }
  }
  LLVMTypeRef et = kc_idx_elem_type(ir, x->dtype);
  kc_idx_map_copy(e, et, kc_emit_in_ptr(e, 0), kc_emit_out_ptr(e, 0), &m);
  kc_emit_kernel_end(e);
  return KC_OK;
}
