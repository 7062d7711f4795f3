/*
 * codegen/cpu/quant.c - kc_lower_quant: quantize_linear, dequantize_linear and
 * dynamic_quantize_linear (semantics in ir/ops.def; the CUDA kernels in codegen/cuda/quant.c do
 * the same math).
 *
 * Math in f32, as onnx.reference: quantize computes rint(x / scale) (llvm.roundeven: half to
 * even, independent of the FP environment) + zero point, then clamps in float to the type's
 * range (maxnum/minnum: NaN becomes the low end, never poison) and converts the integral value.
 * Dequantize is (float(x) - float(zero point)) * scale, rounded once to the output dtype.
 * Quantize/dequantize: a work unit per element; x is [outer, L, inner] around the axis and the
 * scale element of (o, l, c) follows kc_quant_mode_of (ir/internal.h): 0, l, or
 * (o * Lb + l / block) * inner + c with Lb the scale's dim along the axis.
 * dynamic_quantize_linear: one unit (its scale needs the whole tensor's min and max first).
 */
#include "codegen/cpu/index.h"

static LLVMValueRef fcall(kc_ir *ir, const char *name, LLVMValueRef a, LLVMValueRef b) {
  LLVMTypeRef t = LLVMTypeOf(a);
  LLVMValueRef args[2] = {a, b};
  return kc_ir_intrinsic(ir, name, &t, 1, args, b ? 2 : 1);
}

/* The range of a quantized integer type. */
static void qrange(kc_dtype t, double *lo, double *hi) {
  switch (t) {
  case KC_I8: *lo = -128, *hi = 127; break;
  case KC_I16: *lo = -32768, *hi = 32767; break;
  case KC_U16: *lo = 0, *hi = 65535; break;
  default: *lo = 0, *hi = 255; break;
  }
}

/* sat(rint(v) + zp) as dtype t (v, zp: f32). */
static LLVMValueRef quantize(kc_ir *ir, LLVMValueRef v, LLVMValueRef zp, kc_dtype t) {
  double lo, hi;
  qrange(t, &lo, &hi);
  LLVMValueRef q = LLVMBuildFAdd(ir->b, fcall(ir, "llvm.roundeven", v, NULL), zp, "");
  q = fcall(ir, "llvm.maxnum", q, kc_emit_const(ir, KC_F32, lo, 1));
  q = fcall(ir, "llvm.minnum", q, kc_emit_const(ir, KC_F32, hi, 1));
  return kc_emit_convert(ir, q, KC_F32, t);
}

static LLVMValueRef units_one(kc_cpu_emit *e, LLVMValueRef dims) {
  (void)dims;
  return kc_ir_i64(e->ir, 1);
}

static kc_status lower_dynamic(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  kc_emit_units_custom(e, units_one);
  kc_emit_kernel_begin(e);
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1);
  LLVMValueRef numel = kc_emit_numel(e, e->p_dims, false, 0, 0, x->rank);
  LLVMValueRef src = kc_emit_in_ptr(e, 0), f0 = kc_emit_const(ir, KC_F32, 0, 1);
  /* min(x, 0) and max(x, 0) */
  LLVMValueRef init[2] = {f0, f0};
  kc_loop l1;
  LLVMValueRef i = kc_loop_begin(ir, &l1, zero, numel, one, 2, init);
  LLVMValueRef v = kc_emit_convert(ir, kc_emit_load(e, x->dtype, src, i, 1), x->dtype, KC_F32);
  LLVMValueRef next[2] = {fcall(ir, "llvm.minnum", l1.carry[0], v),
                          fcall(ir, "llvm.maxnum", l1.carry[1], v)};
  kc_loop_end(ir, &l1, next);
  LLVMValueRef mn = l1.carry[0], mx = l1.carry[1];
  LLVMValueRef same = LLVMBuildFCmp(ir->b, LLVMRealOEQ, mn, mx, "");
  LLVMValueRef range = LLVMBuildSelect(ir->b, same, kc_emit_const(ir, KC_F32, 1, 1),
                                       LLVMBuildFSub(ir->b, mx, mn, ""), "");
  LLVMValueRef scale = LLVMBuildFDiv(ir->b, range, kc_emit_const(ir, KC_F32, 255, 1), "");
  LLVMValueRef zp = LLVMBuildFSub(ir->b, f0, LLVMBuildFDiv(ir->b, mn, scale, ""), "");
  zp =
      fcall(ir, "llvm.minnum", fcall(ir, "llvm.maxnum", zp, f0), kc_emit_const(ir, KC_F32, 255, 1));
  zp = fcall(ir, "llvm.roundeven", zp, NULL);
  if (e->n->nout > 1 && kc_val_ok(e->n->out[1]))
    kc_emit_store(e, x->dtype, kc_emit_out_ptr(e, 1), zero,
                  kc_emit_convert(ir, scale, KC_F32, x->dtype), 1);
  if (e->n->nout > 2 && kc_val_ok(e->n->out[2]))
    kc_emit_store(e, KC_U8, kc_emit_out_ptr(e, 2), zero, kc_emit_convert(ir, zp, KC_F32, KC_U8), 1);
  LLVMValueRef dst = kc_emit_out_ptr(e, 0);
  kc_loop l2;
  i = kc_loop_begin(ir, &l2, zero, numel, one, 0, NULL);
  v = kc_emit_convert(ir, kc_emit_load(e, x->dtype, src, i, 1), x->dtype, KC_F32);
  kc_emit_store(e, KC_U8, dst, i, quantize(ir, LLVMBuildFDiv(ir->b, v, scale, ""), zp, KC_U8), 1);
  kc_loop_end(ir, &l2, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}

