/*
 * codegen/cpu/scalar_arith.c - the math of the arithmetic elementwise ops: add sub mul div neg
 * abs reciprocal sqrt relu min max clip (kc_scalar_<op>, see emit.h).
 *
 * Each works on compute-typed scalars or vectors alike (LLVM ops are lane-wise) and emits no
 * loops and no memory access, so the elementwise loops, their masked tails and fused regions
 * share it. Integers wrap (two's complement, as ONNX Runtime); signedness comes from the
 * dtype, so unsigned types use unsigned division, comparisons and min/max. Integer division
 * never traps: x / 0 gives 0 and INT_MIN / -1 gives INT_MIN (ONNX leaves both undefined, a
 * kernel must not kill the process). Float min/max propagate nan, as numpy's minimum.
 * A NULL return means the dtype does not fit the op; nothing has been emitted then.
 */
#include "vmath.h"

LLVMValueRef kc_scalar_add(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (kc_dtype_is_float(in)) return LLVMBuildFAdd(ir->b, a[0], a[1], "");
  return kc_dtype_is_int(in) ? LLVMBuildAdd(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_sub(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (kc_dtype_is_float(in)) return LLVMBuildFSub(ir->b, a[0], a[1], "");
  return kc_dtype_is_int(in) ? LLVMBuildSub(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_mul(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (kc_dtype_is_float(in)) return LLVMBuildFMul(ir->b, a[0], a[1], "");
  return kc_dtype_is_int(in) ? LLVMBuildMul(ir->b, a[0], a[1], "") : NULL;
}

LLVMValueRef kc_scalar_div(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (kc_dtype_is_float(in)) return LLVMBuildFDiv(ir->b, a[0], a[1], "");
  if (!kc_dtype_is_int(in)) return NULL;
  LLVMTypeRef t = LLVMTypeOf(a[1]);
  LLVMBuilderRef b = ir->b;
  LLVMValueRef zero = LLVMBuildICmp(b, LLVMIntEQ, a[1], kc_vm_iconst(t, 0), "");
  if (kc_vm_unsigned(in)) {
    LLVMValueRef d = LLVMBuildSelect(b, zero, kc_vm_iconst(t, 1), a[1], "");
    return LLVMBuildSelect(b, zero, kc_vm_iconst(t, 0), LLVMBuildUDiv(b, a[0], d, ""), "");
  }
  /* -1 is the other divisor that traps (INT_MIN / -1); x / -1 is -x, which wraps */
  LLVMValueRef m1 = LLVMBuildICmp(b, LLVMIntEQ, a[1], kc_vm_iconst(t, -1), "");
  LLVMValueRef d = LLVMBuildSelect(b, LLVMBuildOr(b, zero, m1, ""), kc_vm_iconst(t, 1), a[1], "");
  LLVMValueRef q = LLVMBuildSDiv(b, a[0], d, "");
  q = LLVMBuildSelect(b, m1, LLVMBuildNeg(b, a[0], ""), q, "");
  return LLVMBuildSelect(b, zero, kc_vm_iconst(t, 0), q, "");
}

LLVMValueRef kc_scalar_neg(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (kc_dtype_is_float(in)) return LLVMBuildFNeg(ir->b, a[0], "");
  return kc_dtype_is_int(in) ? LLVMBuildNeg(ir->b, a[0], "") : NULL;
}

LLVMValueRef kc_scalar_abs(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (kc_dtype_is_float(in)) return kc_vm_call1(ir, "llvm.fabs", a[0]);
  if (!kc_dtype_is_int(in)) return NULL;
  if (kc_vm_unsigned(in)) return a[0];
  /* INT_MIN stays INT_MIN (is_int_min_poison = false), as two's complement wraps */
  LLVMTypeRef t = LLVMTypeOf(a[0]);
  LLVMValueRef args[2] = {a[0], LLVMConstInt(ir->t_i1, 0, 0)};
  return kc_ir_intrinsic(ir, "llvm.abs", &t, 1, args, 2);
}

LLVMValueRef kc_scalar_reciprocal(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                  LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  return LLVMBuildFDiv(ir->b, kc_vm_fconst(LLVMTypeOf(a[0]), 1.0), a[0], "");
}

LLVMValueRef kc_scalar_sqrt(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  return kc_dtype_is_float(in) ? kc_vm_call1(ir, "llvm.sqrt", a[0]) : NULL;
}

LLVMValueRef kc_scalar_relu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  LLVMTypeRef t = LLVMTypeOf(a[0]);
  if (kc_dtype_is_float(in)) { /* x < 0 is false for nan, which passes through */
    LLVMValueRef neg = LLVMBuildFCmp(ir->b, LLVMRealOLT, a[0], kc_vm_fconst(t, 0.0), "");
    return LLVMBuildSelect(ir->b, neg, kc_vm_fconst(t, 0.0), a[0], "");
  }
  if (!kc_dtype_is_int(in)) return NULL;
  if (kc_vm_unsigned(in)) return a[0];
  return kc_vm_call2(ir, "llvm.smax", a[0], kc_vm_iconst(t, 0));
}

/* min or max of two values of dtype t. */
static LLVMValueRef minmax2(kc_ir *ir, kc_dtype t, bool is_max, LLVMValueRef x, LLVMValueRef y) {
  const char *fn;
  if (kc_dtype_is_float(t))
    fn = is_max ? "llvm.maximum" : "llvm.minimum";
  else if (kc_vm_unsigned(t))
    fn = is_max ? "llvm.umax" : "llvm.umin";
  else
    fn = is_max ? "llvm.smax" : "llvm.smin";
  return kc_vm_call2(ir, fn, x, y);
}

static LLVMValueRef minmax(kc_ir *ir, const kc_node *n, kc_dtype in, bool is_max, LLVMValueRef *a) {
  if (!kc_dtype_is_float(in) && !kc_dtype_is_int(in)) return NULL;
  LLVMValueRef r = a[0];
  for (uint32_t i = 1; i < n->nin; i++)
    if (a[i]) r = minmax2(ir, in, is_max, r, a[i]);
  return r;
}

LLVMValueRef kc_scalar_min(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return minmax(ir, n, in, false, a);
}

LLVMValueRef kc_scalar_max(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  return minmax(ir, n, in, true, a);
}

/*
 * clip(x, lo?, hi?) = min(max(x, lo), hi): with lo > hi every element becomes hi, as ONNX says.
 * Compare-and-select rather than min/max so a nan x passes through unchanged.
 */
LLVMValueRef kc_scalar_clip(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  bool f = kc_dtype_is_float(in), u = kc_vm_unsigned(in);
  if (!f && !kc_dtype_is_int(in)) return NULL;
  LLVMValueRef x = a[0];
  LLVMValueRef lo = n->nin > 1 ? a[1] : NULL, hi = n->nin > 2 ? a[2] : NULL;
  if (lo) {
    LLVMValueRef below = f ? LLVMBuildFCmp(ir->b, LLVMRealOLT, x, lo, "")
                           : LLVMBuildICmp(ir->b, u ? LLVMIntULT : LLVMIntSLT, x, lo, "");
    x = LLVMBuildSelect(ir->b, below, lo, x, "");
  }
  if (hi) {
    LLVMValueRef above = f ? LLVMBuildFCmp(ir->b, LLVMRealOGT, x, hi, "")
                           : LLVMBuildICmp(ir->b, u ? LLVMIntUGT : LLVMIntSGT, x, hi, "");
    x = LLVMBuildSelect(ir->b, above, hi, x, "");
  }
  return x;
}
