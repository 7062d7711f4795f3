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
 * dynamic_quantize_linear: one unit (its scale needs the whole tensor's min and max first),
 * 16-wide vectors.
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

/* x[i .. i + lanes) as f32 (a vector when lanes > 1). */
static LLVMValueRef dyn_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef src, LLVMValueRef i,
                             unsigned lanes) {
  return kc_emit_convert(e->ir, kc_emit_load(e, t, src, i, lanes), t, KC_F32);
}

static LLVMValueRef splat_if(kc_ir *ir, LLVMValueRef v, unsigned lanes) {
  return lanes > 1 ? kc_ir_splat(ir, v, lanes) : v;
}

/* Loops [0, numel) by DYN_W-wide vectors, then the rest one element at a time; body gets the
 * index and the width and updates carry (ncarry f32 values, reduced from vectors by `reduce`,
 * NULL: none). */
enum { DYN_W = 16 };
typedef void (*dyn_body)(kc_cpu_emit *e, void *ctx, LLVMValueRef i, unsigned lanes,
                         LLVMValueRef *carry);

static void dyn_loops(kc_cpu_emit *e, LLVMValueRef numel, dyn_body body, void *ctx, unsigned ncarry,
                      LLVMValueRef *carry, const char *const *reduce) {
  kc_ir *ir = e->ir;
  LLVMValueRef nvec =
      kc_ir_mul(ir, LLVMBuildUDiv(ir->b, numel, kc_ir_i64(ir, DYN_W), ""), kc_ir_i64(ir, DYN_W));
  LLVMValueRef vinit[2];
  for (unsigned k = 0; k < ncarry; k++)
    vinit[k] = kc_ir_splat(ir, carry[k], DYN_W);
  kc_loop lv, ls;
  LLVMValueRef i =
      kc_loop_begin(ir, &lv, kc_ir_i64(ir, 0), nvec, kc_ir_i64(ir, DYN_W), ncarry, vinit);
  LLVMValueRef next[2];
  for (unsigned k = 0; k < ncarry; k++)
    next[k] = lv.carry[k];
  body(e, ctx, i, DYN_W, next);
  kc_loop_end(ir, &lv, next);
  for (unsigned k = 0; k < ncarry; k++) {
    LLVMTypeRef vt = LLVMTypeOf(lv.carry[k]);
    LLVMValueRef v = lv.carry[k];
    carry[k] = kc_ir_intrinsic(ir, reduce[k], &vt, 1, &v, 1);
  }
  i = kc_loop_begin(ir, &ls, nvec, numel, kc_ir_i64(ir, 1), ncarry, carry);
  for (unsigned k = 0; k < ncarry; k++)
    next[k] = ls.carry[k];
  body(e, ctx, i, 1, next);
  kc_loop_end(ir, &ls, next);
  for (unsigned k = 0; k < ncarry; k++)
    carry[k] = ls.carry[k];
}

typedef struct dyn_ctx {
  kc_dtype t;
  LLVMValueRef src, dst, scale, zp;
} dyn_ctx;

/* min(x, 0) and max(x, 0) (minnum/maxnum: NaNs are skipped, in any order, so the vector lanes
 * and their reduction give what one scalar chain gives) */
static void dyn_minmax(kc_cpu_emit *e, void *ctx, LLVMValueRef i, unsigned lanes,
                       LLVMValueRef *carry) {
  const dyn_ctx *c = ctx;
  LLVMValueRef v = dyn_load(e, c->t, c->src, i, lanes);
  carry[0] = fcall(e->ir, "llvm.minnum", carry[0], v);
  carry[1] = fcall(e->ir, "llvm.maxnum", carry[1], v);
}

static void dyn_quantize(kc_cpu_emit *e, void *ctx, LLVMValueRef i, unsigned lanes,
                         LLVMValueRef *carry) {
  (void)carry;
  const dyn_ctx *c = ctx;
  kc_ir *ir = e->ir;
  LLVMValueRef v =
      LLVMBuildFDiv(ir->b, dyn_load(e, c->t, c->src, i, lanes), splat_if(ir, c->scale, lanes), "");
  LLVMValueRef q =
      LLVMBuildFAdd(ir->b, fcall(ir, "llvm.roundeven", v, NULL), splat_if(ir, c->zp, lanes), "");
  q = fcall(ir, "llvm.maxnum", q, kc_emit_const(ir, KC_F32, 0, lanes));
  q = fcall(ir, "llvm.minnum", q, kc_emit_const(ir, KC_F32, 255, lanes));
  kc_emit_store(e, KC_U8, c->dst, i, kc_emit_convert(ir, q, KC_F32, KC_U8), lanes);
}

/* One unit (the scale needs the whole tensor's min and max first), both passes over x in
 * 16-wide vectors: the scalar min/max chain ran at about 3 ns an element, as long as the int8
 * matmul that reads the result. */
static kc_status lower_dynamic(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  kc_emit_units_custom(e, units_one);
  kc_emit_kernel_begin(e);
  LLVMValueRef zero = kc_ir_i64(ir, 0);
  LLVMValueRef numel = kc_emit_numel(e, e->p_dims, false, 0, 0, x->rank);
  LLVMValueRef f0 = kc_emit_const(ir, KC_F32, 0, 1);
  dyn_ctx c = {.t = x->dtype, .src = kc_emit_in_ptr(e, 0), .dst = kc_emit_out_ptr(e, 0)};
  LLVMValueRef mm[2] = {f0, f0};
  static const char *const reduce[2] = {"llvm.vector.reduce.fmin", "llvm.vector.reduce.fmax"};
  dyn_loops(e, numel, dyn_minmax, &c, 2, mm, reduce);
  LLVMValueRef mn = mm[0], mx = mm[1];
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
  c.scale = scale;
  c.zp = zp;
  dyn_loops(e, numel, dyn_quantize, &c, 0, NULL, NULL);
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
