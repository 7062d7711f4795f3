/*
 * codegen/cpu/shape_ops.c - kc_lower_shape, kc_lower_constant_of_shape and kc_lower_range:
 * ops that generate data from shapes or scalars rather than move it.
 *
 *   shape              out[j] = dims of the input [start, end) (clamped as the shape function
 *                      does), from the kernel's dims argument or baked when static; 1 unit.
 *   constant_of_shape  fills the output with the `value` tensor's one element (f32 0 when
 *                      absent), moved as its bits; the shape input is not read, the output's
 *                      concrete dims already are that shape.
 *   range              out[j] = start + j * delta in the output's compute type (f32 for
 *                      f16/bf16, rounded on store), as the ONNX definition writes it rather
 *                      than by accumulation, so every element is independent; the count is
 *                      the output's concrete dim.
 *
 * Work units of the generators: chunks of KC_IDX_CHUNK output elements.
 */
#include "codegen/cpu/index.h"

#include <string.h>

/* ---- shape ---------------------------------------------------------------------------------- */

kc_status kc_lower_shape(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  int64_t r = kc_value_of(e->g, e->n->in[0])->rank;
  int64_t start = kc_node_int(e->n, "start", 0), end = kc_node_int(e->n, "end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = start < 0 ? 0 : start > r ? r : start;
  end = end < 0 ? 0 : end > r ? r : end;
  kc_emit_units_outer(e, 0, 0, 0);
  kc_emit_kernel_begin(e);
  kc_if c;
  kc_if_begin(ir, &c, kc_ir_lt(ir, e->p_begin, e->p_end));
  LLVMValueRef out = kc_emit_out_ptr(e, 0);
  for (int64_t a = start; a < end; a++)
    kc_ir_store(ir, kc_emit_dim(e, e->p_dims, false, 0, (int)a),
                kc_ir_gepi64(ir, out, kc_ir_i64(ir, a - start)), 8);
  kc_if_end(ir, &c);
  kc_emit_kernel_end(e);
  return KC_OK;
}

/* ---- generators ------------------------------------------------------------------------------ */

static LLVMValueRef chunk_units(kc_cpu_emit *e, LLVMValueRef dims) {
  LLVMValueRef ext[KC_MAX_RANK];
  int r = kc_idx_dims(e, dims, true, 0, ext);
  return kc_ir_cdiv(e->ir, kc_idx_prod(e->ir, r, ext), kc_ir_i64(e->ir, KC_IDX_CHUNK));
}

/* Loop over the kernel's chunks; *lo, *count: the chunk's first element and its size. */
static void chunks_begin(kc_cpu_emit *e, kc_loop *l, LLVMValueRef *lo, LLVMValueRef *count) {
  kc_ir *ir = e->ir;
  LLVMValueRef ext[KC_MAX_RANK], chunk = kc_ir_i64(ir, KC_IDX_CHUNK);
  int r = kc_idx_dims(e, e->p_dims, true, 0, ext);
  LLVMValueRef numel = kc_idx_prod(ir, r, ext);
  LLVMValueRef u = kc_loop_begin(ir, l, e->p_begin, e->p_end, kc_ir_i64(ir, 1), 0, NULL);
  *lo = kc_ir_mul(ir, u, chunk);
  *count = kc_ir_min(ir, chunk, kc_ir_sub(ir, numel, *lo));
}

kc_status kc_lower_constant_of_shape(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_attr *a = kc_node_attr(e->n, "value");
  kc_dtype t = kc_value_of(e->g, e->n->out[0])->dtype;
  uint64_t bits = 0; /* f32 0 by default: all-zero bits */
  if (a) {
    const kc_tensor *v = &e->g->tensors[a->u.tensor];
    if (!v->data || v->nbytes != kc_dtype_size(t))
      return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED,
                            "attribute 'value' has no data of one %s element", kc_dtype_name(t));
    /* the element's bytes as an integer of its size (little-endian host, as the JIT) */
    memcpy(&bits, v->data, v->nbytes);
  }
  kc_emit_units_custom(e, chunk_units);
  kc_emit_kernel_begin(e);
  LLVMTypeRef et = kc_idx_elem_type(ir, t);
  LLVMValueRef out = kc_emit_out_ptr(e, 0), lo, count;
  kc_loop l;
  chunks_begin(e, &l, &lo, &count);
  kc_idx_fill_run(ir, out, lo, LLVMConstInt(et, bits, 0), count);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}

kc_status kc_lower_range(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  kc_dtype t = kc_value_of(e->g, e->n->out[0])->dtype;
  if (t == KC_BOOL)
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED, "range of bool");
  kc_emit_units_custom(e, chunk_units);
  kc_emit_kernel_begin(e);
  LLVMValueRef zero = kc_ir_i64(ir, 0), out = kc_emit_out_ptr(e, 0);
  LLVMValueRef start = kc_emit_load(e, t, kc_emit_in_ptr(e, 0), zero, 1);
  LLVMValueRef delta = kc_emit_load(e, t, kc_emit_in_ptr(e, 2), zero, 1);
  bool fp = kc_dtype_is_float(t);
  LLVMValueRef lo, count;
  kc_loop lu;
  chunks_begin(e, &lu, &lo, &count);
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, lo, kc_ir_add(ir, lo, count), kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef jt = kc_emit_convert(ir, j, KC_I64, t);
  LLVMValueRef v = fp ? LLVMBuildFAdd(ir->b, start, LLVMBuildFMul(ir->b, jt, delta, ""), "")
                      : LLVMBuildAdd(ir->b, start, LLVMBuildMul(ir->b, jt, delta, ""), "");
  kc_emit_store(e, t, out, j, v, 1);
  kc_loop_end(ir, &lj, NULL);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