kc_status kc_lower_quant(kc_cpu_emit *e) {
  if (e->n->op == KC_OP_DYNAMIC_QUANTIZE_LINEAR) return lower_dynamic(e);
  kc_ir *ir = e->ir;
  bool deq = e->n->op == KC_OP_DEQUANTIZE_LINEAR;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]), *y = kc_value_of(e->g, e->n->out[0]);
  kc_dtype st = kc_value_of(e->g, e->n->in[1])->dtype;
  bool has_zp = e->n->nin > 2 && kc_val_ok(e->n->in[2]);
  kc_dtype zt = has_zp ? kc_value_of(e->g, e->n->in[2])->dtype : KC_U8;
  int axis, r = x->rank;
  kc_quant_mode mode = kc_quant_mode_of(e->g, e->n, &axis);
  if (mode == KC_QUANT_TENSOR) axis = r > 0 ? r - 1 : 0;
  kc_emit_units_outer(e, 0, 0, r);
  kc_emit_kernel_begin(e);
  LLVMValueRef one = kc_ir_i64(ir, 1);
  LLVMValueRef src = kc_emit_in_ptr(e, 0), sp = kc_emit_in_ptr(e, 1), dst = kc_emit_out_ptr(e, 0);
  LLVMValueRef zpp = has_zp ? kc_emit_in_ptr(e, 2) : NULL;
  LLVMValueRef len = r > 0 ? kc_emit_dim(e, e->p_dims, false, 0, axis) : one;
  LLVMValueRef inner = kc_emit_numel(e, e->p_dims, false, 0, axis + 1, r);
  LLVMValueRef block =
      kc_ir_i64(ir, mode == KC_QUANT_BLOCKED ? kc_node_int(e->n, "block_size", 1) : 1);
  LLVMValueRef slen = mode == KC_QUANT_BLOCKED ? kc_emit_dim(e, e->p_dims, false, 1, axis) : one;
  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef si = kc_ir_i64(ir, 0);
  if (mode != KC_QUANT_TENSOR) {
    /* units exist only when len and inner are > 0 */
    LLVMValueRef q = LLVMBuildUDiv(ir->b, u, inner, "");
    LLVMValueRef l = LLVMBuildURem(ir->b, q, len, "");
    si = l;
    if (mode == KC_QUANT_BLOCKED) {
      LLVMValueRef o = LLVMBuildUDiv(ir->b, q, len, ""), c = LLVMBuildURem(ir->b, u, inner, "");
      LLVMValueRef row = kc_ir_add(ir, kc_ir_mul(ir, o, slen), LLVMBuildUDiv(ir->b, l, block, ""));
      si = kc_ir_add(ir, kc_ir_mul(ir, row, inner), c);
    }
  }
  LLVMValueRef s = kc_emit_convert(ir, kc_emit_load(e, st, sp, si, 1), st, KC_F32);
  LLVMValueRef zf = kc_emit_const(ir, KC_F32, 0, 1);
  if (has_zp) zf = kc_emit_convert(ir, kc_emit_load(e, zt, zpp, si, 1), zt, KC_F32);
  LLVMValueRef xv = kc_emit_convert(ir, kc_emit_load(e, x->dtype, src, u, 1), x->dtype, KC_F32);
  if (deq) {
    LLVMValueRef v = LLVMBuildFMul(ir->b, LLVMBuildFSub(ir->b, xv, zf, ""), s, "");
    kc_emit_store(e, y->dtype, dst, u, kc_emit_convert(ir, v, KC_F32, y->dtype), 1);
  } else {
    kc_emit_store(e, y->dtype, dst, u, quantize(ir, LLVMBuildFDiv(ir->b, xv, s, ""), zf, y->dtype),
                  1);
  }
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}
